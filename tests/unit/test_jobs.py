"""The job runner on in-memory stores with a scripted model: checkpoints, claims and webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from shared.config import ModelConfig
from shared.models.jobs import JobCreate
from shared.services.auth import MASTER
from shared.services.files import FileService
from shared.services.jobs import JobService
from shared.services.jobs.agent import pending_tool_calls
from shared.services.model_catalog import ModelCatalog
from shared.services.tools import ToolSettings
from tests import factories
from tests.fakes import InMemoryBlobStore, InMemoryDocumentStore, InMemoryQueueStore
from tests.unit.tool_helpers import FakeWeb, http_tool, redirect

MODELS = ModelConfig.model_validate(
    {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x"}}]}
)


Completion = dict[str, Any]


def tool_call(call_id: str, expression: str) -> Completion:
    body = factories.completion_dict("")
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "calculator", "arguments": json.dumps({"expression": expression})},
            }
        ],
    }
    body["choices"][0]["finish_reason"] = "tool_calls"
    return body


class World:
    def __init__(self) -> None:
        self.documents = InMemoryDocumentStore()
        self.queues = InMemoryQueueStore()
        self.answers: list[Completion] = []
        self.hooks: list[tuple[str, bytes, dict[str, str]]] = []
        files = FileService(self.documents, InMemoryBlobStore(), "uploads")
        self.jobs = self.service(files)

    def service(self, files: FileService, **options: Any) -> JobService:
        async def chat(request: Any, call: Any) -> tuple[Completion, float]:
            return self.answers.pop(0), 0.001

        async def owner(key_id: str):
            return MASTER

        async def hook(url: str, body: bytes, headers: dict[str, str]) -> None:
            self.hooks.append((url, body, headers))

        return JobService(
            self.documents,
            self.queues,
            files,
            ModelCatalog(MODELS, created=0),
            queue="jobs",
            chat=chat,
            owner=owner,
            webhook_secret=b"s" * 32,
            deliver_webhook=hook,
            **{"tool_settings": ToolSettings(), **options},
        )


@pytest.fixture
def world() -> World:
    return World()


def hold(world: World, job_id: str, seconds: float = 60) -> None:
    """Make the stored job look held by another worker's live run."""
    stored = world.documents.items["jobs"][(job_id, job_id)]
    stored.update(status="running", worker="another-run", lease_until=time.time() + seconds)


async def test_a_run_checkpoints_each_step_and_signs_its_webhook(world):
    world.answers = [
        tool_call("c1", "2+3"),
        (factories.completion_dict("Five.")),
    ]
    spec = JobCreate(
        type="agent", model="m", input="2+3?", tools=["calculator"], webhook_url="https://hooks.example.com/x"
    )
    created = await world.jobs.create(MASTER, spec)
    await world.jobs.handle({"v": 1, "job_id": created["id"]})
    job = await world.jobs.get(MASTER, created["id"])
    assert job["status"] == "completed" and job["result"]["output_text"] == "Five."
    assert job["usage"]["cost_usd"] == pytest.approx(0.002)
    ((url, body, headers),) = world.hooks
    expected = hmac.new(
        created["webhook_secret"].encode(),
        f"{headers['x-cirrus-timestamp']}.".encode() + body,
        hashlib.sha256,
    )
    assert headers["x-cirrus-signature"] == f"sha256={expected.hexdigest()}"
    assert json.loads(body)["status"] == "completed" and url == "https://hooks.example.com/x"


async def test_a_second_copy_while_another_worker_holds_the_job_does_nothing(world):
    world.answers = [(factories.completion_dict("Hi."))]
    created = await world.jobs.create(MASTER, JobCreate(type="agent", model="m", input="hi"))
    hold(world, created["id"])  # another worker's run holds the job
    await world.jobs.handle({"v": 1, "job_id": created["id"]})
    assert (await world.jobs.get(MASTER, created["id"]))["status"] == "running"
    assert world.answers  # no model call was made
    assert len(world.queues.messages["jobs"]) == 2  # ...but a look later, in case that worker died


def test_only_tool_calls_without_a_saved_result_are_pending():
    calls = [{"id": "a", "function": {}}, {"id": "b", "function": {}}]
    messages = [
        {"role": "user"},
        {"role": "assistant", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "a"},
    ]
    assert [c["id"] for c in pending_tool_calls(messages)] == ["b"]
    assert pending_tool_calls([*messages, {"role": "tool", "tool_call_id": "b"}]) == []


def test_job_requests_are_checked_by_kind():
    with pytest.raises(ValueError, match="input"):
        JobCreate(type="agent", model="m")
    with pytest.raises(ValueError, match="task"):
        JobCreate(type="analysis", model="m", input={})
    with pytest.raises(ValueError, match="queue name"):
        JobCreate(type="agent", model="m", input="x", reply_queue="Bad_Name")


async def test_two_copies_of_a_message_in_one_worker_run_the_job_once(world):
    world.answers = [(factories.completion_dict("Once."))]
    created = await world.jobs.create(MASTER, JobCreate(type="agent", model="m", input="hi"))
    message = {"v": 1, "job_id": created["id"]}
    await asyncio.gather(world.jobs.handle(message), world.jobs.handle(message))
    assert (await world.jobs.get(MASTER, created["id"]))["status"] == "completed"  # one answer was enough


def http_call(call_id: str, url: str) -> Completion:
    completion = tool_call(call_id, "1")
    function = completion["choices"][0]["message"]["tool_calls"][0]["function"]
    function["name"], function["arguments"] = "http_get", json.dumps({"url": url})
    return completion


async def test_a_redirect_to_the_metadata_endpoint_is_blocked_and_recorded(world):
    """A prompt-injected fetch of an allowed host that redirects to 169.254.169.254: the agent's
    tool answers with the refusal, and the job's events record it."""
    web = FakeWeb({("example.com", "/"): redirect("http://169.254.169.254/latest/meta-data/")})
    world.jobs = world.service(
        FileService(world.documents, InMemoryBlobStore(), "uploads"),
        tool_settings=ToolSettings(http_allowlist=("example.com",)),
        tools=lambda names, settings: {"http_get": http_tool(web=web)},
    )
    world.answers = [
        http_call("c1", "https://example.com/"),
        (factories.completion_dict("I could not fetch it.")),
    ]
    created = await world.jobs.create(
        MASTER, JobCreate(type="agent", model="m", input="x", tools=["http_get"])
    )
    await world.jobs.handle({"v": 1, "job_id": created["id"]})
    job = await world.jobs.get(MASTER, created["id"])
    assert job["status"] == "completed" and [s.get("status") for s in job["steps"]] == [None, "blocked", None]
    events = [d for d in world.documents.items["jobs"].values() if d.get("object") == "job.event"]
    (blocked,) = [e["data"] for e in events if e["type"] == "tool.blocked"]
    assert blocked["reason"] == "link-local address 169.254.169.254"
    assert len(web.requests) == 1  # the allowed host was asked; the metadata address never was
