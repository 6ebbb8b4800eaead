"""A routed Responses stream: a native deployment's typed events relayed as they arrive.

Each event is already parsed (once, by openai_wire); here it is only read for what Cirrus needs
(the usage and status in the closing `response.completed` / `response.incomplete` /
`response.failed`, the text for a token count if the provider reports none) and changed where it
must be: the Response's `model` becomes the public name that answered. Sequence numbers are the
provider's. An `error` event raises (`raising_errors`), as a chat stream's `{"error": ...}` does:
before the first event the attempt fails and is retried, after it the service ends the stream in
band; a stream that ends without a closing event is cut short, never complete.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from shared.clients.llm import errors
from shared.clients.llm.relay import Relay
from shared.clients.protocols import Wire

CLOSING = frozenset({"response.completed", "response.incomplete", "response.failed"})


def chat_usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """A Response's usage in chat terms, as metering reads every answer's."""
    usage = usage or {}
    prompt, output = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}


def output_text(response: Mapping[str, Any]) -> str:
    """The text a Response wrote (messages and function call arguments), for a token count."""
    texts: list[str] = []
    for item in response.get("output") or ():
        if item.get("type") == "function_call":
            texts.append(str(item.get("arguments") or ""))
        elif item.get("type") == "message":
            texts.extend(
                str(part.get("text") or part.get("refusal") or "") for part in item.get("content") or ()
            )
    return "".join(texts)


async def raising_errors(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """The provider's events, an `error` event (`{"type": "error", "code", "message"}`) raised as
    the attempt's failure: before the first event it is retried or falls back like any other."""
    try:
        async for event in events:
            if event.get("type") == "error":
                raise errors.stream_error(
                    {"error": {"message": event.get("message"), "code": event.get("code")}}
                )
            yield event
    finally:
        closer = getattr(events, "aclose", None)
        if closer is not None:
            await closer()


class RoutedResponseStream(Relay):
    """See the module docstring, and `ModelStream` in shared.clients.protocols."""

    wire: Wire = "responses"

    def _see(self, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        if kind in ("response.output_text.delta", "response.function_call_arguments.delta"):
            self._text.append(str(event.get("delta") or ""))
        response = event.get("response")
        if isinstance(response, dict):
            response["model"] = self.served_by.model
            if kind in CLOSING:  # the answer is complete once one has come
                self.finish_reasons.append(str(response.get("status") or kind))
                if response.get("usage"):
                    self.usage = chat_usage(response["usage"])
        return True
