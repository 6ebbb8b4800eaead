"""Rebuild a complete chat completion from its stream chunks (for sessions and the cache)."""

from __future__ import annotations

from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.completion_usage import CompletionUsage


class ChatAccumulator:
    """Feed it every chunk; `completion()` gives what the non-streaming call would have returned."""

    def __init__(self) -> None:
        self._first: ChatCompletionChunk | None = None
        self._content: dict[int, list[str]] = {}
        self._refusal: dict[int, list[str]] = {}
        self._tools: dict[int, dict[int, dict[str, Any]]] = {}
        self._finish: dict[int, str] = {}
        self.usage: CompletionUsage | None = None

    def add(self, chunk: ChatCompletionChunk) -> None:
        self._first = self._first or chunk
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            delta, index = choice.delta, choice.index
            if delta.content:
                self._content.setdefault(index, []).append(delta.content)
            if delta.refusal:
                self._refusal.setdefault(index, []).append(delta.refusal)
            for call in delta.tool_calls or []:
                slot = self._tools.setdefault(index, {}).setdefault(
                    call.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
                )
                slot["id"] = call.id or slot["id"]
                if call.function is not None:
                    slot["function"]["name"] += call.function.name or ""
                    slot["function"]["arguments"] += call.function.arguments or ""
            if choice.finish_reason:
                self._finish[index] = choice.finish_reason

    @property
    def complete(self) -> bool:
        return bool(self._finish)

    def completion(self, usage: CompletionUsage | None = None) -> ChatCompletion:
        first = self._first
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
            "id": first.id if first else "chatcmpl-cirrus",
            "object": "chat.completion",
            "created": first.created if first else 0,
            "model": first.model if first else "",
            "choices": choices,
        }
        if usage or self.usage:
            body["usage"] = (usage or self.usage).model_dump(exclude_none=True)  # type: ignore[union-attr]
        return ChatCompletion.model_validate(body)


def assistant_message(completion: ChatCompletion) -> dict[str, Any]:
    """The first choice as a message to store in a session's history."""
    message = completion.choices[0].message
    stored: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        stored["tool_calls"] = [t.model_dump(mode="json", exclude_none=True) for t in message.tool_calls]
    return stored


def replay_chunks(completion: ChatCompletion, *, include_usage: bool) -> list[ChatCompletionChunk]:
    """A stored completion as the chunks a stream would have carried (for cache hits)."""
    base = {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model,
    }
    extra = {"usage": None} if include_usage else {}
    chunks: list[dict[str, Any]] = []
    for choice in completion.choices:
        message = choice.message
        delta: dict[str, Any] = {"role": "assistant", "content": message.content or ""}
        if message.tool_calls:
            delta["tool_calls"] = [
                {
                    "index": i,
                    "id": t.id,
                    "type": "function",
                    "function": {"name": t.function.name, "arguments": t.function.arguments},
                }
                for i, t in enumerate(message.tool_calls)
            ]
        chunks.append(
            {
                **base,
                **extra,
                "choices": [{"index": choice.index, "delta": delta, "finish_reason": None, "logprobs": None}],
            }
        )
        chunks.append(
            {
                **base,
                **extra,
                "choices": [
                    {
                        "index": choice.index,
                        "delta": {},
                        "finish_reason": choice.finish_reason,
                        "logprobs": None,
                    }
                ],
            }
        )
    if include_usage and completion.usage is not None:
        chunks.append({**base, "choices": [], "usage": completion.usage.model_dump(exclude_none=True)})
    return [ChatCompletionChunk.model_validate(c) for c in chunks]
