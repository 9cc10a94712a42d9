"""The soak command's pure parts (``bench.soak``): whose worker a process is, memory
start/peak/end, and the figures and kill recovery it works out from the load's records.
A short soak of the real server is in test_soak_server.py."""

from __future__ import annotations

import pytest

from bench import soak
from bench.load import ANSWERED, FAILED, REFUSED, Load, Request
from ensemble.supervisor import stub_model

pytestmark = pytest.mark.unit


def test_a_worker_is_the_stub_running_that_models_script():
    stub = "/x/backends/python/triton_python_backend_stub"
    args = ["/tmp/repo/pytorch/1/model.py", "pytorch_0_0", "1048576"]
    assert stub_model([stub, *args]) == "pytorch"
    assert stub_model([stub, *args]) != "preprocess_pytorch"
    assert stub_model([stub, "/tmp/repo/preprocess_pytorch/1/model.py"]) != "pytorch"
    assert stub_model(["/usr/bin/python3", *args]) is None
    assert stub_model([stub]) is None


def test_memory_summary_is_start_peak_end_in_gib():
    gib = 2**30
    samples = [(0.0, 2 * gib), (2.0, 3.5 * gib), (4.0, 2.25 * gib)]
    assert soak.memory_summary(samples) == {
        "start_gib": 2.0, "peak_gib": 3.5, "end_gib": 2.25, "samples": 3,
    }  # fmt: skip
    assert soak.memory_summary([]) is None


def ended_load(records: list[Request], seconds: float) -> Load:
    """A load over detect_a and detect_b that sent ``records`` in ``seconds``."""
    load = Load(lambda: None, ["detect_a", "detect_b"], [b"x"], 2)
    load.records, load.seconds = records, seconds
    return load


def test_the_figures_and_the_kill_recovery_come_from_the_requests_records():
    records = [
        Request("detect_a", 0.0, 0.5, ANSWERED),
        Request("detect_b", 0.2, 0.6, ANSWERED),
        Request("detect_a", 1.1, 0.3, FAILED, "[StatusCode.INTERNAL] Stub process is not healthy"),
        Request("detect_b", 1.2, 0.2, ANSWERED),  # after the kill, but b does not run it
        Request("detect_a", 1.5, 0.1, REFUSED, "[StatusCode.UNAVAILABLE] Exceeds maximum"),
        Request("detect_a", 1.05, 1.2, FAILED, "[StatusCode.INTERNAL] Stub process is not healthy"),
        Request("detect_a", 2.0, 0.4, ANSWERED),  # the first answer of detect_a: 2.4 s
        Request("detect_a", 2.5, 0.3, FAILED, "late"),  # after the recovery: not counted
    ]
    killed = {"at": 1.0, "pids": [41, 42]}
    ready = {"went_down_s": 1.3, "back_s": 2.6}
    r = soak.figures("url", ended_load(records, 3.0), [], "model_a", killed, ready, {"detect_a"})
    assert (r["sent"], r["answered"], r["refused"], r["failed"]) == (8, 4, 1, 3)
    assert r["per_ensemble"]["detect_a"] == {ANSWERED: 2, REFUSED: 1, FAILED: 3}
    assert r["per_second"] == {ANSWERED: [2, 1, 1], REFUSED: [0, 1, 0], FAILED: [0, 1, 2]}
    assert r["failures"] == {"[StatusCode.INTERNAL] Stub process is not healthy": 2, "late": 1}
    assert r["throughput"] == pytest.approx(4 / 3, abs=1e-3)
    assert r["p50_ms"] == 450.0 and r["memory"] is None
    assert r["kill"] == {
        "model": "model_a", "at_s": 1.0, "workers_killed": [41, 42], "ensembles": ["detect_a"],
        "answer_recovery_s": 1.4, "ready_went_down_after_s": 0.3, "ready_recovery_s": 1.6,
        "failed_until_recovery": 2,
    }  # fmt: skip
    assert "recovery    first answer of detect_a: 1.40 s after the kill" in soak.format_report(r)


def test_a_run_that_ends_before_the_kill_says_so():
    records = [Request("detect_a", 0.0, 0.5, ANSWERED)]
    ready = {"went_down_s": None, "back_s": None}
    r = soak.figures("url", ended_load(records, 1.0), [], "model_a", {}, ready, {"detect_a"})
    assert r["kill"] == {"model": "model_a", "at_s": None, "workers_killed": []}
    assert "the run ended before the kill time" in soak.format_report(r)
