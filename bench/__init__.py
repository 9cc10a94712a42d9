"""Benchmarks of the detection ensembles: NVIDIA's perf_analyzer against the real server."""

from __future__ import annotations

import contextlib
from pathlib import Path


def machine(target: str = "cpu") -> str:
    """This machine in words: CPU model and cores, and with ``target`` gpu the GPUs."""
    import os
    import subprocess

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
