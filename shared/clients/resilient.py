"""Storage calls that ride over passing faults: the Cosmos, Blob and Queue protocols, retried.

The Azure SDKs retry some faults themselves; what still comes through (a connection that failed,
429, 503, a timeout, a reply that was lost) is retried here, a few times with a short jittered
backoff (tenacity), before the caller sees it. A queue handler made of fifty storage calls would
otherwise fail its whole message on any one of them, and at a bad moment never finish at all.

What may be retried is decided per operation:
- reads, `upsert`, a `put` of bytes and a queue `send` are retried as they are (a message sent
  twice is delivered at least once anyway: every handler is idempotent);
- a write whose reply was lost may have happened. A `create` retried after that and refused as a
  conflict, or a `replace` refused because the ETag moved, is checked: if the stored item is what
  was written, the write succeeded and its result is returned; otherwise the refusal stands.
- a streamed `put` (an iterator, already consumed) and `stream` once bytes have flowed are not
  retried here: their callers retry the whole operation.

Anything else (404s, conflicts, bad requests) is an answer, never retried.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from shared.clients.protocols import BlobStore, CosmosContainerSpec, DocumentStore, QueueStore
from shared.errors import ConflictError, PreconditionFailedError

T = TypeVar("T")
ATTEMPTS = 4
_TRANSIENT_STATUSES = frozenset({408, 429, 449, 500, 502, 503, 504})
# Fields the store adds to an item; they differ between what was written and what was read back.
_SYSTEM_FIELDS = frozenset({"_etag", "_ts", "_rid", "_self", "_attachments", "etag"})


def is_transient(exc: BaseException) -> bool:
    """A fault worth another try: no connection, a throttle or outage, a timeout, a lost reply."""
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return True
    if isinstance(exc, HttpResponseError):
        return getattr(exc, "status_code", None) in _TRANSIENT_STATUSES
    return isinstance(exc, ConnectionError | TimeoutError)


def _outcome_unknown(exc: BaseException) -> bool:
    """The request may have been carried out: it got there, the answer did not come back."""
    return isinstance(exc, ServiceResponseError | TimeoutError)


class Retrying:
    """The retry policy: `ATTEMPTS` tries, jittered exponential waits from 0.1 s up to 2 s."""

    def __init__(self, attempts: int = ATTEMPTS, *, max_wait: float = 2.0) -> None:
        self._attempts = attempts
        self._max_wait = max_wait

    def policy(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_random_exponential(multiplier=0.1, max=self._max_wait),
            retry=retry_if_exception(is_transient),
            reraise=True,
        )

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        async for attempt in self.policy():
            with attempt:
                return await operation()
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


class ResilientDocumentStore:
    """A DocumentStore whose calls are retried; see the module docstring."""

    def __init__(self, inner: DocumentStore, retrying: Retrying | None = None) -> None:
        self._inner = inner
        self._retrying = retrying or Retrying()

    async def read(self, container: str, id: str, pk: str) -> dict[str, Any] | None:
        return await self._retrying.call(lambda: self._inner.read(container, id, pk))

    async def create(self, container: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        maybe_written = False

        async def attempt() -> dict[str, Any]:
            nonlocal maybe_written
            try:
                return await self._inner.create(container, doc)
            except ConflictError:
                if maybe_written and (stored := await self._as_written(container, doc)) is not None:
                    return stored  # the lost reply's write
                raise
            except Exception as exc:
                maybe_written = maybe_written or _outcome_unknown(exc)
                raise

        return await self._retrying.call(attempt)

    async def upsert(self, container: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        return await self._retrying.call(lambda: self._inner.upsert(container, doc))

    async def replace(
        self, container: str, doc: Mapping[str, Any], *, etag: str | None = None
    ) -> dict[str, Any]:
        maybe_written = False

        async def attempt() -> dict[str, Any]:
            nonlocal maybe_written
            try:
                return await self._inner.replace(container, doc, etag=etag)
            except PreconditionFailedError:
                if maybe_written and (stored := await self._as_written(container, doc)) is not None:
                    return stored  # our own write moved the ETag
                raise
            except Exception as exc:
                maybe_written = maybe_written or _outcome_unknown(exc)
                raise

        return await self._retrying.call(attempt)

    async def delete(self, container: str, id: str, pk: str, *, etag: str | None = None) -> bool:
        maybe_deleted = False

        async def attempt() -> bool:
            nonlocal maybe_deleted
            try:
                deleted = await self._inner.delete(container, id, pk, etag=etag)
            except PreconditionFailedError:
                if maybe_deleted and await self._inner.read(container, id, pk) is None:
                    return True
                raise
            except Exception as exc:
                maybe_deleted = maybe_deleted or _outcome_unknown(exc)
                raise
            return deleted or maybe_deleted  # gone on a retry: the lost reply's delete

        return await self._retrying.call(attempt)

    async def query(
        self,
        container: str,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        pk: str | None = None,
        max_items: int | None = None,
    ) -> list[dict[str, Any]]:
        return await self._retrying.call(
            lambda: self._inner.query(container, sql, parameters, pk=pk, max_items=max_items)
        )

    def iterate(
        self, container: str, sql: str, parameters: Mapping[str, Any] | None = None, *, pk: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        # Not retried: rows already handed on cannot be taken back. A failure fails the read.
        return self._inner.iterate(container, sql, parameters, pk=pk)

    async def ensure_database(self) -> None:
        await self._retrying.call(self._inner.ensure_database)

    async def ensure_container(self, spec: CosmosContainerSpec) -> None:
        await self._retrying.call(lambda: self._inner.ensure_container(spec))

    async def ping(self) -> None:
        await self._inner.ping()  # health checks report faults, they do not hide them

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def _as_written(self, container: str, doc: Mapping[str, Any]) -> dict[str, Any] | None:
        """The stored item if it is `doc` (what was written), else None."""
        stored = await self._inner.read(container, str(doc["id"]), str(doc["pk"]))
        if stored is None:
            return None
        mine = {k: v for k, v in doc.items() if k not in _SYSTEM_FIELDS}
        theirs = {k: v for k, v in stored.items() if k not in _SYSTEM_FIELDS}
        return stored if mine == theirs else None


class ResilientBlobStore:
    """A BlobStore whose calls are retried; see the module docstring."""

    def __init__(self, inner: BlobStore, retrying: Retrying | None = None) -> None:
        self._inner = inner
        self._retrying = retrying or Retrying()

    async def put(
        self,
        container: str,
        name: str,
        data: bytes | AsyncIterator[bytes],
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        def attempt() -> Awaitable[int]:
            return self._inner.put(container, name, data, content_type=content_type, metadata=metadata)

        if not isinstance(data, bytes):
            return await attempt()  # an iterator can be read once: its caller retries
        return await self._retrying.call(attempt)

    async def get(self, container: str, name: str) -> bytes | None:
        return await self._retrying.call(lambda: self._inner.get(container, name))

    async def stream(self, container: str, name: str) -> AsyncIterator[bytes]:
        chunks, first = await self._retrying.call(lambda: self._opened(container, name))
        if first is None:
            return
        yield first
        async for chunk in chunks:
            yield chunk

    async def _opened(self, container: str, name: str) -> tuple[AsyncIterator[bytes], bytes | None]:
        """A fresh download and its first bytes: what may be retried before anything has flowed."""
        chunks = self._inner.stream(container, name)
        try:
            return chunks, await anext(chunks)
        except StopAsyncIteration:
            return chunks, None

    async def delete(self, container: str, name: str) -> bool:
        return await self._retrying.call(lambda: self._inner.delete(container, name))

    async def names(self, container: str, prefix: str) -> list[str]:
        return await self._retrying.call(lambda: self._inner.names(container, prefix))

    async def ensure_container(self, name: str) -> None:
        await self._retrying.call(lambda: self._inner.ensure_container(name))

    async def ping(self, container: str) -> None:
        await self._inner.ping(container)

    async def aclose(self) -> None:
        await self._inner.aclose()


class ResilientQueueStore:
    """A QueueStore whose calls are retried (a message may then arrive twice: at least once)."""

    def __init__(self, inner: QueueStore, retrying: Retrying | None = None) -> None:
        self._inner = inner
        self._retrying = retrying or Retrying()

    async def send(self, queue: str, message: Mapping[str, Any], *, delay_seconds: int = 0) -> str:
        return await self._retrying.call(
            lambda: self._inner.send(queue, message, delay_seconds=delay_seconds)
        )

    async def ensure_queue(self, name: str) -> None:
        await self._retrying.call(lambda: self._inner.ensure_queue(name))

    async def ping(self, queue: str) -> None:
        await self._inner.ping(queue)

    async def aclose(self) -> None:
        await self._inner.aclose()
