"""The Markdown report and PNG plots of one `python -m bench` run.

Two baselines, the same Flask server and code with two wire formats
(``bench.old_design``): the post's design (the annotated image back as float64, as the
old blog post published it) and the fairer old design (as uint8). Ratios are Triton
over each of them and Triton over the in-process limit, per model and concurrency;
then the memory of the server's processes (``bench.memory``). The targets the
project set itself are checked and marked, not asserted: a missed target is a finding
to explain, not a crash. Where a target cannot be met by any server, the report says
so from the run's own figures (the ceiling that the limit puts on every ratio). Which
ensembles there were, their titles, their detectors and those detectors' settings are
the server's, as the run recorded them (``bench.served``); the report needs no server.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from bench import clips, memory, served, shown, sweep, table, verdict
from bench.old_design import FAIR, POST, WIRES
from bench.processes import GIB
from ensemble import configgen

# The targets, each checked in the findings by the threshold beside it.
VS_POST_SPEED, VS_POST_P99 = 4.0, 0.3  # c=8: images/s at least, p99 at most, x the post's
OF_LIMIT = 0.8  # c=8: share of the in-process limit's best images/s, at least
C1_GAP = 0.10  # c=1: mean latency over the in-process limit's (paired), at most
FEWER_BYTES = 20.0  # bytes on the wire, x fewer than the fairer old design's, at least
IDLE_GIB, PEAK_GIB = 2.5, 3.5  # server PSS idle and at the load's peak, at most
TARGETS = (
    f"c=8: each detector's ensemble >= {VS_POST_SPEED:g}x the images/s of {WIRES[POST]}, "
    f"with p99 <= {VS_POST_P99:g}x its p99",
    f"c=1: Triton's mean latency within +{C1_GAP:.0%} of the in-process limit's "
    "(paired rounds decide)",
    f"c=8: Triton >= {OF_LIMIT:.0%} of the in-process limit's best images/s",
    f"bytes on the wire per request >= {FEWER_BYTES:g}x fewer than {WIRES[FAIR]}'s",
    f"memory: the server's processes <= {IDLE_GIB:g} GiB PSS idle and <= {PEAK_GIB:g} GiB "
    "at the peak of the load at concurrency 8 over the ensembles",
)
NAN = float("nan")
DETECTIONS_ONLY = ":detections_only"  # wire-size key suffix, see bench.__main__
BASELINES_EXPLAINED = (
    "The two baselines are the same Flask server (its own threaded server, defaults), "
    "the same model code and threads, and the same client, which decodes the photo and "
    "sends the raw uint8 array as base64 in JSON; they differ in the answer only. "
    f"**{WIRES[POST].capitalize()}** returns the drawn image as a float64 array, as the "
    "old post published it: 8 bytes per pixel and channel, 8x the photo's pixels, which "
    "its client decodes back. **The fairer old design** returns it as uint8, the same "
    "bytes as the photo's pixels. The targets are set against the post's design; the "
    "ratios against the fairer one show what is left once its wire format is made kinder."
)


def _by(rows: list[dict], *keys: str) -> dict:
    return {tuple(r[k] for k in keys): r for r in rows}


def _ratio(a: float | None, b: float | None) -> float:
    return a / b if a is not None and b else NAN


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else NAN


def _ensembles(meta) -> list[str]:
    return list(meta.get("ensembles") or meta["served"])


def _plots(out: Path, meta, triton, baselines: Mapping[str, list[dict]], limits) -> list[str]:
    """throughput.png and p99_ms.png: per ensemble with a detector, Triton, each
    baseline (``{wire: rows}``) and, for images/s, the limit's best as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [
        (ensemble, detector)
        for ensemble, detector in served.baselines(meta, _ensembles(meta)).items()
        if any(r["model"] == ensemble for r in triton)
    ]
    styles = {POST: "s--", FAIR: "^:"}

    def curve(ax, rows, model, metric, style, label):
        rows = sorted((r for r in rows if r["model"] == model), key=lambda r: r["concurrency"])
        if rows:
            ax.plot([r["concurrency"] for r in rows], [r[metric] for r in rows], style, label=label)

    names = []
    for metric, label in (("throughput", "images/s"), ("p99_ms", "p99 latency (ms)")):
        fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4.2))
        for ax, (ensemble, detector) in zip(
            list(getattr(axes, "flat", [axes])), pairs, strict=True
        ):
            curve(ax, triton, ensemble, metric, "o-", "Triton")
            for wire, rows in baselines.items():
                curve(ax, rows, detector, metric, styles[wire], f"{WIRES[wire]} (Flask)")
            best = [r for r in limits if r["model"] == detector and r["best"]]
            if metric == "throughput" and best:
                ax.axhline(best[0]["throughput"], color="gray", ls=":", label="in-process limit")
            ax.set_xscale("log", base=2)
            ax.set_title(f"{ensemble} ({served.title(meta, ensemble)})")
            ax.set_xlabel("concurrency")
            ax.set_ylabel(label)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        name = f"{metric}.png"
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def _table(meta, t, post, fair, limits) -> list[str]:
    """Per ensemble and concurrency: Triton, both baselines, the ratios, the limit."""
    head = ("ensemble", "c", "Triton img/s", "p50", "p95", "p99 ms", "post img/s", "post p99 ms",
            "fairer img/s", "fairer p99 ms", "img/s Triton/post", "p99 Triton/post",
            "img/s Triton/fairer", "p99 Triton/fairer", "Triton / limit's best")  # fmt: skip
    rows = []
    detectors = served.baselines(meta, _ensembles(meta))
    for ensemble in _ensembles(meta):
        detector = detectors.get(ensemble, "")
        best = next((r for r in limits if r["model"] == detector and r["best"]), None)
        for c in meta["concurrency"]:
            tr = t.get((ensemble, c))
            if tr is None:
                continue
            po, fa = post.get((detector, c)) or {}, fair.get((detector, c)) or {}
            rows.append([
                ensemble, str(c), shown(tr["throughput"], ".2f"), shown(tr["p50_ms"]),
                shown(tr["p95_ms"]), shown(tr["p99_ms"]),
                shown(po.get("throughput"), ".2f"), shown(po.get("p99_ms")),
                shown(fa.get("throughput"), ".2f"), shown(fa.get("p99_ms")),
                shown(_ratio(tr["throughput"], po.get("throughput")), ".2f") + "x",
                shown(_ratio(tr["p99_ms"], po.get("p99_ms")), ".2f") + "x",
                shown(_ratio(tr["throughput"], fa.get("throughput")), ".2f") + "x",
                shown(_ratio(tr["p99_ms"], fa.get("p99_ms")), ".2f") + "x",
                shown(_ratio(tr["throughput"], best and best["throughput"]), ".0%"),
            ])  # fmt: skip
    unstable = [f"{r['model']} c={r['concurrency']}" for r in t.values() if not r.get("stable")]
    return [
        *table(head, rows),
        "",
        f"post: {WIRES[POST]} (the annotated image back as float64); fairer: {WIRES[FAIR]} "
        "(as uint8). Their full rows (p50, p95, bytes) are in post_design.csv and "
        "old_design.csv.",
        "",
        "Levels that did not settle within 15 % (taken as three windows as they came): "
        + (", ".join(unstable) if unstable else "none."),
    ]


def _wire_kb(rows: list[dict], detector: str) -> float:
    """A baseline's mean bytes on the wire per request over its levels, in kB."""
    return _mean([r["wire_bytes"] for r in rows if r["model"] == detector]) / 1e3


def _wire_table(meta, wire, post_rows, fair_rows) -> list[str]:
    head = ("ensemble", "Triton kB", "detections only kB", "the post's design kB", "fewer",
            "the fairer old design kB", "fewer")  # fmt: skip
    rows = []
    detectors = served.baselines(meta, _ensembles(meta))
    for ensemble in (e for e in _ensembles(meta) if e in wire):
        detector = detectors.get(ensemble, "")
        mine = wire[ensemble] / 1e3
        bare = wire.get(ensemble + DETECTIONS_ONLY, NAN) / 1e3
        cells = [ensemble, f"{mine:.0f}", shown(bare)]
        for kb in (_wire_kb(post_rows, detector), _wire_kb(fair_rows, detector)):
            cells += [shown(kb), f"{shown(kb / mine, '.1f')}x ({shown(kb / bare, '.1f')}x)"]
        rows.append(cells)
    return [
        *table(head, rows),
        "",
        "Triton: the photo file in; detections, their count and the annotated JPEG out "
        "(tensor payloads; gRPC/HTTP/2 framing not counted); detections only: a client "
        "that asks for DETECTIONS and NUM_DETECTIONS alone and draws them itself (the "
        "ratio in brackets). The baselines: both JSON bodies and both HTTP heads (their "
        "answer always holds the image: float64 for the post's design, uint8 for the "
        "fairer one), mean over their levels.",
    ]


def _vs_baselines(ensemble, tr8, post8, fair8, best) -> str | None:
    """The c=8 finding against the post's design (the target) and the fairer one."""
    if post8 is None and fair8 is None:
        return None
    line = f"{ensemble}: c=8 {tr8['throughput']:.2f} img/s"
    speed = NAN
    if post8 is not None:
        speed = _ratio(tr8["throughput"], post8["throughput"])
        p99 = _ratio(tr8["p99_ms"], post8["p99_ms"])
        ok = speed >= VS_POST_SPEED and p99 <= VS_POST_P99
        line += (
            f", {speed:.2f}x the images/s of {WIRES[POST]} ({post8['throughput']:.2f}) and "
            f"{p99:.2f}x its p99 ({tr8['p99_ms']:.0f} vs {post8['p99_ms']:.0f} ms): {verdict(ok)}"
        )
    else:
        line += f"; {WIRES[POST]} was not measured in this run"
    if fair8 is not None:
        line += (
            f"; {_ratio(tr8['throughput'], fair8['throughput']):.2f}x the images/s of "
            f"{WIRES[FAIR]} ({fair8['throughput']:.2f}) and "
            f"{_ratio(tr8['p99_ms'], fair8['p99_ms']):.2f}x its p99"
        )
    if best and speed < VS_POST_SPEED:
        # Nothing serves more than the models compute: the limit caps every ratio.
        ceiling = _ratio(best["throughput"], post8["throughput"])
        line += (
            f". {WIRES[POST].capitalize()} already reaches {1 / ceiling:.0%} of the "
            f"in-process limit ({post8['throughput']:.2f} of {best['throughput']:.2f} img/s), "
            f"so even a server with no overhead at all could serve at most {ceiling:.2f}x its "
            "images/s on this machine"
        )
    return line


def _findings(meta, t, post, fair, limits, wire, post_rows, fair_rows, paired) -> list[str]:
    findings = []
    for ensemble, detector in served.baselines(meta, _ensembles(meta)).items():
        best = next((r for r in limits if r["model"] == detector and r["best"]), None)
        batch1 = next((r for r in limits if r["model"] == detector and r["batch"] == 1), None)
        tr1, tr8 = t.get((ensemble, 1)), t.get((ensemble, 8))
        if tr8:
            line = _vs_baselines(ensemble, tr8, post.get((detector, 8)), fair.get((detector, 8)),
                                 best)  # fmt: skip
            if line:
                findings.append(line)
        if tr8 and best:
            of_limit = _ratio(tr8["throughput"], best["throughput"])
            findings.append(
                f"{ensemble}: c=8 {tr8['throughput']:.2f} img/s = {of_limit:.0%} of the "
                f"limit's best ({best['throughput']:.2f} img/s at batch {best['batch']}): "
                f"{verdict(of_limit >= OF_LIMIT)}"
            )
        pair = next((p for p in paired if p["ensemble"] == ensemble), None)
        if pair:
            t1, l1 = pair["triton"]["mean_ms"], pair["limit"]["mean_ms"]
            line = (
                f"{ensemble}: c=1 mean latency {t1:.0f} ms vs {l1:.0f} ms in process "
                f"(paired rounds, {pair['gap']:+.0%}): {verdict(pair['gap'] <= C1_GAP)}"
            )
            if tr1 and batch1:
                gap = tr1["avg_ms"] / batch1["mean_ms"] - 1
                line += (
                    f"; perf_analyzer's c=1 {tr1['avg_ms']:.0f} ms vs the limit's batch 1 "
                    f"{batch1['mean_ms']:.0f} ms, minutes apart ({gap:+.0%})"
                )
            findings.append(line)
        elif tr1 and batch1:
            gap = tr1["avg_ms"] / batch1["mean_ms"] - 1
            findings.append(
                f"{ensemble}: c=1 mean latency {tr1['avg_ms']:.0f} ms vs "
                f"{batch1['mean_ms']:.0f} ms in process ({gap:+.0%}): {verdict(gap <= C1_GAP)}"
            )
        if ensemble in wire:
            mine = wire[ensemble] / 1e3
            post_kb, fair_kb = _wire_kb(post_rows, detector), _wire_kb(fair_rows, detector)
            parts = [
                f"{kb:.0f} kB for {WIRES[w]} ({kb / mine:.1f}x fewer)"
                for w, kb in ((POST, post_kb), (FAIR, fair_kb))
                if not math.isnan(kb)
            ]
            if parts:
                line = f"{ensemble}: {mine:.0f} kB per request vs " + " and ".join(parts)
                if not math.isnan(fair_kb):
                    line += f": {verdict(fair_kb / mine >= FEWER_BYTES)}"
                findings.append(line)
    return findings


def _memory_finding(raw_memory, meta) -> str:
    if not raw_memory:
        embedded = meta.get("embedded") is not False
        return "memory: " + memory.not_measured(embedded, meta.get("url", ""))
    s, load = memory.summary(raw_memory), raw_memory["load"]
    idle = s["total_idle"] / GIB
    line = f"memory: {idle:.2f} GiB PSS idle (<= {IDLE_GIB:g} GiB): {verdict(idle <= IDLE_GIB)}"
    if s["total_peak"] is None:
        return line + "; no sample under load"
    peak = s["total_peak"] / GIB
    return line + (
        f"; {peak:.2f} GiB at the peak of {load['duration_s']:.0f} s at concurrency "
        f"{load['concurrency']} over {', '.join(load['ensembles'])} (<= {PEAK_GIB:g} GiB): "
        f"{verdict(peak <= PEAK_GIB)}; that load answered {load['throughput']:.2f} images/s"
    )


def _composing(meta, t) -> list[str]:
    head = ("ensemble", "step", "runs", "queue ms", "compute input", "compute infer",
            "compute output")  # fmt: skip
    rows = [
        (ensemble, step, s.get("count", ""),
         *(f"{s.get(k, 0):.1f}" for k in ("queue_ms", "compute_input_ms", "compute_infer_ms",
                                          "compute_output_ms")))
        for ensemble in _ensembles(meta)
        for step, s in (t.get((ensemble, 8)) or {}).get("composing", {}).items()
    ]  # fmt: skip
    return [
        "Mean per run of each step while perf_analyzer held c=8 (a detector run is a whole "
        "dynamic batch, so its compute covers several requests).",
        "",
        *table(head, rows),
    ]


def _settings(meta) -> list[str]:
    name = meta.get("target", "cpu")
    gpus = tuple(meta.get("gpus") or (0,))
    target = configgen.make_target(name, gpus)
    where = f"on GPU {', '.join(map(str, target.gpus))}" if target.on_gpu else "on the CPU"
    lines = [
        f"- Triton target `{target.name}`: detectors {target.detector_instances} instance each "
        f"{where}, {target.detector_threads} intra-op threads per framework on the CPU; "
        f"pre/post steps {target.step_instances} instance(s) each (Python backend).",
    ]
    for name, d in meta.get("detector_settings", {}).items():
        lines.append(
            f"- {name}: dynamic batching, preferred batch sizes "
            f"{list(d['preferred_batch_sizes'])}, max queue delay {d['max_queue_delay_us']} µs, "
            f"max batch {d['max_batch_size']}."
        )
    lines += [
        "- Photos: scikit-image's astronaut, coffee, horse, motorcycle_left and chelsea, "
        f"sent as {meta.get('photo_format', 'jpeg').upper()} files, the same bytes to every "
        "side.",
        "- The old design, twice, one after the other: Flask's own server (threaded, its "
        "defaults), one process per model, the same framework threads; the client decodes "
        "the photo and sends the raw uint8 array as base64 in JSON, gets the annotated "
        f"image back the same way and decodes it (inside its timed latency): as float64 "
        f"for {WIRES[POST]}, as uint8 for {WIRES[FAIR]}.",
        "- Limit: the same decode, pre-processing, model, post-processing, drawing and JPEG "
        "encoding in one process, no server, the same framework threads; batch 1 and 2, 4, 8.",
        "- Memory: bench/memory.py, on the server the run started, before the other measurements.",
        "- Why these settings: docs/benchmarks.md (measurements of the alternatives).",
    ]
    return lines


def _paired(paired) -> list[str]:
    head = ("ensemble", "Triton mean", "p50", "p90 ms", "in process mean", "p50", "p90 ms",
            "Triton / in process")  # fmt: skip
    rows = [(p["ensemble"], *(f"{side[k]:.1f}" for side in (p["triton"], p["limit"])
                              for k in ("mean_ms", "p50_ms", "p90_ms")), f"{p['gap']:+.0%}")
            for p in paired]  # fmt: skip
    return [
        "Alternating rounds of one-at-a-time requests through Triton (tritonclient, "
        "gRPC) and the same images in process, so both sides see the same drift of "
        "this machine.",
        "",
        *table(head, rows),
    ]


def _limit(limits) -> list[str]:
    head = ("model", "batch", "img/s", "mean ms per call", "p50", "p99")
    return table(head, [
        (r["model"], f"{r['batch']}{' (best)' if r['best'] else ''}", f"{r['throughput']:.2f}",
         f"{r['mean_ms']:.0f}", f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}") for r in limits
    ])  # fmt: skip


def write_report(out: Path, raw: Mapping) -> Path:
    """Write ``out``/report.md and its plots from one run's ``raw`` (raw.json: ``old``
    holds the fairer old design's rows, ``post`` the post's design's), with the size
    sweep's section when ``out`` holds its sweep.json and the clips' when it holds
    clips.json; the report's path."""
    triton, wire, limits, meta = raw["triton"], raw["wire"], raw["limit"], raw["meta"]
    paired, post, old = raw.get("paired") or [], raw.get("post") or [], raw["old"]
    raw_memory = raw.get("memory")
    t = _by(triton, "model", "concurrency")
    p, f = _by(post, "model", "concurrency"), _by(old, "model", "concurrency")
    lines = [f"# Benchmark: Triton ensembles vs {WIRES[POST]} and {WIRES[FAIR]} vs the limit", ""]
    mode = "quick (CI-sized, rough)" if meta["quick"] else "full"
    lines += [f"Mode: {mode}; Triton: {meta['url']}; took {meta['seconds']} s.", ""]
    if meta.get("machine"):
        lines += [f"Machine: {meta['machine']}.", ""]
    for name in _plots(out, meta, triton, {POST: post, FAIR: old}, limits):
        lines.append(f"![{name}]({name})")
    lines += ["", "## Targets", "", *[f"- {x}" for x in TARGETS], "", BASELINES_EXPLAINED]
    lines += ["", "Findings:", ""]
    lines += [f"- {x}" for x in _findings(meta, t, p, f, limits, wire, post, old, paired)]
    lines.append(f"- {_memory_finding(raw_memory, meta)}")
    lines += ["", "## Per model and concurrency", "", *_table(meta, t, p, f, limits)]
    lines += ["", "### Bytes on the wire per request", "", *_wire_table(meta, wire, post, old)]
    lines += ["", "## Memory of the server's processes (bench/memory.py)", ""]
    lines += memory.markdown(raw_memory, meta.get("embedded") is not False, meta.get("url", ""))
    if paired:
        lines += ["", "## Concurrency 1, paired (bench/paired.py)", "", *_paired(paired)]
    lines += ["", "## The limit (in process, no server)", "", *_limit(limits)]
    lines += ["", "## Where the time goes (perf_analyzer's composing models, c=8)", ""]
    lines += _composing(meta, t)
    if (out / sweep.FILES[0]).exists():
        result = json.loads((out / sweep.FILES[0]).read_text())
        sweep.plot(result, out / "sweep.png")
        lines += ["", "![sweep.png](sweep.png)", "", sweep.markdown(result)]
    if (out / clips.FILES[0]).exists():
        lines += ["", clips.markdown(json.loads((out / clips.FILES[0]).read_text()))]
    lines += ["", "## Settings", "", *_settings(meta)]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report DIR``: write DIR's report and plots again from its raw.json."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    print(write_report(args.out, json.loads((args.out / "raw.json").read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
