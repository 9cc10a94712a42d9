"""Client of the detection service: ``DetectorClient`` and its typed results.

Usage::

    from client import DetectOptions, DetectorClient, probe_clip, read_clip_frames
    with DetectorClient() as c:  # localhost:8001, or $TRITON_URL
        [result] = c.detect(["astronaut.png"], model="detect_all", score_threshold=0.5)
        for d in result.detections:  # boxes in original-image pixels, xyxy
            print(d.label, d.score, d.box_xywh)
        clip = probe_clip("clip.mp4")  # frames of a video, batched, results in order:
        options = DetectOptions(score_threshold=0.5)
        for frame in c.detect_frames(read_clip_frames(clip), "detect_all", options):
            print(frame.index, frame.result.summary())

A server on another host: ``DetectorClient("gpu-host:8001", tls="ca.pem",
api_key=key)``, or $DETECTOR_TLS_CA and $DETECTOR_API_KEY. A busy server's refusals
are retried (``RetryPolicy``), then raised as ``ServerBusy``.

Several replicas: ``DetectorClient("a:8001,b:8001")`` (or a list, or $TRITON_URL)
spreads requests over them round robin and sends a request that found one gone to the
next (``FailoverPolicy``); one load-balanced address (``"lb:8001"``,
``"dns:///triton-headless:8001"``) is retried with backoff. Inference is idempotent.

``__all__`` is the public interface. The modules, each importing only those above it:

- ``environment``: the variables the client reads and its default address;
- ``errors``: the ``DetectorError`` hierarchy and the translation of tritonclient's;
- ``results``: what the server answers, typed, and COCO results;
- ``payload``: images read, sized and packed into requests; ``DetectOptions``;
- ``connection``: endpoints, TLS, the API key, the gRPC channel's options;
- ``retry``: when and where a refused request is sent again;
- ``statistics``: Triton's inference statistics, read;
- ``video``: frames and clips through any client that has ``iter_detect``;
- ``api``: ``DetectorClient``, the front door;
- ``cli``: the ``detect`` command.
"""

from client.api import DetectorClient
from client.environment import API_KEY_ENV, TLS_CA_ENV, URL_ENV
from client.errors import (
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
)
from client.payload import DetectOptions
from client.results import Detection, DetectorInfo, ImageResult, ModelInfo, to_coco_results
from client.retry import NO_RETRY, EndpointStats, FailoverPolicy, RetryPolicy
from client.video import (
    ClipInfo,
    ClipRun,
    FrameResult,
    annotate_clip,
    detect_frames,
    probe_clip,
    read_clip_frames,
)

__all__ = [
    # the front door, and what a caller passes it
    "DetectorClient",
    "DetectOptions",
    "RetryPolicy",
    "NO_RETRY",
    "FailoverPolicy",
    "URL_ENV",
    "TLS_CA_ENV",
    "API_KEY_ENV",
    # what it answers
    "Detection",
    "ImageResult",
    "ModelInfo",
    "DetectorInfo",
    "EndpointStats",
    "to_coco_results",
    # clips
    "probe_clip",
    "read_clip_frames",
    "detect_frames",
    "annotate_clip",
    "ClipInfo",
    "FrameResult",
    "ClipRun",
    # what it raises (client.errors draws the hierarchy)
    "DetectorError",
    "ServerUnavailable",
    "ServerBusy",
    "ApiKeyRequired",
    "ModelNotReady",
    "RequestTooLarge",
    "InvalidImage",
    "ImageNotReadable",
    "InferenceFailed",
    "VideoNotReadable",
    "ClipTooLong",
]
