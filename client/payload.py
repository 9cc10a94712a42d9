"""What a request carries: the images, read and sized here, what the caller asks of the
server for them (``DetectOptions``), and the tensors they all go in.

Nothing is decoded here: the server decodes and validates every image. An image is
its encoded bytes, or a path to read them from; a file that cannot be read is refused
before any request (``ImageNotReadable``). Images go ``batch_size`` at a time, in
requests no larger than the server reads (``contract.MAX_REQUEST_BYTES``, by
``request_bytes``'s estimate), and the tensors are shaped as the contract says.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import tritonclient.grpc as grpcclient

from client.errors import ImageNotReadable
from client.results import ModelInfo
from ensemble.contract import (
    ALTERNATIVE_LABELS,
    ANNOTATED_IMAGE,
    ANNOTATED_MAX_SIDE,
    DETECT_ALL,
    DETECTIONS,
    DTYPES,
    IMAGE,
    IOU_THRESHOLD,
    MAX_BATCH_SIZE,
    MAX_IMAGE_SIDE,
    MAX_REQUEST_BYTES,
    MERGE_LABELS,
    NUM_DETECTIONS,
    SCORE_THRESHOLD,
    detector_outputs,
)

ImageInput = bytes | str | Path  # encoded image bytes, or the path of an image file
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class DetectOptions:
    """What each request of one call asks of the server besides its images, and how long
    the client waits for each answer. Built once per call, from the caller's keywords
    (``DetectorClient.detect``) or by the caller, and passed down as it is.

    A threshold or side left None is not sent: the server's default applies
    (``contract.DEFAULT_SCORE_THRESHOLD``, ``DEFAULT_IOU_THRESHOLD``, full size).
    """

    score_threshold: float | None = None  # 0..1: keep detections scoring at least this
    iou_threshold: float | None = None  # 0..1: the NMS / fusion overlap threshold
    # Pixels, 0 (full size) to MAX_IMAGE_SIDE: the annotated image's longest side at
    # most. Large photos are then much cheaper to serve (the server may decode them
    # reduced); the boxes stay in the original image's pixels.
    annotated_max_side: int | None = None
    # detect_all's fusion: True gives each object one box, with the best-supported of
    # the labels the detectors gave it (the others in ``Detection.alternatives``); False
    # one box per label. None: the server's default (True). A model that does not fuse
    # refuses it.
    merge_labels: bool | None = None
    timeout: float | None = None  # seconds per request and per try; None: no limit

    def __post_init__(self) -> None:
        for name in ("score_threshold", "iou_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        side = self.annotated_max_side
        if side is not None and not 0 <= side <= MAX_IMAGE_SIDE:
            raise ValueError(
                f"annotated_max_side must be 0 (full size) to {MAX_IMAGE_SIDE} pixels, got {side}"
            )


DEFAULT_OPTIONS = DetectOptions()  # the server's thresholds, full-size images, no timeout

# Estimate of a request's size from its images' sizes (``request_bytes``). Per image: the
# 4-byte length before each BYTES element, 4 bytes per threshold, and margin. Per
# request: model, tensor and output names (three per detector of detect_all), their
# shapes, gRPC and HTTP/2 framing, with room to spare.
IMAGE_OVERHEAD_BYTES = 64
REQUEST_OVERHEAD_BYTES = 16 * 1024


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


def split_batches(items: Sequence[T], batch_size: int = MAX_BATCH_SIZE) -> list[list[T]]:
    """Consecutive chunks of at most ``batch_size`` items (1..MAX_BATCH_SIZE)."""
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}, got {batch_size}")
    return [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]


def request_bytes(image_sizes: Iterable[int]) -> int:
    """Upper estimate of the size in bytes of one request carrying images of these sizes
    (their encoded bytes), as the server counts it against ``MAX_REQUEST_BYTES``."""
    return sum(n + IMAGE_OVERHEAD_BYTES for n in image_sizes) + REQUEST_OVERHEAD_BYTES


def pack_requests(image_sizes: Sequence[int], limit: int = MAX_REQUEST_BYTES) -> list[list[int]]:
    """Consecutive groups of positions in ``image_sizes`` whose requests fit in ``limit``
    bytes (by ``request_bytes``). An image too large even alone is a group of its own,
    so that its request, refused, fails that image only."""
    groups: list[list[int]] = []
    current: list[int] = []
    for i, size in enumerate(image_sizes):
        if current and request_bytes([*(image_sizes[j] for j in current), size]) > limit:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


def _tensor(name: str, array: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), DTYPES[name])
    tensor.set_data_from_numpy(array)
    return tensor


def build_inputs(
    payloads: Sequence[bytes],
    options: DetectOptions = DEFAULT_OPTIONS,
    info: ModelInfo | None = None,
) -> list[grpcclient.InferInput]:
    """The request tensors for one batch: the images, then each of ``options``'
    thresholds, annotated image side and label merging that is given (one value per
    image). With ``info``, the model's description, label merging asked of a model
    that does not fuse is refused here (ValueError) rather than by the server."""
    if info is not None and options.merge_labels is not None and MERGE_LABELS not in info.inputs:
        raise ValueError(
            f"merge_labels is an option of the fused result ({DETECT_ALL}); "
            f"{info.name} does not fuse"
        )
    n = len(payloads)
    images = np.empty((n, 1), dtype=object)
    images[:, 0] = list(payloads)
    inputs = [_tensor(IMAGE, images)]
    for name, value in (
        (SCORE_THRESHOLD, options.score_threshold),
        (IOU_THRESHOLD, options.iou_threshold),
    ):
        if value is not None:
            inputs.append(_tensor(name, np.full((n, 1), value, np.float32)))
    if options.annotated_max_side is not None:
        side = np.full((n, 1), options.annotated_max_side, np.int32)
        inputs.append(_tensor(ANNOTATED_MAX_SIDE, side))
    if options.merge_labels is not None:
        inputs.append(_tensor(MERGE_LABELS, np.full((n, 1), options.merge_labels, np.bool_)))
    return inputs


def output_names(info: ModelInfo) -> list[str]:
    """Every output of ``info``'s ensemble: the main result (with the alternative
    labels where it has them), then each detector's."""
    names = [DETECTIONS, NUM_DETECTIONS, ANNOTATED_IMAGE]
    if ALTERNATIVE_LABELS in info.outputs:
        names.append(ALTERNATIVE_LABELS)
    for d in info.per_detector_outputs:
        names.extend(detector_outputs(d.name))
    return names
