"""The page's Video clip tab in a real headless Chromium, against the real server.

The page (``ui.app.build_app``) runs in this process on a free port, talking to the
session's Triton; Playwright uploads clips this module makes from the bundled photos
(``tests/media.py``), as a person would, and reads back what the page shows: the
annotated clip in its ``<video>`` element, the downloads fetched over HTTP from the
page's own links, the latency chart, the waterfall and the timings. Each step leaves a
full-page screenshot in ``test-artifacts/ui/video/``. The last test calls the same
event as a script would, through ``gradio_client`` and its ``/detect_clip`` API.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from media import SCENES, count_frames, scene_frames, scene_order, write_clip
from playwright.sync_api import Page, expect
from ui_helpers import (
    ARTIFACTS_DIR,
    download_links,
    fetch,
    fresh_browser,
    loaded_page,
    read_table,
    run_clip,
    serving_page,
)

from client import DetectorClient
from ensemble import contract

pytestmark = [
    pytest.mark.server,
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]

SHOTS = ARTIFACTS_DIR / "video"
FRAMES = len(scene_order())


@pytest.fixture(scope="module")
def gradio_dir(tmp_path_factory) -> Iterator[Path]:
    """Gradio's upload and cache folder for this module's page (read as the page is
    built), apart from other tests' so that what is left in it is this page's."""
    folder = tmp_path_factory.mktemp("gradio")
    saved = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    try:
        yield folder
    finally:
        if saved is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = saved


@pytest.fixture(scope="module")
def app_url(triton_url, gradio_dir):
    with serving_page(triton_url) as url:
        yield url


@pytest.fixture(scope="module")
def browser_context():
    SHOTS.mkdir(parents=True, exist_ok=True)
    with fresh_browser(SHOTS) as context:
        yield context


@pytest.fixture
def page(browser_context, app_url, request):
    with loaded_page(browser_context, app_url, request, "up") as page:
        page.locator("#input-tabs").get_by_role("tab", name="Video clip").click()
        expect(page.locator("#input-clip")).to_be_visible()
        yield page


@pytest.fixture(scope="module")
def clips_dir(photos_dir, tmp_path_factory) -> Path:
    """The clips the tests upload: the scenes as MP4, and damaged copies of it."""
    folder = tmp_path_factory.mktemp("clips")
    good = write_clip(folder / "scenes.mp4", scene_frames(photos_dir, scene_order()), "mp4v")
    data = good.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])  # its index is lost
    (folder / "noise.mp4").write_bytes(bytes((i * 7919) % 251 for i in range(40_000)))
    return folder


# --- steps ----------------------------------------------------------------------------


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True, animations="disabled")


def shoot_progress(page: Page) -> None:
    """Once the progress bar counts the clip's frames, a screenshot of it."""
    tracker = page.locator("#annotated-clip [data-testid=status-tracker]")
    expect(tracker).to_contain_text(re.compile(rf"\b\d+/{FRAMES}\b"), timeout=60_000)
    shot(page, "02-progress")


def toasts(page: Page) -> list[str]:
    """Gradio's pop-up messages now on the page (its "Error" toasts among them)."""
    return page.locator("[data-testid=toast-body]").all_inner_texts()


def video_state(page: Page) -> dict:
    """The annotated clip's <video> once it has its metadata (or has failed)."""
    video = page.locator("#annotated-clip video")
    expect(video).to_have_count(1, timeout=30_000)
    return video.evaluate(
        """(v, timeout) => new Promise(done => {
            const report = () => done({
                readyState: v.readyState, duration: v.duration,
                error: v.error ? v.error.code : null, src: v.currentSrc,
                width: v.videoWidth, height: v.videoHeight});
            if (v.readyState >= 1 || v.error) return report();
            v.addEventListener('loadedmetadata', report);
            v.addEventListener('error', report);
            setTimeout(report, timeout);
        })""",
        30_000,
    )


def assert_good_result(page: Page, tmp_path: Path, model: str, grpc_url: str) -> None:
    """The clip plays, its files have every frame and what each frame warrants, and
    the timings are shown."""
    message = page.locator("#clip-message").inner_text()
    assert "Error" not in message, message
    assert re.search(rf"{FRAMES} frames of 480×336 through {model}", message), message
    assert re.search(r"\d+(\.\d+)? frames/s", message), message
    state = video_state(page)
    assert state["error"] is None, state
    assert not toasts(page), toasts(page)
    assert state["readyState"] >= 1 and state["duration"] > 0, state
    assert (state["width"], state["height"]) == (480, 336), state
    # The page's own links, fetched over HTTP as a click would.
    links = download_links(page)
    (clip_name,) = [n for n in links if n.endswith(".webm")]
    (json_name,) = [n for n in links if n.endswith(".json")]
    clip = fetch(page, links[clip_name], tmp_path / clip_name)
    assert count_frames(clip) == FRAMES
    doc = json.loads(fetch(page, links[json_name], tmp_path / json_name).read_text())
    assert [im["frame_index"] for im in doc["images"]] == list(range(FRAMES))
    own = [r for r in doc["results"] if r["model"] == model]
    for i, k in enumerate(scene_order()):
        labels = {r["category_name"] for r in own if r["frame_index"] == i}
        assert SCENES[k][1] in labels, (i, SCENES[k], labels)
    # The latency chart: one point per frame, axes labelled.
    chart = page.locator("#clip-latency svg.latency-chart")
    expect(chart).to_have_attribute("data-frames", str(FRAMES))
    points = chart.locator("polyline.latency-line").get_attribute("points").split()
    assert len(points) == FRAMES
    expect(chart).to_contain_text("frame")
    expect(chart).to_contain_text("round trip (ms)")
    # The waterfall of the mean frame and the per-frame timings table, a row per step.
    expect(page.locator("#clip-waterfall rect.waterfall-bar").first).to_be_visible()
    headers, rows = read_table(page, "clip-timings")
    assert headers == ["step", "ms per frame"]
    table = {row["step"]: row["ms per frame"] for row in rows}
    with DetectorClient(grpc_url) as c:
        steps = c.model_info(model).steps
    for step in steps:
        assert any(s.startswith(step) for s in table), (step, list(table))
    assert float(table[f"server total ({model})"]) > 0, table


# --- the tests ----------------------------------------------------------------------


def test_a_clip_plays_back_annotated_with_every_frame_and_its_detections(
    page, clips_dir, tmp_path, triton_url
):
    shot(page, "01-video-tab")
    expect(page.locator("#clip-intro")).to_contain_text("at most 1800 frames and 50 MB")
    run_clip(page, clips_dir / "scenes.mp4", while_running=shoot_progress)
    assert_good_result(page, tmp_path, contract.DETECT_ALL, triton_url)
    page.locator("#annotated-clip").scroll_into_view_if_needed()
    shot(page, "03-annotated-clip")
    # The upload is deleted after its run: the input is cleared, not left pointing at it.
    expect(page.locator("#input-clip a[href]")).to_have_count(0)


def test_damaged_clips_get_a_clear_message_and_a_good_clip_still_works(
    page, clips_dir, tmp_path, triton_url
):
    for step, (name, says) in enumerate(
        (
            ("truncated.mp4", "truncated.mp4 is not a readable video"),
            ("noise.mp4", "noise.mp4 is not a readable video"),
        ),
        start=4,
    ):
        message = run_clip(page, clips_dir / name)
        assert message.startswith("Error:") and says in message, message
        assert "Traceback" not in message
        assert not toasts(page), f"more than the tab's message: {toasts(page)}"
        expect(page.locator("#annotated-clip video")).to_have_count(0)
        shot(page, f"{step:02d}-{name.replace('.', '-')}")
    page.locator("#model-choice").get_by_label(
        "ONNX Runtime · CenterNet MobileNetV3 512", exact=True
    ).check()
    run_clip(page, clips_dir / "scenes.mp4")
    assert_good_result(page, tmp_path, "detect_onnxruntime", triton_url)
    shot(page, "06-good-clip-after-damaged")


def test_closing_the_page_deletes_its_result_files(browser_context, app_url, clips_dir, request):
    with loaded_page(browser_context, app_url, request, "up") as page:
        page.locator("#input-tabs").get_by_role("tab", name="Video clip").click()
        page.locator("#model-choice").get_by_label(
            "ONNX Runtime · CenterNet MobileNetV3 512", exact=True
        ).check()
        run_clip(page, clips_dir / "scenes.mp4")
        links = download_links(page)
        files = [Path(unquote(urlparse(u).path).split("file=", 1)[-1]) for u in links.values()]
        folder = {f.parent for f in files}.pop()
        assert folder.name.startswith("clip-") and folder.is_dir(), files
    # The page is closed: Gradio's unload event deletes the session's folder.
    deadline = time.monotonic() + 120
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not folder.exists(), f"{folder} outlived its page"


def clip_folders(gradio_dir: Path) -> set[Path]:
    return {p for p in gradio_dir.rglob("clip-*") if p.is_dir()}


def test_scripts_call_detect_clip_through_gradio_client(app_url, gradio_dir, clips_dir, tmp_path):
    from gradio_client import Client, handle_file

    folders_before = clip_folders(gradio_dir)

    client = Client(app_url, verbose=False, download_files=str(tmp_path))
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert [p["parameter_name"] for p in api["/detect_clip"]["parameters"]] == [
        "clip",
        "model",
        "score_threshold",
        "iou_threshold",
        "track",
    ]
    clip, files, message, _table, _steps, chart = client.predict(
        handle_file(str(clips_dir / "scenes.mp4")),
        "detect_onnxruntime",
        0.3,
        0.5,
        api_name="/detect_clip",
    )
    assert "frames/s" in message, message
    assert count_frames(Path(clip["video"] if isinstance(clip, dict) else clip)) == FRAMES
    assert f'data-frames="{FRAMES}"' in chart
    bad = client.predict(
        handle_file(str(clips_dir / "noise.mp4")), "detect_onnxruntime", 0.3, 0.5,
        api_name="/detect_clip",
    )  # fmt: skip
    assert "noise.mp4 is not a readable video" in bad[2]
    again = client.predict(
        handle_file(str(clips_dir / "scenes.mp4")), "detect_onnxruntime", 0.3, 0.5,
        api_name="/detect_clip",
    )  # fmt: skip
    assert "frames/s" in again[2], again[2]
    # Every upload is gone (this module's included); the session keeps one result.
    assert not [p for p in gradio_dir.rglob("*.mp4")], list(gradio_dir.rglob("*.mp4"))
    new = clip_folders(gradio_dir) - folders_before
    assert len(new) == 1, new
    assert sorted(p.suffix for p in new.pop().iterdir()) == [".json", ".webm"]


def test_a_clip_over_the_upload_limit_is_refused_with_the_limit(page, tmp_path, gradio_dir):
    big = tmp_path / "big.mp4"
    with big.open("wb") as f:
        f.truncate(51 * 1024 * 1024)  # over LAUNCH_OPTIONS' 50 MB (sparse: no disk used)
    page.locator("#input-clip input[type=file]").set_input_files(big)
    # Gradio refuses it before uploading, in a toast that names the file and the limit.
    toast = page.locator("[data-testid=toast-body]")
    expect(toast).to_contain_text("maximum allowed size of 50", timeout=30_000)
    expect(toast).to_contain_text("big.mp4")
    shot(page, "07-over-upload-limit")
    expect(page.locator("#input-clip a[href]")).to_have_count(0)
    assert not list(gradio_dir.rglob("big.mp4"))
