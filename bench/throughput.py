"""Throughput: LimeLight vs a pure transcode vs the `deface` tool, side by side in one run.

What is measured, per clip (default: the 720p `friends_yakhyo_in_video.mp4` and the 1080p
`street_pedestrians_facenet_pytorch.mp4`; `--clips` adds e.g. the 360p hamilton clip):

  (a) LimeLight: `Anonymizer(Detector(), None).video(src, dst)`, default options, no known faces
      (decode -> detect -> track -> blur -> libx264 encode, audio copied);
  (a') with --known-faces, also (a) with the clip's consented people as known faces (friends: all
      12 photos of its 6 people; hamilton: the performer), recognition included, gallery loading not;
  (b) transcode: `limelight.video.transcode(src, dst)` with no frame callback: the same decoder
      and libx264 settings as (a), frames passed from decoder to encoder in YUV with no colour
      conversion, i.e. the floor LimeLight cannot beat;
  (c) deface 1.5.0 (PyPI), its default settings (`deface SRC -o DST`: CenterFace at full
      resolution, threshold 0.2, imageio-ffmpeg libx264 writer), in its own venv.

fps = input frames / wall seconds of one file's processing. (a) and (b) are timed in this
process around the engine call (the Detector's model load included, Python imports not);
(c) runs `deface.deface.main()` in a subprocess of the deface venv, timed inside that process
around `main()` (model load and deface's own frame-count pass included, interpreter start-up and
imports not); the subprocess's whole wall time is printed too. Runs are interleaved
(a, b, c, a, b, c, ...) `--repeats` times and the table shows medians; ratios are the median of
the per-round ratios (paired runs, so a load spike hits both sides of a ratio alike).

Product goals checked: LimeLight >= 30 fps at 720p, >= 4x deface's fps, >= 40 % of transcode.
The machine must be idle for meaningful figures: the load average is printed at start and end.

deface venv (git-ignored `bench/.venv`), created on first use, or by hand:
    python3 -m venv bench/.venv && bench/.venv/bin/pip install deface==1.5.0
Writes only to a temporary directory (outputs are deleted after each run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchlib import model_line, BENCH, cut_clip, data_dir, load_average, require  # noqa: E402

DEFAULT_CLIPS = ["friends_yakhyo_in_video.mp4", "street_pedestrians_facenet_pytorch.mp4"]
# Clip -> photos of its consented people under videos/known_faces (for --known-faces; a folder = all of it).
KNOWN_FACES = {"friends_yakhyo_in_video.mp4": ["friends"],
               "hamilton_white_house_short_clip.mp4": ["hamilton_white_house/lin-manuel-miranda.png"]}
DEFACE_VERSION = "1.5.0"
DEFACE_VENV = BENCH / ".venv"
GOAL_FPS_720P, GOAL_VS_DEFACE, GOAL_VS_TRANSCODE = 30.0, 4.0, 0.40

# Runs in the deface venv: deface's CLI entry point with its defaults, timed around main().
_DEFACE_DRIVER = r"""
import contextlib, json, sys, time
import deface, deface.deface as D
src, dst = sys.argv[1], sys.argv[2]
sys.argv = ["deface", src, "-o", dst]
backend = "onnxrt"
try:
    import onnx, onnxruntime  # deface's "auto" backend picks onnxruntime only when both import
except Exception:
    backend = "opencv"
t0 = time.perf_counter()
with contextlib.redirect_stdout(sys.stderr):
    D.main()
t1 = time.perf_counter()
print(json.dumps({"seconds": t1 - t0, "version": deface.__version__, "backend": backend}))
"""


def ensure_deface(venv: Path, install: bool) -> Path | None:
    """The deface venv's python, installing deface there on first use; None (with a message) if unusable."""
    python = venv / "bin" / "python"
    if not python.exists():
        if not install:
            print(f"deface: SKIPPED, no venv at {venv}; install with\n"
                  f"  python3 -m venv {venv} && {venv}/bin/pip install deface=={DEFACE_VERSION}")
            return None
        print(f"deface: creating {venv} and installing deface=={DEFACE_VERSION} (first use) ...", flush=True)
        try:
            subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"deface=={DEFACE_VERSION}"], check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"deface: SKIPPED, install failed ({e}); try by hand:\n"
                  f"  python3 -m venv {venv} && {venv}/bin/pip install deface=={DEFACE_VERSION}")
            return None
    probe = subprocess.run([str(python), "-c", "import deface; print(deface.__version__)"], capture_output=True, text=True)
    if probe.returncode != 0:
        print(f"deface: SKIPPED, `import deface` fails in {venv}: {probe.stderr.strip().splitlines()[-1:]}")
        return None
    if probe.stdout.strip() != DEFACE_VERSION:
        print(f"deface: note: {venv} has deface {probe.stdout.strip()}, not {DEFACE_VERSION}")
    return python


def run_limelight(src: Path, dst: Path, known: Path | None = None, detect_workers: int | None = None) -> tuple[float, int]:
    from limelight.detector import Detector
    from limelight.pipeline import AnonymizeOptions, Anonymizer
    from limelight.recognizer import Recognizer, load_gallery

    # The consent gallery is read once per job, not per frame: outside the timed part.
    recognizer = Recognizer(load_gallery(known)) if known else None
    t0 = time.perf_counter()
    report = Anonymizer(Detector(), recognizer, AnonymizeOptions(detect_workers=detect_workers)).video(src, dst)
    return time.perf_counter() - t0, report.frames


def run_transcode(src: Path, dst: Path) -> tuple[float, int]:
    from limelight.video import transcode

    t0 = time.perf_counter()
    stats = transcode(src, dst)
    return time.perf_counter() - t0, stats.frames


def run_deface(python: Path, src: Path, dst: Path) -> tuple[float, int, dict]:
    from limelight.video import probe

    t0 = time.perf_counter()
    proc = subprocess.run([str(python), "-c", _DEFACE_DRIVER, str(src), str(dst)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not dst.exists():
        raise RuntimeError(f"deface failed on {src.name}: {proc.stderr.strip()[-800:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["process_wall"] = wall
    return info["seconds"], probe(dst).frame_count, info


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median of per-round fps ratios num/den, where the lists hold seconds (so ratio = den/num)."""
    return statistics.median(d / n for n, d in zip(num, den))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See the module docstring (bench/README.md) for the method.")
    ap.add_argument("--data", help="shared data folder (default: $LIMELIGHT_DATA or <repo>/../shared/data)")
    ap.add_argument("--clips", nargs="+", default=DEFAULT_CLIPS, metavar="FILE",
                    help=f"clip file names under videos/clips/ (default: {' '.join(DEFAULT_CLIPS)}; "
                         "add hamilton_white_house_short_clip.mp4 for 360p)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="smoke test: use only the first SECONDS of each clip (packet copy into the temp dir)")
    ap.add_argument("--no-deface", action="store_true", help="skip deface")
    ap.add_argument("--detect-workers", type=int, default=None,
                    help="LimeLight's frames detected at once (default: the engine's, one per usable CPU; 1 = one frame at a time on a 2-thread interpreter, the previous default)")
    ap.add_argument("--known-faces", action="store_true",
                    help="also time LimeLight with the consented people of clips that have them (ll+known)")
    ap.add_argument("--deface-venv", type=Path, default=DEFACE_VENV, help=f"venv holding deface (default {DEFACE_VENV.relative_to(BENCH.parent)})")
    ap.add_argument("--no-install", action="store_true", help="do not create the deface venv when it is missing (skip deface instead)")
    args = ap.parse_args()

    from limelight.video import probe

    clips_dir = data_dir(args.data) / "videos" / "clips"
    sources = [require(clips_dir / name, "clip") for name in args.clips]
    deface_py = None if args.no_deface else ensure_deface(args.deface_venv, install=not args.no_install)
    tools = ["limelight", "transcode"] + (["deface"] if deface_py else [])
    known_dirs = {}
    if args.known_faces:
        tools.insert(1, "ll+known")

    print(f"start: {load_average()}; {model_line()}")
    times: dict[tuple[str, str], list[float]] = {}
    frames: dict[tuple[str, str], set[int]] = {}
    extra: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="limelight-bench-") as tmp:
        tmp = Path(tmp)
        for src in sources:
            if args.known_faces and src.name in KNOWN_FACES:  # a gallery folder of the clip's people
                gallery = tmp / f"known_{src.stem}"
                gallery.mkdir()
                for rel in KNOWN_FACES[src.name]:
                    shared = require(data_dir(args.data) / "videos" / "known_faces" / rel, "known faces")
                    for photo in sorted(shared.iterdir()) if shared.is_dir() else [shared]:
                        (gallery / photo.name).symlink_to(photo)
                known_dirs[src.name] = known_dirs[f"cut_{src.name}"] = gallery  # the --seconds cut too
        inputs = []
        for src in sources:
            if args.seconds:
                src = cut_clip(src, tmp / f"cut_{src.name}", args.seconds)
            src.read_bytes()  # into the page cache before the first timed run
            inputs.append(src)
        for r in range(args.repeats):
            for src in inputs:
                for tool in tools:
                    dst = tmp / f"{tool.replace('+', '_')}_{src.stem}.mp4"
                    if tool == "ll+known" and src.name not in known_dirs:
                        continue
                    if tool == "limelight":
                        sec, n = run_limelight(src, dst, detect_workers=args.detect_workers)
                    elif tool == "ll+known":
                        sec, n = run_limelight(src, dst, known_dirs[src.name], detect_workers=args.detect_workers)
                    elif tool == "transcode":
                        sec, n = run_transcode(src, dst)
                    else:
                        sec, n, info = run_deface(deface_py, src, dst)
                        extra.setdefault(src.name, []).append(info)
                    dst.unlink(missing_ok=True)
                    times.setdefault((tool, src.name), []).append(sec)
                    frames.setdefault((tool, src.name), set()).add(n)
                    print(f"  round {r + 1}/{args.repeats} {src.name:45s} {tool:9s} {sec:7.2f} s  {n / sec:7.1f} fps", flush=True)
        meta = {src.name: probe(src) for src in inputs}
    print(f"end:   {load_average()}; {model_line()}")

    print("\nRaw wall seconds per run (in run order):")
    for src in inputs:
        for tool in tools:
            if (tool, src.name) in times:
                print(f"  {src.name:45s} {tool:9s} " + " ".join(f"{s:.2f}" for s in times[(tool, src.name)]))
        for info in extra.get(src.name, []):
            print(f"  {src.name:45s} deface subprocess wall {info['process_wall']:.2f} s (timed main() {info['seconds']:.2f} s)")
    if deface_py and extra:
        first = next(iter(extra.values()))[0]
        print(f"  deface {first['version']}, backend {first['backend']} (deface's 'auto' default)")

    print(f"\nMedians over {args.repeats} interleaved rounds (fps = input frames / wall s):")
    head = f"{'clip':45s} {'size':>9s} {'frames':>6s} " + " ".join(f"{t + ' fps':>14s}" for t in tools)
    head += f" {'LL/transcode':>12s}" + (f" {'LL/deface':>9s}" if "deface" in tools else "")
    print(head)
    verdicts = []
    for src in inputs:
        info = meta[src.name]
        n = info.frame_count
        counts = {t: frames[(t, src.name)] for t in tools if (t, src.name) in times}
        fps = {t: n / statistics.median(times[(t, src.name)]) if (t, src.name) in times else float("nan") for t in tools}
        for t, c in counts.items():
            if c != {n}:
                m = max(c)
                print(f"  note: {t} wrote {sorted(c)} frames for the {n} input frames of {src.name} (video starts at "
                      f"{info.start_time:.2f} s; deface's imageio reader pads the start with repeated frames); per frame it "
                      f"wrote, {t} ran at {m / statistics.median(times[(t, src.name)]):.1f} fps")
        ll_tc = median_ratio(times[("limelight", src.name)], times[("transcode", src.name)])
        row = f"{src.name:45s} {info.width}x{info.height:<4d} {n:6d} " + " ".join(f"{fps[t]:14.1f}" for t in tools)
        row += f" {ll_tc:12.2f}"
        verdicts.append((f"{src.name}: LimeLight/transcode {ll_tc:.2f} >= {GOAL_VS_TRANSCODE:.2f}", ll_tc >= GOAL_VS_TRANSCODE))
        if "deface" in tools:
            ll_df = median_ratio(times[("limelight", src.name)], times[("deface", src.name)])
            row += f" {ll_df:9.2f}"
            verdicts.append((f"{src.name}: LimeLight/deface {ll_df:.2f} >= {GOAL_VS_DEFACE:.1f}", ll_df >= GOAL_VS_DEFACE))
        if info.height == 720 or info.width == 720:
            verdicts.append((f"{src.name}: LimeLight {fps['limelight']:.1f} fps >= {GOAL_FPS_720P:.0f} at 720p", fps["limelight"] >= GOAL_FPS_720P))
        print(row)
    if known_dirs:
        print("ll+known: LimeLight with the clip's consented people (friends: its 12 photos of 6 people; hamilton: the performer), "
              "gallery loading not timed; the goals are checked on the plain run (deface recognises no one)")
    if "deface" not in tools:
        verdicts.append(("LimeLight/deface: not measured (deface skipped)", False))
    print("\nGoals:")
    for text, ok in verdicts:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    if args.seconds:
        print(f"(smoke run on the first {args.seconds:g} s of each clip: not the reference figures)")


if __name__ == "__main__":
    main()
