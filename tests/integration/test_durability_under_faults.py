"""Batches and jobs run to the end while Cosmos, Blob and Queue fail at 10 % (connection errors,
429, 503, timeouts, and writes whose reply is lost), under three seeds: every result exactly once,
no saved work paid for twice, and every provider call recorded as spend exactly once."""

from __future__ import annotations

import json
import uuid
from collections import Counter

import httpx
import pytest

from shared.models.batches import BatchCreate
from shared.models.jobs import JobCreate
from shared.services.auth import MASTER
from tests import factories
from tests.integration.durable import FaultyWorld

SEEDS = [1, 2, 3]
RATE = 0.10


@pytest.fixture
async def world_for(emulators, fake_provider_url, tmp_path):
    worlds: list[FaultyWorld] = []

    async def start(seed: int, **settings: str) -> FaultyWorld:
        worlds.append(
            await FaultyWorld.start(emulators, fake_provider_url, tmp_path, seed=seed, rate=RATE, **settings)
        )
        return worlds[-1]

    yield start
    for world in worlds:
        await world.aclose()


def provider_calls(provider: httpx.Client, marker: str) -> list[dict]:
    """The fake provider's requests whose prompt carries `marker`."""
    return [r for r in provider.get("/_control/requests").json() if marker in str(r.get("body"))]


@pytest.mark.parametrize("seed", SEEDS)
async def test_an_agent_job_completes_under_storage_faults_and_never_repeats_saved_work(
    world_for, provider, seed
):
    # A lease of 3 s: a delivery that failed while holding the job is taken over in seconds, not 90.
    world = await world_for(seed, CIRRUS_JOB_LEASE_SECONDS="3")
    marker = f"job-{uuid.uuid4().hex[:8]}"
    for expression in ("17*3", "51+1", "52/4"):  # up to three tool steps, then the answer
        tool = {"name": "calculator", "arguments": {"expression": expression}}
        behaviour = {"behaviour": {"tool_calls": [tool]}, "times": 1}
        provider.post("/_control/enqueue", json=behaviour).raise_for_status()
    created = await world.container.jobs.create(
        MASTER,
        JobCreate(type="agent", model="cirrus-local", input=f"{marker}: what is 17*3?", tools=["calculator"]),
    )

    async def ended() -> bool:
        job = await world.container.jobs.get(MASTER, created["id"])
        return job["status"] in ("completed", "failed", "cancelled", "incomplete")

    delivery = await world.deliver(ended)
    job = await world.container.jobs.get(MASTER, created["id"])
    assert job["status"] == "completed", (job.get("error"), delivery)
    assert world.faults() > 0, world.plan.stats  # storage really failed
    calls = provider_calls(provider, marker)
    model_steps = [s for s in job["steps"] if s["kind"] == "model"]
    # A tool call whose result was saved never ran again: one tool message per call id.
    stored = await world.container.clients.documents.read("jobs", created["id"], created["id"])
    tool_ids = [m["tool_call_id"] for m in stored["messages"] if m["role"] == "tool"]
    assert len(tool_ids) == len(set(tool_ids))
    # A model step is asked again only when its answer was not yet saved when a delivery failed.
    assert len(model_steps) <= len(calls) <= len(model_steps) + delivery.failed
    # Every provider call is recorded as spend, once: one usage record each, none twice.
    await world.settle_usage()
    records = await world.usage_records(job_id=created["id"])
    assert len(records) == len(calls), (len(records), len(calls))
    assert len({r["id"] for r in records}) == len(records)


BATCH_REQUESTS = 300


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_batch_completes_under_storage_faults_with_every_request_once_and_none_paid_twice(
    world_for, provider, seed
):
    world = await world_for(seed, CIRRUS_BATCH_CHUNK_SIZE="50")
    container = world.container
    marker = f"batch-{uuid.uuid4().hex[:8]}"
    lines = [factories.batch_line(f"r{i}", content=f"{marker} r{i}.") for i in range(BATCH_REQUESTS)]
    source = await container.files.create(
        MASTER, filename="in.jsonl", purpose="batch", content=factories.batch_input(lines)
    )
    body = BatchCreate(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h")
    batch_id = (await container.batches.create(MASTER, body))["id"]

    async def ended() -> bool:
        batch = await container.batches.get(MASTER, batch_id)
        return batch["status"] in ("completed", "failed", "expired", "cancelled")

    delivery = await world.deliver(ended)
    batch = await container.batches.get(MASTER, batch_id)
    assert batch["status"] == "completed", (batch, delivery)
    assert world.faults() >= 5, world.plan.stats  # storage really failed, several times over

    # Every custom_id exactly once across the output and error files, and all of them answered.
    ids = Counter()
    for file_id in (batch.get("output_file_id"), batch.get("error_file_id")):
        if file_id:
            data = b"".join([c async for c in await container.files.content(MASTER, file_id)])
            ids.update(json.loads(line)["custom_id"] for line in data.splitlines() if line.strip())
    assert ids == Counter({f"r{i}": 1 for i in range(BATCH_REQUESTS)})
    assert batch["request_counts"]["completed"] == BATCH_REQUESTS

    # Provider calls: each request once, plus only retries of work whose result was not yet saved.
    calls = provider_calls(provider, marker)
    asked = Counter()
    for call in calls:
        content = call["body"]["messages"][-1]["content"]
        custom_id = content.removeprefix(f"{marker} ").rstrip(".")
        asked[custom_id] += 1
        saved_at = world.saved.get(custom_id)
        assert saved_at is None or call["received_at"] <= saved_at, (
            f"{custom_id} paid for again after its save"
        )
    assert set(asked) == {f"r{i}" for i in range(BATCH_REQUESTS)}
    # Every provider call is recorded as spend exactly once.
    await world.settle_usage()
    records = await world.usage_records(batch_id=batch_id)
    assert len(records) == len(calls) and len({r["id"] for r in records}) == len(records)
