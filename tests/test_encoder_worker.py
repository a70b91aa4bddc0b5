"""Face encodings in a worker process (`limelight.encoder_worker`): same values, same order, and no
dependence on the worker's speed or survival."""

from __future__ import annotations

import numpy as np
import pytest

from limelight.detector import default_model_path
from limelight.encoder_worker import FaceEncoder
from limelight.recognizer import encode_face


@pytest.fixture(scope="module")
def faces():
    """The demo's public-domain portraits, each with its face box (x1, y1, x2, y2) from dlib's HOG."""
    import face_recognition

    from limelight.demo import portraits

    out = []
    for img in portraits().values():
        (top, right, bottom, left), *_ = face_recognition.face_locations(img)
        out.append((img, np.array([left, top, right, bottom], float)))
    return out


def test_worker_encodings_equal_in_process_ones_in_submission_order(faces):
    jobs = [faces[i % 2] for i in range(5)]
    expected = [encode_face(img, box) for img, box in jobs]
    with FaceEncoder(processes=True) as encoder:
        assert encoder.start() and not encoder.in_process
        tickets = [encoder.submit(img, box) for img, box in jobs]
        got = [encoder.result(t) for t in tickets]
    assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))
    # the two people are different people (the comparison above could fail)
    assert np.linalg.norm(got[0] - got[1]) > 0.6


def test_too_small_a_face_asks_for_nothing(faces):
    img, _ = faces[0]
    with FaceEncoder(processes=False) as encoder:
        assert encoder.submit(img, np.array([10.0, 10.0, 25.0, 40.0])) is None


def test_a_dead_worker_is_replaced_by_in_process_encoding_without_losing_a_result(faces):
    img, box = faces[0]
    expected = encode_face(img, box)
    with FaceEncoder(processes=True) as encoder:
        first = encoder.submit(img, box)
        assert np.array_equal(encoder.result(first), expected)
        # WHEN the worker is killed with work outstanding
        owed = encoder.submit(img, box)
        encoder._process.kill()
        encoder._process.join()
        later = encoder.submit(img, box)
        # THEN what it owed and what comes later are computed here, with the same values
        assert np.array_equal(encoder.result(owed), expected)
        assert np.array_equal(encoder.result(later), expected)
        assert encoder.in_process


@pytest.mark.skipif(not default_model_path().exists(), reason="the shipped int8 model is not built yet")
def test_video_is_the_same_whether_encodings_run_in_a_worker_or_in_process(tmp_path, monkeypatch):
    from dataclasses import replace

    from limelight.detector import Detector
    from limelight.pipeline import AnonymizeOptions, Anonymizer
    from limelight.recognizer import Recognizer, load_gallery
    from tests.media import demo_clip

    # GIVEN the demo clip (2 s) with Grace Hopper as the consenting person
    src, known = demo_clip(tmp_path, monkeypatch, seconds=2)
    recognizer = Recognizer(load_gallery(known))
    detector = Detector()
    reports = []
    for in_worker in (True, False):
        options = AnonymizeOptions()
        options = replace(options, worker_process=in_worker)
        report = Anonymizer(detector, recognizer, options).video(src, tmp_path / f"out_{in_worker}.mp4")
        doc = report.as_dict()
        reports.append([(t["decision"], t["boxes"], t.get("shown_as")) for t in doc["tracks"]])
    # THEN both runs keep her, blur the astronaut, and decide every box of every frame alike
    decisions = {d for d, _, _ in reports[0]}
    assert "kept as grace_hopper" in decisions and "blurred" in decisions
    assert reports[0] == reports[1]


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"cpu.max": "max 100000\n"}, None),  # cgroup v2, no quota: the affinity counts
        ({"cpu.max": "150000 100000\n"}, 1.5),  # docker --cpus 1.5
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.0),  # v1, one CPU
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),  # no cgroup files at all
    ],
)
def test_usable_cpus_follow_a_cgroup_quota(tmp_path, files, expected):
    import os

    from limelight.encoder_worker import usable_cpus

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path) == (min(affinity, expected) if expected is not None else affinity)


def test_a_failure_inside_the_worker_is_raised_as_a_named_error(faces, monkeypatch):
    import limelight.encoder_worker as worker

    def broken(crop, location):
        raise ValueError("no face chip")

    # GIVEN dlib failing on a face (the forked worker inherits the patched function)
    monkeypatch.setattr(worker, "encode_crop", broken)
    img, box = faces[0]
    with worker.FaceEncoder(processes=True) as encoder:
        ticket = encoder.submit(img, box)
        # THEN the engine gets a LimeLightError naming the failure, not a silent None (a None
        # would look like "no sample" and could change a decision without anyone knowing)
        with pytest.raises(worker.EncodingWorkerError, match="ValueError: no face chip"):
            encoder.result(ticket)
