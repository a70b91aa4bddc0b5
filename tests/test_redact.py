"""Behaviour of per-frame redaction (functions/limelight/redact.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from limelight.redact import (
    KEPT_COLOUR,
    REDACTED_COLOUR,
    SMALL_FACE_PX,
    SMALL_FACE_SCALE,
    Mode,
    RedactError,
    RedactOptions,
    Shape,
    box_scales,
    mark,
    redact,
    redact_planes,
)

ALL_OPTIONS = [RedactOptions(mode=m, shape=s) for m in Mode for s in Shape]


def noise_frame(height: int = 360, width: int = 480, seed: int = 0) -> np.ndarray:
    """Per-pixel random RGB: every pixel is detail a redaction must remove."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def laplacian_std(image: np.ndarray) -> float:
    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(cv2.Laplacian(gray, cv2.CV_32F).std())


def boxes(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.array([[*r, 0.9] for r in rows], np.float32).reshape(-1, 5)


@pytest.mark.parametrize("options", ALL_OPTIONS, ids=lambda o: f"{o.mode}-{o.shape}")
def test_pixels_outside_the_scaled_box_are_unchanged(options):
    # GIVEN a textured frame and a 100 px face, which scale 1.3 grows to x, y in [85, 215)
    frame = noise_frame()
    original = frame.copy()
    # WHEN it is redacted
    redact(frame, boxes((100, 100, 200, 200)), options)
    # THEN the scaled box changed and nothing outside it did
    inside = np.zeros(frame.shape[:2], bool)
    inside[85:215, 85:215] = True
    assert (frame[~inside] == original[~inside]).all()
    assert (frame[inside] != original[inside]).any()


@pytest.mark.parametrize("mode", [Mode.BLUR, Mode.PIXELATE])
@pytest.mark.parametrize("shape", list(Shape))
def test_blur_and_pixelate_remove_fine_detail(mode, shape):
    # GIVEN a 120 px face of random noise
    frame = noise_frame()
    before = laplacian_std(frame[100:220, 100:220])
    # WHEN it is blurred or pixelated
    redact(frame, boxes((100, 100, 220, 220)), RedactOptions(mode=mode, shape=shape))
    # THEN the face keeps < 10% of its detail: all of the box, or the part of it inside the ellipse
    # (which, at scale 1.3 < sqrt(2), leaves out the box's corners)
    face = np.s_[100:220, 100:220] if shape is Shape.BOX else np.s_[110:210, 110:210]
    assert laplacian_std(frame[face]) < 0.1 * before


def test_ellipse_keeps_the_corners_of_the_region_and_box_replaces_them():
    # GIVEN the same textured frame twice
    ellipse, box = noise_frame(), noise_frame()
    original = noise_frame()
    # WHEN one is redacted with an ellipse and one with a box
    redact(ellipse, boxes((100, 100, 200, 200)), RedactOptions(shape=Shape.ELLIPSE))
    redact(box, boxes((100, 100, 200, 200)), RedactOptions(shape=Shape.BOX))
    # THEN the 10 x 10 corners of the 130 px region are original in the ellipse case only
    corners = (np.s_[85:95, 85:95], np.s_[85:95, 205:215], np.s_[205:215, 85:95], np.s_[205:215, 205:215])
    for corner in corners:
        assert (ellipse[corner] == original[corner]).all()
        assert (box[corner] != original[corner]).any()
    # AND the centre is redacted in both
    assert (ellipse[140:160, 140:160] == box[140:160, 140:160]).all()


def test_solid_fills_the_region_with_black():
    # GIVEN a textured frame
    frame = noise_frame()
    # WHEN a face is redacted as a solid box
    redact(frame, boxes((100, 100, 200, 200)), RedactOptions(mode=Mode.SOLID, shape=Shape.BOX))
    # THEN the whole scaled region is one value, black
    assert np.unique(frame[85:215, 85:215]).tolist() == [0]


@pytest.mark.parametrize("size", [24, 240])
def test_small_and_large_faces_are_equally_anonymised(size):
    # GIVEN the same 16 x 16 random "face" drawn at 24 px and at 240 px
    pattern = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    frame = np.full((400, 400, 3), 128, np.uint8)
    frame[50 : 50 + size, 50 : 50 + size] = cv2.resize(pattern, (size, size), interpolation=cv2.INTER_NEAREST)
    face = boxes((50, 50, 50 + size, 50 + size))
    blurred, pixelated = frame.copy(), frame.copy()
    # WHEN blurred and pixelated
    redact(blurred, face, RedactOptions(mode=Mode.BLUR, shape=Shape.BOX))
    redact(pixelated, face, RedactOptions(mode=Mode.PIXELATE, shape=Shape.BOX))
    # THEN at the pattern's own resolution the blurred face hardly correlates with the original
    def at_16(image: np.ndarray) -> np.ndarray:
        face_pixels = image[50 : 50 + size, 50 : 50 + size]
        return cv2.resize(face_pixels, (16, 16), interpolation=cv2.INTER_AREA).astype(float).ravel()

    assert abs(np.corrcoef(at_16(frame), at_16(blurred))[0, 1]) < 0.3
    # AND the pixelated region has 10 blocks across whatever the face size (run lengths along a row
    # of the scaled box: 1.3 of a large face, 1.5 of a small one)
    margin = int((box_scales(face, 1.3)[0] - 1) / 2 * size)
    row = pixelated[50 + size // 2, 50 - margin : 50 + size + margin].astype(int)
    changes = np.flatnonzero(np.abs(np.diff(row, axis=0)).sum(axis=1))
    assert len(changes) + 1 == 10


def test_small_faces_get_a_larger_margin_that_eases_back_as_they_grow():
    sides = np.arange(8, 120, 0.5)
    faces = np.stack([np.zeros_like(sides), np.zeros_like(sides), sides, sides * 1.2], axis=1)  # long side 1.2x
    scales = box_scales(faces, 1.3)
    long_side = sides * 1.2
    # up to 32 px a face gets 1.5, from 48 px the user's scale, in between a blend ...
    assert (scales[long_side <= SMALL_FACE_PX[0]] == SMALL_FACE_SCALE).all()
    assert (scales[long_side >= SMALL_FACE_PX[1]] == 1.3).all()
    assert ((scales >= 1.3) & (scales <= SMALL_FACE_SCALE)).all()
    # ... so the redacted ellipse still grows with the face (no jump as a track's face grows)
    assert (np.diff(long_side * scales) > 0).all()
    # a larger scale asked for is kept for every face
    assert (box_scales(faces, 1.8) == 1.8).all()


def test_a_small_face_is_redacted_with_its_outline():
    # GIVEN a 24 px face in a textured frame
    frame = noise_frame()
    original = frame.copy()
    # WHEN it is redacted at the default scale
    redact(frame, boxes((100, 100, 124, 124)), RedactOptions(shape=Shape.BOX))
    # THEN the redaction reaches 1.5 x its size (x, y in [94, 130)), beyond the 1.3 x ([96.4, 127.6)) that
    # left the hair and jaw line a face recogniser still matches; and nothing further
    changed = (frame != original).any(axis=2)
    assert changed[94:130, 94:130].mean() > 0.95 and changed[95, 112] and changed[129, 112]
    outside = np.ones(changed.shape, bool)
    outside[94:130, 94:130] = False
    assert not changed[outside].any()


def test_planes_take_a_small_faces_margin_from_its_size_in_luma():
    # GIVEN a 40 px face (scale 1.4 in luma pixels) as I420 planes
    rgb = noise_frame(120, 160, seed=5)
    i420 = _i420(rgb)
    before = i420.copy()
    # WHEN it is redacted on the planes
    redact_planes(*_split(i420), boxes((60, 40, 100, 80)), RedactOptions(shape=Shape.BOX))
    # THEN the chroma region is half the luma one (x in [52, 108) / 2), not the larger margin a
    # 20 px chroma box would get on its own (1.5: x in [25, 55))
    _, u0, _ = _split(before)
    _, u1, _ = _split(i420)
    columns = np.flatnonzero((u1 != u0).any(axis=0))
    assert (columns.min(), columns.max()) == (26, 53)


def test_boxes_partly_or_wholly_outside_the_frame():
    # GIVEN a face centred on the top-left corner and a face entirely off-frame
    frame = noise_frame()
    original = frame.copy()
    # WHEN they are redacted with a solid ellipse
    redact(frame, boxes((-40, -40, 40, 40), (1000, 1000, 1100, 1100)), RedactOptions(mode=Mode.SOLID))
    # THEN the visible quarter is filled up to the frame corner (the ellipse is that of the whole box)
    assert (frame[:20, :20] == 0).all()
    # AND the frame beyond the scaled box (52 px) is untouched
    assert (frame[53:, :] == original[53:, :]).all() and (frame[:, 53:] == original[:, 53:]).all()


@pytest.mark.parametrize("empty", [np.zeros((0, 5), np.float32), np.zeros((0, 4)), []])
def test_no_boxes_is_a_no_op(empty):
    # GIVEN a frame and no faces
    frame = noise_frame()
    original = frame.copy()
    # WHEN redacted and marked
    redact(frame, empty, RedactOptions())
    mark(frame, empty, kept=[])
    # THEN nothing changed
    assert (frame == original).all()


def test_mark_outlines_kept_faces_in_green_and_redacted_faces_in_red():
    # GIVEN a black frame with a consented face and a redacted one
    frame = np.zeros((360, 640, 3), np.uint8)
    # WHEN marked with labels
    mark(frame, boxes((100, 100, 200, 200), (300, 100, 400, 200)), kept=[True, False], labels=["alice", "#7"])
    # THEN each box edge has its colour, the inside is untouched, and the labels are drawn above
    assert tuple(frame[150, 100]) == KEPT_COLOUR and tuple(frame[100, 150]) == KEPT_COLOUR
    assert tuple(frame[150, 399]) == REDACTED_COLOUR and tuple(frame[199, 350]) == REDACTED_COLOUR
    assert not frame[110:190, 110:190].any()
    assert (frame[80:98, 100:200] == KEPT_COLOUR).all(axis=2).any()
    assert (frame[80:98, 300:400] == REDACTED_COLOUR).all(axis=2).any()


def test_invalid_inputs_raise_redact_errors():
    # GIVEN / WHEN / THEN unknown modes, bad scales, bad frames, bad boxes and mismatched flags are refused
    assert RedactOptions(mode="pixelate", shape="box").mode is Mode.PIXELATE  # strings from a CLI or event
    with pytest.raises(RedactError, match="mode"):
        RedactOptions(mode="smudge")
    with pytest.raises(RedactError, match="scale"):
        RedactOptions(scale=0)
    with pytest.raises(RedactError, match="uint8"):
        redact(np.zeros((10, 10, 3), np.float32), boxes((0, 0, 5, 5)))
    with pytest.raises(RedactError, match="C-ordered"):
        redact(noise_frame()[::-1], boxes((0, 0, 5, 5)))
    with pytest.raises(RedactError, match="finite"):
        redact(noise_frame(), np.array([[np.nan, 0, 5, 5]]))
    with pytest.raises(RedactError, match="kept"):
        mark(noise_frame(), boxes((0, 0, 5, 5)), kept=[])


# ---------------------------------------------------------------- 4:2:0 planes (video frames)

def _i420(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)


def _split(i420: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h = i420.shape[0] * 2 // 3
    chroma = i420[h:].reshape(2, h // 2, i420.shape[1] // 2)
    return i420[:h], chroma[0], chroma[1]


@pytest.mark.parametrize("options", ALL_OPTIONS, ids=lambda o: f"{o.mode}-{o.shape}")
def test_redacting_the_planes_hides_the_face_as_redacting_rgb_does(options):
    # GIVEN a smooth frame with a noisy 100 px "face", as RGB and as I420 planes
    rgb = np.full((360, 480, 3), 120, np.uint8)
    rgb[100:200, 100:200] = noise_frame(100, 100, seed=3)
    i420 = _i420(rgb)
    before = i420.copy()
    # WHEN the face is redacted on the planes, and on the RGB frame
    redact_planes(*_split(i420), boxes((100, 100, 200, 200)), options)
    redact(rgb, boxes((100, 100, 200, 200)), options)
    # THEN luma outside the scaled box (x, y in [85, 215)) and chroma outside its half are untouched...
    y0, u0, _ = _split(before)
    y1, u1, _ = _split(i420)
    outside = np.ones(y1.shape, bool)
    outside[85:215, 85:215] = False
    assert np.array_equal(y1[outside], y0[outside])
    outside_c = np.ones(u1.shape, bool)
    outside_c[42:108, 42:108] = False
    assert np.array_equal(u1[outside_c], u0[outside_c])
    # ...and the face, converted back to RGB, is as hidden as the RGB redaction left it
    back = cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)
    assert laplacian_std(back[110:190, 110:190]) < 0.2 * laplacian_std(noise_frame(80, 80, seed=3))
    if options.mode is not Mode.PIXELATE:  # chroma blocks lie on their own grid: same detail, other cells
        coarse = [cv2.resize(f[110:190, 110:190], (8, 8), interpolation=cv2.INTER_AREA).astype(int) for f in (back, rgb)]
        assert np.abs(coarse[0] - coarse[1]).mean() < 4


def test_solid_on_planes_paints_the_video_black_level():
    y, u, v = _split(_i420(noise_frame()))
    redact_planes(y, u, v, boxes((100, 100, 200, 200)), RedactOptions(mode=Mode.SOLID, shape=Shape.BOX))
    assert (y[90:210, 90:210] == 16).all() and (u[46:104, 46:104] == 128).all() and (v[46:104, 46:104] == 128).all()
    redact_planes(y, u, v, boxes((100, 100, 200, 200)), RedactOptions(mode=Mode.SOLID, shape=Shape.BOX), black=0)
    assert (y[90:210, 90:210] == 0).all()


def test_planes_of_wrong_sizes_are_refused():
    y, u, v = _split(_i420(noise_frame()))
    with pytest.raises(RedactError):
        redact_planes(y, u[:, :-1], v, boxes((10, 10, 50, 50)))
    with pytest.raises(RedactError):
        redact_planes(y[:, :, None], u, v, boxes((10, 10, 50, 50)))
