"""Media the tests share: what a file's frames and audio packets are, exactly; the demo clip."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def frame_times(path: Path) -> list[Fraction]:
    """Exact presentation time (s) of every decoded frame."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return [f.pts * stream.time_base for f in c.decode(stream)]


def audio_packets(path: Path) -> list[tuple[int, bytes, Fraction, Fraction]]:
    """(stream index among audio, payload, pts s, dts s) of every audio packet, in file order."""
    with av.open(str(path)) as c:
        order = {s.index: n for n, s in enumerate(c.streams.audio)}
        return [
            (order[p.stream.index], bytes(p), p.pts * p.time_base, p.dts * p.time_base)
            for p in c.demux(*c.streams.audio)
            if p.size
        ]


def demo_clip(tmp_path: Path, monkeypatch, seconds: int, fps: int | None = None) -> tuple[Path, Path]:
    """The `make demo` clip (two public-domain portraits drifting over a background), `seconds`
    long, and a known-faces folder holding Grace Hopper, the demo's consenting person."""
    import cv2

    import limelight.demo as demo

    monkeypatch.setattr(demo, "SECONDS", seconds)
    if fps is not None:
        monkeypatch.setattr(demo, "FPS", fps)
    faces = demo.portraits()
    src = tmp_path / "in.mp4"
    demo.make_clip(src, faces)
    known = tmp_path / "known"
    known.mkdir()
    cv2.imwrite(str(known / "grace_hopper.jpg"), faces["grace_hopper"][..., ::-1])
    return src, known


def decoded_pictures(path: Path) -> list[np.ndarray]:
    """The video's decoded frames (I420 arrays)."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray() for frame in container.decode(video=0)]


def assert_same_pictures(a: Path, b: Path, max_mean_diff: float = 1.0) -> None:
    """Same number of frames, each within `max_mean_diff` levels (mean absolute difference).

    Not byte equality: libx264's macroblock tree with frame threads encodes the same frames a little
    differently from one run to the next when the cores are busy (measured: pixels up to 2 levels
    apart on a small synthetic clip; `EncodeOptions` documents it), so a re-run gives the same video,
    not always the same bytes.
    """
    pa, pb = decoded_pictures(a), decoded_pictures(b)
    assert len(pa) == len(pb) > 0
    worst = max(float(np.abs(x.astype(np.int16) - y).mean()) for x, y in zip(pa, pb))
    assert worst <= max_mean_diff, f"frames differ by up to {worst:.2f} levels on average"


def size_switching_clip(path: Path, sizes=((128, 72), (96, 54)), frames: int = 12, rate: int = 25) -> Path:
    """A clip whose picture size changes mid-stream, as a recording of adaptive streaming or joined
    TS files are: one H.264 part per size (`frames` each, a keyframe opening each, flat grey
    60 + 100 k for part k), the parts' transport streams joined and, for another suffix than .ts,
    remuxed into that container (the later parts' SPS travel in-band)."""
    parts = []
    for k, (width, height) in enumerate(sizes):
        part = path.with_name(f"{path.stem}.part{k}.ts")
        with av.open(str(part), "w") as out:
            video = out.add_stream("libx264", rate=rate)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.options = {"preset": "ultrafast", "bframes": "0"}  # dts = pts: the parts' times follow on
            for i in range(frames):
                rgb = np.full((height, width, 3), 60 + 100 * k, np.uint8)
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
                frame.pts = frames * k + i
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
        parts.append(part.read_bytes())
        part.unlink()
    ts = path.with_suffix(".ts")
    ts.write_bytes(b"".join(parts))
    if path.suffix == ".ts":
        return path
    with av.open(str(ts)) as src, av.open(str(path), "w") as dst:
        video = src.streams.video[0]
        copy = dst.add_stream_from_template(video)
        for packet in src.demux(video):
            if packet.size:
                packet.stream = copy
                dst.mux(packet)
    ts.unlink()
    return path


def camera_file(path, codec, size, rate, pix_fmt, frames, tracks, options=None, audio_bit_rate=None):
    """A camera's file: `frames` flat frames (10 levels apart) of `codec` video at `rate` fps,
    each audio track (codec, sample rate, layout, [(sample format, samples), ...]) muxed chunk by
    chunk beside them, then both flushed. `audio_bit_rate` for encoders that need one (WMA)."""
    width, height = size
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=rate)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.options = options or {}
        streams = []
        for audio_codec, sample_rate, layout, chunks in tracks:
            stream = out.add_stream(audio_codec, rate=sample_rate)
            stream.layout = layout
            if audio_bit_rate:
                stream.bit_rate = audio_bit_rate
            streams.append((stream, sample_rate, layout, chunks))
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.full((height, width, 3), (10 * i) % 256, np.uint8), format="rgb24").reformat(format=pix_fmt)
            f.pts, f.time_base = i, Fraction(1, rate)
            out.mux(video.encode(f))
        out.mux(video.encode(None))
        for stream, sample_rate, layout, chunks in streams:
            at = 0
            for fmt, samples in chunks:
                chunk = av.AudioFrame.from_ndarray(samples, format=fmt, layout=layout)
                chunk.sample_rate, chunk.pts = sample_rate, at
                at += samples.shape[1] // len(chunk.layout.channels)
                out.mux(stream.encode(chunk))
            out.mux(stream.encode(None))
    return path


def phone_3gp(path):
    """An old phone's clip: H.264 (no B-frames) and AMR-NB speech at 8 kHz in 3GP."""
    speech = [("s16", (np.sin(np.arange(k * 160, (k + 1) * 160) * 0.3) * 6000).astype(np.int16)[None, :]) for k in range(50)]
    return camera_file(path, "libx264", (176, 144), 15, "yuv420p", 15, [("libopencore_amrnb", 8000, "mono", speech)],
                       options={"preset": "ultrafast", "bframes": "0"})


def windows_media(path):
    """A Windows Media file: WMV2 video and WMA v2 sound in ASF, 25 fps."""
    tone = [("fltp", (0.2 * np.sin(np.arange(k * 2048, (k + 1) * 2048) * 0.05)).astype(np.float32)[None, :]) for k in range(22)]
    return camera_file(path, "wmv2", (176, 144), 25, "yuv420p", 25, [("wmav2", 44100, "mono", tone)], audio_bit_rate=64000)


def adpcm_camera(path):
    """An older camera's AVI: Motion JPEG video and IMA ADPCM sound at 22 kHz, 25 fps."""
    sound = [("s16p", (np.sin(np.arange(k * 2041, (k + 1) * 2041) * 0.05) * 6000).astype(np.int16)[None, :]) for k in range(11)]
    return camera_file(path, "mjpeg", (176, 144), 25, "yuvj420p", 25, [("adpcm_ima_wav", 22050, "mono", sound)])


def dv_camcorder(path):
    """A DV camcorder's raw file: PAL DV (interlaced, bottom field first) with 48 kHz stereo PCM."""
    sound = [("s16", np.full((1, 2 * 1920), 100 * i, np.int16)) for i in range(10)]
    return camera_file(path, "dvvideo", (720, 576), 25, "yuv420p", 10, [("pcm_s16le", 48000, "stereo", sound)])


def browser_webm(path: Path, frames: int = 24) -> Path:
    """A browser's recording (MediaRecorder): VP8 video and Opus sound in WebM, 24 fps."""
    tone = [("flt", (0.2 * np.sin(np.arange(k * 960, (k + 1) * 960) * 0.05)).astype(np.float32)[None, :]) for k in range(50)]
    return camera_file(path, "libvpx", (160, 120), 24, "yuv420p", frames, [("libopus", 48000, "mono", tone)],
                       options={"g": "12"})


def cut_mid_gop(whole: Path, path: Path, skip: int) -> Path:
    """`whole` remuxed without its first `skip` video packets (all its audio kept): a recording that
    starts inside a GOP, as a broadcast recorder's TS does."""
    with av.open(str(whole)) as c, av.open(str(path), "w") as out:
        copies = {s.index: out.add_stream_from_template(s) for s in c.streams}
        video_packets = 0
        for packet in c.demux():
            if not packet.size:
                continue
            if packet.stream.type == "video":
                video_packets += 1
                if video_packets <= skip:
                    continue
            packet.stream = copies[packet.stream.index]
            out.mux(packet)
    return path


def damaged_copy(whole: Path, path: Path, packets: list[int]) -> list[Fraction]:
    """A copy of the MP4 `whole` with the given video packets (numbers in file order) damaged in
    place, as a bad sector or a broken transfer leaves them: the first 8 bytes of each, its first
    NAL unit's length among them, overwritten with 0xFF, so FFmpeg refuses the packet. Returns the
    presentation times (s) of the damaged packets' frames."""
    with av.open(str(whole)) as c:
        stream = c.streams.video[0]
        found = [(p.pos, p.pts * stream.time_base) for p in c.demux(stream) if p.size]
    data = bytearray(whole.read_bytes())
    for k in packets:
        pos = found[k][0]
        data[pos : pos + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    return sorted(found[k][1] for k in packets)


def remuxed(whole: Path, path: Path, fmt: str) -> Path:
    """`whole`'s first video stream and its audio streams copied packet for packet into a `fmt`
    container at `path`."""
    with av.open(str(whole)) as c, av.open(str(path), "w", format=fmt) as out:
        copies = {s.index: out.add_stream_from_template(s) for s in (c.streams.video[0], *c.streams.audio)}
        for packet in c.demux(*(c.streams[i] for i in copies)):
            if packet.size:
                packet.stream = copies[packet.stream.index]
                out.mux(packet)
    return path


def ts_recording(whole: Path, path: Path) -> Path:
    """`whole` (H.264 + AAC) remuxed into MPEG-TS, as a live stream or a broadcast is recorded (AAC
    as ADTS, one PES a frame; timestamps as in `whole`)."""
    return remuxed(whole, path, "mpegts")


def ts_with_late_sound(whole: Path, path: Path, parts: int = 6, gop: int = 60) -> Path:
    """An MPEG-TS of `whole`'s first `gop` video packets (one GOP) played `parts` times in a row,
    whose AAC PID is announced from the start but carries sound (`whole`'s, over that GOP) only in
    the last part, as a broadcast's audio-description or second-language PID: FFmpeg, which looks 5 s
    into a file for the streams' parameters, finds none for it."""
    with av.open(str(whole)) as c:
        video, sound = c.streams.video[0], c.streams.audio[0]
        pictures = [p for p in c.demux(video) if p.size][:gop]
        c.seek(0)
        end = max(p.pts for p in pictures) * video.time_base
        sounds = [p for p in c.demux(sound) if p.size and p.pts * p.time_base <= end]
        step = Fraction(gop) / video.average_rate
        with av.open(str(path), "w", format="mpegts") as out:
            copies = {video.index: out.add_stream_from_template(video), sound.index: out.add_stream_from_template(sound)}
            for k in range(parts):
                for p in sorted(pictures + (sounds if k == parts - 1 else []), key=lambda p: p.dts * p.time_base):
                    shift = round(k * step / p.time_base)
                    q = av.Packet(bytes(p))
                    q.pts, q.dts, q.time_base, q.is_keyframe = p.pts + shift, p.dts + shift, p.time_base, p.is_keyframe
                    q.stream = copies[p.stream.index]
                    out.mux(q)
    return path


def ts_with_silent_sound(whole: Path, path: Path) -> Path:
    """An MPEG-TS of `whole`'s video with an AAC PID announced but never carrying a packet (an
    unused language PID of a broadcast recording)."""
    with av.open(str(whole)) as c, av.open(str(path), "w", format="mpegts") as out:
        video = out.add_stream_from_template(c.streams.video[0])
        out.add_stream_from_template(c.streams.audio[0])
        for packet in c.demux(c.streams.video[0]):
            if packet.size:
                packet.stream = video
                out.mux(packet)
    return path


def live_ts_with_damaged_audio(whole: Path, path: Path, audio_packets: list[int]) -> Path:
    """`ts_recording` of `whole` with the ADTS header of the given audio packets (numbers in file
    order) zeroed, as a lost or damaged TS packet leaves them: the MP4 muxer cannot read such a
    packet."""
    ts_recording(whole, path)
    with av.open(str(path)) as c:
        audio_pid = c.streams.audio[0].id  # the PID
    data = bytearray(path.read_bytes())
    starts = [k for k in range(0, len(data) - 187, 188)
              if ((data[k + 1] & 0x1F) << 8 | data[k + 2]) == audio_pid and data[k + 1] & 0x40]
    for n in audio_packets:
        k = starts[n]
        payload = k + 4 + ((1 + data[k + 4]) if (data[k + 3] >> 4) & 2 else 0)  # after any adaptation field
        assert data[payload : payload + 3] == b"\x00\x00\x01", "not a PES start"
        adts = payload + 9 + data[payload + 8]  # after the PES header
        data[adts : adts + 7] = bytes(7)
    path.write_bytes(bytes(data))
    return path


def flv_with_late_sound(whole: Path, path: Path, sound_from_ms: int) -> Path:
    """`whole` (H.264 + AAC) as an FLV whose header announces video only and whose sound starts at
    `sound_from_ms`, as a stream recording gets when the microphone comes on late: FFmpeg's FLV
    demuxer adds the audio stream only when it meets the first audio tag, after opening."""
    data = remuxed(whole, path, "flv").read_bytes()
    header, pos, kept = bytearray(data[:13]), 13, []
    header[4] = 0x01  # TypeFlags: video only
    while pos + 11 <= len(data):
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        stamp = int.from_bytes(data[pos + 4 : pos + 7], "big") | data[pos + 7] << 24
        tag = data[pos : pos + 11 + size + 4]  # the tag and its PreviousTagSize
        if data[pos] != 8 or stamp >= sound_from_ms:
            kept.append(tag)
        pos += 11 + size + 4
    path.write_bytes(bytes(header) + b"".join(kept))
    return path


def open_gop_mpeg2(path: Path, frames: int = 60) -> Path:
    """MPEG-2 as DVDs, broadcast and XDCAM carry it: open GOPs of 12 frames with 2 B-frames, the
    B-frames after each I-frame shown before it and predicted from the previous GOP too."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg2video", rate=25)
        video.width, video.height, video.pix_fmt = 176, 144, "yuv420p"
        video.codec_context.gop_size, video.codec_context.max_b_frames = 12, 2
        for i in range(frames):
            rgb = np.zeros((144, 176, 3), np.uint8)
            rgb[..., 0] = (np.arange(176) * 2 + 5 * i) % 256
            rgb[..., 1] = (4 * i) % 256
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


def _mp3(frames: int) -> list:
    return [("fltp", (0.2 * np.sin(np.arange(k * 1152, (k + 1) * 1152) * 0.05)).astype(np.float32)[None, :]) for k in range(frames)]


def webcam_flv(path: Path) -> Path:
    """An old webcam's FLV: Sorenson Spark video (which neither MP4, QuickTime nor Matroska holds)
    and MP3, without a keyframe index (so the file cannot be seeked), 2 s at 25 fps."""
    return camera_file(path, "flv", (176, 144), 25, "yuv420p", 50, [("libmp3lame", 44100, "mono", _mp3(80))], options={"g": "12"})


def divx_avi(path: Path) -> Path:
    """A DivX-era AVI: MPEG-4 Part 2 with B-frames (each I-frame followed by B-frames shown before
    it) and MP3, 25 fps in AVI's 1/25 s time base, 2 s."""
    return camera_file(path, "mpeg4", (176, 144), 25, "yuv420p", 50, [("libmp3lame", 44100, "mono", _mp3(80))],
                       options={"g": "12", "bf": "2"})


def animation(path: Path, frames: int) -> Path:
    """An animated GIF / WebP / PNG (by `path`'s suffix) of `frames` flat 64 x 48 frames, 100 ms each."""
    from PIL import Image

    pictures = [Image.new("RGB", (64, 48), (40 * i % 256, 80, 120)) for i in range(frames)]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=100, loop=0)
    return path
