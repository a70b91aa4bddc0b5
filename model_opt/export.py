"""Keras RetinaFace -> TFLite (float32 reference, or full int8 with a calibration set).

The exported graph has a dynamic (1, H, W, 3) RGB input (H, W multiples of 32) so the runtime sizes
it once per video, and two float outputs: box offsets (1, A, 4) and class logits (1, A, 2), whose
softmax the runtime takes (`limelight.detector.face_probability`). In the int8 model every weight
and activation is int8 and the input is int8 with scale 1 and zero point -128 (pixel - 128, which
the runtime feeds as `pixel ^ 0x80`). Both exports go through `model_opt.graph.optimize` (the same
results from a faster graph).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from model_opt.graph import optimize  # noqa: E402
from model_opt.retinaface import inference_model  # noqa: E402


class CalibrationError(ValueError):
    """The calibration set is unusable (empty, or not RGB 0..255 images)."""


def _converter(core: keras.Model) -> tf.lite.TFLiteConverter:
    infer = inference_model(core)

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32, name="image")])
    def serve(image):
        loc, score = infer(image)
        return {"loc": loc, "score": score}

    return tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], infer)


def to_float_tflite(core: keras.Model, optimize_graph: bool = True) -> bytes:
    """Float32 TFLite of the same graph (the latency baseline for the int8 model)."""
    model = _converter(core).convert()
    return optimize(model) if optimize_graph else model


def to_int8_tflite(core: keras.Model, calibration: Callable[[], Iterable[np.ndarray]],
                   optimize_graph: bool = True) -> tuple[bytes, int]:
    """Full-integer TFLite; `calibration()` yields RGB images (H, W, 3), H and W multiples of 32,
    values 0..255. Returns the model bytes and the number of calibration images used. Without
    `optimize_graph` the graph is the converter's own (uint8 input), for comparison."""
    count = 0
    if next(iter(calibration()), None) is None:  # fail before the (slow) conversion starts
        raise CalibrationError("the calibration set is empty")

    def representative():
        nonlocal count
        for image in calibration():
            if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] % 32 or image.shape[1] % 32:
                raise CalibrationError(f"calibration image of shape {image.shape}: need (H, W, 3), multiples of 32")
            count += 1
            yield [image[None].astype(np.float32)]
        if count == 0:
            raise CalibrationError("the calibration set is empty")

    conv = _converter(core)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    model = conv.convert()
    return (optimize(model) if optimize_graph else model), count


def write_atomically(path: Path, data: bytes) -> Path:
    """Write `data` to `path` via a temporary name, so a crash never leaves half a model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path
