"""Hostile but realistic inputs: each ends in a complete output or one clear line, no traceback,
no hang, nothing left behind (docs/limits.md). The fuzzed variety is in tests/test_fuzz.py."""

from __future__ import annotations

import json
import os

import av
import numpy as np
import pytest
from PIL import Image

from limelight.detector import default_model_path
from tests.media import audio_packets, frame_times
from tests.test_cli import assert_one_line_error, run

pytestmark = pytest.mark.skipif(not default_model_path().exists(), reason="the shipped int8 model is not built yet")


def _jpeg_with_exif(path, size=(320, 240)):
    exif = Image.Exif()
    exif[0x0110] = "Old camera"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), np.uint8)).save(path, exif=exif)
    return path


def _mjpeg_avi_with_pcm(path):
    """An old camera's AVI: MJPEG pictures and 16-bit PCM sound (AVI stores no channel layout)."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("mjpeg", rate=25)
        v.width, v.height, v.pix_fmt = 320, 240, "yuvj420p"
        a = out.add_stream("pcm_s16le", rate=44100)
        a.layout = "stereo"
        for i in range(25):
            f = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 8 * i, np.uint8), format="rgb24")
            f.pts = i
            out.mux(v.encode(f))
            sound = av.AudioFrame.from_ndarray(np.zeros((1, 1764 * 2), np.int16), format="s16", layout="stereo")
            sound.sample_rate, sound.pts = 44100, i * 1764
            out.mux(a.encode(sound))
        out.mux(v.encode(None))
        out.mux(a.encode(None))
    with av.open(str(path)) as c:
        assert c.streams.audio[0].codec_context.layout.name == "2 channels"  # as AVI gives it back
    return path


def test_a_jpeg_renamed_mp4_is_a_one_frame_video_not_a_traceback(tmp_path):
    # GIVEN a photo with EXIF renamed .mp4 (MJPEG frames with EXIF side data PyAV cannot name)
    src = _jpeg_with_exif(tmp_path / "x.jpg").rename(tmp_path / "x.mp4")
    code, out, err = run("anonymize", src)
    # THEN it is anonymized as the one-frame video it is
    assert code == 0, err
    assert len(frame_times(tmp_path / "x_anonymized.mp4")) == 1


def test_an_avi_with_pcm_sound_of_unnamed_layout_is_written_with_its_sound(tmp_path):
    src = _mjpeg_avi_with_pcm(tmp_path / "camera.avi")
    code, out, err = run("anonymize", src)
    # THEN it is written (MP4 refused a layout of unspecified order at its end) with its sound
    # bit-exact (PCM samples: MP4 chunks them its own way, the bytes are the same)
    assert code == 0, err
    dst = next(p for p in tmp_path.iterdir() if p.stem == "camera_anonymized")
    assert len(frame_times(dst)) == 25
    sound = b"".join(p[1] for p in audio_packets(src))
    assert len(sound) == 25 * 1764 * 4 and b"".join(p[1] for p in audio_packets(dst)) == sound


@pytest.mark.parametrize("chars", [80, 83])
def test_a_long_file_name_is_anonymized(tmp_path, chars):
    # GIVEN a title of 80 or 83 CJK characters (240 / 249 bytes: the temporary name, 26 bytes longer
    # than the input's, passed the file system's 255)
    src = _jpeg_with_exif(tmp_path / "x.jpg").rename(tmp_path / ("映" * chars + ".mp4"))
    code, out, err = run("anonymize", src)
    assert code == 0, err
    outputs = [p for p in tmp_path.iterdir() if p != src]
    # THEN one output, named NAME_anonymized.mp4 with NAME shortened where it had to be
    assert len(outputs) == 1 and outputs[0].name.endswith("_anonymized.mp4") and len(outputs[0].name.encode()) <= 255


def test_a_fifo_is_refused_before_anything_opens_it(tmp_path):
    fifo = tmp_path / "x.mp4"
    os.mkfifo(fifo)
    code, out, err = run("anonymize", fifo)  # would block forever if opened
    assert_one_line_error(code, err, "x.mp4", "not a regular file")


def test_a_folder_with_an_existing_file_as_output_is_refused(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _jpeg_with_exif(folder / "a.jpg")
    (tmp_path / "out.txt").write_text("mine")
    code, out, err = run("anonymize", folder, "-o", tmp_path / "out.txt")
    assert_one_line_error(code, err, "out.txt", "folder")
    assert (tmp_path / "out.txt").read_text() == "mine"


def test_a_tiny_consent_photo_is_refused_naming_it(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "tiny.png")
    src = _jpeg_with_exif(tmp_path / "photo.jpg")
    code, out, err = run("anonymize", src, "--known-faces", tmp_path / "tiny.png")
    assert_one_line_error(code, err, "tiny.png", "too small")
    assert not (tmp_path / "photo_anonymized.jpg").exists()


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path):
    # GIVEN a 388 KB PNG that declares 20000 x 20000 pixels (1.2 GB decoded)
    Image.new("L", (20000, 20000)).save(tmp_path / "bomb.png", optimize=True)
    code, out, err = run("anonymize", tmp_path / "bomb.png")
    assert_one_line_error(code, err, "bomb.png", "too many pixels")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.png"]


def test_a_truncated_jpeg_is_refused_instead_of_published_half_grey(tmp_path, shared_file):
    data = shared_file("videos/known_faces/hamilton_white_house/biden.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) * 4 // 10])
    code, out, err = run("anonymize", tmp_path / "cut.jpg")
    # THEN one line of LimeLight's own (libjpeg's raw "Premature end of JPEG file" is not shown)
    assert_one_line_error(code, err, "cut.jpg", "truncated")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.jpg"]


def test_an_unexpected_error_is_one_line_and_debug_shows_its_traceback(tmp_path, monkeypatch):
    import limelight.pipeline as pipeline

    def broken(self, src, dst):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(pipeline.Anonymizer, "image", broken)
    src = _jpeg_with_exif(tmp_path / "photo.jpg")
    code, out, err = run("anonymize", src)
    # THEN one line naming the file and the error, not a traceback
    assert_one_line_error(code, err, "photo.jpg", "ZeroDivisionError", "a bug", "--debug")
    code, out, err = run("--debug", "anonymize", src)
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("limelight: error:")


def test_a_folder_finishes_its_good_files_and_lists_every_failure(tmp_path, monkeypatch):
    import limelight.pipeline as pipeline

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _jpeg_with_exif(folder / name)
    (folder / "d.jpg").write_bytes((folder / "a.jpg").read_bytes()[:300])  # truncated
    image = pipeline.Anonymizer.image

    def failing_on_b(self, src, dst):
        if src.name == "b.jpg":
            raise RuntimeError("the encoder failed")  # an output-side failure of one file
        return image(self, src, dst)

    monkeypatch.setattr(pipeline.Anonymizer, "image", failing_on_b)
    code, out, err = run("anonymize", folder, "-o", tmp_path / "out", "--report", tmp_path / "r.json")
    # THEN the good files are done, the two bad ones have their line each, and the report lists them
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_anonymized.jpg", "c_anonymized.jpg"]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 2 and all(line.startswith("limelight: error:") for line in lines)
    failed = json.loads((tmp_path / "r.json").read_text())["failed"]
    assert sorted(os.path.basename(f["input"]) for f in failed) == ["b.jpg", "d.jpg"]


def test_ctrl_c_exits_130_and_leaves_nothing_behind(tmp_path, monkeypatch):
    import limelight.pipeline as pipeline

    def interrupted(self, src, dst):
        raise KeyboardInterrupt  # Ctrl-C while the photo is being anonymized

    monkeypatch.setattr(pipeline.Anonymizer, "image", interrupted)
    src = _jpeg_with_exif(tmp_path / "photo.jpg")
    code, out, err = run("anonymize", src)
    # THEN the conventional exit status of Ctrl-C (SIGTERM gives 143), one line, no output
    assert code == 130 and err.strip() == "limelight: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.jpg"]


def test_a_library_warning_is_one_limelight_line(tmp_path, monkeypatch):
    import warnings

    import limelight.pipeline as pipeline

    image = pipeline.Anonymizer.image

    def warned(self, src, dst):
        warnings.warn("Truncated File Read", UserWarning)  # as Pillow warns on a damaged photo's EXIF
        return image(self, src, dst)

    monkeypatch.setattr(pipeline.Anonymizer, "image", warned)
    src = _jpeg_with_exif(tmp_path / "photo.jpg")
    code, out, err = run("anonymize", src)
    # THEN the output is written and the warning is one line of LimeLight's, not the warnings
    # module's two raw lines (file:line, then the source line)
    assert code == 0
    assert [line for line in err.splitlines() if line.strip()] == ["limelight: warning: Truncated File Read (UserWarning)"]


def test_a_picture_too_small_to_hold_a_face_is_refused(tmp_path):
    # GIVEN a PNG whose damaged header says 704 x 1, named .mp4 (found by make fuzz: libx264
    # crashed the process on it as its encoder was freed, after the output was written)
    Image.fromarray(np.zeros((1, 704, 3), np.uint8)).save(tmp_path / "x.png")
    src = (tmp_path / "x.png").rename(tmp_path / "x.mp4")
    code, out, err = run("anonymize", src)
    assert_one_line_error(code, err, "x.mp4", "704 x 1", "too small")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mp4"]
