"""Live sources through a model: a stream, a camera or a file read as it plays, one
result per frame the server had time for.

    import threading
    from client import DetectorClient, DetectOptions
    from client.live import LatestFrameReader, frame_detector, live_results, parse_source
    with DetectorClient() as c:
        reader = LatestFrameReader(parse_source("http://camera.local:8080/stream"))
        reader.start()
        try:
            detect = frame_detector(c, "detect_all", DetectOptions())
            for r in live_results(reader, detect, threading.Event()):
                print(r.frame.index, r.result.summary())
        finally:
            reader.stop()

A source is what OpenCV's FFmpeg reads (a file, http(s)://, rtsp(s)://) or a V4L2
camera by number. Latency stays bounded: a reader thread reads the source at its own
pace and keeps only the newest frame; the caller takes that one when it is ready for
the next, and every frame replaced before it was taken is dropped and counted, never
queued. A live source (a stream or a camera) that fails or ends is reopened, waiting
``Backoff`` between tries, until it has given no frame for ``give_up_s``; a file ends
at its end, read at its own frame rate as if it were live.

What is done with each frame is the caller's function (frame -> result):
``frame_detector`` sends it to a detection ensemble; a tracker fits the same slot.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Generic, Protocol, TypeVar
from urllib.parse import urlsplit

import cv2
import numpy as np

from client.errors import VideoNotReadable
from client.payload import DetectOptions
from client.results import ImageResult, results_or_raise
from client.video import DEFAULT_FPS, FRAME_JPEG_QUALITY, BatchClient, ClipWriter, encode_frame

# Network sources read through FFmpeg; other schemes are refused as typos.
STREAM_SCHEMES = frozenset({"http", "https", "rtsp", "rtsps"})
# FFmpeg gives up on opening or reading a stream after this long (OpenCV's default is
# 30 s): a source that stalls is then reopened rather than waited for.
FFMPEG_TIMEOUT_MS = 5000
DEFAULT_GIVE_UP_S = 60.0  # a live source silent this long ends the run
TAKE_POLL_S = 0.2  # how often a caller waiting for a frame looks at its stop event


class SourceKind(Enum):
    FILE = "file"  # ends at its end, read at its frame rate
    STREAM = "stream"  # a network URL: reopened after a drop-out
    DEVICE = "device"  # a V4L2 camera, /dev/video<N>: reopened after a drop-out


@dataclass(frozen=True)
class LiveSource:
    """Where frames come from: ``target`` is the path or URL as given, or the camera's
    number."""

    target: str | int
    kind: SourceKind

    @property
    def live(self) -> bool:
        """Whether it is reopened after it fails or ends (a file just ends)."""
        return self.kind is not SourceKind.FILE

    def __str__(self) -> str:
        return f"/dev/video{self.target}" if self.kind is SourceKind.DEVICE else str(self.target)


def parse_source(text: str) -> LiveSource:
    """The source ``text`` names: a V4L2 device number (``0``), an http(s):// or
    rtsp(s):// URL, or the path of an existing file. ``ValueError`` saying why for
    anything else."""
    text = text.strip()
    if not text:
        raise ValueError("the source is empty: give a file, a URL or a camera number")
    if text.isdigit():
        return LiveSource(int(text), SourceKind.DEVICE)
    scheme = urlsplit(text).scheme.lower()
    if "://" in text:
        if scheme not in STREAM_SCHEMES:
            raise ValueError(
                f"{scheme or '(none)'}:// sources are not read: give "
                + ", ".join(f"{s}://" for s in sorted(STREAM_SCHEMES))
                + ", a file or a camera number"
            )
        return LiveSource(text, SourceKind.STREAM)
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"no such file: {text} (nor a URL or a camera number)")
    return LiveSource(text, SourceKind.FILE)


class Capture(Protocol):
    """What the reader needs of a ``cv2.VideoCapture``."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's names

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def get(self, prop: int) -> float: ...

    def release(self) -> None: ...


def open_capture(source: LiveSource) -> Capture:
    """The source opened with OpenCV: FFmpeg for files and URLs (with its open and read
    timeouts at ``FFMPEG_TIMEOUT_MS``), V4L2 for a camera. May not be open: ask
    ``isOpened()``."""
    if source.kind is SourceKind.DEVICE:
        return cv2.VideoCapture(int(source.target), cv2.CAP_V4L2)
    timeouts = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, FFMPEG_TIMEOUT_MS,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, FFMPEG_TIMEOUT_MS,
    ]  # fmt: skip
    return cv2.VideoCapture(str(source.target), cv2.CAP_FFMPEG, timeouts)


@dataclass(frozen=True)
class Backoff:
    """The waits before each try to reopen a live source: ``first_s``, then each one
    ``factor`` times the last, at most ``max_s`` (seconds). With the defaults: 0.5, 1,
    2, 4, 8, 8, ... s; a try that opens the source starts the schedule over."""

    first_s: float = 0.5
    factor: float = 2.0
    max_s: float = 8.0

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s or self.factor < 1:
            raise ValueError(f"a backoff needs 0 < first_s <= max_s and factor >= 1: {self}")

    def delays(self) -> Iterator[float]:
        delay = self.first_s
        while True:
            yield delay
            delay = min(delay * self.factor, self.max_s)


@dataclass(frozen=True)
class LiveFrame:
    """One frame as the reader got it.

    ``index`` counts the frames read from the source, from 0, across reopenings.
    ``source_time_s`` is the frame's time in the stream as the source stamps it
    (seconds; it starts over when a stream is reopened), None when the source stamps no
    increasing times. ``read_at`` is when the reader had it (``time.monotonic()``
    seconds). ``lag_s`` is how much later than the source's own timing it was read:
    the frame's (read time - source time) less the smallest of that since the source
    was (re)opened, so 0 for the most punctual frame and growing when reading falls
    behind; None with ``source_time_s``. ``image`` is BGR, H x W x 3, uint8.
    """

    index: int
    source_time_s: float | None
    read_at: float
    lag_s: float | None
    image: np.ndarray


@dataclass(frozen=True)
class LiveCounters:
    """Frames read from the source, sent (taken for the frame function: to the
    server), and dropped (replaced by a newer one before they were taken); times the
    source was reopened after a drop-out. Once the reader is stopped, read == sent +
    dropped."""

    read: int = 0
    sent: int = 0
    dropped: int = 0
    reconnects: int = 0


class End(Enum):
    """Why a live run ended."""

    STOPPED = "stopped"  # the caller asked (Ctrl-C)
    END_OF_FILE = "end of file"
    SOURCE_LOST = "source lost"  # a live source gave no frame for give_up_s


class LatestFrameReader:
    """Reads ``source`` on a thread of its own and keeps only its newest frame.

    ``start()`` opens the source (``VideoNotReadable`` when it cannot be opened or
    gives no first frame) and starts the thread; ``take()`` hands over the newest
    frame not yet taken. A frame replaced before it was taken is dropped and counted.
    A file is read at its frame rate (its frames' times) and ends at its end; a live
    source that fails to read or ends is released and reopened after ``backoff``'s
    waits, until it has given no frame for ``give_up_s`` seconds (then ``SOURCE_LOST``).
    ``stop()`` ends the thread and releases the source; it is safe to call twice.

    ``open_source`` opens the capture (``open_capture``: tests give fakes), ``clock`` and
    ``sleep`` are time's (``sleep`` returns early when the reader is stopped).
    """

    def __init__(
        self,
        source: LiveSource,
        *,
        backoff: Backoff = Backoff(),  # noqa: B008 - frozen, so shared safely
        give_up_s: float = DEFAULT_GIVE_UP_S,
        open_source: Callable[[LiveSource], Capture] = open_capture,
        clock: Callable[[], float] = time.monotonic,
        log: Callable[[str], None] = lambda _line: None,
    ):
        if give_up_s <= 0:
            raise ValueError(f"give_up_s must be positive, got {give_up_s}")
        self.source = source
        self.backoff = backoff
        self.give_up_s = give_up_s
        self.fps = DEFAULT_FPS  # the source's frame rate once opened, frames per second
        self._open = open_source
        self._clock = clock
        self._log = log
        self._stop = threading.Event()
        self._changed = threading.Condition()  # guards everything below
        self._newest: LiveFrame | None = None
        self._read = 0
        self._taken = 0
        self._dropped = 0
        self._reconnects = 0
        self._end: End | None = None
        self._capture: Capture | None = None
        self._thread = threading.Thread(target=self._run, name="live-source", daemon=True)
        # Per opening: the smallest (read time - source time) seen, the last source
        # time, and for a file the clock time its source time 0 stands for.
        self._punctual: float | None = None
        self._last_time: float | None = None
        self._origin: float | None = None

    # -- the caller's side --

    def start(self) -> None:
        self._capture = self._first_open()
        self._thread.start()

    def take(self, timeout: float) -> LiveFrame | None:
        """The newest frame not yet taken, waiting up to ``timeout`` seconds for one;
        None when none came (see ``end`` for whether one still may)."""
        with self._changed:
            self._changed.wait_for(lambda: self._newest is not None or self._end, timeout)
            frame, self._newest = self._newest, None
            self._taken += frame is not None
            return frame

    @property
    def end(self) -> End | None:
        """Why the reader ended (no more frames after the last one taken), or None."""
        with self._changed:
            return self._end if self._newest is None else None

    def counters(self) -> LiveCounters:
        """The counts so far."""
        with self._changed:
            return LiveCounters(self._read, self._taken, self._dropped, self._reconnects)

    def stop(self) -> None:
        """End the thread (within one of FFmpeg's read timeouts at most), release the
        source, and count a frame never taken as dropped."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        elif self._capture is not None:  # opened, never started
            self._capture.release()
            self._capture = None
        with self._changed:
            if self._newest is not None:
                self._newest = None
                self._dropped += 1
            self._end = self._end or End.STOPPED
            self._changed.notify_all()

    # -- the thread's side --

    def _first_open(self) -> Capture:
        capture = self._open(self.source)
        if not capture.isOpened():
            capture.release()
            raise VideoNotReadable(str(self.source), "it cannot be opened")
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS
        return capture

    def _run(self) -> None:
        capture = self._capture
        last_frame_at = self._clock()
        try:
            while not self._stop.is_set():
                if capture is None:
                    capture = self._reopen(last_frame_at)
                    if capture is None:
                        return
                    continue
                ok, image = capture.read()
                if ok and image is not None:
                    last_frame_at = self._publish(capture, image)
                    continue
                capture.release()
                capture = None
                if not self.source.live:
                    self._finish(End.END_OF_FILE)
                    return
                self._log(f"{self.source}: no frame (dropped out or ended); reopening")
        finally:
            if capture is not None:
                capture.release()
            self._capture = None

    def _reopen(self, last_frame_at: float) -> Capture | None:
        """The source opened again after the backoff's waits, or None once it has been
        silent ``give_up_s`` (or the reader was stopped). The last wait is cut short so
        that the last try comes at the limit."""
        delays = self.backoff.delays()
        while True:
            silent = self._clock() - last_frame_at
            if silent >= self.give_up_s:
                self._log(f"{self.source}: no frame for {silent:.1f} s; giving up")
                self._finish(End.SOURCE_LOST)
                return None
            if self._stop.wait(min(next(delays), self.give_up_s - silent)):
                return None
            capture = self._open(self.source)
            if capture.isOpened():
                with self._changed:
                    self._reconnects += 1
                self._punctual = self._last_time = self._origin = None
                self._log(f"{self.source}: reopened after {self._clock() - last_frame_at:.1f} s")
                return capture
            capture.release()

    def _publish(self, capture: Capture, image: np.ndarray) -> float:
        """Make ``image`` the newest frame; the time it was read."""
        stamp = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if not math.isfinite(stamp) or (self._last_time is not None and stamp <= self._last_time):
            source_time = None
        else:
            source_time = self._last_time = stamp
        if source_time is not None and not self.source.live:
            self._pace(source_time)
        read_at = self._clock()
        lag = None
        if source_time is not None:
            behind = read_at - source_time
            self._punctual = behind if self._punctual is None else min(self._punctual, behind)
            lag = behind - self._punctual
        with self._changed:
            frame = LiveFrame(self._read, source_time, read_at, lag, image)
            self._read += 1
            if self._newest is not None:
                self._dropped += 1
            self._newest = frame
            self._changed.notify_all()
        return read_at

    def _pace(self, source_time: float) -> None:
        """Wait until the file's frame is due: its source time after the first frame's."""
        now = self._clock()
        if self._origin is None:
            self._origin = now - source_time
        self._stop.wait(max(self._origin + source_time - now, 0.0))

    def _finish(self, end: End) -> None:
        with self._changed:
            self._end = end
            self._changed.notify_all()


class Answer(Protocol):
    """What a frame function returns, as ``ImageResult`` has it: the detections
    (dataclasses, boxes in frame pixels), the frame drawn with them, and the request's
    round trip in seconds."""

    detections: Sequence[object]
    annotated_jpeg: bytes
    latency_s: float


A = TypeVar("A", bound=Answer)


@dataclass(frozen=True)
class LiveResult(Generic[A]):
    """One frame's answer: ``latency_s`` from the frame's read to its answer (its wait
    to be taken plus the call), and the counts when it came."""

    frame: LiveFrame
    result: A
    latency_s: float
    counters: LiveCounters


def live_results(
    reader: LatestFrameReader,
    process: Callable[[np.ndarray], A],
    stop: threading.Event,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[LiveResult[A]]:
    """``process`` on the reader's newest frame, again and again, one at a time, until
    the reader ends or ``stop`` is set (the frame at the server then finishes first).
    ``reader`` must be started; stopping it is the caller's. Errors of ``process`` end
    the iteration with them."""
    while not stop.is_set():
        frame = reader.take(TAKE_POLL_S)
        if frame is None:
            if reader.end:
                return
            continue
        result = process(frame.image)
        yield LiveResult(frame, result, clock() - frame.read_at, reader.counters())


def frame_detector(
    client: BatchClient,
    model: str,
    options: DetectOptions,
    jpeg_quality: int = FRAME_JPEG_QUALITY,
) -> Callable[[np.ndarray], ImageResult]:
    """The frame function of detection: a BGR frame sent to ``model`` as a JPEG of
    ``jpeg_quality``, alone in its request; ``DetectorClient.detect``'s errors."""

    def detect(frame: np.ndarray) -> ImageResult:
        payload = encode_frame(frame, jpeg_quality)
        return results_or_raise(client.iter_detect([payload], model, options, batch_size=1))[0]

    return detect


BOX_FIELDS = frozenset({"x1", "y1", "x2", "y2"})


def detection_json(detection: object) -> dict:
    """A detection's fields (a dataclass's: box in frame pixels, x1 y1 x2 y2, score,
    class_id, label, and whatever else it has), for a JSON line: box to 0.1 pixel,
    other numbers to 4 decimals, in nested tuples too."""
    return {
        k: round(v, 1) if k in BOX_FIELDS else _rounded_json(v)
        for k, v in asdict(detection).items()  # type: ignore[call-overload]
    }


def _rounded_json(value: object) -> object:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (tuple, list)):
        return [_rounded_json(v) for v in value]
    return value


def result_line(live: LiveResult[Answer]) -> dict:
    """One JSON line of a frame: its index, source time and lag (seconds, null when the
    source stamps no times), the latency from its read to its result and the request's
    own round trip (seconds), its detections, and the counts so far."""
    frame = live.frame
    return {
        "frame": frame.index,
        "source_time_s": _rounded(frame.source_time_s),
        "lag_s": _rounded(frame.lag_s),
        "latency_s": round(live.latency_s, 4),
        "round_trip_s": round(live.result.latency_s, 4),
        "detections": [detection_json(d) for d in live.result.detections],
        "counters": asdict(live.counters),
    }


def summary_line(
    counters: LiveCounters, end: str, wall_s: float, latencies_s: Sequence[float]
) -> dict:
    """The last JSON line of a run: the counts, why it ended (an ``End``'s value, or
    the caller's reason), its wall time, frames per
    second read from the source and sent, the share of frames dropped, and the
    latency's median, 95th percentile and maximum (seconds)."""
    wall = max(wall_s, 1e-9)
    latency = (
        {
            "p50": round(float(np.percentile(latencies_s, 50)), 4),
            "p95": round(float(np.percentile(latencies_s, 95)), 4),
            "max": round(max(latencies_s), 4),
        }
        if latencies_s
        else None
    )
    return {
        "summary": {
            **asdict(counters),
            "end": end,
            "wall_s": round(wall_s, 3),
            "read_fps": round(counters.read / wall, 2),
            "sent_fps": round(counters.sent / wall, 2),
            "drop_rate": round(counters.dropped / counters.read, 4) if counters.read else 0.0,
            "latency_s": latency,
        }
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


class LiveVideo:
    """The annotated frames of a live run as a VP8 WebM at the source's frame rate:
    each held until the next, for the frames read meanwhile, so that the video keeps
    the source's timing (to the last frame written)."""

    def __init__(self, path: str | Path, fps: float):
        self._clip = ClipWriter(path, fps)
        self._held: np.ndarray | None = None
        self._held_index = 0

    @property
    def frames(self) -> int:
        return self._clip.frames

    def add(self, index: int, jpeg: bytes) -> None:
        """The annotated JPEG of source frame ``index`` (increasing from call to call)."""
        frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            raise ValueError(f"the annotated frame {index} is not a JPEG")
        if self._held is not None:
            for _ in range(index - self._held_index - 1):
                self._clip.write(self._held)
        self._clip.write(frame)
        self._held, self._held_index = frame, index

    def close(self) -> None:
        self._clip.close()

    def __enter__(self) -> LiveVideo:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
