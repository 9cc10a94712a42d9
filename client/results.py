"""What the server answers, typed: the detections of each image, and what it says of its
ensembles (titles, labels, detectors, steps).

Coordinates: every box is in pixels of the *original* image, as the contract says:
``(x1, y1, x2, y2)`` with x to the right and y down, origin at the top-left corner of
the top-left pixel. ``Detection.box_xywh`` gives the COCO form ``(x, y, width,
height)``, and ``to_coco_results`` the COCO results format.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from client.errors import DetectorError, InferenceFailed
from ensemble.contract import (
    ALTERNATIVE_LABELS,
    ANNOTATED_IMAGE,
    COCO80_LABELS,
    COCO91_IDS,
    DETECT_ALL,
    DETECTION_FIELDS,
    DETECTIONS,
    DETECTORS_PARAMETER,
    ENSEMBLE_PREFIX,
    LABELS_PARAMETER,
    MAX_BATCH_SIZE,
    NUM_DETECTIONS,
    TITLE_PARAMETER,
    detector_outputs,
    ensemble_name,
)

log = logging.getLogger(__name__)


@dataclass
class Detection:
    """One detected object; box in original-image pixels, ``(x1, y1, x2, y2)``."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float  # 0..1
    class_id: int  # index into the model's labels (COCO-80 for the bundled detectors)
    label: str
    # A tracking ensemble's answer only: the id of the object this box follows over
    # the frames of one sequence; -1: none (not tracked, or not yet confirmed).
    track_id: int = -1
    # The other labels the detectors gave this object and their support, most supported
    # first, on the scale of ``score`` (which is its own label's support): a fused
    # result's (detect_all, merging labels), empty elsewhere.
    alternatives: tuple[tuple[str, float], ...] = ()

    @property
    def box_xywh(self) -> tuple[float, float, float, float]:
        """``(x, y, width, height)`` in pixels, top-left corner first (the COCO bbox)."""
        return (self.x1, self.y1, self.x2 - self.x1, self.y2 - self.y1)


@dataclass
class ImageResult:
    """What the server returned for one image."""

    detections: list[Detection]
    annotated_jpeg: bytes  # JPEG of the original image with the boxes drawn
    # detect_all only: each fused detector's own result, keyed by its name ("pytorch").
    per_detector: dict[str, ImageResult] = field(default_factory=dict)
    source: str = ""  # file name, or "image #3" when bytes were given
    # Wall-clock seconds of the request that carried this image; the images of one
    # batch share their request, so they share this number.
    latency_s: float = 0.0

    def summary(self) -> str:
        """``"person 0.92, cup 0.41"``, highest score first; ``"nothing found"`` if empty."""
        dets = sorted(self.detections, key=lambda d: d.score, reverse=True)
        return ", ".join(f"{d.label} {d.score:.2f}" for d in dets) or "nothing found"


# What one image got: its result, or the error that concerns it alone (see
# client.errors: unreadable, too large, refused or failed).
Outcome = ImageResult | DetectorError


def results_or_raise(outcomes: Iterable[Sequence[Outcome]]) -> list[ImageResult]:
    """The results of ``outcomes`` (batches of them, as ``DetectorClient.iter_detect``
    yields them), in order; the first error among them is raised instead."""
    results: list[ImageResult] = []
    for batch in outcomes:
        for outcome in batch:
            if isinstance(outcome, DetectorError):
                raise outcome
            results.append(outcome)
    return results


def label_for(class_id: int, labels: Sequence[str]) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else f"class {class_id}"


@dataclass(frozen=True)
class DetectorInfo:
    """One detector as the server describes it."""

    name: str  # its key: ensemble detect_<name>, outputs <NAME>_* in detect_all
    title: str  # what people call the network
    runtime: str  # torchscript | savedmodel | onnx | python
    labels: tuple[str, ...] = ()  # its own label list: its class ids index it
    runtime_title: str = ""  # what people call the runtime: "ONNX Runtime"

    @property
    def ensemble(self) -> str:
        return ENSEMBLE_PREFIX + self.name


@dataclass(frozen=True)
class EnsembleStep:
    """One step of an ensemble's schedule: its model and the ensemble tensors it reads
    and writes (the values of its input and output maps)."""

    model: str
    inputs: frozenset[str]
    outputs: frozenset[str]


def _map_values(mapping: object) -> frozenset[str]:
    # JSON configs give a map as {key: value}; some writers give [{"key", "value"}].
    if isinstance(mapping, Mapping):
        return frozenset(str(v) for v in mapping.values())
    if isinstance(mapping, list):
        return frozenset(str(e["value"]) for e in mapping if isinstance(e, Mapping))
    return frozenset()


def ensemble_steps(config: Mapping) -> tuple[EnsembleStep, ...]:
    """The steps of an ensemble from its config (``get_model_config(as_json=True)``,
    with or without the outer ``"config"`` key), in the config's order; empty for a
    model that is not an ensemble."""
    config = config.get("config", config)
    return tuple(
        EnsembleStep(
            str(s["model_name"]),
            _map_values(s.get("input_map", {})),
            _map_values(s.get("output_map", {})),
        )
        for s in config.get("ensemble_scheduling", {}).get("step", [])
    )


@dataclass(frozen=True)
class ModelInfo:
    """What the server says about one ensemble, read from its config."""

    name: str
    title: str
    labels: tuple[str, ...]
    detectors: tuple[DetectorInfo, ...]  # whose results it returns
    steps: tuple[str, ...]  # its step models, in the config's order
    # Images per request the server accepts (the config's max_batch_size).
    max_batch_size: int = MAX_BATCH_SIZE
    # Which step feeds which: each step's input and output tensors.
    graph: tuple[EnsembleStep, ...] = ()
    # The names of its input and output tensors, from its config.
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    @property
    def per_detector_outputs(self) -> tuple[DetectorInfo, ...]:
        """Detectors whose own outputs (``<NAME>_*``) it returns besides the main ones."""
        return self.detectors if self.name == DETECT_ALL else ()

    @classmethod
    def from_config(cls, config: Mapping, model: str = "") -> ModelInfo:
        """From ``get_model_config(as_json=True)``. A config without the parameters
        (a server of another project) gets COCO-80 labels and no detector list."""
        config = config.get("config", config)
        params = config.get("parameters", {})
        raw = params.get(DETECTORS_PARAMETER, {}).get("string_value", "[]")
        detectors = tuple(
            DetectorInfo(
                d["name"], d.get("title", d["name"]), d.get("runtime", ""),
                tuple(d.get("labels", ())), d.get("runtime_title", ""),
            )
            for d in json.loads(raw)
        )  # fmt: skip
        steps = tuple(
            s["model_name"] for s in config.get("ensemble_scheduling", {}).get("step", [])
        )
        name = config.get("name", model)
        return cls(
            name=name,
            title=params.get(TITLE_PARAMETER, {}).get("string_value", name),
            labels=tuple(labels_from_config(config, model)),
            detectors=detectors,
            steps=steps,
            max_batch_size=int(config.get("max_batch_size") or MAX_BATCH_SIZE),
            graph=ensemble_steps(config),
            inputs=tuple(str(i["name"]) for i in config.get("input", [])),
            outputs=tuple(str(o["name"]) for o in config.get("output", [])),
        )


def labels_from_config(config: Mapping, model: str = "") -> list[str]:
    """The label list in a model config (as ``get_model_config(as_json=True)`` returns it).

    Falls back to COCO-80, with a warning, when the parameter is missing (a model
    served by something other than this project).
    """
    params = config.get("config", config).get("parameters", {})
    raw = params.get(LABELS_PARAMETER, {}).get("string_value")
    if raw is None:
        log.warning("model %r has no %r parameter; using COCO-80 labels", model, LABELS_PARAMETER)
        return list(COCO80_LABELS)
    labels = json.loads(raw)
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise InferenceFailed(f"model {model!r}: parameter {LABELS_PARAMETER!r} is not a JSON list")
    return labels


def detection_ensembles(names: Iterable[str]) -> list[str]:
    """The detection ensembles (``detect_*``) among model ``names``: ``detect_all``
    first, then the others in the order given."""
    found = [n for n in names if n.startswith(ENSEMBLE_PREFIX)]
    return sorted(found, key=lambda n: n != DETECT_ALL)


def parse_image_results(
    outputs: Mapping[str, np.ndarray],
    labels: Sequence[str],
    detectors: Sequence[str] = (),
    *,
    sources: Sequence[str] | None = None,
    latency_s: float = 0.0,
    detector_labels: Mapping[str, Sequence[str]] | None = None,
) -> list[ImageResult]:
    """Build one ``ImageResult`` per image from a reply's output arrays.

    ``outputs`` maps tensor names to arrays shaped as the contract says: DETECTIONS
    ``[B, MAX_DETECTIONS, 6]`` (rows x1, y1, x2, y2 in original pixels, score,
    class_id), NUM_DETECTIONS ``[B, 1]``, ANNOTATED_IMAGE ``[B, 1]`` of bytes. Only the
    first NUM_DETECTIONS rows of each image are read; the padding after them is
    ignored whatever it holds. ``detectors`` names the detectors whose prefixed
    outputs (detect_all) are present too; ``labels`` is the model's label list (for
    detect_all the union of its detectors'), and ``detector_labels`` each detector's
    own, which its prefixed outputs index (``labels`` where it is not given). Where
    ALTERNATIVE_LABELS is present too (detect_all), each detection gets its alternatives.
    """
    results = _parse_block(outputs, (DETECTIONS, NUM_DETECTIONS, ANNOTATED_IMAGE), labels)
    if outputs.get(ALTERNATIVE_LABELS) is not None:
        _add_alternatives(results, outputs[ALTERNATIVE_LABELS], labels)
    for name in detectors:
        own_labels = (detector_labels or {}).get(name) or labels
        for result, own in zip(
            results, _parse_block(outputs, detector_outputs(name), own_labels), strict=True
        ):
            result.per_detector[name] = own
    for i, result in enumerate(results):
        source = sources[i] if sources is not None else f"image #{i}"
        for r in (result, *result.per_detector.values()):
            r.source = source
            r.latency_s = latency_s
    return results


def _parse_block(
    outputs: Mapping[str, np.ndarray], names: Sequence[str], labels: Sequence[str]
) -> list[ImageResult]:
    dets_name, num_name, image_name = names
    missing = [n for n in names if n not in outputs or outputs[n] is None]
    if missing:
        raise InferenceFailed(f"reply lacks output(s) {', '.join(missing)}")
    dets = np.asarray(outputs[dets_name], dtype=np.float32)
    nums = np.asarray(outputs[num_name]).reshape(-1)
    images = np.asarray(outputs[image_name], dtype=object).reshape(-1)
    if dets.ndim != 3 or dets.shape[2] != len(DETECTION_FIELDS):
        raise InferenceFailed(f"{dets_name} has shape {dets.shape}, expected [B, N, 6]")
    if not len(dets) == len(nums) == len(images):
        raise InferenceFailed(
            f"batch sizes disagree: {dets_name} {len(dets)}, {num_name} {len(nums)}, "
            f"{image_name} {len(images)}"
        )
    results = []
    for rows, n, jpeg in zip(dets, nums, images, strict=True):
        count = min(max(int(n), 0), len(rows))
        detections = [
            Detection(x1, y1, x2, y2, score, int(cls), label_for(int(cls), labels))
            for x1, y1, x2, y2, score, cls in rows[:count].tolist()  # Python floats
        ]
        results.append(ImageResult(detections, _as_bytes(jpeg)))
    return results


def _add_alternatives(
    results: Sequence[ImageResult], alternatives: np.ndarray, labels: Sequence[str]
) -> None:
    """Give each detection of ``results`` its row's other labels from ALTERNATIVE_LABELS
    ``[B, MAX_DETECTIONS, K, 2]``: (class_id, support) pairs, padded with class_id -1."""
    alternatives = np.asarray(alternatives, dtype=np.float32)
    if alternatives.ndim != 4 or alternatives.shape[3] != 2 or len(alternatives) != len(results):
        raise InferenceFailed(
            f"{ALTERNATIVE_LABELS} has shape {alternatives.shape}, expected "
            f"[{len(results)}, N, K, 2]"
        )
    for result, rows in zip(results, alternatives, strict=True):
        for detection, pairs in zip(result.detections, rows, strict=False):  # rows: padded
            detection.alternatives = tuple(
                (label_for(int(class_id), labels), support)
                for class_id, support in pairs.tolist()
                if class_id >= 0
            )


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1")
    return bytes(value)  # type: ignore[call-overload]


def to_coco_results(
    result: ImageResult, *, image_id: int, file_name: str, model: str, per_detector: bool = False
) -> list[dict]:
    """One image's detections as COCO results-format dicts.

    ``bbox`` is ``[x, y, width, height]`` in original-image pixels. ``category_id`` is
    the official COCO id (1..90 with gaps) for a COCO-80 label, as pycocotools expects;
    for a detector with labels of its own it is the class index plus one (COCO ids
    start at 1), and ``category_name`` always says the label. With ``per_detector``
    (a detect_all result), each detector's own detections follow, ``model`` naming that
    detector's ensemble (``detect_<name>``).
    """
    entries = []
    for d in result.detections:
        if d.class_id < 0:
            continue
        coco = d.class_id < len(COCO80_LABELS) and COCO80_LABELS[d.class_id] == d.label
        entries.append(
            {
                "image_id": image_id,
                "file_name": file_name,
                "category_id": COCO91_IDS[d.class_id] if coco else d.class_id + 1,
                "category_name": d.label,
                "bbox": [round(v, 2) for v in d.box_xywh],
                "score": round(d.score, 5),
                "model": model,
            }
        )
    if per_detector:
        for name, own in result.per_detector.items():
            own_model = ensemble_name(name)
            entries += to_coco_results(own, image_id=image_id, file_name=file_name, model=own_model)
    return entries
