"""The launcher's exposure rules and the front's nginx config, without a server (the
server tier checks that nginx accepts the config)."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import pytest

from ensemble import contract
from ensemble.front import Tls
from ensemble.server import (
    SERVER_API_KEY_ENV,
    ServerError,
    add_server_arguments,
    resolve_api_key,
    server_options,
)
from tests.front_config import front_config

pytestmark = pytest.mark.unit


def test_on_loopback_without_a_key_nothing_is_restricted(tmp_path, monkeypatch):
    monkeypatch.delenv(SERVER_API_KEY_ENV, raising=False)
    assert resolve_api_key("127.0.0.1", None, tmp_path) is None
    assert not (tmp_path / "api-key").exists()


def test_beyond_localhost_a_new_key_is_written_for_the_owner_only(tmp_path, monkeypatch):
    monkeypatch.delenv(SERVER_API_KEY_ENV, raising=False)
    key = resolve_api_key("0.0.0.0", None, tmp_path)
    written = tmp_path / "api-key"
    assert key and len(key) >= 32
    assert written.read_text().strip() == key
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert resolve_api_key("0.0.0.0", None, tmp_path) != key  # a new one each run


def test_a_key_file_wins_over_the_environment_which_wins_over_a_new_key(tmp_path, monkeypatch):
    monkeypatch.setenv(SERVER_API_KEY_ENV, "from-env")
    assert resolve_api_key("0.0.0.0", None, tmp_path) == "from-env"
    key_file = tmp_path / "key.txt"
    key_file.write_text("from-file\n")
    assert resolve_api_key("127.0.0.1", key_file, tmp_path) == "from-file"  # restricts too
    key_file.write_text("  \n")
    with pytest.raises(ServerError, match="empty"):
        resolve_api_key("0.0.0.0", key_file, tmp_path)


def options(*argv: str) -> dict:
    ap = argparse.ArgumentParser()
    add_server_arguments(ap)
    return server_options(ap.parse_args(list(argv)))


def test_tls_needs_both_a_certificate_and_its_key():
    with pytest.raises(ValueError, match="both"):
        options("--tls-cert", "cert.pem")
    tls = options("--tls-cert", "c.pem", "--tls-key", "k.pem")["tls"]
    assert tls == Tls(Path("c.pem"), Path("k.pem"))
    assert options()["tls"] is None


def test_the_front_caps_bodies_and_requests_in_flight_and_forwards_to_triton(tmp_path):
    text = front_config(tmp_path, max_inflight=7)
    assert f"client_max_body_size {contract.MAX_REQUEST_BYTES};" in text
    assert text.count("limit_conn inflight 7;") == 2  # HTTP and gRPC inference only
    assert "server 127.0.0.1:18090;" in text and "server 127.0.0.1:18091;" in text
    assert "listen 127.0.0.1:18081 http2;" in text
    assert contract.BUSY_MESSAGES[0] in text
    assert "ssl" not in text


def test_with_tls_both_ports_speak_it(tmp_path):
    tls = Tls(tmp_path / "c.pem", tmp_path / "k.pem")
    text = front_config(tmp_path, tls)
    assert "listen 127.0.0.1:18080 ssl;" in text
    assert "listen 127.0.0.1:18081 ssl http2;" in text
    assert text.count(f"ssl_certificate {tls.cert.resolve()};") == 2
