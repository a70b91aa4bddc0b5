"""Readers the media tests share: what a file's frames and audio packets are, exactly."""

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
