"""End to end: the official anthropic SDK against the local host's Messages API, for a model
translated to chat completions and for an Anthropic deployment served natively, both on the fake
provider."""

import time

import anthropic
import anthropic.types
import httpx
import pydantic
import pytest

from tests.e2e.helpers import anthropic_client, provider_requests, script, sse_events

TRANSLATED = "cirrus-local"  # an OpenAI-wire deployment: Messages become chat completions
NATIVE = "cirrus-claude"  # an Anthropic deployment: Messages pass through to its /v1/messages
MODELS = [TRANSLATED, NATIVE]
# What Claude Code sends as `metadata.user_id`: longer than OpenAI's 64-character `user`.
CLAUDE_CODE_USER = '{"device_id":"' + "d" * 64 + '","account_uuid":"","session_id":"' + "s" * 36 + '"}'
EVENT = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.mark.parametrize("model", MODELS)
def test_create(stack, provider, model):
    raw = anthropic_client(stack).messages.with_raw_response.create(
        model=model,
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello"}],
        metadata={"user_id": CLAUDE_CODE_USER},
    )
    message = raw.parse()
    anthropic.types.Message.model_validate(raw.http_response.json())
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == model
    assert message.content[0].type == "text" and message.content[0].text.startswith(
        "Fake reply to: Say hello"
    )
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.http_response.headers["x-cirrus-model"] == model
    (sent,) = provider_requests(provider)
    if model == NATIVE:
        assert sent["path"] == "/v1/messages"
        assert sent["body"]["system"] == "Be brief." and sent["body"]["model"] == "claude-sonnet-4-5"
        assert sent["body"]["metadata"] == {"user_id": CLAUDE_CODE_USER}
    else:  # the fake refuses a `user` over 64 characters, as OpenAI does
        assert sent["path"] == "/v1/chat/completions"
        assert sent["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
        assert len(sent["body"]["user"]) == 64


@pytest.mark.parametrize("model", MODELS)
def test_stream_helper_builds_the_same_message(stack, provider, model):
    client = anthropic_client(stack)
    request = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Count to three"}]}
    complete = client.messages.create(**request)
    with client.messages.stream(**request) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == complete.content[0].text == final.content[0].text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == complete.usage.output_tokens
    assert final.usage.input_tokens == complete.usage.input_tokens


@pytest.mark.parametrize("model", MODELS)
def test_raw_stream_events_in_anthropics_order(stack, provider, model):
    events = anthropic_client(stack).messages.create(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    kinds = [event.type for event in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-4:] == ["content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    # On the wire: every event is named, a ping comes early (Anthropic sends it after the first
    # block's start, Cirrus's translation right after message_start), there is no [DONE].
    with httpx.stream(
        "POST",
        f"{stack.base_url}/v1/messages",
        headers={"x-api-key": stack.master_key, "anthropic-version": "2023-06-01"},
        json={
            "model": model,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        wire = sse_events(response.read().decode())
    names = [name for name, _ in wire]
    assert names[0] == "message_start" and "ping" in names[1:3]
    assert all(name == data["type"] for name, data in wire)
    for name, data in wire:  # each one as the SDK's own type says (it skips pings unparsed)
        if name != "ping":
            EVENT.validate_python(data, strict=True)


@pytest.mark.parametrize("model", MODELS)
def test_a_tool_use_round_trip(stack, provider, model):
    script(provider, {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]})
    client = anthropic_client(stack)
    question = {"role": "user", "content": "Weather in Oslo?"}
    first = client.messages.create(model=model, max_tokens=128, tools=[WEATHER], messages=[question])
    assert first.stop_reason == "tool_use"
    (call,) = [block for block in first.content if block.type == "tool_use"]
    assert (call.name, call.input) == ("get_weather", {"city": "Oslo"})

    result = {"type": "tool_result", "tool_use_id": call.id, "content": "12 degrees and sunny"}
    second = client.messages.create(
        model=model,
        max_tokens=128,
        tools=[WEATHER],
        messages=[question, first.to_param(), {"role": "user", "content": [result]}],
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"
    sent = provider_requests(provider)[-1]["body"]
    if model == NATIVE:
        assert sent["messages"][-2]["content"][0]["id"] == call.id
        assert sent["messages"][-1] == {"role": "user", "content": [result]}
    else:
        assert sent["messages"][-2]["tool_calls"][0]["id"] == call.id
        assert sent["messages"][-1] == {
            "role": "tool",
            "tool_call_id": call.id,
            "content": "12 degrees and sunny",
        }


@pytest.mark.parametrize("model", MODELS)
def test_a_streamed_tool_call(stack, provider, model):
    script(provider, {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]})
    with anthropic_client(stack).messages.stream(
        model=model, max_tokens=128, tools=[WEATHER], messages=[{"role": "user", "content": "Weather?"}]
    ) as stream:
        final = stream.get_final_message()
    (call,) = final.content
    assert (call.type, call.name, call.input) == ("tool_use", "get_weather", {"city": "Paris"})
    assert final.stop_reason == "tool_use"


@pytest.mark.parametrize("model", MODELS)
def test_count_tokens(stack, model):
    client = anthropic_client(stack)
    short = client.messages.count_tokens(model=model, messages=[{"role": "user", "content": "hi"}])
    longer = client.messages.count_tokens(
        model=model, tools=[WEATHER], messages=[{"role": "user", "content": "hi " * 50}]
    )
    assert 0 < short.input_tokens < longer.input_tokens


def test_bearer_authentication_and_anthropic_headers(stack, provider):
    client = anthropic.Anthropic(
        base_url=stack.base_url,
        auth_token=stack.master_key,
        max_retries=0,
        default_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    message = client.messages.create(
        model=TRANSLATED, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content


def error_of(call):
    with pytest.raises(anthropic.APIStatusError) as info:
        call()
    body = info.value.response.json()
    anthropic.types.ErrorResponse.model_validate(body)
    return info.value.status_code, body


@pytest.mark.parametrize("model", MODELS)
def test_errors_in_anthropics_envelope(stack, provider, model):
    hello = [{"role": "user", "content": "hi"}]
    bad_key = anthropic_client(stack, key="sk-cirrus-wrong")
    status, body = error_of(lambda: bad_key.messages.create(model=model, max_tokens=8, messages=hello))
    assert status == 401 and body["type"] == "error" and body["error"]["type"] == "authentication_error"

    client = anthropic_client(stack)
    status, body = error_of(
        lambda: client.messages.create(
            model=model, max_tokens=8, messages=hello, extra_body={"colour": "red"}
        )
    )
    assert (status, body["error"]["type"]) == (400, "invalid_request_error")
    assert body["error"]["message"] == "colour: Extra inputs are not permitted"

    status, body = error_of(lambda: client.messages.create(model="claude-nope", max_tokens=8, messages=hello))
    assert (status, body["error"]["type"]) == (404, "not_found_error")

    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="claude-nope", messages=hello)
    assert provider_requests(provider) == []

    malformed = httpx.post(
        f"{stack.base_url}/v1/messages",
        headers={"x-api-key": stack.master_key, "content-type": "application/json"},
        content=b"{not json",
        timeout=30,
    )
    assert malformed.status_code == 400 and malformed.json()["error"]["type"] == "invalid_request_error"
    assert "The Anthropic Messages API expects a JSON payload" in malformed.json()["error"]["message"]


def test_tools_on_a_model_without_tool_calling_are_refused_before_the_provider(stack, provider):
    client = anthropic_client(stack)
    hello = [{"role": "user", "content": "Weather in Paris?"}]
    status, body = error_of(
        lambda: client.messages.create(model="cirrus-no-tools", max_tokens=8, messages=hello, tools=[WEATHER])
    )
    assert (status, body["error"]["type"]) == (400, "invalid_request_error")
    assert "does not support tools" in body["error"]["message"]
    assert provider_requests(provider) == []
    assert client.messages.create(model="cirrus-no-tools", max_tokens=8, messages=hello).stop_reason


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/messages"), ("POST", "/v1/messages/batches")])
def test_other_paths_under_messages_are_anthropic_404s(stack, method, path):
    response = httpx.request(method, f"{stack.base_url}{path}", headers={"x-api-key": stack.master_key})
    assert response.status_code == 404
    body = anthropic.types.ErrorResponse.model_validate(response.json())
    assert body.error.type == "not_found_error" and "Unknown request URL" in body.error.message


@pytest.mark.parametrize("model", MODELS)
def test_the_beta_client_query_and_betas_are_accepted(stack, provider, model):
    """`client.beta.messages` (what Claude Code uses) sends `?beta=true` and `anthropic-beta`."""
    client = anthropic_client(stack)
    hello = [{"role": "user", "content": "hi"}]
    message = client.beta.messages.create(
        model=model, max_tokens=16, messages=hello, betas=["context-management-2025-06-27"]
    )
    assert message.content[0].type == "text"
    counted = client.beta.messages.count_tokens(
        model=model, messages=hello, betas=["token-counting-2024-11-01"]
    )
    assert counted.input_tokens > 0
    (sent,) = provider_requests(provider)
    if model == NATIVE:
        headers = {k.lower(): v for k, v in sent["headers"].items()}
        assert headers["anthropic-beta"] == "context-management-2025-06-27"


def test_the_keys_rate_limit_is_a_rate_limit_error(stack, provider):
    client = anthropic_client(stack, key=stack.new_key(rpm_limit=1)["key"])
    hello = [{"role": "user", "content": "hi"}]
    client.messages.create(model=TRANSLATED, max_tokens=8, messages=hello)
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model=TRANSLATED, max_tokens=8, messages=hello)
    assert info.value.response.json()["error"]["type"] == "rate_limit_error"
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert len(provider_requests(provider)) == 1


@pytest.mark.parametrize("model", MODELS)
def test_a_provider_error_is_anthropics_too(stack, provider, model):
    script(provider, {"status": 400, "error_message": "This model's maximum context length is 10 tokens."})
    status, body = error_of(
        lambda: anthropic_client(stack).messages.create(
            model=model, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    )
    assert (status, body["error"]["type"]) == (400, "invalid_request_error")
    assert "maximum context length" in body["error"]["message"]


@pytest.mark.parametrize("model", MODELS)
def test_a_failure_mid_stream_is_an_error_event(stack, provider, model):
    script(provider, {"fault": "cut", "cut_after": 4})
    with httpx.stream(
        "POST",
        f"{stack.base_url}/v1/messages",
        headers={"x-api-key": stack.master_key},
        json={
            "model": model,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
        timeout=30,
    ) as response:
        assert response.status_code == 200
        wire = sse_events(response.read().decode())
    name, data = wire[-1]
    assert name == "error" and data["type"] == "error" and data["error"]["type"] == "api_error"
    assert "message_stop" not in [n for n, _ in wire]
    with pytest.raises(anthropic.APIStatusError):  # the SDK raises on the error event
        script(provider, {"fault": "cut", "cut_after": 4})
        list(
            anthropic_client(stack).messages.create(
                model=model, max_tokens=64, messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )


def test_an_anthropic_deployment_gets_the_clients_betas_and_thinking(stack, provider):
    anthropic_client(stack).messages.create(
        model=NATIVE,
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "think"}],
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"},
    )
    (sent,) = provider_requests(provider)
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert headers["x-api-key"] == "fake"  # the deployment's key, never the client's
    assert sent["body"]["thinking"] == {"type": "enabled", "budget_tokens": 1024}


def test_a_virtual_keys_models_limits_and_usage_apply(stack, provider):
    key = stack.new_key(models=[NATIVE])["key"]
    client = anthropic_client(stack, key=key)
    start = time.time() - 1
    client.messages.create(model=NATIVE, max_tokens=16, messages=[{"role": "user", "content": "count me"}])
    with client.messages.stream(
        model=NATIVE, max_tokens=16, messages=[{"role": "user", "content": "me too"}]
    ) as s:
        s.until_done()
    status, body = error_of(
        lambda: client.messages.create(
            model=TRANSLATED, max_tokens=8, messages=[{"role": "user", "content": "no"}]
        )
    )
    assert (status, body["error"]["type"]) == (403, "permission_error")

    deadline = time.time() + 20
    while True:
        usage = httpx.get(
            f"{stack.base_url}/v1/usage",
            headers={"Authorization": f"Bearer {key}"},
            params={"start": start, "group_by": "model"},
        ).json()
        groups = {g["group"]: g for g in usage["data"]}
        if groups.get(NATIVE, {}).get("requests", 0) >= 2 or time.time() > deadline:
            break
        time.sleep(0.3)
    assert groups[NATIVE]["requests"] == 2 and groups[NATIVE]["total_tokens"] > 0
    assert groups[NATIVE]["cost_usd"] > 0  # priced as claude-sonnet-4-5
