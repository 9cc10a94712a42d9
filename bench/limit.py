"""The LIMIT: what one process does with no server at all, per model.

Each image goes through exactly what a served request costs the server: decode the
encoded file, the family's preprocess, the model, postprocess, draw the boxes, encode
the annotated JPEG (the ensembles' quality, 90), with the same framework
thread count as the Triton detectors (2). No HTTP, no gRPC, no serialisation, no queue.

- batch 1: each image alone; images/s and latency percentiles over N timed iterations
  cycling over the photos;
- batch 2, 4, 8: the model is called once per batch (pre- and post-processing stay per
  image, as in the ensemble); images/s is images over time, latency is the whole batch's.

``python -m bench.limit --model all --quick`` prints a table (``--json`` keeps it); the
detectors are those of the models file (``--models``, default models.toml).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench import aligned
from bench.load import latency_summary
from bench.photos import FORMATS, photo_files
from bench.pipeline import THREADS, Pipeline, detectors_from_arguments
from ensemble.registry import Detector

BATCH_SIZES = (1, 2, 4, 8)


def measure(pipeline: Pipeline, photos: list[bytes], batch: int, images: int) -> dict:
    """Time ``images`` images (rounded up to whole batches) through the full path.

    Returns ``batch``, ``images``, ``throughput`` (images/s), and the latency of one
    call of ``batch`` images (``bench.load.latency_summary``: ``mean_ms``, ``p50_ms``,
    ``p99_ms``, ...).
    """

    def one_batch(start: int) -> None:
        pipeline.serve_files([photos[(start + i) % len(photos)] for i in range(batch)])

    for w in range(2):  # warm-up: first calls allocate, JIT (TorchScript) and tune
        one_batch(w * batch)
    calls = max(1, -(-images // batch))
    times = []
    total_start = time.perf_counter()
    for c in range(calls):
        start = time.perf_counter()
        one_batch(c * batch)
        times.append(time.perf_counter() - start)
    total = time.perf_counter() - total_start
    return {"batch": batch, "images": calls * batch, "throughput": calls * batch / total,
            **latency_summary(times)}  # fmt: skip


def limit(
    detector: Detector,
    images: int,
    threads: int = THREADS,
    device: str = "cpu",
    photo_format: str = "jpeg",
    pipeline: Pipeline | None = None,
) -> dict:
    """Batch 1 and every batch size of :data:`BATCH_SIZES` for one detector (``model``
    in the result is its name); ``best`` is the batch size with the highest images/s."""
    pipeline = pipeline or Pipeline(detector, threads, device)
    photos = list(photo_files(photo_format))
    rows = [measure(pipeline, photos, b, images) for b in BATCH_SIZES]
    best = max(rows, key=lambda r: r["throughput"])
    return {
        "model": detector.name,
        "threads": threads,
        "device": device,
        "runs": rows,
        "batch1": rows[0],
        "best": best,
        # Anything else on the machine skews the numbers: this says whether it was busy.
        "loadavg_1m_after": os.getloadavg()[0],
    }


def format_table(results: list[dict]) -> str:
    widths = (-24, 8, 7, 7, 6, 7, 9, 5)
    head = ("model", "b1 img/s", "b1 p50", "b1 p99", "best b", "img/s", "batch p50", "load")
    lines = [aligned(head, widths) + "   all (batch: img/s)"]
    for r in results:
        b1, best = r["batch1"], r["best"]
        every = "  ".join(f"{x['batch']}: {x['throughput']:.2f}" for x in r["runs"])
        cells = (r["model"], f"{b1['throughput']:.2f}", f"{b1['p50_ms']:.0f}",
                 f"{b1['p99_ms']:.0f}", best["batch"], f"{best['throughput']:.2f}",
                 f"{best['p50_ms']:.0f}", f"{r['loadavg_1m_after']:.1f}")  # fmt: skip
        lines.append(f"{aligned(cells, widths)}   {every}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="all", help="a detector's name, or all (default)")
    parser.add_argument("--models", type=Path, help="models file (default: models.toml)")
    parser.add_argument("--quick", action="store_true", help="about 24 images per setting")
    parser.add_argument("--images", type=int, default=None, help="images per setting")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="gpu: GPU 0")
    parser.add_argument("--photo-format", choices=FORMATS, default="jpeg")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    images = args.images or (24 if args.quick else 100)
    detectors = detectors_from_arguments(parser, args.model, args.models, allow_all=True)
    results = []
    for detector in detectors:
        results.append(limit(detector, images, args.threads, args.device, args.photo_format))
        print(format_table(results[-1:]).splitlines()[-1], flush=True)
    print(f"\nlimit: in-process, no server, {args.threads} threads, ms are per call")
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
