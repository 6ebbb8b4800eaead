"""Responses ⇄ chat completions, both ways: pure functions over plain dicts.

Into chat: input items (stored with ids, as `input_items` lists them) become chat messages, and
the request's settings become chat parameters. Out of chat: a completion's message becomes
output items (`message` with `output_text`, `function_call`), its finish reason the status, its
usage Responses' usage. `response_object` renders the Response as OpenAI returns it, echoing the
request's settings.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from shared.clients.protocols import ModelFeatures
from shared.models.responses import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputFile,
    InputImage,
    InputItem,
    MessageItem,
    RefusalPart,
    ResponseCreate,
    ResponseRecord,
)

Item = dict[str, Any]
Message = dict[str, Any]


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: `resp_…`, `msg_…`, `fc_…` and 48 hex digits."""
    return f"{prefix}_{uuid.uuid4().hex}{uuid.uuid4().hex[:16]}"


# --- the request's input, as stored items ---------------------------------------------------------


def stored_items(items: Sequence[InputItem]) -> list[Item]:
    """The input items as `input_items` lists them (OpenAI's item resources), each with an id;
    reasoning items are left out (nothing of theirs reaches a chat model)."""
    stored: list[Item] = []
    for item in items:
        if isinstance(item, MessageItem):
            stored.append(_stored_message(item))
        elif isinstance(item, FunctionCallItem):
            stored.append(
                {
                    "type": "function_call",
                    "id": item.id or new_id("fc"),
                    "call_id": item.call_id,
                    "name": item.name,
                    "arguments": item.arguments,
                    "status": "completed",
                }
            )
        elif isinstance(item, FunctionCallOutputItem):
            output = (
                item.output if isinstance(item.output, str) else [_text_part(p.text) for p in item.output]
            )
            stored.append(
                {
                    "type": "function_call_output",
                    "id": item.id or new_id("fco"),
                    "call_id": item.call_id,
                    "output": output,
                    "status": "completed",
                }
            )
    return stored


def _stored_message(item: MessageItem) -> Item:
    assistant = item.role == "assistant"
    parts: list[Item] = []
    for part in [item.content] if isinstance(item.content, str) else item.content:
        if isinstance(part, str):
            parts.append(_output_text(part) if assistant else _text_part(part))
        elif isinstance(part, RefusalPart):
            parts.append({"type": "refusal", "refusal": part.refusal})
        elif isinstance(part, InputImage):
            parts.append(
                {"type": "input_image", "image_url": part.image_url, "detail": part.detail or "auto"}
            )
        elif isinstance(part, InputFile):
            parts.append(
                {
                    "type": "input_file",
                    **part.model_dump(include={"file_data", "filename"}, exclude_none=True),
                }
            )
        else:  # input_text or output_text
            parts.append(_output_text(part.text) if assistant else _text_part(part.text))
    return {
        "type": "message",
        "id": item.id or new_id("msg"),
        "role": item.role,
        "content": parts,
        "status": "completed",
    }


def _text_part(text: str) -> Item:
    return {"type": "input_text", "text": text}


def _output_text(text: str) -> Item:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


# --- items into chat messages ---------------------------------------------------------------------


def to_messages(items: Sequence[Mapping[str, Any]]) -> list[Message]:
    """Stored items (the conversation so far, then this request's input) as chat messages.

    Function calls join the assistant message before them (or start one) as its `tool_calls`;
    function call outputs become `tool` messages; developer messages are sent as `system`, which
    every chat provider reads (OpenAI's reasoning models take it as `developer`)."""
    messages: list[Message] = []
    for item in items:
        kind = item.get("type")
        if kind == "message":
            messages.append(_chat_message(item))
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item["output"]
            text = output if isinstance(output, str) else "".join(p.get("text") or "" for p in output)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
    return messages


def _chat_message(item: Mapping[str, Any]) -> Message:
    role, parts = item["role"], item["content"]
    if role == "assistant":
        text = "".join(p.get("text") or "" for p in parts if p["type"] in ("output_text", "input_text"))
        refusal = "".join(p.get("refusal") or "" for p in parts if p["type"] == "refusal")
        return {"role": "assistant", "content": text or refusal or None}
    if role in ("system", "developer"):
        return {"role": "system", "content": "".join(p.get("text") or "" for p in parts)}
    if all(p["type"] == "input_text" for p in parts):
        return {"role": "user", "content": "".join(p["text"] for p in parts)}
    content: list[dict[str, Any]] = []
    for part in parts:
        if part["type"] == "input_text":
            content.append({"type": "text", "text": part["text"]})
        elif part["type"] == "input_image":
            content.append(
                {"type": "image_url", "image_url": {"url": part["image_url"], "detail": part["detail"]}}
            )
        elif part["type"] == "input_file":
            content.append({"type": "file", "file": {k: v for k, v in part.items() if k != "type"}})
    return {"role": "user", "content": content}


def system_message(instructions: str | None) -> list[Message]:
    """`instructions` as the conversation's first message (never carried to the next response)."""
    return [{"role": "system", "content": instructions}] if instructions else []


# --- the request's settings into chat parameters --------------------------------------------------


def chat_params(request: ResponseCreate, messages: list[Message], features: ModelFeatures) -> dict[str, Any]:
    """The chat completion request for `request`, its conversation being `messages`.

    `reasoning.effort` and `text.verbosity` are passed on only to models known to reason (the
    model file's or the price map's `supports_reasoning`): others would refuse them."""
    params: dict[str, Any] = {"model": request.model, "messages": messages}
    tools = request.tools or []
    choice = request.tool_choice
    if choice is not None and not isinstance(choice, str) and choice.type == "allowed_tools":
        # The tools it allows are the only ones the model sees: every chat provider understands that.
        allowed = {t.get("name") for t in choice.tools}
        tools = [t for t in tools if t.name in allowed]
        choice = choice.mode
    if tools:
        params["tools"] = [_chat_tool(t.model_dump(exclude_none=True)) for t in tools]
        if choice is not None:
            params["tool_choice"] = (
                choice if isinstance(choice, str) else {"type": "function", "function": {"name": choice.name}}
            )
        if request.parallel_tool_calls is not None:
            params["parallel_tool_calls"] = request.parallel_tool_calls
    for name in ("temperature", "top_p", "user", "safety_identifier", "prompt_cache_key", "service_tier"):
        value = getattr(request, name)
        if value is not None:
            params[name] = value
    if request.max_output_tokens is not None:
        params["max_completion_tokens"] = request.max_output_tokens
    text = request.text
    if text is not None and text.format is not None and text.format.type != "text":
        params["response_format"] = response_format(text.format.model_dump(by_alias=True, exclude_none=True))
    if features.reasoning:
        if request.reasoning is not None and request.reasoning.effort is not None:
            params["reasoning_effort"] = request.reasoning.effort
        if text is not None and text.verbosity is not None:
            params["verbosity"] = text.verbosity
    return params


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


def response_format(text_format: Mapping[str, Any]) -> dict[str, Any]:
    """`text.format` as chat's `response_format`."""
    if text_format["type"] == "json_object":
        return {"type": "json_object"}
    schema = {k: text_format[k] for k in ("name", "schema", "description", "strict") if k in text_format}
    return {"type": "json_schema", "json_schema": schema}


# --- a chat completion out as output items ---------------------------------------------------------


# How a response that got an answer ends.
Finished = Literal["completed", "incomplete"]


def output_from_completion(
    completion: Mapping[str, Any],
) -> tuple[list[Item], Finished, dict[str, str] | None]:
    """The first choice as output items, with the response's status and `incomplete_details`."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    status, incomplete = status_for(choice.get("finish_reason"))
    output: list[Item] = []
    content, refusal, calls = message.get("content"), message.get("refusal"), message.get("tool_calls") or []
    if content or refusal or not calls:
        parts = [] if refusal and not content else [_output_text(content or "")]
        if refusal:
            parts.append({"type": "refusal", "refusal": refusal})
        item_status = "incomplete" if status == "incomplete" else "completed"
        output.append(message_item(new_id("msg"), parts, item_status))
    for call in calls:
        function = call.get("function") or {}
        output.append(
            function_call_item(
                new_id("fc"), str(call.get("id") or new_id("call")), function.get("name") or "", "completed"
            )
            | {"arguments": function.get("arguments") or ""}
        )
    return output, status, incomplete


def message_item(item_id: str, parts: list[Item], status: str) -> Item:
    return {"id": item_id, "type": "message", "status": status, "content": parts, "role": "assistant"}


def function_call_item(item_id: str, call_id: str, name: str, status: str) -> Item:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": "",
        "call_id": call_id,
        "name": name,
    }


def status_for(finish_reason: str | None) -> tuple[Finished, dict[str, str] | None]:
    """A chat finish reason as the response's status and `incomplete_details`."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def response_usage(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """Chat usage as Responses usage."""
    usage = usage or {}
    input_tokens = int(usage.get("prompt_tokens") or 0)
    output_tokens = int(usage.get("completion_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


# --- the Response object ---------------------------------------------------------------------------


def response_object(
    *,
    response_id: str,
    request: Mapping[str, Any],
    model: str,
    status: str,
    created_at: float,
    output: list[Item] | None = None,
    usage: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    incomplete_details: dict[str, Any] | None = None,
    completed_at: float | None = None,
) -> dict[str, Any]:
    """The Response as OpenAI returns it. `request` is the create body as the client sent it
    (without `input`); settings it left unset show OpenAI's defaults."""
    text = request.get("text") or {}
    reasoning = request.get("reasoning") or {}
    response = {
        "id": response_id,
        "object": "response",
        "created_at": int(created_at),
        "status": status,
        "background": bool(request.get("background")),
        "completed_at": int(completed_at) if completed_at is not None and status == "completed" else None,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "model": model,
        "output": output or [],
        "parallel_tool_calls": _or_default(request.get("parallel_tool_calls"), True),
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": request.get("safety_identifier"),
        "service_tier": request.get("service_tier") or "default",
        "store": _or_default(request.get("store"), True),
        "temperature": request.get("temperature", 1.0),
        "text": {
            "format": text.get("format") or {"type": "text"},
            "verbosity": text.get("verbosity") or "medium",
        },
        "tool_choice": _or_default(request.get("tool_choice"), "auto"),
        "tools": [_echoed_tool(t) for t in request.get("tools") or []],
        "top_logprobs": 0,
        "top_p": request.get("top_p", 1.0),
        "truncation": request.get("truncation") or "auto",
        "metadata": request.get("metadata") or {},
    }
    # The spec types these as an object and a string, never null: absent until there is one.
    if usage is not None:
        response["usage"] = usage
    if request.get("user") is not None:
        response["user"] = request["user"]
    return response


def _or_default(value: Any, default: Any) -> Any:
    """A setting the client sent as `null` is unset: OpenAI's schema has no null for it."""
    return default if value is None else value


def _echoed_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    echoed = {
        "type": "function",
        "name": tool["name"],
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict"),
    }
    return {**tool, **echoed}


def public(record: ResponseRecord) -> dict[str, Any]:
    """A stored response as the API returns it."""
    return snapshot(record)(
        status=record.status,
        output=record.output,
        usage=record.usage,
        error=record.error,
        incomplete_details=record.incomplete_details,
    )


def snapshot(record: ResponseRecord) -> Callable[..., dict[str, Any]]:
    """The Response of `record` as it stands at each point of its stream (`status`, `output`, ...
    given), for stream.ResponseEvents."""

    def render(**state: Any) -> dict[str, Any]:
        return response_object(
            response_id=record.id,
            request=record.request,
            model=record.model,
            created_at=record.created_at,
            completed_at=record.completed_at or time.time(),
            **state,
        )

    return render


def response_error(code: str | None, message: str) -> dict[str, str]:
    """A Cirrus error as a Response's `error`, whose codes are OpenAI's (ResponseErrorCode)."""
    known = "rate_limit_exceeded" if code in ("rate_limit_exceeded", "insufficient_quota") else "server_error"
    return {"code": known, "message": message}
