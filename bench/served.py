"""The server a benchmark measures: started here unless given, what it serves, and
that as a run records it.

The benchmark asks the server (``client.DetectorClient``) which detection ensembles it
has loaded, what each is called, whose results each returns, and each detector model's
batching settings. A run keeps that in raw.json's ``meta``:

- ``served``: ``{ensemble: {"title", "detectors": [{"name", "title", "runtime"}],
  "steps": [step model, ...]}}``;
- ``detector_settings``: ``{detector: {"preferred_batch_sizes", "max_queue_delay_us",
  "max_batch_size", "instances"}}``, from the detector model's config.

The report and the check read them back from there (no server needed): an ensemble
that runs one detector (``detect_<name>``) has that detector as its in-process
baseline (old design, limit, paired c=1); ``detect_all`` has none. (The runs in
``docs/bench/``, recorded before the models file, had both keys added afterwards.)
"""

from __future__ import annotations

import contextlib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence

from ensemble import contract

# --- the server -----------------------------------------------------------------------


@contextlib.contextmanager
def triton(
    url: str | None, models=None, log: Callable[[str], None] = print, **options
) -> Iterator[tuple[str, object | None]]:
    """``(gRPC URL, running server)`` to measure: ``url`` and None (a server started
    elsewhere, whose processes are not ours to see), or, without ``url``, a Triton
    started here on ``models`` (a models file or registry; ``options`` are
    ``ensemble.server.running_server``'s) and its ``TritonServer``, stopped on exit."""
    if url is not None:
        yield url, None
        return
    from ensemble.server import running_server

    log("starting Triton")
    with running_server(models, **options) as server:
        log(f"Triton ready at {server.grpc_url}")
        yield server.grpc_url, server


def is_ready(http_url: str) -> bool:
    """Whether ``<http_url>/v2/health/ready`` answers 200 within 1 s."""
    try:
        with urllib.request.urlopen(f"{http_url}/v2/health/ready", timeout=1) as r:
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


def ready_ensembles(url: str, order: Sequence[str] = ()) -> list[str]:
    """The detection ensembles loaded and ready on the server at ``url``, in
    :func:`ordered`'s order."""
    from client import DetectorClient

    with DetectorClient(url) as client:
        ready = client.ready_models()
    return ordered([n for n, ok in ready.items() if ok], order)


def ordered(models: Sequence[str], order: Sequence[str] = ()) -> list[str]:
    """The detection ensembles (``detect_*``) among ``models``: those named in ``order``
    first, in that order, then the others as they come, ``detect_all`` last."""
    names = [n for n in models if n.startswith(contract.ENSEMBLE_PREFIX)]
    rank = {name: i for i, name in enumerate(order)}
    return sorted(names, key=lambda n: (n == contract.DETECT_ALL, rank.get(n, len(rank))))


def describe(url: str, ensembles: Sequence[str]) -> tuple[dict, dict]:
    """``(served, detector_settings)`` of ``ensembles`` on the server at ``url``, as
    the module docstring describes them; raises ``client.DetectorError`` for an
    ensemble the server does not have."""
    import tritonclient.grpc as grpcclient

    from client import DetectorClient

    served: dict[str, dict] = {}
    with DetectorClient(url) as client:
        for ensemble in ensembles:
            info = client.model_info(ensemble)
            served[ensemble] = {
                "title": info.title,
                "detectors": [
                    {"name": d.name, "title": d.title, "runtime": d.runtime} for d in info.detectors
                ],
                "steps": list(info.steps),
            }
    names = dict.fromkeys(d["name"] for s in served.values() for d in s["detectors"])
    settings: dict[str, dict] = {}
    triton_client = grpcclient.InferenceServerClient(url)
    try:
        for name in names:
            config = triton_client.get_model_config(name, as_json=True)
            settings[name] = detector_settings(config.get("config", config))
    finally:
        triton_client.close()
    return served, settings


def detector_settings(config: Mapping) -> dict:
    """A detector model's batching settings from its config (as JSON): preferred batch
    sizes, max queue delay (µs), max batch size and instances (over all groups)."""
    batching = config.get("dynamic_batching", {})
    return {
        "preferred_batch_sizes": [int(b) for b in batching.get("preferred_batch_size", [])],
        "max_queue_delay_us": int(batching.get("max_queue_delay_microseconds", 0)),
        "max_batch_size": int(config.get("max_batch_size", 0)),
        "instances": sum(int(g.get("count", 1)) for g in config.get("instance_group", [])),
    }


# --- from a run's meta ---------------------------------------------------------------


def baseline(served: Mapping, ensemble: str) -> str | None:
    """The one detector ``ensemble`` runs (its in-process baseline), or None for
    ``detect_all`` and ensembles the run does not describe."""
    detectors = served.get(ensemble, {}).get("detectors", [])
    if ensemble == contract.DETECT_ALL or len(detectors) != 1:
        return None
    return detectors[0]["name"]


def baselines(meta: Mapping, ensembles: Sequence[str]) -> dict[str, str]:
    """``{ensemble: detector}`` for the ``ensembles`` that have a baseline, in order."""
    found = {e: baseline(meta["served"], e) for e in ensembles}
    return {e: d for e, d in found.items() if d is not None}


def title(meta: Mapping, ensemble: str) -> str:
    """What the server calls ``ensemble`` (its detector's title for ``detect_<name>``)."""
    return meta["served"].get(ensemble, {}).get("title", ensemble)
