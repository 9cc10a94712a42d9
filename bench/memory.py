"""Memory of a server the benchmark started: PSS per model, idle and under load.

PSS (``bench.processes``) is taken for every process of the server
(``TritonServer.pids``) and added up per role (:func:`roles`): ``tritonserver`` itself;
each model's Python-backend workers (``ensemble.supervisor.workers`` says whose each
is), under the model's name, all its instances together; the front (nginx: its master
and workers); anything else in the server's process tree.

:func:`measure`: each photo once through each ensemble (a model's first requests pay
for lazy set-up and memory that the steady state keeps); one sample
:data:`IDLE_SETTLE_S` seconds later, before any load; then ``bench.load``'s closed loop
for ``duration_s`` seconds with a sample every :data:`SAMPLE_EVERY_S` seconds. Only a
server started here can be measured: with ``python -m bench --url`` the bench cannot see
the server's processes, and raw.json's ``memory`` is None.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from bench import shown, table
from bench.load import OUTCOMES, Load, grpc, warm_up
from bench.processes import GIB, MIB, Sampler, pss_of, tree

TRITON = "tritonserver"
FRONT = "front (nginx)"
OTHER = "other"
SAMPLE_EVERY_S = 2.0
IDLE_SETTLE_S = 5.0  # after the warm-up: freed memory goes back (jemalloc) before idle
LOAD_CONCURRENCY = 8
LOAD_SECONDS = 60.0
QUICK_LOAD_SECONDS = 10.0


# --- pure parts ----------------------------------------------------------------------


def roles(
    pids: Sequence[int], triton_pid: int, front_pids: Sequence[int], stubs: Mapping[int, str]
) -> dict[int, str]:
    """``{pid: role}`` for the server's ``pids``: :data:`TRITON` for ``triton_pid``,
    the model's name for a Python-backend worker (``stubs``: ``{pid: model}``),
    :data:`FRONT` for the front's processes, :data:`OTHER` for the rest."""
    front = set(front_pids)
    return {
        pid: TRITON if pid == triton_pid else stubs.get(pid, FRONT if pid in front else OTHER)
        for pid in pids
    }


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
    names = list(dict.fromkeys([*idle, *(r for s in samples for r in s["pss"])]))
    last = {TRITON: 0, FRONT: 2, OTHER: 3}
    names.sort(key=lambda r: (last.get(r, 1), -idle.get(r, 0), r))
    rows = []
    for role in names:
        peaks = [s["pss"].get(role, 0) for s in samples]
        rows.append({"role": role, "processes": processes.get(role, 0),
                     "idle": idle.get(role, 0), "peak": max(peaks) if peaks else None})  # fmt: skip
    totals = [sum(s["pss"].values()) for s in samples]
    peak = max(range(len(totals)), key=totals.__getitem__) if totals else None
    return {
        "rows": rows,
        "total_idle": sum(idle.values()),
        "total_peak": None if peak is None else totals[peak],
        "peak_at_s": None if peak is None else samples[peak]["t_s"],
    }


def not_measured(embedded: bool, url: str) -> str:
    """Why a run has no memory figures (``embedded``: whether it started the server)."""
    if embedded:
        return "not measured in this run"
    return (
        f"not measured: this run measured the server at {url}, started elsewhere, and "
        "cannot see its processes (run without --url to measure one it starts)"
    )


def markdown(memory: Mapping | None, embedded: bool = True, url: str = "") -> list[str]:
    """The report's memory section (Markdown lines) for raw.json's ``memory``; None:
    not measured, and why (:func:`not_measured`)."""
    if not memory:
        reason = not_measured(embedded, url)
        return [reason[0].upper() + reason[1:] + "."]
    s, load = summary(memory), memory["load"]
    rows = [(r["role"], r["processes"], f"{r['idle'] / MIB:.0f}",
             shown(None if r["peak"] is None else r["peak"] / MIB)) for r in s["rows"]]  # fmt: skip
    peak = None if s["total_peak"] is None else s["total_peak"] / GIB
    count = sum(r["processes"] for r in s["rows"])
    rows.append(("**total**", count, f"**{s['total_idle'] / GIB:.2f} GiB**",
                 f"**{shown(peak, '.2f')} GiB**"))  # fmt: skip
    at = "" if s["peak_at_s"] is None else f", the total's peak {s['peak_at_s']:g} s in"
    return [
        "PSS (proportional set size): a process's resident memory with each page shared "
        "by n processes counted 1/n in each, so the total counts every page once. Per "
        "model: all its Python-backend workers (instances) together. Idle: after each "
        "photo went once through each ensemble, before any load. Peak: the largest of "
        f"the samples taken every {load['every_s']:g} s while {load['concurrency']} "
        f"clients sent one photo at a time for {load['duration_s']:.0f} s, cycling over "
        f"{', '.join(load['ensembles'])}; each row's peak is its own, so the rows' "
        "peaks can add up to more than the total's.",
        "",
        *table(("process", "processes", "idle MiB", "peak MiB"), rows),
        "",
        f"The load: {load['answered']} answered ({load['throughput']:.2f} images/s, p50 "
        f"{shown(load['p50_ms'])} ms, p99 {shown(load['p99_ms'])} ms), "
        f"{load['refused']} refused as busy, {load['failed']} failed; "
        f"{len(memory.get('samples') or [])} samples{at}.",
    ]


# --- the measurement -----------------------------------------------------------------


def sample(server) -> tuple[dict[str, int], dict[str, int]]:
    """One reading of the running ``TritonServer``: (PSS bytes per role, processes per
    role)."""
    from ensemble.supervisor import workers

    triton_pid = server.process.pid
    front = server.front.process if server.front is not None else None
    front_pids = [p.pid for p in tree(front.pid)] if front is not None else []
    role_of = roles(server.pids(), triton_pid, front_pids, workers(triton_pid))
    pss = pss_of(role_of)
    counts: dict[str, int] = {}
    for pid in pss:
        counts[role_of[pid]] = counts.get(role_of[pid], 0) + 1
    return by_role(pss, role_of), counts


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
    keeps as ``memory``: ``idle`` (``{"pss": {role: bytes}, "processes": {role:
    count}}``), ``samples`` (``[{"t_s": seconds into the load, "pss": {role: bytes}}]``)
    and ``load``: its ``concurrency``, ``duration_s``, ``ensembles``, ``every_s`` and
    figures (the count of each outcome, ``failures``, ``throughput`` in images/s,
    ``p50_ms``, ``p99_ms``)."""
    log(f"memory: warm-up, each photo once through {', '.join(ensembles)}")
    warm_up(url, ensembles, photos)
    time.sleep(IDLE_SETTLE_S)
    pss, processes = sample(server)
    log(f"memory: idle {sum(pss.values()) / GIB:.2f} GiB PSS in {sum(processes.values())} "
        "processes")  # fmt: skip
    load = Load(grpc(url, 60.0), ensembles, photos, concurrency, duration_s=duration_s)
    with load, Sampler(lambda: sample(server)[0], SAMPLE_EVERY_S, load.t0) as sampler:
        load.wait()
    f = load.figures(digits=1)
    memory = {
        "idle": {"pss": pss, "processes": processes},
        "samples": [{"t_s": round(t, 1), "pss": roles_pss} for t, roles_pss in sampler.samples],
        "load": {"concurrency": concurrency, "duration_s": round(load.seconds, 2),
                 "ensembles": list(ensembles), "every_s": SAMPLE_EVERY_S,
                 **{k: f[k] for k in (*OUTCOMES, "failures", "p50_ms", "p99_ms")},
                 "throughput": round(f["images_per_s"], 3)},
    }  # fmt: skip
    peak = summary(memory)["total_peak"]
    if peak is not None:
        log(f"memory: peak {peak / GIB:.2f} GiB PSS under load ({f['images_per_s']:.2f} images/s)")
    return memory
