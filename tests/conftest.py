"""Shared fixtures: real photos and one real Triton server per test session.

The server is the project's own (``ensemble.server``) on free localhost ports, on a
repository written by ``configgen`` with the built artifacts; so the tests never
collide with a demo server on 8000-8002. Set ``TRITON_URL=host:port`` to test an
already running server instead (a GPU host, say).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PHOTOS_DIR = Path(__import__("skimage.data", fromlist=["data"]).__file__).parent
PHOTOS = ("astronaut", "coffee", "horse", "motorcycle_left", "chelsea", "camera")


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    return PHOTOS_DIR


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """The bytes of scikit-image's bundled photos, by name."""
    return {name: (PHOTOS_DIR / f"{name}.png").read_bytes() for name in PHOTOS}


def _require_models() -> None:
    from ensemble.build import artifact_path
    from ensemble.detectors import DETECTORS

    missing = [str(artifact_path(d)) for d in DETECTORS if not artifact_path(d).exists()]
    if missing:
        pytest.fail(f"models are not built ({', '.join(missing)}): run `make setup`", False)


@pytest.fixture(scope="session")
def triton_url(tmp_path_factory) -> str:
    """gRPC address of a ready server with every model loaded."""
    if os.environ.get("TRITON_URL"):
        yield os.environ["TRITON_URL"]
        return
    from ensemble.server import Ports, TritonServer, free_port, prepare_repository

    _require_models()
    root = tmp_path_factory.mktemp("triton")
    repository = prepare_repository("cpu", out=root / "repository")
    server = TritonServer(
        repository,
        ports=Ports(free_port(), free_port(), free_port()),
        log_path=root / "tritonserver.log",
    )
    server.start()
    try:
        server.wait_ready()
        yield server.grpc_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def grpc(triton_url):
    """A raw tritonclient gRPC client: the server tests speak only the contract."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton_url)
    yield client
    client.close()
