"""Long segment lists take the distributed Map (items read from S3); the result is the same."""

from __future__ import annotations

import pytest

from infra.local import LocalCloud
from workflow_support import assert_same_timing_and_audio, download, event_for_upload, run_job


@pytest.fixture(scope="module")
def small_inline_limit():
    # Any list longer than one segment is "long": the Choice sends it to the distributed Map.
    with LocalCloud.running({"SegmentSeconds": "1", "InlineMapMaxSegments": "1"}) as running:
        yield running


def test_segment_list_over_the_inline_limit_runs_in_a_distributed_map(small_inline_limit, synthetic_clip, tmp_path):
    cloud = small_inline_limit
    result = run_job(cloud, event_for_upload(cloud, "s3_put_video.json", synthetic_clip.read_bytes(), key="uploads/long.mp4"))
    assert result.status == "SUCCEEDED"
    history = cloud.sfn.get_execution_history(executionArn=result.execution_arn, maxResults=1000)["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if e["type"].endswith("StateEntered")]
    assert {"Analyze the segments with a distributed Map", "Render the segments with a distributed Map"} <= set(entered)
    assert not {"Analyze the segments in parallel", "Render the segments in parallel"} & set(entered)
    anonymize = cloud.stack.physical_name("AnonymizeFunction")
    calls = sorted((c.payload["phase"], c.payload["index"]) for c in cloud.lambdas.calls(anonymize))
    assert calls == [("analyze", i) for i in range(4)] + [("render", i) for i in range(4)]
    video, report = download(cloud, result, tmp_path)
    assert report["files"][0]["segments"] == 4
    assert_same_timing_and_audio(video, synthetic_clip)


def test_the_distributed_map_gives_open_gop_segments_their_pre_roll(small_inline_limit, tmp_path):
    from tests.media import frame_times, open_gop_mpeg2

    # GIVEN open-GOP MPEG-2 (2.4 s: four 1 s segments read from segments.json by the distributed Map)
    cloud = small_inline_limit
    source = open_gop_mpeg2(tmp_path / "dvd.mpg")
    result = run_job(cloud, event_for_upload(cloud, "s3_put_video.json", source.read_bytes(), key="uploads/dvd.mpg"))
    # THEN each later segment's item carries its pre-roll and every frame is published at its time
    assert result.status == "SUCCEEDED", cloud.failure_report(result.job_id)
    calls = [c.payload for c in cloud.lambdas.calls(cloud.stack.physical_name("AnonymizeFunction")) if c.payload["job_id"] == result.job_id]
    assert len(calls) > 1 and all(c["preroll"] > 0 and c["skip_before"] > 0 for c in calls if c["index"] > 0)
    video, _ = download(cloud, result, tmp_path)
    assert frame_times(video) == frame_times(source)
