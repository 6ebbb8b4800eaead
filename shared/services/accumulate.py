"""Rebuild a complete chat completion from its stream chunks (for sessions and the cache).

Chunks and completions are OpenAI-shaped dicts, as the data plane relays them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ChatAccumulator:
    """Feed it every chunk; `completion()` gives what the non-streaming call would have returned."""

    def __init__(self) -> None:
        self._first: Mapping[str, Any] | None = None
        self._content: dict[int, list[str]] = {}
        self._refusal: dict[int, list[str]] = {}
        self._tools: dict[int, dict[int, dict[str, Any]]] = {}
        self._finish: dict[int, str] = {}
        self.usage: dict[str, Any] | None = None

    def add(self, chunk: Mapping[str, Any]) -> None:
        self._first = self._first or chunk
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta, index = choice.get("delta") or {}, int(choice.get("index") or 0)
            if delta.get("content"):
                self._content.setdefault(index, []).append(delta["content"])
            if delta.get("refusal"):
                self._refusal.setdefault(index, []).append(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                slot = self._tools.setdefault(index, {}).setdefault(
                    int(call.get("index") or 0),
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                slot["id"] = call.get("id") or slot["id"]
                function = call.get("function") or {}
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self._finish[index] = choice["finish_reason"]

    @property
    def complete(self) -> bool:
        return bool(self._finish)

    def completion(self, usage: Mapping[str, Any] | None = None) -> dict[str, Any]:
        first = self._first or {}
        indexes = sorted({*self._content, *self._refusal, *self._tools, *self._finish}) or [0]
        choices = []
        for index in indexes:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "".join(self._content[index]) if index in self._content else None,
                "refusal": "".join(self._refusal[index]) if index in self._refusal else None,
            }
            if index in self._tools:
                message["tool_calls"] = [self._tools[index][i] for i in sorted(self._tools[index])]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "finish_reason": self._finish.get(index, "stop"),
                    "logprobs": None,
                }
            )
        body: dict[str, Any] = {
            "id": first.get("id") or "chatcmpl-cirrus",
            "object": "chat.completion",
            "created": first.get("created") or 0,
            "model": first.get("model") or "",
            "choices": choices,
        }
        if usage or self.usage:
            body["usage"] = {k: v for k, v in dict(usage or self.usage or {}).items() if v is not None}
        return body


def assistant_message(completion: Mapping[str, Any]) -> dict[str, Any]:
    """The first choice as a message to store in a session's history."""
    message = (completion.get("choices") or [{}])[0].get("message") or {}
    stored: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        stored["tool_calls"] = [
            {"id": t.get("id"), "type": t.get("type") or "function", "function": t.get("function")}
            for t in message["tool_calls"]
        ]
    return stored


def replay_chunks(completion: Mapping[str, Any], *, include_usage: bool) -> list[dict[str, Any]]:
    """A stored completion as the chunks a stream would have carried (for cache hits)."""
    base = {
        "id": completion.get("id"),
        "object": "chat.completion.chunk",
        "created": completion.get("created"),
        "model": completion.get("model"),
    }
    extra = {"usage": None} if include_usage else {}
    chunks: list[dict[str, Any]] = []
    for choice in completion.get("choices") or ():
        message = choice.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
        if message.get("tool_calls"):
            delta["tool_calls"] = [
                {
                    "index": i,
                    "id": t.get("id"),
                    "type": "function",
                    "function": {
                        "name": (t.get("function") or {}).get("name"),
                        "arguments": (t.get("function") or {}).get("arguments"),
                    },
                }
                for i, t in enumerate(message["tool_calls"])
            ]
        index = choice.get("index", 0)
        chunks.append(
            {
                **base,
                **extra,
                "choices": [{"index": index, "delta": delta, "finish_reason": None, "logprobs": None}],
            }
        )
        chunks.append(
            {
                **base,
                **extra,
                "choices": [
                    {
                        "index": index,
                        "delta": {},
                        "finish_reason": choice.get("finish_reason"),
                        "logprobs": None,
                    }
                ],
            }
        )
    if include_usage and completion.get("usage"):
        chunks.append({**base, "choices": [], "usage": dict(completion["usage"])})
    return chunks
