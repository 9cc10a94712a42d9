"""The client's failover against real servers: the session's, a dead endpoint beside
it, a name gRPC resolves, and a second server of its own that stops mid-run. The pure
parts: test_client_failover.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from client.api import DetectorClient
from client.errors import InvalidImage
from client.retry import FailoverPolicy
from ensemble.processes import free_port

pytestmark = pytest.mark.server

MODEL = "detect_pytorch"  # one detector: the cheapest ensemble to serve


def dead() -> str:
    """A loopback endpoint nothing listens on."""
    return f"127.0.0.1:{free_port()}"


def boxes(results) -> list[list[tuple]]:
    return [
        [(d.label, round(d.score, 4), *(round(v, 1) for v in (d.x1, d.y1, d.x2, d.y2)))
         for d in r.detections]
        for r in results
    ]  # fmt: skip


def test_a_dead_endpoint_first_costs_no_request(triton_url, photos):
    names = ["astronaut", "coffee", "horse", "motorcycle_left", "chelsea"] * 2
    gone = dead()
    with DetectorClient(triton_url) as alone:
        expected = [boxes(alone.detect([photos[n]], model=MODEL)) for n in names]
    # a cooldown longer than the run: the dead endpoint is tried once, then left out
    with DetectorClient([gone, triton_url], failover=FailoverPolicy(cooldown_s=3600)) as client:
        assert client.is_ready()  # tries the dead one first: the rotation starts there
        assert MODEL in client.ensembles() and client.labels(MODEL)
        got = [boxes(client.detect([photos[n]], model=MODEL)) for n in names]
        stats = client.endpoint_stats()
    assert got == expected and any(expected)
    assert stats[gone].sent == stats[gone].unreachable == 1
    assert stats[triton_url].unreachable == 0
    assert stats[triton_url].answered >= len(names)


def test_an_invalid_image_is_sent_once(triton_url):
    port = triton_url.rsplit(":", 1)[1]
    # two names of the one server: a second try anywhere would be counted
    with DetectorClient([f"127.0.0.1:{port}", f"localhost:{port}"]) as client:
        client.model_info(MODEL)
        before = sum(s.sent for s in client.endpoint_stats().values())
        with pytest.raises(InvalidImage):
            client.detect([b"definitely not an image"], model=MODEL)
        after = sum(s.sent for s in client.endpoint_stats().values())
    assert after - before == 1


def test_a_name_grpc_resolves_is_served_round_robin(triton_url, photos):
    port = triton_url.rsplit(":", 1)[1]
    with DetectorClient(f"dns:///localhost:{port}") as client:
        (result,) = client.detect([photos["coffee"]], model=MODEL)
    assert "cup" in result.summary()


@pytest.mark.slow
def test_a_replica_stopping_mid_run_loses_no_request(triton_url, photos, tmp_path: Path):
    """Two real servers behind one client, driven from two threads; one server stops
    (drains, then exits) mid-run. Every request is answered, by both servers before
    the stop, and the stopped one is tried again and failed over."""
    from ensemble.server import running_server

    with DetectorClient(triton_url) as alone:
        (reference,) = boxes(alone.detect([photos["coffee"]], model=MODEL))
    failures: list[BaseException] = []
    answers: list[list[tuple]] = []
    done = threading.Event()
    with running_server(load=(MODEL,), workdir=tmp_path) as second:
        client = DetectorClient([second.grpc_url, triton_url])

        def drive() -> None:
            while not done.is_set():
                try:
                    (result,) = boxes(client.detect([photos["coffee"]], model=MODEL))
                except Exception as e:  # noqa: BLE001 - every failure is counted
                    failures.append(e)
                else:
                    answers.append(result)

        def wait_for(condition, what: str) -> None:
            limit = time.monotonic() + 120  # against a hang, not a speed check
            while not condition():
                assert time.monotonic() < limit, what
                time.sleep(0.05)

        drivers = [threading.Thread(target=drive) for _ in range(2)]
        for t in drivers:
            t.start()
        try:
            stats = client.endpoint_stats
            wait_for(
                lambda: min(s.answered for s in stats().values()) >= 3 or failures,
                "both servers to answer",
            )
            before = stats()
            second.stop()
            after_stop = len(answers)
            wait_for(lambda: len(answers) >= after_stop + 20 or failures, "answers after")
        finally:
            done.set()
            for t in drivers:
                t.join()
            client.close()
    final = stats()
    print(f"answered {len(answers)}; before the stop {before}; at the end {final}")
    assert failures == []
    assert before[second.grpc_url].answered > 0 and before[triton_url].answered > 0
    assert final[second.grpc_url].unreachable > 0  # it was tried after the stop
    assert final[triton_url].unreachable == 0
    assert all(a == reference for a in answers)
