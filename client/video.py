"""Video clips through the detection ensembles: read frames, send them in batches, write
the annotated clip and the per-frame detections.

    from client import DetectOptions, DetectorClient, probe_clip, read_clip_frames
    with DetectorClient() as c:
        info = probe_clip("clip.mp4")
        options = DetectOptions(score_threshold=0.5)
        for fr in c.detect_frames(read_clip_frames(info), "detect_all", options):
            print(fr.index, fr.result.summary())

Frames are decoded here with OpenCV (its bundled FFmpeg reads MP4, WebM, MOV, MKV) and
sent as JPEGs, which is what the server takes. The annotated clip is written as VP8 in
WebM: of the codecs this OpenCV build can write, it is the one every browser plays
(its FFmpeg has no H.264 encoder; MPEG-4 Part 2 in MP4 plays in no browser).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from client.errors import ClipTooLong, DetectorError, VideoNotReadable
from client.payload import DEFAULT_OPTIONS, SNIFF_BYTES, DetectOptions, sniff_image_format
from client.results import ImageResult, ModelInfo, Outcome, results_or_raise, to_coco_results
from ensemble.contract import DETECT_ALL, MAX_BATCH_SIZE

# Clips longer than this are refused before any frame is sent: about a minute at 30 fps,
# as much as a demo needs and a bounded amount of work per clip.
MAX_CLIP_FRAMES = 1800
VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".mov", ".mkv", ".m4v", ".avi"})
FRAME_JPEG_QUALITY = 90  # frames are sent as JPEGs of this quality (0..100)
DEFAULT_FPS = 25.0  # for a clip that does not say its frame rate
DEFAULT_MAX_IN_FLIGHT = 4  # requests of frames awaiting their answer at once
CLIP_FOURCC = "VP80"  # VP8: the browser-playable codec this OpenCV build writes
CLIP_SUFFIX = ".webm"

Frame = np.ndarray | bytes  # a decoded BGR frame (H x W x 3, uint8), or an encoded image


class BatchClient(Protocol):
    """What the frames of a clip need of a client: ``DetectorClient``'s ``model_info``
    and ``iter_detect``. ``client.api`` imports this module, so this one does not
    import ``DetectorClient``."""

    def model_info(self, model: str) -> ModelInfo: ...

    def iter_detect(
        self, images: Sequence[bytes], model: str, options: DetectOptions, *, batch_size: int
    ) -> Iterator[list[Outcome]]: ...


@dataclass(frozen=True)
class ClipInfo:
    """What a clip's container says: frame size in pixels, frames per second, and the
    frame count (0 when the container does not say)."""

    path: Path
    width: int
    height: int
    fps: float
    frame_count: int


@dataclass
class FrameResult:
    """The server's answer for one frame; ``index`` counts frames from 0."""

    index: int
    result: ImageResult


def probe_clip(path: str | Path, max_frames: int = MAX_CLIP_FRAMES) -> ClipInfo:
    """Open ``path`` as a video and read what its container says.

    Raises ``VideoNotReadable`` for a missing file, an image, or anything FFmpeg cannot
    open or decode a first frame of, and ``ClipTooLong`` when the container declares
    more than ``max_frames`` frames.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(SNIFF_BYTES)
    except FileNotFoundError:
        raise VideoNotReadable(str(path), "no such file") from None
    except OSError as e:
        raise VideoNotReadable(str(path), e.strerror or str(e)) from None
    if not head:
        raise VideoNotReadable(str(path), "empty file")
    image = sniff_image_format(head)
    if image:  # FFmpeg would open it as a one-frame video
        raise VideoNotReadable(str(path), f"it is a {image} image")
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise VideoNotReadable(str(path), "no video stream FFmpeg can open")
        ok, frame = cap.read()
        if not ok or frame is None:
            raise VideoNotReadable(str(path), "its first frame cannot be decoded")
        fps = cap.get(cv2.CAP_PROP_FPS)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    info = ClipInfo(
        path=path,
        width=frame.shape[1],
        height=frame.shape[0],
        fps=fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS,
        frame_count=max(count, 0),
    )
    if info.frame_count > max_frames:
        raise ClipTooLong(str(path), info.frame_count, max_frames)
    return info


def read_clip_frames(info: ClipInfo, max_frames: int = MAX_CLIP_FRAMES) -> Iterator[np.ndarray]:
    """The clip's frames in order, BGR ``uint8`` arrays, read one at a time.

    Raises ``ClipTooLong`` on reaching frame ``max_frames + 1`` (for containers that do
    not declare their length), and ``VideoNotReadable`` when the stream ends before the
    frame count its container declares (a truncated or damaged file).
    """
    cap = cv2.VideoCapture(str(info.path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise VideoNotReadable(str(info.path), "no video stream FFmpeg can open")
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            if n >= max_frames:
                raise ClipTooLong(str(info.path), n + 1, max_frames)
            n += 1
            yield frame
    finally:
        cap.release()
    if n == 0:
        raise VideoNotReadable(str(info.path), "no frame can be decoded")
    if info.frame_count and n < info.frame_count:
        raise VideoNotReadable(
            str(info.path),
            f"the stream ends after {n} of the {info.frame_count} frames its container "
            "declares: truncated or damaged",
        )


def encode_frame(frame: Frame, quality: int = FRAME_JPEG_QUALITY) -> bytes:
    """An encoded image for the server: ``bytes`` as they are, a BGR array as JPEG."""
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return bytes(frame)
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode a frame of shape {np.shape(frame)} as JPEG")
    return jpeg.tobytes()


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter), read lazily."""
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def detect_frames(
    client: BatchClient,
    frames: Iterable[Frame],
    model: str = DETECT_ALL,
    options: DetectOptions = DEFAULT_OPTIONS,
    *,
    batch_size: int | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    jpeg_quality: int = FRAME_JPEG_QUALITY,
) -> Iterator[FrameResult]:
    """Detect objects in a stream of frames; one ``FrameResult`` per frame, in order.
    Every request asks what ``options`` say.

    ``frames`` are BGR arrays (encoded as JPEG of ``jpeg_quality`` here) or encoded
    images as bytes; they are read lazily, ``batch_size`` at a time (default: the
    model's ``max_batch_size``), and at most ``max_in_flight`` requests wait for their
    answer at once, so at most ``batch_size * (max_in_flight + 1)`` frames are read
    ahead of the results whatever the clip's length (a request holds its frames as
    JPEGs only: decoded ones are let go once encoded). The next batch goes out before
    the finished one's results are handed over, so the server works while the caller
    does. Detections are in the frame's pixels, xyxy. Errors are
    ``DetectorClient.detect``'s; stopping the iteration early drops the pending requests.
    """
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
    if batch_size is None:
        batch_size = min(client.model_info(model).max_batch_size, MAX_BATCH_SIZE)

    def run(batch: list[Frame]) -> list[ImageResult]:
        payloads = [encode_frame(f, jpeg_quality) for f in batch]  # cv2 frees the GIL
        # Only the JPEGs wait for the answer: a request in flight holds no decoded frame.
        batch.clear()
        return results_or_raise(client.iter_detect(payloads, model, options, batch_size=batch_size))

    pending: deque[Future[list[ImageResult]]] = deque()
    index = 0
    pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="frames")
    try:
        for batch in batched(frames, batch_size):  # decoded while the requests are out
            finished = pending.popleft().result() if len(pending) >= max_in_flight else []
            # The next request goes out before the caller gets the finished one's
            # results: the server stays busy while the caller works on them.
            pending.append(pool.submit(run, batch))
            for result in finished:
                yield FrameResult(index, result)
                index += 1
        while pending:
            for result in pending.popleft().result():
                yield FrameResult(index, result)
                index += 1
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)


def mot_rows(frame: FrameResult) -> list[str]:
    """One frame's tracked boxes as MOT Challenge rows, ``frame,id,x,y,w,h,score,label``:
    the frame counted from 1, the box's top-left corner and size in pixels; boxes without
    a track id are left out."""
    rows = []
    for d in frame.result.detections:
        if d.track_id < 0:
            continue
        x, y, w, h = d.box_xywh
        rows.append(f"{frame.index + 1},{d.track_id},{x:.1f},{y:.1f},{w:.1f},{h:.1f},"
                    f"{d.score:.3f},{d.label}")  # fmt: skip
    return rows


def frame_coco_results(
    frame: FrameResult, *, file_name: str, model: str, per_detector: bool = True
) -> list[dict]:
    """One frame's detections as COCO results dicts (``to_coco_results``) with
    ``frame_index`` (from 0) added and ``image_id`` = ``frame_index + 1`` (COCO ids
    start at 1); bbox ``[x, y, width, height]`` in frame pixels. With detect_all and
    ``per_detector``, each detector's own detections follow, ``model`` naming it."""
    entries = to_coco_results(
        frame.result,
        image_id=frame.index + 1,
        file_name=file_name,
        model=model,
        per_detector=per_detector,
    )
    for entry in entries:
        entry["frame_index"] = frame.index
    return entries


def clip_document(
    info: ClipInfo, model: str, frames: int, results: list[dict], *, output: str = ""
) -> dict:
    """The per-frame detections file of a clip: ``video`` (the source's name, size in
    pixels, fps), ``images`` (one per frame: ``id``, ``frame_index``, ``time_s``) and
    ``results`` (COCO results with ``frame_index``, as ``frame_coco_results`` makes)."""
    return {
        "video": {
            "file_name": info.path.name,
            "width": info.width,
            "height": info.height,
            "fps": info.fps,
            "frame_count": frames,
            "model": model,
            "annotated": output,
        },
        "images": [
            {"id": i + 1, "frame_index": i, "time_s": round(i / info.fps, 4)} for i in range(frames)
        ],
        "results": results,
    }


@dataclass
class ClipRun:
    """What ``annotate_clip`` did: frames written, their detections as COCO results
    with ``frame_index`` (``frame_coco_results``), each frame's request round trip in
    seconds, and the whole run's wall time (first frame read to last frame written)."""

    frames: int
    results: list[dict] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    # Tracked (``annotate_clip(..., track=True)``): MOT Challenge rows, one per tracked
    # box (``mot_rows``), the sequences used, and the frames at which a new sequence
    # started (the server forgot the last one): ``client.tracking.TrackRun``'s fields.
    mot_rows: list[str] = field(default_factory=list)
    sequences: list[int] = field(default_factory=list)
    restarts: list[int] = field(default_factory=list)

    def document(self, info: ClipInfo, model: str, output: str = "") -> dict:
        """The per-frame detections file (``clip_document``) of this run."""
        return clip_document(info, model, self.frames, self.results, output=output)


def annotate_clip(
    client: BatchClient,
    info: ClipInfo,
    model: str,
    out_path: str | Path,
    options: DetectOptions = DEFAULT_OPTIONS,
    *,
    max_frames: int = MAX_CLIP_FRAMES,
    batch_size: int | None = None,
    file_name: str | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
    track: bool = False,
) -> ClipRun:
    """Every frame of the clip ``info`` (``probe_clip``'s) through ``model`` with
    ``options`` (``detect_frames``): the server's annotated frames written to ``out_path`` as a VP8
    WebM at the clip's frame rate, the detections kept as COCO results named
    ``file_name`` (default: the clip's). ``on_frame`` is called with each frame's result
    as it is written (a progress bar). With ``track``, ``model`` is a tracking ensemble
    (``client.tracking``): each detection has its ``track_id``, and the run keeps MOT
    rows. On any error the frames' pending requests end with it; what was written to
    ``out_path`` is the caller's to remove."""
    name = file_name or info.path.name
    run = ClipRun(0)
    start = time.perf_counter()
    source = read_clip_frames(info, max_frames)
    results = (
        client.track_frames(source, model, options, run=run)  # type: ignore[attr-defined]
        if track
        else detect_frames(client, source, model, options, batch_size=batch_size)
    )
    with ClipWriter(out_path, info.fps) as writer, closing(results) as frames:
        for frame in frames:
            writer.write_jpeg(frame.result.annotated_jpeg)
            run.results += frame_coco_results(frame, file_name=name, model=model)
            if track:
                run.mot_rows += mot_rows(frame)
            run.latencies_s.append(frame.result.latency_s)
            if on_frame is not None:
                on_frame(frame)
    run.frames = writer.frames
    run.wall_s = time.perf_counter() - start
    return run


class ClipWriter:
    """Writes annotated frames (JPEG bytes) as a VP8 WebM clip at ``fps``; every frame
    is scaled to the first one's size."""

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        self.fps = fps
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None

    def write_jpeg(self, jpeg: bytes) -> None:
        frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            raise DetectorError(f"the server's annotated frame {self.frames} is not a JPEG")
        self.write(frame)

    def write(self, frame: np.ndarray) -> None:
        if self._writer is None:
            self._size = (frame.shape[1], frame.shape[0])
            fourcc = cv2.VideoWriter_fourcc(*CLIP_FOURCC)
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, self._size)
            if not self._writer.isOpened():
                raise OSError(f"cannot write a {CLIP_FOURCC} clip to {self.path}")
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> ClipWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
