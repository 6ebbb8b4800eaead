"""Configuration: one `Settings` from app settings (environment), and the model routing file.

App settings are what Azure Functions exposes as environment variables (and what Core Tools
loads from `local.settings.json`). Their names are the field aliases below; keep them in step
with `local.settings.sample.json` and the Bicep app settings (a test compares the keys).

Model routing comes from a LiteLLM-style YAML file (`model_list`, `router_settings`), so a team
can bring the config it already runs LiteLLM's proxy with.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.telemetry import ExportOptions, Sampling

APP_ROOT = Path(__file__).resolve().parent.parent
LOCAL_MODEL_CONFIG = Path("shared/model_list.local.yaml")
# The documented development key: accepted only when CIRRUS_ENV=local.
DEV_MASTER_KEY = "sk-cirrus-dev-master-key"
DEV_KEY_HASH_SECRET = "cirrus-dev-key-hashing-secret-local-only"  # noqa: S105 - local mode only
MIN_MASTER_KEY_LENGTH = 32
# What `UseDevelopmentStorage=true` (Core Tools' usual local setting) means: Azurite's defaults.
# The Azure SDKs do not expand it themselves.
AZURITE_DEFAULT_CONNECTION = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)
_ENV_REF = re.compile(r"^os\.environ/([A-Za-z_][A-Za-z0-9_]*)$")


class ConfigError(ValueError):
    """The app settings or the model file are invalid; the message names what, never a secret."""


class Settings(BaseSettings):
    """Every app setting Cirrus reads, validated once per worker process."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    env: Literal["local", "azure"] = Field("azure", alias="CIRRUS_ENV")
    master_key: SecretStr | None = Field(None, alias="CIRRUS_MASTER_KEY")
    # Off: the master key is refused everywhere (its console sessions too), and admins use Entra ID.
    master_key_enabled: bool = Field(True, alias="CIRRUS_MASTER_KEY_ENABLED")
    # Entra ID bearer tokens: the issuers (comma separated, each with its OpenID discovery document
    # at `{issuer}/.well-known/openid-configuration`) and the audience (Cirrus's app ID URI or
    # client id; several comma separated) a token must name. Unset: only Cirrus keys are accepted.
    entra_issuers: Annotated[tuple[str, ...], NoDecode] = Field((), alias="CIRRUS_ENTRA_ISSUERS")
    entra_audience: Annotated[tuple[str, ...], NoDecode] = Field((), alias="CIRRUS_ENTRA_AUDIENCE")
    # The HMAC key virtual keys are stored under. Separate from the master key, so rotating that
    # one does not invalidate every virtual key.
    key_hash_secret: SecretStr | None = Field(None, alias="CIRRUS_KEY_HASH_SECRET")
    models_file: Path | None = Field(None, alias="CIRRUS_MODEL_CONFIG")
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0, alias="CIRRUS_MAX_BODY_BYTES")
    max_messages: int = Field(2048, gt=0, alias="CIRRUS_MAX_MESSAGES")
    max_upload_bytes: int = Field(200 * 1024 * 1024, gt=0, alias="CIRRUS_MAX_UPLOAD_BYTES")
    # Batches: requests per queue message, requests in flight per batch per worker, and (for tests) the
    # real length of the `24h` completion window.
    batch_chunk_size: int = Field(100, ge=1, le=1000, alias="CIRRUS_BATCH_CHUNK_SIZE")
    batch_concurrency: int = Field(8, ge=1, le=256, alias="CIRRUS_BATCH_CONCURRENCY")
    batch_window_seconds: int = Field(24 * 3600, ge=1, alias="CIRRUS_BATCH_WINDOW_SECONDS")
    # Outbound HTTP from agent tools (`http_get`) and job webhooks: only these hosts (comma
    # separated, `*.example.com` for subdomains), only public addresses, capped in size and time.
    http_allowlist: str = Field("", alias="CIRRUS_HTTP_ALLOWLIST")
    http_max_bytes: int = Field(1_000_000, gt=0, alias="CIRRUS_HTTP_MAX_BYTES")
    http_timeout_s: float = Field(10.0, gt=0, le=120, alias="CIRRUS_HTTP_TIMEOUT_S")
    # When the sweeper re-drives stuck batches and jobs: NCRONTAB with seconds, read by the host.
    sweep_schedule: str = Field("0 */1 * * * *", alias="CIRRUS_SWEEP_SCHEDULE")
    # Connections to model providers: one pool per worker process, kept alive between requests.
    provider_max_connections: int = Field(256, ge=1, le=10_000, alias="CIRRUS_PROVIDER_MAX_CONNECTIONS")
    provider_keepalive_seconds: float = Field(30.0, gt=0, le=600, alias="CIRRUS_PROVIDER_KEEPALIVE_SECONDS")
    # How long a job stays claimed by a worker that stops renewing it (died): then another resumes it.
    job_lease_seconds: float = Field(90.0, ge=1, le=600, alias="CIRRUS_JOB_LEASE_SECONDS")
    # A background response's cost cap in USD, checked before each model call (a call repeated
    # after its worker died is the only second one); 0 means none.
    response_max_cost_usd: float = Field(1.0, ge=0, alias="CIRRUS_RESPONSE_MAX_COST_USD")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="CIRRUS_LOG_LEVEL")
    # JSON lines locally (for tools to read); text in Azure, where the host and Application
    # Insights keep the timestamp, level and logger apart already.
    log_format: Literal["json", "text"] = Field(
        default_factory=lambda data: "json" if data.get("env") == "local" else "text",
        alias="CIRRUS_LOG_FORMAT",
    )
    # Opt-in: record prompt and completion text in telemetry. Off, no span or log carries it.
    trace_content: bool = Field(False, alias="CIRRUS_TRACE_CONTENT")

    # Storage: a connection string locally (Azurite); in Azure the identity-based form
    # (`AzureWebJobsStorage__blobServiceUri` ...) that the Functions host itself uses.
    storage_connection_string: SecretStr | None = Field(None, alias="AzureWebJobsStorage")
    storage_blob_uri: str | None = Field(None, alias="AzureWebJobsStorage__blobServiceUri")
    storage_queue_uri: str | None = Field(None, alias="AzureWebJobsStorage__queueServiceUri")
    storage_account_name: str | None = Field(None, alias="AzureWebJobsStorage__accountName")
    # The user-assigned managed identity's client id; unset means DefaultAzureCredential's chain.
    azure_client_id: str | None = Field(None, alias="AZURE_CLIENT_ID")

    cosmos_endpoint: str = Field(..., alias="COSMOS_ENDPOINT")
    cosmos_key: SecretStr | None = Field(None, alias="COSMOS_KEY")
    cosmos_database: str = Field("cirrus", alias="COSMOS_DATABASE")

    uploads_container: str = Field("uploads", alias="CIRRUS_UPLOADS_CONTAINER")
    outputs_container: str = Field("outputs", alias="CIRRUS_OUTPUTS_CONTAINER")
    jobs_queue: str = Field("cirrus-jobs", alias="JOBS_QUEUE")
    batch_queue: str = Field("cirrus-batches", alias="BATCH_QUEUE")
    usage_queue: str = Field("cirrus-usage", alias="USAGE_QUEUE")

    appinsights_connection_string: SecretStr | None = Field(
        None, alias="APPLICATIONINSIGHTS_CONNECTION_STRING"
    )
    # The standard OpenTelemetry variable: an OTLP/HTTP collector's base URL (`/v1/traces` & co. are added).
    otlp_endpoint: str | None = Field(None, alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    # Which traces are exported: `all`, a share (`25%`) or a rate (`5/s`); see telemetry.Sampling.
    # (NoDecode: the app setting is text for `_sampling`, not JSON for the dataclass.)
    telemetry_sampling: Annotated[Sampling, NoDecode] = Field(Sampling(), alias="CIRRUS_TELEMETRY_SAMPLING")
    # Application Insights' Live Metrics: on in Azure, off locally (it calls the internet); unset
    # means that default, filled in by `_fail_fast`.
    appinsights_live_metrics: bool | None = Field(None, alias="CIRRUS_APPINSIGHTS_LIVE_METRICS")

    @property
    def is_local(self) -> bool:
        return self.env == "local"

    @property
    def own_queues(self) -> frozenset[str]:
        """Cirrus's own queues and their poison queues: never a job's `reply_queue`."""
        names = (self.jobs_queue, self.batch_queue, self.usage_queue)
        return frozenset(names) | {f"{name}-poison" for name in names}

    @field_validator("storage_connection_string", mode="before")
    @classmethod
    def _development_storage(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower().rstrip(";") == "usedevelopmentstorage=true":
            return AZURITE_DEFAULT_CONNECTION
        return value or None

    @field_validator("cosmos_endpoint", "storage_blob_uri", "storage_queue_uri")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("entra_issuers", "entra_audience", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
        return value

    @field_validator("entra_issuers")
    @classmethod
    def _issuer_urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for issuer in value:
            if not issuer.startswith(("https://", "http://")):
                raise ValueError("each issuer must be an http(s) URL")
        return value

    @property
    def entra_enabled(self) -> bool:
        return bool(self.entra_issuers)

    @field_validator("telemetry_sampling", mode="before")
    @classmethod
    def _sampling(cls, value: object) -> object:
        return Sampling.parse(value) if isinstance(value, str) else value

    def export_options(self) -> ExportOptions:
        """What the exporters need to know besides where to send."""
        live_metrics = bool(self.appinsights_live_metrics)
        return ExportOptions(sampling=self.telemetry_sampling, live_metrics=live_metrics, local=self.is_local)

    @field_validator("otlp_endpoint", mode="before")
    @classmethod
    def _optional_url(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        value = value.strip()
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value or None  # an empty app setting means unset

    @model_validator(mode="after")
    def _live_metrics_default(self) -> Settings:
        if self.appinsights_live_metrics is None:
            self.appinsights_live_metrics = not self.is_local
        return self

    @model_validator(mode="after")
    def _entra(self) -> Settings:
        if bool(self.entra_issuers) != bool(self.entra_audience):
            raise ValueError("set both CIRRUS_ENTRA_ISSUERS and CIRRUS_ENTRA_AUDIENCE, or neither")
        if not self.master_key_enabled and not self.entra_issuers:
            raise ValueError(
                "CIRRUS_MASTER_KEY_ENABLED=false needs CIRRUS_ENTRA_ISSUERS and CIRRUS_ENTRA_AUDIENCE: "
                "without the master key only Entra ID admins can manage Cirrus"
            )
        if not self.master_key_enabled and self.master_key is None and not self.is_local:
            # Never accepted, but a value is still needed where code compares against it.
            self.master_key = SecretStr(secrets.token_urlsafe(48))
        if not self.is_local:
            plain = [i for i in self.entra_issuers if not i.startswith("https://")]
            if plain:
                raise ValueError("CIRRUS_ENTRA_ISSUERS must be https URLs outside local mode")
        return self

    @model_validator(mode="after")
    def _fail_fast(self) -> Settings:
        if self.env == "local":
            if self.master_key is None:
                self.master_key = SecretStr(DEV_MASTER_KEY)
            if self.key_hash_secret is None:
                self.key_hash_secret = SecretStr(DEV_KEY_HASH_SECRET)
            if self.models_file is None:
                self.models_file = LOCAL_MODEL_CONFIG
        else:
            key = self.master_key.get_secret_value() if self.master_key else ""
            if len(key) < MIN_MASTER_KEY_LENGTH or key == DEV_MASTER_KEY:
                raise ValueError(
                    f"CIRRUS_MASTER_KEY must be set to a random secret of at least "
                    f"{MIN_MASTER_KEY_LENGTH} characters outside local mode"
                )
            # App Service passes an unresolved Key Vault reference through as its own text, which is
            # long enough to pass for a key: refuse it rather than run with a guessable secret.
            for name, value in (("CIRRUS_MASTER_KEY", key), ("CIRRUS_KEY_HASH_SECRET", self.key_hash_secret)):
                text = value.get_secret_value() if isinstance(value, SecretStr) else str(value or "")
                if text.startswith("@Microsoft.KeyVault("):
                    raise ValueError(
                        f"{name} is an unresolved Key Vault reference: "
                        "check the secret exists and the identity may read it"
                    )
            secret = self.key_hash_secret.get_secret_value() if self.key_hash_secret else ""
            if len(secret) < MIN_MASTER_KEY_LENGTH or secret in (DEV_KEY_HASH_SECRET, key):
                raise ValueError(
                    f"CIRRUS_KEY_HASH_SECRET must be set to a random secret of at least "
                    f"{MIN_MASTER_KEY_LENGTH} characters, different from the master key, outside local mode"
                )
            if self.models_file is None:
                raise ValueError("CIRRUS_MODEL_CONFIG must name the model_list file outside local mode")
            if self.cosmos_key is not None:
                raise ValueError("COSMOS_KEY is for the local emulator; in Azure Cirrus uses its identity")
        if self.storage_connection_string is None and not (
            self.storage_account_name or (self.storage_blob_uri and self.storage_queue_uri)
        ):
            raise ValueError(
                "set AzureWebJobsStorage (a connection string) or AzureWebJobsStorage__accountName"
            )
        return self

    def resolved_models_file(self) -> Path:
        path = self.models_file or LOCAL_MODEL_CONFIG
        return path if path.is_absolute() else APP_ROOT / path


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use (never at import time)."""
    try:
        return Settings()  # values come from the environment
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "app settings")) from None


def describe_validation_error(exc: ValidationError, what: str) -> str:
    """A one-line summary naming each bad field (by its alias) without echoing any value."""
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or what
        problems.append(f"{where}: {err['msg']}")
    return f"invalid {what}: " + "; ".join(problems)


# --- model routing file ---------------------------------------------------------------------


class LiteLLMParams(BaseModel):
    """A deployment's `litellm_params`: `model` is `provider/model`; the rest goes to LiteLLM."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)


class Deployment(BaseModel):
    """One entry of `model_list`: a public model name served by one provider deployment."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field(min_length=1, max_length=256)
    litellm_params: LiteLLMParams
    model_info: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(BaseModel):
    """The parsed model file. Keys LiteLLM's proxy also reads and Cirrus ignores are allowed."""

    model_config = ConfigDict(extra="allow")

    model_list: list[Deployment] = Field(min_length=1)
    router_settings: dict[str, Any] = Field(default_factory=dict)
    litellm_settings: dict[str, Any] = Field(default_factory=dict)

    def model_names(self) -> list[str]:
        """Public model names in file order, each once."""
        return list(dict.fromkeys(d.model_name for d in self.model_list))

    def deployments(self, model_name: str) -> list[Deployment]:
        return [d for d in self.model_list if d.model_name == model_name]


def load_model_config(path: Path, environ: Mapping[str, str] | None = None) -> ModelConfig:
    """Parse and check the model file. Referenced `os.environ/NAME` values must be set."""
    environ = os.environ if environ is None else environ
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read model config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"model config {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"model config {path} must be a mapping with a `model_list`")
    try:
        config = ModelConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, f"model config {path}")) from None
    missing = sorted(
        name
        for deployment in config.model_list
        for value in deployment.litellm_params.model_dump().values()
        if isinstance(value, str) and (m := _ENV_REF.match(value)) and (name := m.group(1)) not in environ
    )
    if missing:
        raise ConfigError(f"model config {path} refers to unset environment variables: {', '.join(missing)}")
    return config
