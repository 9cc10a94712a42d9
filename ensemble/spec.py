"""The typed spec of every Triton model in the repository.

One entry per model: the Python-backend steps (decode, preprocess, postprocess and
fuse, the last two drawing their results), the three detectors and the four
ensembles. ``configgen`` turns this spec into ``config.pbtxt`` files for each
deployment target; nobody edits those by hand. Adding a detector means one
``DetectorArtifact`` in ``detectors.py``, one family module in ``families/`` and
nothing else: the steps and ensembles below are derived from the detector list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ensemble import contract
from ensemble.detectors import DETECTORS, DetectorArtifact, TensorSpec

# --- tensor names private to the server (steps' own input/output names) ---------

DECODED_IMAGE = "DECODED_IMAGE"  # UINT8 [H, W, 3] RGB, padded to the batch's largest image
IMAGE_SIZE = "IMAGE_SIZE"  # INT32 [2]: (height, width) of the real image inside DECODED_IMAGE
PREPROCESSED = "PREPROCESSED"  # the detector's input, one image


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # Triton dtype without the TYPE_ prefix
    dims: tuple[int, ...]
    optional: bool = False
    reshape: tuple[int, ...] | None = None  # Triton's `reshape`, for scalar-per-image tensors

    @classmethod
    def of(cls, t: TensorSpec, name: str | None = None) -> Tensor:
        return cls(name or t.name, t.dtype, t.dims)


@dataclass(frozen=True)
class PythonStep:
    """A Python-backend model whose ``model.py`` is a thin adapter over ``adapter``."""

    name: str
    adapter: str  # class path imported by model.py, e.g. "ensemble.adapters.Decode"
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    parameters: dict[str, str] = field(default_factory=dict)
    role: str = "step"  # decode | preprocess | postprocess | fuse
    doc: str = ""


@dataclass(frozen=True)
class Detector:
    artifact: DetectorArtifact
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    max_queue_delay_us: int = 2000

    @property
    def name(self) -> str:
        return self.artifact.framework.detector


@dataclass(frozen=True)
class Step:
    model: str
    input_map: dict[str, str]  # step tensor name -> ensemble tensor name
    output_map: dict[str, str]  # step tensor name -> ensemble tensor name


@dataclass(frozen=True)
class Ensemble:
    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    steps: tuple[Step, ...]
    doc: str = ""


# --- public tensors ---------------------------------------------------------------


def _public(name: str, optional: bool = False) -> Tensor:
    return Tensor(name, contract.DTYPES[name], contract.SHAPES[name], optional=optional)


IMAGE_IN = _public(contract.IMAGE)
SCORE_IN = _public(contract.SCORE_THRESHOLD, optional=True)
IOU_IN = _public(contract.IOU_THRESHOLD, optional=True)
DETECTIONS_OUT = _public(contract.DETECTIONS)
NUM_OUT = _public(contract.NUM_DETECTIONS)
ANNOTATED_OUT = _public(contract.ANNOTATED_IMAGE)

DECODED = Tensor(DECODED_IMAGE, "UINT8", (-1, -1, 3))
SIZE = Tensor(IMAGE_SIZE, "INT32", (2,))

# --- steps ------------------------------------------------------------------------

DECODE = PythonStep(
    name="image_decode",
    adapter="ensemble.adapters.Decode",
    inputs=(IMAGE_IN,),
    outputs=(DECODED, SIZE),
    role="decode",
    doc="Encoded image bytes -> RGB uint8 pixels (the batch padded to its largest image).",
)

# The steps that produce a result also draw it: boxes, labels and scores on the
# original image, encoded as JPEG at this quality. Drawing in the same step saves a
# Python-backend round trip per result (a separate draw step cost ~3-4 ms per request
# on the 2-core CPU host at concurrency 1, measured with perf_analyzer).
DRAWING = {"jpeg_quality": "90"}


def preprocess_step(d: DetectorArtifact) -> PythonStep:
    return PythonStep(
        name=f"preprocess_{d.family}",
        adapter="ensemble.adapters.Preprocess",
        inputs=(DECODED, SIZE),
        outputs=(Tensor.of(d.inputs[0], PREPROCESSED),),
        parameters={"family": d.family},
        role="preprocess",
        doc=f"Original pixels -> {d.framework.model_title} input.",
    )


def postprocess_step(d: DetectorArtifact) -> PythonStep:
    return PythonStep(
        name=f"postprocess_{d.family}",
        adapter="ensemble.adapters.Postprocess",
        inputs=tuple(Tensor.of(t) for t in d.outputs) + (DECODED, SIZE, SCORE_IN, IOU_IN),
        outputs=(DETECTIONS_OUT, NUM_OUT, ANNOTATED_OUT),
        parameters={"family": d.family, **DRAWING},
        role="postprocess",
        doc=f"{d.framework.model_title} outputs -> boxes in original pixels (NMS, COCO-80), drawn.",
    )


def _fuse_inputs() -> tuple[Tensor, ...]:
    ins: list[Tensor] = []
    for d in DETECTORS:
        dets, num, _ = contract.framework_outputs(d.framework)
        ins += [Tensor(dets, DETECTIONS_OUT.dtype, DETECTIONS_OUT.dims),
                Tensor(num, NUM_OUT.dtype, NUM_OUT.dims)]  # fmt: skip
    return (*ins, DECODED, SIZE, SCORE_IN, IOU_IN)


FUSE = PythonStep(
    name="fuse_detections",
    adapter="ensemble.adapters.Fuse",
    inputs=_fuse_inputs(),
    outputs=(DETECTIONS_OUT, NUM_OUT, ANNOTATED_OUT),
    parameters=dict(DRAWING),
    role="fuse",
    doc="Weighted box fusion of the three detectors' results, drawn on the original image.",
)

PYTHON_STEPS: tuple[PythonStep, ...] = (
    DECODE,
    *(preprocess_step(d) for d in DETECTORS),
    *(postprocess_step(d) for d in DETECTORS),
    FUSE,
)

DETECTOR_SPECS: tuple[Detector, ...] = tuple(Detector(d) for d in DETECTORS)

# --- ensembles --------------------------------------------------------------------


def _identity(*tensors: Tensor) -> dict[str, str]:
    return {t.name: t.name for t in tensors}


def _detector_chain(d: DetectorArtifact, prefix: str) -> tuple[Step, ...]:
    """preprocess -> detector -> postprocess (which also draws) for one detector.

    ``prefix`` names this chain's private ensemble tensors and its results, so that
    several chains can live side by side in ``detect_all``.
    """
    pre, post = preprocess_step(d), postprocess_step(d)
    raw = {t.name: f"{d.framework.detector}_{t.name}" for t in d.outputs}
    model_input = f"{d.family}_preprocessed"
    dets, num, annotated = (
        contract.framework_outputs(d.framework)
        if prefix
        else (contract.DETECTIONS, contract.NUM_DETECTIONS, contract.ANNOTATED_IMAGE)
    )
    return (
        Step(pre.name, _identity(DECODED, SIZE), {PREPROCESSED: model_input}),
        Step(d.framework.detector, {d.inputs[0].name: model_input}, raw),
        Step(
            post.name,
            {**raw, **_identity(DECODED, SIZE, SCORE_IN, IOU_IN)},
            {
                contract.DETECTIONS: dets,
                contract.NUM_DETECTIONS: num,
                contract.ANNOTATED_IMAGE: annotated,
            },
        ),
    )


def _decode_step() -> Step:
    return Step(DECODE.name, _identity(IMAGE_IN), _identity(DECODED, SIZE))


def single_ensemble(d: DetectorArtifact) -> Ensemble:
    return Ensemble(
        name=d.framework.ensemble,
        inputs=(IMAGE_IN, SCORE_IN, IOU_IN),
        outputs=(DETECTIONS_OUT, NUM_OUT, ANNOTATED_OUT),
        steps=(_decode_step(), *_detector_chain(d, prefix="")),
        doc=f"{d.framework.model_title} served through {d.framework.title}.",
    )


def all_ensemble() -> Ensemble:
    steps: list[Step] = [_decode_step()]
    outputs: list[Tensor] = [DETECTIONS_OUT, NUM_OUT, ANNOTATED_OUT]
    for d in DETECTORS:
        steps += _detector_chain(d, prefix=d.framework.output_prefix)
        dets, num, annotated = contract.framework_outputs(d.framework)
        outputs += [
            Tensor(dets, DETECTIONS_OUT.dtype, DETECTIONS_OUT.dims),
            Tensor(num, NUM_OUT.dtype, NUM_OUT.dims),
            Tensor(annotated, ANNOTATED_OUT.dtype, ANNOTATED_OUT.dims),
        ]
    fuse_in = {t.name: t.name for t in FUSE.inputs}
    steps.append(Step(FUSE.name, fuse_in, _identity(DETECTIONS_OUT, NUM_OUT, ANNOTATED_OUT)))
    return Ensemble(
        name=contract.DETECT_ALL,
        inputs=(IMAGE_IN, SCORE_IN, IOU_IN),
        outputs=tuple(outputs),
        steps=tuple(steps),
        doc="One decode, the three detectors in parallel, weighted box fusion of their results.",
    )


ENSEMBLE_SPECS: tuple[Ensemble, ...] = (*(single_ensemble(d) for d in DETECTORS), all_ensemble())

assert tuple(e.name for e in ENSEMBLE_SPECS) == contract.ENSEMBLES
