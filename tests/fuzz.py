"""Hostile inputs: mutate real clips and photos, run the CLI on each, check the contract.

The contract of `limelight anonymize` for any input: exit 0 with a complete output (every frame
the input decodes to, the audio packets copied), or a non-zero exit with exactly one
`limelight:` line on stderr and nothing left behind; never a traceback, never longer than
`TIME_LIMIT` seconds. The input is never modified.

Seeds: the first 1.5 s of the shared hamilton clip (H.264 + AAC in MP4, stream-copied), a JPEG
and a PNG consent photo. Mutations: truncation at a random point, random byte flips, the MP4
index (moov) cut or its boxes' sizes broken, a header field changed (MP4 track size / time
scale, PNG IHDR size, JPEG SOF size), a swapped suffix. The test suite runs a seeded, bounded
set (`tests/test_fuzz.py`); `make fuzz N=1000` runs more and prints every failure:

    .venv/bin/python -m tests.fuzz --cases 1000 --seed 1
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av

REPO = Path(__file__).resolve().parent.parent
TIME_LIMIT = 90  # seconds one CLI run may take on these small inputs (2 cores, the model loaded each run)
SEEDS = {
    "clip.mp4": "videos/clips/hamilton_white_house_short_clip.mp4",
    "photo.jpg": "videos/known_faces/hamilton_white_house/biden.jpg",
    "photo.png": "videos/known_faces/hamilton_white_house/lin-manuel-miranda.png",
}


def data_dir() -> Path:
    return Path(os.environ.get("LIMELIGHT_DATA", REPO.parent / "shared" / "data"))


def make_seeds(folder: Path, data: Path) -> dict[str, Path]:
    """The seed files in `folder`: the clip cut to its first 1.5 s by stream copy, the photos as they are."""
    seeds = {}
    for name, relative in SEEDS.items():
        src, dst = data / relative, folder / name
        if name.endswith(".mp4"):
            _first_seconds(src, dst, 1.5)
        else:
            shutil.copyfile(src, dst)
        seeds[name] = dst
    return seeds


def _first_seconds(src: Path, dst: Path, seconds: float) -> None:
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in (inp.streams.video[0], *inp.streams.audio)}
        start = None
        for packet in inp.demux(*[inp.streams[i] for i in streams]):
            if packet.dts is None:
                continue
            t = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
            start = t if start is None else start
            if t - start > seconds:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


# ------------------------------------------------------------------------------- mutations


def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(1, len(data))]


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice([1, 4, 32, 256])):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def cut_index(data: bytes, rng: random.Random) -> bytes:
    """An MP4 whose 'moov' box (the index) is removed, emptied or has a wrong size."""
    at = data.find(b"moov")
    if at < 4:
        return flip_bytes(data, rng)
    size = int.from_bytes(data[at - 4:at], "big")
    how = rng.choice(["remove", "zero", "size"])
    if how == "remove":
        return data[:at - 4] + data[at - 4 + size:]
    if how == "zero":
        return data[:at + 4] + bytes(size - 8) + data[at - 4 + size:]
    return data[:at - 4] + rng.randrange(2**32).to_bytes(4, "big") + data[at:]


def header_field(data: bytes, rng: random.Random) -> bytes:
    """A size or time field of the header set to 0, 1, a huge or a random value."""
    value = rng.choice([0, 1, 0xFFFF, 0x7FFFFFFF, rng.randrange(2**32)])
    out = bytearray(data)
    if data[:4] == b"\x89PNG":
        at = 16 + 4 * rng.randrange(2)  # IHDR width or height
        out[at:at + 4] = value.to_bytes(4, "big")
    elif data[:2] == b"\xff\xd8":
        at = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
        if at < 0:
            return flip_bytes(data, rng)
        at += 5 + 2 * rng.randrange(2)  # SOF height or width
        out[at:at + 2] = (value & 0xFFFF).to_bytes(2, "big")
    else:
        box = rng.choice([b"tkhd", b"mvhd", b"mdhd", b"stsz", b"stco", b"avcC"])
        at = data.find(box)
        if at < 0:
            return flip_bytes(data, rng)
        offset = {b"tkhd": 80, b"mvhd": 16, b"mdhd": 16, b"stsz": 12, b"stco": 8, b"avcC": 6}[box]
        out[at + offset:at + offset + 4] = value.to_bytes(4, "big")
    return bytes(out)


MUTATIONS = {"truncate": truncate, "flip": flip_bytes, "index": cut_index, "header": header_field}
SUFFIXES = [".mp4", ".mov", ".mkv", ".avi", ".jpg", ".png"]


@dataclass
class Case:
    seed: str
    mutation: str
    suffix: str
    input: Path


def cases(seeds: dict[str, Path], count: int, seed: int, folder: Path) -> list[Case]:
    """`count` mutated inputs in `folder`, the same for the same `seed`."""
    rng = random.Random(seed)
    out = []
    for k in range(count):
        name = rng.choice(sorted(seeds))
        mutation = rng.choice(sorted(MUTATIONS))
        if mutation == "index" and not name.endswith(".mp4"):
            mutation = "truncate"
        data = MUTATIONS[mutation](seeds[name].read_bytes(), rng)
        suffix = Path(name).suffix if rng.random() < 0.8 else rng.choice(SUFFIXES)  # a swapped suffix
        case_dir = folder / f"case{k:04d}"
        case_dir.mkdir()
        path = case_dir / f"input{suffix}"
        path.write_bytes(data)
        out.append(Case(name, mutation, suffix, path))
    return out


# ------------------------------------------------------------------------------- the contract


def decodable_frames(path: Path) -> int | None:
    """Frames FFmpeg (PyAV) decodes from a video, None when it opens none."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return None
            n = 0
            for packet in c.demux(c.streams.video[0]):
                try:
                    n += len(packet.decode())
                except av.FFmpegError:
                    continue
            return n
    except (av.FFmpegError, OSError, ValueError, IndexError):
        return None


def check(case: Case, python: str = sys.executable, engine: Path = REPO / "functions") -> str | None:
    """Runs the CLI (of the `engine` folder's `limelight`) on one case; None when the contract
    holds, else what broke it."""
    before = case.input.read_bytes()
    out_dir = case.input.parent / "out"
    out_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(engine)}
    started = time.monotonic()
    try:
        run = subprocess.run([python, "-m", "limelight.cli", "anonymize", str(case.input), "-o", str(out_dir)],
                             capture_output=True, text=True, timeout=TIME_LIMIT, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"no result within {TIME_LIMIT} s (a hang?)"
    seconds = time.monotonic() - started
    if case.input.read_bytes() != before:
        return "the input was modified"
    if "Traceback" in run.stderr:
        return f"traceback: {run.stderr.strip().splitlines()[-1]}"
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    left = sorted(p.name for p in out_dir.iterdir())
    if run.returncode != 0:
        errors = [line for line in lines if line.startswith("limelight: error:")]
        others = [line for line in lines if not line.startswith("limelight:")]
        if len(errors) != 1 or others:
            return f"exit {run.returncode} without exactly one error line: {lines[:4]}"
        if left:
            return f"exit {run.returncode} but left {left}"
        return None
    others = [line for line in lines if not line.startswith("limelight:")]
    if others:
        return f"raw library lines on stderr: {others[:3]}"
    if len(left) != 1 or left[0].startswith("."):
        return f"exit 0 but the output folder holds {left}"
    output = out_dir / left[0]
    if output.suffix.lower() in (".jpg", ".jpeg", ".png"):
        return None if output.stat().st_size > 0 else "an empty photo was published"
    wanted, got = decodable_frames(case.input), decodable_frames(output)
    if got is None or got == 0:
        return "exit 0 but the output decodes to no frame"
    if wanted is not None and got < wanted:
        return f"exit 0 but the output has {got} frames where FFmpeg decodes {wanted} ({seconds:.0f} s)"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description="Mutate real clips and photos and check the CLI's contract on each.")
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", type=Path, default=None, help="shared data folder (default $LIMELIGHT_DATA or ../shared/data)")
    ap.add_argument("--keep", type=Path, default=None, help="copy failing inputs into this folder")
    ap.add_argument("--engine", type=Path, default=REPO / "functions",
                    help="the functions/ folder whose limelight runs (another checkout's, to compare)")
    args = ap.parse_args()
    data = args.data or data_dir()
    with tempfile.TemporaryDirectory(prefix="limelight-fuzz-") as tmp:
        folder = Path(tmp)
        seeds = make_seeds(folder, data)
        failures, started = [], time.monotonic()
        for k, case in enumerate(cases(seeds, args.cases, args.seed, folder)):
            problem = check(case, engine=args.engine)
            if problem:
                failures.append((case, problem))
                print(f"FAIL case {k} ({case.seed}, {case.mutation}, {case.suffix}): {problem}", flush=True)
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(case.input, args.keep / f"case{k:04d}{case.suffix}")
            shutil.rmtree(case.input.parent)
        print(f"{args.cases - len(failures)} passed, {len(failures)} failed "
              f"(seed {args.seed}, {time.monotonic() - started:.0f} s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
