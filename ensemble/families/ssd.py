"""SSD MobileNet v2 COCO (TF Object Detection API): uint8 RGB in; boxes already decoded
and suppressed per class inside the graph out.

The graph's boxes are normalised ``(ymin, xmin, ymax, xmax)`` relative to its input;
since the input is the whole image stretched to 300x300, they are also relative to the
original image. Classes are COCO category ids (1..90 with gaps); only the first
``num_detections`` rows are real. NMS runs again with the caller's IoU threshold, which
may be stricter than the one frozen into the graph.
"""

from __future__ import annotations

import numpy as np

from ensemble import boxes, contract, detectors, imaging

DETECTOR = detectors.SSD
_BOXES, _SCORES, _CLASSES, _NUM_DETECTIONS = (t.name for t in DETECTOR.outputs)
INPUT_HEIGHT, INPUT_WIDTH, _ = DETECTOR.inputs[0].dims

# COCO category id -> COCO-80 index; -1 for the ten ids that name no class.
COCO80_OF_COCO91 = np.full(max(contract.COCO91_IDS) + 1, -1, dtype=np.int64)
COCO80_OF_COCO91[list(contract.COCO91_IDS)] = np.arange(len(contract.COCO91_IDS))


def preprocess(image_rgb: np.ndarray) -> np.ndarray:
    """``uint8`` RGB ``(H, W, 3)`` -> ``uint8`` ``(300, 300, 3)``, stretched bilinearly."""
    return imaging.resize(image_rgb, INPUT_WIDTH, INPUT_HEIGHT)


def postprocess(
    outputs: dict[str, np.ndarray],
    image_size: tuple[int, int],
    score_threshold: float,
    iou_threshold: float,
) -> np.ndarray:
    """One image's ``detection_*`` / ``num_detections`` -> float32 ``[N, 6]`` rows, xyxy in
    pixels of the original image of ``image_size = (height, width)``, COCO-80 class ids.
    Rows whose class id is not one of the 80 COCO classes are dropped."""
    boxes_yxyx = np.asarray(outputs[_BOXES], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(outputs[_SCORES], dtype=np.float64).reshape(-1)
    coco91 = np.asarray(outputs[_CLASSES], dtype=np.float64).reshape(-1)
    count = float(np.asarray(outputs[_NUM_DETECTIONS]).reshape(-1)[0])
    count = int(min(max(count, 0), len(boxes_yxyx))) if np.isfinite(count) else 0
    boxes_yxyx, scores, coco91 = boxes_yxyx[:count], scores[:count], coco91[:count]

    class_id = np.full(count, -1, dtype=np.int64)
    known = np.isfinite(coco91) & (coco91 >= 0) & (coco91 < len(COCO80_OF_COCO91))
    class_id[known] = COCO80_OF_COCO91[np.rint(coco91[known]).astype(np.int64)]
    keep = class_id >= 0

    boxes_image = boxes.scale_boxes(boxes.yxyx_to_xyxy(boxes_yxyx[keep]), (1, 1), image_size)
    return boxes.filter_detections(
        boxes_image, scores[keep], class_id[keep], image_size, score_threshold, iou_threshold
    )
