"""Storage calls retried over passing faults, and writes whose reply was lost told apart from
writes that did not happen."""

from __future__ import annotations

import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.clients.resilient import ResilientBlobStore, ResilientDocumentStore, ResilientQueueStore, Retrying
from shared.errors import ConflictError, PreconditionFailedError
from tests.fakes import InMemoryBlobStore, InMemoryDocumentStore, InMemoryQueueStore

FAST = Retrying(max_wait=0.001)


def throttled() -> HttpResponseError:
    error = HttpResponseError(message="429")
    error.status_code = 429
    return error


class Flaky:
    """Wraps a store: the next calls of `method` fail with `errors`, each after (lost reply) or
    before (never arrived) doing the work."""

    def __init__(self, inner, method: str, *errors: BaseException, after: bool = False):
        self.inner, self.method, self.errors, self.after, self.calls = inner, method, list(errors), after, 0

    def __getattr__(self, name):
        real = getattr(self.inner, name)
        if name != self.method:
            return real

        async def call(*args, **kwargs):
            self.calls += 1
            if self.errors:
                error = self.errors.pop(0)
                if self.after:
                    await real(*args, **kwargs)
                raise error
            return await real(*args, **kwargs)

        return call


async def test_reads_and_upserts_ride_over_connection_errors_and_throttling():
    store = InMemoryDocumentStore()
    await store.upsert("c", {"id": "a", "pk": "a", "v": 1})
    flaky = Flaky(store, "read", ServiceRequestError("no route"), throttled())
    assert (await ResilientDocumentStore(flaky, FAST).read("c", "a", "a"))["v"] == 1
    assert flaky.calls == 3


async def test_a_create_whose_reply_was_lost_is_the_create_not_a_conflict():
    store = InMemoryDocumentStore()
    flaky = Flaky(store, "create", ServiceResponseError("reply lost"), after=True)
    created = await ResilientDocumentStore(flaky, FAST).create("c", {"id": "a", "pk": "a", "v": 1})
    assert created["v"] == 1 and flaky.calls == 2


async def test_a_real_conflict_stays_a_conflict():
    store = InMemoryDocumentStore()
    await store.create("c", {"id": "a", "pk": "a", "v": "someone else's"})
    flaky = Flaky(store, "create", ServiceResponseError("reply lost"))  # lost before it got there
    with pytest.raises(ConflictError):
        await ResilientDocumentStore(flaky, FAST).create("c", {"id": "a", "pk": "a", "v": "mine"})


async def test_a_replace_whose_reply_was_lost_is_the_replace_not_a_moved_etag():
    store = InMemoryDocumentStore()
    current = await store.upsert("c", {"id": "a", "pk": "a", "v": 1})
    flaky = Flaky(store, "replace", ServiceResponseError("reply lost"), after=True)
    stored = await ResilientDocumentStore(flaky, FAST).replace(
        "c", {"id": "a", "pk": "a", "v": 2}, etag=current["_etag"]
    )
    assert stored["v"] == 2


async def test_a_replace_that_lost_the_race_stays_refused():
    store = InMemoryDocumentStore()
    current = await store.upsert("c", {"id": "a", "pk": "a", "v": 1})
    await store.upsert("c", {"id": "a", "pk": "a", "v": "theirs"})
    flaky = Flaky(store, "replace", ServiceResponseError("reply lost"))
    with pytest.raises(PreconditionFailedError):
        await ResilientDocumentStore(flaky, FAST).replace(
            "c", {"id": "a", "pk": "a", "v": 2}, etag=current["_etag"]
        )


async def test_a_delete_whose_reply_was_lost_reports_the_delete():
    store = InMemoryDocumentStore()
    await store.upsert("c", {"id": "a", "pk": "a"})
    flaky = Flaky(store, "delete", ServiceResponseError("reply lost"), after=True)
    assert await ResilientDocumentStore(flaky, FAST).delete("c", "a", "a") is True


async def test_answers_are_not_retried_and_faults_stop_after_four_tries():
    flaky = Flaky(InMemoryDocumentStore(), "read", ResourceNotFoundError("gone"))
    with pytest.raises(ResourceNotFoundError):
        await ResilientDocumentStore(flaky, FAST).read("c", "a", "a")
    assert flaky.calls == 1
    down = Flaky(InMemoryDocumentStore(), "read", *[ServiceRequestError("down")] * 5)
    with pytest.raises(ServiceRequestError):
        await ResilientDocumentStore(down, FAST).read("c", "a", "a")
    assert down.calls == 4


async def test_blob_bytes_are_retried_but_a_stream_already_read_is_its_callers():
    blobs = InMemoryBlobStore()
    flaky = Flaky(blobs, "put", throttled(), throttled())
    await ResilientBlobStore(flaky, FAST).put("c", "n", b"data")
    assert await blobs.get("c", "n") == b"data" and flaky.calls == 3

    async def chunks():
        yield b"once"

    streamed = Flaky(blobs, "put", throttled())
    with pytest.raises(HttpResponseError):
        await ResilientBlobStore(streamed, FAST).put("c", "m", chunks())
    assert streamed.calls == 1


async def test_a_download_is_retried_until_its_first_bytes():
    blobs = InMemoryBlobStore()
    await blobs.put("c", "n", b"payload")

    class FailsToOpen:
        def __init__(self):
            self.opened = 0

        def stream(self, container, name):
            self.opened += 1
            if self.opened == 1:
                return self._broken()
            return blobs.stream(container, name)

        async def _broken(self):
            raise ServiceRequestError("reset")
            yield b""  # pragma: no cover - makes this an async generator

    inner = FailsToOpen()
    data = b"".join([c async for c in ResilientBlobStore(inner, FAST).stream("c", "n")])  # type: ignore[arg-type]
    assert data == b"payload" and inner.opened == 2


async def test_a_send_is_retried():
    queues = InMemoryQueueStore()
    flaky = Flaky(queues, "send", ServiceRequestError("no route"))
    await ResilientQueueStore(flaky, FAST).send("q", {"a": 1})
    assert len(queues.messages["q"]) == 1
