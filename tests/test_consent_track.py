"""Consent over a track's life: verification, suspension and resumption (`pipeline._TrackState`).

The engine samples a track's face now and then (`RecognitionSchedule`); these tests script what
the face encoder returns at each frame and follow the keep/blur decision frame by frame.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

import numpy as np
import pytest

import limelight.pipeline as pipeline
from limelight.pipeline import AnonymizeOptions, Anonymizer, _TrackState
from tests.test_recognizer import synthetic_recognizer, toward, unit

DETECTION = np.array([10.0, 10.0, 90.0, 110.0, 0.95], np.float32)


class _Scripted:
    """Stands in for `FaceEncoder`: the encoding asked for at frame i is `face_at(i)`."""

    def __init__(self, face_at):
        self.face_at, self.done, self.next = face_at, {}, 0

    def submit(self, frame, box, turns=0, sar=1.0):
        ticket, self.next = self.next, self.next + 1
        self.done[ticket] = self.face_at(frame)  # the "frame" is its index
        return ticket

    def result(self, ticket):
        return self.done.pop(ticket)


def _follow(face_at, frames: int, lag: int = 0) -> list[bool]:
    """Runs one track through `frames` frames; `face_at(i)` is the encoding of the face at frame i,
    which joins the vote `lag` frames later (the engine's `result_lag`). Returns whether the face is
    shown (kept) at each frame."""
    recognizer, _ = synthetic_recognizer()
    engine = Anonymizer(None, recognizer, AnonymizeOptions())
    encoder, pending = _Scripted(face_at), deque()
    state = _TrackState(recognizer.vote())
    min_matches = engine.options.recognition.min_matches
    shown = []
    for i in range(frames):
        engine._sample(state, i, i, DETECTION, encoder, pending)
        engine._apply(encoder, pending, i - lag)
        shown.append(engine._kept(state, min_matches)[0])
    return shown


def _people():
    _, people = synthetic_recognizer()
    ann = toward(people["ann"], unit(30), 0.3)  # a good sample of ann
    turned = toward(people["ann"], unit(31), 0.7)  # ann turned away: matches nobody
    stranger = people["ann"] + 0.85 * unit(32)  # far from ann and bob
    return ann, turned, stranger


def test_consented_person_who_turns_away_is_blurred_while_turned_then_shown_again():
    ann, turned, _ = _people()
    # GIVEN ann facing the camera for 60 frames, turned away for 60, then facing it again
    shown = _follow(lambda i: turned if 60 <= i < 120 else ann, 240)
    verify = AnonymizeOptions().recognition.verify_interval

    # THEN she is shown once two samples agree, blurred within two checks of turning away...
    assert all(shown[5:60])
    assert not any(shown[60 + 2 * verify:120])
    # ...and shown again within two checks of facing the camera, to the end of the track
    assert all(shown[120 + 2 * verify + 1:])


def test_a_face_turned_as_it_enters_is_shown_once_it_has_faced_the_camera_for_a_second():
    ann, turned, _ = _people()
    # GIVEN ann turned away for her first 6 frames (walking into the shot), then facing the camera
    shown = _follow(lambda i: turned if i < 6 else ann, 60)

    # THEN she is blurred while only turned samples exist, and shown within ~1 s of facing the camera:
    # the first samples are spread (0, 4, 8), so her entrance costs two misses, not three near-
    # duplicate ones that her next four matches cannot outvote (shown from frame 28; from 44 with samples 2 apart)
    assert not any(shown[:8])
    assert all(shown[30:])


def test_tracker_switch_to_a_stranger_is_blurred_and_stays_blurred():
    ann, _, stranger = _people()
    # GIVEN a track that is ann for 60 frames, then (a tracker mistake) a stranger for 400
    shown = _follow(lambda i: ann if i < 60 else stranger, 460)
    verify = AnonymizeOptions().recognition.verify_interval

    # THEN the stranger is blurred within two checks and never shown again
    assert all(shown[5:60])
    assert not any(shown[60 + 2 * verify:])


def test_one_lucky_match_does_not_show_a_suspended_track_again():
    ann, turned, stranger = _people()
    # GIVEN ann, then a stranger whose face matches ann in one sample only (frames 150-154)
    shown = _follow(lambda i: ann if i < 60 or 150 <= i < 155 else stranger, 300)

    # THEN after the suspension one matching sample is not enough: blurred to the end
    assert not any(shown[120:])


@pytest.mark.parametrize("matches_needed", [2, 3])
def test_resumption_needs_min_matches_consecutive_matches(matches_needed):
    ann, turned, _ = _people()
    options = AnonymizeOptions()
    schedule = options.recognition
    state = _TrackState(synthetic_recognizer()[0].vote())
    # GIVEN a track kept as ann (two matches), then suspended (two misses)
    for _ in range(2):
        state.vote.add(ann)
        state.samples += 1
        state.record(None, schedule)
    assert state.decision(schedule.min_matches, schedule.window).kept
    for _ in range(schedule.revoke_after):
        state.vote.add(turned)
        state.samples += 1
        state.record("ann", schedule)
    assert state.suspended and not state.decision(schedule.min_matches, schedule.window).kept
    # WHEN ann matches again, sample after sample
    schedule = replace(schedule, min_matches=matches_needed)
    for n in range(1, matches_needed + 1):
        state.vote.add(ann)
        state.samples += 1
        state.record(None, schedule)
        # THEN she is shown only once `min_matches` samples in a row agree
        assert state.suspended == (n < matches_needed)
    assert state.decision(matches_needed, schedule.window).name == "ann"


def test_report_names_the_person_of_every_frame_left_unblurred():
    from limelight.report import FileReport

    report = FileReport("in.mp4", "out.mp4", "video")
    # GIVEN a track shown as ann for two frames, then blurred (suspended) for one
    report.add_box(3, 0, [0, 0, 10, 10], blurred=False, shown_as="ann")
    report.add_box(3, 1, [0, 0, 10, 10], blurred=False, shown_as="ann")
    report.add_box(3, 2, [0, 0, 10, 10], blurred=True)
    track = report.as_dict()["tracks"][0]
    # THEN the audit trail says whom the shown frames were shown as, although the track ends blurred
    assert track["decision"] == "blurred" and track["frames_blurred"] == 1
    assert track["shown_as"] == {"ann": 2}
    # AND an unblurred face without a consented name is refused
    with pytest.raises(ValueError, match="must name"):
        report.add_box(4, 0, [0, 0, 10, 10], blurred=False)


class _NoFaces:
    def input_size(self, height, width):
        return height, width

    def __call__(self, rgb, frame_size=None):
        return np.zeros((0, 5), np.float32)


def _frames_read_before_first_output(options: AnonymizeOptions, shape, consent: bool = True) -> int:
    from limelight.report import FileReport
    from limelight.video import Frame

    read = 0

    def frames():
        nonlocal read
        for i in range(200):
            read += 1
            yield Frame(index=i, pts=i, time=i / 24, rgb=np.zeros(shape, np.uint8))

    recognizer = synthetic_recognizer()[0] if consent else None
    run = Anonymizer(_NoFaces(), recognizer, options)._transform(FileReport("in", "out", "video"), {})
    next(iter(run(frames())))
    return read


def test_frames_are_held_for_the_decision_delay_within_a_memory_cap():
    options = AnonymizeOptions()
    delay = options.recognition.decision_delay + options.recognition.result_lag
    # GIVEN small frames: the first is redacted only once `decision_delay` + `result_lag` newer frames
    # were read (plus the one in detection), so a recognition decision within that second, whose
    # samples joined the votes `result_lag` frames after they were taken, still reaches it
    small = _frames_read_before_first_output(options, (36, 64, 3))
    assert delay + 1 <= small <= delay + 3
    # GIVEN frames so large that the cap allows 15 of them: the first is redacted after ~15
    capped = replace(options, recognition=replace(options.recognition, max_held_bytes=15 * 36 * 64 * 3))
    assert 15 + 1 <= _frames_read_before_first_output(capped, (36, 64, 3)) <= 15 + 3 < small
    # AND without a delay only the tracker's own look-ahead is held
    none = replace(options, recognition=replace(options.recognition, decision_delay=0, result_lag=0))
    assert _frames_read_before_first_output(none, (36, 64, 3)) <= options.tracker.lookahead + 3 < small
    # AND without consented people the frames are held as long (late-confirmed tracks reach back)
    assert _frames_read_before_first_output(options, (36, 64, 3), consent=False) == small


def test_recognition_schedule_keeps_its_pace_per_second_in_faster_videos():
    schedule = AnonymizeOptions().recognition
    # GIVEN videos up to 30 fps: the schedule as written
    assert schedule.at_rate(23.976) is schedule and schedule.at_rate(30) is schedule and schedule.at_rate(0) is schedule
    # GIVEN a 60 fps video: every interval and delay spans twice the frames, i.e. the same time
    fast = schedule.at_rate(60)
    assert (fast.first_interval, fast.interval, fast.late_interval, fast.verify_interval) == (
        2 * schedule.first_interval, 2 * schedule.interval, 2 * schedule.late_interval, 2 * schedule.verify_interval)
    assert fast.decision_delay == 2 * schedule.decision_delay and fast.result_lag == 2 * schedule.result_lag
    # AND what is counted in samples, not frames, stays
    assert (fast.first_samples, fast.max_samples, fast.window, fast.min_matches, fast.revoke_after) == (
        schedule.first_samples, schedule.max_samples, schedule.window, schedule.min_matches, schedule.revoke_after)


def test_a_sample_joins_the_vote_result_lag_frames_after_it_was_taken():
    ann, _, _ = _people()
    # GIVEN ann facing the camera from the first frame
    at_once = _follow(lambda i: ann, 60)
    lag = AnonymizeOptions().recognition.result_lag
    lagged = _follow(lambda i: ann, 60, lag=lag)
    # THEN with encodings claimed `result_lag` frames late (the worker process), her track is kept
    # exactly that much later in the stream (the engine holds frames that much longer to make up)
    assert lag > 0 and lagged.index(True) == at_once.index(True) + lag
    assert all(lagged[at_once.index(True) + lag:])


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
    from limelight.report import FileReport
    from limelight.video import Frame

    # GIVEN 3 detection workers and frames whose detection is marked with the frame's own value
    seen: list[tuple[int, float]] = []

    class Recording(pipeline.Tracker):
        def update(self, index, detections, new_shot=False):
            seen.append((index, float(detections[0, 0])))
            return super().update(index, detections, new_shot=new_shot)

    monkeypatch.setattr(pipeline, "Tracker", Recording)
    made: list = []
    engine = Anonymizer(_SlowFrameMarker(made), None, AnonymizeOptions(detect_workers=3))
    value = [10 + (7 * i) % 200 for i in range(60)]
    frames = [Frame(index=i, pts=i, time=i / 24, rgb=np.full((32, 64, 3), value[i], np.uint8)) for i in range(60)]
    out = list(engine._transform(FileReport("in", "out", "video"), {})(iter(frames)))
    # THEN three single-threaded replicas did the work, every frame came back once and in order,
    # and the tracker got each frame's own detection, in frame order
    assert [n for _, n in made] == [1, 1, 1]
    assert [f.index for f in out] == list(range(60))
    assert seen == [(i, float(value[i])) for i in range(60)]


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_a_bad_number_of_detection_workers_is_refused(bad):
    with pytest.raises(ValueError, match="detect_workers"):
        AnonymizeOptions(detect_workers=bad)


def test_a_cut_between_the_fields_of_an_interlaced_frame_is_a_cut():
    from limelight.pipeline import ShotChangeDetector
    from limelight.video import Frame

    # GIVEN two shots 30 grey levels apart (a cut on the shared clips scores 27-30), the cut falling
    # between the two fields of one interlaced frame: its top lines from the first shot, its bottom
    # lines from the second, as when footage is cut on fields
    def frame(top: int, bottom: int, interlaced: bool) -> Frame:
        rgb = np.empty((72, 128, 3), np.uint8)
        rgb[0::2], rgb[1::2] = top, bottom
        return Frame(0, 0, 0.0, rgb=rgb, interlaced=interlaced)

    for interlaced, want in ((True, [False, False, False, True, False]), (False, [False, False, False, False, False])):
        cuts = ShotChangeDetector()
        seen = [cuts(frame(*levels, interlaced)) for levels in ((100, 100), (100, 100), (100, 130), (130, 130), (130, 130))]
        # THEN judged by its top field, the cut is found (seen whole, it is two half-size changes,
        # neither a cut, and a track runs on into the next shot)
        assert seen == want
