"""The webcam tab's stream handler on the real server: real webcam-like frames (JPEG
``data:`` URLs, as Gradio's webcam posts them) through ``LiveStreams.on_frame`` to the
real Triton, the server's annotated frames back, and frames dropped (never queued)
while the server is busy."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from client import DetectorClient
from ensemble import contract
from ui import live
from ui.catalog import ServerModels

pytestmark = pytest.mark.server


def webcam_frame(jpeg: bytes) -> dict:
    """A frame as Gradio's streaming webcam sends it: an image value whose ``url`` is
    the JPEG as a ``data:`` URL (what the tab's output image gets back, too)."""
    return live.image_value(jpeg)


@pytest.fixture(scope="module")
def detector(triton_url):
    with DetectorClient(triton_url) as client:
        yield client


@pytest.fixture(scope="module")
def frames(photos_dir) -> dict[str, dict]:
    """The photos as the webcam sends them: JPEG data: URLs."""
    out = {}
    for name in ("astronaut", "coffee"):
        ok, jpeg = cv2.imencode(".jpg", cv2.imread(str(photos_dir / f"{name}.png")))
        assert ok
        out[name] = webcam_frame(jpeg.tobytes())
    return out


class CountingClient:
    """The real client, counting how many detect calls are at the server at once."""

    def __init__(self, client: DetectorClient):
        self.client = client
        self.calls = 0
        self.at_once = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        return getattr(self.client, name)

    def detect(self, *args, **kwargs):
        with self._lock:
            self.calls += 1
            self.at_once += 1
            self.most_at_once = max(self.most_at_once, self.at_once)
        try:
            return self.client.detect(*args, **kwargs)
        finally:
            with self._lock:
                self.at_once -= 1


def streams_for(client, wait_s: float = 60.0):
    return live.LiveStreams(client, ServerModels(client), wait_s=wait_s)


def labels_of(shown: live.Shown) -> set[str]:
    return {part.rsplit(" ", 1)[0] for part in shown.detections.split(": ", 1)[1].split(", ")}


def test_a_streamed_frame_comes_back_drawn_by_the_server(detector, frames):
    streams = streams_for(detector)
    model = contract.ensemble_name("tensorflow")
    shown = streams.on_frame(frames["astronaut"], model, 0.5, 0.5, "session-a")
    assert shown.jpeg is not None and shown.jpeg[:3] == b"\xff\xd8\xff", "a JPEG"
    assert cv2.imdecode(np.frombuffer(shown.jpeg, np.uint8), cv2.IMREAD_COLOR) is not None
    assert labels_of(shown) == {"person"}, shown.detections
    # The same frame straight through the client: the same objects.
    (direct,) = detector.detect([live.frame_jpeg(frames["astronaut"])], model, 0.5, 0.5)
    assert shown.detections == live.detections_text(direct)
    assert "1 shown, 0 dropped of 1 frames" in shown.stats
    # The next frame (another scene) replaces it; the thresholds are the page's.
    shown = streams.on_frame(frames["coffee"], model, 0.5, 0.5, "session-a")
    assert "cup" in labels_of(shown) and "person" not in labels_of(shown), shown.detections
    streams.pool.shutdown()


def test_frames_faster_than_the_server_are_dropped_not_queued(detector, frames):
    """The handler never waits for a result here, and frames come in a loop with no
    pause: at most one frame is ever at the server, every other frame is dropped and
    counted, and each frame shown is one that went straight to the server."""
    counting = CountingClient(detector)
    streams = streams_for(counting, wait_s=0.0)
    key = "session-b"
    model = contract.ensemble_name("onnxruntime")
    answered_wanted = 3
    shown = None
    for _ in range(100_000):  # a bound on the loop, not on time
        shown = streams.on_frame(frames["astronaut"], model, 0.3, 0.5, key)
        session = streams._sessions[key]
        if session.answered >= answered_wanted:
            break
        threading.Event().wait(0.002)  # let the worker thread run on a small machine
    session = streams._sessions[key]
    assert session.answered >= answered_wanted
    assert session.sent - session.answered in (0, 1), "at most the last frame unanswered"
    session.wait(60)
    assert counting.most_at_once == 1, "frames queued at the server"
    assert session.sent == session.answered == counting.calls
    assert session.dropped == session.offered - session.sent
    assert session.dropped > session.sent, (session.offered, session.sent, session.dropped)
    assert f"{session.dropped} dropped of {session.offered} frames" in shown.stats
    print(f"frames in a tight loop: {shown.stats}")  # the figures, for the record
    assert "person" in labels_of(shown)
    streams.pool.shutdown()


def test_sessions_do_not_hold_each_other_back(detector, frames):
    """One session's frame at the server does not make another session's frame drop."""
    streams = streams_for(detector, wait_s=0.0)
    model = contract.ensemble_name("tensorflow")
    streams.on_frame(frames["astronaut"], model, 0.5, 0.5, "session-c")
    streams.on_frame(frames["coffee"], model, 0.5, 0.5, "session-d")
    a, b = streams._sessions["session-c"], streams._sessions["session-d"]
    assert (a.sent, a.dropped, b.sent, b.dropped) == (1, 0, 1, 0)
    a.wait(60)
    b.wait(60)
    assert "person" in labels_of(a.shown()) and "cup" in labels_of(b.shown())
    streams.pool.shutdown()


def test_a_bad_model_or_frame_is_said_and_the_stream_goes_on(detector, frames):
    streams = streams_for(detector)
    model = contract.ensemble_name("tensorflow")
    key = "session-e"
    shown = streams.on_frame(frames["astronaut"], "detect_nothing", 0.5, 0.5, key)
    assert shown.stats.startswith("**Error:** unknown model 'detect_nothing'"), shown.stats
    assert model in shown.stats, "the message names what the server serves"
    shown = streams.on_frame({"url": "blob:nothing"}, model, 0.5, 0.5, key)
    assert "not a webcam frame" in shown.stats
    # A data: URL whose bytes are no image: the server's refusal, said in the line.
    shown = streams.on_frame(webcam_frame(b"not a jpeg at all"), model, 0.5, 0.5, key)
    assert "**Error:**" in shown.stats and "image" in shown.stats.lower(), shown.stats
    assert shown.jpeg is None
    # ...and the next good frame is detected as ever.
    shown = streams.on_frame(frames["astronaut"], model, 0.5, 0.5, key)
    assert labels_of(shown) == {"person"}
    assert "**Error:**" not in shown.stats
    streams.pool.shutdown()
