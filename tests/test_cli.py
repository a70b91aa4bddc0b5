"""The `limelight` command: bad input gets one clear line, a non-zero exit, and loses nothing."""

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from limelight.cli import main
from limelight.detector import default_model_path
from tests.media import adpcm_camera, camera_file, damaged_copy, dv_camcorder, frame_times, phone_3gp, ts_recording, windows_media

needs_model = pytest.mark.skipif(not default_model_path().exists(), reason="the shipped int8 model is not built yet")
HAMILTON = "hamilton_white_house_short_clip.mp4"


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code, stderr, *words):
    assert code != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("limelight: error:"), stderr
    for w in words:
        assert w in lines[0]


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def audio_only(path):
    with av.open(str(path), "w") as out:
        s = out.add_stream("aac", rate=16000)
        s.layout = "mono"
        for i in range(10):
            f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            f.sample_rate, f.pts, f.time_base = 16000, i * 1024, Fraction(1, 16000)
            out.mux(s.encode(f))
        out.mux(s.encode(None))


@needs_model
@pytest.mark.parametrize(
    "name, make, words",
    [
        ("missing.mp4", None, ["missing.mp4"]),
        ("zero.mp4", lambda p: p.write_bytes(b""), ["zero.mp4"]),
        ("notes.mp4", lambda p: p.write_text("not a video\n" * 50), ["notes.mp4"]),
        ("sound.m4a", audio_only, ["sound.m4a"]),
    ],
)
def test_bad_video_input_fails_cleanly(tmp_path, name, make, words):
    src = tmp_path / name
    if make:
        make(src)
    before = snapshot(tmp_path)
    code, _, err = run("anonymize", src)
    assert_one_line_error(code, err, *words)
    assert snapshot(tmp_path) == before  # input untouched, nothing written beside it


@needs_model
def test_truncated_video_fails_cleanly(tmp_path, clip):
    data = clip(HAMILTON).read_bytes()
    src = tmp_path / "cut.mp4"
    src.write_bytes(data[: len(data) * 3 // 10])
    before = snapshot(tmp_path)
    code, _, err = run("anonymize", src)
    assert_one_line_error(code, err, "cut.mp4")
    assert snapshot(tmp_path) == before


@needs_model
def test_a_video_with_damaged_packets_is_anonymized_with_a_warning(tmp_path, clip):
    # GIVEN the hamilton clip with two video packets damaged in place (ffmpeg plays such a file;
    # LimeLight refused it as "corrupt or truncated")
    src = tmp_path / "damaged.mp4"
    lost = damaged_copy(clip(HAMILTON), src, [100, 200])
    before = snapshot(tmp_path)
    report = tmp_path / "audit.json"
    # WHEN anonymizing it
    code, out, err = run("anonymize", src, "-o", tmp_path / "out.mp4", "--report", report)
    # THEN it succeeds with every frame, and one warning line says what was lost and where
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("limelight: warning:") and "damaged.mp4" in lines[0], err
    assert "2 frames could not be decoded" in lines[0] and f"{float(lost[0]):.2f} s" in lines[0]
    assert frame_times(tmp_path / "out.mp4") == frame_times(clip(HAMILTON))
    doc = json.loads(report.read_text())["files"][0]
    assert doc["frames"] == 275 and doc["damage"]["video_packets"] == 2
    assert doc["damage"]["repeated_frames_at"] == pytest.approx([float(t) for t in lost], abs=1e-6)
    assert doc["blurred"] > 0  # the audience is still anonymized
    assert {k: v for k, v in snapshot(tmp_path).items() if k in before} == before  # input untouched


@needs_model
def test_recordings_joined_end_to_end_are_anonymized_part_after_part(tmp_path, clip):
    # GIVEN two TS recordings joined with `cat` (the serverless workflow refuses them, naming the CLI;
    # the CLI failed with "cannot write (Invalid argument)")
    part = ts_recording(clip(HAMILTON), tmp_path / "part.ts")
    src = tmp_path / "joined.ts"
    src.write_bytes(part.read_bytes() * 2)
    report = tmp_path / "audit.json"
    # WHEN anonymizing it
    code, out, err = run("anonymize", src, "-o", tmp_path / "out.mp4", "--report", report)
    # THEN both parts are there, one after the other, and one warning line says where the clock restarts
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("limelight: warning:") and "joined.ts" in lines[0], err
    assert "timestamps start again after" in lines[0]
    times = frame_times(tmp_path / "out.mp4")
    assert len(times) == 550 and all(a < b for a, b in zip(times, times[1:]))
    doc = json.loads(report.read_text())["files"][0]
    assert len(doc["damage"]["timestamps_start_again_after"]) == 1 and doc["blurred"] > 0


@needs_model
def test_empty_known_faces_folder_fails_before_any_output(tmp_path, clip):
    known = tmp_path / "known"
    known.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    code, _, err = run("anonymize", clip(HAMILTON), "--known-faces", known, "-o", out / "x.mp4")
    assert_one_line_error(code, err, "known")
    assert list(out.iterdir()) == []


@needs_model
def test_a_single_photo_given_as_known_faces_keeps_that_person(tmp_path, clip, shared_file):
    # GIVEN one photo of the performer, given by itself (it was refused: "put it in a folder")
    photo = tmp_path / "lin.png"
    photo.write_bytes(shared_file("videos/known_faces/hamilton_white_house/lin-manuel-miranda.png").read_bytes())
    code, out, err = run("anonymize", clip(HAMILTON), "--known-faces", photo, "-o", tmp_path / "x.mp4",
                         "--report", tmp_path / "x.json")
    assert code == 0, err
    report = json.loads((tmp_path / "x.json").read_text())
    doc = report["files"][0]
    # THEN he is kept under the photo's name, and the audience is blurred
    kept = [t for t in doc["tracks"] if t["decision"] == "kept as lin"]
    assert kept and max(t["frames"] for t in kept) > 100
    assert sum(t["decision"] == "blurred" for t in doc["tracks"]) >= 3
    assert report["settings"]["known_faces"] == {"photos": 1, "persons": 1}
    # AND the report and the summary line say who was shown, and in how many frames
    assert list(doc["shown"]) == ["lin"]
    assert doc["shown"]["lin"] == sum(sum(t["shown_as"].values()) for t in doc["tracks"]) > 100
    assert f"{len(kept)} kept (lin)," in out
    assert "not recognised" not in err


@needs_model
def test_a_consent_photo_that_matches_nobody_is_pointed_out(tmp_path, clip, shared_file):
    # GIVEN a photo of someone who is not in the clip (a user's wrong or outdated photo)
    photo = tmp_path / "paul.png"
    photo.write_bytes(shared_file("videos/known_faces/distractors/paul_rudd.aligned.png").read_bytes())
    code, out, err = run("anonymize", clip(HAMILTON), "--known-faces", photo, "-o", tmp_path / "x.mp4")
    # THEN the video is anonymized as always (everyone blurred) and a note says nobody was recognised
    assert code == 0 and (tmp_path / "x.mp4").exists()
    assert " 0 kept, " in out
    notes = [line for line in err.splitlines() if line.startswith("limelight: note:")]
    assert len(notes) == 1 and "paul not recognised in" in notes[0] and HAMILTON in notes[0]


@needs_model
def test_known_faces_that_is_neither_a_photo_nor_a_folder_fails_before_any_output(tmp_path, clip, shared_file):
    known = tmp_path / "known"
    known.mkdir()
    (known / "lin.png").write_bytes(shared_file("videos/known_faces/hamilton_white_house/lin-manuel-miranda.png").read_bytes())
    notes = tmp_path / "consent.txt"
    notes.write_text("signed forms\n")
    # A text file beside a good folder: refused naming it, before any work
    code, _, err = run("anonymize", clip(HAMILTON), "--known-faces", known, "--known-faces", notes, "-o", tmp_path / "x.mp4")
    assert_one_line_error(code, err, "consent.txt", "photo or a folder")
    assert not (tmp_path / "x.mp4").exists()
    # A path that does not exist
    code, _, err = run("anonymize", clip(HAMILTON), "--known-faces", tmp_path / "nobody.jpg", "-o", tmp_path / "x.mp4")
    assert_one_line_error(code, err, "nobody.jpg", "not found")
    assert not (tmp_path / "x.mp4").exists()


@needs_model
def test_unwritable_output_fails_and_leaves_nothing(tmp_path, clip):
    target = tmp_path / "no" / "such" / "dir" / "x.mp4"
    code, _, err = run("anonymize", clip(HAMILTON), "-o", target)
    assert_one_line_error(code, err, "x.mp4")
    assert not (tmp_path / "no").exists()


def portrait_photo(path):
    """The demo's public-domain astronaut portrait as a photo file."""
    import cv2

    import limelight.demo as demo

    cv2.imwrite(str(path), demo.portraits()["astronaut"][..., ::-1])
    return path


@needs_model
@pytest.mark.parametrize("where, words", [
    (lambda tmp: tmp / "no" / "r.json", ["report folder does not exist"]),
    (lambda tmp: tmp, ["is a folder; give the report a file name"]),
    (lambda tmp: Path("/proc/limelight-report.json"), ["cannot write a report there"]),
    (lambda tmp: tmp / "astronaut.png", ["astronaut.png: a report is JSON, not a png file", "astronaut.json"]),
    (lambda tmp: tmp / "astronaut_anonymized.png", ["a report is JSON"]),
], ids=["missing-folder", "a-folder", "read-only-place", "the-input", "the-output"])
def test_a_report_that_cannot_be_written_fails_before_any_work(tmp_path, where, words):
    # GIVEN a photo and a --report path nothing can be written to (missing folder, a folder, /proc)
    # or nothing should be: the photo itself or its output (JSON written over the input)
    src = portrait_photo(tmp_path / "astronaut.png")
    before = snapshot(tmp_path)
    # WHEN it is anonymized
    code, _, err = run("anonymize", src, "--report", where(tmp_path))
    # THEN one line names the report path's problem, and nothing was written (it said so only
    # after the work, in a traceback, for a folder or /proc; the input was replaced by the report)
    assert_one_line_error(code, err, *words)
    assert snapshot(tmp_path) == before


@needs_model
def test_a_report_the_disk_cannot_take_at_the_end_is_one_line_saying_the_output_is_complete(tmp_path, monkeypatch):
    import cv2

    import limelight.report as report_module

    # GIVEN a photo, an older report at the --report path, and a disk that fills up while the
    # report is written (its writes go to /dev/full: the system's own "No space left on device")
    src = portrait_photo(tmp_path / "astronaut.png")
    (tmp_path / "r.json").write_text("older report\n")
    monkeypatch.setattr(report_module, "open", lambda path, mode: open("/dev/full", mode), raising=False)
    # WHEN it is anonymized
    code, _, err = run("anonymize", src, "--report", tmp_path / "r.json")
    # THEN one line says the report could not be written and that the output is complete...
    assert_one_line_error(code, err, "r.json: cannot write the report (No space left on device)",
                          "the anonymized file is complete")
    assert cv2.imread(str(tmp_path / "astronaut_anonymized.png")).shape == cv2.imread(str(src)).shape
    # ...the older report is untouched and no partial one is left
    assert (tmp_path / "r.json").read_text() == "older report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["astronaut.png", "astronaut_anonymized.png", "r.json"]


@needs_model
def test_output_never_overwrites_the_input(tmp_path, shared_file):
    src = tmp_path / "group.jpg"
    src.write_bytes(shared_file("videos/stills/multiface_group.facenet_pytorch.jpg").read_bytes())
    before = src.read_bytes()
    code, _, err = run("anonymize", src, "-o", src)
    assert_one_line_error(code, err, "overwrite")
    assert src.read_bytes() == before


@needs_model
def test_image_is_anonymized_beside_the_input_with_a_report(tmp_path, shared_file):
    import cv2

    src = tmp_path / "group.jpg"
    src.write_bytes(shared_file("videos/stills/multiface_group.facenet_pytorch.jpg").read_bytes())
    code, out, err = run("anonymize", src, "--report", tmp_path / "r.json")
    assert code == 0, err
    dst = tmp_path / "group_anonymized.jpg"
    report = json.loads((tmp_path / "r.json").read_text())
    faces = report["files"][0]["tracks"]
    assert len(faces) >= 5 and all(t["decision"] == "blurred" for t in faces)
    a, b = cv2.imread(str(src)), cv2.imread(str(dst))
    _, x1, y1, x2, y2, _ = faces[0]["boxes"][0]
    roi = (slice(int(y1), int(y2)), slice(int(x1), int(x2)))
    lap = lambda img: cv2.Laplacian(cv2.cvtColor(img[roi], cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()  # noqa: E731
    assert lap(b) < 0.3 * lap(a)
    assert "(image, " in out and "faces" in out and "blurred" in out and "frames," not in out  # the summary
    # the audit trail says at what size the detector saw the photo (auto: its finest pass, the photo's own size)
    h, w = a.shape[:2]
    assert report["settings"]["detect_size"] == "auto"
    assert report["files"][0]["detector_input"] == [w, h]


@pytest.mark.parametrize("value, words", [("big", ["'big'", "auto"]), ("64", ["64", "128..4096"])])
def test_a_bad_detection_size_is_refused_before_any_work(tmp_path, value, words):
    src = tmp_path / "x.mp4"
    src.write_bytes(b"never read")
    code, _, err = run("anonymize", src, "--detect-size", value)
    assert code == 2 and "--detect-size" in err and all(w in err for w in words)
    assert [p.name for p in tmp_path.iterdir()] == ["x.mp4"]


@needs_model
def test_detect_json_prints_one_object_per_image(tmp_path, shared_file):
    img = shared_file("videos/stills/multiface_group.facenet_pytorch.jpg")
    code, out, err = run("detect", img, img, "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2 and rows[0]["image"] == str(img)
    assert rows[0]["width"] > 0 and rows[0]["height"] > 0
    faces = rows[0]["faces"]
    assert len(faces) >= 5 and all(len(f["box"]) == 4 and 0.02 <= f["score"] <= 1 for f in faces)
    x1, y1, x2, y2 = faces[0]["box"]
    assert 0 <= x1 < x2 <= rows[0]["width"] and 0 <= y1 < y2 <= rows[0]["height"]


def test_detect_unreadable_image_fails_cleanly(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    code, _, err = run("detect", bad)
    assert_one_line_error(code, err, "bad.jpg")


@needs_model
def test_folder_input_writes_every_file_to_a_sibling_folder(tmp_path, shared_file):
    import cv2

    src = tmp_path / "photos"
    src.mkdir()
    still = shared_file("videos/stills/multiface_group.facenet_pytorch.jpg").read_bytes()
    (src / "a.jpg").write_bytes(still)
    (src / "b.jpg").write_bytes(still)
    (src / "notes.txt").write_text("ignored")
    code, out, err = run("anonymize", src, "--mark-faces", "--mode", "solid")
    assert code == 0, err
    dst = tmp_path / "photos_anonymized"
    assert sorted(p.name for p in dst.iterdir()) == ["a_anonymized.jpg", "b_anonymized.jpg"]
    marked = cv2.imread(str(dst / "a_anonymized.jpg"))
    red = (marked[..., 2] > 200) & (marked[..., 1] < 60) & (marked[..., 0] < 60)
    assert red.sum() > 100  # --mark-faces drew the blurred faces' boxes in red
    assert "2 file(s)" in out


@needs_model
def test_camera_card_folder_sub_folders_with_recursive_and_macos_twins_skipped(tmp_path, shared_file):
    # GIVEN a camera card copied from a Mac: photos in DCIM/100CANON, one at the top, and the
    # `._NAME` resource-fork twins macOS writes beside each file (not images, despite the suffix)
    still = shared_file("videos/stills/multiface_group.facenet_pytorch.jpg").read_bytes()
    card = tmp_path / "card"
    (card / "DCIM" / "100CANON").mkdir(parents=True)
    (card / "DCIM" / "100CANON" / "IMG_0001.JPG").write_bytes(still)
    (card / "DCIM" / "100CANON" / "._IMG_0001.JPG").write_bytes(b"\0\5\26\7 Mac OS X")
    (card / "top.jpg").write_bytes(still)
    (card / "._top.jpg").write_bytes(b"\0\5\26\7 Mac OS X")
    dst = tmp_path / "card_anonymized"
    # WHEN it is anonymized without --recursive
    code, out, err = run("anonymize", card)
    # THEN the top photo is done, the twins are no error, and a note names the sub-folder not searched
    assert code == 0, err
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()) == ["top_anonymized.jpg"]
    assert "sub-folders not searched: DCIM" in err and "--recursive" in err
    # WHEN it is anonymized with --recursive
    code, out, err = run("anonymize", card, "--recursive")
    # THEN the sub-folder's photo is done too, in the same place under the output folder
    assert code == 0, err
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()) == [
        "DCIM/100CANON/IMG_0001_anonymized.jpg", "top_anonymized.jpg"]
    assert "2 file(s)" in out
    # ... and a card whose media are all in sub-folders says how to reach them
    (card / "top.jpg").unlink()
    code, _, err = run("anonymize", card)
    assert code == 1 and "holds no video or image files (its sub-folders do: add --recursive)" in err


@needs_model
def test_folder_inputs_that_differ_only_by_suffix_get_outputs_of_their_own(tmp_path, shared_file):
    from PIL import Image
    from pillow_heif import register_heif_opener

    register_heif_opener()

    # GIVEN a phone export holding one photo twice, as IMG_0001.HEIC and IMG_0001.JPG (both are
    # published as JPEG), the JPEG's left half darkened to tell them apart
    still = Image.open(shared_file("videos/stills/multiface_group.facenet_pytorch.jpg")).convert("RGB")
    src = tmp_path / "export"
    src.mkdir()
    still.save(src / "IMG_0001.HEIC")
    dark = np.array(still)
    dark[:, : dark.shape[1] // 2] //= 4
    Image.fromarray(dark).save(src / "IMG_0001.JPG")
    # WHEN the folder is anonymized
    code, out, err = run("anonymize", src, "--report", tmp_path / "report.json")
    # THEN both are published under names of their own (the second was written over the first)
    assert code == 0, err
    dst = tmp_path / "export_anonymized"
    assert sorted(p.name for p in dst.iterdir()) == ["IMG_0001_anonymized.jpg", "IMG_0001_jpg_anonymized.jpg"]
    outputs = [f["output"] for f in json.loads((tmp_path / "report.json").read_text())["files"]]
    assert sorted(outputs) == sorted(str(p) for p in dst.iterdir())
    means = sorted(np.array(Image.open(p)).mean() for p in dst.iterdir())
    assert means[1] - means[0] > 20  # one of each


@needs_model
def test_one_bad_file_in_a_folder_does_not_stop_the_rest(tmp_path, shared_file, clip):
    src = tmp_path / "batch"
    src.mkdir()
    still = shared_file("videos/stills/multiface_group.facenet_pytorch.jpg").read_bytes()
    (src / "a.jpg").write_bytes(still)
    data = clip(HAMILTON).read_bytes()
    (src / "b_cut.mp4").write_bytes(data[: len(data) * 3 // 10])  # truncated: fails mid-stream
    (src / "c.jpg").write_bytes(still)
    before = snapshot(src)
    report = tmp_path / "audit.json"
    code, out, err = run("anonymize", src, "--report", report)
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("limelight: error:") and "b_cut.mp4" in lines[0], err
    assert snapshot(src) == before  # inputs untouched
    dst = tmp_path / "batch_anonymized"
    # the files before and after the bad one are done; the bad one leaves nothing, not even a temporary
    assert sorted(p.name for p in dst.iterdir()) == ["a_anonymized.jpg", "c_anonymized.jpg"]
    assert "2 of 3 file(s) (1 failed" in out
    doc = json.loads(report.read_text())
    assert [f["input"] for f in doc["files"]] == [str(src / "a.jpg"), str(src / "c.jpg")]
    assert [f["input"] for f in doc["failed"]] == [str(src / "b_cut.mp4")] and "b_cut.mp4" in doc["failed"][0]["error"]


@needs_model
@pytest.mark.parametrize("suffix", [".png", ".webp", ".bmp"])
def test_a_photo_of_another_format_is_written_in_it_without_noise(tmp_path, shared_file, capfd, suffix):
    import cv2

    src = tmp_path / f"group{suffix}"
    assert cv2.imwrite(str(src), cv2.imread(str(shared_file("videos/stills/multiface_group.facenet_pytorch.jpg"))))
    code, out, err = run("anonymize", src)
    assert code == 0, err
    dst = tmp_path / f"group_anonymized{suffix}"
    a, b = cv2.imread(str(src)), cv2.imread(str(dst))
    assert b is not None and b.shape == a.shape and np.abs(a.astype(int) - b).mean() > 0.5  # its faces were redacted
    # nothing but the summary reaches the terminal: OpenCV warned on stderr when a PNG got a JPEG parameter
    assert "unsupported" not in capfd.readouterr().err


@needs_model
def test_a_terminated_run_leaves_nothing_behind(tmp_path, clip):
    import signal
    import subprocess
    import sys
    import time

    # GIVEN a run under way: its output's temporary file exists
    src = tmp_path / "clip.mp4"
    src.write_bytes(clip(HAMILTON).read_bytes())
    proc = subprocess.Popen([sys.executable, "-m", "limelight.cli", "anonymize", str(src)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".") for p in tmp_path.iterdir()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"
    # WHEN it is terminated (kill, docker stop, a scheduler's time limit)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    # THEN it exits 143 and the half-written output is gone: only the input is left
    assert proc.returncode == 128 + signal.SIGTERM
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


@needs_model
def test_an_existing_folder_as_output_gets_the_default_name_in_it(tmp_path, shared_file):
    src = tmp_path / "group.jpg"
    src.write_bytes(shared_file("videos/stills/multiface_group.facenet_pytorch.jpg").read_bytes())
    out = tmp_path / "published"
    out.mkdir()
    code, _, err = run("anonymize", src, "-o", out)
    assert code == 0, err
    assert [p.name for p in out.iterdir()] == ["group_anonymized.jpg"]


def _broadcast_mxf(path):
    """A broadcast camera's file: MPEG-2 4:2:2 video and two mono 24-bit PCM tracks in MXF."""
    tracks = [("pcm_s24le", 48000, "mono", [("s32", np.full((1, 1920), (n + 1) * 1000 * k, np.int32)) for k in range(10)])
              for n in range(2)]
    return camera_file(path, "mpeg2video", (128, 96), 25, "yuv422p", 10, tracks)


@needs_model
def test_a_folder_of_broadcast_mxf_is_processed_and_published_as_mp4(tmp_path):
    from tests.media import audio_packets, frame_times

    src = tmp_path / "rushes"
    src.mkdir()
    mxf = _broadcast_mxf(src / "CAM1.MXF")
    code, out, err = run("anonymize", src)
    assert code == 0, err
    dst = tmp_path / "rushes_anonymized" / "CAM1_anonymized.mp4"
    # THEN the MXF file was not skipped: it is written as MP4 with its frames, times and both PCM tracks
    # sample for sample (PCM packets are arbitrary runs of samples, which MP4 reads back in other runs)
    assert dst.is_file() and "1 file(s)" in out
    assert frame_times(dst) == frame_times(mxf)

    def tracks(path):
        packets = audio_packets(path)
        return [(b"".join(p[1] for p in packets if p[0] == n), min(p[2] for p in packets if p[0] == n)) for n in (0, 1)]

    assert tracks(dst) == tracks(mxf) and len(tracks(mxf)[1][0]) == 10 * 1920 * 3


@needs_model
def test_a_phone_3gp_with_amr_speech_is_published_as_mov(tmp_path):
    from tests.media import audio_packets, frame_times

    # GIVEN a 3GP clip whose audio is AMR-NB, which MP4 (the default for 3GP) cannot carry
    src = phone_3gp(tmp_path / "VID0001.3gp")
    with av.open(str(src)) as c:
        assert {st.codec_context.name for st in c.streams.audio} == {"amrnb"}
    # WHEN it is anonymized to the default output (it failed: "'mp4' format does not support 'amrnb'")
    code, out, err = run("anonymize", src)
    # THEN it is written as MOV, which carries AMR, with the frames, times and speech packets bit-exact
    assert code == 0, err
    dst = tmp_path / "VID0001_anonymized.mov"
    assert dst.is_file() and not (tmp_path / "VID0001_anonymized.mp4").exists()
    assert frame_times(dst) == frame_times(src)
    assert audio_packets(dst) == audio_packets(src) and len(audio_packets(src)) >= 40


@needs_model
def test_a_windows_media_file_is_written_as_windows_media_keeping_its_wma_sound(tmp_path):
    from tests.media import audio_packets, frame_times

    # GIVEN a Windows Media file: its WMA sound is audio none of MP4, Matroska and QuickTime takes
    src = windows_media(tmp_path / "lecture.wmv")
    audio = "wmav2"
    # WHEN it is anonymized to the default output (it failed: "'mp4' format does not support ...")
    code, _, err = run("anonymize", src)
    # THEN it is written in its own container, the audio packets bit-exact, every frame there
    assert code == 0, err
    dst = tmp_path / f"{src.stem}_anonymized{src.suffix.lower()}"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, dst.name])
    with av.open(str(dst)) as c:
        assert [(st.type, st.codec_context.name) for st in c.streams] == [("video", "h264"), ("audio", audio)]
    assert audio_packets(dst) == audio_packets(src)
    # ...in display order (H.264 without B-frames: these containers store no display times; with
    # them the frames came back out of order), each within a frame of its time in the input
    before, after = frame_times(src), frame_times(dst)
    assert len(after) == len(before) == 25
    assert after == sorted(after)
    assert all(abs(a - b) <= Fraction(1, 25) for a, b in zip(after, before))


@needs_model
def test_an_avi_whose_ima_adpcm_sound_no_container_keeps_in_time_is_refused_in_one_line(tmp_path):
    # GIVEN an older camera's AVI with IMA ADPCM sound (MP4, Matroska, QuickTime do not take it, and
    # AVI would time its copied blocks by byte rate: the sound would drift 0.3%)
    src = adpcm_camera(tmp_path / "MVI_0001.AVI")
    before = snapshot(tmp_path)
    # WHEN it is anonymized
    code, _, err = run("anonymize", src)
    # THEN one line names the input, its sound's codec and what to do (it named an .mp4 the user never
    # chose), and nothing is written
    assert_one_line_error(code, err, "MVI_0001.AVI: its sound (adpcm_ima_wav) fits none of MP4, Matroska and QuickTime",
                          "convert the sound first")
    assert "_anonymized" not in err
    assert snapshot(tmp_path) == before


@needs_model
def test_a_folder_goes_on_past_a_video_whose_sound_no_container_takes(tmp_path):
    # GIVEN a camera card's folder: an AVI with IMA ADPCM sound first, then an ordinary clip
    card = tmp_path / "card"
    card.mkdir()
    adpcm_camera(card / "MVI_0001.AVI")
    camera_file(card / "MVI_0002.MP4", "libx264", (176, 144), 25, "yuv420p", 10, [], options={"preset": "ultrafast"})
    # WHEN the folder is anonymized
    code, _, err = run("anonymize", card)
    # THEN the AVI gets its one error line and no output, the clip after it is still anonymized,
    # and the run exits non-zero (the AVI stopped the whole folder)
    assert code == 1
    assert [line for line in err.splitlines() if line.startswith("limelight: error:")] == [
        f"limelight: error: {card / 'MVI_0001.AVI'}: its sound (adpcm_ima_wav) fits none of MP4, Matroska and QuickTime "
        "bit-exact; convert the sound first (ffmpeg -i IN -c:v copy -c:a aac OUT.mkv)"]
    assert sorted(p.name for p in (tmp_path / "card_anonymized").iterdir()) == ["MVI_0002_anonymized.mp4"]


@needs_model
def test_the_report_names_the_streams_the_output_leaves_out(tmp_path):
    from tests.test_video import _with_subtitles

    # GIVEN a clip with a subtitle track naming a person
    src = _with_subtitles(tmp_path / "interview.mkv", tmp_path)
    # WHEN it is anonymized with a report
    code, _, err = run("anonymize", src, "--report", tmp_path / "report.json")
    # THEN the output has no subtitles and the audit trail says which stream was left out
    assert code == 0, err
    with av.open(str(tmp_path / "interview_anonymized.mkv")) as c:
        assert [st.type for st in c.streams] == ["video"]
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["files"][0]["dropped_streams"] == ["subtitle #1 (srt, eng)"]


@needs_model
def test_an_flv_without_a_keyframe_index_is_anonymized(tmp_path):
    from tests.media import audio_packets, frame_times, webcam_flv

    # GIVEN an old webcam's FLV that cannot be seeked (no keyframe index)
    src = webcam_flv(tmp_path / "webcam.flv")
    # WHEN it is anonymized (it failed with a traceback: probing counted its frames after seeking back)
    code, _, err = run("anonymize", src)
    # THEN it is an MP4 with its frames at their times and its MP3 packets
    assert code == 0, err
    dst = tmp_path / "webcam_anonymized.mp4"
    assert frame_times(dst) == frame_times(src) and len(frame_times(src)) == 50
    assert [p[1] for p in audio_packets(dst)] == [p[1] for p in audio_packets(src)]


@needs_model
def test_a_dv_camcorder_file_is_published_as_interlaced_mp4(tmp_path):
    from limelight.video import probe
    from tests.media import audio_packets, frame_times

    # GIVEN a raw DV file (.dv was not taken as a video; its demuxer's average rate reads 60000 fps)
    src = dv_camcorder(tmp_path / "tape01.dv")
    assert probe(src).fps == 25
    # WHEN it is anonymized to the default output (it failed: "fps 60000 is too large" at the trailer)
    code, _, err = run("anonymize", src)
    # THEN it is an MP4 with its 10 frames at their times, still interlaced bottom field first
    # (DV's order), its PCM sound sample for sample
    assert code == 0, err
    dst = tmp_path / "tape01_anonymized.mp4"
    assert frame_times(dst) == frame_times(src) and len(frame_times(src)) == 10
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.field_order == 3  # BB
        assert c.streams.video[0].average_rate == 25
    pcm = lambda path: b"".join(p[1] for p in audio_packets(path))  # noqa: E731
    assert pcm(dst) == pcm(src) and len(pcm(src)) == 10 * 1920 * 4


@needs_model
def test_an_animated_gif_is_anonymized_into_mp4_with_its_frame_delays(tmp_path, clip):
    from PIL import Image

    from tests.media import frame_times

    # GIVEN an animated GIF of the hamilton audience, 30 frames shown 80 ms, then 120 ms each
    # (it failed: "'gif' format does not support 'libx264'"; in a folder it was skipped)
    with av.open(str(clip(HAMILTON))) as c:
        frames = [Image.fromarray(f.to_ndarray(format="rgb24")) for _, f in zip(range(30), c.decode(video=0))]
    src = tmp_path / "crowd.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=[80] * 15 + [120] * 15, loop=0)
    # WHEN it is anonymized with a report
    code, _, err = run("anonymize", src, "--report", tmp_path / "report.json")
    # THEN it is published as MP4 (as the web shows GIFs), every frame at its time, faces blurred
    assert code == 0, err
    dst = tmp_path / "crowd_anonymized.mp4"
    times = frame_times(dst)
    assert times == frame_times(src) and len(times) == 30
    assert times[15] - times[14] == Fraction(8, 100) and times[16] - times[15] == Fraction(12, 100)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["files"][0]["blurred"] >= 3


@needs_model
@pytest.mark.parametrize("suffix", [".webp", ".png"])
def test_an_animated_webp_or_png_is_anonymized_as_a_video(tmp_path, clip, suffix):
    from PIL import Image

    from tests.media import frame_times

    # GIVEN an animated WebP / PNG (APNG) of the hamilton audience: 10 frames, 100 ms each
    # (only its first frame was read: the output was a still; FFmpeg cannot decode animated WebP)
    with av.open(str(clip(HAMILTON))) as c:
        frames = [Image.fromarray(f.to_ndarray(format="rgb24")) for _, f in zip(range(10), c.decode(video=0))]
    src = tmp_path / f"crowd{suffix}"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=100, loop=0)
    # WHEN it is anonymized with a report
    code, _, err = run("anonymize", src, "--report", tmp_path / "report.json")
    # THEN it is published as an MP4 of all its frames at their times, faces blurred
    assert code == 0, err
    dst = tmp_path / "crowd_anonymized.mp4"
    assert frame_times(dst) == [Fraction(i, 10) for i in range(10)]
    doc = json.loads((tmp_path / "report.json").read_text())["files"][0]
    assert (doc["input"], doc["kind"], doc["frames"]) == (str(src), "video", 10) and doc["blurred"] >= 2
    # ... and an animation cannot be written as a still
    code, _, err = run("anonymize", src, "-o", tmp_path / f"still{suffix}")
    assert code == 1 and "is animated: write it as a video" in err and not (tmp_path / f"still{suffix}").exists()


@needs_model
def test_a_still_gif_is_anonymized_as_a_photo(tmp_path, shared_file):
    from PIL import Image

    # GIVEN a one-frame GIF of a group (it came out as a one-frame MP4)
    src = tmp_path / "group.gif"
    Image.open(shared_file("videos/stills/multiface_group.facenet_pytorch.jpg")).convert("RGB").save(src)
    # WHEN it is anonymized with a report
    code, _, err = run("anonymize", src, "--report", tmp_path / "report.json")
    # THEN it is a photo, written as PNG (OpenCV does not write GIF), its faces blurred
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("group_")) == ["group_anonymized.png"]
    doc = json.loads((tmp_path / "report.json").read_text())["files"][0]
    assert doc["kind"] == "image" and doc["blurred"] >= 3


@needs_model
@pytest.mark.parametrize("name, pillow_format, published", [
    ("scan.tif", "TIFF", "scan_anonymized.tif"),  # photo desks
    ("web.avif", "AVIF", "web_anonymized.avif"),  # phones and browsers
    ("saved.jfif", "JPEG", "saved_anonymized.jpg"),  # what browsers save JPEGs as
])
def test_tiff_avif_and_jfif_photos_are_anonymized(tmp_path, shared_file, name, pillow_format, published):
    from PIL import Image

    # GIVEN a group photo in that format (it was "no video or image files" in a folder, and alone
    # an attempt to read it as a video)
    photo = Image.open(shared_file("videos/stills/multiface_group.facenet_pytorch.jpg")).convert("RGB")
    src = tmp_path / name
    photo.save(src, format=pillow_format)
    # WHEN it is anonymized
    code, out, err = run("anonymize", src)
    # THEN it is published in a format that can be written under its name, same size, faces blurred
    assert code == 0, err
    written = Image.open(tmp_path / published)
    assert written.size == photo.size and "6 faces: 0 kept, 6 blurred" in out


def test_default_output_keeps_the_usual_containers():
    from limelight.pipeline import default_output
    from pathlib import Path

    # nothing to open: names only (a file that cannot be read keeps the plain default, and its
    # run reports why)
    assert default_output(Path("/nowhere/a.MOV")).name == "a_anonymized.mov"
    assert default_output(Path("/nowhere/b.avi")).name == "b_anonymized.mp4"
    assert default_output(Path("/nowhere/c.3gp")).name == "c_anonymized.mp4"
    assert default_output(Path("/nowhere/d.heic")).name == "d_anonymized.jpg"


@needs_model
@pytest.mark.parametrize("suffix, profile", [(".png", False), (".png", True), (".webp", False)])
def test_a_cut_out_photo_keeps_its_transparency(tmp_path, shared_file, suffix, profile):
    from PIL import Image, ImageCms

    # GIVEN a group photo made a cut-out: its left eighth transparent, the next eighth half so
    # (and, in one case, with a colour profile, which takes another writer)
    rgba = np.array(Image.open(shared_file("videos/stills/multiface_group.facenet_pytorch.jpg")).convert("RGBA"))
    width = rgba.shape[1]
    rgba[:, : width // 8, 3] = 0
    rgba[:, width // 8 : width // 4, 3] = 128
    src = tmp_path / f"cutout{suffix}"
    extra = {"icc_profile": ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()} if profile else {}
    Image.fromarray(rgba).save(src, **({"lossless": True} if suffix == ".webp" else {}), **extra)
    # WHEN it is anonymized (its transparency was dropped: an RGB picture came out)
    code, _, err = run("anonymize", src)
    assert code == 0, err
    # THEN the output keeps the transparency exactly, and its faces are blurred
    out = Image.open(tmp_path / f"cutout_anonymized{suffix}")
    assert out.mode == "RGBA"
    assert np.array_equal(np.array(out)[..., 3], rgba[..., 3])
    assert np.abs(np.array(out)[..., :3].astype(int) - rgba[..., :3]).max() > 50


@needs_model
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_a_photo_keeps_its_colour_profile_but_not_its_exif(tmp_path, shared_file, suffix):
    from PIL import Image, ImageCms

    # GIVEN a photo with an embedded colour profile and EXIF (a camera make, a GPS block)
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo = Image.open(shared_file("videos/stills/multiface_group.facenet_pytorch.jpg")).convert("RGB")
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0)}  # GPS IFD: latitude
    src = tmp_path / f"group{suffix}"
    photo.save(src, icc_profile=icc, exif=exif.tobytes())
    code, _, err = run("anonymize", src)
    assert code == 0, err
    out = Image.open(tmp_path / f"group_anonymized{suffix}")
    # THEN the output shows the same colours (same profile), its faces are redacted, and no EXIF travels
    assert out.info.get("icc_profile") == icc
    assert np.abs(np.asarray(out, np.int16) - np.asarray(photo, np.int16)).mean() > 0.5
    assert not out.getexif()


@needs_model
def test_a_cmyk_profile_is_not_put_on_the_rgb_photo_written(tmp_path, shared_file):
    from PIL import Image, ImageCms

    # GIVEN a CMYK print file with its CMYK profile (OpenCV reads it as RGB)
    rgb_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    cmyk_profile = rgb_profile[:16] + b"CMYK" + rgb_profile[20:]  # the header's data colour space
    src = tmp_path / "print.jpg"
    Image.open(shared_file("videos/stills/multiface_group.facenet_pytorch.jpg")).convert("CMYK").save(src, icc_profile=cmyk_profile)
    code, _, err = run("anonymize", src)
    assert code == 0, err
    # THEN the RGB output does not claim to be CMYK
    assert Image.open(tmp_path / "print_anonymized.jpg").info.get("icc_profile") is None


@needs_model
def test_an_iphone_heic_photo_is_published_as_jpeg(tmp_path, shared_file):
    import cv2
    from PIL import Image

    # GIVEN a group photo as an iPhone saves it (HEIC)
    photo = Image.open(shared_file("videos/stills/multiface_group.facenet_pytorch.jpg")).convert("RGB")
    src = tmp_path / "IMG_0001.HEIC"
    photo.save(src)
    code, out, err = run("anonymize", src)
    assert code == 0, err
    # THEN it is written as JPEG (what OpenCV and the web can show), same size, faces blurred
    dst = tmp_path / "IMG_0001_anonymized.jpg"
    written = cv2.imread(str(dst))
    assert written is not None and written.shape[:2] == (photo.height, photo.width)
    assert "6 faces" in out


@needs_model
def test_detect_reads_heic_photos_too(tmp_path, shared_file):
    from PIL import Image

    src = tmp_path / "group.heic"
    Image.open(shared_file("videos/stills/multiface_group.facenet_pytorch.jpg")).convert("RGB").save(src)
    code, out, err = run("detect", src, "--json")
    assert code == 0, err
    row = json.loads(out)
    assert (row["width"], row["height"]) == Image.open(src).size and len(row["faces"]) >= 5


@needs_model
def test_a_folder_run_again_into_itself_does_not_anonymize_its_own_results(tmp_path):
    # GIVEN a folder of photos anonymized into itself once (-o the same folder), and an iPhone's pair
    # IMG_1.HEIC / IMG_1.JPG whose second result is named IMG_1_jpg_anonymized.jpg
    folder = tmp_path / "shoot"
    folder.mkdir()
    portrait_photo(folder / "astronaut.png")
    portrait_photo(folder / "IMG_1.jpg")
    (folder / "IMG_1.jfif").write_bytes((folder / "IMG_1.jpg").read_bytes())
    code, _, err = run("anonymize", folder, "-o", folder)
    assert code == 0, err
    first = sorted(p.name for p in folder.iterdir())
    assert first == ["IMG_1.jfif", "IMG_1.jpg", "IMG_1_anonymized.jpg", "IMG_1_jpg_anonymized.jpg", "astronaut.png",
                     "astronaut_anonymized.png"]
    # WHEN it is run again the same way
    code, out, err = run("anonymize", folder, "-o", folder)
    # THEN the three originals are anonymized again, their results are not (it wrote
    # astronaut_anonymized_anonymized.png), and a note says so
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == first
    assert "done: 3 file(s)" in out
    assert "limelight: note: 3 anonymized copies beside their originals skipped" in err
