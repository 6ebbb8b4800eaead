"""A routed binary answer (speech): the provider's bytes relayed as they arrive, untouched.

Like a chat stream (`relay`), it counts as failed, and so is retried or falls back invisibly, until
its first block has arrived; after that a failure ends the relay with the error raised, which the
HTTP layer turns into a cut connection (a binary body has no room for an in-band error event).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from shared.clients.llm.attempts import Attempt
from shared.clients.llm.errors import AttemptFailed
from shared.clients.llm.operations import OpenedBytes
from shared.clients.protocols import ServedBy


@dataclass
class OpenedBody:
    """An attempt whose first block has arrived: from here a failure is the client's to see."""

    attempt: Attempt  # still open: the relay closes it
    body: OpenedBytes
    first: bytes
    first_at: float  # perf_counter when the first block arrived


class RoutedBytes:
    """Implements `ByteStream` (shared.clients.protocols)."""

    def __init__(self, opened: OpenedBody, served_by: ServedBy) -> None:
        self.served_by = served_by
        self.content_type = opened.body.content_type
        self._opened = opened

    async def __aiter__(self) -> AsyncIterator[bytes]:
        opened = self._opened
        try:
            yield opened.first
            async for block in opened.body.chunks:
                yield block
        except AttemptFailed as failure:
            opened.attempt.failed(failure)
            raise failure.error from None
        except BaseException:  # the client went away, or the task was cancelled
            opened.attempt.abandoned()
            raise
        opened.attempt.succeeded(opened.first_at - opened.attempt.started, 0)

    async def aclose(self) -> None:
        closer = getattr(self._opened.body.chunks, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()
        self._opened.attempt.abandoned()  # a no-op once the relay has settled it
