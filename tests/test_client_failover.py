"""The client's retries and failover (client.retry, the endpoints of client.connection):
endpoint lists, the rotation and cooldowns, the bounded backoff with its jitter, the
loop that sends a request again, and real sockets on ports nothing listens on. Against
real servers: test_client_failover_server.py.

The refusals are tritonclient's exceptions shaped as tritonclient builds them from a
gRPC error, with grpcio's and Triton's words. A dead endpoint here is a loopback port
nothing listens on: the connection is refused at once.
"""

from __future__ import annotations

import random

import grpc
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from client import cli, connection, environment, errors
from client.api import DetectorClient
from client.errors import (
    ServerBusy,
    ServerUnavailable,
)
from client.retry import (
    NO_RETRY,
    WORKER_DEATH_RETRIES,
    EndpointPool,
    FailoverPolicy,
    RetryPolicy,
    backoff_ceilings,
    backoff_delays,
    send_failing_over,
)
from ensemble.contract import BUSY_MESSAGES, RECOVERING_MESSAGE, RECOVERY_RETRY_S
from ensemble.processes import free_port

pytestmark = pytest.mark.unit

MODEL = "detect_pytorch"  # one detector: the cheapest ensemble to serve
REFUSED = (  # what grpcio says when nothing listens
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
    "Failed to connect to remote host: Connection refused"
)


def dead() -> str:
    """A loopback endpoint nothing listens on."""
    return f"127.0.0.1:{free_port()}"


def grpc_error(code: grpc.StatusCode, msg: str) -> InferenceServerException:
    # as tritonclient.grpc builds it from a grpc.RpcError
    return InferenceServerException(msg=msg, status=str(code), debug_details="")


class Clock:
    """A clock the test moves by hand, and a sleep that records instead of waiting."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


# --- endpoints ---------------------------------------------------------------------------


def test_endpoints_are_split_on_commas_with_blanks_and_grpc_schemes_dropped():
    assert connection.parse_endpoints("a:8001") == ("a:8001",)
    assert connection.parse_endpoints(" a:8001 ,grpc://b:8002,\tc:8003\n") == (
        "a:8001",
        "b:8002",
        "c:8003",
    )


def test_a_sequence_of_endpoints_is_taken_in_its_order():
    assert connection.parse_endpoints(["b:2", " a:1 "]) == ("b:2", "a:1")
    assert connection.parse_endpoints(("a:1", "b:2,c:3")) == ("a:1", "b:2", "c:3")


@pytest.mark.parametrize(
    "url, words",
    [
        ("a:1,,b:2", "empty Triton endpoint in 'a:1,,b:2'"),
        ("a:1,", "empty Triton endpoint"),
        (" , ", "empty Triton endpoint"),
        (["a:1", " "], "empty Triton endpoint in ' '"),
        ([], "no Triton endpoint given"),
        ("a:1,b:2,a:1", "a:1 given twice"),
        ("a :1", "blank inside the Triton endpoint 'a :1'"),
        (["a:1", 8001], "a string host:port, got 8001"),
    ],
)
def test_bad_endpoint_lists_are_refused_saying_why(url, words):
    with pytest.raises(ValueError, match=words):
        connection.parse_endpoints(url)


def test_grpc_targets_that_resolve_to_many_addresses_are_kept_whole():
    assert connection.parse_endpoints("dns:///triton-headless:8001") == (
        "dns:///triton-headless:8001",
    )
    assert connection.parse_endpoints("dns:///a:1, b:2") == ("dns:///a:1", "b:2")
    # gRPC's ipv4: scheme takes a list of its own, separated by commas too
    target = "ipv4:10.0.0.1:8001,10.0.0.2:8001"
    assert connection.parse_endpoints(target) == (target,)


def test_several_endpoints_come_from_the_environment_too(monkeypatch):
    monkeypatch.setenv(environment.URL_ENV, "a:1, b:2")
    assert connection.resolve_endpoints() == ("a:1", "b:2")
    assert connection.resolve_url() == "a:1,b:2"
    assert connection.resolve_endpoints("c:3") == ("c:3",)  # the argument wins
    with DetectorClient() as client:
        assert client.endpoints == ("a:1", "b:2") and client.url == "a:1,b:2"


def test_loopback_is_told_for_addresses_and_grpc_targets():
    loopback = connection.is_loopback_url
    assert loopback("localhost:8001") and loopback("127.0.0.1:8001") and loopback("[::1]:8001")
    assert not loopback("gpu-host:8001") and not loopback("10.0.0.5:8001")
    assert loopback("dns:///localhost:8001")
    assert not loopback("dns:///triton-headless:8001")
    assert loopback("ipv4:127.0.0.1:1,127.0.0.1:2")
    assert not loopback("ipv4:127.0.0.1:1,10.0.0.2:2")


def test_the_channel_balances_over_every_address_of_a_name():
    assert dict(connection.channel_args())["grpc.lb_policy_name"] == "round_robin"


def test_cli_refuses_an_empty_endpoint_as_bad_usage(tmp_path, capsys):
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    code = cli.main([str(image), "--url", "127.0.0.1:1,", "--out", str(tmp_path / "out")])
    assert code == cli.EXIT_USAGE
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "detect: empty Triton endpoint in '127.0.0.1:1,': give host:port, several separated "
        "by a comma"
    )
    assert "several" in cli.build_parser().format_help()


# --- rotation, cooldown, backoff ---------------------------------------------------------


def test_rounds_start_one_endpoint_further_each_time():
    pool = EndpointPool(["a", "b", "c"])
    rounds = [pool.next_round() for _ in range(4)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_a_failed_endpoint_is_skipped_until_its_cooldown_is_over():
    clock = Clock()
    pool = EndpointPool(["a", "b", "c"], cooldown_s=5.0, clock=clock)
    pool.failed("b")
    assert pool.cooling() == ["b"]
    # round robin over the others, evenly
    assert [pool.next_round() for _ in range(4)] == [["a", "c"], ["c", "a"]] * 2
    clock.now += 4.9
    assert "b" not in pool.next_round()
    clock.now += 0.2
    assert "b" in pool.next_round() and pool.cooling() == []


def test_an_answer_ends_the_cooldown_and_all_cooling_means_all_are_tried():
    clock = Clock()
    pool = EndpointPool(["a", "b"], cooldown_s=5.0, clock=clock)
    pool.failed("a")
    pool.failed("b")
    assert sorted(pool.next_round()) == ["a", "b"]  # never give up without trying
    pool.answered("a")
    assert pool.next_round() == ["a"]


def test_backoff_ceilings_double_from_the_first_delay_up_to_the_cap():
    policy = RetryPolicy(attempts=7, first_delay_s=0.1, max_delay_s=1.0)
    assert backoff_ceilings(policy) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_backoff_delays_are_one_fewer_than_the_attempts_and_within_their_ceilings():
    policy = RetryPolicy()  # the default: 4 attempts, 0.1 s first, 2 s at most
    ceilings = backoff_ceilings(policy)
    rng = random.Random(7)
    runs = [backoff_delays(policy, rng) for _ in range(2000)]
    assert all(len(delays) == policy.attempts - 1 for delays in runs)
    for k, ceiling in enumerate(ceilings):
        waits = [delays[k] for delays in runs]
        assert min(waits) >= 0.0 and max(waits) <= ceiling <= policy.max_delay_s
        # full jitter: spread over the whole range, not bunched at the ceiling
        assert min(waits) < 0.1 * ceiling and max(waits) > 0.9 * ceiling
    # and they grow: the mean wait before each retry is about half its doubling ceiling
    means = [np.mean([delays[k] for delays in runs]) for k in range(len(ceilings))]
    assert means == sorted(means)
    assert means == pytest.approx([c / 2 for c in ceilings], rel=0.1)


def test_one_attempt_means_no_wait_and_bad_policies_are_refused():
    assert backoff_delays(NO_RETRY, random.Random(0)) == []
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="first_delay_s <= max_delay_s"):
        RetryPolicy(first_delay_s=3.0, max_delay_s=2.0)


def test_the_failover_backoff_doubles_and_is_capped_and_bounded():
    policy = FailoverPolicy(rounds=6, first_delay_s=0.1, max_delay_s=0.5)
    assert backoff_ceilings(policy.backoff) == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    rng = random.Random(3)
    for _ in range(200):
        waits = backoff_delays(policy.backoff, rng)
        assert len(waits) == policy.rounds - 1
        assert all(0 <= w <= c for w, c in zip(waits, [0.1, 0.2, 0.4, 0.5, 0.5], strict=True))
    assert backoff_delays(FailoverPolicy(rounds=1).backoff, rng) == []


@pytest.mark.parametrize(
    "options, words",
    [
        ({"rounds": 0}, "rounds must be at least 1"),
        ({"cooldown_s": -1}, "cooldown_s must be at least 0"),
        ({"first_delay_s": 3.0, "max_delay_s": 2.0}, "first_delay_s <= max_delay_s"),
    ],
)
def test_a_bad_failover_policy_is_refused(options, words):
    with pytest.raises(ValueError, match=words):
        FailoverPolicy(**options)


def test_only_a_plain_unavailable_is_unreachable():
    assert errors.is_unreachable(grpc_error(grpc.StatusCode.UNAVAILABLE, REFUSED))
    assert errors.is_unreachable(grpc_error(grpc.StatusCode.UNAVAILABLE, "Socket closed"))
    busy = grpc_error(grpc.StatusCode.UNAVAILABLE, BUSY_MESSAGES[0])
    assert not errors.is_unreachable(busy)
    key = "This protocol is restricted, expecting header 'triton-grpc-protocol-triton-api-key'"
    assert not errors.is_unreachable(grpc_error(grpc.StatusCode.UNAVAILABLE, key))
    assert not errors.is_unreachable(grpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad image"))
    assert not errors.is_unreachable(grpc_error(grpc.StatusCode.NOT_FOUND, "unknown model"))


class Endpoints:
    """Stands in for the endpoints of one request: each raises what it is given, in
    turn (the last for ever), or answers with its name when given nothing or None."""

    def __init__(self, **errors: list[InferenceServerException]):
        self.errors = errors
        self.calls: list[str] = []

    def __call__(self, endpoint: str) -> str:
        self.calls.append(endpoint)
        queue = self.errors.get(endpoint, [])
        error = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else None
        if error is not None:
            raise error
        return endpoint


def test_an_unreachable_endpoint_passes_the_request_to_the_next_without_waiting():
    clock = Clock()
    pool = EndpointPool(["a", "b"], clock=clock)
    call = Endpoints(a=[grpc_error(grpc.StatusCode.UNAVAILABLE, REFUSED)])
    assert send_failing_over(call, pool, sleep=clock.sleep) == "b"
    assert call.calls == ["a", "b"] and clock.waits == []
    assert pool.cooling() == ["a"]
    assert send_failing_over(call, pool, sleep=clock.sleep) == "b"  # a is skipped
    assert call.calls == ["a", "b", "b"]


def test_the_retries_end_after_the_rounds_with_every_endpoint_named():
    clock = Clock()
    pool = EndpointPool(["a", "b", "c"], clock=clock)
    refused = [grpc_error(grpc.StatusCode.UNAVAILABLE, REFUSED)]
    call = Endpoints(a=refused, b=refused, c=refused)
    policy = FailoverPolicy(rounds=3, first_delay_s=0.1, max_delay_s=0.15)
    with pytest.raises(ServerUnavailable) as raised:
        send_failing_over(call, pool, failover=policy, sleep=clock.sleep)
    error = raised.value
    assert len(call.calls) == error.attempts == 9  # rounds x endpoints
    assert sorted(error.endpoints) == ["a", "b", "c"] and error.url == call.calls[-1]
    assert len(clock.waits) == 2  # between rounds only
    assert all(0 <= w <= c for w, c in zip(clock.waits, [0.1, 0.15], strict=True))
    assert str(error).startswith("none of the Triton servers at ")
    assert all(e in str(error) for e in "abc") and "9 tries" in str(error)
    assert {e: s.unreachable for e, s in pool.stats().items()} == {"a": 3, "b": 3, "c": 3}


def test_a_busy_refusal_is_retried_on_the_next_endpoint_after_a_wait():
    clock = Clock()
    pool = EndpointPool(["a", "b"], clock=clock)
    busy = grpc_error(grpc.StatusCode.UNAVAILABLE, BUSY_MESSAGES[0])
    call = Endpoints(a=[busy, busy])
    assert send_failing_over(call, pool, sleep=clock.sleep) == "b"
    assert call.calls == ["a", "b"] and len(clock.waits) == 1
    assert pool.cooling() == []  # a busy server is up: no cooldown


def test_busy_refusals_on_one_endpoint_are_retried_after_growing_jittered_waits():
    clock = Clock()
    policy = RetryPolicy(attempts=4, first_delay_s=0.1, max_delay_s=2.0)
    busy = grpc_error(grpc.StatusCode.UNAVAILABLE, BUSY_MESSAGES[0])
    call = Endpoints(a=[busy, busy, None])
    pool = EndpointPool(["a"], clock=clock)
    got = send_failing_over(call, pool, retry=policy, rng=random.Random(1), sleep=clock.sleep)
    assert got == "a" and call.calls == ["a"] * 3
    assert len(clock.waits) == 2
    assert all(0 <= w <= c for w, c in zip(clock.waits, backoff_ceilings(policy), strict=False))


def test_a_server_busy_through_every_retry_is_server_busy_saying_how_often():
    clock = Clock()
    pool = EndpointPool(["a", "b"], clock=clock)
    busy = [grpc_error(grpc.StatusCode.UNAVAILABLE, BUSY_MESSAGES[0])]
    call = Endpoints(a=busy, b=busy)
    with pytest.raises(ServerBusy) as raised:
        send_failing_over(call, pool, retry=RetryPolicy(attempts=3), sleep=clock.sleep)
    assert raised.value.attempts == 3 and len(call.calls) == 3
    assert len(clock.waits) == 2  # no wait after the last attempt
    assert raised.value.url == call.calls[-1]  # the endpoint that refused last
    assert str(raised.value) == (
        f"Triton server at {call.calls[-1]} is busy: the request was refused 3 times "
        f"(server said: {BUSY_MESSAGES[0]})"
    )


def test_no_retry_sends_a_busy_refusal_once():
    clock = Clock()
    call = Endpoints(a=[grpc_error(grpc.StatusCode.UNAVAILABLE, BUSY_MESSAGES[0])])
    with pytest.raises(ServerBusy):
        send_failing_over(call, EndpointPool(["a"]), retry=NO_RETRY, sleep=clock.sleep)
    assert call.calls == ["a"] and clock.waits == []


class MovingClock(Clock):
    """A clock that a sleep moves on."""

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.now += seconds


# The front's refusal of a model being reloaded, and Triton's answer from a dead worker.
RELOADING = grpc_error(
    grpc.StatusCode.UNAVAILABLE,
    f"model '{MODEL}' {RECOVERING_MESSAGE}; try again in {RECOVERY_RETRY_S} s",
)
DEAD_WORKER = grpc_error(
    grpc.StatusCode.INTERNAL,
    "Failed to process the request(s) for model 'preprocess_pytorch_0_0', message: Stub "
    "process 'preprocess_pytorch_0_0' is not healthy.",
)


def test_a_model_being_reloaded_is_neither_unreachable_nor_busy_but_recovering():
    assert errors.is_recovering(RELOADING) and not errors.is_unreachable(RELOADING)
    assert not errors.is_busy(RELOADING)
    assert errors.is_worker_death(DEAD_WORKER) and not errors.is_recovering(DEAD_WORKER)
    http = InferenceServerException(msg=f"model 'm' {RECOVERING_MESSAGE}", status="503")
    assert errors.is_recovering(http) and not errors.is_busy(http)
    not_found = grpc_error(grpc.StatusCode.NOT_FOUND, f"'{MODEL}' has no available versions")
    assert not errors.is_recovering(not_found)


def test_a_request_rides_out_a_reload_retrying_at_the_servers_pace():
    clock = MovingClock()
    pool = EndpointPool(["a"], clock=clock)
    # a dying worker, then ten seconds of reload
    call = Endpoints(a=[DEAD_WORKER, *[RELOADING] * 12, None])
    got = send_failing_over(call, pool, rng=random.Random(3), sleep=clock.sleep, clock=clock)
    assert got == "a" and len(call.calls) == 14
    assert all(0.5 * RECOVERY_RETRY_S <= w <= RECOVERY_RETRY_S for w in clock.waits)
    assert pool.stats()["a"].recovering == 13 and pool.cooling() == []


def test_a_reload_longer_than_the_recovery_time_is_model_not_ready():
    clock = MovingClock()
    call = Endpoints(a=[RELOADING])
    with pytest.raises(errors.ModelNotReady) as raised:
        send_failing_over(
            lambda e: call(e), EndpointPool(["a"], clock=clock), retry=RetryPolicy(recovery_s=5),
            rng=random.Random(3), sleep=clock.sleep, clock=clock,
        )  # fmt: skip
    assert sum(clock.waits) == pytest.approx(5.0)  # the last wait stops at the limit
    assert RECOVERING_MESSAGE in str(raised.value)


def test_a_request_that_keeps_meeting_a_dead_worker_is_sent_again_only_twice():
    # it may be the request that kills the worker
    clock = MovingClock()
    call = Endpoints(a=[DEAD_WORKER])
    with pytest.raises(errors.InferenceFailed, match="is not healthy"):
        send_failing_over(call, EndpointPool(["a"]), sleep=clock.sleep, clock=clock)
    assert len(call.calls) == 1 + WORKER_DEATH_RETRIES


def test_a_reload_is_ridden_out_on_another_endpoint_and_no_retry_means_none():
    clock = MovingClock()
    call = Endpoints(a=[RELOADING])
    pool = EndpointPool(["a", "b"], clock=clock)
    assert send_failing_over(call, pool, sleep=clock.sleep, clock=clock) == "b"
    assert call.calls == ["a", "b"] and len(clock.waits) == 1
    with pytest.raises(errors.ModelNotReady):
        send_failing_over(call, EndpointPool(["a"]), retry=NO_RETRY, sleep=clock.sleep)


@pytest.mark.parametrize(
    "code, msg",
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "image 0: cannot decode"),
        (grpc.StatusCode.NOT_FOUND, "Request for unknown model"),
        (grpc.StatusCode.UNAVAILABLE, "This protocol is restricted, expecting header 'x'"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),
        (grpc.StatusCode.INTERNAL, "stub died"),
        ("503", "Service Unavailable"),  # HTTP's, without a busy server's words
    ],
)
def test_the_requests_own_errors_are_never_sent_again(code, msg):
    clock = Clock()
    pool = EndpointPool(["a", "b"], clock=clock)
    call = Endpoints(a=[InferenceServerException(msg=msg, status=str(code))])
    with pytest.raises(errors.DetectorError):
        send_failing_over(call, pool, sleep=clock.sleep)
    assert call.calls == ["a"] and clock.waits == []


# --- real sockets, nothing listening ---------------------------------------------------


def test_a_client_of_dead_endpoints_raises_naming_them_all_after_its_rounds():
    endpoints = [dead(), dead()]
    with DetectorClient(endpoints) as client:
        assert client.is_ready() is False
        with pytest.raises(ServerUnavailable) as raised:
            client.detect([b"\x89PNG\r\n\x1a\n"], model=MODEL)
        stats = client.endpoint_stats()
    error = raised.value
    rounds = FailoverPolicy().rounds
    assert error.attempts == rounds * len(endpoints)
    assert sorted(error.endpoints) == sorted(endpoints)
    assert all(e in str(error) for e in endpoints) and "\n" not in str(error)
    # is_ready's one try each, then every round of the request
    assert {e: (s.sent, s.unreachable) for e, s in stats.items()} == {
        e: (rounds + 1, rounds + 1) for e in endpoints
    }


def test_one_dead_address_is_retried_with_backoff_and_keeps_its_message():
    url = dead()
    with DetectorClient(url, failover=FailoverPolicy(rounds=3)) as client:
        with pytest.raises(ServerUnavailable) as raised:
            client.ready_models()
        assert client.endpoint_stats()[url].unreachable == 3
    assert raised.value.attempts == 3 and raised.value.endpoints == (url,)
    assert str(raised.value) == (
        f"Triton server at {url} is not reachable: is it running? "
        f"start it with `{errors.SERVE_COMMAND}`"
    )
