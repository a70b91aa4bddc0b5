"""Cost and latency model of the workflow on AWS, from per-frame costs measured on this machine.

`python -m infra.cost_model [--clip PATH] [--hours 1] [--fps 30] [--full-render]` measures, on the 1080p clip:
  c1  engine seconds per frame on 1 CPU   (stands for 1,769 MB: Lambda's one full vCPU)
  cN  engine seconds per frame on all CPUs of this machine (stands for 10,240 MB = 6 vCPUs,
      assumed no faster than that: the engine keeps ~2-3 threads busy)
  init  cold start of the anonymize function: imports + detector load (image pull not included)
  cut   split + join seconds per frame (stream copy, on a longer 720p clip)
and prints, for segment lengths L and both memory sizes, the model of infra/README.md:

  N       = ceil(D / L)                     segments (keyframe cuts: each at least L long)
  T_seg   = init (first wave only) + L * fps * c(M) + 2 o   (analyze and render: two invocations)
  waves   = ceil(N / P),  P = min(MapMaxConcurrency, 40 inline | account limit distributed)
  latency = T_split + T_join + T_s3 + 2 init + waves * (L * fps * c(M) + 2 o) + T_tracks
  cost    = N * (L * fps * c(M) + 2 o) * M / 1024 * GBs_price + cold * init * M / 1024 * GBs_price
            + (2 N + 5) * request_price + transitions * transition_price
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from infra.template import REPO

GB_SECOND = 0.0000166667  # USD, Lambda x86, us-east-1
REQUEST = 0.20 / 1_000_000  # USD per invocation
TRANSITION = 0.025 / 1000  # USD per Step Functions standard state transition
PER_SEGMENT_OVERHEAD = 1.0  # s: download/upload of a segment + engine start, per invocation (estimate, see README)
INVOCATIONS_PER_SEGMENT = 2  # the analyze Map's and the render Map's
TRANSITIONS_PER_SEGMENT = 3 * INVOCATIONS_PER_SEGMENT  # per Map iteration: iteration start, task, iteration end (approximate)
TRACKS_JOIN_SECONDS = (2.0, 0.02)  # the join step: fixed (start, gallery) + per segment (one small edges file read)
BYTES_PER_SECOND = 10e6 / 8  # 1080p30 H.264 at ~10 Mbit/s: 4.5 GB per hour
S3_BYTES_PER_SECOND = 150e6  # one Lambda's S3 throughput (assumption, see README)
CLIPS = Path(os.environ.get("LIMELIGHT_DATA", REPO.parent / "shared" / "data")) / "videos" / "clips"
DEFAULT_CLIP = CLIPS / "street_pedestrians_facenet_pytorch.mp4"
# split + join cost per frame needs a longer clip than the 4 s 1080p one (opening files dominates).
DEFAULT_CUT_CLIP = CLIPS / "friends_yakhyo_in_video.mp4"


def engine_seconds_per_frame(clip: Path, cpus: set[int], full_render: bool = False) -> float:
    """Engine wall seconds per frame with the process pinned to `cpus` (no consent gallery); smart
    render unless `full_render` (the GOPs with nothing to redact copied: footage with few faces costs less)."""
    from limelight.detector import Detector
    from limelight.pipeline import AnonymizeOptions, Anonymizer

    os.sched_setaffinity(0, cpus)
    try:
        engine = Anonymizer(Detector(), None, AnonymizeOptions(full_render=full_render))
        with tempfile.TemporaryDirectory() as tmp:
            engine.video(clip, Path(tmp) / "warm.mp4")  # first run pays one-off allocations
            report = engine.video(clip, Path(tmp) / "out.mp4")
        return report.seconds / report.frames
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def cold_start_seconds() -> float:
    """A fresh interpreter importing the anonymize handler and loading the detector."""
    code = (
        "import sys, time; t = time.perf_counter(); sys.path.insert(0, 'functions'); "
        "import handlers.anonymize as a; a.detector(); print(time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def cut_seconds_per_frame(clip: Path) -> float:
    from limelight.segments import join, split

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        segments = split(clip, Path(tmp), 3.0)
        join([s.path for s in segments], clip, Path(tmp) / "joined.mp4")
        return (time.perf_counter() - started) / sum(s.frames for s in segments)


def model(c: float, memory_mb: int, seconds: float, fps: float, segment_s: float, init: float, cut: float, concurrency: int) -> dict:
    frames = seconds * fps
    n = math.ceil(seconds / segment_s)
    per_segment = segment_s * fps * c + INVOCATIONS_PER_SEGMENT * PER_SEGMENT_OVERHEAD
    parallel = min(concurrency, n)
    waves = math.ceil(n / parallel)
    # The segment function downloads the video and uploads the segments; each segment is downloaded
    # by its analysis and by its render; reassembly downloads the original (for its audio) and the
    # segments and uploads the result.
    transfer = 6 * seconds * BYTES_PER_SECOND / S3_BYTES_PER_SECOND
    tracks = TRACKS_JOIN_SECONDS[0] + TRACKS_JOIN_SECONDS[1] * n
    latency = cut * frames + transfer + INVOCATIONS_PER_SEGMENT * init + waves * per_segment + tracks
    gb = memory_mb / 1024
    cost = (n * per_segment * gb * GB_SECOND + INVOCATIONS_PER_SEGMENT * parallel * init * gb * GB_SECOND + tracks * GB_SECOND
            + (INVOCATIONS_PER_SEGMENT * n + 5) * REQUEST + (n * TRANSITIONS_PER_SEGMENT + 10) * TRANSITION)
    return {"segments": n, "waves": waves, "latency_s": latency, "cost_usd": cost, "lambda_s": n * per_segment}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.cost_model", description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="clip for the engine's per-frame cost")
    parser.add_argument("--cut-clip", type=Path, default=DEFAULT_CUT_CLIP, help="clip for split + join per frame")
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--full-render", action="store_true", help="measure the engine re-encoding every frame (as before smart render)")
    args = parser.parse_args(argv)
    all_cpus = set(range(os.cpu_count() or 1))
    c1 = engine_seconds_per_frame(args.clip, {min(all_cpus)}, args.full_render)
    cn = engine_seconds_per_frame(args.clip, all_cpus, args.full_render)
    init, cut = cold_start_seconds(), cut_seconds_per_frame(args.cut_clip)
    load = os.getloadavg()[0]
    print(f"measured on {args.clip.name}: c1 = {c1 * 1000:.0f} ms/frame (1 CPU), c{len(all_cpus)} = {cn * 1000:.0f} ms/frame "
          f"({len(all_cpus)} CPUs), init = {init:.1f} s, split+join = {cut * 1000:.2f} ms/frame; load average {load:.1f}")
    seconds = args.hours * 3600
    print(f"{args.hours:g} h at {args.fps:g} fps = {seconds * args.fps:,.0f} frames")
    print("memory_MB  segment_s  concurrency  segments  waves  latency_min  lambda_h  cost_usd")
    for memory, c in ((1769, c1), (10240, cn)):
        for segment_s in (5, 10, 30, 60):
            for concurrency in (40, 200, 1000):
                m = model(c, memory, seconds, args.fps, segment_s, init, cut, concurrency)
                print(f"{memory:9d}  {segment_s:9d}  {concurrency:11d}  {m['segments']:8d}  {m['waves']:5d}  "
                      f"{m['latency_s'] / 60:11.1f}  {m['lambda_s'] / 3600:8.2f}  {m['cost_usd']:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
