"""ChatService with a scripted router and in-memory stores: checks, streams, spans, usage, sessions, cache."""

import asyncio

import pytest

from shared.clients.protocols import ModelLimits
from shared.config import ModelConfig
from shared.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
    UpstreamError,
    UpstreamRateLimitError,
)
from shared.models.requests import ChatCompletionCreate
from shared.models.sessions import SessionCreate
from shared.services.auth import Principal
from shared.services.background import Background
from shared.services.cache import CacheStatus, ResponseCache
from shared.services.calls import CallContext, Metering
from shared.services.chat import ChatService
from shared.services.limits import KeyLimiter
from shared.services.model_catalog import ModelCatalog
from shared.services.sessions import SessionService
from shared.services.usage import UsageService
from tests.factories import chat_body, message
from tests.fakes import FakeLLMRouter, InMemoryBlobStore, InMemoryDocumentStore, InMemoryQueueStore

CONFIG = ModelConfig.model_validate(
    {
        "model_list": [
            {"model_name": "cirrus-local", "litellm_params": {"model": "openai/gpt-4o-mini"}},
            {"model_name": "small", "litellm_params": {"model": "openai/gpt-4o-mini"}},
            {
                "model_name": "cached",
                "litellm_params": {"model": "openai/gpt-4o-mini"},
                "model_info": {"cache_ttl_seconds": 600},
            },
        ]
    }
)
ALICE = Principal(key_id="key-alice", is_master=False)


class World:
    def __init__(self, documents: InMemoryDocumentStore | None = None) -> None:
        self.router = FakeLLMRouter(limits={"small": ModelLimits(max_input_tokens=20, max_output_tokens=100)})
        self.documents = documents or InMemoryDocumentStore()
        self.blobs = InMemoryBlobStore()
        self.queues = InMemoryQueueStore()
        self.background = Background()
        self.usage = UsageService(
            self.documents, self.queues, "cirrus-usage", self.background, flush_interval=0
        )
        self.sessions = SessionService(self.documents, self.blobs, "outputs")
        self.limiter = KeyLimiter(self.documents)
        self.metering = Metering(self.router, self.usage, self.background, self.limiter)
        self.chat = ChatService(
            self.metering,
            ModelCatalog(CONFIG, created=0),
            self.sessions,
            ResponseCache(self.documents),
            max_messages=10,
        )

    async def usage_records(self):
        await self.background.drain()
        return [record for item in self.documents.items["usage"].values() for record in item["records"]]


@pytest.fixture
def world():
    return World()


def request(*messages, **params):
    return ChatCompletionCreate.model_validate(chat_body(*(messages or [message("What is 2+2?")]), **params))


def call(**options):
    return CallContext(request_id="req_1", principal=ALICE, **options)


async def collect(stream):
    return [chunk async for chunk in stream.chunks]


def text_of(chunks):
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def test_create_passes_client_params_and_records_span_and_usage(world, spans):
    outcome = await world.chat.create(request(temperature=0.1, user="u1"), call())
    assert outcome.completion["choices"][0]["message"]["content"] == "Hello from the fake router."
    assert world.router.calls == [
        {"model": "cirrus-local", "messages": [message("What is 2+2?")], "temperature": 0.1, "user": "u1"}
    ]
    (record,) = await world.usage_records()
    assert record["key_id"] == "key-alice" and record["pk"] == "key-alice"
    assert (record["input_tokens"], record["output_tokens"], record["total_tokens"]) == (5, 5, 10)
    assert record["cost_usd"] == pytest.approx(5e-6 + 10e-6)
    assert record["status"] == "ok" and record["stream"] is False and record["endpoint"] == "chat.completions"
    assert record["deployment"] == "fake-1" and record["request_id"] == "req_1"
    (span,) = spans.get_finished_spans()
    assert span.name == "chat cirrus-local"
    assert span.attributes["gen_ai.operation.name"] == "chat"
    assert span.attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert span.attributes["gen_ai.usage.input_tokens"] == 5
    assert span.attributes["gen_ai.usage.output_tokens"] == 5
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert "2+2" not in str(dict(span.attributes))  # never the prompt


async def test_another_surface_is_metered_under_its_own_endpoint_and_a_stream_reports_its_usage(world, spans):
    stream = await world.chat.open_stream(request(stream=True), call(endpoint="responses"))
    assert stream.usage() is None  # not before the stream has ended
    await collect(stream)
    assert stream.usage()["completion_tokens"] == 5  # settled by the router without a usage chunk
    (record,) = await world.usage_records()
    assert record["endpoint"] == "responses" and record["stream"] is True
    (span,) = spans.get_finished_spans()
    assert span.attributes["gen_ai.operation.name"] == "chat"


async def test_unknown_model_fails_before_any_provider_call(world):
    with pytest.raises(ModelNotFoundError):
        await world.chat.create(request(model="gpt-9"), call())
    assert world.router.calls == []
    assert await world.usage_records() == []


async def test_message_count_and_output_caps(world):
    with pytest.raises(InvalidRequestError) as info:
        await world.chat.create(request(*[message(str(i)) for i in range(11)]), call())
    assert info.value.param == "messages"
    with pytest.raises(InvalidRequestError) as info:
        await world.chat.create(request(model="small", max_tokens=101), call())
    assert info.value.param == "max_tokens" and "at most 100" in info.value.message
    with pytest.raises(InvalidRequestError) as info:
        await world.chat.create(request(model="small", max_completion_tokens=500), call())
    assert info.value.param == "max_completion_tokens"
    await world.chat.create(request(model="small", max_tokens=100), call())
    assert len(world.router.calls) == 1


async def test_stream_yields_every_chunk_and_ends_the_span_after_the_last(world, spans):
    world.router.enqueue("one two three")
    stream = await world.chat.open_stream(request(stream=True), call())
    assert spans.get_finished_spans() == ()  # still open while the client reads
    assert text_of(await collect(stream)) == "one two three"
    (span,) = spans.get_finished_spans()
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert "cirrus.time_to_first_token_s" in span.attributes
    assert world.router.streams[0].closed
    (record,) = await world.usage_records()
    assert record["stream"] is True and record["ttft_ms"] is not None and record["status"] == "ok"


async def test_failure_before_the_first_chunk_raises_and_is_recorded(world, spans):
    world.router.enqueue(UpstreamRateLimitError("slow down", retry_after=3))
    with pytest.raises(UpstreamRateLimitError):
        await world.chat.open_stream(request(stream=True), call())
    (span,) = spans.get_finished_spans()
    assert span.attributes["error.type"] == "rate_limit_exceeded"
    (record,) = await world.usage_records()
    assert (record["status"], record["http_status"], record["total_tokens"]) == (
        "rate_limit_exceeded",
        429,
        0,
    )


async def test_failure_mid_stream_surfaces_to_the_reader_and_closes_upstream(world):
    async def failing(params):
        return await FakeLLMRouter.chat_stream(world.router, params, fail_after=2)

    world.router.chat_stream = failing
    stream = await world.chat.open_stream(request(stream=True), call())
    seen = []
    with pytest.raises(UpstreamError):
        async for chunk in stream.chunks:
            seen.append(chunk)
    assert len(seen) == 2
    assert world.router.streams[0].closed
    (record,) = await world.usage_records()
    assert record["status"] == "upstream_error" and record["http_status"] == 502


async def test_client_going_away_mid_stream_is_recorded_as_cancelled(world):
    world.router.enqueue("a b c d e f")
    stream = await world.chat.open_stream(request(stream=True), call())
    await anext(stream.chunks)
    await stream.chunks.aclose()
    assert world.router.streams[0].closed
    (record,) = await world.usage_records()
    assert (record["status"], record["http_status"]) == ("cancelled", 499)


# --- sessions -------------------------------------------------------------------------------


async def test_a_session_carries_history_across_turns(world):
    session = await world.sessions.create(
        ALICE, SessionCreate(messages=[{"role": "system", "content": "Be brief."}])
    )
    world.router.enqueue("Four.", "Eight.")
    await world.chat.create(request(message("What is 2+2?")), call(session_id=session.id))
    await world.background.drain()
    body = request(message("And doubled?"), metadata={"session_id": session.id, "team": "x"})
    outcome = await world.chat.create(body, call())
    assert outcome.session_id == session.id
    second = world.router.calls[1]
    assert second["messages"] == [
        {"role": "system", "content": "Be brief."},
        message("What is 2+2?"),
        {"role": "assistant", "content": "Four."},
        message("And doubled?"),
    ]
    assert second["metadata"] == {"team": "x"}  # session_id is Cirrus's, not the provider's
    await world.background.drain()
    stored = await world.sessions.get(ALICE, session.id)
    assert [m["content"] for m in stored.messages] == [
        "Be brief.",
        "What is 2+2?",
        "Four.",
        "And doubled?",
        "Eight.",
    ]
    records = await world.usage_records()
    assert {r["session_id"] for r in records} == {session.id}


async def test_a_streamed_turn_is_appended_once_complete(world):
    session = await world.sessions.create(ALICE, SessionCreate())
    world.router.enqueue("streamed answer")
    stream = await world.chat.open_stream(request(message("hi"), stream=True), call(session_id=session.id))
    await collect(stream)
    await world.background.drain()
    stored = await world.sessions.get(ALICE, session.id)
    assert stored.messages == [message("hi"), {"role": "assistant", "content": "streamed answer"}]


class HeldWrites(InMemoryDocumentStore):
    """Session writes wait until `release` is set: a slow store, made deterministic."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def replace(self, container, doc, *, etag=None):
        if container == "sessions":
            self.waiting.set()
            await self.release.wait()
        return await super().replace(container, doc, etag=etag)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_chat_answer_is_returned_only_once_its_session_turn_is_stored(stream):
    documents = HeldWrites()
    world = World(documents)
    session = await world.sessions.create(ALICE, SessionCreate())
    world.router.enqueue("Four.")

    async def ask():
        if not stream:
            return await world.chat.create(request(message("2+2?")), call(session_id=session.id))
        return await collect(
            await world.chat.open_stream(request(message("2+2?"), stream=True), call(session_id=session.id))
        )

    answering = asyncio.create_task(ask())
    await asyncio.wait_for(documents.waiting.wait(), 5)
    await asyncio.sleep(0.05)
    assert not answering.done()  # the response waits for the write (the stream, for its end)
    documents.release.set()
    await asyncio.wait_for(answering, 5)
    stored = await world.sessions.get(ALICE, session.id)  # no drain: read right after the answer
    assert stored.messages == [message("2+2?"), {"role": "assistant", "content": "Four."}]


async def test_a_failed_stream_appends_nothing(world):
    session = await world.sessions.create(ALICE, SessionCreate())

    async def failing(params):
        return await FakeLLMRouter.chat_stream(world.router, params, fail_after=1)

    world.router.chat_stream = failing
    stream = await world.chat.open_stream(request(stream=True), call(session_id=session.id))
    with pytest.raises(UpstreamError):
        await collect(stream)
    await world.background.drain()
    assert (await world.sessions.get(ALICE, session.id)).messages == []


async def test_unknown_or_foreign_session_is_a_404(world):
    with pytest.raises(NotFoundError):
        await world.chat.create(request(), call(session_id="sess_nope"))
    theirs = await world.sessions.create(Principal("key-bob", False), SessionCreate())
    with pytest.raises(NotFoundError):
        await world.chat.create(request(), call(session_id=theirs.id))
    assert world.router.calls == []


async def test_history_is_trimmed_to_the_context_window_oldest_first(world):
    old_turns = [
        {"role": "system", "content": "sys"},
        message("one one one one one"),
        {"role": "assistant", "content": "two two two two two"},
        message("three three three"),
        {"role": "assistant", "content": "four four four"},
    ]
    session = await world.sessions.create(ALICE, SessionCreate(messages=old_turns))
    # "small" takes 20 input tokens; 5 are reserved for the answer (max_tokens=5).
    await world.chat.create(
        request(message("five five"), model="small", max_tokens=5), call(session_id=session.id)
    )
    sent = world.router.calls[0]["messages"]
    assert [m["content"] for m in sent] == ["sys", "three three three", "four four four", "five five"]


# --- cache -----------------------------------------------------------------------------------


async def test_cache_miss_then_hit_costs_nothing(world):
    first = await world.chat.create(request(model="cached"), call())
    await world.background.drain()
    second = await world.chat.create(request(model="cached"), call())
    assert (first.cache, second.cache) == (CacheStatus.MISS, CacheStatus.HIT)
    assert second.completion["choices"] == first.completion["choices"]
    assert len(world.router.calls) == 1
    records = sorted(await world.usage_records(), key=lambda r: r["cache_hit"])
    assert [r["cache_hit"] for r in records] == [False, True]
    assert records[1]["cost_usd"] == 0.0


async def test_cache_key_ignores_user_but_not_temperature(world):
    await world.chat.create(request(model="cached", user="a"), call())
    await world.background.drain()
    assert (await world.chat.create(request(model="cached", user="b"), call())).cache is CacheStatus.HIT
    assert (
        await world.chat.create(request(model="cached", temperature=0.5), call())
    ).cache is CacheStatus.MISS


async def test_no_cache_bypasses_the_lookup_and_no_store_skips_the_write(world):
    await world.chat.create(request(model="cached"), call())
    await world.background.drain()
    bypass = await world.chat.create(request(model="cached"), call(cache_control="no-cache"))
    assert bypass.cache is CacheStatus.BYPASS and len(world.router.calls) == 2
    await world.chat.create(request(message("new"), model="cached"), call(cache_control="no-store"))
    await world.background.drain()
    assert (
        await world.chat.create(request(message("new"), model="cached"), call())
    ).cache is CacheStatus.MISS


async def test_models_without_a_ttl_are_not_cached(world):
    await world.chat.create(request(), call())
    await world.background.drain()
    assert (await world.chat.create(request(), call())).cache is CacheStatus.OFF
    assert "cache" not in world.documents.items or not world.documents.items["cache"]


async def test_a_cache_hit_replays_as_a_stream(world):
    world.router.enqueue("cached words here")
    await world.chat.create(request(model="cached"), call())
    await world.background.drain()
    stream = await world.chat.open_stream(
        request(model="cached", stream=True, stream_options={"include_usage": True}), call()
    )
    chunks = await collect(stream)
    assert stream.cache is CacheStatus.HIT
    assert text_of(chunks) == "cached words here"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert len(world.router.calls) == 1


async def test_prompts_and_answers_reach_spans_only_when_opted_in(world, spans):
    body = request({"role": "user", "content": "private words"})
    await world.chat.create(body, CallContext(request_id="r1", principal=ALICE))
    assert "private words" not in str([s.attributes for s in spans.get_finished_spans()])
    world.metering.trace_content = True
    spans.clear()
    await world.chat.create(body, CallContext(request_id="r2", principal=ALICE))
    (span,) = [s for s in spans.get_finished_spans() if s.name.startswith("chat ")]
    assert "private words" in span.attributes["gen_ai.input.messages"]
    assert "Hello from the fake router" in span.attributes["gen_ai.output.messages"]
