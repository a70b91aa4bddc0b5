"""Smart render: the GOPs with nothing to redact are copied bit-exact, only the others re-encoded.

A GOP (a keyframe and the frames up to the next) whose frames hold no box to redact keeps its
packets exactly as they came; a GOP with one is decoded, redacted and encoded again by libx264
into a GOP that starts on an IDR frame, so that it stands alone between copied ones. How the two
kinds of GOP live in one stream that every decoder plays:

- Parameter sets: x264's SPS / PPS get ids the input's do not use (`sps-id`), and the output's
  sample entry (avcC, Matroska's CodecPrivate) lists both the input's sets and x264's: a conformant
  `avc1` stream, with no parameter set in-band. x264's are those of a probe encoder with the same
  settings, made before the header is written; every GOP's encoder must give the very same.
- Profile and level: the input's (baseline / main / high, its level), so that the stream's header
  still tells a player the truth. Bit depth, chroma and size are the input's too.
- Timing: the re-encoded GOP has no B-frames (decode order = display order), each frame keeps its
  pts, and its packets take the input GOP's decode timestamps in order: the dts of the whole stream
  are the input's, increasing across every join, and each is at most its packet's pts.
- NAL units: libx264's Annex B start codes become the input's length prefixes.

What it cannot do safely it refuses up front, with a reason (`smart_refusal`); the caller then
renders the whole video as before and says why.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import av

from limelight.errors import OutputError
from limelight.video import (
    Frame,
    EncodeOptions,
    audio_streams,
    check_audio_damage,
    copy_audio_streams,
    copy_container_tags,
    dropped_streams,
    error_reason,
    exact_start_options,
    first_video_stream,
    frame_rate,
    mux_copied_audio,
    published_tags,
    temporary_path,
    _check_input_file,
    _check_output_path,
    _DROPPED_VIDEO_TAGS,
)

SMART_CONTAINERS = frozenset({".mp4", ".mov", ".m4v", ".mkv"})
_PROFILES = {66: "baseline", 77: "main", 100: "high"}  # profile_idc -> x264's name (8-bit 4:2:0 only)
_PIX_FMTS = frozenset({"yuv420p", "yuvj420p"})
_SPS, _PPS = 7, 8

Redact = Callable[[Frame], None]


class SmartRenderError(Exception):
    """Smart render met something it did not foresee half-way; the caller renders in full instead."""


@dataclass
class Gop:
    """One GOP of the input: its first frame (display order index), its frame count, its packets'
    decode timestamps, and how many of its packets (in decode order) are copied: all of them when
    it has nothing to redact, else those of the frames shown before the first one to redact (when
    no later frame is decoded among them), the rest re-encoded from an IDR frame."""

    first_frame: int
    frames: int
    dts: list[int]
    copied: int = 0

    @property
    def redact(self) -> bool:
        return self.copied < self.frames


def copied_prefix(shown: list[int], first: int, redact_from: int | None) -> int:
    """How many packets of a GOP (their frames' display indices `shown`, in decode order, the GOP's
    first frame `first`) can be copied before re-encoding from `redact_from` (None: nothing to
    redact): the longest decode-order prefix that holds exactly the frames `first`, `first + 1`,
    ... before `redact_from` (B-frames shown later but decoded earlier end it sooner)."""
    if redact_from is None:
        return len(shown)
    best, top = 0, -1
    for k, index in enumerate(shown):
        top = max(top, index)
        if top >= redact_from:
            break
        if top == first + k:  # the first k + 1 packets are exactly frames first .. first + k
            best = k + 1
    return best


@dataclass
class SmartStats:
    frames: int = 0
    audio_packets: int = 0
    gops_copied: int = 0
    gops_encoded: int = 0
    frames_copied: int = 0
    frames_encoded: int = 0
    seconds_copied: float = 0.0
    seconds_encoded: float = 0.0
    seconds: float = 0.0
    dropped_streams: tuple[str, ...] = ()
    audio_left_out: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "gops_copied": self.gops_copied, "gops_encoded": self.gops_encoded,
            "frames_copied": self.frames_copied, "frames_encoded": self.frames_encoded,
            "seconds_copied": round(self.seconds_copied, 3), "seconds_encoded": round(self.seconds_encoded, 3),
        }


@dataclass
class _Layout:
    """What smart render needs to know of the input's video stream."""

    pts: list[int] = field(default_factory=list)  # every packet's, in decode order
    dts: list[int] = field(default_factory=list)
    keys: list[int] = field(default_factory=list)  # packet indices of keyframes


# -- H.264 bitstream bits ---------------------------------------------------------------------------
class _Bits:
    """An RBSP bit reader for the few Exp-Golomb fields of parameter sets that smart render reads."""

    def __init__(self, data: bytes) -> None:
        self.data = data.replace(b"\x00\x00\x03", b"\x00\x00")  # emulation prevention, enough here
        self.pos = 0

    def bit(self) -> int:
        byte = self.data[self.pos >> 3]
        self.pos += 1
        return (byte >> (7 - ((self.pos - 1) & 7))) & 1

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code")
        value = 1
        for _ in range(zeros):
            value = (value << 1) | self.bit()
        return value - 1


def _sps_id(nal: bytes) -> int:
    bits = _Bits(nal[4:])  # after the NAL header, profile_idc, constraint flags, level_idc
    return bits.ue()


def _pps_id(nal: bytes) -> int:
    return _Bits(nal[1:]).ue()


@dataclass(frozen=True)
class AvcConfig:
    """An AVCDecoderConfigurationRecord (avcC): profile, level, length size, parameter sets."""

    profile: int
    compatibility: int
    level: int
    length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    tail: bytes = b""  # High profiles' chroma / bit depth fields, kept as they were

    @classmethod
    def parse(cls, data: bytes) -> AvcConfig:
        if len(data) < 7 or data[0] != 1:
            raise ValueError("not an avcC record")
        length_size = (data[4] & 3) + 1
        count, pos, sps = data[5] & 31, 6, []
        for _ in range(count):
            n = int.from_bytes(data[pos:pos + 2], "big")
            sps.append(bytes(data[pos + 2:pos + 2 + n]))
            pos += 2 + n
        count, pos, pps = data[pos], pos + 1, []
        for _ in range(count):
            n = int.from_bytes(data[pos:pos + 2], "big")
            pps.append(bytes(data[pos + 2:pos + 2 + n]))
            pos += 2 + n
        if not sps or not pps or pos > len(data):
            raise ValueError("avcC record without parameter sets")
        return cls(data[1], data[2], data[3], length_size, tuple(sps), tuple(pps), bytes(data[pos:]))

    def build(self) -> bytes:
        out = bytearray([1, self.profile, self.compatibility, self.level, 0xFC | (self.length_size - 1), 0xE0 | len(self.sps)])
        for nal in self.sps:
            out += len(nal).to_bytes(2, "big") + nal
        out.append(len(self.pps))
        for nal in self.pps:
            out += len(nal).to_bytes(2, "big") + nal
        return bytes(out + self.tail)


def annexb_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream (3- or 4-byte start codes)."""
    units, i, n = [], 0, len(data)
    starts = []
    while i < n - 2:
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            starts.append(i + 3)
            i += 3
        else:
            i += 1
    for k, start in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else n
        unit = data[start:end]
        while unit.endswith(b"\x00") and k + 1 < len(starts):  # the zero byte of a 4-byte start code
            unit = unit[:-1]
        if unit:
            units.append(bytes(unit))
    return units


def length_prefixed(units: Iterable[bytes], size: int) -> bytes:
    return b"".join(len(u).to_bytes(size, "big") + u for u in units)


# -- refusing what it cannot do -----------------------------------------------------------------------
def _units(data: bytes, length_size: int) -> Iterable[bytes]:
    """The NAL units of a length-prefixed (avc1) packet."""
    pos = 0
    while pos + length_size <= len(data):
        n = int.from_bytes(data[pos:pos + length_size], "big")
        yield data[pos + length_size:pos + length_size + n]
        pos += length_size + n


def _layout(container: av.container.InputContainer, video: av.video.stream.VideoStream, config: AvcConfig | None = None) -> _Layout:
    """Packet timestamps and keyframes; with `config`, SmartRenderError for a keyframe carrying a
    parameter set the sample entry does not hold (the picture changes size or settings mid-stream)."""
    layout = _Layout()
    for packet in container.demux(video):
        if packet.size == 0:
            continue
        if packet.pts is None or packet.dts is None:
            raise SmartRenderError("packets without timestamps")
        if packet.is_keyframe:
            if config is not None:
                for unit in _units(bytes(packet), config.length_size):
                    if unit and unit[0] & 31 in (_SPS, _PPS) and unit not in config.sps + config.pps:
                        raise SmartRenderError("its parameter sets change mid-stream (a new picture size or encoder)")
            layout.keys.append(len(layout.pts))
        layout.pts.append(packet.pts)
        layout.dts.append(packet.dts)
    return layout


def smart_refusal(src: Path, dst: Path, options: EncodeOptions, frames: int | None, mark_faces: bool = False,
                  segment: bool = False) -> str | None:
    """Why `src` cannot be smart-rendered into `dst` (None: it can). Reads packet headers only,
    and decodes the first frame (interlacing). `frames`: the plan's frame count (None: not checked).
    `segment`: `src` is a workflow segment of a video the workflow smart-renders (not a whole file)."""
    if dst.suffix.lower() not in SMART_CONTAINERS:
        return f"the output container ({dst.suffix or 'none'}) is not MP4, QuickTime or Matroska"
    if mark_faces:
        return "--mark-faces draws on every face"
    if options.size or options.start_pts is not None or (not options.whole_file and not segment) or options.pix_fmt:
        return "a segment or a forced picture size or format"
    if options.crf == 0:
        return "lossless encoding (--crf 0) needs an H.264 profile other than the input's"
    try:
        with av.open(str(src)) as container:
            video = first_video_stream(container)
            if video is None:
                return "no video stream"
            cc = video.codec_context
            if cc.name != "h264":
                return f"the video is {cc.name.upper()}, not H.264"
            if cc.pix_fmt not in _PIX_FMTS:
                return f"the video is {cc.pix_fmt}, not 8-bit 4:2:0"
            try:
                config = AvcConfig.parse(bytes(cc.extradata or b""))
            except ValueError:
                return "the H.264 stream carries its parameter sets in-band (no avcC), as a transport stream does"
            if config.profile not in _PROFILES:
                return f"H.264 profile {cc.profile} (profile_idc {config.profile}) cannot be matched"
            if len(container.streams.video) > 1:
                return "more than one video stream"
            layout = _layout(container, video, config)
        if not layout.keys or layout.keys[0] != 0:
            return "the video does not start on a keyframe"
        if frames is not None and len(layout.pts) != frames:
            return f"the video has {len(layout.pts)} packets for {frames} frames"
        if len(set(layout.pts)) != len(layout.pts):
            return "two frames share a timestamp"
        bounds = layout.keys + [len(layout.pts)]
        for a, b in zip(bounds, bounds[1:]):
            if min(layout.pts[a:b]) < layout.pts[a]:
                return "open GOPs (frames before a keyframe are predicted across it)"
            if a and min(layout.pts[a:b]) < max(layout.pts[:a]):
                return "frames of one GOP are shown among another's"
        with av.open(str(src)) as container:
            first = next(container.decode(video=0))
            if first.interlaced_frame:
                return "interlaced video"
    except SmartRenderError as error:
        return str(error)
    except (av.FFmpegError, OSError, StopIteration) as error:
        return f"the video could not be read ahead ({error_reason(error) if isinstance(error, av.FFmpegError) else error})"
    return None


# -- the render -----------------------------------------------------------------------------------------
class _Encoder:
    """libx264 settings matching the input; `new()` gives a fresh encoder (one per re-encoded GOP)."""

    def __init__(self, video: av.video.stream.VideoStream, config: AvcConfig, first: av.VideoFrame, options: EncodeOptions) -> None:
        used = {_sps_id(s) for s in config.sps} | {_pps_id(p) for p in config.pps}
        self.param_id = next(i for i in range(1, 32) if i not in used)
        src = video.codec_context
        # Plain values: the stream's container is closed before the encoders are made.
        self.size, self.pix_fmt, self.sar = (src.width, src.height), src.pix_fmt, src.sample_aspect_ratio
        # The rate x264 writes in its SPS: the whole video's for a workflow segment (`EncodeOptions.rate`),
        # so that every segment's parameter sets are the same.
        self.time_base, self.rate = video.time_base, options.rate or frame_rate(video)
        self.colour = (first.color_primaries, first.color_trc, first.colorspace, first.color_range)
        self.options = options
        level = f"{config.level // 10}.{config.level % 10}"
        params = [f"sps-id={self.param_id}", "bframes=0", "keyint=infinite", "scenecut=0", "repeat-headers=0"]
        self.settings = {"crf": str(options.crf), "preset": options.preset, "profile": _PROFILES[config.profile],
                         "level": level, "x264-params": ":".join(params)}
        probe = self.new()
        probe.open()
        units = annexb_units(bytes(probe.extradata or b""))
        self.sps = tuple(u for u in units if u[0] & 31 == _SPS)
        self.pps = tuple(u for u in units if u[0] & 31 == _PPS)
        if len(self.sps) != 1 or len(self.pps) != 1 or _sps_id(self.sps[0]) != self.param_id:
            raise SmartRenderError("x264 did not give one SPS and one PPS of its own id")
        self.extradata = bytes(probe.extradata)

    def new(self) -> av.video.codeccontext.VideoCodecContext:
        cc = av.CodecContext.create("libx264", "w")
        (cc.width, cc.height), cc.pix_fmt = self.size, self.pix_fmt
        cc.time_base = self.time_base
        if self.rate:
            cc.framerate = self.rate
        if self.sar:
            cc.sample_aspect_ratio = self.sar
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = self.colour
        cc.flags |= av.codec.context.Flags.global_header  # parameter sets in extradata, not in packets
        cc.thread_count = self.options.threads
        cc.thread_type = "AUTO"
        cc.options = dict(self.settings)
        return cc


def smart_render(src: Path, dst: Path, frames: int, first_redacted: Callable[[int, int], int | None], redact: Redact,
                 options: EncodeOptions = EncodeOptions(), progress: Callable[[int], None] | None = None,
                 parameter_sets: bool = False) -> SmartStats:
    """Write `dst` from `src`, copying every GOP for which `first_redacted(first_frame, frames)` (the
    first frame of the GOP with a box to redact) is None, and re-encoding the others from that frame
    on (`copied_prefix`) through `redact(frame)`; audio copied as the full render copies it.
    Written under a temporary name, renamed when complete. Call `smart_refusal` first.

    `parameter_sets`: list x264's parameter sets in the sample entry even when no GOP is
    re-encoded, so that every smart-rendered segment of one video has the same one and they join
    (`segments.join` copies the first segment's)."""
    started = time.perf_counter()
    _check_input_file(src)
    _check_output_path(src, dst)
    with av.open(str(src)) as container:
        layout = _layout(container, first_video_stream(container))
    if len(layout.pts) != frames:
        raise SmartRenderError(f"the video has {len(layout.pts)} packets for {frames} frames")
    order = sorted(range(len(layout.pts)), key=layout.pts.__getitem__)
    index_of = {layout.pts[p]: i for i, p in enumerate(order)}  # pts -> display index
    bounds = layout.keys + [len(layout.pts)]
    gops = []
    for a, b in zip(bounds, bounds[1:]):
        shown = [index_of[layout.pts[p]] for p in range(a, b)]
        first = min(shown)
        gops.append(Gop(first, b - a, layout.dts[a:b], copied_prefix(shown, first, first_redacted(first, b - a))))

    tmp = temporary_path(dst)
    stats = SmartStats()
    try:
        with av.open(str(src)) as container:
            video = first_video_stream(container)
            config = AvcConfig.parse(bytes(video.codec_context.extradata))
            rate = frame_rate(video)
            first_frame = next(container.decode(video=0))
            # (a stream's fields must not be read once its container is closed: PyAV crashes)
            try:
                encoder = _Encoder(video, config, first_frame, options) if parameter_sets or any(g.redact for g in gops) else None
            except av.FFmpegError as error:  # x264 refuses the input's profile / level with these settings
                raise SmartRenderError(f"libx264 cannot match the stream ({error_reason(error)})") from error
        with av.open(str(src)) as container:
            try:
                _write(container, tmp, dst, gops, config, encoder, index_of, redact, stats, progress)
            except OSError as error:  # a full disk, a folder gone: the output's problem, not the stream's
                raise OutputError(f"{dst}: cannot write ({error_reason(error) if isinstance(error, av.FFmpegError) else error})") from error
            except av.FFmpegError as error:  # a GOP that does not decode or encode cleanly: render in full
                raise SmartRenderError(f"{type(error).__name__}: {error_reason(error)}") from error
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    per_frame = 1 / float(rate) if rate else 0.0
    stats.gops_encoded = sum(g.redact for g in gops)
    stats.gops_copied = len(gops) - stats.gops_encoded
    stats.frames_copied = sum(g.copied for g in gops)
    stats.frames = sum(g.frames for g in gops)
    stats.frames_encoded = stats.frames - stats.frames_copied
    stats.seconds_copied, stats.seconds_encoded = stats.frames_copied * per_frame, stats.frames_encoded * per_frame
    stats.seconds = time.perf_counter() - started
    return stats


def _write(container: av.container.InputContainer, tmp: Path, dst: Path, gops: list[Gop], config: AvcConfig,
           encoder: _Encoder | None, index_of: dict[int, int], redact: Redact, stats: SmartStats,
           progress: Callable[[int], None] | None) -> None:
    video = first_video_stream(container)
    audio = audio_streams(container)
    try:
        out = av.open(str(tmp), mode="w", options=exact_start_options(dst, video, audio))
    except (av.FFmpegError, OSError, ValueError) as error:
        raise OutputError(f"{dst}: cannot create output ({error_reason(error)})") from error
    try:
        copy_container_tags(out, container)
        ov = out.add_stream_from_template(video)
        ov.metadata.update(published_tags(video.metadata, _DROPPED_VIDEO_TAGS))
        ov.disposition = video.disposition
        if encoder is not None:
            merged = AvcConfig(config.profile, config.compatibility, config.level, config.length_size,
                               config.sps + encoder.sps, config.pps + encoder.pps, config.tail)
            ov.codec_context.extradata = merged.build()
        outs = copy_audio_streams(out, container, dst)
        stats.dropped_streams = dropped_streams(container)

        gop_index, held, done = -1, [], 0
        in_video = 0

        def flush(gop: Gop, packets: list[av.Packet]) -> int:
            for packet in packets[:gop.copied]:
                packet.stream = ov
                out.mux(packet)
            if gop.redact:
                _encode_gop(gop, packets, ov, out, config, encoder, index_of, redact, video)
            return len(packets)

        for packet in container.demux(video, *audio):
            if packet.stream.index != video.index:
                if packet.dts is None and packet.size == 0:
                    continue
                packet.stream = outs[packet.stream.index]
                if mux_copied_audio(out, packet):
                    stats.audio_packets += 1
                else:
                    stats.audio_left_out += 1
                continue
            if packet.size == 0:
                continue
            if packet.is_keyframe:
                if gop_index >= 0:
                    done += flush(gops[gop_index], held)
                    if progress:
                        progress(done)
                gop_index, held = gop_index + 1, []
            held.append(packet)
            in_video += 1
        if gop_index >= 0:
            done += flush(gops[gop_index], held)
            if progress:
                progress(done)
        if gop_index + 1 != len(gops):
            raise SmartRenderError("the video's keyframes changed between two readings")
        check_audio_damage(Path(container.name), stats.audio_left_out, stats.audio_packets)
        out.close()
    except BaseException:
        try:
            out.close()
        except Exception:  # the file is deleted next; keep the first error
            pass
        raise


def _encode_gop(gop: Gop, packets: list[av.Packet], ov: av.video.stream.VideoStream, out: av.container.OutputContainer,
                config: AvcConfig, encoder: _Encoder, index_of: dict[int, int], redact: Redact,
                video: av.video.stream.VideoStream) -> None:
    """Decode one closed GOP, redact its frames from its first re-encoded one (`gop.copied` packets in,
    their frames already copied) and encode them from an IDR frame, muxed with the input's dts."""
    decoder = av.CodecContext.create("h264", "r")
    decoder.extradata = bytes(video.codec_context.extradata)
    enc = encoder.new()
    encoded: list[av.Packet] = []
    count = 0

    def take(frame: av.VideoFrame) -> None:
        nonlocal count
        index = index_of.get(frame.pts)
        if index is None:
            raise SmartRenderError(f"a decoded frame's timestamp {frame.pts} is not one of the input's")
        if index < gop.first_frame + gop.copied:
            return  # shown before the re-encoded part: its packet was copied
        held = Frame(index, frame.pts, float(frame.pts * video.time_base), yuv=frame.to_ndarray(),
                     pix_fmt=frame.format.name, colorspace=frame.colorspace, color_range=frame.color_range)
        redact(held)
        if held.yuv is not None:
            out_frame = av.VideoFrame.from_ndarray(held.yuv, format=held.pix_fmt)
        else:
            out_frame = av.VideoFrame.from_ndarray(held.rgb, format="rgb24").reformat(format=frame.format.name)
        out_frame.colorspace, out_frame.color_range = frame.colorspace, frame.color_range
        out_frame.pts, out_frame.time_base = frame.pts, video.time_base
        if count == 0:
            out_frame.pict_type = av.video.frame.PictureType.I
        count += 1
        encoded.extend(enc.encode(out_frame))

    for packet in packets:
        for frame in decoder.decode(packet):
            take(frame)
    for frame in decoder.decode(None):
        take(frame)
    encoded.extend(enc.encode(None))
    if bytes(enc.extradata or b"") != encoder.extradata:
        raise SmartRenderError("x264 gave a GOP other parameter sets than its probe")
    wanted = gop.frames - gop.copied
    if count != wanted or len(encoded) != wanted:
        raise SmartRenderError(f"{wanted} frames of a GOP to re-encode decoded to {count} and encoded to {len(encoded)}")
    if not encoded[0].is_keyframe:
        raise SmartRenderError("a re-encoded GOP does not start on a keyframe")
    for packet, dts in zip(encoded, gop.dts[gop.copied:]):
        units = [u for u in annexb_units(bytes(packet)) if u[0] & 31 not in (_SPS, _PPS)]
        data = length_prefixed(units, config.length_size)
        copy = av.Packet(data)
        copy.pts, copy.dts = packet.pts, dts
        copy.time_base = video.time_base
        copy.is_keyframe = packet.is_keyframe
        copy.stream = ov
        out.mux(copy)
