"""The tracker of a tracking ensemble (``track_<name>``, ``track_all``): the Python
backend model behind ``tracker_<name>``, a step under Triton's sequence batcher.

Each request is one frame of a sequence: Triton gives it the sequence's correlation id
(CORRID) and START / END flags, and the client numbers the frames (FRAME_INDEX, one
more each frame from the START frame's). The tracker keeps one ``ensemble.tracking.
Tracker`` per sequence, made at START, freed after the END frame, or forgotten after
``contract.TRACK_IDLE_S`` seconds without a frame; at most
``contract.MAX_TRACKED_SEQUENCES`` at once.

Frames reach this step in the order the steps before it finish them, which is not the
order they were sent when a client has several in flight (two instances of a step,
dynamic batching, three detectors of ``detect_all`` in parallel). A tracker must see
them in order, so the model is decoupled: a frame that comes early is held, its
response with it, until the frames before it have come; then they are applied and
answered in order. At most ``contract.TRACK_WINDOW`` frames wait per sequence. (The
alternative, one frame in flight per stream, would cost a clip most of its
throughput: the steps would run one frame at a time.)

Errors go back on the frame's own response, and the other sequences go on:
- a frame of a sequence this tracker does not know (never started, ended, forgotten,
  or a server that restarted), a frame number that came before or came twice, too many
  frames ahead: INVALID_ARGUMENT, saying what to do;
- a START beyond the limit of sequences: UNAVAILABLE, saying the limit.
(A first frame without START is refused by Triton's sequence batcher itself, before
this step: "must specify the START flag on the first request of the sequence".)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import triton_python_backend_utils as pb_utils

from ensemble import contract, spec
from ensemble.adapters import RequestError, _Adapter
from ensemble.boxes import pack_detections
from ensemble.imaging import draw_detections, draw_trails, encode_jpeg, fit_within
from ensemble.tracking import Tracker

Arrays = dict[str, np.ndarray]
# Box centres of each track drawn behind it, in frames.
TRAIL_FRAMES = 15


class TooManySequences(Exception):
    """A START beyond ``contract.MAX_TRACKED_SEQUENCES``."""


@dataclass
class Sequence:
    """One sequence's tracker and the frames waiting for an earlier one."""

    tracker: Tracker
    next: int  # the frame number applied next
    seen: float  # time.monotonic() of its last frame
    end: int | None = None  # the END frame's number, once it came
    held: dict[int, tuple] = field(default_factory=dict)  # number -> (sender, inputs)


class Track(_Adapter):
    def setup(self, args: dict) -> None:
        self.labels = json.loads(self.parameters["labels"])
        self.quality = int(self.parameters.get("jpeg_quality", "90"))
        self.sequences: dict[int, Sequence] = {}

    def execute(self, requests):
        now = time.monotonic()
        self._forget_idle(now)
        for request in requests:
            sender = request.get_response_sender()
            try:
                inputs = self._inputs(request)
                self._take(inputs, sender, now)
            except RequestError as e:
                self._refuse(sender, str(e), pb_utils.TritonError.INVALID_ARG)
            except TooManySequences as e:
                self._refuse(sender, str(e), pb_utils.TritonError.UNAVAILABLE)
            except Exception as e:  # never let one frame take the tracker down
                pb_utils.Logger.log_error(f"{self.model_name}: {type(e).__name__}: {e}")
                self._refuse(sender, f"{self.model_name} failed: {e}", None)
        return None

    def _inputs(self, request) -> Arrays:
        inputs = super()._inputs(request)
        for control in ("START", "END", "CORRID"):
            tensor = pb_utils.get_input_tensor_by_name(request, control)
            inputs[control] = tensor.as_numpy()
        return inputs

    def _take(self, inputs: Arrays, sender, now: float) -> None:
        if inputs[spec.IMAGE_SIZE].shape[0] != 1:
            raise RequestError("a tracking request carries one frame")
        corrid = int(inputs["CORRID"].reshape(-1)[0])
        index = int(inputs[contract.FRAME_INDEX].reshape(-1)[0])
        start, end = bool(inputs["START"].reshape(-1)[0]), bool(inputs["END"].reshape(-1)[0])
        sequence = self._sequence(corrid, index, start, now)
        if index < sequence.next or index in sequence.held:
            raise RequestError(
                f"frame {index} of sequence {corrid} came twice, or after frame "
                f"{sequence.next - 1}: number a sequence's frames from its START frame's, "
                "one more each frame, each once"
            )
        if index - sequence.next >= contract.TRACK_WINDOW:
            raise RequestError(
                f"frame {index} of sequence {corrid} is more than {contract.TRACK_WINDOW} "
                f"frames ahead of frame {sequence.next}, which has not come: keep fewer "
                "frames in flight"
            )
        sequence.held[index] = (sender, inputs)
        sequence.seen = now
        if end:
            sequence.end = index
        self._apply(corrid, sequence)

    def _sequence(self, corrid: int, index: int, start: bool, now: float) -> Sequence:
        if start:
            if (
                corrid not in self.sequences
                and len(self.sequences) >= contract.MAX_TRACKED_SEQUENCES
            ):
                raise TooManySequences(
                    f"{contract.MAX_TRACKED_SEQUENCES} sequences are tracked at once, the "
                    f"limit of {self.model_name}: end one (the END flag) or wait until one "
                    f"has had no frame for {contract.TRACK_IDLE_S} s"
                )
            self._drop(corrid, "it started again")
            self.sequences[corrid] = Sequence(Tracker(), next=index, seen=now)
        elif corrid not in self.sequences:
            raise RequestError(
                f"sequence {corrid} is not tracked here: it ended, had no frame for "
                f"{contract.TRACK_IDLE_S} s, or the server restarted; start it again "
                "with the START flag"
            )
        return self.sequences[corrid]

    def _apply(self, corrid: int, sequence: Sequence) -> None:
        """Apply and answer the held frames that are next, in order."""
        while sequence.next in sequence.held:
            sender, inputs = sequence.held.pop(sequence.next)
            try:
                sender.send(self._response(self._track(sequence.tracker, inputs)),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)  # fmt: skip
            except RequestError as e:
                self._refuse(sender, str(e), pb_utils.TritonError.INVALID_ARG)
            if sequence.next == sequence.end:
                del self.sequences[corrid]
                self._drop_held(sequence, f"sequence {corrid} ended at frame {sequence.end}")
                return
            sequence.next += 1

    def _track(self, tracker: Tracker, inputs: Arrays) -> Arrays:
        count = int(inputs[contract.NUM_DETECTIONS].reshape(-1)[0])
        rows = inputs[contract.DETECTIONS][0, :count]
        ids = tracker.update(rows)
        (height, width), original = inputs[spec.IMAGE_SIZE][0], inputs[spec.ORIGINAL_SIZE][0]
        max_side = int(inputs.get(contract.ANNOTATED_MAX_SIDE, np.zeros((1, 1))).reshape(-1)[0])
        if not 0 <= max_side <= contract.MAX_IMAGE_SIDE:
            raise RequestError(
                f"{contract.ANNOTATED_MAX_SIDE} must lie in [0, {contract.MAX_IMAGE_SIDE}]"
            )
        image = fit_within(inputs[spec.DECODED_IMAGE][0, :height, :width], max_side,
                           tuple(original))  # fmt: skip
        scale = np.array([image.shape[1] / original[1], image.shape[0] / original[0]] * 2)
        shown = rows.copy()
        shown[:, :4] *= scale
        trails = {t: [(x * scale[0], y * scale[1]) for x, y in points]
                  for t, points in tracker.trails(TRAIL_FRAMES).items()}  # fmt: skip
        drawn = draw_trails(draw_detections(image, shown, self.labels, ids), trails)
        packed, _ = pack_detections(rows)
        track_ids = np.full(contract.MAX_DETECTIONS, -1, np.int32)
        track_ids[: len(ids)] = ids[: contract.MAX_DETECTIONS]
        return {
            contract.DETECTIONS: packed[None],
            contract.NUM_DETECTIONS: np.array([[min(count, contract.MAX_DETECTIONS)]], np.int32),
            contract.TRACK_IDS: track_ids[None],
            contract.ANNOTATED_IMAGE: np.array([[encode_jpeg(drawn, self.quality)]], np.object_),
        }

    def _forget_idle(self, now: float) -> None:
        for corrid, sequence in list(self.sequences.items()):
            if now - sequence.seen > contract.TRACK_IDLE_S:
                del self.sequences[corrid]
                self._drop_held(
                    sequence, f"sequence {corrid} had no frame for {contract.TRACK_IDLE_S} s"
                )

    def _drop(self, corrid: int, why: str) -> None:
        sequence = self.sequences.pop(corrid, None)
        if sequence is not None:
            self._drop_held(sequence, f"sequence {corrid} was dropped: {why}")

    def _drop_held(self, sequence: Sequence, why: str) -> None:
        for index, (sender, _) in sorted(sequence.held.items()):
            self._refuse(sender, f"frame {index} never applied: {why}",
                         pb_utils.TritonError.INVALID_ARG)  # fmt: skip
        sequence.held.clear()

    @staticmethod
    def _refuse(sender, message: str, code) -> None:
        error = (
            pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
        )
        sender.send(pb_utils.InferenceResponse(error=error),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)  # fmt: skip
