"""Python client of the detection ensembles, over Triton's gRPC API.

Coordinates: every box returned here is in pixels of the *original* image, as the
contract says: ``(x1, y1, x2, y2)`` with x to the right and y down, origin at the
top-left corner of the top-left pixel. ``Detection.box_xywh`` gives the COCO form
``(x, y, width, height)``.

Thread safety: one ``DetectorClient`` (and the one ``tritonclient.grpc``
``InferenceServerClient`` inside it) may be shared by several threads. tritonclient
documents its gRPC client as thread-safe except for the streaming calls
(``start_stream``, ``stop_stream``, ``async_stream_infer``), which this module never
uses; the gRPC channel underneath is thread-safe. The only state of our own, the
label cache, is guarded by a lock. ``close()`` while other threads are still
calling makes their calls fail.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ensemble.contract import (
    ANNOTATED_IMAGE,
    COCO80_LABELS,
    COCO91_IDS,
    DETECT_ALL,
    DETECTION_FIELDS,
    DETECTIONS,
    DETECTORS_PARAMETER,
    DTYPES,
    ENSEMBLE_PREFIX,
    IMAGE,
    IOU_THRESHOLD,
    LABELS_PARAMETER,
    MAX_BATCH_SIZE,
    NUM_DETECTIONS,
    SCORE_THRESHOLD,
    TITLE_PARAMETER,
    detector_outputs,
)

log = logging.getLogger(__name__)

DEFAULT_URL = "localhost:8001"
URL_ENV = "TRITON_URL"  # overrides DEFAULT_URL when set
SERVE_COMMAND = "make serve"  # what a user runs to start the server

# Health and metadata calls should fail fast on an unroutable host instead of
# waiting forever; inference calls use the caller's timeout.
PROBE_TIMEOUT_S = 5.0

ImageInput = bytes | str | Path
T = TypeVar("T")

_UNAVAILABLE = str(grpc.StatusCode.UNAVAILABLE)
_NOT_FOUND = str(grpc.StatusCode.NOT_FOUND)
_INVALID_ARGUMENT = str(grpc.StatusCode.INVALID_ARGUMENT)
_DEADLINE_EXCEEDED = str(grpc.StatusCode.DEADLINE_EXCEEDED)


# --- errors --------------------------------------------------------------------


def first_line(text: str) -> str:
    """The first non-blank line: server reasons can carry whole Python tracebacks."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


class DetectorError(Exception):
    """Base of every error this client raises; ``str()`` is one line meant for people."""


class ServerUnavailable(DetectorError):
    """Nothing answers at the server address."""

    def __init__(self, url: str, reason: str = ""):
        self.url = url
        self.reason = reason  # gRPC's own words, for logs; left out of the message
        super().__init__(
            f"Triton server at {url} is not reachable: is it running? "
            f"start it with `{SERVE_COMMAND}`"
        )


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


def map_server_error(
    exc: InferenceServerException,
    *,
    url: str,
    model: str | None = None,
    source: str | None = None,
    index: int | None = None,
) -> DetectorError:
    """Translate tritonclient's exception into the matching ``DetectorError``.

    ``model`` is the model the call was about; ``source``/``index`` name the image when
    the request carried exactly one, so an INVALID_ARGUMENT can be blamed on it.
    """
    status = exc.status() or ""
    reason = exc.message() or str(exc)
    line = first_line(reason)
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


# --- results -------------------------------------------------------------------


@dataclass
class Detection:
    """One detected object; box in original-image pixels, ``(x1, y1, x2, y2)``."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float  # 0..1
    class_id: int  # index into the model's labels (COCO-80 for the bundled detectors)
    label: str

    @property
    def box_xywh(self) -> tuple[float, float, float, float]:
        """``(x, y, width, height)`` in pixels, top-left corner first (the COCO bbox)."""
        return (self.x1, self.y1, self.x2 - self.x1, self.y2 - self.y1)


@dataclass
class ImageResult:
    """What the server returned for one image."""

    detections: list[Detection]
    annotated_jpeg: bytes  # JPEG of the original image with the boxes drawn
    # detect_all only: each fused detector's own result, keyed by its name ("pytorch").
    per_detector: dict[str, ImageResult] = field(default_factory=dict)
    source: str = ""  # file name, or "image #3" when bytes were given
    # Wall-clock seconds of the request that carried this image; the images of one
    # batch share their request, so they share this number.
    latency_s: float = 0.0

    @property
    def per_framework(self) -> dict[str, ImageResult]:
        """The name this had when detectors were keyed by framework: ``per_detector``."""
        return self.per_detector

    def summary(self) -> str:
        """``"person 0.92, cup 0.41"``, highest score first; ``"nothing found"`` if empty."""
        dets = sorted(self.detections, key=lambda d: d.score, reverse=True)
        return ", ".join(f"{d.label} {d.score:.2f}" for d in dets) or "nothing found"


def label_for(class_id: int, labels: Sequence[str]) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else f"class {class_id}"


@dataclass(frozen=True)
class DetectorInfo:
    """One detector as the server describes it."""

    name: str  # its key: ensemble detect_<name>, outputs <NAME>_* in detect_all
    title: str  # what people call the network
    runtime: str  # torchscript | savedmodel | onnx | python
    labels: tuple[str, ...] = ()  # its own label list: its class ids index it
    runtime_title: str = ""  # what people call the runtime: "ONNX Runtime"

    @property
    def ensemble(self) -> str:
        return ENSEMBLE_PREFIX + self.name


@dataclass(frozen=True)
class ModelInfo:
    """What the server says about one ensemble, read from its config."""

    name: str
    title: str
    labels: tuple[str, ...]
    detectors: tuple[DetectorInfo, ...]  # whose results it returns
    steps: tuple[str, ...]  # its step models, in the config's order

    @property
    def per_detector_outputs(self) -> tuple[DetectorInfo, ...]:
        """Detectors whose own outputs (``<NAME>_*``) it returns besides the main ones."""
        return self.detectors if self.name == DETECT_ALL else ()

    @classmethod
    def from_config(cls, config: Mapping, model: str = "") -> ModelInfo:
        """From ``get_model_config(as_json=True)``. A config without the parameters
        (a server of another project) gets COCO-80 labels and no detector list."""
        config = config.get("config", config)
        params = config.get("parameters", {})
        raw = params.get(DETECTORS_PARAMETER, {}).get("string_value", "[]")
        detectors = tuple(
            DetectorInfo(
                d["name"], d.get("title", d["name"]), d.get("runtime", ""),
                tuple(d.get("labels", ())), d.get("runtime_title", ""),
            )
            for d in json.loads(raw)
        )  # fmt: skip
        steps = tuple(
            s["model_name"] for s in config.get("ensemble_scheduling", {}).get("step", [])
        )
        name = config.get("name", model)
        return cls(
            name=name,
            title=params.get(TITLE_PARAMETER, {}).get("string_value", name),
            labels=tuple(labels_from_config(config, model)),
            detectors=detectors,
            steps=steps,
        )


def parse_image_results(
    outputs: Mapping[str, np.ndarray],
    labels: Sequence[str],
    detectors: Sequence[str] = (),
    *,
    sources: Sequence[str] | None = None,
    latency_s: float = 0.0,
    detector_labels: Mapping[str, Sequence[str]] | None = None,
) -> list[ImageResult]:
    """Build one ``ImageResult`` per image from a reply's output arrays.

    ``outputs`` maps tensor names to arrays shaped as the contract says: DETECTIONS
    ``[B, MAX_DETECTIONS, 6]`` (rows x1, y1, x2, y2 in original pixels, score,
    class_id), NUM_DETECTIONS ``[B, 1]``, ANNOTATED_IMAGE ``[B, 1]`` of bytes. Only the
    first NUM_DETECTIONS rows of each image are read; the padding after them is
    ignored whatever it holds. ``detectors`` names the detectors whose prefixed
    outputs (detect_all) are present too; ``labels`` is the model's label list (for
    detect_all the union of its detectors'), and ``detector_labels`` each detector's
    own, which its prefixed outputs index (``labels`` where it is not given).
    """
    results = _parse_block(outputs, (DETECTIONS, NUM_DETECTIONS, ANNOTATED_IMAGE), labels)
    for name in detectors:
        own_labels = (detector_labels or {}).get(name) or labels
        for result, own in zip(
            results, _parse_block(outputs, detector_outputs(name), own_labels), strict=True
        ):
            result.per_detector[name] = own
    for i, result in enumerate(results):
        source = sources[i] if sources is not None else f"image #{i}"
        for r in (result, *result.per_detector.values()):
            r.source = source
            r.latency_s = latency_s
    return results


def _parse_block(
    outputs: Mapping[str, np.ndarray], names: Sequence[str], labels: Sequence[str]
) -> list[ImageResult]:
    dets_name, num_name, image_name = names
    missing = [n for n in names if n not in outputs or outputs[n] is None]
    if missing:
        raise InferenceFailed(f"reply lacks output(s) {', '.join(missing)}")
    dets = np.asarray(outputs[dets_name], dtype=np.float32)
    nums = np.asarray(outputs[num_name]).reshape(-1)
    images = np.asarray(outputs[image_name], dtype=object).reshape(-1)
    if dets.ndim != 3 or dets.shape[2] != len(DETECTION_FIELDS):
        raise InferenceFailed(f"{dets_name} has shape {dets.shape}, expected [B, N, 6]")
    if not len(dets) == len(nums) == len(images):
        raise InferenceFailed(
            f"batch sizes disagree: {dets_name} {len(dets)}, {num_name} {len(nums)}, "
            f"{image_name} {len(images)}"
        )
    results = []
    for rows, n, jpeg in zip(dets, nums, images, strict=True):
        count = min(max(int(n), 0), len(rows))
        detections = [
            Detection(x1, y1, x2, y2, score, int(cls), label_for(int(cls), labels))
            for x1, y1, x2, y2, score, cls in rows[:count].tolist()  # Python floats
        ]
        results.append(ImageResult(detections, _as_bytes(jpeg)))
    return results


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    return bytes(value)  # type: ignore[call-overload]


def to_coco_results(
    result: ImageResult, *, image_id: int, file_name: str, model: str
) -> list[dict]:
    """One image's detections as COCO results-format dicts.

    ``bbox`` is ``[x, y, width, height]`` in original-image pixels. ``category_id`` is
    the official COCO id (1..90 with gaps) for a COCO-80 label, as pycocotools expects;
    for a detector with labels of its own it is the class index plus one (COCO ids
    start at 1), and ``category_name`` always says the label.
    """
    entries = []
    for d in result.detections:
        if d.class_id < 0:
            continue
        coco = d.class_id < len(COCO80_LABELS) and COCO80_LABELS[d.class_id] == d.label
        entries.append(
            {
                "image_id": image_id,
                "file_name": file_name,
                "category_id": COCO91_IDS[d.class_id] if coco else d.class_id + 1,
                "category_name": d.label,
                "bbox": [round(v, 2) for v in d.box_xywh],
                "score": round(d.score, 5),
                "model": model,
            }
        )
    return entries


# --- requests ------------------------------------------------------------------


def split_batches(items: Sequence[T], batch_size: int = MAX_BATCH_SIZE) -> list[list[T]]:
    """Consecutive chunks of at most ``batch_size`` items (1..MAX_BATCH_SIZE)."""
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}, got {batch_size}")
    return [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]


def image_source(image: ImageInput, index: int) -> str:
    """How an image is named in messages: its path, or its position for raw bytes."""
    return str(image) if isinstance(image, (str, Path)) else f"image #{index}"


def load_image(image: ImageInput, index: int = 0) -> bytes:
    """The encoded bytes of an image, reading files from disk.

    Nothing is decoded here: the server decodes and validates every image. A file that
    is missing, unreadable or empty raises ``ImageNotReadable`` before any request.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    else:
        try:
            data = Path(image).read_bytes()
        except FileNotFoundError:
            raise ImageNotReadable(str(image), "no such file", index) from None
        except IsADirectoryError:
            raise ImageNotReadable(str(image), "is a directory", index) from None
        except OSError as e:
            raise ImageNotReadable(str(image), e.strerror or str(e), index) from None
    if not data:
        raise ImageNotReadable(image_source(image, index), "empty", index)
    return data


# Leading bytes of the formats the CLI sends. A fast local hint only: the server
# decodes and validates every image anyway and is the authority on what it accepts.
_SIGNATURES: tuple[tuple[str, bytes, int], ...] = (
    ("JPEG", b"\xff\xd8\xff", 0),
    ("PNG", b"\x89PNG\r\n\x1a\n", 0),
    ("GIF", b"GIF87a", 0),
    ("GIF", b"GIF89a", 0),
    ("BMP", b"BM", 0),
    ("TIFF", b"II*\x00", 0),
    ("TIFF", b"MM\x00*", 0),
    ("WebP", b"WEBP", 8),  # after "RIFF" and the chunk size
)
SNIFF_BYTES = 16
KNOWN_FORMATS = tuple(dict.fromkeys(name for name, _, _ in _SIGNATURES))


def sniff_image_format(head: bytes) -> str | None:
    """The format whose signature ``head`` (the first bytes of a file) starts with, or None."""
    for name, magic, offset in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            if name == "WebP" and not head.startswith(b"RIFF"):
                continue
            return name
    return None


def _fp32_column(value: float, n: int, name: str) -> grpcclient.InferInput:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    tensor = grpcclient.InferInput(name, [n, 1], DTYPES[name])
    tensor.set_data_from_numpy(np.full((n, 1), value, dtype=np.float32))
    return tensor


def build_inputs(
    payloads: Sequence[bytes],
    score_threshold: float | None = None,
    iou_threshold: float | None = None,
) -> list[grpcclient.InferInput]:
    """The request tensors for one batch; thresholds are sent only when given."""
    images = np.empty((len(payloads), 1), dtype=object)
    images[:, 0] = list(payloads)
    image = grpcclient.InferInput(IMAGE, list(images.shape), DTYPES[IMAGE])
    image.set_data_from_numpy(images)
    inputs = [image]
    if score_threshold is not None:
        inputs.append(_fp32_column(score_threshold, len(payloads), SCORE_THRESHOLD))
    if iou_threshold is not None:
        inputs.append(_fp32_column(iou_threshold, len(payloads), IOU_THRESHOLD))
    return inputs


def output_names(info: ModelInfo) -> list[str]:
    """Every output of ``info``'s ensemble: the main result, then each detector's."""
    names = [DETECTIONS, NUM_DETECTIONS, ANNOTATED_IMAGE]
    for d in info.per_detector_outputs:
        names.extend(detector_outputs(d.name))
    return names


def detection_ensembles(names: Iterable[str]) -> list[str]:
    """The detection ensembles (``detect_*``) among model ``names``: ``detect_all``
    first, then the others in the order given."""
    found = [n for n in names if n.startswith(ENSEMBLE_PREFIX)]
    return sorted(found, key=lambda n: n != DETECT_ALL)


def resolve_url(url: str | None = None) -> str:
    """``url``, else $TRITON_URL, else localhost:8001; a ``grpc://`` scheme is dropped."""
    url = url or os.environ.get(URL_ENV) or DEFAULT_URL
    return url.removeprefix("grpc://")


# --- client --------------------------------------------------------------------

Outcome = ImageResult | DetectorError


def run_isolating(
    ids: list[int], run: Callable[[list[int]], list[ImageResult]]
) -> dict[int, Outcome]:
    """Outcome per image of sending ``ids`` in one request with ``run``.

    When the request fails (``InvalidImage``, ``InferenceFailed``), each image is sent
    alone so that only the culprits get an error and the others still get their
    result: Triton fails a whole request when one of its images is bad.
    ``ServerUnavailable`` and ``ModelNotReady`` concern every image and propagate.
    """
    try:
        return dict(zip(ids, run(ids), strict=True))
    except (InvalidImage, InferenceFailed) as e:
        if len(ids) == 1:
            return {ids[0]: e}
    outcomes: dict[int, Outcome] = {}
    for i in ids:
        try:
            outcomes[i] = run([i])[0]
        except (InvalidImage, InferenceFailed) as e:
            outcomes[i] = e
    return outcomes


class DetectorClient:
    """Sends images to the detection ensembles of one Triton server.

    Safe to share between threads (see the module docstring). Use as a context
    manager, or call ``close()``.
    """

    def __init__(self, url: str | None = None, *, verbose: bool = False):
        self.url = resolve_url(url)
        self._client = grpcclient.InferenceServerClient(self.url, verbose=verbose)
        self._infos: dict[str, ModelInfo] = {}
        self._infos_lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> DetectorClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- server state --

    def is_ready(self) -> bool:
        """Whether the server is up and ready; False (no exception) when unreachable."""
        try:
            return bool(self._client.is_server_ready(client_timeout=PROBE_TIMEOUT_S))
        except InferenceServerException:
            return False

    def ready_models(self) -> dict[str, bool]:
        """Readiness of every model in the server's repository, by name.

        Raises ``ServerUnavailable`` when nothing answers.
        """
        try:
            index = self._client.get_model_repository_index(
                as_json=True, client_timeout=PROBE_TIMEOUT_S
            )
        except InferenceServerException as e:
            raise map_server_error(e, url=self.url) from None
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
        try:
            config = self._client.get_model_config(
                model, as_json=True, client_timeout=PROBE_TIMEOUT_S
            )
        except InferenceServerException as e:
            raise map_server_error(e, url=self.url, model=model) from None
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
        arrive as strings and a field that never counted is ``{}``. Raises
        ``ServerUnavailable`` (or ``ModelNotReady`` for an unknown ``model``).
        """
        try:
            return self._client.get_inference_statistics(
                model_name=model, as_json=True, client_timeout=PROBE_TIMEOUT_S
            )
        except InferenceServerException as e:
            raise map_server_error(e, url=self.url, model=model or None) from None

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
    ) -> list[ImageResult]:
        """Detect objects in each image; one result per image, in order.

        ``images`` are encoded image files as bytes or paths. They go in batches of at
        most ``batch_size`` (<= MAX_BATCH_SIZE), one request per batch; ``timeout`` is
        in seconds per request. Thresholds are sent only when given, otherwise the
        server's defaults apply. Raises ``InvalidImage`` naming the first image the
        server refused (or ``ImageNotReadable`` for a file that cannot be read).
        """
        results: list[ImageResult] = []
        for outcomes in self.iter_detect(
            images, model, score_threshold, iou_threshold, timeout, batch_size=batch_size
        ):
            for outcome in outcomes:
                if isinstance(outcome, DetectorError):
                    raise outcome
                results.append(outcome)
        return results

    def iter_detect(
        self,
        images: Sequence[ImageInput],
        model: str = DETECT_ALL,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        timeout: float | None = None,
        *,
        batch_size: int = MAX_BATCH_SIZE,
    ) -> Iterator[list[Outcome]]:
        """Like ``detect`` but yields each batch's outcomes as it completes.

        An outcome is an ``ImageResult``, or the per-image ``DetectorError`` of an image
        that could not be read or that the server refused (``InvalidImage``) or failed
        on (``InferenceFailed``). A batch the server refuses is retried one image at a
        time to find the culprit, so the other images still get results. Errors that
        concern the whole server or model (``ServerUnavailable``, ``ModelNotReady``)
        are raised.
        """
        info = self.model_info(model)
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
            if payloads:
                run = partial(
                    self._infer,
                    payloads,
                    sources,
                    info,
                    score_threshold,
                    iou_threshold,
                    timeout,
                )
                outcomes.update(run_isolating(list(payloads), run))
            yield [outcomes[i] for i in batch]

    def _infer(
        self,
        payloads: Mapping[int, bytes],
        sources: Mapping[int, str],
        info: ModelInfo,
        score_threshold: float | None,
        iou_threshold: float | None,
        timeout: float | None,
        ids: Sequence[int],
    ) -> list[ImageResult]:
        """One request carrying the images ``ids`` (indices into the caller's sequence)."""
        model = info.name
        inputs = build_inputs([payloads[i] for i in ids], score_threshold, iou_threshold)
        names = output_names(info)
        outputs = [grpcclient.InferRequestedOutput(n) for n in names]
        start = time.perf_counter()
        try:
            reply = self._client.infer(model, inputs, outputs=outputs, client_timeout=timeout)
        except InferenceServerException as e:
            # Only a one-image request tells which image the server objected to.
            one = len(ids) == 1
            raise map_server_error(
                e,
                url=self.url,
                model=model,
                source=sources[ids[0]] if one else None,
                index=ids[0] if one else None,
            ) from None
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


def labels_from_config(config: Mapping, model: str = "") -> list[str]:
    """The label list in a model config (as ``get_model_config(as_json=True)`` returns it).

    Falls back to COCO-80, with a warning, when the parameter is missing (a model
    served by something other than this project).
    """
    params = config.get("config", config).get("parameters", {})
    raw = params.get(LABELS_PARAMETER, {}).get("string_value")
    if raw is None:
        log.warning("model %r has no %r parameter; using COCO-80 labels", model, LABELS_PARAMETER)
        return list(COCO80_LABELS)
    labels = json.loads(raw)
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise InferenceFailed(f"model {model!r}: parameter {LABELS_PARAMETER!r} is not a JSON list")
    return labels


__all__ = [
    "DEFAULT_URL",
    "KNOWN_FORMATS",
    "SERVE_COMMAND",
    "URL_ENV",
    "Detection",
    "DetectorClient",
    "DetectorInfo",
    "DetectorError",
    "ImageNotReadable",
    "ImageResult",
    "InferenceFailed",
    "InvalidImage",
    "ModelInfo",
    "ModelNotReady",
    "ServerUnavailable",
    "build_inputs",
    "labels_from_config",
    "load_image",
    "map_server_error",
    "parse_image_results",
    "run_isolating",
    "sniff_image_format",
    "split_batches",
    "to_coco_results",
]
