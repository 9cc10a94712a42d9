"""Concurrency-1 latency, Triton against the limit, measured in alternating rounds.

perf_analyzer's c=1 level and the limit's batch-1 run are taken minutes apart, and a
shared 2-core VM drifts by 10-20 % over minutes (and 40 % between runs of the whole
benchmark): enough to decide a 15 % target either way. So the c=1 comparison is also
measured paired: ``rounds`` times, ``per_round`` requests one at a time through
Triton (gRPC, ``tritonclient``, photo file in, detections and annotated JPEG out),
then as many images through the same pipeline in process (decode, pre-processing,
model, post-processing, drawing, JPEG), cycling over the same photos. Each side's
mean over all its rounds is compared; both felt the same drift.

``python -m bench.paired --url 127.0.0.1:8001 --model pytorch`` prints one result: the
ensemble ``detect_pytorch`` against the detector ``pytorch`` of the models file
(``--models``, default models.toml) in process.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> None:
    from pathlib import Path

    from bench.photos import photo_files
    from bench.pipeline import detectors_from_arguments

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:8001")
    parser.add_argument("--model", required=True, help="the detector's name in the models file")
    parser.add_argument("--models", type=Path, help="models file (default: models.toml)")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    (detector,) = detectors_from_arguments(parser, args.model, args.models)
    ensemble = detector.ensemble
    result = paired_latency(
        args.url, ensemble, Pipeline(detector), list(photo_files()), rounds=args.rounds
    )
    t, lim = result["triton"], result["limit"]
    print(
        f"{ensemble}: Triton {t['mean_ms']:.1f} ms (p50 {t['p50_ms']:.1f}), in process "
        f"{lim['mean_ms']:.1f} ms (p50 {lim['p50_ms']:.1f}): {result['gap']:+.1%}"
    )


if __name__ == "__main__":
    main()
