"""One provider attempt's books: its span and its deployment's health, settled exactly once."""

from __future__ import annotations

import time

from shared.clients.llm.deployments import Deployment
from shared.clients.llm.errors import AttemptFailed
from shared.clients.llm.operations import Operation
from shared.clients.llm.selection import Selector
from shared.clients.llm.spans import attempt_span, end_attempt


class Attempt:
    """Opened when a deployment is called; closed by one of `succeeded`, `failed` or `abandoned`.

    A JSON call closes it when the answer arrives; a stream when its last chunk has been relayed.
    """

    def __init__(self, selector: Selector, deployment: Deployment, op: Operation, group_size: int) -> None:
        self.deployment = deployment
        self.started = time.perf_counter()
        self._selector = selector
        self._group_size = group_size  # the cooldown rules differ for a name's only deployment
        self._span = attempt_span(deployment, op)
        self._open = True
        selector.started(deployment)

    def succeeded(self, latency: float, tokens: int) -> None:
        """`latency`: to the whole answer, or to a stream's first chunk."""
        if self._close():
            self._selector.succeeded(self.deployment, latency, tokens)
            end_attempt(self._span)

    def failed(self, failure: AttemptFailed) -> None:
        """The provider failed: it counts against the deployment."""
        if self._close():
            self._selector.failed(self.deployment, failure, self._group_size)
            end_attempt(self._span, failure)

    def abandoned(self) -> None:
        """The caller went away (cancelled, disconnected): no verdict on the deployment."""
        if self._close():
            self._selector.ended(self.deployment)
            self._span.set_attribute("cirrus.abandoned", True)
            end_attempt(self._span)

    def _close(self) -> bool:
        was_open, self._open = self._open, False
        return was_open
