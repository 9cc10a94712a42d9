"""bench.load, the one closed-loop load generator: which photo goes to which model, how
requests end and are sorted, when the load stops, and the one latency summary."""

from __future__ import annotations

import threading
import time

import pytest
from tritonclient.utils import InferenceServerException

from bench.load import ANSWERED, FAILED, REFUSED, Load, classify, latency_summary

pytestmark = pytest.mark.unit


def recording(sent: list, fail=lambda target, photo: None):
    """A connection per thread that records each (target, photo) and raises what
    ``fail`` returns, if anything; the threads' connections closed are counted."""
    closed = []

    def connect():
        def send(target: str, photo: bytes) -> None:
            sent.append((target, photo))
            error = fail(target, photo)
            if error is not None:
                raise error

        return send, lambda: closed.append(1)

    return connect, closed


def test_every_photo_goes_through_every_model_in_turn():
    sent: list = []
    connect, closed = recording(sent)
    load = Load(connect, ["a", "b"], [b"1", b"2", b"3"], 1, requests=6).run()
    assert sent == [("a", b"1"), ("b", b"1"), ("a", b"2"), ("b", b"2"), ("a", b"3"), ("b", b"3")]
    assert [r.target for r in load.records] == ["a", "b"] * 3
    assert closed == [1]


def test_a_count_bounds_the_requests_of_all_threads_together():
    sent: list = []
    connect, closed = recording(sent)
    load = Load(connect, ["a", "b", "c", "d"], [b"x"], 8, requests=50).run()
    assert len(sent) == len(load.records) == 50
    assert {t for t, _ in sent} == {"a", "b", "c", "d"} and len(closed) == 8
    assert load.count(ANSWERED) == 50 and load.seconds > 0


UNAVAILABLE = "StatusCode.UNAVAILABLE"


def test_a_busy_refusal_is_refused_and_anything_else_failed_with_its_first_line():
    busy = InferenceServerException("Exceeds maximum queue size\ntrace", UNAVAILABLE)
    down = InferenceServerException("failed to connect to all addresses", UNAVAILABLE)
    assert classify(busy) == (REFUSED, f"[{UNAVAILABLE}] Exceeds maximum queue size")
    assert classify(down) == (FAILED, f"[{UNAVAILABLE}] failed to connect to all addresses")
    internal = InferenceServerException("Exceeds maximum queue size", "StatusCode.INTERNAL")
    assert classify(internal)[0] == FAILED  # a busy message is a refusal only as UNAVAILABLE
    assert classify(ConnectionResetError("reset\nby peer")) == (
        FAILED, "ConnectionResetError: reset",
    )  # fmt: skip

    errors = {"b": busy, "c": ValueError("bad answer")}
    connect, _ = recording([], lambda target, photo: errors.get(target))
    load = Load(connect, ["a", "b", "c"], [b"x"], 1, requests=3).run()
    assert [r.outcome for r in load.records] == [ANSWERED, REFUSED, FAILED]
    assert load.records[2].error == "ValueError: bad answer"
    figures = load.figures()
    assert (figures[ANSWERED], figures[REFUSED], figures[FAILED]) == (1, 1, 1)
    assert figures["failures"] == {"ValueError: bad answer": 1} and figures["n"] == 1


def test_a_deadline_or_stop_ends_the_load_after_the_requests_in_flight():
    def slow(target, photo):
        time.sleep(0.05)

    connect, _ = recording([], slow)
    load = Load(connect, ["a"], [b"x"], 2, duration_s=0.3).run()
    assert 0.3 <= load.seconds < 1.0
    assert all(r.start < 0.3 for r in load.records) and load.count(ANSWERED) >= 4

    started = threading.Event()
    connect, _ = recording([], lambda target, photo: started.set() or slow(target, photo))
    with Load(connect, ["a"], [b"x"], 2) as running:
        assert started.wait(5)
    assert running.count(ANSWERED) >= 1 and running.seconds < 1.0


def test_latency_summary_in_milliseconds_from_seconds():
    summary = latency_summary([0.1, 0.2, 0.3, 0.4], digits=1)
    assert summary == {"n": 4, "mean_ms": 250.0, "p50_ms": 250.0, "p90_ms": 370.0,
                       "p95_ms": 385.0, "p99_ms": 397.0, "max_ms": 400.0}  # fmt: skip
    empty = latency_summary([])
    assert empty["n"] == 0 and empty["mean_ms"] is None and empty["max_ms"] is None
