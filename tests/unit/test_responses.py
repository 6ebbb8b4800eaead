"""ResponsesService on in-memory stores, the real chat service and job runner, a scripted model:
create, chains, trimming, streams, storage, background runs (resumed, cancelled), input items."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from shared.clients.protocols import ModelFeatures, ModelLimits
from shared.config import ModelConfig
from shared.errors import AuthenticationError, InvalidRequestError, NotFoundError, PermissionDeniedError
from shared.models.responses import ResponseCreate
from shared.models.validation import validate_body
from shared.services.auth import MASTER, Principal
from shared.services.background import Background
from shared.services.cache import ResponseCache
from shared.services.calls import CallContext, Metering
from shared.services.chat import ChatService
from shared.services.files import FileService
from shared.services.jobs import JobService, live_chat
from shared.services.limits import KeyLimiter
from shared.services.model_catalog import ModelCatalog
from shared.services.responses import ResponsesService
from shared.services.sessions import SessionService
from shared.services.tools import ToolSettings
from shared.services.usage import UsageService
from tests import factories
from tests.fakes import FakeLLMRouter, InMemoryBlobStore, InMemoryDocumentStore, InMemoryQueueStore
from tests.openapi import assert_matches

CONFIG = ModelConfig.model_validate(
    {
        "model_list": [
            {"model_name": name, "litellm_params": {"model": "openai/gpt-4o-mini"}}
            for name in ("cirrus-local", "small", "no-tools", "thinker")
        ]
    }
)
ALICE = Principal("key_alice", False, team_id="red")
BOB = Principal("key_bob", False)
LIMITED = Principal("key_limited", False, models=frozenset({"small"}))
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


class World:
    def __init__(self) -> None:
        self.router = FakeLLMRouter(
            limits={"small": ModelLimits(max_input_tokens=40, max_output_tokens=100)},
            features={
                "no-tools": ModelFeatures(function_calling=False),
                "thinker": ModelFeatures(function_calling=True, reasoning=True),
            },
        )
        self.documents = InMemoryDocumentStore()
        self.blobs = InMemoryBlobStore()
        self.queues = InMemoryQueueStore()
        self.background = Background()
        self.usage = UsageService(self.documents, self.queues, "usage", self.background, flush_interval=0)
        self.metering = Metering(self.router, self.usage, self.background, KeyLimiter(self.documents))
        self.catalog = ModelCatalog(CONFIG, created=0)
        self.keys = {p.key_id: p for p in (MASTER, ALICE, BOB, LIMITED)}
        self.responses = ResponsesService(
            self.documents,
            self.blobs,
            self.catalog,
            self.router,
            chat=self.chat,
            metering=self.meter,
            jobs=lambda: self.jobs,
            blob_container="outputs",
            max_cost_usd=1.0,
        )
        self.jobs = JobService(
            self.documents,
            self.queues,
            FileService(self.documents, self.blobs, "uploads"),
            self.catalog,
            queue="jobs",
            chat=live_chat(self.chat, self.cost),
            owner=self.owner,
            tool_settings=ToolSettings(),
            webhook_secret=b"s" * 32,
            lease_seconds=30,
            responses=self.responses.runner,
        )

    async def chat(self) -> ChatService:
        sessions = SessionService(self.documents, self.blobs, "outputs")
        return ChatService(
            self.metering, self.catalog, sessions, ResponseCache(self.documents), max_messages=50
        )

    async def meter(self) -> Metering:
        return self.metering

    async def cost(self, served: Any, input_tokens: int, output_tokens: int) -> float | None:
        return self.router.cost_usd(served, input_tokens, output_tokens)

    async def owner(self, key_id: str) -> Principal:
        if key_id not in self.keys:
            raise AuthenticationError(f"The key {key_id} no longer exists.")
        return self.keys[key_id]

    async def create(self, principal: Principal = ALICE, **body: Any) -> Any:
        request = validate_body(ResponseCreate, {"model": "cirrus-local", "input": "Hi", **body})
        return await self.responses.create(request, CallContext(request_id="req_1", principal=principal))

    async def run_jobs(self) -> None:
        """Deliver every queued jobs message once (a redelivery is a second call)."""
        while self.queues.messages["jobs"]:
            raw = self.queues.messages["jobs"].pop(0)
            await self.jobs.handle(json.loads(base64.b64decode(raw)))

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """The response's events among its job's, in order (not the job's own: job.completed, ...)."""
        rows = [d for d in self.documents.items["jobs"].values() if d.get("object") == "job.event"]
        ordered = [r for r in sorted(rows, key=lambda r: r["seq"]) if r["pk"] == job_id]
        assert all(
            r["seq"] == r["data"]["sequence_number"] + 1 for r in ordered if "sequence_number" in r["data"]
        )
        return [r["data"] for r in ordered if "sequence_number" in r["data"]]

    async def usage_records(self) -> list[dict[str, Any]]:
        await self.background.drain()
        return [record for item in self.documents.items["usage"].values() for record in item["records"]]


@pytest.fixture
def world() -> World:
    return World()


async def test_a_response_runs_as_chat_metered_as_responses_and_is_stored(world):
    created = await world.create(instructions="Be brief.", metadata={"ticket": "7"}, temperature=0.5)
    response = created.response
    assert_matches("Response", response)
    assert response["status"] == "completed" and response["id"].startswith("resp_")
    assert response["output"][0]["content"][0]["text"] == "Hello from the fake router."
    assert response["usage"]["total_tokens"] == 10 and response["metadata"] == {"ticket": "7"}
    (call,) = world.router.calls
    assert call == {
        "model": "cirrus-local",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "temperature": 0.5,
    }
    (record,) = await world.usage_records()
    assert record["endpoint"] == "responses" and record["tags"] == {"response_id": response["id"]}
    assert await world.responses.get(ALICE, response["id"]) == response
    teammate = Principal("key_carol", False, team_id="red")
    assert (await world.responses.get(teammate, response["id"]))["id"] == response["id"]
    with pytest.raises(NotFoundError):  # another tenant: as if it did not exist
        await world.responses.get(BOB, response["id"])


async def test_store_false_is_not_kept_and_cannot_be_continued(world):
    response = (await world.create(store=False)).response
    assert response["store"] is False
    with pytest.raises(NotFoundError):
        await world.responses.get(ALICE, response["id"])
    with pytest.raises(InvalidRequestError) as caught:
        await world.create(previous_response_id=response["id"], input="And?")
    assert caught.value.code == "previous_response_not_found" and caught.value.param == "previous_response_id"


async def test_previous_response_id_carries_the_conversation_but_not_the_instructions(world):
    world.router.enqueue("First answer.", "Second answer.", "Third answer.")
    first = (await world.create(instructions="Old rules.", input="One")).response
    second = (await world.create(previous_response_id=first["id"], input="Two")).response
    third = (
        await world.create(previous_response_id=second["id"], input="Three", instructions="New.")
    ).response
    assert third["previous_response_id"] == second["id"]
    assert world.router.calls[-1]["messages"] == [
        {"role": "system", "content": "New."},
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "Two"},
        {"role": "assistant", "content": "Second answer."},
        {"role": "user", "content": "Three"},
    ]
    with pytest.raises(InvalidRequestError):  # another tenant cannot continue it
        await world.create(BOB, previous_response_id=third["id"], input="Four")


async def test_a_chain_is_trimmed_to_the_context_window_unless_truncation_is_disabled(world):
    words = " ".join(["word"] * 12)
    world.router.enqueue(words, words, "ok", "ok")
    first = (await world.create(model="small", input=words)).response
    second = (await world.create(model="small", previous_response_id=first["id"], input=words)).response
    await world.create(model="small", previous_response_id=second["id"], input="last one")
    # 40 tokens of context, 12 a message: the oldest turn went, whole.
    assert [m["content"] for m in world.router.calls[-1]["messages"]] == [words, words, "last one"]
    await world.create(
        model="small", previous_response_id=second["id"], input="last one", truncation="disabled"
    )
    assert len(world.router.calls[-1]["messages"]) == 5


async def test_a_function_tool_round_trip(world):
    world.router.enqueue(
        factories.tool_call_completion(("call_1", "get_weather", {"city": "Oslo"})), "It is cold."
    )
    first = (await world.create(tools=[WEATHER], input="Weather in Oslo?")).response
    (call,) = first["output"]
    assert (call["type"], call["call_id"], call["name"]) == ("function_call", "call_1", "get_weather")
    assert world.router.calls[0]["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    output = {"type": "function_call_output", "call_id": "call_1", "output": "-3 C"}
    second = (await world.create(tools=[WEATHER], previous_response_id=first["id"], input=[output])).response
    assert second["output"][0]["content"][0]["text"] == "It is cold."
    assert world.router.calls[1]["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call["arguments"]},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "-3 C"},
    ]


async def test_a_function_call_output_must_answer_a_call_made_before_it(world):
    orphan = {"type": "function_call_output", "call_id": "call_nope", "output": "-3 C"}
    with pytest.raises(InvalidRequestError, match="No tool call found") as caught:
        await world.create(input=[{"role": "user", "content": "Hi"}, orphan])
    assert caught.value.param == "input[1]"
    with pytest.raises(InvalidRequestError, match="No tool call found"):
        await world.create(input=[orphan], background=True)  # refused before it is queued
    assert world.router.calls == [] and not world.queues.messages.get("jobs")
    call = {"type": "function_call", "call_id": "call_nope", "name": "get_weather", "arguments": "{}"}
    assert (await world.create(tools=[WEATHER], input=[call, orphan])).response["status"] == "completed"


async def test_checks_come_before_any_model_call(world):
    with pytest.raises(InvalidRequestError, match="does not support tools"):
        await world.create(model="no-tools", tools=[WEATHER])
    with pytest.raises(InvalidRequestError, match="not found in 'tools'"):
        await world.create(tools=[WEATHER], tool_choice={"type": "function", "name": "nope"})
    with pytest.raises(InvalidRequestError) as caught:
        await world.create(model="small", max_output_tokens=500)
    assert caught.value.param == "max_output_tokens"
    with pytest.raises(PermissionDeniedError):
        await world.create(LIMITED)
    assert world.router.calls == []


async def test_reasoning_effort_reaches_only_models_that_reason(world):
    await world.create(reasoning={"effort": "low"})
    await world.create(model="thinker", reasoning={"effort": "low"})
    assert "reasoning_effort" not in world.router.calls[0]
    assert world.router.calls[1]["reasoning_effort"] == "low"


async def test_a_stream_is_stored_before_its_last_event(world):
    created = await world.create(stream=True)
    events = []
    async for event in created.events:
        if event["type"] == "response.completed":  # by now it can be fetched and continued
            stored = await world.responses.get(ALICE, event["response"]["id"])
            assert stored == event["response"]
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    (record,) = await world.usage_records()
    assert record["endpoint"] == "responses" and record["stream"] is True


async def test_a_stream_that_fails_midway_ends_with_error_and_failed_and_is_stored_failed(world):
    world.router.enqueue("one two three four")
    real = world.router.chat_stream

    async def failing(params):
        return await real(params, fail_after=3)

    world.router.chat_stream = failing  # type: ignore[method-assign]
    created = await world.create(stream=True)
    events = [event async for event in created.events]
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["code"] == "upstream_error"
    failed = await world.responses.get(ALICE, events[0]["response"]["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"


async def test_input_items_list_the_conversation_newest_first_in_pages(world):
    first = (
        await world.create(input=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    ).response
    second = (await world.create(previous_response_id=first["id"], input="c")).response
    page = await world.responses.input_items(ALICE, second["id"], limit=2, after=None, order="desc")
    assert_matches("ResponseItemList", page)
    assert page["has_more"] is True
    texts = [item["content"][0]["text"] for item in page["data"]]
    assert texts == ["c", "Hello from the fake router."]
    rest = await world.responses.input_items(
        ALICE, second["id"], limit=20, after=page["last_id"], order="desc"
    )
    assert [i["content"][0]["text"] for i in rest["data"]] == ["b", "a"] and rest["has_more"] is False
    ascending = await world.responses.input_items(ALICE, second["id"], limit=20, after=None, order="asc")
    assert [i["content"][0]["text"] for i in ascending["data"]] == [
        "a",
        "b",
        "Hello from the fake router.",
        "c",
    ]


async def test_delete_forgets_a_response_and_cancel_is_for_background_ones(world):
    response = (await world.create()).response
    with pytest.raises(InvalidRequestError, match="background=true"):
        await world.responses.cancel(ALICE, response["id"])
    assert await world.responses.delete(ALICE, response["id"]) == {
        "id": response["id"],
        "object": "response",
        "deleted": True,
    }
    with pytest.raises(NotFoundError):
        await world.responses.get(ALICE, response["id"])


async def test_a_large_input_is_kept_in_blob(world):
    big = "x " * 900_000
    response = (await world.create(input=big)).response
    (blob,) = world.blobs.blobs
    assert blob == ("outputs", f"responses/{response['id']}/input.json")
    page = await world.responses.input_items(ALICE, response["id"], limit=1, after=None, order="asc")
    assert page["data"][0]["content"][0]["text"] == big
    await world.responses.delete(ALICE, response["id"])
    assert world.blobs.blobs == {}


# --- background ---------------------------------------------------------------------------------------


async def test_a_background_response_is_queued_then_run_by_the_job_runner(world):
    queued = (await world.create(background=True, input="Long task")).response
    assert queued["status"] == "queued" and queued["background"] is True and queued["output"] == []
    assert (await world.responses.get(ALICE, queued["id"]))["status"] == "queued"
    await world.run_jobs()
    done = await world.responses.get(ALICE, queued["id"])
    assert (
        done["status"] == "completed"
        and done["output"][0]["content"][0]["text"] == "Hello from the fake router."
    )
    events = world.events(f"job_{queued['id']}")
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events][:4] == [
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.output_item.added",
    ]
    assert events[-1]["type"] == "response.completed" and events[-1]["response"] == done
    for event in events:
        assert_matches("ResponseStreamEvent", event)
    (record,) = await world.usage_records()
    assert record["endpoint"] == "responses"
    assert record["tags"] == {"job_id": f"job_{queued['id']}", "response_id": queued["id"]}


async def test_a_background_run_that_died_after_saving_its_answer_does_not_ask_again(world):
    queued = (await world.create(background=True)).response
    job_id = f"job_{queued['id']}"
    raw = world.queues.messages["jobs"][0]  # the host redelivers it after the death
    await world.run_jobs()
    # The worker died after saving the answer, before its last events: forget those events.
    jobs = world.documents.items["jobs"]
    for key in [k for k, d in jobs.items() if d.get("object") == "job.event" and d["seq"] > 4]:
        del jobs[key]
    jobs[(job_id, job_id)].update(status="running", worker=None, lease_until=0)
    world.queues.messages["jobs"].append(raw)
    await world.run_jobs()
    assert len(world.router.calls) == 1  # not asked again
    events = world.events(job_id)
    assert events[-1]["type"] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


async def test_a_background_run_whose_worker_died_mid_call_asks_again_and_completes(world):
    queued = (await world.create(background=True)).response
    job_id = f"job_{queued['id']}"
    raw = world.queues.messages["jobs"][0]
    world.router.enqueue(asyncio.CancelledError())  # the first worker is gone mid-call
    with pytest.raises(asyncio.CancelledError):
        await world.run_jobs()
    assert (await world.responses.get(ALICE, queued["id"]))["status"] == "in_progress"
    world.documents.items["jobs"][(job_id, job_id)].update(worker=None, lease_until=0)
    world.queues.messages["jobs"].append(raw)
    await world.run_jobs()
    done = await world.responses.get(ALICE, queued["id"])
    assert done["status"] == "completed"
    assert [e["type"] for e in world.events(job_id)].count("response.in_progress") == 1


async def test_cancelling_a_queued_background_response_ends_it_and_its_job(world):
    queued = (await world.create(background=True)).response
    cancelled = await world.responses.cancel(ALICE, queued["id"])
    assert cancelled["status"] == "cancelled"
    assert (await world.responses.cancel(ALICE, queued["id"]))["status"] == "cancelled"  # again: the same
    await world.run_jobs()
    assert world.router.calls == []
    job = await world.jobs.run_status(f"job_{queued['id']}")
    assert job.status == "cancelled"


async def test_a_cancel_stops_a_running_model_call(world, monkeypatch):
    monkeypatch.setattr("shared.services.jobs.response_step.CANCEL_POLL_S", 0.01)
    started = asyncio.Event()

    async def slow(params):
        world.router.calls.append(dict(params))
        started.set()
        await asyncio.sleep(30)
        raise AssertionError("the call was not stopped")

    world.router.chat = slow  # type: ignore[method-assign]
    queued = (await world.create(background=True)).response
    run = asyncio.create_task(world.run_jobs())
    await started.wait()
    await world.responses.cancel(ALICE, queued["id"])
    await asyncio.wait_for(run, 5)
    assert (await world.responses.get(ALICE, queued["id"]))["status"] == "cancelled"
    (record,) = await world.usage_records()
    assert record["status"] == "cancelled"


async def test_an_ended_background_response_cannot_be_cancelled(world):
    done = (await world.create(background=True)).response
    await world.run_jobs()
    with pytest.raises(InvalidRequestError, match="Cannot cancel a response with status 'completed'"):
        await world.responses.cancel(ALICE, done["id"])


async def test_a_background_response_whose_key_was_revoked_fails_with_the_keys_error(world):
    queued = (await world.create(BOB, background=True)).response
    del world.keys[BOB.key_id]
    await world.run_jobs()
    failed = await world.responses.get(MASTER, queued["id"])
    assert failed["status"] == "failed" and "no longer exists" in failed["error"]["message"]
    assert_matches("Response", failed)


async def test_a_background_response_cannot_be_continued_until_it_ends(world):
    queued = (await world.create(background=True)).response
    with pytest.raises(InvalidRequestError, match="still queued"):
        await world.create(previous_response_id=queued["id"], input="next")
    await world.run_jobs()
    assert (await world.create(previous_response_id=queued["id"], input="next")).response[
        "status"
    ] == "completed"
