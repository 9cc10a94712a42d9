"""The errors this client raises, and the translation of tritonclient's into them.

Every error is a ``DetectorError``; ``str()`` of one is one line meant for people (a
server's reason can be a whole Python traceback: ``reason`` keeps it for logs).

    DetectorError                  (a bad CA file, an annotated frame that is no JPEG)
    ├── ServerUnavailable          nothing answers at any endpoint, or no TLS connection
    ├── ServerBusy                 the server's queues stayed full through every retry
    ├── ApiKeyRequired             a restricted API, and no key or a refused one
    ├── ModelNotReady              the model is unknown or failed to load
    ├── RequestTooLarge            over contract.MAX_REQUEST_BYTES, here or at the server *
    ├── InvalidImage               the server refused an image's bytes *
    │   └── ImageNotReadable       a local file could not be read: nothing was sent *
    ├── InferenceFailed            any other failure of a request (timeout, bad reply) *
    ├── VideoNotReadable           a file that is not a video, or a damaged stream
    └── ClipTooLong                a clip over its frame limit

``*``: it concerns the images of one request, which ``DetectorClient.iter_detect`` hands
back as that image's outcome while the other images go on; the others concern the
whole server, model or clip and are raised.

``map_server_error`` turns tritonclient's ``InferenceServerException`` (gRPC, or HTTP
where a status code says the same) into the matching error; ``is_busy``,
``is_recovering``, ``is_worker_death`` and ``is_unreachable`` tell the refusals worth
sending again (``client.retry``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc

from client.environment import API_KEY_ENV, TLS_CA_ENV
from ensemble.contract import (
    BUSY_MESSAGES,
    MAX_REQUEST_BYTES,
    RECOVERING_MESSAGE,
    WORKER_DIED_MESSAGE,
)

if TYPE_CHECKING:
    from tritonclient.utils import InferenceServerException

SERVE_COMMAND = "make serve"  # what a user runs to start the server

_UNAVAILABLE = str(grpc.StatusCode.UNAVAILABLE)
_NOT_FOUND = str(grpc.StatusCode.NOT_FOUND)
_INVALID_ARGUMENT = str(grpc.StatusCode.INVALID_ARGUMENT)
_DEADLINE_EXCEEDED = str(grpc.StatusCode.DEADLINE_EXCEEDED)
_RESOURCE_EXHAUSTED = str(grpc.StatusCode.RESOURCE_EXHAUSTED)
# The same refusals over HTTP (tritonclient.http puts the status code in status()).
_HTTP_BUSY = ("503", "429")
_HTTP_TOO_LARGE = "413"

# The server's refusal of a restricted call without the right key, gRPC ("This API is
# restricted, ...": PERMISSION_DENIED from the front, UNAVAILABLE from a bare Triton)
# and HTTP (403); the same words whether the key is missing or wrong.
_RESTRICTED = "is restricted, expecting header"


def first_line(text: str) -> str:
    """The first non-blank line: server reasons can carry whole Python tracebacks."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


class DetectorError(Exception):
    """Base of every error this client raises; ``str()`` is one line meant for people."""


class ServerUnavailable(DetectorError):
    """Nothing answers at the server address, or no TLS connection could be made.

    With several endpoints: none of them answered through every round of the client's
    ``FailoverPolicy``. ``endpoints`` are those tried, in the order first tried,
    ``attempts`` the tries in all, ``url`` the last endpoint tried and ``reason`` what
    gRPC said of it.
    """

    def __init__(
        self, url: str, reason: str = "", *, endpoints: Sequence[str] = (), attempts: int = 1
    ):
        self.url = url
        self.reason = reason  # gRPC's own words, for logs; left out of the message
        self.endpoints = tuple(endpoints) or (url,)
        self.attempts = attempts
        message = self.describe(url, reason)
        if len(self.endpoints) > 1:
            message = (
                f"none of the Triton servers at {', '.join(self.endpoints)} is reachable "
                f"({attempts} tries); the last: {message}"
            )
        super().__init__(message)

    @staticmethod
    def describe(url: str, reason: str) -> str:
        # gRPC says "UNAVAILABLE" for a refused connection and a failed TLS handshake
        # alike; its details tell them apart (words of grpcio 1.x's BoringSSL).
        if "WRONG_VERSION_NUMBER" in reason:
            return (
                f"Triton server at {url} does not speak TLS: connect without it "
                f"(no --tls-ca, ${TLS_CA_ENV} unset)"
            )
        if "CERTIFICATE_VERIFY_FAILED" in reason or "Peer name" in reason:
            return (
                f"Triton server at {url} presented a TLS certificate this client does not "
                f"trust for that address: pass the CA that signed it (--tls-ca FILE or "
                f"${TLS_CA_ENV})"
            )
        if "handshake failed" in reason.lower():
            return f"TLS handshake with the Triton server at {url} failed ({first_line(reason)})"
        if "Socket closed" in reason:
            return (
                f"Triton server at {url} closed the connection: if it expects TLS, pass "
                f"its CA certificate (--tls-ca FILE or ${TLS_CA_ENV})"
            )
        return (
            f"Triton server at {url} is not reachable: is it running? "
            f"start it with `{SERVE_COMMAND}`"
        )


class ServerBusy(DetectorError):
    """The server refused a request because its queue was full, every time it was tried.

    A busy server is up and well: the same request later, or fewer at once, succeeds.
    """

    def __init__(self, url: str, model: str | None = None, attempts: int = 1, reason: str = ""):
        self.url = url
        self.model = model
        self.attempts = attempts  # how many times the request was sent
        self.reason = reason
        what = f"the request to {model!r}" if model else "the request"
        times = "once" if attempts == 1 else f"{attempts} times"
        # what happened, without the server's address: the CLI's and UI's own line
        self.detail = f"{what} was refused {times} (server said: {first_line(reason)})"
        super().__init__(f"Triton server at {url} is busy: {self.detail}")


class RequestTooLarge(DetectorError):
    """A request over the server's size limit (``contract.MAX_REQUEST_BYTES``).

    Raised before sending when the client's estimate is over the limit (``size`` is
    that estimate, in bytes), or when the server refused the request as too large
    (``size`` is None then). Concerns the images of that request only.
    """

    def __init__(
        self,
        size: int | None,
        limit: int = MAX_REQUEST_BYTES,
        source: str | None = None,
        index: int | None = None,
        reason: str = "",
    ):
        self.size = size  # bytes
        self.limit = limit  # bytes
        self.source = source
        self.index = index
        self.reason = reason
        super().__init__(self.describe(source, size, limit, reason))

    @staticmethod
    def describe(source: str | None, size: int | None, limit: int, reason: str = "") -> str:
        what = source or "the request"
        if size is None:  # refused by the server, or by gRPC's own send limit
            return (
                f"too large: {what} was refused as over the size limit of {_mib(limit)} "
                f"({first_line(reason)})"
            )
        have, most = _mib(size), _mib(limit)
        if have == most:  # just over: rounded, the two would read the same
            have, most = f"{size:,} bytes", f"{limit:,} bytes"
        return f"too large to send: {what} makes a request of {have}, over the limit of {most}"


def _mib(n: int) -> str:
    """``67108864`` -> ``"64 MiB"``, ``1572864`` -> ``"1.5 MiB"``."""
    return f"{n / 2**20:.1f}".removesuffix(".0") + " MiB"


class ApiKeyRequired(DetectorError):
    """The server restricts this call to holders of its API key, and the request had no
    key or a key it refused (Triton does not say which)."""

    def __init__(self, url: str, reason: str = "", key_given: bool = False):
        self.url = url
        self.reason = reason
        self.key_given = key_given
        how = f"--api-key-file FILE or ${API_KEY_ENV}"
        if key_given:
            text = f"refused the API key given: pass the key it was started with ({how})"
        else:
            text = f"restricts this call to holders of its API key: pass the key ({how})"
        super().__init__(f"Triton server at {url} {text}")


class ModelNotReady(DetectorError):
    """The server answers but the model is unknown or failed to load."""

    def __init__(self, model: str, url: str, reason: str = ""):
        self.model = model
        self.url = url
        self.reason = reason
        detail = f" (server said: {first_line(reason)})" if reason else ""
        super().__init__(f"model {model!r} is not ready on the Triton server at {url}{detail}")


class InvalidImage(DetectorError):
    """The server rejected one image (it could not decode it, or it is too large)."""

    def __init__(self, source: str, reason: str, index: int | None = None):
        self.source = source  # file name, or "image #3" for bytes
        self.reason = reason
        self.index = index  # position in the sequence passed to detect()
        super().__init__(self.describe(source, reason))

    @staticmethod
    def describe(source: str, reason: str) -> str:
        return f"not an image: {source} (server said: {first_line(reason)})"


class ImageNotReadable(InvalidImage):
    """A local file could not be read (missing, unreadable, empty), so nothing was sent."""

    @staticmethod
    def describe(source: str, reason: str) -> str:
        return f"cannot read {source}: {reason}"


class InferenceFailed(DetectorError):
    """Any other failure of an inference request (server error, timeout, bad reply)."""

    def __init__(self, message: str, source: str | None = None, index: int | None = None):
        self.source = source
        self.index = index
        super().__init__(f"{source}: {message}" if source else message)


class VideoNotReadable(DetectorError):
    """A file that is not a video, or whose stream is damaged."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"not a readable video: {source} ({reason})")


class ClipTooLong(DetectorError):
    """A clip over the frame limit."""

    def __init__(self, source: str, frames: int, limit: int):
        self.source = source
        self.frames = frames
        self.limit = limit
        super().__init__(
            f"clip too long: {source} has {'more than ' if frames > limit else ''}"
            f"{frames} frames, the limit is {limit}; cut it shorter"
        )


def is_busy(exc: InferenceServerException) -> bool:
    """Whether ``exc`` is a busy server's refusal (full queue, queue wait over), which is
    worth retrying later: gRPC UNAVAILABLE or HTTP 503 with one of
    ``contract.BUSY_MESSAGES``, or HTTP 429. A plain UNAVAILABLE is a dead connection."""
    status = exc.status() or ""
    if status == "429":
        return True
    reason = exc.message() or str(exc)
    return status in (_UNAVAILABLE, *_HTTP_BUSY) and any(m in reason for m in BUSY_MESSAGES)


def is_recovering(exc: InferenceServerException) -> bool:
    """Whether ``exc`` says that the model is being reloaded after one of its workers
    died (gRPC UNAVAILABLE or HTTP 503 with ``contract.RECOVERING_MESSAGE``): the same
    request succeeds once it is back, seconds later."""
    reason = exc.message() or str(exc)
    return (exc.status() or "") in (_UNAVAILABLE, "503") and RECOVERING_MESSAGE in reason


def is_worker_death(exc: InferenceServerException) -> bool:
    """Whether ``exc`` is Triton's answer to a request that reached a worker that had
    just died ("Stub process '<instance>' is not healthy", gRPC INTERNAL or HTTP 500/
    400): the server is bringing the model back, or the request itself killed it."""
    reason = exc.message() or str(exc)
    return WORKER_DIED_MESSAGE in reason and "is not healthy" in reason


def is_unreachable(exc: InferenceServerException) -> bool:
    """Whether ``exc`` says that nothing answered at the endpoint (gRPC UNAVAILABLE that
    is neither a busy refusal, see ``is_busy``, nor a model being reloaded, see
    ``is_recovering``, nor a refused API key): worth sending the same request to
    another endpoint."""
    reason = exc.message() or str(exc)
    return (
        exc.status() == _UNAVAILABLE
        and not is_busy(exc)
        and not is_recovering(exc)
        and _RESTRICTED not in reason
    )


def map_server_error(
    exc: InferenceServerException,
    *,
    url: str,
    model: str | None = None,
    source: str | None = None,
    index: int | None = None,
    attempts: int = 1,
    api_key_given: bool = False,
) -> DetectorError:
    """Translate tritonclient's exception (gRPC or HTTP) into the matching ``DetectorError``.

    ``model`` is the model the call was about; ``source``/``index`` name the image when
    the request carried exactly one, so an INVALID_ARGUMENT can be blamed on it.
    ``attempts`` is how many times the request was sent (for ``ServerBusy``);
    ``api_key_given`` whether it carried an API key (for ``ApiKeyRequired``).
    """
    status = exc.status() or ""
    reason = exc.message() or str(exc)
    line = first_line(reason)
    if _RESTRICTED in reason:  # before UNAVAILABLE: Triton's gRPC refuses with that status
        return ApiKeyRequired(url, reason, api_key_given)
    if is_busy(exc):
        return ServerBusy(url, model, attempts, reason)
    if is_recovering(exc):
        return ModelNotReady(model or "the model", url, reason)
    if status == _RESOURCE_EXHAUSTED and "Received message" in reason:
        # grpc's own refusal of a reply over MAX_RECEIVE_MESSAGE_BYTES: not the request
        return InferenceFailed(f"the reply of {model or 'the server'} is too large ({line})")
    if status in (_RESOURCE_EXHAUSTED, _HTTP_TOO_LARGE):
        return RequestTooLarge(None, MAX_REQUEST_BYTES, source, index, reason)
    if status == _UNAVAILABLE:
        return ServerUnavailable(url, reason)
    if status == _NOT_FOUND and model is not None:
        return ModelNotReady(model, url, reason)
    if status == _DEADLINE_EXCEEDED:
        what = f"request to {model!r}" if model else "request"
        return InferenceFailed(f"{what} timed out ({line})", source, index)
    # The client always builds well-formed tensors, so INVALID_ARGUMENT on a request
    # that carried one image means the server refused that image's bytes.
    if status == _INVALID_ARGUMENT and source is not None:
        return InvalidImage(source, reason, index)
    prefix = f"inference on {model!r} failed" if model else "request failed"
    return InferenceFailed(f"{prefix}: [{status or 'no status'}] {line}", source, index)
