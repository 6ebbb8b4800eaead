"""LLMRouter on LiteLLM's Router: the only module that imports `litellm`.

`import litellm` costs seconds and hundreds of MB, so it happens when the first router is built
(first model call, or `/health/ready`), never on the import path of anything else.

LiteLLM's response objects are not OpenAI's wire shape as dumped (`provider_specific_fields`,
`refusal` moved, `logprobs` missing, usage chunks with a fake choice). This adapter turns them
into `openai.types` objects that validate against OpenAI's published schemas.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import inspect
import logging
import os
import re
import struct
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from openai.types import Completion, CompletionChoice, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.completion_usage import CompletionUsage

from shared.clients.protocols import (
    ChatResult,
    ChatStream,
    CompletionResult,
    CompletionStream,
    EmbeddingResult,
    ModelLimits,
    ServedBy,
)
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


_provider_spans: Any = None


def _trace_provider_calls(litellm: Any) -> None:
    """One CLIENT span per provider attempt (retries and fallbacks included), child of the model
    call's span: LiteLLM calls `log_pre_api_call` and its success/failure hooks in the caller's
    context. Registered once per process on LiteLLM's callback list, which only Cirrus's router uses."""
    global _provider_spans  # noqa: PLW0603 - one registration per process
    if _provider_spans is not None:
        return
    from litellm.integrations.custom_logger import CustomLogger  # noqa: PLC0415 - litellm is lazy
    from opentelemetry import trace  # noqa: PLC0415
    from opentelemetry.trace import SpanKind, StatusCode  # noqa: PLC0415

    tracer = trace.get_tracer("cirrus")

    class ProviderSpans(CustomLogger):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.open: dict[str, Any] = {}

        def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
            call_id = str(kwargs.get("litellm_call_id") or "")
            params = kwargs.get("litellm_params") or {}
            previous = self.open.pop(call_id, None)
            if previous is not None:  # a retry under the same call id: the last attempt failed
                previous.set_status(StatusCode.ERROR, "retried")
                previous.end()
            base = str(params.get("api_base") or "")
            self.open[call_id] = tracer.start_span(
                f"provider {kwargs.get('custom_llm_provider') or ''}".strip(),
                kind=SpanKind.CLIENT,
                attributes={
                    "gen_ai.provider.name": str(kwargs.get("custom_llm_provider") or "unknown"),
                    "gen_ai.request.model": str(model),
                    "server.address": base.split("://", 1)[-1].split("/", 1)[0],
                    "cirrus.deployment": str((params.get("model_info") or {}).get("id") or ""),
                },
            )

        async def async_log_success_event(
            self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
        ) -> None:
            span = self.open.pop(str(kwargs.get("litellm_call_id") or ""), None)
            if span is not None:
                span.end()

        async def async_log_failure_event(
            self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
        ) -> None:
            span = self.open.pop(str(kwargs.get("litellm_call_id") or ""), None)
            if span is not None:
                exc = kwargs.get("exception")
                span.set_status(StatusCode.ERROR, type(exc).__name__ if exc else "error")
                span.set_attribute("error.type", type(exc).__name__ if exc else "error")
                span.end()

    _provider_spans = ProviderSpans()
    litellm.callbacks.append(_provider_spans)


class LiteLLMRouter:
    """Routes requests for the file's public model names through one `litellm.Router`."""

    def __init__(self, config: ModelConfig) -> None:
        self._litellm = _import_litellm()
        _trace_provider_calls(self._litellm)
        kwargs, self._call_defaults = _router_arguments(config, self._litellm.Router)
        self._router = self._litellm.Router(
            model_list=[d.model_dump(exclude_none=True) for d in config.model_list], **kwargs
        )
        # LiteLLM gives deployments without `model_info.id` an id of its own; index by the final one.
        self._deployments: dict[str, dict[str, Any]] = {
            str(d["model_info"]["id"]): d for d in self._router.get_model_list()
        }
        self._limits: dict[str, ModelLimits] = {}
        self._prices: dict[str, tuple[float, float] | None] = {}
        self._fallbacks: dict[str, list[str]] = {}
        for entry in config.router_settings.get("fallbacks") or []:
            for name, targets in dict(entry).items():
                self._fallbacks.setdefault(str(name), []).extend(str(t) for t in targets)

    # --- calls ----------------------------------------------------------------------------

    async def chat(self, params: Mapping[str, Any]) -> ChatResult:
        response = await self._call(self._router.acompletion, params, stream=False)
        served_by = self._served_by(params["model"], response)
        body = normalise_completion(response.model_dump(), served_by.model)
        generated = "".join(
            (c["message"]["content"] or "")
            + "".join(t["function"]["arguments"] for t in c["message"].get("tool_calls", []))
            for c in body["choices"]
        )
        estimated = self._settle_usage(body, served_by.model, params.get("messages"), generated)
        return ChatResult(ChatCompletion.model_validate(body), served_by, estimated)

    async def chat_stream(self, params: Mapping[str, Any]) -> ChatStream:
        return await self._open_stream(self._router.acompletion, params, _CHAT)

    async def text_completion(self, params: Mapping[str, Any]) -> CompletionResult:
        response = await self._call(self._router.atext_completion, params, stream=False)
        served_by = self._served_by(params["model"], response)
        body = normalise_text_completion(response.model_dump(), served_by.model)
        generated = "".join(c["text"] for c in body["choices"])
        estimated = self._settle_usage(body, served_by.model, params.get("prompt"), generated)
        return CompletionResult(Completion.model_validate(body), served_by, estimated)

    async def text_completion_stream(self, params: Mapping[str, Any]) -> CompletionStream:
        return await self._open_stream(self._router.atext_completion, params, _TEXT)

    async def embed(self, params: Mapping[str, Any]) -> EmbeddingResult:
        upstream = dict(params)
        # Floats from every provider; base64 is encoded here, as not every provider offers it.
        encoding = upstream.pop("encoding_format", None) or "float"
        response = await self._call(self._router.aembedding, upstream)
        served_by = self._served_by(params["model"], response)
        body = normalise_embeddings(response.model_dump(), served_by.model, "float")
        parsed = CreateEmbeddingResponse.model_validate(body)  # checks the provider's answer
        if encoding == "base64":
            body = normalise_embeddings(body, served_by.model, "base64")
        return EmbeddingResult(body, parsed.usage.prompt_tokens, served_by)

    async def _call(self, method: Any, params: Mapping[str, Any], **fixed: Any) -> Any:
        try:
            return await method(**{**self._call_defaults, **params, **fixed})
        except Exception as exc:
            raise self._map_error(exc) from exc

    async def _open_stream(self, method: Any, params: Mapping[str, Any], kind: _StreamKind) -> _LiteLLMStream:
        client_options = dict(params.get("stream_options") or {})
        # Always ask for usage: Cirrus accounts for every stream, even if the client does not.
        options = {**client_options, "include_usage": True}
        wrapper = await self._call(method, params, stream=True, stream_options=options)
        return _LiteLLMStream(
            wrapper,
            kind,
            requested=str(params["model"]),
            forward_usage=bool(client_options.get("include_usage")),
            router=self,
            prompt=params.get("messages") or params.get("prompt"),
        )

    def _settle_usage(self, body: dict[str, Any], model: str, prompt: Any, generated: str) -> bool:
        """Count tokens when the provider reported none (LiteLLM fills in zeros); True if counted."""
        if (body.get("usage") or {}).get("total_tokens"):
            return False
        prompt_tokens = self.count_tokens(model, prompt) if isinstance(prompt, str | list) and prompt else 0
        output_tokens = self.count_tokens(model, generated) if generated else 0
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": prompt_tokens + output_tokens,
        }
        return True

    # --- model facts ----------------------------------------------------------------------

    def cost_usd(self, served_by: ServedBy, input_tokens: int, output_tokens: int) -> float | None:
        """USD for the tokens: the deployment's own prices from the file, else LiteLLM's price map."""
        deployment = self._deployments.get(served_by.deployment, {})
        prices = {**deployment.get("model_info", {}), **deployment.get("litellm_params", {})}
        if "input_cost_per_token" in prices or "output_cost_per_token" in prices:
            return input_tokens * float(prices.get("input_cost_per_token") or 0) + output_tokens * float(
                prices.get("output_cost_per_token") or 0
            )
        try:
            prompt_cost, completion_cost = self._litellm.cost_per_token(
                model=served_by.upstream_model,
                custom_llm_provider=served_by.provider,
                prompt_tokens=input_tokens,
                completion_tokens=output_tokens,
            )
        except Exception:  # a model LiteLLM has no price for: unknown, not free
            return None
        return float(prompt_cost) + float(completion_cost)

    def max_cost_usd(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """The most a call to `model` can cost: its priciest deployment, fallbacks included."""
        names, costs = [model, *self._fallbacks.get(model, [])], []
        for deployment_id, deployment in self._deployments.items():
            if deployment["model_name"] in names and (price := self._price(deployment_id)) is not None:
                costs.append(input_tokens * price[0] + output_tokens * price[1])
        return max(costs, default=None)

    def _price(self, deployment_id: str) -> tuple[float, float] | None:
        """USD per input and output token of a deployment: the file's prices, else LiteLLM's map."""
        if deployment_id not in self._prices:
            deployment = self._deployments[deployment_id]
            prices = {**deployment.get("model_info", {}), **deployment.get("litellm_params", {})}
            if "input_cost_per_token" not in prices and "output_cost_per_token" not in prices:
                with contextlib.suppress(Exception):  # unknown to LiteLLM: no price
                    prices = self._litellm.get_model_info(deployment["litellm_params"]["model"])
            per_input, per_output = prices.get("input_cost_per_token"), prices.get("output_cost_per_token")
            known = per_input is not None or per_output is not None
            self._prices[deployment_id] = (float(per_input or 0), float(per_output or 0)) if known else None
        return self._prices[deployment_id]

    def count_tokens(self, model: str, messages: Sequence[Mapping[str, Any]] | str) -> int:
        """Tokens of `messages` (or a prompt string) with the tokenizer of `model`'s deployment."""
        upstream = self._upstream_model(model)
        if isinstance(messages, str):
            return int(self._litellm.token_counter(model=upstream, text=messages))
        return int(self._litellm.token_counter(model=upstream, messages=list(messages)))

    def limits(self, model: str) -> ModelLimits:
        """The tightest input and output limits over `model`'s deployments (the file wins)."""
        # Fixed by the file and LiteLLM's model map, so worked out once per model, not per request.
        if model not in self._limits:
            self._limits[model] = self._work_out_limits(model)
        return self._limits[model]

    def _work_out_limits(self, model: str) -> ModelLimits:
        inputs, outputs = [], []
        for deployment in self._deployments.values():
            if deployment["model_name"] != model:
                continue
            info = dict(deployment.get("model_info") or {})
            with contextlib.suppress(Exception):  # unknown to LiteLLM: only the file's figures
                known = self._litellm.get_model_info(deployment["litellm_params"]["model"])
                info = {**{k: v for k, v in known.items() if v is not None}, **info}
            if isinstance(info.get("max_input_tokens"), int):
                inputs.append(info["max_input_tokens"])
            if isinstance(info.get("max_output_tokens"), int):
                outputs.append(info["max_output_tokens"])
        return ModelLimits(min(inputs, default=None), min(outputs, default=None))

    def _upstream_model(self, model: str) -> str:
        for deployment in self._deployments.values():
            if deployment["model_name"] == model:
                return str(deployment["litellm_params"]["model"])
        return model

    def _served_by(self, requested: str, response: Any) -> ServedBy:
        hidden = getattr(response, "_hidden_params", None) or {}
        headers = hidden.get("additional_headers") or {}
        deployment = self._deployments.get(str(hidden.get("model_id")), {})
        return ServedBy(
            model=str(deployment.get("model_name") or headers.get("x-litellm-model-group") or requested),
            deployment=str(hidden.get("model_id") or "unknown"),
            provider=str(hidden.get("custom_llm_provider") or "unknown"),
            upstream_model=str(hidden.get("litellm_model_name") or hidden.get("model") or "unknown"),
            fallbacks=int(headers.get("x-litellm-attempted-fallbacks") or 0),
            retries=int(headers.get("x-litellm-attempted-retries") or 0),
        )

    async def aclose(self) -> None:
        # A Router hooks itself into LiteLLM's global callback lists; this unhooks it.
        self._router.discard()

    def _map_error(self, exc: BaseException) -> CirrusError | BaseException:
        return map_litellm_error(self._litellm, exc)


@dataclass(frozen=True)
class _StreamKind:
    normalise: Callable[[Mapping[str, Any], str, bool], dict[str, Any]]
    parse: Callable[[Any], Any]
    text: Callable[[Mapping[str, Any]], str]  # the generated text in a normalised chunk


def _chat_text(chunk: Mapping[str, Any]) -> str:
    parts = []
    for choice in chunk["choices"]:
        delta = choice["delta"]
        parts.append(delta.get("content") or "")
        parts.extend((t.get("function") or {}).get("arguments") or "" for t in delta.get("tool_calls") or [])
    return "".join(parts)


class _LiteLLMStream:
    """Iterates LiteLLM's stream wrapper as OpenAI chunks; see `ModelStream` in protocols."""

    def __init__(
        self,
        wrapper: Any,
        kind: _StreamKind,
        *,
        requested: str,
        forward_usage: bool,
        router: LiteLLMRouter,
        prompt: Any,
    ) -> None:
        self._wrapper = wrapper
        self._requested = requested
        self._kind = kind
        self._forward_usage = forward_usage
        self._router = router
        self._prompt = prompt
        self._text: list[str] = []
        self.usage: CompletionUsage | None = None
        self.usage_estimated = False
        self.finish_reasons: list[str] = []

    @property
    def served_by(self) -> ServedBy:
        # Read afresh: a stream that fails before its first chunk is replaced by a fallback's.
        return self._router._served_by(self._requested, self._wrapper)

    async def __aiter__(self) -> AsyncIterator[Any]:
        model: str | None = None
        try:
            async for raw in self._wrapper:
                # Settled once the first chunk is in (any fallback has happened by then).
                model = model or self.served_by.model
                chunk = self._kind.normalise(raw.model_dump(), model, True)
                self._text.append(self._kind.text(chunk))
                if chunk.get("usage"):
                    self.usage = CompletionUsage.model_validate(chunk["usage"])
                self.finish_reasons.extend(
                    c["finish_reason"] for c in chunk["choices"] if c.get("finish_reason")
                )
                if not self._forward_usage:
                    if not chunk["choices"]:
                        continue  # the usage-only chunk the client did not ask for
                    chunk.pop("usage", None)
                yield self._kind.parse(chunk)
        except CirrusError:
            raise
        except Exception as exc:
            raise self._router._map_error(exc) from exc
        finally:
            self._settle_usage()
        if not self.finish_reasons:
            # The connection ended cleanly but the answer did not: never pass that off as complete.
            raise UpstreamError("The model provider ended the stream before the answer was complete.")

    def _settle_usage(self) -> None:
        """Without the provider's figures, count the prompt and what arrived with LiteLLM's tokenizer."""
        if self.usage is not None or self.usage_estimated:
            return
        with contextlib.suppress(Exception):
            model = self.served_by.model
            prompt = self._router.count_tokens(model, self._prompt) if self._prompt else 0
            output = self._router.count_tokens(model, "".join(self._text)) if any(self._text) else 0
            self.usage = CompletionUsage(
                prompt_tokens=prompt, completion_tokens=output, total_tokens=prompt + output
            )
            self.usage_estimated = True

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


def normalise_text_completion(raw: Mapping[str, Any], model: str) -> dict[str, Any]:
    """A legacy `CreateCompletionResponse` dict from LiteLLM's `TextCompletionResponse`."""
    out = _text_base(raw, model)
    out["choices"] = [{**c, "finish_reason": c["finish_reason"] or "stop"} for c in out["choices"]]
    if usage := _usage(raw.get("usage")):
        out["usage"] = usage
    return out


def normalise_text_chunk(raw: Mapping[str, Any], model: str, include_usage: bool) -> dict[str, Any]:
    """One legacy completion stream chunk; like OpenAI, `finish_reason` is null until the end."""
    out = _text_base(raw, model)
    usage = _usage(raw.get("usage"))
    if usage:
        out["choices"] = [c for c in out["choices"] if c["text"] or c["finish_reason"]]
    if include_usage:
        out["usage"] = usage
    return out


def _text_base(raw: Mapping[str, Any], model: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": raw.get("id") or "cmpl-cirrus",
        "object": "text_completion",
        "created": int(raw.get("created") or time.time()),
        "model": model,
        "choices": [
            {
                "text": c.get("text") or "",
                "index": int(c.get("index") or 0),
                "logprobs": c.get("logprobs"),
                "finish_reason": _finish_reason(c.get("finish_reason")),
            }
            for c in raw.get("choices") or []
        ],
    }
    _copy_strings(raw, out, "system_fingerprint")
    return out


def normalise_embeddings(raw: Mapping[str, Any], model: str, encoding_format: str) -> dict[str, Any]:
    """A `CreateEmbeddingResponse` dict; `base64` packs each vector as little-endian float32."""
    data = []
    for index, item in enumerate(raw.get("data") or []):
        vector = [float(v) for v in item.get("embedding") or []]
        embedding: Any = vector
        if encoding_format == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": int(item.get("index", index)), "embedding": embedding})
    usage = raw.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "total_tokens": int(usage.get("total_tokens") or prompt_tokens),
        },
    }


def _text_of_completion_chunk(chunk: Mapping[str, Any]) -> str:
    return "".join(c["text"] for c in chunk["choices"])


class _StreamingCompletionChoice(CompletionChoice):
    finish_reason: Literal["stop", "length", "content_filter"] | None = None  # type: ignore[assignment]


class TextCompletionChunk(Completion):
    """A legacy completion stream chunk: OpenAI sends `finish_reason: null` until the end, which
    `openai.types.Completion` does not allow."""

    choices: list[_StreamingCompletionChoice]  # type: ignore[assignment]


_CHAT = _StreamKind(normalise_chunk, ChatCompletionChunk.model_validate, _chat_text)
_TEXT = _StreamKind(normalise_text_chunk, TextCompletionChunk.model_validate, _text_of_completion_chunk)


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
