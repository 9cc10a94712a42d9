"""The detectors' artifacts in Triton's native backends, against the real server.

- Each bundled detector runs in the backend ``ensemble.native`` built here (all three
  where the sources were given, as in CI), and says so in its config and metadata.
- Its raw outputs equal what the Python runner (``ensemble.runners``, the same code
  that runs where a backend is missing) computes on the same preprocessed photos.
- Without built backends the launcher serves every runtime on its Python runner and
  says which, in the ready line and the model config.
- A dead tritonserver (what a crash inside a native backend does) is started again by
  the launcher; meanwhile requests are refused as unavailable, never lost silently.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ensemble import contract, native
from ensemble.registry import load_models

pytestmark = pytest.mark.server

REPO_ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = {"torchscript": "pytorch_libtorch", "savedmodel": "tensorflow_savedmodel",
             "onnx": "onnxruntime_onnx"}  # fmt: skip


def model_config(grpc, name: str) -> dict:
    return grpc.get_model_config(name, as_json=True)["config"]


def test_the_bundled_detectors_run_in_the_backends_built_here(grpc, triton_server):
    if triton_server is None:
        pytest.skip("a server this session did not start: its backends are its own")
    built = native.built()
    if os.environ.get(native.SOURCES_ENV):
        # CI gives the sources: every backend must have built.
        assert set(built) == {"pytorch", "tensorflow", "onnxruntime"}, native.status()
    registry = load_models()
    detectors = json.loads(
        model_config(grpc, contract.DETECT_ALL)["parameters"][contract.DETECTORS_PARAMETER][
            "string_value"
        ]
    )
    said = {d["name"]: d["backend"] for d in detectors}
    for d in registry.detectors:
        config = model_config(grpc, d.name)
        if d.runtime_info.backend in built:
            assert config["platform"] == PLATFORMS[d.runtime], d.name
            assert said[d.name] == PLATFORMS[d.runtime]
        else:
            assert config["backend"] == "python", d.name
            assert "not built" in config["parameters"]["python_runner_reason"]["string_value"]
            assert said[d.name] == "python"


def test_native_raw_outputs_equal_the_python_runners(grpc, photos):
    """The detector model alone over gRPC against ensemble.runners in this process,
    on the same preprocessed photos (tests/native_check.py)."""
    from native_check import compare_with_runners

    compared = compare_with_runners(grpc, load_models(), photos)
    print("max |native - Python runner|:", compared)
    if native.built():
        assert compared, "no detector ran natively"


# --- the launcher, as a process of its own ---------------------------------------------

ONE_DETECTOR = """
[[detector]]
name = "centernet"
title = "CenterNet MobileNetV3 512"
runtime = "onnx"
recipe = "centernet_mobilenetv3"
family = "centernet"
"""


class Launcher:
    """``python -m ensemble.server`` on a models file, on free ports, its output read."""

    def __init__(self, tmp_path: Path, models: str, env: dict | None = None) -> None:
        from ensemble.processes import free_port

        (tmp_path / "models.toml").write_text(models)
        self.ports = [free_port() for _ in range(4)]
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ensemble.server", "--models", str(tmp_path / "models.toml"),
             "--workdir", str(tmp_path / "work"),
             *(f"--{n}-port={p}" for n, p in zip(("http", "grpc", "metrics", "supervisor"),
                                                 self.ports, strict=True))],
            cwd=REPO_ROOT, env={**os.environ, **(env or {})}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports[1]}"

    def wait_for(self, pattern: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            assert self.process.poll() is None, "\n".join(self.lines[-30:])
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines[-30:]))

    def tritonserver(self) -> int:
        import psutil

        (pid,) = [
            c.pid for c in psutil.Process(self.process.pid).children()
            if c.name() == "tritonserver"
        ]  # fmt: skip
        return pid

    def http(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[0]}{path}", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.ports[3]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()

    def stop(self) -> None:
        from ensemble.processes import stop_process

        stop_process(self.process, 60)


def poll_until(condition, what: str, timeout: float = 60) -> None:
    """Return once ``condition()`` holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.05)


def test_without_built_backends_every_runtime_runs_on_its_python_runner(tmp_path):
    import tritonclient.grpc as grpcclient

    empty = tmp_path / "no-native"
    empty.mkdir()
    launcher = Launcher(tmp_path, ONE_DETECTOR, {native.CACHE_ENV: str(empty)})
    try:
        ready = launcher.wait_for(r"^ready: ")
        assert (
            "detectors: centernet on a Python runner (the onnxruntime backend is not built "
            "on this machine)" in ready
        )
        with grpcclient.InferenceServerClient(launcher.grpc_url) as client:
            config = client.get_model_config("centernet", as_json=True)["config"]
            assert config["backend"] == "python"
            reason = config["parameters"]["python_runner_reason"]["string_value"]
            assert reason == "the onnxruntime backend is not built on this machine"
    finally:
        launcher.stop()


def test_a_killed_tritonserver_is_restarted_and_serves_again(tmp_path, photos):
    """SIGKILL tritonserver (a native backend's crash ends it the same way) while a
    client sends requests: the launcher says so, readiness is false (HTTP 503, gRPC
    UNAVAILABLE) until every model is back, and it serves again."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from tests.inference import image_inputs

    launcher = Launcher(tmp_path, ONE_DETECTOR)
    try:
        launcher.wait_for(r"^ready: ")
        assert launcher.http("/v2/health/ready") == 200
        outcomes: list[tuple[float, str]] = []
        stop = threading.Event()

        def load() -> None:
            with grpcclient.InferenceServerClient(launcher.grpc_url) as client:
                inputs = image_inputs([photos["coffee"]])
                while not stop.is_set():
                    try:
                        client.infer("detect_centernet", inputs, client_timeout=10)
                        outcomes.append((time.monotonic(), "ok"))
                    except InferenceServerException as e:
                        outcomes.append((time.monotonic(), e.status() or str(e)))
                        time.sleep(0.05)

        clients = [threading.Thread(target=load) for _ in range(2)]
        for c in clients:
            c.start()

        def served(since: float) -> bool:
            """A request was answered at ``since`` (time.monotonic) or later."""
            return any(o == "ok" for t, o in list(outcomes) if t >= since)

        poll_until(lambda: served(0), "a request served before the kill")
        killed = time.monotonic()
        os.kill(launcher.tritonserver(), signal.SIGKILL)
        launcher.wait_for(r"tritonserver died \(signal SIGKILL\)", 10)
        down = [launcher.http("/v2/health/ready") for _ in range(3)]
        back = launcher.wait_for(r"Triton serves again, [\d.]+ s after it died", 120)
        poll_until(lambda: served(killed), "a request served after the restart")
        stop.set()
        for c in clients:
            c.join(30)
        assert 503 in down, down
        assert launcher.http("/v2/health/ready") == 200
        before = [o for t, o in outcomes if t < killed]
        after = [(t, o) for t, o in outcomes if t >= killed]
        assert before and set(before) == {"ok"}
        failures = {o for _, o in after if o != "ok"}
        assert failures <= {"StatusCode.UNAVAILABLE"}, failures
        first_ok = min(t for t, o in after if o == "ok")
        print(f"served again {first_ok - killed:.1f} s after SIGKILL; {back}")
        assert re.search(r"^triton_server_deaths_total 1\.0$", launcher.metrics(), re.M)
    finally:
        launcher.stop()
