"""infra.moto_lambda: moto's Lambda invocations reach the registered handler and answer like Lambda."""

from __future__ import annotations

import json

import pytest
from moto.awslambda_simple.models import LambdaSimpleBackend

from infra.moto_lambda import Fault, LambdaServiceError, LocalLambdas

ARN = "arn:aws:lambda:us-east-1:123456789012:function:echo"


class DemoError(Exception):
    pass


def echo(event, context):
    if event.get("fail"):
        raise DemoError(f"asked to fail by {context.function_name}")
    return {"got": event["value"], "request": bool(context.aws_request_id)}


@pytest.fixture
def lambdas() -> LocalLambdas:
    registry = LocalLambdas()
    registry.register("echo", ARN, echo)
    return registry


def test_invocation_by_arn_returns_the_handler_result(lambdas):
    headers = {}
    assert json.loads(lambdas.invoke(ARN, json.dumps({"value": 7}), headers)) == {"got": 7, "request": True}
    assert headers == {}


def test_handler_exception_becomes_a_function_error_named_by_its_class(lambdas):
    headers = {}
    body = json.loads(lambdas.invoke("echo", json.dumps({"fail": True}), headers))
    assert headers == {"x-amz-function-error": "Unhandled"}
    assert (body["errorType"], body["errorMessage"]) == ("DemoError", "asked to fail by echo")
    assert [c.error for c in lambdas.calls("echo")] == ["DemoError"]


def test_fault_answers_a_service_error_once_after_the_handler_ran(lambdas):
    seen = []
    lambdas.faults.append(Fault("echo", matches=lambda p: p["value"] == 2, on_fault=seen.append))
    assert json.loads(lambdas.invoke("echo", json.dumps({"value": 1}), {})) == {"got": 1, "request": True}
    with pytest.raises(LambdaServiceError) as raised:
        lambdas.invoke("echo", json.dumps({"value": 2}), {})
    assert (raised.value.error_type, raised.value.code) == ("ServiceException", 500)
    assert json.loads(lambdas.invoke("echo", json.dumps({"value": 2}), {}))["got"] == 2
    assert seen == [{"value": 2}]
    assert [c.error for c in lambdas.calls("echo")] == [None, None, "Lambda.ServiceException", None]


def test_fault_before_run_does_not_run_the_handler(lambdas):
    lambdas.faults.append(Fault("echo", after_run=False, error_code="TooManyRequestsException", status=429))
    with pytest.raises(LambdaServiceError):
        lambdas.invoke("echo", json.dumps({"value": 1}), {})
    assert [c.error for c in lambdas.calls("echo")] == ["Lambda.TooManyRequestsException"]


def test_unknown_function_is_not_found(lambdas):
    with pytest.raises(LambdaServiceError) as raised:
        lambdas.invoke("nobody", "{}", {})
    assert raised.value.code == 404


def test_installed_patches_moto_only_inside_the_block(lambdas):
    original = LambdaSimpleBackend.invoke
    with lambdas.installed():
        backend = LambdaSimpleBackend.__new__(LambdaSimpleBackend)
        assert json.loads(LambdaSimpleBackend.invoke(backend, ARN, None, json.dumps({"value": 3}), {}, {}))["got"] == 3
    assert LambdaSimpleBackend.invoke is original
