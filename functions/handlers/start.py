"""S3 ObjectCreated -> one Step Functions execution per uploaded video, named by its job_id.

The execution name is the job_id (a hash of bucket, key and version/ETag), so a duplicated S3
event finds that execution and starts nothing. Keys outside the input prefix, under the
known-faces prefix, without a video suffix, or in the workflow's own buckets are ignored.
"""

from __future__ import annotations

import json
from urllib.parse import unquote_plus
from dataclasses import dataclass
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers.common import Source, client, env, execution_arn, named_errors

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@dataclass(frozen=True)
class Config:
    state_machine_arn: str
    input_prefix: str
    known_faces_prefix: str
    video_suffixes: frozenset[str]  # videos and photos the workflow takes, matched in any case
    own_buckets: frozenset[str]

    @classmethod
    def from_env(cls) -> Config:
        listed = f"{env('VIDEO_SUFFIXES')},{env('PHOTO_SUFFIXES')}"
        suffixes = frozenset(s.strip().lower() for s in listed.split(",") if s.strip())
        return cls(
            state_machine_arn=env("STATE_MACHINE_ARN"),
            input_prefix=env("INPUT_PREFIX"),
            known_faces_prefix=env("KNOWN_FACES_PREFIX"),
            video_suffixes=suffixes,
            own_buckets=frozenset({env("WORK_BUCKET"), env("OUTPUT_BUCKET")}),
        )


@cache
def config() -> Config:
    return Config.from_env()


def wanted(source: Source, cfg: Config) -> bool:
    """Whether this object is a video upload the workflow should process."""
    key = source.key
    return (
        source.bucket not in cfg.own_buckets
        and key.startswith(cfg.input_prefix)
        and not key.startswith(cfg.known_faces_prefix)
        and not key.endswith("/")
        and any(key.lower().endswith(suffix) for suffix in cfg.video_suffixes)
    )


def start_job(source: Source, cfg: Config) -> bool:
    """Start the workflow for `source`; False when an execution of that job already exists.

    StartExecution alone cannot tell: for the same name and input it returns the running
    execution as if it had started it (idempotency), so the execution is looked up first. Two
    copies of one event handled at the same instant may both report "started"; there is still
    only one execution.
    """
    sfn = client("stepfunctions")
    job_id = source.job_id
    try:
        sfn.describe_execution(executionArn=execution_arn(cfg.state_machine_arn, job_id))
        return False
    except sfn.exceptions.ExecutionDoesNotExist:
        pass
    payload = {"job_id": job_id, "source": source.as_dict()}
    try:
        sfn.start_execution(stateMachineArn=cfg.state_machine_arn, name=job_id, input=json.dumps(payload, sort_keys=True))
    except sfn.exceptions.ExecutionAlreadyExists:
        return False
    return True


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@named_errors("the start")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    cfg = config()
    started, duplicates, ignored = [], [], 0
    for record in S3Event(event).records:
        obj = record.s3.get_object
        # S3 URL-encodes keys in events ("my+clip%281%29.mp4" is "my clip(1).mp4").
        source = Source(record.s3.bucket.name, unquote_plus(obj.key), obj.version_id, obj.etag or None)
        if not wanted(source, cfg):
            ignored += 1
            logger.info("object ignored", extra={"bucket": source.bucket, "key": source.key})
            continue
        if start_job(source, cfg):
            started.append(source.job_id)
            logger.info("job started", extra={"job_id": source.job_id, "key": source.key})
        else:
            duplicates.append(source.job_id)
            logger.info("duplicate event, job already exists", extra={"job_id": source.job_id, "key": source.key})
    metrics.add_metric(name="JobsStarted", unit=MetricUnit.Count, value=len(started))
    metrics.add_metric(name="DuplicateEvents", unit=MetricUnit.Count, value=len(duplicates))
    metrics.add_metric(name="IgnoredObjects", unit=MetricUnit.Count, value=ignored)
    return {"started": started, "duplicates": duplicates, "ignored": ignored}
