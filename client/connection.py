"""How the client reaches a server: its endpoints, TLS, the API key and the gRPC
channel's options.

An argument always wins over the environment (``client.environment``): the address
``url`` over $TRITON_URL, ``tls`` over $DETECTOR_TLS_CA, ``api_key`` over
$DETECTOR_API_KEY. An address is ``host:port``, several of them separated by commas,
or one gRPC target that resolves to many (``dns:///name:8001``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import grpc
from tritonclient.grpc import KeepAliveOptions

from client.environment import API_KEY_ENV, DEFAULT_URL, TLS_CA_ENV, URL_ENV
from client.errors import DetectorError
from ensemble.contract import (
    API_KEY_HEADER,
    GRPC_API_KEY_HEADER,
    MAX_REQUEST_BYTES,
    is_loopback_host,
)

# The largest gRPC message the channel sends: a request body, the message plus gRPC's
# 5-byte frame header, is at most the server's MAX_REQUEST_BYTES. Replies are not
# bounded by the contract (up to four annotated JPEGs per image for detect_all), so
# the channel accepts gRPC's largest message, as tritonclient does by default.
GRPC_FRAME_HEADER_BYTES = 5
MAX_SEND_MESSAGE_BYTES = MAX_REQUEST_BYTES - GRPC_FRAME_HEADER_BYTES
MAX_RECEIVE_MESSAGE_BYTES = 2**31 - 1

# A channel that lost its server waits up to this long before connecting again (gRPC's
# default grows to 120 s): a replica back from a restart is seen within this.
MAX_RECONNECT_BACKOFF_MS = 10_000

# gRPC target schemes whose address part is itself a comma-separated list of addresses
# ("ipv4:10.0.0.1:8001,10.0.0.2:8001"): such a string is one target, not several.
_LIST_TARGET_SCHEMES = ("ipv4:", "ipv6:")


def parse_endpoints(url: str | Sequence[str]) -> tuple[str, ...]:
    """The endpoints in ``url``: one gRPC address, several separated by commas
    (``"a:8001, b:8001"``), or a sequence of them; blanks around each are dropped, and so
    is a ``grpc://`` scheme.

    Any other gRPC target is kept whole: ``dns:///name:8001`` (gRPC resolves the name
    and balances over its addresses), ``ipv4:a:8001,b:8001``. ``ValueError`` saying why
    for no endpoint, an empty entry or an endpoint given twice.
    """
    entries = [url] if isinstance(url, str) else list(url)
    if not entries:
        raise ValueError("no Triton endpoint given: pass host:port, or several separated by ,")
    found: list[str] = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ValueError(f"a Triton endpoint is a string host:port, got {entry!r}")
        text = entry.strip()
        parts = [text] if text.startswith(_LIST_TARGET_SCHEMES) else text.split(",")
        for part in parts:
            endpoint = part.strip().removeprefix("grpc://")
            if not endpoint:
                raise ValueError(
                    f"empty Triton endpoint in {entry!r}: give host:port, several "
                    f"separated by a comma"
                )
            if any(c.isspace() for c in endpoint):
                raise ValueError(f"blank inside the Triton endpoint {endpoint!r}")
            if endpoint in found:
                raise ValueError(f"Triton endpoint {endpoint} given twice")
            found.append(endpoint)
    return tuple(found)


def resolve_endpoints(url: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The endpoints of ``url``, else of $TRITON_URL, else localhost:8001 (see
    ``parse_endpoints``: one address, or several separated by commas)."""
    return parse_endpoints(url or os.environ.get(URL_ENV) or DEFAULT_URL)


def resolve_url(url: str | Sequence[str] | None = None) -> str:
    """``url``, else $TRITON_URL, else localhost:8001, as one string: its endpoints
    separated by commas, each without a ``grpc://`` scheme."""
    return ",".join(resolve_endpoints(url))


# A TLS setting: False, True (trust the system's roots), or a CA certificate file's path.
TlsOption = bool | str | os.PathLike


def resolve_tls(tls: TlsOption | None = None) -> bool | Path:
    """``tls`` (False, True for the system's roots, or a CA file's path), else the path
    in $DETECTOR_TLS_CA, else False."""
    if tls is None:
        tls = os.environ.get(TLS_CA_ENV) or False
    if isinstance(tls, bool):
        return tls
    return Path(tls)


def resolve_api_key(api_key: str | None = None) -> str | None:
    """``api_key``, else $DETECTOR_API_KEY; surrounding blanks are dropped, and an empty
    key is no key."""
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV, "")
    return api_key.strip() or None


# The restricted APIs' key travels under both API_KEY_HEADER and GRPC_API_KEY_HEADER
# (see the contract): the second for Triton's gRPC endpoint, the first for any front
# that checks the configured name itself.


def api_key_headers(api_key: str | None) -> dict[str, str] | None:
    """The request headers (gRPC metadata) that carry ``api_key``; None without a key."""
    return {API_KEY_HEADER: api_key, GRPC_API_KEY_HEADER: api_key} if api_key else None


def read_ca_certificate(path: Path) -> bytes:
    """The PEM bytes of a CA certificate file; ``DetectorError`` naming the file when it
    cannot be read or holds no certificate."""
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise DetectorError(f"cannot read the TLS CA file {path}: {e.strerror or e}") from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise DetectorError(f"the TLS CA file {path} holds no PEM certificate")
    return pem


def channel_credentials(tls: bool | Path) -> dict:
    """tritonclient's keywords for a channel with ``tls`` (as ``resolve_tls`` gives it):
    credentials trusting the CA file at that path, grpc's default roots for True,
    none for False. ``DetectorError`` for a CA file that cannot be used."""
    if isinstance(tls, Path):
        pem = read_ca_certificate(tls)
        return {"creds": grpc.ssl_channel_credentials(root_certificates=pem)}
    return {"ssl": True} if tls else {}


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` (host:port, or a gRPC target ``dns:///host:port``,
    ``ipv4:a:port,b:port``) names this machine."""
    if url.startswith(_LIST_TARGET_SCHEMES):
        scheme, _, addresses = url.partition(":")
        return all(is_loopback_url(a) for a in addresses.split(","))
    if url.startswith("dns:"):
        url = url.rsplit("/", 1)[-1]
    return is_loopback_host(url.rsplit(":", 1)[0])


def channel_args() -> list[tuple[str, int | str]]:
    """The gRPC channel's options: message size limits to match the server's,
    tritonclient's default keepalive (which it leaves out when given options), and
    round robin over every address the target resolves to (a headless Service's name
    or ``dns:///name:8001``: gRPC's default, pick_first, would send everything to one)."""
    keepalive = KeepAliveOptions()
    return [
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
        ("grpc.max_send_message_length", MAX_SEND_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
    ]
