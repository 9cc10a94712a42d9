"""The model catalogue: what the page learns from the server and offers every tab.

The server says which detection ensembles it serves (its repository index) and, in each
ensemble's config, its title, labels, detectors and steps (``client.ModelInfo``).
``ServerModels`` asks for that at most once per ``CATALOG_TTL_S`` for all pages and keeps
the last answer while the server is down; ``Catalog`` is one answer, in the order the
model choice shows it, with the captions the page gives each detector. Every tab checks
the chosen model here (``ServerModels.served``/``info``), so a server started on any
models file is offered as it is.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from client import DetectorClient, DetectorError, DetectorInfo, ModelInfo, ModelNotReady
from client.errors import first_line
from client.results import detection_ensembles
from ensemble import contract
from ui.common import InputError

log = logging.getLogger(__name__)

CATALOG_TTL_S = 2.0  # the server is asked for its models at most this often, all pages together


def detector_caption(detector: DetectorInfo) -> str:
    """``"ONNX Runtime · CenterNet MobileNetV3 512"``: the runtime and the network's title,
    as the server calls them (a runtime it gives no title is shown by its key)."""
    runtime = detector.runtime_title or detector.runtime
    return f"{runtime} · {detector.title}" if runtime else detector.title


def detector_captions(detectors: Iterable[DetectorInfo]) -> dict[str, str]:
    """Caption per detector name. Two detectors that would look alike (same runtime and
    title) get their names appended, so that every caption names one detector."""
    unique = {d.name: d for d in detectors}
    plain = {name: detector_caption(d) for name, d in unique.items()}
    seen = Counter(plain.values())
    return {name: c if seen[c] == 1 else f"{c} ({name})" for name, c in plain.items()}


def model_label(info: ModelInfo, captions: Mapping[str, str] | None = None) -> str:
    """What the model choice calls an ensemble: detect_all by its title (``"All 3
    fused"``), a one-detector ensemble by its detector's caption, any other by its title."""
    captions = captions or {}
    if info.name == contract.DETECT_ALL:
        if info.title and info.title != info.name:
            return info.title
        return f"All {len(info.detectors)} fused" if info.detectors else info.name
    if len(info.detectors) == 1:
        (only,) = info.detectors
        return captions.get(only.name) or detector_caption(only)
    return info.title or info.name


def ranked(names: Iterable[str], first: Sequence[str]) -> list[str]:
    """``names`` with those in ``first`` first, in its order; the rest keep theirs."""
    rank = {name: i for i, name in enumerate(first)}
    return sorted(names, key=lambda n: rank.get(n, len(rank)))


@dataclass(frozen=True)
class Catalog:
    """What the server serves, as the page offers it: its detection ensembles (detect_all
    first) and the config of each one the server could describe (an ensemble that is
    not loaded has none: it is offered by its name, and asking it gets the server's
    reason)."""

    names: tuple[str, ...] = ()
    infos: Mapping[str, ModelInfo] = field(default_factory=dict)

    @classmethod
    def build(cls, names: Iterable[str], infos: Mapping[str, ModelInfo]) -> Catalog:
        """The ensembles ``names`` in the page's order: detect_all, then its fused
        detectors' ensembles in its config's order (the models file's), then the rest
        as listed."""
        fused = infos.get(contract.DETECT_ALL)
        first = [contract.DETECT_ALL, *(d.ensemble for d in fused.detectors)] if fused else []
        return cls(tuple(ranked(detection_ensembles(names), first)), dict(infos))

    @cached_property
    def captions(self) -> dict[str, str]:
        """Caption per detector name, over every detector the ensembles name."""
        return detector_captions(d for info in self.infos.values() for d in info.detectors)

    def label(self, model: str) -> str:
        info = self.infos.get(model)
        return model if info is None else model_label(info, self.captions)

    def choices(self) -> list[tuple[str, str]]:
        """``(label, ensemble)`` pairs of the model choice, in the catalog's order."""
        return [(self.label(name), name) for name in self.names]

    @property
    def default(self) -> str | None:
        """The choice a new page starts on: detect_all when served, else the first."""
        return self.names[0] if self.names else None


class ServerModels:
    """The server's ``Catalog``, asked of it at most once per ``ttl_s`` for all pages.

    The last catalog the server gave is kept while it does not answer, with one line
    saying why the last question failed. Each ensemble's config is read
    once (``DetectorClient.model_info`` keeps it), so a refresh is one repository-index
    call plus one config call per ensemble not seen before.
    """

    def __init__(self, client: DetectorClient, ttl_s: float = CATALOG_TTL_S):
        self.client = client
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._catalog = Catalog()
        self._error = ""
        self._at = -math.inf

    def get(self, max_age_s: float | None = None) -> tuple[Catalog, str]:
        """``(catalog, error)``, asked anew when the last answer is older than
        ``max_age_s`` seconds (default ``ttl_s``). Never raises."""
        max_age = self.ttl_s if max_age_s is None else max_age_s
        with self._lock:
            if time.monotonic() - self._at >= max_age:
                try:
                    self._catalog, self._error = self._ask(), ""
                except DetectorError as e:
                    self._error = str(e)
                except Exception as e:  # a reply we cannot read: keep the page up
                    log.warning("cannot list the server's models: %s", first_line(str(e)))
                    self._error = f"cannot list the server's models: {first_line(str(e))}"
                self._at = time.monotonic()
            return self._catalog, self._error

    def served(self, model: Any) -> Catalog:
        """The catalog, asked anew when ``model`` is not in it (it may be served since
        the last look); ``InputError`` saying why when the server does not serve it
        (or does not answer)."""
        if not model:
            raise InputError("no model chosen: pick one of the server's models")
        catalog, error = self.get()
        if model not in catalog.names:
            catalog, error = self.get(max_age_s=0)
        if model not in catalog.names:
            if error:  # the server does not answer: say that, not "unknown"
                raise InputError(error)
            served = ", ".join(catalog.names) or "none"
            raise InputError(f"unknown model {model!r}: this server serves {served}")
        return catalog

    def info(self, model: Any) -> ModelInfo:
        """The config of ``model``, a served ensemble (``served``'s errors otherwise);
        one listed but not loaded is asked of the server, which says why."""
        info = self.served(model).infos.get(model)
        return info if info is not None else self.client.model_info(model)

    def _ask(self) -> Catalog:
        names = self.client.ensembles()
        infos = {}
        for name in names:
            try:
                infos[name] = self.client.model_info(name)
            except ModelNotReady:  # listed, not loaded (yet): offered by its name
                continue
        return Catalog.build(names, infos)
