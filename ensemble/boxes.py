"""Box arithmetic shared by the detector families: scaling, clipping, NMS, fusion, packing.

Every box here is ``(x1, y1, x2, y2)`` (xyxy) unless a name says otherwise, in
continuous pixel coordinates with the origin at the top-left corner of the top-left
pixel, so a box covering a whole ``W x H`` image is ``(0, 0, W, H)``. A detection row
is ``(x1, y1, x2, y2, score, class_id)`` with ``class_id`` an index into the detector's
label list stored as a float, as in :data:`ensemble.contract.DETECTION_FIELDS`.

Weighted box fusion is written here rather than taken from PyPI ``ensemble-boxes``:
that package wants boxes normalised to 0..1 (a scale and unscale around every call),
its ``__init__`` imports numba (and it declares pandas), which would add a JIT compiler
and ~100 MB to the Triton Python-backend environment for some 50 lines of numpy, and
its score rescaling counts the boxes in a cluster where we count the models (see
:func:`weighted_box_fusion`). Its clustering rule is otherwise the same: boxes sorted by
weighted score, each joins the fused box it overlaps most if that IoU is strictly above
the threshold, and the fused box is recomputed after every join.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import cv2
import numpy as np

from ensemble import contract

DETECTION_COLUMNS = len(contract.DETECTION_FIELDS)


def empty_detections() -> np.ndarray:
    """A float32 ``[0, 6]`` detection array."""
    return np.zeros((0, DETECTION_COLUMNS), dtype=np.float32)


def yxyx_to_xyxy(boxes_yxyx: np.ndarray) -> np.ndarray:
    """Reorder ``(y1, x1, y2, x2)`` boxes (the TF Object Detection API layout) to xyxy."""
    boxes_yxyx = np.asarray(boxes_yxyx)
    return boxes_yxyx[..., [1, 0, 3, 2]]


def scale_boxes(
    boxes_xyxy: np.ndarray, from_size: tuple[float, float], to_size: tuple[float, float]
) -> np.ndarray:
    """Map xyxy boxes from one image size to another by stretching each axis.

    ``from_size`` and ``to_size`` are ``(height, width)``. Use ``from_size=(1, 1)`` to
    turn normalised 0..1 boxes into pixels. This is the inverse of a plain (non
    letterbox) resize: x is multiplied by ``to_w / from_w`` and y by ``to_h / from_h``.
    Returns float64.
    """
    (from_h, from_w), (to_h, to_w) = from_size, to_size
    factors = np.array([to_w / from_w, to_h / from_h, to_w / from_w, to_h / from_h])
    return np.asarray(boxes_xyxy, dtype=np.float64) * factors


def clip_boxes(boxes_xyxy: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Clip xyxy pixel boxes to an image of ``image_size = (height, width)``.

    x is clipped to ``[0, width]`` and y to ``[0, height]`` (the far edges, not the last
    pixel centres). Returns a new float64 array.
    """
    height, width = image_size
    boxes = np.array(boxes_xyxy, dtype=np.float64)
    boxes[..., [0, 2]] = np.clip(boxes[..., [0, 2]], 0.0, width)
    boxes[..., [1, 3]] = np.clip(boxes[..., [1, 3]], 0.0, height)
    return boxes


def box_areas(boxes_xyxy: np.ndarray) -> np.ndarray:
    """Areas of xyxy boxes; negative when a box is inverted (x2 < x1 or y2 < y1)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    width = boxes[..., 2] - boxes[..., 0]
    height = boxes[..., 3] - boxes[..., 1]
    # An inverted box must not get a positive area from two negative sides.
    return np.where((width < 0) | (height < 0), -np.abs(width * height), width * height)


def iou(box_xyxy: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
    """Intersection over union of one xyxy box with each of ``boxes_xyxy`` ``[N, 4]``.

    Boxes whose union is empty get IoU 0.
    """
    box = np.asarray(box_xyxy, dtype=np.float64)
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    inter_w = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    inter_h = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.clip(inter_w, 0, None) * np.clip(inter_h, 0, None)
    union = box_areas(box) + box_areas(boxes) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def valid_boxes(boxes_xyxy: np.ndarray) -> np.ndarray:
    """Mask of boxes that are finite and have a positive area."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=1)
    positive = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return finite & positive


def nms(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    iou_threshold: float,
    max_detections: int = contract.MAX_DETECTIONS,
) -> np.ndarray:
    """Class-aware non-maximum suppression.

    ``boxes_xyxy`` is ``[N, 4]`` in any consistent unit (pixels here); boxes of
    different ``class_ids`` never suppress each other. A box is suppressed when its IoU
    with a higher-scoring kept box of the same class is strictly above
    ``iou_threshold``. Boxes with a non-finite coordinate or score, or with zero or
    negative area, are never kept. Returns the kept indices into the inputs (int64),
    sorted by score descending (ties keep input order), at most ``max_detections``.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    class_ids = np.asarray(class_ids).reshape(-1)
    if not (len(boxes) == len(scores) == len(class_ids)):
        raise ValueError(
            f"nms needs as many boxes, scores and class ids: {len(boxes)}, {len(scores)}, "
            f"{len(class_ids)}"
        )
    # OpenCV treats any two empty boxes as identical (IoU 1, even far apart) and keeps
    # boxes with NaN coordinates, so such boxes are removed before it sees them.
    candidates = np.flatnonzero(valid_boxes(boxes) & np.isfinite(scores))
    if len(candidates) == 0 or max_detections <= 0:
        return np.zeros(0, dtype=np.int64)
    xywh = boxes[candidates].copy()
    xywh[:, 2:] -= xywh[:, :2]
    cand_scores = scores[candidates]
    # OpenCV keeps only scores strictly above its threshold: pass one below the minimum so
    # it filters nothing (the families apply the user's threshold as ">=").
    floor = float(cand_scores.min()) - 1.0
    kept = cv2.dnn.NMSBoxesBatched(
        xywh,
        cand_scores.astype(np.float32),
        class_ids[candidates].astype(np.int32),
        floor,
        float(iou_threshold),
    )
    kept = candidates[np.asarray(kept, dtype=np.int64).reshape(-1)]
    # OpenCV returns score order today but does not document it; the contract needs it.
    kept = kept[np.argsort(-scores[kept], kind="stable")]
    return kept[:max_detections]


def filter_detections(
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    image_size: tuple[int, int],
    score_threshold: float,
    iou_threshold: float,
    max_detections: int = contract.MAX_DETECTIONS,
) -> np.ndarray:
    """The common tail of every family's postprocess.

    Takes candidate boxes already in original-image pixels (xyxy), keeps those with
    ``score >= score_threshold``, clips them to ``image_size = (height, width)``, drops
    boxes left empty by clipping, runs class-aware :func:`nms` and returns float32
    ``[N, 6]`` detection rows sorted by score descending, at most ``max_detections``.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    class_ids = np.asarray(class_ids).reshape(-1)
    keep = scores >= score_threshold
    boxes = clip_boxes(boxes[keep], image_size)
    scores, class_ids = scores[keep], class_ids[keep]
    kept = nms(boxes, scores, class_ids, iou_threshold, max_detections)
    if len(kept) == 0:
        return empty_detections()
    rows = np.column_stack([boxes[kept], scores[kept], class_ids[kept].astype(np.float64)])
    return rows.astype(np.float32)


def _pool(
    detection_sets: Sequence[np.ndarray],
    score_threshold: float,
    weights: Sequence[float] | None,
    known_classes: Sequence[Collection[int]] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every model's usable rows in one float64 ``[N, 6]`` array (non-finite, empty and
    below-threshold rows left out), the model of each row, and the models' weights."""
    n_models = len(detection_sets)
    model_weights = np.ones(n_models) if weights is None else np.asarray(weights, np.float64)
    if model_weights.shape != (n_models,) or not np.all(model_weights > 0):
        raise ValueError(f"need {n_models} positive weights, got {weights!r}")
    if known_classes is not None and len(known_classes) != n_models:
        raise ValueError(f"need {n_models} sets of known classes, got {len(known_classes)}")
    rows, model_of_row = [empty_detections()], [np.zeros(0, np.int64)]
    for model, detections in enumerate(detection_sets):
        det = np.asarray(detections, dtype=np.float64).reshape(-1, DETECTION_COLUMNS)
        keep = np.isfinite(det).all(axis=1) & valid_boxes(det[:, :4])
        keep &= det[:, 4] >= score_threshold
        rows.append(det[keep])
        model_of_row.append(np.full(int(keep.sum()), model))
    det = np.concatenate(rows).astype(np.float64)
    return det, np.concatenate(model_of_row), model_weights


def _knowing_weight(
    class_id: float,
    det: np.ndarray,
    model_of_row: np.ndarray,
    model_weights: np.ndarray,
    known_classes: Sequence[Collection[int]] | None,
) -> float:
    """The summed weight of the models that know ``class_id``: every model without
    ``known_classes``; else those whose set has it, and those that predicted it."""
    if known_classes is None:
        return float(model_weights.sum())
    knowing = {m for m, known in enumerate(known_classes) if int(class_id) in known}
    # A model that predicted the class knows it, whatever its set says.
    knowing |= set(model_of_row[det[:, 5] == class_id].tolist())
    return float(model_weights[sorted(knowing)].sum())


def _cluster(
    boxes_xyxy: np.ndarray, weighted_scores: np.ndarray, rows: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, list[list[int]]]:
    """Weighted box fusion's clustering of ``rows`` (indices into ``boxes_xyxy``): taken
    by weighted score descending, each joins the cluster whose fused box it overlaps most
    if that IoU is strictly above ``iou_threshold``, else starts one; a fused box is the
    weighted-score mean of its members' boxes, recomputed after every join. Returns the
    fused boxes ``[C, 4]`` and each cluster's rows, best first."""
    order = rows[np.argsort(-weighted_scores[rows], kind="stable")]
    fused_boxes = np.zeros((0, 4))
    clusters: list[list[int]] = []
    for row in order:
        if len(clusters):
            overlaps = iou(boxes_xyxy[row], fused_boxes)
            best = int(np.argmax(overlaps))
            if overlaps[best] > iou_threshold:
                clusters[best].append(int(row))
                w = weighted_scores[clusters[best]]
                fused_boxes[best] = w @ boxes_xyxy[clusters[best]] / w.sum()
                continue
        clusters.append([int(row)])
        fused_boxes = np.vstack([fused_boxes, boxes_xyxy[row]])
    return fused_boxes, clusters


def weighted_box_fusion(
    detection_sets: Sequence[np.ndarray],
    iou_threshold: float,
    score_threshold: float = 0.0,
    weights: Sequence[float] | None = None,
    known_classes: Sequence[Collection[int]] | None = None,
) -> np.ndarray:
    """Weighted box fusion (Solovyev et al. 2021) of several models' detections.

    ``detection_sets`` holds one ``[N_i, 6]`` array of detection rows per model, in
    pixels of the same image (xyxy). Input rows scoring below ``score_threshold``, or
    with non-finite values or empty boxes, are ignored. Per class, boxes are taken in
    order of weighted score (score times the model's weight, default 1); each joins the
    cluster whose fused box it overlaps most if that IoU is strictly above
    ``iou_threshold``, else starts a new cluster. A cluster's fused box is the mean of
    its boxes weighted by weighted score; its score is the mean weighted score of its
    boxes times ``M / sum(weights)``, where ``M`` is the number of distinct models in the
    cluster. With unit weights that is ``mean * M / number_of_models``: a box all models
    agree on keeps its mean score, one seen by one model of three gets a third.

    With ``known_classes`` (per model, the class ids it can predict), a class is fused
    among the models that know it: ``sum(weights)`` counts only those, so a model that
    lacks a label does not count against a box of that label. Without it every model
    knows every class.

    ``ensemble-boxes`` uses ``min(boxes in cluster, models)`` for ``M``, so a cluster
    holding two boxes from one model would count as two models there; the results are
    the same whenever each model contributes at most one box to a cluster.

    Returns float32 ``[M, 6]`` rows sorted by fused score descending. Fused scores can
    fall below ``score_threshold``; filter the result if that matters.
    """
    det, model_of_row, model_weights = _pool(
        detection_sets, score_threshold, weights, known_classes
    )
    weighted_scores = det[:, 4] * model_weights[model_of_row]
    fused_rows = []
    for class_id in np.unique(det[:, 5]):
        normaliser = _knowing_weight(class_id, det, model_of_row, model_weights, known_classes)
        members_of_class = np.flatnonzero(det[:, 5] == class_id)
        fused_boxes, clusters = _cluster(
            det[:, :4], weighted_scores, members_of_class, iou_threshold
        )
        for box, members in zip(fused_boxes, clusters, strict=True):
            n_seen_by = len(np.unique(model_of_row[members]))
            score = weighted_scores[members].mean() * n_seen_by / normaliser
            fused_rows.append([*box, score, class_id])
    return _by_score(fused_rows)


def _by_score(rows: list[list[float]]) -> np.ndarray:
    """Rows as float32 ``[N, 6]``, sorted by score descending (ties keep their order)."""
    if not rows:
        return empty_detections()
    fused = np.asarray(rows, dtype=np.float64)
    return fused[np.argsort(-fused[:, 4], kind="stable")].astype(np.float32)


# An alternative label of a fused box: (class_id, support), as in ALTERNATIVE_LABELS.
NO_ALTERNATIVE = (-1.0, 0.0)


def no_alternatives(
    n_rows: int, max_alternatives: int = contract.MAX_ALTERNATIVE_LABELS
) -> np.ndarray:
    """float32 ``[n_rows, max_alternatives, 2]`` of padding: rows without other labels."""
    padding = np.empty((n_rows, max_alternatives, 2), np.float32)
    padding[...] = NO_ALTERNATIVE
    return padding


def label_support(
    class_ids: np.ndarray,
    model_of_row: np.ndarray,
    weighted_scores: np.ndarray,
    normalisers: dict[float, float],
) -> list[tuple[float, float]]:
    """The support of each label among one cluster's boxes, as ``(class_id, support)``
    in the order the labels first appear in the rows (best box first).

    The support of label ``L`` is the sum, over the models, of each model's best weighted
    score (score times its weight) for ``L`` among the boxes, divided by
    ``normalisers[L]``, the summed weight of the models that know ``L``. A model that
    gives the object two boxes of ``L`` (its NMS keeps boxes that overlap up to its IoU
    threshold) votes once, with its best.
    """
    support = []
    for class_id in dict.fromkeys(class_ids.tolist()):
        of_label = class_ids == class_id
        best = {}
        for model, score in zip(model_of_row[of_label], weighted_scores[of_label], strict=True):
            best[model] = max(best.get(model, 0.0), score)
        support.append((class_id, sum(best.values()) / normalisers[class_id]))
    return support


def fuse_across_labels(
    detection_sets: Sequence[np.ndarray],
    iou_threshold: float,
    score_threshold: float = 0.0,
    weights: Sequence[float] | None = None,
    known_classes: Sequence[Collection[int]] | None = None,
    max_alternatives: int = contract.MAX_ALTERNATIVE_LABELS,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted box fusion that gives each object one box, whatever label each model
    gives it: the detectors that call one car "car" and "truck" make one box.

    The inputs and the clustering are :func:`weighted_box_fusion`'s, but all labels are
    clustered together. Each cluster becomes one row: its box is the weighted-score mean
    of all its boxes (every model that saw the object says where it is), its label the
    one with the most support (:func:`label_support`), ties going to the label of the
    cluster's best box, and its score that label's support.

    Support is the sum of the models' best scores for the label, over the weight of the
    models that know it, so that it is on the scale of the fused scores: with at most one
    box per model and label in a cluster, a label's support is exactly the score
    :func:`weighted_box_fusion` gives its box (mean score times models seen by, over
    models knowing it, is that sum over that count), and where no cluster mixes labels
    both give the same rows.

    Returns float32 rows ``[M, 6]`` sorted by score descending, and float32
    ``[M, max_alternatives, 2]``: for each row the other labels of its cluster as
    ``(class_id, support)``, most supported first, at most ``max_alternatives``, padded
    with :data:`NO_ALTERNATIVE`. Supports, like fused scores, can lie below
    ``score_threshold``; filter the rows if that matters.
    """
    det, model_of_row, model_weights = _pool(
        detection_sets, score_threshold, weights, known_classes
    )
    weighted_scores = det[:, 4] * model_weights[model_of_row]
    normalisers = {
        c: _knowing_weight(c, det, model_of_row, model_weights, known_classes)
        for c in np.unique(det[:, 5]).tolist()
    }
    fused_boxes, clusters = _cluster(
        det[:, :4], weighted_scores, np.arange(len(det)), iou_threshold
    )
    fused_rows, alternatives = [], no_alternatives(len(clusters), max_alternatives)
    for i, (box, members) in enumerate(zip(fused_boxes, clusters, strict=True)):
        support = label_support(
            det[members, 5], model_of_row[members], weighted_scores[members], normalisers
        )
        # Stable: equal supports keep the order of first appearance, best box first.
        (class_id, score), *others = sorted(support, key=lambda s: -s[1])
        fused_rows.append([*box, score, class_id])
        for j, alternative in enumerate(others[:max_alternatives]):
            alternatives[i, j] = alternative
    order = np.argsort(-np.array([r[4] for r in fused_rows]), kind="stable")
    return _by_score(fused_rows), alternatives[order]


def pack_alternatives(
    alternatives: np.ndarray, max_detections: int = contract.MAX_DETECTIONS
) -> np.ndarray:
    """Lay the alternatives of detection rows out as the fixed-size ``ALTERNATIVE_LABELS``
    tensor: float32 ``[max_detections, K, 2]``, those of the first ``max_detections``
    rows, padded with :data:`NO_ALTERNATIVE`. The rows must be in the order
    :func:`pack_detections` keeps them: sorted by score, as the fusions return them."""
    alternatives = np.asarray(alternatives, np.float32)[:max_detections]
    packed = no_alternatives(max_detections, alternatives.shape[1])
    packed[: len(alternatives)] = alternatives
    return packed


def pack_detections(
    detections: np.ndarray, max_detections: int = contract.MAX_DETECTIONS
) -> tuple[np.ndarray, int]:
    """Lay detection rows out as the fixed-size ``DETECTIONS`` tensor.

    Sorts ``[N, 6]`` rows by score descending (ties keep input order), keeps at most
    ``max_detections`` and zero-pads to float32 ``[max_detections, 6]``. Returns the
    padded array and the number of real rows (``NUM_DETECTIONS``). Coordinates pass
    through unchanged.
    """
    det = np.asarray(detections, dtype=np.float32).reshape(-1, DETECTION_COLUMNS)
    det = det[np.argsort(-det[:, 4], kind="stable")][:max_detections]
    packed = np.zeros((max_detections, DETECTION_COLUMNS), dtype=np.float32)
    packed[: len(det)] = det
    return packed, len(det)
