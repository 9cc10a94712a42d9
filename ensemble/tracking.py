"""A multi-object tracker: which detection of this frame is which object of the last.

ByteTrack's scheme (Zhang et al., 2022), in numpy and scipy:

- every track carries a constant-velocity Kalman filter on its box's centre and size
  (state ``cx, cy, w, h`` and their velocities, pixels and pixels per frame), which
  predicts where the box is in the next frame, or ``frame_gap`` frames on when frames
  were dropped; while a track is unseen its size is held (ByteTrack's zeroed size
  velocity), and a detection corrects it the more the higher it scores (the
  measurement noise times ``1 - score``, the NSA Kalman filter of GIAOTracker and
  StrongSORT);
- detections are matched to the predicted boxes by IoU (cost ``1 - IoU``, pairs under
  ``match_iou`` never matched), with ``scipy.optimize.linear_sum_assignment``, in two
  passes: the detections scoring at least ``high_score`` against every track, then those
  scoring between ``low_score`` and ``high_score`` against the tracks seen in the last
  frame that are still unmatched. The second pass keeps an object whose score dropped
  (half hidden, blurred) on its track, without letting low scores start tracks;
- a high-score detection left over starts a tentative track when it scores at least
  ``new_track_score``; the track is confirmed, and gets its id, after ``min_hits``
  matched frames in a row (a tentative track that misses one frame is dropped, so one
  frame's false detection never gets an id); a confirmed track that goes unmatched is
  kept, predicted on, and can be matched again until it has been unseen ``lost_frames``
  frames: an object hidden for a moment keeps its id.

Two additions of ours, both for objects that pass each other (measured with
``bench.tracking``, see docs/tracking.md):

- Labels ignored (``class_aware`` False), two detections of one box with different
  labels (a detector's "cat" and "dog" on one animal) are one object: a detection that
  overlaps a better-scoring one at IoU over :data:`DUPLICATE_IOU` is left out (id -1),
  where it would have started a second track on the object or fed a track that lost
  its own.
- An object that passes behind another is first partly hidden: its detection is only
  the part in sight, a box that shrinks from the hidden side, whose centre stops
  moving. Fed to the filter, it would teach the track that the object stopped, and the
  track would wait where the object vanished while it comes out on the far side. So a
  detection narrower (or lower) than :data:`PARTLY_HIDDEN` of the track's usual size is
  taken as the part in sight: the filter is given the box of the track's usual size
  that keeps the detection's edge on the side in sight (the edge nearer where the
  filter expected it; the other is the edge of what hides the object).

Boxes are ``(x1, y1, x2, y2)`` in pixels (x to the right, y down), as
:data:`ensemble.contract.DETECTION_FIELDS` rows.

Why our own code and not ``supervision``'s ``ByteTrack`` (a well-kept implementation):
the ``supervision`` package requires ``opencv-python``, which installs a second ``cv2``
over the ``opencv-python-headless`` this project pins (the two clash in one
environment), and it pulls matplotlib into the server's Python-backend environment; the
tracker itself is the short module below.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

# Kalman noise, as ByteTrack sets it: standard deviations as fractions of the box's
# width (for cx, w) or height (for cy, h), so that big, near objects may move more
# pixels than small ones. Position: measurement noise and per-frame process noise;
# velocity: per-frame process noise (pixels per frame, per box size).
_POSITION_STD = 1 / 20
_VELOCITY_STD = 1 / 160
# The most box centres a track keeps for its trail (frames).
TRAIL_KEPT = 120
# Labels ignored, a detection overlapping a better-scoring one by more than this IoU is
# the same object seen twice. Above the IoU at which detectors' NMS keeps two boxes of
# one label (0.5 here), so two objects a detector told apart stay apart.
DUPLICATE_IOU = 0.7
# A detection narrower or lower than this share of its track's usual size is taken for
# an object partly hidden (module docstring); the usual size follows the other
# detections, each weighing this much (an object coming nearer grows about 1 % a frame:
# the usual size keeps up, a box losing 5 % a frame behind something does not).
PARTLY_HIDDEN = 0.8
SIZE_FOLLOW = 0.1
# The least share of the measurement noise a detection gets, however high its score
# (a score of 1 would make the filter take the box as exact).
_LEAST_NOISE = 0.05
# Cost of a pair under match_iou: never chosen while a pair over it is left.
_NO_MATCH = 1e6


@dataclass(frozen=True)
class TrackerSettings:
    """How :class:`Tracker` matches and keeps tracks. Scores are the detector's (0..1),
    IoU 0..1, frames counted in frames of the stream (dropped ones included)."""

    # The defaults were tuned on bench.tracking's clips with the bundled detectors
    # (docs/tracking.md): with ByteTrack's 0.5 and 0.6, two of them never tracked the
    # cat, which they score 0.37 and 0.41 (medians), and an object hidden behind another
    # for 36 frames (1.4 s at 25 fps) outlived ByteTrack's 30 lost frames.
    high_score: float = 0.4  # first association pass
    low_score: float = 0.1  # second pass (ByteTrack's low-score rescue)
    new_track_score: float = 0.45  # a detection this good may start a track
    match_iou: float = 0.2  # minimum IoU to associate
    lost_frames: int = 60  # a track unseen this many frames is dropped
    min_hits: int = 2  # frames before a new track gets an id shown
    class_aware: bool = False  # True: a track only matches its own label

    def __post_init__(self) -> None:
        if not 0 <= self.low_score <= self.high_score <= self.new_track_score:
            raise ValueError(
                "scores must satisfy 0 <= low_score <= high_score <= new_track_score, got "
                f"{self.low_score}, {self.high_score}, {self.new_track_score}"
            )
        if not 0 < self.match_iou <= 1:
            raise ValueError(f"match_iou must lie in (0, 1], got {self.match_iou}")
        if self.lost_frames < 1 or self.min_hits < 1:
            raise ValueError(
                f"lost_frames and min_hits must be at least 1, got {self.lost_frames}, "
                f"{self.min_hits}"
            )


def _box_size_std(box_cxcywh: np.ndarray, weight: float) -> np.ndarray:
    """``weight`` times the box's width, height, width, height (pixels)."""
    width, height = box_cxcywh[2], box_cxcywh[3]
    return weight * np.array([width, height, width, height])


# One frame of constant velocity: position += velocity; the measurement is the position.
_TRANSITION = np.eye(8) + np.eye(8, k=4)
_MEASUREMENT = np.eye(4, 8)


@dataclass
class _Track:
    """One followed object: its filter (mean ``cx, cy, w, h, vx, vy, vw, vh`` in pixels
    and pixels per frame, covariance 8 x 8), its usual size (``w, h`` pixels, the size
    of its whole box), its id once confirmed, when it was last matched (frame number),
    how many updates matched it (in a row while tentative: one miss ends a tentative
    track) and the centres of its matched boxes (its trail)."""

    mean: np.ndarray
    covariance: np.ndarray
    size: np.ndarray
    label: int
    last_seen: int
    hits: int = 1
    track_id: int = -1  # -1 while tentative
    centres: collections.deque = field(default_factory=lambda: collections.deque(maxlen=TRAIL_KEPT))

    @classmethod
    def start(cls, row: np.ndarray, frame: int) -> _Track:
        box = _cxcywh(row[:4])
        std = np.concatenate(
            [_box_size_std(box, 2 * _POSITION_STD), _box_size_std(box, 10 * _VELOCITY_STD)]
        )
        track = cls(np.r_[box, np.zeros(4)], np.diag(std**2), box[2:].copy(), int(row[5]), frame)
        track.centres.append((float(box[0]), float(box[1])))
        return track

    @property
    def confirmed(self) -> bool:
        return self.track_id > 0

    def box(self) -> np.ndarray:
        """The filter's box, xyxy pixels; at least a pixel wide and high (a size that
        shrank while predicted on is never negative)."""
        cx, cy, width, height = self.mean[:4]
        width, height = max(width, 1.0), max(height, 1.0)
        return np.array([cx - width / 2, cy - height / 2, cx + width / 2, cy + height / 2])

    def predict(self, frames: int, unseen: bool) -> None:
        """Move the filter ``frames`` frames on (the noise of each frame added); an
        ``unseen`` track (unmatched in the last update) keeps its size."""
        if unseen:
            self.mean[6:] = 0.0
        for _ in range(frames):
            std = np.concatenate(
                [_box_size_std(self.mean, _POSITION_STD), _box_size_std(self.mean, _VELOCITY_STD)]
            )
            self.mean = _TRANSITION @ self.mean
            self.covariance = _TRANSITION @ self.covariance @ _TRANSITION.T + np.diag(std**2)

    def correct(self, row: np.ndarray, frame: int) -> None:
        """The filter corrected by the detection ``row`` matched in ``frame``."""
        box = self._whole(row[:4])
        trust = max(1.0 - float(row[4]), _LEAST_NOISE)
        noise = np.diag(_box_size_std(self.mean, _POSITION_STD) ** 2) * trust
        projected = _MEASUREMENT @ self.covariance @ _MEASUREMENT.T + noise
        gain = np.linalg.solve(projected, _MEASUREMENT @ self.covariance).T
        self.mean = self.mean + gain @ (box - _MEASUREMENT @ self.mean)
        self.covariance = self.covariance - gain @ projected @ gain.T
        self.hits += 1
        self.last_seen = frame
        self.label = int(row[5])
        self.centres.append((float(box[0]), float(box[1])))

    def _whole(self, box_xyxy: np.ndarray) -> np.ndarray:
        """The box (``cx, cy, w, h``) of the whole object a detection (xyxy) shows: the
        detection itself, its size then followed by the usual size; or, a confirmed
        track's detection narrower or lower than :data:`PARTLY_HIDDEN` of the usual
        size, the usual size on that axis, kept on the side in sight (module docstring)."""
        seen = np.asarray(box_xyxy, dtype=np.float64)
        whole = seen.copy()
        expected = np.r_[self.mean[:2] - self.size / 2, self.mean[:2] + self.size / 2]
        hidden = False
        for low, high in ((0, 2), (1, 3)):
            usual = self.size[low]
            if self.confirmed and seen[high] - seen[low] < PARTLY_HIDDEN * usual:
                hidden = True
                if abs(seen[low] - expected[low]) <= abs(seen[high] - expected[high]):
                    whole[high] = seen[low] + usual
                else:
                    whole[low] = seen[high] - usual
        if not hidden:
            self.size += SIZE_FOLLOW * (seen[2:] - seen[:2] - self.size)
        return _cxcywh(whole)


def _duplicates(rows: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Of ``candidates`` (row indices), those overlapping a better-scoring candidate
    that is not itself one, at IoU over :data:`DUPLICATE_IOU` (a greedy NMS over every
    label)."""
    order = candidates[np.argsort(-rows[candidates, 4], kind="stable")]
    overlap = _iou_matrix(rows[order, :4], rows[order, :4])
    kept: list[int] = []
    dropped = []
    for k, index in enumerate(order):
        if kept and overlap[k, kept].max() > DUPLICATE_IOU:
            dropped.append(index)
        else:
            kept.append(k)
    return np.array(dropped, np.int64)


def _iou_matrix(a_xyxy: np.ndarray, b_xyxy: np.ndarray) -> np.ndarray:
    """IoU of each box of ``a_xyxy`` (M, 4) with each of ``b_xyxy`` (N, 4): (M, N).
    (``ensemble.boxes.iou`` takes one box at a time, and imports OpenCV, which this
    module, numpy and scipy only, does without.)"""
    top_left = np.maximum(a_xyxy[:, None, :2], b_xyxy[None, :, :2])
    bottom_right = np.minimum(a_xyxy[:, None, 2:], b_xyxy[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = (a_xyxy[:, 2:] - a_xyxy[:, :2]).prod(axis=1)
    area_b = (b_xyxy[:, 2:] - b_xyxy[:, :2]).prod(axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _cxcywh(box_xyxy: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])


class Tracker:
    """Follows the objects of one stream of frames: call :meth:`update` with each
    frame's detections, in frame order. Not thread-safe: one tracker per stream."""

    def __init__(self, settings: TrackerSettings = TrackerSettings()) -> None:
        self.settings = settings
        self._tracks: list[_Track] = []
        self._frame = 0  # the number of the frame last applied (the first is 1)
        self._next_id = 1

    def update(self, detections: np.ndarray, frame_gap: int = 1) -> np.ndarray:
        """detections: float32 (N, 6) rows x1, y1, x2, y2 (pixels), score, class_id
        (ensemble.contract.DETECTION_FIELDS). frame_gap: frames since the last update
        (>1 when frames were dropped: the filter predicts that far). Returns int32 (N,),
        the track id of each row (ids start at 1, never reused within a Tracker), -1 for
        a row that belongs to no confirmed track."""
        rows = np.asarray(detections, dtype=np.float64).reshape(-1, 6)
        if frame_gap < 1:
            raise ValueError(
                f"frame_gap counts frames since the last update: >= 1, not {frame_gap}"
            )
        s = self.settings
        previous, self._frame = self._frame, self._frame + frame_gap
        # A tentative track lives only while matched in every update; a confirmed one
        # until it has been unseen lost_frames frames.
        self._tracks = [
            t
            for t in self._tracks
            if (
                self._frame - t.last_seen <= s.lost_frames
                if t.confirmed
                else t.last_seen == previous
            )
        ]
        for track in self._tracks:
            track.predict(frame_gap, unseen=track.last_seen != previous)

        scores = rows[:, 4]
        # Only boxes with an area take part: the IoU of the others means nothing.
        usable = (
            np.isfinite(rows).all(axis=1) & (rows[:, 2] > rows[:, 0]) & (rows[:, 3] > rows[:, 1])
        )
        if not s.class_aware:
            usable[_duplicates(rows, np.flatnonzero(usable & (scores >= s.low_score)))] = False
        high = np.flatnonzero(usable & (scores >= s.high_score))
        low = np.flatnonzero(usable & (scores >= s.low_score) & (scores < s.high_score))
        confirmed = [t for t in self._tracks if t.confirmed]
        tentative = [t for t in self._tracks if not t.confirmed]
        matched: dict[int, _Track] = {}  # row -> track

        # 1. Confident detections against every confirmed track, lost ones included.
        left_tracks, left_high = self._match(confirmed, high, rows, matched)
        # 2. Weak detections only rescue tracks seen in the last frame: a lost track
        # revived by a low score would more often follow clutter than its object.
        recent = [t for t in left_tracks if t.last_seen == previous]
        self._match(recent, low, rows, matched)
        # 3. The confident detections left, against the tentative tracks.
        _, left_high = self._match(tentative, left_high, rows, matched)

        for index, track in matched.items():
            track.correct(rows[index], self._frame)
            if not track.confirmed and track.hits >= s.min_hits:
                track.track_id, self._next_id = self._next_id, self._next_id + 1
        for index in left_high:
            if rows[index, 4] >= s.new_track_score:
                track = _Track.start(rows[index], self._frame)
                if s.min_hits <= 1:
                    track.track_id, self._next_id = self._next_id, self._next_id + 1
                self._tracks.append(track)
                matched[int(index)] = track
        ids = np.full(len(rows), -1, np.int32)
        for index, track in matched.items():
            ids[index] = track.track_id
        return ids

    def trails(self, length: int) -> dict[int, list[tuple[float, float]]]:
        """The last `length` box centres of each confirmed, currently seen track."""
        return {
            t.track_id: list(t.centres)[-length:] if length > 0 else []
            for t in self._tracks
            if t.confirmed and t.last_seen == self._frame
        }

    def _match(
        self, tracks: list[_Track], candidates: np.ndarray, rows: np.ndarray,
        matched: dict[int, _Track],
    ) -> tuple[list[_Track], np.ndarray]:  # fmt: skip
        """Match ``candidates`` (row indices) to ``tracks`` by IoU with their predicted
        boxes, recording the pairs in ``matched``; returns the tracks and candidates left."""
        if not tracks or not len(candidates):
            return tracks, candidates
        overlap = _iou_matrix(np.stack([t.box() for t in tracks]), rows[candidates, :4])
        if self.settings.class_aware:
            labels = rows[candidates, 5].astype(np.int64)
            overlap[np.array([t.label for t in tracks])[:, None] != labels[None, :]] = 0.0
        cost = np.where(overlap >= self.settings.match_iou, 1.0 - overlap, _NO_MATCH)
        chosen = zip(*linear_sum_assignment(cost), strict=True)
        pairs = [(t, d) for t, d in chosen if cost[t, d] < _NO_MATCH]
        for t, d in pairs:
            matched[int(candidates[d])] = tracks[t]
        used_tracks = {t for t, _ in pairs}
        used = {d for _, d in pairs}
        left = np.array([c for k, c in enumerate(candidates) if k not in used], np.int64)
        return [t for k, t in enumerate(tracks) if k not in used_tracks], left
