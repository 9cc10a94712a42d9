"""The soak command (``bench.soak``): how it sorts answers and finds workers, and a
short soak of the session's real server whose figures must add up.

The kill and the recovery are not soaked here: the launcher's crash test covers them.
"""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from bench import soak
from client.errors import is_busy
from ensemble.supervisor import stub_model


@pytest.mark.unit
def test_busy_unavailable_is_refused_and_everything_else_failed():
    def refused(status: str | None, message: str) -> bool:  # what the soak counts
        return is_busy(InferenceServerException(message, status))

    for message in ("Exceeds maximum queue size", "Request timeout expired"):
        assert refused("StatusCode.UNAVAILABLE", f"[x] {message} for model")
    # UNAVAILABLE without a busy message is a server that is down, not busy.
    assert not refused("StatusCode.UNAVAILABLE", "failed to connect to all addresses")
    assert not refused("StatusCode.INTERNAL", "Exceeds maximum queue size")
    assert not refused(None, "Stub process 'pytorch_0_0' is not healthy.")


@pytest.mark.unit
def test_a_worker_is_the_stub_running_that_models_script():
    stub = "/x/backends/python/triton_python_backend_stub"
    args = ["/tmp/repo/pytorch/1/model.py", "pytorch_0_0", "1048576"]
    assert stub_model([stub, *args]) == "pytorch"
    assert stub_model([stub, *args]) != "preprocess_pytorch"
    assert stub_model([stub, "/tmp/repo/preprocess_pytorch/1/model.py"]) != "pytorch"
    assert stub_model(["/usr/bin/python3", *args]) is None
    assert stub_model([stub]) is None


@pytest.mark.unit
def test_memory_summary_is_start_peak_end_in_gib():
    gib = 2**30
    samples = [(0.0, 2 * gib), (2.0, 3.5 * gib), (4.0, 2.25 * gib)]
    assert soak.memory_summary(samples) == {
        "start_gib": 2.0, "peak_gib": 3.5, "end_gib": 2.25, "samples": 3,
    }  # fmt: skip
    assert soak.memory_summary([]) is None


@pytest.mark.server
def test_a_short_soak_counts_every_request_and_measures_memory(triton_server, triton_url):
    pids = triton_server.pids if triton_server else None  # None: $DETECTOR_TEST_URL's server
    result = soak.soak(triton_url, 20.0, 4, server_pids=pids)

    assert result["sent"] == result["answered"] + result["refused"] + result["failed"]
    assert result["answered"] > 0, result["failures"]
    assert set(result["ensembles"]) == set(result["per_ensemble"])
    assert all(c["answered"] > 0 for c in result["per_ensemble"].values()), result
    per_second = result["per_second"]
    for outcome in soak.OUTCOMES:
        assert sum(per_second[outcome]) == result[outcome]
    assert result["throughput"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"]
    assert result["kill"] is None
    memory = result["memory"]
    if pids is None:  # a server elsewhere ($DETECTOR_TEST_URL): nothing to measure here
        assert memory is None
    else:
        assert memory["start_gib"] > 0 and memory["end_gib"] > 0
        assert memory["peak_gib"] >= max(memory["start_gib"], memory["end_gib"])
        assert memory["samples"] >= 5  # every 2 s over 20 s, plus start and end
    assert "requests    sent" in soak.format_report(result)
