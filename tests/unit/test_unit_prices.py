"""Prices per image, second, character and search unit (LiteLLM's price map keys), and which
deployments serve which surface."""

import pytest

from shared.clients.llm.capabilities import serves
from shared.clients.llm.deployments import read_routing
from shared.clients.llm.operations import Operation
from shared.clients.llm.unit_prices import map_entries, unit_cost
from shared.clients.protocols import UnitUsage
from shared.config import ModelConfig


def deployments(*entries):
    config = ModelConfig.model_validate({"model_list": list(entries)})
    return read_routing(config, {}).deployments


def entry(model, **info):
    base = f"http://{len(info)}-{model.replace('/', '-')}/v1"  # deployments must differ
    return {"model_name": "m", "litellm_params": {"model": model, "api_base": base}, "model_info": info}


def test_a_unit_price_wins_over_tokens_and_a_missing_one_is_none_not_zero():
    per_image = {"input_cost_per_image": 0.04}
    assert unit_cost(UnitUsage("images", 3), [per_image], (1.0, 1.0)) == pytest.approx(0.12)
    assert unit_cost(UnitUsage("images", 3, input_tokens=10), [{}], (1.0, 1.0)) is None  # never by tokens
    assert unit_cost(UnitUsage("search_units", 2), [{}, {"input_cost_per_query": 0.002}], None) == 0.004
    assert unit_cost(UnitUsage("search_units", 1, input_tokens=40), [{}], (0.001, 0)) == pytest.approx(0.04)
    assert unit_cost(UnitUsage("search_units", 1), [{}], (0.001, 0)) is None  # no tokens to price
    assert unit_cost(UnitUsage("seconds", None), [{"input_cost_per_second": 1}], None) is None


def test_seconds_use_the_output_price_when_set_as_litellm_does():
    both = {"input_cost_per_second": 0.0001, "output_cost_per_second": 0.0002}
    assert unit_cost(UnitUsage("seconds", 10), [both], None) == pytest.approx(0.002)
    free_output = {"input_cost_per_second": 0.0001, "output_cost_per_second": 0}
    assert unit_cost(UnitUsage("seconds", 10), [free_output], None) == pytest.approx(0.001)
    per_character = [{"input_cost_per_character": 1.5e-5}]
    assert unit_cost(UnitUsage("characters", 1000), per_character, None) == pytest.approx(0.015)


def test_image_prices_follow_litellms_size_and_quality_keys():
    usage = UnitUsage("images", 1, size="1024x1024", quality="hd")
    entries = map_entries("openai", "dall-e-3", usage, {"input_cost_per_image": 0.04})
    assert entries[0]["input_cost_per_pixel"] == pytest.approx(7.629e-08)  # hd/1024-x-1024/dall-e-3
    assert unit_cost(usage, entries, None) == pytest.approx(0.08, rel=1e-3)
    azure = map_entries("azure", "dall-e-3", usage, {})
    assert azure[0]["litellm_provider"] == "azure"  # azure/hd/1024-x-1024/dall-e-3 comes first
    unsized = map_entries("openai", "dall-e-3", UnitUsage("images", 1), {"input_cost_per_image": 0.04})
    assert unsized == [{"input_cost_per_image": 0.04}]
    assert unit_cost(UnitUsage("images", 2, size="512x512"), [{"input_cost_per_pixel": 1e-6}], None) == (
        pytest.approx(2 * 512 * 512 * 1e-6)
    )


def test_which_deployments_serve_which_surface():
    declared, mapped, chat, unknown, listed = deployments(
        entry("openai/gpt-4o-mini", mode="rerank"),
        entry("openai/dall-e-3"),
        entry("openai/gpt-4o-mini"),
        entry("openai/my-own-model"),
        entry("openai/gpt-4o-mini", mode="chat", supported_endpoints=["/v1/audio/speech"]),
    )
    assert serves(declared, Operation.RERANK, {"mode": "chat"})  # the file wins over the map
    assert not serves(declared, Operation.IMAGE, {})
    assert serves(mapped, Operation.IMAGE, {"mode": "image_generation"})
    assert not serves(chat, Operation.MODERATE, {"mode": "chat"})
    assert serves(chat, Operation.CHAT, {"mode": "chat"})  # chat and friends are never checked
    assert serves(unknown, Operation.TRANSCRIBE, {})  # nobody knows: the provider decides
    assert serves(listed, Operation.SPEECH, {}) and not serves(listed, Operation.IMAGE, {})
    assert serves(chat, Operation.SPEECH, {"mode": "chat", "supported_endpoints": ["/v1/audio/speech"]})


def test_native_deployments_accept_per_unit_prices():
    (priced,) = deployments(
        {
            "model_name": "img",
            "litellm_params": {
                "model": "openai/dall-e-3",
                "api_base": "http://x/v1",
                "input_cost_per_image": 0.1,
            },
            "model_info": {"input_cost_per_image": 0.5, "input_cost_per_query": 0.002},
        }
    )
    assert priced.file_unit_prices == {"input_cost_per_image": 0.1, "input_cost_per_query": 0.002}
