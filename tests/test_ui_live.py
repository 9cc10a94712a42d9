"""The webcam tab's stream handler without a server: frames dropped (never queued)
while the previous one is at the server, the counters, reading a frame.

The tests drive ``LiveSession`` with a detect function held at a gate and a clock the
test sets, so that "the server is still busy" and "250 ms later" are facts of the test,
not of the machine. Real frames through the real server: test_ui_live_server.py.
"""

from __future__ import annotations

import base64
import gc
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest

from client import Detection, ImageResult
from ui import live

pytestmark = pytest.mark.unit

# --- helpers --------------------------------------------------------------------------


def data_url(jpeg: bytes) -> dict:
    """A frame as Gradio's streaming webcam sends it (the raw value the handler gets)."""
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    return {"path": None, "url": url, "size": None, "orig_name": None, "mime_type": None}


def result(*labels: tuple[str, float], jpeg: bytes = b"annotated") -> ImageResult:
    dets = [Detection(0, 0, 10, 10, score, 0, label) for label, score in labels]
    return ImageResult(dets, jpeg)


class Clock:
    """A monotonic clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def test_a_long_stream_keeps_the_last_result_only_not_every_annotated_frame(pool):
    # Each answer carries an annotated JPEG (tens of kB); a session keeps its timings for
    # the frames/s and latency lines, not the frames.
    made: list[weakref.ref] = []

    def detect(jpeg: bytes) -> ImageResult:
        answer = result(("person", 0.9), jpeg=jpeg * 1000)
        made.append(weakref.ref(answer))
        return answer

    session = live.LiveSession(detect, pool)
    for k in range(50):
        assert session.offer(b"frame %d" % k)
        session.wait(10)
        session.shown()
    gc.collect()
    alive = [ref() for ref in made if ref() is not None]
    assert len(made) == 50
    assert len(alive) <= 2, f"{len(alive)} annotated frames still held"
    assert session.shown().jpeg == b"frame 49" * 1000
    assert "50 shown, 0 dropped of 50 frames" in session.shown().stats


def test_a_frame_arriving_while_the_previous_is_at_the_server_is_dropped(pool):
    gate = threading.Event()
    sent = []

    def detect(jpeg: bytes) -> ImageResult:
        sent.append(jpeg)
        assert gate.wait(10), "the test never opened the gate"
        return result(("person", 0.9), jpeg=b"drawn " + jpeg)

    session = live.LiveSession(detect, pool)
    assert session.offer(b"frame 1")
    taken = [session.offer(b"frame %d" % k) for k in range(2, 7)]
    assert taken == [False] * 5, "frames arriving while frame 1 is at the server"
    assert session.in_flight == 1
    assert (session.offered, session.sent, session.dropped, session.answered) == (6, 1, 5, 0)
    gate.set()
    session.wait(10)
    assert session.in_flight == 0
    assert sent == [b"frame 1"], "the dropped frames never reached the server"
    shown = session.shown()
    assert shown.jpeg == b"drawn frame 1" and shown.fresh
    assert "1 shown, 5 dropped of 6 frames" in shown.stats
    assert shown.detections == "Last frame: person 0.90"
    assert not session.shown().fresh, "the page has frame 1 already"
    # The server is free again: the next frame goes.
    assert session.offer(b"frame 7")
    session.wait(10)
    assert sent == [b"frame 1", b"frame 7"]
    shown = session.shown()
    assert shown.jpeg == b"drawn frame 7" and shown.fresh


def test_frames_per_second_and_latency_are_those_of_the_answered_frames(pool):
    clock = Clock()

    def detect(jpeg: bytes) -> ImageResult:
        clock.now += 0.25  # the server takes 250 ms
        return result(("cup", 0.5))

    session = live.LiveSession(detect, pool, clock=clock)
    for k in range(5):  # a frame every 500 ms, each answered 250 ms later
        clock.now = 100.0 + k * 0.5
        assert session.offer(b"frame")
        session.wait(10)
    assert session.latencies_ms() == pytest.approx([250.0] * 5)
    # Five answers, 500 ms apart: four intervals in two seconds.
    assert session.frames_per_s() == pytest.approx(2.0)
    stats = session.shown().stats
    assert "2.0 frames/s" in stats
    assert "latency 250 ms" in stats
    assert "5 shown, 0 dropped of 5 frames" in stats
    # Answers older than the window no longer count towards frames/s.
    clock.now += live.FPS_WINDOW_S + 1
    assert session.frames_per_s() == 0.0


def test_latency_is_over_the_last_frames_only(pool):
    clock = Clock()
    delays = iter([5.0] + [0.1] * live.LATENCY_FRAMES)

    def detect(jpeg: bytes) -> ImageResult:
        clock.now += next(delays)
        return result()

    session = live.LiveSession(detect, pool, clock=clock)
    for _ in range(live.LATENCY_FRAMES + 1):
        session.offer(b"frame")
        session.wait(10)
    # The first frame's 5 s is out of the last LATENCY_FRAMES.
    assert max(session.latencies_ms()) == pytest.approx(100.0)


def test_a_server_error_is_said_and_the_last_good_frame_stays(pool):
    from client import ServerUnavailable

    answers = iter([result(("person", 0.8), jpeg=b"good"), ServerUnavailable("x:1", "down")])

    def detect(jpeg: bytes) -> ImageResult:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    session = live.LiveSession(detect, pool)
    for _ in range(2):
        session.offer(b"frame")
        session.wait(10)
    shown = session.shown()
    assert shown.stats.endswith(f"**Error:** {ServerUnavailable('x:1', 'down')}")
    assert shown.jpeg == b"good"
    assert shown.detections == "Last frame: person 0.80"
    assert session.answered == 2


def test_frame_jpeg_reads_the_webcams_data_url():
    assert live.frame_jpeg(data_url(b"\xff\xd8jpeg bytes")) == b"\xff\xd8jpeg bytes"


@pytest.mark.parametrize(
    "value",
    [None, {"path": "/tmp/x.jpg", "url": None}, "data:text/plain;base64,aGk=",
     {"url": "data:image/jpeg,raw"}, {"url": "data:image/jpeg;base64,@@@"}],
    ids=["nothing", "a file", "not an image", "not base64", "bad base64"],
)  # fmt: skip
def test_frame_jpeg_refuses_what_is_not_a_webcam_frame(value):
    with pytest.raises(ValueError, match="webcam frame"):
        live.frame_jpeg(value)


def test_detections_text_lists_the_best_first_and_counts_the_rest():
    many = result(*[("person", 0.1 * k) for k in range(1, 11)])
    text = live.detections_text(many, most=3)
    assert text == "Last frame: person 1.00, person 0.90, person 0.80 (+7 more)"
    assert live.detections_text(result()) == "Last frame: nothing found"
    assert live.detections_text(None) == "Last frame: none yet"


def test_image_value_carries_the_jpeg_inline():
    value = live.image_value(b"\xff\xd8abc")
    assert value["url"] == "data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8abc").decode()
    assert value["path"] is None  # no file written
    assert live.image_value(None) is None


def test_the_sessions_kept_are_capped(monkeypatch):
    monkeypatch.setattr(live, "MAX_SESSIONS", 3)
    streams = live.LiveStreams(client=None, models=None, workers=1)
    try:
        for k in range(5):
            streams.session(f"s{k}", lambda jpeg: result()).last_used = k
        assert sorted(streams._sessions) == ["s2", "s3", "s4"]
    finally:
        streams.pool.shutdown()
