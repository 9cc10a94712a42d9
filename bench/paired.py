"""Concurrency-1 latency, Triton against the limit, measured in alternating rounds.

perf_analyzer's c=1 level and the limit's batch-1 run are taken minutes apart, and a
shared 2-core VM drifts by 10-20 % over minutes (and 40 % between runs of the whole
benchmark): enough to decide a 15 % target either way. So the c=1 comparison is also
measured paired: ``rounds`` times, ``per_round`` requests one at a time through
Triton (gRPC, ``tritonclient``, photo file in, detections and annotated JPEG out),
then as many images through the same pipeline in process (decode, pre-processing,
model, post-processing, drawing, JPEG), cycling over the same photos. Each side's
mean over all its rounds is compared; both felt the same drift.
"""

from __future__ import annotations

import time

from bench.load import latency_summary
from bench.pipeline import Pipeline


def paired_latency(
    url: str,
    ensemble: str,
    pipeline: Pipeline,
    photos: list[bytes],
    rounds: int = 6,
    per_round: int = 10,
) -> dict:
    """Alternating rounds of c=1 requests to Triton and in-process runs: each side's
    ``bench.load.latency_summary`` (``triton``, ``limit``), and ``gap``: Triton's mean
    over the limit's, minus 1."""
    from client import DetectorClient

    triton, local = [], []
    with DetectorClient(url) as client:
        for i in range(len(photos)):  # warm both sides up on every photo
            client.detect([photos[i]], model=ensemble)
            pipeline.serve_files([photos[i]])
        n = 0
        for _ in range(rounds):
            for side, times in (("triton", triton), ("local", local)):
                for k in range(per_round):
                    photo = photos[(n + k) % len(photos)]
                    start = time.perf_counter()
                    if side == "triton":
                        client.detect([photo], model=ensemble)
                    else:
                        pipeline.serve_files([photo])
                    times.append(time.perf_counter() - start)
            n += per_round
    t, lim = latency_summary(triton), latency_summary(local)
    return {"triton": t, "limit": lim, "gap": t["mean_ms"] / lim["mean_ms"] - 1}
