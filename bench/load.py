"""The one closed-loop load generator, and the one latency summary.

``concurrency`` threads, each with a connection of its own, send one request at a time,
the next as soon as the last is answered. Request number k, counted over every thread,
goes to ``targets[k % len(targets)]`` (the models; for the old design's HTTP server its
URL) with the photo ``photos[(k // len(targets)) % len(photos)]``, so that every photo
goes through every target in turn. The load stops at ``duration_s`` seconds, after
``requests`` requests or at :meth:`Load.stop`, whichever comes first, and records each
request (:class:`Request`) as one of :data:`OUTCOMES`:

- answered: a result;
- refused: gRPC UNAVAILABLE carrying one of ``contract.BUSY_MESSAGES`` (a full queue, or
  a request that waited longer than the queue policy allows): busy, not broken; through
  the client library, ``ServerBusy`` (busy through every retry);
- failed: anything else, with the first line of its message.

A thread's connection is a raw tritonclient one (:func:`grpc`: every refusal counts) or
the client library's (:class:`Library`: what its callers see, after its retries).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

ANSWERED, REFUSED, FAILED = "answered", "refused", "failed"
OUTCOMES = (ANSWERED, REFUSED, FAILED)
# A thread whose request was refused or failed waits this long before its next one, so
# that a target failing at once does not turn the thread into a busy loop that takes the
# CPU from the server. It is pacing, not a retry: the next request is a new one.
PAUSE_AFTER_ERROR_S = 0.05
PERCENTILES = (50, 90, 95, 99)

# A thread's connection: send(target, photo) raises on anything but an answer.
Send = Callable[[str, bytes], object]
Connect = Callable[[], tuple[Send, Callable[[], None]]]


def latency_summary(seconds: Sequence[float], digits: int | None = None) -> dict:
    """``n`` and, in milliseconds, ``mean_ms``, ``p50_ms``, ``p90_ms``, ``p95_ms``,
    ``p99_ms`` and ``max_ms`` of latencies given in seconds (None without any), rounded
    to ``digits`` decimals when given."""
    keys = ("mean_ms", *(f"p{q}_ms" for q in PERCENTILES), "max_ms")
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if not ms.size:
        return {"n": 0, **dict.fromkeys(keys)}
    values = (float(v) for v in (ms.mean(), *np.percentile(ms, PERCENTILES), ms.max()))
    return {"n": len(ms), **{k: v if digits is None else round(v, digits)
                             for k, v in zip(keys, values, strict=True)}}  # fmt: skip


def grpc(url: str, timeout_s: float = 120.0, inputs: Callable[[bytes], list] | None = None):
    """A :data:`Connect` for :class:`Load`: a tritonclient gRPC client of ``url`` per
    thread, each request a raw ``infer`` of ``inputs(photo)`` (default: the photo alone)
    within ``timeout_s``, with no client-side retry, so that a refusal or a loss is
    counted when it happens."""

    def connect() -> tuple[Send, Callable[[], None]]:
        import tritonclient.grpc as grpcclient

        from client.payload import build_inputs

        client = grpcclient.InferenceServerClient(url)
        tensors = inputs or (lambda photo: build_inputs([photo]))
        return (lambda model, photo: client.infer(model, tensors(photo), client_timeout=timeout_s),
                client.close)  # fmt: skip

    return connect


class Library:
    """A :data:`Connect` for :class:`Load`: a ``DetectorClient`` of ``url`` per thread,
    each request one photo through ``detect`` within ``timeout_s`` per try. A request
    counts as the library's caller sees it: after the retries of busy and recovering
    refusals, and the failover. What the servers refused on the way is in
    :attr:`refusals` once the threads have closed: ``busy``, ``recovering`` (a model
    being brought back after a worker crash) and ``unreachable`` tries."""

    def __init__(self, url: str, timeout_s: float = 120.0) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.refusals: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def __call__(self) -> tuple[Send, Callable[[], None]]:
        from client import DetectorClient

        client = DetectorClient(self.url)

        def send(model: str, photo: bytes) -> object:
            outcome = client.detect([photo], model=model, timeout=self.timeout_s)[0]
            if isinstance(outcome, Exception):  # the image's own error
                raise outcome
            return outcome

        def close() -> None:
            with self._lock:
                for stats in client.endpoint_stats().values():
                    for kind in ("busy", "recovering", "unreachable"):
                        self.refusals[kind] += getattr(stats, kind)
            client.close()

        return send, close


def classify(error: Exception) -> tuple[str, str]:
    """The outcome of a request that raised ``error`` and the first line of its message
    (with the exception's type when neither tritonclient nor the client library wrapped
    it, and the library's error type when it did)."""
    from tritonclient.utils import InferenceServerException

    from client.errors import DetectorError, ServerBusy, first_line, is_busy

    if isinstance(error, InferenceServerException):
        return (REFUSED if is_busy(error) else FAILED), first_line(str(error))
    if isinstance(error, DetectorError):
        outcome = REFUSED if isinstance(error, ServerBusy) else FAILED
        return outcome, f"{type(error).__name__}: {first_line(str(error))}"
    return FAILED, f"{type(error).__name__}: {first_line(str(error))}"


@dataclass(frozen=True)
class Request:
    """One request: its target, when it was sent (seconds since the load began), how
    long it took (seconds), its outcome and, unless answered, its error's first line."""

    target: str
    start: float
    seconds: float
    outcome: str
    error: str = ""

    @property
    def end(self) -> float:
        return self.start + self.seconds


class Load:
    """The closed loop of the module docstring: ``connect()`` gives each thread its own
    connection (:func:`grpc`). Started by ``with`` (stopped on exit) or :meth:`run`."""

    def __init__(self, connect: Connect, targets: Sequence[str], photos: Sequence[bytes],
                 concurrency: int, *, duration_s: float | None = None,
                 requests: int | None = None) -> None:  # fmt: skip
        if not targets or not photos or concurrency < 1:
            raise ValueError("a load needs a target, a photo and at least one thread")
        self.connect, self.targets, self.photos = connect, list(targets), list(photos)
        self.concurrency, self.duration_s, self.requests = concurrency, duration_s, requests
        self.records: list[Request] = []  # in the order the requests ended
        self.t0 = 0.0  # time.perf_counter() when the load began
        self.seconds = 0.0  # from the start until the last thread ended
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sent = 0
        self._threads: list[threading.Thread] = []

    def _next(self) -> int | None:
        """The next request's number, or None: the load is over."""
        with self._lock:
            late = self.duration_s is not None and self.elapsed() >= self.duration_s
            if self._stop.is_set() or late or self._sent == self.requests:
                return None
            self._sent += 1
            return self._sent - 1

    def _thread(self) -> None:
        send, close = self.connect()
        try:
            while (k := self._next()) is not None:
                target = self.targets[k % len(self.targets)]
                photo = self.photos[k // len(self.targets) % len(self.photos)]
                sent = time.perf_counter()
                try:
                    send(target, photo)
                    outcome, error = ANSWERED, ""
                except Exception as e:  # whatever went wrong, the request is counted
                    outcome, error = classify(e)
                seconds = time.perf_counter() - sent
                with self._lock:
                    self.records.append(Request(target, sent - self.t0, seconds, outcome, error))
                if outcome != ANSWERED:
                    self._stop.wait(PAUSE_AFTER_ERROR_S)
        finally:
            close()

    def start(self) -> Load:
        self.t0 = time.perf_counter()
        self._threads = [threading.Thread(target=self._thread, daemon=True)
                         for _ in range(self.concurrency)]  # fmt: skip
        for thread in self._threads:
            thread.start()
        return self

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def wait(self) -> Load:
        """Until every thread has sent its last request and had its answer."""
        for thread in self._threads:
            thread.join()
        self.seconds = self.seconds or self.elapsed()
        return self

    def stop(self) -> Load:
        """No new request; :meth:`wait` for those in flight."""
        self._stop.set()
        return self.wait()

    def run(self) -> Load:
        return self.start().wait()

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def count(self, outcome: str) -> int:
        """The requests that ended so far with ``outcome``."""
        with self._lock:
            return sum(1 for r in self.records if r.outcome == outcome)

    def figures(self, digits: int | None = None) -> dict:
        """``seconds``, the count of each outcome, ``images_per_s`` (answered over
        seconds), ``failures`` (``{first line: count}``, most first) and the
        :func:`latency_summary` of the answered requests."""
        counts = Counter(r.outcome for r in self.records)
        failed = Counter(r.error for r in self.records if r.outcome == FAILED)
        answered = [r.seconds for r in self.records if r.outcome == ANSWERED]
        rate = len(answered) / self.seconds if self.seconds > 0 else 0.0
        return {"seconds": self.seconds, **{o: counts[o] for o in OUTCOMES},
                "images_per_s": rate, "failures": dict(failed.most_common()),
                **latency_summary(answered, digits)}  # fmt: skip


def warm_up(url: str, models: Sequence[str], photos: Sequence[bytes]) -> None:
    """Each photo once through each model, one request at a time: a model's first
    requests pay for lazy set-up (and memory) that the steady state does not.
    ``RuntimeError`` names the first model that did not answer."""
    load = Load(grpc(url), models, photos, 1, requests=len(models) * len(photos)).run()
    failed = [r for r in load.records if r.outcome != ANSWERED]
    if failed:
        raise RuntimeError(f"warm-up: {failed[0].target} failed: {failed[0].error}")
