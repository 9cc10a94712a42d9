"""The page's video-clip tab (``ui.clips``) on the real server: a clip through the
tab's ``ClipDetector`` as ``build_tab`` makes it, damaged and refused clips, bad choices.

The clips are made here from scikit-image's bundled photos (``tests/media.py``): each
photo held for a few frames, so that a frame's detections say which photo it was.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from media import CLIP_FPS, CLIP_SIZE, SCENES, count_frames, scene_frames, scene_order, write_clip

from client import DetectorClient, probe_clip
from ui import clips
from ui.catalog import ServerModels
from ui.results import CLIP, ResultFolders

pytestmark = pytest.mark.server

MODEL = "detect_onnxruntime"  # one detector: quick on a loaded machine


@pytest.fixture(scope="module")
def scenes(photos_dir) -> list:
    return scene_frames(photos_dir, scene_order())


@pytest.fixture(scope="module")
def client(triton_url):
    with DetectorClient(triton_url) as c:
        yield c


@pytest.fixture
def tab(client, tmp_path):
    """The tab's detector as ``build_tab`` makes it, with an upload folder of its own."""
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    folders = ResultFolders(tmp_path / "downloads", {CLIP: 3})
    return clips.ClipDetector(client, ServerModels(client), folders, upload_root=uploads)


def uploaded(tab: clips.ClipDetector, name: str, data: bytes) -> dict:
    """A file as Gradio hands an upload over: in a folder of its own in the uploads."""
    folder = tab.upload_root / f"upload-{len(list(tab.upload_root.iterdir()))}"
    folder.mkdir()
    path = folder / name
    path.write_bytes(data)
    return {"path": str(path), "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def test_a_clip_comes_back_annotated_with_per_frame_detections_and_timings(tab, scenes, tmp_path):
    source = write_clip(tmp_path / "scenes.mp4", scenes, "mp4v")
    upload = uploaded(tab, "scenes.mp4", source.read_bytes())
    progress: list[tuple[int, int | None]] = []
    outcome = tab(upload, MODEL, 0.3, 0.5, "session-1", lambda d, t: progress.append((d, t)))
    assert not outcome.failed, outcome.message
    # The annotated clip: every frame, the source's size and rate, playable VP8 WebM.
    assert outcome.clip.suffix == ".webm"
    assert count_frames(outcome.clip) == len(scenes)
    info = probe_clip(outcome.clip)
    assert (info.width, info.height) == CLIP_SIZE and info.fps == CLIP_FPS
    # The per-frame JSON: each frame has what its photo warrants.
    (doc_path,) = [p for p in outcome.files if p.suffix == ".json"]
    doc = json.loads(doc_path.read_text())
    assert doc["video"]["frame_count"] == len(scenes)
    assert [im["frame_index"] for im in doc["images"]] == list(range(len(scenes)))
    for i, k in enumerate(scene_order()):
        labels = {r["category_name"] for r in doc["results"] if r["frame_index"] == i}
        assert SCENES[k][1] in labels, (i, SCENES[k], labels)
    # Progress counted frames up to the total the container declares.
    assert progress[0] == (0, len(scenes)) and progress[-1] == (len(scenes), len(scenes))
    # frames/s and what was found, then the timings per frame, step by step.
    assert re.search(r"\d+(\.\d+)? frames/s", outcome.message), outcome.message
    assert "person in 4" in outcome.message, outcome.message
    steps = tab.client.model_info(MODEL).steps
    table = {row[0]: row[1] for row in outcome.timings}
    for step in steps:
        assert isinstance(table[step], float) and table[step] > 0, (step, table)
    assert table[f"server total ({MODEL})"] > 0
    assert 'data-frames="12"' in outcome.latency_chart
    assert outcome.waterfall.count('class="waterfall-bar"') == len(set(steps))
    # The upload is gone; the result's files are in the session's folder.
    assert not Path(upload["path"]).exists()
    assert tab.folders.folders(CLIP) == [outcome.clip.parent]


def test_damaged_clips_get_one_clear_message_and_the_next_clip_works(
    tab, scenes, tmp_path, photos_dir
):
    whole = write_clip(tmp_path / "whole.mp4", scenes, "mp4v").read_bytes()
    webm = write_clip(tmp_path / "whole.webm", scenes, "VP80").read_bytes()
    damaged = {
        # An MP4 cut short has lost its index (written last): FFmpeg cannot open it.
        "cut.mp4": (whole[: len(whole) // 2], "not a readable video"),
        # WebM says its length up front: the stream ends before it.
        "cut.webm": (webm[: len(webm) // 2], "truncated or damaged"),
        "noise.mp4": (bytes(range(256)) * 64, "not a readable video"),
        "photo.mp4": ((photos_dir / "coffee.png").read_bytes(), "image"),
        "empty.mov": (b"", "empty file"),
    }
    for name, (data, says) in damaged.items():
        upload = uploaded(tab, name, data)
        outcome = tab(upload, MODEL, 0.3, 0.5, "session-2")
        assert outcome.failed
        assert outcome.message.startswith("**Error:** ") and name in outcome.message
        assert says in outcome.message, outcome.message
        assert "Traceback" not in outcome.message and str(tab.upload_root) not in outcome.message
        assert not Path(upload["path"]).exists()  # the upload is deleted all the same
        assert tab.folders.folders(CLIP) == []  # and no partial result is left
    outcome = tab(uploaded(tab, "good.webm", webm), MODEL, 0.3, 0.5, "session-2")
    assert not outcome.failed, outcome.message
    assert count_frames(outcome.clip) == len(scenes)


def test_a_clip_over_the_limit_is_refused_before_any_frame_is_sent(tab, scenes, tmp_path):
    tab.max_frames = 5
    data = write_clip(tmp_path / "long.mp4", scenes, "mp4v").read_bytes()
    before = tab.client.inference_statistics()
    outcome = tab(uploaded(tab, "long.mp4", data), MODEL, 0.3, 0.5)
    assert outcome.failed
    assert "long.mp4 is too long" in outcome.message and "at most 5 frames" in outcome.message
    assert "12 frames" in outcome.message
    after = tab.client.inference_statistics()

    def runs(stats):
        (entry,) = [m for m in stats["model_stats"] if m["name"] == MODEL]
        return int(entry["inference_stats"]["success"].get("count", 0))

    assert runs(after) == runs(before)


def test_bad_choices_get_a_message_and_touch_nothing(tab, scenes, tmp_path):
    data = write_clip(tmp_path / "c.mp4", scenes[:2], "mp4v").read_bytes()
    for model, score, says in (
        ("detect_nothing", 0.3, "unknown model 'detect_nothing'"),
        (MODEL, 1.5, "score threshold must be between 0 and 1"),
        (None, 0.3, "no model chosen"),
    ):
        outcome = tab(uploaded(tab, "c.mp4", data), model, score, 0.5)
        assert outcome.failed and says in outcome.message, outcome.message
    assert "no clip given" in tab(None, MODEL, 0.3, 0.5).message
    gone = uploaded(tab, "again.mp4", data)
    Path(gone["path"]).unlink()  # as after an earlier run of the same upload
    again = tab(gone, MODEL, 0.3, 0.5).message
    assert "again.mp4 is no longer here" in again and "upload it again" in again, again
    assert tab.folders.folders(CLIP) == []
    assert list(tab.upload_root.iterdir()) == []


def test_a_mov_clip_is_read_like_an_mp4(tab, scenes, tmp_path):
    data = write_clip(tmp_path / "phone.mov", scenes[::3], "mp4v").read_bytes()
    outcome = tab(uploaded(tab, "phone.mov", data), MODEL, 0.3, 0.5, "session-mov")
    assert not outcome.failed, outcome.message
    assert count_frames(outcome.clip) == len(scenes[::3])
    assert outcome.clip.name == "phone-detect-onnxruntime.webm"
