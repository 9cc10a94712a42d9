"""The web demo in a real headless Chromium, against the real server.

The app (``ui.app.build_app``) runs in this process on a free port, talking to the
session's Triton; Playwright drives Debian's chromium through the page's agreed
``elem_id`` values, and the project's client, asked the same question directly, says
what the tables must list. Each step leaves a full-page screenshot in
``test-artifacts/ui/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from ui_helpers import (
    ARTIFACTS_DIR,
    VIEWPORT,
    choose_model,
    click_detect,
    expect_gallery_loaded,
    gallery_captions,
    gradio_error_badges,
    launch_chromium,
    number,
    outputs_signature,
    read_table,
    save_screenshot,
    set_slider,
    slider_value,
    upload,
    wait_for_new_results,
)

from client import DetectorClient
from ensemble import contract, spec

pytestmark = pytest.mark.server

# The model choices as the page labels them, and the ensemble each one asks.
FRAMEWORK_CHOICES = {
    "PyTorch · NanoDet-m": contract.PYTORCH,
    "TensorFlow · SSD MobileNet v2": contract.TENSORFLOW,
    "ONNX Runtime · CenterNet": contract.ONNXRUNTIME,
}
ALL_CHOICE = "All three + fused"
CHOICES = {ALL_CHOICE: contract.DETECT_ALL} | {
    label: fw.ensemble for label, fw in FRAMEWORK_CHOICES.items()
}
DETECTION_HEADERS = ["model", "label", "score", "x1", "y1", "x2", "y2"]
TIMING_HEADERS = ["step", "ms"]
NOT_AN_IMAGE = re.compile(r"not (an?|a valid|a readable|a supported) image", re.IGNORECASE)
ROUND_TRIP = re.compile(r"round.?trip", re.IGNORECASE)
SCORE_TOLERANCE = 0.006  # the table may round scores to two decimals
BOX_TOLERANCE = 0.51  # ...and pixels to whole ones
IOU = 0.5
LOAD_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def detector(triton_url):
    """The project's client on the same server: the oracle for what the tables must list."""
    with DetectorClient(triton_url) as client:
        yield client


@pytest.fixture(scope="module")
def app_url(triton_url):
    from ensemble.server import free_port
    from ui.app import LAUNCH_OPTIONS, build_app

    port = free_port()
    with DetectorClient(triton_url) as client:
        demo = build_app(client)
        demo.launch(
            **LAUNCH_OPTIONS,
            prevent_thread_lock=True,
            server_name="127.0.0.1",
            server_port=port,
            quiet=True,
        )
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            demo.close()


@pytest.fixture(scope="module")
def browser_context():
    """One browser profile for the module (its HTTP cache makes later pages quick)."""
    for old in ARTIFACTS_DIR.glob("*.png"):
        old.unlink()
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(viewport=VIEWPORT)
        yield context
        context.close()
        browser.close()


@pytest.fixture
def page(browser_context, app_url, request):
    """A freshly loaded page: a new Gradio session with nothing uploaded."""
    page = browser_context.new_page()
    failed_before = request.session.testsfailed
    page.goto(app_url)
    expect(page.locator("#status-line")).to_contain_text("up", timeout=LOAD_TIMEOUT_MS)
    yield page
    if request.session.testsfailed > failed_before:
        save_screenshot(page, f"failed-{request.node.name}")
    page.close()


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

    For one detector, every row is that detector's; for all three, the rows of each
    framework's label are its own result and the rest (one other name) the fused one.
    """
    (result,) = detector.detect(
        [image], model=CHOICES[choice], score_threshold=score, iou_threshold=IOU
    )
    if choice == ALL_CHOICE:
        expected = {label: result.per_framework[fw.key] for label, fw in FRAMEWORK_CHOICES.items()}
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


def assert_timings_shown(page: Page, model: str) -> None:
    """The round trip, then a number for every step model of the ensemble."""
    headers, rows = read_table(page, "timings-table")
    assert headers == TIMING_HEADERS
    steps = [row["step"] for row in rows]
    assert ROUND_TRIP.search(steps[0]), f"the round trip is not the first row: {steps}"
    (ensemble,) = [e for e in spec.ENSEMBLE_SPECS if e.name == model]
    for step in {s.model for s in ensemble.steps}:
        assert any(s.startswith(step) for s in steps), f"no row for {step}: {steps}"
    for row in rows:
        assert number(row["ms"]) >= 0, row
    assert number(rows[0]["ms"]) > 0, rows


# --- the tests ----------------------------------------------------------------------


def test_page_says_the_server_is_up_and_which_models_are_ready(page):
    status = page.locator("#status-line")
    expect(status).to_contain_text(re.compile(r"Server: up\b.*ready", re.IGNORECASE))
    for name in contract.ENSEMBLES:
        expect(status).to_contain_text(name)
    expect(status).not_to_contain_text("not ready")
    expect(page.locator("#detect-button")).to_have_text("Detect")
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
        named = FRAMEWORK_CHOICES if model == contract.DETECT_ALL else [choice]
        assert all(label in captions for label in named), f"{choice}: captions {captions}"
        rows = detection_rows(page)
        assert "person" in [r["label"] for r in rows], f"{choice}: no person row in {rows}"
        assert_boxes_sane(rows, 0.3)
        assert_rows_match_server(rows, detector, astronaut, choice, 0.3)
        assert_timings_shown(page, model)
        save_screenshot(page, f"{step:02d}-{model}")


@pytest.mark.parametrize(
    ("choice", "high", "low", "shot"),
    [
        ("TensorFlow · SSD MobileNet v2", 0.8, 0.3, "06-threshold-tensorflow"),
        ("PyTorch · NanoDet-m", 0.3, 0.1, "07-threshold-pytorch"),
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


def test_non_image_gets_a_clear_message_then_a_photo_works(page, astronaut, tmp_path):
    upload(page, astronaut)
    detect(page, "PyTorch · NanoDet-m")
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
    assert_timings_shown(page, contract.DETECT_ALL)
    save_screenshot(page, "11-photo-again")
