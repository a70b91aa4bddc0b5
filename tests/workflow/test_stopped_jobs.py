"""A job that no Catch sees end (past WorkflowTimeoutSeconds, or stopped) still gets its failure
report, and nothing else: the state machine's end-of-execution event reaches the failure function
through the template's EventBridge rule (delivered by the local run as EventBridge would), and a
reassembly still running when its execution ended publishes nothing."""

from __future__ import annotations

import time

import pytest

from infra.local import LocalCloud
from infra.moto_lambda import Fault, Invocation
from workflow_support import event_for_upload, run_job

TIME_LIMIT = "12"  # WorkflowTimeoutSeconds of this stack: the synthetic clip's job takes ~2 s once warm


@pytest.fixture(scope="module")
def hasty_cloud(synthetic_clip):
    """A stack whose executions time out after TIME_LIMIT seconds, warmed by one job (the first
    loads the detector and starts the engine's worker: seconds that would eat into the limit)."""
    with LocalCloud.running({"SegmentSeconds": "2", "WorkflowTimeoutSeconds": TIME_LIMIT}) as running:
        warm = run_job(running, event_for_upload(running, "s3_put_video.json", synthetic_clip.read_bytes(), key="uploads/warm.mp4"))
        assert warm.status == "SUCCEEDED"
        for key in running.keys(running.output_bucket):
            running.s3.delete_object(Bucket=running.output_bucket, Key=key)
        yield running


def wait_for_the_time_limit(cloud: LocalCloud, job_id: str) -> None:
    """Hold a step until its execution has timed out (at most twice the limit)."""
    arn = cloud.execution_arn(job_id)
    deadline = time.monotonic() + 2 * float(TIME_LIMIT)
    while cloud.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the execution did not time out"
        time.sleep(0.2)


def finished_reassembly(cloud: LocalCloud, job_id: str) -> Invocation:
    """The job's reassembly invocation once it has returned (it outlives its execution)."""
    name = cloud.stack.physical_name("ReassembleFunction")
    deadline = time.monotonic() + 60
    while not (calls := [c for c in cloud.lambdas.calls(name) if c.payload["job_id"] == job_id]):
        assert time.monotonic() < deadline, "the reassembly did not return"
        time.sleep(0.2)
    assert len(calls) == 1
    return calls[0]


def assert_timed_out_with_its_report_only(cloud: LocalCloud, result, key: str) -> None:
    assert result.status == "TIMED_OUT"
    report = cloud.failure_report(result.job_id)
    assert report["error"] == "States.Timeout"
    assert report["message"] == "the job ran longer than the workflow's time limit (WorkflowTimeoutSeconds) and was stopped"
    assert report["source"]["key"] == key
    assert cloud.keys(cloud.output_bucket, cloud.stack.parameter("OutputPrefix")) == []


def test_a_job_past_the_workflow_time_limit_ends_in_a_failure_report_and_publishes_nothing(hasty_cloud, synthetic_clip):
    cloud = hasty_cloud
    # GIVEN a segment whose anonymization takes longer than the whole workflow may
    anonymize = cloud.stack.physical_name("AnonymizeFunction")
    cloud.lambdas.faults.append(Fault(anonymize, matches=lambda p: p["index"] == 0,
                                      on_fault=lambda p: wait_for_the_time_limit(cloud, p["job_id"])))
    # WHEN the video is uploaded
    result = run_job(cloud, event_for_upload(cloud, "s3_put_video.json", synthetic_clip.read_bytes(), key="uploads/slow.mp4"))
    # THEN the execution timed out, and its end brought the failure report naming the upload and the
    # time limit, with nothing published under any container
    assert_timed_out_with_its_report_only(cloud, result, "uploads/slow.mp4")


def test_a_reassembly_still_running_when_its_job_timed_out_publishes_nothing(hasty_cloud, synthetic_clip, monkeypatch):
    cloud = hasty_cloud
    # GIVEN a reassembly whose join outlasts the workflow's time limit (a Lambda invocation is not
    # stopped with its execution: it would go on to publish after the failure report)
    from handlers import reassemble
    from limelight.segments import join

    job, joined = [], []

    def slow_join(parts, original, output):
        wait_for_the_time_limit(cloud, job[0])
        joined.append(output)
        return join(parts, original, output)

    monkeypatch.setattr(reassemble, "join", slow_join)
    event = event_for_upload(cloud, "s3_put_video.json", synthetic_clip.read_bytes(), key="uploads/late.mp4")
    job.append(cloud.start(event)["started"][0])
    # WHEN the job runs to its end
    result = cloud.wait(job[0], timeout=300)
    # THEN the reassembly did join the video, yet ended saying its job had stopped and published
    # nothing: the failure report is the job's only outcome
    assert finished_reassembly(cloud, result.job_id).error == "JobStoppedError"
    assert len(joined) == 1
    assert_timed_out_with_its_report_only(cloud, result, "uploads/late.mp4")


def test_a_result_whose_job_timed_out_while_it_was_published_is_withdrawn(hasty_cloud, synthetic_clip, monkeypatch):
    cloud = hasty_cloud
    # GIVEN a publication of the result that outlasts the workflow's time limit (a large video's upload)
    prefix = cloud.stack.parameter("OutputPrefix")
    upload = cloud.s3.upload_file
    published = []

    def slow_publication(path, bucket, key, *args, **kwargs):
        if bucket == cloud.output_bucket and key.startswith(prefix):
            wait_for_the_time_limit(cloud, key[len(prefix):].split("/")[0])
            published.append(key)
        return upload(path, bucket, key, *args, **kwargs)

    monkeypatch.setattr(cloud.s3, "upload_file", slow_publication)
    # WHEN the video is uploaded and the job runs to its end
    result = run_job(cloud, event_for_upload(cloud, "s3_put_video.json", synthetic_clip.read_bytes(), key="uploads/withdrawn.mp4"))
    # THEN the video was published, then withdrawn: the failure report is the job's only outcome
    assert finished_reassembly(cloud, result.job_id).error == "JobStoppedError"
    assert published == [f"{prefix}{result.job_id}/withdrawn_anonymized.mp4"]
    assert_timed_out_with_its_report_only(cloud, result, "uploads/withdrawn.mp4")
