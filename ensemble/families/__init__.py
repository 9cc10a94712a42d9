"""Pre- and post-processing of each detector family, behind one small interface.

A family module exposes two functions, :class:`Family` below. ``preprocess`` turns one
decoded image into that detector's input tensor (batch dimension left out);
``postprocess`` turns one image's detector outputs into detection rows
``(x1, y1, x2, y2, score, class_id)``: xyxy in pixels of the original image, clipped to
it, ``score >= score_threshold``, class-aware NMS at ``iou_threshold``, COCO-80 class
ids, sorted by score descending, at most :data:`ensemble.contract.MAX_DETECTIONS` rows,
float32 ``[N, 6]``. Tensor names and input sizes come from :mod:`ensemble.detectors`.

A new family is one more module with these two functions and one entry in
:data:`FAMILIES`, keyed by the ``family`` field of its detector in ``detectors.py``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ensemble import detectors
from ensemble.families import centernet, nanodet, ssd


class Family(Protocol):
    def preprocess(self, image_rgb: np.ndarray) -> np.ndarray:
        """One ``uint8`` RGB ``(height, width, 3)`` image -> the detector's input tensor."""
        ...

    def postprocess(
        self,
        outputs: dict[str, np.ndarray],
        image_size: tuple[int, int],
        score_threshold: float,
        iou_threshold: float,
    ) -> np.ndarray:
        """One image's outputs by tensor name -> float32 ``[N, 6]`` detection rows in
        pixels of the original image of ``image_size = (height, width)``."""
        ...


# Keyed by the ``family`` field of each detector: "nanodet", "ssd", "centernet".
FAMILIES: dict[str, Family] = {
    detectors.NANODET.family: nanodet,
    detectors.SSD.family: ssd,
    detectors.CENTERNET.family: centernet,
}
