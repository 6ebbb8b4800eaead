"""The worker's HTTP server serves Cirrus's functions and nothing else.

With the HTTP streaming extension (azurefunctions-extensions-http-fastapi), the Functions worker runs
a FastAPI app whose one route, `/{path:path}`, hands each request to the function the host routed it
to. That app is a plain `FastAPI()`, so FastAPI's own routes come first: `/openapi.json` (a document
of that one catch-all route), `/docs` and `/docs/oauth2-redirect` (Swagger UI, loaded from a CDN)
and `/redoc`. In Azure they would answer before any function, unauthenticated: Cirrus's own
`GET /openapi.json` would never run. Running the app under the real worker locally showed it.

Its catch-all route also stops at a newline: Starlette's `{path:path}` is `.*`, so a request
whose path holds an encoded one (`/v1/models/a%0Ab`) gets FastAPI's own 404, `{"detail": "Not
Found"}`, while the invocation the host started for it waits for its request until the function
timeout. The Functions host routes such a path (ASP.NET matches it), so the catch-all must too.

FastAPI (0.165) also instruments itself with OpenTelemetry whenever an SDK provider is set: a second
SERVER span per request, named after the catch-all, with HTTP metrics and logs, beside Cirrus's own.

`serve_only_functions()` makes the extension build its app without FastAPI's routes and telemetry,
and with a catch-all that matches any path. It patches the extension's `WebApp` (pinned:
azurefunctions-extensions-http-fastapi 1.0.1), and checks that the class still builds its app and
route the way this expects, failing at import otherwise, so a new release cannot quietly undo it.
tests/e2e/test_openapi_fuzz.py checks the served document is Cirrus's, tests/e2e/test_platform.py
that a newline in a path reaches Cirrus.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from azurefunctions.extensions.http.fastapi import web
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

_EXPECTED = {"__init__": "self.web_app = FastAPI()", "route": '"/{path:path}"'}
CATCH_ALL = "/{path:path}"
_original_route = web.WebApp.route


# FastAPI's own OpenTelemetry (on whenever an SDK provider is set, as Cirrus sets one): a second
# SERVER span per request named after the catch-all (`GET /{path:path}`), HTTP metrics and log
# records beside Cirrus's own, counted twice in Application Insights, and CPU on every request.
_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def _functions_only(self: web.WebApp) -> None:
    self.web_app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, telemetry=_NO_TELEMETRY)


def _route_any_path(self: web.WebApp, func: Callable[..., Any]) -> Any:
    decorated = _original_route(self, func)
    for route in self.web_app.router.routes:
        if getattr(route, "path", None) == CATCH_ALL:  # `.*` across newlines too
            route.path_regex = re.compile(route.path_regex.pattern, re.DOTALL)
    return decorated


def serve_only_functions() -> None:
    """Make the worker's FastAPI app carry no routes of its own and route every path (idempotent)."""
    if web.WebApp.__init__ is _functions_only:
        return
    for name, expected in _EXPECTED.items():
        if expected not in inspect.getsource(getattr(web.WebApp, name)):
            raise RuntimeError(
                f"azurefunctions-extensions-http-fastapi's WebApp.{name} no longer holds `{expected}`: "
                "review shared/worker_http.py for this release"
            )
    web.WebApp.__init__ = _functions_only
    web.WebApp.route = _route_any_path
