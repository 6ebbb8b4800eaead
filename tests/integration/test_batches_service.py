"""The batch runner on the Cosmos server, Azurite's Blob and Queue: the host is played by the test
(it receives the batch queue's messages and hands them to the service), the gateway by a
function that answers, fails or waits on demand. So each case is a few seconds: duplicate and
concurrent delivery, a crash between saves, a poisoned chunk, expiry, pacing by 429s, and the
sweeper re-driving batches whose messages were lost."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from typing import Any

import pytest
from azure.storage.queue.aio import QueueClient

from shared.clients.blob_store import AzureBlobStore
from shared.clients.cosmos_store import CosmosDocumentStore
from shared.clients.protocols import CosmosContainerSpec
from shared.clients.queue_store import AzureQueueStore
from shared.config import ModelConfig
from shared.errors import RateLimitError
from shared.models.batches import BatchCreate
from shared.services.auth import MASTER
from shared.services.batches import BatchService, BatchTimings, SweepPolicy
from shared.services.files import FileService
from shared.services.limits import KeyLimiter
from shared.services.model_catalog import ModelCatalog
from tests import factories
from tools.stack import COSMOS_EMULATOR_KEY

MODELS = ModelConfig.model_validate(
    {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x"}}]}
)


class Crash(BaseException):
    """The worker process dying in the middle of a chunk (not an error a request can catch)."""


class Gateway:
    """Answers every request; can crash, refuse with 429, or take its time."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.crash_on: str | None = None  # the request during which the worker dies
        self.refuse_first = 0
        self.delay = 0.0

    async def __call__(self, endpoint: str, request: Any, call: Any) -> dict[str, Any]:
        text = request.messages[0].content
        if self.refuse_first > 0:
            self.refuse_first -= 1
            raise RateLimitError("slow down", retry_after=0.1)
        if text == self.crash_on:
            await asyncio.sleep(0.3)  # long enough for the answers before it to be saved
            raise Crash
        await asyncio.sleep(self.delay)
        self.calls.append(text)
        assert call.tags["batch_id"].startswith("batch_")  # usage is tagged with the batch
        return {
            "id": "x",
            "object": "chat.completion",
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2},
        }


class World:
    def __init__(self, documents, blobs, queues, queue_name: str) -> None:
        self.gateway = Gateway()
        self.documents, self.blobs, self.queues = documents, blobs, queues
        self.files = FileService(documents, blobs, "uploads")
        self.queue_name = queue_name
        self.configure()

    def configure(self, **options: Any) -> None:
        """(Re)build the service with these options over the defaults."""
        options = {
            "chunk_size": 5,
            "concurrency": 2,
            "window_seconds": 3600,
            "gateway": self.gateway,
            "owner": self._owner,
            **options,
        }
        catalog = options.pop("catalog", ModelCatalog(MODELS, created=0))
        self.service = BatchService(
            self.documents,
            self.blobs,
            self.queues,
            self.files,
            catalog,
            queue=self.queue_name,
            outputs_container="outputs",
            **options,
        )

    async def _owner(self, key_id: str):
        return MASTER

    async def submit(self, n: int) -> str:
        lines = [factories.batch_line(f"r{i}", model="m") for i in range(n)]
        source = await self.files.create(
            MASTER, filename="in.jsonl", purpose="batch", content=factories.batch_input(lines)
        )
        created = await self.service.create(
            MASTER,
            BatchCreate(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"),
        )
        return created["id"]

    async def receive(self, connection: str) -> list[dict[str, Any]]:
        async with QueueClient.from_connection_string(connection, self.queue_name) as client:
            messages = []
            async for message in client.receive_messages(max_messages=32, visibility_timeout=60):
                messages.append(json.loads(base64.b64decode(message.content)))
                await client.delete_message(message)
            return messages

    async def run_all(self, connection: str, *, twice: bool = False) -> None:
        """Deliver every message until the queue is empty (each one twice, at once, if asked)."""
        while messages := await self.receive(connection):
            for message in messages:
                copies = [self.service.handle(message)] * 1
                if twice:
                    copies.append(self.service.handle(message))
                await asyncio.gather(*copies)

    async def saved_ids(self, batch_id: str, chunk: int) -> set[str]:
        """The custom_ids with a saved result in the chunk's result blobs."""
        ids = set()
        for name in await self.blobs.names("outputs", f"batches/{batch_id}/results/{chunk:05d}/"):
            ids |= {json.loads(t)["custom_id"] for t in (await self.blobs.get("outputs", name)).splitlines()}
        return ids

    async def outputs(self, batch_id: str) -> tuple[dict[str, Any], list[dict], list[dict]]:
        batch = await self.service.get(MASTER, batch_id)
        lines = []
        for key in ("output_file_id", "error_file_id"):
            if batch.get(key):
                data = b"".join([c async for c in await self.files.content(MASTER, batch[key])])
                lines.append([json.loads(t) for t in data.decode().splitlines()])
            else:
                lines.append([])
        return batch, lines[0], lines[1]


@pytest.fixture
async def world(emulators):
    database = "b-" + uuid.uuid4().hex[:8]
    documents = CosmosDocumentStore(emulators.cosmos_endpoint, COSMOS_EMULATOR_KEY, database, local=True)
    await documents.ensure_database()
    for name in ("batches", "files"):
        await documents.ensure_container(CosmosContainerSpec(name))
    blobs = AzureBlobStore.from_connection_string(emulators.storage_connection_string)
    for name in ("uploads", "outputs"):
        await blobs.ensure_container(name)
    queues = AzureQueueStore.from_connection_string(emulators.storage_connection_string)
    queue = "batches-" + uuid.uuid4().hex[:8]
    await queues.ensure_queue(queue)
    built = World(documents, blobs, queues, queue)
    built.connection = emulators.storage_connection_string
    built.database = database
    yield built
    for client in (documents, blobs, queues):
        await client.aclose()


def ids(lines: list[dict]) -> list[str]:
    return sorted(line["custom_id"] for line in lines)


async def test_every_message_delivered_twice_at_once_still_gives_each_request_once(world):
    batch_id = await world.submit(23)
    await world.run_all(world.connection, twice=True)
    batch, output, errors = await world.outputs(batch_id)
    assert batch["status"] == "completed"
    assert ids(output) == sorted(f"r{i}" for i in range(23)) and errors == []
    assert batch["request_counts"] == {"total": 23, "completed": 23, "failed": 0}
    assert batch["usage"]["input_tokens"] == 23


async def test_a_redelivered_chunk_after_it_finished_runs_nothing(world):
    batch_id = await world.submit(5)
    messages = await world.receive(world.connection)  # the start message
    await world.service.handle(messages[0])
    (chunk,) = await world.receive(world.connection)
    await world.service.handle(chunk)
    calls = len(world.gateway.calls)
    await world.service.handle(chunk)  # delivered again
    assert len(world.gateway.calls) == calls == 5
    await world.run_all(world.connection)
    assert (await world.outputs(batch_id))[0]["status"] == "completed"


async def test_a_crash_resumes_after_the_last_save_without_redoing_it(world):
    world.configure(timings=BatchTimings(flush_s=0.05))
    world.gateway.delay = 0.03
    batch_id = await world.submit(5)
    (start,) = await world.receive(world.connection)
    await world.service.handle(start)
    (chunk,) = await world.receive(world.connection)
    world.gateway.crash_on = "r3"
    with pytest.raises(Crash):
        await world.service.handle(chunk)
    saved = await world.saved_ids(batch_id, 0)
    assert saved  # some answers were saved before the crash...
    before = len(world.gateway.calls)
    world.gateway.crash_on = None
    await world.service.handle(chunk)  # the host delivers it again
    again = world.gateway.calls[before:]
    assert not saved & set(again)  # ...and none of those is asked again
    assert set(again) == {f"r{i}" for i in range(5)} - saved
    await world.run_all(world.connection)
    batch, output, _ = await world.outputs(batch_id)
    assert batch["status"] == "completed" and ids(output) == [f"r{i}" for i in range(5)]


async def test_a_poisoned_chunk_fails_its_requests_and_the_batch_still_ends(world):
    batch_id = await world.submit(12)  # chunks of 5, 5 and 2
    (start,) = await world.receive(world.connection)
    await world.service.handle(start)
    chunks = await world.receive(world.connection)
    poisoned = next(m for m in chunks if m["chunk"] == 1)
    for message in chunks:
        if message is not poisoned:
            await world.service.handle(message)
    await world.service.handle_poison(poisoned)
    await world.run_all(world.connection)
    batch, output, errors = await world.outputs(batch_id)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 12, "completed": 7, "failed": 5}
    assert ids(errors) == sorted(f"r{i}" for i in range(5, 10))
    assert {e["error"]["code"] for e in errors} == {"batch_request_failed"}
    assert ids(output + errors) == sorted(f"r{i}" for i in range(12))


async def test_a_batch_past_its_window_expires_with_its_partial_results(world):
    world.gateway.delay = 0.05
    batch_id = await world.submit(10)
    answer = world.gateway.__call__

    async def gateway(endpoint, request, call):  # after three answers, the 24 hours are over
        if len(world.gateway.calls) >= 3 and not expired:
            expired.append(True)
            doc = await world.documents.read("batches", batch_id, batch_id)
            doc["expires_at"] = int(time.time()) - 1
            await world.documents.upsert("batches", doc)
        return await answer(endpoint, request, call)

    expired: list[bool] = []

    world.configure(gateway=gateway, timings=BatchTimings(status_refresh_s=0.0))  # see the expiry at once
    await world.run_all(world.connection)
    batch, output, errors = await world.outputs(batch_id)
    assert batch["status"] == "expired" and batch["expired_at"]
    assert 0 < len(output) < 10
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}
    assert ids(output + errors) == sorted(f"r{i}" for i in range(10))


async def test_rate_limited_requests_wait_and_retry_instead_of_failing(world):
    world.gateway.refuse_first = 4
    batch_id = await world.submit(3)
    await world.run_all(world.connection)
    batch, output, errors = await world.outputs(batch_id)
    assert batch["status"] == "completed" and len(output) == 3 and errors == []


async def test_a_batch_keeps_to_the_models_requests_per_minute(emulators, world):
    paced = ModelConfig.model_validate(
        {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x", "rpm": 1}}]}
    )
    now = [1_800_000_000.0]
    minutes: list[int] = []
    documents = CosmosDocumentStore(
        emulators.cosmos_endpoint, COSMOS_EMULATOR_KEY, world.database, local=True
    )
    await documents.ensure_container(CosmosContainerSpec("keys"))
    answer = world.gateway.__call__

    async def gateway(endpoint, request, call):
        minutes.append(int(now[0] // 60))
        now[0] += 61  # the next call may only come in the next minute
        return await answer(endpoint, request, call)

    world.configure(
        gateway=gateway,
        catalog=ModelCatalog(paced, created=0),
        limiter=KeyLimiter(documents, clock=lambda: now[0]),
        sleep=lambda seconds: asyncio.sleep(seconds / 1000),  # the waits for the next minute, 1000x faster
    )
    batch_id = await world.submit(3)
    await world.run_all(world.connection)
    batch, output, _ = await world.outputs(batch_id)
    assert batch["status"] == "completed" and len(output) == 3
    assert len(set(minutes)) == len(minutes) == 3  # one request per minute, as the model file says
    await documents.aclose()


# --- the sweeper ------------------------------------------------------------------------------


async def test_a_sweep_finalizes_a_batch_stuck_in_finalizing(world):
    batch_id = await world.submit(7)
    while messages := await world.receive(world.connection):
        for message in messages:
            if message["kind"] != "finalize":  # the finalize message is lost
                await world.service.handle(message)
    assert (await world.service.get(MASTER, batch_id))["status"] == "finalizing"
    assert await world.service.sweep(time.time()) == {"finalize": 0, "start": 0, "chunk": 0}  # too soon
    later = time.time() + 121
    assert await world.service.sweep(later) == {"finalize": 1, "start": 0, "chunk": 0}
    assert await world.service.sweep(later) == {"finalize": 0, "start": 0, "chunk": 0}  # once per period
    await world.run_all(world.connection)
    batch, output, errors = await world.outputs(batch_id)
    assert batch["status"] == "completed" and ids(output) == sorted(f"r{i}" for i in range(7))
    assert errors == []


async def test_a_sweep_ends_a_batch_past_its_window_whose_chunk_messages_were_lost(world):
    batch_id = await world.submit(10)  # chunks of 5
    (start,) = await world.receive(world.connection)
    await world.service.handle(start)
    first, _lost = sorted(await world.receive(world.connection), key=lambda m: m["chunk"])
    await world.service.handle(first)
    doc = await world.documents.read("batches", batch_id, batch_id)
    doc["expires_at"] = int(time.time()) - 3600  # the 24 hours ended an hour ago
    await world.documents.upsert("batches", doc)
    assert await world.service.sweep(time.time() + 121) == {"finalize": 1, "start": 0, "chunk": 0}
    await world.run_all(world.connection)
    batch, output, errors = await world.outputs(batch_id)
    assert batch["status"] == "expired" and batch["expired_at"]
    assert ids(output) == [f"r{i}" for i in range(5)]
    assert ids(errors) == [f"r{i}" for i in range(5, 10)]
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}


async def test_a_sweep_sends_again_the_chunk_messages_of_a_batch_that_stopped_moving(world):
    batch_id = await world.submit(15)  # chunks of 5
    (start,) = await world.receive(world.connection)
    await world.service.handle(start)
    chunks = sorted(await world.receive(world.connection), key=lambda m: m["chunk"])
    await world.service.handle(chunks[1])  # chunks 0 and 2 are lost
    assert await world.service.sweep(time.time() + 600) == {"finalize": 0, "start": 0, "chunk": 0}
    assert await world.service.sweep(time.time() + 1201) == {"finalize": 0, "start": 0, "chunk": 2}
    assert sorted(m["chunk"] for m in await world.receive(world.connection)) == [0, 2]
    assert await world.service.sweep(time.time() + 1201) == {"finalize": 0, "start": 0, "chunk": 0}
    await world.service.sweep(time.time() + 2500)  # sent again (a second time, still safe)
    await world.run_all(world.connection)
    batch, output, _ = await world.outputs(batch_id)
    assert batch["status"] == "completed" and ids(output) == sorted(f"r{i}" for i in range(15))
    assert len(world.gateway.calls) == 15  # each request asked once, whatever was sent twice


async def test_a_sweep_starts_a_batch_whose_start_message_was_lost_and_pages_through_many(world):
    world.configure(sweep=SweepPolicy(page_size=2))
    batch_ids = [await world.submit(2) for _ in range(5)]
    assert len(await world.receive(world.connection)) == 5
    assert await world.service.sweep(time.time() + 1201) == {"finalize": 0, "start": 5, "chunk": 0}
    await world.run_all(world.connection)
    for batch_id in batch_ids:
        assert (await world.service.get(MASTER, batch_id))["status"] == "completed"
    assert await world.service.sweep(time.time() + 9999) == {"finalize": 0, "start": 0, "chunk": 0}
