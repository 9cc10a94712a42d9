"""The local multi-replica run end to end (``make cluster``, quick and with two
replicas): the launcher with the chart's arguments twice, real HAProxy in front, real
Prometheus with the chart's recording rules. Each test reads one part of the same run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.photos import photo_files
from cluster import chart
from cluster.local import QUICK, REPO, Cluster, autoscaling_of, run

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def measured() -> dict:
    for tool in ("haproxy", "prometheus", "promtool"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.fail(f"{tool} is not installed: make setup installs it")
    autoscaled = chart.render([chart.CPU_VALUES], {"autoscaling": {"enabled": True}})
    autoscaling = autoscaling_of(autoscaled, chart.adapter_rules())
    cluster = Cluster(2, REPO / "models.toml", [chart.CPU_VALUES])
    try:
        cluster.start()
        return run(cluster, QUICK, photo_files("jpeg"), autoscaling)
    finally:
        cluster.stop()


def test_one_clients_requests_go_to_every_replica(measured):
    # One client, one HTTP/2 connection: a balancer per connection would send them all
    # to one replica.
    low = measured["load"]["low"]
    assert low["failed"] == 0
    assert all(n > 0 for n in low["spread"]["requests"].values()), low["spread"]
    high = measured["load"]["high"]
    assert high["failed"] == 0
    assert high["spread"]["max_over_min"] is not None
    assert high["spread"]["max_over_min"] < 1.5, high["spread"]


def test_a_drained_replica_loses_no_request_and_rejoins(measured):
    drain = measured["drain"]
    assert drain["answered"] > 0
    assert drain["failed"] == 0, drain["failures"]
    assert drain["exit_code"] == 0


def test_a_killed_replica_loses_at_most_its_requests_in_flight_then_traffic_moves_on(measured):
    kill = measured["kill"]
    assert kill["out_of_rotation_after_s"] is not None, "the health check never took it out"
    assert kill["lost"] <= 4 * measured["replicas"], kill  # at most every client's one request
    assert kill["lost_after_out_of_rotation"] == 0, kill
    assert kill["answered"] > 0


def test_the_hpa_wants_more_replicas_under_overload_than_idle(measured):
    low, high = measured["load"]["low"]["hpa"], measured["load"]["overload"]["hpa"]
    assert len(high["metric_per_pod"]) == measured["replicas"]
    assert max(high["metric_per_pod"].values()) > max(low["metric_per_pod"].values())
    assert low["desired_replicas"] == measured["autoscaling"]["min_replicas"]
    assert high["desired_replicas"] > low["desired_replicas"]


def test_every_dashboard_panel_returns_data(measured):
    queries = measured["dashboard"]
    assert queries
    assert [q["panel"] for q in queries if not q["series"]] == []
