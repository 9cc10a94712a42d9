"""The server launcher: ready message, localhost by default, clean stop, busy ports,
broken models files refused before Triton starts.

The foreground command (``python -m ensemble.server``: ``main`` -> ``create_server`` ->
``stop_signals`` + ``serve_until_stopped``) runs the real tritonserver here on a
one-model repository (the image decoder), which loads in seconds, so the launcher's
behaviour is tested on its own: the models file is read and checked as usual, only the
repository ``create_server`` would write is swapped for the small one.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ensemble import configgen, spec
from ensemble.processes import Ports, free_port, port_holder, port_in_use
from ensemble.registry import load_models
from ensemble.server import REPO_ROOT, ServerConfig, ServerError, TritonServer, running_server
from ensemble.supervisor import STUB

pytestmark = pytest.mark.server

# `python -m ensemble.server ARGS` on REPOSITORY, its log in LOG_DIR:
#   python -c MAIN_ON_SMALL_REPOSITORY REPOSITORY LOG_DIR ARGS...
MAIN_ON_SMALL_REPOSITORY = """
import sys
from pathlib import Path

import ensemble.server as server

repository, log_dir, *argv = sys.argv[1:]
server.prepare_repository = lambda *args, **kwargs: Path(repository)
server.LOG_DIR = Path(log_dir)
sys.exit(server.main(argv))
"""


@pytest.fixture(scope="module")
def small_repository(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small") / "repository"
    target = configgen.make_target("cpu")
    decode = spec.decode_step(load_models())
    (root / decode.name / "1").mkdir(parents=True)
    (root / decode.name / "config.pbtxt").write_text(
        configgen.to_text(configgen.python_step_config(decode, target), decode.doc)
    )
    (root / decode.name / "1" / "model.py").write_text(
        configgen.model_py(decode.adapter, decode.doc)
    )
    return root


def free_ports() -> Ports:
    return Ports(free_port(), free_port(), free_port(), free_port())


def port_arguments(ports: Ports) -> list[str]:
    return ["--http-port", str(ports.http), "--grpc-port", str(ports.grpc),
            "--metrics-port", str(ports.metrics),
            "--supervisor-port", str(ports.supervisor)]  # fmt: skip


def start_main(repository: Path, log_dir: Path, *args: str) -> subprocess.Popen:
    """``python -m ensemble.server ARGS`` serving ``repository``, output as text lines."""
    cmd = [sys.executable, "-c", MAIN_ON_SMALL_REPOSITORY, str(repository), str(log_dir), *args]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT
    )


def read_until_ready(proc: subprocess.Popen, timeout: float = 180) -> list[str]:
    """Lines printed until (and with) the one starting ``ready:``, or until it ended."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("ready:"):
            break
    return lines


def listening_addresses(port: int) -> set[str]:
    """Addresses with a socket listening on ``port``, from /proc/net/tcp and tcp6.

    IPv4-mapped IPv6 addresses (gRPC binds ``::ffff:127.0.0.1``) are given as IPv4.
    """
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, hexport = fields[1].split(":")
            if fields[3] != "0A" or int(hexport, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)  # stored as 32-bit little-endian words
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(raw)
            found.add(str(getattr(ip, "ipv4_mapped", None) or ip))
    return found


# --- busy ports ----------------------------------------------------------------------


def test_busy_port_is_reported_by_name_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = Ports(free_port(), busy, free_port(), free_port())
        refused = pytest.raises(ServerError, match=f"port {busy} \\(gRPC\\).*already in use")
        with refused, running_server(ports=ports, workdir=tmp_path):
            pytest.fail("running_server yielded a server on a busy port")
    # The log is opened when tritonserver is launched: none means it never was.
    assert not (tmp_path / "tritonserver.log").exists()


def test_server_command_reports_a_busy_port_by_name_and_exits_2(small_repository, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = Ports(busy, free_port(), free_port(), free_port())
        proc = start_main(small_repository, tmp_path, *port_arguments(ports))
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert f"port {busy} (HTTP)" in out and "already in use" in out and "--http-port" in out
    assert "ready:" not in out
    assert not (tmp_path / "tritonserver.log").exists(), "tritonserver must not be launched"


# A front (nginx) of a server run logging to LOG_DIR, started by a process that exits
# at once, as a launcher killed before its reaper existed left it: PORTS... LOG_DIR
ORPHANED_FRONT = """
import sys
from pathlib import Path

from ensemble.front import Front, nginx_config

*ports, log_dir = sys.argv[1:]
http, grpc, triton_http, triton_grpc = map(int, ports)
front = Path(log_dir) / "front"
Front(nginx_config(host="127.0.0.1", http_port=http, grpc_port=grpc, triton_http=triton_http,
                   triton_grpc=triton_grpc, workdir=front), front).start()
"""


def test_a_server_left_by_a_killed_launcher_is_named_with_its_pid(small_repository, tmp_path):
    ports = free_ports()
    subprocess.run(
        [sys.executable, "-c", ORPHANED_FRONT, str(ports.http), str(ports.grpc),
         str(free_port()), str(free_port()), str(tmp_path)],
        check=True, cwd=REPO_ROOT, timeout=60,
    )  # fmt: skip
    poll_until(lambda: port_holder(ports.http) is not None, "the orphaned front listens", 10)
    nginx = port_holder(ports.http)
    try:
        proc = start_main(small_repository, tmp_path, *port_arguments(ports))
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 2, out
        held = f"port {ports.http} (HTTP) on 127.0.0.1 is already in use by nginx pid {nginx.pid}"
        assert f"{held} of this checkout" in out, out
        assert f"stop it with `kill {nginx.pid}`" in out, out
    finally:
        os.killpg(nginx.pid, signal.SIGKILL)  # its workers too


# --- the foreground command ------------------------------------------------------------


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_server_says_ready_listens_on_localhost_and_stops_cleanly_on_a_signal(
    small_repository, tmp_path, stop_with
):
    ports = free_ports()
    proc = start_main(small_repository, tmp_path, *port_arguments(ports))
    try:
        lines = read_until_ready(proc)
        assert lines and lines[-1].startswith("ready:"), "".join(lines)
        assert f"gRPC 127.0.0.1:{ports.grpc}" in lines[-1]
        assert f"HTTP http://127.0.0.1:{ports.http}" in lines[-1]
        # No --host given: every port listens on the loopback address only.
        for port in (ports.http, ports.grpc, ports.metrics):
            assert listening_addresses(port) == {"127.0.0.1"}, port
        proc.send_signal(stop_with)
        assert proc.wait(timeout=60) == 0
        rest = proc.stdout.read()
        assert f"{stop_with.name}: stopping" in rest
        assert "Triton stopped (exit code 0)" in rest, rest
        for port in (ports.http, ports.grpc, ports.metrics):
            assert not port_in_use("127.0.0.1", port), f"port {port}: the server must be gone"
        assert (tmp_path / "tritonserver.log").stat().st_size > 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- broken models files ------------------------------------------------------------------

DUPLICATE = """
[[detector]]
name = "cars"
runtime = "onnx"
recipe = "centernet_mobilenetv3"
family = "centernet"

[[detector]]
name = "cars"
runtime = "torchscript"
recipe = "nanodet_m"
family = "nanodet"
"""

BROKEN_MODELS_FILES = {
    # case: (models file, the entry and the key its one-line error names)
    "unknown runtime": (
        '[[detector]]\nname = "cars"\nruntime = "tensorrt"\nartifact = "cars.plan"\n'
        'family = "yolo"\n',
        "detector 'cars' (entry 1)",
        "key 'runtime'",
    ),
    "missing artifact": (
        '[[detector]]\nname = "cars"\nruntime = "onnx"\nartifact = "no-such-model.onnx"\n'
        'family = "yolo"\nlabels = "cars.txt"\n',
        "detector 'cars' (entry 1)",
        "key 'artifact'",
    ),
    "duplicate names": (DUPLICATE, "detector 'cars' (entry 2)", "key 'name'"),
}


@pytest.mark.parametrize("case", list(BROKEN_MODELS_FILES))
def test_broken_models_file_is_refused_in_one_line_before_triton_starts(tmp_path, case):
    text, entry, key = BROKEN_MODELS_FILES[case]
    models = tmp_path / "BROKEN.toml"
    models.write_text(text)
    (tmp_path / "cars.txt").write_text("car\ntruck\n")
    ports = free_ports()
    proc = subprocess.run(
        [sys.executable, "-m", "ensemble.server", "--models", str(models),
         *port_arguments(ports)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    # Nothing was started: serve_until_stopped says "starting Triton" before it launches.
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    (line,) = lines
    assert line.startswith("error: ") and str(models) in line, line
    assert entry in line and key in line, line
    assert not any(port_in_use("127.0.0.1", p) for p in (ports.http, ports.grpc))


# --- a model that does not load ----------------------------------------------------------


def test_a_model_that_fails_to_load_is_reported_with_the_log(tmp_path):
    broken = tmp_path / "repository" / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: 1\n')
    (broken / "1" / "model.py").write_text("raise ImportError('deliberately broken')\n")
    server = TritonServer(
        ServerConfig(tmp_path / "repository", ports=free_ports(), log_path=tmp_path / "triton.log")
    )
    server.start()
    try:
        with pytest.raises(ServerError, match="exited with code"):
            server.wait_ready(timeout=120)
        assert "deliberately broken" in (tmp_path / "triton.log").read_text()
    finally:
        server.stop()


# --- a SIGKILL leaves nothing behind ---------------------------------------------------


def live(pid: int) -> bool:
    """``pid`` runs: it exists and is not a zombie (an orphan's zombie holds nothing, and
    this container's init may never reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def poll_until(condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def process_tree(pid: int) -> dict[int, str]:
    """{pid: name} of every process under ``pid``."""
    return {p.pid: p.name() for p in psutil.Process(pid).children(recursive=True)}


def test_a_killed_launcher_leaves_no_process_and_no_port_behind(small_repository, tmp_path):
    """An OOM kill or a closed terminal's hard kill of ``python -m ensemble.server``:
    tritonserver, nginx and the Python-backend stubs end with it, and the ports free."""
    ports = free_ports()
    proc = start_main(small_repository, tmp_path, *port_arguments(ports))
    try:
        lines = read_until_ready(proc)
        assert lines and lines[-1].startswith("ready:"), "".join(lines)
        tree = process_tree(proc.pid)
        names = set(tree.values())
        assert {"tritonserver", "nginx", STUB} <= names, names
        proc.kill()
        proc.wait()
        poll_until(lambda: not any(live(pid) for pid in tree), "the server's processes end", 10)
        poll_until(
            lambda: not any(port_in_use("127.0.0.1", p) for p in ports.named().values()),
            "the ports are free", 5,
        )  # fmt: skip
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_killed_tritonserver_leaves_no_stub_behind(small_repository, tmp_path):
    """SIGKILL tritonserver alone: the launcher starts it again, and the Python-backend
    stubs of the dead one end (none keeps its memory)."""
    ports = free_ports()
    proc = start_main(small_repository, tmp_path, *port_arguments(ports))
    try:
        lines = read_until_ready(proc)
        assert lines and lines[-1].startswith("ready:"), "".join(lines)
        (triton,) = [p for p, name in process_tree(proc.pid).items() if name == "tritonserver"]
        stubs = [p.pid for p in psutil.Process(triton).children() if p.name() == STUB]
        assert stubs
        os.kill(triton, signal.SIGKILL)
        poll_until(lambda: not any(live(pid) for pid in stubs), "the old stubs end", 10)
        # The launcher goes on: it restarts Triton.
        poll_until(
            lambda: any(name == "tritonserver" for name in process_tree(proc.pid).values()),
            "a new tritonserver", 10,
        )  # fmt: skip
        assert proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
