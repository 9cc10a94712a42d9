"""Start a real Triton Inference Server on this machine, no Docker needed.

The server binary is the Triton 2.51 build inside the PyPI wheel
``nvidia-pytriton==0.7.0``. It is copied once into ``.cache/triton/`` with the
Python-backend stub that matches this interpreter, then started on a model
repository written by ``configgen``. Listens on localhost unless asked otherwise.

One server run is three parts, started and stopped together:

- Triton, on loopback ports of its own (its metrics port is the public one);
- the front (``ensemble.front``, nginx) on the public HTTP and gRPC ports: the
  request size limit, TLS, and a stop that drains;
- the supervisor (``ensemble.supervisor``), which reloads a model whose worker died
  and serves its counters on the supervisor port.

Beyond localhost, Triton's repository, model-control, statistics, logging, trace and
shared-memory APIs need a key (header ``triton-api-key``). Inference, health, metadata
and model configs stay open.

    python -m ensemble.server                     # models.toml, ports 8000/8001/8002
    python -m ensemble.server --models my-models.toml --grpc-port 9001

A :class:`ServerConfig` says how a run starts (frozen); a :class:`TritonServer` is the
running handle (its processes, URLs, stop and the restart of a Triton that died).
Commands, the demo, the tests and the benchmarks all start it the same way:
:func:`running_server` (a context manager), or :func:`serve_until_stopped` in the
foreground with ``ensemble.processes.stop_signals``. Ports, free ports and stopping a
helper process are ``ensemble.processes``'.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import IO

import psutil

from ensemble import configgen
from ensemble.contract import API_KEY_HEADER, GRPC_API_KEY_HEADER, is_loopback_host
from ensemble.front import (
    GRPC_MAX_CONNECTION_AGE_S,
    MAX_INFLIGHT,
    Front,
    FrontError,
    FrontState,
    Tls,
    nginx_config,
)
from ensemble.processes import (
    Ports,
    Reaper,
    free_port,
    kill_group,
    port_holder,
    port_in_use,
    stop_signals,
)
from ensemble.registry import ModelsFileError, Registry, load_models
from ensemble.supervisor import RELOAD_ATTEMPTS, Control, Metrics, Supervisor

REPO_ROOT = configgen.REPO_ROOT
CACHE = REPO_ROOT / ".cache"
LOG_DIR = REPO_ROOT / "build" / "logs"


class ServerError(RuntimeError):
    """The server could not be started; the message says why and what to do."""


# Triton's APIs that need the key once the server listens beyond localhost: they
# change or reveal what it serves. Inference, health, metadata, model-config stay open.
RESTRICTED_APIS = ("model-repository", "statistics", "logging", "trace", "shared-memory")
# Where the launcher reads that key (the client reads its own from DETECTOR_API_KEY).
SERVER_API_KEY_ENV = "TRITON_API_KEY"
# Triton's own stop waits this long for requests in flight (the front drained first)
# and for its models to unload: ten workers' unloading took over 10 s on a loaded
# 2-core machine (Triton then exits 1). A pod's grace period covers it (the chart).
EXIT_TIMEOUT_S = 20
# Triton's report, every second of that wait, of the model versions still unloading
# (ready, loading or unloading ones, and those kept in the background) and of the
# non-inference requests still open (server.cc).
UNLOAD_REPORT = re.compile(
    r"Timeout \d+: Found (\d+) live models and (\d+) in-flight non-inference requests"
)
# Triton's death is looked for this often; a restart may take this long to be ready
# (every model loads again), and is tried this many times before the launcher stops.
WATCH_INTERVAL_S = 0.2
RESTART_TIMEOUT_S = 300.0
RESTART_ATTEMPTS = 5


def resolve_api_key(host: str, key_file: Path | None, workdir: Path) -> str | None:
    """The restricted-API key: from ``key_file``, else ``$TRITON_API_KEY``, else (when
    ``host`` is not loopback) a new one written to ``workdir/api-key`` (mode 0600).
    None on loopback without a key: nothing is restricted."""
    if key_file is not None:
        key = Path(key_file).read_text().strip()
        if not key:
            raise ServerError(f"the API key file {key_file} is empty")
        return key
    if os.environ.get(SERVER_API_KEY_ENV, "").strip():
        return os.environ[SERVER_API_KEY_ENV].strip()
    if is_loopback_host(host):
        return None
    path = workdir / "api-key"
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key


def _tee(pipe: IO[bytes], log: IO[str]) -> None:
    """Triton's output, line by line, into its log file and onto this process's stdout,
    until Triton closes it; then closes the file."""
    with pipe, log:
        for raw in iter(pipe.readline, b""):
            line = raw.decode(errors="replace")
            log.write(line)
            log.flush()  # the launcher reads the file (its reports, its failed models)
            sys.stdout.write(line)
            sys.stdout.flush()


def _missing(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return True
    return False


def _pytriton_dirs() -> tuple[Path, Path]:
    try:
        dist = metadata.distribution("nvidia-pytriton")
    except metadata.PackageNotFoundError:
        raise ServerError("nvidia-pytriton is not installed: run `make setup`") from None
    site = Path(dist.locate_file(""))
    return site / "pytriton" / "tritonserver", site / "nvidia_pytriton.libs"


# A Triton installed as NVIDIA's images have it (bin/tritonserver, backends/): the ngc
# image's server, with its native PyTorch and TensorFlow backends.
TRITON_HOME_ENV = "TRITON_SERVER_HOME"
NGC_TRITON_HOME = Path("/opt/tritonserver")


def triton_home() -> tuple[Path, Path | None]:
    """The runnable server tree and the libraries it needs on ``LD_LIBRARY_PATH``.

    ``$TRITON_SERVER_HOME``, else the wheel's build when nvidia-pytriton is installed,
    else NVIDIA's ``/opt/tritonserver`` (its own libraries: None). The wheel keeps one
    Python-backend stub per Python version; the backend looks for
    ``triton_python_backend_stub`` next to ``libtriton_python.so``, so a copy of the
    tree, prepared once, gets this interpreter's stub put in place.
    """
    given = os.environ.get(TRITON_HOME_ENV, "").strip()
    if given or (_missing("nvidia-pytriton") and (NGC_TRITON_HOME / "bin").is_dir()):
        home = Path(given) if given else NGC_TRITON_HOME
        if not (home / "bin" / "tritonserver").is_file():
            raise ServerError(f"no bin/tritonserver under {home} (${TRITON_HOME_ENV})")
        return home, None
    tree, libs = _pytriton_dirs()
    version = metadata.version("nvidia-pytriton")
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    home = CACHE / "triton" / f"pytriton-{version}-py{py}"
    stub = home / "backends" / "python" / "triton_python_backend_stub"
    if not stub.exists():
        source_stub = tree / "python_backend_stubs" / py / "triton_python_backend_stub"
        if not source_stub.exists():
            raise ServerError(f"nvidia-pytriton {version} has no Python-backend stub for {py}")
        tmp = home.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(tree, tmp, ignore=shutil.ignore_patterns("python_backend_stubs"))
        shutil.copy2(source_stub, tmp / "backends" / "python" / stub.name)
        shutil.rmtree(home, ignore_errors=True)
        tmp.rename(home)
    return home, libs


def _environment(libs: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    # The stub embeds the system libpython; it finds this virtual environment's
    # packages (numpy, torch, ...) through the `python3` first on PATH and its
    # pyvenv.cfg. PYTHONPATH alone is not enough: the stub then fails to import numpy.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if libs is not None:
        path = f"{libs}{os.pathsep}{env.get('LD_LIBRARY_PATH', '')}"
        env["LD_LIBRARY_PATH"] = path.rstrip(os.pathsep)
    jemalloc = _jemalloc()
    if jemalloc and "LD_PRELOAD" not in env:
        # glibc's malloc keeps per-thread arenas whose freed memory it rarely returns:
        # under load every worker grew without bound (a TensorFlow worker from 1.8 to
        # 2.3 GiB in 100 s; the server from 4.4 to 11.2 GiB PSS in a 10-minute soak at
        # 16 clients). jemalloc, which NVIDIA's Triton release notes recommend for this,
        # returns it. Triton and every worker it starts inherit the preload.
        env["LD_PRELOAD"] = jemalloc
        env.setdefault("MALLOC_CONF", "background_thread:true")
    # libtorch's OpenMP threads spin up to 300,000 times waiting for work before they
    # sleep, taking a core from the detectors beside them (detect_all); 10,000 kept a
    # lone request as fast (NanoDet 37 ms against 39) and raised detect_all's images/s
    # at c=8 from 5.5 to 6.3-6.9 with the latency profile (one run each).
    env.setdefault("GOMP_SPINCOUNT", "10000")
    return env


JEMALLOC_PATHS = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                  "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2")  # fmt: skip


def _jemalloc() -> str | None:
    """Debian's libjemalloc2 (``make setup`` installs it), when present."""
    return next((p for p in JEMALLOC_PATHS if Path(p).is_file()), None)


@dataclass(frozen=True)
class ServerConfig:
    """How one server run starts: the repository Triton serves and the models it loads,
    where it listens, its key and certificate, where it logs. :func:`create_server`
    makes one from a models file; a :class:`TritonServer` runs it."""

    repository: Path
    host: str = "127.0.0.1"
    ports: Ports = field(default_factory=Ports)
    log_path: Path = LOG_DIR / "tritonserver.log"
    # Load only these models (ensembles bring the models they use); empty: every model.
    models: tuple[str, ...] = ()
    api_key: str | None = None  # the restricted APIs' key; None: nothing restricted
    api_key_source: str = ""  # where the key is: the file given, $TRITON_API_KEY, or written
    tls: Tls | None = None  # the front's certificate and key; None: plain text
    max_inflight: int = MAX_INFLIGHT  # inference requests at once; more: refused as busy
    # Seconds before the front closes a gRPC connection gracefully (the client reconnects).
    grpc_max_connection_age_s: int = GRPC_MAX_CONNECTION_AGE_S
    # Triton's log and the front's errors also go to the launcher's stdout/stderr (a
    # container's log, `kubectl logs`), besides log_path.
    log_stdout: bool = False
    # Failed tries to bring back a crashed model before liveness fails (the supervisor).
    reload_attempts: int = RELOAD_ATTEMPTS
    # Where each detector runs (its native platform, or the Python runner and why).
    placements: Mapping[str, configgen.Placement] = field(default_factory=dict)
    # --backend-directory: the Python backend and the native ones built here; None:
    # the server tree's own backends/ (the Python backend alone, or NVIDIA's image's).
    backend_directory: Path | None = None

    def check_ports(self) -> None:
        """``ServerError`` naming the first of the public ports that is already taken;
        where a server of this checkout whose launcher is gone holds them, it names its
        processes and how to stop them."""
        busy = [(w, p) for w, p in self.ports.named().items() if port_in_use(self.host, p)]
        if not busy:
            return
        what, port = busy[0]
        taken = f"port {port} ({what}) on {self.host} is already in use"
        holders = (port_holder(p) for _, p in busy)
        left = {h.pid: h.name() for h in holders if h is not None and self._left_behind(h)}
        if left:
            held = ", ".join(f"{name} pid {pid}" for pid, name in left.items())
            raise ServerError(
                f"{taken} by {held} of this checkout, left running by a launcher that was "
                f"killed: stop it with `kill {' '.join(map(str, left))}`"
            )
        raise ServerError(
            f"{taken}: is another server running? Stop it or pick another port with "
            f"--{what.lower()}-port"
        )

    def _left_behind(self, process: psutil.Process) -> bool:
        """``process`` is a tritonserver or nginx of this checkout (its command line
        names the checkout or this run's log folder) whose launcher is gone."""
        marks = (str(REPO_ROOT), str(self.log_path.parent))
        try:
            parent = process.parent()
            return (
                process.name() in ("tritonserver", "nginx")
                and any(mark in arg for arg in process.cmdline() for mark in marks)
                and not (parent and parent.name().startswith("python"))
            )
        except psutil.Error:
            return False

    def triton_command(self, home: Path, triton_ports: Ports) -> list[str]:
        """tritonserver's command line: the server tree ``home``, HTTP and gRPC on the
        loopback ``triton_ports`` (the front forwards to them), metrics on the public
        port."""
        cmd = [
            str(home / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.backend_directory or home / 'backends'}",
            "--http-address=127.0.0.1",
            f"--http-port={triton_ports.http}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={triton_ports.grpc}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.ports.metrics}",
            "--exit-on-error=true",
            "--strict-readiness=true",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            "--log-verbose=0",
            # Explicit control: the supervisor unloads and reloads a crashed model.
            "--model-control-mode=explicit",
            *(f"--load-model={m}" for m in (self.models or ("*",))),
        ]
        # No key here: Triton listens on loopback behind the front, which checks it
        # (ensemble.front); on a command line any user of the machine could read it.
        return cmd


@dataclass
class TritonServer:
    """One server run of ``config`` (see the module docstring): Triton's process, its
    front and its supervisor once started; Triton started again when it dies."""

    config: ServerConfig
    log: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    process: subprocess.Popen | None = field(default=None, init=False)
    front: Front | None = field(default=None, init=False)
    supervisor: Supervisor | None = field(default=None, init=False)
    triton_ports: Ports | None = field(default=None, init=False)  # Triton's loopback ports
    metrics: Metrics | None = field(default=None, init=False)
    restarts: int = field(default=0, init=False)  # times Triton died and was started again
    gave_up: bool = field(default=False, init=False)  # Triton kept dying: the launcher stops
    _metrics_server: object = field(default=None, init=False)
    _stopping: threading.Event = field(default_factory=threading.Event, init=False)
    _watchdog: threading.Thread | None = field(default=None, init=False)
    # Ends Triton's and the front's process groups if the launcher dies without stop().
    _reaper: Reaper | None = field(default=None, init=False)

    @property
    def grpc_url(self) -> str:
        return f"{self.config.host}:{self.config.ports.grpc}"

    @property
    def http_url(self) -> str:
        scheme = "https" if self.config.tls else "http"
        host = self.config.host
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.config.ports.http}"

    @property
    def control(self) -> Control:
        """Triton's HTTP API on its loopback port (for the launcher; the front, which
        checks the key, is not in the way)."""
        assert self.triton_ports is not None, "not started"
        return Control(f"http://127.0.0.1:{self.triton_ports.http}")

    @property
    def front_state(self) -> FrontState:
        """The supervisor's markers that the front reads (ensemble.front)."""
        return FrontState(self.config.log_path.parent / "front" / "state")

    def start(self) -> None:
        config = self.config
        config.check_ports()
        home, libs = triton_home()
        if config.tls:
            config.tls.check()
        self.triton_ports = Ports(free_port(), free_port(), config.ports.metrics)
        config.log_path.parent.mkdir(parents=True, exist_ok=True)
        front_dir = config.log_path.parent / "front"
        self.front_state.reset()
        try:
            self.front = Front(
                nginx_config(
                    host=config.host, http_port=config.ports.http, grpc_port=config.ports.grpc,
                    triton_http=self.triton_ports.http, triton_grpc=self.triton_ports.grpc,
                    workdir=front_dir, tls=config.tls, max_inflight=config.max_inflight,
                    grpc_max_connection_age_s=config.grpc_max_connection_age_s,
                    api_key=config.api_key, state=self.front_state,
                    log_stdout=config.log_stdout,
                ),
                front_dir,
                log_stdout=config.log_stdout,
            )  # fmt: skip
        except FrontError as e:
            raise ServerError(str(e)) from None
        self._reaper = Reaper()
        self._start_triton(home, libs, "w")
        try:
            self.front.start()
        except FrontError as e:
            self.stop()
            raise ServerError(str(e)) from None
        assert self.front.process is not None
        self._reaper.watch(self.front.process.pid)

    def _start_triton(self, home: Path, libs: Path | None, mode: str) -> None:
        assert self.triton_ports is not None
        log = open(self.config.log_path, mode)  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            self.config.triton_command(home, self.triton_ports),
            stdout=subprocess.PIPE if self.config.log_stdout else log,
            stderr=subprocess.STDOUT, env=_environment(libs),
            start_new_session=True,  # Ctrl-C reaches us; we stop the server cleanly
        )  # fmt: skip
        if self.config.log_stdout:
            assert self.process.stdout is not None
            threading.Thread(
                target=_tee, args=(self.process.stdout, log), name="triton-log", daemon=True
            ).start()  # it closes the file at Triton's end
        else:
            log.close()
        assert self._reaper is not None
        self._reaper.watch(self.process.pid)

    def is_ready(self) -> bool:
        """Triton says every model is ready, and the front is up."""
        if self.front is None or not self.front.alive():
            return False
        return self.control.ready_server()

    def _on_ready(self) -> None:
        if self.supervisor is not None:
            return
        assert self.process is not None
        if self.metrics is None:
            self.metrics = Metrics()
            self._metrics_server = self.metrics.serve(
                self.config.host, self.config.ports.supervisor
            )
        self.supervisor = Supervisor(
            self.process.pid, self.control, log=self.log, metrics=self.metrics,
            state=self.front_state, reload_attempts=self.config.reload_attempts,
        )  # fmt: skip
        self.supervisor.start()
        if self._watchdog is None:
            self._watchdog = threading.Thread(target=self._watch, name="triton-watch", daemon=True)
            self._watchdog.start()

    def _watch(self) -> None:
        """Start Triton again whenever it dies. A native backend runs inside tritonserver,
        so a crash there (or an out-of-memory kill) takes every model down at once, not
        one worker that the supervisor could reload."""
        while not self._stopping.wait(WATCH_INTERVAL_S):
            process = self.process
            if process is None or process.poll() is None:
                continue
            if self._stopping.is_set():
                return
            self._restart(process)
            if self.gave_up:
                return

    def _restart(self, dead: subprocess.Popen) -> None:
        died = time.monotonic()
        code = dead.returncode
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        self.log(
            f"tritonserver died ({how}); every model is down; restarting it on the same "
            f"repository (log: {self.config.log_path})"
        )
        assert self.metrics is not None
        self.metrics.server_deaths.inc()
        self.metrics.server_down.set(1)
        if self.supervisor is not None:
            self.supervisor.stop(unload=False)  # its workers died with Triton
            self.supervisor = None
        self.front_state.reset()  # a new Triton loads every model anew
        # Python-backend workers outlive a killed Triton (they do not watch it): they are
        # in its process group, so end them before their models load again.
        self._end_triton(dead)
        home, libs = triton_home()
        delay = 1.0
        for attempt in range(1, RESTART_ATTEMPTS + 1):
            if self._stopping.is_set():
                return
            self._start_triton(home, libs, "a")
            try:
                if not self.wait_ready(RESTART_TIMEOUT_S, stop=self._stopping, stop_on_fail=False):
                    return
                break
            except ServerError as e:
                first = str(e).splitlines()[0]
                self.log(f"restart {attempt} of {RESTART_ATTEMPTS} failed: {first}")
                if self.process is not None:
                    self._end_triton(self.process)  # the workers it started, too
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, 30.0)
        else:
            self.gave_up = True
            self.log(f"tritonserver did not come back after {RESTART_ATTEMPTS} tries; stopping")
            return
        seconds = time.monotonic() - died
        self.restarts += 1
        self.metrics.server_down.set(0)
        self.metrics.server_restart_seconds.observe(seconds)
        self.log(f"Triton serves again, {seconds:.1f} s after it died (restart {self.restarts})")

    def _end_triton(self, process: subprocess.Popen) -> int:
        """SIGKILL a Triton with its Python-backend workers; its exit code. The reaper
        forgets its group, whose id the system may give to another process later."""
        code = kill_group(process)
        if self._reaper is not None:
            self._reaper.forget(process.pid)
        return code

    def wait_ready(
        self,
        timeout: float = 600.0,
        stop: threading.Event | None = None,
        stop_on_fail: bool = True,
    ) -> bool:
        """Wait until every model is loaded: True. False when ``stop`` was set first;
        ``ServerError`` when Triton exited or took longer than ``timeout`` s (the whole
        run stopped first, unless ``stop_on_fail`` is False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                return False
            if self.process is not None and self.process.poll() is not None:
                failed = self.load_failures()
                detail = (
                    "\n".join(failed)
                    if failed
                    else f"last lines of {self.config.log_path}:\n{self.log_tail()}"
                )
                raise ServerError(
                    f"tritonserver exited with code {self.process.returncode} while loading "
                    f"(log: {self.config.log_path}):\n{detail}"
                )
            if self.front is not None and self.front.process is not None and not self.front.alive():
                if stop_on_fail:
                    self.stop()
                raise ServerError(f"the front (nginx) exited: see {self.front.log_path}")
            if self.is_ready():
                self._on_ready()
                return True
            time.sleep(0.25)
        if stop_on_fail:
            self.stop()
        raise ServerError(f"not ready after {timeout:.0f} s; see {self.config.log_path}")

    def load_failures(self) -> list[str]:
        """One line per model that failed to load, with Triton's reason, from the log."""
        try:
            text = self.config.log_path.read_text(errors="replace")
        except OSError:
            return []
        found = re.findall(r"failed to load '([^']+)' version \d+: (.*?)\"?$", text, re.M)
        return [f"model {model!r} failed to load: {reason}" for model, reason in found]

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.config.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def pids(self) -> list[int]:
        """Every process of this run: Triton, its workers, the front and its workers."""
        roots = [p.pid for p in (self.process, self.front and self.front.process) if p]
        found = []
        for pid in roots:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                found += [pid, *(c.pid for c in root.children(recursive=True))]
        return found

    def stop(self, timeout: float = 30.0) -> int | None:
        """Drain and stop: the supervisor, then the front (it finishes the requests in
        flight and takes no new ones), then Triton. Returns Triton's exit code."""
        self._stopping.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=RESTART_TIMEOUT_S + 5)
        if self.supervisor is not None:
            self.supervisor.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server = None
        try:
            if self.front is not None:
                self.front.stop()
            if self.process is None or self.process.poll() is not None:
                return None if self.process is None else self.process.returncode
            log_offset = self._log_size()
            self.process.send_signal(signal.SIGTERM)  # Triton drains in-flight requests
            try:
                return self._wait_stopped(timeout, log_offset)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):  # slow, or a second Ctrl-C
                return self._end_triton(self.process)
        finally:
            if self._reaper is not None:
                # Its end ends what is left of the run: workers of a Triton that exited.
                self._reaper.close()
                self._reaper = None

    def _wait_stopped(self, timeout: float, log_offset: int) -> int:
        """Triton's exit code once it stopped after its SIGTERM; ``TimeoutExpired`` after
        ``timeout`` s. Where a worker crash left model versions that Triton holds for
        good (``Supervisor.held``: a request reached the dead worker), it would wait out
        its exit timeout for them and exit 1: once they are all its report (in the log
        from ``log_offset``) still counts, it has drained and unloaded everything else,
        and it is ended; that stop is clean (0)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.process.wait(WATCH_INTERVAL_S)
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise
            held = self.supervisor.held() if self.supervisor is not None else 0
            if not held:
                continue
            reports = UNLOAD_REPORT.findall(self._log_since(log_offset))
            if reports and int(reports[-1][0]) <= held and int(reports[-1][1]) == 0:
                self.log(
                    f"Triton unloaded every model but {held} version(s) left by crashed "
                    "workers, which its Python backend never lets go of; ending it"
                )
                self._end_triton(self.process)  # with those workers' stubs
                return 0

    def _log_size(self) -> int:
        try:
            return self.config.log_path.stat().st_size
        except OSError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.config.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def prepare_repository(
    registry: Registry | None = None,
    target: str | configgen.Target = "cpu",
    out: Path | None = None,
    gpus: tuple[int, ...] = (0, 1, 2, 3),
) -> Path:
    """Write the target's repository for ``registry`` (default: ``models.toml``) with
    links to the artifacts (``gpus``: the GPU ids of the gpu/ngc targets; a Target
    given whole is written as it is)."""
    t = target if isinstance(target, configgen.Target) else launch_target(target, gpus)
    out = out or REPO_ROOT / "build" / "repository" / t.name
    return configgen.write_repository(t, out, registry or load_models())


def launch_target(
    target: str, gpus: tuple[int, ...] = (0, 1, 2, 3), cpu_profile: str = "throughput"
) -> configgen.Target:
    """The deployment target as this machine serves it: on the cpu target, with the
    native backends built here (see :func:`native_backends`)."""
    return configgen.make_target(target, gpus, native_backends(target), cpu_profile)


def native_backends(target: str) -> frozenset[str] | None:
    """The native backends the server of ``target`` has: on the cpu target, those
    ``ensemble.native`` built on this machine (none: every detector on its Python
    runner); None (the target's default) elsewhere."""
    if target != "cpu" or _external_triton():
        return None
    from ensemble import native

    return frozenset(native.built())


def _external_triton() -> bool:
    """A server tree other than the PyPI wheel's (``$TRITON_SERVER_HOME``, NVIDIA's
    image): it brings its own backends."""
    return bool(os.environ.get(TRITON_HOME_ENV, "").strip()) or _missing("nvidia-pytriton")


def backend_directory() -> Path | None:
    """The folder for ``--backend-directory`` when native backends were built here: the
    wheel's Python backend beside them. None: the server tree's own ``backends/``."""
    if _external_triton():
        return None
    from ensemble import native

    key = native.installed_key()  # computed once: it hashes this package's code, runs g++
    if not native.built(key):
        return None
    home, _ = triton_home()
    return native.backend_directory(home / "backends" / "python", key)


def describe_placements(placements: dict[str, configgen.Placement]) -> str:
    """One phrase for the ready line: which backend runs each detector, and why a
    Python runner where one does."""
    parts = [
        f"{name} on {p.platform}" if p.platform else f"{name} on a Python runner ({p.reason})"
        for name, p in placements.items()
    ]
    return "detectors: " + ", ".join(parts)


@contextlib.contextmanager
def running_server(
    models: Path | str | Registry | None = None, *, timeout: float = 600.0, **options
) -> Iterator[TritonServer]:
    """The one way to run Triton: a ready server on the models file's repository,
    stopped on exit. ``options`` are :func:`create_server`'s (host, ports, workdir,
    target, gpus, load). Raises ``ModelsFileError`` before anything starts when the
    models file is broken, ``ServerError`` when Triton cannot start or load."""
    server = create_server(models, **options)
    server.start()
    try:
        server.wait_ready(timeout)
        yield server
    finally:
        server.stop()


def create_server(
    models: Path | str | Registry | None = None,
    *,
    host: str = "127.0.0.1",
    ports: Ports | None = None,
    workdir: Path | None = None,
    target: str = "cpu",
    gpus: tuple[int, ...] = (0, 1, 2, 3),
    load: tuple[str, ...] = (),
    api_key_file: Path | None = None,
    tls: Tls | None = None,
    max_inflight: int = MAX_INFLIGHT,
    grpc_max_connection_age_s: int = GRPC_MAX_CONNECTION_AGE_S,
    cpu_profile: str = "throughput",
    log_stdout: bool = False,
    reload_attempts: int = RELOAD_ATTEMPTS,
) -> TritonServer:
    """A server ready to start: the models file read and checked, its repository
    written. ``ports=None`` takes free ports; ``workdir`` holds the repository and the
    logs (default ``build/``); ``load`` limits the models loaded (ensembles bring their
    steps); ``api_key_file`` and ``tls``: see :func:`resolve_api_key` and ``Tls``;
    ``grpc_max_connection_age_s``, ``log_stdout``, ``reload_attempts``: see
    ``ServerConfig``;
    ``cpu_profile``: the native backends' threads on the cpu target
    (``configgen.CPU_PROFILES``: throughput or latency).
    See :func:`running_server`."""
    registry = models if isinstance(models, Registry) else load_models(models)
    if ports is None:
        ports = Ports(*(free_port(host) for _ in range(4)))
    root = Path(workdir).resolve() if workdir else REPO_ROOT / "build"
    out = root / "repository" / target
    log_path = (root / "tritonserver.log") if workdir else LOG_DIR / "tritonserver.log"
    config = ServerConfig(
        out, host, ports, log_path, load, tls=tls, max_inflight=max_inflight,
        grpc_max_connection_age_s=grpc_max_connection_age_s, log_stdout=log_stdout,
        reload_attempts=reload_attempts,
    )  # fmt: skip
    # Before the repository is rewritten: it may be the one a running server serves.
    config.check_ports()
    api_key = resolve_api_key(host, api_key_file, root)
    if api_key_file is not None:
        api_key_source = str(api_key_file)
    elif api_key and os.environ.get(SERVER_API_KEY_ENV, "").strip():
        api_key_source = f"${SERVER_API_KEY_ENV}"
    else:
        api_key_source = f"written to {root / 'api-key'}" if api_key else ""
    t = launch_target(target, gpus, cpu_profile)
    repository = prepare_repository(registry, t, out, gpus)
    config = replace(
        config,
        repository=repository,
        api_key=api_key,
        api_key_source=api_key_source,
        placements={d.name: configgen.placement(d, t) for d in registry.detectors},
        backend_directory=backend_directory() if target == "cpu" and t.native else None,
    )
    return TritonServer(config)


def serve_until_stopped(
    server: TritonServer,
    stop: threading.Event,
    on_ready: Callable[[TritonServer], Callable[[], None] | None] | None = None,
) -> int:
    """Start ``server``, say where it listens once ready, run ``on_ready`` (which may
    return a function that undoes it), then wait for ``stop`` or the server's end.
    Returns the exit code: 0 when stopped, 1 when Triton failed or exited by itself."""
    config = server.config
    print(f"starting Triton on {config.repository} (log: {config.log_path})", flush=True)
    server.start()
    undo = None
    try:
        if not server.wait_ready(stop=stop):
            print("stopped while loading", flush=True)
            return 0
        print(
            f"ready: gRPC {server.grpc_url}{' (TLS)' if config.tls else ''}, HTTP "
            f"{server.http_url}, metrics http://{config.host}:{config.ports.metrics}/metrics, "
            f"supervisor metrics http://{config.host}:{config.ports.supervisor}/metrics; "
            f"{describe_placements(config.placements)} (Ctrl-C stops)",
            flush=True,
        )
        if config.api_key:
            print(
                f"restricted APIs ({', '.join(RESTRICTED_APIS)}) need the header "
                f"{API_KEY_HEADER} (gRPC: {GRPC_API_KEY_HEADER}); the key: "
                f"{config.api_key_source}",
                flush=True,
            )
        undo = on_ready(server) if on_ready else None
        # Triton's death is the server's own watch's to handle (it restarts it); only
        # a Triton that would not come back ends the launcher.
        while not stop.wait(0.5):
            if server.gave_up:
                print(f"tritonserver keeps failing; see {config.log_path}", file=sys.stderr)
                return 1
        return 0
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if undo is not None:
            undo()
        code = server.stop()
        print(f"Triton stopped (exit code {code})", flush=True)


def add_server_arguments(ap: argparse.ArgumentParser) -> None:
    """The options every command that starts Triton takes."""
    ap.add_argument("--models", type=Path, help="models file to serve (default: models.toml)")
    ap.add_argument("--http-port", type=int, default=8000, help="Triton's HTTP port")
    ap.add_argument("--grpc-port", type=int, default=8001, help="Triton's gRPC port")
    ap.add_argument("--metrics-port", type=int, default=8002, help="Triton's metrics port")
    ap.add_argument(
        "--supervisor-port", type=int, default=8003,
        help="the supervisor's crash/recovery counters (Prometheus /metrics)",
    )  # fmt: skip
    ap.add_argument(
        "--api-key-file", type=Path,
        help=f"key for the restricted APIs (default: ${SERVER_API_KEY_ENV}; beyond localhost "
        "without either, a new key is written to build/api-key)",
    )  # fmt: skip
    ap.add_argument("--tls-cert", type=Path, help="PEM certificate: TLS on gRPC and HTTP")
    ap.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    ap.add_argument(
        "--max-inflight", type=int, default=MAX_INFLIGHT,
        help=f"inference requests at once; more are refused as busy (default {MAX_INFLIGHT})",
    )  # fmt: skip
    ap.add_argument(
        "--grpc-max-connection-age", type=int, default=GRPC_MAX_CONNECTION_AGE_S,
        metavar="SECONDS",
        help="close a gRPC connection gracefully (GOAWAY; requests in flight finish) once "
        "it is this old, so clients reconnect and re-resolve, reaching new replicas "
        f"(default {GRPC_MAX_CONNECTION_AGE_S})",
    )  # fmt: skip
    ap.add_argument(
        "--log-stdout", action="store_true",
        help="also write Triton's log and the front's errors to this process's output, "
        "for a container's log (`kubectl logs`); the log file stays",
    )  # fmt: skip
    ap.add_argument(
        "--reload-attempts", type=int, default=RELOAD_ATTEMPTS, metavar="N",
        help="failed tries to bring back a model whose worker crashed before "
        "/v2/health/live fails, so that a kubelet restarts the pod; the tries go on "
        f"(default {RELOAD_ATTEMPTS})",
    )  # fmt: skip
    ap.add_argument(
        "--cpu-profile", choices=configgen.CPU_PROFILES, default="throughput",
        help="the native backends' threads on the CPU: throughput (default; one thread per "
        "instance, the most images/s under load) or latency (a lone request takes every "
        "core)",
    )  # fmt: skip


def server_options(args: argparse.Namespace) -> dict:
    """create_server's keyword arguments from :func:`add_server_arguments`' options."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("give both --tls-cert and --tls-key, or neither")
    if args.grpc_max_connection_age < 1:
        raise ValueError("--grpc-max-connection-age must be at least 1 second")
    if args.reload_attempts < 1:
        raise ValueError("--reload-attempts must be at least 1")
    return {
        "ports": Ports(args.http_port, args.grpc_port, args.metrics_port, args.supervisor_port),
        "api_key_file": args.api_key_file,
        "tls": Tls(args.tls_cert, args.tls_key) if args.tls_cert else None,
        "max_inflight": args.max_inflight,
        "grpc_max_connection_age_s": args.grpc_max_connection_age,
        "cpu_profile": args.cpu_profile,
        "log_stdout": args.log_stdout,
        "reload_attempts": args.reload_attempts,
    }


def argument_parser() -> argparse.ArgumentParser:
    """The launcher's command line (a container's arguments are checked against it)."""
    ap = argparse.ArgumentParser(
        prog="python -m ensemble.server", description="Start Triton on a models file's detectors."
    )
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on")
    add_server_arguments(ap)
    ap.add_argument(
        "--target", choices=configgen.TARGETS, default="cpu",
        help="cpu (default); gpu: each detector's instances on the GPUs of --gpus; ngc: "
        "gpu with NVIDIA's image's native PyTorch and TensorFlow backends",
    )  # fmt: skip
    ap.add_argument("--gpus", default="0,1,2,3", help="GPU ids for --target gpu or ngc")
    ap.add_argument(
        "--workdir", type=Path,
        help="a writable folder for the repository, the logs and a written API key "
        "(default: build/; a container gives it its own volume)",
    )  # fmt: skip
    return ap


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    try:
        gpus = configgen.parse_gpus(args.gpus)
        server = create_server(
            args.models, host=args.host, target=args.target, gpus=gpus,
            workdir=args.workdir, **server_options(args),
        )  # fmt: skip
    except (ModelsFileError, ServerError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with stop_signals() as stop:
        try:
            return serve_until_stopped(server, stop)
        except ServerError as e:  # a busy port, found by start()
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # a second Ctrl-C while stopping: Triton was killed
            print("interrupted: Triton killed", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
