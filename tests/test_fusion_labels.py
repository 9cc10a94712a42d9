"""One box per object in detect_all's fusion: the fusion step set up from its generated
config (with the stand-in backend utilities of ``tests.test_adapters``), the tensors the
contract adds to detect_all's config, and what the client sends and reads of them.
``boxes.fuse_across_labels`` itself is tested in tests/test_boxes.py; the real server in
tests/test_fusion_labels_server.py.

Boxes are xyxy in pixels of a 400x400 image; class ids are COCO-80's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2

from client import payload
from client.errors import InferenceFailed
from client.payload import DEFAULT_OPTIONS, DetectOptions
from client.results import ModelInfo, parse_image_results
from ensemble import boxes, configgen, contract, spec
from tests.test_adapters import COMMITTED, CPU, adapters, fuse_request, make  # noqa: F401

pytestmark = pytest.mark.unit

CAR, TRUCK = 2, 7
LABELS = contract.COCO80_LABELS
P = [100, 100, 300, 200]  # where three detectors see the object
Q = [130, 100, 330, 200]  # where the fourth box is: IoU with P 17000 / 23000 = 0.74

# The fused photo of the issue, by hand: NanoDet says car 0.9 and truck 0.46, SSD car
# 0.75, CenterNet truck 0.8. Per label: car (0.9 + 0.75) / 3 = 0.55, truck
# (0.46 + 0.8) / 3 = 0.42, two boxes on one object.
DISAGREEING = {
    "pytorch": [[*P, 0.9, CAR], [*P, 0.46, TRUCK]],
    "tensorflow": [[*P, 0.75, CAR]],
    "onnxruntime": [[*Q, 0.8, TRUCK]],
}


@pytest.fixture
def fuse(adapters):  # noqa: F811 (the fixture imported above)
    return make(adapters, "Fuse", spec.fuse_step(COMMITTED))


def fused(fuse, request: dict) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per image of the request: its fused rows and their ALTERNATIVE_LABELS rows."""
    (response,) = fuse.execute([request])
    assert response.error is None, response.error and response.error.message
    out = response.outputs()
    counts = out[contract.NUM_DETECTIONS][:, 0]
    alternatives = out[contract.ALTERNATIVE_LABELS]
    assert alternatives.shape == (len(counts), *contract.SHAPES[contract.ALTERNATIVE_LABELS])
    rows = [out[contract.DETECTIONS][i, :n] for i, n in enumerate(counts)]
    return rows, [alternatives[i, :n] for i, n in enumerate(counts)]


def with_inputs(request: dict, **inputs: np.ndarray) -> dict:
    return {**request, **inputs}


def merge(*values: bool) -> np.ndarray:
    return np.array([[v] for v in values], np.bool_)


# --- the fusion step -----------------------------------------------------------------


def test_a_car_and_a_truck_on_one_object_become_one_car_with_the_truck_kept(fuse):
    (rows,), (alternatives,) = fused(fuse, fuse_request((400, 400), DISAGREEING))
    # x1: the four boxes' mean weighted by score, (2.11 * 100 + 0.8 * 130) / 2.91
    x1 = (2.11 * 100 + 0.8 * 130) / 2.91
    np.testing.assert_allclose(rows, [[x1, 100, x1 + 200, 200, 0.55, CAR]], rtol=1e-5)
    np.testing.assert_allclose(alternatives[0, 0], [TRUCK, 0.42], rtol=1e-5)
    np.testing.assert_array_equal(alternatives[0, 1:], [boxes.NO_ALTERNATIVE] * 3)


def test_merge_labels_false_gives_the_per_label_fusion_unchanged(fuse):
    request = fuse_request((400, 400), DISAGREEING)
    (rows,), (alternatives,) = fused(fuse, with_inputs(request, MERGE_LABELS=merge(False)))
    # the trucks fuse at (0.8 * Q + 0.46 * P) / 1.26, the cars at P
    x1 = (0.8 * 130 + 0.46 * 100) / 1.26
    expected = [[*P, 0.55, CAR], [x1, 100, x1 + 200, 200, 0.42, TRUCK]]
    np.testing.assert_allclose(rows, expected, rtol=1e-5)
    np.testing.assert_array_equal(alternatives, boxes.no_alternatives(2))
    # exactly what the per-label fusion gives (the fusion before the option)
    known = [set(range(80))] * 3
    sets = [np.array(r, np.float32) for r in DISAGREEING.values()]
    per_label = boxes.weighted_box_fusion(sets, contract.DEFAULT_IOU_THRESHOLD, known_classes=known)
    np.testing.assert_array_equal(rows, per_label)


def test_merge_labels_true_is_the_default(fuse):
    request = fuse_request((400, 400), DISAGREEING)
    (rows,), (alternatives,) = fused(fuse, request)
    (merged,), (merged_alternatives,) = fused(fuse, with_inputs(request, MERGE_LABELS=merge(True)))
    np.testing.assert_array_equal(rows, merged)
    np.testing.assert_array_equal(alternatives, merged_alternatives)


def test_merge_labels_is_read_per_image_of_a_batch(fuse):
    one = fuse_request((400, 400), DISAGREEING)
    batch = {name: np.concatenate([value, value]) for name, value in one.items()}
    rows, _ = fused(fuse, with_inputs(batch, MERGE_LABELS=merge(True, False)))
    assert [r[:, 5].tolist() for r in rows] == [[CAR], [CAR, TRUCK]]


def test_merge_labels_for_another_number_of_images_is_refused_as_invalid_argument(fuse):
    request = with_inputs(fuse_request((400, 400), DISAGREEING), MERGE_LABELS=merge(True, True))
    (response,) = fuse.execute([request])
    assert response.error.code == "INVALID_ARG"
    assert "MERGE_LABELS has 2 values for 1 images" in response.error.message


def test_the_merged_box_is_kept_by_its_labels_support_against_the_score_threshold(fuse):
    request = fuse_request((400, 400), DISAGREEING)
    threshold = np.array([[0.56]], np.float32)
    rows, alternatives = fused(fuse, with_inputs(request, SCORE_THRESHOLD=threshold))
    assert len(rows[0]) == 0 and len(alternatives[0]) == 0  # car 0.55: under 0.56


def test_an_input_under_the_score_threshold_is_no_alternative(fuse):
    # at 0.5 NanoDet's truck (0.46) is left out: the truck is CenterNet's alone, 0.8 / 3
    request = fuse_request((400, 400), DISAGREEING)
    threshold = np.array([[0.5]], np.float32)
    (rows,), (alternatives,) = fused(fuse, with_inputs(request, SCORE_THRESHOLD=threshold))
    np.testing.assert_allclose(rows[:, 4:], [[0.55, CAR]], rtol=1e-5)
    np.testing.assert_allclose(alternatives[0, 0], [TRUCK, 0.8 / 3], rtol=1e-5)


def test_boxes_overlapping_no_more_than_the_iou_threshold_stay_apart(fuse):
    # at 0.8 CenterNet's truck at Q (IoU 0.74) is an object of its own
    request = fuse_request((400, 400), DISAGREEING)
    thresholds = {"IOU_THRESHOLD": np.array([[0.8]], np.float32),
                  "SCORE_THRESHOLD": np.array([[0.25]], np.float32)}  # fmt: skip
    (rows,), (alternatives,) = fused(fuse, with_inputs(request, **thresholds))
    np.testing.assert_allclose(rows, [[*P, 0.55, CAR], [*Q, 0.8 / 3, TRUCK]], rtol=1e-5)
    np.testing.assert_allclose(alternatives[0, 0], [TRUCK, 0.46 / 3], rtol=1e-5)
    np.testing.assert_array_equal(alternatives[1], boxes.no_alternatives(1)[0])


# --- the configs -----------------------------------------------------------------------


def configs() -> dict[str, mc.ModelConfig]:
    return {
        name: configgen.ensemble_config(spec.repository_spec(COMMITTED).ensemble(name), CPU)
        for name in COMMITTED.ensembles
    }


def test_detect_all_takes_merge_labels_and_returns_alternative_labels_and_no_other_does():
    for name, config in configs().items():
        inputs = {t.name: t for t in config.input}
        outputs = {t.name: t for t in config.output}
        if name != contract.DETECT_ALL:
            assert contract.MERGE_LABELS not in inputs
            assert contract.ALTERNATIVE_LABELS not in outputs
            continue
        option = inputs[contract.MERGE_LABELS]
        assert (option.data_type, list(option.dims), option.optional) == (mc.TYPE_BOOL, [1], True)
        alternatives = outputs[contract.ALTERNATIVE_LABELS]
        assert alternatives.data_type == mc.TYPE_FP32
        assert list(alternatives.dims) == [contract.MAX_DETECTIONS, 4, 2]


# --- the client ------------------------------------------------------------------------


def served(config: mc.ModelConfig) -> ModelInfo:
    """What the client makes of ``config``, served as tritonclient's JSON gives it."""
    reply = service_pb2.ModelConfigResponse(config=config)
    return ModelInfo.from_config(
        json.loads(json_format.MessageToJson(reply, preserving_proto_field_name=True))
    )


def test_merge_labels_is_sent_only_when_given():
    assert contract.MERGE_LABELS not in [t.name() for t in payload.build_inputs([b"a"])]
    (*_, sent) = payload.build_inputs([b"a", b"b"], DetectOptions(merge_labels=False))
    assert (sent.name(), sent.datatype(), sent.shape()) == (contract.MERGE_LABELS, "BOOL", [2, 1])
    assert sent._get_content() == b"\x00\x00"  # one byte per image: False


def test_merge_labels_asked_of_a_model_that_does_not_fuse_is_refused_before_sending():
    one = served(configs()["detect_pytorch"])
    with pytest.raises(ValueError, match="detect_pytorch does not fuse"):
        payload.build_inputs([b"a"], DetectOptions(merge_labels=True), one)
    assert len(payload.build_inputs([b"a"], DEFAULT_OPTIONS, one)) == 1
    fused_info = served(configs()[contract.DETECT_ALL])
    sent = payload.build_inputs([b"a"], DetectOptions(merge_labels=True), fused_info)
    assert sent[-1].name() == contract.MERGE_LABELS


def test_alternative_labels_are_asked_for_only_where_the_ensemble_returns_them():
    all_config = configs()[contract.DETECT_ALL]
    assert contract.ALTERNATIVE_LABELS in payload.output_names(served(all_config))
    older = mc.ModelConfig()  # detect_all of a server from before the option
    older.CopyFrom(all_config)
    kept = [o for o in all_config.output if o.name != contract.ALTERNATIVE_LABELS]
    del older.output[:]
    older.output.extend(kept)
    assert contract.ALTERNATIVE_LABELS not in payload.output_names(served(older))
    one = served(configs()["detect_pytorch"])
    assert payload.output_names(one) == [
        contract.DETECTIONS,
        contract.NUM_DETECTIONS,
        contract.ANNOTATED_IMAGE,
    ]


def reply(alternatives: np.ndarray | None) -> dict[str, np.ndarray]:
    """A detect_all reply of one image with a car and a person (no per-detector outputs)."""
    detections = np.zeros((1, contract.MAX_DETECTIONS, 6), np.float32)
    detections[0, :2] = [[*P, 0.55, CAR], [0, 0, 50, 90, 0.5, 0]]
    arrays = {
        contract.DETECTIONS: detections,
        contract.NUM_DETECTIONS: np.array([[2]], np.int32),
        contract.ANNOTATED_IMAGE: np.array([[b"jpeg"]], dtype=np.object_),
    }
    if alternatives is not None:
        arrays[contract.ALTERNATIVE_LABELS] = alternatives
    return arrays


def test_each_fused_detection_gets_its_alternatives_by_label():
    alternatives = boxes.no_alternatives(contract.MAX_DETECTIONS)[None]
    alternatives[0, 0, :2] = [[TRUCK, 0.42], [5, 0.125]]  # the car's: truck, bus
    alternatives[0, 2, 0] = [TRUCK, 0.3]  # beyond the count: padding, whatever it holds
    (result,) = parse_image_results(reply(alternatives), LABELS)
    car, person = result.detections
    assert car.label == "car" and person.label == "person"
    assert car.alternatives == (("truck", pytest.approx(0.42)), ("bus", 0.125))
    assert person.alternatives == ()


def test_a_reply_without_alternatives_gives_detections_without_them():
    (result,) = parse_image_results(reply(None), LABELS)
    assert [d.alternatives for d in result.detections] == [(), ()]


def test_alternatives_of_the_wrong_shape_are_reported():
    wrong = np.zeros((1, contract.MAX_DETECTIONS, 4), np.float32)
    with pytest.raises(InferenceFailed, match="ALTERNATIVE_LABELS has shape"):
        parse_image_results(reply(wrong), LABELS)
