"""A routed Anthropic stream: an Anthropic deployment's events relayed as they arrive.

Each event is already parsed (once, by anthropic_wire); here it is only read for what Cirrus
needs (the usage in `message_start` and `message_delta`, the stop reason, the text for a token
count if the provider reports none) and changed where it must be: the Message's `model` becomes
the public name that answered. The usage is kept in chat terms (prompt_tokens counting cache reads
and writes too), so metering reads it as it reads a chat stream's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.clients.llm.relay import Estimator, OpenedStream, Relay
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


class RoutedMessageStream(Relay):
    """See the module docstring, and `ModelStream` in shared.clients.protocols."""

    wire: Wire = "anthropic"

    def __init__(self, opened: OpenedStream, served_by: ServedBy, *, estimate: Estimator) -> None:
        super().__init__(opened, served_by, estimate=estimate)
        self._anthropic_usage: dict[str, Any] = {}
        self._final = False  # message_delta's usage (the final output count) has arrived
        self._stopped = False  # message_stop has arrived

    def _see(self, event: dict[str, Any]) -> bool:
        kind, usage = event.get("type"), self._anthropic_usage
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            self._text.append(delta.get("text") or delta.get("partial_json") or delta.get("thinking") or "")
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
            self._stopped = True
        return True

    def _complete(self) -> bool:
        return self._stopped

    def _settle_usage(self) -> None:
        """The provider's figures; for a stream that ended early, the output counted with tiktoken
        (and the prompt too when message_start never came)."""
        if self.usage is not None:
            return
        usage = chat_usage(self._anthropic_usage)
        if self._final:
            self.usage = usage
        else:
            self._count(prompt_tokens=usage["prompt_tokens"])
