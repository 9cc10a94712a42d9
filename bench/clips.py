"""Clips against still photos: is a clip through ``detect_frames`` as fast as photos?

``python -m bench.clips [--url HOST:PORT] [--quick]`` makes a clip from the bench's
photos (``bench.photos``: scikit-image's astronaut, coffee, horse, motorcycle_left and
chelsea, each scaled to one size, :data:`SIZE`, and held :data:`HOLD` frames, MPEG-4
in MP4 at 25 fps) and measures, against the same server and ensemble
(:data:`ENSEMBLE`, ``detect_tensorflow``), in alternating rounds:

- **still**: the same photos at the same size, as JPEG (quality 90, what
  ``detect_frames`` sends too), one image per request at concurrency 8 through NVIDIA's
  ``perf_analyzer`` (``bench.perf_analyzer``, the bench's own c=8 figures);
- **clip**: the clip file through ``DetectorClient.detect_frames``: decoded here,
  each frame encoded as JPEG here, batches of the model's ``max_batch_size``, a bounded
  number of requests in flight, every frame's result taken in order. The clock runs
  from the first frame read to the last result, so decoding and encoding count.

Images/s for each, their ratio per round (clip / still; a round runs both, the order
alternating so that a drifting machine favours neither), and the target: the median
ratio at least :data:`TARGET` (90 %). Per side it also records the client's CPU time
per image (this process for the clip, perf_analyzer's for the still photos) and the
mean batch each of the server's models executed (Triton's statistics), which say
where a gap comes from. Writes ``clips.json`` and ``clips.md`` into ``--out``
(default results/clips/; ``python -m bench`` writes them beside its report).
Nothing else may use the server meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from bench import command_parser, logger, machine, served, table
from bench.photos import JPEG_QUALITY, PHOTO_NAMES
from bench.processes import children_cpu_seconds, cpu_seconds
from client.statistics import between, read_statistics

ENSEMBLE = "detect_tensorflow"
SIZE = (640, 480)  # width, height in pixels: VGA, a webcam's or a phone clip's small size
HOLD = 5  # frames each photo is held: the clip changes scene every 0.2 s at 25 fps
CLIP_FPS = 25.0
CLIP_FOURCC = "mp4v"  # MPEG-4 Part 2 in MP4: the MP4 codec this OpenCV build writes
CONCURRENCY = 8  # the still photos' concurrency the target names
TARGET = 0.90  # clip images/s over still images/s, at least
FILES = ("clips.json", "clips.md")


@dataclass(frozen=True)
class Settings:
    """How much is measured: ``rounds`` of (still, clip). The still side is
    perf_analyzer's ``windows`` count windows of ``window_requests`` requests each,
    taken as they come (the rounds, not a stability criterion, deal with the noise);
    the clip is ``frames`` frames long, about as many images."""

    rounds: int = 6
    frames: int = 240
    windows: int = 3
    window_requests: int = 80
    warmup_frames: int = 48


QUICK = Settings(rounds=1, frames=64, windows=3, window_requests=24, warmup_frames=16)


log = logger("clips")


# --- pure parts ----------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)``: width and height in pixels, each at least 16."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"a size is WIDTHxHEIGHT in pixels, like 640x480, not {text!r}")
    width, height = (int(p) for p in parts)
    if width < 16 or height < 16:
        raise ValueError(f"a clip of {width}x{height} pixels is too small (16x16 at least)")
    return width, height


def scene_order(frames: int, photos: int, hold: int = HOLD) -> list[int]:
    """Which photo (index into ``photos`` of them) each of ``frames`` frames shows: each
    photo in turn, held ``hold`` frames, round and round."""
    if photos < 1 or hold < 1:
        raise ValueError(f"need at least one photo and one frame each, got {photos}, {hold}")
    return [(i // hold) % photos for i in range(frames)]


def images_served(before: Mapping, after: Mapping, model: str) -> int:
    """Images ``model`` answered between two ``get_inference_statistics`` replies."""
    done = between(read_statistics(before), read_statistics(after), model)
    return 0 if done is None else done.images


def mean_batches(before: Mapping, after: Mapping) -> dict[str, float]:
    """Mean batch size each model executed between two ``get_inference_statistics``
    replies: images over executions, for every model that executed in between."""
    old, new = read_statistics(before), read_statistics(after)
    done = {name: between(old, new, name) for name in new}
    return {name: round(d.mean_batch, 2) for name, d in done.items() if d.executions > 0}


def cpu_ms_per_image(side: Mapping) -> float | None:
    """Client and server CPU milliseconds per image of one side's measurement, None
    when the server's CPU was not measured (a server on another machine)."""
    server = side.get("server_cpu_ms_per_image")
    return None if server is None else side["client_cpu_ms_per_image"] + server


def summarize(rounds: Sequence[Mapping], target: float = TARGET) -> dict:
    """The verdict over ``rounds`` (each with ``still`` and ``clip``, each with
    ``images_per_s``): the median images/s of each side, each round's ratio clip /
    still, their median (``ratio``, what the target is checked on), the lowest and
    highest, and ``passed``: the median ratio is at least ``target``.

    With the CPU time of both sides (:func:`cpu_ms_per_image`), also ``cpu_ratio``:
    the median over rounds of the still side's CPU per image over the clip's. Where
    both sides use all the CPU they get, images/s is that CPU over the CPU per image,
    so this is the ratio the two would reach each with the machine to itself: a
    figure other processes on a shared machine disturb far less than images/s."""
    if not rounds:
        raise ValueError("no rounds to summarize")
    still = [r["still"]["images_per_s"] for r in rounds]
    clip = [r["clip"]["images_per_s"] for r in rounds]
    ratios = [c / s for c, s in zip(clip, still, strict=True)]
    ratio = statistics.median(ratios)
    found = {
        "still_images_per_s": statistics.median(still),
        "clip_images_per_s": statistics.median(clip),
        "ratios": ratios,
        "ratio": ratio,
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "target": target,
        "passed": ratio >= target,
    }
    cpu = [(cpu_ms_per_image(r["still"]), cpu_ms_per_image(r["clip"])) for r in rounds]
    if all(s is not None and c for s, c in cpu):
        found["cpu_ratios"] = [s / c for s, c in cpu]
        found["cpu_ratio"] = statistics.median(found["cpu_ratios"])
    return found


def markdown(result: Mapping) -> str:
    """The clips section of a report, from a ``clips.json``."""
    s, settings = result["summary"], result["settings"]
    width, height = result["size"]
    verdict = "**PASS**" if s["passed"] else "**FAIL**"
    lines = [
        "## Clips against still photos (bench/clips.py)",
        "",
        f"A {settings['frames']}-frame {width}x{height} clip made from the photos "
        f"({result['codec']}, {result['clip_bytes'] / 1e3:.0f} kB) through "
        f"`detect_frames` against `{result['ensemble']}` (decoded and JPEG-encoded by the "
        f"client, batches of {result['batch_size']}, {result['max_in_flight']} requests in "
        f"flight, timed from the first frame read to the last result), against the same "
        f"photos at {width}x{height} as JPEG, one per request at concurrency "
        f"{result['concurrency']} through perf_analyzer; {len(result['rounds'])} rounds, "
        "the order alternating.",
        "",
        f"Target: the clip >= {s['target']:.0%} of the still photos' images/s. Median ratio "
        f"{s['ratio']:.0%} (rounds {s['ratio_min']:.0%}-{s['ratio_max']:.0%}): {verdict}.",
    ]
    if "cpu_ratio" in s:
        lines[-1] += (
            f" CPU per image (client and server), still over clip: {s['cpu_ratio']:.0%} "
            "(the ratio each side alone on the machine would reach)."
        )
    model = result.get("detector_model")

    def batch(side: Mapping) -> str:
        found = side.get("server_batches", {})
        return f"{found[model]:.1f}" if model in found else "–"

    def cpu(side: Mapping, cores: bool = False) -> str:
        """CPU ms per image, or with ``cores`` the cores it kept busy (CPU s per s)."""
        ms = cpu_ms_per_image(side)
        if ms is None:
            return "–"
        return f"{ms * side['images_per_s'] / 1e3:.2f}" if cores else f"{ms:.0f}"

    head = ("round", "still img/s", "clip img/s", "clip / still", "CPU ms/img still",
            "CPU ms/img clip", "of which client, still", "of which client, clip",
            "cores busy still", "cores busy clip", "server batch still",
            "server batch clip")  # fmt: skip
    rows = [
        (i, f"{r['still']['images_per_s']:.2f}", f"{r['clip']['images_per_s']:.2f}",
         f"{r['clip']['images_per_s'] / r['still']['images_per_s']:.0%}",
         cpu(r["still"]), cpu(r["clip"]), f"{r['still']['client_cpu_ms_per_image']:.1f}",
         f"{r['clip']['client_cpu_ms_per_image']:.1f}", cpu(r["still"], cores=True),
         cpu(r["clip"], cores=True), batch(r["still"]), batch(r["clip"]))
        for i, r in enumerate(result["rounds"], 1)
    ]  # fmt: skip
    lines += ["", *table(head, rows)]
    lines += [
        "",
        "CPU: user + system time per image of the client (perf_analyzer for the still "
        "photos; for the clip this process: decoding, JPEG encoding, gRPC, reading the "
        "answers) and of the server's processes (– when the server is not on this "
        "machine). Cores busy: that CPU per image times images/s, the CPU the side kept "
        "busy (the machine has 2; what other processes take is not counted). Server "
        "batch: the mean batch the detector's model "
        f"(`{model or '?'}`) executed (Triton's statistics).",
    ]
    return "\n".join(lines)


# --- the media -----------------------------------------------------------------------


def sized_frames(size: tuple[int, int] = SIZE) -> list[np.ndarray]:
    """The bench's photos (:data:`bench.photos.PHOTO_NAMES`) scaled to ``size`` (width,
    height in pixels; aspect not kept: a clip has one size), RGB ``uint8``."""
    import cv2

    from bench.photos import photo_paths
    from ensemble.imaging import decode_image

    return [
        cv2.resize(decode_image(path.read_bytes()), size, interpolation=cv2.INTER_AREA)
        for path in photo_paths()
    ]


def still_photos(frames: Sequence[np.ndarray]) -> list[bytes]:
    """The frames as the still photos sent: JPEG of quality ``JPEG_QUALITY`` (90)."""
    from ensemble.imaging import encode_jpeg

    return [encode_jpeg(f, JPEG_QUALITY) for f in frames]


def write_clip(
    path: Path, frames: Sequence[np.ndarray], count: int, fourcc: str = CLIP_FOURCC,
    fps: float = CLIP_FPS, hold: int = HOLD,
) -> Path:  # fmt: skip
    """``count`` frames showing ``frames`` (RGB) in turn, each held ``hold`` frames
    (:func:`scene_order`), as a ``fourcc`` clip at ``fps`` (default MPEG-4, 25 fps)."""
    import cv2

    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"this OpenCV cannot write {fourcc} to {path}")
    bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]
    try:
        for k in scene_order(count, len(frames), hold):
            writer.write(bgr[k])
    finally:
        writer.release()
    return path


# --- the two sides -------------------------------------------------------------------


@contextlib.contextmanager
def cost(client, server_pids: Sequence[int], client_cpu: Callable[[], float]) -> Iterator[dict]:
    """What the block cost: a dict that holds, once the block is over, ``before`` and
    ``after`` (Triton's statistics through ``client``), ``client_cpu_s``
    (``client_cpu()``'s difference) and ``server_cpu_s`` (``server_pids``')."""
    found = {"before": client.inference_statistics()}
    cpu0, server0 = client_cpu(), cpu_seconds(server_pids)
    yield found
    found.update(client_cpu_s=client_cpu() - cpu0, server_cpu_s=cpu_seconds(server_pids) - server0,
                 after=client.inference_statistics())  # fmt: skip


def per_image(spent: Mapping, images: int, server_pids: Sequence[int]) -> dict:
    """A side's CPU milliseconds per image (the server's None without ``server_pids``)
    and the mean batch each of the server's models executed."""
    server_ms = spent["server_cpu_s"] / images * 1e3 if server_pids else None
    return {"client_cpu_ms_per_image": spent["client_cpu_s"] / images * 1e3,
            "server_cpu_ms_per_image": server_ms,
            "server_batches": mean_batches(spent["before"], spent["after"])}  # fmt: skip


def measure_still(url: str, ensemble: str, input_data: Path, out_dir: Path, settings: Settings,
                  server_pids: Sequence[int] = ()) -> dict:  # fmt: skip
    """perf_analyzer over gRPC at :data:`CONCURRENCY`, one photo per request
    (``input_data``: its JSON, ``bench.perf_analyzer.write_input_data``), windows as
    ``settings`` says: ``images_per_s``, ``p50_ms``, ``p99_ms`` and :func:`per_image`
    (the client's CPU is perf_analyzer's). Its command, report and CSV stay in
    ``out_dir``."""
    from bench import perf_analyzer
    from client import DetectorClient

    binary = perf_analyzer.ensure_perf_analyzer()
    out_dir.mkdir(parents=True, exist_ok=True)
    window = {"window_requests": settings.window_requests, "stability_percent": 10_000,
              "max_trials": settings.windows}  # fmt: skip
    with DetectorClient(url) as client, cost(client, server_pids, children_cpu_seconds) as spent:
        done, csv_path = perf_analyzer.run_level(
            binary, ensemble, url, input_data, out_dir, CONCURRENCY, window, "still"
        )
    if done.returncode != 0 or not csv_path.is_file():
        raise perf_analyzer.failure(ensemble, done)
    (row,) = perf_analyzer.parse_csv(csv_path)
    # Its CPU and the server's are spread over every request it sent, ramp-up included.
    images = max(1, images_served(spent["before"], spent["after"], ensemble))
    return {"images_per_s": row["throughput"], "images": images, "p50_ms": row.get("p50_ms"),
            "p99_ms": row.get("p99_ms"), **per_image(spent, images, server_pids)}  # fmt: skip


def measure_clip(url: str, ensemble: str, clip: Path, server_pids: Sequence[int] = (),
                 frames: int | None = None, **options) -> dict:  # fmt: skip
    """The clip through ``detect_frames`` (``options`` are its keywords), timed from the
    first frame read to the last result: ``images_per_s``, ``frames``, ``seconds``,
    :func:`per_image` (the client's CPU is this process's: decoding, encoding, gRPC,
    the answers) and ``labels`` (frames per label found: the answers are real).
    ``frames`` stops after that many (the warm-up)."""
    from client import DetectorClient
    from client.video import probe_clip, read_clip_frames

    info = probe_clip(clip)
    labels: dict[str, int] = {}
    n = 0
    with DetectorClient(url) as client:
        client.model_info(ensemble)  # learnt before the clock starts, as a UI has it
        with cost(client, server_pids, time.process_time) as spent:
            started = time.perf_counter()
            results = client.detect_frames(read_clip_frames(info), ensemble, **options)
            try:
                for frame in results:
                    n += 1
                    for label in {d.label for d in frame.result.detections}:
                        labels[label] = labels.get(label, 0) + 1
                    if frames is not None and n >= frames:
                        break
            finally:
                results.close()
            seconds = time.perf_counter() - started
    return {"images_per_s": n / seconds, "frames": n, "seconds": round(seconds, 2),
            **per_image(spent, n, server_pids),
            "labels": dict(sorted(labels.items(), key=lambda kv: -kv[1]))}  # fmt: skip


# --- the run -------------------------------------------------------------------------


def run(
    url: str, out: Path, *, ensemble: str = ENSEMBLE, size: tuple[int, int] = SIZE,
    settings: Settings = Settings(), options: Mapping | None = None,
    server_pids: Sequence[int] = (), say: Callable[[str], None] = log,
) -> dict:  # fmt: skip
    """Measure ``ensemble`` at ``url`` as the module's docstring says; write
    ``clips.json`` and ``clips.md`` into ``out`` (perf_analyzer's files under
    ``out``/clips-perf_analyzer/); the result (clips.json's content). ``options`` are
    ``detect_frames``' keywords; ``server_pids``, the server's processes when they are
    on this machine, add its CPU time per image to each side."""
    from bench.perf_analyzer import write_input_data
    from client import DetectorClient
    from client.video import DEFAULT_MAX_IN_FLIGHT

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    options = dict(options or {})
    with DetectorClient(url) as client:
        info = client.model_info(ensemble)
    batch_size = options.get("batch_size") or info.max_batch_size
    in_flight = options.get("max_in_flight") or DEFAULT_MAX_IN_FLIGHT
    detector_model = info.detectors[0].name if len(info.detectors) == 1 else None

    frames = sized_frames(size)
    photos = still_photos(frames)
    clip = write_clip(out / f"clip-{size[0]}x{size[1]}.mp4", frames, settings.frames)
    pa_dir = out / "clips-perf_analyzer"
    input_data = write_input_data(pa_dir / "input_data.json", photos)
    say(f"{clip.name}: {settings.frames} frames, {clip.stat().st_size / 1e3:.0f} kB")

    say(f"warm-up: {settings.warmup_frames} frames through detect_frames")
    measure_clip(url, ensemble, clip, frames=settings.warmup_frames, **options)
    pids = list(server_pids)
    rounds = []
    for i in range(settings.rounds):
        sides = ("still", "clip") if i % 2 == 0 else ("clip", "still")
        measured: dict = {}
        for side in sides:
            if side == "still":
                where = pa_dir / f"round{i + 1}"
                measured[side] = measure_still(url, ensemble, input_data, where, settings, pids)
            else:
                measured[side] = measure_clip(url, ensemble, clip, pids, **options)
        ratio = measured["clip"]["images_per_s"] / measured["still"]["images_per_s"]
        say(
            f"round {i + 1}/{settings.rounds}: still {measured['still']['images_per_s']:.2f} "
            f"img/s, clip {measured['clip']['images_per_s']:.2f} img/s, ratio {ratio:.0%}"
        )
        rounds.append({"order": list(sides), **measured})

    result = {
        "ensemble": ensemble, "detector_model": detector_model, "size": list(size),
        "codec": f"{CLIP_FOURCC} in MP4, {CLIP_FPS:g} fps", "clip_bytes": clip.stat().st_size,
        "photo_bytes": [len(p) for p in photos], "photos": list(PHOTO_NAMES),
        "concurrency": CONCURRENCY, "batch_size": batch_size, "max_in_flight": in_flight,
        "options": options, "settings": asdict(settings), "machine": machine("cpu"),
        "rounds": rounds, "summary": summarize(rounds),
    }  # fmt: skip
    (out / FILES[0]).write_text(json.dumps(result, indent=1))
    (out / FILES[1]).write_text(markdown(result) + "\n")
    clip.unlink()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = command_parser("python -m bench.clips", __doc__, out="clips")
    ap.add_argument("--ensemble", default=ENSEMBLE)
    ap.add_argument("--size", type=parse_size, default=SIZE, help="WIDTHxHEIGHT (640x480)")
    ap.add_argument("--rounds", type=int, help=f"rounds of (still, clip) ({Settings.rounds})")
    ap.add_argument("--frames", type=int, help=f"frames in the clip ({Settings.frames})")
    ap.add_argument("--batch-size", type=int, help="detect_frames' batch_size (the model's)")
    ap.add_argument("--max-in-flight", type=int, help="detect_frames' max_in_flight")
    ap.add_argument("--quick", action="store_true", help="one short round, for CI")
    args = ap.parse_args(argv)
    changes = {k: v for k, v in (("rounds", args.rounds), ("frames", args.frames)) if v}
    settings = replace(QUICK if args.quick else Settings(), **changes)
    options = {k: v for k, v in (("batch_size", args.batch_size),
                                 ("max_in_flight", args.max_in_flight)) if v}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    server_options = {"workdir": args.out, "load": (args.ensemble,)}
    with served.triton(args.url, args.models, log, **server_options) as (url, server):
        result = run(url, args.out, ensemble=args.ensemble, size=args.size, settings=settings,
                     options=options, server_pids=server.pids() if server else ())  # fmt: skip
    s = result["summary"]
    log(
        f"still {s['still_images_per_s']:.2f} img/s, clip {s['clip_images_per_s']:.2f} img/s "
        f"(medians), ratio {s['ratio']:.0%} (rounds {s['ratio_min']:.0%}-{s['ratio_max']:.0%}): "
        f"{'PASS' if s['passed'] else 'FAIL'} against {s['target']:.0%}"
    )
    log(f"results: {args.out / FILES[0]}, {args.out / FILES[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
