"""Detector figures: WIDER FACE AP (easy/medium/hard) and LiteRT latency, side by side in one run.

Models compared (all TFLite, run by the LiteRT interpreter with 2 threads):
  float         the WIDER FACE-trained RetinaFace-MobileNet0.25 weights, float32
  pruned_float  after tfmot pruning + fine-tuning, float32
  pruned_int8_ptq  the pruned model quantized after training (the comparison for QAT)
  pruned_int8   the shipped full-int8 model, quantization-aware trained (functions/limelight/models/)
AP uses the official protocol on the local 315-image val subset at long side 640 and at the
original size (long side capped at 1600). Latency: median of 60 invokes at 640x384 (a 16:9 frame
at long side 640), the models interleaved `--rounds` times (default 5), median of the medians; the
int8 / float32 ratio of each round is printed too, since this machine's noise moves it.

    .venv/bin/python bench/detector.py [--data ../shared/data] [--limit N]
The float TFLite files come from `make model` (model_opt/work/); without the pruned ones (their
weights are not kept) only float32 and the shipped int8 model are compared, and
`.venv/bin/python -m model_opt.pipeline --remeasure` exports the float32 one from the source weights.
XNNPACK is kept off AMX as in the product (functions/limelight/amx.py); the CPU is printed, since
int8's gain depends on it (VNNI or not).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "functions")]

from limelight.detector import default_model_path  # noqa: E402
from model_opt.pipeline import measure  # noqa: E402


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(os.environ.get("LIMELIGHT_DATA", REPO.parent / "shared" / "data")))
    p.add_argument("--work", type=Path, default=REPO / "model_opt" / "work")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N val images (quick look)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds (default 5)")
    args = p.parse_args()
    models = {
        "float": args.work / "float.tflite",
        "pruned_float": args.work / "pruned_float.tflite",
        "pruned_int8_ptq": args.work / "pruned_int8_ptq.tflite",
        "pruned_int8": default_model_path(),
    }
    for required in ("float", "pruned_int8"):
        if not models[required].exists():
            sys.exit(f"bench/detector.py: missing {models[required]}: run `make model` (or "
                     "`.venv/bin/python -m model_opt.pipeline --remeasure`, which exports the float32 model) first")
    missing = [name for name, path in models.items() if not path.exists()]
    if missing:
        print(f"not kept, left out: {', '.join(missing)} (make model writes them)")
    models = {name: path for name, path in models.items() if path.exists()}
    from limelight.amx import keep_xnnpack_off_amx

    print(f"CPU: {cpu_name()}; XNNPACK off AMX: {keep_xnnpack_off_amx()}")
    r = measure(args.data, models, args.limit, rounds=max(1, args.rounds))
    print(f"WIDER FACE AP, local val subset ({args.limit or 315} images), official protocol")
    print(f"{'model':<17}" + "".join(f"{s + ' ' + k:>14}" for s in ("640", "original") for k in ("easy", "medium", "hard")))
    for name, row in r["ap"].items():
        print(f"{name:<17}" + "".join(f"{row[s][k]:>14.3f}" for s in ("640", "original") for k in ("easy", "medium", "hard")))
    d = {s: {k: r["ap"]["pruned_int8"][s][k] - r["ap"]["float"][s][k] for k in ("easy", "medium", "hard")} for s in ("640", "original")}
    print("int8 - float AP: " + ", ".join(f"{s} {k} {v:+.3f}" for s, row in d.items() for k, v in row.items()))
    lat = r["latency_ms"]
    print(f"LiteRT latency 640x384, 2 threads (median ms): " + ", ".join(f"{k} {v:.2f}" for k, v in lat.items()))
    rounds = r["latency_rounds_ms"]
    per_round = [i / f for i, f in zip(rounds["pruned_int8"], rounds["float"])]
    print(f"int8 / float32 latency ratio: {lat['pruned_int8'] / lat['float']:.2f} (bar: <= 0.5); per round: "
          + " ".join(f"{v:.2f}" for v in per_round))
    print(f"int8 model file: {default_model_path().stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
