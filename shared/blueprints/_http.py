"""What every HTTP function shares: request ids, authentication, body parsing and error rendering.

Handlers are written as `async def handler(req, ctx) -> Response` and wrapped by `@endpoint()`,
which gives the Functions host the signature it indexes (`req: Request`) and turns any exception
into an error envelope: OpenAI's, or another one a route names (`@endpoint(envelope=
anthropic_error_body)` on the Anthropic routes). A traceback never reaches a client.

Callers authenticate with `Authorization: Bearer <key>` (OpenAI SDKs), `api-key` (Azure OpenAI
clients) or `x-api-key` (Anthropic SDKs), on every route. A route declared with
`@endpoint(stream_token=...)` (a job's event stream) also takes a short-lived `?token=` minted for
it (`shared/services/stream_tokens.py`), for browsers' EventSource, which cannot send a header.
"""

import logging
import re
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response, StreamingResponse
from opentelemetry import trace
from pydantic import BaseModel

from shared import sse
from shared.blueprints._contract import Operation, documented
from shared.clients.protocols import ServedBy
from shared.container import Container, configure_telemetry, get_container
from shared.errors import (
    CirrusError,
    Envelope,
    InvalidRequestError,
    PayloadTooLargeError,
    anthropic_error_body,
    as_cirrus_error,
    error_body,
)
from shared.logs import bind_request_id
from shared.observability import (
    HttpRequestFacts,
    ModelCallTotals,
    counting_model_calls,
    end_server_span,
    server_span,
)
from shared.services.audit import Actor
from shared.services.auth import Principal
from shared.services.calls import CallContext
from shared.services.console_sessions import CONSOLE_HEADER, COOKIE_NAME
from shared.services.stream_tokens import TokenScope

log = logging.getLogger("cirrus.http")

REQUEST_ID_HEADER = "x-request-id"
# Deeper JSON is refused with a 400: no API Cirrus serves needs it, and recursive code further on
# (the stdlib's json, deepcopy, pydantic) would end in a RecursionError on a few hundred levels.
MAX_JSON_DEPTH = 64
ANONYMOUS = Principal(key_id="anonymous", is_master=False, kind="anonymous")
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    principal: Principal
    container: Container
    # Added to the response whatever its outcome, errors included (rate-limit figures).
    headers: dict[str, str] = field(default_factory=dict)

    def actor(self, req: Request) -> Actor:
        """Who is acting, for the audit log."""
        return Actor.of(self.principal, self.request_id, client_ip(req))

    def call(self, req: Request, *, session_id: str | None = None) -> CallContext:
        """What the services need to know about this request."""
        return CallContext(
            request_id=self.request_id,
            principal=self.principal,
            session_id=session_id,
            cache_control=req.headers.get("cache-control"),
            response_headers=self.headers,
        )


Handler = Callable[[Request, RequestContext], Awaitable[Response]]


def endpoint(
    *,
    authenticated: bool = True,
    envelope: Envelope = error_body,
    contract: Operation | None = None,
    stream_token: TokenScope | None = None,
) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Wrap a handler: request id, authentication, and every error rendered in `envelope` (OpenAI's
    unless the route names another). `contract` is what `/openapi.json` says of the route.
    `stream_token`: this route also authenticates a `?token=` minted for that scope."""

    def decorate(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def function(req: Request) -> Response:
            started = time.perf_counter()
            configure_telemetry()  # before the first span, or it is never exported
            request_id = _request_id(req)
            headers: dict[str, str] = {}
            facts = request_facts(req, name)
            span = server_span(facts, req.headers)
            span.set_attribute("cirrus.request_id", request_id)
            totals = ModelCallTotals()
            try:
                with (
                    trace.use_span(span, end_on_exit=False),
                    bind_request_id(request_id),
                    counting_model_calls(totals),
                ):
                    response = await _serve(req, request_id, headers, span)
            except BaseException as exc:
                end_server_span(span, facts, 499, started, error=exc, totals=totals)
                raise
            response.headers.update(headers)
            response.headers[REQUEST_ID_HEADER] = request_id
            if isinstance(response, StreamingResponse):  # the span ends with the stream, not before it
                response.body_iterator = _ending(response.body_iterator, span, facts, started, totals)
            else:
                end_server_span(span, facts, response.status_code, started, totals=totals)
            return response

        async def _serve(req: Request, request_id: str, headers: dict[str, str], span: Any) -> Response:
            try:
                container = await get_container()
                if stream_token is not None and "token" in req.query_params:
                    principal = await token_caller(req, container, stream_token)
                else:
                    principal = await authenticate(req, container) if authenticated else ANONYMOUS
                span.set_attribute("cirrus.key_id", principal.key_id)
                return await handler(req, RequestContext(request_id, principal, container, headers))
            except Exception as exc:
                return error_response(as_cirrus_error(exc, request_id), envelope)

        name = handler.__name__

        # Not functools.wraps: its __wrapped__ would make the Functions host index the handler's
        # (req, ctx) signature instead of this function's (req: Request).
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(function, attr, getattr(handler, attr))
        if contract is not None:
            anthropic = envelope is anthropic_error_body
            query_token = stream_token is not None
            documented(
                replace(contract, authenticated=authenticated, anthropic=anthropic, query_token=query_token)
            )(function)
        return function

    return decorate


async def authenticate(req: Request, container: Container) -> Principal:
    """The caller: a key in a header, or else the console's session cookie, which counts only on
    requests that carry `X-Cirrus-Console: 1`. A page on another origin cannot add that header to a
    request without a CORS preflight, which the host grants only to the origins its CORS settings
    list (none by default), so a cookie alone authorizes nothing (SameSite=Strict keeps it off
    cross-site requests as well, and it travels cross-origin only with CORS credentials on)."""
    authorization = req.headers.get("authorization")
    api_key = req.headers.get("api-key") or req.headers.get("x-api-key")
    if not authorization and not api_key and req.headers.get(CONSOLE_HEADER) == "1":
        cookie = req.cookies.get(COOKIE_NAME)
        if cookie:
            _session, principal = await container.console.resolve(cookie)
            return principal
    return await container.auth.authenticate(authorization, api_key)


async def token_caller(req: Request, container: Container, scope: TokenScope) -> Principal:
    """The caller behind `?token=` on a route that takes one: the key it was minted by, read again
    now (a revoked key's tokens stop working), for the route value it was minted for."""
    resource = str(req.path_params.get(scope.param, ""))
    key_id = container.stream_tokens.verify(req.query_params["token"], scope, resource)
    return await container.auth.principal_for(key_id)


async def _ending(
    chunks: AsyncIterable[Any], span: Any, facts: HttpRequestFacts, started: float, totals: ModelCallTotals
) -> AsyncIterator[Any]:
    status, error = 200, None
    try:
        async for chunk in chunks:
            yield chunk
    except BaseException as exc:
        status, error = 499, exc  # the client went away mid-stream
        raise
    finally:
        end_server_span(span, facts, status, started, error=error, totals=totals)


def request_facts(req: Request, function: str) -> HttpRequestFacts:
    """The request as its SERVER span describes it. The scheme and host are the client's (the
    front end's `X-Forwarded-Proto` and `Host`), not those of the worker's own listener."""
    forwarded = req.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    scheme = forwarded if forwarded in ("http", "https") else req.url.scheme
    port = req.url.port or {"http": 80, "https": 443}.get(scheme)
    return HttpRequestFacts(
        method=req.method,
        route=route_template(req.url.path, req.path_params),
        path=req.url.path,
        scheme=scheme,
        host=req.url.hostname or "",
        port=port,
        user_agent=req.headers.get("user-agent"),
        function=function,
    )


def route_template(path: str, params: Mapping[str, Any]) -> str:
    """The route a request matched, rebuilt from its path and route values: `/v1/files/file-1/content`
    with `{"file_id": "file-1"}` is `/v1/files/{file_id}/content`. Both hosts give handlers the
    route values but not the template, and a span named by the raw path would make one row per id.

    Every Cirrus route starts with fixed segments (`/v1/<surface>`, or one outside `/v1`), so a
    value is looked for after them, as whole segments: an id that equals a fixed word later in the
    path (`/v1/files/content/content`) still lands in the right place."""
    fixed = 2 if path.startswith("/v1/") else 1
    cut = 0
    for _ in range(fixed):
        cut = path.find("/", cut + 1)
        if cut < 0:
            return path
    head, rest = path[:cut], path[cut:]
    for name, value in params.items():
        if not value:
            continue
        segments = rf"(?<=/){re.escape(str(value))}(?=/|$)"
        found = re.search(segments, rest)
        if found is None:  # a catch-all's value may start inside the fixed part (`v1/{*path}`)
            head, rest = "", head + rest
            found = re.search(segments, rest)
        if found is not None:
            rest = f"{rest[: found.start()]}{{{name}}}{rest[found.end() :]}"
    return head + rest


def error_response(err: CirrusError, envelope: Envelope = error_body) -> Response:
    return JSONResponse(envelope(err), status_code=err.status, headers=err.headers())


def json_response(
    body: BaseModel | dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """JSON serialised once, with orjson (models through pydantic's own serialiser)."""
    content = (
        body.model_dump_json(exclude_unset=True).encode()
        if isinstance(body, BaseModel)
        else orjson.dumps(body)
    )
    return Response(content, status_code=status, headers=headers, media_type="application/json")


def served_headers(served_by: ServedBy, **extra: str | None) -> dict[str, str]:
    """Which model and deployment answered, and whether a fallback or retry was needed."""
    headers = {
        "x-cirrus-model": served_by.model,
        "x-cirrus-deployment": served_by.deployment,
        "x-cirrus-fallback": "true" if served_by.fallbacks else "false",
        "x-cirrus-retries": str(served_by.retries),
    }
    headers.update({f"x-cirrus-{name}": value for name, value in extra.items() if value is not None})
    return headers


def sse_response(chunks: AsyncIterator[dict[str, Any]], request_id: str, headers: dict[str, str]) -> Response:
    return StreamingResponse(
        _sse(chunks, request_id), media_type=sse.MEDIA_TYPE, headers={**sse.HEADERS, **headers}
    )


async def _sse(chunks: AsyncIterator[dict[str, Any]], request_id: str) -> AsyncIterator[bytes]:
    """Chunks as events, then `[DONE]`; a failure mid-stream becomes one error event and no `[DONE]`."""
    try:
        async for chunk in chunks:
            yield sse.data_event(chunk)
    except Exception as exc:
        yield sse.encode(error_body(as_cirrus_error(exc, request_id)))
        return
    yield sse.DONE


def anthropic_stream_response(
    events: AsyncIterator[dict[str, Any]], request_id: str, headers: dict[str, str]
) -> Response:
    """Anthropic's streaming: each event named by its `type`, no `[DONE]`."""
    return StreamingResponse(
        _anthropic_events(events, request_id), media_type=sse.MEDIA_TYPE, headers={**sse.HEADERS, **headers}
    )


async def _anthropic_events(events: AsyncIterator[dict[str, Any]], request_id: str) -> AsyncIterator[bytes]:
    """Events as they come; a failure mid-stream becomes one `error` event, and the stream ends."""
    try:
        async for event in events:
            yield sse.typed_event(event)
    except Exception as exc:
        yield sse.typed_event(anthropic_error_body(as_cirrus_error(exc, request_id)))


def event_stream_response(
    events: AsyncIterator[dict[str, Any]], request_id: str, headers: dict[str, str]
) -> Response:
    """Typed events (`{"type": ..., "sequence_number": ...}`), each with its `event:` line, as the
    Responses API streams them (no `[DONE]`)."""
    return StreamingResponse(
        _typed_sse(events, request_id), media_type=sse.MEDIA_TYPE, headers={**sse.HEADERS, **headers}
    )


async def _typed_sse(events: AsyncIterator[dict[str, Any]], request_id: str) -> AsyncIterator[bytes]:
    """The events; a failure the service did not turn into events itself becomes one `error` event."""
    sequence = -1
    try:
        async for event in events:
            sequence = event.get("sequence_number", sequence)
            yield sse.encode(event, event=event["type"])
    except Exception as exc:
        err = as_cirrus_error(exc, request_id)
        error = {
            "type": "error",
            "code": err.code or err.type,
            "message": err.message,
            "param": err.param,
            "sequence_number": sequence + 1,
        }
        yield sse.encode(error, event="error")


def query_int(req: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = req.query_params.get(name)
    if raw is None:
        return default
    value = ascii_int(raw)
    if value is None:
        raise InvalidRequestError(f"'{name}' must be an integer.", param=name)
    if not low <= value <= high:
        raise InvalidRequestError(f"'{name}' must be between {low} and {high}.", param=name)
    return value


async def read_json(req: Request, max_bytes: int, *, api: str = "The OpenAI API") -> Any:
    """The JSON body, refusing anything over `max_bytes` before reading it all into memory; `api`
    names what expected JSON in the error for a body that is not."""
    if declared_length(req) > max_bytes:
        raise _too_large(max_bytes)
    body = bytearray()
    async for chunk in req.stream():
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
    if not body.strip():
        raise InvalidRequestError("The request body is empty; expected a JSON object.")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:  # also invalid UTF-8, NaN literals and nesting deeper than 1024
        raise InvalidRequestError(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
            f"using your HTTP library correctly. {api} expects a JSON payload, but what was "
            "sent was not valid JSON.)"
        ) from None
    if json_depth_exceeds(body, MAX_JSON_DEPTH):
        raise InvalidRequestError(f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep.")
    return parsed


def ascii_int(raw: str) -> int | None:
    """`raw` as an integer if it is one in ASCII digits (an optional `-`), else None.

    Not `str.isdigit()`: it is true for `²` and other digits `int()` refuses, and `int()` alone
    takes `1_000`, spaces and other scripts' digits."""
    digits = raw[1:] if raw.startswith("-") else raw
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        return None
    return int(raw)


def declared_length(req: Request) -> int:
    """The request's `Content-Length`, or 0 when it is absent or not a number (the body is then
    counted as it is read)."""
    raw = req.headers.get("content-length", "")
    return int(raw) if raw.isascii() and raw.isdigit() else 0


# JSON without its strings, reduced to brackets: each pass of _EMPTY_PAIRS removes one level.
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_EMPTY_PAIRS = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_exceeds(body: bytes | bytearray, limit: int) -> bool:
    """Whether valid JSON `body` nests arrays and objects more than `limit` deep, found with
    regular expressions (C speed) rather than a walk over the parsed value."""
    brackets = _STRINGS.sub(b"", body).translate(None, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        brackets = _EMPTY_PAIRS.sub(b"", brackets)
    return bool(brackets)


def _too_large(max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"The request body is larger than the {max_bytes}-byte limit.")


def client_ip(req: Request) -> str | None:
    """The caller's address: the last `X-Forwarded-For` entry, which the platform's front end (or
    the local host) appends, not the first, which a client can write itself; else the peer's."""
    forwarded = req.headers.get("x-forwarded-for", "")
    last = forwarded.rsplit(",", 1)[-1].strip()
    if last:
        if last.startswith("["):  # [v6]:port
            return last[1:].split("]", 1)[0][:64]
        host, _, port = last.rpartition(":")
        return (host if host and port.isdigit() and "." in host else last)[:64]
    return req.client.host if req.client else None


def _request_id(req: Request) -> str:
    """The client's `x-request-id` when it is a sane token, else a new one."""
    given = req.headers.get(REQUEST_ID_HEADER, "")
    return given if _CLIENT_REQUEST_ID.match(given) else f"req_{uuid.uuid4().hex}"
