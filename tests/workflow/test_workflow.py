"""The whole workflow, end to end in moto: S3 event -> start handler -> Step Functions running the
real ASL -> segment -> Map of anonymize -> reassemble -> one published video and report, or a
failure report and nothing else."""

from __future__ import annotations

import json
import shutil
from pathlib import PurePosixPath
from urllib.parse import unquote_plus

import av
import numpy as np
import pytest

from handlers.common import failure_key, join_key, output_keys, processed_key
from infra.local import read_event
from infra.moto_lambda import Fault
from limelight.segments import join, split
from tests.media import adpcm_camera, animation, assert_same_pictures, audio_packets, browser_webm, damaged_copy, frame_times, open_gop_mpeg2, phone_3gp, size_switching_clip, windows_media
from workflow_support import assert_same_timing_and_audio, download, event_for_upload, run_job

HAMILTON = "hamilton_white_house_short_clip.mp4"
LIN = "videos/known_faces/hamilton_white_house/lin-manuel-miranda.png"


def published(cloud, job_id: str) -> list[str]:
    return cloud.keys(cloud.output_bucket, f"{cloud.stack.parameter('OutputPrefix')}{job_id}/")


@pytest.fixture
def lin_consents(cloud, shared_file, tmp_path):
    """Lin-Manuel Miranda's photo is the consent gallery while the test runs."""
    known = tmp_path / "known"
    known.mkdir()
    shutil.copy(shared_file(LIN), known / "lin-manuel-miranda.png")
    cloud.upload_known_faces(known)
    yield
    cloud.s3.delete_object(Bucket=cloud.input_bucket, Key=cloud.stack.parameter("KnownFacesPrefix") + "lin-manuel-miranda.png")


def test_hamilton_upload_gives_one_output_with_original_timing_audio_and_only_lin_kept(cloud, clip, lin_consents, tmp_path):
    # GIVEN Lin-Manuel Miranda's photo as the only consent, and the hamilton clip uploaded
    # under the URL-encoded key of the sample event
    source = clip(HAMILTON)
    event = event_for_upload(cloud, "s3_put_video.json", source.read_bytes())
    # WHEN S3's event reaches the start function
    result = run_job(cloud, event)
    # THEN one execution succeeded and published exactly one video and one report
    assert result.status == "SUCCEEDED"
    key = unquote_plus(read_event("s3_put_video.json")["Records"][0]["s3"]["object"]["key"])
    assert key == "uploads/hamilton at the White House (short clip).mp4"
    video_key, report_key = output_keys(cloud.stack.parameter("OutputPrefix"), result.job_id, key)
    assert published(cloud, result.job_id) == sorted([video_key, report_key])
    assert cloud.keys(cloud.output_bucket, "failed/") == []
    video, report = download(cloud, result, tmp_path)
    # ...with the input's frame count, every frame's timestamp, audio packets and A/V offset
    assert_same_timing_and_audio(video, source)
    merged = report["files"][0]
    assert merged["frames"] == 275
    assert merged["segments"] == 5  # keyframes 0.852, 2.854, 4.856, 7.892, 9.894 s with 2 s segments
    assert report["job"]["source"]["key"] == key
    # ...and the report keeps Lin's tracks only, every other face blurred
    decisions = [t["decision"] for t in merged["tracks"]]
    assert "kept as lin-manuel-miranda" in decisions
    assert set(decisions) == {"kept as lin-manuel-miranda", "blurred"}
    assert decisions.count("blurred") >= 5
    assert merged["kept"] == decisions.count("kept as lin-manuel-miranda")
    # ...each segment analyzed whole before it was rendered: tracks linked, decided from their samples
    assert merged["analysis"]["tracker_tracks"] >= merged["analysis"]["linked_tracks"] > 0
    assert merged["analysis"]["samples"] > 0
    # ...and a face crossing a segment cut is one track, decided once from the samples of both sides:
    # Lin kept on both sides of a cut, the others blurred on both sides
    crossing = [t for t in merged["tracks"] if len(t["segments"]) > 1]
    joins = json.loads(cloud.s3.get_object(Bucket=cloud.work_bucket, Key=join_key(result.job_id))["Body"].read())
    assert joins["joined"] >= len(crossing) > 0
    assert any(t["decision"] == "kept as lin-manuel-miranda" for t in crossing)
    assert any(t["decision"] == "blurred" for t in crossing)
    for t in crossing:
        blurred = {row[5] for row in t["boxes"]}
        assert blurred == ({1} if t["decision"] == "blurred" else {0}), t["track"]
        assert t["frames"] == len(t["boxes"]) and t["last_frame"] - t["first_frame"] + 1 >= t["frames"]
    # ...so the report lists fewer tracks than the segments' analyses found (38 against 52 when measured)
    assert len(merged["tracks"]) < merged["analysis"]["tracks"]


def test_segment_failing_once_is_retried_and_the_output_is_identical(cloud, synthetic_clip, tmp_path):
    # GIVEN a clean run of the clip as the reference
    data = synthetic_clip.read_bytes()
    clean = run_job(cloud, event_for_upload(cloud, "s3_put_video.json", data, key="uploads/clean.mp4"))
    reference, _ = download(cloud, clean, tmp_path)
    # ...and a Lambda service error after segment 1 of the second run did its work
    anonymize = cloud.stack.physical_name("AnonymizeFunction")
    first_attempt = {}

    def snapshot(payload):
        key = processed_key(payload["job_id"], 1)
        first_attempt["bytes"] = cloud.s3.get_object(Bucket=cloud.work_bucket, Key=key)["Body"].read()

    cloud.lambdas.faults.append(Fault(anonymize, matches=lambda p: p["index"] == 1 and p["phase"] == "render", on_fault=snapshot))
    # WHEN the same video is uploaded again under another key
    retried = run_job(cloud, event_for_upload(cloud, "s3_put_video.json", data, key="uploads/retried.mp4"))
    # THEN the Retry rendered segment 1 twice (after analyzing it once), overwriting the same key with the same video
    assert retried.status == "SUCCEEDED"
    runs = [c for c in cloud.lambdas.calls(anonymize) if c.payload["job_id"] == retried.job_id and c.payload["index"] == 1]
    # (the first render ran, then the service failed: its answer was lost)
    assert [(c.payload["phase"], c.error) for c in runs] == [("analyze", None), ("render", None), ("render", "Lambda.ServiceException"),
                                                             ("render", None)]
    final = cloud.s3.get_object(Bucket=cloud.work_bucket, Key=processed_key(retried.job_id, 1))["Body"].read()
    (tmp_path / "first.mp4").write_bytes(first_attempt["bytes"])
    (tmp_path / "final.mp4").write_bytes(final)
    assert_same_pictures(tmp_path / "final.mp4", tmp_path / "first.mp4")
    assert frame_times(tmp_path / "final.mp4") == frame_times(tmp_path / "first.mp4")
    assert len(cloud.keys(cloud.work_bucket, f"jobs/{retried.job_id}/anonymized/")) == 2
    # ...and the published video is the clean run's: same frames, timestamps and audio
    output, _ = download(cloud, retried, tmp_path)
    assert_same_pictures(output, reference)
    assert_same_timing_and_audio(output, reference)
    assert_same_timing_and_audio(output, synthetic_clip)


def test_video_changing_size_mid_stream_is_published_at_its_first_size(cloud, tmp_path):
    # GIVEN an upload whose picture size changes at its second keyframe, 2.4 s in (128 x 72, then
    # 96 x 54), so that the second 2 s segment holds only the smaller pictures
    source = size_switching_clip(tmp_path / "switch.mp4", frames=60)
    event = event_for_upload(cloud, "s3_put_video.json", source.read_bytes(), key="uploads/switch.mp4")
    # WHEN the workflow runs
    result = run_job(cloud, event)
    # THEN it published one video (before, each segment kept its own size and the reassembly
    # refused them), every frame at the first size with its timestamp
    assert result.status == "SUCCEEDED"
    video, report = download(cloud, result, tmp_path)
    assert report["files"][0]["segments"] == 2
    with av.open(str(video)) as c:
        sizes = [(f.width, f.height) for f in c.decode(video=0)]
    assert len(sizes) == 120 and set(sizes) == {(128, 72)}
    assert frame_times(video) == frame_times(source)


def test_an_iphone_named_upload_runs_and_is_published_under_its_name(cloud, synthetic_clip, tmp_path):
    # GIVEN a clip uploaded as an iPhone names it (upper-case suffix), which S3 notifies for
    key = "uploads/IMG_0001.MOV"
    assert cloud.stack.notifies(key)
    event = event_for_upload(cloud, "s3_put_video.json", synthetic_clip.read_bytes(), key=key)
    # WHEN the workflow runs
    result = run_job(cloud, event)
    # THEN it published NAME_anonymized.mov with the clip's timing and audio
    assert result.status == "SUCCEEDED"
    video_key, _ = output_keys(cloud.stack.parameter("OutputPrefix"), result.job_id, key)
    assert video_key.endswith("/IMG_0001_anonymized.mov")
    video, _ = download(cloud, result, tmp_path)
    assert_same_timing_and_audio(video, synthetic_clip)


@pytest.mark.parametrize("make, key, segments_as, published_as", [
    # a browser's recording: VP8, which MP4 cannot hold, is cut into Matroska segments
    (browser_webm, "uploads/call.webm", ".mkv", "call_anonymized.mp4"),
    # a phone's 3GP: its AMR speech fits no MP4, so the result is QuickTime, as the CLI writes it
    (phone_3gp, "uploads/VID0001.3GP", ".mp4", "VID0001_anonymized.mov"),
])
def test_web_and_phone_uploads_are_published_with_their_timing_and_sound(cloud, tmp_path, make, key, segments_as, published_as):
    # GIVEN an upload in a container the workflow did not take (S3 never notified for it, and
    # a WebM's VP8 could not be cut into MP4 segments)
    source = make(tmp_path / PurePosixPath(key).name)
    event = event_for_upload(cloud, "s3_put_video.json", source.read_bytes(), key=key)
    # WHEN the workflow runs
    result = run_job(cloud, event)
    # THEN it published NAME_anonymized in the container that carries its sound bit-exact, with
    # every frame at its time and every audio packet
    assert result.status == "SUCCEEDED", cloud.failure_report(result.job_id)
    assert result.output["output"]["video_key"].endswith(f"/{result.job_id}/{published_as}")
    assert len(published(cloud, result.job_id)) == 2
    video, report = download(cloud, result, tmp_path)
    assert video.suffix == PurePosixPath(published_as).suffix  # saved in the container it was published in
    assert frame_times(video) == frame_times(source)
    assert audio_packets(video) == audio_packets(source) and len(audio_packets(source)) >= 15
    assert report["files"][0]["frames"] == len(frame_times(source))
    segments = cloud.keys(cloud.work_bucket, f"jobs/{result.job_id}/segments/")
    assert segments and {PurePosixPath(k).suffix for k in segments} == {segments_as}


def test_a_broadcast_recording_of_open_gops_is_cut_with_pre_rolls_and_keeps_every_frame(cloud, tmp_path):
    # GIVEN a broadcast recording: open-GOP MPEG-2 in TS, 4 s (two 2 s segments), so the second
    # segment opens on B-frames predicted from the first one's last GOP
    source = open_gop_mpeg2(tmp_path / "news.ts", frames=100)
    event = event_for_upload(cloud, "s3_put_video.json", source.read_bytes(), key="uploads/news.ts")
    # WHEN the workflow runs (the join failed: the second segment lost its leading B-frames)
    result = run_job(cloud, event)
    # THEN the later segments were anonymized from their own first frame after a pre-roll ...
    assert result.status == "SUCCEEDED", cloud.failure_report(result.job_id)
    items = [c.payload for c in cloud.lambdas.calls(cloud.stack.physical_name("AnonymizeFunction")) if c.payload["job_id"] == result.job_id]
    assert len(items) >= 2 and all(item["preroll"] > 0 for item in items if item["index"] > 0)
    # ... and the published MP4 holds every frame at its time, each picture the input's
    video, report = download(cloud, result, tmp_path)
    assert frame_times(video) == frame_times(source)
    assert_same_pictures(video, source, max_mean_diff=2.5)
    assert report["files"][0]["frames"] == 100


def test_a_photo_upload_is_anonymized_as_a_job_of_one_segment_and_published_as_the_cli_writes_it(cloud, tmp_path):
    import cv2
    import numpy as np
    from PIL import Image
    from pillow_heif import register_heif_opener

    from limelight.demo import portraits

    from skimage import data

    # GIVEN an iPhone photo (HEIC) of Grace Hopper beside the astronaut (her whole portrait, not the
    # demo's crop), and Grace Hopper's consent
    faces = {**portraits(), "astronaut": data.astronaut()}
    hopper, astronaut = (cv2.resize(faces[name], (400, 512 * 400 // 400)) for name in ("grace_hopper", "astronaut"))
    picture = np.concatenate([hopper, astronaut], axis=1)
    register_heif_opener()
    source = tmp_path / "IMG_0002.HEIC"
    Image.fromarray(picture).save(source, quality=95)
    known = tmp_path / "known"
    known.mkdir()
    Image.fromarray(faces["grace_hopper"]).save(known / "grace_hopper.jpg")
    cloud.upload_known_faces(known)
    try:
        # WHEN it is uploaded (photos were ignored: the workflow took videos only)
        event = event_for_upload(cloud, "s3_put_video.json", source.read_bytes(), key="uploads/IMG_0002.HEIC")
        result = run_job(cloud, event)
    finally:
        cloud.s3.delete_object(Bucket=cloud.input_bucket, Key=cloud.stack.parameter("KnownFacesPrefix") + "grace_hopper.jpg")
    # THEN it is published once, as JPEG (as the CLI writes a HEIC), with a photo report: Grace
    # Hopper shown, the astronaut blurred
    assert result.status == "SUCCEEDED", cloud.failure_report(result.job_id)
    assert result.output["output"]["video_key"].endswith(f"/{result.job_id}/IMG_0002_anonymized.jpg")
    assert len(published(cloud, result.job_id)) == 2
    photo, report = download(cloud, result, tmp_path)
    assert photo.suffix == ".jpg"
    entry = report["files"][0]
    assert entry["kind"] == "image" and entry["input"] == f"s3://{cloud.input_bucket}/uploads/IMG_0002.HEIC"
    assert sorted(t["decision"] for t in entry["tracks"]) == ["blurred", "kept as grace_hopper"]
    out = cv2.imread(str(photo))[..., ::-1].astype(int)
    assert out.shape == picture.shape

    def change(decision: str) -> float:
        _, x1, y1, x2, y2 = (int(v) for v in next(t for t in entry["tracks"] if t["decision"] == decision)["boxes"][0][:5])
        return float(np.abs(out[y1:y2, x1:x2] - picture[y1:y2, x1:x2]).mean())

    assert change("kept as grace_hopper") < 4 and change("blurred") > 15  # JPEG noise vs a blurred face


def test_an_animated_gif_upload_goes_the_video_way_and_is_published_as_mp4(cloud, tmp_path):
    # GIVEN an animated GIF (GIF is also a photo suffix: a one-frame GIF is published as PNG)
    source = animation(tmp_path / "loop.gif", 6)
    event = event_for_upload(cloud, "s3_put_video.json", source.read_bytes(), key="uploads/loop.gif")
    # WHEN the workflow runs, THEN it is cut and joined like a video and published as MP4, every frame kept
    result = run_job(cloud, event)
    assert result.status == "SUCCEEDED", cloud.failure_report(result.job_id)
    video, report = download(cloud, result, tmp_path)
    assert video.suffix == ".mp4" and report["files"][0]["kind"] == "video"
    assert frame_times(video) == frame_times(source) and len(frame_times(source)) == 6


def test_an_animated_webp_upload_ends_in_a_failure_report_naming_the_cli(cloud, tmp_path):
    # GIVEN an animated WebP (FFmpeg cannot decode it; the CLI reads its frames with Pillow)
    source = animation(tmp_path / "loop.webp", 3)
    event = event_for_upload(cloud, "s3_put_video.json", source.read_bytes(), key="uploads/loop.webp")
    # WHEN the workflow runs, THEN it fails with a report that says what to use instead, and publishes nothing
    result = run_job(cloud, event)
    assert result.status == "FAILED"
    report = cloud.failure_report(result.job_id)
    assert report["error"] == "InvalidVideoError" and "an animated WEBP" in report["message"]
    assert "limelight anonymize" in report["message"] and published(cloud, result.job_id) == []


def test_upload_that_is_not_a_video_ends_in_a_failure_report_and_no_output(cloud):
    # GIVEN a text file uploaded with a video suffix
    event = event_for_upload(cloud, "s3_put_video.json", b"meeting notes, not a video\n", key="uploads/notes.mp4")
    # WHEN the workflow runs
    result = run_job(cloud, event)
    # THEN it failed, wrote failed/<job_id>.json naming the problem, and published nothing else
    assert result.status == "FAILED"
    report = cloud.failure_report(result.job_id)
    assert report["error"] == "InvalidVideoError"
    assert "s3://limelight-local-inputbucket/uploads/notes.mp4" in report["message"]
    assert report["source"]["key"] == "uploads/notes.mp4"
    assert published(cloud, result.job_id) == []
    assert failure_key(result.job_id) in cloud.keys(cloud.output_bucket, "failed/")


def test_an_upload_with_damaged_packets_is_published_whole_with_the_damage_in_its_report(cloud, clip, tmp_path):
    # GIVEN the hamilton clip with two video packets damaged in place (a broken transfer), uploaded
    damaged = tmp_path / "damaged.mp4"
    lost = damaged_copy(clip(HAMILTON), damaged, [100, 200])
    event = event_for_upload(cloud, "s3_put_video.json", damaged.read_bytes(), key="uploads/damaged.mp4")
    # WHEN the workflow runs (it ended in a failure report: "corrupt or truncated")
    result = run_job(cloud, event)
    # THEN the video is published with every frame of the original at its time, and its sound ...
    assert result.status == "SUCCEEDED"
    video, report = download(cloud, result, tmp_path)
    assert_same_timing_and_audio(video, clip(HAMILTON))
    # ... and the report says which frames could not be decoded (each repeats the one before)
    merged = report["files"][0]
    assert merged["damage"]["video_packets"] == 2
    assert merged["damage"]["repeated_frames_at"] == pytest.approx([float(t) for t in lost], abs=1e-6)
    assert failure_key(result.job_id) not in cloud.keys(cloud.output_bucket, "failed/")


def test_damage_is_judged_on_the_whole_upload_as_the_cli_does_not_segment_by_segment(cloud, clip, tmp_path):
    # GIVEN the hamilton clip (275 frames, 2-s segments here) with 3 packets damaged in one segment:
    # more than 1 in 50 of that segment's (a segment failed alone), fewer than of the whole video's
    burst = tmp_path / "burst.mp4"
    damaged_copy(clip(HAMILTON), burst, [150, 160, 170])
    result = run_job(cloud, event_for_upload(cloud, "s3_put_video.json", burst.read_bytes(), key="uploads/burst.mp4"))
    # THEN it is published whole, as the CLI writes it
    assert result.status == "SUCCEEDED"
    video, report = download(cloud, result, tmp_path)
    assert_same_timing_and_audio(video, clip(HAMILTON))
    assert report["files"][0]["damage"]["video_packets"] == 3
    # GIVEN 7 damaged packets spread over the video: more than 1 in 50 of the whole
    wrecked = tmp_path / "wrecked.mp4"
    damaged_copy(clip(HAMILTON), wrecked, [30, 70, 100, 140, 180, 200, 240])
    result = run_job(cloud, event_for_upload(cloud, "s3_put_video.json", wrecked.read_bytes(), key="uploads/wrecked.mp4"))
    # THEN the job fails naming the count, and nothing is published
    assert result.status == "FAILED"
    failure = cloud.failure_report(result.job_id)
    assert failure["error"] == "ReassembleError" and "7 of 275 video packets cannot be decoded" in failure["message"]
    assert published(cloud, result.job_id) == []


def test_same_s3_event_twice_starts_one_execution(cloud, synthetic_clip):
    # GIVEN the duplicate sample event (one upload, delivered twice in one batch)
    event = event_for_upload(cloud, "s3_put_duplicate.json", synthetic_clip.read_bytes(), key="uploads/twice.mp4")
    before = len(cloud.executions())
    # WHEN it reaches the start function, and once more later
    first = cloud.start(event)
    again = cloud.start(event)
    # THEN one execution exists for the job, named by its job_id
    assert len(first["started"]) == 1
    job_id = first["started"][0]
    assert first["duplicates"] == [job_id]
    assert again == {"started": [], "duplicates": [job_id, job_id], "ignored": 0}
    executions = cloud.executions()
    assert len(executions) == before + 1
    assert [e["name"] for e in executions if e["name"] == job_id] == [job_id]
    assert cloud.wait(job_id, timeout=300).status == "SUCCEEDED"


def test_non_video_known_faces_and_output_keys_start_nothing(cloud):
    # GIVEN an event for a text file, a consent photo and a published result
    event = read_event("s3_put_not_video.json")
    before = len(cloud.executions())
    # WHEN it reaches the start function
    result = cloud.start(event)
    # THEN all three are ignored
    assert result == {"started": [], "duplicates": [], "ignored": 3}
    assert len(cloud.executions()) == before


def test_segments_leave_the_segment_step_as_they_are_cut_and_reach_the_reassembly_one_at_a_time(cloud, synthetic_clip,
                                                                                                monkeypatch, tmp_path):
    # GIVEN the segment and reassembly steps watched as they cut and join: which segment files
    # are on their disk each time a segment is handed over (Lambda /tmp holds at most 10 GB: an
    # upload and a second copy of it in segments, or the original, every segment and the
    # output, would not fit for a large camera file)
    from handlers import reassemble, segment

    cut_seen, join_seen = [], []

    def watched_split(src, folder, seconds, on_segment=None):
        def handed(piece):
            cut_seen.append(sorted(p.name for p in folder.iterdir()))
            on_segment(piece)
            cut_seen.append(sorted(p.name for p in folder.iterdir()))
        return split(src, folder, seconds, on_segment=handed)

    def watched_join(parts, original, output):
        def each():
            for part in parts:
                join_seen.append(sorted(p.name for p in part.parent.glob("0*.mp4")))
                yield part
        return join(each(), original, output)

    monkeypatch.setattr(segment, "split", watched_split)
    monkeypatch.setattr(reassemble, "join", watched_join)
    # WHEN the clip is uploaded
    result = run_job(cloud, event_for_upload(cloud, "s3_put_video.json", synthetic_clip.read_bytes(), key="uploads/lean.mp4"))
    # THEN each segment was alone on the segment step's disk and gone once handed over...
    assert result.status == "SUCCEEDED"
    assert cut_seen == [x for i in range(2) for x in ([f"{i:05d}.mp4"], [])]
    # ...the reassembly held one anonymized segment at a time...
    assert join_seen == [[f"{i:05d}.mp4"] for i in range(2)]
    # ...and the result is whole
    output, _ = download(cloud, result, tmp_path)
    assert_same_timing_and_audio(output, synthetic_clip)


def test_an_upload_larger_than_the_storage_of_a_step_ends_in_a_failure_report_naming_it(cloud, synthetic_clip, monkeypatch):
    # GIVEN a step whose storage has less room than the upload (a 12 GB camera file against
    # Lambda's 10 GB /tmp, scaled down)
    real = shutil.disk_usage
    size = len(synthetic_clip.read_bytes())
    room = size // 2

    def small_disk(path):
        usage = real(path)
        return usage._replace(total=room, free=room)

    monkeypatch.setattr(shutil, "disk_usage", small_disk)
    # WHEN it is uploaded
    result = run_job(cloud, event_for_upload(cloud, "s3_put_video.json", synthetic_clip.read_bytes(), key="uploads/huge.mp4"))
    # THEN the job failed with a named error that gives the sizes and what to do, and published nothing
    assert result.status == "FAILED"
    report = cloud.failure_report(result.job_id)
    assert report["error"] == "StorageExceededError"
    assert (f"s3://limelight-local-inputbucket/uploads/huge.mp4 is {size / 1e3:.0f} KB, more than the {room / 1e3:.0f} KB "
            "of storage free in this step") in report["message"]
    assert "limelight anonymize" in report["message"]
    assert published(cloud, result.job_id) == []


def test_a_video_whose_keyframes_are_too_far_apart_for_one_lambda_fails_at_once_saying_how_to_fix_it(cloud, tmp_path):
    # GIVEN a 12 s recording with a single keyframe (a browser's or a screen recorder's video can
    # be so), above the stack's MaxSegmentSeconds (10 here): no cut can make pieces one Lambda can
    # anonymize within its time limit
    src = tmp_path / "call.mp4"
    with av.open(str(src), "w") as out:
        stream = out.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = {"g": "1000", "keyint_min": "1000", "sc_threshold": "0"}
        for i in range(60):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 4 * i, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    # WHEN it is uploaded
    result = run_job(cloud, event_for_upload(cloud, "s3_put_video.json", src.read_bytes(), key="uploads/call.mp4"))
    # THEN the segment step ends the job with a named error that says why and what to do, before
    # any segment went to the work bucket or any Lambda spent its 15 minutes on one
    assert result.status == "FAILED"
    report = cloud.failure_report(result.job_id)
    assert report["error"] == "SegmentTooLongError"
    assert report["message"].startswith("s3://limelight-local-inputbucket/uploads/call.mp4: the 12 s from 0.0 s have no keyframe to cut at")
    assert "at most 10 s of 96x64 video (MaxSegmentSeconds): re-encode it with a keyframe every few seconds" in report["message"]
    assert cloud.keys(cloud.work_bucket, f"jobs/{result.job_id}/segments/") == []
    assert published(cloud, result.job_id) == []


@pytest.mark.parametrize("make, key, words", [
    (windows_media, "uploads/lecture.wmv", "its sound (wmav2) fits none of MP4, Matroska and QuickTime, the containers the "
                                           "workflow publishes in; `limelight anonymize` on one machine writes it back as Windows Media"),
    (adpcm_camera, "uploads/MVI_0001.AVI", "its sound (adpcm_ima_wav) fits none of MP4, Matroska and QuickTime, the containers "
                                           "the workflow publishes in; convert its sound first"),
], ids=["windows-media", "adpcm-avi"])
def test_a_video_whose_sound_the_workflow_cannot_publish_is_refused_before_any_work(cloud, tmp_path, make, key, words):
    # GIVEN a Windows Media file (WMA) or an older camera's AVI (IMA ADPCM): sound the reassembly could
    # not copy into any container it publishes in (it failed at the very end, on a ValueError)
    src = make(tmp_path / key.split("/")[-1])
    # WHEN it is uploaded
    result = run_job(cloud, event_for_upload(cloud, "s3_put_video.json", src.read_bytes(), key=key))
    # THEN the segment step refuses it, saying why and what to do, before cutting it
    assert result.status == "FAILED"
    report = cloud.failure_report(result.job_id)
    assert report["error"] == "InvalidVideoError"
    assert report["message"].startswith(f"s3://limelight-local-inputbucket/{key}: {words}")
    assert cloud.keys(cloud.work_bucket, f"jobs/{result.job_id}/segments/") == []
    assert published(cloud, result.job_id) == []


def test_mutated_uploads_end_in_a_published_result_or_a_named_failure(cloud, data_dir, tmp_path):
    import handlers.exceptions as named
    from tests import fuzz

    for relative in fuzz.SEEDS.values():
        if not (data_dir / relative).is_file():
            pytest.skip(f"shared data {relative} not found under {data_dir}")
    names = {cls.__name__ for cls in vars(named).values() if isinstance(cls, type) and issubclass(cls, named.WorkflowError)}
    seeds = fuzz.make_seeds(tmp_path, data_dir)
    # GIVEN the fuzz test's mutated clips and photos (a seeded few), uploaded
    for k, case in enumerate(fuzz.cases(seeds, 6, 4242, tmp_path)):
        event = event_for_upload(cloud, "s3_put_video.json", case.input.read_bytes(), key=f"uploads/fuzz{k}{case.suffix}")
        result = run_job(cloud, event)
        # THEN each job published its result, or failed with a failure report naming one of the
        # workflow's own errors (never a library's exception) and published nothing else
        if result.status == "SUCCEEDED":
            assert len(published(cloud, result.job_id)) == 2, case
        else:
            report = cloud.failure_report(result.job_id)
            assert report is not None and report["error"] in names, (case, report)
            assert "\n" not in report["message"] and published(cloud, result.job_id) == []


def test_the_workflow_copies_the_faceless_gops_as_the_cli_does(cloud, tmp_path):
    # GIVEN an H.264 clip whose first two GOPs (of four, one second each) hold no face, uploaded;
    # the workflow's segments (2 s) hold two GOPs each
    from click.testing import CliRunner

    from limelight.cli import main
    from tests.test_smart import copied_frames, decode_cleanly, half_faceless_clip

    clip = half_faceless_clip(tmp_path / "half.mp4")
    event = event_for_upload(cloud, "s3_put_video.json", clip.read_bytes(), key="uploads/half.mp4")
    # WHEN the job runs
    result = run_job(cloud, event)
    assert result.status == "SUCCEEDED"
    video, report = download(cloud, result, tmp_path)
    # THEN the faceless GOPs are the input's packets, byte for byte, and the face GOPs re-encoded
    # from the face on
    copied = copied_frames(clip, video)
    assert copied[:50] == list(range(50)) and 50 <= len(copied) < 75 and copied == list(range(len(copied)))
    merged = report["files"][0]
    assert merged["render"] == {"mode": "smart", "reason": None, "gops_copied": 2, "gops_encoded": 2, "frames_copied": len(copied),
                                "frames_encoded": 100 - len(copied), "seconds_copied": len(copied) / 25,
                                "seconds_encoded": (100 - len(copied)) / 25}
    # ...in a stream that decodes without an error, with the input's timing and sound
    assert len(decode_cleanly(video)) == 100
    assert_same_timing_and_audio(video, clip)
    # ...as the CLI renders it: the same GOPs copied
    out = tmp_path / "cli.mp4"
    assert CliRunner().invoke(main, ["anonymize", str(clip), "-o", str(out)]).exit_code == 0
    assert copied_frames(clip, out) == copied
