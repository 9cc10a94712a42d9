"""The chart's pods on this machine: replicas behind a real load balancer, scraped by a
real Prometheus with the chart's own recording rules, and what that shows.

``python -m cluster --replicas 3`` (``make cluster REPLICAS=3``) starts ``--replicas``
launchers with the arguments the chart (``cluster.chart``) gives its container, but
each pod's own address (127.0.0.1), free ports, work folder under ``build/cluster/``
and this checkout's models file, ``$TRITON_API_KEY`` set as the chart's Secret sets
it. HAProxy plays the Service, balancing gRPC per request over HTTP/2 (a plain
Service balances connections) and checking ``/v2/health/ready`` every 300 ms as the
readiness probe does; Prometheus scrapes every replica with a pod's labels
(``namespace``, ``pod``) and evaluates the chart's recording rules.

Then, under ``bench.load``'s closed loop through HAProxy (no client retry, so every
lost request is counted), it measures: throughput, latency, the spread over the
replicas and the HPA's desired count from the live metric (Kubernetes' formula) at
low load (1 client), high (4 per replica) and overload (8 per replica: at 4 a fast
moment of this machine queues each request about as long as the target, so the HPA
rightly keeps the count); throughput with 1, 2, ... replicas in rotation; a drain
(out of rotation, the chart's preStop pause, SIGTERM: zero requests lost expected,
then the replica rejoins); a crash (every process of a replica SIGKILLed: the losses
against what it had in flight); and whether each panel query of the chart's Grafana
dashboard returns data. Writes ``results/cluster/cluster.json`` and ``cluster.md``.
Everything listens on 127.0.0.1 and is stopped at the end, or on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import table
from bench.load import ANSWERED, FAILED, Load, grpc
from bench.processes import kill_all, spawn, tree, wait_until
from bench.served import is_ready
from cluster import chart
from ensemble.processes import Ports, free_port, stop_process
from ensemble.server import SERVER_API_KEY_ENV, argument_parser

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "build" / "cluster"
OUT = REPO / "results" / "cluster"
NAMESPACE = "local"  # the namespace label the scrape gives every replica, as a pod has
CHECK_INTERVAL_MS = 300  # HAProxy's health check: a replica is out after 2 failures
READY_TIMEOUT_S = 900.0
SCRAPE_S = 2  # Prometheus' scrape and rule evaluation interval here
HPA_TOLERANCE = 0.1  # Kubernetes' default: no change within 10 % of the target


# --- pure parts --------------------------------------------------------------------

# The launcher options a replica here sets to its own values (what differs between
# pods: the address, the ports, the work folder, where the models file is).
LOCAL_OPTIONS = ("--host", "--http-port", "--grpc-port", "--metrics-port",
                 "--supervisor-port", "--workdir", "--models")  # fmt: skip


def replica_argv(chart_args: Sequence[str], ports: Ports, workdir: Path, models: Path) -> list[str]:
    """The launcher arguments of one local replica: the chart's container arguments,
    each of :data:`LOCAL_OPTIONS` set to this replica's value (added when the chart
    leaves it to its default), every other option as the chart renders it.
    ``ValueError`` when the chart's arguments are not the launcher's."""
    try:
        argument_parser().parse_args(list(chart_args))
    except SystemExit:
        raise ValueError(f"the chart's arguments are not the launcher's: {chart_args}") from None
    values = ("127.0.0.1", ports.http, ports.grpc, ports.metrics, ports.supervisor, workdir,
              models)  # fmt: skip
    own = {option: str(value) for option, value in zip(LOCAL_OPTIONS, values, strict=True)}
    argv: list[str] = []
    args = list(chart_args)
    i = 0
    while i < len(args):
        option, eq, value = args[i].partition("=")
        if option in own:
            argv.append(f"{option}={own.pop(option)}")
            i += 1 if eq else 2
            continue
        argv.append(args[i])
        i += 1
    argv += [f"{option}={value}" for option, value in own.items()]
    return argv


def haproxy_config(
    replicas: Sequence[tuple[str, Ports]], grpc_port: int, http_port: int, stats_port: int,
    socket_path: Path,
) -> str:  # fmt: skip
    """HAProxy as the Service: gRPC over HTTP/2 balanced per request, HTTP alongside,
    each replica checked on its own ``/v2/health/ready``; the runtime API on
    ``socket_path``; its own Prometheus metrics on ``stats_port``."""

    def servers(port: Callable[[Ports], int], proto: str) -> str:
        return "\n".join(
            f"  server {name} 127.0.0.1:{port(p)}{proto} check port {p.http} check-proto h1"
            for name, p in replicas
        )

    return f"""global
  stats socket {socket_path} mode 600 level admin
  maxconn 4096
  log stdout format raw local0 info
  # With the default 16 kB buffers, HAProxy 2.6 reset its HTTP/2 connection to a
  # replica's front (nginx) about once per 50 gRPC requests of ~20 kB answers, losing
  # every stream on it (RST_STREAM REFUSED_STREAM); with 64 kB buffers none in runs of
  # several hundred requests.
  tune.bufsize 65536

defaults
  mode http
  log global
  option httplog
  option dontlog-normal  # only the requests that went wrong
  timeout connect 2s
  timeout client 300s
  timeout server 300s
  option httpchk GET /v2/health/ready
  # A check answered within 2 s passes: a replica at full load is slow, not gone.
  timeout check 2s
  # A request whose connection to a replica is refused (a replica that died and is not
  # yet out of rotation) is sent to another one: nothing was sent, nothing is lost.
  option redispatch 1
  retries 2
  default-server inter {CHECK_INTERVAL_MS}ms fall 2 rise 2

frontend grpc
  bind 127.0.0.1:{grpc_port} proto h2
  default_backend grpc

frontend http
  bind 127.0.0.1:{http_port}
  default_backend http

frontend stats
  bind 127.0.0.1:{stats_port}
  http-request use-service prometheus-exporter if {{ path /metrics }}

backend grpc
  balance roundrobin
{servers(lambda p: p.grpc, " proto h2")}

backend http
  balance roundrobin
{servers(lambda p: p.http, "")}
"""


def prometheus_config(
    replicas: Sequence[tuple[str, Ports]], rules: Path, haproxy_stats: int
) -> str:
    """Prometheus scraping each replica's Triton metrics and supervisor counters with
    the labels a pod has, evaluating ``rules`` (the chart's recording rules)."""

    def targets(port: Callable[[Ports], int]) -> str:
        return "".join(
            f'      - targets: ["127.0.0.1:{port(p)}"]\n'
            f'        labels: {{namespace: "{NAMESPACE}", pod: "{name}"}}\n'
            for name, p in replicas
        )

    return f"""global:
  scrape_interval: {SCRAPE_S}s
  evaluation_interval: {SCRAPE_S}s
rule_files:
  - {rules}
scrape_configs:
  - job_name: triton
    static_configs:
{targets(lambda p: p.metrics)}  - job_name: supervisor
    static_configs:
{targets(lambda p: p.supervisor)}  - job_name: haproxy
    static_configs:
      - targets: ["127.0.0.1:{haproxy_stats}"]
"""


QUANTITY_SUFFIXES = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
                     "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}  # fmt: skip


def parse_quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (``"100k"``, ``"250m"``, ``"1.5"``, ``"2Mi"``) as a number.
    Kubernetes' own parser is in the Go client; this covers the suffixes a metric
    target uses."""
    if isinstance(value, int | float):
        return float(value)
    match = re.fullmatch(r"\s*([+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*([a-zA-Z]*)\s*", value)
    if not match or match[2] not in QUANTITY_SUFFIXES:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return float(match[1]) * QUANTITY_SUFFIXES[match[2]]


def hpa_desired(
    current: int, values: Sequence[float], target: float, min_replicas: int, max_replicas: int,
    tolerance: float = HPA_TOLERANCE,
) -> int:  # fmt: skip
    """The replica count Kubernetes' HPA asks for on a Pods metric with an average-value
    target: ``ceil(current * mean(values) / target)``, unchanged when the ratio is
    within ``tolerance`` of 1, clamped to ``[min_replicas, max_replicas]``. ``values``
    are the ready pods' metric values."""
    if not values:
        return max(min_replicas, min(current, max_replicas))
    ratio = (sum(values) / len(values)) / target
    desired = current if abs(ratio - 1.0) <= tolerance else math.ceil(current * ratio)
    return max(min_replicas, min(desired, max_replicas))


@dataclass(frozen=True)
class Autoscaling:
    """The chart's HPA: its Pods metric (the series prometheus-adapter serves it from),
    the average-value target and the bounds."""

    metric: str
    series: str
    target: float
    min_replicas: int
    max_replicas: int


def autoscaling_of(docs: Sequence[dict], adapter_rules: Sequence[dict]) -> Autoscaling:
    """The HPA among the rendered ``docs`` and, from prometheus-adapter's ``rules``,
    the recorded series its metric is served from."""
    (hpa,) = (d for d in docs if d.get("kind") == "HorizontalPodAutoscaler")
    (metric,) = (m for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
    name = metric["pods"]["metric"]["name"]
    for rule in adapter_rules:
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule.get("seriesQuery", ""))
        named = rule.get("name", {}).get("as")
        if series and named == name:
            return Autoscaling(
                name, series[0], parse_quantity(metric["pods"]["target"]["averageValue"]),
                int(hpa["spec"].get("minReplicas", 1)), int(hpa["spec"]["maxReplicas"]),
            )  # fmt: skip
    raise ValueError(f"no prometheus-adapter rule serves the HPA's metric {name!r}")


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` of every panel target in a Grafana dashboard (rows'
    nested panels included), with Grafana's variables put in for a query by hand:
    ``$__rate_interval`` and ``$__interval`` as 1m, any other variable as a regex that
    matches everything (``.*``) or, outside a regex match, this run's namespace."""
    found = []
    panels = list(dashboard.get("panels", []))
    while panels:
        panel = panels.pop(0)
        panels[:0] = panel.get("panels", [])
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append((panel.get("title", ""), grafana_expr(target["expr"])))
    return found


def grafana_expr(expr: str) -> str:
    """A dashboard query with its Grafana variables replaced (see :func:`panel_queries`)."""
    expr = re.sub(r"\$(__rate_interval|__interval|\{__rate_interval\}|\{__interval\})", "1m", expr)
    expr = re.sub(r'=~\s*"\$\{?\w+\}?"', '=~".*"', expr)
    return re.sub(r"\$\{?\w+\}?", NAMESPACE, expr)


def spread(counts: dict[str, int]) -> dict:
    """How requests spread over replicas: each one's share, and the largest share over
    the smallest (1.0 is perfectly even)."""
    total = sum(counts.values())
    shares = {name: (n / total if total else 0.0) for name, n in counts.items()}
    low = min(counts.values(), default=0)
    return {
        "requests": counts,
        "shares": {k: round(v, 3) for k, v in shares.items()},
        "max_over_min": round(max(counts.values()) / low, 2) if low else None,
    }


def ensemble_requests(metrics_text: str) -> int:
    """Requests the detection ensembles answered, from Triton's metrics page."""
    found = re.findall(
        r'^nv_inference_request_success\{model="detect_[^"]*",[^}]*\}\s+([0-9.e+]+)$',
        metrics_text, re.M,
    )  # fmt: skip
    return int(sum(float(v) for v in found))


# --- processes ---------------------------------------------------------------------


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except OSError:
        return 0, b""


@dataclass
class Replica:
    """One local pod: the launcher with the chart's arguments, its processes in a group
    of their own (a kill takes all of them, as a container's does)."""

    name: str
    ports: Ports
    argv: list[str]
    log_path: Path
    process: subprocess.Popen | None = None

    def start(self, env: dict[str, str]) -> None:
        command = [sys.executable, "-m", "ensemble.server", *self.argv]
        self.process = spawn(command, self.log_path, "a", cwd=REPO, env=env,
                             start_new_session=True)  # fmt: skip

    def ready(self) -> bool:
        return is_ready(f"http://127.0.0.1:{self.ports.http}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def answered(self) -> int:
        status, body = _get(f"http://127.0.0.1:{self.ports.metrics}/metrics")
        return ensemble_requests(body.decode()) if status == 200 else 0

    def terminate(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, as the kubelet sends after preStop; the launcher drains and stops."""
        if not self.alive():
            return None
        processes = self.tree()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        self.kill(processes)  # anything it left behind (nothing, after a clean stop)
        return code

    def tree(self) -> list:
        """The launcher and every process under it (``bench.processes.tree``)."""
        return tree(self.process.pid) if self.alive() else []

    def kill(self, processes: list | None = None) -> None:
        """SIGKILL to every process of the replica at once (Triton, its workers and the
        front run in sessions of their own under the launcher): ``processes``, or the
        launcher's tree now."""
        kill_all(self.tree() if processes is None else processes)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)


class Helper:
    """A helper process of the run: its configuration in the work folder, checked by
    its own tool before it starts, its output in ``<name>.log``."""

    def __init__(self, name: str, config: str, config_path: Path) -> None:
        self.name, self.config_path = name, config_path
        config_path.write_text(config)
        self.log_path = config_path.with_name(f"{name}.log")
        self.process: subprocess.Popen | None = None

    def launch(self, check: list[str], command: list[str]) -> None:
        checked = subprocess.run([*check, str(self.config_path)], capture_output=True, text=True)
        if checked.returncode != 0:
            output = checked.stdout + checked.stderr
            raise RuntimeError(f"{check[0]} refuses {self.config_path}:\n{output}")
        self.process = spawn(command, self.log_path)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10)


class HAProxy(Helper):
    def __init__(self, config: str, workdir: Path):
        self.socket_path = workdir / "haproxy.sock"
        self.socket_path.unlink(missing_ok=True)  # a previous run's
        super().__init__("haproxy", config, workdir / "haproxy.cfg")

    def start(self) -> None:
        self.launch(["haproxy", "-c", "-q", "-f"], ["haproxy", "-db", "-f", str(self.config_path)])
        wait_until(self.socket_path.exists, self.process, 10, f"haproxy (see {self.log_path})",
                   every_s=0.05)  # fmt: skip

    def command(self, line: str) -> str:
        """One command on the runtime API (``show stat``, ``set server ... state``)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.socket_path))
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def set_state(self, server: str, state: str) -> None:
        """``maint`` takes ``server`` out of rotation in both backends (requests in
        flight finish); ``ready`` lets the health check bring it back."""
        for backend in ("grpc", "http"):
            answer = self.command(f"set server {backend}/{server} state {state}").strip()
            if answer:
                raise RuntimeError(f"haproxy: set server {backend}/{server}: {answer}")

    def stats(self) -> dict[str, dict[str, str]]:
        """The gRPC backend's servers: ``{name: show-stat row}`` (``status``, ``scur``:
        requests in flight, ``stot``, ...)."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        aggregates = ("FRONTEND", "BACKEND")
        return {r["svname"]: r for r in rows
                if r["pxname"] == "grpc" and r["svname"] not in aggregates}  # fmt: skip

    def up(self) -> list[str]:
        return [name for name, row in self.stats().items() if row["status"].startswith("UP")]


class Prometheus(Helper):
    def __init__(self, config: str, workdir: Path, port: int):
        super().__init__("prometheus", config, workdir / "prometheus.yml")
        self.port = port
        self.data = workdir / "prometheus-data"

    def start(self) -> None:
        shutil.rmtree(self.data, ignore_errors=True)
        self.launch(["promtool", "check", "config"], [
            "prometheus", f"--config.file={self.config_path}", f"--storage.tsdb.path={self.data}",
            f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=2h",
        ])  # fmt: skip

    def query(self, expr: str) -> list[dict]:
        """An instant query's result vector (``[{"metric": {...}, "value": [t, "v"]}]``)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        status, body = _get(url, 10.0)
        if status != 200:
            raise RuntimeError(f"Prometheus answered {status} to {expr!r}: {body[:300]!r}")
        return json.loads(body)["data"]["result"]

    def values(self, expr: str) -> dict[str, float]:
        """``{pod: value}`` of a query whose series carry a ``pod`` label (NaN dropped)."""
        found = {}
        for row in self.query(expr):
            value = float(row["value"][1])
            if not math.isnan(value):
                found[row["metric"].get("pod", "")] = value
        return found


# --- load --------------------------------------------------------------------------


def load(cluster: Cluster, ensembles: Sequence[str], photos: Sequence[bytes],
         concurrency: int) -> Load:  # fmt: skip
    """``bench.load``'s closed loop through HAProxy, started by ``with``: raw ``infer``
    calls with no retry, so that a request the cluster lost is counted as failed."""
    return Load(grpc(cluster.url), ensembles, photos, concurrency)


def summary(running: Load) -> dict:
    """A load's figures as cluster.json keeps them."""
    f = running.figures(digits=1)
    return {"seconds": round(f["seconds"], 1), "answered": f["answered"],
            "refused_busy": f["refused"], "failed": f["failed"],
            "images_per_s": round(f["images_per_s"], 2), "p50_ms": f["p50_ms"],
            "p99_ms": f["p99_ms"], "failures": f["failures"]}  # fmt: skip


# --- the run -----------------------------------------------------------------------


@dataclass
class Phases:
    """How long each part runs, in seconds."""

    # The steady loads (the HPA's rate windows are 1 minute): 1 client, then
    # HIGH_CLIENTS_PER_REPLICA, then OVERLOAD_CLIENTS_PER_REPLICA per replica.
    low: float
    high: float
    overload: float
    per_count: float  # throughput with 1, 2, ... replicas; 0 skips it
    around: float  # load before and after a drain or a kill


FULL = Phases(low=75, high=75, overload=75, per_count=40, around=15)
HIGH_CLIENTS_PER_REPLICA = 4  # the spread, throughput, drain and kill run at this load
OVERLOAD_CLIENTS_PER_REPLICA = 8  # the load the HPA must answer with more replicas
QUICK = Phases(low=40, high=40, overload=40, per_count=20, around=8)


class Cluster:
    """Everything ``python -m cluster`` starts, stopped together."""

    def __init__(self, replicas: int, models: Path, values: Sequence[Path],
                 log: Callable[[str], None] = print, workdir: Path = WORK):  # fmt: skip
        # ``workdir``: the replicas' folders, HAProxy's socket, Prometheus' data; a test
        # gives its own, so that a `make cluster` running meanwhile is not disturbed.
        self.log = log
        self.models = models
        self.docs = chart.render(list(values))
        self.chart_args = chart.container_args(self.docs)
        self.deployment = next(d for d in self.docs if d.get("kind") == "Deployment")
        self.pod = self.deployment["spec"]["template"]["spec"]
        workdir.mkdir(parents=True, exist_ok=True)
        self.replicas = []
        for i in range(replicas):
            name = f"replica-{i}"
            ports = Ports(*(free_port() for _ in range(4)))
            replica_dir = workdir / name
            shutil.rmtree(replica_dir, ignore_errors=True)
            replica_dir.mkdir(parents=True)
            argv = replica_argv(self.chart_args, ports, replica_dir, models)
            self.replicas.append(Replica(name, ports, argv, replica_dir / "launcher.log"))
        self.grpc_port, self.http_port, stats, prom = (free_port() for _ in range(4))
        named = [(r.name, r.ports) for r in self.replicas]
        self.haproxy = HAProxy(
            haproxy_config(named, self.grpc_port, self.http_port, stats, workdir / "haproxy.sock"),
            workdir,
        )
        self.prometheus = Prometheus(
            prometheus_config(named, chart.RECORDING_RULES, stats), workdir, prom
        )
        self.env = dict(os.environ)
        self.env[SERVER_API_KEY_ENV] = secrets.token_urlsafe(24)  # as the chart's Secret does

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def pre_stop_s(self) -> float:
        (container,) = (c for c in self.pod["containers"] if c.get("lifecycle"))
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        return float(command[-1])

    def start(self) -> None:
        for r in self.replicas:
            self.log(f"{r.name}: python -m ensemble.server {' '.join(r.argv)}")
            r.start(self.env)
        self.haproxy.start()
        self.prometheus.start()
        self.wait_ready(self.replicas)
        self.log(f"HAProxy: gRPC {self.url}, HTTP 127.0.0.1:{self.http_port}; "
                 f"Prometheus http://127.0.0.1:{self.prometheus.port}")  # fmt: skip

    def wait_ready(self, replicas: Sequence[Replica], timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        waiting = {r.name for r in replicas}
        while waiting and time.monotonic() < deadline:
            for r in replicas:
                if r.name in waiting and not r.alive():
                    raise RuntimeError(f"{r.name} exited while loading; see {r.log_path}")
            up = set(self.haproxy.up())
            waiting = {r.name for r in replicas if not (r.ready() and r.name in up)}
            time.sleep(0.5)
        if waiting:
            raise RuntimeError(f"not ready after {timeout:.0f} s: {', '.join(sorted(waiting))}")

    def answered(self) -> dict[str, int]:
        return {r.name: r.answered() for r in self.replicas}

    def stop(self) -> None:
        # One SIGTERM each (a second one makes the launcher give up its orderly stop),
        # then whatever is left of the processes each had is killed: Triton runs in a
        # session of its own and would outlive a launcher that died first.
        trees = [r.tree() for r in self.replicas]
        for r in self.replicas:
            if r.alive():
                r.process.send_signal(signal.SIGTERM)
        for r, processes in zip(self.replicas, trees, strict=True):
            if r.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    r.process.wait(60)
            r.kill(processes)
        self.haproxy.stop()
        self.prometheus.stop()


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after}


def run(cluster: Cluster, phases: Phases, photos: Sequence[bytes], autoscaling: Autoscaling,
        log: Callable[[str], None] = print) -> dict:  # fmt: skip
    """The measurements of the module docstring, on a started ``cluster``."""
    from bench import served
    from client import DetectorClient

    with DetectorClient(cluster.url, api_key=cluster.env[SERVER_API_KEY_ENV]) as client:
        ensembles = served.ordered([m for m, ok in client.ready_models().items() if ok])
    n = len(cluster.replicas)
    high = HIGH_CLIENTS_PER_REPLICA * n
    result: dict = {"replicas": n, "ensembles": ensembles, "chart_args": cluster.chart_args,
                    "autoscaling": autoscaling.__dict__, "load": {}}  # fmt: skip
    for ensemble in ensembles:  # one request each through every replica: lazy set-up
        with load(cluster, [ensemble], photos[:1], n) as warm:
            while warm.count(ANSWERED) < n and warm.elapsed() < 300:
                time.sleep(0.2)

    def steady(name: str, concurrency: int, seconds: float) -> None:
        log(f"{name} load: {concurrency} client(s) for {seconds:.0f} s")
        before = cluster.answered()
        with load(cluster, ensembles, photos, concurrency) as running:
            time.sleep(seconds)
            # The HPA reads the metric while the load runs, as a live cluster's does.
            series = cluster.prometheus.values(f'{autoscaling.series}{{namespace="{NAMESPACE}"}}')
            outcome = summary(running.stop())
        counts = _delta(cluster.answered(), before)
        desired = hpa_desired(n, list(series.values()), autoscaling.target,
                              autoscaling.min_replicas, autoscaling.max_replicas)  # fmt: skip
        result["load"][name] = {
            "concurrency": concurrency, **outcome, "spread": spread(counts),
            "hpa": {"metric_per_pod": {k: round(v, 1) for k, v in series.items()},
                    "current_replicas": n, "desired_replicas": desired},
        }  # fmt: skip
        log(f"  {outcome['images_per_s']:.2f} images/s, {outcome['failed']} failed; "
            f"per replica {counts}; "
            f"{autoscaling.series} {[round(v) for v in series.values()]} -> HPA wants "
            f"{desired} replica(s) (target {autoscaling.target:g})")  # fmt: skip

    steady("low", 1, phases.low)
    steady("high", high, phases.high)
    steady("overload", OVERLOAD_CLIENTS_PER_REPLICA * n, phases.overload)

    # Throughput with fewer replicas in rotation: the others in maintenance.
    result["throughput"] = {str(n): result["load"]["high"]["images_per_s"]}
    fewer = range(n - 1, 0, -1) if phases.per_count > 0 else range(0)
    for count in fewer:
        out = [r.name for r in cluster.replicas[count:]]
        for name in out:
            cluster.haproxy.set_state(name, "maint")
        with load(cluster, ensembles, photos, high) as running:
            time.sleep(phases.per_count)
            rate = summary(running.stop())["images_per_s"]
        result["throughput"][str(count)] = rate
        log(f"{count} replica(s) in rotation, {high} clients: {rate:.2f} images/s")
        for name in out:
            cluster.haproxy.set_state(name, "ready")
    cluster.wait_ready(cluster.replicas, 60)

    result["drain"] = drain(cluster, cluster.replicas[0], ensembles, photos, high,
                            phases, log)  # fmt: skip
    if n > 1:
        result["kill"] = crash(cluster, cluster.replicas[-1], ensembles, photos, high,
                               phases, log)  # fmt: skip
    result["dashboard"] = dashboard_queries(cluster.prometheus, log)
    return result


def drain(cluster: Cluster, victim: Replica, ensembles, photos, concurrency: int,
          phases: Phases, log) -> dict:  # fmt: skip
    """Out of rotation, the preStop pause, SIGTERM; then the replica started again."""
    pause = cluster.pre_stop_s()
    log(f"drain {victim.name}: out of rotation, {pause:g} s preStop, SIGTERM, under "
        f"{concurrency} clients")  # fmt: skip
    with load(cluster, ensembles, photos, concurrency) as running:
        time.sleep(phases.around)
        cluster.haproxy.set_state(victim.name, "maint")  # the endpoint is removed
        time.sleep(pause)  # preStop
        started = time.monotonic()
        code = victim.terminate()
        stopped_s = time.monotonic() - started
        time.sleep(phases.around)
        outcome = summary(running.stop())
    log(f"  {outcome['answered']} answered, {outcome['failed']} failed, "
        f"{outcome['refused_busy']} busy; "
        f"{victim.name} exited {code} {stopped_s:.1f} s after SIGTERM")  # fmt: skip
    # A new pod in its place: it joins once its readiness check passes.
    victim.start(cluster.env)
    cluster.haproxy.set_state(victim.name, "ready")
    started = time.monotonic()
    cluster.wait_ready([victim])
    rejoined_s = time.monotonic() - started
    log(f"  {victim.name} started again and back in rotation after {rejoined_s:.0f} s")
    return {"replica": victim.name, "pre_stop_s": pause, "exit_code": code,
            "stopped_s": round(stopped_s, 1), "rejoined_s": round(rejoined_s, 1),
            **outcome}  # fmt: skip


def crash(cluster: Cluster, victim: Replica, ensembles, photos, concurrency: int,
          phases: Phases, log) -> dict:  # fmt: skip
    """Every process of ``victim`` SIGKILLed at once, under load."""
    log(f"kill {victim.name} (SIGKILL to all its processes) under {concurrency} clients")
    with load(cluster, ensembles, photos, concurrency) as running:
        time.sleep(phases.around)
        in_flight = int(cluster.haproxy.stats()[victim.name]["scur"] or 0)
        killed_at = running.elapsed()
        victim.kill()
        down_s = None
        while running.elapsed() - killed_at < phases.around * 2:
            if down_s is None and victim.name not in cluster.haproxy.up():
                down_s = running.elapsed() - killed_at
            time.sleep(0.1)
        outcome = summary(running.stop())
    failed_at = [r.end for r in running.records if r.outcome == FAILED]
    last = max(failed_at, default=None)
    after = [t - killed_at for t in failed_at]
    log(f"  {outcome['failed']} lost with {in_flight} in flight on {victim.name}; health check "
        f"took it out after {down_s if down_s is None else round(down_s, 1)} s; last loss "
        f"{'-' if last is None else f'{last - killed_at:.1f} s'} after the kill")  # fmt: skip
    return {"replica": victim.name, "in_flight_at_kill": in_flight,
            "lost": outcome["failed"], "out_of_rotation_after_s": down_s and round(down_s, 2),
            "last_loss_after_s": round(max(after), 2) if after else None,
            "lost_after_out_of_rotation": sum(1 for t in after if down_s and t > down_s + 0.5),
            **outcome}  # fmt: skip


def dashboard_queries(prometheus: Prometheus, log) -> list[dict]:
    dashboard = json.loads(chart.DASHBOARD.read_text())
    found = []
    for title, expr in panel_queries(dashboard):
        try:
            series = len(prometheus.query(expr))
            error = ""
        except RuntimeError as e:
            series, error = 0, str(e)
        found.append({"panel": title, "expr": expr, "series": series, "error": error})
    empty = [f["panel"] for f in found if not f["series"]]
    log(f"dashboard: {len(found) - len(empty)} of {len(found)} panel queries return data"
        + (f"; none from: {', '.join(empty)}" if empty else ""))  # fmt: skip
    return found


def markdown(r: dict) -> str:
    a = r["autoscaling"]
    lines = [
        f"# Local cluster: {r['replicas']} replicas behind HAProxy, Prometheus with the "
        "chart's rules",
        "",
        f"Launcher arguments from the chart: `{' '.join(r['chart_args'])}`",
        "",
        *table(("load", "clients", "images/s", "p50 ms", "p99 ms", "failed", "busy",
                "requests per replica", f"{a['series']} per pod",
                f"HPA desired (of {r['replicas']})"), [
            (name, x["concurrency"], x["images_per_s"], x["p50_ms"], x["p99_ms"], x["failed"],
             x["refused_busy"], ", ".join(f"{k}: {v}" for k, v in x["spread"]["requests"].items()),
             ", ".join(f"{v:g}" for v in x["hpa"]["metric_per_pod"].values()),
             x["hpa"]["desired_replicas"]) for name, x in r["load"].items()
        ]),
        "",
        f"HPA: `{a['metric']}` (served from `{a['series']}`), target average "
        f"{a['target']:g}, {a['min_replicas']} to {a['max_replicas']} replicas, "
        f"{int(HPA_TOLERANCE * 100)} % tolerance.",
        "",
        *table(("replicas in rotation", *r["throughput"]),
               [("images/s", *r["throughput"].values())]),
        "",
    ]  # fmt: skip
    d = r["drain"]
    lines.append(
        f"Drain of {d['replica']} (out of rotation, {d['pre_stop_s']:g} s preStop, SIGTERM): "
        f"{d['answered']} answered, **{d['failed']} lost**; exit code {d['exit_code']} "
        f"{d['stopped_s']} s after SIGTERM; started again and back in rotation after "
        f"{d['rejoined_s']} s."
    )
    if "kill" in r:
        k = r["kill"]
        lines += ["", (
            f"Kill of {k['replica']} (SIGKILL to all its processes): **{k['lost']} lost** with "
            f"{k['in_flight_at_kill']} in flight on it; out of rotation after "
            f"{k['out_of_rotation_after_s']} s; last loss {k['last_loss_after_s']} s after "
            f"the kill; {k['lost_after_out_of_rotation']} lost after it was out of rotation."
        )]  # fmt: skip
    dash = r["dashboard"]
    answered = sum(1 for q in dash if q["series"])
    lines += ["", f"Dashboard: {answered} of {len(dash)} panel queries return data.", "",
              *table(("panel", "series", "query"),
                     [(q["panel"], q["series"], f"`{q['expr']}`") for q in dash])]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m cluster", description="Replicas as the chart runs them, behind "
        "HAProxy, scraped by Prometheus: spread, throughput, drain, kill, autoscaling.",
    )  # fmt: skip
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="shorter phases (CI)")
    ap.add_argument("--models", type=Path, default=REPO / "models.toml")
    ap.add_argument("--values", type=Path, action="append",
                    help="chart values files (default: the chart's cpu values)")  # fmt: skip
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.replicas < 2:
        ap.error("--replicas must be at least 2 (a drain and a kill need another replica)")
    for tool in ("haproxy", "prometheus", "promtool"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"error: {tool} is not installed (make setup installs it)", file=sys.stderr)
            return 2
    from bench.photos import photo_files

    values = args.values or [chart.CPU_VALUES]
    autoscaled = chart.render([*values], {"autoscaling": {"enabled": True}})
    autoscaling = autoscaling_of(autoscaled, chart.adapter_rules())
    cluster = Cluster(args.replicas, args.models.resolve(), values)
    try:
        cluster.start()
        result = run(cluster, QUICK if args.quick else FULL, photo_files("jpeg"), autoscaling)
    finally:
        cluster.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster.json").write_text(json.dumps(result, indent=2) + "\n")
    report = markdown(result)
    (args.out / "cluster.md").write_text(report)
    print(report)
    print(f"wrote {args.out / 'cluster.md'} and cluster.json")
    return 0
