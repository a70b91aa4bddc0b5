"""Consent gallery and per-track identity decisions (face_recognition / dlib embeddings).

Privacy comes first: a face is kept unblurred only on a confident, consistent match to a person
who consented. Whenever the evidence is missing, weak or ambiguous, the face stays blurred.

- `load_gallery(folder)` builds the consent `Gallery` from a folder of photos (one face each).
- `encode_face(frame, box)` embeds a face found by LimeLight's detector (tight RetinaFace box).
- `Recognizer.match(encoding)` matches one embedding against the gallery.
- `IdentityVote` accumulates the matches of one face track and gives the track's `Decision`.

Embeddings are biometric data: they are never logged; only counts and a fingerprint are.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import cv2
import face_recognition
import numpy as np
from PIL import Image, ImageOps
from pillow_heif import register_heif_opener

from limelight.errors import LimeLightError, OutputError
from limelight.formats import scratch_path
from limelight.video import coded_boxes, upright_boxes

if TYPE_CHECKING:
    from limelight.video import Frame

__all__ = [
    "Decision",
    "FaceDetector",
    "Gallery",
    "IdentityVote",
    "KnownFacesError",
    "Match",
    "PhotoFace",
    "Recognizer",
    "RecognizerOptions",
    "encode_crop",
    "encode_face",
    "face_crop",
    "encode_photo",
    "load_gallery",
]

logger = logging.getLogger(__name__)

ENCODING_SIZE = 128
# HEIC / HEIF: what iPhones take photos in (read through pillow-heif, registered with Pillow below).
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".heic", ".heif", ".webp", ".avif", ".jfif"})
register_heif_opener()
_SUFFIX_LIST = "/".join(sorted(PHOTO_SUFFIXES))

# Faces smaller than this (short side of the detector box, in pixels) are not encoded: dlib's
# 150x150 face chip would be upscaled from almost nothing and the embedding is unreliable.
MIN_FACE_PX = 20
# A gallery face must be larger: it is the reference every video face is compared with.
MIN_GALLERY_FACE_PX = 40
# A photo with several faces is accepted only when the largest face has at least this many times
# the area of the next one (a portrait with a small background face); otherwise it is refused,
# because a group photo in the consent folder would whitelist a bystander.
DOMINANT_FACE_RATIO = 2.0
# HOG runs on a copy whose long side is at most this (upsampled once inside dlib, so faces down
# to ~40 px at this scale, i.e. ~4 % of the long side, are found); full-size photos cost seconds.
HOG_MAX_SIDE = 1024
# The fallbacks (HOG on a padded copy, then dlib's CNN detector) run on a copy whose long side is
# at most this: the CNN costs ~0.2-0.8 s there on one core and ~25 s on a 1-2 MP image.
FALLBACK_MAX_SIDE = 400
# Padding added on each side of a tight crop, as a fraction of its long side: HOG's 80x80 window
# needs some background around the face, which a tight ~100-200 px crop does not have.
FALLBACK_PAD = 0.5

# RetinaFace box (tight, taller than wide, WIDER FACE style) -> the square box dlib's HOG detector
# gives and its landmark predictor was trained on. Fitted on 136 HOG/RetinaFace pairs (WIDER val
# Interview/Family_Group and clip frames): HOG side = 0.96 * sqrt(w * h) (IQR +-6 %), centre
# 0.053 * h lower. With the conversion the embedding moves 0.055 (median) from the HOG-box one,
# without it 0.091 (max 0.22 vs 0.50).
_HOG_SIDE_PER_SQRT_AREA = 0.96
_HOG_CENTRE_SHIFT_PER_HEIGHT = 0.053
# Encoding works on a crop of the frame around the face: the landmark predictor and the 150x150
# chip (25 % padding) never look further than ~1 face side away; cropping keeps the cost
# independent of the frame size and gives dlib the contiguous array it requires.
_CROP_MARGIN_PER_SIDE = 1.0

_FORMAT_VERSION = 1


class KnownFacesError(LimeLightError):
    """The consent gallery cannot be built or loaded; the message names the file or folder."""


class FaceDetector(StrEnum):
    """Which detector found a gallery photo's face: HOG, else the fallbacks in this order."""

    HOG = "hog"
    HOG_PADDED = "hog-padded"
    CNN = "cnn"


@dataclass(frozen=True, eq=False)
class Gallery:
    """The consent gallery: one 128-d encoding per photo, labelled with the person's name.

    `names[i]`, `sources[i]` (photo path relative to the gallery folder) and `encodings[i]`
    describe photo i. `encodings` is a read-only (K, 128) float64 array. `fingerprint` is a short
    hash of names and encodings, fit for logs and reports (the encodings themselves never are).
    """

    names: tuple[str, ...]
    encodings: np.ndarray
    sources: tuple[str, ...] = ()
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        encodings = np.array(self.encodings, dtype=np.float64).reshape(-1, ENCODING_SIZE)
        names = tuple(str(name) for name in self.names)
        sources = tuple(str(source) for source in self.sources) or ("",) * len(names)
        if len(names) != len(encodings) or len(sources) != len(encodings):
            raise ValueError(
                f"gallery needs one name and source per encoding: {len(names)} names, "
                f"{len(sources)} sources, {len(encodings)} encodings"
            )
        if not np.all(np.isfinite(encodings)):
            raise ValueError("gallery encodings must be finite")
        encodings.flags.writeable = False
        digest = hashlib.sha256("\0".join(names).encode())
        digest.update(encodings.tobytes())
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "encodings", encodings)
        object.__setattr__(self, "fingerprint", digest.hexdigest()[:16])

    @property
    def count(self) -> int:
        """Number of encodings (photos) in the gallery."""
        return len(self.names)

    @property
    def persons(self) -> tuple[str, ...]:
        """Distinct person names, sorted."""
        return tuple(sorted(set(self.names)))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the gallery to `path` (an `.npz`, written atomically) and return the path.

        Raises `OutputError` naming the file when it cannot be written.
        """
        path = Path(path)
        tmp = scratch_path(path)
        try:
            with tmp.open("wb") as stream:
                np.savez(
                    stream,
                    version=np.int64(_FORMAT_VERSION),
                    names=np.array(self.names, dtype=str),
                    sources=np.array(self.sources, dtype=str),
                    encodings=self.encodings,
                )
            os.replace(tmp, path)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"cannot write gallery {path}: {error.strerror or error}") from error
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Gallery:
        """Read a gallery written by `save`.

        Raises `KnownFacesError` naming the file when it is missing or not a gallery file.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                version = int(data["version"])
                if version != _FORMAT_VERSION:
                    raise KnownFacesError(
                        f"gallery {path} has format version {version}, expected {_FORMAT_VERSION}"
                    )
                names, sources, encodings = data["names"], data["sources"], data["encodings"]
                if encodings.ndim != 2 or encodings.shape[1] != ENCODING_SIZE:
                    raise KnownFacesError(
                        f"gallery {path} holds encodings of shape {encodings.shape}, "
                        f"expected (K, {ENCODING_SIZE})"
                    )
                return cls(
                    names=tuple(names.tolist()),
                    encodings=encodings,
                    sources=tuple(sources.tolist()),
                )
        except FileNotFoundError as error:
            raise KnownFacesError(f"gallery file not found: {path}") from error
        except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as error:
            raise KnownFacesError(
                f"cannot read gallery {path}: not a LimeLight gallery file ({type(error).__name__})"
            ) from error


@dataclass(frozen=True, eq=False)
class PhotoFace:
    """The face chosen in one gallery photo: its encoding, box (top, right, bottom, left) in the
    photo's pixels after EXIF rotation, and the detector that found it."""

    encoding: np.ndarray
    location: tuple[int, int, int, int]
    detector: FaceDetector


def _read_photo(path: Path) -> np.ndarray:
    """RGB uint8 pixels of a photo, EXIF orientation applied, transparency flattened onto white."""
    try:
        # face_recognition sets Pillow's LOAD_TRUNCATED_IMAGES globally, so decoding alone would
        # accept a truncated upload (grey lower part); verify() still reports truncation.
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            transparent = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            if transparent:
                rgba = image.convert("RGBA")
                flat = Image.new("RGB", rgba.size, (255, 255, 255))
                flat.paste(rgba, mask=rgba.getchannel("A"))
                image = flat
            return np.asarray(image.convert("RGB"))
    except PermissionError as error:
        raise KnownFacesError(f"cannot read photo {path}: permission denied") from error
    except Image.DecompressionBombError as error:
        raise KnownFacesError(f"cannot read photo {path}: too many pixels for a consent photo (a portrait of a few megapixels is enough)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise KnownFacesError(f"cannot read photo {path}: not a readable JPEG/PNG/HEIC/WebP/AVIF image") from error


def _scaled(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """`image` shrunk so its long side is at most `max_side` (never enlarged), and that scale."""
    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def _detect_photo_faces(image: np.ndarray) -> tuple[np.ndarray, FaceDetector]:
    """Face boxes (N, 4) as float (top, right, bottom, left) in `image` pixels, and the detector.

    HOG first; when it finds nothing, HOG again on a padded copy (tight crops), then dlib's CNN
    detector on a small copy. A whole-image box is never assumed: it would accept any small
    picture (a logo, noise) as a consented face.
    """
    hog_image, scale = _scaled(image, HOG_MAX_SIDE)
    boxes = face_recognition.face_locations(hog_image, number_of_times_to_upsample=1, model="hog")
    if boxes:
        return np.array(boxes, dtype=float) / scale, FaceDetector.HOG

    small, scale = _scaled(image, FALLBACK_MAX_SIDE)
    pad = round(FALLBACK_PAD * max(small.shape[:2]))
    padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    boxes = face_recognition.face_locations(padded, number_of_times_to_upsample=1, model="hog")
    if boxes:
        return (np.array(boxes, dtype=float) - pad) / scale, FaceDetector.HOG_PADDED

    boxes = face_recognition.face_locations(small, number_of_times_to_upsample=0, model="cnn")
    if boxes:
        return np.array(boxes, dtype=float) / scale, FaceDetector.CNN
    return np.empty((0, 4)), FaceDetector.HOG


def encode_photo(path: str | os.PathLike[str]) -> PhotoFace:
    """Encode the one face of a gallery photo.

    Rules (each failure raises `KnownFacesError` with a one-line message naming the file):
    the photo must be a readable JPEG/PNG/HEIC; it must contain a face (see `_detect_photo_faces`);
    with several faces, the largest must be at least `DOMINANT_FACE_RATIO` times the area of the
    next, otherwise the photo is refused (a group photo would whitelist a bystander); the chosen
    face must be at least `MIN_GALLERY_FACE_PX` pixels on its short side.
    """
    path = Path(path)
    image = _read_photo(path)
    if min(image.shape[:2]) < MIN_GALLERY_FACE_PX:
        raise KnownFacesError(
            f"gallery photo {path} is too small ({image.shape[1]} x {image.shape[0]} px): "
            f"use a photo whose face is at least {MIN_GALLERY_FACE_PX} px"
        )
    try:
        boxes, detector = _detect_photo_faces(image)
    except RuntimeError as error:  # dlib, on pictures it cannot take
        raise KnownFacesError(f"no face found in gallery photo {path}: dlib cannot read it ({type(error).__name__})") from error
    if len(boxes) == 0:
        raise KnownFacesError(
            f"no face found in gallery photo {path}: "
            "use a photo showing one person's face, frontal and well lit"
        )
    heights = boxes[:, 2] - boxes[:, 0]
    widths = boxes[:, 1] - boxes[:, 3]
    areas = heights * widths
    order = np.argsort(-areas)
    if len(boxes) > 1 and areas[order[0]] < DOMINANT_FACE_RATIO * areas[order[1]]:
        raise KnownFacesError(
            f"gallery photo {path} shows {len(boxes)} faces and none is clearly the main one: "
            "use a photo of the consenting person alone (a group photo would unblur the others)"
        )
    chosen = order[0]
    face_px = min(heights[chosen], widths[chosen])
    if face_px < MIN_GALLERY_FACE_PX:
        raise KnownFacesError(
            f"the face in gallery photo {path} is too small ({face_px:.0f} px, "
            f"needs {MIN_GALLERY_FACE_PX}): use a closer photo"
        )
    top, right, bottom, left = (int(round(v)) for v in boxes[chosen])
    location = (top, right, bottom, left)
    encodings = face_recognition.face_encodings(
        image, known_face_locations=[location], num_jitters=1
    )
    encoding = np.asarray(encodings[0], dtype=np.float64)
    return PhotoFace(encoding=encoding, location=location, detector=detector)


def _gallery_photos(folder: Path) -> list[tuple[str, Path]]:
    """(person name, photo path) for every photo, sorted: loose photos are named by their stem,
    photos in a sub-folder by the sub-folder. Hidden entries are skipped."""

    def visible(directory: Path) -> list[Path]:
        return sorted(entry for entry in directory.iterdir() if not entry.name.startswith("."))

    def photos_in(directory: Path) -> list[Path]:
        return [
            entry
            for entry in visible(directory)
            if entry.is_file() and entry.suffix.lower() in PHOTO_SUFFIXES
        ]

    found = [(photo.stem, photo) for photo in photos_in(folder)]
    for sub in (entry for entry in visible(folder) if entry.is_dir()):
        photos = photos_in(sub)
        if not photos:
            raise KnownFacesError(f"person folder {sub} contains no {_SUFFIX_LIST} photo")
        found.extend((sub.name, photo) for photo in photos)
    return found


def load_gallery(*paths: str | os.PathLike[str]) -> Gallery:
    """Build the consent gallery from folders of photos and / or single photos.

    A folder's layout: `folder/<person>.jpg|.png|.heic|...` (`PHOTO_SUFFIXES`, case-insensitive;
    the person's name is the file stem) and/or `folder/<person>/<any>.jpg|...` (one sub-folder per
    person, any number of photos; the name is the sub-folder's). A photo given by itself is one
    person named by its stem, as in a folder. Several paths make one gallery (a person named in
    two of them is one person); a path given twice is read once. Each photo must show exactly one
    face or one clearly dominant face (see `encode_photo`). Raises `KnownFacesError` naming the
    folder when it is missing or holds no photo, and naming the photo when one cannot be used: a
    consent gallery with a silently skipped photo would blur someone who consented, so nothing is
    skipped.
    """
    if not paths:
        raise ValueError("load_gallery needs at least one folder or photo")
    photos: list[tuple[str, Path, str]] = []  # (person, photo, source as the report names it)
    seen: set[Path] = set()
    for path in map(Path, paths):
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        if path.is_file():
            if path.suffix.lower() not in PHOTO_SUFFIXES:
                raise KnownFacesError(f"known-faces {path} is not a {_SUFFIX_LIST} photo or a folder of them")
            photos.append((path.stem, path, path.name))
            continue
        if not path.is_dir():
            raise KnownFacesError(f"known-faces folder or photo not found: {path}")
        try:
            found = _gallery_photos(path)
        except OSError as error:
            raise KnownFacesError(
                f"cannot list known-faces folder {path}: {error.strerror or error}"
            ) from error
        if not found:
            raise KnownFacesError(f"known-faces folder {path} contains no {_SUFFIX_LIST} photo")
        photos.extend((name, photo, photo.relative_to(path).as_posix()) for name, photo in found)
    names, encodings, sources = [], [], []
    for name, photo, source in photos:
        face = encode_photo(photo)
        if face.detector is not FaceDetector.HOG:
            logger.info(
                "gallery face found by fallback detector",
                extra={"photo": photo.name, "detector": face.detector.value},
            )
        names.append(name)
        encodings.append(face.encoding)
        sources.append(source)
    gallery = Gallery(names=tuple(names), encodings=np.stack(encodings), sources=tuple(sources))
    logger.info(
        "consent gallery loaded",
        extra={
            "photos": gallery.count,
            "persons": len(gallery.persons),
            "fingerprint": gallery.fingerprint,
        },
    )
    return gallery


def encode_face(
    frame_rgb: np.ndarray | Frame,
    box_x1y1x2y2: np.ndarray | tuple[float, ...],
    *,
    min_size: int = MIN_FACE_PX,
) -> np.ndarray | None:
    """128-d float64 encoding of the face in `box_x1y1x2y2` (detector box in frame pixels; a 5th
    value such as a score is ignored), or None when the visible part of the box is smaller than
    `min_size` pixels on its short side: such faces cannot be recognised and stay blurred.

    The tight RetinaFace box is converted to the square box dlib's landmark predictor expects
    (see `_HOG_SIDE_PER_SQRT_AREA`). `frame_rgb` is (H, W, 3) uint8 and is not modified; it may
    also be a video `Frame`, of which only the crop around the face is converted to RGB.
    Equals `encode_crop(*face_crop(frame_rgb, box))` (the two halves can run in different processes).
    """
    job = face_crop(frame_rgb, box_x1y1x2y2, min_size=min_size)
    return None if job is None else encode_crop(*job)


# Smallest face height, in lines of one field, that `face_crop` takes from one field of an
# interlaced frame (a smaller one is cut from the whole, combed frame).
FIELD_FACE_PX = 40


def face_crop(
    frame_rgb: np.ndarray | Frame,
    box_x1y1x2y2: np.ndarray | tuple[float, ...],
    *,
    min_size: int = MIN_FACE_PX,
    turns: int = 0,
    sar: float = 1.0,
) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """What `encode_crop` needs for the face in the box: an RGB crop around it and dlib's square
    face location (top, right, bottom, left) in the crop; None for a face too small to recognise.

    `turns`: counter-clockwise quarter turns that show the frame upright (a video's display rotation,
    `video.quarter_turns`); the box is in the frame's own (coded) pixels, the crop comes out upright,
    as dlib's landmarks and embedding need it. `sar`: the video's sample aspect ratio (the width
    of a stored pixel as shown; HDV's 1440 x 1080 is shown 1920 wide, 4:3): the crop comes out in
    square pixels, as shown, not squeezed."""
    if hasattr(frame_rgb, "rgb_region"):
        height, width, region = frame_rgb.height, frame_rgb.width, frame_rgb.rgb_region
    else:
        frame = np.asarray(frame_rgb)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
        height, width = frame.shape[:2]

        def region(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
            return frame[y0:y1, x0:x1]

    box = np.asarray(box_x1y1x2y2, dtype=float).ravel()[:4]
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise ValueError(f"box must hold 4 finite values x1, y1, x2, y2, got {box_x1y1x2y2!r}")
    # An interlaced frame's face is cut from its top field alone (one moment: both fields of a
    # moving face comb it, and dlib no longer matches it), then shown twice as tall, when that field
    # still holds it large enough.
    line_aspect = 1.0
    if getattr(frame_rgb, "interlaced", False) and (box[3] - box[1]) / 2 >= FIELD_FACE_PX and height >= 4:
        field_region, height, line_aspect = region, height // 2, 2.0
        box = box * [1, 0.5, 1, 0.5]

        def region(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
            return field_region(x0, 2 * y0, x1, 2 * y1)[0::2]
    turns %= 4
    if turns:  # work in the upright frame; cut each rectangle from the coded one and turn it
        coded_h, coded_w, coded_region = height, width, region
        box = upright_boxes(box[None], turns, coded_h, coded_w)[0]
        if turns % 2:
            height, width = width, height

        def region(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
            rect = coded_boxes(np.array([[x0, y0, x1, y1]], np.float64), turns, coded_h, coded_w)[0]
            cx0, cy0, cx1, cy1 = (int(v) for v in np.rint(rect))
            return np.rot90(coded_region(cx0, cy0, cx1, cy1), turns)

    # Shown pixels per stored pixel along the upright x and y: the stored width is the upright
    # height when the video is turned a quarter.
    sx, sy = (line_aspect, float(sar)) if turns % 2 else (float(sar), line_aspect)
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2, y1, y2 = x1 * sx, x2 * sx, y1 * sy, y2 * sy  # as shown
    shown_w, shown_h = width * sx, height * sy
    visible_w = min(x2, shown_w) - max(x1, 0.0)
    visible_h = min(y2, shown_h) - max(y1, 0.0)
    if min(visible_w, visible_h) < min_size:
        return None

    w, h = x2 - x1, y2 - y1
    side = _HOG_SIDE_PER_SQRT_AREA * np.sqrt(w * h)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + _HOG_CENTRE_SHIFT_PER_HEIGHT * h
    margin = (0.5 + _CROP_MARGIN_PER_SIDE) * side
    # The crop's stored pixels, then its shown origin and size.
    px0 = int(np.clip(np.floor((cx - margin) / sx), 0, width - 1))
    py0 = int(np.clip(np.floor((cy - margin) / sy), 0, height - 1))
    px1 = int(np.clip(np.ceil((cx + margin) / sx), px0 + 1, width))
    py1 = int(np.clip(np.ceil((cy + margin) / sy), py0 + 1, height))
    crop = np.ascontiguousarray(region(px0, py0, px1, py1))
    if (sx, sy) != (1.0, 1.0):
        shown = (max(1, round((px1 - px0) * sx)), max(1, round((py1 - py0) * sy)))
        crop = cv2.resize(crop, shown, interpolation=cv2.INTER_LINEAR)
    top = int(round(cy - side / 2 - py0 * sy))
    left = int(round(cx - side / 2 - px0 * sx))
    size = int(round(side))
    return crop, (top, left + size, top + size, left)


def encode_crop(crop: np.ndarray, location: tuple[int, int, int, int]) -> np.ndarray:
    """dlib's 128-d embedding of the face at `location` (top, right, bottom, left) in `crop` (~80 ms)."""
    encodings = face_recognition.face_encodings(crop, known_face_locations=[location], num_jitters=1)
    return np.asarray(encodings[0], dtype=np.float64)


@dataclass(frozen=True)
class RecognizerOptions:
    """Matching thresholds (Euclidean distances between 128-d dlib embeddings).

    tolerance: a face matches a person only at distance <= tolerance. 0.55 is stricter than
        face_recognition's 0.6. Measured on the shared data: same person 0.10-0.50 between
        photos and 0.32-0.53 from a video frame to a photo; different people 0.59-1.05. At 0.5
        half the samples of a consented performer's video track failed (0.49-0.53) and he was
        blurred; the margin rule and the per-track majority keep strangers out.
    margin: the best person must also beat every distinct runner-up person by at least this much;
        a face about as close to two different people is no confident match.
    min_matches: a track is kept only with at least this many matching samples.
    """

    tolerance: float = 0.55
    margin: float = 0.1
    min_matches: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.tolerance < 2.0:
            raise ValueError(f"tolerance must be in (0, 2), got {self.tolerance}")
        if self.margin < 0.0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if self.min_matches < 1:
            raise ValueError(f"min_matches must be >= 1, got {self.min_matches}")


class Match(NamedTuple):
    """One sample's match: `name` is None unless confident; `distance` is the distance to the
    nearest gallery person (inf for an empty gallery), reported either way."""

    name: str | None
    distance: float


class Recognizer:
    """Matches face encodings against a consent gallery (built once, shared by all tracks).

    Rule for one encoding: let d(p) be the smallest distance to any photo of person p and b the
    nearest person. It is a match for b iff d(b) <= tolerance and d(q) >= d(b) + margin for
    every person q *distinct* from b. Two gallery persons are distinct when no photo of one is
    within `tolerance` of a photo of the other: two names for the same face (e.g. loose photos
    `obama.jpg` and `obama2.jpg`) do not compete, which would otherwise blur that person.
    """

    def __init__(self, gallery: Gallery, options: RecognizerOptions | None = None) -> None:
        self.gallery = gallery
        self.options = options or RecognizerOptions()
        self._persons = gallery.persons
        index = self._index = {name: i for i, name in enumerate(self._persons)}
        self._person_of = np.array([index[name] for name in gallery.names], dtype=np.intp)
        count = len(self._persons)
        pairs = gallery.encodings[:, None, :] - gallery.encodings[None, :, :]
        photo_dist = np.linalg.norm(pairs, axis=2)
        person_dist = np.full((count, count), np.inf)
        np.minimum.at(person_dist, (self._person_of[:, None], self._person_of[None, :]), photo_dist)
        # rivals[a, b]: b is a different person from a as far as the gallery can tell.
        self._rivals = person_dist > self.options.tolerance

    def match(self, encoding: np.ndarray) -> Match:
        """Match one 128-d encoding (see the class docstring for the rule)."""
        encoding = np.asarray(encoding, dtype=np.float64)
        if encoding.shape != (ENCODING_SIZE,):
            raise ValueError(f"encoding must have shape ({ENCODING_SIZE},), got {encoding.shape}")
        if not self._persons:
            return Match(None, float("inf"))
        photo_dist = np.linalg.norm(self.gallery.encodings - encoding, axis=1)
        person_dist = np.full(len(self._persons), np.inf)
        np.minimum.at(person_dist, self._person_of, photo_dist)
        best = int(np.argmin(person_dist))
        distance = float(person_dist[best])
        rival = float(np.min(person_dist[self._rivals[best]], initial=np.inf))
        if distance <= self.options.tolerance and rival - distance >= self.options.margin:
            return Match(self._persons[best], distance)
        return Match(None, distance)

    def same_person(self, a: str, b: str) -> bool:
        """Whether two gallery names are one face as far as the gallery can tell (loose photos
        `ross.jpg` and `ross2.jpg`): not rivals in `match`."""
        if a == b:
            return True
        if a not in self._index or b not in self._index:
            return False
        return not bool(self._rivals[self._index[a], self._index[b]])

    def distance_to(self, encoding: np.ndarray, person: str) -> float:
        """Distance from one encoding to the nearest photo of `person` or of a name that is the same
        face (`same_person`); inf for an unknown name."""
        rows = self.gallery.encodings[[self.same_person(n, person) for n in self.gallery.names]]
        if not len(rows):
            return float("inf")
        return float(np.min(np.linalg.norm(rows - np.asarray(encoding, np.float64), axis=1)))

    def vote(self) -> IdentityVote:
        """A fresh vote for one face track."""
        return IdentityVote(self)


@dataclass(frozen=True)
class Decision:
    """Whether a track's face is kept unblurred.

    kept: True only for a confident, consistent match (see `IdentityVote`).
    name: the matched person when kept, else None (a blurred face is never named).
    votes: samples added; matches: samples that matched the kept person (or, when blurred, the
        most frequent matched person). best_distance: the smallest distance among those matches,
        or among all samples when none matched; None without samples.
    """

    kept: bool
    name: str | None
    votes: int
    matches: int
    best_distance: float | None


class IdentityVote:
    """Accumulates the samples of one face track and decides keep/blur.

    Rule: the track is kept, under person p, iff it has samples, strictly more than half of all
    its samples are confident matches (`Recognizer.match`) for the same p, and at least
    `min_matches` are. No samples, no confident match, or split votes (between two people, or
    between a person and "no match") -> blurred. Samples that `encode_face` could not encode
    carry no evidence and are not added.
    """

    def __init__(self, recognizer: Recognizer) -> None:
        self._recognizer = recognizer
        self._samples: list[Match] = []

    def add(self, encoding: np.ndarray) -> Match:
        """Match one sample of the track and record it; returns the sample's match."""
        sample = self._recognizer.match(encoding)
        self._samples.append(sample)
        return sample

    def last_names(self, count: int) -> list[str | None]:
        """The names the last `count` samples matched (None: nobody), oldest first."""
        return [sample.name for sample in self._samples[-count:]] if count > 0 else []

    def decision(self, window: int | None = None) -> Decision:
        """The track's decision from the samples added so far (only the last `window` if given:
        a long track is judged on what it shows now, not on how it entered the frame)."""
        samples = self._samples[-window:] if window else self._samples
        votes = len(samples)
        if votes == 0:
            return Decision(kept=False, name=None, votes=0, matches=0, best_distance=None)
        counts = Counter(sample.name for sample in samples if sample.name is not None)
        if not counts:
            best = min(sample.distance for sample in samples)
            return Decision(kept=False, name=None, votes=votes, matches=0, best_distance=best)
        name, matches = counts.most_common(1)[0]
        best = min(sample.distance for sample in samples if sample.name == name)
        kept = 2 * matches > votes and matches >= self._recognizer.options.min_matches
        return Decision(
            kept=kept,
            name=name if kept else None,
            votes=votes,
            matches=matches,
            best_distance=best,
        )
