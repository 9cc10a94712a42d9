"""Client of the detection service: ``DetectorClient`` and its typed results.

Usage::

    from client import DetectorClient
    with DetectorClient() as c:  # localhost:8001, or $TRITON_URL
        [result] = c.detect(["astronaut.png"], model="detect_all")
        for d in result.detections:  # boxes in original-image pixels, xyxy
            print(d.label, d.score, d.box_xywh)
"""

from client.api import (
    DEFAULT_URL,
    SERVE_COMMAND,
    URL_ENV,
    Detection,
    DetectorClient,
    DetectorError,
    DetectorInfo,
    ImageNotReadable,
    ImageResult,
    InferenceFailed,
    InvalidImage,
    ModelInfo,
    ModelNotReady,
    ServerUnavailable,
    map_server_error,
    parse_image_results,
    split_batches,
    to_coco_results,
)

__all__ = [
    "DEFAULT_URL",
    "SERVE_COMMAND",
    "URL_ENV",
    "Detection",
    "DetectorClient",
    "DetectorError",
    "DetectorInfo",
    "ImageNotReadable",
    "ImageResult",
    "InferenceFailed",
    "InvalidImage",
    "ModelInfo",
    "ModelNotReady",
    "ServerUnavailable",
    "map_server_error",
    "parse_image_results",
    "split_batches",
    "to_coco_results",
]
