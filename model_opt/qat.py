"""Quantization-aware training (tfmot) of the pruned RetinaFace, keeping its zeros.

Post-training quantization sets each activation's int8 range from the extreme values seen over the
calibration images, which leaves little resolution for the typical values, and the rounding errors of
~40 layers add up: measured, the int8 model lost 2-3 AP on WIDER FACE and a quarter of the faces in
dark video frames. QAT trains with the int8 rounding simulated (fake quantization of weights and
activations, ranges learnt as moving averages), so the weights adapt to it. The prune-preserving
scheme (`Default8BitPrunePreserveQuantizeScheme`) keeps the pruned kernels' zeros zero.

Batch norm stays frozen as in the pruning fine-tune; tfmot quantizes each BN output, which is the
convolution output once the converter folds BN into the kernel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

from model_opt.data import Sample, training_examples  # noqa: E402
from model_opt.retinaface import RetinaFaceConfig, build_core, copy_weights_by_name  # noqa: E402
from model_opt.train import fit_resumable  # noqa: E402


@dataclass(frozen=True)
class QatSettings:
    steps: int = 800
    batch_size: int = 8
    image_size: int = 480
    learning_rate: float = 2e-4
    seed: int = 2
    checkpoint_every: int = 50
    range_batches: int = 20  # batches that set the initial activation ranges
    distill: float = 1.0  # weight of the distillation term towards the float teacher (train.distillation_loss)
    feature_distill: float = 10.0  # weight of the head-feature term (train.feature_loss; 0: off)
    mosaic: float = 0.0  # share of the training crops that are 2x2 mosaics (data.mosaic); 0: none


# Activation-range variables of tfmot's quantizers, by the suffix of their names.
_RANGE_SUFFIXES = ("output", "post_activation")


def quantize_aware(core: keras.Model, config: RetinaFaceConfig = RetinaFaceConfig(),
                   calibration: Iterable[np.ndarray] | None = None) -> keras.Model:
    """A QAT copy of a plain core model (dynamic input size), its kernels' zeros preserved.

    tfmot starts every activation range at [-6, 6] and moves it by an exponential average with decay
    0.999, so a short fine-tune would train against ranges far from the real ones (measured: frame
    recall 0.26 after 10 steps). With `calibration` (batches (B, H, W, 3) of RGB 0..255), each range
    starts instead at the float model's mean per-batch min / max of that layer's output, the value
    the moving average converges to."""
    plain = build_core(config)
    copy_weights_by_name(core, plain)
    for layer in plain.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    annotated = keras.models.clone_model(plain, clone_function=_annotate)  # wraps plain's own layers
    with tfmot.quantization.keras.quantize_scope({"_FixedLayerConfig": _FixedLayerConfig}):
        qat = tfmot.quantization.keras.quantize_apply(annotated, scheme=_Scheme())
    if calibration is not None:
        _init_ranges(qat, plain, calibration)
    return qat


class _DepthwiseKernelQuantizer(tfmot.quantization.keras.quantizers.LastValueQuantizer):
    """Per-channel int8 for a depthwise kernel (kh, kw, C, M), as the TFLite export stores it.

    tfmot's default depthwise quantizer is "per axis" along the kernel's last axis, the depth
    multiplier (size 1 here): one scale for all channels, so training simulated coarser weights than
    the exported model has (its converter quantizes the batch-norm-folded kernel per channel).
    Quantizing the kernel reshaped to (kh, kw, 1, C x M) makes the last axis the channel; tfmot's
    per-channel ops take 2-D or 4-D kernels only."""

    def __init__(self):
        super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

    def build(self, tensor_shape, name, layer):
        channels = int(tensor_shape[-2]) * int(tensor_shape[-1])
        make = lambda suffix, value: layer.add_weight(  # noqa: E731
            f"{name}_{suffix}", shape=(channels,), initializer=keras.initializers.Constant(value), trainable=False)
        return {"min_var": make("min", -6.0), "max_var": make("max", 6.0)}

    def __call__(self, inputs, training, weights, **kwargs):
        kh, kw, c, m = inputs.shape
        flat = tf.reshape(inputs, (kh, kw, 1, c * m))
        return tf.reshape(super().__call__(flat, training, weights, **kwargs), (kh, kw, c, m))


class _Registry:
    """The prune-preserving 8-bit registry, with `_DepthwiseKernelQuantizer` for depthwise kernels."""

    def __init__(self, base):
        self._base = base

    def __getattr__(self, name):
        return getattr(self._base, name)

    def get_quantize_config(self, layer):
        config = self._base.get_quantize_config(layer)
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            config.weight_quantizer = _DepthwiseKernelQuantizer()
        return config


class _Scheme(tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme):
    def get_quantize_registry(self):
        return _Registry(super().get_quantize_registry())


class _FixedLayerConfig(tfmot.quantization.keras.QuantizeConfig):
    """For the fixed BGR-swap-and-mean layer: its output is quantized, its kernel left out of the QAT
    wrapper. tfmot's wrapper lists every weight it quantizes as trainable, even in a frozen layer, so
    the default config had the fine-tune turn the swap into a learnt colour mix (gains 1.01..1.05,
    0.03 cross-talk). The converter still stores the kernel in int8; its 0 / 1 entries are exact."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self):
        return {}


def _annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
    if layer.name == "preprocess":
        return tfmot.quantization.keras.quantize_annotate_layer(layer, quantize_config=_FixedLayerConfig())
    return tfmot.quantization.keras.quantize_annotate_layer(layer) if not isinstance(layer, keras.layers.InputLayer) else layer


def _range_vars(wrapper: keras.layers.Layer) -> tuple[tf.Variable, tf.Variable] | None:
    found = {}
    for var in wrapper.weights:
        leaf = var.name.split("/")[-1].split(":")[0]
        for suffix in _RANGE_SUFFIXES:
            if leaf in (f"{suffix}_min", f"{suffix}_max"):
                found[leaf.rsplit("_", 1)[1]] = var
    return (found["min"], found["max"]) if len(found) == 2 else None


def _init_ranges(qat: keras.Model, plain: keras.Model, calibration: Iterable[np.ndarray]) -> int:
    """Set each QAT activation range from `plain`'s outputs of the same layer; returns ranges set."""
    targets = {}
    for wrapper in qat.layers:
        inner = getattr(wrapper, "layer", None)
        ranges = _range_vars(wrapper) if inner is not None else None
        if ranges is not None:
            targets[inner.name] = ranges
    names = sorted(targets)
    probe = keras.Model(plain.inputs, [plain.get_layer(n).output for n in names])
    lows, highs, batches = np.zeros(len(names)), np.zeros(len(names)), 0
    for batch in calibration:
        outs = probe(np.asarray(batch, np.float32), training=False)
        lows += [min(float(tf.reduce_min(o)), 0.0) for o in outs]
        highs += [max(float(tf.reduce_max(o)), 0.0) for o in outs]
        batches += 1
    if not batches:
        raise ValueError("no calibration batches for the QAT ranges")
    for name, low, high in zip(names, lows / batches, highs / batches):
        lo_var, hi_var = targets[name]
        lo_var.assign(low)
        hi_var.assign(high)
    # The input: uint8 frames, so the range is exactly 0..255 (scale 1, zero point 0 in the TFLite model).
    for layer in qat.layers:
        if type(layer).__name__ == "QuantizeLayer":  # tfmot does not export the class
            for var in layer.weights:  # named after the layer: quantize_layer_1_min in a second model
                leaf = var.name.split("/")[-1].split(":")[0]
                if leaf.endswith(("_min", "_max")):
                    var.assign(0.0 if leaf.endswith("_min") else 255.0)
    return len(names)


def load_qat(weights: Path, config: RetinaFaceConfig = RetinaFaceConfig()) -> keras.Model:
    """A QAT model with trained QAT weights (kernels and learnt ranges) from `save_weights`."""
    model = quantize_aware(build_core(config), config)
    model.load_weights(str(weights))
    return model


def qat_finetune(pruned_core: keras.Model, samples: list[Sample], config: RetinaFaceConfig,
                 settings: QatSettings, work_dir: Path, teacher: keras.Model | None = None) -> keras.Model:
    """Quantization-aware fine-tune of the pruned model, resumable from `work_dir`; returns the QAT
    model (export it with `export.to_int8_tflite`, which takes the learnt ranges). `teacher` (the
    unpruned float model) is distilled into it when `settings.distill` > 0."""
    model = quantize_aware(pruned_core, config, _calibration_batches(samples, config, settings))
    fit_resumable(model, samples, config, settings, work_dir, teacher=teacher)
    return model


def _calibration_batches(samples: list[Sample], config: RetinaFaceConfig, settings: QatSettings):
    """`settings.range_batches` augmented training batches, as the fine-tune will see them."""
    stream = training_examples(samples, settings.image_size, config.anchors, settings.seed + 10_000)
    for _ in range(settings.range_batches):
        yield np.stack([next(stream)[0] for _ in range(settings.batch_size)])


def float_kernels(qat_model: keras.Model, config: RetinaFaceConfig = RetinaFaceConfig()) -> keras.Model:
    """The plain core with the QAT model's trained float kernels (for sparsity and the float table)."""
    plain = build_core(config)
    copy_weights_by_name(qat_model, plain)
    return plain
