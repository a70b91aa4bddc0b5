"""Failure: the Catch target. Writes `failed/<job_id>.json` to the output bucket and makes sure
nothing else of the job is published (a result left by a reassembly that failed half-way is
deleted). Intermediates are left to the work bucket's lifecycle rule.

It is also the target of an EventBridge rule on the state machine's executions that end
TIMED_OUT (past WorkflowTimeoutSeconds) or ABORTED (StopExecution): no Catch sees those, so
without the rule such a job would end with no report at all. Its event names the execution (the
job id) and carries the execution's input (the job's source).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers import jobs
from handlers.common import client, env, failure_key, named_errors, published_keys

logger = Logger()
tracer = Tracer()
metrics = Metrics()


@dataclass(frozen=True)
class Config:
    output_bucket: str
    output_prefix: str
    jobs_table: str

    @classmethod
    def from_env(cls) -> Config:
        return cls(env("OUTPUT_BUCKET"), env("OUTPUT_PREFIX"), env("JOBS_TABLE"))


@cache
def config() -> Config:
    return Config.from_env()


def describe(error: dict[str, Any]) -> tuple[str, str]:
    """(error type, message) from the Catch's `$.error` ({"Error", "Cause"}).

    A Lambda function error's Cause is the runtime's JSON (errorType, errorMessage, stackTrace);
    only type and message go into the report.
    """
    name = str(error.get("Error", "Unknown"))
    cause = error.get("Cause") or ""
    try:
        detail = json.loads(cause)
    except (TypeError, ValueError):
        return name, str(cause)
    if isinstance(detail, dict) and "errorMessage" in detail:
        return str(detail.get("errorType", name)), str(detail["errorMessage"])
    return name, str(cause)


STATUS_CHANGE = "Step Functions Execution Status Change"  # EventBridge detail-type
# What an execution stopped from outside reports, where its event names no error of its own.
_STOPPED = {
    "TIMED_OUT": ("States.Timeout", "the job ran longer than the workflow's time limit (WorkflowTimeoutSeconds) and was stopped"),
    "ABORTED": ("States.Aborted", "the job was stopped (StopExecution) before it finished"),
}


def from_status_change(event: dict[str, Any]) -> dict[str, Any]:
    """The Catch's payload ({"job_id", "source", "error": {"Error", "Cause"}}) for an EventBridge
    event of an execution that ended TIMED_OUT or ABORTED. The execution is named by its job id; its
    input holds the source (left out by EventBridge above 256 KiB: the report then has no source, and
    a half-published result is not looked for)."""
    detail = event["detail"]
    try:
        source = json.loads(detail.get("input") or "{}").get("source") or {}
    except (TypeError, ValueError, AttributeError):
        source = {}
    error, cause = _STOPPED.get(detail.get("status"), ("States.Runtime", f"the execution ended {detail.get('status')}"))
    if detail.get("cause"):
        cause = f"{cause}: {detail['cause']}"
    return {"job_id": detail["name"], "source": source, "error": {"Error": detail.get("error") or error, "Cause": cause}}


def _is_api_job(job_id: str, source: dict[str, Any]) -> bool:
    """An API job's upload key names its job id (a stopped execution's event carries the input,
    whose `api` flag a Catch payload may lack)."""
    key = source.get("key") or ""
    return f"/{jobs.API_DIR}{job_id}/" in f"/{key}"


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@named_errors("writing the failure report")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    cfg = config()
    if event.get("detail-type") == STATUS_CHANGE:
        event = from_status_change(event)
    job_id = event["job_id"]
    logger.append_keys(job_id=job_id)
    error_type, message = describe(event.get("error") or {})
    source = event.get("source") or {}
    s3 = client("s3")
    if source.get("key"):
        for key in published_keys(cfg.output_prefix, job_id, source["key"]):
            s3.delete_object(Bucket=cfg.output_bucket, Key=key)
    api = bool(event.get("api")) or _is_api_job(job_id, source)
    if api:
        store = jobs.JobStore(cfg.jobs_table)
        if not store.update(job_id, [jobs.AWAITING_UPLOAD, jobs.RUNNING], set_={"status": jobs.FAILED, "error": {"name": error_type, "message": message}}):
            record = store.get(job_id)
            if record is None or record["status"] == jobs.DELETED:
                # Erased through the API (the stop that brought us here): no report, no event.
                logger.info("deleted job, no failure report")
                return {"job_id": job_id, "failure_key": None, "error": error_type, "deleted": True}
    document = {"job_id": job_id, "source": source, "error": error_type, "message": message}
    key = failure_key(job_id)
    s3.put_object(
        Bucket=cfg.output_bucket,
        Key=key,
        Body=json.dumps(document, indent=2).encode(),
        ContentType="application/json",
    )
    if api and jobs.JobStore(cfg.jobs_table).is_deleted(job_id):
        s3.delete_object(Bucket=cfg.output_bucket, Key=key)  # deleted while the report was written: erasure wins
        return {"job_id": job_id, "failure_key": None, "error": error_type, "deleted": True}
    jobs.emit(jobs.JOB_FAILED, {"job_id": job_id, "status": jobs.FAILED, "source": {k: source.get(k) for k in ("bucket", "key")},
                                "error": {"name": error_type, "message": message}})
    metrics.add_metric(name="JobsFailed", unit=MetricUnit.Count, value=1)
    logger.warning("job failed", extra={"error": error_type, "failure_key": key})
    return {"job_id": job_id, "failure_key": key, "error": error_type}
