"""Client of the detection service: ``DetectorClient`` and its typed results.

Usage::

    from client import DetectorClient
    with DetectorClient() as c:  # localhost:8001, or $TRITON_URL
        [result] = c.detect(["astronaut.png"], model="detect_all")
        for d in result.detections:  # boxes in original-image pixels, xyxy
            print(d.label, d.score, d.box_xywh)
        clip = probe_clip("clip.mp4")  # frames of a video, batched, results in order:
        for frame in c.detect_frames(read_clip_frames(clip), model="detect_all"):
            print(frame.index, frame.result.summary())

A server on another host: ``DetectorClient("gpu-host:8001", tls="ca.pem",
api_key=key)``, or $DETECTOR_TLS_CA and $DETECTOR_API_KEY. A busy server's refusals
are retried (``RetryPolicy``), then raised as ``ServerBusy``.

Several replicas: ``DetectorClient("a:8001,b:8001")`` (or a list, or $TRITON_URL)
spreads requests over them round robin and sends a request that found one gone to the
next (``FailoverPolicy``); one load-balanced address (``"lb:8001"``,
``"dns:///triton-headless:8001"``) is retried with backoff. Inference is idempotent.
"""

from client.api import DetectorClient
from client.environment import API_KEY_ENV, DEFAULT_URL, TLS_CA_ENV, URL_ENV
from client.errors import (
    SERVE_COMMAND,
    ApiKeyRequired,
    ClipTooLong,
    DetectorError,
    ImageNotReadable,
    InferenceFailed,
    InvalidImage,
    ModelNotReady,
    RequestTooLarge,
    ServerBusy,
    ServerUnavailable,
    VideoNotReadable,
    map_server_error,
)
from client.payload import DetectOptions, split_batches
from client.results import (
    Detection,
    DetectorInfo,
    ImageResult,
    ModelInfo,
    parse_image_results,
    to_coco_results,
)
from client.retry import NO_RETRY, EndpointStats, FailoverPolicy, RetryPolicy
from client.video import (
    MAX_CLIP_FRAMES,
    ClipInfo,
    FrameResult,
    detect_frames,
    probe_clip,
    read_clip_frames,
)

__all__ = [
    "DetectOptions",
    "read_clip_frames",
    "probe_clip",
    "detect_frames",
    "VideoNotReadable",
    "FrameResult",
    "ClipTooLong",
    "ClipInfo",
    "MAX_CLIP_FRAMES",
    "API_KEY_ENV",
    "DEFAULT_URL",
    "NO_RETRY",
    "SERVE_COMMAND",
    "TLS_CA_ENV",
    "URL_ENV",
    "ApiKeyRequired",
    "Detection",
    "DetectorClient",
    "DetectorError",
    "DetectorInfo",
    "EndpointStats",
    "FailoverPolicy",
    "ImageNotReadable",
    "ImageResult",
    "InferenceFailed",
    "InvalidImage",
    "ModelInfo",
    "ModelNotReady",
    "RequestTooLarge",
    "RetryPolicy",
    "ServerBusy",
    "ServerUnavailable",
    "map_server_error",
    "parse_image_results",
    "split_batches",
    "to_coco_results",
]
