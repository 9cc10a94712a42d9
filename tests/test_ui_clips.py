"""The page's video-clip tab (``ui.clips``): its pure parts, without a server (the
tab against the real server: test_ui_clips_server.py; its result folders:
test_ui_results.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from client import ClipTooLong, VideoNotReadable
from client.statistics import DURATIONS, Duration, ModelStatistics
from ui import clips

pytestmark = pytest.mark.unit


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


def test_frame_durations_are_the_mean_requests_steps_over_its_frames():
    before = _snapshot(pre=(0, 0), infer=(0, 0))
    after = _snapshot(pre=(1, 10_000_000), infer=(0, 0))  # infer: no run in the window
    durations = clips.frame_durations(before, after, ["pre", "infer"], 4.0)
    assert durations == {"pre": pytest.approx(4 * 10 / 4), "infer": None}


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


def test_label_frames_counts_frames_of_the_chosen_model_only():
    results = [
        {"frame_index": 0, "category_name": "person", "model": "detect_all"},
        {"frame_index": 0, "category_name": "person", "model": "detect_all"},  # two people
        {"frame_index": 1, "category_name": "person", "model": "detect_all"},
        {"frame_index": 1, "category_name": "cup", "model": "detect_all"},
        {"frame_index": 2, "category_name": "cup", "model": "detect_onnxruntime"},
    ]
    assert clips.label_frames(results, "detect_all") == {"person": 2, "cup": 1}


def test_upload_path_reads_what_gradio_and_scripts_give():
    assert clips.upload_path(None) is None
    assert clips.upload_path({"path": None}) is None
    given = {"path": "/tmp/x/abc.mp4", "orig_name": "holiday.mp4", "meta": {}}
    assert clips.upload_path(given) == (Path("/tmp/x/abc.mp4"), "holiday.mp4")
    assert clips.upload_path("/tmp/y/clip.webm") == (Path("/tmp/y/clip.webm"), "clip.webm")


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


def test_clip_errors_name_the_upload_and_the_limit():
    long = clips.clip_error(ClipTooLong("/tmp/gradio/x/c.mp4", 1801, 1800), "c.mp4")
    assert "c.mp4" in long and "1800 frames" in long and "/tmp/gradio" not in long
    bad = clips.clip_error(VideoNotReadable("/tmp/gradio/x/n.mp4", "empty file"), "n.mp4")
    assert bad == "n.mp4 is not a readable video: empty file"
