"""What tracking costs a clip: images/s through a tracking ensemble against its
detection ensemble, on the same server and frames.

``python -m bench.track_cost [--url HOST:PORT] [--ensembles detect_all,detect_pytorch]
[--rounds 3] [--frames 120]`` takes the clips bench's frames (``bench.clips.
sized_frames``: the bench photos at one size, each held for some frames) and runs them,
in alternating rounds (the order swapped each round, so that a drifting machine
favours neither side):

- **detect**: ``DetectorClient.detect_frames`` with the ensemble (batches of its
  ``max_batch_size``, a bounded number of requests in flight);
- **track**: ``DetectorClient.track_frames`` with its tracking ensemble (one frame per
  request over a gRPC stream, up to ``client.tracking.DEFAULT_TRACK_IN_FLIGHT`` frames
  in flight, the tracker answering in order).

The clock runs from the first frame sent to the last result. Prints images/s of each
side per round and the median ratio track / detect, against the target :data:`TARGET`
(95 %), and writes ``track_cost-<date>-<time>.json`` into ``--out`` (default
results/track_cost/).
Nothing else may use the server meanwhile.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from bench import command_parser, logger, measured, served
from bench.clips import sized_frames
from ensemble import contract

TARGET = 0.95
ENSEMBLES = ("detect_all", "detect_pytorch")


def images_per_s(
    run: Callable[[Iterable[np.ndarray]], Iterable], frames: Sequence[np.ndarray]
) -> float:
    """Images/s of ``run`` over ``frames``, every result taken."""
    start = time.perf_counter()
    count = sum(1 for _ in run(frames))
    return count / (time.perf_counter() - start)


def measure(url: str, ensembles: Sequence[str], rounds: int, frames: int,
            log: Callable[[str], None]) -> dict:  # fmt: skip
    from client import DetectorClient

    clip = [f for f in sized_frames()][:frames]
    while len(clip) < frames:
        clip += clip[: frames - len(clip)]
    result: dict = {"frames": frames, "rounds": rounds, "target": TARGET, "ensembles": {}}
    with DetectorClient(url) as client:
        for ensemble in ensembles:
            tracking = contract.tracking_name(ensemble)
            sides = {
                "detect": lambda f, e=ensemble: client.detect_frames(f, e),
                "track": lambda f, t=tracking: client.track_frames(f, t),
            }
            images_per_s(sides["detect"], clip[:8])  # warm-up, not counted
            images_per_s(sides["track"], clip[:8])
            per_round = []
            for k in range(rounds):
                order = ("detect", "track") if k % 2 == 0 else ("track", "detect")
                rates = {side: images_per_s(sides[side], clip) for side in order}
                per_round.append(rates)
                log(f"{ensemble} round {k + 1}: detect {rates['detect']:.2f} images/s, "
                    f"track {rates['track']:.2f} images/s")  # fmt: skip
            ratio = statistics.median(r["track"] / r["detect"] for r in per_round)
            result["ensembles"][ensemble] = {
                "tracking": tracking, "rounds": per_round, "median_ratio": round(ratio, 3),
                "met": ratio >= TARGET,
            }  # fmt: skip
    return result


def report(result: dict) -> str:
    lines = [f"tracking cost over {result['frames']} frames, {result['rounds']} rounds "
             f"(target: track >= {result['target']:.0%} of detect)"]  # fmt: skip
    for ensemble, r in result["ensembles"].items():
        detect = statistics.median(x["detect"] for x in r["rounds"])
        track = statistics.median(x["track"] for x in r["rounds"])
        lines.append(
            f"{ensemble:<20} detect {detect:6.2f} images/s  {r['tracking']:<18} {track:6.2f} "
            f"images/s  ratio {r['median_ratio']:.1%} ({'met' if r['met'] else 'missed'})"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = command_parser("python -m bench.track_cost", __doc__, out="track_cost")
    ap.add_argument("--ensembles", default=",".join(ENSEMBLES), help="detection ensembles")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--frames", type=int, default=120, help="frames per run (default 120)")
    args = ap.parse_args(argv)
    log = logger("track_cost")

    def run() -> dict:
        with served.triton(args.url, args.models, log, workdir=args.out / "server") as (url, _):
            return measure(url, args.ensembles.split(","), args.rounds, args.frames, log)

    return 1 if measured(run, (RuntimeError,), report, args.out, "track_cost", log) is None else 0


if __name__ == "__main__":
    raise SystemExit(main())
