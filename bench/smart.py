"""Smart render vs full render vs a pure transcode, side by side in one run.

    .venv/bin/python bench/smart.py [--repeats 3] [--clips friends_yakhyo_in_video.mp4 ...]

The clip of the bar: 20 s of 720p H.264 (High, 2 B-frames, a keyframe every 2 s, AAC tone), its
first 10 s faceless scenery (`faceless_bottles_intel_ccby4.mp4` scaled up) and its last 10 s a
talking head (`talking_head_retalking_1.mp4` looped, centred); built from the shared clips into a
temporary folder, as a camera would have encoded it. Then, interleaved `--repeats` times:

  (a) smart: `limelight anonymize` (analyze + render copying the GOPs with nothing to redact);
  (b) full:  the same with `--full-render` (every frame re-encoded);
  (c) transcode: `limelight.video.transcode` (decode + the same libx264 settings, nothing else).

Printed: fps of each (medians), their ratios to (c) (median of per-round ratios), and for (a):
GOPs copied / re-encoded and the share of the faceless half's video packets that are byte-identical
to the input's. `--clips` adds shared clips with faces throughout (smart should cost no more than
full there). The machine must be idle for meaningful figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchlib import data_dir, load_average, require  # noqa: E402

SCENERY, HEAD = "faceless_bottles_intel_ccby4.mp4", "talking_head_retalking_1.mp4"
WIDTH, HEIGHT, FPS, HALF = 1280, 720, 30, 10


def _frames(path: Path):
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            yield f.to_ndarray(format="rgb24")


def build_clip(clips: Path, dst: Path) -> Path:
    """The half faceless, half talking-head clip (see the module's docstring)."""
    with av.open(str(dst), "w") as out:
        video = out.add_stream("libx264", rate=FPS, options={"crf": "20", "preset": "veryfast", "g": str(2 * FPS), "keyint_min": str(2 * FPS),
                                                             "profile": "high", "x264-params": "bframes=2:scenecut=0"})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        n = 0
        for rgb in _frames(clips / SCENERY):
            if n >= HALF * FPS:
                break
            out.mux(video.encode(av.VideoFrame.from_ndarray(cv2.resize(rgb, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR), format="rgb24")))
            n += 1
        head = list(_frames(clips / HEAD))
        while n < 2 * HALF * FPS:
            canvas = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
            face = cv2.resize(head[(n - HALF * FPS) % len(head)], (HEIGHT, HEIGHT), interpolation=cv2.INTER_LINEAR)
            canvas[:, (WIDTH - HEIGHT) // 2:(WIDTH + HEIGHT) // 2] = face
            out.mux(video.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")))
            n += 1
        out.mux(video.encode(None))
        samples = np.arange(48000 * 2 * HALF)
        tone = (0.1 * np.sin(2 * np.pi * 330 * samples / 48000)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            chunk = np.repeat(tone[None, start:start + 1024], 2, axis=0)
            af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            af.sample_rate, af.pts, af.time_base = 48000, start, Fraction(1, 48000)
            out.mux(audio.encode(af))
        out.mux(audio.encode(None))
    return dst


def video_packets(path: Path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as c:
        return [(p.pts, bytes(p)) for p in c.demux(video=0) if p.size]


def identical_share(src: Path, dst: Path, until: Fraction) -> float:
    """Share of `src`'s video packets shown before `until` (s) whose bytes `dst` has at the same pts."""
    with av.open(str(src)) as c:
        tb = c.streams.video[0].time_base
    out = dict(video_packets(dst))
    wanted = [(pts, data) for pts, data in video_packets(src) if pts * tb < until]
    return sum(out.get(pts) == data for pts, data in wanted) / max(len(wanted), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="shared data folder (default: ../shared/data or $LIMELIGHT_DATA)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clips", nargs="*", default=[], help="shared clips with faces throughout, measured too")
    args = parser.parse_args()
    clips = data_dir(args.data) / "videos" / "clips"
    for name in (SCENERY, HEAD, *args.clips):
        require(clips / name, f"shared clip {name}")

    from limelight.detector import Detector
    from limelight.pipeline import AnonymizeOptions, Anonymizer
    from limelight.video import probe, transcode

    print(f"load average at start: {load_average()}")
    smart_engine, full_engine = Anonymizer(Detector()), Anonymizer(Detector(), None, AnonymizeOptions(full_render=True))
    with tempfile.TemporaryDirectory(prefix="limelight-bench-") as tmp:
        work = Path(tmp)
        half = build_clip(clips, work / "half_faceless_720p.mp4")
        inputs = [("half faceless, 720p 20 s", half)] + [(name, clips / name) for name in args.clips]
        for label, src in inputs:
            frames = probe(src).frame_count
            runs: dict[str, list[float]] = {"smart": [], "full": [], "transcode": []}
            report = None
            for _ in range(args.repeats):
                for kind in runs:
                    dst = work / f"{kind}{src.suffix}"
                    started = time.perf_counter()
                    if kind == "transcode":
                        transcode(src, dst)
                    else:
                        result = (smart_engine if kind == "smart" else full_engine).video(src, dst)
                        if kind == "smart":
                            report = result
                    runs[kind].append(frames / (time.perf_counter() - started))
            fps = {k: statistics.median(v) for k, v in runs.items()}
            ratio = {k: statistics.median(a / b for a, b in zip(runs[k], runs["transcode"])) for k in ("smart", "full")}
            render = report.render
            print(f"\n{label}: {frames} frames, {report.faces} faces")
            print(f"  smart      {fps['smart']:6.1f} fps  {ratio['smart']:.2f}x transcode  "
                  f"({render.get('gops_copied')} GOPs copied, {render.get('gops_encoded')} re-encoded; {render.get('reason') or ''})")
            print(f"  full       {fps['full']:6.1f} fps  {ratio['full']:.2f}x transcode")
            print(f"  transcode  {fps['transcode']:6.1f} fps")
            print(f"  smart / full: {statistics.median(a / b for a, b in zip(runs['smart'], runs['full'])):.2f}x")
            if src == half:
                print(f"  faceless half: {100 * identical_share(src, work / 'smart.mp4', Fraction(HALF)):.1f}% of its video packets byte-identical")
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
