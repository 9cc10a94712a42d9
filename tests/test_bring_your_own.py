"""The README's worked example, end to end: a lab's models file served by the real
Triton.

``examples/my-lab/models.toml`` registers files by path under names of the lab's own:
a YOLO with 3 classes and its own labels exported to ONNX and TorchScript and run by the
lab's own Python code too, the bundled COCO networks standing in for a lab's TorchScript,
ONNX and SavedModel files, one with a family class from the lab's folder, and two entries
left out of fusion. ``make_models.py`` makes those files first, as the README says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ensemble import contract, native

pytestmark = pytest.mark.server

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my-lab"
SHAPES = ["circle", "square", "triangle"]
FUSED = ["shapes", "people", "street", "cars"]
ENSEMBLES = {f"detect_{n}" for n in (*FUSED, "shapes_ts", "shapes_py")} | {"detect_all"}


@pytest.fixture(scope="module")
def lab_url(tmp_path_factory):
    from conftest import require_models

    from ensemble.server import running_server

    require_models()
    made = subprocess.run(
        [sys.executable, str(EXAMPLE / "make_models.py")], capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    with running_server(EXAMPLE / "models.toml", workdir=tmp_path_factory.mktemp("lab")) as s:
        yield s.grpc_url


@pytest.fixture(scope="module")
def lab(lab_url):
    from client import DetectorClient

    with DetectorClient(lab_url) as client:
        yield client


def infer(client, model: str, photo: bytes, score: float = 0.3) -> dict:
    from tests.inference import image_inputs

    reply = client._client.infer(model, image_inputs([photo], score))
    return {o.name: reply.as_numpy(o.name) for o in reply.get_response().outputs}


def rows(outputs: dict, prefix: str = "") -> np.ndarray:
    n = int(outputs[prefix + contract.NUM_DETECTIONS][0, 0])
    return outputs[prefix + contract.DETECTIONS][0, :n]


def test_the_server_serves_the_labs_detectors_and_not_the_bundled_ones(lab):
    assert set(lab.ensembles()) == ENSEMBLES
    ready = lab.ready_models()
    assert all(ready[name] for name in ENSEMBLES)
    assert not any(name in ready for name in ("detect_pytorch", "pytorch", "detect_tensorflow"))


def test_per_detector_results_of_detect_all_carry_each_ones_own_labels(lab, photos):
    (result,) = lab.detect([photos["horse"]], model=contract.DETECT_ALL)
    assert "horse" in {d.label for d in result.detections}
    for name in ("people", "street", "cars"):
        assert "horse" in {d.label for d in result.per_detector[name].detections}
    assert lab.model_info(contract.DETECT_ALL).detectors[0].labels == tuple(SHAPES)


def test_each_detector_serves_its_own_labels_and_title(lab):
    for name in ("shapes", "shapes_ts", "shapes_py"):
        info = lab.model_info(f"detect_{name}")
        assert list(info.labels) == SHAPES
        assert [d.name for d in info.detectors] == [name]
    assert lab.model_info("detect_cars").labels == contract.COCO80_LABELS
    assert lab.model_info("detect_street").title == "Street (CenterNet, gamma-corrected)"
    assert lab.model_info("detect_shapes_py").detectors[0].runtime == "python"


def test_a_yolo_with_its_own_classes_answers_with_its_labels_in_all_three_runtimes(lab, photos):
    # Untrained: every score is below 0.005, so ask for everything above 0.001.
    results = {
        name: lab.detect([photos["coffee"]], model=f"detect_{name}", score_threshold=0.001)[0]
        for name in ("shapes", "shapes_ts", "shapes_py")
    }
    onnx = results["shapes"]
    assert onnx.detections and {d.label for d in onnx.detections} <= set(SHAPES)
    for other in ("shapes_ts", "shapes_py"):
        got = results[other]
        assert [d.label for d in got.detections] == [d.label for d in onnx.detections]
        np.testing.assert_allclose(
            [(d.x1, d.y1, d.x2, d.y2, d.score) for d in got.detections],
            [(d.x1, d.y1, d.x2, d.y2, d.score) for d in onnx.detections],
            rtol=1e-3, atol=0.05,
        )  # fmt: skip
    assert onnx.annotated_jpeg.startswith(b"\xff\xd8")


def test_detect_all_carries_exactly_the_detectors_marked_for_fusion(lab, photos):
    info = lab.model_info(contract.DETECT_ALL)
    assert [d.name for d in info.detectors] == FUSED
    assert list(info.labels[:3]) == SHAPES and list(info.labels[3:]) == list(contract.COCO80_LABELS)
    outputs = infer(lab, contract.DETECT_ALL, photos["horse"])
    expected = {
        contract.DETECTIONS,
        contract.NUM_DETECTIONS,
        contract.ANNOTATED_IMAGE,
        contract.ALTERNATIVE_LABELS,
    }
    for name in FUSED:
        expected |= set(contract.detector_outputs(name))
    assert set(outputs) == expected


def test_a_box_is_fused_among_the_detectors_that_know_its_label(lab, photos):
    outputs = infer(lab, contract.DETECT_ALL, photos["horse"])
    horse = contract.COCO80_LABELS.index("horse")  # in each COCO detector's own ids
    own = {}
    for name in ("people", "street", "cars"):
        found = rows(outputs, contract.output_prefix(name))
        found = found[found[:, 5] == horse]
        assert len(found), f"{name} saw no horse"
        own[name] = float(found[:, 4].max())
    union_horse = horse + len(SHAPES)  # the fused result indexes the union
    (fused,) = rows(outputs)[rows(outputs)[:, 5] == union_horse]
    # The three that know "horse" agree on it; the shapes YOLO, which has no such
    # label, does not count: the fused score is their mean, not three quarters of it.
    assert fused[4] == pytest.approx(np.mean(list(own.values())), abs=0.01)


def test_the_labs_family_class_does_the_pre_processing(lab, photos):
    """detect_street answers what the lab's GammaCenterNet + the ONNX give in process."""
    import onnxruntime as ort

    from ensemble.imaging import decode_image
    from ensemble.registry import load_models

    street = load_models(EXAMPLE / "models.toml")["street"]
    assert type(street.family).__name__ == "GammaCenterNet" and street.family.options.gamma == 0.9
    image = decode_image(photos["motorcycle_left"])
    session = ort.InferenceSession(str(street.artifact_path()), providers=["CPUExecutionProvider"])
    (raw,) = session.run(None, {"images": street.family.preprocess(image)[None]})
    expected = street.family.postprocess({"detections": raw[0]}, image.shape[:2], 0.3, 0.5)
    served = rows(infer(lab, "detect_street", photos["motorcycle_left"]))
    assert len(served) == len(expected) > 0
    np.testing.assert_allclose(served, expected, rtol=1e-3, atol=0.5)


def test_the_cli_writes_per_detector_results_with_their_labels(lab_url, tmp_path, photos_dir):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "client", str(photos_dir / "horse.png"), "--url", lab_url,
         "--model", "detect_all", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    assert {r["model"] for r in results} >= {"detect_all", "detect_cars", "detect_people"}
    assert "horse" in {r["category_name"] for r in results if r["model"] == "detect_all"}
    assert (out / "horse.street.jpg").is_file() and not (out / "horse.shapes_ts.jpg").exists()


def test_the_labs_native_detectors_answer_as_their_python_runners(lab_url, photos):
    """Each lab detector that runs natively (ONNX YOLO, TorchScript YOLO, the stand-ins
    by path) gives the raw outputs its Python runner gives (tests/native_check.py)."""
    import tritonclient.grpc as grpcclient
    from native_check import compare_with_runners

    from ensemble.registry import load_models

    with grpcclient.InferenceServerClient(lab_url) as grpc:
        compared = compare_with_runners(grpc, load_models(EXAMPLE / "models.toml"), photos)
    print("max |native - Python runner|:", compared)
    natively = {name for name, _, _ in compared}
    if len(native.built()) == 3:
        assert natively == {"shapes", "shapes_ts", "people", "street", "cars"}
