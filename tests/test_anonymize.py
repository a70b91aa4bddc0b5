"""The engine end to end on real clips: selective blurring that keeps sound and timing."""

import json
from dataclasses import replace
from fractions import Fraction

import av
import numpy as np
import pytest

from limelight.detector import Detector, default_model_path
from limelight.pipeline import AnonymizeOptions, Anonymizer
from limelight.recognizer import Recognizer, encode_face, load_gallery
from tests.media import assert_same_pictures, audio_packets, demo_clip, frame_times

HAMILTON = "hamilton_white_house_short_clip.mp4"
LIN = "videos/known_faces/hamilton_white_house/lin-manuel-miranda.png"

pytestmark = pytest.mark.skipif(not default_model_path().exists(), reason="the shipped int8 model is not built yet")


def _frames(path, indices):
    wanted, out = set(indices), {}
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in wanted:
                out[i] = f.to_ndarray(format="rgb24")
    return out


@pytest.fixture(scope="module")
def hamilton_run(clip, shared_file, tmp_path_factory):
    src = clip(HAMILTON)
    gallery_dir = tmp_path_factory.mktemp("known")
    (gallery_dir / "lin-manuel-miranda.png").symlink_to(shared_file(LIN))
    before = src.read_bytes()
    engine = Anonymizer(Detector(), Recognizer(load_gallery(gallery_dir)), AnonymizeOptions())
    dst = tmp_path_factory.mktemp("out") / "hamilton_anonymized.mp4"
    report = engine.video(src, dst)
    return src, dst, report, before


@pytest.mark.slow
def test_known_performer_is_kept_and_audience_blurred(hamilton_run):
    src, dst, report, _ = hamilton_run
    doc = report.as_dict()
    kept = [t for t in doc["tracks"] if t["decision"] == "kept as lin-manuel-miranda"]
    blurred = [t for t in doc["tracks"] if t["decision"] == "blurred"]
    # THEN one long track is his, and the audience's faces are blurred
    assert kept and max(t["frames"] for t in kept) > 100
    assert len(blurred) >= 3
    # AND his track after the cut at frame 82 is shown from (nearly) its start: its first samples, as
    # he moves into the shot, miss his photo (0.56-0.58), and the decision reached later still reaches
    # back to them (4 frames blurred; 14 without the reach-back, 50 with the first samples 2 frames apart)
    his = max(kept, key=lambda t: t["frames"])
    assert his["first_frame"] > 0 and his["frames_blurred"] <= 6
    # AND in the output his face is still his, while a blurred face no longer matches itself
    frame_i, *box, _ = his["boxes"][len(his["boxes"]) // 2]
    frames_in, frames_out = _frames(src, [frame_i]), _frames(dst, [frame_i])
    enc_in, enc_out = encode_face(frames_in[frame_i], box), encode_face(frames_out[frame_i], box)
    assert enc_in is not None and enc_out is not None
    assert np.linalg.norm(enc_in - enc_out) < 0.3



@pytest.mark.slow
def test_blurred_faces_lose_their_detail(hamilton_run):
    import cv2

    src, dst, report, _ = hamilton_run
    doc = report.as_dict()
    checked = 0
    for t in doc["tracks"]:
        if t["decision"] != "blurred":
            continue
        frame_i, x1, y1, x2, y2, blurred = t["boxes"][len(t["boxes"]) // 2]
        # under 24 px the inner patch is ~14 px across and the codec's noise outweighs any face detail
        # (seen: an 18 px false alarm on a dark, near-flat patch, Laplacian variance 14 in, 10 out)
        if not blurred or (x2 - x1) < 24:
            continue
        # the face's inner 60%: the default ellipse leaves the box corners (background) alone
        dx, dy = (x2 - x1) * 0.2, (y2 - y1) * 0.2
        inner = (slice(int(y1 + dy), int(y2 - dy)), slice(int(x1 + dx), int(x2 - dx)))
        a = _frames(src, [frame_i])[frame_i][inner]
        b = _frames(dst, [frame_i])[frame_i][inner]
        detail_in = cv2.Laplacian(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
        detail_out = cv2.Laplacian(cv2.cvtColor(b, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
        if detail_in < 10:  # a flat patch (false alarm, dark corner) has no detail to lose
            continue
        assert detail_out < 0.35 * detail_in, f"track {t['track']} frame {frame_i}"
        checked += 1
    assert checked >= 3


@pytest.mark.slow
def test_sound_and_timing_are_those_of_the_input(hamilton_run):
    src, dst, _, before = hamilton_run
    assert audio_packets(dst) == audio_packets(src)  # bit-exact, same pts/dts
    assert frame_times(dst) == frame_times(src)  # same frame count and timestamps
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        offset_in = float(a.streams.video[0].start_time * a.streams.video[0].time_base) - float(a.streams.audio[0].start_time * a.streams.audio[0].time_base)
        offset_out = float(b.streams.video[0].start_time * b.streams.video[0].time_base) - float(b.streams.audio[0].start_time * b.streams.audio[0].time_base)
    assert offset_out == pytest.approx(offset_in, abs=1e-3)
    assert src.read_bytes() == before  # the input is untouched


@pytest.mark.slow
def test_output_does_not_depend_on_the_number_of_detection_threads(hamilton_run, shared_file, tmp_path):
    # GIVEN the hamilton run with the default detection workers, and the same run with 3 frames
    # detected at once on 3 replicas of the detector (more than this machine's cores)
    src, dst, report, _ = hamilton_run
    gallery_dir = tmp_path / "known"
    gallery_dir.mkdir()
    (gallery_dir / "lin-manuel-miranda.png").symlink_to(shared_file(LIN))
    engine = Anonymizer(Detector(), Recognizer(load_gallery(gallery_dir)), AnonymizeOptions(detect_workers=3))
    other = engine.video(src, tmp_path / "three.mp4")
    detectors = engine._detectors()
    assert len(detectors) == 3 and len({id(d.runner.interpreter) for d in detectors}) == 3
    # THEN the tracks, their decisions and every box are the same, and so are the frames (up to
    # libx264's run-to-run noise, see tests.media.assert_same_pictures)
    assert other.as_dict()["tracks"] == report.as_dict()["tracks"]
    assert_same_pictures(tmp_path / "three.mp4", dst)
    assert frame_times(tmp_path / "three.mp4") == frame_times(dst)


@pytest.mark.slow
def test_without_known_faces_everyone_is_blurred(clip, tmp_path):
    src = clip("talking_head_retalking_2.mp4")
    report = Anonymizer(Detector(), None).video(src, tmp_path / "out.mp4")
    doc = report.as_dict()
    assert doc["faces"] >= 1 and doc["kept"] == 0
    assert all(b[5] == 1 for t in doc["tracks"] for b in t["boxes"])
    json.dumps(doc)  # the report is plain JSON


@pytest.mark.slow
def test_consented_person_who_turns_away_is_shown_for_her_whole_track(clip, shared_file, tmp_path):
    # GIVEN the friends clip and all six friends as consented people, one photo each
    src = clip("friends_yakhyo_in_video.mp4")
    gallery_dir = tmp_path / "known"
    gallery_dir.mkdir()
    for name in ["Chandler", "Joey", "Monica", "Phoebe", "Rachel", "Ross"]:
        (gallery_dir / f"{name}.png").symlink_to(shared_file(f"videos/known_faces/friends/{name}.yakhyo.png"))
    gallery = load_gallery(gallery_dir)
    engine = Anonymizer(Detector(), Recognizer(gallery), AnonymizeOptions())
    dst = tmp_path / "friends_anonymized.mp4"
    doc = engine.video(src, dst).as_dict()

    # WHEN Phoebe turns away mid-shot (frames ~290-355: no sample matches her) and faces the camera again
    phoebe = [t for t in doc["tracks"] if t["first_frame"] <= 300 and t["last_frame"] >= 395
              and t["decision"] == "kept as Phoebe"]
    assert len(phoebe) == 1
    shown = {b[0]: b[5] == 0 for b in phoebe[0]["boxes"]}
    # THEN she is shown in every frame of her track, turned or not, from its first frame (the
    # one-pass engine blurred her while turned, and for up to a second after each shot cut)
    assert shown[275] and shown[340] and shown[395] and all(shown.values())
    assert phoebe[0]["first_frame"] == 270 and phoebe[0]["frames_blurred"] == 0
    # AND the report names her for every frame she was shown
    assert phoebe[0]["shown_as"] == {"Phoebe": phoebe[0]["frames"] - phoebe[0]["frames_blurred"]}
    assert all(sum(t["shown_as"].values()) == t["frames"] - t["frames_blurred"] for t in doc["tracks"])
    # AND in the output she is still herself at frame 395
    _, *box, _ = next(b for b in phoebe[0]["boxes"] if b[0] == 395)
    out = encode_face(_frames(dst, [395])[395], box)
    assert out is not None
    assert np.linalg.norm(out - gallery.encodings[gallery.names.index("Phoebe")]) < 0.45


def test_only_the_redacted_regions_change(tmp_path, monkeypatch):
    from limelight.video import EncodeOptions

    # GIVEN the demo's two portraits over a moving background (1 s), anonymized losslessly (crf 0)
    # so that any change the engine makes shows, with no known face: both faces are blurred
    src, _ = demo_clip(tmp_path, monkeypatch, seconds=1)
    dst = tmp_path / "out.mp4"
    options = AnonymizeOptions(encode=EncodeOptions(crf=0))
    report = Anonymizer(Detector(), None, options).video(src, dst)
    # THEN both faces were blurred in every frame
    boxes = [b for t in report.as_dict()["tracks"] for b in t["boxes"]]
    frames = report.frames
    assert frames == 25 and all(b[5] == 1 for b in boxes)
    assert {int(b[0]) for b in boxes} == set(range(frames)) and len(boxes) >= 2 * frames
    from limelight.redact import box_scales

    with av.open(str(src)) as a, av.open(str(dst)) as b:
        for i, (fa, fb) in enumerate(zip(a.decode(video=0), b.decode(video=0), strict=True)):
            ya, yb = fa.to_ndarray(), fb.to_ndarray()  # raw I420: Y rows, then U and V
            h = fa.height
            changed = np.zeros(ya.shape, bool)
            for _, x1, y1, x2, y2, _ in (r for r in boxes if r[0] == i):
                scale = box_scales(np.array([[x1, y1, x2, y2]]), options.redact.scale)[0]  # wider for a small face
                cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * scale / 2 + 2, (y2 - y1) * scale / 2 + 2
                lo_x, hi_x, lo_y, hi_y = int(cx - hw), int(cx + hw) + 1, int(cy - hh), int(cy + hh) + 1
                changed[max(lo_y, 0):hi_y, max(lo_x, 0):hi_x] = True
                # the chroma planes, at half size: U then V, each h / 4 rows of the array's width
                uv = changed[h:].reshape(2, h // 2, fa.width // 2)
                uv[:, max(lo_y // 2, 0):hi_y // 2 + 1, max(lo_x // 2, 0):hi_x // 2 + 1] = True
            # AND outside the (scaled) face boxes every Y, U and V sample is exactly the input's
            assert np.array_equal(ya[~changed], yb[~changed]), f"frame {i}: pixels outside the faces changed"
            assert np.abs(ya[:h][changed[:h]].astype(int) - yb[:h][changed[:h]]).mean() > 3


def test_mark_faces_draws_kept_and_blurred_boxes_on_video(tmp_path, monkeypatch):
    from limelight.recognizer import Recognizer, load_gallery

    # GIVEN the demo clip (1 s) with Grace Hopper consenting, anonymized with --mark-faces
    src, known = demo_clip(tmp_path, monkeypatch, seconds=1)
    dst = tmp_path / "out.mp4"
    report = Anonymizer(Detector(), Recognizer(load_gallery(known)), AnonymizeOptions(mark_faces=True)).video(src, dst)
    tracks = report.as_dict()["tracks"]
    kept = [b for t in tracks if t["decision"] == "kept as grace_hopper" for b in t["boxes"] if b[0] == 20]
    blurred = [b for t in tracks if t["decision"] == "blurred" for b in t["boxes"] if b[0] == 20]
    assert kept and blurred
    rgb = _frames(dst, [20])[20].astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    green, red = (g > 180) & (r < 90) & (b < 90), (r > 180) & (g < 90) & (b < 90)

    def on_outline(mask, box):
        _, x1, y1, x2, y2, _ = (int(round(v)) for v in box)
        return mask[max(y1 - 3, 0):y1 + 4, x1:x2].sum()  # the top edge of the box

    # THEN frame 20 shows her box outlined in green and a blurred face's in red
    assert on_outline(green, kept[0]) > 20 and on_outline(red, blurred[0]) > 20


def test_faster_video_samples_faces_as_often_per_second(tmp_path, monkeypatch):
    from dataclasses import replace

    import limelight.pipeline as pipeline
    from limelight.recognizer import Recognizer, load_gallery

    # GIVEN the demo clip at 60 fps (1 s), Grace Hopper consenting
    src, known = demo_clip(tmp_path, monkeypatch, seconds=1, fps=60)
    recognizer, detector = Recognizer(load_gallery(known)), Detector()
    asked = []
    submit = pipeline.FaceEncoder.submit_crop
    monkeypatch.setattr(pipeline.FaceEncoder, "submit_crop", lambda self, job: asked.append(1) or submit(self, job))

    def samples(base_fps: float) -> tuple[int, dict]:
        asked.clear()
        options = AnonymizeOptions()
        options = replace(options, recognition=replace(options.recognition, base_fps=base_fps), worker_process=False)
        report = Anonymizer(detector, recognizer, options).video(src, tmp_path / f"out_{base_fps}.mp4")
        return len(asked), {t["decision"] for t in report.as_dict()["tracks"]}

    # WHEN the schedule is stretched to the video's rate (the default, for 30 fps) and when it is not
    stretched, kept = samples(30.0)
    as_written, kept_too = samples(120.0)
    # THEN the 60 fps video asks for fewer encodings, and she is kept either way
    # (the sampling windows are written in frames at 30 fps and stretched for faster video)
    assert stretched < as_written
    assert "kept as grace_hopper" in kept and "kept as grace_hopper" in kept_too


def _turned_copy(src, dst):
    """`src` as a phone stores a portrait video: each frame turned a quarter clockwise, with a
    display rotation (90 degrees counter-clockwise) that turns it back for the viewer."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        iv = inp.streams.video[0]
        ov = out.add_stream("libx264", rate=iv.average_rate)
        ov.width, ov.height, ov.pix_fmt = iv.height, iv.width, "yuv420p"
        ov.options = {"preset": "ultrafast", "crf": "10"}
        ov.set_display_rotation(90)
        for f in inp.decode(iv):
            g = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(f.to_ndarray(format="rgb24"), -1)), format="rgb24")
            g.pts, g.time_base = f.pts, f.time_base
            out.mux(ov.encode(g))
        out.mux(ov.encode(None))
    return dst


def _anamorphic_copy(src, dst):
    """`src` stored squeezed to 3/4 of its width with a 4:3 sample aspect ratio, as HDV and XDCAM
    store 1920-wide pictures in 1440 x 1080."""
    from fractions import Fraction

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        iv = inp.streams.video[0]
        ov = out.add_stream("libx264", rate=iv.average_rate)
        ov.width, ov.height, ov.pix_fmt = iv.width * 3 // 4, iv.height, "yuv420p"
        ov.codec_context.sample_aspect_ratio = Fraction(4, 3)
        ov.options = {"preset": "ultrafast", "crf": "10"}
        for f in inp.decode(iv):
            g = f.reformat(width=ov.width, height=ov.height, format="yuv420p", interpolation="AREA")
            g.pts, g.time_base = f.pts, f.time_base
            out.mux(ov.encode(g))
        out.mux(ov.encode(None))
    return dst


@pytest.mark.slow
def test_an_anamorphic_video_is_seen_as_shown(hamilton_run, shared_file, tmp_path):
    from limelight.anchors import iou_matrix
    from limelight.video import probe

    src, _, upright_report, _ = hamilton_run
    # GIVEN the hamilton clip stored anamorphic (480 x 360 pixels shown 640 wide: SAR 4:3)
    squeezed = _anamorphic_copy(src, tmp_path / "hdv.mp4")
    assert probe(squeezed).sample_aspect_ratio == Fraction(4, 3)
    gallery_dir = tmp_path / "known"
    gallery_dir.mkdir()
    (gallery_dir / "lin-manuel-miranda.png").symlink_to(shared_file(LIN))
    engine = Anonymizer(Detector(), Recognizer(load_gallery(gallery_dir)), AnonymizeOptions())
    doc = engine.video(squeezed, tmp_path / "out.mp4").as_dict()
    up = upright_report.as_dict()
    # THEN the consented performer is recognised as in the square-pixel clip (seen squeezed, he was
    # shown in 79 of his 133 frames), and the faces blurred there are blurred here (76% of them were
    # found squeezed; 91% now, the rest lost to the 480-pixel width)
    his = max((t for t in doc["tracks"] if t["decision"] == "kept as lin-manuel-miranda"), key=lambda t: t["frames"], default=None)
    assert his is not None and his["frames"] > 100 and sum(his["shown_as"].values()) >= 120
    mine = {}
    for t in doc["tracks"]:
        for b in t["boxes"]:
            if b[5]:
                mine.setdefault(int(b[0]), []).append([b[1] * 4 / 3, b[2], b[3] * 4 / 3, b[4]])
    wanted = [(int(b[0]), b[1:5]) for t in up["tracks"] for b in t["boxes"] if b[5]]
    found = sum(1 for frame, box in wanted
                if frame in mine and iou_matrix(np.array([box]), np.array(mine[frame])).max() > 0.3)
    assert found >= 0.85 * len(wanted)
    # AND the report says how its stored pixels are shown, for whoever reads its boxes
    assert doc["pixel_aspect"] == "4:3" and up["pixel_aspect"] == "1:1"


def _woven(src, dst, frames: int, interlaced: bool = True, size: tuple[int, int] | None = None):
    """`src` (a 50 fps clip) as a 25i camera records it: each frame's top lines from frame 2k and its
    bottom lines from frame 2k + 1, encoded interlaced, top field first; with `interlaced` False,
    frame 2k alone, encoded progressive (the same moments, one per frame). `size`: scaled to it."""
    import cv2

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        iv = inp.streams.video[0]
        width, height = size or (iv.width, iv.height)
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        options = {"preset": "ultrafast", "crf": "16"}
        if interlaced:
            video.codec_context.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
            options["x264-params"] = "tff=1"
        video.options = options
        pictures = [cv2.resize(f.to_ndarray(format="rgb24"), (width, height), interpolation=cv2.INTER_CUBIC)
                    for _, f in zip(range(2 * frames), inp.decode(iv))]
        for k in range(frames):
            picture = pictures[2 * k].copy()
            if interlaced:
                picture[1::2] = pictures[2 * k + 1][1::2]
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = k
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return dst


@pytest.mark.slow
def test_faces_in_an_interlaced_crowd_are_found_as_in_progressive_video(clip, tmp_path):
    from limelight.anchors import iou_matrix

    # GIVEN the 50 fps street crowd as a 25i camera records it, and the same moments progressive
    src = clip("street_crowd_openpose.avi")
    woven, plain = _woven(src, tmp_path / "i.mp4", 100), _woven(src, tmp_path / "p.mp4", 100, interlaced=False)
    # Fragments are not linked here: the boxes interpolated between them are a guess that the two
    # runs make differently (with linking, 67% of the progressive run's boxes are matched)
    options = AnonymizeOptions()
    engine = Anonymizer(Detector(), None, replace(options, recognition=replace(options.recognition, link_gap=0)))
    fields, frames = (engine.video(v, tmp_path / f"out_{v.name}").as_dict() for v in (woven, plain))

    def blurred(doc):
        found = {}
        for t in doc["tracks"]:
            for b in t["boxes"]:
                if b[5]:
                    found.setdefault(int(b[0]), []).append(b[1:5])
        return found

    # THEN most faces blurred in the progressive video are blurred in the interlaced one too: seen
    # whole, each moving face combed and doubled, 58% were; seen by one field, 72-76%
    theirs, mine = blurred(frames), blurred(fields)
    wanted = [(f, box) for f, boxes in theirs.items() for box in boxes]
    hit = sum(1 for f, box in wanted if f in mine and iou_matrix(np.array([box]), np.array(mine[f])).max() > 0.3)
    assert len(wanted) > 1000 and hit >= 0.7 * len(wanted)


@pytest.mark.slow
def test_a_consented_performer_in_interlaced_video_is_recognised(clip, shared_file, tmp_path):
    # GIVEN the hamilton clip woven into fields (each frame's lines from two moments, as interlaced
    # cameras record), Lin-Manuel Miranda consenting
    woven = _woven(clip(HAMILTON), tmp_path / "i.mp4", 137)
    gallery_dir = tmp_path / "known"
    gallery_dir.mkdir()
    (gallery_dir / "lin-manuel-miranda.png").symlink_to(shared_file(LIN))
    engine = Anonymizer(Detector(), Recognizer(load_gallery(gallery_dir)), AnonymizeOptions())
    doc = engine.video(woven, tmp_path / "out.mp4").as_dict()
    # THEN he is shown nearly throughout his track: his face is read from one field, not from the
    # combed frame (from the combed frame he was shown in 45 of his 69 frames)
    his = max((t for t in doc["tracks"] if t["decision"] == "kept as lin-manuel-miranda"), key=lambda t: t["frames"], default=None)
    assert his is not None and his["frames"] > 60 and sum(his["shown_as"].values()) >= 0.9 * his["frames"]
    # AND in a 1080i copy, where a cut falls between two fields, his track ends with his shot: judged
    # whole, that frame hid the cut, his track ran on 27 frames into the next shot, whose samples did
    # not match, and he was blurred throughout
    hd = engine.video(_woven(clip(HAMILTON), tmp_path / "hd.mp4", 137, size=(1920, 1080)), tmp_path / "hd_out.mp4").as_dict()
    his = max((t for t in hd["tracks"] if t["decision"] == "kept as lin-manuel-miranda"), key=lambda t: t["frames"], default=None)
    assert his is not None and 60 < his["frames"] < 80 and sum(his["shown_as"].values()) >= 0.9 * his["frames"]


@pytest.mark.slow
def test_a_video_stored_on_its_side_is_seen_upright(hamilton_run, shared_file, tmp_path):
    from limelight.anchors import iou_matrix
    from limelight.video import probe, upright_boxes

    src, _, upright_report, _ = hamilton_run
    # GIVEN the hamilton clip stored turned, as phones store portrait video (display rotation 90)
    turned = _turned_copy(src, tmp_path / "turned.mp4")
    gallery_dir = tmp_path / "known"
    gallery_dir.mkdir()
    (gallery_dir / "lin-manuel-miranda.png").symlink_to(shared_file(LIN))
    engine = Anonymizer(Detector(), Recognizer(load_gallery(gallery_dir)), AnonymizeOptions())
    dst = tmp_path / "out.mp4"
    doc = engine.video(turned, dst).as_dict()
    up = upright_report.as_dict()
    # THEN the faces are found as in the upright clip (the detector saw the frames on their side:
    # 850 blurred face-frames against 1136 upright), and the consented performer is recognised
    blurred = sum(t["frames_blurred"] for t in doc["tracks"])
    assert blurred >= 0.95 * sum(t["frames_blurred"] for t in up["tracks"])
    his = max((t for t in doc["tracks"] if t["decision"] == "kept as lin-manuel-miranda"), key=lambda t: t["frames"], default=None)
    assert his is not None and his["frames"] > 100 and his["frames_blurred"] <= 6
    # AND the boxes are in the stored frame's pixels: turned upright they sit where the upright run's are
    mine = max((t for t in up["tracks"] if t["decision"] == "kept as lin-manuel-miranda"), key=lambda t: t["frames"])
    theirs = {int(b[0]): b[1:5] for b in mine["boxes"]}
    info = probe(turned)
    pairs = [(upright_boxes(np.array([b[1:5]]), 1, info.coded_height, info.coded_width)[0], theirs[int(b[0])])
             for b in his["boxes"] if int(b[0]) in theirs]
    assert len(pairs) > 100
    assert np.median([iou_matrix(a[None], np.array([t]))[0, 0] for a, t in pairs]) > 0.8
    # AND the report says so, for whoever reads its boxes; the output is stored on its side too
    assert doc["rotation"] == 90 and up["rotation"] == 0
    out = probe(dst)
    assert (out.rotation, out.coded_width, out.coded_height) == (90, info.coded_width, info.coded_height)
