"""Memory of a server the benchmark started: PSS per model, idle and under load.

PSS (proportional set size, psutil's ``memory_full_info().pss``): a process's resident
memory with each page shared by n processes counted 1/n in each, so that the sum over
processes counts every page once. It is taken for every process of the server
(``TritonServer.pids``) and added up per role (:func:`roles`):

- ``tritonserver`` itself;
- each model's Python-backend workers (stubs; ``ensemble.supervisor.workers`` says
  whose each is), under the model's name, all its instances together;
- the front (nginx: its master and workers);
- anything else in the server's process tree.

:func:`measure`:

1. warm-up: each photo once through each ensemble (a model's first requests pay for
   lazy set-up and memory that the steady state keeps);
2. idle: one sample :data:`IDLE_SETTLE_S` seconds later, before any load;
3. load: ``bench.soak``'s closed loop (``concurrency`` threads, each sending one photo
   at a time, cycling over the ensembles and the photos) for ``duration_s`` seconds,
   with a sample every :data:`SAMPLE_EVERY_S` seconds.

Only a server started here can be measured: with ``python -m bench --url`` the bench
cannot see the server's processes, and raw.json's ``memory`` is None.

``python -m bench.memory [--seconds 60] [--ensembles ...]`` starts the server on the
models file (``--models``), measures and prints the same table as the report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

TRITON = "tritonserver"
FRONT = "front (nginx)"
OTHER = "other"
SAMPLE_EVERY_S = 2.0
IDLE_SETTLE_S = 5.0  # after the warm-up: freed memory goes back (jemalloc) before idle
LOAD_CONCURRENCY = 8
LOAD_SECONDS = 60.0
QUICK_LOAD_SECONDS = 10.0
GIB = 2**30
MIB = 2**20


# --- pure parts ----------------------------------------------------------------------


def roles(
    pids: Sequence[int], triton_pid: int, front_pids: Sequence[int], stubs: Mapping[int, str]
) -> dict[int, str]:
    """``{pid: role}`` for the server's ``pids``: :data:`TRITON` for ``triton_pid``,
    the model's name for a Python-backend worker (``stubs``: ``{pid: model}``),
    :data:`FRONT` for the front's processes, :data:`OTHER` for the rest."""
    front = set(front_pids)
    found = {}
    for pid in pids:
        if pid == triton_pid:
            found[pid] = TRITON
        elif pid in stubs:
            found[pid] = stubs[pid]
        elif pid in front:
            found[pid] = FRONT
        else:
            found[pid] = OTHER
    return found


def by_role(pss: Mapping[int, int], role_of: Mapping[int, str]) -> dict[str, int]:
    """PSS bytes per role: the ``pss`` (``{pid: bytes}``) of each role's processes
    added up; a process without a role counts as :data:`OTHER`."""
    totals: dict[str, int] = {}
    for pid, size in pss.items():
        role = role_of.get(pid, OTHER)
        totals[role] = totals.get(role, 0) + size
    return totals


def summary(memory: Mapping) -> dict:
    """Per role and in total, from raw.json's ``memory`` (see :func:`measure`):
    ``rows``: ``[{"role", "processes", "idle", "peak"}]`` (bytes; ``peak`` is the
    largest of the load's samples of that role, None without samples), tritonserver
    first, then the models by idle PSS (largest first), the front and the rest last;
    ``total_idle``; ``total_peak`` (the largest sum over one sample, so not the sum
    of the rows' peaks, which need not fall in the same sample) and ``peak_at_s``
    (seconds into the load)."""
    idle = memory["idle"]["pss"]
    processes = memory["idle"].get("processes", {})
    samples = memory.get("samples") or []
    names = list(idle) + [r for s in samples for r in s["pss"] if r not in idle]
    names = list(dict.fromkeys(names))
    last = {TRITON: 0, FRONT: 2, OTHER: 3}
    names.sort(key=lambda r: (last.get(r, 1), -idle.get(r, 0), r))
    rows = []
    for role in names:
        peaks = [s["pss"].get(role, 0) for s in samples]
        rows.append({
            "role": role,
            "processes": processes.get(role, 0),
            "idle": idle.get(role, 0),
            "peak": max(peaks) if peaks else None,
        })  # fmt: skip
    totals = [sum(s["pss"].values()) for s in samples]
    peak = max(range(len(totals)), key=totals.__getitem__) if totals else None
    return {
        "rows": rows,
        "total_idle": sum(idle.values()),
        "total_peak": None if peak is None else totals[peak],
        "peak_at_s": None if peak is None else samples[peak]["t_s"],
    }


# --- the server's processes ----------------------------------------------------------


def server_roles(server) -> dict[int, str]:
    """``{pid: role}`` of every process of the running ``ensemble.server.TritonServer``."""
    import psutil

    from ensemble.supervisor import workers

    triton_pid = server.process.pid
    front_pids: list[int] = []
    if server.front is not None and server.front.process is not None:
        with contextlib.suppress(psutil.Error):
            front = psutil.Process(server.front.process.pid)
            front_pids = [front.pid, *(c.pid for c in front.children(recursive=True))]
    return roles(server.pids(), triton_pid, front_pids, workers(triton_pid))


def pss_of(pids: Sequence[int]) -> dict[int, int]:
    """``{pid: PSS bytes}``; a process that ended meanwhile is left out."""
    import psutil

    found = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found[pid] = psutil.Process(pid).memory_full_info().pss
    return found


def sample(server) -> tuple[dict[str, int], dict[str, int]]:
    """One reading of the server: (PSS bytes per role, processes per role)."""
    role_of = server_roles(server)
    pss = pss_of(list(role_of))
    counts: dict[str, int] = {}
    for pid in pss:
        counts[role_of[pid]] = counts.get(role_of[pid], 0) + 1
    return by_role(pss, role_of), counts


# --- the measurement -----------------------------------------------------------------


def warm_up(url: str, ensembles: Sequence[str], photos: Sequence[bytes]) -> None:
    """Each photo once through each ensemble, one request at a time."""
    from client import DetectorClient

    with DetectorClient(url) as client:
        for ensemble in ensembles:
            for photo in photos:
                client.detect([photo], model=ensemble)


def measure(
    server,
    url: str,
    ensembles: Sequence[str],
    photos: Sequence[bytes],
    duration_s: float = LOAD_SECONDS,
    concurrency: int = LOAD_CONCURRENCY,
    log: Callable[[str], None] = lambda message: None,
) -> dict:
    """Idle and under-load PSS of ``server`` (a running ``TritonServer``) serving
    ``ensembles`` at gRPC ``url`` (see the module docstring). Returns what raw.json
    keeps as ``memory``:

    - ``idle``: ``{"pss": {role: bytes}, "processes": {role: count}}``;
    - ``samples``: ``[{"t_s": seconds since the load began, "pss": {role: bytes}}]``;
    - ``load``: the loop's ``concurrency``, ``duration_s``, ``ensembles``, ``every_s``
      and its figures from ``bench.soak.soak`` (``answered``, ``refused``, ``failed``,
      ``failures``, ``throughput`` in images/s, ``p50_ms``, ``p99_ms``).
    """
    from bench.soak import soak

    log(f"memory: warm-up, each photo once through {', '.join(ensembles)}")
    warm_up(url, ensembles, photos)
    time.sleep(IDLE_SETTLE_S)
    pss, processes = sample(server)
    log(f"memory: idle {sum(pss.values()) / GIB:.2f} GiB PSS in {sum(processes.values())} "
        "processes")  # fmt: skip

    samples: list[dict] = []
    stop = threading.Event()
    t0 = time.perf_counter()

    def sample_every() -> None:
        due = t0 + SAMPLE_EVERY_S  # on a fixed grid: reading PSS itself takes a while
        while not stop.wait(max(0.0, due - time.perf_counter())):
            pss_now, _ = sample(server)
            samples.append({"t_s": round(time.perf_counter() - t0, 1), "pss": pss_now})
            due += SAMPLE_EVERY_S

    sampler = threading.Thread(target=sample_every, daemon=True)
    sampler.start()
    try:
        result = soak(url, duration_s, concurrency, ensembles=ensembles, photos=photos, log=log)
    finally:
        stop.set()
        sampler.join(10)
    load = {
        "concurrency": concurrency,
        "duration_s": result["duration_s"],
        "ensembles": list(ensembles),
        "every_s": SAMPLE_EVERY_S,
        **{k: result[k] for k in ("answered", "refused", "failed", "failures", "throughput",
                                  "p50_ms", "p99_ms")},
    }  # fmt: skip
    memory = {"idle": {"pss": pss, "processes": processes}, "samples": samples, "load": load}
    s = summary(memory)
    if s["total_peak"] is not None:
        log(f"memory: peak {s['total_peak'] / GIB:.2f} GiB PSS under load "
            f"({load['throughput']:.2f} images/s)")  # fmt: skip
    return memory


def main(argv: list[str] | None = None) -> int:
    from bench.photos import photo_files
    from bench.report import memory_lines
    from ensemble.registry import ModelsFileError
    from ensemble.server import running_server

    ap = argparse.ArgumentParser(
        prog="python -m bench.memory", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--seconds", type=float, default=LOAD_SECONDS, help="length of the load")
    ap.add_argument("--concurrency", type=int, default=LOAD_CONCURRENCY)
    ap.add_argument("--ensembles", nargs="+", help="default: every one the server serves")
    ap.add_argument("--models", type=Path, help="models file (default: models.toml)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    def log(message: str) -> None:
        print(f"[memory] {message}", flush=True)

    from bench import served

    try:
        with running_server(args.models, load=tuple(args.ensembles or ())) as server:
            ensembles = args.ensembles or served.ready_ensembles(server.grpc_url)
            photos = list(photo_files("jpeg"))
            memory = measure(
                server, server.grpc_url, ensembles, photos, args.seconds, args.concurrency, log
            )
    except (RuntimeError, ValueError, ModelsFileError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    print("\n".join(memory_lines(memory, embedded=True, url=server.grpc_url)))
    if args.json:
        args.json.write_text(json.dumps(memory, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
