"""Sessions on the real Cosmos server and Azurite: concurrent appends, paging, archiving to Blob."""

import asyncio
import uuid

import pytest

from shared.clients.blob_store import AzureBlobStore
from shared.clients.cosmos_store import CosmosDocumentStore
from shared.clients.protocols import CosmosContainerSpec
from shared.models.sessions import SessionCreate
from shared.services import sessions as sessions_module
from shared.services.auth import Principal
from shared.services.sessions import SessionService
from tools.stack import COSMOS_EMULATOR_KEY

ALICE = Principal("key-alice", False)
BOB = Principal("key-bob", False)


@pytest.fixture
async def service(emulators):
    documents = CosmosDocumentStore(
        emulators.cosmos_endpoint, COSMOS_EMULATOR_KEY, "s-" + uuid.uuid4().hex[:8], local=True
    )
    await documents.ensure_database()
    await documents.ensure_container(CosmosContainerSpec("sessions"))
    blobs = AzureBlobStore.from_connection_string(emulators.storage_connection_string)
    await blobs.ensure_container("session-archive")
    yield SessionService(documents, blobs, "session-archive")
    await documents.aclose()
    await blobs.aclose()


async def test_concurrent_turns_on_one_session_lose_no_message(service):
    session = await service.create(ALICE, SessionCreate())
    turns = [
        [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}] for i in range(12)
    ]
    await asyncio.gather(*(service.append(session.id, turn) for turn in turns))
    stored = await service.get(ALICE, session.id)
    assert stored.message_count == 24
    contents = [m["content"] for m in stored.messages]
    for i in range(12):  # every turn is there, its question right before its answer
        assert contents.index(f"a{i}") == contents.index(f"q{i}") + 1


async def test_listing_is_paged_newest_first_and_private(service):
    mine = [(await service.create(ALICE, SessionCreate(title=str(i)))).id for i in range(5)]
    await service.create(BOB, SessionCreate(title="bob's"))
    first = await service.list_page(ALICE, limit=2, after=None)
    assert [s.id for s in first.data] == mine[:-3:-1] and first.has_more
    second = await service.list_page(ALICE, limit=2, after=first.last_id)
    third = await service.list_page(ALICE, limit=2, after=second.last_id)
    assert [s.id for s in second.data + third.data] == mine[2::-1]
    assert not third.has_more
    assert all(s.messages is None for s in first.data)  # lists carry no histories


async def test_a_large_session_archives_to_blob_and_reads_back_whole(service, monkeypatch):
    monkeypatch.setattr(sessions_module, "MAX_ITEM_BYTES", 4_000)
    session = await service.create(ALICE, SessionCreate())
    for i in range(20):
        await service.append(session.id, [{"role": "user", "content": f"{i}:" + "x" * 400}])
    record = await service.load(ALICE, session.id)
    assert record.archived and len(record.messages) < 20
    full = await service.get(ALICE, session.id)
    assert [m["content"].split(":")[0] for m in full.messages] == [str(i) for i in range(20)]
