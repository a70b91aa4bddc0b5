"""The job API (API Gateway REST, IAM auth): submit, follow, list and erase anonymization jobs.

    POST   /jobs            {"filename", "consent": [photo names], "options": {...}} -> 201 + upload forms
    GET    /jobs            the caller's jobs, newest first (?limit=, ?next=)
    GET    /jobs/{job_id}   status, progress, result links, error
    DELETE /jobs/{job_id}   stop the job, erase every object of it -> 204

A thin layer over the workflow: the video's upload (a presigned POST under
`<InputPrefix>api/<job_id>/`) starts it through the bucket's S3 trigger, with the job's own
consent photos (`consent/<job_id>/`) and options. The caller is the IAM principal API Gateway
authenticated; another caller's job answers 404, as an unknown one does. Errors answer
`{"error": {"name", "message"}}`. Nothing here logs a URL, a photo or a frame.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
from dataclasses import dataclass
from functools import cache
from pathlib import PurePosixPath
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from handlers import jobs
from handlers.common import client, env, env_number, execution_arn

logger = Logger()
tracer = Tracer()
metrics = Metrics()
app = APIGatewayRestResolver()

OPTION_CHOICES = {"mode": ("blur", "pixelate", "solid"), "shape": ("ellipse", "rectangle")}
SCALE_RANGE = (1.0, 3.0)
MAX_FILENAME = 200
MAX_PAGE = 100


@dataclass(frozen=True)
class Config:
    table: str
    input_bucket: str
    input_prefix: str
    work_bucket: str
    output_bucket: str
    output_prefix: str
    state_machine_arn: str
    video_suffixes: frozenset[str]
    consent_suffixes: frozenset[str]
    max_video_bytes: int
    max_consent_photos: int
    max_consent_photo_bytes: int
    upload_seconds: int
    result_seconds: int
    retention_days: int

    @classmethod
    def from_env(cls) -> Config:
        def suffixes(*names: str) -> frozenset[str]:
            return frozenset(s.strip().lower() for name in names for s in env(name).split(",") if s.strip())

        return cls(
            table=env("JOBS_TABLE"),
            input_bucket=env("INPUT_BUCKET"),
            input_prefix=env("INPUT_PREFIX"),
            work_bucket=env("WORK_BUCKET"),
            output_bucket=env("OUTPUT_BUCKET"),
            output_prefix=env("OUTPUT_PREFIX"),
            state_machine_arn=env("STATE_MACHINE_ARN"),
            video_suffixes=suffixes("VIDEO_SUFFIXES", "PHOTO_SUFFIXES"),
            consent_suffixes=suffixes("CONSENT_SUFFIXES"),
            max_video_bytes=env_number("MAX_VIDEO_BYTES", int),
            max_consent_photos=env_number("MAX_CONSENT_PHOTOS", int),
            max_consent_photo_bytes=env_number("MAX_CONSENT_PHOTO_BYTES", int),
            upload_seconds=env_number("UPLOAD_URL_SECONDS", int),
            result_seconds=env_number("RESULT_URL_SECONDS", int),
            retention_days=env_number("JOB_RETENTION_DAYS", int),
        )


@cache
def config() -> Config:
    return Config.from_env()


def store() -> jobs.JobStore:
    return jobs.JobStore(config().table)


class ApiError(Exception):
    """An answer other than success: HTTP status, error name, one-line message."""

    def __init__(self, status: int, name: str, message: str) -> None:
        super().__init__(message)
        self.status, self.name, self.message = status, name, message


def _answer(status: int, body: Any | None) -> Response:
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON,
                    body=None if body is None else json.dumps(body, sort_keys=True))


@app.exception_handler(ApiError)
def _api_error(error: ApiError) -> Response:
    metrics.add_metric(name=f"Http{error.status}", unit=MetricUnit.Count, value=1)
    return _answer(error.status, {"error": {"name": error.name, "message": error.message}})


@app.exception_handler(Exception)
def _unexpected(error: Exception) -> Response:
    logger.exception("unexpected error")
    return _answer(500, {"error": {"name": "InternalError", "message": f"the job API failed unexpectedly ({type(error).__name__})"}})


def caller() -> str:
    """The IAM principal API Gateway authenticated (its user or role ARN)."""
    identity = app.current_event.request_context.identity
    principal = identity.user_arn or identity.caller
    if not principal:
        raise ApiError(403, "AccessDenied", "the request is not signed (IAM SigV4): sign it with your AWS credentials")
    return principal


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "JobNotFound", f"no job {job_id} (it never existed, was deleted, or is not yours)")


def own_job(job_id: str) -> dict[str, Any]:
    """The caller's job `job_id`; 404 for an unknown, deleted or someone else's job alike."""
    record = store().get(job_id) if jobs.is_job_id(job_id) else None
    if record is None or record["status"] == jobs.DELETED or record["owner"] != caller():
        raise not_found(job_id)
    return record


# -- validation of POST /jobs --------------------------------------------------------------------
def _file_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "InvalidFilename", f"{what} must be a non-empty file name")
    if len(value) > MAX_FILENAME or any(c in value for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in value) \
            or value in {".", ".."}:
        raise ApiError(400, "InvalidFilename", f"{what} {value[:MAX_FILENAME]!r} must be a plain file name of at most "
                                               f"{MAX_FILENAME} characters, without / \\ or control characters")
    return value


def _options(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, "InvalidOptions", "options must be a JSON object")
    unknown = sorted(set(value) - {*OPTION_CHOICES, "scale"})
    if unknown:
        raise ApiError(400, "UnknownOption", f"unknown option {unknown[0]!r}; the options are mode, shape and scale")
    for name, choices in OPTION_CHOICES.items():
        if name in value and value[name] not in choices:
            raise ApiError(400, "InvalidOption", f"option {name} must be one of {', '.join(choices)}, not {value[name]!r}")
    if "scale" in value:
        scale = value["scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
            raise ApiError(400, "InvalidOption", f"option scale must be a number from {SCALE_RANGE[0]} to {SCALE_RANGE[1]}")
    return dict(value)


def parse_job_request(body: str | None, cfg: Config) -> tuple[str, list[str], dict[str, Any]]:
    """(filename, consent photo names, options) of a POST /jobs body, or a 400 naming the problem."""
    try:
        request = json.loads(body or "")
    except (TypeError, ValueError):
        raise ApiError(400, "MalformedJson", "the request body must be a JSON object") from None
    if not isinstance(request, dict):
        raise ApiError(400, "MalformedJson", "the request body must be a JSON object")
    unknown = sorted(set(request) - {"filename", "consent", "options"})
    if unknown:
        raise ApiError(400, "UnknownField", f"unknown field {unknown[0]!r}; the fields are filename, consent and options")
    filename = _file_name(request.get("filename"), "filename")
    if PurePosixPath(filename).suffix.lower() not in cfg.video_suffixes:
        raise ApiError(400, "UnsupportedFileType", f"{filename}: LimeLight takes videos and photos "
                                                   f"({', '.join(sorted(cfg.video_suffixes))})")
    consent = request.get("consent", [])
    if not isinstance(consent, list):
        raise ApiError(400, "InvalidConsent", "consent must be a list of photo file names")
    if len(consent) > cfg.max_consent_photos:
        raise ApiError(400, "TooManyConsentPhotos", f"{len(consent)} consent photos; a job takes at most {cfg.max_consent_photos}")
    seen: set[str] = set()
    for name in consent:
        # "<person>.jpg", or "<person>/<any>.jpg" for several photos of one person (the gallery's layouts)
        if not isinstance(name, str) or not 1 <= len(name.split("/")) <= 2:
            raise ApiError(400, "InvalidFilename", f"a consent photo's name must be PERSON.jpg or PERSON/PHOTO.jpg, not {name!r}")
        for part in name.split("/"):
            _file_name(part, "a consent photo's name")
        if PurePosixPath(name).suffix.lower() not in cfg.consent_suffixes:
            raise ApiError(400, "UnsupportedFileType", f"consent photo {name}: the photos must be "
                                                       f"{', '.join(sorted(cfg.consent_suffixes))}")
        if name.lower() in seen:
            raise ApiError(400, "DuplicateConsentPhoto", f"consent photo {name} is listed twice")
        seen.add(name.lower())
    return filename, list(consent), _options(request.get("options"))


def _upload_form(cfg: Config, key: str, filename: str, max_bytes: int) -> dict[str, Any]:
    """A presigned S3 POST for one file: its key, its content type and a size limit enforced by S3."""
    content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return client("s3").generate_presigned_post(
        Bucket=cfg.input_bucket,
        Key=key,
        Fields={"Content-Type": content_type},
        Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
        ExpiresIn=cfg.upload_seconds,
    )


# -- routes ---------------------------------------------------------------------------------------
@app.post("/jobs")
@tracer.capture_method
def create_job() -> Response:
    cfg = config()
    owner = caller()
    filename, consent, options = parse_job_request(app.current_event.body, cfg)
    job_id, created = jobs.new_job_id(), jobs.now()
    video_key = jobs.api_video_key(cfg.input_prefix, job_id, filename)
    store().create({
        "job_id": job_id,
        "owner": owner,
        "status": jobs.AWAITING_UPLOAD,
        "created_at": created,
        "filename": filename,
        "video_key": video_key,
        "consent": consent,
        "options": options,
        "expires_at": created + cfg.retention_days * 86400,  # DynamoDB TTL, with the results' lifecycle
    })
    upload = {
        "video": _upload_form(cfg, video_key, filename, cfg.max_video_bytes),
        "consent": {name: _upload_form(cfg, jobs.consent_prefix(job_id) + name, name, cfg.max_consent_photo_bytes) for name in consent},
    }
    metrics.add_metric(name="JobsCreated", unit=MetricUnit.Count, value=1)
    logger.info("job created", extra={"job_id": job_id, "consent_photos": len(consent)})
    return _answer(201, {"job_id": job_id, "status": jobs.AWAITING_UPLOAD, "upload": upload,
                         "expires_in": cfg.upload_seconds})


def describe(record: dict[str, Any], with_links: bool) -> dict[str, Any]:
    """A job as the API shows it (presigned result links only when asked: GET /jobs/{id})."""
    cfg = config()
    done = record.get("segments_done") or []
    answer: dict[str, Any] = {
        "job_id": record["job_id"],
        "status": record["status"],
        "filename": record["filename"],
        "created_at": record["created_at"],
        "options": record.get("options") or {},
        "consent": record.get("consent") or [],
        "progress": {"segments_analyzed": len(record.get("segments_analyzed") or []), "segments_done": len(done),
                     "segments_total": int(record.get("segments_total") or 0)},
    }
    if record.get("faces") is not None:
        answer["faces"] = record["faces"]
    if record["status"] == jobs.FAILED:
        answer["error"] = record.get("error") or {"name": "Unknown", "message": "the job failed"}
    if record["status"] == jobs.SUCCEEDED and with_links:
        s3, seconds = client("s3"), cfg.result_seconds
        links = {
            name: s3.generate_presigned_url("get_object", Params={"Bucket": cfg.output_bucket, "Key": record["result"][key]}, ExpiresIn=seconds)
            for name, key in (("video_url", "video_key"), ("report_url", "report_key"))
        }
        answer["result"] = {**links, "expires_at": jobs.now() + seconds}
    return answer


@app.get("/jobs/<job_id>")
@tracer.capture_method
def get_job(job_id: str) -> Response:
    return _answer(200, describe(own_job(job_id), with_links=True))


def _cursor(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        start = json.loads(base64.urlsafe_b64decode(raw.encode() + b"=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error):
        start = None
    if not isinstance(start, dict) or set(start) != {"job_id", "owner", "created_at"}:
        raise ApiError(400, "InvalidCursor", "next must be the value a previous page of GET /jobs gave")
    return start


@app.get("/jobs")
@tracer.capture_method
def list_jobs() -> Response:
    owner = caller()
    raw_limit = app.current_event.get_query_string_value("limit", "20")
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, "InvalidLimit", f"limit must be a whole number from 1 to {MAX_PAGE}")
    start = _cursor(app.current_event.get_query_string_value("next"))
    if start is not None and start["owner"] != owner:
        raise ApiError(400, "InvalidCursor", "next must be the value a previous page of GET /jobs gave")
    records, last = store().owned(owner, limit, start)
    body: dict[str, Any] = {"jobs": [describe(r, with_links=False) for r in records]}
    if last:
        body["next"] = base64.urlsafe_b64encode(json.dumps(last, sort_keys=True).encode()).decode().rstrip("=")
    return _answer(200, body)


@app.delete("/jobs/<job_id>")
@tracer.capture_method
def delete_job(job_id: str) -> Response:
    cfg = config()
    record = own_job(job_id)
    # The tombstone first: from now on the job answers 404, and the workflow's late steps (a
    # segment finishing, the failure report of the stop) see it deleted and write nothing.
    still = [jobs.AWAITING_UPLOAD, jobs.RUNNING, jobs.SUCCEEDED, jobs.FAILED]
    if not store().update(job_id, still, set_={"status": jobs.DELETED, "expires_at": jobs.now() + jobs.TOMBSTONE_SECONDS}):
        raise not_found(job_id)
    if record["status"] == jobs.RUNNING:
        sfn = client("stepfunctions")
        try:
            sfn.stop_execution(executionArn=execution_arn(cfg.state_machine_arn, job_id), cause="the job was deleted through the API")
        except sfn.exceptions.ExecutionDoesNotExist:
            pass
    erased = jobs.erase(job_id, input_bucket=cfg.input_bucket, input_prefix=cfg.input_prefix, work_bucket=cfg.work_bucket,
                        output_bucket=cfg.output_bucket, output_prefix=cfg.output_prefix)
    metrics.add_metric(name="JobsDeleted", unit=MetricUnit.Count, value=1)
    logger.info("job deleted", extra={"job_id": job_id, "objects_erased": erased, "was": record["status"]})
    return Response(status_code=204, body=None)


@logger.inject_lambda_context(clear_state=True, correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    return app.resolve(event, context)

