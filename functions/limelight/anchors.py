"""RetinaFace anchors, box decoding and NMS in plain numpy (no TensorFlow at run time).

Conventions follow Pytorch_Retinaface: anchors are laid out level by level, row-major over the
feature map, `len(min_sizes[level])` anchors per cell; regression offsets are encoded with the
variances (0.1 for centres, 0.2 for log sizes). Everything here works in input pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AnchorConfig:
    """The anchor layout the detector was trained with."""

    min_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    steps: tuple[int, ...] = (8, 16, 32)
    variances: tuple[float, float] = (0.1, 0.2)

    def __post_init__(self):
        if len(self.min_sizes) != len(self.steps) or len({len(m) for m in self.min_sizes}) != 1:
            raise ValueError(
                f"anchor config needs one min_sizes entry per step, all of one length: {self.min_sizes} / {self.steps}"
            )

    @property
    def anchors_per_cell(self) -> int:
        return len(self.min_sizes[0])


DEFAULT_ANCHORS = AnchorConfig()


def prior_boxes(height: int, width: int, config: AnchorConfig = DEFAULT_ANCHORS) -> np.ndarray:
    """Anchors for an input of `height` x `width` pixels as (A, 4) float32 rows (cx, cy, w, h) in pixels."""
    levels = []
    for sizes, step in zip(config.min_sizes, config.steps):
        rows, cols = -(-height // step), -(-width // step)  # ceil, as the reference does
        cy, cx = np.meshgrid((np.arange(rows) + 0.5) * step, (np.arange(cols) + 0.5) * step, indexing="ij")
        cells = np.stack([cx.ravel(), cy.ravel()], axis=1)
        per_size = [np.concatenate([cells, np.full_like(cells, s)], axis=1) for s in sizes]
        # (cells, sizes, 4): anchors of one cell are adjacent, matching the head's reshape order.
        levels.append(np.stack(per_size, axis=1).reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)


def decode_boxes(loc: np.ndarray, priors: np.ndarray, config: AnchorConfig = DEFAULT_ANCHORS) -> np.ndarray:
    """Regression offsets (A, 4) -> boxes (A, 4) as x1, y1, x2, y2 in the priors' pixel frame."""
    v0, v1 = config.variances
    centres = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
    sizes = priors[:, 2:] * np.exp(loc[:, 2:] * v1)
    return np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)


def encode_boxes(boxes: np.ndarray, priors: np.ndarray, config: AnchorConfig = DEFAULT_ANCHORS) -> np.ndarray:
    """Inverse of `decode_boxes`: x1, y1, x2, y2 boxes matched to priors -> regression targets (A, 4)."""
    v0, v1 = config.variances
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sizes = np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-6)
    return np.concatenate(
        [(centres - priors[:, :2]) / (v0 * priors[:, 2:]), np.log(sizes / priors[:, 2:]) / v1], axis=1
    ).astype(np.float32)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of x1, y1, x2, y2 boxes: (N, 4) x (M, 4) -> (N, M)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:4] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:4] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(dets: np.ndarray, iou_threshold: float = 0.4, max_out: int = 750) -> np.ndarray:
    """Greedy non-maximum suppression on (N, 5) rows (x1, y1, x2, y2, score); returns kept rows by score."""
    if len(dets) == 0:
        return dets.reshape(0, 5)
    order = np.argsort(-dets[:, 4], kind="stable")
    x1, y1, x2, y2 = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size and len(keep) < max_out:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return dets[keep]


def postprocess(
    loc: np.ndarray,
    scores: np.ndarray,
    priors: np.ndarray,
    score_threshold: float,
    iou_threshold: float = 0.4,
    config: AnchorConfig = DEFAULT_ANCHORS,
    top_k: int = 5000,
) -> np.ndarray:
    """Face scores (A,) and offsets (A, 4) -> (N, 5) detections after thresholding and NMS, input pixels."""
    candidates = np.flatnonzero(scores > score_threshold)
    if candidates.size == 0:
        return np.zeros((0, 5), np.float32)
    if candidates.size > top_k:
        candidates = candidates[np.argpartition(-scores[candidates], top_k)[:top_k]]
    boxes = decode_boxes(loc[candidates], priors[candidates], config)
    dets = np.concatenate([boxes, scores[candidates, None]], axis=1).astype(np.float32)
    return nms(dets, iou_threshold)
