"""The fake provider's Anthropic side: `POST /v1/messages` (also under `/profile/<spec>`), JSON or
Anthropic's server-sent events, answered as deterministically as the OpenAI routes.

What it does with a request:
    reply        "Fake reply to: <first 60 chars of the last user text>" padded to 24 words (the
                 same generator as chat), or the behaviour's `reply`; `max_tokens` caps the words
                 (stop_reason `max_tokens`), the first `stop_sequences` hit cuts it (stop_reason
                 `stop_sequence`, `stop_sequence` names it)
    tool_use     the behaviour's scripted `tool_calls` (`/_control/enqueue`) as tool_use blocks
                 (stop_reason `tool_use`); else a tool `tool_choice` forces (`{"type": "tool"}`,
                 or `{"type": "any"}`: the first tool), its input an example of its `input_schema`
    usage        input_tokens: the words of the system prompt and every text; output_tokens: the
                 words of the reply (or of the tool names and inputs)
    stream       message_start, then per block content_block_start, (ping after the first),
                 content_block_delta (`text_delta` of `tokens_per_chunk` words, or
                 `input_json_delta`), content_block_stop; message_delta; message_stop. Events are
                 `chunk_delay_ms` apart; fault `cut` drops the connection after `cut_after` events
    errors       Anthropic's envelope `{"type": "error", "error": {"type", "message"}}`, its type by
                 status (529 is `overloaded_error`); `context_window=N` refuses prompts over N words
                 with a 400 "prompt is too long"
    credentials  with `require_api_key`, the header `x-api-key` must carry it (with
                 `require_bearer`, `Authorization: Bearer` is accepted too), else a 401
                 `authentication_error` before anything else is used up

Behaviours are chosen exactly as for the OpenAI routes (queued script, profile, default).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .app import _SSE_HEADERS, Exchange, _bearer_token, _fault, _profile
from .behaviour import Behaviour
from .generate import count_words, default_reply, digest, example_for_schema, split_pieces
from .state import STATE

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_MESSAGES = {
    429: "Number of requests has exceeded your rate limit (fake provider).",
    500: "Internal server error (fake provider).",
    503: "Service unavailable (fake provider).",
    529: "Overloaded (fake provider).",
}


class AnthropicError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """Anthropic's error envelope for an HTTP status."""
    kind = _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    text = message or _MESSAGES.get(status, f"Fake provider error {status}.")
    return {"type": "error", "error": {"type": kind, "message": text}}


class MessagesRequest(BaseModel):
    # Unknown fields are accepted and ignored, like a lenient provider.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool | None = None
    stop_sequences: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None


def add_routes(app: web.Application) -> None:
    for root in ("", "/profile/{profile}"):
        app.router.add_post(root + "/v1/messages", _messages)


async def _messages(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    raw = await request.read()
    body: Any = None
    with_json = True
    if raw:
        try:
            body = json.loads(raw)
        except ValueError:
            body, with_json = raw.decode(errors="replace"), False
    record = state.record(request, body)
    exchange = Exchange(request, state, record)
    try:
        return await _serve(exchange, body, with_json)
    except AnthropicError as exc:
        return await exchange.send_json(error_body(exc.status, exc.message), exc.status)
    finally:
        record.streaming = False
        record.finished_at = time.time()


async def _serve(exchange: Exchange, body: Any, with_json: bool) -> web.StreamResponse:
    profile = _profile(exchange.request)
    model = body.get("model") if isinstance(body, dict) else None
    behaviour, source = exchange.state.peek(model if isinstance(model, str) else None, profile)
    _authenticate(exchange, behaviour, source)
    if not with_json or not isinstance(body, dict):
        raise AnthropicError(400, "The request body is not valid JSON.")
    try:
        req = MessagesRequest.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise AnthropicError(400, f"{where}: {error['msg']}") from None
    exchange.record.stream = bool(req.stream)
    exchange.behaviour, exchange.record.source = exchange.state.choose(req.model, profile)
    behaviour = exchange.behaviour
    if not await exchange.pause(behaviour.latency_ms / 1000):
        exchange.drop(reset=False)
        return web.Response()
    # 529 is Anthropic's overloaded status, retried with Retry-After like 429 and 503.
    failure = await _fault(exchange, bool(req.stream), envelope=error_body, retry_statuses=(429, 503, 529))
    if failure is not None:
        return failure
    prompt_tokens = count_words(_prompt_text(req))
    if behaviour.context_window is not None and prompt_tokens > behaviour.context_window:
        message = f"prompt is too long: {prompt_tokens} tokens > {behaviour.context_window} maximum"
        raise AnthropicError(400, message)
    message = answer(req, behaviour, exchange.record.id, prompt_tokens)
    if req.stream:
        return await _send_events(exchange, stream_events(message, behaviour.tokens_per_chunk))
    return await exchange.send_json(message)


def _authenticate(exchange: Exchange, behaviour: Behaviour, source: str) -> None:
    key, token = behaviour.require_api_key, behaviour.require_bearer
    if key is None and token is None:
        return
    headers = exchange.request.headers
    sent_key, sent_token = headers.get("x-api-key"), _bearer_token(headers.get("Authorization"))
    if (key is not None and _matches(sent_key, key)) or (token is not None and _matches(sent_token, token)):
        return
    exchange.record.source = source
    raise AnthropicError(401, "invalid x-api-key")


def _matches(sent: str | None, expected: str) -> bool:
    return sent is not None and secrets.compare_digest(sent.encode(), expected.encode())


# --- the answer ---------------------------------------------------------------------------


def _texts(content: Any) -> list[str]:
    """The texts of a message's content, tool results included."""
    if isinstance(content, str):
        return [content]
    found: list[str] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            found.append(block["text"])
        elif block.get("type") == "tool_result":
            found.extend(_texts(block.get("content")))
    return found


def _prompt_text(req: MessagesRequest) -> str:
    parts = _texts(req.system) if req.system is not None else []
    for message in req.messages:
        parts.extend(_texts(message.get("content")))
    return " ".join(parts)


def answer(req: MessagesRequest, behaviour: Behaviour, request_id: int, prompt_tokens: int) -> dict[str, Any]:
    """The whole Message for a request; deterministic in model, system, messages and behaviour."""
    key = digest(req.model, req.system, req.messages)
    calls = _tool_calls(req, behaviour)
    content: list[dict[str, Any]]
    stop_sequence = None
    if calls:
        content = [
            {"type": "tool_use", "id": f"toolu_{digest(key, i)[:24]}", "name": name, "input": arguments}
            for i, (name, arguments) in enumerate(calls)
        ]
        stop_reason, output = "tool_use", sum(count_words(f"{n} {json.dumps(a)}") for n, a in calls)
    else:
        users = [m for m in req.messages if m.get("role") == "user"]
        last = " ".join(_texts(users[-1].get("content"))) if users else ""
        text = behaviour.reply if behaviour.reply is not None else default_reply(last, key, 0)
        text, stop_reason, stop_sequence = _cut(text, req.stop_sequences or [], req.max_tokens)
        content = [{"type": "text", "text": text}] if text else []
        output = count_words(text)
    return {
        "id": f"msg_{digest(key, request_id)[:24]}",
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": prompt_tokens,
            "output_tokens": output,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _cut(text: str, stops: list[str], max_words: int) -> tuple[str, str, str | None]:
    hits = sorted((text.find(s), s) for s in stops if s and s in text)
    stop_sequence = None
    if hits:
        text, stop_sequence = text[: hits[0][0]], hits[0][1]
    pieces = split_pieces(text)
    if len(pieces) > max_words:
        return "".join(pieces[:max_words]), "max_tokens", None
    return text, "stop_sequence" if stop_sequence else "end_turn", stop_sequence


def _tool_calls(req: MessagesRequest, behaviour: Behaviour) -> list[tuple[str, dict[str, Any]]]:
    if behaviour.tool_calls:
        return [(call.name, call.arguments) for call in behaviour.tool_calls]
    tools, choice = req.tools or [], req.tool_choice or {}
    if choice.get("type") == "any" and tools:
        forced = tools[0]
    elif choice.get("type") == "tool":
        forced = next((t for t in tools if t.get("name") == choice.get("name")), {"name": choice.get("name")})
    else:
        return []
    example = example_for_schema(forced.get("input_schema") or {"type": "object"})
    return [(str(forced.get("name")), example if isinstance(example, dict) else {})]


# --- streaming ----------------------------------------------------------------------------


def stream_events(message: dict[str, Any], tokens_per_chunk: int) -> Iterator[dict[str, Any]]:
    """Anthropic's events for `message`, in Anthropic's order."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**usage, "output_tokens": 1}
    yield {"type": "message_start", "message": start}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            }
            deltas = [
                {"type": "text_delta", "text": text} for text in _groups(block["text"], tokens_per_chunk)
            ]
        else:
            head = {**block, "input": {}}
            yield {"type": "content_block_start", "index": index, "content_block": head}
            arguments = json.dumps(block["input"])
            deltas = [
                {"type": "input_json_delta", "partial_json": part}
                for part in _groups(arguments, tokens_per_chunk)
            ]
        if index == 0:
            yield {"type": "ping"}
        for delta in deltas:
            yield {"type": "content_block_delta", "index": index, "delta": delta}
        yield {"type": "content_block_stop", "index": index}
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    yield {"type": "message_delta", "delta": delta, "usage": {"output_tokens": usage["output_tokens"]}}
    yield {"type": "message_stop"}


def _groups(text: str, size: int) -> Iterator[str]:
    pieces = split_pieces(text)
    return ("".join(pieces[i : i + size]) for i in range(0, len(pieces), size))


async def _send_events(exchange: Exchange, events: Iterator[dict[str, Any]]) -> web.StreamResponse:
    """Write each event (`event: <type>`), `chunk_delay_ms` apart; fault `cut` drops the connection
    after `cut_after` events."""
    behaviour = exchange.behaviour
    cut_after = behaviour.cut_after if behaviour.fault == "cut" else None
    response = web.StreamResponse(headers=exchange._headers(_SSE_HEADERS))
    exchange.record.status, exchange.record.streaming = 200, True
    try:
        await response.prepare(exchange.request)
        for sent, event in enumerate(events):
            if sent == cut_after:
                exchange.drop(reset=False)
                return response
            if sent and not await exchange.pause(behaviour.chunk_delay_ms / 1000):
                exchange.drop(reset=False)
                return response
            if sent == 0:
                exchange.record.first_byte_at = time.time()
            frame = f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"
            await response.write(frame.encode())
        await response.write_eof()
    except ConnectionError:
        pass  # the client hung up mid-stream
    return response
