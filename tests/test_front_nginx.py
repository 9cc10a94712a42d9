"""The front's nginx configuration (``ensemble.front``) as the real nginx reads it, with
and without TLS; skipped where nginx or openssl is not installed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ensemble.front import Tls
from tests.apt_tools import needs_tools, tool_path
from tests.front_config import front_config
from tests.tls import make_self_signed

pytestmark = [pytest.mark.unit, needs_tools("nginx", "openssl")]


def test_nginx_accepts_the_front_config_with_and_without_tls(tmp_path: Path):
    cert, key = make_self_signed(tmp_path / "tls")
    for tls in (None, Tls(cert, key)):
        path = tmp_path / "nginx.conf"
        path.write_text(front_config(tmp_path, tls))
        checked = subprocess.run(
            [tool_path("nginx"), "-t", "-c", str(path), "-e", str(tmp_path / "e.log")],
            capture_output=True, text=True,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stderr
