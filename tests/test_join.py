"""Joining segments' tracks at their cuts (`limelight.join`): what the serverless workflow does
between its analyze Map and its render Map, so that a face crossing a cut is one track.

Decisions are scripted with synthetic encodings (`tests.test_consent`'s people: ann and bob
consented, a stranger far from both); the workflow test runs it on a real clip."""

from __future__ import annotations

import numpy as np
import pytest

from limelight.consent import Sample
from limelight.join import SegmentEdges, apply_join, join_segments
from limelight.plan import BLUR, SHOW, Plan, PlanTrack
from tests.test_consent import people  # noqa: F401 (fixture)

SCENE = np.full((36, 64), 80, np.float32)  # a shot's grey thumbnail
OTHER_SCENE = np.full((36, 64), 160, np.float32)


def sample(recognizer, faces, frame, who):
    m = recognizer.match(faces[who])
    return Sample(frame, faces[who], m.name, m.distance)


def track(tid, first, last, box=(100, 100, 180, 180), samples=(), decision=BLUR, person=None):
    frames = np.arange(first, last + 1)
    boxes = np.tile(np.asarray(box, np.float32), (len(frames), 1))
    return PlanTrack(tid, decision, person, frames, boxes, {"fragments": 1}, list(samples))


def segment(frames, tracks, shots=(0,), thumbs=(SCENE, SCENE)):
    plan = Plan({"path": "seg.mp4", "size": 1, "fingerprint": "x", "frames": frames, "width": 640, "height": 360},
                tracks, meta={"analysis": {"shots": list(shots)}}, edges=thumbs)
    return plan


def joined(plans, recognizer, tmp_path=None):
    edges = [SegmentEdges.of(p) for p in plans]
    if tmp_path is not None:  # as the workflow passes them: through .npz files
        edges = [SegmentEdges.load(e.save(tmp_path / f"{i}.npz")) for i, e in enumerate(edges)]
    result = join_segments(edges, recognizer)
    return result, [apply_join(p, result["segments"].get(str(i))) for i, p in enumerate(plans)]


def decisions(plan):
    return [(t.decision, t.person, t.first, t.last) for t in plan.tracks]


def test_a_consented_face_crossing_a_cut_is_shown_on_both_sides_though_too_short_to_recognise_after_it(people, tmp_path):
    recognizer, faces = people
    # GIVEN ann's track over the last 60 frames of a segment (3 matching samples: shown) and its
    # continuation over the next segment's first 6 frames (no sample: blurred on its own)
    left = segment(100, [track(0, 40, 99, samples=[sample(recognizer, faces, f, "ann") for f in (45, 60, 80)], decision=SHOW, person="ann")])
    right = segment(60, [track(0, 0, 5, box=(104, 101, 184, 181))])
    # WHEN the segments' tracks are joined at the cut (through the files the workflow stores)
    result, (a, b) = joined([left, right], recognizer, tmp_path)
    # THEN both pieces are one track (one joined id), shown as ann on both sides
    assert result["joined"] == 1
    assert decisions(a) == [(SHOW, "ann", 40, 99)] and decisions(b) == [(SHOW, "ann", 0, 5)]
    assert a.tracks[0].evidence["joined"] == b.tracks[0].evidence["joined"] == 0
    assert b.tracks[0].evidence["recognition"]["matches"] == 3


def test_one_match_on_each_side_of_a_cut_adds_up_to_a_shown_track(people):
    recognizer, faces = people
    # GIVEN one ann sample each side: each piece alone is one lucky match, blurred
    left = segment(100, [track(0, 70, 99, samples=[sample(recognizer, faces, 80, "ann")])])
    right = segment(100, [track(0, 0, 30, samples=[sample(recognizer, faces, 20, "ann")])])
    result, (a, b) = joined([left, right], recognizer)
    # THEN the whole track has two matches and is shown, as the CLI's analysis would show it
    assert decisions(a) == [(SHOW, "ann", 70, 99)] and decisions(b) == [(SHOW, "ann", 0, 30)]


def test_a_stranger_standing_where_a_consented_face_was_is_blurred_after_the_cut(people):
    recognizer, faces = people
    # GIVEN ann until the cut, then (the tracker's view: the same place) a stranger's samples
    left = segment(100, [track(0, 40, 99, samples=[sample(recognizer, faces, f, "ann") for f in (45, 60, 90)], decision=SHOW, person="ann")])
    right = segment(100, [track(0, 0, 50, samples=[sample(recognizer, faces, f, "stranger") for f in (10, 30)])])
    result, (a, b) = joined([left, right], recognizer)
    # THEN ann stays shown up to her last sample, the stranger is blurred through the new segment
    assert decisions(b) == [(BLUR, None, 0, 50)]
    assert a.tracks[0].decision == SHOW and a.tracks[0].person == "ann"
    assert all(t.decision == BLUR for t in a.tracks if t.first > 90)


@pytest.mark.parametrize("case", ["shot cut at the segment cut", "far away", "gap too long", "ended in an earlier shot",
                                  "much larger"])
def test_tracks_that_do_not_continue_across_the_cut_are_not_joined(people, case):
    recognizer, faces = people
    ann = [sample(recognizer, faces, f, "ann") for f in (45, 60, 80)]
    left_track, right_track, shots, thumbs = track(0, 40, 99, samples=ann, decision=SHOW, person="ann"), track(0, 0, 5), (0,), (SCENE, SCENE)
    if case == "shot cut at the segment cut":
        thumbs = (SCENE, OTHER_SCENE)
    elif case == "far away":
        right_track = track(0, 0, 5, box=(400, 100, 480, 180))
    elif case == "gap too long":
        left_track = track(0, 10, 50, samples=ann[:1] + [sample(recognizer, faces, f, "ann") for f in (20, 30)], decision=SHOW, person="ann")
    elif case == "ended in an earlier shot":  # a shot began at 99 in the left segment, the track ended with the old one
        left_track, shots = track(0, 40, 98, samples=ann, decision=SHOW, person="ann"), (0, 99)
    else:
        right_track = track(0, 0, 5, box=(60, 60, 260, 260))
    left = segment(100, [left_track], shots=shots, thumbs=(SCENE, SCENE))
    right = segment(60, [right_track], thumbs=(thumbs[1], SCENE))
    result, (a, b) = joined([left, right], recognizer)
    # THEN nothing is linked: ann stays as she was, the face after the cut keeps its own decision
    # (blurred: no sample), its first box backfilled over the cut's last 3 frames (as the whole
    # video's track would be) unless the cut is a shot cut
    assert decisions(b) == [(BLUR, None, 0, 5)]
    assert a.tracks[0].decision == SHOW and "joined" not in a.tracks[0].evidence
    backfill = [t for t in a.tracks if t.decision == BLUR]
    # (within the shot: from 99 where a shot starts there; none where it would cover ann's face,
    # since a blurred box over a shown face is taken for a second detection of it)
    expected = {"shot cut at the segment cut": [], "ended in an earlier shot": [(99, 99)], "much larger": []}.get(case, [(97, 99)])
    assert [(t.first, t.last) for t in backfill] == expected
    if case == "shot cut at the segment cut":
        assert result["segments"] == {}
    for t in backfill:
        assert np.array_equal(t.boxes[0], right_track.boxes[0]) and t.evidence["joined"] == b.tracks[0].evidence["joined"]


def test_a_track_over_three_segments_is_one_track(people):
    recognizer, faces = people
    # GIVEN bob walking through a short middle segment (no sample in it) and on into the next
    first = segment(50, [track(0, 20, 49, samples=[sample(recognizer, faces, f, "bob") for f in (25, 40)], decision=SHOW, person="bob")])
    middle = segment(30, [track(0, 0, 29)])
    last = segment(50, [track(0, 0, 10), track(1, 30, 40, box=(400, 100, 480, 180))])
    result, plans = joined([first, middle, last], recognizer)
    # THEN one joined track, shown as bob in all three; the other face of the last segment untouched
    assert result["joined"] == 1
    assert [decisions(p)[0] for p in plans] == [(SHOW, "bob", 20, 49), (SHOW, "bob", 0, 29), (SHOW, "bob", 0, 10)]
    assert decisions(plans[2])[1] == (BLUR, None, 30, 40) and "joined" not in plans[2].tracks[1].evidence


def test_without_consent_joined_tracks_stay_blurred(people):
    recognizer, faces = people
    left = segment(100, [track(0, 40, 99, samples=[sample(recognizer, faces, f, "ann") for f in (45, 60, 80)])])
    right = segment(60, [track(0, 0, 5)])
    result, (a, b) = joined([left, right], None)
    assert result["joined"] == 1
    assert decisions(a) == [(BLUR, None, 40, 99)] and decisions(b) == [(BLUR, None, 0, 5)]


def test_edges_keep_only_the_tracks_near_the_ends_and_round_trip_through_npz(people, tmp_path):
    recognizer, faces = people
    near_end = track(0, 260, 299, samples=[sample(recognizer, faces, 270, "ann"), sample(recognizer, faces, 290, "stranger")])
    inside = track(1, 100, 200)
    near_start = track(2, 10, 30)
    plan = segment(300, [near_start, inside, near_end], shots=(0, 150))
    edges = SegmentEdges.load(SegmentEdges.of(plan).save(tmp_path / "e.npz"))
    # THEN the tracks within link_gap of either end, with their boxes and samples
    assert (edges.frames, edges.shots) == (300, [0, 150])
    assert sorted(t.id for t in edges.tracks) == [0, 2]
    got = {t.id: t for t in edges.tracks}[0]
    assert [(s.frame, s.name) for s in got.samples] == [(270, "ann"), (290, None)]
    assert np.allclose(got.samples[0].encoding, faces["ann"])
    assert got.samples[1].distance == pytest.approx(recognizer.match(faces["stranger"]).distance)
    assert np.array_equal(got.frames, np.arange(260, 300)) and got.boxes.shape == (40, 4)
    assert np.array_equal(edges.thumbs[0], SCENE)
    # ...and a plan written as JSON never holds the encodings
    assert "encoding" not in str(plan.as_dict())


def test_frames_between_the_pieces_are_filled_as_the_cli_fills_a_gap_even_through_a_segment_without_the_face(people):
    recognizer, faces = people
    # GIVEN a stranger detected up to frame 95 of a 100-frame segment, not at all in the next
    # (10 frames: a keyframe every third of a second), and again from frame 4 of the one after,
    # 10 px further right
    first = segment(100, [track(0, 60, 95, samples=[sample(recognizer, faces, 70, "stranger")])])
    middle = segment(10, [])
    last = segment(50, [track(0, 4, 30, box=(110, 100, 190, 180))])
    result, plans = joined([first, middle, last], recognizer)
    # THEN one blurred track covers the gap: frames 96-99, the whole middle segment and 0-3 after,
    # its boxes moving step by step from the last detected box to the next one
    assert result["joined"] == 1
    assert [decisions(p) for p in plans] == [[(BLUR, None, 60, 99)], [(BLUR, None, 0, 9)], [(BLUR, None, 0, 30)]]
    gap = np.concatenate([plans[0].tracks[0].boxes[-4:, 0], plans[1].tracks[0].boxes[:, 0], plans[2].tracks[0].boxes[:4, 0]])
    assert np.allclose(gap, 100 + 10 * np.arange(1, 19) / 19, atol=0.06)
    assert plans[1].tracks[0].evidence["filled"] and plans[1].tracks[0].evidence["joined"] == 0


def test_a_consented_face_undetected_through_a_short_segment_is_shown_through_it(people):
    recognizer, faces = people
    first = segment(100, [track(0, 40, 97, samples=[sample(recognizer, faces, f, "ann") for f in (45, 60, 80)], decision=SHOW, person="ann")])
    middle = segment(10, [])
    last = segment(50, [track(0, 2, 30, samples=[sample(recognizer, faces, 20, "ann")], decision=BLUR)])
    result, plans = joined([first, middle, last], recognizer)
    assert [decisions(p) for p in plans] == [[(SHOW, "ann", 40, 99)], [(SHOW, "ann", 0, 9)], [(SHOW, "ann", 0, 30)]]


def _boxes(plans, starts, decision):
    out: dict[int, list] = {}
    for plan, start in zip(plans, starts):
        for t in plan.tracks:
            if t.decision == decision:
                for f, b in zip(t.frames, t.boxes):
                    out.setdefault(int(f) + start, []).append(b)
    return out


def _uncovered(whole, parts):
    from limelight.anchors import iou_matrix

    return sum(1 for f, boxes in whole.items() for b in boxes
               if not parts.get(f) or not (iou_matrix(np.asarray([b]), np.asarray(parts[f])) > 0.3).any())


def test_segments_of_a_real_clip_joined_blur_what_the_whole_videos_analysis_blurs_and_keep_lin(clip, shared_file, tmp_path):
    from limelight.detector import Detector
    from limelight.pipeline import Anonymizer
    from limelight.recognizer import Recognizer, load_gallery
    from limelight.segments import split
    from limelight.video import probe

    # GIVEN the hamilton clip (a keyframe every 2 s) cut on keyframes as the workflow cuts it, with
    # Lin-Manuel Miranda's photo as the consent
    source = clip("hamilton_white_house_short_clip.mp4")
    known = tmp_path / "known"
    known.mkdir()
    (known / "lin.png").write_bytes(shared_file("videos/known_faces/hamilton_white_house/lin-manuel-miranda.png").read_bytes())
    engine = Anonymizer(Detector(), Recognizer(load_gallery(known)))
    segments = split(source, tmp_path, 2.0)
    # WHEN each segment is analyzed on its own, its edges pass through the files the workflow
    # stores, and the tracks are joined at the cuts
    plans = [engine.analyze(s.path) for s in segments]
    sampling = engine.options.recognition.at_rate(float(probe(source).fps))
    edges = [SegmentEdges.load(SegmentEdges.of(p, sampling).save(tmp_path / f"{i}.npz")) for i, p in enumerate(plans)]
    result = join_segments(edges, engine.recognizer, sampling=sampling)
    final = [apply_join(p, result["segments"].get(str(i))) for i, p in enumerate(plans)]
    whole = engine.analyze(source)
    starts = [s.start_frame for s in segments]
    # THEN every face the whole video's analysis blurs is blurred in the segments too (without the
    # join, the frames around the cuts are not: the tracker's hold, backfill and gaps stop there)
    assert len(segments) >= 4 and result["joined"] > 0
    blurred = _boxes([whole], [0], BLUR)
    assert _uncovered(blurred, _boxes(plans, starts, BLUR)) > 0
    assert _uncovered(blurred, _boxes(final, starts, BLUR)) == 0
    # ...and Lin is shown wherever the whole video's analysis shows him, across the cuts
    shown = _boxes([whole], [0], SHOW)
    assert sum(map(len, shown.values())) > 100
    assert _uncovered(shown, _boxes(final, starts, SHOW)) == 0
    assert all(t.person == "lin" for p in final for t in p.tracks if t.decision == SHOW)


def test_a_face_walking_through_many_short_segments_is_one_track(people):
    recognizer, faces = people
    # GIVEN 201 segments of 10 frames (a keyframe every third of a second), ann walking right
    # through all of them (undetected in every fifth), and a stranger standing still throughout
    plans = []
    for k in range(201):
        tracks = [] if k % 5 == 4 else [track(0, 0, 9, box=(100 + 2 * k, 100, 180 + 2 * k, 180),
                                              samples=[sample(recognizer, faces, 5, "ann")] if k % 7 == 0 else [])]
        tracks.append(track(len(tracks), 0, 9, box=(400, 200, 460, 260)))
        plans.append(segment(10, tracks))
    result, final = joined(plans, recognizer)
    # THEN two joined tracks: ann shown in every segment (filled where undetected), the stranger blurred
    assert result["joined"] == 2
    for p in final:
        assert sorted((t.decision, t.person) for t in p.tracks) == [(BLUR, None), (SHOW, "ann")]
        assert all(len(t.frames) == 10 for t in p.tracks)
