"""The fake provider's aiohttp application: OpenAI-compatible API, faults and control API.

API routes live under `/v1/...`, Azure OpenAI's `/openai/v1/...` and
`/openai/deployments/{deployment}/...`, and, with a fixed behaviour, under the same paths prefixed
by `/profile/<spec>`. Control routes live under `/_control/...`. See the package docstring for the
full contract.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re
import secrets
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import suppress
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from .behaviour import Behaviour, EnqueueRequest, parse_profile
from .state import STATE, ProviderState, RequestRecord
from .surface import add_routes as add_surface_routes
from .wire import (
    DEFAULT_MODELS,
    ApiError,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    azure_error_body,
    chat_choices,
    chat_chunks,
    chat_completion,
    chat_prompt_tokens,
    completion_choices,
    embeddings,
    error_body,
    model_object,
    parse_request,
    response_base,
    text_completion,
    text_completion_chunks,
    usage,
)

_POLL_S = 0.05  # how often long waits check for a vanished client or a shutdown
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_AZURE_PATH = re.compile(r"(/profile/[^/]+)?/openai/")
_AZURE_NOT_FOUND = "Resource not found"
# Azure OpenAI's own words for a wrong or missing key, and for a bad Entra ID token.
_BAD_API_KEY = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
    "valid key for an active subscription and use a correct regional API endpoint for your resource."
)
_BAD_BEARER = (
    "Unauthorized. Access token is missing, invalid, audience is incorrect "
    "(https://cognitiveservices.azure.com), or have expired."
)

Responder = Callable[["Exchange", Any], Awaitable[web.StreamResponse]]


def create_app(
    default: Behaviour | None = None,
    *,
    models: Iterable[str] = DEFAULT_MODELS,
    max_log: int = 10_000,
) -> web.Application:
    """Build the fake provider.

    `default` answers requests that no queued script or profile claims; `models` is what
    `/v1/models` lists; the request log keeps the newest `max_log` entries.
    """
    app = web.Application(middlewares=[_openai_errors])
    app[STATE] = ProviderState(default or Behaviour(), models, max_log)
    app.on_shutdown.append(_on_shutdown)
    api: list[tuple[str, str, type[BaseModel] | None, Responder]] = [
        ("POST", "/chat/completions", ChatRequest, _chat),
        ("POST", "/completions", CompletionRequest, _completions),
        ("POST", "/embeddings", EmbeddingRequest, _embeddings),
        ("GET", "/models", None, _models),
        ("GET", "/models/{model:.+}", None, _model),
    ]
    families = (  # (prefix, routes, answer errors in Azure's envelope)
        ("/v1", api, False),
        ("/openai/v1", api, True),
        ("/openai/deployments/{deployment}", api[:3], True),
    )
    for root in ("", "/profile/{profile}"):
        for prefix, routes, azure in families:
            for method, path, request_model, respond in routes:
                handler = _api_handler(request_model, respond, azure=azure)
                app.router.add_route(method, root + prefix + path, handler)
    add_surface_routes(app, _api_handler)  # moderations, images, audio, rerank
    app.router.add_post("/_control/enqueue", _enqueue)
    app.router.add_post("/_control/reset", _reset)
    app.router.add_get("/_control/requests", _requests)
    app.router.add_get("/_control/health", _health)
    from .anthropic_api import add_routes  # noqa: PLC0415 - it builds on this module's Exchange

    add_routes(app)  # POST /v1/messages: Anthropic's Messages API
    from .responses_api import add_routes as add_responses_routes  # noqa: PLC0415 - the same

    add_responses_routes(app)  # POST /v1/responses: OpenAI's Responses API
    return app


async def _on_shutdown(app: web.Application) -> None:
    # Ends `timeout` faults and streams in flight instead of making shutdown wait for them.
    app[STATE].closing = True


@web.middleware
async def _openai_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Report routing errors (404, 405, 403...) in OpenAI's error envelope (Azure's for its 404s)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404 and _AZURE_PATH.match(request.path):
            return web.json_response(azure_error_body(404, _AZURE_NOT_FOUND), status=404)
        message = exc.reason
        if exc.status in (404, 405):
            message = f"Invalid URL ({request.method} {request.path})"
        return web.json_response(error_body(exc.status, message), status=exc.status)


# --- answering API requests ---------------------------------------------------------------


class Exchange:
    """One API request being answered: the request, its log record and the chosen behaviour."""

    def __init__(self, request: web.Request, state: ProviderState, record: RequestRecord) -> None:
        self.request, self.state, self.record = request, state, record
        self.behaviour = state.default

    def gone(self) -> bool:
        """True once the client disconnected or the server is shutting down."""
        transport = self.request.transport
        return self.state.closing or transport is None or transport.is_closing()

    async def pause(self, seconds: float) -> bool:
        """Sleep; returns False early if the exchange is `gone()`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self.gone():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return True
            await asyncio.sleep(min(remaining, _POLL_S))
        return False

    def drop(self, *, reset: bool) -> None:
        """Close the connection at once; `reset` makes it a TCP RST instead of a FIN."""
        transport = self.request.transport
        if transport is None:
            return
        if reset:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with suppress(OSError):  # linger 0: close() sends RST and discards unsent data
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        else:
            transport.close()  # flushes what was written, then FIN

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"x-request-id": f"req_{self.record.id}", **(extra or {})}

    async def send_json(
        self, payload: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> web.StreamResponse:
        """Write a complete JSON response now (so the log knows when it went out)."""
        response = web.json_response(payload, status=status, headers=self._headers(headers))
        self.record.status = status
        self.record.first_byte_at = time.time()
        with suppress(ConnectionError):  # client already gone; aiohttp ignores it too
            await response.prepare(self.request)
            await response.write_eof()
        return response

    async def send_sse(self, events: Iterable[dict[str, Any]]) -> web.StreamResponse:
        """Stream `events` as SSE, one write per event with `chunk_delay_ms` between, then [DONE].

        With fault `cut`, the connection is closed after `cut_after` events instead.
        """
        behaviour = self.behaviour
        cut_after = behaviour.cut_after if behaviour.fault == "cut" else None
        response = web.StreamResponse(headers=self._headers(_SSE_HEADERS))
        self.record.status, self.record.streaming = 200, True
        try:
            await response.prepare(self.request)
            for sent, data in enumerate(_sse_frames(events)):
                if sent == cut_after:
                    break
                if sent and not await self.pause(behaviour.chunk_delay_ms / 1000):
                    break
                if sent == 0:
                    self.record.first_byte_at = time.time()
                await response.write(data)
            else:
                if cut_after is None:
                    await response.write(b"data: [DONE]\n\n")
                    await response.write_eof()
                    return response
            self.drop(reset=False)
        except ConnectionError:
            pass  # the client hung up mid-stream
        return response


def _sse_frames(events: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    for event in events:
        yield b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


async def _read_json(request: web.Request) -> tuple[Any, ApiError | None]:
    """The body as JSON (None if empty), or the text and a 400 to answer with."""
    raw = await request.read()
    if not raw:
        return None, None
    try:
        return json.loads(raw), None
    except ValueError:
        problem = ApiError(400, "We could not parse the JSON body of your request.")
        return raw.decode(errors="replace"), problem


def _api_handler(
    request_model: type[BaseModel] | None,
    respond: Responder,
    *,
    azure: bool,
    read: Callable[[web.Request], Awaitable[tuple[Any, ApiError | None]]] = _read_json,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler: log, check credentials, parse, choose a behaviour, wait, inject faults,
    respond. `azure` routes report 404s and 401s in Azure OpenAI's envelope; `read` turns the body
    into what is logged and validated (JSON, or `surface.read_form` for multipart)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        body, problem = await read(request)
        record = state.record(request, body)
        exchange = Exchange(request, state, record)
        try:
            return await _serve(exchange, request_model, body, problem, respond, azure=azure)
        except ApiError as exc:
            return await exchange.send_json(exc.body(), exc.status)
        finally:
            record.streaming = False
            record.finished_at = time.time()

    return handler


async def _serve(
    exchange: Exchange,
    request_model: type[BaseModel] | None,
    body: Any,
    problem: ApiError | None,
    respond: Responder,
    *,
    azure: bool,
) -> web.StreamResponse:
    """Check the URL and credentials, validate, pick the behaviour, wait `latency_ms`, then fail
    or respond as it says."""
    request = exchange.request
    deployment = request.match_info.get("deployment")
    if deployment is not None and not request.query.get("api-version"):
        raise ApiError(404, _AZURE_NOT_FOUND, azure=True)  # what Azure says without api-version
    profile = _profile(request)
    # Credentials come first, checked against the behaviour that would answer, which is then
    # only used up (queue, fail_first) by a request that gets past them.
    model = deployment or (body.get("model") if isinstance(body, dict) else None)
    behaviour, source = exchange.state.peek(model if isinstance(model, str) else None, profile)
    _authenticate(exchange, behaviour, source, azure)
    if problem is not None:
        raise problem
    parsed: Any = None
    if request_model is not None:
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        if deployment is not None:  # the deployment is the model, whatever the body says (as Azure)
            body = {**body, "model": deployment}
        parsed = parse_request(request_model, body)
    streaming = bool(getattr(parsed, "stream", False))
    exchange.record.stream = streaming
    exchange.behaviour, exchange.record.source = exchange.state.choose(
        getattr(parsed, "model", None), profile
    )
    if not await exchange.pause(exchange.behaviour.latency_ms / 1000):
        exchange.drop(reset=False)
        return web.Response()
    failure = await _fault(exchange, streaming)
    if failure is not None:
        return failure
    return await respond(exchange, parsed)


def _authenticate(exchange: Exchange, behaviour: Behaviour, source: str, azure: bool) -> None:
    """Raise a 401 unless the request carries a credential `behaviour` requires (either, if both)."""
    key, token = behaviour.require_api_key, behaviour.require_bearer
    if key is None and token is None:
        return
    headers = exchange.request.headers
    sent_key, sent_token = headers.get("api-key"), _bearer_token(headers.get("Authorization"))
    if (key is not None and _matches(sent_key, key)) or (token is not None and _matches(sent_token, token)):
        return
    exchange.record.source = source
    # Complain about the credential that is required or, both being accepted, the one sent.
    if key is None or (token is not None and sent_key is None and sent_token is not None):
        message = _BAD_BEARER
    else:
        message = _BAD_API_KEY
    raise ApiError(401, message, code="invalid_api_key", azure=azure)


def _bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _matches(sent: str | None, expected: str) -> bool:
    return sent is not None and secrets.compare_digest(sent.encode(), expected.encode())


def _profile(request: web.Request) -> tuple[str, Behaviour] | None:
    spec = request.match_info.get("profile")
    if spec is None:
        return None
    try:
        return spec, parse_profile(spec)
    except ValueError as exc:
        raise ApiError(400, f"Invalid profile {spec!r}: {_describe(exc)}", param="profile") from None


def _describe(exc: ValueError) -> str:
    """A one-line description of a (pydantic) validation error."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
    return str(exc)


async def _fault(
    exchange: Exchange,
    streaming: bool,
    *,
    envelope: Callable[[int, str | None], dict[str, Any]] = error_body,
    retry_statuses: tuple[int, ...] = (429, 503),
) -> web.StreamResponse | None:
    """Carry out the behaviour's fault, if any; None means answer normally. An error status is
    answered in `envelope` (OpenAI's by default), with Retry-After on `retry_statuses`."""
    behaviour = exchange.behaviour
    if behaviour.fault == "timeout":
        await exchange.pause(math.inf)  # until the client gives up or the server stops
        exchange.drop(reset=False)
        return web.Response()  # never sent: the connection is gone
    if behaviour.fault == "reset" or (behaviour.fault == "cut" and not streaming):
        exchange.drop(reset=True)
        return web.Response()
    status = behaviour.status
    if status is None and behaviour.fault.isdigit():
        status = int(behaviour.fault)
    if status is None:
        return None
    headers = {}
    if behaviour.retry_after is not None and status in retry_statuses:
        seconds = float(behaviour.retry_after)
        headers["Retry-After"] = str(int(seconds)) if seconds.is_integer() else str(seconds)
    return await exchange.send_json(envelope(status, behaviour.error_message), status, headers)


async def _chat(exchange: Exchange, req: ChatRequest) -> web.StreamResponse:
    behaviour = exchange.behaviour
    prompt_tokens = chat_prompt_tokens(req.messages)
    if behaviour.context_window is not None and prompt_tokens > behaviour.context_window:
        message = (
            f"This model's maximum context length is {behaviour.context_window} tokens. However, your "
            f"messages resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
        )
        body = error_body(400, message, param="messages", code="context_length_exceeded")
        return await exchange.send_json(body, 400)
    choices = chat_choices(req, behaviour)
    totals = usage(prompt_tokens, choices)
    base = response_base("chatcmpl", req.model, exchange.record.body, exchange.record.id)
    if req.stream:
        chunks = chat_chunks(
            base,
            choices,
            totals,
            tokens_per_chunk=behaviour.tokens_per_chunk,
            include_usage=req.include_usage and not behaviour.omit_usage,
        )
        return await exchange.send_sse(chunks)
    body = chat_completion(base, choices, totals)
    if behaviour.omit_usage:
        del body["usage"]
    return await exchange.send_json(body)


async def _completions(exchange: Exchange, req: CompletionRequest) -> web.StreamResponse:
    behaviour = exchange.behaviour
    choices, prompt_tokens = completion_choices(req, behaviour)
    totals = usage(prompt_tokens, choices)
    base = response_base("cmpl", req.model, exchange.record.body, exchange.record.id)
    if req.stream:
        chunks = text_completion_chunks(
            base,
            choices,
            totals,
            tokens_per_chunk=behaviour.tokens_per_chunk,
            include_usage=req.include_usage,
        )
        return await exchange.send_sse(chunks)
    return await exchange.send_json(text_completion(base, choices, totals))


async def _embeddings(exchange: Exchange, req: EmbeddingRequest) -> web.StreamResponse:
    return await exchange.send_json(embeddings(req))


async def _models(exchange: Exchange, _: None) -> web.StreamResponse:
    data = [model_object(model_id) for model_id in exchange.state.models]
    return await exchange.send_json({"object": "list", "data": data})


async def _model(exchange: Exchange, _: None) -> web.StreamResponse:
    model_id = exchange.request.match_info["model"]
    if model_id not in exchange.state.models:
        message = f"The model '{model_id}' does not exist"
        raise ApiError(404, message, param="model", code="model_not_found")
    return await exchange.send_json(model_object(model_id))


# --- control API --------------------------------------------------------------------------


def _loopback_only(request: web.Request) -> None:
    """The control API has no auth, so refuse it to anything but local clients."""
    try:
        address = ipaddress.ip_address(request.remote or "")
    except ValueError:
        return  # not an IP peer (e.g. a unix socket): local by construction
    mapped = getattr(address, "ipv4_mapped", None)
    if not (mapped or address).is_loopback:
        raise web.HTTPForbidden(reason="The control API only accepts loopback clients")


async def _enqueue(request: web.Request) -> web.Response:
    _loopback_only(request)
    state = request.app[STATE]
    try:
        spec = EnqueueRequest.model_validate(await request.json())
    except ValueError as exc:  # bad JSON or a pydantic ValidationError
        return web.json_response(error_body(400, f"Invalid enqueue: {_describe(exc)}"), status=400)
    entry = state.enqueue(spec.behaviour, spec.times, spec.model)
    return web.json_response({"id": entry.id, "queued": len(state.queue)})


async def _reset(request: web.Request) -> web.Response:
    _loopback_only(request)
    request.app[STATE].reset()
    return web.json_response({"status": "ok"})


async def _requests(request: web.Request) -> web.Response:
    _loopback_only(request)
    return web.json_response([record.as_json() for record in request.app[STATE].requests])


async def _health(request: web.Request) -> web.Response:
    _loopback_only(request)
    state = request.app[STATE]
    return web.json_response({"status": "ok", "queued": len(state.queue), "requests": len(state.requests)})
