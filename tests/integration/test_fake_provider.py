"""The fake OpenAI-compatible provider over real HTTP.

Wire shapes are checked against OpenAI's OpenAPI spec; the clients are httpx, the official
openai SDK and LiteLLM. Every test starts its own server on a free loopback port.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import json
import math
import re
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from aiohttp import web

from tests.openapi import assert_matches
from tools.fake_provider import Behaviour, create_app

ROOT = Path(__file__).resolve().parents[2]
CHAT: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there, fake model"},
    ],
}


def _tool(name: str, **properties: str) -> dict[str, Any]:
    """A strict function tool (the SDK's stream helper only accumulates strict tools)."""
    parameters = {
        "type": "object",
        "properties": {key: {"type": kind} for key, kind in properties.items()},
        "required": list(properties),
        "additionalProperties": False,
    }
    return {"type": "function", "function": {"name": name, "strict": True, "parameters": parameters}}


TOOLS: list[Any] = [_tool("get_weather", city="string", days="integer"), _tool("get_time", tz="string")]
SCRIPTED_CALLS = [
    {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}},
    {"name": "get_time", "arguments": {"tz": "Europe/Paris"}},
]


# --- OpenAPI validation -------------------------------------------------------------------
Conforms = Callable[[str, Any], None]


@pytest.fixture(scope="module")
def conforms() -> Conforms:
    """`conforms("CreateChatCompletionResponse", body)` validates against OpenAI's vendored schemas."""
    return assert_matches


def test_spec_validator_rejects_bad_shapes(conforms: Conforms) -> None:
    """Guard against a validator that accepts everything."""
    good = {"error": {"message": "m", "type": "t", "param": None, "code": None}}
    conforms("ErrorResponse", good)
    with pytest.raises(AssertionError):
        conforms("ErrorResponse", {"error": {**good["error"], "code": 5}})
    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": []}
    conforms("CreateChatCompletionStreamResponse", {**chunk, "usage": None})
    with pytest.raises(AssertionError):
        conforms("CreateChatCompletionStreamResponse", {**chunk, "object": "chat.completion"})


# --- servers and clients ------------------------------------------------------------------


@asynccontextmanager
async def serving(default: Behaviour | None = None) -> AsyncIterator[str]:
    """Run a fake provider on a free loopback port; yields its base URL."""
    runner = web.AppRunner(create_app(default), access_log=None, shutdown_timeout=1)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with serving() as base:
        yield base


@pytest.fixture
async def http(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        yield client


@pytest.fixture
async def sdk(url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="fake", max_retries=0, timeout=5)
    yield client
    await client.close()


async def chat(http: httpx.AsyncClient, path: str = "/v1/chat/completions", **fields: Any) -> httpx.Response:
    return await http.post(path, json={**CHAT, **fields})


async def enqueue(
    http: httpx.AsyncClient, times: int = 1, model: str | None = None, **behaviour: Any
) -> None:
    body = {"behaviour": behaviour, "times": times, "model": model}
    response = await http.post("/_control/enqueue", json=body)
    assert response.status_code == 200, response.text


async def request_log(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await http.get("/_control/requests")
    response.raise_for_status()
    return response.json()


def content(response: httpx.Response, index: int = 0) -> str:
    return response.json()["choices"][index]["message"]["content"]


def sse_payloads(raw: str) -> list[str]:
    """The `data:` payloads of an SSE body, checking the framing is exactly `data: ...\\n\\n`."""
    assert raw.endswith("\n\n")
    frames = raw[:-2].split("\n\n")
    assert all(frame.startswith("data: ") and "\n" not in frame for frame in frames), raw
    return [frame.removeprefix("data: ") for frame in frames]


async def stream_chunks(
    http: httpx.AsyncClient, path: str = "/v1/chat/completions", **fields: Any
) -> list[Any]:
    """POST with stream=true; the decoded chunks, after checking the stream ends with [DONE]."""
    response = await http.post(path, json={**CHAT, "stream": True, **fields})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/event-stream"
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]


# --- chat completions ---------------------------------------------------------------------


async def test_chat_completion_matches_spec(http: httpx.AsyncClient, conforms: Conforms) -> None:
    response = await chat(http)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    conforms("CreateChatCompletionResponse", body)
    assert re.fullmatch(r"chatcmpl-[0-9a-f]+", body["id"])
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini"
    assert body["system_fingerprint"]
    assert abs(body["created"] - time.time()) < 60
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop" and choice["logprobs"] is None
    message = choice["message"]
    assert message["role"] == "assistant" and message["refusal"] is None
    assert message["content"].startswith("Fake reply to: Hello there, fake model ")
    assert len(message["content"].split()) == 24
    # "Be brief." + "Hello there, fake model" = 6 words in, 24 words out.
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 24, "total_tokens": 30}


async def test_same_body_gives_same_reply(http: httpx.AsyncClient) -> None:
    first = content(await chat(http, seed=1))
    assert content(await chat(http, seed=1)) == first
    # The text depends on model, messages and seed only, not on e.g. `user` or `stream`.
    assert content(await chat(http, seed=1, stream=False, user="someone")) == first
    other_seed = content(await chat(http, seed=2))
    assert other_seed != first and other_seed.startswith("Fake reply to: Hello there")
    other_prompt = content(await chat(http, messages=[{"role": "user", "content": "Something else"}]))
    assert other_prompt.startswith("Fake reply to: Something else ")


async def test_stream_is_incremental_and_matches_spec(http: httpx.AsyncClient, conforms: Conforms) -> None:
    reply = "one two three four five six"
    await enqueue(http, reply=reply, chunk_delay_ms=40)
    payloads: list[str] = []
    arrivals: list[float] = []
    async with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        async for line in response.aiter_lines():
            if not line:
                continue
            assert line.startswith("data: ")
            payloads.append(line.removeprefix("data: "))
            arrivals.append(time.monotonic())
            if len(payloads) == 1:
                [record] = await request_log(http)
                assert record["stream"] is True and record["streaming"] is True
                assert record["first_byte_at"] is not None and record["finished_at"] is None
    assert payloads[-1] == "[DONE]"
    assert arrivals[-2] - arrivals[0] >= 0.15  # 8 chunks 40 ms apart, not one buffered write
    chunks = [json.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        conforms("CreateChatCompletionStreamResponse", chunk)
        assert "usage" not in chunk
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == reply
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 7 + ["stop"]
    assert chunks[-1]["choices"][0]["delta"] == {}
    [record] = await request_log(http)
    assert record["streaming"] is False
    assert record["received_at"] <= record["first_byte_at"] <= record["finished_at"]


async def test_stream_include_usage(http: httpx.AsyncClient, conforms: Conforms) -> None:
    chunks = await stream_chunks(http, stream_options={"include_usage": True})
    for chunk in chunks:
        conforms("CreateChatCompletionStreamResponse", chunk)
    *content_chunks, last = chunks
    assert all(c["usage"] is None and len(c["choices"]) == 1 for c in content_chunks)
    assert last["choices"] == []
    assert last["usage"] == (await chat(http)).json()["usage"]


async def test_default_behaviour_sets_tokens_per_chunk() -> None:
    default = Behaviour(reply="a b c d e f g", tokens_per_chunk=3)
    async with serving(default) as base, httpx.AsyncClient(base_url=base) as http:
        chunks = await stream_chunks(http)
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "a b c", " d e f", " g", None]


async def test_n_choices(http: httpx.AsyncClient, conforms: Conforms) -> None:
    body = (await chat(http, n=3)).json()
    conforms("CreateChatCompletionResponse", body)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in body["choices"]]
    assert len(set(texts)) == 3 and texts[0] == content(await chat(http))
    assert body["usage"]["completion_tokens"] == 72

    chunks = await stream_chunks(http, n=3)
    streamed = ["", "", ""]
    finished = []
    for chunk in chunks:
        conforms("CreateChatCompletionStreamResponse", chunk)
        [choice] = chunk["choices"]
        streamed[choice["index"]] += choice["delta"].get("content") or ""
        if choice["finish_reason"]:
            finished.append((choice["index"], choice["finish_reason"]))
    assert streamed == texts
    assert sorted(finished) == [(0, "stop"), (1, "stop"), (2, "stop")]


async def test_max_tokens_truncates_with_finish_reason_length(http: httpx.AsyncClient) -> None:
    full = content(await chat(http))
    body = (await chat(http, max_tokens=5)).json()
    assert body["choices"][0]["message"]["content"] == " ".join(full.split()[:5])
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5
    body = (await chat(http, max_completion_tokens=3)).json()
    assert body["choices"][0]["message"]["content"] == " ".join(full.split()[:3])
    assert body["choices"][0]["finish_reason"] == "length"
    assert (await chat(http, max_tokens=100)).json()["choices"][0]["finish_reason"] == "stop"

    chunks = await stream_chunks(http, max_tokens=4)
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == " ".join(full.split()[:4])
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_stop_sequences(http: httpx.AsyncClient) -> None:
    await enqueue(http, reply="alpha beta. gamma delta", times=2)
    body = (await chat(http, stop=["zzz", "."])).json()
    assert body["choices"][0]["message"]["content"] == "alpha beta"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert content(await chat(http, stop="gamma")) == "alpha beta. "


async def test_json_response_formats(http: httpx.AsyncClient) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 18},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "kind": {"enum": ["a", "b"]},
            "note": {"type": "string"},
        },
        "required": ["name", "age", "tags", "kind"],
        "additionalProperties": False,
    }
    json_schema = {"name": "person", "schema": schema, "strict": True}
    response_format = {"type": "json_schema", "json_schema": json_schema}
    instance = json.loads(content(await chat(http, response_format=response_format)))
    jsonschema.validate(instance, schema)
    assert instance == {"name": "fake", "age": 18, "tags": ["fake"], "kind": "a"}

    reply = json.loads(content(await chat(http, response_format={"type": "json_object"})))
    assert reply == {"reply": content(await chat(http))}


# --- tool calls ---------------------------------------------------------------------------


async def test_tool_calls_json(http: httpx.AsyncClient, sdk: openai.AsyncOpenAI, conforms: Conforms) -> None:
    await enqueue(http, tool_calls=SCRIPTED_CALLS, times=2)
    body = (await chat(http, tools=TOOLS)).json()
    conforms("CreateChatCompletionResponse", body)
    [choice] = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None and message["role"] == "assistant"
    calls = message["tool_calls"]
    assert [c["type"] for c in calls] == ["function", "function"]
    assert all(c["id"].startswith("call_") for c in calls) and len({c["id"] for c in calls}) == 2
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        (s["name"], s["arguments"]) for s in SCRIPTED_CALLS
    ]

    completion = await sdk.chat.completions.create(**CHAT, tools=TOOLS)
    sdk_calls = completion.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in sdk_calls] == [
        (s["name"], s["arguments"]) for s in SCRIPTED_CALLS
    ]


async def test_tool_calls_streamed(
    http: httpx.AsyncClient, sdk: openai.AsyncOpenAI, conforms: Conforms
) -> None:
    await enqueue(http, tool_calls=SCRIPTED_CALLS, times=2)
    chunks = await stream_chunks(http, tools=TOOLS)
    for chunk in chunks:
        conforms("CreateChatCompletionStreamResponse", chunk)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant" and deltas[0]["content"] is None
    heads = [d["tool_calls"][0] for d in deltas if "id" in d.get("tool_calls", [{}])[0]]
    assert [(h["index"], h["type"], h["function"]) for h in heads] == [
        (0, "function", {"name": "get_weather", "arguments": ""}),
        (1, "function", {"name": "get_time", "arguments": ""}),
    ]
    fragments = [d["tool_calls"][0] for d in deltas if d.get("tool_calls") and "id" not in d["tool_calls"][0]]
    assert len(fragments) > 2 and all(set(f) == {"index", "function"} for f in fragments)
    last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}
    assert chunks[-1]["choices"][0] == last

    async with sdk.chat.completions.stream(**CHAT, tools=TOOLS) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    calls = final.choices[0].message.tool_calls or []
    assert [(c.function.name, c.function.parsed_arguments) for c in calls] == [
        (s["name"], s["arguments"]) for s in SCRIPTED_CALLS
    ]


async def test_forced_tool_choice_calls_with_schema_example(http: httpx.AsyncClient) -> None:
    tools = [
        *TOOLS,
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["id", "tags"],
                },
            },
        },
    ]
    forced = {"type": "function", "function": {"name": "lookup"}}
    message = (await chat(http, tools=tools, tool_choice=forced)).json()["choices"][0]["message"]
    [call] = message["tool_calls"]
    assert call["function"]["name"] == "lookup"
    assert json.loads(call["function"]["arguments"]) == {"id": 0, "tags": []}
    required = (await chat(http, tools=tools, tool_choice="required")).json()["choices"][0]["message"]
    assert required["tool_calls"][0]["function"]["name"] == "get_weather"
    assert content(await chat(http, tools=tools, tool_choice="auto")).startswith("Fake reply to:")


# --- faults -------------------------------------------------------------------------------


async def test_rate_limit_with_retry_after(
    http: httpx.AsyncClient, sdk: openai.AsyncOpenAI, conforms: Conforms
) -> None:
    await enqueue(http, fault="429", retry_after=2, times=2)
    response = await chat(http)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    conforms("ErrorResponse", response.json())
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError):
        await sdk.chat.completions.create(**CHAT)


@pytest.mark.parametrize(
    ("behaviour", "status", "retry_after"),
    [
        ({"fault": "500"}, 500, None),
        ({"fault": 503, "retry_after": 1.5}, 503, "1.5"),
        ({"status": 418, "retry_after": 3}, 418, None),  # Retry-After only with 429/503
        ({"status": 401}, 401, None),
    ],
)
async def test_error_statuses(
    http: httpx.AsyncClient,
    conforms: Conforms,
    behaviour: dict[str, Any],
    status: int,
    retry_after: str | None,
) -> None:
    await enqueue(http, **behaviour)
    response = await chat(http, stream=True)  # errors come before a stream starts, as JSON
    assert response.status_code == status
    assert response.headers.get("retry-after") == retry_after
    conforms("ErrorResponse", response.json())
    expected_type = "server_error" if status >= 500 else "invalid_request_error"
    assert response.json()["error"]["type"] == expected_type


async def test_reset_drops_the_connection(http: httpx.AsyncClient, sdk: openai.AsyncOpenAI) -> None:
    await enqueue(http, fault="reset", times=2)
    with pytest.raises(httpx.TransportError):
        await chat(http)
    with pytest.raises(openai.APIConnectionError):
        await sdk.chat.completions.create(**CHAT)
    assert [r["status"] for r in await request_log(http)] == [None, None]
    assert (await chat(http)).status_code == 200


async def test_timeout_never_answers(http: httpx.AsyncClient, url: str) -> None:
    await enqueue(http, fault="timeout", times=2)
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await http.post("/v1/chat/completions", json=CHAT, timeout=0.2)
    assert time.monotonic() - started < 2
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="fake", max_retries=0, timeout=0.2) as sdk:
        with pytest.raises(openai.APITimeoutError):
            await sdk.chat.completions.create(**CHAT)
    # The server notices the client gave up and stops waiting.
    for _ in range(40):
        log = await request_log(http)
        if all(r["finished_at"] for r in log):
            break
        await asyncio.sleep(0.05)
    assert [(r["status"], bool(r["finished_at"])) for r in log] == [(None, True), (None, True)]


async def test_cut_ends_stream_without_done(http: httpx.AsyncClient) -> None:
    await enqueue(http, fault="cut", cut_after=3, times=2)
    payloads: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with http.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line:
                    payloads.append(line.removeprefix("data: "))
    assert len(payloads) == 3 and "[DONE]" not in payloads
    with pytest.raises(httpx.TransportError):  # without streaming, cut is a reset
        await chat(http)
    [streamed, plain] = await request_log(http)
    assert streamed["status"] == 200 and streamed["finished_at"] and not streamed["streaming"]
    assert plain["status"] is None


async def test_latency_delays_the_response(http: httpx.AsyncClient) -> None:
    await enqueue(http, latency_ms=150)
    started = time.monotonic()
    assert (await chat(http)).status_code == 200
    assert time.monotonic() - started >= 0.15
    [record] = await request_log(http)
    assert record["first_byte_at"] - record["received_at"] >= 0.15


async def test_fail_first_counts_per_profile(http: httpx.AsyncClient) -> None:
    flaky = "/profile/fail_first=2,fault=503,retry_after=1/v1/chat/completions"
    assert [(await chat(http, flaky)).status_code for _ in range(4)] == [503, 503, 200, 200]
    once = "/profile/fail_first=1/v1/chat/completions"  # no fault given: fails with 500
    assert [(await chat(http, once)).status_code for _ in range(2)] == [500, 200]
    await enqueue(http, fail_first=1, fault="429", times=3)
    assert [(await chat(http)).status_code for _ in range(4)] == [429, 200, 200, 200]
    await http.post("/_control/reset")
    assert (await chat(http, flaky)).status_code == 503  # reset clears the counters


# --- behaviour selection ------------------------------------------------------------------


async def test_profile_paths(http: httpx.AsyncClient, url: str, conforms: Conforms) -> None:
    profiled = "/profile/reply=hi%20there,latency_ms=5/v1"
    assert content(await chat(http, f"{profiled}/chat/completions")) == "hi there"
    embedding = {"model": "text-embedding-3-small", "input": "x"}
    assert (await http.post(f"{profiled}/embeddings", json=embedding)).status_code == 200
    log = await request_log(http)
    decoded = "/profile/reply=hi there,latency_ms=5/v1"
    assert [r["path"] for r in log] == [f"{decoded}/chat/completions", f"{decoded}/embeddings"]
    assert log[0]["source"] == "profile:reply=hi there,latency_ms=5"

    base_url = f"{url}/profile/fault=429/v1"
    async with openai.AsyncOpenAI(base_url=base_url, api_key="fake", max_retries=0) as sdk:
        with pytest.raises(openai.RateLimitError):
            await sdk.chat.completions.create(**CHAT)

    for bad in ("nonsense", "latency_ms=-1", "tool_calls=x", "colour=blue"):
        response = await chat(http, f"/profile/{bad}/v1/chat/completions")
        assert response.status_code == 400, bad
        conforms("ErrorResponse", response.json())
        assert response.json()["error"]["param"] == "profile"


async def test_enqueue_model_filter_times_and_fifo(http: httpx.AsyncClient) -> None:
    await enqueue(http, reply="for gpt-4o", times=2, model="gpt-4o")
    await enqueue(http, reply="first")
    await enqueue(http, reply="second")
    assert (await http.get("/_control/health")).json()["queued"] == 3
    replies = [content(await chat(http, model=m)) for m in ("gpt-4o-mini", "gpt-4o", "gpt-4o", "gpt-4o")]
    assert replies == ["first", "for gpt-4o", "for gpt-4o", "second"]
    assert content(await chat(http)).startswith("Fake reply to:")
    assert (await http.get("/_control/health")).json()["queued"] == 0
    sources = [r["source"] for r in await request_log(http)]
    assert sources == ["queue:2", "queue:1", "queue:1", "queue:3", "default"]

    await enqueue(http, reply="queued")  # the queue beats a profile
    assert content(await chat(http, "/profile/reply=profiled/v1/chat/completions")) == "queued"
    assert content(await chat(http, "/profile/reply=profiled/v1/chat/completions")) == "profiled"

    bad = await http.post("/_control/enqueue", json={"behaviour": {"fault": "explode"}})
    assert bad.status_code == 400 and "fault" in bad.json()["error"]["message"]


async def test_request_log_and_reset(http: httpx.AsyncClient) -> None:
    headers = {"x-test": "42", "authorization": "Bearer fake"}
    response = await http.post("/v1/chat/completions", json=CHAT, headers=headers)
    [record] = await request_log(http)
    assert response.headers["x-request-id"] == f"req_{record['id']}"
    assert record["method"] == "POST" and record["path"] == "/v1/chat/completions"
    assert record["body"] == CHAT
    assert {k.lower(): v for k, v in record["headers"].items()}.items() >= headers.items()
    assert record["received_at"] <= record["first_byte_at"] <= record["finished_at"]
    assert record["status"] == 200 and record["source"] == "default"
    assert record["stream"] is False and record["streaming"] is False

    await enqueue(http, reply="never used")
    assert (await http.post("/_control/reset")).json() == {"status": "ok"}
    assert await request_log(http) == []
    assert (await http.get("/_control/health")).json() == {"status": "ok", "queued": 0, "requests": 0}


async def test_invalid_requests_get_openai_errors(http: httpx.AsyncClient, conforms: Conforms) -> None:
    messages = CHAT["messages"]
    cases: list[tuple[Any, str | None]] = [
        (b"{not json", None),
        ([1, 2], None),
        ({"messages": messages}, "model"),
        ({"model": "gpt-4o-mini"}, "messages"),
        ({"model": "gpt-4o-mini", "messages": []}, "messages"),
        ({**CHAT, "n": 0}, "n"),
        ({**CHAT, "max_tokens": "many"}, "max_tokens"),
    ]
    for body, param in cases:
        if isinstance(body, bytes):
            response = await http.post("/v1/chat/completions", content=body)
        else:
            response = await http.post("/v1/chat/completions", json=body)
        assert response.status_code == 400, body
        conforms("ErrorResponse", response.json())
        assert response.json()["error"]["param"] == param, body
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert (await request_log(http))[0]["body"] == "{not json"
    for method, path, status in (("GET", "/v1/nope", 404), ("GET", "/v1/chat/completions", 405)):
        response = await http.request(method, path)
        assert response.status_code == status
        conforms("ErrorResponse", response.json())


# --- other endpoints ----------------------------------------------------------------------


async def test_embeddings_float_and_base64(
    http: httpx.AsyncClient, sdk: openai.AsyncOpenAI, conforms: Conforms
) -> None:
    request: dict[str, Any] = {"model": "text-embedding-3-small", "input": ["first text", "second one here"]}
    floats = (await http.post("/v1/embeddings", json=request)).json()
    conforms("CreateEmbeddingResponse", floats)
    assert floats["model"] == "text-embedding-3-small"
    assert floats["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    vectors = [item["embedding"] for item in floats["data"]]
    assert [item["index"] for item in floats["data"]] == [0, 1]
    assert all(len(v) == 8 and math.isclose(math.hypot(*v), 1, rel_tol=1e-6) for v in vectors)
    assert vectors[0] != vectors[1]

    encoded = (await http.post("/v1/embeddings", json={**request, "encoding_format": "base64"})).json()
    decoded = [list(struct.unpack("<8f", base64.b64decode(item["embedding"]))) for item in encoded["data"]]
    assert decoded == vectors

    single = (await http.post("/v1/embeddings", json={**request, "input": "first text"})).json()
    assert single["data"][0]["embedding"] == vectors[0]
    wide = (await http.post("/v1/embeddings", json={**request, "dimensions": 16})).json()
    assert len(wide["data"][0]["embedding"]) == 16
    tokens = (await http.post("/v1/embeddings", json={**request, "input": [[1, 2, 3], [4]]})).json()
    assert len(tokens["data"]) == 2 and tokens["usage"]["prompt_tokens"] == 4
    assert (await http.post("/v1/embeddings", json={**request, "input": []})).status_code == 400

    result = await sdk.embeddings.create(**request)  # the SDK asks for base64 and decodes it
    assert [item.embedding for item in result.data] == vectors


async def test_legacy_completions(
    http: httpx.AsyncClient, sdk: openai.AsyncOpenAI, conforms: Conforms
) -> None:
    request: dict[str, Any] = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test"}
    body = (await http.post("/v1/completions", json=request)).json()
    conforms("CreateCompletionResponse", body)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    [choice] = body["choices"]
    assert choice["text"].startswith("Fake reply to: Say this is a test ")
    assert (choice["index"], choice["logprobs"], choice["finish_reason"]) == (0, None, "stop")
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 24, "total_tokens": 29}

    chunks = await stream_chunks(http, "/v1/completions", **request)
    for chunk in chunks:
        # Like OpenAI, finish_reason is null until a choice's last chunk; the schema (shared with
        # the non-streamed response) does not allow that, so check the rest of the shape.
        [streamed_choice] = chunk["choices"]
        patched = {**chunk, "choices": [{**streamed_choice, "finish_reason": "stop"}]}
        conforms("CreateCompletionResponse", patched)
        assert chunk["object"] == "text_completion" and "usage" not in chunk
    assert "".join(c["choices"][0]["text"] for c in chunks) == choice["text"]
    assert [c["choices"][0]["finish_reason"] for c in chunks[-2:]] == [None, "stop"]
    include_usage = {"include_usage": True}
    with_usage = await stream_chunks(http, "/v1/completions", **request, stream_options=include_usage)
    assert all(c["usage"] is None for c in with_usage[:-1])
    assert with_usage[-1]["choices"] == [] and with_usage[-1]["usage"] == body["usage"]

    batch = {**request, "prompt": ["a", "b"], "n": 2, "max_tokens": 3}
    two = (await http.post("/v1/completions", json=batch)).json()
    assert [(c["index"], c["finish_reason"]) for c in two["choices"]] == [(i, "length") for i in range(4)]

    completion = await sdk.completions.create(**request)
    assert completion.choices[0].text == choice["text"]


async def test_models(http: httpx.AsyncClient, sdk: openai.AsyncOpenAI, conforms: Conforms) -> None:
    body = (await http.get("/v1/models")).json()
    conforms("ListModelsResponse", body)
    ids = [m["id"] for m in body["data"]]
    assert {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "fake-model"} <= set(ids)
    assert all(m["owned_by"] == "fake-provider" and m["object"] == "model" for m in body["data"])
    assert [m.id async for m in sdk.models.list()] == ids

    model = (await http.get("/v1/models/gpt-4o")).json()
    conforms("Model", model)
    missing = await http.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve("nope")


# --- Azure OpenAI URL shapes and credentials ----------------------------------------------

API_VERSION = "2024-10-21"
AZURE_NOT_FOUND = {"error": {"code": "404", "message": "Resource not found"}}
BAD_API_KEY = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
    "valid key for an active subscription and use a correct regional API endpoint for your resource."
)
BAD_BEARER = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired."
)
NO_MODEL = {key: value for key, value in CHAT.items() if key != "model"}


def deployment_path(operation: str, deployment: str = "my-gpt", root: str = "") -> str:
    return f"{root}/openai/deployments/{deployment}/{operation}?api-version={API_VERSION}"


def azure_401(message: str) -> dict[str, Any]:
    return {"error": {"code": "401", "message": message}}


async def test_azure_deployment_chat_answers_as_the_deployment(
    http: httpx.AsyncClient, url: str, conforms: Conforms
) -> None:
    path = deployment_path("chat/completions")
    response = await http.post(path, json=NO_MODEL)
    assert response.status_code == 200, response.text
    body = response.json()
    conforms("CreateChatCompletionResponse", body)
    assert body["model"] == "my-gpt"
    assert content(response).startswith("Fake reply to: Hello there, fake model ")
    # A `model` in the body is ignored, as Azure does: the deployment is the model.
    with_model = await http.post(path, json={**CHAT, "model": "gpt-4o"})
    assert with_model.json()["model"] == "my-gpt" and content(with_model) == content(response)
    assert content(await chat(http, model="my-gpt")) == content(response)  # same as /v1 for that model

    chunks = await stream_chunks(http, path)
    for chunk in chunks:
        conforms("CreateChatCompletionStreamResponse", chunk)
    assert {c["model"] for c in chunks} == {"my-gpt"}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == content(response)

    async with openai.AsyncAzureOpenAI(
        azure_endpoint=url, api_version=API_VERSION, api_key="key", max_retries=0, timeout=5
    ) as azure:
        completion = await azure.chat.completions.create(model="my-gpt", messages=CHAT["messages"])
        assert completion.model == "my-gpt" and completion.choices[0].message.content == content(response)
        stream = await azure.chat.completions.create(model="my-gpt", messages=CHAT["messages"], stream=True)
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(parts) == content(response)

    log = await request_log(http)
    assert [r["deployment"] for r in log] == ["my-gpt", "my-gpt", None, "my-gpt", "my-gpt", "my-gpt"]
    assert [r["api_version"] for r in log] == [API_VERSION, API_VERSION, None, *[API_VERSION] * 3]
    assert log[0]["path"] == "/openai/deployments/my-gpt/chat/completions"
    assert log[0]["body"] == NO_MODEL  # logged as sent, without the model it was answered as
    assert log[3]["stream"] is True and log[4]["headers"]["api-key"] == "key"  # log[4]: the SDK


async def test_azure_deployment_completions_and_embeddings(
    http: httpx.AsyncClient, conforms: Conforms
) -> None:
    for root in ("", "/profile/latency_ms=1"):
        completion = await http.post(
            deployment_path("completions", "instruct", root), json={"prompt": "Say this is a test"}
        )
        assert completion.status_code == 200, completion.text
        body = completion.json()
        conforms("CreateCompletionResponse", body)
        assert body["model"] == "instruct"
        assert body["choices"][0]["text"].startswith("Fake reply to: Say this is a test ")
        chunks = await stream_chunks(
            http, deployment_path("completions", "instruct", root), prompt="Say this is a test"
        )
        assert {c["model"] for c in chunks} == {"instruct"}
        assert "".join(c["choices"][0]["text"] for c in chunks) == body["choices"][0]["text"]

        request = {"input": ["first text", "second one"]}
        embedded = await http.post(deployment_path("embeddings", "embedder", root), json=request)
        assert embedded.status_code == 200, embedded.text
        conforms("CreateEmbeddingResponse", embedded.json())
        assert embedded.json()["model"] == "embedder"
        plain = await http.post("/v1/embeddings", json={**request, "model": "embedder"})
        assert embedded.json()["data"] == plain.json()["data"]
    sources = [r["source"] for r in await request_log(http) if r["deployment"]]
    assert sources == ["default"] * 3 + ["profile:latency_ms=1"] * 3


async def test_azure_deployment_without_api_version_is_not_found(http: httpx.AsyncClient, url: str) -> None:
    for root in ("", "/profile/reply=hi"):
        for operation in ("chat/completions", "completions", "embeddings"):
            path = f"{root}/openai/deployments/my-gpt/{operation}"
            for query in ("", "?api-version=", "?api_version=2024-10-21"):
                response = await http.post(path + query, json=NO_MODEL)
                assert response.status_code == 404, path + query
                assert response.json() == AZURE_NOT_FOUND
    for path in ("/openai/deployments/my-gpt/nope?api-version=1", "/profile/x=1/openai/v2/chat/completions"):
        response = await http.post(path, json=CHAT)
        assert (response.status_code, response.json()) == (404, AZURE_NOT_FOUND), path
    async with openai.AsyncOpenAI(
        base_url=f"{url}/openai/deployments/my-gpt", api_key="key", max_retries=0, timeout=5
    ) as sdk:
        with pytest.raises(openai.NotFoundError):
            await sdk.chat.completions.create(**CHAT)
    record = (await request_log(http))[0]
    assert (record["status"], record["deployment"], record["api_version"]) == (404, "my-gpt", None)


async def test_azure_v1_shape(http: httpx.AsyncClient, url: str, conforms: Conforms) -> None:
    expected = content(await chat(http))
    for path in (
        "/openai/v1/chat/completions",
        f"/openai/v1/chat/completions?api-version={API_VERSION}",
        "/profile/latency_ms=1/openai/v1/chat/completions?api-version=preview",
    ):
        response = await chat(http, path)
        assert response.status_code == 200, path
        conforms("CreateChatCompletionResponse", response.json())
        assert response.json()["model"] == "gpt-4o-mini" and content(response) == expected
        chunks = await stream_chunks(http, path)
        assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == expected
    missing_model = await http.post("/openai/v1/chat/completions", json=NO_MODEL)
    assert missing_model.status_code == 400 and missing_model.json()["error"]["param"] == "model"

    completion = await http.post("/openai/v1/completions", json={"model": "m", "prompt": "hi"})
    assert completion.status_code == 200 and completion.json()["model"] == "m"
    embedding = await http.post("/openai/v1/embeddings", json={"model": "e", "input": "x"})
    assert embedding.status_code == 200 and embedding.json()["model"] == "e"

    async with openai.AsyncOpenAI(base_url=f"{url}/openai/v1", api_key="key", max_retries=0) as sdk:
        assert (await sdk.chat.completions.create(**CHAT)).choices[0].message.content == expected
        assert "gpt-4o" in [m.id async for m in sdk.models.list()]

    log = await request_log(http)
    # log[0] is the /v1 request, then a JSON and a streamed request per path.
    assert [(r["deployment"], r["api_version"]) for r in log[1:7:2]] == [
        (None, None),
        (None, API_VERSION),
        (None, "preview"),
    ]


async def test_require_api_key(http: httpx.AsyncClient, url: str, conforms: Conforms) -> None:
    root = "/profile/require_api_key=s3cret"
    path = deployment_path("chat/completions", root=root)
    assert (await http.post(path, json=NO_MODEL, headers={"api-key": "s3cret"})).status_code == 200
    for headers in ({}, {"api-key": "wrong"}, {"api-key": "S3CRET"}, {"authorization": "Bearer s3cret"}):
        for body in (NO_MODEL, {**NO_MODEL, "stream": True}):
            refused = await http.post(path, json=body, headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["content-type"].startswith("application/json")
            assert refused.json() == azure_401(BAD_API_KEY)
    # Credentials are checked before the body is looked at, as a real provider does.
    garbage = await http.post(path, content=b"{not json", headers={"api-key": "wrong"})
    assert garbage.status_code == 401

    for route in ("chat/completions", "completions", "embeddings"):  # 401s before any body check
        for prefix in ("/openai/v1", "/v1"):
            response = await http.post(f"{root}{prefix}/{route}", json={"model": "m", "input": "x"})
            assert response.status_code == 401, (prefix, route)
    plain = await chat(http, f"{root}/v1/chat/completions", stream=True)
    conforms("ErrorResponse", plain.json())
    assert plain.json()["error"]["message"] == BAD_API_KEY
    assert plain.json()["error"]["code"] == "invalid_api_key"
    keyed = await http.post(f"{root}/v1/chat/completions", json=CHAT, headers={"api-key": "s3cret"})
    assert keyed.status_code == 200
    assert (await http.get(f"{root}/v1/models", headers={"api-key": "s3cret"})).status_code == 200
    assert (await http.get(f"{root}/openai/v1/models")).status_code == 401

    endpoint = f"{url}{root}"
    for key, error in (("s3cret", None), ("nope", openai.AuthenticationError)):
        async with openai.AsyncAzureOpenAI(
            azure_endpoint=endpoint, api_version=API_VERSION, api_key=key, max_retries=0, timeout=5
        ) as azure:
            if error is None:
                completion = await azure.chat.completions.create(model="dep", messages=CHAT["messages"])
                assert completion.model == "dep"
            else:
                with pytest.raises(error):
                    await azure.embeddings.create(model="dep", input="x")


async def test_require_bearer(http: httpx.AsyncClient, url: str, conforms: Conforms) -> None:
    root = "/profile/require_bearer=tok.en-1"
    path = deployment_path("chat/completions", root=root)
    for accepted in ("Bearer tok.en-1", "bearer tok.en-1"):
        response = await http.post(path, json=NO_MODEL, headers={"authorization": accepted})
        assert response.status_code == 200, accepted
    for headers in (
        {},
        {"authorization": "Bearer other"},
        {"authorization": "tok.en-1"},
        {"api-key": "tok.en-1"},
    ):
        refused = await http.post(path, json=NO_MODEL, headers=headers)
        assert (refused.status_code, refused.json()) == (401, azure_401(BAD_BEARER)), headers
    plain = await chat(http, f"{root}/v1/chat/completions")
    assert plain.status_code == 401
    conforms("ErrorResponse", plain.json())
    assert plain.json()["error"]["message"] == BAD_BEARER

    # The openai SDK sends its api_key as a bearer token; AzureOpenAI sends azure_ad_token as one.
    async with openai.AsyncOpenAI(base_url=f"{url}{root}/v1", api_key="tok.en-1", max_retries=0) as sdk:
        assert (await sdk.chat.completions.create(**CHAT)).model == "gpt-4o-mini"
    async with openai.AsyncOpenAI(base_url=f"{url}{root}/openai/v1", api_key="wrong", max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError):
            await sdk.chat.completions.create(**CHAT)
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=f"{url}{root}", api_version=API_VERSION, azure_ad_token="tok.en-1", max_retries=0
    ) as azure:
        stream = await azure.chat.completions.create(model="dep", messages=CHAT["messages"], stream=True)
        assert {c.model async for c in stream} == {"dep"}


async def test_api_key_and_bearer_accept_either(http: httpx.AsyncClient) -> None:
    path = deployment_path("chat/completions", root="/profile/require_api_key=k1,require_bearer=t1")
    cases: list[tuple[dict[str, str], int, str | None]] = [
        ({"api-key": "k1"}, 200, None),
        ({"authorization": "Bearer t1"}, 200, None),
        ({"api-key": "wrong", "authorization": "Bearer t1"}, 200, None),
        ({"api-key": "k1", "authorization": "Bearer wrong"}, 200, None),
        ({"api-key": "t1"}, 401, BAD_API_KEY),
        ({"authorization": "Bearer k1"}, 401, BAD_BEARER),  # the message is about what was sent
        ({"api-key": "wrong", "authorization": "Bearer wrong"}, 401, BAD_API_KEY),
        ({}, 401, BAD_API_KEY),
    ]
    for headers, status, message in cases:
        response = await http.post(path, json=NO_MODEL, headers=headers)
        assert response.status_code == status, headers
        if message is not None:
            assert response.json() == azure_401(message), headers


async def test_refused_requests_use_nothing_up() -> None:
    default = Behaviour(require_bearer="t", reply="default")
    async with serving(default) as base, httpx.AsyncClient(base_url=base, timeout=5) as http:
        good = {"authorization": "Bearer t"}
        # The server default applies everywhere; the control API needs no credentials.
        assert (await http.get("/v1/models")).status_code == 401
        assert (await http.get("/_control/health")).json()["status"] == "ok"
        assert content(await http.post("/v1/chat/completions", json=CHAT, headers=good)) == "default"

        # A refused request neither runs a queued script nor counts towards fail_first.
        await enqueue(http, reply="scripted", require_api_key="k", model="dep")
        path = deployment_path("chat/completions", "dep")
        # Merged with the default, the script accepts the bearer token t or the api-key k.
        assert content(await http.post(path, json=NO_MODEL, headers=good)) == "scripted"
        assert (await http.get("/_control/health")).json()["queued"] == 0
        await enqueue(http, reply="scripted", require_api_key="k", require_bearer="other")
        assert (await http.post(path, json=NO_MODEL, headers=good)).status_code == 401
        assert (await http.get("/_control/health")).json()["queued"] == 1
        assert content(await http.post(path, json=NO_MODEL, headers={"api-key": "k"})) == "scripted"

        flaky = "/profile/fail_first=1,fault=503,latency_ms=300,require_api_key=k/v1/chat/completions"
        started = time.monotonic()
        assert [(await chat(http, flaky)).status_code for _ in range(3)] == [401] * 3
        assert time.monotonic() - started < 0.3  # refused before the latency
        statuses = [
            (await http.post(flaky, json=CHAT, headers={"api-key": "k"})).status_code for _ in range(2)
        ]
        assert statuses == [503, 200]

        log = await request_log(http)
        refused = [r for r in log if r["status"] == 401]
        assert [r["source"] for r in refused][-3:] == ["profile:" + flaky.split("/")[2]] * 3
        assert refused[1]["source"] == "queue:2"


async def test_request_log_records_azure_fields_and_headers(http: httpx.AsyncClient) -> None:
    headers = {"api-key": "k1", "authorization": "Bearer t1", "x-test": "42"}
    path = deployment_path("embeddings", "emb-dep", root="/profile/require_api_key=k1")
    assert (await http.post(path, json={"input": "x"}, headers=headers)).status_code == 200
    assert (await http.post(path, json={"input": "x"})).status_code == 401
    await http.post("/v1/embeddings", json={"model": "e", "input": "x"})
    first, refused, plain = await request_log(http)
    assert first["path"] == "/profile/require_api_key=k1/openai/deployments/emb-dep/embeddings"
    assert (first["deployment"], first["api_version"], first["status"]) == ("emb-dep", API_VERSION, 200)
    assert first["source"] == "profile:require_api_key=k1"
    assert {k.lower(): v for k, v in first["headers"].items()}.items() >= headers.items()
    assert (refused["deployment"], refused["api_version"], refused["status"]) == ("emb-dep", API_VERSION, 401)
    assert "api-key" not in {k.lower() for k in refused["headers"]}
    assert refused["source"] == "profile:require_api_key=k1" and refused["finished_at"]
    assert (plain["deployment"], plain["api_version"]) == (None, None)


# --- LiteLLM and the CLI ------------------------------------------------------------------


async def test_litellm_stream_matches_non_stream(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch on import
    litellm = importlib.import_module("litellm")  # imported here: slow (~3 s), only this test needs it

    request: dict[str, Any] = {
        "model": "openai/gpt-4o-mini",
        "api_base": f"{url}/v1",
        "api_key": "fake",
        "messages": [{"role": "user", "content": "Tell me about clouds"}],
    }
    full = await litellm.acompletion(**request)
    text = full.choices[0].message.content
    assert text.startswith("Fake reply to: Tell me about clouds")
    stream = await litellm.acompletion(**request, stream=True)
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream]
    assert "".join(parts) == text


async def test_cli_starts_and_stops_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tools.fake_provider",
        "--port",
        "0",
        "--latency-ms",
        "1",
        "--behaviour",
        "reply=from the cli",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
        match = re.fullmatch(r"fake provider listening on (http://127\.0\.0\.1:\d+)\n", line)
        assert match, line
        async with httpx.AsyncClient(base_url=match[1]) as http:
            assert (await http.get("/_control/health")).json()["status"] == "ok"
            assert content(await chat(http)) == "from the cli"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_context_window_and_omitted_usage(http: httpx.AsyncClient) -> None:
    body = {**CHAT, "messages": [{"role": "user", "content": "one two three four five six"}]}
    over = await http.post("/profile/context_window=5/v1/chat/completions", json=body)
    assert over.status_code == 400
    assert over.json()["error"]["code"] == "context_length_exceeded"
    fits = await http.post("/profile/context_window=6/v1/chat/completions", json=body)
    assert fits.status_code == 200 and "usage" in fits.json()
    bare = await http.post("/profile/omit_usage=true/v1/chat/completions", json=body)
    assert "usage" not in bare.json()


# --- Anthropic's Messages API (anthropic_api.py) --------------------------------------------

MESSAGES: dict[str, Any] = {
    "model": "claude-fake",
    "max_tokens": 100,
    "system": "Be brief.",
    "messages": [{"role": "user", "content": "Hello there, fake Claude"}],
}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def claude(url: str, key: str = "fake") -> Any:
    """The official SDK, its key in `x-api-key` as Anthropic's API takes it (with `api_key` it sends
    `Authorization: Bearer`)."""
    import anthropic

    return anthropic.AsyncAnthropic(
        base_url=url,
        default_headers={"x-api-key": key},
        max_retries=0,
        timeout=5,
        _strict_response_validation=True,
    )


def anthropic_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, data) of each event, checking the framing is exactly `event: ...\\ndata: ...\\n\\n`."""
    assert raw.endswith("\n\n")
    found = []
    for frame in raw[:-2].split("\n\n"):
        name, data = frame.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), frame
        found.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return found


async def test_anthropic_message_is_deterministic_and_sdk_shaped(url: str, http: httpx.AsyncClient) -> None:
    client = claude(url)
    first = await client.messages.create(**MESSAGES)
    again = await client.messages.create(**MESSAGES)
    assert first.content[0].text == again.content[0].text
    assert first.content[0].text.startswith("Fake reply to: Hello there, fake Claude")
    assert len(first.content[0].text.split()) == 24
    assert (first.stop_reason, first.stop_sequence, first.model) == ("end_turn", None, "claude-fake")
    assert first.usage.input_tokens == 6 and first.usage.output_tokens == 24  # words, as on /v1/chat
    assert first.id.startswith("msg_") and first.id != again.id
    (record, _) = await request_log(http)
    headers = {name.lower(): value for name, value in record["headers"].items()}
    assert record["path"] == "/v1/messages" and headers["x-api-key"] == "fake"
    assert headers["anthropic-version"]


async def test_anthropic_stream_events_in_order_and_what_the_sdk_rebuilds(
    url: str, http: httpx.AsyncClient
) -> None:
    response = await http.post("/v1/messages", json={**MESSAGES, "stream": True})
    assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
    events = anthropic_events(response.text)
    assert all(name == data["type"] for name, data in events)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-4:] == ["content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert names.count("content_block_delta") == 24  # one word per event
    assert events[-2][1]["usage"] == {"output_tokens": 24}
    complete = await claude(url).messages.create(**MESSAGES)
    async with claude(url).messages.stream(**MESSAGES) as stream:
        final = await stream.get_final_message()
    assert final.content[0].text == complete.content[0].text and final.stop_reason == "end_turn"


async def test_anthropic_tool_use_on_demand_json_and_streamed(url: str, http: httpx.AsyncClient) -> None:
    await enqueue(http, times=2, tool_calls=SCRIPTED_CALLS)
    message = await claude(url).messages.create(**MESSAGES, tools=[WEATHER_TOOL])
    assert [(b.type, b.name, b.input) for b in message.content] == [
        ("tool_use", "get_weather", {"city": "Paris", "days": 3}),
        ("tool_use", "get_time", {"tz": "Europe/Paris"}),
    ]
    assert message.stop_reason == "tool_use" and all(b.id.startswith("toolu_") for b in message.content)
    async with claude(url).messages.stream(**MESSAGES, tools=[WEATHER_TOOL]) as stream:
        final = await stream.get_final_message()
    assert [(b.name, b.input) for b in final.content] == [(b.name, b.input) for b in message.content]
    forced = await claude(url).messages.create(
        **MESSAGES, tools=[WEATHER_TOOL], tool_choice={"type": "tool", "name": "get_weather"}
    )
    assert [(b.name, b.input) for b in forced.content] == [("get_weather", {"city": "fake"})]


async def test_anthropic_max_tokens_and_stop_sequences(url: str) -> None:
    short = await claude(url).messages.create(**{**MESSAGES, "max_tokens": 3})
    assert (short.content[0].text, short.stop_reason) == ("Fake reply to:", "max_tokens")
    stopped = await claude(url).messages.create(**MESSAGES, stop_sequences=["fake Claude", "Hello"])
    assert (stopped.content[0].text, stopped.stop_reason, stopped.stop_sequence) == (
        "Fake reply to: ",
        "stop_sequence",
        "Hello",
    )


@pytest.mark.parametrize(
    ("behaviour", "status", "kind"),
    [
        ({"status": 400, "error_message": "messages: bad"}, 400, "invalid_request_error"),
        ({"fault": "429", "retry_after": 3}, 429, "rate_limit_error"),
        ({"status": 529}, 529, "overloaded_error"),
        ({"fault": "500"}, 500, "api_error"),
        ({"context_window": 3}, 400, "invalid_request_error"),
    ],
)
async def test_anthropic_errors_in_anthropics_envelope(
    http: httpx.AsyncClient, behaviour: dict[str, Any], status: int, kind: str
) -> None:
    await enqueue(http, **behaviour)
    response = await http.post("/v1/messages", json=MESSAGES)
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"]
    if status == 429:
        assert response.headers["retry-after"] == "3"
    if "context_window" in behaviour:
        assert body["error"]["message"] == "prompt is too long: 6 tokens > 3 maximum"


async def test_anthropic_invalid_requests(http: httpx.AsyncClient) -> None:
    missing = await http.post("/v1/messages", json={k: v for k, v in MESSAGES.items() if k != "max_tokens"})
    assert missing.status_code == 400
    assert missing.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    garbage = await http.post("/v1/messages", content=b"{nope")
    assert garbage.status_code == 400 and garbage.json()["error"]["type"] == "invalid_request_error"


async def test_anthropic_x_api_key_is_checked_when_required(url: str, http: httpx.AsyncClient) -> None:
    root = "/profile/require_api_key=s3cret,require_bearer=t0ken"
    for headers, status in [
        ({}, 401),
        ({"x-api-key": "wrong"}, 401),
        ({"api-key": "s3cret"}, 401),  # Azure's header is not Anthropic's
        ({"x-api-key": "s3cret"}, 200),
        ({"authorization": "Bearer t0ken"}, 200),
    ]:
        response = await http.post(f"{root}/v1/messages", json=MESSAGES, headers=headers)
        assert response.status_code == status, headers
        if status == 401:
            assert response.json()["error"]["type"] == "authentication_error"
    assert (await claude(f"{url}{root}", key="s3cret").messages.create(**MESSAGES)).content


async def test_anthropic_stream_cut_drops_the_connection(http: httpx.AsyncClient) -> None:
    await enqueue(http, fault="cut", cut_after=3)
    with pytest.raises(httpx.RemoteProtocolError):
        await http.post("/v1/messages", json={**MESSAGES, "stream": True})
    await enqueue(http, fault="cut", cut_after=3, chunk_delay_ms=5)
    received = b""
    async with http.stream("POST", "/v1/messages", json={**MESSAGES, "stream": True}) as response:
        with pytest.raises(httpx.RemoteProtocolError):
            async for block in response.aiter_bytes():
                received += block
    assert [name for name, _ in anthropic_events(received.decode())] == [
        "message_start",
        "content_block_start",
        "ping",
    ]


# --- moderations, images, audio and rerank -------------------------------------------------


def _wav(seconds: float, rate: int = 16_000) -> bytes:
    """A silent PCM WAV of `seconds`, built with the standard library (not the fake's own code)."""
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * round(seconds * rate))
    return buffer.getvalue()


async def test_moderations_flag_by_keyword_and_match_spec(
    http: httpx.AsyncClient, sdk: openai.AsyncOpenAI, conforms: Conforms
) -> None:
    response = await http.post(
        "/v1/moderations",
        json={"model": "omni-moderation-latest", "input": ["I will kill them", "a nice day"]},
    )
    assert response.status_code == 200
    body = response.json()
    conforms("CreateModerationResponse", body)
    flagged, calm = body["results"]
    assert (
        flagged["flagged"]
        and flagged["categories"]["violence"]
        and flagged["category_scores"]["violence"] > 0.5
    )
    assert not calm["flagged"] and all(score < 0.01 for score in calm["category_scores"].values())
    assert (
        await http.post("/v1/moderations", json={"input": ["I will kill them", "a nice day"]})
    ).json() == body
    parts = await sdk.moderations.create(
        model="omni-moderation-latest",
        input=[
            {"type": "text", "text": "gore everywhere"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        ],
    )
    [result] = parts.results  # content parts together are one input
    assert result.categories.violence_graphic and result.category_applied_input_types.violence == [
        "text",
        "image",
    ]
    assert result.category_applied_input_types.hate == ["text"]
    missing = await http.post("/v1/moderations", json={"model": "omni-moderation-latest"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input"


async def test_images_b64_json_and_url(
    http: httpx.AsyncClient, sdk: openai.AsyncOpenAI, conforms: Conforms
) -> None:
    encoded = await sdk.images.generate(model="dall-e-3", prompt="an otter", response_format="b64_json")
    [image] = encoded.data
    png = base64.b64decode(image.b64_json or "")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and image.revised_prompt == "an otter"
    assert image.url is None
    linked = await http.post(
        "/v1/images/generations", json={"model": "dall-e-2", "prompt": "an otter", "n": 2}
    )
    body = linked.json()
    conforms("ImagesResponse", body)
    urls = [item["url"] for item in body["data"]]
    assert len(set(urls)) == 2 and all(
        u.startswith(str(http.base_url).rstrip("/") + "/files/images/") for u in urls
    )
    fetched = await http.get(urls[0])
    assert fetched.headers["content-type"] == "image/png" and fetched.content.startswith(b"\x89PNG")
    again = (
        await http.post("/v1/images/generations", json={"model": "dall-e-2", "prompt": "an otter", "n": 2})
    ).json()
    assert [i["url"] for i in again["data"]] == urls  # deterministic
    token_billed = (
        await http.post("/v1/images/generations", json={"model": "gpt-image-1", "prompt": "x y"})
    ).json()
    conforms("ImagesResponse", token_billed)
    assert "b64_json" in token_billed["data"][0] and token_billed["usage"]["input_tokens"] == 2
    bad = await http.post("/v1/images/generations", json={"model": "dall-e-2", "prompt": "x", "size": "huge"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "size"


async def test_transcriptions_read_the_upload_in_every_format(
    http: httpx.AsyncClient, sdk: openai.AsyncOpenAI, conforms: Conforms
) -> None:
    clip = _wav(1.5)
    upload = ("clip.wav", clip, "audio/wav")
    plain = await http.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"file": upload})
    assert plain.status_code == 200, plain.text
    body = plain.json()
    conforms("CreateTranscriptionResponseJson", body)
    assert body["text"].startswith(f"Fake transcript of {len(clip)} bytes: ")
    assert body["usage"] == {"type": "duration", "seconds": 2}  # 1.5 s, rounded up as OpenAI bills
    verbose = await sdk.audio.transcriptions.create(
        model="whisper-1",
        file=upload,
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    conforms("CreateTranscriptionResponseVerboseJson", verbose.model_dump(exclude_none=True))
    assert verbose.duration == 1.5 and verbose.text == body["text"] and verbose.words and verbose.segments
    text = await http.post(
        "/v1/audio/transcriptions",
        data={"model": "whisper-1", "response_format": "text"},
        files={"file": upload},
    )
    assert text.headers["content-type"].startswith("text/plain") and text.text == body["text"] + "\n"
    srt = await sdk.audio.transcriptions.create(model="whisper-1", file=upload, response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,500\n")
    tokens = await sdk.audio.transcriptions.create(model="gpt-4o-transcribe", file=upload)
    assert tokens.usage is not None and tokens.usage.type == "tokens"
    [*_, record] = await request_log(http)
    assert record["body"]["file"] == {
        "filename": "clip.wav",
        "content_type": "audio/wav",
        "size": len(clip),
        "sha256": hashlib.sha256(clip).hexdigest(),
        "seconds": 1.5,
    }
    mp3 = await http.post(
        "/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"file": ("a.mp3", b"\xff" * 64_000)}
    )
    assert mp3.json()["usage"]["seconds"] == 2  # not a WAV: 32,000 bytes a second
    no_file = await http.post("/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"x": ("", b"")})
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    not_form = await http.post("/v1/audio/transcriptions", json={"model": "whisper-1"})
    assert not_form.status_code == 400


async def test_speech_is_a_streamed_wav(http: httpx.AsyncClient, sdk: openai.AsyncOpenAI) -> None:
    import io
    import wave

    spoken = await sdk.audio.speech.create(
        model="tts-1", voice="alloy", input="Hello there", response_format="wav"
    )
    assert spoken.response.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(spoken.content)) as audio:
        assert (audio.getnchannels(), audio.getsampwidth(), audio.getframerate()) == (1, 2, 24_000)
        assert audio.getnframes() / audio.getframerate() == 0.25
    again = await http.post(
        "/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "Hello there"}
    )
    assert again.content == spoken.content  # deterministic; the fake answers mp3 requests with WAV
    raw = await http.post(
        "/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": "Hello there", "response_format": "pcm"},
    )
    assert raw.headers["content-type"] == "audio/pcm" and spoken.content.endswith(raw.content)
    with pytest.raises(httpx.RemoteProtocolError):  # cut after one 4 KiB chunk: never a clean short body
        await http.post(
            "/profile/fault=cut,cut_after=1/v1/audio/speech",
            json={"model": "tts-1", "voice": "alloy", "input": "Hello there"},
        )
    bad = await http.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": ""})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"


async def test_rerank_orders_by_overlap(http: httpx.AsyncClient) -> None:
    documents = ["cats sleep all day", "otters swim in rivers", "rivers run to the sea"]
    response = await http.post(
        "/v1/rerank",
        json={"model": "rr", "query": "do otters swim in rivers", "documents": documents, "top_n": 2},
    )
    body = response.json()
    assert [r["index"] for r in body["results"]] == [1, 2]
    assert body["results"][0]["relevance_score"] > body["results"][1]["relevance_score"]
    assert body["results"][0]["document"] == {"text": documents[1]}
    assert body["meta"] == {"billed_units": {"search_units": 1}} and body["usage"]["total_tokens"] == 18
    bare = await http.post(
        "/v1/rerank",
        json={"model": "rr", "query": "otters", "documents": [{"text": "otters"}], "return_documents": False},
    )
    assert bare.json()["results"] == [
        {"index": 0, "relevance_score": bare.json()["results"][0]["relevance_score"]}
    ]
    empty = await http.post("/v1/rerank", json={"model": "rr", "query": "q", "documents": []})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "documents"


async def test_surface_routes_honour_profiles_faults_and_azure_paths(http: httpx.AsyncClient) -> None:
    limited = await http.post(
        "/profile/fault=429,retry_after=2/v1/rerank", json={"model": "m", "query": "q", "documents": ["d"]}
    )
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    await enqueue(http, status=500)
    failed = await http.post("/v1/images/generations", json={"model": "dall-e-2", "prompt": "x"})
    assert failed.status_code == 500
    azure = await http.post(
        "/openai/deployments/my-whisper/audio/transcriptions?api-version=2024-10-21",
        files={"file": ("clip.wav", _wav(0.5), "audio/wav")},
    )
    assert azure.status_code == 200, azure.text  # the deployment is the model, as on Azure
    [*_, record] = await request_log(http)
    assert record["deployment"] == "my-whisper" and record["body"]["file"]["seconds"] == 0.5
    keyed = await http.post(
        "/profile/require_api_key=k1/openai/deployments/tts/audio/speech?api-version=1",
        json={"voice": "alloy", "input": "hi"},
    )
    assert keyed.status_code == 401 and keyed.json()["error"]["code"] == "401"
