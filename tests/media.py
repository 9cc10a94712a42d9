"""Clips and camera streams made from scikit-image's bundled photos, for the video tests.

Each photo is held for a few frames, so that a frame's detections say which photo, and
so which position in the clip, it was: ``SCENES`` pairs each photo with the COCO label
the server finds in it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

# Photo and the COCO label it warrants (as the server tests find them).
SCENES = (("astronaut", "person"), ("coffee", "cup"), ("motorcycle_left", "motorcycle"))
FRAMES_PER_SCENE = 4
CLIP_FPS = 6.0
CLIP_SIZE = (480, 336)  # width, height in pixels: near the photos' own shapes


def scene_frames(
    photos_dir: Path, order: list[int], size: tuple[int, int] = CLIP_SIZE
) -> list[np.ndarray]:
    """BGR frames of ``size``, the photo ``SCENES[k]`` for each ``k`` in ``order``."""
    pictures = [cv2.resize(cv2.imread(str(photos_dir / f"{name}.png")), size) for name, _ in SCENES]
    return [pictures[k] for k in order]


def scene_order(frames_per_scene: int = FRAMES_PER_SCENE) -> list[int]:
    """Each scene in turn, held ``frames_per_scene`` frames."""
    return [k for k in range(len(SCENES)) for _ in range(frames_per_scene)]


def write_clip(path: Path, frames: list[np.ndarray], fourcc: str, fps: float = CLIP_FPS) -> Path:
    """``frames`` (all of one size) as a clip with OpenCV's FFmpeg: "mp4v" for MP4,
    "VP80" for WebM, "MJPG" for AVI."""
    size = (frames[0].shape[1], frames[0].shape[0])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"this OpenCV cannot write {fourcc}"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = int(CLIP_FPS)) -> Path:
    """``frames`` as a YUV4MPEG2 (4:2:0) file, what Chromium's fake camera
    (``--use-file-for-fake-video-capture``) plays in a loop. Width and height must be
    even."""
    height, width = frames[0].shape[:2]
    assert width % 2 == 0 and height % 2 == 0, "4:2:0 needs even sides"
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


def count_frames(path: Path) -> int:
    """Frames decoded from ``path`` (counted, not the container's claim)."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n
