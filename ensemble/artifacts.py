"""What a detector's artifact says of its own tensors, read without loading a framework.

A native Triton backend binds a model's tensors by the names the artifact itself
gives them, so the model config must use those names (and, for ONNX Runtime, the
dims the graph fixes). This module reads them cheaply, at models-file time:

- ONNX: the graph's inputs and outputs (``onnx``, weights left on disk);
- SavedModel: the ``serving_default`` signature in ``saved_model.pb``, parsed with a
  minimal protobuf schema of the few messages involved (importing TensorFlow for it
  would cost seconds on every server start); the backend binds the signature's keys;
- TorchScript: libtorch's ``<name>__<index>`` convention (``INPUT__0``,
  ``OUTPUT__0``...), which binds the forward arguments and the returned tuple by
  position, whatever the module calls them.

:func:`bind` then matches a family's tensors to the artifact's: by name where every
name is there, else by position (the rule of the Python runners too, see
``ensemble.runners.by_name_or_position``), and says why an artifact cannot run
natively (two inputs, another dtype, a batch size fixed in the graph).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from ensemble.families import NetworkTensor


class ArtifactError(ValueError):
    """The artifact cannot be read, or cannot run in its native backend; the message
    says why in words a models file's author understands."""


@dataclass(frozen=True)
class ArtifactTensor:
    """One tensor as the artifact declares it, per image (batch dimension left out)."""

    name: str
    dtype: str | None  # Triton dtype without TYPE_ (FP32, UINT8...); None: not declared
    dims: tuple[int, ...] | None  # -1 where open; None: rank not declared


@dataclass(frozen=True)
class Signature:
    inputs: tuple[ArtifactTensor, ...]
    outputs: tuple[ArtifactTensor, ...]
    # The graph leaves the batch size open (dim 0 is dynamic); None: not declared.
    batch_open: bool | None = None


@dataclass(frozen=True)
class Binding:
    """A family's tensors as the native model config names them."""

    input: ArtifactTensor
    outputs: tuple[tuple[str, ArtifactTensor], ...]  # (family output name, artifact tensor)

    def output(self, family_name: str) -> ArtifactTensor:
        return dict(self.outputs)[family_name]


# --- reading ------------------------------------------------------------------------


def read_signature(runtime: str, path: Path, family_outputs: int = 1) -> Signature:
    """The tensors of the artifact at ``path`` for ``runtime`` (a registry runtime key).
    ``family_outputs``: how many outputs the family reads (TorchScript declares none)."""
    path = Path(path)
    if runtime == "onnx":
        return _onnx_signature(path)
    if runtime == "savedmodel":
        return _savedmodel_signature(path)
    if runtime == "torchscript":
        return Signature(
            (ArtifactTensor("INPUT__0", None, None),),
            tuple(ArtifactTensor(f"OUTPUT__{i}", None, None) for i in range(family_outputs)),
        )
    raise ArtifactError(f"runtime {runtime!r} has no native backend")


_ONNX_TYPES = {1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32",
               7: "INT64", 9: "BOOL", 10: "FP16", 11: "FP64", 16: "BF16"}  # fmt: skip


def _onnx_signature(path: Path) -> Signature:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ArtifactError(f"{path.name} is not a readable ONNX file: {e}") from None
    return onnx_signature(model)


def onnx_signature(model) -> Signature:
    """The tensors of an ONNX model already loaded (``onnx.ModelProto``): the graph's
    inputs that are not weights, and its outputs."""
    graph = model.graph
    weights = {i.name for i in graph.initializer}

    def tensors(values) -> list[tuple[ArtifactTensor, int | None]]:
        found = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            first = dims[0] if dims else None
            per_image = tuple(dims[1:]) if t.HasField("shape") else None
            found.append((ArtifactTensor(v.name, _ONNX_TYPES.get(t.elem_type), per_image), first))
        return found

    inputs = tensors(v for v in graph.input if v.name not in weights)
    outputs = tensors(graph.output)
    batch_open = all(first == -1 for _, first in inputs + outputs)
    return Signature(tuple(t for t, _ in inputs), tuple(t for t, _ in outputs), batch_open)


# TensorFlow's DataType enum (tensorflow/core/framework/types.proto) -> Triton.
_TF_TYPES = {1: "FP32", 2: "FP64", 3: "INT32", 4: "UINT8", 5: "INT16", 6: "INT8", 7: "BYTES",
             9: "INT64", 10: "BOOL", 14: "BF16", 17: "UINT16", 19: "FP16", 22: "UINT32",
             23: "UINT64"}  # fmt: skip
SERVING_SIGNATURE = "serving_default"


def _savedmodel_signature(path: Path) -> Signature:
    try:
        data = (path / "saved_model.pb").read_bytes()
    except OSError as e:
        raise ArtifactError(f"cannot read {path / 'saved_model.pb'}: {e.strerror or e}") from None
    saved_model = _saved_model_class()()
    try:
        saved_model.ParseFromString(data)
    except Exception as e:
        raise ArtifactError(f"{path.name}/saved_model.pb is not a SavedModel: {e}") from None
    serving = [mg for mg in saved_model.meta_graphs if "serve" in mg.meta_info_def.tags] or list(
        saved_model.meta_graphs
    )
    for meta_graph in serving:
        if SERVING_SIGNATURE in meta_graph.signature_def:
            signature = meta_graph.signature_def[SERVING_SIGNATURE]
            break
    else:
        raise ArtifactError(f"{path.name} has no {SERVING_SIGNATURE!r} signature")

    def tensors(entries) -> list[tuple[ArtifactTensor, int | None]]:
        found = []
        # Sorted by key: the order TensorFlow lists a loaded signature's outputs in.
        for key in sorted(entries):
            info = entries[key]
            shape = info.tensor_shape
            dims = None if shape.unknown_rank else [d.size for d in shape.dim]
            first = dims[0] if dims else None
            per_image = tuple(dims[1:]) if dims is not None else None
            found.append((ArtifactTensor(key, _TF_TYPES.get(info.dtype), per_image), first))
        return found

    inputs, outputs = tensors(signature.inputs), tensors(signature.outputs)
    batch_open = all(first == -1 for _, first in inputs + outputs)
    return Signature(tuple(t for t, _ in inputs), tuple(t for t, _ in outputs), batch_open)


_SAVED_MODEL = None


def _saved_model_class():
    """The ``SavedModel`` message with only the fields a signature needs; every other
    field (the graph, the weights' index) is skipped as unknown. Field numbers are
    those of tensorflow/core/protobuf/{saved_model,meta_graph}.proto and
    tensorflow/core/framework/tensor_shape.proto."""
    global _SAVED_MODEL
    if _SAVED_MODEL is not None:
        return _SAVED_MODEL
    F = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="detector_savedmodel_subset.proto",
                                           package="detector_subset", syntax="proto3")  # fmt: skip

    def message(name: str, *fields: tuple, parent=None):
        m = (parent.nested_type if parent else f.message_type).add(name=name)
        for field_name, number, kind, type_name, repeated in fields:
            field = m.field.add(name=field_name, number=number, type=kind)
            field.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
            if type_name:
                field.type_name = type_name
        return m

    def map_entry(parent, name: str, value_type: str) -> None:
        entry = message(name, ("key", 1, F.TYPE_STRING, None, False),
                        ("value", 2, F.TYPE_MESSAGE, value_type, False), parent=parent)  # fmt: skip
        entry.options.map_entry = True

    p = ".detector_subset."
    shape = message(
        "TensorShapeProto",
        ("dim", 2, F.TYPE_MESSAGE, p + "TensorShapeProto.Dim", True),
        ("unknown_rank", 3, F.TYPE_BOOL, None, False),
    )
    message("Dim", ("size", 1, F.TYPE_INT64, None, False), parent=shape)
    message(
        "TensorInfo",
        ("name", 1, F.TYPE_STRING, None, False),
        ("dtype", 2, F.TYPE_INT32, None, False),  # an enum: a varint on the wire
        ("tensor_shape", 3, F.TYPE_MESSAGE, p + "TensorShapeProto", False),
    )
    sig = message(
        "SignatureDef",
        ("inputs", 1, F.TYPE_MESSAGE, p + "SignatureDef.InputsEntry", True),
        ("outputs", 2, F.TYPE_MESSAGE, p + "SignatureDef.OutputsEntry", True),
    )
    map_entry(sig, "InputsEntry", p + "TensorInfo")
    map_entry(sig, "OutputsEntry", p + "TensorInfo")
    message("MetaInfoDef", ("tags", 4, F.TYPE_STRING, None, True))
    meta = message(
        "MetaGraphDef",
        ("meta_info_def", 1, F.TYPE_MESSAGE, p + "MetaInfoDef", False),
        ("signature_def", 5, F.TYPE_MESSAGE, p + "MetaGraphDef.SignatureDefEntry", True),
    )
    map_entry(meta, "SignatureDefEntry", p + "SignatureDef")
    message("SavedModel", ("meta_graphs", 2, F.TYPE_MESSAGE, p + "MetaGraphDef", True))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    _SAVED_MODEL = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("detector_subset.SavedModel")
    )
    return _SAVED_MODEL


# --- binding a family to an artifact ---------------------------------------------------


def bind(
    inputs: tuple[NetworkTensor, ...], outputs: tuple[NetworkTensor, ...], sig: Signature
) -> Binding:
    """The artifact's tensors for a family's ``inputs`` and ``outputs``; raises
    :class:`ArtifactError` saying why the artifact cannot run natively with them.

    The native backend hands the artifact's tensors to the family's steps unchanged, so
    dtypes must agree (the Python runners cast, a native backend does not) and the
    batch size must be open (the dynamic batcher sends 1 to 8 images at once)."""
    if sig.batch_open is False:
        raise ArtifactError("its graph fixes the batch size; export it with a dynamic batch")
    if len(sig.inputs) != 1:
        names = ", ".join(t.name for t in sig.inputs)
        raise ArtifactError(f"it takes {len(sig.inputs)} inputs ({names}), the family gives one")
    (model_input,) = sig.inputs
    _same_dtype("input", inputs[0], model_input)
    found = {t.name: t for t in sig.outputs}
    if all(o.name in found for o in outputs):
        chosen = [found[o.name] for o in outputs]
    elif len(sig.outputs) >= len(outputs):
        chosen = list(sig.outputs[: len(outputs)])
    else:
        raise ArtifactError(
            f"it has {len(sig.outputs)} outputs ({', '.join(found)}), the family reads "
            f"{len(outputs)} ({', '.join(o.name for o in outputs)})"
        )
    for want, got in zip(outputs, chosen, strict=True):
        _same_dtype("output", want, got)
    return Binding(model_input, tuple((o.name, t) for o, t in zip(outputs, chosen, strict=True)))


def _same_dtype(kind: str, want: NetworkTensor, got: ArtifactTensor) -> None:
    if got.dtype is not None and got.dtype != want.dtype:
        raise ArtifactError(
            f"its {kind} {got.name!r} is {got.dtype}, the family's {want.name!r} is {want.dtype}"
        )


def config_dims(want: NetworkTensor, got: ArtifactTensor) -> tuple[int, ...]:
    """The dims a native config gives a tensor: the artifact's where it fixes them (ONNX
    Runtime refuses a config that leaves open what the graph fixes), else the family's."""
    if got.dims is None or len(got.dims) != len(want.dims):
        return want.dims
    return tuple(g if g > 0 else w for g, w in zip(got.dims, want.dims, strict=True))
