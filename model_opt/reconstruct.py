"""One-shot sparse reconstruction: prune each convolution to its share and re-fit the weights it keeps.

Magnitude pruning zeroes a layer's smallest weights and leaves the others as they were, so every
pruned layer's output drifts from the dense one and the drift compounds down the network. Here each
prunable convolution, in network order, keeps the weights magnitude pruning keeps (its LAMP share),
and those are solved again by least squares so that the layer, fed with the activations of the
network pruned so far, gives the dense network's output of that layer (before its batch norm). Per
output channel o with kept inputs S:

    w_S = (X_S^T X_S + d I)^-1 X_S^T y_o

over positions sampled from calibration crops, X being the layer's input patches (im2col) and y the
dense layer's output; d damps the solve (a share of the mean diagonal, as in SparseGPT). It is the
layer-wise reconstruction of OBS / SparseGPT (Frantar & Alistarh, ICML 2023) with the mask fixed by
magnitude; exact solves are cheap here (at most 9 x 64 = 576 inputs a channel). The fine-tune then
starts from these weights with the masks held (`PruneSettings.reconstruct_images`).

Measured (model_opt/README.md): one shot, batch norm re-estimated, AP at 640 on the 315 val images
0.911 / 0.862 / 0.523 against 0.907 / 0.851 / 0.514 for magnitude pruning alone; after the fine-tune
and QAT, the same as from magnitude pruning (int8 0.906 / 0.856 / 0.505 vs 0.907 / 0.858 / 0.514), so
`make model` leaves it off (`--reconstruct-images 24` turns it on).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from model_opt.data import Sample, training_examples  # noqa: E402
from model_opt.retinaface import RetinaFaceConfig  # noqa: E402

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconstructSettings:
    images: int = 24  # augmented training crops the activations come from
    image_size: int = 640
    positions: int = 300_000  # sampled output positions a layer (all of them when fewer)
    damping: float = 0.01  # share of the mean diagonal of X^T X added to it
    seed: int = 1234


def magnitude_mask(kernel: np.ndarray, share: float) -> np.ndarray:
    """True where magnitude pruning to `share` keeps a weight (ties broken by position)."""
    flat = np.abs(kernel).ravel()
    keep = np.ones(flat.size, bool)
    cut = int(round(share * flat.size))
    if cut:
        keep[np.argsort(flat, kind="stable")[:cut]] = False
    return keep.reshape(kernel.shape)


def input_patches(x: np.ndarray, layer: keras.layers.Conv2D) -> np.ndarray:
    """(positions, kh * kw * C) patches of the layer's input `x` (N, H, W, C), in the kernel's
    (kh, kw, C) order, one row per output position."""
    kh, kw = layer.kernel_size
    sh, sw = layer.strides
    if (kh, kw, sh, sw) == (1, 1, 1, 1):
        return x.reshape(-1, x.shape[-1])
    p = tf.image.extract_patches(x, [1, kh, kw, 1], [1, sh, sw, 1], [1, 1, 1, 1], layer.padding.upper()).numpy()
    return p.reshape(-1, p.shape[-1])


def solve_kept(x: np.ndarray, y: np.ndarray, keep: np.ndarray, damping: float) -> np.ndarray:
    """Least-squares weights (inputs, outputs), zero where `keep` is False, that best map the rows of
    `x` (positions, inputs) to those of `y` (positions, outputs)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    gram, cross = x.T @ x, x.T @ y
    gram += damping * max(float(np.mean(np.diag(gram))), 1e-12) * np.eye(len(gram))
    w = np.zeros(keep.shape)
    for o in range(keep.shape[1]):
        kept = np.flatnonzero(keep[:, o])
        if kept.size:
            w[kept, o] = np.linalg.solve(gram[np.ix_(kept, kept)], cross[kept, o])
    return w


def reconstruct(dense: keras.Model, student: keras.Model, shares: dict[str, float], samples: list[Sample],
                config: RetinaFaceConfig, settings: ReconstructSettings = ReconstructSettings()) -> dict[str, float]:
    """Prune `student` (a copy of `dense`'s core model) in place: each layer named in `shares`, in
    network order, to its share by magnitude, the kept weights re-solved as above. Returns each layer's
    relative squared error (over the dense layer's output) after the solve."""
    rng = np.random.default_rng(settings.seed)
    stream = training_examples(samples, settings.image_size, config.anchors, settings.seed)
    crops = np.stack([next(stream)[0] for _ in range(settings.images)])

    def run(model: keras.Model, tensor) -> np.ndarray:
        view = keras.Model(model.inputs, tensor)
        return np.concatenate([view(crops[i:i + 4], training=False).numpy() for i in range(0, len(crops), 4)])

    errors = {}
    for layer in [l for l in student.layers if l.name in shares]:
        kernel = layer.kernel.numpy()
        kh, kw, cin, cout = kernel.shape
        keep = magnitude_mask(kernel, shares[layer.name]).reshape(-1, cout)
        x = input_patches(run(student, layer.input), layer)
        y = run(dense, dense.get_layer(layer.name).output).reshape(-1, cout)
        if len(x) > settings.positions:
            pick = rng.choice(len(x), settings.positions, replace=False)
            x, y = x[pick], y[pick]
        w = solve_kept(x, y, keep, settings.damping)
        errors[layer.name] = float(np.mean((x @ w - y) ** 2) / max(float(np.mean(y.astype(np.float64) ** 2)), 1e-30))
        layer.kernel.assign(w.reshape(kernel.shape).astype(np.float32))
        log.info("reconstructed %s: share %.2f, relative error %.4f", layer.name, shares[layer.name], errors[layer.name])
    return errors
