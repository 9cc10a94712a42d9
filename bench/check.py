"""Check a benchmark run's outputs for shape: ``python -m bench.check [results/bench]``.

What CI asks of ``make bench QUICK=1``: every ensemble and every concurrency measured by
perf_analyzer; both baselines, the post's design and the fairer old design, at the same
concurrencies for each ensemble's detector (each ``detect_<name>`` the server described
as running one detector, see ``bench.served``); the limit at batch 1 and its best batch
for each of them; when the run started the server itself, its memory idle and under
load (``bench.memory``); every number that must be positive, no failed request, and
the CSVs, plots and report written. Exits 1 and names each problem otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path

from bench import served
from bench.limit import BATCH_SIZES
from bench.memory import FRONT, OTHER, TRITON
from bench.old_design import FAIR, POST, WIRES
from ensemble import contract

FILES = ("triton.csv", "post_design.csv", "old_design.csv", "limit.csv", "raw.json", "report.md")
# Each CSV file and the raw.json key of its rows.
CSV_ROWS = {"triton.csv": "triton", "post_design.csv": "post", "old_design.csv": "old",
            "limit.csv": "limit"}  # fmt: skip
MEMORY_SECTION = "## Memory"
PLOTS = ("throughput.png", "p99_ms.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

TRITON_POSITIVE = ("throughput", "p50_ms", "p95_ms", "p99_ms", "avg_ms")
OLD_POSITIVE = ("throughput", "p50_ms", "p95_ms", "p99_ms", "wire_bytes", "requests")
LIMIT_POSITIVE = ("throughput", "p50_ms", "p99_ms", "mean_ms")


def _positive(row: dict, keys: tuple[str, ...], where: str) -> list[str]:
    problems = []
    for key in keys:
        try:
            value = float(row.get(key, "nan"))
        except (TypeError, ValueError):
            value = math.nan
        if not value > 0:  # also catches NaN
            problems.append(f"{where}: {key} is {row.get(key)!r}, not a positive number")
    return problems


def check_rows(
    triton: list[dict],
    post: list[dict],
    old: list[dict],
    limit: list[dict],
    ensembles: list[str],
    concurrencies: list[int],
    wire: dict[str, float],
    detectors: Mapping[str, str],
) -> list[str]:
    """Every problem with the rows of one run; an empty list when the shape is right.

    ``post`` and ``old``: the post's design's and the fairer old design's rows.
    ``detectors``: the detector (baselines' and limit's ``model``) of each ensemble
    that has an in-process baseline; the others (``detect_all``) are measured by
    perf_analyzer alone."""
    problems = []

    def levels(rows: list[dict], model: str, side: str, positive: tuple[str, ...]):
        """Each concurrency's one row of ``model``, checked positive; problems named."""
        for c in concurrencies:
            found = [r for r in rows if r.get("model") == model and int(r["concurrency"]) == c]
            if len(found) != 1:
                problems.append(f"{side}: {model} at concurrency {c}: {len(found)} rows")
                continue
            problems.extend(_positive(found[0], positive, f"{side} {model} c={c}"))
            yield c, found[0]

    for ensemble in ensembles:
        for c, row in levels(triton, ensemble, "perf_analyzer", TRITON_POSITIVE):
            if ensemble != contract.DETECT_ALL and not row.get("composing"):
                problems.append(f"perf_analyzer {ensemble} c={c}: no composing-model breakdown")
        if not wire.get(ensemble, 0) > 0:
            problems.append(f"bytes on the wire: nothing for {ensemble}")
        model = detectors.get(ensemble)
        if model is None:
            continue  # detect_all has no single-model baseline
        for wire_format, rows in ((POST, post), (FAIR, old)):
            side = WIRES[wire_format]
            for c, row in levels(rows, model, side, OLD_POSITIVE):
                if int(row.get("errors") or 0):
                    problems.append(f"{side} {model} c={c}: {row['errors']} failed requests")
                if row.get("wire", wire_format) != wire_format:
                    problems.append(f"{side} {model} c={c}: a row of wire format {row['wire']!r}")
        batches = sorted(int(r["batch"]) for r in limit if r.get("model") == model)
        if batches != sorted(BATCH_SIZES):
            problems.append(f"limit: {model} has batches {batches}, not {list(BATCH_SIZES)}")
        for r in (r for r in limit if r.get("model") == model):
            problems += _positive(r, LIMIT_POSITIVE, f"limit {model} batch {r['batch']}")
        if sum(1 for r in limit if r.get("model") == model and r.get("best")) != 1:
            problems.append(f"limit: {model} has no single best batch size")
    return problems


def check_memory(memory: Mapping | None, ensembles: list[str]) -> list[str]:
    """Every problem with raw.json's ``memory`` (``bench.memory.measure``) of a run that
    started its server: tritonserver and at least one model's workers idle, samples
    under load with a positive total, a load over ``ensembles`` that was answered."""
    if not memory:
        return ["memory: not measured, though the run started the server"]
    problems = []
    idle = memory.get("idle", {}).get("pss", {})
    if not idle.get(TRITON, 0) > 0:
        problems.append(f"memory: no idle PSS for {TRITON}")
    if not any(size > 0 for role, size in idle.items() if role not in (TRITON, FRONT, OTHER)):
        problems.append("memory: no idle PSS for any model's workers")
    samples = memory.get("samples") or []
    if not samples:
        problems.append("memory: no sample under load")
    problems += [
        f"memory: the sample at {s.get('t_s')} s has no positive total"
        for s in samples
        if not sum(s.get("pss", {}).values()) > 0
    ]
    load = memory.get("load", {})
    if list(load.get("ensembles", [])) != list(ensembles):
        problems.append(f"memory: the load ran over {load.get('ensembles')}, not {ensembles}")
    if not int(load.get("answered") or 0) > 0:
        problems.append("memory: the load got no answer")
    if int(load.get("failed") or 0):
        problems.append(f"memory: {load['failed']} requests of the load failed")
    return problems


def check(out: Path) -> list[str]:
    """Every problem with the run written under ``out``."""
    missing = [name for name in FILES + PLOTS if not (out / name).is_file()]
    if missing:
        return [f"{out}: missing {', '.join(missing)}"]
    problems = []
    for name in PLOTS:
        if not (out / name).read_bytes().startswith(PNG_MAGIC):
            problems.append(f"{name} is not a PNG image")
    raw = json.loads((out / "raw.json").read_text())
    meta = raw["meta"]
    ensembles = list(meta.get("ensembles") or meta["served"])
    detectors = served.baselines(meta, ensembles)
    for name, key in CSV_ROWS.items():
        with (out / name).open(newline="") as f:
            if len(list(csv.DictReader(f))) != len(raw.get(key) or []):
                problems.append(f"{name} and raw.json disagree on the number of rows")
    problems += [f"raw.json does not describe {e}" for e in ensembles if e not in meta["served"]]
    problems += check_rows(
        raw["triton"], raw.get("post") or [], raw["old"], raw["limit"], ensembles,
        meta["concurrency"], raw["wire"], detectors,
    )  # fmt: skip
    # A run before meta["embedded"] existed started its server unless given a URL.
    embedded = meta.get("embedded", str(meta.get("url", "")).startswith("embedded"))
    if embedded:
        problems += check_memory(raw.get("memory"), ensembles)
    for ensemble in detectors:
        pair = [p for p in raw.get("paired", []) if p.get("ensemble") == ensemble]
        if len(pair) != 1:
            problems.append(f"paired c=1: {len(pair)} results for {ensemble}")
            continue
        for side in ("triton", "limit"):
            problems += _positive(pair[0][side], ("mean_ms", "p50_ms", "n"), f"paired {side}")
    report = (out / "report.md").read_text()
    problems += [f"report.md does not mention {e}" for e in ensembles if e not in report]
    if MEMORY_SECTION not in report:
        problems.append("report.md has no memory section")
    problems += check_sweep(out, detectors, report)
    if raw.get("clips") is not None:  # measured (runs before bench.clips have no key)
        problems += check_clips(out, report)
    return problems


SWEEP_SECTION = "## Photo size sweep"


def check_sweep(out: Path, ensembles, report: str) -> list[str]:
    """The size sweep's problems: every detector's ensemble measured at every size in
    every mode, with figures; its plot a PNG and its section in the report."""
    from bench import sweep

    path = out / sweep.FILES[0]
    if not path.is_file():
        return [f"{out}: missing {path.name} (the size sweep)"]
    result = json.loads(path.read_text())
    problems = []
    if not (out / "sweep.png").is_file() or not (out / "sweep.png").read_bytes().startswith(
        PNG_MAGIC
    ):
        problems.append("sweep.png is missing or not a PNG image")
    rows = {(r["ensemble"], r["target_mp"], r["mode"]): r for r in result.get("rows", [])}
    for ensemble in ensembles:
        for megapixels in result["meta"]["sizes_mp"]:
            for mode in result["meta"]["modes"]:
                where = f"sweep {ensemble} {megapixels} MP {mode['name']}"
                row = rows.get((ensemble, megapixels, mode["name"]))
                if row is None or row.get("error"):
                    problems.append(f"{where}: not measured ({(row or {}).get('error')})")
                    continue
                problems += _positive(row["c1"], ("mean_ms", "p50_ms"), where + " c=1")
                problems += _positive(row["c8"], ("images_per_s",), where + " c=8")
    if SWEEP_SECTION not in report:
        problems.append("report.md has no size sweep section")
    return problems


CLIPS_SECTION = "## Clips against still photos"


def check_clips(out: Path, report: str) -> list[str]:
    """The clips benchmark's problems: each round measured both sides with figures,
    every frame of the clip answered, the verdict and the section in the report."""
    from bench import clips

    path = out / clips.FILES[0]
    if not path.is_file():
        return [f"{out}: missing {path.name} (clips against still photos)"]
    result = json.loads(path.read_text())
    problems = []
    if not result.get("rounds"):
        problems.append("clips: no round measured")
    for i, r in enumerate(result.get("rounds", []), 1):
        for side in ("still", "clip"):
            problems += _positive(r.get(side, {}), ("images_per_s",), f"clips round {i} {side}")
        frames = r.get("clip", {}).get("frames")
        if frames != result["settings"]["frames"]:
            problems.append(f"clips round {i}: {frames} of {result['settings']['frames']} frames")
    if "passed" not in result.get("summary", {}):
        problems.append("clips: no verdict")
    if CLIPS_SECTION not in report:
        problems.append("report.md has no clips section")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", type=Path, default=Path("results/bench"))
    args = ap.parse_args(argv)
    problems = check(args.out)
    for problem in problems:
        print(f"bench check: {problem}", file=sys.stderr)
    if not problems:
        print(f"bench check: {args.out} has every model, concurrency, baseline and file")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
