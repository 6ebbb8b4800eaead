"""Per-app mutable state: the behaviour queue, fail_first counters and the request log."""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web

from .behaviour import Behaviour, merge


@dataclass
class RequestRecord:
    """One API request as received, and how far answering it got.

    Times are Unix epoch seconds. `streaming` is true while a streamed response is being written.
    """

    id: int
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float
    stream: bool = False
    streaming: bool = False
    first_byte_at: float | None = None
    finished_at: float | None = None
    status: int | None = None  # None when the connection was dropped without a response
    source: str | None = None  # which behaviour answered: "queue:<id>", "profile:<spec>", "default"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QueuedBehaviour:
    """A scripted behaviour for the next `remaining` requests matching `model` (None: any)."""

    id: int
    behaviour: Behaviour
    remaining: int
    model: str | None


class ProviderState:
    """Everything a fake provider instance remembers between requests."""

    def __init__(self, default: Behaviour, models: Iterable[str], max_log: int) -> None:
        self.default = default
        self.models = tuple(models)
        self.queue: list[QueuedBehaviour] = []
        self.counters: dict[str, int] = {}
        self.requests: deque[RequestRecord] = deque(maxlen=max_log)
        self.closing = False  # set on app shutdown so long waits end promptly
        self._request_ids = itertools.count(1)
        self._queue_ids = itertools.count(1)

    def record(self, request: web.Request, body: Any) -> RequestRecord:
        """Start a log entry for an API request."""
        entry = RequestRecord(
            id=next(self._request_ids),
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            body=body,
            received_at=time.time(),
        )
        self.requests.append(entry)
        return entry

    def enqueue(self, behaviour: Behaviour, times: int, model: str | None) -> QueuedBehaviour:
        entry = QueuedBehaviour(next(self._queue_ids), behaviour, times, model)
        self.queue.append(entry)
        return entry

    def reset(self) -> None:
        """Forget queued behaviours, fail_first counters and the request log."""
        self.queue.clear()
        self.counters.clear()
        self.requests.clear()

    def choose(self, model: str | None, profile: tuple[str, Behaviour] | None) -> tuple[Behaviour, str]:
        """The behaviour for a request and its source: first matching queued one, profile, default."""
        for entry in self.queue:
            if entry.model is None or entry.model == model:
                entry.remaining -= 1
                if entry.remaining == 0:
                    self.queue.remove(entry)
                source = f"queue:{entry.id}"
                return self._count(merge(self.default, entry.behaviour), source), source
        if profile is not None:
            source = f"profile:{profile[0]}"
            return self._count(merge(self.default, profile[1]), source), source
        return self._count(self.default, "default"), "default"

    def _count(self, behaviour: Behaviour, source: str) -> Behaviour:
        """Apply `fail_first`: fail (500 unless a failure is set) the first N uses of a source."""
        if behaviour.fail_first <= 0:
            return behaviour
        seen = self.counters.get(source, 0)
        self.counters[source] = seen + 1
        if seen >= behaviour.fail_first:
            return behaviour.model_copy(update={"fault": "none", "status": None})
        if behaviour.fault == "none" and behaviour.status is None:
            return behaviour.model_copy(update={"fault": "500"})
        return behaviour


STATE = web.AppKey("fake_provider_state", ProviderState)
