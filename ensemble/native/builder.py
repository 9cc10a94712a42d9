"""The build steps behind :func:`ensemble.native.build`: CMake, install, check.

Each backend is configured against the pinned trees (FetchContent pointed at the local
common/core/backend trees and Debian's googletest, never at the network), one target is
built with ``-j2``, and the library is installed by hand into ``<key>/<backend>/``: the
r24.10 install rules copy CUDA libraries a CPU wheel does not have. Then:

- ``patchelf --replace-needed libtritonserver.so libtritonserver-<hash>.so``: the
  backends link the server library by its upstream name, the wheel renamed it;
- ``patchelf --set-rpath '$ORIGIN:<framework dir in the venv>'`` in a second call
  (Debian 12's patchelf 0.14 writes a wrong runpath when both are in one call);
- ``ldd -r`` with ``LD_LIBRARY_PATH`` = the wheel's libraries (as the server runs): a
  library "not found" or an undefined symbol fails the backend.

Output goes to ``<key>/logs/<backend>.log``, never the terminal.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ensemble.native import sources, tf_shim
from ensemble.native.backends import (
    BACKENDS,
    BackendStatus,
    libtritonserver,
    pytriton_libs,
    symlink,
    unavailable_line,
)
from ensemble.native.sources import Sources, SourcesUnavailable

GOOGLETEST = Path("/usr/src/googletest")  # Debian's googletest (r24.10's common wants one)
RAPIDJSON = Path("/usr/include/rapidjson")  # Debian's rapidjson-dev
TOOLS = ("cmake", "make", "g++", "patchelf", "ldd")
JOBS = 2  # the machine's cores; the three builds run one after another (memory)


class BuildFailed(Exception):
    """One backend did not build or did not pass its check; the message is one line."""


@dataclass(frozen=True)
class Venv:
    """The parts of this virtual environment the backends build against and load."""

    pytriton_libs: Path | None
    libtritonserver: str | None
    torch: Path | None  # the torch package folder
    tensorflow: Path | None
    onnxruntime: Path | None

    @classmethod
    def find(cls) -> Venv:
        return cls(
            pytriton_libs(),
            libtritonserver(),
            _package("torch"),
            _package("tensorflow"),
            _package("onnxruntime"),
        )


def _package(name: str) -> Path | None:
    # find_spec on a top-level name locates the package without importing it.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


class Log:
    """A backend's log file; every command's output is appended to it."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def write(self, text: str) -> None:
        with open(self.path, "a") as f:
            f.write(text)

    def run(self, step: str, cmd: list[str], env: dict | None = None) -> str:
        """Run ``cmd``; its output goes to the log. ``BuildFailed`` naming ``step`` and
        the first error line when it exits non-zero."""
        self.write(f"\n$ {' '.join(cmd)}\n")
        started = time.monotonic()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        self.write(proc.stdout + proc.stderr)
        self.write(f"[{step}: exit {proc.returncode} in {time.monotonic() - started:.1f} s]\n")
        if proc.returncode != 0:
            raise BuildFailed(f"{step} exited {proc.returncode}: {_first_error(proc)}")
        return proc.stdout


def _first_error(proc: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"\berror\b|Error|not found", line)]
    line = (errors or lines or ["no output"])[0]
    return line if len(line) <= 200 else line[:197] + "..."


def _cmake_common(src: Sources, build_dir: Path) -> list[str]:
    return [
        f"-DCMAKE_INSTALL_PREFIX={build_dir / 'install'}",
        "-DCMAKE_BUILD_TYPE=Release",
        "-DTRITON_ENABLE_GPU=OFF",
        # Everything FetchContent would download is here already: no network.
        "-DFETCHCONTENT_FULLY_DISCONNECTED=ON",
        f"-DFETCHCONTENT_SOURCE_DIR_REPO-COMMON={src.tree('common')}",
        f"-DFETCHCONTENT_SOURCE_DIR_REPO-CORE={src.tree('core')}",
        f"-DFETCHCONTENT_SOURCE_DIR_REPO-BACKEND={src.tree('backend')}",
        # r24.10's common always fetches googletest from a URL, even unused.
        f"-DFETCHCONTENT_SOURCE_DIR_GOOGLETEST={GOOGLETEST}",
    ]


def _cmake_build(log: Log, src: Sources, backend: str, work: Path, flags: list[str]) -> Path:
    """Configure ``<backend>_backend`` and build its one target; the built library."""
    build_dir = work / "build" / backend
    log.run(
        "cmake configure",
        ["cmake", "-S", str(src.tree(f"{backend}_backend")), "-B", str(build_dir),
         *_cmake_common(src, build_dir), *flags],
    )  # fmt: skip
    target = f"triton-{backend}-backend"
    log.run(
        "cmake build",
        ["cmake", "--build", str(build_dir), "--target", target, "--parallel", str(JOBS)],
    )
    library = build_dir / f"libtriton_{backend}.so"
    if not library.is_file():
        raise BuildFailed(f"the build left no {library.name} in {build_dir}")
    return library


def _install(log: Log, library: Path, dest: Path, venv: Venv, runpath: list[Path]) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    installed = dest / library.name
    shutil.copy2(library, installed)
    needed = ["libtritonserver.so", venv.libtritonserver]
    log.run("patchelf --replace-needed", ["patchelf", "--replace-needed", *needed, str(installed)])
    _set_runpath(log, installed, runpath)
    return installed


def _set_runpath(log: Log, library: Path, dirs: list[Path]) -> None:
    # A call of its own: patchelf 0.14 writes a wrong runpath together with --replace-needed.
    path = ":".join(["$ORIGIN", *(str(d) for d in dirs)])
    log.run("patchelf --set-rpath", ["patchelf", "--set-rpath", path, str(library)])


def _check(log: Log, library: Path, venv: Venv) -> None:
    """Every library ``library`` needs resolves as the server loads it, and so does every
    symbol (``-r``: a TRITONTF_* function the shim lacks would otherwise show only at
    model load)."""
    env = dict(os.environ, LD_LIBRARY_PATH=str(venv.pytriton_libs))
    env.pop("LD_PRELOAD", None)
    proc = subprocess.run(
        ["ldd", "-r", str(library)], env=env, capture_output=True, text=True, check=False
    )
    out = proc.stdout + proc.stderr
    log.write(f"\n$ LD_LIBRARY_PATH={venv.pytriton_libs} ldd -r {library}\n{out}")
    missing = sorted(
        {line.split("=>")[0].strip() for line in out.splitlines() if "not found" in line}
    )
    if missing:
        raise BuildFailed(f"ldd: {', '.join(missing)} not found for {library.name}")
    undefined = [line.split()[-2] for line in out.splitlines() if "undefined symbol" in line]
    if undefined:
        raise BuildFailed(
            f"ldd -r: {len(undefined)} undefined symbol(s) in {library.name}, first {undefined[0]}"
        )
    if proc.returncode != 0:
        raise BuildFailed(f"ldd exited {proc.returncode}: {_first_error(proc)}")


# --- one function per backend: (sources, venv, key folder, log) -> installed library ---


def _pytorch(src: Sources, venv: Venv, folder: Path, work: Path, log: Log) -> Path:
    if venv.torch is None:
        raise BuildFailed("torch is not installed in this venv")
    include = venv.torch / "include"
    flags = [
        # torch 2.13's CMake config asks for C++20.
        "-DTRITON_MIN_CXX_STANDARD=20",
        "-DTRITON_PYTORCH_ENABLE_TORCHVISION=OFF",
        f"-DTRITON_PYTORCH_INCLUDE_PATHS={include};{include / 'torch/csrc/api/include'}",
        f"-DTRITON_PYTORCH_LIB_PATHS={venv.torch / 'lib'}",
        # FindPython3 does not find a pyenv interpreter's headers by itself.
        f"-DPython3_ROOT_DIR={sys.base_prefix}",
        f"-DPython3_INCLUDE_DIR={sysconfig.get_paths()['include']}",
    ]
    library = _cmake_build(log, src, "pytorch", work, flags)
    return _install(log, library, folder / "pytorch", venv, [venv.torch / "lib"])


def _ort_library(venv: Venv) -> Path:
    if venv.onnxruntime is None:
        raise BuildFailed("onnxruntime is not installed in this venv")
    found = sorted((venv.onnxruntime / "capi").glob("libonnxruntime.so.*.*"))
    if not found:
        raise BuildFailed(f"no libonnxruntime.so.X.Y.Z in {venv.onnxruntime / 'capi'}")
    return found[-1]


def _onnxruntime(src: Sources, venv: Venv, folder: Path, work: Path, log: Log) -> Path:
    runtime = _ort_library(venv)
    # The wheel ships only the versioned file; the backend links -lonnxruntime.
    lib_dir = work / "onnxruntime-lib"
    lib_dir.mkdir(parents=True, exist_ok=True)
    symlink(lib_dir / "libonnxruntime.so", runtime)
    flags = [
        f"-DTRITON_ONNXRUNTIME_INCLUDE_PATHS={src.ort_include}",
        f"-DTRITON_ONNXRUNTIME_LIB_PATHS={lib_dir}",
    ]
    library = _cmake_build(log, src, "onnxruntime", work, flags)
    dest = folder / "onnxruntime"
    installed = _install(log, library, dest, venv, [])
    # The backend needs the runtime by its soname; $ORIGIN finds this link.
    symlink(dest / "libonnxruntime.so.1", runtime)
    return installed


def _tf_compile_flags(log: Log) -> list[str]:
    code = "import json, tensorflow as tf; print(json.dumps(tf.sysconfig.get_compile_flags()))"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = log.run("tf.sysconfig", [sys.executable, "-c", code], env=env)
    return json.loads(out.strip().splitlines()[-1])


def _tensorflow(src: Sources, venv: Venv, folder: Path, work: Path, log: Log) -> Path:
    if venv.tensorflow is None:
        raise BuildFailed("tensorflow is not installed in this venv")
    tf_dir = venv.tensorflow
    # -ltensorflow_cc / -ltensorflow_framework need unversioned names; the wheel has .so.2.
    lib_dir = work / "tensorflow-lib"
    lib_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtensorflow_cc.so", "libtensorflow_framework.so"):
        if not (tf_dir / f"{name}.2").is_file():
            raise BuildFailed(f"the TensorFlow wheel has no {name}.2 in {tf_dir}")
        symlink(lib_dir / name, tf_dir / f"{name}.2")

    try:
        source, include = tf_shim.prepare(src.tree("tensorflow_backend"), work / "tf-shim")
    except tf_shim.ShimError as e:
        raise BuildFailed(str(e)) from None
    shim = lib_dir / tf_shim.SHIM_LIBRARY
    compile_shim = [
        "g++", "-shared", "-fPIC", "-O2", "-Wno-deprecated-declarations",
        f"-I{include}", *_tf_compile_flags(log), str(source),
        "-o", str(shim), f"-Wl,-soname,{shim.name}",
        # Every symbol must resolve now against the two TF libraries, not at model load.
        "-Wl,-z,defs", f"-L{lib_dir}", "-ltensorflow_cc", "-ltensorflow_framework",
    ]  # fmt: skip
    log.run("compile the TRITONTF_* layer", compile_shim)
    flags = [
        f"-DTRITON_TENSORFLOW_LIB_PATHS={lib_dir}",
        # The backend's own CMake links only TF; its TRITONTF_* functions are in the shim.
        f"-DCMAKE_SHARED_LINKER_FLAGS=-Wl,--no-as-needed -L{lib_dir} "
        f"-l{shim.stem.removeprefix('lib')}",
    ]
    library = _cmake_build(log, src, "tensorflow", work, flags)
    dest = folder / "tensorflow"
    installed = _install(log, library, dest, venv, [tf_dir])
    shutil.copy2(shim, dest / shim.name)
    _set_runpath(log, dest / shim.name, [tf_dir])
    return installed


STEPS = {"pytorch": _pytorch, "tensorflow": _tensorflow, "onnxruntime": _onnxruntime}


def _missing_tools() -> list[str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if not GOOGLETEST.is_dir():
        missing.append(f"googletest ({GOOGLETEST})")
    if not RAPIDJSON.is_dir():
        missing.append(f"rapidjson-dev ({RAPIDJSON})")
    return missing


def build_all(folder: Path, log: Callable[[str], None]) -> dict[str, BackendStatus]:
    """Fetch the sources, then build, install and check each backend into ``folder``
    (the key's folder), one after another. One line per backend goes to ``log``, or one
    line in all when there are no sources."""
    logs = folder / "logs"
    work = folder / "work"
    names = list(BACKENDS.values())
    try:
        src = sources.fetch(work / "src", logs / "sources.log")
    except SourcesUnavailable as e:
        log(unavailable_line(str(e)))
        return {n: BackendStatus(n, "unavailable", str(e)) for n in names}

    venv = Venv.find()
    problems = _missing_tools()
    if venv.libtritonserver is None:
        problems.append("nvidia-pytriton's libtritonserver-<hash>.so")
    results = {}
    for name in names:
        backend_log = Log(logs / f"{name}.log")
        backend_log.write(f"sources: {src.origin}\n")
        started = time.monotonic()
        try:
            if problems:
                raise BuildFailed(f"missing {', '.join(problems)} (scripts/setup.sh installs them)")
            library = STEPS[name](src, venv, folder, work, backend_log)
            _check(backend_log, library, venv)
            entry = BackendStatus(
                name,
                "built",
                path=str(library.parent),
                log=str(backend_log.path),
                seconds=round(time.monotonic() - started, 1),
            )
        except BuildFailed as e:
            entry = BackendStatus(
                name,
                "failed",
                reason=str(e),
                log=str(backend_log.path),
                seconds=round(time.monotonic() - started, 1),
            )
        except OSError as e:
            entry = BackendStatus(
                name, "failed", reason=f"{type(e).__name__}: {e}", log=str(backend_log.path)
            )
        backend_log.write(f"\n{entry.state}{': ' + entry.reason if entry.reason else ''}\n")
        results[name] = entry
        log(entry.line())
    if all(r.ok for r in results.values()):
        # The installed libraries need nothing from the work tree; a failure's is kept.
        shutil.rmtree(work, ignore_errors=True)
    return results
