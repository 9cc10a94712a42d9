"""Ports and child processes: what every command that starts a server needs.

The launcher (``ensemble.server``), the benchmarks, the local cluster, the web demo's
``--serve`` and the tests pick free ports, check busy ones, stop the helpers they
started and turn Ctrl-C into an orderly stop with these; nothing here knows Triton.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Ports:
    """A server run's four public TCP ports."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002
    supervisor: int = 8003  # the supervisor's crash and recovery counters (/metrics)

    def named(self) -> dict[str, int]:
        return {"HTTP": self.http, "gRPC": self.grpc, "metrics": self.metrics,
                "supervisor": self.supervisor}  # fmt: skip


def port_in_use(host: str, port: int) -> bool:
    """Something listens on (or holds) TCP ``port`` of ``host``: a bind there fails."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


# The kernel takes the local port of every outgoing connection (and of a bind to port
# 0) from this range. A port found free there can be taken by any connection before the
# server binds it, which for the metrics port comes a minute later; so free ports are
# picked below it, at random, where only another listener can take them.
EPHEMERAL_PORTS_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOW_PORTS = (20000, 32768)  # where to pick when the range cannot be read
_handed_out: set[int] = set()  # never the same port twice in one process


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now, below the ephemeral range."""
    low, high = LOW_PORTS
    with contextlib.suppress(OSError, ValueError):
        high = min(high, int(EPHEMERAL_PORTS_FILE.read_text().split()[0]))
    for _ in range(64 if high - low >= 1000 else 0):
        port = random.randrange(low, high)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout_s: float = 10.0) -> int:
    """SIGTERM ``process`` (a helper the caller started: a page, a balancer, a server
    of the baselines), wait ``timeout_s`` for it, SIGKILL it if it is still there; its
    exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def port_holder(port: int) -> psutil.Process | None:
    """The process listening on TCP ``port`` (of any address), when this user may see
    it; for a server whose workers share the socket (nginx), the master that started
    them."""
    with contextlib.suppress(psutil.Error):
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid:
                holder = psutil.Process(c.pid)
                parent = holder.parent()
                return parent if parent and parent.name() == holder.name() else holder
    return None


def kill_group(process: subprocess.Popen) -> int:
    """SIGKILL ``process``, started in a session of its own, with every process of its
    group (what it started: Triton's Python-backend stubs, nginx's workers), which
    would otherwise outlive it; its exit code."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # its group, even once it has died
    return process.wait()


# The reaper's program: it reads "+GROUP" and "-GROUP" lines from its stdin; at the end
# of the file it SIGKILLs every group it was told of and not told to forget.
REAPER_PROGRAM = """
import os, signal, sys
groups = set()
for line in sys.stdin:
    group = int(line)
    if group > 0:
        groups.add(group)
    else:
        groups.discard(-group)
for group in groups:
    try:
        os.killpg(group, signal.SIGKILL)
    except OSError:
        pass
"""


class Reaper:
    """A small process that ends this process's servers once this process is gone,
    however it ended: a SIGKILL or an out-of-memory kill leave no time to stop them.

    The servers run in sessions of their own (a Ctrl-C must reach the launcher alone,
    which then stops them in order), so nothing else ends them. The reaper reads the
    servers' process groups from a pipe that only this process can write to (its end
    is not inherited); the pipe's end of file, which the kernel gives when that end
    closes for any reason, makes it SIGKILL those groups, a server's own children
    included. It runs in a session of its own, so that a signal to the launcher's
    process group (a closed terminal) does not end it first."""

    def __init__(self) -> None:
        read, self._write = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-c", REAPER_PROGRAM], stdin=read, start_new_session=True
            )
        finally:
            os.close(read)

    def watch(self, group: int) -> None:
        """Kill process group ``group`` when this process dies."""
        self._send(f"+{group}\n")

    def forget(self, group: int) -> None:
        """``group`` has been stopped: do not kill it (its id may be reused)."""
        self._send(f"-{group}\n")

    def _send(self, line: str) -> None:
        # One short write is atomic on a pipe, so threads need no lock. A reaper that
        # was killed only leaves the servers unguarded: the launcher carries on.
        with contextlib.suppress(OSError):
            os.write(self._write, line.encode())

    def close(self) -> None:
        """Every group forgotten: let the reaper end, and reap it."""
        if self._write >= 0:
            os.close(self._write)
            self._write = -1
            self.process.wait()


@contextlib.contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """SIGINT and SIGTERM set the yielded event (the main thread then stops things in
    order); a second one while stopping kills at once. Handlers are restored at exit."""
    stop = threading.Event()

    def on_signal(signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: do not wait any longer
        print(f"{signal.Signals(signum).name}: stopping", flush=True)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
