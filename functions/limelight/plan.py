"""The plan: what `analyze` decided for a video and what `render` redacts, as versioned JSON.

A plan holds boxes and decisions only (never pixels or embeddings), tied to its input by a
fingerprint, so a reviewer can change it between the two passes (`limelight analyze`, edit,
`limelight render`):

    {"limelight_plan": 1,
     "input": {"path", "size", "fingerprint", "frames", "width", "height"},
     "tracks": [{"id": 3, "decision": "blur" | "show", "person": "ann" | null,
                 "boxes": [[frame, x1, y1, x2, y2], ...], ...}],
     "regions": [{"first": 10, "last": 40, "box": [x1, y1, x2, y2]}]}

Boxes are in the stored frames' pixels. `render` honours `decision` exactly: every box of a
"blur" track and every region is redacted, no box of a "show" track is. Other keys of a track
(`recognition`, `best`, `fragments`) are evidence for the reviewer and the report; `render`
ignores them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from limelight.errors import InputError, OutputError
from limelight.formats import scratch_path

__all__ = ["PLAN_VERSION", "Plan", "PlanError", "PlanTrack", "Region", "fingerprint"]

PLAN_VERSION = 1
BLUR, SHOW = "blur", "show"
# The fingerprint reads the size and this many bytes at 16 evenly spaced places (start and end
# included): a few MB of an hour-long file, and any re-encode, trim or other file differs.
_CHUNK = 256 * 1024
_PLACES = 16


class PlanError(InputError):
    """A plan that cannot be used: malformed, of another version, or made for another file."""


def fingerprint(path: str | os.PathLike[str]) -> str:
    """A short hash of a file's size and of samples of its bytes (see `_CHUNK`)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        for k in range(_PLACES):
            f.seek(max(0, (size - _CHUNK) * k // (_PLACES - 1)))
            digest.update(f.read(_CHUNK))
    return "sha256-sampled:" + digest.hexdigest()[:32]


@dataclass
class PlanTrack:
    """One face track: a box per frame it covers and one decision for all of them."""

    id: int
    decision: str  # BLUR or SHOW
    person: str | None
    frames: np.ndarray  # (N,) int, strictly increasing
    boxes: np.ndarray  # (N, 4) float32 x1 y1 x2 y2
    evidence: dict[str, Any] = field(default_factory=dict)  # recognition, best sample, fragments
    # The recognition samples behind the decision (`consent.Sample`, encodings included): in memory
    # only, for joining a segment's tracks with the next one's (`limelight.join`); never written.
    samples: list = field(default_factory=list, repr=False, compare=False)

    @property
    def first(self) -> int:
        return int(self.frames[0])

    @property
    def last(self) -> int:
        return int(self.frames[-1])

    def as_dict(self) -> dict[str, Any]:
        rows = [[int(f), *(round(float(v), 1) for v in b)] for f, b in zip(self.frames, self.boxes)]
        return {"id": self.id, "decision": self.decision, "person": self.person,
                "first_frame": self.first, "last_frame": self.last, **self.evidence, "boxes": rows}


@dataclass(frozen=True)
class Region:
    """A box blurred on every frame from `first` to `last` (inclusive), whatever the tracks say."""

    first: int
    last: int
    box: tuple[float, float, float, float]


@dataclass
class Plan:
    input: dict[str, Any]
    tracks: list[PlanTrack]
    regions: list[Region] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # settings, model, shots: for the reader
    # The first and last frames' 64x36 grey thumbnails (`ShotChangeDetector`): in memory only, for
    # telling whether a segment's cut is also a shot cut (`limelight.join`); never written.
    edges: tuple | None = field(default=None, repr=False, compare=False)
    # The tracks the analysis did not confirm (too weak, too short; ids < 0): in memory only, for the
    # join, which blurs those continuing a confirmed track across a cut; never written or rendered.
    pending: list = field(default_factory=list, repr=False, compare=False)

    def frames(self) -> "Callable[[int], list[tuple[int, np.ndarray, bool, str | None]]]":
        """A lookup for frames asked in increasing order: frame -> [(track id, box, blurred,
        person shown as)], regions as track id -1. It walks the tracks with a cursor each, so it
        holds nothing per frame (an hour of a crowd is millions of boxes)."""
        order = sorted(self.tracks, key=lambda t: t.first)
        regions = sorted(self.regions, key=lambda r: r.first)
        active: list[list] = []  # [track, cursor]
        state = {"next": 0, "region": 0, "last": -1}
        live: list[Region] = []

        def at(index: int) -> list[tuple[int, np.ndarray, bool, str | None]]:
            if index <= state["last"]:
                raise ValueError(f"frames must be asked in increasing order: {index} after {state['last']}")
            state["last"] = index
            while state["next"] < len(order) and order[state["next"]].first <= index:
                active.append([order[state["next"]], 0])
                state["next"] += 1
            while state["region"] < len(regions) and regions[state["region"]].first <= index:
                live.append(regions[state["region"]])
                state["region"] += 1
            out = []
            for entry in active:
                t, c = entry
                if t.frames[c] < index:  # frames a track skips (an edited plan may leave gaps)
                    c = entry[1] = int(np.searchsorted(t.frames, index))
                if c < len(t.frames) and t.frames[c] == index:
                    blur = t.decision == BLUR
                    out.append((t.id, t.boxes[c], blur, None if blur else (t.person or f"track {t.id}")))
            active[:] = [e for e in active if e[0].last > index]
            out.extend((-1, np.asarray(r.box, np.float32), True, None) for r in live if r.last >= index)
            live[:] = [r for r in live if r.last > index]
            return out

        return at

    def as_dict(self) -> dict[str, Any]:
        return {"limelight_plan": PLAN_VERSION, "input": self.input, **self.meta,
                "tracks": [t.as_dict() for t in self.tracks],
                "regions": [{"first": r.first, "last": r.last, "box": list(r.box)} for r in self.regions]}

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the plan as JSON atomically (a temporary name beside it, then renamed)."""
        path = Path(path)
        tmp = scratch_path(path)
        try:
            with tmp.open("x") as f:
                json.dump(self.as_dict(), f, separators=(",", ":"))
            os.replace(tmp, path)
        except BaseException as error:
            tmp.unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise OutputError(f"{path}: cannot write the plan ({error.strerror or error})") from None
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Plan":
        """Read and check a plan; PlanError names the file and the first problem found."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise PlanError(f"{path}: no such plan file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PlanError(f"{path}: not a LimeLight plan (not readable JSON: {error})") from None
        try:
            return cls.from_dict(doc)
        except PlanError as error:
            raise PlanError(f"{path}: {error}") from None

    @classmethod
    def from_dict(cls, doc: Any) -> "Plan":
        if not isinstance(doc, dict) or "limelight_plan" not in doc:
            raise PlanError("not a LimeLight plan (no 'limelight_plan' version)")
        if doc["limelight_plan"] != PLAN_VERSION:
            raise PlanError(f"plan version {doc['limelight_plan']!r} is not supported (this LimeLight reads version {PLAN_VERSION})")
        info = doc.get("input")
        if not isinstance(info, dict) or not all(k in info for k in ("fingerprint", "frames", "width", "height")):
            raise PlanError("the plan's 'input' must give fingerprint, frames, width and height")
        frames, width, height = info["frames"], info["width"], info["height"]
        if not all(isinstance(v, int) and v > 0 for v in (frames, width, height)):
            raise PlanError("the plan's input frames, width and height must be positive whole numbers")
        tracks, seen = [], set()
        if not isinstance(doc.get("tracks"), list):
            raise PlanError("the plan has no 'tracks' list")
        for t in doc["tracks"]:
            track = _track(t, frames, width, height)
            if track.id in seen:
                raise PlanError(f"track {track.id} appears twice")
            seen.add(track.id)
            tracks.append(track)
        regions = [_region(r, frames, width, height) for r in doc.get("regions") or []]
        meta = {k: v for k, v in doc.items() if k not in ("limelight_plan", "input", "tracks", "regions")}
        return cls(dict(info), tracks, regions, meta)

    def check_input(self, path: Path, frames: int | None = None) -> None:
        """Refuse a plan made for another file (or the same file changed since)."""
        if fingerprint(path) != self.input["fingerprint"] or path.stat().st_size != self.input.get("size", path.stat().st_size):
            made = self.input.get("path", "another file")
            raise PlanError(f"{path}: the plan was made for another file ({made}); run limelight analyze on this one")
        if frames is not None and frames != self.input["frames"]:
            raise PlanError(f"{path}: the plan covers {self.input['frames']} frames, the video has {frames}")


def _track(t: Any, frames: int, width: int, height: int) -> PlanTrack:
    if not isinstance(t, dict) or not isinstance(t.get("id"), int) or isinstance(t.get("id"), bool):
        raise PlanError("every track needs a whole-number 'id'")
    tid = t["id"]
    decision = t.get("decision")
    if decision not in (BLUR, SHOW):
        raise PlanError(f"track {tid}: decision must be \"blur\" or \"show\", not {decision!r}")
    person = t.get("person")
    if person is not None and not isinstance(person, str):
        raise PlanError(f"track {tid}: person must be a name or null")
    rows = t.get("boxes")
    if not isinstance(rows, list) or not rows:
        raise PlanError(f"track {tid}: 'boxes' must be a non-empty list of [frame, x1, y1, x2, y2]")
    try:
        arr = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise PlanError(f"track {tid}: every box must be [frame, x1, y1, x2, y2] numbers") from None
    if arr.ndim != 2 or arr.shape[1] != 5 or not np.isfinite(arr).all():
        raise PlanError(f"track {tid}: every box must be [frame, x1, y1, x2, y2] numbers")
    f = arr[:, 0]
    if (f != np.round(f)).any() or f.min() < 0 or f.max() >= frames:
        raise PlanError(f"track {tid}: a box names a frame outside 0..{frames - 1}")
    if (np.diff(f) <= 0).any():
        raise PlanError(f"track {tid}: boxes must be in frame order, one per frame")
    _check_boxes(arr[:, 1:], width, height, f"track {tid}")
    evidence = {k: v for k, v in t.items() if k not in ("id", "decision", "person", "boxes", "first_frame", "last_frame")}
    return PlanTrack(tid, decision, person, f.astype(np.int64), arr[:, 1:].astype(np.float32), evidence)


def _region(r: Any, frames: int, width: int, height: int) -> Region:
    try:
        first, last, box = int(r["first"]), int(r["last"]), [float(v) for v in r["box"]]
    except (TypeError, KeyError, ValueError):
        raise PlanError("every region needs 'first', 'last' and 'box' [x1, y1, x2, y2]") from None
    if len(box) != 4 or not 0 <= first <= last < frames:
        raise PlanError(f"region {r!r}: needs 0 <= first <= last < {frames} and a box of 4 numbers")
    _check_boxes(np.asarray([box]), width, height, f"region {first}..{last}")
    return Region(first, last, tuple(box))


def _check_boxes(b: np.ndarray, width: int, height: int, what: str) -> None:
    """Boxes must have a positive size and overlap the frame (a box may stick out of it a little,
    as a face cut by the frame edge does, but not lie wholly outside)."""
    if not np.isfinite(b).all() or (b[:, 2] <= b[:, 0]).any() or (b[:, 3] <= b[:, 1]).any():
        raise PlanError(f"{what}: a box has no area (x2 <= x1 or y2 <= y1)")
    if (b[:, 2] <= 0).any() or (b[:, 3] <= 0).any() or (b[:, 0] >= width).any() or (b[:, 1] >= height).any():
        raise PlanError(f"{what}: a box lies outside the {width}x{height} frame")
