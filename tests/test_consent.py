"""Whole-track consent (`consent.decide`) and the analyze pass's parts that need no video file.

The decisions are scripted with synthetic 128-d encodings (`tests.test_recognizer`): ann and bob
are consented, 0.9 apart; a stranger is far from both."""

from __future__ import annotations

import numpy as np
import pytest

import limelight.analyze as analyze
from limelight.analyze import RawTrack, SamplingOptions, link
from limelight.consent import DecisionOptions, Sample, Span, decide
from limelight.pipeline import AnonymizeOptions, Anonymizer
from tests.test_recognizer import synthetic_recognizer, toward, unit


@pytest.fixture(scope="module")
def people():
    recognizer, faces = synthetic_recognizer()
    return recognizer, {
        "ann": toward(faces["ann"], unit(30), 0.3),  # a good sample of ann
        "ann_turned": toward(faces["ann"], unit(31), 0.7),  # ann turned away: matches nobody
        "ann_blurry": toward(faces["ann"], unit(30), 0.65),  # matches nobody, yet near her good sample
        "bob": toward(faces["bob"], unit(34), 0.3),
        "stranger": faces["ann"] + 0.85 * unit(32),  # far from ann and bob
    }


def _samples(recognizer, faces, script: list[tuple[int, str]]) -> list[Sample]:
    out = []
    for frame, who in script:
        m = recognizer.match(faces[who])
        out.append(Sample(frame, faces[who], m.name, m.distance))
    return out


def test_a_consented_person_is_shown_from_the_first_frame_of_the_track_to_the_last(people):
    recognizer, faces = people
    # GIVEN a track of frames 0-299 whose first samples miss (she walks in turned) and later match
    samples = _samples(recognizer, faces, [(10, "ann_blurry"), (40, "ann_blurry"), (90, "ann"), (150, "ann"), (280, "ann_blurry")])
    # THEN the whole track is one span shown as ann, first frame to last
    assert decide(samples, 0, 299, recognizer) == [Span(0, 299, "ann", 5, 2, pytest.approx(0.3))]


def test_a_track_turned_away_for_most_samples_is_still_shown_when_enough_samples_match(people):
    recognizer, faces = people
    # GIVEN 2 of 7 samples matching and 5 of the same face that match nobody (turned, motion blur):
    # the one-pass engine's majority vote blurred such a track whole
    script = [(0, "ann"), (10, "ann_blurry"), (20, "ann_blurry"), (30, "ann"), (40, "ann_blurry"), (50, "ann_blurry"), (60, "ann_blurry")]
    spans = decide(_samples(recognizer, faces, script), 0, 70, recognizer)
    # THEN it is shown whole
    assert [(s.first, s.last, s.person) for s in spans] == [(0, 70, "ann")]


def test_one_lucky_match_never_shows_a_video_face(people):
    recognizer, faces = people
    samples = _samples(recognizer, faces, [(5, "ann"), (15, "ann_turned"), (25, "ann_turned")])
    # THEN one match is not enough (min_matches 2): blurred whole
    assert [(s.first, s.last, s.person) for s in decide(samples, 0, 30, recognizer)] == [(0, 30, None)]
    # AND with min_matches 1 the same evidence shows it
    assert decide(samples, 0, 30, recognizer, DecisionOptions(min_matches=1))[0].person == "ann"


def test_a_tracker_switch_to_a_stranger_splits_the_track_and_blurs_the_stranger(people):
    recognizer, faces = people
    # GIVEN a track that is ann until about frame 100, then (a tracker switch) a stranger
    script = [(0, "ann"), (20, "ann"), (60, "ann"), (95, "ann"), (130, "stranger"), (200, "stranger"), (290, "stranger")]
    spans = decide(_samples(recognizer, faces, script), 0, 300, recognizer)
    # THEN ann is shown up to her last matching sample, and everything after it is blurred
    assert [(s.first, s.last, s.person) for s in spans] == [(0, 95, "ann"), (96, 300, None)]


def test_a_stranger_who_becomes_a_consented_person_is_blurred_until_the_switch(people):
    recognizer, faces = people
    script = [(0, "stranger"), (30, "stranger"), (60, "bob"), (90, "bob"), (120, "bob")]
    spans = decide(_samples(recognizer, faces, script), 0, 150, recognizer)
    # THEN the stranger's frames are blurred and bob is shown from his first matching sample on
    assert [(s.first, s.last, s.person) for s in spans] == [(0, 59, None), (60, 150, "bob")]


def test_two_consented_people_on_one_track_each_keep_their_own_frames(people):
    recognizer, faces = people
    script = [(0, "ann"), (30, "ann"), (60, "bob"), (90, "bob")]
    spans = decide(_samples(recognizer, faces, script), 0, 100, recognizer)
    # THEN ann, then the frames between the two people (whose they are is unknown) blurred, then bob
    assert [(s.first, s.last, s.person) for s in spans] == [(0, 30, "ann"), (31, 59, None), (60, 100, "bob")]


def test_without_samples_or_recognizer_a_track_is_blurred_whole(people):
    recognizer, faces = people
    assert decide([], 3, 40, recognizer) == [Span(3, 40, None)]
    assert decide(_samples(recognizer, faces, [(5, "ann"), (9, "ann")]), 3, 40, None)[0].person is None


def test_names_of_one_face_in_the_gallery_count_as_one_person():
    from limelight.recognizer import Gallery, Recognizer

    # GIVEN a gallery with two photos of ann under two names (loose photos ann.jpg and ann_2.jpg)
    _, faces = synthetic_recognizer()
    twin = toward(faces["ann"], unit(40), 0.2)
    recognizer = Recognizer(Gallery(names=("ann", "ann_2", "bob"), encodings=np.stack([faces["ann"], twin, faces["bob"]])))
    near_twin = toward(twin, unit(41), 0.1)  # nearer ann_2's photo
    near_ann = toward(faces["ann"], unit(42), 0.1)
    samples = [Sample(f, e, recognizer.match(e).name, recognizer.match(e).distance)
               for f, e in ((0, near_ann), (20, near_twin), (40, near_ann))]
    assert {s.name for s in samples} == {"ann", "ann_2"}
    # THEN the track is not split between the names: shown whole, under the name most samples gave
    assert [(s.first, s.last, s.person, s.matches) for s in decide(samples, 0, 50, recognizer)] == [(0, 50, "ann", 3)]


# ------------------------------------------------------------------------------- linking


def _raw(tid: int, first: int, last: int, box, shot: int = 0) -> RawTrack:
    from array import array

    t = RawTrack(tid, shot, array("I", range(first, last + 1)), array("f", list(box) * (last - first + 1)))
    return t


def test_fragments_of_one_appearance_are_linked_and_the_gap_filled_between_them():
    # GIVEN a face lost by the detector for 20 frames, found again a little to the right
    a, b = _raw(0, 0, 49, (100, 100, 150, 160)), _raw(1, 70, 99, (110, 100, 160, 160))
    elsewhere = _raw(2, 60, 90, (500, 100, 550, 160))  # someone else, far away
    chains = link([a, b, elsewhere], SamplingOptions())
    assert sorted([t.id for t in c] for c in chains) == [[0, 1], [2]]
    frames, boxes = analyze.chain_boxes(next(c for c in chains if len(c) == 2))
    # THEN the linked track covers every frame 0-99, the gap interpolated between the two ends
    assert frames.tolist() == list(range(100))
    assert boxes[60].tolist() == pytest.approx([100 + 10 * 11 / 21, 100, 150 + 10 * 11 / 21, 160])


@pytest.mark.parametrize("b", [
    _raw(1, 120, 150, (100, 100, 150, 160)),  # too late (gap 70 > link_gap 45)
    _raw(1, 60, 90, (100, 100, 150, 160), shot=1),  # after a shot cut
    _raw(1, 60, 90, (100, 100, 220, 260)),  # much larger: another face
    _raw(1, 60, 90, (200, 100, 250, 160)),  # two box sides away
])
def test_fragments_too_far_apart_or_across_a_cut_are_not_linked(b):
    a = _raw(0, 0, 49, (100, 100, 150, 160))
    assert len(link([a, b], SamplingOptions())) == 2


# ------------------------------------------------------------------ analyze on frames


class _SlowFrameMarker:
    """A replicable fake detector: one face whose x1 is the frame's pixel value, found after a
    delay that varies by frame, so parallel detections finish out of order."""

    def __init__(self, made: list):
        self.made = made

    def replica(self, num_threads):
        twin = _SlowFrameMarker(self.made)
        self.made.append((twin, num_threads))
        return twin

    def input_size(self, height, width):
        return height, width

    def __call__(self, rgb, frame_size=None):
        import time

        value = float(rgb[0, 0, 0])
        time.sleep(0.004 * (int(value) % 3))
        return np.array([[value, 0.0, value + 8.0, 8.0, 0.99]], np.float32)


def test_frames_detected_in_parallel_are_tracked_in_order_with_their_own_detections(monkeypatch):
    from limelight.video import Frame

    # GIVEN 3 detection workers and frames whose detection is marked with the frame's own value
    seen: list[tuple[int, float]] = []

    class Recording(analyze.Tracker):
        def update(self, index, detections, new_shot=False):
            seen.append((index, float(detections[0, 0])))
            return super().update(index, detections, new_shot=new_shot)

    monkeypatch.setattr(analyze, "Tracker", Recording)
    made: list = []
    engine = Anonymizer(_SlowFrameMarker(made), None, AnonymizeOptions(detect_workers=3))
    value = [10 + (7 * i) % 200 for i in range(60)]
    frames = [Frame(index=i, pts=i, time=i / 24, rgb=np.full((32, 64, 3), value[i], np.uint8)) for i in range(60)]
    analysis, tracks = engine.analyze_frames(iter(frames), SamplingOptions())
    # THEN three single-threaded replicas did the work, every frame was analyzed once, and the
    # tracker got each frame's own detection, in frame order
    assert [n for _, n in made] == [1, 1, 1]
    assert analysis.frames == 60 and analysis.size == (64, 32)
    assert seen == [(i, float(value[i])) for i in range(60)]
    assert tracks and all(t.decision == "blur" for t in tracks)


def test_sampling_windows_keep_their_length_in_seconds_in_faster_videos():
    sampling = SamplingOptions()
    fast = sampling.at_rate(60)
    assert fast.windows == tuple(2 * w for w in sampling.windows) and fast.late_window == 2 * sampling.late_window
    assert fast.link_gap == 2 * sampling.link_gap and fast.result_lag == 2 * sampling.result_lag
    assert sampling.at_rate(25) == sampling


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_a_bad_number_of_detection_workers_is_refused(bad):
    with pytest.raises(ValueError, match="detect_workers"):
        AnonymizeOptions(detect_workers=bad)


def test_a_cut_between_the_fields_of_an_interlaced_frame_is_a_cut():
    from limelight.pipeline import ShotChangeDetector
    from limelight.video import Frame

    # GIVEN two shots 30 grey levels apart (a cut on the shared clips scores 27-30), the cut falling
    # between the two fields of one interlaced frame
    def frame(top: int, bottom: int, interlaced: bool) -> Frame:
        rgb = np.empty((72, 128, 3), np.uint8)
        rgb[0::2], rgb[1::2] = top, bottom
        return Frame(0, 0, 0.0, rgb=rgb, interlaced=interlaced)

    for interlaced, want in ((True, [False, False, False, True, False]), (False, [False, False, False, False, False])):
        cuts = ShotChangeDetector()
        seen = [cuts(frame(*levels, interlaced)) for levels in ((100, 100), (100, 100), (100, 130), (130, 130), (130, 130))]
        # THEN judged by its top field, the cut is found
        assert seen == want


def test_a_track_ends_with_its_shot_even_where_the_tracker_held_its_last_box():
    # GIVEN a face detected up to frame 47, its last box held by the tracker into the next shot (48-51)
    held = _raw(0, 0, 51, (100, 100, 150, 160))
    tracks = analyze.plan_tracks([[held]], None, DecisionOptions(), shot_starts=[0, 48])
    # THEN the plan's track stops at the cut: after it, another face may stand there
    assert [(t.first, t.last, t.decision) for t in tracks] == [(0, 47, "blur")]


def test_a_second_detection_of_a_shown_face_does_not_blur_it():
    from limelight.plan import PlanTrack

    def track(decision, frames, box):
        f = np.arange(*frames)
        return PlanTrack(0, decision, "ann" if decision == "show" else None, f, np.tile(np.float32([box]), (len(f), 1)))

    # GIVEN ann shown on frames 0-99, a blurred track on part of her face (frames 50-69, then
    # elsewhere on 70-79), and a blurred stranger beside her
    shown = track("show", (0, 100), (100, 100, 200, 220))
    part = track("blur", (50, 80), (120, 110, 190, 200))
    part.boxes[20:] = (400, 100, 470, 190)
    stranger = track("blur", (0, 100), (210, 100, 300, 220))
    out = analyze.without_duplicates([shown, part, stranger])
    # THEN only the frames where the blurred box lies on her face are dropped
    assert [t.frames.tolist() for t in out] == [list(range(100)), list(range(70, 80)), list(range(100))]
    assert out[1].evidence["duplicate_frames"] == 20


class _ScriptedFaces:
    """A fake detector: a face on the frames listed (the frame's pixel value is its index)."""

    def __init__(self, faces: set[int], calls: list[int]):
        self.faces, self.calls = faces, calls

    def replica(self, num_threads):
        return _ScriptedFaces(self.faces, self.calls)

    def input_size(self, height, width):
        return height, width

    def __call__(self, rgb, frame_size=None):
        i = int(rgb[0, 0, 0])
        self.calls.append(i)
        if i not in self.faces:
            return np.zeros((0, 5), np.float32)
        x = 10.0 if i < 100 else 120.0  # the face of frame 101 stands elsewhere: no link to the others
        return np.array([[x, 10.0, x + 20.0, 30.0, 0.9]], np.float32)


@pytest.mark.parametrize("workers", [1, 2])
def test_while_no_face_is_near_every_other_frame_is_detected_and_a_face_is_still_found_on_every_frame_it_is_on(workers):
    from limelight.video import Frame

    # GIVEN 120 frames of an empty scene but for a face on frames 30-33 and 80-81, and one on
    # frame 101 alone
    faces = set(range(30, 34)) | {80, 81} | {101}
    frames = [Frame(index=i, pts=i, time=i / 25, rgb=np.full((40, 160, 3), i, np.uint8)) for i in range(120)]

    def run(idle_skip):
        calls: list[int] = []
        engine = Anonymizer(_ScriptedFaces(faces, calls), None, AnonymizeOptions(detect_workers=workers, idle_skip=idle_skip))
        analysis, tracks = engine.analyze_frames(iter(frames), SamplingOptions())
        covered = {int(f) for t in tracks for f in t.frames}
        return calls, analysis, covered

    dense_calls, _, dense = run(False)
    calls, analysis, covered = run(True)
    # THEN far fewer frames were detected, each at most once ...
    assert sorted(dense_calls) == list(range(120))
    assert len(calls) == len(set(calls)) and len(calls) <= 90 and analysis.skipped == 120 - len(calls)
    assert analysis.figures()["frames_skipped"] == analysis.skipped
    # ... yet every frame with a face was detected, and its track covers what the dense run covers
    assert set(range(30, 34)) | {80, 81} <= set(calls)
    assert {f for f in dense if f < 95} == {f for f in covered if f < 95}
    # ... and a face on one frame alone is the only thing that can be missed (here it was: frame 101
    # was left out, its neighbours had none)
    assert 101 in dense and (101 in covered) == (101 in calls)
    # ... while a face was near (frames 30-44 and 80-93), no frame was left out
    assert set(range(30, 44)) <= set(calls)
