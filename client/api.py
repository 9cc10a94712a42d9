"""``DetectorClient``, the front door: images in, typed results out, over Triton's gRPC
API, from one server or several replicas of it.

It puts the package's pieces together: the endpoints, TLS and API key of
``client.connection``; the images and ``DetectOptions`` of ``client.payload``, packed
into requests that fit; the retries and failover of ``client.retry``; the answers of
``client.results``; the errors of ``client.errors``; the frames of ``client.video``.

Thread safety: one ``DetectorClient`` (and the ``tritonclient.grpc``
``InferenceServerClient`` inside it, one per endpoint) may be shared by several threads.
tritonclient documents its gRPC client as thread-safe except for the streaming calls
(``start_stream``, ``stop_stream``, ``async_stream_infer``), which this module never
uses; the gRPC channel underneath is thread-safe. The state of our own, the label cache
and the endpoints' rotation, cooldowns and counts (``EndpointPool``), is guarded by
locks. ``close()`` while other threads are still calling makes their calls fail.

A request larger than ``contract.MAX_REQUEST_BYTES`` is refused here, before anything
is sent (``RequestTooLarge``): the server would refuse it anyway. The server's side of
the reliability and security is ``ensemble.server``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import TypeVar

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client.connection import (
    TlsOption,
    api_key_headers,
    channel_args,
    channel_credentials,
    is_loopback_url,
    resolve_api_key,
    resolve_endpoints,
    resolve_tls,
)
from client.errors import (
    DetectorError,
    ImageNotReadable,
    RequestTooLarge,
    is_unreachable,
    map_server_error,
)
from client.payload import (
    DEFAULT_OPTIONS,
    DetectOptions,
    ImageInput,
    build_inputs,
    image_source,
    load_image,
    output_names,
    pack_requests,
    request_bytes,
    split_batches,
)
from client.results import (
    ImageResult,
    ModelInfo,
    Outcome,
    detection_ensembles,
    parse_image_results,
    results_or_raise,
)
from client.retry import (
    EndpointPool,
    EndpointStats,
    FailoverPolicy,
    RetryPolicy,
    run_isolating,
    send_failing_over,
)
from client.video import Frame, FrameResult, detect_frames
from ensemble.contract import (
    DETECT_ALL,
    MAX_BATCH_SIZE,
    MAX_REQUEST_BYTES,
    MODEL_HEADER,
    TRACK_ALL,
)

log = logging.getLogger(__name__)

# Health and metadata calls should fail fast on an unroutable host instead of
# waiting forever; inference calls use the caller's timeout.
PROBE_TIMEOUT_S = 5.0

T = TypeVar("T")


class DetectorClient:
    """Sends images to the detection ensembles of one Triton server, or of several
    replicas of it.

    ``url``: the gRPC endpoint host:port (default $TRITON_URL, else localhost:8001), or
    several, as one string separated by commas (``"a:8001,b:8001"``, in $TRITON_URL
    too) or as a sequence. One endpoint may be a load balancer, or a name gRPC resolves
    to several addresses (``dns:///triton-headless:8001``): the channel balances each
    request over them (round robin). Several endpoints: requests go round robin over
    those that answer, each with a gRPC channel of its own.

    Failover: inference is idempotent (a request's result depends only on the request),
    so a request that found nothing answering (UNAVAILABLE: connection refused or
    reset, a server gone or draining) is sent again, to the next endpoint, then after a
    backoff once every endpoint failed in a round, as ``failover`` says; a failed
    endpoint is left out for ``failover.cooldown_s``. With one endpoint, the same
    request is sent to it again after the backoff (a load balancer then picks a live
    replica). When the rounds are spent: ``ServerUnavailable`` naming every endpoint
    tried. A busy refusal is retried as ``retry`` says (``NO_RETRY``: never), on the
    next endpoint. Errors that are the request's own (a bad image, a request too
    large, a missing API key, an unknown model) are never sent again.

    ``tls``: False, True (trust the system's root certificates), or the path of a PEM
    CA certificate to trust; default $DETECTOR_TLS_CA when set (a path), else no TLS.
    ``api_key``: the key of the server's restricted APIs (the repository index, the
    statistics), default $DETECTOR_API_KEY; "" sends none. Both apply to every endpoint.

    Safe to share between threads (see the module docstring). Use as a context
    manager, or call ``close()``.
    """

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        *,
        verbose: bool = False,
        tls: TlsOption | None = None,
        api_key: str | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, so shared safely
        failover: FailoverPolicy = FailoverPolicy(),  # noqa: B008 - frozen
    ):
        self.endpoints = resolve_endpoints(url)
        self.url = ",".join(self.endpoints)  # for messages
        self.tls = resolve_tls(tls)
        self.retry = retry
        self.failover = failover
        key = resolve_api_key(api_key)
        self._headers = api_key_headers(key)  # sent on every call: cheap, and simpler
        for endpoint in self.endpoints:
            if key and not self.tls and not is_loopback_url(endpoint):
                log.warning("sending the API key to %s without TLS: the path can read it", endpoint)
        security = channel_credentials(self.tls)
        # One client (one channel) per endpoint; made here, never changed after, so
        # threads share the dict without a lock. Channels connect on first use.
        self._clients = {
            endpoint: grpcclient.InferenceServerClient(
                endpoint, verbose=verbose, channel_args=channel_args(), **security
            )
            for endpoint in self.endpoints
        }
        self._client = self._clients[self.endpoints[0]]  # the first endpoint's
        self._pool = EndpointPool(self.endpoints, failover.cooldown_s)
        self._rng = random.Random()  # backoff jitter; its methods are thread-safe
        self._infos: dict[str, ModelInfo] = {}
        self._infos_lock = threading.Lock()

    def _error(
        self, exc: InferenceServerException, url: str | None = None, **where: object
    ) -> DetectorError:
        """``map_server_error`` with what this client knows (the endpoint, else all of
        them, whether it sent a key)."""
        return map_server_error(
            exc,
            url=url or self.url,
            api_key_given=self._headers is not None,
            **where,  # type: ignore[arg-type]
        )

    def _send(
        self,
        call: Callable[[grpcclient.InferenceServerClient], T],
        what: str,
        **where: object,
    ) -> T:
        """``call(client)`` with the client of one endpoint after another, failing over
        and retrying as ``send_failing_over`` says; its errors as ``DetectorError``
        (``where``: the model and image, for ``map_server_error``)."""
        return send_failing_over(
            lambda endpoint: call(self._clients[endpoint]),
            self._pool,
            failover=self.failover,
            retry=self.retry,
            error=lambda exc, endpoint, attempts: self._error(
                exc, endpoint, attempts=attempts, **where
            ),
            rng=self._rng,
            what=what,
        )

    def endpoint_stats(self) -> dict[str, EndpointStats]:
        """How many tries this client sent to each endpoint, and how many of them found
        nothing answering; a copy, by endpoint."""
        return self._pool.stats()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def __enter__(self) -> DetectorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- server state --

    def is_ready(self) -> bool:
        """Whether the server is up and ready (with several endpoints: one of them, tried
        once each); False (no exception) when unreachable."""
        for endpoint in self._pool.next_round():
            self._pool.sent(endpoint)
            try:
                ready = self._clients[endpoint].is_server_ready(
                    headers=self._headers, client_timeout=PROBE_TIMEOUT_S
                )
            except InferenceServerException as e:
                if is_unreachable(e):
                    self._pool.failed(endpoint)
                continue
            self._pool.answered(endpoint)
            if ready:
                return True
        return False

    def ready_models(self) -> dict[str, bool]:
        """Readiness of every model in the server's repository, by name (with several
        endpoints: the first that answers; replicas serve the same models).

        Raises ``ServerUnavailable`` when nothing answers, ``ApiKeyRequired`` when the
        server restricts its repository index and this client has not its key.
        """
        index = self._send(
            lambda c: c.get_model_repository_index(
                headers=self._headers, as_json=True, client_timeout=PROBE_TIMEOUT_S
            ),
            "repository index",
        )
        ready: dict[str, bool] = {}
        for model in index.get("models", []):
            name = model["name"]
            ready[name] = ready.get(name, False) or model.get("state") == "READY"
        return ready

    def ensembles(self) -> list[str]:
        """The detection ensembles the server has (``detect_*``), ready or not:
        ``detect_all`` first, then the others in the server's order."""
        return detection_ensembles(self.ready_models())

    def model_info(self, model: str = DETECT_ALL) -> ModelInfo:
        """What the server says of ``model`` (title, labels, detectors, steps), read
        once from its config."""
        with self._infos_lock:
            cached = self._infos.get(model)
        if cached is not None:
            return cached
        config = self._send(
            lambda c: c.get_model_config(
                model, headers=self._headers, as_json=True, client_timeout=PROBE_TIMEOUT_S
            ),
            f"config of {model}",
            model=model,
        )
        info = ModelInfo.from_config(config, model)
        with self._infos_lock:
            self._infos[model] = info
        return info

    def labels(self, model: str = DETECT_ALL) -> list[str]:
        """The model's label list (index = class_id), from its config parameters."""
        return list(self.model_info(model).labels)

    def inference_statistics(self, model: str = "") -> dict:
        """Triton's cumulative statistics of ``model``, or of every model when it is "".

        The reply of ``get_inference_statistics`` as JSON: ``{"model_stats": [{"name",
        "inference_count", "execution_count", "inference_stats": {"success", "queue",
        "compute_input", "compute_infer", "compute_output", ...: {"count", "ns"}}}]}``,
        counted since the model was loaded. Durations are nanoseconds; 64-bit numbers
        arrive as strings and a field that never counted is ``{}``. With several
        endpoints: those of the first that answers, one replica's. Raises
        ``ServerUnavailable`` (or ``ModelNotReady`` for an unknown ``model``), and
        ``ApiKeyRequired`` when the server restricts its statistics.
        """
        return self._send(
            lambda c: c.get_inference_statistics(
                model_name=model,
                headers=self._headers,
                as_json=True,
                client_timeout=PROBE_TIMEOUT_S,
            ),
            "statistics",
            model=model or None,
        )

    # -- inference --

    def detect(
        self,
        images: Sequence[ImageInput],
        model: str = DETECT_ALL,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        timeout: float | None = None,
        *,
        batch_size: int = MAX_BATCH_SIZE,
        annotated_max_side: int | None = None,
        merge_labels: bool | None = None,
    ) -> list[ImageResult]:
        """Detect objects in each image; one result per image, in order.

        ``images`` are encoded image files as bytes or paths. They go in batches of at
        most ``batch_size`` (<= MAX_BATCH_SIZE), one request per batch, fewer images when
        they would make a request over ``MAX_REQUEST_BYTES``. The thresholds, ``timeout``
        (seconds per request and per try), ``annotated_max_side`` (pixels) and
        ``merge_labels`` (detect_all: False for one box per label) are
        ``DetectOptions``' fields, which say what each means; ``iter_detect``,
        ``detect_frames`` and ``annotate_clip`` take them as one ``DetectOptions``.
        Detections are in pixels of the original photos. Raises ``InvalidImage`` naming
        the first image the server refused (or ``ImageNotReadable`` for a file that
        cannot be read, ``RequestTooLarge`` for an image too large to send),
        ``ServerBusy`` when the server stayed busy through every try of ``retry``.
        """
        options = DetectOptions(
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            annotated_max_side=annotated_max_side,
            timeout=timeout,
            merge_labels=merge_labels,
        )
        return results_or_raise(self.iter_detect(images, model, options, batch_size=batch_size))

    def iter_detect(
        self,
        images: Sequence[ImageInput],
        model: str = DETECT_ALL,
        options: DetectOptions = DEFAULT_OPTIONS,
        *,
        batch_size: int = MAX_BATCH_SIZE,
    ) -> Iterator[list[Outcome]]:
        """Like ``detect`` but yields each batch's outcomes as it completes.

        An outcome is an ``ImageResult``, or the per-image ``DetectorError`` of an image
        that could not be read, that is too large to send (``RequestTooLarge``), or that
        the server refused (``InvalidImage``) or failed on (``InferenceFailed``). A batch
        the server refuses is retried one image at a time to find the culprit, so the
        other images still get results. Errors that concern the whole server or model
        (``ServerUnavailable``, ``ServerBusy``, ``ModelNotReady``) are raised.

        The server is first asked (the model's config) when there is an image to send:
        images refused here (unreadable, too large) cost no connection.
        """
        indices = list(range(len(images)))
        for batch in split_batches(indices, batch_size):
            outcomes: dict[int, Outcome] = {}
            payloads: dict[int, bytes] = {}
            for i in batch:
                try:
                    payloads[i] = load_image(images[i], i)
                except ImageNotReadable as e:
                    outcomes[i] = e
            sources = {i: image_source(images[i], i) for i in batch}
            run = partial(self._infer, payloads, sources, model, options)
            ids = list(payloads)
            for group in pack_requests([len(payloads[i]) for i in ids]):
                outcomes.update(run_isolating([ids[k] for k in group], run))
            yield [outcomes[i] for i in batch]

    def track_frames(
        self,
        frames: Iterable[Frame],
        model: str = TRACK_ALL,
        options: DetectOptions = DEFAULT_OPTIONS,
        **settings: object,
    ) -> Iterator[FrameResult]:
        """Track the objects of ``frames`` with the tracking ensemble ``model``
        (``track_<name>``, ``track_all``): one ``FrameResult`` per frame, in order,
        each detection with its ``track_id``. This client manages the sequence (its id,
        START and END) over a gRPC stream of its own; ``settings`` are
        ``client.tracking.track_frames``' (``max_in_flight``, ``run``, ...)."""
        from client.tracking import track_frames

        return track_frames(self, frames, model, options, **settings)  # type: ignore[arg-type]

    def stream_client(self) -> grpcclient.InferenceServerClient:
        """A new tritonclient of this client's first endpoint, with its TLS, for one
        gRPC stream (a stream is one client's at a time; close it when done)."""
        return grpcclient.InferenceServerClient(
            self.endpoints[0], channel_args=channel_args(), **channel_credentials(self.tls)
        )

    def request_headers(self, model: str) -> dict[str, str]:
        """The headers of a request to ``model``: the API key, if any, and the model's
        name for the server's front (contract.MODEL_HEADER)."""
        return {**(self._headers or {}), MODEL_HEADER: model}

    def detect_frames(
        self,
        frames: Iterable[Frame],
        model: str = DETECT_ALL,
        options: DetectOptions = DEFAULT_OPTIONS,
        **pacing: int | None,
    ) -> Iterator[FrameResult]:
        """Detect objects in a stream of video frames, one ``FrameResult`` per frame in
        order, batched and with bounded requests in flight: ``client.video.detect_frames``
        (``pacing``: its ``batch_size``, ``max_in_flight`` and ``jpeg_quality``)."""
        return detect_frames(self, frames, model, options, **pacing)

    def _infer(
        self,
        payloads: Mapping[int, bytes],
        sources: Mapping[int, str],
        model: str,
        options: DetectOptions,
        ids: Sequence[int],
    ) -> list[ImageResult]:
        """One request carrying the images ``ids`` (indices into the caller's sequence),
        asking what ``options`` say, sent again while the server is busy (``self.retry``)
        or unreachable (``self.failover``)."""
        # Only a one-image request tells which image the server objected to.
        one = len(ids) == 1
        source, index = (sources[ids[0]], ids[0]) if one else (None, None)
        size = request_bytes(len(payloads[i]) for i in ids)
        if size > MAX_REQUEST_BYTES:  # the server would refuse it after the upload
            raise RequestTooLarge(size, MAX_REQUEST_BYTES, source, index)
        info = self.model_info(model)
        inputs = build_inputs([payloads[i] for i in ids], options, info)
        names = output_names(info)
        outputs = [grpcclient.InferRequestedOutput(n) for n in names]
        # The model's name for the server's front, which cannot read gRPC's body: it
        # refuses a model being reloaded after a crash at once, as worth sending again.
        headers = self.request_headers(model)
        start = time.perf_counter()
        reply = self._send(
            lambda c: c.infer(
                model,
                inputs,
                outputs=outputs,
                headers=headers,
                client_timeout=options.timeout,
            ),
            f"request to {model}",
            model=model,
            source=source,
            index=index,
        )
        latency = time.perf_counter() - start
        arrays = {n: reply.as_numpy(n) for n in names}
        return parse_image_results(
            arrays,
            info.labels,
            [d.name for d in info.per_detector_outputs],
            sources=[sources[i] for i in ids],
            latency_s=latency,
            detector_labels={d.name: d.labels for d in info.per_detector_outputs},
        )
