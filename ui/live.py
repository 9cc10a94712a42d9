"""The page's live webcam tab: the browser's camera through the server, frame by frame.

How frames travel (Gradio 6's streaming webcam): while the stream is on, the browser
draws the camera into a canvas every ``STREAM_EVERY_S`` and posts it as a JPEG
``data:`` URL; Gradio keeps only the newest posted frame of a stream (a new one
replaces one the handler has not taken yet) and calls the handler with it. The handler
(``LiveStreams.on_frame``) sends the JPEG byte for byte to the chosen ensemble through
the shared ``DetectorClient``, on a worker thread, and shows the server's annotated
JPEG back.

Under load it drops frames rather than queue them: each session has at most one frame
at the server (``LiveSession``). A frame that arrives while the previous one is still
there is skipped at once and counted as dropped, so a frame is never shown later than
one server round trip plus the wait for its turn at the server; the page shows the
frames/s and the latency reached, and the dropped count.

With "Track objects" on, a session's frames go through the chosen model's tracking
ensemble (``track_<name>``) as one sequence: a ``StreamTracker`` per session holds a
``client.tracking.TrackingSession``, opened by the session's first frame and closed
(the sequence ended on the server) when the stream stops, the switch is turned off, the
model or a threshold changes (a new sequence starts, with new ids), or the page is
closed. The same one-frame-at-the-server rule applies: the tracker sees the frames that
were sent, in order and numbered one after the other (a dropped frame is no gap to it:
an object just moves further between two frames sent). The frame shown has each
object's id, and a line counts the distinct objects so far.

A refused or missing camera: Gradio's webcam asks for the camera in a promise whose
failure it does not catch, so the page would just show a grey box. A few lines of JS
(``CAMERA_CHECK_JS``) wrap ``navigator.mediaDevices.getUserMedia`` and write what went
wrong, in words, into ``#webcam-message``.
"""

from __future__ import annotations

import base64
import binascii
import collections
import logging
import statistics
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import gradio as gr
from gradio.data_classes import ImageData

from client import DetectOptions, DetectorClient, DetectorError, ImageResult
from client.tracking import TrackingSession
from ensemble import contract
from ui.catalog import ServerModels
from ui.common import Page, objects_text, threshold

log = logging.getLogger(__name__)

STREAM_EVERY_S = 0.2  # the browser sends a frame this often: at most 5 frames/s
STREAM_TIME_LIMIT_S = 300  # a stream stops after this; pressing record again restarts it
MAX_STREAMS = 8  # streams served at once (each holds a slot while on); more wait their turn
# The handler waits this long for the frame it just sent, so that a quick server shows
# each frame's own result; a slow one is not waited for (the next call shows it).
RESULT_WAIT_S = STREAM_EVERY_S / 2
INFER_TIMEOUT_S = 30.0  # per frame: a frame the server does not answer in time fails
FPS_WINDOW_S = 3.0  # frames/s over the results of the last this many seconds
LATENCY_FRAMES = 10  # the latency shown is over the last this many frames
MAX_SESSIONS = 64  # sessions whose counters are kept (oldest idle dropped beyond this)
DISPLAY_MAX_SIDE = 1280  # annotated frames at most this many pixels on their longest side
TOP_DETECTIONS = 8  # the detections line lists at most this many
# What the page asks of the camera: Gradio's default (1920x1440) makes each posted frame
# a JPEG of several hundred kB; the detectors see at most 512 px anyway.
CAMERA_CONSTRAINTS = {"video": {"width": {"ideal": 640}, "height": {"ideal": 480}}}

NO_STREAM = "Not streaming: press the record button under the camera to start."
CAMERA_MESSAGE_ID = "webcam-message"

# Runs once, when the tab's message element is first rendered. It wraps getUserMedia so
# that a refusal or a missing camera (which Gradio's webcam leaves unreported) is said in
# #webcam-message, and says up front when the page cannot use a camera at all (a page
# served over plain HTTP to another machine has no navigator.mediaDevices).
CAMERA_CHECK_JS = """
const box = element.querySelector('.webcam-camera-state') ?? element;
const say = (text, state) => {
    box.textContent = text;
    box.dataset.state = state;
    box.style.fontWeight = state === 'on' ? '' : 'bold';  // a problem stands out
};
const media = navigator.mediaDevices;
if (!media || !media.getUserMedia) {
    say('No camera: this browser gives this page no camera access (a page needs HTTPS, '
        + 'or localhost, for the camera).', 'unsupported');
} else if (!media.__webcamCheck) {
    const ask = media.getUserMedia.bind(media);
    media.getUserMedia = async (constraints) => {
        if (!constraints || !constraints.video) return ask(constraints);
        try {
            const stream = await ask(constraints);
            say('Camera on: press the record button under it to stream to the server.', 'on');
            return stream;
        } catch (e) {
            const name = e && e.name;
            if (name === 'NotAllowedError' || name === 'SecurityError') {
                say('Camera access was refused: allow the camera for this page in the '
                    + 'browser (the icon in the address bar), then reload.', 'refused');
            } else if (name === 'NotFoundError' || name === 'OverconstrainedError') {
                say('No camera found: connect a camera and reload the page.', 'missing');
            } else if (name === 'NotReadableError' || name === 'AbortError') {
                say('The camera could not be started: another program may be using it.',
                    'busy');
            } else {
                say('The camera is not available: ' + (e && e.message || name || e), 'failed');
            }
            throw e;
        }
    };
    media.__webcamCheck = true;
}
"""
CAMERA_MESSAGE_HTML = (
    '<p class="webcam-camera-state" data-state="waiting">'
    "Click the camera box and allow the camera when the browser asks.</p>"
)


# --- one session's stream -----------------------------------------------------------


@dataclass
class Shown:
    """What the page shows after one frame: the last annotated frame and the lines."""

    jpeg: bytes | None
    stats: str
    detections: str
    # False when ``jpeg`` is the frame the last ``shown()`` gave: the page has it already.
    fresh: bool = True
    objects: str = ""  # tracked: the distinct objects so far (``StreamTracker``); else ""


@dataclass
class _Done:
    sent_at: float  # clock seconds, when the frame was handed to the server
    done_at: float
    result: ImageResult | None
    error: str = ""


@dataclass
class LiveSession:
    """One browser session's stream: at most one frame at the server, the rest dropped.

    ``detect(jpeg)`` sends one encoded frame to the server and returns its result; it
    runs on ``pool``. Times come from ``clock`` (seconds, monotonic).
    """

    detect: Callable[[bytes], ImageResult]
    pool: ThreadPoolExecutor
    clock: Callable[[], float] = time.monotonic
    offered: int = 0  # frames that reached the handler
    sent: int = 0  # ...sent to the server
    dropped: int = 0  # ...skipped because the previous frame was still at the server
    answered: int = 0  # frames whose result came back (errors included)
    last: _Done | None = None
    last_result: ImageResult | None = None
    last_used: float = 0.0
    _returned: ImageResult | None = None  # the result the last ``shown()`` gave
    _pending: Future | None = None
    # (sent_at, done_at) of the last frames answered: times only, not their results (an
    # annotated JPEG each would make 200 of them megabytes per session).
    _finished: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def offer(self, jpeg: bytes) -> bool:
        """Send ``jpeg`` unless this session's previous frame is still at the server
        (then count it dropped and return False at once)."""
        with self._lock:
            self.offered += 1
            self.last_used = self.clock()
            self._collect()
            if self._pending is not None:
                self.dropped += 1
                return False
            self.sent += 1
            self._pending = self.pool.submit(self._run, jpeg, self.clock())
            return True

    def wait(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the frame at the server, if any."""
        pending = self._pending
        if pending is not None:
            futures.wait([pending], timeout=timeout_s)
        with self._lock:
            self._collect()

    @property
    def in_flight(self) -> int:
        return int(self._pending is not None and not self._pending.done())

    def _run(self, jpeg: bytes, sent_at: float) -> _Done:
        try:
            result = self.detect(jpeg)
            return _Done(sent_at, self.clock(), result)
        except DetectorError as e:
            return _Done(sent_at, self.clock(), None, str(e))
        except Exception as e:  # the page gets one line; the log gets the traceback
            log.exception("live frame failed")
            return _Done(sent_at, self.clock(), None, f"unexpected {type(e).__name__}: {e}")

    def _collect(self) -> None:
        if self._pending is None or not self._pending.done():
            return
        done = self._pending.result()
        self._pending = None
        self.answered += 1
        self.last = done
        self._finished.append((done.sent_at, done.done_at))
        if done.result is not None:
            self.last_result = done.result

    def frames_per_s(self) -> float:
        """Results per second over the last ``FPS_WINDOW_S`` (0 with fewer than two)."""
        now = self.clock()
        times = [end for _, end in self._finished if now - end <= FPS_WINDOW_S]
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def latencies_ms(self) -> list[float]:
        """Frame in to result out, in ms, for the last ``LATENCY_FRAMES`` frames."""
        recent = list(self._finished)[-LATENCY_FRAMES:]
        return [(end - start) * 1000 for start, end in recent]

    def shown(self) -> Shown:
        """The last annotated frame, the stats line and the detections line."""
        lat = self.latencies_ms()
        parts = [f"{self.frames_per_s():.1f} frames/s"]
        if lat:
            parts.append(
                f"latency {statistics.median(lat):.0f} ms (frame in to annotated frame out,"
                f" median of the last {len(lat)}, max {max(lat):.0f} ms)"
            )
        parts.append(f"{self.answered} shown, {self.dropped} dropped of {self.offered} frames")
        stats = " · ".join(parts)
        if self.last is not None and self.last.error:
            stats += f"\n\n**Error:** {self.last.error}"
        result = self.last_result
        jpeg = result.annotated_jpeg if result is not None else None
        fresh, self._returned = result is not self._returned, result
        return Shown(jpeg, stats, detections_text(result), fresh)


def detections_text(result: ImageResult | None, most: int = TOP_DETECTIONS) -> str:
    """The last frame's detections as "Last frame: person 0.92, cup 0.41"; a tracked
    detection with its id first, as the server draws it: "#3 person 0.92"."""
    if result is None:
        return "Last frame: none yet"
    best = sorted(result.detections, key=lambda d: d.score, reverse=True)
    text = (
        ", ".join(
            f"{f'#{d.track_id} ' if d.track_id >= 0 else ''}{d.label} {d.score:.2f}"
            for d in best[:most]
        )
        or "nothing found"
    )
    more = f" (+{len(best) - most} more)" if len(best) > most else ""
    return f"Last frame: {text}{more}"


def frame_jpeg(value: Any) -> bytes:
    """The JPEG bytes of a streamed webcam frame (Gradio's raw value: a dict whose
    ``url`` is a ``data:image/jpeg;base64,...`` URL); ValueError for anything else."""
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url.startswith("data:image/"):
        raise ValueError("not a webcam frame (expected an image data: URL)")
    head, _, payload = url.partition(",")
    if ";base64" not in head:
        raise ValueError("webcam frame is not base64-encoded")
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error as e:
        raise ValueError(f"webcam frame is not valid base64: {e}") from None


def image_value(jpeg: bytes | None) -> dict | None:
    """An output image's wire value: the server's JPEG inline, no file written."""
    if jpeg is None:
        return None
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    return ImageData(url=url, mime_type="image/jpeg", size=len(jpeg)).model_dump()


# --- one session's tracking sequence ---------------------------------------------------


class TrackingEnded(DetectorError):
    """A frame reached a stream's tracker after its sequence was ended (the stream
    stopped or tracking was turned off while the frame waited for a worker)."""


class StreamTracker:
    """One session's tracking sequence on the server, for one tracking ensemble
    (``model``) and ``options``: ``track`` sends a frame, opening the sequence (the
    ``TrackingSession`` ``open_session`` makes) at the first one; ``close`` ends it.

    It keeps the distinct objects seen so far, per label (``objects``). One frame at a
    time: ``track`` holds a lock for its round trip (``LiveSession`` sends no other
    while one is at the server anyway), and ``close`` waits for it, so run ``close``
    on a worker.
    """

    def __init__(
        self, model: str, options: DetectOptions, open_session: Callable[[], TrackingSession]
    ):
        self.model = model
        self.options = options
        self._open = open_session
        self._session: TrackingSession | None = None
        self._closed = False
        # Label -> (sequence, track id): a sequence the server forgot is started again
        # (``TrackingSession.restarts``), and its ids count from 1 again.
        self._seen: dict[str, set[tuple[int, int]]] = {}
        # Replaced whole after each frame, so a reader never sees one half updated.
        self.objects: dict[str, int] = {}
        self.restarts = 0
        self._lock = threading.Lock()

    def track(self, jpeg: bytes) -> ImageResult:
        """``jpeg`` through the sequence; its result, each detection with its
        ``track_id`` (-1 until its track is confirmed)."""
        with self._lock:
            if self._closed:
                raise TrackingEnded("tracking ended for this stream: start it again")
            if self._session is None:
                self._session = self._open()
            result = self._session.track(jpeg).result
            self.restarts = self._session.restarts
            for d in result.detections:
                if d.track_id >= 0:
                    self._seen.setdefault(d.label, set()).add((self.restarts, d.track_id))
            counts = ((label, len(ids)) for label, ids in self._seen.items())
            self.objects = dict(sorted(counts, key=lambda kv: (-kv[1], kv[0])))
            return result

    def objects_line(self) -> str:
        """The distinct objects so far, for the page."""
        text = f"Distinct objects so far: {objects_text(self.objects)}"
        if self.restarts:
            text += (
                f" (the server lost the sequence {self.restarts}× and tracking started "
                "again, with new ids: an object may be counted again)"
            )
        return text

    def close(self) -> None:
        """End the sequence on the server (once the frame at the server is answered)."""
        with self._lock:
            self._closed = True
            session, self._session = self._session, None
            if session is None:
                return
            try:
                session.close()
            except Exception as e:  # on a worker, nobody waits for it: log it
                log.warning("ending the tracking sequence of %s: %s", self.model, e)


# --- all sessions -------------------------------------------------------------------


class LiveStreams:
    """The tab's handler, shared by every session: one ``LiveSession`` per browser
    session (by Gradio's session hash), its ``StreamTracker`` while it tracks, one
    worker pool for all."""

    def __init__(
        self,
        client: DetectorClient,
        models: ServerModels,
        workers: int = MAX_STREAMS,
        wait_s: float = RESULT_WAIT_S,
    ):
        self.client = client
        self.models = models
        self.wait_s = wait_s
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="live")
        self._sessions: dict[str, LiveSession] = {}
        self._trackers: dict[str, StreamTracker] = {}  # by session, while it tracks
        self._lock = threading.Lock()

    def session(self, key: str, detect: Callable[[bytes], ImageResult]) -> LiveSession:
        with self._lock:
            found = self._sessions.get(key)
            if found is None:
                if len(self._sessions) >= MAX_SESSIONS:
                    oldest = min(self._sessions, key=lambda k: self._sessions[k].last_used)
                    del self._sessions[oldest]
                    self._end_tracking(oldest)
                found = self._sessions[key] = LiveSession(detect, self.pool)
            found.detect = detect  # the model and thresholds of this frame
            return found

    def open_tracking(self, model: str, options: DetectOptions) -> TrackingSession:
        """A new tracking sequence with the tracking ensemble ``model`` (on a worker: it
        reads the ensemble's config)."""
        return TrackingSession(self.client, model, options, timeout_s=INFER_TIMEOUT_S)

    def tracker(self, key: str, model: str, options: DetectOptions) -> StreamTracker:
        """Session ``key``'s tracker for ``model`` and ``options``; one it had for others
        is ended, and a new sequence starts."""
        with self._lock:
            found = self._trackers.get(key)
            if found is not None and (found.model, found.options) == (model, options):
                return found
            self._end_tracking(key)
            opened = StreamTracker(model, options, lambda: self.open_tracking(model, options))
            self._trackers[key] = opened
            return opened

    def end_tracking(self, key: str) -> None:
        """End session ``key``'s tracking sequence, if any (on a worker)."""
        with self._lock:
            self._end_tracking(key)

    def _end_tracking(self, key: str) -> None:
        """``end_tracking`` with the lock held."""
        found = self._trackers.pop(key, None)
        if found is not None:
            self.pool.submit(found.close)

    def trackers(self) -> int:
        """How many sessions have a tracking sequence open (or about to open) now."""
        with self._lock:
            return len(self._trackers)

    def on_frame(
        self, frame: Any, model: Any, score: Any, iou: Any, key: str, track: bool = False
    ) -> Shown:
        """One streamed frame of session ``key``: send it (or drop it), show the latest.
        With ``track``, through the tracking ensemble of ``model``, as one sequence."""
        try:
            jpeg = frame_jpeg(frame)
            self.models.served(model)  # InputError when the server does not serve it
            name = model
            score_threshold = threshold(score, "score threshold")
            iou_threshold = threshold(iou, "IoU threshold")
        except (ValueError, TypeError) as e:
            session = self._sessions.get(key)
            shown = session.shown() if session else Shown(None, "", detections_text(None))
            tracker = self._trackers.get(key) if track else None
            objects = tracker.objects_line() if tracker else ""
            return replace(shown, stats=f"**Error:** {e}", objects=objects)

        if track:
            options = DetectOptions(
                score_threshold=score_threshold,
                iou_threshold=iou_threshold,
                annotated_max_side=DISPLAY_MAX_SIDE,
                timeout=INFER_TIMEOUT_S,
            )
            tracker = self.tracker(key, contract.tracking_name(name), options)
            session = self.session(key, tracker.track)
            if session.offer(jpeg):
                session.wait(self.wait_s)
            return replace(session.shown(), objects=tracker.objects_line())
        self.end_tracking(key)  # the switch was turned off

        def detect(data: bytes) -> ImageResult:
            (result,) = self.client.detect(
                [data],
                name,
                score_threshold,
                iou_threshold,
                timeout=INFER_TIMEOUT_S,
                annotated_max_side=DISPLAY_MAX_SIDE,
            )
            return result

        session = self.session(key, detect)
        if session.offer(jpeg):
            session.wait(self.wait_s)
        return session.shown()

    def sessions(self) -> int:
        """How many sessions' counters and last frames are kept now."""
        with self._lock:
            return len(self._sessions)

    def forget(self, key: str) -> None:
        with self._lock:
            self._sessions.pop(key, None)
            self._end_tracking(key)


# --- the tab --------------------------------------------------------------------------


def build_tab(page: Page) -> None:
    """The tab's components and events, inside the caller's ``gr.Tab``."""
    streams = LiveStreams(page.client, page.models)
    gr.HTML(
        CAMERA_MESSAGE_HTML,
        elem_id=CAMERA_MESSAGE_ID,
        js_on_load=CAMERA_CHECK_JS,
        padding=False,
    )
    with gr.Row(equal_height=False):
        with gr.Column():
            camera = gr.Image(
                sources=["webcam"],
                streaming=True,
                label="Camera (streamed to the server while recording)",
                webcam_options=gr.WebcamOptions(constraints=CAMERA_CONSTRAINTS),
                elem_id="webcam-input",
            )
            track_switch = gr.Checkbox(
                False,
                label="Track objects (an id per object over the frames, the distinct "
                "objects counted)",
                elem_id="webcam-track",
            )
        with gr.Column():
            annotated = gr.Image(
                label="Annotated by the server",
                interactive=False,
                elem_id="webcam-output",
            )
            stats = gr.Markdown(NO_STREAM, elem_id="webcam-stats")
            found = gr.Markdown(detections_text(None), elem_id="webcam-detections")
            objects = gr.Markdown("", elem_id="webcam-objects")

    def session_key(request: gr.Request) -> str:
        return request.session_hash or "anonymous"

    def on_frame(frame, model_name, score_threshold, iou_threshold, tracking, request: gr.Request):
        shown = streams.on_frame(
            frame, model_name, score_threshold, iou_threshold, session_key(request), bool(tracking)
        )
        # A frame the page already shows is not sent again (a dropped frame's answer).
        picture = image_value(shown.jpeg) if shown.fresh else gr.skip()
        return picture, shown.stats, shown.detections, shown.objects

    def stream_stopped(request: gr.Request) -> None:
        streams.end_tracking(session_key(request))

    camera.stream(
        on_frame,
        inputs=[camera, page.model, page.score, page.iou, track_switch],
        outputs=[annotated, stats, found, objects],
        stream_every=STREAM_EVERY_S,
        time_limit=STREAM_TIME_LIMIT_S,
        concurrency_limit=MAX_STREAMS,
        concurrency_id="webcam",
        show_progress="hidden",
        api_visibility="private",
        preprocess=False,
        postprocess=False,
    ).then(
        # The stream ended (Stop, or its time limit): so does its tracking sequence.
        stream_stopped,
        queue=False,
        show_progress="hidden",
        api_visibility="private",
    )

    # A closed page's counters and last frame go with it (the sessions are bounded
    # anyway: beyond MAX_SESSIONS the least recently used is dropped).
    blocks = gr.context.Context.root_block
    if blocks is not None:

        def forget_session(request: gr.Request) -> None:
            streams.forget(session_key(request))

        blocks.unload(forget_session)
