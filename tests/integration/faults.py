"""A seeded fault injector around the storage protocols (DocumentStore, BlobStore, QueueStore).

Wraps the real adapters (so the emulators still do the work) and makes calls fail transiently at a
set rate, each failure one of the kinds Azure's services really produce, raised as the Azure SDKs
raise them (the adapters pass these through):

- `connection`: the request never got there (`ServiceRequestError`);
- `throttled`: 429, request rate too large (`HttpResponseError` / `CosmosHttpResponseError`);
- `unavailable`: 503;
- `timeout`: no answer in time (`ServiceResponseTimeoutError`);
- `unknown_outcome`: the write happened, the reply was lost (`ServiceResponseError` raised after the
  call went through). Only writes get this one: it is what makes idempotence matter.

The same seed gives the same faults for the same sequence of calls. `stats` counts what happened.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from azure.core.exceptions import (
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.cosmos.exceptions import CosmosHttpResponseError

T = TypeVar("T")
KINDS = ("connection", "throttled", "unavailable", "timeout", "unknown_outcome")


class FaultPlan:
    """Which call fails, and how: seeded, `rate` of the calls (only on the operations named)."""

    def __init__(self, seed: int, rate: float, *, kinds: tuple[str, ...] = KINDS) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.kinds = kinds
        self.enabled = True
        self.stats: Counter[str] = Counter()

    def draw(self, operation: str, *, write: bool) -> str | None:
        self.stats[f"calls:{operation}"] += 1
        if not self.enabled or self.rng.random() >= self.rate:
            return None
        kinds = self.kinds if write else tuple(k for k in self.kinds if k != "unknown_outcome")
        kind = self.rng.choice(kinds) if kinds else None
        if kind is not None:
            self.stats[f"fault:{kind}"] += 1
        return kind

    async def run(self, operation: str, call: Callable[[], Awaitable[T]], *, write: bool, cosmos: bool) -> T:
        kind = self.draw(operation, write=write)
        if kind is None:
            return await call()
        if kind == "unknown_outcome":
            await call()  # it happened; the caller will never know
            raise ServiceResponseError(f"injected: {operation} done, reply lost")
        raise _error(kind, operation, cosmos=cosmos)


def _error(kind: str, operation: str, *, cosmos: bool) -> Exception:
    message = f"injected {kind} on {operation}"
    if kind == "connection":
        return ServiceRequestError(message)
    if kind == "timeout":
        return ServiceResponseTimeoutError(message)
    status = 429 if kind == "throttled" else 503
    if cosmos:
        return CosmosHttpResponseError(status_code=status, message=message)
    error = HttpResponseError(message=message)
    error.status_code = status
    return error


class FaultyDocumentStore:
    """DocumentStore with injected faults; ensure_* and aclose pass through untouched."""

    def __init__(self, inner: Any, plan: FaultPlan) -> None:
        self._inner, self._plan = inner, plan

    async def read(self, container: str, id: str, pk: str) -> dict[str, Any] | None:
        return await self._plan.run(
            "cosmos.read", lambda: self._inner.read(container, id, pk), write=False, cosmos=True
        )

    async def create(self, container: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        return await self._plan.run(
            "cosmos.create", lambda: self._inner.create(container, doc), write=True, cosmos=True
        )

    async def upsert(self, container: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        return await self._plan.run(
            "cosmos.upsert", lambda: self._inner.upsert(container, doc), write=True, cosmos=True
        )

    async def replace(
        self, container: str, doc: Mapping[str, Any], *, etag: str | None = None
    ) -> dict[str, Any]:
        return await self._plan.run(
            "cosmos.replace", lambda: self._inner.replace(container, doc, etag=etag), write=True, cosmos=True
        )

    async def delete(self, container: str, id: str, pk: str, *, etag: str | None = None) -> bool:
        return await self._plan.run(
            "cosmos.delete", lambda: self._inner.delete(container, id, pk, etag=etag), write=True, cosmos=True
        )

    async def query(
        self, container: str, sql: str, parameters: Any = None, **kwargs: Any
    ) -> list[dict[str, Any]]:
        return await self._plan.run(
            "cosmos.query",
            lambda: self._inner.query(container, sql, parameters, **kwargs),
            write=False,
            cosmos=True,
        )

    def __getattr__(self, name: str) -> Any:  # ensure_database, ensure_container, ping, aclose
        return getattr(self._inner, name)


class FaultyBlobStore:
    """BlobStore with injected faults (a streamed `put` fails before it starts, or after it is done).

    `written(name, data)` is told of every blob really written (an unknown outcome included), with
    its bytes when they were given whole: tests learn when a piece of work became durable."""

    def __init__(
        self, inner: Any, plan: FaultPlan, written: Callable[[str, bytes | None], None] | None = None
    ) -> None:
        self._inner, self._plan = inner, plan
        self._written = written

    async def put(self, container: str, name: str, data: bytes | AsyncIterator[bytes], **kwargs: Any) -> int:
        async def write() -> int:
            size = await self._inner.put(container, name, data, **kwargs)
            if self._written is not None:
                self._written(name, data if isinstance(data, bytes) else None)
            return size

        return await self._plan.run("blob.put", write, write=True, cosmos=False)

    async def get(self, container: str, name: str) -> bytes | None:
        return await self._plan.run(
            "blob.get", lambda: self._inner.get(container, name), write=False, cosmos=False
        )

    async def delete(self, container: str, name: str) -> bool:
        return await self._plan.run(
            "blob.delete", lambda: self._inner.delete(container, name), write=True, cosmos=False
        )

    async def names(self, container: str, prefix: str) -> list[str]:
        return await self._plan.run(
            "blob.names", lambda: self._inner.names(container, prefix), write=False, cosmos=False
        )

    async def stream(self, container: str, name: str) -> AsyncIterator[bytes]:
        kind = self._plan.draw("blob.stream", write=False)
        if kind is not None:
            raise _error(kind, "blob.stream", cosmos=False)
        async for chunk in self._inner.stream(container, name):
            yield chunk

    def __getattr__(self, name: str) -> Any:  # ensure_container, ping, aclose
        return getattr(self._inner, name)


class FaultyQueueStore:
    """QueueStore with injected faults on `send`."""

    def __init__(self, inner: Any, plan: FaultPlan) -> None:
        self._inner, self._plan = inner, plan

    async def send(self, queue: str, message: Mapping[str, Any], *, delay_seconds: int = 0) -> str:
        return await self._plan.run(
            "queue.send",
            lambda: self._inner.send(queue, message, delay_seconds=delay_seconds),
            write=True,
            cosmos=False,
        )

    def __getattr__(self, name: str) -> Any:  # ensure_queue, ping, aclose
        return getattr(self._inner, name)
