"""TensorFlow GraphDef helpers shared by the conversions: run, free the batch size, to ONNX.

GraphDefs are run through ``tf.compat.v1.Session`` because that executes the nodes as
written, which is what the reference forms are for; tests use the same entry point.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2

if TYPE_CHECKING:
    import onnx

# Opset 17 is read by every ONNX Runtime since 1.13, including the one in Triton's images.
ONNX_OPSET = 17


def read_graph_def(path: Path) -> graph_pb2.GraphDef:
    graph_def = graph_pb2.GraphDef()
    graph_def.ParseFromString(Path(path).read_bytes())
    return graph_def


def write_graph_def(graph_def: graph_pb2.GraphDef, path: Path) -> None:
    Path(path).write_bytes(graph_def.SerializeToString(deterministic=True))


def run_graph(
    graph_def: graph_pb2.GraphDef, feeds: dict[str, np.ndarray], fetches: list[str]
) -> list[np.ndarray]:
    """Run a GraphDef once; tensor names as ``node:index``."""
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run(fetches, feeds)


def _ancestors(graph_def: graph_pb2.GraphDef, tensor: str) -> set[str]:
    """Names of the nodes a tensor is computed from (itself included)."""
    inputs = {n.name: [i.lstrip("^").split(":")[0] for i in n.input] for n in graph_def.node}
    seen: set[str] = set()
    stack = [tensor.split(":")[0]]
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(inputs[name])
    return seen


def free_batch_dimension(graph_def: graph_pb2.GraphDef, input_name: str) -> graph_pb2.GraphDef:
    """A copy of a batch-1 graph whose input takes any batch size.

    Converters fold shapes into constants, so a graph exported at batch 1 carries
    ``Reshape`` targets like ``[1, 80, -1]``. Each such target that does not depend on
    the input is replaced by the shape the Reshape produced at batch 1 with its leading
    1 turned into -1; the input placeholder's batch dimension becomes unknown. A Reshape
    whose output does not start with the batch dimension cannot be freed this way and
    is an error (that graph mixes images, e.g. a batch gather, and needs a rewrite).
    """
    graph_def = graph_pb2.GraphDef.FromString(graph_def.SerializeToString())
    nodes = {n.name: n for n in graph_def.node}
    placeholder = nodes[input_name.split(":")[0]]
    dims = placeholder.attr["shape"].shape.dim
    if not dims or dims[0].size != 1:
        raise ValueError(f"{input_name}: expected a batch-1 input, got {list(dims)}")
    per_image = [d.size for d in dims[1:]]

    reshapes = [
        n
        for n in graph_def.node
        if n.op == "Reshape" and placeholder.name not in _ancestors(graph_def, n.input[1])
    ]
    probe = np.zeros(
        [1, *per_image], tf.dtypes.as_dtype(placeholder.attr["dtype"].type).as_numpy_dtype
    )
    observed = run_graph(graph_def, {input_name: probe}, [f"{n.name}:0" for n in reshapes])
    for node, value in zip(reshapes, observed, strict=True):
        if value.ndim == 0 or value.shape[0] != 1:
            raise ValueError(f"Reshape {node.name!r} gives {value.shape}: not batch-major")
        target = graph_def.node.add(name=f"{node.name}/per_image_shape", op="Const")
        target.attr["dtype"].type = tf.int64.as_datatype_enum
        target.attr["value"].tensor.CopyFrom(
            tf.make_tensor_proto(np.array([-1, *value.shape[1:]], np.int64))
        )
        node.input[1] = target.name
        node.attr["Tshape"].type = tf.int64.as_datatype_enum
    dims[0].size = -1
    return graph_def


def to_onnx(
    graph_def: graph_pb2.GraphDef, inputs: dict[str, str], outputs: dict[str, str]
) -> onnx.ModelProto:
    """Convert with tf2onnx; ``inputs``/``outputs`` map TF tensor names to ONNX names.

    ONNX outputs come in the order of ``outputs``.
    """
    import tf2onnx

    # tf2onnx logs every graph rewrite at INFO; the build reports its own steps.
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    graph_def = graph_pb2.GraphDef.FromString(graph_def.SerializeToString())
    for node in graph_def.node:
        # Private "_input_shapes"/"_output_shapes" hints trip tf2onnx's shape inference.
        for name in [a for a in node.attr if a.startswith("_")]:
            del node.attr[name]
    model, _ = tf2onnx.convert.from_graph_def(
        graph_def,
        input_names=list(inputs),
        output_names=list(outputs),
        opset=ONNX_OPSET,
        tensors_to_rename={**inputs, **outputs},
    )
    _name_batch_dimension(model)
    return model


def _name_batch_dimension(model: onnx.ModelProto) -> None:
    """Call the free leading dimension of the graph's inputs and outputs "batch".

    tf2onnx names it "unk__<n>" from a process-wide counter; one shared, meaningful
    name tells ONNX Runtime (and readers) that inputs and outputs share the batch size.
    """
    for info in [*model.graph.input, *model.graph.output]:
        dims = info.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_param"):
            dims[0].dim_param = "batch"
