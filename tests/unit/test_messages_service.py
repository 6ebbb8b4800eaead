"""MessagesService with a scripted router: Messages go through the chat service (checks, key
limits, usage under `messages`, spans) and come back in Anthropic's shapes."""

import anthropic.types
import pytest

from shared.clients.protocols import ModelLimits
from shared.config import ModelConfig
from shared.errors import ModelNotFoundError, PermissionDeniedError, UpstreamError
from shared.models.messages import CountTokensCreate, MessageCreate
from shared.models.validation import validate_body
from shared.services.auth import Principal
from shared.services.background import Background
from shared.services.cache import ResponseCache
from shared.services.calls import CallContext, Metering
from shared.services.chat import ChatService
from shared.services.limits import KeyLimiter
from shared.services.messages import MessagesService
from shared.services.model_catalog import ModelCatalog
from shared.services.sessions import SessionService
from shared.services.usage import UsageService
from tests.factories import message, message_body
from tests.fakes import FakeLLMRouter, InMemoryBlobStore, InMemoryDocumentStore, InMemoryQueueStore

CONFIG = ModelConfig.model_validate(
    {"model_list": [{"model_name": "cirrus-local", "litellm_params": {"model": "openai/gpt-4o-mini"}}]}
)
ALICE = Principal(key_id="key-alice", is_master=False)


class World:
    def __init__(self, limits=None) -> None:
        self.router = FakeLLMRouter(limits)
        self.documents = InMemoryDocumentStore()
        self.background = Background()
        usage = UsageService(
            self.documents, InMemoryQueueStore(), "cirrus-usage", self.background, flush_interval=0
        )
        metering = Metering(self.router, usage, self.background, KeyLimiter(self.documents))
        catalog = ModelCatalog(CONFIG, created=0)
        sessions = SessionService(self.documents, InMemoryBlobStore(), "outputs")
        chat = ChatService(metering, catalog, sessions, ResponseCache(self.documents), max_messages=10)
        self.messages = MessagesService(chat, metering, catalog, max_messages=10)

    async def usage_records(self):
        await self.background.drain()
        return [record for item in self.documents.items["usage"].values() for record in item["records"]]


@pytest.fixture
def world():
    return World()


def request(*messages, **params):
    return validate_body(MessageCreate, message_body(*messages, **params))


def call(principal=ALICE):
    return CallContext(request_id="req_1", principal=principal)


async def test_a_message_is_a_metered_chat_completion(world, spans):
    outcome = await world.messages.create(request(message("What is 2+2?"), system="Be brief."), call())
    anthropic.types.Message.model_validate(outcome.message)
    assert outcome.message["content"] == [{"type": "text", "text": "Hello from the fake router."}]
    assert outcome.message["model"] == "cirrus-local" and outcome.served_by.deployment == "fake-1"
    assert world.router.calls == [
        {
            "model": "cirrus-local",
            "messages": [{"role": "system", "content": "Be brief."}, message("What is 2+2?")],
            "max_tokens": 256,
        }
    ]
    (record,) = await world.usage_records()
    assert record["endpoint"] == "messages" and record["status"] == "ok" and record["cost_usd"] > 0
    (span,) = spans.get_finished_spans()
    assert span.name == "chat cirrus-local" and span.attributes["gen_ai.operation.name"] == "chat"


async def test_a_stream_is_anthropics_events_and_metered(world):
    world.router.enqueue("one two three")
    stream = await world.messages.open_stream(request(stream=True), call())
    events = [event async for event in stream.events]
    assert [e["type"] for e in events] == [
        "message_start",
        "ping",
        "content_block_start",
        *["content_block_delta"] * 3,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert (
        "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta") == "one two three"
    )
    assert world.router.calls[0]["stream_options"] == {"include_usage": True}
    (record,) = await world.usage_records()
    assert record["endpoint"] == "messages" and record["stream"] is True


async def test_checks_come_first_with_their_own_errors(world):
    with pytest.raises(ModelNotFoundError):
        await world.messages.create(request(model="claude-9"), call())
    restricted = Principal(key_id="key-bob", is_master=False, models=frozenset({"other"}))
    with pytest.raises(PermissionDeniedError):
        await world.messages.create(request(), call(restricted))
    with pytest.raises(PermissionDeniedError):
        world.messages.count_tokens(
            validate_body(CountTokensCreate, {"model": "cirrus-local", "messages": [message()]}),
            call(restricted),
        )
    assert world.router.calls == []


async def test_a_provider_failure_is_raised_for_the_transport_to_render(world):
    world.router.enqueue(UpstreamError("The model provider returned an error."))
    with pytest.raises(UpstreamError):
        await world.messages.create(request(), call())


def test_count_tokens_counts_the_prompt_and_the_tools(world):
    body = {"model": "cirrus-local", "system": "be brief", "messages": [message("one two three")]}
    plain = world.messages.count_tokens(validate_body(CountTokensCreate, body), call())
    tool = {"name": "lookup", "description": "find a word", "input_schema": {"type": "object"}}
    with_tools = world.messages.count_tokens(
        validate_body(CountTokensCreate, {**body, "tools": [tool]}), call()
    )
    assert plain == {"input_tokens": 5}  # the fake router counts words
    assert with_tools["input_tokens"] > plain["input_tokens"]


async def test_max_tokens_over_the_models_limit_is_lowered_and_thinking_reaches_a_reasoning_model():
    # Claude Code asks for 32000 output tokens whatever the model; a smaller model is not refused.
    world = World({"cirrus-local": ModelLimits(None, 100, reasoning=True)})
    body = request(max_tokens=32000, thinking={"type": "enabled", "budget_tokens": 2048})
    await world.messages.create(body, call())
    (sent,) = world.router.calls
    # o-series and gpt-5 refuse `max_tokens`: a reasoning model is given max_completion_tokens
    assert sent["max_completion_tokens"] == 100 and sent["reasoning_effort"] == "low"
    assert "max_tokens" not in sent
