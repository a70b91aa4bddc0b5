"""Joining the tracks of a video's keyframe segments at their cuts (the serverless workflow).

The workflow analyzes each segment in its own Lambda, so a face crossing a cut is two tracks, one
each side, and each would be decided on its own samples: a consented person with a few frames
past the cut (too few to be recognised) would be blurred there. The join does what the CLI's
single analysis of the whole video does:

1. Each segment's analysis keeps its *edges* (`SegmentEdges`): the tracks within `link_gap`
   frames of either end, their boxes and recognition samples, and the thumbnails of its first and
   last frames (`ShotChangeDetector`). They are intermediates of the job (the work bucket, which
   expires them), never written into a plan or a report.
2. `join_segments` links a track ending near one segment's end with one starting near the next
   one's start, by `analyze.link`'s rules (the same shot, within `link_gap` frames, near the other's
   box and of a similar size; a cut that is also a shot cut links nothing), and decides each joined
   track as a whole from the samples of all its pieces (`consent.decide`).
3. `apply_join` gives a segment's plan its pieces' new decisions before it is rendered. The
   pieces of one joined track share a `joined` id, which the merged report counts once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from limelight.analyze import SamplingOptions, without_duplicates
from limelight.consent import DecisionOptions, Sample, decide
from limelight.plan import BLUR, SHOW, Plan, PlanTrack
from limelight.recognizer import Recognizer

__all__ = ["EdgeTrack", "SegmentEdges", "apply_join", "join_segments", "JOIN_VERSION"]

JOIN_VERSION = 1
_THUMB = (36, 64)


@dataclass
class EdgeTrack:
    id: int
    frames: np.ndarray  # (N,) segment frame numbers
    boxes: np.ndarray  # (N, 4)
    samples: list[Sample]  # segment frame numbers

    @property
    def first(self) -> int:
        return int(self.frames[0])

    @property
    def last(self) -> int:
        return int(self.frames[-1])


@dataclass
class SegmentEdges:
    """What the join needs of one segment's analysis."""

    frames: int
    shots: list[int]  # first frames of the segment's shots
    thumbs: tuple[np.ndarray, np.ndarray] | None  # (first frame's, last frame's), 0-255 grey 64x36
    tracks: list[EdgeTrack]

    @classmethod
    def of(cls, plan: Plan, sampling: SamplingOptions = SamplingOptions()) -> SegmentEdges:
        """A freshly analyzed plan's edges (its tracks' samples and thumbnails are in memory)."""
        frames = int(plan.input["frames"])
        near = [t for t in plan.tracks if t.first <= sampling.link_gap or t.last >= frames - 1 - sampling.link_gap]
        return cls(frames, [int(s) for s in (plan.meta.get("analysis") or {}).get("shots") or [0]], plan.edges,
                   [EdgeTrack(t.id, t.frames, t.boxes, list(t.samples)) for t in near])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """As .npz (no pickles): encodings stay float arrays."""
        samples = [(t.id, s) for t in self.tracks for s in t.samples]
        rows = [(t.id, f, *b) for t in self.tracks for f, b in zip(t.frames, t.boxes)]
        np.savez(
            path,
            frames=np.asarray(self.frames, np.int64),
            shots=np.asarray(self.shots, np.int64),
            thumbs=np.stack(self.thumbs).astype(np.float32) if self.thumbs is not None else np.zeros((0, *_THUMB), np.float32),
            box_rows=np.asarray(rows, np.float64).reshape(-1, 6),
            sample_track=np.asarray([tid for tid, _ in samples], np.int64),
            sample_frame=np.asarray([s.frame for _, s in samples], np.int64),
            sample_encoding=np.asarray([s.encoding for _, s in samples], np.float64).reshape(-1, 128),
            sample_name=np.asarray([s.name or "" for _, s in samples], dtype=str),
            sample_distance=np.asarray([s.distance for _, s in samples], np.float64),
        )
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SegmentEdges:
        with np.load(path, allow_pickle=False) as z:
            rows = z["box_rows"]
            samples: dict[int, list[Sample]] = {}
            for tid, f, enc, name, d in zip(z["sample_track"], z["sample_frame"], z["sample_encoding"], z["sample_name"],
                                            z["sample_distance"]):
                samples.setdefault(int(tid), []).append(Sample(int(f), enc, str(name) or None, float(d)))
            tracks = []
            for tid in dict.fromkeys(int(v) for v in rows[:, 0]):
                mine = rows[rows[:, 0] == tid]
                tracks.append(EdgeTrack(tid, mine[:, 1].astype(np.int64), mine[:, 2:].astype(np.float32), samples.get(tid, [])))
            thumbs = z["thumbs"]
            return cls(int(z["frames"]), [int(s) for s in z["shots"]], (thumbs[0], thumbs[1]) if len(thumbs) == 2 else None, tracks)


def _side(box: np.ndarray) -> float:
    return float((box[2] - box[0] + box[3] - box[1]) / 2)


def _pairs(left: SegmentEdges, right: SegmentEdges, sampling: SamplingOptions) -> list[tuple[int, int]]:
    """(left track id, right track id) of the tracks that continue across the cut, as `analyze.link`
    links fragments: nearest in time, then in place, first; each track continues at most one."""
    candidates = []
    for a in left.tracks:
        if a.last < left.shots[-1]:  # ended in an earlier shot of its segment
            continue
        for b in right.tracks:
            if len(right.shots) > 1 and b.first >= right.shots[1]:  # starts in a later shot
                continue
            gap = left.frames - a.last + b.first
            if gap < 1 or gap > sampling.link_gap:
                continue
            end, start = a.boxes[-1], b.boxes[0]
            sa, sb = _side(end), _side(start)
            if max(sa, sb) > sampling.link_size * min(sa, sb):
                continue
            shift = float(np.linalg.norm((end[:2] + end[2:]) / 2 - (start[:2] + start[2:]) / 2)) / max(sa, sb, 1e-6)
            if shift <= sampling.link_shift:
                candidates.append((gap, shift, a.id, b.id))
    used_a, used_b, pairs = set(), set(), []
    for _, _, ia, ib in sorted(candidates):
        if ia not in used_a and ib not in used_b:
            used_a.add(ia)
            used_b.add(ib)
            pairs.append((ia, ib))
    return pairs


def join_segments(edges: list[SegmentEdges], recognizer: Recognizer | None, *, sampling: SamplingOptions = SamplingOptions(),
                  decisions: DecisionOptions = DecisionOptions(), shot_threshold: float = 20.0) -> dict[str, Any]:
    """The joined tracks of a video's segments (in order), as the JSON `apply_join` takes:
    `{"limelight_join": 1, "joined": n, "segments": {"<index>": {"<track id>": [piece, ...]}}}`, a
    piece being `{"first", "last" (segment frames), "decision", "person", "recognition", "joined"}`.
    Only the tracks that cross a cut are listed; the others keep their own decisions."""
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def root(x: tuple[int, int]) -> tuple[int, int]:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    linked: set[tuple[int, int]] = set()
    for i in range(len(edges) - 1):
        left, right = edges[i], edges[i + 1]
        if left.thumbs is not None and right.thumbs is not None and \
                float(np.abs(right.thumbs[0] - left.thumbs[1]).mean()) > shot_threshold:
            continue  # the segment cut is a shot cut too
        for ia, ib in _pairs(left, right, sampling):
            linked |= {(i, ia), (i + 1, ib)}
            parent[root((i + 1, ib))] = root((i, ia))
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for member in sorted(linked):
        groups.setdefault(root(member), []).append(member)
    starts = np.concatenate([[0], np.cumsum([e.frames for e in edges])]).astype(np.int64)
    tracks = {(i, t.id): t for i, e in enumerate(edges) for t in e.tracks}
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    joined = 0
    for members in sorted(groups.values()):
        samples = [Sample(int(starts[i] + s.frame), s.encoding, s.name, s.distance) for i, tid in members for s in tracks[i, tid].samples]
        first = min(int(starts[i]) + tracks[i, tid].first for i, tid in members)
        last = max(int(starts[i]) + tracks[i, tid].last for i, tid in members)
        spans = decide(samples, first, last, recognizer, decisions)
        ids = list(range(joined, joined + len(spans)))
        joined += len(spans)
        for i, tid in members:
            t = tracks[i, tid]
            lo, hi = int(starts[i]) + t.first, int(starts[i]) + t.last
            pieces = []
            for span, gid in zip(spans, ids):
                a, b = max(lo, span.first), min(hi, span.last)
                if a > b:
                    continue
                pieces.append({
                    "first": a - int(starts[i]), "last": b - int(starts[i]),
                    "decision": SHOW if span.person else BLUR, "person": span.person,
                    "recognition": None if recognizer is None else {
                        "samples": span.samples, "matches": span.matches,
                        "best_distance": None if span.best_distance is None else round(span.best_distance, 3)},
                    "joined": gid,
                })
            out.setdefault(str(i), {})[str(tid)] = pieces
    return {"limelight_join": JOIN_VERSION, "joined": joined, "segments": out}


def apply_join(plan: Plan, pieces: dict[str, list[dict[str, Any]]] | None) -> Plan:
    """`plan` (one segment's, as analyzed) with its joined tracks' decisions (`join_segments`'
    entry for that segment); tracks renumbered in order of their first frame."""
    if not pieces:
        return plan
    tracks: list[PlanTrack] = []
    for t in plan.tracks:
        mine = pieces.get(str(t.id))
        if mine is None:
            tracks.append(t)
            continue
        for p in mine:
            sel = (t.frames >= p["first"]) & (t.frames <= p["last"])
            if not sel.any():
                continue
            evidence = {**t.evidence, "recognition": p["recognition"], "joined": p["joined"]}
            tracks.append(PlanTrack(0, p["decision"], p["person"], t.frames[sel], t.boxes[sel], evidence))
    tracks = without_duplicates(tracks)
    tracks.sort(key=lambda t: (t.first, float(t.boxes[0][0])))
    for i, t in enumerate(tracks):
        t.id = i
    return Plan(plan.input, tracks, plan.regions, plan.meta)
