"""CenterNet MobileNetV3 512 (TF.js graph model) -> ONNX ``model.onnx``.

The TF.js graph ends in its own decoder (peak picking, top-100, box assembly) whose
batch gather was folded for batch 1: the flattened ``wh`` map is ``[16384, 4]`` and the
gathered boxes are reshaped to ``[1, 100, 4]``. The network body up to the ``keypoints``
and ``wh`` maps is batch-agnostic, so it is kept as is and the decoder is written again
below, op for op, with a per-image gather. The original graph is kept as the reference
that the tests hold the ONNX model to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from ensemble.recipes import graphs, tfjs
from ensemble.recipes.report import timed

MODEL_JSON = "package/models/centernet.json"
MEMBERS = (MODEL_JSON, "package/models/centernet.bin")

TF_INPUT = "tower_0/images:0"
TF_HEATMAP = "tower_0/keypoints:0"  # [B, 128, 128, 80] class scores after sigmoid
TF_SIZES = "tower_0/wh:0"  # [B, 128, 128, 4] distances to left, top, right, bottom, input px
TOP_K = 100


def decode(heatmap: tf.Tensor, sizes: tf.Tensor, input_size: int) -> tf.Tensor:
    """The TF.js graph's decoder for any batch size: ``[B, 100, 6]`` detections.

    Rows are x1, y1, x2, y2 (input pixels), score, class (0-based COCO-80), best first.
    A cell counts as a peak when it equals the max of its 3x3 neighbourhood; the top
    100 peaks over all cells and classes are kept, as the original does.
    """
    _, height, width, classes = heatmap.shape
    stride = float(input_size // height)
    peaks = heatmap * tf.cast(
        tf.equal(heatmap, tf.nn.max_pool2d(heatmap, 3, 1, "SAME")), heatmap.dtype
    )
    scores, index = tf.math.top_k(tf.reshape(peaks, [-1, height * width * classes]), TOP_K)
    label = index % classes
    cell = index // classes
    x, y = cell % width, cell // width
    box = tf.gather(tf.reshape(sizes, [-1, height * width, 4]), cell, batch_dims=1)
    cx = tf.cast(x, tf.float32)[..., None] * stride
    cy = tf.cast(y, tf.float32)[..., None] * stride
    return tf.concat(
        [
            cx - box[..., 0:1],
            cy - box[..., 1:2],
            cx + box[..., 2:3],
            cy + box[..., 3:4],
            scores[..., None],
            tf.cast(label, tf.float32)[..., None],
        ],
        axis=-1,
    )


def batched_graph(graph_def: tf.compat.v1.GraphDef, input_size: int) -> tf.compat.v1.GraphDef:
    """The TF.js network with a free batch dimension and the rewritten decoder.

    Tensor names: ``images:0`` in, ``detections:0`` out.
    """
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, input_size, input_size, 3], "images")
        heatmap, sizes = tf.compat.v1.import_graph_def(
            graph_def,
            input_map={TF_INPUT: images},
            return_elements=[TF_HEATMAP, TF_SIZES],
            name="net",
        )
        tf.identity(decode(heatmap, sizes, input_size), name="detections")
    return graph.as_graph_def()


def convert(members: dict[str, Path], artifact: Path, reference: Path) -> dict:
    """Write ``artifact`` (ONNX) and ``reference`` (GraphDef); return manifest extras."""
    model_json = members[MODEL_JSON]
    with timed("  centernet_mobilenetv3: TF.js graph -> GraphDef (reference)"):
        graph_def = tfjs.load_graph_model(model_json)
        graphs.write_graph_def(graph_def, reference)
    inputs, _ = tfjs.signature(model_json)
    input_size = inputs[TF_INPUT][1]

    with timed("  centernet_mobilenetv3: GraphDef -> ONNX (decoder re-batched, tf2onnx)") as step:
        batched = batched_graph(graph_def, input_size)
        # The rewrite must not change what the network computes: check it on one image.
        probe = np.random.default_rng(0).uniform(0, 255, (1, input_size, input_size, 3))
        probe = probe.astype(np.float32)
        (want,) = graphs.run_graph(graph_def, {TF_INPUT: probe}, ["tower_0/detections:0"])
        (got,) = graphs.run_graph(batched, {"images:0": probe}, ["detections:0"])
        if not np.allclose(want, got, atol=1e-4):
            raise RuntimeError(
                "re-batched CenterNet decoder disagrees with the TF.js graph: "
                f"max |diff| {np.abs(want - got).max()}"
            )
        onnx_model = graphs.to_onnx(batched, {"images:0": "images"}, {"detections:0": "detections"})
        artifact.write_bytes(onnx_model.SerializeToString())
        step["detail"] = f"{artifact.name}, opset {graphs.ONNX_OPSET}"
    return {"batch": "dynamic"}
