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


class Relay:
    """What every routed stream does with its events: read each once on the way through (`_see`),
    settle the usage when it ends (the provider's, else a count with tiktoken), and give the
    attempt its verdict: success when the answer completed (`_complete`), a failure the client
    sees when it broke or ended early, abandoned when the client left. Subclasses know their wire.
    See `ModelStream` in shared.clients.protocols."""

    wire: Wire

    def __init__(self, opened: OpenedStream, served_by: ServedBy, *, estimate: Estimator) -> None:
        self.served_by = served_by
        self.usage: dict[str, Any] | None = None
        self.usage_estimated = False
        self.finish_reasons: list[str] = []
        self._opened = opened
        self._estimate = estimate
        self._text: list[str] = []  # what the model wrote, for a count when the provider sends none

    def _see(self, event: dict[str, Any]) -> bool:
        """Read (and where needed change) one event; False holds it back from the client."""
        raise NotImplementedError

    def _complete(self) -> bool:
        """Whether the answer ended as the wire says a complete answer ends."""
        return bool(self.finish_reasons)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        opened = self._opened
        event = opened.first
        try:
            while True:
                if self._see(event):
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
        if not self._complete():
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
        self._count()

    def _count(self, prompt_tokens: int = 0) -> None:
        """The usage counted with tiktoken (the prompt's count unless `prompt_tokens` is known)."""
        with contextlib.suppress(Exception):
            prompt, output = self._estimate("".join(self._text))
            prompt = prompt_tokens or prompt
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


class RoutedStream(Relay):
    """Chat (and legacy completion) chunks; see the module docstring."""

    wire: Wire = "chat"  # what a Messages request that reached a chat deployment is streamed in

    def __init__(
        self, opened: OpenedStream, served_by: ServedBy, *, forward_usage: bool, estimate: Estimator
    ) -> None:
        super().__init__(opened, served_by, estimate=estimate)
        self._forward_usage = forward_usage

    def _see(self, chunk: dict[str, Any]) -> bool:
        text = self._text
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        choices = chunk.get("choices") or ()
        for choice in choices:
            if reason := choice.get("finish_reason"):
                self.finish_reasons.append(reason)
            delta = choice.get("delta")
            if delta is None:  # a legacy completion chunk
                text.append(choice.get("text") or "")
                continue
            if content := delta.get("content"):
                text.append(content)
            for call in delta.get("tool_calls") or ():
                text.append((call.get("function") or {}).get("arguments") or "")
        chunk["model"] = self.served_by.model
        return self._forward_usage or _keep_without_usage(chunk, choices)


def _keep_without_usage(chunk: dict[str, Any], choices: Any) -> bool:
    """For a client that did not ask for usage: drop the usage-only chunk and the `usage` key."""
    if "usage" not in chunk:
        return True
    if not choices and chunk["usage"]:
        return False
    del chunk["usage"]
    return True
