"""CenterNet with the decode inside the graph (as CenterNet MobileNetV3 512): RGB float
0..255, NHWC in; ``[max_boxes, 6]`` boxes in input pixels out.

Reference: ``src/object/centernet.ts`` in npm ``@vladmandic/human`` 3.3.6, which runs
NMS on these rows, skips rows whose class is NaN and divides coordinates by the input
size before scaling them to the image, as done here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ensemble import boxes, imaging
from ensemble.families import Family, NetworkTensor


@dataclass(frozen=True)
class CenterNetOptions:
    input_size: int = 512  # square input, pixels
    max_boxes: int = 100  # rows the graph returns


class CenterNet(Family):
    name = "centernet"
    Options = CenterNetOptions

    @property
    def inputs(self) -> tuple[NetworkTensor, ...]:
        size = self.options.input_size
        return (NetworkTensor("images", "FP32", (size, size, 3)),)

    @property
    def outputs(self) -> tuple[NetworkTensor, ...]:
        # Already decoded: x1, y1, x2, y2 in input pixels, score, 0-based class.
        return (NetworkTensor("detections", "FP32", (self.options.max_boxes, 6)),)

    def preprocess(self, image_rgb: np.ndarray) -> np.ndarray:
        """``uint8`` RGB ``(H, W, 3)`` -> float32 ``(size, size, 3)`` in 0..255, stretched
        bilinearly (no letterbox, no normalisation)."""
        size = self.options.input_size
        return imaging.resize(image_rgb, size, size).astype(np.float32)

    def postprocess(
        self,
        outputs: Mapping[str, np.ndarray],
        image_size: tuple[int, int],
        score_threshold: float,
        iou_threshold: float,
    ) -> np.ndarray:
        """One image's ``detections`` (x1, y1, x2, y2 in input pixels, score, 0-based
        class) -> float32 ``[N, 6]`` rows, xyxy in pixels of the original image of
        ``image_size = (height, width)``. Rows with a NaN or out-of-range class are
        dropped."""
        (output,) = self.outputs
        det = np.asarray(outputs[output.name], dtype=np.float64).reshape(-1, 6)
        det = det[np.isfinite(det).all(axis=1)]
        class_id = np.rint(det[:, 5])
        known = (class_id >= 0) & (class_id < self.num_classes)
        det, class_id = det[known], class_id[known]
        size = self.options.input_size
        boxes_image = boxes.scale_boxes(det[:, :4], (size, size), image_size)
        return boxes.filter_detections(
            boxes_image, det[:, 4], class_id, image_size, score_threshold, iou_threshold
        )
