"""Box helpers, NMS, weighted box fusion (per label and across labels) and packing;
expected values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble import boxes, contract

pytestmark = pytest.mark.unit

# --- helpers ---------------------------------------------------------------------


def test_scale_boxes_stretches_x_and_y_separately():
    scaled = boxes.scale_boxes(np.array([[100, 50, 200, 150]]), (400, 400), (200, 800))
    np.testing.assert_allclose(scaled, [[200, 25, 400, 75]])


def test_normalised_boxes_scale_to_pixels_with_unit_source_size():
    scaled = boxes.scale_boxes(np.array([[0.25, 0.5, 1.0, 1.0]]), (1, 1), (300, 640))
    np.testing.assert_allclose(scaled, [[160, 150, 640, 300]])


def test_clip_boxes_clips_x_to_width_and_y_to_height():
    clipped = boxes.clip_boxes(np.array([[-5, -1, 700, 90], [10, 20, 30, 40]]), (80, 640))
    np.testing.assert_allclose(clipped, [[0, 0, 640, 80], [10, 20, 30, 40]])


def test_yxyx_to_xyxy_swaps_axes():
    np.testing.assert_array_equal(boxes.yxyx_to_xyxy(np.array([[1, 2, 3, 4]])), [[2, 1, 4, 3]])


def test_iou_of_hand_computed_pairs():
    # 10x10 vs 10x20 sharing 100 px: 100 / 200; disjoint: 0; identical: 1
    ious = boxes.iou([0, 0, 10, 10], np.array([[0, 0, 10, 20], [20, 20, 30, 30], [0, 0, 10, 10]]))
    np.testing.assert_allclose(ious, [0.5, 0.0, 1.0])


# --- nms -------------------------------------------------------------------------


def test_nms_suppresses_a_lower_scoring_overlap_of_the_same_class():
    b = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]], float)  # IoU(0,1) = .81
    kept = boxes.nms(b, np.array([0.9, 0.8, 0.7]), np.array([3, 3, 3]), 0.5)
    np.testing.assert_array_equal(kept, [0, 2])


def test_nms_keeps_overlapping_boxes_of_different_classes():
    b = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float)
    kept = boxes.nms(b, np.array([0.9, 0.8]), np.array([0, 1]), 0.5)
    np.testing.assert_array_equal(kept, [0, 1])


def test_nms_suppresses_only_above_the_threshold():
    b = np.array([[0, 0, 10, 10], [0, 0, 10, 20]], float)  # IoU exactly 0.5
    s, c = np.array([0.9, 0.8]), np.array([0, 0])
    np.testing.assert_array_equal(boxes.nms(b, s, c, 0.5), [0, 1])
    np.testing.assert_array_equal(boxes.nms(b, s, c, 0.49), [0])


def test_nms_handles_sub_pixel_boxes():
    b = np.array([[0, 0, 1.0, 0.3], [0, 0, 0.5, 0.3]])  # IoU 0.5 in fractions of a pixel
    s, c = np.array([0.9, 0.8]), np.array([0, 0])
    assert len(boxes.nms(b, s, c, 0.51)) == 2 and len(boxes.nms(b, s, c, 0.49)) == 1


def test_nms_returns_indices_by_descending_score():
    b = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], float)
    kept = boxes.nms(b, np.array([0.2, 0.9, 0.5]), np.array([0, 1, 0]), 0.5)
    np.testing.assert_array_equal(kept, [1, 2, 0])


def test_nms_of_no_boxes_is_empty():
    kept = boxes.nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0.5)
    assert kept.shape == (0,) and kept.dtype == np.int64


def test_nms_never_keeps_empty_inverted_or_nan_boxes():
    b = np.array(
        [[5, 5, 5, 9], [50, 50, 40, 60], [np.nan, 0, 10, 10], [0, 0, 10, 10], [70, 70, 80, 80]]
    )
    kept = boxes.nms(b, np.array([0.9, 0.9, 0.9, 0.5, 0.4]), np.zeros(5), 0.5)
    np.testing.assert_array_equal(kept, [3, 4])


def test_nms_stops_at_max_detections():
    b = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(10)], float)
    kept = boxes.nms(b, np.linspace(0.9, 0.1, 10), np.zeros(10), 0.5, max_detections=3)
    np.testing.assert_array_equal(kept, [0, 1, 2])


def test_filter_detections_keeps_scores_equal_to_the_threshold_and_clips():
    b = np.array([[-10, 5, 50, 500], [0, 0, 10, 10], [300, 300, 400, 400]], float)
    rows = boxes.filter_detections(b, [0.3, 0.2999, 0.8], [1, 2, 3], (100, 200), 0.3, 0.5)
    assert rows.dtype == np.float32
    # the third box lies outside the 200x100 image: clipped to nothing and dropped
    np.testing.assert_allclose(rows, [[0, 5, 50, 100, 0.3, 1]])


# --- weighted box fusion ---------------------------------------------------------


def test_wbf_of_one_box_seen_identically_by_two_models_keeps_it_with_the_mean_score():
    fused = boxes.weighted_box_fusion(
        [np.array([[10, 20, 110, 220, 0.9, 5]]), np.array([[10, 20, 110, 220, 0.7, 5]])], 0.55
    )
    np.testing.assert_allclose(fused, [[10, 20, 110, 220, 0.8, 5]], rtol=1e-6)


def test_wbf_scales_the_score_of_a_box_seen_by_one_of_three_models_by_a_third():
    seen = np.array([[0, 0, 50, 50, 0.9, 0]])
    none = np.zeros((0, 6))
    fused = boxes.weighted_box_fusion([none, seen, none], 0.5)
    np.testing.assert_allclose(fused, [[0, 0, 50, 50, 0.3, 0]], rtol=1e-6)


def test_wbf_box_is_the_score_weighted_mean_of_the_cluster():
    a = np.array([[0, 0, 10, 10, 0.9, 2]])
    b = np.array([[2, 2, 12, 12, 0.3, 2]])  # IoU with a = 64 / 136 = 0.47
    fused = boxes.weighted_box_fusion([a, b], 0.4)
    # x1 = (0.9 * 0 + 0.3 * 2) / 1.2 = 0.5; x2 = (0.9 * 10 + 0.3 * 12) / 1.2 = 10.5
    np.testing.assert_allclose(fused, [[0.5, 0.5, 10.5, 10.5, 0.6, 2]], rtol=1e-6)
    # below the IoU threshold they stay apart, each scaled by 1/2
    apart = boxes.weighted_box_fusion([a, b], 0.5)
    np.testing.assert_allclose(apart[:, 4], [0.45, 0.15], rtol=1e-6)


def test_wbf_joins_a_cluster_only_above_the_iou_threshold():
    a = np.array([[0, 0, 10, 10, 0.8, 0]])
    b = np.array([[0, 0, 10, 20, 0.6, 0]])  # IoU exactly 0.5
    assert len(boxes.weighted_box_fusion([a, b], 0.5)) == 2
    assert len(boxes.weighted_box_fusion([a, b], 0.49)) == 1


def test_wbf_never_fuses_different_classes():
    fused = boxes.weighted_box_fusion(
        [np.array([[0, 0, 10, 10, 0.8, 1]]), np.array([[0, 0, 10, 10, 0.6, 2]])], 0.5
    )
    np.testing.assert_allclose(fused[:, 4:], [[0.4, 1], [0.3, 2]], rtol=1e-6)


def test_wbf_counts_models_not_boxes_when_one_model_gives_two_boxes_to_a_cluster():
    model_a = np.array([[0, 0, 10, 10, 0.9, 0], [0, 0, 10, 14, 0.8, 0]])  # IoU 100/140
    fused = boxes.weighted_box_fusion([model_a, np.zeros((0, 6))], 0.5)
    assert len(fused) == 1
    assert fused[0, 4] == pytest.approx((0.9 + 0.8) / 2 * 1 / 2)


def test_wbf_weights_scale_scores_and_the_normaliser():
    only_first = np.array([[0, 0, 10, 10, 0.6, 0]])
    fused = boxes.weighted_box_fusion([only_first, np.zeros((0, 6))], 0.5, weights=[2, 1])
    assert fused[0, 4] == pytest.approx(0.6 * 2 / 3)


def test_wbf_ignores_inputs_below_the_score_threshold_and_sorts_by_score():
    a = np.array([[0, 0, 10, 10, 0.2, 0], [100, 0, 110, 10, 0.5, 0], [200, 0, 210, 10, 0.9, 1]])
    fused = boxes.weighted_box_fusion([a], 0.5, score_threshold=0.3)
    np.testing.assert_allclose(fused[:, [0, 4]], [[200, 0.9], [100, 0.5]], rtol=1e-6)


def test_wbf_does_not_count_a_model_that_lacks_the_label_against_its_box():
    # Class 7 is known to model a only: its box keeps the full score.
    a = np.array([[0, 0, 10, 10, 0.8, 7]])
    b = np.zeros((0, 6))
    fused = boxes.weighted_box_fusion([a, b], 0.5, known_classes=[{0, 7}, {0}])
    np.testing.assert_allclose(fused, [[0, 0, 10, 10, 0.8, 7]], rtol=1e-6)


def test_wbf_halves_a_box_of_a_label_both_models_know_but_one_missed():
    a = np.array([[0, 0, 10, 10, 0.8, 7]])
    b = np.zeros((0, 6))
    fused = boxes.weighted_box_fusion([a, b], 0.5, known_classes=[{0, 7}, {0, 7}])
    np.testing.assert_allclose(fused, [[0, 0, 10, 10, 0.4, 7]], rtol=1e-6)


def test_wbf_a_model_that_predicted_a_class_counts_as_knowing_it():
    # b's set omits class 7, yet b predicted it: both models count, mean score kept.
    a = np.array([[0, 0, 10, 10, 0.8, 7]])
    b = np.array([[0, 0, 10, 10, 0.6, 7]])
    fused = boxes.weighted_box_fusion([a, b], 0.5, known_classes=[{7}, set()])
    np.testing.assert_allclose(fused, [[0, 0, 10, 10, 0.7, 7]], rtol=1e-6)
    # With a third model that knows 7 but saw nothing: 2 of 3 models, 0.7 * 2 / 3.
    c = np.zeros((0, 6))
    fused = boxes.weighted_box_fusion([a, b, c], 0.5, known_classes=[{7}, set(), {7}])
    assert fused[0, 4] == pytest.approx(0.7 * 2 / 3)


def test_wbf_known_classes_weights_only_the_models_that_know_the_class():
    only_first = np.array([[0, 0, 10, 10, 0.6, 3]])
    none = np.zeros((0, 6))
    fused = boxes.weighted_box_fusion(
        [only_first, none, none], 0.5, weights=[2, 1, 5], known_classes=[{3}, {3}, set()]
    )
    # normaliser: weights of the models knowing class 3 only (2 + 1), not 8
    assert fused[0, 4] == pytest.approx(0.6 * 2 / 3)


def test_wbf_refuses_known_classes_for_a_different_number_of_models():
    with pytest.raises(ValueError, match="2 sets of known classes"):
        boxes.weighted_box_fusion([np.zeros((0, 6))] * 2, 0.5, known_classes=[{0}])


def test_wbf_of_nothing_is_empty():
    assert boxes.weighted_box_fusion([], 0.5).shape == (0, 6)
    assert boxes.weighted_box_fusion([np.zeros((0, 6)), np.zeros((0, 6))], 0.5).shape == (0, 6)


# --- fusion across labels: one box per object --------------------------------------

CAR, TRUCK, BUS = 2, 7, 5  # COCO-80 class ids
NONE = np.zeros((0, 6))


def alternatives_of(alternatives: np.ndarray) -> list[list[tuple[int, float]]]:
    """Each row's alternatives as (class_id, support) pairs, padding left out."""
    return [[(int(c), round(float(s), 6)) for c, s in row if c >= 0] for row in alternatives]


def test_a_car_and_a_truck_on_one_object_make_one_box_with_the_better_supported_label():
    car = np.array([[100, 100, 300, 200, 0.9, CAR]])
    truck = np.array([[130, 100, 330, 200, 0.7, TRUCK]])  # IoU with the car 17000 / 23000
    rows, alternatives = boxes.fuse_across_labels([car, truck], 0.5)
    # x1 = (0.9 * 100 + 0.7 * 130) / 1.6 = 113.125; car (0.9 + 0) / 2, truck 0.7 / 2
    np.testing.assert_allclose(rows, [[113.125, 100, 313.125, 200, 0.45, CAR]], rtol=1e-6)
    assert alternatives.shape == (1, contract.MAX_ALTERNATIVE_LABELS, 2)
    assert alternatives_of(alternatives) == [[(TRUCK, 0.35)]]
    np.testing.assert_array_equal(alternatives[0, 1:], [boxes.NO_ALTERNATIVE] * 3)
    # per label: a box of each, as before
    per_label = boxes.weighted_box_fusion([car, truck], 0.5)
    np.testing.assert_allclose(per_label[:, 4:], [[0.45, CAR], [0.35, TRUCK]], rtol=1e-6)


def test_the_label_several_detectors_agree_on_beats_one_detectors_higher_score():
    # three detectors: two say car (0.5, 0.5), one says truck (0.8)
    a = np.array([[0, 0, 100, 50, 0.5, CAR]])
    b = np.array([[0, 0, 100, 50, 0.5, CAR]])
    c = np.array([[0, 0, 100, 50, 0.8, TRUCK]])
    rows, alternatives = boxes.fuse_across_labels([a, b, c], 0.5)
    np.testing.assert_allclose(rows[:, 4:], [[1.0 / 3, CAR]], rtol=1e-6)
    assert alternatives_of(alternatives) == [[(TRUCK, round(0.8 / 3, 6))]]


def test_boxes_of_different_labels_merge_only_above_the_iou_threshold():
    car = np.array([[0, 0, 10, 10, 0.8, CAR]])
    truck = np.array([[0, 0, 10, 20, 0.6, TRUCK]])  # IoU exactly 0.5
    rows, alternatives = boxes.fuse_across_labels([car, truck], 0.5)
    np.testing.assert_allclose(rows[:, 4:], [[0.4, CAR], [0.3, TRUCK]], rtol=1e-6)
    assert alternatives_of(alternatives) == [[], []]
    rows, alternatives = boxes.fuse_across_labels([car, truck], 0.49)
    np.testing.assert_allclose(rows[:, 4:], [[0.4, CAR]], rtol=1e-6)
    assert alternatives_of(alternatives) == [[(TRUCK, 0.3)]]


def test_inputs_below_the_score_threshold_neither_vote_nor_appear_as_alternatives():
    car = np.array([[0, 0, 100, 50, 0.9, CAR]])
    truck = np.array([[0, 0, 100, 50, 0.2, TRUCK], [0, 0, 100, 50, 0.35, BUS]])
    rows, alternatives = boxes.fuse_across_labels([car, truck], 0.5, score_threshold=0.3)
    np.testing.assert_allclose(rows[:, 4:], [[0.45, CAR]], rtol=1e-6)
    assert alternatives_of(alternatives) == [[(BUS, 0.175)]]


def test_a_detector_that_gives_one_object_two_boxes_of_a_label_votes_once_with_its_best():
    # detector a: two cars on the object (its NMS kept both, IoU 100/140); b: a truck
    a = np.array([[0, 0, 10, 10, 0.9, CAR], [0, 0, 10, 14, 0.8, CAR]])
    b = np.array([[0, 0, 10, 12, 0.6, TRUCK]])
    rows, alternatives = boxes.fuse_across_labels([a, b], 0.5)
    np.testing.assert_allclose(rows[:, 4:], [[0.9 / 2, CAR]], rtol=1e-6)  # not 1.7 / 2
    assert alternatives_of(alternatives) == [[(TRUCK, 0.3)]]


def test_support_counts_only_the_detectors_that_know_the_label():
    # b and c know no trucks: a truck of a's at 0.6 has all the support it can have,
    # the car of b and c at 0.5 each has 1.0 of the 3 detectors that know cars
    a = np.array([[0, 0, 100, 50, 0.6, TRUCK]])
    b = np.array([[0, 0, 100, 50, 0.5, CAR]])
    c = np.array([[0, 0, 100, 50, 0.5, CAR]])
    known = [{CAR, TRUCK}, {CAR}, {CAR}]
    rows, alternatives = boxes.fuse_across_labels([a, b, c], 0.5, known_classes=known)
    np.testing.assert_allclose(rows[:, 4:], [[0.6, TRUCK]], rtol=1e-6)
    assert alternatives_of(alternatives) == [[(CAR, round(1.0 / 3, 6))]]


def test_support_weighs_each_detector_as_fusion_does():
    a = np.array([[0, 0, 100, 50, 0.6, CAR]])
    b = np.array([[0, 0, 100, 50, 0.9, TRUCK]])
    # weights 2 and 1: car 0.6 * 2 / 3 = 0.4, truck 0.9 * 1 / 3 = 0.3
    rows, alternatives = boxes.fuse_across_labels([a, b], 0.5, weights=[2, 1])
    np.testing.assert_allclose(rows[:, 4:], [[0.4, CAR]], rtol=1e-6)
    assert alternatives_of(alternatives) == [[(TRUCK, 0.3)]]


def test_equal_support_goes_to_the_label_of_the_best_box():
    # car (0.5 + 0.25) / 3 and truck 0.75 / 3 (exact in binary): the truck box is the best
    a = np.array([[0, 0, 100, 50, 0.5, CAR], [0, 0, 100, 50, 0.25, BUS]])
    b = np.array([[0, 0, 100, 50, 0.75, TRUCK]])
    c = np.array([[0, 0, 100, 50, 0.25, CAR]])
    rows, alternatives = boxes.fuse_across_labels([a, b, c], 0.5)
    np.testing.assert_allclose(rows[:, 4:], [[0.25, TRUCK]], rtol=1e-6)
    assert alternatives_of(alternatives) == [[(CAR, 0.25), (BUS, round(0.25 / 3, 6))]]


def test_alternatives_are_the_best_supported_ones_first_and_cut_at_their_maximum():
    labels = [CAR, TRUCK, BUS, 8, 9, 10]  # all given by one detector, in falling scores
    a = np.array([[0, 0, 100, 50, 0.9 - 0.1 * i, c] for i, c in enumerate(labels)])
    rows, alternatives = boxes.fuse_across_labels([a], 0.5, max_alternatives=3)
    np.testing.assert_allclose(rows[:, 4:], [[0.9, CAR]], rtol=1e-6)
    assert alternatives_of(alternatives) == [[(TRUCK, 0.8), (BUS, 0.7), (8, 0.6)]]


def test_without_boxes_of_different_labels_overlapping_it_gives_weighted_box_fusions_rows():
    # Objects in a row, each seen by some of three detectors with one box and one label
    # each, a little apart: clusters hold one label, so both fusions agree.
    rng = np.random.default_rng(7)
    sets = [[], [], []]
    for k in range(12):
        label = float(k % 4)
        for model in rng.choice(3, size=int(rng.integers(1, 4)), replace=False):
            jitter = rng.uniform(-3, 3, 4)
            box = np.array([60 * k, 0, 60 * k + 50, 40]) + jitter
            sets[model].append([*box, rng.uniform(0.3, 1.0), label])
    sets = [np.array(s).reshape(-1, 6) for s in sets]
    rows, alternatives = boxes.fuse_across_labels(sets, 0.5)
    np.testing.assert_allclose(rows, boxes.weighted_box_fusion(sets, 0.5), rtol=1e-6)
    assert len(rows) == 12 and alternatives_of(alternatives) == [[]] * 12


def test_fusion_across_labels_of_nothing_is_empty():
    rows, alternatives = boxes.fuse_across_labels([NONE, NONE], 0.5)
    assert rows.shape == (0, 6) and alternatives.shape == (0, contract.MAX_ALTERNATIVE_LABELS, 2)
    rows, alternatives = boxes.fuse_across_labels([], 0.5)
    assert rows.shape == (0, 6) and alternatives.shape == (0, contract.MAX_ALTERNATIVE_LABELS, 2)


def test_fused_rows_come_sorted_by_score_with_their_alternatives():
    far_truck = np.array([[500, 0, 600, 50, 0.95, TRUCK]])
    car_and_bus = np.array([[0, 0, 100, 50, 0.5, CAR], [0, 0, 100, 50, 0.3, BUS]])
    rows, alternatives = boxes.fuse_across_labels([far_truck, car_and_bus], 0.5)
    np.testing.assert_allclose(rows[:, 4:], [[0.475, TRUCK], [0.25, CAR]], rtol=1e-6)
    assert alternatives_of(alternatives) == [[], [(BUS, 0.15)]]


# --- packing ---------------------------------------------------------------------


def test_pack_sorts_by_score_and_zero_pads():
    rows = np.array([[0, 0, 1, 1, 0.2, 4], [0, 0, 2, 2, 0.7, 5]])
    packed, count = boxes.pack_detections(rows)
    assert count == 2
    assert packed.shape == (contract.MAX_DETECTIONS, 6) and packed.dtype == np.float32
    np.testing.assert_allclose(packed[:2], rows[[1, 0]])
    assert not packed[2:].any()


def test_pack_cuts_to_the_highest_scoring_rows():
    scores = np.arange(150) / 150
    rows = np.column_stack([np.zeros((150, 4)), scores, np.zeros(150)])
    packed, count = boxes.pack_detections(rows, max_detections=100)
    assert count == 100
    assert packed[0, 4] == pytest.approx(149 / 150) and packed[-1, 4] == pytest.approx(50 / 150)


def test_pack_of_no_rows_is_all_padding():
    packed, count = boxes.pack_detections(np.zeros((0, 6), np.float32))
    assert count == 0 and packed.shape == (100, 6) and not packed.any()


def test_pack_alternatives_pads_to_the_contracts_rows_and_cuts_like_the_detections():
    alternatives = boxes.no_alternatives(150)
    alternatives[:, 0] = [[TRUCK, 0.25]]
    alternatives[0, 1] = [BUS, 0.125]
    packed = boxes.pack_alternatives(alternatives)
    assert packed.shape == (contract.MAX_DETECTIONS, contract.MAX_ALTERNATIVE_LABELS, 2)
    assert alternatives_of(packed[:1]) == [[(TRUCK, 0.25), (BUS, 0.125)]]
    few = boxes.pack_alternatives(alternatives[:2])
    assert alternatives_of(few[:3]) == [[(TRUCK, 0.25), (BUS, 0.125)], [(TRUCK, 0.25)], []]
    np.testing.assert_array_equal(few[2:], boxes.no_alternatives(contract.MAX_DETECTIONS - 2))
