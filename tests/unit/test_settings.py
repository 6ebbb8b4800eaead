"""Settings: local defaults, fail-fast validation, and agreement with local.settings.sample.json."""

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.config import (
    AZURITE_DEFAULT_CONNECTION,
    DEV_KEY_HASH_SECRET,
    DEV_MASTER_KEY,
    LOCAL_MODEL_CONFIG,
    Settings,
)
from shared.telemetry import ExportOptions, Sampling

ROOT = Path(__file__).resolve().parents[2]
STRONG_KEY = "sk-" + "x" * 40
# Settings the Functions host or libraries read, not Cirrus's Settings.
HOST_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "PYTHON_ENABLE_INIT_INDEXING",
    "LITELLM_LOCAL_MODEL_COST_MAP",
    "CIRRUS_LOCAL_PROVIDER_URL",  # read by the local model file (os.environ/...), not by Settings
}


def local(**values):
    base = {
        "CIRRUS_ENV": "local",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "COSMOS_ENDPOINT": "http://127.0.0.1:8081",
        "COSMOS_KEY": "k",
    }
    return Settings(_env_file=None, **{**base, **values})


def azure(**values):
    base = {
        "CIRRUS_ENV": "azure",
        "CIRRUS_MASTER_KEY": STRONG_KEY,
        "CIRRUS_KEY_HASH_SECRET": "h" * 40,
        "CIRRUS_MODEL_CONFIG": "models.yaml",
        "AzureWebJobsStorage__accountName": "acct",
        "COSMOS_ENDPOINT": "https://acct.documents.azure.com:443/",
    }
    return Settings(_env_file=None, **{**base, **values})


def test_local_mode_has_dev_defaults():
    settings = local()
    assert settings.master_key.get_secret_value() == DEV_MASTER_KEY
    assert settings.models_file == LOCAL_MODEL_CONFIG
    assert settings.resolved_models_file().is_file()


def test_use_development_storage_means_azurite_defaults():
    assert local().storage_connection_string.get_secret_value() == AZURITE_DEFAULT_CONNECTION


def test_azure_mode_accepts_identity_based_storage():
    settings = azure()
    assert settings.storage_connection_string is None
    assert settings.storage_account_name == "acct"


@pytest.mark.parametrize("key", [None, "short", DEV_MASTER_KEY])
def test_azure_mode_refuses_missing_weak_or_dev_master_key(key):
    values = {"CIRRUS_MASTER_KEY": key} if key else {"CIRRUS_MASTER_KEY": ""}
    with pytest.raises(ValidationError, match="CIRRUS_MASTER_KEY"):
        azure(**values)


@pytest.mark.parametrize("secret", ["", "short", DEV_KEY_HASH_SECRET, STRONG_KEY])
def test_azure_mode_refuses_a_missing_weak_dev_or_reused_key_hash_secret(secret):
    with pytest.raises(ValidationError, match="CIRRUS_KEY_HASH_SECRET"):
        azure(CIRRUS_KEY_HASH_SECRET=secret)


@pytest.mark.parametrize("name", ["CIRRUS_MASTER_KEY", "CIRRUS_KEY_HASH_SECRET"])
def test_an_unresolved_key_vault_reference_is_refused(name):
    with pytest.raises(ValidationError, match="Key Vault"):
        azure(**{name: "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/master-key/)"})


def test_azure_mode_needs_a_model_file_and_no_cosmos_key():
    with pytest.raises(ValidationError, match="CIRRUS_MODEL_CONFIG"):
        azure(CIRRUS_MODEL_CONFIG=None)
    with pytest.raises(ValidationError, match="COSMOS_KEY"):
        azure(COSMOS_KEY="emulator-key")


def test_storage_must_be_configured_one_way_or_another():
    with pytest.raises(ValidationError, match="AzureWebJobsStorage"):
        azure(AzureWebJobsStorage__accountName=None)


def test_endpoints_must_be_urls():
    with pytest.raises(ValidationError, match="http"):
        local(COSMOS_ENDPOINT="127.0.0.1:8081")


def test_errors_never_echo_secret_values():
    with pytest.raises(ValidationError) as info:
        azure(CIRRUS_MASTER_KEY="secret-but-short")
    from shared.config import describe_validation_error

    assert "secret-but-short" not in describe_validation_error(info.value, "app settings")


def test_sample_local_settings_match_settings_fields():
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    aliases = {field.alias for field in Settings.model_fields.values()}
    # Identity-only settings have no place in a local file.
    identity_only = {
        "AzureWebJobsStorage__blobServiceUri",
        "AzureWebJobsStorage__queueServiceUri",
        "AzureWebJobsStorage__accountName",
        "AZURE_CLIENT_ID",
    }
    assert set(sample) - HOST_SETTINGS == aliases - identity_only


def test_sample_local_settings_are_valid_settings():
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    settings = Settings(_env_file=None, **{k: v for k, v in sample.items() if k not in HOST_SETTINGS})
    assert settings.is_local


def test_the_readme_settings_table_names_every_setting():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("### App settings") : readme.index("## Operations")]
    named = set(re.findall(r"`([A-Za-z][A-Za-z0-9_]*)`", table))
    named |= {f"AzureWebJobsStorage{suffix}" for suffix in re.findall(r"`(__\w+)`", table)}
    aliases = {field.alias for field in Settings.model_fields.values()}
    assert not aliases - named, f"missing from the README's App settings table: {sorted(aliases - named)}"


# --- telemetry ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, Sampling()),
        ("all", Sampling()),
        ("100%", Sampling()),
        ("25%", Sampling(percentage=25.0)),
        (" 0.5 % ", Sampling(percentage=0.5)),
        ("5/s", Sampling(per_second=5.0)),
        ("0.5/s", Sampling(per_second=0.5)),
    ],
)
def test_telemetry_sampling_is_all_a_share_or_a_rate(value, expected):
    settings = local(**({"CIRRUS_TELEMETRY_SAMPLING": value} if value is not None else {}))
    assert settings.telemetry_sampling == expected
    assert settings.export_options().sampling == expected


@pytest.mark.parametrize("value", ["0%", "101%", "0/s", "-1/s", "half", "25", "5/m", "nan/s"])
def test_telemetry_sampling_refuses_anything_else_and_says_what_it_takes(value):
    with pytest.raises(ValidationError) as info:
        local(CIRRUS_TELEMETRY_SAMPLING=value)
    from shared.config import describe_validation_error

    message = describe_validation_error(info.value, "app settings")
    assert "CIRRUS_TELEMETRY_SAMPLING" in message and "`25%`" in message and "`5/s`" in message
    assert message.count(":") == 2  # one problem named, not a second one it caused


def test_the_distro_is_told_the_sampling_so_it_never_falls_back_to_its_rate_limit():
    """Without a sampling argument, azure-monitor-opentelemetry 1.8 rate-limits to 5 traces/s."""
    assert Sampling().distro_options() == {"sampling_ratio": 1.0}
    assert Sampling(percentage=25).distro_options() == {"sampling_ratio": 0.25}
    assert Sampling(per_second=2).distro_options() == {"traces_per_second": 2}
    assert [str(Sampling()), str(Sampling(percentage=12.5)), str(Sampling(per_second=5))] == [
        "all",
        "12.5%",
        "5/s",
    ]


def test_live_metrics_are_on_in_azure_and_off_locally_unless_set():
    assert local().export_options() == ExportOptions(live_metrics=False, local=True)
    assert azure().export_options() == ExportOptions(live_metrics=True, local=False)
    assert local(CIRRUS_APPINSIGHTS_LIVE_METRICS="true").export_options().live_metrics is True
    assert azure(CIRRUS_APPINSIGHTS_LIVE_METRICS="false").export_options().live_metrics is False
