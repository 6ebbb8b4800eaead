"""The LiteLLM adapter: every provider that does not speak OpenAI's wire format.

Anthropic, Bedrock, Vertex, Gemini, Cohere, Mistral, ...: one deployment per call through
`litellm.acompletion`, `atext_completion` and `aembedding`, with LiteLLM's own retries off (Cirrus's
router retries, falls back and cools down for both adapters alike). This is the only module that
imports `litellm`, and only when the model file has such a deployment: the import (about 3 s and
220 MB) starts in a background thread when the router is built, so the first call rarely waits.

The rest of the surface goes through `amoderation`, `aimage_generation`, `atranscription`,
`aspeech` and `arerank`, answers dumped as plain dicts for the router to shape. Where LiteLLM
falls short of that promise, the adapter makes up for it:
- LiteLLM's moderation, and its image generation for OpenAI-style providers, build an OpenAI SDK
  client with the SDK's two retries of its own; those calls get a client of the adapter's instead,
  per deployment, that does not retry;
- LiteLLM reranks with no `openai/` provider: an `openai/` deployment forced through LiteLLM is
  reranked as `hosted_vllm/` (the same `/rerank` of an OpenAI-style server, as vLLM serves it);
- `aspeech` reads the whole audio before it returns, so speech through LiteLLM is relayed as one
  block, not as it is made.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from shared.clients.llm import errors
from shared.clients.llm.deployments import Deployment
from shared.clients.llm.errors import AttemptFailed, client_error, retry_after_seconds
from shared.clients.llm.operations import OpenedBytes, Operation
from shared.clients.llm.shapes import (
    normalise_chunk,
    normalise_completion,
    normalise_embeddings,
    normalise_text_chunk,
    normalise_text_completion,
)
from shared.clients.protocols import UploadedFile
from shared.errors import CirrusError, UpstreamError, UpstreamRateLimitError, UpstreamTimeoutError

log = logging.getLogger("cirrus.llm")

# Cirrus's routing keys in `litellm_params`: the router has used them; LiteLLM must not see them.
_ROUTER_ONLY = frozenset({"rpm", "tpm", "weight", "cooldown_time", "order"})


def _import_litellm() -> Any:
    # Without this LiteLLM downloads its model price list from the internet at import.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # LiteLLM logs every call at INFO through its own handler; Cirrus logs what matters itself.
    os.environ.setdefault("LITELLM_LOG", "WARNING")
    import litellm  # noqa: PLC0415 - deliberately lazy, see the module docstring

    return litellm


@functools.cache
def litellm_import() -> concurrent.futures.Future[Any]:
    """The process's one import of LiteLLM, started now in a background thread."""
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="litellm-import")
    future = executor.submit(_import_litellm)
    executor.shutdown(wait=False)
    return future


class LiteLLMAdapter:
    """See the module docstring. Raises `AttemptFailed` for every provider failure."""

    def __init__(self, *, drop_params: bool = False, loader: Callable[[], Any] | None = None) -> None:
        self._drop_params = drop_params
        self._future = litellm_import() if loader is None else None
        self._loader = loader
        self._sdk_clients: dict[str, Any] = {}  # deployment id -> an OpenAI SDK client, retries off

    async def ready(self) -> None:
        """Wait for the import (health checks; the first call waits anyway)."""
        await self._litellm()

    async def _litellm(self) -> Any:
        if self._future is None:
            assert self._loader is not None
            return self._loader()
        return await asyncio.wrap_future(self._future)

    async def complete(self, deployment: Deployment, op: Operation, params: dict[str, Any]) -> dict[str, Any]:
        extra = await self._surface_kwargs(deployment, op) if op not in _TOKEN_OPERATIONS else {}
        _, response = await self._call(deployment, op, params, deployment.timeout, **extra)
        raw = response.model_dump()
        if op is Operation.CHAT:
            return normalise_completion(raw, deployment.model_name)
        if op is Operation.TEXT:
            return normalise_text_completion(raw, deployment.model_name)
        if op is Operation.EMBED:
            return normalise_embeddings(raw, deployment.model_name, "float")
        return raw  # dict-shaped already; the router shapes it (`surface_shapes`)

    async def complete_form(
        self, deployment: Deployment, op: Operation, params: dict[str, Any], upload: UploadedFile
    ) -> dict[str, Any]:
        """`atranscription` with a fresh reader of the spooled file, which the OpenAI SDK inside
        sends a chunk at a time."""
        with upload.open() as file:
            _, response = await self._call(
                deployment, op, params, deployment.timeout, file=(upload.filename, file, upload.content_type)
            )
        return response.model_dump()

    async def open_bytes(self, deployment: Deployment, op: Operation, params: dict[str, Any]) -> OpenedBytes:
        _, response = await self._call(deployment, op, params, deployment.stream_timeout)
        headers = getattr(getattr(response, "response", None), "headers", None) or {}
        content_type = headers.get("content-type") or "application/octet-stream"
        return OpenedBytes(content_type, _one_block(response.content))

    async def _surface_kwargs(self, deployment: Deployment, op: Operation) -> dict[str, Any]:
        """What LiteLLM needs besides the request to keep its promises (see the module docstring)."""
        if op is Operation.RERANK and deployment.provider == "openai":
            return {"model": f"hosted_vllm/{deployment.upstream_model}"}
        if op is Operation.MODERATE or (op is Operation.IMAGE and deployment.provider == "openai"):
            return {"client": self._sdk_client(await self._litellm(), deployment)}
        return {}

    def _sdk_client(self, litellm: Any, deployment: Deployment) -> Any:
        client = self._sdk_clients.get(deployment.id)
        if client is None:
            params = deployment.params
            _, _, key, base = litellm.get_llm_provider(
                model=deployment.litellm_model, api_base=params.get("api_base"), api_key=params.get("api_key")
            )
            client = self._sdk_clients[deployment.id] = _retryless_client()(
                api_key=key or params.get("api_key") or os.environ.get("OPENAI_API_KEY") or "unset",
                base_url=base or params.get("api_base") or None,
                organization=params.get("organization"),
                default_headers=params.get("extra_headers"),
                timeout=deployment.timeout,
                max_retries=0,
            )
        return client

    async def open_stream(
        self, deployment: Deployment, op: Operation, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        litellm, wrapper = await self._call(deployment, op, params, deployment.stream_timeout)
        normalise = normalise_chunk if op is Operation.CHAT else normalise_text_chunk
        return _chunks(litellm, wrapper, normalise, deployment.model_name)

    async def _call(
        self, deployment: Deployment, op: Operation, params: Mapping[str, Any], seconds: float, **extra: Any
    ) -> tuple[Any, Any]:
        """LiteLLM's answer (or stream wrapper) for one deployment, and the module itself; LiteLLM
        enforces `seconds` as the provider call's timeout. `extra` overrides the arguments."""
        litellm = await self._litellm()
        try:
            kwargs = self._kwargs(deployment, params, seconds)
            kwargs.update(extra)
            return litellm, await _method(litellm, op)(**kwargs)
        except Exception as exc:
            raise failure(litellm, exc) from exc

    def _kwargs(self, deployment: Deployment, params: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        kwargs = {k: v for k, v in deployment.params.items() if k not in _ROUTER_ONLY}
        kwargs.update(params)
        kwargs.pop("metadata", None)  # LiteLLM's own field: it would not reach the provider anyway
        kwargs["model"] = deployment.litellm_model
        kwargs["timeout"] = timeout
        kwargs["num_retries"] = 0  # the router retries
        kwargs["max_retries"] = 0  # and so must the provider SDK inside LiteLLM not
        if self._drop_params:
            kwargs.setdefault("drop_params", True)
        return kwargs

    async def aclose(self) -> None:
        clients, self._sdk_clients = list(self._sdk_clients.values()), {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()


_TOKEN_OPERATIONS = frozenset({Operation.CHAT, Operation.TEXT, Operation.EMBED})
_SURFACE_METHODS = {
    Operation.MODERATE: "amoderation",
    Operation.IMAGE: "aimage_generation",
    Operation.TRANSCRIBE: "atranscription",
    Operation.SPEECH: "aspeech",
    Operation.RERANK: "arerank",
}


def _method(litellm: Any, op: Operation) -> Any:
    if op is Operation.CHAT:
        return litellm.acompletion
    if op is Operation.TEXT:
        return litellm.atext_completion
    if op is Operation.EMBED:
        return litellm.aembedding
    return getattr(litellm, _SURFACE_METHODS[op])


async def _one_block(content: bytes) -> AsyncIterator[bytes]:
    yield content


@functools.cache
def _retryless_client() -> type:
    """An OpenAI SDK client class whose `max_retries` stays 0: LiteLLM sets the attribute on a
    client it is handed (its image generation sets 2), and Cirrus's router does the retrying."""
    from openai import AsyncOpenAI  # noqa: PLC0415 - loaded with LiteLLM, which depends on it

    class RetrylessOpenAI(AsyncOpenAI):
        @property
        def max_retries(self) -> int:
            return 0

        @max_retries.setter
        def max_retries(self, value: int) -> None:
            pass

    return RetrylessOpenAI


async def _chunks(
    litellm: Any,
    wrapper: Any,
    normalise: Callable[[Mapping[str, Any], str, bool], dict[str, Any]],
    model: str,
) -> AsyncIterator[dict[str, Any]]:
    try:
        async for raw in wrapper:
            yield normalise(raw.model_dump(), model, True)
    except AttemptFailed:
        raise
    except Exception as exc:
        raise failure(litellm, exc) from exc
    finally:
        closer = getattr(wrapper, "aclose", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer()


def failure(litellm: Any, exc: BaseException) -> AttemptFailed:
    """A LiteLLM exception as an attempt failure, with the provider's status for the router."""
    if type(exc).__module__.split(".")[0] == "openai":
        return _sdk_failure(exc)  # LiteLLM's moderation lets its SDK's errors through unmapped
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    error = map_litellm_error(litellm, exc)
    if not isinstance(error, CirrusError):
        log.warning("LiteLLM raised %s; treated as a provider error", type(exc).__name__, exc_info=exc)
        error = UpstreamError("The model provider returned an error.")
    if isinstance(exc, litellm.Timeout):
        status = 408
    elif isinstance(exc, litellm.APIConnectionError) and not isinstance(exc, litellm.Timeout):
        status = None  # no answer came: like a reset connection on the native adapter
    return AttemptFailed(error, status)


def _sdk_failure(exc: BaseException) -> AttemptFailed:
    """An OpenAI SDK error, read as the native adapter reads the same answer."""
    import openai  # noqa: PLC0415 - loaded with LiteLLM, which depends on it

    if isinstance(exc, openai.APITimeoutError):
        return errors.timed_out()
    if isinstance(exc, openai.APIStatusError):
        return errors.from_response(exc.status_code, exc.response.content, exc.response.headers)
    return errors.unreachable()


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
        return client_error(provider_message(exc), "context_length_exceeded")
    if isinstance(exc, litellm.ContentPolicyViolationError):
        return client_error(provider_message(exc), "content_policy_violation")
    if isinstance(exc, litellm.AuthenticationError | litellm.PermissionDeniedError | litellm.NotFoundError):
        # The client's key is fine: Cirrus's provider credentials or deployment name are not.
        log.warning("provider rejected Cirrus's credentials or deployment: %s", type(exc).__name__)
        return UpstreamError("The model provider rejected the request's deployment or credentials.")
    if isinstance(exc, litellm.BadRequestError | litellm.UnprocessableEntityError):
        return client_error(provider_message(exc))
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
    if text.startswith("{"):  # some of LiteLLM's handlers pass the provider's error body on as is
        with contextlib.suppress(ValueError):
            parsed = json.loads(text)
            detail = parsed.get("error", parsed) if isinstance(parsed, dict) else None
            if isinstance(detail, dict) and isinstance(detail.get("message"), str):
                text = detail["message"]
    return text or "The model provider rejected the request."


def _response_headers(exc: BaseException) -> Mapping[str, str]:
    headers = getattr(exc, "litellm_response_headers", None)
    if headers is None and (response := getattr(exc, "response", None)) is not None:
        headers = getattr(response, "headers", None)
    return headers or {}
