"""`make demo`: build a short clip from public-domain portraits, anonymize it, show before/after.

The portraits ship inside installed packages (matplotlib's Grace Hopper sample, scikit-image's
astronaut Eileen Collins; both US-government works in the public domain), so the demo needs no
download and no shared data. Grace Hopper is the consenting person: her face stays visible, the
astronaut's is blurred.

    python -m limelight.demo --out demo
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

WIDTH, HEIGHT, FPS, SECONDS = 960, 540, 25, 6
SAMPLE_RATE = 44100


def portraits() -> dict[str, np.ndarray]:
    """RGB uint8 portraits, by name."""
    from matplotlib import cbook
    from skimage import data

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    # The astronaut's head and shoulders: the flag and the shuttle model beside her are left out (the
    # detector took details of the model, 20 px in the clip, for faces: 5 false tracks)
    astronaut = data.astronaut()[0:330, 90:370]
    return {"grace_hopper": np.ascontiguousarray(hopper), "astronaut": np.ascontiguousarray(astronaut)}


def _background(t: float) -> np.ndarray:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    r = 90 + 60 * np.sin(x / 97 + t)
    g = 110 + 50 * np.sin(y / 61 - t * 0.7)
    b = 140 + 40 * np.sin((x + y) / 150 + t * 0.3)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def _paste(frame: np.ndarray, img: np.ndarray, cx: float, cy: float) -> None:
    h, w = img.shape[:2]
    x0, y0 = int(cx - w / 2), int(cy - h / 2)
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + w, WIDTH), min(y0 + h, HEIGHT)
    if fx1 > fx0 and fy1 > fy0:
        frame[fy0:fy1, fx0:fx1] = img[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]


def make_clip(path: Path, faces: dict[str, np.ndarray]) -> None:
    """Two portraits drifting over a moving background, with a quiet tone as the soundtrack."""
    hopper = cv2.resize(faces["grace_hopper"], (220, 258), interpolation=cv2.INTER_AREA)
    astro = cv2.resize(faces["astronaut"], (212, 250), interpolation=cv2.INTER_AREA)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS, options={"crf": "18", "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = out.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        for i in range(FPS * SECONDS):
            t = i / FPS
            frame = _background(t)
            _paste(frame, hopper, 260 + 90 * np.sin(t * 0.9), 270 + 40 * np.cos(t * 1.3))
            _paste(frame, astro, 700 - 80 * np.sin(t * 0.7), 260 + 50 * np.sin(t * 1.1))
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(video.encode(None))
        samples = np.arange(SAMPLE_RATE * SECONDS)
        tone = (0.1 * np.sin(2 * np.pi * 440 * samples / SAMPLE_RATE)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            chunk = tone[None, start : start + 1024]
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = SAMPLE_RATE, start, Fraction(1, SAMPLE_RATE)
            out.mux(audio.encode(af))
        out.mux(audio.encode(None))


def _frame_at(path: Path, index: int) -> np.ndarray:
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == index:
                return f.to_ndarray(format="rgb24")
    raise ValueError(f"{path} has fewer than {index + 1} frames")


def before_after(src: Path, dst: Path, png: Path, index: int = FPS * 2) -> None:
    pair = np.concatenate([_frame_at(src, index), _frame_at(dst, index)], axis=1)
    cv2.imwrite(str(png), pair[..., ::-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Build and anonymize the LimeLight demo clip.")
    p.add_argument("--out", type=Path, default=Path("demo"))
    args = p.parse_args(argv)
    out: Path = args.out
    known = out / "known_faces"
    known.mkdir(parents=True, exist_ok=True)
    faces = portraits()
    cv2.imwrite(str(known / "grace_hopper.jpg"), faces["grace_hopper"][..., ::-1])
    clip, result = out / "input.mp4", out / "anonymized.mp4"
    make_clip(clip, faces)
    cmd = [sys.executable, "-m", "limelight.cli", "anonymize", str(clip), "--known-faces", str(known),
           "-o", str(result), "--report", str(out / "report.json")]
    subprocess.run(cmd, check=True)
    before_after(clip, result, out / "before_after.png")
    print(f"demo: {clip} -> {result}; before/after: {out / 'before_after.png'}; report: {out / 'report.json'}")


if __name__ == "__main__":
    main()
