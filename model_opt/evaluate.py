"""Run a detector over the local WIDER FACE val images and score it with the official protocol."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from limelight.detector import Detector  # noqa: E402
from model_opt.widerface_eval import evaluate, list_images, load_ground_truth  # noqa: E402

EVAL_THRESHOLD = 0.02  # all faces above a low threshold, as WIDER FACE evaluation needs
GT_DIR = "widerface/ground_truth"
VAL_DIR = "widerface/val/WIDER_val/images"


class KerasRunner:
    """Runs a Keras core model (RGB 0..255 in, [loc, logits] out) with the runtime's Runner contract."""

    def __init__(self, core):
        from model_opt.retinaface import inference_model

        self.model = inference_model(core)

    def __call__(self, batch: np.ndarray):
        loc, score = self.model(batch.astype(np.float32), training=False)
        return loc.numpy()[0], score.numpy()[0]


def val_images(data: Path, limit: int | None = None) -> list[tuple[str, Path]]:
    gt = load_ground_truth(data / GT_DIR)
    images = list_images(data / VAL_DIR, gt)
    return images[:limit] if limit else images


def predict(runner, images: list[tuple[str, Path]], detect_size: int | None) -> dict[str, np.ndarray]:
    """Detections per image key at `detect_size` (long side; None = original size, capped at 1600)."""
    det = Detector(runner, detect_size=detect_size, threshold=EVAL_THRESHOLD, brighten_dark=False)  # the model alone
    out = {}
    for key, path in images:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        out[key] = det(rgb)
    return out


def widerface_ap(runner, data: Path, detect_size: int | None, limit: int | None = None) -> dict[str, float]:
    """AP easy / medium / hard of `runner` on the local val subset."""
    gt = load_ground_truth(data / GT_DIR)
    images = val_images(data, limit)
    return evaluate(predict(runner, images, detect_size), gt)
