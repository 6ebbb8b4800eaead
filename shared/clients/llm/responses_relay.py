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

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from shared.clients.llm import errors
from shared.clients.llm.errors import AttemptFailed
from shared.clients.llm.relay import Estimator, OpenedStream
from shared.clients.protocols import ServedBy

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


class RoutedResponseStream:
    """See the module docstring, and `ModelStream` in shared.clients.protocols."""

    wire = "responses"

    def __init__(self, opened: OpenedStream, served_by: ServedBy, *, estimate: Estimator) -> None:
        self.served_by = served_by
        self.usage: dict[str, Any] | None = None
        self.usage_estimated = False
        self.finish_reasons: list[str] = []
        self._opened = opened
        self._estimate = estimate
        self._text: list[str] = []

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        opened, model, text = self._opened, self.served_by.model, self._text
        event = opened.first
        closed = False
        try:
            while True:
                kind = event.get("type")
                if kind in ("response.output_text.delta", "response.function_call_arguments.delta"):
                    text.append(str(event.get("delta") or ""))
                response = event.get("response")
                if isinstance(response, dict):
                    response["model"] = model
                    if kind in CLOSING:
                        closed = True
                        self.finish_reasons.append(str(response.get("status") or kind))
                        if response.get("usage"):
                            self.usage = chat_usage(response["usage"])
                yield event
                try:
                    event = await anext(opened.events)
                except StopAsyncIteration:
                    break
        except AttemptFailed as failure:
            self._settle_usage()
            opened.attempt.failed(failure)
            raise failure.error from None
        except BaseException:  # the client went away, or the task was cancelled
            self._settle_usage()
            opened.attempt.abandoned()
            raise
        self._settle_usage()
        if not closed:
            # The connection ended cleanly but the answer did not: never pass that off as complete.
            failure = errors.cut_short()
            opened.attempt.failed(failure)
            raise failure.error
        tokens = int((self.usage or {}).get("total_tokens") or 0)
        opened.attempt.succeeded(opened.first_at - opened.attempt.started, tokens)

    def _settle_usage(self) -> None:
        """Without the provider's figures, count the prompt and what arrived with tiktoken."""
        if self.usage is not None:
            return
        with contextlib.suppress(Exception):
            prompt, output = self._estimate("".join(self._text))
            self.usage = {
                "prompt_tokens": prompt,
                "completion_tokens": output,
                "total_tokens": prompt + output,
            }
            self.usage_estimated = True

    async def aclose(self) -> None:
        closer = getattr(self._opened.events, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()
        self._settle_usage()
        self._opened.attempt.abandoned()
