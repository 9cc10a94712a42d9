"""Clip uploads through the web demo, one after another: does anything pile up?

``python -m bench.clip_uploads --uploads 50`` (``make clip-soak``) starts Triton on the
models file (``--models``, default models.toml) unless ``--url`` names a running one,
then the web demo as users get it (``python -m ui --url ...``, its own process, on a
free loopback port, its temporary folder under a folder of this run's), and uploads a
clip made from the bundled photos ``--uploads`` times through the page's
``/detect_clip`` API (``gradio_client``, as a script would), spread over ``--sessions``
sessions in turn. After each upload it reads:

- the page process's memory: PSS (``bench.processes``), and the server's (Triton and
  every process under it) when this run started it;
- the page's temporary files: how many, and their bytes, under its temporary folder
  (Gradio's uploads and cache, where the page writes each clip's results).

It prints those at the first upload, every tenth and the last, and the growth from the
tenth (once every session has a result and every lazy set-up is paid) to the last, and
writes every reading to ``--out`` (default results/clip-uploads/) as
clip-uploads-<date>-<time>.json. Flat means: the same file count after the last upload as
after the tenth, and the page's memory within a few MiB of it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import REPO, command_parser, logger, measured, served, table
from bench.processes import MIB, process_tree, pss_bytes, spawn, wait_until

CLIP_SIZE = (480, 336)  # width, height: the photos' own scale
CLIP_FPS = 6.0
UI_READY_TIMEOUT_S = 180.0  # the page imports gradio, torch-free, in 10-30 s here


# --- pure parts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """What one upload left behind: its number (from 1), whether it was answered with a
    clip, the page's PSS, the server's PSS (0 when not measured) and the temporary
    files' count and bytes."""

    upload: int
    answered: bool
    ui_pss: int
    server_pss: int
    files: int
    file_bytes: int
    seconds: float


def growth(readings: Sequence[Reading], settle: int = 10) -> dict:
    """From reading ``settle`` (1-based; the first when fewer) to the last: the change
    in page PSS and server PSS (MiB, 1 decimal) and in temporary files (count, bytes)."""
    if not readings:
        return {}
    base = readings[settle - 1] if len(readings) >= settle else readings[0]
    last = readings[-1]
    return {
        "from_upload": base.upload,
        "to_upload": last.upload,
        "ui_pss_mib": round((last.ui_pss - base.ui_pss) / MIB, 1),
        "server_pss_mib": round((last.server_pss - base.server_pss) / MIB, 1),
        "files": last.files - base.files,
        "file_bytes": last.file_bytes - base.file_bytes,
    }


def files_under(folder: Path) -> tuple[int, int]:
    """Files under ``folder`` (recursively) and their bytes; a file deleted while being
    counted is left out."""
    count = size = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                size += os.stat(os.path.join(root, name)).st_size
                count += 1
    return count, size


def shown(readings: Sequence[Reading]) -> list[Reading]:
    """The readings the table prints: the first, every tenth and the last."""
    return [
        r for i, r in enumerate(readings) if i == 0 or r.upload % 10 == 0 or i == len(readings) - 1
    ]


def format_report(result: dict) -> str:
    head = ("upload", "page PSS MiB", "server PSS MiB", "temp files", "temp MiB", "s")
    rows = [(r.upload, f"{r.ui_pss / MIB:.1f}", f"{r.server_pss / MIB:.1f}", r.files,
             f"{r.file_bytes / MIB:.2f}", f"{r.seconds:.1f}")
            for r in shown([Reading(**x) for x in result["readings"]])]  # fmt: skip
    lines = [
        f"{result['uploads']} uploads of a {result['clip_frames']}-frame clip through "
        f"{result['model']} over {result['sessions']} session(s); "
        f"{result['answered']} answered; before the first, the page had "
        f"{result['files_before']} temporary files ({result['file_bytes_before'] / MIB:.2f} MiB)",
        "",
        *table(head, rows),
    ]
    g = result["growth"]
    if g:
        lines += [
            "",
            f"from upload {g['from_upload']} to {g['to_upload']}: page PSS "
            f"{g['ui_pss_mib']:+.1f} MiB, server PSS {g['server_pss_mib']:+.1f} MiB, "
            f"temporary files {g['files']:+d} ({g['file_bytes'] / MIB:+.2f} MiB)",
        ]
    return "\n".join(lines)


# --- the clip and the page -----------------------------------------------------------


def make_clip(path: Path, frames: int) -> Path:
    """A WebM of ``frames`` frames cycling over the bundled photos, each held 3 frames."""
    from bench.clips import sized_frames, write_clip
    from client.video import CLIP_FOURCC

    return write_clip(path, sized_frames(CLIP_SIZE), frames, CLIP_FOURCC, CLIP_FPS, hold=3)


def page_answers(url: str) -> bool:
    """Whether the page at ``url`` serves its config (it is up) within 2 s."""
    try:
        with urllib.request.urlopen(url + "config", timeout=2) as reply:
            return reply.status == 200
    except (OSError, urllib.error.URLError):
        return False


@contextlib.contextmanager
def running_page(
    triton_url: str, temp_root: Path, log: Callable[[str], None]
) -> Iterator[tuple[str, int]]:
    """``python -m ui --url triton_url`` on a free loopback port, its temporary folder
    (``tempfile.mkdtemp``) under ``temp_root``; yields ``(page URL, pid)``."""
    from ensemble.processes import free_port, stop_process

    port = free_port()
    env = dict(os.environ, TMPDIR=str(temp_root))
    env.pop("GRADIO_TEMP_DIR", None)
    log_path = temp_root.parent / "ui.log"
    command = [sys.executable, "-m", "ui", "--url", triton_url, "--port", str(port)]
    process = spawn(command, log_path, "wb", cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        page = f"the page (see {log_path})"
        wait_until(lambda: page_answers(url), process, UI_READY_TIMEOUT_S, page, every_s=0.5)
        log(f"page at {url} (pid {process.pid})")
        yield url, process.pid
    finally:
        stop_process(process, 30)


def upload_clips(
    page_url: str, page_pid: int, temp_root: Path, clip: Path, uploads: int, model: str, *,
    sessions: int = 1, server_pids: Callable[[], Sequence[int]] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> list[Reading]:  # fmt: skip
    """``uploads`` uploads of ``clip`` through ``page_url``'s ``/detect_clip``, over
    ``sessions`` ``gradio_client`` sessions in turn; one ``Reading`` after each."""
    import gradio_client

    clients = [
        gradio_client.Client(page_url, verbose=False, download_files=False) for _ in range(sessions)
    ]
    readings = []
    t0 = time.perf_counter()
    try:
        for n in range(1, uploads + 1):
            client = clients[(n - 1) % sessions]
            upload = gradio_client.handle_file(str(clip))
            video, *_rest = client.predict(upload, model, 0.3, 0.5, api_name="/detect_clip")
            answered = bool(video)
            if not answered:
                log(f"upload {n}: no clip came back: {_rest[1] if len(_rest) > 1 else _rest}")
            count, size = files_under(temp_root)
            server = pss_bytes(process_tree(server_pids())) if server_pids else 0
            reading = Reading(
                n, answered, pss_bytes([page_pid]), server, count, size,
                round(time.perf_counter() - t0, 2),
            )  # fmt: skip
            readings.append(reading)
            if n == 1 or n % 10 == 0:
                log(f"upload {n}: page {reading.ui_pss / MIB:.1f} MiB, {count} temporary files")
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
    return readings


def run(
    triton_url: str, workdir: Path, uploads: int, model: str, *, clip_frames: int = 12,
    sessions: int = 1, server_pids: Callable[[], Sequence[int]] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict:  # fmt: skip
    """The whole measurement against the Triton at ``triton_url``; files under
    ``workdir``. Returns the figures (module docstring)."""
    workdir.mkdir(parents=True, exist_ok=True)
    temp_root = Path(tempfile.mkdtemp(prefix="page-tmp-", dir=workdir))
    clip = make_clip(workdir / "clip.webm", clip_frames)
    with running_page(triton_url, temp_root, log) as (url, pid):
        before = files_under(temp_root)  # what the page keeps of its own (example photos)
        readings = upload_clips(
            url, pid, temp_root, clip, uploads, model,
            sessions=sessions, server_pids=server_pids, log=log,
        )  # fmt: skip
    after = files_under(temp_root)  # the page stopped: its folder should be gone
    return {"uploads": uploads, "sessions": sessions, "model": model,
            "clip_frames": clip_frames, "answered": sum(r.answered for r in readings),
            "files_before": before[0], "file_bytes_before": before[1],
            "readings": [r.__dict__ for r in readings], "growth": growth(readings),
            "files_after_page_stopped": after[0]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = command_parser("python -m bench.clip_uploads", __doc__, out="clip-uploads")
    ap.add_argument("--uploads", type=int, default=50, help="clip uploads (default 50)")
    ap.add_argument(
        "--sessions", type=int, default=1, help="page sessions taking turns (default 1)"
    )
    ap.add_argument("--frames", type=int, default=12, help="frames per clip (default 12)")
    ap.add_argument("--model", default="detect_all", help="ensemble (default detect_all)")
    args = ap.parse_args(argv)
    if args.uploads < 1 or args.sessions < 1 or args.frames < 1:
        ap.error("--uploads, --sessions and --frames must be at least 1")
    log, options = logger("clip-uploads"), {"workdir": args.out / "server"}

    def measure() -> dict:
        with (
            served.triton(args.url, args.models, log, **options) as (url, server),
            tempfile.TemporaryDirectory(prefix="clip-uploads-") as work,
        ):
            return run(
                url, Path(work), args.uploads, args.model, clip_frames=args.frames,
                sessions=args.sessions, server_pids=server.pids if server else None, log=log,
            )  # fmt: skip

    errors = (RuntimeError, ValueError, OSError)
    result = measured(measure, errors, format_report, args.out, "clip-uploads", log)
    return 0 if result is not None and result["answered"] == result["uploads"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
