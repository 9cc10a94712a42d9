"""``detect --source`` against the real server and a live stream on loopback: ffmpeg
serves a looping clip over HTTP (MPEG-TS) at 25 frames/s, faster than the server
detects, and the CLI runs as a user runs it, in a process of its own. Checked: a JSON
line per frame sent, with the detections of that frame; frames dropped and counted,
never queued; Ctrl-C ends it with exit 0, the annotated video closed, and a summary
line; a stream that dies and comes back is reopened, one that stays away ends the run;
a file ends at its end. Without a server: test_live_source.py.

RTSP too: Debian's rtsp-server-perl relays what ffmpeg publishes to it (ANNOUNCE and
RECORD) to the players that ask (PLAY). Both come from apt (make setup installs them).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import psutil
import pytest
from apt_tools import tool_or_fail
from media import (
    CLIP_FPS,
    FRAMES_PER_SCENE,
    SCENES,
    count_frames,
    scene_frames,
    scene_order,
    write_clip,
)

from ensemble.processes import free_port

pytestmark = pytest.mark.server

REPO = Path(__file__).resolve().parents[1]  # `python -m client` runs this checkout's
MODEL = "detect_onnxruntime"  # the quickest detector: drops then come from the rate alone
STREAM_FPS = 25  # the stream's frame rate: each of the clip's frames repeated
WAIT_S = 120.0  # the longest any step may take on a loaded machine


@pytest.fixture(scope="module")
def clip(photos_dir, tmp_path_factory) -> Path:
    """The scenes clip (each photo held FRAMES_PER_SCENE frames at CLIP_FPS), looped."""
    folder = tmp_path_factory.mktemp("live")
    return write_clip(folder / "scenes.mp4", scene_frames(photos_dir, scene_order()), "mp4v")


def scene_label(source_time_s: float) -> str | None:
    """The label the frame at ``source_time_s`` in the looping clip shows, or None
    within a frame of a change of scene (where the stream's timing may round either
    way)."""
    frame = source_time_s * CLIP_FPS
    position = frame % FRAMES_PER_SCENE
    if not 1 <= position <= FRAMES_PER_SCENE - 1:
        return None
    return SCENES[int(frame // FRAMES_PER_SCENE) % len(SCENES)][1]


@contextmanager
def rtsp_stream(clip: Path) -> Iterator[str]:
    """The URL of ``clip`` served in a loop at its real rate over RTSP on loopback:
    ffmpeg publishes it to rtsp-server-perl, which serves players on another port;
    both killed on leaving."""
    players, publishers = free_port(), free_port()
    server_cmd = [
        tool_or_fail("rtsp-server-perl"), "--clientport", str(players),
        "--serverport", str(publishers), "--client_listen_address", "127.0.0.1",
        "--source_listen_address", "127.0.0.1", "--rtp_start_port", str(free_port()),
    ]  # fmt: skip
    server = subprocess.Popen(server_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rtsp://127.0.0.1:{players}/live"
    publisher = None
    try:
        poll(lambda: server.poll() is not None or listens(server.pid, publishers),
             "rtsp-server-perl to listen")  # fmt: skip
        assert server.poll() is None, "rtsp-server-perl did not start"
        publish = [
            tool_or_fail("ffmpeg"), "-hide_banner", "-loglevel", "error", "-nostdin",
            "-re", "-stream_loop", "-1", "-i", str(clip),
            "-vf", f"fps={STREAM_FPS}", "-c:v", "mpeg1video", "-q:v", "4",
            "-f", "rtsp", f"rtsp://127.0.0.1:{publishers}/live",
        ]  # fmt: skip
        publisher = subprocess.Popen(publish, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # The server takes several players: a trial one tells when the stream is up.
        poll(lambda: publisher.poll() is not None or plays(url), "the RTSP stream to play")
        assert publisher.poll() is None, publisher.stderr.read().decode()
        yield url
    finally:
        if publisher is not None:
            stop_process(publisher, signal.SIGKILL)
        stop_process(server, signal.SIGKILL)


def plays(url: str) -> bool:
    """Whether a player gets a frame from ``url``."""
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    try:
        return capture.isOpened() and capture.read()[0]
    finally:
        capture.release()


@contextmanager
def http_stream(clip: Path, port: int) -> Iterator[subprocess.Popen]:
    """ffmpeg serving ``clip`` in a loop at its real rate over HTTP on loopback
    ``port``, once it listens; killed on leaving."""
    cmd = [
        tool_or_fail("ffmpeg"), "-hide_banner", "-loglevel", "error", "-nostdin",
        "-re", "-stream_loop", "-1", "-i", str(clip),
        "-vf", f"fps={STREAM_FPS}", "-c:v", "mpeg1video", "-q:v", "4",
        "-f", "mpegts", "-listen", "1", f"http://127.0.0.1:{port}/",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        poll(lambda: proc.poll() is not None or listens(proc.pid, port), "ffmpeg to listen")
        assert proc.poll() is None, proc.stderr.read().decode()
        yield proc
    finally:
        stop_process(proc, signal.SIGKILL)


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` listens on ``port`` (without connecting: ffmpeg's
    ``-listen 1`` serves the first connection only)."""
    connections = psutil.Process(pid).net_connections(kind="tcp")
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)


def poll(condition, what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s} s for {what}"
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class LiveRun:
    """``detect --source`` in a process of its own: its stdout's JSON lines as they
    come, its stderr in a file."""

    def __init__(self, args: list[str], workdir: Path):
        self.stderr_path = workdir / "detect.stderr"
        self._stderr = self.stderr_path.open("w")
        cmd = [sys.executable, "-m", "client", *args]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, cwd=REPO
        )
        self.lines: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    @property
    def frames(self) -> list[dict]:
        return [line for line in self.lines if "frame" in line]

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_for(self, condition, what: str) -> None:
        poll(lambda: condition() or self.proc.poll() is not None, what)
        assert self.proc.poll() is None, f"detect ended ({self.proc.returncode}): {self.stderr}"

    def finish(self, sig: int | None = None) -> int:
        """Its exit status, after ``sig`` if given; all its lines read."""
        if sig is not None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=WAIT_S)
        self._reader.join(timeout=WAIT_S)
        return code

    def close(self) -> None:
        stop_process(self.proc, signal.SIGKILL)
        self._stderr.close()


@contextmanager
def live_run(*args: str | Path, workdir: Path, url: str) -> Iterator[LiveRun]:
    run = LiveRun(["--url", url, "--model", MODEL, *map(str, args)], workdir)
    try:
        yield run
    finally:
        run.close()


def summary_of(run: LiveRun) -> dict:
    assert "summary" in run.lines[-1], run.lines[-1]
    return run.lines[-1]["summary"]


def test_a_stream_faster_than_the_server_is_detected_newest_first_and_ctrl_c_ends_it(
    triton_url, clip, tmp_path
):
    port = free_port()
    video = tmp_path / "live.webm"
    source = f"http://127.0.0.1:{port}/"
    with (
        http_stream(clip, port),
        live_run("--source", source, "--out-video", video, workdir=tmp_path, url=triton_url) as run,
    ):
        run.wait_for(lambda: len(run.frames) >= 12, "12 frames detected")
        code = run.finish(signal.SIGINT)
    assert code == 0, run.stderr
    frames = run.frames
    assert [f["frame"] for f in frames] == sorted({f["frame"] for f in frames})
    # Each line has its own frame's detections: the photo shown at its time in the clip.
    checked = 0
    for line in frames:
        expected = scene_label(line["source_time_s"])
        if expected is not None:
            labels = {d["label"] for d in line["detections"]}
            assert expected in labels, (line["frame"], line["source_time_s"], labels)
            checked += 1
    assert checked >= 4
    summary = summary_of(run)
    assert summary["end"] == "stopped"
    assert summary["sent"] == len(frames)
    # The source ran ahead of the server: frames were dropped, and every one is counted.
    assert summary["dropped"] > summary["sent"]
    assert summary["read"] == summary["sent"] + summary["dropped"]
    assert [f["counters"]["dropped"] for f in frames] == sorted(
        f["counters"]["dropped"] for f in frames
    )
    # Dropped, not queued: no frame waited for more than about one round trip before
    # it was sent, and reading kept up with the stream (lag stays small).
    for line in frames[3:]:  # after the first requests, which connect and warm up
        assert line["latency_s"] - line["round_trip_s"] < 2 * max(f["round_trip_s"] for f in frames)
    assert max(f["lag_s"] for f in frames[3:]) < 1.0
    assert summary["latency_s"]["p50"] > 0
    assert "stopping after the frame at the server" in run.stderr
    # The video was closed properly: one frame per source frame from the first sent to
    # the last.
    assert count_frames(video) == frames[-1]["frame"] - frames[0]["frame"] + 1


def test_a_stream_that_dies_is_reopened_when_it_comes_back_and_one_that_stays_away_ends_the_run(
    triton_url, clip, tmp_path
):
    port = free_port()
    source = f"http://127.0.0.1:{port}/"
    with (
        http_stream(clip, port) as ffmpeg,
        live_run("--source", source, "--source-timeout", "6", workdir=tmp_path,
                 url=triton_url) as run,
    ):  # fmt: skip
        run.wait_for(lambda: len(run.frames) >= 3, "3 frames detected")
        ffmpeg.kill()  # the stream dies in the middle
        ffmpeg.wait()
        run.wait_for(lambda: "reopening" in run.stderr, "the CLI to notice")
        before = run.frames[-1]["frame"]
        with http_stream(clip, port):  # and comes back on the same port
            run.wait_for(
                lambda: (
                    run.frames[-1]["counters"]["reconnects"] == 1
                    and len([f for f in run.frames if f["frame"] > before]) >= 3
                ),
                "3 frames after the reconnection",
            )
        code = run.finish()  # gone for good: the run ends after --source-timeout
    assert code == 5, run.stderr
    after = [f for f in run.frames if f["frame"] > before]
    assert all(f["detections"] for f in after)
    summary = summary_of(run)
    assert summary["end"] == "source lost" and summary["reconnects"] == 1
    assert summary["read"] == summary["sent"] + summary["dropped"]
    assert "reopened after" in run.stderr and "giving up" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_file_source_is_read_at_its_frame_rate_and_ends_at_its_end(triton_url, clip, tmp_path):
    with live_run("--source", clip, workdir=tmp_path, url=triton_url) as run:
        code = run.finish()
    assert code == 0, run.stderr
    summary = summary_of(run)
    assert summary["end"] == "end of file"
    assert summary["read"] == len(scene_order())
    # Played at 6 frames/s: 12 frames take about 2 s, however fast they decode.
    assert summary["wall_s"] >= (len(scene_order()) - 1) / CLIP_FPS * 0.9
    assert summary["sent"] == len(run.frames) >= 2


def test_an_rtsp_stream_is_detected_with_frames_dropped_and_ctrl_c_ends_it(
    triton_url, clip, tmp_path
):
    with (
        rtsp_stream(clip) as url,
        live_run("--source", url, workdir=tmp_path, url=triton_url) as run,
    ):
        run.wait_for(lambda: len(run.frames) >= 6, "6 frames detected")
        code = run.finish(signal.SIGINT)
    assert code == 0, run.stderr
    frames = run.frames
    labels = {d["label"] for f in frames for d in f["detections"]}
    assert labels & {label for _, label in SCENES}, labels
    summary = summary_of(run)
    assert summary["end"] == "stopped" and summary["sent"] == len(frames)
    assert summary["dropped"] > 0
    assert summary["read"] == summary["sent"] + summary["dropped"]
