"""`make api`: the job API on 127.0.0.1, served as API Gateway serves it, over the local workflow.

    python -m infra.api [--port 8787] [--param NAME=VALUE ...]

- the stack of template.yaml runs on moto (`infra.local.LocalCloud`), with the S3 trigger on (an
  upload to a presigned POST starts the job) and stopped executions announced to the failure
  function, as in AWS;
- every request is turned into API Gateway's REST proxy event and given to the real handler
  (`handlers.api`), under the stage of the template (`/v1`);
- authentication stands in for IAM: a request must carry a well-formed SigV4 `Authorization`
  header for `execute-api` dated within 15 minutes; its access key id is the principal (the
  signature itself cannot be checked: the server does not know the caller's secret key). An
  unsigned request answers 403, as API Gateway does, and so does a path no route has.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from infra.local import LocalCloud

STAGE = "v1"
DEFAULT_PORT = 8787
ROUTES = (  # (method, resource): template.yaml's ApiFunction events
    ("POST", "/jobs"),
    ("GET", "/jobs"),
    ("GET", "/jobs/{job_id}"),
    ("DELETE", "/jobs/{job_id}"),
)
MAX_BODY = 1 << 20  # API Gateway takes 10 MB; a job request is a few hundred bytes
_CREDENTIAL = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[A-Za-z0-9]{1,128})/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/execute-api/aws4_request,\s*"
    r"SignedHeaders=(?P<headers>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)
SKEW_SECONDS = 15 * 60


class Refused(Exception):
    """API Gateway's own answer (no handler runs): status, responseType, message."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def principal(headers: dict[str, str], account: str, now: float | None = None) -> tuple[str, str]:
    """(user ARN, access key id) of a SigV4-signed request; Refused (403) as API Gateway answers."""
    auth = headers.get("authorization")
    if not auth:
        raise Refused(403, "MISSING_AUTHENTICATION_TOKEN", "Missing Authentication Token")
    match = _CREDENTIAL.fullmatch(auth.strip())
    if not match:
        raise Refused(403, "INVALID_SIGNATURE", "Authorization header requires SigV4 for execute-api (Credential, SignedHeaders, Signature)")
    stamp = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise Refused(403, "INVALID_SIGNATURE", "X-Amz-Date is missing or not a SigV4 date") from None
    if not stamp.startswith(match["date"]) or {"host", "x-amz-date"} - set(match["headers"].split(";")):
        raise Refused(403, "INVALID_SIGNATURE", "the signature must cover host and x-amz-date, of the credential's day")
    if abs((now or time.time()) - signed_at) > SKEW_SECONDS:
        raise Refused(403, "INVALID_SIGNATURE", "Signature expired: X-Amz-Date is more than 15 minutes from the server's time")
    key = match["key"]
    return f"arn:aws:iam::{account}:user/{key}", key


def route(method: str, path: str) -> tuple[str, dict[str, str] | None]:
    """(resource, path parameters) of a request; Refused as API Gateway answers an unknown route."""
    for wanted, resource in ROUTES:
        pattern = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", resource) + "$"
        match = re.match(pattern, path)
        if match and wanted == method:
            return resource, (match.groupdict() or None)
    raise Refused(403, "MISSING_AUTHENTICATION_TOKEN", "Missing Authentication Token")


def proxy_event(method: str, target: str, headers: dict[str, str], body: str | None, user_arn: str, key: str,
                source_ip: str, account: str) -> dict[str, Any]:
    """API Gateway's REST proxy event for a request to `/<stage><path>`."""
    parts = urlsplit(target)
    path = parts.path[len(f"/{STAGE}"):] or "/"
    resource, parameters = route(method, path)
    query = parse_qs(parts.query, keep_blank_values=True)
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": parameters,
        "stageVariables": None,
        "requestContext": {
            "accountId": account,
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/{STAGE}{path}",
            "stage": STAGE,
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"userArn": user_arn, "caller": key, "accessKey": key, "user": key, "accountId": account, "sourceIp": source_ip},
        },
        "body": body,
        "isBase64Encoded": False,
    }


class LocalApi:
    """The HTTP server: each request through `proxy_event` to the API function's handler."""

    def __init__(self, cloud: LocalCloud, port: int = DEFAULT_PORT) -> None:
        self.cloud = cloud
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                api.serve(self)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:  # no access log: URLs may carry cursors
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/{STAGE}"

    def serve(self, request: BaseHTTPRequestHandler) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        length = int(headers.get("content-length") or 0)
        if length > MAX_BODY:
            self._send(request, 413, {"error": {"name": "REQUEST_TOO_LARGE", "message": "Request Too Long"}})
            return
        body = request.rfile.read(length).decode("utf-8", "replace") if length else None
        account = self.cloud.stack.account
        try:
            user_arn, key = principal(headers, account)
            event = proxy_event(request.command, request.path, headers, body, user_arn, key, request.client_address[0], account)
        except Refused as refused:
            self._send(request, refused.status, {"error": {"name": refused.kind, "message": refused.message}})
            return
        answer = self.cloud._invoke("ApiFunction", event)
        out_headers = dict(answer.get("headers") or {})
        for name, values in (answer.get("multiValueHeaders") or {}).items():
            out_headers.setdefault(name, values[-1])
        payload = (answer.get("body") or "").encode()
        request.send_response(int(answer["statusCode"]))
        for name, value in out_headers.items():
            if name.lower() != "content-length":
                request.send_header(name, str(value))
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)

    @contextmanager
    def serving(self) -> Iterator[LocalApi]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            thread.join()


@contextmanager
def running(port: int = 0, parameters: dict[str, str] | None = None) -> Iterator[LocalApi]:
    """The whole local service: moto with the stack, the S3 trigger, the execution watcher, the API."""
    with LocalCloud.running(parameters) as cloud, cloud.notifying(), cloud.watching():
        with LocalApi(cloud, port).serving() as api:
            yield api


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.api", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("LIMELIGHT_API_PORT", DEFAULT_PORT)),
                        help="port on 127.0.0.1 (default: $LIMELIGHT_API_PORT or 8787)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="template parameter override, e.g. SegmentSeconds=3")
    args = parser.parse_args(argv)
    parameters = dict(p.split("=", 1) for p in args.param)
    try:
        with running(args.port, parameters) as api:
            print(f"LimeLight job API: {api.url}  (sign requests with any AWS key pair; Ctrl-C stops it)", flush=True)
            threading.Event().wait()
    except OSError as error:
        print(f"infra.api: error: cannot listen on 127.0.0.1:{args.port}: {error.strerror}; set LIMELIGHT_API_PORT", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
