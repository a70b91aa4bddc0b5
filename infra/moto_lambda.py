"""Serve moto's Lambda invocations with the real handlers, in this process.

moto's Step Functions interpreter invokes Lambda tasks through moto's Lambda API; without Docker
its "simple" backend only echoes the payload. `LocalLambdas.installed()` patches
`LambdaSimpleBackend.invoke` to call the registered handler instead, with a Lambda-like context,
and answers like the Lambda service does:

- the handler's return value as the JSON payload;
- an exception as a function error (`X-Amz-Function-Error: Unhandled`, payload with errorType =
  the exception's class name), which Step Functions matches by that name in Retry/Catch;
- an injected `Fault` as a Lambda service error (e.g. Lambda.ServiceException), before or after
  the handler ran, so tests can check the Retry policy.

Each function runs one invocation at a time (one warm container), since handlers keep expensive
objects such as the detector's interpreter per container, which is not safe across threads.
"""

from __future__ import annotations

import json
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.core.exceptions import JsonRESTError

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass(frozen=True)
class LocalContext:
    """What Powertools and handlers read from a Lambda context object."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 1769
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "local"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@dataclass
class Fault:
    """A Lambda service error answered once, for the first invocation of `function` that matches.

    after_run: the handler runs first (its side effects happen, its result is lost), as when the
    service fails after the function did its work; else the handler does not run.
    """

    function: str
    matches: Callable[[dict[str, Any]], bool] = lambda payload: True
    after_run: bool = True
    error_code: str = "ServiceException"
    status: int = 500
    on_fault: Callable[[dict[str, Any]], None] | None = None


class LambdaServiceError(JsonRESTError):
    """An error of the Lambda service itself (moto turns it into the HTTP error response)."""

    def __init__(self, error_code: str, message: str, status: int) -> None:
        super().__init__(error_code, message)
        self.code = status


@dataclass(frozen=True)
class Invocation:
    function: str
    payload: dict[str, Any]
    error: str | None


class LocalLambdas:
    """Registered handlers by function name, the invocations seen, and faults to inject."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[Handler, str]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.faults: list[Fault] = []
        self.invocations: list[Invocation] = []

    def register(self, name: str, arn: str, handler: Handler) -> None:
        self._handlers[name] = (handler, arn)
        self._locks[name] = threading.Lock()

    def calls(self, function: str) -> list[Invocation]:
        return [call for call in self.invocations if call.function == function]

    def _take_fault(self, function: str, payload: dict[str, Any]) -> Fault | None:
        with self._guard:
            for fault in self.faults:
                if fault.function == function and fault.matches(payload):
                    self.faults.remove(fault)
                    return fault
        return None

    def invoke(self, function_name: str, body: str | bytes | None, response_headers: dict[str, Any]) -> bytes:
        """Run the handler of `function_name` (a name or an ARN) on the JSON `body`."""
        name = function_name.split(":function:")[-1].split(":")[0]
        if name not in self._handlers:
            raise LambdaServiceError("ResourceNotFoundException", f"Function not found: {name}", 404)
        handler, arn = self._handlers[name]
        payload = json.loads(body or "{}")
        fault = self._take_fault(name, payload)
        if fault is not None and not fault.after_run:
            self._fail(name, payload, fault)
        with self._locks[name]:
            try:
                result = handler(payload, LocalContext(function_name=name, invoked_function_arn=arn))
            except Exception as error:  # noqa: BLE001 - every handler error becomes a function error, as in Lambda
                self.invocations.append(Invocation(name, payload, type(error).__name__))
                response_headers["x-amz-function-error"] = "Unhandled"
                return json.dumps(
                    {
                        "errorType": type(error).__name__,
                        "errorMessage": str(error),
                        "stackTrace": traceback.format_tb(error.__traceback__),
                    }
                ).encode()
        self.invocations.append(Invocation(name, payload, None))
        if fault is not None:
            self._fail(name, payload, fault)
        return json.dumps(result).encode()

    def _fail(self, name: str, payload: dict[str, Any], fault: Fault) -> None:
        self.invocations.append(Invocation(name, payload, f"Lambda.{fault.error_code}"))
        if fault.on_fault is not None:
            fault.on_fault(payload)
        raise LambdaServiceError(fault.error_code, f"injected {fault.error_code} for {name}", fault.status)

    @contextmanager
    def installed(self) -> Iterator[LocalLambdas]:
        """Patch moto's simple Lambda backend to dispatch to these handlers while in the block."""
        lambdas = self

        def invoke(backend: LambdaSimpleBackend, function_name: str, qualifier: Any, body: Any, headers: Any, response_headers: dict[str, Any]) -> bytes:
            return lambdas.invoke(function_name, body, response_headers)

        with mock.patch.object(LambdaSimpleBackend, "invoke", invoke):
            yield self
