"""Soak: minutes of closed-loop load over every detection ensemble, optionally killing
one model's workers partway, and what that cost.

``python -m bench.soak --minutes 10 --concurrency 16 [--kill postprocess_pytorch --kill-at 120]``
starts Triton on the models file (``--models``, default models.toml) unless ``--url``
names a running one. ``--concurrency`` threads, each with its own tritonclient gRPC
client, send one photo (``bench.photos``) at a time, cycling over every detection
ensemble the server has ready and over the photos: a raw ``infer`` call with no
client-side retry, so that a refusal is counted when it happens. Each answer is

- answered: a result;
- refused: gRPC UNAVAILABLE carrying one of ``contract.BUSY_MESSAGES`` (a full queue,
  or a request that waited longer than the queue policy allows): busy, not broken;
- failed: anything else; the first line of each distinct message is counted.

``--kill MODEL`` SIGKILLs every Python-backend worker (stub) of that model at
``--kill-at`` seconds, then measures the recovery: from the kill to (a) the first
answer to a request sent after the kill to an ensemble that runs MODEL, and (b)
``/v2/health/ready`` answering 200 again after having gone down (polled every 100 ms).
A run that ends first says "not recovered within the run"; it never waits longer.
``--kill tritonserver`` SIGKILLs the server process itself (what a crash inside a
native backend does); the launcher starts it again, and every ensemble is affected.

Memory: PSS (proportional set size: a page shared by n processes counts 1/n in each,
so the sum counts it once) summed over the server's processes, tritonserver and every
process under it (the workers), sampled every 2 s: at the start (after one warm-up
request per ensemble), the peak, and at the end.

Prints a table and writes every figure, with the counts per second (to see the dip
around a kill), to ``--out`` (default results/soak/) as soak-<date>-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench import served
from bench.photos import photo_files
from client.api import DetectorError, build_inputs, first_line, is_busy
from ensemble.supervisor import stub_model

REPO = Path(__file__).resolve().parents[1]
OUTCOMES = ("answered", "refused", "failed")
MEMORY_EVERY_S = 2.0
READY_EVERY_S = 0.1
# A thread whose request was refused or failed waits this long before its next one, so
# that a model failing at once does not turn the thread into a busy loop that takes the
# CPU from the server. It is pacing, not a retry: the next request is a new one.
PAUSE_AFTER_ERROR_S = 0.05
GIB = 2**30


# --- pure parts --------------------------------------------------------------------


def percentile_ms(seconds: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile of ``seconds`` in ms (1 decimal), None when there are none."""
    return round(float(np.percentile(np.asarray(seconds) * 1000.0, q)), 1) if seconds else None


def memory_summary(samples: Sequence[tuple[float, int]]) -> dict | None:
    """Start, peak and end of PSS ``samples`` (``(seconds since the load began,
    bytes)``, in time order) in GiB with 2 decimals; None without samples."""
    if not samples:
        return None
    values = [b for _, b in samples]
    return {
        "start_gib": round(values[0] / GIB, 2),
        "peak_gib": round(max(values) / GIB, 2),
        "end_gib": round(values[-1] / GIB, 2),
        "samples": len(values),
    }


# --- the server's processes ---------------------------------------------------------


def process_tree(roots: Sequence[int]) -> list[int]:
    """``roots`` and every process under them that still exist, each once."""
    import psutil

    found: dict[int, None] = {}
    for pid in roots:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            found[pid] = None
            found.update(dict.fromkeys(c.pid for c in process.children(recursive=True)))
    return list(found)


def pss_bytes(pids: Sequence[int]) -> int:
    """PSS of ``pids`` summed, in bytes; a process that ended meanwhile counts 0."""
    from bench.memory import pss_of

    return sum(pss_of(pids).values())


# --kill's name for tritonserver itself: what a crash in a native backend (which runs
# inside it) does; the launcher starts it again (ensemble.server).
SERVER = "tritonserver"


def kill_workers(pids: Sequence[int], model: str) -> list[int]:
    """SIGKILL every Python-backend worker of ``model`` among ``pids`` (``SERVER``:
    tritonserver itself); their ids."""
    import psutil

    killed = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            found = process.name() == SERVER if model == SERVER else None
            if found or stub_model(process.cmdline()) == model:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


def is_ready(http_url: str) -> bool:
    """Whether ``<http_url>/v2/health/ready`` answers 200 within 1 s."""
    try:
        with urllib.request.urlopen(f"{http_url}/v2/health/ready", timeout=1) as r:
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


# --- the run -------------------------------------------------------------------------


class Tally:
    """What the client threads saw, shared under one lock. Times are seconds since the
    load began (``time.perf_counter()`` minus ``t0``)."""

    def __init__(self, t0: float, affected: set[str]):
        self.t0 = t0
        self.affected = affected  # ensembles that run the killed model
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.per_ensemble: dict[str, Counter[str]] = {}
        self.per_second: dict[int, Counter[str]] = {}
        self.failures: Counter[str] = Counter()
        self.failed_at: list[float] = []
        self.latencies: list[float] = []
        self.kill_at: float | None = None
        self.first_answer_after_kill: float | None = None

    def add(self, ensemble: str, result: str, sent: float, done: float, reason: str = "") -> None:
        """One request to ``ensemble`` sent at ``sent`` and over at ``done``
        (perf_counter seconds) with ``result`` (an :data:`OUTCOMES`)."""
        sent, done = sent - self.t0, done - self.t0
        with self.lock:
            self.counts[result] += 1
            self.per_ensemble.setdefault(ensemble, Counter())[result] += 1
            self.per_second.setdefault(int(done), Counter())[result] += 1
            if result == "answered":
                self.latencies.append(done - sent)
                after_kill = self.kill_at is not None and sent >= self.kill_at
                if (
                    after_kill
                    and ensemble in self.affected
                    and self.first_answer_after_kill is None
                ):
                    self.first_answer_after_kill = done
            elif result == "failed":
                self.failures[reason] += 1
                self.failed_at.append(done)


def soak(
    url: str,
    duration_s: float,
    concurrency: int,
    *,
    server_pids: Callable[[], Sequence[int]] | None = None,
    kill: str | None = None,
    kill_at_s: float | None = None,
    http_url: str | None = None,
    ensembles: Sequence[str] | None = None,
    photos: Sequence[bytes] | None = None,
    timeout_s: float = 60.0,
    log: Callable[[str], None] = lambda message: None,
) -> dict:
    """Soak the server at gRPC ``url`` for ``duration_s`` seconds with ``concurrency``
    threads over ``ensembles`` (default: every detection ensemble it has ready) and
    ``photos`` (default: ``bench.photos``); ``timeout_s`` bounds each request.

    ``server_pids`` returns the server's root process ids (tritonserver, and any front
    process); their trees are measured (memory) and searched for the workers of
    ``kill`` (a model name), killed ``kill_at_s`` seconds in (default: a third of the
    run); ``http_url`` is polled for readiness after the kill. Returns the figures (see
    the module docstring; times in seconds, latencies in ms, memory in GiB).
    """
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from client import DetectorClient

    ensembles = list(ensembles or served.ready_ensembles(url))
    photos = list(photos or photo_files("jpeg"))
    if not ensembles:
        raise RuntimeError(f"the server at {url} has no detection ensemble ready")
    affected: set[str] = set()
    if kill is not None:
        if server_pids is None or http_url is None:
            raise ValueError("killing a model's workers needs the server's pids and HTTP URL")
        if kill == SERVER:
            affected = set(ensembles)
        else:
            with DetectorClient(url) as client:
                affected = {e for e in ensembles if kill in client.model_info(e).steps}
        if not affected:
            raise ValueError(f"no ensemble among {', '.join(ensembles)} runs a model {kill!r}")
        kill_at_s = duration_s / 3 if kill_at_s is None else kill_at_s
        if not 0 <= kill_at_s < duration_s:
            raise ValueError(f"--kill-at {kill_at_s} s is not within the {duration_s} s run")

    def infer(client, ensemble: str, photo: bytes) -> None:
        client.infer(ensemble, build_inputs([photo]), client_timeout=timeout_s)

    # One request per ensemble first: the first request of each model pays for lazy
    # set-up (and memory) that the steady state does not.
    warm = grpcclient.InferenceServerClient(url)
    try:
        for ensemble in ensembles:
            try:
                infer(warm, ensemble, photos[0])
            except InferenceServerException as e:
                raise RuntimeError(f"warm-up: {ensemble} failed: {first_line(str(e))}") from e
    finally:
        warm.close()
    log(f"{concurrency} threads for {duration_s:.0f} s over {', '.join(ensembles)}")

    def measured() -> list[int]:
        return process_tree(server_pids()) if server_pids is not None else []

    samples: list[tuple[float, int]] = []
    if server_pids is not None:
        samples.append((0.0, pss_bytes(measured())))
    stop = threading.Event()
    t0 = time.perf_counter()
    tally = Tally(t0, affected)
    deadline = t0 + duration_s
    kill_record: dict = {}
    ready = {"went_down_s": None, "back_s": None}

    def client_loop(index: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        try:
            n = index
            while time.perf_counter() < deadline:
                ensemble, photo = ensembles[n % len(ensembles)], photos[n % len(photos)]
                n += 1
                sent = time.perf_counter()
                try:
                    infer(client, ensemble, photo)
                except InferenceServerException as e:
                    result = "refused" if is_busy(e) else "failed"
                    tally.add(ensemble, result, sent, time.perf_counter(), first_line(str(e)))
                    time.sleep(PAUSE_AFTER_ERROR_S)
                    continue
                except Exception as e:  # anything tritonclient did not wrap is a failure too
                    line = f"{type(e).__name__}: {first_line(str(e))}"
                    tally.add(ensemble, "failed", sent, time.perf_counter(), line)
                    time.sleep(PAUSE_AFTER_ERROR_S)
                    continue
                tally.add(ensemble, "answered", sent, time.perf_counter())
        finally:
            client.close()

    def sample_memory() -> None:
        due = t0 + MEMORY_EVERY_S  # on a fixed grid: reading PSS itself takes a while
        while not stop.wait(max(0.0, due - time.perf_counter())):
            samples.append((time.perf_counter() - t0, pss_bytes(measured())))
            due += MEMORY_EVERY_S

    def kill_then_watch() -> None:
        if stop.wait(max(0.0, t0 + kill_at_s - time.perf_counter())):
            return
        at = time.perf_counter() - t0
        with tally.lock:
            tally.kill_at = at
        killed = kill_workers(measured(), kill)
        kill_record.update(at_s=round(at, 2), pids=killed)
        what = SERVER if kill == SERVER else f"{len(killed)} worker(s) of {kill}"
        log(f"killed {what} at {at:.1f} s: {killed}")
        # Readiness: first down, then 200 again; stops with the run.
        while not stop.wait(READY_EVERY_S):
            up = is_ready(http_url)
            now = time.perf_counter() - t0
            if not up and ready["went_down_s"] is None:
                ready["went_down_s"] = now
            elif up and ready["went_down_s"] is not None:
                ready["back_s"] = now
                return

    helpers = []
    if server_pids is not None:
        helpers.append(threading.Thread(target=sample_memory, daemon=True))
    if kill is not None:
        helpers.append(threading.Thread(target=kill_then_watch, daemon=True))
    clients = [
        threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(concurrency)
    ]
    for thread in helpers + clients:
        thread.start()
    for thread in clients:  # each ends after its last request, at most timeout_s late
        thread.join(duration_s + timeout_s + 30)
    wall = time.perf_counter() - t0
    stop.set()
    for thread in helpers:
        thread.join(5)
    if server_pids is not None:
        samples.append((wall, pss_bytes(measured())))

    counts = {k: tally.counts[k] for k in OUTCOMES}
    seconds = max(tally.per_second, default=-1) + 1
    result = {
        "url": url,
        "duration_s": round(wall, 2),
        "concurrency": concurrency,
        "ensembles": ensembles,
        "photos": len(photos),
        "sent": sum(counts.values()),
        **counts,
        "per_ensemble": {
            e: {k: tally.per_ensemble.get(e, Counter())[k] for k in OUTCOMES} for e in ensembles
        },
        "failures": dict(tally.failures.most_common()),
        "throughput": round(counts["answered"] / wall, 3) if wall > 0 else 0.0,
        "p50_ms": percentile_ms(tally.latencies, 50),
        "p99_ms": percentile_ms(tally.latencies, 99),
        "per_second": {
            k: [tally.per_second.get(s, Counter())[k] for s in range(seconds)] for k in OUTCOMES
        },
        "memory": memory_summary(samples),
        "memory_samples": [[round(t, 1), round(b / GIB, 3)] for t, b in samples],
        "kill": None,
        "loadavg_1m_after": os.getloadavg()[0],
    }
    if kill is not None:
        result["kill"] = kill_summary(kill, kill_record, tally, ready, affected)
    return result


def kill_summary(kill: str, record: dict, tally: Tally, ready: dict, affected: set) -> dict:
    """What the kill cost: recovery times (seconds after the kill, None when not
    recovered within the run) and the requests failed in between."""
    at = record.get("at_s")
    if at is None:  # the run ended before the kill time
        return {"model": kill, "at_s": None, "workers_killed": []}
    answer = tally.first_answer_after_kill
    down, back = ready["went_down_s"], ready["back_s"]
    until = answer if answer is not None else math.inf
    return {
        "model": kill,
        "at_s": at,
        "workers_killed": record["pids"],
        "ensembles": sorted(affected),
        "answer_recovery_s": None if answer is None else round(answer - at, 2),
        "ready_went_down_after_s": None if down is None else round(down - at, 2),
        "ready_recovery_s": None if back is None else round(back - at, 2),
        "failed_until_recovery": sum(1 for t in tally.failed_at if at <= t < until),
    }


# --- report ----------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def format_report(r: dict) -> str:
    """The soak's figures as a plain-text table."""
    lines = [
        f"soak of {r['url']}: {r['duration_s']:.0f} s at concurrency {r['concurrency']}, "
        f"{r['photos']} photos over {', '.join(r['ensembles'])}",
        f"requests    sent {r['sent']}, answered {r['answered']}, refused {r['refused']}, "
        f"failed {r['failed']}",
        f"answered    {r['throughput']:.2f}/s, latency p50 {_ms(r['p50_ms'])}, "
        f"p99 {_ms(r['p99_ms'])}",
        f"{'ensemble':<24} {'answered':>8} {'refused':>8} {'failed':>8}",
    ]
    for ensemble, c in r["per_ensemble"].items():
        lines.append(f"{ensemble:<24} {c['answered']:>8} {c['refused']:>8} {c['failed']:>8}")
    for reason, n in r["failures"].items():
        lines.append(f"failed {n:>6} x {reason}")
    k = r["kill"]
    if k is not None and k["at_s"] is None:
        lines.append(f"kill        {k['model']}: the run ended before the kill time")
    elif k is not None:
        never = "not recovered within the run"
        answer = k["answer_recovery_s"]
        lines += [
            f"kill        {len(k['workers_killed'])} worker(s) of {k['model']} at "
            f"{k['at_s']:.1f} s (pids {k['workers_killed'] or 'none found'})",
            f"recovery    first answer of {', '.join(k['ensembles'])}: "
            + (never if answer is None else f"{answer:.2f} s after the kill"),
        ]
        if k["ready_went_down_after_s"] is None:
            lines.append("            /v2/health/ready: never went down within the run")
        else:
            back = k["ready_recovery_s"]
            lines.append(
                f"            /v2/health/ready: down {k['ready_went_down_after_s']:.2f} s "
                "after the kill, "
                + (never if back is None else f"200 again {back:.2f} s after the kill")
            )
        lines.append(f"            failed between the kill and the first answer: "
                     f"{k['failed_until_recovery']}")  # fmt: skip
    m = r["memory"]
    lines.append(
        "memory      not measured (no server process: give --pid)"
        if m is None
        else f"memory      PSS of the server's processes: start {m['start_gib']:.2f} GiB, "
        f"peak {m['peak_gib']:.2f} GiB, end {m['end_gib']:.2f} GiB ({m['samples']} samples)"
    )
    lines.append(f"load        1-minute load average after the run: {r['loadavg_1m_after']:.1f}")
    return "\n".join(lines)


def write_result(result: dict, out: Path) -> Path:
    """``result`` as ``out/soak-<date>-<time>.json``; the path."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / time.strftime("soak-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(result, indent=1))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the load (default 10)")
    ap.add_argument("--concurrency", type=int, default=16, help="client threads (default 16)")
    ap.add_argument(
        "--kill", metavar="MODEL",
        help=f"SIGKILL this model's Python-backend workers ({SERVER}: the server itself)",
    )  # fmt: skip
    ap.add_argument(
        "--kill-at", type=float, metavar="SECONDS", help="when to kill (default: a third in)"
    )
    ap.add_argument(
        "--url", help="soak this running Triton (gRPC host:port) instead of one started"
    )
    ap.add_argument("--http-url", help="with --url and --kill: its HTTP URL (http://host:port)")
    ap.add_argument("--pid", type=int, help="with --url: the tritonserver process, for memory")
    ap.add_argument(
        "--models", type=Path, help="models file of the server started (default: models.toml)"
    )
    ap.add_argument(
        "--out", type=Path, default=REPO / "results" / "soak", help="default: results/soak/"
    )
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.concurrency < 1:
        ap.error("--minutes must be positive and --concurrency at least 1")
    if args.url and args.kill and (args.pid is None or args.http_url is None):
        ap.error("--kill with --url needs --pid (the tritonserver process) and --http-url")

    def log(message: str) -> None:
        print(f"[soak] {message}", flush=True)

    options = {"kill": args.kill, "kill_at_s": args.kill_at, "timeout_s": args.timeout}
    try:
        with contextlib.ExitStack() as stack:
            if args.url:
                url, http_url = args.url, args.http_url
                pids = None if args.pid is None else (lambda: [args.pid])
            else:
                from ensemble.server import running_server

                log("starting Triton")
                workdir = args.out / "server"
                server = stack.enter_context(running_server(args.models, workdir=workdir))
                url, http_url = server.grpc_url, server.http_url
                # A launcher with processes of its own in front of Triton lists them all.
                pids = server.pids
                log(f"Triton ready at {url}")
            result = soak(
                url, args.minutes * 60, args.concurrency, server_pids=pids, http_url=http_url,
                log=log, **options,
            )  # fmt: skip
    # ServerError (Triton would not start) is a RuntimeError, ModelsFileError a ValueError.
    except (RuntimeError, ValueError, DetectorError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    print(format_report(result))
    log(f"figures: {write_result(result, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
