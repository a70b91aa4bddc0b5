"""Media the tests share: what a file's frames and audio packets are, exactly; the demo clip."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av


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
