"""The model file read into what the router needs: deployments and its settings.

The file is LiteLLM's format (`model_list`, `router_settings`, `litellm_settings`), with
LiteLLM's key names and meanings, so a config a team runs LiteLLM's proxy with works here. A key
Cirrus does not implement is refused at start-up with a `ConfigError` naming it: a setting that
is silently ignored is worse than one that is refused.

Which adapter serves a deployment: `openai/...` and `azure/...` speak OpenAI's wire format and go
to the native adapter; every other provider goes to LiteLLM. `model_info.adapter: litellm` sends
an OpenAI-wire deployment through LiteLLM too. `anthropic/...` deployments also serve Anthropic's
Messages API natively (`native_messages`, the anthropic_wire adapter) unless `model_info.adapter:
litellm` sends all their traffic through LiteLLM; their chat completions go through LiteLLM either way.
An OpenAI-wire deployment on the native adapter whose `model_info.supported_endpoints` (LiteLLM's
key, LiteLLM's meaning) lists `/v1/responses` serves the Responses API natively
(`native_responses`): Responses requests go to its own `/responses`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.clients.llm.unit_prices import PRICE_KEYS
from shared.config import ConfigError, ModelConfig, describe_validation_error

DEFAULT_TIMEOUT_S = 120.0  # Azure's front end drops HTTP requests at 230 s anyway
DEFAULT_COOLDOWN_S = 5.0  # LiteLLM's DEFAULT_COOLDOWN_TIME_SECONDS
DEFAULT_NUM_RETRIES = 2  # LiteLLM's default (openai.DEFAULT_MAX_RETRIES)
DEFAULT_MAX_FALLBACKS = 5  # LiteLLM's ROUTER_MAX_FALLBACKS
AZURE_DEFAULT_API_VERSION = "2024-10-21"  # the latest GA data-plane version
OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
ANTHROPIC_DEFAULT_BASE = "https://api.anthropic.com"
NATIVE_PROVIDERS = frozenset({"openai", "azure"})
Adapter = Literal["openai_wire", "litellm"]
Strategy = Literal[
    "simple-shuffle",
    "least-busy",
    "latency-based-routing",
    "cost-based-routing",
    "usage-based-routing",
    "usage-based-routing-v2",
]

_ENV_REF = re.compile(r"^os\.environ/([A-Za-z_][A-Za-z0-9_]*)$")
# `litellm_params` the native adapter understands besides OpenAI request fields. Anything else on
# an OpenAI-wire deployment is refused: it would mean something to LiteLLM and nothing here.
_ROUTING_PARAMS = frozenset(
    {
        "model",
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "organization",
        "extra_headers",
        "extra_body",
        "azure_ad_token",
        "tenant_id",
        "client_id",
        "client_secret",
        "timeout",
        "stream_timeout",
        "rpm",
        "tpm",
        "weight",
        "cooldown_time",
        "input_cost_per_token",
        "output_cost_per_token",
        "base_model",
        "drop_params",  # nothing to drop: the native adapter forwards every OpenAI parameter
        *PRICE_KEYS,  # per image, second, character, search: for the endpoints not billed by tokens
    }
)
_SECRETS = frozenset({"api_key", "azure_ad_token", "client_secret"})
# OpenAI request fields a deployment may set as defaults (the client's own values win).
_BODY_DEFAULTS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "user",
        "response_format",
        "reasoning_effort",
        "verbosity",
        "service_tier",
        "parallel_tool_calls",
        "dimensions",
    }
)


@dataclass(frozen=True, eq=False)
class Deployment:
    """One entry of `model_list`, resolved: secrets read, adapter chosen, limits and prices known."""

    id: str  # model_info.id, else a stable hash of the entry
    model_name: str  # the public name clients send
    provider: str  # openai, azure, anthropic, bedrock, ...
    upstream_model: str  # the provider's model (Azure: the deployment name)
    litellm_model: str  # `litellm_params.model` as written
    adapter: Adapter
    params: Mapping[str, Any]  # litellm_params with `os.environ/` references resolved
    model_info: Mapping[str, Any]
    timeout: float
    stream_timeout: float
    weight: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    cooldown_time: float | None = None
    allowed_fails: int | None = None
    body_defaults: Mapping[str, Any] = field(default_factory=dict)
    native_messages: bool = False  # an Anthropic deployment: Messages requests go to it as they are
    native_responses: bool = False  # serves OpenAI's /responses itself: Responses requests go to it

    @property
    def file_prices(self) -> tuple[float, float] | None:
        """USD per input and output token set in the file (`litellm_params` wins over `model_info`)."""
        prices = {**self.model_info, **self.params}
        if "input_cost_per_token" not in prices and "output_cost_per_token" not in prices:
            return None
        return float(prices.get("input_cost_per_token") or 0), float(prices.get("output_cost_per_token") or 0)

    @property
    def file_unit_prices(self) -> dict[str, Any]:
        """Per-unit prices set in the file (`litellm_params` wins over `model_info`)."""
        prices = {**self.model_info, **self.params}
        return {key: prices[key] for key in PRICE_KEYS if key in prices}

    @property
    def server(self) -> tuple[str, int | None] | None:
        """The provider's host and explicit port, from the deployment's base URL (never its
        userinfo); None when the file names none and LiteLLM picks the URL itself."""
        base = str(self.params.get("api_base") or self.params.get("base_url") or "")
        if not base and self.provider == "anthropic":
            base = ANTHROPIC_DEFAULT_BASE
        try:
            parts = urlsplit(base if "://" in base else f"//{base}")
            host, port = parts.hostname, parts.port
        except ValueError:  # a port that is not a number
            return None
        return (host, port) if host else None

    @property
    def target(self) -> str:
        """What the provider is called on a dependency map: `host[:port]`, else the provider's name."""
        server = self.server
        if server is None:
            return self.provider
        host, port = server
        return f"{host}:{port}" if port is not None else host


class _StrategyArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl: float = Field(3600.0, gt=0)  # latency samples older than this are forgotten
    lowest_latency_buffer: float = Field(0.0, ge=0)  # pick among deployments within (1+buffer)x the best


FallbackList = list[dict[str, list[str]]]


class RouterSettings(BaseModel):
    """`router_settings`: the subset of LiteLLM Router's arguments Cirrus implements, same meanings."""

    model_config = ConfigDict(extra="forbid")

    routing_strategy: Strategy = "simple-shuffle"
    routing_strategy_args: _StrategyArgs = Field(default_factory=_StrategyArgs)
    num_retries: int = Field(DEFAULT_NUM_RETRIES, ge=0, le=10)
    timeout: float = Field(DEFAULT_TIMEOUT_S, gt=0)
    stream_timeout: float | None = Field(None, gt=0)
    retry_after: float = Field(0.0, ge=0)  # the least a retry waits
    allowed_fails: int | None = Field(None, ge=0)
    cooldown_time: float = Field(DEFAULT_COOLDOWN_S, ge=0)
    disable_cooldowns: bool = False
    fallbacks: FallbackList = Field(default_factory=list)
    context_window_fallbacks: FallbackList | None = None
    content_policy_fallbacks: FallbackList | None = None
    default_fallbacks: list[str] = Field(default_factory=list)
    max_fallbacks: int = Field(DEFAULT_MAX_FALLBACKS, ge=0, le=20)
    enable_pre_call_checks: bool = False  # skip deployments whose context window the prompt exceeds


# LiteLLM proxy's `litellm_settings` that have a router equivalent; the rest would change LiteLLM
# process-wide, which Cirrus never does.
_LITELLM_SETTINGS = {"num_retries": "num_retries", "request_timeout": "timeout"}


@dataclass(frozen=True)
class RoutingTable:
    """Everything the router reads from the file."""

    deployments: tuple[Deployment, ...]
    settings: RouterSettings
    drop_params: bool = False

    def groups(self) -> dict[str, list[Deployment]]:
        out: dict[str, list[Deployment]] = {}
        for deployment in self.deployments:
            out.setdefault(deployment.model_name, []).append(deployment)
        return out

    @property
    def needs_litellm(self) -> bool:
        """Whether LiteLLM should be imported at once. An Anthropic deployment serving Messages
        natively needs it only for a chat completion, so it imports LiteLLM on its first one."""
        return any(d.adapter == "litellm" and not d.native_messages for d in self.deployments)


def read_routing(config: ModelConfig, environ: Mapping[str, str] | None = None) -> RoutingTable:
    """The file's deployments and router settings; raises ConfigError naming what is wrong."""
    environ = os.environ if environ is None else environ
    raw_settings = dict(config.router_settings)
    drop_params = False
    unsupported = []
    for key, value in config.litellm_settings.items():
        if key in _LITELLM_SETTINGS:
            raw_settings.setdefault(_LITELLM_SETTINGS[key], value)
        elif key == "drop_params":
            drop_params = bool(value)
        else:
            unsupported.append(key)
    if unsupported:
        raise ConfigError(
            f"litellm_settings keys {sorted(unsupported)} would change LiteLLM process-wide; "
            "use router_settings or a deployment's litellm_params instead"
        )
    known = set(RouterSettings.model_fields)
    unknown = sorted(set(raw_settings) - known)
    if unknown:
        raise ConfigError(
            f"router_settings keys Cirrus does not implement: {unknown}; supported: {sorted(known)}"
        )
    try:
        settings = RouterSettings.model_validate(raw_settings)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "router_settings")) from None
    deployments = tuple(
        _deployment(entry.model_name, entry.litellm_params.model_dump(), entry.model_info, settings, environ)
        for entry in config.model_list
    )
    ids = [d.id for d in deployments]
    if len(set(ids)) != len(ids):
        duplicate = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigError(f"model_list has deployments with the same model_info.id: {duplicate}")
    names = {d.model_name for d in deployments}
    for key in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
        for entry in getattr(settings, key) or []:
            for source, targets in entry.items():
                missing = [t for t in [source, *targets] if t not in names and t != "*"]
                if missing:
                    raise ConfigError(f"router_settings.{key} names models not in model_list: {missing}")
    return RoutingTable(deployments, settings, drop_params)


def _deployment(
    name: str,
    params: dict[str, Any],
    model_info: Mapping[str, Any],
    settings: RouterSettings,
    environ: Mapping[str, str],
) -> Deployment:
    resolved = {key: _resolve(value, environ) for key, value in params.items()}
    litellm_model = str(resolved["model"])
    provider, _, upstream = litellm_model.partition("/")
    if not upstream:
        provider, upstream = "", litellm_model  # LiteLLM infers the provider from the name
    forced = str(model_info.get("adapter") or "").strip().lower()
    if forced not in ("", "litellm", "native"):
        raise ConfigError(f"model {name!r}: model_info.adapter must be `litellm` or `native`, not {forced!r}")
    adapter: Adapter = "openai_wire" if provider in NATIVE_PROVIDERS and forced != "litellm" else "litellm"
    if forced == "native" and adapter != "openai_wire":
        raise ConfigError(
            f"model {name!r}: only `openai/` and `azure/` deployments speak OpenAI's wire format natively"
        )
    body_defaults: dict[str, Any] = {}
    if adapter == "openai_wire":
        unknown = sorted(set(resolved) - _ROUTING_PARAMS - _BODY_DEFAULTS)
        if unknown:
            raise ConfigError(
                f"model {name!r}: litellm_params {unknown} mean nothing to the native OpenAI adapter; "
                "remove them, or serve this deployment through LiteLLM with `model_info: {adapter: litellm}`"
            )
        body_defaults = {k: v for k, v in resolved.items() if k in _BODY_DEFAULTS}
        if provider == "openai":
            resolved.setdefault("api_base", resolved.get("base_url") or OPENAI_DEFAULT_BASE)
            if "api_key" not in resolved and environ.get("OPENAI_API_KEY"):
                resolved["api_key"] = environ["OPENAI_API_KEY"]  # what LiteLLM and the SDK read too
        else:
            resolved.setdefault(
                "api_base", environ.get("AZURE_API_BASE") or environ.get("AZURE_OPENAI_ENDPOINT")
            )
            if not resolved.get("api_base"):
                raise ConfigError(f"model {name!r}: an `azure/` deployment needs `api_base`")
            resolved.setdefault("api_version", environ.get("AZURE_API_VERSION") or AZURE_DEFAULT_API_VERSION)
            if "api_key" not in resolved and environ.get("AZURE_API_KEY"):
                resolved["api_key"] = environ["AZURE_API_KEY"]
    native_messages = provider == "anthropic" and forced != "litellm"
    if native_messages and "api_key" not in resolved and environ.get("ANTHROPIC_API_KEY"):
        resolved["api_key"] = environ["ANTHROPIC_API_KEY"]  # what LiteLLM and Anthropic's SDK read too
    native_responses = adapter == "openai_wire" and _lists_responses(name, model_info)
    timeout = _number(name, resolved, model_info, "timeout") or settings.timeout
    stream_timeout = (
        _number(name, resolved, model_info, "stream_timeout") or settings.stream_timeout or timeout
    )
    return Deployment(
        id=str(model_info.get("id") or _stable_id(name, params)),
        model_name=name,
        provider=provider or "unknown",
        upstream_model=upstream,
        litellm_model=litellm_model,
        adapter=adapter,
        params=resolved,
        model_info=dict(model_info),
        timeout=timeout,
        stream_timeout=stream_timeout,
        weight=_number(name, resolved, model_info, "weight"),
        rpm=_int(name, resolved, model_info, "rpm"),
        tpm=_int(name, resolved, model_info, "tpm"),
        cooldown_time=_number(name, resolved, model_info, "cooldown_time"),
        allowed_fails=_int(name, {}, model_info, "allowed_fails"),
        body_defaults=body_defaults,
        native_messages=native_messages,
        native_responses=native_responses,
    )


def _lists_responses(name: str, model_info: Mapping[str, Any]) -> bool:
    """`model_info.supported_endpoints` (LiteLLM's list of OpenAI paths) names `/v1/responses`."""
    endpoints = model_info.get("supported_endpoints")
    if endpoints is None:
        return False
    if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
        raise ConfigError(f"model {name!r}: model_info.supported_endpoints must be a list of paths")
    return "/v1/responses" in endpoints


def _resolve(value: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str) and (match := _ENV_REF.match(value)):
        return environ[match.group(1)]  # load_model_config has checked that it is set
    return value


def _number(name: str, params: Mapping[str, Any], info: Mapping[str, Any], key: str) -> float | None:
    value = params.get(key, info.get(key))
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"model {name!r}: `{key}` must be a number") from None
    if number < 0:
        raise ConfigError(f"model {name!r}: `{key}` must not be negative")
    return number


def _int(name: str, params: Mapping[str, Any], info: Mapping[str, Any], key: str) -> int | None:
    number = _number(name, params, info, key)
    return None if number is None else int(number)


def _stable_id(name: str, params: Mapping[str, Any]) -> str:
    """An id for a deployment without `model_info.id`: the same in every process and restart."""
    public = {k: v for k, v in params.items() if k not in _SECRETS}  # a hash must not confirm a guessed key
    canonical = json.dumps({"model_name": name, **public}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
