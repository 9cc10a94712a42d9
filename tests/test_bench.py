"""Pure parts of the benchmark tooling (the runs themselves are `make bench`'s)."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest

from bench.perf_analyzer import serialize_bytes_tensor, write_input_data

pytestmark = pytest.mark.unit


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


@pytest.mark.parametrize("run", ["cpu-2core", "gpu-h100"])
def test_the_committed_runs_say_what_was_served_and_pass_the_check(run):
    from bench.check import check
    from bench.served import baselines, settings_of

    folder = Path(__file__).resolve().parents[1] / "docs" / "bench" / run
    meta = json.loads((folder / "raw.json").read_text())["meta"]
    assert baselines(meta, meta["ensembles"])["detect_pytorch"] == "nanodet_m"
    assert settings_of(meta)["nanodet_m"]["preferred_batch_sizes"] == [4, 8]
    if run == "cpu-2core":  # the H100 run predates the paired c=1 rounds
        assert check(folder) == []


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


# --- bench.check: the shape CI asks of a quick run -------------------------------------


def _good_run(concurrencies=(1, 8)):
    from bench.limit import BATCH_SIZES

    triton, old, limit = [], [], []
    timing = {"throughput": 9.5, "p50_ms": 100, "p95_ms": 120, "p99_ms": 130, "avg_ms": 104}
    for ensemble in ENSEMBLES:
        for c in concurrencies:
            step = {"queue_ms": 1.0, "compute_infer_ms": 50.0}
            triton.append({"model": ensemble, "concurrency": c, **timing, "composing": {"m": step}})
    for name, _, _ in DETECTORS.values():
        for c in concurrencies:
            old.append({"model": name, "concurrency": c, **timing, "wire_bytes": 2e6,
                        "requests": 40, "errors": 0})  # fmt: skip
        for b in BATCH_SIZES:
            limit.append({"model": name, "batch": b, "throughput": 10.0 + b,
                          "p50_ms": 90, "p99_ms": 99, "mean_ms": 91, "best": b == 8})  # fmt: skip
    wire = dict.fromkeys(ENSEMBLES, 1.2e5)
    detectors = {ensemble: name for ensemble, (name, _, _) in DETECTORS.items()}
    return triton, old, limit, list(ENSEMBLES), list(concurrencies), wire, detectors


def test_check_accepts_a_complete_run():
    from bench.check import check_rows

    assert check_rows(*_good_run()) == []


def test_check_names_a_missing_concurrency_and_a_missing_model():
    from bench.check import check_rows

    triton, old, limit, ensembles, concurrencies, wire, detectors = _good_run()
    triton = [
        r for r in triton if not (r["model"] == "detect_tensorflow" and r["concurrency"] == 8)
    ]
    old = [r for r in old if r["model"] != "onnxruntime"]
    problems = check_rows(triton, old, limit, ensembles, concurrencies, wire, detectors)
    assert "perf_analyzer: detect_tensorflow at concurrency 8: 0 rows" in problems
    assert "old design: onnxruntime at concurrency 1: 0 rows" in problems
    assert len(problems) == 3


def test_check_rejects_zero_nan_failed_requests_and_missing_batches():
    from bench.check import check_rows

    triton, old, limit, ensembles, concurrencies, wire, detectors = _good_run()
    triton[0]["throughput"] = 0.0
    old[1]["p99_ms"] = float("nan")
    old[2]["errors"] = 3
    limit = [r for r in limit if not (r["model"] == "pytorch" and r["batch"] == 4)]
    problems = check_rows(triton, old, limit, ensembles, concurrencies, wire, detectors)
    assert any("throughput is 0.0" in p for p in problems)
    assert any("p99_ms is nan" in p for p in problems)
    assert any("3 failed requests" in p for p in problems)
    assert any("pytorch has batches [1, 2, 8]" in p for p in problems)


def test_check_run_finds_missing_files(tmp_path):
    from bench.check import check

    (tmp_path / "report.md").write_text("x")
    (problem,) = check(tmp_path)
    assert "missing triton.csv" in problem and "throughput.png" in problem


def _write_run(out, meta_extra=None):
    """A complete run's files under ``out``, as `python -m bench` writes them."""
    from bench.__main__ import write_csv
    from bench.report import write_report

    triton, old, limit, ensembles, concurrencies, wire, detectors = _good_run()
    paired = [{"model": name, "ensemble": ensemble,
               "triton": {"mean_ms": 110.0, "p50_ms": 108.0, "p90_ms": 120.0, "n": 10},
               "limit": {"mean_ms": 100.0, "p50_ms": 99.0, "p90_ms": 105.0, "n": 10},
               "gap": 0.1} for ensemble, name in detectors.items()]  # fmt: skip
    meta = {"quick": True, "url": "embedded cpu target", "target": "cpu", "gpus": [0],
            "photo_format": "jpeg", "machine": "test", "concurrency": concurrencies,
            "ensembles": ensembles, "served": _served(), "detector_settings": _settings(750),
            "seconds": 1, **(meta_extra or {})}  # fmt: skip
    for name, rows in (("triton", triton), ("old_design", old), ("limit", limit)):
        write_csv(out / f"{name}.csv", rows)
    raw = {"meta": meta, "triton": triton, "wire": wire, "old": old, "limit": limit,
           "paired": paired}  # fmt: skip
    (out / "raw.json").write_text(json.dumps(raw))
    return write_report(out, triton, wire, old, limit, meta, paired)


def test_report_takes_titles_detectors_and_settings_from_the_run_not_the_code(tmp_path):
    from bench.check import check

    report = _write_run(tmp_path).read_text()
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
