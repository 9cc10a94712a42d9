"""Triton's native PyTorch, ONNX Runtime and TensorFlow backends, built for the PyPI server.

The Triton 2.51 build inside ``nvidia-pytriton`` has only the Python backend. Its
``pytorch``, ``onnxruntime`` and ``tensorflow`` backends (NVIDIA's r24.10 sources) build
on this machine against the frameworks' own wheels in the virtual environment;
``python -m ensemble.native`` (a setup step) does it once and caches the result::

    .cache/native/<key>/            ($NATIVE_CACHE_DIR/<key>/ when set)
        status.json                 what the build said, per backend
        inputs.json                 what the key was computed from
        logs/<backend>.log          cmake, make, patchelf and ldd output
        pytorch/libtriton_pytorch.so
        onnxruntime/libtriton_onnxruntime.so, libonnxruntime.so.1 -> the wheel's
        tensorflow/libtriton_tensorflow.so, libtritontf.so (the TRITONTF_* layer)
        backends/                   a --backend-directory: python + the built ones

The key covers everything the libraries depend on (pins, this package's code, the
server, framework versions, compiler, venv path, Python), so a changed input is a new
folder and an old one is never reused by mistake. Each backend builds on its own: one
that fails is reported and the others still ship. Without sources (no
``$TRITON_BACKEND_SOURCES`` and no GitHub) nothing is built and every runtime stays on
its Python runner.

Other code imports only this module; :func:`built` and :func:`backend_directory` are
cheap (no framework import) and meant for server start.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from importlib import metadata
from pathlib import Path

from ensemble.native import sources
from ensemble.native.backends import (
    BACKENDS,
    PLATFORMS,
    BackendStatus,
    libtritonserver,
    symlink,
)
from ensemble.native.sources import GIT_BASE_ENV, SOURCES_ENV

__all__ = [
    "BACKENDS",
    "CACHE_ENV",
    "GIT_BASE_ENV",
    "PLATFORMS",
    "SOURCES_ENV",
    "BackendStatus",
    "backend_directory",
    "build",
    "built",
    "cache_dir",
    "cache_key",
    "key_inputs",
    "status",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(__file__).resolve().parent
CACHE_ENV = "NATIVE_CACHE_DIR"

STATUS_FILE = "status.json"
INPUTS_FILE = "inputs.json"  # what the key was computed from
BACKEND_DIR = "backends"  # under the key's folder: the --backend-directory


def cache_dir() -> Path:
    """Where builds live: ``$NATIVE_CACHE_DIR`` or ``<repo>/.cache/native``."""
    return Path(os.environ.get(CACHE_ENV, "").strip() or REPO_ROOT / ".cache" / "native")


# --- the cache key: computed without the sources and without importing a framework ---


def _code_digest(folder: Path = PACKAGE_DIR) -> str:
    """sha256 of this package's files (build steps, shim changes, stand-in header)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(folder)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _version(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _framework_versions() -> dict[str, str | None]:
    return {
        "torch": _version("torch"),
        "tensorflow": _version("tensorflow-cpu", "tensorflow"),
        "onnxruntime": _version("onnxruntime"),
    }


def _server() -> dict[str, str | None]:
    return {"nvidia-pytriton": _version("nvidia-pytriton"), "library": libtritonserver()}


def _compiler() -> str | None:
    try:
        out = subprocess.run(["g++", "--version"], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    return out.stdout.splitlines()[0] if out.stdout else None


def _venv() -> str:
    # The installed libraries' runpaths name the venv's framework folders.
    return sys.prefix


def key_inputs() -> dict:
    """Everything the built libraries depend on, as plain data."""
    return {
        "pins": sources.pins(),
        "code": _code_digest(),
        "server": _server(),
        "frameworks": _framework_versions(),
        "compiler": _compiler(),
        "venv": _venv(),
        "python": platform.python_version(),
    }


def cache_key(inputs: dict | None = None) -> str:
    """16 hex digits naming the cache folder of this environment's build (``inputs``:
    :func:`key_inputs`, already read)."""
    blob = json.dumps(inputs or key_inputs(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def installed_key() -> str:
    """The key whose build serves this environment: :func:`cache_key`, except where no
    compiler is installed (a runtime container image, whose backends were built in an
    earlier stage of its own build): there the build whose inputs match in everything
    but the compiler, which could not rebuild anything here anyway."""
    inputs = key_inputs()
    key = cache_key(inputs)
    if inputs["compiler"] is not None or (cache_dir() / key / STATUS_FILE).is_file():
        return key
    plain = json.loads(json.dumps({**inputs, "compiler": None}, sort_keys=True))
    for candidate in sorted(cache_dir().glob(f"*/{INPUTS_FILE}")):
        try:
            stored = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(stored, dict) and {**stored, "compiler": None} == plain:
            return candidate.parent.name
    return key


def _key_dir(key: str | None = None) -> Path:
    return cache_dir() / (key or installed_key())


def status(key: str | None = None) -> dict[str, BackendStatus]:
    """What the last build for ``key`` (default: this environment's) said, by backend
    name; empty when there was none."""
    path = _key_dir(key) / STATUS_FILE
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {name: BackendStatus(**fields) for name, fields in stored.get("backends", {}).items()}


def built(key: str | None = None) -> dict[str, Path]:
    """Backend name -> folder holding ``libtriton_<name>.so``, for every backend of this
    environment's key that built and passed its check; empty when none did."""
    found = {}
    for name, entry in status(key).items():
        if entry.ok and entry.path and (Path(entry.path) / f"libtriton_{name}.so").is_file():
            found[name] = Path(entry.path)
    return found


def backend_directory(python_backend_dir: Path, key: str | None = None) -> Path:
    """A folder for tritonserver's ``--backend-directory``: ``python`` (a link to the
    given Python backend, the PyPI server's) and each backend that :func:`built`. It
    sits in the key's cache folder; calling again only fixes what changed."""
    key = key or installed_key()
    folder = _key_dir(key) / BACKEND_DIR
    folder.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, Path | str] = {"python": Path(python_backend_dir).resolve()}
    for name, path in built(key).items():
        # Relative, so that the key's folder can be looked at from anywhere.
        wanted[name] = os.path.relpath(path, folder)
    for entry in folder.iterdir():
        # Dot names are another process's links on their way in (see backends.symlink).
        if entry.name not in wanted and not entry.name.startswith("."):
            entry.unlink()
    for name, target in wanted.items():
        symlink(folder / name, target)
    return folder


# --- building ---


def _write_status(folder: Path, key: str, results: dict[str, BackendStatus]) -> None:
    stored = {n: {k: v for k, v in asdict(s).items() if k != "reused"} for n, s in results.items()}
    tmp = folder / f".{STATUS_FILE}.tmp"
    tmp.write_text(json.dumps({"key": key, "backends": stored}, indent=2) + "\n")
    os.replace(tmp, folder / STATUS_FILE)


def build(force: bool = False, log: Callable[[str], None] = print) -> dict[str, BackendStatus]:
    """Build the three backends for this environment's key, one after another, into
    ``<cache>/<key>/``; reuse that folder when its status exists and ``force`` is False.
    Logs one line per backend, or one line in all when no sources could be had (a
    status that says so is not final: the next call tries again). Returns the status."""
    inputs = key_inputs()
    key = cache_key(inputs)
    folder = _key_dir(key)
    previous = status(key)
    if previous and not force and any(s.state != "unavailable" for s in previous.values()):
        results = {name: replace(s, reused=True) for name, s in previous.items()}
        for entry in results.values():
            log(entry.line())
        return results

    from ensemble.native import builder  # the build steps; not needed to read a status

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / INPUTS_FILE).write_text(json.dumps(inputs, indent=2) + "\n")
    results = builder.build_all(folder, log)
    _write_status(folder, key, results)
    _prune(keep=folder)
    return results


def _prune(keep: Path) -> None:
    """Remove the folders of other keys: they were built for inputs that changed since
    (a running server keeps the libraries it already loaded)."""
    for entry in keep.parent.iterdir():
        if entry != keep and entry.is_dir() and re.fullmatch(r"[0-9a-f]{16}", entry.name):
            shutil.rmtree(entry, ignore_errors=True)
