"""The Helm chart rendered offline (helm-python-sdk), validated against the Kubernetes
1.29-1.33 schemas, checked for consistency; its recording rules, dashboard and
prometheus-adapter rule checked with Prometheus's own promtool."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from cluster import chart
from ensemble.server import argument_parser
from tests.apt_tools import tool_or_skip

pytestmark = pytest.mark.unit

# Triton's metrics the rules and the dashboard read (Triton 2.51's names).
TRITON_METRICS = {
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: value_set.render() for name, value_set in chart.VALUE_SETS.items()}


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def deployment(docs: list[dict]) -> dict:
    (d,) = of_kind(docs, "Deployment")
    return d


def container(docs: list[dict]) -> dict:
    (c,) = deployment(docs)["spec"]["template"]["spec"]["containers"]
    return c


def recorded_names() -> set[str]:
    rules = yaml.safe_load(chart.RECORDING_RULES.read_text())
    return {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(chart.DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def promtool(*args: str) -> subprocess.CompletedProcess:
    """Prometheus's promtool (Debian's prometheus package) on ``args``; skips without it."""
    return subprocess.run(
        [tool_or_skip("promtool"), *args], capture_output=True, text=True, timeout=60
    )


# --- rendering and validation -----------------------------------------------------


def test_value_sets_cover_cpu_gpu_autoscaling_and_monitoring():
    names = set(chart.VALUE_SETS)
    assert {"cpu", "gpu", "cpu-fixed", "gpu-autoscaling", "cpu-monitoring"} <= names


@pytest.mark.parametrize("name", list(chart.VALUE_SETS))
def test_every_value_set_is_valid_on_kubernetes_1_29_to_1_33(rendered, name):
    docs = rendered[name]
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap"} <= {
        d["kind"] for d in docs
    }
    assert chart.KUBERNETES_VERSIONS == ("1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0")
    assert chart.validate(docs) == []


@pytest.mark.parametrize("name", list(chart.VALUE_SETS))
def test_every_value_set_is_consistent(rendered, name):
    assert chart.check_consistency(rendered[name]) == []


def test_hpa_is_autoscaling_v2_and_only_there_when_autoscaling_is_on(rendered):
    for name, on in (("cpu", True), ("cpu-fixed", False), ("gpu", False),
                     ("gpu-autoscaling", True)):  # fmt: skip
        docs = rendered[name]
        hpas = of_kind(docs, "HorizontalPodAutoscaler")
        assert len(hpas) == (1 if on else 0), name
        # The HPA owns the count: a replicas field would reset it on every upgrade.
        assert ("replicas" in deployment(docs)["spec"]) is not on, name
        for hpa in hpas:
            assert hpa["apiVersion"] == "autoscaling/v2"
            (metric,) = hpa["spec"]["metrics"]
            assert metric["type"] == "Pods"
            assert metric["pods"]["metric"]["name"] == "triton_queue_us_per_request"
            assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > 0


def test_monitoring_objects_only_with_the_monitoring_api(rendered):
    for name in ("cpu", "gpu", "cpu-fixed"):
        kinds = {d["kind"] for d in rendered[name]}
        assert not kinds & {"PodMonitor", "PrometheusRule", "ServiceMonitor"}, name
    kinds = {d["kind"] for d in rendered["cpu-monitoring"]}
    assert {"PodMonitor", "PrometheusRule"} <= kinds
    off = chart.render([chart.CPU_VALUES], {"metrics": {"podMonitor": {"enabled": False}}},
                       (chart.MONITORING_API,))  # fmt: skip
    assert [d["kind"] for d in off if d["kind"] in ("PodMonitor", "PrometheusRule")] == [
        "PrometheusRule"
    ]


def test_prometheus_rule_and_dashboard_carry_the_shipped_files(rendered):
    docs = rendered["cpu-monitoring"]
    (rule,) = of_kind(docs, "PrometheusRule")
    # The shipped recording rules first, then the alerts (tests/test_alerts.py).
    (recording,) = yaml.safe_load(chart.RECORDING_RULES.read_text())["groups"]
    assert rule["spec"]["groups"][0] == recording
    (dashboard,) = of_kind(docs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = dashboard["data"].values()
    assert json.loads(text) == json.loads(chart.DASHBOARD.read_text())


def test_pods_scrape_annotations_name_the_metrics_port(rendered):
    pod = deployment(rendered["cpu"])["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in container(rendered["cpu"])["ports"]}
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])


def test_container_runs_the_launcher_on_all_interfaces_as_non_root(rendered):
    docs = rendered["cpu"]
    c = container(docs)
    # The image's ENTRYPOINT (tini) stays: no command, the launcher leads the args.
    assert "command" not in c
    assert c["args"][:3] == ["python", "-m", "ensemble.server"]
    args = chart.container_args(docs)
    assert args == c["args"][3:]
    parsed = argument_parser().parse_args(args)
    assert (parsed.host, parsed.target, str(parsed.workdir)) == ("0.0.0.0", "cpu", "/work")
    assert (parsed.http_port, parsed.grpc_port, parsed.metrics_port) == (8000, 8001, 8002)
    assert parsed.supervisor_port == 8003
    assert parsed.log_stdout  # Triton's log in `kubectl logs`
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": 8000, "grpc": 8001, "metrics": 8002, "supervisor": 8003,
    }  # fmt: skip
    pod = deployment(docs)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    # A read-only root: what the server writes is on emptyDirs, HOME on the workdir's.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert "emptyDir" in volumes[mounts["/work"]]
    assert volumes[mounts["/tmp"]]["emptyDir"] == {"sizeLimit": "256Mi"}
    env = {e["name"]: e for e in c["env"]}
    assert env["HOME"]["value"] == "/work"
    assert env["TRITON_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "api-key"


def test_probes_ask_triton_health_on_the_http_port(rendered):
    c = container(rendered["cpu"])
    assert c["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # slow model loads
    # Once the front says not live (a model could not be reloaded), a restart within a
    # minute: at most three failed probes 10 s apart, the last one timing out.
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] + live["timeoutSeconds"] <= 60
    assert live["failureThreshold"] > 1  # one slow answer restarts nothing


def test_a_pod_leaves_the_endpoints_before_triton_stops(rendered):
    pod = deployment(rendered["cpu"])["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    # preStop 10 s + the front's drain 20 s + Triton's exit 10 s, with margin.
    assert pod["terminationGracePeriodSeconds"] > 40


def test_gpu_values_give_four_gpus_and_the_ngc_target(rendered):
    docs = rendered["gpu"]
    parsed = argument_parser().parse_args(chart.container_args(docs))
    assert (parsed.target, parsed.gpus) == ("ngc", "0,1,2,3")
    c = container(docs)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert c["image"].endswith(":ngc")
    pod = deployment(docs)["spec"]["template"]["spec"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert pod["nodeSelector"]
    cpu = container(rendered["cpu"])
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})
    assert "--gpus" not in chart.container_args(rendered["cpu"])


def test_gpu_ids_follow_the_gpu_count():
    # The GPU profile with a smaller count: --gpus and the limit move together.
    docs = chart.render([chart.GPU_VALUES], {"gpu": {"count": 2}})
    parsed = argument_parser().parse_args(chart.container_args(docs))
    assert parsed.gpus == "0,1"
    assert container(docs)["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_gpu_profile_keeps_a_pod_ready_through_rollouts_and_drains(rendered):
    for name in ("gpu", "gpu-autoscaling"):
        docs = rendered[name]
        spec = deployment(docs)["spec"]
        fewest = (of_kind(docs, "HorizontalPodAutoscaler") or [{"spec": spec}])[0]["spec"]
        assert fewest.get("replicas", fewest.get("minReplicas")) == 2, name
        # A new pod is ready before an old one stops.
        assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
        (pdb,) = of_kind(docs, "PodDisruptionBudget")
        assert pdb["spec"]["maxUnavailable"] == 1, name
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_a_budget_by_min_available_renders_in_place_of_max_unavailable():
    # One GPU pod kept through drains: a drain waits for its replacement instead.
    values = {"replicaCount": 1, "podDisruptionBudget": {"minAvailable": 1}}
    docs = chart.render([chart.GPU_VALUES], values)
    (pdb,) = of_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    assert chart.check_consistency(docs) == []


def test_models_from_a_volume_are_mounted_read_only(rendered):
    docs = rendered["gpu-volume-ingress"]
    parsed = argument_parser().parse_args(chart.container_args(docs))
    assert str(parsed.models) == "/models/models.toml"
    (mount,) = (m for m in container(docs)["volumeMounts"] if m["mountPath"] == "/models")
    assert mount["readOnly"] is True
    volumes = deployment(docs)["spec"]["template"]["spec"]["volumes"]
    (volume,) = (v for v in volumes if v["name"] == mount["name"])
    assert volume["persistentVolumeClaim"] == {"claimName": "detector-models"}
    # The image's own models file otherwise: no --models at all.
    assert "--models" not in chart.container_args(rendered["cpu"])


def api_key_checksum(docs: list[dict]) -> str | None:
    return deployment(docs)["spec"]["template"]["metadata"]["annotations"].get("checksum/api-key")


def test_the_key_from_an_existing_secret_a_value_or_generated(rendered):
    # The value files name a Secret the operator creates: the chart makes none, and
    # offline (lookup reads nothing, as under GitOps) the pods carry no checksum.
    for name in ("cpu", "gpu"):
        docs = rendered[name]
        assert of_kind(docs, "Secret") == []
        (env,) = (e for e in container(docs)["env"] if e["name"] == "TRITON_API_KEY")
        assert env["valueFrom"]["secretKeyRef"] == {
            "name": "triton-detectors-api-key", "key": "api-key",
        }  # fmt: skip
        assert api_key_checksum(docs) is None
    # A value: the chart's Secret holds it, the pods carry its sha256.
    docs = rendered["gpu-volume-ingress"]
    (given,) = of_kind(docs, "Secret")
    assert given["data"]["api-key"] == "c2VzYW1l"  # base64 of "sesame"
    assert api_key_checksum(docs) == hashlib.sha256(b"sesame").hexdigest()
    # Generated: made once per render, so that the Secret and the checksum agree.
    docs = rendered["cpu-fixed"]
    (generated,) = of_kind(docs, "Secret")
    key = base64.b64decode(generated["data"]["api-key"])
    assert len(key) == 40
    assert api_key_checksum(docs) == hashlib.sha256(key).hexdigest()
    (env,) = (e for e in container(docs)["env"] if e["name"] == "TRITON_API_KEY")
    assert env["valueFrom"]["secretKeyRef"]["name"] == generated["metadata"]["name"]


def test_a_changed_key_changes_the_pod_template():
    # A Secret's change alone restarts no pod; a change of the pod template does.
    keys = ("sesame", "open sesame")
    docs = [chart.render([chart.CPU_VALUES], {"apiKey": {"existingSecret": "", "value": key}})
            for key in keys]  # fmt: skip
    assert api_key_checksum(docs[0]) != api_key_checksum(docs[1])
    assert [chart.check_consistency(d) for d in docs] == [[], []]


def test_services_headless_and_ingress_for_per_request_grpc(rendered):
    docs = rendered["cpu"]
    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    (plain,) = (s for n, s in services.items() if not n.endswith("-headless"))
    (headless,) = (s for n, s in services.items() if n.endswith("-headless"))
    assert plain["spec"]["type"] == "ClusterIP"
    assert {p["name"]: p["port"] for p in plain["spec"]["ports"]} == {
        "http": 8000, "grpc": 8001, "metrics": 8002, "supervisor": 8003,
    }  # fmt: skip
    assert headless["spec"]["clusterIP"] == "None"
    assert of_kind(docs, "Ingress") == []  # off by default
    (ingress,) = of_kind(rendered["gpu-volume-ingress"], "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"]["service"]["port"] == {"name": "grpc"}


# --- values.schema.json and the template checks refuse wrong values ---------------


def test_broken_value_sets_cover_the_issues_examples():
    assert {"typo-in-a-key", "replicas-as-a-word", "prestop-equal-to-grace",
            "gpus-on-the-cpu-target", "one-gpu-pod-with-the-budget", "no-api-key"} <= set(
        chart.BROKEN_VALUE_SETS
    )  # fmt: skip


@pytest.mark.parametrize("name", list(chart.BROKEN_VALUE_SETS))
def test_every_broken_value_set_is_refused_with_its_message(name):
    value_set, expected = chart.BROKEN_VALUE_SETS[name]
    with pytest.raises(chart.ChartError, match=re.escape(expected)):
        value_set.render()
    assert chart.refusal(value_set, expected) is None


def test_refusal_reports_a_set_that_renders_or_fails_otherwise():
    fine = chart.ValueSet((chart.CPU_VALUES,))
    assert "rendered; expected a refusal" in chart.refusal(fine, "anything")
    typo, _ = chart.BROKEN_VALUE_SETS["typo-in-a-key"]
    assert "refused, but not with 'another message'" in chart.refusal(typo, "another message")


# Kubernetes objects passed through as they are: the Kubernetes schemas check them
# strictly once rendered (chart.validate), so the values schema leaves them open.
KUBERNETES_PASS_THROUGH = {
    "affinity", "tolerations[]", "podSecurityContext", "securityContext",
    "models.volume", "autoscaling.behavior.scaleUp", "autoscaling.behavior.scaleDown",
}  # fmt: skip


def schema_objects(node: dict, schema: dict, path: str = ""):
    """(path, node) for every object-typed node of ``schema``, references followed."""
    if "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
    for branch in node.get("oneOf", []):
        yield from schema_objects(branch, schema, path)
    if node.get("type") == "object":
        yield path, node
        for key, child in node.get("properties", {}).items():
            yield from schema_objects(child, schema, f"{path}.{key}".lstrip("."))
        if isinstance(node.get("additionalProperties"), dict):
            yield from schema_objects(node["additionalProperties"], schema, f"{path}.*")
    if node.get("type") == "array" and "items" in node:
        yield from schema_objects(node["items"], schema, f"{path}[]")


def test_values_schema_closes_every_object_but_kubernetes_pass_throughs():
    import jsonschema

    schema = json.loads((chart.CHART_DIR / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    open_objects = set()
    for path, node in schema_objects(schema, schema):
        extra = node.get("additionalProperties", True)
        if extra is True:
            open_objects.add(path)
        else:  # closed, or a map whose every value has a schema (labels, quantities)
            assert extra is False or isinstance(extra, dict), path
    assert open_objects == KUBERNETES_PASS_THROUGH


def test_every_default_value_is_declared_and_valid():
    import jsonschema

    schema = json.loads((chart.CHART_DIR / "values.schema.json").read_text())
    for path in (chart.CHART_DIR / "values.yaml", chart.CPU_VALUES, chart.GPU_VALUES):
        defaults = yaml.safe_load((chart.CHART_DIR / "values.yaml").read_text())
        values = chart.merge_values(defaults, yaml.safe_load(path.read_text()))
        jsonschema.validate(values, schema)  # raises, naming the value, if not
        assert set(values) == set(schema["properties"]), path.name


# --- the checker catches broken documents ------------------------------------------


def broken(docs: list[dict], change) -> list[dict]:
    """A copy of ``docs`` with ``change(copy)`` applied."""
    docs = copy.deepcopy(docs)
    change(docs)
    return docs


def _service_selector(docs):
    of_kind(docs, "Service")[0]["spec"]["selector"]["app.kubernetes.io/name"] = "other"


def _writable_root(docs):
    del container(docs)["securityContext"]["readOnlyRootFilesystem"]


def _no_tmp(docs):
    c = container(docs)
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != "/tmp"]


def _home_on_the_root(docs):
    (home,) = (e for e in container(docs)["env"] if e["name"] == "HOME")
    home["value"] = "/home/triton"


def _probe_port(docs):
    container(docs)["readinessProbe"]["httpGet"]["port"] = "health"


def _stale_checksum(docs):
    (secret,) = of_kind(docs, "Secret")
    secret["data"]["api-key"] = base64.b64encode(b"another key").decode()


def _slow_liveness(docs):
    container(docs)["livenessProbe"]["failureThreshold"] = 6


def _hpa_target(docs):
    of_kind(docs, "HorizontalPodAutoscaler")[0]["spec"]["scaleTargetRef"]["name"] = "triton"


def _not_the_launcher(docs):
    container(docs)["args"][2] = "ensemble.ui"


def _launcher_argument(docs):
    container(docs)["args"].append("--batch-size")


def _launcher_value(docs):
    args = container(docs)["args"]
    args[args.index("--target") + 1] = "tpu"


def _http_port(docs):
    args = container(docs)["args"]
    args[args.index("--http-port") + 1] = "9000"


def _service_target_port(docs):
    of_kind(docs, "Service")[0]["spec"]["ports"][0]["targetPort"] = "web"


def _grace(docs):
    deployment(docs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 30


def _no_pre_stop(docs):
    del container(docs)["lifecycle"]


def _pdb_selector(docs):
    of_kind(docs, "PodDisruptionBudget")[0]["spec"]["selector"]["matchLabels"] = {"a": "b"}


def _replicas_with_hpa(docs):
    deployment(docs)["spec"]["replicas"] = 3


def _unserved_metric(docs):
    hpa = of_kind(docs, "HorizontalPodAutoscaler")[0]
    hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] = "avg_time_queue_us"


def _gpu_count(docs):
    container(docs)["resources"]["limits"]["nvidia.com/gpu"] = 2


def _no_log_stdout(docs):
    container(docs)["args"].remove("--log-stdout")


def _loopback(docs):
    args = container(docs)["args"]
    args[args.index("--host") + 1] = "127.0.0.1"


def _root(docs):
    deployment(docs)["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] = False


def _one_replica(docs):
    deployment(docs)["spec"]["replicas"] = 1


def _no_unhealthy_policy(docs):
    del of_kind(docs, "PodDisruptionBudget")[0]["spec"]["unhealthyPodEvictionPolicy"]


def _recreate(docs):
    deployment(docs)["spec"]["strategy"] = {"type": "Recreate"}


def _rollout_all(docs):
    deployment(docs)["spec"]["strategy"]["rollingUpdate"] = {"maxUnavailable": "100%"}


def _helm_test_pod(docs) -> dict:
    (pod,) = of_kind(docs, "Pod")
    return pod


def _no_test_pod(docs):
    docs.remove(_helm_test_pod(docs))


def _test_pod_url(docs):
    (c,) = _helm_test_pod(docs)["spec"]["containers"]
    (env,) = (e for e in c["env"] if e["name"] == "TRITON_URL")
    env["value"] = env["value"].replace(":8001", ":8000")


def _test_pod_image(docs):
    _helm_test_pod(docs)["spec"]["containers"][0]["image"] = "busybox"


@pytest.mark.parametrize(
    ("value_set", "change", "expected"),
    [
        ("cpu", _service_selector, "selects"),
        ("cpu", _writable_root, "the root filesystem is writable"),
        ("cpu", _no_tmp, "/tmp is not on a writable volume"),
        ("cpu", _home_on_the_root, "/home/triton is not on a writable volume"),
        ("cpu", _probe_port, "readinessProbe uses port 'health'"),
        ("gpu-volume-ingress", _stale_checksum, "checksum/api-key is not the sha256 of the key"),
        ("cpu", _slow_liveness, "livenessProbe restarts a pod up to 65 s after"),
        ("cpu", _hpa_target, "not the Deployment"),
        ("cpu", _not_the_launcher, "does not run python -m ensemble.server"),
        ("cpu", _launcher_argument, "unknown arguments ['--batch-size']"),
        ("cpu", _launcher_value, "invalid choice: 'tpu'"),
        ("cpu", _http_port, "--http-port 9000 but the container port http is 8000"),
        ("cpu", _service_target_port, "targets 'web'"),
        ("cpu", _grace, "terminationGracePeriodSeconds 30"),
        ("cpu", _no_pre_stop, "no preStop"),
        ("cpu", _pdb_selector, "PodDisruptionBudget"),
        ("cpu", _replicas_with_hpa, "sets replicas while an HPA scales it"),
        ("cpu", _unserved_metric, "avg_time_queue_us, which the prometheus-adapter"),
        ("gpu", _gpu_count, "(4 GPUs) but the pod asks for 2 nvidia.com/gpu"),
        ("cpu", _loopback, "loopback only"),
        ("cpu", _no_log_stdout, "no --log-stdout"),
        ("cpu", _root, "runAsNonRoot"),
        ("gpu", _one_replica, "lets a drain evict all 1 pods"),
        ("cpu", _no_unhealthy_policy, "unhealthyPodEvictionPolicy AlwaysAllow"),
        ("cpu", _recreate, "strategy Recreate"),
        ("gpu", _rollout_all, "a rollout may stop all 2 pods"),
        ("cpu", _no_test_pod, "0 helm test pods"),
        ("cpu", _test_pod_url, "is no Service's gRPC port"),
        ("cpu", _test_pod_image, "not the Deployment's image"),
    ],
)
def test_consistency_check_catches(rendered, value_set, change, expected):
    problems = chart.check_consistency(broken(rendered[value_set], change))
    assert any(expected in p for p in problems), problems


def test_helm_test_pod_checks_inference_through_the_service(rendered):
    docs = rendered["cpu"]
    (pod,) = of_kind(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (c,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["TRITON_URL"] == "detectors-triton-detectors:8001"
    # As long as startup may take: the test waits for a server still loading its models.
    assert env["TEST_READY_TIMEOUT_S"] == "600"


def test_helm_test_script_fails_without_a_ready_server(tmp_path):
    import os
    import sys

    from ensemble.processes import free_port

    env = {**os.environ, "TRITON_URL": f"127.0.0.1:{free_port()}", "TEST_READY_TIMEOUT_S": "1"}
    env.pop("DETECTOR_API_KEY", None)
    done = subprocess.run([sys.executable, "-c", chart.HELM_TEST_SCRIPT.read_text()],
                          env=env, cwd=chart.REPO_ROOT, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "no ready server" in done.stderr


def test_validation_rejects_a_v2beta2_hpa_on_every_version(rendered):
    def v2beta2(docs):
        of_kind(docs, "HorizontalPodAutoscaler")[0]["apiVersion"] = "autoscaling/v2beta2"

    problems = chart.validate(broken(rendered["cpu"], v2beta2))
    assert len(problems) == len(chart.KUBERNETES_VERSIONS)
    assert all("has no autoscaling/v2beta2 HorizontalPodAutoscaler" in p for p in problems)


def test_validation_is_strict_about_unknown_fields(rendered):
    def typo(docs):
        container(docs)["readinessProbe"]["periodSecond"] = 5

    problems = chart.validate(broken(rendered["cpu"], typo), versions=("1.31.0",))
    assert len(problems) == 1 and "periodSecond" in problems[0], problems


def test_validation_skips_only_custom_resources_without_a_schema():
    custom = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
              "metadata": {"name": "m"}, "spec": {}}  # fmt: skip
    made_up = {"apiVersion": "apps/v1", "kind": "Deploymnt", "metadata": {"name": "d"}}
    assert chart.validate([custom]) == []
    assert len(chart.validate([made_up])) == len(chart.KUBERNETES_VERSIONS)


def test_make_chart_writes_every_set_and_passes(tmp_path, capsys):
    assert chart.main(["--out", str(tmp_path)]) == 0
    written = sorted(p.stem for p in tmp_path.glob("*.yaml"))
    assert written == sorted(chart.VALUE_SETS)
    docs = [d for d in yaml.safe_load_all((tmp_path / "cpu.yaml").read_text()) if d]
    assert [d["kind"] for d in docs] == [d["kind"] for d in chart.VALUE_SETS["cpu"].render()]
    out = capsys.readouterr().out
    assert all(f"{name}: " in out for name in chart.VALUE_SETS)


# --- recording rules, dashboard, prometheus-adapter --------------------------------


def test_recording_rules_pass_promtool():
    result = promtool("check", "rules", str(chart.RECORDING_RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_names_other_parts_query_are_recorded():
    # cluster/local.py, the HPA's adapter rule and the dashboard ask for these by name.
    assert {
        "triton:ensemble_requests:rate1m",
        "triton:queue_us_per_request:rate1m",
        "triton:queue_compute_ratio:rate1m",
    } <= recorded_names()


def test_recording_rules_sum_queue_time_over_every_step_of_an_ensemble(tmp_path):
    # Two pods. p0 answers one detect_all request per second; each request runs ten
    # steps that each queue 5 ms and compute 10 ms; the ensemble model's own counters
    # stay at 0 (as measured on Triton). p1 is idle. Each of the 10 step requests a
    # second queued 5 ms: 5000 us per request; queue/compute = 50 / 100 = 0.5. NVIDIA's
    # chart's avg over models of queue/(1+success) would give (10 x 5000/2 + 0) / 11 = 2273.
    step = 15  # seconds between samples
    ok, queue, compute, failed = (
        "nv_inference_request_success", "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us", "nv_inference_request_failure",
    )  # fmt: skip
    series = [(ok, "p0", "detect_all", 1), (queue, "p0", "detect_all", 0),
              (compute, "p0", "detect_all", 0), (failed, "p0", "detect_all", 0)]  # fmt: skip
    for i in range(10):
        series += [(ok, "p0", f"step_{i}", 1), (queue, "p0", f"step_{i}", 5000),
                   (compute, "p0", f"step_{i}", 10000)]  # fmt: skip
    series += [(metric, "p1", "detect_all", 0) for metric in (ok, queue, compute, failed)]
    inputs = [{"series": f'{m}{{namespace="ns",pod="{pod}",model="{model}"}}',
               "values": f"0+{per_s * step}x40"} for m, pod, model, per_s in series]  # fmt: skip
    inputs += [{"series": f'triton_model_recovery_seconds_count{{namespace="ns",pod="{p}"}}',
                "values": "0x40"} for p in ("p0", "p1")]  # fmt: skip
    # A worker of p1 dies at 3 min; p0's crash counter has no series at all (the
    # supervisor's labelled counter appears on a pod's first crash): 0, not missing.
    inputs.append({"series": 'triton_worker_crashes_total{namespace="ns",pod="p1",model="m"}',
                   "values": "0x11 1x28"})  # fmt: skip

    def per_pod(record: str, p0: float, p1: float) -> dict:
        return {"expr": record, "eval_time": "5m", "exp_samples": [
            {"labels": f'{record}{{namespace="ns",pod="p0"}}', "value": p0},
            {"labels": f'{record}{{namespace="ns",pod="p1"}}', "value": p1}]}  # fmt: skip

    test = {
        "rule_files": [str(chart.RECORDING_RULES)],
        "evaluation_interval": f"{step}s",
        "tests": [{"interval": f"{step}s", "input_series": inputs, "promql_expr_test": [
            per_pod("triton:ensemble_requests:rate1m", 1, 0),
            per_pod("triton:queue_us_per_request:rate1m", 5000, 0),
            per_pod("triton:queue_compute_ratio:rate1m", 0.5, 0),
            per_pod("triton:ensemble_failures:rate1m", 0, 0),
            per_pod("triton:worker_crashes:increase5m", 0, 1),
            per_pod("triton:model_recoveries:increase5m", 0, 0),
        ]}],
    }  # fmt: skip
    path = tmp_path / "rules-test.yaml"
    path.write_text(yaml.safe_dump(test))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_panels_are_valid_promql_on_known_series(tmp_path):
    dashboard = json.loads(chart.DASHBOARD.read_text())
    titles = [p["title"] for p in dashboard["panels"]]
    assert len(titles) >= 6 and all(p["targets"] for p in dashboard["panels"])
    exprs = dashboard_exprs()
    # promtool parses each query as the expression of a recording rule.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": e} for i, e in enumerate(exprs)]}]}  # fmt: skip
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    # Valid PromQL can still ask for a series nobody records: every name must exist.
    known = recorded_names() | TRITON_METRICS
    for expr in exprs:
        for name in re.findall(r"\b(?:triton:[\w:]+|nv_\w+)", expr):
            assert name in known, (name, expr)


def test_supervisor_series_the_rules_read_are_the_supervisors():
    from ensemble.supervisor import Metrics

    exposed = set()
    metrics = Metrics()
    metrics.crashes.labels("m").inc()  # a labelled counter has no sample before its first use
    for family in metrics.registry.collect():
        exposed |= {s.name for s in family.samples}
    groups = yaml.safe_load(chart.RECORDING_RULES.read_text())["groups"]
    exprs = " ".join(r["expr"] for g in groups for r in g["rules"])
    read = set(re.findall(r"\btriton_\w+", exprs))
    assert read and read <= exposed, read - exposed


def test_prometheus_adapter_serves_the_hpa_metric_from_a_recorded_series(rendered):
    (hpa,) = of_kind(rendered["cpu"], "HorizontalPodAutoscaler")
    wanted = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    (rule,) = (r for r in chart.adapter_rules() if r["name"]["as"] == wanted)
    series = re.match(r"[\w:]+", rule["seriesQuery"])[0]
    assert series == "triton:queue_us_per_request:rate1m"
    assert series in recorded_names()
    assert re.fullmatch(rule["name"]["matches"], series)
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"}, "pod": {"resource": "pod"},
    }  # fmt: skip
    values = yaml.safe_load(Path(chart.ADAPTER_VALUES).read_text())
    assert values["rules"]["default"] is False
    for other in chart.adapter_rules():
        assert re.match(r"[\w:]+", other["seriesQuery"])[0] in recorded_names()


# --- the KServe example ------------------------------------------------------------


def test_kserve_runtime_runs_the_launcher_on_knatives_port():
    docs = chart.kserve_documents()
    assert {d["kind"] for d in docs} == {"ServingRuntime", "InferenceService"}
    assert chart.validate(docs) == []  # KServe's custom resources: no schema, no problem
    assert chart.check_kserve(docs) == []
    (runtime,) = (d for d in docs if d["kind"] == "ServingRuntime")
    (c,) = runtime["spec"]["containers"]
    parsed = argument_parser().parse_args(c["args"][3:])
    assert (parsed.host, parsed.http_port, str(parsed.models)) == (
        "0.0.0.0", 8080, "/mnt/models/models.toml",
    )  # fmt: skip
    assert parsed.log_stdout
    # Knative routes only once every model is loaded (its own TCP probe passes earlier).
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    # It sends a pod at most what the front takes at once, and scales on concurrency.
    (service,) = (d for d in docs if d["kind"] == "InferenceService")
    predictor = service["spec"]["predictor"]
    assert predictor["containerConcurrency"] == parsed.max_inflight == 32
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("concurrency", 32)


def test_kserve_check_catches_a_bad_argument_and_a_port_knative_would_miss():
    docs = chart.kserve_documents()
    (runtime,) = (d for d in docs if d["kind"] == "ServingRuntime")
    (c,) = runtime["spec"]["containers"]
    c["args"] = [*c["args"], "--model-store=/mnt/models"]
    c["ports"] = [{"name": "h2c", "containerPort": 9001}]
    problems = chart.check_kserve(docs)
    assert any("unknown arguments ['--model-store=/mnt/models']" in p for p in problems)
    c["args"] = c["args"][:-1]
    problems = chart.check_kserve(docs)
    assert len(problems) == 1 and "routes port [9001]" in problems[0], problems
    del c["ports"]
    c["volumeMounts"] = [m for m in c["volumeMounts"] if m["mountPath"] != "/tmp"]
    assert chart.check_kserve(docs) == [
        "ServingRuntime/triton-detectors: /tmp is not on a writable volume of the container"
    ]


def _kserve(change) -> list[str]:
    """check_kserve's problems with the KServe example after ``change(runtime's
    container, InferenceService's predictor)``."""
    docs = chart.kserve_documents()
    (runtime,) = (d for d in docs if d["kind"] == "ServingRuntime")
    (service,) = (d for d in docs if d["kind"] == "InferenceService")
    change(runtime["spec"]["containers"][0], service["spec"]["predictor"])
    return chart.check_kserve(docs)


def _launcher_takes_64(container, predictor):
    args = container["args"]
    args[args.index("--max-inflight") + 1] = "64"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c, p: c.pop("readinessProbe"), "no HTTP readinessProbe"),
        (lambda c, p: c["readinessProbe"]["httpGet"].update(port=9000),
         "asks /v2/health/ready on port 9000, not /v2/health/ready on the launcher's HTTP"),
        (lambda c, p: c["readinessProbe"]["httpGet"].update(path="/v2/health/live"),
         "asks /v2/health/live on port 8080"),
        (lambda c, p: p.update(containerConcurrency=100),
         "containerConcurrency 100, but the launcher takes --max-inflight 32"),
        (_launcher_takes_64, "containerConcurrency 32, but the launcher takes --max-inflight 64"),
        (lambda c, p: p.pop("scaleMetric"), "no concurrency scaleTarget"),
        (lambda c, p: p.update(scaleTarget=40), "scaleTarget 40 above containerConcurrency 32"),
    ],
)  # fmt: skip
def test_kserve_check_catches_routing_before_ready_and_a_concurrency_mismatch(change, expected):
    problems = _kserve(change)
    assert len(problems) == 1 and expected in problems[0], problems
