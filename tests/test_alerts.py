"""The chart's PrometheusRule run by Prometheus's own ``promtool test rules`` on input
series where the right answer is known: the HPA's queue metric (recording rules) and
each alert firing, or not, as its input says; and the PodMonitor's scrape interval and
labels, which those rules depend on."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from cluster import chart
from tests.apt_tools import tool_or_skip

pytestmark = pytest.mark.unit

STEP = 15  # seconds between samples, the PodMonitor's interval
NAMESPACE = "default"  # chart.render's release namespace
FULLNAME = "detectors-triton-detectors"  # chart.render's release, fullname
POD_A = f"{FULLNAME}-7c9f8d6b5d-abcde"
POD_B = f"{FULLNAME}-7c9f8d6b5d-fghij"
SEVERITY = "warning"  # values.yaml's metrics.prometheusRule.alerts.labels


def rule_groups(overrides: dict | None = None) -> list[dict]:
    """The groups of the PrometheusRule the cpu values render, with monitoring on."""
    docs = chart.render([chart.CPU_VALUES], overrides or {}, (chart.MONITORING_API,))
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    return rule["spec"]["groups"]


def counter(name: str, pod: str, per_second: float, **labels: str) -> dict:
    """An input series that grows by ``per_second`` for 40 minutes."""
    text = ",".join(f'{k}="{v}"' for k, v in {"namespace": NAMESPACE, "pod": pod, **labels}.items())
    return {"series": f"{name}{{{text}}}", "values": f"0+{per_second * STEP}x160"}


def promtool_test(tmp_path: Path, groups: list[dict], tests: list[dict]) -> None:
    """Runs ``promtool test rules`` on ``groups`` and ``tests``; fails with its output,
    skips without promtool.

    The alerts' annotations are prose for people: they are left out here, so that each
    expected alert is its labels."""
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    spec = {"rule_files": [str(rules)], "evaluation_interval": f"{STEP}s",
            "tests": [{"interval": f"{STEP}s", **t} for t in tests]}  # fmt: skip
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = subprocess.run(
        [tool_or_skip("promtool"), "test", "rules", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def alert(name: str, at: str, *fired: dict) -> dict:
    """promtool's check that alert ``name`` fires at ``at`` with these labels (none:
    it does not fire)."""
    return {"alertname": name, "eval_time": at,
            "exp_alerts": [{"exp_labels": {"severity": SEVERITY, **f}} for f in fired]}  # fmt: skip


# --- the HPA's metric ---------------------------------------------------------------

QUEUE, OK = "nv_inference_queue_duration_us", "nv_inference_request_success"
DETECT_ALL_STEPS = ["image_decode", "fuse_detections"] + [
    f"{step}{fw}" for fw in ("pytorch", "tensorflow", "onnxruntime")
    for step in ("preprocess_", "", "postprocess_")
]  # fmt: skip


def test_queue_metric_counts_each_request_a_model_runs_once(tmp_path):
    # Every request any model runs waits 4 ms in its queue, on both pods: the answer is
    # 4000 us on both, whatever they serve. a: one detect_all request a second (its 11
    # steps, the three branches in parallel; the ensemble's own counter queues a little).
    # b: one detect_pytorch request a second and two direct calls a second to its
    # model, pytorch. c: idle. Summing the steps' queue per ensemble request, as the
    # rule did before, gave a 44000 (each branch counted) and b 20000 (the direct
    # calls' waits charged to the ensemble requests).
    inputs = [counter(OK, "a", 1, model="detect_all"), counter(QUEUE, "a", 50, model="detect_all")]
    for model in DETECT_ALL_STEPS:
        inputs += [counter(OK, "a", 1, model=model), counter(QUEUE, "a", 4000, model=model)]
    inputs += [counter(m, "b", rate, model="detect_pytorch") for m, rate in ((OK, 1), (QUEUE, 0))]
    b_models = (("preprocess_pytorch", 1), ("pytorch", 3), ("postprocess_pytorch", 1))
    for model, per_second in b_models:
        inputs += [counter(OK, "b", per_second, model=model),
                   counter(QUEUE, "b", 4000 * per_second, model=model)]  # fmt: skip
    inputs += [counter(m, "c", 0, model=x) for m in (OK, QUEUE) for x in ("detect_all", "pytorch")]
    record = "triton:queue_us_per_request:rate1m"
    expected = [{"labels": f'{record}{{namespace="{NAMESPACE}",pod="{pod}"}}', "value": value}
                for pod, value in (("a", 4000), ("b", 4000), ("c", 0))]  # fmt: skip
    recording = [g for g in rule_groups() if g["name"] == "triton-detectors"]
    promtool_test(tmp_path, recording, [{"input_series": inputs, "promql_expr_test": [
        {"expr": record, "eval_time": "5m", "exp_samples": expected},
        # One ensemble request a second on a and b: the ensembles, not their steps.
        {"expr": "triton:ensemble_requests:rate1m", "eval_time": "5m", "exp_samples": [
            {"labels": f'triton:ensemble_requests:rate1m{{namespace="{NAMESPACE}",pod="{p}"}}',
             "value": v} for p, v in (("a", 1), ("b", 1), ("c", 0))]},
    ]}])  # fmt: skip


# --- alerts ---------------------------------------------------------------------------


def test_pod_not_ready_fires_after_the_startup_allowance(tmp_path):
    # b never becomes ready; a is ready; the helm test pod (not the Deployment's) is not.
    ready = "kube_pod_status_ready"
    inputs = [
        {"series": f'{ready}{{condition="true",namespace="{NAMESPACE}",pod="{pod}"}}',
         "values": f"{value}x160"}
        for pod, value in ((POD_A, 1), (POD_B, 0), (f"{FULLNAME}-test-inference", 0))
    ]  # fmt: skip
    labels = {"condition": "true", "namespace": NAMESPACE, "pod": POD_B}
    promtool_test(tmp_path, rule_groups(), [{"input_series": inputs, "alert_rule_test": [
        # values.yaml's startup probe allows 10 x 60 s.
        alert("TritonDetectorsPodNotReady", "9m"),
        alert("TritonDetectorsPodNotReady", "11m", labels),
    ]}])  # fmt: skip


def test_queue_over_target_fires_after_5_minutes_over_the_hpas_target(tmp_path):
    # Both pods queue each request 8 ms, over the 5 ms target; the same load in another
    # namespace (another release) is not this release's.
    inputs = [counter(m, pod, rate, model="pytorch", **ns)
              for pod in (POD_A, POD_B) for ns in ({}, {"namespace": "other"})
              for m, rate in ((OK, 1), (QUEUE, 8000))]  # fmt: skip
    under = [counter(m, pod, rate, model="pytorch")
             for pod in (POD_A, POD_B) for m, rate in ((OK, 1), (QUEUE, 4000))]  # fmt: skip
    promtool_test(tmp_path, rule_groups(), [
        {"input_series": inputs, "alert_rule_test": [
            alert("TritonDetectorsQueueOverTarget", "5m"),
            alert("TritonDetectorsQueueOverTarget", "7m", {"namespace": NAMESPACE}),
        ]},
        {"input_series": under,
         "alert_rule_test": [alert("TritonDetectorsQueueOverTarget", "20m")]},
    ])  # fmt: skip


def test_hpa_at_its_maximum_fires_after_15_minutes_and_only_with_an_hpa(tmp_path):
    def hpa(current: int) -> list[dict]:
        labels = f'namespace="{NAMESPACE}",horizontalpodautoscaler="{FULLNAME}"'
        return [
            {"series": f"kube_horizontalpodautoscaler_status_current_replicas{{{labels}}}",
             "values": f"{current}x160"},
            {"series": f"kube_horizontalpodautoscaler_spec_max_replicas{{{labels}}}",
             "values": "8x160"},
        ]  # fmt: skip

    fired = {"namespace": NAMESPACE, "horizontalpodautoscaler": FULLNAME}
    promtool_test(tmp_path, rule_groups(), [
        {"input_series": hpa(8), "alert_rule_test": [
            alert("TritonDetectorsHPAAtMaximum", "14m"),
            alert("TritonDetectorsHPAAtMaximum", "16m", fired),
        ]},
        {"input_series": hpa(7), "alert_rule_test": [alert("TritonDetectorsHPAAtMaximum", "30m")]},
    ])  # fmt: skip
    fixed = rule_groups({"autoscaling": {"enabled": False}})
    assert "TritonDetectorsHPAAtMaximum" not in {r.get("alert") for g in fixed for r in g["rules"]}


def test_a_worker_crash_fires_for_10_minutes_from_the_first_one_on(tmp_path):
    # The supervisor's labelled counter is born at 1, on its model's first crash: b's at
    # 0 min, a's at 5 min. b counts a second crash at 20 min.
    crashes = "triton_worker_crashes_total"
    inputs = [
        {"series": f'{crashes}{{namespace="{NAMESPACE}",pod="{POD_A}",model="pytorch"}}',
         "values": "_x19 1x140"},
        {"series": f'{crashes}{{namespace="{NAMESPACE}",pod="{POD_B}",model="onnxruntime"}}',
         "values": "1x79 2x80"},
    ]  # fmt: skip
    a, b = ({"namespace": NAMESPACE, "pod": pod} for pod in (POD_A, POD_B))
    promtool_test(tmp_path, rule_groups(), [{"input_series": inputs, "alert_rule_test": [
        alert("TritonDetectorsWorkerCrashed", "4m", b),
        alert("TritonDetectorsWorkerCrashed", "6m", a, b),
        alert("TritonDetectorsWorkerCrashed", "11m", a),
        alert("TritonDetectorsWorkerCrashed", "17m"),
        alert("TritonDetectorsWorkerCrashed", "21m", b),
        alert("TritonDetectorsWorkerCrashed", "32m"),
    ]}])  # fmt: skip


def test_a_server_death_fires_for_10_minutes(tmp_path):
    # The launcher exports the counter at 0 from its start; a's tritonserver dies at 5 min.
    deaths = "triton_server_deaths_total"
    inputs = [
        {"series": f'{deaths}{{namespace="{NAMESPACE}",pod="{POD_A}"}}', "values": "0x19 1x140"},
        {"series": f'{deaths}{{namespace="{NAMESPACE}",pod="{POD_B}"}}', "values": "0x160"},
    ]  # fmt: skip
    promtool_test(tmp_path, rule_groups(), [{"input_series": inputs, "alert_rule_test": [
        alert("TritonDetectorsServerDied", "4m"),
        alert("TritonDetectorsServerDied", "6m", {"namespace": NAMESPACE, "pod": POD_A}),
        alert("TritonDetectorsServerDied", "20m"),
    ]}])  # fmt: skip


def test_failure_ratio_fires_over_its_limit_for_5_minutes(tmp_path):
    # 1 in 10 ensemble requests fail (limit 5 %); a component model's own failures are
    # not the clients' (they show in its ensemble's counter).
    def load(failed: float) -> list[dict]:
        return [counter("nv_inference_request_success", POD_A, 1 - failed, model="detect_all"),
                counter("nv_inference_request_failure", POD_A, failed, model="detect_all"),
                counter("nv_inference_request_failure", POD_A, 5, model="pytorch")]  # fmt: skip

    promtool_test(tmp_path, rule_groups(), [
        {"input_series": load(0.1), "alert_rule_test": [
            alert("TritonDetectorsFailureRatio", "4m"),
            alert("TritonDetectorsFailureRatio", "11m", {"namespace": NAMESPACE}),
        ]},
        {"input_series": load(0.01),
         "alert_rule_test": [alert("TritonDetectorsFailureRatio", "20m")]},
    ])  # fmt: skip


def test_alerts_can_be_turned_off_and_labelled():
    off = rule_groups({"metrics": {"prometheusRule": {"alerts": {"enabled": False}}}})
    assert [g["name"] for g in off] == ["triton-detectors"]
    page = {"alerts": {"labels": {"severity": "page"}}}
    paged = rule_groups({"metrics": {"prometheusRule": page}})
    alerts = [r for g in paged for r in g["rules"] if "alert" in r]
    assert len(alerts) == 6
    assert {r["labels"]["severity"] for r in alerts} == {"page"}


def test_pod_monitor_scrapes_every_15_s_and_both_objects_take_the_operators_label():
    # kube-prometheus-stack selects PodMonitors and PrometheusRules by `release`.
    labelled = {"labels": {"release": "kube-prometheus-stack"}}
    docs = chart.render([chart.CPU_VALUES],
                        {"metrics": {"podMonitor": labelled, "prometheusRule": labelled}},
                        (chart.MONITORING_API,))  # fmt: skip
    (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    # rate(...[1m]) in every rule needs two points a minute whatever Prometheus's global
    # interval is.
    assert [e["interval"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["15s", "15s"]
    for obj in (monitor, rule):
        assert obj["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_keda_scales_on_the_same_query_instead_of_prometheus_adapters_hpa(tmp_path):
    docs = chart.render([chart.CPU_VALUES], {"autoscaling": {"provider": "keda"}},
                        (chart.MONITORING_API,))  # fmt: skip
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    (scaled,) = [d for d in docs if d["kind"] == "ScaledObject"]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == FULLNAME
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 8)
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    (trigger,) = spec["triggers"]
    assert (trigger["type"], trigger["metricType"]) == ("prometheus", "AverageValue")
    assert trigger["metadata"]["threshold"] == "5000"
    # Two of this release's pods each queue 8 ms a request, and a pod of another
    # release 20 ms: the query sums this release's, 16000, and KEDA's HPA wants
    # ceil(16000 / 5000) = 4 pods, as the adapter's HPA does from their average 8000.
    inputs = [counter(m, pod, rate, model="pytorch", **ns)
              for pod, ns, wait in ((POD_A, {}, 8000), (POD_B, {}, 8000),
                                    (POD_A, {"namespace": "other"}, 20000))
              for m, rate in ((OK, 1), (QUEUE, wait))]  # fmt: skip
    recording = [g for g in rule_groups() if g["name"] == "triton-detectors"]
    query = trigger["metadata"]["query"]
    promtool_test(tmp_path, recording, [{"input_series": inputs, "promql_expr_test": [
        {"expr": query, "eval_time": "5m", "exp_samples": [{"labels": "{}", "value": 16000}]},
    ]}])  # fmt: skip
    # The HPA-at-maximum alert watches the HPA that KEDA makes.
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    (at_max,) = [r for g in rule["spec"]["groups"] for r in g["rules"]
                 if r.get("alert") == "TritonDetectorsHPAAtMaximum"]  # fmt: skip
    assert f'horizontalpodautoscaler="keda-hpa-{FULLNAME}"' in at_max["expr"]
