"""The web demo: one Gradio page over the project's gRPC client.

The page never loads a model: every request goes through one shared ``DetectorClient``
to a Triton server (any server: ``python -m ui --url host:8001``), and everything shown
comes from there: which models there are to choose (the server's ``detect_*``
ensembles) and what to call them (their configs' titles and detectors), boxes in
original-image pixels, the annotated JPEGs drawn by the server, and the server's time
per ensemble step (the steps read from the ensemble's config) from Triton's statistics
API. Nothing of the server-side package is imported here beyond the public contract,
so a server started on any models file is shown as it is. A page built while the
server is down comes up anyway: the status line says so, and the model choices fill in
when the server answers.

How it stays flat under many requests:

- The detect event runs with ``preprocess=False`` and ``postprocess=False``. Uploaded
  files go to the server byte for byte (the server's own validation names a bad file,
  Gradio never decodes it), and the server's JPEGs go to the browser as ``data:`` URLs
  in the gallery's value. The one set of files a result writes is its downloads (the
  JPEGs again, and a COCO JSON), in a result folder of its own in Gradio's cache
  (``ui.results``).
- What Gradio does write, the uploads themselves, lands in ``GRADIO_TEMP_DIR``; the
  Blocks' ``delete_cache`` sweep removes uploads (and downloads) older than
  ``UPLOAD_MAX_AGE_S``
  (``python -m ui`` points that variable at a directory of its own and deletes it at
  exit).
- Gradio keeps each session's last values in memory; ``LAUNCH_OPTIONS`` caps how many
  sessions it keeps. Nothing in this module grows per request.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import json
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.components.gallery import GalleryData, GalleryImage
from gradio.data_classes import ImageData

from client import (
    DetectorClient,
    DetectorError,
    ImageResult,
    InvalidImage,
    ModelInfo,
    RequestTooLarge,
    ServerBusy,
    to_coco_results,
)
from client.errors import first_line
from client.results import detection_ensembles
from ensemble import contract
from ui import clips, live, timings, waterfall
from ui.catalog import (
    Catalog,
    ServerModels,
    detector_caption,
    detector_captions,
    model_label,
    ranked,
)
from ui.common import InputError, slug, table_value, threshold
from ui.results import PHOTO, ResultFolders, file_value

log = logging.getLogger(__name__)

FUSED_CAPTION = "Fused (WBF)"
DETECTION_HEADERS = ["model", "label", "score", "x1", "y1", "x2", "y2"]
TIMING_HEADERS = ["step", "ms"]

# scikit-image's bundled photos offered as one-click examples, when it is installed.
EXAMPLE_PHOTOS = ("astronaut", "coffee", "horse", "motorcycle_left", "chelsea")

# --- serving limits -------------------------------------------------------------

CONCURRENCY = 4  # detections running at once; the rest wait in Gradio's queue
QUEUE_SIZE = 64  # waiting requests beyond this are refused with "queue full"
INFER_TIMEOUT_S = 120.0  # per request: a cold CPU server takes a few seconds
# The annotated images are for a screen: at most this many pixels on their longest side.
# A 24-megapixel photo is then decoded at 1/2, and drawn and encoded at an eighth of its
# pixels; the detections table keeps the photo's own pixels.
DISPLAY_MAX_SIDE = 2048
STATUS_EVERY_S = 5.0  # the status line refreshes this often on every open page
STATUS_TTL_S = 2.0  # ...but asks the server at most this often for all pages together
UPLOAD_MAX_AGE_S = 600  # uploads older than this are deleted (a re-run needs a re-upload)
CACHE_SWEEP = (60, UPLOAD_MAX_AGE_S)  # gr.Blocks(delete_cache=(every s, older than s))
LAUNCH_OPTIONS: dict[str, Any] = {
    # Gradio keeps every session's last outputs (here the annotated JPEGs) in memory,
    # 10000 sessions by default; the oldest beyond this many are dropped. This app's
    # only per-session state is the list of model choices a page shows; a dropped
    # session's is rebuilt by its next status refresh, so nothing breaks.
    "state_session_capacity": 200,
    "max_file_size": "50mb",
}


# --- pure helpers ---------------------------------------------------------------


def example_photos() -> list[Path]:
    """Paths of scikit-image's example photos; empty without scikit-image.

    Found through the package's location only: nothing of scikit-image is imported.
    """
    found = importlib.util.find_spec("skimage")
    if found is None or not found.submodule_search_locations:
        return []
    data = Path(next(iter(found.submodule_search_locations))) / "data"
    return [p for name in EXAMPLE_PHOTOS if (p := data / f"{name}.png").is_file()]


def short_summary(result: ImageResult, most: int = 5) -> str:
    """The ``most`` best detections as "person 0.92, cup 0.41", then "+N more"."""
    best = sorted(result.detections, key=lambda d: d.score, reverse=True)
    text = ", ".join(f"{d.label} {d.score:.2f}" for d in best[:most]) or "nothing found"
    return text + (f" (+{len(best) - most} more)" if len(best) > most else "")


def result_views(
    result: ImageResult, info: ModelInfo, captions: Mapping[str, str] | None = None
) -> list[tuple[str, ImageResult]]:
    """``(caption, result)`` per image to show: for detect_all the fused result first,
    then each fused detector's own (``result.per_detector``) in the order of the
    ensemble's config; for one detector its result alone. ``captions`` maps detector
    names to captions (default: ``detector_captions`` of the ensemble's detectors)."""
    if captions is None:
        captions = detector_captions(info.detectors)
    if info.per_detector_outputs:
        return [(FUSED_CAPTION, result)] + [
            (captions.get(d.name) or detector_caption(d), result.per_detector[d.name])
            for d in info.per_detector_outputs
            if d.name in result.per_detector
        ]
    return [(model_label(info, captions), result)]


def detection_rows(views: list[tuple[str, ImageResult]]) -> list[list]:
    """Rows ``[model, label, score, x1, y1, x2, y2]``: boxes in original-image pixels
    (x right, y down), rounded to 0.1 px; scores to 3 decimals; highest score first
    within each model."""
    rows = []
    for caption, result in views:
        for d in sorted(result.detections, key=lambda d: d.score, reverse=True):
            box = [round(float(v), 1) for v in (d.x1, d.y1, d.x2, d.y2)]
            rows.append([caption, d.label, round(float(d.score), 3), *box])
    return rows


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def gallery_value(views: list[tuple[str, ImageResult]]) -> list[dict]:
    """The gallery's wire value: the server's JPEGs inline, so no file is written."""
    items = [
        GalleryImage(
            image=ImageData(
                url=data_url(result.annotated_jpeg),
                mime_type="image/jpeg",
                size=len(result.annotated_jpeg),
                orig_name=f"{slug(caption)}.jpg",
            ),
            caption=caption,
        )
        for caption, result in views
    ]
    return GalleryData(root=items).model_dump()


def status_text(
    ready: Mapping[str, bool] | None, url: str, error: str = "", order: Sequence[str] = ()
) -> str:
    """The status line: whether the server answers and which of its detection
    ensembles are ready (``ready`` is ``DetectorClient.ready_models()``), those in
    ``order`` (the model choice's) first."""
    if ready is None:
        return f"**Server: down** ({error})"
    names = ranked(detection_ensembles(ready), order)
    up = [name for name in names if ready[name]]
    down = [name for name in names if not ready[name]]
    line = f"**Server: up** · ready: {', '.join(up) or 'none yet'}"
    if down:
        line += f" · not ready: {', '.join(down)}"
    return f"{line} · Triton gRPC {url}"


def choices_update(
    catalog: Catalog, shown: Sequence[Sequence[str]] | None, chosen: str | None
) -> tuple[list[tuple[str, str]], str | None] | None:
    """What a page's model choice should become: None while it already shows the
    catalog's choices, else ``(choices, value)``, keeping the chosen ensemble when it is
    still served and falling back to the catalog's default."""
    choices = catalog.choices()
    if [tuple(c) for c in shown or ()] == choices:
        return None
    values = [value for _, value in choices]
    return choices, chosen if chosen in values else catalog.default


@dataclass
class Upload:
    data: bytes
    name: str  # the file's own name, for messages


def read_upload(value: Any) -> Upload | None:
    """The bytes of an image or file input's raw value (the event skips preprocessing).

    ``value`` is Gradio's file payload, ``{"path", "orig_name", "url", ...}``, with
    ``path`` inside Gradio's upload folder (Gradio checks that before calling us), a
    ``data:`` URL in ``url``, or a plain path when called from Python. None when empty.
    """
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        path, name, url = str(value), Path(value).name, ""
    else:
        path = value.get("path") or ""
        url = value.get("url") or ""
        name = value.get("orig_name") or (Path(path).name if path else "image")
    if url.startswith("data:"):
        try:
            return Upload(base64.b64decode(url.partition(",")[2], validate=True), name)
        except (binascii.Error, ValueError):
            raise InputError(f"cannot read {name}: not base64 data") from None
    if not path:
        return None
    try:
        return Upload(Path(path).read_bytes(), name)
    except FileNotFoundError:
        raise InputError(
            f"{name} is no longer on this server (uploads are kept "
            f"{UPLOAD_MAX_AGE_S // 60} minutes): upload it again"
        ) from None
    except OSError as e:
        raise InputError(f"cannot read {name}: {e.strerror or e}") from None


# A busy server (its queues full) is well: the person only needs to wait.
BUSY_MESSAGE = "The server is busy right now; try again in a moment."


def _describe(error: DetectorError, name: str) -> str:
    """The client's one-line message, naming the user's file rather than a temp path."""
    if isinstance(error, ServerBusy):
        return BUSY_MESSAGE
    if isinstance(error, RequestTooLarge):
        return RequestTooLarge.describe(name, error.size, error.limit, error.reason)
    if isinstance(error, InvalidImage):
        return type(error).describe(name, error.reason)
    return str(error)


# --- one detection --------------------------------------------------------------


@dataclass
class Outcome:
    """Everything the page shows after one click."""

    views: list[tuple[str, ImageResult]] = field(default_factory=list)
    detections: list[list] = field(default_factory=list)
    timings: list[list] = field(default_factory=list)
    message: str = ""
    waterfall: str = ""  # inline SVG of the steps over time; "" when unknown
    downloads: list[Path] = field(default_factory=list)  # annotated JPEGs, COCO JSON


def write_downloads(
    folders: ResultFolders, source: str, views: list[tuple[str, ImageResult]], model: str
) -> list[Path]:
    """A result's download files, in a new photo folder of ``folders``: one JPEG per view
    (the server's annotated image) and one COCO-results JSON of every view's detections
    (``model`` in each entry is the view's caption, as the detections table names it;
    ``bbox`` is x, y, width, height in original-image pixels)."""
    stem = slug(Path(source).stem)
    with folders.writing(PHOTO) as folder:
        files = []
        for caption, result in views:
            path = folder / f"{stem}-{slug(caption)}.jpg"
            path.write_bytes(result.annotated_jpeg)
            files.append(path)
        entries = [
            entry
            for caption, result in views
            for entry in to_coco_results(result, image_id=1, file_name=source, model=caption)
        ]
        coco = folder / f"{stem}-{slug(model)}-coco.json"
        coco.write_text(json.dumps(entries, indent=1))
    return [*files, coco]


class Detector:
    """Runs one detection for the page and turns every failure into a message."""

    def __init__(
        self,
        client: DetectorClient,
        stats_retries: int = 5,
        models: ServerModels | None = None,
        folders: ResultFolders | None = None,
    ):
        self.client = client
        self.stats_retries = stats_retries
        self.models = models or ServerModels(client)
        self.folders = folders  # None: no files offered

    def __call__(
        self,
        image: Any,
        model: str,
        score_threshold: Any,
        iou_threshold: Any,
        file: Any = None,
    ) -> Outcome:
        name = "image"
        try:
            upload = read_upload(file) or read_upload(image)
            if upload is None:
                raise InputError(
                    "no image given: upload or paste one, take one with the webcam, "
                    "or click an example photo"
                )
            name = upload.name
            score = threshold(score_threshold, "score threshold")
            iou = threshold(iou_threshold, "IoU threshold")
            info, captions = self._model(model)
            return self._detect(upload, info, captions, score, iou)
        except InputError as e:
            return Outcome(message=f"**Error:** {e}")
        except DetectorError as e:
            log.info("%s: %s", model, _describe(e, name))
            return Outcome(message=f"**Error:** {_describe(e, name)}")
        except Exception as e:  # the page gets one line; the log gets the traceback
            log.exception("detection failed")
            what = f"{type(e).__name__}: {first_line(str(e))}"
            return Outcome(message=f"**Error:** unexpected {what}")

    def _model(self, model: Any) -> tuple[ModelInfo, Mapping[str, str]]:
        """The config of the chosen ensemble and the captions of the server's detectors;
        ``InputError`` for a model the server does not serve."""
        info = self.models.info(model)
        return info, self.models.get()[0].captions

    def _detect(
        self,
        upload: Upload,
        info: ModelInfo,
        captions: Mapping[str, str],
        score: float,
        iou: float,
    ) -> Outcome:
        model = info.name
        before = timings.snapshot(self.client)
        (result,) = self.client.detect(
            [upload.data],
            model,
            score,
            iou,
            timeout=INFER_TIMEOUT_S,
            annotated_max_side=DISPLAY_MAX_SIDE,
        )
        after = timings.settled(self.client, before, model, info.steps, self.stats_retries)
        views = result_views(result, info, captions)
        rows = detection_rows(views)
        found = len(result.detections)
        message = (
            f"{found} object{'s' if found != 1 else ''}"
            f"{' after fusion' if model == contract.DETECT_ALL else ''}: {short_summary(result)}"
            f" · round trip {result.latency_s * 1000:.0f} ms"
        )
        if after is None:
            message += " · server step times unavailable"
        log.info("%s %s: %s", model, upload.name, message)
        steps = timings.timing_rows(result.latency_s, model, info.steps, before, after)
        picture = self._waterfall(info, result.latency_s, before, after)
        files = write_downloads(self.folders, upload.name, views, model) if self.folders else []
        return Outcome(views, rows, steps, message, picture, files)

    def _waterfall(
        self,
        info: ModelInfo,
        round_trip_s: float,
        before: timings.Snapshot | None,
        after: timings.Snapshot | None,
    ) -> str:
        """The steps over time as inline SVG; "" without statistics or step graph."""
        if before is None or after is None:
            return ""
        if not info.graph:
            return ""
        bars = waterfall.layout(info.graph, timings.step_durations(before, after, info.steps))
        chains = [d.name for d in info.detectors]
        return waterfall.svg(bars, round_trip_s * 1000, chains, f"Steps of {info.name}")


class StatusLine:
    """The status line, asked of the server at most once per ``ttl_s`` for all pages."""

    def __init__(
        self,
        client: DetectorClient,
        ttl_s: float = STATUS_TTL_S,
        models: ServerModels | None = None,
    ):
        self.client = client
        self.ttl_s = ttl_s
        self.models = models  # names the ensembles in the model choice's order
        self._lock = threading.Lock()
        self._text = ""
        self._at = -math.inf

    def __call__(self) -> str:
        with self._lock:
            if time.monotonic() - self._at < self.ttl_s:
                return self._text
            try:
                order = self.models.get()[0].names if self.models else ()
                text = status_text(self.client.ready_models(), self.client.url, order=order)
            except DetectorError as e:
                text = status_text(None, self.client.url, str(e))
            self._text, self._at = text, time.monotonic()
            return text


# --- the page -------------------------------------------------------------------

PAGE_TITLE = "Object detectors on one Triton"
INTRO = f"""\
# {PAGE_TITLE}
Every request goes over gRPC to a Triton Inference Server, which decodes the image, runs
the chosen detector (or, for the fused choice, each fused detector side by side, then
fuses their boxes) and draws the boxes. The models to choose from are the ones this
server serves. Boxes are in the original image's pixels.
"""

TIMINGS_LABEL = (
    "Time in ms (server steps: mean per run while this request was in flight, "
    "other users' runs included)"
)

API_DESCRIPTION = (
    "Detect objects in one image. image: an image file (any file is sent to the server "
    "as it is; a non-image gets the server's message). model: one of the server's "
    "ensembles, detect_all or detect_<detector name> (the status line lists them). "
    "Thresholds in [0, 1]. "
    "file: optional, the page's any-file input; when given it is used instead of image. "
    "Returns the gallery (the server's JPEGs as data: URLs with captions), the "
    "detections table, the timings table and a one-line message."
)


def build_app(client: DetectorClient) -> gr.Blocks:
    """The demo page over ``client`` (shared by every user), its queue configured.

    Launch it with ``app.launch(**LAUNCH_OPTIONS, ...)`` (``python -m ui`` does), or
    plainly in tests.
    """
    models = ServerModels(client)
    # Gradio's cache folder as the page is built (GRADIO_TEMP_DIR, which ``python -m ui``
    # points at a folder of its own); files written there are swept like uploads.
    folders = ResultFolders(Path(gr.utils.get_upload_folder()) / "downloads")
    detector = Detector(client, models=models, folders=folders)
    status = StatusLine(client, models=models)
    photos = example_photos()
    # The server may be down now: the page comes up without choices and gets them from
    # the first status refresh that reaches it.
    catalog, _ = models.get()

    with gr.Blocks(title=PAGE_TITLE, analytics_enabled=False, delete_cache=CACHE_SWEEP) as demo:
        gr.Markdown(INTRO)
        status_line = gr.Markdown(elem_id="status-line")
        # The settings every tab uses: which ensemble, and its thresholds.
        with gr.Row(equal_height=False):
            model = gr.Radio(
                catalog.choices(),
                value=catalog.default,
                label="Model",
                elem_id="model-choice",
                scale=3,
            )
            with gr.Column(scale=2, min_width=240):
                score = gr.Slider(
                    0.0,
                    1.0,
                    value=contract.DEFAULT_SCORE_THRESHOLD,
                    step=0.01,
                    label="Score threshold (keep boxes scoring at least this)",
                    elem_id="score-threshold",
                )
                iou = gr.Slider(
                    0.0,
                    1.0,
                    value=contract.DEFAULT_IOU_THRESHOLD,
                    step=0.01,
                    label="IoU threshold (NMS and fusion)",
                    elem_id="iou-threshold",
                )
        # The choices this session's radio shows, to update it only on a change.
        shown_choices = gr.State(catalog.choices())
        with gr.Tabs(elem_id="input-tabs"):
            with (
                gr.Tab("Photo", id="photo-tab", elem_id="photo-tab"),
                gr.Row(equal_height=False),
            ):
                with gr.Column(scale=2):
                    image = gr.Image(
                        label="Image: upload, webcam or paste",
                        sources=["upload", "webcam", "clipboard"],
                        type="filepath",
                        elem_id="input-image",
                    )
                    file = gr.File(
                        label="...or any file, sent to the server as it is",
                        file_count="single",
                        type="filepath",
                        height=120,
                        elem_id="input-file",
                    )
                    examples = (
                        gr.Examples(
                            [[str(p)] for p in photos],
                            inputs=image,
                            label="Example photos (scikit-image): one click detects",
                            elem_id="example-photos",
                            api_visibility="private",
                        )
                        if photos
                        else None
                    )
                    button = gr.Button("Detect", variant="primary", elem_id="detect-button")
                    message = gr.Markdown(elem_id="message")
                with gr.Column(scale=3):
                    gr.Markdown("**Annotated by the server**")
                    gallery = gr.Gallery(
                        label="Annotated by the server",
                        show_label=False,  # a floating label would cover the first tag
                        columns=2,
                        object_fit="contain",
                        height=720,
                        elem_id="annotated-gallery",
                    )
                    detections = gr.Dataframe(
                        headers=DETECTION_HEADERS,
                        datatype=["str", "str"] + ["number"] * 5,
                        column_widths=["36%", "14%", "10%", "10%", "10%", "10%", "10%"],
                        interactive=False,
                        label="Detections (boxes in original-image pixels, x1 y1 top-left)",
                        elem_id="detections-table",
                    )
                    download_files = gr.File(
                        label="Downloads: the annotated images and the detections (COCO JSON)",
                        file_count="multiple",
                        interactive=False,
                        elem_id="downloads",
                    )
                    # Above the table: the same numbers, laid out in time (the column
                    # is too narrow for both side by side).
                    waterfall_view = gr.HTML(
                        label="Steps over time",
                        elem_id="timings-waterfall",
                        padding=False,
                    )
                    timings_table = gr.Dataframe(
                        headers=TIMING_HEADERS,
                        datatype=["str", "number"],
                        interactive=False,
                        max_height=800,
                        label=TIMINGS_LABEL,
                        elem_id="timings-table",
                    )
            with gr.Tab("Video clip", id="video-tab", elem_id="video-tab"):
                clips.build_tab(client, models, folders, model, score, iou)
            with gr.Tab("Webcam", id="webcam-tab", elem_id="webcam-tab"):
                live.build_tab(client, models, model, score, iou)

        # The waterfall and the files come in a second event, so that the /detect API
        # keeps its four outputs (a State is no output of the API).
        extras = gr.State()
        outputs = [gallery, detections, timings_table, message, extras]

        def render(outcome: Outcome) -> tuple:
            # postprocess=False: these are the components' wire values, built here.
            return (
                gallery_value(outcome.views),
                table_value(DETECTION_HEADERS, outcome.detections),
                table_value(TIMING_HEADERS, outcome.timings),
                outcome.message,
                (outcome.waterfall, file_value(outcome.downloads)),
            )

        def show_extras(value: tuple[str, list[dict]] | None) -> tuple:
            picture, files = value or ("", [])
            return picture, files or None

        def detect(image, model, score_threshold, iou_threshold, file=None):
            return render(detector(image, model, score_threshold, iou_threshold, file))

        raw = {"preprocess": False, "postprocess": False}
        quiet = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}
        then_extras = {"inputs": extras, "outputs": [waterfall_view, download_files]}
        button.click(
            detect,
            inputs=[image, model, score, iou, file],
            outputs=outputs,
            api_name="detect",
            api_description=API_DESCRIPTION,
            concurrency_id="detect",
            **raw,
        ).then(show_extras, **then_extras, **raw, **quiet)
        if examples is not None:

            def detect_example(image, model, score_threshold, iou_threshold):
                return detect(image, model, score_threshold, iou_threshold)

            examples.load_input_event.then(
                detect_example,
                inputs=[image, model, score, iou],
                outputs=outputs,
                api_visibility="private",
                concurrency_id="detect",
                **raw,
            ).then(show_extras, **then_extras, **raw, **quiet)

        # The image and the file input are alternatives: giving one clears the other,
        # so Detect always sends what was given last.
        image.change(_clear_if_set, image, file, **raw, **quiet)
        file.change(_clear_if_set, file, image, **raw, **quiet)

        def refresh(shown: list[tuple[str, str]], chosen: str | None) -> tuple:
            """The status line, and the model choices when the server's have changed
            (keeping the chosen one while it is still served)."""
            text = status()
            update = choices_update(models.get()[0], shown, chosen)
            if update is None:
                return text, gr.skip(), gr.skip()
            choices, value = update
            return text, gr.Radio(choices=choices, value=value), choices

        watch = {"inputs": [shown_choices, model], "outputs": [status_line, model, shown_choices]}
        demo.load(refresh, **watch, **quiet)
        gr.Timer(STATUS_EVERY_S).tick(refresh, **watch, **quiet)

        def forget_session(request: gr.Request) -> None:
            """A closed page's result files go with it."""
            folders.end_session(getattr(request, "session_hash", "") or "")

        demo.unload(forget_session)

    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def _clear_if_set(value: Any) -> Any:
    return gr.skip() if value is None else None


__all__ = [
    "LAUNCH_OPTIONS",
    "Detector",
    "Outcome",
    "StatusLine",
    "build_app",
    "choices_update",
    "detection_rows",
    "example_photos",
    "gallery_value",
    "read_upload",
    "result_views",
    "status_text",
    "write_downloads",
]
