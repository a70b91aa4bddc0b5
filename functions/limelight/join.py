"""Joining the tracks of a video's keyframe segments at their cuts (the serverless workflow).

The workflow analyzes each segment in its own Lambda, so a face crossing a cut is two tracks, one
each side, and each would be decided on its own samples: a consented person with a few frames
past the cut (too few to be recognised) would be blurred there. The join does what the CLI's
single analysis of the whole video does:

1. Each segment's analysis keeps its *edges* (`SegmentEdges`): the tracks within `link_gap`
   frames of either end, their boxes and recognition samples, and the thumbnails of its first and
   last frames (`ShotChangeDetector`). They are intermediates of the job (the work bucket, which
   expires them), never written into a plan or a report.
2. `join_segments` links a track ending near one segment's end with one starting near the start
   of a later one, by `analyze.link`'s rules (the same shot, within `link_gap` frames, near the
   other's box and of a similar size; a segment cut that is also a shot cut links nothing), fills
   the frames between them as `link` does (boxes interpolated, in the segments between too), and
   decides each joined track as a whole from the samples of all its pieces (`consent.decide`).
3. `apply_join` gives a segment's plan its pieces' new decisions and filled boxes before it is
   rendered. The pieces of one joined track share a `joined` id, which the merged report counts once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from limelight.analyze import SamplingOptions, _side, without_duplicates
from limelight.anchors import iou_matrix
from limelight.consent import DecisionOptions, Sample, decide
from limelight.pipeline import ShotChangeDetector
from limelight.plan import BLUR, SHOW, Plan, PlanTrack
from limelight.recognizer import Recognizer
from limelight.tracker import TrackerOptions

__all__ = ["EdgeTrack", "SegmentEdges", "apply_join", "join_segments", "JOIN_VERSION"]

JOIN_VERSION = 1
_THUMB = (36, 64)


@dataclass
class EdgeTrack:
    id: int
    frames: np.ndarray  # (N,) segment frame numbers
    boxes: np.ndarray  # (N, 4)
    samples: list[Sample]  # segment frame numbers
    decision: str = BLUR  # its segment's decision (a joined track's is the join's)
    pending: bool = False  # not confirmed by its segment's analysis (`Plan.pending`)
    peak: float = 0.0  # its best detection score (pending tracks)
    detected: int = 0  # frames it was detected in (pending tracks)

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

        def near(t: PlanTrack) -> bool:
            return t.first <= sampling.link_gap or t.last >= frames - 1 - sampling.link_gap

        # A pending piece near an end may turn out a confirmed track (with its continuation across the
        # cut), which the tracks ending (starting) up to link_gap frames before (after) it may continue.
        pending = [t for t in plan.pending if near(t)]
        reach_end = min((t.first for t in pending if t.last >= frames - 1 - sampling.link_gap), default=frames) - sampling.link_gap
        reach_start = max((t.last for t in pending if t.first <= sampling.link_gap), default=-1) + sampling.link_gap

        def wanted(t: PlanTrack) -> bool:
            return near(t) or t.last >= reach_end or t.first <= reach_start

        return cls(frames, [int(s) for s in (plan.meta.get("analysis") or {}).get("shots") or [0]], plan.edges,
                   [EdgeTrack(t.id, t.frames, t.boxes, list(t.samples), t.decision) for t in plan.tracks if wanted(t)]
                   + [EdgeTrack(t.id, t.frames, t.boxes, [], BLUR, True, float(t.evidence["peak"]), int(t.evidence["detected"]))
                      for t in pending])

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
            track_id=np.asarray([t.id for t in self.tracks], np.int64),
            track_pending=np.asarray([t.pending for t in self.tracks], bool),
            track_shown=np.asarray([t.decision == SHOW for t in self.tracks], bool),
            track_peak=np.asarray([t.peak for t in self.tracks], np.float64),
            track_detected=np.asarray([t.detected for t in self.tracks], np.int64),
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
            for tid, shown, pending, peak, detected in zip(z["track_id"], z["track_shown"], z["track_pending"], z["track_peak"],
                                                          z["track_detected"]):
                mine = rows[rows[:, 0] == tid]
                tracks.append(EdgeTrack(int(tid), mine[:, 1].astype(np.int64), mine[:, 2:].astype(np.float32), samples.get(int(tid), []),
                                        SHOW if shown else BLUR, bool(pending), float(peak), int(detected)))
            thumbs = z["thumbs"]
            return cls(int(z["frames"]), [int(s) for s in z["shots"]], (thumbs[0], thumbs[1]) if len(thumbs) == 2 else None, tracks)


def _confirmed(pieces: list[EdgeTrack], tracker: TrackerOptions) -> bool:
    """The tracker's confirmation of one track made of these pieces: one confirmed by its segment,
    or together one detection scoring `confirm_score` or `confirm_frames` detections."""
    return (any(not t.pending for t in pieces) or max(t.peak for t in pieces) >= tracker.confirm_score
            or sum(t.detected for t in pieces) >= tracker.confirm_frames)


def _greedy(candidates: list[tuple]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Best first (the candidates' leading keys); each track continues at most one, is continued by at most one."""
    used_a, used_b, links = set(), set(), []
    for *_, ka, kb in sorted(candidates, key=lambda c: c[:-2]):
        if ka not in used_a and kb not in used_b:
            used_a.add(ka)
            used_b.add(kb)
            links.append((ka, kb))
    return links


def _links(edges: list[SegmentEdges], starts: np.ndarray, cuts: list[bool], sampling: SamplingOptions,
           tracker: TrackerOptions) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """((segment, track id), (segment, track id)) pairs, the second continuing the first, in two
    steps as the whole video's analysis makes them. `cuts[j]`: the cut before segment j is a shot cut.

    1. The tracker's own continuity: a piece that ends at a cut and one that starts just after it
       (within `tracker.max_gap`, boxes the tracker would follow: IoU, or a small shift between boxes
       of similar size) are one tracker track, kept only when confirmed (`_confirmed`).
    2. `analyze.link`'s fragments: a confirmed track continues one that ended at most `link_gap`
       frames before it, in the same shot, near its last box and of a similar size (nearest in time,
       then in place, first), across cuts, or within a segment where one of them was confirmed only
       by step 1 (the segment's own analysis linked the others already)."""
    tracks = {(i, t.id): t for i, e in enumerate(edges) for t in e.tracks}

    def shot_of(i: int, frame: int) -> int:
        return int(np.searchsorted(edges[i].shots, frame, side="right")) - 1

    def same_shot(i: int, a: EdgeTrack, j: int, b: EdgeTrack) -> bool:
        if i == j:
            return shot_of(i, a.last) == shot_of(i, b.first)
        return (a.last >= edges[i].shots[-1] and shot_of(j, b.first) == 0 and not any(cuts[i + 1:j + 1])
                and all(len(edges[k].shots) == 1 for k in range(i + 1, j)))

    def geometry(a: EdgeTrack, b: EdgeTrack) -> tuple[float, float, float]:
        ea, sb = a.boxes[-1], b.boxes[0]
        side_a, side_b = _side(ea), _side(sb)
        return side_a, side_b, float(np.linalg.norm((ea[:2] + ea[2:]) / 2 - (sb[:2] + sb[2:]) / 2)) / max(side_a, side_b, 1e-6)

    first: list[tuple] = []
    for i in range(len(edges) - 1):
        for a in edges[i].tracks:
            for b in edges[i + 1].tracks:
                gap = int(starts[i + 1]) + b.first - int(starts[i]) - a.last
                if not 1 <= gap <= tracker.max_gap + 1 or not same_shot(i, a, i + 1, b):
                    continue
                side_a, side_b, shift = geometry(a, b)
                iou = float(iou_matrix(a.boxes[-1:], b.boxes[:1])[0, 0])
                if iou >= tracker.iou_threshold or (min(side_a, side_b) >= max(side_a, side_b) / 2 and shift <= tracker.max_shift):
                    first.append((gap, -iou, shift, (i, a.id), (i + 1, b.id)))
    after = dict(_greedy(first))
    before = {b: a for a, b in after.items()}
    chains, links = [], []  # the confirmed tracker tracks, and the links within them
    for key in sorted(tracks):
        if key in before:
            continue
        chain = [key]
        while chain[-1] in after:
            chain.append(after[chain[-1]])
        if _confirmed([tracks[k] for k in chain], tracker):
            chains.append(chain)
            links += list(zip(chain, chain[1:]))
    starting: dict[int, list[list[tuple[int, int]]]] = {}  # chains by the segment they start in
    for chain in chains:
        starting.setdefault(chain[0][0], []).append(chain)

    def later(i: int, end: int):  # the chains starting in segment i or a later one within link_gap
        j = i
        while j < len(edges) and int(starts[j]) <= end + sampling.link_gap:
            yield from starting.get(j, [])
            j += 1

    second: list[tuple] = []
    for ca in chains:
        (i, _), a = ca[-1], tracks[ca[-1]]
        for cb in later(i, int(starts[i]) + a.last):
            (j, _), b = cb[0], tracks[cb[0]]
            if cb is ca or (j == i and not (a.pending or b.pending or len(ca) > 1 or len(cb) > 1)):
                continue
            gap = int(starts[j]) + b.first - int(starts[i]) - a.last
            if j > i:  # in the whole video a's hold and b's backfill, cut off here, would have narrowed the gap
                gap_whole = gap - max(0, tracker.hold - (edges[i].frames - 1 - a.last)) - max(0, tracker.backfill - b.first)
                if gap_whole < 1:
                    continue
            if not 1 <= gap <= sampling.link_gap or not same_shot(i, a, j, b):
                continue
            side_a, side_b, shift = geometry(a, b)
            if max(side_a, side_b) <= sampling.link_size * min(side_a, side_b) and shift <= sampling.link_shift:
                second.append((gap, shift, ca[-1], cb[0]))
    return links + _greedy(second)


def join_segments(edges: list[SegmentEdges], recognizer: Recognizer | None, *, sampling: SamplingOptions = SamplingOptions(),
                  decisions: DecisionOptions = DecisionOptions(), tracker: TrackerOptions = TrackerOptions(),
                  shots: ShotChangeDetector = ShotChangeDetector()) -> dict[str, Any]:
    """The joined tracks of a video's segments (in order), as the JSON `apply_join` takes:
    `{"limelight_join": 1, "joined": n, "segments": {"<index>": {"tracks": {"<track id>": [piece, ...]},
    "added": [piece, ...]}}}`. A piece is `{"first", "last" (segment frames), "decision", "person",
    "recognition" (absent: the track's own), "joined", "fill": [[frame, x1, y1, x2, y2], ...]}`: the frames of the track it
    takes, with the boxes filled in between its pieces; `added` pieces hold boxes the segment's plan
    has not: filled in a segment between two pieces (the face went undetected through it), or of a
    track the segment did not confirm (weak, or too short before the cut) that continues a confirmed
    one, or that with its continuation is confirmed (`tracker.confirm_score` / `confirm_frames`), as
    one track of the CLI's would be; and the hold / backfill a blurred track's end has in the whole
    video (`tracker.hold`, `tracker.backfill`) where the cut cut it off. Tracks that cross no cut
    keep their own decisions."""
    starts = np.concatenate([[0], np.cumsum([e.frames for e in edges])]).astype(np.int64)
    cuts = [False] + [a.thumbs is not None and b.thumbs is not None and shots.is_cut(a.thumbs[1], b.thumbs[0])
                      for a, b in zip(edges, edges[1:])]
    links = _links(edges, starts, cuts, sampling, tracker)
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def root(x: tuple[int, int]) -> tuple[int, int]:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for ka, kb in links:
        parent[root(kb)] = root(ka)
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for member in sorted({k for link in links for k in link}):
        groups.setdefault(root(member), []).append(member)
    tracks = {(i, t.id): t for i, e in enumerate(edges) for t in e.tracks}
    nxt = dict(links)
    out: dict[str, dict[str, Any]] = {}
    joined = 0
    for members in sorted(groups.values()):
        samples = [Sample(int(starts[i] + s.frame), s.encoding, s.name, s.distance) for i, tid in members for s in tracks[i, tid].samples]
        first = min(int(starts[i]) + tracks[i, tid].first for i, tid in members)
        last = max(int(starts[i]) + tracks[i, tid].last for i, tid in members)
        spans = decide(samples, first, last, recognizer, decisions)
        ids = list(range(joined, joined + len(spans)))
        joined += len(spans)
        # Each member's whole-video frame range and the boxes it gains (a pending piece: all of its
        # own; every piece: those filled between it and the next), and those of the segments between.
        ranges: dict[tuple[int, int] | int, list] = {
            (i, tid): [int(starts[i]) + t.first, int(starts[i]) + t.last,
                       [[int(f), *(round(float(v), 1) for v in b)] for f, b in zip(t.frames, t.boxes)] if t.pending else []]
            for i, tid in members for t in [tracks[i, tid]]}
        for i, tid in members:
            if (i, tid) not in nxt:
                continue
            j, uid = nxt[i, tid]
            t, u = tracks[i, tid], tracks[j, uid]
            g0, g1 = int(starts[i]) + t.last, int(starts[j]) + u.first
            a, b = t.boxes[-1].astype(np.float64), u.boxes[0].astype(np.float64)
            for g in range(g0 + 1, g1):
                box = a + (b - a) * (g - g0) / (g1 - g0)
                seg = int(np.searchsorted(starts, g, side="right")) - 1
                target = ranges.setdefault((i, tid) if seg == i else (j, uid) if seg == j else seg, [g, g, []])
                target[0], target[1] = min(target[0], g), max(target[1], g)
                target[2].append([g - int(starts[seg]), *(round(float(v), 1) for v in box)])
        for key, (lo, hi, fill) in ranges.items():
            seg = key[0] if isinstance(key, tuple) else key
            base = int(starts[seg])
            pieces = []
            for span, gid in zip(spans, ids):
                a, b = max(lo, span.first), min(hi, span.last)
                if a > b:
                    continue
                pieces.append({
                    "first": a - base, "last": b - base,
                    "decision": SHOW if span.person else BLUR, "person": span.person,
                    "recognition": None if recognizer is None else {
                        "samples": span.samples, "matches": span.matches,
                        "best_distance": None if span.best_distance is None else round(span.best_distance, 3)},
                    "joined": gid,
                    "fill": [row for row in fill if a - base <= row[0] <= b - base],
                })
            entry = out.setdefault(str(seg), {"tracks": {}, "added": []})
            if isinstance(key, tuple) and not tracks[key].pending:
                entry["tracks"][str(key[1])] = pieces
            else:
                entry["added"].extend(p for p in pieces if p["fill"])
    joined = _extend_ends(edges, starts, cuts, links, out, tracker, joined)
    return {"limelight_join": JOIN_VERSION, "joined": joined, "segments": out}


def _extend_ends(edges: list[SegmentEdges], starts: np.ndarray, cuts: list[bool], links: list, out: dict[str, Any],
                 tracker: TrackerOptions, joined: int) -> int:
    """The hold after a blurred track's last box and the backfill before its first that the whole
    video would have had, where a cut cut them off (and no linked piece continues it there): its end
    box, added in the neighbouring segment as a piece of the same (joined) track. Shown tracks get
    none (a shown box would also unblur whatever stands there). Returns the joined ids now used."""
    continued = {a for a, _ in links}
    continues = {b for _, b in links}
    total = int(starts[-1])

    def segment_of(g: int) -> int:
        return int(np.searchsorted(starts, g, side="right")) - 1

    def in_first_shot(g: int) -> bool:  # a hold ends with the shot it is in
        e = edges[segment_of(g)]
        return len(e.shots) < 2 or g - int(starts[segment_of(g)]) < e.shots[1]

    def in_last_shot(g: int) -> bool:  # a backfill never reaches into the shot before
        return g - int(starts[segment_of(g)]) >= edges[segment_of(g)].shots[-1]

    for i, e in enumerate(edges):
        for t in e.tracks:
            if t.pending:
                continue  # a pending piece is drawn only through a link
            pieces = ((out.get(str(i)) or {}).get("tracks") or {}).get(str(t.id))
            ends = []
            if (i, t.id) not in continued and t.last >= e.frames - tracker.hold:
                g1 = int(starts[i]) + t.last
                ends.append((t.last, t.boxes[-1], [g for g in range(int(starts[i + 1]), min(g1 + tracker.hold, total - 1) + 1)
                                                   if not any(cuts[i + 1:segment_of(g) + 1]) and in_first_shot(g)]))
            if (i, t.id) not in continues and t.first < tracker.backfill:
                g0 = int(starts[i]) + t.first
                ends.append((t.first, t.boxes[0], [g for g in range(max(g0 - tracker.backfill, 0), int(starts[i]))
                                                   if not any(cuts[segment_of(g) + 1:i + 1]) and in_last_shot(g)]))
            for frame, box, frames in ends:
                piece = next((p for p in pieces or [] if p["first"] <= frame <= p["last"]), None)
                if not frames or (piece["decision"] if piece else t.decision) != BLUR:
                    continue
                if piece is None:  # the track becomes one joined track with what it gains (its evidence kept)
                    piece = {"first": t.first, "last": t.last, "decision": BLUR, "person": None, "joined": joined, "fill": []}
                    joined += 1
                    pieces = out.setdefault(str(i), {"tracks": {}, "added": []})["tracks"][str(t.id)] = [piece]
                for seg in sorted({segment_of(g) for g in frames}):
                    rows = [[g - int(starts[seg]), *(round(float(v), 1) for v in box)] for g in frames if segment_of(g) == seg]
                    out.setdefault(str(seg), {"tracks": {}, "added": []})["added"].append(
                        {"first": rows[0][0], "last": rows[-1][0], "decision": BLUR, "person": None, "recognition": piece.get("recognition"),
                         "joined": piece["joined"], "held": True, "fill": rows})
    return joined


def apply_join(plan: Plan, joins: dict[str, Any] | None) -> Plan:
    """`plan` (one segment's, as analyzed) with its joined tracks' decisions and filled boxes
    (`join_segments`' entry for that segment); tracks renumbered in order of their first frame."""
    if not joins:
        return plan
    pieces = joins.get("tracks") or {}
    tracks: list[PlanTrack] = []

    def piece_track(p: dict[str, Any], frames: np.ndarray, boxes: np.ndarray, evidence: dict[str, Any]) -> PlanTrack | None:
        fill = np.asarray(p["fill"], np.float64).reshape(-1, 5)
        frames = np.concatenate([frames, fill[:, 0].astype(np.int64)])
        boxes = np.concatenate([boxes, fill[:, 1:].astype(np.float32)])
        if not len(frames):
            return None
        order = np.argsort(frames, kind="stable")
        decided = {"recognition": p["recognition"]} if "recognition" in p else {}  # else the track's own stays
        return PlanTrack(0, p["decision"], p["person"], frames[order], boxes[order], {**evidence, **decided, "joined": p["joined"]})

    for t in plan.tracks:
        mine = pieces.get(str(t.id))
        if mine is None:
            tracks.append(t)
            continue
        for p in mine:
            sel = (t.frames >= p["first"]) & (t.frames <= p["last"])
            made = piece_track(p, t.frames[sel], t.boxes[sel], t.evidence)
            if made is not None:
                tracks.append(made)
    for p in joins.get("added") or []:
        made = piece_track(p, np.zeros(0, np.int64), np.zeros((0, 4), np.float32), {"filled": True})
        if made is not None:
            tracks.append(made)
    tracks = without_duplicates(tracks)
    tracks.sort(key=lambda t: (t.first, float(t.boxes[0][0])))
    for i, t in enumerate(tracks):
        t.id = i
    return Plan(plan.input, tracks, plan.regions, plan.meta)
