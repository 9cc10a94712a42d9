"""The chart's PrometheusRule run by Prometheus's own ``promtool test rules`` on input
series where the right answer is known: the HPA's queue metric (recording rules) and
each alert firing, or not, as its input says."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from cluster import chart
from tests.apt_tools import needs_tools, tool_path

pytestmark = [pytest.mark.unit, needs_tools("promtool")]

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
    """Runs ``promtool test rules`` on ``groups`` and ``tests``; fails with its output.

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
        [tool_path("promtool"), "test", "rules", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


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
