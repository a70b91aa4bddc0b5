"""The audit report: what was found, what was kept and why, frame by frame.

It holds decisions and boxes only — never pixels, crops or embeddings (GDPR: the report itself
must not become personal data beyond what the person responsible needs to check the output).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from limelight.recognizer import Decision


@dataclass
class TrackRecord:
    """One face track; `boxes` rows are [frame, x1, y1, x2, y2, blurred (1) or kept (0)].

    `decision` is the track's final one; `shown_as` counts the frames shown (left unblurred) under
    each consented name, so a track shown for a while and then suspended is accounted for too."""

    track_id: int
    boxes: list[list[float]] = field(default_factory=list)
    decision: Decision | None = None
    shown_as: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = self.decision
        frames = [int(b[0]) for b in self.boxes]
        return {
            "track": self.track_id,
            "first_frame": min(frames) if frames else None,
            "last_frame": max(frames) if frames else None,
            "frames": len(frames),
            "decision": f"kept as {d.name}" if d is not None and d.kept else "blurred",
            "recognition": None if d is None else {
                "samples": d.votes, "matches": d.matches,
                "best_distance": None if d.best_distance is None else round(d.best_distance, 3),
            },
            "frames_blurred": sum(1 for b in self.boxes if b[5]),
            "shown_as": dict(self.shown_as),
            "boxes": self.boxes,
        }


@dataclass
class FileReport:
    """Everything that happened to one input file."""

    input: str
    output: str
    kind: str  # "video" or "image"
    frames: int = 0
    seconds: float = 0.0
    tracks: dict[int, TrackRecord] = field(default_factory=dict)
    detector_input: tuple[int, int] | None = None  # (width, height) the frames were scaled to for detection (a photo: its finest pass)
    rotation: int = 0  # display rotation of a video (counter-clockwise degrees): boxes are in its stored frames' pixels
    pixel_aspect: str = "1:1"  # width of a stored pixel as shown (a video's sample aspect ratio; HDV's is 4:3)
    dropped_streams: list[str] = field(default_factory=list)  # input streams the output leaves out (subtitles, ...)

    def add_box(self, track_id: int, frame: int, box, blurred: bool, shown_as: str | None = None) -> None:
        """One frame of a track; a box left unblurred names the consented person it was shown as."""
        if not blurred and shown_as is None:
            raise ValueError("a face left unblurred must name the consented person it was shown as")
        rec = self.tracks.setdefault(track_id, TrackRecord(track_id))
        rec.boxes.append([frame, *(round(float(v), 1) for v in box[:4]), int(blurred)])
        if not blurred:
            rec.shown_as[shown_as] = rec.shown_as.get(shown_as, 0) + 1

    @property
    def faces(self) -> int:
        return len(self.tracks)

    @property
    def kept(self) -> int:
        return sum(1 for t in self.tracks.values() if t.decision is not None and t.decision.kept)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": self.input, "output": self.output, "kind": self.kind,
            "frames": self.frames, "seconds": round(self.seconds, 3), "fps": round(self.fps, 2),
            "faces": self.faces, "kept": self.kept, "blurred": self.faces - self.kept,
            "detector_input": None if self.detector_input is None else list(self.detector_input),
            "rotation": self.rotation,
            "pixel_aspect": self.pixel_aspect,
            "dropped_streams": list(self.dropped_streams),
            "tracks": [t.as_dict() for t in sorted(self.tracks.values(), key=lambda t: t.track_id)],
        }


def write_report(path: str | os.PathLike[str], settings: dict[str, Any], model: dict[str, Any], files: list[FileReport],
                 failed: list[dict[str, str]] = ()) -> Path:
    """Write the JSON report atomically (temporary name in the same folder, then rename). `failed`
    lists the inputs of a folder that were not processed, as {"input": path, "error": message}."""
    path = Path(path)
    doc = {"limelight_report": 1, "settings": settings, "model": model, "files": [f.as_dict() for f in files],
           "failed": [dict(f) for f in failed]}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
