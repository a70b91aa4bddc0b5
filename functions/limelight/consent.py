"""Whole-track consent: one decision per stretch of a track, from all of its recognition samples.

The analyze pass takes a few good samples along each track (`analyze.SamplingOptions`) and hands
them here once the whole track is known. A track is cut where its samples show another person
(a tracker switch, or two fragments wrongly linked); each stretch is then shown, under one
consented person, only when at least `min_matches` of its samples confidently match that person
(`Recognizer.match`) and none of its samples is clearly someone else. Samples that match nobody
but stay close to the person (a turned or motion-blurred face: near the gallery photo, or near the
track's own matching samples) neither count for nor against; a sample far from both is another
face, and starts a new stretch. Privacy first: a stretch without enough matches is blurred whole,
and the frames between the last sample of one person and the first of the next are blurred.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from limelight.recognizer import Recognizer

__all__ = ["DecisionOptions", "Sample", "Span", "decide"]


@dataclass(frozen=True)
class DecisionOptions:
    """min_matches: confident matches a stretch needs to be shown (one lucky sample never shows a
    video face). gallery_slack: a sample within tolerance + this of the person's photos is still
    theirs (turned, blurred), not evidence of someone else. same_face: a sample within this distance
    of one of the stretch's own matching samples is the same face (video-to-video distances of one
    person in one shot are mostly 0.2-0.45; different people's 0.6 and more)."""

    min_matches: int = 2
    gallery_slack: float = 0.05
    same_face: float = 0.5

    def __post_init__(self) -> None:
        if self.min_matches < 1:
            raise ValueError(f"min_matches must be >= 1, got {self.min_matches}")
        if self.gallery_slack < 0 or self.same_face <= 0:
            raise ValueError("gallery_slack must be >= 0 and same_face > 0")


@dataclass(frozen=True, eq=False)
class Sample:
    """One recognition sample of a track: its frame, its 128-d encoding (kept in memory only,
    never written) and `Recognizer.match`'s verdict."""

    frame: int
    encoding: np.ndarray
    name: str | None
    distance: float


@dataclass(frozen=True)
class Span:
    """Frames `first`..`last` of a track with one decision: shown as `person`, or blurred (None).
    samples / matches / best_distance: the evidence (best_distance of the matches, or of all
    samples when none matched)."""

    first: int
    last: int
    person: str | None
    samples: int = 0
    matches: int = 0
    best_distance: float | None = None


class _Stretch:
    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.person: str | None = None

    def matches(self, recognizer: Recognizer) -> list[Sample]:
        return [s for s in self.samples if _same(s.name, self.person, recognizer)]

    def shown_as(self, recognizer: Recognizer) -> str | None:
        """The name most of the matches gave (one face may have several names in the gallery)."""
        names = Counter(s.name for s in self.matches(recognizer))
        return names.most_common(1)[0][0] if names else None


def _same(name: str | None, person: str | None, recognizer: Recognizer) -> bool:
    return name is not None and person is not None and recognizer.same_person(name, person)


def _other(s: Sample, person: str, anchors: list[np.ndarray], recognizer: Recognizer, options: DecisionOptions) -> bool:
    """Whether sample `s` is clearly not `person`: another consented person's match, or far from
    both the person's photos and the stretch's own matching samples."""
    if _same(s.name, person, recognizer):
        return False
    if s.name is not None:
        return True
    if recognizer.distance_to(s.encoding, person) <= recognizer.options.tolerance + options.gallery_slack:
        return False
    return not any(float(np.linalg.norm(s.encoding - a)) <= options.same_face for a in anchors)


def decide(samples: list[Sample], first: int, last: int, recognizer: Recognizer | None,
           options: DecisionOptions = DecisionOptions()) -> list[Span]:
    """Spans covering frames `first`..`last` of one track, in order, from its samples."""
    samples = sorted(samples, key=lambda s: s.frame)
    if recognizer is None or not samples:
        return [Span(first, last, None, len(samples), 0, min((s.distance for s in samples), default=None))]
    stretches = [_Stretch()]
    for s in samples:
        cur = stretches[-1]
        if cur.person is None:
            if s.name is not None:
                # The samples before this first match that are clearly someone else (a stranger the
                # tracker followed before it switched to this person) stay a stretch of their own.
                anchors = [s.encoding]
                cut = max((i for i, p in enumerate(cur.samples) if _other(p, s.name, anchors, recognizer, options)), default=-1)
                if cut >= 0:
                    head, cur.samples = cur.samples[:cut + 1], cur.samples[cut + 1:]
                    before = _Stretch()
                    before.samples = head
                    stretches.insert(len(stretches) - 1, before)
                cur.person = s.name
            cur.samples.append(s)
            continue
        anchors = [m.encoding for m in cur.matches(recognizer)]
        if _other(s, cur.person, anchors, recognizer, options):
            nxt = _Stretch()
            nxt.person = s.name
            nxt.samples.append(s)
            stretches.append(nxt)
        else:
            cur.samples.append(s)
    return _spans(stretches, first, last, recognizer, options)


def _spans(stretches: list[_Stretch], first: int, last: int, recognizer: Recognizer, options: DecisionOptions) -> list[Span]:
    decided = []
    for st in stretches:
        matches = st.matches(recognizer)
        shown = st.person is not None and len(matches) >= options.min_matches
        pool = matches or st.samples
        best = min((s.distance for s in pool), default=None)
        decided.append((st, st.shown_as(recognizer) if shown else None, len(st.samples), len(matches), best))
    spans: list[Span] = []
    for i, (st, person, n, m, best) in enumerate(decided):
        if person is not None:
            lo = first if i == 0 else st.samples[0].frame
            hi = last if i == len(decided) - 1 else st.samples[-1].frame
        else:
            lo = first if i == 0 else decided[i - 1][0].samples[-1].frame + 1
            hi = last if i == len(decided) - 1 else decided[i + 1][0].samples[0].frame - 1
        if spans:
            lo = max(lo, spans[-1].last + 1)
        if spans and lo > spans[-1].last + 1:  # between two people: nobody's frames, blurred
            spans.append(Span(spans[-1].last + 1, lo - 1, None))
        if spans and spans[-1].person is None and person is None:  # one blurred stretch
            prev = spans.pop()
            bests = [b for b in (prev.best_distance, best) if b is not None]
            spans.append(Span(prev.first, hi, None, prev.samples + n, prev.matches + m, min(bests) if bests else None))
        elif lo <= hi:
            spans.append(Span(lo, hi, person, n, m, best))
    return spans
