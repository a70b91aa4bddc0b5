"""Behaviour of limelight.segments: keyframe split and join keep every frame's timing and the audio.

The real clip (hamilton, video starting 0.852 s after the audio, 29.97 fps) is the trap the split
must survive; synthetic clips written with PyAV add B-frames, a late start, two audio streams.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from limelight.errors import InputError, OutputError
from limelight.segments import join, merge_reports, split
from limelight.video import EncodeOptions, probe, transcode
from tests.media import (
    assert_same_pictures,
    audio_packets,
    browser_webm,
    camera_file,
    cut_mid_gop,
    damaged_copy,
    divx_avi,
    dv_camcorder,
    flv_with_late_sound,
    frame_times,
    live_ts_with_damaged_audio,
    open_gop_mpeg2,
    size_switching_clip,
    ts_with_late_sound,
    ts_with_silent_sound,
    webcam_flv,
)

HAMILTON = "hamilton_white_house_short_clip.mp4"


# ---------------------------------------------------------------- helpers


def write_clip(path: Path, *, frames: int = 90, rate: Fraction = Fraction(30000, 1001), start: int = 0,
               gop: int = 12, audio_streams: int = 2, tags: dict[str, str] | None = None) -> Path:
    """H.264 (B-frames, a keyframe every `gop` frames) + AAC streams; video starts `start` ticks late."""
    time_base = 1 / rate
    with av.open(str(path), "w") as out:
        out.metadata.update(tags or {})
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = 96, 64, "yuv420p"
        video.time_base = video.codec_context.time_base = time_base
        video.options = {"preset": "veryfast", "g": str(gop), "keyint_min": str(gop), "bf": "2", "sc_threshold": "0"}
        sounds = []
        for n in range(audio_streams):
            sound = out.add_stream("aac", rate=48000)
            sound.layout = "mono"
            sounds.append(sound)
        for i in range(frames):
            rgb = np.zeros((64, 96, 3), np.uint8)
            rgb[..., 0] = (np.arange(96) * 2 + 5 * i) % 256
            rgb[..., 1] = (i * 7) % 256
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = start + i, time_base
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        seconds = float((start + frames) * time_base)
        t = np.arange(1024, dtype=np.float32) / 48000
        for n, sound in enumerate(sounds):
            for k in range(math.ceil(seconds * 48000 / 1024)):
                tone = 0.2 * np.sin(2 * np.pi * (440 + 220 * n) * (t + k * 1024 / 48000))
                chunk = av.AudioFrame.from_ndarray(tone[None, :], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 48000, k * 1024
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return path


def start_times(path: Path) -> dict[str, Fraction]:
    """Start of the video and of the first audio stream (s): their difference is the A/V offset."""
    with av.open(str(path)) as c:
        return {s.type: s.start_time * s.time_base for s in (c.streams.video[0], c.streams.audio[0])}


def encode_segments(segments, folder: Path, size: tuple[int, int] | None = None) -> list[Path]:
    """Each segment through the engine's encoder (identity transform), as the Lambda does: at the
    whole video's frame rate (the Map item's `picture`) and from its `skip_before` (a segment with
    a pre-roll processes its own frames only)."""
    out = []
    rate = probe(segments[0].path).fps if segments else None  # the first segment holds whole GOPs
    for segment in segments:
        dst = folder / f"encoded-{segment.index:05d}.mp4"
        options = EncodeOptions(preset="ultrafast", size=size, rate=rate, start_pts=segment.skip_before, whole_file=False)
        transcode(segment.path, dst, options=options)
        out.append(dst)
    return out


def assert_same_timing_and_audio(result: Path, original: Path) -> None:
    assert frame_times(result) == frame_times(original)
    assert audio_packets(result) == audio_packets(original)
    assert start_times(result) == start_times(original)


# ---------------------------------------------------------------- real clip


@pytest.fixture(scope="module")
def hamilton_split(clip, tmp_path_factory):
    src = clip(HAMILTON)
    folder = tmp_path_factory.mktemp("hamilton-segments")
    return src, split(src, folder, 2.0), folder


def test_split_cuts_hamilton_on_its_keyframes_keeping_original_timestamps(hamilton_split):
    src, segments, _ = hamilton_split
    with av.open(str(src)) as c:
        stream = c.streams.video[0]
        keyframes = [p.pts for p in c.demux(stream) if p.size and p.is_keyframe]
    # Keyframes at 0.852, 2.854, 4.856, 6.291, 7.892, 9.894 s; cuts once 2 s have passed.
    assert [s.start_pts for s in segments] == [keyframes[i] for i in (0, 1, 2, 4, 5)]
    assert segments[0].start_time == pytest.approx(0.852, abs=1e-3)
    assert [s.start_frame for s in segments] == [0, *np.cumsum([s.frames for s in segments])[:-1]]
    assert sum(s.frames for s in segments) == 275
    for segment in segments:
        with av.open(str(segment.path)) as c:
            first = next(p for p in c.demux(c.streams.video[0]) if p.size)
            assert first.is_keyframe
            assert not c.streams.audio
    assert sum((frame_times(s.path) for s in segments), []) == frame_times(src)


def test_split_and_join_of_hamilton_gives_the_original_frames_timestamps_and_audio(hamilton_split, tmp_path):
    src, segments, _ = hamilton_split
    stats = join([s.path for s in segments], src, tmp_path / "joined.mp4")
    assert (stats.frames, stats.audio_packets) == (275, 431)
    assert_same_timing_and_audio(tmp_path / "joined.mp4", src)
    assert start_times(tmp_path / "joined.mp4")["video"] == Fraction(10214, 11988)


def test_join_of_engine_encoded_hamilton_segments_restores_exact_timestamps(hamilton_split, tmp_path):
    # An engine-written MP4 stores a late start in 1/1000 s: segment 4 (7.8924 s) reads back 5
    # ticks early unless join restores it.
    src, segments, _ = hamilton_split
    encoded = encode_segments(segments, tmp_path)
    join(encoded, src, tmp_path / "joined.mp4")
    assert_same_timing_and_audio(tmp_path / "joined.mp4", src)


# ---------------------------------------------------------------- synthetic clips


def test_split_and_join_of_b_frame_clip_with_late_start_and_two_audio_streams(tmp_path):
    src = write_clip(tmp_path / "synthetic.mp4", start=25)
    folder = tmp_path / "parts"
    folder.mkdir()
    segments = split(src, folder, 0.5)
    assert [s.frames for s in segments] == [24, 24, 24, 18]  # cuts on the keyframe every 12 frames
    assert segments[0].start_time == pytest.approx(float(frame_times(src)[0]), abs=1e-9)
    assert segments[0].start_time > 0.8
    encoded = encode_segments(segments, tmp_path)
    stats = join(encoded, src, tmp_path / "joined.mp4")
    assert stats.frames == 90
    assert_same_timing_and_audio(tmp_path / "joined.mp4", src)


def test_split_hands_over_each_segment_complete_before_cutting_the_next_and_lets_it_go(tmp_path):
    # GIVEN a clip of 4 segments, and a callback that sees what is on disk, checks the segment's
    # file is whole and deletes it (the workflow uploads it, then frees the space)
    src = write_clip(tmp_path / "synthetic.mp4", start=25)
    folder = tmp_path / "parts"
    folder.mkdir()
    handed = []

    def take(segment):
        handed.append(([p.name for p in folder.iterdir()], segment.index, len(frame_times(segment.path))))
        segment.path.unlink()

    # WHEN it is split
    segments = split(src, folder, 0.5, on_segment=take)
    # THEN each segment was handed over alone on disk, complete, in order, and the list is unchanged
    assert handed == [([f"{i:05d}.mp4"], i, frames) for i, frames in enumerate([24, 24, 24, 18])]
    assert [s.frames for s in segments] == [24, 24, 24, 18]
    assert list(folder.iterdir()) == []


def test_join_reads_the_segments_one_at_a_time_so_each_may_be_fetched_late_and_dropped(tmp_path):
    # GIVEN the encoded segments of a clip, handed to join by a generator that copies each into
    # place when asked and deletes the one before (the reassembly fetches them from S3 so)
    src = write_clip(tmp_path / "synthetic.mp4", start=25)
    (tmp_path / "parts").mkdir()
    encoded = encode_segments(split(src, tmp_path / "parts", 0.5), tmp_path)
    here = tmp_path / "fetched"
    here.mkdir()
    on_disk = []

    def fetched():
        previous = None
        for i, path in enumerate(encoded):
            part = here / f"{i:05d}.mp4"
            part.write_bytes(path.read_bytes())
            if previous is not None:
                previous.unlink()
            on_disk.append(sorted(p.name for p in here.iterdir()))
            previous = part
            yield part

    # WHEN they are joined
    stats = join(fetched(), src, tmp_path / "joined.mp4")
    # THEN the result is whole, and there was never more than one segment on disk
    assert stats.frames == 90
    assert_same_timing_and_audio(tmp_path / "joined.mp4", src)
    assert on_disk == [[f"{i:05d}.mp4"] for i in range(len(encoded))]
    assert len({n for n, *_ in audio_packets(tmp_path / "joined.mp4")}) == 2


def test_the_joined_video_keeps_the_title_but_not_the_recording_location(tmp_path):
    src = write_clip(tmp_path / "phone.mp4", frames=30, audio_streams=1, tags={"title": "street", "location": "+48.8584+002.2945/"})
    folder = tmp_path / "parts"
    folder.mkdir()
    join(encode_segments(split(src, folder, 0.3), tmp_path), src, tmp_path / "joined.mp4")
    with av.open(str(tmp_path / "joined.mp4")) as c:
        assert c.metadata["title"] == "street"
        assert not [k for k in c.metadata if "location" in k.lower()]


def test_segments_of_a_video_changing_size_are_encoded_at_its_size_and_join(tmp_path):
    # GIVEN an MP4 whose picture size changes at its second keyframe (128 x 72, then 96 x 54)
    src = size_switching_clip(tmp_path / "switch.mp4", frames=30)
    folder = tmp_path / "parts"
    folder.mkdir()
    segments = split(src, folder, 1.0)
    assert [s.frames for s in segments] == [30, 30]
    # WHEN each segment is encoded at the whole video's picture size (the Map item's `picture`)
    info = probe(src)
    encoded = encode_segments(segments, tmp_path, size=(info.coded_width, info.coded_height))
    stats = join(encoded, src, tmp_path / "joined.mp4")
    # THEN the joined stream decodes to every frame at that size, each part's picture kept (each
    # segment encoded at its own size, join refused them: "encoded with other settings than the first")
    assert stats.frames == 60
    with av.open(str(tmp_path / "joined.mp4")) as c:
        pictures = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(pictures) == 60 and {p.shape for p in pictures} == {(72, 128, 3)}
    assert abs(pictures[5].mean() - 60) < 3 and abs(pictures[45].mean() - 160) < 3
    assert frame_times(tmp_path / "joined.mp4") == frame_times(src)


@pytest.mark.parametrize("make, name, container", [
    (dv_camcorder, "tape01.dv", ".mov"),  # DV: QuickTime holds it, MP4 does not
    (browser_webm, "call.webm", ".mkv"),  # VP8: Matroska only
    # Sorenson Spark fits no MP4 / MOV / MKV: the segments stay FLV; the FLV has no keyframe index
    # and cannot be seeked (probe failed: "Operation not permitted")
    (webcam_flv, "webcam.flv", ".flv"),
    # MPEG-4 Part 2 with B-frames shown before their I-frame, in AVI's 1/25 s time base that MP4
    # stores as 1/12800: a pre-roll's end was compared in the wrong time base and the join failed
    # ("segment starts at 0.52 s where the original's frame 13 is at 0.56 s")
    (divx_avi, "divx.avi", ".mp4"),
])
def test_camera_web_and_legacy_videos_split_and_join_with_every_frame_and_their_sound(tmp_path, make, name, container):
    # GIVEN a camcorder's DV, a browser's VP8, an old webcam's FLV or a DivX AVI (split failed on the
    # first three: "'mp4' format does not support 'dvvideo' codec"; the workflow took none of them)
    src = make(tmp_path / name)
    folder = tmp_path / "parts"
    folder.mkdir()
    # WHEN it is cut
    segments = split(src, folder, 0.2)
    # THEN every segment is in the first container that holds its video ...
    assert len(segments) >= 2 and {s.path.suffix for s in segments} == {container}
    assert sorted(p.name for p in folder.iterdir()) == [f"{s.index:05d}{container}" for s in segments]
    # ... and the engine-encoded pieces join into the input's frames, times, pictures and sound
    # (compared as one byte string: the MP4 muxer stores PCM in chunks of its own)
    stats = join(encode_segments(segments, tmp_path), src, tmp_path / "joined.mp4")
    assert stats.frames == len(frame_times(src)) and frame_times(tmp_path / "joined.mp4") == frame_times(src)
    sound = lambda path: (b"".join(p[1] for p in audio_packets(path)), audio_packets(path)[0][2])  # noqa: E731
    assert sound(tmp_path / "joined.mp4") == sound(src) and len(sound(src)[0]) > 1000
    assert_same_pictures(tmp_path / "joined.mp4", src, max_mean_diff=3.0)


def test_a_recording_cut_mid_gop_is_split_and_joined_from_its_first_keyframe(tmp_path):
    # GIVEN a TS recording that starts 5 frames into a GOP (a broadcast recorder starts anywhere)
    src = cut_mid_gop(write_clip(tmp_path / "whole.ts", frames=60, audio_streams=1), tmp_path / "recording.ts", 5)
    decoded = frame_times(src)  # what the engine anonymizes: the frames from the first keyframe
    assert len(decoded) == 48
    folder = tmp_path / "parts"
    folder.mkdir()
    # WHEN it is split (it failed: "video does not start with a keyframe", so the workflow refused it)
    segments = split(src, folder, 0.3)
    # THEN the segments start at its first keyframe and hold exactly the frames the decoder gives
    assert [t for s in segments for t in frame_times(s.path)] == decoded
    # ... and the encoded pieces join with those frames' times and every audio packet of the recording
    stats = join(encode_segments(segments, tmp_path), src, tmp_path / "joined.mp4")
    assert stats.frames == 48
    assert frame_times(tmp_path / "joined.mp4") == decoded
    # (AAC in TS carries a 7-byte ADTS header per packet, which MP4 stores once, in its header)
    joined, recorded = audio_packets(tmp_path / "joined.mp4"), audio_packets(src)
    assert [p[1] for p in joined] == [p[1][7:] for p in recorded] and len(recorded) > 40
    # the audio's start as near as its 48 kHz time scale in MP4 allows (0.0454 s in the TS's 90 kHz)
    assert abs(joined[0][2] - recorded[0][2]) < Fraction(1, 48000) and frame_times(src)[0] - recorded[0][2] > 0.4


def test_a_segment_on_an_open_gop_decodes_the_previous_gop_first_and_every_frame_joins(tmp_path):
    # GIVEN MPEG-2 with open GOPs: each I-frame is followed by B-frames shown before it that are
    # predicted from the previous GOP too
    src = open_gop_mpeg2(tmp_path / "dvd.mpg")
    with av.open(str(src)) as c:
        packets = [(p.pts, p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size]
    second_key = [i for i, (_, key) in enumerate(packets) if key][1]
    assert packets[second_key + 1][0] < packets[second_key][0]  # a leading B-frame
    folder = tmp_path / "parts"
    folder.mkdir()
    # WHEN it is split into 0.2 s segments (cut at every I-frame, each later segment lost its two
    # leading B-frames and the join failed: "segment starts at 1.020000 s where the original's frame
    # 10 is at 0.940000 s")
    segments = split(src, folder, 0.2)
    # THEN each later segment starts with the previous GOP as its pre-roll and holds its own frames
    # from its leading B-frames on ...
    # (in decode order: I0 P3 B1 B2 ... | I12 B10 B11 P15 ...: the first GOP is 10 packets, the others 12)
    assert [s.preroll for s in segments] == [0, 10, 12, 12, 12, 12]
    assert [s.frames for s in segments] == [10, 12, 12, 12, 12, 2]
    assert segments[1].start_time == pytest.approx(frame_times(src)[10])
    # ... and encoded from start_pts, the pieces join into every frame at its time and picture
    stats = join(encode_segments(segments, tmp_path), src, tmp_path / "joined.mp4")
    assert stats.frames == 60 and frame_times(tmp_path / "joined.mp4") == frame_times(src)
    assert_same_pictures(tmp_path / "joined.mp4", src, max_mean_diff=2.0)


def test_a_recording_of_open_gops_cut_mid_gop_starts_at_its_first_whole_frame(tmp_path):
    # GIVEN a broadcast recording: open-GOP MPEG-2 in TS, cut 4 frames into its first GOP, so the
    # B-frames after its first I-frame refer to a GOP the recording lacks and decode to no picture
    src = cut_mid_gop(open_gop_mpeg2(tmp_path / "broadcast.ts"), tmp_path / "recording.ts", 4)
    decoded = frame_times(src)
    folder = tmp_path / "parts"
    folder.mkdir()
    # WHEN it is split and the encoded pieces joined
    segments = split(src, folder, 0.2)
    stats = join(encode_segments(segments, tmp_path), src, tmp_path / "joined.mp4")
    # THEN the segments and the result hold exactly the frames the decoder gives (the segments
    # counted the undecodable B-frames and the join refused the result)
    assert sum(s.frames for s in segments) == stats.frames == len(decoded)
    assert frame_times(tmp_path / "joined.mp4") == decoded


def test_split_with_target_longer_than_the_clip_gives_one_segment(tmp_path):
    src = write_clip(tmp_path / "synthetic.mp4", audio_streams=0)
    folder = tmp_path / "parts"
    folder.mkdir()
    segments = split(src, folder, 60)
    assert [(s.index, s.start_frame, s.frames) for s in segments] == [(0, 0, 90)]


def test_join_refuses_segments_that_miss_frames_and_leaves_no_output(tmp_path):
    src = write_clip(tmp_path / "synthetic.mp4", audio_streams=1)
    folder = tmp_path / "parts"
    folder.mkdir()
    segments = split(src, folder, 0.5)
    with pytest.raises(OutputError, match="cannot join"):
        join([segments[0].path, segments[2].path], src, tmp_path / "joined.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts", "synthetic.mp4"]


def test_split_names_video_timestamps_out_of_order_and_leaves_no_segment(tmp_path):
    # GIVEN an MPEG program stream whose last frames repeat timestamps (the PS muxer's guess for
    # MPEG-2's flushed B-frames: dts 203400 twice)
    src = camera_file(tmp_path / "disc.vob", "mpeg2video", (176, 144), 25, "yuv420p", 50, [], options={"g": "12", "bf": "2"})
    with av.open(str(src)) as c:
        dts = [p.dts for p in c.demux(c.streams.video[0]) if p.size]
    assert any(b <= a for a, b in zip(dts, dts[1:]))
    folder = tmp_path / "parts"
    folder.mkdir()
    # WHEN it is split, THEN the error names the input and the time (it failed writing a segment:
    # "cannot write (Invalid argument)", an OutputError the workflow did not report as a bad video)
    with pytest.raises(InputError, match=r"disc.vob: video timestamps out of order at 2\.260 s; cannot cut"):
        split(src, folder, 0.5)


def test_split_rejects_a_file_that_is_not_a_video(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("meeting notes, not a video\n")
    with pytest.raises(InputError, match="notes.mp4"):
        split(fake, tmp_path, 3)


def test_split_rejects_a_non_positive_target(tmp_path):
    with pytest.raises(ValueError, match="target_seconds"):
        split(tmp_path / "any.mp4", tmp_path, 0)


def test_merge_reports_counts_a_track_joined_across_a_cut_once():
    # GIVEN a kept face whose track crosses the cut at frame 10 (the join gave both pieces id 4),
    # and a stranger in the second segment
    def part(frames, tracks):
        return {"frames": frames, "seconds": 1.0, "tracks": tracks}

    before = {"track": 3, "first_frame": 8, "last_frame": 9, "frames": 2, "decision": "kept as ada", "joined": 4,
              "boxes": [[8, 1, 2, 3, 4, 0], [9, 1, 2, 3, 4, 0]], "shown_as": {"ada": 2}, "frames_blurred": 0}
    after = {**before, "track": 0, "first_frame": 0, "last_frame": 2, "frames": 3,
             "boxes": [[0, 1, 2, 3, 4, 0], [1, 1, 2, 3, 4, 0], [2, 1, 2, 3, 4, 0]], "shown_as": {"ada": 3}}
    stranger = {"track": 1, "first_frame": 1, "last_frame": 1, "frames": 1, "decision": "blurred", "frames_blurred": 1,
                "boxes": [[1, 5, 6, 7, 8, 1]], "shown_as": {}}
    merged = merge_reports([(0, part(10, [before])), (10, part(5, [after, stranger]))], input_name="a", output_name="b")
    # THEN the face is one track over both segments, its frames and shown frames summed
    assert (merged["faces"], merged["kept"], merged["blurred"]) == (2, 1, 1)
    face = merged["tracks"][0]
    assert (face["segments"], face["first_frame"], face["last_frame"], face["frames"]) == ([0, 1], 8, 12, 5)
    assert [row[0] for row in face["boxes"]] == [8, 9, 10, 11, 12]
    assert face["shown_as"] == {"ada": 5} and merged["shown"] == {"ada": 5}
    assert (merged["tracks"][1]["track"], merged["tracks"][1]["segments"]) == (1, [1])


def test_merge_reports_numbers_frames_and_tracks_for_the_whole_video():
    def part(frames, tracks):
        return {"frames": frames, "seconds": 1.0, "tracks": tracks}

    kept = {"track": 0, "first_frame": 0, "last_frame": 1, "frames": 2, "decision": "kept as ada",
            "boxes": [[0, 1, 2, 3, 4, 0], [1, 1, 2, 3, 4, 0]], "shown_as": {"ada": 2}}
    blurred = {"track": 0, "first_frame": 5, "last_frame": 5, "frames": 1, "decision": "blurred",
               "boxes": [[5, 1, 2, 3, 4, 1]], "shown_as": {}}
    later = {**kept, "boxes": [[0, 1, 2, 3, 4, 1], [1, 1, 2, 3, 4, 0]], "shown_as": {"ada": 1}}
    merged = merge_reports([(0, part(10, [kept])), (10, part(8, [blurred, later]))], input_name="s3://in/a.mp4", output_name="s3://out/a.mp4")
    assert (merged["frames"], merged["faces"], merged["kept"], merged["blurred"], merged["segments"]) == (18, 3, 2, 1, 2)
    # each consented person's shown frames, summed over the segments' tracks
    assert merged["shown"] == {"ada": 3}
    assert [(t["track"], t["segments"], t["first_frame"]) for t in merged["tracks"]] == [(0, [0], 0), (1, [1], 15), (2, [1], 10)]
    assert merged["tracks"][1]["boxes"] == [[15, 1, 2, 3, 4, 1]]
    assert merged["fps"] == 9.0
    # the display rotation (segments keep the original's) tells how the boxes' frames are shown
    assert merged["rotation"] == 0
    turned = merge_reports([(0, {**part(10, [kept]), "rotation": -90, "pixel_aspect": "4:3"})], input_name="a", output_name="b")
    assert turned["rotation"] == -90 and turned["pixel_aspect"] == "4:3"
    assert merged["pixel_aspect"] == "1:1"
    # the original's streams the joined output leaves out are named, as the CLI's report does
    assert merged["dropped_streams"] == []
    assert merged["damage"] is None  # no segment met a damaged packet
    subtitled = merge_reports([(0, part(10, []))], input_name="a", output_name="b", dropped_streams=("subtitle #2 (srt, eng)",))
    assert subtitled["dropped_streams"] == ["subtitle #2 (srt, eng)"]


def test_a_video_with_damaged_packets_goes_through_split_and_join_whole(tmp_path, clip):
    # GIVEN the hamilton clip with two video packets damaged in place, in two of its segments
    src = tmp_path / "damaged.mp4"
    lost = damaged_copy(clip(HAMILTON), src, [100, 200])
    folder = tmp_path / "parts"
    folder.mkdir()
    segments = split(src, folder, 2.0)
    # WHEN each segment is anonymized (here: re-encoded) on its own, as in the workflow, and joined
    encoded = encode_segments(segments, tmp_path)
    stats = join(encoded, src, tmp_path / "joined.mp4")
    # THEN the result has every frame of the original with its timestamp, and its audio
    assert stats.frames == 275
    assert_same_timing_and_audio(tmp_path / "joined.mp4", clip(HAMILTON))
    # the segment reports' account of the damage adds up in the merged report
    parts = [(seg.start_frame, {"frames": seg.frames, "seconds": 1.0, "tracks": [],
                                "damage": transcode(seg.path, tmp_path / f"again-{seg.index}.mp4").damage.as_dict()})
             for seg in segments]
    merged = merge_reports(parts, input_name="a", output_name="b")
    assert merged["damage"]["video_packets"] == 2
    assert merged["damage"]["repeated_frames_at"] == pytest.approx([float(t) for t in lost])


def test_a_burst_of_damage_in_one_segment_and_a_segments_damaged_last_packet_are_stood_in_for(tmp_path, clip):
    # GIVEN the hamilton clip with 3 packets damaged in its 2-s segment from 4.856 s (more than 1 in 50
    # of that segment's, fewer than of the whole video's: the CLI takes the file) and the last packet
    # of its first segment damaged (a segment's end is not the video's: it is no truncated file)
    whole = clip(HAMILTON)
    src = tmp_path / "damaged.mp4"
    folder = tmp_path / "parts"
    folder.mkdir()
    first = split(whole, folder, 2.0)
    last_of_first = first[0].frames - 1
    damaged_copy(whole, src, [last_of_first, 150, 160, 170])
    segments = split(src, tmp_path / "parts", 2.0)
    # WHEN each segment is encoded as a part of the video (as the Lambda does) and the parts joined
    stats = join(encode_segments(segments, tmp_path), src, tmp_path / "joined.mp4")
    # THEN every frame of the original is there at its time, with its audio
    assert stats.frames == 275
    assert_same_timing_and_audio(tmp_path / "joined.mp4", whole)
    # and a segment on its own, as a whole file, is still judged on its own
    with pytest.raises(InputError, match=r"3 of 91 video packets cannot be decoded"):
        transcode(next(s.path for s in segments if s.start_frame <= 150 < s.start_frame + s.frames), tmp_path / "alone.mp4")


def test_join_leaves_out_a_malformed_audio_packet_of_the_original(tmp_path, clip):
    # GIVEN a live TS recording of the hamilton clip with one AAC packet's ADTS header lost (the
    # reassembly's MP4 muxer refused it: "cannot write"), and the same recording undamaged
    clean = live_ts_with_damaged_audio(clip(HAMILTON), tmp_path / "clean.ts", [])
    src = live_ts_with_damaged_audio(clip(HAMILTON), tmp_path / "live.ts", [40])
    folder = tmp_path / "parts"
    folder.mkdir()
    # WHEN it is split, its segments encoded and joined with its audio into MP4
    stats = join(encode_segments(split(src, folder, 2.0), tmp_path), src, tmp_path / "joined.mp4")
    # THEN every other audio packet is there, bit-exact, and every frame
    transcode(clean, tmp_path / "clean.mp4")
    expected = audio_packets(tmp_path / "clean.mp4")
    assert audio_packets(tmp_path / "joined.mp4") == expected[:40] + expected[41:]
    assert frame_times(tmp_path / "joined.mp4") == frame_times(tmp_path / "clean.mp4")
    assert (stats.frames, stats.audio_packets, stats.damage.audio_left_out) == (275, 430, 1)
    # ... and the job's report says so
    merged = merge_reports([(0, {"frames": 275, "seconds": 1.0, "tracks": []})], input_name="a", output_name="b",
                           damage=stats.damage)
    assert merged["damage"] == {"video_packets": 0, "repeated_frames_at": [], "audio_packets_left_out": 1,
                                "streams_starting_mid_file_left_out": 0, "timestamps_start_again_after": []}


@pytest.mark.parametrize("look_s", [120, 1], ids=["found", "beyond-the-look"])
def test_join_copies_the_late_sound_of_a_stream_recording_or_names_it(tmp_path, clip, monkeypatch, look_s):
    # GIVEN an FLV stream recording whose sound starts 6 s in (its header announcing video only),
    # read looking 120 s into a file (LimeLight's FLV look) or only 1 s
    import limelight.video as video_module

    monkeypatch.setattr(video_module, "_DEEP_PROBE_MICROSECONDS", look_s * 1_000_000)
    src = flv_with_late_sound(clip(HAMILTON), tmp_path / "stream.flv", 6000)
    folder = tmp_path / "parts"
    folder.mkdir()
    # WHEN split, encoded and joined (PyAV's demux failed on the stream it did not know)
    stats = join(encode_segments(split(src, folder, 2.0), tmp_path), src, tmp_path / "joined.mp4")
    # THEN every frame is there, and the sound is copied when found, else named in the job's report
    assert stats.frames == 275
    if look_s == 120:
        assert stats.audio_packets > 150 and not stats.damage
        return
    assert (stats.audio_packets, stats.damage.late_streams) == (0, 1)
    merged = merge_reports([(0, {"frames": 275, "seconds": 1.0, "tracks": []})], input_name="a", output_name="b",
                           damage=stats.damage)
    assert merged["damage"]["streams_starting_mid_file_left_out"] == 1


@pytest.mark.parametrize("make, sound", [(ts_with_late_sound, True), (ts_with_silent_sound, False)], ids=["late", "silent"])
def test_join_copies_a_sound_pid_that_starts_late_and_names_one_without_sound(tmp_path, clip, make, sound):
    # GIVEN a TS whose AAC PID carries sound only from 10 s on (FFmpeg's first look finds no sample
    # rate), or never (the reassembly's MP4 muxer refused both: "cannot write (Invalid argument)")
    src = make(clip(HAMILTON), tmp_path / "broadcast.ts")
    folder = tmp_path / "parts"
    folder.mkdir()
    # WHEN split, encoded and joined
    stats = join(encode_segments(split(src, folder, 2.0), tmp_path), src, tmp_path / "joined.mp4")
    # THEN every frame is there, the late sound is copied and the silent stream named as left out
    assert frame_times(tmp_path / "joined.mp4") == frame_times(src)
    assert (stats.audio_packets > 0) == sound
    assert stats.dropped_streams == (() if sound else ("audio #1 (aac, no sound found)",))
    if sound:
        assert len(audio_packets(tmp_path / "joined.mp4")) == len(audio_packets(src)) == stats.audio_packets


def test_join_keeps_the_originals_chapters(tmp_path):
    from tests.test_video import CHAPTERS, _with_chapters, chapters

    src = _with_chapters(tmp_path / "talk.mkv")
    folder = tmp_path / "parts"
    folder.mkdir()
    join(encode_segments(split(src, folder, 0.3), tmp_path), src, tmp_path / "joined.mp4")
    assert chapters(tmp_path / "joined.mp4") == CHAPTERS


def test_join_names_the_originals_streams_it_leaves_out(tmp_path):
    from tests.test_video import _with_subtitles

    # GIVEN a video with a subtitle track, split and encoded segment by segment
    src = _with_subtitles(tmp_path / "subs.mkv", tmp_path)
    folder = tmp_path / "parts"
    folder.mkdir()
    # WHEN the segments are joined with the original
    stats = join(encode_segments(split(src, folder, 1.0), tmp_path), src, tmp_path / "joined.mkv")
    # THEN the subtitle track is not in the output, and the join says so for the report
    assert stats.dropped_streams == ("subtitle #1 (srt, eng)",)
    with av.open(str(tmp_path / "joined.mkv")) as c:
        assert [s.type for s in c.streams] == ["video"]
