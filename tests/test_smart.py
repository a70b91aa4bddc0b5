"""Smart render: GOPs with nothing to redact are copied bit-exact, the others re-encoded, in one
stream that decodes without an error, with every timestamp and audio packet of the input."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import av.logging
import numpy as np
import pytest

from limelight.detector import Detector, default_model_path
from limelight.pipeline import AnonymizeOptions, Anonymizer
from limelight.plan import Plan, Region
from limelight.smart import AvcConfig, annexb_units, length_prefixed, smart_refusal
from limelight.video import EncodeOptions
from tests.media import audio_packets, frame_times

pytestmark = pytest.mark.skipif(not default_model_path().exists(), reason="the shipped int8 model is not built yet")

GOP, FPS, RATE = 25, 25, 44100


def half_faceless_clip(path: Path, gops: int = 4, faces_from_gop: int = 2, codec: str = "libx264", options: dict | None = None) -> Path:
    """`gops` GOPs of 25 frames of a moving background (960 x 540, H.264 Main with B-frames, a
    keyframe every second) with the astronaut's portrait pasted from the middle of GOP `faces_from_gop` on, and a
    tone as the sound: the first GOPs have no face at all."""
    import cv2

    import limelight.demo as demo

    astronaut = cv2.resize(demo.portraits()["astronaut"], (212, 250), interpolation=cv2.INTER_AREA)
    # Scenery: a drifting checkerboard, on which the detector finds nothing (the demo's smooth colour
    # waves filling the frame, and textures such as gravel, draw its false alarms: see bench/smart.py)
    rows, cols = np.mgrid[0:demo.HEIGHT, 0:demo.WIDTH]
    settings = {"crf": "20", "preset": "veryfast", "g": str(GOP), "keyint_min": str(GOP), "sc_threshold": "0",
                "profile": "main", "x264-params": "bframes=2:scenecut=0"}
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=FPS, options=options if options is not None else settings)
        video.width, video.height, video.pix_fmt = demo.WIDTH, demo.HEIGHT, "yuv420p"
        audio = out.add_stream("aac", rate=RATE)
        audio.layout = "mono"
        for i in range(GOP * gops):
            shade = np.where(((cols + 4 * i) // 60 + rows // 60) % 2, 170, 90)[..., None] * np.array([1.0, 0.9, 0.8])
            frame = shade.astype(np.uint8)
            if i >= GOP * faces_from_gop + 10:  # (the tracker blurs a few frames before a face's first detection)
                demo._paste(frame, astronaut, 480 + 60 * np.sin(i / 20), 270)
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(video.encode(None))
        samples = np.arange(RATE * gops * GOP // FPS)
        tone = (0.1 * np.sin(2 * np.pi * 440 * samples / RATE)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            af = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = RATE, start, Fraction(1, RATE)
            out.mux(audio.encode(af))
        out.mux(audio.encode(None))
    return path


def video_gops(path: Path) -> list[list[bytes]]:
    """The video packets' bytes, GOP by GOP (decode order)."""
    gops: list[list[bytes]] = []
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            if packet.size:
                if packet.is_keyframe:
                    gops.append([])
                gops[-1].append(bytes(packet))
    return gops


def packets(path: Path) -> dict[int, bytes]:
    """The video packets' bytes by pts."""
    with av.open(str(path)) as container:
        return {p.pts: bytes(p) for p in container.demux(video=0) if p.size}


def copied_frames(src: Path, dst: Path) -> list[int]:
    """Display indices of the input's frames whose packets `dst` holds byte for byte."""
    ours, theirs = packets(src), packets(dst)
    return [i for i, pts in enumerate(sorted(ours)) if theirs.get(pts) == ours[pts]]


def decode_cleanly(path: Path) -> list[np.ndarray]:
    """Every frame (I420), failing on any error FFmpeg's decoder reports."""
    errors: list[str] = []
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture() as logs, av.open(str(path)) as container:
            frames = [f.to_ndarray() for f in container.decode(video=0)]
        errors = [line for line in logs if line[0] <= av.logging.ERROR]
    finally:
        av.logging.set_level(previous)
    assert errors == [], errors
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return half_faceless_clip(tmp_path_factory.mktemp("smart") / "half.mp4")


@pytest.fixture(scope="module")
def engine() -> Anonymizer:
    return Anonymizer(Detector())


@pytest.fixture(scope="module")
def smart_run(clip, engine, tmp_path_factory):
    dst = tmp_path_factory.mktemp("smart_out") / "half_anonymized.mp4"
    plan = engine.analyze(clip)
    report = engine.render(clip, dst, plan)
    return plan, dst, report


def test_faceless_gops_are_copied_byte_identical_and_the_others_reencoded(clip, smart_run):
    plan, dst, report = smart_run
    # GIVEN a clip whose first two GOPs hold no face, anonymized
    faces = sorted({f for t in plan.tracks if t.decision == "blur" for f in t.frames.tolist()})
    assert faces and faces[0] >= 2 * GOP  # the detector found no face in the faceless half
    # THEN the faceless GOPs' packets are the input's, byte for byte, and so are those of the
    # frames of the third GOP shown before the face (decoded before any later frame); every frame
    # from the face on is re-encoded
    copied = copied_frames(clip, dst)
    assert copied[:2 * GOP] == list(range(2 * GOP))
    assert 2 * GOP < len(copied) <= faces[0] and copied == list(range(len(copied)))
    assert report.render == {"mode": "smart", "reason": None, "gops_copied": 2, "gops_encoded": 2, "frames_copied": len(copied),
                             "frames_encoded": 100 - len(copied), "seconds_copied": len(copied) / FPS,
                             "seconds_encoded": (100 - len(copied)) / FPS}
    # ...and the stream decodes without an error, every frame at its time, the sound bit-exact
    before, after = decode_cleanly(clip), decode_cleanly(dst)
    assert len(after) == len(before) == 100
    assert frame_times(dst) == frame_times(clip)
    assert audio_packets(dst) == audio_packets(clip)
    # ...copied frames decode exactly as the input's; the face is hidden in every re-encoded frame
    for i in copied:
        assert np.array_equal(after[i], before[i]), i
    h = 540
    for t in plan.tracks:
        for frame, box in zip(t.frames.tolist(), t.boxes):
            x1, y1, x2, y2 = (int(v) for v in box)
            face_in, face_out = before[frame][:h][y1:y2, x1:x2].astype(int), after[frame][:h][y1:y2, x1:x2].astype(int)
            assert np.abs(face_in - face_out).mean() > 8, frame
    # ...and away from the face, a re-encoded frame stays close to the input's (CRF 18)
    assert np.abs(before[80][:h, :200].astype(int) - after[80][:h, :200]).mean() < 2


def test_a_face_on_the_last_frame_of_a_gop_reencodes_that_gop_and_redacts_it(clip, engine, smart_run, tmp_path):
    plan, _, _ = smart_run
    # GIVEN the plan with a region a reviewer added on frame 24 only, the last frame of the first GOP
    edited = Plan(plan.input, plan.tracks, [Region(GOP - 1, GOP - 1, (100.0, 100.0, 300.0, 300.0))], plan.meta)
    dst = tmp_path / "out.mp4"
    report = engine.render(clip, dst, edited)
    # THEN the first GOP is re-encoded from that frame (or the B-frames decoded before it) on, and
    # the second (no box) copied whole
    copied = copied_frames(clip, dst)
    assert GOP - 1 not in copied and set(range(GOP, 2 * GOP)) <= set(copied)
    assert 0 < len([i for i in copied if i < GOP]) < GOP
    assert report.render["gops_encoded"] == 3 and report.render["gops_copied"] == 1
    before, after = decode_cleanly(clip), decode_cleanly(dst)
    region = (slice(100, 300), slice(100, 300))
    assert np.abs(before[GOP - 1][region].astype(int) - after[GOP - 1][region]).mean() > 5
    assert np.abs(before[GOP - 2][region].astype(int) - after[GOP - 2][region]).mean() < 2  # the frame before: not redacted


def test_smart_and_full_render_hide_the_same_faces_and_report_the_same_tracks(clip, engine, smart_run, tmp_path):
    plan, smart_dst, smart_report = smart_run
    full = Anonymizer(engine.detector, None, AnonymizeOptions(full_render=True))
    full_report = full.render(clip, tmp_path / "full.mp4", plan)
    assert full_report.render == {"mode": "full", "reason": "--full-render"}
    assert video_gops(tmp_path / "full.mp4")[0] != video_gops(clip)[0]  # every GOP re-encoded
    strip = lambda r: {k: v for k, v in r.as_dict().items() if k not in ("output", "seconds", "fps", "render")}  # noqa: E731
    assert strip(smart_report) == strip(full_report)


@pytest.mark.parametrize("make, suffix, words", [
    ("mpeg4", ".mp4", "not H.264"),
    ("h264_ts", ".mp4", "in-band"),
    ("h264", ".avi", "output container (.avi)"),
    ("high10", ".mp4", "not 8-bit 4:2:0"),
])
def test_what_smart_render_cannot_do_is_refused_with_a_reason(tmp_path, make, suffix, words):
    src = tmp_path / "in.mp4"
    if make == "mpeg4":
        half_faceless_clip(src, gops=1, faces_from_gop=1, codec="mpeg4", options={"g": str(GOP)})
    elif make == "h264_ts":
        half_faceless_clip(tmp_path / "whole.mp4", gops=1, faces_from_gop=1)
        src = tmp_path / "in.ts"
        with av.open(str(tmp_path / "whole.mp4")) as inp, av.open(str(src), "w") as out:
            streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
            for packet in inp.demux():
                if packet.dts is not None:
                    packet.stream = streams[packet.stream.index]
                    out.mux(packet)
    elif make == "high10":
        with av.open(str(src), "w") as out:
            video = out.add_stream("libx264", rate=FPS, options={"g": str(GOP)})
            video.width, video.height, video.pix_fmt = 64, 64, "yuv420p10le"
            for i in range(5):
                out.mux(video.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 40, np.uint8), format="rgb24").reformat(format="yuv420p10le")))
            out.mux(video.encode(None))
    else:
        half_faceless_clip(src, gops=1, faces_from_gop=1)
    with av.open(str(src)) as c:
        frames = sum(1 for p in c.demux(video=0) if p.size)
    reason = smart_refusal(src, tmp_path / f"out{suffix}", EncodeOptions(), frames)
    assert reason is not None and words in reason, reason


def test_a_closed_h264_stream_is_accepted_and_a_segment_or_marked_faces_are_not(clip, tmp_path):
    assert smart_refusal(clip, tmp_path / "out.mkv", EncodeOptions(), 100) is None
    assert smart_refusal(clip, tmp_path / "out.mp4", EncodeOptions(), 99) == "the video has 100 packets for 99 frames"
    assert "segment" in smart_refusal(clip, tmp_path / "out.mp4", EncodeOptions(whole_file=False), 100)
    assert "--mark-faces" in smart_refusal(clip, tmp_path / "out.mp4", EncodeOptions(), 100, mark_faces=True)


def test_the_cli_says_how_much_was_copied_and_the_report_says_how_it_was_rendered(clip, tmp_path):
    from click.testing import CliRunner

    from limelight.cli import main

    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    result = CliRunner().invoke(main, ["anonymize", str(clip), "-o", str(out), "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "s copied as they were" in result.output and "re-encoded (2 + 2 GOPs)" in result.output
    assert json.loads(report.read_text())["files"][0]["render"]["mode"] == "smart"
    result = CliRunner().invoke(main, ["anonymize", str(clip), "-o", str(tmp_path / "full.mp4"), "--full-render", "--report", str(report)])
    assert result.exit_code == 0 and "copied" not in result.output
    assert json.loads(report.read_text())["files"][0]["render"] == {"mode": "full", "reason": "--full-render"}


def test_avcc_records_and_nal_units_round_trip():
    sps, pps = bytes.fromhex("6742c01e95a050"), bytes.fromhex("68ce3c80")
    record = AvcConfig(66, 0xC0, 30, 4, (sps,), (pps,)).build()
    parsed = AvcConfig.parse(record)
    assert (parsed.profile, parsed.level, parsed.length_size, parsed.sps, parsed.pps) == (66, 30, 4, (sps,), (pps,))
    stream = b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01" + pps + b"\x00\x00\x00\x01\x65\x88\x00\x00\x03\x01"
    units = annexb_units(stream)
    assert units == [sps, pps, b"\x65\x88\x00\x00\x03\x01"]
    assert length_prefixed(units[2:], 4) == b"\x00\x00\x00\x06\x65\x88\x00\x00\x03\x01"
    with pytest.raises(ValueError):
        AvcConfig.parse(b"\x00\x00\x00\x01" + sps)


def test_a_video_whose_picture_size_changes_mid_stream_is_rendered_in_full(tmp_path):
    # (its later pictures' parameter sets travel in-band: copied, they would keep their own size
    # where the full render scales every picture to the first one's)
    from tests.media import size_switching_clip

    clip = size_switching_clip(tmp_path / "switch.mp4", frames=30)
    reason = smart_refusal(clip, tmp_path / "out.mp4", EncodeOptions(), 60)
    assert reason is not None and "change mid-stream" in reason


def test_a_copied_stream_keeps_the_display_rotation_and_the_container_tags(tmp_path, engine):
    # GIVEN a phone-style clip shown turned by 90 degrees, with a title tag, and no face at all
    from limelight.video import probe

    src = tmp_path / "portrait.mp4"
    with av.open(str(src), "w") as out:
        out.metadata["title"] = "street, 7 Dec"
        video = out.add_stream("libx264", rate=FPS, options={"g": str(GOP)})
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        video.set_display_rotation(90)
        for i in range(GOP):
            shade = np.full((240, 320, 3), 40 + 4 * i, np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(shade, format="rgb24")))
        out.mux(video.encode(None))
    dst = tmp_path / "out.mp4"
    report = engine.render(src, dst, engine.analyze(src))
    # THEN its only GOP is copied, and the copy is shown turned as the input is, with its title
    assert report.render["gops_copied"] == 1 and packets(dst) == packets(src)
    assert probe(dst).rotation == probe(src).rotation == 90
    with av.open(str(dst)) as c:
        assert c.metadata.get("title") == "street, 7 Dec"


def test_the_copied_part_of_a_gop_holds_exactly_the_frames_shown_before_the_first_to_redact():
    from limelight.smart import copied_prefix

    # decode order I0 P3 B1 B2 P6 B4 B5 (2 B-frames), the GOP starting at frame 10
    shown = [10, 13, 11, 12, 16, 14, 15]
    assert copied_prefix(shown, 10, None) == 7  # nothing to redact: all of it
    assert copied_prefix(shown, 10, 14) == 4  # I0 P3 B1 B2: frames 10-13
    assert copied_prefix(shown, 10, 13) == 1  # P3 is decoded before B1, B2: only I0 can go
    assert copied_prefix(shown, 10, 12) == 1
    assert copied_prefix(shown, 10, 10) == 0  # the first frame itself: all re-encoded
