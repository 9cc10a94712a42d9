"""Each family's preprocess and postprocess on hand-built tensors, and how families
register and take their options.

Synthetic detector outputs are written from known boxes, so the expected detections
are worked out here by hand, not by the decoding under test. Boxes are xyxy in pixels;
image sizes are ``(height, width)``.
"""

from __future__ import annotations

import numpy as np
import pytest

from ensemble import contract, families
from ensemble.families import FamilyError, builtin_families, make_options
from ensemble.families import nanodet as nanodet_module
from ensemble.registry import load_models

pytestmark = pytest.mark.unit

BUILTIN = builtin_families()
COCO = contract.COCO80_LABELS


def make_family(name: str, labels=COCO, **options):
    """A built-in family instance with ``options`` as a models file would set them."""
    cls = BUILTIN[name]
    return cls(make_options(cls, options), labels)


nanodet = make_family("nanodet")
ssd = make_family("ssd")
centernet = make_family("centernet")

# --- registry, options and preprocess --------------------------------------------


def test_the_builtin_families_register_themselves_by_name():
    assert {"nanodet", "ssd", "centernet", "yolo"} <= set(BUILTIN)
    for name, cls in BUILTIN.items():
        assert issubclass(cls, families.Family) and cls.name == name
        assert families.resolve(name) is cls


def test_every_family_of_the_committed_models_file_is_built_in():
    used = {d.family_ref for d in load_models().detectors}
    assert used == {"nanodet", "ssd", "centernet"}
    assert used <= set(BUILTIN)


def test_a_family_subclass_with_a_name_joins_the_registry(monkeypatch):
    monkeypatch.setattr(families, "FAMILIES", dict(families.FAMILIES))

    class Boxes(families.Family):
        name = "test_boxes_family"

    assert families.FAMILIES["test_boxes_family"] is Boxes
    assert families.resolve("test_boxes_family") is Boxes
    with pytest.raises(ValueError, match="two families are called 'test_boxes_family'"):

        class Other(families.Family):
            name = "test_boxes_family"


def test_a_subclass_of_a_builtin_without_a_name_of_its_own_does_not_replace_it(monkeypatch):
    monkeypatch.setattr(families, "FAMILIES", dict(families.FAMILIES))

    class MyNanoDet(BUILTIN["nanodet"]):
        pass

    assert families.FAMILIES["nanodet"] is BUILTIN["nanodet"]
    assert MyNanoDet not in families.FAMILIES.values()


def test_an_unknown_family_is_refused_with_the_choices():
    with pytest.raises(FamilyError, match="unknown family 'retina'.*centernet, nanodet"):
        families.resolve("retina")


def test_make_options_refuses_an_unknown_key_naming_it():
    with pytest.raises(FamilyError, match="unknown key 'input_sise'.*nanodet.*input_size"):
        make_options(BUILTIN["nanodet"], {"input_sise": 320})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("input_size", "320"),  # a string for an integer
        ("input_size", 320.0),  # a float for an integer
        ("input_size", True),  # a boolean is no integer
        ("mean_bgr", [1.0, 2.0]),  # two numbers for three
        ("std_bgr", [1.0, "2", 3.0]),  # a string inside the list
    ],
)
def test_make_options_refuses_a_wrongly_typed_value_naming_the_key(key, value):
    with pytest.raises(FamilyError, match=f"key '{key}' must be"):
        make_options(BUILTIN["nanodet"], {key: value})


def test_make_options_takes_an_int_for_a_float_and_a_list_for_a_tuple():
    options = make_options(BUILTIN["nanodet"], {"mean_bgr": [1, 2, 3], "input_size": 320})
    assert options.mean_bgr == (1.0, 2.0, 3.0) and isinstance(options.mean_bgr[0], float)
    assert options.input_size == 320
    assert options.std_bgr == BUILTIN["nanodet"].Options().std_bgr  # untouched: default


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_preprocess_matches_the_family_input_spec(name):
    family = make_family(name)
    x = family.preprocess(np.zeros((123, 457, 3), np.uint8))
    (spec,) = family.inputs
    assert x.shape == spec.dims
    assert x.dtype == {"FP32": np.float32, "UINT8": np.uint8}[spec.dtype]


@pytest.mark.parametrize("detector", load_models().detectors, ids=lambda d: d.name)
def test_preprocess_matches_each_served_detector_input(detector):
    x = detector.family.preprocess(np.zeros((123, 457, 3), np.uint8))
    assert x.shape == detector.inputs[0].dims


def test_nanodet_input_size_sets_its_input_and_output_dims():
    small = make_family("nanodet", input_size=320)
    assert small.inputs[0].dims == (3, 320, 320)
    # anchors of strides 8, 16, 32 on a 320 input: 40^2 + 20^2 + 10^2; 80 classes + 4 x 11 bins
    assert small.outputs[0].dims == (40 * 40 + 20 * 20 + 10 * 10, 80 + 4 * 11)
    assert small.preprocess(np.zeros((50, 70, 3), np.uint8)).shape == (3, 320, 320)
    assert nanodet.outputs[0].dims == (3549, 124)  # the default 416
    # fewer labels, fewer score columns
    assert make_family("nanodet", labels=("a", "b")).outputs[0].dims == (3549, 2 + 44)


def test_nanodet_at_320_decodes_on_its_own_grid():
    small = make_family("nanodet", input_size=320)
    out = np.zeros((2100, 124), np.float32)
    # stride 16 level starts after the 40 x 40 stride-8 one and is 20 wide; row 5, col 7:
    # centre (120, 88) in 320-input pixels; 2 bins (32 px) on every side: (88, 56, 152, 120)
    index = 1600 + 5 * 20 + 7
    out[index, 3] = 0.9
    for side in range(4):
        logits = np.full(11, -50.0)
        logits[2] = 50.0
        out[index, 80 + side * 11 : 80 + (side + 1) * 11] = logits
    detections = small.postprocess({small.outputs[0].name: out}, (640, 160), 0.3, 0.5)
    # image 160 wide (x / 2), 640 high (y * 2)
    np.testing.assert_allclose(detections, [[44, 112, 76, 240, 0.9, 3]], rtol=1e-5)


def test_nanodet_preprocess_is_bgr_normalised_channels_first():
    image = np.zeros((60, 80, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 255, 51, 0  # R, G, B
    x = nanodet.preprocess(image)
    assert x.shape == (3, 416, 416)
    # NanoDet's img_norm_cfg: BGR order, mean (103.53, 116.28, 123.675), std (57.375, 57.12, 58.395)
    np.testing.assert_allclose(x[0], (0 - 103.53) / 57.375, rtol=1e-5)  # blue
    np.testing.assert_allclose(x[1], (51 - 116.28) / 57.12, rtol=1e-5)  # green
    np.testing.assert_allclose(x[2], (255 - 123.675) / 58.395, rtol=1e-5)  # red


def test_nanodet_preprocess_keeps_rows_as_rows():
    image = np.zeros((100, 100, 3), np.uint8)
    image[:50] = 255  # top half white
    x = nanodet.preprocess(image)
    white, black = (255 - 103.53) / 57.375, (0 - 103.53) / 57.375
    np.testing.assert_allclose(x[0, :200], white, rtol=1e-5)
    np.testing.assert_allclose(x[0, 216:], black, rtol=1e-5)


def test_ssd_preprocess_keeps_uint8_rgb_values():
    image = np.full((30, 500, 3), (10, 20, 30), np.uint8)
    x = ssd.preprocess(image)
    assert x.shape == (300, 300, 3)
    np.testing.assert_array_equal(x[150, 150], [10, 20, 30])


def test_centernet_preprocess_keeps_the_0_to_255_range():
    image = np.full((700, 90, 3), (255, 0, 128), np.uint8)
    x = centernet.preprocess(image)
    assert x.shape == (512, 512, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[256, 256], [255.0, 0.0, 128.0])


def test_preprocess_stretches_so_a_left_half_stays_the_left_half():
    image = np.zeros((100, 400, 3), np.uint8)
    image[:, :200] = 255
    x = centernet.preprocess(image)
    assert (x[:, :250] == 255).all() and (x[:, 262:] == 0).all()


# --- nanodet ---------------------------------------------------------------------

NANODET_OUT = nanodet.outputs[0].name
LEVELS = {8: (0, 52), 16: (2704, 26), 32: (3380, 13)}  # stride -> (first row, grid width)


def nanodet_output() -> np.ndarray:
    """All scores 0, all distributions flat."""
    return np.zeros((3549, 124), np.float32)


def put_anchor(out, stride, row, col, scores: dict[int, float], bins_per_side) -> None:
    """Write one anchor: class scores, and per side (l, t, r, b) either one bin index
    (a one-hot distribution) or a pair of bins with equal weight."""
    first, width = LEVELS[stride]
    index = first + row * width + col
    for class_id, score in scores.items():
        out[index, class_id] = score
    for side, bins in enumerate(bins_per_side):
        logits = np.full(11, -50.0)
        logits[np.atleast_1d(bins)] = 50.0
        out[index, 80 + side * 11 : 80 + (side + 1) * 11] = logits


def test_nanodet_decodes_a_box_where_the_synthetic_output_puts_it():
    out = nanodet_output()
    # stride 16, row 5, col 7: centre ((7 + .5) * 16, (5 + .5) * 16) = (120, 88).
    # left 2 bins = 32 px, top 3 = 48, right between bins 2 and 3 = 2.5 * 16 = 40, bottom 4 = 64
    put_anchor(out, 16, 5, 7, {17: 0.8}, [2, 3, (2, 3), 4])
    detections = nanodet.postprocess({NANODET_OUT: out}, (832, 208), 0.3, 0.5)
    # 416-input box (88, 40, 160, 152); image 208 wide (x * 0.5), 832 high (y * 2)
    np.testing.assert_allclose(detections, [[44, 80, 80, 304, 0.8, 17]], rtol=1e-5)
    assert detections.dtype == np.float32


def test_nanodet_rows_are_levels_of_stride_8_16_32_in_row_major_order():
    out = nanodet_output()
    put_anchor(out, 8, 0, 51, {0: 0.9}, [1, 1, 1, 1])  # centre (412, 4)
    put_anchor(out, 32, 12, 0, {1: 0.7}, [1, 1, 0, 2])  # centre (16, 400)
    detections = nanodet.postprocess({NANODET_OUT: out}, (416, 416), 0.3, 0.5)
    # stride 8, 8 px each side: (404, -4, 420, 12), clipped to the image;
    # stride 32, left 32, top 32, right 0, bottom 64: (-16, 368, 16, 464), clipped
    np.testing.assert_allclose(
        detections, [[404, 0, 416, 12, 0.9, 0], [0, 368, 16, 416, 0.7, 1]], rtol=1e-5
    )


def test_nanodet_one_anchor_can_give_boxes_of_several_classes():
    out = nanodet_output()
    put_anchor(out, 32, 6, 6, {2: 0.6, 7: 0.5, 9: 0.29}, [1, 1, 1, 1])  # centre (208, 208)
    detections = nanodet.postprocess({NANODET_OUT: out}, (416, 416), 0.3, 0.5)
    np.testing.assert_allclose(
        detections, [[176, 176, 240, 240, 0.6, 2], [176, 176, 240, 240, 0.5, 7]], rtol=1e-5
    )


def test_nanodet_keeps_scores_at_the_threshold_and_suppresses_overlaps():
    out = nanodet_output()
    put_anchor(out, 16, 10, 10, {4: 0.3}, [2, 2, 2, 2])
    put_anchor(out, 16, 10, 11, {4: 0.25}, [2, 2, 2, 2])  # below the threshold
    put_anchor(out, 16, 20, 20, {5: 0.9}, [3, 3, 3, 3])
    put_anchor(out, 16, 20, 21, {5: 0.8}, [3, 3, 3, 3])  # IoU 80 / 112 with the one above
    detections = nanodet.postprocess({NANODET_OUT: out}, (416, 416), 0.3, 0.5)
    np.testing.assert_allclose(detections[:, 4:], [[0.9, 5], [0.3, 4]], rtol=1e-6)


def test_nanodet_returns_at_most_100_detections_sorted_by_score():
    out = nanodet_output()
    rng = np.random.default_rng(0)
    out[:, :80] = rng.uniform(0, 1, (3549, 80))  # hundreds of thousands of candidates
    detections = nanodet.postprocess({NANODET_OUT: out}, (480, 640), 0.05, 0.5)
    assert detections.shape == (100, 6)
    assert (np.diff(detections[:, 4]) <= 0).all()
    assert detections[0, 4] > 0.999


def test_nanodet_hands_nms_at_most_its_top_k_candidates(monkeypatch):
    # 3549 x 80 candidates at a low threshold would take NMS most of a minute.
    seen = []
    real = nanodet_module.boxes.filter_detections

    def spy(boxes_xyxy, scores, *args):
        seen.append(np.asarray(scores))
        return real(boxes_xyxy, scores, *args)

    monkeypatch.setattr(nanodet_module.boxes, "filter_detections", spy)
    out = nanodet_output()
    out[:, :80] = np.random.default_rng(1).uniform(0, 1, (3549, 80))
    nanodet.postprocess({NANODET_OUT: out}, (480, 640), 0.01, 0.5)
    assert len(seen[0]) == nanodet_module.PRE_NMS_TOP_K
    assert seen[0].min() > 0.99  # the best ones: ~2800 of 283920 uniform scores are above


def test_nanodet_with_nothing_above_the_threshold_is_empty():
    detections = nanodet.postprocess({NANODET_OUT: nanodet_output()}, (100, 100), 0.3, 0.5)
    assert detections.shape == (0, 6) and detections.dtype == np.float32


# --- ssd -------------------------------------------------------------------------

BOXES, SCORES, CLASSES, NUM = (t.name for t in ssd.outputs)


def ssd_outputs(rows: list[tuple[tuple[float, float, float, float], float, float]], num=None):
    boxes = np.zeros((100, 4), np.float32)
    scores = np.zeros(100, np.float32)
    classes = np.zeros(100, np.float32)
    for i, (box, score, class_id) in enumerate(rows):
        boxes[i], scores[i], classes[i] = box, score, class_id
    count = len(rows) if num is None else num
    return {BOXES: boxes, SCORES: scores, CLASSES: classes, NUM: np.array([count], np.float32)}


def test_ssd_maps_coco91_ids_to_coco80_and_drops_ids_outside_the_80():
    outputs = ssd_outputs(
        [
            ((0.0, 0.0, 0.1, 0.1), 0.9, 1),  # person -> 0
            ((0.5, 0.5, 0.6, 0.6), 0.8, 90),  # toothbrush -> 79
            ((0.2, 0.2, 0.3, 0.3), 0.7, 12),  # no class 12 in COCO-80: dropped
            ((0.7, 0.7, 0.8, 0.8), 0.6, 13),  # stop sign -> 11
        ]
    )
    detections = ssd.postprocess(outputs, (100, 100), 0.3, 0.5)
    np.testing.assert_array_equal(detections[:, 5], [0, 79, 11])


def test_ssd_turns_normalised_yxyx_into_pixel_xyxy_of_the_original_image():
    outputs = ssd_outputs([((0.1, 0.2, 0.5, 0.6), 0.9, 3)])
    detections = ssd.postprocess(outputs, (500, 1000), 0.3, 0.5)  # 500 high, 1000 wide
    np.testing.assert_allclose(detections, [[200, 50, 600, 250, 0.9, 2]], rtol=1e-5)


def test_ssd_reads_only_the_first_num_detections_rows():
    outputs = ssd_outputs([((0.0, 0.0, 0.5, 0.5), 0.5, 1), ((0.5, 0.5, 1.0, 1.0), 0.99, 1)], num=1)
    detections = ssd.postprocess(outputs, (100, 100), 0.3, 0.5)
    np.testing.assert_allclose(detections[:, 4], [0.5])


def test_ssd_applies_the_score_threshold():
    outputs = ssd_outputs([((0.0, 0.0, 0.5, 0.5), 0.29, 1), ((0.5, 0.5, 1.0, 1.0), 0.31, 1)])
    np.testing.assert_allclose(ssd.postprocess(outputs, (10, 10), 0.3, 0.5)[:, 4], [0.31])


def test_ssd_with_its_own_labels_reads_classes_as_1_based_indexes():
    own = make_family("ssd", labels=("bolt", "nut", "washer"), coco91_ids=False)
    outputs = ssd_outputs(
        [
            ((0.0, 0.0, 0.1, 0.1), 0.9, 1),  # bolt -> 0
            ((0.5, 0.5, 0.6, 0.6), 0.8, 3),  # washer -> 2
            ((0.2, 0.2, 0.3, 0.3), 0.7, 0),  # the API's background class: dropped
            ((0.7, 0.7, 0.8, 0.8), 0.6, 4),  # no fourth label: dropped
        ]
    )
    detections = own.postprocess(outputs, (100, 100), 0.3, 0.5)
    np.testing.assert_array_equal(detections[:, 5], [0, 2])


# --- centernet -------------------------------------------------------------------

CENTERNET_OUT = centernet.outputs[0].name


def centernet_output(rows) -> np.ndarray:
    out = np.zeros((100, 6), np.float32)
    out[: len(rows)] = rows
    return out


def test_centernet_rescales_512_input_pixels_to_a_1000x500_image():
    out = centernet_output([[128, 256, 384, 512, 0.9, 3]])
    detections = centernet.postprocess({CENTERNET_OUT: out}, (500, 1000), 0.3, 0.5)
    # x * 1000 / 512, y * 500 / 512
    np.testing.assert_allclose(detections, [[250, 250, 750, 500, 0.9, 3]], rtol=1e-5)


def test_centernet_drops_rows_with_a_nan_or_out_of_range_class():
    out = centernet_output(
        [
            [0, 0, 100, 100, 0.9, np.nan],
            [0, 0, 100, 100, 0.8, 80],
            [200, 200, 300, 300, 0.7, 79],
        ]
    )
    detections = centernet.postprocess({CENTERNET_OUT: out}, (512, 512), 0.3, 0.5)
    np.testing.assert_allclose(detections, [[200, 200, 300, 300, 0.7, 79]], rtol=1e-5)


def test_centernet_runs_class_aware_nms_and_clips():
    out = centernet_output(
        [
            [-20, 10, 100, 100, 0.6, 1],
            [-20, 10, 100, 98, 0.8, 1],  # same class, IoU ~0.98 with the row above
            [-20, 10, 100, 100, 0.5, 2],  # other class: kept
        ]
    )
    detections = centernet.postprocess({CENTERNET_OUT: out}, (512, 512), 0.3, 0.5)
    np.testing.assert_allclose(
        detections, [[0, 10, 100, 98, 0.8, 1], [0, 10, 100, 100, 0.5, 2]], rtol=1e-5
    )
