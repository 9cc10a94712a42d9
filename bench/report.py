"""The Markdown report and PNG plots of one `python -m bench` run.

Ratios are Triton over the old design and Triton over the in-process limit, per
model and concurrency; the targets the project set itself are checked and marked,
not asserted: a missed target is a finding to explain, not a crash.
"""

from __future__ import annotations

from pathlib import Path

from ensemble import configgen, contract
from ensemble.spec import DETECTOR_SPECS

TARGETS = (
    "c=8: Triton >= 2.5x the old design's images/s, p99 <= 0.4x the old design's",
    "c=8: Triton >= 80 % of the in-process limit's best images/s",
    "c=1: Triton's latency within 15 % of the in-process limit's (batch 1)",
    "bytes on the wire per request >= 20x fewer than the old design's",
)


def _by(rows: list[dict], *keys: str) -> dict:
    return {tuple(r[k] for k in keys): r for r in rows}


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _plots(out: Path, triton, old, limits) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for metric, label in (("throughput", "images/s"), ("p99_ms", "p99 latency (ms)")):
        fig, axes = plt.subplots(1, len(contract.FRAMEWORKS), figsize=(15, 4.2))
        for ax, f in zip(axes, contract.FRAMEWORKS, strict=True):
            t = sorted(
                (r for r in triton if r["model"] == f.ensemble), key=lambda r: r["concurrency"]
            )
            o = sorted((r for r in old if r["model"] == f.detector), key=lambda r: r["concurrency"])
            ax.plot([r["concurrency"] for r in t], [r[metric] for r in t], "o-", label="Triton")
            ax.plot(
                [r["concurrency"] for r in o], [r[metric] for r in o], "s--", label="old (Flask)"
            )
            best = [r for r in limits if r["model"] == f.detector and r["best"]]
            if metric == "throughput" and best:
                ax.axhline(best[0]["throughput"], color="gray", ls=":", label="in-process limit")
            ax.set_xscale("log", base=2)
            ax.set_title(f"{f.ensemble} ({f.model_title})")
            ax.set_xlabel("concurrency")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend()
        name = f"{metric}.png"
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def write_report(out: Path, triton, wire, old, limits, meta) -> Path:
    t = _by(triton, "model", "concurrency")
    o = _by(old, "model", "concurrency")
    lines = ["# Benchmark: Triton ensembles vs the old design vs the limit", ""]
    mode = "quick (CI-sized, rough)" if meta["quick"] else "full"
    lines += [f"Mode: {mode}; Triton: {meta['url']}; took {meta['seconds']} s.", ""]
    if meta.get("machine"):
        lines += [f"Machine: {meta['machine']}.", ""]
    for name in _plots(out, triton, old, limits):
        lines.append(f"![{name}]({name})")
    lines += ["", "## Per model and concurrency", ""]
    lines.append(
        "| ensemble | c | Triton img/s | p50 | p95 | p99 ms | old img/s | old p99 ms "
        "| img/s Triton/old | p99 Triton/old | Triton/limit |"
    )
    lines.append("|" + "---|" * 11)
    findings = []
    for f in contract.FRAMEWORKS:
        best = next((r for r in limits if r["model"] == f.detector and r["best"]), None)
        batch1 = next((r for r in limits if r["model"] == f.detector and r["batch"] == 1), None)
        for c in meta["concurrency"]:
            tr, od = t.get((f.ensemble, c)), o.get((f.detector, c))
            if tr is None:
                continue
            speed = tr["throughput"] / od["throughput"] if od and od["throughput"] else float("nan")
            p99 = tr["p99_ms"] / od["p99_ms"] if od and od["p99_ms"] else float("nan")
            of_limit = tr["throughput"] / best["throughput"] if best else float("nan")
            lines.append(
                f"| {f.ensemble} | {c} | {tr['throughput']:.2f} | {tr['p50_ms']:.0f} "
                f"| {tr['p95_ms']:.0f} | {tr['p99_ms']:.0f} "
                f"| {od['throughput'] if od else float('nan'):.2f} "
                f"| {od['p99_ms'] if od else float('nan'):.0f} | {speed:.2f}x | {p99:.2f}x "
                f"| {of_limit:.0%} |"
            )
            if c == 8:
                findings.append(
                    f"{f.ensemble}: c=8 {speed:.2f}x images/s and {p99:.2f}x p99 of "
                    f"the old design: {_mark(speed >= 2.5 and p99 <= 0.4)}"
                )
                findings.append(
                    f"{f.ensemble}: c=8 {of_limit:.0%} of the limit's best "
                    f"({best['throughput']:.2f} img/s at batch {best['batch']}): "
                    f"{_mark(of_limit >= 0.8)}"
                )
            if c == 1 and batch1:
                gap = tr["avg_ms"] / batch1["mean_ms"] - 1
                findings.append(
                    f"{f.ensemble}: c=1 mean latency {tr['avg_ms']:.0f} ms vs "
                    f"{batch1['mean_ms']:.0f} ms in process ({gap:+.0%}): "
                    f"{_mark(gap <= 0.15)}"
                )
        old_bytes = [r["wire_bytes"] for r in old if r["model"] == f.detector]
        if old_bytes and f.ensemble in wire:
            ratio = (sum(old_bytes) / len(old_bytes)) / wire[f.ensemble]
            findings.append(
                f"{f.ensemble}: {wire[f.ensemble] / 1e3:.0f} kB per request vs "
                f"{old_bytes[0] / 1e3:.0f} kB for the old design ({ratio:.0f}x fewer): "
                f"{_mark(ratio >= 20)}"
            )
    lines += ["", "## Targets", "", *[f"- {x}" for x in TARGETS], "", "Findings:", ""]
    lines += [f"- {x}" for x in findings]
    lines += ["", "## Where the time goes (perf_analyzer's composing models, c=8)", ""]
    lines.append("| ensemble | step | count | queue ms | compute in | infer | out ms |")
    lines.append("|" + "---|" * 7)
    for f_name in contract.ENSEMBLES:
        row = t.get((f_name, 8))
        for step, s in (row or {}).get("composing", {}).items():
            lines.append(
                f"| {f_name} | {step} | {s.get('count', '')} | {s.get('queue_ms', 0):.1f} "
                f"| {s.get('compute_input_ms', 0):.1f} | {s.get('compute_infer_ms', 0):.1f} "
                f"| {s.get('compute_output_ms', 0):.1f} |"
            )
    target = configgen.make_target("cpu")
    lines += ["", "## Settings", ""]
    lines.append(
        f"- Detectors: {target.detector_instances} instance each on the CPU, "
        f"{target.detector_threads} intra-op threads per framework; pre/post steps "
        f"{target.step_instances} instance each."
    )
    for d in DETECTOR_SPECS:
        lines.append(
            f"- {d.name}: dynamic batching, preferred {list(d.preferred_batch_sizes)}, "
            f"max queue delay {d.max_queue_delay_us} µs."
        )
    lines.append(
        "- Old design: Flask's own server (threaded), one process per model, same "
        "threads per framework; image and result as base64 raw arrays in JSON."
    )
    lines.append(
        "- Limit: the same decode, pre-processing, model, post-processing, drawing "
        "and JPEG encoding in one process, no server."
    )
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
