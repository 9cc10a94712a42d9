"""The page's video-clip tab: a clip in, every frame through the chosen ensemble, the
annotated clip, its per-frame detections and its timings out.

The work is ``client.video``'s, as for the ``detect`` CLI: ``probe_clip`` refuses what
is not a readable video or is over ``MAX_CLIP_FRAMES``; ``annotate_clip`` decodes frames
one at a time, sends them in batches of the ensemble's ``max_batch_size`` with a bounded
number of requests in flight, and writes the server's annotated frames as VP8 WebM,
which the browser plays. Memory per clip is bounded by the batches
in flight, not by the clip's length (the per-frame detections are kept: a few kB per
frame).

With "Track objects" on, the clip goes through the chosen model's tracking ensemble
(``track_<name>``, ``contract.tracking_name``) instead, one frame per request over a
gRPC stream (``client.tracking``): the annotated clip shows each object's id and trail,
the message counts the distinct objects per label, and the downloads add the MOT
Challenge rows (``frame,id,x,y,w,h,score,label``), as ``detect clip --track`` writes them.

Files, and how they stay bounded:

- The uploaded clip (in Gradio's upload folder) is deleted when its run ends, whatever
  the outcome; the input is then cleared, so the page never offers a clip that is gone.
- A result's files (the annotated clip, the per-frame JSON and, tracked, the MOT rows)
  go in a result folder of their own, ``clip-<hex>`` (``ui.results.ResultFolders``, the
  page's one owner of result folders, in Gradio's cache): one per session (a session's
  next result replaces its last), deleted when its page is closed (``Blocks.unload``),
  and at most ``ui.results.MAX_FOLDERS[CLIP]`` whatever happens (API clients never
  close a page).
"""

from __future__ import annotations

import bisect
import contextlib
import html
import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from client import (
    ClipTooLong,
    DetectOptions,
    DetectorClient,
    DetectorError,
    FrameResult,
    ModelInfo,
    ModelNotReady,
    ServerBusy,
    VideoNotReadable,
)
from client.errors import first_line
from client.statistics import STEP_PHASES
from client.tracking import distinct_objects
from client.video import (
    CLIP_SUFFIX,
    MAX_CLIP_FRAMES,
    VIDEO_EXTENSIONS,
    annotate_clip,
    probe_clip,
)
from ensemble import contract
from ui import timings, waterfall
from ui.catalog import ServerModels
from ui.common import InputError, Page, objects_text, slug, table_value, threshold
from ui.results import CLIP, ResultFolders, file_data, file_value

log = logging.getLogger(__name__)

CLIP_CONCURRENCY = 1  # clips processed at once; one clip keeps the server's batcher busy
CLIP_TIMEOUT_S = 120.0  # per request of frames: a cold CPU server takes a few seconds
# Annotated frames are for a screen: at most this many pixels on their longest side
# (the detections keep the clip's own pixels).
CLIP_MAX_SIDE = 1280
MOT_SUFFIX = ".mot.txt"  # a tracked clip's MOT rows, named as ``detect clip --track`` names them
STATS_RETRIES = 5  # waits of 20 ms for a step's counters that lag behind the last reply

TIMING_HEADERS = ["step", "ms per frame"]
ROUND_TRIP_REQUEST = "round trip per request (client, mean)"
ROUND_TRIP_FRAME = "round trip per frame (request's round trip / its frames)"
WALL_FRAME = "wall time per frame (1 / frames per second)"


# --- pure helpers -----------------------------------------------------------------


@dataclass
class ClipOutcome:
    """Everything the tab shows after one clip."""

    message: str = ""
    clip: Path | None = None  # the annotated clip, VP8 WebM
    # The clip, the per-frame JSON and, when tracked, the MOT rows.
    files: list[Path] = field(default_factory=list)
    timings: list[list] = field(default_factory=list)  # rows [step, ms per frame]
    waterfall: str = ""  # inline SVG of the mean frame's steps; "" when unknown
    latency_chart: str = ""  # inline SVG of each frame's round trip

    @property
    def failed(self) -> bool:
        return self.clip is None


def request_sizes(frames: int, batch_size: int) -> list[int]:
    """Frames per request when ``frames`` are sent ``batch_size`` at a time, in order
    (as ``client.video.detect_frames`` batches them)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    full, rest = divmod(frames, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def request_latencies(latencies_s: Sequence[float], batch_size: int) -> list[float]:
    """One round trip per request, in seconds: every frame of a request carries that
    request's round trip, so the first frame of each batch gives it."""
    return [latencies_s[i] for i in range(0, len(latencies_s), batch_size)]


def clip_timing_rows(
    latencies_s: Sequence[float],
    wall_s: float,
    batch_size: int,
    ensemble: str,
    steps: Sequence[str] = (),
    before: timings.Snapshot | None = None,
    after: timings.Snapshot | None = None,
) -> list[list]:
    """Rows ``[step, ms per frame]`` of the clip's timings table, in ms rounded to 0.1.

    ``latencies_s`` is each frame's request round trip in seconds (frames in order,
    ``batch_size`` per request), ``wall_s`` the whole run's wall time. First the mean
    request's round trip (a whole request, not per frame), then that shared over its
    frames, the wall time per frame; then (given both snapshots) the server's time per
    frame: the ensemble's and each step's mean time per request between the snapshots,
    divided by the mean frames per request. Requests in flight at once overlap, so the
    round trip per frame can exceed the wall time per frame.
    """
    frames = len(latencies_s)
    if frames == 0:
        return []
    sizes = request_sizes(frames, batch_size)
    per_request = request_latencies(latencies_s, batch_size)
    frames_per_request = frames / len(sizes)
    return [
        [ROUND_TRIP_REQUEST, round(1000 * sum(per_request) / len(per_request), 1)],
        [
            ROUND_TRIP_FRAME,
            round(1000 * sum(per_request) / frames, 1),  # each frame's share, averaged
        ],
        [WALL_FRAME, round(1000 * wall_s / frames, 1)],
        *server_rows(ensemble, steps, before, after, frames_per_request),
    ]


def tracked_timing_rows(
    frames: int,
    wall_s: float,
    ensemble: str,
    steps: Sequence[str] = (),
    before: timings.Snapshot | None = None,
    after: timings.Snapshot | None = None,
) -> list[list]:
    """Rows ``[step, ms per frame]`` of a tracked clip's timings table: the wall time per
    frame, then the server's time per frame (``server_rows``; one frame per request).
    The client does not time a tracked frame's round trip: no round-trip rows."""
    if frames == 0:
        return []
    return [
        [WALL_FRAME, round(1000 * wall_s / frames, 1)],
        *server_rows(ensemble, steps, before, after, 1.0),
    ]


def server_rows(
    ensemble: str,
    steps: Sequence[str],
    before: timings.Snapshot | None,
    after: timings.Snapshot | None,
    frames_per_request: float,
) -> list[list]:
    """Rows ``[step, ms per frame]`` of the server's time (none without both snapshots):
    the ensemble's and each step's mean time per request between the snapshots, divided
    by the mean frames per request, in ms rounded to 0.1 (None for no run)."""
    if before is None or after is None:
        return []

    def per_frame(model: str, phases: Sequence[str]) -> float | None:
        value = timings.mean_ms(before, after, model, phases)
        return None if value is None else round(value / frames_per_request, 1)

    return [
        [f"server total ({ensemble})", per_frame(ensemble, timings.TOTAL_PHASES)],
        *(
            [step.label, per_frame(step.model, STEP_PHASES)]
            for step in timings.ensemble_steps(steps)
        ),
    ]


def frame_durations(
    before: timings.Snapshot | None,
    after: timings.Snapshot | None,
    steps: Sequence[str],
    frames_per_request: float,
) -> dict[str, float | None]:
    """Each step's mean ms per request (``timings.step_durations``) shared over the
    mean request's frames: the mean frame's step durations for ``waterfall.layout``."""
    return {
        model: None if ms is None else ms / frames_per_request
        for model, ms in timings.step_durations(before, after, steps).items()
    }


def label_frames(results: Sequence[Mapping], model: str) -> Counter:
    """How many frames each label was found in, from COCO results with ``frame_index``
    and ``category_name``; only the entries of ``model`` (for detect_all the fused
    result, not each detector's own)."""
    seen = {(r["frame_index"], r["category_name"]) for r in results if r.get("model") == model}
    return Counter(label for _, label in seen)


def distinct_tracks(mot_rows: Sequence[str], restarts: Sequence[int] = ()) -> dict[str, int]:
    """Distinct objects per label among a tracked clip's MOT rows (``frame,id,...,label``,
    frames counted from 1), most first. A track id names one object within one
    sequence, and a sequence started again (at the frames ``restarts``, counted from 0,
    ``ClipRun.restarts``) numbers its tracks from 1 again: each sequence's ids are
    counted apart."""
    by_sequence: dict[int, list[str]] = {}
    for row in mot_rows:
        frame_index = int(row.split(",", 1)[0]) - 1
        by_sequence.setdefault(bisect.bisect_right(restarts, frame_index), []).append(row)
    total: Counter = Counter()
    for rows in by_sequence.values():
        total.update(distinct_objects(rows))
    return dict(sorted(total.items(), key=lambda kv: (-kv[1], kv[0])))


def _tick(span: float, most: int = 6) -> float:
    """The smallest round interval (1, 2 or 5 times a power of ten) giving at most
    ``most`` intervals over ``span``."""
    power = 10 ** math.floor(math.log10(max(span, 1e-9) / most))
    while True:
        for factor in (1, 2, 5):
            if span / (factor * power) <= most:
                return factor * power
        power *= 10


# Plot area of the latency chart, in SVG user units.
CHART_W, CHART_H = 560, 150
CHART_LEFT, CHART_TOP, CHART_BOTTOM = 52, 24, 40


def latency_svg(latencies_ms: Sequence[float], title: str = "") -> str:
    """Each frame's request round trip (ms) over the clip as one ``<svg>``: a line
    (``polyline.latency-line``, one point per frame, frame index 0.. left to right,
    ms up from 0) with its mean as a dashed line, axes with ticks, and labels
    "frame" and "round trip (ms)". ``data-frames`` on the ``<svg>`` is the count."""
    esc = html.escape
    n = len(latencies_ms)
    width = CHART_LEFT + CHART_W + 20
    height = CHART_TOP + CHART_H + CHART_BOTTOM
    top_ms = max(max(latencies_ms, default=0.0), 1.0)
    y_tick = _tick(top_ms)
    top_ms = math.ceil(top_ms / y_tick) * y_tick
    x_span = max(n - 1, 1)

    def x(i: float) -> float:
        return CHART_LEFT + CHART_W * i / x_span

    def y(ms: float) -> float:
        return CHART_TOP + CHART_H * (1 - ms / top_ms)

    mean = sum(latencies_ms) / n if n else 0.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="latency-chart" data-frames="{n}" '
        f'width="100%" style="max-width:{width}px" viewBox="0 0 {width} {height}" '
        f'role="img" font-family="sans-serif" font-size="11">',
        f"<title>{esc(title or 'Round trip per frame (ms)')}</title>",
        f'<text x="{CHART_LEFT}" y="14" fill="#444">{esc(title)}</text>',
    ]
    # Axes, ticks and grid.
    base = CHART_TOP + CHART_H
    parts.append(
        f'<line x1="{CHART_LEFT}" y1="{CHART_TOP}" x2="{CHART_LEFT}" y2="{base}" stroke="#888"/>'
        f'<line x1="{CHART_LEFT}" y1="{base}" x2="{CHART_LEFT + CHART_W}" y2="{base}" '
        'stroke="#888"/>'
    )
    k = 0
    while k * y_tick <= top_ms + 1e-9:
        ty = y(k * y_tick)
        parts.append(
            f'<line x1="{CHART_LEFT - 4}" y1="{ty:.1f}" x2="{CHART_LEFT + CHART_W}" '
            f'y2="{ty:.1f}" stroke="#eee"/>'
            f'<text x="{CHART_LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end">{k * y_tick:g}</text>'
        )
        k += 1
    x_tick = max(_tick(x_span), 1)
    k = 0
    while k * x_tick <= x_span + 1e-9 and n:
        tx = x(k * x_tick)
        parts.append(
            f'<line x1="{tx:.1f}" y1="{base}" x2="{tx:.1f}" y2="{base + 4}" stroke="#888"/>'
            f'<text x="{tx:.1f}" y="{base + 15}" text-anchor="middle">{k * x_tick:g}</text>'
        )
        k += 1
    parts.append(
        f'<text class="latency-x-label" x="{CHART_LEFT + CHART_W / 2}" y="{base + 32}" '
        'text-anchor="middle">frame</text>'
        f'<text class="latency-y-label" x="12" y="{CHART_TOP + CHART_H / 2}" '
        f'text-anchor="middle" transform="rotate(-90 12 {CHART_TOP + CHART_H / 2})">'
        "round trip (ms)</text>"
    )
    if n:
        points = " ".join(f"{x(i):.1f},{y(ms):.1f}" for i, ms in enumerate(latencies_ms))
        if n == 1:  # a line needs two points: draw the one frame across
            points = f"{x(0):.1f},{y(latencies_ms[0]):.1f} {x(1):.1f},{y(latencies_ms[0]):.1f}"
        parts.append(
            f'<polyline class="latency-line" points="{points}" fill="none" '
            'stroke="#4e79a7" stroke-width="1.5"/>'
            f'<line class="latency-mean" x1="{CHART_LEFT}" y1="{y(mean):.1f}" '
            f'x2="{CHART_LEFT + CHART_W}" y2="{y(mean):.1f}" stroke="#d00" '
            'stroke-dasharray="4 3"/>'
            f'<text x="{CHART_LEFT + CHART_W}" y="{y(mean) - 4:.1f}" text-anchor="end" '
            f'fill="#d00">mean {mean:.1f} ms</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def upload_path(clip: Any) -> tuple[Path, str] | None:
    """``(path, name shown)`` of a clip input: the path Gradio gives (a ``FileData``
    dict with ``path`` and ``orig_name`` when preprocessing is off, or a plain path);
    None when nothing was given."""
    if clip is None or clip == "":
        return None
    if isinstance(clip, Mapping):
        if "video" in clip and isinstance(clip["video"], Mapping):  # older Video payloads
            clip = clip["video"]
        path = clip.get("path")
        if not path:
            return None
        return Path(path), str(clip.get("orig_name") or Path(path).name)
    path = Path(str(clip))
    return path, path.name


def remove_upload(path: Path, upload_root: Path) -> bool:
    """Delete an uploaded file and its folder when empty, only inside ``upload_root``
    (Gradio's upload folder: a path a caller names elsewhere is never touched).
    Returns whether the file was removed."""
    try:
        resolved = path.resolve()
        root = upload_root.resolve()
    except OSError:
        return False
    if root not in resolved.parents:
        return False
    try:
        resolved.unlink()
        removed = True
    except OSError:  # already gone: its folder may still be left
        removed = False
    parent = resolved.parent
    if parent != root:
        with contextlib.suppress(OSError):  # not empty: another upload is in it
            parent.rmdir()  # Gradio puts each upload in a folder of its own
    return removed


# --- one clip ---------------------------------------------------------------------

Progress = Callable[[int, int | None], None]


class ClipDetector:
    """Runs one clip for the page and turns every failure into a message."""

    def __init__(
        self,
        client: DetectorClient,
        models: ServerModels,
        folders: ResultFolders,
        upload_root: Path | None = None,
        stats_retries: int = STATS_RETRIES,
        max_frames: int = MAX_CLIP_FRAMES,
    ):
        self.client = client
        self.models = models
        self.folders = folders  # a clip's result folder is made here, one per session
        self.upload_root = upload_root  # uploads under it are deleted after their run
        self.stats_retries = stats_retries
        self.max_frames = max_frames

    def __call__(
        self,
        clip: Any,
        model: str | None,
        score_threshold: Any,
        iou_threshold: Any,
        session: str = "",
        progress: Progress | None = None,
        track: bool = False,
    ) -> ClipOutcome:
        """One clip through ``model`` (a detection ensemble) at the thresholds, or, with
        ``track``, through its tracking ensemble; every failure is the outcome's message."""
        given = upload_path(clip)
        name = given[1] if given else "clip"
        try:
            if given is None:
                raise InputError("no clip given: upload a video (MP4, WebM or MOV)")
            path = given[0]
            score = threshold(score_threshold, "score threshold")
            iou = threshold(iou_threshold, "IoU threshold")
            info = self.models.info(model)
            if track:
                info = self._tracking_info(info.name)
            if not path.exists() and self._is_upload(path):
                raise InputError(
                    f"{name} is no longer here (an uploaded clip is deleted after its run): "
                    "upload it again"
                )
            clip_info = probe_clip(path, self.max_frames)  # before any request
            # Kept as the session's result once written; deleted when the run fails.
            with self.folders.writing(CLIP, session) as folder:
                return self._run(clip_info, name, info, score, iou, folder, progress, track)
        except InputError as e:
            return ClipOutcome(message=f"**Error:** {e}")
        except (VideoNotReadable, ClipTooLong) as e:
            log.info("clip %s refused: %s", name, e)
            return ClipOutcome(message=f"**Error:** {clip_error(e, name)}")
        except ServerBusy as e:
            log.info("clip %s: %s", name, e)
            return ClipOutcome(message=f"**Error:** {e}. Try the clip again in a moment.")
        except DetectorError as e:
            log.info("clip %s: %s", name, e)
            return ClipOutcome(message=f"**Error:** {e}")
        except Exception as e:  # the page gets one line; the log gets the traceback
            log.exception("clip detection failed")
            return ClipOutcome(
                message=f"**Error:** unexpected {type(e).__name__}: {first_line(str(e))}"
            )
        finally:
            if given is not None and self.upload_root is not None:
                remove_upload(given[0], self.upload_root)

    def _tracking_info(self, model: str) -> ModelInfo:
        """The config of ``model``'s tracking ensemble; ``InputError`` naming it when the
        server has none."""
        tracking = contract.tracking_name(model)
        try:
            return self.client.model_info(tracking)
        except ModelNotReady as e:
            raise InputError(
                f"{model} cannot track here: this server has no {tracking} "
                f"({first_line(e.reason) or 'not ready'}); turn Track objects off"
            ) from None

    def _is_upload(self, path: Path) -> bool:
        if self.upload_root is None:
            return False
        return self.upload_root.resolve() in path.resolve().parents

    def _run(
        self,
        clip_info: Any,
        name: str,
        info: ModelInfo,
        score: float,
        iou: float,
        folder: Path,
        progress: Progress | None,
        tracked: bool,
    ) -> ClipOutcome:
        """The clip through ``info``'s ensemble (a tracking one when ``tracked``), its
        files written in ``folder``."""
        model = info.name
        # A tracked clip goes one frame per request, in order (client.tracking).
        batch_size = 1 if tracked else max(1, min(info.max_batch_size, contract.MAX_BATCH_SIZE))
        total = clip_info.frame_count or None
        stem = slug(Path(name).stem, "clip")
        annotated = folder / f"{stem}-{slug(model)}{CLIP_SUFFIX}"
        if progress:
            progress(0, total)

        def on_frame(frame: FrameResult) -> None:
            done = frame.index + 1
            if progress and (done % batch_size == 0 or done == total):
                progress(done, total)

        before = timings.snapshot(self.client)
        run = annotate_clip(
            self.client,
            clip_info,
            model,
            annotated,
            DetectOptions(
                score_threshold=score,
                iou_threshold=iou,
                annotated_max_side=CLIP_MAX_SIDE,
                timeout=CLIP_TIMEOUT_S,
            ),
            max_frames=self.max_frames,
            batch_size=batch_size,
            file_name=name,
            on_frame=on_frame,
            track=tracked,
        )
        after = timings.settled(self.client, before, model, info.steps, self.stats_retries)
        latencies, wall_s, results = run.latencies_s, run.wall_s, run.results
        count = len(latencies)
        document = run.document(clip_info, model, output=annotated.name)
        detections = folder / f"{stem}-{slug(model)}-frames.json"
        detections.write_text(json.dumps(document, indent=1))
        files = [annotated, detections]
        if tracked:
            mot = folder / f"{stem}-{slug(model)}{MOT_SUFFIX}"
            mot.write_text("".join(row + "\n" for row in run.mot_rows))
            files.append(mot)

        frames_per_request = count / len(request_sizes(count, batch_size))
        if tracked:
            rows = tracked_timing_rows(count, wall_s, model, info.steps, before, after)
        else:
            rows = clip_timing_rows(latencies, wall_s, batch_size, model, info.steps, before, after)
        picture = ""
        if before is not None and after is not None and info.graph:
            durations = frame_durations(before, after, info.steps, frames_per_request)
            bars = waterfall.layout(info.graph, durations)
            round_trip = dict((r[0], r[1]) for r in rows).get(ROUND_TRIP_FRAME)
            shared = (
                "one frame per request"
                if tracked
                else f"each request's time shared over its {frames_per_request:.1f} frames "
                "on average"
            )
            title = f"Server steps of {model} for the mean frame ({shared})"
            picture = f'<p class="clip-waterfall-title">{html.escape(title)}</p>' + waterfall.svg(
                bars, round_trip, [d.name for d in info.detectors], title
            )
        if tracked:
            chart = ""  # the client does not time a tracked frame's round trip
            objects = distinct_tracks(run.mot_rows, run.restarts)
            message = tracked_clip_message(
                clip_info, name, model, count, wall_s, objects, run.restarts, after is not None
            )
        else:
            chart = latency_svg(
                [1000 * t for t in latencies],
                f"Round trip of each frame's request over the clip ({model}, ms)",
            )
            message = clip_message(
                clip_info, name, model, count, wall_s, batch_size, results, after is not None
            )
        log.info("clip %s %s: %s", model, name, message)
        return ClipOutcome(message, annotated, files, rows, picture, chart)


def clip_error(error: VideoNotReadable | ClipTooLong, name: str) -> str:
    """One line for a refused clip, naming it by the name it was uploaded as (not the
    server-side temporary path)."""
    if isinstance(error, ClipTooLong):
        more = "more than " if error.frames > error.limit else ""
        return (
            f"{name} is too long: it has {more}{error.frames} frames, and this page takes "
            f"clips of at most {error.limit} frames; cut it shorter"
        )
    return f"{name} is not a readable video: {error.reason}"


def clip_message(
    clip_info: Any,
    name: str,
    model: str,
    frames: int,
    wall_s: float,
    batch_size: int,
    results: Sequence[Mapping],
    stats: bool = True,
) -> str:
    """The one-paragraph summary: frames, throughput, requests, what was found."""
    fps = frames / wall_s if wall_s > 0 else 0.0
    requests = len(request_sizes(frames, batch_size))
    found = label_frames(results, model)
    seen = ", ".join(f"{label} in {n}" for label, n in found.most_common(6)) or "nothing"
    text = (
        f"{name}: {frames} frames of {clip_info.width}×{clip_info.height} through {model} "
        f"at **{fps:.1f} frames/s** ({wall_s:.1f} s, {requests} requests of up to "
        f"{batch_size} frames). Frames with each label: {seen}."
    )
    if not stats:
        text += " Server step times unavailable."
    return text


def tracked_clip_message(
    clip_info: Any,
    name: str,
    model: str,
    frames: int,
    wall_s: float,
    objects: Mapping[str, int],
    restarts: Sequence[int] = (),
    stats: bool = True,
) -> str:
    """The one-paragraph summary of a tracked clip: frames, throughput, the distinct
    objects per label (``distinct_tracks``), and where the server forgot the sequence
    (``restarts``, frames from 0: the ids start again there)."""
    fps = frames / wall_s if wall_s > 0 else 0.0
    text = (
        f"{name}: {frames} frames of {clip_info.width}×{clip_info.height} tracked through "
        f"{model} at **{fps:.1f} frames/s** ({wall_s:.1f} s, one frame per request). "
        f"Distinct objects: **{objects_text(objects)}**."
    )
    if restarts:
        at = ", ".join(str(frame) for frame in restarts)
        text += (
            f" The server lost the sequence; tracking started again, with new ids, at frame {at}."
        )
    if not stats:
        text += " Server step times unavailable."
    return text


# --- the tab ----------------------------------------------------------------------


def intro_text(max_file_size: str | None = None) -> str:
    """The tab's first lines: what to upload, the limits, what happens to the clip."""
    size = f" and {max_file_size.upper().replace('MB', ' MB')}" if max_file_size else ""
    return (
        f"Upload a clip (MP4, WebM or MOV; at most {MAX_CLIP_FRAMES} frames{size}). "
        "Every frame goes through the chosen model, in batches of its largest batch "
        "size; the annotated clip plays here, with the detections of every frame to "
        "download. With Track objects on, each object keeps an id from frame to frame, "
        "and the page counts the distinct objects. The uploaded clip is deleted when its "
        "run ends."
    )


API_DESCRIPTION = (
    "Detect objects in every frame of a video clip. clip: a video file (MP4, WebM, MOV; "
    f"at most {MAX_CLIP_FRAMES} frames). model: one of the server's ensembles, "
    "detect_all or detect_<detector name>. Thresholds in [0, 1]. track (default false): "
    "follow the objects through the model's tracking ensemble, track_<detector name> or "
    "track_all. Returns the annotated clip (VP8 WebM; tracked: with ids), the downloads "
    "(that clip, the per-frame detections as JSON: COCO results with frame_index, and, "
    "tracked, the MOT rows frame,id,x,y,w,h,score,label), a message (frames/s and, "
    "tracked, the distinct objects per label; or the error), the timings table (ms per "
    "frame), and the waterfall and the latency chart (none when tracked) as inline SVG."
)


def build_tab(page: Page) -> ClipDetector:
    """The tab's components and events, inside the caller's ``gr.Tab``; its results go
    in ``page.folders`` (the page deletes a closed page's). Returns the tab's
    ``ClipDetector``."""
    upload_root = Path(gr.utils.get_upload_folder())
    detector = ClipDetector(page.client, page.models, page.folders, upload_root=upload_root)
    gr.Markdown(intro_text(page.max_file_size), elem_id="clip-intro")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2):
            # A file input, not a gr.Video: the browser cannot preview many clips the
            # server reads well (MPEG-4 Part 2, HEVC in MOV), and a gr.Video then shows
            # "Video not playable" for a good clip. The annotated clip plays below.
            clip = gr.File(
                label="Clip to detect in (MP4, WebM, MOV, MKV, AVI)",
                file_count="single",
                file_types=["video", *sorted(VIDEO_EXTENSIONS)],
                type="filepath",
                height=170,
                elem_id="input-clip",
            )
            track_switch = gr.Checkbox(
                False,
                label="Track objects (an id per object over the frames, the distinct "
                "objects counted)",
                elem_id="clip-track",
            )
            button = gr.Button("Detect in every frame", variant="primary", elem_id="clip-button")
            message = gr.Markdown(elem_id="clip-message")
            downloads = gr.File(
                label=(
                    "Downloads: the annotated clip, the per-frame detections (JSON) and, "
                    "tracked, the MOT rows"
                ),
                file_count="multiple",
                interactive=False,
                elem_id="clip-downloads",
            )
        with gr.Column(scale=3):
            annotated = gr.Video(
                label="Annotated by the server",
                interactive=False,
                loop=True,
                elem_id="annotated-clip",
            )
            latency = gr.HTML(label="Round trip per frame", elem_id="clip-latency", padding=False)
            steps = gr.HTML(
                label="Steps of the mean frame", elem_id="clip-waterfall", padding=False
            )
            table = gr.Dataframe(
                headers=TIMING_HEADERS,
                datatype=["str", "number"],
                interactive=False,
                max_height=600,
                label=(
                    "Time in ms per frame (server steps: mean per request while the clip "
                    "ran, other users' requests included, shared over its frames)"
                ),
                elem_id="clip-timings",
            )

    def detect_clip(
        clip: Any,
        model: str,
        score_threshold: float,
        iou_threshold: float,
        track: bool,
        request: gr.Request,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's way to ask for it)
    ) -> tuple:
        def report(done: int, total: int | None) -> None:
            progress((done, total), desc="frames detected", unit="frames")

        session = getattr(request, "session_hash", "") or ""
        outcome = detector(
            clip, model, score_threshold, iou_threshold, session, report, track=bool(track)
        )
        # postprocess=False: these are the components' wire values.
        return (
            file_data(outcome.clip) if outcome.clip else None,
            file_value(outcome.files) or None,
            outcome.message,
            table_value(TIMING_HEADERS, outcome.timings),
            outcome.waterfall,
            outcome.latency_chart,
        )

    button.click(
        detect_clip,
        inputs=[clip, page.model, page.score, page.iou, track_switch],
        outputs=[annotated, downloads, message, table, steps, latency],
        api_name="detect_clip",
        api_description=API_DESCRIPTION,
        concurrency_id="clip",
        concurrency_limit=CLIP_CONCURRENCY,
        show_progress_on=[annotated, message],  # one bar where the clip will play
        preprocess=False,
        postprocess=False,
    ).then(
        # The upload is gone once its run has ended: clear the input that showed it.
        lambda: None,
        outputs=clip,
        queue=False,
        show_progress="hidden",
        api_visibility="private",
    )
    return detector


__all__ = [
    "ClipDetector",
    "ClipOutcome",
    "build_tab",
    "clip_error",
    "clip_timing_rows",
    "distinct_tracks",
    "frame_durations",
    "label_frames",
    "latency_svg",
    "remove_upload",
    "request_latencies",
    "request_sizes",
    "server_rows",
    "tracked_clip_message",
    "tracked_timing_rows",
    "upload_path",
]
