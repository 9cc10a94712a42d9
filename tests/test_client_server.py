"""The project's client library and CLI against the real server.

The client learns which ensembles and detectors a server has from the server itself;
the session server serves the default ``models.toml``, whose names are the public
contract (``detect_pytorch``, ``detect_tensorflow``, ``detect_onnxruntime``,
``detect_all``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from client import DetectorClient, InvalidImage
from ensemble import contract
from ensemble.registry import load_models

pytestmark = pytest.mark.server

# The detectors the default models.toml serves, by name, and their ensembles.
DETECTORS = ("pytorch", "tensorflow", "onnxruntime")
CONTRACT_ENSEMBLES = (*(contract.ensemble_name(n) for n in DETECTORS), contract.DETECT_ALL)


@pytest.fixture(scope="module")
def client(triton_url):
    with DetectorClient(triton_url) as c:
        yield c


def test_client_lists_the_servers_ensembles_detect_all_first_and_all_ready(client):
    ensembles = client.ensembles()
    assert ensembles[0] == contract.DETECT_ALL
    assert set(CONTRACT_ENSEMBLES) <= set(ensembles)
    assert all(name.startswith(contract.ENSEMBLE_PREFIX) for name in ensembles)
    ready = client.ready_models()
    assert all(ready[name] for name in ensembles)


def test_client_reads_labels_from_the_server(client):
    for name in CONTRACT_ENSEMBLES:
        assert client.labels(name) == list(contract.COCO80_LABELS), name


def test_client_learns_each_detector_and_its_steps_from_the_server(client):
    models = load_models()  # the default models.toml, which the session server serves
    everything = client.model_info(contract.DETECT_ALL)
    assert [(d.name, d.title, d.runtime) for d in everything.detectors] == [
        (n, models[n].title, models[n].runtime) for n in DETECTORS
    ]
    assert everything.steps[0] == "image_decode" and everything.steps[-1] == "fuse_detections"
    for name in DETECTORS:
        info = client.model_info(contract.ensemble_name(name))
        assert info.title == models[name].title
        assert [d.name for d in info.detectors] == [name]
        assert info.per_detector_outputs == ()
        # The first step decodes the photo itself (one round trip less than a decode step).
        assert info.steps == (f"preprocess_{name}", name, f"postprocess_{name}")


def test_detect_all_returns_typed_fused_and_per_detector_results(client, photos):
    (result,) = client.detect([photos["motorcycle_left"]], model=contract.DETECT_ALL)
    assert result.detections[0].label == "motorcycle"
    assert set(result.per_detector) == set(DETECTORS)
    for per in result.per_detector.values():
        assert any(d.label == "motorcycle" for d in per.detections)
        image = cv2.imdecode(np.frombuffer(per.annotated_jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (500, 741, 3)


def large_jpeg(photo: bytes, scale: int) -> bytes:
    """The photo enlarged ``scale`` times, as a camera-sized JPEG."""
    image = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()


@pytest.mark.parametrize("model", [contract.ensemble_name("tensorflow"), contract.DETECT_ALL])
def test_a_smaller_annotated_image_keeps_the_boxes_in_the_photos_own_pixels(client, photos, model):
    photo = large_jpeg(photos["motorcycle_left"], 6)  # 4446 x 3000
    (full,) = client.detect([photo], model=model)
    (small,) = client.detect([photo], model=model, annotated_max_side=1000)
    image = cv2.imdecode(np.frombuffer(small.annotated_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (675, 1000, 3)  # 3000 * 1000 / 4446 = 674.8
    image = cv2.imdecode(np.frombuffer(full.annotated_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (3000, 4446, 3)
    # The detector saw the photo decoded at 1/4 instead of whole: the same motorcycle,
    # its box in the photo's pixels within a few pixels of the full decode's.
    big = [d for d in full.detections if d.label == "motorcycle"][0]
    seen = [d for d in small.detections if d.label == "motorcycle"][0]
    corners = [(d.x1, d.y1, d.x2, d.y2) for d in (big, seen)]
    np.testing.assert_allclose(corners[1], corners[0], atol=0.01 * 4446)
    assert big.x2 > 2000, "boxes in the photo's own pixels, not the decode's"


def test_client_sends_more_than_one_batch_when_asked_for_many_images(client, photos_dir):
    paths = [photos_dir / "coffee.png"] * (contract.MAX_BATCH_SIZE + 3)
    results = client.detect(paths, model="detect_tensorflow")
    assert len(results) == len(paths)
    assert all(r.detections[0].label == "cup" for r in results)


def test_client_threshold_changes_what_comes_back(client, photos):
    (low,) = client.detect([photos["astronaut"]], model="detect_pytorch", score_threshold=0.2)
    (high,) = client.detect([photos["astronaut"]], model="detect_pytorch", score_threshold=0.7)
    assert len(low.detections) > len(high.detections) >= 1
    assert min(d.score for d in high.detections) >= 0.7


def test_client_names_the_bad_image_and_stays_usable(client, photos):
    with pytest.raises(InvalidImage) as err:
        client.detect([b"definitely not an image"], model="detect_onnxruntime")
    assert "not an image" in str(err.value).lower()
    (result,) = client.detect([photos["astronaut"]], model="detect_onnxruntime")
    assert result.detections[0].label == "person"


def test_one_shared_client_serves_many_threads(client, photos):
    names = ["astronaut", "coffee", "horse", "motorcycle_left"] * 3
    expected = {"astronaut": "person", "coffee": "cup", "horse": "horse"}
    expected["motorcycle_left"] = "motorcycle"

    def top(name):
        (r,) = client.detect([photos[name]], model="detect_tensorflow")
        return name, r.detections[0].label

    with ThreadPoolExecutor(6) as pool:
        for name, label in pool.map(top, names):
            assert label == expected[name]


def test_cli_writes_annotated_images_and_coco_results(triton_url, tmp_path, photos_dir):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("a text file with an image's name")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "client", "--url", triton_url, "--model", "detect_all",
           "--out", str(out), str(photos_dir / "coffee.png"), str(photos_dir / "horse.png"),
           str(not_image)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # 1: some files were skipped
    assert "notes.jpg" in proc.stdout + proc.stderr
    assert "coffee.png: cup" in proc.stdout
    for stem in ("coffee", "horse"):
        for suffix in ("", *(f".{name}" for name in DETECTORS)):
            assert (out / f"{stem}{suffix}.jpg").stat().st_size > 1000
    results = json.loads((out / "results.json").read_text())
    cups = [r for r in results if r["file_name"] == "coffee.png" and r["category_name"] == "cup"]
    assert cups and all(r["category_id"] == 47 for r in cups)  # COCO's id for cup
    x, y, w, h = cups[0]["bbox"]
    assert 100 < x + w / 2 < 500 and w > 100 and h > 100
