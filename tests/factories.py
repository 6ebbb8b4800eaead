"""Factories for requests, messages, completions and chunks used across the test tiers."""

from __future__ import annotations

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
