"""Benchmarks of the detection ensembles against the real server, and what their
commands share: the repository's root, this machine in words, log lines, result files,
Markdown tables and the common options."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine(target: str = "cpu") -> str:
    """This machine in words: CPU model and cores, and with ``target`` gpu the GPUs."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    words = f"{cpu}, {os.cpu_count()} cores"
    if target == "gpu":
        try:
            query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
            gpus = subprocess.run(query, capture_output=True, text=True, timeout=30).stdout
            words += "; GPU: " + "; ".join(g.strip() for g in gpus.splitlines() if g.strip())
        except (OSError, subprocess.SubprocessError) as e:
            words += f"; GPU: unknown ({e})"
    return words


def logger(name: str) -> Callable[[str], None]:
    """A log of ``[name] message`` lines, each flushed at once (runs take minutes)."""
    return lambda message: print(f"[{name}] {message}", flush=True)


def command_parser(prog: str, doc: str, out: str | None = None, url: bool = True):
    """A command's parser, described by the first paragraph of ``doc``, with the options
    every benchmark names alike: ``--url`` (a running Triton instead of one started
    here) unless ``url`` is False, ``--models`` (the models file of the server started,
    default models.toml) and, with ``out``, ``--out`` (default ``results/<out>/``)."""
    ap = argparse.ArgumentParser(prog=prog, description=" ".join(doc.split("\n\n")[0].split()))
    if url:
        ap.add_argument("--url", help="a running Triton (gRPC host:port) instead of one started")
    ap.add_argument("--models", type=Path, help="models file of the server started (models.toml)")
    if out is not None:
        ap.add_argument("--out", type=Path, default=REPO / "results" / out,
                        help=f"default: results/{out}/")  # fmt: skip
    return ap


def write_csv(path: Path, rows: Sequence[Mapping]) -> None:
    """``rows`` as CSV, the columns in the order the rows first name them; nested
    values (dicts, lists) are left out."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and not isinstance(row[k], dict | list)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def measured(measure: Callable[[], dict], errors: tuple, text: Callable[[dict], str],
             out: Path, name: str, log: Callable[[str], None]) -> dict | None:  # fmt: skip
    """A command's run: ``measure()``'s figures printed as ``text`` and kept as
    ``out/<name>-<date>-<time>.json``; None, the error printed, when it raises one of
    ``errors`` (a Triton that would not start is a RuntimeError, a broken models file a
    ValueError)."""
    try:
        result = measure()
    except errors as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return None
    print(text(result))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    log(f"figures: {path}")
    return result


def table(head: Sequence[str], rows: Iterable[Sequence]) -> list[str]:
    """A Markdown table: the header, its rule and a line per row of cells."""
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows),
    ]


def shown(value: float | None, spec: str = ".0f") -> str:
    """A figure as a table shows it: ``format(value, spec)``, a dash when not measured
    (None or NaN)."""
    return "–" if value is None or math.isnan(value) else format(value, spec)


def verdict(met: bool | None) -> str:
    """Whether a figure meets its target, as reports write it: ``met``, ``**missed**``
    (bold: the reader must see it), a dash when there is no target or no figure."""
    return "–" if met is None else "met" if met else "**missed**"
