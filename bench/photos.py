"""Photos: one detection pass at the video size vs the photo passes (`Detector.detect_photo`).

`limelight anonymize` detects a video frame once, at the `auto` size (640..960 long side), and a photo
at that size and again at about twice it up to the photo's own size, the faces merged by NMS. This
compares the two on the local WIDER FACE val subset (315 photos, ~1024 px wide), the shipped int8
model, side by side in one run:

- AP easy / medium / hard (official protocol, detections above 0.02, the model alone: no brightening);
- at the engine's operating point (its default threshold and input conditioning): the share of the
  "hard" setting's annotated faces found (IoU >= 0.5), by face height, and the detections not near
  any annotated face (IoU < 0.3: false alarms, or faces WIDER FACE left unannotated), per photo;
- milliseconds per photo at the operating point (2-thread interpreter).

    .venv/bin/python bench/photos.py [--data ../shared/data] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchlib import REPO, data_dir, load_average, model_line  # noqa: E402

sys.path[:0] = [str(REPO), str(REPO / "functions")]

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from limelight.anchors import iou_matrix  # noqa: E402
from limelight.detector import Detector  # noqa: E402
from model_opt.evaluate import EVAL_THRESHOLD, GT_DIR, val_images  # noqa: E402
from model_opt.widerface_eval import evaluate, load_ground_truth  # noqa: E402

HEIGHTS = [(0, 16), (16, 32), (32, 64), (64, None)]  # annotated face height bins, px


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="shared data folder (default: $LIMELIGHT_DATA or <repo>/../shared/data)")
    p.add_argument("--limit", type=int, default=None, help="only the first N val photos (quick look)")
    args = p.parse_args()
    data = data_dir(args.data)
    gt = load_ground_truth(data / GT_DIR)
    images = val_images(data, args.limit)
    print(f"start: {load_average()}; {model_line()}")

    scorer = Detector(threshold=EVAL_THRESHOLD, brighten_dark=False).replica(2)  # for AP: the model alone
    engine = Detector().replica(2)  # the engine's operating point
    ways = {"one pass": lambda d, x: d(x), "photo passes": lambda d, x: d.detect_photo(x)}
    ap, found, total, unmatched, seconds = {}, {}, np.zeros(len(HEIGHTS)), {}, {}
    scored = {w: {} for w in ways}
    for w in ways:
        found[w], unmatched[w], seconds[w] = np.zeros(len(HEIGHTS)), 0, 0.0
    for key, path in images:
        rgb = np.ascontiguousarray(cv2.imread(str(path))[..., ::-1])
        faces = gt.boxes[key][gt.keep["hard"][key]]
        heights = faces[:, 3] - faces[:, 1]
        bins = np.array([next(i for i, (lo, hi) in enumerate(HEIGHTS) if h >= lo and (hi is None or h < hi)) for h in heights], int)
        total += np.bincount(bins, minlength=len(HEIGHTS))
        every = gt.boxes[key]
        for w, run in ways.items():  # interleaved per photo, so load hits both alike
            scored[w][key] = run(scorer, rgb)
            t = time.perf_counter()
            dets = run(engine, rgb)
            seconds[w] += time.perf_counter() - t
            if len(dets) and len(faces):
                hit = iou_matrix(faces, dets[:, :4]).max(1) >= 0.5
                found[w] += np.bincount(bins[hit], minlength=len(HEIGHTS))
            if len(dets):
                near = iou_matrix(dets[:, :4], every).max(1) >= 0.3 if len(every) else np.zeros(len(dets), bool)
                unmatched[w] += int((~near).sum())
    for w in ways:
        ap[w] = evaluate(scored[w], gt)

    n = len(images)
    labels = [f"{lo}-{hi}px" if hi else f">={lo}px" for lo, hi in HEIGHTS]
    print(f"\nWIDER FACE val subset, {n} photos, shipped int8 model")
    print(f"{'':<14}{'AP easy':>9}{'medium':>8}{'hard':>8}{'found: all':>12}" + "".join(f"{lab:>9}" for lab in labels)
          + f"{'unmatched/photo':>17}{'ms/photo':>10}")
    for w in ways:
        share = found[w] / np.maximum(total, 1)
        print(f"{w:<14}{ap[w]['easy']:>9.3f}{ap[w]['medium']:>8.3f}{ap[w]['hard']:>8.3f}{found[w].sum() / total.sum():>12.3f}"
              + "".join(f"{s:>9.2f}" for s in share) + f"{unmatched[w] / n:>17.1f}{seconds[w] / n * 1e3:>10.0f}")
    print("found: share of the hard setting's annotated faces with a detection at IoU >= 0.5, at the engine's threshold")
    print(f"annotated faces per height bin: {', '.join(f'{lab} {int(t)}' for lab, t in zip(labels, total))}")
    print(f"end: {load_average()}")


if __name__ == "__main__":
    main()
