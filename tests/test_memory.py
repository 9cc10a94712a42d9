"""Pure parts of bench.memory: whose each process is, and idle and peak per role."""

from __future__ import annotations

import pytest

from bench.memory import FRONT, OTHER, TRITON, by_role, roles, summary

pytestmark = pytest.mark.unit


def test_each_server_process_is_tritonserver_a_models_worker_the_front_or_other():
    pids = [100, 101, 102, 103, 200, 201, 300]
    stubs = {101: "pytorch", 102: "pytorch", 103: "image_decode"}
    assert roles(pids, triton_pid=100, front_pids=[200, 201], stubs=stubs) == {
        100: TRITON,
        101: "pytorch",
        102: "pytorch",
        103: "image_decode",
        200: FRONT,
        201: FRONT,
        300: OTHER,
    }


def test_pss_adds_up_per_role_and_an_unknown_process_counts_as_other():
    role_of = {100: TRITON, 101: "pytorch", 102: "pytorch"}
    pss = {100: 300, 101: 70, 102: 50, 999: 5}
    assert by_role(pss, role_of) == {TRITON: 300, "pytorch": 120, OTHER: 5}


def test_summary_orders_the_rows_and_takes_the_totals_peak_from_one_sample():
    memory = {
        "idle": {
            "pss": {FRONT: 10, "pytorch": 200, TRITON: 50, "tensorflow": 900},
            "processes": {FRONT: 2, "pytorch": 2, TRITON: 1, "tensorflow": 2},
        },
        "samples": [
            {"t_s": 2.0, "pss": {TRITON: 60, "pytorch": 400, "tensorflow": 900, FRONT: 10}},
            {
                "t_s": 4.0,
                "pss": {TRITON: 70, "pytorch": 250, "tensorflow": 1000, FRONT: 10, OTHER: 5},
            },
        ],  # fmt: skip
    }
    s = summary(memory)
    # tritonserver first, the models by idle PSS, the front, then anything else.
    assert [r["role"] for r in s["rows"]] == [TRITON, "tensorflow", "pytorch", FRONT, OTHER]
    assert s["rows"][2] == {"role": "pytorch", "processes": 2, "idle": 200, "peak": 400}
    assert s["rows"][4] == {"role": OTHER, "processes": 0, "idle": 0, "peak": 5}
    assert s["total_idle"] == 1160
    # Samples total 1370 and 1335: the peak is the first; the rows' own peaks add up to 1485.
    assert (s["total_peak"], s["peak_at_s"]) == (1370, 2.0)


def test_summary_without_samples_has_no_peak():
    s = summary({"idle": {"pss": {TRITON: 50}, "processes": {TRITON: 1}}, "samples": []})
    assert s["rows"] == [{"role": TRITON, "processes": 1, "idle": 50, "peak": None}]
    assert (s["total_idle"], s["total_peak"], s["peak_at_s"]) == (50, None, None)
