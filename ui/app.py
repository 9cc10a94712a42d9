"""The web demo: one Gradio page over the project's gRPC client, built from its tabs.

The page never loads a model: every request goes through one shared ``DetectorClient``
to a Triton server (any server: ``python -m ui --url host:8001``), and everything shown
comes from there: which models there are to choose and what to call them (the model
catalogue, ``ui.catalog``), boxes in original-image pixels, the annotated JPEGs drawn by
the server, and the server's time per ensemble step from Triton's statistics API
(``ui.timings``). Nothing of the server-side package is imported here beyond the public
contract, so a server started on any models file is shown as it is. A page built while
the server is down comes up anyway: the status line says so, and the model choices fill
in when the server answers.

The page holds what the tabs share: the status line, the model choice and thresholds,
the catalogue and the result folders (``ui.results``). Each tab is a module of its own:
``ui.photos`` (one image), ``ui.clips`` (a video clip), ``ui.live`` (the webcam).

How it stays flat under many requests:

- The tabs' events run with ``preprocess=False`` and ``postprocess=False``: uploads go
  to the server byte for byte and the server's JPEGs go back inline, so the only files
  a result writes are its downloads, in a result folder of its own in Gradio's cache.
- What Gradio does write, the uploads themselves, lands in ``GRADIO_TEMP_DIR``; the
  Blocks' ``delete_cache`` sweep removes uploads (and downloads) older than
  ``UPLOAD_MAX_AGE_S``
  (``python -m ui`` points that variable at a directory of its own and deletes it at
  exit).
- Gradio keeps each session's last values in memory; ``LAUNCH_OPTIONS`` caps how many
  sessions it keeps. Nothing in this module grows per request.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from client import DetectorClient, DetectorError
from client.results import detection_ensembles
from ensemble import contract
from ui import clips, live, photos
from ui.catalog import Catalog, ServerModels, ranked
from ui.common import UPLOAD_MAX_AGE_S, Page
from ui.results import ResultFolders

# --- serving limits -------------------------------------------------------------

CONCURRENCY = 4  # detections running at once; the rest wait in Gradio's queue
QUEUE_SIZE = 64  # waiting requests beyond this are refused with "queue full"
STATUS_EVERY_S = 5.0  # the status line refreshes this often on every open page
STATUS_TTL_S = 2.0  # ...but asks the server at most this often for all pages together
CACHE_SWEEP = (60, UPLOAD_MAX_AGE_S)  # gr.Blocks(delete_cache=(every s, older than s))
LAUNCH_OPTIONS: dict[str, Any] = {
    # Gradio keeps every session's last outputs (here the annotated JPEGs) in memory,
    # 10000 sessions by default; the oldest beyond this many are dropped. This app's
    # only per-session state is the list of model choices a page shows; a dropped
    # session's is rebuilt by its next status refresh, so nothing breaks.
    "state_session_capacity": 200,
    "max_file_size": "50mb",
}


# --- status line and model choice -------------------------------------------------


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


def threshold_slider(value: float, label: str, elem_id: str) -> gr.Slider:
    """One of the page's two thresholds: a slider over [0, 1] in steps of 0.01."""
    return gr.Slider(0.0, 1.0, value=value, step=0.01, label=label, elem_id=elem_id)


def build_app(client: DetectorClient) -> gr.Blocks:
    """The demo page over ``client`` (shared by every user), its queue configured.

    Launch it with ``app.launch(**LAUNCH_OPTIONS, ...)`` (``python -m ui`` does), or
    plainly in tests.
    """
    models = ServerModels(client)
    # Gradio's cache folder as the page is built (GRADIO_TEMP_DIR, which ``python -m ui``
    # points at a folder of its own); files written there are swept like uploads.
    folders = ResultFolders(Path(gr.utils.get_upload_folder()) / "downloads")
    status = StatusLine(client, models=models)
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
                score = threshold_slider(
                    contract.DEFAULT_SCORE_THRESHOLD,
                    "Score threshold (keep boxes scoring at least this)",
                    "score-threshold",
                )
                iou = threshold_slider(
                    contract.DEFAULT_IOU_THRESHOLD,
                    "IoU threshold (NMS and fusion)",
                    "iou-threshold",
                )
        # The choices this session's radio shows, to update it only on a change.
        shown_choices = gr.State(catalog.choices())
        page = Page(client, models, folders, model, score, iou, LAUNCH_OPTIONS.get("max_file_size"))
        with gr.Tabs(elem_id="input-tabs"):
            with gr.Tab("Photo", id="photo-tab", elem_id="photo-tab"):
                photos.build_tab(page)
            with gr.Tab("Video clip", id="video-tab", elem_id="video-tab"):
                clips.build_tab(page)
            with gr.Tab("Webcam", id="webcam-tab", elem_id="webcam-tab"):
                live.build_tab(page)

        def refresh(shown: list[tuple[str, str]], chosen: str | None) -> tuple:
            """The status line, and the model choices when the server's have changed
            (keeping the chosen one while it is still served)."""
            text = status()
            update = choices_update(models.get()[0], shown, chosen)
            if update is None:
                return text, gr.skip(), gr.skip()
            choices, value = update
            return text, gr.Radio(choices=choices, value=value), choices

        quiet = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}
        watch = {"inputs": [shown_choices, model], "outputs": [status_line, model, shown_choices]}
        demo.load(refresh, **watch, **quiet)
        gr.Timer(STATUS_EVERY_S).tick(refresh, **watch, **quiet)

        def forget_session(request: gr.Request) -> None:
            """A closed page's result files go with it."""
            folders.end_session(getattr(request, "session_hash", "") or "")

        demo.unload(forget_session)

    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


__all__ = [
    "LAUNCH_OPTIONS",
    "StatusLine",
    "build_app",
    "choices_update",
    "status_text",
]
