"""A chat completion stream as Anthropic's Messages stream: chat chunks in, Anthropic events out.

The events, in Anthropic's order:

    message_start            the message, empty, with the input tokens counted so far
    ping
    per content block:       a text block, then one tool_use block per tool call, as they arrive
        content_block_start
        content_block_delta  text_delta (text) or input_json_delta (a tool call's arguments)
        content_block_stop
    message_delta            stop_reason, stop_sequence and the usage
    message_stop

A failure mid-stream is not handled here: the transport turns it into an `error` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from shared.services.messages.translate import message_usage, new_message_id, stop_reason

Event = dict[str, Any]


class ChatToEvents:
    """The translation's state: feed it every chat chunk, then `finish`."""

    def __init__(
        self,
        model: str,
        *,
        input_tokens: int = 0,
        stop_sequences: Sequence[str] | None = None,
        message_id: str | None = None,
        count_output: Callable[[str], int] | None = None,
    ) -> None:
        self._model = model
        self._id = message_id or new_message_id()
        self._input_tokens = input_tokens  # an estimate, until the provider's usage arrives
        self._stop_sequences = stop_sequences
        self._count_output = count_output  # for a provider that reports no usage
        self._blocks = 0  # content blocks started
        self._open: str | None = None  # the kind of the block being written: `text` or `tool_use`
        self._tools: dict[int, int] = {}  # chat tool call index → content block index
        self._text: list[str] = []
        self._finish: str | None = None
        self._matched: Any = None
        self._refused = False
        self._usage: Mapping[str, Any] | None = None

    def start(self) -> list[Event]:
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self._input_tokens,
                "output_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        return [{"type": "message_start", "message": message}, {"type": "ping"}]

    def feed(self, chunk: Mapping[str, Any]) -> list[Event]:
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        events: list[Event] = []
        for choice in (chunk.get("choices") or ())[:1]:  # a Message has one answer
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("refusal")
            if delta.get("refusal"):
                self._refused = True
            if text:
                if self._open != "text":
                    self._close(events)
                    self._begin(events, "text", {"type": "text", "text": ""})
                self._text.append(text)
                events.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                self._tool_call(events, call)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                self._matched = choice.get("stop_reason")
        return events

    def finish(self) -> list[Event]:
        events: list[Event] = []
        self._close(events)
        reason, sequence = stop_reason(self._finish, self._matched, self._stop_sequences)
        if reason == "end_turn" and self._tools:
            reason = "tool_use"
        if self._refused:
            reason = "refusal"
        if self._usage:
            usage = message_usage(self._usage)
        else:
            output = self._count_output("".join(self._text)) if self._count_output else 0
            usage = message_usage({"prompt_tokens": self._input_tokens, "completion_tokens": output})
        events.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": usage,
            }
        )
        events.append({"type": "message_stop"})
        return events

    def _tool_call(self, events: list[Event], call: Mapping[str, Any]) -> None:
        index = int(call.get("index") or 0)
        function = call.get("function") or {}
        if index not in self._tools:
            self._close(events)
            self._tools[index] = self._blocks
            name = function.get("name") or ""
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or "",
                "name": name,
                "input": {},
            }
            self._begin(events, "tool_use", block)
        if arguments := function.get("arguments"):
            self._text.append(arguments)
            delta = {"type": "input_json_delta", "partial_json": arguments}
            events.append({"type": "content_block_delta", "index": self._tools[index], "delta": delta})

    def _begin(self, events: list[Event], kind: str, block: dict[str, Any]) -> None:
        events.append({"type": "content_block_start", "index": self._blocks, "content_block": block})
        self._open = kind
        self._blocks += 1

    def _delta(self, delta: dict[str, Any]) -> Event:
        return {"type": "content_block_delta", "index": self._blocks - 1, "delta": delta}

    def _close(self, events: list[Event]) -> None:
        if self._open is not None:
            events.append({"type": "content_block_stop", "index": self._blocks - 1})
            self._open = None


async def message_events(
    chunks: AsyncIterator[Mapping[str, Any]], translation: ChatToEvents
) -> AsyncIterator[Event]:
    """`chunks` (a chat stream whose first chunk has arrived) as Anthropic's events. Closing this
    closes `chunks`, so the chat stream's books are settled even when the client goes away; to
    that end `chunks` is started (its first chunk is there already) before anything is yielded:
    an async generator closed before its start runs no cleanup."""
    started = False
    try:
        async for chunk in chunks:
            if not started:
                started = True
                for event in translation.start():
                    yield event
            for event in translation.feed(chunk):
                yield event
        if not started:
            for event in translation.start():
                yield event
        for event in translation.finish():
            yield event
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]  # an async generator
