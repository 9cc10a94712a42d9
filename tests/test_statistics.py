"""client.statistics on two statistics replies captured from a real server.

``data/triton_statistics.json`` holds ``DetectorClient.inference_statistics()`` of the
project's own server (every model of models.toml, CPU), as Triton wrote it:
``before`` after one warm-up request of one photo to detect_all, ``after`` once two
more requests had been answered, one photo and then four photos in one batch. Between
them detect_all and each of its steps therefore answered 5 images in 2 executions, and
the ensembles nobody asked never ran.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from client.statistics import (
    STEP_PHASES,
    Duration,
    ModelStatistics,
    between,
    read_statistics,
)

pytestmark = pytest.mark.unit

REPLIES = json.loads((Path(__file__).parent / "data" / "triton_statistics.json").read_text())
DETECT_ALL_STEPS = (
    "image_decode",
    "preprocess_pytorch",
    "pytorch",
    "postprocess_pytorch",
    "preprocess_tensorflow",
    "tensorflow",
    "postprocess_tensorflow",
    "preprocess_onnxruntime",
    "onnxruntime",
    "postprocess_onnxruntime",
    "fuse_detections",
)


def test_a_reply_gives_every_loaded_model_with_its_string_counters_as_numbers():
    after = read_statistics(REPLIES["after"])
    assert set(after) == {
        *DETECT_ALL_STEPS,
        "detect_all",
        "detect_onnxruntime",
        "detect_pytorch",
        "detect_tensorflow",
    }
    pytorch = after["pytorch"]
    assert (pytorch.images, pytorch.executions) == (8, 5)
    assert pytorch.duration("success") == Duration(5, 2_743_273_348)
    assert pytorch.duration("queue") == Duration(5, 4_201_927)
    assert pytorch.duration("compute_infer") == Duration(5, 2_718_514_831)
    # Triton writes a duration that never counted as {}: zero, no mean.
    assert pytorch.duration("fail") == Duration(0, 0)
    assert pytorch.duration("fail").mean_ms is None


def test_a_model_that_never_ran_has_zero_counters_and_no_means():
    unused = read_statistics(REPLIES["after"])["detect_pytorch"]
    assert (unused.images, unused.executions, unused.mean_batch) == (0, 0, None)
    assert all(unused.duration(p) == Duration() for p in ("success", *STEP_PHASES))


def test_between_two_replies_counts_the_images_and_batches_of_the_requests_in_between():
    before, after = read_statistics(REPLIES["before"]), read_statistics(REPLIES["after"])
    for model in ("detect_all", *DETECT_ALL_STEPS):
        counted = between(before, after, model)
        # One photo, then four in one request: 5 images in 2 executions.
        assert (counted.images, counted.executions, counted.mean_batch) == (5, 2, 2.5), model
        assert counted.duration("success").count == 2, model
    assert between(before, after, "detect_tensorflow") == ModelStatistics(
        0, 0, {name: Duration() for name in after["detect_tensorflow"].durations}
    )


def test_a_duration_between_replies_is_the_difference_of_its_count_and_nanoseconds():
    before, after = read_statistics(REPLIES["before"]), read_statistics(REPLIES["after"])
    success = between(before, after, "detect_all").duration("success")
    assert success == Duration(3 - 1, 2_255_382_588 - 581_094_994)
    assert success.mean_ms == pytest.approx((2_255_382_588 - 581_094_994) / 2 / 1e6)
    queue = between(before, after, "tensorflow").duration("queue")
    assert queue == Duration(5 - 3, 4_755_917 - 3_976_599)


def test_a_steps_phases_add_up_to_no_more_than_its_requests_time():
    """What STEP_PHASES stand for, on the real counters: a step's queue and compute
    phases are parts of its requests' ``success`` time, and nearly all of it."""
    before, after = read_statistics(REPLIES["before"]), read_statistics(REPLIES["after"])
    for model in DETECT_ALL_STEPS:
        counted = between(before, after, model)
        phases_ns = sum(counted.duration(p).ns for p in STEP_PHASES)
        success_ns = counted.duration("success").ns
        assert 0.9 * success_ns <= phases_ns <= success_ns, model


def test_a_models_versions_are_added_together():
    reply = copy.deepcopy(REPLIES["after"])
    pytorch = next(m for m in reply["model_stats"] if m["name"] == "pytorch")
    reply["model_stats"].append({**copy.deepcopy(pytorch), "version": "2"})
    doubled = read_statistics(reply)["pytorch"]
    assert (doubled.images, doubled.executions) == (16, 10)
    assert doubled.duration("success") == Duration(10, 2 * 2_743_273_348)


def test_a_model_loaded_in_between_counts_from_zero_and_one_gone_has_nothing():
    after = read_statistics(REPLIES["after"])
    assert between({}, after, "pytorch") == after["pytorch"]
    assert between(after, {}, "pytorch") is None
