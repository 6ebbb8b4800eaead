"""ResponsesService for a model with a deployment that serves `/responses` itself, on in-memory
stores and a scripted router: what goes upstream (Cirrus's state kept out of it), what the client
sees and what Cirrus stores, whichever wire answered, and failures in a stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from shared.clients.protocols import ResponseResult, ServedBy
from shared.config import ModelConfig
from shared.errors import UpstreamError
from shared.models.responses import ResponseCreate
from shared.models.validation import validate_body
from shared.services.auth import Principal
from shared.services.background import Background
from shared.services.cache import ResponseCache
from shared.services.calls import CallContext, Metering
from shared.services.chat import ChatService
from shared.services.limits import KeyLimiter
from shared.services.model_catalog import ModelCatalog
from shared.services.responses import ResponsesService
from shared.services.sessions import SessionService
from shared.services.usage import UsageService
from tests import factories
from tests.fakes import FakeLLMRouter, InMemoryBlobStore, InMemoryDocumentStore, InMemoryQueueStore
from tests.openapi import assert_matches
from tools.fake_provider import Behaviour, responses_api

CONFIG = ModelConfig.model_validate(
    {"model_list": [{"model_name": "native", "litellm_params": {"model": "openai/gpt-4o-mini"}}]}
)
ALICE = Principal("key_alice", False)
SERVED = ServedBy(model="native", deployment="native-1", provider="openai", upstream_model="gpt-4o-mini")


def provider_response(text: str) -> dict[str, Any]:
    """A Response as a provider sends it (the fake provider's, which matches OpenAI's spec)."""
    request = responses_api.ResponsesRequest(model="native", input="Hi", store=False)
    response = responses_api.answer(request, Behaviour(reply=text), 1)
    response["id"], response["output"][0]["id"] = "resp_provider", "msg_provider"
    return response


class ScriptedStream:
    """What the router's responses_stream returns: events (or an exception part-way)."""

    def __init__(self, wire: str, items: list[Any]) -> None:
        self.wire = wire
        self.served_by = SERVED
        self.usage: dict[str, Any] | None = None
        self.usage_estimated = False
        self.finish_reasons: list[str] = []
        self.closed = False
        self._items = items

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        for item in self._items:
            if isinstance(item, BaseException):
                raise item
            yield item
        self.usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}

    async def aclose(self) -> None:
        self.closed = True


class NativeRouter(FakeLLMRouter):
    """Serves `native` natively; `answers` are ("responses", Response) or ("chat", text) pairs."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict[str, Any]] = []
        self.answers: list[tuple[str, Any]] = []
        self.streams: list[ScriptedStream] = []  # type: ignore[assignment]

    def serves_responses(self, model: str) -> bool:
        return model == "native"

    async def responses(self, body: Mapping[str, Any], translate: Any) -> ResponseResult:
        self.bodies.append(dict(body))
        wire, answer = self.answers.pop(0) if self.answers else ("responses", provider_response("Hi there."))
        if wire == "chat":
            self.calls.append(dict(translate()))
            completion = factories.completion_dict(answer, model="native")
            return ResponseResult(completion, SERVED, "chat", completion["usage"], ["stop"])
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        return ResponseResult(answer, SERVED, "responses", usage, [answer["status"]])

    async def responses_stream(self, body: Mapping[str, Any], translate: Any) -> ScriptedStream:
        self.bodies.append(dict(body))
        stream = self.streams.pop(0)
        if stream.wire == "chat":
            self.calls.append(dict(translate()))
        return stream


def native_events(text: str = "Hi there.", *, fail: bool = False) -> list[Any]:
    events: list[Any] = list(responses_api.stream_events(provider_response(text), 1))
    if fail:  # cut after the message item was added
        return [
            *events[:3],
            UpstreamError("The model provider ended the stream before the answer was complete."),
        ]
    return events


class World:
    def __init__(self) -> None:
        self.router = NativeRouter()
        self.documents = InMemoryDocumentStore()
        self.blobs = InMemoryBlobStore()
        self.background = Background()
        self.usage = UsageService(
            self.documents, InMemoryQueueStore(), "usage", self.background, flush_interval=0
        )
        self.metering = Metering(self.router, self.usage, self.background, KeyLimiter(self.documents))
        self.catalog = ModelCatalog(CONFIG, created=0)
        self.responses = ResponsesService(
            self.documents,
            self.blobs,
            self.catalog,
            self.router,
            chat=self.chat,
            metering=self.meter,
            jobs=lambda: None,  # type: ignore[arg-type,return-value]  # no background runs here
            blob_container="outputs",
            max_cost_usd=1.0,
        )

    async def chat(self) -> ChatService:
        sessions = SessionService(self.documents, self.blobs, "outputs")
        return ChatService(
            self.metering, self.catalog, sessions, ResponseCache(self.documents), max_messages=50
        )

    async def meter(self) -> Metering:
        return self.metering

    async def create(self, **body: Any) -> Any:
        request = validate_body(ResponseCreate, {"model": "native", "input": "Hi", **body})
        return await self.responses.create(request, CallContext(request_id="req_1", principal=ALICE))

    async def usage_records(self) -> list[dict[str, Any]]:
        await self.background.drain()
        return [record for item in self.documents.items["usage"].values() for record in item["records"]]


@pytest.fixture
def world() -> World:
    return World()


async def test_a_passed_through_response_carries_cirrus_ids_and_is_stored(world):
    created = await world.create(metadata={"ticket": "7"}, instructions="Be brief.")
    response = created.response
    assert_matches("Response", response)
    assert response["id"] != "resp_provider" and response["id"].startswith("resp_")
    assert response["store"] is True and response["metadata"] == {"ticket": "7"}
    assert response["output"][0]["id"] == "msg_provider"  # items are the provider's
    (sent,) = world.router.bodies
    assert sent == {
        "model": "native",
        "input": "Hi",
        "instructions": "Be brief.",
        "store": False,
        "truncation": "auto",
    }
    stored = await world.responses.get(ALICE, response["id"])
    assert_matches("Response", stored)
    assert stored["output"] == response["output"] and stored["usage"] == response["usage"]
    (record,) = await world.usage_records()
    assert record["endpoint"] == "responses" and record["tags"] == {"response_id": response["id"]}
    assert (record["input_tokens"], record["output_tokens"]) == (3, 2) and record["cost_usd"] > 0


async def test_a_conversation_is_expanded_from_cirrus_store(world):
    first = (await world.create(input="One")).response
    second = (await world.create(input="Two", previous_response_id=first["id"])).response
    assert second["previous_response_id"] == first["id"]
    sent = world.router.bodies[-1]
    assert "previous_response_id" not in sent and sent["store"] is False
    assert [item.get("role") for item in sent["input"]] == ["user", "assistant", "user"]
    assert not any("id" in item for item in sent["input"])
    page = await world.responses.input_items(ALICE, second["id"], limit=10, after=None, order="asc")
    assert [item["role"] for item in page["data"]] == ["user", "assistant", "user"]


async def test_a_chat_deployment_of_the_same_model_is_translated_back(world):
    world.router.answers.append(("chat", "From chat."))
    response = (await world.create(input="One")).response
    assert_matches("Response", response)
    assert response["output"][0]["content"][0]["text"] == "From chat."
    assert world.router.calls[-1]["messages"] == [{"role": "user", "content": "One"}]
    assert (await world.responses.get(ALICE, response["id"]))["output"] == response["output"]


async def test_store_false_is_not_kept(world):
    response = (await world.create(store=False)).response
    assert response["store"] is False
    assert not world.documents.items.get("responses")


async def test_a_native_stream_is_presented_and_stored_before_its_last_event(world):
    world.router.streams.append(ScriptedStream("responses", native_events()))
    created = await world.create(stream=True)
    events = [event async for event in created.events]
    for event in events:
        assert_matches("ResponseStreamEvent", event)
    ids = {event["response"]["id"] for event in events if "response" in event}
    (response_id,) = ids
    assert response_id != "resp_provider"
    stored = await world.responses.get(ALICE, response_id)
    assert stored["status"] == "completed" and stored["output"] == events[-1]["response"]["output"]
    (record,) = await world.usage_records()
    assert record["endpoint"] == "responses" and record["stream"] is True and record["total_tokens"] == 5


async def test_a_native_stream_that_fails_ends_in_band_and_is_stored_failed(world):
    stream = ScriptedStream("responses", native_events(fail=True))
    world.router.streams.append(stream)
    events = [event async for event in (await world.create(stream=True)).events]
    for event in events:
        assert_matches("ResponseStreamEvent", event)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    failed = events[-1]["response"]
    assert failed["output"][0]["status"] == "incomplete"
    assert (await world.responses.get(ALICE, failed["id"]))["status"] == "failed"
    assert stream.closed
    (record,) = await world.usage_records()
    assert record["status"] != "ok"


async def test_a_stream_that_cannot_be_stored_says_so_in_band(world):
    world.router.streams.append(ScriptedStream("responses", native_events()))

    async def refuse(*_: Any, **__: Any) -> None:
        raise UpstreamError("storage down")

    world.documents.create = refuse  # type: ignore[method-assign]
    events = [event async for event in (await world.create(stream=True)).events]
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-2]["code"] == "service_unavailable"


async def test_a_chat_stream_of_the_same_model_is_translated_to_events(world):
    chunks = factories.chunk_dicts("From chat.", model="native", include_usage=True)
    world.router.streams.append(ScriptedStream("chat", chunks))
    events = [event async for event in (await world.create(stream=True)).events]
    for event in events:
        assert_matches("ResponseStreamEvent", event)
    final = events[-1]
    assert final["type"] == "response.completed"
    assert final["response"]["output"][0]["content"][0]["text"] == "From chat."
    assert (await world.responses.get(ALICE, final["response"]["id"]))["status"] == "completed"
