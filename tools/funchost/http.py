"""HTTP triggers on a Starlette app: Functions route templates, ASP.NET precedence, response conversion."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import azure.functions as func
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, compile_path
from starlette.types import Receive, Scope, Send

from .functions import HostedFunction, invoke, log_executed, new_invocation
from .hostconfig import HostConfigError

# Segment ranks, lower wins, compared segment by segment (ASP.NET's inbound route precedence).
LITERAL, COMPLEX, CONSTRAINED, PARAMETER, CATCH_ALL = range(5)
# {**name} / {*name}, {name:constraint:...}, {name=default}, {name?}
_PARAM = re.compile(
    r"(?P<star>\*{0,2})(?P<name>\w+)(?P<constraints>(?::[^=?]+)*)(?:=(?P<default>[^?]*))?(?P<opt>\?)?"
)
_TOKEN = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class RouteVariant:
    """One Starlette path for a route template (optional trailing parameters give several)."""

    path: str
    rank: tuple[int, ...]
    defaults: dict[str, str] = field(default_factory=dict)  # values of omitted parameters with defaults
    shortened: bool = False  # trailing optional segments omitted: an explicit route of equal rank wins

    @property
    def order(self) -> tuple[tuple[int, ...], bool]:
        return self.rank, self.shortened


def convert_route(template: str, prefix: str = "") -> list[RouteVariant]:
    """Functions route template (under routePrefix) -> Starlette path(s), the full one first."""
    segments: list[str] = []
    ranks: list[int] = []
    omittable: list[dict[str, str] | None] = []  # defaults an absent segment gives; None: required
    for segment in (s for s in f"{prefix}/{template}".split("/") if s):
        tokens = _TOKEN.findall(segment)
        params = [_PARAM.fullmatch(token) for token in tokens]
        if not all(params):
            raise HostConfigError(f"route {template!r}: unsupported parameter in segment {segment!r}")
        whole = len(tokens) == 1 and segment == "{" + tokens[0] + "}"
        converted = segment
        for token, p in zip(tokens, params, strict=True):
            assert p is not None
            if not whole and (p["star"] or p["opt"] or p["default"] is not None):
                raise HostConfigError(f"route {template!r}: an optional/catch-all parameter needs a segment")
            converted = converted.replace("{" + token + "}", _starlette_param(p), 1)
        segments.append(converted)
        p = params[0] if whole else None
        if p is None:
            ranks.append(COMPLEX if tokens else LITERAL)
            omittable.append(None)
            continue
        ranks.append(CATCH_ALL if p["star"] else CONSTRAINED if _is_int(p) else PARAMETER)
        # A catch-all also matches nothing in ASP.NET routing; a default fills an absent parameter.
        if p["star"] or p["opt"] or p["default"] is not None:
            omittable.append({p["name"]: p["default"]} if p["default"] is not None else {})
        else:
            omittable.append(None)

    variants: list[RouteVariant] = []
    defaults: dict[str, str] = {}
    cut = len(segments)
    while True:
        path = "/" + "/".join(segments[:cut])
        variants.append(RouteVariant(path, tuple(ranks[:cut]), dict(defaults), cut < len(segments)))
        absent = omittable[cut - 1] if cut else None
        if absent is None:
            return variants
        defaults.update(absent)
        cut -= 1


def _is_int(p: re.Match[str]) -> bool:
    names = [c.split("(")[0].strip().lower() for c in p["constraints"].split(":")[1:]]
    return "int" in names or "long" in names


def _starlette_param(p: re.Match[str]) -> str:
    # Only int is enforced; other constraints (alpha, guid, regex, ...) match any segment here.
    if p["star"]:
        return "{" + p["name"] + ":path}"
    return "{" + p["name"] + (":int}" if _is_int(p) else "}")


@dataclass(frozen=True)
class HttpRoute:
    """A variant of an HTTP function's route, ready to match."""

    function: HostedFunction
    variant: RouteVariant
    regex: re.Pattern[str]
    methods: frozenset[str] | None  # None: every method
    classic: bool  # the function takes azure.functions.HttpRequest, not a Starlette Request

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.methods is not None and method not in self.methods:
            return None
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        # Strings, as the Functions host passes route values (Starlette would make {id:int} an int).
        return {**self.variant.defaults, **{k: v for k, v in found.groupdict().items() if v is not None}}


def _method_names(methods: Iterable[Any] | None) -> frozenset[str] | None:
    if methods is None:
        return None
    return frozenset((m.value if isinstance(m, Enum) else str(m)).upper() for m in methods)


def _wants_http_request(fn: Callable[..., Any], arg_name: str) -> bool:
    """Whether the trigger parameter is annotated as azure.functions.HttpRequest (a classic function)."""
    for eval_str in (True, False):  # string annotations that do not resolve are compared by name
        try:
            annotation = inspect.signature(fn, eval_str=eval_str).parameters[arg_name].annotation
            break
        except (NameError, SyntaxError, TypeError, AttributeError):
            continue
        except (KeyError, ValueError):  # e.g. a (*args, **kwargs) wrapper without __wrapped__
            return False
    else:
        return False
    if isinstance(annotation, str):
        return annotation.rsplit(".", 1)[-1] == "HttpRequest"
    return isinstance(annotation, type) and issubclass(annotation, func.HttpRequest)


def build_routes(functions: Iterable[HostedFunction], route_prefix: str) -> list[HttpRoute]:
    """Every route variant of every function, most specific first (stable for equal precedence)."""
    routes = []
    for f in functions:
        template = f.trigger.route if f.trigger.route is not None else f.name  # the host's default route
        classic = _wants_http_request(f.fn, f.trigger.name)
        for variant in convert_route(template, route_prefix):
            try:
                regex = compile_path(variant.path)[0]
            except (ValueError, AssertionError) as exc:
                raise HostConfigError(f"function '{f.name}': route {template!r}: {exc}") from None
            # ASP.NET routing is case-insensitive, and a value may hold any character a URL can
            # encode, a newline (%0A) included, which Starlette's `.*` would not match.
            regex = re.compile(regex.pattern, re.IGNORECASE | re.DOTALL)
            routes.append(HttpRoute(f, variant, regex, _method_names(f.trigger.methods), classic))
    return sorted(routes, key=lambda r: r.variant.order)


def to_response(result: object) -> Response:  # noqa: PLR0911 - one return per supported type
    """What a function returned -> a Starlette response; Starlette responses pass through untouched."""
    if isinstance(result, Response):
        return result
    if isinstance(result, func.HttpResponse):
        response = Response(result.get_body(), status_code=result.status_code)
        names = set()
        for name, value in result.headers.items():
            if name.lower() != "content-length":  # Starlette sets it from the body
                response.raw_headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
                names.add(name.lower())
        if "content-type" not in names:
            mimetype = result.mimetype
            text = mimetype.startswith("text/")
            content_type = f"{mimetype}; charset={result.charset}" if text else mimetype
            response.raw_headers.append((b"content-type", content_type.encode("latin-1")))
        return response
    if result is None:
        return Response(status_code=204)
    if isinstance(result, str):
        return PlainTextResponse(result)
    if isinstance(result, bytes):
        return Response(result, media_type="application/octet-stream")
    if isinstance(result, BaseModel):
        return Response(result.model_dump_json(), media_type="application/json")
    if isinstance(result, (dict, list, int, float, bool)):
        return JSONResponse(result)
    raise TypeError(f"unsupported return type {type(result).__name__}")


async def _classic_request(request: Request) -> func.HttpRequest:
    return func.HttpRequest(
        method=request.method,
        url=str(request.url),
        headers=dict(request.headers),
        params=dict(request.query_params),
        route_params=dict(request.path_params),
        body=await request.body(),
    )


class _Dispatcher:
    """The ASGI endpoint behind every path: the first matching route's function handles the request."""

    def __init__(self, routes: list[HttpRoute], function_timeout: float | None) -> None:
        self.routes = routes
        self.function_timeout = function_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        response = await self.dispatch(request)
        await response(scope, receive, send)

    async def dispatch(self, request: Request) -> Response:
        path = request.scope["path"].rstrip("/") or "/"  # ASP.NET routing ignores a trailing slash
        for route in self.routes:
            params = route.match(request.method, path)
            if params is not None:
                break
        else:
            return Response(status_code=404)  # unknown path or method: empty 404, like the Functions host
        request.scope["path_params"] = params
        function, invocation = route.function, new_invocation()
        try:
            arg = await _classic_request(request) if route.classic else request
            result = await invoke(function.fn, {function.trigger.name: arg}, self.function_timeout)
            response = to_response(result)
        except Exception as exc:
            log_executed(function.name, invocation, exc)
            return Response(status_code=500)  # the Functions host hides the error from the caller
        log_executed(function.name, invocation, None)
        return response


def create_app(routes: list[HttpRoute], function_timeout: float | None) -> Starlette:
    """A Starlette app passing every path and method to the function routes (no 405s, empty 404s)."""
    # A class instance endpoint is mounted as raw ASGI, so Starlette applies no method filter.
    every_path = Route("/{path:path}", _Dispatcher(routes, function_timeout))
    every_path.path_regex = re.compile(every_path.path_regex.pattern, re.DOTALL)  # %0A in a path too
    return Starlette(routes=[every_path])
