"""Usage items in the real Cosmos server: summaries read records with JOIN, scoped to the caller."""

import uuid

import pytest

from shared.clients.cosmos_store import CosmosDocumentStore
from shared.clients.protocols import CosmosContainerSpec
from shared.clients.queue_store import AzureQueueStore
from shared.models.usage import UsageRecord
from shared.services.auth import Principal
from shared.services.background import Background
from shared.services.usage import UsageService
from tools.stack import COSMOS_EMULATOR_KEY

ALICE = Principal("key-alice", False)
MASTER = Principal("master-1", True)


def record(n, key="key-alice", model="a", created_at=None, session=None):
    created = created_at or 1_700_000_000 + n
    return UsageRecord(
        id=f"u-{key}-{n}",
        pk=key,
        request_id=f"r{n}",
        created_at=created,
        day="2023-11-14",
        key_id=key,
        endpoint="chat.completions",
        model=model,
        session_id=session,
        input_tokens=10,
        output_tokens=5,
        total_tokens=15,
        cost_usd=0.001,
        latency_ms=1.0,
    )


@pytest.fixture
async def usage(emulators):
    documents = CosmosDocumentStore(
        emulators.cosmos_endpoint, COSMOS_EMULATOR_KEY, "u-" + uuid.uuid4().hex[:8], local=True
    )
    await documents.ensure_database()
    await documents.ensure_container(CosmosContainerSpec("usage"))
    queues = AzureQueueStore.from_connection_string(emulators.storage_connection_string)
    background = Background()
    yield UsageService(documents, queues, "unused", background, flush_interval=0), background
    await background.drain()
    await documents.aclose()
    await queues.aclose()


async def test_summary_reads_records_from_items_and_scopes_them(usage):
    service, background = usage
    for n, model in enumerate(["a", "a", "b"], start=1):
        service.submit(record(n, model=model, session="s1" if n == 1 else None))
    service.submit(record(9, key="key-bob"))
    service.submit(record(50, created_at=1_800_000_000))  # outside the window below
    await background.drain()
    mine = await service.summary(ALICE, 1_699_999_000, 1_700_100_000, "model")
    assert mine.total.requests == 3 and mine.total.total_tokens == 45
    assert [(g.group, g.requests) for g in mine.data] == [("a", 2), ("b", 1)]
    assert mine.total.cost_usd == pytest.approx(0.003)
    everyone = await service.summary(MASTER, 1_699_999_000, 1_700_100_000, "key")
    assert [(g.group, g.requests) for g in everyone.data] == [("key-alice", 3), ("key-bob", 1)]
    sessions = await service.summary(ALICE, 1_699_999_000, 1_700_100_000, "session")
    assert [(g.group, g.requests) for g in sessions.data] == [("s1", 1), (None, 2)]
    assert (await service.summary(ALICE, 1_699_999_000, 1_700_100_000, None)).data == []
