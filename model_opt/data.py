"""WIDER FACE training data: official-format ground truth, RetinaFace augmentation, anchor targets.

Augmentation follows the RetinaFace recipe (Pytorch_Retinaface `data_augment.py`): a random square
crop of 0.3-1.0 of the short side that keeps faces whose centres fall inside, photometric
distortion, horizontal flip, resize to the training size with a random interpolation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from limelight.anchors import AnchorConfig, encode_boxes, iou_matrix, prior_boxes

CROP_SCALES = (0.3, 0.45, 0.6, 0.8, 1.0)
POSITIVE_IOU = 0.35  # RetinaFace's matching threshold
MIN_BEST_PRIOR_IOU = 0.2  # a face no anchor overlaps this much is not forced onto one


class GroundTruthFormatError(ValueError):
    """The ground-truth file does not follow the official WIDER FACE bbx format."""


@dataclass(frozen=True)
class Sample:
    path: Path
    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2 in image pixels


def read_bbx_gt(gt_file: str | Path, images_dir: str | Path) -> list[Sample]:
    """Parse `wider_face_*_bbx_gt.txt` (name, count, then `x y w h blur expr illum invalid occl pose`
    per face). Invalid or empty boxes are dropped; images missing on disk are skipped."""
    lines = Path(gt_file).read_text().split("\n")
    images_dir = Path(images_dir)
    samples, i = [], 0
    while i < len(lines) and lines[i].strip():
        name = lines[i].strip()
        try:
            count = int(lines[i + 1])
        except (IndexError, ValueError):
            raise GroundTruthFormatError(f"{gt_file}:{i + 2}: expected a face count after {name}") from None
        rows = [list(map(float, l.split()[:8])) for l in lines[i + 2 : i + 2 + max(count, 1)]]
        i += 2 + max(count, 1)  # an image with 0 faces still has one dummy row
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, *_, invalid in rows[:count] if w > 0 and h > 0 and not invalid],
                         np.float32).reshape(-1, 4)
        if (images_dir / name).exists():
            samples.append(Sample(images_dir / name, boxes))
    return samples


def _random_crop(rng, image, boxes):
    h, w = image.shape[:2]
    for _ in range(250):
        side = int(rng.choice(CROP_SCALES) * min(h, w))
        x0 = int(rng.integers(0, w - side + 1))
        y0 = int(rng.integers(0, h - side + 1))
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = np.all((centres >= (x0, y0)) & (centres < (x0 + side, y0 + side)), axis=1)
        if not inside.any():
            continue
        kept = boxes[inside].copy()
        kept[:, 0::2] = np.clip(kept[:, 0::2] - x0, 0, side)
        kept[:, 1::2] = np.clip(kept[:, 1::2] - y0, 0, side)
        return image[y0 : y0 + side, x0 : x0 + side], kept
    # No crop kept a face: pad to a square instead, as the reference does.
    side = max(h, w)
    out = np.zeros((side, side, 3), image.dtype)
    out[:] = image.reshape(-1, 3).mean(0)
    out[:h, :w] = image
    return out, boxes.copy()


def _distort(rng, image):
    img = image.astype(np.float32)
    if rng.random() < 0.5:
        img += rng.uniform(-32, 32)
    if rng.random() < 0.5:
        img *= rng.uniform(0.5, 1.5)
    if rng.random() < 0.5:
        hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 1] *= rng.uniform(0.5, 1.5)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-9, 9)) % 180
        img = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    # Back to uint8, what a decoder hands the detector: the resize that follows then saturates at 0..255
    # (cubic and Lanczos overshoot on float input, which stretched the int8 model's learnt input range).
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


_INTERPOLATIONS = (cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA, cv2.INTER_NEAREST, cv2.INTER_LANCZOS4)


def augment(rng: np.random.Generator, image: np.ndarray, boxes: np.ndarray, size: int):
    """RGB uint8 image + boxes -> (size x size float32 RGB, whole values 0..255, boxes in that frame)."""
    image, boxes = _random_crop(rng, image, boxes)
    image = _distort(rng, image)
    if rng.random() < 0.5:
        image = image[:, ::-1]
        boxes = boxes.copy()
        boxes[:, [0, 2]] = image.shape[1] - boxes[:, [2, 0]]
    scale = size / image.shape[0]
    image = cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=_INTERPOLATIONS[rng.integers(5)])
    boxes = boxes * scale
    keep = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) > 1.0
    return image.astype(np.float32), boxes[keep]


def match_targets(boxes: np.ndarray, priors: np.ndarray, config: AnchorConfig) -> np.ndarray:
    """Anchor targets (A, 5): regression target (4) and label (1: face, 0: background)."""
    targets = np.zeros((len(priors), 5), np.float32)
    if len(boxes) == 0:
        return targets
    corners = np.concatenate([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], axis=1)
    overlap = iou_matrix(boxes, corners)  # (G, A)
    best_prior = overlap.argmax(1)
    valid = overlap[np.arange(len(boxes)), best_prior] >= MIN_BEST_PRIOR_IOU
    best_gt = overlap.argmax(0)
    best_gt_overlap = overlap[best_gt, np.arange(len(priors))]
    # Every face that some anchor fits keeps its best anchor, whatever the threshold says.
    for g in np.flatnonzero(valid):
        best_gt[best_prior[g]] = g
        best_gt_overlap[best_prior[g]] = 2.0
    positive = best_gt_overlap >= POSITIVE_IOU
    targets[positive, :4] = encode_boxes(boxes[best_gt[positive]], priors[positive], config)
    targets[positive, 4] = 1.0
    return targets


def mosaic(parts: list[tuple[np.ndarray, np.ndarray]], size: int):
    """Four (image (size/2 square), boxes) tiles -> one (size x size image, boxes): a 2x2 mosaic, whose
    faces are half the size they had in their tiles (more of the small faces that hard WIDER faces are)."""
    half = size // 2
    image = np.zeros((size, size, 3), np.float32)
    boxes = []
    for (tile, tile_boxes), (y, x) in zip(parts, ((0, 0), (0, half), (half, 0), (half, half))):
        image[y:y + half, x:x + half] = tile
        boxes.append(tile_boxes + np.array([x, y, x, y], np.float32))
    return image, np.concatenate(boxes).reshape(-1, 4)


def training_examples(samples: list[Sample], size: int, config: AnchorConfig, seed: int,
                      mosaic_share: float = 0.0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless shuffled stream of (image (size, size, 3) float32 RGB, targets (A, 5)); `mosaic_share` of
    them are 2x2 mosaics of four augmented crops (`mosaic`)."""
    rng = np.random.default_rng(seed)
    priors = prior_boxes(size, size, config)

    def shuffled():
        while True:
            yield from (samples[i] for i in rng.permutation(len(samples)))

    def example(s: Sample, side: int):
        image = cv2.cvtColor(cv2.imread(str(s.path)), cv2.COLOR_BGR2RGB)
        return augment(rng, image, s.boxes, side)

    order = shuffled()
    while True:
        if mosaic_share > 0 and rng.random() < mosaic_share:
            img, boxes = mosaic([example(next(order), size // 2) for _ in range(4)], size)
        else:
            img, boxes = example(next(order), size)
        yield img, match_targets(boxes, priors, config)
