"""The three native backends, the server wheel's library they link, and what a build
said of each: shared by ``ensemble.native`` (the cache, its key, the status) and
``ensemble.native.builder`` (the build steps), which import this module and not each
other."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# Runtime (as a models file names it) -> the native backend that serves it.
BACKENDS = {"torchscript": "pytorch", "savedmodel": "tensorflow", "onnx": "onnxruntime"}
# Backend -> the Triton platform a model config names for it.
PLATFORMS = {
    "pytorch": "pytorch_libtorch",
    "tensorflow": "tensorflow_savedmodel",
    "onnxruntime": "onnxruntime_onnx",
}


def pytriton_libs() -> Path | None:
    """The wheel's ``nvidia_pytriton.libs`` (the server's libraries), if installed."""
    try:
        dist = metadata.distribution("nvidia-pytriton")
    except metadata.PackageNotFoundError:
        return None
    return Path(dist.locate_file("")) / "nvidia_pytriton.libs"


def libtritonserver() -> str | None:
    """File name of the server library the backends must link: auditwheel renamed it
    ``libtritonserver-<hash>.so``, and the hash changes with every wheel release."""
    libs = pytriton_libs()
    found = sorted(libs.glob("libtritonserver-*.so")) if libs and libs.is_dir() else []
    return found[0].name if found else None


@dataclass(frozen=True)
class BackendStatus:
    """One backend's outcome in the build for a key."""

    backend: str
    state: str  # "built", "failed" or "unavailable" (no sources)
    reason: str = ""  # one line, for "failed" and "unavailable"
    path: str | None = None  # folder holding libtriton_<backend>.so, when built
    log: str | None = None  # the backend's build log
    seconds: float | None = None  # configure + build + install + check
    reused: bool = False  # this call found it in the cache (not stored)

    @property
    def ok(self) -> bool:
        return self.state == "built"

    def line(self) -> str:
        """What setup prints for this backend, one line."""
        head = f"native backend {self.backend}:"
        if self.state == "built":
            when = "reused" if self.reused else f"built in {self.seconds:.0f} s"
            return f"{head} {when} ({_shown(self.path)})"
        cached = " (cached; --force rebuilds)" if self.reused else ""
        return f"{head} failed{cached}: {self.reason}; see {_shown(self.log)}"


def _shown(path: str | Path | None) -> str:
    """``path`` relative to the working directory when it is under it."""
    if path is None:
        return "-"
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def unavailable_line(reason: str) -> str:
    """The one line setup prints when no sources could be had."""
    return (
        f"native backends: sources not found ({reason}); every runtime stays on its Python runner"
    )


def symlink(link: Path, target: Path | str) -> None:
    """``link`` -> ``target``, replaced atomically when it points elsewhere."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)
