"""The analyze pass: decoded frames -> detections -> tracks over the whole video -> samples -> a plan.

Nothing is encoded and no frame is held: per frame, the tracker gets the detections and gives
back the boxes of frames it has settled; each track keeps, per sampling window, the crop of its
best face so far (`quality`: detector score, size, sharpness), which goes to the face encoder when
the window closes. When the video ends, fragments of one appearance are linked (`link`), every
linked track is decided as a whole from all its samples (`consent.decide`), and the plan is built.
Memory grows only with the boxes (a few bytes each), not with the frames.
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from limelight.consent import DecisionOptions, Sample, decide
from limelight.encoder_worker import FaceEncoder
from limelight.plan import BLUR, SHOW, PlanTrack
from limelight.recognizer import Recognizer, face_crop
from limelight.tracker import Tracker, TrackerOptions
from limelight.video import Frame

__all__ = ["Analysis", "SamplingOptions", "link", "quality", "without_duplicates"]


@dataclass(frozen=True)
class SamplingOptions:
    """Which faces of a track are encoded (an encoding costs ~90 ms of one core).

    A track's life is cut into windows of `windows[k]` frames (then `late_window` each); the best
    face of each window (`quality`) among detections scoring at least `min_score` is encoded.
    Short first windows give a short track a few samples; longer ones later keep a long track's
    cost low while still finding where its identity changes. Frame counts are for videos of up to
    `base_fps` and stretched for faster ones (`at_rate`).

    Fragments of one track (the detector lost the face for a moment) are linked when the next one
    starts within `link_gap` frames of the previous one's end, in the same shot, at most
    `link_shift` box sides away and at most `link_size` times larger or smaller.
    """

    min_score: float = 0.6
    windows: tuple[int, ...] = (12, 20, 32, 64)
    late_window: int = 120
    settle_after: int = 2  # samples that agree before a track is sampled every late_window frames
    result_lag: int = 8  # an encoding is claimed this many frames after it was asked for
    link_gap: int = 45
    link_shift: float = 1.0
    link_size: float = 1.6
    base_fps: float = 30.0

    def at_rate(self, fps: float) -> "SamplingOptions":
        if not fps or fps <= self.base_fps:
            return self
        k = fps / self.base_fps
        return replace(self, windows=tuple(max(1, round(w * k)) for w in self.windows),
                       late_window=max(1, round(self.late_window * k)), link_gap=max(1, round(self.link_gap * k)),
                       result_lag=max(1, round(self.result_lag * k)))

    def window(self, k: int) -> int:
        return self.windows[k] if k < len(self.windows) else self.late_window


def quality(frame: Frame, box: np.ndarray, score: float) -> float:
    """How good a face is for recognition: detector score x size (saturating at 80 px) x
    sharpness (variance of the Laplacian of the face on a 32 x 32 grey patch)."""
    x1, y1, x2, y2 = (int(round(float(v))) for v in box[:4])
    x1, y1 = max(x1, 0), max(y1, 0)
    x2, y2 = min(x2, frame.width), min(y2, frame.height)
    if x2 - x1 < 4 or y2 - y1 < 4:
        return 0.0
    if frame.yuv is not None:
        grey = frame.planes()[0][y1:y2, x1:x2]
    else:
        grey = cv2.cvtColor(np.ascontiguousarray(frame.rgb[y1:y2, x1:x2]), cv2.COLOR_RGB2GRAY)
    patch = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    sharp = float(cv2.Laplacian(patch, cv2.CV_32F).var())
    side = min(x2 - x1, y2 - y1)
    return float(score) * min(1.0, side / 80.0) * sharp / (sharp + 100.0)


def _size_score(box: np.ndarray, score: float) -> float:
    """`quality` without the sharpness term (as if sharpness were 0.5)."""
    side = float(min(box[2] - box[0], box[3] - box[1]))
    return float(score) * min(1.0, max(side, 0.0) / 80.0) * 0.5


@dataclass
class _Window:
    end: int  # first frame past the window
    k: int  # window number in the track
    best: tuple | None = None  # (quality, frame index, crop job, box)


@dataclass
class RawTrack:
    """A tracker track: its settled boxes and its samples (tickets until the encodings are in)."""

    id: int
    shot: int
    frames: array
    coords: array
    peak: float = 0.0
    detected: int = 0
    last_detected: int = 0
    best: tuple | None = None  # (quality, frame, box): the thumbnail a reviewer sees
    samples: list[Sample] = field(default_factory=list)  # encoded and matched, in frame order

    def settled(self, recognizer: Recognizer, count: int) -> bool:
        """Whether the last `count` samples agree: all matches of one face, or all matches of
        nobody (a stranger, or a face turned away). A settled track is sampled only every
        `late_window` frames: more samples would cost more than they could change."""
        last = self.samples[-count:]
        if len(last) < count:
            return False
        if all(s.name is not None and recognizer.same_person(s.name, last[0].name) for s in last):
            return True
        return all(s.name is None for s in last)

    @property
    def first(self) -> int:
        return self.frames[0]

    @property
    def last(self) -> int:
        return self.frames[-1]

    def box(self, i: int) -> np.ndarray:
        return np.asarray(self.coords[4 * i:4 * i + 4], np.float32)


class Analysis:
    """Feeds one video's frames (in order) and their detections; `finish` gives the raw tracks.

    `turns` / `sar`: the display rotation and pixel aspect with which faces are cut for encoding
    (as `recognizer.face_crop` takes them)."""

    def __init__(self, tracker: TrackerOptions, sampling: SamplingOptions, encoder: FaceEncoder | None = None,
                 recognizer: Recognizer | None = None, turns: int = 0, sar: float = 1.0) -> None:
        # Every track's boxes are collected; which tracks are confirmed is decided at the end, with
        # the whole track known (a weak track confirmed late is blurred from its start).
        self.confirm = (tracker.confirm_score, tracker.confirm_frames)
        self.tracker = Tracker(replace(tracker, confirm_score=0.0, confirm_frames=1))
        self.sampling, self.turns, self.sar = sampling, turns, sar
        self.encoder = encoder if recognizer is not None else None
        self.recognizer = recognizer
        # (frame, track, ticket) of samples asked for: claimed `sampling.result_lag` frames later,
        # so which faces are sampled does not depend on how fast the encoder worker is.
        self.pending: deque = deque()
        self.tracks: dict[int, RawTrack] = {}
        self.windows: dict[int, _Window] = {}
        self.shot = 0
        self.shot_starts: list[int] = []
        self._next = 0  # next frame whose boxes are collected
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (width, height) of the frames
        self.samples = 0
        self.raw_tracks = self.linked_tracks = 0
        self.unconfirmed: list[RawTrack] = []
        self.skipped = 0  # frames left undetected while no face was near (`AnonymizeOptions.idle_skip`)

    def figures(self) -> dict:
        """For the plan and the report: tracks before and after linking, samples, shot starts."""
        return {"tracker_tracks": self.raw_tracks, "linked_tracks": self.linked_tracks, "samples": self.samples,
                "frames_skipped": self.skipped, "shots": list(self.shot_starts)}

    def add(self, frame: Frame, detections: np.ndarray, cut: bool) -> None:
        i = frame.index
        self.size = self.size or (frame.width, frame.height)
        if cut and self.encoder is not None:
            self._flush(i, every=True)  # the tracks of the last shot are over
        if cut or not self.shot_starts:
            self.shot_starts.append(i)
            self.shot = len(self.shot_starts) - 1
        for a in self.tracker.update(i, detections, new_shot=cut):
            t = self.tracks.get(a.track_id)
            if t is None:
                t = self.tracks[a.track_id] = RawTrack(a.track_id, self.shot, array("I"), array("f"))
            score = float(a.detection[4]) if len(a.detection) > 4 else 1.0
            t.peak, t.detected, t.last_detected = max(t.peak, score), t.detected + 1, i
            # Sharpness is measured only for faces that may be sampled; the others' thumbnails
            # are chosen by score and size alone.
            sampled = self.encoder is not None and score >= self.sampling.min_score
            q = quality(frame, a.detection, score) if sampled else _size_score(a.detection, score)
            if t.best is None or q > t.best[0]:
                t.best = (q, i, a.detection[:4].copy())
            if sampled:
                self._candidate(t, frame, a.detection[:4], q)
        self.frames = i + 1
        if self.encoder is not None:
            self._claim(i - self.sampling.result_lag)
            self._flush(i)
        self._collect()

    def _candidate(self, t: RawTrack, frame: Frame, box: np.ndarray, q: float) -> None:
        i = frame.index
        w = self.windows.get(t.id)
        if w is None:
            w = self.windows[t.id] = _Window(i + self.sampling.window(0), 0)
        if w.best is not None and q <= w.best[0]:
            return
        job = face_crop(frame, box, turns=self.turns, sar=self.sar)
        if job is not None:  # None: too small to recognise
            w.best = (q, i, job, box.copy())

    def _flush(self, upto: int, every: bool = False) -> None:
        """Encode the best face of every window that ends by frame `upto`, or whose track can no
        longer continue (its gap is over, or `every`: a cut or the end of the video)."""
        gap = self.tracker.options.max_gap
        for tid, w in list(self.windows.items()):
            t = self.tracks[tid]
            ended = every or upto - t.last_detected > gap
            if not ended and w.end > upto + 1:
                continue
            if w.best is not None:
                _, frame, job, _ = w.best
                self.pending.append((frame, t, self.encoder.submit_crop(job)))
            if ended:
                del self.windows[tid]
            else:
                settled = t.settled(self.recognizer, self.sampling.settle_after)
                length = self.sampling.late_window if settled else self.sampling.window(w.k + 1)
                self.windows[tid] = _Window(w.end + length, w.k + 1)

    def _claim(self, upto: int | None) -> None:
        """Match the encodings of the samples taken at frames <= `upto` (all: None)."""
        while self.pending and (upto is None or self.pending[0][0] <= upto):
            frame, t, ticket = self.pending.popleft()
            enc = self.encoder.result(ticket)
            m = self.recognizer.match(enc)
            t.samples.append(Sample(frame, enc, m.name, m.distance))
            self.samples += 1

    def _collect(self) -> None:
        while self._next < self.frames and self.tracker.is_final(self._next):
            for tid, box in self.tracker.boxes_at(self._next):
                t = self.tracks[tid]
                t.frames.append(self._next)
                t.coords.extend(float(v) for v in box)
            self.tracker.release(self._next)
            self._next += 1

    def finish(self) -> list[RawTrack]:
        """End of the video: every frame settled, every window encoded; the confirmed tracks."""
        self.tracker.finish()
        self._collect()
        if self.encoder is not None:
            self._flush(self.frames, every=True)
            self._claim(None)
        score, frames = self.confirm
        confirmed = [t for t in self.tracks.values() if len(t.frames) and (t.peak >= score or t.detected >= frames)]
        # The others are never drawn; a segment of the serverless workflow still hands those near its
        # ends to the join, where the rest of the track may lie across the cut (`limelight.join`).
        self.unconfirmed = [t for t in self.tracks.values() if len(t.frames) and not (t.peak >= score or t.detected >= frames)]
        return confirmed


def link(tracks: list[RawTrack], sampling: SamplingOptions) -> list[list[RawTrack]]:
    """Chains of fragments of one appearance, in order: a fragment joins the one before it when it
    starts, in the same shot, within `link_gap` frames of that one's end, near its last box and of
    a similar size (nearest in time first). Chains never cross a shot cut."""
    chains: list[list[RawTrack]] = []
    open_ends: list[list[RawTrack]] = []  # chains whose last fragment may still be continued
    for t in sorted(tracks, key=lambda t: (t.first, t.id)):
        best, best_key = None, None
        start = t.box(0)
        for chain in open_ends:
            prev = chain[-1]
            gap = t.first - prev.last
            if prev.shot != t.shot or gap <= 0 or gap > sampling.link_gap:
                continue
            end = prev.box(len(prev.frames) - 1)
            side_a, side_b = _side(end), _side(start)
            if max(side_a, side_b) > sampling.link_size * min(side_a, side_b):
                continue
            shift = float(np.linalg.norm((end[:2] + end[2:]) / 2 - (start[:2] + start[2:]) / 2)) / max(side_a, side_b, 1e-6)
            if shift > sampling.link_shift:
                continue
            key = (gap, shift)
            if best_key is None or key < best_key:
                best, best_key = chain, key
        if best is not None:
            best.append(t)
        else:
            chain = [t]
            chains.append(chain)
            open_ends.append(chain)
        open_ends = [c for c in open_ends if t.first - c[-1].last <= sampling.link_gap]
    return chains


def _side(box: np.ndarray) -> float:
    return float((box[2] - box[0] + box[3] - box[1]) / 2)


def chain_boxes(chain: list[RawTrack]) -> tuple[np.ndarray, np.ndarray]:
    """The frames and boxes of a chain of fragments: overlapping frames (one fragment's hold, the
    next one's backfill) take the union of both boxes; frames between fragments are interpolated."""
    boxes: dict[int, np.ndarray] = {}
    for t in chain:
        coords = np.frombuffer(t.coords, np.float32).reshape(-1, 4) if len(t.coords) else np.zeros((0, 4), np.float32)
        for f, b in zip(t.frames, coords):
            if f in boxes:
                a = boxes[f]
                boxes[f] = np.concatenate([np.minimum(a[:2], b[:2]), np.maximum(a[2:], b[2:])])
            else:
                boxes[f] = b.copy()
    frames = sorted(boxes)
    out_f, out_b = [], []
    for f0, f1 in zip(frames, frames[1:] + [None]):
        out_f.append(f0)
        out_b.append(boxes[f0])
        if f1 is not None and f1 > f0 + 1:
            for g in range(f0 + 1, f1):
                r = (g - f0) / (f1 - f0)
                out_f.append(g)
                out_b.append(boxes[f0] + (boxes[f1] - boxes[f0]) * r)
    return np.asarray(out_f, np.int64), np.asarray(out_b, np.float32).reshape(-1, 4)


def plan_tracks(chains: list[list[RawTrack]], recognizer: Recognizer | None, decisions: DecisionOptions,
                shot_starts: list[int] = ()) -> list[PlanTrack]:
    """One or more plan tracks per chain: the chain's spans (`consent.decide`), numbered in order
    of their first frame. A chain ends with its shot (`shot_starts`): the tracker's hold of a
    face's last box would otherwise reach into the next shot, where another face may stand."""
    out: list[PlanTrack] = []
    for chain in chains:
        frames, boxes = chain_boxes(chain)
        shot = chain[0].shot
        if shot + 1 < len(shot_starts):
            keep = frames < shot_starts[shot + 1]
            frames, boxes = frames[keep], boxes[keep]
            if not len(frames):
                continue
        samples = [s for t in chain for s in t.samples]
        spans = decide(samples, int(frames[0]), int(frames[-1]), recognizer, decisions)
        best = max((t.best for t in chain if t.best is not None), key=lambda b: b[0], default=None)
        for span in spans:
            sel = (frames >= span.first) & (frames <= span.last)
            if not sel.any():
                continue
            in_span = [t.best for t in chain if t.best is not None and span.first <= t.best[1] <= span.last]
            thumb = max(in_span, key=lambda b: b[0], default=best)
            evidence = {
                "recognition": None if recognizer is None else {
                    "samples": span.samples, "matches": span.matches,
                    "best_distance": None if span.best_distance is None else round(span.best_distance, 3)},
                "best": None if thumb is None else {"frame": int(thumb[1]), "box": [round(float(v), 1) for v in thumb[2]]},
                "fragments": len(chain),
                "peak_score": round(max(t.peak for t in chain), 3),  # the detector's best score for it
            }
            own = [s for s in samples if span.first <= s.frame <= span.last]
            out.append(PlanTrack(0, SHOW if span.person else BLUR, span.person, frames[sel], boxes[sel], evidence, own))
    out = without_duplicates(out)
    out.sort(key=lambda t: (t.first, float(t.boxes[0][0])))
    for i, t in enumerate(out):
        t.id = i
    return out


# A blurred box that covers this much of a shown one (intersection over the smaller box) on the
# same frame is a second detection of the shown face (the detector's box of part of it, or a held
# box), not another face: it would blur the consented person.
DUPLICATE_COVER = 0.7


def without_duplicates(tracks: list[PlanTrack]) -> list[PlanTrack]:
    """The tracks with the frames of blurred tracks that duplicate a shown track's face removed."""
    shown = [t for t in tracks if t.decision == SHOW]
    if not shown:
        return tracks
    out = []
    for t in tracks:
        if t.decision == SHOW:
            out.append(t)
            continue
        drop = np.zeros(len(t.frames), bool)
        for s in shown:
            if s.last < t.first or s.first > t.last:
                continue
            common, ti, si = np.intersect1d(t.frames, s.frames, return_indices=True)
            if not len(common):
                continue
            a, b = t.boxes[ti], s.boxes[si]
            w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
            h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
            area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
            cover = w * h / np.maximum(np.minimum(area(a), area(b)), 1e-6)
            drop[ti[cover >= DUPLICATE_COVER]] = True
        if drop.all():
            continue
        if drop.any():
            t = PlanTrack(t.id, t.decision, t.person, t.frames[~drop], t.boxes[~drop], {**t.evidence, "duplicate_frames": int(drop.sum())},
                          t.samples)
        out.append(t)
    return out
