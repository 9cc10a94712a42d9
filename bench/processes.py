"""A server's processes as the benchmarks measure them: trees, memory, CPU time, kills.

PSS (proportional set size, psutil's ``memory_full_info().pss``) is a process's resident
memory with each page shared by n processes counted 1/n in each, so that a sum over
processes counts every page once.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import psutil

GIB = 2**30
MIB = 2**20


def tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and every process under it (psutil's processes remember their
    start time, so a pid used again later is not mistaken for them); [] when gone."""
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def process_tree(roots: Sequence[int]) -> list[int]:
    """``roots`` and every process under them that still exist, each once."""
    return list(dict.fromkeys(p.pid for root in roots for p in tree(root)))


def pss_of(pids: Iterable[int]) -> dict[int, int]:
    """``{pid: PSS bytes}``; a process that ended meanwhile is left out."""
    found = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found[pid] = psutil.Process(pid).memory_full_info().pss
    return found


def pss_bytes(pids: Iterable[int]) -> int:
    """PSS of ``pids`` summed, in bytes; a process that ended meanwhile counts 0."""
    return sum(pss_of(pids).values())


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds ``pids`` have used so far (those that ended count 0)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's children that have ended."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def kill_all(processes: Iterable[psutil.Process]) -> list[int]:
    """SIGKILL to each of ``processes`` still running; the ids of those signalled."""
    killed = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGKILL)
            killed.append(process.pid)
    return killed


def spawn(command: Sequence[str], log_path: Path | None, mode: str = "w",
          **options) -> subprocess.Popen:  # fmt: skip
    """``command`` started (``options`` are ``subprocess.Popen``'s) with its output
    written (``mode`` "a": appended) to ``log_path``, or dropped when None."""
    if log_path is None:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                **options)  # fmt: skip
    with open(log_path, mode) as log:  # the child keeps its own copy of the file
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **options)


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, timeout_s: float,
               what: str, every_s: float = 0.2) -> None:  # fmt: skip
    """Poll ``ready()`` every ``every_s`` seconds until it holds; ``RuntimeError``
    naming ``what`` when ``process`` exits first or ``timeout_s`` seconds pass."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready in {timeout_s:.0f} s")
        time.sleep(every_s)


class Sampler:
    """``read()`` every ``every_s`` seconds in a thread of its own while inside ``with``,
    on a fixed grid from ``t0`` (a ``time.perf_counter()``; reading PSS itself takes a
    while): :attr:`samples` holds ``(seconds since t0, value)``."""

    def __init__(self, read: Callable[[], object], every_s: float, t0: float) -> None:
        self.read, self.every_s, self.t0 = read, every_s, t0
        self.samples: list[tuple[float, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        due = self.t0 + self.every_s
        while not self._stop.wait(max(0.0, due - time.perf_counter())):
            self.samples.append((time.perf_counter() - self.t0, self.read()))
            due += self.every_s

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)
