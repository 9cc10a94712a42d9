"""CenterNet MobileNetV3 512: RGB float 0..255, NHWC in; the graph decodes its own
heatmap, so the output is already ``[100, 6]`` boxes in input pixels.

Reference: ``src/object/centernet.ts`` in npm ``@vladmandic/human`` 3.3.6, which runs
NMS on these rows, skips rows whose class is NaN and divides coordinates by the input
size before scaling them to the image, as done here.
"""

from __future__ import annotations

import numpy as np

from ensemble import boxes, contract, detectors, imaging

DETECTOR = detectors.CENTERNET
_OUTPUT = DETECTOR.outputs[0].name
INPUT_HEIGHT, INPUT_WIDTH, _ = DETECTOR.inputs[0].dims


def preprocess(image_rgb: np.ndarray) -> np.ndarray:
    """``uint8`` RGB ``(H, W, 3)`` -> float32 ``(512, 512, 3)`` in 0..255, stretched
    bilinearly (no letterbox, no normalisation)."""
    return imaging.resize(image_rgb, INPUT_WIDTH, INPUT_HEIGHT).astype(np.float32)


def postprocess(
    outputs: dict[str, np.ndarray],
    image_size: tuple[int, int],
    score_threshold: float,
    iou_threshold: float,
) -> np.ndarray:
    """One image's ``detections`` ``[100, 6]`` (x1, y1, x2, y2 in 512-input pixels, score,
    0-based COCO-80 class) -> float32 ``[N, 6]`` rows, xyxy in pixels of the original
    image of ``image_size = (height, width)``. Rows with a NaN or out-of-range class are
    dropped."""
    det = np.asarray(outputs[_OUTPUT], dtype=np.float64).reshape(-1, 6)
    det = det[np.isfinite(det).all(axis=1)]
    class_id = np.rint(det[:, 5])
    known = (class_id >= 0) & (class_id < len(contract.COCO80_LABELS))
    det, class_id = det[known], class_id[known]
    boxes_image = boxes.scale_boxes(det[:, :4], (INPUT_HEIGHT, INPUT_WIDTH), image_size)
    return boxes.filter_detections(
        boxes_image, det[:, 4], class_id, image_size, score_threshold, iou_threshold
    )
