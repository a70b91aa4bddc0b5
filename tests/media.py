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
