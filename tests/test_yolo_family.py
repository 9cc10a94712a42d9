"""The ``yolo`` family against Ultralytics' own code, on the same inputs.

Pre-processing is compared with Ultralytics' ``LetterBox`` on real photos; decoding with
``non_max_suppression`` followed by ``scale_boxes`` on the same raw ``[4 + nc, N]``
tensors. The tensors are synthetic with distinct scores: an untrained export's scores
are all tied, which leaves NMS's order to chance in both implementations.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ensemble import contract
from ensemble.families import make_options
from ensemble.families.yolo import YOLO, letterbox_geometry
from ensemble.imaging import decode_image

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my-lab" / "make_models.py"


@pytest.fixture(scope="module")
def ultralytics():
    """Ultralytics, imported the way the worked example imports it (offline, without
    torchvision)."""
    spec = importlib.util.spec_from_file_location("make_models", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.import_ultralytics()


def family(size: int, classes: int) -> YOLO:
    labels = [f"class {i}" for i in range(classes)]
    return YOLO(make_options(YOLO, {"input_size": size}), labels)


def synthetic_output(rng, classes: int, size: int, candidates: int = 2100) -> np.ndarray:
    """A raw ``[4 + classes, candidates]`` output: centres over the input, sizes from 4
    to 60 % of it, sparse distinct scores."""
    cx, cy = rng.uniform(0, size, (2, candidates))
    w, h = rng.uniform(4, 0.6 * size, (2, candidates))
    scores = rng.uniform(0, 1, (classes, candidates)) ** 6
    return np.vstack([cx, cy, w, h, scores]).astype(np.float32)


def reference(ultralytics, raw, image_size, size, score, iou) -> np.ndarray:
    import torch
    from ultralytics.utils.nms import non_max_suppression
    from ultralytics.utils.ops import scale_boxes

    (found,) = non_max_suppression(
        torch.from_numpy(raw[None]), conf_thres=score, iou_thres=iou,
        max_det=contract.MAX_DETECTIONS,
    )  # fmt: skip
    found = found.numpy().astype(np.float64)
    found[:, :4] = scale_boxes((size, size), found[:, :4], image_size)
    return found[np.argsort(-found[:, 4], kind="stable")]


@pytest.mark.parametrize("photo", ["coffee", "astronaut", "motorcycle_left", "rocket"])
@pytest.mark.parametrize("size", [320, 640])
def test_letterbox_matches_ultralytics(ultralytics, photos_dir, photo, size):
    from ultralytics.data.augment import LetterBox

    path = next(photos_dir.glob(f"{photo}.*"))
    rgb = decode_image(path.read_bytes())
    expected = LetterBox(new_shape=(size, size), auto=False)(image=np.ascontiguousarray(rgb))
    expected = expected.transpose(2, 0, 1).astype(np.float32) / 255  # RGB kept as given
    ours = family(size, 3).preprocess(rgb)
    assert ours.shape == (3, size, size) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_letterbox_keeps_aspect_ratio_and_centres_the_image():
    (h, w), (top, left) = letterbox_geometry((400, 600), 320)
    assert (h, w) == (213, 320) and left == 0 and top == 53  # 400 * 320 / 600; (320 - 213) / 2
    grey = family(320, 3).preprocess(np.zeros((400, 600, 3), np.uint8))
    assert grey[:, :top].min() == grey[:, :top].max() == pytest.approx(114 / 255)
    assert grey[:, top : top + h].max() == 0.0


@pytest.mark.parametrize(
    "classes, image_size, score, iou, seed",
    [(3, (480, 640), 0.25, 0.45, 0), (80, (640, 640), 0.25, 0.7, 1), (7, (300, 1000), 0.5, 0.5, 2),
     (1, (333, 222), 0.1, 0.45, 3)],
)  # fmt: skip
def test_decoding_matches_ultralytics_nms_and_scale_boxes(
    ultralytics, classes, image_size, score, iou, seed
):
    size = 320
    raw = synthetic_output(np.random.default_rng(seed), classes, size)
    ours = family(size, classes).postprocess({"output0": raw}, image_size, score, iou)
    expected = reference(ultralytics, raw, image_size, size, score, iou)
    assert len(expected) > 5, "the synthetic output should give the reference something to keep"
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours[:, 4], expected[:, 4], rtol=1e-6)
    np.testing.assert_array_equal(ours[:, 5], expected[:, 5])
    np.testing.assert_allclose(ours[:, :4], expected[:, :4], atol=1e-2)


def test_a_model_with_its_own_class_count_declares_and_decodes_it():
    yolo = family(320, 5)
    assert yolo.inputs[0].dims == (3, 320, 320)
    assert yolo.outputs[0].dims == (9, -1)
    raw = np.zeros((9, 2100), np.float32)
    raw[:4, 10] = [160, 160, 100, 50]  # cx, cy, w, h in input pixels
    raw[4 + 3, 10] = 0.9  # class 3
    rows = yolo.postprocess({"output0": raw}, (640, 640), 0.3, 0.5)
    np.testing.assert_allclose(rows, [[220, 270, 420, 370, 0.9, 3]], rtol=1e-5)


def test_boxes_outside_the_image_are_clipped_after_nms():
    yolo = family(320, 2)
    raw = np.zeros((6, 100), np.float32)
    raw[:4, 0] = [10, 10, 60, 60]  # reaches 20 px past the top-left corner
    raw[4, 0] = 0.8
    rows = yolo.postprocess({"output0": raw}, (320, 320), 0.3, 0.5)
    np.testing.assert_allclose(rows[0, :4], [0, 0, 40, 40])
