"""The Responses stream: chat completion chunks in, OpenAI's typed events out.

Events carry a `sequence_number` that grows by one from the first. A text answer is
`response.output_item.added` (a `message`), `response.content_part.added`, one
`response.output_text.delta` per chunk, then `response.output_text.done`,
`response.content_part.done` and `response.output_item.done`; a tool call is
`response.output_item.added` (a `function_call`), `response.function_call_arguments.delta`s,
`response.function_call_arguments.done`, `response.output_item.done`. The stream opens with
`response.created` and `response.in_progress` (`response.queued` for a background response) and
ends with `response.completed`, `response.incomplete` (the chat finish reason was `length` or
`content_filter`) or, after a failure, an `error` event and `response.failed`.

Pure code: `ResponseEvents` holds the output as it grows, so the events and the final Response
always agree; `replay` gives the same events for a response that has ended.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from shared.services.responses.translate import (
    function_call_item,
    message_item,
    new_id,
    response_error,
    response_usage,
    status_for,
)

Event = dict[str, Any]
Item = dict[str, Any]
# The Response as it stands: snapshot(status=..., output=..., usage=..., error=..., incomplete_details=...)
Snapshot = Callable[..., dict[str, Any]]

CANCELLED_CODE = "response_cancelled"


class ResponseEvents:
    """One response's events, numbered from `sequence`. Feed it the chat stream's chunks."""

    def __init__(self, snapshot: Snapshot, *, sequence: int = 0) -> None:
        self._snapshot = snapshot
        self._sequence = sequence
        self.output: list[Item] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.response: dict[str, Any] | None = None  # the final Response, once ended
        self._message: Item | None = None  # the message item being written
        self._message_at = 0  # its index in the output
        self._part: Item | None = None  # and its content part
        self._part_at = 0  # its index in the message's content
        self._call: Item | None = None  # the function call item being written
        self._call_at = 0  # its index in the output
        self._call_index: int | None = None  # its index in the chat stream's tool calls

    @property
    def sequence(self) -> int:
        """The next event's sequence number."""
        return self._sequence

    def event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    # --- opening ----------------------------------------------------------------------------------

    def opened(self, *, queued: bool = False) -> list[Event]:
        """`response.created`, then `response.in_progress` (or `response.queued`)."""
        status = "queued" if queued else "in_progress"
        snapshot = self._snapshot(status=status, output=[])
        return [
            self.event("response.created", response=snapshot),
            self.event(f"response.{status}", response=snapshot),
        ]

    def in_progress(self) -> list[Event]:
        return [self.event("response.in_progress", response=self._snapshot(status="in_progress", output=[]))]

    # --- chunks -------------------------------------------------------------------------------------

    def feed(self, chunk: Mapping[str, Any]) -> list[Event]:
        """The events one chat completion chunk makes (its first choice only)."""
        events: list[Event] = []
        if chunk.get("usage"):
            self.usage = dict(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text("output_text", delta["content"])
            if delta.get("refusal"):
                events += self._text("refusal", delta["refusal"])
            for call in delta.get("tool_calls") or ():
                events += self._call_fragment(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return events

    def finish(self, usage: Mapping[str, Any] | None = None) -> list[Event]:
        """Close what is open and end with `response.completed` or `response.incomplete`."""
        status, incomplete = status_for(self.finish_reason)
        events = self._close_message(status) + self._close_call()
        if not self.output:  # the model said nothing: an empty message, as OpenAI shows one
            events += self._open_message() + self._open_part("output_text") + self._close_message(status)
        final = self._snapshot(
            status=status,
            output=self.output,
            usage=response_usage(usage or self.usage),
            incomplete_details=incomplete,
        )
        self.response = final
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return [*events, self.event(kind, response=final)]

    def fail(self, code: str | None, message: str, param: str | None = None) -> list[Event]:
        """A failure after the stream started: an `error` event, then `response.failed` with the
        output so far (items still open marked `incomplete`)."""
        for item in (self._message, self._call):
            if item is not None:
                item["status"] = "incomplete"
        self._message = self._part = self._call = None
        final = self._snapshot(status="failed", output=self.output, error=response_error(code, message))
        self.response = final
        return [
            self.event("error", code=code, message=message, param=param),
            self.event("response.failed", response=final),
        ]

    # --- a response that has ended, again ------------------------------------------------------------

    def replay(self, response: Mapping[str, Any]) -> list[Event]:
        """The output and closing events of an ended response, as its stream had them."""
        events: list[Event] = []
        for item in response.get("output") or ():
            if item["type"] == "message":
                events += self._open_message(item["id"])
                for part in item["content"]:
                    kind = part["type"]
                    events += self._open_part(kind)
                    text = part.get("text") if kind == "output_text" else part.get("refusal")
                    if text:
                        events += self._text(kind, text)
                events += self._close_message(item.get("status") or "completed")
            elif item["type"] == "function_call":
                events += self._call_fragment(
                    {
                        "id": item["call_id"],
                        "function": {"name": item["name"], "arguments": item["arguments"]},
                    },
                    item_id=item["id"],
                )
                events += self._close_call()
        return events + self.closing(response)

    def closing(self, response: Mapping[str, Any]) -> list[Event]:
        """The events a stream ends with for `response` as it ended."""
        status = response.get("status")
        self.response = dict(response)
        if status == "completed":
            return [self.event("response.completed", response=dict(response))]
        if status == "incomplete":
            return [self.event("response.incomplete", response=dict(response))]
        if status == "cancelled":
            return [
                self.event("error", code=CANCELLED_CODE, message="The response was cancelled.", param=None)
            ]
        error = response.get("error") or {"code": "server_error", "message": "The response failed."}
        return [
            self.event("error", code=error.get("code"), message=error.get("message") or "", param=None),
            self.event("response.failed", response=dict(response)),
        ]

    # --- items and parts ------------------------------------------------------------------------------

    def _text(self, kind: str, delta: str) -> list[Event]:
        events = self._close_call()
        if self._message is None:
            events += self._open_message()
        if self._part is None or self._part["type"] != kind:
            events += self._close_part() + self._open_part(kind)
        part, message = self._part, self._message
        assert part is not None and message is not None
        field = "text" if kind == "output_text" else "refusal"
        part[field] += delta
        where = self._where()
        if kind == "output_text":
            events.append(self.event("response.output_text.delta", **where, delta=delta, logprobs=[]))
        else:
            events.append(self.event("response.refusal.delta", **where, delta=delta))
        return events

    def _open_message(self, item_id: str | None = None) -> list[Event]:
        item = message_item(item_id or new_id("msg"), [], "in_progress")
        self.output.append(item)
        self._message, self._message_at = item, len(self.output) - 1
        return [
            self.event("response.output_item.added", output_index=self._message_at, item=copy.deepcopy(item))
        ]

    def _open_part(self, kind: str) -> list[Event]:
        assert self._message is not None
        part: Item = (
            {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            if kind == "output_text"
            else {"type": "refusal", "refusal": ""}
        )
        self._message["content"].append(part)
        self._part, self._part_at = part, len(self._message["content"]) - 1
        return [self.event("response.content_part.added", **self._where(), part=copy.deepcopy(part))]

    def _close_part(self) -> list[Event]:
        part = self._part
        if part is None:
            return []
        where = self._where()
        if part["type"] == "output_text":
            done = self.event("response.output_text.done", **where, text=part["text"], logprobs=[])
        else:
            done = self.event("response.refusal.done", **where, refusal=part["refusal"])
        self._part = None
        return [done, self.event("response.content_part.done", **where, part=copy.deepcopy(part))]

    def _close_message(self, status: str = "completed") -> list[Event]:
        message = self._message
        if message is None:
            return []
        events = self._close_part()
        message["status"] = "incomplete" if status == "incomplete" else "completed"
        self._message = None
        done = self.event(
            "response.output_item.done", output_index=self._message_at, item=copy.deepcopy(message)
        )
        return [*events, done]

    def _call_fragment(self, fragment: Mapping[str, Any], *, item_id: str | None = None) -> list[Event]:
        function = fragment.get("function") or {}
        index = int(fragment.get("index") or 0)
        events: list[Event] = []
        call = self._call
        if call is None or index != self._call_index:
            events += self._close_message() + self._close_call()
            call = function_call_item(
                item_id or new_id("fc"),
                str(fragment.get("id") or new_id("call")),
                str(function.get("name") or ""),
                "in_progress",
            )
            self.output.append(call)
            self._call, self._call_at, self._call_index = call, len(self.output) - 1, index
            events.append(
                self.event("response.output_item.added", output_index=self._call_at, item=copy.deepcopy(call))
            )
        elif function.get("name"):  # a name sent in pieces
            call["name"] += function["name"]
        if function.get("arguments"):
            call["arguments"] += function["arguments"]
            events.append(
                self.event(
                    "response.function_call_arguments.delta",
                    item_id=call["id"],
                    output_index=self._call_at,
                    delta=function["arguments"],
                )
            )
        return events

    def _close_call(self) -> list[Event]:
        call = self._call
        if call is None:
            return []
        call["status"] = "completed"
        self._call = self._call_index = None
        index = self._call_at
        return [
            self.event(
                "response.function_call_arguments.done",
                item_id=call["id"],
                output_index=index,
                name=call["name"],
                arguments=call["arguments"],
            ),
            self.event("response.output_item.done", output_index=index, item=copy.deepcopy(call)),
        ]

    def _where(self) -> dict[str, Any]:
        assert self._message is not None and self._part is not None
        return {
            "item_id": self._message["id"],
            "output_index": self._message_at,
            "content_index": self._part_at,
        }
