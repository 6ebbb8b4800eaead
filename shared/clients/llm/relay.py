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

from opentelemetry.trace import Span

from shared.clients.llm import errors
from shared.clients.llm.deployments import Deployment
from shared.clients.llm.errors import AttemptFailed
from shared.clients.llm.selection import Selector
from shared.clients.llm.spans import end_attempt
from shared.clients.protocols import ServedBy

# (prompt tokens, output tokens) from the prompt and the generated text, when the provider sent none.
Estimator = Callable[[str], tuple[int, int]]


@dataclass
class OpenedStream:
    """An attempt whose first chunk has arrived: from here a failure is the client's to see."""

    deployment: Deployment
    events: AsyncIterator[dict[str, Any]]
    first: dict[str, Any]
    span: Span
    started: float  # perf_counter at the attempt's start
    first_at: float  # perf_counter when the first chunk arrived
    group_size: int  # deployments of its model name (cooldown rules differ for a lone one)


class RoutedStream:
    """See the module docstring, and `ModelStream` in shared.clients.protocols."""

    def __init__(
        self,
        opened: OpenedStream,
        served_by: ServedBy,
        selector: Selector,
        *,
        forward_usage: bool,
        estimate: Estimator,
    ) -> None:
        self.served_by = served_by
        self.usage: dict[str, Any] | None = None
        self.usage_estimated = False
        self.finish_reasons: list[str] = []
        self._opened = opened
        self._selector = selector
        self._forward_usage = forward_usage
        self._estimate = estimate
        self._text: list[str] = []
        self._settled = False

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
            self._end(failure)
            raise failure.error from None
        except BaseException as exc:  # the client went away, or the task was cancelled
            self._end(exc, verdict=False)
            raise
        if not finish_reasons:
            # The connection ended cleanly but the answer did not: never pass that off as complete.
            failure = errors.cut_short()
            self._end(failure)
            raise failure.error
        self._end(None)

    def _end(self, failure: BaseException | None, *, verdict: bool = True) -> None:
        if self._settled:
            return
        self._settled = True
        opened = self._opened
        self._settle_usage()
        if not verdict:
            self._selector.ended(opened.deployment)
        elif isinstance(failure, AttemptFailed):
            self._selector.failed(opened.deployment, failure, opened.group_size)
        else:
            tokens = int((self.usage or {}).get("total_tokens") or 0)
            self._selector.succeeded(opened.deployment, opened.first_at - opened.started, tokens)
        end_attempt(opened.span, failure)

    def _settle_usage(self) -> None:
        """Without the provider's figures, count the prompt and what arrived with tiktoken."""
        if self.usage and self.usage.get("total_tokens"):
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
        if not self._settled:  # never iterated to the end (closed before or during the first chunk)
            self._end(None, verdict=False)


def _keep_without_usage(chunk: dict[str, Any], choices: Any) -> bool:
    """For a client that did not ask for usage: drop the usage-only chunk and the `usage` key."""
    if "usage" not in chunk:
        return True
    if not choices and chunk["usage"]:
        return False
    del chunk["usage"]
    return True
