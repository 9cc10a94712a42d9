"""NanoDet-m 416 (GFL head): RGB / 255, NCHW in; per-anchor class scores and box
distributions out.

Reference: the original NanoDet GFL head (``Integral`` + ``distance2bbox``) and
``src/object/nanodet.ts`` in npm ``@vladmandic/human`` 3.3.6. Boxes are decoded the
way NanoDet itself does: each side's distance is the expectation of the softmax over
its 11 bins, times the level's stride. human.ts instead takes the arg-max bin and
multiplies it by ``scaleBox / strideSize * 13`` input pixels with a fudge factor
``scaleBox = 2.5`` (strideSize 1, 2, 4 for strides 32, 16, 8): 1.016 strides, so every
side snaps to a whole bin and comes out 1.6 % long. human.ts also drops class index 61
(toilet) outright; we keep it, since it is one of the 80 classes the model was trained on.
"""

from __future__ import annotations

import numpy as np

from ensemble import boxes, detectors, imaging

DETECTOR = detectors.NANODET
_OUTPUT = DETECTOR.outputs[0].name
_, INPUT_HEIGHT, INPUT_WIDTH = DETECTOR.inputs[0].dims

STRIDES = (8, 16, 32)  # feature levels, in the order their rows appear in the output
NUM_CLASSES = 80
BINS = 11  # GFL reg_max = 10: distances 0..10 strides
# As NanoDet's own nms_pre: NMS only on the best candidates, so a very low score
# threshold cannot hand NMS 3549 x 80 boxes.
PRE_NMS_TOP_K = 1000


def _anchor_points() -> tuple[np.ndarray, np.ndarray]:
    """Centre ``(x, y)`` in input pixels and stride of every output row."""
    centers, strides = [], []
    for stride in STRIDES:
        rows, cols = INPUT_HEIGHT // stride, INPUT_WIDTH // stride
        row, col = np.divmod(np.arange(rows * cols), cols)  # row-major within a level
        centers.append(np.column_stack([(col + 0.5) * stride, (row + 0.5) * stride]))
        strides.append(np.full(rows * cols, float(stride)))
    return np.concatenate(centers), np.concatenate(strides)


ANCHOR_CENTERS, ANCHOR_STRIDES = _anchor_points()
NUM_ANCHORS = len(ANCHOR_CENTERS)
assert DETECTOR.outputs[0].dims == (NUM_ANCHORS, NUM_CLASSES + 4 * BINS)


# NanoDet's own input normalisation (its config's `img_norm_cfg`), in BGR order.
# human.ts feeds RGB / 255 instead; measured on scikit-image's photos with the
# converted network, that put the right class on top for 2 of 6 photos (toilet and
# vase won elsewhere, which is likely why human.ts drops class 61), while this
# normalisation found motorcycle 0.79, horse 0.56 and cup 0.53 and kept the persons.
_MEAN_BGR = np.array([103.53, 116.28, 123.675], np.float32)
_STD_BGR = np.array([57.375, 57.12, 58.395], np.float32)
_SCALE_BGR = (1.0 / _STD_BGR).astype(np.float32)
_OFFSET_BGR = (-_MEAN_BGR / _STD_BGR).astype(np.float32)


def preprocess(image_rgb: np.ndarray) -> np.ndarray:
    """``uint8`` RGB ``(H, W, 3)`` -> float32 ``(3, 416, 416)``: stretched (no letterbox)
    with bilinear resize, channels reordered to BGR, normalised with NanoDet's
    mean/std, channels first."""
    resized = imaging.resize(image_rgb, INPUT_WIDTH, INPUT_HEIGHT)
    # (x - mean) / std as x * (1 / std) + (-mean / std), one channel plane at a time
    # straight into the channels-first output: 6x faster than the broadcast on HWC.
    chw = np.empty((3, INPUT_HEIGHT, INPUT_WIDTH), np.float32)
    for c in range(3):  # BGR plane c is RGB channel 2 - c
        np.multiply(resized[..., 2 - c], _SCALE_BGR[c], out=chw[c], casting="unsafe")
        chw[c] += _OFFSET_BGR[c]
    return chw


def postprocess(
    outputs: dict[str, np.ndarray],
    image_size: tuple[int, int],
    score_threshold: float,
    iou_threshold: float,
) -> np.ndarray:
    """One image's ``OUTPUT__0`` ``[3549, 124]`` -> float32 ``[N, 6]`` detection rows,
    xyxy in pixels of the original image of ``image_size = (height, width)``.

    Every (anchor, class) pair scoring ``>= score_threshold`` is a candidate, as in
    NanoDet's multi-class NMS, so one anchor may yield boxes of several classes.
    """
    raw = np.asarray(outputs[_OUTPUT], dtype=np.float32).reshape(NUM_ANCHORS, -1)
    scores = raw[:, :NUM_CLASSES]
    anchor, class_id = np.nonzero(scores >= score_threshold)
    candidate_scores = scores[anchor, class_id]
    if len(candidate_scores) > PRE_NMS_TOP_K:
        top = np.argpartition(-candidate_scores, PRE_NMS_TOP_K - 1)[:PRE_NMS_TOP_K]
        anchor, class_id, candidate_scores = anchor[top], class_id[top], candidate_scores[top]

    distances = _integral(raw[anchor, NUM_CLASSES:]) * ANCHOR_STRIDES[anchor, None]
    center = ANCHOR_CENTERS[anchor]
    # distances are (left, top, right, bottom) from the anchor centre, in input pixels
    boxes_input = np.concatenate([center - distances[:, :2], center + distances[:, 2:]], axis=1)
    boxes_image = boxes.scale_boxes(boxes_input, (INPUT_HEIGHT, INPUT_WIDTH), image_size)
    return boxes.filter_detections(
        boxes_image, candidate_scores, class_id, image_size, score_threshold, iou_threshold
    )


def _integral(logits: np.ndarray) -> np.ndarray:
    """GFL ``Integral``: ``[N, 4 * 11]`` logits -> ``[N, 4]`` expected distances in bins."""
    logits = logits.reshape(-1, 4, BINS).astype(np.float64)
    weights = np.exp(logits - logits.max(axis=2, keepdims=True))  # stable softmax
    weights /= weights.sum(axis=2, keepdims=True)
    return weights @ np.arange(BINS, dtype=np.float64)
