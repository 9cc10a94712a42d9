"""The front's nginx config as the tests write it: fixed ports, so that a test can look
for them in the text (the unit tier) or have nginx check the file (the server tier)."""

from __future__ import annotations

from pathlib import Path

from ensemble.front import MAX_INFLIGHT, Tls, nginx_config

HOST = "127.0.0.1"
# The front's own ports, then Triton's behind it; none is bound: the config is only read.
HTTP_PORT, GRPC_PORT = 18080, 18081
TRITON_HTTP_PORT, TRITON_GRPC_PORT = 18090, 18091


def front_config(
    workdir: Path, tls: Tls | None = None, max_inflight: int = MAX_INFLIGHT,
    api_key: str | None = None,
) -> str:  # fmt: skip
    """nginx's config text for a front on the ports above, its files under ``workdir``."""
    return nginx_config(
        host=HOST, http_port=HTTP_PORT, grpc_port=GRPC_PORT, triton_http=TRITON_HTTP_PORT,
        triton_grpc=TRITON_GRPC_PORT, workdir=workdir, tls=tls, max_inflight=max_inflight,
        api_key=api_key,
    )  # fmt: skip
