"""Tracking ensembles against the real server: ids kept over a clip, frames that reach
the tracker out of order, the refusals (no START, a frame twice, too far ahead, too many
sequences), and a clip that goes on when the server restarts under it."""

from __future__ import annotations

import os
import queue
import signal
import threading
import time

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from client import DetectorClient
from client.tracking import TrackRun, describe_objects, distinct_objects
from client.video import mot_rows
from ensemble import contract
from ensemble.server import running_server
from tests.inference import image_inputs

pytestmark = pytest.mark.server

MODEL = "track_pytorch"


def moving_frames(photo: bytes, count: int, step: int = 6) -> list[np.ndarray]:
    """``count`` BGR frames of ``photo`` sliding ``step`` px right each frame on grey."""
    image = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2))
    h, w = image.shape[:2]
    frames = []
    for k in range(count):
        canvas = np.full((h, w + step * count, 3), 96, np.uint8)
        canvas[:, step * k : step * k + w] = image
        frames.append(canvas)
    return frames


def person_ids(result) -> set[int]:
    return {d.track_id for d in result.detections if d.label == "person" and d.track_id >= 0}


def test_a_tracked_clip_keeps_one_id_for_its_person_and_gives_mot_rows(triton_url, photos):
    frames = moving_frames(photos["astronaut"], 24)
    run = TrackRun()
    read = []

    def counted():
        for frame in frames:
            read.append(1)
            yield frame

    with DetectorClient(triton_url) as client:
        results, read_at_first = [], None
        for result in client.track_frames(counted(), MODEL, run=run, max_in_flight=6):
            read_at_first = len(read) if read_at_first is None else read_at_first
            results.append(result)
    # results come as they are answered, not at the clip's end: the first after at most
    # the frames in flight and the one read ahead (to know whether it is the last)
    assert read_at_first <= 6 + 2
    assert [r.index for r in results] == list(range(len(frames)))
    ids = [person_ids(r.result) for r in results]
    confirmed = [i for i in ids if i]
    assert len(confirmed) >= len(frames) - 3  # an id from the second or third frame on
    assert len(set().union(*confirmed)) == 1, ids  # one person, one id, all along
    rows = [row for r in results for row in mot_rows(r)]
    frame, track, x, y, w, h, score, label = rows[0].split(",")
    assert int(frame) >= 1 and int(track) in confirmed[0] and label == "person"
    assert float(w) > 0 and float(h) > 0 and 0 < float(score) <= 1
    assert describe_objects(distinct_objects(rows)).startswith("1 distinct person")
    drawn = cv2.imdecode(np.frombuffer(results[-1].result.annotated_jpeg, np.uint8), 1)
    assert drawn is not None and drawn.shape[:2] == frames[-1].shape[:2]
    assert run.restarts == [] and len(run.sequences) == 1
    assert all(0 < r.result.latency_s < 60 for r in results)  # each frame's round trip


class RawStream:
    """A tritonclient stream to the tracking ensemble, for what the client never sends."""

    def __init__(self, url: str):
        self.client = grpcclient.InferenceServerClient(url)
        self.answers: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.answers.put((result, error)))

    def send(self, photo: bytes, sequence: int, number: int, *, start=False, end=False) -> None:
        frame = grpcclient.InferInput(contract.FRAME_INDEX, [1, 1], "INT64")
        frame.set_data_from_numpy(np.array([[number]], np.int64))
        self.client.async_stream_infer(
            MODEL, [*image_inputs([photo]), frame], request_id=str(number),
            sequence_id=sequence, sequence_start=start, sequence_end=end,
        )  # fmt: skip

    def answer(self, timeout: float = 60):
        """(frame number, track ids) of the next answer, or (None, error message)."""
        result, error = self.answers.get(timeout=timeout)
        if error is not None:
            return None, error.message()
        return int(result.get_response().id), result.as_numpy(contract.TRACK_IDS)[0]

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


@pytest.fixture
def raw(triton_url):
    stream = RawStream(triton_url)
    yield stream
    stream.close()


def jpeg(frame: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", frame)[1].tobytes()


def test_frames_that_reach_the_tracker_out_of_order_are_answered_in_order(raw, photos):
    frames = [jpeg(f) for f in moving_frames(photos["astronaut"], 8)]
    sequence = 7001
    raw.send(frames[0], sequence, 0, start=True)
    assert raw.answer()[0] == 0
    for number in (4, 2, 6, 1, 3, 5):  # deliberately out of order
        raw.send(frames[number], sequence, number)
    answers = [raw.answer() for _ in range(6)]
    assert [number for number, _ in answers] == [1, 2, 3, 4, 5, 6]
    raw.send(frames[7], sequence, 7, end=True)
    answers.append(raw.answer())
    assert answers[-1][0] == 7
    kept = {int(i) for _, ids in answers[1:] for i in ids if i >= 0}
    assert len(kept) == 1  # the same person, one id, although sent out of order


def test_bad_sequences_are_refused_saying_what_to_do_and_others_go_on(raw, photos):
    photo = photos["horse"]
    raw.send(photo, 7101, 0)  # no START
    assert "START" in raw.answer()[1]
    raw.send(photo, 7102, 0, start=True)
    assert raw.answer()[0] == 0
    raw.send(photo, 7102, 0)  # the same frame number again
    assert "came twice" in raw.answer()[1]
    raw.send(photo, 7102, 1 + contract.TRACK_WINDOW + 1)  # far ahead of frame 1
    assert f"more than {contract.TRACK_WINDOW} frames ahead" in raw.answer()[1]
    raw.send(photo, 7102, 1, end=True)  # the sequence itself goes on, and ends
    assert raw.answer()[0] == 1
    raw.send(photo, 7102, 2)  # after its END
    assert "START" in raw.answer()[1]


def test_more_sequences_than_the_limit_are_refused_not_crashed(raw, photos):
    tiny = jpeg(np.full((64, 64, 3), 128, np.uint8))
    first = 7200
    for k in range(contract.MAX_TRACKED_SEQUENCES):
        raw.send(tiny, first + k, 0, start=True)
    assert all(raw.answer()[0] == 0 for _ in range(contract.MAX_TRACKED_SEQUENCES))
    raw.send(tiny, first + contract.MAX_TRACKED_SEQUENCES, 0, start=True)
    _, message = raw.answer()
    assert f"{contract.MAX_TRACKED_SEQUENCES} sequences are tracked at once" in message
    for k in range(contract.MAX_TRACKED_SEQUENCES):  # END frees them
        raw.send(tiny, first + k, 1, end=True)
    assert all(raw.answer()[0] == 1 for _ in range(contract.MAX_TRACKED_SEQUENCES))
    raw.send(tiny, first + contract.MAX_TRACKED_SEQUENCES, 0, start=True, end=True)
    assert raw.answer()[0] == 0


@pytest.mark.slow
def test_a_clip_goes_on_with_a_new_sequence_when_the_server_restarts(tmp_path, photos):
    frames = moving_frames(photos["astronaut"], 30, step=4)
    killed = threading.Event()
    with running_server(workdir=tmp_path, load=(MODEL,)) as server:

        def paced():
            for k, frame in enumerate(frames):
                if k == 10:  # tritonserver dies under the clip; the launcher restarts it
                    os.kill(server.process.pid, signal.SIGKILL)
                    killed.set()
                    time.sleep(0.5)
                yield frame

        run = TrackRun()
        with DetectorClient(server.grpc_url) as client:
            results = list(client.track_frames(paced(), MODEL, run=run, max_in_flight=4))
    assert killed.is_set()
    assert [r.index for r in results] == list(range(len(frames)))
    assert len(run.restarts) == 1 and 1 <= run.restarts[0] <= 10 and len(run.sequences) == 2
    after = [person_ids(r.result) for r in results[run.restarts[0] + 3 :]]
    assert all(after) and len(set().union(*after)) == 1  # tracked again after the restart
    before = set().union(*(person_ids(r.result) for r in results[: run.restarts[0]]))
    assert min(set().union(*after)) > max(before)  # numbered on: one id, one object


def test_a_live_session_tracks_one_frame_at_a_time_and_ends_its_sequence(triton_url, photos):
    from client.tracking import TrackingSession

    frames = moving_frames(photos["astronaut"], 8)
    with DetectorClient(triton_url) as client:
        session = TrackingSession(client, MODEL)
        ids = [person_ids(session.track(f).result) for f in frames]
        tracker = session._sequence
        session.close()
        assert len(set().union(*ids[2:])) == 1 and all(ids[2:])
        # its sequence ended on the server: a frame of it now needs a START
        raw = RawStream(triton_url)
        try:
            raw.send(jpeg(frames[0]), tracker, 9)
            assert "START" in raw.answer()[1]
        finally:
            raw.close()
