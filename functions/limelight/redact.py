"""Per-frame face redaction, in place on an RGB frame or the planes of a YUV one (numpy / OpenCV, no state).

Each box is scaled around its centre (`RedactOptions.scale`, so hair, ears and a late or loose
detection are covered too), clipped to the frame, and its region replaced by an anonymised version:

- BLUR: gaussian with sigma = 1/5 of the scaled box's long side (about 1/4 of the face), on a copy
  downscaled to `BLUR_PIXELS` across, then upscaled: far stronger than any face embedding tolerates,
  and the cost no longer grows with the face size;
- PIXELATE: `PIXELATE_BLOCKS` blocks across the scaled box's long side (about 8 across the face);
- SOLID: black. Not the mean colour, which would still tell the skin tone.

Strength is relative to the face, so small and large faces are equally unrecognisable. For a box
cut by the frame edge the strength and the ellipse follow the whole box, not its visible part.
Small faces get a larger margin (`box_scales`): at least `SMALL_FACE_SCALE` up to `SMALL_FACE_PX[0]`
pixels, easing to `scale` at `SMALL_FACE_PX[1]`. A small face's box is the least precise, and what
identifies it once its features are gone is its outline (hair, jaw), which a 1.3 ellipse leaves.
`bench/leaks.py` on the 720p street crowd (faces of 20-35 px): blurred faces a face recogniser still
matched to themselves 13 -> 10 of 37, of those a second detector confirms and above the recogniser's
floor 3 -> 1 of 20; all 9 shared clips 82 -> 80 of 424 and 5 -> 4 of 317 (the sitcom clip's
borderline 0.45 cases moved 1 the other way).
Only the region of interest is touched; pixels outside the (scaled, ellipse or box) shape are kept.
The ELLIPSE is inscribed in the scaled box: it covers all of the detection box only from scale
sqrt(2) up; at the default 1.3 it follows the oval of the face and leaves the box's corners.
Pixelation keeps a face's coarse layout and is the weaker choice; BLUR is the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

__all__ = ["Mode", "RedactError", "RedactOptions", "Shape", "box_scales", "mark", "redact", "redact_planes"]

BLUR_PIXELS = 16  # the blur works on a copy this many pixels across the scaled box (then upscaled)
BLUR_SIGMA = 0.2  # gaussian sigma as a fraction of the scaled box's long side
PIXELATE_BLOCKS = 10  # blocks across the scaled box's long side
SMALL_FACE_SCALE = 1.5  # the least scale of a face up to SMALL_FACE_PX[0] pixels (box long side) ...
SMALL_FACE_PX = (32, 48)  # ... easing to RedactOptions.scale at SMALL_FACE_PX[1] (the ellipse still grows with the face)
KEPT_COLOUR = (0, 255, 0)  # RGB: consented face, left visible
REDACTED_COLOUR = (255, 0, 0)  # RGB: face redacted


class RedactError(ValueError):
    """Invalid redaction input: options, frame layout, box array, or a mismatched `kept`/`labels`."""


class Mode(StrEnum):
    BLUR = "blur"
    PIXELATE = "pixelate"
    SOLID = "solid"


class Shape(StrEnum):
    ELLIPSE = "ellipse"
    BOX = "box"


@dataclass(frozen=True)
class RedactOptions:
    """How faces are hidden; `scale` enlarges every box around its centre before redaction."""

    mode: Mode = Mode.BLUR
    shape: Shape = Shape.ELLIPSE
    scale: float = 1.3

    def __post_init__(self) -> None:
        # Accept the plain strings a CLI or a JSON event carries; fail on anything else.
        try:
            object.__setattr__(self, "mode", Mode(self.mode))
            object.__setattr__(self, "shape", Shape(self.shape))
        except ValueError as error:
            raise RedactError(f"{error}; choose mode from {list(Mode)} and shape from {list(Shape)}") from None
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise RedactError(f"scale must be a positive number, got {self.scale}")


def redact(frame: np.ndarray, boxes: np.ndarray, options: RedactOptions = RedactOptions()) -> None:
    """Anonymise every box of `boxes` (N, >=4: x1, y1, x2, y2 in pixels) in `frame` (H, W, 3 uint8), in place.

    Boxes may reach outside the frame; boxes with nothing inside it are skipped. N = 0 is a no-op.
    """
    _check_frame(frame)
    arr = _as_boxes(boxes)
    _hide(frame, arr, _scales(arr, options.scale), options, fill=0)


def box_scales(boxes: np.ndarray, scale: float) -> np.ndarray:
    """The scale each box (N, >=4, frame pixels) is redacted at: `scale`, raised for small faces to
    `SMALL_FACE_SCALE` up to `SMALL_FACE_PX[0]` and easing back to `scale` at `SMALL_FACE_PX[1]`."""
    return _scales(_as_boxes(boxes), scale)


def _scales(arr: np.ndarray, scale: float) -> np.ndarray:
    """`box_scales` of boxes already checked by `_as_boxes` (once a frame, not once a plane)."""
    long_side = np.abs(arr[:, 2:] - arr[:, :2]).max(axis=1) if len(arr) else np.zeros(0)
    small, large = SMALL_FACE_PX
    weight = np.clip((large - long_side) / (large - small), 0.0, 1.0)
    return np.maximum(scale, scale + (SMALL_FACE_SCALE - scale) * weight)


def redact_planes(
    y: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    boxes: np.ndarray,
    options: RedactOptions = RedactOptions(),
    *,
    black: int = 16,
) -> None:
    """`redact` on the planes of a 4:2:0 YUV frame, in place: Y (H, W), U and V (H/2, W/2); boxes
    in Y pixels.

    Blurring, pixelation and the ellipse's edge are linear, so applying them to Y, U and V apiece
    (the chroma planes with the boxes halved) hides a face as they would in RGB, without converting
    the frame: every pixel outside the faces stays as it was decoded. SOLID paints Y at `black`
    (16 for the usual limited range, 0 for full-range video) and U, V at 128 (no colour).
    """
    for plane in (y, u, v):
        _check_plane(plane)
    if u.shape != v.shape or u.shape != ((y.shape[0] + 1) // 2, (y.shape[1] + 1) // 2):
        raise RedactError(f"4:2:0 planes need U and V of half the size of Y {y.shape}, got {u.shape} and {v.shape}")
    arr = _as_boxes(boxes)
    scales = _scales(arr, options.scale)  # from the face's size in Y pixels, for all three planes
    _hide(y, arr, scales, options, black)
    _hide(u, arr / 2, scales, options, 128)
    _hide(v, arr / 2, scales, options, 128)


def _hide(image: np.ndarray, boxes: np.ndarray, scales: np.ndarray, options: RedactOptions, fill: int) -> None:
    """Redaction proper, on an (H, W) plane or (H, W, C) image, each box at its scale; SOLID paints `fill`."""
    for _, (x1, y1, x2, y2), (cx, cy, w, h) in _regions(boxes, scales, image.shape):
        roi = image[y1:y2, x1:x2]
        long_side = max(w, h)  # of the whole scaled box: strength does not drop at the frame edge
        if options.mode is Mode.SOLID:
            hidden = np.full_like(roi, fill)
        elif options.mode is Mode.PIXELATE:
            # Blocks of at least 2 px: a tiny face still loses its pixels rather than being kept as is.
            hidden = _up(_down(roi, max(long_side / PIXELATE_BLOCKS, 2)), roi, cv2.INTER_NEAREST)
        else:
            # Blurring a small copy is as strong (sigma scales with the copy) at a fixed, small cost.
            # (cv2.sepFilter2D with the same kernel is 4-10x faster at this size, but its rounding moves
            # 3% of the blurred pixels by one level, which flips borderline cases of bench/leaks.py
            # towards "still identifiable": 82 -> 85 of 424. Kept GaussianBlur.)
            factor = max(int(long_side / BLUR_PIXELS), 1)
            small = cv2.GaussianBlur(
                _down(roi, factor), (0, 0), BLUR_SIGMA * long_side / factor, borderType=cv2.BORDER_REPLICATE
            )
            hidden = _up(small, roi, cv2.INTER_LINEAR)
        if options.shape is Shape.BOX:
            roi[...] = hidden
        else:
            mask = np.zeros(roi.shape[:2], np.uint8)
            # Fixed point (4 fractional bits): the ellipse follows the sub-pixel box, a clipped one included.
            centre = (round((cx - x1) * 16), round((cy - y1) * 16))
            axes = (round(w * 8), round(h * 8))
            cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, thickness=-1, lineType=cv2.LINE_8, shift=4)
            cv2.copyTo(hidden, mask, roi)  # writes into the frame through the ROI view (layout checked)


def mark(
    frame: np.ndarray,
    boxes: np.ndarray,
    kept: Sequence[bool],
    labels: Sequence[str] | None = None,
) -> None:
    """Debug overlay (`--mark-faces`): outline each box as given, green if `kept` (consented) else red.

    `labels`, when given, are written above each box (inside it at the frame's top edge). In place.
    """
    _check_frame(frame)
    count = len(_as_boxes(boxes))
    if len(kept) != count or (labels is not None and len(labels) != count):
        raise RedactError(f"{count} boxes need {count} kept flags (and labels if any), got {len(kept)}")
    thickness = max(2, round(min(frame.shape[:2]) / 360))  # visible after encoding at any resolution
    font_scale = thickness / 3
    for i, (x1, y1, x2, y2), _ in _regions(boxes, 1.0, frame.shape):
        colour = KEPT_COLOUR if kept[i] else REDACTED_COLOUR
        cv2.rectangle(frame, (x1, y1), (x2 - 1, y2 - 1), colour, thickness)
        if labels is not None and labels[i]:
            (_, text_h), _ = cv2.getTextSize(labels[i], cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
            y = y1 - thickness if y1 - thickness - text_h >= 0 else y1 + text_h + thickness
            cv2.putText(frame, labels[i], (x1, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, colour, thickness)


def _check_frame(frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise RedactError(f"frame must be an (H, W, 3) uint8 array, got {getattr(frame, 'shape', type(frame))}")
    if not frame.flags.writeable:
        raise RedactError("frame is read-only: redaction works in place, pass a writeable copy")
    # OpenCV writes in place only into row-major pixels with packed channels (any positive row step).
    if frame.strides[1:] != (3, 1) or frame.strides[0] < 3 * frame.shape[1]:
        raise RedactError(f"frame strides {frame.strides} cannot be drawn on in place; pass a C-ordered array")


def _check_plane(plane: np.ndarray) -> None:
    if not isinstance(plane, np.ndarray) or plane.dtype != np.uint8 or plane.ndim != 2:
        raise RedactError(f"a plane must be an (H, W) uint8 array, got {getattr(plane, 'shape', type(plane))}")
    if not plane.flags.writeable:
        raise RedactError("plane is read-only: redaction works in place, pass a writeable one")
    if plane.strides[1] != 1 or plane.strides[0] < plane.shape[1]:
        raise RedactError(f"plane strides {plane.strides} cannot be drawn on in place; pass row-major pixels")


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] < 4 or not np.isfinite(arr[:, :4]).all():
        raise RedactError(f"boxes must be a finite (N, 4+) array of x1, y1, x2, y2, got shape {arr.shape}")
    return arr[:, :4]


def _regions(boxes: np.ndarray, scale: float | np.ndarray, shape: tuple[int, ...]) -> list[tuple[int, tuple, tuple]]:
    """(index, clipped integer bounds x1 y1 x2 y2, whole scaled box cx cy w h) of boxes inside the
    frame; `scale` for all boxes or one per box.

    Bounds are rounded outwards so that a face is never cut short by a pixel.
    """
    arr = _as_boxes(boxes)
    centres = (arr[:, :2] + arr[:, 2:]) / 2
    sizes = np.abs(arr[:, 2:] - arr[:, :2]) * np.reshape(scale, (-1, 1))
    limits = np.array([shape[1], shape[0]])
    lo = np.clip(np.floor(centres - sizes / 2), 0, limits).astype(int)
    hi = np.clip(np.ceil(centres + sizes / 2), 0, limits).astype(int)
    inside = np.flatnonzero((hi > lo).all(axis=1))
    geometry = np.concatenate([centres, sizes], axis=1)
    return [(int(i), (*lo[i].tolist(), *hi[i].tolist()), tuple(geometry[i].tolist())) for i in inside]


def _down(roi: np.ndarray, factor: float) -> np.ndarray:
    """`roi` shrunk by the whole number `int(factor)` with area averaging (at least 1 x 1).

    Whole-number ratios take OpenCV's fast INTER_AREA path (about 5x faster than a fractional ratio);
    the few rows and columns past the last whole block are left out of the average, not of the output.
    """
    k = max(1, int(factor))
    if k == 1:
        return roi.copy()
    h, w = roi.shape[:2]
    sw, sh = max(1, w // k), max(1, h // k)
    return cv2.resize(roi[: min(h, sh * k), : min(w, sw * k)], (sw, sh), interpolation=cv2.INTER_AREA)


def _up(small: np.ndarray, roi: np.ndarray, interpolation: int) -> np.ndarray:
    """`small` resized back to the size of `roi`."""
    return cv2.resize(small, (roi.shape[1], roi.shape[0]), interpolation=interpolation)
