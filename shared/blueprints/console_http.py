"""The web console: its static files under /console, and signing in at /console/api/session.

The files come from the package's own `console/` folder (beside `function_app.py`); the page uses
hash routing, so `/console` and any path under it without a file extension answer `index.html`.
Every answer carries a strict Content-Security-Policy: scripts, styles and everything else from
Cirrus only, no inline code, no framing.

Signing in exchanges a key for a session cookie (`shared/services/console_sessions.py`); the
console then calls the `/v1` API with that cookie and `X-Cirrus-Console: 1` (`_http.authenticate`).
"""

import re
import time
from pathlib import Path

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import BYTES, TEXT, Operation, Reply
from shared.blueprints._http import RequestContext, client_ip, endpoint, json_response, read_json
from shared.errors import AuthenticationError, InvalidRequestError, NotFoundError
from shared.models.audit import TargetType
from shared.models.console import ConsoleSessionCreate, ConsoleSessionPublic
from shared.models.validation import validate_body
from shared.services.audit import Actor
from shared.services.auth import MASTER_KEY_ID
from shared.services.console_sessions import COOKIE_NAME, SESSION_TTL_S, ConsoleSession

bp = func.Blueprint()

ROOT = Path(__file__).resolve().parents[2] / "console"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
NO_CACHE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"
_HASHED = re.compile(r"\.[0-9a-f]{8,}\.[a-z0-9]+$")  # app.3f2a9c1e.js: its name changes with it
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # no dot-files, no `..`, no escapes
MAX_BODY_BYTES = 20_000  # an Entra ID token is a few kilobytes
STATIC = Operation(
    "The web console (static files; paths without an extension answer its page)",
    returns={
        200: Reply(
            TEXT,
            media="text/html",
            also={
                "text/javascript": TEXT,
                "text/css": TEXT,
                "application/json": {},
                "image/svg+xml": TEXT,
                "text/plain": TEXT,
                "image/png": BYTES,
                "image/x-icon": BYTES,
                "font/woff2": BYTES,
                "application/octet-stream": BYTES,
            },
        )
    },
    tags=("console",),
)


@bp.route(route="console", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(authenticated=False, contract=STATIC)
async def console_page(req: Request, ctx: RequestContext) -> Response:
    ctx.headers.update(SECURITY_HEADERS)
    return _file("index.html")


@bp.route(route="console/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(authenticated=False, contract=STATIC)
async def console_file(req: Request, ctx: RequestContext) -> Response:
    ctx.headers.update(SECURITY_HEADERS)
    path = req.path_params.get("path") or ""
    segments = [s for s in path.split("/") if s]
    if not segments or "." not in segments[-1]:  # a page of the app, not a file
        return _file("index.html")
    if not all(_SEGMENT.match(s) for s in segments):
        raise _not_found(path)
    return _file("/".join(segments))


@bp.route(route="console/api/session", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    authenticated=False,
    contract=Operation(
        "Sign in to the console: a key for a session cookie",
        body=ConsoleSessionCreate,
        returns={200: ConsoleSessionPublic},
        errors=(401,),
        tags=("console",),
    ),
)
async def create_console_session(req: Request, ctx: RequestContext) -> Response:
    ctx.headers.update(SECURITY_HEADERS)
    # JSON only: a cross-site HTML form cannot send it, so no other site can sign a browser in.
    if req.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise InvalidRequestError("Send the key as a JSON body with Content-Type: application/json.")
    body = validate_body(ConsoleSessionCreate, await read_json(req, MAX_BODY_BYTES))
    try:
        cookie, session = await ctx.container.console.sign_in(body.key)
    except AuthenticationError as exc:  # a failed attempt is audited too, by address: no key shown
        # No session to name: failures are grouped by day, so a flood of them spreads over partitions.
        failed = "failed-" + time.strftime("%Y-%m-%d", time.gmtime())
        await ctx.container.audit.record(
            ctx.actor(req),
            "console.sign_in",
            ("console.session", failed),
            outcome="failure",
            reason=exc.message,
        )
        raise
    await ctx.container.audit.record(_actor(req, ctx, session), "console.sign_in", _target(session))
    response = json_response(session.public())
    response.headers.append("set-cookie", _cookie(cookie, SESSION_TTL_S, secure=_secure(ctx)))
    return response


@bp.route(route="console/api/session", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    authenticated=False,
    contract=Operation(
        "The console's signed-in session",
        returns={200: ConsoleSessionPublic},
        errors=(401,),
        tags=("console",),
    ),
)
async def get_console_session(req: Request, ctx: RequestContext) -> Response:
    ctx.headers.update(SECURITY_HEADERS)
    session, _principal = await ctx.container.console.resolve(req.cookies.get(COOKIE_NAME))
    return json_response(session.public())


@bp.route(route="console/api/session", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    authenticated=False,
    contract=Operation(
        "Sign out of the console: the session ends", returns={204: Reply({}, media="")}, tags=("console",)
    ),
)
async def delete_console_session(req: Request, ctx: RequestContext) -> Response:
    ctx.headers.update(SECURITY_HEADERS)
    session = await ctx.container.console.sign_out(req.cookies.get(COOKIE_NAME))
    if session is not None:
        await ctx.container.audit.record(_actor(req, ctx, session), "console.sign_out", _target(session))
    response = Response(status_code=204)
    response.headers.append("set-cookie", _cookie("", 0, secure=_secure(ctx)))
    return response


def _actor(req: Request, ctx: RequestContext, session: ConsoleSession) -> Actor:
    return Actor(session.key_id or MASTER_KEY_ID, session.kind, session.name, ctx.request_id, client_ip(req))


def _target(session: ConsoleSession) -> tuple[TargetType, str]:
    return ("console.session", session.session_id)


def _cookie(value: str, max_age: int, *, secure: bool) -> str:
    attributes = f"{COOKIE_NAME}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}"
    return attributes + "; Secure" if secure else attributes


def _secure(ctx: RequestContext) -> bool:
    return not ctx.container.settings.is_local


def _file(relative: str) -> Response:
    try:
        path = (ROOT / relative).resolve()
        found = path.is_relative_to(ROOT.resolve()) and path.is_file()
        content = path.read_bytes() if found else None
    except (OSError, ValueError):
        content = None
    if content is None:
        raise _not_found(relative)
    cache = IMMUTABLE if relative.startswith("vendor/") or _HASHED.search(path.name) else NO_CACHE
    media = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return Response(content, headers={"Cache-Control": cache, "Content-Type": media})


def _not_found(path: str) -> NotFoundError:
    return NotFoundError(f"The console has no file {path[:100]!r}.", code="unknown_url")
