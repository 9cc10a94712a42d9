"""Live sources without a server (client.live and the ``detect --source`` options): the
reader that keeps only the newest frame and counts what it drops, reopening a live
source with backoff and giving up, a file read at its frame rate to its end, the lines
printed, the annotated video's timing, Ctrl-C, and the options refused. Against the
real server and an ffmpeg stream on loopback: test_live_source_server.py.

The captures here are fakes standing in for ``cv2.VideoCapture``: each frame's pixels
hold its number, so that which frame was handed over shows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import count_frames

from client import cli
from client.errors import VideoNotReadable
from client.live import (
    Backoff,
    End,
    LatestFrameReader,
    LiveCounters,
    LiveFrame,
    LiveResult,
    LiveSource,
    LiveVideo,
    SourceKind,
    live_results,
    parse_source,
    result_line,
    summary_line,
)
from client.results import Detection, ImageResult
from ensemble.processes import free_port

pytestmark = pytest.mark.unit

STREAM = LiveSource("http://127.0.0.1:1/", SourceKind.STREAM)
FILE = LiveSource("clip.mp4", SourceKind.FILE)
FAST = Backoff(first_s=0.01, factor=2.0, max_s=0.04)  # the schedule's shape, quickly
WAIT_S = 10.0  # the longest any step here may take on a loaded machine
REPO = Path(__file__).resolve().parents[1]  # `python -m client` runs this checkout's


def numbered(n: int) -> np.ndarray:
    """A 4x4 BGR frame whose pixels are ``n`` (mod 256)."""
    return np.full((4, 4, 3), n % 256, np.uint8)


class FakeCapture:
    """A capture whose ``read()`` hands out frames 0, 1, 2... as the test allows
    (``allow``), ``frame_ms`` apart in the source's time, and fails once ``close()``d or
    after ``frames`` (None: never). ``now`` is a clock that each read advances by
    ``read_s``, for tests that pass it as the reader's clock."""

    def __init__(self, *, frames: int | None = None, gated: bool = False, frame_ms: float = 40.0,
                 read_s: float = 0.0, opened: bool = True):  # fmt: skip
        self.frames = frames
        self.frame_ms = frame_ms
        self.read_s = read_s
        self.opened = opened
        self.next = 0
        self.now = 100.0
        self.released = False
        self._allowed = 0 if gated else None
        self._closed = False
        self._cond = threading.Condition()

    def allow(self, n: int) -> None:
        with self._cond:
            self._allowed += n
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._allowed != 0, WAIT_S)
            if self._closed or self._allowed == 0:
                return False, None
            if self.frames is not None and self.next >= self.frames:
                return False, None
            if self._allowed is not None:
                self._allowed -= 1
            self.now += self.read_s
            self.next += 1
            return True, numbered(self.next - 1)

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_POS_MSEC:
            return (self.next - 1) * self.frame_ms
        if prop == cv2.CAP_PROP_FPS:
            return 1000.0 / self.frame_ms
        return 0.0

    def release(self) -> None:
        self.released = True


def wait_until(condition, what: str) -> None:
    """Poll ``condition`` until it holds; fail saying ``what`` after ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"waited {WAIT_S} s for {what}"
        time.sleep(0.005)


def drain(reader: LatestFrameReader) -> list[LiveFrame]:
    """The frames taken from ``reader`` until it ends."""
    frames = []
    deadline = time.monotonic() + WAIT_S
    while reader.end is None:
        assert time.monotonic() < deadline, f"the reader did not end in {WAIT_S} s"
        frame = reader.take(0.01)
        if frame is not None:
            frames.append(frame)
    return frames


def reader_of(*captures: FakeCapture, source: LiveSource = STREAM, **options) -> LatestFrameReader:
    """A reader whose opens hand out ``captures`` in turn (the last one again after)."""
    queue = list(captures)

    def open_source(_source: LiveSource) -> FakeCapture:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return LatestFrameReader(source, open_source=open_source, **options)


# -- the newest frame only --


def test_the_reader_hands_over_only_the_newest_frame_and_counts_the_others_dropped():
    capture = FakeCapture(gated=True)
    reader = reader_of(capture)
    reader.start()
    try:
        capture.allow(5)
        wait_until(lambda: reader.counters().read == 5, "5 frames read")
        frame = reader.take(WAIT_S)
        assert frame.index == 4 and frame.image[0, 0, 0] == 4
        assert reader.counters() == LiveCounters(read=5, sent=1, dropped=4, reconnects=0)
        assert reader.take(0.01) is None  # a frame is handed over once
        capture.allow(3)
        wait_until(lambda: reader.counters().read == 8, "8 frames read")
        assert reader.take(WAIT_S).index == 7
        assert reader.counters() == LiveCounters(read=8, sent=2, dropped=6, reconnects=0)
        capture.allow(1)  # read, never taken: dropped when the reader stops
        wait_until(lambda: reader.counters().read == 9, "9 frames read")
    finally:
        capture.close()
        reader.stop()
    assert reader.counters() == LiveCounters(read=9, sent=2, dropped=7, reconnects=0)
    assert reader.end is End.STOPPED and capture.released


def test_a_slow_consumer_gets_fresh_frames_and_the_rest_are_dropped_not_queued():
    capture = FakeCapture(frame_ms=2.0)  # as fast as the thread reads
    reader = reader_of(capture)
    taken: list[LiveFrame] = []
    ages: list[float] = []
    reader.start()
    try:
        while len(taken) < 8:
            frame = reader.take(WAIT_S)
            ages.append(time.monotonic() - frame.read_at)
            taken.append(frame)
            time.sleep(0.03)  # a round trip to the server, say
    finally:
        capture.close()
        reader.stop()
    indices = [f.index for f in taken]
    assert indices == sorted(set(indices))  # each once, in order
    counts = reader.counters()
    assert counts.sent == 8 and counts.read == counts.sent + counts.dropped
    assert counts.dropped > 8  # the source ran ahead of the consumer
    # What it gets is what the source just gave, not a backlog: younger than one wait.
    assert np.median(ages) < 0.03


def test_live_results_runs_the_frame_function_on_each_frame_taken_until_stopped():
    capture = FakeCapture(gated=True)
    reader = reader_of(capture)
    stop = threading.Event()
    seen: list[int] = []

    def process(image: np.ndarray) -> ImageResult:
        seen.append(int(image[0, 0, 0]))
        if len(seen) == 3:
            stop.set()  # as Ctrl-C does: the frame at the server still finishes
        else:  # two frames come while this one is at the server
            read = reader.counters().read + 2
            capture.allow(2)
            wait_until(lambda: reader.counters().read == read, f"{read} frames read")
        return ImageResult([], b"", latency_s=0.01)

    reader.start()
    try:
        capture.allow(1)
        results = list(live_results(reader, process, stop))
    finally:
        capture.close()
        reader.stop()
    assert [r.frame.index for r in results] == seen == [0, 2, 4]
    assert [r.counters.sent for r in results] == [1, 2, 3]
    assert all(r.latency_s >= 0 for r in results)


# -- drop-outs, backoff, the end --


def test_backoff_doubles_from_half_a_second_up_to_eight():
    delays = Backoff().delays()
    assert [next(delays) for _ in range(7)] == [0.5, 1, 2, 4, 8, 8, 8]
    delays = Backoff(first_s=0.1, factor=3, max_s=1).delays()
    assert [round(next(delays), 6) for _ in range(5)] == [0.1, 0.3, 0.9, 1, 1]


@pytest.mark.parametrize("settings", [{"first_s": 0}, {"first_s": 2, "max_s": 1}, {"factor": 0.5}])
def test_backoff_refuses_a_schedule_that_does_not_wait_or_shrinks(settings):
    with pytest.raises(ValueError, match="backoff"):
        Backoff(**settings)


def test_a_live_source_that_drops_out_is_reopened_after_the_backoff_and_goes_on():
    first = FakeCapture(frames=3)
    down = [FakeCapture(opened=False), FakeCapture(opened=False)]
    back = FakeCapture(gated=True)
    opened_at: list[float] = []
    captures = [first, *down, back]

    def open_source(_source: LiveSource) -> FakeCapture:
        opened_at.append(time.monotonic())
        return captures.pop(0) if len(captures) > 1 else captures[0]

    lines: list[str] = []
    reader = LatestFrameReader(STREAM, open_source=open_source, backoff=FAST, log=lines.append)
    reader.start()
    try:
        wait_until(lambda: reader.counters().reconnects == 1, "the source reopened")
        back.allow(2)
        wait_until(lambda: reader.counters().read == 5, "2 frames after the reopening")
        frame = reader.take(WAIT_S)
    finally:
        back.close()
        reader.stop()
    assert frame.index == 4  # counted on across the reopening
    assert frame.source_time_s == 0.04  # the new stream's own time
    assert first.released and all(c.released for c in down)
    # Each try waited at least its turn of the schedule: 0.01, 0.02, 0.04 s.
    gaps = np.diff(opened_at)
    assert len(gaps) == 3 and all(gaps >= [0.01, 0.02, 0.04])
    assert any("reopening" in line for line in lines)
    assert any("reopened after" in line for line in lines)


def test_a_live_source_silent_past_the_limit_is_given_up():
    lines: list[str] = []
    reader = reader_of(FakeCapture(frames=2), FakeCapture(opened=False),
                       backoff=FAST, give_up_s=0.3, log=lines.append)  # fmt: skip
    reader.start()
    last = drain(reader)[-1]
    ended_at = time.monotonic()
    reader.stop()
    assert last.index == 1 and reader.end is End.SOURCE_LOST
    assert ended_at - last.read_at >= 0.3  # not before the limit
    assert reader.counters().reconnects == 0
    assert "giving up" in lines[-1]


def test_a_source_that_cannot_be_opened_is_refused_at_the_start():
    capture = FakeCapture(opened=False)
    reader = reader_of(capture)
    with pytest.raises(VideoNotReadable, match="cannot be opened"):
        reader.start()
    assert capture.released


def test_a_file_is_read_at_its_frame_rate_and_ends_at_its_end_without_reopening():
    opens: list[LiveSource] = []
    capture = FakeCapture(frames=6, frame_ms=40.0)

    def open_source(source: LiveSource) -> FakeCapture:
        opens.append(source)
        return capture

    reader = LatestFrameReader(FILE, open_source=open_source)
    start = time.monotonic()
    reader.start()
    taken = drain(reader)
    took = time.monotonic() - start
    reader.stop()
    assert reader.end is End.END_OF_FILE and opens == [FILE]
    assert took >= 0.2  # frame 5 is due 5 x 40 ms after frame 0
    assert reader.fps == 25.0
    counts = reader.counters()
    assert counts.read == 6 and counts.sent == len(taken) and counts.dropped == 6 - len(taken)
    assert taken[-1].index == 5  # the last frame is handed over, not lost at the end
    assert capture.released


def test_lag_is_how_much_later_than_the_sources_timing_a_frame_was_read():
    # Frames 40 ms apart in the stream, read 40, 50, 30, 120 ms apart: the frame read
    # 10 ms late and the one read 80 ms late show it; one read early is the new punctual.
    capture = FakeCapture(gated=True, frame_ms=40.0)
    steps = iter([0.0, 0.05, 0.03, 0.12])
    lags: list[float] = []
    reader = reader_of(capture, clock=lambda: capture.now)
    reader.start()
    try:
        for _ in range(4):
            capture.read_s = next(steps)
            capture.allow(1)
            frame = reader.take(WAIT_S)
            lags.append(frame.lag_s)
    finally:
        capture.close()
        reader.stop()
    assert np.allclose(lags, [0.0, 0.01, 0.0, 0.08])


# -- what is printed and written --


@dataclass
class LabelledDetection(Detection):
    """A detection with a field of its own, as a tracker's or a fusion's answer adds."""

    others: tuple[tuple[str, float], ...] = ()


def test_a_result_line_says_the_frame_its_times_detections_and_counts():
    person = LabelledDetection(10.04, 20.0, 110.0, 220.55, 0.912345, 0, "person",
                               others=(("dog", 0.123456),))  # fmt: skip
    live = LiveResult(
        LiveFrame(12, 0.48, 5.0, 0.015, numbered(12)),
        ImageResult([person], b"", latency_s=0.123456),
        0.2345678,
        LiveCounters(read=13, sent=4, dropped=9, reconnects=1),
    )
    line = json.loads(json.dumps(result_line(live)))
    (detection,) = line.pop("detections")
    assert line == {
        "frame": 12,
        "source_time_s": 0.48,
        "lag_s": 0.015,
        "latency_s": 0.2346,
        "round_trip_s": 0.1235,
        "counters": {"read": 13, "sent": 4, "dropped": 9, "reconnects": 1},
    }
    # Every field of the detection, whatever its class adds; numbers rounded.
    assert set(detection) == {f.name for f in fields(person)}
    expected = {"x1": 10.0, "y1": 20.0, "x2": 110.0, "y2": 220.6, "score": 0.9123,
                "class_id": 0, "label": "person", "others": [["dog", 0.1235]]}  # fmt: skip
    assert {k: detection[k] for k in expected} == expected


def test_the_summary_line_gives_rates_drops_and_latency_percentiles():
    counts = LiveCounters(read=100, sent=20, dropped=80, reconnects=2)
    summary = summary_line(counts, End.STOPPED.value, 4.0, [0.1] * 19 + [1.0])["summary"]
    assert summary["read"] == 100 and summary["reconnects"] == 2
    assert summary["end"] == "stopped"
    assert summary["read_fps"] == 25.0 and summary["sent_fps"] == 5.0
    assert summary["drop_rate"] == 0.8
    assert summary["latency_s"]["p50"] == 0.1 and summary["latency_s"]["max"] == 1.0
    empty = summary_line(LiveCounters(), End.SOURCE_LOST.value, 0.0, [])["summary"]
    assert empty["latency_s"] is None and empty["drop_rate"] == 0.0


def test_the_video_holds_each_annotated_frame_until_the_next_keeping_the_sources_timing(
    tmp_path,
):
    colors = {0: (0, 0, 255), 3: (0, 255, 0), 4: (255, 0, 0)}  # frames 1, 2 were dropped
    path = tmp_path / "live.webm"
    with LiveVideo(path, fps=25.0) as video:
        for index, bgr in colors.items():
            image = np.full((64, 96, 3), bgr, np.uint8)
            video.add(index, cv2.imencode(".jpg", image)[1].tobytes())
        assert video.frames == 5
    assert count_frames(path) == 5
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    shown = [np.argmax(cap.read()[1].mean(axis=(0, 1))) for _ in range(5)]
    cap.release()
    assert shown == [2, 2, 2, 1, 0]  # red held for frames 0-2, then green, then blue


def test_ctrl_c_sets_the_stop_event_once_and_quits_at_the_second():
    stop = threading.Event()
    before = signal.getsignal(signal.SIGINT)
    with cli.stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGINT)
        wait_until(stop.is_set, "the stop event")
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(WAIT_S)
    assert signal.getsignal(signal.SIGINT) is before


# -- the options --


def test_parse_source_tells_cameras_streams_and_files_apart(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    assert parse_source("0") == LiveSource(0, SourceKind.DEVICE)
    assert str(parse_source("2")) == "/dev/video2"
    for url in ("http://127.0.0.1:8080/", "https://cam/x", "RTSP://cam:8554/live", "rtsps://c/"):
        source = parse_source(url)
        assert source.kind is SourceKind.STREAM and source.live and source.target == url
    source = parse_source(str(clip))
    assert source.kind is SourceKind.FILE and not source.live


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("ftp://host/clip.mp4", "ftp:// sources are not read"),
        ("htp://cam/", "htp:// sources are not read"),
        ("missing.mp4", "no such file: missing.mp4"),
        ("-1", "no such file"),
    ],
)
def test_parse_source_refuses_what_it_cannot_read(text, why):
    with pytest.raises(ValueError, match=why):
        parse_source(text)


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        ([], "give image files, directories or clips (IMG), or --source"),
        (["--source", "0", "photo.jpg"], "give either IMG or --source, not both"),
        (["photo.jpg", "--out-video", "x.webm"], "--out-video goes with --source"),
        (["--source", "0", "--out-video", "x.mp4"], "name it *.webm"),
        (["--source", "0", "--source-timeout", "0"], "positive number of seconds"),
        (["--source", "ftp://x/"], "ftp:// sources are not read"),
    ],
)
def test_the_cli_refuses_options_that_do_not_make_one_live_run(argv, why, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == cli.EXIT_USAGE
    assert why in capsys.readouterr().err


def test_the_cli_says_so_when_the_source_cannot_be_opened(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    url = f"http://127.0.0.1:{free_port()}/"  # nothing listens: refused at once
    for source in (url, str(notes)):
        cmd = [sys.executable, "-m", "client", "--url", f"127.0.0.1:{free_port()}",
               "--source", source]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
        assert proc.returncode == cli.EXIT_SOURCE_LOST, proc.stderr
        assert f"not a readable video: {source} (it cannot be opened)" in proc.stderr
        assert proc.stdout == "" and "Traceback" not in proc.stderr
