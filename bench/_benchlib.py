"""Helpers shared by the bench scripts (not a benchmark itself).

Shared data: `$LIMELIGHT_DATA`, default `<repo>/../shared/data` (read-only; nothing is copied
from it). Scratch files go to a temporary directory; kept artefacts only to `bench/out/`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import av

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
OUT = BENCH / "out"  # git-ignored


def data_dir(arg: str | None = None) -> Path:
    """The shared data folder: --data, else $LIMELIGHT_DATA, else <repo>/../shared/data."""
    return Path(arg or os.environ.get("LIMELIGHT_DATA") or REPO.parent / "shared" / "data")


def require(path: Path, what: str) -> Path:
    """Exit with a clear message when a shared-data file is missing."""
    if not path.exists():
        sys.exit(f"bench: {what} not found: {path} (set LIMELIGHT_DATA or --data)")
    return path


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unavailable"
    cores = os.cpu_count() or 1
    busy = "  <-- busy (at the end of a run this includes the run itself)" if one > 0.5 * cores else ""
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {cores} cores{busy}"


def model_line(model: Path | None = None) -> str:
    """Which detector model the engine loads (model_opt may rebuild it between runs): `model`, or the shipped one."""
    from limelight.detector import default_model_path, model_metadata

    path = Path(model) if model is not None else default_model_path()
    try:
        import subprocess

        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "functions"], capture_output=True, text=True).stdout.strip()
        engine = f"engine git {head}{' + uncommitted changes under functions/' if dirty else ''}; "
    except OSError:
        engine = ""
    return f"{engine}model {path} sha256 {model_metadata(path)['sha256'][:16]}"


def cut_clip(src: Path, dst: Path, seconds: float) -> Path:
    """Write the first `seconds` of `src` to `dst` by packet copy (no re-encode: same bitstream,
    so decoding costs the same as in the full clip). Packets are copied in file (decode) order
    until a video packet's dts passes the cut, so every copied frame's references are copied too.
    Containers other than MP4/MOV/MKV are cut into .mkv (AVI refuses some stream copies).
    """
    if dst.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        dst = dst.with_suffix(".mkv")
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        streams = {vin.index: out.add_stream_from_template(vin)}
        for a in inp.streams.audio:
            streams[a.index] = out.add_stream_from_template(a)
        # The cut is relative to the video's start: some clips' video starts late (friends: 1.7 s).
        end = seconds + (float(vin.start_time * vin.time_base) if vin.start_time is not None else 0.0)
        for packet in inp.demux(vin, *inp.streams.audio):
            if packet.dts is None or packet.size == 0:
                continue
            t = float(packet.dts * packet.time_base)
            if packet.stream.type == "video" and t >= end:
                break
            if packet.stream.type != "video" and t >= end:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dst
