"""The gRPC connection's maximum age from the launcher's flag to the front's nginx
config, without a server (test_grpc_connection_age_server.py: a replica added while
clients run gets their traffic)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ensemble.front import GRPC_MAX_CONNECTION_AGE_S, nginx_config
from ensemble.server import argument_parser, server_options

pytestmark = pytest.mark.unit


def grpc_server_block(age_s: int, workdir: Path) -> str:
    """The nginx ``server`` block of the front's gRPC port, for a maximum age ``age_s``."""
    text = nginx_config(
        host="127.0.0.1", http_port=18080, grpc_port=18081, triton_http=18090,
        triton_grpc=18091, workdir=workdir, grpc_max_connection_age_s=age_s,
    )  # fmt: skip
    (block,) = re.findall(r"server \{\n    listen 127\.0\.0\.1:18081 http2;.*?\n  \}\n", text, re.S)
    return block


def test_the_grpc_port_closes_connections_at_their_maximum_age(tmp_path: Path):
    # keepalive_time: the age after which a busy HTTP/2 connection gets a GOAWAY
    assert re.findall(r"keepalive_time (\S+);", grpc_server_block(7, tmp_path)) == ["7s"]


def test_the_launcher_takes_the_age_and_defaults_to_two_minutes():
    parse = argument_parser().parse_args
    assert GRPC_MAX_CONNECTION_AGE_S == 120
    assert server_options(parse([]))["grpc_max_connection_age_s"] == 120
    options = server_options(parse(["--grpc-max-connection-age", "30"]))
    assert options["grpc_max_connection_age_s"] == 30
    with pytest.raises(ValueError, match="at least 1 second"):
        server_options(parse(["--grpc-max-connection-age", "0"]))
