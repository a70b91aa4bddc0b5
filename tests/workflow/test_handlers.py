"""Handler glue without a server: configuration, job identity, event parsing, failure reports."""

from __future__ import annotations

import errno
import json
from fractions import Fraction

import av
import numpy as np
import pytest

from handlers import failure, segment, start
from handlers.common import Source, output_keys, published_keys, segment_key, use_clients, within_storage
from handlers.exceptions import ConfigurationError, SegmentFailedError, StorageExceededError
from limelight.errors import OutputError
from infra.local import read_event
from infra.moto_lambda import LocalContext
from infra.template import LocalStack, load


class FakeStepFunctions:
    """The two Step Functions calls the start handler makes, with AWS's error classes."""

    class exceptions:
        ExecutionDoesNotExist = type("ExecutionDoesNotExist", (Exception,), {})
        ExecutionAlreadyExists = type("ExecutionAlreadyExists", (Exception,), {})

    def __init__(self) -> None:
        self.inputs: dict[str, dict] = {}

    def describe_execution(self, executionArn: str) -> dict:
        name = executionArn.rsplit(":", 1)[-1]
        if name not in self.inputs:
            raise self.exceptions.ExecutionDoesNotExist(name)
        return {"executionArn": executionArn}

    def start_execution(self, stateMachineArn: str, name: str, input: str) -> dict:
        self.inputs[name] = json.loads(input)
        return {"executionArn": f"{stateMachineArn}:{name}"}


@pytest.fixture
def start_env(monkeypatch):
    """The start function's environment as template.yaml defines it (local names)."""
    for key, value in LocalStack(load()).function_environment("StartFunction").items():
        monkeypatch.setenv(key, value)
    start.config.cache_clear()
    sfn = FakeStepFunctions()
    use_clients(stepfunctions=sfn)
    yield sfn
    use_clients()
    start.config.cache_clear()


def context() -> LocalContext:
    return LocalContext(function_name="start", invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:start")


def test_start_decodes_the_key_and_names_the_execution_by_job_id(start_env):
    result = start.handler(read_event("s3_put_video.json"), context())
    source = Source("limelight-local-inputbucket", "uploads/hamilton at the White House (short clip).mp4",
                    "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY", "0123456789abcdef0123456789abcdef")
    assert result == {"started": [source.job_id], "duplicates": [], "ignored": 0}
    assert start_env.inputs == {source.job_id: {"job_id": source.job_id, "source": source.as_dict()}}
    # The sample payloads of the later states carry the same job.
    assert read_event("segment.json") == {"job_id": source.job_id, "source": source.as_dict()}


def test_start_ignores_other_files_consent_photos_and_its_own_outputs(start_env):
    assert start.handler(read_event("s3_put_not_video.json"), context()) == {"started": [], "duplicates": [], "ignored": 3}
    assert start_env.inputs == {}


def test_start_treats_a_duplicate_record_as_duplicate(start_env):
    result = start.handler(read_event("s3_put_duplicate.json"), context())
    assert len(result["started"]) == 1 and result["duplicates"] == result["started"]
    assert len(start_env.inputs) == 1


def test_job_id_is_short_and_changes_with_the_version_only():
    a = Source("in", "uploads/a.mp4", "v1", "e1")
    assert a.job_id == Source("in", "uploads/a.mp4", "v1", "other-etag").job_id
    assert a.job_id != Source("in", "uploads/a.mp4", "v2", "e1").job_id
    assert Source("in", "uploads/a.mp4", None, "e1").job_id != Source("in", "uploads/a.mp4", None, "e2").job_id
    assert len(a.job_id) == 20 and a.job_id.isalnum()


def test_output_keys_depend_only_on_job_and_name_and_keep_the_container():
    assert output_keys("anonymized/", "j1", "uploads/x/My Clip.MOV") == ("anonymized/j1/My Clip_anonymized.mov", "anonymized/j1/My Clip_anonymized.report.json")
    assert output_keys("anonymized/", "j1", "uploads/clip.avi")[0] == "anonymized/j1/clip_anonymized.mp4"
    # the reassembly's container for audio MP4 cannot carry (a phone's AMR), any other refused
    assert output_keys("anonymized/", "j1", "uploads/VID1.3gp", ".mov")[0] == "anonymized/j1/VID1_anonymized.mov"
    with pytest.raises(ValueError, match="output container"):
        output_keys("anonymized/", "j1", "uploads/clip.avi", ".avi")


def test_a_failed_job_clears_its_result_under_every_container_it_may_have_got():
    keys = published_keys("anonymized/", "j1", "uploads/VID1.3gp")
    assert output_keys("anonymized/", "j1", "uploads/VID1.3gp", ".mov")[0] in keys
    assert output_keys("anonymized/", "j1", "uploads/VID1.3gp")[0] in keys
    assert "anonymized/j1/VID1_anonymized.report.json" in keys
    assert all(key.startswith("anonymized/j1/VID1_anonymized.") for key in keys)


def test_segment_keys_name_their_container_and_take_only_the_splits():
    assert segment_key("j1", 3) == "jobs/j1/segments/00003.mp4"
    assert segment_key("j1", 3, ".mkv") == "jobs/j1/segments/00003.mkv"
    with pytest.raises(ValueError, match="segment container"):
        segment_key("j1", 3, "/../../x")


def test_missing_configuration_fails_fast_naming_the_variable(monkeypatch):
    for key in ("WORK_BUCKET", "SEGMENT_SECONDS", "MAX_SEGMENT_SECONDS", "KNOWN_FACES_BUCKET", "KNOWN_FACES_PREFIX",
                "INLINE_MAP_MAX_SEGMENTS"):
        monkeypatch.setenv(key, "1")
    monkeypatch.delenv("SEGMENT_SECONDS")
    with pytest.raises(ConfigurationError, match="SEGMENT_SECONDS"):
        segment.Config.from_env()
    monkeypatch.setenv("SEGMENT_SECONDS", "ten")
    with pytest.raises(ConfigurationError, match="SEGMENT_SECONDS='ten'"):
        segment.Config.from_env()


def test_failure_report_keeps_the_lambda_error_type_and_message_only():
    event = read_event("failure.json")
    error_type, message = failure.describe(event["error"])
    assert error_type == "InvalidVideoError"
    assert message.startswith("s3://limelight-local-inputbucket/uploads/notes.mp4: not a readable video")
    assert failure.describe({"Error": "States.Timeout", "Cause": "took too long"}) == ("States.Timeout", "took too long")


def test_a_segment_is_encoded_at_the_whole_videos_picture_size():
    from handlers.anonymize import segment_options
    from limelight.pipeline import AnonymizeOptions

    options = AnonymizeOptions()
    # the Map item's picture (the segment handler's coded size of the whole video) sets the size
    item = read_event("anonymize.json")
    sized = segment_options(options, item["picture"])
    assert sized.encode.size == (640, 360) and sized.encode.rate == Fraction(30000, 1001)
    assert sized.encode.crf == options.encode.crf and sized.redact == options.redact
    # without one (an older payload), the segment keeps its own first picture's size
    assert segment_options(options, None).encode.size is None
    # a segment is not a whole file: its damage is judged with the whole video's, at the reassembly
    assert options.encode.whole_file and not sized.encode.whole_file
    # a segment after a pre-roll processes its own frames only, from its skip_before on
    assert segment_options(options, item["picture"], 58214).encode.start_pts == 58214
    assert item["preroll"] == 0 and item["skip_before"] is None and sized.encode.start_pts is None


def test_running_out_of_storage_becomes_a_named_error_however_deep_the_engine_wrapped_it():
    # GIVEN the engine failing to write because the disk is full (PyAV's own error, on /dev/full),
    # wrapped as the engine and the anonymize step wrap it (the step's error hides its cause)
    def anonymize_segment():
        try:
            with av.open("/dev/full", "w", format="matroska") as out:
                stream = out.add_stream("mpeg4", rate=25)
                stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
                for i in range(50):
                    frame = av.VideoFrame.from_ndarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), np.uint8), format="rgb24")
                    frame.pts = i
                    out.mux(stream.encode(frame))
        except av.FFmpegError as error:
            try:
                raise OutputError(f"segment.mp4: cannot write ({error})") from error
            except OutputError as engine_error:
                raise SegmentFailedError(f"segment 3 of job j1: {engine_error}") from None

    # WHEN it happens inside the step's storage guard
    # THEN the step fails with a StorageExceededError that says what did not fit and what to do
    with pytest.raises(StorageExceededError, match=r"^segment 3 of job j1 does not fit the .+ of storage of this step; upload it"):
        with within_storage("segment 3 of job j1"):
            anonymize_segment()
    # ...while other failures pass through unchanged
    with pytest.raises(PermissionError):
        with within_storage("segment 3 of job j1"):
            raise PermissionError(errno.EACCES, "denied")
    with pytest.raises(SegmentFailedError, match="no video stream"):
        with within_storage("segment 3 of job j1"):
            raise SegmentFailedError("segment 3 of job j1: no video stream")


def test_the_longest_segment_a_lambda_is_given_shrinks_with_the_picture_above_1080p():
    assert segment.segment_limit(120, 1920, 1080) == 120
    assert segment.segment_limit(120, 640, 360) == 120
    assert segment.segment_limit(120, 3840, 2160) == 30
    assert segment.segment_limit(120, 1080, 1920) == 120  # a phone's portrait video: same pixels


def test_a_timed_out_executions_event_becomes_the_failure_report_of_its_job():
    # GIVEN EventBridge's event for an execution that ran past WorkflowTimeoutSeconds (sample event)
    event = read_event("execution_timed_out.json")
    # WHEN the failure function reads it
    payload = failure.from_status_change(event)
    # THEN it is the job's failure, named as Step Functions names a timeout, with the upload as source
    assert payload["job_id"] == "612640628a34a73a904e"
    assert payload["source"]["key"] == "uploads/hamilton at the White House (short clip).mp4"
    assert failure.describe(payload["error"]) == (
        "States.Timeout", "the job ran longer than the workflow's time limit (WorkflowTimeoutSeconds) and was stopped")
    # ...a stopped one keeps the error and cause its StopExecution gave
    event["detail"].update(status="ABORTED", error="Operator", cause="redeploying")
    assert failure.describe(failure.from_status_change(event)["error"]) == (
        "Operator", "the job was stopped (StopExecution) before it finished: redeploying")
    # ...and one whose input EventBridge left out (above 256 KiB) still gets a report, without a source
    event["detail"].update(input=None, inputDetails={"included": False})
    assert failure.from_status_change(event)["source"] == {}


def test_a_reassembly_outside_a_running_execution_publishes_nothing():
    # GIVEN the reassembly invoked for a job no execution runs (sam local invoke with the sample event)
    import boto3
    from moto import mock_aws

    from handlers import reassemble
    from handlers.exceptions import JobStoppedError

    cfg = reassemble.Config("work", "output", "anonymized/", "arn:aws:states:us-east-1:123456789012:stateMachine:limelight-local-anonymize", "jobs")
    with mock_aws():
        use_clients(stepfunctions=boto3.client("stepfunctions", region_name="us-east-1"))
        try:
            # WHEN it asks whether the job still runs
            # THEN it is told to publish nothing, in a named error
            with pytest.raises(JobStoppedError, match="job 612640628a34a73a904e: its execution ended nowhere .* nothing is published"):
                reassemble.ensure_running(cfg, "612640628a34a73a904e", "before its result was published")
        finally:
            use_clients()


def test_a_job_record_only_moves_forward_and_a_deleted_job_stays_deleted():
    import boto3
    from moto import mock_aws

    from handlers import jobs

    with mock_aws():
        db = boto3.client("dynamodb", region_name="us-east-1")
        db.create_table(TableName="jobs", BillingMode="PAY_PER_REQUEST", KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}])
        use_clients(dynamodb=db)
        try:
            store, job_id = jobs.JobStore("jobs"), jobs.new_job_id()
            store.create({"job_id": job_id, "owner": "arn:alice", "status": jobs.AWAITING_UPLOAD, "created_at": 1})
            with pytest.raises(db.exceptions.ConditionalCheckFailedException):
                store.create({"job_id": job_id, "owner": "arn:mallory", "status": jobs.AWAITING_UPLOAD, "created_at": 2})
            assert store.update(job_id, [jobs.AWAITING_UPLOAD], set_={"status": jobs.RUNNING})
            assert not store.update(job_id, [jobs.AWAITING_UPLOAD], set_={"status": jobs.RUNNING})  # a duplicated upload event
            for index in ("00001", "00000", "00001"):  # a retried segment counts once
                assert store.update(job_id, [jobs.RUNNING], add={"segments_done": {index}})
            assert store.get(job_id)["segments_done"] == ["00000", "00001"]
            assert store.update(job_id, [jobs.RUNNING], set_={"status": jobs.DELETED})
            # a late step cannot bring the deleted job back, and sees it deleted
            assert not store.update(job_id, [jobs.AWAITING_UPLOAD, jobs.RUNNING], set_={"status": jobs.SUCCEEDED})
            assert store.is_deleted(job_id) and store.get(job_id)["owner"] == "arn:alice"
            assert not store.update(jobs.new_job_id(), [jobs.RUNNING], set_={"status": jobs.FAILED})  # no record is created
            assert store.is_deleted("0123456789abcdef0123")
        finally:
            use_clients()


def test_only_an_api_upload_key_names_a_job_and_erasure_refuses_anything_but_a_job_id():
    from handlers import jobs

    job_id = "0123456789abcdef0123"
    assert jobs.api_job_of(f"uploads/api/{job_id}/clip.mp4", "uploads/") == job_id
    for key in (f"uploads/{job_id}/clip.mp4", f"uploads/api/{job_id}/sub/clip.mp4", f"uploads/api/{job_id[:-1]}/clip.mp4",
                f"other/api/{job_id}/clip.mp4", "uploads/clip.mp4"):
        assert jobs.api_job_of(key, "uploads/") is None, key
    for bad in ("", "0123", "../x", f"{job_id}/"):
        with pytest.raises(ValueError):
            jobs.erase(bad, input_bucket="i", input_prefix="uploads/", work_bucket="w", output_bucket="o", output_prefix="anonymized/")
