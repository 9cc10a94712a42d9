"""A short soak (``bench.soak``) of the session's real server: its figures add up."""

from __future__ import annotations

import pytest

from bench import soak
from bench.load import OUTCOMES

pytestmark = pytest.mark.server


def test_a_short_soak_counts_every_request_and_measures_memory(triton_server, triton_url):
    pids = triton_server.pids if triton_server else None  # None: $DETECTOR_TEST_URL's server
    # 10 s: each ensemble answers several times and memory is sampled five times or more.
    result = soak.soak(triton_url, 10.0, 4, server_pids=pids)

    assert result["sent"] == result["answered"] + result["refused"] + result["failed"]
    assert result["answered"] > 0, result["failures"]
    assert set(result["ensembles"]) == set(result["per_ensemble"])
    assert all(c["answered"] > 0 for c in result["per_ensemble"].values()), result
    per_second = result["per_second"]
    for outcome in OUTCOMES:
        assert sum(per_second[outcome]) == result[outcome]
    assert result["throughput"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"]
    assert result["kill"] is None
    memory = result["memory"]
    if pids is None:  # a server elsewhere ($DETECTOR_TEST_URL): nothing to measure here
        assert memory is None
    else:
        assert memory["start_gib"] > 0 and memory["end_gib"] > 0
        assert memory["peak_gib"] >= max(memory["start_gib"], memory["end_gib"])
        assert memory["samples"] >= 5  # every 2 s over 10 s, plus start and end
    assert "requests    sent" in soak.format_report(result)
