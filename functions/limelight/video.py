"""Streaming video reading and writing on PyAV.

Contract of `transcode` (see docs/DESIGN.md, "Video rules"):

- frames stream one by one (memory does not grow with video length) as `Frame`s in *coded*
  orientation (the display matrix is not applied; see `VideoInfo.rotation`; `quarter_turns`,
  `upright_boxes` and `coded_boxes` relate them to the upright view): planar 4:2:0 video
  stays in YUV as decoded, so pixels nobody changes are encoded exactly as they were decoded, and
  `Frame.rgb` converts to RGB (H, W, 3) uint8 for whoever needs it (`iter_frames` yields RGB);
- the processed frames are re-encoded with libx264 (CRF), every frame keeps its pts, so frame
  count, fractional / variable frame rates, the start offset and the duration are kept;
- every audio stream is copied packet for packet, bit-exact (no re-encode); subtitle, data and
  other video streams are dropped (`TranscodeStats.dropped_streams` names them);
- rotation (display matrix), colour tags, sample aspect ratio, interlacing (field order),
  container metadata and chapters are kept;
- the output appears atomically: it is written to a hidden temporary file next to the
  destination and renamed only on success; on failure nothing is left behind;
- the input is never modified.

Failures are reported as `InputError` / `OutputError` (one-line messages naming the file).
"""

from __future__ import annotations

import heapq
import math
import os
import struct
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av.codec.context import Flags as CodecFlags
from av.sidedata.sidedata import Type as SideDataType
from av.stream import Disposition
from av.video.reformatter import Interpolation, VideoReformatter

from limelight.errors import InputError, OutputError
from limelight.formats import CONTAINER_SUFFIXES, KEEP_CONTAINER, scratch_path

__all__ = [
    "CONTAINER_SUFFIXES",
    "DAMAGE_LIMIT",
    "KEEP_CONTAINER",
    "LAST_RESORT_CONTAINERS",
    "NO_PTS_CONTAINERS",
    "DecodeDamage",
    "EncodeOptions",
    "Frame",
    "TranscodeStats",
    "VideoInfo",
    "audio_codecs",
    "audio_ready",
    "audio_streams",
    "check_audio_damage",
    "check_video_damage",
    "coded_boxes",
    "demux",
    "dropped_streams",
    "fits_container",
    "frame_rate",
    "output_container",
    "iter_frames",
    "mux_copied_audio",
    "open_media",
    "probe",
    "quarter_turns",
    "transcode",
    "upright_boxes",
]

PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)

# 4:2:0 8-bit formats libx264 accepts; any other input format is encoded as yuv420p.
_KEPT_PIX_FMTS = frozenset({"yuv420p", "yuvj420p", "nv12", "nv21"})

# AVFieldOrder of a stream -> the field shown first, as x264's options name it. TB / BT store
# one field first and show the other first: what the encoder needs is the order they are shown in.
_FIELD_ORDERS = {2: "tff", 3: "bff", 4: "bff", 5: "tff"}  # TT, BB, TB, BT (0 unknown, 1 progressive)

# Container tags describing the old file/encoder rather than the content; the muxer writes its own.
_DROPPED_CONTAINER_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands", "encoder"})


def published_tags(tags: Mapping[str, str], stale: frozenset[str] = frozenset()) -> dict[str, str]:
    """The metadata tags an output carries over from its input: all but the `stale` ones (lower
    case) and the recording location (GPS: MP4's `location` / `location-eng`, Apple's
    `com.apple.quicktime.location.ISO6709`, ...): where footage of the public was shot is personal
    data that an anonymised file must not tell (photos lose their EXIF, GPS included, alike)."""
    return {k: v for k, v in tags.items()
            if k.lower() not in stale and "location" not in k.lower() and "gps" not in k.lower()}

# Video stream tags made stale by re-encoding (Matroska statistics, encoder name) or replaced by
# the display matrix (`rotate`). Compared in lower case.
_DROPPED_VIDEO_TAGS = frozenset(
    {
        "encoder",
        "rotate",
        "bps",
        "duration",
        "number_of_bytes",
        "number_of_frames",
        "_statistics_tags",
        "_statistics_writing_app",
        "_statistics_writing_date_utc",
    }
)


# swscale's default YUV->RGB path is biased (about -1.3 levels per channel against exact BT.709),
# so a transcode darkens the video by about one level; accurate rounding with full chroma
# interpolation is exact (bias < 0.02) but about 3x slower (720p: ~11 ms instead of ~4 ms per
# frame). The RGB->YUV side is exact with the defaults.
_FAST_RGB = Interpolation.BILINEAR
_EXACT_RGB = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


@dataclass(frozen=True)
class EncodeOptions:
    """Settings of the H.264 (libx264) encoder used for the processed video.

    crf: constant rate factor, 0-51; 18 is visually close to typical camera/web inputs.
    preset: libx264 speed/size trade-off (`PRESETS`); "veryfast" keeps 720p above real time.
    threads: encoder, decoder and colour-conversion threads; 0 lets FFmpeg choose. With more than
        one, libx264's macroblock tree (on in every preset but ultrafast) makes the bytes of a re-run
        differ slightly when the cores are busy (measured with PyAV 18.1's libx264: pixels up to 2
        levels apart; 1 thread or mbtree off is repeatable, the latter at +38% file size at CRF 18):
        the same video, not always the same file. Frames, timestamps and audio are exact either way.
    pix_fmt: output pixel format; None keeps the input's if it is 4:2:0 8-bit, else yuv420p.
    exact_rgb: exact YUV->RGB conversion of frames read as RGB (`Frame.rgb`); the default fast
        one leaves such frames about one level darker but saves ~7 ms per 720p frame. Frames
        kept in YUV (the anonymizer's, or any frame nobody reads as RGB) are not converted at all.
    size: (width, height) of the decoded pictures to process and encode; None: the first
        picture's. A picture of another size (the size changed mid-stream) is scaled to it. A
        segment of a video (`segments.split`) takes the whole video's, so that its pieces join.
    rate: the frame rate the encoder is told (it sets the H.264 level and timing info); None: the
        video's own. A segment takes the whole video's: a last segment of two frames reads its
        rate from its time base (1000 fps for an FLV), and its stream would not join the others.
    start_pts: frames shown before this timestamp (the processed file's video time base) are decoded but neither
        processed nor written: a segment's pre-roll (`segments.Segment.preroll`), the previous GOP
        an open GOP's first frames are predicted from.
    b_frames: whether the encoder may use B-frames; it never does for a container that stores no
        presentation times (`NO_PTS_CONTAINERS`). A segment whose pieces will be joined into such a
        container takes False, so that they join.
    whole_file: the file is a whole video (False: a segment of one, `segments.split`): its end is the
        video's, and its damage is judged on its own (`check_video_damage`). A segment's end is not
        the video's, so a frame lost there is stood in for like any other, and its damage is judged
        with the whole video's by whoever joins it.
    """

    crf: int = 18
    preset: str = "veryfast"
    threads: int = 0
    pix_fmt: str | None = None
    exact_rgb: bool = False
    size: tuple[int, int] | None = None
    rate: Fraction | None = None
    start_pts: int | None = None
    b_frames: bool = True
    whole_file: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be within 0..51, got {self.crf}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {self.preset!r}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.size is not None and not (len(self.size) == 2 and all(isinstance(n, int) and n > 0 for n in self.size)):
            raise ValueError(f"size must be (width, height) in pixels, got {self.size!r}")
        if self.pix_fmt is not None and self.pix_fmt not in _KEPT_PIX_FMTS:
            raise ValueError(f"pix_fmt must be one of {sorted(_KEPT_PIX_FMTS)}; got {self.pix_fmt!r}")


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` reports about a video file (its first video stream).

    coded_width/coded_height: size of the decoded frames (what `iter_frames` yields).
    width/height: displayed size, i.e. after applying `rotation`.
    rotation: counter-clockwise degrees of the display matrix, in [-180, 180] (0 if none);
        a phone portrait clip usually reads -90. Frames are always handed out unrotated.
    fps: average frame rate (may be fractional, e.g. 30000/1001).
    frame_count: from the container index, or counted packets when the container does not say.
    duration: seconds of the video stream (container duration as fallback).
    start_time: seconds of the first video timestamp (non-zero when video starts late).
    """

    path: Path
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation: int
    fps: Fraction
    frame_count: int
    duration: float
    time_base: Fraction
    start_time: float
    audio_streams: int
    codec: str
    pix_fmt: str
    sample_aspect_ratio: Fraction | None

    @property
    def has_audio(self) -> bool:
        return self.audio_streams > 0


# Decoded formats kept as they are (planar 4:2:0, 8 bit): frames stay in YUV from decoder to encoder.
_PLANAR_420 = frozenset({"yuv420p", "yuvj420p"})
# Other YUV layouts (10 / 12 bit as phones record HDR, 4:2:2 and 4:4:4 as cameras do, semi-planar)
# become 8-bit planar 4:2:0 in one swscale step, YUV to YUV with the same matrix and range (no colour
# conversion, no RGB round trip), and then travel like the above. The encoder writes 8-bit 4:2:0 for
# them anyway: H.264 High 10 / 4:2:2 plays in few browsers and devices. For a frame flagged
# interlaced, swscale halves the chroma within each field, as interlaced 4:2:0 needs (tested).
_TO_PLANAR_420 = frozenset({
    "yuv420p10le", "yuv420p12le", "yuv422p", "yuv422p10le", "yuv422p12le", "yuv444p", "yuv444p10le",
    "yuv444p12le", "yuvj422p", "yuvj444p", "nv12", "nv21", "p010le",
})


class Frame:
    """One decoded video frame travelling through `transcode(transform=...)`.

    index: 0-based decode order (= presentation order); pts: timestamp in the video stream's
    time base; time: pts in seconds.

    Pixels: a frame of a planar 4:2:0 8-bit input of even size (nearly every H.264 / HEVC / VP9
    video) is held as decoded, in `yuv`: the I420 layout, an (H * 3 / 2, W) uint8 array of the Y
    rows, then U, then V at half resolution (`planes()` gives views of the three). A frame kept in
    YUV reaches the encoder without any colour conversion, so every pixel that is not redacted is
    encoded exactly as it was decoded, at no cost; `rgb_resized` and `rgb_region` convert only
    what a detector or a face encoder needs. A frame of another YUV layout of even size (10-bit HDR,
    4:2:2, 4:4:4, NV12) is first converted to that 8-bit planar 4:2:0 form, YUV to YUV, and then held
    the same way (`_TO_PLANAR_420`). Other inputs (RGB, odd sizes) are held as RGB.

    `rgb` is the frame as (H, W, 3) uint8 RGB. Reading it converts a YUV frame once, and from then
    on that RGB array *is* the frame (`yuv` becomes None): modify it in place, or assign an array of
    the same shape.

    `interlaced`: the frame holds two fields, half a frame interval apart (broadcast 1080i, DV).
    """

    __slots__ = ("index", "pts", "time", "_rgb", "_yuv", "pix_fmt", "colorspace", "color_range", "_flags", "interlaced")

    def __init__(
        self,
        index: int,
        pts: int,
        time: float,
        rgb: np.ndarray | None = None,
        *,
        yuv: np.ndarray | None = None,
        pix_fmt: str = "yuv420p",
        colorspace: int = 2,
        color_range: int = 0,
        exact_rgb: bool = False,
        interlaced: bool = False,
    ) -> None:
        if (rgb is None) == (yuv is None):
            raise ValueError("a Frame holds either rgb or yuv pixels")
        if yuv is not None and (yuv.dtype != np.uint8 or yuv.ndim != 2 or yuv.shape[0] % 3 or yuv.shape[1] % 2):
            raise ValueError(f"yuv must be an I420 (H * 3 / 2, W) uint8 array of even size, got {yuv.dtype} {yuv.shape}")
        if pix_fmt not in _PLANAR_420:
            raise ValueError(f"pix_fmt must be one of {sorted(_PLANAR_420)}, got {pix_fmt!r}")
        self.index, self.pts, self.time = index, pts, time
        self._rgb, self._yuv = rgb, yuv
        self.pix_fmt, self.colorspace, self.color_range = pix_fmt, colorspace, color_range
        self._flags = _EXACT_RGB if exact_rgb else _FAST_RGB
        self.interlaced = interlaced

    def __repr__(self) -> str:
        held = "yuv" if self._yuv is not None else "rgb"
        return f"Frame(index={self.index}, pts={self.pts}, {self.width}x{self.height} {held})"

    @property
    def height(self) -> int:
        return self._rgb.shape[0] if self._yuv is None else self._yuv.shape[0] * 2 // 3

    @property
    def width(self) -> int:
        return self._rgb.shape[1] if self._yuv is None else self._yuv.shape[1]

    @property
    def nbytes(self) -> int:
        return (self._rgb if self._yuv is None else self._yuv).nbytes

    @property
    def yuv(self) -> np.ndarray | None:
        """The I420 pixels, or None once the frame is held as RGB."""
        return self._yuv

    @property
    def full_range(self) -> bool:
        """Whether Y spans 0..255 (JPEG range) rather than 16..235."""
        return self.pix_fmt == "yuvj420p" or self.color_range == 2

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Writable views of Y (H, W), U and V (H/2, W/2) of a YUV frame."""
        if self._yuv is None:
            raise ValueError("the frame is held as RGB")
        h, w = self.height, self.width
        chroma = self._yuv[h:].reshape(2, h // 2, w // 2)
        return self._yuv[:h], chroma[0], chroma[1]

    @property
    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = self._video_frame(self._yuv).to_ndarray(format="rgb24", interpolation=self._flags)
            self._yuv = None
        return self._rgb

    @rgb.setter
    def rgb(self, value: np.ndarray) -> None:
        self._rgb, self._yuv = value, None

    def rgb_resized(self, width: int, height: int, *, one_field: bool = False) -> np.ndarray:
        """The frame as RGB scaled to width x height (area averaging when shrinking), unchanged itself.

        `one_field`: scale only the top field (every other line from the first), as a detector
        should see an interlaced frame: a moving face shows both fields' positions, combed and,
        averaged down, doubled (street_crowd woven into fields: 30% fewer faces found)."""
        shrink = width < self.width or height < self.height
        if self._yuv is None:
            rgb = self._rgb[0::2] if one_field else self._rgb
            interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            return cv2.resize(rgb, (width, height), interpolation=interp)
        yuv = self._yuv
        if one_field and self.height % 4 == 0:
            y, u, v = self.planes()
            # Interlaced 4:2:0 alternates fields line by line in the chroma too.
            yuv = np.concatenate([y[0::2].ravel(), u[0::2].ravel(), v[0::2].ravel()]).reshape(-1, self.width)
        flags = Interpolation.AREA if shrink else Interpolation.BILINEAR
        return self._video_frame(yuv).reformat(width, height, "rgb24", interpolation=flags).to_ndarray()

    def rgb_region(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """RGB pixels of rows y0:y1 and columns x0:x1 (within the frame), without converting the rest."""
        if self._yuv is None:
            return self._rgb[y0:y1, x0:x1]
        h = self.height
        ex0, ey0 = x0 & ~1, y0 & ~1  # chroma samples cover 2 x 2 pixels: convert an even-aligned block
        ex1, ey1 = min(x1 + (x1 & 1), self.width), min(y1 + (y1 & 1), h)
        y, u, v = self.planes()
        block = np.concatenate([
            y[ey0:ey1, ex0:ex1].ravel(),
            u[ey0 // 2:ey1 // 2, ex0 // 2:ex1 // 2].ravel(),
            v[ey0 // 2:ey1 // 2, ex0 // 2:ex1 // 2].ravel(),
        ]).reshape(-1, ex1 - ex0)
        rgb = self._video_frame(block).to_ndarray(format="rgb24", interpolation=self._flags)
        return rgb[y0 - ey0:y1 - ey0, x0 - ex0:x1 - ex0]

    def _video_frame(self, yuv: np.ndarray) -> av.VideoFrame:
        """A VideoFrame of I420 pixels (a copy), tagged with this frame's colour matrix and range."""
        # Not from_numpy_buffer: PyAV 18 reads an I420 buffer's height wrongly unless it is a multiple of 4.
        vframe = av.VideoFrame.from_ndarray(yuv, format=self.pix_fmt)
        vframe.colorspace, vframe.color_range = self.colorspace, self.color_range
        return vframe


def quarter_turns(rotation: float) -> int:
    """Counter-clockwise quarter turns (0..3, as `np.rot90`'s k) that show a coded frame of a video
    with this display rotation (`VideoInfo.rotation`) upright; the nearest quarter turn."""
    return int(round(rotation / 90)) % 4


def upright_boxes(boxes: np.ndarray, turns: int, height: int, width: int) -> np.ndarray:
    """x1, y1, x2, y2 boxes (N, >=4; other columns kept) of a `height` x `width` coded frame, in the
    pixels of that frame turned `turns` quarter turns counter-clockwise (`np.rot90(frame, turns)`)."""
    src = np.asarray(boxes)
    b = src.astype(np.promote_types(src.dtype, np.float32))  # a copy; integer boxes become floats
    x1, y1, x2, y2 = (src[..., i] for i in range(4))
    turns %= 4
    if turns == 1:
        b[..., 0], b[..., 1], b[..., 2], b[..., 3] = y1, width - x2, y2, width - x1
    elif turns == 2:
        b[..., 0], b[..., 1], b[..., 2], b[..., 3] = width - x2, height - y2, width - x1, height - y1
    elif turns == 3:
        b[..., 0], b[..., 1], b[..., 2], b[..., 3] = height - y2, x1, height - y1, x2
    return b


def coded_boxes(boxes: np.ndarray, turns: int, height: int, width: int) -> np.ndarray:
    """The inverse of `upright_boxes`: boxes found in `np.rot90(frame, turns)` of a `height` x
    `width` coded frame, in the coded frame's pixels."""
    return upright_boxes(boxes, (4 - turns % 4) % 4, *((width, height) if turns % 2 else (height, width)))


@dataclass(frozen=True)
class TranscodeStats:
    """Outcome of a `transcode`: file written, frames encoded, audio packets copied, wall time, the
    input streams left out of the output, and what a damaged input lost in decoding."""

    output: Path
    frames: int
    audio_packets: int
    seconds: float
    dropped_streams: tuple[str, ...] = ()  # input streams not in the output (`_Writer.dropped`)
    damage: DecodeDamage = field(default_factory=lambda: DecodeDamage())  # what a damaged input lost in decoding

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


Transform = Callable[[Iterator[Frame]], Iterable[Frame]]


# The largest video picture LimeLight takes (DCI 8K); larger ones would need gigabytes a frame.
MAX_VIDEO_PIXELS = 8192 * 4320
# The smallest side of a video picture LimeLight takes (one H.264 macroblock).
MIN_VIDEO_SIDE = 16


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Describe the first video stream of `path`; decodes only the first frame.

    Raises InputError when the file is missing, empty, unreadable, or has no decodable video.
    """
    p = Path(path)
    with _open_input(p) as container:
        stream = first_video_stream(container)
        cc = stream.codec_context
        first = next(_decoded_frames(container, p), None)
        if first is None:
            raise InputError(f"{p}: no decodable video frame")
        rotation = int(first.rotation)
        frame_count = stream.frames or _count_video_packets(p)
        tb = stream.time_base
        if stream.duration is not None and tb is not None:
            duration = float(stream.duration * tb)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        start = stream.start_time if stream.start_time is not None else first.pts or 0
        coded_w, coded_h = first.width, first.height
        if coded_w * coded_h > MAX_VIDEO_PIXELS:
            raise InputError(f"{p}: pictures of {coded_w} x {coded_h} are larger than LimeLight takes (8K: 8192 x 4320)")
        if min(coded_w, coded_h) < MIN_VIDEO_SIDE:
            # No face fits, and libx264 crashed the process on such a picture (704 x 1, a damaged PNG
            # header read as a video) when its encoder was freed.
            raise InputError(f"{p}: pictures of {coded_w} x {coded_h} are too small to hold a face "
                             f"(LimeLight takes {MIN_VIDEO_SIDE} x {MIN_VIDEO_SIDE} and up)")
        turned = rotation % 180 == 90
        return VideoInfo(
            path=p,
            width=coded_h if turned else coded_w,
            height=coded_w if turned else coded_h,
            coded_width=coded_w,
            coded_height=coded_h,
            rotation=rotation,
            fps=frame_rate(stream),
            frame_count=frame_count,
            duration=duration,
            time_base=tb,
            start_time=float(start * tb) if tb is not None else 0.0,
            audio_streams=len(audio_streams(container)),
            codec=cc.name,
            pix_fmt=first.format.name,
            sample_aspect_ratio=_sample_aspect_ratio(stream),
        )


def iter_frames(
    path: str | os.PathLike[str], *, exact_rgb: bool = False
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (index, time in seconds, RGB (H, W, 3) uint8) for each frame, in presentation order.

    Streams: one frame is decoded per step. `exact_rgb` as in `EncodeOptions`.
    Raises InputError for unusable or corrupt input.
    """
    p = Path(path)
    with _open_input(p) as container:
        for frame in _frames(container, p, exact_rgb=exact_rgb):
            yield frame.index, frame.time, frame.rgb


def decode(src: str | os.PathLike[str], options: EncodeOptions = EncodeOptions(), damage: DecodeDamage | None = None) -> Iterator[Frame]:
    """The `Frame`s `transcode(src, ..., options)` would pass its transform, with the same indices
    and timestamps (damaged frames stood in for alike), decoded only: the analyze pass. `damage`
    collects what a damaged video lost, as `transcode` reports it."""
    p = Path(src)
    _check_input_file(p)
    with _open_input(p) as container:
        yield from _frames(container, p, exact_rgb=options.exact_rgb, size=options.size, start_pts=options.start_pts,
                           damage=DecodeDamage() if damage is None else damage, whole_file=options.whole_file)


def transcode(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    process: Callable[[np.ndarray, int], np.ndarray] | None = None,
    options: EncodeOptions = EncodeOptions(),
    progress: Callable[[int], None] | None = None,
    *,
    transform: Transform | None = None,
) -> TranscodeStats:
    """Re-encode the video of `src` into `dst` through a frame callback; keep everything else.

    process(rgb, index) returns the frame to encode (it may modify `rgb` in place and return it).
    transform(frames) is the look-ahead alternative: it receives an iterator of `Frame` and must
    yield every one of them exactly once, in order (pts unchanged), but may hold some back
    (audio keeps being copied meanwhile; the muxer interleaves by timestamp). Give at most one
    of the two; with neither, frames are re-encoded unchanged.
    progress(n) is called after each encoded frame with the number of frames encoded so far.

    The container format follows the extension of `dst`. `dst` is replaced atomically on success
    only. Raises InputError (input unusable), OutputError (cannot write `dst`, or `dst` is `src`),
    ValueError (a transform broke its contract, or a frame has the wrong shape/dtype); any
    exception from the callbacks propagates unchanged, leaving no output file.
    """
    if process is not None and transform is not None:
        raise ValueError("give either process or transform, not both")
    src_p, dst_p = Path(src), Path(dst)
    _check_input_file(src_p)
    _check_output_path(src_p, dst_p)
    if transform is None:
        transform = _per_frame(process) if process is not None else _identity

    started = time.perf_counter()
    with _open_input(src_p) as container:
        tmp = temporary_path(dst_p)
        writer: _Writer | None = None
        damage = DecodeDamage()
        try:
            writer = _Writer(container, tmp, dst_p, options)
            decoded = _frames(container, src_p, writer, exact_rgb=options.exact_rgb, size=options.size,
                              start_pts=options.start_pts, damage=damage, whole_file=options.whole_file)
            frames = writer.encode_all(transform(decoded), progress)
            damage.audio_left_out = writer.audio_left_out
            check_audio_damage(src_p, writer.audio_left_out, writer.audio_packets)
            writer.close()
            os.replace(tmp, dst_p)
        except BaseException:
            if writer is not None:
                writer.abort()
            tmp.unlink(missing_ok=True)
            raise
    return TranscodeStats(
        output=dst_p,
        frames=frames,
        audio_packets=writer.audio_packets,
        seconds=time.perf_counter() - started,
        dropped_streams=writer.dropped,
        damage=damage,
    )


def _identity(frames: Iterator[Frame]) -> Iterator[Frame]:
    return frames


def _per_frame(process: Callable[[np.ndarray, int], np.ndarray]) -> Transform:
    def run(frames: Iterator[Frame]) -> Iterator[Frame]:
        for frame in frames:
            frame.rgb = process(frame.rgb, frame.index)
            yield frame

    return run


def temporary_path(dst: Path) -> Path:
    """A hidden, unique name beside `dst`: the file is written there and renamed when complete."""
    return scratch_path(dst)


def error_reason(error: BaseException) -> str:
    """FFmpeg's reason without errno or file name (the caller's message names the file)."""
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(str(text).split())


def _check_input_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")


def _check_output_path(src: Path, dst: Path) -> None:
    if src.resolve() == dst.resolve() or (dst.exists() and os.path.samefile(src, dst)):
        raise OutputError(f"{dst}: output would overwrite the input")
    folder = dst.parent
    if not folder.is_dir():
        raise OutputError(f"{dst}: destination folder does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{dst}: destination folder is not writable")
    if not dst.suffix:
        raise OutputError(f"{dst}: no file extension to choose the container format from")


def _open_input(path: Path) -> av.container.InputContainer:
    """Open `path` for decoding, or raise InputError; the container has a video stream."""
    _check_input_file(path)
    try:
        container = open_media(path)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not a readable video ({error_reason(error)})") from error
    if first_video_stream(container) is None:
        container.close()
        raise InputError(f"{path}: no video stream")
    size = path.stat().st_size
    end = _indexed_end(container)
    if end > size:
        container.close()
        raise InputError(f"{path}: truncated (media data ends at byte {end}, file has {size})")
    return container


# How far `open_media` looks for the parameters of an audio stream not found where the file
# starts (FFmpeg's defaults: 5 MB, 5 s): packets read while probing are held, so bounded.
_DEEP_PROBE_BYTES = 64 * 1024 * 1024
_DEEP_PROBE_MICROSECONDS = 120 * 1_000_000


def open_media(path: str | os.PathLike[str]) -> av.container.InputContainer:
    """`av.open(path)`, looking further into the file when an audio stream's parameters are not
    found where it starts: a TS announces a stream whose first packets come later (a language or
    audio-description PID silent at first), and FFmpeg stops looking after 5 s / 5 MB, leaving it
    without a sample rate. An FLV always gets the longer look: it announces no streams at all,
    and a stream recording's sound that starts late (the microphone switched on after a few
    seconds) would otherwise appear only mid-file, too late for the output (`demux`). Raises what
    av.open raises."""
    container = av.open(str(path))
    if container.format.name != "flv" and all(audio_ready(stream) for stream in container.streams.audio):
        return container
    container.close()
    return av.open(str(path), options={"probesize": str(_DEEP_PROBE_BYTES), "analyzeduration": str(_DEEP_PROBE_MICROSECONDS)})


def audio_ready(stream: av.stream.Stream) -> bool:
    """Whether an audio stream's parameters are known (sample rate, channels): a muxer refuses a
    copy of one without ("Invalid argument" at the header)."""
    cc = stream.codec_context
    return bool(cc.sample_rate and getattr(cc, "channels", 1))


def audio_streams(container: av.container.InputContainer) -> list[av.stream.Stream]:
    """The audio streams an output copies: those whose parameters are known (`open_media`). One
    without has no sound where the file starts and is left out (`dropped_streams` names it)."""
    return [stream for stream in container.streams.audio if audio_ready(stream)]


def _indexed_end(container: av.container.InputContainer) -> int:
    """Byte offset where the last indexed packet ends (0 without an index).

    MP4/MOV demuxers index every sample from the header; when the header sits at the front
    (faststart) a truncated file opens fine and decoding just stops early, so compare the index
    with the file size. Each stream's last entry is its furthest one in an interleaved file.
    """
    end = 0
    for stream in (*container.streams.video, *container.streams.audio):
        entries = stream.index_entries
        if len(entries):
            last = entries[len(entries) - 1]
            end = max(end, last.pos + last.size)
    return end


# Suffixes written by FFmpeg's QuickTime / MP4 muxer, which states a late start in the movie's time scale.
_MOV_FAMILY = frozenset({".mp4", ".mov", ".m4v", ".3gp", ".3g2"})
# The largest movie time scale asked for (mvhd holds 32 bits); above it the muxer's default stays.
_MAX_MOVIE_TIMESCALE = 2**31 - 1


def stream_start(stream: av.stream.Stream) -> Fraction | None:
    """Where `stream` starts (s), as its container states it; None when unknown."""
    if stream.start_time is None or not stream.time_base:
        return None
    return stream.start_time * stream.time_base


def exact_start_options(dst: Path, video: av.video.stream.VideoStream, audio: Iterable[av.stream.Stream]) -> dict[str, str]:
    """Muxer options that keep where the input's `video` and kept `audio` streams start, exactly.

    MP4 / MOV state a late start in the movie's time scale, 1/1000 s unless told: a 90 kHz
    transport stream's (camcorders, broadcast) moved by up to a millisecond. The scale asked for is
    the smallest multiple of 1000 (at most 2^31 - 1) that holds every audio start and any time of
    the video's time base: the first decodable frame may come after the video's stated start (a
    recording cut mid-GOP); where that is too fine, the video's stated start.
    """
    if dst.suffix.lower() not in _MOV_FAMILY:
        return {}
    audio_starts = [stream_start(s) for s in audio]
    tick = Fraction(1, video.time_base.denominator) if video.time_base else None
    for video_start in (tick, stream_start(video)):
        scale = 1000
        for start in (video_start, *audio_starts):
            if start is not None:
                scale = math.lcm(scale, start.denominator)
        if scale <= _MAX_MOVIE_TIMESCALE:
            return {"movie_timescale": str(scale)} if scale != 1000 else {}
    return {}


# Containers that store no presentation time per frame (only the coding order): H.264 goes into them
# without B-frames. Windows Media (ASF) and AVI, kept for the audio only they hold (`output_container`).
NO_PTS_CONTAINERS = frozenset({".avi", ".divx", ".wmv", ".asf"})
# Inputs whose own container is the output's when none of MP4, Matroska and QuickTime holds their audio.
LAST_RESORT_CONTAINERS = frozenset({".wmv", ".asf"})


def output_container(src: str | os.PathLike[str]) -> str:
    """The suffix of the container a video's anonymized copy is written in: its own when in
    `KEEP_CONTAINER`, else .mp4; and when that cannot copy its audio bit-exact (AMR of 3GP phone
    clips, µ-law of cameras' AVI, Nellymoser of old FLV), the first of .mkv and .mov that can
    (containers that keep every timing rule; AVI cannot say where a video with B-frames starts);
    last, for a Windows Media file, its own container (`LAST_RESORT_CONTAINERS`): none of the three
    takes WMA, and ASF stores every packet's time. (An AVI's IMA ADPCM is not written back into AVI:
    the muxer would time its copied blocks by byte rate and the sound would drift.) Unreadable
    input gets the default; reading it fails later with its own error."""
    suffix = Path(src).suffix.lower()
    default = suffix if suffix in KEEP_CONTAINER else ".mp4"
    own = [suffix] if suffix in LAST_RESORT_CONTAINERS else []
    candidates = list(dict.fromkeys([default, ".mkv", ".mov", *own]))
    return next((s for s in candidates if fits_container(src, s)), default)


def fits_container(src: str | os.PathLike[str], suffix: str) -> bool:
    """Whether a `suffix` file (".mp4", ".mkv", ...) can hold the output of `src`: H.264 video and a
    bit-exact copy of each of its audio streams. Asked of the muxer itself (its header is written
    to a scratch file); False when `src` cannot be read either."""
    try:
        with open_media(src) as source, tempfile.TemporaryDirectory(prefix="limelight-") as scratch:
            out = av.open(os.path.join(scratch, f"probe{suffix}"), mode="w")
            try:
                video = out.add_stream("libx264", rate=25)
                video.width, video.height, video.pix_fmt = 16, 16, "yuv420p"
                for stream in audio_streams(source):
                    out.add_stream_from_template(stream)
                out.start_encoding()
                return True
            finally:
                try:
                    out.close()
                except (av.FFmpegError, OSError, ValueError):
                    pass  # a header that failed leaves nothing worth closing cleanly
    except (av.FFmpegError, OSError, ValueError):
        return False


def audio_codecs(src: str | os.PathLike[str]) -> list[str]:
    """The codec names of `src`'s audio streams, in order (empty when it has none or is unreadable)."""
    try:
        with open_media(src) as container:
            return [stream.codec_context.name for stream in audio_streams(container)]
    except (av.FFmpegError, OSError, ValueError):
        return []


def first_video_stream(container: av.container.Container) -> av.video.stream.VideoStream | None:
    """The first real video stream; cover art in audio files (attached pictures) does not count."""
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    return None


def dropped_streams(container: av.container.InputContainer) -> tuple[str, ...]:
    """The input's streams an output leaves out, described for the report: subtitles (they may
    name the people whose faces are blurred), data, other video (a second angle, cover art: nobody
    anonymises them), audio without sound where the file starts (`audio_streams`). Not a
    QuickTime timecode track nor an MP4 chapter-title track (which the demuxer reads into the
    container's chapters and leaves unread): the muxer writes both anew, from the video's
    `timecode` tag and from the chapters."""
    video = first_video_stream(container)
    chapters = bool(container.chapters())
    return tuple(
        _describe(stream) for stream in container.streams
        if stream.index != video.index and (stream.type != "audio" or not audio_ready(stream))
        and not (stream.type == "data" and "timecode" in stream.metadata)
        and not (stream.type == "data" and chapters and stream.discard == _DISCARD_ALL)
    )


_DISCARD_ALL = 48  # AVDISCARD_ALL


def _describe(stream: av.stream.Stream) -> str:
    """'subtitle #2 (subrip, eng)': type, index and what the report may say of a dropped stream."""
    details = [stream.codec_context.name] if stream.codec_context is not None else []
    if stream.type == "video" and stream.disposition & Disposition.attached_pic:
        details.append("attached picture")
    if stream.type == "audio" and not audio_ready(stream):
        details.append("no sound found")
    if stream.metadata.get("language"):
        details.append(stream.metadata["language"])
    return f"{stream.type} #{stream.index}" + (f" ({', '.join(details)})" if details else "")


def side_data(frame: av.VideoFrame, kind: SideDataType) -> object | None:
    """The frame's side data of one kind, or None. PyAV refuses to list a frame's side data when
    any of it is of a kind it cannot name (an MJPEG frame's EXIF, type 31): such a frame is taken
    to carry none of the kinds LimeLight reads (display matrix, HDR10 metadata)."""
    try:
        return frame.side_data.get(kind)
    except ValueError:
        return None


def _hdr10_params(first: av.VideoFrame) -> list[str]:
    """x264 options that carry an HDR10 video's static metadata (its frames' mastering display and
    content light level side data) into the output's SEI, so that a display tone-maps it as the
    original; the frames handed to the encoder are new pictures, without side data."""
    params = []
    mastering = side_data(first, SideDataType.MASTERING_DISPLAY_METADATA)
    if mastering is not None and len(bytes(mastering)) >= 88:
        # AVMasteringDisplayMetadata: R, G, B primaries and white point as (x, y) rationals, min and
        # max luminance, has_primaries, has_luminance. x264 counts 1/50000 and 1/10000 cd/m2.
        v = struct.unpack_from("<22i", bytes(mastering))
        ratio = [v[i] / v[i + 1] if v[i + 1] else 0.0 for i in range(0, 20, 2)]
        (rx, ry, gx, gy, bx, by, wx, wy, lmin, lmax), has_primaries, has_luminance = ratio, v[20], v[21]
        if has_primaries and has_luminance:
            xy = [round(c * 50000) for c in (gx, gy, bx, by, rx, ry, wx, wy)]
            params.append("mastering-display=G({},{})B({},{})R({},{})WP({},{})".format(*xy)
                          + f"L({round(lmax * 10000)},{round(lmin * 10000)})")
    light = side_data(first, SideDataType.CONTENT_LIGHT_LEVEL)
    if light is not None and len(bytes(light)) >= 8:
        max_cll, max_fall = struct.unpack_from("<2I", bytes(light))
        params.append(f"cll={max_cll},{max_fall}")
    return params


def _interlacing(stream: av.video.stream.VideoStream, first: av.VideoFrame) -> str | None:
    """"tff" / "bff" when the video is interlaced (its stream's field order, else its first frame's
    flag), None if progressive. When only the frame says so (PyAV does not tell its field order):
    bottom field first for DV, whose standard order it is, else top first, HD broadcast's."""
    order = _FIELD_ORDERS.get(stream.codec_context.field_order)
    if order is None and first.interlaced_frame:
        order = "bff" if stream.codec_context.name == "dvvideo" else "tff"
    return order


# Faster than any camera but high-speed ones: an average rate above it is the demuxer's bad guess
# (a raw DV file of 10 frames reads 60000 fps, which no muxer accepts).
_MAX_PLAUSIBLE_FPS = 1000


def frame_rate(stream: av.video.stream.VideoStream) -> Fraction:
    """The video's frame rate: the average over the file (right for variable rates), else the rate
    the demuxer or the bitstream states; 0 when none is plausible."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.codec_context.framerate, stream.base_rate):
        if rate and 0 < rate <= _MAX_PLAUSIBLE_FPS:
            return Fraction(rate)
    return Fraction(0)


def _sample_aspect_ratio(stream: av.video.stream.VideoStream) -> Fraction | None:
    sar = stream.codec_context.sample_aspect_ratio or stream.sample_aspect_ratio
    return Fraction(sar) if sar else None


def demux(
    container: av.container.InputContainer, *streams: av.stream.Stream, on_new_stream: Callable[[], None] | None = None
) -> Iterator[av.Packet]:
    """`container.demux(*streams)`, carried on past a stream that appears mid-file.

    Some demuxers add a stream while reading (FLV on a damaged tag, or on sound that starts after
    the header said there was none; MPEG-TS on a PID announced late); PyAV's demux then fails with
    IndexError on that stream's first packet, its list of streams being the one from opening. A
    new demux reads on from where the file is and skips the new stream, which is none of
    `streams` (each restart has read at least that packet: no loop); `on_new_stream` is told.
    """
    while True:
        try:
            yield from container.demux(*streams)
            return
        except IndexError:
            if on_new_stream is not None:
                on_new_stream()


def _count_video_packets(path: Path) -> int:
    """The video packets of `path`, counted in a pass of its own: seeking back would not do, an FLV
    without a keyframe index refuses it ("Operation not permitted")."""
    try:
        with av.open(str(path)) as container:
            return sum(1 for packet in demux(container, first_video_stream(container)) if packet.size)
    except (av.FFmpegError, OSError) as error:
        raise InputError(f"{path}: corrupt or truncated ({error_reason(error)})") from error


# A damaged input is refused when more than one video packet in this many (and more than one in
# all) cannot be decoded.
DAMAGE_LIMIT = 50


@dataclass
class DecodeDamage:
    """What a damaged input lost (`_decoded_frames`, `mux_copied_audio`).

    video_packets: video packets the decoder refused (a bad sector, a live recording's lost packets);
    repeated: times (s) of the frames they took with them, each given the picture before it;
    audio_left_out: audio packets the output's muxer refused as malformed, left out;
    late_streams: streams that appeared mid-file, unknown when the output was set up: left out;
    restarts: times (s, in the output) after which the input's timestamps started again (`_Timeline`).
    """

    video_packets: int = 0
    repeated: list[float] = field(default_factory=list)
    audio_left_out: int = 0
    late_streams: int = 0
    restarts: list[float] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.video_packets or self.audio_left_out or self.late_streams or self.restarts)

    def as_dict(self) -> dict[str, object]:
        return {
            "video_packets": self.video_packets,
            "repeated_frames_at": [round(t, 6) for t in self.repeated],
            "audio_packets_left_out": self.audio_left_out,
            "streams_starting_mid_file_left_out": self.late_streams,
            "timestamps_start_again_after": [round(t, 6) for t in self.restarts],
        }

    def describe(self) -> str:
        """One line for the user: what was damaged and what the output has there."""
        said = []
        if self.video_packets:
            what = _count(self.video_packets, "damaged video packet")
            if self.repeated:
                said.append(f"{what}: {_count(len(self.repeated), 'frame')} could not be decoded (at "
                            f"{_times(self.repeated)}) and repeat the picture before them")
            else:
                said.append(f"{what}, decoded as far as they go (the pictures there may show decoding errors)")
        if self.audio_left_out:
            said.append(f"{_count(self.audio_left_out, 'malformed audio packet')} left out (a gap that long in the sound)")
        if self.late_streams:
            said.append(f"{_count(self.late_streams, 'stream')} starting mid-file (sound added late, or a damaged "
                        "tag) left out: remux with ffmpeg first to keep it")
        if self.restarts:
            said.append(f"timestamps start again after {_times(self.restarts)} (recordings joined end to end?): "
                        "the parts are put one after the other")
        return "; ".join(said)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _times(seconds: list[float], shown: int = 5) -> str:
    return ", ".join(f"{t:.2f} s" for t in seconds[:shown]) + (", ..." if len(seconds) > shown else "")


def mux_copied_audio(out: av.container.OutputContainer, packet: av.Packet) -> bool:
    """Mux a copied audio packet; False when the muxer refuses it as malformed (InvalidDataError:
    a damaged input's packet, such as an AAC frame whose ADTS header a bad sector or a lost TS packet
    hit, which the MP4 muxer's aac_adtstoasc filter cannot read): that packet is left out, the rest
    stay bit-exact. Any other error propagates."""
    try:
        out.mux(packet)
    except av.InvalidDataError:
        return False
    return True


def _past_limit(bad: int, total: int) -> bool:
    """More than one of `total` packets bad, and more than 1 in `DAMAGE_LIMIT`."""
    return bad > max(1, total // DAMAGE_LIMIT)


def check_video_damage(path: Path | str, damaged: int, packets: int, error: BaseException | None = None) -> None:
    """InputError when more of a video's `packets` were damaged than a damaged file may have."""
    if _past_limit(damaged, packets):
        raise InputError(
            f"{path}: corrupt ({damaged} of {packets} video packets cannot be decoded, more than 1 in {DAMAGE_LIMIT})"
        ) from error


def check_audio_damage(path: Path, left_out: int, copied: int) -> None:
    """InputError when more of `path`'s audio packets were malformed than a damaged file may have."""
    if _past_limit(left_out, left_out + copied):
        raise InputError(
            f"{path}: corrupt audio ({left_out} of {left_out + copied} audio packets are malformed, "
            f"more than 1 in {DAMAGE_LIMIT})"
        )


class _Losses:
    """Finds the frames a damaged input loses in decoding and stands in for them.

    A packet the decoder refuses mid-stream does not end the job: ffmpeg decodes such a file (a bad
    sector, a live recording's lost packets) and so do we. With frame threads the decoder reports
    a packet's error on a later packet, so the lost frame is found by its timestamp: once a frame
    is decoded, every video packet demuxed with an earlier pts that never came out is lost, and
    while refused packets are unaccounted for, each such frame is given the picture of the frame
    before it (frame count and timestamps stay the input's). Without a refused packet nothing
    changes: a decoder that drops frames silently (leading frames of a cut mid-GOP) is left to it.
    A frame lost before the first decoded one is dropped (the video starts at its first decodable
    frame). Frames lost at the end are stood in for in a segment or an indexed MP4 / MOV (`finish`);
    in another whole file they are a truncated file: InputError, as before.
    """

    def __init__(self, path: Path, damage: DecodeDamage | None, whole_file: bool = True, indexed: bool = False) -> None:
        self.path = path
        self.damage = damage if damage is not None else DecodeDamage()
        self.whole_file = whole_file
        self.indexed = indexed  # an MP4 / MOV whose index matched its size: frames lost at its end are damage
        self._waiting: list[int] = []  # heap: pts of demuxed video packets not decoded yet
        self._unmatched = 0  # refused packets not yet matched with a lost frame
        self._error: BaseException | None = None
        self._last: av.VideoFrame | None = None
        self._last_pts: int | None = None
        self._packets = 0

    def demuxed(self, packet: av.Packet) -> None:
        if packet.size:
            self._packets += 1
            if packet.pts is not None and not packet.is_discard:
                heapq.heappush(self._waiting, packet.pts)

    def new_stream(self) -> None:
        self.damage.late_streams += 1

    def refused(self, error: av.FFmpegError) -> None:
        self._error = self._error or error
        self._unmatched += 1
        self.damage.video_packets += 1

    def decoded(self, frame: av.VideoFrame) -> Iterator[av.VideoFrame]:
        """`frame`, after a stand-in for each lost frame before it."""
        if frame.pts is not None:
            while self._waiting and self._waiting[0] < frame.pts:
                lost = heapq.heappop(self._waiting)
                if not self._unmatched:
                    continue  # not ours to fill: a decoder's own silent drop
                self._unmatched -= 1
                if self._last is not None and self._last_pts is not None and lost > self._last_pts:
                    yield self._stand_in(lost)
                # else lost before the first decoded frame: the video starts at its first decodable one
            if self._waiting and self._waiting[0] == frame.pts:
                heapq.heappop(self._waiting)
        self._last, self._last_pts = frame, frame.pts
        yield frame

    def _stand_in(self, lost: int) -> av.VideoFrame:
        """The last frame again, at the lost frame's pts (the consumer converted it already)."""
        self._last.pts = self._last_pts = lost
        tb = self._last.time_base
        self.damage.repeated.append(float(lost * tb) if tb else 0.0)
        return self._last

    def finish(self) -> Iterator[av.VideoFrame]:
        """Stand-ins for the frames lost at the end of a segment or of an indexed MP4 / MOV;
        InputError for another whole file that lost its last frames (truncated), for a file that
        decodes no frame, or for a whole file damaged past the limit."""
        if self._last is None and (self._unmatched or self.damage.video_packets):
            raise InputError(f"{self.path}: corrupt or truncated ({error_reason(self._error)})") from self._error
        if (not self.whole_file or self.indexed) and self._last is not None:
            # Not a truncated end (a segment's end is not the video's; an MP4 / MOV shorter than its
            # index was refused at opening): a frame lost here is stood in for like any other, even
            # when its error went unreported (FFmpeg's frame threads report the last ones at the
            # flush, which PyAV does not raise): such a file's packets all have frames.
            for lost in sorted(p for p in self._waiting if p > self._last_pts):
                if self._unmatched:
                    self._unmatched -= 1
                else:
                    self.damage.video_packets += 1
                yield self._stand_in(lost)
            self._waiting = []
        if not self.whole_file:
            return  # judged with the whole video's by whoever joins it
        if self._unmatched and self._waiting:
            # The last frames are lost: a truncated file.
            raise InputError(f"{self.path}: corrupt or truncated ({error_reason(self._error)})") from self._error
        check_video_damage(self.path, self.damage.video_packets, self._packets, self._error)


class _Timeline:
    """Puts the parts of a recording whose timestamps start again one after the other.

    MPEG-TS and MPEG-PS (formats that allow timestamp discontinuities) come joined end to end:
    `cat` of two recordings, a recorder restarted, a broadcast splice. Each part starts its clock
    again, so timestamps jump back, which no MP4 can store (the muxer refused the audio: "cannot
    write"). As ffmpeg does, the later part is shifted to continue after the earlier one: the
    first stream to jump back (by over `JUMP`) sets the part's offset, so that it continues one
    step after its previous packet, and each other stream takes that offset when it jumps back
    too (the demuxer hands out a part's last video frame after the next part's first audio), so
    sound and picture keep the part's own alignment; only a stream whose part would then overlap
    its previous one is moved on by itself. A jump forward is a pause and stays; other formats are
    left as they are.
    """

    JUMP = Fraction(1)  # s: a packet this far before its stream's last one starts a new part ...
    LASTED = Fraction(1)  # s: ... when the stream's part before it lasted this long (not one stray packet)

    def __init__(self, container: av.container.InputContainer, damage: DecodeDamage) -> None:
        self.active = bool(container.format.flags & av.format.Flags.ts_discont.value)
        self.damage = damage
        self._parts = [Fraction(0)]  # each part's offset (s)
        # stream index -> [part, own offset (s), last dts (s), step (s), dts its part started at (s)]
        self._streams: dict[int, list] = {}

    def place(self, packet: av.Packet) -> None:
        if not self.active or packet.dts is None or not packet.time_base or not packet.size:
            return
        tb = packet.time_base
        part, offset, last, step, since = self._streams.get(packet.stream.index, [0, Fraction(0), None, Fraction(0), None])
        dts = packet.dts * tb + offset
        if last is not None and dts < last - self.JUMP and last - since >= self.LASTED:
            raw = packet.dts * tb
            follow = last + (step or (packet.duration or 0) * tb) - raw  # one step after the stream's last packet
            if part + 1 < len(self._parts):
                offset = max(self._parts[part + 1], follow)  # the part another stream started
            else:
                offset = follow
                self._parts.append(offset)
                self.damage.restarts.append(float(last))
            part, since = part + 1, None
        ticks = round(offset / tb)
        if ticks:
            packet.dts += ticks
            if packet.pts is not None:
                packet.pts += ticks
        dts = packet.dts * tb
        if last is not None and dts > last:
            step = packet.duration * tb if packet.duration else dts - last
        self._streams[packet.stream.index] = [part, offset, dts, step, dts if since is None else since]


def _decoded_frames(
    container: av.container.InputContainer,
    path: Path,
    writer: _Writer | None = None,
    damage: DecodeDamage | None = None,
    whole_file: bool = True,
) -> Iterator[av.VideoFrame]:
    """Decoded frames of the first video stream; audio packets go to `writer` when given.

    The input is demuxed once, so audio reaches the writer in file order while video decodes.
    Demuxing errors become InputError; a video packet the decoder refuses is recorded in `damage`
    and its frame stood in for (`_Losses`), unless the file is truncated or badly damaged
    (InputError). Errors of the writer propagate as they are. A frame yielded is converted by the
    consumer before the next one is asked for (a stand-in reuses the frame object before it).
    """
    video = first_video_stream(container)
    video.thread_type = "AUTO"
    video.codec_context.thread_count = writer.threads if writer is not None else 0
    audios = audio_streams(container) if writer is not None else []
    indexed = container.format.name.split(",")[0] == "mov" and len(video.index_entries) > 0
    losses = _Losses(path, damage, whole_file, indexed)
    timeline = _Timeline(container, losses.damage)
    packets = demux(container, video, *audios, on_new_stream=losses.new_stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.FFmpegError as error:
            raise InputError(f"{path}: corrupt or truncated ({error_reason(error)})") from error
        timeline.place(packet)
        if packet.stream.type != "video":
            # A zero-size packet only marks the end of a stream for the decoder.
            if packet.size:
                writer.copy_audio(packet)
            continue
        losses.demuxed(packet)
        try:
            frames = packet.decode()
        except av.EOFError:
            if packet.size:
                raise
            continue  # a second end-of-stream packet (a demux restarted by `demux`): already drained
        except av.FFmpegError as error:
            losses.refused(error)
            continue
        for frame in frames:
            yield from losses.decoded(frame)
    yield from losses.finish()


def _frames(
    container: av.container.InputContainer,
    path: Path,
    writer: _Writer | None = None,
    *,
    exact_rgb: bool = False,
    size: tuple[int, int] | None = None,
    start_pts: int | None = None,
    damage: DecodeDamage | None = None,
    whole_file: bool = True,
) -> Iterator[Frame]:
    """`Frame`s with strictly increasing pts (repairs missing or repeated decoder timestamps), all
    of one size and pixel format: `size` (width, height) or else the first picture's; none shown
    before `start_pts` (a pre-roll, decoded only as the reference of later frames)."""
    stream = first_video_stream(container)
    tb = stream.time_base
    rate = frame_rate(stream)
    step = max(1, round(1 / (rate * tb))) if rate and tb else 1
    flags = _EXACT_RGB if exact_rgb else _FAST_RGB
    last_pts: int | None = None
    index = 0
    to_planar = VideoReformatter()  # one for the stream: its scaler is set up once, not per frame
    to_first = VideoReformatter()
    first: tuple[int, int, str] | None = None
    for vframe in _decoded_frames(container, path, writer, damage, whole_file):
        if start_pts is not None and vframe.pts is not None and vframe.pts < start_pts:
            continue
        decoded = vframe  # its side data (display matrix) and flags configure the encoder
        shape = (vframe.width, vframe.height, vframe.format.name)
        if first is None:
            first = (*size, shape[2]) if size is not None else shape
        if shape != first:
            # The picture size changed mid-stream (a recording of adaptive streaming, TS files joined,
            # a resized screen recording): one output stream has one size, so later pictures are
            # scaled to the first one's (as ffmpeg does), timestamps unchanged.
            vframe = to_first.reformat(
                vframe, width=first[0], height=first[1], format=first[2], interpolation=Interpolation.BICUBIC
            )
        pts = vframe.pts
        if pts is None:
            pts = 0 if last_pts is None else last_pts + step
        elif last_pts is not None and pts <= last_pts:
            # The encoder rejects non-increasing pts; only broken inputs get here.
            pts = last_pts + 1
        if writer is not None:
            if index == 0:
                writer.start(decoded, (vframe.width, vframe.height))
            writer.issued(pts)
        seconds = float(pts * tb) if tb else 0.0
        fmt, even = vframe.format.name, vframe.width % 2 == 0 and vframe.height % 2 == 0
        yuv = None
        if even and fmt in _TO_PLANAR_420:
            fmt = "yuvj420p" if fmt.startswith("yuvj") else "yuv420p"
            rng = vframe.color_range or None  # the same on both sides: no range conversion
            yuv = to_planar.reformat(vframe, format=fmt, src_color_range=rng, dst_color_range=rng).to_ndarray()
        elif even and fmt in _PLANAR_420:
            yuv = vframe.to_ndarray()
        if yuv is not None:
            yield Frame(
                index, pts, seconds, yuv=yuv, pix_fmt=fmt, colorspace=vframe.colorspace,
                color_range=vframe.color_range, exact_rgb=exact_rgb, interlaced=vframe.interlaced_frame,
            )
        else:
            rgb = vframe.to_ndarray(format="rgb24", interpolation=flags)
            yield Frame(index, pts, seconds, rgb=rgb, interlaced=vframe.interlaced_frame)
        last_pts = pts
        index += 1
    if index == 0:
        raise InputError(f"{path}: no decodable video frame")
    if writer is not None:
        writer.input_done()


# Channel layouts by channel count, as FFmpeg guesses them for a stream that names none (AVI and
# WAV store only the count): MP4 and MOV refuse to write a layout of unspecified order.
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def _name_channel_layout(out: av.audio.stream.AudioStream, src: av.audio.stream.AudioStream) -> None:
    """Give a copied audio stream whose source names no channel layout ("2 channels") the usual
    layout of that many channels; the packets are copied untouched either way."""
    layout = src.codec_context.layout
    channels = len(layout.channels)
    if layout.name.endswith("channels") and channels in _DEFAULT_LAYOUTS:
        out.codec_context.layout = _DEFAULT_LAYOUTS[channels]


def copy_container_tags(out: av.container.OutputContainer, src: av.container.InputContainer) -> None:
    """The input's container tags that are published (`published_tags`) and its chapter marks (a long
    recording's marks, like its title tag)."""
    for key, value in published_tags(src.metadata, _DROPPED_CONTAINER_TAGS).items():
        out.metadata[key] = value
    out.set_chapters(src.chapters())


def copy_audio_streams(out: av.container.OutputContainer, src: av.container.InputContainer, dst: Path) -> dict[int, av.audio.stream.AudioStream]:
    """A stream copy of each of the input's audio streams (tags, disposition, a named channel
    layout), by input stream index; OutputError naming the codec the container cannot take."""
    copies: dict[int, av.audio.stream.AudioStream] = {}
    for ia in audio_streams(src):
        try:
            oa = out.add_stream_from_template(ia)
        except (av.FFmpegError, ValueError) as error:
            raise OutputError(
                f"{dst}: cannot copy audio codec {ia.codec_context.name!r} into this container ({error_reason(error)})"
            ) from error
        _name_channel_layout(oa, ia)
        oa.metadata.update(published_tags(ia.metadata))
        oa.disposition = ia.disposition
        copies[ia.index] = oa
    return copies


class _Writer:
    """Output container: libx264 video stream plus stream copies of the input's audio.

    The video stream is configured from the first decoded frame (size, colour, display matrix);
    until then audio packets are held, because the first mux writes the header and freezes
    every stream's settings.
    """

    def __init__(
        self, src: av.container.InputContainer, tmp: Path, dst: Path, options: EncodeOptions
    ) -> None:
        self.dst = dst
        self.threads = options.threads
        self.audio_packets = 0  # copied
        self.audio_left_out = 0  # refused by the muxer as malformed (`mux_copied_audio`)
        self._options = options
        self._in_video = first_video_stream(src)
        self._pending: list[av.Packet] | None = []
        self._expected: deque[int] = deque()
        self._input_done = False
        self._pixel_tags: tuple[int, int] = (2, 0)  # (colorspace, range): unspecified until start()
        self.dropped: tuple[str, ...] = ()
        self._coded_size: tuple[int, int] | None = None  # (height, width) of the decoded frames
        try:
            options = exact_start_options(dst, self._in_video, audio_streams(src))
            self._out = av.open(str(tmp), mode="w", options=options)
        except (av.FFmpegError, OSError, ValueError) as error:
            raise OutputError(f"{dst}: cannot create output ({error_reason(error)})") from error
        try:
            self._setup_streams(src)
        except BaseException:
            self.abort()
            raise

    def _setup_streams(self, src: av.container.InputContainer) -> None:
        copy_container_tags(self._out, src)
        iv = self._in_video
        rate = self._options.rate or frame_rate(iv)
        try:
            self._video = self._out.add_stream("libx264", rate=rate or None)
        except (av.FFmpegError, ValueError) as error:
            raise OutputError(f"{self.dst}: cannot store H.264 video ({error_reason(error)})") from error
        # Stream.metadata is a plain dict copied into the stream at header time; assigning a new
        # dict would be forwarded to the codec context by PyAV's __setattr__, so update in place.
        self._video.metadata.update(published_tags(iv.metadata, _DROPPED_VIDEO_TAGS))
        self._video.disposition = iv.disposition
        self._audio = copy_audio_streams(self._out, src, self.dst)
        self.dropped = dropped_streams(src)

    def start(self, first: av.VideoFrame, size: tuple[int, int]) -> None:
        """Configure the encoder from the first decoded frame for pictures of `size` (width, height),
        then release held audio."""
        iv, ov = self._in_video, self._video
        cc = ov.codec_context
        # Same time base as the input: every output pts equals the input frame's pts.
        ov.time_base = iv.time_base
        cc.time_base = iv.time_base
        # H.264 4:2:0 has no odd sizes (its cropping works in steps of 2): an odd-sized video
        # (853 x 479, from screen recorders and crops) gets its last column / row repeated once.
        width, height = size
        cc.width, cc.height = width + width % 2, height + height % 2
        in_fmt = first.format.name
        cc.pix_fmt = self._options.pix_fmt or (in_fmt if in_fmt in _KEPT_PIX_FMTS else "yuv420p")
        cc.thread_type = "AUTO"
        cc.thread_count = self.threads
        options = {"crf": str(self._options.crf), "preset": self._options.preset}
        x264_params = _hdr10_params(first)
        fields = _interlacing(iv, first)
        if fields is not None:
            # Interlaced in, interlaced out: each field keeps its own lines and moment. Encoded as
            # progressive, the fields of a moving subject would show as combing on every player
            # (none deinterlaces a stream marked progressive). The order goes to x264 itself:
            # libx264 would take it from each frame's flags, which PyAV cannot set.
            cc.flags |= CodecFlags.interlaced_dct | CodecFlags.interlaced_me
            cc.field_order = 2 if fields == "tff" else 3
            x264_params.append(f"{fields}=1")
        if not self._options.b_frames or self.dst.suffix.lower() in NO_PTS_CONTAINERS:
            # Frames coded out of display order need their display times stored, which AVI and ASF
            # cannot: players would show them with the times of the coding order.
            x264_params.append("bframes=0")
        if x264_params:
            options["x264-params"] = ":".join(x264_params)
        cc.options = options
        sar = _sample_aspect_ratio(iv)
        if sar:
            cc.sample_aspect_ratio = sar
        cc.color_primaries = first.color_primaries
        cc.color_trc = first.color_trc
        cc.colorspace = first.colorspace
        cc.color_range = first.color_range
        # The encoder converts RGB->YUV with the matrix/range tagged on the RGB frame; untagged
        # it assumes BT.601 limited, which shifts colours of BT.709 (HD) or full-range sources.
        self._pixel_tags = (first.colorspace, first.color_range)
        self._coded_size = (height, width)
        matrix = side_data(first, SideDataType.DISPLAYMATRIX)
        if matrix is not None:
            ov.set_display_matrix(np.frombuffer(bytes(matrix), dtype=np.int32).tolist())
        pending, self._pending = self._pending, None
        for packet in pending or ():
            self._mux_audio(packet)

    def copy_audio(self, packet: av.Packet) -> None:
        """Mux an input audio packet unchanged (PyAV rescales pts/dts if the time base differs)."""
        packet.stream = self._audio[packet.stream.index]
        if self._pending is not None:
            self._pending.append(packet)
        else:
            self._mux_audio(packet)

    def _mux_audio(self, packet: av.Packet) -> None:
        try:
            copied = mux_copied_audio(self._out, packet)
        except (av.FFmpegError, OSError, ValueError) as error:
            raise OutputError(f"{self.dst}: cannot write ({error_reason(error)})") from error
        if copied:
            self.audio_packets += 1
        else:
            self.audio_left_out += 1

    def encode_all(
        self, frames: Iterable[Frame], progress: Callable[[int], None] | None
    ) -> int:
        """Encode frames in order, checking each against the pts the decoder handed out."""
        count = 0
        for frame in self._checked(frames):
            self._encode(frame)
            count += 1
            if progress is not None:
                progress(count)
        for packet in self._encode_packets(None):
            self._mux(packet)
        return count

    def issued(self, pts: int) -> None:
        """Record a frame handed to the transform (called by `_frames`)."""
        self._expected.append(pts)

    def input_done(self) -> None:
        """Record that the input was read to its end (called by `_frames`)."""
        self._input_done = True

    def _checked(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """Enforce the transform contract: every issued frame comes back once, in order."""
        index = 0
        for frame in frames:
            if not self._expected or frame.index != index or frame.pts != self._expected[0]:
                due = f"frame {index} (pts {self._expected[0]})" if self._expected else "nothing"
                raise ValueError(
                    f"transform yielded frame {frame.index} (pts {frame.pts}) where {due} was due"
                )
            self._expected.popleft()
            index += 1
            yield frame
        if self._expected or not self._input_done:
            raise ValueError(f"transform stopped after {index} frames without returning them all")

    def _encode(self, frame: Frame) -> None:
        cc = self._video.codec_context
        if frame.yuv is not None:
            # Held as decoded: no colour conversion (none at all when the encoder's format is the
            # input's, as it is unless EncodeOptions.pix_fmt says otherwise).
            if (frame.height, frame.width) != (cc.height, cc.width):
                raise ValueError(
                    f"frame {frame.index}: expected a {cc.width}x{cc.height} frame, got {frame.width}x{frame.height}"
                )
            vframe = frame._video_frame(frame.yuv)
        else:
            rgb = frame.rgb
            if rgb.ndim == 3 and rgb.shape[:2] != (cc.height, cc.width) and rgb.shape[:2] == self._coded_size:
                rgb = np.pad(rgb, ((0, cc.height - rgb.shape[0]), (0, cc.width - rgb.shape[1]), (0, 0)), mode="edge")
            if rgb.dtype != np.uint8 or rgb.shape != (cc.height, cc.width, 3):
                raise ValueError(
                    f"frame {frame.index}: expected uint8 array of shape {(cc.height, cc.width, 3)}, "
                    f"got {rgb.dtype} {rgb.shape}"
                )
            # Zero-copy wrap: the encoder converts it to YUV inside encode(), before `rgb` can change.
            vframe = av.VideoFrame.from_numpy_buffer(np.ascontiguousarray(rgb), format="rgb24")
            vframe.colorspace, vframe.color_range = self._pixel_tags
        vframe.pts = frame.pts
        # The input time base, not self._video.time_base: the muxer may have changed the
        # stream's (MP4 raises 1/50 to 1/12800) and PyAV would rescale pts into the coarse one.
        vframe.time_base = self._in_video.time_base
        for packet in self._encode_packets(vframe):
            self._mux(packet)

    def _encode_packets(self, vframe: av.VideoFrame | None) -> list[av.Packet]:
        try:
            return self._video.encode(vframe)
        except av.FFmpegError as error:
            raise OutputError(f"{self.dst}: H.264 encoding failed ({error_reason(error)})") from error

    def _mux(self, packet: av.Packet) -> None:
        try:
            self._out.mux(packet)
        except (av.FFmpegError, OSError, ValueError) as error:
            raise OutputError(f"{self.dst}: cannot write ({error_reason(error)})") from error

    def close(self) -> None:
        """Write the trailer; the file is complete afterwards."""
        try:
            self._out.close()
        except (av.FFmpegError, OSError) as error:
            raise OutputError(f"{self.dst}: cannot finish writing ({error_reason(error)})") from error

    def abort(self) -> None:
        """Release the output file after a failure (its content is discarded by the caller)."""
        try:
            self._out.close()
        except Exception:
            # The file is deleted next; a failing trailer write must not mask the first error.
            pass
