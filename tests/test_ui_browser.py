"""The web demo in a real headless Chromium, against the real server.

The app (``ui.app.build_app``) runs in this process on a free port, talking to the
session's Triton (the default ``models.toml``); Playwright drives Debian's chromium
through the page's agreed ``elem_id`` values, and the project's client, asked the same
question directly, says what the tables must list. Each step leaves a full-page
screenshot in ``test-artifacts/ui/``.

The last tests run the page on a server of this module's own, started from a models file
written here as a user would (two detectors under new names, one left out of fusion):
the page must offer exactly those, by their titles, and come up before that server does.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_models
from playwright.sync_api import Page, expect
from ui_helpers import (
    ARTIFACTS_DIR,
    RESULT_TIMEOUT_MS,
    choose_model,
    click_detect,
    expect_gallery_loaded,
    fresh_browser,
    gallery_captions,
    gradio_error_badges,
    loaded_page,
    model_choices,
    number,
    outputs_signature,
    read_table,
    save_screenshot,
    serving_page,
    set_slider,
    slider_value,
    upload,
    wait_for_new_results,
)

from client import DetectorClient
from ensemble import contract

pytestmark = [
    pytest.mark.server,
    # Gradio's queue summarises its events with pandas calls that pandas 3 deprecates.
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]

# The model choices as the page labels them for models.toml (each detector's runtime,
# then its title, as the server's configs say them), and the detector each one asks.
DETECTOR_CHOICES = {
    "PyTorch (TorchScript) · NanoDet-m 416": "pytorch",
    "TensorFlow (SavedModel) · SSD MobileNet v2 (COCO)": "tensorflow",
    "ONNX Runtime · CenterNet MobileNetV3 512": "onnxruntime",
}
ALL_CHOICE = "All 3 fused"
CHOICES = {ALL_CHOICE: contract.DETECT_ALL} | {
    label: contract.ensemble_name(name) for label, name in DETECTOR_CHOICES.items()
}
DETECTION_HEADERS = ["model", "label", "score", "x1", "y1", "x2", "y2"]
TIMING_HEADERS = ["step", "ms"]
NOT_AN_IMAGE = re.compile(r"not (an?|a valid|a readable|a supported) image", re.IGNORECASE)
ROUND_TRIP = re.compile(r"round.?trip", re.IGNORECASE)
SCORE_TOLERANCE = 0.006  # the table may round scores to two decimals
BOX_TOLERANCE = 0.51  # ...and pixels to whole ones
IOU = 0.5


@pytest.fixture(scope="module")
def detector(triton_url):
    """The project's client on the same server: the oracle for what the tables must list."""
    with DetectorClient(triton_url) as client:
        yield client


@pytest.fixture(scope="module")
def app_url(triton_url):
    with serving_page(triton_url) as url:
        yield url


@pytest.fixture(scope="module")
def browser_context():
    """One browser profile for the module (its HTTP cache makes later pages quick)."""
    with fresh_browser(ARTIFACTS_DIR) as context:
        yield context


@pytest.fixture
def page(browser_context, app_url, request):
    """A freshly loaded page: a new Gradio session with nothing uploaded."""
    with loaded_page(browser_context, app_url, request, "up") as page:
        yield page


@pytest.fixture(scope="module")
def astronaut(photos_dir) -> Path:
    return photos_dir / "astronaut.png"


# --- steps and checks ---------------------------------------------------------------


def detect(page: Page, choice: str | None = None, score: float | None = None) -> None:
    """Set the model and/or score threshold, click Detect, wait for the new results."""
    before = outputs_signature(page)
    if choice is not None:
        choose_model(page, choice)
    if score is not None:
        set_slider(page, "score-threshold", score)
    click_detect(page, before)
    badges = gradio_error_badges(page)
    assert not badges, f"the handler raised: Gradio shows 'Error' on {badges}"
    message = page.locator("#message").inner_text()
    assert not re.search(r"\berror\b", message, re.IGNORECASE), f"the page says: {message}"


def detection_rows(page: Page) -> list[dict[str, str]]:
    headers, rows = read_table(page, "detections-table")
    assert headers == DETECTION_HEADERS
    return rows


def assert_rows_match_server(rows, detector, image, choice, score) -> None:
    """The table lists exactly the server's detections for this request, per model:
    labels in order, scores and boxes (original-image pixels) up to rounding.

    For one detector, every row is that detector's; for detect_all, the rows of each
    detector's caption are its own result and the rest (one other name) the fused one.
    """
    (result,) = detector.detect(
        [image], model=CHOICES[choice], score_threshold=score, iou_threshold=IOU
    )
    if choice == ALL_CHOICE:
        expected = {label: result.per_detector[name] for label, name in DETECTOR_CHOICES.items()}
        fused_names = {r["model"] for r in rows} - set(expected)
        assert len(fused_names) <= 1, f"more than one fused model name: {fused_names}"
        expected[fused_names.pop() if fused_names else "fused"] = result
    else:
        expected = {choice: result}
    shown = {}
    for row in rows:
        values = [number(row[k]) for k in ("score", "x1", "y1", "x2", "y2")]
        shown.setdefault(row["model"], []).append((row["label"], *values))
    for model, result in expected.items():
        got = shown.pop(model, [])
        want = [(d.label, d.score, d.x1, d.y1, d.x2, d.y2) for d in result.detections]
        assert [g[0] for g in got] == [w[0] for w in want], (model, got, want)
        for g, w in zip(got, want, strict=True):
            assert abs(g[1] - w[1]) <= SCORE_TOLERANCE, (model, g, w)
            box_error = max(abs(a - b) for a, b in zip(g[2:], w[2:], strict=True))
            assert box_error <= BOX_TOLERANCE, (model, g, w)
    assert not shown, f"rows for models that were not asked: {shown}"


def assert_boxes_sane(rows, score) -> None:
    for row in rows:
        assert number(row["score"]) >= score, f"score below the threshold {score}: {row}"
        assert 0 <= number(row["x1"]) <= number(row["x2"]), row
        assert 0 <= number(row["y1"]) <= number(row["y2"]), row


def assert_timings_shown(page: Page, detector: DetectorClient, model: str) -> None:
    """The round trip, then a number for every step model the ensemble's config names."""
    headers, rows = read_table(page, "timings-table")
    assert headers == TIMING_HEADERS
    steps = [row["step"] for row in rows]
    assert ROUND_TRIP.search(steps[0]), f"the round trip is not the first row: {steps}"
    for step in detector.model_info(model).steps:
        assert any(s.startswith(step) for s in steps), f"no row for {step}: {steps}"
    for row in rows:
        assert number(row["ms"]) >= 0, row
    assert number(rows[0]["ms"]) > 0, rows


# --- the tests ----------------------------------------------------------------------


def test_page_says_the_server_is_up_and_which_models_are_ready(page):
    status = page.locator("#status-line")
    expect(status).to_contain_text(re.compile(r"Server: up\b.*ready", re.IGNORECASE))
    for name in CHOICES.values():
        expect(status).to_contain_text(name)
    expect(status).not_to_contain_text("not ready")
    expect(page.locator("#detect-button")).to_have_text("Detect")
    assert model_choices(page) == list(CHOICES)
    for label in CHOICES:
        expect(page.locator("#model-choice").get_by_label(label, exact=True)).to_be_visible()
    expect(page.locator("#model-choice").get_by_label(ALL_CHOICE, exact=True)).to_be_checked()
    save_screenshot(page, "01-loaded")


def test_every_model_choice_draws_and_lists_the_astronaut(page, astronaut, detector):
    upload(page, astronaut)
    set_slider(page, "score-threshold", 0.3)
    set_slider(page, "iou-threshold", IOU)
    for step, (choice, model) in enumerate(CHOICES.items(), start=2):
        detect(page, choice)
        expect_gallery_loaded(page, 4 if model == contract.DETECT_ALL else 1)
        captions = gallery_captions(page)
        named = DETECTOR_CHOICES if model == contract.DETECT_ALL else [choice]
        assert all(label in captions for label in named), f"{choice}: captions {captions}"
        rows = detection_rows(page)
        assert "person" in [r["label"] for r in rows], f"{choice}: no person row in {rows}"
        assert_boxes_sane(rows, 0.3)
        assert_rows_match_server(rows, detector, astronaut, choice, 0.3)
        assert_timings_shown(page, detector, model)
        save_screenshot(page, f"{step:02d}-{model}")


@pytest.mark.parametrize(
    ("choice", "high", "low", "shot"),
    [
        ("TensorFlow (SavedModel) · SSD MobileNet v2 (COCO)", 0.8, 0.3, "06-threshold-tensorflow"),
        ("PyTorch (TorchScript) · NanoDet-m 416", 0.3, 0.1, "07-threshold-pytorch"),
    ],
)
def test_score_threshold_changes_the_rows(page, astronaut, detector, choice, high, low, shot):
    upload(page, astronaut)
    set_slider(page, "iou-threshold", IOU)
    tables = {}
    for score in (high, low):
        detect(page, choice, score)
        rows = detection_rows(page)
        assert_boxes_sane(rows, score)
        assert_rows_match_server(rows, detector, astronaut, choice, score)
        tables[score] = rows
        save_screenshot(page, f"{shot}-{score}")
    assert len(tables[low]) > len(tables[high]), tables


def test_clicking_an_example_photo_detects_it(page, photos_dir, detector):
    score, iou = slider_value(page, "score-threshold"), slider_value(page, "iou-threshold")
    assert (score, iou) == (contract.DEFAULT_SCORE_THRESHOLD, contract.DEFAULT_IOU_THRESHOLD)
    before = outputs_signature(page)
    page.locator("#example-photos button:has(img[src$='/coffee.png'])").click()
    wait_for_new_results(page, before, "clicking the coffee example")
    expect(page.locator("#input-image img")).to_be_visible()
    expect_gallery_loaded(page, 4)
    rows = detection_rows(page)
    assert "cup" in [r["label"] for r in rows], rows
    assert_rows_match_server(rows, detector, photos_dir / "coffee.png", ALL_CHOICE, score)
    save_screenshot(page, "08-example-coffee")


def test_non_image_gets_a_clear_message_then_a_photo_works(page, astronaut, detector, tmp_path):
    upload(page, astronaut)
    detect(page, "PyTorch (TorchScript) · NanoDet-m 416")
    expect_gallery_loaded(page, 1)
    # A text file under an image's name gets past the browser's image/* filter; any
    # other file goes through the page's any-file input.
    fake_jpeg = tmp_path / "notes.jpg"
    fake_jpeg.write_text("These are my notes, not a photo.\n")
    text_file = tmp_path / "notes.txt"
    text_file.write_text("Nor is this.\n")
    for shot, elem_id, path in [
        ("09-not-an-image-jpg", "input-image", fake_jpeg),
        ("10-not-an-image-txt", "input-file", text_file),
    ]:
        upload(page, path, elem_id)
        click_detect(page)
        save_screenshot(page, shot)
        body = page.locator("body").inner_text()
        assert "Traceback" not in body and 'File "' not in body, body
        badges = gradio_error_badges(page)
        assert not badges, f"{path.name}: Gradio's bare 'Error' on {badges}, not a message"
        expect(page.locator("#message")).to_contain_text(NOT_AN_IMAGE)
        expect(page.locator("#message")).to_contain_text(path.name)
        assert detection_rows(page) == [], "rows left over from the last photo"
        expect(page.locator("#annotated-gallery .thumbnail-item img")).to_have_count(0)

    upload(page, astronaut)
    detect(page, ALL_CHOICE)
    expect_gallery_loaded(page, 4)
    assert "person" in [r["label"] for r in detection_rows(page)]
    expect(page.locator("#message")).not_to_contain_text(NOT_AN_IMAGE)
    assert_timings_shown(page, detector, contract.DETECT_ALL)
    save_screenshot(page, "11-photo-again")


# --- a server started from a models file of the test's own --------------------------

# Two detectors registered by path under new names, as a user's file would: the first
# fused, the second left out of detect_all.
CUSTOM_DETECTORS = {
    # name: (title, runtime, recipe whose built artifact it serves, family, fuse)
    "parts_onnx": ("Parts finder", "onnx", "centernet_mobilenetv3", "centernet", True),
    "cars_tf": ("Car spotter", "savedmodel", "ssd_mobilenet_v2", "ssd", False),
}
CUSTOM_CHOICES = {
    "All 1 fused": "detect_all",
    "ONNX Runtime · Parts finder": "detect_parts_onnx",
    "TensorFlow (SavedModel) · Car spotter": "detect_cars_tf",
}
SERVER_WAIT_MS = 30_000  # the page's status refresh (every 5 s) shows a new server by then


def write_models_file(folder: Path) -> Path:
    """A models file naming the built artifacts by absolute path."""
    from ensemble.recipes import artifact_path

    entries = []
    for name, (title, runtime, recipe, family, fuse) in CUSTOM_DETECTORS.items():
        entries.append(
            "[[detector]]\n"
            f'name = "{name}"\n'
            f'title = "{title}"\n'
            f'runtime = "{runtime}"\n'
            f"artifact = {str(artifact_path(recipe))!r}\n"
            f'family = "{family}"\n'
            f"fuse = {str(fuse).lower()}\n"
        )
    path = folder / "lab-models.toml"
    path.write_text("\n".join(entries))
    return path


class CustomServer:
    """A Triton on the test's models file, on ports chosen before it starts; ``start()``
    brings it up (once) and returns its gRPC address."""

    def __init__(self, models_file: Path, workdir: Path, stack: contextlib.ExitStack):
        from ensemble.processes import Ports, free_port

        self.models_file = models_file
        self.workdir = workdir
        self.ports = Ports(free_port(), free_port(), free_port(), free_port())
        self.grpc_url = f"127.0.0.1:{self.ports.grpc}"
        self._stack = stack
        self._server = None

    @property
    def started(self) -> bool:
        return self._server is not None

    def start(self) -> str:
        from ensemble.server import running_server

        if self._server is None:
            self._server = self._stack.enter_context(
                running_server(self.models_file, workdir=self.workdir, ports=self.ports)
            )
        return self._server.grpc_url


@pytest.fixture(scope="module")
def custom_server(tmp_path_factory) -> Iterator[CustomServer]:
    """The test's own server, not started yet: the page is built before it answers."""
    require_models()
    folder = tmp_path_factory.mktemp("lab-models")
    with contextlib.ExitStack() as stack:
        yield CustomServer(write_models_file(folder), tmp_path_factory.mktemp("lab-triton"), stack)


@pytest.fixture(scope="module")
def custom_app_url(custom_server):
    """The page for the test's own server, built while nothing answers at its address."""
    with serving_page(custom_server.grpc_url) as url:
        yield url


@pytest.fixture
def custom_page(browser_context, custom_app_url, request):
    with loaded_page(browser_context, custom_app_url, request, "Server:") as page:
        yield page


def expect_custom_choices(page: Page) -> None:
    """Exactly the models file's detectors, fused first, and nothing of models.toml."""
    status = page.locator("#status-line")
    expect(status).to_contain_text("Server: up", timeout=SERVER_WAIT_MS)
    radios = page.locator("#model-choice input[type=radio]")
    expect(radios).to_have_count(len(CUSTOM_CHOICES), timeout=SERVER_WAIT_MS)
    assert model_choices(page) == list(CUSTOM_CHOICES)
    expect(page.locator("#model-choice").get_by_label("All 1 fused", exact=True)).to_be_checked()
    for name in CUSTOM_CHOICES.values():
        expect(status).to_contain_text(name)
    for bundled in CHOICES.values():
        if bundled != contract.DETECT_ALL:
            expect(status).not_to_contain_text(bundled)


def test_a_page_built_before_its_server_comes_up_shows_the_servers_detectors_once_it_answers(
    custom_server, custom_page
):
    """The page for a server that is not up yet comes up anyway, says the server is down,
    and offers the models file's detectors as soon as the server answers."""
    if not custom_server.started:  # the first test on this server: it is not up yet
        expect(custom_page.locator("#status-line")).to_contain_text("Server: down")
        expect(custom_page.locator("#status-line")).to_contain_text(custom_server.grpc_url)
        expect(custom_page.locator("#model-choice input[type=radio]")).to_have_count(0)
        save_screenshot(custom_page, "20-lab-server-down")
        custom_server.start()
    expect_custom_choices(custom_page)
    save_screenshot(custom_page, "21-lab-server-up")


def test_a_fresh_page_lists_exactly_the_models_files_detectors_by_title(custom_server, custom_page):
    custom_server.start()
    custom_page.reload()
    expect_custom_choices(custom_page)


def test_detect_all_shows_only_the_fused_detector_and_the_other_runs_on_its_own(
    custom_server, custom_page, astronaut
):
    with DetectorClient(custom_server.start()) as oracle:
        custom_page.reload()
        expect_custom_choices(custom_page)
        upload(custom_page, astronaut)
        set_slider(custom_page, "score-threshold", 0.3)
        set_slider(custom_page, "iou-threshold", IOU)

        detect(custom_page, "All 1 fused")
        expect_gallery_loaded(custom_page, 2)
        assert gallery_captions(custom_page) == ["Fused (WBF)", "ONNX Runtime · Parts finder"]
        rows = detection_rows(custom_page)
        assert {r["model"] for r in rows} <= {"Fused (WBF)", "ONNX Runtime · Parts finder"}
        (fused,) = oracle.detect([astronaut], "detect_all", 0.3, IOU)
        assert list(fused.per_detector) == ["parts_onnx"]
        own = [r for r in rows if r["model"] == "ONNX Runtime · Parts finder"]
        assert [r["label"] for r in own] == [
            d.label for d in fused.per_detector["parts_onnx"].detections
        ]
        assert "person" in [r["label"] for r in own], rows
        assert_timings_shown(custom_page, oracle, "detect_all")
        save_screenshot(custom_page, "22-lab-detect-all")

        detect(custom_page, "TensorFlow (SavedModel) · Car spotter")
        expect_gallery_loaded(custom_page, 1)
        assert gallery_captions(custom_page) == ["TensorFlow (SavedModel) · Car spotter"]
        rows = detection_rows(custom_page)
        (result,) = oracle.detect([astronaut], "detect_cars_tf", 0.3, IOU)
        assert [r["label"] for r in rows] == [d.label for d in result.detections]
        assert "person" in [r["label"] for r in rows], rows
        assert {r["model"] for r in rows} == {"TensorFlow (SavedModel) · Car spotter"}
        assert_boxes_sane(rows, 0.3)
        assert_timings_shown(custom_page, oracle, "detect_cars_tf")
        _, timing_rows = read_table(custom_page, "timings-table")
        assert [r["step"] for r in timing_rows][2:] == [
            "preprocess_cars_tf",
            "cars_tf",
            "postprocess_cars_tf",
        ]
        save_screenshot(custom_page, "23-lab-cars-tf")


# --- timings as a picture, and downloads ----------------------------------------------


def test_detect_all_draws_its_steps_as_a_waterfall_and_offers_images_and_coco_json(
    page, astronaut, detector
):
    upload(page, astronaut)
    set_slider(page, "score-threshold", 0.3)
    set_slider(page, "iou-threshold", IOU)
    detect(page, ALL_CHOICE)
    expect_gallery_loaded(page, 4)

    # A bar for every step the ensemble's config names, in its order.
    steps = detector.model_info(contract.DETECT_ALL).steps
    bars = page.locator("#timings-waterfall svg rect.waterfall-bar")
    expect(bars).to_have_count(len(steps), timeout=RESULT_TIMEOUT_MS)
    drawn = bars.evaluate_all(
        "els => els.map(e => [e.dataset.step, +e.dataset.startMs, +e.dataset.endMs])"
    )
    assert [d[0] for d in drawn] == list(steps)
    at = {step: (start, end) for step, start, end in drawn}
    assert all(end >= start >= 0 for start, end in at.values()), at
    # The detector chains run side by side: each starts when decoding ends, and fusion
    # waits for the last of them.
    decoded = at["image_decode"][1]
    for name in DETECTOR_CHOICES.values():
        assert at[f"preprocess_{name}"][0] == decoded, (name, at)
        assert at[name][0] == at[f"preprocess_{name}"][1], (name, at)
        assert at[f"postprocess_{name}"][0] == at[name][1], (name, at)
    last = max(at[f"postprocess_{name}"][1] for name in DETECTOR_CHOICES.values())
    assert at["fuse_detections"][0] == last, at
    expect(page.locator("#timings-waterfall svg")).to_contain_text("round trip")

    # The files: each gallery image as a JPEG, and the table's rows as COCO results.
    links = page.locator("#downloads a[href]")
    expect(links).to_have_count(5, timeout=RESULT_TIMEOUT_MS)
    files = {}
    for href in links.evaluate_all("els => els.map(e => e.href)"):
        reply = page.request.get(href)
        assert reply.ok, (href, reply.status)
        files[href.rsplit("/", 1)[-1]] = reply.body()
    jpegs = [name for name in files if name.endswith(".jpg")]
    (coco,) = [name for name in files if name.endswith(".json")]
    assert len(jpegs) == 4 and all(files[n].startswith(b"\xff\xd8") for n in jpegs), jpegs
    entries = json.loads(files[coco])
    rows = detection_rows(page)
    assert len(entries) == len(rows)
    got = sorted((e["model"], e["category_name"], e["score"]) for e in entries)
    shown = sorted((r["model"], r["label"], number(r["score"])) for r in rows)
    assert [g[:2] for g in got] == [s[:2] for s in shown]
    for g, s in zip(got, shown, strict=True):
        assert abs(g[2] - s[2]) <= SCORE_TOLERANCE, (g, s)
    for e in entries:
        x, y, w, h = e["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0, e
        assert e["file_name"] == astronaut.name, e
    save_screenshot(page, "20-waterfall-and-downloads")
