"""End to end: the official openai SDK against the local host, through LiteLLM, to the fake provider."""

import httpx
import openai
import pytest

from tests.e2e.helpers import provider_requests
from tests.openapi import assert_matches

MODEL = "cirrus-local"


def raw_stream(stack):
    """A streamed chat read as raw SSE lines, as a non-SDK client sees it."""
    with httpx.stream(
        "POST",
        f"{stack.base_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {stack.master_key}"},
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        return response, [line for line in response.iter_lines() if line]


def test_non_streaming_chat(stack, provider):
    completion = stack.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}], temperature=0.2, user="e2e-user"
    )
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens > 0
    assert_matches("CreateChatCompletionResponse", completion.model_dump(mode="json", exclude_unset=True))
    (sent,) = provider_requests(provider)
    assert sent["body"]["temperature"] == 0.2 and sent["body"]["user"] == "e2e-user"


def test_streaming_chat_arrives_incrementally(stack, provider):
    # 12 words, one per chunk, 250 ms apart: about three seconds of upstream streaming.
    provider.post(
        "/_control/enqueue",
        json={
            "behaviour": {
                "chunk_delay_ms": 250,
                "tokens_per_chunk": 1,
                "reply": "one two three four five six seven eight nine ten eleven twelve",
            }
        },
    ).raise_for_status()
    stream = stack.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = iter(stream)
    first_text = None
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            first_text = chunk.choices[0].delta.content
            break
    # The first words are here while the provider is still sending the rest: nothing was buffered.
    (upstream,) = provider_requests(provider)
    assert upstream["streaming"] is True
    assert first_text == "one"
    rest = list(chunks)
    text = first_text + "".join(c.choices[0].delta.content or "" for c in rest if c.choices)
    assert text.split() == [
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
    ]
    assert rest[-1].choices == [] and rest[-1].usage.completion_tokens == 12
    for chunk in rest:
        assert_matches(
            "CreateChatCompletionStreamResponse", chunk.model_dump(mode="json", exclude_unset=True)
        )


def test_raw_stream_ends_with_done(stack, provider):
    response, events = raw_stream(stack)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in events)


def test_unknown_model_is_a_404_envelope(stack):
    with pytest.raises(openai.NotFoundError) as info:
        stack.client().chat.completions.create(model="gpt-9000", messages=[{"role": "user", "content": "hi"}])
    error = info.value.body
    assert info.value.status_code == 404
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert_matches("ErrorResponse", info.value.response.json())


def test_bad_key_is_a_401(stack):
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 401
    assert info.value.body["code"] == "invalid_api_key"
    assert "sk-wrong" not in info.value.response.text


def test_missing_key_is_a_401(stack):
    response = httpx.post(f"{stack.base_url}/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert response.status_code == 401
    assert "Authorization header" in response.json()["error"]["message"]


def test_provider_429_is_a_429_with_retry_after(stack, provider):
    provider.post(
        "/_control/enqueue", json={"behaviour": {"fault": "429", "retry_after": 7}}
    ).raise_for_status()
    with pytest.raises(openai.RateLimitError) as info:
        stack.client().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body["code"] == "rate_limit_exceeded"


def test_provider_429_on_a_stream_is_a_429_before_any_event(stack, provider):
    provider.post(
        "/_control/enqueue", json={"behaviour": {"fault": "429", "retry_after": 2}}
    ).raise_for_status()
    with pytest.raises(openai.RateLimitError):
        stack.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        )


def test_stream_cut_mid_way_ends_with_an_error_event_not_done(stack, provider):
    provider.post(
        "/_control/enqueue", json={"behaviour": {"fault": "cut", "cut_after": 3, "tokens_per_chunk": 1}}
    ).raise_for_status()
    _, events = raw_stream(stack)
    assert "data: [DONE]" not in events
    assert events[-1].startswith('data: {"error":')
    assert '"code":"upstream_error"' in events[-1]
    # The official SDK surfaces it as an error rather than a short answer.
    provider.post(
        "/_control/enqueue", json={"behaviour": {"fault": "cut", "cut_after": 3}}
    ).raise_for_status()
    with pytest.raises(openai.APIError):
        for _ in stack.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
        ):
            pass


def test_malformed_json_is_a_400_envelope(stack):
    response = httpx.post(
        f"{stack.base_url}/v1/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {stack.master_key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_invalid_field_names_its_param(stack):
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], temperature=5
        )
    assert info.value.body["param"] == "temperature"


def test_tools_on_a_model_without_tool_calling_are_refused_before_the_provider(stack, provider):
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().chat.completions.create(
            model="cirrus-no-tools", messages=[{"role": "user", "content": "Weather?"}], tools=[tool]
        )
    assert info.value.body["param"] == "tools" and info.value.body["code"] == "model_not_supported"
    assert provider_requests(provider) == []


def test_client_cannot_choose_the_provider_url(stack, provider):
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"api_base": "http://169.254.169.254/"},
        )
    assert info.value.body["param"] == "api_base"
    assert provider_requests(provider) == []


def test_request_id_is_echoed_or_made(stack):
    headers = {"Authorization": f"Bearer {stack.master_key}"}
    given = httpx.get(f"{stack.base_url}/v1/models", headers={**headers, "x-request-id": "trace-abc-1"})
    assert given.headers["x-request-id"] == "trace-abc-1"
    made = httpx.get(f"{stack.base_url}/v1/models", headers=headers)
    assert made.headers["x-request-id"].startswith("req_")
