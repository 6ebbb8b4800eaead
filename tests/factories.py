"""Factories for requests, messages, completions and chunks used across the test tiers."""

from __future__ import annotations

import json
from typing import Any

DEFAULT_MODEL = "cirrus-local"


def message(content: str = "Hello", role: str = "user", **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


def chat_body(*messages: dict[str, Any], model: str = DEFAULT_MODEL, **params: Any) -> dict[str, Any]:
    return {"model": model, "messages": list(messages) or [message()], **params}


def completion_dict(text: str, *, model: str = DEFAULT_MODEL, prompt_tokens: int = 5) -> dict[str, Any]:
    words = len(text.split())
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": words,
            "total_tokens": prompt_tokens + words,
        },
    }


def chunk_dicts(
    text: str, *, model: str = DEFAULT_MODEL, include_usage: bool = False
) -> list[dict[str, Any]]:
    """OpenAI-shaped chunks: role first, a word per chunk, a finish chunk, then usage if asked."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if include_usage:
            out["usage"] = None
        return out

    words = text.split()
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
    chunks.append(chunk({}, "stop"))
    if include_usage:
        chunks.append(
            {
                **chunk({}),
                "choices": [],
                "usage": {
                    "prompt_tokens": 5,
                    "completion_tokens": len(words),
                    "total_tokens": 5 + len(words),
                },
            }
        )
    return chunks


def batch_line(custom_id: str, *, model: str = DEFAULT_MODEL, content: str | None = None) -> dict[str, Any]:
    """One line of a chat batch's input file; the prompt is the custom_id unless `content` is given."""
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [message(content if content is not None else custom_id)]},
    }


def batch_input(lines: list[dict[str, Any]]) -> bytes:
    """A batch input file (JSONL) of `lines`."""
    return "\n".join(json.dumps(line) for line in lines).encode()


def message_body(*messages: dict[str, Any], model: str = DEFAULT_MODEL, **params: Any) -> dict[str, Any]:
    """An Anthropic Messages request body (`max_tokens` 256 unless given)."""
    return {
        "model": model,
        "max_tokens": params.pop("max_tokens", 256),
        "messages": list(messages) or [message()],
        **params,
    }


def tool_call_completion(
    *calls: tuple[str, str, dict[str, Any]],
    text: str | None = None,
    model: str = DEFAULT_MODEL,
    prompt_tokens: int = 5,
) -> dict[str, Any]:
    """A chat completion whose answer calls tools: `(call_id, name, arguments)` each, after `text`."""
    body = completion_dict(text or "", model=model, prompt_tokens=prompt_tokens)
    message = body["choices"][0]["message"]
    message["content"] = text
    message["tool_calls"] = [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
        for call_id, name, arguments in calls
    ]
    body["choices"][0]["finish_reason"] = "tool_calls"
    completion_tokens = len((text or "").split()) + sum(len(json.dumps(a).split()) for _, _, a in calls)
    body["usage"] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    return body


def replayed_chunks(completion: dict[str, Any], *, include_usage: bool = False) -> list[dict[str, Any]]:
    """A completion's first choice as a provider streams it: role, words of content one a chunk,
    each tool call's head then its arguments in pieces of 8 characters, the finish, then usage."""
    choice = completion["choices"][0]
    message = choice["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": completion["id"],
            "object": "chat.completion.chunk",
            "created": completion["created"],
            "model": completion["model"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if include_usage:
            out["usage"] = None
        return out

    chunks = [chunk({"role": "assistant", "content": ""})]
    words = (message.get("content") or "").split()
    chunks += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
    for index, call in enumerate(message.get("tool_calls") or ()):
        head = {"index": index, "id": call["id"], "type": "function"}
        chunks.append(chunk({"tool_calls": [{**head, "function": {"name": call["function"]["name"]}}]}))
        arguments = call["function"]["arguments"]
        chunks += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[i : i + 8]}}]})
            for i in range(0, len(arguments), 8)
        ]
    chunks.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        chunks.append({**chunk({}), "choices": [], "usage": completion["usage"]})
    return chunks
