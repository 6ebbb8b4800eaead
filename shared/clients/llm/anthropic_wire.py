"""The native Anthropic adapter: a Messages request sent as it is to an `anthropic/...` deployment.

`POST {api_base}/v1/messages` (`api_base` default `https://api.anthropic.com`; a trailing `/v1` or
`/v1/messages` is accepted, so one `api_base` serves both this adapter and LiteLLM), authenticated
with the deployment's `api_key` as `x-api-key` (default: the ANTHROPIC_API_KEY setting, as
LiteLLM), `anthropic-version: 2023-06-01` unless the deployment's `extra_headers` set another, and
the client's `anthropic-beta` passed on. The body is the client's validated request with the
deployment's model name (and its `extra_body`); the answer is parsed once with orjson.

Streams are decoded as their bytes arrive and relayed event by event (messages_relay.py); an
`error` event raises. Failures become `errors.AttemptFailed`, read from Anthropic's error envelope
(`{"type": "error", "error": {"type", "message"}}`) by the same rules as OpenAI's: 429 keeps its
Retry-After, 400/413 are the client's (a too-long prompt is a context-window failure), 401/403/404
are Cirrus's credentials or deployment, 5xx and 529 (overloaded) are retried.

Transport: one pooled aiohttp session, as the OpenAI-wire adapter's (transport.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from shared.clients.llm import errors
from shared.clients.llm.deployments import ANTHROPIC_DEFAULT_BASE, Deployment
from shared.clients.llm.transport import Pool, json_object, sse_events

ANTHROPIC_VERSION = "2023-06-01"


@dataclass(frozen=True)
class _Target:
    url: str
    headers: dict[str, str]
    json_timeout: aiohttp.ClientTimeout
    stream_timeout: aiohttp.ClientTimeout


class AnthropicWireAdapter:
    """See the module docstring. Raises `errors.AttemptFailed` for every provider failure."""

    def __init__(self, *, max_connections: int = 256, keepalive_seconds: float = 30.0) -> None:
        self._pool = Pool(max_connections=max_connections, keepalive_seconds=keepalive_seconds)
        self._targets: dict[str, _Target] = {}

    async def create(
        self, deployment: Deployment, body: Mapping[str, Any], beta: str | None
    ) -> dict[str, Any]:
        """Anthropic's Message for `body`."""
        target = self._target(deployment)
        raw, _ = await self._pool.post(
            target.url, _body(deployment, body, stream=False), _headers(target, beta), target.json_timeout
        )
        answer = json_object(raw, "a Message")
        if answer.get("type") != "message":
            raise errors.AttemptFailed(
                errors.UpstreamError("The model provider returned an answer that is not a Message.")
            )
        return answer

    async def open_stream(
        self, deployment: Deployment, body: Mapping[str, Any], beta: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        """Anthropic's stream events as they arrive; the connection is open once this returns."""
        target = self._target(deployment)
        response = await self._pool.open_post(
            target.url, _body(deployment, body, stream=True), _headers(target, beta), target.stream_timeout
        )
        return sse_events(response, _anthropic_event)

    async def aclose(self) -> None:
        await self._pool.close()

    def _target(self, deployment: Deployment) -> _Target:
        target = self._targets.get(deployment.id)
        if target is None:
            target = self._targets[deployment.id] = _address(deployment)
        return target


def messages_url(api_base: str | None) -> str:
    """`{root}/v1/messages` for an `api_base` given with or without `/v1` or `/v1/messages`."""
    root = (
        str(api_base or ANTHROPIC_DEFAULT_BASE).rstrip("/").removesuffix("/v1/messages").removesuffix("/v1")
    )
    return f"{root}/v1/messages"


def _address(deployment: Deployment) -> _Target:
    params = deployment.params
    headers = {
        "content-type": "application/json",
        "accept": "application/json",
        "anthropic-version": ANTHROPIC_VERSION,
    }
    if params.get("api_key"):
        headers["x-api-key"] = str(params["api_key"])
    headers.update({str(k).lower(): str(v) for k, v in (params.get("extra_headers") or {}).items()})
    return _Target(
        url=messages_url(params.get("api_base")),
        headers=headers,
        json_timeout=aiohttp.ClientTimeout(total=deployment.timeout),
        # A stream may run long; what must not happen is a silence longer than stream_timeout.
        stream_timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=deployment.timeout, sock_read=deployment.stream_timeout
        ),
    )


def _headers(target: _Target, beta: str | None) -> dict[str, str]:
    return {**target.headers, "anthropic-beta": beta} if beta else target.headers


def _body(deployment: Deployment, body: Mapping[str, Any], *, stream: bool) -> bytes:
    out = {**body, "model": deployment.upstream_model}
    if stream:
        out["stream"] = True
    else:
        out.pop("stream", None)
    extra = deployment.params.get("extra_body")
    if isinstance(extra, dict):
        out.update(extra)
    return orjson.dumps(out)


def _anthropic_event(event: Any) -> dict[str, Any]:
    """One of Anthropic's stream events; an `error` event raises."""
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise errors.AttemptFailed(
            errors.UpstreamError("The model provider sent an event that is not Anthropic's.")
        )
    if event["type"] == "error":
        raise errors.stream_error(event)
    return event
