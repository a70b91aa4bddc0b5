"""Behaviour of the WIDER FACE evaluator (model_opt/widerface_eval.py).

Real-data tests read the shared data folder (``$LIMELIGHT_DATA``, default ``<repo>/../shared/data``)
and skip when it is absent; the synthetic tests always run.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from model_opt.widerface_eval import (
    SETTINGS,
    GroundTruthFormatError,
    InvalidPredictionError,
    UnknownImageError,
    WiderEvalError,
    WiderGroundTruth,
    evaluate,
    list_images,
    load_ground_truth,
)

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("LIMELIGHT_DATA", REPO.parent / "shared" / "data"))
WIDER = DATA / "widerface"


# ---------------------------------------------------------------- helpers and fixtures


def synthetic_gt(images: dict[str, tuple[list[list[float]], list[int]]]) -> WiderGroundTruth:
    """Ground truth with the same kept faces in every setting: key -> (x1y1x2y2 boxes, kept indices)."""
    boxes = {key: np.array(b, dtype=float).reshape(-1, 4) for key, (b, _) in images.items()}
    keep = {s: {key: np.array(k, dtype=int) for key, (_, k) in images.items()} for s in SETTINGS}
    return WiderGroundTruth(boxes=boxes, keep=keep)


def preds(*rows: list[float]) -> np.ndarray:
    return np.array(rows, dtype=float).reshape(-1, 5)


def with_score(boxes: np.ndarray, scores: np.ndarray | float) -> np.ndarray:
    return np.column_stack([boxes, np.broadcast_to(scores, (len(boxes),))])


@pytest.fixture(scope="module")
def real_gt() -> WiderGroundTruth:
    gt_dir = WIDER / "ground_truth"
    if not (gt_dir / "wider_face_val.mat").is_file():
        pytest.skip(f"WIDER FACE ground truth not found under {gt_dir} (set LIMELIGHT_DATA)")
    return load_ground_truth(gt_dir)


@pytest.fixture(scope="module")
def val_keys(real_gt: WiderGroundTruth) -> list[str]:
    val_dir = WIDER / "val"
    if not val_dir.is_dir():
        pytest.skip(f"WIDER FACE val images not found under {val_dir} (set LIMELIGHT_DATA)")
    return [key for key, _ in list_images(val_dir, real_gt)]


def all_gt_boxes_as_predictions(gt: WiderGroundTruth, keys: list[str], scores=1.0) -> dict[str, np.ndarray]:
    return {key: with_score(gt.boxes[key], scores) for key in keys}


# ---------------------------------------------------------------- real data


def test_local_val_images_are_listed_with_keys_of_the_ground_truth(real_gt, val_keys):
    # GIVEN the 315 local val images and their documented list
    listed = (WIDER / "val" / "dev_image_list.txt").read_text().split()
    # WHEN they are listed against the ground truth
    images = list_images(WIDER / "val", real_gt)
    # THEN every local image is found, sorted, keyed "<event>/<stem>", pointing at an existing file
    assert [key for key, _ in images] == sorted(name.removesuffix(".jpg") for name in listed)
    assert len(images) == 315
    assert all(path.is_file() and path.stem == key.split("/")[1] for key, path in images)


def test_ground_truth_keep_lists_are_zero_based_and_nested(real_gt, val_keys):
    # GIVEN the official keep lists, which are 1-based in the .mat files
    # WHEN they are loaded
    # THEN they are 0-based indices, easy is within medium within hard, and the face counts of the
    # local subset are the known ones (a changed data folder would show up here first)
    for key in val_keys:
        easy, medium, hard = (set(real_gt.keep[s][key].tolist()) for s in SETTINGS)
        assert easy <= medium <= hard
        assert all(0 <= i < len(real_gt.boxes[key]) for i in hard)
    assert sum(len(real_gt.boxes[k]) for k in val_keys) == 4978
    assert {s: sum(len(real_gt.keep[s][k]) for k in val_keys) for s in SETTINGS} == {
        "easy": 689,
        "medium": 1407,
        "hard": 3938,
    }


@pytest.mark.parametrize("score_kind", ["all_equal", "varied"])
def test_every_ground_truth_box_as_prediction_scores_ap_one(real_gt, val_keys, score_kind):
    # GIVEN every gt box of the 315 images, ignored ones included, as a prediction. With all
    # scores 1.0 the official code divides 0 by 0 when normalising (NaN scores, AP 0); this
    # evaluator ties them at the top instead. Either way the expected AP is exactly 1.0: each kept
    # face is recalled by its own box (IoU 1; the subset has no duplicate boxes), each ignored-face
    # box is dropped from the proposals, so precision and recall are 1 at every threshold.
    rng = np.random.default_rng(0)
    predictions = {
        key: with_score(
            boxes, 1.0 if score_kind == "all_equal" else rng.uniform(0.1, 0.9, len(boxes))
        )
        for key, boxes in ((k, real_gt.boxes[k]) for k in val_keys)
    }
    # WHEN evaluated
    aps = evaluate(predictions, real_gt)
    # THEN AP is 1 in every setting
    assert aps == {s: pytest.approx(1.0, abs=1e-12) for s in SETTINGS}


def test_boxes_shifted_by_half_their_width_score_strictly_lower_ap(real_gt, val_keys):
    # GIVEN every gt box moved right by half its width (IoU ~1/3 with its face for all but tiny boxes)
    perfect = all_gt_boxes_as_predictions(real_gt, val_keys)
    shifted = {}
    for key, p in perfect.items():
        q = p.copy()
        half_w = (q[:, 2] - q[:, 0]) / 2
        q[:, 0] += half_w
        q[:, 2] += half_w
        shifted[key] = q
    # WHEN both sets are evaluated
    perfect_aps, shifted_aps = evaluate(perfect, real_gt), evaluate(shifted, real_gt)
    # THEN the shifted set is strictly worse in every setting (observed: AP ~1e-6 to 1e-5)
    for setting in SETTINGS:
        assert 0.0 <= shifted_aps[setting] < perfect_aps[setting]
        assert shifted_aps[setting] < 0.05


def test_no_detections_score_ap_zero(real_gt, val_keys):
    # GIVEN an empty prediction array for every local image
    predictions = {key: np.zeros((0, 5)) for key in val_keys}
    # WHEN evaluated
    # THEN nothing is recalled: AP 0 in every setting
    assert evaluate(predictions, real_gt) == {"easy": 0.0, "medium": 0.0, "hard": 0.0}


def test_only_images_passed_in_count_on_real_data(real_gt, val_keys):
    # GIVEN perfect predictions for 20 of the 3226 val images only
    predictions = all_gt_boxes_as_predictions(real_gt, val_keys[:20])
    # WHEN evaluated
    # THEN the faces of the other images are not missed detections: AP is still 1
    assert all(ap == pytest.approx(1.0) for ap in evaluate(predictions, real_gt).values())


# ---------------------------------------------------------------- synthetic ground truth


def test_predictions_on_ignored_faces_are_not_false_positives():
    # GIVEN one image with a kept face A and an ignored face B
    gt = synthetic_gt({"e/img": ([[0, 0, 50, 50], [100, 0, 150, 50]], [0])})
    # WHEN the highest-scored prediction hits B, and in a control the same score hits nothing
    on_ignored = evaluate({"e/img": preds([100, 0, 150, 50, 0.9], [0, 0, 50, 50, 0.5])}, gt)
    on_background = evaluate({"e/img": preds([300, 300, 350, 350, 0.9], [0, 0, 50, 50, 0.5])}, gt)
    # THEN the hit on B costs no precision (AP 1), while the miss is a false positive: A is only
    # recalled at precision 1/2, so AP = 1 * 1/2
    assert on_ignored == {s: pytest.approx(1.0) for s in SETTINGS}
    assert on_background == {s: pytest.approx(0.5) for s in SETTINGS}


def test_predictions_of_only_ignored_faces_score_zero_without_any_proposal():
    # GIVEN an image whose only kept face is missed and whose ignored face is hit
    gt = synthetic_gt({"e/img": ([[0, 0, 50, 50], [100, 0, 150, 50]], [0])})
    # WHEN evaluated
    aps = evaluate({"e/img": preds([100, 0, 150, 50, 0.9])}, gt)
    # THEN AP is 0 (nothing recalled), and no NaN arises from the zero proposals
    assert aps == {s: 0.0 for s in SETTINGS}


@pytest.mark.parametrize(
    "second_prediction",
    [[300, 300, 350, 350], [1, 1, 51, 51]],
    ids=["false_positive_on_background", "duplicate_of_an_already_recalled_face"],
)
def test_ap_matches_a_hand_computed_precision_recall_curve(second_prediction):
    # GIVEN two kept faces A, B; predictions A (0.9), a wrong box (0.8), B (0.5). A duplicate box
    # on A counts like any false positive: a face is recalled once.
    gt = synthetic_gt({"e/img": ([[0, 0, 50, 50], [100, 0, 150, 50]], [0, 1])})
    predictions = {"e/img": preds([0, 0, 50, 50, 0.9], [*second_prediction, 0.8], [100, 0, 150, 50, 0.5])}
    # WHEN evaluated (normalised scores 1, 0.75, 0; B only enters at the last threshold t = 0)
    aps = evaluate(predictions, gt)
    # THEN the curve is (R 1/2, P 1), (R 1/2, P 1/2), (R 1, P 2/3): AP = 1/2 * 1 + 1/2 * 2/3
    assert aps == {s: pytest.approx(5 / 6) for s in SETTINGS}


def test_only_images_passed_in_count():
    # GIVEN two images with one kept face each
    gt = synthetic_gt({"e/a": ([[0, 0, 50, 50]], [0]), "e/b": ([[0, 0, 50, 50]], [0])})
    hit_a = preds([0, 0, 50, 50, 0.9])
    # WHEN only image a is passed, versus a passed with an empty result for b
    only_a = evaluate({"e/a": hit_a}, gt)
    a_and_empty_b = evaluate({"e/a": hit_a, "e/b": np.zeros((0, 5))}, gt)
    # THEN b's face counts only when b is passed
    assert only_a == {s: pytest.approx(1.0) for s in SETTINGS}
    assert a_and_empty_b == {s: pytest.approx(0.5) for s in SETTINGS}


def test_predictions_on_an_image_without_ground_truth_boxes_are_not_counted():
    # GIVEN an image without any gt box next to a perfectly predicted one (official behaviour:
    # such an image is skipped, its predictions are not false positives)
    gt = synthetic_gt({"e/a": ([[0, 0, 50, 50]], [0]), "e/empty": ([], [])})
    predictions = {"e/a": preds([0, 0, 50, 50, 0.5]), "e/empty": preds([0, 0, 50, 50, 0.9])}
    # WHEN evaluated
    # THEN AP is 1
    assert evaluate(predictions, gt) == {s: pytest.approx(1.0) for s in SETTINGS}


@pytest.mark.parametrize(("y2", "expected_ap"), [(1.0, 1.0), (0.9, 0.0)])
def test_iou_uses_inclusive_pixel_areas(y2, expected_ap):
    # GIVEN a 3x3 annotation (x, y, w, h = 0, 0, 3, 3 -> x2 = y2 = 3, covering 4x4 = 16 pixels)
    gt = synthetic_gt({"e/img": ([[0, 0, 3, 3]], [0])})
    # WHEN the prediction spans y 0..1 (4x2 = 8 pixels: IoU 0.5; exclusive areas would give 1/3)
    # or y 0..0.9 (4x1.9 pixels: IoU 0.475)
    aps = evaluate({"e/img": preds([0, 0, 3, y2, 1.0])}, gt)
    # THEN only the first reaches the 0.5 IoU threshold
    assert aps == {s: expected_ap for s in SETTINGS}


def test_setting_without_kept_faces_has_undefined_ap():
    # GIVEN an image whose faces are kept only in "hard"
    gt = WiderGroundTruth(
        boxes={"e/img": np.array([[0.0, 0, 50, 50]])},
        keep={"easy": {"e/img": []}, "medium": {"e/img": []}, "hard": {"e/img": [0]}},
    )
    # WHEN evaluated
    aps = evaluate({"e/img": preds([0, 0, 50, 50, 0.9])}, gt)
    # THEN easy and medium are NaN (no face to recall), hard is 1
    assert np.isnan(aps["easy"]) and np.isnan(aps["medium"]) and aps["hard"] == pytest.approx(1.0)


def test_evaluate_leaves_the_callers_arrays_unchanged():
    # GIVEN predictions with scores that normalisation would rewrite
    gt = synthetic_gt({"e/img": ([[0, 0, 50, 50], [100, 0, 150, 50]], [0, 1])})
    p = preds([100, 0, 150, 50, 0.3], [0, 0, 50, 50, 0.7])
    before = p.copy()
    # WHEN evaluated
    evaluate({"e/img": p}, gt)
    # THEN the array is untouched
    np.testing.assert_array_equal(p, before)


@pytest.mark.parametrize(
    ("predictions", "error"),
    [
        ({"e/img": np.zeros((3, 4))}, InvalidPredictionError),
        ({"e/img": preds([0, 0, 50, np.nan, 0.5])}, InvalidPredictionError),
        ({"e/img": preds([50, 0, 0, 50, 0.5])}, InvalidPredictionError),
        ({"e/img.jpg": preds([0, 0, 50, 50, 0.5])}, UnknownImageError),
        ({}, WiderEvalError),
    ],
    ids=["four_columns", "nan", "inverted_box", "key_with_extension", "no_image"],
)
def test_bad_predictions_raise_specific_value_errors(predictions, error):
    # GIVEN a valid ground truth and malformed predictions
    gt = synthetic_gt({"e/img": ([[0, 0, 50, 50]], [0])})
    # WHEN evaluated
    # THEN a specific error, usable as a ValueError, is raised
    with pytest.raises(error):
        evaluate(predictions, gt)
    assert issubclass(error, ValueError)


@pytest.mark.parametrize(
    "keep",
    [
        {"easy": {"e/img": [0]}, "medium": {"e/img": [0]}},
        {s: {"e/img": [1]} for s in SETTINGS},
        {s: {"other/img": [0]} for s in SETTINGS},
    ],
    ids=["missing_setting", "index_out_of_range", "unknown_image"],
)
def test_inconsistent_ground_truth_is_rejected_on_construction(keep):
    # GIVEN keep lists that do not fit the boxes
    # WHEN the ground truth is constructed
    # THEN it is rejected
    with pytest.raises(GroundTruthFormatError):
        WiderGroundTruth(boxes={"e/img": np.array([[0.0, 0, 50, 50]])}, keep=keep)
