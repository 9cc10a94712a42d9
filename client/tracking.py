"""Tracking a clip's objects through the server: one sequence of Triton's sequence
batcher per call, over a gRPC stream (the tracking ensembles are decoupled).

How a sequence is sent (``track_frames``):

- it gets a random correlation id; frames are numbered from 0 (FRAME_INDEX);
- the first frame goes alone, with START, and is answered before the next is sent:
  Triton's sequence batcher refuses a frame of a sequence it has not seen start;
- then up to ``max_in_flight`` frames are out at once; the tracker answers them in
  order even when they reach it out of order (``ensemble.tracking_step``);
- the last frame goes alone, with END, once every other is answered: the batcher
  forgets the sequence at END, and would refuse a frame that came after it.

When the server no longer knows the sequence (it restarted, or the sequence had no
frame for ``contract.TRACK_IDLE_S`` s), the frames in flight are answered with errors;
the client starts a new sequence at the first frame without an answer, logs it,
counts it in ``TrackRun.restarts``, and goes on: the new sequence's ids are
numbered on from the highest id the clip had, so an id means one object over the whole
clip (though an object seen before the restart gets a new one). A stream
that breaks because the server went away (it is restarting) is opened again once the
server says ready, for up to ``SERVER_BACK_S`` seconds, and the clip goes on the same
way.
"""

from __future__ import annotations

import logging
import queue
import random
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client.errors import DetectorError, first_line, is_unreachable
from client.payload import DEFAULT_OPTIONS, DetectOptions, build_inputs
from client.results import ImageResult, parse_image_results
from client.video import FRAME_JPEG_QUALITY, Frame, FrameResult, encode_frame
from ensemble.contract import (
    ANNOTATED_IMAGE,
    DETECTIONS,
    FRAME_INDEX,
    NUM_DETECTIONS,
    TRACK_ALL,
    TRACK_IDS,
    TRACK_WINDOW,
)

if TYPE_CHECKING:
    from client.api import DetectorClient

log = logging.getLogger(__name__)

DEFAULT_TRACK_IN_FLIGHT = 8  # frames of a sequence awaiting their answer at once
# The server's words for a sequence it does not know (Triton's sequence batcher, and
# the tracker itself): start a new one.
UNKNOWN_SEQUENCE = ("must specify the START flag", "is not tracked here", "never applied")
# Times a clip may start a new sequence before the error is raised.
MAX_RESTARTS = 5
# How long a clip waits for a server that went away to be ready again, polled this often.
SERVER_BACK_S = 120.0
SERVER_POLL_S = 0.5
OUTPUTS = (DETECTIONS, NUM_DETECTIONS, TRACK_IDS, ANNOTATED_IMAGE)


class TrackingFailed(DetectorError):
    """A tracking sequence the server refused, with the server's reason."""


@dataclass
class TrackRun:
    """What one ``track_frames`` call did so far: the sequences it used (a new one
    after each restart) and the frames at which it started again."""

    sequences: list[int] = field(default_factory=list)
    restarts: list[int] = field(default_factory=list)  # frame numbers


def _unknown_sequence(error: Exception) -> bool:
    return any(words in str(error) for words in UNKNOWN_SEQUENCE)


class _Stream:
    """One gRPC stream to the server and the answers it brought, by frame number."""

    def __init__(self, client: DetectorClient, model: str) -> None:
        self.grpc = client.stream_client()
        self.model = model
        self.headers = client.request_headers(model)
        self.answers: queue.Queue = queue.Queue()
        self.sent_at: dict[str, float] = {}  # request id -> time.perf_counter() when sent
        self.grpc.start_stream(callback=self._on_answer, headers=self.headers)

    def _on_answer(self, result, error) -> None:
        self.answers.put((result, error))

    def parse(self, result, labels, offset: int) -> tuple[int, ImageResult]:
        """An answer's request id and its result: each detection's ``track_id`` (plus
        ``offset``, the ids of a clip's earlier sequences), the round trip in
        ``latency_s``."""
        request = result.get_response().id
        arrays = {n: result.as_numpy(n) for n in OUTPUTS}
        (image,) = parse_image_results(arrays, labels)
        image.latency_s = time.perf_counter() - self.sent_at.pop(request, time.perf_counter())
        for k, detection in enumerate(image.detections):
            track = int(arrays[TRACK_IDS][0][k])
            detection.track_id = track + offset if track >= 0 else -1
        return int(request), image

    def send(self, payload: bytes, index: int, number: int, options: DetectOptions,
             sequence: int, *, start: bool, end: bool) -> None:  # fmt: skip
        """Frame ``index`` of the clip, ``number`` of ``sequence``."""
        inputs = build_inputs([payload], options)
        frame_number = grpcclient.InferInput(FRAME_INDEX, [1, 1], "INT64")
        frame_number.set_data_from_numpy(np.array([[number]], np.int64))
        self.sent_at[str(index)] = time.perf_counter()
        self.grpc.async_stream_infer(
            self.model, [*inputs, frame_number], request_id=str(index),
            outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUTS],
            sequence_id=sequence, sequence_start=start, sequence_end=end,
        )  # fmt: skip

    def close(self) -> None:
        try:
            self.grpc.stop_stream(cancel_requests=True)
        finally:
            self.grpc.close()


def track_frames(
    client: DetectorClient,
    frames: Iterable[Frame],
    model: str = TRACK_ALL,
    options: DetectOptions = DEFAULT_OPTIONS,
    *,
    max_in_flight: int = DEFAULT_TRACK_IN_FLIGHT,
    jpeg_quality: int = FRAME_JPEG_QUALITY,
    run: TrackRun | None = None,
    timeout_s: float = 120.0,
) -> Iterator[FrameResult]:
    """Track the objects of ``frames`` (BGR arrays or encoded images) with the tracking
    ensemble ``model`` (``track_<name>`` or ``track_all``); one ``FrameResult`` per
    frame, in order, each detection with its ``track_id`` (-1: none yet). See the
    module docstring for how the sequence is sent; ``run`` records its sequences and
    restarts. ``timeout_s`` bounds the wait for any one answer."""
    if not 1 <= max_in_flight <= TRACK_WINDOW:
        raise ValueError(f"max_in_flight must lie in [1, {TRACK_WINDOW}], got {max_in_flight}")
    run = run if run is not None else TrackRun()
    info = client.model_info(model)
    rng = random.Random()
    payloads: dict[int, bytes] = {}  # read, not yet handed over, by frame number
    source = iter(frames)
    read_so_far = 0

    def read(index: int) -> bool:
        """Frame ``index`` (the next unread one, or one already read) into
        ``payloads``; False at the end of ``frames``."""
        nonlocal read_so_far
        if index < read_so_far:
            return index in payloads
        try:
            frame = next(source)
        except StopIteration:
            return False
        payloads[index] = encode_frame(frame, jpeg_quality)
        read_so_far += 1
        return True

    def is_last(index: int) -> bool:
        if index + 1 in payloads:
            return False
        return not read(index + 1)

    stream = _Stream(client, model)
    ids = {"offset": 0, "highest": 0}
    try:
        first, done = 0, False  # the first frame of the current sequence
        while not done and read(first):
            sequence = rng.getrandbits(63) or 1
            run.sequences.append(sequence)
            ids["offset"] = ids["highest"]  # a new sequence numbers on
            frames_out = _run_sequence(
                stream, sequence, first, read, is_last, payloads, options, info,
                max_in_flight, timeout_s, ids,
            )  # fmt: skip
            while True:
                try:
                    result = next(frames_out)
                except StopIteration as end:
                    error, done, sent = end.value
                    break
                payloads.pop(result.index, None)
                yield result
            if error is None:
                continue
            gone = _stream_broken(error)
            if not (gone or _unknown_sequence(error)) or len(run.restarts) >= MAX_RESTARTS:
                raise TrackingFailed(f"tracking with {model} failed: {first_line(str(error))}")
            if gone:
                _await_server(client, model, str(error))
            first = sent  # the first frame without an answer
            run.restarts.append(first)
            log.warning(
                "the server no longer tracks sequence %d (%s): tracking starts again at "
                "frame %d, with new ids", sequence, first_line(str(error)), first,
            )  # fmt: skip
            stream.close()
            stream = _Stream(client, model)
    finally:
        stream.close()


def _run_sequence(stream: _Stream, sequence: int, first: int, read: Callable[[int], bool],
                  is_last: Callable[[int], bool], payloads: dict[int, bytes],
                  options: DetectOptions, info, max_in_flight: int, timeout_s: float,
                  ids: dict[str, int]) -> Generator[FrameResult, None, tuple]:  # fmt: skip
    """Send frames ``first``, ``first + 1`` ... as one sequence until the last frame is
    answered or an error came, yielding each frame's result, in order, as soon as it and
    every frame before it are answered (a clip's results are not held until its end).
    Returns the error (None), whether the last frame was answered, and the first frame
    not yielded. ``ids``: the ``offset`` added to this sequence's track ids, and the
    ``highest`` id so far."""
    answered: dict[int, FrameResult] = {}  # answered, not yet yielded: after a gap
    error: Exception | None = None
    out: set[int] = set()
    index = following = first  # the next frame to send; the next to yield

    def collect(until_empty: bool) -> Iterator[FrameResult]:
        nonlocal error, following
        while out and (until_empty or len(out) >= max_in_flight or error is not None):
            try:
                result, failure = stream.answers.get(timeout=timeout_s)
            except queue.Empty:
                waited = f"no answer from {stream.model} in {timeout_s:.0f} s"
                raise TrackingFailed(waited) from None
            if failure is not None:
                error = error or failure
                if _stream_broken(failure):  # nothing else comes on this stream
                    out.clear()
                else:
                    out.pop()  # which frame failed is not said: one fewer is out
                continue
            number, image = stream.parse(result, info.labels, ids["offset"])
            out.discard(number)
            ids["highest"] = max([ids["highest"], *(d.track_id for d in image.detections)])
            answered[number] = FrameResult(number, image)
            # An answer after a gap waits for the gap's frame (or, after an error, is
            # sent again in a new sequence).
            while following in answered:
                yield answered.pop(following)
                following += 1

    try:
        while error is None:
            last = is_last(index)
            start = index == first
            if last or start:
                yield from collect(until_empty=True)  # START and END go alone (docstring)
                if error is not None:
                    break
            stream.send(payloads[index], index, index - first, options, sequence,
                        start=start, end=last)  # fmt: skip
            out.add(index)
            if last or start:
                yield from collect(until_empty=True)
                if last:
                    break
            else:
                yield from collect(until_empty=False)
            index += 1
        yield from collect(until_empty=True)
    except InferenceServerException as e:
        error = e
    return error, error is None, following


def _await_server(client: DetectorClient, model: str, reason: str) -> None:
    """Until the server is ready again after it went away, for ``SERVER_BACK_S``."""
    log.warning("the server went away (%s): waiting for it to be ready", first_line(reason))
    deadline = time.monotonic() + SERVER_BACK_S
    while time.monotonic() < deadline:
        if client.is_ready():
            return
        time.sleep(SERVER_POLL_S)
    raise TrackingFailed(
        f"tracking with {model}: the server went away and was not ready within "
        f"{SERVER_BACK_S:.0f} s ({first_line(reason)})"
    )


# tritonclient's words for a stream that an error already ended.
_STREAM_ENDED = "no longer in valid state"


def _stream_broken(error: Exception) -> bool:
    """Whether ``error`` ended the stream itself (the server went away), not one frame."""
    return isinstance(error, InferenceServerException) and (
        is_unreachable(error) or _STREAM_ENDED in str(error)
    )


def distinct_objects(rows: Iterable[str]) -> dict[str, int]:
    """How many distinct track ids each label has among MOT rows (``video.mot_rows``), most
    first: ``{"person": 3, "car": 2}``."""
    ids: dict[str, set[int]] = {}
    for row in rows:
        fields = row.split(",", 7)
        ids.setdefault(fields[7], set()).add(int(fields[1]))
    return dict(sorted(((k, len(v)) for k, v in ids.items()), key=lambda kv: (-kv[1], kv[0])))


def describe_objects(counts: dict[str, int]) -> str:
    """``"3 distinct person, 2 distinct car"``, or ``"no object tracked"``."""
    return ", ".join(f"{n} distinct {label}" for label, n in counts.items()) or "no object tracked"


class TrackingSession:
    """One live sequence, one frame at a time (a webcam, a live source): ``track(frame)``
    sends a frame and returns its ``FrameResult``; ``close()`` ends the sequence (END,
    with the last frame sent again, its answer dropped). A session the server forgot
    (it restarted, or no frame came for ``contract.TRACK_IDLE_S`` s) starts a new
    sequence at the next frame: ``restarts`` counts them, and ids start again. Not
    thread-safe: one caller at a time."""

    def __init__(
        self,
        client: DetectorClient,
        model: str = TRACK_ALL,
        options: DetectOptions = DEFAULT_OPTIONS,
        *,
        jpeg_quality: int = FRAME_JPEG_QUALITY,
        timeout_s: float = 60.0,
    ) -> None:
        self.client, self.model, self.options = client, model, options
        self.jpeg_quality, self.timeout_s = jpeg_quality, timeout_s
        self.info = client.model_info(model)
        self.restarts = 0
        self.frames = 0  # frames answered, over every sequence
        self._offset = self._highest = 0  # ids number on over sequences (track_frames)
        self._stream: _Stream | None = None
        self._sequence = 0
        self._number = 0  # the next frame's number in the sequence
        self._last: bytes | None = None

    def track(self, frame: Frame) -> FrameResult:
        payload = encode_frame(frame, self.jpeg_quality)
        try:
            result = self._send(payload)
        except TrackingFailed as e:
            cause = e.__cause__
            if cause is None or not (_unknown_sequence(cause) or _stream_broken(cause)):
                raise
            if _stream_broken(cause):
                _await_server(self.client, self.model, str(cause))
            self.restarts += 1
            log.warning("the server no longer tracks this session (%s): a new sequence "
                        "starts, with new ids", first_line(str(cause)))  # fmt: skip
            self._reset()
            self._offset = self._highest
            result = self._send(payload)
        self._last = payload
        self.frames += 1
        return FrameResult(self.frames - 1, result.result)

    def _send(self, payload: bytes, end: bool = False) -> FrameResult:
        if self._stream is None:
            self._stream = _Stream(self.client, self.model)
            self._sequence = random.getrandbits(63) or 1
            self._number = 0
        start = self._number == 0
        number = self._number
        try:
            self._stream.send(payload, number, number, self.options, self._sequence,
                              start=start, end=end)  # fmt: skip
            answer, failure = self._stream.answers.get(timeout=self.timeout_s)
        except InferenceServerException as e:
            raise TrackingFailed(f"tracking with {self.model} failed: {first_line(str(e))}") from e
        except queue.Empty:
            raise TrackingFailed(f"no answer from {self.model} in {self.timeout_s:.0f} s") from None
        if failure is not None:
            raise TrackingFailed(
                f"tracking with {self.model} failed: {first_line(str(failure))}"
            ) from failure
        self._number += 1
        _, image = self._stream.parse(answer, self.info.labels, self._offset)
        self._highest = max([self._highest, *(d.track_id for d in image.detections)])
        return FrameResult(number, image)

    def _reset(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream = None

    def close(self) -> None:
        """End the sequence on the server (its state is freed at once) and the stream."""
        try:
            if self._stream is not None and self._last is not None and self._number > 0:
                self._send(self._last, end=True)
        except TrackingFailed as e:  # the server forgot it already: nothing to end
            log.info("ending the tracking session: %s", e)
        finally:
            self._reset()

    def __enter__(self) -> TrackingSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
