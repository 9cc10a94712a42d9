"""The page's photo tab: one image through the chosen ensemble, its annotated images,
detections, timings and downloads out.

The detect event runs with ``preprocess=False`` and ``postprocess=False``. Uploaded
files go to the server byte for byte (the server's own validation names a bad file,
Gradio never decodes it), and the server's JPEGs go to the browser as ``data:`` URLs in
the gallery's value. The one set of files a result writes is its downloads (the JPEGs
again, and a COCO JSON), in a result folder of its own (``ui.results``).
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import json
import logging
from collections.abc import Mapping
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
from ensemble import contract
from ui import timings, waterfall
from ui.catalog import ServerModels, detector_caption, detector_captions, model_label
from ui.common import UPLOAD_MAX_AGE_S, InputError, Page, slug, table_value, threshold
from ui.results import PHOTO, ResultFolders, file_value

log = logging.getLogger(__name__)

FUSED_CAPTION = "Fused (WBF)"
DETECTION_HEADERS = ["model", "label", "score", "x1", "y1", "x2", "y2"]
TIMING_HEADERS = ["step", "ms"]

# scikit-image's bundled photos offered as one-click examples, when it is installed.
EXAMPLE_PHOTOS = ("astronaut", "coffee", "horse", "motorcycle_left", "chelsea")

INFER_TIMEOUT_S = 120.0  # per request: a cold CPU server takes a few seconds
# The annotated images are for a screen: at most this many pixels on their longest side.
# A 24-megapixel photo is then decoded at 1/2, and drawn and encoded at an eighth of its
# pixels; the detections table keeps the photo's own pixels.
DISPLAY_MAX_SIDE = 2048
STATS_RETRIES = 5  # waits of 20 ms for a step's counters that lag behind the reply


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


def error_message(error: DetectorError, name: str) -> str:
    """The client's one-line message, naming the user's file rather than a temp path."""
    if isinstance(error, ServerBusy):
        return BUSY_MESSAGE
    if isinstance(error, RequestTooLarge):
        return RequestTooLarge.describe(name, error.size, error.limit, error.reason)
    if isinstance(error, InvalidImage):
        return type(error).describe(name, error.reason)
    return str(error)


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


# --- one detection --------------------------------------------------------------


@dataclass
class PhotoOutcome:
    """Everything the tab shows after one click."""

    views: list[tuple[str, ImageResult]] = field(default_factory=list)
    detections: list[list] = field(default_factory=list)
    timings: list[list] = field(default_factory=list)
    message: str = ""
    waterfall: str = ""  # inline SVG of the steps over time; "" when unknown
    downloads: list[Path] = field(default_factory=list)  # annotated JPEGs, COCO JSON


class PhotoDetector:
    """Runs one photo through the chosen ensemble for the tab and turns every failure
    into a message."""

    def __init__(
        self,
        client: DetectorClient,
        stats_retries: int = STATS_RETRIES,
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
    ) -> PhotoOutcome:
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
            info = self.models.info(model)
            captions = self.models.get()[0].captions
            return self._detect(upload, info, captions, score, iou)
        except InputError as e:
            return PhotoOutcome(message=f"**Error:** {e}")
        except DetectorError as e:
            log.info("%s: %s", model, error_message(e, name))
            return PhotoOutcome(message=f"**Error:** {error_message(e, name)}")
        except Exception as e:  # the page gets one line; the log gets the traceback
            log.exception("detection failed")
            what = f"{type(e).__name__}: {first_line(str(e))}"
            return PhotoOutcome(message=f"**Error:** unexpected {what}")

    def _detect(
        self,
        upload: Upload,
        info: ModelInfo,
        captions: Mapping[str, str],
        score: float,
        iou: float,
    ) -> PhotoOutcome:
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
        picture = steps_picture(info, result.latency_s, before, after)
        files = write_downloads(self.folders, upload.name, views, model) if self.folders else []
        return PhotoOutcome(views, rows, steps, message, picture, files)


def steps_picture(
    info: ModelInfo,
    round_trip_s: float,
    before: timings.Snapshot | None,
    after: timings.Snapshot | None,
) -> str:
    """The steps of one request over time as inline SVG; "" without statistics or step
    graph."""
    if before is None or after is None or not info.graph:
        return ""
    bars = waterfall.layout(info.graph, timings.step_durations(before, after, info.steps))
    chains = [d.name for d in info.detectors]
    return waterfall.svg(bars, round_trip_s * 1000, chains, f"Steps of {info.name}")


# --- the tab --------------------------------------------------------------------

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


def build_tab(page: Page) -> PhotoDetector:
    """The tab's components and events, inside the caller's ``gr.Tab``; its downloads go
    in ``page.folders``. Returns the tab's ``PhotoDetector``."""
    detector = PhotoDetector(page.client, models=page.models, folders=page.folders)
    photos = example_photos()
    with gr.Row(equal_height=False):
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
            # Above the table: the same numbers, laid out in time (the column is too
            # narrow for both side by side).
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

    # The waterfall and the files come in a second event, so that the /detect API keeps
    # its four outputs (a State is no output of the API).
    extras = gr.State()
    outputs = [gallery, detections, timings_table, message, extras]

    def detect(image, model, score_threshold, iou_threshold, file=None) -> tuple:
        outcome = detector(image, model, score_threshold, iou_threshold, file)
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

    raw = {"preprocess": False, "postprocess": False}
    quiet = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}

    def detect_on(trigger: Any, inputs: list, **api: Any) -> None:
        """``trigger`` runs one detection of ``inputs``, then shows its extras."""
        trigger(detect, inputs=inputs, outputs=outputs, concurrency_id="detect", **api, **raw).then(
            show_extras, inputs=extras, outputs=[waterfall_view, download_files], **raw, **quiet
        )

    detect_on(
        button.click,
        [image, page.model, page.score, page.iou, file],
        api_name="detect",
        api_description=API_DESCRIPTION,
    )
    if examples is not None:
        detect_on(
            examples.load_input_event.then,
            [image, page.model, page.score, page.iou],
            api_name="detect_example",
            api_visibility="private",
        )

    # The image and the file input are alternatives: giving one clears the other, so
    # Detect always sends what was given last.
    image.change(_clear_if_set, image, file, **raw, **quiet)
    file.change(_clear_if_set, file, image, **raw, **quiet)
    return detector


def _clear_if_set(value: Any) -> Any:
    return gr.skip() if value is None else None
