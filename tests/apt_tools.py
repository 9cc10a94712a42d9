"""The command line tools from apt that some tests run (promtool, haproxy, openssl...).

``make setup`` installs them; ``make test-unit`` needs only the virtual environment, so a
unit test that runs one skips, saying which, where the tool is missing. A server-tier
module may fail instead (CI's setup installs every tool): each module says which.
"""

from __future__ import annotations

import shutil

import pytest

# Debian installs daemons such as haproxy in /usr/sbin, which a user's PATH leaves out.
SBIN = "/usr/sbin"


def tool_path(name: str) -> str | None:
    """The executable ``name`` on PATH, else in /usr/sbin; None when neither has it."""
    return shutil.which(name) or shutil.which(name, path=SBIN)


def needs_tools(*names: str) -> pytest.MarkDecorator:
    """Skips the marked test (or module, as ``pytestmark``) when a tool is missing."""
    missing = [name for name in names if tool_path(name) is None]
    return pytest.mark.skipif(
        bool(missing), reason=f"{', '.join(missing)} not installed (make setup installs it)"
    )


def tool_or_skip(name: str) -> str:
    """The path of ``name``; skips the calling test when it is missing."""
    path = tool_path(name)
    if path is None:
        pytest.skip(f"{name} is not installed (make setup installs it)")
    return path


def tool_or_fail(name: str) -> str:
    """The path of ``name``; fails the calling test when it is missing, for the tiers
    that CI runs only after setup has installed every tool."""
    path = tool_path(name)
    if path is None:
        pytest.fail(f"{name} is not installed: make setup installs it", pytrace=False)
    return path
