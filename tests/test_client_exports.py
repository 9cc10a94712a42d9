"""The client package's public names: what ``from client import *`` gives a user.

Pinned here by hand, as httpx pins its own (tests/test_exported_members.py): adding
or dropping a public name is a decision, made in this list and in ``__all__`` at once.
"""

from types import ModuleType

import pytest

import client

pytestmark = pytest.mark.unit

PUBLIC = [
    "DetectorClient",
    "DetectOptions",
    "RetryPolicy",
    "NO_RETRY",
    "FailoverPolicy",
    "URL_ENV",
    "TLS_CA_ENV",
    "API_KEY_ENV",
    "Detection",
    "ImageResult",
    "ModelInfo",
    "DetectorInfo",
    "EndpointStats",
    "to_coco_results",
    "probe_clip",
    "read_clip_frames",
    "detect_frames",
    "annotate_clip",
    "ClipInfo",
    "FrameResult",
    "ClipRun",
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


def test_the_public_names_are_exactly_these():
    assert client.__all__ == PUBLIC


def test_every_public_name_is_importable_from_the_package():
    namespace: dict = {}
    exec("from client import *", namespace)  # what a user's star import gets
    assert sorted(n for n in namespace if n != "__builtins__") == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(client, name) is namespace[name]


def test_the_package_exposes_nothing_else_but_its_modules():
    others = [
        name
        for name, value in vars(client).items()
        if not name.startswith("_") and name not in PUBLIC and not isinstance(value, ModuleType)
    ]
    assert others == []


def test_every_public_error_is_a_detector_error():
    errors = [getattr(client, n) for n in PUBLIC]
    errors = [e for e in errors if isinstance(e, type) and issubclass(e, Exception)]
    assert len(errors) == 11
    assert all(issubclass(e, client.DetectorError) for e in errors)
