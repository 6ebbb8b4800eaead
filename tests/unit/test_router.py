"""Cirrus's router with a scripted adapter, a fake clock and no real sleeping: retries, Retry-After,
backoff, cooldowns, the three fallback kinds, chains, strategies, streams and attempt spans.

The same behaviours run over real HTTP through both adapters in tests/integration/test_routing.py;
here the timing rules are checked exactly.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict, deque
from typing import Any

import pytest

from shared.clients.llm import ModelRouter
from shared.clients.llm.errors import AttemptFailed, from_response
from shared.clients.llm.operations import Operation
from shared.clients.protocols import UnitUsage, allowed_models
from shared.config import ModelConfig
from shared.errors import InvalidRequestError, UpstreamError, UpstreamRateLimitError
from tests import factories


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def failure(
    status: int, retry_after: str | None = None, message: str = "boom", code: str = ""
) -> AttemptFailed:
    body = json.dumps({"error": {"message": message, "code": code}}).encode()
    return from_response(status, body, {"retry-after": retry_after} if retry_after else {})


class ScriptedAdapter:
    """Answers per deployment id from a script (a body, chunks, or an AttemptFailed); default: ok."""

    def __init__(self) -> None:
        self.script: dict[str, deque[Any]] = defaultdict(deque)
        self.calls: list[str] = []

    def then(self, deployment_id: str, *outcomes: Any) -> None:
        self.script[deployment_id].extend(outcomes)

    def _next(self, deployment_id: str) -> Any:
        self.calls.append(deployment_id)
        queue = self.script[deployment_id]
        outcome = queue.popleft() if queue else "ok"
        if isinstance(outcome, AttemptFailed):
            raise outcome
        return outcome

    async def complete(self, deployment, op, params) -> dict[str, Any]:
        outcome = self._next(deployment.id)
        return factories.completion_dict(f"from {deployment.id}") if outcome == "ok" else outcome

    async def open_stream(self, deployment, op, params):
        outcome = self._next(deployment.id)
        chunks = (
            factories.chunk_dicts(f"from {deployment.id}", model="upstream", include_usage=True)
            if outcome == "ok"
            else outcome
        )

        async def events():
            for chunk in chunks:
                if isinstance(chunk, AttemptFailed):
                    raise chunk
                yield chunk

        return events()

    async def aclose(self) -> None:
        pass


def entry(name: str, id_: str, **params: Any) -> dict[str, Any]:
    info = {"id": id_, **params.pop("info", {})}
    return {
        "model_name": name,
        "litellm_params": {"model": "openai/gpt-4o-mini", **params},
        "model_info": info,
    }


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def adapter():
    return ScriptedAdapter()


@pytest.fixture
def make(clock, adapter):
    def build(deployments: list[dict[str, Any]], **settings: Any) -> ModelRouter:
        config = ModelConfig.model_validate(
            {"model_list": deployments, "router_settings": {"num_retries": 0, **settings}}
        )
        return ModelRouter(config, native=adapter, clock=clock, sleep=clock.sleep, rng=random.Random(7))

    return build


def ask(model: str = "a") -> dict[str, Any]:
    return {"model": model, "messages": [factories.message("hi")]}


# --- retries ----------------------------------------------------------------------------------


async def test_a_retry_waits_the_providers_retry_after(make, adapter, clock):
    router = make([entry("a", "a1")], num_retries=1)
    adapter.then("a1", failure(429, "7"))
    result = await router.chat(ask())
    assert result.served_by.retries == 1 and adapter.calls == ["a1", "a1"]
    (wait,) = clock.waits
    assert 7 <= wait <= 7 * 1.1


async def test_without_retry_after_the_backoff_doubles(make, adapter, clock):
    router = make([entry("a", "a1")], num_retries=2)
    adapter.then("a1", failure(500), failure(503))
    await router.chat(ask())
    assert len(clock.waits) == 2
    assert 0.5 <= clock.waits[0] <= 0.55 and 1.0 <= clock.waits[1] <= 1.1


async def test_a_retry_after_beyond_a_minute_is_not_waited_for(make, adapter, clock):
    router = make([entry("a", "a1")], num_retries=1)
    adapter.then("a1", failure(429, "3600"))
    await router.chat(ask())
    assert clock.waits[0] < 1


async def test_a_healthy_sibling_takes_the_retry_at_once(make, adapter, clock):
    # The weights make a1 the first choice; its 429 cools it down, so a2 is the healthy sibling.
    router = make([entry("a", "a1", weight=1), entry("a", "a2", weight=0)], num_retries=1)
    adapter.then("a1", failure(429, "30"))
    result = await router.chat(ask())
    assert adapter.calls == ["a1", "a2"]
    assert clock.waits == [0.0] and result.served_by.retries == 1 and result.served_by.deployment == "a2"


@pytest.mark.parametrize("status", [400, 404, 422])
async def test_failures_about_the_request_are_not_retried(make, adapter, status):
    router = make([entry("a", "a1")], num_retries=3)
    adapter.then("a1", failure(status))
    with pytest.raises((InvalidRequestError, UpstreamError)):
        await router.chat(ask())
    assert adapter.calls == ["a1"]


async def test_bad_credentials_are_retried_only_on_another_deployment(make, adapter):
    lone = make([entry("a", "a1")], num_retries=3)
    adapter.then("a1", failure(401))
    with pytest.raises(UpstreamError):
        await lone.chat(ask())
    assert adapter.calls == ["a1"]


# --- cooldown ----------------------------------------------------------------------------------


async def test_a_429_cools_down_a_deployment_with_siblings_for_cooldown_time(make, adapter, clock):
    router = make([entry("a", "a1", weight=1), entry("a", "a2", weight=0)], cooldown_time=30)
    adapter.then("a1", failure(429))
    with pytest.raises(UpstreamRateLimitError):
        await router.chat(ask())
    assert {(await router.chat(ask())).served_by.deployment for _ in range(5)} == {"a2"}  # a1 cools down
    clock.now += 29
    assert (await router.chat(ask())).served_by.deployment == "a2"
    clock.now += 2
    assert (await router.chat(ask())).served_by.deployment == "a1"  # back after its cooldown


async def test_a_lone_deployment_is_not_cooled_down_by_default(make, adapter):
    router = make([entry("a", "a1")])
    adapter.then("a1", failure(429), failure(500))
    for _ in range(2):
        with pytest.raises(UpstreamError):
            await router.chat(ask())
    assert (await router.chat(ask())).served_by.deployment == "a1"


async def test_allowed_fails_counts_failures_in_the_minute(make, adapter, clock):
    router = make([entry("a", "a1")], allowed_fails=1, cooldown_time=10)
    adapter.then("a1", failure(500), failure(500))
    for _ in range(2):
        with pytest.raises(UpstreamError):
            await router.chat(ask())
    with pytest.raises(UpstreamRateLimitError) as info:  # every deployment cooling down: a 429
        await router.chat(ask())
    assert info.value.retry_after == pytest.approx(10)
    assert adapter.calls == ["a1", "a1"]


async def test_a_bad_request_never_cools_a_deployment_down(make, adapter):
    router = make([entry("a", "a1"), entry("a", "a2")], allowed_fails=0)
    adapter.then("a1", failure(400))
    adapter.then("a2", failure(400))
    for _ in range(2):
        with pytest.raises(InvalidRequestError):
            await router.chat(ask())
    await router.chat(ask())


# --- fallbacks ---------------------------------------------------------------------------------


async def test_chained_fallbacks_follow_each_models_own_list(make, adapter):
    router = make(
        [entry("a", "a1"), entry("b", "b1"), entry("c", "c1")], fallbacks=[{"a": ["b"]}, {"b": ["c"]}]
    )
    adapter.then("a1", failure(500))
    adapter.then("b1", failure(500))
    result = await router.chat(ask())
    assert result.served_by.model == "c" and result.served_by.fallbacks == 2
    assert result.body["model"] == "c"


async def test_circular_fallbacks_try_each_model_once_and_raise_the_askeds_error(make, adapter):
    router = make([entry("a", "a1"), entry("b", "b1")], fallbacks=[{"a": ["b"]}, {"b": ["a"]}])
    adapter.then("a1", failure(429, "2"))
    adapter.then("b1", failure(500))
    with pytest.raises(UpstreamRateLimitError):  # a's error, not b's
        await router.chat(ask())
    assert adapter.calls == ["a1", "b1"]


async def test_max_fallbacks_bounds_the_chain(make, adapter):
    router = make(
        [entry("a", "a1"), entry("b", "b1"), entry("c", "c1")],
        fallbacks=[{"a": ["b"]}, {"b": ["c"]}],
        max_fallbacks=1,
    )
    adapter.then("a1", failure(500))
    adapter.then("b1", failure(500))
    with pytest.raises(UpstreamError):
        await router.chat(ask())
    assert adapter.calls == ["a1", "b1"]


async def test_a_too_long_prompt_uses_general_fallbacks_when_no_context_window_list_is_set(make, adapter):
    router = make([entry("a", "a1"), entry("b", "b1")], fallbacks=[{"a": ["b"]}])
    adapter.then("a1", failure(400, code="context_length_exceeded"))
    assert (await router.chat(ask())).served_by.model == "b"


async def test_a_context_window_list_without_the_model_means_no_fallback(make, adapter):
    router = make(
        [entry("a", "a1"), entry("b", "b1"), entry("c", "c1")],
        fallbacks=[{"a": ["b"]}],
        context_window_fallbacks=[{"c": ["b"]}],
    )
    adapter.then("a1", failure(400, code="context_length_exceeded"))
    with pytest.raises(InvalidRequestError) as info:
        await router.chat(ask())
    assert info.value.code == "context_length_exceeded" and adapter.calls == ["a1"]


async def test_content_policy_fallbacks_are_their_own_list(make, adapter):
    router = make(
        [entry("a", "a1"), entry("b", "b1"), entry("c", "c1")],
        fallbacks=[{"a": ["b"]}],
        content_policy_fallbacks=[{"a": ["c"]}],
    )
    adapter.then("a1", failure(400, message="content_policy_violation"))
    assert (await router.chat(ask())).served_by.model == "c"


async def test_the_generic_and_default_fallbacks(make, adapter):
    generic = make([entry("a", "a1"), entry("b", "b1")], fallbacks=[{"*": ["b"]}])
    adapter.then("a1", failure(500))
    assert (await generic.chat(ask())).served_by.model == "b"
    default = make([entry("a", "a1"), entry("b", "b1")], default_fallbacks=["b"])
    adapter.then("a1", failure(500))
    assert (await default.chat(ask())).served_by.model == "b"


# --- budget holds and the key's models across fallbacks ---------------------------------------


def priced(name: str, id_: str, per_token: float) -> dict[str, Any]:
    return entry(name, id_, input_cost_per_token=per_token, output_cost_per_token=per_token)


@pytest.mark.parametrize(
    "settings",
    [
        {"fallbacks": [{"a": ["dear"]}]},
        {"context_window_fallbacks": [{"a": ["dear"]}]},
        {"content_policy_fallbacks": [{"a": ["dear"]}]},
        {"default_fallbacks": ["dear"]},
        {"fallbacks": [{"*": ["dear"]}]},
        {"fallbacks": [{"a": ["b"]}, {"b": ["dear"]}]},  # chained
        {"fallbacks": [{"a": ["b"]}], "content_policy_fallbacks": [{"b": ["dear"]}]},  # mixed kinds
    ],
)
def test_a_budget_hold_prices_every_model_a_fallback_can_reach(make, settings):
    router = make([priced("a", "a1", 1e-6), priced("b", "b1", 2e-6), priced("dear", "d1", 1e-3)], **settings)
    assert router.max_cost_usd("a", 10, 10) == pytest.approx(20 * 1e-3)


def test_a_hold_stops_where_the_chain_does(make):
    models = [priced("a", "a1", 1e-6), priced("b", "b1", 2e-6), priced("dear", "d1", 1e-3)]
    router = make(models, fallbacks=[{"a": ["b"]}, {"b": ["dear"]}], max_fallbacks=1)
    assert router.max_cost_usd("a", 10, 10) == pytest.approx(20 * 2e-6)


def test_an_unpriced_model_a_fallback_can_reach_leaves_the_hold_unknown(make):
    unpriced = {**entry("free", "f1"), "litellm_params": {"model": "openai/in-house-model-x"}}
    router = make([priced("a", "a1", 1e-6), unpriced], fallbacks=[{"a": ["free"]}])
    assert router.max_cost_usd("a", 10, 10) is None
    assert router.max_cost_usd("free", 10, 10) is None
    token = allowed_models.set(frozenset({"a"}))  # a key that may not use it: never reached
    try:
        assert router.max_cost_usd("a", 10, 10) == pytest.approx(20 * 1e-6)
    finally:
        allowed_models.reset(token)


def test_audio_of_unknown_length_holds_nothing_at_a_priced_model_and_is_unpriced_at_another(make):
    def whisper(name: str, upstream: str) -> dict[str, Any]:
        return {
            **entry(name, f"{name}-1", info={"mode": "audio_transcription"}),
            "litellm_params": {"model": upstream},
        }

    router = make([whisper("priced", "openai/whisper-1"), whisper("unpriced", "openai/in-house-asr")])
    assert router.max_unit_cost_usd("priced", UnitUsage("seconds", 60.0)) > 0  # a WAV's length
    assert router.max_unit_cost_usd("priced", UnitUsage("seconds", None)) == 0.0  # other audio
    assert router.max_unit_cost_usd("unpriced", UnitUsage("seconds", None)) is None


async def test_a_fallback_to_a_model_the_key_may_not_use_is_skipped(make, adapter):
    models = [priced("a", "a1", 1e-6), priced("b", "b1", 2e-6), priced("dear", "d1", 1e-3)]
    router = make(models, fallbacks=[{"a": ["dear", "b"]}])
    token = allowed_models.set(frozenset({"a", "b"}))
    try:
        adapter.then("a1", failure(500))
        assert (await router.chat(ask())).served_by.model == "b"  # not "dear"
        assert adapter.calls == ["a1", "b1"]
        assert router.reachable("a") == ["a", "b"]
        assert router.max_cost_usd("a", 10, 10) == pytest.approx(20 * 2e-6)
        allowed_models.set(frozenset({"a"}))
        adapter.then("a1", failure(500))
        with pytest.raises(UpstreamError):  # no fallback it may use: the asked model's error
            await router.chat(ask())
    finally:
        allowed_models.reset(token)


# --- strategies and limits ------------------------------------------------------------------------


async def test_cost_based_routing_takes_the_cheapest(make, adapter):
    router = make(
        [
            entry("a", "dear", input_cost_per_token=1e-5, output_cost_per_token=3e-5),
            entry("a", "cheap", input_cost_per_token=1e-7, output_cost_per_token=3e-7),
        ],
        routing_strategy="cost-based-routing",
    )
    assert {(await router.chat(ask())).served_by.deployment for _ in range(5)} == {"cheap"}


async def test_usage_based_routing_keeps_each_deployment_under_its_rpm(make, adapter, clock):
    router = make(
        [entry("a", "a1", rpm=1), entry("a", "a2", rpm=1)], routing_strategy="usage-based-routing-v2"
    )
    served = {(await router.chat(ask())).served_by.deployment for _ in range(2)}
    assert served == {"a1", "a2"}
    with pytest.raises(UpstreamRateLimitError) as info:
        await router.chat(ask())
    assert 0 < info.value.retry_after <= 60
    clock.now += 60  # a new minute
    await router.chat(ask())


async def test_rpm_is_only_a_weight_for_the_shuffle(make, adapter):
    router = make([entry("a", "a1", rpm=1)])
    for _ in range(3):
        await router.chat(ask())


async def test_least_busy_avoids_the_deployment_with_a_stream_open(make, adapter):
    router = make([entry("a", "a1"), entry("a", "a2")], routing_strategy="least-busy")
    stream = await router.chat_stream(ask())
    busy = stream.served_by.deployment
    assert {(await router.chat(ask())).served_by.deployment for _ in range(4)} == {"a1", "a2"} - {busy}
    await stream.aclose()


async def test_pre_call_checks_skip_deployments_the_prompt_does_not_fit(make, adapter):
    router = make(
        [
            entry("a", "small", info={"max_input_tokens": 5}),
            entry("a", "large", info={"max_input_tokens": 50_000}),
        ],
        enable_pre_call_checks=True,
    )
    long = {"model": "a", "messages": [factories.message("word " * 100)]}
    assert {(await router.chat(long)).served_by.deployment for _ in range(4)} == {"large"}
    tiny = make([entry("t", "t1", info={"max_input_tokens": 5})], enable_pre_call_checks=True)
    with pytest.raises(InvalidRequestError) as info:
        await tiny.chat({"model": "t", "messages": [factories.message("word " * 100)]})
    assert info.value.code == "context_length_exceeded"


# --- streams ------------------------------------------------------------------------------------


async def test_a_stream_is_relayed_with_the_public_name_and_without_the_unasked_usage_chunk(make, adapter):
    router = make([entry("a", "a1")])
    stream = await router.chat_stream(ask())
    chunks = [c async for c in stream]
    assert {c["model"] for c in chunks} == {"a"}
    assert all("usage" not in c for c in chunks) and all(c["choices"] for c in chunks)
    assert stream.usage["completion_tokens"] == 2 and stream.finish_reasons == ["stop"]


async def test_a_stream_failing_before_its_first_chunk_is_retried(make, adapter):
    router = make([entry("a", "a1")], num_retries=1)
    adapter.then("a1", [failure(500)])
    stream = await router.chat_stream(ask())
    assert stream.served_by.retries == 1
    assert [c async for c in stream]


async def test_an_abandoned_stream_leaves_no_verdict_and_nothing_in_flight(make, adapter, spans):
    router = make([entry("a", "a1")])
    stream = await router.chat_stream(ask())
    await stream.aclose()
    assert router.health("a1").in_flight == 0 and router.health("a1").failures == 0
    (span,) = [s for s in spans.get_finished_spans() if s.name.startswith("provider ")]
    assert span.attributes["cirrus.abandoned"] is True and span.status.status_code.name == "UNSET"


async def test_an_error_event_mid_stream_reaches_the_client(make, adapter):
    router = make([entry("a", "a1")])
    chunks = factories.chunk_dicts("one two", model="x")
    adapter.then("a1", [chunks[0], chunks[1], failure(500)])
    stream = await router.chat_stream(ask())
    with pytest.raises(UpstreamError):
        [c async for c in stream]


async def test_a_stream_that_ends_without_a_finish_reason_is_an_error(make, adapter):
    router = make([entry("a", "a1")])
    chunks = factories.chunk_dicts("one two", model="x")
    adapter.then("a1", chunks[:2])
    stream = await router.chat_stream(ask())
    with pytest.raises(UpstreamError, match="before the answer was complete"):
        [c async for c in stream]


# --- what a model supports ----------------------------------------------------------------------


def test_features_come_from_the_price_map_and_the_model_file_wins(make):
    router = make(
        [
            entry("mini", "m1"),  # gpt-4o-mini: tools yes; reasoning not in the map
            entry("thinker", "t1", model="openai/o3-mini"),
            entry("local", "l1", model="openai/my-llama", info={"supports_function_calling": False}),
            entry("mixed", "x1", model="openai/o3-mini"),
            entry("mixed", "x2"),
        ]
    )
    mini, thinker, local, mixed = (router.features(m) for m in ("mini", "thinker", "local", "mixed"))
    assert (mini.function_calling, mini.reasoning) == (True, None)
    assert (thinker.function_calling, thinker.reasoning) == (True, True)
    assert local.function_calling is False and local.reasoning is None
    assert mixed.reasoning is None  # one deployment reasons, the other is unknown


# --- telemetry -----------------------------------------------------------------------------------


async def test_every_attempt_is_a_span_with_genai_attributes(make, adapter, spans):
    router = make(
        [entry("a", "a1"), entry("b", "b1", api_base="http://models.example:8000/v1")],
        fallbacks=[{"a": ["b"]}],
    )
    adapter.then("a1", failure(500))
    await router.chat(ask())
    attempts = [s for s in spans.get_finished_spans() if s.name.startswith("provider ")]
    assert [s.attributes["cirrus.deployment"] for s in attempts] == ["a1", "b1"]
    failed, ok = attempts
    assert failed.status.status_code.name == "ERROR" and failed.attributes["http.response.status_code"] == 500
    assert ok.attributes["gen_ai.provider.name"] == "openai"
    assert ok.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert ok.attributes["gen_ai.operation.name"] == Operation.CHAT.genai_name
    assert ok.attributes["server.address"] == "models.example" and ok.attributes["server.port"] == 8000
    # What Application Insights reads for a dependency's type (`GenAI | openai`) and target.
    assert ok.attributes["gen_ai.system"] == "openai"
    assert ok.attributes["peer.service"] == "models.example:8000"
    assert failed.attributes["peer.service"] == "api.openai.com"  # OpenAI's default base, no port


async def test_an_attempt_span_names_the_provider_host_never_credentials_in_its_url(make, spans):
    router = make([entry("a", "a1", api_base="https://user:s3cret-in-url@gw.example/openai/v1")])
    await router.chat(ask())
    (attempt,) = [s for s in spans.get_finished_spans() if s.name.startswith("provider ")]
    assert attempt.attributes["peer.service"] == "gw.example"
    assert attempt.attributes["server.address"] == "gw.example" and "server.port" not in attempt.attributes
    assert "s3cret-in-url" not in repr(dict(attempt.attributes))
