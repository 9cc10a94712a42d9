"""Video clips through the client against the real server: the frames API, and the
``detect`` CLI on a clip (its annotated clip and per-frame detections, and a stream
damaged halfway). Without a server: test_client_video.py.

The clips are made here from scikit-image's bundled photos: each photo held for a few
frames, so that a frame's detections say which photo, and so which position, it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from media import CLIP_FPS, CLIP_SIZE, SCENES, count_frames, scene_frames, scene_order, write_clip

from client import DetectorClient, probe_clip
from client.video import encode_frame

pytestmark = pytest.mark.server


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "client", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd)


def test_detect_frames_returns_each_frames_result_in_order_and_reads_lazily(triton_url, photos_dir):
    order = [0, 1, 2, 2, 0, 1, 1, 0, 2, 0, 2]  # interleaved: a mix-up shows
    frames = scene_frames(photos_dir, order)
    pulled: list[int] = []
    seen_at_first_result: list[int] = []

    def source():
        for i, f in enumerate(frames):
            pulled.append(i)
            yield f if i % 2 else encode_frame(f)  # arrays and encoded bytes alike

    with DetectorClient(triton_url) as c:
        results = []
        for fr in c.detect_frames(source(), "detect_onnxruntime", batch_size=2, max_in_flight=2):
            if not results:
                seen_at_first_result.append(len(pulled))
            results.append(fr)
    assert [fr.index for fr in results] == list(range(len(order)))
    # Bounded: at most batch_size * (max_in_flight + 1) frames read before the first answer.
    assert seen_at_first_result[0] <= 2 * 3
    for fr, k in zip(results, order, strict=True):
        labels = {d.label for d in fr.result.detections}
        assert SCENES[k][1] in labels, (fr.index, SCENES[k], labels)


def test_cli_writes_the_annotated_clip_and_per_frame_detections(triton_url, tmp_path, photos_dir):
    clip = write_clip(tmp_path / "scenes.mp4", scene_frames(photos_dir, scene_order()), "mp4v")
    out = tmp_path / "out"
    proc = run_cli("--url", triton_url, "--model", "detect_all", "--out", out, clip, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "frame" in proc.stderr  # the progress bar and the summary line
    video = out / "scenes.annotated.webm"
    assert count_frames(video) == 12
    info = probe_clip(video)
    assert info.fps == CLIP_FPS and (info.width, info.height) == CLIP_SIZE
    doc = json.loads((out / "scenes.detections.json").read_text())
    assert [im["frame_index"] for im in doc["images"]] == list(range(12))
    fused = [r for r in doc["results"] if r["model"] == "detect_all"]
    for i, k in enumerate(scene_order()):
        labels = {r["category_name"] for r in fused if r["frame_index"] == i}
        assert SCENES[k][1] in labels, (i, labels)
    assert {r["model"] for r in doc["results"]} > {"detect_all"}  # each detector's own too
    assert not list(out.glob("*.part*"))


def test_cli_reports_a_damaged_stream_and_leaves_no_partial_output(
    triton_url, tmp_path, photos_dir
):
    frames = scene_frames(photos_dir, scene_order())
    whole = write_clip(tmp_path / "whole.webm", frames, "VP80")
    cut = tmp_path / "cut.webm"  # WebM keeps its duration up front: the stream ends early
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    proc = run_cli("--url", triton_url, "--model", "detect_onnxruntime", "--out", out, cut,
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "truncated or damaged" in proc.stderr and "cut.webm" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(out.glob("cut.*"))
