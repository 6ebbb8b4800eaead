"""A routed Anthropic stream: an Anthropic deployment's events relayed as they arrive.

Each event is already parsed (once, by anthropic_wire); here it is only read for what Cirrus
needs (the usage in `message_start` and `message_delta`, the stop reason, the text for a token
count if the provider reports none) and changed where it must be: the Message's `model` becomes
the public name that answered. The usage is kept in chat terms (prompt_tokens counting cache reads
and writes too), so metering reads it as it reads a chat stream's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from shared.clients.llm import errors
from shared.clients.llm.errors import AttemptFailed
from shared.clients.llm.relay import Estimator, OpenedStream
from shared.clients.protocols import ServedBy, Wire


def chat_usage(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Anthropic's usage in chat terms: every input token (cached or not) is a prompt token."""
    usage = usage or {}
    prompt = sum(
        int(usage.get(key) or 0)
        for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )
    output = int(usage.get("output_tokens") or 0)
    return {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}


class RoutedMessageStream:
    """See the module docstring, and `ModelStream` in shared.clients.protocols."""

    wire: Wire = "anthropic"

    def __init__(self, opened: OpenedStream, served_by: ServedBy, *, estimate: Estimator) -> None:
        self.served_by = served_by
        self.usage: dict[str, Any] | None = None
        self.usage_estimated = False
        self.finish_reasons: list[str] = []
        self._opened = opened
        self._estimate = estimate
        self._anthropic_usage: dict[str, Any] = {}
        self._final = False  # message_delta's usage (the final output count) has arrived
        self._text: list[str] = []

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        opened, usage, text = self._opened, self._anthropic_usage, self._text
        event = opened.first
        stopped = False
        try:
            while True:
                kind = event.get("type")
                if kind == "content_block_delta":
                    delta = event.get("delta") or {}
                    text.append(delta.get("text") or delta.get("partial_json") or delta.get("thinking") or "")
                elif kind == "message_start":
                    message = event.get("message") or {}
                    message["model"] = self.served_by.model
                    usage.update({k: v for k, v in (message.get("usage") or {}).items() if v is not None})
                elif kind == "message_delta":
                    usage.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
                    self._final = True
                    if reason := (event.get("delta") or {}).get("stop_reason"):
                        self.finish_reasons.append(str(reason))
                elif kind == "message_stop":
                    stopped = True
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
        if not stopped:
            # The connection ended cleanly but the answer did not: never pass that off as complete.
            cut = errors.cut_short()
            opened.attempt.failed(cut)
            raise cut.error
        tokens = int((self.usage or {}).get("total_tokens") or 0)
        opened.attempt.succeeded(opened.first_at - opened.attempt.started, tokens)

    def _settle_usage(self) -> None:
        """The provider's figures; for a stream that ended early, the output counted with tiktoken
        (and the prompt too when message_start never came)."""
        if self.usage is not None:
            return
        usage = chat_usage(self._anthropic_usage)
        if self._final:
            self.usage = usage
            return
        with contextlib.suppress(Exception):
            prompt, output = self._estimate("".join(self._text))
            prompt = usage["prompt_tokens"] or prompt
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
