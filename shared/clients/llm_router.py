"""LLMRouter on LiteLLM's Router: the only module that imports `litellm`.

`import litellm` costs seconds and hundreds of MB, so it happens when the first router is built
(first model call, or `/health/ready`), never on the import path of anything else.

LiteLLM's response objects are not OpenAI's wire shape as dumped (`provider_specific_fields`,
`refusal` moved, `logprobs` missing, usage chunks with a fake choice). This adapter turns them
into `openai.types` objects that validate against OpenAI's published schemas.
"""

from __future__ import annotations

import contextlib
import email.utils
import inspect
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.completion_usage import CompletionUsage

from shared.clients.protocols import ChatResult, ServedBy
from shared.config import ConfigError, ModelConfig
from shared.errors import (
    CirrusError,
    InvalidRequestError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)

log = logging.getLogger("cirrus.llm")

DEFAULT_TIMEOUT_S = 120.0  # Azure's front end drops HTTP requests at 230 s anyway
# Router arguments a model file may not set: they replace the file itself or change LiteLLM's
# process-wide logging.
_FORBIDDEN_ROUTER_SETTINGS = frozenset({"model_list", "set_verbose", "debug_level"})
# LiteLLM proxy's `litellm_settings` that have a per-router equivalent; other keys would change
# library-wide state, which Cirrus does not do.
_LITELLM_SETTINGS_TO_ROUTER = {"num_retries": "num_retries", "request_timeout": "timeout"}
_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


def _import_litellm() -> Any:
    # Without this LiteLLM downloads its model price list from the internet at import.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # LiteLLM logs every call at INFO through its own handler; Cirrus logs what matters itself.
    os.environ.setdefault("LITELLM_LOG", "WARNING")
    import litellm  # noqa: PLC0415 - deliberately lazy, see the module docstring

    return litellm


class LiteLLMRouter:
    """Routes requests for the file's public model names through one `litellm.Router`."""

    def __init__(self, config: ModelConfig) -> None:
        self._litellm = _import_litellm()
        kwargs, self._call_defaults = _router_arguments(config, self._litellm.Router)
        self._router = self._litellm.Router(
            model_list=[d.model_dump(exclude_none=True) for d in config.model_list], **kwargs
        )

    async def chat(self, params: Mapping[str, Any]) -> ChatResult:
        model = str(params["model"])
        try:
            response = await self._router.acompletion(**{**self._call_defaults, **params, "stream": False})
        except Exception as exc:
            raise self._map_error(exc) from exc
        hidden = getattr(response, "_hidden_params", None) or {}
        completion = ChatCompletion.model_validate(normalise_completion(response.model_dump(), model))
        return ChatResult(completion, _served_by(model, hidden))

    async def chat_stream(self, params: Mapping[str, Any]) -> _LiteLLMChatStream:
        model = str(params["model"])
        client_options = dict(params.get("stream_options") or {})
        upstream = {
            **self._call_defaults,
            **params,
            "stream": True,
            # Always ask for usage: Cirrus accounts for every stream, even if the client does not.
            "stream_options": {**client_options, "include_usage": True},
        }
        try:
            wrapper = await self._router.acompletion(**upstream)
        except Exception as exc:
            raise self._map_error(exc) from exc
        hidden = getattr(wrapper, "_hidden_params", None) or {}
        return _LiteLLMChatStream(
            wrapper,
            served_by=_served_by(model, hidden),
            forward_usage=bool(client_options.get("include_usage")),
            map_error=self._map_error,
        )

    async def aclose(self) -> None:
        # A Router hooks itself into LiteLLM's global callback lists; this unhooks it.
        self._router.discard()

    def _map_error(self, exc: BaseException) -> CirrusError | BaseException:
        return map_litellm_error(self._litellm, exc)


class _LiteLLMChatStream:
    """Iterates LiteLLM's stream wrapper as OpenAI chunks; see `ChatStream` in protocols."""

    def __init__(self, wrapper: Any, *, served_by: ServedBy, forward_usage: bool, map_error: Any) -> None:
        self._wrapper = wrapper
        self._forward_usage = forward_usage
        self._map_error = map_error
        self.served_by = served_by
        self.usage: CompletionUsage | None = None
        self.finish_reasons: list[str] = []

    async def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        try:
            async for raw in self._wrapper:
                chunk = normalise_chunk(raw.model_dump(), self.served_by.model, include_usage=True)
                if chunk["usage"]:
                    self.usage = CompletionUsage.model_validate(chunk["usage"])
                self.finish_reasons.extend(
                    c["finish_reason"] for c in chunk["choices"] if c.get("finish_reason")
                )
                if not self._forward_usage:
                    if not chunk["choices"]:
                        continue  # the usage-only chunk the client did not ask for
                    del chunk["usage"]
                yield ChatCompletionChunk.model_validate(chunk)
        except CirrusError:
            raise
        except Exception as exc:
            raise self._map_error(exc) from exc
        if not self.finish_reasons:
            # The connection ended cleanly but the answer did not: never pass that off as complete.
            raise UpstreamError("The model provider ended the stream before the answer was complete.")

    async def aclose(self) -> None:
        closer = getattr(self._wrapper, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()


def _router_arguments(config: ModelConfig, router_cls: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """Router kwargs and per-call defaults from the file; fails fast on what Cirrus cannot honour."""
    accepted = set(inspect.signature(router_cls.__init__).parameters) - {"self"}
    settings = dict(config.router_settings)
    bad = sorted((set(settings) - accepted) | (set(settings) & _FORBIDDEN_ROUTER_SETTINGS))
    if bad:
        raise ConfigError(f"router_settings has keys Cirrus does not pass to LiteLLM's Router: {bad}")
    call_defaults: dict[str, Any] = {}
    unsupported = []
    for key, value in config.litellm_settings.items():
        if key in _LITELLM_SETTINGS_TO_ROUTER:
            settings.setdefault(_LITELLM_SETTINGS_TO_ROUTER[key], value)
        elif key == "drop_params":
            call_defaults["drop_params"] = bool(value)
        else:
            unsupported.append(key)
    if unsupported:
        raise ConfigError(
            f"litellm_settings keys {sorted(unsupported)} would change LiteLLM process-wide; "
            "use router_settings or a deployment's litellm_params instead"
        )
    settings.setdefault("timeout", DEFAULT_TIMEOUT_S)
    return settings, call_defaults


def _served_by(model: str, hidden: Mapping[str, Any]) -> ServedBy:
    return ServedBy(
        model=model,
        deployment=str(hidden.get("model_id") or "unknown"),
        provider=str(hidden.get("custom_llm_provider") or "unknown"),
        upstream_model=str(hidden.get("litellm_model_name") or hidden.get("model") or "unknown"),
    )


# --- normalising LiteLLM's objects to OpenAI's wire shape --------------------------------------


def normalise_completion(raw: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A `CreateChatCompletionResponse` dict from LiteLLM's `ModelResponse.model_dump()`."""
    out: dict[str, Any] = {
        "id": raw.get("id") or "chatcmpl-cirrus",
        "object": "chat.completion",
        "created": int(raw.get("created") or time.time()),
        "model": model,
        "choices": [_choice(c) for c in raw.get("choices") or []],
    }
    if usage := _usage(raw.get("usage")):
        out["usage"] = usage
    _copy_strings(raw, out, "system_fingerprint", "service_tier")
    return out


def normalise_chunk(raw: Mapping[str, Any], model: str, include_usage: bool) -> dict[str, Any]:
    """A `CreateChatCompletionStreamResponse` dict from one LiteLLM stream chunk."""
    usage = _usage(raw.get("usage"))
    choices = [_chunk_choice(c) for c in raw.get("choices") or []]
    if usage:
        # LiteLLM attaches the usage to a placeholder choice; OpenAI sends it with no choices.
        choices = [c for c in choices if c["delta"] or c["finish_reason"]]
    out: dict[str, Any] = {
        "id": raw.get("id") or "chatcmpl-cirrus",
        "object": "chat.completion.chunk",
        "created": int(raw.get("created") or time.time()),
        "model": model,
        "choices": choices,
    }
    if include_usage:
        out["usage"] = usage
    _copy_strings(raw, out, "system_fingerprint", "service_tier")
    return out


def _choice(raw: Mapping[str, Any]) -> dict[str, Any]:
    message = raw.get("message") or {}
    specific = message.get("provider_specific_fields") or {}
    out_message: dict[str, Any] = {
        "role": "assistant",
        "content": message.get("content"),
        "refusal": message.get("refusal", specific.get("refusal")),
    }
    if tool_calls := message.get("tool_calls"):
        out_message["tool_calls"] = [_tool_call(t) for t in tool_calls]
    if function_call := message.get("function_call"):
        out_message["function_call"] = {
            "name": function_call.get("name") or "",
            "arguments": function_call.get("arguments") or "",
        }
    for key in ("annotations", "audio"):
        if message.get(key):
            out_message[key] = message[key]
    return {
        "index": int(raw.get("index") or 0),
        "message": out_message,
        "finish_reason": _finish_reason(raw.get("finish_reason")) or "stop",
        "logprobs": raw.get("logprobs"),
    }


def _chunk_choice(raw: Mapping[str, Any]) -> dict[str, Any]:
    delta_in = raw.get("delta") or {}
    delta: dict[str, Any] = {}
    for key in ("role", "content", "refusal"):
        if delta_in.get(key) is not None:
            delta[key] = delta_in[key]
    if tool_calls := delta_in.get("tool_calls"):
        delta["tool_calls"] = [_tool_call_delta(t) for t in tool_calls]
    if function_call := delta_in.get("function_call"):
        delta["function_call"] = {k: v for k, v in function_call.items() if k in ("name", "arguments") and v}
    return {
        "index": int(raw.get("index") or 0),
        "delta": delta,
        "finish_reason": _finish_reason(raw.get("finish_reason")),
        "logprobs": raw.get("logprobs"),
    }


def _tool_call(raw: Mapping[str, Any]) -> dict[str, Any]:
    function = raw.get("function") or {}
    return {
        "id": raw.get("id") or "",
        "type": "function",
        "function": {"name": function.get("name") or "", "arguments": function.get("arguments") or ""},
    }


def _tool_call_delta(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"index": int(raw.get("index") or 0)}
    if raw.get("id"):
        out["id"] = raw["id"]
        out["type"] = "function"
    function = raw.get("function") or {}
    fn = {k: function[k] for k in ("name", "arguments") if function.get(k) is not None}
    if fn:
        out["function"] = fn
    return out


def _usage(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not raw:
        return None
    out: dict[str, Any] = {
        "prompt_tokens": int(raw.get("prompt_tokens") or 0),
        "completion_tokens": int(raw.get("completion_tokens") or 0),
        "total_tokens": int(raw.get("total_tokens") or 0),
    }
    for key in ("prompt_tokens_details", "completion_tokens_details"):
        details = {k: v for k, v in (raw.get(key) or {}).items() if isinstance(v, int)}
        if details:
            out[key] = details
    return out


def _finish_reason(value: Any) -> str | None:
    if value is None:
        return None
    return value if value in _FINISH_REASONS else "stop"


def _copy_strings(raw: Mapping[str, Any], out: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if isinstance(raw.get(key), str):
            out[key] = raw[key]


# --- errors ---------------------------------------------------------------------------------

_LITELLM_PREFIX = re.compile(r"^(?:litellm\.\w+:\s*)?(?:\w+Error:\s*)?(?:\w+Exception\s*-\s*)?")
_LITELLM_SUFFIX = re.compile(r"\s*(?:Received Model Group=|LiteLLM Retried:|model_group=).*$", re.S)


# One branch per LiteLLM error class reads better than a table of predicates.
def map_litellm_error(litellm: Any, exc: BaseException) -> CirrusError | BaseException:  # noqa: PLR0911
    """Cirrus's error for a LiteLLM exception; anything unrecognised is returned unchanged."""
    if isinstance(exc, CirrusError):
        return exc
    if isinstance(exc, litellm.Timeout):
        return UpstreamTimeoutError("The model provider did not answer in time.")
    if isinstance(exc, litellm.RateLimitError):
        return UpstreamRateLimitError(
            "The model provider is rate limiting requests; retry after the indicated delay.",
            retry_after=retry_after_seconds(_response_headers(exc)),
        )
    if isinstance(exc, litellm.ContextWindowExceededError):
        return InvalidRequestError(provider_message(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, litellm.ContentPolicyViolationError):
        return InvalidRequestError(provider_message(exc), code="content_policy_violation")
    if isinstance(exc, litellm.AuthenticationError | litellm.PermissionDeniedError | litellm.NotFoundError):
        # The client's key is fine: Cirrus's provider credentials or deployment name are not.
        log.warning("provider rejected Cirrus's credentials or deployment: %s", type(exc).__name__)
        return UpstreamError("The model provider rejected the request's deployment or credentials.")
    if isinstance(exc, litellm.BadRequestError | litellm.UnprocessableEntityError):
        return InvalidRequestError(provider_message(exc))
    if isinstance(exc, litellm.ServiceUnavailableError):
        return UpstreamError(
            "The model provider is unavailable.", retry_after=retry_after_seconds(_response_headers(exc))
        )
    if isinstance(exc, litellm.APIConnectionError | litellm.InternalServerError | litellm.APIError):
        return UpstreamError("The model provider returned an error.")
    return exc


def provider_message(exc: BaseException) -> str:
    """The provider's own words from a LiteLLM error, without LiteLLM's decorations."""
    text = str(getattr(exc, "message", None) or exc)
    text = _LITELLM_SUFFIX.sub("", _LITELLM_PREFIX.sub("", text, count=1)).strip()
    return text or "The model provider rejected the request."


def _response_headers(exc: BaseException) -> Mapping[str, str]:
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None and (response := getattr(exc, "response", None)) is not None:
        headers = getattr(response, "headers", None)
    return headers or {}


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (delta seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    with contextlib.suppress(TypeError, ValueError):
        if "retry-after-ms" in lowered:
            return max(0.0, float(lowered["retry-after-ms"]) / 1000)
    value = lowered.get("retry-after")
    if value is None:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    return None
