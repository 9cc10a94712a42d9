"""One command for every benchmark: `python -m bench [--quick] [--url HOST:PORT]`.

First, when it started the server itself, the memory of the server's processes
(``bench.memory``: PSS per model idle, then under a closed loop at concurrency 8 over
the ensembles). Then, model by model and one after the other so they never share the
CPU:
1. perf_analyzer (NVIDIA's) over gRPC against the model's ensemble, concurrency 1..16;
   then c=1 latency through Triton and in process in alternating rounds (``bench.paired``);
2. the old design (one Flask server per model, arrays as base64 JSON) at the same
   concurrencies with the same photos, twice: the post's design (the annotated image
   back as float64), then the fairer old design (as uint8), see ``bench.old_design``;
3. the limit: the same pipeline in one process with no server, batch 1 and best;
then ``detect_all`` with perf_analyzer; then the size sweep (``bench.sweep``: photos of
0.3 to 24 megapixels through each detector's ensemble, with and without a smaller
annotated image); last, clips against still photos (``bench.clips``: a clip through
``detect_frames`` against the same frames as photos at concurrency 8, on
``detect_tensorflow`` when it is served). It writes CSV files, PNG plots and a Markdown
report under ``results/bench/``, and checks their shape (``bench.check``).

The ensembles measured are every one the server serves (``--ensembles`` picks some);
what each is called and which detector it runs, the server says (``bench.served``).
The in-process sides (2, 3 and the paired rounds) run that detector as the models
file (``--models``, default models.toml) describes it; the embedded Triton serves the
same file. With ``--url`` the Triton part measures that server (a GPU host, say)
instead of starting the embedded one; the old design and the limit still run here,
from ``--models``, which must then describe the detectors that server serves.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench import (
    clips,
    command_parser,
    loadgen,
    logger,
    machine,
    memory,
    perf_analyzer,
    served,
    sweep,
    write_csv,
)
from bench.check import CSV_ROWS, check
from bench.limit import limit
from bench.old_design import FAIR, POST, WIRES
from bench.paired import paired_latency
from bench.photos import FORMATS, photo_files
from bench.pipeline import Pipeline
from bench.report import DETECTIONS_ONLY, write_report
from ensemble import configgen, contract
from ensemble.registry import Detector, ModelsFileError, Registry, load_models

log = logger("bench")


def triton_wire_bytes(url: str, photos: list[bytes], ensembles: list[str]) -> dict[str, float]:
    """Mean tensor payload per request and ensemble: the image file in, detections,
    count and annotated JPEG(s) out (gRPC/HTTP2 framing not counted); and under
    ``<ensemble>:detections_only`` the same for a client that asks Triton for the
    detections and their count alone (it draws them itself)."""
    from client import DetectorClient

    sizes = {}
    detections = contract.MAX_DETECTIONS * 6 * 4 + 4  # FP32 [100, 6] + INT32 [1]
    with DetectorClient(url) as client:
        for ensemble in ensembles:
            total = bare = 0
            for photo in photos:
                (result,) = client.detect([photo], model=ensemble)
                outputs = [result, *result.per_detector.values()]
                total += len(photo) + sum(len(r.annotated_jpeg) + detections for r in outputs)
                bare += len(photo) + detections * len(outputs)
            sizes[ensemble] = total / len(photos)
            sizes[ensemble + DETECTIONS_ONLY] = bare / len(photos)
    return sizes


def learn_ensembles(args, url: str, registry: Registry) -> tuple[list[str], dict, dict]:
    """The ensembles to measure (``--ensembles``, or every one the server has ready, in
    the models file's order, ``detect_all`` last) and what the server says of them:
    ``(ensembles, served, detector_settings)`` (see ``bench.served``)."""
    ready = served.ready_ensembles(url, order=registry.ensembles)
    ensembles = list(args.ensembles or ready)
    missing = [e for e in ensembles if e not in ready]
    if missing:
        raise SystemExit(
            f"[bench] the server at {url} has no ready {', '.join(missing)} "
            f"(it serves {', '.join(ready) or 'no detection ensemble'})"
        )
    if not ensembles:
        raise SystemExit(f"[bench] the server at {url} serves no detection ensemble")
    described, settings = served.describe(url, ensembles)
    return ensembles, described, settings


def baseline_detector(registry: Registry, ensemble: str, detector: str) -> Detector:
    """The models file's entry for the detector the server runs in ``ensemble``."""
    try:
        return registry[detector]
    except KeyError:
        raise SystemExit(
            f"[bench] the server's {ensemble} runs detector {detector!r}, which "
            f"{registry.source} does not list: pass the models file it serves with --models"
        ) from None


def run_triton(args, url: str, ensemble: str, out: Path, photos: list[bytes]) -> list[dict]:
    log(f"perf_analyzer: {ensemble} at concurrency {list(args.concurrency)}")
    return perf_analyzer.run_sweep(
        ensemble,
        url,
        args.concurrency,
        out_dir=out / "perf_analyzer" / ensemble,
        quick=args.quick,
        photos=photos,
    )


def run_old_design(
    args, detector: Detector, photos: list[bytes], models: Path, wire: str
) -> list[dict]:
    """The old design's Flask server for ``detector`` in the ``wire`` format, at each
    concurrency: loadgen's rows, with ``model``."""
    from ensemble.processes import free_port

    rows = []
    model = detector.name
    duration = 4.0 if args.quick else 15.0
    port = free_port()
    server = loadgen.old_design_server(model, port, device=args.device, models=models, wire=wire)
    with server as url:
        for c in args.concurrency:
            log(f"{WIRES[wire]}: {model} at concurrency {c}")
            row = loadgen.run(url, photos, c, duration, wire)
            rows.append({"model": model, **row})
    return rows


def run_memory(args, server, url: str, ensembles: list[str], photos: list[bytes]) -> dict | None:
    """``bench.memory``'s figures for the server the bench started (None with ``--url``)."""
    if server is None:
        log("memory: not measured (--url: the server's processes are not visible from here)")
        return None
    duration = memory.QUICK_LOAD_SECONDS if args.quick else memory.LOAD_SECONDS
    return memory.measure(server, url, ensembles, photos, duration, log=log)


def run_limit(args, pipeline: Pipeline) -> list[dict]:
    log(f"limit: {pipeline.detector.name} in process, batch 1, 2, 4, 8")
    return limit(pipeline, 24 if args.quick else 120, args.photo_format)


def run_paired(args, url: str, ensemble: str, pipeline: Pipeline, photos) -> dict:
    log(f"paired c=1: {ensemble} through Triton and in process, alternating")
    rounds, per_round = (2, 5) if args.quick else (6, 10)
    result = paired_latency(url, ensemble, pipeline, photos, rounds, per_round)
    return {"model": pipeline.detector.name, "ensemble": ensemble, **result}


def run_clips(args, url: str, server, out: Path, ensembles: list[str]) -> dict | None:
    """``bench.clips`` on its ensemble when it is among those measured: its summary
    (clips.json and clips.md are written into ``out``), else None. With the embedded
    ``server``, its CPU time per image is measured too."""
    if clips.ENSEMBLE not in ensembles:
        log(f"clips: not measured ({clips.ENSEMBLE} is not among the ensembles)")
        return None
    log(f"clips: a clip through detect_frames vs still photos at c=8 on {clips.ENSEMBLE}")
    settings = clips.QUICK if args.quick else clips.Settings()
    pids = server.pids() if server is not None else ()
    return clips.run(url, out, settings=settings, server_pids=pids, say=log)["summary"]


def run_all(args, out: Path, photos: list[bytes], registry: Registry) -> dict:
    """The server's memory first (while it has served nothing but the warm-up), then
    model by model: Triton's sweep of its ensemble, then the post's design's, the
    fairer old design's, then the limit, so the figures compared with each other are
    taken minutes apart, not a quarter of an hour (a shared 2-core VM drifts). Only one
    side runs at a time: an idle Triton or Flask server takes no CPU. Returns the rows
    by raw.json's keys (``triton``, ``wire``, ``post``, ``old`` (the fairer old
    design), ``limit``, ``paired``, ``memory``, ``clips``: bench.clips' summary) and
    what was measured (``ensembles``, ``served``, ``detector_settings``: see
    ``bench.served``)."""
    triton, post, old, lim, paired = [], [], [], [], []
    options = {"workdir": out, "target": args.target, "gpus": args.gpus,
               "load": tuple(args.ensembles or ())}  # fmt: skip
    with served.triton(args.url, registry, log, **options) as (url, server):
        ensembles, described, settings = learn_ensembles(args, url, registry)
        log(f"ensembles: {', '.join(ensembles)}")
        perf_analyzer.ensure_perf_analyzer()
        mem = run_memory(args, server, url, ensembles, photos)
        for ensemble in ensembles:
            triton += run_triton(args, url, ensemble, out, photos)
            name = served.baseline(described, ensemble)
            if name is not None:
                detector = baseline_detector(registry, ensemble, name)
                pipeline = Pipeline(detector, device=args.device)
                paired.append(run_paired(args, url, ensemble, pipeline, photos))
                post += run_old_design(args, detector, photos, registry.source, POST)
                old += run_old_design(args, detector, photos, registry.source, FAIR)
                lim += run_limit(args, pipeline)
                del pipeline
        wire = triton_wire_bytes(url, photos, ensembles)
        singles = [e for e in ensembles if served.baseline(described, e) is not None]
        log(f"size sweep: {', '.join(singles)}")
        sweep.run_sweep(url, singles, out, quick=args.quick, say=log)
        clip_summary = run_clips(args, url, server, out, ensembles)
    return {"triton": triton, "wire": wire, "post": post, "old": old, "limit": lim,
            "paired": paired, "memory": mem, "clips": clip_summary, "ensembles": ensembles,
            "served": described, "detector_settings": settings}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = command_parser("python -m bench", __doc__, out="bench")
    ap.add_argument("--quick", action="store_true", help="short runs, for CI")
    ap.add_argument(
        "--target", choices=["cpu", "gpu"], default="cpu",
        help="repository target of the embedded Triton; gpu also runs the old design's and"
        " the limit's models on GPU 0",
    )  # fmt: skip
    ap.add_argument("--gpus", default="0", help="GPU ids for --target gpu (default 0)")
    ap.add_argument(
        "--photo-format", choices=FORMATS, default="jpeg",
        help="photos sent: scikit-image's as JPEG (default) or the bundled PNGs",
    )  # fmt: skip
    ap.add_argument("--concurrency", type=int, nargs="+", default=list(perf_analyzer.CONCURRENCIES))
    ap.add_argument(
        "--ensembles", nargs="+",
        help="measure only these (default: every detection ensemble the server serves)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    args.gpus = configgen.parse_gpus(args.gpus)
    args.device = "gpu" if args.target == "gpu" else "cpu"
    try:
        registry = load_models(args.models)
    except ModelsFileError as e:
        ap.error(str(e))

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    photos = list(photo_files(args.photo_format))
    started = time.monotonic()

    run = run_all(args, out, photos, registry)
    for name, key in CSV_ROWS.items():
        write_csv(out / name, run[key])
    meta = {
        "quick": args.quick,
        "url": args.url or f"embedded {args.target} target",
        "embedded": args.url is None,
        "target": args.target,
        "gpus": list(args.gpus),
        "photo_format": args.photo_format,
        "machine": machine(args.target),
        "concurrency": args.concurrency,
        "ensembles": run["ensembles"],
        "models_file": str(registry.source),
        "served": run["served"],
        "detector_settings": run["detector_settings"],
        "seconds": round(time.monotonic() - started),
    }
    keys = ("triton", "wire", "post", "old", "limit", "paired", "memory", "clips")
    raw = {"meta": meta, **{k: run[k] for k in keys}}
    (out / "raw.json").write_text(json.dumps(raw, indent=1))
    report = write_report(out, raw)
    log(f"report: {report} ({meta['seconds']} s)")
    problems = check(out)
    for problem in problems:
        log(f"check: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
