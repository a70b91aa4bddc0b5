"""The anonymization engine: analyze -> plan -> render.

`Anonymizer.analyze` decodes a video (no encoding), detects and tracks faces over the whole of it
and decides each track as a whole from its best recognition samples: the result is a `Plan`
(boxes and decisions only). `Anonymizer.render` decodes it again and encodes it with the plan's
"blur" boxes redacted, audio copied. `Anonymizer.video` runs both; the CLI's `analyze` / `render`
run them apart so that a person can review and edit the plan in between. No frame is held
between the passes, so memory does not grow with the video's length. A face is left unblurred
only when its track's samples confidently say it is a consented person; everything else,
including faces too small to recognise, is blurred.
"""

from __future__ import annotations

import io
import queue
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator

import av
import cv2
import numpy as np
from PIL import Image, ImageOps, ImageSequence

from limelight.analyze import Analysis, SamplingOptions, link, plan_tracks
from limelight.consent import DecisionOptions
from limelight.detector import Detector
from limelight.encoder_worker import FaceEncoder, usable_cpus
from limelight.errors import InputError, OutputError
from limelight.native import captured_stderr
from limelight.plan import BLUR, Plan, PlanError, PlanTrack, fingerprint
from limelight.recognizer import Decision, Recognizer, encode_face
from limelight.redact import RedactOptions, mark, redact, redact_planes
from limelight.report import FileReport
from limelight.smart import SmartRenderError, smart_refusal, smart_render
from limelight.tracker import TrackerOptions
from limelight.formats import CONTAINER_SUFFIXES, IMAGE_SUFFIXES, KEEP_CONTAINER, NAME_MAX, photo_output_suffix, publish_bytes
from limelight.video import (
    DecodeDamage,
    EncodeOptions,
    Frame,
    VideoInfo,
    coded_boxes,
    decode,
    output_container,
    probe,
    quarter_turns,
    transcode,
)

# An animated GIF is a video too: written as MP4, as the web shows GIFs.
VIDEO_SUFFIXES = CONTAINER_SUFFIXES | {".gif"}
MAX_DETECT_WORKERS = 4
_NO_FACES = np.zeros((0, 5), np.float32)


class ShotChangeDetector:
    """Flags cuts: the mean absolute difference of consecutive 64x36 grey thumbnails jumps.

    On the shared clips cuts score 27-30 (0-255 scale) and motion inside a shot stays under 14.
    """

    def __init__(self, threshold: float = 20.0):
        self.threshold = threshold
        self._prev: np.ndarray | None = None
        self._levels = 255
        self._first: tuple[np.ndarray, int] | None = None  # the first frame's thumbnail and its levels

    def __call__(self, frame: Frame) -> bool:
        # An interlaced frame is judged by its top field: a cut between its two fields would
        # otherwise show as two half-size changes, neither a cut (and a track would run on into the
        # next shot, carrying a consented person's samples to whoever stands there).
        lines = slice(0, None, 2) if frame.interlaced else slice(None)
        if frame.yuv is not None:  # the Y plane is the grey image; limited range spans 219 levels
            thumb = cv2.resize(frame.planes()[0][lines], (64, 36), interpolation=cv2.INTER_AREA)
            levels = 255 if frame.full_range else 219
        else:
            thumb = cv2.cvtColor(cv2.resize(frame.rgb[lines], (64, 36), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
            levels = 255
        thumb = thumb.astype(np.int16)
        cut = self._prev is not None and float(np.abs(thumb - self._prev).mean()) * 255 / levels > self.threshold
        self._prev, self._levels = thumb, levels
        if self._first is None:
            self._first = (thumb, levels)
        return cut

    # The first and last frames' thumbnails on the 0-255 scale (None before a frame): the serverless
    # workflow's join compares one segment's last with the next one's first (`limelight.join`).
    @property
    def first(self) -> np.ndarray | None:
        return None if self._first is None else self._first[0].astype(np.float32) * (255 / self._first[1])

    @property
    def last(self) -> np.ndarray | None:
        return None if self._prev is None else self._prev.astype(np.float32) * (255 / self._levels)

    def is_cut(self, before: np.ndarray, after: np.ndarray) -> bool:
        """Whether two such thumbnails (one segment's `last`, the next one's `first`) are a cut apart."""
        return float(np.abs(after - before).mean()) > self.threshold


@dataclass(frozen=True)
class AnonymizeOptions:
    redact: RedactOptions = field(default_factory=RedactOptions)
    tracker: TrackerOptions = field(default_factory=TrackerOptions)
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    recognition: SamplingOptions = field(default_factory=SamplingOptions)
    decisions: DecisionOptions = field(default_factory=DecisionOptions)
    mark_faces: bool = False
    # Video frames detected at once, each by its own single-threaded interpreter on its own thread;
    # None: one per usable CPU (at most MAX_DETECT_WORKERS). Detections do not depend on it: every
    # interpreter runs the same integer model on the same input.
    detect_workers: int | None = None
    # Face encodings in a worker process beside the analysis (`encoder_worker`); False: in-process.
    worker_process: bool = True
    # Re-encode every frame (the render before smart render), not only the GOPs with a face to redact.
    full_render: bool = False
    # While no face has been detected for tracker.max_gap + 1 frames, detect every other frame (a
    # left-out frame is detected after all when a frame beside it has a face): footage with few
    # faces is analyzed up to twice as fast; only a face seen on one frame alone can be missed.
    idle_skip: bool = True
    # A segment of the serverless workflow whose video is smart-rendered: smart render or an error
    # (SmartRenderError), never a full render, and x264's parameter sets always listed, so that
    # every segment's stream has the same sample entry and they join.
    smart_segment: bool = False

    def __post_init__(self) -> None:
        if self.detect_workers is not None and (isinstance(self.detect_workers, bool) or not isinstance(self.detect_workers, int)
                                                or self.detect_workers < 1):
            raise ValueError(f"detect_workers must be a whole number >= 1 or None, got {self.detect_workers!r}")

    def settings(self) -> dict:
        """JSON-friendly settings for the report."""
        return {
            "redact": {k: str(v) for k, v in asdict(self.redact).items()},
            "tracker": asdict(self.tracker),
            "encode": asdict(self.encode),
            "recognition": asdict(self.recognition),
            "decisions": asdict(self.decisions),
            "mark_faces": self.mark_faces,
            "detect_workers": self.detect_workers,
            "full_render": self.full_render,
            "idle_skip": self.idle_skip,
            "smart_segment": self.smart_segment,
        }


def default_output(src: Path) -> Path:
    """`name_anonymized.ext` beside the input (`name` shortened if the whole would pass NAME_MAX
    bytes); a video's container is `video.output_container`'s."""
    suffix = src.suffix.lower()
    if is_photo(src):
        suffix = photo_output_suffix(suffix)
    elif suffix in VIDEO_SUFFIXES:
        suffix = output_container(src)
    elif animation_frames(src) > 1:
        suffix = ".mp4"  # an animated WebP / PNG is a video
    tail = f"_anonymized{suffix if suffix in IMAGE_SUFFIXES | VIDEO_SUFFIXES else src.suffix}"
    stem = src.stem
    while len((stem + tail).encode()) > NAME_MAX:  # a long title: shortened to fit the file system
        stem = stem[:-1]
    return src.with_name(stem + tail)


def _one_field(frame: Frame, lines: int) -> bool:
    """Whether the detector sees only the top field of `frame`, scaled to `lines` lines: for an
    interlaced frame whose field alone has that many (1080i at 960, 720 lines at 640). Both fields
    of a moving face, combed and doubled, hide it (street_crowd woven into fields at 640: 58% of the
    progressive run's blurred faces found; 76% from one field); a field of fewer lines would lose
    detail instead (a 360-line clip's 180-line field cost its consented performer his match)."""
    return frame.interlaced and frame.height // 2 >= lines



class Anonymizer:
    """Holds the expensive objects (detector, recognizer) and anonymizes files with them."""

    def __init__(self, detector: Detector, recognizer: Recognizer | None = None, options: AnonymizeOptions = AnonymizeOptions()):
        self.detector, self.recognizer, self.options = detector, recognizer, options
        self._replicas: list[Detector] | None = None

    def _detectors(self) -> list[Detector]:
        """The detectors of the video detection threads (see `AnonymizeOptions.detect_workers`):
        replicas of `detector` on one interpreter thread each, or `detector` alone on one CPU or
        when its runner cannot be replicated. Made once per engine and reused."""
        workers = self.options.detect_workers or max(1, min(MAX_DETECT_WORKERS, int(usable_cpus())))
        if workers <= 1:
            return [self.detector]
        if self._replicas is None or len(self._replicas) != workers:
            replicate = getattr(self.detector, "replica", None)  # any callable detector works, alone
            replicas = [replicate(1) if replicate else None for _ in range(workers)]
            self._replicas = [self.detector] if None in replicas else replicas
        return self._replicas

    def _redact(self, frame: Frame, entries: Iterable[tuple[int, np.ndarray, bool, str | None]], report: FileReport) -> None:
        """Redact the "blur" boxes of one frame (on the decoded planes when it is YUV: no colour
        conversion of the frame) and record every box in the report; regions (id < 0) are counted."""
        entries = list(entries)
        self._record(frame.index, entries, report)
        self._hide(frame, entries)

    @staticmethod
    def _record(index: int, entries: list[tuple[int, np.ndarray, bool, str | None]], report: FileReport) -> None:
        for tid, box, blurred, person in entries:
            if tid >= 0:
                report.add_box(tid, index, box, blurred=blurred, shown_as=None if blurred else person)
            else:
                report.region_boxes += 1

    def _hide(self, frame: Frame, entries: list[tuple[int, np.ndarray, bool, str | None]]) -> None:
        blur, marks, kept_flags, labels = [], [], [], []
        for tid, box, blurred, person in entries:
            if blurred:
                blur.append(box)
            marks.append(box)
            kept_flags.append(not blurred)
            labels.append(person if not blurred else (f"#{tid}" if tid >= 0 else "region"))
        if blur:
            if frame.yuv is not None:
                redact_planes(*frame.planes(), np.asarray(blur, np.float32), self.options.redact,
                              black=0 if frame.full_range else 16)
            else:
                redact(frame.rgb, np.asarray(blur, np.float32), self.options.redact)
        if self.options.mark_faces and marks:
            mark(frame.rgb, np.asarray(marks, np.float32), kept_flags, labels)

    @staticmethod
    def _detect(detector: Detector, frame: Frame, turns: int = 0, sar: float = 1.0) -> np.ndarray:
        """Faces in `frame`, converted to RGB at the network's input size in one step. With `turns`
        (a video's display rotation, `quarter_turns`), the network sees the small image turned
        upright, as the video is shown (a face on its side is mostly missed: a phone's portrait
        video lost a third of its face-frames), and with `sar` (its sample aspect ratio) as wide as
        it is shown (HDV's 1440 x 1080 as 1920 x 1080: squeezed faces are found less often); the
        boxes come back in the frame's own pixels."""
        h, coded_w = frame.height, frame.width
        w = max(1, round(coded_w * sar))  # as shown; the one resize to the network's size stretches it
        if turns % 4 == 0:
            rh, rw = detector.input_size(h, w)
            found = detector(frame.rgb_resized(rw, rh, one_field=_one_field(frame, rh)), (h, w))
        else:
            upright = (w, h) if turns % 2 else (h, w)
            rh, rw = detector.input_size(*upright)
            if turns % 2:
                small = frame.rgb_resized(rh, rw, one_field=_one_field(frame, rw))
            else:
                small = frame.rgb_resized(rw, rh, one_field=_one_field(frame, rh))
            found = coded_boxes(detector(np.ascontiguousarray(np.rot90(small, turns)), upright), turns, h, w)
        if w != coded_w:
            found[:, [0, 2]] *= coded_w / w
        return found

    @staticmethod
    def _detector_input(detectors: Iterable[Detector]) -> tuple[int, int] | None:
        geo = next((g for g in (getattr(d, "geometry", None) for d in detectors) if g is not None), None)
        return None if geo is None else (geo.resized[1], geo.resized[0])

    # -- video ----------------------------------------------------------------------------------
    def analyze(self, src: Path, info: VideoInfo | None = None, progress: Callable[[int], None] | None = None) -> Plan:
        """The plan for one video: decode (no encoding) -> detect -> track over the whole video ->
        recognise each track from its best samples -> one decision per track (or per stretch of a
        track whose samples show another person). `progress(n)`: frames analyzed so far."""
        src = Path(src)
        info = info or probe(src)
        started = time.perf_counter()
        sampling = self.options.recognition.at_rate(float(info.fps))
        damage = DecodeDamage()
        shots = ShotChangeDetector()
        analysis, tracks = self.analyze_frames(decode(src, self.options.encode, damage), sampling, quarter_turns(info.rotation),
                                               float(info.sample_aspect_ratio or 1), progress, shots)
        sar = info.sample_aspect_ratio
        di = self._detector_input(self._detectors())
        return Plan(
            input={"path": str(src), "size": src.stat().st_size, "fingerprint": fingerprint(src),
                   "frames": analysis.frames, "width": analysis.size[0], "height": analysis.size[1],
                   "rotation": info.rotation, "pixel_aspect": f"{sar.numerator}:{sar.denominator}" if sar else "1:1"},
            tracks=tracks,
            meta={"analysis": {**analysis.figures(), "tracks": len(tracks), "seconds": round(time.perf_counter() - started, 3)},
                  "detector_input": None if di is None else list(di),
                  # A damaged video is rendered in full, where lost frames are stood in for and reported.
                  **({"damage": damage.as_dict()} if damage else {})},
            edges=None if shots.first is None else (shots.first, shots.last),
            pending=[PlanTrack(-1 - k, BLUR, None, np.asarray(t.frames, np.int64), np.frombuffer(t.coords, np.float32).reshape(-1, 4),
                               {"peak": t.peak, "detected": t.detected}) for k, t in enumerate(analysis.unconfirmed)],
        )

    def analyze_frames(self, frames: Iterable[Frame], sampling: SamplingOptions, turns: int = 0, sar: float = 1.0,
                       progress: Callable[[int], None] | None = None,
                       shots: ShotChangeDetector | None = None) -> tuple[Analysis, list]:
        """`analyze` on decoded frames: the finished `Analysis` and the plan's tracks."""
        detectors = self._detectors()
        idle: queue.SimpleQueue[Detector] = queue.SimpleQueue()
        for d in detectors:
            idle.put(d)

        def detect(f: Frame) -> np.ndarray:
            d = idle.get()
            try:
                return self._detect(d, f, turns, sar)
            finally:
                idle.put(d)

        with ExitStack() as stack:
            encoder = None
            if self.recognizer is not None:
                encoder = stack.enter_context(FaceEncoder(processes=self.options.worker_process))
                encoder.start()  # before the detection threads: the worker forks from a quiet process
            analysis = Analysis(self.options.tracker, sampling, encoder, self.recognizer, turns, sar)
            shots = shots or ShotChangeDetector()
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=len(detectors), thread_name_prefix="detect"))
            # Frames t..t+k-1 are detected on k threads (LiteRT releases the GIL) while the next is
            # decoded; they are tracked in order. While no face has been detected for longer than a
            # track can miss one (`idle_skip`), every other frame is left out (job None), then
            # detected after all when a frame beside it has a face: only a face seen on one frame
            # alone can go unseen.
            jobs: deque = deque()
            quiet_after = self.options.tracker.max_gap + 1
            state = {"quiet": 0, "prev": _NO_FACES, "skipped": False}

            def take() -> None:
                f0, job, cut = jobs.popleft()
                if job is not None:
                    dets = job.result()
                elif not jobs or len(state["prev"]) or len(jobs[0][1].result()):
                    dets = detect(f0)
                else:
                    dets = _NO_FACES
                    analysis.skipped += 1
                state["quiet"] = 0 if len(dets) else state["quiet"] + 1
                state["prev"] = dets
                analysis.add(f0, dets, cut)

            for f in frames:
                cut = shots(f)
                skip = self.options.idle_skip and not cut and not state["skipped"] and state["quiet"] >= quiet_after
                state["skipped"] = skip
                jobs.append((f, None if skip else pool.submit(detect, f), cut))
                while len(jobs) > len(detectors) + 1 or (len(jobs) > 1 and jobs[0][1] is not None and jobs[0][1].done()):
                    take()
                    if progress is not None:
                        progress(analysis.frames)
            while jobs:
                take()
            if progress is not None:
                progress(analysis.frames)
            raw = analysis.finish()
            chains = link(raw, sampling)
            tracks = plan_tracks(chains, self.recognizer, self.options.decisions, analysis.shot_starts)
        analysis.raw_tracks, analysis.linked_tracks = len(raw), len(chains)
        return analysis, tracks

    def render(self, src: Path, dst: Path, plan: Plan, progress: Callable[[int], None] | None = None) -> FileReport:
        """Encode `src` into `dst` with the plan's "blur" boxes and regions redacted, audio copied
        (written under a temporary name, renamed when complete). A plan made for another file, or
        whose frame count the video does not have, is refused with a PlanError; nothing is written."""
        src, dst = Path(src), Path(dst)
        plan.check_input(src)
        total = plan.input["frames"]
        started = time.perf_counter()
        if self.options.full_render:
            reason = "--full-render"
        elif plan.meta.get("damage"):
            reason = "the video is damaged (the full render stands in for its lost frames and reports them)"
        else:
            reason = smart_refusal(src, dst, self.options.encode, total, self.options.mark_faces, segment=self.options.smart_segment)
        if reason is None:
            report = self._report(src, dst, plan)
            try:
                report.render = self._smart(src, dst, plan, report, progress)
            except SmartRenderError as error:
                reason = f"smart render stopped: {error}"
            else:
                return self._finish(report, plan, started)
        if self.options.smart_segment:
            raise SmartRenderError(f"{src}: this segment cannot be smart-rendered like the others ({reason})")
        report = self._report(src, dst, plan)
        report.render = {"mode": "full", "reason": reason}
        boxes_at = plan.frames()

        def run(frames: Iterator[Frame]) -> Iterator[Frame]:
            n = 0
            for f in frames:
                if f.index >= total:
                    raise PlanError(f"{src}: the video has more frames than the plan's {total}")
                self._redact(f, boxes_at(f.index), report)
                n += 1
                yield f
            if n != total:
                raise PlanError(f"{src}: the plan covers {total} frames, the video has {n}")

        stats = transcode(src, dst, options=self.options.encode, progress=progress, transform=run)
        report.frames = stats.frames
        report.dropped_streams = list(stats.dropped_streams)
        report.damage = stats.damage
        return self._finish(report, plan, started)

    @staticmethod
    def _report(src: Path, dst: Path, plan: Plan) -> FileReport:
        report = FileReport(str(src), str(dst), "video", rotation=int(plan.input.get("rotation", 0)))
        report.pixel_aspect = str(plan.input.get("pixel_aspect", "1:1"))
        return report

    def _smart(self, src: Path, dst: Path, plan: Plan, report: FileReport, progress: Callable[[int], None] | None) -> dict:
        """Smart render (`limelight.smart`): every box recorded in the report in one pass over the
        plan; only the GOPs holding a box to redact are decoded and encoded again."""
        total = plan.input["frames"]
        lookup, redacted = plan.frames(), np.zeros(total + 1, np.int64)
        for index in range(total):
            entries = lookup(index)
            self._record(index, entries, report)
            redacted[index + 1] = redacted[index] + any(blurred for _, _, blurred, _ in entries)
        pixels = plan.frames()
        def first_redacted(first: int, n: int) -> int | None:
            at = int(np.searchsorted(redacted, redacted[first] + 1)) - 1  # first frame >= `first` with a box to redact
            return at if redacted[min(first + n, total)] > redacted[first] else None

        stats = smart_render(src, dst, total, first_redacted,
                             lambda frame: self._hide(frame, pixels(frame.index)), self.options.encode, progress,
                             parameter_sets=self.options.smart_segment)
        report.frames = stats.frames
        report.dropped_streams = list(stats.dropped_streams)
        return {"mode": "smart", "reason": None, **stats.as_dict()}

    def _finish(self, report: FileReport, plan: Plan, started: float) -> FileReport:
        report.seconds = time.perf_counter() - started
        di = plan.meta.get("detector_input")
        report.detector_input = tuple(di) if di else None
        report.analysis = plan.meta.get("analysis")
        report.regions = len(plan.regions)
        for t in plan.tracks:
            rec = report.tracks.get(t.id)
            if rec is None:
                continue
            r = t.evidence.get("recognition") or {}
            rec.decision = Decision(t.decision == "show", t.person if t.decision == "show" else None,
                                    r.get("samples", 0), r.get("matches", 0), r.get("best_distance"))
            rec.evidence = {k: v for k, v in t.evidence.items() if k != "recognition"}
        return report

    def video(self, src: Path, dst: Path, progress: Callable[[int], None] | None = None,
              info: VideoInfo | None = None) -> FileReport:
        """Anonymize one video into `dst`: `analyze`, then `render` its plan. `progress(n)` counts
        the frames of both passes (2 x the frame count in all). `info`: `probe(src)` when the caller
        has it already (probing a container without a frame count reads the whole file)."""
        started = time.perf_counter()
        plan = self.analyze(src, info, progress)
        done = plan.input["frames"]
        report = self.render(src, dst, plan, None if progress is None else (lambda n: progress(done + n)))
        report.seconds = time.perf_counter() - started
        return report

    def _animation(self, src: Path, dst: Path) -> FileReport:
        if dst.suffix.lower() not in KEEP_CONTAINER:
            raise OutputError(f"{dst}: {src.name} is animated: write it as a video (.mp4, .mov, .mkv)")
        with tempfile.TemporaryDirectory(prefix="limelight-") as scratch:
            clip = animation_clip(src, Path(scratch) / "frames.mkv")
            report = self.video(clip, dst)
        report.input = str(src)
        return report

    # -- image ----------------------------------------------------------------------------------
    def image(self, src: Path, dst: Path) -> FileReport:
        """Anonymize one photo: every detected face is its own one-frame track, kept when its one
        sample confidently matches a consented person. An animated WebP / PNG is a video:
        anonymized as one into `dst`, which must then be a video (`default_output` names an .mp4)."""
        if animation_frames(src) > 1:
            return self._animation(src, dst)
        start = time.perf_counter()
        rgb = read_image(src)
        report = FileReport(str(src), str(dst), "image", frames=1)
        decisions: dict[int, Decision | None] = {}
        entries = []
        # A photo is detected at several sizes (`Detector.detect_photo`); a custom detector without
        # that method is called once, as for a video frame.
        detect = getattr(self.detector, "detect_photo", self.detector)
        for tid, det in enumerate(detect(rgb)):
            decision = None
            if self.recognizer is not None:
                vote = self.recognizer.vote()
                encoding = encode_face(rgb, det[:4])
                if encoding is not None:
                    vote.add(encoding)
                decision = vote.decision()
            decisions[tid] = decision
            kept = decision is not None and decision.kept
            entries.append((tid, det[:4], not kept, decision.name if kept else None))
        self._redact(Frame(0, 0, 0.0, rgb=rgb), entries, report)
        for tid, rec in report.tracks.items():
            rec.decision = decisions[tid]
        _write_image(dst, rgb[..., ::-1], _icc_profile(src), _alpha(src, rgb.shape[:2]))
        sized = getattr(self.detector, "photo_input_size", None)
        if sized is not None:
            rh, rw = sized(*rgb.shape[:2])
            report.detector_input = (rw, rh)
        else:
            report.detector_input = self._detector_input([self.detector])
        report.seconds = time.perf_counter() - start
        return report


_ANIMATED_SUFFIXES = frozenset({".webp", ".png", ".gif"})


def is_photo(src: Path) -> bool:
    """Whether `src` is anonymized as a photo: a photo suffix and one frame, or a GIF of one frame
    (written as PNG: OpenCV reads GIF but does not write it); an animation is a video."""
    suffix = src.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return suffix not in _ANIMATED_SUFFIXES or animation_frames(src) == 1
    return suffix == ".gif" and src.is_file() and animation_frames(src) == 1


def animation_frames(src: Path) -> int:
    """How many frames an animated WebP / PNG / GIF holds (1 for a still or anything unreadable)."""
    if src.suffix.lower() not in _ANIMATED_SUFFIXES:
        return 1
    try:
        with Image.open(src) as image:
            return int(getattr(image, "n_frames", 1))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 1


def animation_clip(src: Path, dst: Path) -> Path:
    """The frames of an animated WebP / PNG, each at its time, as a lossless video (FFV1 RGB
    in Matroska, 1/1000 s time base) that the video path can read."""
    try:
        with Image.open(src) as image, av.open(str(dst), mode="w") as out:
            video = out.add_stream("ffv1", rate=Fraction(1000, _duration_ms(image.info)))
            video.width, video.height, video.pix_fmt = image.width, image.height, "bgr0"
            video.time_base = Fraction(1, 1000)
            pts = 0
            for frame in ImageSequence.Iterator(image):
                rgb = np.ascontiguousarray(frame.convert("RGB"))
                picture = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                picture.pts, picture.time_base = pts, Fraction(1, 1000)
                out.mux(video.encode(picture))
                pts += _duration_ms(frame.info)
            out.mux(video.encode(None))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, av.FFmpegError) as error:
        raise InputError(f"{src}: not a readable animation ({error})") from None
    return dst


def _duration_ms(info: dict) -> int:
    """How long a frame of an animation is shown, in whole ms (WebP says an int, APNG a float; 100
    when it does not say, as browsers take it)."""
    return max(1, round(info.get("duration") or 100))


# The largest photo LimeLight takes (a 108 MP phone photo is 12000 x 9000): a small PNG can
# declare 20000 x 20000 pixels (a decompression bomb) and take gigabytes once decoded.
MAX_PHOTO_PIXELS = 120_000_000


def read_image(src: Path) -> np.ndarray:
    """RGB pixels of a photo, turned upright by its EXIF orientation: OpenCV's reader, or Pillow's
    for what OpenCV cannot read (HEIC / HEIF, through pillow-heif). InputError for a photo of more
    than MAX_PHOTO_PIXELS, a truncated one (libjpeg would fill the rest with grey), or one that
    cannot be read."""
    check_photo_size(src)
    with captured_stderr() as chatter:
        bgr = cv2.imread(str(src), cv2.IMREAD_COLOR)
    truncated = next((line for line in chatter if "Premature end" in line or "truncated" in line.lower()), None)
    if truncated is not None:
        raise InputError(f"{src}: truncated or damaged image (the decoder stopped early: {truncated.strip()})")
    if bgr is not None:
        return np.ascontiguousarray(bgr[..., ::-1])
    try:
        with Image.open(src) as image:
            return np.array(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InputError(f"{src}: not a readable image") from None


def check_photo_size(src: Path) -> None:
    """InputError for a photo of more than MAX_PHOTO_PIXELS (read from its header only)."""
    try:
        with Image.open(src) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        width = height = None
    except PermissionError:
        raise InputError(f"{src}: cannot read it (permission denied)") from None
    except (OSError, SyntaxError, ValueError):
        return  # not Pillow's format: OpenCV's reader says
    if width is None or width * height > MAX_PHOTO_PIXELS:
        size = "" if width is None else f" ({width} x {height})"
        raise InputError(f"{src}: too many pixels{size}: LimeLight takes photos of up to {MAX_PHOTO_PIXELS // 1_000_000} megapixels")


def _icc_profile(src: Path) -> bytes | None:
    """The photo's embedded RGB colour profile (a phone's Display P3, a camera's Adobe RGB), if any.
    A CMYK or grey profile (print files, scans) describes other pixels than the RGB ones written
    back, so it is left out (the photo is then read as sRGB, as OpenCV decoded it)."""
    try:
        with Image.open(src) as im:
            icc = im.info.get("icc_profile")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return icc if icc and icc[16:20] == b"RGB " else None  # the header's data colour space


def _alpha(src: Path, size: tuple[int, int]) -> np.ndarray | None:
    """The photo's transparency (H, W) uint8, upright as `read_image` turns it; None if opaque."""
    try:
        with Image.open(src) as im:
            if not (im.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in im.info):
                return None
            alpha = np.array(ImageOps.exif_transpose(im).convert("RGBA"))[..., 3]
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return alpha if alpha.shape == size and alpha.min() < 255 else None


# Formats that keep transparency.
_ALPHA_SUFFIXES = frozenset({".png", ".webp", ".tif", ".tiff"})
# Formats that carry a colour profile, as Pillow names them.
_ICC_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".avif": "AVIF"}
# Lossy formats' quality, for Pillow and OpenCV.
_LOSSY = frozenset({".jpg", ".jpeg", ".webp", ".avif"})


def _write_image(dst: Path, bgr: np.ndarray, icc: bytes | None = None, alpha: np.ndarray | None = None) -> None:
    """Write the photo atomically. Its colour profile, when it had one, is embedded again (OpenCV
    drops it, and a Display P3 photo read as sRGB looks washed out), and so is its transparency (a
    cut-out portrait) where the format keeps it; EXIF is not (the pixels are already turned
    upright, and GPS must not travel)."""
    suffix = dst.suffix.lower() or ".png"
    if alpha is not None and suffix in _ALPHA_SUFFIXES:
        bgr = np.dstack([bgr, alpha])
    if icc and suffix in _ICC_FORMATS:
        buffer = io.BytesIO()
        quality = {"quality": 95} if suffix in _LOSSY else {}
        rgb = np.ascontiguousarray(bgr[..., [2, 1, 0, 3][:bgr.shape[2]]])
        Image.fromarray(rgb).save(buffer, format=_ICC_FORMATS[suffix], icc_profile=icc, **quality)
        ok, data = True, np.frombuffer(buffer.getvalue(), np.uint8)
    else:
        # Each format gets only its own parameters: OpenCV warns on stderr about a JPEG one given to a PNG.
        params = {".jpg": [cv2.IMWRITE_JPEG_QUALITY, 95], ".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 95],
                  ".webp": [cv2.IMWRITE_WEBP_QUALITY, 95], ".avif": [cv2.IMWRITE_AVIF_QUALITY, 95]}.get(suffix, [])
        try:
            ok, data = cv2.imencode(suffix, bgr, params)
        except cv2.error:
            ok = False
    if not ok:
        raise OutputError(f"{dst}: cannot encode an image of this type")
    publish_bytes(dst, data.tobytes())
