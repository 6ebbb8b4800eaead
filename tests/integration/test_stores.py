"""The Cosmos, Blob and Queue adapters against the real emulators over real sockets."""

import asyncio
import base64
import hashlib
import json
import tracemalloc
import uuid

import pytest
from azure.storage.blob.aio import BlobServiceClient
from azure.storage.queue.aio import QueueClient

from shared.clients.blob_store import BLOCK_BYTES, AzureBlobStore
from shared.clients.cosmos_store import CosmosDocumentStore
from shared.clients.protocols import CosmosContainerSpec
from shared.clients.queue_store import AzureQueueStore, MessageTooLargeError
from shared.config import Settings
from shared.errors import ConflictError, PreconditionFailedError
from shared.services.provisioning import COSMOS_CONTAINERS, provision, required_resources
from tools.stack import COSMOS_EMULATOR_KEY


@pytest.fixture
async def documents(emulators):
    store = CosmosDocumentStore(
        emulators.cosmos_endpoint, COSMOS_EMULATOR_KEY, "it-" + uuid.uuid4().hex[:8], local=True
    )
    await store.ensure_database()
    await store.ensure_container(CosmosContainerSpec("things"))
    yield store
    await store.aclose()


@pytest.fixture
async def blobs(emulators):
    store = AzureBlobStore.from_connection_string(emulators.storage_connection_string)
    yield store
    await store.aclose()


@pytest.fixture
async def queues(emulators):
    store = AzureQueueStore.from_connection_string(emulators.storage_connection_string)
    yield store
    await store.aclose()


def doc(id_="a", pk="p1", **fields):
    return {"id": id_, "pk": pk, **fields}


async def test_cosmos_create_read_and_system_fields(documents):
    created = await documents.create("things", doc(n=1))
    assert created["_etag"] and "_rid" not in created
    read = await documents.read("things", "a", "p1")
    assert read["n"] == 1 and read["_etag"] == created["_etag"]
    assert await documents.read("things", "a", "other-partition") is None
    with pytest.raises(ConflictError):
        await documents.create("things", doc(n=2))


@pytest.mark.parametrize("id_", ["a/b", "a\\b", "a?b", "a#b", "x" * 256, ""])
async def test_cosmos_an_id_cosmos_cannot_hold_is_not_found(documents, id_):
    # Found by fuzzing POST /v1/batches: an `input_file_id` with a `/` made the point read's URL
    # unroutable, and the error a 500.
    assert await documents.read("things", id_, id_ or "p") is None
    assert await documents.delete("things", id_, id_ or "p") is False


async def test_cosmos_replace_is_guarded_by_etag(documents):
    first = await documents.create("things", doc(n=1))
    second = await documents.replace("things", {**first, "n": 2}, etag=first["_etag"])
    assert second["n"] == 2 and second["_etag"] != first["_etag"]
    with pytest.raises(PreconditionFailedError):
        await documents.replace("things", {**first, "n": 3}, etag=first["_etag"])
    assert (await documents.read("things", "a", "p1"))["n"] == 2


async def test_cosmos_concurrent_etag_updates_lose_nothing(documents):
    await documents.create("things", doc(items=[]))

    async def append(value):
        while True:
            current = await documents.read("things", "a", "p1")
            try:
                return await documents.replace(
                    "things", {**current, "items": [*current["items"], value]}, etag=current["_etag"]
                )
            except PreconditionFailedError:
                continue

    await asyncio.gather(*(append(i) for i in range(10)))
    assert sorted((await documents.read("things", "a", "p1"))["items"]) == list(range(10))


async def test_cosmos_delete_and_query(documents):
    for i in range(3):
        await documents.upsert("things", doc(f"d{i}", pk="q", n=i))
    await documents.upsert("things", doc("elsewhere", pk="r", n=9))
    found = await documents.query(
        "things",
        "SELECT * FROM c WHERE c.pk = @pk AND c.n >= @min ORDER BY c.n",
        {"@pk": "q", "@min": 1},
        pk="q",
    )
    assert [d["id"] for d in found] == ["d1", "d2"]
    assert len(await documents.query("things", "SELECT * FROM c", max_items=2)) == 2
    assert await documents.delete("things", "d1", "q") is True
    assert await documents.delete("things", "d1", "q") is False


async def test_blob_roundtrip_bytes_and_streams(blobs):
    await blobs.ensure_container("it-blobs")
    await blobs.ensure_container("it-blobs")  # idempotent
    assert await blobs.put("it-blobs", "x/one.txt", b"hello", content_type="text/plain") == 5

    async def chunks():
        for i in range(5):
            yield bytes([i]) * 100_000

    assert await blobs.put("it-blobs", "big.bin", chunks()) == 500_000
    streamed = b"".join([c async for c in blobs.stream("it-blobs", "big.bin")])
    assert streamed == b"".join(bytes([i]) * 100_000 for i in range(5))
    assert await blobs.get("it-blobs", "x/one.txt") == b"hello"
    assert await blobs.get("it-blobs", "missing") is None
    with pytest.raises(KeyError):
        [c async for c in blobs.stream("it-blobs", "missing")]
    assert await blobs.delete("it-blobs", "x/one.txt") is True
    assert await blobs.delete("it-blobs", "x/one.txt") is False
    await blobs.ping("it-blobs")


async def test_a_streamed_blob_is_staged_block_by_block_as_the_data_comes(blobs, emulators):
    await blobs.ensure_container("it-blobs")
    name = f"streamed-{uuid.uuid4().hex[:8]}.jsonl"
    service = BlobServiceClient.from_connection_string(emulators.storage_connection_string)
    probe = service.get_blob_client("it-blobs", name)
    line = b"y" * 4095 + b"\n"
    total = 3 * BLOCK_BYTES + 123 * len(line)
    staged_while_streaming: list[int] = []
    digest = hashlib.sha256()

    async def lines():
        sent = 0
        while sent < total:
            yield line
            digest.update(line)
            sent += len(line)
            if sent == 3 * BLOCK_BYTES:  # three blocks' worth given: they are on the service already
                staged_while_streaming.append(len((await probe.get_block_list("uncommitted"))[1]))

    tracemalloc.start()
    try:
        size = await blobs.put("it-blobs", name, lines(), content_type="application/jsonl")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size == total and staged_while_streaming == [3]
    committed, uncommitted = await probe.get_block_list("all")
    assert [block.size for block in committed] == [BLOCK_BYTES] * 3 + [123 * len(line)] and not uncommitted
    properties = await probe.get_blob_properties()
    assert properties.content_settings.content_type == "application/jsonl"
    streamed = hashlib.sha256()
    async for chunk in blobs.stream("it-blobs", name):
        streamed.update(chunk)
    assert streamed.digest() == digest.digest()
    assert peak < 4 * BLOCK_BYTES  # a block or two in memory, never the whole stream

    async def empty():
        return
        yield

    assert await blobs.put("it-blobs", "empty.jsonl", empty()) == 0
    assert await blobs.get("it-blobs", "empty.jsonl") == b""

    async def broken():
        yield b"x" * (BLOCK_BYTES + 1)
        raise RuntimeError("the upload was refused part way")

    with pytest.raises(RuntimeError):
        await blobs.put("it-blobs", "never.bin", broken())
    assert await blobs.get("it-blobs", "never.bin") is None  # staged blocks are no blob
    await service.close()


async def test_queue_messages_are_base64_json_as_the_host_expects(queues, emulators):
    name = "it-" + uuid.uuid4().hex[:8]
    await queues.ensure_queue(name)
    await queues.ensure_queue(name)  # idempotent
    await queues.send(name, {"job": "j1", "n": 1})
    raw = QueueClient.from_connection_string(emulators.storage_connection_string, name)
    async with raw:
        (message,) = [m async for m in raw.receive_messages(max_messages=5)]
    assert json.loads(base64.b64decode(message.content)) == {"job": "j1", "n": 1}


async def test_queue_refuses_messages_over_the_limit(queues):
    with pytest.raises(MessageTooLargeError):
        await queues.send("any", {"blob": "x" * 60_000})


async def test_provisioning_creates_everything_and_is_idempotent(emulators):
    settings = Settings(
        _env_file=None,
        CIRRUS_ENV="local",
        AzureWebJobsStorage=emulators.storage_connection_string,
        COSMOS_ENDPOINT=emulators.cosmos_endpoint,
        COSMOS_KEY=COSMOS_EMULATOR_KEY,
        COSMOS_DATABASE="prov-" + uuid.uuid4().hex[:8],
        JOBS_QUEUE="prov-jobs",
        BATCH_QUEUE="prov-batches",
        CIRRUS_UPLOADS_CONTAINER="prov-uploads",
    )
    documents = CosmosDocumentStore(
        settings.cosmos_endpoint, COSMOS_EMULATOR_KEY, settings.cosmos_database, local=True
    )
    blobs = AzureBlobStore.from_connection_string(emulators.storage_connection_string)
    queues = AzureQueueStore.from_connection_string(emulators.storage_connection_string)
    try:
        for _ in range(2):
            await provision(required_resources(settings), documents, blobs, queues)
        await documents.ping()
        for spec in COSMOS_CONTAINERS:
            await documents.upsert(spec.name, doc())
        await blobs.ping("prov-uploads")
        await queues.ping("prov-jobs")
        await queues.ping("prov-batches")
    finally:
        for client in (documents, blobs, queues):
            await client.aclose()
