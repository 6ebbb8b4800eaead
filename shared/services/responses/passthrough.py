"""Responses passed through to a deployment that serves `/responses` itself: pure functions over
plain dicts for the request that goes out and the Response (or events) that come back.

Cirrus keeps the conversation state whatever serves the request, so the provider never has to:

- the request goes out with `store: false`, and with `previous_response_id` expanded into the
  input from Cirrus's own store (each earlier response's input, then its output, oldest first,
  ids left out, as the provider could not resolve them); `metadata`, `background` and
  `client_metadata` are Cirrus's and stay here. `truncation` is `auto` unless the client said
  `disabled`, as Cirrus trims translated conversations to the context window unless told not to;
- what comes back carries Cirrus's response id, the public model name (set by the router),
  the client's `store`, `previous_response_id` and `metadata`, so a passed-through Response looks
  the same as a translated one and can be read back, listed and continued the same way. Item ids
  are the provider's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.models.responses import ResponseCreate, ResponseRecord
from shared.services.responses.translate import response_error, snapshot

Item = dict[str, Any]
Event = dict[str, Any]
# The create request's fields that are Cirrus's alone (state, bookkeeping), never sent upstream.
CIRRUS_ONLY = frozenset(
    {"previous_response_id", "background", "store", "metadata", "client_metadata", "stream", "stream_options"}
)
# Item types whose `id` is dropped when an earlier turn is sent again (`store: false` upstream: the
# provider has no such item to refer to).
_RESENT_WITHOUT_ID = frozenset({"message", "function_call", "function_call_output"})


def native_body(request: ResponseCreate, history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The request for the provider's `/responses`: the client's fields as it sent them, after the
    conversation `history` (stored items) when it continues one; `model` is the public name (the
    adapter puts the deployment's in)."""
    body = request.model_dump(mode="json", exclude_unset=True, by_alias=True, exclude=set(CIRRUS_ONLY))
    if history:
        own = (
            body["input"] if isinstance(body["input"], list) else [{"role": "user", "content": body["input"]}]
        )
        body["input"] = [*resent(history), *own]
    body["store"] = False
    body.setdefault("truncation", "auto")
    if request.stream and request.stream_options:
        body["stream_options"] = request.stream_options
    return body


def resent(history: Sequence[Mapping[str, Any]]) -> list[Item]:
    """Earlier items as input again: without their ids, and without reasoning the provider can only
    read back from its own store (a reasoning item without `encrypted_content`)."""
    items: list[Item] = []
    for item in history:
        kind = item.get("type")
        if kind == "reasoning":
            if item.get("encrypted_content"):
                items.append(dict(item))
        elif kind in _RESENT_WITHOUT_ID:
            items.append({k: v for k, v in item.items() if k != "id"})
    return items


def presented(response: Mapping[str, Any], record: ResponseRecord, request: ResponseCreate) -> dict[str, Any]:
    """The provider's Response as the client sees it: Cirrus's id and the client's own settings."""
    return {
        **response,
        "id": record.id,
        "model": record.model,
        "background": False,
        "store": request.stored,
        "previous_response_id": request.previous_response_id,
        "metadata": request.metadata or {},
    }


def take_answer(record: ResponseRecord, response: Mapping[str, Any]) -> None:
    """The provider's Response, ended, into the record Cirrus stores."""
    status = response.get("status")
    record.status = status if status in ("completed", "incomplete", "failed", "cancelled") else "failed"
    record.output = list(response.get("output") or [])
    record.usage = response.get("usage")
    record.error = response.get("error")
    record.incomplete_details = response.get("incomplete_details")


class NativeEvents:
    """A passed-through stream's events, presented as the client sees them, with what a failure
    after the first event needs: the output so far and the next sequence number."""

    def __init__(self, record: ResponseRecord, request: ResponseCreate) -> None:
        self._record = record
        self._request = request
        self._next = 0
        self._latest: dict[str, Any] = snapshot(record)(status="in_progress", output=[])
        self._items: dict[int, Item] = {}  # output items by index: added, then done

    def present(self, event: Event) -> Event:
        sequence = event.get("sequence_number")
        if isinstance(sequence, int):
            self._next = max(self._next, sequence + 1)
        response = event.get("response")
        if isinstance(response, dict):
            event["response"] = self._latest = presented(response, self._record, self._request)
        item, index = event.get("item"), event.get("output_index")
        if isinstance(item, dict) and isinstance(index, int):
            self._items[index] = item
        return event

    def fail(self, code: str | None, message: str, param: str | None = None) -> list[Event]:
        """An `error` event, then `response.failed` with the output so far (open items `incomplete`)."""
        output = []
        for index in sorted(self._items):
            item = dict(self._items[index])
            if item.get("status") == "in_progress":
                item["status"] = "incomplete"
            output.append(item)
        failed = {
            **self._latest,
            "status": "failed",
            "output": output,
            "error": response_error(code, message),
        }
        failed.pop("usage", None)
        first = self._next
        self._next += 2
        return [
            {"type": "error", "sequence_number": first, "code": code, "message": message, "param": param},
            {"type": "response.failed", "sequence_number": first + 1, "response": failed},
        ]
