"""Batches through the whole app (the container: its settings, the live gateway, Cirrus's router and
the native adapter) against the fake provider over HTTP, on the Cosmos server and Azurite: a
provider 429 with Retry-After and a provider 500 are waited out by the retry policy of queued work,
and the batch still completes with every custom_id exactly once; an input line longer than
CIRRUS_MAX_BODY_BYTES fails validation. The test plays the Functions host: it takes the batch
queue's messages and hands them to the service."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from azure.storage.queue.aio import QueueClient

from shared.config import Settings
from shared.container import build_container
from shared.models.batches import BatchCreate
from shared.services.auth import MASTER
from tests import factories
from tools.stack import COSMOS_EMULATOR_KEY

REQUESTS = 6


@pytest.fixture
async def app(emulators, fake_provider_url, monkeypatch):
    """Builds containers with app settings on top of these; closes them at the end."""
    monkeypatch.setenv("CIRRUS_LOCAL_PROVIDER_URL", f"{fake_provider_url}/v1")  # the local model file
    built = []

    async def build(**settings: str):
        name = "batches-" + uuid.uuid4().hex[:8]
        container = await build_container(
            Settings(
                _env_file=None,
                CIRRUS_ENV="local",
                AzureWebJobsStorage=emulators.storage_connection_string,
                COSMOS_ENDPOINT=emulators.cosmos_endpoint,
                COSMOS_KEY=COSMOS_EMULATOR_KEY,
                COSMOS_DATABASE=name,
                BATCH_QUEUE=name,
                **settings,
            )
        )
        built.append(container)
        return container

    yield build
    for container in built:
        await container.aclose()


@pytest.fixture
async def container(app):
    return await app()


async def run_all(container) -> None:
    """Deliver the batch queue's messages to the service until the queue is empty."""
    settings = container.settings
    conn = settings.storage_connection_string.get_secret_value()
    async with QueueClient.from_connection_string(conn, settings.batch_queue) as queue:
        while True:
            messages = [m async for m in queue.receive_messages(max_messages=32, visibility_timeout=60)]
            if not messages:
                return
            for message in messages:
                await container.batches.handle(json.loads(base64.b64decode(message.content)))
                await queue.delete_message(message)


async def submit(container, n: int, content: str = "") -> str:
    lines = [factories.batch_line(f"r{i}", content=content or None) for i in range(n)]
    source = await container.files.create(
        MASTER, filename="in.jsonl", purpose="batch", content=factories.batch_input(lines)
    )
    body = BatchCreate(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h")
    return (await container.batches.create(MASTER, body))["id"]


async def lines_of(container, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    data = b"".join([c async for c in await container.files.content(MASTER, file_id)])
    return [json.loads(t) for t in data.splitlines()]


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"fault": "429", "retry_after": 1}, id="429-retry-after"),
        pytest.param({"fault": "500"}, id="500"),
    ],
)
async def test_a_provider_fault_is_waited_out_and_the_batch_completes_with_each_request_once(
    container, provider, fault
):
    provider.post("/_control/enqueue", json={"behaviour": fault, "times": 1}).raise_for_status()
    batch_id = await submit(container, REQUESTS)
    await run_all(container)
    batch = await container.batches.get(MASTER, batch_id)
    output = await lines_of(container, batch.get("output_file_id"))
    errors = await lines_of(container, batch.get("error_file_id"))
    assert batch["status"] == "completed" and errors == []
    assert sorted(line["custom_id"] for line in output) == sorted(f"r{i}" for i in range(REQUESTS))
    assert batch["request_counts"] == {"total": REQUESTS, "completed": REQUESTS, "failed": 0}
    asked = provider.get("/_control/requests").json()
    assert len(asked) == REQUESTS + 1  # the refused request was asked again, once


async def test_a_429_and_then_a_500_for_one_request_are_both_waited_out(container, provider):
    for behaviour in ({"fault": "429", "retry_after": 1}, {"fault": "500"}):
        provider.post("/_control/enqueue", json={"behaviour": behaviour, "times": 1}).raise_for_status()
    batch_id = await submit(container, 1)  # one request meets both faults, one after the other
    await run_all(container)
    batch = await container.batches.get(MASTER, batch_id)
    output = await lines_of(container, batch.get("output_file_id"))
    assert batch["status"] == "completed" and [line["custom_id"] for line in output] == ["r0"]
    assert output[0]["response"]["status_code"] == 200
    assert len(provider.get("/_control/requests").json()) == 3


async def test_an_input_line_longer_than_the_body_cap_fails_validation(app):
    container = await app(CIRRUS_MAX_BODY_BYTES="4096")
    batch_id = await submit(container, 2, content="x" * 5000)
    await run_all(container)
    batch = await container.batches.get(MASTER, batch_id)
    assert batch["status"] == "failed"
    assert [(e["line"], e["code"]) for e in batch["errors"]["data"]] == [
        (1, "request_too_large"),
        (2, "request_too_large"),
    ]
