"""Bring a model back when one of its Python-backend workers dies.

(When tritonserver itself dies, as a crash in a native backend makes it, the launcher
starts it again: ``ensemble.server``. This module counts that too, in :class:`Metrics`.)

Each instance of a Python-backend model runs in its own process, the stub
(``triton_python_backend_stub``). What the backend of Triton 2.51 (r24.10) does when a
stub dies, read in python_backend's ``src/python_be.cc`` and seen here: it answers each
request sent to that instance "Stub process '<instance>' is not healthy". It does not
restart the stub (the restart was removed in 24.07), and the model, its ensembles and
``/v2/health/ready`` stay READY. A load balancer keeps sending traffic to a server
that fails it.

The supervisor does only what the backend does not. Every 0.2 s it checks that the
stubs it knows still live (a new model's stubs are found by a full scan every few
seconds). When one of a READY model's stubs is gone, it:

1. marks the model and every ensemble that runs it as recovering, for the front
   (``ensemble.front.FrontState``): from then on their requests are answered
   UNAVAILABLE with a hint of when to try again (Triton would say NOT_FOUND, "no
   available versions", as for a model it never had), and ``/v2/health/ready`` says
   not ready, within a look (0.2 s) of the death rather than once the unload starts;
2. logs one line, counts the crash and unloads the model. The model and every
   ensemble that uses it turn UNAVAILABLE in Triton too;
3. loads the model again. Triton starts new stubs and brings back the ensembles that
   use it. Under load the new stubs compete for the CPU with every other model: a
   TensorFlow detector took 52 s to load at 16 clients on 2 cores, 13 s alone. So,
   where the launcher may (root, or CAP_SYS_NICE), the new stubs run at a higher
   priority (nice -10) until the model is ready, then back at 0;
4. once the model and its ensembles are READY again, lifts the marks, logs one line
   and counts the recovery with its duration.

A model that cannot be brought back (its files gone, a load that keeps failing) is
tried again with a doubling wait, for ever; after ``reload_attempts`` failed tries the
front also says not live (``/v2/health/live``), so that a kubelet restarts the pod
rather than keep a pod that stays not ready and blocks a node's drain.

A request that reached a dead stub leaves its model version behind for good. The
backend gives each request a response factory (python_be.cc,
``SaveRequestsToSharedMemory``), which holds the model and which only the stub's
answer deletes; a dead stub never answers. So the old version stays "unloading" in
Triton beside the reloaded one, and its dead stub stays unreaped (a zombie). Triton's
own stop waits for every version to unload: it would wait out its whole exit timeout
for that one and exit 1. :meth:`Supervisor.held` counts such versions, for the
launcher's stop (``ensemble.server``) to end Triton once they are all it waits for.

The counters are served in Prometheus' format on the launcher's metrics port.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ensemble.front import FrontState

STUB = "triton_python_backend_stub"
# Failed tries to bring a crashed model back before liveness fails (the tries go on).
RELOAD_ATTEMPTS = 5
# How long a reloaded model's ensembles may take to say READY before the marks lift.
ENSEMBLES_READY_S = 30.0


@dataclass(frozen=True)
class Control:
    """Triton's model-control API on its loopback HTTP port (behind the front, which
    checks the restricted APIs' key: none is needed here)."""

    url: str  # http://127.0.0.1:PORT

    def _request(self, path: str, body: dict | None) -> urllib.request.Request:
        data = None if body is None else json.dumps(body).encode()
        return urllib.request.Request(self.url + path, data=data, method="POST" if
                                      body is not None else "GET")  # fmt: skip

    def _call(self, path: str, body: dict | None = None, timeout: float = 120.0) -> int:
        try:
            with urllib.request.urlopen(self._request(path, body), timeout=timeout) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def _json(self, path: str, body: dict | None = None, timeout: float = 10.0):
        with urllib.request.urlopen(self._request(path, body), timeout=timeout) as r:
            return json.loads(r.read())

    def ensemble_steps(self) -> dict[str, set[str]]:
        """The models each READY ensemble runs as its steps, by ensemble."""
        steps = {}
        for entry in self._json("/v2/repository/index", {"ready": True}):
            config = self._json(f"/v2/models/{entry['name']}/config")
            if config.get("platform") == "ensemble":
                scheduling = config.get("ensemble_scheduling", {})
                steps[entry["name"]] = {step["model_name"] for step in scheduling.get("step", [])}
        return steps

    def ready(self, model: str) -> bool:
        try:
            return self._call(f"/v2/models/{model}/ready", timeout=5) == 200
        except OSError:
            return False

    def ready_server(self) -> bool:
        try:
            return self._call("/v2/health/ready", timeout=2) == 200
        except OSError:
            return False

    def unload(self, model: str) -> bool:
        # Only this model: its ensembles turn UNAVAILABLE by themselves and come back
        # when it loads again; its other steps keep their workers.
        body = {"parameters": {"unload_dependents": False}}
        return self._call(f"/v2/repository/models/{model}/unload", body) == 200

    def load(self, model: str) -> bool:
        return self._call(f"/v2/repository/models/{model}/load", {}) == 200


PF_EXITING = 0x4  # the kernel's flag for a process that is being torn down


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first, then
    the parent's pid, ...), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """The process exists, is not a zombie (Triton reaps a dead stub only when it lets
    go of the stub's model version) and is not exiting (a killed worker holding
    gigabytes takes a while to be torn down)."""
    fields = _stat(pid)
    if fields is None:
        return False
    state, flags = fields[0], int(fields[6])
    return state not in ("Z", "X") and not flags & PF_EXITING


# The nice value of a recovering model's new stubs while they load (see step 3).
BOOST_NICE = -10


def _set_nice(pid: int, nice: int) -> bool:
    """Set one process's (or thread's) nice value; False when not allowed or gone."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
        return True
    except OSError:
        return False


def _threads(pid: int) -> list[int]:
    """The thread ids of ``pid`` (on Linux a nice value belongs to each thread)."""
    try:
        return [t.id for t in psutil.Process(pid).threads()]
    except psutil.Error:
        return []


def unreaped(pid: int, parent: int) -> bool:
    """``pid`` is a dead child of ``parent`` that ``parent`` has not reaped (a zombie):
    Triton still holds the model version of that dead stub."""
    fields = _stat(pid)
    return fields is not None and fields[0] == "Z" and int(fields[1]) == parent


def dependents(model: str, steps: Mapping[str, set[str]]) -> set[str]:
    """The ensembles that run ``model``, directly or through another ensemble
    (``steps``: each ensemble's step models, as ``Control.ensemble_steps`` gives them)."""
    found: set[str] = set()
    frontier = {model}
    while frontier:
        frontier = {e for e, models in steps.items() if models & frontier} - found
        found |= frontier
    return found


def stub_model(cmdline: Sequence[str]) -> str | None:
    """The model whose Python-backend worker ``cmdline`` is, or None when it is not one:
    the stub executable with ``<repository>/<model>/<version>/model.py`` first."""
    if len(cmdline) < 2 or not cmdline[0].endswith(STUB):
        return None
    script = Path(cmdline[1])
    return script.parent.parent.name if script.name == "model.py" else None


def workers(server_pid: int) -> dict[int, str]:
    """{pid: model} of the live Python-backend stubs under ``server_pid`` (a dead one is
    gone, a zombie or exiting: see :func:`alive`)."""
    found: dict[int, str] = {}
    try:
        children = psutil.Process(server_pid).children()
    except psutil.Error:
        return found
    for child in children:
        try:
            model = stub_model(child.cmdline())
        except psutil.Error:
            continue
        if model is not None and alive(child.pid):
            found[child.pid] = model
    return found


class Metrics:
    """The supervisor's counters, in their own registry (not the process-global one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.crashes = Counter(
            "triton_worker_crashes", "Python-backend workers found dead, by model",
            ["model"], registry=self.registry,
        )  # fmt: skip
        self.recoveries = Counter(
            "triton_model_recoveries", "Models reloaded after a worker died, by model",
            ["model"], registry=self.registry,
        )  # fmt: skip
        self.failed = Counter(
            "triton_model_recovery_failures", "Reload attempts that failed, by model",
            ["model"], registry=self.registry,
        )  # fmt: skip
        self.down = Gauge(
            "triton_model_down", "1 while a model is being brought back after a crash",
            ["model"], registry=self.registry,
        )  # fmt: skip
        self.recovery_seconds = Histogram(
            "triton_model_recovery_seconds", "From a worker's death to its model READY",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120), registry=self.registry,
        )  # fmt: skip
        # tritonserver itself (a crash in a native backend, which runs inside it): the
        # launcher starts it again (ensemble.server).
        self.server_deaths = Counter(
            "triton_server_deaths", "Times tritonserver died and the launcher restarted it",
            registry=self.registry,
        )  # fmt: skip
        self.server_down = Gauge(
            "triton_server_down", "1 while tritonserver is being restarted after it died",
            registry=self.registry,
        )  # fmt: skip
        self.server_restart_seconds = Histogram(
            "triton_server_restart_seconds", "From tritonserver's death to every model READY",
            buckets=(2, 5, 10, 20, 30, 60, 120, 300), registry=self.registry,
        )  # fmt: skip

    def serve(self, host: str, port: int):
        """Serve /metrics on ``host:port``; returns the HTTP server (``shutdown()``)."""
        server, _thread = start_http_server(port, host, registry=self.registry)
        return server


class Supervisor:
    """Watches the stubs of one tritonserver process; see the module docstring."""

    def __init__(
        self,
        server_pid: int,
        control: Control,
        *,
        log: Callable[[str], None] = print,
        interval: float = 0.2,
        rescan: float = 5.0,
        metrics: Metrics | None = None,
        state: FrontState | None = None,
        reload_attempts: int = RELOAD_ATTEMPTS,
    ) -> None:
        self.server_pid = server_pid
        self.control = control
        self.log = log
        self.interval = interval
        self.rescan = rescan
        self._scanned = 0.0
        self.metrics = metrics or Metrics()
        self.state = state
        self.reload_attempts = reload_attempts
        self.steps: dict[str, set[str]] = {}  # each ensemble's step models
        self.known: dict[int, str] = {}
        self.broken: set[str] = set()  # models with a dead worker, not yet back
        self.crashes: list[list[int]] = []  # the dead workers of each crash, by pid
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.known = workers(self.server_pid)
        self._scanned = time.monotonic()
        self._learn_steps()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self, unload: bool = True) -> None:
        """Stop watching. A model still broken is unloaded (``unload``), so that Triton's
        own stop does not wait on its dead workers."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        for model in sorted(self.broken) if unload else ():
            self.control.unload(model)

    def _learn_steps(self) -> None:
        try:
            self.steps = self.control.ensemble_steps()
        except (OSError, ValueError, KeyError) as e:  # kept: the last steps learned
            self.log(f"supervisor: could not read the ensembles' steps: {e}")

    def held(self) -> int:
        """How many model versions Triton still holds for a crash (see the module
        docstring): one per crash whose dead workers it has not reaped. It never lets
        go of them; they end with Triton."""
        return sum(any(unreaped(pid, self.server_pid) for pid in pids) for pids in self.crashes)

    def check(self) -> list[str]:
        """One look: the models that lost a worker since the last look (and recover
        them). Only the known stubs are looked at, cheaply; every ``rescan`` seconds
        the process tree is listed again to learn the stubs of models loaded since."""
        if time.monotonic() - self._scanned > self.rescan:
            current = workers(self.server_pid)
            self._scanned = time.monotonic()
            if set(current.values()) != set(self.known.values()):
                self._learn_steps()  # models were loaded or unloaded since
        else:
            current = {pid: m for pid, m in self.known.items() if alive(pid)}
        lost: dict[str, list[int]] = {}
        for pid, model in self.known.items():
            if pid not in current:
                lost.setdefault(model, []).append(pid)
        self.known = current
        crashed = []
        for model, pids in sorted(lost.items()):
            # A model someone unloads or reloads loses its workers too: only a READY
            # model with a dead worker has crashed.
            if self.control.ready(model):
                crashed.append(model)
                self._recover(model, pids)
        return crashed

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as e:  # the watch must outlive any surprise
                self.log(f"supervisor: {type(e).__name__}: {e}")

    def _load_first(self, model: str) -> bool:
        """Load ``model`` with its new stubs ahead of the other models for the CPU."""
        loaded = threading.Event()
        boosted: set[int] = set()

        def boost() -> None:
            while not loaded.wait(0.05):
                for pid, m in workers(self.server_pid).items():
                    # Early, before the stub starts its threads: they inherit the nice.
                    if m == model and pid not in boosted and _set_nice(pid, BOOST_NICE):
                        boosted.add(pid)

        watcher = threading.Thread(target=boost, name=f"boost-{model}", daemon=True)
        watcher.start()
        try:
            return self.control.load(model)
        finally:
            loaded.set()
            watcher.join()
            for pid in boosted:
                for thread in _threads(pid):
                    _set_nice(thread, 0)  # raising the nice value needs no privilege

    def _recover(self, model: str, pids: list[int]) -> None:
        started = time.monotonic()
        affected = {model} | dependents(model, self.steps)
        if self.state is not None:  # first: the front refuses them from now on
            self.state.recovering(affected)
        # An out-of-memory kill or a `kill` of every worker ends them a moment apart:
        # wait one look more, so that one crash line counts them all.
        time.sleep(self.interval)
        siblings = [pid for pid, m in self.known.items() if m == model]
        pids = pids + [pid for pid in siblings if not alive(pid)]
        total = len(pids) + sum(1 for pid in siblings if alive(pid))
        self.metrics.crashes.labels(model).inc(len(pids))
        self.crashes.append(pids)
        self.metrics.down.labels(model).set(1)
        self.broken.add(model)
        self.log(
            f"worker crash: model {model!r} lost {len(pids)} of {total} worker(s) "
            f"(pid {', '.join(map(str, pids))}); reloading it"
        )
        delay, failures = 1.0, 0
        while not (self.control.unload(model) and self._load_first(model)):
            failures += 1
            self.metrics.failed.labels(model).inc()
            self.log(f"recovery of model {model!r} failed; trying again in {delay:.0f} s")
            if failures == self.reload_attempts and self.state is not None:
                self.state.not_live(f"model {model!r}: {failures} reloads failed")
                self.log(
                    f"model {model!r} could not be brought back in {failures} tries: the "
                    "server now says it is not live (/v2/health/live), for a restart"
                )
            if self._stop.wait(delay):
                return  # stopping: stop() unloads it
            delay = min(delay * 2, 30.0)
        self._await_ready(affected)
        if self.state is not None:
            self.state.recovered(affected)
        seconds = time.monotonic() - started
        self.broken.discard(model)
        self.metrics.down.labels(model).set(0)
        self.metrics.recoveries.labels(model).inc()
        self.metrics.recovery_seconds.observe(seconds)
        self.known = workers(self.server_pid)
        self._scanned = time.monotonic()
        self.log(f"recovered: model {model!r} serves again, {seconds:.1f} s after the crash")

    def _await_ready(self, models: set[str]) -> None:
        """Until each of ``models`` is READY (a reloaded model's ensembles follow it
        within moments), for at most ``ENSEMBLES_READY_S``."""
        waiting, deadline = set(models), time.monotonic() + ENSEMBLES_READY_S
        while waiting and time.monotonic() < deadline and not self._stop.is_set():
            waiting = {m for m in waiting if not self.control.ready(m)}
            if waiting:
                self._stop.wait(0.05)
        if waiting:
            self.log(f"supervisor: not ready {ENSEMBLES_READY_S:.0f} s after the reload: "
                     f"{', '.join(sorted(waiting))}")  # fmt: skip
