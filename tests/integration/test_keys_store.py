"""Keys and their limits on the real Cosmos server: racing admissions, and secrets kept out of
logs and spans."""

import asyncio
import logging
import random
import time
import uuid

import pytest

from shared.config import Settings
from shared.container import build_container
from shared.errors import AuthenticationError, InsufficientQuotaError, RateLimitError
from shared.models.keys import KeyCreate
from shared.models.requests import ChatCompletionCreate
from shared.services.calls import CallContext
from shared.services.limits import KeyLimiter
from tests.fakes import TEST_ACTOR, FakeLLMRouter
from tools.stack import COSMOS_EMULATOR_KEY


@pytest.fixture
async def container(emulators, monkeypatch):
    monkeypatch.setenv("CIRRUS_LOCAL_PROVIDER_URL", "http://127.0.0.1:9/v1")  # the fake router answers
    settings = Settings(
        _env_file=None,
        CIRRUS_ENV="local",
        AzureWebJobsStorage=emulators.storage_connection_string,
        COSMOS_ENDPOINT=emulators.cosmos_endpoint,
        COSMOS_KEY=COSMOS_EMULATOR_KEY,
        COSMOS_DATABASE="keys-" + uuid.uuid4().hex[:8],
    )
    built = await build_container(settings, llm_factory=lambda _: FakeLLMRouter())
    yield built
    await built.aclose()


async def principal(container, **fields):
    created = await container.keys.create(KeyCreate(**fields), TEST_ACTOR)
    return created, await container.auth.authenticate(f"Bearer {created.key}")


async def test_fifty_racing_requests_overshoot_the_budget_by_at_most_one_request(container):
    budget, max_cost = 0.01, 0.001
    _, caller = await principal(container, max_budget=budget)
    # Three workers on one store: their writes of the key's state race through the ETag.
    workers = [container.limiter, *(KeyLimiter(container.clients.documents) for _ in range(2))]

    async def request(limiter: KeyLimiter) -> float:
        await asyncio.sleep(random.uniform(0, 0.05))
        try:
            admission = await limiter.admit(caller, lambda: max_cost)
        except InsufficientQuotaError:
            return 0.0
        await asyncio.sleep(random.uniform(0, 0.05))  # the provider call
        cost = random.uniform(0.5, 1.0) * max_cost  # never more than the hold
        await limiter.settle(caller, admission, cost, 10)
        return cost

    costs = await asyncio.gather(*(request(workers[i % 3]) for i in range(50)))
    spent = sum(costs)
    assert 0 < sum(1 for c in costs if c) < 50
    assert spent <= budget + max_cost
    shown = await container.keys.get(caller.key_id)
    assert shown.spend == pytest.approx(spent)


async def test_no_secret_reaches_logs_spans_or_stored_items(container, spans, caplog):
    caplog.set_level(logging.DEBUG)
    created, caller = await principal(container, rpm_limit=1, team_id="t")
    if time.time() % 60 > 50:  # both requests in one minute, so the second is refused
        await asyncio.sleep(61 - time.time() % 60)
    chat = await container.chat()
    request = ChatCompletionCreate.model_validate(
        {"model": "cirrus-local", "messages": [{"role": "user", "content": "hi"}]}
    )
    await chat.create(request, CallContext(request_id="req-1", principal=caller))
    with pytest.raises(RateLimitError):
        await chat.create(request, CallContext(request_id="req-2", principal=caller))
    with pytest.raises(AuthenticationError):
        await container.auth.authenticate(f"Bearer {created.key[:-2]}xx")
    rotated = await container.keys.rotate(created.id, TEST_ACTOR)
    await container.keys.revoke(created.id, TEST_ACTOR)
    await container.background.drain()  # the usage flush and the limits settle
    stored = await container.clients.documents.read("keys", created.id, created.id)
    secrets = [created.key, created.key[18:], rotated.key, rotated.key[18:], stored["key_hash"]]
    logged = "\n".join(r.getMessage() + str(r.args) for r in caplog.records)
    traced = "\n".join(str(s.attributes) + str(s.events) + s.name for s in spans.get_finished_spans())
    usage = str(await container.clients.documents.query("usage", "SELECT * FROM c"))
    assert created.id in traced and "req-1" in usage  # spans and usage name the key by id...
    for material in secrets:
        assert material not in logged and material not in traced and material not in usage
    assert created.key not in str(stored) and rotated.key not in str(stored)  # ...and store only the hash
