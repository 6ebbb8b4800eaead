"""ChatService with a scripted router: catalog checks, stream priming, spans."""

import pytest

from shared.config import ModelConfig
from shared.errors import ModelNotFoundError, UpstreamError, UpstreamRateLimitError
from shared.models.chat import ChatCompletionCreate
from shared.services.chat import ChatService
from shared.services.model_catalog import ModelCatalog
from tests.factories import chat_body, message
from tests.fakes import FakeLLMRouter

CONFIG = ModelConfig.model_validate(
    {"model_list": [{"model_name": "cirrus-local", "litellm_params": {"model": "openai/gpt-4o-mini"}}]}
)


@pytest.fixture
def router():
    return FakeLLMRouter()


@pytest.fixture
def chat(router):
    return ChatService(router, ModelCatalog(CONFIG, created=0))


def request(**params):
    return ChatCompletionCreate.model_validate(chat_body(message("What is 2+2?"), **params))


async def test_create_passes_client_params_and_records_a_genai_span(chat, router, spans):
    result = await chat.create(request(temperature=0.1, user="u1"))
    assert result.completion.choices[0].message.content == "Hello from the fake router."
    assert router.calls == [
        {"model": "cirrus-local", "messages": [message("What is 2+2?")], "temperature": 0.1, "user": "u1"}
    ]
    (span,) = spans.get_finished_spans()
    assert span.name == "chat cirrus-local"
    assert span.attributes["gen_ai.operation.name"] == "chat"
    assert span.attributes["gen_ai.request.model"] == "cirrus-local"
    assert span.attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert span.attributes["gen_ai.usage.input_tokens"] == 5
    assert span.attributes["gen_ai.usage.output_tokens"] == 5
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)


async def test_prompt_text_is_never_on_the_span(chat, spans):
    await chat.create(request())
    (span,) = spans.get_finished_spans()
    assert "2+2" not in str(dict(span.attributes))


async def test_unknown_model_fails_before_any_provider_call(chat, router):
    with pytest.raises(ModelNotFoundError):
        await chat.create(ChatCompletionCreate.model_validate(chat_body(model="gpt-9")))
    assert router.calls == []


async def test_stream_yields_every_chunk_and_ends_the_span_after_the_last(chat, router, spans):
    router.enqueue("one two three")
    stream = await chat.open_stream(request(stream=True))
    assert spans.get_finished_spans() == ()  # still open while the client reads
    text = "".join([c.choices[0].delta.content or "" async for c in stream.chunks if c.choices])
    assert text == "one two three"
    (span,) = spans.get_finished_spans()
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert "cirrus.time_to_first_token_s" in span.attributes
    assert router.streams[0].closed


async def test_failure_before_the_first_chunk_raises_from_open_stream(chat, router, spans):
    router.enqueue(UpstreamRateLimitError("slow down", retry_after=3))
    with pytest.raises(UpstreamRateLimitError):
        await chat.open_stream(request(stream=True))
    (span,) = spans.get_finished_spans()
    assert span.status.is_ok is False
    assert span.attributes["error.type"] == "rate_limit_exceeded"


async def test_failure_mid_stream_surfaces_to_the_reader_and_closes_upstream(chat, router, spans):
    async def failing(params):
        return await FakeLLMRouter.chat_stream(router, params, fail_after=2)

    router.chat_stream = failing
    stream = await chat.open_stream(request(stream=True))
    seen = []
    with pytest.raises(UpstreamError):
        async for chunk in stream.chunks:
            seen.append(chunk)
    assert len(seen) == 2
    assert router.streams[0].closed
    (span,) = spans.get_finished_spans()
    assert span.attributes["error.type"] == "upstream_error"
