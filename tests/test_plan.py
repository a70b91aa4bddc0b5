"""Review and edit: `limelight analyze` -> edit the plan -> `limelight render`, and the contact sheet.

The real hamilton clip, its consented performer's photo, and lossless rendering (crf 0) so that
what a plan leaves alone can be compared with the input pixel for pixel."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from limelight.detector import default_model_path
from limelight.plan import Plan, PlanError
from tests.test_cli import assert_one_line_error, run

pytestmark = pytest.mark.skipif(not default_model_path().exists(), reason="the shipped int8 model is not built yet")
HAMILTON = "hamilton_white_house_short_clip.mp4"
LIN = "videos/known_faces/hamilton_white_house/lin-manuel-miranda.png"


@pytest.fixture(scope="module")
def analyzed(clip, shared_file, tmp_path_factory):
    """The clip (a symlink in a scratch folder), its plan from `limelight analyze`, and the folder."""
    folder = tmp_path_factory.mktemp("plan")
    src = folder / HAMILTON
    src.symlink_to(clip(HAMILTON))
    code, out, err = run("analyze", src, "--known-faces", shared_file(LIN), "-o", folder / "plan.json")
    assert code == 0, err
    return src, folder / "plan.json", folder


def _yuv(path, frames):
    wanted, out = set(frames), {}
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in wanted:
                out[i] = f.to_ndarray()[:f.height]  # the Y plane
    return out


def _edited(plan_path, tmp_path, change):
    doc = json.loads(plan_path.read_text())
    change(doc)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    return path


def test_the_plan_holds_one_decision_per_track_and_its_input(analyzed):
    src, plan_path, _ = analyzed
    doc = json.loads(plan_path.read_text())
    # THEN it is a versioned plan of the clip: its frames and size, a fingerprint, and tracks whose
    # boxes are [frame, x1, y1, x2, y2] inside the frame
    assert doc["limelight_plan"] == 1
    assert (doc["input"]["frames"], doc["input"]["width"], doc["input"]["height"]) == (275, 640, 360)
    assert doc["input"]["fingerprint"].startswith("sha256")
    shown = [t for t in doc["tracks"] if t["decision"] == "show"]
    assert [t["person"] for t in shown] == ["lin-manuel-miranda"]
    # AND his track after the cut at frame 82 is shown from its first frame to its last
    lin = shown[0]
    assert lin["boxes"][0][0] == lin["first_frame"] and 80 <= lin["first_frame"] <= 86 and lin["last_frame"] - lin["first_frame"] > 100
    assert all(len(b) == 5 and 0 <= b[0] < 275 for t in doc["tracks"] for b in t["boxes"])
    assert all(t["decision"] == "blur" and t["person"] is None for t in doc["tracks"] if t is not lin)
    # AND the analysis says how many tracker tracks became how many plan tracks
    assert doc["analysis"]["tracker_tracks"] >= doc["analysis"]["linked_tracks"] > 0


@pytest.mark.slow
def test_render_honours_the_plan_exactly_show_and_blur_and_regions(analyzed, tmp_path):
    src, plan_path, _ = analyzed
    doc = json.loads(plan_path.read_text())
    lin = next(t for t in doc["tracks"] if t["decision"] == "show")
    stranger = max((t for t in doc["tracks"] if t["decision"] == "blur"), key=lambda t: len(t["boxes"]))

    def edit(d):
        for t in d["tracks"]:
            if t["id"] == lin["id"]:
                t["decision"] = "blur"  # the reviewer blurs the consented performer...
            elif t["id"] == stranger["id"]:
                t["decision"], t["person"] = "show", "reviewed"  # ...and shows one audience face
        d["regions"] = [{"first": 10, "last": 12, "box": [0, 0, 64, 64]}]  # and blurs a corner

    edited = _edited(plan_path, tmp_path, edit)
    dst = tmp_path / "out.mp4"
    code, out, err = run("render", src, "--plan", edited, "-o", dst, "--crf", "0", "--report", tmp_path / "r.json")
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())["files"][0]
    tracks = {t["track"]: t for t in report["tracks"]}
    # THEN the report follows the edited plan: the performer's every box blurred, the shown face named
    assert tracks[lin["id"]]["frames_blurred"] == len(lin["boxes"]) and tracks[lin["id"]]["decision"] == "blurred"
    assert tracks[stranger["id"]]["shown_as"] == {"reviewed": len(stranger["boxes"])}
    assert report["regions"] == 1

    frame_l = lin["boxes"][len(lin["boxes"]) // 2][0]
    frame_s = stranger["boxes"][len(stranger["boxes"]) // 2][0]
    before, after = _yuv(src, [frame_l, frame_s, 11, 20]), _yuv(dst, [frame_l, frame_s, 11, 20])

    def region(frame, box):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        return before[frame][y1:y2, x1:x2].astype(int), after[frame][y1:y2, x1:x2].astype(int)

    # AND the performer's face is blurred now
    a, b = region(frame_l, next(b[1:] for b in lin["boxes"] if b[0] == frame_l))
    assert np.abs(a - b).mean() > 5
    # AND the audience face turned to "show" is exactly as decoded (lossless render), unless
    # another blurred box overlaps it
    box = next(b[1:] for b in stranger["boxes"] if b[0] == frame_s)
    others = [b[1:] for t in doc["tracks"] if t["id"] not in (stranger["id"],) for b in t["boxes"] if b[0] == frame_s]
    x1, y1, x2, y2 = box
    if not any(o[0] < x2 + 20 and o[2] > x1 - 20 and o[1] < y2 + 20 and o[3] > y1 - 20 for o in others):
        a, b = region(frame_s, box)
        assert np.array_equal(a, b)
    # AND the region is blurred on its frames only
    assert np.abs(before[11][:48, :48].astype(int) - after[11][:48, :48]).mean() > 1
    assert np.array_equal(before[20][:48, :48], after[20][:48, :48]) or not any(
        b[1] < 80 and b[2] < 80 for t in doc["tracks"] for b in t["boxes"] if b[0] == 20)


@pytest.mark.slow
def test_every_show_turned_to_blur_blurs_every_consented_person(analyzed, tmp_path):
    src, plan_path, _ = analyzed

    def all_blur(d):
        for t in d["tracks"]:
            t["decision"], t["person"] = "blur", None

    dst = tmp_path / "out.mp4"
    code, out, err = run("render", src, "--plan", _edited(plan_path, tmp_path, all_blur), "-o", dst, "--report", tmp_path / "r.json")
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())["files"][0]
    # THEN nothing is shown, and the summary line says so
    assert report["kept"] == 0 and report["shown"] == {}
    assert all(t["frames_blurred"] == t["frames"] for t in report["tracks"])
    assert "0 kept" in out


def test_the_contact_sheet_has_one_tile_per_track(analyzed, tmp_path):
    import cv2

    from limelight.review import LABEL, TILE, COLUMNS

    src, plan_path, _ = analyzed
    sheet = tmp_path / "sheet.png"
    code, out, err = run("review", src, "--plan", plan_path, "-o", sheet)
    assert code == 0, err
    tracks = len(json.loads(plan_path.read_text())["tracks"])
    image = cv2.imread(str(sheet))
    # THEN the sheet has a tile per track, in rows of COLUMNS
    rows = (tracks + COLUMNS - 1) // COLUMNS
    assert image.shape[:2] == (rows * (TILE + LABEL), COLUMNS * TILE)
    # AND the shown track's tile has a green border, a blurred one's red
    plan = Plan.load(plan_path)
    k = next(i for i, t in enumerate(plan.tracks) if t.decision == "show")
    y, x = (k // COLUMNS) * (TILE + LABEL), (k % COLUMNS) * TILE
    b, g, r = image[y + 2, x + TILE // 2]
    assert g > 120 and r < 100
    k = next(i for i, t in enumerate(plan.tracks) if t.decision == "blur")
    y, x = (k // COLUMNS) * (TILE + LABEL), (k % COLUMNS) * TILE
    b, g, r = image[y + 2, x + TILE // 2]
    assert r > 150 and g < 100


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(limelight_plan=2), ["version 2"]),
    (lambda d: d["tracks"][0]["boxes"][0].__setitem__(slice(1, 5), [5000.0, 10.0, 5050.0, 60.0]), ["outside the 640x360 frame"]),
    (lambda d: d["tracks"][0]["boxes"][0].__setitem__(0, 9999), ["outside 0..274"]),
    (lambda d: d["tracks"][0].update(decision="maybe"), ["must be \"blur\" or \"show\""]),
    (lambda d: d["input"].update(fingerprint="sha256-sampled:0"), ["made for another file"]),
    (lambda d: d.update(regions=[{"first": 3}]), ["region"]),
])
def test_a_bad_plan_is_refused_with_one_line_and_nothing_written(analyzed, tmp_path, change, words):
    src, plan_path, _ = analyzed
    dst = tmp_path / "out.mp4"
    code, out, err = run("render", src, "--plan", _edited(plan_path, tmp_path, change), "-o", dst)
    assert_one_line_error(code, err, *words)
    assert list(tmp_path.iterdir()) == [tmp_path / "edited.json"]


def test_a_plan_that_is_not_json_or_not_a_plan_is_refused(analyzed, tmp_path):
    src, _, _ = analyzed
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "other.json").write_text('{"files": []}')
    for name, words in (("bad.json", ["not readable JSON"]), ("other.json", ["not a LimeLight plan"]), ("none.json", ["no such plan"])):
        code, out, err = run("render", src, "--plan", tmp_path / name, "-o", tmp_path / "out.mp4")
        assert_one_line_error(code, err, name, *words)
    assert not (tmp_path / "out.mp4").exists()


def test_a_plan_for_another_video_is_refused(analyzed, clip, tmp_path):
    _, plan_path, _ = analyzed
    other = clip("talking_head_retalking_1.mp4")
    code, out, err = run("render", other, "--plan", plan_path, "-o", tmp_path / "out.mp4")
    assert_one_line_error(code, err, "made for another file", HAMILTON)
    assert not list(tmp_path.iterdir())
    with pytest.raises(PlanError):
        Plan.load(plan_path).check_input(other)


def test_the_render_lookup_gives_each_frame_its_boxes_without_a_per_frame_index():
    from limelight.plan import PlanTrack, Region

    def track(i, frames, decision="blur"):
        f = np.array(frames)
        return PlanTrack(i, decision, "ann" if decision == "show" else None, f, np.tile(np.float32([[1, 1, 5, 5]]), (len(f), 1)))

    # GIVEN tracks with gaps (as an edited plan may have) and a region over frames 4-6
    plan = Plan({}, [track(0, [0, 1, 2, 5, 6]), track(1, [3, 4], "show"), track(2, [2, 3, 9])], [Region(4, 6, (0, 0, 3, 3))])
    at = plan.frames()
    seen = {i: sorted((e[0], e[2], e[3]) for e in at(i)) for i in range(11)}
    # THEN every frame gets exactly its boxes: blurred tracks, the shown one named, the region (-1)
    assert seen == {0: [(0, True, None)], 1: [(0, True, None)], 2: [(0, True, None), (2, True, None)],
                    3: [(1, False, "ann"), (2, True, None)], 4: [(-1, True, None), (1, False, "ann")],
                    5: [(-1, True, None), (0, True, None)], 6: [(-1, True, None), (0, True, None)],
                    7: [], 8: [], 9: [(2, True, None)], 10: []}
    # AND frames must come in order, as render decodes them
    with pytest.raises(ValueError):
        at(3)
