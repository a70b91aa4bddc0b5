"""S3 ObjectCreated -> one Step Functions execution per uploaded video, named by its job_id.

The execution name is the job_id (a hash of bucket, key and version/ETag), so a duplicated S3
event finds that execution and starts nothing. Keys outside the input prefix, under the
known-faces or consent prefixes, without a video suffix, or in the workflow's own buckets are
ignored.

A job API upload (`<InputPrefix>api/<job_id>/<filename>`) is the job the API created: it starts
once, when its record still awaits the upload, with the job's own consent photos and options;
an upload for a deleted job is deleted on arrival.
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

from handlers import jobs
from handlers.common import Source, client, env, env_number, execution_arn, named_errors

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
    jobs_table: str
    max_video_bytes: int

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
            jobs_table=env("JOBS_TABLE"),
            max_video_bytes=env_number("MAX_VIDEO_BYTES", int),
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
        and not key.startswith(jobs.CONSENT_PREFIX)
        and not key.endswith("/")
        and any(key.lower().endswith(suffix) for suffix in cfg.video_suffixes)
    )


def start_job(source: Source, cfg: Config, extra: dict[str, Any] | None = None, job_id: str | None = None) -> bool:
    """Start the workflow for `source`; False when an execution of that job already exists.

    StartExecution alone cannot tell: for the same name and input it returns the running
    execution as if it had started it (idempotency), so the execution is looked up first. Two
    copies of one event handled at the same instant may both report "started"; there is still
    only one execution.
    """
    sfn = client("stepfunctions")
    job_id = job_id or source.job_id
    try:
        sfn.describe_execution(executionArn=execution_arn(cfg.state_machine_arn, job_id))
        return False
    except sfn.exceptions.ExecutionDoesNotExist:
        pass
    payload = {"job_id": job_id, "source": source.as_dict(), **(extra or {})}
    try:
        sfn.start_execution(stateMachineArn=cfg.state_machine_arn, name=job_id, input=json.dumps(payload, sort_keys=True))
    except sfn.exceptions.ExecutionAlreadyExists:
        return False
    return True


def fail_api_job(cfg: Config, job_id: str, source: Source, name: str, message: str) -> None:
    """End an API job before it ran (its record says why; the job's event is sent)."""
    if jobs.JobStore(cfg.jobs_table).update(job_id, [jobs.AWAITING_UPLOAD], set_={"status": jobs.FAILED, "error": {"name": name, "message": message}}):
        jobs.emit(jobs.JOB_FAILED, {"job_id": job_id, "status": jobs.FAILED, "source": {"bucket": source.bucket, "key": source.key},
                                    "error": {"name": name, "message": message}})


def start_api_job(source: Source, job_id: str, size: int | None, cfg: Config) -> str:
    """Start the API job `job_id` this upload belongs to: "started", "duplicate" or "ignored"."""
    store = jobs.JobStore(cfg.jobs_table)
    record = store.get(job_id)
    if record is None or record["status"] == jobs.DELETED:
        # Erased (or never created): what arrives for it is deleted, not kept.
        client("s3").delete_object(Bucket=source.bucket, Key=source.key, **({"VersionId": source.version_id} if source.version_id else {}))
        return "ignored"
    if record["status"] != jobs.AWAITING_UPLOAD or record["video_key"] != source.key:
        return "duplicate"
    if size is not None and size > cfg.max_video_bytes:  # S3 enforces the form's limit; this is the backstop
        fail_api_job(cfg, job_id, source, "VideoTooLargeError", f"{record['filename']} is {size} bytes; a job takes at most {cfg.max_video_bytes}")
        return "ignored"
    prefix = jobs.consent_prefix(job_id)
    listed = client("s3").list_objects_v2(Bucket=source.bucket, Prefix=prefix).get("Contents", [])
    missing = sorted(set(record.get("consent") or []) - {item["Key"][len(prefix):] for item in listed})
    if missing:
        # Privacy-first would blur the person whose photo is missing: say so instead of running.
        fail_api_job(cfg, job_id, source, "MissingConsentPhotosError",
                     f"the video arrived before the consent photo(s) {', '.join(missing)}: upload the consent photos first")
        return "ignored"
    # The job's own consent photos only (none: everybody is blurred), never the bucket's shared ones.
    extra = {"api": True, "options": record.get("options") or {}, "consent": {"bucket": source.bucket, "prefix": prefix if record.get("consent") else None}}
    if not start_job(source, cfg, extra, job_id):
        return "duplicate"
    # After the start (a failed start leaves the job awaiting a retried event); the workflow's own
    # updates expect AWAITING_UPLOAD or RUNNING, so a step that is quicker than this one counts.
    store.update(job_id, [jobs.AWAITING_UPLOAD], set_={"status": jobs.RUNNING, "started_at": jobs.now()})
    return "started"


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
        api_job = jobs.api_job_of(source.key, cfg.input_prefix)
        job_id = api_job or source.job_id
        if api_job:
            outcome = start_api_job(source, api_job, obj.size, cfg)
            if outcome == "ignored":
                ignored += 1
                logger.info("API upload not started", extra={"job_id": job_id, "key": source.key})
                continue
            started_now = outcome == "started"
        else:
            started_now = start_job(source, cfg)
        if started_now:
            started.append(job_id)
            logger.info("job started", extra={"job_id": job_id, "key": source.key})
        else:
            duplicates.append(job_id)
            logger.info("duplicate event, job already exists", extra={"job_id": job_id, "key": source.key})
    metrics.add_metric(name="JobsStarted", unit=MetricUnit.Count, value=len(started))
    metrics.add_metric(name="DuplicateEvents", unit=MetricUnit.Count, value=len(duplicates))
    metrics.add_metric(name="IgnoredObjects", unit=MetricUnit.Count, value=ignored)
    return {"started": started, "duplicates": duplicates, "ignored": ignored}
