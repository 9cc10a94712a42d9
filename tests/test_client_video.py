"""Video clips through the client without a server (client.video): batching frames,
pipelining their requests, writing clips, the COCO results per frame, and the clip-level
errors (not a video, a truncated file, a clip over the limit) that the ``detect`` CLI
reports before any request. Against the real server: test_client_video_server.py.

The clips are made here from scikit-image's bundled photos: each photo held for a few
frames, so that a frame's detections say which photo, and so which position, it was.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from media import (
    CLIP_SIZE,
    count_frames,
    scene_frames,
    scene_order,
    write_clip,
)

from client import ImageResult
from client.errors import ClipTooLong, VideoNotReadable
from client.payload import DetectOptions
from client.results import Detection
from client.video import (
    ClipInfo,
    ClipWriter,
    FrameResult,
    batched,
    clip_document,
    detect_frames,
    encode_frame,
    frame_coco_results,
    probe_clip,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def clip(photos_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    return write_clip(folder / "scenes.mp4", scene_frames(photos_dir, scene_order()), "mp4v")


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "client", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=cwd)


def test_batched_keeps_order_and_reads_lazily():
    pulled = []

    def items():
        for i in range(7):
            pulled.append(i)
            yield i

    batches = batched(items(), 3)
    assert next(batches) == [0, 1, 2]
    assert pulled == [0, 1, 2]  # nothing read ahead of the batch
    assert list(batches) == [[3, 4, 5], [6]]
    with pytest.raises(ValueError):
        next(batched([1], 0))


def test_frame_coco_results_carry_the_frame_index_and_each_detectors_own():
    own = ImageResult([Detection(1, 2, 11, 22, 0.5, 0, "person")], b"")
    result = ImageResult(
        [Detection(10, 20, 40, 60, 0.9, 41, "cup")], b"", per_detector={"onnxruntime": own}
    )
    entries = frame_coco_results(FrameResult(7, result), file_name="c.mp4", model="detect_all")
    assert [e["frame_index"] for e in entries] == [7, 7]
    assert [e["image_id"] for e in entries] == [8, 8]
    fused, single = entries
    assert fused["category_id"] == 47 and fused["bbox"] == [10, 20, 30, 40]
    assert fused["model"] == "detect_all" and single["model"] == "detect_onnxruntime"
    assert single["category_name"] == "person" and single["file_name"] == "c.mp4"


def test_clip_document_lists_every_frame_with_its_time():
    info = ClipInfo(Path("x/c.mp4"), 64, 48, 4.0, 6)
    doc = clip_document(info, "detect_all", 6, [])
    assert [im["frame_index"] for im in doc["images"]] == [0, 1, 2, 3, 4, 5]
    assert doc["images"][5] == {"id": 6, "frame_index": 5, "time_s": 1.25}
    assert doc["video"]["file_name"] == "c.mp4" and doc["video"]["fps"] == 4.0


def test_encode_frame_makes_a_jpeg_and_passes_bytes_through():
    frame = np.zeros((48, 64, 3), np.uint8)
    jpeg = encode_frame(frame)
    assert jpeg[:3] == b"\xff\xd8\xff"
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
    assert encode_frame(b"\x89PNG...") == b"\x89PNG..."


class AnsweringClient:
    """Stands in for DetectorClient in detect_frames (its neighbour): answers each
    request at once, one empty result per image, and signals each request it gets."""

    def __init__(self):
        self.requests: list[list[bytes]] = []
        self.options: list[DetectOptions] = []
        self.sent = [threading.Event() for _ in range(8)]

    def model_info(self, model):
        return SimpleNamespace(max_batch_size=2)

    def iter_detect(self, payloads, model, options, *, batch_size):
        self.requests.append(list(payloads))
        self.options.append(options)
        self.sent[len(self.requests) - 1].set()
        yield [ImageResult(detections=[], annotated_jpeg=p) for p in payloads]


def test_detect_frames_sends_the_next_batch_before_handing_over_results():
    client = AnsweringClient()
    frames = [f"frame {i}".encode() for i in range(6)]  # bytes go out as they are
    options = DetectOptions(score_threshold=0.4, timeout=30.0)
    results = detect_frames(client, iter(frames), "detect_tensorflow", options, max_in_flight=1)
    got = []
    for fr in results:
        if fr.index == 0:
            # One request in flight at most: the second batch went out when the first
            # was answered, before its results reached us (the server never waits on
            # the caller). The old order sent it only after the caller was done.
            assert client.sent[1].wait(30), "the second batch waited for the caller"
        got.append(fr)
    assert [fr.index for fr in got] == list(range(6))
    assert [fr.result.annotated_jpeg for fr in got] == frames
    assert [len(r) for r in client.requests] == [2, 2, 2]
    assert client.options == [options] * 3  # every request asks the same


def test_clip_writer_writes_a_webm_with_every_frame_at_the_fps(tmp_path, photos_dir):
    frames = scene_frames(photos_dir, [0, 1, 2, 0, 1])
    with ClipWriter(tmp_path / "a.webm", 5.0) as writer:
        for f in frames:
            writer.write_jpeg(encode_frame(f))
        writer.write(cv2.resize(frames[0], (100, 80)))  # another size: scaled to the first
    assert count_frames(tmp_path / "a.webm") == 6
    info = probe_clip(tmp_path / "a.webm")
    assert (info.width, info.height, info.fps) == (*CLIP_SIZE, 5.0)


def test_probe_refuses_what_is_not_a_video_and_clips_over_the_limit(tmp_path, photos_dir, clip):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all")
    for path, reason in (
        (text, "no video stream"),
        (photos_dir / "coffee.png", "PNG image"),
        (tmp_path / "missing.mp4", "no such file"),
    ):
        with pytest.raises(VideoNotReadable, match=reason):
            probe_clip(path)
    with pytest.raises(ClipTooLong, match="12 frames, the limit is 5"):
        probe_clip(clip, max_frames=5)
    assert probe_clip(clip).frame_count == 12


def test_cli_refuses_a_non_video_a_truncated_mp4_and_a_long_clip_without_traceback(tmp_path, clip):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all")
    cut = tmp_path / "cut.mp4"  # an MP4 cut short has lost its index (written last)
    data = clip.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    url = "127.0.0.1:1"  # never reached: the clips are refused before any request
    for path, message, extra in (
        (text, "not a readable video", ()),
        (cut, "not a readable video", ()),
        (clip, "clip too long", ("--max-frames", "5")),
    ):
        proc = run_cli("--url", url, "--out", out, *extra, path, cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr  # 1: the input was skipped, as for images
        assert message in proc.stderr and path.name in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())
