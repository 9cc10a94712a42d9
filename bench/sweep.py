"""Size sweep: how latency and throughput grow with the photo, per detector.

``python -m bench.sweep --url 127.0.0.1:8001 --out results/sweep [--quick]`` measures a
running server: photos of about 0.3, 1, 3, 12 and 24 megapixels (``bench.photos``:
scikit-image's photos scaled up with grain added, JPEG quality 90), sent to each
single-detector ensemble the server serves (``--all`` adds ``detect_all``;
``--ensembles`` picks some), in each of the :data:`MODES`:

- ``full``: the request as today, the annotated image comes back at the photo's size;
- ``display``: ``contract.ANNOTATED_MAX_SIDE`` = 1280 sent with the photo, so the
  server draws on a copy scaled to fit 1280 pixels and may decode a large JPEG at a
  reduced size (the detections stay in the photo's pixels either way).

Per ensemble, size and mode, one after the other so that they never share the CPU:

1. concurrency 1: ``warmup`` requests, then ``requests`` more, one at a time, over the
   photos; mean and p50 latency (ms, from sending the request to its reply, raw
   ``tritonclient`` gRPC, no retry). Triton's statistics are read before and after
   these requests; the difference gives, per step model of the ensemble (the steps the
   server's config names), its runs and mean queue and compute times per run, and its
   time per request (:func:`step_breakdown`). Nothing else may use the server meanwhile.
2. concurrency ``concurrency`` (8): as many threads, each with its own gRPC client,
   send one photo after another for ``load_s`` seconds (closed loop); images/s
   answered, p50 and p99 latency, refused and failed requests.

Writes ``sweep.json`` (everything: :func:`markdown` and :func:`plot` redraw from it,
``--redraw DIR`` does), ``sweep.csv`` (one row per ensemble, size and mode),
``sweep.png`` and ``sweep.md`` into ``--out`` (default results/sweep/). ``--quick``:
two sizes (0.3 and 12 MP), 3 requests after 1 warm-up, 3 s of load.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench import machine, served
from bench.photos import JPEG_QUALITY, NOISE_SEED, NOISE_SIGMA, PHOTO_NAMES, sized_photos
from ensemble import contract

REPO = Path(__file__).resolve().parents[1]
SIZES_MP = (0.3, 1.0, 3.0, 12.0, 24.0)
QUICK_SIZES_MP = (0.3, 12.0)
DISPLAY_SIDE = 1280  # pixels: a screen's worth, what a UI shows the annotated image at
# The statistics' durations that make up a step's time, in the order Triton spends them.
STAT_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
TIMEOUT_S = 120.0  # per request: a 24 MP photo at c=8 on 2 cores takes seconds
FILES = ("sweep.json", "sweep.csv", "sweep.png", "sweep.md")


@dataclass(frozen=True)
class Mode:
    """One way of asking: ``annotated_max_side`` pixels sent as
    ``contract.ANNOTATED_MAX_SIDE``, or None to send no such input (today's request)."""

    name: str
    annotated_max_side: int | None


MODES = (Mode("full", None), Mode("display", DISPLAY_SIDE))


@dataclass(frozen=True)
class Settings:
    """How much is measured per ensemble, size and mode."""

    requests: int = 10  # at concurrency 1, after the warm-up
    warmup: int = 2
    concurrency: int = 8
    load_s: float = 10.0  # seconds of closed-loop load at ``concurrency``


QUICK = Settings(requests=3, warmup=1, load_s=3.0)


def log(message: str) -> None:
    print(f"[sweep] {message}", flush=True)


# --- pure parts ----------------------------------------------------------------------


def _ns(stats: Mapping, phase: str) -> tuple[int, int]:
    """``(count, ns)`` of one duration of a model's ``inference_stats`` (JSON: 64-bit
    numbers as strings, a duration that never counted as ``{}``)."""
    d = stats.get("inference_stats", {}).get(phase, {})
    return int(d.get("count", 0)), int(d.get("ns", 0))


def _by_model(statistics: Mapping) -> dict[str, dict[str, tuple[int, int]]]:
    """``{model: {phase: (count, ns)}}`` from a ``get_inference_statistics`` reply (as
    JSON), each model's versions summed."""
    models: dict[str, dict[str, tuple[int, int]]] = {}
    for stats in statistics.get("model_stats", []):
        phases = models.setdefault(stats["name"], {})
        for phase in ("success", *STAT_PHASES):
            count, ns = _ns(stats, phase)
            before = phases.get(phase, (0, 0))
            phases[phase] = (before[0] + count, before[1] + ns)
    return models


def step_breakdown(
    before: Mapping, after: Mapping, steps: Sequence[str], requests: int
) -> dict[str, dict]:
    """Where ``requests`` requests spent their time on the server, per step model, from
    Triton's cumulative statistics (``get_inference_statistics`` as JSON, every model)
    read ``before`` and ``after`` them.

    For each of ``steps`` (model names, in that order): ``runs`` (successful requests
    the step served in between), the mean ``queue_ms``, ``compute_input_ms``,
    ``compute_infer_ms`` and ``compute_output_ms`` per run, and ``per_request_ms``: all
    of those over the step's runs, divided by ``requests``. A step that did not run is
    left out. Times in milliseconds.
    """
    old, new = _by_model(before), _by_model(after)
    found: dict[str, dict] = {}
    for step in steps:
        if step not in new:
            continue
        runs = new[step]["success"][0] - old.get(step, {}).get("success", (0, 0))[0]
        if runs <= 0:
            continue
        row: dict = {"runs": runs}
        total_ns = 0
        for phase in STAT_PHASES:
            ns = new[step][phase][1] - old.get(step, {}).get(phase, (0, 0))[1]
            total_ns += ns
            row[f"{phase}_ms"] = ns / runs / 1e6
        row["per_request_ms"] = total_ns / requests / 1e6
        found[step] = row
    return found


def server_ms(before: Mapping, after: Mapping, model: str) -> float | None:
    """Mean time in ms that Triton took per successful request of ``model`` between
    two statistics replies (its ``success`` duration), None when none succeeded."""
    old, new = _by_model(before).get(model, {}), _by_model(after).get(model, {})
    count, ns = new.get("success", (0, 0))
    count0, ns0 = old.get("success", (0, 0))
    return (ns - ns0) / (count - count0) / 1e6 if count > count0 else None


def latency_summary(seconds: Sequence[float]) -> dict:
    """``n``, ``mean_ms``, ``p50_ms`` and ``p99_ms`` of latencies given in seconds."""
    if not seconds:
        return {"n": 0, "mean_ms": None, "p50_ms": None, "p99_ms": None}
    ms = np.asarray(seconds) * 1000.0
    return {
        "n": len(ms),
        "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of an encoded image from its header, None if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError):
        return None


# --- requests ------------------------------------------------------------------------


def request_inputs(photo: bytes, mode: Mode) -> list:
    """The request tensors for one photo in ``mode``: the photo, and the annotated
    image's longest side when the mode sets one."""
    import tritonclient.grpc as grpcclient

    from client.api import build_inputs

    inputs = build_inputs([photo])
    if mode.annotated_max_side is not None:
        name = contract.ANNOTATED_MAX_SIDE
        side = grpcclient.InferInput(name, [1, 1], contract.DTYPES[name])
        side.set_data_from_numpy(np.array([[mode.annotated_max_side]], dtype=np.int32))
        inputs.append(side)
    return inputs


def _annotated(reply) -> bytes:
    return bytes(reply.as_numpy(contract.ANNOTATED_IMAGE)[0, 0])


def measure_c1(
    url: str,
    ensemble: str,
    steps: Sequence[str],
    photos: Sequence[bytes],
    mode: Mode,
    settings: Settings,
) -> dict:
    """Concurrency 1 (see the module docstring): ``c1`` latencies, ``steps`` (per step
    model, :func:`step_breakdown`), ``server_ms`` (Triton's mean per request of the
    ensemble), and what came back: ``annotated`` (mean bytes, the size in pixels of
    the first photo's annotated image) and ``num_detections`` of the first photo."""
    import tritonclient.grpc as grpcclient

    from client import DetectorClient

    triton = grpcclient.InferenceServerClient(url)
    stats_client = DetectorClient(url)  # knows the statistics' API key, if any
    try:
        first = triton.infer(ensemble, request_inputs(photos[0], mode), client_timeout=TIMEOUT_S)
        for i in range(1, settings.warmup):
            photo = photos[i % len(photos)]
            triton.infer(ensemble, request_inputs(photo, mode), client_timeout=TIMEOUT_S)
        before = stats_client.inference_statistics()
        seconds, returned = [], []
        for i in range(settings.requests):
            inputs = request_inputs(photos[i % len(photos)], mode)
            start = time.perf_counter()
            reply = triton.infer(ensemble, inputs, client_timeout=TIMEOUT_S)
            seconds.append(time.perf_counter() - start)
            returned.append(len(_annotated(reply)))
        after = stats_client.inference_statistics()
    finally:
        triton.close()
        stats_client.close()
    return {
        "c1": latency_summary(seconds),
        "server_ms": server_ms(before, after, ensemble),
        "steps": step_breakdown(before, after, steps, settings.requests),
        "annotated": {
            "bytes_mean": float(np.mean(returned)) if returned else None,
            "size": image_size(_annotated(first)),
        },
        "num_detections": int(first.as_numpy(contract.NUM_DETECTIONS)[0, 0]),
    }


def measure_load(
    url: str, ensemble: str, photos: Sequence[bytes], mode: Mode, settings: Settings
) -> dict:
    """``settings.concurrency`` threads in a closed loop for ``settings.load_s``
    seconds: ``images_per_s`` answered, latencies of the answered (ms), ``answered``,
    ``refused`` (busy), ``failed`` (with the first line of each distinct reason)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from client.errors import first_line, is_busy

    lock = threading.Lock()
    seconds: list[float] = []
    counts = {"answered": 0, "refused": 0, "failed": 0}
    reasons: dict[str, int] = {}
    t0 = time.perf_counter()
    deadline = t0 + settings.load_s

    def loop(index: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        try:
            n = index
            while time.perf_counter() < deadline:
                inputs = request_inputs(photos[n % len(photos)], mode)
                n += 1
                start = time.perf_counter()
                try:
                    client.infer(ensemble, inputs, client_timeout=TIMEOUT_S)
                except InferenceServerException as e:
                    with lock:
                        result = "refused" if is_busy(e) else "failed"
                        counts[result] += 1
                        if result == "failed":
                            reason = first_line(str(e))
                            reasons[reason] = reasons.get(reason, 0) + 1
                    time.sleep(0.05)  # pacing: a failing server is not a busy loop's
                    continue
                with lock:
                    counts["answered"] += 1
                    seconds.append(time.perf_counter() - start)
        finally:
            client.close()

    threads = [
        threading.Thread(target=loop, args=(i,), daemon=True) for i in range(settings.concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:  # each ends after its last request, at most TIMEOUT_S late
        thread.join(settings.load_s + TIMEOUT_S + 30)
    wall = time.perf_counter() - t0
    return {
        "concurrency": settings.concurrency,
        "duration_s": wall,
        "images_per_s": counts["answered"] / wall,
        **latency_summary(seconds),
        **counts,
        "failures": reasons,
    }


# --- the run -------------------------------------------------------------------------


def default_ensembles(url: str, include_all: bool = False) -> list[str]:
    """The single-detector ensembles ready on the server at ``url`` (and ``detect_all``
    too with ``include_all``), in the server's order."""
    ready = served.ready_ensembles(url)
    described, _ = served.describe(url, ready)
    return [
        e for e in ready
        if served.baseline(described, e) is not None or (include_all and e == contract.DETECT_ALL)
    ]  # fmt: skip


def photo_summary(megapixels: float, photos: Sequence[bytes]) -> dict:
    """What was sent at one size: each photo's pixels, bytes per photo, bytes/pixel."""
    sizes = [image_size(p) for p in photos]
    pixels = [w * h for w, h in sizes]
    return {
        "target_mp": megapixels,
        "sizes": [list(s) for s in sizes],
        "megapixels": float(np.mean(pixels)) / 1e6,
        "bytes": [len(p) for p in photos],
        "bytes_mean": float(np.mean([len(p) for p in photos])),
        "bytes_per_pixel": float(sum(len(p) for p in photos) / sum(pixels)),
    }


def run_sweep(
    url: str,
    ensembles: Sequence[str] | None,
    out_dir: Path,
    quick: bool = False,
    *,
    sizes_mp: Sequence[float] | None = None,
    modes: Sequence[Mode] = MODES,
    settings: Settings | None = None,
    include_all: bool = False,
    say: Callable[[str], None] = log,
) -> dict:
    """Sweep the server at gRPC ``url`` (see the module docstring) and write its files
    into ``out_dir``; returns what sweep.json holds: ``meta``, ``photos`` (one entry
    per size, :func:`photo_summary`) and ``rows`` (one per ensemble, size and mode).

    ``ensembles``: default every single-detector one the server has ready (and
    ``detect_all`` with ``include_all``). ``quick`` picks :data:`QUICK_SIZES_MP` and
    :data:`QUICK` unless ``sizes_mp`` or ``settings`` are given. A request that fails
    in the warm-up (a server that refuses a mode's input, say) leaves that row with
    its ``error`` and no figures; the sweep goes on.
    """
    from tritonclient.utils import InferenceServerException

    from client import DetectorClient
    from client.errors import first_line

    sizes_mp = list(sizes_mp or (QUICK_SIZES_MP if quick else SIZES_MP))
    settings = settings or (QUICK if quick else Settings())
    ensembles = list(ensembles or default_ensembles(url, include_all))
    if not ensembles:
        raise RuntimeError(f"the server at {url} has no detection ensemble ready")
    described, _ = served.describe(url, ensembles)
    with DetectorClient(url) as client:
        steps = {e: list(client.model_info(e).steps) for e in ensembles}
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "meta": {
            "url": url,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": machine(),
            "quick": quick,
            "ensembles": ensembles,
            "served": described,
            "steps": steps,
            "sizes_mp": sizes_mp,
            "modes": [asdict(m) for m in modes],
            "settings": asdict(settings),
            "photos": {
                "names": list(PHOTO_NAMES),
                "noise_sigma": NOISE_SIGMA,
                "noise_seed": NOISE_SEED,
                "jpeg_quality": JPEG_QUALITY,
            },
        },
        "photos": [],
        "rows": [],
    }
    for megapixels in sizes_mp:
        start = time.perf_counter()
        photos = sized_photos(megapixels)
        summary = photo_summary(megapixels, photos)
        result["photos"].append(summary)
        say(
            f"{megapixels:g} MP: {len(photos)} photos, {summary['bytes_mean'] / 1e3:.0f} kB "
            f"each on average ({summary['bytes_per_pixel']:.2f} bytes/pixel), "
            f"{time.perf_counter() - start:.1f} s to make or read"
        )
        for ensemble in ensembles:
            for mode in modes:
                row: dict = {
                    "ensemble": ensemble,
                    "target_mp": megapixels,
                    "mode": mode.name,
                    "annotated_max_side": mode.annotated_max_side,
                    "error": None,
                }
                try:
                    row.update(measure_c1(url, ensemble, steps[ensemble], photos, mode, settings))
                    row["c8"] = measure_load(url, ensemble, photos, mode, settings)
                except InferenceServerException as e:
                    row["error"] = first_line(str(e))
                result["rows"].append(row)
                say(row_line(row))
                write_json(result, out_dir)  # what was measured so far survives a crash
    write_outputs(result, out_dir)
    return result


def row_line(row: Mapping) -> str:
    """One log line for a measured row."""
    head = f"{row['ensemble']} {row['target_mp']:g} MP {row['mode']}"
    if row.get("error"):
        return f"{head}: failed: {row['error']}"
    c1, c8 = row["c1"], row["c8"]
    return (
        f"{head}: c=1 mean {c1['mean_ms']:.0f} ms (p50 {c1['p50_ms']:.0f}); "
        f"c={c8['concurrency']} {c8['images_per_s']:.2f} images/s, p99 {_num(c8['p99_ms'])} ms"
        + (f", {c8['failed']} failed" if c8["failed"] else "")
    )


# --- outputs -------------------------------------------------------------------------


def write_json(result: Mapping, out_dir: Path) -> Path:
    path = out_dir / "sweep.json"
    path.write_text(json.dumps(result, indent=1))
    return path


def write_outputs(result: Mapping, out_dir: Path) -> list[Path]:
    """sweep.json, sweep.csv, sweep.png and sweep.md of ``result`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(result, out_dir)
    write_csv(result, out_dir / "sweep.csv")
    plot(result, out_dir / "sweep.png")
    (out_dir / "sweep.md").write_text(markdown(result) + "\n")
    return [out_dir / name for name in FILES]


def csv_rows(result: Mapping) -> list[dict]:
    """One flat row per ensemble, size and mode; ``step <name> ms`` columns hold each
    step's time per request at c=1 (empty for steps of other ensembles)."""
    photos = {p["target_mp"]: p for p in result["photos"]}
    rows = []
    for r in result["rows"]:
        p = photos.get(r["target_mp"], {})
        c1, c8 = r.get("c1", {}), r.get("c8", {})
        row = {
            "ensemble": r["ensemble"],
            "mode": r["mode"],
            "annotated_max_side": r["annotated_max_side"] or "",
            "target_mp": r["target_mp"],
            "megapixels": p.get("megapixels"),
            "photo_bytes_mean": p.get("bytes_mean"),
            "c1_n": c1.get("n"),
            "c1_mean_ms": c1.get("mean_ms"),
            "c1_p50_ms": c1.get("p50_ms"),
            "server_ms": r.get("server_ms"),
            "c8_images_per_s": c8.get("images_per_s"),
            "c8_p50_ms": c8.get("p50_ms"),
            "c8_p99_ms": c8.get("p99_ms"),
            "c8_answered": c8.get("answered"),
            "c8_refused": c8.get("refused"),
            "c8_failed": c8.get("failed"),
            "annotated_bytes_mean": r.get("annotated", {}).get("bytes_mean"),
            "error": r.get("error") or "",
        }
        for step, s in r.get("steps", {}).items():
            row[f"step {step} ms"] = s["per_request_ms"]
        rows.append(row)
    return rows


def write_csv(result: Mapping, path: Path) -> None:
    rows = csv_rows(result)
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)


def _row(result: Mapping, ensemble: str, megapixels: float, mode: str) -> dict | None:
    for r in result["rows"]:
        if (r["ensemble"], r["target_mp"], r["mode"]) == (ensemble, megapixels, mode):
            return r
    return None


def _measured(row: Mapping | None) -> bool:
    return row is not None and not row.get("error") and "c1" in row


def plot(result: Mapping, path: Path) -> None:
    """Two panels over megapixels (log scale): c=1 mean latency (ms, log scale) and
    c=8 images/s, a colour per ensemble and a line style per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    meta = result["meta"]
    mp = {p["target_mp"]: p["megapixels"] for p in result["photos"]}
    styles = ("-", "--", ":", "-.")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for i, ensemble in enumerate(meta["ensembles"]):
        color = f"C{i}"
        for k, mode in enumerate(meta["modes"]):
            rows = [(mp[s], _row(result, ensemble, s, mode["name"])) for s in meta["sizes_mp"]]
            rows = [(x, r) for x, r in rows if _measured(r)]
            if not rows:
                continue
            xs = [x for x, _ in rows]
            label = f"{ensemble}, {mode['name']}"
            style = dict(color=color, linestyle=styles[k % len(styles)], marker="o", label=label)
            left.plot(xs, [r["c1"]["mean_ms"] for _, r in rows], **style)
            right.plot(xs, [r["c8"]["images_per_s"] for _, r in rows], **style)
    concurrency = meta["settings"]["concurrency"]
    for ax, ylabel, title in (
        (left, "mean latency, ms (log)", "concurrency 1"),
        (right, "images/s", f"concurrency {concurrency}"),
    ):
        ax.set_xscale("log")
        ax.set_xlabel("photo size, megapixels (log)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    for ax in (left, right):  # the sizes themselves as ticks, not powers of ten
        ax.set_xticks(sorted(mp.values()), [_mp(round(x, 1)) for x in sorted(mp.values())])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    left.set_yscale("log")
    left.yaxis.set_major_formatter(matplotlib.ticker.LogFormatter())
    left.yaxis.set_minor_formatter(matplotlib.ticker.LogFormatter(minor_thresholds=(2, 0.5)))
    right.set_ylim(bottom=0)
    right.legend(fontsize=8)
    fig.suptitle(f"Size sweep: {meta['machine']}, {meta['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _num(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _mp(value: float) -> str:
    return f"{value:g}"


def markdown(result: Mapping) -> str:
    """The sweep as a report section (Markdown): the photos, a table per ensemble with
    a row per size and both modes side by side, the per-step breakdown at the largest
    size, and a line per ensemble on what grows with the pixels."""
    meta = result["meta"]
    settings = meta["settings"]
    modes = meta["modes"]
    photo_meta = meta["photos"]
    mode_words = "; ".join(
        f"**{m['name']}**: "
        + (
            "the annotated image at the photo's own size"
            if m["annotated_max_side"] is None
            else f"{contract.ANNOTATED_MAX_SIDE} = {m['annotated_max_side']}"
        )
        for m in modes
    )
    c = settings["concurrency"]
    lines = [
        "## Photo size sweep",
        "",
        f"{len(photo_meta['names'])} photos ({', '.join(photo_meta['names'])}) scaled to each "
        f"size (bicubic, aspect kept), grain of sigma {photo_meta['noise_sigma']:g} grey "
        f"levels, JPEG quality {photo_meta['jpeg_quality']}. Modes: {mode_words}. c=1: mean / "
        f"p50 of {settings['requests']} requests after {settings['warmup']} warm-up; "
        f"c={c}: {settings['load_s']:g} s closed loop. Measured {meta['date']} on "
        f"{meta['machine']}.",
        "",
        "| MP | pixels (mean) | kB per photo | bytes/pixel |",
        "|---|---|---|---|",
    ]
    for p in result["photos"]:
        lines.append(
            f"| {_mp(p['target_mp'])} | {p['megapixels']:.2f} MP | {p['bytes_mean'] / 1e3:.0f} "
            f"| {p['bytes_per_pixel']:.2f} |"
        )
    notes: list[str] = []
    for ensemble in meta["ensembles"]:
        title = meta.get("served", {}).get(ensemble, {}).get("title", ensemble)
        header = "| MP |" + "".join(
            f" {m['name']}: c=1 mean / p50 ms | {m['name']}: c={c} images/s (p99 ms) "
            f"| {m['name']}: kB back |"
            for m in modes
        )
        lines += ["", f"### {ensemble} ({title})", "", header,
                  "|---|" + "---|---|---|" * len(modes)]  # fmt: skip
        for megapixels in meta["sizes_mp"]:
            cells = [_mp(megapixels)]
            for m in modes:
                row = _row(result, ensemble, megapixels, m["name"])
                if not _measured(row):
                    cells += ["–", "–", "–"]
                    if row is not None and row.get("error"):
                        notes.append(
                            f"{ensemble}, {_mp(megapixels)} MP, {m['name']}: {row['error']}"
                        )
                    continue
                c1, c8 = row["c1"], row["c8"]
                back = row.get("annotated", {}).get("bytes_mean")
                cells += [
                    f"{_num(c1['mean_ms'])} / {_num(c1['p50_ms'])}",
                    f"{c8['images_per_s']:.2f} ({_num(c8['p99_ms'])})",
                    _num(None if back is None else back / 1e3),
                ]
                notes += _row_notes(ensemble, megapixels, m, row)
            lines.append("| " + " | ".join(cells) + " |")
            notes += _detections_note(result, ensemble, megapixels)
        lines += [""] + _breakdown(result, ensemble)
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def _row_notes(ensemble: str, megapixels: float, mode: Mapping, row: Mapping) -> list[str]:
    """What a reader must know about one measured row: failed or refused requests
    under load, an annotated image larger than the mode asked for."""
    notes = []
    where = f"{ensemble}, {_mp(megapixels)} MP, {mode['name']}"
    c8 = row["c8"]
    if c8["failed"] or c8["refused"]:
        notes.append(f"{where}: under load {c8['failed']} failed, {c8['refused']} refused")
    side = mode["annotated_max_side"]
    size = row.get("annotated", {}).get("size")
    if side is not None and size is not None and max(size) > side:
        notes.append(
            f"{where}: the annotated image came back {size[0]}x{size[1]}, larger than the "
            f"{side} asked for: the server ignores {contract.ANNOTATED_MAX_SIDE}"
        )
    return notes


def _detections_note(result: Mapping, ensemble: str, megapixels: float) -> list[str]:
    """A note when the modes found a different number of objects in the same photo
    (the first one): what a mode changes in the request must not change the results
    beyond a near-threshold detection or two."""
    found = {}
    for m in result["meta"]["modes"]:
        row = _row(result, ensemble, megapixels, m["name"])
        if _measured(row) and row.get("num_detections") is not None:
            found[m["name"]] = row["num_detections"]
    if len(set(found.values())) < 2:
        return []
    counts = ", ".join(f"{name} {n}" for name, n in found.items())
    return [f"{ensemble}, {_mp(megapixels)} MP: detections in the first photo: {counts}"]


def _breakdown(result: Mapping, ensemble: str) -> list[str]:
    """The per-step table at the largest size measured, then what grows with pixels."""
    meta = result["meta"]
    modes = meta["modes"]
    sizes = [s for s in meta["sizes_mp"] if any(
        _measured(_row(result, ensemble, s, m["name"])) for m in modes)]  # fmt: skip
    if not sizes:
        return []
    largest = max(sizes)
    rows = {m["name"]: _row(result, ensemble, largest, m["name"]) for m in modes}
    steps: list[str] = []
    for row in rows.values():
        if _measured(row):
            steps += [s for s in row["steps"] if s not in steps]
    lines = [
        f"Where the time goes at {_mp(largest)} MP, c=1: each step's queue + compute per "
        "request (ms), from Triton's statistics; queue in brackets.",
        "",
        "| step |" + "".join(f" {m['name']} |" for m in modes),
        "|---|" + "---|" * len(modes),
    ]
    for step in steps:
        cells = []
        for m in modes:
            s = rows[m["name"]]["steps"].get(step) if _measured(rows[m["name"]]) else None
            if s is None:
                cells.append("–")
            else:
                queue = s["queue_ms"] * s["runs"] / max(1, _requests(rows[m["name"]]))
                cells.append(f"{s['per_request_ms']:.1f} ({queue:.1f})")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    server = [_num(r.get("server_ms"), 1) if _measured(r) else "–" for r in rows.values()]
    client = [_num(r["c1"]["mean_ms"], 1) if _measured(r) else "–" for r in rows.values()]
    lines += [
        "| server, whole request | " + " | ".join(server) + " |",
        "| client, request to reply | " + " | ".join(client) + " |",
    ]
    growth = grows_with_pixels(result, ensemble)
    if growth:
        lines += ["", growth]
    return lines


def _requests(row: Mapping) -> int:
    return int(row["c1"]["n"])


def grows_with_pixels(result: Mapping, ensemble: str, mode: str | None = None) -> str:
    """One line: each step's time per request at the smallest and the largest size
    measured in ``mode`` (default the first mode), the step that grew most first."""
    meta = result["meta"]
    mode = mode or meta["modes"][0]["name"]
    measured = [
        (s, _row(result, ensemble, s, mode))
        for s in meta["sizes_mp"] if _measured(_row(result, ensemble, s, mode))
    ]  # fmt: skip
    if len(measured) < 2:
        return ""
    (small, first), (large, last) = min(measured), max(measured)
    pairs = []
    for step, s in last["steps"].items():
        before = first["steps"].get(step)
        if before is not None:
            pairs.append((step, before["per_request_ms"], s["per_request_ms"]))
    pairs.sort(key=lambda p: p[2] - p[1], reverse=True)
    parts = [f"{step} {a:.1f} → {b:.1f} ms" for step, a, b in pairs]
    a, b = first["c1"]["mean_ms"], last["c1"]["mean_ms"]
    parts.append(f"whole request {a:.0f} → {b:.0f} ms")
    return (
        f"What grows with the pixels ({mode}, {_mp(small)} → {_mp(large)} MP, per request): "
        + ", ".join(parts)
        + "."
    )


def redraw(out_dir: Path) -> list[Path]:
    """sweep.csv, sweep.png and sweep.md again from ``out_dir``'s sweep.json."""
    result = json.loads((out_dir / "sweep.json").read_text())
    return write_outputs(result, out_dir)


def main(argv: Iterable[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.sweep", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    ap.add_argument("--url", default="127.0.0.1:8001", help="gRPC host:port of a running Triton")
    ap.add_argument(
        "--out", type=Path, default=REPO / "results" / "sweep", help="default: results/sweep/"
    )
    ap.add_argument("--quick", action="store_true", help="2 sizes, 3 requests, 3 s of load")
    ap.add_argument("--ensembles", nargs="+", help="default: every single-detector one")
    ap.add_argument("--all", action="store_true", help=f"also {contract.DETECT_ALL}")
    ap.add_argument("--sizes", nargs="+", type=float, metavar="MP", help="photo sizes")
    ap.add_argument("--requests", type=int, help="c=1 requests after the warm-up")
    ap.add_argument("--load-seconds", type=float, help="seconds of load at --concurrency")
    ap.add_argument("--concurrency", type=int, help="client threads of the load (default 8)")
    ap.add_argument("--redraw", action="store_true", help="only redraw --out from its sweep.json")
    args = ap.parse_args(None if argv is None else list(argv))
    if args.redraw:
        for path in redraw(args.out):
            print(path)
        return 0
    base = QUICK if args.quick else Settings()
    settings = Settings(
        requests=args.requests or base.requests,
        warmup=base.warmup,
        concurrency=args.concurrency or base.concurrency,
        load_s=args.load_seconds or base.load_s,
    )
    result = run_sweep(
        args.url, args.ensembles, args.out, args.quick,
        sizes_mp=args.sizes, settings=settings, include_all=args.all,
    )  # fmt: skip
    failed = [r for r in result["rows"] if r.get("error")]
    log(
        f"wrote {', '.join(FILES)} to {args.out}"
        + (f"; {len(failed)} rows failed" if failed else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
