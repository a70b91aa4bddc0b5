"""Parity of the Keras RetinaFace with the reference ONNX export of the same weights.

The ONNX model takes BGR minus (104, 117, 123), NCHW float; ours takes RGB 0..255 NHWC and does the
conversion inside. Both are decoded with the same numpy post-processing, so a difference here is a
difference in the networks.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from limelight.anchors import postprocess, prior_boxes
from model_opt.retinaface import BGR_MEAN

BOX_TOLERANCE_PX = 1.0
SCORE_TOLERANCE = 1e-3
PARITY_THRESHOLD = 0.3


class ParityError(RuntimeError):
    """The Keras model's detections differ from the reference's."""


def _padded(path: Path, long_side: int = 640) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    s = long_side / max(rgb.shape[:2])
    rgb = cv2.resize(rgb, (round(rgb.shape[1] * s), round(rgb.shape[0] * s)), interpolation=cv2.INTER_AREA)
    h, w = -(-rgb.shape[0] // 32) * 32, -(-rgb.shape[1] // 32) * 32
    out = np.zeros((h, w, 3), np.uint8)
    out[: rgb.shape[0], : rgb.shape[1]] = rgb
    return out


def compare_with_onnx(core, onnx_path: Path, data: Path, images: int = 5) -> float:
    """Run both models on the first `images` WIDER val images; return the largest score difference.

    Raises ParityError when the detections (score > 0.3) differ in number, in any box coordinate
    by more than 1 px, or in score by more than 1e-3."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    paths = sorted((data / "widerface/val/WIDER_val/images").rglob("*.jpg"))[:images]
    worst = 0.0
    for path in paths:
        rgb = _padded(path)
        priors = prior_boxes(*rgb.shape[:2])
        bgr = (rgb[..., ::-1].astype(np.float32) - np.float32(BGR_MEAN)).transpose(2, 0, 1)[None]
        loc_r, conf_r = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(bgr)})[:2]
        loc_k, logits = (t.numpy() for t in core(rgb[None].astype(np.float32), training=False)[:2])
        conf_k = np.exp(logits - logits.max(-1, keepdims=True))
        conf_k /= conf_k.sum(-1, keepdims=True)
        ref = postprocess(loc_r[0], conf_r[0, :, 1], priors, PARITY_THRESHOLD)
        ours = postprocess(loc_k[0], conf_k[0, :, 1], priors, PARITY_THRESHOLD)
        if len(ref) != len(ours):
            raise ParityError(f"{path.name}: {len(ours)} faces vs {len(ref)} from the reference")
        if len(ref):
            box_diff = float(np.abs(ref[:, :4] - ours[:, :4]).max())
            score_diff = float(np.abs(ref[:, 4] - ours[:, 4]).max())
            if box_diff > BOX_TOLERANCE_PX or score_diff > SCORE_TOLERANCE:
                raise ParityError(f"{path.name}: boxes differ by {box_diff:.3f} px, scores by {score_diff:.2e}")
            worst = max(worst, score_diff)
    return worst
