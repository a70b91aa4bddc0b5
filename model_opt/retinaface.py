"""RetinaFace-MobileNet0.25 in tf_keras (Keras 2, as tfmot requires) and its weight loader.

Layout (Pytorch_Retinaface, `cfg_mnet`): MobileNetV1-0.25 backbone with LeakyReLU(0.1), a 3-level
FPN (strides 8/16/32, nearest upsampling), an SSH context module per level, and per-level 1x1
class / box (/ landmark) heads over 2 anchors per cell.

Every Keras layer that holds weights is named after its PyTorch module with "." -> "__", so the
checkpoint loads by name. Stride-2 convolutions pad explicitly (1, 1) as PyTorch does; Keras "same"
would pad (0, 1) and shift every feature map.

The model takes RGB pixels 0..255 (NHWC). A fixed, untrained 1x1 convolution first swaps RGB to BGR
and subtracts the training mean (104, 117, 123): the int8 model can then take uint8 frames as they
come from the decoder, with no per-frame arithmetic in numpy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

from limelight.anchors import AnchorConfig  # noqa: E402

L = keras.layers
BGR_MEAN = (104.0, 117.0, 123.0)
BN_EPSILON = 1e-5  # PyTorch's BatchNorm2d default
# Bumped when the graph changes in a way training sees (layers, their order, where int8 quantizes):
# the training stages' stamps hold it, so a work dir trained on an older graph is retrained.
# 2: the SSH module's ReLU moved before its concatenation.
GRAPH_VERSION = 2


@dataclass(frozen=True)
class RetinaFaceConfig:
    """Network widths. The default is RetinaFace-MobileNet0.25; tests use a narrower one."""

    stage_channels: tuple[tuple[int, ...], ...] = (
        (8, 16, 32, 32, 64, 64),
        (128, 128, 128, 128, 128, 128),
        (256, 256),
    )
    stage_strides: tuple[tuple[int, ...], ...] = ((2, 1, 2, 1, 2, 1), (2, 1, 1, 1, 1, 1), (2, 1))
    fpn_channels: int = 64
    leaky: float = 0.1
    landmarks: bool = False
    anchors: AnchorConfig = field(default_factory=AnchorConfig)

    @classmethod
    def tiny(cls) -> "RetinaFaceConfig":
        """A ~20k-parameter variant with the same topology, for fast pipeline tests."""
        return cls(
            stage_channels=((4, 8, 16, 16, 32, 32), (32, 32), (64, 64)),
            stage_strides=((2, 1, 2, 1, 2, 1), (2, 1), (2, 1)),
            fpn_channels=16,
        )


Wrap = Callable[[L.Layer], L.Layer]


def _identity(layer: L.Layer) -> L.Layer:
    return layer


def _name(torch_prefix: str) -> str:
    return torch_prefix.replace(".", "__")


class _Builder:
    """Functional-API helpers; `wrap` is applied to every prunable (non-depthwise) convolution."""

    def __init__(self, config: RetinaFaceConfig, wrap: Wrap):
        self.config, self.wrap = config, wrap

    def _pad(self, x, stride: int, kernel: int):
        if kernel == 3 and stride == 2:
            return L.ZeroPadding2D(1)(x), "valid"
        return x, "same"

    def conv_bn(self, x, prefix: str, filters: int, stride: int = 1, kernel: int = 3, leaky: float | None = None):
        """conv(no bias) -> BN -> LeakyReLU (None: no activation). Torch: prefix.0 conv, prefix.1 BN."""
        x, padding = self._pad(x, stride, kernel)
        conv = L.Conv2D(filters, kernel, stride, padding=padding, use_bias=False, name=_name(f"{prefix}.0"))
        x = self.wrap(conv)(x)
        x = L.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=_name(f"{prefix}.1"))(x)
        return L.LeakyReLU(leaky)(x) if leaky is not None else x

    def conv_dw(self, x, prefix: str, filters: int, stride: int):
        """Depthwise 3x3 -> BN -> LeakyReLU -> pointwise 1x1 -> BN -> LeakyReLU (torch .0 .1 .3 .4)."""
        leaky = self.config.leaky
        x, padding = self._pad(x, stride, 3)
        x = L.DepthwiseConv2D(3, stride, padding=padding, use_bias=False, name=_name(f"{prefix}.0"))(x)
        x = L.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=_name(f"{prefix}.1"))(x)
        x = L.LeakyReLU(leaky)(x)
        conv = L.Conv2D(filters, 1, use_bias=False, name=_name(f"{prefix}.3"))
        x = self.wrap(conv)(x)
        x = L.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=_name(f"{prefix}.4"))(x)
        return L.LeakyReLU(leaky)(x)

    def backbone(self, x):
        outputs = []
        for s, (channels, strides) in enumerate(zip(self.config.stage_channels, self.config.stage_strides), 1):
            for i, (c, st) in enumerate(zip(channels, strides)):
                prefix = f"body.stage{s}.{i}"
                if s == 1 and i == 0:
                    x = self.conv_bn(x, prefix, c, st, leaky=self.config.leaky)
                else:
                    x = self.conv_dw(x, prefix, c, st)
            outputs.append(x)
        return outputs

    def fpn(self, feats):
        c, leaky = self.config.fpn_channels, self.config.leaky
        o1, o2, o3 = (self.conv_bn(f, f"fpn.output{i}", c, kernel=1, leaky=leaky) for i, f in enumerate(feats, 1))
        o2 = self.conv_bn(L.Add()([o2, L.UpSampling2D(2)(o3)]), "fpn.merge2", c, leaky=leaky)
        o1 = self.conv_bn(L.Add()([o1, L.UpSampling2D(2)(o2)]), "fpn.merge1", c, leaky=leaky)
        return [o1, o2, o3]

    def ssh(self, x, prefix: str):
        c, leaky = self.config.fpn_channels, self.config.leaky
        c3 = self.conv_bn(x, f"{prefix}.conv3X3", c // 2)
        c5_1 = self.conv_bn(x, f"{prefix}.conv5X5_1", c // 4, leaky=leaky)
        c5 = self.conv_bn(c5_1, f"{prefix}.conv5X5_2", c // 4)
        c7_2 = self.conv_bn(c5_1, f"{prefix}.conv7X7_2", c // 4, leaky=leaky)
        c7 = self.conv_bn(c7_2, f"{prefix}.conv7x7_3", c // 4)
        # ReLU(concat) as a concat of ReLUs (the same function): in int8 each branch's ReLU fuses into
        # its convolution and the concat, sharing one scale, holds only values >= 0, so the features
        # the heads read keep all 256 levels; a ReLU after the concat left them 7 bits (range -6..6)
        return L.Concatenate()([L.ReLU()(c3), L.ReLU()(c5), L.ReLU()(c7)])

    def head(self, feats, kind: str, values: int):
        per_level = []
        for i, f in enumerate(feats):
            conv = L.Conv2D(self.config.anchors.anchors_per_cell * values, 1, name=_name(f"{kind}.{i}.conv1x1"))
            per_level.append(L.Reshape((-1, values))(self.wrap(conv)(f)))
        return L.Concatenate(axis=1, name=kind.lower())(per_level)


def build_core(
    config: RetinaFaceConfig = RetinaFaceConfig(),
    input_shape: tuple[int | None, int | None] = (None, None),
    wrap: Wrap = _identity,
) -> keras.Model:
    """Model: RGB 0..255 (B, H, W, 3), H and W multiples of 32 -> [loc (B, A, 4), class logits (B, A, 2)]
    (+ landmarks (B, A, 10) when `config.landmarks`). Anchor order is `limelight.anchors.prior_boxes`."""
    inputs = keras.Input((*input_shape, 3), name="image")
    pre = L.Conv2D(3, 1, name="preprocess", trainable=False)
    x = pre(inputs)
    perm = np.zeros((1, 1, 3, 3), np.float32)
    perm[0, 0, [2, 1, 0], [0, 1, 2]] = 1.0  # output B, G, R from input R, G, B
    pre.set_weights([perm, -np.asarray(BGR_MEAN, np.float32)])
    b = _Builder(config, wrap)
    feats = b.fpn(b.backbone(x))
    feats = [b.ssh(f, f"ssh{i}") for i, f in enumerate(feats, 1)]
    outputs = [b.head(feats, "BboxHead", 4), b.head(feats, "ClassHead", 2)]
    if config.landmarks:
        outputs.append(b.head(feats, "LandmarkHead", 10))
    return keras.Model(inputs, outputs, name="retinaface")


def inference_model(core: keras.Model) -> keras.Model:
    """[loc, face score] view of a core model: softmax over the class logits, face channel only."""
    loc, logits = core.outputs[:2]
    probs = L.Softmax(name="softmax")(logits)
    score = L.Lambda(lambda p: p[..., 1], name="face_score")(probs)
    return keras.Model(core.inputs, [loc, score], name="retinaface_infer")


def _keras_weights_from_torch(layer, state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    if isinstance(layer, L.BatchNormalization):
        return [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
    w = state[f"{prefix}.weight"]
    if isinstance(layer, L.DepthwiseConv2D):
        kernel = w.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    else:
        kernel = w.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
    return [kernel] + ([state[f"{prefix}.bias"]] if layer.use_bias else [])


class WeightLoadError(ValueError):
    """A checkpoint does not fit the network."""


def load_torch_state(model: keras.Model, state: dict[str, np.ndarray]) -> int:
    """Copy a Pytorch_Retinaface state dict into `model` (float or prune-wrapped); returns tensors used.

    Raises WeightLoadError if a layer has no matching tensor or a shape differs."""
    used = 0
    for layer in model.layers:
        target = getattr(layer, "layer", layer)  # tfmot wrappers hold the real layer
        if target.name == "preprocess" or not target.weights:
            continue
        prefix = target.name.replace("__", ".")
        try:
            values = _keras_weights_from_torch(target, state, prefix)
        except KeyError as e:
            raise WeightLoadError(f"checkpoint has no tensor {e.args[0]} for layer {target.name}") from None
        expected = [tuple(w.shape) for w in target.weights[: len(values)]]
        if [v.shape for v in values] != expected:
            raise WeightLoadError(f"{target.name}: checkpoint shapes {[v.shape for v in values]} != {expected}")
        for var, value in zip(target.weights, values):
            var.assign(value)
        used += len(values)
    return used


def copy_weights_by_name(src: keras.Model, dst: keras.Model) -> None:
    """Copy the kernels/BN statistics of `src` into `dst` (either may be wrapped by tfmot for pruning or
    quantization), by layer name and variable name (wrappers may list a layer's variables in another order)."""
    def params(layer):  # a wrapper lists the inner layer's variables among its own masks and ranges
        leaves = {v.name.split("/")[-1].split(":")[0]: v for v in layer.weights}
        return getattr(layer, "layer", layer).name, {k: v for k, v in leaves.items() if k in _PARAMETERS}

    by_name = dict(params(l) for l in src.layers)
    for layer in dst.layers:
        name, targets = params(layer)
        if name not in by_name:
            continue
        for leaf, var in targets.items():
            if leaf not in by_name[name]:
                raise WeightLoadError(f"{name}: the source model has no {leaf}")
            var.assign(by_name[name][leaf])


_PARAMETERS = {"kernel", "depthwise_kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance"}
