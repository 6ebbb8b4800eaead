"""The LiteLLM-style model file: loading and checks (the router's reading: test_routing_table.py)."""

from pathlib import Path

import pytest

from shared.clients.llm import ModelRouter
from shared.config import LOCAL_MODEL_CONFIG, ConfigError, Settings, load_model_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, text):
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


def test_the_local_model_file_loads():
    config = load_model_config(ROOT / LOCAL_MODEL_CONFIG, {"CIRRUS_LOCAL_PROVIDER_URL": "http://x/v1"})
    assert config.model_names() == [
        "cirrus-local",
        "cirrus-embed",
        "cirrus-moderation",
        "cirrus-image",
        "cirrus-transcribe",
        "cirrus-speech",
        "cirrus-rerank",
    ]
    assert config.deployments("cirrus-local")[0].litellm_params.model == "openai/gpt-4o-mini"


async def test_each_model_of_the_local_file_serves_its_own_path_only(monkeypatch):
    monkeypatch.setenv("CIRRUS_LOCAL_PROVIDER_URL", "http://x/v1")
    config = load_model_config(ROOT / LOCAL_MODEL_CONFIG, {"CIRRUS_LOCAL_PROVIDER_URL": "http://x/v1"})
    router = ModelRouter(config)
    paths = {
        "cirrus-moderation": "moderations",
        "cirrus-image": "images/generations",
        "cirrus-transcribe": "audio/transcriptions",
        "cirrus-speech": "audio/speech",
        "cirrus-rerank": "rerank",
    }
    served = {model: [p for p in paths.values() if router.serves(model, p)] for model in config.model_names()}
    assert served == {"cirrus-local": [], "cirrus-embed": [], **{m: [p] for m, p in paths.items()}}
    await router.aclose()


def test_a_litellm_proxy_config_loads_unchanged(tmp_path):
    path = write(
        tmp_path,
        """
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-eu
      api_base: os.environ/AZURE_API_BASE
      api_key: os.environ/AZURE_API_KEY
      rpm: 60
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_key: os.environ/OPENAI_API_KEY}
  - model_name: claude
    litellm_params: {model: anthropic/claude-sonnet-4-5, api_key: os.environ/ANTHROPIC_API_KEY}
router_settings: {routing_strategy: simple-shuffle, num_retries: 2}
general_settings: {master_key: sk-ignored}
""",
    )
    env = {
        "AZURE_API_BASE": "https://x",
        "AZURE_API_KEY": "k",
        "OPENAI_API_KEY": "k",
        "ANTHROPIC_API_KEY": "k",
    }
    config = load_model_config(path, env)
    assert config.model_names() == ["gpt-4o", "claude"]
    assert len(config.deployments("gpt-4o")) == 2
    assert config.deployments("gpt-4o")[0].litellm_params.model_extra == {
        "api_base": "os.environ/AZURE_API_BASE",
        "api_key": "os.environ/AZURE_API_KEY",
        "rpm": 60,
    }


def test_unset_environment_references_fail_fast_by_name(tmp_path):
    path = write(
        tmp_path,
        "model_list:\n  - model_name: m\n"
        "    litellm_params: {model: openai/x, api_key: os.environ/NOPE_KEY}\n",
    )
    with pytest.raises(ConfigError, match="NOPE_KEY"):
        load_model_config(path, {})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("model_list: []\n", "model_list"),
        ("- just a list\n", "mapping"),
        ("model_list: [{model_name: m}]\n", "litellm_params"),
        ("model_list: [{model_name: m, litellm_params: {}}]\n", "model"),
        ("model_list: [\n", "not valid YAML"),
    ],
)
def test_bad_files_are_rejected_with_a_reason(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_model_config(write(tmp_path, text), {})


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_model_config(tmp_path / "absent.yaml", {})


def test_settings_resolve_relative_model_file_against_the_app_root():
    settings = Settings(
        _env_file=None,
        CIRRUS_ENV="local",
        AzureWebJobsStorage="UseDevelopmentStorage=true",
        COSMOS_ENDPOINT="http://127.0.0.1:8081",
    )
    assert settings.resolved_models_file() == ROOT / LOCAL_MODEL_CONFIG
