"""The pinned upstream sources of the native backends, and how to get them.

Two places hold the same trees:

- a folder named by ``$TRITON_BACKEND_SOURCES`` with ``git archive`` tarballs of the six
  Triton repositories and ONNX Runtime's C API header (what CI and machines without
  GitHub use); every file is checked against its pinned sha256 before it is read;
- GitHub: each Triton repository cloned shallow at its pinned commit, and the one ORT
  header taken by a sparse, shallow clone of the release tag. A host that cannot reach
  it fails within ``PROBE_TIMEOUT_S`` and the build reports the sources as unavailable.

Nothing here is copied into the project: the trees are unpacked under the build's
work folder and read there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ensemble.recipes.sources import sha256_file  # one copy: the models' sources use it too

SOURCES_ENV = "TRITON_BACKEND_SOURCES"
GIT_BASE_ENV = "TRITON_BACKEND_GIT_BASE"
GIT_BASE = "https://github.com"
# A host without GitHub usually fails at once (no DNS); one that drops packets would
# hang, so the first contact is cut here and the whole step gives up.
PROBE_TIMEOUT_S = 20
# Once GitHub answered, a fetch of one shallow tree gets this long.
FETCH_TIMEOUT_S = 300

TRITON_BRANCH = "r24.10"  # Triton 2.51.0, the server inside nvidia-pytriton 0.7.0


@dataclass(frozen=True)
class Repo:
    """One Triton repository at the commit the backends were verified with."""

    name: str  # github.com/triton-inference-server/<name>; also the tarball's folder
    commit: str
    sha256: str  # of <name>.tar.gz in $TRITON_BACKEND_SOURCES/triton-r24.10/


# Commits: the heads of each repository's r24.10 branch when the tarballs were made
# (shared/third_party/SOURCES.md); sha256: of those `git archive` tarballs
# (shared/third_party/SHA256SUMS).
REPOS = {
    r.name: r
    for r in (
        Repo("backend", "ac03a5d97403dec841ad46d0439e93db12c9268f",
             "151da6fa28fbece76c7357a72e089768d4322e2382cce8b6b578424a82b4987a"),
        Repo("core", "bfec7c61dc0939433f64f14e89b1973073eac8ba",
             "a77d172b45f5582fa6a089c894d003cdcd6e81f57d941a196eb4ca93ff7d8a63"),
        Repo("common", "578491fc3944f77d16a6a38e3d7691c485c47ba0",
             "f8d42fac07949257d938261d3330ced625b33829ac02bac37fa837a4c6f6c57c"),
        Repo("pytorch_backend", "e97a90061f7399b25368e2cb1f6d5c40f8cbae4e",
             "3bbd9bd9d3254a9f2f1eb6cd9870890443d0541eea7974964efe6b6810895b53"),
        Repo("onnxruntime_backend", "17e5cb23a6fbeb37282eb7079dd0b580cd79530d",
             "a27ce4b34a31c8dc86a306195030ce40a505e858c13a08ded10959d937be64a2"),
        Repo("tensorflow_backend", "e4fe6b8dae858a30c4ac7fe9cfc4987b89d4d258",
             "6f0de9e5cfb6efbca320eba5a33fb19a367ee9ef00cbe3ea3e9a04ef3668e3e5"),
    )
}  # fmt: skip

# ONNX Runtime's C API at ORT_API_VERSION 19, the version the r24.10 ORT backend targets
# (the wheel's 1.32 runtime still serves it). The folder's copy is the header as
# github.com/yalue/onnxruntime_go v1.12.0 vendors it verbatim (sha256 from SHA256SUMS);
# from GitHub it is ORT's own file at the 1.19 release tag, checked for its API version
# (the tag's bytes were not available to pin when this was written).
ORT_API_VERSION = 19
ORT_TAG = "v1.19.2"
ORT_HEADER_PATH = "include/onnxruntime/core/session/onnxruntime_c_api.h"
ORT_HEADER_DIR = "onnxruntime-1.19-c-api"  # in $TRITON_BACKEND_SOURCES
ORT_HEADER = "onnxruntime_c_api.h"
ORT_HEADER_SHA256 = "bfdb387ef6f576ccbeb18c63e19fe5854aa0c278a3838027e9f764419e61475e"


def pins() -> dict:
    """Everything pinned, as plain data (part of the build's cache key)."""
    return {
        "branch": TRITON_BRANCH,
        "repos": {r.name: [r.commit, r.sha256] for r in REPOS.values()},
        "ort_header": [ORT_TAG, ORT_API_VERSION, ORT_HEADER_SHA256],
    }


class SourcesUnavailable(RuntimeError):
    """No usable copy of the pinned sources; the message says which way failed and why."""


@dataclass(frozen=True)
class Sources:
    """Unpacked trees, ready for CMake."""

    root: Path  # <root>/<repo name>/ for each of REPOS
    ort_include: Path  # folder holding onnxruntime_c_api.h
    origin: str  # where they came from, for the logs

    def tree(self, name: str) -> Path:
        return self.root / name


def fetch(dest: Path, log_path: Path) -> Sources:
    """The pinned trees under ``dest`` (emptied first): from ``$TRITON_BACKEND_SOURCES``
    when it is set, else cloned from GitHub. ``SourcesUnavailable`` when neither works;
    git's output goes to ``log_path``."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    folder = os.environ.get(SOURCES_ENV, "").strip()
    if folder:
        return from_folder(Path(folder), dest)
    return from_github(os.environ.get(GIT_BASE_ENV, "").strip() or GIT_BASE, dest, log_path)


def from_folder(folder: Path, dest: Path) -> Sources:
    """Check every pinned file of ``folder`` (laid out as shared/third_party) against its
    sha256, then unpack the tarballs into ``dest``."""
    expected = {
        Path(f"triton-{TRITON_BRANCH}") / f"{r.name}.tar.gz": r.sha256 for r in REPOS.values()
    }
    expected[Path(ORT_HEADER_DIR) / ORT_HEADER] = ORT_HEADER_SHA256
    for relative, sha256 in expected.items():
        path = folder / relative
        if not path.is_file():
            raise SourcesUnavailable(f"${SOURCES_ENV}={folder} has no {relative}")
        actual = sha256_file(path)
        if actual != sha256:
            raise SourcesUnavailable(
                f"{path} is not the pinned file (sha256 {actual[:12]}…, expected {sha256[:12]}…)"
            )
    for repo in REPOS.values():
        with tarfile.open(folder / f"triton-{TRITON_BRANCH}" / f"{repo.name}.tar.gz") as tar:
            # The "data" filter refuses links and paths that leave dest; Debian 12's own
            # python3.11 (3.11.2, the container image's) predates it, and the archive's
            # sha256 was checked against its pin first either way.
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, **safe)
        if not (dest / repo.name / "CMakeLists.txt").is_file():
            raise SourcesUnavailable(f"{repo.name}.tar.gz did not unpack into {repo.name}/")
    include = dest / "onnxruntime-include"
    include.mkdir()
    shutil.copy2(folder / ORT_HEADER_DIR / ORT_HEADER, include / ORT_HEADER)
    return Sources(dest, include, f"${SOURCES_ENV} ({folder})")


class _GitFailed(Exception):
    pass


def _git(args: list[str], log, timeout_s: float, cwd: Path | None = None) -> str:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    cmd = ["git", *args]
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise _GitFailed(f"`git {args[0]}` gave no answer in {timeout_s:.0f} s") from None
    except FileNotFoundError:
        raise _GitFailed("git is not installed") from None
    log.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        # git's first "fatal:" line says what went wrong; hints follow it.
        fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
        raise _GitFailed((fatal or lines or [f"`git {args[0]}` exited {proc.returncode}"])[0])
    return proc.stdout.strip()


def from_github(base: str, dest: Path, log_path: Path) -> Sources:
    """Each Triton repository of ``REPOS`` at its pinned commit and ORT's header at
    ``ORT_TAG``, cloned from ``base`` (``https://github.com`` or a local mirror)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        try:
            first = f"{base}/triton-inference-server/{next(iter(REPOS))}"
            _git(
                ["ls-remote", "--exit-code", first, f"refs/heads/{TRITON_BRANCH}"],
                log,
                PROBE_TIMEOUT_S,
            )
        except _GitFailed as e:
            reason = f"${SOURCES_ENV} is unset and {base} is unreachable ({e})"
            raise SourcesUnavailable(reason) from None
        try:
            for repo in REPOS.values():
                _clone_at(f"{base}/triton-inference-server/{repo.name}", repo, dest, log)
            include = _ort_header(f"{base}/microsoft/onnxruntime", dest, log)
        except _GitFailed as e:
            raise SourcesUnavailable(f"cloning from {base} failed: {e}") from None
    return Sources(dest, include, base)


def _clone_at(url: str, repo: Repo, dest: Path, log) -> None:
    tree = dest / repo.name
    _git(
        ["clone", "-q", "--depth", "1", "--no-checkout", "--branch", TRITON_BRANCH, url, str(tree)],
        log,
        FETCH_TIMEOUT_S,
    )
    try:
        # The branch may have moved on since the pin: ask for the pinned commit itself
        # (GitHub serves any reachable commit to a shallow fetch).
        _git(["fetch", "-q", "--depth", "1", "origin", repo.commit], log, FETCH_TIMEOUT_S, tree)
    except _GitFailed:
        _git(["fetch", "-q", "--unshallow", "origin"], log, FETCH_TIMEOUT_S, tree)
    _git(["checkout", "-q", repo.commit], log, FETCH_TIMEOUT_S, tree)
    head = _git(["rev-parse", "HEAD"], log, FETCH_TIMEOUT_S, tree)
    if head != repo.commit:
        raise _GitFailed(f"{repo.name} is at {head}, not the pinned {repo.commit}")


def _ort_header(url: str, dest: Path, log) -> Path:
    tree = dest / "onnxruntime"
    _git(
        [
            "clone",
            "-q",
            "--depth",
            "1",
            "--filter=blob:none",
            "--sparse",
            "--branch",
            ORT_TAG,
            url,
            str(tree),
        ],
        log,
        FETCH_TIMEOUT_S,
    )
    _git(["sparse-checkout", "set", "--no-cone", f"/{ORT_HEADER_PATH}"], log, FETCH_TIMEOUT_S, tree)
    header = tree / ORT_HEADER_PATH
    if f"#define ORT_API_VERSION {ORT_API_VERSION}\n" not in header.read_text():
        raise _GitFailed(f"{ORT_TAG}'s {ORT_HEADER} is not ORT_API_VERSION {ORT_API_VERSION}")
    return header.parent
