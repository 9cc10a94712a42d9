"""The typed spec of every Triton model a registry needs.

:func:`repository_spec` turns a :class:`~ensemble.registry.Registry` into one entry per
Triton model: the Python-backend steps (decode; per detector its preprocess and its
postprocess, which also draws; the fusion, which draws too), the detectors, and the
ensembles ``detect_<name>`` and ``detect_all``. ``configgen`` writes these as
``config.pbtxt`` files for each deployment target; nobody edits those by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ensemble import contract
from ensemble.families import NetworkTensor
from ensemble.registry import Detector, Registry, parameters_json

# --- tensor names private to the server (steps' own input/output names) ---------

DECODED_IMAGE = "DECODED_IMAGE"  # UINT8 [H, W, 3] RGB, padded to the batch's largest image
IMAGE_SIZE = "IMAGE_SIZE"  # INT32 [2]: (height, width) of the real image inside DECODED_IMAGE
# INT32 [2]: (height, width) of the photo itself, upright: the pixels DETECTIONS are in.
# DECODED_IMAGE may be smaller (a reduced decode, see contract.ANNOTATED_MAX_SIDE).
ORIGINAL_SIZE = "ORIGINAL_SIZE"
PREPROCESSED = "PREPROCESSED"  # the detector's input, one image


@dataclass(frozen=True)
class Tensor:
    """An input or output of a Triton model's config (the batch dimension left out);
    ``optional`` inputs may be absent from a request. A family's network declares its
    own tensors as ``families.NetworkTensor``."""

    name: str
    dtype: str  # Triton dtype without the TYPE_ prefix
    dims: tuple[int, ...]
    optional: bool = False

    @classmethod
    def of(cls, t: NetworkTensor, name: str | None = None) -> Tensor:
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
class DetectorModel:
    """The Triton model that runs one detector's artifact."""

    detector: Detector

    @property
    def name(self) -> str:
        return self.detector.name

    @property
    def inputs(self) -> tuple[Tensor, ...]:
        """Under the artifact's own names (a native backend binds them)."""
        return tuple(Tensor.of(t) for t in self.detector.model_inputs)

    @property
    def outputs(self) -> tuple[Tensor, ...]:
        return tuple(Tensor.of(t) for t in self.detector.model_outputs)


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
    labels: tuple[str, ...]
    title: str
    detectors: tuple[Detector, ...]  # whose results it returns
    doc: str = ""


@dataclass(frozen=True)
class RepositorySpec:
    python_steps: tuple[PythonStep, ...]
    detectors: tuple[DetectorModel, ...]
    ensembles: tuple[Ensemble, ...]

    def ensemble(self, name: str) -> Ensemble:
        (found,) = [e for e in self.ensembles if e.name == name]
        return found


# --- public tensors ---------------------------------------------------------------


def _public(name: str, optional: bool = False) -> Tensor:
    return Tensor(name, contract.DTYPES[name], contract.SHAPES[name], optional=optional)


IMAGE_IN = _public(contract.IMAGE)
SCORE_IN = _public(contract.SCORE_THRESHOLD, optional=True)
IOU_IN = _public(contract.IOU_THRESHOLD, optional=True)
MAX_SIDE_IN = _public(contract.ANNOTATED_MAX_SIDE, optional=True)
MERGE_IN = _public(contract.MERGE_LABELS, optional=True)
DETECTIONS_OUT = _public(contract.DETECTIONS)
NUM_OUT = _public(contract.NUM_DETECTIONS)
ANNOTATED_OUT = _public(contract.ANNOTATED_IMAGE)
RESULT = (DETECTIONS_OUT, NUM_OUT, ANNOTATED_OUT)
ALTERNATIVES_OUT = _public(contract.ALTERNATIVE_LABELS)
FRAME_IN = _public(contract.FRAME_INDEX)
TRACK_IDS_OUT = _public(contract.TRACK_IDS)
TRACKED = (DETECTIONS_OUT, NUM_OUT, TRACK_IDS_OUT, ANNOTATED_OUT)

DECODED = Tensor(DECODED_IMAGE, "UINT8", (-1, -1, 3))
SIZE = Tensor(IMAGE_SIZE, "INT32", (2,))
ORIGINAL = Tensor(ORIGINAL_SIZE, "INT32", (2,))
DECODED_OUT = (DECODED, SIZE, ORIGINAL)
# What a preprocessing step reads: the photo file where it decodes it itself (the first
# step of detect_<name>), or the pixels image_decode made (detect_all).
FILE_OR_PIXELS = (
    Tensor(IMAGE_IN.name, IMAGE_IN.dtype, IMAGE_IN.dims, optional=True),
    MAX_SIDE_IN,
    Tensor(DECODED.name, DECODED.dtype, DECODED.dims, optional=True),
    Tensor(SIZE.name, SIZE.dtype, SIZE.dims, optional=True),
)

# A reduced decode (contract.ANNOTATED_MAX_SIDE) keeps the photo's longest side at
# least this long, or twice the largest detector input if that is more: the detectors
# see no less than from the full photo (they shrink it to 300-512 px anyway).
DETECT_MIN_SIDE = 1024


def decode_min_side(detectors) -> int:
    """The least longest side, in pixels, a photo is decoded at for ``detectors``."""
    sides = [n for d in detectors for n in d.inputs[0].dims if n >= 32]
    return max([DETECT_MIN_SIDE] + [2 * n for n in sides])


# --- steps ------------------------------------------------------------------------


def decode_step(registry: Registry) -> PythonStep:
    """detect_all's first step: the photo is decoded once for every detector."""
    return PythonStep(
        name="image_decode",
        adapter="ensemble.adapters.Decode",
        inputs=(IMAGE_IN, MAX_SIDE_IN),
        outputs=DECODED_OUT,
        parameters={"decode_min_side": str(decode_min_side(registry.fused))},
        role="decode",
        doc="Encoded image bytes -> RGB uint8 pixels (the batch padded to its largest image).",
    )


# The steps that produce a result also draw it: boxes, labels and scores on the
# original image, encoded as JPEG at this quality. Drawing in the same step saves a
# Python-backend round trip per result (a separate draw step cost ~3-4 ms per request
# on the 2-core CPU host at concurrency 1, measured with perf_analyzer).
DRAWING = {"jpeg_quality": "90"}


def family_parameters(d: Detector) -> dict[str, str]:
    """What a step's stub needs to rebuild ``d``'s family: reference, options, labels."""
    params = {
        "family": d.family_ref,
        "options": parameters_json(dict(d.options)),
        "labels": parameters_json(list(d.labels)),
    }
    if d.search_path:
        params["search_path"] = parameters_json(list(d.search_path))
    return params


def preprocess_step(d: Detector) -> PythonStep:
    """Pixels -> the detector's input. In ``detect_<name>`` it is the first step and
    decodes the photo file itself: one Python-backend round trip less per request than
    a decode step of its own (1.5-3 ms at concurrency 1 on the 2-core CPU host, where a
    detector's whole request takes 40-70 ms). In ``detect_all`` it reads image_decode's
    pixels, so the photo is decoded once for every detector."""
    return PythonStep(
        name=f"preprocess_{d.name}",
        adapter="ensemble.adapters.Preprocess",
        inputs=FILE_OR_PIXELS,
        outputs=(Tensor.of(d.inputs[0], PREPROCESSED), *DECODED_OUT),
        parameters={**family_parameters(d), "decode_min_side": str(decode_min_side([d]))},
        role="preprocess",
        doc=f"Photo file or pixels -> {d.title} input ({d.family_ref} family).",
    )


def postprocess_step(d: Detector) -> PythonStep:
    return PythonStep(
        name=f"postprocess_{d.name}",
        adapter="ensemble.adapters.Postprocess",
        inputs=(*(Tensor.of(t) for t in d.outputs), *DECODED_OUT, SCORE_IN, IOU_IN, MAX_SIDE_IN),
        outputs=RESULT,
        parameters={**family_parameters(d), **DRAWING},
        role="postprocess",
        doc=f"{d.title} outputs -> boxes in original pixels (NMS), drawn.",
    )


def fused_inputs(d: Detector) -> tuple[Tensor, Tensor]:
    """The fusion step's inputs for one detector: its detections and their count, under
    names private to the server (``<name>_detections``, ``<name>_num_detections``)."""
    return (
        Tensor(f"{d.name}_detections", DETECTIONS_OUT.dtype, DETECTIONS_OUT.dims),
        Tensor(f"{d.name}_num_detections", NUM_OUT.dtype, NUM_OUT.dims),
    )


def passed_through(d: Detector) -> tuple[Tensor, Tensor]:
    """``detect_all``'s outputs of one detector's detections and count, which the fusion
    step passes through unchanged (see :func:`all_ensemble` for why)."""
    dets, num, _ = contract.detector_outputs(d.name)
    return (
        Tensor(dets, DETECTIONS_OUT.dtype, DETECTIONS_OUT.dims),
        Tensor(num, NUM_OUT.dtype, NUM_OUT.dims),
    )


def fuse_step(registry: Registry) -> PythonStep:
    inputs = [t for d in registry.fused for t in fused_inputs(d)]
    passed = [t for d in registry.fused for t in passed_through(d)]
    members = [{"name": d.name, "labels": list(d.labels)} for d in registry.fused]
    return PythonStep(
        name="fuse_detections",
        adapter="ensemble.adapters.Fuse",
        inputs=(*inputs, *DECODED_OUT, SCORE_IN, IOU_IN, MAX_SIDE_IN, MERGE_IN),
        outputs=(*RESULT, ALTERNATIVES_OUT, *passed),
        parameters={
            "detectors": parameters_json(members),
            "labels": parameters_json(list(registry.fused_labels())),
            **DRAWING,
        },
        role="fuse",
        doc="Weighted box fusion, one box per object (MERGE_LABELS false: per label), drawn.",
    )


# --- ensembles --------------------------------------------------------------------


def _identity(*tensors: Tensor) -> dict[str, str]:
    return {t.name: t.name for t in tensors}


def _detector_chain(d: Detector, results: tuple[str, str, str], decodes: bool) -> tuple[Step, ...]:
    """preprocess -> detector -> postprocess (which also draws) for one detector.

    Its private ensemble tensors carry the detector's name, so that several chains
    live side by side in ``detect_all``; ``results`` names its three outputs. With
    ``decodes``, the preprocessing decodes the photo file and hands the pixels on;
    otherwise it reads those of image_decode.
    """
    pre, post = preprocess_step(d), postprocess_step(d)
    # The detector's model names its tensors as the artifact does, the steps around it
    # as the family does: the same ensemble tensor under both names.
    raw = {t.name: f"{d.name}_raw_{t.name}" for t in d.outputs}
    model_raw = {m.name: raw[t.name] for t, m in zip(d.outputs, d.model_outputs, strict=True)}
    model_input = f"{d.name}_preprocessed"
    dets, num, annotated = results
    if decodes:
        first = Step(pre.name, _identity(IMAGE_IN, MAX_SIDE_IN),
                     {PREPROCESSED: model_input, **_identity(*DECODED_OUT)})  # fmt: skip
    else:
        first = Step(pre.name, _identity(DECODED, SIZE), {PREPROCESSED: model_input})
    return (
        first,
        Step(d.name, {d.model_inputs[0].name: model_input}, model_raw),
        Step(
            post.name,
            {**raw, **_identity(*DECODED_OUT, SCORE_IN, IOU_IN, MAX_SIDE_IN)},
            {
                contract.DETECTIONS: dets,
                contract.NUM_DETECTIONS: num,
                contract.ANNOTATED_IMAGE: annotated,
            },
        ),
    )


PUBLIC_INPUTS = (IMAGE_IN, SCORE_IN, IOU_IN, MAX_SIDE_IN)


def single_ensemble(d: Detector) -> Ensemble:
    public = (contract.DETECTIONS, contract.NUM_DETECTIONS, contract.ANNOTATED_IMAGE)
    return Ensemble(
        name=d.ensemble,
        inputs=PUBLIC_INPUTS,
        outputs=RESULT,
        steps=_detector_chain(d, public, decodes=True),
        labels=d.labels,
        title=d.title,
        detectors=(d,),
        doc=f"{d.title} served through {d.runtime_info.title}.",
    )


def all_ensemble(registry: Registry) -> Ensemble:
    """Decode once, every fused detector's chain in parallel, then the fusion.

    No tensor is both an output of ``detect_all`` and an input of a later step. Triton
    2.51 prunes the steps whose outputs a client did not request, and counts such a
    tensor as unrequested even though the fusion needs it. It would then prune a
    detector's postprocessing and wait forever for the fusion's input ("unexpected
    deadlock"). So each postprocessing hands its detections to the fusion under
    private names, and the fusion passes them through as ``<NAME>_DETECTIONS`` and
    ``<NAME>_NUM_DETECTIONS``; only ``<NAME>_ANNOTATED_IMAGE`` comes from the chain.
    """
    decode = decode_step(registry)
    steps: list[Step] = [Step(decode.name, _identity(*decode.inputs), _identity(*DECODED_OUT))]
    outputs: list[Tensor] = [*RESULT, ALTERNATIVES_OUT]
    for d in registry.fused:
        names = contract.detector_outputs(d.name)
        dets, num = (t.name for t in fused_inputs(d))
        steps += _detector_chain(d, (dets, num, names[2]), decodes=False)
        outputs += [Tensor(n, t.dtype, t.dims) for n, t in zip(names, RESULT, strict=True)]
    fuse = fuse_step(registry)
    steps.append(Step(fuse.name, _identity(*fuse.inputs), _identity(*fuse.outputs)))
    return Ensemble(
        name=contract.DETECT_ALL,
        inputs=(*PUBLIC_INPUTS, MERGE_IN),
        outputs=tuple(outputs),
        steps=tuple(steps),
        labels=registry.fused_labels(),
        title=f"All {len(registry.fused)} fused",
        detectors=registry.fused,
        doc=f"One decode, {', '.join(d.name for d in registry.fused)} in parallel, weighted "
        "box fusion of their results, one box per object.",
    )


# --- tracking ------------------------------------------------------------------------

# A detection ensemble's result under private names in its tracking ensemble, where the
# tracker step reads it.
UNTRACKED = {contract.DETECTIONS: "untracked_detections",
             contract.NUM_DETECTIONS: "untracked_num_detections"}  # fmt: skip


def track_step(ens: Ensemble) -> PythonStep:
    """The tracker of one tracking ensemble (``ensemble.tracking_step``): under Triton's
    sequence batcher, one state per sequence; it also draws the frame, with each box's
    track id and its recent path. One per tracking ensemble, for its labels and its own
    sequence ids."""
    return PythonStep(
        name="tracker_" + ens.name.removeprefix(contract.ENSEMBLE_PREFIX),
        adapter="ensemble.tracking_step.Track",
        inputs=(DETECTIONS_OUT, NUM_OUT, *DECODED_OUT, FRAME_IN, MAX_SIDE_IN),
        outputs=TRACKED,
        parameters={"labels": parameters_json(list(ens.labels)), **DRAWING},
        role="track",
        doc=f"Tracks the objects of {ens.name} over a sequence of frames, drawn with their ids.",
    )


def tracking_ensemble(ens: Ensemble) -> Ensemble:
    """``ens``'s steps, its detections handed to its tracker instead of out, and only
    the tracker's results out (the detection steps' drawings are not asked for, so
    their steps skip sending them)."""
    tracker = track_step(ens)
    steps = []
    for s in ens.steps:
        outputs = {k: UNTRACKED.get(v, v) for k, v in s.output_map.items()
                   if v in UNTRACKED or v not in {t.name for t in ens.outputs}}  # fmt: skip
        steps.append(Step(s.model, s.input_map, outputs))
    inputs = {**_identity(*DECODED_OUT, FRAME_IN, MAX_SIDE_IN),
              contract.DETECTIONS: UNTRACKED[contract.DETECTIONS],
              contract.NUM_DETECTIONS: UNTRACKED[contract.NUM_DETECTIONS]}  # fmt: skip
    steps.append(Step(tracker.name, inputs, _identity(*TRACKED)))
    return Ensemble(
        name=contract.tracking_name(ens.name),
        inputs=(*ens.inputs, FRAME_IN),
        outputs=TRACKED,
        steps=tuple(steps),
        labels=ens.labels,
        title=f"{ens.title}, tracked",
        detectors=ens.detectors,
        doc=f"{ens.name}, each detection with the id of the object it follows over a "
        "sequence of frames.",
    )


def repository_spec(registry: Registry) -> RepositorySpec:
    steps = [decode_step(registry)] if registry.fused else []
    steps += [preprocess_step(d) for d in registry.detectors]
    steps += [postprocess_step(d) for d in registry.detectors]
    ensembles = [single_ensemble(d) for d in registry.detectors]
    if registry.fused:
        steps.append(fuse_step(registry))
        ensembles.append(all_ensemble(registry))
    detectors = tuple(DetectorModel(d) for d in registry.detectors)
    assert tuple(e.name for e in ensembles) == registry.ensembles
    tracking = [tracking_ensemble(e) for e in ensembles]
    steps += [track_step(e) for e in ensembles]
    spec = RepositorySpec(tuple(steps), detectors, (*ensembles, *tracking))
    return spec
