"""The HTTP edge's parsing helpers: JSON bodies, integers in headers and queries."""

from __future__ import annotations

import pytest
from azurefunctions.extensions.http.fastapi import Request

from shared.blueprints._http import (
    MAX_JSON_DEPTH,
    ascii_int,
    declared_length,
    json_depth_exceeds,
    query_int,
    read_json,
    request_facts,
    route_template,
)
from shared.errors import InvalidRequestError, PayloadTooLargeError


def request(body: bytes = b"", headers: dict[str, str] | None = None, query: str = "") -> Request:
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": raw_headers,
        "query_string": query.encode(),
    }
    return Request(scope, receive)


def nested(depth: int) -> bytes:
    return b'{"model": "m", "metadata": ' + b"[" * depth + b"]" * depth + b"}"


async def test_json_nested_deeper_than_the_cap_is_a_400_not_a_recursion_error():
    with pytest.raises(InvalidRequestError) as refused:
        await read_json(request(nested(1000)), 10_000_000)
    assert refused.value.status == 400 and "nested" in refused.value.message
    with pytest.raises(InvalidRequestError):
        await read_json(request(nested(MAX_JSON_DEPTH)), 10_000_000)  # the body object is one level more


async def test_json_at_the_cap_is_read():
    assert (await read_json(request(nested(MAX_JSON_DEPTH - 1)), 10_000_000))["model"] == "m"


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"1", 0),
        (b"{}", 1),
        (b'{"a": [1, {"b": []}], "c": {}}', 4),
        (b'{"a": "[[[[[[[[[[{{{{{{"}', 1),  # brackets inside strings do not count
        (b'{"a": "\\"[[[[[\\\\", "b": [[]]}', 3),  # nor escaped quotes and backslashes
        (b"[" * 5 + b"]" * 5, 5),
    ],
)
def test_json_depth(body, depth):
    assert not json_depth_exceeds(body, depth)
    assert json_depth_exceeds(body, depth - 1) == (depth > 0)


@pytest.mark.parametrize("raw", ["²", "١٢", "1_000", " 12", "+1", "-", "", "1e3", "9" * 40])
def test_ascii_int_refuses_what_isdigit_or_int_would_wave_through(raw):
    assert ascii_int(raw) is None


def test_ascii_int_reads_plain_integers():
    assert (ascii_int("0"), ascii_int("42"), ascii_int("-1")) == (0, 42, -1)


@pytest.mark.parametrize("value", ["²", "٣", "abc"])
def test_a_content_length_that_is_not_ascii_digits_is_ignored_not_a_500(value):
    assert declared_length(request(headers={"content-length": value})) == 0


async def test_a_declared_length_over_the_limit_is_refused_before_reading():
    with pytest.raises(PayloadTooLargeError):
        await read_json(request(b"{}", {"content-length": "99999"}), 100)


@pytest.mark.parametrize("value", ["²", "١", "1_0", "nan"])
def test_query_int_answers_400_for_non_ascii_digits(value):
    with pytest.raises(InvalidRequestError) as refused:
        query_int(request(query=f"starting_after={value}"), "starting_after", 0, low=-1, high=10**9)
    assert refused.value.param == "starting_after"


@pytest.mark.parametrize(
    ("path", "params", "route"),
    [
        ("/v1/chat/completions", {}, "/v1/chat/completions"),
        ("/v1/files/file-abc/content", {"file_id": "file-abc"}, "/v1/files/{file_id}/content"),
        ("/v1/files/content/content", {"file_id": "content"}, "/v1/files/{file_id}/content"),
        ("/v1/files/files", {"file_id": "files"}, "/v1/files/{file_id}"),
        ("/v1/models/openai/gpt-4o", {"model": "openai/gpt-4o"}, "/v1/models/{model}"),
        ("/v1/no/such/thing", {"path": "no/such/thing"}, "/v1/{path}"),  # the catch-all
        ("/openapi.json", {}, "/openapi.json"),
    ],
)
def test_the_route_template_is_rebuilt_from_the_path_and_route_values(path, params, route):
    assert route_template(path, params) == route


def test_request_facts_follow_the_http_semantic_conventions():
    req = request(
        headers={
            "host": "cirrus.example.com",
            "user-agent": "OpenAI/Python 1.99",
            "x-forwarded-proto": "https",
        }
    )
    req.scope["path"] = "/v1/jobs/job_123/events"
    req.scope["path_params"] = {"job_id": "job_123"}
    facts = request_facts(req, "job_events")
    assert facts.attributes() == {
        "http.request.method": "POST",
        "http.route": "/v1/jobs/{job_id}/events",
        "url.path": "/v1/jobs/job_123/events",
        "url.scheme": "https",
        "server.address": "cirrus.example.com",
        "server.port": 443,
        "user_agent.original": "OpenAI/Python 1.99",
        "cirrus.function": "job_events",
    }
