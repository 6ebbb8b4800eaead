"""HTTP triggers: the host's routing, and the hand-over to the worker's HTTP streaming server.

Routes come from the worker's function metadata (each `httpTrigger` binding's `route`, `methods`),
under `extensions.http.routePrefix`. Templates may hold literal segments, `{name}` and a final
catch-all `{*name}` (which also matches nothing); precedence is ASP.NET's, segment by segment:
literal, then parameter, then catch-all; ties keep the worker's order. Anything else in a
template (constraints, optional or default values) is refused at start. Matching ignores case
and a trailing slash. No match (path or method): an empty 404, as from the Functions host.

An app that uses the HTTP streaming extension (azurefunctions-extensions-http-fastapi) answers
`WorkerInitRequest` with an `HttpUri` capability. For each request the host then, as Azure's
does: makes an invocation id; sends the raw request (method, path and query, headers, body
streamed) to `HttpUri` with `x-ms-invocation-id`; at the same time sends the InvocationRequest
whose `httpTrigger` input carries the method, URL, headers, query and route values (no body); and
relays the worker's response, chunk by chunk, to the caller. A caller who goes away closes the
connection to the worker, which the handler sees as a disconnect. A failed invocation shows as the
worker's 500; the host logs it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send
from yarl import URL

from . import rpc
from .channel import FunctionMetadata, WorkerChannel
from .functions import new_traceparent, run
from .hostconfig import HostConfigError

log = logging.getLogger("funchost")

LITERAL, PARAMETER, CATCH_ALL = range(3)  # segment ranks, lower wins
_SEGMENT = re.compile(r"\{(?P<star>\*?)(?P<name>[A-Za-z_]\w*)\}")
FORWARDED_FOR = "x-forwarded-for"
# Hop-by-hop headers (RFC 9110 7.6.1) are the connection's, not the request's or the response's.
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
INVOCATION_HEADER = "x-ms-invocation-id"


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP function's route, ready to match."""

    function: FunctionMetadata
    template: str
    path: str  # with the route prefix, for the startup listing
    regex: re.Pattern[str]
    rank: tuple[int, ...]
    methods: frozenset[str] | None  # None: every method
    trigger_name: str

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.methods is not None and method not in self.methods:
            return None
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        return {name: value for name, value in found.groupdict().items() if value is not None}


def compile_route(template: str, prefix: str) -> tuple[str, re.Pattern[str], tuple[int, ...]]:
    """A route template under the prefix -> (path, regex, rank). Raises HostConfigError."""
    segments = [s for s in f"{prefix}/{template}".split("/") if s]
    pattern, ranks = "", []
    for index, segment in enumerate(segments):
        if "{" not in segment and "}" not in segment:
            pattern += "/" + re.escape(segment)
            ranks.append(LITERAL)
            continue
        token = _SEGMENT.fullmatch(segment)
        if token is None:
            raise HostConfigError(
                f"route {template!r}: unsupported segment {segment!r} (only literals, {{name}}, {{*name}})"
            )
        name = token["name"]
        if token["star"]:
            if index != len(segments) - 1:
                raise HostConfigError(f"route {template!r}: a catch-all must be the last segment")
            pattern += f"(?:/(?P<{name}>.*))?"
            ranks.append(CATCH_ALL)
        else:
            pattern += f"/(?P<{name}>[^/]+)"
            ranks.append(PARAMETER)
    path = "/" + "/".join(segments)
    return path, re.compile(pattern or "/", re.IGNORECASE | re.DOTALL), tuple(ranks)


def build_routes(functions: list[FunctionMetadata], route_prefix: str) -> list[HttpRoute]:
    """Every HTTP function's route, most specific first (stable for equal precedence)."""
    routes = []
    for function in functions:
        trigger = function.trigger
        if trigger.get("type") != "httpTrigger":
            continue
        template = trigger.get("route") or function.name  # the host's default route
        try:
            path, regex, rank = compile_route(template, route_prefix)
        except HostConfigError as exc:
            raise HostConfigError(f"function '{function.name}': {exc}") from None
        methods = trigger.get("methods")
        allowed = frozenset(str(m).upper() for m in methods) if methods else None
        routes.append(HttpRoute(function, template, path, regex, rank, allowed, trigger["name"]))
    return sorted(routes, key=lambda r: r.rank)


def _traceparent(request: Request) -> str:
    """The caller's W3C traceparent, or a new one: the host's activity for this invocation."""
    given = request.headers.get("traceparent", "")
    if re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", given):
        return given
    return new_traceparent()


def invocation_request(route: HttpRoute, request: Request, params: dict[str, str], invocation_id: str) -> Any:
    """The InvocationRequest for an HTTP call: the trigger's RpcHttp without the body (it goes to HttpUri)."""
    http = rpc.RpcHttp(
        method=request.method,
        url=str(request.url),
        headers={k: v for k, v in request.headers.items()},
        query={k: v for k, v in request.query_params.items()},
        params=params,
    )
    trace = rpc.RpcTraceContext(
        trace_parent=_traceparent(request), trace_state=request.headers.get("tracestate", "")
    )
    return rpc.InvocationRequest(
        invocation_id=invocation_id,
        function_id=route.function.function_id,
        input_data=[rpc.ParameterBinding(name=route.trigger_name, data=rpc.TypedData(http=http))],
        trace_context=trace,
    )


class HttpProxy:
    """The ASGI app of the host's HTTP listener."""

    def __init__(
        self, routes: list[HttpRoute], channel: WorkerChannel, function_timeout: float | None
    ) -> None:
        self.routes = routes
        self.channel = channel
        self.function_timeout = function_timeout
        self._session: aiohttp.ClientSession | None = None
        self._invocations: set[asyncio.Task[str | None]] = set()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive, send)
        response = await self.dispatch(request)
        try:
            await response(scope, receive, send)
        except _WorkerResponseCut as cut:
            # Returning mid-body makes uvicorn close the connection: the caller sees the cut, as
            # it would from Azure's host. The worker logged the handler's own error.
            log.warning("%s: the worker's response ended before its end (%s)", request.url.path, cut)

    async def dispatch(self, request: Request) -> Response:
        # scope["path"]: request.url.path goes through urlsplit, which drops a decoded newline (%0A).
        path = request.scope["path"].rstrip("/") or "/"
        for route in self.routes:
            params = route.match(request.method, path)
            if params is not None:
                break
        else:
            return Response(status_code=404)
        await self.channel.wait_ready()  # a new worker may be starting after the last one died
        if self.channel.http_uri is None:
            log.error("Function '%s': the app does not use the HTTP streaming extension", route.function.name)
            return Response(status_code=500)
        invocation_id = str(uuid.uuid4())
        message = invocation_request(route, request, params, invocation_id)
        invocation = asyncio.create_task(
            run(self.channel, route.function.name, message, self.function_timeout)
        )
        self._invocations.add(invocation)  # it ends (and logs) on its own, whatever the relay does
        invocation.add_done_callback(self._invocations.discard)
        try:
            upstream = await self._forward(request, invocation_id)
        except ClientDisconnect:
            return Response(status_code=499)  # nobody reads it; the handler saw the disconnect
        except (aiohttp.ClientError, OSError) as exc:
            log.error("Function '%s': the worker's HTTP server failed: %s", route.function.name, exc)
            return Response(status_code=500)
        return StreamingResponse(
            _relay(upstream),
            status_code=upstream.status,
            headers=_response_headers(upstream),
        )

    async def _forward(self, request: Request, invocation_id: str) -> aiohttp.ClientResponse:
        assert self.channel.http_uri is not None
        headers = [
            (k, v)
            for k, v in request.headers.items()
            if k not in _HOP_BY_HOP and k not in (INVOCATION_HEADER, FORWARDED_FOR)
        ]
        headers.append((INVOCATION_HEADER, invocation_id))
        # The caller's address appended, as the platform's front end does, so the app can tell who
        # called (the last entry is the one a client cannot write).
        forwarded = [v for k, v in request.headers.items() if k == FORWARDED_FOR]
        if request.client is not None:
            forwarded.append(request.client.host)
        if forwarded:
            headers.append((FORWARDED_FOR, ", ".join(forwarded)))
        # The request target as the caller sent it, still percent-encoded.
        target = request.scope.get("raw_path") or request.scope["path"].encode()
        query = request.scope.get("query_string", b"")
        url = URL(
            self.channel.http_uri
            + target.decode("latin-1")
            + ("?" + query.decode("latin-1") if query else ""),
            encoded=True,
        )
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        return await self._client().request(
            request.method,
            url,
            headers=CIMultiDict(headers),
            data=_body(request) if has_body else None,
            allow_redirects=False,
            compress=None,
        )


async def _body(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


def _response_headers(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    # StreamingResponse sets its own framing; every other header passes as the worker sent it.
    return {
        k: v
        for k, v in upstream.headers.items()
        if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"
    }


class _WorkerResponseCut(Exception):
    """The worker closed its connection mid-body (a handler that raised while streaming)."""


async def _relay(upstream: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The worker's body, chunk by chunk. On the caller's disconnect Starlette cancels this
    generator; closing the upstream response then drops the worker's connection."""
    try:
        async for chunk in upstream.content.iter_any():
            yield chunk
    except (aiohttp.ClientError, OSError) as exc:  # a payload cut short, or the connection reset
        raise _WorkerResponseCut(type(exc).__name__) from None
    finally:
        if upstream.content.at_eof():
            upstream.release()  # the connection goes back to the pool
        else:
            upstream.close()  # the caller left mid-body: drop the connection, the handler sees it
