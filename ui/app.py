"""The web demo: one Gradio page over the project's gRPC client.

The page never loads a model: every request goes through one shared ``DetectorClient``
to a Triton server (any server: ``python -m ui --url host:8001``), and everything shown
comes from there: boxes in original-image pixels, the annotated JPEGs drawn by the
server, and the server's time per ensemble step from Triton's statistics API.

How it stays flat under many requests:

- The detect event runs with ``preprocess=False`` and ``postprocess=False``. Uploaded
  files go to the server byte for byte (the server's own validation names a bad file,
  Gradio never decodes it), and the server's JPEGs go to the browser as ``data:`` URLs
  in the gallery's value, so no result file is written per request.
- What Gradio does write, the uploads themselves, lands in ``GRADIO_TEMP_DIR``; the
  Blocks' ``delete_cache`` sweep removes uploads older than ``UPLOAD_MAX_AGE_S``
  (``python -m ui`` points that variable at a directory of its own and deletes it at
  exit).
- Gradio keeps each session's last values in memory; ``LAUNCH_OPTIONS`` caps how many
  sessions it keeps. Nothing in this module grows per request.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.components.gallery import GalleryData, GalleryImage
from gradio.data_classes import ImageData

from client import DetectorClient, DetectorError, ImageResult, InvalidImage
from client.api import first_line
from ensemble import contract
from ui import timings

log = logging.getLogger(__name__)

# --- names shown on the page ----------------------------------------------------

ALL_LABEL = "All three + fused"
FUSED_CAPTION = "Fused (WBF)"
# What the page calls each framework's network. A framework missing here (a detector
# added later) is shown with its titles from the contract.
SHORT_NAMES = {
    "pytorch": "PyTorch · NanoDet-m",
    "tensorflow": "TensorFlow · SSD MobileNet v2",
    "onnxruntime": "ONNX Runtime · CenterNet",
}


def framework_caption(framework: contract.Framework) -> str:
    """``"PyTorch · NanoDet-m"``: the framework and its network."""
    return SHORT_NAMES.get(framework.key, f"{framework.title} · {framework.model_title}")


# (label, ensemble) pairs of the model choice, detect_all first (the default).
MODEL_CHOICES: list[tuple[str, str]] = [(ALL_LABEL, contract.DETECT_ALL)] + [
    (framework_caption(fw), fw.ensemble) for fw in contract.FRAMEWORKS
]
ENSEMBLE_ORDER = [value for _, value in MODEL_CHOICES]

DETECTION_HEADERS = ["model", "label", "score", "x1", "y1", "x2", "y2"]
TIMING_HEADERS = ["step", "ms"]

# scikit-image's bundled photos offered as one-click examples, when it is installed.
EXAMPLE_PHOTOS = ("astronaut", "coffee", "horse", "motorcycle_left", "chelsea")

# --- serving limits -------------------------------------------------------------

CONCURRENCY = 4  # detections running at once; the rest wait in Gradio's queue
QUEUE_SIZE = 64  # waiting requests beyond this are refused with "queue full"
INFER_TIMEOUT_S = 120.0  # per request: a cold CPU server takes a few seconds
STATUS_EVERY_S = 5.0  # the status line refreshes this often on every open page
STATUS_TTL_S = 2.0  # ...but asks the server at most this often for all pages together
UPLOAD_MAX_AGE_S = 600  # uploads older than this are deleted (a re-run needs a re-upload)
CACHE_SWEEP = (60, UPLOAD_MAX_AGE_S)  # gr.Blocks(delete_cache=(every s, older than s))
LAUNCH_OPTIONS: dict[str, Any] = {
    # Gradio keeps every session's last outputs (here the annotated JPEGs) in memory,
    # 10000 sessions by default; the oldest beyond this many are dropped. This app
    # keeps no per-session state of its own, so nothing breaks when one is dropped.
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


def result_views(result: ImageResult, model: str) -> list[tuple[str, ImageResult]]:
    """``(caption, result)`` per image to show: for detect_all the fused result first,
    then each framework's own; for one detector its result alone."""
    if model == contract.DETECT_ALL:
        return [(FUSED_CAPTION, result)] + [
            (framework_caption(fw), result.per_framework[fw.key])
            for fw in contract.FRAMEWORKS
            if fw.key in result.per_framework
        ]
    by_ensemble = {fw.ensemble: fw for fw in contract.FRAMEWORKS}
    caption = framework_caption(by_ensemble[model]) if model in by_ensemble else model
    return [(caption, result)]


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
                orig_name=f"{_slug(caption)}.jpg",
            ),
            caption=caption,
        )
        for caption, result in views
    ]
    return GalleryData(root=items).model_dump()


def table_value(headers: list[str], rows: list[list]) -> dict:
    """A Dataframe's wire value (what its postprocess makes of a list of rows)."""
    return {"headers": list(headers), "data": rows, "metadata": None}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "image"


def status_text(ready: Mapping[str, bool] | None, url: str, error: str = "") -> str:
    """The status line: whether the server answers and which ensembles are ready."""
    if ready is None:
        return f"**Server: down** ({error})"
    up = [name for name in ENSEMBLE_ORDER if ready.get(name)]
    down = [name for name in ENSEMBLE_ORDER if not ready.get(name)]
    line = f"**Server: up** · ready: {', '.join(up) or 'none yet'}"
    if down:
        line += f" · not ready: {', '.join(down)}"
    return f"{line} · Triton gRPC {url}"


class InputError(Exception):
    """What the user gave cannot be sent; ``str()`` says why, for the page."""


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


def _threshold(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number between 0 and 1, got {value!r}") from None
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise InputError(f"{what} must be between 0 and 1, got {value!r}")
    return number


def _describe(error: DetectorError, name: str) -> str:
    """The client's one-line message, naming the user's file rather than a temp path."""
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


class Detector:
    """Runs one detection for the page and turns every failure into a message."""

    def __init__(self, client: DetectorClient, stats_retries: int = 5):
        self.client = client
        self.stats_retries = stats_retries

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
            if model not in contract.ENSEMBLES:
                choices = ", ".join(ENSEMBLE_ORDER)
                raise InputError(f"unknown model {model!r}: choose one of {choices}")
            score = _threshold(score_threshold, "score threshold")
            iou = _threshold(iou_threshold, "IoU threshold")
            return self._detect(upload, model, score, iou)
        except InputError as e:
            return Outcome(message=f"**Error:** {e}")
        except DetectorError as e:
            log.info("%s: %s", model, _describe(e, name))
            return Outcome(message=f"**Error:** {_describe(e, name)}")
        except Exception as e:  # the page gets one line; the log gets the traceback
            log.exception("detection failed")
            what = f"{type(e).__name__}: {first_line(str(e))}"
            return Outcome(message=f"**Error:** unexpected {what}")

    def _detect(self, upload: Upload, model: str, score: float, iou: float) -> Outcome:
        before = self._snapshot()
        (result,) = self.client.detect([upload.data], model, score, iou, timeout=INFER_TIMEOUT_S)
        after = self._snapshot() if before is not None else None
        # A step's counters are updated as it finishes, which can come a moment after
        # the reply; wait briefly for the last ones rather than show a hole.
        for _ in range(self.stats_retries):
            if after is None or not timings.missing_steps(before, after, model):
                break
            time.sleep(0.02)
            after = self._snapshot()
        views = result_views(result, model)
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
        steps = timings.timing_rows(result.latency_s, model, before, after)
        return Outcome(views, rows, steps, message)

    def _snapshot(self) -> timings.Snapshot | None:
        """All models' counters now; None when the statistics API fails (never fatal)."""
        try:
            return timings.parse_statistics(self.client.inference_statistics())
        except Exception as e:
            log.warning("server statistics unavailable: %s", first_line(str(e)))
            return None


class StatusLine:
    """The status line, asked of the server at most once per ``ttl_s`` for all pages."""

    def __init__(self, client: DetectorClient, ttl_s: float = STATUS_TTL_S):
        self.client = client
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._text = ""
        self._at = -math.inf

    def __call__(self) -> str:
        with self._lock:
            if time.monotonic() - self._at < self.ttl_s:
                return self._text
            try:
                text = status_text(self.client.ready_models(), self.client.url)
            except DetectorError as e:
                text = status_text(None, self.client.url, str(e))
            self._text, self._at = text, time.monotonic()
            return text


# --- the page -------------------------------------------------------------------

INTRO = """\
# Three detectors, three frameworks, one Triton
Every request goes over gRPC to a Triton Inference Server, which decodes the image, runs
PyTorch NanoDet-m, TensorFlow SSD MobileNet v2 and ONNX Runtime CenterNet (or one of
them), fuses their boxes and draws them. Boxes are in the original image's pixels.
"""

TIMINGS_LABEL = (
    "Time in ms (server steps: mean per run while this request was in flight, "
    "other users' runs included)"
)

API_DESCRIPTION = (
    "Detect objects in one image. image: an image file (any file is sent to the server "
    "as it is; a non-image gets the server's message). model: detect_all, "
    "detect_pytorch, detect_tensorflow or detect_onnxruntime. Thresholds in [0, 1]. "
    "file: optional, the page's any-file input; when given it is used instead of image. "
    "Returns the gallery (the server's JPEGs as data: URLs with captions), the "
    "detections table, the timings table and a one-line message."
)


def build_app(client: DetectorClient) -> gr.Blocks:
    """The demo page over ``client`` (shared by every user), its queue configured.

    Launch it with ``app.launch(**LAUNCH_OPTIONS, ...)`` (``python -m ui`` does), or
    plainly in tests.
    """
    detector = Detector(client)
    status = StatusLine(client)
    photos = example_photos()

    with gr.Blocks(
        title="Three detectors, one Triton", analytics_enabled=False, delete_cache=CACHE_SWEEP
    ) as demo:
        gr.Markdown(INTRO)
        status_line = gr.Markdown(elem_id="status-line")
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
                model = gr.Radio(
                    MODEL_CHOICES,
                    value=contract.DETECT_ALL,
                    label="Model",
                    elem_id="model-choice",
                )
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
                button = gr.Button("Detect", variant="primary", elem_id="detect-button")
                message = gr.Markdown(elem_id="message")
            with gr.Column(scale=3):
                gr.Markdown("**Annotated by the server**")
                gallery = gr.Gallery(
                    label="Annotated by the server",
                    show_label=False,  # a floating label would cover the first box's tag
                    columns=2,
                    object_fit="contain",
                    height=720,
                    elem_id="annotated-gallery",
                )
                detections = gr.Dataframe(
                    headers=DETECTION_HEADERS,
                    datatype=["str", "str"] + ["number"] * 5,
                    column_widths=["30%", "16%", "10%", "11%", "11%", "11%", "11%"],
                    interactive=False,
                    label="Detections (boxes in original-image pixels, x1 y1 top-left)",
                    elem_id="detections-table",
                )
                timings_table = gr.Dataframe(
                    headers=TIMING_HEADERS,
                    datatype=["str", "number"],
                    interactive=False,
                    max_height=800,
                    label=TIMINGS_LABEL,
                    elem_id="timings-table",
                )

        outputs = [gallery, detections, timings_table, message]

        def render(outcome: Outcome) -> tuple:
            # postprocess=False: these are the components' wire values, built here.
            return (
                gallery_value(outcome.views),
                table_value(DETECTION_HEADERS, outcome.detections),
                table_value(TIMING_HEADERS, outcome.timings),
                outcome.message,
            )

        def detect(image, model, score_threshold, iou_threshold, file=None):
            return render(detector(image, model, score_threshold, iou_threshold, file))

        raw = {"preprocess": False, "postprocess": False}
        button.click(
            detect,
            inputs=[image, model, score, iou, file],
            outputs=outputs,
            api_name="detect",
            api_description=API_DESCRIPTION,
            concurrency_id="detect",
            **raw,
        )
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
            )

        # The image and the file input are alternatives: giving one clears the other,
        # so Detect always sends what was given last.
        quiet = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}
        image.change(_clear_if_set, image, file, **raw, **quiet)
        file.change(_clear_if_set, file, image, **raw, **quiet)

        demo.load(status, outputs=status_line, **quiet)
        gr.Timer(STATUS_EVERY_S).tick(status, outputs=status_line, **quiet)

    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


def _clear_if_set(value: Any) -> Any:
    return gr.skip() if value is None else None


__all__ = [
    "LAUNCH_OPTIONS",
    "MODEL_CHOICES",
    "Detector",
    "Outcome",
    "StatusLine",
    "build_app",
    "detection_rows",
    "example_photos",
    "gallery_value",
    "read_upload",
    "result_views",
    "status_text",
]
