"""The native adapter: deployments that speak OpenAI's wire format (`openai/...`, `azure/...`).

OpenAI itself, Azure OpenAI, vLLM, Ollama's `/v1`, llama.cpp's server, LM Studio: the client's
validated body is forwarded with the deployment's model name, and the answer is parsed once with
orjson. Streams are decoded as their bytes arrive and each `data:` event is parsed once; nothing
waits for more than its own event and no SDK object is built.

Transport: one pooled `aiohttp.ClientSession` per adapter (the router, and so this adapter, is built
once per event loop), keep-alive on, its limits from Settings. aiohttp rather than httpx: measured
on the 2-core dev machine against the fake provider, httpx's client spent 0.6 ms of CPU per request
at concurrency 1 and 1.3 ms at 16, aiohttp 0.19 and 0.12 ms; on a hot path whose whole budget is a
few milliseconds, that difference is the budget.

Azure OpenAI: `{api_base}/openai/deployments/{deployment}/{path}?api-version=...`, or the v1 API
(`api_version: v1`, `/openai/v1/{path}` with the deployment as `model`); Responses, which Azure
serves per resource, at `{api_base}/openai/responses?api-version=...` with the deployment as
`model`. Authentication with `api_key` (the `api-key` header), a fixed `azure_ad_token`, a service
principal (`tenant_id`, `client_id`, `client_secret`), or, with none of them, Entra ID tokens from
the app's identity (managed identity in Azure, the developer's login locally) through
`azure-identity`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from shared.clients.llm import errors
from shared.clients.llm.deployments import Deployment
from shared.clients.llm.operations import OpenedBytes, Operation
from shared.clients.llm.shapes import complete_chat, complete_text
from shared.clients.llm.transport import Pool, json_object, sse_events
from shared.clients.protocols import UploadedFile

AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"
_V1_VERSIONS = frozenset({"v1", "latest", "preview"})
# Cirrus's own (sessions) and LiteLLM's (tags): never sent to a provider.
_NOT_FORWARDED = ("metadata",)
# Chat request defaults a deployment may set that mean the same in a Responses request.
_SAME_IN_RESPONSES = frozenset({"temperature", "top_p", "user", "service_tier", "parallel_tool_calls"})

TokenProvider = Callable[[], Awaitable[str]]
# Builds the app's Azure credential on first need (azure-identity imports take a quarter second).
CredentialFactory = Callable[[], Any]


@dataclass(frozen=True)
class _Target:
    url: str
    headers: dict[str, str]
    needs_token: bool  # Entra ID: a bearer token is added per request
    model_in_body: bool
    defaults: dict[str, Any]  # the deployment's request defaults, as this operation names them
    json_timeout: aiohttp.ClientTimeout
    stream_timeout: aiohttp.ClientTimeout


class OpenAIWireAdapter:
    """See the module docstring. Raises `errors.AttemptFailed` for every provider failure."""

    def __init__(
        self,
        *,
        max_connections: int = 256,
        keepalive_seconds: float = 30.0,
        azure_credential: CredentialFactory | None = None,
    ) -> None:
        self._pool = Pool(max_connections=max_connections, keepalive_seconds=keepalive_seconds)
        self._credential_factory = azure_credential
        self._targets: dict[tuple[str, Operation], _Target] = {}
        self._token_providers: dict[str, TokenProvider] = {}
        self._credentials: list[Any] = []  # the ones this adapter created and must close

    # --- calls ------------------------------------------------------------------------------

    async def complete(self, deployment: Deployment, op: Operation, params: dict[str, Any]) -> dict[str, Any]:
        target = self._target(deployment, op)
        headers = await self._headers(deployment, target)
        raw, _ = await self._pool.post(
            target.url, self._body(deployment, target, params), headers, target.json_timeout
        )
        body = json_object(raw)
        if op is Operation.CHAT:
            return complete_chat(body)
        if op is Operation.TEXT:
            return complete_text(body)
        return body

    async def open_stream(
        self, deployment: Deployment, op: Operation, params: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        target = self._target(deployment, op)
        headers = await self._headers(deployment, target)
        response = await self._pool.open_post(
            target.url, self._body(deployment, target, params), headers, target.stream_timeout
        )
        return sse_events(response, _chat_event)

    async def complete_form(
        self, deployment: Deployment, op: Operation, params: dict[str, Any], upload: UploadedFile
    ) -> dict[str, Any]:
        """`params` and the file as `multipart/form-data`, the file read from its spool as it is
        sent (aiohttp reads it in a worker thread, a chunk at a time)."""
        target = self._target(deployment, op)
        headers = await self._headers(deployment, target)
        headers = {k: v for k, v in headers.items() if k != "content-type"}  # aiohttp sets the boundary
        form = aiohttp.FormData()
        for name, value in _form_fields(self._payload(deployment, target, params)):
            form.add_field(name, value)
        with upload.open() as file:
            form.add_field("file", file, filename=upload.filename, content_type=upload.content_type)
            raw, answered = await self._pool.post(target.url, form, headers, target.json_timeout)
        if "json" not in answered.get("content-type", ""):  # response_format text, srt or vtt
            return {"text": raw.decode("utf-8", "replace")}
        return json_object(raw)

    async def open_bytes(self, deployment: Deployment, op: Operation, params: dict[str, Any]) -> OpenedBytes:
        target = self._target(deployment, op)
        headers = {**await self._headers(deployment, target), "accept": "*/*"}
        response = await self._pool.open_post(
            target.url, self._body(deployment, target, params), headers, target.stream_timeout
        )
        content_type = response.headers.get("content-type") or "application/octet-stream"
        return OpenedBytes(content_type, _blocks(response))

    async def aclose(self) -> None:
        await self._pool.close()
        for credential in self._credentials:
            with contextlib.suppress(Exception):
                await credential.close()

    # --- addressing ---------------------------------------------------------------------------

    def _target(self, deployment: Deployment, op: Operation) -> _Target:
        key = (deployment.id, op)
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = _address(deployment, op)
        return target

    async def _headers(self, deployment: Deployment, target: _Target) -> dict[str, str]:
        if not target.needs_token:
            return target.headers
        token = await self._token_provider(deployment)()
        return {**target.headers, "authorization": f"Bearer {token}"}

    def _token_provider(self, deployment: Deployment) -> TokenProvider:
        """Entra ID tokens for Azure OpenAI, cached and refreshed by azure-identity's policy."""
        key = deployment.id if deployment.params.get("client_secret") else ""
        provider = self._token_providers.get(key)
        if provider is None:
            from azure.identity.aio import (  # noqa: PLC0415 - only for keyless Azure deployments
                ClientSecretCredential,
                get_bearer_token_provider,
            )

            params = deployment.params
            if params.get("client_secret"):
                credential = ClientSecretCredential(
                    str(params["tenant_id"]), str(params["client_id"]), str(params["client_secret"])
                )
                self._credentials.append(credential)
            else:
                credential = self._app_credential()
            provider = self._token_providers[key] = get_bearer_token_provider(credential, AZURE_SCOPE)
        return provider

    def _app_credential(self) -> Any:
        if self._credential_factory is not None:
            return self._credential_factory()
        from azure.identity.aio import DefaultAzureCredential  # noqa: PLC0415

        credential = DefaultAzureCredential()
        self._credentials.append(credential)
        return credential

    @classmethod
    def _body(cls, deployment: Deployment, target: _Target, params: dict[str, Any]) -> bytes:
        return orjson.dumps(cls._payload(deployment, target, params))

    @staticmethod
    def _payload(deployment: Deployment, target: _Target, params: dict[str, Any]) -> dict[str, Any]:
        body = {**target.defaults, **params} if target.defaults else dict(params)
        for key in _NOT_FORWARDED:
            body.pop(key, None)
        if target.model_in_body:
            body["model"] = deployment.upstream_model
        else:
            body.pop("model", None)  # Azure takes the deployment from the URL
        extra = deployment.params.get("extra_body")
        if isinstance(extra, dict):
            body.update(extra)
        return body


def _form_fields(body: dict[str, Any]) -> list[tuple[str, str]]:
    """Form fields as OpenAI's SDKs send them: a list as repeated `name[]`, objects as JSON."""
    fields: list[tuple[str, str]] = []
    for name, value in body.items():
        if value is None:
            continue
        if isinstance(value, list):
            fields.extend((f"{name}[]", _form_value(item)) for item in value)
        else:
            fields.append((name, _form_value(value)))
    return fields


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _address(deployment: Deployment, op: Operation) -> _Target:
    """The URL and fixed headers of one operation of a deployment, worked out once."""
    params = deployment.params
    headers = {"content-type": "application/json", "accept": "application/json"}
    headers.update({str(k): str(v) for k, v in (params.get("extra_headers") or {}).items()})
    needs_token, model_in_body = False, True
    if deployment.provider == "azure":
        base = str(params["api_base"]).rstrip("/")
        version = str(params["api_version"])
        root = base.removesuffix("/openai/v1").removesuffix("/openai")
        if version in _V1_VERSIONS:
            url = f"{root}/openai/v1/{op.path}" + (
                f"?api-version={quote(version)}" if version != "v1" else ""
            )
        elif op is Operation.RESPONSES:
            # Azure serves Responses per resource, not per deployment: the deployment is `model`.
            url = f"{root}/openai/{op.path}?api-version={quote(version)}"
        else:
            model_in_body = False
            url = (
                f"{root}/openai/deployments/{quote(deployment.upstream_model, safe='')}/{op.path}"
                f"?api-version={quote(version)}"
            )
        if params.get("api_key"):
            headers["api-key"] = str(params["api_key"])
        elif params.get("azure_ad_token"):
            headers["authorization"] = f"Bearer {params['azure_ad_token']}"
        else:
            needs_token = True
    else:
        url = f"{str(params['api_base']).rstrip('/')}/{op.path}"
        if params.get("api_key"):
            headers["authorization"] = f"Bearer {params['api_key']}"
        if params.get("organization"):
            headers["openai-organization"] = str(params["organization"])
    defaults = dict(deployment.body_defaults)
    return _Target(
        url=url,
        headers=headers,
        needs_token=needs_token,
        model_in_body=model_in_body,
        defaults=responses_defaults(defaults) if op is Operation.RESPONSES else defaults,
        json_timeout=aiohttp.ClientTimeout(total=deployment.timeout),
        # A stream may run long; what must not happen is a silence longer than stream_timeout.
        stream_timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=deployment.timeout, sock_read=deployment.stream_timeout
        ),
    )


def responses_defaults(defaults: dict[str, Any]) -> dict[str, Any]:
    """A deployment's chat request defaults in the Responses API's names; the ones it has no
    equivalent for (`stop`, `seed`, penalties, ...) are left out rather than refused upstream."""
    out = {k: v for k, v in defaults.items() if k in _SAME_IN_RESPONSES}
    cap = defaults.get("max_completion_tokens", defaults.get("max_tokens"))
    if cap is not None:
        out["max_output_tokens"] = cap
    if defaults.get("reasoning_effort") is not None:
        out["reasoning"] = {"effort": defaults["reasoning_effort"]}
    if defaults.get("verbosity") is not None:
        out["text"] = {"verbosity": defaults["verbosity"]}
    return out


async def _blocks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """A binary body as its blocks arrive; a body cut short raises (never a silent truncation)."""
    try:
        async for block in response.content.iter_any():
            yield block
    except TimeoutError:
        raise errors.timed_out() from None
    except aiohttp.ClientError:
        raise errors.cut_short() from None
    finally:
        response.release()


def _chat_event(event: Any) -> dict[str, Any]:
    """A chat (or Responses) stream's event; an `{"error": ...}` event raises."""
    if not isinstance(event, dict):
        raise errors.AttemptFailed(errors.UpstreamError("The model provider sent an event that is not JSON."))
    if "error" in event and not event.get("choices"):
        raise errors.stream_error(event)
    return event
