"""Behaviour of the look-ahead face tracker (functions/limelight/tracker.py)."""

from __future__ import annotations

import numpy as np
import pytest

from limelight.tracker import FrameNotFinalError, Tracker, TrackerError, TrackerOptions

NO_FACES = np.zeros((0, 5), np.float32)


def face(x: float, y: float, size: float = 40.0, score: float = 0.9) -> np.ndarray:
    """One detection row with its top-left corner at (x, y)."""
    return np.array([[x, y, x + size, y + size, score]], np.float32)


def run(tracker: Tracker, frames: list[np.ndarray]) -> list[list]:
    """Update every frame in order and finish; returns the assignments of each frame."""
    out = [tracker.update(i, dets) for i, dets in enumerate(frames)]
    tracker.finish()
    return out


def ids_at(tracker: Tracker, frame: int) -> list[int]:
    return [track_id for track_id, _ in tracker.boxes_at(frame)]


def test_two_slowly_moving_faces_keep_separate_stable_ids():
    # GIVEN two faces drifting 2 px per frame towards each other, never overlapping
    frames = [np.concatenate([face(100 + 2 * i, 100), face(300 - 2 * i, 110)]) for i in range(40)]
    tracker = Tracker()
    # WHEN they are tracked
    assignments = run(tracker, frames)
    # THEN each face keeps one id for the whole clip and only the first frame starts tracks
    assert [[a.track_id for a in frame] for frame in assignments] == [[0, 1]] * 40
    assert [[a.is_new for a in frame] for frame in assignments] == [[True, True]] + [[False, False]] * 39
    assert [(t.track_id, t.first_frame, t.last_frame, t.detected_frames) for t in tracker.tracks] == [
        (0, 0, 39, 40),
        (1, 0, 39, 40),
    ]


def test_detection_in_every_frame_of_300_frames_is_one_track():
    # GIVEN a face detected in each of 300 frames, moving 1 px per frame
    tracker = Tracker()
    # WHEN tracked
    run(tracker, [face(50 + i, 60) for i in range(300)])
    # THEN there is exactly one track spanning the clip
    assert len(tracker.tracks) == 1
    assert tracker.tracks[0].detected_frames == 300


def test_three_missed_frames_inside_a_track_are_interpolated_linearly():
    # GIVEN a face moving 10 px per frame, missed at frames 5, 6 and 7
    frames = [face(10 * i, 0) if i not in (5, 6, 7) else NO_FACES for i in range(12)]
    tracker = Tracker(TrackerOptions(smooth=0))
    # WHEN tracked
    run(tracker, frames)
    # THEN the missed frames get the linear in-between boxes of the same track
    for i in (5, 6, 7):
        [(track_id, box)] = tracker.boxes_at(i)
        assert track_id == 0
        np.testing.assert_allclose(box, [10 * i, 0, 10 * i + 40, 40], atol=1e-4)
    assert tracker.tracks[0].detected_frames == 9


def test_gap_longer_than_max_gap_starts_a_new_track_and_holds_the_old_one():
    # GIVEN a static face detected on frames 0-4, then missed for 10 frames (> max_gap 8), then seen again
    opts = TrackerOptions(max_gap=8, hold=4, backfill=3, smooth=0)
    frames = [face(100, 100) if i < 5 or i >= 15 else NO_FACES for i in range(25)]
    tracker = Tracker(opts)
    # WHEN tracked
    assignments = run(tracker, frames)
    # THEN the reappearance is a new track
    assert assignments[15][0].track_id == 1 and assignments[15][0].is_new
    assert len(tracker.tracks) == 2
    # AND the old track holds its last box for frames 5-8, nothing covers 9-11,
    # the new track is back-filled on frames 12-14
    assert [ids_at(tracker, i) for i in range(4, 16)] == [[0]] * 5 + [[]] * 3 + [[1]] * 4
    np.testing.assert_allclose(tracker.boxes_at(8)[0][1], [100, 100, 140, 140])


def test_backfill_covers_frames_before_the_first_detection_but_not_before_frame_zero():
    # GIVEN a face first detected at frame 5 and another first detected at frame 1
    frames = [NO_FACES] * 5 + [face(10, 10)] * 5
    late = [NO_FACES] + [face(10, 10)] * 9
    early_tracker, late_tracker = Tracker(TrackerOptions(backfill=3)), Tracker(TrackerOptions(backfill=3))
    # WHEN tracked
    run(early_tracker, frames)
    run(late_tracker, late)
    # THEN the 3 frames before the first detection are covered with its first box, earlier ones are not
    assert [ids_at(early_tracker, i) for i in range(6)] == [[], [], [0], [0], [0], [0]]
    np.testing.assert_allclose(early_tracker.boxes_at(2)[0][1], [10, 10, 50, 50])
    # AND back-fill stops at frame 0
    assert ids_at(late_tracker, 0) == [0]


def test_smoothing_reduces_jitter_of_a_noisy_box():
    # GIVEN a static face whose detections jitter by +-3 px
    rng = np.random.default_rng(0)
    noise = rng.uniform(-3, 3, size=(200, 2)).astype(np.float32)
    frames = [face(200 + dx, 150 + dy) for dx, dy in noise]
    raw, smooth = Tracker(TrackerOptions(smooth=0)), Tracker(TrackerOptions(smooth=2))
    # WHEN tracked with and without smoothing
    run(raw, frames)
    run(smooth, frames)

    def centre_std(tracker: Tracker) -> float:
        boxes = np.array([tracker.boxes_at(i)[0][1] for i in range(200)])
        return float(((boxes[:, :2] + boxes[:, 2:]) / 2).std(axis=0).mean())

    # THEN the centre's standard deviation drops by more than half (a 5-frame mean: ~1/sqrt(5))
    assert centre_std(smooth) < 0.55 * centre_std(raw)
    # AND the track's ends stay the detections themselves
    np.testing.assert_allclose(smooth.boxes_at(0)[0][1], frames[0][0, :4])


def test_boxes_at_a_frame_not_yet_final_raises():
    # GIVEN a tracker updated up to frame 20 (lookahead 10 by default)
    tracker = Tracker()
    for i in range(21):
        tracker.update(i, face(10, 10))
    # WHEN / THEN frame 10 is final and frame 11 is not
    assert tracker.options.lookahead == 10
    assert ids_at(tracker, 10) == [0]
    with pytest.raises(FrameNotFinalError, match="frame 11 is not available"):
        tracker.boxes_at(11)
    # AND after finish() every updated frame is final, later ones never
    tracker.finish()
    assert ids_at(tracker, 20) == [0]
    with pytest.raises(FrameNotFinalError):
        tracker.boxes_at(21)


def test_release_keeps_per_frame_state_bounded_over_10000_frames():
    # GIVEN a face seen in 10,000 frames with a brief dropout every 100 frames, and one short-lived face
    tracker = Tracker()
    lag = tracker.options.lookahead
    sizes = []
    for i in range(10_000):
        dets = NO_FACES if i % 100 == 50 else face(100 + (i % 7), 100)
        if i < 20:
            dets = np.concatenate([dets, face(500, 500)])
        tracker.update(i, dets)
        # WHEN the caller emits and releases each frame as soon as it is final
        if i >= lag:
            tracker.boxes_at(i - lag)
            tracker.release(i - lag)
            sizes.append(max(len(t.boxes) for t in tracker._active))
    # THEN each track's per-frame state stays within the look-ahead window, the finished face is dropped,
    # and the summaries remain
    assert max(sizes) <= lag + tracker.options.smooth + 1
    assert len(tracker._active) == 1
    assert [(t.track_id, t.detected_frames) for t in tracker.tracks] == [(0, 9900), (1, 20)]
    # AND released frames can no longer be queried
    with pytest.raises(FrameNotFinalError, match="released"):
        tracker.boxes_at(100)


def test_fast_zoom_is_matched_by_centre_distance():
    # GIVEN a face growing 40% per frame around a fixed centre (IoU with the previous box ~0.5, then lower)
    frames = [face(100 - 10 * i, 100 - 10 * i, 40 + 20 * i) for i in range(5)]
    tracker = Tracker(TrackerOptions(iou_threshold=0.7))
    # WHEN tracked with a strict IoU threshold
    assignments = run(tracker, frames)
    # THEN the centre pass keeps it one track
    assert {a.track_id for frame in assignments for a in frame} == {0}


def test_invalid_use_raises_tracker_errors():
    # GIVEN / WHEN / THEN bad options, skipped frames and malformed detections are refused
    with pytest.raises(TrackerError, match="max_gap"):
        TrackerOptions(max_gap=-1)
    tracker = Tracker()
    tracker.update(0, NO_FACES)
    with pytest.raises(TrackerError, match="expected frame 1"):
        tracker.update(2, NO_FACES)
    with pytest.raises(TrackerError, match="finite"):
        tracker.update(1, np.zeros((3,), np.float32))
    with pytest.raises(TrackerError, match="finite"):
        tracker.update(1, np.array([[0, 0, np.inf, 10, 0.9]], np.float32))


@pytest.mark.parametrize(
    "opts",
    [
        TrackerOptions(),
        TrackerOptions(max_gap=2, hold=0, backfill=6, smooth=3),
        TrackerOptions(smooth=0, max_gap=0),
    ],
)
def test_boxes_given_as_soon_as_final_never_change_later(opts):
    # GIVEN three faces moving randomly, each missed in 30% of the frames
    rng = np.random.default_rng(1)
    pos = rng.uniform(0, 600, size=(3, 2))
    frames = []
    for _ in range(300):
        pos += rng.normal(0, 3, size=pos.shape)
        seen = rng.random(3) > 0.3
        frames.append(np.concatenate([face(x, y, 60) for (x, y), s in zip(pos, seen) if s] + [NO_FACES]))
    online, offline = Tracker(opts), Tracker(opts)
    # WHEN one tracker is read at the look-ahead frame after every update, the other only after finish
    early = {}
    for i, dets in enumerate(frames):
        online.update(i, dets)
        if i >= opts.lookahead:
            early[i - opts.lookahead] = online.boxes_at(i - opts.lookahead)
    run(offline, frames)
    # THEN the early answers are the final ones
    assert len(early) == 300 - opts.lookahead
    for f, boxes in early.items():
        late = offline.boxes_at(f)
        assert [i for i, _ in boxes] == [i for i, _ in late], f
        for (_, a), (_, b) in zip(boxes, late):
            np.testing.assert_allclose(a, b, err_msg=f"frame {f}")


def test_a_new_shot_starts_new_tracks_even_at_the_same_place() -> None:
    # GIVEN a face tracked for 5 frames
    tracker = Tracker(TrackerOptions())
    box = np.array([[100, 100, 160, 170, 0.9]], np.float32)
    ids = [tracker.update(i, box)[0].track_id for i in range(5)]
    # WHEN a cut puts another face at the same place
    after = tracker.update(5, box, new_shot=True)[0]
    # THEN it starts a new track, and later frames follow the new one
    assert len(set(ids)) == 1 and after.is_new and after.track_id != ids[0]
    assert tracker.update(6, box)[0].track_id == after.track_id


def test_backfill_never_crosses_a_cut() -> None:
    # GIVEN an empty shot, then a cut at frame 10 where a face appears
    tracker = Tracker(TrackerOptions(backfill=3))
    face = np.array([[100, 100, 160, 170, 0.9]], np.float32)
    for i in range(10):
        tracker.update(i, np.zeros((0, 5), np.float32))
    for i in range(10, 30):
        tracker.update(i, face, new_shot=(i == 10))
    # THEN frames of the previous shot get no back-filled box, the cut frame does
    assert tracker.boxes_at(9) == [] and tracker.boxes_at(8) == []
    assert len(tracker.boxes_at(10)) == 1


def test_a_weak_detection_seen_once_is_never_shown():
    # GIVEN a weak (below confirm_score) false alarm in one frame and a strong face beside it
    frames = [face(300, 50) for _ in range(20)]
    frames[5] = np.concatenate([frames[5], face(50, 50, score=0.1)])
    tracker = Tracker(TrackerOptions(confirm_score=0.3, confirm_frames=3))
    run(tracker, frames)
    # THEN the weak track exists (it may still grow) but no frame draws it; the strong face is drawn
    assert len(tracker.tracks) == 2
    for f in range(20):
        assert ids_at(tracker, f) == [0]


def test_a_weak_face_that_persists_is_shown_from_its_first_frame():
    # GIVEN a face only ever detected weakly (0.15), in frames 10..15
    frames = [face(100 + i, 80, score=0.15) if 10 <= i <= 15 else NO_FACES for i in range(40)]
    tracker = Tracker(TrackerOptions(confirm_score=0.3, confirm_frames=3, backfill=3, hold=4))
    shown = []
    for i, dets in enumerate(frames):  # emitted as the engine does: each frame once it is final
        tracker.update(i, dets)
        shown += [(f, ids_at(tracker, f)) for f in range(i + 1) if tracker.is_final(f) and f not in dict(shown)]
    tracker.finish()
    shown += [(f, ids_at(tracker, f)) for f in range(40) if f not in dict(shown)]
    # THEN once confirmed (3 detections, within the look-ahead) every frame of it is covered,
    # including the backfilled frames before its first detection and the held ones after its last
    covered = [f for f, ids in sorted(shown) if ids]
    assert covered == list(range(7, 20))


def test_weak_detections_extend_a_confirmed_track():
    # GIVEN a strong face that turns away: detections fall to 0.12 for 20 frames
    frames = [face(100 + i, 80, score=0.9 if i < 10 else 0.12) for i in range(30)]
    tracker = Tracker(TrackerOptions(confirm_score=0.3, confirm_frames=11, hold=0))
    run(tracker, frames)
    # THEN one track covers all 30 frames although 2/3 of its detections are weak
    assert len(tracker.tracks) == 1
    assert all(ids_at(tracker, f) == [0] for f in range(30))


@pytest.mark.parametrize("options", [dict(confirm_frames=0), dict(confirm_frames=50), dict(confirm_score=1.5)])
def test_confirmation_options_are_validated(options):
    with pytest.raises(TrackerError):
        TrackerOptions(**options)


def test_a_track_confirmed_after_the_lookahead_still_adds_boxes_to_frames_not_yet_released():
    options = TrackerOptions()
    tracker = Tracker(options)
    # GIVEN a weak face (under confirm_score) detected at frames 0, 7 and 14: confirmed only by
    # its third detection (confirm_frames 3), after frame 0 became final (lookahead 10)
    weak = face(100, 100, score=0.1)
    for i in range(15):
        tracker.update(i, weak if i in (0, 7, 14) else NO_FACES)
        if i == options.lookahead:
            # THEN at frame 10 frame 0 is final and shows nothing: the track is not confirmed
            assert tracker.is_final(0) and ids_at(tracker, 0) == []
    # AND once confirmed, frame 0 (still held, not released) shows it: holding frames longer
    # than the look-ahead only ever blurs more
    assert len(ids_at(tracker, 0)) == 1 and len(ids_at(tracker, 3)) == 1
