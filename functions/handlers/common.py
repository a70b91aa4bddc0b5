"""What the handlers share: configuration, AWS clients, the workflow's payload and its S3 keys.

- Configuration comes from environment variables set in template.yaml; each handler reads its
  own once (first invocation of a container) and fails fast naming a missing variable.
- boto3 clients are built once per container; tests and the local runner inject their own with
  `use_clients` (or point the default ones elsewhere with AWS_ENDPOINT_URL).
- Every S3 key depends only on (job_id, segment index) or on the source key: a retried task
  overwrites its own objects and never creates new ones.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from handlers.exceptions import ConfigurationError, SourceChangedError, StorageExceededError, UnexpectedError, WorkflowError
from limelight.analyze import SamplingOptions
from limelight.segments import SEGMENT_SUFFIX
from limelight.formats import CONTAINER_SUFFIXES, IMAGE_SUFFIXES, KEEP_CONTAINER, PHOTO_OUTPUT_SUFFIXES

# What a result is published as: the engine keeps these containers; any other video becomes .mp4,
# or .mkv / .mov when MP4 cannot carry its audio (limelight.video.output_container); a photo keeps
# its format, HEIC / JFIF become JPEG and a one-frame GIF PNG (limelight.formats.photo_output_suffix).
OUTPUT_CONTAINERS = KEEP_CONTAINER | PHOTO_OUTPUT_SUFFIXES
# Photos the workflow takes (a one-frame GIF too); a photo job's one "segment" is the photo itself.
UPLOAD_PHOTO_SUFFIXES = IMAGE_SUFFIXES | {".gif"}
FAILED_PREFIX = "failed/"
JOB_PREFIX = "jobs/"

_clients: dict[str, Any] = {}


def client(service: str) -> Any:
    """The boto3 client for `service`, built on first use and reused by the container."""
    if service not in _clients:
        # S3 signs presigned links and forms with SigV4 (the job API hands them out).
        _clients[service] = boto3.client(service, config=BotoConfig(signature_version="s3v4") if service == "s3" else None)
    return _clients[service]


def use_clients(**clients: Any) -> None:
    """Replace the clients (tests, local runner): `use_clients(s3=..., stepfunctions=...)`.

    Called without arguments it forgets them all, so the next `client()` builds fresh ones.
    """
    _clients.clear()
    _clients.update(clients)


def env(name: str) -> str:
    """The value of a required environment variable; ConfigurationError naming it when unset."""
    value = os.environ.get(name)
    if value is None or value == "":
        raise ConfigurationError(f"environment variable {name} is not set: define it in template.yaml")
    return value


def env_number(name: str, kind: type = float) -> Any:
    raw = env(name)
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigurationError(f"environment variable {name}={raw!r} is not a {kind.__name__}") from None
    if value <= 0:
        raise ConfigurationError(f"environment variable {name}={raw!r} must be positive")
    return value


@dataclass(frozen=True)
class Source:
    """The uploaded object that started a job (version or ETag pins the exact upload)."""

    bucket: str
    key: str
    version_id: str | None
    etag: str | None

    @property
    def job_id(self) -> str:
        """Short hash of bucket, key and version (or ETag): the same upload, the same job."""
        revision = self.version_id or self.etag or ""
        digest = hashlib.sha256(f"{self.bucket}\0{self.key}\0{revision}".encode())
        return digest.hexdigest()[:20]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Source:
        return cls(data["bucket"], data["key"], data.get("version_id"), data.get("etag"))

    def get_args(self) -> dict[str, str]:
        """GetObject arguments that read exactly this upload (fail if it was replaced)."""
        args = {"Bucket": self.bucket, "Key": self.key}
        if self.version_id:
            args["VersionId"] = self.version_id
        elif self.etag:
            args["IfMatch"] = f'"{self.etag.strip(chr(34))}"'
        return args


# -- S3 keys --------------------------------------------------------------------------------------
def segment_key(job_id: str, index: int, suffix: str = SEGMENT_SUFFIX) -> str:
    """A source segment's key; `suffix` is its container (`limelight.segments.SEGMENT_SUFFIXES`:
    .mov or .mkv for a video MP4 cannot hold, else the video's own), the same for every segment
    of a job."""
    if suffix not in CONTAINER_SUFFIXES and suffix not in UPLOAD_PHOTO_SUFFIXES:
        raise ValueError(f"segment container must be a video container's or a photo format's suffix, got {suffix!r}")
    return f"{JOB_PREFIX}{job_id}/segments/{index:05d}{suffix}"


def processed_key(job_id: str, index: int, suffix: str = ".mp4") -> str:
    """An anonymized segment's key: H.264 in MP4, or a photo job's photo in its published format."""
    if suffix not in OUTPUT_CONTAINERS:
        raise ValueError(f"anonymized segment format must be one of {', '.join(sorted(OUTPUT_CONTAINERS))}, got {suffix!r}")
    return f"{JOB_PREFIX}{job_id}/anonymized/{index:05d}{suffix}"


def segment_report_key(job_id: str, index: int) -> str:
    return f"{JOB_PREFIX}{job_id}/reports/{index:05d}.json"


def segment_plan_key(job_id: str, index: int) -> str:
    """A segment's plan as analyzed (boxes and decisions; the render Map reads it)."""
    return f"{JOB_PREFIX}{job_id}/plans/{index:05d}.json"


def segment_edges_key(job_id: str, index: int) -> str:
    """What the join needs of a segment's analysis (`limelight.join.SegmentEdges`: the tracks near
    its ends with their samples' encodings, its end frames' 64x36 grey thumbnails)."""
    return f"{JOB_PREFIX}{job_id}/edges/{index:05d}.npz"


def join_key(job_id: str) -> str:
    """The decisions of the tracks crossing segment cuts (`limelight.join.join_segments`)."""
    return f"{JOB_PREFIX}{job_id}/joined.json"


def video_sampling(sampling: SamplingOptions, event: dict[str, Any]) -> SamplingOptions:
    """`sampling` at the whole video's frame rate (the segment step's `picture`): the analysis of
    every segment and the join count `link_gap` in the same frames."""
    rate = (event.get("picture") or {}).get("rate")
    return sampling.at_rate(float(Fraction(rate)) if rate else 0.0)


def read_json(bucket: str, key: str) -> Any:
    return json.loads(client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())


def put_json(bucket: str, key: str, doc: Any) -> None:
    client("s3").put_object(Bucket=bucket, Key=key, Body=json.dumps(doc, separators=(",", ":")).encode(), ContentType="application/json")


def segment_list_key(job_id: str) -> str:
    return f"{JOB_PREFIX}{job_id}/segments.json"


def gallery_key(job_id: str) -> str:
    return f"{JOB_PREFIX}{job_id}/gallery.npz"


def failure_key(job_id: str) -> str:
    return f"{FAILED_PREFIX}{job_id}.json"


def output_keys(prefix: str, job_id: str, source_key: str, suffix: str | None = None) -> tuple[str, str]:
    """(video key, report key) of a job's published result: `<prefix><job_id>/<name>_anonymized.*`.

    `suffix` is the container the reassembly writes (`limelight.video.output_container` of the
    upload: .mkv or .mov when MP4 cannot carry its audio); by default the upload's own container
    when the engine keeps it, else .mp4."""
    name = PurePosixPath(source_key)
    if suffix is None:
        suffix = name.suffix.lower() if name.suffix.lower() in KEEP_CONTAINER else ".mp4"
    elif suffix not in OUTPUT_CONTAINERS:
        raise ValueError(f"output container must be one of {', '.join(sorted(OUTPUT_CONTAINERS))}, got {suffix!r}")
    base = f"{prefix}{job_id}/{name.stem}_anonymized"
    return f"{base}{suffix}", f"{base}.report.json"


def published_keys(prefix: str, job_id: str, source_key: str) -> list[str]:
    """Every key a job's result may be published under, whichever container it got (a failed
    job deletes them all)."""
    keys = {key for suffix in sorted(OUTPUT_CONTAINERS) for key in output_keys(prefix, job_id, source_key, suffix)}
    return sorted(keys)


def execution_arn(state_machine_arn: str, job_id: str) -> str:
    """The ARN of a job's execution: the start function names each execution by its job id."""
    return f"{state_machine_arn.replace(':stateMachine:', ':execution:', 1)}:{job_id}"


def local_name(key: str, default_suffix: str = ".mp4") -> str:
    """A safe local file name for an S3 key (the key's own name may hold anything)."""
    suffix = PurePosixPath(key).suffix.lower()
    return f"object{suffix if suffix.isascii() and 1 < len(suffix) <= 6 and suffix[1:].isalnum() else default_suffix}"


def download_source(source: Source, path: Path) -> None:
    """Download exactly the upload named in the event (its version, else its ETag); one larger
    than the free storage beside `path` is refused before any of it is written."""
    try:
        response = client("s3").get_object(**source.get_args())
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in {"NoSuchKey", "NoSuchVersion", "PreconditionFailed", "404", "412"}:
            raise SourceChangedError(
                f"s3://{source.bucket}/{source.key} changed or disappeared after the upload event ({code}); upload it again"
            ) from None
        raise
    body, size = response["Body"], response.get("ContentLength")
    free = shutil.disk_usage(path.parent).free
    if size is not None and size > free:
        body.close()
        raise StorageExceededError(
            f"s3://{source.bucket}/{source.key} is {_size(size)}, more than the {_size(free)} of storage free in this "
            f"step; {_STORAGE_ADVICE}"
        )
    with within_storage(f"s3://{source.bucket}/{source.key}"), path.open("wb") as stream:
        for chunk in iter(lambda: body.read(1 << 20), b""):
            stream.write(chunk)


_STORAGE_ADVICE = "upload it in shorter parts, or anonymize it on one machine with `limelight anonymize`"


def _size(size: int) -> str:
    """'12.4 GB', '350 MB', '20 KB': a size as a person reads it."""
    if size >= 1e9:
        return f"{size / 1e9:.1f} GB"
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            return f"{size / scale:.0f} {unit}"
    return f"{size} bytes"


@contextmanager
def within_storage(what: str) -> Iterator[None]:
    """Turns running out of the function's /tmp storage (ENOSPC, however the engine or boto3
    wrapped it) into a StorageExceededError naming `what`; other errors pass unchanged."""
    try:
        yield
    except StorageExceededError:
        raise
    except Exception as error:
        if not _out_of_space(error):
            raise
        total = shutil.disk_usage(tempfile.gettempdir()).total
        raise StorageExceededError(f"{what} does not fit the {_size(total)} of storage of this step; {_STORAGE_ADVICE}") from None


def _out_of_space(error: BaseException | None) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:
        if getattr(error, "errno", None) == errno.ENOSPC:
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def named_errors(step: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A handler whose every failure is a named WorkflowError: one raised on purpose as it is, any
    other (a library's, a bug) as UnexpectedError naming the step, the type and the message, so
    that the failure report always carries an error of this module and one line."""
    def wrap(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        def run(event: dict[str, Any], context: Any) -> Any:
            try:
                return handler(event, context)
            except WorkflowError:
                raise
            except Exception as error:
                message = " ".join(str(error).split()) or "no message"
                raise UnexpectedError(f"{step} failed unexpectedly: {type(error).__name__}: {message}") from error
        return run
    return wrap
