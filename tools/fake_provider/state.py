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
    `deployment` is the Azure deployment named in the path (`/openai/deployments/{deployment}/...`),
    `api_version` the `api-version` query parameter; both are None when absent.
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
    deployment: str | None = None
    api_version: str | None = None

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
            deployment=request.match_info.get("deployment"),
            api_version=request.query.get("api-version"),
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
        entry, behaviour, source = self._find(model, profile)
        if entry is not None:
            entry.remaining -= 1
            if entry.remaining == 0:
                self.queue.remove(entry)
        return self._count(behaviour, source), source

    def peek(self, model: str | None, profile: tuple[str, Behaviour] | None) -> tuple[Behaviour, str]:
        """What `choose` would pick, without using up a queued script or a `fail_first` count."""
        _, behaviour, source = self._find(model, profile)
        return behaviour, source

    def _find(
        self, model: str | None, profile: tuple[str, Behaviour] | None
    ) -> tuple[QueuedBehaviour | None, Behaviour, str]:
        for entry in self.queue:
            if entry.model is None or entry.model == model:
                return entry, merge(self.default, entry.behaviour), f"queue:{entry.id}"
        if profile is not None:
            return None, merge(self.default, profile[1]), f"profile:{profile[0]}"
        return None, self.default, "default"

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
