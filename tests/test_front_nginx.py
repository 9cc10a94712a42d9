"""The front's nginx configuration (``ensemble.front``) as the real nginx reads it, with
and without TLS; skipped where nginx or openssl is not installed."""

from __future__ import annotations

import http.server
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ensemble.contract import API_KEY_HEADER, RECOVERING_MESSAGE, RECOVERY_RETRY_S
from ensemble.front import Front, FrontError, FrontState, Tls, nginx_config
from ensemble.processes import free_port
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


@pytest.fixture
def front(tmp_path: Path):
    """The real nginx with the front's config, a key and markers, in front of a plain
    HTTP server that answers 200 "triton" to everything (standing in for Triton's HTTP
    port: these tests are about what the front lets through). Yields (base URL, state)."""
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    state = FrontState(tmp_path / "state")
    state.reset()
    http_port = free_port()
    config = nginx_config(
        host="127.0.0.1", http_port=http_port, grpc_port=free_port(),
        triton_http=upstream.server_address[1], triton_grpc=free_port(),
        workdir=tmp_path, api_key="Secret.Key+1", state=state,
    )  # fmt: skip
    process = Front(config, tmp_path)
    process.start()
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 10
    while _get(url, "/v2/health/live")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield url, state
    finally:
        process.stop(timeout=5)
        upstream.shutdown()


class _Upstream(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "6")
        self.end_headers()
        self.wfile.write(b"triton")

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def _get(url: str, path: str, key: str | None = None, post: bool = False):
    """(status, body, Retry-After) of one request through the front."""
    headers = {API_KEY_HEADER: key} if key is not None else {}
    request = urllib.request.Request(url + path, data=b"{}" if post else None, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read().decode(), r.headers.get("Retry-After")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers.get("Retry-After")
    except OSError:
        return 0, "", None


def test_the_front_checks_the_key_exactly_and_only_for_the_restricted_apis(front):
    url, _ = front
    for path in ("/v2/repository/index", "/v2/models/stats", "/v2/models/m/versions/1/stats",
                 "/v2/logging", "/v2/trace/setting", "/v2/models/m/trace/setting",
                 "/v2/systemsharedmemory/status"):  # fmt: skip
        for key in (None, "wrong", "secret.key+1", "SecretXKey+1", "Secret.Key+11"):
            status, body, _ = _get(url, path, key, post=True)
            assert status == 403 and "restricted" in body, (path, key)
        assert _get(url, path, "Secret.Key+1", post=True)[:2] == (200, "triton"), path
    for open_path in ("/v2/health/ready", "/v2/models/m", "/v2/models/m/config", "/v2"):
        assert _get(url, open_path)[:2] == (200, "triton"), open_path
    assert _get(url, "/v2/models/m/infer", post=True)[:2] == (200, "triton")


def test_a_model_marked_recovering_is_refused_with_a_hint_and_readiness_follows(front):
    url, state = front
    state.recovering(["detect_a", "step_a"])
    status, body, retry_after = _get(url, "/v2/models/detect_a/infer", post=True)
    assert status == 503 and retry_after == str(RECOVERY_RETRY_S)
    assert f"model 'detect_a' {RECOVERING_MESSAGE}" in body
    assert _get(url, "/v2/models/detect_a/versions/1/infer", post=True)[0] == 503
    assert _get(url, "/v2/models/detect_b/infer", post=True)[:2] == (200, "triton")
    assert _get(url, "/v2/models/step_a/ready")[0] == 400
    assert _get(url, "/v2/models/detect_b/ready")[0] == 200
    assert _get(url, "/v2/health/ready")[0] == 400
    assert _get(url, "/v2/health/live")[0] == 200  # recovering is not dead
    state.not_live("model 'step_a': 5 reloads failed")
    assert _get(url, "/v2/health/live")[0] == 400
    state.recovered(["detect_a", "step_a"])
    assert _get(url, "/v2/models/detect_a/infer", post=True)[:2] == (200, "triton")
    assert [_get(url, p)[0] for p in ("/v2/health/ready", "/v2/health/live")] == [200, 200]


def test_a_key_nginx_would_misread_is_refused(tmp_path: Path):
    for key in ('a"b', "a b", "a;b", "a$b", "a{b"):
        with pytest.raises(FrontError, match="API key may hold only"):
            front_config(tmp_path, api_key=key)
