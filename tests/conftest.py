"""Shared fixtures and the test tiers.

Every test belongs to exactly one tier, by a marker on its module or itself, and all the
tests of a module to the same one (a module that needs two is split: ``test_x.py`` and
``test_x_server.py``), so that a tier runs whole modules:

- ``unit``: plain functions and adapters; no setup step, no built model, no server.
  ``make test-unit`` runs these (seconds).
- ``models``: needs the built detector artifacts (``make models``), no server.
- ``server``: needs the real Triton server, started once per session by the project's
  own launcher on free localhost ports (so the tests never collide with a demo on
  8000-8002), or the one at ``$DETECTOR_TEST_URL`` (a GPU host, say).

``gpu`` marks tests that also need a GPU; they skip cleanly without one. Every test has
a timeout (pytest-timeout): the ini's default, shorter for the unit tier.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest

PHOTOS_DIR = Path(__import__("skimage.data", fromlist=["data"]).__file__).parent
PHOTOS = ("astronaut", "coffee", "horse", "motorcycle_left", "chelsea", "camera")

TIERS = ("unit", "models", "server")
UNIT_TIMEOUT_S = 30
# The tests' own server address; not the client's TRITON_URL, so that a user's
# environment never points the tests at a server by accident.
TEST_URL_ENV = "DETECTOR_TEST_URL"


# Before ``-m`` deselects anything: a module that mixes tiers is refused in every run.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    tiers_of_module: dict[str, set[str]] = defaultdict(set)
    for item in items:
        tiers = [t for t in TIERS if item.get_closest_marker(t)]
        if len(tiers) != 1:
            raise pytest.UsageError(
                f"{item.nodeid}: mark it with exactly one tier of {', '.join(TIERS)} "
                f"(found {tiers or 'none'})"
            )
        tiers_of_module[item.nodeid.split("::")[0]].add(tiers[0])
        if tiers == ["unit"] and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_S))
    mixed = {module: sorted(t) for module, t in tiers_of_module.items() if len(t) > 1}
    if mixed:
        raise pytest.UsageError(
            "\n".join(
                f"{module}: its tests are in tiers {', '.join(tiers)}: one tier per module, "
                "so split it (the server-tier tests into a test_..._server.py, say)"
                for module, tiers in sorted(mixed.items())
            )
        )


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    return PHOTOS_DIR


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """The bytes of scikit-image's bundled photos, by name."""
    return {name: (PHOTOS_DIR / f"{name}.png").read_bytes() for name in PHOTOS}


def require_models() -> None:
    """Fail (not skip) when the bundled models are not built: CI builds them."""
    from ensemble.recipes import RECIPES, artifact_path

    missing = [str(artifact_path(r)) for r in RECIPES if not artifact_path(r).exists()]
    if missing:
        pytest.fail(f"models are not built ({', '.join(missing)}): run `make setup`", False)


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory):
    """The session's ready server (``ensemble.server.TritonServer``: its processes,
    ports, log) with every model of ``models.toml`` loaded; None when the tests run
    against ``$DETECTOR_TEST_URL``, a server this session did not start."""
    if os.environ.get(TEST_URL_ENV):
        yield None
        return
    from ensemble.server import running_server

    require_models()
    with running_server(workdir=tmp_path_factory.mktemp("triton")) as server:
        yield server


@pytest.fixture(scope="session")
def triton_url(triton_server) -> str:
    """gRPC address of the session's server (see ``triton_server``)."""
    return triton_server.grpc_url if triton_server else os.environ[TEST_URL_ENV]


@pytest.fixture(scope="session")
def grpc(triton_url):
    """A raw tritonclient gRPC client: the server tests speak only the contract."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton_url)
    yield client
    client.close()
