"""A routed stream: the provider's chunks relayed as they arrive, read once on the way through.

Each chunk is already parsed (once, by the adapter); here it is only looked at for what Cirrus
needs (usage, finish reasons, the text for a token count if the provider reports none) and
changed where it must be: `model` becomes the public name that answered, and the usage chunk Cirrus
asked for on the client's behalf is dropped when the client did not ask for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from shared.clients.llm import errors
from shared.clients.llm.attempts import Attempt
from shared.clients.llm.errors import AttemptFailed
from shared.clients.protocols import ServedBy, Wire

# (prompt tokens, output tokens) from the prompt and the generated text, when the provider sent none.
Estimator = Callable[[str], tuple[int, int]]


@dataclass
class OpenedStream:
    """An attempt whose first chunk has arrived: from here a failure is the client's to see."""

    attempt: Attempt  # still open: the stream closes it
    events: AsyncIterator[dict[str, Any]]
    first: dict[str, Any]
    first_at: float  # perf_counter when the first chunk arrived


class RoutedStream:
    """See the module docstring, and `ModelStream` in shared.clients.protocols."""

    wire: Wire = "chat"  # what a Messages request that reached a chat deployment is streamed in

    def __init__(
        self,
        opened: OpenedStream,
        served_by: ServedBy,
        *,
        forward_usage: bool,
        estimate: Estimator,
    ) -> None:
        self.served_by = served_by
        self.usage: dict[str, Any] | None = None
        self.usage_estimated = False
        self.finish_reasons: list[str] = []
        self._opened = opened
        self._forward_usage = forward_usage
        self._estimate = estimate
        self._text: list[str] = []

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        opened, model, forward_usage = self._opened, self.served_by.model, self._forward_usage
        text, finish_reasons = self._text, self.finish_reasons
        chunk = opened.first
        try:
            while True:
                usage = chunk.get("usage")
                if usage:
                    self.usage = usage
                choices = chunk.get("choices") or ()
                for choice in choices:
                    if reason := choice.get("finish_reason"):
                        finish_reasons.append(reason)
                    delta = choice.get("delta")
                    if delta is None:  # a legacy completion chunk
                        text.append(choice.get("text") or "")
                        continue
                    if content := delta.get("content"):
                        text.append(content)
                    for call in delta.get("tool_calls") or ():
                        text.append((call.get("function") or {}).get("arguments") or "")
                chunk["model"] = model
                if forward_usage or _keep_without_usage(chunk, choices):
                    yield chunk
                try:
                    chunk = await anext(opened.events)
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
        if not finish_reasons:
            # The connection ended cleanly but the answer did not: never pass that off as complete.
            cut = errors.cut_short()
            opened.attempt.failed(cut)
            raise cut.error
        tokens = int((self.usage or {}).get("total_tokens") or 0)
        opened.attempt.succeeded(opened.first_at - opened.attempt.started, tokens)

    def _settle_usage(self) -> None:
        """Without the provider's figures, count the prompt and what arrived with tiktoken."""
        if self.usage_estimated or (self.usage and self.usage.get("total_tokens")):
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
        # Never iterated to its end (closed before or during the first chunk): no verdict.
        self._settle_usage()
        self._opened.attempt.abandoned()


def _keep_without_usage(chunk: dict[str, Any], choices: Any) -> bool:
    """For a client that did not ask for usage: drop the usage-only chunk and the `usage` key."""
    if "usage" not in chunk:
        return True
    if not choices and chunk["usage"]:
        return False
    del chunk["usage"]
    return True
