"""The page's video-clip tab (``ui.clips``): its pure parts without a server, then the
tab's logic and its ``/detect_clip`` API against the real server.

The clips are made here from scikit-image's bundled photos (``tests/media.py``): each
photo held for a few frames, so that a frame's detections say which photo it was.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from media import CLIP_FPS, CLIP_SIZE, SCENES, count_frames, scene_frames, scene_order, write_clip

from client import ClipTooLong, DetectorClient, VideoNotReadable, probe_clip
from client.statistics import DURATIONS, Duration, ModelStatistics
from ui import clips
from ui.results import CLIP, ResultFolders

# --- unit: pure parts -----------------------------------------------------------------


@pytest.mark.unit
def test_request_sizes_and_latencies_follow_the_batches():
    assert clips.request_sizes(10, 4) == [4, 4, 2]
    assert clips.request_sizes(8, 4) == [4, 4]
    assert clips.request_sizes(0, 4) == []
    # Every frame carries its request's round trip; one per request comes back.
    frames = [0.4] * 4 + [0.2] * 4 + [0.1] * 2
    assert clips.request_latencies(frames, 4) == [0.4, 0.2, 0.1]
    with pytest.raises(ValueError):
        clips.request_sizes(3, 0)


def _snapshot(**models: tuple[int, int]) -> dict:
    """A statistics snapshot: each model's (count, ns) in every duration."""
    return {
        m: ModelStatistics(durations=dict.fromkeys(DURATIONS, Duration(*pair)))
        for m, pair in models.items()
    }


@pytest.mark.unit
def test_clip_timing_rows_share_each_requests_time_over_its_frames():
    # 6 frames, 4 per request: requests of 4 and 2 frames, round trips 0.8 s and 0.4 s.
    latencies = [0.8] * 4 + [0.4] * 2
    before = _snapshot(detect_x=(0, 0), pre=(0, 0), infer=(0, 0))
    # Two requests in the window: the ensemble 300 ms each, pre 30 ms, infer 150 ms per
    # field (four step fields: 4 x 150 = 600 ms per request).
    after = _snapshot(detect_x=(2, 600_000_000), pre=(2, 60_000_000), infer=(2, 300_000_000))
    rows = clips.clip_timing_rows(latencies, 3.0, 4, "detect_x", ["pre", "infer"], before, after)
    table = dict((r[0], r[1]) for r in rows)
    assert table[clips.ROUND_TRIP_REQUEST] == 600.0  # (800 + 400) / 2
    assert table[clips.ROUND_TRIP_FRAME] == 200.0  # (800 + 400) / 6 frames
    assert table[clips.WALL_FRAME] == 500.0  # 3 s / 6 frames
    # 3 frames per request: the ensemble's 300 ms per request is 100 ms per frame.
    assert table["server total (detect_x)"] == 100.0
    assert table["pre"] == 4 * 30 / 3 == 40.0
    assert table["infer"] == 4 * 150 / 3 == 200.0
    # Without statistics: the client's figures only.
    assert [r[0] for r in clips.clip_timing_rows(latencies, 3.0, 4, "detect_x")] == [
        clips.ROUND_TRIP_REQUEST,
        clips.ROUND_TRIP_FRAME,
        clips.WALL_FRAME,
    ]
    assert clips.clip_timing_rows([], 1.0, 4, "detect_x") == []


@pytest.mark.unit
def test_frame_durations_are_the_mean_requests_steps_over_its_frames():
    before = _snapshot(pre=(0, 0), infer=(0, 0))
    after = _snapshot(pre=(1, 10_000_000), infer=(0, 0))  # infer: no run in the window
    durations = clips.frame_durations(before, after, ["pre", "infer"], 4.0)
    assert durations == {"pre": pytest.approx(4 * 10 / 4), "infer": None}


@pytest.mark.unit
def test_latency_chart_has_a_point_per_frame_and_labelled_axes():
    latencies = [120.0, 80.0, 80.0, 310.0, 95.0]
    svg = clips.latency_svg(latencies, "Round trip per frame")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert 'data-frames="5"' in svg
    points = re.search(r'class="latency-line" points="([^"]+)"', svg).group(1).split()
    assert len(points) == 5
    xs = [float(p.split(",")[0]) for p in points]
    ys = [float(p.split(",")[1]) for p in points]
    assert xs == sorted(xs) and len(set(xs)) == 5  # frames left to right
    # SVG's y grows downwards: the slowest frame is the highest point.
    assert min(ys) == ys[3] and ys[1] == ys[2] > ys[0]
    assert ">frame</text>" in svg and ">round trip (ms)</text>" in svg
    assert "mean 137.0 ms" in svg  # (120 + 80 + 80 + 310 + 95) / 5
    # One frame still draws a line; none draws no line.
    assert "latency-line" in clips.latency_svg([50.0])
    assert "latency-line" not in clips.latency_svg([])


@pytest.mark.unit
def test_label_frames_counts_frames_of_the_chosen_model_only():
    results = [
        {"frame_index": 0, "category_name": "person", "model": "detect_all"},
        {"frame_index": 0, "category_name": "person", "model": "detect_all"},  # two people
        {"frame_index": 1, "category_name": "person", "model": "detect_all"},
        {"frame_index": 1, "category_name": "cup", "model": "detect_all"},
        {"frame_index": 2, "category_name": "cup", "model": "detect_onnxruntime"},
    ]
    assert clips.label_frames(results, "detect_all") == {"person": 2, "cup": 1}


@pytest.mark.unit
def test_upload_path_reads_what_gradio_and_scripts_give():
    assert clips.upload_path(None) is None
    assert clips.upload_path({"path": None}) is None
    given = {"path": "/tmp/x/abc.mp4", "orig_name": "holiday.mp4", "meta": {}}
    assert clips.upload_path(given) == (Path("/tmp/x/abc.mp4"), "holiday.mp4")
    assert clips.upload_path("/tmp/y/clip.webm") == (Path("/tmp/y/clip.webm"), "clip.webm")


@pytest.mark.unit
def test_remove_upload_deletes_only_inside_the_upload_folder(tmp_path):
    root = tmp_path / "uploads"
    upload = root / "hash1" / "clip.mp4"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"x")
    outside = tmp_path / "mine.mp4"
    outside.write_bytes(b"y")
    assert clips.remove_upload(upload, root)
    assert not upload.exists() and not upload.parent.exists() and root.is_dir()
    assert not clips.remove_upload(outside, root)
    assert outside.exists()
    (root / "hash2").mkdir()
    assert not clips.remove_upload(root / "hash2" / "gone.mp4", root)
    assert not (root / "hash2").exists()  # an emptied upload folder goes all the same


@pytest.mark.unit
def test_clip_errors_name_the_upload_and_the_limit():
    long = clips.clip_error(ClipTooLong("/tmp/gradio/x/c.mp4", 1801, 1800), "c.mp4")
    assert "c.mp4" in long and "1800 frames" in long and "/tmp/gradio" not in long
    bad = clips.clip_error(VideoNotReadable("/tmp/gradio/x/n.mp4", "empty file"), "n.mp4")
    assert bad == "n.mp4 is not a readable video: empty file"


# --- server: the tab's logic on the real server ---------------------------------------

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
    from ui.catalog import ServerModels

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


@pytest.mark.server
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


@pytest.mark.server
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


@pytest.mark.server
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


@pytest.mark.server
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


@pytest.mark.server
def test_a_mov_clip_is_read_like_an_mp4(tab, scenes, tmp_path):
    data = write_clip(tmp_path / "phone.mov", scenes[::3], "mp4v").read_bytes()
    outcome = tab(uploaded(tab, "phone.mov", data), MODEL, 0.3, 0.5, "session-mov")
    assert not outcome.failed, outcome.message
    assert count_frames(outcome.clip) == len(scenes[::3])
    assert outcome.clip.name == "phone-detect-onnxruntime.webm"
