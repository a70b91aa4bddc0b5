"""Behaviour of limelight.video: streaming transcode that keeps timing, audio and metadata.

Real clips come from the shared data folder (skipped when absent); the timing rules are also
checked on small synthetic clips written with PyAV into tmp_path.
"""

from __future__ import annotations

import collections
import hashlib
import math
import os
import weakref
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import limelight.video as video_module
from limelight.errors import InputError, LimeLightError, OutputError
from limelight.video import EncodeOptions, Frame, demux, iter_frames, open_media, probe, transcode
from tests.media import (
    audio_packets,
    cut_mid_gop,
    damaged_copy,
    decoded_pictures,
    flv_with_late_sound,
    frame_times,
    live_ts_with_damaged_audio,
    size_switching_clip,
    ts_recording,
    ts_with_late_sound,
    ts_with_silent_sound,
)

HAMILTON = "hamilton_white_house_short_clip.mp4"
PORTRAIT = "portrait_single_person_egoblur_gen1.mp4"


# ---------------------------------------------------------------- helpers


def _write_clip(
    path: Path,
    *,
    frames: int = 24,
    size: tuple[int, int] = (64, 48),
    rate: Fraction = Fraction(25),
    time_base: Fraction | None = None,
    pts: list[int] | None = None,
    audio: bool = False,
    rotation: int | None = None,
    bt709: bool = False,
    pixels: np.ndarray | None = None,
    title: str | None = None,
    tags: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    pix_fmt: str = "yuv420p",
) -> Path:
    """Write a small H.264 clip (moving gradient, optional AAC tone) and return its path.

    pts default to one frame per 1/rate in `time_base` (default 1/rate); explicit `pts` give
    irregular or offset timestamps.
    """
    width, height = size
    time_base = time_base or Fraction(1) / rate
    if pts is None:
        step = round(1 / (rate * time_base))
        pts = [i * step for i in range(frames)]
    with av.open(str(path), "w", options=container_options or {}) as out:
        if title:
            out.metadata["title"] = title
        out.metadata.update(tags or {})
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.time_base = time_base
        video.codec_context.time_base = time_base
        video.options = {"preset": "ultrafast"}
        if rotation is not None:
            video.set_display_rotation(rotation)
        if bt709:
            cc = video.codec_context
            cc.color_primaries = cc.color_trc = cc.colorspace = 1
            cc.color_range = 1
        sound = None
        if audio:
            sound = out.add_stream("aac", rate=48000)
            sound.layout = "mono"
        ramp = np.linspace(0, 200, width, dtype=np.float32)
        for i, p in enumerate(pts):
            if pixels is not None:
                rgb = pixels
            else:
                rgb = np.empty((height, width, 3), np.uint8)
                rgb[..., 0] = (ramp + 3 * i) % 256
                rgb[..., 1] = 80
                rgb[..., 2] = (np.arange(height)[:, None] * 4) % 256
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if bt709:
                frame.colorspace, frame.color_range = 1, 1
            frame.pts, frame.time_base = p, time_base
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            seconds = float((pts[-1] + round(1 / (rate * time_base))) * time_base)
            t = np.arange(1024, dtype=np.float32) / 48000
            for k in range(math.ceil(seconds * 48000 / 1024)):
                tone = 0.2 * np.sin(2 * np.pi * 440 * (t + k * 1024 / 48000))
                chunk = av.AudioFrame.from_ndarray(tone[None, :], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 48000, k * 1024
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return path


def _video_packets(path: Path) -> list[tuple[Fraction, Fraction]]:
    """(pts, dts) in seconds of the video packets, in file order."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return [
            (p.pts * stream.time_base, p.dts * stream.time_base)
            for p in c.demux(stream)
            if p.size
        ]


def _audio_packets(path: Path) -> list[list[tuple[bytes, Fraction, Fraction]]]:
    """Per audio stream: (payload, pts, dts) with times in seconds, in demux order."""
    with av.open(str(path)) as c:
        count = len(c.streams.audio)
    result = []
    for n in range(count):
        # A fresh open per stream: seeking back to 0 may land after the first audio packets.
        with av.open(str(path)) as c:
            stream = c.streams.audio[n]
            result.append(
                [
                    (bytes(p), p.pts * stream.time_base, p.dts * stream.time_base)
                    for p in c.demux(stream)
                    if p.size
                ]
            )
    return result


def _worst_av_gap(path: Path) -> float:
    """Largest distance (s) between the latest audio and video dts while reading the file."""
    latest: dict[str, float] = {}
    worst = 0.0
    with av.open(str(path)) as c:
        for p in c.demux():
            if p.size and p.dts is not None:
                latest[p.stream.type] = float(p.dts * p.time_base)
                if len(latest) == 2:
                    worst = max(worst, abs(latest["video"] - latest["audio"]))
    return worst


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hold_back(n: int):
    """A look-ahead transform like the engine's: keeps `n` frames buffered before releasing."""

    def transform(frames):
        buffer: collections.deque[Frame] = collections.deque()
        for frame in frames:
            buffer.append(frame)
            if len(buffer) > n:
                yield buffer.popleft()
        yield from buffer

    return transform


# ---------------------------------------------------------------- real clip: identity transcode


@pytest.fixture(scope="module")
def hamilton_pair(clip, tmp_path_factory) -> tuple[Path, Path]:
    """(input, output of an identity transcode) of the Hamilton clip (video starts at 0.852 s)."""
    src = clip(HAMILTON)
    dst = tmp_path_factory.mktemp("hamilton") / "out.mp4"
    transcode(src, dst)
    return src, dst


@pytest.mark.slow
def test_identity_transcode_keeps_frame_count_and_every_pts(hamilton_pair):
    # GIVEN the Hamilton clip WHEN transcoded without processing
    src, dst = hamilton_pair
    # THEN every frame is there with exactly its original presentation time
    assert frame_times(dst) == frame_times(src)
    assert len(frame_times(dst)) == 275


@pytest.mark.slow
def test_identity_transcode_copies_audio_packets_bit_exact(hamilton_pair):
    src, dst = hamilton_pair
    before, after = _audio_packets(src), _audio_packets(dst)
    assert len(after) == len(before) == 1
    assert len(after[0]) == 431
    assert after == before


@pytest.mark.slow
def test_identity_transcode_keeps_av_offset_and_duration(hamilton_pair):
    src, dst = hamilton_pair
    src_info, dst_info = probe(src), probe(dst)
    # THEN the video still starts 0.852 s in, the audio where it did, the length within a frame
    assert dst_info.start_time == pytest.approx(0.852, abs=1e-3)
    assert dst_info.start_time == src_info.start_time
    assert _audio_packets(dst)[0][0][1] == _audio_packets(src)[0][0][1]
    assert abs(dst_info.duration - src_info.duration) <= 1 / float(src_info.fps)
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        assert abs(a.duration - b.duration) / av.time_base <= 1 / float(src_info.fps)


@pytest.mark.slow
def test_encoder_reorders_b_frames_yet_packet_pts_equal_input_pts(hamilton_pair):
    src, dst = hamilton_pair
    packets = _video_packets(dst)
    # THEN libx264 used B-frames (decode order differs from display order) ...
    assert any(pts != dts for pts, dts in packets)
    # ... and the packet timestamps are exactly the input frames' ones
    assert sorted(pts for pts, _ in packets) == frame_times(src)


@pytest.mark.slow
def test_identity_transcode_keeps_colour_tags_aspect_and_pixels(hamilton_pair):
    src, dst = hamilton_pair
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        ca, cb = a.streams.video[0].codec_context, b.streams.video[0].codec_context
        tags = ("color_primaries", "color_trc", "colorspace", "color_range", "pix_fmt")
        assert [getattr(cb, t) for t in tags] == [getattr(ca, t) for t in tags]
        assert cb.sample_aspect_ratio == ca.sample_aspect_ratio == 1
        assert dict(b.streams.audio[0].metadata)["language"] == "eng"
    first_in = next(iter_frames(src))[2].astype(np.int16)
    first_out = next(iter_frames(dst))[2].astype(np.int16)
    assert np.abs(first_in - first_out).mean() < 3


@pytest.mark.slow
def test_lookahead_transform_keeps_audio_and_interleaving_on_real_clip(clip, tmp_path):
    # GIVEN the engine holds 10 frames back before releasing them
    src = clip(HAMILTON)
    dst = tmp_path / "held.mp4"
    # WHEN transcoding
    stats = transcode(src, dst, transform=_hold_back(10))
    # THEN nothing is lost or moved, and audio/video stay interleaved in the file
    assert stats.frames == 275 and stats.audio_packets == 431
    assert frame_times(dst) == frame_times(src)
    assert _audio_packets(dst) == _audio_packets(src)
    assert _worst_av_gap(dst) < 0.5


def test_probe_reports_timing_and_streams_of_real_clip(clip):
    info = probe(clip(HAMILTON))
    assert (info.width, info.height) == (640, 360)
    assert info.fps == Fraction(2997, 100)
    assert info.frame_count == 275
    assert info.time_base == Fraction(1, 11988)
    assert info.start_time == pytest.approx(0.852, abs=1e-3)
    assert info.has_audio and info.audio_streams == 1
    assert info.codec == "h264" and info.pix_fmt == "yuv420p" and info.rotation == 0


def test_probe_of_portrait_clip_without_audio(clip):
    info = probe(clip(PORTRAIT))
    assert (info.width, info.height) == (608, 1080)
    assert not info.has_audio
    assert info.frame_count == 600


# ---------------------------------------------------------------- synthetic clips: timing rules


def test_process_callback_output_is_what_gets_encoded(tmp_path):
    # GIVEN a clip and a callback that blacks out every frame
    src = _write_clip(tmp_path / "in.mp4", frames=12)
    seen: list[int] = []

    def blacken(rgb: np.ndarray, index: int) -> np.ndarray:
        seen.append(index)
        rgb[:] = 0
        return rgb

    # WHEN transcoding
    stats = transcode(src, tmp_path / "out.mp4", blacken)
    # THEN the callback saw each frame once in order and the output is black
    assert seen == list(range(12))
    assert stats.frames == 12
    means = [rgb.mean() for _, _, rgb in iter_frames(tmp_path / "out.mp4")]
    assert len(means) == 12 and max(means) < 2


def test_callback_may_return_a_new_array(tmp_path):
    src = _write_clip(tmp_path / "in.mp4", frames=6)
    transcode(src, tmp_path / "out.mp4", lambda rgb, i: np.full_like(rgb, 255))
    assert min(rgb.mean() for _, _, rgb in iter_frames(tmp_path / "out.mp4")) > 250


def test_ntsc_rate_clip_keeps_fractional_rate_pts_and_audio(tmp_path):
    # GIVEN a 29.97 fps clip (time base 1/30000) with AAC audio
    src = _write_clip(
        tmp_path / "ntsc.mp4", frames=30, rate=Fraction(30000, 1001),
        time_base=Fraction(1, 30000), audio=True, title="ntsc test",
    )
    dst = tmp_path / "out.mp4"
    transcode(src, dst)
    info = probe(dst)
    assert info.fps == Fraction(30000, 1001)
    assert info.time_base == Fraction(1, 30000)
    assert frame_times(dst) == frame_times(src)
    assert _audio_packets(dst) == _audio_packets(src)
    with av.open(str(dst)) as c:
        assert c.metadata["title"] == "ntsc test"


def test_clip_starting_late_keeps_its_start_offset(tmp_path):
    # GIVEN video whose first frame is shown at 0.5 s, audio from 0 s
    pts = [12800 // 2 + i * 512 for i in range(20)]  # 25 fps in 1/12800
    src = _write_clip(tmp_path / "late.mp4", time_base=Fraction(1, 12800), pts=pts, audio=True)
    dst = tmp_path / "out.mp4"
    transcode(src, dst)
    assert frame_times(dst)[0] == Fraction(1, 2)
    assert frame_times(dst) == frame_times(src)
    assert _audio_packets(dst)[0][0][1] == _audio_packets(src)[0][0][1]
    assert probe(dst).start_time == 0.5


def test_variable_frame_rate_clip_keeps_irregular_pts(tmp_path):
    # GIVEN frames at irregular times (time base 1/90000)
    gaps = [3000, 3000, 9000, 1500, 4500, 3000, 12000, 3003, 2997, 6000] * 2
    pts = [sum(gaps[:i]) for i in range(len(gaps))]
    src = _write_clip(tmp_path / "vfr.mp4", time_base=Fraction(1, 90000), pts=pts, rate=Fraction(30))
    dst = tmp_path / "out.mp4"
    transcode(src, dst)
    assert frame_times(dst) == [Fraction(p, 90000) for p in pts]


def test_matroska_input_audio_is_rescaled_to_mp4_time_base_without_changes(tmp_path):
    # GIVEN an MKV (audio time base 1/1000) going into MP4 (audio time base 1/48000)
    src = _write_clip(tmp_path / "in.mkv", frames=20, audio=True)
    dst = tmp_path / "out.mp4"
    transcode(src, dst)
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        assert a.streams.audio[0].time_base != b.streams.audio[0].time_base
    # THEN payloads and times are the same, only expressed in the new unit
    assert _audio_packets(dst) == _audio_packets(src)
    assert frame_times(dst) == frame_times(src)


def test_coarse_time_base_input_keeps_timestamps_when_muxer_changes_time_base(tmp_path):
    # GIVEN an AVI (time base 1/25) -> MP4, whose muxer raises the time base to 1/12800
    src = _write_clip(tmp_path / "coarse.avi", frames=15)
    dst = tmp_path / "out.mp4"
    transcode(src, dst)
    assert probe(src).time_base == Fraction(1, 25)
    assert frame_times(dst) == frame_times(src)


def test_rotation_display_matrix_is_kept(tmp_path):
    # GIVEN a 64x48 clip flagged to display rotated by 90 degrees
    src = _write_clip(tmp_path / "rot.mp4", frames=6, rotation=90)
    dst = tmp_path / "out.mp4"
    # WHEN transcoding, frames are handed out in coded orientation
    shapes = []
    transcode(src, dst, lambda rgb, i: shapes.append(rgb.shape) or rgb)
    assert shapes == [(48, 64, 3)] * 6
    # THEN the output carries the same display matrix
    info = probe(dst)
    assert info.rotation == 90
    assert (info.coded_width, info.coded_height) == (64, 48)
    assert (info.width, info.height) == (48, 64)


def test_clip_without_audio_transcodes(tmp_path):
    src = _write_clip(tmp_path / "mute.mp4", frames=10)
    stats = transcode(src, tmp_path / "out.mp4")
    assert stats.frames == 10 and stats.audio_packets == 0
    assert not probe(tmp_path / "out.mp4").has_audio


def test_bt709_colours_come_back_without_matrix_shift(tmp_path):
    # GIVEN saturated patches in a BT.709 clip (a BT.601/709 mix-up moves them by >10 levels)
    patches = np.zeros((48, 64, 3), np.uint8)
    patches[:, :16] = (220, 30, 30)
    patches[:, 16:32] = (30, 200, 40)
    patches[:, 32:48] = (40, 40, 210)
    patches[:, 48:] = (128, 128, 128)
    src = _write_clip(tmp_path / "bars.mp4", frames=4, bt709=True, pixels=patches)
    dst = tmp_path / "out.mp4"
    # Frames read as RGB: the encoder converts them back with the BT.709 matrix tagged on them
    transcode(src, dst, lambda rgb, i: rgb, options=EncodeOptions(exact_rgb=True))
    before = next(iter_frames(src, exact_rgb=True))[2].astype(np.int16)
    after = next(iter_frames(dst, exact_rgb=True))[2].astype(np.int16)
    for x in (8, 24, 40, 56):
        assert np.abs(before[8:40, x - 4 : x + 4] - after[8:40, x - 4 : x + 4]).mean() < 3
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.colorspace == 1


def _planes(path: Path) -> list[np.ndarray]:
    """Every decoded frame of `path` as its raw I420 array (no colour conversion)."""
    with av.open(str(path)) as c:
        return [f.to_ndarray() for f in c.decode(video=0)]


def test_untouched_frames_reach_the_encoder_exactly_as_decoded(tmp_path):
    # GIVEN a BT.709 clip, transcoded losslessly (crf 0) so that only the pipeline can change pixels
    src = _write_clip(tmp_path / "in.mp4", frames=12, size=(96, 54), bt709=True)
    lossless = EncodeOptions(crf=0)
    # WHEN frames nobody touches go through
    transcode(src, tmp_path / "same.mp4", options=lossless)
    # THEN every Y, U and V sample is the decoded one: the frames never left YUV
    before = _planes(src)
    assert all(np.array_equal(a, b) for a, b in zip(before, _planes(tmp_path / "same.mp4"), strict=True))
    # AND a transform that reads the frames as RGB goes through a colour conversion and back,
    # which is not exact (the test can tell the two apart)
    transcode(src, tmp_path / "rgb.mp4", lambda rgb, i: rgb, options=lossless)
    assert any(not np.array_equal(a, b) for a, b in zip(before, _planes(tmp_path / "rgb.mp4"), strict=True))


def test_full_range_video_keeps_its_pixels_and_range(tmp_path):
    # GIVEN a full-range (JPEG levels) 4:2:0 clip, as some cameras write
    src = _write_clip(tmp_path / "in.mp4", frames=6, size=(96, 54), pix_fmt="yuvj420p")
    dst = tmp_path / "out.mp4"
    # WHEN it goes through untouched, losslessly
    transcode(src, dst, options=EncodeOptions(crf=0))
    # THEN its samples and its range come back as they were (no squeeze into 16..235)
    assert all(np.array_equal(a, b) for a, b in zip(_planes(src), _planes(dst), strict=True))
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.color_range == 2


def test_444_video_is_written_as_420_with_the_same_look(tmp_path):
    # GIVEN a 4:4:4 clip (screen recordings): its chroma resampled to 4:2:0, YUV to YUV
    src = _write_clip(tmp_path / "in.mp4", frames=4, size=(96, 54), pix_fmt="yuv444p")
    dst = tmp_path / "out.mp4"
    transcode(src, dst)
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    before = next(iter_frames(src))[2].astype(np.int16)
    after = next(iter_frames(dst))[2].astype(np.int16)
    assert np.abs(before - after).mean() < 3

def _write_hlg_10bit(path: Path, frames: int = 6, size: tuple[int, int] = (96, 64)) -> Path:
    """A 10-bit BT.2020 / HLG clip, as phones record HDR video: a luma ramp over the 10-bit limited range."""
    width, height = size
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p10le"
        video.options = {"preset": "ultrafast", "crf": "0"}
        cc = video.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 9, 18, 9, 1  # BT.2020, HLG, limited
        y = np.tile(np.linspace(64, 940, width).astype(np.uint16), (height, 1))
        for i in range(frames):
            chroma = np.full((height // 4, width), 512 + 8 * i, np.uint16)  # U then V rows, half size each
            frame = av.VideoFrame.from_ndarray(np.concatenate([y, chroma, chroma]), format="yuv420p10le")
            frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range = 9, 18, 9, 1
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


def test_10_bit_hdr_video_travels_in_yuv_and_keeps_its_look_and_tags(tmp_path):
    # GIVEN a 10-bit HLG clip
    src = _write_hlg_10bit(tmp_path / "hlg.mp4")
    dst = tmp_path / "out.mp4"
    held = []

    def watch(frames):
        for f in frames:
            held.append((f.yuv is not None, f.pix_fmt))
            yield f

    # WHEN it goes through untouched, losslessly
    transcode(src, dst, transform=watch, options=EncodeOptions(crf=0))
    # THEN its frames travelled as 8-bit planar 4:2:0 YUV (one swscale step, no RGB round trip) ...
    assert held == [(True, "yuv420p")] * 6
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        ca, cb = a.streams.video[0].codec_context, b.streams.video[0].codec_context
        # ... the output is 8-bit H.264 that every player decodes, tagged BT.2020 / HLG like the input ...
        assert cb.pix_fmt == "yuv420p" and cb.profile != "High 10"
        tags = ("color_primaries", "color_trc", "colorspace", "color_range")
        assert [getattr(cb, t) for t in tags] == [getattr(ca, t) for t in tags] == [9, 18, 9, 1]
        ten = next(a.decode(video=0)).to_ndarray().astype(np.float64) / 4
        eight = next(b.decode(video=0)).to_ndarray().astype(np.float64)
    # ... and its samples are the input's at 8 bits: no shift (the RGB round trip darkened it by ~1.4)
    assert abs(eight.mean() - ten.mean()) < 0.3 and np.abs(eight - ten).max() <= 1


def _write_interlaced(
    path: Path, order: str, *, pix_fmt: str = "yuv420p", frames: int = 6, size: tuple[int, int] = (96, 64)
) -> Path:
    """An interlaced H.264 clip (`order` "tff" / "bff"), as broadcast cameras record 1080i: lossless,
    a grey picture whose two fields carry different colours (top field U 200 / V 60, bottom field
    the reverse), as a moving coloured subject gives its fields."""
    width, height = size
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        cc = video.codec_context
        cc.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
        video.options = {"preset": "ultrafast", "qp": "0", "x264-params": f"{order}=1"}
        chroma_rows = height if "422" in pix_fmt else height // 2
        top = np.arange(chroma_rows) % 2 == 0  # chroma lines alternate fields in both layouts
        u = np.where(top[:, None], 200, 60).astype(np.uint8).repeat(width // 2, axis=1)
        y = np.full((height, width), 128, np.uint8)
        v = (260 - u.astype(np.int16)).astype(np.uint8)
        for i in range(frames):
            planes = np.concatenate([y, u.reshape(-1, width), v.reshape(-1, width)])
            frame = av.VideoFrame.from_ndarray(planes, format=pix_fmt)
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


@pytest.mark.parametrize("order, field_order", [("tff", 2), ("bff", 3)])
def test_interlaced_video_stays_interlaced_in_its_field_order(tmp_path, order, field_order):
    # GIVEN an interlaced clip (field order TT or BB)
    src = _write_interlaced(tmp_path / "in.mp4", order)
    with av.open(str(src)) as c:
        assert c.streams.video[0].codec_context.field_order == field_order
    # WHEN it goes through
    dst = tmp_path / "out.mp4"
    transcode(src, dst)
    # THEN the output is interlaced too, in the same field order (encoded progressive, its moving
    # subjects would comb on every player) and its frames are marked interlaced
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.field_order == field_order
        assert all(f.interlaced_frame for f in c.decode(video=0))
    # ... while a progressive clip stays progressive
    plain = _write_clip(tmp_path / "p.mp4", frames=3)
    transcode(plain, tmp_path / "p_out.mp4")
    with av.open(str(tmp_path / "p_out.mp4")) as c:
        assert c.streams.video[0].codec_context.field_order in (0, 1)
        assert not any(f.interlaced_frame for f in c.decode(video=0))


def test_interlaced_4_2_2_keeps_each_fields_colour(tmp_path):
    # GIVEN an interlaced 4:2:2 clip (broadcast cameras) whose two fields have different colours
    src = _write_interlaced(tmp_path / "in.mp4", "tff", pix_fmt="yuv422p")
    dst = tmp_path / "out.mp4"
    # WHEN it goes through losslessly (4:2:0 output)
    transcode(src, dst, options=EncodeOptions(crf=0))
    with av.open(str(dst)) as c:
        picture = next(c.decode(video=0)).to_ndarray()
    height, width = 64, 96
    u = picture[height:height + height // 4].reshape(height // 2, width // 2)
    # THEN each 4:2:0 chroma line holds its own field's colour (interlaced 4:2:0 alternates fields
    # line by line): halving across the fields, as for a progressive frame, would give every line
    # their mean, 130 (swscale does it per field for a frame flagged interlaced; an RGB round trip
    # or a conversion of our own would not)
    assert np.abs(u[0::2].astype(int) - 200).max() <= 1
    assert np.abs(u[1::2].astype(int) - 60).max() <= 1
    assert np.array_equal(picture[:height], np.full((height, width), 128, np.uint8))


def test_odd_sized_video_is_encoded_with_its_last_column_and_row_repeated(tmp_path):
    # GIVEN a lossless 853 x 479 clip (odd sizes: screen recorders, crops; H.264 4:2:0 has none)
    src = tmp_path / "odd.mkv"
    width, height = 853, 479
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(src), "w") as out:
        video = out.add_stream("ffv1", rate=25)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        for i in range(3):
            rgb = np.stack([(xx * 255 // width), (yy * 255 // height), np.full_like(xx, 40 * i)], -1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    # WHEN it goes through (it failed: "H.264 encoding failed")
    dst = tmp_path / "out.mkv"
    stats = transcode(src, dst, options=EncodeOptions(crf=0))
    # THEN every frame is there, one column and one row larger, the picture unchanged where it was
    # and its edge repeated in the added column / row
    assert stats.frames == 3
    before = [rgb for _, _, rgb in iter_frames(src)]
    after = [rgb for _, _, rgb in iter_frames(dst)]
    assert len(after) == 3 and after[0].shape == (height + 1, width + 1, 3)
    for a, b in zip(before, after):
        assert np.abs(b[:height, :width].astype(int) - a).mean() < 2
        assert np.abs(b[:height, width].astype(int) - b[:height, width - 1]).mean() < 3
        assert np.abs(b[height, :width].astype(int) - b[height - 1, :width]).mean() < 3


def test_picture_size_changing_mid_stream_is_scaled_to_the_first(tmp_path):
    # GIVEN a transport stream whose picture size changes after 12 frames (two TS files joined, as
    # recordings of adaptive streaming are): 128 x 72, then 96 x 54, each part its own flat grey
    src = size_switching_clip(tmp_path / "switch.ts")
    with av.open(str(src)) as c:
        assert {(f.width, f.height) for f in c.decode(video=0)} == {(128, 72), (96, 54)}
    # WHEN it goes through (it stopped with a traceback: "expected a 128x72 frame, got 96x54")
    dst = tmp_path / "out.mp4"
    stats = transcode(src, dst)
    # THEN every frame is there at the first size, the later ones scaled (their grey kept)
    assert stats.frames == 24
    pictures = [rgb for _, _, rgb in iter_frames(dst)]
    assert len(pictures) == 24 and {p.shape for p in pictures} == {(72, 128, 3)}
    assert abs(pictures[3].mean() - 60) < 3 and abs(pictures[20].mean() - 160) < 3


def _with_subtitles(path: Path, tmp_path: Path) -> Path:
    """A Matroska clip with an English SRT subtitle track that names a person."""
    srt = tmp_path / "captions.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,300\nJane Doe, witness\n\n")
    with av.open(str(srt)) as captions, av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        subtitles = out.add_stream_from_template(captions.streams[0])
        subtitles.metadata["language"] = "eng"
        for packet in captions.demux(captions.streams[0]):
            if packet.size:
                packet.stream = subtitles
                out.mux(packet)
        _mux_grey_frames(out, video, 10)
    return path


def _mux_grey_frames(out, video, count: int) -> None:
    """`count` flat grey frames (64 x 48 I420) through `video`'s encoder into `out`, then its flush."""
    for i in range(count):
        frame = av.VideoFrame.from_ndarray(np.full((72, 64), 100, np.uint8), format="yuv420p")
        frame.pts = i
        out.mux(video.encode(frame))
    out.mux(video.encode(None))


def test_streams_left_out_are_named_and_a_timecode_track_is_kept(tmp_path):
    # GIVEN a clip with a subtitle track, and a MOV with a timecode track (as cameras write)
    subtitled = _with_subtitles(tmp_path / "subs.mkv", tmp_path)
    timecoded = _write_clip(tmp_path / "tc.mov", frames=5)
    with av.open(str(timecoded)) as src, av.open(str(tmp_path / "tc_in.mov"), "w") as out:
        copy = out.add_stream_from_template(src.streams.video[0])
        copy.metadata["timecode"] = "10:00:00:00"  # the muxer writes the tmcd track from it
        for packet in src.demux(src.streams.video[0]):
            if packet.size:
                packet.stream = copy
                out.mux(packet)
    with av.open(str(tmp_path / "tc_in.mov")) as c:
        assert [s.type for s in c.streams] == ["video", "data"]
    # WHEN both go through
    subs = transcode(subtitled, tmp_path / "subs_out.mkv")
    tc = transcode(tmp_path / "tc_in.mov", tmp_path / "tc_out.mov")
    # THEN the subtitles are left out (they may name who is blurred) and the stats say so ...
    assert subs.dropped_streams == ("subtitle #1 (srt, eng)",)
    with av.open(str(tmp_path / "subs_out.mkv")) as c:
        assert [s.type for s in c.streams] == ["video"]
    # ... while the timecode track is written anew from the video's tag: nothing reported dropped
    assert tc.dropped_streams == ()
    with av.open(str(tmp_path / "tc_out.mov")) as c:
        assert [s.type for s in c.streams] == ["video", "data"]
        assert c.streams.video[0].metadata["timecode"] == "10:00:00:00"


def test_a_transport_streams_90_khz_start_is_kept_exactly_in_mp4(tmp_path):
    # GIVEN a transport stream (camcorders' MTS, broadcast TS) whose video starts at 76682 / 90000 s,
    # not on a millisecond, with sound
    src = _write_clip(tmp_path / "cam.ts", frames=12, time_base=Fraction(1, 90000), audio=True,
                      pts=[76682 + 3600 * i for i in range(12)])
    start = frame_times(src)[0]
    assert (start * 1000).denominator != 1
    # WHEN it goes into MP4 and MOV
    for suffix in (".mp4", ".mov"):
        dst = tmp_path / f"out{suffix}"
        transcode(src, dst)
        # THEN every frame keeps its time exactly (MP4 states a late start in 1/1000 s unless told
        # another scale: it moved by 22 microseconds)
        assert frame_times(dst) == frame_times(src)


def test_hdr10_static_metadata_is_kept(tmp_path):
    import struct

    from av.sidedata.sidedata import Type

    # GIVEN a 10-bit PQ (HDR10) clip with its mastering display (P3 primaries, 1000 / 0.0001 cd/m2)
    # and content light level (MaxCLL 1000, MaxFALL 400), as HDR cameras and graders write them
    src = tmp_path / "hdr10.mp4"
    with av.open(str(src), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p10le"
        video.options = {"preset": "ultrafast", "x264-params": "mastering-display=G(13250,34500)B(7500,3000)R(34000,16000)"
                         "WP(15635,16450)L(10000000,1):cll=1000,400"}
        cc = video.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 9, 16, 9, 1  # BT.2020, PQ
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((72, 64), 512, np.uint16), format="yuv420p10le")
            frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range = 9, 16, 9, 1
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))

    def metadata(path):
        with av.open(str(path)) as c:
            side = next(c.decode(video=0)).side_data
            mastering, light = side.get(Type.MASTERING_DISPLAY_METADATA), side.get(Type.CONTENT_LIGHT_LEVEL)
            return (mastering and struct.unpack_from("<22i", bytes(mastering)), light and struct.unpack_from("<2I", bytes(light)))

    assert metadata(src)[1] == (1000, 400)
    # WHEN it goes through (the frames the encoder gets are new pictures, without side data)
    dst = tmp_path / "out.mp4"
    transcode(src, dst)
    # THEN the output tells a display the same mastering display and light levels to tone-map by
    # (it had neither: an HDR TV guessed)
    assert metadata(dst) == metadata(src)


CHAPTERS = [(0, Fraction(2, 5), "Intro"), (Fraction(2, 5), Fraction(4, 5), "Interview")]


def chapters(path):
    """(start s, end s, title) of a file's chapters."""
    with av.open(str(path)) as c:
        return [(c_["start"] * c_["time_base"], c_["end"] * c_["time_base"], c_["metadata"]["title"]) for c_ in c.chapters()]


def _with_chapters(src: Path) -> Path:
    """A Matroska clip with a long recording's chapter marks (`CHAPTERS`)."""
    with av.open(str(src), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        out.set_chapters([
            {"id": 1, "start": 0, "end": 10, "time_base": Fraction(1, 25), "metadata": {"title": "Intro"}},
            {"id": 2, "start": 10, "end": 20, "time_base": Fraction(1, 25), "metadata": {"title": "Interview"}},
        ])
        _mux_grey_frames(out, video, 20)
    return src


def test_chapters_are_kept_in_every_container(tmp_path):
    # GIVEN a long recording's chapter marks (Intro 0-0.4 s, Interview 0.4-0.8 s) in Matroska
    src = _with_chapters(tmp_path / "talk.mkv")
    want = CHAPTERS
    assert chapters(src) == want
    for suffix in (".mkv", ".mp4", ".mov"):
        # WHEN it goes through (chapters were dropped)
        dst = tmp_path / f"out{suffix}"
        stats = transcode(src, dst)
        # THEN they are there, and nothing is reported left out
        assert chapters(dst) == want and stats.dropped_streams == ()
    # ... and an MP4's chapter-title track, rebuilt from the chapters, is not reported left out either
    again = transcode(tmp_path / "out.mov", tmp_path / "again.mov")
    assert chapters(tmp_path / "again.mov") == want and again.dropped_streams == ()


def test_one_field_of_a_frame_is_scaled_alone(tmp_path):
    # GIVEN a grey frame whose two fields differ (even lines dark, odd lines bright), with a
    # horizontal ramp, held in YUV and in RGB
    yy, xx = np.mgrid[0:48, 0:64]
    grey = np.where(yy % 2 == 0, 40 + xx, 200 - xx).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    as_yuv = Frame(0, 0, 0.0, yuv=av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray())
    as_rgb = Frame(0, 0, 0.0, rgb=rgb.copy())
    for frame in (as_yuv, as_rgb):
        # WHEN it is scaled to half height from its top field only
        field = frame.rgb_resized(32, 24, one_field=True).astype(int)
        both = frame.rgb_resized(32, 24).astype(int)
        # THEN it holds the top field's lines (dark, with their ramp), not the two fields averaged
        assert np.abs(field[..., 1] - (40 + 2 * np.arange(32) + 0.5)).mean() < 4
        assert abs(both[..., 1].mean() - 120) < 4


@pytest.mark.parametrize("region", [(0, 0, 96, 54), (13, 7, 58, 33), (1, 1, 95, 53), (40, 10, 41, 11)])
def test_rgb_region_is_the_whole_frame_conversion_cut(tmp_path, region):
    # GIVEN a decoded frame held in YUV, and odd region bounds (chroma covers 2 x 2 pixels) whose
    # height is no multiple of 4 (PyAV's I420 buffers need one)
    src = _write_clip(tmp_path / "in.mp4", frames=2, size=(96, 54), bt709=True)
    frame = next(_decoded_frames_of(src))
    assert frame.yuv is not None
    whole = Frame(0, 0, 0.0, yuv=frame.yuv.copy(), colorspace=frame.colorspace, color_range=frame.color_range).rgb
    x0, y0, x1, y1 = region
    # THEN converting only the region gives the same pixels as converting everything and cutting
    assert np.array_equal(frame.rgb_region(x0, y0, x1, y1), whole[y0:y1, x0:x1])
    assert frame.yuv is not None  # and the frame itself stayed in YUV


def test_reading_rgb_turns_the_frame_into_rgb_once(tmp_path):
    src = _write_clip(tmp_path / "in.mp4", frames=2, size=(64, 48))
    frame = next(_decoded_frames_of(src))
    y, u, v = frame.planes()
    assert y.shape == (48, 64) and u.shape == v.shape == (24, 32) and frame.nbytes == 64 * 48 * 3 // 2
    rgb = frame.rgb
    assert frame.yuv is None and frame.rgb is rgb and frame.nbytes == 64 * 48 * 3


def _decoded_frames_of(path: Path):
    from limelight.video import _frames, _open_input

    with _open_input(path) as container:
        yield from _frames(container, path)


def test_lookahead_transform_holding_frames_back_keeps_audio_and_interleaving(tmp_path):
    src = _write_clip(tmp_path / "av.mp4", frames=50, audio=True)
    dst = tmp_path / "out.mp4"
    stats = transcode(src, dst, transform=_hold_back(10))
    assert stats.frames == 50
    assert frame_times(dst) == frame_times(src)
    assert _audio_packets(dst) == _audio_packets(src)
    assert _worst_av_gap(dst) < 1.0


def test_progress_reports_each_encoded_frame(tmp_path):
    src = _write_clip(tmp_path / "in.mp4", frames=8)
    calls: list[int] = []
    transcode(src, tmp_path / "out.mp4", progress=calls.append)
    assert calls == list(range(1, 9))


def test_iter_frames_streams_rgb_frames_with_times(tmp_path):
    src = _write_clip(tmp_path / "in.mp4", frames=5, rate=Fraction(10))
    items = list(iter_frames(src))
    assert [i for i, _, _ in items] == [0, 1, 2, 3, 4]
    assert [t for _, t, _ in items] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert all(rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8 for _, _, rgb in items)


@pytest.mark.parametrize("held_as", ["yuv", "rgb"])
def test_frames_stream_through_without_accumulating(tmp_path, held_as):
    # GIVEN a 240-frame clip and a look-ahead transform holding 10 frames back, the frames kept in
    # YUV as decoded or read as RGB
    src = _write_clip(tmp_path / "long.mp4", frames=240, size=(32, 32))
    alive: set[int] = set()
    most_alive = 0

    def watch(frames):
        nonlocal most_alive
        for frame in frames:
            alive.add(frame.index)
            weakref.finalize(frame.yuv if held_as == "yuv" else frame.rgb, alive.discard, frame.index)
            most_alive = max(most_alive, len(alive))
            yield frame

    # WHEN transcoding
    stats = transcode(src, tmp_path / "out.mp4", transform=lambda f: _hold_back(10)(watch(f)))
    # THEN only the look-ahead window of decoded frames ever exists at once
    assert stats.frames == 240
    assert most_alive <= 12


# ---------------------------------------------------------------- failures leave nothing behind


def _assert_failure_leaves_no_output(error: LimeLightError, named: Path, out_dir: Path) -> None:
    message = str(error)
    assert "\n" not in message and str(named) in message
    assert list(out_dir.iterdir()) == []


def _zero_byte(tmp_path: Path, clip) -> Path:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    return path


def _text_as_mp4(tmp_path: Path, clip) -> Path:
    path = tmp_path / "notes.mp4"
    path.write_text("these are meeting notes, not a video\n" * 20)
    return path


def _audio_only(tmp_path: Path, clip) -> Path:
    path = tmp_path / "voice.m4a"
    with av.open(str(path), "w") as out:
        sound = out.add_stream("aac", rate=48000)
        sound.layout = "mono"
        for k in range(10):
            chunk = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            chunk.sample_rate, chunk.pts = 48000, k * 1024
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    return path


def _truncated_faststart(tmp_path: Path, clip) -> Path:
    # Header (moov) in front: the cut file still opens; only the index reveals missing data.
    full = _write_clip(
        tmp_path / "full.mp4", frames=40, size=(128, 96),
        container_options={"movflags": "faststart"},
    )
    path = tmp_path / "cut.mp4"
    path.write_bytes(full.read_bytes()[: full.stat().st_size * 3 // 10])
    full.unlink()
    return path


def _truncated_hamilton(tmp_path: Path, clip) -> Path:
    data = clip(HAMILTON).read_bytes()
    path = tmp_path / "hamilton_cut.mp4"
    path.write_bytes(data[: len(data) * 3 // 10])
    return path


@pytest.mark.parametrize(
    "make_input",
    [_zero_byte, _text_as_mp4, _audio_only, _truncated_faststart, _truncated_hamilton],
    ids=["zero-byte", "text-renamed-mp4", "audio-only", "truncated-faststart", "truncated-real"],
)
def test_bad_input_raises_input_error_and_leaves_no_output(make_input, tmp_path, clip):
    # GIVEN an unusable input
    src = make_input(tmp_path, clip)
    digest = _sha(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # WHEN transcoding THEN InputError, nothing written, input untouched
    with pytest.raises(InputError) as caught:
        transcode(src, out_dir / "result.mp4")
    _assert_failure_leaves_no_output(caught.value, src, out_dir)
    assert _sha(src) == digest
    with pytest.raises(InputError):
        probe(src)


def test_damaged_packets_mid_stream_are_stood_in_for_and_everything_else_kept(tmp_path, clip):
    # GIVEN the hamilton clip with two video packets damaged in place (a bad sector, a broken
    # transfer): FFmpeg refuses them, ffmpeg itself decodes the rest; LimeLight refused the file
    whole = clip(HAMILTON)
    src = tmp_path / "damaged.mp4"
    lost = damaged_copy(whole, src, [100, 200])
    digest = _sha(src)
    # WHEN transcoding it
    stats = transcode(src, tmp_path / "out.mp4")
    # THEN every frame is there with the original's timestamp, the audio is bit-exact ...
    assert frame_times(tmp_path / "out.mp4") == frame_times(whole)
    assert audio_packets(tmp_path / "out.mp4") == audio_packets(whole)
    # ... each lost frame repeats the picture before it (in the original the two differ) ...
    times = frame_times(whole)
    ours, theirs = decoded_pictures(tmp_path / "out.mp4"), decoded_pictures(whole)
    for t in lost:
        k = times.index(t)
        assert np.abs(ours[k].astype(np.int16) - ours[k - 1]).mean() < 0.5
        assert np.abs(theirs[k].astype(np.int16) - theirs[k - 1]).mean() > 2.0
    # ... and the damage is accounted for; the input is untouched
    assert stats.damage.video_packets == 2 and stats.damage.audio_left_out == 0
    assert stats.damage.repeated == pytest.approx([float(t) for t in lost])
    assert "2 frames could not be decoded" in stats.damage.describe()
    assert _sha(src) == digest


def test_a_damaged_last_packet_of_an_mp4_is_stood_in_for_too(tmp_path, clip):
    # GIVEN the hamilton clip with its last video packet (its last frame) damaged: FFmpeg's frame
    # threads report that error at the flush, which PyAV does not raise, so the frame was lost silently
    whole = clip(HAMILTON)
    src = tmp_path / "damaged.mp4"
    lost = damaged_copy(whole, src, [274])
    assert lost == [frame_times(whole)[-1]]
    # WHEN transcoding it THEN the last frame is there, repeating the one before, and accounted for
    stats = transcode(src, tmp_path / "out.mp4")
    assert frame_times(tmp_path / "out.mp4") == frame_times(whole)
    pictures = decoded_pictures(tmp_path / "out.mp4")
    assert np.abs(pictures[-1].astype(np.int16) - pictures[-2]).mean() < 0.5
    assert (stats.damage.video_packets, stats.damage.repeated) == (1, [pytest.approx(float(lost[0]))])


@pytest.mark.parametrize(
    "make, message",
    [
        # the hamilton clip (275 frames) with 7 of its video packets damaged: more than 1 in 50
        (lambda whole, path: damaged_copy(whole, path.with_suffix(".mp4"), [30, 70, 100, 140, 180, 200, 240]),
         r"7 of 275 video packets cannot be decoded"),
        # its TS recording with 10 of its 431 audio packets malformed
        (lambda whole, path: live_ts_with_damaged_audio(whole, path.with_suffix(".ts"), list(range(20, 420, 40))),
         r"corrupt audio \(10 of 431 audio packets are malformed"),
    ],
    ids=["video", "audio"],
)
def test_a_badly_damaged_input_is_refused(tmp_path, clip, make, message):
    make(clip(HAMILTON), tmp_path / "wrecked")
    src = next(tmp_path.glob("wrecked.*"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # WHEN transcoding THEN InputError naming the file and the damage, nothing written
    with pytest.raises(InputError, match=message) as caught:
        transcode(src, out_dir / "result.mp4")
    _assert_failure_leaves_no_output(caught.value, src, out_dir)


def test_a_malformed_audio_packet_of_a_live_recording_is_left_out_and_the_rest_copied(tmp_path, clip):
    # GIVEN the hamilton clip recorded as a live stream (MPEG-TS), one AAC packet's ADTS header lost,
    # and the same recording undamaged; the MP4 muxer refuses the malformed packet ("cannot write")
    clean = live_ts_with_damaged_audio(clip(HAMILTON), tmp_path / "clean.ts", [])
    src = live_ts_with_damaged_audio(clip(HAMILTON), tmp_path / "live.ts", [40])
    digest = _sha(src)
    # WHEN both are transcoded into MP4
    transcode(clean, tmp_path / "clean.mp4")
    stats = transcode(src, tmp_path / "live.mp4")
    # THEN the damaged one has every other audio packet, bit-exact, and every frame
    expected = audio_packets(tmp_path / "clean.mp4")
    assert audio_packets(tmp_path / "live.mp4") == expected[:40] + expected[41:]
    assert frame_times(tmp_path / "live.mp4") == frame_times(tmp_path / "clean.mp4")
    assert (stats.audio_packets, stats.damage.audio_left_out, stats.damage.video_packets) == (430, 1, 0)
    assert "1 malformed audio packet left out" in stats.damage.describe()
    assert _sha(src) == digest


def test_the_late_sound_of_a_stream_recording_is_found_and_copied(tmp_path, clip):
    # GIVEN an FLV stream recording whose sound starts 6 s in, its header announcing video only:
    # FFmpeg's first look (5 s) does not see it, and PyAV's demux failed on it with a bare IndexError
    src = flv_with_late_sound(clip(HAMILTON), tmp_path / "stream.flv", 6000)
    with av.open(str(src)) as c:
        assert [s.type for s in c.streams] == ["video"]
    with open_media(src) as c:
        video, sound = c.streams.video[0], c.streams.audio[0]
        times = sorted(p.pts * video.time_base for p in demux(c, video) if p.size)
        c.seek(0)
        sounds = [(bytes(p), p.pts * p.time_base) for p in demux(c, sound) if p.size]
    assert len(times) == 275 and 150 < len(sounds) < 250
    # WHEN transcoding it
    stats = transcode(src, tmp_path / "out.mp4")
    # THEN every video frame is there at its time, and the late sound is copied bit-exact
    assert frame_times(tmp_path / "out.mp4") == times
    copied = audio_packets(tmp_path / "out.mp4")
    assert [p[1] for p in copied] == [payload for payload, _ in sounds]
    # (FLV stores times in ms; MP4 in samples of 1/44100 s)
    assert [float(p[2]) for p in copied] == pytest.approx([float(t) for _, t in sounds], abs=0.0015)
    assert not stats.damage


def test_a_stream_that_appears_mid_file_is_left_out_and_said_so_instead_of_crashing(tmp_path, clip, monkeypatch):
    # GIVEN the FLV whose sound starts 6 s in, read by a LimeLight that looks only 1 s into a file:
    # the sound stream appears mid-file, where PyAV's demux failed with a bare IndexError
    monkeypatch.setattr(video_module, "_DEEP_PROBE_MICROSECONDS", 1_000_000)
    src = flv_with_late_sound(clip(HAMILTON), tmp_path / "stream.flv", 6000)
    # WHEN transcoding it
    stats = transcode(src, tmp_path / "out.mp4")
    # THEN every video frame is there, and the stream it could not set up for is named as left out
    assert len(frame_times(tmp_path / "out.mp4")) == 275
    assert (stats.damage.late_streams, stats.damage.video_packets, stats.audio_packets) == (1, 0, 0)
    assert "1 stream starting mid-file" in stats.damage.describe()


def test_recordings_joined_end_to_end_are_put_one_after_the_other(tmp_path, clip):
    # GIVEN two TS recordings joined with `cat`: the second part's clock starts again, its
    # timestamps jumping back 9 s (the MP4 muxer refused the output: "cannot write")
    part = ts_recording(clip(HAMILTON), tmp_path / "part.ts")
    src = tmp_path / "joined.ts"
    src.write_bytes(part.read_bytes() * 2)
    # WHEN transcoding it
    stats = transcode(src, tmp_path / "out.mp4")
    # THEN the second part follows the first: each part's frames keep their spacing ...
    once = frame_times(part)
    times = frame_times(tmp_path / "out.mp4")
    assert len(times) == 2 * len(once) == 550
    shift = times[275] - once[0]
    assert times[:275] == once and times[275:] == [t + shift for t in once]
    assert once[-1] < shift + once[0]  # after the first part's last frame
    # ... every audio packet is there, bit-exact, and each part keeps its sound in sync
    theirs, ours = audio_packets(part), audio_packets(tmp_path / "out.mp4")
    assert [p[1] for p in ours] == [p[1] for p in audio_packets(clip(HAMILTON))] * 2  # (the TS's without ADTS headers)
    sound_shift = ours[len(theirs)][2] - theirs[0][2]
    assert sound_shift == pytest.approx(shift, abs=1e-4)  # A/V alignment of the second part kept
    assert [round(t, 2) for t in stats.damage.restarts] == [round(float(ours[len(theirs) - 1][2]), 2)]
    assert "timestamps start again after" in stats.damage.describe()


def test_a_sound_pid_that_starts_late_is_found_and_copied(tmp_path, clip):
    # GIVEN a TS whose AAC PID carries sound only from 10 s on: FFmpeg's first look (5 s) gives it
    # no sample rate, and the MP4 muxer refused the output ("cannot write (Invalid argument)")
    src = ts_with_late_sound(clip(HAMILTON), tmp_path / "broadcast.ts")
    with av.open(str(src)) as c:
        assert c.streams.audio[0].codec_context.sample_rate == 0
    # WHEN transcoding it
    stats = transcode(src, tmp_path / "out.mp4")
    # THEN its sound is copied, every packet at its time, and every frame kept
    ours, theirs = audio_packets(tmp_path / "out.mp4"), audio_packets(src)
    assert len(ours) == len(theirs) == stats.audio_packets > 0
    assert [float(p[2]) for p in ours] == pytest.approx([float(p[2]) for p in theirs], abs=1 / 44100)
    assert [p[1] for p in ours] == [p[1][7:] for p in theirs]  # the TS's without their ADTS headers
    assert frame_times(tmp_path / "out.mp4") == frame_times(src)
    assert stats.dropped_streams == ()


def test_a_sound_pid_without_sound_is_left_out_and_named(tmp_path, clip):
    # GIVEN a TS whose AAC PID is announced but never carries a packet (an unused language)
    src = ts_with_silent_sound(clip(HAMILTON), tmp_path / "broadcast.ts")
    # WHEN transcoding it (the MP4 muxer refused the output: "cannot write (Invalid argument)")
    stats = transcode(src, tmp_path / "out.mp4")
    # THEN the video is complete, and the empty stream is named as left out
    assert frame_times(tmp_path / "out.mp4") == frame_times(src)
    assert stats.dropped_streams == ("audio #1 (aac, no sound found)",)
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert not c.streams.audio


def test_missing_input_raises_input_error(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    src = tmp_path / "nowhere.mp4"
    with pytest.raises(InputError, match="not found") as caught:
        transcode(src, out_dir / "result.mp4")
    _assert_failure_leaves_no_output(caught.value, src, out_dir)


def test_output_in_missing_folder_raises_output_error(tmp_path):
    src = _write_clip(tmp_path / "in.mp4", frames=3)
    dst = tmp_path / "missing" / "out.mp4"
    with pytest.raises(OutputError) as caught:
        transcode(src, dst)
    assert "\n" not in str(caught.value) and str(dst) in str(caught.value)
    assert not dst.parent.exists()


def test_output_in_read_only_folder_raises_output_error(tmp_path):
    src = _write_clip(tmp_path / "in.mp4", frames=3)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running with privileges that ignore folder permissions")
        with pytest.raises(OutputError):
            transcode(src, locked / "out.mp4")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_output_container_without_h264_support_raises_output_error(tmp_path):
    src = _write_clip(tmp_path / "in.mp4", frames=3)
    with pytest.raises(OutputError, match="H.264"):
        transcode(src, tmp_path / "out.webm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_output_path_equal_to_input_is_refused(tmp_path):
    src = _write_clip(tmp_path / "in.mp4", frames=3)
    digest = _sha(src)
    with pytest.raises(OutputError, match="overwrite the input"):
        transcode(src, tmp_path / "." / "in.mp4")
    assert _sha(src) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_failing_callback_propagates_and_keeps_previous_output(tmp_path):
    # GIVEN an existing output file and a callback that fails half way
    src = _write_clip(tmp_path / "in.mp4", frames=10, audio=True)
    digest = _sha(src)
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"previous result")

    def explode(rgb: np.ndarray, index: int) -> np.ndarray:
        if index == 5:
            raise RuntimeError("detector crashed")
        return rgb

    # WHEN transcoding THEN the callback's error surfaces unchanged, no temp file remains
    with pytest.raises(RuntimeError, match="detector crashed"):
        transcode(src, dst, explode)
    assert dst.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]
    assert _sha(src) == digest
    # AND a later successful run replaces the file
    transcode(src, dst)
    assert len(frame_times(dst)) == 10


def test_transform_that_drops_a_frame_is_rejected(tmp_path):
    src = _write_clip(tmp_path / "in.mp4", frames=10)
    dst = tmp_path / "out.mp4"

    def drop_third(frames):
        return (f for f in frames if f.index != 3)

    with pytest.raises(ValueError, match="frame 4"):
        transcode(src, dst, transform=drop_third)
    assert not dst.exists()


def test_transform_that_stops_early_is_rejected(tmp_path):
    src = _write_clip(tmp_path / "in.mp4", frames=10)
    dst = tmp_path / "out.mp4"

    def first_five(frames):
        for frame, _ in zip(frames, range(5)):
            yield frame

    with pytest.raises(ValueError, match="without returning them all"):
        transcode(src, dst, transform=first_five)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_frame_of_wrong_shape_is_rejected(tmp_path):
    src = _write_clip(tmp_path / "in.mp4", frames=3)
    with pytest.raises(ValueError, match="shape"):
        transcode(src, tmp_path / "out.mp4", lambda rgb, i: rgb[:, :10])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_encode_options_validate_their_values():
    with pytest.raises(ValueError):
        EncodeOptions(crf=60)
    with pytest.raises(ValueError):
        EncodeOptions(preset="ludicrous")
    assert EncodeOptions().preset == "veryfast"


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_boxes_map_between_a_stored_frame_and_its_upright_view(turns):
    from limelight.video import coded_boxes, upright_boxes

    # GIVEN a 30 x 50 frame with one marked rectangle, and the frame turned as np.rot90 turns it
    frame = np.zeros((30, 50), np.uint8)
    frame[3:11, 7:19] = 1
    view = np.rot90(frame, turns)
    ys, xs = np.nonzero(view)
    # THEN the box maps onto the rectangle where the turned view shows it, and back (extra columns kept)
    box = np.array([[7, 3, 19, 11, 0.9]], np.float32)
    up = upright_boxes(box, turns, 30, 50)
    assert up[0, :4].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] and up[0, 4] == np.float32(0.9)
    np.testing.assert_array_equal(coded_boxes(up, turns, 30, 50), box)


@pytest.mark.parametrize("rotation, turns", [(0, 0), (90, 1), (-90, 3), (180, 2), (-180, 2), (270, 3)])
def test_display_rotation_gives_the_quarter_turns_that_show_a_frame_upright(rotation, turns):
    from limelight.video import quarter_turns

    assert quarter_turns(rotation) == turns


def test_the_recording_location_is_not_published(tmp_path):
    # GIVEN a phone clip that says where it was shot (MP4's location atom), with a title
    gps = "+48.8584+002.2945/"
    src = _write_clip(tmp_path / "phone.mp4", frames=3, size=(64, 48), title="street", tags={"location": gps})
    with av.open(str(src)) as c:
        assert c.metadata["location"] == gps and c.metadata["location-eng"] == gps
    dst = tmp_path / "out.mp4"
    transcode(src, dst)
    # THEN the output keeps its title but tells no location
    with av.open(str(dst)) as c:
        assert c.metadata["title"] == "street"
        assert not [k for k in c.metadata if "location" in k.lower()]


def test_a_recording_cut_mid_gop_keeps_its_first_decodable_frames_time(tmp_path):
    # GIVEN a 90 kHz TS that starts 5 frames into a GOP (its stated start is a frame nobody can decode)
    from tests.test_segments import write_clip  # B-frames, a keyframe every 12 frames, SPS / PPS with each

    whole = write_clip(tmp_path / "whole.ts", frames=36, audio_streams=1)
    src = cut_mid_gop(whole, tmp_path / "recording.ts", 5)
    decoded = frame_times(src)
    assert float(decoded[0]) > probe(src).start_time + 0.1
    # WHEN it is transcoded to MP4
    transcode(src, tmp_path / "out.mp4", options=EncodeOptions(preset="ultrafast"))
    # THEN the video starts at that first decodable frame to the tick (it read 4671/10000 s for
    # 7007/15000: the movie time scale was chosen for the undecodable start), every frame's time
    # kept, and the audio starts within one of its samples of the TS's 90 kHz start
    assert frame_times(tmp_path / "out.mp4") == decoded
    ours, theirs = audio_packets(tmp_path / "out.mp4"), audio_packets(src)
    assert abs(ours[0][2] - theirs[0][2]) < Fraction(1, 48000)
