"""The Triton adapters with a stand-in ``triton_python_backend_utils``.

Only the backend's utility module is replaced (it exists inside Triton's stub
process alone); the adapters and everything they call are the real code, set up from
the configs ``configgen`` generates, as Triton hands them to ``initialize`` (JSON).
Where a detector would load an artifact, a stand-in runner takes its place. The
server tests then check the same adapters inside the real Triton.

Boxes are xyxy in pixels; image sizes ``(height, width)``.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from google.protobuf import json_format

from ensemble import configgen, contract, spec
from ensemble.registry import Registry, load_models

pytestmark = pytest.mark.unit

CPU = configgen.make_target("cpu")
# The Python runners (native backends left out): what a machine without them serves.
CPU_PYTHON_RUNNERS = configgen.make_target("cpu", native=frozenset())
COMMITTED = load_models()


@dataclass
class FakeTensor:
    name: str
    array: np.ndarray

    def as_numpy(self):
        return self.array


@dataclass
class FakeResponse:
    output_tensors: list | None = None
    error: object = None

    def outputs(self) -> dict[str, np.ndarray]:
        return {t.name: t.array for t in self.output_tensors}


class FakeError:
    INVALID_ARG = "INVALID_ARG"

    def __init__(self, message, code=None):
        self.message, self.code = message, code


def fake_pb_utils() -> types.ModuleType:
    m = types.ModuleType("triton_python_backend_utils")
    m.Tensor = FakeTensor
    m.InferenceResponse = FakeResponse
    m.TritonError = FakeError
    m.get_input_tensor_by_name = lambda request, name: (
        FakeTensor(name, request[name]) if name in request else None
    )
    dtypes = {"TYPE_FP32": np.float32, "TYPE_INT32": np.int32, "TYPE_UINT8": np.uint8,
              "TYPE_STRING": np.object_}  # fmt: skip
    m.triton_string_to_numpy = dtypes.__getitem__
    m.Logger = types.SimpleNamespace(log_info=lambda msg: None, log_error=lambda msg: None)
    return m


@pytest.fixture
def adapters(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    sys.modules.pop("ensemble.adapters", None)
    yield importlib.import_module("ensemble.adapters")
    sys.modules.pop("ensemble.adapters", None)


def as_triton_json(config) -> str:
    """A ModelConfig as Triton hands it to initialize(): JSON with the proto's own field
    names (``string_value``, ``data_type``), not protobuf's camelCase."""
    return json_format.MessageToJson(config, preserving_proto_field_name=True)


def make(adapters, cls: str, step: spec.PythonStep):
    """The adapter ``cls`` set up from ``step``'s generated cpu config."""
    model = getattr(adapters, cls)()
    config = configgen.python_step_config(step, CPU)
    model.initialize({"model_config": as_triton_json(config), "model_name": step.name})
    return model


def write_models(folder: Path, detectors: list[dict]) -> Registry:
    """A models file of Python-runtime detectors (a tiny stand-in ``.py`` each, never
    run here) with their own labels files; ``detectors`` holds each one's keys, with
    ``labels`` as a list."""
    tables = []
    for d in detectors:
        d = dict(d)
        (folder / f"{d['name']}.txt").write_text("\n".join(d.pop("labels")) + "\n")
        (folder / f"{d['name']}_model.py").write_text("class Model:\n    pass\n")
        keys = {"runtime": "python", "artifact": f"{d['name']}_model.py",
                "labels": f"{d['name']}.txt", **d}  # fmt: skip
        tables.append(
            "[[detector]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
        )
    path = folder / "models.toml"
    path.write_text("\n".join(tables))
    return load_models(path)


def png(h, w, value=90) -> bytes:
    return cv2.imencode(".png", np.full((h, w, 3), value, np.uint8))[1].tobytes()


def test_the_config_json_carries_parameters_as_triton_writes_them():
    step = spec.postprocess_step(COMMITTED["onnxruntime"])
    config = json.loads(as_triton_json(configgen.python_step_config(step, CPU)))
    assert config["parameters"]["family"] == {"string_value": "centernet"}
    assert config["output"][0]["data_type"] == "TYPE_FP32"


# --- decode ----------------------------------------------------------------------


def test_decode_pads_a_batch_to_its_largest_image_and_reports_true_sizes(adapters):
    decode = make(adapters, "Decode", spec.decode_step(COMMITTED))
    request = {contract.IMAGE: np.array([[png(20, 30)], [png(40, 10)]], dtype=np.object_)}
    (response,) = decode.execute([request])
    out = response.outputs()
    assert out[spec.DECODED_IMAGE].shape == (2, 40, 30, 3)
    assert out[spec.IMAGE_SIZE].tolist() == [[20, 30], [40, 10]]
    assert out[spec.DECODED_IMAGE][0, 20:].max() == 0, "padding is zeros"
    assert out[spec.DECODED_IMAGE][0, :20].min() == 90


def test_a_bad_image_fails_only_its_own_request_as_invalid_argument(adapters):
    decode = make(adapters, "Decode", spec.decode_step(COMMITTED))
    bad = {contract.IMAGE: np.array([[png(5, 5)], [b"junk"]], dtype=np.object_)}
    good = {contract.IMAGE: np.array([[png(8, 8)]], dtype=np.object_)}
    first, second = decode.execute([bad, good])
    assert first.error.code == FakeError.INVALID_ARG
    assert first.error.message.startswith("image 2 of 2:")
    assert second.error is None and second.outputs()[spec.IMAGE_SIZE].tolist() == [[8, 8]]


def jpeg(h, w) -> bytes:
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x * 255 // w, y * 255 // h, np.full((h, w), 90)], axis=2)
    return cv2.imencode(".jpg", image.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def test_decode_reduces_a_large_jpeg_only_when_a_smaller_annotated_image_is_asked_for(adapters):
    decode = make(adapters, "Decode", spec.decode_step(COMMITTED))
    assert decode.min_side == 1024  # twice the largest input (512), at least 1024
    photo = np.array([[jpeg(3000, 4800)], [jpeg(3000, 4800)]], dtype=np.object_)
    asked = np.array([[800], [0]], np.int32)  # the second image: full size
    (response,) = decode.execute([{contract.IMAGE: photo, contract.ANNOTATED_MAX_SIDE: asked}])
    out = response.outputs()
    # 800 asked, but the detectors need 1024: 4800 / 4 = 1200 is the least that serves both
    assert out[spec.IMAGE_SIZE].tolist() == [[750, 1200], [3000, 4800]]
    assert out[spec.ORIGINAL_SIZE].tolist() == [[3000, 4800], [3000, 4800]]


def test_an_annotated_max_side_out_of_range_is_refused_as_invalid_argument(adapters):
    decode = make(adapters, "Decode", spec.decode_step(COMMITTED))
    request = {contract.IMAGE: np.array([[png(8, 8)]], dtype=np.object_),
               contract.ANNOTATED_MAX_SIDE: np.array([[-5]], np.int32)}  # fmt: skip
    (response,) = decode.execute([request])
    assert response.error.code == FakeError.INVALID_ARG
    assert "ANNOTATED_MAX_SIDE must lie in [0, 65500]" in response.error.message


# --- preprocess and postprocess --------------------------------------------------


def test_preprocess_rebuilds_the_family_with_the_models_file_options(adapters, tmp_path):
    registry = write_models(
        tmp_path, [{"name": "small", "family": "nanodet", "input_size": 320, "labels": ["a", "b"]}]
    )
    pre = make(adapters, "Preprocess", spec.preprocess_step(registry["small"]))
    assert pre.family.options.input_size == 320 and pre.family.labels == ("a", "b")
    request = {
        spec.DECODED_IMAGE: np.zeros((2, 60, 80, 3), np.uint8),
        spec.IMAGE_SIZE: np.array([[60, 80], [30, 20]], np.int32),
    }
    (response,) = pre.execute([request])
    assert response.outputs()[spec.PREPROCESSED].shape == (2, 3, 320, 320)


def test_preprocess_cuts_each_image_to_its_real_size_before_resizing(adapters):
    pre = make(adapters, "Preprocess", spec.preprocess_step(COMMITTED["onnxruntime"]))
    decoded = np.zeros((2, 100, 100, 3), np.uint8)
    decoded[1, :50, :50] = 200  # a 50 x 50 image padded with zeros to 100 x 100
    request = {
        spec.DECODED_IMAGE: decoded,
        spec.IMAGE_SIZE: np.array([[100, 100], [50, 50]], np.int32),
    }
    (response,) = pre.execute([request])
    x = response.outputs()[spec.PREPROCESSED]
    assert x.shape == (2, 512, 512, 3)
    assert (x[1] == 200).all(), "the padding is not part of the image"


def test_preprocess_decodes_the_photo_file_itself_and_hands_the_pixels_on(adapters):
    pre = make(adapters, "Preprocess", spec.preprocess_step(COMMITTED["onnxruntime"]))
    request = {contract.IMAGE: np.array([[png(60, 80, value=200)]], dtype=np.object_)}
    (response,) = pre.execute([request])
    out = response.outputs()
    assert out[spec.PREPROCESSED].shape == (1, 512, 512, 3)
    assert (out[spec.PREPROCESSED] == 200).all()
    assert out[spec.DECODED_IMAGE].shape == (1, 60, 80, 3)
    assert out[spec.IMAGE_SIZE].tolist() == [[60, 80]]
    assert out[spec.ORIGINAL_SIZE].tolist() == [[60, 80]]


class Request(dict):
    """A request that, like Triton's, says which outputs the ensemble asked for."""

    def __init__(self, inputs, requested):
        super().__init__(inputs)
        self.requested = requested

    def requested_output_names(self):
        return self.requested


def test_a_step_sends_only_the_outputs_the_ensemble_asked_for(adapters):
    pre = make(adapters, "Preprocess", spec.preprocess_step(COMMITTED["onnxruntime"]))
    request = Request({contract.IMAGE: np.array([[png(60, 80)]], dtype=np.object_)},
                      [spec.PREPROCESSED])  # fmt: skip
    (response,) = pre.execute([request])
    assert list(response.outputs()) == [spec.PREPROCESSED]


def test_postprocess_maps_boxes_found_on_a_reduced_decode_to_the_original_photo(adapters):
    post = postprocess_centernet(adapters)
    request = postprocess_request()
    # The photo is 2048 x 2048; it was decoded at 1/4, 512 x 512, and the annotated
    # image asked for is at most 256 pixels.
    request[spec.ORIGINAL_SIZE] = np.array([[2048, 2048]], np.int32)
    request[contract.ANNOTATED_MAX_SIDE] = np.array([[256]], np.int32)
    (response,) = post.execute([request])
    out = response.outputs()
    assert out[contract.NUM_DETECTIONS].tolist() == [[1]]
    # (100, 100, 300, 400) in the 512-pixel decode is 4x that in the photo
    np.testing.assert_allclose(out[contract.DETECTIONS][0, 0], [400, 400, 1200, 1600, 0.8, 0])
    drawn = cv2.imdecode(np.frombuffer(out[contract.ANNOTATED_IMAGE][0, 0], np.uint8), 1)
    assert drawn.shape[:2] == (256, 256)
    # the box is drawn at half the decode's coordinates: its left edge at x = 50
    assert drawn[100, 48:53].max() > 100 and drawn[100, 60:70].max() < 10


def postprocess_request(score=None):
    request = {
        "detections": np.zeros((1, 100, 6), np.float32),
        spec.IMAGE_SIZE: np.array([[512, 512]], np.int32),
        spec.ORIGINAL_SIZE: np.array([[512, 512]], np.int32),
        spec.DECODED_IMAGE: np.zeros((1, 512, 512, 3), np.uint8),
    }
    request["detections"][0, 0] = [100, 100, 300, 400, 0.8, 0]  # 512-pixel input space
    request["detections"][0, 1] = [10, 10, 50, 50, 0.2, 41]
    if score is not None:
        request[contract.SCORE_THRESHOLD] = np.array([[score]], np.float32)
    return request


def postprocess_centernet(adapters):
    return make(adapters, "Postprocess", spec.postprocess_step(COMMITTED["onnxruntime"]))


def test_postprocess_uses_default_threshold_when_the_input_is_absent(adapters):
    post = postprocess_centernet(adapters)
    (default,) = post.execute([postprocess_request()])
    (low,) = post.execute([postprocess_request(score=0.1)])
    assert default.outputs()[contract.NUM_DETECTIONS].tolist() == [[1]]
    assert low.outputs()[contract.NUM_DETECTIONS].tolist() == [[2]]


def test_postprocess_refuses_a_threshold_outside_zero_one(adapters):
    post = postprocess_centernet(adapters)
    (response,) = post.execute([postprocess_request(score=1.5)])
    assert response.error.code == FakeError.INVALID_ARG
    assert "SCORE_THRESHOLD must lie in [0, 1]" in response.error.message


def test_postprocess_knows_only_the_classes_of_its_own_labels(adapters, tmp_path):
    registry = write_models(tmp_path, [{"name": "pets", "family": "centernet",
                                        "labels": ["cat", "dog"]}])  # fmt: skip
    post = make(adapters, "Postprocess", spec.postprocess_step(registry["pets"]))
    request = postprocess_request(score=0.1)
    request["detections"][0, 1, 5] = 1  # a dog: kept; the person (0) is now a cat
    request["detections"][0, 2] = [300, 300, 400, 400, 0.9, 2]  # no third label: dropped
    (response,) = post.execute([request])
    out = response.outputs()
    n = int(out[contract.NUM_DETECTIONS][0, 0])
    assert out[contract.DETECTIONS][0, :n, 5].tolist() == [0, 1]


def test_postprocess_draws_one_jpeg_per_image_at_the_original_size(adapters):
    post = postprocess_centernet(adapters)
    dets = np.zeros((2, 100, 6), np.float32)
    dets[0, 0] = [100, 100, 300, 400, 0.9, 0]  # a person in the 512-pixel input space
    request = {
        "detections": dets,
        spec.DECODED_IMAGE: np.zeros((2, 50, 60, 3), np.uint8),
        spec.IMAGE_SIZE: np.array([[50, 60], [20, 25]], np.int32),
        spec.ORIGINAL_SIZE: np.array([[50, 60], [20, 25]], np.int32),
    }
    (response,) = post.execute([request])
    out = response.outputs()
    assert out[contract.NUM_DETECTIONS].tolist() == [[1], [0]]
    jpegs = out[contract.ANNOTATED_IMAGE]
    decoded = [cv2.imdecode(np.frombuffer(j, np.uint8), 1) for j in jpegs[:, 0]]
    assert [d.shape[:2] for d in decoded] == [(50, 60), (20, 25)], "cut to each real size"
    assert decoded[0].max() > 100, "the person's box is drawn on the black image"
    assert decoded[1].max() < 10, "nothing drawn where nothing was found"


# --- fuse ------------------------------------------------------------------------


def fuse_request(size: tuple[int, int], rows: dict[str, list[list[float]]]) -> dict:
    """A fuse step's request for one image: each detector's rows, padded to 100."""
    request = {
        spec.IMAGE_SIZE: np.array([size], np.int32),
        spec.ORIGINAL_SIZE: np.array([size], np.int32),
        spec.DECODED_IMAGE: np.zeros((1, *size, 3), np.uint8),
    }
    for name, own in rows.items():
        dets, num = f"{name}_detections", f"{name}_num_detections"
        request[dets] = np.zeros((1, 100, 6), np.float32)
        if own:
            request[dets][0, : len(own)] = own
        request[num] = np.array([[len(own)]], np.int32)
    return request


def test_fuse_drops_what_falls_below_the_threshold_after_fusion(adapters):
    fuse = make(adapters, "Fuse", spec.fuse_step(COMMITTED))
    names = [d.name for d in COMMITTED.fused]
    assert len(names) == 3
    rows = {name: [[10, 10, 200, 200, 0.9, 0]] for name in names}  # all three: a person
    # only one model sees a cup: fused score 0.6 / 3 = 0.2 < 0.3
    rows[names[0]].append([250, 250, 390, 390, 0.6, 41])
    (response,) = fuse.execute([fuse_request((400, 400), rows)])
    out = response.outputs()
    n = int(out[contract.NUM_DETECTIONS][0, 0])
    assert n == 1
    np.testing.assert_allclose(
        out[contract.DETECTIONS][0, 0], [10, 10, 200, 200, 0.9, 0], atol=1e-4
    )


def test_fuse_passes_each_detectors_own_detections_through_unchanged(adapters):
    fuse = make(adapters, "Fuse", spec.fuse_step(COMMITTED))
    names = [d.name for d in COMMITTED.fused]
    rows = {name: [[10, 10, 200, 200, 0.9, 0]] for name in names}
    rows[names[1]].append([250, 250, 390, 390, 0.6, 41])
    request = fuse_request((400, 400), rows)
    (response,) = fuse.execute([request])
    out = response.outputs()
    for name in names:
        dets, num, _ = contract.detector_outputs(name)
        assert int(out[num][0, 0]) == len(rows[name])
        np.testing.assert_array_equal(out[dets], request[f"{name}_detections"])


def test_fuse_fuses_by_label_name_across_detectors_of_different_label_lists(adapters, tmp_path):
    registry = write_models(
        tmp_path,
        [
            {"name": "a", "family": "centernet", "labels": ["cat", "dog"]},
            {"name": "b", "family": "centernet", "labels": ["dog", "car"]},
        ],
    )
    step = spec.fuse_step(registry)
    # the union: a's labels, then the ones b adds
    assert json.loads(step.parameters["labels"]) == ["cat", "dog", "car"]
    fuse = make(adapters, "Fuse", step)
    request = fuse_request(
        (500, 500),
        {
            "a": [
                [10, 10, 100, 100, 0.8, 1],  # a's dog
                [200, 200, 300, 300, 0.9, 0],  # a's cat: b has no cat
                [400, 10, 490, 100, 0.8, 1],  # a dog b could have seen but did not
            ],
            "b": [
                [10, 10, 100, 100, 0.6, 0],  # b's dog (class 0 in b), where a's is
                [10, 400, 100, 490, 0.5, 1],  # b's car: a has no car
            ],
        },
    )
    (response,) = fuse.execute([request])
    out = response.outputs()
    n = int(out[contract.NUM_DETECTIONS][0, 0])
    np.testing.assert_allclose(
        out[contract.DETECTIONS][0, :n],
        [
            [200, 200, 300, 300, 0.9, 0],  # cat: only a knows cats, full score
            [10, 10, 100, 100, 0.7, 1],  # one union dog from both, the mean score
            [10, 400, 100, 490, 0.5, 2],  # car: only b knows cars, full score
            [400, 10, 490, 100, 0.4, 1],  # a dog both know, seen by one of two: halved
        ],
        atol=1e-4,
    )


def test_fuse_draws_the_fused_boxes(adapters):
    fuse = make(adapters, "Fuse", spec.fuse_step(COMMITTED))
    rows = {d.name: [[10, 10, 60, 60, 0.9, 0]] for d in COMMITTED.fused}
    (response,) = fuse.execute([fuse_request((80, 80), rows)])
    (jpeg,) = response.outputs()[contract.ANNOTATED_IMAGE][0]
    drawn = cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1)
    assert drawn.shape[:2] == (80, 80) and drawn.max() > 100


# --- detector --------------------------------------------------------------------


@pytest.fixture
def stand_in_runner(monkeypatch):
    """Replaces ``ensemble.runners.load_runner``: records its arguments and returns a
    runner calling ``state["call"]`` (and ``state["set_threads"]``, if any)."""
    from ensemble import runners

    state: dict = {"loads": [], "set_threads": None}

    def load_runner(runtime, path, names, device, threads):
        state["loads"].append((runtime, Path(path), names, device, threads))
        call = lambda batch: state["call"](batch)  # noqa: E731
        return runners.Runner(names, device, "stand-in", call, state["set_threads"])

    monkeypatch.setattr(runners, "load_runner", load_runner)
    return state


def make_detector(adapters, tmp_path, name="onnxruntime", kind="CPU", device_id="0", instance=0):
    """The DetectorRunner adapter of the committed detector ``name``, from its cpu config."""
    model = spec.DetectorModel(COMMITTED[name])
    config = configgen.detector_config(model, CPU_PYTHON_RUNNERS)
    detector = adapters.DetectorRunner()
    detector.initialize(
        {
            "model_config": as_triton_json(config),
            "model_name": name,
            "model_instance_kind": kind,
            "model_instance_device_id": device_id,
            "model_instance_name": f"{name}_0_{instance}",
            "model_repository": str(tmp_path / name),
            "model_version": "1",
        }
    )
    return detector


def test_detector_loads_its_artifact_with_the_runtime_and_tensors_of_its_config(
    adapters, tmp_path, stand_in_runner
):
    from ensemble.runners import Device, TensorNames

    make_detector(adapters, tmp_path)
    make_detector(adapters, tmp_path, kind="GPU", device_id="1")
    path = tmp_path / "onnxruntime" / "1" / "model.onnx"
    names = TensorNames("images", ("detections",), ())
    assert stand_in_runner["loads"] == [
        ("onnx", path, names, Device("cpu", 0), CPU.detector_threads),
        ("onnx", path, names, Device("gpu", 1), CPU.detector_threads),
    ]


def test_detector_runs_queued_requests_in_one_forward_pass_and_splits_the_answers(
    adapters, tmp_path, stand_in_runner
):
    calls = []

    def call(batch):
        calls.append(batch.shape[0])
        return {"detections": np.repeat(batch[:, :1, :1, :1], 600, axis=1).reshape(-1, 100, 6)}

    stand_in_runner["call"] = call
    detector = make_detector(adapters, tmp_path)
    assert detector.siblings is None, "a runner of fixed threads needs no sibling count"
    requests = [{"images": np.full((n, 2, 2, 3), i, np.float32)} for i, n in enumerate((2, 1, 3))]
    responses = detector.execute(requests)
    assert calls == [6], "one forward pass for all queued requests"
    for i, (response, n) in enumerate(zip(responses, (2, 1, 3), strict=True)):
        out = response.outputs()["detections"]
        assert out.shape == (n, 100, 6) and np.all(out == i), "each request gets its own rows"


def test_a_failing_forward_pass_fails_every_request_of_the_batch(
    adapters, tmp_path, stand_in_runner
):
    def call(batch):
        raise RuntimeError("out of memory")

    stand_in_runner["call"] = call
    detector = make_detector(adapters, tmp_path)
    one = {"images": np.zeros((1, 2, 2, 3), np.float32)}
    responses = detector.execute([one, one])
    assert [r.error.message for r in responses] == ["onnxruntime failed: out of memory"] * 2


def test_outputs_that_do_not_fit_the_declared_dims_fail_with_the_likely_cause(
    adapters, tmp_path, stand_in_runner
):
    # A model predicting other classes than its labels say: [B, 100, 7] for [100, 6].
    stand_in_runner["call"] = lambda batch: {"detections": np.zeros((len(batch), 100, 7))}
    detector = make_detector(adapters, tmp_path)
    (response,) = detector.execute([{"images": np.zeros((1, 2, 2, 3), np.float32)}])
    assert "has dims [100, 7]" in response.error.message
    assert "[100, 6]" in response.error.message and "labels" in response.error.message


def test_detector_takes_all_threads_alone_and_one_beside_a_running_sibling(
    adapters, tmp_path, stand_in_runner
):
    from ensemble.cpu_share import SiblingInstances

    chosen: list[int] = []
    stand_in_runner["call"] = lambda batch: {"detections": np.zeros((len(batch), 100, 6))}
    stand_in_runner["set_threads"] = chosen.append
    detector = make_detector(adapters, tmp_path)
    sibling = SiblingInstances.of_model(str(tmp_path / "onnxruntime"), "onnxruntime", "sib")
    try:
        assert detector.siblings.folder == sibling.folder, "instances of one model share"
        one = {"images": np.zeros((1, 2, 2, 3), np.float32)}
        detector.execute([one])
        detector.execute([one, one])  # two queued requests: a batch of 2
        with sibling.running():
            detector.execute([one])
        assert chosen == [2, 1, 1]
    finally:
        detector.finalize()
        sibling.close()
        shutil.rmtree(sibling.folder, ignore_errors=True)
