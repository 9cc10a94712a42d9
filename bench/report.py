"""The Markdown report and PNG plots of one `python -m bench` run.

Ratios are Triton over the old design and Triton over the in-process limit, per
model and concurrency; the targets the project set itself are checked and marked,
not asserted: a missed target is a finding to explain, not a crash. Where a target
cannot be met by any server, the report says so from the run's own figures (the
ceiling that the limit puts on every ratio). Which ensembles there were, their titles,
their detectors and those detectors' settings are the server's, as the run recorded
them (``bench.served``); the report needs no server.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench import served
from ensemble import configgen

TARGETS = (
    "c=8: Triton >= 2.5x the old design's images/s, p99 <= 0.4x the old design's",
    "c=8: Triton >= 80 % of the in-process limit's best images/s",
    "c=1: Triton's mean latency within 15 % of the in-process limit's (batch 1)",
    "bytes on the wire per request >= 20x fewer than the old design's",
)
NAN = float("nan")
DETECTIONS_ONLY = ":detections_only"  # wire-size key suffix, see bench.__main__


def _by(rows: list[dict], *keys: str) -> dict:
    return {tuple(r[k] for k in keys): r for r in rows}


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _ratio(a: float | None, b: float | None) -> float:
    return a / b if a is not None and b else NAN


def _fmt(value: float, spec: str) -> str:
    return "–" if value is None or math.isnan(value) else format(value, spec)


def _ensembles(meta) -> list[str]:
    return list(meta.get("ensembles") or served.served_of(meta))


def _plots(out: Path, meta, triton, old, limits) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [
        (ensemble, detector)
        for ensemble, detector in served.baselines(meta, _ensembles(meta)).items()
        if any(r["model"] == ensemble for r in triton)
    ]
    names = []
    for metric, label in (("throughput", "images/s"), ("p99_ms", "p99 latency (ms)")):
        fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4.2))
        for ax, (ensemble, detector) in zip(
            list(getattr(axes, "flat", [axes])), pairs, strict=True
        ):
            t = sorted(
                (r for r in triton if r["model"] == ensemble), key=lambda r: r["concurrency"]
            )
            o = sorted((r for r in old if r["model"] == detector), key=lambda r: r["concurrency"])
            ax.plot([r["concurrency"] for r in t], [r[metric] for r in t], "o-", label="Triton")
            ax.plot(
                [r["concurrency"] for r in o], [r[metric] for r in o], "s--", label="old (Flask)"
            )
            best = [r for r in limits if r["model"] == detector and r["best"]]
            if metric == "throughput" and best:
                ax.axhline(best[0]["throughput"], color="gray", ls=":", label="in-process limit")
            ax.set_xscale("log", base=2)
            ax.set_title(f"{ensemble} ({served.title(meta, ensemble)})")
            ax.set_xlabel("concurrency")
            ax.set_ylabel(label)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend()
        name = f"{metric}.png"
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def _table(meta, t, o, limits, wire, old) -> list[str]:
    lines = [
        "| ensemble | c | Triton img/s | p50 | p95 | p99 ms | old img/s | old p50 | old p95 "
        "| old p99 ms | img/s Triton/old | p99 Triton/old | Triton / limit's best |",
        "|" + "---|" * 13,
    ]
    detectors = served.baselines(meta, _ensembles(meta))
    for ensemble in _ensembles(meta):
        detector = detectors.get(ensemble, "")
        best = next((r for r in limits if r["model"] == detector and r["best"]), None)
        for c in meta["concurrency"]:
            tr, od = t.get((ensemble, c)), o.get((detector, c))
            if tr is None:
                continue
            od = od or {}
            cells = [
                ensemble, str(c), _fmt(tr["throughput"], ".2f"), _fmt(tr["p50_ms"], ".0f"),
                _fmt(tr["p95_ms"], ".0f"), _fmt(tr["p99_ms"], ".0f"),
                _fmt(od.get("throughput"), ".2f"), _fmt(od.get("p50_ms"), ".0f"),
                _fmt(od.get("p95_ms"), ".0f"), _fmt(od.get("p99_ms"), ".0f"),
                _fmt(_ratio(tr["throughput"], od.get("throughput")), ".2f") + "x",
                _fmt(_ratio(tr["p99_ms"], od.get("p99_ms")), ".2f") + "x",
                _fmt(_ratio(tr["throughput"], best and best["throughput"]), ".0%"),
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Levels that did not settle within 15 % (taken as three windows as they came): "]
    unstable = [f"{r['model']} c={r['concurrency']}" for r in t.values() if not r.get("stable")]
    lines[-1] += ", ".join(unstable) if unstable else "none."
    lines += ["", "### Bytes on the wire per request", ""]
    lines.append(
        "| ensemble | Triton kB | old design kB | fewer | Triton, detections only kB | fewer |"
    )
    lines.append("|---|---|---|---|---|---|")
    for ensemble in _ensembles(meta):
        if ensemble not in wire:
            continue
        detector = detectors.get(ensemble, "")
        olds = [r["wire_bytes"] for r in old if r["model"] == detector]
        old_kb = sum(olds) / len(olds) / 1e3 if olds else NAN
        mine = wire[ensemble] / 1e3
        bare = wire.get(ensemble + DETECTIONS_ONLY, NAN) / 1e3
        lines.append(
            f"| {ensemble} | {mine:.0f} | {_fmt(old_kb, '.0f')} | {_fmt(old_kb / mine, '.1f')}x "
            f"| {_fmt(bare, '.0f')} | {_fmt(old_kb / bare, '.1f')}x |"
        )
    lines += [
        "",
        "Triton: the photo file in; detections, their count and the annotated JPEG out "
        "(tensor payloads; gRPC/HTTP/2 framing not counted); detections only: a client "
        "that asks for DETECTIONS and NUM_DETECTIONS alone and draws them itself. Old "
        "design: both JSON bodies and both HTTP heads (its answer always holds the image).",
    ]
    return lines


def _findings(meta, t, o, limits, wire, old, paired) -> list[str]:
    findings = []
    for ensemble, detector in served.baselines(meta, _ensembles(meta)).items():
        best = next((r for r in limits if r["model"] == detector and r["best"]), None)
        batch1 = next((r for r in limits if r["model"] == detector and r["batch"] == 1), None)
        tr1, tr8, od8 = t.get((ensemble, 1)), t.get((ensemble, 8)), o.get((detector, 8))
        if tr8 and od8:
            speed = _ratio(tr8["throughput"], od8["throughput"])
            p99 = _ratio(tr8["p99_ms"], od8["p99_ms"])
            line = (
                f"{ensemble}: c=8 {speed:.2f}x the old design's images/s and {p99:.2f}x its "
                f"p99: {_mark(speed >= 2.5 and p99 <= 0.4)}"
            )
            if best and speed < 2.5:
                # Nothing serves more than the models compute: the limit caps every ratio.
                ceiling = _ratio(best["throughput"], od8["throughput"])
                line += (
                    f". The old design already reaches {1 / ceiling:.0%} of the in-process "
                    f"limit ({od8['throughput']:.2f} of {best['throughput']:.2f} img/s), so "
                    f"even a server with no overhead at all could serve at most {ceiling:.2f}x "
                    "its images/s on this machine"
                )
            findings.append(line)
        if tr8 and best:
            of_limit = _ratio(tr8["throughput"], best["throughput"])
            findings.append(
                f"{ensemble}: c=8 {tr8['throughput']:.2f} img/s = {of_limit:.0%} of the "
                f"limit's best ({best['throughput']:.2f} img/s at batch {best['batch']}): "
                f"{_mark(of_limit >= 0.8)}"
            )
        pair = next((p for p in paired if p["ensemble"] == ensemble), None)
        if pair:
            t1, l1 = pair["triton"]["mean_ms"], pair["limit"]["mean_ms"]
            line = (
                f"{ensemble}: c=1 mean latency {t1:.0f} ms vs {l1:.0f} ms in process "
                f"(paired rounds, {pair['gap']:+.0%}): {_mark(pair['gap'] <= 0.15)}"
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
                f"{batch1['mean_ms']:.0f} ms in process ({gap:+.0%}): {_mark(gap <= 0.15)}"
            )
        olds = [r["wire_bytes"] for r in old if r["model"] == detector]
        if olds and ensemble in wire:
            ratio = (sum(olds) / len(olds)) / wire[ensemble]
            findings.append(
                f"{ensemble}: {wire[ensemble] / 1e3:.0f} kB per request vs "
                f"{sum(olds) / len(olds) / 1e3:.0f} kB for the old design ({ratio:.1f}x fewer): "
                f"{_mark(ratio >= 20)}"
            )
    return findings


def _composing(meta, t) -> list[str]:
    lines = [
        "Mean per run of each step while perf_analyzer held c=8 (a detector run is a whole "
        "dynamic batch, so its compute covers several requests).",
        "",
        "| ensemble | step | runs | queue ms | compute input | compute infer | compute output |",
        "|" + "---|" * 7,
    ]
    for ensemble in _ensembles(meta):
        row = t.get((ensemble, 8))
        for step, s in (row or {}).get("composing", {}).items():
            lines.append(
                f"| {ensemble} | {step} | {s.get('count', '')} | {s.get('queue_ms', 0):.1f} "
                f"| {s.get('compute_input_ms', 0):.1f} | {s.get('compute_infer_ms', 0):.1f} "
                f"| {s.get('compute_output_ms', 0):.1f} |"
            )
    return lines


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
    for name, d in served.settings_of(meta).items():
        lines.append(
            f"- {name}: dynamic batching, preferred batch sizes "
            f"{list(d['preferred_batch_sizes'])}, max queue delay {d['max_queue_delay_us']} µs, "
            f"max batch {d['max_batch_size']}."
        )
    lines += [
        "- Photos: scikit-image's astronaut, coffee, horse, motorcycle_left and chelsea, "
        f"sent as {meta.get('photo_format', 'jpeg').upper()} files, the same bytes to all "
        "three sides.",
        "- Old design: Flask's own server (threaded, its defaults), one process per model, "
        "the same framework threads; the client decodes the photo and sends the raw array "
        "as base64 in JSON, gets the annotated image back the same way and decodes it "
        "(inside its timed latency).",
        "- Limit: the same decode, pre-processing, model, post-processing, drawing and JPEG "
        "encoding in one process, no server, the same framework threads; batch 1 and 2, 4, 8.",
        "- Why these settings: docs/benchmarks.md (measurements of the alternatives).",
    ]
    return lines


def write_report(out: Path, triton, wire, old, limits, meta, paired=()) -> Path:
    paired = list(paired or ())
    t = _by(triton, "model", "concurrency")
    o = _by(old, "model", "concurrency")
    lines = ["# Benchmark: Triton ensembles vs the old design vs the limit", ""]
    mode = "quick (CI-sized, rough)" if meta["quick"] else "full"
    lines += [f"Mode: {mode}; Triton: {meta['url']}; took {meta['seconds']} s.", ""]
    if meta.get("machine"):
        lines += [f"Machine: {meta['machine']}.", ""]
    for name in _plots(out, meta, triton, old, limits):
        lines.append(f"![{name}]({name})")
    lines += ["", "## Targets", "", *[f"- {x}" for x in TARGETS], "", "Findings:", ""]
    lines += [f"- {x}" for x in _findings(meta, t, o, limits, wire, old, paired)]
    lines += ["", "## Per model and concurrency", ""]
    lines += _table(meta, t, o, limits, wire, old)
    if paired:
        lines += ["", "## Concurrency 1, paired (bench/paired.py)", ""]
        lines.append(
            "Alternating rounds of one-at-a-time requests through Triton (tritonclient, "
            "gRPC) and the same images in process, so both sides see the same drift of "
            "this machine."
        )
        lines += ["", "| ensemble | Triton mean | p50 | p90 ms | in process mean | p50 | p90 ms "
                  "| Triton / in process |", "|" + "---|" * 8]  # fmt: skip
        for p in paired:
            tr, lo = p["triton"], p["limit"]
            lines.append(
                f"| {p['ensemble']} | {tr['mean_ms']:.1f} | {tr['p50_ms']:.1f} "
                f"| {tr['p90_ms']:.1f} | {lo['mean_ms']:.1f} | {lo['p50_ms']:.1f} "
                f"| {lo['p90_ms']:.1f} | {p['gap']:+.0%} |"
            )
    lines += ["", "## The limit (in process, no server)", ""]
    lines.append("| model | batch | img/s | mean ms per call | p50 | p99 |")
    lines.append("|---|---|---|---|---|---|")
    for r in limits:
        best = " (best)" if r["best"] else ""
        lines.append(
            f"| {r['model']} | {r['batch']}{best} | {r['throughput']:.2f} | {r['mean_ms']:.0f} "
            f"| {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |"
        )
    lines += ["", "## Where the time goes (perf_analyzer's composing models, c=8)", ""]
    lines += _composing(meta, t)
    lines += ["", "## Settings", ""]
    lines += _settings(meta)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report DIR``: write DIR's report and plots again from its raw.json."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    raw = json.loads((args.out / "raw.json").read_text())
    path = write_report(
        args.out, raw["triton"], raw["wire"], raw["old"], raw["limit"], raw["meta"],
        raw.get("paired", ()),
    )  # fmt: skip
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
