"""The OpenAPI document: every route in it, valid OpenAPI 3.1, and made from the models."""

import functools
import re

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from shared.blueprints._contract import Operation
from shared.blueprints._openapi import build_document
from shared.blueprints.openapi_http import app_functions
from shared.blueprints.openapi_http import document as served_document
from shared.models.requests import ChatCompletionCreate
from shared.models.sessions import SessionCreate

CATCH_ALL = "unknown_route"  # any other /v1 URL: OpenAI's 404, not an operation


@functools.cache
def http_functions():
    import function_app

    return [f for f in app_functions(function_app.app) if f.is_http_function()]


def document():
    return served_document()  # what GET /openapi.json answers


def operations():
    return {(method, path): op for path, item in document()["paths"].items() for method, op in item.items()}


def test_every_http_function_is_in_the_document_with_each_method():
    ops = operations()
    for function in http_functions():
        name = function.get_function_name()
        if name == CATCH_ALL:
            continue
        path = "/" + re.sub(r"\{\*(\w+)\}", r"{\1}", function.get_trigger().route)
        for method in function.get_trigger().methods:
            op = ops.get((method.value.lower(), path))
            assert op is not None, f"{name}: {method.value} {path} missing from the document"
            assert op["operationId"] == name


def test_every_operation_is_a_registered_function():
    names = {f.get_function_name() for f in http_functions()} - {CATCH_ALL}
    assert {op["operationId"] for op in operations().values()} == names


def test_the_document_is_valid_openapi_3_1():
    errors = [str(e)[:300] for e in OpenAPIV31SpecValidator(document()).iter_errors()]
    assert not errors, "\n".join(errors[:5])
    assert document()["openapi"].startswith("3.1")


def test_request_schemas_are_the_validating_models():
    body = operations()[("post", "/v1/chat/completions")]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ChatCompletionCreate"}
    schema = document()["components"]["schemas"]["ChatCompletionCreate"]
    expected = ChatCompletionCreate.model_json_schema()
    assert schema["required"] == expected["required"]
    assert set(schema["properties"]) == set(expected["properties"])
    # Unknown fields are refused (OpenAI's rule), and the schema says so.
    assert schema["additionalProperties"] is False
    session = document()["components"]["schemas"]["SessionCreate"]
    assert set(session["properties"]) == set(SessionCreate.model_fields)


def test_security_schemes_and_what_needs_no_key():
    schemes = document()["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearer"]["description"],
    }
    assert (schemes["apiKey"]["in"], schemes["apiKey"]["name"]) == ("header", "api-key")
    assert (schemes["xApiKey"]["in"], schemes["xApiKey"]["name"]) == ("header", "x-api-key")
    open_routes = {path for (_, path), op in operations().items() if op.get("security") == []}
    assert open_routes == {
        "/health",
        "/health/ready",
        "/openapi.json",
        "/console",
        "/console/{path}",
        "/console/api/session",
    }


def test_only_a_jobs_event_stream_takes_a_token_in_its_url():
    scheme = document()["components"]["securitySchemes"]["eventsToken"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "query", "token")
    with_token = {key for key, op in operations().items() if {"eventsToken": []} in op.get("security", [])}
    assert with_token == {("get", "/v1/jobs/{job_id}/events")}
    events = operations()[("get", "/v1/jobs/{job_id}/events")]
    assert events["security"] == [*document()["security"], {"eventsToken": []}]  # a key header still works
    minted = operations()[("post", "/v1/jobs/{job_id}/events/token")]
    assert "security" not in minted  # minted with a key, as any authenticated route
    assert minted["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobEventsTokenPublic"
    }


@pytest.mark.parametrize(
    ("method", "path", "envelope"),
    [
        ("post", "/v1/messages", "AnthropicErrorPublic"),
        ("post", "/v1/messages/count_tokens", "AnthropicErrorPublic"),
        ("post", "/v1/chat/completions", "ErrorPublic"),
        ("get", "/v1/keys/{key_id}", "ErrorPublic"),
    ],
)
def test_errors_use_the_routes_envelope(method, path, envelope):
    responses = operations()[(method, path)]["responses"]
    for status in ("400", "401"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{envelope}"}


def test_model_calls_document_provider_failures_and_streams():
    responses = operations()[("post", "/v1/chat/completions")]["responses"]
    assert {"200", "400", "401", "429", "502", "503", "504"} <= set(responses)
    assert set(responses["200"]["content"]) == {"application/json", "text/event-stream"}
    assert responses["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletion"
    }


def test_uploads_are_multipart_with_the_form_models_fields():
    body = operations()[("post", "/v1/audio/transcriptions")]["requestBody"]["content"]
    schema = body["multipart/form-data"]["schema"]
    assert schema["properties"]["file"] == {"type": "string", "format": "binary"}
    assert {"file", "model"} <= set(schema["required"])
    purpose = operations()[("post", "/v1/files")]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "batch_output" not in purpose["properties"]["purpose"]["enum"]


def test_an_undocumented_function_is_left_out():
    class Trigger:
        route = "v1/secret"
        methods = ()

    class Function:
        def get_trigger(self):
            return Trigger()

        def get_user_function(self):
            return lambda req: None

        def get_function_name(self):
            return "secret"

    assert build_document([Function()])["paths"] == {}


def test_an_operation_needs_only_a_summary():
    assert Operation("x").returns == {} and Operation("x").authenticated
