"""The native backends' build (``ensemble.native``): its cache key, the backend folder it
hands the server, the TensorFlow shim's source changes, where the sources come from,
and the fallback when there are none. Nothing here compiles: the build itself is checked
by ``scripts/setup.sh`` (and its status by ``python -m ensemble.native``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from ensemble import native
from ensemble.native import sources, tf_shim

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[1]
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache root of the test's own."""
    folder = tmp_path / "native-cache"
    monkeypatch.setenv(native.CACHE_ENV, str(folder))
    return folder


# --- the cache key ---


def _pins_with_other_commit():
    pins = sources.pins()
    pins["repos"]["core"] = ["0" * 40, pins["repos"]["core"][1]]
    return lambda: pins


KEY_INPUTS = {
    "a pinned commit": ("ensemble.native.sources.pins", _pins_with_other_commit()),
    "the build code": ("ensemble.native._code_digest", lambda: "changed"),
    "the server library": (
        "ensemble.native._server",
        lambda: {"nvidia-pytriton": "0.7.0", "library": "libtritonserver-00000000.so"},
    ),
    "a framework version": (
        "ensemble.native._framework_versions",
        lambda: {"torch": "2.14.0", "tensorflow": "2.21.0", "onnxruntime": "1.32.0"},
    ),
    "the compiler": ("ensemble.native._compiler", lambda: "g++ (Debian 13.1.0-1) 13.1.0"),
    "the venv's path": ("ensemble.native._venv", lambda: "/elsewhere/.venv"),
    "the Python version": ("platform.python_version", lambda: "3.12.0"),
}


@pytest.mark.parametrize("what", KEY_INPUTS)
def test_cache_key_changes_when_a_pinned_input_changes(what, monkeypatch):
    before = native.cache_key()
    target, value = KEY_INPUTS[what]
    monkeypatch.setattr(target, value)
    assert native.cache_key() != before


def test_cache_key_is_the_same_for_the_same_environment():
    assert native.cache_key() == native.cache_key()
    assert len(native.cache_key()) == 16


def test_code_digest_covers_every_file_of_the_package(tmp_path):
    (tmp_path / "build.py").write_text("x = 1\n")
    (tmp_path / "stand_in.h").write_text("#define A 1\n")
    before = native._code_digest(tmp_path)
    (tmp_path / "stand_in.h").write_text("#define A 2\n")
    assert native._code_digest(tmp_path) != before
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "build.cpython-311.pyc").write_bytes(b"\0")
    after = native._code_digest(tmp_path)
    assert native._code_digest(tmp_path) == after  # compiled files are not inputs


# --- what the server is handed ---


def _fake_build(cache: Path, key: str, built: tuple[str, ...], failed: tuple[str, ...]):
    """A status as a build for ``key`` would leave it, with stand-in libraries."""
    entries = {}
    for name in built:
        folder = cache / key / name
        folder.mkdir(parents=True)
        (folder / f"libtriton_{name}.so").write_bytes(b"")
        entries[name] = {"backend": name, "state": "built", "path": str(folder), "seconds": 1.0}
    for name in failed:
        entries[name] = {"backend": name, "state": "failed", "reason": "compile error"}
    (cache / key / "status.json").write_text(json.dumps({"key": key, "backends": entries}))


def test_built_is_empty_when_nothing_was_built(cache):
    assert native.built() == {}
    assert native.status() == {}


def test_built_lists_only_the_backends_that_built(cache):
    _fake_build(cache, "k", built=("pytorch", "onnxruntime"), failed=("tensorflow",))
    assert native.built("k") == {
        "pytorch": cache / "k/pytorch",
        "onnxruntime": cache / "k/onnxruntime",
    }
    assert native.status("k")["tensorflow"].reason == "compile error"


def test_without_a_compiler_the_build_that_matches_in_all_else_is_used(cache, monkeypatch):
    """A runtime image has no g++: its backends, built in an earlier stage of the image's
    build with one, are found by the rest of the key's inputs."""
    _fake_build(cache, "built-with-gcc", built=("pytorch",), failed=())
    inputs = {**native.key_inputs(), "compiler": "g++ (Debian 12.2.0-14) 12.2.0"}
    (cache / "built-with-gcc" / "inputs.json").write_text(json.dumps(inputs))
    # A machine with another compiler (whatever this one has, g++ or none): its own key only
    monkeypatch.setattr("ensemble.native._compiler", lambda: "g++ (Debian 13.1.0-1) 13.1.0")
    assert native.built() == {}
    monkeypatch.setattr("ensemble.native._compiler", lambda: None)
    assert native.installed_key() == "built-with-gcc"
    assert set(native.built()) == {"pytorch"}
    # anything else differing (here the venv): not that build
    monkeypatch.setattr("ensemble.native._venv", lambda: "/elsewhere/.venv")
    assert native.installed_key() == native.cache_key()
    assert native.built() == {}


def test_backend_directory_holds_python_and_each_built_backend(cache, tmp_path):
    _fake_build(cache, "k", built=("pytorch", "onnxruntime"), failed=("tensorflow",))
    python = tmp_path / "triton" / "backends" / "python"
    python.mkdir(parents=True)

    folder = native.backend_directory(python, key="k")

    assert folder == cache / "k" / "backends"
    assert sorted(p.name for p in folder.iterdir()) == ["onnxruntime", "python", "pytorch"]
    assert (folder / "python").resolve() == python.resolve()
    assert (folder / "pytorch" / "libtriton_pytorch.so").is_file()
    assert (folder / "onnxruntime").resolve() == (cache / "k" / "onnxruntime").resolve()


def test_backend_directory_is_idempotent_and_follows_a_new_python_backend(cache, tmp_path):
    _fake_build(cache, "k", built=("pytorch",), failed=())
    first, second = tmp_path / "a" / "python", tmp_path / "b" / "python"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    folder = native.backend_directory(first, key="k")
    link_before = os.lstat(folder / "pytorch")
    assert native.backend_directory(first, key="k") == folder
    assert os.lstat(folder / "pytorch").st_ino == link_before.st_ino  # left alone
    native.backend_directory(second, key="k")
    assert (folder / "python").resolve() == second.resolve()


def test_a_backend_that_no_longer_built_leaves_the_backend_directory(cache, tmp_path):
    _fake_build(cache, "k", built=("pytorch", "tensorflow"), failed=())
    python = tmp_path / "python"
    python.mkdir()
    folder = native.backend_directory(python, key="k")
    shutil.rmtree(cache / "k" / "tensorflow")
    native.backend_directory(python, key="k")
    assert sorted(p.name for p in folder.iterdir()) == ["python", "pytorch"]


def test_status_lines_say_built_reused_or_failed_with_the_log():
    entry = native.BackendStatus("pytorch", "built", path="/c/k/pytorch", seconds=41.2)
    assert entry.line() == "native backend pytorch: built in 41 s (/c/k/pytorch)"
    assert replace(entry, reused=True).line() == "native backend pytorch: reused (/c/k/pytorch)"
    failed = native.BackendStatus(
        "tensorflow",
        "failed",
        reason="cmake build exited 2: x.cc:1: error: y",
        log="/c/k/logs/tensorflow.log",
    )
    assert failed.line() == (
        "native backend tensorflow: failed: cmake build exited 2: x.cc:1: "
        "error: y; see /c/k/logs/tensorflow.log"
    )


def test_every_runtime_maps_to_a_backend_with_a_platform():
    assert set(native.BACKENDS) == {"torchscript", "savedmodel", "onnx"}
    assert set(native.PLATFORMS) == set(native.BACKENDS.values())
    assert native.PLATFORMS[native.BACKENDS["onnx"]] == "onnxruntime_onnx"


def test_a_new_build_removes_the_folders_of_other_keys_only(cache):
    current, stale, other = cache / ("a" * 16), cache / ("b" * 16), cache / "notes"
    for folder in (current, stale, other):
        folder.mkdir(parents=True)
    native._prune(keep=current)
    assert sorted(p.name for p in cache.iterdir()) == sorted([current.name, other.name])


# --- the TensorFlow shim's changes ---


def test_tf_shim_rewrite_names_the_change_whose_anchor_is_missing():
    with pytest.raises(tf_shim.ShimError, match="status-api: ok"):
        tf_shim.rewrite("// not NVIDIA's tensorflow_backend_tf.cc\n")
    # Twice as many occurrences as expected is upstream changing too.
    change = tf_shim.Change("twice", "a", "b", count=1)
    with pytest.raises(tf_shim.ShimError, match="'twice'.*found 2"):
        tf_shim.rewrite("a a", (change,))


def _reference_source() -> str:
    folder = os.environ.get(sources.SOURCES_ENV, "").strip()
    if not folder:
        pytest.skip(f"${sources.SOURCES_ENV} is not set: no tarball of tensorflow_backend")
    tarball = Path(folder) / f"triton-{sources.TRITON_BRANCH}" / "tensorflow_backend.tar.gz"
    with tarfile.open(tarball) as tar:
        member = tar.extractfile(f"tensorflow_backend/{tf_shim.SHIM_SOURCE}")
        assert member is not None
        return member.read().decode()


def test_tf_shim_applies_cleanly_to_the_pinned_reference_source():
    text = tf_shim.rewrite(_reference_source())
    for gone in (
        "error_message()",
        "cudaPointerGetAttributes",
        "GetGPUAllocator",
        "cuda_runtime_api.h",
        "flat<std::string>",
    ):
        assert gone not in text, gone
    assert text.count("flat<tensorflow::tstring>()") == 2
    assert '#include "tensorflow/cc/saved_model/tag_constants.h"' in text  # our stand-in


def test_tf_shim_stand_in_header_defines_the_serve_tag():
    assert 'kSavedModelTagServe[] = "serve"' in tf_shim.TAG_CONSTANTS.read_text()


# --- where the sources come from ---


def test_a_sources_folder_whose_tarball_is_not_the_pinned_one_is_refused(tmp_path):
    folder = tmp_path / "third_party"
    for repo in sources.REPOS.values():
        tarball = folder / f"triton-{sources.TRITON_BRANCH}" / f"{repo.name}.tar.gz"
        tarball.parent.mkdir(parents=True, exist_ok=True)
        tarball.write_bytes(b"not the pinned tarball")
    with pytest.raises(sources.SourcesUnavailable, match=r"backend\.tar\.gz is not the pinned"):
        sources.from_folder(folder, tmp_path / "src")


def _git(*args: str, cwd: Path) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
        GIT_CONFIG_NOSYSTEM="1",
    )
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def _upstream(path: Path, files: dict[str, str], branch: str, commits: int = 2) -> str:
    """A repository served like GitHub (fetch by commit allowed); the first commit's id,
    the branch having moved on past it, as upstream's r24.10 may have."""
    path.mkdir(parents=True)
    _git("init", "-q", "-b", branch, cwd=path)
    _git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=path)
    _git("config", "uploadpack.allowFilter", "true", cwd=path)
    first = None
    for i in range(commits):
        for name, text in files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text(f"{text}\n# {i}\n")
        _git("add", "-A", cwd=path)
        _git("commit", "-q", "-m", f"c{i}", cwd=path)
        first = first or _git("rev-parse", "HEAD", cwd=path)
    return first


@needs_git
def test_github_sources_are_the_pinned_commits_and_the_ort_header_at_its_tag(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    repos = {}
    for name in sources.REPOS:
        commit = _upstream(
            mirror / "triton-inference-server" / name,
            {"CMakeLists.txt": f"project({name})"},
            sources.TRITON_BRANCH,
        )
        repos[name] = sources.Repo(name, commit, "unused")
    ort = mirror / "microsoft" / "onnxruntime"
    _upstream(
        ort,
        {sources.ORT_HEADER_PATH: "#define ORT_API_VERSION 19", "big/other.txt": "not wanted"},
        "main",
        commits=1,
    )
    _git("tag", sources.ORT_TAG, cwd=ort)
    monkeypatch.setattr(sources, "REPOS", repos)
    monkeypatch.delenv(sources.SOURCES_ENV, raising=False)
    monkeypatch.setenv(sources.GIT_BASE_ENV, f"file://{mirror}")

    got = sources.fetch(tmp_path / "src", tmp_path / "sources.log")

    for name, repo in repos.items():
        assert _git("rev-parse", "HEAD", cwd=got.tree(name)) == repo.commit  # not the branch head
    assert (got.ort_include / sources.ORT_HEADER).is_file()
    assert not (got.root / "onnxruntime" / "big").exists()  # only the one header checked out


# --- no sources: setup goes on with the Python runners ---


@needs_git
def test_without_sources_setup_prints_one_line_and_builds_nothing(cache, tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if k != sources.SOURCES_ENV}
    env[sources.GIT_BASE_ENV] = str(tmp_path / "no-such-mirror")
    env[native.CACHE_ENV] = str(cache)

    proc = subprocess.run(
        [sys.executable, "-m", "ensemble.native"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=25,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    assert "sources not found" in lines[0]
    assert f"${sources.SOURCES_ENV} is unset" in lines[0]
    assert "every runtime stays on its Python runner" in lines[0]
    monkeypatch.delenv(sources.SOURCES_ENV, raising=False)
    assert native.built() == {}
    assert {s.state for s in native.status().values()} == {"unavailable"}
