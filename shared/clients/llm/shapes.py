"""OpenAI's wire shapes: what both adapters return, whatever the provider said.

LiteLLM's response objects are not OpenAI's wire shape as dumped (`provider_specific_fields`,
`refusal` moved, `logprobs` missing, usage chunks with a placeholder choice); the `normalise_*`
functions rebuild OpenAI's shape from them. An OpenAI-wire provider already speaks the shape, so
its answers only get `complete_*`: the fields OpenAI's schema requires and some compatible servers
leave out, added in place. Both are plain dicts: no SDK objects on the hot path.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Mapping
from typing import Any

_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


def complete_chat(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-wire chat completion with OpenAI's required fields present (in place)."""
    body.setdefault("object", "chat.completion")
    body.setdefault("created", int(time.time()))
    body.setdefault("id", "chatcmpl-cirrus")
    for choice in body.get("choices") or ():
        choice.setdefault("logprobs", None)
        choice["finish_reason"] = _finish_reason(choice.get("finish_reason")) or "stop"
        message = choice.get("message")
        if isinstance(message, dict):
            message.setdefault("content", None)
            message.setdefault("refusal", None)
    return body


def complete_text(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-wire legacy completion with OpenAI's required fields present (in place)."""
    body.setdefault("object", "text_completion")
    body.setdefault("created", int(time.time()))
    body.setdefault("id", "cmpl-cirrus")
    for choice in body.get("choices") or ():
        choice.setdefault("logprobs", None)
        choice["finish_reason"] = _finish_reason(choice.get("finish_reason")) or "stop"
    return body


def normalise_completion(raw: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A `CreateChatCompletionResponse` dict from LiteLLM's `ModelResponse.model_dump()`."""
    out: dict[str, Any] = {
        "id": raw.get("id") or "chatcmpl-cirrus",
        "object": "chat.completion",
        "created": int(raw.get("created") or time.time()),
        "model": model,
        "choices": [_choice(c) for c in raw.get("choices") or []],
    }
    if usage := _usage(raw.get("usage")):
        out["usage"] = usage
    _copy_strings(raw, out, "system_fingerprint", "service_tier")
    return out


def normalise_chunk(raw: Mapping[str, Any], model: str, include_usage: bool) -> dict[str, Any]:
    """A `CreateChatCompletionStreamResponse` dict from one LiteLLM stream chunk."""
    usage = _usage(raw.get("usage"))
    choices = [_chunk_choice(c) for c in raw.get("choices") or []]
    if usage:
        # LiteLLM attaches the usage to a placeholder choice; OpenAI sends it with no choices.
        choices = [c for c in choices if c["delta"] or c["finish_reason"]]
    out: dict[str, Any] = {
        "id": raw.get("id") or "chatcmpl-cirrus",
        "object": "chat.completion.chunk",
        "created": int(raw.get("created") or time.time()),
        "model": model,
        "choices": choices,
    }
    if include_usage:
        out["usage"] = usage
    _copy_strings(raw, out, "system_fingerprint", "service_tier")
    return out


def normalise_text_completion(raw: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A legacy `CreateCompletionResponse` dict from LiteLLM's `TextCompletionResponse`."""
    out = _text_base(raw, model)
    out["choices"] = [{**c, "finish_reason": c["finish_reason"] or "stop"} for c in out["choices"]]
    if usage := _usage(raw.get("usage")):
        out["usage"] = usage
    return out


def normalise_text_chunk(raw: Mapping[str, Any], model: str, include_usage: bool) -> dict[str, Any]:
    """One legacy completion stream chunk; like OpenAI, `finish_reason` is null until the end."""
    out = _text_base(raw, model)
    usage = _usage(raw.get("usage"))
    if usage:
        out["choices"] = [c for c in out["choices"] if c["text"] or c["finish_reason"]]
    if include_usage:
        out["usage"] = usage
    return out


def _text_base(raw: Mapping[str, Any], model: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": raw.get("id") or "cmpl-cirrus",
        "object": "text_completion",
        "created": int(raw.get("created") or time.time()),
        "model": model,
        "choices": [
            {
                "text": c.get("text") or "",
                "index": int(c.get("index") or 0),
                "logprobs": c.get("logprobs"),
                "finish_reason": _finish_reason(c.get("finish_reason")),
            }
            for c in raw.get("choices") or []
        ],
    }
    _copy_strings(raw, out, "system_fingerprint")
    return out


def normalise_embeddings(raw: Mapping[str, Any], model: str, encoding_format: str) -> dict[str, Any]:
    """A `CreateEmbeddingResponse` dict; `base64` packs each vector as little-endian float32."""
    data = []
    for index, item in enumerate(raw.get("data") or []):
        vector = [float(v) for v in item.get("embedding") or []]
        embedding: Any = vector
        if encoding_format == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": int(item.get("index", index)), "embedding": embedding})
    usage = raw.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "total_tokens": int(usage.get("total_tokens") or prompt_tokens),
        },
    }


def _choice(raw: Mapping[str, Any]) -> dict[str, Any]:
    message = raw.get("message") or {}
    specific = message.get("provider_specific_fields") or {}
    out_message: dict[str, Any] = {
        "role": "assistant",
        "content": message.get("content"),
        "refusal": message.get("refusal", specific.get("refusal")),
    }
    if tool_calls := message.get("tool_calls"):
        out_message["tool_calls"] = [_tool_call(t) for t in tool_calls]
    if function_call := message.get("function_call"):
        out_message["function_call"] = {
            "name": function_call.get("name") or "",
            "arguments": function_call.get("arguments") or "",
        }
    for key in ("annotations", "audio"):
        if message.get(key):
            out_message[key] = message[key]
    return {
        "index": int(raw.get("index") or 0),
        "message": out_message,
        "finish_reason": _finish_reason(raw.get("finish_reason")) or "stop",
        "logprobs": raw.get("logprobs"),
    }


def _chunk_choice(raw: Mapping[str, Any]) -> dict[str, Any]:
    delta_in = raw.get("delta") or {}
    delta: dict[str, Any] = {}
    for key in ("role", "content", "refusal"):
        if delta_in.get(key) is not None:
            delta[key] = delta_in[key]
    if tool_calls := delta_in.get("tool_calls"):
        delta["tool_calls"] = [_tool_call_delta(t) for t in tool_calls]
    if function_call := delta_in.get("function_call"):
        delta["function_call"] = {k: v for k, v in function_call.items() if k in ("name", "arguments") and v}
    return {
        "index": int(raw.get("index") or 0),
        "delta": delta,
        "finish_reason": _finish_reason(raw.get("finish_reason")),
        "logprobs": raw.get("logprobs"),
    }


def _tool_call(raw: Mapping[str, Any]) -> dict[str, Any]:
    function = raw.get("function") or {}
    return {
        "id": raw.get("id") or "",
        "type": "function",
        "function": {"name": function.get("name") or "", "arguments": function.get("arguments") or ""},
    }


def _tool_call_delta(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"index": int(raw.get("index") or 0)}
    if raw.get("id"):
        out["id"] = raw["id"]
        out["type"] = "function"
    function = raw.get("function") or {}
    fn = {k: function[k] for k in ("name", "arguments") if function.get(k) is not None}
    if fn:
        out["function"] = fn
    return out


def _usage(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not raw:
        return None
    out: dict[str, Any] = {
        "prompt_tokens": int(raw.get("prompt_tokens") or 0),
        "completion_tokens": int(raw.get("completion_tokens") or 0),
        "total_tokens": int(raw.get("total_tokens") or 0),
    }
    for key in ("prompt_tokens_details", "completion_tokens_details"):
        details = {k: v for k, v in (raw.get(key) or {}).items() if isinstance(v, int)}
        if details:
            out[key] = details
    return out


def _finish_reason(value: Any) -> str | None:
    if value is None:
        return None
    return value if value in _FINISH_REASONS else "stop"


def _copy_strings(raw: Mapping[str, Any], out: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if isinstance(raw.get(key), str):
            out[key] = raw[key]


def complete_embeddings(body: dict[str, Any], encoding_format: str) -> dict[str, Any]:
    """An OpenAI-wire embedding list, vectors packed as base64 when asked (in place)."""
    body["object"] = "list"
    for index, item in enumerate(body.get("data") or ()):
        item.setdefault("object", "embedding")
        item.setdefault("index", index)
        if encoding_format == "base64" and isinstance(item.get("embedding"), list):
            vector = item["embedding"]
            item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    usage = body.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    body["usage"] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": int(usage.get("total_tokens") or prompt_tokens),
    }
    return body
