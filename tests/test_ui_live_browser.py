"""The webcam tab in a real headless Chromium, with Chromium's fake camera, against the
real server.

Each test launches its own browser, because the camera is decided at launch:
``--use-fake-device-for-media-stream --use-fake-ui-for-media-stream
--use-file-for-fake-video-capture=FILE`` plays a Y4M file made here from the astronaut
photo, in a loop, as the camera (and grants it); ``--deny-permission-prompts`` refuses
it; without a fake device, a headless Chromium has no camera at all. Each step leaves a
full-page screenshot in ``test-artifacts/ui/webcam/``.
"""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import scene_frames, write_y4m
from playwright.sync_api import Page, expect
from ui_helpers import (
    ARTIFACTS_DIR,
    GRANTED,
    REFUSED,
    RESULT_TIMEOUT_MS,
    STREAM_TIMEOUT_MS,
    ask_for_camera,
    camera_page,
    choose_model,
    click_detect,
    expect_gallery_loaded,
    markdown_text,
    serving_page,
    upload,
    wait_for_frames,
)

from client import DetectorClient
from ui import live

pytestmark = [
    pytest.mark.server,
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]

SHOTS = ARTIFACTS_DIR / "webcam"
TENSORFLOW_CHOICE = "TensorFlow (SavedModel) · SSD MobileNet v2 (COCO)"
TENSORFLOW = "detect_tensorflow"
SCORE = 0.5  # the astronaut photo gives one "person" above this (tests/media.py SCENES)
FRAMES_WANTED = 3  # annotated frames that must arrive while streaming


@pytest.fixture(scope="module", autouse=True)
def fresh_shots():
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()


@pytest.fixture(scope="module")
def served():
    """The page's ``LiveStreams`` (its sessions), as the page below builds it."""
    return []


@pytest.fixture(scope="module")
def app_url(triton_url, served):
    real = live.LiveStreams

    def keep(*args, **kwargs):
        served.append(real(*args, **kwargs))
        return served[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(live, "LiveStreams", keep)  # the real class, its instance kept
        with serving_page(triton_url) as url:
            patch.undo()
            yield url


def wait_until_no_session(streams: live.LiveStreams, timeout_s: float = 60.0) -> int:
    """Sessions the page still keeps once they are all gone, or when ``timeout_s`` is up."""
    deadline = time.monotonic() + timeout_s
    while streams.sessions() and time.monotonic() < deadline:
        time.sleep(0.2)
    return streams.sessions()


@pytest.fixture(scope="module")
def astronaut_camera(photos_dir, tmp_path_factory) -> Path:
    """A Y4M of the astronaut photo only: the fake camera loops it."""
    frames = scene_frames(photos_dir, [0] * 6)
    return write_y4m(tmp_path_factory.mktemp("camera") / "astronaut.y4m", frames)


@pytest.fixture(scope="module")
def two_scene_camera(photos_dir, tmp_path_factory) -> Path:
    """A Y4M of the astronaut for a second, then the coffee cup for a second (looped)."""
    frames = scene_frames(photos_dir, [0] * 6 + [1] * 6)
    return write_y4m(tmp_path_factory.mktemp("camera") / "two-scenes.y4m", frames, fps=6)


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True, animations="disabled")


def shown_count(page: Page) -> int:
    found = re.search(r"(\d+) shown", markdown_text(page, "webcam-stats"))
    return int(found.group(1)) if found else 0


# Collects, on every poll, the detections line and the annotated frame shown; done once
# both scenes have been seen.
_SEEN_JS = """() => {
    const seen = (window.__webcamSeen ??= {texts: new Set(), frames: new Set()});
    const text = document.querySelector('#webcam-detections [data-testid=markdown]');
    const img = document.querySelector('#webcam-output img');
    if (text) seen.texts.add(text.innerText.trim());
    if (img && img.src.startsWith('data:')) seen.frames.add(img.src.length + img.src.slice(-64));
    const texts = [...seen.texts];
    return texts.some(t => /person/.test(t) && !/cup/.test(t)) && texts.some(t => /cup/.test(t))
        && {texts, frames: seen.frames.size};
}"""


def set_up_stream(page: Page, prefix: str) -> None:
    """The TensorFlow model at SCORE, the camera granted (not yet streaming)."""
    choose_model(page, TENSORFLOW_CHOICE)
    box = page.locator("#score-threshold input[type=number]")
    box.fill(str(SCORE))
    box.press("Enter")
    expect(page.locator("#webcam-stats")).to_contain_text(live.NO_STREAM)
    shot(page, f"{prefix}1-webcam-tab")
    ask_for_camera(page)
    expect(page.locator("#webcam-message")).to_contain_text("Camera on")
    expect(page.locator("#webcam-input video")).to_be_visible()
    shot(page, f"{prefix}2-camera-granted")


def decode_data_url(url: str) -> np.ndarray:
    head, _, payload = url.partition(",")
    assert head == "data:image/jpeg;base64", f"not an inline JPEG: {head[:40]}"
    jpeg = base64.b64decode(payload)
    assert jpeg[:3] == b"\xff\xd8\xff", "not a JPEG"
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "the annotated frame does not decode"
    return image


def camera_snapshot(page: Page) -> bytes:
    """What the camera shows now, as a JPEG (drawn from its <video>, as Gradio does)."""
    url = page.locator("#webcam-input video").evaluate(
        """video => {
            const canvas = document.createElement('canvas');
            canvas.width = video.videoWidth;
            canvas.height = video.videoHeight;
            canvas.getContext('2d').drawImage(video, 0, 0);
            return canvas.toDataURL('image/jpeg');
        }"""
    )
    return base64.b64decode(url.partition(",")[2])


def labels_shown(page: Page) -> set[str]:
    text = markdown_text(page, "webcam-detections")
    assert text.startswith("Last frame: "), text
    parts = text.removeprefix("Last frame: ").split(", ")
    return {re.sub(r" \d\.\d\d( \(\+\d+ more\))?$", "", p) for p in parts}


# --- the stream -----------------------------------------------------------------------


def test_the_fake_camera_streams_and_annotated_frames_come_back(
    app_url, served, astronaut_camera, triton_url, request
):
    camera = f"--use-file-for-fake-video-capture={astronaut_camera}"
    with camera_page(app_url, request, *GRANTED, camera) as page:
        set_up_stream(page, "")
        page.locator("#webcam-input button", has_text="Record").click()
        wait_for_frames(page, FRAMES_WANTED)
        shot(page, "3-streaming")
        stats = markdown_text(page, "webcam-stats")
        assert "Error" not in stats, stats
        print(f"webcam stream on this machine: {stats}")  # the figures, for the record
        assert re.search(r"\d+\.\d frames/s · latency \d+ ms", stats), stats
        # One reading of the line (it changes as frames come): shown and dropped are
        # parts of the frames offered.
        counts = re.search(r"(\d+) shown, (\d+) dropped of (\d+) frames", stats)
        assert counts, stats
        shown, dropped, offered = map(int, counts.groups())
        assert shown + dropped <= offered, stats

        # The astronaut gives one thing: a person; the server, asked directly about what
        # the camera shows, says the same.
        assert labels_shown(page) == {"person"}
        with DetectorClient(triton_url) as client:
            (direct,) = client.detect([camera_snapshot(page)], TENSORFLOW, SCORE, 0.5)
        assert {d.label for d in direct.detections} == {"person"}

        # The frame shown is the server's JPEG, at the camera frame's size.
        src = page.locator("#webcam-output img").first.get_attribute("src")
        annotated = decode_data_url(src)
        size = page.locator("#webcam-input video").evaluate("v => [v.videoHeight, v.videoWidth]")
        assert list(annotated.shape[:2]) == size
        # ...and frames keep arriving.
        before = shown_count(page)
        wait_for_frames(page, before + 2)

        page.locator("#webcam-input button", has_text="Stop").click()
        expect(page.locator("#webcam-input button", has_text="Record")).to_be_visible(
            timeout=RESULT_TIMEOUT_MS
        )
        shot(page, "4-stopped")
        (streams,) = served
        assert streams.sessions() >= 1
    # The page is closed: Gradio's unload for its session forgets the stream's counters
    # and last frame.
    assert wait_until_no_session(streams) == 0


# --- no camera --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("camera_args", "message"),
    [(REFUSED, "Camera access was refused"), ((), "No camera found")],
    ids=["refused", "missing"],
)
def test_a_refused_or_missing_camera_is_said_and_the_page_still_works(
    app_url, photos_dir, camera_args, message, request
):
    name = request.node.callspec.id
    with camera_page(app_url, request, *camera_args) as page:
        ask_for_camera(page)
        expect(page.locator("#webcam-message")).to_contain_text(message)
        shot(page, f"{name}-1-message")
        # Nothing was streamed, and the rest of the page goes on working.
        expect(page.locator("#webcam-stats")).to_contain_text(live.NO_STREAM)
        page.get_by_role("tab", name="Photo").click()
        choose_model(page, TENSORFLOW_CHOICE)
        upload(page, photos_dir / "astronaut.png")
        click_detect(page)
        expect_gallery_loaded(page, 1)
        expect(page.locator("#message")).to_contain_text("person")
        shot(page, f"{name}-2-photo-still-works")


def test_the_annotated_stream_follows_the_camera_from_scene_to_scene(
    app_url, two_scene_camera, request
):
    camera = f"--use-file-for-fake-video-capture={two_scene_camera}"
    with camera_page(app_url, request, *GRANTED, camera) as page:
        set_up_stream(page, "scenes-")
        page.locator("#webcam-input button", has_text="Record").click()
        seen = page.wait_for_function(_SEEN_JS, polling=100, timeout=STREAM_TIMEOUT_MS)
        shot(page, "scenes-3-streaming")
        seen = seen.json_value()
        page.locator("#webcam-input button", has_text="Stop").click()
        # Each scene's own objects, one after the other, in new annotated frames.
        texts = seen["texts"]
        assert any(re.fullmatch(r"Last frame: person \d\.\d\d", t) for t in texts), texts
        assert any("cup" in t and "person" not in t for t in texts), texts
        assert seen["frames"] >= 2, "the annotated frame shown never changed"
