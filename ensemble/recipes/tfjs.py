"""TF.js graph models (``model.json`` + ``*.bin``) rewritten as TensorFlow GraphDefs.

A TF.js graph model is a GraphDef in protobuf-JSON form whose weights were moved out
of the ``Const`` nodes into binary shards. Putting them back needs only protobuf and
numpy, so the ``tensorflowjs`` package (and its pinned, heavy dependency tree) is not
needed. The TF.js converter also fused ops under its own names and dropped attributes
TensorFlow requires; :func:`load_graph_model` splits the fused nodes back into public
ops, so the result imports into ``tf.Graph``, runs with TensorFlow's own kernels and
converts with tf2onnx.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.framework import graph_pb2, node_def_pb2
from tensorflow.python.framework import op_def_registry

# TF.js fuses conv/matmul + bias + activation into one node. TensorFlow has private ops
# of similar names, but their kernels are meant for its own graph rewriter: the CPU
# depthwise one returns no output ("Missing 0-th output") and _FusedConv2D wants a
# TArgs attribute TF.js drops. Splitting them into the public ops they stand for gives
# a graph every TensorFlow and tf2onnx reads.
_FUSED_BASE_OPS = {
    "_FusedConv2D": "Conv2D",
    "FusedDepthwiseConv2dNative": "DepthwiseConv2dNative",
    "_FusedMatMul": "MatMul",
    "FusedMatMul": "MatMul",
}
_FUSABLE_ACTIVATIONS = {"Relu", "Relu6", "Elu", "Selu", "Sigmoid", "Tanh", "LeakyRelu"}

# Bytes per element of the dtypes TF.js writes into weight shards.
_SHARD_DTYPES = {
    "float32": np.float32,
    "int32": np.int32,
    "bool": np.bool_,
    "float16": np.float16,
    "uint8": np.uint8,
    "uint16": np.uint16,
}


def _read_weights(manifest: list[dict], weights_dir: Path) -> dict[str, np.ndarray]:
    """Decode every weight listed in ``weightsManifest``, dequantized to its original dtype."""
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        # A group's shards are one buffer cut into files; weights lie in it back to back.
        buffer = b"".join((weights_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            shape = [int(d) for d in spec["shape"]]
            count = int(np.prod(shape, dtype=np.int64))
            quant = spec.get("quantization")
            stored = quant["dtype"] if quant else spec["dtype"]
            if stored not in _SHARD_DTYPES:
                raise ValueError(f"weight {spec['name']!r}: unsupported dtype {stored!r}")
            raw = np.frombuffer(buffer, _SHARD_DTYPES[stored], count, offset)
            offset += raw.nbytes
            if quant and stored in ("uint8", "uint16"):
                # Affine quantization: value = q * scale + min.
                raw = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
            if spec["dtype"] == "int32" and raw.dtype.kind == "f":
                raw = np.round(raw)  # dequantized integers: nearest, not truncated
            value = raw.astype(_SHARD_DTYPES[spec["dtype"]]).reshape(shape)
            weights[spec["name"]] = value
        if offset != len(buffer):
            raise ValueError(
                f"weight shards {group['paths']} hold {len(buffer)} bytes, "
                f"the manifest accounts for {offset}"
            )
    return weights


def _split_fused(node: node_def_pb2.NodeDef) -> list[node_def_pb2.NodeDef]:
    """Replace a fused TF.js node by base op -> BiasAdd -> activation (same output name)."""
    fused = [op.decode() for op in node.attr["fused_ops"].list.s]
    if (
        not fused
        or fused[0] != "BiasAdd"
        or len(fused) > 2
        or (len(fused) == 2 and fused[1] not in _FUSABLE_ACTIVATIONS)
    ):
        raise ValueError(f"node {node.name!r}: unsupported fused ops {fused}")
    data = [i for i in node.input if not i.startswith("^")]
    control = [i for i in node.input if i.startswith("^")]
    if len(data) != 3:
        raise ValueError(f"node {node.name!r}: expected input, filter and bias, got {data}")

    base = node_def_pb2.NodeDef(name=f"{node.name}/base", op=_FUSED_BASE_OPS[node.op])
    base.input.extend(data[:2] + control)
    base.attr["T"].CopyFrom(node.attr["T"])
    for key in (
        "strides",
        "padding",
        "explicit_paddings",
        "data_format",
        "dilations",
        "transpose_a",
        "transpose_b",
    ):
        if key in node.attr:
            base.attr[key].CopyFrom(node.attr[key])

    bias = node_def_pb2.NodeDef(
        name=f"{node.name}/bias" if len(fused) == 2 else node.name,
        op="BiasAdd",
        input=[base.name, data[2]],
    )
    bias.attr["T"].CopyFrom(node.attr["T"])
    if "data_format" in node.attr:
        bias.attr["data_format"].CopyFrom(node.attr["data_format"])
    nodes = [base, bias]
    if len(fused) == 2:
        act = node_def_pb2.NodeDef(name=node.name, op=fused[1], input=[bias.name])
        act.attr["T"].CopyFrom(node.attr["T"])
        if fused[1] == "LeakyRelu":
            act.attr["alpha"].f = node.attr["leakyrelu_alpha"].f
        nodes.append(act)
    return nodes


def _drop_unknown_attrs(node: node_def_pb2.NodeDef) -> None:
    """Remove attributes the op does not declare (TF refuses to import them)."""
    op_def = op_def_registry.get(node.op)
    if op_def is None:
        raise ValueError(f"node {node.name!r}: op {node.op!r} is not a TensorFlow op")
    known = {a.name for a in op_def.attr}
    for name in list(node.attr):
        if name not in known:
            del node.attr[name]


def load_graph_model(model_json: Path) -> graph_pb2.GraphDef:
    """Read a TF.js graph model (weights next to the JSON) into a runnable GraphDef.

    Float16-quantized weights come back as float32 (the dtype the graph computes in),
    so the GraphDef computes what TF.js computes after it dequantizes on load.
    """
    model = json.loads(Path(model_json).read_text())
    if model.get("format") != "graph-model":
        raise ValueError(f"{model_json}: not a TF.js graph model (format={model.get('format')!r})")
    graph_def = json_format.ParseDict(model["modelTopology"], graph_pb2.GraphDef())
    weights = _read_weights(model["weightsManifest"], Path(model_json).parent)
    nodes = []
    for node in graph_def.node:
        # Device pins from the machine the model was exported on would stick to the graph.
        node.device = ""
        if node.op == "Const" and node.name in weights:
            # The node's own dtype wins: TF.js stores int64 constants as int32.
            dtype = tf.dtypes.as_dtype(node.attr["dtype"].type).as_numpy_dtype
            value = weights.pop(node.name).astype(dtype)
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
        nodes.extend(_split_fused(node) if node.op in _FUSED_BASE_OPS else [node])
    for node in nodes:
        _drop_unknown_attrs(node)
    del graph_def.node[:]
    graph_def.node.extend(nodes)
    if weights:
        raise ValueError(f"{model_json}: weights without a Const node: {sorted(weights)[:5]}")
    if graph_def.library.function:
        raise ValueError(f"{model_json}: graph functions are not supported")
    return graph_def


def signature(model_json: Path) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Input and output tensor names (``node:0``) of a TF.js graph model, with shapes."""
    sig = json.loads(Path(model_json).read_text())["signature"]

    def shapes(part: dict) -> dict[str, list[int]]:
        return {
            (k if ":" in k else k + ":0"): [int(d.get("size", -1)) for d in v["tensorShape"]["dim"]]
            for k, v in part.items()
        }

    return shapes(sig["inputs"]), shapes(sig["outputs"])
