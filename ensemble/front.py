"""The server's front: nginx between the clients and Triton's HTTP and gRPC ports.

Triton 2.51 has no limit on the size of a request: it reads a 300 MB body in full
before the decode step refuses it. It also has no way to stop taking new requests
while it finishes the accepted ones. nginx does both at the protocol layer. It refuses
a body over ``contract.MAX_REQUEST_BYTES`` as soon as its size is known: HTTP 413, or
gRPC RESOURCE_EXHAUSTED. On SIGQUIT it closes its ports and finishes the requests in
flight. It is also where TLS ends, for gRPC and HTTP. Triton itself listens on
loopback ports only the front and the launcher use, so the front is also where the
restricted APIs' key is checked: the key stays off tritonserver's command line, where
any user of the machine could read it (``ps``).

It also tells the truth about a model the supervisor is bringing back (``FrontState``,
written by ``ensemble.supervisor``): Triton would answer its requests NOT_FOUND ("has
no available versions", as for a model it never had) while it reloads, and say ready
until the reload starts. The front looks, on each request, for a marker file the
supervisor writes the moment it sees a worker die: a request for that model, or for an
ensemble that runs it, gets UNAVAILABLE with a hint of when to try again
(``contract.RECOVERING_MESSAGE``); ``/v2/health/ready`` (and gRPC's ServerReady) say
not ready; ``/v2/health/live`` says not live once a model could not be brought back,
so that a kubelet restarts the pod. A gRPC request's model is in its body, which nginx
does not read: the client library names it in ``contract.MODEL_HEADER``; requests
without that header meet Triton's own answers.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ensemble import contract
from ensemble.processes import kill_group

# How long a stopping front waits for requests in flight before it closes them.
DRAIN_SECONDS = 20
# Requests in flight at once, over HTTP and gRPC together; one more is refused as busy
# at once. On the 2-core CPU host 32 requests are one to two seconds of work, so a
# request is answered or refused within seconds however many clients there are.
MAX_INFLIGHT = 32
# Seconds a gRPC connection lives before the front asks the client to reconnect (an
# HTTP/2 GOAWAY: the requests in flight finish). A client balancing over a headless
# Service's addresses re-resolves the name only when a connection closes, so without
# an age it never sends to the pods the HPA adds.
GRPC_MAX_CONNECTION_AGE_S = 120


# The characters a restricted-API key may hold: it is written into nginx's config, where
# quotes, spaces, ``;``, braces and ``$`` would mean something. Base64 (standard and
# URL-safe), hex and UUIDs fit.
KEY_CHARACTERS = re.compile(r"[A-Za-z0-9._~+/=:@!*,%-]+")
# The model names the front looks up among the markers: Triton's names of the
# repository's models; nothing that climbs out of the markers' folder.
_MODEL_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
# Triton's restricted APIs (ensemble.server.RESTRICTED_APIS: model repository,
# statistics, logging, trace, shared memory), by HTTP path and by gRPC method.
_RESTRICTED_HTTP = (
    r"^/v2/(repository/|logging$|trace/setting$|models/stats$"
    r"|models/[^/]+(/versions/[^/]+)?/(stats|trace/setting)$"
    r"|systemsharedmemory|cudasharedmemory)"
)
_RESTRICTED_GRPC = (
    r"^/inference\.GRPCInferenceService/(Repository(Index|ModelLoad|ModelUnload)"
    r"|ModelStatistics|LogSettings|TraceSetting|(System|Cuda)SharedMemory\w+)$"
)


class FrontError(RuntimeError):
    """nginx is missing or would not start; the message says what to do."""


@dataclass(frozen=True)
class FrontState:
    """The marker files the supervisor writes and the front reads on each request, in
    ``folder``: ``recovering/<model>`` for each model being brought back (and each
    ensemble that runs it), ``not-ready`` while any is, ``not-live`` once one could not
    be brought back."""

    folder: Path

    @property
    def recovering_folder(self) -> Path:
        return Path(self.folder) / "recovering"

    def reset(self) -> None:
        """No marker: every model serves (a new Triton process)."""
        self.recovering_folder.mkdir(parents=True, exist_ok=True)
        for marker in self.recovering_folder.iterdir():
            marker.unlink(missing_ok=True)
        (Path(self.folder) / "not-ready").unlink(missing_ok=True)
        (Path(self.folder) / "not-live").unlink(missing_ok=True)

    def recovering(self, models: Iterable[str]) -> None:
        """``models`` are being brought back: the front refuses them and says not
        ready. Written before anything else happens to them."""
        self.recovering_folder.mkdir(parents=True, exist_ok=True)
        for model in models:
            (self.recovering_folder / model).touch()
        (Path(self.folder) / "not-ready").touch()

    def recovered(self, models: Iterable[str]) -> None:
        """``models`` serve again; ready (and live) again when no other model is
        recovering."""
        for model in models:
            (self.recovering_folder / model).unlink(missing_ok=True)
        if not any(self.recovering_folder.iterdir()):
            (Path(self.folder) / "not-ready").unlink(missing_ok=True)
            (Path(self.folder) / "not-live").unlink(missing_ok=True)

    def not_live(self, reason: str) -> None:
        """The server cannot bring a model back: liveness fails from now on."""
        (Path(self.folder) / "not-live").write_text(reason + "\n")

    def markers(self) -> list[str]:
        """The models marked recovering, sorted."""
        folder = self.recovering_folder
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@dataclass(frozen=True)
class Tls:
    """A certificate (PEM, may hold the chain) and its private key (PEM)."""

    cert: Path
    key: Path

    def check(self) -> None:
        for what, path in (("certificate", self.cert), ("key", self.key)):
            if not Path(path).is_file():
                raise FrontError(f"TLS {what} {path} is not a file")


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def nginx_config(
    *,
    host: str,
    http_port: int,
    grpc_port: int,
    triton_http: int,
    triton_grpc: int,
    workdir: Path,
    tls: Tls | None = None,
    max_body: int = contract.MAX_REQUEST_BYTES,
    max_inflight: int = MAX_INFLIGHT,
    grpc_max_connection_age_s: int = GRPC_MAX_CONNECTION_AGE_S,
    api_key: str | None = None,
    state: FrontState | None = None,
    log_stdout: bool = False,
) -> str:
    """nginx.conf for the front: ``host:http_port`` -> Triton's HTTP on loopback
    ``triton_http``, ``host:grpc_port`` (HTTP/2) -> Triton's gRPC ``triton_grpc``;
    at most ``max_body`` bytes per request and ``max_inflight`` requests at once; a
    gRPC connection is closed gracefully once it is ``grpc_max_connection_age_s``
    seconds old. With ``api_key``, the restricted APIs need it in
    ``contract.API_KEY_HEADER`` (gRPC: ``contract.GRPC_API_KEY_HEADER``). ``state``
    (default ``workdir/state``) holds the supervisor's markers. ``log_stdout``: nginx's
    errors go to its stderr too (a container's log), besides ``workdir/front.log``."""
    workdir = Path(workdir).resolve()  # nginx reads relative paths from its own prefix
    markers = Path(state.folder if state else workdir / "state").resolve()
    if api_key is not None and not KEY_CHARACTERS.fullmatch(api_key):
        raise FrontError("the API key may hold only letters, digits and . _ ~ + / = : @ ! * , % -")
    limit = _mib(max_body)
    busy = f"{contract.BUSY_MESSAGES[0]} (the limit is {max_inflight}); try again shortly"
    retry_s = contract.RECOVERY_RETRY_S
    recovering = f"{contract.RECOVERING_MESSAGE}; try again in {retry_s} s"
    ssl = " ssl" if tls else ""
    tls_lines = (
        f"    ssl_certificate {Path(tls.cert).resolve()};\n"
        f"    ssl_certificate_key {Path(tls.key).resolve()};\n"
        "    ssl_protocols TLSv1.2 TLSv1.3;\n"
        if tls
        else ""
    )
    http_host = f"[{host}]" if ":" in host else host
    header = "$http_" + contract.MODEL_HEADER.replace("-", "_")
    stderr_log = "error_log stderr warn;\n" if log_stdout else ""
    # (inside nginx's single quotes)
    restricted = f"This API is restricted, expecting header \\'{contract.API_KEY_HEADER}\\'"
    grpc_restricted = f"This API is restricted, expecting header '{contract.GRPC_API_KEY_HEADER}'"
    # The key, compared exactly: map compares plain strings without regard to case, so
    # it is a case-sensitive regular expression with the key's . + * escaped (the only
    # characters of KEY_CHARACTERS that mean something there). No key: nothing is
    # restricted.
    exact = "~^" + re.sub(r"([.+*])", r"\\\1", api_key or "") + "$"
    key_maps = (
        f"  map $http_{contract.API_KEY_HEADER.replace('-', '_')} $http_key_ok {{\n"
        f'    "{exact}" 1;\n    default 0;\n  }}\n'
        f"  map $http_{contract.GRPC_API_KEY_HEADER.replace('-', '_')} $grpc_key_ok {{\n"
        f'    "{exact}" 1;\n    default 0;\n  }}\n'
        if api_key
        else ""
    )
    http_restricted = (
        f'    location ~ "{_RESTRICTED_HTTP}" {{\n'
        f'      if ($http_key_ok = 0) {{ return 403 \'{{"error":"{restricted}"}}\\n\'; }}\n'
        "      proxy_pass http://triton_http;\n    }\n"
        if api_key
        else ""
    )
    grpc_restricted_location = (
        f'    location ~ "{_RESTRICTED_GRPC}" {{\n'
        "      if ($grpc_key_ok = 0) { return 401; }\n"
        "      grpc_pass grpc://triton_grpc;\n"
        "      error_page 401 = @restricted;\n"
        "      error_page 502 504 = @unavailable;\n    }\n"
        if api_key
        else ""
    )
    # Started by root, nginx would run its worker as "nobody", which may not reach the
    # markers (a private temporary folder, a home): the worker runs as the launcher's
    # user, as it does anyway when the launcher is not root.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    return f"""# Written by ensemble/front.py for one run; see its docstring.
daemon off;
{user}worker_processes 1;
# A stopping front finishes the requests in flight for at most this long.
worker_shutdown_timeout {DRAIN_SECONDS}s;
pid {workdir / "nginx.pid"};
error_log {workdir / "front.log"} warn;
{stderr_log}events {{ worker_connections 4096; }}
http {{
  access_log off;
  server_tokens off;
  client_body_temp_path {workdir / "body"};
  proxy_temp_path {workdir / "proxy"};
  fastcgi_temp_path {workdir / "fastcgi"};
  uwsgi_temp_path {workdir / "uwsgi"};
  scgi_temp_path {workdir / "scgi"};
  # The documented limit: checked against Content-Length at once, else as it arrives.
  client_max_body_size {max_body};
  client_body_buffer_size 1m;
  # Client connections are not recycled by request count or idle time; the gRPC
  # server below recycles its connections by age.
  keepalive_requests 1000000;
  keepalive_timeout 1h;
  # Inference requests in flight, both ports together (nginx counts each HTTP/2
  # stream). Health, metadata and the rest stay unlimited: a load balancer's probe is
  # never refused as busy.
  map $server_addr $front {{ default all; }}
  limit_conn_zone $front zone=inflight:1m;
  limit_conn_status 503;
  limit_conn_log_level info;
  # A gRPC request's model, as the client names it; only a plain model name is
  # looked up among the supervisor's markers ({markers}).
  map {header} $grpc_model {{
    "~^{_MODEL_NAME}$" {header};
    default "";
  }}
{key_maps}  upstream triton_http {{ server 127.0.0.1:{triton_http}; keepalive 32; }}
  upstream triton_grpc {{ server 127.0.0.1:{triton_grpc}; keepalive 32; }}

  server {{
    listen {http_host}:{http_port}{ssl};
{tls_lines}    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_request_buffering off;
    proxy_read_timeout 300s;
    proxy_send_timeout 300s;
    location / {{ proxy_pass http://triton_http; }}
{http_restricted}    location ~ ^/v2/models/([^/]+)(/versions/[^/]+)?/infer$ {{
      set $model $1;
      if (-f {markers}/recovering/$model) {{ return 423; }}
      limit_conn inflight {max_inflight};
      proxy_pass http://triton_http;
    }}
    # Triton's own "not ready" is HTTP 400 with no body.
    location ~ ^/v2/models/([^/]+)(/versions/[^/]+)?/ready$ {{
      set $model $1;
      if (-f {markers}/recovering/$model) {{ return 400; }}
      proxy_pass http://triton_http;
    }}
    location = /v2/health/ready {{
      if (-f {markers}/not-ready) {{ return 400; }}
      proxy_pass http://triton_http;
    }}
    location = /v2/health/live {{
      if (-f {markers}/not-live) {{ return 400; }}
      proxy_pass http://triton_http;
    }}
    error_page 423 = @recovering;
    location @recovering {{
      default_type application/json;
      add_header Retry-After {retry_s} always;
      return 503 '{{"error":"model \\'$model\\' {recovering}"}}\\n';
    }}
    error_page 503 = @busy;
    location @busy {{
      default_type application/json;
      add_header Retry-After 1 always;
      return 503 '{{"error":"{busy}"}}\\n';
    }}
    error_page 413 = @too_large;
    location @too_large {{
      default_type application/json;
      return 413 '{{"error":"request larger than the server\\'s limit of {limit}"}}\\n';
    }}
    error_page 502 504 = @unavailable;
    location @unavailable {{
      default_type application/json;
      return 503 '{{"error":"the server is starting or stopping"}}\\n';
    }}
  }}

  server {{
    listen {http_host}:{grpc_port}{ssl} http2;
{tls_lines}    http2_max_concurrent_streams 256;
    # The connection's maximum age. On the first new stream after it, nginx sends
    # GOAWAY (NO_ERROR) naming that stream as the last it takes: it and the streams in
    # flight finish, and the client opens a new connection (re-resolving the name)
    # for the next request. keepalive_timeout would not do: it closes idle
    # connections only, and a busy channel is never idle.
    keepalive_time {grpc_max_connection_age_s}s;
    grpc_read_timeout 300s;
    grpc_send_timeout 300s;
    location / {{
      grpc_pass grpc://triton_grpc;
      error_page 413 = @too_large;
      error_page 502 504 = @unavailable;
    }}
{grpc_restricted_location}    location ~ ^/inference\\.GRPCInferenceService/Model(Stream)?Infer$ {{
      if (-f {markers}/recovering/$grpc_model) {{ return 423; }}
      limit_conn inflight {max_inflight};
      grpc_pass grpc://triton_grpc;
      error_page 413 = @too_large;
      error_page 502 504 = @unavailable;
      error_page 503 = @busy;
      error_page 423 = @recovering;
    }}
    location = /inference.GRPCInferenceService/ServerReady {{
      if (-f {markers}/not-ready) {{ return 423; }}
      grpc_pass grpc://triton_grpc;
      error_page 423 = @not_ready;
      error_page 502 504 = @unavailable;
    }}
    # gRPC errors travel as trailers-only responses with a grpc-status.
    location @too_large {{
      default_type application/grpc;
      add_header grpc-status 8 always;  # RESOURCE_EXHAUSTED
      add_header grpc-message "request larger than the server's limit of {limit}" always;
      return 204;
    }}
    location @busy {{
      default_type application/grpc;
      add_header grpc-status 14 always;  # UNAVAILABLE
      add_header grpc-message "{busy}" always;
      return 204;
    }}
    location @recovering {{
      default_type application/grpc;
      add_header grpc-status 14 always;  # UNAVAILABLE
      add_header grpc-message "model '$grpc_model' {recovering}" always;
      add_header grpc-retry-pushback-ms {retry_s * 1000} always;
      return 204;
    }}
    location @not_ready {{
      default_type application/grpc;
      add_header grpc-status 14 always;  # UNAVAILABLE
      add_header grpc-message "not ready: a model {recovering}" always;
      return 204;
    }}
    location @restricted {{
      default_type application/grpc;
      add_header grpc-status 7 always;  # PERMISSION_DENIED
      add_header grpc-message "{grpc_restricted}" always;
      return 204;
    }}
    location @unavailable {{
      default_type application/grpc;
      add_header grpc-status 14 always;  # UNAVAILABLE
      add_header grpc-message "the server is starting or stopping" always;
      return 204;
    }}
  }}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
    )
    if not found:
        raise FrontError("nginx is not installed (the server's front): run `make setup`")
    return found


@dataclass
class Front:
    """The nginx process of one server run."""

    config: str
    workdir: Path
    process: subprocess.Popen | None = None
    log_stdout: bool = False  # nginx's own messages go to the launcher's stderr too

    @property
    def log_path(self) -> Path:
        return self.workdir / "front.log"

    def start(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nginx.conf"
        # It may hold the restricted APIs' key: only this user reads it.
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.config)
        os.chmod(conf, 0o600)  # an older file kept its mode
        nginx = nginx_binary()
        test = subprocess.run(
            [nginx, "-t", "-q", "-c", str(conf), "-e", str(self.log_path)],
            capture_output=True, text=True,
        )  # fmt: skip
        if test.returncode != 0:
            raise FrontError(f"nginx refused its config {conf}: {test.stderr.strip()}")
        self.process = subprocess.Popen(
            [nginx, "-c", str(conf), "-e", str(self.log_path)],
            stdout=subprocess.DEVNULL, stderr=sys.stderr if self.log_stdout else subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = DRAIN_SECONDS + 5) -> None:
        """Stop taking new requests, finish those in flight (SIGQUIT), then exit."""
        if not self.alive():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            kill_group(self.process)  # its workers too
