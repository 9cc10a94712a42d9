"""One command for every benchmark: `python -m bench [--quick] [--url HOST:PORT]`.

Runs, one after the other so they never share the CPU:
1. perf_analyzer (NVIDIA's) over gRPC against every ensemble, concurrency 1..16;
2. the old design (one Flask server per model, arrays as base64 JSON) at the same
   concurrencies with the same photos;
3. the limit: the same pipeline in one process with no server, batch 1 and best;
then writes CSV files, PNG plots and a Markdown report under ``results/bench/``.

With ``--url`` the Triton part measures that server (a GPU host, say) instead of
starting the embedded one; the old design and the limit still run here.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
import time
from pathlib import Path

from bench import loadgen, perf_analyzer
from bench.limit import limit
from bench.photos import photo_paths
from ensemble import contract

REPO = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and not isinstance(row[k], dict | list)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def machine(target: str) -> str:
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


def triton_wire_bytes(url: str, photos: list[bytes]) -> dict[str, float]:
    """Mean tensor payload per request and ensemble: the image file in, detections,
    count and annotated JPEG(s) out (gRPC/HTTP2 framing not counted)."""
    from client import DetectorClient

    sizes = {}
    with DetectorClient(url) as client:
        for ensemble in contract.ENSEMBLES:
            total = 0
            for photo in photos:
                (result,) = client.detect([photo], model=ensemble)
                outputs = [result, *result.per_framework.values()]
                total += len(photo) + sum(
                    len(r.annotated_jpeg) + contract.MAX_DETECTIONS * 6 * 4 + 4 for r in outputs
                )
            sizes[ensemble] = total / len(photos)
    return sizes


def run_triton(args, out: Path, photos: list[bytes]) -> tuple[list[dict], dict]:
    from ensemble.server import Ports, TritonServer, free_port, prepare_repository

    server = None
    url = args.url
    if url is None:
        repository = prepare_repository(args.target, out=out / "repository", gpus=args.gpus)
        ports = Ports(free_port(), free_port(), free_port())
        server = TritonServer(repository, ports=ports, log_path=out / "tritonserver.log")
        server.start()
        server.wait_ready()
        url = server.grpc_url
        log(f"started Triton at {url}")
    try:
        perf_analyzer.ensure_perf_analyzer()
        rows = []
        for ensemble in args.ensembles:
            log(f"perf_analyzer: {ensemble} at concurrency {list(args.concurrency)}")
            rows += perf_analyzer.run_sweep(
                ensemble,
                url,
                args.concurrency,
                out_dir=out / "perf_analyzer" / ensemble,
                quick=args.quick,
                photos=photos,
            )
        return rows, triton_wire_bytes(url, photos)
    finally:
        if server is not None:
            server.stop()


def run_old_design(args, models: list[str]) -> list[dict]:
    from ensemble.server import free_port

    rows = []
    duration = 4.0 if args.quick else 15.0
    for model in models:
        with loadgen.old_design_server(model, free_port(), device=args.device) as url:
            for c in args.concurrency:
                log(f"old design: {model} at concurrency {c}")
                row = loadgen.run(url, photo_paths(), c, duration_s=duration)
                rows.append({"model": model, **row})
    return rows


def run_limit(args, models: list[str]) -> list[dict]:
    rows = []
    for model in models:
        log(f"limit: {model} in process, batch 1, 2, 4, 8")
        result = limit(model, images=24 if args.quick else 120, device=args.device)
        for run in result["runs"]:
            rows.append({"model": model, **run, "best": run is result["best"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs, for CI")
    ap.add_argument("--url", help="measure this Triton (gRPC host:port) instead of starting one")
    ap.add_argument(
        "--target",
        choices=["cpu", "gpu"],
        default="cpu",
        help="repository target of the embedded Triton; gpu also runs the old design's and"
        " the limit's models on GPU 0",
    )
    ap.add_argument("--gpus", default="0", help="GPU ids for --target gpu (default 0)")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench")
    ap.add_argument("--concurrency", type=int, nargs="+", default=list(perf_analyzer.CONCURRENCIES))
    ap.add_argument("--ensembles", nargs="+", default=list(contract.ENSEMBLES))
    args = ap.parse_args(argv)
    args.gpus = tuple(int(g) for g in args.gpus.split(",") if g.strip())
    args.device = "gpu" if args.target == "gpu" else "cpu"

    from bench.report import write_report

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    photos = [p.read_bytes() for p in photo_paths()]
    models = [f.detector for f in contract.FRAMEWORKS if f.ensemble in args.ensembles]
    started = time.monotonic()

    triton, wire = run_triton(args, out, photos)
    write_csv(out / "triton.csv", triton)
    old = run_old_design(args, models)
    write_csv(out / "old_design.csv", old)
    lim = run_limit(args, models)
    write_csv(out / "limit.csv", lim)
    meta = {
        "quick": args.quick,
        "url": args.url or f"embedded {args.target} target",
        "target": args.target,
        "machine": machine(args.target),
        "concurrency": args.concurrency,
        "seconds": round(time.monotonic() - started),
    }
    (out / "raw.json").write_text(
        json.dumps(
            {"meta": meta, "triton": triton, "wire": wire, "old": old, "limit": lim}, indent=1
        )
    )
    report = write_report(out, triton, wire, old, lim, meta)
    log(f"report: {report} ({meta['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
