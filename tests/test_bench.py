"""Pure parts of the benchmark tooling (the runs themselves are `make bench`'s)."""

from __future__ import annotations

import base64
import json
import struct

from bench.perf_analyzer import serialize_bytes_tensor, write_input_data


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


# --- bench.check: the shape CI asks of a quick run -------------------------------------


def _good_run(concurrencies=(1, 8)):
    from bench.limit import BATCH_SIZES
    from ensemble import contract

    triton, old, limit = [], [], []
    timing = {"throughput": 9.5, "p50_ms": 100, "p95_ms": 120, "p99_ms": 130, "avg_ms": 104}
    for ensemble in contract.ENSEMBLES:
        for c in concurrencies:
            step = {"queue_ms": 1.0, "compute_infer_ms": 50.0}
            triton.append({"model": ensemble, "concurrency": c, **timing, "composing": {"m": step}})
    for f in contract.FRAMEWORKS:
        for c in concurrencies:
            old.append({"model": f.detector, "concurrency": c, **timing, "wire_bytes": 2e6,
                        "requests": 40, "errors": 0})  # fmt: skip
        for b in BATCH_SIZES:
            limit.append({"model": f.detector, "batch": b, "throughput": 10.0 + b,
                          "p50_ms": 90, "p99_ms": 99, "mean_ms": 91, "best": b == 8})  # fmt: skip
    wire = dict.fromkeys(contract.ENSEMBLES, 1.2e5)
    return triton, old, limit, list(contract.ENSEMBLES), list(concurrencies), wire


def test_check_accepts_a_complete_run():
    from bench.check import check_rows

    assert check_rows(*_good_run()) == []


def test_check_names_a_missing_concurrency_and_a_missing_model():
    from bench.check import check_rows

    triton, old, limit, ensembles, concurrencies, wire = _good_run()
    triton = [
        r for r in triton if not (r["model"] == "detect_tensorflow" and r["concurrency"] == 8)
    ]
    old = [r for r in old if r["model"] != "centernet_mobilenetv3"]
    problems = check_rows(triton, old, limit, ensembles, concurrencies, wire)
    assert "perf_analyzer: detect_tensorflow at concurrency 8: 0 rows" in problems
    assert "old design: centernet_mobilenetv3 at concurrency 1: 0 rows" in problems
    assert len(problems) == 3


def test_check_rejects_zero_nan_failed_requests_and_missing_batches():
    from bench.check import check_rows

    triton, old, limit, ensembles, concurrencies, wire = _good_run()
    triton[0]["throughput"] = 0.0
    old[1]["p99_ms"] = float("nan")
    old[2]["errors"] = 3
    limit = [r for r in limit if not (r["model"] == "nanodet_m" and r["batch"] == 4)]
    problems = check_rows(triton, old, limit, ensembles, concurrencies, wire)
    assert any("throughput is 0.0" in p for p in problems)
    assert any("p99_ms is nan" in p for p in problems)
    assert any("3 failed requests" in p for p in problems)
    assert any("nanodet_m has batches [1, 2, 8]" in p for p in problems)


def test_check_run_finds_missing_files(tmp_path):
    from bench.check import check

    (tmp_path / "report.md").write_text("x")
    (problem,) = check(tmp_path)
    assert "missing triton.csv" in problem and "throughput.png" in problem
