"""template.yaml and the ASL agree, and both follow the rules of the workflow."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cfnlint.api import lint_all

from infra.template import PLACEHOLDER, REPO, TEMPLATE, LocalStack, load

LAMBDA_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
}


@pytest.fixture(scope="module")
def stack() -> LocalStack:
    return LocalStack(load())


@pytest.fixture(scope="module")
def definition(stack) -> dict:
    return json.loads(stack.definition())


def states(definition: dict):
    """(name, state) of every state, Map item processors included."""
    for name, state in definition["States"].items():
        yield name, state
        if state["Type"] == "Map":
            yield from states(state["ItemProcessor"])


def test_asl_placeholders_are_exactly_the_template_substitutions(stack):
    used = set(PLACEHOLDER.findall(stack.definition_path().read_text()))
    assert used == set(stack.substitutions())
    assert "${" not in stack.definition()


def test_every_task_invokes_lambda_keeps_only_the_payload_and_retries_service_errors(definition):
    tasks = [(name, state) for name, state in states(definition) if state["Type"] == "Task"]
    # segment, analyze and render (each inline and distributed), join, reassemble, failure report
    assert len(tasks) == 8
    for name, task in tasks:
        assert task["Resource"] == "arn:aws:states:::lambda:invoke", name
        if name == "Join the tracks that cross the segment cuts":  # adds its count to the state, keeps the rest
            assert task["ResultSelector"] == {"tracks.$": "$.Payload.joined"} and task["ResultPath"] == "$.joined"
        else:
            assert task["OutputPath"] == "$.Payload", name
        retried = {error for retrier in task["Retry"] for error in retrier["ErrorEquals"]}
        assert LAMBDA_ERRORS <= retried, name
        assert all(r["BackoffRate"] > 1 and r["MaxAttempts"] >= 3 for r in task["Retry"]), name


def test_failures_are_caught_into_the_failure_report_then_fail(definition):
    top = definition["States"]
    for name, state in top.items():
        if state["Type"] in ("Task", "Map") and name != "Write the failure report":
            assert state["Catch"][-1:] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Write the failure report"}], name
            if name.startswith("Render the segments"):  # a segment that cannot be smart-rendered: every segment in full, once
                assert state["Catch"][0] == {"ErrorEquals": ["SmartRenderUnavailableError"], "ResultPath": "$.smart_render_error",
                                             "Next": "Render every segment in full"}
            else:
                assert len(state["Catch"]) == 1, name
    fallback = top["Render every segment in full"]
    assert fallback["Result"]["mode"] == "full" and fallback["ResultPath"] == "$.render"
    assert fallback["Next"] == "Choose how to map the analysis"  # analyzed again as the full render decodes
    assert top["Write the failure report"]["Next"] == "The job failed"
    assert top["The job failed"]["Type"] == "Fail"
    assert isinstance(definition["TimeoutSeconds"], int) and definition["TimeoutSeconds"] > 0


def test_maps_are_bounded_and_the_distributed_one_reads_the_segment_list_from_s3(definition, stack):
    maps = {name: state for name, state in definition["States"].items() if state["Type"] == "Map"}
    assert {s["ItemProcessor"]["ProcessorConfig"]["Mode"] for s in maps.values()} == {"INLINE", "DISTRIBUTED"}
    for state in maps.values():
        assert state["MaxConcurrency"] == int(stack.parameter("MapMaxConcurrency"))
        assert state["ResultPath"] is None  # results would grow the payload with the segment count
        assert state["ItemSelector"]["job_id.$"] == "$.job_id"
    assert sorted(maps) == ["Analyze the segments in parallel", "Analyze the segments with a distributed Map",
                            "Render the segments in parallel", "Render the segments with a distributed Map"]
    for name, state in maps.items():
        assert state["ItemSelector"]["phase"] == name.split()[0].lower()  # analyze / render
        if "distributed" in name:
            assert state["ItemReader"]["Parameters"]["Bucket"] == stack.physical_name("WorkBucket")
    # The analysis, the join and the render follow each other, inline or distributed alike.
    top = definition["States"]
    assert {top[m]["Next"] for m in maps if m.startswith("Analyze")} == {"Join the tracks that cross the segment cuts"}
    assert top["Join the tracks that cross the segment cuts"]["Next"] == "Choose how to map the render"
    assert {top[m]["Next"] for m in maps if m.startswith("Render")} == {"Reassemble the video with its original audio"}


def test_state_names_are_sentences(definition):
    for name, _ in states(definition):
        assert re.fullmatch(r"[A-Z][a-z]*( [A-Za-z]+)+", name), name


def test_template_passes_cfn_lint_with_the_sam_transform():
    # Errors and warnings, as `cfn-lint template.yaml` (and `sam validate --lint`) report them.
    matches = [m for m in lint_all(TEMPLATE.read_text()) if m.rule.id[0] in "EW"]
    assert [str(m) for m in matches] == []


def test_functions_share_one_image_and_name_their_handler(stack):
    functions = stack.of_type("AWS::Serverless::Function")
    assert sorted(functions) == ["AnonymizeFunction", "ApiFunction", "FailureFunction", "JoinFunction", "ReassembleFunction", "SegmentFunction",
                               "StartFunction"]
    for logical in functions:
        resource = stack.resources[logical]
        assert resource["Properties"]["PackageType"] == "Image"
        assert resource["Metadata"] == {"Dockerfile": "functions/Dockerfile", "DockerContext": ".", "DockerTag": "limelight"}
        module, function = stack.function_handler(logical).rsplit(".", 1)
        assert (REPO / "functions" / Path(*module.split("."))).with_suffix(".py").is_file()
        assert function == "handler"
    assert (REPO / "functions" / "Dockerfile").is_file()


def test_only_the_input_bucket_notifies_and_only_under_the_input_prefix(stack):
    events = stack.resources["StartFunction"]["Properties"]["Events"]
    assert {e["Properties"]["Bucket"]["Ref"] for e in events.values()} == {"InputBucket"}
    for event in events.values():
        rules = {r["Name"]: r["Value"] for r in event["Properties"]["Filter"]["S3Key"]["Rules"]}
        assert rules["prefix"] == {"Ref": "InputPrefix"}


def test_the_start_function_takes_every_video_container_the_engine_reads(stack):
    from limelight.video import CONTAINER_SUFFIXES

    from limelight.formats import IMAGE_SUFFIXES

    accepted = stack.function_environment("StartFunction")["VIDEO_SUFFIXES"].split(",")
    assert len(accepted) == len(set(accepted)) and set(accepted) == CONTAINER_SUFFIXES
    photos = stack.function_environment("StartFunction")["PHOTO_SUFFIXES"].split(",")
    assert len(photos) == len(set(photos)) and set(photos) == IMAGE_SUFFIXES | {".gif"}


def test_buckets_block_public_access_encrypt_and_expire_intermediates(stack):
    for logical in stack.of_type("AWS::S3::Bucket"):
        props = stack.resources[logical]["Properties"]
        assert all(props["PublicAccessBlockConfiguration"].values()), logical
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"], logical
    rules = stack.resources["WorkBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert rules[0]["Prefix"] == "jobs/" and rules[0]["Status"] == "Enabled"


@pytest.mark.parametrize("key, starts", [
    ("uploads/clip.mp4", True),
    ("uploads/IMG_0001.MOV", True),  # iPhone
    ("uploads/C0001.MP4", True),  # Sony camera
    ("uploads/GX010001.MP4", True),  # GoPro
    ("uploads/interview.mkv", True),
    ("uploads/Trailer.M4V", True),
    ("uploads/00001.MTS", True),  # AVCHD camcorder
    ("uploads/rushes/A001C002.MXF", True),  # broadcast camera
    ("uploads/tape01.dv", True),
    ("uploads/call.webm", True),  # a browser's recording
    ("uploads/VID0001.3gp", True),
    ("uploads/clip.Mp4", True),
    ("uploads/IMG_0002.HEIC", True),  # a photo: a job of one segment
    ("uploads/press/portrait.jpg", True),
    ("uploads/notes.txt", False),
    ("elsewhere/clip.mp4", False),
])
def test_camera_and_web_uploads_start_a_job(stack, key, starts, monkeypatch):
    # S3 matches key filters case-sensitively and the template had lower-case rules for four
    # containers only: an .MTS, .MXF, .dv, .webm or .3gp upload (or an iPhone's IMG_0001.MOV
    # before upper-case rules) never started a job, and nobody was told
    from handlers import start
    from handlers.common import Source

    for name, value in stack.function_environment("StartFunction").items():
        monkeypatch.setenv(name, value)
    cfg = start.Config.from_env()
    assert (stack.notifies(key) and start.wanted(Source(stack.physical_name("InputBucket"), key, None, "e"), cfg)) is starts


def test_sample_events_are_valid_json_with_the_job_payload_shape():
    events = REPO / "infra" / "events"
    names = {p.name for p in events.glob("*.json")}
    assert names >= {"s3_put_video.json", "s3_put_duplicate.json", "s3_put_not_video.json", "segment.json", "anonymize.json", "reassemble.json",
                     "failure.json", "execution_timed_out.json"}
    for name in ("segment.json", "anonymize.json", "reassemble.json", "failure.json"):
        assert "job_id" in json.loads((events / name).read_text()), name


def test_only_executions_that_no_catch_sees_end_are_sent_to_the_failure_function(stack):
    # GIVEN the end-of-execution event of this stack's state machine in each final status, and of another's
    event = json.loads((REPO / "infra" / "events" / "execution_timed_out.json").read_text())

    def ended(status: str, machine: str | None = None) -> dict:
        changed = json.loads(json.dumps(event))
        changed["detail"]["status"] = status
        if machine:
            changed["detail"]["stateMachineArn"] = machine
        return changed

    # THEN the rule hands TIMED_OUT and ABORTED to the failure function, and nothing else: a FAILED
    # execution already wrote its report through the Catch, a SUCCEEDED one published its result
    assert stack.rule_targets(ended("TIMED_OUT")) == ["FailureFunction"]
    assert stack.rule_targets(ended("ABORTED")) == ["FailureFunction"]
    assert stack.rule_targets(ended("FAILED")) == []
    assert stack.rule_targets(ended("SUCCEEDED")) == []
    other = "arn:aws:states:us-east-1:123456789012:stateMachine:someone-elses"
    assert stack.rule_targets(ended("TIMED_OUT", other)) == []


def test_the_anonymize_step_has_room_for_the_longest_segment_it_is_given_and_its_output(stack):
    # GIVEN the longest segment of 4K the segment step lets through (MaxSegmentSeconds scaled to 4K
    # pixels) at a 4K camera's 100 Mbit/s, held once as the segment and once anonymized
    from handlers.segment import segment_limit

    seconds = segment_limit(float(stack.parameter("MaxSegmentSeconds")), 3840, 2160)
    needed_mb = 2 * seconds * 100 / 8
    # THEN the anonymize function's /tmp holds both (Lambda's default is 512 MB)
    storage = stack.resources["AnonymizeFunction"]["Properties"].get("EphemeralStorage", {"Size": 512})["Size"]
    assert storage >= needed_mb, (storage, needed_mb)


def test_the_job_api_is_edge_optimized_signed_with_iam_and_answers_errors_in_one_shape(stack):
    api = stack.resources["JobApi"]["Properties"]
    assert api["EndpointConfiguration"]["Type"] == "EDGE"
    assert api["Auth"]["DefaultAuthorizer"] == "AWS_IAM" and api["Auth"]["InvokeRole"] == "NONE"
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in stack.resources["ApiFunction"]["Properties"]["Events"].values()}
    assert routes == {("post", "/jobs"), ("get", "/jobs"), ("get", "/jobs/{job_id}"), ("delete", "/jobs/{job_id}")}
    from infra.api import ROUTES

    assert {(m.lower(), r) for m, r in ROUTES} == routes  # `make api` serves the same routes
    gateway = [r["Properties"] for r in stack.resources.values() if r["Type"] == "AWS::ApiGateway::GatewayResponse"]
    assert {g["ResponseType"] for g in gateway} == {"DEFAULT_4XX", "DEFAULT_5XX"}
    for g in gateway:
        rendered = g["ResponseTemplates"]["application/json"].replace("$context.error.messageString", '"m"')
        assert set(json.loads(rendered)["error"]) == {"name", "message"}


def test_the_job_api_takes_the_files_the_workflow_and_the_gallery_read(stack):
    from limelight.recognizer import PHOTO_SUFFIXES

    api, start = stack.function_environment("ApiFunction"), stack.function_environment("StartFunction")
    assert api["VIDEO_SUFFIXES"] == start["VIDEO_SUFFIXES"] and api["PHOTO_SUFFIXES"] == start["PHOTO_SUFFIXES"]
    assert set(api["CONSENT_SUFFIXES"].split(",")) == PHOTO_SUFFIXES


def test_new_function_rights_name_their_actions_and_resources(stack):
    # Least privilege: no action wildcard, no resource "*" in the statements the job API added.
    for logical in ("ApiFunction", "StartFunction", "SegmentFunction", "AnonymizeFunction", "ReassembleFunction", "FailureFunction"):
        for policy in stack.resources[logical]["Properties"]["Policies"]:
            for statement in policy.get("Statement", []):
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                assert all("*" not in action for action in actions), (logical, actions)
                resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                assert "*" not in resources, logical
    table = stack.resources["JobsTable"]["Properties"]
    assert table["BillingMode"] == "PAY_PER_REQUEST" and table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert "PointInTimeRecoverySpecification" not in table  # a backup would keep what erasure deleted


def test_api_results_and_uploads_expire_with_their_records(stack):
    retention = {"Ref": "JobRetentionDays"}
    output_rules = stack.resources["OutputBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert [r["TagFilters"] for r in output_rules if r["ExpirationInDays"] == retention] == [[{"Key": "limelight-retention", "Value": "api-job"}]]
    from handlers.reassemble import RETENTION_TAG

    assert RETENTION_TAG == "limelight-retention=api-job"
    input_rules = {r["Id"]: r for r in stack.resources["InputBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert input_rules["ExpireApiConsentPhotos"]["Prefix"] == "consent/"
    assert all(input_rules[i]["ExpirationInDays"] == retention for i in ("ExpireApiUploads", "ExpireApiConsentPhotos"))
