"""The Triton adapters with a stand-in ``triton_python_backend_utils``.

Only the backend's utility module is replaced (it exists inside Triton's stub
process alone); the adapters and everything they call are the real code. The
server tests then check the same adapters inside the real Triton.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from ensemble import configgen, contract, spec


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


def model_config(name: str) -> str:
    """The generated config of one step, as Triton hands it to initialize() (JSON)."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2 as mc

    text = configgen.render(configgen.make_target("cpu"))[f"{name}/config.pbtxt"]
    config = text_format.Parse(text, mc.ModelConfig())
    return json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True))


def make(adapters, cls, step_name):
    model = getattr(adapters, cls)()
    model.initialize({"model_config": model_config(step_name), "model_name": step_name})
    return model


def png(h, w, value=90) -> bytes:
    return cv2.imencode(".png", np.full((h, w, 3), value, np.uint8))[1].tobytes()


def test_decode_pads_a_batch_to_its_largest_image_and_reports_true_sizes(adapters):
    decode = make(adapters, "Decode", spec.DECODE.name)
    request = {contract.IMAGE: np.array([[png(20, 30)], [png(40, 10)]], dtype=np.object_)}
    (response,) = decode.execute([request])
    out = response.outputs()
    assert out[spec.DECODED_IMAGE].shape == (2, 40, 30, 3)
    assert out[spec.IMAGE_SIZE].tolist() == [[20, 30], [40, 10]]
    assert out[spec.DECODED_IMAGE][0, 20:].max() == 0, "padding is zeros"
    assert out[spec.DECODED_IMAGE][0, :20].min() == 90


def test_a_bad_image_fails_only_its_own_request_as_invalid_argument(adapters):
    decode = make(adapters, "Decode", spec.DECODE.name)
    bad = {contract.IMAGE: np.array([[png(5, 5)], [b"junk"]], dtype=np.object_)}
    good = {contract.IMAGE: np.array([[png(8, 8)]], dtype=np.object_)}
    first, second = decode.execute([bad, good])
    assert first.error.code == FakeError.INVALID_ARG
    assert first.error.message.startswith("image 2 of 2:")
    assert second.error is None and second.outputs()[spec.IMAGE_SIZE].tolist() == [[8, 8]]


def postprocess_request(score=None):
    request = {
        "detections": np.zeros((1, 100, 6), np.float32),
        spec.IMAGE_SIZE: np.array([[512, 512]], np.int32),
        spec.DECODED_IMAGE: np.zeros((1, 512, 512, 3), np.uint8),
    }
    request["detections"][0, 0] = [100, 100, 300, 400, 0.8, 0]  # 512-pixel input space
    request["detections"][0, 1] = [10, 10, 50, 50, 0.2, 41]
    if score is not None:
        request[contract.SCORE_THRESHOLD] = np.array([[score]], np.float32)
    return request


def test_postprocess_uses_default_threshold_when_the_input_is_absent(adapters):
    post = make(adapters, "Postprocess", "postprocess_centernet")
    (default,) = post.execute([postprocess_request()])
    (low,) = post.execute([postprocess_request(score=0.1)])
    assert default.outputs()[contract.NUM_DETECTIONS].tolist() == [[1]]
    assert low.outputs()[contract.NUM_DETECTIONS].tolist() == [[2]]


def test_postprocess_refuses_a_threshold_outside_zero_one(adapters):
    post = make(adapters, "Postprocess", "postprocess_centernet")
    (response,) = post.execute([postprocess_request(score=1.5)])
    assert response.error.code == FakeError.INVALID_ARG
    assert "SCORE_THRESHOLD must lie in [0, 1]" in response.error.message


def test_detector_runs_queued_requests_in_one_forward_pass_and_splits_the_answers(adapters):
    calls = []

    def runner(batch):
        calls.append(batch.shape[0])
        return {"detections": np.repeat(batch[:, :1, :1, :1], 600, axis=1).reshape(-1, 100, 6)}

    detector = adapters.Detector()
    detector.model_name, detector.input_name, detector.runner = "fake", "images", runner
    detector.input_names, detector.siblings = ["images"], None
    detector.output_dtypes = {"detections": np.float32}
    requests = [{"images": np.full((n, 2, 2, 3), i, np.float32)} for i, n in enumerate((2, 1, 3))]
    responses = detector.execute(requests)
    assert calls == [6], "one forward pass for all queued requests"
    for i, (response, n) in enumerate(zip(responses, (2, 1, 3), strict=True)):
        out = response.outputs()["detections"]
        assert out.shape == (n, 100, 6) and np.all(out == i), "each request gets its own rows"


def test_fuse_drops_what_falls_below_the_threshold_after_fusion(adapters):
    fuse = make(adapters, "Fuse", spec.FUSE.name)
    request = {
        spec.IMAGE_SIZE: np.array([[400, 400]], np.int32),
        spec.DECODED_IMAGE: np.zeros((1, 400, 400, 3), np.uint8),
    }
    for i, f in enumerate(contract.FRAMEWORKS):
        dets, num, _ = contract.framework_outputs(f)
        request[dets] = np.zeros((1, 100, 6), np.float32)
        request[dets][0, 0] = [10, 10, 200, 200, 0.9, 0]  # all three agree on a person
        request[num] = np.array([[1]], np.int32)
        if i == 0:  # only one model sees a cup: fused score 0.6 / 3 = 0.2 < 0.3
            request[dets][0, 1] = [250, 250, 390, 390, 0.6, 41]
            request[num] = np.array([[2]], np.int32)
    (response,) = fuse.execute([request])
    out = response.outputs()
    n = int(out[contract.NUM_DETECTIONS][0, 0])
    assert n == 1
    np.testing.assert_allclose(
        out[contract.DETECTIONS][0, 0], [10, 10, 200, 200, 0.9, 0], atol=1e-4
    )


def test_postprocess_draws_one_jpeg_per_image_at_the_original_size(adapters):
    post = make(adapters, "Postprocess", "postprocess_centernet")
    dets = np.zeros((2, 100, 6), np.float32)
    dets[0, 0] = [100, 100, 300, 400, 0.9, 0]  # a person in the 512-pixel input space
    request = {
        "detections": dets,
        spec.DECODED_IMAGE: np.zeros((2, 50, 60, 3), np.uint8),
        spec.IMAGE_SIZE: np.array([[50, 60], [20, 25]], np.int32),
    }
    (response,) = post.execute([request])
    out = response.outputs()
    assert out[contract.NUM_DETECTIONS].tolist() == [[1], [0]]
    jpegs = out[contract.ANNOTATED_IMAGE]
    decoded = [cv2.imdecode(np.frombuffer(j, np.uint8), 1) for j in jpegs[:, 0]]
    assert [d.shape[:2] for d in decoded] == [(50, 60), (20, 25)], "cut to each real size"
    assert decoded[0].max() > 100, "the person's box is drawn on the black image"
    assert decoded[1].max() < 10, "nothing drawn where nothing was found"


def test_fuse_draws_the_fused_boxes(adapters):
    fuse = make(adapters, "Fuse", spec.FUSE.name)
    request = {
        spec.IMAGE_SIZE: np.array([[80, 80]], np.int32),
        spec.DECODED_IMAGE: np.zeros((1, 80, 80, 3), np.uint8),
    }
    for f in contract.FRAMEWORKS:
        dets, num, _ = contract.framework_outputs(f)
        request[dets] = np.zeros((1, 100, 6), np.float32)
        request[dets][0, 0] = [10, 10, 60, 60, 0.9, 0]
        request[num] = np.array([[1]], np.int32)
    (response,) = fuse.execute([request])
    (jpeg,) = response.outputs()[contract.ANNOTATED_IMAGE][0]
    drawn = cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1)
    assert drawn.shape[:2] == (80, 80) and drawn.max() > 100


def test_detector_takes_all_threads_alone_and_one_beside_a_running_sibling(adapters, tmp_path):
    from ensemble.cpu_share import SiblingInstances
    from ensemble.runners import Runner

    chosen = []
    runner = Runner(None, None, "fake", lambda b: {"out": b[:, :1]}, chosen.append)
    detector = adapters.Detector()
    detector.model_name, detector.input_name, detector.runner = "fake", "images", runner
    detector.input_names, detector.output_dtypes = ["images"], {"out": np.float32}
    detector.threads = 2
    detector.siblings = SiblingInstances(tmp_path, "fake_0_0")
    one = {"images": np.zeros((1, 3), np.float32)}
    detector.execute([one])
    detector.execute([one, one])  # two queued requests: a batch of 2
    with SiblingInstances(tmp_path, "fake_0_1").running():
        detector.execute([one])
    assert chosen == [2, 1, 1]
