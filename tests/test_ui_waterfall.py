"""The timings waterfall (``ui.waterfall``) on hand-written step graphs: no server."""

from __future__ import annotations

import re

import pytest

from client.statistics import STEP_PHASES, Duration, ModelStatistics
from ui import timings
from ui.waterfall import Step, layout, step_graph, svg

pytestmark = pytest.mark.unit


def step(model: str, inputs: str, outputs: str) -> Step:
    return Step(model, frozenset(inputs.split()), frozenset(outputs.split()))


# decode -> three chains of (preprocess -> detector -> postprocess) -> fuse, as detect_all.
DETECT_ALL_LIKE = [
    step("decode", "IMAGE", "DECODED SIZE"),
    step("pre_a", "DECODED SIZE", "a_in"),
    step("a", "a_in", "a_raw"),
    step("post_a", "a_raw DECODED SIZE SCORE", "a_dets A_JPEG"),
    step("pre_b", "DECODED SIZE", "b_in"),
    step("b", "b_in", "b_raw"),
    step("post_b", "b_raw DECODED SIZE", "b_dets B_JPEG"),
    step("pre_c", "DECODED", "c_in"),
    step("c", "c_in", "c_raw"),
    step("post_c", "c_raw DECODED", "c_dets C_JPEG"),
    step("fuse", "a_dets b_dets c_dets DECODED", "DETECTIONS ANNOTATED"),
]
DURATIONS = {
    "decode": 5.0,
    "pre_a": 2.0, "a": 30.0, "post_a": 4.0,  # chain a ends at 5 + 36 = 41
    "pre_b": 1.0, "b": 50.0, "post_b": 3.0,  # chain b ends at 5 + 54 = 59
    "pre_c": 3.0, "c": 10.0, "post_c": 2.0,  # chain c ends at 5 + 15 = 20
    "fuse": 6.0,  # starts when the slowest chain (b) ends: 59 -> 65
}  # fmt: skip


def spans(bars) -> dict[str, tuple[float, float]]:
    return {b.model: (b.start_ms, b.end_ms) for b in bars}


def test_parallel_chains_start_together_and_fusion_waits_for_the_slowest():
    got = spans(layout(DETECT_ALL_LIKE, DURATIONS))
    assert got == {
        "decode": (0, 5),
        "pre_a": (5, 7), "a": (7, 37), "post_a": (37, 41),
        "pre_b": (5, 6), "b": (6, 56), "post_b": (56, 59),
        "pre_c": (5, 8), "c": (8, 18), "post_c": (18, 20),
        "fuse": (59, 65),
    }  # fmt: skip


def test_bars_keep_the_configs_order_whatever_order_the_graph_needs():
    shuffled = list(reversed(DETECT_ALL_LIKE))
    bars = layout(shuffled, DURATIONS)
    assert [b.model for b in bars] == [s.model for s in shuffled]
    assert spans(bars)["fuse"] == (59, 65)
    assert spans(bars)["c"] == (8, 18)


def test_a_step_without_runs_takes_no_time_and_is_marked_unknown():
    bars = layout(DETECT_ALL_LIKE, {**DURATIONS, "b": None})
    got = {b.model: b for b in bars}
    assert not got["b"].known and (got["b"].start_ms, got["b"].end_ms) == (6, 6)
    # post_b: 6 -> 9; chain a (ends at 41) is now the slowest, so fuse runs 41 -> 47.
    assert (got["post_b"].start_ms, got["post_b"].end_ms) == (6, 9)
    assert (got["fuse"].start_ms, got["fuse"].end_ms) == (41, 47)
    assert all(b.known for b in bars if b.model != "b")


def test_a_cycle_is_refused_with_the_steps_named():
    cycle = [step("x", "IN y_out", "x_out"), step("y", "x_out", "y_out")]
    with pytest.raises(ValueError, match=r"cycle: x, y"):
        layout(cycle, {"x": 1.0, "y": 1.0})


def test_svg_has_one_bar_per_step_with_its_times():
    bars = layout(DETECT_ALL_LIKE, DURATIONS)
    picture = svg(bars, round_trip_ms=80.0, chains=["a", "b", "c"])
    assert picture.startswith("<svg") and picture.endswith("</svg>")
    drawn = re.findall(
        r'<rect class="waterfall-bar" data-step="([^"]+)" '
        r'data-start-ms="([\d.]+)" data-end-ms="([\d.]+)" x="([\d.]+)" y="[\d.]+" '
        r'width="([\d.]+)"',
        picture,
    )
    assert [d[0] for d in drawn] == [s.model for s in DETECT_ALL_LIKE]
    by_step = {d[0]: d for d in drawn}
    assert (float(by_step["fuse"][1]), float(by_step["fuse"][2])) == (59, 65)
    # Same time, same place: the three preprocessors start at one x; b's bar is 5x c's.
    assert by_step["pre_a"][3] == by_step["pre_b"][3] == by_step["pre_c"][3]
    assert float(by_step["b"][4]) == pytest.approx(5 * float(by_step["c"][4]), rel=0.01)
    assert "round trip (client, dashed) 80.0 ms" in picture
    assert "server steps end at 65.0 ms" in picture
    assert 'class="waterfall-round-trip"' in picture


def test_svg_escapes_step_names():
    (bar,) = layout([step("<b>&", "IN", "OUT")], {"<b>&": 1.0})
    picture = svg([bar])
    assert "<b>&" not in picture and "&lt;b&gt;&amp;" in picture


def test_step_graph_reads_the_maps_values_of_a_json_config():
    config = {
        "config": {
            "name": "detect_x",
            "ensemble_scheduling": {
                "step": [
                    {
                        "model_name": "image_decode",
                        "input_map": {"IMAGE": "IMAGE"},
                        "output_map": {"DECODED_IMAGE": "DECODED_IMAGE"},
                    },
                    {
                        "model_name": "x",
                        "input_map": {"INPUT__0": "DECODED_IMAGE"},
                        "output_map": {"OUTPUT__0": "x_raw"},
                    },
                ]
            },
        }
    }
    assert step_graph(config) == [
        step("image_decode", "IMAGE", "DECODED_IMAGE"),
        step("x", "DECODED_IMAGE", "x_raw"),
    ]
    assert step_graph({"name": "plain", "platform": "onnxruntime_onnx"}) == []


def test_step_durations_are_the_mean_per_run_between_snapshots():
    def snap(count: int, ns: int) -> timings.Snapshot:
        return {"a": ModelStatistics(durations=dict.fromkeys(STEP_PHASES, Duration(count, ns)))}

    # 2 runs; each field took 6 ms over both: 3 ms per run, 4 fields -> 12 ms.
    got = timings.step_durations(snap(1, 0), snap(3, 6_000_000), ["a", "b"])
    assert got == {"a": pytest.approx(12.0), "b": None}
    assert timings.step_durations(None, snap(3, 1), ["a"]) == {"a": None}
