"""The fake provider's Responses side: `POST /v1/responses` (also `/openai/v1/responses`, Azure's
`/openai/responses?api-version=...` and under `/profile/<spec>`), a Response as JSON or OpenAI's
typed server-sent events, as deterministic as the chat route.

What it does with a request:
    reply        "Fake reply to: <first 60 chars of the last user text>" padded to 24 words (the
                 same generator as chat), or the behaviour's `reply`, as one `message` item;
                 `max_output_tokens` caps the words (status `incomplete`, reason
                 `max_output_tokens`)
    calls        the behaviour's scripted `tool_calls` (`/_control/enqueue`) as `function_call`
                 items; else the function a `tool_choice` forces (`{"type": "function", "name"}`,
                 or `required`: the first tool), its arguments an example of its `parameters`
    usage        input_tokens: the words of `instructions` and every input text; output_tokens:
                 the words of the reply (or of the calls' names and arguments)
    stream       response.created, response.in_progress, then per item output_item.added,
                 (content_part.added, output_text.delta of `tokens_per_chunk` words,
                 output_text.done, content_part.done | function_call_arguments.delta/.done),
                 output_item.done; last response.completed or response.incomplete. `event:` lines
                 name each event, `sequence_number` counts from 0, and no `[DONE]` follows
    state        none: `previous_response_id` is a 400 (Cirrus must send the whole conversation)

Credentials, faults, latency and behaviours are the OpenAI routes' (app.py's `_api_handler`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from .anthropic_api import _send_events
from .app import ApiError, Exchange, _api_handler
from .behaviour import Behaviour
from .generate import count_words, default_reply, digest, example_for_schema, split_pieces


class ResponsesRequest(BaseModel):
    # Unknown fields are accepted and ignored, like a lenient provider.
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    stream: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    previous_response_id: str | None = None


def add_routes(app: web.Application) -> None:
    handler = _api_handler(ResponsesRequest, _responses, azure=False)
    azure = _api_handler(ResponsesRequest, _responses, azure=True)
    for root in ("", "/profile/{profile}"):
        app.router.add_post(root + "/v1/responses", handler)
        app.router.add_post(root + "/openai/v1/responses", azure)
        app.router.add_post(root + "/openai/responses", azure)


async def _responses(exchange: Exchange, req: ResponsesRequest) -> web.StreamResponse:
    if req.previous_response_id is not None:
        message = f"Previous response with id '{req.previous_response_id}' not found."
        raise ApiError(400, message, param="previous_response_id", code="previous_response_not_found")
    response = answer(req, exchange.behaviour, exchange.record.id)
    if req.stream:
        return await _send_events(exchange, stream_events(response, exchange.behaviour.tokens_per_chunk))
    return await exchange.send_json(response)


# --- the answer ---------------------------------------------------------------------------


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]


def _prompt(req: ResponsesRequest) -> tuple[str, str]:
    """(all the input's text, the last user message's text)."""
    if isinstance(req.input, str):
        return f"{req.instructions or ''} {req.input}", req.input
    parts, last = [req.instructions or ""], ""
    for item in req.input:
        kind = item.get("type", "message")
        if kind == "message":
            texts = _texts(item.get("content") or [])
            parts += texts
            if item.get("role") == "user":
                last = " ".join(texts)
        elif kind == "function_call":
            parts.append(str(item.get("arguments") or ""))
        elif kind == "function_call_output":
            parts += _texts(item.get("output") or "")
    return " ".join(parts), last


def answer(req: ResponsesRequest, behaviour: Behaviour, request_id: int) -> dict[str, Any]:
    """The whole Response for a request; deterministic in model, instructions, input and behaviour."""
    key = digest(req.model, req.instructions, req.input)
    prompt, last = _prompt(req)
    calls = _calls(req, behaviour)
    status, incomplete = "completed", None
    output: list[dict[str, Any]]
    if calls:
        output = [
            {
                "type": "function_call",
                "id": f"fc_{digest(key, i)[:24]}",
                "call_id": f"call_{digest(key, 'call', i)[:24]}",
                "name": name,
                "arguments": arguments,
                "status": "completed",
            }
            for i, (name, arguments) in enumerate(calls)
        ]
        written = sum(count_words(f"{n} {a}") for n, a in calls)
    else:
        text = behaviour.reply if behaviour.reply is not None else default_reply(last, key, 0)
        pieces = split_pieces(text)
        if req.max_output_tokens is not None and len(pieces) > req.max_output_tokens:
            text = "".join(pieces[: req.max_output_tokens])
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        output = [
            {
                "type": "message",
                "id": f"msg_{digest(key, request_id)[:24]}",
                "role": "assistant",
                "status": status,
                "content": [part],
            }
        ]
        written = count_words(text)
    input_tokens = count_words(prompt)
    now = int(time.time())
    return {
        "id": f"resp_{digest(key, request_id)[:24]}",
        "object": "response",
        "created_at": now,
        "status": status,
        "background": False,
        "completed_at": now if status == "completed" else None,
        "error": None,
        "incomplete_details": incomplete,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "model": req.model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": bool(getattr(req, "store", True)),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": req.tool_choice or "auto",
        "tools": [_echoed(tool) for tool in req.tools or []],
        "top_p": 1.0,
        "truncation": str(getattr(req, "truncation", None) or "disabled"),
        "metadata": {},
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": written,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + written,
        },
    }


def _echoed(tool: dict[str, Any]) -> dict[str, Any]:
    """A function tool as OpenAI echoes it: every field present."""
    if tool.get("type") != "function":
        return tool
    return {"description": None, "parameters": None, "strict": True, **tool}


def _calls(req: ResponsesRequest, behaviour: Behaviour) -> list[tuple[str, str]]:
    if behaviour.tool_calls:
        return [(call.name, json.dumps(call.arguments)) for call in behaviour.tool_calls]
    tools = [t for t in req.tools or [] if t.get("type") == "function"]
    choice = req.tool_choice
    if choice == "required" and tools:
        forced = tools[0]
    elif isinstance(choice, dict) and choice.get("type") == "function":
        forced = next((t for t in tools if t.get("name") == choice.get("name")), {"name": choice.get("name")})
    else:
        return []
    example = example_for_schema(forced.get("parameters") or {"type": "object"})
    return [(str(forced.get("name")), json.dumps(example if isinstance(example, dict) else {}))]


# --- streaming ----------------------------------------------------------------------------


def stream_events(response: dict[str, Any], tokens_per_chunk: int) -> Iterator[dict[str, Any]]:
    """OpenAI's typed events for `response`, numbered from 0."""
    return _numbered(_events(response, tokens_per_chunk))


def _numbered(events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for number, event in enumerate(events):
        yield {"type": event.pop("type"), "sequence_number": number, **event}


def _events(response: dict[str, Any], size: int) -> Iterator[dict[str, Any]]:
    opening = {**response, "status": "in_progress", "output": [], "completed_at": None}
    opening.pop("usage")
    opening["incomplete_details"] = None
    yield {"type": "response.created", "response": opening}
    yield {"type": "response.in_progress", "response": opening}
    for index, item in enumerate(response["output"]):
        at = {"output_index": index, "item_id": item["id"]}
        if item["type"] == "message":
            yield {"type": "response.output_item.added", "output_index": index, "item": _opened(item)}
            part = item["content"][0]
            empty = {**part, "text": ""}
            yield {"type": "response.content_part.added", **at, "content_index": 0, "part": empty}
            for delta in _groups(part["text"], size):
                yield {
                    "type": "response.output_text.delta",
                    **at,
                    "content_index": 0,
                    "delta": delta,
                    "logprobs": [],
                }
            yield {
                "type": "response.output_text.done",
                **at,
                "content_index": 0,
                "text": part["text"],
                "logprobs": [],
            }
            yield {"type": "response.content_part.done", **at, "content_index": 0, "part": part}
        else:
            yield {"type": "response.output_item.added", "output_index": index, "item": _opened(item)}
            for delta in _groups(item["arguments"], size):
                yield {"type": "response.function_call_arguments.delta", **at, "delta": delta}
            yield {
                "type": "response.function_call_arguments.done",
                **at,
                "name": item["name"],
                "arguments": item["arguments"],
            }
        yield {"type": "response.output_item.done", "output_index": index, "item": item}
    closing = "response.completed" if response["status"] == "completed" else "response.incomplete"
    yield {"type": closing, "response": response}


def _opened(item: dict[str, Any]) -> dict[str, Any]:
    if item["type"] == "message":
        return {**item, "status": "in_progress", "content": []}
    return {**item, "status": "in_progress", "arguments": ""}


def _groups(text: str, size: int) -> Iterator[str]:
    pieces = split_pieces(text)
    return ("".join(pieces[i : i + size]) for i in range(0, len(pieces), size))
