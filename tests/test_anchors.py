"""Anchors, box coding and NMS: the numpy post-processing shared by model_opt and the runtime."""

import numpy as np
import pytest

from limelight.anchors import AnchorConfig, decode_boxes, encode_boxes, iou_matrix, nms, postprocess, prior_boxes


def test_prior_count_matches_retinaface_for_640_square():
    # GIVEN the RetinaFace layout WHEN priors are laid out for 640x640
    priors = prior_boxes(640, 640)
    # THEN 2 anchors per cell on 80x80, 40x40 and 20x20 maps, as the reference's 16,800
    assert priors.shape == (2 * (80 * 80 + 40 * 40 + 20 * 20), 4)
    np.testing.assert_array_equal(priors[0], [4, 4, 16, 16])
    np.testing.assert_array_equal(priors[1], [4, 4, 32, 32])
    np.testing.assert_array_equal(priors[-1], [624, 624, 512, 512])


def test_priors_follow_non_square_input():
    priors = prior_boxes(384, 640)
    assert len(priors) == 2 * (48 * 80 + 24 * 40 + 12 * 20)
    assert priors[:, 0].max() < 640 and priors[:, 1].max() < 384


def test_encode_then_decode_returns_the_boxes():
    rng = np.random.default_rng(0)
    priors = prior_boxes(128, 128)[:50]
    boxes = np.concatenate([rng.uniform(0, 60, (50, 2)), rng.uniform(70, 128, (50, 2))], axis=1).astype(np.float32)
    np.testing.assert_allclose(decode_boxes(encode_boxes(boxes, priors), priors), boxes, atol=1e-3)


def test_nms_keeps_best_of_overlapping_and_separate_boxes():
    dets = np.array([[0, 0, 10, 10, 0.9], [1, 1, 11, 11, 0.8], [50, 50, 60, 60, 0.7]], np.float32)
    kept = nms(dets, 0.4)
    np.testing.assert_array_equal(kept[:, 4], np.float32([0.9, 0.7]))


def test_nms_of_nothing_is_empty_5_columns():
    assert nms(np.zeros((0, 5), np.float32)).shape == (0, 5)


def test_postprocess_thresholds_and_decodes_in_pixels():
    priors = prior_boxes(64, 64)
    loc = np.zeros((len(priors), 4), np.float32)
    scores = np.zeros(len(priors), np.float32)
    scores[3] = 0.9  # anchor 3: cell (0, 1) of the stride-8 map, size 32
    dets = postprocess(loc, scores, priors, 0.5)
    np.testing.assert_allclose(dets, [[12 - 16, 4 - 16, 12 + 16, 4 + 16, 0.9]])
    assert postprocess(loc, scores, priors, 0.95).shape == (0, 5)


def test_iou_of_identical_and_disjoint_boxes():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 0, 15, 10]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 0.0, 1 / 3]], rtol=1e-6)


def test_anchor_config_counts_anchors_per_cell():
    assert AnchorConfig().anchors_per_cell == 2
    with pytest.raises(ValueError):
        prior_boxes(64, 64, AnchorConfig(min_sizes=((16,), (32,)), steps=(8, 16, 32)))
