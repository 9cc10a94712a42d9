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
   photos; mean and p50 latency (raw ``tritonclient`` gRPC, no retry). Triton's
   statistics read before and after these requests give, per step model of the
   ensemble, its runs, mean queue and compute times per run, and its time per request
   (:func:`step_breakdown`). Nothing else may use the server meanwhile.
2. ``bench.load``'s closed loop at ``concurrency`` (8) for ``load_s`` seconds: images/s
   answered, p50 and p99 latency, refused and failed requests.

Writes ``sweep.json`` (everything: :func:`markdown` and :func:`plot` redraw from it,
``--redraw`` does), ``sweep.csv`` (one row per ensemble, size and mode), ``sweep.png``
and ``sweep.md`` into ``--out`` (default results/sweep/). ``--quick``: two sizes (0.3
and 12 MP), 3 requests after 1 warm-up, 3 s of load.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from bench import REPO, logger, machine, served, shown, table, write_csv
from bench.load import Load, grpc, latency_summary
from bench.photos import JPEG_QUALITY, NOISE_SEED, NOISE_SIGMA, PHOTO_NAMES, sized_photos
from client.statistics import STEP_PHASES, between, read_statistics
from ensemble import contract

SIZES_MP = (0.3, 1.0, 3.0, 12.0, 24.0)
QUICK_SIZES_MP = (0.3, 12.0)
DISPLAY_SIDE = 1280  # pixels: a screen's worth, what a UI shows the annotated image at
TIMEOUT_S = 120.0  # per request: a 24 MP photo at c=8 on 2 cores takes seconds
FILES = ("sweep.json", "sweep.csv", "sweep.png", "sweep.md")
log = logger("sweep")


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


# --- pure parts ----------------------------------------------------------------------


def step_breakdown(
    before: Mapping, after: Mapping, steps: Sequence[str], requests: int
) -> dict[str, dict]:
    """Where ``requests`` requests spent their time on the server, per step model, from
    two ``get_inference_statistics`` replies (JSON, every model) read ``before`` and
    ``after`` them (``client.statistics``).

    For each of ``steps`` (model names, in that order) that ran in between: ``runs``
    (its successful requests), the mean ``queue_ms``, ``compute_input_ms``,
    ``compute_infer_ms`` and ``compute_output_ms`` per run, and ``per_request_ms``: all
    of those over the step's runs, divided by ``requests``. Times in milliseconds.
    """
    old, new = read_statistics(before), read_statistics(after)
    found: dict[str, dict] = {}
    for step in steps:
        done = between(old, new, step)
        runs = 0 if done is None else done.duration("success").count
        if runs > 0:
            ns = {phase: done.duration(phase).ns for phase in STEP_PHASES}
            found[step] = {"runs": runs, **{f"{p}_ms": n / runs / 1e6 for p, n in ns.items()},
                           "per_request_ms": sum(ns.values()) / requests / 1e6}  # fmt: skip
    return found


def server_ms(before: Mapping, after: Mapping, model: str) -> float | None:
    """Mean time in ms that Triton took per successful request of ``model`` between
    two statistics replies (its ``success`` duration), None when none succeeded."""
    done = between(read_statistics(before), read_statistics(after), model)
    return None if done is None else done.duration("success").mean_ms


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
    from client.payload import DetectOptions, build_inputs

    return build_inputs([photo], DetectOptions(annotated_max_side=mode.annotated_max_side))


def _annotated(reply) -> bytes:
    return bytes(reply.as_numpy(contract.ANNOTATED_IMAGE)[0, 0])


def measure_c1(url: str, ensemble: str, steps: Sequence[str], photos: Sequence[bytes],
               mode: Mode, settings: Settings) -> dict:  # fmt: skip
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
    """``bench.load`` at ``settings.concurrency`` for ``settings.load_s`` seconds:
    ``images_per_s`` answered, latencies of the answered (ms), ``answered``,
    ``refused`` (busy), ``failed`` (``failures``: the first line of each reason)."""
    connect = grpc(url, TIMEOUT_S, lambda photo: request_inputs(photo, mode))
    load = Load(connect, [ensemble], photos, settings.concurrency, duration_s=settings.load_s)
    figures = load.run().figures()
    return {"concurrency": settings.concurrency, "duration_s": figures.pop("seconds"), **figures}


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
    sent = [len(p) for p in photos]
    return {"target_mp": megapixels, "sizes": [list(s) for s in sizes],
            "megapixels": float(np.mean(pixels)) / 1e6, "bytes": sent,
            "bytes_mean": float(np.mean(sent)),
            "bytes_per_pixel": sum(sent) / sum(pixels)}  # fmt: skip


def run_sweep(
    url: str, ensembles: Sequence[str] | None, out_dir: Path, quick: bool = False, *,
    sizes_mp: Sequence[float] | None = None, settings: Settings | None = None,
    include_all: bool = False, say: Callable[[str], None] = log,
) -> dict:  # fmt: skip
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

    from client.errors import first_line

    sizes_mp = list(sizes_mp or (QUICK_SIZES_MP if quick else SIZES_MP))
    settings = settings or (QUICK if quick else Settings())
    ensembles = list(ensembles or default_ensembles(url, include_all))
    if not ensembles:
        raise RuntimeError(f"the server at {url} has no detection ensemble ready")
    described, _ = served.describe(url, ensembles)
    steps = {e: described[e]["steps"] for e in ensembles}
    out_dir.mkdir(parents=True, exist_ok=True)
    photo_meta = {
        "names": list(PHOTO_NAMES),
        "noise_sigma": NOISE_SIGMA,
        "noise_seed": NOISE_SEED,
        "jpeg_quality": JPEG_QUALITY,
    }
    meta = {
        "url": url,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "quick": quick,
        "ensembles": ensembles,
        "served": described,
        "steps": steps,
        "sizes_mp": sizes_mp,
        "modes": [asdict(m) for m in MODES],
        "settings": asdict(settings),
        "photos": photo_meta,
    }
    result: dict = {"meta": meta, "photos": [], "rows": []}  # fmt: skip
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
            for mode in MODES:
                row: dict = {"ensemble": ensemble, "target_mp": megapixels,
                             "mode": mode.name, "error": None,
                             "annotated_max_side": mode.annotated_max_side}  # fmt: skip
                try:
                    row.update(measure_c1(url, ensemble, steps[ensemble], photos, mode, settings))
                    row["c8"] = measure_load(url, ensemble, photos, mode, settings)
                except InferenceServerException as e:
                    row["error"] = first_line(str(e))
                result["rows"].append(row)
                say(row_line(row))
                # What was measured so far survives a crash.
                (out_dir / "sweep.json").write_text(json.dumps(result, indent=1))
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
        f"c={c8['concurrency']} {c8['images_per_s']:.2f} images/s, p99 {shown(c8['p99_ms'])} ms"
        + (f", {c8['failed']} failed" if c8["failed"] else "")
    )


# --- outputs -------------------------------------------------------------------------


def write_outputs(result: Mapping, out_dir: Path) -> list[Path]:
    """sweep.json, sweep.csv, sweep.png and sweep.md of ``result`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.json").write_text(json.dumps(result, indent=1))
    write_csv(out_dir / "sweep.csv", csv_rows(result))
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
            "ensemble": r["ensemble"], "mode": r["mode"],
            "annotated_max_side": r["annotated_max_side"] or "", "target_mp": r["target_mp"],
            "megapixels": p.get("megapixels"), "photo_bytes_mean": p.get("bytes_mean"),
            **{f"c1_{k}": c1.get(k) for k in ("n", "mean_ms", "p50_ms")},
            "server_ms": r.get("server_ms"),
            **{f"c8_{k}": c8.get(k) for k in ("images_per_s", "p50_ms", "p99_ms", "answered",
                                               "refused", "failed")},
            "annotated_bytes_mean": r.get("annotated", {}).get("bytes_mean"),
            "error": r.get("error") or "",
        }  # fmt: skip
        for step, s in r.get("steps", {}).items():
            row[f"step {step} ms"] = s["per_request_ms"]
        rows.append(row)
    return rows


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
        ax.set_xticks(sorted(mp.values()), [f"{round(x, 1):g}" for x in sorted(mp.values())])
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
        *table(("MP", "pixels (mean)", "kB per photo", "bytes/pixel"), [
            (f"{p['target_mp']:g}", f"{p['megapixels']:.2f} MP", f"{p['bytes_mean'] / 1e3:.0f}",
             f"{p['bytes_per_pixel']:.2f}") for p in result["photos"]
        ]),
    ]  # fmt: skip
    notes: list[str] = []
    for ensemble in meta["ensembles"]:
        title = meta.get("served", {}).get(ensemble, {}).get("title", ensemble)
        head = ["MP"] + [f"{m['name']}: {what}" for m in modes for what in (
            "c=1 mean / p50 ms", f"c={c} images/s (p99 ms)", "kB back")]  # fmt: skip
        rows = []
        for megapixels in meta["sizes_mp"]:
            cells = [f"{megapixels:g}"]
            for m in modes:
                row = _row(result, ensemble, megapixels, m["name"])
                if not _measured(row):
                    cells += ["–", "–", "–"]
                    if row is not None and row.get("error"):
                        notes.append(f"{ensemble}, {megapixels:g} MP, {m['name']}: {row['error']}")
                    continue
                c1, c8 = row["c1"], row["c8"]
                back = row.get("annotated", {}).get("bytes_mean")
                cells += [
                    f"{shown(c1['mean_ms'])} / {shown(c1['p50_ms'])}",
                    f"{c8['images_per_s']:.2f} ({shown(c8['p99_ms'])})",
                    shown(None if back is None else back / 1e3),
                ]
                notes += _row_notes(ensemble, megapixels, m, row)
            rows.append(cells)
            notes += _detections_note(result, ensemble, megapixels)
        lines += ["", f"### {ensemble} ({title})", "", *table(head, rows)]
        lines += [""] + _breakdown(result, ensemble)
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def _row_notes(ensemble: str, megapixels: float, mode: Mapping, row: Mapping) -> list[str]:
    """What a reader must know about one measured row: failed or refused requests
    under load, an annotated image larger than the mode asked for."""
    notes = []
    where = f"{ensemble}, {megapixels:g} MP, {mode['name']}"
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
    return [f"{ensemble}, {megapixels:g} MP: detections in the first photo: {counts}"]


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
    table_rows = []
    for step in steps:
        cells = [step]
        for m in modes:
            s = rows[m["name"]]["steps"].get(step) if _measured(rows[m["name"]]) else None
            if s is None:
                cells.append("–")
            else:
                queue = s["queue_ms"] * s["runs"] / max(1, int(rows[m["name"]]["c1"]["n"]))
                cells.append(f"{s['per_request_ms']:.1f} ({queue:.1f})")
        table_rows.append(cells)
    for what, figure in (
        ("server, whole request", lambda r: r.get("server_ms")),
        ("client, request to reply", lambda r: r["c1"]["mean_ms"]),
    ):
        table_rows.append([what, *(shown(figure(r), ".1f") if _measured(r) else "–"
                                   for r in rows.values())])  # fmt: skip
    lines = [
        f"Where the time goes at {largest:g} MP, c=1: each step's queue + compute per "
        "request (ms), from Triton's statistics; queue in brackets.",
        "",
        *table(["step", *(m["name"] for m in modes)], table_rows),
    ]
    growth = grows_with_pixels(result, ensemble)
    if growth:
        lines += ["", growth]
    return lines


def grows_with_pixels(result: Mapping, ensemble: str) -> str:
    """One line: each step's time per request at the smallest and the largest size
    measured in the first mode, the step that grew most first."""
    meta = result["meta"]
    mode = meta["modes"][0]["name"]
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
        f"What grows with the pixels ({mode}, {small:g} → {large:g} MP, per request): "
        + ", ".join(parts)
        + "."
    )


def main(argv: Iterable[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="127.0.0.1:8001", help="gRPC host:port of a running Triton")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "sweep")
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
        for path in write_outputs(json.loads((args.out / "sweep.json").read_text()), args.out):
            print(path)
        return 0
    given = {"requests": args.requests, "concurrency": args.concurrency,
             "load_s": args.load_seconds}  # fmt: skip
    settings = replace(QUICK if args.quick else Settings(), **{k: v for k, v in given.items() if v})
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
