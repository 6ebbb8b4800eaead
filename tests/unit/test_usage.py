"""Usage records: durable writes (park and replay), and summaries scoped to the caller."""

import base64
import json
import logging

import pytest

from shared.models.usage import UsageRecord
from shared.services.auth import Principal
from shared.services.usage import UsageService
from tests.fakes import InMemoryDocumentStore, InMemoryQueueStore

ALICE = Principal("key-alice", False)
MASTER = Principal("master-1", True)


def record(n=1, key="key-alice", **fields):
    base = dict(
        id=f"usage_{key}_{n}",
        pk=key,
        request_id=f"req_{n}",
        created_at=1_700_000_000 + n * 3600,
        day="2023-11-14",
        key_id=key,
        endpoint="chat.completions",
        model="cirrus-local",
        input_tokens=10,
        output_tokens=5,
        total_tokens=15,
        cost_usd=0.001,
        latency_ms=12.0,
    )
    return UsageRecord(**{**base, **fields})


class FlakyDocuments(InMemoryDocumentStore):
    def __init__(self, failures):
        super().__init__()
        self.failures = failures

    async def upsert(self, container, doc):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("cosmos down")
        return await super().upsert(container, doc)


class DeadQueue(InMemoryQueueStore):
    async def send(self, queue, message, *, delay_seconds=0):
        raise ConnectionError("storage down")


async def no_sleep(_):
    return None


async def test_a_record_goes_to_cosmos():
    documents = InMemoryDocumentStore()
    assert await UsageService(documents, InMemoryQueueStore(), "q").record(record()) == "cosmos"
    assert list(documents.items["usage"]) == [("key-alice", "usage_key-alice_1")]


async def test_a_failed_write_is_parked_and_replayed_idempotently():
    documents, queues = FlakyDocuments(failures=1), InMemoryQueueStore()
    service = UsageService(documents, queues, "cirrus-usage")
    assert await service.record(record()) == "queue"
    assert documents.items["usage"] == {}
    (parked,) = queues.messages["cirrus-usage"]
    message = json.loads(base64.b64decode(parked))
    await service.store_parked(message)
    await service.store_parked(message)  # delivered twice: still one record
    assert list(documents.items["usage"]) == [("key-alice", "usage_key-alice_1")]


async def test_when_cosmos_and_the_queue_are_down_it_keeps_trying_then_logs_the_record(caplog):
    documents = FlakyDocuments(failures=3)
    service = UsageService(documents, DeadQueue(), "q", retry_delays=(0, 0, 0), sleep=no_sleep)
    assert await service.record(record()) == "cosmos"  # the fourth attempt got through
    hopeless = UsageService(
        FlakyDocuments(failures=99), DeadQueue(), "q", retry_delays=(0, 0), sleep=no_sleep
    )
    with caplog.at_level(logging.ERROR, logger="cirrus.usage"):
        assert await hopeless.record(record(2)) == "log"
    assert "usage_key-alice_2" in caplog.text


async def test_summary_is_scoped_to_the_caller_and_groups():
    documents = InMemoryDocumentStore()
    service = UsageService(documents, InMemoryQueueStore(), "q")
    for n, model in enumerate(["a", "a", "b"], start=1):
        await service.record(record(n, model=model))
    await service.record(record(9, key="key-bob", model="a"))
    mine = await service.summary(ALICE, 0, 2e9, "model")
    assert mine.total.requests == 3 and mine.total.total_tokens == 45
    assert [(g.group, g.requests) for g in mine.data] == [("a", 2), ("b", 1)]
    assert mine.total.cost_usd == pytest.approx(0.003)
    everyone = await service.summary(MASTER, 0, 2e9, "key")
    assert [(g.group, g.requests) for g in everyone.data] == [("key-alice", 3), ("key-bob", 1)]
    assert (await service.summary(ALICE, 0, 2e9, None)).data == []
