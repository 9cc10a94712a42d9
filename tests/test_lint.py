"""The lint covers the whole repository: ruff's own file list holds every tracked
Python file (ruff's default excludes once hid the ``ensemble/build`` package)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[1]


def tracked_python_files() -> set[str]:
    """Every ``*.py`` git tracks here that is on disk, relative to the repository root."""
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing says which files are tracked")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "*.py"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout.decode()
    return {name for name in listed.split("\0") if name and (REPO_ROOT / name).is_file()}


def ruff_files() -> set[str]:
    """The files ``ruff check .`` (``make lint``, CI) looks at, relative to the root."""
    shown = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--show-files", "."],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {Path(line).relative_to(REPO_ROOT).as_posix() for line in shown.splitlines()}


def test_ruff_checks_every_tracked_python_file():
    tracked = tracked_python_files()
    assert "ensemble/server.py" in tracked  # the listing itself works
    missed = sorted(tracked - ruff_files())
    assert not missed, f"ruff skips tracked files (see [tool.ruff] exclude): {missed}"
