"""The job API's client: `limelight submit VIDEO --api URL [--known-faces DIR]`.

Creates a job (SigV4-signed with the caller's AWS credentials, as API Gateway's IAM auth wants),
uploads the consent photos and then the video to the presigned forms it answers, follows the job,
and downloads the result under a temporary name, renamed once complete. Works against `make api`
(any key pair) and against a deployed stack (its ApiUrl output).
"""

from __future__ import annotations

import json
import mimetypes
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlencode, urlsplit

from limelight.errors import LimeLightError

API_ENV = "LIMELIGHT_API_URL"
CHUNK = 1 << 20
Progress = Callable[[int], None]


class ApiCallError(LimeLightError):
    """The job API (or S3) refused a request, or could not be reached; the message says which."""

    def __init__(self, message: str, status: int | None = None, name: str | None = None) -> None:
        super().__init__(message)
        self.status, self.name = status, name


def _region(url: str) -> str:
    host = urlsplit(url).hostname or ""
    parts = host.split(".")
    if "execute-api" in parts and parts.index("execute-api") + 1 < len(parts):
        return parts[parts.index("execute-api") + 1]
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


class JobClient:
    """Signed calls to one job API (base URL up to the stage, e.g. https://ID.execute-api.REGION.amazonaws.com/v1)."""

    def __init__(self, api_url: str, credentials: Any = None, timeout: float = 60.0) -> None:
        if urlsplit(api_url).scheme not in ("http", "https") or not urlsplit(api_url).hostname:
            raise ApiCallError(f"--api {api_url!r} is not an http(s) URL (make api prints it; a deployed stack's ApiUrl output is one)")
        from botocore.session import Session  # the AWS SDK signs; imported here, the engine does not need it

        self.url, self.timeout, self.region = api_url.rstrip("/"), timeout, _region(api_url)
        self.credentials = credentials or Session().get_credentials()
        if self.credentials is None:
            raise ApiCallError("no AWS credentials to sign with: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                               "(or a profile); against `make api` any pair will do")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, query: dict[str, Any] | None = None) -> tuple[int, Any]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        url = f"{self.url}{path}" + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        request = AWSRequest(method=method, url=url, data=data, headers={"Content-Type": "application/json"} if data else {})
        SigV4Auth(self.credentials.get_frozen_credentials(), "execute-api", self.region).add_auth(request)
        prepared = urllib.request.Request(url, data=data, method=method, headers=dict(request.headers.items()))
        try:
            with urllib.request.urlopen(prepared, timeout=self.timeout) as response:
                raw = response.read()
                return response.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                detail = json.loads(raw)["error"]
                name, message = str(detail["name"]), str(detail["message"])
            except (ValueError, KeyError, TypeError):
                name, message = "HttpError", raw.decode("utf-8", "replace")[:200] or error.reason
            raise ApiCallError(f"{method} {path}: {error.code} {name}: {message}", error.code, name) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ApiCallError(f"cannot reach the job API at {self.url}: {reason}") from None

    def create(self, filename: str, consent: list[str], options: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "/jobs", {"filename": filename, "consent": consent, "options": options})[1]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.call("GET", f"/jobs/{job_id}")[1]

    def jobs(self, limit: int = 20, next_page: str | None = None) -> dict[str, Any]:
        return self.call("GET", "/jobs", query={"limit": limit, **({"next": next_page} if next_page else {})})[1]

    def delete(self, job_id: str) -> None:
        self.call("DELETE", f"/jobs/{job_id}")


def _multipart(fields: dict[str, str], path: Path, progress: Progress | None) -> tuple[str, int, Iterator[bytes]]:
    """A streamed multipart/form-data body: the form's fields, then the file (S3 wants it last)."""
    boundary = uuid.uuid4().hex
    head = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items())
    content_type = fields.get("Content-Type") or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    head += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="upload"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield head
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                yield chunk
                if progress:
                    progress(len(chunk))
        yield tail

    return boundary, len(head) + path.stat().st_size + len(tail), chunks()


def upload(form: dict[str, Any], path: Path, progress: Progress | None = None, timeout: float = 300.0) -> None:
    """POST `path` to a presigned S3 form ({"url", "fields"})."""
    boundary, length, body = _multipart(form["fields"], path, progress)
    request = urllib.request.Request(form["url"], data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(length)})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        code = detail.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in detail else error.reason
        raise ApiCallError(f"uploading {path.name} was refused: {error.code} {code}", error.code, str(code)) from None
    except (urllib.error.URLError, OSError) as error:
        raise ApiCallError(f"uploading {path.name} failed: {getattr(error, 'reason', error)}") from None


def download(url: str, target: Path, progress: Progress | None = None, timeout: float = 300.0) -> None:
    """Save a presigned GET to `target`, through a temporary name beside it (never a partial file)."""
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as out:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                out.write(chunk)
                if progress:
                    progress(len(chunk))
        partial.replace(target)
    except urllib.error.HTTPError as error:
        raise ApiCallError(f"downloading the result was refused: {error.code} {error.reason}", error.code) from None
    except (urllib.error.URLError, OSError) as error:
        raise ApiCallError(f"downloading the result failed: {getattr(error, 'reason', error)}") from None
    finally:
        partial.unlink(missing_ok=True)


def consent_photos(sources: list[Path], suffixes: frozenset[str]) -> dict[str, Path]:
    """API names of the consent photos: PERSON.jpg for a photo, PERSON/PHOTO.jpg for a person's folder
    (the layouts `--known-faces` reads locally)."""
    photos: dict[str, Path] = {}
    for source in sources:
        if source.is_file():
            photos[source.name] = source
            continue
        if not source.is_dir():
            raise ApiCallError(f"{source}: no such file or folder")
        for path in sorted(source.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_file() and path.suffix.lower() in suffixes:
                photos[path.name] = path
            elif path.is_dir():
                for photo in sorted(path.iterdir()):
                    if photo.is_file() and photo.suffix.lower() in suffixes and not photo.name.startswith("."):
                        photos[f"{path.name}/{photo.name}"] = photo
    return photos


def follow(client: JobClient, job_id: str, on_progress: Callable[[dict[str, Any]], None] | None = None,
           interval: float = 2.0, timeout: float = 6 * 3600) -> dict[str, Any]:
    """Poll a job until it ends (SUCCEEDED or FAILED); its last answer."""
    started = time.monotonic()
    while True:
        job = client.job(job_id)
        if on_progress:
            on_progress(job)
        if job["status"] in ("SUCCEEDED", "FAILED"):
            return job
        if time.monotonic() - started > timeout:
            raise ApiCallError(f"job {job_id} still {job['status']} after {timeout:.0f} s; it goes on: GET /jobs/{job_id}")
        time.sleep(interval)


def result_name(video: Path, job: dict[str, Any]) -> str:
    """NAME_anonymized.EXT in the container the workflow published (a presigned link's path names it)."""
    key = PurePosixPath(urlsplit(job["result"]["video_url"]).path)
    return f"{video.stem}_anonymized{key.suffix or video.suffix}"
