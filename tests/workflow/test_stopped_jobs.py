"""A job that no Catch sees end (past WorkflowTimeoutSeconds, or stopped) still gets its failure
report: the state machine's end-of-execution event reaches the failure function through the
template's EventBridge rule (delivered by the local run as EventBridge would)."""

from __future__ import annotations

import time

import pytest

from infra.local import LocalCloud
from infra.moto_lambda import Fault
from workflow_support import event_for_upload, run_job


@pytest.fixture(scope="module")
def hasty_cloud():
    """A stack whose executions time out after 3 s."""
    with LocalCloud.running({"SegmentSeconds": "2", "WorkflowTimeoutSeconds": "3"}) as running:
        yield running


def test_a_job_past_the_workflow_time_limit_ends_in_a_failure_report_and_publishes_nothing(hasty_cloud, synthetic_clip):
    cloud = hasty_cloud
    # GIVEN a segment whose anonymization takes longer than the whole workflow may
    anonymize = cloud.stack.physical_name("AnonymizeFunction")
    cloud.lambdas.faults.append(Fault(anonymize, matches=lambda p: p["index"] == 0, on_fault=lambda p: time.sleep(5)))
    # WHEN the video is uploaded
    result = run_job(cloud, event_for_upload(cloud, "s3_put_video.json", synthetic_clip.read_bytes(), key="uploads/slow.mp4"))
    # THEN the execution timed out, and its end brought the failure report naming the upload and the
    # time limit, with nothing published under any container
    assert result.status == "TIMED_OUT"
    report = cloud.failure_report(result.job_id)
    assert report["error"] == "States.Timeout"
    assert report["message"] == "the job ran longer than the workflow's time limit (WorkflowTimeoutSeconds) and was stopped"
    assert report["source"]["key"] == "uploads/slow.mp4"
    assert cloud.keys(cloud.output_bucket, cloud.stack.parameter("OutputPrefix")) == []
