"""The audit report: what was found, what was kept and why, frame by frame.

It holds decisions and boxes only — never pixels, crops or embeddings (GDPR: the report itself
must not become personal data beyond what the person responsible needs to check the output).
"""

from __future__ import annotations

import json
import os
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from limelight.errors import OutputError
from limelight.formats import CONTAINER_SUFFIXES, IMAGE_SUFFIXES, scratch_path
from limelight.recognizer import Decision

if TYPE_CHECKING:
    from limelight.video import DecodeDamage


@dataclass
class TrackRecord:
    """One face track: its boxes, frame by frame (`boxes`), its final `decision`, and `shown_as`, the
    frames shown (left unblurred) under each consented name, so a track shown for a while and then
    suspended is accounted for too.

    The boxes are held in typed arrays (21 bytes a box instead of ~250 as Python lists): an hour
    of a crowd, 20 faces a frame at 30 fps, is 2 million boxes."""

    track_id: int
    decision: Decision | None = None
    shown_as: dict[str, int] = field(default_factory=dict)
    _frames: array = field(default_factory=lambda: array("I"), repr=False)
    _coords: array = field(default_factory=lambda: array("f"), repr=False)  # x1 y1 x2 y2 per box
    _blurred: array = field(default_factory=lambda: array("B"), repr=False)
    evidence: dict[str, Any] = field(default_factory=dict)  # from the plan: best sample, fragments

    def add(self, frame: int, box, blurred: bool) -> None:
        self._frames.append(frame)
        self._coords.extend(float(v) for v in box[:4])
        self._blurred.append(int(blurred))

    @property
    def boxes(self) -> list[list[float]]:
        """Rows [frame, x1, y1, x2, y2, blurred (1) or kept (0)], coordinates to 0.1 px."""
        c = self._coords
        return [[f, round(c[4 * i], 1), round(c[4 * i + 1], 1), round(c[4 * i + 2], 1), round(c[4 * i + 3], 1), b]
                for i, (f, b) in enumerate(zip(self._frames, self._blurred))]

    def as_dict(self) -> dict[str, Any]:
        d = self.decision
        frames = self._frames
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
            **self.evidence,
            "frames_blurred": sum(self._blurred),
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
    damage: DecodeDamage | None = None  # what a damaged video lost: undecodable frames, malformed audio packets
    analysis: dict[str, Any] | None = None  # the plan's analysis figures: tracks before and after linking, samples, shots
    regions: int = 0  # regions the plan blurs whatever the tracks say (added by a reviewer)
    region_boxes: int = 0  # frames x regions blurred
    render: dict[str, Any] | None = None  # {"mode": "smart" | "full", "reason", GOPs / frames / seconds copied and re-encoded}

    def add_box(self, track_id: int, frame: int, box, blurred: bool, shown_as: str | None = None) -> None:
        """One frame of a track; a box left unblurred names the consented person it was shown as."""
        if not blurred and shown_as is None:
            raise ValueError("a face left unblurred must name the consented person it was shown as")
        rec = self.tracks.setdefault(track_id, TrackRecord(track_id))
        rec.add(frame, box, blurred)
        if not blurred:
            rec.shown_as[shown_as] = rec.shown_as.get(shown_as, 0) + 1

    @property
    def faces(self) -> int:
        return len(self.tracks)

    @property
    def kept(self) -> int:
        return sum(1 for t in self.tracks.values() if t.decision is not None and t.decision.kept)

    @property
    def shown(self) -> dict[str, int]:
        """Consented person -> frames in which their face was left visible (all their tracks), by name."""
        return dict(sorted(sum((Counter(track.shown_as) for track in self.tracks.values()), Counter()).items()))

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """Everything but the tracks."""
        return {
            "input": self.input, "output": self.output, "kind": self.kind,
            "frames": self.frames, "seconds": round(self.seconds, 3), "fps": round(self.fps, 2),
            "faces": self.faces, "kept": self.kept, "blurred": self.faces - self.kept, "shown": self.shown,
            "detector_input": None if self.detector_input is None else list(self.detector_input),
            "rotation": self.rotation,
            "pixel_aspect": self.pixel_aspect,
            "dropped_streams": list(self.dropped_streams),
            "damage": self.damage.as_dict() if self.damage else None,
            "analysis": self.analysis,
            "regions": self.regions,
            "render": self.render,
        }

    def ordered_tracks(self) -> list[TrackRecord]:
        return sorted(self.tracks.values(), key=lambda t: t.track_id)

    def as_dict(self) -> dict[str, Any]:
        return {**self.summary(), "tracks": [t.as_dict() for t in self.ordered_tracks()]}

    def write_json(self, out: IO[str]) -> None:
        """`json.dump(self.as_dict(), out)` without holding every track's rows at once: a long
        video's boxes, compact while held, would take ~10 times the memory as JSON-ready lists."""
        head = json.dumps(self.summary(), separators=_COMPACT)
        out.write(head[:-1] + ',"tracks":[')
        for i, track in enumerate(self.ordered_tracks()):
            if i:
                out.write(",")
            json.dump(track.as_dict(), out, separators=_COMPACT)
        out.write("]}")


_COMPACT = (",", ":")


def write_report(path: str | os.PathLike[str], settings: dict[str, Any], model: dict[str, Any], files: list[FileReport],
                 failed: list[dict[str, str]] = ()) -> Path:
    """Write the JSON report atomically (temporary name in the same folder, then rename). `failed`
    lists the inputs of a folder that were not processed, as {"input": path, "error": message}.
    OutputError when it cannot be written (full disk, read-only or missing folder); no partial
    report is left."""
    path = Path(path)
    head = json.dumps({"limelight_report": 1, "settings": settings, "model": model}, separators=_COMPACT)
    tmp = _report_scratch(path)
    try:
        with open(tmp, "w") as f:
            f.write(head[:-1] + ',"files":[')
            for i, file in enumerate(files):
                if i:
                    f.write(",")
                file.write_json(f)
            f.write('],"failed":' + json.dumps([dict(x) for x in failed], separators=_COMPACT) + "}")
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write the report ({error.strerror or error})") from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def check_report_path(path: str | os.PathLike[str]) -> None:
    """Fail now, not after hours of video, when a report cannot be written at `path`: a folder
    that is missing or not writable, `path` naming a folder, or a video / photo name (the input's
    or the output's, mistyped for a .json). (A disk that fills up meanwhile still fails at the
    end, with `write_report`'s OutputError.)"""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give the report a file name (e.g. {path / 'report.json'})")
    if path.suffix.lower() in CONTAINER_SUFFIXES | IMAGE_SUFFIXES | {".gif"}:
        # `--report clip.mp4` for `--report clip.json` would have replaced the input (or the output) with JSON.
        raise OutputError(f"{path}: a report is JSON, not a {path.suffix[1:]} file; give it a name such as {path.with_suffix('.json')}")
    if not path.parent.is_dir():
        raise OutputError(f"{path}: report folder does not exist")
    _report_scratch(path).unlink()


def _report_scratch(path: Path) -> Path:
    """A new empty file beside `path` for the report to be written into, then renamed."""
    tmp = scratch_path(path)
    try:
        tmp.open("x").close()
    except OSError as error:
        raise OutputError(f"{path}: cannot write a report there ({error.strerror or error})") from error
    return tmp
