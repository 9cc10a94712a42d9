"""NVIDIA's perf_analyzer against the detection ensembles: install, input data, sweep, parse.

perf_analyzer is the C++ load generator that ships in the ``tritonclient==2.51.0`` wheel
(under its data ``bin/``). Only the binary is taken from that wheel: the project's library
is ``tritonclient`` 2.73 (2.51 pins protobuf < 5, which clashes with TensorFlow). The
binary needs ``libcudart.so.12`` even on a CPU-only host (PyPI's
``nvidia-cuda-runtime-cu12``) and ``libb64.so.0d`` (Debian's ``libb64-0d``).

Units: perf_analyzer reports microseconds; every row returned here is in milliseconds,
throughput in inferences per second (= images per second, since each request carries
one image).
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import struct
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from bench.photos import photo_files
from ensemble import contract

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "perf_analyzer"

TRITONCLIENT = "tritonclient==2.51.0"  # the last wheel whose perf_analyzer runs on glibc 2.36
CUDA_RUNTIME = "nvidia-cuda-runtime-cu12==12.6.77"
LIBB64 = "libb64.so.0d"
LIBB64_APT = "libb64-0d"

CONCURRENCIES = (1, 2, 4, 8, 16)

# perf_analyzer repeats a measurement window until the last three agree (images/s and
# mean latency) within the stability percentage. Windows count requests, not time: a
# window is a whole number of rounds over the photos, so each holds the same mix of
# small and large images and windows compare like with like. A level that never
# settles (a 2-core CPU host is noisy) is measured again over three windows taken as
# they come and marked ``stable: False``. (A fixed ``--request-count`` would do too,
# but perf_analyzer then times it in whole seconds: 16 requests in 2-3 s read 5.3 or 8.)
FULL_WINDOW = {"requests_per_photo": 8, "stability_percent": 15, "max_trials": 6}
QUICK_WINDOW = {"requests_per_photo": 2, "stability_percent": 25, "max_trials": 4}
# A level that does not settle is measured once more and its first three windows
# taken as they are (a stability bound no measurement can miss).
UNSETTLED = {"stability_percent": 10_000, "max_trials": 3}


def window_requests(concurrency: int, photos: int, requests_per_photo: int) -> int:
    """Requests in one window: ``requests_per_photo`` rounds over the photos, and at
    least two requests per concurrent worker, rounded up to whole rounds."""
    wanted = max(photos * requests_per_photo, 2 * concurrency)
    return -(-wanted // photos) * photos


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer could not be installed or did not produce a measurement."""


# --- installation -----------------------------------------------------------------


def _pip_target(requirement: str, target: Path) -> None:
    """``pip install --no-deps --target`` into a folder of its own, atomically."""
    partial = target.with_name(target.name + ".partial")
    subprocess.run(["rm", "-rf", str(partial)], check=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-deps", "--target", str(partial), requirement]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise PerfAnalyzerError(f"pip could not install {requirement}: {done.stderr.strip()}")
    partial.rename(target)


def _find_libb64() -> Path | None:
    listed = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for line in listed.splitlines():
        if line.strip().startswith(LIBB64) and "=>" in line:
            return Path(line.split("=>")[-1].strip())
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/local/lib"):
        if (Path(folder) / LIBB64).exists():
            return Path(folder) / LIBB64
    return None


# The folder holding ``libcudart.so.12`` (from the PyPI wheel, in the cache).
CUDA_RUNTIME_LIB = CACHE / "cuda-runtime" / "nvidia" / "cuda_runtime" / "lib"


def _binary() -> Path | None:
    found = sorted((CACHE / "tritonclient-2.51.0").glob("**/bin/perf_analyzer"))
    return found[0] if found else None


def ensure_perf_analyzer() -> Path:
    """Install perf_analyzer and its CUDA runtime into :data:`CACHE` (skipped when
    present).

    Returns the path of the ``perf_analyzer`` binary. Raises ``PerfAnalyzerError`` naming
    the apt package when the system library ``libb64.so.0d`` is missing.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    if _binary() is None:
        _pip_target(TRITONCLIENT, CACHE / "tritonclient-2.51.0")
    if not (CUDA_RUNTIME_LIB / "libcudart.so.12").exists():
        _pip_target(CUDA_RUNTIME, CACHE / "cuda-runtime")
    if _find_libb64() is None:
        raise PerfAnalyzerError(
            f"perf_analyzer needs {LIBB64}: install it with `apt-get install {LIBB64_APT}`"
        )
    binary = _binary()
    if binary is None:
        raise PerfAnalyzerError(f"no bin/perf_analyzer in the {TRITONCLIENT} wheel")
    binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def perf_analyzer_env() -> dict[str, str]:
    """The environment to run perf_analyzer in: ``LD_LIBRARY_PATH`` finds libcudart."""
    paths = [str(CUDA_RUNTIME_LIB), os.environ.get("LD_LIBRARY_PATH")]
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(filter(None, paths))}


# --- input data -------------------------------------------------------------------


def serialize_bytes_tensor(elements: Iterable[bytes]) -> bytes:
    """Triton's binary form of a BYTES tensor: per element a 4-byte LE length, then the bytes."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def write_input_data(path: Path, photos: Sequence[bytes]) -> Path:
    """Write perf_analyzer's ``--input-data`` JSON: one batch-1 request per photo.

    Each entry's ``IMAGE`` is ``{"b64": ..., "shape": [1]}`` where ``b64`` is the base64
    of the tensor's binary form (``serialize_bytes_tensor``), so the server receives the
    encoded file as it is. perf_analyzer sends the entries in turn, round-robin.
    """
    if not photos:
        raise ValueError("write_input_data needs at least one photo")
    data = [
        {contract.IMAGE: {"b64": base64.b64encode(serialize_bytes_tensor([p])).decode("ascii"),
                          "shape": list(contract.SHAPES[contract.IMAGE])}}
        for p in photos
    ]  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": data}))
    return path


# --- running ----------------------------------------------------------------------


def perf_analyzer_command(
    binary: Path, model: str, url: str, input_data: Path, csv_name: str, concurrency: int,
    window_requests: int, stability_percent: int, max_trials: int,
) -> list[str]:  # fmt: skip
    """The perf_analyzer command line for one model at one concurrency over gRPC:
    windows of ``window_requests`` requests until three agree within
    ``stability_percent`` (at most ``max_trials``). ``csv_name`` is a bare file name in
    the working directory: perf_analyzer writes each composing model's CSV beside it as
    ``<model>_v<version>.<csv_name>``."""
    return [
        str(binary), "-i", "grpc", "-u", url, "-m", model,
        "--concurrency-range", f"{concurrency}:{concurrency}:1",
        "--input-data", str(input_data), "-f", csv_name, "--verbose-csv",
        "--measurement-mode", "count_windows",
        "--measurement-request-count", str(window_requests),
        "--stability-percentage", str(stability_percent), "--max-trials", str(max_trials),
    ]  # fmt: skip


def run_level(
    binary: Path, model: str, url: str, input_data: Path, out_dir: Path, concurrency: int,
    window: dict, stem: str, timeout_s: float | None = 600,
) -> tuple[subprocess.CompletedProcess, Path]:  # fmt: skip
    """One perf_analyzer run (``window``: :func:`perf_analyzer_command`'s window
    keywords) in ``out_dir``, its command, report and CSV kept as ``<stem>.cmd``,
    ``.log`` and ``.csv``: (the finished process, the CSV's path)."""
    csv_path = out_dir / f"{stem}.csv"
    cmd = perf_analyzer_command(binary, model, url, input_data.resolve(), csv_path.name,
                                concurrency, **window)  # fmt: skip
    (out_dir / f"{stem}.cmd").write_text(" ".join(cmd) + "\n")
    csv_path.unlink(missing_ok=True)
    done = subprocess.run(cmd, cwd=out_dir, env=perf_analyzer_env(), capture_output=True,
                          text=True, timeout=timeout_s)  # fmt: skip
    (out_dir / f"{stem}.log").write_text(done.stdout + done.stderr)
    return done, csv_path


def failure(model: str, done: subprocess.CompletedProcess) -> PerfAnalyzerError:
    """The error of a run that measured nothing: its output's last lines."""
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-6:])
    return PerfAnalyzerError(f"perf_analyzer on {model} (rc {done.returncode}):\n{tail}")


_CSV_FIELDS = {  # perf_analyzer's CSV column -> our key (values in usec -> ms)
    "Client Send": "client_send_ms",
    "Network+Server Send/Recv": "network_server_send_recv_ms",
    "Server Queue": "server_queue_ms",
    "Server Compute Input": "server_compute_input_ms",
    "Server Compute Infer": "server_compute_infer_ms",
    "Server Compute Output": "server_compute_output_ms",
    "Client Recv": "client_recv_ms",
    "p50 latency": "p50_ms",
    "p90 latency": "p90_ms",
    "p95 latency": "p95_ms",
    "p99 latency": "p99_ms",
    "Avg latency": "avg_ms",
    "request/response": "grpc_marshal_ms",
    "response wait": "grpc_response_wait_ms",
}


def parse_csv(path: Path) -> list[dict]:
    """perf_analyzer's ``-f`` CSV (with ``--verbose-csv``) -> one dict per concurrency level."""
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict = {
                "concurrency": int(raw["Concurrency"]),
                "throughput": float(raw["Inferences/Second"]),
            }
            for column, key in _CSV_FIELDS.items():
                if raw.get(column) not in (None, ""):
                    row[key] = float(raw[column]) / 1000.0
            rows.append(row)
    return rows


_LEVEL = re.compile(r"^Request concurrency: (\d+)", re.M)
_COMPOSING = re.compile(
    r"^\s+(?P<model>\S+), version: \S*\n"
    r"(?:.*\n)*?"
    r"\s+Avg request latency: (?P<latency>\d+) usec \(overhead (?P<overhead>\d+) usec"
    r" \+ queue (?P<queue>\d+) usec \+ compute input (?P<input>\d+) usec"
    r" \+ compute infer (?P<infer>\d+) usec \+ compute output (?P<output>\d+) usec\)",
    re.M,
)
_COUNT = re.compile(r"^\s+Inference count: (\d+)", re.M)


def parse_composing(stdout: str) -> dict[int, dict[str, dict[str, float]]]:
    """The per-composing-model breakdown perf_analyzer prints (not in its CSV) for ensembles.

    Returns ``{concurrency: {model: {"queue_ms", "compute_input_ms", "compute_infer_ms",
    "compute_output_ms", "overhead_ms", "latency_ms", "count"}}}``; averages per request.
    """
    levels = list(_LEVEL.finditer(stdout))
    out: dict[int, dict[str, dict[str, float]]] = {}
    for i, level in enumerate(levels):
        end = levels[i + 1].start() if i + 1 < len(levels) else len(stdout)
        block = stdout[level.end() : end]
        marker = block.find("Composing models:")
        if marker < 0:
            continue
        models: dict[str, dict[str, float]] = {}
        for m in _COMPOSING.finditer(block, marker):
            count = _COUNT.search(block, m.start(), m.end())
            models[m["model"]] = {
                "queue_ms": int(m["queue"]) / 1000.0,
                "compute_input_ms": int(m["input"]) / 1000.0,
                "compute_infer_ms": int(m["infer"]) / 1000.0,
                "compute_output_ms": int(m["output"]) / 1000.0,
                "overhead_ms": int(m["overhead"]) / 1000.0,
                "latency_ms": int(m["latency"]) / 1000.0,
                "count": int(count[1]) if count else 0,
            }
        out[int(level[1])] = models
    return out


def run_sweep(
    model: str,
    url: str,
    concurrencies: Sequence[int] = CONCURRENCIES,
    out_dir: Path = REPO / "results" / "perf_analyzer",
    quick: bool = False,
    photos: Sequence[bytes] | None = None,
    timeout_s: float | None = 600,
) -> list[dict]:
    """Run perf_analyzer over gRPC against ``model`` at each concurrency; one dict per level.

    Each row: ``model``, ``concurrency``, ``throughput`` (inferences/s = images/s),
    latencies ``p50_ms``/``p90_ms``/``p95_ms``/``p99_ms``/``avg_ms``, the client/server
    split (``client_send_ms``, ``client_recv_ms``, ``server_queue_ms``,
    ``server_compute_{input,infer,output}_ms``, ...), ``stable``, ``window_requests``
    and, for ensembles, ``composing``: queue and compute per composing model (see
    ``parse_composing``). Each level is its own perf_analyzer run with count windows
    (:data:`FULL_WINDOW`, or the shorter :data:`QUICK_WINDOW` with ``quick``). Files
    written to ``out_dir``: the input JSON and, per level, the command, perf_analyzer's
    report (``.log``) and CSVs (the ensemble's and one per composing model), and
    ``<model>.json`` with the rows.
    """
    settings = dict(QUICK_WINDOW if quick else FULL_WINDOW)
    per_photo = settings.pop("requests_per_photo")
    photos = list(photos or photo_files())
    binary = ensure_perf_analyzer()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    input_data = write_input_data(out_dir / "input_data.json", photos)

    rows: list[dict] = []
    for c in sorted(set(concurrencies)):
        n = window_requests(c, len(photos), per_photo)
        window = {**settings, "window_requests": n}
        args = (binary, model, url, input_data, out_dir, c)
        done, csv_path = run_level(*args, window, f"{model}.c{c}", timeout_s)
        stable = True
        if done.returncode != 0 and "stable measurement" in done.stdout + done.stderr:
            stable = False
            done, csv_path = run_level(*args, {**window, **UNSETTLED}, f"{model}.c{c}", timeout_s)
        if done.returncode != 0 or not csv_path.exists():
            raise failure(model, done)
        composing = parse_composing(done.stdout)
        for row in parse_csv(csv_path):
            steps = composing.get(row["concurrency"], {})
            row.update(model=model, stable=stable, window_requests=n, composing=steps)
            if steps:  # the ensemble's own queue is ~0: requests wait inside its steps
                row["steps_queue_ms"] = sum(c["queue_ms"] for c in steps.values())
            rows.append(row)
    (out_dir / f"{model}.json").write_text(json.dumps(rows, indent=1))
    return rows
