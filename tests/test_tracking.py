"""The tracker (ensemble.tracking) on synthetic boxes whose right answer is known.

Objects are squares moving at a constant speed; a frame's detections are rows
``(x1, y1, x2, y2, score, class_id)`` in pixels. Where a test is about what the Kalman
filter adds (crossing, dropped frames), the motion is chosen so that a tracker matching
on the last seen box alone would fail: the boxes move further than their width.
"""

from __future__ import annotations

import numpy as np
import pytest

from ensemble.tracking import TRAIL_KEPT, Tracker, TrackerSettings

pytestmark = pytest.mark.unit

SIDE = 40.0  # pixels: every test object is a SIDE x SIDE square


def row(cx: float, cy: float, score: float = 0.9, label: int = 0, side: float = SIDE) -> list:
    """A detection of a ``side``-pixel square centred on ``(cx, cy)`` (pixels)."""
    half = side / 2
    return [cx - half, cy - half, cx + half, cy + half, score, label]


def frame(*rows: list) -> np.ndarray:
    return np.array(rows, np.float32).reshape(-1, 6)


def run(tracker: Tracker, frames, gap: int = 1) -> list[list[int]]:
    """Each frame's ids, as lists."""
    return [tracker.update(f, frame_gap=gap).tolist() for f in frames]


# --- one object -------------------------------------------------------------------


def test_steady_motion_keeps_one_id_shown_from_the_second_frame():
    ids = run(Tracker(), [frame(row(50 + 6 * k, 100)) for k in range(60)])
    assert ids[0] == [-1]  # min_hits = 2: one frame is no track yet
    assert ids[1:] == [[1]] * 59


def test_update_returns_int32_of_one_id_per_row_and_takes_empty_frames():
    tracker = Tracker()
    empty = tracker.update(np.zeros((0, 6), np.float32))
    assert empty.dtype == np.int32 and empty.shape == (0,)
    tracker.update(frame(row(100, 100), row(300, 100)))
    ids = tracker.update(frame(row(102, 100), row(302, 100)))
    assert ids.dtype == np.int32 and ids.tolist() == [1, 2]
    assert tracker.update(np.zeros((0, 6), np.float32)).shape == (0,)


def test_a_missing_object_keeps_its_id_through_fewer_than_lost_frames():
    settings = TrackerSettings(lost_frames=10)
    for missing in (3, 9):  # 9 = lost_frames - 1: the longest gap survived
        tracker = Tracker(settings)
        frames = [frame(row(50 + 5 * k, 100)) for k in range(20)]
        frames[8 : 8 + missing] = [frame()] * missing
        ids = run(tracker, frames)
        assert [i for f in ids[1:] for i in f] == [1] * (19 - missing), missing


def test_an_object_missing_lost_frames_comes_back_with_a_new_id():
    settings = TrackerSettings(lost_frames=10)
    frames = [frame(row(50 + 5 * k, 100)) for k in range(30)]
    frames[8:18] = [frame()] * 10
    ids = run(Tracker(settings), frames)
    assert ids[7] == [1]
    # Back where the filter predicted it, but after lost_frames unseen: a new track,
    # shown after min_hits frames, with the next id.
    assert ids[18] == [-1] and ids[19:] == [[2]] * 11


def test_ids_are_never_reused():
    tracker = Tracker(TrackerSettings(lost_frames=3))
    seen = []
    for k in range(4):  # an object at one place, gone, then another elsewhere
        frames = [frame(row(100 + 150 * k, 100))] * 5 + [frame()] * 4
        seen += [i for ids in run(tracker, frames) for i in ids if i > 0]
    assert sorted(set(seen)) == [1, 2, 3, 4]
    assert seen == sorted(seen)


# --- two objects --------------------------------------------------------------------


def crossing(hidden: bool) -> list[np.ndarray]:
    """Object A moves right and B left, 8 px/frame each, along the same line; they meet
    at x=300. With ``hidden``, A passes in front of B: B is not detected while their
    boxes overlap by more than a third, and reappears on A's far side."""
    frames = []
    for k in range(60):
        a, b = 60 + 8 * k, 540 - 8 * k
        if hidden and abs(a - b) < SIDE * 2 / 3:
            frames.append(frame(row(a, 200)))
        else:
            frames.append(frame(row(a, 200), row(b, 204)))
    return frames


@pytest.mark.parametrize("hidden", [False, True], ids=["both-seen", "one-hidden"])
def test_two_objects_crossing_keep_their_ids(hidden):
    frames = crossing(hidden)
    assert any(len(f) == 1 for f in frames) == hidden
    # Rows are (A, B), or A alone while B is hidden: A is track 1, B track 2 throughout.
    assert run(Tracker(), frames)[1:] == [[1, 2][: len(f)] for f in frames[1:]]


def test_the_hidden_object_comes_back_only_because_its_velocity_is_predicted():
    # B is unseen for 4 frames and moves 32 px, nearly its width, further than its last box
    # reaches: without the filter's prediction it would not overlap that box enough.
    frames = crossing(hidden=True)
    gone = next(k for k, f in enumerate(frames) if len(f) == 1)
    back = next(k for k in range(gone, len(frames)) if len(frames[k]) == 2)
    last_b, first_b = frames[gone - 1][1], frames[back][1]
    # Same height, shifted 32 px: the intersection is 8 of 40 px wide.
    assert first_b[0] - last_b[0] == -32
    assert TrackerSettings().match_iou > 8 / (2 * SIDE - 8)
    assert run(Tracker(), frames)[back] == [1, 2]


def test_frame_gap_predicts_across_dropped_frames():
    # 10 px/frame: ten frames seen one by one (the filter learns the speed), then every
    # fifth only: 50 px between updates, more than the box is wide.
    def updates():
        yield from ((1, frame(row(50 + 10 * k, 100))) for k in range(10))
        yield from ((5, frame(row(50 + 10 * k, 100))) for k in range(14, 60, 5))

    tracker = Tracker()
    assert [tracker.update(f, gap).tolist() for gap, f in updates()][1:] == [[1]] * 19
    # Told a gap of one frame, the filter expects a fifth of the move: the id is lost.
    tracker = Tracker()
    assert [tracker.update(f).tolist() for _, f in updates()][10:] == [[-1]] * 10


def test_frame_gap_counts_towards_lost_frames():
    # A gap of lost_frames: lost_frames - 1 frames unseen, the track kept; one more, dropped.
    for gap, ids in ((10, [1]), (11, [-1])):
        tracker = Tracker(TrackerSettings(lost_frames=10))
        run(tracker, [frame(row(100, 100))] * 3)
        assert tracker.update(frame(row(100, 100)), frame_gap=gap).tolist() == ids, gap


# --- scores -------------------------------------------------------------------------


def test_a_low_score_detection_keeps_a_seen_track_but_never_starts_one():
    tracker = Tracker()
    scores = [0.9] * 5 + [0.3] * 10 + [0.9] * 5  # 0.3: between low_score and high_score
    ids = run(tracker, [frame(row(50 + 5 * k, 100, score=s)) for k, s in enumerate(scores)])
    assert ids[1:] == [[1]] * 19
    assert run(Tracker(), [frame(row(100, 100, score=0.3))] * 5) == [[-1]] * 5


def test_a_low_score_detection_does_not_revive_a_lost_track():
    tracker = Tracker()
    run(tracker, [frame(row(100, 100))] * 3 + [frame()])
    assert tracker.update(frame(row(100, 100, score=0.3))).tolist() == [-1]
    assert tracker.update(frame(row(100, 100, score=0.9))).tolist() == [1]


def test_detections_under_low_score_or_without_area_are_ignored():
    tracker = Tracker()
    run(tracker, [frame(row(100, 100))] * 3)
    ids = tracker.update(frame([95, 95, 95, 140, 0.9, 0], row(100, 100, score=0.05)))
    assert ids.tolist() == [-1, -1]
    assert tracker.trails(5) == {}  # the track went unseen this frame


def test_only_a_detection_scoring_new_track_score_starts_a_track():
    settings = TrackerSettings()
    below = settings.new_track_score - 0.05
    assert below >= settings.high_score
    assert run(Tracker(settings), [frame(row(100, 100, score=below))] * 4) == [[-1]] * 4
    tracker = Tracker(settings)
    run(tracker, [frame(row(100, 100))] * 2)  # started by a good detection ...
    assert tracker.update(frame(row(100, 100, score=below))).tolist() == [1]  # ... kept by this


def test_min_hits_frames_before_an_id_and_a_one_frame_detection_costs_no_id():
    tracker = Tracker(TrackerSettings(min_hits=3))
    assert run(tracker, [frame(row(300, 300))] + [frame()]) == [[-1], []]
    ids = run(tracker, [frame(row(100, 100))] * 4)
    assert ids == [[-1], [-1], [1], [1]]
    assert run(Tracker(TrackerSettings(min_hits=1)), [frame(row(100, 100))]) == [[1]]


# --- labels -------------------------------------------------------------------------


def test_a_label_change_keeps_the_id_unless_class_aware():
    labels = [2] * 5 + [7] * 5  # car, then truck: detectors disagree on one object
    frames = [frame(row(100 + 3 * k, 100, label=c)) for k, c in enumerate(labels)]
    assert run(Tracker(), frames)[1:] == [[1]] * 9
    aware = run(Tracker(TrackerSettings(class_aware=True)), frames)
    assert aware[1:5] == [[1]] * 4
    assert aware[5] == [-1] and aware[6:] == [[2]] * 4


def test_class_aware_tracks_of_two_labels_on_one_box_both_live():
    both = [frame(row(100, 100, label=0), row(100, 100, label=16))] * 3
    assert run(Tracker(TrackerSettings(class_aware=True)), both)[1:] == [[1, 2]] * 2
    # Unaware, the second box overlaps a track that is taken and starts its own.
    assert run(Tracker(), both)[1:] == [[1, 2]] * 2


# --- trails ---------------------------------------------------------------------------


def test_trails_hold_the_last_centres_of_confirmed_tracks_seen_now():
    tracker = Tracker()
    run(tracker, [frame(row(50 + 5 * k, 100), row(400, 300)) for k in range(6)])
    assert tracker.trails(3) == {1: [(65.0, 100.0), (70.0, 100.0), (75.0, 100.0)],
                                 2: [(400.0, 300.0)] * 3}  # fmt: skip
    assert tracker.trails(0) == {1: [], 2: []}
    tracker.update(frame(row(80, 100)))  # track 2 unseen: no trail
    assert list(tracker.trails(100)) == [1] and len(tracker.trails(100)[1]) == 7
    run(tracker, [frame(row(80, 100))] * (TRAIL_KEPT + 5))
    assert len(tracker.trails(TRAIL_KEPT * 2)[1]) == TRAIL_KEPT


def test_a_tentative_track_has_no_trail():
    tracker = Tracker(TrackerSettings(min_hits=3))
    run(tracker, [frame(row(100, 100))] * 2)
    assert tracker.trails(5) == {}


# --- arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        {"low_score": 0.6, "high_score": 0.5},
        {"high_score": 0.7, "new_track_score": 0.6},
        {"match_iou": 0.0},
        {"lost_frames": 0},
        {"min_hits": 0},
    ],
)
def test_settings_out_of_order_or_range_are_refused(settings):
    with pytest.raises(ValueError):
        TrackerSettings(**settings)


def test_a_frame_gap_under_one_is_refused():
    with pytest.raises(ValueError, match="frame_gap"):
        Tracker().update(frame(), frame_gap=0)
