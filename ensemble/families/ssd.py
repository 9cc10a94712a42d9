"""SSD from the TF Object Detection API (as SSD MobileNet v2 COCO): uint8 RGB in; boxes
already decoded and suppressed per class inside the graph out.

The graph's boxes are normalised ``(ymin, xmin, ymax, xmax)`` relative to its input;
since the input is the whole image stretched to the input size, they are also relative
to the original image. Only the first ``num_detections`` rows are real. NMS runs again
with the caller's IoU threshold, which may be stricter than the one frozen into the
graph. Class ids are COCO category ids (1..90 with gaps) for a COCO model, otherwise
1-based indexes into the labels (0 is the API's background class).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ensemble import boxes, contract, imaging
from ensemble.families import Family, NetworkTensor

# COCO category id -> COCO-80 index; -1 for the ten ids that name no class.
COCO80_OF_COCO91 = np.full(max(contract.COCO91_IDS) + 1, -1, dtype=np.int64)
COCO80_OF_COCO91[list(contract.COCO91_IDS)] = np.arange(len(contract.COCO91_IDS))


@dataclass(frozen=True)
class SSDOptions:
    input_size: int = 300  # square input, pixels (the network's own)
    max_boxes: int = 100  # rows of the graph's outputs
    # True: classes are COCO category ids, mapped to COCO-80 (the labels must be
    # those 80). False: 1-based indexes into the detector's labels.
    coco91_ids: bool = True


class SSD(Family):
    name = "ssd"
    Options = SSDOptions

    @property
    def inputs(self) -> tuple[NetworkTensor, ...]:
        size = self.options.input_size
        return (NetworkTensor("image_tensor", "UINT8", (size, size, 3)),)

    @property
    def outputs(self) -> tuple[NetworkTensor, ...]:
        n = self.options.max_boxes
        return (
            NetworkTensor("detection_boxes", "FP32", (n, 4)),  # normalised ymin, xmin, ymax, xmax
            NetworkTensor("detection_scores", "FP32", (n,)),
            NetworkTensor("detection_classes", "FP32", (n,)),  # COCO-91 ids or 1-based
            NetworkTensor("num_detections", "FP32", (1,)),
        )

    @property
    def fixed_classes(self) -> int | None:  # type: ignore[override]
        return len(contract.COCO91_IDS) if self.options.coco91_ids else None

    def preprocess(self, image_rgb: np.ndarray) -> np.ndarray:
        """``uint8`` RGB ``(H, W, 3)`` -> ``uint8`` ``(size, size, 3)``, stretched
        bilinearly."""
        size = self.options.input_size
        return imaging.resize(image_rgb, size, size)

    def postprocess(
        self,
        outputs: Mapping[str, np.ndarray],
        image_size: tuple[int, int],
        score_threshold: float,
        iou_threshold: float,
    ) -> np.ndarray:
        """One image's ``detection_*`` / ``num_detections`` -> float32 ``[N, 6]`` rows, xyxy
        in pixels of the original image of ``image_size = (height, width)``, class ids
        indexing the labels. Rows whose class names no label are dropped."""
        names = [t.name for t in self.outputs]
        boxes_yxyx = np.asarray(outputs[names[0]], dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(outputs[names[1]], dtype=np.float64).reshape(-1)
        raw_class = np.asarray(outputs[names[2]], dtype=np.float64).reshape(-1)
        count = float(np.asarray(outputs[names[3]]).reshape(-1)[0])
        count = int(min(max(count, 0), len(boxes_yxyx))) if np.isfinite(count) else 0
        boxes_yxyx, scores, raw_class = boxes_yxyx[:count], scores[:count], raw_class[:count]

        class_id = np.full(count, -1, dtype=np.int64)
        if self.options.coco91_ids:
            known = np.isfinite(raw_class) & (raw_class >= 0) & (raw_class < len(COCO80_OF_COCO91))
            class_id[known] = COCO80_OF_COCO91[np.rint(raw_class[known]).astype(np.int64)]
        else:
            known = np.isfinite(raw_class) & (raw_class >= 1) & (raw_class <= self.num_classes)
            class_id[known] = np.rint(raw_class[known]).astype(np.int64) - 1
        keep = class_id >= 0

        boxes_image = boxes.scale_boxes(boxes.yxyx_to_xyxy(boxes_yxyx[keep]), (1, 1), image_size)
        return boxes.filter_detections(
            boxes_image, scores[keep], class_id[keep], image_size, score_threshold, iou_threshold
        )
