"""http_get: fetch one URL from an allowlisted public host, guarded against SSRF.

Each hop (the first request and every redirect, followed by hand) is vetted before it is sent:
http or https only, no credentials in the URL, a host on the allowlist and not an internal name,
and every address the host resolves to public. The request then goes to the vetted address
itself, not to the name, and the connection's peer is checked against it (`outbound.py`), so a
DNS answer that changes between the check and the connection (DNS rebinding) cannot move it.

Nothing ambient is sent or used: no cookies, no credentials, no proxy or .netrc from the
environment (`trust_env=False`), a fixed User-Agent. One deadline covers DNS, every hop and the
body; the body is streamed and dropped past `http_max_bytes`, compressed or not.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import zlib
from typing import Any

import httpx

from shared.services.tools.base import (
    Param,
    ToolBlocked,
    ToolContext,
    ToolError,
    ToolSettings,
    function_spec,
    parse_arguments,
)
from shared.services.tools.network import Resolver, system_resolver
from shared.services.tools.outbound import Outbound, TransportFactory, default_transport

log = logging.getLogger("cirrus.tools")

USER_AGENT = "Cirrus-Agent/1"
MAX_URL_CHARS = 2_000
_TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/ld+json",
        "application/x-ndjson",
        "application/xml",
        "application/xhtml+xml",
        "application/rss+xml",
        "application/atom+xml",
        "application/javascript",
        "application/ecmascript",
        "application/yaml",
        "application/x-yaml",
        "application/csv",
        "application/x-www-form-urlencoded",
    }
)

HEADERS = {"User-Agent": USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"}
PARAMS = (Param("url", str, "An absolute http:// or https:// URL.", minimum=1, maximum=MAX_URL_CHARS),)


class HttpGetTool:
    name = "http_get"

    def __init__(
        self, resolver: Resolver = system_resolver, transport: TransportFactory = default_transport
    ) -> None:
        """`resolver` and `transport` are seams for tests; production uses system DNS and real sockets.

        `transport` is called once per hop, so no connection is reused across hosts.
        """
        self._outbound = Outbound(resolver, transport)

    def spec(self) -> dict[str, Any]:
        return function_spec(
            self.name,
            "Fetch a URL with HTTP GET and return its status, content type and text body. Only hosts "
            "on the server's allowlist can be fetched; binary responses are refused.",
            PARAMS,
        )

    async def run(self, arguments: dict[str, Any], ctx: ToolContext) -> str:
        url = parse_arguments(arguments, PARAMS)["url"]
        settings = ctx.settings
        try:
            async with asyncio.timeout(settings.http_timeout_s):
                return await self._fetch(url, settings)
        except ToolBlocked as exc:
            log.warning("http_get refused: %s", exc.reason)
            raise
        except (TimeoutError, httpx.TimeoutException):
            raise ToolError(f"The request timed out after {settings.http_timeout_s:g} seconds.") from None
        except httpx.HTTPError as exc:
            detail = str(exc)[:200] or type(exc).__name__
            raise ToolError(f"The request failed: {detail}") from None

    async def _fetch(self, text: str, settings: ToolSettings) -> str:
        url = _parse_url(text)
        for _ in range(settings.http_max_redirects + 1):
            hop = await self._outbound.vet(url, settings)
            sent = self._outbound.send(hop, "GET", HEADERS, io_timeout_s=settings.http_timeout_s)
            async with sent as response:
                if not response.has_redirect_location:
                    return await _render(response, url, settings.http_max_bytes)
                location = response.headers["location"]
            try:
                url = _parse_url(str(url.join(location)))
            except httpx.InvalidURL:
                raise ToolError("The server redirected to an invalid URL.") from None
        raise ToolError(f"Stopped after {settings.http_max_redirects} redirects.")


def _parse_url(text: str) -> httpx.URL:
    try:
        url = httpx.URL(text.strip())
        url.netloc.decode("ascii")  # an international name is IDNA-encoded by now; anything else is junk
    except (httpx.InvalidURL, ValueError, TypeError):  # UnicodeDecodeError is a ValueError
        raise ToolError("That is not a valid URL.") from None
    if url.scheme not in ("http", "https"):
        raise ToolBlocked(f"scheme {url.scheme or '(none)'!r} is not allowed; only http and https are")
    if url.userinfo:
        raise ToolBlocked("URLs with credentials are not fetched")
    if not url.raw_host:
        raise ToolError("The URL has no host.")
    return url


async def _render(response: httpx.Response, url: httpx.URL, limit: int) -> str:
    content_type = response.headers.get("content-type", "")
    mime = content_type.partition(";")[0].strip().lower()
    if mime and not _is_text(mime):
        raise ToolError(f"The response is {mime}, not text; http_get only returns text.")
    body, truncated = await _read_body(response, limit)
    if not mime and b"\x00" in body:
        raise ToolError("The response is binary, not text; http_get only returns text.")
    status = f"{response.status_code} {response.reason_phrase}".strip()
    out = f"Status: {status}\nURL: {url}\nContent-Type: {content_type or 'unknown'}\n\n"
    out += body.decode(_charset(response), errors="replace")
    if truncated:
        out += f"\n[truncated: only the first {limit} bytes of the body were read]"
    return out


async def _read_body(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the (decompressed) body, and whether there was more.

    Decompression is bounded too: a small gzip bomb never expands past the cap in memory.
    """
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        inflate: Any = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflate = zlib.decompressobj()
    elif encoding in ("", "identity"):
        inflate = None
    else:
        raise ToolError(f"The response uses the {encoding!r} encoding, which http_get cannot read.")
    body = bytearray()
    try:
        async for raw in response.aiter_raw():
            body += inflate.decompress(raw, limit + 1 - len(body)) if inflate else raw
            if len(body) > limit:
                return bytes(body[:limit]), True
    except zlib.error:
        raise ToolError("The response's compressed body is corrupt.") from None
    return bytes(body), False


def _is_text(mime: str) -> bool:
    return mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith(("+json", "+xml"))


def _charset(response: httpx.Response) -> str:
    charset = response.charset_encoding or "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        return "utf-8"
    return charset
