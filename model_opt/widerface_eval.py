"""WIDER FACE validation AP (easy / medium / hard), following the official protocol.

This is an independent implementation of the algorithm of the widely used Python evaluator
(``widerface_evaluate/evaluation.py`` in Pytorch_Retinaface, from WiderFace-Evaluation), with one
intended difference: only the images the caller passes predictions for are evaluated, so that a
local subset of the validation set (here 315 images of 3 events) can be scored. Numbers on a
subset are not comparable with published full-val figures, only with each other.

Protocol, as in the official code:

* Ground truth comes from ``wider_face_val.mat`` (x, y, w, h per face) and the keep lists
  ``gt_list`` of ``wider_{easy,medium,hard}_val.mat`` (1-based indices of the faces that count in
  that setting). Every other face of the image is *ignored*: a prediction whose best match is an
  ignored face is neither a true nor a false positive.
* Boxes use the inclusive-pixel convention of the official ``bbox_overlaps``: a box
  ``(x1, y1, x2, y2)`` covers ``(x2 - x1 + 1) * (y2 - y1 + 1)`` pixels. A ground-truth box becomes
  ``(x, y, x + w, y + h)``, exactly as the official code converts it. The official code converts
  predictions the same way from the ``x, y, w, h`` it reads from text files, so a prediction's
  ``x2, y2`` here plays the role of the official ``x + w, y + h`` and is used unchanged.
* Scores are normalised over all predictions passed: ``(s - lo) / (hi - lo)`` with
  ``lo = min(1, min score)`` and ``hi = max(0, max score)`` (the official running min/max starts at
  1 and 0; for scores in [0, 1] this is the plain min/max).
* Per image, predictions in descending score order each take the ground-truth face of highest IoU;
  at IoU >= the threshold that face is recalled if kept (once; later predictions on the same face
  still count as proposals, i.e. false positives) or, if ignored, the prediction is dropped from
  the proposals. Images without any ground-truth box, or without predictions, contribute nothing
  but their kept faces to the recall denominator.
* For 1000 score thresholds ``t = 1 - (i + 1) / 1000`` the proposals with score >= t and the faces
  they recall are summed over images; precision = recalled / proposals, recall = recalled / kept
  faces of the evaluated images, and AP is the all-point interpolated (VOC 2010+) area.

Deviation kept on purpose: when all normalised scores would be 0 / 0 (every prediction has the
same score, e.g. 1.0), the official code produces NaN scores and therefore AP 0; here all
predictions are tied at the top and get the normalised score 1.0, which is the only operating
point such a prediction set has.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import scipy.io

SETTINGS: tuple[str, ...] = ("easy", "medium", "hard")
THRESH_NUM = 1000
"""Number of score thresholds of the precision/recall curve (official value)."""

_GT_FILES = {
    "all": "wider_face_val.mat",
    "easy": "wider_easy_val.mat",
    "medium": "wider_medium_val.mat",
    "hard": "wider_hard_val.mat",
}


class WiderEvalError(ValueError):
    """Base class of the input errors of this module."""


class GroundTruthFormatError(WiderEvalError):
    """Ground-truth files or a directly constructed ground truth are malformed or inconsistent."""


class InvalidPredictionError(WiderEvalError):
    """A prediction array has the wrong shape, non-finite values or an inverted box."""


class UnknownImageError(WiderEvalError):
    """A prediction names an image the ground truth does not know."""


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class WiderGroundTruth:
    """WIDER FACE ground truth of a set of images, keyed by ``"<event>/<file stem>"``.

    ``boxes[key]`` is an (N, 4) array of face boxes ``x1, y1, x2, y2`` in the inclusive-pixel
    convention (``x2 = x + w`` of the annotation; coordinates finite, inverted boxes tolerated as in
    the official data). ``keep[setting][key]`` holds the 0-based indices
    into ``boxes[key]`` of the faces that count in ``setting`` (each of ``SETTINGS``); all other
    faces are ignored in that setting. Every setting must list exactly the images of ``boxes``.

    Can be constructed directly (e.g. for synthetic tests); the constructor validates the contract,
    stores read-only float64 / int64 copies and raises `GroundTruthFormatError` otherwise.
    """

    boxes: Mapping[str, np.ndarray]
    keep: Mapping[str, Mapping[str, np.ndarray]]

    def __post_init__(self) -> None:
        boxes: dict[str, np.ndarray] = {}
        for key, value in self.boxes.items():
            arr = np.array(value, dtype=np.float64)
            if arr.size == 0:
                arr = arr.reshape(0, 4)
            if arr.ndim != 2 or arr.shape[1] != 4:
                raise GroundTruthFormatError(f"boxes[{key!r}] must have shape (N, 4), got {arr.shape}")
            # Inverted boxes are allowed: the official annotations contain one (w = -2 in
            # 39_Ice_Skating_iceskiing_39_583, kept in "hard"); it can never be matched.
            if not np.all(np.isfinite(arr)):
                raise GroundTruthFormatError(f"boxes[{key!r}] has non-finite coordinates")
            boxes[key] = _readonly(arr)
        if set(self.keep) != set(SETTINGS):
            raise GroundTruthFormatError(
                f"keep must have exactly the settings {SETTINGS}, got {sorted(self.keep)}"
            )
        keep: dict[str, Mapping[str, np.ndarray]] = {}
        for setting in SETTINGS:
            per_image = self.keep[setting]
            if set(per_image) != set(boxes):
                raise GroundTruthFormatError(f"keep[{setting!r}] must list exactly the images of boxes")
            checked: dict[str, np.ndarray] = {}
            for key, value in per_image.items():
                idx = np.asarray(value).reshape(-1)
                if idx.size and not np.issubdtype(idx.dtype, np.integer):
                    raise GroundTruthFormatError(f"keep[{setting!r}][{key!r}] must hold integer indices")
                idx = idx.astype(np.int64)
                n = len(boxes[key])
                if np.any(idx < 0) or np.any(idx >= n) or len(np.unique(idx)) != len(idx):
                    raise GroundTruthFormatError(
                        f"keep[{setting!r}][{key!r}] must hold distinct indices in [0, {n}), "
                        f"got {idx.tolist()}"
                    )
                checked[key] = _readonly(idx)
            keep[setting] = MappingProxyType(checked)
        object.__setattr__(self, "boxes", MappingProxyType(boxes))
        object.__setattr__(self, "keep", MappingProxyType(keep))


def _mat_str(cell: np.ndarray) -> str:
    # loadmat wraps every MATLAB string in nested object / unicode arrays.
    return str(np.asarray(cell).reshape(-1)[0])


def load_ground_truth(gt_dir: str | Path) -> WiderGroundTruth:
    """Load the official WIDER FACE val ground truth from ``gt_dir``.

    ``gt_dir`` must hold ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat``. Returns
    the ground truth of all 3226 val images (keep indices converted to 0-based). Raises
    `FileNotFoundError` for a missing file and `GroundTruthFormatError` when the files disagree
    about events or images.
    """
    gt_dir = Path(gt_dir)
    fields = ["event_list", "file_list", "face_bbx_list", "gt_list"]
    mats = {}
    for name, filename in _GT_FILES.items():
        path = gt_dir / filename
        if not path.is_file():
            raise FileNotFoundError(f"WIDER FACE ground-truth file not found: {path}")
        mats[name] = scipy.io.loadmat(path, variable_names=fields)

    main = mats["all"]
    boxes: dict[str, np.ndarray] = {}
    keep: dict[str, dict[str, np.ndarray]] = {s: {} for s in SETTINGS}
    n_events = len(main["event_list"])
    for setting in SETTINGS:
        if len(mats[setting]["event_list"]) != n_events:
            raise GroundTruthFormatError(f"{_GT_FILES[setting]} lists a different number of events")
    for e in range(n_events):
        event = _mat_str(main["event_list"][e][0])
        files = main["file_list"][e][0]
        face_boxes = main["face_bbx_list"][e][0]
        for setting in SETTINGS:
            other = mats[setting]
            if _mat_str(other["event_list"][e][0]) != event or len(other["gt_list"][e][0]) != len(files):
                raise GroundTruthFormatError(
                    f"{_GT_FILES[setting]} disagrees with wider_face_val.mat on {event}"
                )
        for j in range(len(files)):
            key = f"{event}/{_mat_str(files[j][0])}"
            xywh = np.asarray(face_boxes[j][0], dtype=np.float64).reshape(-1, 4)
            boxes[key] = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            for setting in SETTINGS:
                other = mats[setting]
                if _mat_str(other["file_list"][e][0][j][0]) != _mat_str(files[j][0]):
                    raise GroundTruthFormatError(f"{_GT_FILES[setting]} disagrees on the images of {event}")
                # Keep lists are stored as uint8 or uint16 depending on the image's face count:
                # widen before the 1-based -> 0-based shift.
                keep[setting][key] = np.asarray(other["gt_list"][e][0][j][0], dtype=np.int64).reshape(-1) - 1
    return WiderGroundTruth(boxes=boxes, keep=keep)


def list_images(val_dir: str | Path, gt: WiderGroundTruth) -> list[tuple[str, Path]]:
    """List the val images present on disk that ``gt`` knows, as sorted ``(key, path)`` pairs.

    ``val_dir`` is the folder holding the ``<event>/`` folders of ``*.jpg`` images, or one of its
    ancestors in the official layout (``.../val`` or ``.../WIDER_val``, which contain
    ``WIDER_val/images`` resp. ``images``). Images the ground truth does not know are skipped.
    Raises `FileNotFoundError` when the folder does not exist.
    """
    root = Path(val_dir)
    for candidate in (root / "WIDER_val" / "images", root / "images"):
        if candidate.is_dir():
            root = candidate
            break
    if not root.is_dir():
        raise FileNotFoundError(f"WIDER FACE val image folder not found: {val_dir}")
    found = []
    for path in root.glob("*/*.jpg"):
        key = f"{path.parent.name}/{path.stem}"
        if key in gt.boxes:
            found.append((key, path))
    return sorted(found)


def _iou_inclusive(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(P, G) IoU of x1,y1,x2,y2 boxes with the +1 inclusive-pixel areas of the official code."""
    iw = np.minimum(pred[:, None, 2], gt[None, :, 2]) - np.maximum(pred[:, None, 0], gt[None, :, 0]) + 1
    ih = np.minimum(pred[:, None, 3], gt[None, :, 3]) - np.maximum(pred[:, None, 1], gt[None, :, 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_p = (pred[:, 2] - pred[:, 0] + 1) * (pred[:, 3] - pred[:, 1] + 1)
    area_g = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
    union = area_p[:, None] + area_g[None, :] - inter
    # inter > 0 implies union > 0; elsewhere (e.g. an inverted ground-truth box, whose +1 area
    # can be <= 0) the official code leaves the overlap at 0.
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def _check_prediction(key: str, value: np.ndarray) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 5))
    if arr.ndim != 2 or arr.shape[1] != 5:
        raise InvalidPredictionError(f"predictions[{key!r}] must have shape (N, 5), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidPredictionError(f"predictions[{key!r}] has non-finite values")
    if np.any(arr[:, 2:4] < arr[:, 0:2]):
        raise InvalidPredictionError(f"predictions[{key!r}] has boxes with x2 < x1 or y2 < y1")
    return arr


def _normalise_scores(preds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Official dataset-wide min/max score normalisation (see the module docstring)."""
    nonempty = [p[:, 4] for p in preds.values() if len(p)]
    if not nonempty:
        return preds
    all_scores = np.concatenate(nonempty)
    lo = min(1.0, float(all_scores.min()))
    hi = max(0.0, float(all_scores.max()))
    out = {}
    for key, p in preds.items():
        q = p.copy()
        if len(q):
            q[:, 4] = (q[:, 4] - lo) / (hi - lo) if hi > lo else 1.0
        out[key] = q
    return out


def _voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP with sentinels (0, 0) and (1, 0) and a monotone envelope."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def evaluate(
    predictions: Mapping[str, np.ndarray],
    gt: WiderGroundTruth,
    iou_thresh: float = 0.5,
) -> dict[str, float]:
    """AP per setting of ``predictions`` over exactly the images they name.

    ``predictions[key]`` is an (N, 5) array ``x1, y1, x2, y2, score`` in original image pixels for
    the image ``key`` (``"<event>/<file stem>"``) of ``gt``; an empty array (e.g. shape (0, 5))
    means "evaluated, nothing detected". Images of ``gt`` not in ``predictions`` are skipped
    entirely: their faces do not count. Inputs are not modified.

    Returns ``{"easy": AP, "medium": AP, "hard": AP}`` in [0, 1]; a setting whose evaluated images
    hold no kept face has no defined AP and yields NaN. Raises `UnknownImageError` for a key not in
    ``gt``, `InvalidPredictionError` for a malformed array and `WiderEvalError` for an empty
    ``predictions`` mapping or an ``iou_thresh`` outside (0, 1].
    """
    if not predictions:
        raise WiderEvalError("predictions is empty: there is no image to evaluate")
    if not 0.0 < iou_thresh <= 1.0:
        raise WiderEvalError(f"iou_thresh must be in (0, 1], got {iou_thresh}")
    unknown = [key for key in predictions if key not in gt.boxes]
    if unknown:
        raise UnknownImageError(
            f"{len(unknown)} prediction key(s) not in the ground truth, e.g. {unknown[0]!r} "
            "(keys are '<event>/<file stem>')"
        )
    preds = _normalise_scores({key: _check_prediction(key, value) for key, value in predictions.items()})

    thresholds = 1.0 - (np.arange(THRESH_NUM) + 1) / THRESH_NUM
    # Per image, the matching geometry is the same for every setting: compute it once.
    matched_images = []  # (key, best gt index per prediction or -1, #predictions with score >= t)
    for key in sorted(preds):
        pred, gt_boxes = preds[key], gt.boxes[key]
        if len(pred) == 0 or len(gt_boxes) == 0:
            # Official behaviour: such an image adds no proposal, not even a false positive.
            continue
        order = np.argsort(-pred[:, 4], kind="stable")
        pred = pred[order]
        iou = _iou_inclusive(pred[:, :4], gt_boxes)
        best = np.argmax(iou, axis=1)
        best = np.where(iou[np.arange(len(pred)), best] >= iou_thresh, best, -1)
        # Scores sorted descending: the predictions with score >= t are a prefix of this length.
        n_above = np.searchsorted(-pred[:, 4], -thresholds, side="right")
        matched_images.append((key, best, n_above))

    aps: dict[str, float] = {}
    for setting in SETTINGS:
        n_faces = sum(len(gt.keep[setting][key]) for key in preds)
        proposals = np.zeros(THRESH_NUM)
        recalled = np.zeros(THRESH_NUM)
        for key, best, n_above in matched_images:
            is_kept = np.zeros(len(gt.boxes[key]) + 1, dtype=bool)  # last slot: "no match" (-1)
            is_kept[gt.keep[setting][key]] = True
            hit = best >= 0
            hits_kept = hit & is_kept[best]
            is_proposal = ~(hit & ~is_kept[best])  # a hit on an ignored face is no proposal
            first_hit = np.zeros(len(best), dtype=np.int64)
            # A kept face counts once, at the first (highest-scored) prediction matching it.
            _, first = np.unique(best[hits_kept], return_index=True)
            first_hit[np.flatnonzero(hits_kept)[first]] = 1
            cum_recalled = np.concatenate(([0], np.cumsum(first_hit)))
            cum_proposals = np.concatenate(([0], np.cumsum(is_proposal)))
            proposals += cum_proposals[n_above]
            recalled += cum_recalled[n_above]
        if n_faces == 0:
            aps[setting] = float("nan")
            continue
        # Zero proposals at a threshold implies zero recall there, so its precision never enters
        # the AP sum; 0 avoids the official 0/0 NaN without changing the result.
        precision = np.divide(recalled, proposals, out=np.zeros(THRESH_NUM), where=proposals > 0)
        aps[setting] = _voc_ap(recalled / n_faces, precision)
    return aps
