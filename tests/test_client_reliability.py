"""The client's side of a loaded or guarded server: busy retries, the request size limit,
TLS and the API key (no server: pure parts, real sockets on unused ports, real openssl).

The refusals are tritonclient's exceptions shaped as tritonclient builds them from a
gRPC error (status ``str(grpc.StatusCode.X)``) or an HTTP reply (status ``"503"``), with
the words Triton 2.51 and grpcio answer with.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from tritonclient.grpc import InferRequestedOutput
from tritonclient.grpc._utils import _get_inference_request
from tritonclient.utils import InferenceServerException

from client import cli, connection, environment, errors, payload
from client.api import DetectorClient
from client.errors import (
    ApiKeyRequired,
    DetectorError,
    ImageNotReadable,
    InferenceFailed,
    InvalidImage,
    RequestTooLarge,
    ServerBusy,
    ServerUnavailable,
)
from client.payload import DetectOptions
from client.results import DetectorInfo, ImageResult, ModelInfo
from client.retry import run_isolating
from ensemble.contract import BUSY_MESSAGES, COCO80_LABELS, DETECT_ALL, MAX_REQUEST_BYTES
from ensemble.processes import free_port
from tests.tls import make_self_signed

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[1]
URL = "h:8001"
PNG_HEAD = b"\x89PNG\r\n\x1a\n"
# What grpcio says when nothing listens, and Triton when a queue is full.
REFUSED = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
    "Failed to connect to remote host: Connection refused"
)

QUEUE_FULL = "Exceeds maximum queue size"


def grpc_error(code: grpc.StatusCode, msg: str) -> InferenceServerException:
    # as tritonclient.grpc builds it from a grpc.RpcError
    return InferenceServerException(msg=msg, status=str(code), debug_details="")


def http_error(status: int, msg: str) -> InferenceServerException:
    # as tritonclient.http builds it from a reply: the status code, the body's "error"
    return InferenceServerException(msg=msg, status=str(status))


def busy() -> InferenceServerException:
    return grpc_error(grpc.StatusCode.UNAVAILABLE, QUEUE_FULL)


# --- mapping refusals ------------------------------------------------------------------


@pytest.mark.parametrize("words", BUSY_MESSAGES)
@pytest.mark.parametrize(
    "make",
    [
        lambda m: grpc_error(grpc.StatusCode.UNAVAILABLE, m),
        lambda m: http_error(503, m),
        lambda m: http_error(429, m),
    ],
    ids=["grpc-unavailable", "http-503", "http-429"],
)
def test_busy_messages_map_to_server_busy(make, words):
    error = errors.map_server_error(make(f"{words} for model 'detect_all'"), url=URL, attempts=4)
    assert isinstance(error, ServerBusy)
    assert "is busy" in str(error) and "4 times" in str(error)


def test_unavailable_without_busy_words_is_an_unreachable_server():
    error = errors.map_server_error(grpc_error(grpc.StatusCode.UNAVAILABLE, REFUSED), url=URL)
    assert type(error) is ServerUnavailable
    assert str(error) == (
        f"Triton server at {URL} is not reachable: is it running? "
        f"start it with `{errors.SERVE_COMMAND}`"
    )


def test_restricted_api_refusals_ask_for_the_api_key():
    # Triton 2.51's own refusals: gRPC (UNAVAILABLE, the prefixed header) and HTTP (403)
    grpc_refusal = grpc_error(
        grpc.StatusCode.UNAVAILABLE,
        "This protocol is restricted, expecting header 'triton-grpc-protocol-triton-api-key'",
    )
    http_refusal = http_error(403, "This API is restricted, expecting header 'triton-api-key'")
    for refusal in (grpc_refusal, http_refusal):
        error = errors.map_server_error(refusal, url=URL)
        assert isinstance(error, ApiKeyRequired) and not isinstance(error, ServerUnavailable)
        assert "API key" in str(error)
        assert environment.API_KEY_ENV in str(error) and "--api-key-file" in str(error)
    wrong = errors.map_server_error(grpc_refusal, url=URL, api_key_given=True)
    assert "refused the API key given" in str(wrong)


def test_size_refusals_map_to_request_too_large_for_that_image():
    for refusal in (
        grpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "request larger than 64 MiB"),
        http_error(413, "request larger than 64 MiB"),
    ):
        error = errors.map_server_error(refusal, url=URL, source="big.jpg", index=2)
        assert isinstance(error, RequestTooLarge)
        assert (error.source, error.index, error.size) == ("big.jpg", 2, None)
        assert str(error).startswith("too large: big.jpg was refused")
    reply = grpc_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (9 vs. 8)"
    )
    assert isinstance(errors.map_server_error(reply, url=URL), InferenceFailed)


@pytest.mark.parametrize(
    "detail, words",
    [
        (
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Tls "
            "handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1000007d:SSL "
            "routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: self signed certificate: OK",
            "does not trust",
        ),
        (
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Tls "
            "handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:100000f7:SSL "
            "routines:OPENSSL_internal:WRONG_VERSION_NUMBER: Invalid certificate verification "
            "context: OK",
            "does not speak TLS",
        ),
        (
            "failed to connect to all addresses; last error: UNAVAILABLE: "
            "ipv4:127.0.0.1:1: Socket closed",
            "if it expects TLS",
        ),
    ],
    ids=["untrusted-certificate", "tls-to-plain", "plain-to-tls"],
)
def test_tls_failures_say_what_to_change(detail, words):
    # grpcio's words for each mistake, as seen against a real Triton with --grpc-use-ssl
    error = errors.map_server_error(grpc_error(grpc.StatusCode.UNAVAILABLE, detail), url=URL)
    assert isinstance(error, ServerUnavailable)
    assert words in str(error) and "\n" not in str(error)


# --- request size ----------------------------------------------------------------------


def test_a_request_over_the_limit_is_refused_before_any_connection():
    big = PNG_HEAD + bytes(MAX_REQUEST_BYTES)
    # Nothing listens there: reaching the network would raise ServerUnavailable.
    with (
        DetectorClient(f"127.0.0.1:{free_port()}") as client,
        pytest.raises(RequestTooLarge) as raised,
    ):
        client.detect([big])
    error = raised.value
    assert error.size == payload.request_bytes([len(big)]) and error.limit == MAX_REQUEST_BYTES
    assert error.index == 0
    assert str(error) == (
        f"too large to send: image #0 makes a request of {error.size:,} bytes, "
        f"over the limit of {MAX_REQUEST_BYTES:,} bytes"
    )


def test_each_image_too_large_fails_alone_without_a_connection(tmp_path):
    big = PNG_HEAD + bytes(MAX_REQUEST_BYTES + 2**20)
    with DetectorClient(f"127.0.0.1:{free_port()}") as client:
        [outcomes] = list(client.iter_detect([big, tmp_path / "missing.png", big]))
    assert [type(o) for o in outcomes] == [RequestTooLarge, ImageNotReadable, RequestTooLarge]
    assert [o.index for o in outcomes] == [0, 1, 2]
    assert str(outcomes[2]) == (
        "too large to send: image #2 makes a request of 65 MiB, over the limit of 64 MiB"
    )


def test_images_are_packed_into_requests_that_fit():
    mib = 2**20
    assert payload.pack_requests([10 * mib] * 8) == [[0, 1, 2, 3, 4, 5], [6, 7]]
    assert payload.pack_requests([mib, MAX_REQUEST_BYTES, mib, mib]) == [[0], [1], [2, 3]]
    assert payload.pack_requests([]) == []
    for group in payload.pack_requests([20 * mib, 30 * mib, 10 * mib, 5 * mib, 40 * mib]):
        sizes = [[20, 30, 10, 5, 40][i] * mib for i in group]
        assert payload.request_bytes(sizes) <= MAX_REQUEST_BYTES


def test_a_batch_refused_as_too_large_is_sent_image_by_image():
    calls: list[list[int]] = []

    def run(ids: list[int]) -> list[ImageResult]:
        calls.append(list(ids))
        if 1 in ids:
            raise RequestTooLarge(None, source=f"img{ids[0]}" if len(ids) == 1 else None)
        return [ImageResult([], b"", source=f"img{i}") for i in ids]

    outcomes = run_isolating([0, 1, 2], run)
    assert calls == [[0, 1, 2], [0], [1], [2]]
    assert isinstance(outcomes[1], RequestTooLarge) and outcomes[1].source == "img1"
    assert [outcomes[i].source for i in (0, 2)] == ["img0", "img2"]


def test_a_server_busy_during_the_retries_is_raised_not_blamed_on_images():
    def run(ids: list[int]) -> list[ImageResult]:
        if len(ids) > 1:
            raise InvalidImage("batch", "bad")
        raise ServerBusy(URL, DETECT_ALL, 4, QUEUE_FULL)

    with pytest.raises(ServerBusy):
        run_isolating([0, 1], run)


def test_the_size_estimate_bounds_the_real_request():
    # detect_all with many long-named detectors: the most output names a request lists
    detectors = tuple(
        DetectorInfo(f"detector_with_a_long_name_{i:02d}", "t", "onnx") for i in range(30)
    )
    info = ModelInfo(DETECT_ALL, "t", COCO80_LABELS, detectors, ())
    outputs = [InferRequestedOutput(n) for n in payload.output_names(info)]
    for sizes in ([1], [100_000] * 8, [5_000_000, 17, 3_000]):
        images = [bytes(n) for n in sizes]
        inputs = payload.build_inputs(images, DetectOptions(score_threshold=0.3, iou_threshold=0.5))
        request = _get_inference_request(
            DETECT_ALL, inputs, "", "", outputs, 0, False, False, 0, None, None
        )
        body = request.ByteSize() + connection.GRPC_FRAME_HEADER_BYTES  # what the server counts
        estimate = payload.request_bytes(sizes)
        assert body <= estimate <= body + payload.REQUEST_OVERHEAD_BYTES + 64 * len(sizes)


def test_the_channel_sends_at_most_what_the_server_reads():
    args = dict(connection.channel_args())
    sent = args["grpc.max_send_message_length"] + connection.GRPC_FRAME_HEADER_BYTES
    assert sent == MAX_REQUEST_BYTES
    assert args["grpc.max_receive_message_length"] > MAX_REQUEST_BYTES  # replies are larger
    assert "grpc.keepalive_time_ms" in args  # tritonclient's defaults kept


# --- TLS and the API key ---------------------------------------------------------------


def test_tls_and_api_key_come_from_the_environment_unless_given(monkeypatch, tmp_path):
    monkeypatch.delenv(environment.TLS_CA_ENV, raising=False)
    monkeypatch.delenv(environment.API_KEY_ENV, raising=False)
    assert connection.resolve_tls() is False and connection.resolve_api_key() is None

    monkeypatch.setenv(environment.TLS_CA_ENV, str(tmp_path / "ca.pem"))
    monkeypatch.setenv(environment.API_KEY_ENV, "  s3cret\n")
    assert connection.resolve_tls() == tmp_path / "ca.pem"
    assert connection.resolve_tls(False) is False and connection.resolve_tls(True) is True
    assert connection.resolve_api_key() == "s3cret"
    assert connection.resolve_api_key("") is None and connection.resolve_api_key("other") == "other"


def test_the_api_key_goes_in_the_header_triton_checks_on_grpc():
    headers = connection.api_key_headers("s3cret")
    assert headers == {"triton-grpc-protocol-triton-api-key": "s3cret", "triton-api-key": "s3cret"}
    assert connection.api_key_headers(None) is None


def test_a_ca_file_is_read_when_the_client_is_made(tmp_path):
    with pytest.raises(DetectorError, match="cannot read the TLS CA file .*missing.pem"):
        DetectorClient("127.0.0.1:1", tls=tmp_path / "missing.pem")
    (tmp_path / "notes.txt").write_text("not a certificate")
    with pytest.raises(DetectorError, match="holds no PEM certificate"):
        DetectorClient("127.0.0.1:1", tls=tmp_path / "notes.txt")
    cert, _ = make_self_signed(tmp_path / "tls")
    with DetectorClient("127.0.0.1:1", tls=str(cert)) as client:
        assert client.tls == cert


def test_make_self_signed_writes_a_certificate_and_key_openssl_reads(tmp_path):
    cert, key = make_self_signed(tmp_path)

    def openssl(*args: str) -> str:
        return subprocess.run(
            ["openssl", *args], check=True, capture_output=True, text=True, timeout=30
        ).stdout

    text = openssl("x509", "-in", str(cert), "-noout", "-text")
    assert "CN = localhost" in text or "CN=localhost" in text
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    assert "CA:TRUE" in text
    openssl("pkey", "-in", str(key), "-check", "-noout")
    # the key is the certificate's
    assert openssl("x509", "-in", str(cert), "-noout", "-pubkey") == openssl(
        "pkey", "-in", str(key), "-pubout"
    )
    assert key.stat().st_mode & 0o777 == 0o600
    grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())  # grpc takes it too


# --- the CLI and the page --------------------------------------------------------------


class BusyClient:
    """Stands in for DetectorClient: every batch finds the server busy."""

    def __init__(self, url=None, **options):
        self.url = url or URL

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass

    def iter_detect(self, images, *args, **kwargs):
        raise ServerBusy(self.url, DETECT_ALL, 4, QUEUE_FULL)
        yield  # a generator, as the real one


def _png(tmp_path: Path, size: int = 32) -> Path:
    image = tmp_path / "astronaut.png"
    image.write_bytes(PNG_HEAD + bytes(size))
    return image


def test_cli_says_the_server_is_busy_and_exits_with_its_own_code(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "DetectorClient", BusyClient)
    code = cli.main([str(_png(tmp_path)), "--out", str(tmp_path / "out")])
    assert code == cli.EXIT_BUSY
    assert code not in (cli.EXIT_OK, cli.EXIT_SKIPPED, cli.EXIT_USAGE, cli.EXIT_UNAVAILABLE)
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"detect: server busy: the request to 'detect_all' was refused 4 times "
        f"(server said: {QUEUE_FULL}); try again later or lower the concurrency"
    )
    assert f"{cli.EXIT_BUSY} server busy" in cli.build_parser().format_help()


def test_cli_skips_an_image_too_large_to_send_without_a_connection(tmp_path):
    image = _png(tmp_path, MAX_REQUEST_BYTES)
    proc = subprocess.run(
        [sys.executable, "-m", "client", str(image), "--url", f"127.0.0.1:{free_port()}",
         "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == cli.EXIT_SKIPPED
    assert proc.stderr.strip().splitlines() == [
        f"too large to send: {image} makes a request of "
        f"{payload.request_bytes([image.stat().st_size]):,} bytes, "
        f"over the limit of {MAX_REQUEST_BYTES:,} bytes"
    ]


@pytest.mark.parametrize(
    "option, content, words",
    [
        ("--api-key-file", None, "cannot read the API key file"),
        ("--api-key-file", " \n", "is empty"),
        ("--tls-ca", None, "cannot read the TLS CA file"),
        ("--tls-ca", "not a certificate", "holds no PEM certificate"),
    ],
)
def test_cli_refuses_unusable_key_and_ca_files(tmp_path, capsys, option, content, words):
    named = tmp_path / "file"
    if content is not None:
        named.write_text(content)
    code = cli.main([str(_png(tmp_path)), option, str(named), "--url", "127.0.0.1:1"])
    assert code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("detect: ") and words in err and str(named) in err


def test_cli_reads_the_api_key_file_stripped(tmp_path):
    (tmp_path / "key").write_text("  s3cret\n")
    assert cli.read_api_key(tmp_path / "key") == "s3cret"


def test_the_page_says_plainly_that_the_server_is_busy():
    from ui import photos

    busy_error = ServerBusy(URL, DETECT_ALL, 4, QUEUE_FULL)
    assert photos.error_message(busy_error, "photo.png") == (
        "The server is busy right now; try again in a moment."
    )
    too_large = RequestTooLarge(70 * 2**20, source="image #0", index=0)
    assert photos.error_message(too_large, "photo.png") == (
        "too large to send: photo.png makes a request of 70 MiB, over the limit of 64 MiB"
    )
