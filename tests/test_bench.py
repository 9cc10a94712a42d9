"""Pure parts of the benchmark tooling (the runs themselves are `make bench`'s)."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest

from bench.perf_analyzer import serialize_bytes_tensor, write_input_data

pytestmark = pytest.mark.unit
COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "bench"


def test_bytes_tensor_is_serialised_as_little_endian_length_then_bytes():
    data = serialize_bytes_tensor([b"ab", b"", b"\x00xyz"])
    assert (
        data
        == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0) + struct.pack("<I", 4) + b"\x00xyz"
    )


def test_input_data_holds_one_request_per_photo_with_the_files_bytes(tmp_path):
    photos = [b"\x89PNG first", b"\xff\xd8 second"]
    path = write_input_data(tmp_path / "input.json", photos)
    entries = json.loads(path.read_text())["data"]
    assert len(entries) == 2
    for entry, photo in zip(entries, photos, strict=True):
        assert entry["IMAGE"]["shape"] == [1]
        raw = base64.b64decode(entry["IMAGE"]["b64"])
        assert struct.unpack("<I", raw[:4])[0] == len(photo) and raw[4:] == photo


# --- what the server serves, as a run records it (bench.served) -----------------------

# A run's meta["served"] as the server describes three single-detector ensembles and
# the fused one (bench.served.describe).
DETECTORS = {
    "detect_pytorch": ("pytorch", "NanoDet-m 416", "torchscript"),
    "detect_tensorflow": ("tensorflow", "SSD MobileNet v2 (COCO)", "savedmodel"),
    "detect_onnxruntime": ("onnxruntime", "CenterNet MobileNetV3 512", "onnx"),
}
ENSEMBLES = [*DETECTORS, "detect_all"]


def _served() -> dict:
    entries = {
        ensemble: {"name": name, "title": title, "runtime": runtime}
        for ensemble, (name, title, runtime) in DETECTORS.items()
    }
    served = {
        ensemble: {"title": d["title"], "detectors": [d], "steps": ["image_decode", d["name"]]}
        for ensemble, d in entries.items()
    }
    served["detect_all"] = {"title": "All 3 fused", "detectors": list(entries.values()),
                            "steps": ["image_decode", "fuse_detections"]}  # fmt: skip
    return served


def _settings(queue_delay_us: int = 2000) -> dict:
    return {
        name: {"preferred_batch_sizes": [4, 8], "max_queue_delay_us": queue_delay_us,
               "max_batch_size": 8, "instances": 2}
        for name, _, _ in DETECTORS.values()
    }  # fmt: skip


def test_ensembles_are_the_detection_ones_in_the_models_file_order_with_detect_all_last():
    from bench.served import ordered

    server_order = ["detect_all", "detect_onnxruntime", "fuse_detections", "detect_parts",
                    "pytorch", "detect_pytorch", "detect_tensorflow"]  # fmt: skip
    models_file = ["detect_pytorch", "detect_tensorflow", "detect_onnxruntime", "detect_all"]
    assert ordered(server_order, models_file) == [
        "detect_pytorch", "detect_tensorflow", "detect_onnxruntime", "detect_parts", "detect_all"
    ]  # fmt: skip


def test_only_single_detector_ensembles_have_an_in_process_baseline():
    from bench.served import baselines

    meta = {"served": _served()}
    assert baselines(meta, ENSEMBLES) == {
        "detect_pytorch": "pytorch",
        "detect_tensorflow": "tensorflow",
        "detect_onnxruntime": "onnxruntime",
    }
    assert baselines(meta, ["detect_all", "detect_unknown"]) == {}


# The GPU run predates detectors named by their models file key (its model was nanodet_m).
@pytest.mark.parametrize(
    ("run", "model", "delay_us"), [("cpu-2core", "pytorch", 0), ("gpu-h100", "nanodet_m", 2000)]
)
def test_the_committed_runs_say_what_was_served(run, model, delay_us):
    from bench.served import baselines

    meta = json.loads((COMMITTED / run / "raw.json").read_text())["meta"]
    assert baselines(meta, meta["ensembles"])["detect_pytorch"] == model
    assert meta["detector_settings"][model]["preferred_batch_sizes"] == [4, 8]
    assert meta["detector_settings"][model]["max_queue_delay_us"] == delay_us


def test_the_committed_cpu_run_passes_the_check():
    from bench.check import check

    assert check(COMMITTED / "cpu-2core") == []


def test_detector_settings_are_read_from_the_config_the_server_returns_as_json():
    from google.protobuf.json_format import MessageToJson

    from bench.served import detector_settings
    from ensemble import configgen, contract
    from ensemble.families.nanodet import NanoDet
    from ensemble.registry import Detector
    from ensemble.spec import DetectorModel

    family = NanoDet(None, contract.COCO80_LABELS)
    detector = Detector(name="parts", title="Parts", runtime="torchscript", family_ref="nanodet",
                        family=family, recipe="nanodet_m", preferred_batch_sizes=(2, 6),
                        max_queue_delay_us=750, instances=3)  # fmt: skip
    message = configgen.detector_config(DetectorModel(detector), configgen.make_target("cpu"))
    # What tritonclient's get_model_config(as_json=True) returns (int64 as strings).
    config = json.loads(MessageToJson(message, preserving_proto_field_name=True))
    assert detector_settings(config) == {
        "preferred_batch_sizes": [2, 6],
        "max_queue_delay_us": 750,
        "max_batch_size": 8,
        "instances": 3,
    }


# --- the old design's two wire formats (bench.old_design, bench.loadgen) -------------


def _tiny_image():
    import numpy as np

    return (np.arange(18, dtype=np.uint8) * 14).reshape(2, 3, 3)  # values 0, 14, ..., 238


def test_the_posts_design_returns_the_drawn_image_as_float64_eight_times_the_bytes():
    import numpy as np

    from bench.old_design import ANSWER_DTYPES, FAIR, POST, decode_array, encode_array

    image = _tiny_image()
    post, fair = encode_array(image, ANSWER_DTYPES[POST]), encode_array(image, ANSWER_DTYPES[FAIR])
    assert post["shape"] == fair["shape"] == [2, 3, 3]
    # 18 values: 144 bytes as float64 (192 base64 characters), 18 bytes as uint8 (24).
    assert len(post["image"]) == 192 and len(fair["image"]) == 24
    assert np.frombuffer(base64.b64decode(post["image"]), "<f8")[17] == 238.0  # 0-255 kept
    back = decode_array(post, np.float64)
    assert back.dtype == np.float64 and np.array_equal(back, image)
    again = decode_array(fair)
    assert again.dtype == np.uint8 and np.array_equal(again, image)


def test_a_float64_answer_read_as_uint8_is_refused_for_its_size():
    import numpy as np

    from bench.old_design import decode_array, encode_array

    with pytest.raises(ValueError, match="144 bytes do not make a uint8 array of shape"):
        decode_array(encode_array(_tiny_image(), np.float64), np.uint8)


def test_the_client_decodes_the_answer_in_its_wire_format():
    import numpy as np

    from bench.loadgen import read_answer
    from bench.old_design import encode_array

    fields = encode_array(_tiny_image(), np.float64)
    answer = json.dumps({"detections": [[1, 2, 3, 4, 0.9, 17]], **fields}).encode()
    detections, drawn = read_answer(answer, "post")
    assert detections.tolist() == [[1.0, 2.0, 3.0, 4.0, pytest.approx(0.9), 17.0]]
    assert drawn.dtype == np.float64 and drawn[1, 2, 2] == 238.0
    with pytest.raises(ValueError):
        read_answer(answer, "fair")  # 144 bytes are not an 18-byte uint8 image


def test_the_request_is_the_photos_raw_uint8_pixels_in_both_formats():
    import numpy as np

    from bench.loadgen import request_body
    from bench.photos import photo_files
    from ensemble.imaging import decode_image

    photo = photo_files("jpeg")[1]
    body = json.loads(request_body(photo))
    pixels = decode_image(photo)
    assert body["shape"] == list(pixels.shape)
    assert np.array_equal(np.frombuffer(base64.b64decode(body["image"]), np.uint8),
                          pixels.reshape(-1))  # fmt: skip


# --- bench.check: the shape CI asks of a quick run -------------------------------------

MIB = 2**20


def _memory(ensembles=("detect_pytorch", "detect_tensorflow")):
    """raw.json's memory as bench.memory.measure writes it, PSS in MiB (hand-picked)."""
    idle = {"tritonserver": 300, "tensorflow": 1024, "pytorch": 512, "front (nginx)": 16}
    samples = [
        (2.0, {"tritonserver": 310, "tensorflow": 1100, "pytorch": 600, "front (nginx)": 16}),
        (4.0, {"tritonserver": 320, "tensorflow": 1200, "pytorch": 550, "front (nginx)": 16}),
    ]
    return {
        "idle": {"pss": {k: v * MIB for k, v in idle.items()},
                 "processes": {"tritonserver": 1, "tensorflow": 2, "pytorch": 2,
                               "front (nginx)": 2}},
        "samples": [{"t_s": t, "pss": {k: v * MIB for k, v in pss.items()}}
                    for t, pss in samples],
        "load": {"concurrency": 8, "duration_s": 60.2, "ensembles": list(ensembles),
                 "every_s": 2.0, "answered": 750, "refused": 0, "failed": 0, "failures": {},
                 "throughput": 12.46, "p50_ms": 610.0, "p99_ms": 1400.0},
    }  # fmt: skip


def _good_run(concurrencies=(1, 8)):
    from bench.limit import BATCH_SIZES

    triton, post, old, limit = [], [], [], []
    timing = {"throughput": 9.5, "p50_ms": 100, "p95_ms": 120, "p99_ms": 130, "avg_ms": 104}
    for ensemble in ENSEMBLES:
        for c in concurrencies:
            step = {"queue_ms": 1.0, "compute_infer_ms": 50.0}
            triton.append({"model": ensemble, "concurrency": c, **timing, "composing": {"m": step}})
    for name, _, _ in DETECTORS.values():
        for c in concurrencies:
            post.append({"wire": "post", "model": name, "concurrency": c, **timing,
                         "wire_bytes": 8e6, "requests": 20, "errors": 0})  # fmt: skip
            old.append({"wire": "fair", "model": name, "concurrency": c, **timing,
                        "wire_bytes": 2e6, "requests": 40, "errors": 0})  # fmt: skip
        for b in BATCH_SIZES:
            limit.append({"model": name, "batch": b, "throughput": 10.0 + b,
                          "p50_ms": 90, "p99_ms": 99, "mean_ms": 91, "best": b == 8})  # fmt: skip
    wire = dict.fromkeys(ENSEMBLES, 1.2e5)
    detectors = {ensemble: name for ensemble, (name, _, _) in DETECTORS.items()}
    return triton, post, old, limit, list(ENSEMBLES), list(concurrencies), wire, detectors


def test_check_accepts_a_complete_run():
    from bench.check import check_rows

    assert check_rows(*_good_run()) == []


def test_check_names_a_missing_concurrency_and_a_missing_model():
    from bench.check import check_rows

    triton, post, old, limit, ensembles, concurrencies, wire, detectors = _good_run()
    triton = [
        r for r in triton if not (r["model"] == "detect_tensorflow" and r["concurrency"] == 8)
    ]
    old = [r for r in old if r["model"] != "onnxruntime"]
    problems = check_rows(triton, post, old, limit, ensembles, concurrencies, wire, detectors)
    assert "perf_analyzer: detect_tensorflow at concurrency 8: 0 rows" in problems
    assert "the fairer old design: onnxruntime at concurrency 1: 0 rows" in problems
    assert len(problems) == 3


def test_check_asks_for_the_posts_design_beside_the_fairer_one():
    from bench.check import check_rows

    triton, post, old, limit, ensembles, concurrencies, wire, detectors = _good_run()
    post = [r for r in post if not (r["model"] == "pytorch" and r["concurrency"] == 8)]
    problems = check_rows(triton, post, old, limit, ensembles, concurrencies, wire, detectors)
    assert problems == ["the post's design: pytorch at concurrency 8: 0 rows"]
    # The fairer design's rows filed as the post's are not the post's design.
    problems = check_rows(triton, old, old, limit, ensembles, concurrencies, wire, detectors)
    assert "the post's design pytorch c=1: a row of wire format 'fair'" in problems
    assert len(problems) == 6  # 3 detectors x 2 concurrencies


def test_check_rejects_zero_nan_failed_requests_and_missing_batches():
    from bench.check import check_rows

    triton, post, old, limit, ensembles, concurrencies, wire, detectors = _good_run()
    triton[0]["throughput"] = 0.0
    old[1]["p99_ms"] = float("nan")
    post[2]["errors"] = 3
    limit = [r for r in limit if not (r["model"] == "pytorch" and r["batch"] == 4)]
    problems = check_rows(triton, post, old, limit, ensembles, concurrencies, wire, detectors)
    assert any("throughput is 0.0" in p for p in problems)
    assert any("p99_ms is nan" in p for p in problems)
    assert "the post's design tensorflow c=1: 3 failed requests" in problems
    assert any("pytorch has batches [1, 2, 8]" in p for p in problems)


def test_check_accepts_the_memory_of_a_started_server_and_names_what_is_missing():
    from bench.check import check_memory

    ensembles = ["detect_pytorch", "detect_tensorflow"]
    assert check_memory(_memory(), ensembles) == []
    assert check_memory(None, ensembles) == [
        "memory: not measured, though the run started the server"
    ]
    broken = _memory(ensembles=["detect_pytorch"])
    del broken["idle"]["pss"]["tritonserver"]
    broken["samples"] = []
    broken["load"]["failed"] = 2
    assert check_memory(broken, ensembles) == [
        "memory: no idle PSS for tritonserver",
        "memory: no sample under load",
        "memory: the load ran over ['detect_pytorch'], not ['detect_pytorch', 'detect_tensorflow']",
        "memory: 2 requests of the load failed",
    ]


def test_check_run_finds_missing_files(tmp_path):
    from bench.check import check

    (tmp_path / "report.md").write_text("x")
    (problem,) = check(tmp_path)
    assert "missing triton.csv, post_design.csv" in problem and "throughput.png" in problem


def _sweep(ensembles) -> dict:
    """A size sweep's sweep.json: one size, both modes, every ensemble measured."""
    row = {"c1": {"n": 3, "mean_ms": 90.0, "p50_ms": 88.0, "p99_ms": 95.0}, "server_ms": 88.0,
           "steps": {}, "annotated": {"bytes_mean": 60_000.0, "size": [671, 447]},
           "num_detections": 1, "error": None,
           "c8": {"concurrency": 8, "duration_s": 3.0, "images_per_s": 10.0, "n": 30,
                  "mean_ms": 700.0, "p50_ms": 690.0, "p99_ms": 900.0, "answered": 30,
                  "refused": 0, "failed": 0, "failures": {}}}  # fmt: skip
    modes = [{"name": "full", "annotated_max_side": None},
             {"name": "display", "annotated_max_side": 1280}]  # fmt: skip
    rows = [
        {**row, "ensemble": e, "target_mp": 0.3, "mode": m["name"],
         "annotated_max_side": m["annotated_max_side"]}
        for e in ensembles for m in modes
    ]  # fmt: skip
    return {
        "meta": {"url": "127.0.0.1:8001", "date": "2026-11-29 12:00:00", "machine": "test",
                 "quick": True, "ensembles": list(ensembles),
                 "served": {e: {"title": e, "detectors": [], "steps": []} for e in ensembles},
                 "sizes_mp": [0.3], "modes": modes,
                 "settings": {"requests": 3, "warmup": 1, "concurrency": 8, "load_s": 3.0},
                 "photos": {"names": ["coffee"], "noise_sigma": 3.0, "noise_seed": 10,
                            "jpeg_quality": 90}},
        "photos": [{"target_mp": 0.3, "sizes": [[671, 447]], "megapixels": 0.3, "bytes": [],
                    "bytes_mean": 61_000.0, "bytes_per_pixel": 0.2}],
        "rows": rows,
    }  # fmt: skip


def _write_raw(out, raw) -> str:
    """``raw`` as `python -m bench` leaves a run: raw.json and the CSVs, then the
    report and plots drawn again from raw.json alone (``python -m bench.report``)."""
    from bench import write_csv
    from bench.report import main as redraw

    out.mkdir(parents=True, exist_ok=True)
    for name, key in (("triton", "triton"), ("post_design", "post"), ("old_design", "old"),
                      ("limit", "limit")):  # fmt: skip
        write_csv(out / f"{name}.csv", raw[key])
    (out / "raw.json").write_text(json.dumps(raw))
    singles = [e for e in raw["meta"]["ensembles"] if e != "detect_all"]
    (out / "sweep.json").write_text(json.dumps(_sweep(singles)))
    assert redraw([str(out)]) == 0
    return (out / "report.md").read_text()


def _write_run(out, meta_extra=None, memory="hand-written"):
    """A complete run's files under ``out``, as `python -m bench` writes them."""
    triton, post, old, limit, ensembles, concurrencies, wire, detectors = _good_run()
    paired = [{"model": name, "ensemble": ensemble,
               "triton": {"mean_ms": 110.0, "p50_ms": 108.0, "p90_ms": 120.0, "n": 10},
               "limit": {"mean_ms": 100.0, "p50_ms": 99.0, "p90_ms": 105.0, "n": 10},
               "gap": 0.1} for ensemble, name in detectors.items()]  # fmt: skip
    meta = {"quick": True, "url": "embedded cpu target", "embedded": True, "target": "cpu",
            "gpus": [0], "photo_format": "jpeg", "machine": "test",
            "concurrency": concurrencies, "ensembles": ensembles, "served": _served(),
            "detector_settings": _settings(750), "seconds": 1, **(meta_extra or {})}  # fmt: skip
    raw = {"meta": meta, "triton": triton, "wire": wire, "post": post, "old": old,
           "limit": limit, "paired": paired,
           "memory": _memory(ensembles) if memory == "hand-written" else memory}  # fmt: skip
    return _write_raw(out, raw)


def test_report_takes_titles_detectors_and_settings_from_the_run_not_the_code(tmp_path):
    from bench.check import check

    report = _write_run(tmp_path)
    assert "| detect_tensorflow | 8 | 9.50 |" in report
    assert "| tensorflow | 8 (best) | 18.00 |" in report  # the limit, by detector name
    settings = "preferred batch sizes [4, 8], max queue delay 750 µs, max batch 8."
    assert f"- onnxruntime: dynamic batching, {settings}" in report
    assert "detect_onnxruntime: c=1 mean latency 110 ms vs 100 ms in process" in report
    assert check(tmp_path) == []


def test_check_names_an_ensemble_the_run_does_not_describe(tmp_path):
    from bench.check import check

    served = _served()
    del served["detect_tensorflow"]
    _write_run(tmp_path, {"served": served})
    problems = check(tmp_path)
    assert "raw.json does not describe detect_tensorflow" in problems
    # Undescribed, it has no detector of its own, so no paired c=1 result is asked of it.
    assert not any("paired c=1" in p for p in problems)


def test_memory_is_asked_of_a_run_that_started_its_server_only(tmp_path):
    from bench.check import check

    _write_run(tmp_path / "embedded", memory=None)
    assert check(tmp_path / "embedded") == [
        "memory: not measured, though the run started the server"
    ]
    url = {"url": "127.0.0.1:8001", "embedded": False}
    report = _write_run(tmp_path / "url", url, memory=None)
    assert check(tmp_path / "url") == []
    assert (
        "Not measured: this run measured the server at 127.0.0.1:8001, started elsewhere, "
        "and cannot see its processes" in report
    )


# --- the report from a hand-written run (figures worked out by hand) ------------------


def _timing(throughput, p50, p95, p99, **extra):
    return {"throughput": throughput, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, **extra}


def _small_raw() -> dict:
    """Two ensembles at c=1 and 8, both baselines, the limit, paired rounds, memory."""
    step = {"decode": {"count": 40, "queue_ms": 0.5, "compute_infer_ms": 6.0}}
    served = {e: d for e, d in _served().items() if e in ("detect_pytorch", "detect_tensorflow")}
    ensembles = ["detect_pytorch", "detect_tensorflow"]
    triton = [
        {"model": "detect_pytorch", "concurrency": 1, "stable": True,
         **_timing(12.0, 80, 90, 100, avg_ms=83), "composing": step},
        {"model": "detect_pytorch", "concurrency": 8, "stable": True,
         **_timing(40.0, 180, 250, 300, avg_ms=190), "composing": step},
        {"model": "detect_tensorflow", "concurrency": 1, "stable": True,
         **_timing(11.0, 85, 95, 105, avg_ms=90), "composing": step},
        {"model": "detect_tensorflow", "concurrency": 8, "stable": False,
         **_timing(30.0, 240, 400, 450, avg_ms=260), "composing": step},
    ]  # fmt: skip

    def baseline(wire, model, c, throughput, p99, wire_bytes):
        timing = _timing(throughput, p99 * 0.8, p99 * 0.9, p99)
        return {"wire": wire, "model": model, "concurrency": c, "requests": 50, "errors": 0,
                **timing, "wire_bytes": wire_bytes}  # fmt: skip

    post = [baseline("post", "pytorch", 1, 6.0, 250, 8.0e6),
            baseline("post", "pytorch", 8, 8.0, 1200, 8.2e6),
            baseline("post", "tensorflow", 1, 5.0, 260, 8.0e6),
            baseline("post", "tensorflow", 8, 10.0, 1000, 8.0e6)]  # fmt: skip
    old = [baseline("fair", "pytorch", 1, 10.0, 150, 1.82e6),
           baseline("fair", "pytorch", 8, 16.0, 600, 1.82e6),
           baseline("fair", "tensorflow", 1, 9.0, 160, 1.82e6),
           baseline("fair", "tensorflow", 8, 15.0, 900, 1.82e6)]  # fmt: skip
    limit = []
    for model, rates, best in (("pytorch", (12.5, 20.0, 16.0, 14.0), 2),
                               ("tensorflow", (11.0, 18.0, 24.0, 20.0), 4)):  # fmt: skip
        for batch, rate in zip((1, 2, 4, 8), rates, strict=True):
            limit.append({"model": model, "batch": batch, "throughput": rate,
                          "mean_ms": 80.0 * batch, "p50_ms": 80.0 * batch,
                          "p99_ms": 90.0 * batch, "best": batch == best})  # fmt: skip
    paired = [
        {"model": "pytorch", "ensemble": "detect_pytorch", "gap": 0.08,
         "triton": {"mean_ms": 108.0, "p50_ms": 105.0, "p90_ms": 120.0, "n": 60},
         "limit": {"mean_ms": 100.0, "p50_ms": 98.0, "p90_ms": 110.0, "n": 60}},
        {"model": "tensorflow", "ensemble": "detect_tensorflow", "gap": 0.12,
         "triton": {"mean_ms": 112.0, "p50_ms": 110.0, "p90_ms": 125.0, "n": 60},
         "limit": {"mean_ms": 100.0, "p50_ms": 99.0, "p90_ms": 108.0, "n": 60}},
    ]  # fmt: skip
    wire = {"detect_pytorch": 130e3, "detect_pytorch:detections_only": 64e3,
            "detect_tensorflow": 130e3, "detect_tensorflow:detections_only": 64e3}  # fmt: skip
    meta = {"quick": False, "url": "embedded cpu target", "embedded": True, "target": "cpu",
            "gpus": [0], "photo_format": "jpeg", "machine": "test", "concurrency": [1, 8],
            "ensembles": ensembles, "served": served, "detector_settings": _settings(),
            "seconds": 600}  # fmt: skip
    return {"meta": meta, "triton": triton, "wire": wire, "post": post, "old": old,
            "limit": limit, "paired": paired, "memory": _memory(ensembles)}  # fmt: skip


def test_report_states_both_baselines_ratios_and_marks_the_targets(tmp_path):
    from bench.check import check

    report = _write_raw(tmp_path, _small_raw())
    # 40 / 8 = 5.00x and 300 / 1200 = 0.25x the post's design: met (>= 4x, <= 0.3x);
    # 40 / 16 = 2.50x and 300 / 600 = 0.50x the fairer one.
    assert (
        "- detect_pytorch: c=8 40.00 img/s, 5.00x the images/s of the post's design (8.00) "
        "and 0.25x its p99 (300 vs 1200 ms): met; 2.50x the images/s of the fairer old "
        "design (16.00) and 0.50x its p99\n" in report
    )
    # 30 / 10 = 3.00x and 0.45x: missed; the limit's best 24 img/s is 2.40x the post's
    # 10, which reaches 10 / 24 = 42 % of it.
    assert (
        "- detect_tensorflow: c=8 30.00 img/s, 3.00x the images/s of the post's design "
        "(10.00) and 0.45x its p99 (450 vs 1000 ms): **missed**; 2.00x the images/s of the "
        "fairer old design (15.00) and 0.50x its p99. The post's design already reaches 42% "
        "of the in-process limit (10.00 of 24.00 img/s), so even a server with no overhead "
        "at all could serve at most 2.40x its images/s on this machine\n" in report
    )
    limit_line = "- detect_pytorch: c=8 40.00 img/s = 200% of the limit's best (20.00 img/s"
    assert limit_line + " at batch 2): met" in report
    # c=1 within +10 %: +8 % met, +12 % missed; perf_analyzer 83 / 80 ms = +4 %.
    assert (
        "- detect_pytorch: c=1 mean latency 108 ms vs 100 ms in process (paired rounds, "
        "+8%): met; perf_analyzer's c=1 83 ms vs the limit's batch 1 80 ms, minutes apart "
        "(+4%)" in report
    )
    assert "(paired rounds, +12%): **missed**" in report
    # Bytes: the post's 8.0 and 8.2 MB average 8100 kB = 62.3x Triton's 130 kB; the
    # fairer 1820 kB = 14.0x (20x asked: missed); detections only 64 kB: 126.6x, 28.4x.
    assert (
        "- detect_pytorch: 130 kB per request vs 8100 kB for the post's design (62.3x "
        "fewer) and 1820 kB for the fairer old design (14.0x fewer): **missed**" in report
    )
    wire_row = "| detect_pytorch | 130 | 64 | 8100 | 62.3x (126.6x) | 1820 | 14.0x (28.4x) |"
    assert wire_row in report
    # The table: both baselines and all four ratios; 40 / 20 = 200 % of the limit.
    assert (
        "| detect_pytorch | 8 | 40.00 | 180 | 250 | 300 | 8.00 | 1200 | 16.00 | 600 | 5.00x "
        "| 0.25x | 2.50x | 0.50x | 200% |" in report
    )
    assert (
        "| detect_pytorch | 1 | 12.00 | 80 | 90 | 100 | 6.00 | 250 | 10.00 | 150 | 2.00x "
        "| 0.40x | 1.20x | 0.67x | 60% |" in report
    )
    assert "taken as three windows as they came): detect_tensorflow c=8" in report
    assert check(tmp_path) == []


def test_report_gives_memory_per_model_idle_and_peak_against_its_targets(tmp_path):
    report = _write_raw(tmp_path, _small_raw())
    # Idle 300 + 1024 + 512 + 16 = 1852 MiB = 1.81 GiB; the samples total 2026 and
    # 2086 MiB, so the peak is 2.04 GiB at 4 s (the rows' own peaks add up to 2136 MiB).
    assert (
        "- memory: 1.81 GiB PSS idle (<= 2.5 GiB): met; 2.04 GiB at the peak of 60 s at "
        "concurrency 8 over detect_pytorch, detect_tensorflow (<= 3.5 GiB): met; that load "
        "answered 12.46 images/s" in report
    )
    table = [
        "| process | processes | idle MiB | peak MiB |",
        "|---|---|---|---|",
        "| tritonserver | 1 | 300 | 320 |",
        "| tensorflow | 2 | 1024 | 1200 |",
        "| pytorch | 2 | 512 | 600 |",
        "| front (nginx) | 2 | 16 | 16 |",
        "| **total** | 7 | **1.81 GiB** | **2.04 GiB** |",
    ]
    assert "\n".join(table) in report
    assert (
        "The load: 750 answered (12.46 images/s, p50 610 ms, p99 1400 ms), 0 refused as "
        "busy, 0 failed; 2 samples, the total's peak 4 s in." in report
    )


def test_report_marks_memory_over_its_targets_missed(tmp_path):
    raw = _small_raw()
    raw["memory"]["idle"]["pss"]["tensorflow"] = 2048 * MIB  # idle 2876 MiB = 2.81 GiB
    raw["memory"]["samples"][1]["pss"]["tensorflow"] = 3000 * MIB  # 3886 MiB = 3.79 GiB
    report = _write_raw(tmp_path, raw)
    assert "- memory: 2.81 GiB PSS idle (<= 2.5 GiB): **missed**; 3.79 GiB at the peak" in report
    assert "(<= 3.5 GiB): **missed**" in report


def test_check_names_what_the_size_sweep_did_not_measure(tmp_path):
    from bench.check import check

    _write_run(tmp_path)
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    sweep["rows"] = [r for r in sweep["rows"] if r["ensemble"] != "detect_pytorch"
                     or r["mode"] != "display"]  # fmt: skip
    sweep["rows"][0]["c8"]["images_per_s"] = 0.0
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    problems = check(tmp_path)
    assert "sweep detect_pytorch 0.3 MP display: not measured (None)" in problems
    first = sweep["rows"][0]
    where = f"sweep {first['ensemble']} 0.3 MP {first['mode']} c=8"
    assert f"{where}: images_per_s is 0.0, not a positive number" in problems
