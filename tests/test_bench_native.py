"""Pure parts of bench.native: rounds -> per-mode figures -> the goals table."""

from __future__ import annotations

import pytest

from bench.memory import TRITON
from bench.native import (
    GOAL_OVER_POST,
    LATENCY,
    NATIVE,
    PYTHON,
    goal_rows,
    markdown,
    mode_summary,
    summarize,
)
from bench.processes import GIB

pytestmark = pytest.mark.unit

TF = "detect_tensorflow"


def paired(triton_ms: float, local_ms: float, n: int = 10) -> dict:
    side = {"p50_ms": 0.0, "p90_ms": 0.0}
    return {"triton": {**side, "mean_ms": triton_ms, "n": n},
            "limit": {**side, "mean_ms": local_ms, "n": n}}  # fmt: skip


def perf(images_s: float, infer_ms: float = 100.0) -> dict:
    step = {"count": 50, "queue_ms": 5.0, "compute_infer_ms": infer_ms, "latency_ms": 120.0}
    return {"throughput": images_s, "p99_ms": 900.0, "composing": {"tensorflow": step}}


def a_round(mode, number, *, idle_gib, peak_gib, triton_ms, images_s, cold_s=10.0) -> dict:
    return {
        "mode": mode,
        "round": number,
        "cold_start_s": cold_s,
        "placements": {},
        "memory": {
            "idle": {"pss": {TRITON: idle_gib * GIB}, "processes": {TRITON: 1}},
            "samples": [{"t_s": 2.0, "pss": {TRITON: peak_gib * GIB}}],
            "load": {},
        },
        "paired": {TF: paired(triton_ms, 100.0)},
        "perf": {TF: perf(images_s)},
    }


def raw(native_ms=104.0, native_images=30.0, native_idle=1.0, old_images=7.0) -> dict:
    rounds = [
        a_round(NATIVE, 1, idle_gib=native_idle, peak_gib=1.5, triton_ms=native_ms,
                images_s=native_images),
        a_round(PYTHON, 1, idle_gib=2.3, peak_gib=2.7, triton_ms=110.0, images_s=15.0),
        a_round(NATIVE, 2, idle_gib=native_idle, peak_gib=1.8, triton_ms=native_ms,
                images_s=native_images, cold_s=20.0),
        a_round(PYTHON, 2, idle_gib=2.3, peak_gib=2.6, triton_ms=110.0, images_s=15.0),
    ]  # fmt: skip
    meta = {"machine": "test CPU, 2 cores", "rounds": 2, "quick": False, "seconds": 1,
            "memory_load_s": 60.0, "native_cpu": {}}  # fmt: skip
    old = [{"throughput": old_images, "requests": 100, "duration_s": 15.0}]
    return {"meta": meta, "rounds": rounds, "old_design": old}


def row(rows: list[dict], starts: str) -> dict:
    (found,) = [r for r in rows if r["figure"].startswith(starts)]
    return found


def test_the_c1_gap_pools_every_request_of_a_mode_against_the_in_process_mean():
    s = mode_summary(
        [
            {**a_round(NATIVE, 1, idle_gib=1, peak_gib=1, triton_ms=0, images_s=1),
             "paired": {TF: paired(100.0, 100.0, n=10)}},
            {**a_round(NATIVE, 2, idle_gib=1, peak_gib=1, triton_ms=0, images_s=1),
             "paired": {TF: paired(130.0, 100.0, n=30)}},
        ]
    )  # fmt: skip
    assert s["c1"][TF]["triton_ms"] == pytest.approx(122.5)  # (10*100 + 30*130) / 40
    assert s["c1"][TF]["gap"] == pytest.approx(0.225)


def test_a_failed_round_is_left_out_and_the_peak_is_the_largest_rounds():
    data = raw()
    data["rounds"].append({"mode": NATIVE, "round": 3, "error": "tritonserver exited"})
    s = summarize(data)["modes"][NATIVE]
    assert s["rounds"] == 2
    assert s["cold_start_s"] == pytest.approx(15.0)
    assert s["idle_gib"] == pytest.approx(1.0)
    assert s["peak_gib"] == pytest.approx(1.8)
    assert s["c8"][TF]["steps"]["tensorflow"]["compute_infer_ms"] == pytest.approx(100.0)


def test_the_ratio_to_the_posts_design_is_the_native_images_s_over_its_own():
    s = summarize(raw(native_images=30.0, old_images=7.5))
    assert s["old_design_images_s"] == pytest.approx(7.5)
    assert s["over_post"][NATIVE] == pytest.approx(4.0)
    assert s["over_post"][PYTHON] == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("native_ms", "met"), [(104.9, True), (105.1, False)]
)  # fmt: skip
def test_the_c1_goal_flips_when_the_gap_crosses_five_percent(native_ms, met):
    rows = goal_rows(summarize(raw(native_ms=native_ms)))
    assert row(rows, f"{TF} c=1")["met"] is met


@pytest.mark.parametrize(("native_images", "met"), [(15.0, True), (14.9, False)])
def test_the_c8_goal_flips_when_native_falls_below_the_python_runners(native_images, met):
    rows = goal_rows(summarize(raw(native_images=native_images, old_images=1.0)))
    assert row(rows, f"{TF} c=8 images/s")["met"] is met


@pytest.mark.parametrize(("old_images", "met"), [(7.5, True), (7.6, False)])
def test_the_goal_over_the_posts_design_flips_below_four_times(old_images, met):
    rows = goal_rows(summarize(raw(native_images=30.0, old_images=old_images)))
    assert row(rows, f"{TF} c=8 over the post's design")["met"] is met
    assert GOAL_OVER_POST == 4.0


@pytest.mark.parametrize(("idle", "met"), [(1.2, True), (1.25, False)])
def test_the_idle_memory_goal_flips_above_1_2_gib(idle, met):
    assert row(goal_rows(summarize(raw(native_idle=idle))), "PSS idle")["met"] is met


def test_the_table_says_plainly_which_goal_was_missed():
    data = raw(native_ms=120.0)
    text = markdown(data, summarize(data))
    assert f"| {TF} c=1 ms (gap to in process) | 120.0 (+20.0% vs 100.0) |" in text
    assert "**missed**" in text
    assert f"Missed by the default (throughput) profile: {TF} c=1 ms (gap to in process)." in text


def test_the_latency_profile_has_a_column_and_verdicts_of_its_own():
    data = raw(native_ms=120.0)
    data["rounds"].append(
        a_round(LATENCY, 1, idle_gib=1.1, peak_gib=1.6, triton_ms=103.0, images_s=12.0)
    )
    rows = goal_rows(summarize(data))
    c1 = row(rows, f"{TF} c=1")
    assert c1["latency"] == "103.0 (+3.0% vs 100.0)"
    assert (c1["met"], c1["latency_met"]) == (False, True)
    c8 = row(rows, f"{TF} c=8 images")
    assert (c8["met"], c8["latency_met"]) == (True, False)  # 30 and 12 against 15
    text = markdown(data, summarize(data))
    assert f"Missed by the latency profile: {TF} c=8 images/s" in text
