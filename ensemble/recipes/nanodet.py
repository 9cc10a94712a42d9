"""NanoDet-m 416 (TF.js graph model) -> TorchScript ``model.pt``.

Path: TF.js JSON + bin -> GraphDef (kept as the reference) -> batch freed -> tf2onnx ->
onnx2torch -> a wrapper that lays the six head outputs out as one ``[B, 3549, 124]``
tensor (the layout ``ensemble.families.nanodet`` reads) -> ``torch.jit.trace``.
"""

from __future__ import annotations

import sys
import types
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from ensemble.recipes import graphs, tfjs
from ensemble.recipes.report import timed

MODEL_JSON = "package/models/nanodet.json"
MEMBERS = (MODEL_JSON, "package/models/nanodet.bin")
NUM_CLASSES = 80


@contextmanager
def _torchvision_stand_in():
    """Let ``import onnx2torch`` succeed where torchvision cannot be imported.

    onnx2torch imports torchvision at module level only for its NMS and RoiAlign
    converters. PyPI's torchvision does not import with this torch build
    ("torchvision::nms does not exist"), and NanoDet uses neither op, so during the
    import a bare module stands in; calling either op fails loudly. This is build-time
    only: the saved TorchScript does not reference torchvision.
    """

    def unavailable(*_args, **_kwargs):
        raise RuntimeError("torchvision stand-in: NMS/RoiAlign are not available to onnx2torch")

    stand_in = types.ModuleType("torchvision")
    stand_in.ops = types.ModuleType("torchvision.ops")
    stand_in.ops.nms = stand_in.ops.roi_align = unavailable
    saved = {
        k: sys.modules.pop(k)
        for k in list(sys.modules)
        if k == "torchvision" or k.startswith("torchvision.")
    }
    sys.modules.update({"torchvision": stand_in, "torchvision.ops": stand_in.ops})
    try:
        yield
    finally:
        del sys.modules["torchvision"], sys.modules["torchvision.ops"]
        sys.modules.update(saved)


def _onnx_to_torch(onnx_model) -> torch.fx.GraphModule:
    with _torchvision_stand_in():
        import onnx2torch
    return _bake_constant_reshapes(onnx2torch.convert(onnx_model).eval())


def _bake_constant_reshapes(module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Turn Reshapes whose target shape is a stored constant into ``torch.reshape`` calls.

    onnx2torch keeps ONNX's shape operand as a tensor buffer and reads it element by
    element on every call; traced, that is an ``int(tensor)`` per dimension, i.e. a
    device-to-host copy and a stream sync per dimension on a GPU. With the shape as
    Python ints (its -1 batch dimension included) the trace records plain constants.
    """
    from onnx2torch.node_converters.reshape import OnnxReshape

    graph = module.graph
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(
            module.get_submodule(node.target), OnnxReshape
        ):
            continue
        data, shape = node.args
        if shape.op != "get_attr":
            continue
        dims = tuple(int(d) for d in module.get_buffer(shape.target).tolist())
        if 0 in dims:  # ONNX's "copy this dimension from the input": keep the module
            continue
        with graph.inserting_before(node):
            node.replace_all_uses_with(graph.call_function(torch.reshape, (data, dims)))
        graph.erase_node(node)
    graph.eliminate_dead_code()
    module.recompile()
    return module


class AnchorTable(torch.nn.Module):
    """Six per-stride head outputs -> ``[B, anchors, 80 scores + 44 distribution bins]``.

    ``net`` must return (scores, distributions) for stride 8, then 16, then 32, so rows
    come out in the order ``ensemble.families.nanodet`` reads them.
    """

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        heads = self.net(images)
        per_stride = [torch.cat([heads[i], heads[i + 1]], dim=2) for i in range(0, len(heads), 2)]
        return torch.cat(per_stride, dim=1)


def head_order(outputs: dict[str, list[int]]) -> list[str]:
    """TF.js output names ordered stride 8, 16, 32 (most anchors first), scores first.

    The signature lists the heads in no useful order; shapes tell them apart:
    scores are ``[1, n, 80]``, box distributions ``[1, n, 44]``.
    """
    order = sorted(outputs, key=lambda k: (-outputs[k][1], outputs[k][2] != NUM_CLASSES))
    widths = [outputs[k][2] for k in order]
    if len(order) != 6 or widths[0::2] != [NUM_CLASSES] * 3 or NUM_CLASSES in widths[1::2]:
        raise ValueError(f"unexpected NanoDet heads: {outputs}")
    return order


def device_constants(module: torch.jit.ScriptModule) -> list[str]:
    """Device values frozen into a traced graph (they would pin it to the build's device)."""
    return [
        str(node).strip()
        for node in module.inlined_graph.nodes()
        if node.kind() == "prim::Constant" and node.output().type().kind() == "DeviceObjType"
    ]


def _trace(module: torch.nn.Module, per_image: list[int]) -> torch.jit.ScriptModule:
    example = torch.zeros([1, *per_image])
    with torch.no_grad(), warnings.catch_warnings():
        # onnx2torch turns constant shape/pad/split tensors into Python values while
        # tracing; they are constants in this graph, and the batch check below shows
        # the trace still generalises.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example)

        images = torch.rand([2, *per_image], generator=torch.Generator().manual_seed(0))
        eager = module(images)
        batched = traced(images)
        singles = torch.cat([traced(images[i : i + 1]) for i in range(2)])
    if not (
        torch.allclose(eager, batched, atol=1e-5) and torch.allclose(batched, singles, atol=1e-5)
    ):
        raise RuntimeError("traced NanoDet disagrees with the eager module at batch 2")
    if device_constants(traced):
        raise RuntimeError(f"traced NanoDet pins a device: {device_constants(traced)}")
    return traced


def convert(members: dict[str, Path], artifact: Path, reference: Path) -> dict:
    """Write ``artifact`` (TorchScript) and ``reference`` (GraphDef); return manifest extras."""
    model_json = members[MODEL_JSON]
    with timed("  nanodet_m: TF.js graph -> GraphDef (reference)"):
        graph_def = tfjs.load_graph_model(model_json)
        graphs.write_graph_def(graph_def, reference)
    inputs, outputs = tfjs.signature(model_json)
    (input_name,) = inputs
    heads = head_order(outputs)

    with timed("  nanodet_m: GraphDef -> ONNX (batch dimension freed, tf2onnx)"):
        batched = graphs.free_batch_dimension(graph_def, input_name)
        onnx_model = graphs.to_onnx(
            batched, {input_name: "images"}, {name: f"head_{i}" for i, name in enumerate(heads)}
        )
    with timed("  nanodet_m: ONNX -> torch (onnx2torch) -> TorchScript (trace)") as step:
        traced = _trace(AnchorTable(_onnx_to_torch(onnx_model)), inputs[input_name][1:])
        traced.save(str(artifact))
        step["detail"] = f"{artifact.name}, batch-2 trace check passed"
    return {"batch": "dynamic", "tf_outputs_in_order": heads}
