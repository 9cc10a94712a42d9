"""The local multi-replica run's pure parts (cluster.local): a replica's arguments from
the chart's, the HAProxy and Prometheus configurations (checked by the real haproxy and
promtool), Kubernetes' HPA formula and quantities, the dashboard's queries."""

from __future__ import annotations

import subprocess

import pytest

from cluster.local import (
    Autoscaling,
    autoscaling_of,
    ensemble_requests,
    grafana_expr,
    haproxy_config,
    hpa_desired,
    panel_queries,
    parse_quantity,
    prometheus_config,
    replica_argv,
    spread,
)
from ensemble.processes import Ports
from ensemble.server import argument_parser
from tests.apt_tools import needs_tools, tool_path

pytestmark = pytest.mark.unit

CHART_ARGS = ["--host", "0.0.0.0", "--models", "/opt/detectors/models.toml",
              "--target", "cpu", "--workdir", "/work", "--http-port", "8000",
              "--grpc-port=8001", "--metrics-port", "8002", "--supervisor-port", "8003",
              "--max-inflight", "24"]  # fmt: skip
PORTS = Ports(18100, 18101, 18102, 18103)


def test_a_replica_keeps_the_charts_arguments_but_its_own_address_ports_and_folders(tmp_path):
    argv = replica_argv(CHART_ARGS, PORTS, tmp_path / "w", tmp_path / "m.toml")
    args = argument_parser().parse_args(argv)
    assert args.host == "127.0.0.1"
    assert (args.http_port, args.grpc_port, args.metrics_port, args.supervisor_port) == (
        18100, 18101, 18102, 18103,
    )  # fmt: skip
    assert args.workdir == tmp_path / "w"
    assert args.models == tmp_path / "m.toml"
    assert args.max_inflight == 24  # the chart's own setting stays
    assert args.target == "cpu"


def test_a_replica_sets_what_the_chart_leaves_to_the_launchers_defaults(tmp_path):
    argv = replica_argv(["--target", "cpu"], PORTS, tmp_path, tmp_path / "m.toml")
    args = argument_parser().parse_args(argv)
    assert args.grpc_port == 18101 and args.host == "127.0.0.1"
    assert args.workdir == tmp_path


def test_arguments_the_launcher_does_not_take_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not the launcher's"):
        replica_argv([*CHART_ARGS, "--strict-model-config"], PORTS, tmp_path, tmp_path)


REPLICAS = [("replica-0", Ports(18200, 18201, 18202, 18203)),
            ("replica-1", Ports(18210, 18211, 18212, 18213))]  # fmt: skip


@needs_tools("haproxy")
def test_haproxy_accepts_the_configuration_and_balances_each_replica_by_request(tmp_path):
    text = haproxy_config(REPLICAS, 18300, 18301, 18302, tmp_path / "sock")
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    check = subprocess.run([tool_path("haproxy"), "-c", "-f", str(path)], capture_output=True,
                           text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    # gRPC is HTTP/2 to each replica's gRPC port, health-checked on its HTTP port.
    assert "server replica-1 127.0.0.1:18211 proto h2 check port 18210" in text
    assert "bind 127.0.0.1:18300 proto h2" in text
    assert "option httpchk GET /v2/health/ready" in text


@needs_tools("promtool")
def test_prometheus_accepts_the_configuration_with_the_labels_a_pod_has(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("groups:\n  - name: t\n    rules:\n"
                     "      - record: a:b:rate1m\n        expr: sum(rate(up[1m]))\n")  # fmt: skip
    path = tmp_path / "prometheus.yml"
    text = prometheus_config(REPLICAS, rules, 18302)
    path.write_text(text)
    check = subprocess.run([tool_path("promtool"), "check", "config", str(path)],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert 'targets: ["127.0.0.1:18212"]' in text
    assert 'labels: {namespace: "local", pod: "replica-1"}' in text


@pytest.mark.parametrize(
    ("value", "number"),
    [("100k", 100_000.0), ("250m", 0.25), ("1.5", 1.5), ("2Mi", 2 * 2**20), (30, 30.0),
     ("1e3", 1000.0)],
)  # fmt: skip
def test_kubernetes_quantities(value, number):
    assert parse_quantity(value) == pytest.approx(number)


@pytest.mark.parametrize("value", ["", "fast", "10 q", "1.2.3"])
def test_what_is_not_a_quantity_is_refused(value):
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(value)


# Kubernetes' documented examples: a metric twice its target doubles the replicas, half
# halves them, and within 10 % nothing changes; the bounds clamp.
@pytest.mark.parametrize(
    ("current", "values", "target", "expected"),
    [
        (2, [200.0, 200.0], 100.0, 4),
        (4, [50.0, 50.0, 50.0, 50.0], 100.0, 2),
        (3, [105.0, 108.0, 100.0], 100.0, 3),  # ratio 1.043: within the tolerance
        (3, [120.0, 120.0, 120.0], 100.0, 4),  # ceil(3.6)
        (3, [0.0, 0.0, 0.0], 100.0, 1),  # idle: down to the minimum
        (3, [5000.0, 5000.0, 5000.0], 100.0, 8),  # clamped to the maximum
        (3, [], 100.0, 3),  # no metric: unchanged
    ],
)
def test_hpa_desired_follows_kubernetes_formula(current, values, target, expected):
    assert hpa_desired(current, values, target, min_replicas=1, max_replicas=8) == expected


def test_the_hpas_metric_is_found_through_the_adapters_rule():
    docs = [
        {"kind": "Deployment"},
        {"kind": "HorizontalPodAutoscaler", "spec": {
            "minReplicas": 2, "maxReplicas": 6,
            "metrics": [{"type": "Pods", "pods": {
                "metric": {"name": "triton_queue_us_per_request"},
                "target": {"type": "AverageValue", "averageValue": "50k"}}}]}},
    ]  # fmt: skip
    rules = [
        {"seriesQuery": 'other:series{namespace!=""}', "name": {"as": "other"}},
        {"seriesQuery": 'triton:queue_us_per_request:rate1m{namespace!="",pod!=""}',
         "name": {"as": "triton_queue_us_per_request"}},
    ]  # fmt: skip
    assert autoscaling_of(docs, rules) == Autoscaling(
        "triton_queue_us_per_request", "triton:queue_us_per_request:rate1m", 50_000.0, 2, 6
    )
    with pytest.raises(ValueError, match="no prometheus-adapter rule"):
        autoscaling_of(docs, rules[:1])


def test_every_panel_query_is_found_with_grafanas_variables_put_in():
    dashboard = {"panels": [
        {"title": "A", "targets": [{"expr": 'sum(rate(x{pod=~"$pod"}[$__rate_interval]))'}]},
        {"type": "row", "title": "row", "panels": [
            {"title": "B", "targets": [{"expr": 'y{namespace="$namespace"}'}, {"refId": "no"}]},
        ]},
        {"title": "text", "type": "text"},
    ]}  # fmt: skip
    assert panel_queries(dashboard) == [
        ("A", 'sum(rate(x{pod=~".*"}[1m]))'),
        ("B", 'y{namespace="local"}'),
    ]
    assert grafana_expr("rate(z[${__rate_interval}])") == "rate(z[1m])"


def test_spread_shares_and_evenness():
    assert spread({"a": 30, "b": 60}) == {
        "requests": {"a": 30, "b": 60}, "shares": {"a": 0.333, "b": 0.667}, "max_over_min": 2.0,
    }  # fmt: skip
    assert spread({"a": 0, "b": 5})["max_over_min"] is None


def test_ensemble_requests_counts_only_the_detection_ensembles():
    text = (
        "# HELP nv_inference_request_success Number of successful inference requests\n"
        'nv_inference_request_success{model="detect_all",version="1"} 7\n'
        'nv_inference_request_success{model="detect_pytorch",version="1"} 5\n'
        'nv_inference_request_success{model="pytorch",version="1"} 12\n'
        'nv_inference_request_failure{model="detect_all",reason="OTHER",version="1"} 3\n'
    )
    assert ensemble_requests(text) == 12
