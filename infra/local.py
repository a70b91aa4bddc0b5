"""Run the serverless workflow on this machine: `python -m infra.local VIDEO [--known DIR] --out PATH`.

What runs is what would be deployed, minus AWS:

- moto's server on 127.0.0.1 (a free port) emulates S3, Lambda and Step Functions, with
  state-machine execution on: moto's interpreter executes the real ASL file, filled with the
  template's DefinitionSubstitutions;
- the buckets, functions and state machine are created from template.yaml (names, parameter
  defaults, function environments, handlers from ImageConfig.Command);
- Lambda tasks are dispatched in this process to the real handlers (`infra.moto_lambda`);
- S3 notifications are not emulated by moto, so the start handler is fed the event S3 would
  send for the upload, built from `infra/events/s3_put_video.json` (`LocalCloud.notifying()`
  sends it on every upload instead, as the deployed bucket does: the job API needs that);
- the jobs table is created from the template; EventBridge is moto's (events put on the default
  bus stay there; `LocalCloud.job_events` reads them back through an archive-like SQS rule).

The result is downloaded to OUT and its report beside it (OUT's name + `.report.json`).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import io
import json
import logging
import os
import sys
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote_plus

import boto3
from botocore.config import Config as BotoConfig
from moto.s3 import notifications as moto_notifications
from moto.server import ThreadedMotoServer
from unittest import mock

from infra.moto_lambda import LocalContext, LocalLambdas
from infra.template import REPO, LocalStack, load

# The handlers package lives beside the engine in functions/ (the Lambda image's task root).
if str(REPO / "functions") not in sys.path:
    sys.path.insert(0, str(REPO / "functions"))

from handlers import common  # noqa: E402

EVENTS = REPO / "infra" / "events"
HANDLER_MODULES = ("handlers.start", "handlers.segment", "handlers.anonymize", "handlers.join", "handlers.reassemble", "handlers.failure", "handlers.api")
_ROLE_POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


# What another workflow would subscribe to: every job's end (template.yaml's README rule).
JOB_EVENT_PATTERN = {"source": ["limelight"], "detail-type": ["Job Succeeded", "Job Failed"]}


class LocalRunError(Exception):
    """The local workflow run failed; the message says where (execution status, failure report)."""


def status_change_event(execution: dict[str, Any], stack: LocalStack) -> dict[str, Any]:
    """The EventBridge event Step Functions sends when an execution ends (DescribeExecution's
    answer in the event's shape)."""
    def millis(value: Any) -> int | None:
        return int(value.timestamp() * 1000) if value is not None else None

    return {
        "version": "0",
        "id": f"local-{execution['name']}-{execution['status'].lower()}",
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": stack.account,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": stack.region,
        "resources": [execution["executionArn"]],
        "detail": {
            "executionArn": execution["executionArn"],
            "stateMachineArn": execution["stateMachineArn"],
            "name": execution["name"],
            "status": execution["status"],
            "startDate": millis(execution.get("startDate")),
            "stopDate": millis(execution.get("stopDate")),
            "input": execution.get("input"),
            "inputDetails": {"included": True},
            "output": execution.get("output"),
            "outputDetails": {"included": True} if execution.get("output") is not None else None,
            "error": execution.get("error"),
            "cause": execution.get("cause"),
        },
    }


def read_event(name: str) -> dict[str, Any]:
    """A sample event from infra/events/ (the files `sam local invoke -e` uses too)."""
    return json.loads((EVENTS / name).read_text())


def s3_put_event(bucket: str, key: str, etag: str, version_id: str | None, size: int) -> dict[str, Any]:
    """The event S3 sends for one upload, shaped like infra/events/s3_put_video.json."""
    event = copy.deepcopy(read_event("s3_put_video.json"))
    record = event["Records"][0]
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    obj = record["s3"]["object"]
    obj.update({"key": quote_plus(key, safe="/"), "eTag": etag.strip('"'), "size": size})
    if version_id and version_id != "null":
        obj["versionId"] = version_id
    else:
        obj.pop("versionId", None)
    return event


@dataclass(frozen=True)
class JobResult:
    """How one local job ended: execution status, the job's keys, and the objects it published."""

    job_id: str
    status: str
    execution_arn: str
    output: dict[str, Any] | None
    seconds: float


class LocalCloud:
    """moto server + the stack of template.yaml + the handlers served in-process."""

    def __init__(self, stack: LocalStack, endpoint: str, lambdas: LocalLambdas) -> None:
        self.stack, self.endpoint, self.lambdas = stack, endpoint, lambdas
        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=stack.region)
        self.s3 = session.client("s3", endpoint_url=endpoint, config=BotoConfig(signature_version="s3v4"))
        self.sfn = session.client("stepfunctions", endpoint_url=endpoint)
        self.lambda_ = session.client("lambda", endpoint_url=endpoint)
        self.iam = session.client("iam", endpoint_url=endpoint)
        self.dynamodb = session.client("dynamodb", endpoint_url=endpoint)
        self.events = session.client("events", endpoint_url=endpoint)
        self.sqs = session.client("sqs", endpoint_url=endpoint)
        self.state_machine_arn = ""
        self._delivered: set[str] = set()
        self._deliver_lock = threading.Lock()
        self.notified: list[dict[str, Any]] = []  # what the start function answered each S3 notification
        self._events_queue = ""

    # -- names ----------------------------------------------------------------------------------
    def bucket(self, logical: str) -> str:
        return self.stack.physical_name(logical)

    @property
    def input_bucket(self) -> str:
        return self.bucket("InputBucket")

    @property
    def output_bucket(self) -> str:
        return self.bucket("OutputBucket")

    @property
    def work_bucket(self) -> str:
        return self.bucket("WorkBucket")

    # -- set-up ---------------------------------------------------------------------------------
    @classmethod
    @contextmanager
    def running(cls, parameters: dict[str, str] | None = None) -> Iterator[LocalCloud]:
        """Start moto, deploy the stack into it, and serve the handlers; undo it all on exit."""
        stack = LocalStack(load(), overrides=dict(parameters or {}))
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per S3 call
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        saved = dict(os.environ)
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            # moto's Step Functions interpreter calls Lambda and S3 on localhost:$MOTO_PORT.
            os.environ["MOTO_PORT"] = str(port)
            # moto keeps its state per process: start from empty backends, as a fresh account.
            _moto_api(endpoint, "reset", {})
            _moto_api(endpoint, "config", {"lambda": {"use_docker": False}, "stepfunctions": {"execute_state_machine": True}})
            cloud = cls(stack, endpoint, LocalLambdas())
            cloud._deploy()
            with cloud.lambdas.installed():
                yield cloud
        finally:
            common.use_clients()
            os.environ.clear()
            os.environ.update(saved)
            server.stop()

    def _deploy(self) -> None:
        for logical in self.stack.of_type("AWS::S3::Bucket"):
            name = self.bucket(logical)
            self.s3.create_bucket(Bucket=name)
            versioning = self.stack.resources[logical]["Properties"].get("VersioningConfiguration")
            if versioning:
                self.s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning["Status"]})
        for logical in self.stack.of_type("AWS::DynamoDB::Table"):
            self._create_table(logical)
        self._capture_job_events()
        role = self.iam.create_role(RoleName=f"{self.stack.stack_name}-role", AssumeRolePolicyDocument=_ROLE_POLICY)["Role"]["Arn"]
        functions = {logical: self.stack.function_environment(logical) for logical in self.stack.of_type("AWS::Serverless::Function")}
        # All handlers share this process, so their environments are merged (they must agree), and
        # set before a handler module is imported: Powertools reads its settings at import.
        environment: dict[str, str] = {}
        for env in functions.values():
            for key, value in env.items():
                if environment.get(key, value) != value:
                    raise LocalRunError(f"{key} differs between functions; the in-process run shares one environment")
            environment.update(env)
        os.environ.update(environment)
        os.environ.setdefault("AWS_DEFAULT_REGION", self.stack.region)
        for logical, env in functions.items():
            self._create_function(logical, role, env)
        for module in HANDLER_MODULES:
            # Configuration is read once per container; a new local stack is a new container.
            getattr(importlib.import_module(module), "config").cache_clear()
        common.use_clients(s3=self.s3, stepfunctions=self.sfn, dynamodb=self.dynamodb, events=self.events)
        self.state_machine_arn = self.sfn.create_state_machine(
            name=self.stack.state_machine_name(),
            definition=self.stack.definition(),
            roleArn=role,
            type="STANDARD",
        )["stateMachineArn"]

    def _create_table(self, logical: str) -> None:
        props = self.stack.resolve(self.stack.resources[logical]["Properties"])
        args = {k: props[k] for k in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode") if k in props}
        self.dynamodb.create_table(TableName=self.bucket(logical), **args)

    def _capture_job_events(self) -> None:
        """A rule on the default bus sending LimeLight's job events to a queue, so that a local run
        can show what another workflow subscribed to them would receive."""
        queue = self.sqs.create_queue(QueueName=f"{self.stack.stack_name}-job-events")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.events.put_rule(Name=f"{self.stack.stack_name}-job-events", EventPattern=json.dumps(JOB_EVENT_PATTERN))
        self.events.put_targets(Rule=f"{self.stack.stack_name}-job-events", Targets=[{"Id": "queue", "Arn": arn}])
        self._events_queue = queue

    def job_events(self) -> list[dict[str, Any]]:
        """The job events put on the default bus since the last call (EventBridge's envelope)."""
        seen = []
        while True:
            messages = self.sqs.receive_message(QueueUrl=self._events_queue, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return seen
            for message in messages:
                seen.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self._events_queue, ReceiptHandle=message["ReceiptHandle"])

    @contextmanager
    def notifying(self) -> Iterator[LocalCloud]:
        """While in the block, every object created in the input bucket that the template's S3 event
        filters match calls the start function, in a thread of its own (S3 calls it asynchronously),
        with the event S3 would send: what the deployed bucket does, and what the job API's uploads
        (presigned POSTs to moto) need."""
        original = moto_notifications.send_event

        def send_event(account_id: str, event_name: Any, bucket: Any, key: Any) -> None:
            original(account_id, event_name, bucket, key)
            name = str(getattr(event_name, "value", event_name))
            if bucket.name == self.input_bucket and name.startswith("s3:ObjectCreated") and self.stack.notifies(key.name):
                event = s3_put_event(bucket.name, key.name, key.etag, key.version_id, key.size)
                threading.Thread(target=self._notify, args=(event,), daemon=True).start()

        with mock.patch.object(moto_notifications, "send_event", send_event):
            yield self

    def _notify(self, event: dict[str, Any]) -> None:
        try:
            answer = self.start(event)
        except Exception as error:  # noqa: BLE001 - an async invocation's error is only logged, as in Lambda
            answer = {"error": type(error).__name__, "message": str(error)}
            print(f"infra.local: the start function failed on an upload: {answer['error']}: {answer['message']}", file=sys.stderr)
        self.notified.append(answer)

    @contextmanager
    def watching(self, interval: float = 0.5) -> Iterator[LocalCloud]:
        """While in the block, every execution that ends is announced to the functions whose
        EventBridge rules match (a stopped or timed-out job gets its failure handling), as the
        deployed stack's rule does; `wait` does the same for one job."""
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(interval):
                try:
                    for execution in self.executions():
                        if execution["status"] != "RUNNING" and execution["executionArn"] not in self._delivered:
                            self._deliver(status_change_event(self.sfn.describe_execution(executionArn=execution["executionArn"]), self.stack))
                except Exception as error:  # noqa: BLE001 - keep watching; say what went wrong
                    print(f"infra.local: watching executions: {type(error).__name__}: {error}", file=sys.stderr)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    def _create_function(self, logical: str, role: str, env: dict[str, str]) -> None:
        name = self.stack.physical_name(logical)
        path = self.stack.function_handler(logical)
        module, function = path.rsplit(".", 1)
        handler = getattr(importlib.import_module(module), function)
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr("README.txt", "served in-process by infra.moto_lambda")
        self.lambda_.create_function(
            FunctionName=name,
            Runtime="python3.12",
            Role=role,
            Handler=path,
            Code={"ZipFile": archive.getvalue()},
            Environment={"Variables": env},
            Timeout=900,
        )
        self.lambdas.register(name, self.stack.function_arn(logical), handler)

    # -- a job ----------------------------------------------------------------------------------
    def upload_known_faces(self, folder: Path) -> int:
        """Upload a consent folder (photos and person sub-folders) under the known-faces prefix."""
        prefix = self.stack.parameter("KnownFacesPrefix")
        count = 0
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
                self.s3.upload_file(str(path), self.input_bucket, prefix + path.relative_to(folder).as_posix())
                count += 1
        return count

    def upload_video(self, video: Path, key: str | None = None, body: bytes | None = None) -> dict[str, Any]:
        """Upload like a user would; returns the S3 event S3 would send for it. Raises LocalRunError
        when the template's notification filters would send none (S3 matches suffixes by case)."""
        key = key or self.stack.parameter("InputPrefix") + video.name
        if not self.stack.notifies(key):
            raise LocalRunError(f"{key}: S3 would not notify the start function of this upload (see its S3 event filters)")
        data = body if body is not None else video.read_bytes()
        put = self.s3.put_object(Bucket=self.input_bucket, Key=key, Body=data)
        return s3_put_event(self.input_bucket, key, put["ETag"], put.get("VersionId"), len(data))

    def start(self, event: dict[str, Any]) -> dict[str, Any]:
        """Deliver an S3 event to the start function, as the S3 notification would."""
        return self._invoke("StartFunction", event)

    def _invoke(self, logical: str, event: dict[str, Any]) -> Any:
        """Call a function's handler in-process with `event`, as a service's notification does
        (not through moto's Lambda: no fault injection, no invocation record)."""
        module, function = self.stack.function_handler(logical).rsplit(".", 1)
        handler = getattr(importlib.import_module(module), function)
        context = LocalContext(function_name=self.stack.physical_name(logical), invoked_function_arn=self.stack.function_arn(logical))
        return handler(event, context)

    def wait(self, job_id: str, timeout: float = 1800.0) -> JobResult:
        arn = self.execution_arn(job_id)
        started = time.perf_counter()
        while True:
            execution = self.sfn.describe_execution(executionArn=arn)
            if execution["status"] != "RUNNING":
                break
            if time.perf_counter() - started > timeout:
                raise LocalRunError(f"job {job_id} still running after {timeout:.0f} s")
            time.sleep(0.2)
        self._deliver(status_change_event(execution, self.stack))
        output = json.loads(execution["output"]) if execution.get("output") else None
        return JobResult(job_id, execution["status"], arn, output, time.perf_counter() - started)

    def _deliver(self, event: dict[str, Any]) -> None:
        """Hand an EventBridge event to the functions whose rules match it, as EventBridge would
        (moto routes no service events); once per execution."""
        arn = event.get("detail", {}).get("executionArn")
        with self._deliver_lock:
            if arn in self._delivered:
                return
            self._delivered.add(arn)
        for logical in self.stack.rule_targets(event):
            self._invoke(logical, event)

    def execution_arn(self, job_id: str) -> str:
        return self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{job_id}"

    def executions(self) -> list[dict[str, Any]]:
        return self.sfn.list_executions(stateMachineArn=self.state_machine_arn)["executions"]

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def failure_report(self, job_id: str) -> dict[str, Any] | None:
        key = common.failure_key(job_id)
        if key not in self.keys(self.output_bucket, key):
            return None
        return json.loads(self.s3.get_object(Bucket=self.output_bucket, Key=key)["Body"].read())

    def download_result(self, result: JobResult, out: Path) -> tuple[Path, Path]:
        """Save the published video to `out` and its report beside it; returns both paths. The video
        keeps the container it was published in: `out` with another suffix (a phone's 3GP with AMR
        speech comes back as .mov) is saved under that suffix instead."""
        if result.status != "SUCCEEDED" or result.output is None:
            failure = self.failure_report(result.job_id)
            detail = f"{failure['error']}: {failure['message']}" if failure else "no failure report"
            raise LocalRunError(f"job {result.job_id} ended {result.status} ({detail})")
        published = result.output["output"]
        out = out.with_suffix(PurePosixPath(published["video_key"]).suffix)
        report = out.with_name(f"{out.stem}.report.json")
        self.s3.download_file(published["bucket"], published["video_key"], str(out))
        self.s3.download_file(published["bucket"], published["report_key"], str(report))
        return out, report


def _moto_api(endpoint: str, action: str, body: dict[str, Any]) -> None:
    """POST to moto's own API (`reset`, `config`)."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/{action}", data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


def run(video: Path, out: Path, known: Path | None = None, parameters: dict[str, str] | None = None) -> tuple[JobResult, Path, Path]:
    """The whole local workflow for one video: how the job ended (raises if it failed), and where
    its video and report were saved (`LocalCloud.download_result`)."""
    with LocalCloud.running(parameters) as cloud:
        if known is not None:
            cloud.upload_known_faces(known)
        event = cloud.upload_video(video)
        started = cloud.start(event)
        if not started["started"]:
            raise LocalRunError(f"the start function started no job for {video.name}: {started}")
        result = cloud.wait(started["started"][0])
        saved, report = cloud.download_result(result, out)
        return result, saved, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local", description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path, help="video to anonymize")
    parser.add_argument("--known", type=Path, help="folder of photos of people who consented")
    parser.add_argument("--out", type=Path, required=True, help="where to save the anonymized video")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="template parameter override, e.g. SegmentSeconds=3")
    args = parser.parse_args(argv)
    if not args.video.is_file():
        parser.error(f"{args.video}: no such file")
    if args.known is not None and not args.known.is_dir():
        parser.error(f"{args.known}: no such folder")
    if not args.out.parent.is_dir():
        parser.error(f"{args.out.parent}: no such folder")
    parameters = dict(p.split("=", 1) for p in args.param)
    started = time.perf_counter()
    try:
        result, saved, report_path = run(args.video, args.out, args.known, parameters)
    except LocalRunError as error:
        print(f"infra.local: error: {error}", file=sys.stderr)
        return 1
    report = json.loads(report_path.read_text())["files"][0]
    if saved != args.out:
        print(f"note: published as {saved.suffix} (the container that carries its sound bit-exact), saved as {saved}")
    what = "photo" if report["kind"] == "image" else f"{report['frames']} frames, {report['segments']} segments"
    print(
        f"{saved}  ({what}, {report['faces']} faces: "
        f"{report['kept']} kept, {report['blurred']} blurred) in {time.perf_counter() - started:.1f} s; job {result.job_id}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
