"""Keyframe segments: cut a video for parallel processing, join the processed pieces back.

Contract (docs/DESIGN.md, "Video rules"):

- `split` cuts the first video stream into pieces that each start on a keyframe, by stream copy
  (no decode, no re-encode). Audio is left in the original: it is muxed once, by `join`.
  Every packet keeps its original pts/dts: a segment of a clip whose video starts at 0.852 s
  starts at 0.852 s too, so processing a segment and joining it back cannot shift video against
  audio (the trap of resetting timestamps per segment).
- `join` concatenates the processed video segments packet for packet (the pts stay continuous as
  in the original, so frame count and every frame's timestamp are the original's) and copies the
  packets of ALL audio streams of the original bit-exact, interleaved by time; the output
  appears atomically (temporary name in the destination folder, renamed when complete).
- `merge_reports` turns the per-segment audit reports into one, in whole-video frame numbers.

No AWS here: the Lambda handlers call these functions with local paths.
Failures are `InputError` (unusable input) / `OutputError` (cannot write, or segments that do not
fit together), one-line messages naming the file.
"""

from __future__ import annotations

import heapq
import itertools
import math
import os
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from limelight.errors import InputError, OutputError
from limelight.video import (
    CONTAINER_SUFFIXES,
    DecodeDamage,
    audio_streams,
    check_audio_damage,
    demux,
    dropped_streams,
    error_reason,
    exact_start_options,
    first_video_stream,
    frame_rate,
    mux_copied_audio,
    open_media,
    probe,
    published_tags,
    copy_container_tags,
    temporary_path,
)

__all__ = ["JoinStats", "Segment", "join", "merge_reports", "split"]

# Segments are MP4: it stores every packet's pts/dts exactly in the stream's time base (Matroska
# rounds to 1 ms, NUT stores no dts). Only a late start (an edit list) is written in the movie
# time scale, which `split` sets to the video's so that it is exact as well; an engine-encoded
# segment may come back with its start rounded to 1 ms, which `join` undoes (see there).
# A video MP4 cannot hold goes to QuickTime (DV of camcorders), then Matroska (VP8 of WebM
# recordings, whose time base is Matroska's 1 ms already): `SEGMENT_SUFFIXES` in that order; last,
# the video's own container (FLV's Sorenson Spark).
SEGMENT_SUFFIX = ".mp4"
SEGMENT_SUFFIXES = (".mp4", ".mov", ".mkv")

# Largest start shift `join` repairs: an MP4 edit list rounded to its 1/1000 s movie time scale.
_MAX_SHIFT = Fraction(1, 1000)


@dataclass(frozen=True)
class Segment:
    """One piece of the video written by `split`.

    index: position in the video (0-based); path: the segment file.
    start_frame: whole-video index of its first frame (frames counted in presentation order);
    frames: number of frames it holds; start_pts / start_time: timestamp of its first frame in
    the video stream's time base / in seconds (the original's, never reset to 0).
    preroll: packets at the start of the file that belong to the previous segment (its last GOP):
    a segment that starts on an open GOP needs them to decode the frames shown before its
    keyframe. They are decoded but not part of the segment: process only frames from
    `skip_before` (its own first frame's timestamp in the segment file's time base, which the
    muxer may have changed; None without a pre-roll), as `EncodeOptions.start_pts`.
    """

    index: int
    path: Path
    start_frame: int
    frames: int
    start_pts: int
    start_time: float
    preroll: int = 0
    skip_before: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly description (without the local path)."""
        return {
            "index": self.index,
            "start_frame": self.start_frame,
            "frames": self.frames,
            "start_pts": self.start_pts,
            "start_time": round(self.start_time, 6),
            "preroll": self.preroll,
            "skip_before": self.skip_before,
        }

    def item(self) -> dict[str, Any]:
        """What a workflow Map item carries of it: the segment, and where its own frames start
        after a pre-roll (None without one)."""
        return {"index": self.index, "preroll": self.preroll, "skip_before": self.skip_before}


@dataclass(frozen=True)
class JoinStats:
    """Outcome of a `join`: file written, video frames, audio packets copied (all streams), the
    original's streams left out, what of its audio a damaged original lost (`damage`)."""

    output: Path
    frames: int
    audio_packets: int
    dropped_streams: tuple[str, ...] = ()  # streams of the original left out (`video.dropped_streams`)
    damage: DecodeDamage = field(default_factory=DecodeDamage)  # the original's malformed audio packets and late streams left out


def _check_output(dst: Path) -> None:
    if not dst.parent.is_dir():
        raise OutputError(f"{dst}: destination folder does not exist")
    if not dst.suffix:
        raise OutputError(f"{dst}: no file extension to choose the container format from")


class _SegmentWriter:
    """One segment file being written: a stream copy of the input's video stream."""

    def __init__(self, template: av.video.stream.VideoStream, path: Path) -> None:
        self.path = path
        try:
            # Movie time scale = the video's: the segment's start offset (an edit list) stays exact.
            options = {"movie_timescale": str(template.time_base.denominator)} if path.suffix in (".mp4", ".mov") else {}
            self._out = av.open(str(path), mode="w", options=options)
            self._video = self._out.add_stream_from_template(template)
        except (av.FFmpegError, OSError, ValueError) as error:
            raise OutputError(f"{path}: cannot write a segment ({error_reason(error)})") from error
        self._video.time_base = template.time_base
        self._video.metadata.update(published_tags(template.metadata))
        self._video.disposition = template.disposition
        try:
            self._out.start_encoding()  # the header now: a codec the container cannot hold fails here
        except (av.FFmpegError, OSError, ValueError) as error:
            self.abort()
            raise OutputError(f"{path}: cannot write a segment ({error_reason(error)})") from error
        self.time_base = self._video.time_base  # the muxer's (MP4 takes at least 1/10000 s for a 1/25 AVI)

    def stamp(self, pts: int, time_base: Fraction) -> int:
        """`pts` (in `time_base`) as this file stores it: rescaled to its time base, rounded to
        nearest with ties away from zero, as the muxer does."""
        x = Fraction(pts) * time_base / self.time_base
        return math.floor(x + Fraction(1, 2)) if x >= 0 else -math.floor(-x + Fraction(1, 2))

    def mux(self, packet: av.Packet) -> None:
        packet.stream = self._video
        try:
            self._out.mux(packet)
        except (av.FFmpegError, OSError, ValueError) as error:
            raise OutputError(f"{self.path}: cannot write ({error_reason(error)})") from error

    def close(self) -> None:
        try:
            self._out.close()
        except (av.FFmpegError, OSError) as error:
            raise OutputError(f"{self.path}: cannot finish writing ({error_reason(error)})") from error

    def abort(self) -> None:
        try:
            self._out.close()
        except (av.FFmpegError, OSError, ValueError):
            # The partial segment is deleted next; a failing trailer must not mask the first error.
            pass
        self.path.unlink(missing_ok=True)


def _first_writer(template: av.video.stream.VideoStream, folder: Path, own: str) -> _SegmentWriter:
    """The first segment's writer, in the first container of `SEGMENT_SUFFIXES` that holds the
    video, else in the video's `own` container (Sorenson Spark of old FLV fits none of the three)."""
    own = own.lower()
    for suffix in (*SEGMENT_SUFFIXES, *([own] if own in CONTAINER_SUFFIXES and own not in SEGMENT_SUFFIXES else [])):
        try:
            return _SegmentWriter(template, folder / f"{0:05d}{suffix}")
        except OutputError as error:
            failure = error
    raise failure


def split(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    target_seconds: float,
    on_segment: Callable[[Segment], None] | None = None,
) -> list[Segment]:
    """Cut the video of `src` into `out_dir/00000.mp4`, `00001.mp4`, ... on keyframes (.mov, .mkv or
    the video's own container for a video MP4 cannot hold: see `SEGMENT_SUFFIXES`; every segment of
    a video has the same).

    A new segment starts at the first keyframe at least `target_seconds` after the current
    segment's start, so segments are at least that long (except the last) and at most one GOP
    longer; one that starts on an open GOP (MPEG-2 of DVDs, XDCAM, broadcast) begins with the
    previous GOP as its pre-roll (`Segment.preroll`). Stream copy only; video only; original
    timestamps kept; the frames before the first keyframe and those shown before it (a recording
    cut mid-GOP) left out, as they cannot be decoded. Returns the segments in order.

    `on_segment` is called with each segment as soon as its file is complete, before the next is
    written; it may move or delete the file (the workflow uploads it and frees the space, so that
    cutting a large video needs room for one segment beside it, not a second copy of the video).
    Raises InputError (unusable input), OutputError (cannot write), ValueError (`target_seconds`
    not positive).
    """
    if not target_seconds > 0:
        raise ValueError(f"target_seconds must be > 0, got {target_seconds}")
    src_p, folder = Path(src), Path(out_dir)
    probe(src_p)  # rejects missing, empty, truncated, non-video input with an InputError
    if not folder.is_dir():
        raise OutputError(f"{folder}: segment folder does not exist")
    target = Fraction(target_seconds)
    segments: list[Segment] = []
    writer: _SegmentWriter | None = None
    try:
        with av.open(str(src_p)) as scan:  # a pass of its own: FLV and others cannot seek back to 0
            keyframes, clean = _keyframes(scan, first_video_stream(scan))
        with av.open(str(src_p)) as container:
            video = first_video_stream(container)
            tb = video.time_base
            open_gops = bool(keyframes - clean)
            gop: list[av.Packet] = []  # copies of the current GOP's packets: the next segment's pre-roll
            frames = total = skipped = preroll = 0
            start_pts = first_pts = last_dts = None
            for index, packet in enumerate(p for p in demux(container, video) if p.size):
                if writer is None and not packet.is_keyframe:
                    # A recording cut mid-GOP (a broadcast TS): what comes before its first keyframe
                    # cannot be decoded, and the engine's output starts at that keyframe too.
                    skipped += 1
                    continue
                if packet.pts is None:
                    raise InputError(f"{src_p}: video packet without timestamp; cannot cut on keyframes")
                if first_pts is not None and packet.pts < first_pts:
                    continue  # shown before the first keyframe: refers to frames the recording lacks
                if packet.dts is not None and last_dts is not None and packet.dts <= last_dts:
                    # No container stores it; the CLI, which re-times such frames, can still take it.
                    raise InputError(
                        f"{src_p}: video timestamps out of order at {float(packet.dts * tb):.3f} s; cannot cut "
                        "on keyframes (limelight anonymize can process it on one machine)"
                    )
                last_dts = packet.dts if packet.dts is not None else last_dts
                if writer is None or (packet.is_keyframe and (packet.pts - start_pts) * tb >= target):
                    if writer is not None:
                        suffix = writer.path.suffix
                        done = _finish(writer, segments, total, frames, start_pts, tb, preroll)
                        writer = None  # closed: nothing of it to abort should the next step fail
                        if on_segment is not None:
                            on_segment(done)
                        total += frames
                        writer = _SegmentWriter(video, folder / f"{len(segments):05d}{suffix}")
                    else:
                        writer = _first_writer(video, folder, src_p.suffix)
                        first_pts = packet.pts
                    # An open GOP's keyframe: the B-frames after it are shown before it and predicted
                    # from the previous GOP too, which goes first, to be decoded and not kept.
                    preroll = len(gop) if index not in clean else 0
                    for copy in gop[:preroll]:
                        writer.mux(copy)
                    start_pts, frames = packet.pts, 0
                if open_gops:
                    if packet.is_keyframe:
                        gop = []
                    gop.append(_copy(packet))
                start_pts = min(start_pts, packet.pts)
                writer.mux(packet)
                frames += 1
            if writer is None:
                raise InputError(f"{src_p}: no keyframe in its {skipped} video packets" if skipped else f"{src_p}: no video packets")
            done = _finish(writer, segments, total, frames, start_pts, tb, preroll)
            writer = None
            if on_segment is not None:
                on_segment(done)
    except av.FFmpegError as error:
        if writer is not None:
            writer.abort()
        raise InputError(f"{src_p}: corrupt or truncated ({error_reason(error)})") from error
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return segments


def _keyframes(container: av.container.InputContainer, video: av.video.stream.VideoStream) -> tuple[set[int], set[int]]:
    """(all, clean) keyframes of the video, as indices among its non-empty packets in decode order.

    A clean keyframe is one no later packet of its GOP is shown before. An open GOP's keyframe
    (MPEG-2 of DVDs, broadcast and XDCAM; x264's --open-gop) is followed by B-frames shown before it
    that are predicted from the previous GOP too: a segment starting there needs that GOP first."""
    keyframes: set[int] = set()
    clean: set[int] = set()
    key_index: int | None = None
    key_pts: int | None = None
    try:
        for index, packet in enumerate(p for p in demux(container, video) if p.size):
            if packet.is_keyframe:
                keyframes.add(index)
                if key_index is not None:
                    clean.add(key_index)
                key_index, key_pts = (index, packet.pts) if packet.pts is not None else (None, None)
            elif key_index is not None and (packet.pts is None or packet.pts < key_pts):
                key_index = None  # a leading picture: this keyframe is no clean cut
    except av.FFmpegError as error:
        raise InputError(f"{container.name}: corrupt or truncated ({error_reason(error)})") from error
    if key_index is not None:
        clean.add(key_index)
    return keyframes, clean


def _copy(packet: av.Packet) -> av.Packet:
    """A packet of its own with `packet`'s bytes and timing (muxing empties the one it writes)."""
    copy = av.Packet(bytes(packet))
    copy.pts, copy.dts, copy.time_base, copy.duration = packet.pts, packet.dts, packet.time_base, packet.duration
    copy.is_keyframe = packet.is_keyframe
    return copy


def _finish(writer: _SegmentWriter, segments: list[Segment], start_frame: int, frames: int, start_pts: int, tb: Fraction,
            preroll: int) -> Segment:
    """Close `writer`'s file and append its segment to `segments`."""
    writer.close()
    skip_before = writer.stamp(start_pts, tb) if preroll else None
    segments.append(Segment(len(segments), writer.path, start_frame, frames, start_pts, float(start_pts * tb), preroll, skip_before))
    return segments[-1]


def _dts_seconds(packet: av.Packet) -> Fraction:
    stamp = packet.dts if packet.dts is not None else packet.pts
    return stamp * packet.time_base


def _original_pts(path: Path, on_new_stream: Callable[[], None] | None = None) -> tuple[array, Fraction]:
    """Presentation timestamps of the original's video frames from its first keyframe on, those
    shown before it left out (what `split` cuts), sorted (demux only).

    A container of its own: seeking back to 0 afterwards may land after the first audio packets.
    """
    with open_media(path) as container:
        stream = first_video_stream(container)
        if stream is None:
            raise InputError(f"{path}: no video stream")
        try:
            packets = (p for p in demux(container, stream, on_new_stream=on_new_stream) if p.size and p.pts is not None)
            first = next((p.pts for p in packets if p.is_keyframe), None)
            stamps = [] if first is None else sorted([first, *(p.pts for p in packets if p.pts >= first)])
        except av.FFmpegError as error:
            raise InputError(f"{path}: corrupt or truncated ({error_reason(error)})") from error
        return array("q", stamps), stream.time_base


class _SegmentPackets:
    """Video packets of the processed segments, in order, restored to the original's timestamps.

    An MP4 written by the engine stores a late start (an edit list) in a 1/1000 s movie time
    scale, so a segment starting at 7.8924 s may come back a few ticks early; all its packets are
    shifted by the same amount. The shift back to the original frame's pts is applied when it is
    below `_MAX_SHIFT`; anything else means the segments do not belong to this original, and so
    does a segment whose frames do not have exactly the original's timestamps.
    """

    def __init__(self, paths: Iterable[Path], reference: av.video.stream.VideoStream, original: array, original_tb: Fraction) -> None:
        self.paths, self.reference = paths, reference
        self.original, self.original_tb = original, original_tb
        self.frames = 0

    def __iter__(self) -> Iterator[av.Packet]:
        last_dts: Fraction | None = None
        for path in self.paths:
            try:
                container = av.open(str(path))
            except (av.FFmpegError, OSError) as error:
                raise InputError(f"{path}: not a readable segment ({error_reason(error)})") from error
            with container:
                stream = self._checked_stream(container, path)
                tb = stream.time_base
                shift: int | None = None
                seen: list[int] = []
                try:
                    for packet in demux(container, stream):
                        if not packet.size:
                            continue
                        if shift is None:
                            shift = self._shift(stream, packet, path)
                        packet.pts += shift
                        if packet.dts is not None:
                            packet.dts += shift
                        dts = _dts_seconds(packet)
                        if last_dts is not None and dts <= last_dts:
                            raise OutputError(f"{path}: segment overlaps the previous one (dts {float(dts):.6f} s); cannot join")
                        last_dts = dts
                        seen.append(packet.pts)
                        yield packet
                except av.FFmpegError as error:
                    raise InputError(f"{path}: corrupt segment ({error_reason(error)})") from error
                self._check_frames(seen, tb, path)
        if self.frames != len(self.original):
            raise OutputError(f"segments hold {self.frames} frames, the original {len(self.original)}; cannot join")

    def _checked_stream(self, container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
        stream = first_video_stream(container)
        if stream is None:
            raise InputError(f"{path}: segment has no video stream")
        theirs, ours = stream.codec_context, self.reference.codec_context
        if (theirs.name, theirs.width, theirs.height, theirs.extradata) != (ours.name, ours.width, ours.height, ours.extradata):
            raise OutputError(f"{path}: segment was encoded with other settings than the first one; cannot join")
        return stream

    def _shift(self, stream: av.video.stream.VideoStream, first: av.Packet, path: Path) -> int:
        if self.frames >= len(self.original):
            raise OutputError(f"{path}: more frames in the segments than in the original; cannot join")
        tb = stream.time_base
        start = stream.start_time if stream.start_time is not None else first.pts
        expected = self.original[self.frames] * self.original_tb
        shift = round((expected - start * tb) / tb)
        if abs(shift * tb) > _MAX_SHIFT:
            raise OutputError(
                f"{path}: segment starts at {float(start * tb):.6f} s where the original's frame "
                f"{self.frames} is at {float(expected):.6f} s; cannot join"
            )
        return shift

    def _check_frames(self, seen: list[int], tb: Fraction, path: Path) -> None:
        wanted = self.original[self.frames : self.frames + len(seen)]
        if [p * tb for p in sorted(seen)] != [p * self.original_tb for p in wanted]:
            raise OutputError(f"{path}: segment frames do not have the original's timestamps; cannot join")
        self.frames += len(seen)


def _audio_packets(container: av.container.InputContainer, path: Path) -> Iterator[av.Packet]:
    audios = audio_streams(container)
    if not audios:
        return

    try:
        for packet in demux(container, *audios):  # a stream starting mid-file: counted by `_original_pts`
            if packet.size:
                yield packet
    except av.FFmpegError as error:
        raise InputError(f"{path}: corrupt or truncated audio ({error_reason(error)})") from error


def join(segment_paths: Iterable[str | os.PathLike[str]], original: str | os.PathLike[str], dst: str | os.PathLike[str]) -> JoinStats:
    """Concatenate the processed video segments and the original's audio into `dst`.

    `segment_paths`: the processed segments in order, each holding one video stream whose
    frames are the original's frames of that piece with their timestamps (as `split` + the
    engine leave them). Their packets are copied as they are, restored to the original's exact
    pts (see `_SegmentPackets`); together they must hold every frame of the original with its
    timestamp, else OutputError. The packets of every audio stream of `original` are copied
    bit-exact; video and audio are interleaved by time. Container metadata comes from
    `original`. `dst` is written under a temporary name and renamed when complete. Raises
    InputError (unreadable segment or original), OutputError (cannot write, or segments that do
    not fit the original), ValueError (no segments).

    `segment_paths` is read lazily, one segment after the other, each read to its end before the
    next is asked for (the first one's file stays open to the end): a generator may fetch each
    segment just in time and delete the one before, so that joining needs room for one segment
    beside the original and the output, not for all of them.
    """
    pending = (Path(p) for p in segment_paths)
    first_path = next(pending, None)
    if first_path is None:
        raise ValueError("join needs at least one segment")
    original_p, dst_p = Path(original), Path(dst)
    _check_output(dst_p)
    probe(original_p)  # rejects missing, empty, truncated, non-video originals with an InputError
    damage = DecodeDamage()  # what a damaged original's audio loses

    def late_stream() -> None:
        damage.late_streams += 1

    stamps, stamps_tb = _original_pts(original_p, on_new_stream=late_stream)
    with open_media(original_p) as source, av.open(str(first_path)) as first:
        dropped = dropped_streams(source)
        template = first_video_stream(first)
        if template is None:
            raise InputError(f"{first_path}: segment has no video stream")
        tmp = temporary_path(dst_p)
        try:
            options = exact_start_options(dst_p, first_video_stream(source), audio_streams(source))
            out = av.open(str(tmp), mode="w", options=options)
        except (av.FFmpegError, OSError, ValueError) as error:
            raise OutputError(f"{dst_p}: cannot create output ({error_reason(error)})") from error
        try:
            video, audio = _output_streams(out, source, template)
            segments = _SegmentPackets(itertools.chain([first_path], pending), template, stamps, stamps_tb)
            audio_packets = 0
            for packet in heapq.merge(segments, _audio_packets(source, original_p), key=_dts_seconds):
                if packet.stream.type == "video":
                    packet.stream = video
                    out.mux(packet)
                    continue
                packet.stream = audio[packet.stream.index]
                if mux_copied_audio(out, packet):
                    audio_packets += 1
                else:
                    damage.audio_left_out += 1  # malformed (a damaged original): left out, as the engine does
            check_audio_damage(original_p, damage.audio_left_out, audio_packets)
            out.close()
            os.replace(tmp, dst_p)
        except (av.FFmpegError, OSError) as error:
            _discard(out, tmp)
            raise OutputError(f"{dst_p}: cannot write ({error_reason(error)})") from error
        except BaseException:
            _discard(out, tmp)
            raise
    return JoinStats(dst_p, segments.frames, audio_packets, dropped, damage)


def _output_streams(out: av.container.OutputContainer, source: av.container.InputContainer, template: av.video.stream.VideoStream):
    """The joined file's streams: video like the processed segments, audio copies of the original's."""
    copy_container_tags(out, source)
    video = out.add_stream_from_template(template)
    video.time_base = template.time_base
    # The original's frame rate, not the one the segments' H.264 states (1 / time base: 60000 fps for
    # a DV's 1/60000), which the MP4 muxer's timecode track (DV's timecode tag) refuses at the trailer.
    rate = frame_rate(first_video_stream(source))
    if rate:
        video.codec_context.framerate = rate
    video.metadata.update(published_tags(template.metadata))
    video.disposition = template.disposition
    audio = {}
    for stream in audio_streams(source):
        copy = out.add_stream_from_template(stream)
        copy.time_base = stream.time_base
        copy.metadata.update(published_tags(stream.metadata))
        copy.disposition = stream.disposition
        audio[stream.index] = copy
    return video, audio


def _discard(out: av.container.OutputContainer, tmp: Path) -> None:
    try:
        out.close()
    except (av.FFmpegError, OSError, ValueError):
        # The file is deleted next; a failing trailer write must not mask the first error.
        pass
    tmp.unlink(missing_ok=True)


def merge_reports(parts: Sequence[tuple[int, dict[str, Any]]], *, input_name: str, output_name: str,
                  dropped_streams: Sequence[str] = (), damage: DecodeDamage | None = None) -> dict[str, Any]:
    """One video report from per-segment ones (`FileReport.as_dict()` of each segment).

    `parts`: (start_frame, report) in segment order. Frame numbers become whole-video ones
    (start_frame added), tracks are renumbered in order and say which segments they come from:
    the pieces of a track the join decided as one across cuts (the same `joined` id) are one
    track. Counts are summed.
    `dropped_streams`: the original's streams the joined output leaves out, `damage` what of its
    audio a damaged original lost (`JoinStats`); with the segments' undecodable frames it makes the
    report's `damage`.
    """
    tracks: list[dict[str, Any]] = []
    joined: dict[int, dict[str, Any]] = {}
    frames, seconds = 0, 0.0
    for segment, (start_frame, part) in enumerate(parts):
        frames += int(part["frames"])
        seconds += float(part["seconds"])
        for track in part["tracks"]:
            moved = dict(track)
            for key in ("first_frame", "last_frame"):
                if moved.get(key) is not None:
                    moved[key] = moved[key] + start_frame
            moved["boxes"] = [[row[0] + start_frame, *row[1:]] for row in track["boxes"]]
            whole = joined.get(track["joined"]) if track.get("joined") is not None else None
            if whole is not None:  # the next piece of a track that crosses a cut
                whole["segments"].append(segment)
                whole["boxes"].extend(moved["boxes"])
                whole["last_frame"] = moved["last_frame"]
                for key in ("frames", "frames_blurred"):
                    whole[key] = whole.get(key, 0) + moved.get(key, 0)
                whole["shown_as"] = dict(Counter(whole.get("shown_as", {})) + Counter(moved.get("shown_as", {})))
                continue
            moved["track"] = len(tracks)
            moved["segments"] = [segment]
            if track.get("joined") is not None:
                joined[track["joined"]] = moved
            tracks.append(moved)
    kept = sum(1 for t in tracks if t["decision"] != "blurred")
    shown = sum((Counter(track.get("shown_as", {})) for track in tracks), Counter())
    damaged = [part["damage"] for _, part in parts if part.get("damage")]
    joined = damage or DecodeDamage()
    damage = DecodeDamage(
        video_packets=sum(d["video_packets"] for d in damaged),
        repeated=[t for d in damaged for t in d["repeated_frames_at"]],
        audio_left_out=joined.audio_left_out,
        late_streams=joined.late_streams,
    )
    return {
        "input": input_name,
        "output": output_name,
        "kind": "video",
        "frames": frames,
        "seconds": round(seconds, 3),
        "fps": round(frames / seconds, 2) if seconds > 0 else 0.0,
        "faces": len(tracks),
        "kept": kept,
        "blurred": len(tracks) - kept,
        "shown": dict(sorted(shown.items())),
        "segments": len(parts),
        "rotation": int(parts[0][1].get("rotation", 0)) if parts else 0,
        "pixel_aspect": parts[0][1].get("pixel_aspect", "1:1") if parts else "1:1",
        "dropped_streams": list(dropped_streams),
        "damage": damage.as_dict() if damage else None,
        # Each segment was analyzed (tracks over the segment, decided from their samples) then rendered.
        "analysis": {key: sum(int((part.get("analysis") or {}).get(key, 0)) for _, part in parts)
                     for key in ("tracker_tracks", "linked_tracks", "tracks", "samples")},
        "render": _merged_render([part.get("render") for _, part in parts]),
        "tracks": tracks,
    }


def _merged_render(renders: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The segments' `render` as one: smart with the GOPs, frames and seconds summed when every
    segment was smart-rendered, else the first full render's reason."""
    if not renders or any(r is None for r in renders):
        return None
    if all(r["mode"] == "smart" for r in renders):
        keys = ("gops_copied", "gops_encoded", "frames_copied", "frames_encoded", "seconds_copied", "seconds_encoded")
        return {"mode": "smart", "reason": None, **{k: round(sum(r[k] for r in renders), 3) if k.startswith("seconds")
                                                   else sum(r[k] for r in renders) for k in keys}}
    return {"mode": "full", "reason": next(r["reason"] for r in renders if r["mode"] == "full")}
