"""The face detector at run time: the shipped int8 RetinaFace through the LiteRT interpreter.

Contract (DESIGN.md): `detector(frame_rgb) -> ndarray (N, 5)` rows x1, y1, x2, y2, score in frame
pixels; no face is shape (0, 5). The input size is set once per frame size: the long side is scaled
to `detect_size` and each side padded up to a multiple of 32 (no letterbox to a square), and the
anchors are computed for that size.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from limelight.amx import keep_xnnpack_off_amx
from limelight.anchors import AnchorConfig, nms, postprocess, prior_boxes
from limelight.errors import LimeLightError

MODEL_NAME = "retinaface_mnet025_pruned_int8"
# Recall first: a missed face is published unblurred, a false alarm only blurs a patch. The tracker
# shows a track only once one detection reaches 0.3 or it persists (`TrackerOptions.confirm_*`), so
# the weak detections down to 0.15 mostly extend faces already found. Chosen with bench/leaks.py: on 3
# shared clips 0.15 left 23% of unknown face-frames identifiable against 28% at 0.3. Lower was
# measured and not taken: on the 4 crowd clips 0.1 left 84 of 327 unknown face-frames identifiable
# against 91 at 0.15 (heads turning away score 0.07-0.13), but it showed 36 more tracks on the 720p
# sitcom clip, mostly false alarms, and in `make demo` a weak frame-filling box on the plain
# background for 18 frames.
DEFAULT_THRESHOLD = 0.15
STRIDE = 32  # input sides must be multiples of the coarsest feature map's stride
# The detector's input long side, by default chosen per frame size (`auto_detect_size`): 640 up to
# 1280-px-wide video, half the frame's long side above that, at most 960. The network's smallest
# anchor is 16 px, so at 640 a 1080p face under ~48 px is lost; at 960 (1080p) under ~32 px. Measured
# with bench/leaks.py on the 1080p street clip: unknown face-frames still identifiable 9 -> 3 of 79
# (confirmed by a second detector 4 -> 2 of 72, none above the recogniser's floor); 1280 found no
# more. The cost is 2.25x the detector's work on such frames (the 1080p throughput figures in
# bench/README.md); frames up to 1280 px keep 640.
AUTO = "auto"
AUTO_MIN, AUTO_MAX = 640, 960


def auto_detect_size(height: int, width: int) -> int:
    """The input long side `AUTO` picks for a frame of this size."""
    return int(min(AUTO_MAX, max(AUTO_MIN, round(max(height, width) / 2))))


PHOTO_MAX_SIDE = 4096


def photo_detect_sizes(height: int, width: int, max_side: int = PHOTO_MAX_SIDE) -> list[int]:
    """The input long sides `AUTO` detects a photo at: the video default for its large faces, then
    about twice the previous size, up to the photo's own long side (at most `max_side`) for its small
    ones. A photo is detected once, so it can afford what a video frame cannot."""
    target = min(max(height, width), max_side)
    sizes = [auto_detect_size(height, width)]  # a small photo is scaled up to it, as a video frame
    while sizes[-1] < target:
        step = min(2 * sizes[-1], target)
        sizes.append(target if target - step < step / 2 else step)
    return sizes


class ModelError(LimeLightError):
    """The detector model is missing or cannot be loaded."""


def default_model_path() -> Path:
    """The int8 model shipped as package data."""
    return Path(str(resources.files("limelight") / "models" / f"{MODEL_NAME}.tflite"))


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # edge boxes that only have the legacy runtime
        from tflite_runtime.interpreter import Interpreter
    return Interpreter


class Runner(Protocol):
    """Runs the network on one padded RGB uint8 batch (1, H, W, 3) -> (loc (A, 4), face score (A,))."""

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class LiteRTRunner:
    """A TFLite model with a dynamic (1, H, W, 3) input, resized when the input size changes."""

    def __init__(self, model_path: str | Path, num_threads: int = 2):
        path = Path(model_path)
        self.model_path = path
        if not path.is_file():
            raise ModelError(f"{path}: detector model not found")
        keep_xnnpack_off_amx()  # before the first interpreter: see limelight/amx.py
        try:
            self.interpreter = _interpreter_class()(model_path=str(path), num_threads=num_threads)
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{path}: cannot load detector model ({e})") from None
        self._input = self.interpreter.get_input_details()[0]
        self.input_dtype = self._input["dtype"]
        self.input_quantization = self._input["quantization"]
        self._shape: tuple[int, ...] | None = None
        self._loc = self._score = None
        self._logits = False
        # The runtime creates its XNNPACK delegate at the first allocation and says so on stderr
        # (C++ logging Python cannot configure): allocate once here, with that line kept off the
        # user's terminal, rather than in the middle of a progress bar.
        with _without_delegate_notice():
            self._resize((1, STRIDE, STRIDE, 3))

    def replica(self, num_threads: int) -> "LiteRTRunner":
        """An independent interpreter of the same model (interpreters are not shared between threads)."""
        return LiteRTRunner(self.model_path, num_threads=num_threads)

    def _resize(self, shape: tuple[int, ...]) -> None:
        self.interpreter.resize_tensor_input(self._input["index"], list(shape))
        self.interpreter.allocate_tensors()
        outputs = self.interpreter.get_output_details()
        # Outputs are told apart by shape: loc is (1, A, 4); the face score (1, A), or the class logits
        # (1, A, 2) of a graph whose softmax was left to the runtime (model_opt/graph.py: softmax_to_runtime).
        shapes = {o["index"]: tuple(o["shape"]) for o in outputs}
        loc = next((i for i, s in shapes.items() if len(s) == 3 and s[0] == 1 and s[2] == 4), None)
        score = next((i for i in shapes if i != loc), None)
        if len(shapes) != 2 or loc is None or shapes[score][:2] != shapes[loc][:2] or shapes[score][2:] not in ((), (2,)):
            raise ModelError(f"{self.model_path}: not a face detector of this runtime's form (outputs "
                             f"{sorted(shapes.values())}; expected box offsets (1, A, 4) and face scores (1, A) or class "
                             "logits (1, A, 2))")
        self._loc, self._score, self._logits = loc, score, len(shapes[score]) == 3
        self._shape = shape

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if batch.shape != self._shape:
            self._resize(batch.shape)
        self.interpreter.set_tensor(self._input["index"], to_model_input(batch, self.input_dtype, self.input_quantization))
        self.interpreter.invoke()
        loc, score = self.interpreter.get_tensor(self._loc)[0], self.interpreter.get_tensor(self._score)[0]
        return loc, face_probability(score) if self._logits else score


_DELEGATE_NOTICE = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


@contextmanager
def _without_delegate_notice() -> Iterator[None]:
    """Capture file descriptor 2 while the runtime allocates; pass on all it wrote but its notice."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if line.strip() != _DELEGATE_NOTICE:
                    sys.stderr.write(line)


def face_probability(logits: np.ndarray) -> np.ndarray:
    """(A, 2) background / face logits -> (A,) softmax face probability, 1 / (1 + e^(background - face))."""
    with np.errstate(over="ignore"):  # e^x overflows to inf for a sure background: probability 0, rightly
        return 1.0 / (1.0 + np.exp(logits[:, 0] - logits[:, 1]))


def to_model_input(batch: np.ndarray, dtype, quantization: tuple[float, int]) -> np.ndarray:
    """RGB uint8 pixels -> the model's input tensor. The shipped int8 model takes int8 with scale 1 and
    zero point -128, i.e. pixel - 128, which is the pixel's byte with its top bit flipped (one cheap
    pass, no arithmetic); a uint8 input of scale 1 and zero point 0 takes the frame unchanged; a
    float32 export takes the same 0..255 values as floats; any other integer input is quantized with
    its own scale and zero point, so a model with another input range still sees the real image."""
    scale, zero_point = quantization
    if dtype == np.int8 and (scale, zero_point) == (1.0, -128):
        return np.bitwise_xor(batch, np.uint8(0x80)).view(np.int8)
    if dtype == np.uint8 and (scale, zero_point) in ((1.0, 0), (0.0, 0)):
        return batch
    if not np.issubdtype(dtype, np.integer):
        return batch.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.rint(batch / scale + zero_point), info.min, info.max).astype(dtype)


@dataclass(frozen=True)
class InputGeometry:
    """How a frame of `frame_size` maps onto the network input."""

    frame_size: tuple[int, int]  # (height, width)
    resized: tuple[int, int]  # (height, width) after scaling
    padded: tuple[int, int]  # (height, width), multiples of STRIDE
    scale: float  # network pixels per frame pixel

    @classmethod
    def for_frame(cls, height: int, width: int, detect_size: int | None) -> "InputGeometry":
        """`detect_size` is the long side in network pixels; None keeps the frame's own size."""
        scale = 1.0 if not detect_size else detect_size / max(height, width)
        rh, rw = max(1, round(height * scale)), max(1, round(width * scale))
        ph, pw = -(-rh // STRIDE) * STRIDE, -(-rw // STRIDE) * STRIDE
        return cls((height, width), (rh, rw), (ph, pw), scale)


class Detector:
    """Face detector: RGB uint8 frame -> (N, 5) x1, y1, x2, y2, score in frame pixels.

    `detect_size`: the network input's long side in pixels, `AUTO` (by frame size, see
    `auto_detect_size`), or None for the frame's own size up to `max_side`.
    """

    def __init__(
        self,
        runner: Runner | None = None,
        *,
        detect_size: int | str | None = AUTO,
        threshold: float = DEFAULT_THRESHOLD,
        nms_iou: float = 0.4,
        anchors: AnchorConfig = AnchorConfig(),
        max_side: int = 1600,
        brighten_dark: bool = True,
    ):
        if not (detect_size is None or detect_size == AUTO or (isinstance(detect_size, int) and detect_size > 0)):
            raise ValueError(f"detect_size must be a positive number of pixels, {AUTO!r} or None, got {detect_size!r}")
        self.runner = runner if runner is not None else LiteRTRunner(default_model_path())
        self.detect_size, self.threshold, self.nms_iou = detect_size, threshold, nms_iou
        self.anchors, self.max_side = anchors, max_side
        self.brighten_dark = brighten_dark
        self._geometry: InputGeometry | None = None
        self._priors: np.ndarray | None = None
        self._canvas: np.ndarray | None = None
        self._sized: dict[int, Detector] = {}  # detect_photo's passes

    def _prepare(self, height: int, width: int) -> InputGeometry:
        geo = self._geometry
        if geo is not None and geo.frame_size == (height, width):
            return geo
        if self.detect_size == AUTO:
            size = auto_detect_size(height, width)
        else:
            size = self.detect_size or min(max(height, width), self.max_side)
        geo = InputGeometry.for_frame(height, width, size)
        self._geometry = geo
        self._priors = prior_boxes(*geo.padded, self.anchors)
        # The padding stays black: a fresh canvas per input size, the image part overwritten per frame.
        self._canvas = np.zeros((1, *geo.padded, 3), np.uint8)
        return geo

    def replica(self, num_threads: int = 1) -> "Detector | None":
        """A detector with the same model and settings and its own interpreter running on
        `num_threads` threads, for a second worker thread; None when the runner cannot be
        duplicated (a custom `Runner` without a `replica(num_threads)` method)."""
        make = getattr(self.runner, "replica", None)
        if make is None:
            return None
        return Detector(make(num_threads), detect_size=self.detect_size, threshold=self.threshold, nms_iou=self.nms_iou,
                        anchors=self.anchors, max_side=self.max_side, brighten_dark=self.brighten_dark)

    def detect_photo(self, image: np.ndarray) -> np.ndarray:
        """Faces in a still photo (RGB uint8), as `__call__` gives them. With `detect_size` `AUTO`, the
        photo is detected at every size of `photo_detect_sizes` and the faces merged by NMS: the
        smallest anchor is 16 px of the network's input, so one pass at the video size loses the
        faces of a group photo under ~40 px, and one pass at full size the faces larger than the
        largest anchors. (On the WIDER FACE val subset: AP easy / medium / hard 0.907 / 0.858 / 0.513
        at 640 alone, 0.911 / 0.897 / 0.712 merged with the original size.)"""
        if self.detect_size != AUTO:
            return self(image)
        found = [self._at_size(size)(image) for size in photo_detect_sizes(*image.shape[:2])]
        return nms(np.concatenate(found), self.nms_iou)

    def photo_input_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of `detect_photo`'s finest pass over a photo of this size."""
        if self.detect_size != AUTO:
            return self.input_size(height, width)
        return self._at_size(photo_detect_sizes(height, width)[-1]).input_size(height, width)

    def _at_size(self, size: int) -> "Detector":
        """A detector of this one's settings at a fixed input size, sharing its runner (not for use from two threads at once)."""
        if size not in self._sized:
            self._sized[size] = Detector(self.runner, detect_size=size, threshold=self.threshold, nms_iou=self.nms_iou,
                                         anchors=self.anchors, max_side=self.max_side, brighten_dark=self.brighten_dark)
        return self._sized[size]

    @property
    def geometry(self) -> InputGeometry | None:
        return self._geometry

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) that a frame of this size is scaled to for the network."""
        return self._prepare(height, width).resized

    def __call__(self, frame: np.ndarray, frame_size: tuple[int, int] | None = None) -> np.ndarray:
        """Faces in `frame` (RGB uint8). With `frame_size` = (height, width), `frame` is that frame
        already scaled to `input_size(*frame_size)` (a video is converted and scaled in one step);
        boxes are in `frame_size` pixels either way."""
        h, w = frame_size or frame.shape[:2]
        geo = self._prepare(h, w)
        rh, rw = geo.resized
        if frame.shape[:2] == (rh, rw):
            self._canvas[0, :rh, :rw] = frame
        elif frame.shape[:2] == (h, w):
            interp = cv2.INTER_AREA if geo.scale < 1 else cv2.INTER_LINEAR
            cv2.resize(frame, (rw, rh), dst=self._canvas[0, :rh, :rw], interpolation=interp)
        else:
            raise ValueError(f"a frame of {w}x{h} goes in at {rw}x{rh} or its own size, got {frame.shape[1]}x{frame.shape[0]}")
        if self.brighten_dark:
            _brighten(self._canvas[0, :rh, :rw])
        loc, score = self.runner(self._canvas)
        dets = postprocess(loc, score, self._priors, self.threshold, self.nms_iou, self.anchors)
        if len(dets):
            dets[:, :4] /= geo.scale
            dets[:, [1, 3]] = np.clip(dets[:, [1, 3]], 0, h)
            dets[:, [0, 2]] = np.clip(dets[:, [0, 2]], 0, w)
        return dets


DARK_MEAN = 90.0  # network inputs darker than this mean level (0-255) are brightened...
TARGET_MEAN = 128.0  # ...by the gamma curve that lifts their mean to mid-grey
MIN_GAMMA = 1 / 3  # the strongest lift, for near-black frames (more would only amplify noise)
_LEVELS = np.arange(256, dtype=np.float64) / 255.0


def _brighten(image: np.ndarray) -> None:
    """Lift a dark network input in place with a gamma curve taking its mean level to mid-grey.

    The int8 model misses faces in dark scenes (a concert audience: faces within a few quantization
    levels of black). A gamma curve lifts the dark tones most and keeps the highlights, so unlike a
    linear stretch it still works when a spotlit performer fills the top of the range. Measured on
    160 frames of 4 shared clips against YuNet at detector threshold 0.15: face recall 0.81 -> 0.86
    (the dark hamilton clip 0.77 -> 0.96) with fewer false alarms (5.8 -> 5.2 per frame) than the
    linear stretch it replaced (measured with the model before batch-norm re-estimation). Only the
    detector's copy of the frame is changed, never the output.
    """
    mean = float(image[::4, ::4].mean())
    if mean >= DARK_MEAN:
        return
    gamma = max(np.log(TARGET_MEAN / 255.0) / np.log(max(mean, 1.0) / 255.0), MIN_GAMMA)
    lut = (255.0 * _LEVELS**gamma + 0.5).astype(np.uint8)
    cv2.LUT(image, lut, dst=image)


def model_metadata(model_path: Path | None = None) -> dict:
    """The metadata JSON written next to the model by model_opt, plus the file's sha256."""
    path = Path(model_path) if model_path else default_model_path()
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta.setdefault("name", path.stem)
    return meta
