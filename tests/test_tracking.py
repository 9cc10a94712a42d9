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
    # Rows are (A, B), or A alone while B is hidden: A is track 1, B track 2 throughout,
    # but in the frame where the boxes nearly coincide (IoU 0.82, over DUPLICATE_IOU),
    # where B's detection is taken for A seen twice.
    expected = [[1, -1] if len(f) == 2 and f[0, 0] == f[1, 0] else [1, 2][: len(f)] for f in frames]
    assert ([1, -1] in expected) != hidden
    assert run(Tracker(), frames)[1:] == expected[1:]


def test_an_object_partly_hidden_then_hidden_keeps_its_velocity():
    # A passes in front of B (both 60 px, 3 px/frame, head on). B's detection is the part
    # of it in sight: a box shrinking from the side A covers, whose centre stands still,
    # then nothing while less than 20 px of it shows; then it comes out on A's far side.
    side, frames = 60.0, []
    for k in range(80):
        a, b = 50 + 3 * k, 400 - 3 * k  # left edges
        rows = [[a, 100, a + side, 160, 0.9, 0]]
        seen = (a + side, b + side) if a < b else (b, a)  # B's part beside A
        seen = (max(seen[0], b), min(seen[1], b + side))
        if seen[1] - seen[0] >= 20:
            rows.append([seen[0], 100, seen[1], 160, 0.9, 0])
        frames.append(frame(*rows))
    partial = [f for f in frames if len(f) == 2 and f[1, 2] - f[1, 0] < side]
    assert len(partial) > 10 and any(len(f) == 1 for f in frames)
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
    below = (settings.high_score + settings.new_track_score) / 2
    assert settings.high_score < below < settings.new_track_score
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
    # Unaware, the second box is the first seen twice: no track of its own.
    assert run(Tracker(), both) == [[-1, -1], [1, -1], [1, -1]]


def test_labels_ignored_a_duplicate_box_gets_no_id_but_a_neighbour_does():
    tracker = Tracker()
    # A cat also seen as a dog (IoU 0.9, the dog scoring less), and beside it another
    # animal overlapping it at IoU 0.6: two objects.
    cat, dog, beside = row(100, 100, 0.9, 15), row(102, 100, 0.6, 16), row(110, 100, 0.8, 16)
    assert run(tracker, [frame(cat, dog)] * 3) == [[-1, -1], [1, -1], [1, -1]]
    assert run(Tracker(), [frame(cat, beside)] * 2) == [[-1, -1], [1, 2]]


def test_an_unseen_track_keeps_its_size():
    # A box growing 2 px a frame (coming nearer), then unseen 55 frames, back at the
    # size it had (78 px): predicted on at that size, not grown 110 px more.
    growing = [frame(row(200, 200, side=40 + 2 * k)) for k in range(20)]
    assert TrackerSettings().lost_frames > 55
    ids = run(Tracker(), [*growing, *[frame()] * 55, growing[-1]])
    assert ids[1:20] == [[1]] * 19 and ids[-1] == [1]


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


# --- the accuracy bench's clips and scores (bench.tracking) --------------------------


def test_a_route_goes_to_its_end_and_back():
    from bench.tracking import CAT, Route

    leftwards = Route(CAT, 10, x_from=300, x_to=100, depth=0)
    assert [leftwards.x(d) for d in (0, 50, 200, 250, 400, 450)] == [300, 250, 100, 150, 300, 250]
    assert leftwards.box(50) == (250, 10, 250 + CAT.width, 10 + CAT.height)


def boxes_passing(gap_at_meeting: float) -> list[dict[int, tuple]]:
    """Two 40 px boxes moving towards each other 10 px/frame each along one line; when
    their centres are nearest they are ``gap_at_meeting`` px apart vertically."""
    return [
        {0: (x := 10 * k, gap_at_meeting, x + 40, gap_at_meeting + 40),
         1: (x2 := 400 - 10 * k, 0, x2 + 40, 40)}
        for k in range(41)
    ]  # fmt: skip


def test_a_crossing_is_a_run_of_overlap_that_reaches_crossing_iou():
    from bench.tracking import CROSSING_IOU, Crossing, find_crossings

    # Head on: they overlap while their left edges are less than 40 px apart.
    (crossing,) = find_crossings(boxes_passing(0))
    assert crossing == Crossing(0, 1, 19, 21, 1.0)
    # 30 px apart vertically: at most 10 of 40 px high in common, IoU 1/7: a graze.
    assert CROSSING_IOU > 10 / 70
    assert find_crossings(boxes_passing(30)) == []
    # Back and forth: two crossings; an object missing from a frame overlaps nothing.
    there = boxes_passing(0)
    both = [*there, *there[::-1]]
    assert [(c.first, c.last) for c in find_crossings(both)] == [(19, 21), (60, 62)]
    both[20] = {0: both[20][0]}
    assert [(c.first, c.last) for c in find_crossings(both)][:2] == [(19, 19), (21, 21)]


def tiny_clip(truth, hidden=None):
    from bench.tracking import Clip

    hidden = hidden or [{} for _ in truth]
    return Clip("test", 10, [b""] * len(truth), truth, hidden, crossings=[])


def rows_of(found: dict[int, tuple]) -> np.ndarray:
    """Tracked rows (N, 7) of ``{track id: box}``."""
    return np.array([[*box, 0.9, 0, track] for track, box in found.items()]).reshape(-1, 7)


def test_scores_of_perfect_tracks_and_of_tracks_that_swap():
    from bench.tracking import score

    truth = [{0: (10.0 * k, 0, 10.0 * k + 40, 40), 1: (300 - 10.0 * k, 100, 340 - 10.0 * k, 140)}
             for k in range(10)]  # fmt: skip
    perfect = score(tiny_clip(truth), [rows_of({7: t[0], 9: t[1]}) for t in truth])
    assert (perfect["mota"], perfect["idf1"], perfect["id_switches"]) == (1.0, 1.0, 0)
    assert (perfect["tracks"], perfect["expected"], perfect["misses"]) == (2, 20, 0)
    swapped = [rows_of({7: t[0], 9: t[1]} if k < 5 else {7: t[1], 9: t[0]})
               for k, t in enumerate(truth)]  # fmt: skip
    found = score(tiny_clip(truth), swapped)
    assert found["id_switches"] == 2 and found["idf1"] == 0.5
    assert sorted(e[:2] for e in found["switch_events"]) == [[5, 0], [5, 1]]
    # A row without a track is no track: both objects missed in every frame.
    untracked = score(tiny_clip(truth), [rows_of({-1: t[0], 0: t[1]}) for t in truth])
    assert untracked["misses"] == 20 and untracked["tracks"] == 0


def test_a_track_on_a_hidden_object_is_neither_expected_nor_a_false_positive():
    from bench.tracking import on_hidden, score

    seen, behind = (0.0, 0, 40, 40), (4.0, 0, 44, 40)  # IoU 0.82 with each other
    rows = rows_of({1: seen, 2: behind})
    assert on_hidden(rows, {0: seen}, {1: behind}).tolist() == [False, True]
    found = score(tiny_clip([{0: seen}] * 3, [{1: behind}] * 3), [rows] * 3)
    assert (found["false_positives"], found["misses"], found["mota"]) == (0, 0, 1.0)
    # Without the hidden box, the second track would be a false positive.
    assert score(tiny_clip([{0: seen}] * 3), [rows] * 3)["false_positives"] == 3


def test_a_clip_is_the_same_on_every_run_and_its_truth_follows_the_lanes():
    from bench.tracking import QUICK_LEGS, ROUTES, SIZE, clip_length, make_clip

    clip = make_clip("fast", legs=QUICK_LEGS)
    assert clip.frames == make_clip("fast", legs=QUICK_LEGS).frames
    assert len(clip.frames) == len(clip.truth) == clip_length(12, QUICK_LEGS)
    # Each lane's pair crosses once per leg; the object drawn behind is the one hidden.
    assert sorted((c.a, c.b) for c in clip.crossings) == [(0, 1), (2, 3)]
    hidden = {i for frame in clip.hidden for i in frame}
    assert hidden == {i for i, r in enumerate(ROUTES) if r.depth == 0}
    width, height = SIZE
    for frame in clip.truth:
        for x1, y1, x2, y2 in frame.values():
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
