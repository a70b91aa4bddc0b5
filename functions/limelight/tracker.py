"""Face tracks over a look-ahead buffer: associate detections, then decide each frame's boxes late.

The engine decodes frame t, detects, calls `Tracker.update(t, dets)` and only redacts frame
t - `options.lookahead` (or every remaining frame after `finish()`). By then the tracker knows the
future it needs, so a frame's boxes cover more than its own detections:

- gap: a track missed for at most `max_gap` frames between two detections is interpolated linearly;
- hold: after a track's last detection its last box stays `hold` frames (the detector lost the face,
  the face is probably still there);
- backfill: before a track's first detection its first box covers `backfill` frames (faces entering
  or turning towards the camera are detected late), never before the first frame seen;
- smooth: detected and interpolated boxes are averaged over a centred window of radius `smooth`,
  shrunk symmetrically near a track's ends so its first and last boxes stay the detections.

Two score levels (hysteresis, as in ByteTrack): the detector runs at a low threshold, and any
detection, weak or strong, extends a track, so a face that turns or darkens stays covered; but a track
is shown (its boxes returned) only once confirmed: one detection of at least `confirm_score`, or
`confirm_frames` detections. A weak, one-frame false alarm is never drawn; a weak face that persists is,
back to its first frame when its confirmation comes within the look-ahead of that frame.

Association is greedy (best IoU first, then closest centres among boxes of similar size), against
each track's last box or that box moved on at the track's velocity, whichever fits better. It errs on
the side of new tracks: a new track is recognised afresh and blurred unless it is recognised, whereas
a wrong merge could carry one person's consent over to a stranger.

Memory: per-frame state lives only between the released frame and the newest one; what grows with
the video is one small `TrackSummary` per track.

Why not a tracking library: the maintained ones (supervision's ByteTrack, norfair) are online
trackers: they return each frame's boxes as that frame arrives, with no way to revise the past,
while redaction needs the opposite: boxes decided late over a look-ahead buffer (backfill before
a face's first detection, gaps filled from both ends), confirmation that can reach back to a
track's first frame, and a merge policy tuned so that consent never passes between people. Those
are most of this module; the association itself is a few dozen lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from limelight.anchors import iou_matrix

__all__ = ["Assignment", "FrameNotFinalError", "Tracker", "TrackerError", "TrackerOptions", "TrackSummary"]


class TrackerError(ValueError):
    """The tracker was misused: invalid options, frames out of order, malformed detections."""


class FrameNotFinalError(TrackerError):
    """`boxes_at` asked for a frame whose boxes can still change, or one already released."""


@dataclass(frozen=True)
class TrackerOptions:
    """How detections become tracks and per-frame boxes (all counts are in frames)."""

    iou_threshold: float = 0.3  # minimum IoU of a detection with a track's last (or predicted) box
    max_shift: float = 0.5  # second pass (fast motion, zoom): centre distance <= this x box side; 0 = off
    max_gap: int = 8
    hold: int = 4
    backfill: int = 3
    smooth: int = 2
    confirm_score: float = 0.3  # a track with one detection scoring this much is shown...
    confirm_frames: int = 3  # ...and so is one detected in this many frames (1 = every track is shown)

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_threshold <= 1.0:
            raise TrackerError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if not 0.0 <= self.confirm_score <= 1.0:
            raise TrackerError(f"confirm_score must be in [0, 1], got {self.confirm_score}")
        if not 1 <= self.confirm_frames <= self.lookahead + 1:
            raise TrackerError(f"confirm_frames must be in [1, lookahead + 1 = {self.lookahead + 1}], got {self.confirm_frames}")
        if self.max_shift < 0:
            raise TrackerError(f"max_shift must be >= 0, got {self.max_shift}")
        for name in ("max_gap", "hold", "backfill", "smooth"):
            if getattr(self, name) < 0:
                raise TrackerError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def lookahead(self) -> int:
        """Frames the caller must buffer: frame f is final once frame f + lookahead was updated.

        A gap frame g is resolved when the track's next detection can no longer arrive, at the latest
        g + max_gap; the smoothed box of f needs raw boxes up to f + smooth; a backfilled frame f is
        known once frame f + backfill was seen. Derived rather than set, so it cannot be too small.
        """
        return max(self.max_gap + self.smooth, self.backfill)


class Assignment(NamedTuple):
    """Which track a detection of the updated frame went to; `is_new` = the track starts here."""

    track_id: int
    detection: np.ndarray
    is_new: bool


@dataclass(frozen=True)
class TrackSummary:
    """One track for the audit report: detected from `first_frame` to `last_frame` (inclusive)."""

    track_id: int
    first_frame: int
    last_frame: int
    detected_frames: int


@dataclass(eq=False)
class _Track:
    track_id: int
    first: int
    last: int
    first_box: np.ndarray
    last_box: np.ndarray
    detected: int = 1
    peak: float = 1.0  # best detection score
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))  # box change per frame
    closed: bool = False  # ended by a cut: never matched again, still held/covered like any ended track
    shot_start: int = 0  # first frame of the track's shot: backfill never crosses a cut
    # Raw (unsmoothed) boxes of detected and interpolated frames not yet released: the only per-frame state.
    boxes: dict[int, np.ndarray] = field(default_factory=dict)


class Tracker:
    """Greedy IoU tracker over a look-ahead buffer (see the module docstring for the frame rules)."""

    def __init__(self, options: TrackerOptions = TrackerOptions()) -> None:
        self.options = options
        self._tracks: list[_Track] = []  # every track ever, by id (summaries for the report)
        self._active: list[_Track] = []  # tracks that may still match or still cover unreleased frames
        self._start: int | None = None  # first frame index seen
        self._shot_start = 0  # first frame of the current shot: backfill stops there
        self._last: int | None = None  # last frame index updated
        self._released = -1  # frames <= this were released
        self._finished = False

    @property
    def tracks(self) -> list[TrackSummary]:
        """Summaries of all tracks so far, by id (kept after `release`)."""
        return [TrackSummary(t.track_id, t.first, t.last, t.detected) for t in self._tracks]

    def update(self, frame_index: int, detections: np.ndarray, new_shot: bool = False) -> list[Assignment]:
        """Associate frame `frame_index`'s detections (N, 5) to tracks; one `Assignment` per row, in order.

        Frame indices start anywhere >= 0 and then increase by exactly 1. `new_shot`: the frame
        starts a new shot (a cut), so no detection joins an earlier track — a box at the same place
        after a cut is another person, and joining them would hand one person's consent to another.
        """
        if self._finished:
            raise TrackerError("update() after finish(): start a new Tracker for the next video")
        if self._last is None and frame_index < 0:
            raise TrackerError(f"frame indices must be >= 0, got {frame_index}")
        if self._last is not None and frame_index != self._last + 1:
            raise TrackerError(f"frame {frame_index} updated, expected frame {self._last + 1}")
        dets = np.asarray(detections, dtype=np.float32)
        if dets.size == 0:
            dets = dets.reshape(0, 5)
        if dets.ndim != 2 or dets.shape[1] < 4 or not np.isfinite(dets[:, :4]).all():
            raise TrackerError(f"detections must be a finite (N, 5) array, got shape {dets.shape}")
        if self._start is None:
            self._start = self._shot_start = frame_index
        self._last = frame_index
        # A track last detected at `last` is still matchable here when it missed <= max_gap frames.
        if new_shot:
            self._shot_start = frame_index
            for t in self._active:
                t.closed = True
        live = [t for t in self._active if not t.closed and frame_index - t.last - 1 <= self.options.max_gap]
        pairs = self._match(live, dets[:, :4], frame_index)
        out: list[Assignment] = []
        for d, row in enumerate(dets):
            box = row[:4].copy()
            score = float(row[4]) if len(row) > 4 else 1.0
            if d in pairs:
                track = live[pairs[d]]
                gap = frame_index - track.last
                for k in range(1, gap):  # linear fill of the missed frames
                    track.boxes[track.last + k] = track.last_box + (box - track.last_box) * (k / gap)
                # Smoothed so that one jittery detection does not throw the next prediction off.
                step = (box - track.last_box) / gap
                track.velocity = step if track.detected == 1 else (track.velocity + step) / 2
                track.last, track.last_box = frame_index, box
                track.detected += 1
                track.peak = max(track.peak, score)
                is_new = False
            else:
                track = _Track(len(self._tracks), frame_index, frame_index, box, box, peak=score, shot_start=self._shot_start)
                self._tracks.append(track)
                self._active.append(track)
                is_new = True
            track.boxes[frame_index] = box
            out.append(Assignment(track.track_id, row, is_new))
        return out

    def _match(self, tracks: list[_Track], boxes: np.ndarray, frame_index: int) -> dict[int, int]:
        """Greedy matching, best IoU first, then closest centres: {detection index: track index}.

        Each track is compared by its last box and by that box moved on at its velocity, whichever
        fits better: motion across a gap is followed, and a noisy velocity never hurts a still face.
        """
        if not tracks or not len(boxes):
            return {}
        last = np.stack([t.last_box for t in tracks])
        moved = last + np.stack([t.velocity * (frame_index - t.last) for t in tracks])
        iou, shift, close = self._affinity(boxes, np.concatenate([last, moved]))
        m = len(tracks)
        iou = np.maximum(iou[:, :m], iou[:, m:])
        shift = np.minimum(shift[:, :m], shift[:, m:])
        close = close[:, :m] | close[:, m:]
        pairs: dict[int, int] = {}
        for cost, ok in ((-iou, iou >= self.options.iou_threshold), (shift, close)):
            for flat in np.argsort(cost, axis=None, kind="stable"):
                d, t = divmod(int(flat), len(tracks))
                if ok[d, t] and d not in pairs and t not in pairs.values():
                    pairs[d] = t
        return pairs

    def _affinity(self, boxes: np.ndarray, prev: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """IoU, centre shift / box side, and whether the shift pass may pair them: three (N, M) arrays."""
        side_d = ((boxes[:, 2:4] - boxes[:, :2]).sum(axis=1) / 2)[:, None]
        side_t = ((prev[:, 2:4] - prev[:, :2]).sum(axis=1) / 2)[None, :]
        big = np.maximum(np.maximum(side_d, side_t), 1e-6)
        centres = (boxes[:, None, :2] + boxes[:, None, 2:4] - prev[None, :, :2] - prev[None, :, 2:4]) / 2
        shift = np.linalg.norm(centres, axis=2) / big
        # Only boxes of similar size (within 2x) pair by distance: a small face is not a big one's zoom.
        close = (np.minimum(side_d, side_t) >= big / 2) & (shift <= self.options.max_shift)
        close &= self.options.max_shift > 0
        return iou_matrix(boxes, prev), shift, close

    def is_final(self, frame_index: int) -> bool:
        """True when the boxes of `frame_index` can no longer move or go (see `TrackerOptions.lookahead`).

        A final frame can still gain boxes until it is released: a weak track confirmed later (its
        `confirm_frames`-th detection past the look-ahead) is shown back to its start, so a caller
        that holds frames longer than the look-ahead only ever blurs more."""
        if self._last is None:
            return False
        return frame_index <= self._last - (0 if self._finished else self.options.lookahead)

    def boxes_at(self, frame_index: int) -> list[tuple[int, np.ndarray]]:
        """Final boxes to redact in `frame_index`: (track_id, x1 y1 x2 y2 float32), by track id.

        Raises `FrameNotFinalError` for a frame that is not final yet, was released or was never seen.
        """
        if not self.is_final(frame_index) or frame_index <= self._released or frame_index < self._start:
            raise FrameNotFinalError(
                f"frame {frame_index} is not available: last updated {self._last}, lookahead "
                f"{self.options.lookahead}, finished {self._finished}, released up to {self._released}"
            )
        opt = self.options
        out = []
        for t in self._active:
            if not (t.peak >= opt.confirm_score or t.detected >= opt.confirm_frames):
                continue  # not confirmed (yet): a weak detection seen too rarely to be trusted
            if frame_index in t.boxes:
                r = min(opt.smooth, frame_index - t.first, t.last - frame_index)
                box = np.mean([t.boxes[frame_index + k] for k in range(-r, r + 1)], axis=0)
            elif max(t.first - opt.backfill, t.shot_start) <= frame_index < t.first:
                box = t.first_box
            elif t.last < frame_index <= t.last + opt.hold:
                box = t.last_box  # final frame past `last` means the track cannot resume before it
            else:
                continue
            out.append((t.track_id, box.astype(np.float32)))
        return out

    def finish(self) -> None:
        """End of video: every updated frame becomes final; tracks end at their last detection."""
        self._finished = True

    def release(self, frame_index: int) -> None:
        """Forget per-frame state of final frames <= `frame_index` (emitted by the caller).

        Keeps the `smooth` frames the next frames' windows still read, and every track summary.
        """
        if frame_index <= self._released:
            return
        if not self.is_final(frame_index):
            raise FrameNotFinalError(f"cannot release frame {frame_index}: it is not final yet")
        self._released = frame_index
        keep_from = frame_index - self.options.smooth + 1
        for t in self._active:
            for f in [f for f in t.boxes if f < keep_from]:
                del t.boxes[f]
        # A track is dropped once it cannot resume (a final frame is past its last detection) and its
        # hold ends at or before the released frame; its summary stays in `_tracks`.
        done = [t for t in self._active if t.last < frame_index and t.last + self.options.hold <= frame_index]
        for t in done:
            t.boxes.clear()
        self._active = [t for t in self._active if t not in done]
