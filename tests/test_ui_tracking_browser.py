"""The page's Track switch in a real headless Chromium, against the real server's
tracking ensembles: a clip tracked on the Video clip tab (ids drawn, the distinct
objects counted, the MOT rows offered), and Chromium's fake camera tracked on the
Webcam tab (ids shown, the distinct objects so far, the sequence ended at Stop).

The page runs in this process (``ui_helpers.serving_page``); its ``LiveStreams`` is
kept, to see that a stopped stream's tracking sequence is ended. Screenshots go to
``test-artifacts/ui/tracking/``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from media import CLIP_SIZE, count_frames, scene_frames, write_clip, write_y4m
from playwright.sync_api import Page, expect
from ui_helpers import (
    ARTIFACTS_DIR,
    GRANTED,
    STREAM_TIMEOUT_MS,
    ask_for_camera,
    camera_page,
    choose_model,
    download_links,
    fetch,
    fresh_browser,
    loaded_page,
    markdown_text,
    run_clip,
    serving_page,
)

from ensemble import contract
from ui import live
from ui.common import objects_text

pytestmark = [
    pytest.mark.server,
    pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning"),
]

SHOTS = ARTIFACTS_DIR / "tracking"
TENSORFLOW_CHOICE = "TensorFlow (SavedModel) · SSD MobileNet v2 (COCO)"
TRACKING = contract.tracking_name("detect_tensorflow")
SCORE = 0.5  # the astronaut photo gives one "person" above this (tests/media.py SCENES)
FRAMES = 12  # of the tracked clip: the astronaut walking right


@pytest.fixture(scope="module")
def served() -> list[live.LiveStreams]:
    """The page's ``LiveStreams``, as the page below builds it."""
    return []


@pytest.fixture(scope="module")
def app_url(triton_url, served):
    real = live.LiveStreams

    def keep(*args, **kwargs):
        served.append(real(*args, **kwargs))
        return served[-1]

    SHOTS.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(live, "LiveStreams", keep)  # the real class, its instance kept
        with serving_page(triton_url) as url:
            patch.undo()
            yield url


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True, animations="disabled")


def walking_clip(photos_dir: Path, to: Path) -> Path:
    """``FRAMES`` frames of ``CLIP_SIZE``: the astronaut photo at half size, moving 16 px
    right each frame over grey."""
    width, height = CLIP_SIZE
    person = cv2.resize(cv2.imread(str(photos_dir / "astronaut.png")), (256, 256))
    frames = []
    for k in range(FRAMES):
        canvas = np.full((height, width, 3), 96, np.uint8)
        canvas[40:296, 16 * k : 16 * k + 256] = person
        frames.append(canvas)
    return write_clip(to, frames, "mp4v")


def set_score(page: Page, value: float) -> None:
    box = page.locator("#score-threshold input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_a_tracked_clip_counts_its_person_once_and_offers_the_mot_rows(
    app_url, photos_dir, tmp_path, request
):
    clip = walking_clip(photos_dir, tmp_path / "walk.mp4")
    with (
        fresh_browser(SHOTS) as context,
        loaded_page(context, app_url, request, "up") as page,
    ):
        page.locator("#input-tabs").get_by_role("tab", name="Video clip").click()
        choose_model(page, TENSORFLOW_CHOICE)
        set_score(page, SCORE)
        page.locator("#clip-track input[type=checkbox]").check()
        message = run_clip(page, clip)
        shot(page, "1-tracked-clip")
        assert f"{FRAMES} frames of 480×336 tracked through {TRACKING}" in message, message
        # What else the photo holds may be tracked too (a "tv" at 0.5): the person is one.
        said = re.search(r"Distinct objects: (.+)\.$", message)
        assert said and "1 person" in said.group(1).split(", "), message
        page.wait_for_function(
            "() => document.querySelector('#annotated-clip video')?.readyState >= 1",
            timeout=30_000,
        )
        links = download_links(page)
        stem = f"walk-{TRACKING.replace('_', '-')}"
        assert {name.removeprefix(stem) for name in links} == {
            ".webm", "-frames.json", ".mot.txt"
        }, list(links)  # fmt: skip
        rows = fetch(page, links[f"{stem}.mot.txt"], tmp_path / "mot.txt").read_text()
        annotated = fetch(page, links[f"{stem}.webm"], tmp_path / "annotated.webm")
        assert count_frames(annotated) == FRAMES
    # MOT Challenge rows frame,id,x,y,w,h,score,label: the message's counts are their
    # distinct ids per label; the person has one id, from the second or third frame on
    # (a track is confirmed by min_hits frames).
    fields = [row.split(",") for row in rows.splitlines()]
    ids: dict[str, set[str]] = {}
    for f in fields:
        ids.setdefault(f[7], set()).add(f[1])
    counted = {label: len(found) for label, found in ids.items()}
    assert said.group(1) == objects_text(
        dict(sorted(counted.items(), key=lambda kv: (-kv[1], kv[0])))
    )
    fields = [f for f in fields if f[7] == "person"]
    frames = [int(f[0]) for f in fields]
    assert frames == sorted(frames) and frames[-1] == FRAMES and len(frames) >= FRAMES - 2
    # The box moves right with the person, 16 px a frame.
    xs = [float(f[2]) for f in fields]
    assert xs[-1] - xs[0] == pytest.approx(16 * (frames[-1] - frames[0]), abs=24)


def test_the_tracked_webcam_shows_ids_and_the_distinct_objects_and_ends_at_stop(
    app_url, served, photos_dir, tmp_path, request
):
    camera = write_y4m(tmp_path / "astronaut.y4m", scene_frames(photos_dir, [0] * 6))
    with camera_page(
        app_url, request, *GRANTED, f"--use-file-for-fake-video-capture={camera}"
    ) as page:
        choose_model(page, TENSORFLOW_CHOICE)
        set_score(page, SCORE)
        page.locator("#webcam-track input[type=checkbox]").check()
        ask_for_camera(page)
        expect(page.locator("#webcam-message")).to_contain_text("Camera on")
        page.locator("#webcam-input button", has_text="Record").click()
        # The person gets an id once its track is confirmed (the second frame sent).
        expect(page.locator("#webcam-detections")).to_contain_text(
            re.compile(r"Last frame: #\d+ person \d\.\d\d"), timeout=STREAM_TIMEOUT_MS
        )
        expect(page.locator("#webcam-objects")).to_contain_text("Distinct objects so far: 1 person")
        shot(page, "2-tracked-webcam")
        stats = markdown_text(page, "webcam-stats")
        assert "Error" not in stats, stats
        (streams,) = served
        assert streams.trackers() == 1
        page.locator("#webcam-input button", has_text="Stop").click()
        # The stream's end ends its tracking sequence on the server.
        deadline = time.monotonic() + 30
        while streams.trackers() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert streams.trackers() == 0
