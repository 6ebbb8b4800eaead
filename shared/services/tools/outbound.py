"""Outbound HTTP under the SSRF guard: vet a URL, then send the request to a vetted address.

Used by `http_get` (every hop) and by job webhooks, so both follow the same rules. Vetting: a host
on the allowlist and not an internal name, and every address it resolves to public (see
`network.py`); a URL naming an address is checked the same way. The request then goes to the
vetted address itself, not to the name: the URL carries the IP, the `Host` header and the TLS SNI
(and so certificate checking) carry the name, so a DNS answer that changes between the check and
the connection (DNS rebinding) cannot move it. As a second line, the connection's peer address is
compared with the vetted one as soon as the connection is made, before any byte of the request is
sent (httpx's `trace` extension), and again on the response when the transport reports it (test
transports may report it only there, or not at all). Nothing ambient is used:
no proxy or .netrc from the environment (`trust_env=False`), no redirects followed, no cookies.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from shared.services.tools.base import ToolBlocked, ToolError, ToolSettings
from shared.services.tools.network import (
    IPAddress,
    Resolver,
    blocked_name,
    literal_address,
    normalise_host,
    on_allowlist,
    system_resolver,
    unsafe_address,
)

TransportFactory = Callable[[], httpx.AsyncBaseTransport]


def default_transport() -> httpx.AsyncBaseTransport:
    return httpx.AsyncHTTPTransport(retries=0)


@dataclass(frozen=True)
class Hop:
    """A vetted request: the URL as asked for, and the public addresses it may be sent to."""

    url: httpx.URL
    host: str
    addresses: tuple[IPAddress, ...]
    literal: bool


class Outbound:
    def __init__(
        self, resolver: Resolver = system_resolver, transport: TransportFactory = default_transport
    ) -> None:
        """`resolver` and `transport` are seams for tests; production uses system DNS and real sockets.

        `transport` is called once per address tried, so no connection is reused across hosts.
        """
        self._resolve = resolver
        self._transport = transport

    async def vet(self, url: httpx.URL, settings: ToolSettings) -> Hop:
        """The URL's vetted addresses, or ToolBlocked saying why it may not be requested."""
        host = normalise_host(url.raw_host.decode("ascii"))
        reason = blocked_name(host)
        if reason:
            raise ToolBlocked(reason)
        literal = literal_address(host)
        if literal is not None and (reason := unsafe_address(literal)):
            raise ToolBlocked(reason)
        if not on_allowlist(host, settings.http_allowlist):
            empty = " (no hosts are allowed: the allowlist is empty)" if not settings.http_allowlist else ""
            raise ToolBlocked(f"host {host} is not on the allowlist{empty}")
        if literal is not None:
            return Hop(url, host, (literal,), literal=True)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            found = await self._resolve(host, port)
            addresses = tuple(dict.fromkeys(ipaddress.ip_address(a) for a in found))
        except (OSError, ValueError):  # socket.gaierror is an OSError
            raise ToolError(f"Could not resolve the host {host}.") from None
        if not addresses:
            raise ToolError(f"Could not resolve the host {host}.")
        for address in addresses:
            if reason := unsafe_address(address):
                raise ToolBlocked(f"{host} resolves to {reason}")
        return Hop(url, host, addresses, literal=False)

    @contextlib.asynccontextmanager
    async def send(
        self,
        hop: Hop,
        method: str,
        headers: Mapping[str, str],
        *,
        io_timeout_s: float,
        content: bytes | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """The streamed response from the first vetted address that accepts a connection (its body
        not yet read). ToolBlocked if the connection's peer is not the vetted address. `io_timeout_s`
        caps each network operation; the caller's deadline caps the whole."""
        headers = {**headers, "Host": hop.url.netloc.decode("ascii")}
        sni = {} if hop.literal or hop.url.scheme != "https" else {"sni_hostname": hop.host}
        failure = ""
        for address in hop.addresses:
            extensions = {**sni, "trace": _peer_guard(address)}
            async with httpx.AsyncClient(
                transport=self._transport(),
                trust_env=False,
                follow_redirects=False,
                timeout=io_timeout_s,
            ) as client:
                pinned = hop.url.copy_with(host=str(address))
                request = client.build_request(
                    method, pinned, headers=headers, content=content, extensions=extensions
                )
                try:
                    response = await client.send(request, stream=True)
                except httpx.ConnectError as exc:  # refused, unreachable, or a TLS certificate failure
                    failure = str(exc)[:200]
                    continue  # the next address, as a browser would
                try:
                    check_peer(response, address)
                    yield response
                finally:
                    await response.aclose()
                return
        raise ToolError(f"Could not connect to {hop.host}: {failure or 'no answer'}")


def check_peer(response: httpx.Response, expected: IPAddress) -> None:
    """Refuse a response whose connection's peer is not the vetted address (when it is known)."""
    stream = response.extensions.get("network_stream")
    if reason := _wrong_peer(stream, expected):
        raise ToolBlocked(reason)


def _peer_guard(expected: IPAddress) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """An httpx `trace` callback that refuses a connection to any peer but `expected` as soon as
    it is made, before the request is written to it."""

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        stream = info.get("return_value")
        if stream is not None and (reason := _wrong_peer(stream, expected)):
            await stream.aclose()
            raise ToolBlocked(reason)

    return trace


def _wrong_peer(stream: Any, expected: IPAddress) -> str | None:
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if not peer:
        return None
    actual = ipaddress.ip_address(str(peer[0]).partition("%")[0])
    return None if actual == expected else f"connected to {actual}, not the vetted address {expected}"
