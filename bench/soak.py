"""Soak: minutes of closed-loop load over every detection ensemble, optionally killing
one model's workers partway, and what that cost.

``python -m bench.soak --minutes 10 --concurrency 16 [--kill postprocess_pytorch --kill-at 120]``
starts Triton on the models file (``--models``, default models.toml) unless ``--url``
names a running one, and runs ``bench.load``'s closed loop over every detection
ensemble the server has ready and the photos (``bench.photos``), through the client
library (``bench.load.Library``): answered, refused (busy through every retry) and
failed requests as the library's callers see them, the first line of each distinct
failure, and apart, the server's refusals the library rode out (busy, recovering,
unreachable tries).

``--kill MODEL`` SIGKILLs every Python-backend worker (stub) of that model at
``--kill-at`` seconds, then measures the recovery: from the kill to (a) the first
answer to a request sent after the kill to an ensemble that runs MODEL, and (b)
``/v2/health/ready`` answering 200 again after having gone down (polled every 100 ms).
A run that ends first says "not recovered within the run"; it never waits longer.
``--kill tritonserver`` SIGKILLs the server process itself (what a crash inside a
native backend does); the launcher starts it again, and every ensemble is affected.

Memory: PSS (``bench.processes``) summed over the server's processes, tritonserver and
every process under it (the workers), sampled every 2 s: at the start (after one
warm-up request per ensemble), the peak, and at the end.

Prints a table and writes every figure, with the counts per second (to see the dip
around a kill), to ``--out`` (default results/soak/) as soak-<date>-<time>.json.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence

from bench import command_parser, logger, measured, served
from bench.load import ANSWERED, FAILED, OUTCOMES, Library, Load, warm_up
from bench.photos import photo_files
from bench.processes import GIB, Sampler, kill_all, process_tree, pss_bytes
from client import DetectorError
from ensemble.supervisor import stub_model

MEMORY_EVERY_S = 2.0
READY_EVERY_S = 0.1
# --kill's name for tritonserver itself: what a crash in a native backend (which runs
# inside it) does; the launcher starts it again (ensemble.server).
SERVER = "tritonserver"


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


def kill_workers(pids: Sequence[int], model: str) -> list[int]:
    """SIGKILL every Python-backend worker of ``model`` among ``pids`` (``SERVER``:
    tritonserver itself); their ids."""
    import psutil

    victims = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            found = process.name() == SERVER if model == SERVER else None
            if found or stub_model(process.cmdline()) == model:
                victims.append(process)
    return kill_all(victims)


def soak(
    url: str,
    duration_s: float,
    concurrency: int,
    *,
    server_pids: Callable[[], Sequence[int]] | None = None,
    kill: str | None = None,
    kill_at_s: float | None = None,
    http_url: str | None = None,
    timeout_s: float = 60.0,
    log: Callable[[str], None] = lambda message: None,
) -> dict:
    """Soak the server at gRPC ``url`` for ``duration_s`` seconds with ``concurrency``
    threads over every detection ensemble it has ready; ``timeout_s`` bounds each
    request. ``server_pids`` returns the server's root process ids; their trees are
    measured (memory) and searched for the workers of ``kill`` (a model name), killed
    ``kill_at_s`` seconds in (default: a third of the run); ``http_url`` is polled for
    readiness after the kill. Returns the figures (see the module docstring; times in
    seconds, latencies in ms, memory in GiB)."""
    ensembles = served.ready_ensembles(url)
    photos = photo_files("jpeg")
    if not ensembles:
        raise RuntimeError(f"the server at {url} has no detection ensemble ready")
    if kill is not None and (server_pids is None or http_url is None):
        raise ValueError("killing a model's workers needs the server's pids and HTTP URL")
    kill_at_s = duration_s / 3 if kill_at_s is None else kill_at_s
    if kill is not None and not 0 <= kill_at_s < duration_s:
        raise ValueError(f"--kill-at {kill_at_s} s is not within the {duration_s} s run")
    affected = affected_ensembles(url, ensembles, kill) if kill is not None else set()
    warm_up(url, ensembles, photos[:1])
    log(f"{concurrency} threads for {duration_s:.0f} s over {', '.join(ensembles)}")

    def pss() -> int:
        return pss_bytes(process_tree(server_pids()))

    samples = [(0.0, pss())] if server_pids is not None else []
    killed: dict = {}
    ready: dict = {"went_down_s": None, "back_s": None}
    stop = threading.Event()
    library = Library(url, timeout_s)
    load = Load(library, ensembles, photos, concurrency, duration_s=duration_s)

    def kill_then_watch() -> None:
        if stop.wait(max(0.0, kill_at_s - load.elapsed())):
            return
        at = load.elapsed()
        killed.update(at=at, pids=kill_workers(process_tree(server_pids()), kill))
        what = SERVER if kill == SERVER else f"{len(killed['pids'])} worker(s) of {kill}"
        log(f"killed {what} at {at:.1f} s: {killed['pids']}")
        while not stop.wait(READY_EVERY_S):  # readiness: first down, then 200 again
            up, now = served.is_ready(http_url), load.elapsed()
            if not up and ready["went_down_s"] is None:
                ready["went_down_s"] = now
            elif up and ready["went_down_s"] is not None:
                ready["back_s"] = now
                return

    with contextlib.ExitStack() as stack:
        stack.enter_context(load)
        if server_pids is not None:
            sampler = stack.enter_context(Sampler(pss, MEMORY_EVERY_S, load.t0))
        if kill is not None:
            watcher = threading.Thread(target=kill_then_watch, daemon=True)
            watcher.start()
            stack.callback(watcher.join, 5)
        stack.callback(stop.set)
        load.wait()
    if server_pids is not None:
        samples += [*sampler.samples, (load.seconds, pss())]
    return {**figures(url, load, samples, kill, killed, ready, affected),
            "server_refusals": dict(library.refusals)}  # fmt: skip


def affected_ensembles(url: str, ensembles: Sequence[str], kill: str) -> set[str]:
    """The ensembles that run the model ``kill`` (all of them for ``SERVER``)."""
    from client import DetectorClient

    if kill == SERVER:
        return set(ensembles)
    with DetectorClient(url) as client:
        affected = {e for e in ensembles if kill in client.model_info(e).steps}
    if not affected:
        raise ValueError(f"no ensemble among {', '.join(ensembles)} runs a model {kill!r}")
    return affected


def figures(url: str, load: Load, samples: Sequence[tuple[float, int]], kill: str | None,
            killed: Mapping, ready: Mapping, affected: set[str]) -> dict:  # fmt: skip
    """The soak's result (the module docstring) from its ended load, its PSS samples and,
    with ``kill``, what was killed when (``killed``: ``at`` s, ``pids``) and when the
    readiness went down and came back (``ready``)."""
    f = load.figures(digits=1)
    seconds = max((int(r.end) for r in load.records), default=-1) + 1
    per_second = {o: [0] * seconds for o in OUTCOMES}
    per_ensemble = {e: dict.fromkeys(OUTCOMES, 0) for e in load.targets}
    for r in load.records:
        per_second[r.outcome][int(r.end)] += 1
        per_ensemble[r.target][r.outcome] += 1
    result = {
        "url": url, "duration_s": round(load.seconds, 2), "concurrency": load.concurrency,
        "ensembles": load.targets, "photos": len(load.photos), "sent": len(load.records),
        **{o: f[o] for o in OUTCOMES}, "per_ensemble": per_ensemble, "failures": f["failures"],
        "throughput": round(f["images_per_s"], 3), "p50_ms": f["p50_ms"], "p99_ms": f["p99_ms"],
        "per_second": per_second, "memory": memory_summary(samples),
        "memory_samples": [[round(t, 1), round(b / GIB, 3)] for t, b in samples],
        "kill": None, "loadavg_1m_after": os.getloadavg()[0],
    }  # fmt: skip
    if kill is None:
        return result
    at = killed.get("at")
    if at is None:  # the run ended before the kill time
        return {**result, "kill": {"model": kill, "at_s": None, "workers_killed": []}}
    answers = [r.end for r in load.records
               if r.outcome == ANSWERED and r.start >= at and r.target in affected]  # fmt: skip
    answer = min(answers, default=None)
    until = answer if answer is not None else math.inf
    down, back = ready["went_down_s"], ready["back_s"]
    result["kill"] = {
        "model": kill, "at_s": round(at, 2), "workers_killed": killed["pids"],
        "ensembles": sorted(affected),
        "answer_recovery_s": None if answer is None else round(answer - at, 2),
        "ready_went_down_after_s": None if down is None else round(down - at, 2),
        "ready_recovery_s": None if back is None else round(back - at, 2),
        "failed_until_recovery": sum(1 for r in load.records
                                     if r.outcome == FAILED and at <= r.end < until),
    }  # fmt: skip
    return result


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
    lines += [f"failed {n:>6} x {reason}" for reason, n in r["failures"].items()]
    refusals = r.get("server_refusals")
    if refusals is not None:
        lines.append(
            "server      refusals the client library sent again: "
            + ", ".join(f"{refusals.get(k, 0)} {k}" for k in ("busy", "recovering", "unreachable"))
        )
    k = r["kill"]
    if k is not None and k["at_s"] is None:
        lines.append(f"kill        {k['model']}: the run ended before the kill time")
    elif k is not None:
        never = "not recovered within the run"
        answer, down, back = (k[key] for key in ("answer_recovery_s", "ready_went_down_after_s",
                                                 "ready_recovery_s"))  # fmt: skip
        lines += [
            f"kill        {len(k['workers_killed'])} worker(s) of {k['model']} at "
            f"{k['at_s']:.1f} s (pids {k['workers_killed'] or 'none found'})",
            f"recovery    first answer of {', '.join(k['ensembles'])}: "
            + (never if answer is None else f"{answer:.2f} s after the kill"),
            "            /v2/health/ready: never went down within the run" if down is None else
            f"            /v2/health/ready: down {down:.2f} s after the kill, "
            + (never if back is None else f"200 again {back:.2f} s after the kill"),
            f"            failed between the kill and the first answer: "
            f"{k['failed_until_recovery']}",
        ]  # fmt: skip
    m = r["memory"]
    lines.append(
        "memory      not measured (no server process: give --pid)"
        if m is None
        else f"memory      PSS of the server's processes: start {m['start_gib']:.2f} GiB, "
        f"peak {m['peak_gib']:.2f} GiB, end {m['end_gib']:.2f} GiB ({m['samples']} samples)"
    )
    lines.append(f"load        1-minute load average after the run: {r['loadavg_1m_after']:.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = command_parser("python -m bench.soak", __doc__, out="soak")
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the load (default 10)")
    ap.add_argument("--concurrency", type=int, default=16, help="client threads (default 16)")
    ap.add_argument(
        "--kill", metavar="MODEL",
        help=f"SIGKILL this model's Python-backend workers ({SERVER}: the server itself)",
    )  # fmt: skip
    ap.add_argument(
        "--kill-at", type=float, metavar="SECONDS", help="when to kill (default: a third in)"
    )
    ap.add_argument("--http-url", help="with --url and --kill: its HTTP URL (http://host:port)")
    ap.add_argument("--pid", type=int, help="with --url: the tritonserver process, for memory")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.concurrency < 1:
        ap.error("--minutes must be positive and --concurrency at least 1")
    if args.url and args.kill and (args.pid is None or args.http_url is None):
        ap.error("--kill with --url needs --pid (the tritonserver process) and --http-url")
    log = logger("soak")
    options = {"workdir": args.out / "server"}

    def measure() -> dict:
        with served.triton(args.url, args.models, log, **options) as (url, server):
            pids = server.pids if server else None if args.pid is None else (lambda: [args.pid])
            return soak(
                url, args.minutes * 60, args.concurrency, server_pids=pids, kill=args.kill,
                kill_at_s=args.kill_at, timeout_s=args.timeout, log=log,
                http_url=server.http_url if server else args.http_url,
            )  # fmt: skip

    errors = (RuntimeError, ValueError, DetectorError)
    return 1 if measured(measure, errors, format_report, args.out, "soak", log) is None else 0


if __name__ == "__main__":
    raise SystemExit(main())
