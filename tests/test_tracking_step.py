"""The tracker step (``ensemble.tracking_step``) with a stand-in
``triton_python_backend_utils``: what a sequence's frames get back, in which order, and
when its state is freed. The step and the tracker are the real code, set up from the
config ``configgen`` generates; only the backend's utility module (which exists inside
Triton's stub process alone) and the clock are replaced. The server tests run the same
step inside the real Triton."""

from __future__ import annotations

import importlib
import json
import sys
import types
from dataclasses import dataclass, field

import numpy as np
import pytest
from google.protobuf import json_format

from ensemble import configgen, contract, spec
from ensemble.registry import load_models

pytestmark = pytest.mark.unit


@dataclass
class Tensor:
    name: str
    array: np.ndarray

    def as_numpy(self):
        return self.array


@dataclass
class Response:
    output_tensors: list | None = None
    error: object = None


class Error:
    INVALID_ARG, UNAVAILABLE = "INVALID_ARG", "UNAVAILABLE"

    def __init__(self, message, code=None):
        self.message, self.code = message, code


@dataclass
class Sender:
    """A frame's response sender: what was sent, with its flags."""

    sent: list = field(default_factory=list)

    def send(self, response, flags=0):
        self.sent.append((response, flags))


class Request(dict):
    def __init__(self, tensors: dict, sender: Sender):
        super().__init__(tensors)
        self.sender = sender

    def get_response_sender(self):
        return self.sender


def stand_in_pb_utils() -> types.ModuleType:
    m = types.ModuleType("triton_python_backend_utils")
    m.Tensor, m.InferenceResponse, m.TritonError = Tensor, Response, Error
    m.TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
    m.get_input_tensor_by_name = lambda request, name: (
        Tensor(name, request[name]) if name in request else None
    )
    dtypes = {"TYPE_FP32": np.float32, "TYPE_INT32": np.int32, "TYPE_UINT8": np.uint8,
              "TYPE_STRING": np.object_, "TYPE_INT64": np.int64}  # fmt: skip
    m.triton_string_to_numpy = dtypes.__getitem__
    m.Logger = types.SimpleNamespace(log_info=lambda msg: None, log_error=lambda msg: None)
    return m


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tracker(monkeypatch):
    """A tracker step of track_pytorch, and the clock it reads."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stand_in_pb_utils())
    for name in ("ensemble.adapters", "ensemble.tracking_step"):
        sys.modules.pop(name, None)
    module = importlib.import_module("ensemble.tracking_step")
    clock = Clock()
    monkeypatch.setattr(module.time, "monotonic", clock)
    detection = spec.repository_spec(load_models()).ensemble("detect_pytorch")
    step = spec.track_step(detection)
    config = configgen.python_step_config(step, configgen.make_target("cpu"))
    model = module.Track()
    model.initialize({
        "model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
        "model_name": step.name,
    })  # fmt: skip
    yield model, clock
    for name in ("ensemble.adapters", "ensemble.tracking_step"):
        sys.modules.pop(name, None)


def frame(sequence: int, number: int, x: float, *, start=False, end=False) -> Request:
    """One frame of a person-sized box at ``x`` on a 200 x 300 grey image."""
    rows = np.zeros((1, contract.MAX_DETECTIONS, 6), np.float32)
    rows[0, 0] = (x, 40, x + 60, 180, 0.9, 0)
    return Request({
        contract.DETECTIONS: rows,
        contract.NUM_DETECTIONS: np.array([[1]], np.int32),
        spec.DECODED_IMAGE: np.full((1, 200, 300, 3), 90, np.uint8),
        spec.IMAGE_SIZE: np.array([[200, 300]], np.int32),
        spec.ORIGINAL_SIZE: np.array([[200, 300]], np.int32),
        contract.FRAME_INDEX: np.array([[number]], np.int64),
        "START": np.array([[int(start)]], np.int32),
        "END": np.array([[int(end)]], np.int32),
        "CORRID": np.array([[sequence]], np.uint64),
    }, Sender())  # fmt: skip


def answer(request: Request):
    """The one final response a frame got: (track ids, None) or (None, error)."""
    ((response, flags),) = request.sender.sent
    assert flags == 1
    if response.error is not None:
        return None, response.error
    outputs = {t.name: t.array for t in response.output_tensors}
    return outputs[contract.TRACK_IDS][0], None


def test_frames_out_of_order_are_held_then_answered_in_order(tracker):
    model, _ = tracker
    frames = [frame(5, k, 20 + 5 * k, start=k == 0) for k in range(5)]
    model.execute([frames[0]])
    model.execute([frames[3], frames[1]])
    assert frames[3].sender.sent == [] and len(frames[1].sender.sent) == 1
    model.execute([frames[2]])  # lets 3 go too
    model.execute([frames[4]])
    ids = [answer(f)[0][0] for f in frames]
    assert ids[0] == -1 and len(set(ids[1:])) == 1 and ids[1] >= 1  # confirmed at frame 1


def test_a_sequence_is_freed_at_its_end_and_after_its_idle_time(tracker):
    model, clock = tracker
    model.execute([frame(1, 0, 10, start=True)])
    model.execute([frame(1, 1, 12, end=True)])
    assert 1 not in model.sequences
    model.execute([frame(2, 0, 10, start=True)])
    waiting = frame(2, 2, 14)  # frame 1 never comes
    model.execute([waiting])
    clock.now += contract.TRACK_IDLE_S + 1
    model.execute([frame(3, 0, 10, start=True)])  # any frame lets the tracker look
    assert 2 not in model.sequences and 3 in model.sequences
    _, error = answer(waiting)
    assert f"had no frame for {contract.TRACK_IDLE_S} s" in error.message
    late = frame(2, 1, 12)
    model.execute([late])
    _, error = answer(late)
    assert error.code == Error.INVALID_ARG and "start it again with the START flag" in error.message


def test_a_start_beyond_the_limit_is_refused_and_the_others_go_on(tracker):
    model, _ = tracker
    for k in range(contract.MAX_TRACKED_SEQUENCES):
        model.execute([frame(100 + k, 0, 10, start=True)])
    refused = frame(999, 0, 10, start=True)
    model.execute([refused])
    _, error = answer(refused)
    assert error.code == Error.UNAVAILABLE
    assert f"{contract.MAX_TRACKED_SEQUENCES} sequences are tracked at once" in error.message
    going_on = frame(100, 1, 12)
    model.execute([going_on])
    assert answer(going_on)[1] is None


def test_a_frame_twice_or_too_far_ahead_is_refused_saying_why(tracker):
    model, _ = tracker
    model.execute([frame(7, 0, 10, start=True)])
    again = frame(7, 0, 10)
    ahead = frame(7, 1 + contract.TRACK_WINDOW, 10)
    model.execute([again, ahead])
    assert "came twice" in answer(again)[1].message
    assert "frames ahead" in answer(ahead)[1].message
    restarted = frame(7, 0, 10, start=True)  # START again: a new state
    model.execute([restarted])
    assert answer(restarted)[1] is None and model.sequences[7].next == 1
    assert json.loads(model.parameters["labels"])[0] == "person"
