"""YOLO in the layout of Ultralytics exports (YOLOv8, YOLO11 and kin): letterboxed RGB
/ 255, NCHW in; ``[4 + classes, candidates]`` out, each column ``(cx, cy, w, h)`` in
input pixels followed by the class scores (already through a sigmoid).

Reference: Ultralytics' ``LetterBox`` (pre-processing) and ``non_max_suppression`` /
``scale_boxes`` (post-processing), followed step by step with its defaults for
prediction: a candidate's class is its best-scoring one (``multi_label=False``), at
most ``max_nms`` candidates by score go to a class-aware NMS that suppresses an
overlap strictly above the IoU threshold, and boxes are mapped back through the
letterbox and clipped after NMS. Two departures, both from the service's contract: a
score equal to the threshold is kept (Ultralytics keeps strictly greater), and at
most :data:`ensemble.contract.MAX_DETECTIONS` rows come back.

Export a trained model for it with ``yolo export model=best.pt format=onnx dynamic=True``
(or ``format=torchscript`` / ``format=saved_model``), at the ``imgsz`` it was trained
with; the class names go in a labels file, one per line, in class order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from ensemble import boxes, contract
from ensemble.families import Family, NetworkTensor


@dataclass(frozen=True)
class YOLOOptions:
    input_size: int = 640  # square letterbox side, pixels (the export's imgsz)
    pad_value: int = 114  # grey of the letterbox bars, as Ultralytics pads
    max_nms: int = 30000  # candidates handed to NMS at most, best first


def letterbox_geometry(
    image_size: tuple[int, int], input_size: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where an image of ``image_size = (height, width)`` lands in the square input:
    ``((new_height, new_width), (top, left))`` in input pixels, as Ultralytics'
    ``LetterBox``: scaled by ``min(size / h, size / w)``, each side rounded, centred
    with ``round(pad - 0.1)`` on the top/left side."""
    h, w = image_size
    gain = min(input_size / h, input_size / w)
    new_h, new_w = max(round(h * gain), 1), max(round(w * gain), 1)
    top = round((input_size - new_h) / 2 - 0.1)
    left = round((input_size - new_w) / 2 - 0.1)
    return (new_h, new_w), (top, left)


class YOLO(Family):
    name = "yolo"
    Options = YOLOOptions

    @property
    def inputs(self) -> tuple[NetworkTensor, ...]:
        size = self.options.input_size
        return (NetworkTensor("images", "FP32", (3, size, size)),)

    @property
    def outputs(self) -> tuple[NetworkTensor, ...]:
        # The number of candidates depends on the input size and the head's strides.
        return (NetworkTensor("output0", "FP32", (4 + self.num_classes, -1)),)

    def preprocess(self, image_rgb: np.ndarray) -> np.ndarray:
        """``uint8`` RGB ``(H, W, 3)`` -> float32 ``(3, size, size)`` in 0..1: resized
        bilinearly keeping its aspect ratio, centred on grey bars (the letterbox)."""
        size = self.options.input_size
        h, w = image_rgb.shape[:2]
        (new_h, new_w), (top, left) = letterbox_geometry((h, w), size)
        canvas = np.full((size, size, 3), self.options.pad_value, np.uint8)
        resized = image_rgb
        if (new_h, new_w) != (h, w):
            resized = cv2.resize(image_rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        canvas[top : top + new_h, left : left + new_w] = resized
        chw = np.empty((3, size, size), np.float32)
        for c in range(3):
            np.multiply(canvas[..., c], np.float32(1 / 255), out=chw[c], casting="unsafe")
        return chw

    def postprocess(
        self,
        outputs: Mapping[str, np.ndarray],
        image_size: tuple[int, int],
        score_threshold: float,
        iou_threshold: float,
    ) -> np.ndarray:
        """One image's ``output0`` ``[4 + classes, N]`` -> float32 ``[N, 6]`` rows, xyxy in
        pixels of the original image of ``image_size = (height, width)``."""
        (output,) = self.outputs
        raw = np.asarray(outputs[output.name], dtype=np.float32)
        raw = raw.reshape(4 + self.num_classes, -1).T  # one row per candidate
        scores_all = raw[:, 4:]
        class_id = scores_all.argmax(axis=1)
        scores = scores_all[np.arange(len(raw)), class_id]
        keep = np.flatnonzero(scores >= score_threshold)
        keep = keep[np.argsort(-scores[keep], kind="stable")][: self.options.max_nms]
        cx, cy, w, h = raw[keep, :4].T.astype(np.float64)
        boxes_input = np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        kept = boxes.nms(
            boxes_input, scores[keep].astype(np.float64), class_id[keep], iou_threshold,
            contract.MAX_DETECTIONS,
        )  # fmt: skip
        if len(kept) == 0:
            return boxes.empty_detections()
        # Back through the letterbox: each axis by its own rounded scale, as Ultralytics'
        # scale_boxes does.
        (new_h, new_w), (top, left) = letterbox_geometry(image_size, self.options.input_size)
        gain_x, gain_y = new_w / image_size[1], new_h / image_size[0]
        found = boxes_input[kept] - np.array([left, top, left, top])
        found = found / np.array([gain_x, gain_y, gain_x, gain_y])
        found = boxes.clip_boxes(found, image_size)
        rows = np.column_stack([found, scores[keep][kept], class_id[keep][kept]])
        return rows.astype(np.float32)
