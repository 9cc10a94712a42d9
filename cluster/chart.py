"""The Helm chart (``deploy/helm/triton-detectors``) rendered and checked offline.

``python -m cluster.chart`` (``make chart``) renders the chart with each of
:data:`VALUE_SETS`, writes the documents to ``build/chart/<set>.yaml``, and checks them:

- every document against the Kubernetes 1.29-1.33 schemas in strict mode
  (``kubernetes-validate``); a built-in kind without a schema is a failure (that is how
  an ``autoscaling/v2beta2`` HPA shows on 1.26+), a custom resource (the Prometheus
  Operator's, KServe's) has none and is skipped;
- the chart's own consistency (:func:`check_consistency`): selectors, port names, the
  HPA's target and metric, the launcher's arguments, a read-only root with volumes
  where the server writes, the stopping sequence, a rollout and a disruption budget
  that always leave a pod ready, the ``helm test`` pod.

Then it renders each of :data:`BROKEN_VALUE_SETS` and expects Helm to refuse it with
the expected message: ``values.schema.json`` refuses a value of the wrong type, out of
range or unknown; ``triton-detectors.validate`` (templates/_helpers.tpl) fails on the
checks that compare two values, which JSON schema cannot express.

Rendering needs no cluster and no ``helm`` binary: ``helm-python-sdk`` is Helm v4 as a
library. ``lookup`` returns nothing offline, as under GitOps: the key comes from the
existingSecret the value files name, a value, or (one value set) ``apiKey.generate``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import io
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import helm_python
import kubernetes_validate
import yaml
from helm_python import _native

REPO_ROOT = Path(__file__).resolve().parent.parent
CHART_DIR = REPO_ROOT / "deploy" / "helm" / "triton-detectors"
CPU_VALUES = CHART_DIR / "values-cpu.yaml"
GPU_VALUES = CHART_DIR / "values-gpu.yaml"
# Loaded by the chart with .Files.Get, and as they are by the local run and compose.
RECORDING_RULES = CHART_DIR / "files" / "recording-rules.yaml"
DASHBOARD = CHART_DIR / "files" / "dashboard.json"
# What the `helm test` pod runs (python -c), with the Service's address in $TRITON_URL.
HELM_TEST_SCRIPT = CHART_DIR / "files" / "test-inference.py"
ADAPTER_VALUES = REPO_ROOT / "deploy" / "prometheus-adapter" / "values.yaml"
KSERVE_RUNTIME = REPO_ROOT / "deploy" / "kserve" / "servingruntime.yaml"
# The port Knative routes when a KServe container declares none.
KSERVE_DEFAULT_PORT = 8080
OUT_DIR = REPO_ROOT / "build" / "chart"

RELEASE = "detectors"
NAMESPACE = "default"
MONITORING_API = "monitoring.coreos.com/v1"
KUBERNETES_VERSIONS = ("1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0")
# API groups of custom resources: no schema in kubernetes-validate, and that is fine.
CUSTOM_GROUPS = ("monitoring.coreos.com", "serving.kserve.io", "keda.sh")
# The launcher's module, as the container's command names it.
LAUNCHER = "ensemble.server"
# Margin on top of preStop + the launcher's drain in terminationGracePeriodSeconds.
GRACE_MARGIN_S = 5
# The longest the kubelet may take to restart a pod once its liveness fails (the front
# fails /v2/health/live when a crashed model could not be reloaded): the probes' period
# x failureThreshold, plus one timeout.
LIVENESS_RESTART_S = 60
# The pod-template annotation that restarts the pods when the API key changes.
API_KEY_CHECKSUM = "checksum/api-key"
# What the server writes besides its workdir, $HOME and /dev/shm, found by running the
# launcher under a read-only root (bwrap) until it answered an inference: Triton's
# Python backend makes /tmp/python_env_* at start (Triton aborts without it), the
# Python runners keep their lock files in /tmp (ensemble/cpu_share.py), and ONNX
# Runtime writes a session file there.
WRITTEN_PATHS = ("/tmp",)


class ChartError(RuntimeError):
    """The chart could not be rendered; the message is Helm's."""


@dataclass(frozen=True)
class ValueSet:
    """One way to install the chart: ``-f`` files, ``--set`` values, the cluster's APIs."""

    files: tuple[Path, ...]
    values: dict = field(default_factory=dict)
    api_versions: tuple[str, ...] = ()

    def render(self) -> list[dict]:
        return render(list(self.files), self.values, self.api_versions)


# The key from the chart's own Secret instead of the existingSecret the two value
# files name: a value, or (only for `helm install` against a cluster) generated.
KEY_VALUE = {"apiKey": {"existingSecret": "", "value": "sesame"}}
KEY_GENERATED = {"apiKey": {"existingSecret": "", "generate": True}}

VALUE_SETS: dict[str, ValueSet] = {
    "cpu": ValueSet((CPU_VALUES,)),
    "gpu": ValueSet((GPU_VALUES,)),
    "cpu-fixed": ValueSet((CPU_VALUES,), {"autoscaling": {"enabled": False}, **KEY_GENERATED}),
    "gpu-autoscaling": ValueSet((GPU_VALUES,), {"autoscaling": {"enabled": True}}),
    "cpu-monitoring": ValueSet((CPU_VALUES,), api_versions=(MONITORING_API,)),
    "cpu-keda": ValueSet(
        (CPU_VALUES,), {"autoscaling": {"provider": "keda"}}, api_versions=(MONITORING_API,)
    ),
    # Everything that is off by default: models from a PVC, the gRPC Ingress, the key
    # as a value, the Prometheus Operator's objects.
    "gpu-volume-ingress": ValueSet(
        (GPU_VALUES,),
        {
            "models": {
                "source": "volume",
                "modelsFile": "models.toml",
                "volume": {"persistentVolumeClaim": {"claimName": "detector-models"}},
            },
            "ingress": {"enabled": True, "tlsSecretName": "detectors-tls"},
            **KEY_VALUE,
            "autoscaling": {"enabled": True},
        },
        (MONITORING_API,),
    ),
}


# Value sets Helm must refuse, each with (part of) the message it must give: schema
# errors name the value's path, the template checks say what to change.
SCHEMA_REFUSAL = "values don't meet the specifications of the schema"
BROKEN_VALUE_SETS: dict[str, tuple[ValueSet, str]] = {
    "models-from-a-bucket": (
        ValueSet((CPU_VALUES,), {"models": {"source": "bucket"}}),
        "at '/models/source': value must be one of 'image', 'volume'",
    ),
    "models-volume-without-a-volume": (
        ValueSet((CPU_VALUES,), {"models": {"source": "volume"}}),
        "models.source=volume needs models.volume",
    ),
    "typo-in-a-key": (
        ValueSet((CPU_VALUES,), {"autoscalling": {"enabled": True}}),
        "additional properties 'autoscalling' not allowed",
    ),
    "replicas-as-a-word": (
        ValueSet((CPU_VALUES,), {"replicaCount": "two"}),
        "at '/replicaCount': got string, want integer",
    ),
    "unknown-target": (
        ValueSet((CPU_VALUES,), {"server": {"target": "tpu"}}),
        "at '/server/target': value must be one of 'cpu', 'gpu', 'ngc'",
    ),
    "port-out-of-range": (
        ValueSet((CPU_VALUES,), {"ports": {"grpc": 70000}}),
        "at '/ports/grpc': maximum",
    ),
    "memory-not-a-quantity": (
        ValueSet((CPU_VALUES,), {"resources": {"limits": {"memory": "6 GB"}}}),
        "at '/resources/limits/memory'",
    ),
    # --gpus follows gpu.count; the old free-standing ids could disagree with the limit.
    "gpu-ids-given": (
        ValueSet((GPU_VALUES,), {"server": {"gpus": "0,1,2,3"}}),
        "additional properties 'gpus' not allowed",
    ),
    "recreate-rollout": (
        ValueSet((CPU_VALUES,), {"strategy": {"type": "Recreate"}}),
        "at '/strategy/type'",
    ),
    "prestop-equal-to-grace": (
        ValueSet((CPU_VALUES,), {"preStopSeconds": 60, "terminationGracePeriodSeconds": 60}),
        "preStopSeconds (60) must be below terminationGracePeriodSeconds (60)",
    ),
    "gpus-on-the-cpu-target": (
        ValueSet((CPU_VALUES,), {"gpu": {"count": 2}}),
        "server.target cpu uses no GPU, but gpu.count is 2",
    ),
    "gpu-target-without-gpus": (
        ValueSet((GPU_VALUES,), {"gpu": {"count": 0}}),
        "server.target ngc needs GPUs: set gpu.count",
    ),
    "gpu-limit-in-resources": (
        ValueSet((GPU_VALUES,), {"resources": {"limits": {"nvidia.com/gpu": 2}}}),
        "resources.limits must not name nvidia.com/gpu: set gpu.count",
    ),
    "one-gpu-pod-with-the-budget": (
        ValueSet((GPU_VALUES,), {"replicaCount": 1}),
        "podDisruptionBudget.maxUnavailable (1) would let a drain evict all 1 pods",
    ),
    "rollout-stopping-every-pod": (
        ValueSet(
            (GPU_VALUES,), {"strategy": {"rollingUpdate": {"maxUnavailable": 2, "maxSurge": 0}}}
        ),
        "strategy.rollingUpdate.maxUnavailable (2) would let a rollout stop all 2 pods",
    ),
    # Offline (GitOps renders so), lookup finds no Secret: no random key on every sync.
    "no-api-key": (
        ValueSet((CPU_VALUES,), {"apiKey": {"existingSecret": ""}}),
        "no key for the restricted APIs: set apiKey.existingSecret",
    ),
    "api-key-value-beside-an-existing-secret": (
        ValueSet((CPU_VALUES,), {"apiKey": {"value": "sesame"}}),
        "apiKey.value and apiKey.existingSecret (triton-detectors-api-key) are both set",
    ),
    "api-key-generated-beside-an-existing-secret": (
        ValueSet((CPU_VALUES,), {"apiKey": {"generate": True}}),
        "apiKey.generate makes a key for the chart's own Secret only",
    ),
    "api-key-generate-as-a-word": (
        ValueSet((CPU_VALUES,), {"apiKey": {"existingSecret": "", "generate": "yes"}}),
        "at '/apiKey/generate': got string, want boolean",
    ),
    "autoscaling-floor-above-ceiling": (
        ValueSet((CPU_VALUES,), {"autoscaling": {"minReplicas": 9, "maxReplicas": 8}}),
        "autoscaling.minReplicas (9) is above autoscaling.maxReplicas (8)",
    ),
}


def refusal(value_set: ValueSet, expected: str) -> str | None:
    """Why ``value_set`` is not refused as it should be (rendered, or refused with
    another message); None when Helm refuses it with ``expected`` in its message."""
    try:
        value_set.render()
    except ChartError as e:
        if expected in str(e):
            return None
        return f"refused, but not with {expected!r}: {e}"
    return f"rendered; expected a refusal with {expected!r}"


def adapter_rules() -> list[dict]:
    """prometheus-adapter's custom rules (``rules.custom`` of its values file)."""
    values = yaml.safe_load(ADAPTER_VALUES.read_text())
    return list(values.get("rules", {}).get("custom", []))


def merge_values(base: dict, override: dict) -> dict:
    """``override`` on top of ``base`` as Helm layers ``-f`` files: maps merge key by
    key, anything else (lists included) is replaced. Neither argument is changed."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def render(
    value_files: list[Path] | None = None,
    values: dict | None = None,
    api_versions: tuple[str, ...] = (),
) -> list[dict]:
    """The chart's documents, rendered offline as ``helm template -f FILE... --set ...
    --api-versions ...`` would, parsed (empty documents dropped, NOTES.txt left out).

    ``value_files`` are layered in order, then ``values`` on top; ``api_versions`` are
    the extra APIs the cluster is said to serve (``.Capabilities.APIVersions``).
    """
    merged: dict = {}
    for path in value_files or []:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ChartError(f"{path}: a values file is a YAML map")
        merged = merge_values(merged, loaded)
    merged = merge_values(merged, values or {})
    options = {
        "name": RELEASE,
        "namespace": NAMESPACE,
        "is_install": True,
        "api_versions": list(api_versions),
    }
    try:
        chart = helm_python.Chart.load(CHART_DIR)
        try:
            # Chart.render (0.2.2) does not pass api_versions on, though the library's
            # render options take them: call the same native function with them.
            rendered = _native.call_string(
                "helm_render", chart._raw(), json.dumps(merged), json.dumps(options)
            )
        finally:
            chart.close()
    except helm_python.HelmError as e:
        raise ChartError(f"helm could not render {CHART_DIR.name}: {e}") from e
    docs = []
    for template, text in sorted(json.loads(rendered).items()):
        if template.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d is not None)
    return docs


def _name(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def _is_custom(doc: dict) -> bool:
    return str(doc.get("apiVersion", "")).split("/")[0] in CUSTOM_GROUPS


def validate(docs: list[dict], versions: tuple[str, ...] = KUBERNETES_VERSIONS) -> list[str]:
    """Problems found by validating each document against each Kubernetes version's
    schema in strict mode (unknown fields fail). Empty: all valid."""
    problems = []
    for doc in docs:
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                if not _is_custom(doc):
                    problems.append(
                        f"{_name(doc)}: Kubernetes {version} has no {doc.get('apiVersion')} "
                        f"{doc.get('kind')}"
                    )
            except kubernetes_validate.ValidationError as e:
                where = ".".join(str(p) for p in e.absolute_path) or "(document)"
                problems.append(f"{_name(doc)} on Kubernetes {version}: {where}: {e.message}")
    return problems


def schema_checked(docs: list[dict]) -> list[dict]:
    """The documents :func:`validate` checks against a schema (built-in kinds)."""
    return [d for d in docs if not _is_custom(d)]


def _of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def _deployment(docs: list[dict]) -> dict:
    deployments = _of_kind(docs, "Deployment")
    if len(deployments) != 1:
        raise ValueError(f"the chart renders {len(deployments)} Deployments, not one")
    return deployments[0]


def _main_container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next((c for c in containers if c.get("name") == "triton"), containers[0])


def launcher_arguments(container: dict) -> list[str]:
    """What follows ``python -m ensemble.server`` in a container's command and args
    (the chart puts the launcher in args, keeping the image's ENTRYPOINT)."""
    line = [str(a) for a in (*container.get("command", []), *container.get("args", []))]
    for i in range(len(line) - 1):
        if line[i] == "-m" and line[i + 1] == LAUNCHER:
            return line[i + 2 :]
    raise ValueError(f"the container {container.get('name')} does not run python -m {LAUNCHER}")


def container_args(docs: list[dict]) -> list[str]:
    """The launcher's arguments (what follows ``python -m ensemble.server``) of the
    Deployment's main container, as strings."""
    return launcher_arguments(_main_container(_deployment(docs)))


def _selects(selector: dict | None, labels: dict) -> bool:
    """A non-empty label selector (matchLabels only, or a Service's plain map) that
    matches ``labels``."""
    if not selector:
        return False
    if "matchExpressions" in selector:
        return False  # the chart has none; a checker that ignored them would lie
    match = selector.get("matchLabels", selector)
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def _launcher(container: dict) -> tuple[argparse.Namespace | None, list[str]]:
    """The launcher's parse of what ``container`` runs, and the problems with it: not
    the launcher, arguments it rejects (then no parse), a loopback-only ``--host``, no
    ``--log-stdout``."""
    from ensemble.contract import is_loopback_host
    from ensemble.server import argument_parser

    try:
        args = launcher_arguments(container)
    except ValueError as e:
        return None, [str(e)]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parsed, unknown = argument_parser().parse_known_args(args)
    except SystemExit:
        why = err.getvalue().strip().splitlines()[-1] if err.getvalue() else "rejected"
        return None, [f"the launcher rejects the arguments {args}: {why}"]
    if unknown:
        return None, [f"the launcher rejects the arguments {args}: unknown arguments {unknown}"]
    problems = []
    if is_loopback_host(parsed.host):
        problems.append(f"--host {parsed.host}: the launcher would listen on loopback only")
    if not parsed.log_stdout:
        problems.append("no --log-stdout: Triton's log would be in a file `kubectl logs` misses")
    return parsed, problems


def _check_launcher(container: dict, ports: dict[str, int]) -> list[str]:
    from ensemble import configgen

    parsed, problems = _launcher(container)
    if parsed is None:
        return problems
    for port_name, value in (("http", parsed.http_port), ("grpc", parsed.grpc_port),
                             ("metrics", parsed.metrics_port),
                             ("supervisor", parsed.supervisor_port)):  # fmt: skip
        if port_name in ports and ports[port_name] != value:
            problems.append(
                f"--{port_name}-port {value} but the container port {port_name} is "
                f"{ports[port_name]}"
            )
        elif port_name not in ports and port_name != "supervisor":
            problems.append(f"the container has no port named {port_name}")
    gpu_limit = int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
    if parsed.target == "cpu":
        if gpu_limit:
            problems.append(f"--target cpu but the pod asks for {gpu_limit} nvidia.com/gpu")
    else:
        gpus = configgen.parse_gpus(parsed.gpus)
        if len(gpus) != gpu_limit:
            problems.append(
                f"--target {parsed.target} --gpus {parsed.gpus} ({len(gpus)} GPUs) but the "
                f"pod asks for {gpu_limit} nvidia.com/gpu"
            )
    mounts = {m["mountPath"].rstrip("/"): m for m in container.get("volumeMounts", [])}
    workdir = str(parsed.workdir).rstrip("/") if parsed.workdir else None
    if workdir is None:
        problems.append("no --workdir: the launcher would write into the image")
    elif workdir not in mounts or mounts[workdir].get("readOnly"):
        problems.append(f"--workdir {workdir} is not a writable volume of the container")
    if "/dev/shm" not in mounts:
        problems.append("no /dev/shm volume: the Python backend's tensors need shared memory")
    return problems


def _check_read_only_root(container: dict) -> list[str]:
    """The root filesystem is read-only, and every path the server writes
    (:data:`WRITTEN_PATHS` and ``$HOME``, where libraries cache) is on a writable volume
    (the workdir and /dev/shm are :func:`_check_launcher`'s)."""
    problems = []
    if container.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
        problems.append("the root filesystem is writable (no readOnlyRootFilesystem)")
    writable = [m["mountPath"].rstrip("/") for m in container.get("volumeMounts", [])
                if not m.get("readOnly")]  # fmt: skip
    home = {e["name"]: e.get("value") for e in container.get("env", [])}.get("HOME")
    if home is None:
        problems.append("no HOME set: the image's HOME may be on the read-only root")
    for path in (*WRITTEN_PATHS, *([home] if home else [])):
        if not any(path == m or path.startswith(m + "/") for m in writable):
            problems.append(f"{path} is not on a writable volume of the container")
    return problems


def _check_probes(container: dict, ports: dict[str, int]) -> list[str]:
    problems = []
    for probe, path in (("startupProbe", "/v2/health/ready"),
                        ("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live")):  # fmt: skip
        get = container.get(probe, {}).get("httpGet")
        if get is None:
            problems.append(f"the container has no HTTP {probe}")
            continue
        port = get.get("port")
        if port not in ports and port not in ports.values():
            problems.append(f"{probe} uses port {port!r}, which the container does not have")
        if get.get("path") != path:
            problems.append(f"{probe} asks {get.get('path')}, not {path}")
    liveness = container.get("livenessProbe", {})
    # Kubernetes' defaults where a field is left out.
    period, failures, timeout = (liveness.get(k, default) for k, default in
                                 (("periodSeconds", 10), ("failureThreshold", 3),
                                  ("timeoutSeconds", 1)))  # fmt: skip
    if period * failures + timeout > LIVENESS_RESTART_S:
        problems.append(
            f"livenessProbe restarts a pod up to {period * failures + timeout} s after its "
            f"liveness fails (periodSeconds {period} x failureThreshold {failures} + "
            f"timeoutSeconds {timeout}), over {LIVENESS_RESTART_S} s"
        )
    return problems


def _check_stopping(pod: dict, container: dict) -> list[str]:
    from ensemble.front import DRAIN_SECONDS
    from ensemble.server import EXIT_TIMEOUT_S

    command = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if not command or command[0] != "sleep" or len(command) != 2:
        return ["no preStop `sleep N`: a stopping pod would still get new requests"]
    try:
        pause = float(command[1])
    except ValueError:
        return [f"preStop sleeps {command[1]!r}, not a number of seconds"]
    grace = pod.get("terminationGracePeriodSeconds", 30)
    needed = pause + DRAIN_SECONDS + EXIT_TIMEOUT_S + GRACE_MARGIN_S
    if grace < needed:
        return [
            f"terminationGracePeriodSeconds {grace} < preStop {pause:g} + front drain "
            f"{DRAIN_SECONDS} + Triton exit {EXIT_TIMEOUT_S} + margin {GRACE_MARGIN_S} s"
        ]
    return []


def _check_services(docs: list[dict], pod_labels: dict, ports: dict[str, int]) -> list[str]:
    problems = []
    services = {d["metadata"]["name"]: d for d in _of_kind(docs, "Service")}
    if not services:
        problems.append("no Service")
    for name, svc in services.items():
        if not _selects(svc["spec"].get("selector"), pod_labels):
            problems.append(f"Service/{name} selects {svc['spec'].get('selector')}, not the pods")
        for p in svc["spec"].get("ports", []):
            target = p.get("targetPort", p.get("port"))
            if target not in ports and target not in ports.values():
                problems.append(
                    f"Service/{name} port {p.get('name')} targets {target!r}, which the "
                    "container does not have"
                )
    for ing in _of_kind(docs, "Ingress"):
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                svc = services.get(backend["name"])
                port = backend.get("port", {})
                if svc is None:
                    problems.append(f"{_name(ing)} routes to a missing Service {backend['name']}")
                elif not any(port.get("name") == p.get("name") or port.get("number") == p["port"]
                             for p in svc["spec"]["ports"]):  # fmt: skip
                    problems.append(f"{_name(ing)} routes to a port {port} that "
                                    f"Service/{backend['name']} lacks")  # fmt: skip
    return problems


def _check_autoscaling(docs: list[dict], deployment: dict) -> list[str]:
    hpas = _of_kind(docs, "HorizontalPodAutoscaler")
    problems = []
    if hpas and "replicas" in deployment["spec"]:
        problems.append("the Deployment sets replicas while an HPA scales it")
    served = {r.get("name", {}).get("as") for r in adapter_rules()}
    for hpa in hpas:
        ref = hpa["spec"].get("scaleTargetRef", {})
        wanted = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "name": deployment["metadata"]["name"]}  # fmt: skip
        if {k: ref.get(k) for k in wanted} != wanted:
            problems.append(f"{_name(hpa)} scales {ref}, not the Deployment {wanted['name']}")
        for metric in hpa["spec"].get("metrics", []):
            if metric.get("type") == "Pods":
                name = metric["pods"]["metric"]["name"]
                if name not in served:
                    problems.append(
                        f"{_name(hpa)} scales on {name}, which the prometheus-adapter rules "
                        f"({ADAPTER_VALUES.relative_to(REPO_ROOT)}) do not serve"
                    )
    return problems


def _check_selectors(docs: list[dict], pod_labels: dict, ports: dict[str, int]) -> list[str]:
    problems = []
    for pdb in _of_kind(docs, "PodDisruptionBudget"):
        if not _selects(pdb["spec"].get("selector"), pod_labels):
            problems.append(f"{_name(pdb)} selects {pdb['spec'].get('selector')}, not the pods")
    for monitor in _of_kind(docs, "PodMonitor"):
        if not _selects(monitor["spec"].get("selector"), pod_labels):
            problems.append(f"{_name(monitor)} selects {monitor['spec'].get('selector')}")
        for endpoint in monitor["spec"].get("podMetricsEndpoints", []):
            if endpoint.get("port") not in ports:
                problems.append(f"{_name(monitor)} scrapes a missing port {endpoint.get('port')}")
    return problems


def _pods(value: int | str, total: int, round_up: bool) -> int:
    """A count or a percentage of ``total`` pods, rounded as Kubernetes rounds it."""
    if isinstance(value, int):
        return value
    share = int(str(value).rstrip("%")) * total / 100
    return math.ceil(share) if round_up else math.floor(share)


def _check_disruption(docs: list[dict], deployment: dict) -> list[str]:
    """A rollout and a drain each leave a pod ready, counted on the fewest pods the
    Deployment runs (the HPA's floor, or its replicas), and the budget lets a drain
    evict pods that are not ready."""
    hpas = _of_kind(docs, "HorizontalPodAutoscaler")
    scaled = _of_kind(docs, "ScaledObject")  # KEDA makes the HPA from it
    fewest = int(hpas[0]["spec"].get("minReplicas", 1) if hpas
                 else scaled[0]["spec"].get("minReplicaCount", 1) if scaled
                 else deployment["spec"].get("replicas", 1))  # fmt: skip
    problems = []
    strategy = deployment["spec"].get("strategy", {})
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        problems.append(f"strategy {strategy['type']}: an upgrade stops every pod first")
    else:
        # The Deployment controller rounds a percentage of unavailable pods down.
        unavailable = strategy.get("rollingUpdate", {}).get("maxUnavailable", "25%")
        if _pods(unavailable, fewest, round_up=False) >= fewest:
            problems.append(
                f"maxUnavailable {unavailable}: a rollout may stop all {fewest} pods at once"
            )
    for pdb in _of_kind(docs, "PodDisruptionBudget"):
        spec = pdb["spec"]
        # The disruption controller rounds percentages up, for both fields.
        if "minAvailable" in spec:
            allowed_gone = fewest - _pods(spec["minAvailable"], fewest, round_up=True)
        else:
            allowed_gone = _pods(spec.get("maxUnavailable", 1), fewest, round_up=True)
        if allowed_gone >= fewest:
            problems.append(f"{_name(pdb)} lets a drain evict all {fewest} pods")
        if spec.get("unhealthyPodEvictionPolicy") != "AlwaysAllow":
            problems.append(
                f"{_name(pdb)} has no unhealthyPodEvictionPolicy AlwaysAllow: a pod that "
                "is not ready would block a drain"
            )
    return problems


def _check_helm_test(docs: list[dict], deployment: dict) -> list[str]:
    """One ``helm test`` pod: the Deployment's image running files/test-inference.py,
    once, as non-root, against the gRPC port of one of the chart's Services."""
    tests = [d for d in _of_kind(docs, "Pod")
             if d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]  # fmt: skip
    if len(tests) != 1:
        return [f"{len(tests)} helm test pods, not one"]
    pod = tests[0]["spec"]
    (test,) = pod["containers"]
    problems = []
    if pod.get("restartPolicy") != "Never":
        problems.append("the helm test pod restarts: a failed test would be retried, not shown")
    if test.get("image") != _main_container(deployment).get("image"):
        problems.append(f"the helm test pod runs {test.get('image')}, not the Deployment's image")
    line = [*test.get("command", []), *test.get("args", [])]
    if line != ["python", "-c", HELM_TEST_SCRIPT.read_text()]:
        problems.append(f"the helm test pod does not run python -c {HELM_TEST_SCRIPT.name}")
    if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
        problems.append("the helm test pod does not set runAsNonRoot")
    url = {e["name"]: e.get("value") for e in test.get("env", [])}.get("TRITON_URL", "")
    host, _, port = url.rpartition(":")
    services = {d["metadata"]["name"]: d for d in _of_kind(docs, "Service")}
    grpc = [p for p in services.get(host, {}).get("spec", {}).get("ports", [])
            if p.get("name") == "grpc"]  # fmt: skip
    if not grpc or str(grpc[0]["port"]) != port:
        problems.append(f"the helm test pod's TRITON_URL {url!r} is no Service's gRPC port")
    return problems


def _check_secret(docs: list[dict], deployment: dict) -> list[str]:
    """The key comes from a Secret; where the chart renders it, the pods'
    ``checksum/api-key`` is the sha256 of the key it holds (a changed key restarts them)."""
    from ensemble.server import SERVER_API_KEY_ENV

    env = {e["name"]: e for e in _main_container(deployment).get("env", [])}
    ref = env.get(SERVER_API_KEY_ENV, {}).get("valueFrom", {}).get("secretKeyRef")
    if ref is None:
        return [
            f"no {SERVER_API_KEY_ENV} from a Secret: the restricted APIs get a key nobody knows"
        ]
    secrets = {d["metadata"]["name"]: d for d in _of_kind(docs, "Secret")}
    secret = secrets.get(ref["name"])
    if secret is None:
        return []  # an existing Secret the chart was pointed at; lookup reads none offline
    data = secret.get("data", {})
    if ref["key"] not in data:
        return [f"Secret/{ref['name']} has no key {ref['key']} for {SERVER_API_KEY_ENV}"]
    key = base64.b64decode(data[ref["key"]])
    annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
    if annotations.get(API_KEY_CHECKSUM) != hashlib.sha256(key).hexdigest():
        return [
            f"the pods' {API_KEY_CHECKSUM} is not the sha256 of the key in "
            f"Secret/{ref['name']}: a changed key would not restart them"
        ]
    return []


def check_consistency(docs: list[dict]) -> list[str]:
    """Problems in how the chart's documents fit together. Empty: consistent.

    Selectors (Deployment, Services, PDB, PodMonitor) match the pod labels; probes,
    Service and Ingress ports name ports that exist, and liveness restarts a pod within
    :data:`LIVENESS_RESTART_S`; the HPA targets the Deployment and scales on a metric
    prometheus-adapter serves; the container runs the launcher with arguments it
    accepts, on the container's ports and GPUs; the pod runs as non-root on a read-only
    root, with volumes where the server writes; preStop + the launcher's drain fit in
    the termination grace period; a rollout and the disruption budget always leave a
    pod ready; the ``helm test`` pod runs the inference check against a Service's gRPC
    port; the key comes from a Secret, and a changed key restarts the pods.
    """
    try:
        deployment = _deployment(docs)
    except ValueError as e:
        return [str(e)]
    pod = deployment["spec"]["template"]["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"].get("labels", {})
    container = _main_container(deployment)
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    problems = []
    if not _selects(deployment["spec"].get("selector"), pod_labels):
        problems.append("the Deployment's selector does not match its pod labels")
    if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
        problems.append("the pod does not set runAsNonRoot")
    if container.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
        problems.append("the container allows privilege escalation")
    problems += _check_launcher(container, ports)
    problems += _check_read_only_root(container)
    problems += _check_probes(container, ports)
    problems += _check_stopping(pod, container)
    problems += _check_services(docs, pod_labels, ports)
    problems += _check_selectors(docs, pod_labels, ports)
    problems += _check_autoscaling(docs, deployment)
    problems += _check_disruption(docs, deployment)
    problems += _check_helm_test(docs, deployment)
    problems += _check_secret(docs, deployment)
    return problems


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the dashboard's JSON) as YAML blocks, readable in the files."""


_Dumper.add_representer(
    str,
    lambda dumper, text: dumper.represent_scalar(
        "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None
    ),
)


def dump(docs: list[dict]) -> str:
    """``docs`` as one multi-document YAML text, in the chart's key order."""
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def kserve_documents() -> list[dict]:
    """The KServe example's documents (a ServingRuntime and an InferenceService)."""
    return [d for d in yaml.safe_load_all(KSERVE_RUNTIME.read_text()) if d is not None]


def _check_kserve_container(c: dict) -> tuple[argparse.Namespace | None, list[str]]:
    """The launcher's parse of a ServingRuntime container and its problems: arguments,
    a read-only root, the port Knative routes (the declared one, else 8080) is the
    launcher's HTTP or gRPC port, and an HTTP readiness probe on /v2/health/ready of
    the launcher's HTTP port (Knative's default TCP probe passes before the models
    load; a probe without a port asks the routed one)."""
    parsed, problems = _launcher(c)
    problems += _check_read_only_root(c)
    if parsed is None:
        return None, problems
    routed = [p["containerPort"] for p in c.get("ports", [])] or [KSERVE_DEFAULT_PORT]
    if any(port not in (parsed.http_port, parsed.grpc_port) for port in routed):
        problems.append(
            f"Knative routes port {routed}, the launcher listens on HTTP {parsed.http_port} "
            f"and gRPC {parsed.grpc_port}"
        )
    get = c.get("readinessProbe", {}).get("httpGet")
    if get is None:
        problems.append("no HTTP readinessProbe: Knative would route before the models load")
    elif get.get("path") != "/v2/health/ready" or get.get("port", routed[0]) != parsed.http_port:
        problems.append(
            f"the readinessProbe asks {get.get('path')} on port {get.get('port', routed[0])}, "
            f"not /v2/health/ready on the launcher's HTTP port {parsed.http_port}"
        )
    return parsed, problems


def check_kserve(docs: list[dict]) -> list[str]:
    """Problems in the KServe example: each ServingRuntime container that runs the
    launcher passes :func:`_check_kserve_container`, and each InferenceService names a
    runtime here, with containerConcurrency its launcher's ``--max-inflight`` (Knative
    then never sends a pod more than the front takes) and a concurrency scale target
    of at most containerConcurrency (Knative takes the smaller of the two)."""
    problems = []
    runtimes = _of_kind(docs, "ServingRuntime")
    if not runtimes:
        problems.append(f"{KSERVE_RUNTIME.name} has no ServingRuntime")
    max_inflight = {}
    for runtime in runtimes:
        for c in runtime["spec"].get("containers", []):
            parsed, found = _check_kserve_container(c)
            problems += [f"{_name(runtime)}: {problem}" for problem in found]
            if parsed is not None:
                max_inflight[runtime["metadata"]["name"]] = parsed.max_inflight
    for service in _of_kind(docs, "InferenceService"):
        predictor = service["spec"].get("predictor", {})
        runtime = predictor.get("model", {}).get("runtime")
        if runtime not in {r["metadata"]["name"] for r in runtimes}:
            problems.append(f"{_name(service)} names runtime {runtime!r}")
        if runtime not in max_inflight:
            continue
        concurrency = predictor.get("containerConcurrency")
        if concurrency != max_inflight[runtime]:
            problems.append(
                f"{_name(service)}: containerConcurrency {concurrency}, but the launcher "
                f"takes --max-inflight {max_inflight[runtime]} requests at once"
            )
        target = predictor.get("scaleTarget")
        if predictor.get("scaleMetric") != "concurrency" or not target:
            problems.append(f"{_name(service)}: no concurrency scaleTarget")
        elif concurrency and target > concurrency:
            problems.append(
                f"{_name(service)}: scaleTarget {target} above containerConcurrency "
                f"{concurrency}, which Knative takes instead"
            )
    return problems


def kinds(docs: list[dict]) -> str:
    """``"ConfigMap 1, Deployment 1, ..."``: the documents' kinds and counts."""
    counts = Counter(d.get("kind") for d in docs)
    return ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m cluster.chart",
        description="Render the Helm chart with each value set; validate it (Kubernetes "
        f"{KUBERNETES_VERSIONS[0]}-{KUBERNETES_VERSIONS[-1]}, strict) and check it.",
    )
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="where <set>.yaml are written")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = {}
    total = 0
    for name, value_set in VALUE_SETS.items():
        try:
            docs = value_set.render()
        except ChartError as e:
            failed[name] = [str(e)]
            print(f"{name}: render failed")
            continue
        (args.out / f"{name}.yaml").write_text(dump(docs))
        problems = validate(docs) + check_consistency(docs)
        checked = len(schema_checked(docs)) * len(KUBERNETES_VERSIONS)
        total += checked
        verdict = f"{len(problems)} problems" if problems else "valid, consistent"
        print(f"{name}: {len(docs)} documents ({kinds(docs)}); {checked} schema checks; {verdict}")
        if problems:
            failed[name] = problems
    wrongly_accepted = {name: why for name, (value_set, expected) in BROKEN_VALUE_SETS.items()
                        if (why := refusal(value_set, expected))}  # fmt: skip
    print(f"broken value sets: {len(BROKEN_VALUE_SETS) - len(wrongly_accepted)} of "
          f"{len(BROKEN_VALUE_SETS)} refused with the expected message")  # fmt: skip
    if wrongly_accepted:
        failed["broken value sets"] = [f"{n}: {why}" for n, why in wrongly_accepted.items()]
    kserve = kserve_documents()
    problems = validate(kserve) + check_kserve(kserve)
    verdict = f"{len(problems)} problems" if problems else "consistent (no schema: CRDs)"
    print(f"kserve example: {len(kserve)} documents ({kinds(kserve)}); {verdict}")
    if problems:
        failed["kserve"] = problems
    versions = f"{KUBERNETES_VERSIONS[0]}-{KUBERNETES_VERSIONS[-1]}"
    print(f"{total} document x version schema checks on Kubernetes {versions}; "
          f"rendered to {args.out}")  # fmt: skip
    for name, problems in failed.items():
        print(f"\n{name}:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
