"""NanoDet (GFL head), as NanoDet-m 416: BGR normalised, NCHW in; per-anchor class
scores and box distributions out.

Reference: the original NanoDet GFL head (``Integral`` + ``distance2bbox``) and
``src/object/nanodet.ts`` in npm ``@vladmandic/human`` 3.3.6. Boxes are decoded the
way NanoDet itself does: each side's distance is the expectation of the softmax over
its bins, times the level's stride. human.ts instead takes the arg-max bin and
multiplies it by ``scaleBox / strideSize * 13`` input pixels with a fudge factor
``scaleBox = 2.5`` (strideSize 1, 2, 4 for strides 32, 16, 8): 1.016 strides, so every
side snaps to a whole bin and comes out 1.6 % long. human.ts also drops class index 61
(toilet) outright; we keep it, since it is one of the 80 classes the model was trained on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ensemble import boxes, imaging
from ensemble.families import Family, NetworkTensor

# As NanoDet's own nms_pre: NMS only on the best candidates, so a very low score
# threshold cannot hand NMS every anchor times every class.
PRE_NMS_TOP_K = 1000


@dataclass(frozen=True)
class NanoDetOptions:
    input_size: int = 416  # square input, pixels
    strides: tuple[int, int, int] = (8, 16, 32)  # feature levels, in output row order
    bins: int = 11  # GFL reg_max + 1: distances 0..bins-1 strides
    # NanoDet's own input normalisation (its config's `img_norm_cfg`), in BGR order.
    # human.ts feeds RGB / 255 instead; measured on scikit-image's photos with the
    # converted network, that put the right class on top for 2 of 6 photos (toilet and
    # vase won elsewhere, which is likely why human.ts drops class 61), while this
    # normalisation found motorcycle 0.79, horse 0.56 and cup 0.53 and kept the persons.
    mean_bgr: tuple[float, float, float] = (103.53, 116.28, 123.675)
    std_bgr: tuple[float, float, float] = (57.375, 57.12, 58.395)


class NanoDet(Family):
    name = "nanodet"
    Options = NanoDetOptions

    @cached_property
    def _anchors(self) -> tuple[np.ndarray, np.ndarray]:
        """Centre ``(x, y)`` in input pixels and stride of every output row."""
        size = self.options.input_size
        centers, strides = [], []
        for stride in self.options.strides:
            rows = cols = size // stride
            row, col = np.divmod(np.arange(rows * cols), cols)  # row-major within a level
            centers.append(np.column_stack([(col + 0.5) * stride, (row + 0.5) * stride]))
            strides.append(np.full(rows * cols, float(stride)))
        return np.concatenate(centers), np.concatenate(strides)

    @property
    def num_anchors(self) -> int:
        return len(self._anchors[0])

    @property
    def inputs(self) -> tuple[NetworkTensor, ...]:
        size = self.options.input_size
        return (NetworkTensor("INPUT__0", "FP32", (3, size, size)),)

    @property
    def outputs(self) -> tuple[NetworkTensor, ...]:
        # Anchor points of every level, row-major; columns: the class scores after
        # sigmoid, then the GFL box distributions (left, top, right, bottom) x bins.
        width = self.num_classes + 4 * self.options.bins
        return (NetworkTensor("OUTPUT__0", "FP32", (self.num_anchors, width)),)

    @cached_property
    def _normalise(self) -> tuple[np.ndarray, np.ndarray]:
        std = np.asarray(self.options.std_bgr, np.float32)
        mean = np.asarray(self.options.mean_bgr, np.float32)
        return (1.0 / std).astype(np.float32), (-mean / std).astype(np.float32)

    def preprocess(self, image_rgb: np.ndarray) -> np.ndarray:
        """``uint8`` RGB ``(H, W, 3)`` -> float32 ``(3, size, size)``: stretched (no
        letterbox) with bilinear resize, channels reordered to BGR, normalised with
        NanoDet's mean/std, channels first."""
        size = self.options.input_size
        resized = imaging.resize(image_rgb, size, size)
        scale, offset = self._normalise
        # (x - mean) / std as x * (1 / std) + (-mean / std), one channel plane at a time
        # straight into the channels-first output: 6x faster than the broadcast on HWC.
        chw = np.empty((3, size, size), np.float32)
        for c in range(3):  # BGR plane c is RGB channel 2 - c
            np.multiply(resized[..., 2 - c], scale[c], out=chw[c], casting="unsafe")
            chw[c] += offset[c]
        return chw

    def postprocess(
        self,
        outputs: Mapping[str, np.ndarray],
        image_size: tuple[int, int],
        score_threshold: float,
        iou_threshold: float,
    ) -> np.ndarray:
        """One image's ``OUTPUT__0`` ``[anchors, classes + 4 * bins]`` -> float32 ``[N, 6]``
        rows, xyxy in pixels of the original image of ``image_size = (height, width)``.

        Every (anchor, class) pair scoring ``>= score_threshold`` is a candidate, as in
        NanoDet's multi-class NMS, so one anchor may yield boxes of several classes.
        """
        centers_all, strides_all = self._anchors
        (output,) = self.outputs
        raw = np.asarray(outputs[output.name], dtype=np.float32).reshape(self.num_anchors, -1)
        scores = raw[:, : self.num_classes]
        anchor, class_id = np.nonzero(scores >= score_threshold)
        candidate_scores = scores[anchor, class_id]
        if len(candidate_scores) > PRE_NMS_TOP_K:
            top = np.argpartition(-candidate_scores, PRE_NMS_TOP_K - 1)[:PRE_NMS_TOP_K]
            anchor, class_id, candidate_scores = anchor[top], class_id[top], candidate_scores[top]

        distances = self._integral(raw[anchor, self.num_classes :]) * strides_all[anchor, None]
        center = centers_all[anchor]
        # distances are (left, top, right, bottom) from the anchor centre, in input pixels
        boxes_input = np.concatenate([center - distances[:, :2], center + distances[:, 2:]], 1)
        size = self.options.input_size
        boxes_image = boxes.scale_boxes(boxes_input, (size, size), image_size)
        return boxes.filter_detections(
            boxes_image, candidate_scores, class_id, image_size, score_threshold, iou_threshold
        )

    def _integral(self, logits: np.ndarray) -> np.ndarray:
        """GFL ``Integral``: ``[N, 4 * bins]`` logits -> ``[N, 4]`` expected distances in
        bins."""
        bins = self.options.bins
        logits = logits.reshape(-1, 4, bins).astype(np.float64)
        weights = np.exp(logits - logits.max(axis=2, keepdims=True))  # stable softmax
        weights /= weights.sum(axis=2, keepdims=True)
        return weights @ np.arange(bins, dtype=np.float64)
