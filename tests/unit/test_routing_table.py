"""What the router reads from the model file: LiteLLM's keys and meanings, or a clear refusal."""

import pytest

from shared.clients.llm.anthropic_wire import messages_url
from shared.clients.llm.deployments import (
    AZURE_DEFAULT_API_VERSION,
    DEFAULT_NUM_RETRIES,
    DEFAULT_TIMEOUT_S,
    OPENAI_DEFAULT_BASE,
    read_routing,
)
from shared.config import ConfigError, ModelConfig


def config(*deployments, **extra):
    deployments = deployments or ({"model_name": "m", "litellm_params": {"model": "openai/x"}},)
    return ModelConfig.model_validate({"model_list": list(deployments), **extra})


def test_defaults_are_litellms():
    table = read_routing(config(), {})
    assert table.settings.num_retries == DEFAULT_NUM_RETRIES
    assert table.settings.routing_strategy == "simple-shuffle"
    (deployment,) = table.deployments
    assert deployment.timeout == DEFAULT_TIMEOUT_S and deployment.stream_timeout == DEFAULT_TIMEOUT_S
    assert deployment.params["api_base"] == OPENAI_DEFAULT_BASE
    assert deployment.adapter == "openai_wire" and deployment.provider == "openai"
    assert deployment.upstream_model == "x"


def test_openai_and_azure_are_native_everything_else_goes_through_litellm():
    table = read_routing(
        config(
            {"model_name": "a", "litellm_params": {"model": "openai/gpt-4o", "api_key": "k"}},
            {
                "model_name": "b",
                "litellm_params": {"model": "azure/dep", "api_base": "https://r.openai.azure.com"},
            },
            {"model_name": "c", "litellm_params": {"model": "anthropic/claude-sonnet-4-5"}},
            {"model_name": "d", "litellm_params": {"model": "gpt-4o"}},  # LiteLLM infers the provider
            {
                "model_name": "e",
                "litellm_params": {"model": "openai/gpt-4o"},
                "model_info": {"adapter": "litellm"},
            },
        ),
        {},
    )
    adapters = {d.model_name: d.adapter for d in table.deployments}
    assert adapters == {
        "a": "openai_wire",
        "b": "openai_wire",
        "c": "litellm",
        "d": "litellm",
        "e": "litellm",
    }
    assert table.needs_litellm
    azure = table.deployments[1]
    assert azure.params["api_version"] == AZURE_DEFAULT_API_VERSION and azure.upstream_model == "dep"


def test_an_openai_wire_only_file_needs_no_litellm():
    assert not read_routing(config(), {}).needs_litellm


def test_anthropic_deployments_serve_messages_natively_unless_sent_through_litellm():
    table = read_routing(
        config(
            {"model_name": "native", "litellm_params": {"model": "anthropic/claude-sonnet-4-5"}},
            {
                "model_name": "forced",
                "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_key": "k"},
                "model_info": {"adapter": "litellm"},
            },
        ),
        {"ANTHROPIC_API_KEY": "from-env"},
    )
    native, forced = table.deployments
    assert native.native_messages and not forced.native_messages
    assert native.adapter == forced.adapter == "litellm"  # their chat completions: LiteLLM either way
    assert native.params["api_key"] == "from-env" and forced.params["api_key"] == "k"
    assert "api_base" not in native.params  # LiteLLM gets the file's params as written
    assert table.needs_litellm  # `forced` needs it at once


def test_a_file_of_native_anthropic_deployments_imports_litellm_only_when_a_chat_needs_it():
    table = read_routing(
        config({"model_name": "c", "litellm_params": {"model": "anthropic/claude-sonnet-4-5"}}), {}
    )
    assert not table.needs_litellm


@pytest.mark.parametrize(
    ("api_base", "url"),
    [
        (None, "https://api.anthropic.com/v1/messages"),
        ("https://gateway.example/anthropic", "https://gateway.example/anthropic/v1/messages"),
        ("http://127.0.0.1:4010/v1", "http://127.0.0.1:4010/v1/messages"),
        ("http://127.0.0.1:4010/v1/messages/", "http://127.0.0.1:4010/v1/messages"),
    ],
)
def test_the_anthropic_adapter_takes_an_api_base_with_or_without_v1(api_base, url):
    assert messages_url(api_base) == url


def test_environment_references_are_resolved_and_provider_keys_read_like_litellm():
    table = read_routing(
        config(
            {"model_name": "a", "litellm_params": {"model": "openai/x", "api_key": "os.environ/MY_KEY"}},
            {"model_name": "b", "litellm_params": {"model": "openai/x"}},
            {"model_name": "c", "litellm_params": {"model": "azure/d"}},
        ),
        {"MY_KEY": "k1", "OPENAI_API_KEY": "k2", "AZURE_API_BASE": "https://r", "AZURE_API_KEY": "k3"},
    )
    assert [d.params.get("api_key") for d in table.deployments] == ["k1", "k2", "k3"]
    assert table.deployments[2].params["api_base"] == "https://r"


def test_an_azure_deployment_without_an_endpoint_is_refused():
    with pytest.raises(ConfigError, match="api_base"):
        read_routing(config({"model_name": "a", "litellm_params": {"model": "azure/d"}}), {})


@pytest.mark.parametrize("key", ["aws_region_name", "vertex_project", "max_retries"])
def test_litellm_params_the_native_adapter_cannot_honour_are_refused(key):
    with pytest.raises(ConfigError, match=key):
        read_routing(config({"model_name": "a", "litellm_params": {"model": "openai/x", key: "1"}}), {})


def test_request_defaults_in_litellm_params_become_body_defaults():
    table = read_routing(
        config({"model_name": "a", "litellm_params": {"model": "openai/x", "temperature": 0.2, "rpm": 10}}),
        {},
    )
    (deployment,) = table.deployments
    assert deployment.body_defaults == {"temperature": 0.2} and deployment.rpm == 10


@pytest.mark.parametrize("key", ["redis_host", "set_verbose", "model_list", "model_group_alias"])
def test_router_settings_cirrus_does_not_implement_are_refused(key):
    with pytest.raises(ConfigError, match=key):
        read_routing(config(router_settings={key: 1}), {})


def test_router_settings_are_validated():
    with pytest.raises(ConfigError, match="routing_strategy"):
        read_routing(config(router_settings={"routing_strategy": "telepathy"}), {})
    with pytest.raises(ConfigError, match="num_retries"):
        read_routing(config(router_settings={"num_retries": -1}), {})


def test_fallbacks_must_name_models_in_the_file():
    with pytest.raises(ConfigError, match="nope"):
        read_routing(config(router_settings={"fallbacks": [{"m": ["nope"]}]}), {})
    read_routing(config(router_settings={"fallbacks": [{"*": ["m"]}]}), {})


def test_litellm_settings_map_to_router_equivalents_only():
    table = read_routing(
        config(litellm_settings={"num_retries": 1, "request_timeout": 9, "drop_params": True}), {}
    )
    assert table.settings.num_retries == 1 and table.settings.timeout == 9 and table.drop_params
    with pytest.raises(ConfigError, match="success_callback"):
        read_routing(config(litellm_settings={"success_callback": ["langfuse"]}), {})


def test_per_deployment_timeouts_win_over_the_routers():
    table = read_routing(
        config(
            {"model_name": "a", "litellm_params": {"model": "openai/x", "timeout": 3, "stream_timeout": 2}},
            router_settings={"timeout": 30},
        ),
        {},
    )
    assert (table.deployments[0].timeout, table.deployments[0].stream_timeout) == (3, 2)


def test_ids_are_the_files_or_stable_hashes_without_secrets():
    entry = {"model_name": "a", "litellm_params": {"model": "openai/x", "api_key": "secret-1"}}
    first = read_routing(config(entry), {}).deployments[0].id
    again = read_routing(config(entry), {}).deployments[0].id
    rotated = (
        read_routing(
            config({**entry, "litellm_params": {**entry["litellm_params"], "api_key": "secret-2"}}), {}
        )
        .deployments[0]
        .id
    )
    assert first == again == rotated and len(first) == 16
    named = read_routing(config({**entry, "model_info": {"id": "mine"}}), {}).deployments[0]
    assert named.id == "mine"


def test_duplicate_ids_are_refused():
    entry = {"model_name": "a", "litellm_params": {"model": "openai/x"}, "model_info": {"id": "same"}}
    with pytest.raises(ConfigError, match="same"):
        read_routing(config(entry, entry), {})
