"""CORS, as the Functions host applies it before any function runs.

Both places a Functions app gets CORS build the same ASP.NET Core policy: Core Tools (`func start`)
from `Host.CORS` / `Host.CORSCredentials` in local.settings.json or `--cors` / `--cors-credentials`,
and the host on Flex Consumption from the site's `cors.allowedOrigins` / `supportCredentials`:
`WithOrigins(origins).AllowAnyHeader().AllowAnyMethod()`, plus `AllowCredentials()` when asked.
This module is that policy and ASP.NET's CorsMiddleware/CorsService over it:

- A request without an `Origin` header is not a CORS request: it passes untouched.
- A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered here, 204
  with no body, whatever the path, and never reaches a function. For an allowed origin it carries
  `Access-Control-Allow-Origin`, `Access-Control-Allow-Methods` (the requested method),
  `Access-Control-Allow-Headers` (the requested headers) and, with credentials,
  `Access-Control-Allow-Credentials: true`; no `Access-Control-Max-Age`. For any other origin it
  carries none of them.
- Any other request from an allowed origin gets `Access-Control-Allow-Origin` (and
  `Access-Control-Allow-Credentials: true` with credentials) on the function's response.
- `Vary: Origin` is added when the list has more than one origin (ASP.NET's rule). The policy sets
  no exposed headers: there is no such setting in Azure. An app that wants the browser to read its
  own headers lists them in host.json's `extensions.http.customHeaders` (pipeline.py), which the
  host adds to every response.
- `*` as the only origin allows any origin (`Access-Control-Allow-Origin: *`); anywhere else in
  the list it is a literal that no browser sends. `*` with credentials is refused at start, as
  ASP.NET's policy builder refuses it.
- Configured origins are lower-cased; a request's `Origin` is compared with them exactly. An entry
  with a path, a trailing slash or spaces never matches (Core Tools splits `Host.CORS` on commas
  and trims nothing), so the host warns about such entries at start.

Core Tools adds no CORS handling at all when no origin is configured; the Flex host builds its
policy from an empty list. Here the list may be empty too: every preflight is then a bare 204 and
no response carries CORS headers, which a browser sees as Core Tools' 404 would be: refused.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .hostconfig import HostConfigError

log = logging.getLogger("funchost")

ANY_ORIGIN = "*"
# A serialised origin: scheme://host[:port], nothing after it (what a browser sends in `Origin`).
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s?#,]+")
INSECURE = (
    "the CORS protocol does not allow a wildcard (any) origin and credentials at the same time: "
    "list the origins that may send credentials"
)


@dataclass(frozen=True)
class CorsPolicy:
    """Allowed origins (lower-cased, as ASP.NET normalises them) and whether credentials are."""

    origins: tuple[str, ...] = ()
    support_credentials: bool = False

    def __post_init__(self) -> None:
        if self.allow_any_origin and self.support_credentials:
            raise HostConfigError(f"CORS: {INSECURE}")

    @property
    def allow_any_origin(self) -> bool:
        return self.origins == (ANY_ORIGIN,)

    def allows(self, origin: str) -> bool:
        return bool(origin) and (self.allow_any_origin or origin in self.origins)

    def warnings(self) -> list[str]:
        """Entries that can never match a browser's `Origin` (the host still starts)."""
        found = []
        for origin in self.origins:
            if origin == ANY_ORIGIN:
                if len(self.origins) > 1:
                    found.append("'*' allows any origin only on its own; in a list it matches nothing")
            elif not _ORIGIN.fullmatch(origin):
                found.append(
                    f"{origin!r} is not an origin (scheme://host[:port], no path, no trailing slash,"
                    " no spaces): it matches no request"
                )
        return found

    def preflight_headers(self, origin: str, request: Headers) -> list[tuple[str, str]]:
        """The headers of the 204 answer to a preflight from an allowed `origin`."""
        headers = self._common(origin)
        requested = [
            name.strip()
            for value in request.getlist("access-control-request-headers")
            for name in value.split(",")
            if name.strip()
        ]
        if requested:
            headers.append(("access-control-allow-headers", ",".join(requested)))
        method = request.get("access-control-request-method", "")
        if method:
            headers.append(("access-control-allow-methods", method))
        return self._vary(headers)

    def response_headers(self, origin: str) -> list[tuple[str, str]]:
        """The headers added to a function's response to a request from an allowed `origin`."""
        return self._vary(self._common(origin))

    def _common(self, origin: str) -> list[tuple[str, str]]:
        headers = [("access-control-allow-origin", ANY_ORIGIN if self.allow_any_origin else origin)]
        if self.support_credentials:
            headers.append(("access-control-allow-credentials", "true"))
        return headers

    def _vary(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        varies = self.support_credentials if self.allow_any_origin else len(self.origins) > 1
        return [*headers, ("vary", "Origin")] if varies else headers


def parse_origins(text: str) -> tuple[str, ...]:
    """`Host.CORS` / `--cors`: comma-separated, empty entries dropped, nothing trimmed (Core Tools)."""
    return tuple(origin.lower() for origin in text.split(",") if origin)


def cors_policy(script_root: Path, origins: str | None = None, credentials: bool | None = None) -> CorsPolicy:
    """The policy from `--cors` / `--cors-credentials` where given, else from local.settings.json's
    `Host.CORS` / `Host.CORSCredentials` (as Core Tools takes them); none of them: no origin."""
    host = _host_section(script_root)
    if origins is None:
        origins = host.get("CORS") or ""
        if not isinstance(origins, str):
            raise HostConfigError(f"local.settings.json: Host.CORS must be a string, got {origins!r}")
    if credentials is None:
        credentials = _boolean(host.get("CORSCredentials", False))
    policy = CorsPolicy(parse_origins(origins), credentials)
    for warning in policy.warnings():
        log.warning("CORS: %s", warning)
    return policy


def _host_section(script_root: Path) -> Mapping[str, Any]:
    path = script_root / "local.settings.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise HostConfigError(f"{path}: invalid JSON ({exc})") from None
    host = data.get("Host") if isinstance(data, Mapping) else None
    if host is None:
        return {}
    if not isinstance(host, Mapping):
        raise HostConfigError(f"{path}: 'Host' must be an object")
    return host


def _boolean(value: object) -> bool:
    # Core Tools reads the file with Json.NET, which also takes "true" and "false" as strings.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise HostConfigError(f"local.settings.json: Host.CORSCredentials must be true or false, got {value!r}")


class CorsMiddleware:
    """ASP.NET Core's CorsMiddleware with one policy, in front of the host's routing."""

    def __init__(self, app: ASGIApp, policy: CorsPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Headers(scope=scope)
        if "origin" not in request:
            await self.app(scope, receive, send)
            return
        origin = request["origin"]
        allowed = self.policy.allows(origin)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in request:
            headers = self.policy.preflight_headers(origin, request) if allowed else []
            raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
            await send({"type": "http.response.start", "status": 204, "headers": raw})
            await send({"type": "http.response.body", "body": b""})
            return
        if not allowed:
            await self.app(scope, receive, send)
            return
        added = self.policy.response_headers(origin)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": _apply(message.get("headers", []), added)}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _apply(raw: list[tuple[bytes, bytes]], added: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """`added` set on the response: `Access-Control-*` replace the function's own, `Vary` appends."""
    replaced = {name.encode() for name, _ in added if name != "vary"}
    kept = [(k, v) for k, v in raw if k.lower() not in replaced]
    return kept + [(k.encode("latin-1"), v.encode("latin-1")) for k, v in added]
