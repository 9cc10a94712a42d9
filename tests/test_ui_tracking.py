"""The page's Track switch without a server: distinct objects counted and said, a
tracked clip's timings and message, ids in the webcam's detections line, and each
webcam session's tracking sequence, opened by its first frame and ended when the stream
stops, the switch goes off, the model changes or the page closes.

The sequences here are ``Sequence`` stand-ins for ``client.tracking.TrackingSession``
(the page's ``LiveStreams.open_tracking`` is the one seam): what the page does with a
sequence is the test's subject, not the tracker. The real tracking ensembles behind the
page, in a browser: test_ui_tracking_browser.py.
"""

from __future__ import annotations

import base64
import threading
from types import SimpleNamespace

import pytest

from client import Detection, FrameResult, ImageResult, ModelNotReady
from client.statistics import DURATIONS, Duration, ModelStatistics
from ui import clips, live
from ui.common import objects_text, plural

pytestmark = pytest.mark.unit

# --- counts in words -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "many"),
    [("person", "people"), ("car", "cars"), ("bus", "buses"), ("wine glass", "wine glasses"),
     ("bench", "benches"), ("toothbrush", "toothbrushes"), ("knife", "knives"),
     ("sheep", "sheep"), ("scissors", "scissors"), ("skis", "skis"), ("mouse", "mice"),
     ("teddy bear", "teddy bears"), ("berry", "berries"), ("toy", "toys")],
)  # fmt: skip
def test_plural_labels(label, many):
    assert plural(label) == many


def test_objects_text_gives_each_label_its_count_in_the_order_given():
    assert objects_text({"person": 3, "car": 1, "bus": 2}) == "3 people, 1 car, 2 buses"
    assert objects_text({"person": 1}) == "1 person"
    assert objects_text({}) == "none"


# --- a tracked clip -------------------------------------------------------------------


def mot(frame: int, track: int, label: str) -> str:
    """A MOT row of frame ``frame`` (counted from 1)."""
    return f"{frame},{track},10.0,20.0,30.0,40.0,0.900,{label}"


def test_distinct_tracks_count_each_sequences_ids_apart():
    rows = [mot(1, 1, "person"), mot(2, 1, "person"), mot(2, 2, "car"), mot(3, 3, "person")]
    assert clips.distinct_tracks(rows) == {"person": 2, "car": 1}
    # The server lost the sequence at frame index 3 (the 4th frame): ids count from 1
    # again there, and its #1 is another object than the first sequence's #1.
    again = [*rows, mot(4, 1, "person"), mot(5, 1, "person"), mot(5, 2, "dog")]
    assert clips.distinct_tracks(again, [3]) == {"person": 3, "car": 1, "dog": 1}
    assert clips.distinct_tracks([]) == {}


def _snapshot(**models: tuple[int, int]) -> dict:
    """A statistics snapshot: each model's (count, ns) in every duration."""
    return {
        m: ModelStatistics(durations=dict.fromkeys(DURATIONS, Duration(*pair)))
        for m, pair in models.items()
    }


def test_a_tracked_clips_timings_are_per_frame_without_a_round_trip():
    before = _snapshot(track_x=(0, 0), tracker_x=(0, 0))
    # 10 frames, one per request: the ensemble 50 ms each, the tracker 2 ms per field.
    after = _snapshot(track_x=(10, 500_000_000), tracker_x=(10, 20_000_000))
    rows = clips.tracked_timing_rows(10, 2.0, "track_x", ["tracker_x"], before, after)
    assert rows == [
        [clips.WALL_FRAME, 200.0],
        ["server total (track_x)", 50.0],
        ["tracker_x", 4 * 2.0],  # four step fields of 2 ms
    ]
    assert clips.tracked_timing_rows(10, 2.0, "track_x") == [[clips.WALL_FRAME, 200.0]]
    assert clips.tracked_timing_rows(0, 0.0, "track_x") == []


def test_a_tracked_clips_message_counts_the_objects_and_says_where_ids_start_again():
    info = SimpleNamespace(width=480, height=336)
    text = clips.tracked_clip_message(info, "walk.mp4", "track_x", 12, 2.0, {"person": 2})
    assert text.startswith("walk.mp4: 12 frames of 480×336 tracked through track_x")
    assert "**6.0 frames/s**" in text
    assert "Distinct objects: **2 people**." in text
    assert "started again" not in text
    lost = clips.tracked_clip_message(info, "walk.mp4", "track_x", 12, 2.0, {}, [5, 9], False)
    assert "Distinct objects: **none**." in lost
    assert "started again, with new ids, at frame 5, 9." in lost
    assert lost.endswith("Server step times unavailable.")


def test_tracking_on_a_server_without_the_tracking_ensemble_is_refused_by_name():
    def model_info(model: str):
        raise ModelNotReady(model, "x:8001", "Request for unknown model: 'track_x' is not found")

    tab = clips.ClipDetector(
        SimpleNamespace(model_info=model_info),
        SimpleNamespace(info=lambda model: SimpleNamespace(name=model)),
        folders=None,
    )
    outcome = tab("/nowhere/walk.mp4", "detect_x", 0.5, 0.5, track=True)
    assert outcome.failed
    assert outcome.message == (
        "**Error:** detect_x cannot track here: this server has no track_x (Request for "
        "unknown model: 'track_x' is not found); turn Track objects off"
    )


# --- the webcam -----------------------------------------------------------------------


def detection(label: str, score: float, track: int = -1) -> Detection:
    found = Detection(0, 0, 10, 10, score, 0, label)
    found.track_id = track
    return found


def test_the_detections_line_shows_each_tracked_objects_id_as_the_server_draws_it():
    tracked = ImageResult([detection("cup", 0.41), detection("person", 0.92, 3)], b"")
    assert live.detections_text(tracked) == "Last frame: #3 person 0.92, cup 0.41"


class Sequence:
    """Stands in for a ``TrackingSession``: answers each frame with the detections the
    test queued (label, track id), records the frames and whether it was closed."""

    def __init__(self, model: str, options, answers: list[list[tuple[str, int]]]):
        self.model, self.options, self.answers = model, options, answers
        self.frames: list[bytes] = []
        self.restarts = 0
        self.closed = threading.Event()

    def track(self, jpeg: bytes) -> FrameResult:
        assert not self.closed.is_set(), "a frame after the sequence was ended"
        self.frames.append(jpeg)
        found = self.answers.pop(0) if self.answers else []
        result = ImageResult([detection(label, 0.9, i) for label, i in found], b"drawn " + jpeg)
        return FrameResult(len(self.frames) - 1, result)

    def close(self) -> None:
        self.closed.set()


class Streams(live.LiveStreams):
    """The page's ``LiveStreams`` whose sequences are ``Sequence``s, kept in ``opened``."""

    def __init__(self, answers: list[list[tuple[str, int]]] | None = None):
        served = SimpleNamespace(served=lambda model: None)  # every model is served
        # A frame's answer is waited for: what each frame shows is the test's subject.
        super().__init__(client=None, models=served, wait_s=10.0)
        self.answers = answers if answers is not None else []
        self.opened: list[Sequence] = []

    def open_tracking(self, model, options) -> Sequence:
        self.opened.append(Sequence(model, options, self.answers))
        return self.opened[-1]


@pytest.fixture
def streams():
    made: list[Streams] = []

    def make(answers=None) -> Streams:
        made.append(Streams(answers))
        return made[-1]

    yield make
    for s in made:
        s.pool.shutdown(wait=True)


def frame(k: int) -> dict:
    """Webcam frame ``k`` as Gradio posts it."""
    url = "data:image/jpeg;base64," + base64.b64encode(b"frame %d" % k).decode()
    return {"url": url}


def ended(sequence: Sequence) -> bool:
    return sequence.closed.wait(10)  # closed on a worker, once its frame is answered


def test_a_session_tracks_as_one_sequence_with_ids_and_counts_until_the_stream_stops(streams):
    page = streams([[("person", 1)], [("person", 1), ("cup", 2)], [("person", 1)]])
    shown = [page.on_frame(frame(k), "detect_x", 0.5, 0.4, "a", track=True) for k in range(3)]
    (sequence,) = page.opened
    assert sequence.model == "track_x"  # the tracking ensemble of the chosen model
    assert (sequence.options.score_threshold, sequence.options.iou_threshold) == (0.5, 0.4)
    assert sequence.frames == [b"frame 0", b"frame 1", b"frame 2"]
    assert shown[1].detections == "Last frame: #1 person 0.90, #2 cup 0.90"
    assert shown[1].jpeg == b"drawn frame 1"
    assert shown[-1].objects == "Distinct objects so far: 1 cup, 1 person"  # most, then A-Z
    assert page.trackers() == 1
    page.end_tracking("a")  # the stream stopped
    assert ended(sequence) and page.trackers() == 0
    # Recording again starts a new sequence, counted from nothing.
    again = page.on_frame(frame(3), "detect_x", 0.5, 0.4, "a", track=True)
    assert len(page.opened) == 2 and again.objects == "Distinct objects so far: none"


def test_the_switch_off_a_new_model_or_a_closed_page_ends_the_sequence(streams):
    page = streams()
    page.on_frame(frame(0), "detect_x", 0.5, 0.5, "a", track=True)
    first = page.opened[0]
    # Another model (or threshold): the sequence ends, a new one starts.
    page.on_frame(frame(1), "detect_y", 0.5, 0.5, "a", track=True)
    assert ended(first) and [s.model for s in page.opened] == ["track_x", "track_y"]
    page.on_frame(frame(2), "detect_y", 0.6, 0.5, "a", track=True)
    assert ended(page.opened[1]) and len(page.opened) == 3
    # The switch goes off: the sequence ends, and no other is opened.
    page.client = SimpleNamespace(detect=lambda *a, **k: [ImageResult([], b"plain")])
    off = page.on_frame(frame(3), "detect_y", 0.6, 0.5, "a", track=False)
    assert ended(page.opened[2]) and len(page.opened) == 3
    assert off.objects == "" and page.trackers() == 0
    # A closed page's sequence ends with it.
    page.on_frame(frame(4), "detect_y", 0.6, 0.5, "b", track=True)
    page.forget("b")
    assert ended(page.opened[3]) and page.trackers() == 0


def test_a_session_dropped_beyond_the_limit_ends_its_sequence(streams, monkeypatch):
    monkeypatch.setattr(live, "MAX_SESSIONS", 2)
    page = streams()
    for key in ("a", "b", "c"):
        page.on_frame(frame(0), "detect_x", 0.5, 0.5, key, track=True)
    assert ended(page.opened[0]) and not page.opened[1].closed.is_set()
    assert page.trackers() == 2


def test_ids_of_a_sequence_the_server_lost_are_counted_apart(streams):
    page = streams([[("person", 1)], [("person", 1)]])
    page.on_frame(frame(0), "detect_x", 0.5, 0.5, "a", track=True)
    page.opened[0].restarts = 1  # the server forgot it: ids count from 1 again
    shown = page.on_frame(frame(1), "detect_x", 0.5, 0.5, "a", track=True)
    assert shown.objects.startswith("Distinct objects so far: 2 people (the server lost")


def test_a_frame_that_reaches_an_ended_tracker_is_refused_not_sent():
    sequence = Sequence("track_x", None, [])
    tracker = live.StreamTracker("track_x", None, lambda: sequence)
    tracker.track(b"frame 0")
    tracker.close()
    assert sequence.closed.is_set()
    with pytest.raises(live.TrackingEnded, match="tracking ended"):
        tracker.track(b"frame 1")
    assert sequence.frames == [b"frame 0"]
