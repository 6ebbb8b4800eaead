"""Sessions: ETag-safe appends, archiving past the item limit, trimming, what a turn stores."""

import asyncio
import json

import pytest

from shared.errors import NotFoundError
from shared.models.sessions import SessionCreate
from shared.services import sessions as sessions_module
from shared.services.auth import Principal
from shared.services.sessions import SessionService, fit_to_context, turn_to_store
from tests.fakes import InMemoryBlobStore, InMemoryDocumentStore

ALICE = Principal("key-alice", False)
BOB = Principal("key-bob", False)
MASTER = Principal("master-1", True)


@pytest.fixture
def service():
    return SessionService(InMemoryDocumentStore(), InMemoryBlobStore(), "outputs")


def words(n, word="w"):
    return " ".join([word] * n)


def count(messages):
    return sum(len(str(m.get("content") or "").split()) for m in messages)


async def test_concurrent_appends_lose_nothing(service):
    session = await service.create(ALICE, SessionCreate())
    await asyncio.gather(
        *(service.append(session.id, [{"role": "user", "content": str(i)}]) for i in range(25))
    )
    stored = await service.get(ALICE, session.id)
    assert sorted(int(m["content"]) for m in stored.messages) == list(range(25))
    assert stored.message_count == 25


async def test_sessions_are_private_to_their_owner(service):
    session = await service.create(ALICE, SessionCreate(title="mine"))
    with pytest.raises(NotFoundError):
        await service.get(BOB, session.id)
    with pytest.raises(NotFoundError):
        await service.delete(BOB, session.id)
    assert (await service.get(MASTER, session.id)).title == "mine"


async def test_a_large_session_moves_its_oldest_messages_to_blob(service, monkeypatch):
    monkeypatch.setattr(sessions_module, "MAX_ITEM_BYTES", 2_000)
    session = await service.create(ALICE, SessionCreate())
    for i in range(10):
        record = await service.append(session.id, [{"role": "user", "content": f"{i}:" + "x" * 300}])
    assert record.archived, "older messages should have moved to Blob"
    assert len(json.dumps(record.model_dump(mode="json"), separators=(",", ":"))) <= 2_000
    assert len(record.archived) < 5  # archived in batches, not on every append
    full = await service.get(ALICE, session.id)
    assert [m["content"].split(":")[0] for m in full.messages] == [str(i) for i in range(10)]
    await service.delete(ALICE, session.id)
    assert service._blobs.blobs == {}


async def test_fit_keeps_system_and_new_messages_and_drops_whole_old_turns():
    history = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": words(5)},
        {"role": "assistant", "content": words(5)},
        {"role": "user", "content": words(3)},
        {"role": "assistant", "content": words(3)},
    ]
    new = [{"role": "user", "content": words(2)}]
    assert fit_to_context(history, new, None, count) == [*history, *new]
    assert fit_to_context(history, new, 100, count) == [*history, *new]
    trimmed = fit_to_context(history, new, 9, count)
    assert trimmed == [history[0], history[3], history[4], new[0]]
    # Even an impossible budget keeps the system message and the new turn.
    assert fit_to_context(history, new, 1, count) == [history[0], new[0]]


def test_a_turn_stores_new_messages_and_the_answer_but_not_a_repeated_system_prompt():
    history = [{"role": "system", "content": "Be brief."}]
    request = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    answer = {"role": "assistant", "content": "hello"}
    assert turn_to_store(request, history, answer) == [{"role": "user", "content": "hi"}, answer]
    changed = [{"role": "system", "content": "Be verbose."}, {"role": "user", "content": "hi"}]
    assert turn_to_store(changed, history, answer)[0] == {"role": "system", "content": "Be verbose."}
