"""Fuzzing the image path through the server: a few hundred damaged and forged image
files (tests/fuzz_cases.py), spread over the ensembles, sent by tritonclient gRPC as a
stranger would. Every answer is a result or a per-request INVALID_ARGUMENT that reads
like the decode step's errors, and no Python-backend worker (stub process) dies on the
way. The decoder alone, on thousands of cases: test_fuzz_images.
"""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ensemble import contract
from ensemble.supervisor import alive, workers
from tests.fuzz_cases import FORMATS, SEED, Case, fuzz_cases
from tests.inference import image_inputs

pytestmark = pytest.mark.server

# The ensembles of the default models.toml, as a stranger would name them.
ENSEMBLES = (*(contract.ensemble_name(n) for n in ("pytorch", "tensorflow", "onnxruntime")),
             contract.DETECT_ALL)  # fmt: skip
# Cases of each mutation per format sent to the server: 50 a format, 300 in all.
SERVER_CASES = {"bitflip": 12, "overwrite": 12, "truncate": 8, "forge": 18}
# What the decode step's errors (ImageError) say, however the ensemble wraps them.
DECODE_ERROR = re.compile(r"The image |The data is not an image|Unsupported image")
# Seconds one answer may take; a case is small, but one forged to the pixel limit makes
# every detector and the annotation work on 40 Mpx.
ANSWER_SECONDS = 60


def server_cases() -> list[tuple[str, Case]]:
    """(ensemble, case) pairs: a seeded sample of every format and mutation, made for the
    contract's pixel limit, dealt round the ensembles."""
    sample = []
    for fmt in FORMATS:
        rng = random.Random(f"{SEED}/server/{fmt}")
        cases = fuzz_cases(fmt, contract.MAX_IMAGE_PIXELS)
        for mutation, count in SERVER_CASES.items():
            sample += rng.sample([c for c in cases if c.mutation == mutation], count)
    return [(ENSEMBLES[i % len(ENSEMBLES)], case) for i, case in enumerate(sample)]


def answer(client, ensemble: str, data: bytes) -> tuple[str, str]:
    """("result" | "error" | "wrong", detail) for one request of one image."""
    try:
        result = client.infer(ensemble, image_inputs([data]), client_timeout=ANSWER_SECONDS)
    except InferenceServerException as error:
        return "error", f"{error.status()}: {error.message()}"
    detections = result.as_numpy(contract.DETECTIONS)
    count = result.as_numpy(contract.NUM_DETECTIONS)
    annotated = result.as_numpy(contract.ANNOTATED_IMAGE)
    if (
        detections is None
        or detections.shape != (1, contract.MAX_DETECTIONS, 6)
        or count is None
        or not 0 <= int(count[0, 0]) <= contract.MAX_DETECTIONS
        or annotated is None
        or not annotated[0, 0]
    ):
        return "wrong", f"outputs {result.get_response(as_json=True).get('outputs')}"
    return "result", ""


@dataclass
class FuzzRun:
    answers: list[tuple[str, Case, str, str]]  # ensemble, case, kind, detail
    workers_before: dict[int, str] | None  # {pid: model} live; None: not this session's
    workers_after: dict[int, str] | None
    seconds: float


@pytest.fixture(scope="module")
def fuzz_run(triton_server, triton_url) -> FuzzRun:
    """The server cases sent once, two at a time (the machine has two cores), with the
    server's workers listed before and after."""
    pid = triton_server.process.pid if triton_server is not None else None
    before = workers(pid) if pid else None
    cases = server_cases()
    started = time.monotonic()

    def send(share: list[tuple[str, Case]]) -> list[tuple[str, Case, str, str]]:
        client = grpcclient.InferenceServerClient(triton_url)
        try:
            return [(e, c, *answer(client, e, c.data)) for e, c in share]
        finally:
            client.close()

    with ThreadPoolExecutor(2) as pool:
        halves = list(pool.map(send, (cases[0::2], cases[1::2])))
    seconds = time.monotonic() - started
    after = workers(pid) if pid else None
    return FuzzRun([a for half in halves for a in half], before, after, seconds)


def test_every_fuzzed_request_gets_a_result_or_a_clear_invalid_argument(fuzz_run):
    kinds = Counter((case.fmt, kind) for _, case, kind, _ in fuzz_run.answers)
    print(
        f"{len(fuzz_run.answers)} cases in {fuzz_run.seconds:.0f} s:", dict(sorted(kinds.items()))
    )
    unclear = [
        f"{ensemble} {case.name}: {kind} {detail}"
        for ensemble, case, kind, detail in fuzz_run.answers
        if not (
            kind == "result"
            or kind == "error"
            and detail.startswith("StatusCode.INVALID_ARGUMENT")
            and DECODE_ERROR.search(detail)
        )
    ]
    assert not unclear, f"{len(unclear)} unclear answers:\n" + "\n".join(unclear[:20])
    assert len(fuzz_run.answers) == sum(SERVER_CASES.values()) * len(FORMATS)
    assert {kind for *_, kind, _ in fuzz_run.answers} == {"result", "error"}
    assert {ensemble for ensemble, *_ in fuzz_run.answers} == set(ENSEMBLES)


def test_no_worker_dies_of_the_fuzzed_requests(fuzz_run):
    if fuzz_run.workers_before is None:
        pytest.skip(
            "the server at DETECTOR_TEST_URL runs elsewhere: its worker processes cannot be "
            "listed (the answers are checked by the test above)"
        )
    assert fuzz_run.workers_before, "no Python-backend workers found under tritonserver"
    # The same live processes for the same models, none dead: a worker that crashed is
    # missing from the live ones (a zombie or exiting), or replaced by a reload.
    assert fuzz_run.workers_after == fuzz_run.workers_before
    assert all(alive(pid) for pid in fuzz_run.workers_before), fuzz_run.workers_before


@pytest.mark.parametrize("ensemble", ENSEMBLES)
def test_a_photo_is_still_served_after_the_fuzzed_requests(fuzz_run, grpc, photos, ensemble):
    result = grpc.infer(ensemble, image_inputs([photos["astronaut"]]))
    count = int(result.as_numpy(contract.NUM_DETECTIONS)[0, 0])
    classes = result.as_numpy(contract.DETECTIONS)[0, :count, 5].astype(int)
    assert contract.COCO80_LABELS.index("person") in classes.tolist()
