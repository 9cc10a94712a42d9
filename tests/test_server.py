"""The ensembles on the real Triton server, spoken to only through the public contract
with plain tritonclient gRPC calls, as any other client would.

Which ensembles a server has is the server's to say (its repository index and the
ensembles' config parameters); the default ``models.toml``, which the session server
serves, fixes the names of the public contract: ``detect_pytorch``,
``detect_tensorflow``, ``detect_onnxruntime`` and ``detect_all``.
"""

from __future__ import annotations

import json
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ensemble import contract
from ensemble.registry import load_models
from tests.inference import image_inputs

pytestmark = pytest.mark.server

# The detectors the default models.toml serves, by name, and their ensembles.
DETECTORS = ("pytorch", "tensorflow", "onnxruntime")
CONTRACT_ENSEMBLES = (*(contract.ensemble_name(n) for n in DETECTORS), contract.DETECT_ALL)

LABEL = {name: i for i, name in enumerate(contract.COCO80_LABELS)}

# What a person sees in each photo, where (x1, y1, x2, y2 in pixels, drawn by hand
# on the photo) and which detectors can see it. CenterNet calls the cat a dog and
# NanoDet-m at this size finds only the clearest objects.
SCENES = {
    "astronaut": ("person", (20, 15, 370, 512), {"pytorch", "tensorflow", "onnxruntime"}),
    "coffee": ("cup", (170, 15, 415, 305), {"pytorch", "tensorflow", "onnxruntime"}),
    "horse": ("horse", (15, 8, 390, 315), {"pytorch", "tensorflow", "onnxruntime"}),
    "motorcycle_left": ("motorcycle", (90, 95, 690, 450), {"pytorch", "tensorflow", "onnxruntime"}),
    "chelsea": ("cat", (0, 0, 451, 300), {"pytorch", "tensorflow"}),
}


def infer(grpc, model, images, score=None, iou=None, outputs=None):
    requested = None
    if outputs is not None:
        requested = [grpcclient.InferRequestedOutput(n) for n in outputs]
    return grpc.infer(model, image_inputs(images, score, iou), outputs=requested)


def detections(result, index=0, prefix=""):
    dets = result.as_numpy(prefix + contract.DETECTIONS)[index]
    n = int(result.as_numpy(prefix + contract.NUM_DETECTIONS)[index, 0])
    return dets, n


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    assert ok
    return buf.tobytes()


# --- what is served ------------------------------------------------------------------


def repository_index(grpc) -> dict[str, str]:
    """Every model of the server's repository and its state (READY, UNAVAILABLE, ...);
    READY where any of its versions is."""
    states: dict[str, str] = {}
    for model in grpc.get_model_repository_index(as_json=True)["models"]:
        if states.get(model["name"]) != "READY":
            states[model["name"]] = model.get("state", "")
    return states


def served_ensembles(grpc) -> list[str]:
    return [n for n in repository_index(grpc) if n.startswith(contract.ENSEMBLE_PREFIX)]


def config(grpc, model: str) -> dict:
    return grpc.get_model_config(model, as_json=True)["config"]


def parameter(grpc, model: str, key: str) -> str:
    return config(grpc, model)["parameters"][key]["string_value"]


def test_the_contract_ensembles_are_served(grpc):
    assert set(CONTRACT_ENSEMBLES) <= set(served_ensembles(grpc))


def test_every_model_in_the_repository_is_ready(grpc):
    assert grpc.is_server_ready()
    index = repository_index(grpc)
    assert {n: state for n, state in index.items() if state != "READY"} == {}
    for name in served_ensembles(grpc):
        steps = [s["model_name"] for s in config(grpc, name)["ensemble_scheduling"]["step"]]
        assert steps and all(grpc.is_model_ready(s) for s in steps), (name, steps)
        assert set(steps) <= set(index), f"{name} uses models the index does not list"


def test_every_ensemble_serves_its_labels_title_and_detectors(grpc):
    for name in served_ensembles(grpc):
        params = config(grpc, name)["parameters"]
        assert {contract.LABELS_PARAMETER, contract.TITLE_PARAMETER} <= set(params), name
        assert contract.DETECTORS_PARAMETER in params, name
        labels = json.loads(params[contract.LABELS_PARAMETER]["string_value"])
        assert labels and all(isinstance(x, str) and x for x in labels), name
        assert len(set(labels)) == len(labels), f"{name}: a label twice"
        assert params[contract.TITLE_PARAMETER]["string_value"], name
        detectors = json.loads(params[contract.DETECTORS_PARAMETER]["string_value"])
        assert detectors, name
        for d in detectors:
            assert all(d.get(k) for k in ("name", "title", "runtime")), (name, d)
            if "labels" in d:  # a detector's own labels, which its own outputs index
                assert set(d["labels"]) <= set(labels), (name, d["name"])
        if name != contract.DETECT_ALL:
            assert [d["name"] for d in detectors] == [name.removeprefix("detect_")]
            assert detectors[0].get("labels", labels) == labels, name


def test_label_list_is_served_with_each_contract_ensemble(grpc):
    for name in CONTRACT_ENSEMBLES:
        labels = json.loads(parameter(grpc, name, contract.LABELS_PARAMETER))
        assert labels == list(contract.COCO80_LABELS), name
        assert labels[0] == "person" and labels[79] == "toothbrush"


def test_detect_all_lists_the_three_detectors_with_their_titles(grpc):
    listed = json.loads(parameter(grpc, contract.DETECT_ALL, contract.DETECTORS_PARAMETER))
    models = load_models()  # the default models.toml, which the session server serves
    expected = [(n, models[n].title, models[n].runtime) for n in DETECTORS]
    assert [(d["name"], d["title"], d["runtime"]) for d in listed] == expected
    for d in listed:  # each one's own ensemble describes it the same way
        assert d.get("labels", list(contract.COCO80_LABELS)) == list(contract.COCO80_LABELS)
        ensemble = contract.ensemble_name(d["name"])
        assert json.loads(parameter(grpc, ensemble, contract.DETECTORS_PARAMETER)) == [d]
        assert parameter(grpc, ensemble, contract.TITLE_PARAMETER) == d["title"]


# --- what a person sees --------------------------------------------------------------


@pytest.mark.parametrize(
    ("ensemble", "photo"),
    [(f"detect_{fw}", photo) for photo, (_, _, seen) in SCENES.items() for fw in sorted(seen)],
)
def test_detector_finds_what_a_person_sees_where_it_is(grpc, photos, ensemble, photo):
    label, box, _ = SCENES[photo]
    dets, n = detections(infer(grpc, ensemble, [photos[photo]]))
    found = [d for d in dets[:n] if int(d[5]) == LABEL[label]]
    assert found, f"{ensemble} missed the {label} in {photo}: {dets[:n].tolist()}"
    assert iou(found[0][:4], box) > 0.5, f"{label} box {found[0][:4]} is not where it is {box}"


@pytest.mark.parametrize("photo", list(SCENES))
def test_fused_result_keeps_what_a_person_sees(grpc, photos, photo):
    label, box, _ = SCENES[photo]
    dets, n = detections(infer(grpc, contract.DETECT_ALL, [photos[photo]]))
    found = [d for d in dets[:n] if int(d[5]) == LABEL[label]]
    assert found, f"fusion lost the {label} in {photo}: {dets[:n].tolist()}"
    assert iou(found[0][:4], box) > 0.5


def test_grayscale_photo_is_detected_like_a_colour_one(grpc, photos):
    # camera.png is a single-channel photo of a man with a camera.
    dets, n = detections(infer(grpc, "detect_tensorflow", [photos["camera"]]))
    assert LABEL["person"] in dets[:n, 5].astype(int).tolist()


# --- the shape of every answer ---------------------------------------------------------


@pytest.mark.parametrize("ensemble", CONTRACT_ENSEMBLES)
def test_outputs_follow_the_contract(grpc, photos, ensemble):
    result = infer(grpc, ensemble, [photos["motorcycle_left"]])
    dets = result.as_numpy(contract.DETECTIONS)
    nums = result.as_numpy(contract.NUM_DETECTIONS)
    jpegs = result.as_numpy(contract.ANNOTATED_IMAGE)
    assert dets.shape == (1, contract.MAX_DETECTIONS, 6) and dets.dtype == np.float32
    assert nums.shape == (1, 1) and nums.dtype == np.int32
    assert jpegs.shape == (1, 1)
    n = int(nums[0, 0])
    assert 0 < n <= contract.MAX_DETECTIONS
    real, padding = dets[0, :n], dets[0, n:]
    assert not padding.any(), "rows after NUM_DETECTIONS must be zero"
    assert np.all(np.diff(real[:, 4]) <= 0), "detections must be sorted by score"
    assert np.all(real[:, 4] >= contract.DEFAULT_SCORE_THRESHOLD)
    assert np.all((real[:, 0] >= 0) & (real[:, 2] <= 741) & (real[:, 0] < real[:, 2]))
    assert np.all((real[:, 1] >= 0) & (real[:, 3] <= 500) & (real[:, 1] < real[:, 3]))
    assert np.all((real[:, 5] >= 0) & (real[:, 5] < 80) & (real[:, 5] == np.round(real[:, 5])))
    annotated = cv2.imdecode(np.frombuffer(jpegs[0, 0], np.uint8), cv2.IMREAD_COLOR)
    assert jpegs[0, 0][:3] == b"\xff\xd8\xff", "ANNOTATED_IMAGE must be a JPEG"
    assert annotated.shape == (500, 741, 3), "annotated image keeps the original size"


def test_annotated_image_shows_the_boxes(grpc, photos):
    result = infer(grpc, "detect_tensorflow", [photos["coffee"]])
    jpeg = result.as_numpy(contract.ANNOTATED_IMAGE)[0, 0]
    annotated = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imdecode(np.frombuffer(photos["coffee"], np.uint8), cv2.IMREAD_COLOR)
    dets, n = detections(result)
    x1, y1, x2, y2 = (int(round(v)) for v in dets[0, :4])
    edge = np.abs(
        annotated[y1:y2, max(x1 - 1, 0) : x1 + 2].astype(int)
        - original[y1:y2, max(x1 - 1, 0) : x1 + 2]
    )
    far = np.abs(
        annotated[y1 + 40 : y2 - 40, x1 + 60 : x2 - 60].astype(int)
        - original[y1 + 40 : y2 - 40, x1 + 60 : x2 - 60]
    )
    assert edge.mean() > 30, "the box's left edge should be drawn"
    assert far.mean() < 8, (
        "inside the box, away from edges and label, the photo is unchanged (JPEG noise aside)"
    )


def test_detect_all_per_detector_outputs_equal_the_single_ensembles(grpc, photos):
    everything = infer(grpc, contract.DETECT_ALL, [photos["astronaut"]])
    listed = json.loads(parameter(grpc, contract.DETECT_ALL, contract.DETECTORS_PARAMETER))
    assert [d["name"] for d in listed] == list(DETECTORS)
    for d in listed:
        single = infer(grpc, contract.ensemble_name(d["name"]), [photos["astronaut"]])
        dets_all, n_all = detections(everything, prefix=contract.output_prefix(d["name"]))
        dets_one, n_one = detections(single)
        assert n_all == n_one, d["name"]
        np.testing.assert_allclose(dets_all[:n_all], dets_one[:n_one], atol=1e-3)


# --- batching and concurrency ----------------------------------------------------------


@pytest.mark.parametrize("ensemble", CONTRACT_ENSEMBLES)
def test_several_images_in_one_request_get_their_own_answers(grpc, photos, ensemble):
    names = ["coffee", "astronaut", "motorcycle_left"]  # different sizes in one batch
    batch = infer(grpc, ensemble, [photos[n] for n in names])
    assert batch.as_numpy(contract.DETECTIONS).shape == (3, contract.MAX_DETECTIONS, 6)
    for i, name in enumerate(names):
        alone = infer(grpc, ensemble, [photos[name]])
        d_batch, n_batch = detections(batch, i)
        d_alone, n_alone = detections(alone)
        assert n_batch == n_alone, name
        np.testing.assert_allclose(d_batch[:n_batch], d_alone[:n_alone], atol=0.05)
        jpeg = batch.as_numpy(contract.ANNOTATED_IMAGE)[i, 0]
        h, w = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2]
        original = cv2.imdecode(np.frombuffer(photos[name], np.uint8), cv2.IMREAD_COLOR)
        assert (h, w) == original.shape[:2], "padding inside the batch must not leak out"


def test_concurrent_requests_all_get_correct_answers(triton_url, photos):
    names = ["astronaut", "coffee", "motorcycle_left", "chelsea"] * 4

    def one(name):
        client = grpcclient.InferenceServerClient(triton_url)
        try:
            dets, n = detections(infer(client, "detect_tensorflow", [photos[name]]))
            return name, dets[:n, 5].astype(int).tolist()
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, names))
    for name, classes in results:
        assert LABEL[SCENES[name][0]] in classes, (name, classes)


def test_batch_larger_than_the_maximum_is_refused_clearly(grpc, photos):
    with pytest.raises(InferenceServerException, match="batch"):
        infer(grpc, "detect_tensorflow", [photos["coffee"]] * (contract.MAX_BATCH_SIZE + 1))


# --- thresholds --------------------------------------------------------------------------


def test_score_threshold_reaches_the_server_per_request(grpc, photos):
    low_d, low_n = detections(infer(grpc, "detect_onnxruntime", [photos["astronaut"]], score=0.1))
    high_d, high_n = detections(infer(grpc, "detect_onnxruntime", [photos["astronaut"]], score=0.6))
    assert low_n > high_n
    assert np.all(low_d[:low_n, 4] >= 0.1) and np.all(high_d[:high_n, 4] >= 0.6)


def test_iou_threshold_reaches_the_server_per_request(grpc, photos):
    # A lower NMS IoU threshold suppresses more overlapping boxes.
    def count(iou):
        result = infer(grpc, "detect_pytorch", [photos["astronaut"]], score=0.2, iou=iou)
        return detections(result)[1]

    assert count(0.1) < count(0.9)


def test_threshold_outside_zero_one_gets_a_clear_error(grpc, photos):
    with pytest.raises(InferenceServerException, match="SCORE_THRESHOLD must lie in"):
        infer(grpc, "detect_tensorflow", [photos["coffee"]], score=1.5)


# --- bad input never takes the server down ------------------------------------------------


def forged_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with a tiny (wrong) body."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def rgba_png() -> bytes:
    image = np.zeros((120, 160, 4), np.uint8)
    image[..., 2] = 200
    image[..., 3] = 128
    return png(image)


BAD_INPUTS = {
    "not an image": (b"this is plainly text, not an image" * 10, "not an image|cannot|decode"),
    "empty": (b"", "empty"),
    "truncated jpeg": (None, "not an image|cannot|decode|truncated"),
    "30000x30000 header": (forged_png(30000, 30000), "too large|pixels"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("ensemble", ["detect_pytorch", contract.DETECT_ALL])
def test_bad_input_gets_a_clear_error_and_the_server_keeps_serving(grpc, photos, case, ensemble):
    data, message = BAD_INPUTS[case]
    if data is None:
        ok, jpeg = cv2.imencode(".jpg", cv2.imdecode(np.frombuffer(photos["coffee"], np.uint8), 1))
        data = jpeg.tobytes()[:200]
    with pytest.raises(InferenceServerException, match=f"(?i){message}"):
        infer(grpc, ensemble, [data])
    assert grpc.is_server_live() and grpc.is_model_ready(ensemble)
    dets, n = detections(infer(grpc, ensemble, [photos["astronaut"]]))
    assert LABEL["person"] in dets[:n, 5].astype(int).tolist()


def test_one_bad_image_in_a_batch_names_which_one(grpc, photos):
    with pytest.raises(InferenceServerException, match="image 2 of 3"):
        infer(grpc, "detect_tensorflow", [photos["coffee"], b"garbage", photos["chelsea"]])


@pytest.mark.parametrize("ensemble", CONTRACT_ENSEMBLES)
def test_odd_but_valid_images_get_correct_answers(grpc, ensemble):
    tiny = png(np.full((1, 1, 3), 127, np.uint8))
    gray = png(np.full((64, 48), 200, np.uint8))
    for data, (h, w) in ((tiny, (1, 1)), (gray, (64, 48)), (rgba_png(), (120, 160))):
        result = infer(grpc, ensemble, [data])
        dets, n = detections(result)
        assert 0 <= n <= contract.MAX_DETECTIONS
        assert np.all(dets[:n, 2] <= w) and np.all(dets[:n, 3] <= h)
        jpeg = result.as_numpy(contract.ANNOTATED_IMAGE)[0, 0]
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (h, w)


def test_webp_bmp_and_jpeg_are_accepted(grpc, photos):
    original = cv2.imdecode(np.frombuffer(photos["motorcycle_left"], np.uint8), cv2.IMREAD_COLOR)
    for ext in (".jpg", ".bmp", ".webp"):
        ok, buf = cv2.imencode(ext, original)
        assert ok
        dets, n = detections(infer(grpc, "detect_tensorflow", [buf.tobytes()]))
        assert LABEL["motorcycle"] in dets[:n, 5].astype(int).tolist(), ext


def test_forged_png_really_claims_30000_by_30000_pixels():
    # Guards the helper above: otherwise the bad-input test would prove nothing.
    data = forged_png(30000, 30000)
    assert data[12:16] == b"IHDR" and struct.unpack(">II", data[16:24]) == (30000, 30000)
