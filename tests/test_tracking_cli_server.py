"""``detect --track`` against the real server: a clip's MOT rows and its distinct
objects, and a live source's JSON lines with track ids. The CLI runs as a user runs it,
a process of its own, from the repository's root."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.media import write_clip

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[1]


def sliding_clip(path: Path, photo: bytes, frames: int = 16, fps: float = 8.0) -> Path:
    """An MP4 of ``photo`` at half size sliding 8 px right each frame over grey."""
    image = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2))
    h, w = image.shape[:2]
    width = w + 8 * frames
    width += width % 2
    shown = []
    for k in range(frames):
        canvas = np.full((h + h % 2, width, 3), 96, np.uint8)
        canvas[:h, 8 * k : 8 * k + w] = image
        shown.append(canvas)
    return write_clip(path, shown, "mp4v", fps)


def detect(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "client", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)  # fmt: skip


def test_a_clip_tracked_from_the_command_line_writes_mot_rows(triton_url, photos, tmp_path):
    clip = sliding_clip(tmp_path / "walk.mp4", photos["astronaut"])
    out = tmp_path / "out"
    done = detect(str(clip), "--track", "--model", "detect_pytorch", "--url", triton_url,
                  "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = (out / "walk.mot.txt").read_text().splitlines()
    assert rows, done.stderr
    frames = [int(r.split(",")[0]) for r in rows]
    people = {int(r.split(",")[1]) for r in rows if r.endswith(",person")}
    assert min(frames) >= 1 and max(frames) <= 16 and len(people) == 1
    assert "1 distinct person" in done.stdout
    assert (out / "walk.annotated.webm").stat().st_size > 0
    document = json.loads((out / "walk.detections.json").read_text())
    assert document["video"]["model"] == "track_pytorch"


def test_a_live_source_tracked_gives_track_ids_in_its_lines(triton_url, photos, tmp_path):
    clip = sliding_clip(tmp_path / "walk.mp4", photos["astronaut"], frames=24, fps=8.0)
    done = detect("--source", str(clip), "--track", "--model", "detect_pytorch",
                  "--url", triton_url)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    frames = [line for line in lines if "detections" in line]
    ids = {d["track_id"] for f in frames for d in f["detections"] if d["label"] == "person"}
    assert frames and len(ids - {-1}) == 1, done.stdout
