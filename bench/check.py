"""Check a benchmark run's outputs for shape: ``python -m bench.check [results/bench]``.

What CI asks of ``make bench QUICK=1``: every ensemble and every concurrency measured by
perf_analyzer, the old design at the same concurrencies for each ensemble's detector
(each ``detect_<name>`` the server described as running one detector, see
``bench.served``), the limit at batch 1 and its best batch for each of them, every
number that must be positive, no failed request, and the CSVs, plots and
report written. Exits 1 and names each problem otherwise.
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
from ensemble import contract

FILES = ("triton.csv", "old_design.csv", "limit.csv", "raw.json", "report.md")
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
    old: list[dict],
    limit: list[dict],
    ensembles: list[str],
    concurrencies: list[int],
    wire: dict[str, float],
    detectors: Mapping[str, str],
) -> list[str]:
    """Every problem with the rows of one run; an empty list when the shape is right.

    ``detectors``: the detector (old design and limit ``model``) of each ensemble that
    has an in-process baseline; the others (``detect_all``) are measured by
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
        for c, row in levels(old, model, "old design", OLD_POSITIVE):
            if int(row.get("errors") or 0):
                problems.append(f"old design {model} c={c}: {row['errors']} failed requests")
        batches = sorted(int(r["batch"]) for r in limit if r.get("model") == model)
        if batches != sorted(BATCH_SIZES):
            problems.append(f"limit: {model} has batches {batches}, not {list(BATCH_SIZES)}")
        for r in (r for r in limit if r.get("model") == model):
            problems += _positive(r, LIMIT_POSITIVE, f"limit {model} batch {r['batch']}")
        if sum(1 for r in limit if r.get("model") == model and r.get("best")) != 1:
            problems.append(f"limit: {model} has no single best batch size")
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
    ensembles = list(meta.get("ensembles") or served.served_of(meta))
    detectors = served.baselines(meta, ensembles)
    for name, key in (("triton.csv", "triton"), ("old_design.csv", "old"), ("limit.csv", "limit")):
        with (out / name).open(newline="") as f:
            if len(list(csv.DictReader(f))) != len(raw[key]):
                problems.append(f"{name} and raw.json disagree on the number of rows")
    described = served.served_of(meta)
    problems += [f"raw.json does not describe {e}" for e in ensembles if e not in described]
    problems += check_rows(
        raw["triton"], raw["old"], raw["limit"], ensembles, meta["concurrency"], raw["wire"],
        detectors,
    )  # fmt: skip
    for ensemble in detectors:
        pair = [p for p in raw.get("paired", []) if p.get("ensemble") == ensemble]
        if len(pair) != 1:
            problems.append(f"paired c=1: {len(pair)} results for {ensemble}")
            continue
        for side in ("triton", "limit"):
            problems += _positive(pair[0][side], ("mean_ms", "p50_ms", "n"), f"paired {side}")
    report = (out / "report.md").read_text()
    problems += [f"report.md does not mention {e}" for e in ensembles if e not in report]
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", type=Path, default=Path("results/bench"))
    args = ap.parse_args(argv)
    problems = check(args.out)
    for problem in problems:
        print(f"bench check: {problem}", file=sys.stderr)
    if not problems:
        print(f"bench check: {args.out} has every model, concurrency and file")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
