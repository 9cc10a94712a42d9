"""Native backends against the Python runners, side by side: ``python -m bench.native``.

The launcher serves each detector in Triton's native backend (libtorch, ONNX Runtime,
TensorFlow) when ``ensemble.native`` built it here, else in a Python-backend runner.
This measures three modes in alternating rounds, each on a server of its own (a fresh
repository), so that every mode sees the same drift of a shared 2-core VM: **native**
(the server as ``make serve`` starts it, the throughput profile), **native-latency**
(``--cpu-profile latency``) and **python** (``$NATIVE_CACHE_DIR`` an empty folder while
the server is created, so every detector runs on its Python runner).

Each round: the cold start (seconds until every model is ready), ``bench.memory``,
``bench.paired`` for each ``detect_<name>`` and perf_analyzer at c=8 on each ensemble
with Triton's per-step breakdown; after each set of rounds, the post's design
(``bench.old_design``) at c=8 for :data:`OLD_DESIGN_DETECTOR`, the baseline of the
images/s goal. A round that fails is logged, kept in native.json with its error and
left out of the summary. ``native.json`` and ``native.md`` (the goals table and the
method) go to ``--out`` (default results/bench/native).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from bench import REPO, logger, machine, memory, perf_analyzer, served, shown, table, verdict
from bench.processes import GIB
from ensemble import contract

NATIVE = "native"  # the default CPU profile, throughput
LATENCY = "native-latency"  # --cpu-profile latency
PYTHON = "python"
MODES = (NATIVE, LATENCY, PYTHON)  # the order of each set of rounds
MODE_TITLES = {NATIVE: "native (throughput)", LATENCY: "native (latency)", PYTHON: "python runners"}
PROFILES = {NATIVE: "throughput", LATENCY: "latency", PYTHON: "throughput"}
CONCURRENCY = 8
ROUNDS = 2

# The goals of the native backends on the 2-core CPU machine.
GOAL_GAP = 0.05  # c=1: each detect_<name> at most this much over the in-process pipeline
GOAL_IDLE_GIB = 1.2  # whole-server PSS, idle
GOAL_PEAK_GIB = 2.0  # whole-server PSS, peak under the c=8 load
GOAL_OVER_POST = 4.0  # c=8 images/s of this detector's ensemble over the post's design
OLD_DESIGN_DETECTOR = "tensorflow"
log = logger("native")


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _pooled_ms(results: Sequence[Mapping], side: str) -> float:
    """Mean ms over every request of ``side`` ("triton" or "limit") in ``results``
    (``bench.paired`` results), each round weighted by its requests."""
    n = sum(r[side]["n"] for r in results)
    return sum(r[side]["mean_ms"] * r[side]["n"] for r in results) / n


def _c1(rounds: Sequence[Mapping]) -> dict:
    """Per ensemble: pooled c=1 ms through Triton and in process, and ``gap``
    (Triton's over in process, minus 1)."""
    ensembles = dict.fromkeys(e for r in rounds for e in r["paired"])
    found = {}
    for e in ensembles:
        results = [r["paired"][e] for r in rounds if e in r["paired"]]
        triton, local = _pooled_ms(results, "triton"), _pooled_ms(results, "limit")
        found[e] = {"triton_ms": triton, "in_process_ms": local, "gap": triton / local - 1}
    return found


_STEP_KEYS = ("count", "queue_ms", "compute_infer_ms", "latency_ms")


def _c8(rounds: Sequence[Mapping]) -> dict:
    """Per ensemble: mean over rounds of perf_analyzer's c=8 images/s and p99 ms, and
    per composing step the mean runs, queue, compute-infer and latency ms."""
    ensembles = dict.fromkeys(e for r in rounds for e in r["perf"])
    found = {}
    for e in ensembles:
        rows = [r["perf"][e] for r in rounds if e in r["perf"]]
        steps = dict.fromkeys(s for row in rows for s in row.get("composing", {}))
        found[e] = {
            "images_s": _mean([row["throughput"] for row in rows]),
            "p99_ms": _mean([row["p99_ms"] for row in rows]),
            "steps": {s: {k: _mean([row["composing"][s][k] for row in rows
                                    if s in row["composing"]]) for k in _STEP_KEYS}
                      for s in steps},
        }  # fmt: skip
    return found


def mode_summary(rounds: Sequence[Mapping]) -> dict:
    """The figures of one mode over its rounds that completed (those with an ``error``
    are left out): ``rounds``; ``cold_start_s`` (mean); ``idle_gib`` (mean whole-server
    PSS); ``peak_gib`` (the largest peak of any round); ``c1`` and ``c8`` per ensemble
    (see :func:`_c1`, :func:`_c8`). Only ``rounds`` (0) when none completed."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return {"rounds": 0}
    totals = [memory.summary(r["memory"]) for r in ok]
    peaks = [t["total_peak"] for t in totals if t["total_peak"] is not None]
    return {"rounds": len(ok), "cold_start_s": _mean([r["cold_start_s"] for r in ok]),
            "idle_gib": _mean([t["total_idle"] / GIB for t in totals]),
            "peak_gib": max(peaks) / GIB if peaks else None,
            "c1": _c1(ok), "c8": _c8(ok)}  # fmt: skip


def summarize(raw: Mapping) -> dict:
    """native.json's figures per mode (:func:`mode_summary`), the post's design's
    mean c=8 images/s (``old_design_images_s``) and each mode's multiple of it for
    ``detect_<OLD_DESIGN_DETECTOR>`` (``over_post``)."""
    modes = {m: mode_summary([r for r in raw["rounds"] if r["mode"] == m]) for m in MODES}
    old = _mean([row["throughput"] for row in raw.get("old_design", []) if row.get("requests")])
    ensemble = contract.ensemble_name(OLD_DESIGN_DETECTOR)
    over = {}
    for m, s in modes.items():
        images = s.get("c8", {}).get(ensemble, {}).get("images_s")
        over[m] = images / old if images is not None and old else None
    return {"modes": modes, "old_design_images_s": old, "over_post": over}


def _row(figure, values, goal, test, fmt="{:.2f}") -> dict:
    """One table row: ``values`` per mode shown with ``fmt``; ``test(mode, value)``
    says whether a native mode's figure meets the goal (None: no goal or no figure)."""

    def shown(value):
        return "–" if value is None else fmt.format(value) if isinstance(fmt, str) else fmt(value)

    met = {m: (None if values.get(m) is None else test(m, values[m])) for m in (NATIVE, LATENCY)}
    return {"figure": figure, "native": shown(values.get(NATIVE)),
            "latency": shown(values.get(LATENCY)), "python": shown(values.get(PYTHON)),
            "goal": goal, "met": met[NATIVE], "latency_met": met[LATENCY]}  # fmt: skip


def goal_rows(summary: Mapping) -> list[dict]:
    """The table's rows: ``figure``, ``native``, ``latency``, ``python`` (as shown),
    ``goal``, ``met`` and ``latency_met`` (whether each native mode's figure meets it;
    None: no goal or no figure)."""
    modes = summary["modes"]

    def each(get) -> dict:
        return {m: get(modes.get(m, {})) for m in MODES}

    def no_goal(mode, value):
        return None

    def at_most(bound):
        return lambda mode, value: value <= bound

    rows = [
        _row("cold start, s", each(lambda s: s.get("cold_start_s")), "–", no_goal, "{:.1f}"),
        _row("PSS idle, GiB (whole server)", each(lambda s: s.get("idle_gib")),
             f"≤ {GOAL_IDLE_GIB}", at_most(GOAL_IDLE_GIB), "{:.3f}"),
        _row("PSS peak at c=8, GiB", each(lambda s: s.get("peak_gib")),
             f"≤ {GOAL_PEAK_GIB}", at_most(GOAL_PEAK_GIB), "{:.3f}"),
    ]  # fmt: skip
    for e in dict.fromkeys(e for m in MODES for e in modes.get(m, {}).get("c1", {})):
        rows.append(_row(
            f"{e} c=1 ms (gap to in process)", each(lambda s, e=e: s.get("c1", {}).get(e)),
            f"≤ +{GOAL_GAP:.0%}", lambda mode, c: c["gap"] <= GOAL_GAP,
            lambda c: f"{c['triton_ms']:.1f} ({c['gap']:+.1%} vs {c['in_process_ms']:.1f})",
        ))  # fmt: skip
    for e in dict.fromkeys(e for m in MODES for e in modes.get(m, {}).get("c8", {})):
        values = each(lambda s, e=e: s.get("c8", {}).get(e, {}).get("images_s"))
        python = values.get(PYTHON)
        rows.append(_row(
            f"{e} c=8 images/s", values, "≥ python runners'",
            lambda mode, v, python=python: None if python is None else v >= python,
        ))  # fmt: skip
    over = summary["over_post"]
    old = summary["old_design_images_s"]
    rows.append(_row(
        f"{contract.ensemble_name(OLD_DESIGN_DETECTOR)} c=8 over the post's design "
        f"({'–' if old is None else f'{old:.2f}'} images/s)",
        {m: over.get(m) for m in MODES}, f"≥ {GOAL_OVER_POST:g}x",
        lambda mode, v: v >= GOAL_OVER_POST, "{:.2f}x",
    ))  # fmt: skip
    return rows


def _steps_lines(summary: Mapping) -> list[str]:
    head = ("ensemble", "step", "native runs", "queue ms", "infer ms", "python runs",
            "queue ms", "infer ms")  # fmt: skip
    rows = []
    nat, py = summary["modes"][NATIVE].get("c8", {}), summary["modes"][PYTHON].get("c8", {})
    for e in dict.fromkeys([*nat, *py]):
        n, p = nat.get(e, {}).get("steps", {}), py.get(e, {}).get("steps", {})
        for step in dict.fromkeys([*n, *p]):
            cells = [e, step]
            for s in (n.get(step), p.get(step)):
                cells += (["–"] * 3 if s is None else
                          [f"{s['count']:.0f}", f"{s['queue_ms']:.1f}",
                           f"{s['compute_infer_ms']:.1f}"])  # fmt: skip
            rows.append(cells)
    return table(head, rows)


def _rounds_lines(raw: Mapping) -> list[str]:
    ensembles = list(dict.fromkeys(e for r in raw["rounds"] for e in r.get("perf", {})))
    head = ("round", "mode", "cold start s", "idle GiB", "peak GiB",
            *(f"{e} c=8" for e in ensembles))  # fmt: skip
    rows = []
    for r in raw["rounds"]:
        if "error" in r:
            rows.append((r["round"], r["mode"], f"failed: {r['error']}"))
            continue
        m = memory.summary(r["memory"])
        peak = None if m["total_peak"] is None else m["total_peak"] / GIB
        rates = [shown(r["perf"].get(e, {}).get("throughput"), ".2f") for e in ensembles]
        rows.append((r["round"], r["mode"], f"{r['cold_start_s']:.1f}",
                     f"{m['total_idle'] / GIB:.2f}", shown(peak, ".2f"), *rates))  # fmt: skip
    return table(head, rows)


def _method(raw: Mapping) -> list[str]:
    meta = raw["meta"]
    load = meta["memory_load_s"]
    old_s = _mean([row["duration_s"] for row in raw.get("old_design", [])])
    return [
        f"Machine: {meta['machine']}; every figure below was measured on it, "
        f"{meta['rounds']} round(s) per mode{' (--quick: short windows)' if meta['quick'] else ''}"
        f", {meta['seconds']} s in all.",
        "",
        "Rounds alternate native (throughput), native (latency), python runners, native, ...; "
        "each round starts a server of its own on a fresh repository "
        '(`ensemble.server.running_server`, the latency rounds with `cpu_profile="latency"`), '
        "measures it and stops it, so every mode sees the same drift of this shared machine. "
        "The python-runners mode is the same launcher with `$NATIVE_CACHE_DIR` pointed at an "
        "empty folder while the server is created: no native backend is found, so every "
        "detector runs in its Python-backend runner (threads adapted per call, "
        "ensemble/cpu_share.py). Figures are means over a mode's rounds unless said.",
        "",
        "- cold start: seconds from the call that starts the server (repository written, "
        "Triton and its front started) until every model is ready;",
        "- PSS (proportional set size, `bench.memory`): every process of the server added up, "
        "shared pages counted once. Idle: after each photo once through each ensemble. Peak: "
        f"the largest sample (every 2 s) while 8 clients sent one photo at a time for {load:g} "
        "s over all four ensembles; the largest of the rounds;",
        "- c=1 ms: `bench.paired`, one request at a time through Triton (gRPC) in rounds "
        "alternating with the same photos through the same pipeline in this process "
        "(`bench.pipeline.Pipeline`: decode, pre-processing, model, post-processing, drawing, "
        "JPEG); mean over every request of a mode, and its gap to the in-process mean;",
        "- c=8 images/s: NVIDIA's perf_analyzer, gRPC, concurrency 8, count windows over the "
        "photos (`bench.perf_analyzer`), each ensemble on its own; the steps table is "
        "Triton's per-composing-model breakdown (a detector run is a whole dynamic batch);",
        f"- the post's design: `bench.old_design` (threaded Flask, raw arrays as base64 JSON, "
        f"the annotated image back as float64) serving {OLD_DESIGN_DETECTOR} at c=8 for "
        f"{'–' if old_s is None else f'{old_s:.0f}'} s after each set of rounds, no Triton "
        "running; its mean images/s is the baseline.",
    ]


def markdown(raw: Mapping, summary: Mapping) -> str:
    """native.md: the goals table, the method, the steps and every round."""
    meta = raw["meta"]
    rows = goal_rows(summary)
    missed = [r["figure"] for r in rows if r["met"] is False]
    missed_latency = [r["figure"] for r in rows if r["latency_met"] is False]
    goals = table(("figure", "native (throughput, default)", "native (latency)",
                   "python runners", "goal", "throughput meets it", "latency meets it"),
                  [(r["figure"], r["native"], r["latency"], r["python"], r["goal"],
                    verdict(r["met"]), verdict(r["latency_met"])) for r in rows])  # fmt: skip
    lines = [
        "# Native backends vs Python runners (bench/native.py)",
        "",
        *goals,
        "",
        ("Missed by the default (throughput) profile: " + "; ".join(missed) + ".")
        if missed
        else "Every goal met by the default (throughput) profile.",
        "",
        ("Missed by the latency profile: " + "; ".join(missed_latency) + ".")
        if missed_latency
        else "Every goal met by the latency profile.",
        "",
        "Native settings (`NATIVE_CPU`, ensemble/configgen.py): "
        + "; ".join(
            f"{profile}: "
            + ", ".join(f"{b} {s['instances']} x {s['parameters']}" for b, s in backends.items())
            for profile, backends in meta["native_cpu"].items()
        )
        + ".",  # fmt: skip
        "",
        "## Method",
        "",
        *_method(raw),
        "",
        "## Where the time goes at c=8 (Triton's composing models, means over rounds)",
        "",
        *_steps_lines(summary),
        "",
        "## Every round",
        "",
        *_rounds_lines(raw),
        "",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def python_runners_only() -> Iterator[None]:
    """While inside: ``$NATIVE_CACHE_DIR`` is an empty folder, so a server created now
    finds no native backend. The variable is restored on exit."""
    from ensemble import native

    before = os.environ.get(native.CACHE_ENV)
    with tempfile.TemporaryDirectory(prefix="no-native-") as empty:
        os.environ[native.CACHE_ENV] = empty
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(native.CACHE_ENV, None)
            else:
                os.environ[native.CACHE_ENV] = before


@contextlib.contextmanager
def mode_server(mode: str, registry, workdir: Path) -> Iterator[tuple[object, float]]:
    """``(running TritonServer, cold start s)`` in ``mode``; stopped on exit."""
    with contextlib.ExitStack() as stack:
        start = time.monotonic()
        with python_runners_only() if mode == PYTHON else contextlib.nullcontext():
            _, server = stack.enter_context(served.triton(
                None, registry, log, workdir=workdir, cpu_profile=PROFILES[mode]))  # fmt: skip
        yield server, time.monotonic() - start


class Rounds:
    """What every round shares: arguments, models, photos, the in-process pipelines."""

    def __init__(self, args, registry, photos: list[bytes], out: Path) -> None:
        self.args, self.registry, self.photos, self.out = args, registry, photos, out
        self.pipelines: dict = {}

    def pipeline(self, url: str, ensemble: str):
        """The in-process pipeline of the one detector ``ensemble`` runs (None for
        ``detect_all``), loaded once for every round."""
        from bench.__main__ import baseline_detector
        from bench.pipeline import Pipeline

        described, _ = served.describe(url, [ensemble])
        name = served.baseline(described, ensemble)
        if name is None:
            return None
        if name not in self.pipelines:
            self.pipelines[name] = Pipeline(baseline_detector(self.registry, ensemble, name))
        return self.pipelines[name]

    def measure(self, mode: str, number: int) -> dict:
        """One round in ``mode`` (see the module docstring)."""
        from bench.__main__ import run_paired

        args, photos = self.args, self.photos
        tag = f"{mode}-{number}"
        log(f"round {number}, {MODE_TITLES[mode]}: starting a server")
        with mode_server(mode, self.registry, self.out / "servers" / tag) as (server, cold):
            url = server.grpc_url
            where = {n: p.platform or "python runner" for n, p in server.config.placements.items()}
            log(f"ready in {cold:.1f} s; {', '.join(f'{n} on {w}' for n, w in where.items())}")
            if (mode != PYTHON) != any(p.platform for p in server.config.placements.values()):
                raise RuntimeError(f"a {mode} round got {where}")
            ensembles = served.ready_ensembles(url, order=self.registry.ensembles)
            seconds = memory.QUICK_LOAD_SECONDS if args.quick else memory.LOAD_SECONDS
            mem = memory.measure(server, url, ensembles, photos, seconds, log=log)
            paired = {}
            for e in ensembles:
                pipeline = self.pipeline(url, e)
                if pipeline is not None:
                    paired[e] = run_paired(args, url, e, pipeline, photos)
            perf = {}
            for e in ensembles:
                log(f"perf_analyzer: {e} at c={CONCURRENCY}")
                (perf[e],) = perf_analyzer.run_sweep(
                    e, url, [CONCURRENCY], out_dir=self.out / "perf_analyzer" / tag / e,
                    quick=args.quick, photos=photos,
                )  # fmt: skip
        return {"mode": mode, "round": number, "cold_start_s": cold, "placements": where,
                "memory": mem, "paired": paired, "perf": perf}  # fmt: skip

    def old_design(self) -> list[dict]:
        """The post's design serving :data:`OLD_DESIGN_DETECTOR` at c=8: loadgen's row."""
        from bench.__main__ import run_old_design
        from bench.old_design import POST

        detector = self.registry[OLD_DESIGN_DETECTOR]
        return run_old_design(self.args, detector, self.photos, self.registry.source, POST)


def run_rounds(rounds: Rounds, count: int) -> tuple[list[dict], list[dict]]:
    """``count`` sets of rounds (one per mode), the post's design after each set:
    ``(rounds, old design rows)``. A failed measurement is logged and recorded with
    its ``error``, and the next one goes on."""
    done, old = [], []
    for number in range(1, count + 1):
        for mode in MODES:
            try:
                done.append(rounds.measure(mode, number))
            except Exception as e:  # any failure of one round: the others still count
                log(f"round {number}, {MODE_TITLES[mode]} failed, skipped: {e}")
                done.append({"mode": mode, "round": number, "error": str(e).splitlines()[0]})
        try:
            old += rounds.old_design()
        except Exception as e:  # as above
            log(f"the post's design failed after round {number}, skipped: {e}")
    return done, old


def native_settings() -> dict:
    """``NATIVE_CPU`` as plain data, for native.json."""
    from ensemble.configgen import NATIVE_CPU

    return {
        profile: {backend: asdict(setting) for backend, setting in backends.items()}
        for profile, backends in NATIVE_CPU.items()
    }


def main(argv: list[str] | None = None) -> int:
    from bench.photos import photo_files
    from ensemble import native
    from ensemble.registry import load_models

    ap = argparse.ArgumentParser(prog="python -m bench.native", description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="rounds per mode (default 2)")
    ap.add_argument("--quick", action="store_true", help="short windows and loads, for a try")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "native")
    args = ap.parse_args(argv)
    args.device, args.concurrency = "cpu", [CONCURRENCY]  # what bench.__main__'s steps read
    if not native.built():
        log("no native backend is built here (python -m ensemble.native): every mode would "
            "be the Python runners")  # fmt: skip
        return 1
    registry = load_models()
    photos = list(photo_files("jpeg"))
    args.out.mkdir(parents=True, exist_ok=True)
    perf_analyzer.ensure_perf_analyzer()
    started = time.monotonic()
    done, old = run_rounds(Rounds(args, registry, photos, args.out), args.rounds)
    meta = {
        "machine": machine("cpu"),
        "rounds": args.rounds,
        "quick": args.quick,
        "modes": list(MODES),
        "native_cpu": native_settings(),
        "native_built": sorted(native.built()),
        "memory_load_s": memory.QUICK_LOAD_SECONDS if args.quick else memory.LOAD_SECONDS,
        "environment": {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                                   "OMP_NUM_THREADS") if k in os.environ},
        "seconds": round(time.monotonic() - started),
    }  # fmt: skip
    raw = {"meta": meta, "rounds": done, "old_design": old}
    summary = summarize(raw)
    raw["summary"] = {**summary, "goals": goal_rows(summary)}
    (args.out / "native.json").write_text(json.dumps(raw, indent=1))
    (args.out / "native.md").write_text(markdown(raw, summary))
    for row in goal_rows(summary):
        log(f"{row['figure']}: native {row['native']}, latency {row['latency']}, python "
            f"runners {row['python']}, goal {row['goal']}: {verdict(row['met']).strip('*')}, "
            f"{verdict(row['latency_met']).strip('*')}")  # fmt: skip
    log(f"wrote {args.out / 'native.json'} and native.md ({meta['seconds']} s)")
    return 0 if any("error" not in r for r in done) else 1


if __name__ == "__main__":
    sys.exit(main())
