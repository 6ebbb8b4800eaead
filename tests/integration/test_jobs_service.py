"""The job runner on the Cosmos server and Azurite's queues, the host played by the test: the
sweeper that resumes a job whose worker died and whose message was lost."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
from azure.storage.queue.aio import QueueClient

from shared.clients.cosmos_store import CosmosDocumentStore
from shared.clients.protocols import CosmosContainerSpec
from shared.clients.queue_store import AzureQueueStore
from shared.config import ModelConfig
from shared.models.jobs import JobCreate
from shared.services.auth import MASTER
from shared.services.files import FileService
from shared.services.jobs import JobService
from shared.services.model_catalog import ModelCatalog
from shared.services.tools import ToolSettings
from tests import factories
from tests.fakes import InMemoryBlobStore
from tools.stack import COSMOS_EMULATOR_KEY

MODELS = ModelConfig.model_validate(
    {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x"}}]}
)
CALCULATING = JobCreate(type="agent", model="m", input="6*7?", tools=["calculator"])


class Crash(BaseException):
    """The worker process dying mid-run (not an error a step can catch)."""


def calculate(expression: str) -> dict[str, Any]:
    body = factories.completion_dict("")
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "calculator", "arguments": json.dumps({"expression": expression})},
            }
        ],
    }
    return body


class World:
    def __init__(self, documents: CosmosDocumentStore, queues: AzureQueueStore, connection: str) -> None:
        self.documents = documents
        self.connection = connection
        self.queue = "jobs-" + uuid.uuid4().hex[:8]
        self.answers: list[Any] = []
        self.jobs = JobService(
            documents,
            queues,
            FileService(documents, InMemoryBlobStore(), "uploads"),
            ModelCatalog(MODELS, created=0),
            queue=self.queue,
            chat=self._chat,
            owner=self._owner,
            tool_settings=ToolSettings(),
            webhook_secret=b"s" * 32,
        )

    async def _chat(self, request: Any, call: Any) -> tuple[dict[str, Any], float]:
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer, 0.0

    async def _owner(self, key_id: str):
        return MASTER

    async def receive(self) -> list[dict[str, Any]]:
        """Take every visible message off the jobs queue."""
        async with QueueClient.from_connection_string(self.connection, self.queue) as client:
            taken = []
            async for message in client.receive_messages(max_messages=32, visibility_timeout=60):
                taken.append(json.loads(base64.b64decode(message.content)))
                await client.delete_message(message)
            return taken

    async def held_by_a_dead_run(self, job_id: str, lease_until: float) -> None:
        """The job as a worker killed mid-run leaves it: running, held, its lease ending then."""
        doc = await self.documents.read("jobs", job_id, job_id)
        assert doc is not None
        doc.update(status="running", worker="dead-run", lease_until=lease_until, started_at=int(time.time()))
        await self.documents.replace("jobs", doc)


@pytest.fixture
async def world(emulators):
    documents = CosmosDocumentStore(
        emulators.cosmos_endpoint, COSMOS_EMULATOR_KEY, "j-" + uuid.uuid4().hex[:8], local=True
    )
    await documents.ensure_database()
    await documents.ensure_container(CosmosContainerSpec("jobs"))
    queues = AzureQueueStore.from_connection_string(emulators.storage_connection_string)
    built = World(documents, queues, emulators.storage_connection_string)
    await queues.ensure_queue(built.queue)
    yield built
    for client in (documents, queues):
        await client.aclose()


async def test_a_job_left_running_with_no_message_is_resumed_to_completion_by_one_sweep(world):
    world.answers = [calculate("6*7"), Crash(), factories.completion_dict("It is 42.")]
    created = await world.jobs.create(MASTER, CALCULATING)
    (message,) = await world.receive()  # a worker takes the message...
    with pytest.raises(Crash):
        await world.jobs.handle(message)  # ...and dies after the tool's result was saved
    assert await world.receive() == []  # and the message is gone: nothing would ever resume the job
    assert (await world.jobs.get(MASTER, created["id"]))["status"] == "running"

    assert await world.jobs.sweep(time.time()) == 1
    (again,) = await world.receive()
    assert again["v"] == 1 and again["job_id"] == created["id"]
    await world.jobs.handle(again)
    job = await world.jobs.get(MASTER, created["id"])
    assert job["status"] == "completed" and job["result"]["output_text"] == "It is 42."
    assert [s["kind"] for s in job["steps"]] == ["model", "tool", "model"]  # the tool ran once
    assert await world.jobs.sweep(time.time()) == 0 and await world.receive() == []


async def test_a_sweep_waits_out_the_grace_period_and_sends_a_job_once_per_interval(world):
    created = await world.jobs.create(MASTER, CALCULATING)
    await world.receive()  # the message is lost
    lapsed = time.time()
    await world.held_by_a_dead_run(created["id"], lease_until=lapsed)
    assert await world.jobs.sweep(lapsed + 10) == 0  # the host's redelivery may still come
    assert await world.jobs.sweep(lapsed + 200) == 1
    assert await world.jobs.sweep(lapsed + 201) == 0  # sent already: a second sweep sends nothing
    assert len(await world.receive()) == 1
    assert await world.jobs.sweep(lapsed + 200 + 301) == 1  # still stuck later: sent again


async def test_a_sweep_sends_jobs_queued_too_long_a_bounded_number_at_a_time(world):
    ids = {(await world.jobs.create(MASTER, CALCULATING))["id"] for _ in range(3)}
    await world.receive()  # their messages are lost
    now = time.time()
    assert await world.jobs.sweep(now) == 0  # queued a moment ago: not yet
    later = now + 301
    assert await world.jobs.sweep(later, limit=2) == 2
    assert await world.jobs.sweep(later, limit=2) == 1
    assert await world.jobs.sweep(later, limit=2) == 0
    assert {m["job_id"] for m in await world.receive()} == ids
