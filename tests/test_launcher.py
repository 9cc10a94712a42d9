"""The server launcher: ready message, localhost by default, clean stop, busy ports.

These start the real tritonserver on a one-model repository (the image decoder),
which loads in seconds, so the launcher's behaviour is tested on its own.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ensemble import configgen, spec
from ensemble.server import Ports, ServerError, TritonServer, free_port, port_in_use


@pytest.fixture(scope="module")
def small_repository(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small") / "repository"
    target = configgen.make_target("cpu")
    (root / spec.DECODE.name / "1").mkdir(parents=True)
    (root / spec.DECODE.name / "config.pbtxt").write_text(
        configgen.python_step_config(spec.DECODE, target)
    )
    (root / spec.DECODE.name / "1" / "model.py").write_text(
        configgen.model_py(spec.DECODE.adapter, spec.DECODE.doc)
    )
    return root


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


def test_busy_port_is_reported_by_name_before_anything_starts(small_repository):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        server = TritonServer(small_repository, ports=Ports(free_port(), busy, free_port()))
        with pytest.raises(ServerError, match=f"port {busy} \\(gRPC\\).*already in use"):
            server.start()
        assert server.process is None


def test_server_says_ready_listens_on_localhost_and_stops_cleanly_on_sigterm(
    small_repository, tmp_path
):
    ports = Ports(free_port(), free_port(), free_port())
    cmd = [sys.executable, "-m", "ensemble.server", "--repository", str(small_repository),
           "--http-port", str(ports.http), "--grpc-port", str(ports.grpc),
           "--metrics-port", str(ports.metrics)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("ready:"):
                break
        assert lines and lines[-1].startswith("ready:"), "".join(lines)
        assert f"127.0.0.1:{ports.grpc}" in lines[-1]
        for port in (ports.http, ports.grpc, ports.metrics):
            assert listening_addresses(port) == {"127.0.0.1"}, port
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert "stopping Triton" in proc.stdout.read()
        assert not port_in_use("127.0.0.1", ports.grpc), "the server must be gone"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_model_that_fails_to_load_is_reported_with_the_log(tmp_path):
    broken = tmp_path / "repository" / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: 1\n')
    (broken / "1" / "model.py").write_text("raise ImportError('deliberately broken')\n")
    server = TritonServer(
        tmp_path / "repository",
        ports=Ports(free_port(), free_port(), free_port()),
        log_path=tmp_path / "triton.log",
    )
    server.start()
    try:
        with pytest.raises(ServerError, match="exited with code"):
            server.wait_ready(timeout=120)
        assert "deliberately broken" in (tmp_path / "triton.log").read_text()
    finally:
        server.stop()
