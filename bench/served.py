"""What the server serves, as the benchmark learns it and as a run records it.

The benchmark asks the server (``client.DetectorClient``) which detection ensembles it
has loaded, what each is called, whose results each returns, and each detector model's
batching settings. A run keeps that in raw.json's ``meta``:

- ``served``: ``{ensemble: {"title", "detectors": [{"name", "title", "runtime"}],
  "steps": [step model, ...]}}``;
- ``detector_settings``: ``{detector: {"preferred_batch_sizes", "max_queue_delay_us",
  "max_batch_size", "instances"}}``, from the detector model's config.

The report and the check read them back from there (no server needed): an ensemble
that runs one detector (``detect_<name>``) has that detector as its in-process
baseline (old design, limit, paired c=1); ``detect_all`` has none. (The committed runs
in ``docs/bench/``, recorded before the models file existed, had both keys added
afterwards, with the detector models' names of then.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ensemble import contract

# --- from the server -----------------------------------------------------------------


def ready_ensembles(url: str, order: Sequence[str] = ()) -> list[str]:
    """The detection ensembles (``detect_*``) loaded and ready on the server at ``url``:
    those named in ``order`` first, in that order, then the others in the server's
    order, ``detect_all`` last."""
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
    triton = grpcclient.InferenceServerClient(url)
    try:
        for name in names:
            config = triton.get_model_config(name, as_json=True)
            settings[name] = detector_settings(config.get("config", config))
    finally:
        triton.close()
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


def served_of(meta: Mapping) -> dict:
    """``meta["served"]``, or what was served then for a run recorded before it."""
    return meta["served"]


def settings_of(meta: Mapping) -> dict:
    """``meta["detector_settings"]``, or the settings of a run recorded before it."""
    return meta.get("detector_settings", {})


def baseline(served: Mapping, ensemble: str) -> str | None:
    """The one detector ``ensemble`` runs (its in-process baseline), or None for
    ``detect_all`` and ensembles the run does not describe."""
    detectors = served.get(ensemble, {}).get("detectors", [])
    if ensemble == contract.DETECT_ALL or len(detectors) != 1:
        return None
    return detectors[0]["name"]


def baselines(meta: Mapping, ensembles: Sequence[str]) -> dict[str, str]:
    """``{ensemble: detector}`` for the ``ensembles`` that have a baseline, in order."""
    served = served_of(meta)
    found = {e: baseline(served, e) for e in ensembles}
    return {e: d for e, d in found.items() if d is not None}


def title(meta: Mapping, ensemble: str) -> str:
    """What the server calls ``ensemble`` (its detector's title for ``detect_<name>``)."""
    return served_of(meta).get(ensemble, {}).get("title", ensemble)
