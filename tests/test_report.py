"""The audit report's per-frame boxes: what it says, and what it costs to hold for a long video."""

from __future__ import annotations

import json
import tracemalloc

from limelight.report import FileReport, write_report


def test_boxes_come_back_as_rows_to_a_tenth_of_a_pixel(tmp_path):
    report = FileReport("in.mp4", "out.mp4", "video")
    report.add_box(7, 3, [10.04, -2.26, 50.55, 80.0, 0.9], blurred=True)  # a 5th value (the score) is not kept
    report.add_box(7, 4, [11.0, 0.0, 51.0, 81.0], blurred=False, shown_as="ann")
    track = report.as_dict()["tracks"][0]
    assert track["boxes"] == [[3, 10.0, -2.3, 50.5, 80.0, 1], [4, 11.0, 0.0, 51.0, 81.0, 0]]
    assert (track["first_frame"], track["last_frame"], track["frames"], track["frames_blurred"]) == (3, 4, 2, 1)
    assert track["shown_as"] == {"ann": 1}
    # ... and the written JSON holds the same rows
    path = write_report(tmp_path / "r.json", {}, {}, [report])
    assert json.loads(path.read_text())["files"][0]["tracks"][0]["boxes"] == track["boxes"]


def test_the_file_says_how_many_frames_each_consented_person_was_shown_in():
    report = FileReport("in.mp4", "out.mp4", "video")
    for frame in range(3):
        report.add_box(1, frame, [0, 0, 10, 10], blurred=False, shown_as="zoe")
        report.add_box(2, frame, [20, 0, 30, 10], blurred=frame == 0, shown_as=None if frame == 0 else "ann")
    report.add_box(5, 9, [0, 0, 10, 10], blurred=False, shown_as="ann")  # the same person on a later track
    report.add_box(6, 9, [40, 0, 50, 10], blurred=True)
    assert report.shown == {"ann": 3, "zoe": 3}
    assert list(report.as_dict()["shown"]) == ["ann", "zoe"]  # by name
    assert FileReport("a.jpg", "b.jpg", "image").as_dict()["shown"] == {}


def test_a_long_crowded_video_holds_its_boxes_in_little_memory():
    # An hour of a crowd at 30 fps and 20 faces a frame is ~2 million boxes: held as Python lists
    # (~250 bytes each) they took ~0.5 GB before the report was even written
    report = FileReport("in.mp4", "out.mp4", "video")
    tracemalloc.start()
    try:
        for i in range(50_000):
            report.add_box(i % 20, i // 20, [100.25, 200.5, 300.75, 400.0], blurred=True)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held / 50_000 < 40  # bytes a box


def test_writing_the_report_holds_one_tracks_rows_at_a_time(tmp_path):
    # GIVEN 50,000 boxes in 20 tracks
    report = FileReport("in.mp4", "out.mp4", "video")
    for i in range(50_000):
        report.add_box(i % 20, i // 20, [100.25, 200.5, 300.75, 400.0], blurred=True)
    # WHEN the report is written
    tracemalloc.start()
    try:
        path = write_report(tmp_path / "r.json", {}, {}, [report])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # THEN the JSON holds them all, while the writing never held more than a few tracks' rows as
    # lists (all 50,000 at once: ~13 MB)
    doc = json.loads(path.read_text())
    assert sum(len(t["boxes"]) for t in doc["files"][0]["tracks"]) == 50_000
    assert doc["files"][0] == report.as_dict()
    assert peak < 4_000_000
