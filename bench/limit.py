"""The LIMIT: what one process does with no server at all, per model.

Each image goes through exactly what a served request costs the server: decode the
encoded file, the family's preprocess, the model, postprocess, draw the boxes, encode
the annotated JPEG (the ensembles' quality, 90), with the same framework
thread count as the Triton detectors (2). No HTTP, no gRPC, no serialisation, no queue.

- batch 1: each image alone; images/s and latency percentiles over N timed iterations
  cycling over the photos;
- batch 2, 4, 8: the model is called once per batch (pre- and post-processing stay per
  image, as in the ensemble); images/s is images over time, latency is the whole batch's.
"""

from __future__ import annotations

import time

from bench.load import latency_summary
from bench.photos import photo_files
from bench.pipeline import Pipeline

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


def limit(pipeline: Pipeline, images: int, photo_format: str = "jpeg") -> list[dict]:
    """:func:`measure` at every batch size of :data:`BATCH_SIZES` for the pipeline's
    detector (``model``: its name); ``best`` marks the batch size with the highest
    images/s."""
    photos = list(photo_files(photo_format))
    rows = [measure(pipeline, photos, b, images) for b in BATCH_SIZES]
    best = max(rows, key=lambda r: r["throughput"])
    return [{"model": pipeline.detector.name, **r, "best": r is best} for r in rows]
