"""How many CPU threads a detector run takes: all of them alone, a share under load.

On a CPU host each detector has two Triton instances (two stub processes) so that two
batches can run at once, and a framework's intra-op threads either help or hurt:

- a lone request (concurrency 1) is fastest with every core: NanoDet-m takes about
  68 ms per image with 2 threads against 109 ms with 1 on the 2-core CI machine;
- under load, two 2-thread runs plus the Python pre/post steps oversubscribe the
  cores, and PyTorch's OpenMP workers then wait at every operator's barrier for a
  thread the scheduler has parked: 3.5 images/s at concurrency 8, against 16.4 with
  one thread per run (perf_analyzer, detect_pytorch).

So each run looks at what else is going on: alone and with a single request, it uses
all its threads; when the other instance is running too, or requests have queued up
into a batch, it takes an equal share (at least one). Frameworks that fix their
threads at load time (TensorFlow) keep them; see ``runners.Runner.set_threads``.

Which sibling instances are running is shared through ``flock``: each instance holds
an exclusive lock on its own file while it runs, and a lock the kernel releases when
its process dies, so a crashed instance never counts as busy.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path


def intra_op_threads(threads: int, batch: int, others_running: int) -> int:
    """Threads for one run of ``batch`` images when ``others_running`` sibling
    instances are running: ``threads`` for a lone single request, else an equal share
    among the runs (a batch counts as load: requests were waiting)."""
    if batch <= 1 and others_running == 0:
        return threads
    return max(1, threads // max(2, others_running + 1))


class SiblingInstances:
    """The instances of one Triton model, across their processes."""

    def __init__(self, folder: Path, instance: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.own_path = self.folder / f"{instance}.busy"
        self._own = self.own_path.open("a")

    @classmethod
    def of_model(cls, repository: str, model: str, instance: str) -> SiblingInstances:
        """The folder shared by ``model``'s instances of the repository at ``repository``."""
        key = hashlib.sha256(f"{Path(repository).resolve()}\0{model}".encode()).hexdigest()[:16]
        return cls(Path(tempfile.gettempdir()) / "triton-instances" / f"{model}-{key}", instance)

    def others_running(self) -> int:
        """How many sibling instances hold their lock (are running) right now."""
        running = 0
        for path in self.folder.glob("*.busy"):
            if path == self.own_path:
                continue
            try:
                with path.open("r") as f:
                    fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    fcntl.flock(f, fcntl.LOCK_UN)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    running += 1
                # a file removed meanwhile (ENOENT) is not running
        return running

    @contextlib.contextmanager
    def running(self) -> Iterator[int]:
        """Mark this instance running; yields how many siblings run too."""
        fcntl.flock(self._own, fcntl.LOCK_EX)
        try:
            yield self.others_running()
        finally:
            fcntl.flock(self._own, fcntl.LOCK_UN)

    def close(self) -> None:
        self._own.close()
