"""The anonymization engine: decode -> detect -> track -> recognise -> redact -> encode.

One streaming function serves the CLI and the per-segment Lambda. Frames are held in a look-ahead
buffer until the tracker has settled their boxes and a recognition decision has had
`RecognitionSchedule.decision_delay` frames (1 s at 24 fps) to reach them, so memory does not grow
with the video's length. A face is left unblurred only when its track's votes say it is a
consented person; everything else, including faces too small to recognise, is blurred.
"""

from __future__ import annotations

import io
import os
import queue
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator

import av
import cv2
import numpy as np
from PIL import Image, ImageOps, ImageSequence

from limelight.detector import Detector
from limelight.encoder_worker import FaceEncoder, usable_cpus
from limelight.errors import InputError, OutputError
from limelight.recognizer import Decision, IdentityVote, Recognizer, encode_face
from limelight.redact import RedactOptions, mark, redact, redact_planes
from limelight.report import FileReport
from limelight.tracker import Tracker, TrackerOptions
from limelight.formats import CONTAINER_SUFFIXES, IMAGE_SUFFIXES, KEEP_CONTAINER, photo_output_suffix
from limelight.video import (
    EncodeOptions,
    Frame,
    VideoInfo,
    coded_boxes,
    output_container,
    probe,
    quarter_turns,
    transcode,
)

# An animated GIF is a video too: written as MP4, as the web shows GIFs.
VIDEO_SUFFIXES = CONTAINER_SUFFIXES | {".gif"}
MAX_DETECT_WORKERS = 4


@dataclass(frozen=True)
class RecognitionSchedule:
    """When a track's face is encoded (an encoding costs ~80 ms, so a handful per track).

    A track is sampled every `interval` frames until it has `max_samples`; a track that is kept
    (consented) goes on being checked every `verify_interval` frames for as long as it lasts, and
    `revoke_after` consecutive checks that do not match its person suspend it (blurred): a tracker
    mistake must not carry one person's consent over to a stranger. A suspended track is still
    checked every `verify_interval` frames and shown again only after `min_matches` consecutive
    confident matches of one consented person, the evidence a new track needs: a consented person
    who turns away for a moment is blurred while turned, not for the rest of the shot.

    Frame counts are meant for videos of up to `base_fps`; `at_rate` stretches them for faster
    ones, so that recognition runs as often per second (a 60 fps video would otherwise pay twice
    the encodings for the same evidence) and the decision delay still spans 1 s.
    """

    # The first samples are taken `first_interval` apart, so a decision exists within the look-ahead.
    # Not closer: frames 2 apart are near duplicates whose distances err together, and three that
    # miss as a consented person moves into the shot outvote his next four matches (hamilton: 50
    # frames blurred at first_interval 2, 4 at 4).
    first_samples: int = 3
    first_interval: int = 4
    interval: int = 10
    max_samples: int = 7  # then one sample every `late_interval` frames...
    late_interval: int = 30
    window: int = 7  # ...and the decision is the majority of the last `window` samples
    min_matches: int = 2  # one lucky sample never unblurs a video face
    verify_interval: int = 15
    revoke_after: int = 2
    min_score: float = 0.6  # only confident detections are worth a sample
    # A frame is redacted only once `decision_delay` newer frames have been seen, so a decision
    # reached then (a face moving into the shot is often matched only after a few samples) still
    # applies to it: a consented person is not blurred for the first half second of every shot, and
    # a suspension reaches back as far. Costs that many decoded frames of memory (held as 4:2:0 YUV,
    # 1 s of 1080p at 24 fps: ~75 MB, ~95 MB with `result_lag`), at most `max_held_bytes` of them (4K: 20).
    decision_delay: int = 24
    max_held_bytes: int = 256 * 2**20
    # Encodings run in a worker process (`encoder_worker`) while the video goes on; a sample's result
    # is claimed (waited for) `result_lag` frames after it was asked for, and frames are held that much
    # longer, so that decisions still reach back `decision_delay` frames. Fixed in frames, not in time,
    # so the output does not depend on the worker's speed. Short, because the schedule learns of a
    # decision that late (a kept track is then checked less often): 6 frames cover an encoding at
    # 24 fps, and on 2 cores a longer lag gained nothing (the cores are busy either way).
    # `worker_process` False: in-process.
    result_lag: int = 6
    worker_process: bool = True
    base_fps: float = 30.0

    def at_rate(self, fps: float) -> "RecognitionSchedule":
        """This schedule for a video of `fps` frames per second (itself up to `base_fps`)."""
        if not fps or fps <= self.base_fps:
            return self
        k = fps / self.base_fps

        def stretch(frames: int) -> int:
            return max(1, round(frames * k))

        return replace(
            self,
            first_interval=stretch(self.first_interval),
            interval=stretch(self.interval),
            late_interval=stretch(self.late_interval),
            verify_interval=stretch(self.verify_interval),
            decision_delay=stretch(self.decision_delay),
            result_lag=stretch(self.result_lag),
        )


class ShotChangeDetector:
    """Flags cuts: the mean absolute difference of consecutive 64x36 grey thumbnails jumps.

    On the shared clips cuts score 27-30 (0-255 scale) and motion inside a shot stays under 14.
    """

    def __init__(self, threshold: float = 20.0):
        self.threshold = threshold
        self._prev: np.ndarray | None = None

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
        self._prev = thumb
        return cut


@dataclass(frozen=True)
class AnonymizeOptions:
    redact: RedactOptions = field(default_factory=RedactOptions)
    tracker: TrackerOptions = field(default_factory=TrackerOptions)
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    recognition: RecognitionSchedule = field(default_factory=RecognitionSchedule)
    mark_faces: bool = False
    # Video frames detected at once, each by its own single-threaded interpreter on its own thread;
    # None: one per usable CPU (at most MAX_DETECT_WORKERS). Two frames on two 1-thread interpreters
    # beat one frame on a 2-thread interpreter (paired runs on 2 cores: 720p 0.42x vs 0.36x a pure
    # transcode, 1080p 0.58x vs 0.54x): no thread waits for the other's half of a layer while x264
    # wants the core. Detections do not depend on it: every interpreter runs the same integer model
    # on the same input.
    detect_workers: int | None = None

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
            "mark_faces": self.mark_faces,
            "detect_workers": self.detect_workers,
        }


def default_output(src: Path) -> Path:
    """`name_anonymized.ext` beside the input; a video's container is `video.output_container`'s."""
    suffix = src.suffix.lower()
    if is_photo(src):
        suffix = photo_output_suffix(suffix)
    elif suffix in VIDEO_SUFFIXES:
        suffix = output_container(src)
    elif animation_frames(src) > 1:
        suffix = ".mp4"  # an animated WebP / PNG is a video
    return src.with_name(f"{src.stem}_anonymized{suffix if suffix in IMAGE_SUFFIXES | VIDEO_SUFFIXES else src.suffix}")


def _one_field(frame: Frame, lines: int) -> bool:
    """Whether the detector sees only the top field of `frame`, scaled to `lines` lines: for an
    interlaced frame whose field alone has that many (1080i at 960, 720 lines at 640). Both fields
    of a moving face, combed and doubled, hide it (street_crowd woven into fields at 640: 58% of the
    progressive run's blurred faces found; 76% from one field); a field of fewer lines would lose
    detail instead (a 360-line clip's 180-line field cost its consented performer his match)."""
    return frame.interlaced and frame.height // 2 >= lines


class _TrackState:
    __slots__ = ("vote", "samples", "in_flight", "last_sample", "suspended", "start")

    def __init__(self, vote: IdentityVote | None):
        self.vote, self.samples, self.last_sample = vote, 0, -(10**9)
        self.in_flight = 0  # samples asked for whose encodings are not yet in the vote
        self.suspended = False
        self.start = 0  # after a resumption only the samples from this one on count

    def decision(self, min_matches: int = 1, window: int | None = None) -> Decision | None:
        if self.vote is None:
            return None
        if self.start:
            window = min(window or self.samples, self.samples - self.start)
        d = self.vote.decision(window)
        if d.kept and (self.suspended or d.matches < min_matches):
            return Decision(False, None, d.votes, d.matches, d.best_distance)
        return d

    def record(self, kept_as: str | None, schedule: RecognitionSchedule) -> None:
        """After a sample was added to the vote (and counted in `samples`): suspend a track kept as
        `kept_as` whose last `revoke_after` samples all missed that person; resume a
        suspended one whose last `min_matches` samples all matched one person, judged from then on
        by the samples since that run began (a new track needs the same evidence)."""
        if kept_as is not None:
            last = self.vote.last_names(schedule.revoke_after)
            self.suspended = len(last) == schedule.revoke_after and kept_as not in last
        elif self.suspended:
            last = self.vote.last_names(schedule.min_matches)
            if len(last) == schedule.min_matches and last[0] is not None and len(set(last)) == 1:
                self.suspended, self.start = False, self.samples - schedule.min_matches


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

    # -- per-track identity ---------------------------------------------------------------------
    def _sample(self, state: _TrackState, frame: Frame, index: int, det: np.ndarray, encoder: FaceEncoder,
                pending: deque, turns: int = 0, sar: float = 1.0) -> None:
        """Ask `encoder` for an encoding of the track's face when its schedule says so; the result
        joins the vote in `_apply`."""
        sched = self.options.recognition
        if state.vote is None or det[4] < sched.min_score:
            return
        current = state.decision(sched.min_matches, sched.window)
        gap = index - state.last_sample
        taken = state.samples + state.in_flight
        if current.kept or state.suspended:  # keep verifying a consented track for as long as it lasts
            wait = sched.verify_interval
        elif taken < sched.first_samples:
            wait = sched.first_interval
        else:
            wait = sched.interval if taken < sched.max_samples else sched.late_interval
        if gap < wait:
            return
        state.last_sample = index
        ticket = encoder.submit(frame, det[:4], turns, sar)
        if ticket is not None:  # None: too small to recognise
            state.in_flight += 1
            pending.append((index, state, ticket))

    def _apply(self, encoder: FaceEncoder, pending: deque, upto: int | None) -> None:
        """Add the encodings of the samples taken at frames <= `upto` (all with None) to their
        tracks' votes, in the order they were taken (waiting for the worker where needed)."""
        sched = self.options.recognition
        while pending and (upto is None or pending[0][0] <= upto):
            _, state, ticket = pending.popleft()
            encoding = encoder.result(ticket)
            state.in_flight -= 1
            current = state.decision(sched.min_matches, sched.window)
            state.vote.add(encoding)
            state.samples += 1
            state.record(current.name if current.kept else None, sched)

    def _kept(self, state: _TrackState | None, min_matches: int) -> tuple[bool, str | None]:
        d = state.decision(min_matches, self.options.recognition.window) if state is not None else None
        return (d.kept, d.name) if d is not None else (False, None)

    def _emit(self, frame: Frame, boxes: list[tuple[int, np.ndarray]], states, report: FileReport, min_matches: int) -> None:
        index = frame.index
        blur, kept_flags, labels = [], [], []
        for tid, box in boxes:
            kept, name = self._kept(states.get(tid), min_matches)
            report.add_box(tid, index, box, blurred=not kept, shown_as=name if kept else None)
            if not kept:
                blur.append(box)
            kept_flags.append(kept)
            labels.append(name or f"#{tid}")
        if blur:
            if frame.yuv is not None:  # on the decoded planes: no colour conversion of the frame
                redact_planes(*frame.planes(), np.asarray(blur, np.float32), self.options.redact,
                              black=0 if frame.full_range else 16)
            else:
                redact(frame.rgb, np.asarray(blur, np.float32), self.options.redact)
        if self.options.mark_faces and boxes:
            mark(frame.rgb, np.asarray([b for _, b in boxes], np.float32), kept_flags, labels)

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
    def _transform(self, report: FileReport, states: dict[int, _TrackState], turns: int = 0,
                   sar: float = 1.0) -> Callable[[Iterator[Frame]], Iterable[Frame]]:
        def run(frames: Iterator[Frame]) -> Iterator[Frame]:
            tracker = Tracker(self.options.tracker)
            shots = ShotChangeDetector()
            buffer: deque[Frame] = deque()

            sched = self.options.recognition
            finished = False
            encoder = FaceEncoder(processes=sched.worker_process)
            if self.recognizer is not None:
                encoder.start()  # before the detection thread: the worker forks from a quiet process
            pending: deque = deque()  # (frame index, track state, ticket) of samples not yet in a vote
            # Held with or without consented people: a weak track confirmed after the tracker's own
            # look-ahead is still blurred back to its start in the frames held (street_crowd: 3,349
            # blurred boxes instead of 3,320 when frames were released at the look-ahead).
            hold = sched.decision_delay + sched.result_lag

            def ready() -> Iterator[Frame]:
                delay = min(hold, sched.max_held_bytes // max(buffer[0].nbytes, 1)) if buffer else 0
                while buffer and tracker.is_final(buffer[0].index) and (
                        finished or buffer[-1].index - buffer[0].index >= delay):
                    f = buffer.popleft()
                    self._emit(f, tracker.boxes_at(f.index), states, report, self.options.recognition.min_matches)
                    tracker.release(f.index)
                    yield f

            def track(f: Frame, dets: np.ndarray, cut: bool) -> Iterator[Frame]:
                self._apply(encoder, pending, f.index - sched.result_lag)
                for a in tracker.update(f.index, dets, new_shot=cut):
                    state = states.get(a.track_id)
                    if state is None:
                        state = states[a.track_id] = _TrackState(self.recognizer.vote() if self.recognizer else None)
                    self._sample(state, f, f.index, a.detection, encoder, pending, turns, sar)
                buffer.append(f)
                yield from ready()

            # Detection of frames t..t+k-1 runs on k worker threads (LiteRT releases the GIL), one
            # interpreter each, while frame t-1 is tracked and earlier frames are redacted and
            # encoded; frames are tracked in order.
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

            with encoder, ThreadPoolExecutor(max_workers=len(detectors), thread_name_prefix="detect") as pool:
                jobs: deque = deque()  # (frame, its detection, whether it starts a shot), in frame order
                for f in frames:
                    jobs.append((f, pool.submit(detect, f), shots(f)))
                    if len(jobs) > len(detectors):
                        f0, job, cut = jobs.popleft()
                        yield from track(f0, job.result(), cut)
                while jobs:
                    f0, job, cut = jobs.popleft()
                    yield from track(f0, job.result(), cut)
                self._apply(encoder, pending, None)
            tracker.finish()
            finished = True
            yield from ready()

        return run

    def video(self, src: Path, dst: Path, progress: Callable[[int], None] | None = None,
              info: VideoInfo | None = None) -> FileReport:
        """Anonymize one video into `dst` (written under a temporary name, renamed when complete).
        `info`: `probe(src)` when the caller has it already (probing a container without a frame
        count reads the whole file)."""
        engine, info = self, info or probe(src)
        if self.recognizer is not None:
            sched = self.options.recognition.at_rate(float(info.fps))
            if sched != self.options.recognition:  # a faster video: the schedule in its frames
                engine = Anonymizer(self.detector, self.recognizer, replace(self.options, recognition=sched))
        report = engine._video(src, dst, progress, info.rotation, float(info.sample_aspect_ratio or 1))
        if info.sample_aspect_ratio:
            report.pixel_aspect = f"{info.sample_aspect_ratio.numerator}:{info.sample_aspect_ratio.denominator}"
        return report

    def _animation(self, src: Path, dst: Path) -> FileReport:
        if dst.suffix.lower() not in KEEP_CONTAINER:
            raise OutputError(f"{dst}: {src.name} is animated: write it as a video (.mp4, .mov, .mkv)")
        with tempfile.TemporaryDirectory(prefix="limelight-") as scratch:
            clip = animation_clip(src, Path(scratch) / "frames.mkv")
            report = self.video(clip, dst)
        report.input = str(src)
        return report

    def _video(self, src: Path, dst: Path, progress: Callable[[int], None] | None, rotation: int,
               sar: float = 1.0) -> FileReport:
        report = FileReport(str(src), str(dst), "video", rotation=rotation)
        states: dict[int, _TrackState] = {}
        start = time.perf_counter()
        # Frames stay as stored (the display rotation and pixel aspect are kept for the player);
        # detection and recognition see them as shown: upright, in square pixels.
        turns = quarter_turns(rotation)
        transform = self._transform(report, states, turns, sar)
        stats = transcode(src, dst, options=self.options.encode, progress=progress, transform=transform)
        report.frames, report.seconds = stats.frames, time.perf_counter() - start
        report.dropped_streams = list(stats.dropped_streams)
        report.damage = stats.damage
        report.detector_input = self._detector_input(self._detectors())
        for tid, rec in report.tracks.items():
            rec.decision = states[tid].decision(self.options.recognition.min_matches, self.options.recognition.window) if tid in states else None
        return report

    # -- image ----------------------------------------------------------------------------------
    def image(self, src: Path, dst: Path) -> FileReport:
        """Anonymize one photo: every detected face is its own one-frame track. An animated WebP /
        PNG is a video: anonymized as one into `dst`, which must then be a video (`default_output`
        names an .mp4)."""
        if animation_frames(src) > 1:
            return self._animation(src, dst)
        start = time.perf_counter()
        rgb = read_image(src)
        report = FileReport(str(src), str(dst), "image", frames=1)
        states: dict[int, _TrackState] = {}
        boxes = []
        # A photo is detected at several sizes (`Detector.detect_photo`); a custom detector without
        # that method is called once, as for a video frame.
        detect = getattr(self.detector, "detect_photo", self.detector)
        for tid, det in enumerate(detect(rgb)):
            state = states[tid] = _TrackState(self.recognizer.vote() if self.recognizer else None)
            if state.vote is not None:
                encoding = encode_face(rgb, det[:4])
                if encoding is not None:
                    state.vote.add(encoding)
            boxes.append((tid, det[:4]))
        self._emit(Frame(0, 0, 0.0, rgb=rgb), boxes, states, report, min_matches=1)  # a photo has one sample per face
        for tid, rec in report.tracks.items():
            rec.decision = states[tid].decision()
        _write_image(dst, rgb[..., ::-1], _icc_profile(src), _alpha(src, rgb.shape[:2]))
        sized = getattr(self.detector, "photo_input_size", None)
        if sized is not None:
            rh, rw = sized(*rgb.shape[:2])
            report.detector_input = (rw, rh)
        else:
            report.detector_input = self._detector_input([self.detector])
        report.seconds = time.perf_counter() - start
        return report


# Photo formats that may hold an animation (Pillow reads them frame by frame; FFmpeg does not
# decode animated WebP), and GIF, which may hold a still.
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


def read_image(src: Path) -> np.ndarray:
    """RGB pixels of a photo, turned upright by its EXIF orientation: OpenCV's reader, or Pillow's
    for what OpenCV cannot read (HEIC / HEIF, through pillow-heif)."""
    bgr = cv2.imread(str(src), cv2.IMREAD_COLOR)
    if bgr is not None:
        return np.ascontiguousarray(bgr[..., ::-1])
    try:
        with Image.open(src) as image:
            return np.array(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InputError(f"{src}: not a readable image") from None


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
    tmp = dst.with_name(f".{dst.name}.part")
    try:
        tmp.write_bytes(data.tobytes())
        os.replace(tmp, dst)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{dst}: cannot write ({e.strerror or e})") from None
