"""Job webhooks against a real HTTP server on loopback: the deadline, the bounded read, retries,
and the peer check, with the production sender, vetting and HTTP stack.

The SSRF guard rightly refuses loopback, so the test plays the network instead: the hook's name
resolves to a public address (`PUBLIC_IP`), and the test's network backend routes connections for
that address to the server on 127.0.0.1, as a NAT would (the connection's peer is reported as the
public address). Without the masquerade the peer is the loopback address, and the sender must
refuse it before sending anything.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpcore
import httpx
import pytest
from aiohttp import web

from shared.services.jobs import WebhookSender
from shared.services.jobs.notify import USER_AGENT, WebhookFailed
from shared.services.tools import ToolBlocked, ToolSettings
from shared.services.tools.outbound import Outbound
from tools.stack import LOOPBACK

PUBLIC_IP = "93.184.216.34"
HOOK = "http://hooks.example.com/hook"
SIGNED = {"x-cirrus-timestamp": "1", "x-cirrus-signature": "sha256=00"}
BODY = json.dumps({"v": 1, "job_id": "job_x", "status": "completed"}).encode()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Receiver:
    """An aiohttp server answering each request with the next scripted handler (then 200)."""

    def __init__(self) -> None:
        self.script: list[Handler] = []
        self.requests: list[tuple[web.Request, bytes]] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request, await request.read()))
        if self.script:
            return await self.script.pop(0)(request)
        return web.Response(text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    found.port = runner.addresses[0][1]
    try:
        yield found
    finally:
        await runner.cleanup()


# --- the test's network ----------------------------------------------------------------------------


class _Masqueraded(httpcore.AsyncNetworkStream):
    """A connection whose peer is reported as the public address it was made to (as through a NAT)."""

    def __init__(self, stream: httpcore.AsyncNetworkStream, peer: tuple[str, int]) -> None:
        self._stream, self._peer = stream, peer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    def get_extra_info(self, info: str) -> Any:
        return self._peer if info == "server_addr" else self._stream.get_extra_info(info)


class _Routes(httpcore.AsyncNetworkBackend):
    def __init__(self, routes: dict[str, int], masquerade: bool) -> None:
        self._routes, self._masquerade = routes, masquerade
        self._real = httpcore.AnyIOBackend()
        self.connections = 0

    async def connect_tcp(  # httpcore's interface names its argument `timeout`
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        **_: Any,
    ) -> httpcore.AsyncNetworkStream:
        if host not in self._routes:
            raise httpcore.ConnectError(f"no route to {host}")
        self.connections += 1
        stream = await self._real.connect_tcp(LOOPBACK, self._routes[host], timeout=timeout)
        return _Masqueraded(stream, (host, port)) if self._masquerade else stream

    async def sleep(self, seconds: float) -> None:
        await self._real.sleep(seconds)


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            yield part

    async def aclose(self) -> None:
        await self._stream.aclose()


class RoutedTransport(httpx.AsyncBaseTransport):
    """Real HTTP over real sockets, on the test's network (httpcore with a routing backend)."""

    def __init__(self, backend: _Routes) -> None:
        self._pool = httpcore.AsyncConnectionPool(network_backend=backend)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,  # type: ignore[arg-type]
            extensions=request.extensions,
        )
        answer = await self._pool.handle_async_request(sent)
        return httpx.Response(
            answer.status, headers=answer.headers, stream=_Body(answer.stream), extensions=answer.extensions
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


async def public_dns(host: str, port: int) -> list[str]:
    if host != "hooks.example.com":
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return [PUBLIC_IP]


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def sender(port: int, *, masquerade: bool = True, timeout: float = 5.0, sleeps: Sleeps | None = None):
    backend = _Routes({PUBLIC_IP: port}, masquerade)
    settings = ToolSettings(http_allowlist=("hooks.example.com",), http_timeout_s=timeout)
    outbound = Outbound(resolver=public_dns, transport=lambda: RoutedTransport(backend))
    deliver = WebhookSender(settings, outbound=outbound, sleep=sleeps if sleeps is not None else Sleeps())
    return deliver, backend


def status(code: int, text: str = "") -> Handler:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=code, text=text)

    return answer


# --- the tests -------------------------------------------------------------------------------------


async def test_a_webhook_is_posted_signed_to_the_vetted_address(receiver):
    deliver, backend = sender(receiver.port)
    await deliver(HOOK, BODY, SIGNED)
    ((request, body),) = receiver.requests
    assert request.method == "POST" and request.path == "/hook" and body == BODY
    assert request.headers["host"] == "hooks.example.com"  # the name; the connection went to the address
    assert request.headers["x-cirrus-signature"] == "sha256=00"
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["content-type"] == "application/json"
    assert backend.connections == 1


async def test_a_connection_whose_peer_is_not_the_vetted_address_is_refused_before_sending(receiver):
    deliver, backend = sender(receiver.port, masquerade=False)  # the peer shows as 127.0.0.1
    with pytest.raises(ToolBlocked, match=f"connected to 127.0.0.1, not the vetted address {PUBLIC_IP}"):
        await deliver(HOOK, BODY, SIGNED)
    assert backend.connections == 1 and receiver.requests == []  # not a byte of the job's result went out


async def test_a_failing_receiver_gets_three_attempts_a_second_then_two_apart(receiver):
    receiver.script = [status(500), status(503)]
    sleeps = Sleeps()
    deliver, _ = sender(receiver.port, sleeps=sleeps)
    await deliver(HOOK, BODY, SIGNED)  # the third attempt gets the default 200
    assert len(receiver.requests) == 3 and sleeps == [1.0, 2.0]


async def test_a_receiver_that_keeps_failing_is_a_webhook_failure_after_three_attempts(receiver):
    receiver.script = [status(503, "down for maintenance")] * 3
    sleeps = Sleeps()
    deliver, _ = sender(receiver.port, sleeps=sleeps)
    with pytest.raises(WebhookFailed) as caught:
        await deliver(HOOK, BODY, SIGNED)
    assert (caught.value.attempts, caught.value.status) == (3, 503)
    assert caught.value.reason == "HTTP 503: down for maintenance"
    assert len(receiver.requests) == 3 and sleeps == [1.0, 2.0]


@pytest.mark.parametrize("code", [400, 404, 302])
async def test_an_answer_that_will_not_change_is_not_tried_again(receiver, code):
    receiver.script = [status(code)]
    deliver, _ = sender(receiver.port)
    with pytest.raises(WebhookFailed) as caught:
        await deliver(HOOK, BODY, SIGNED)
    assert (caught.value.attempts, caught.value.status) == (1, code)
    assert len(receiver.requests) == 1


async def test_a_huge_answer_is_never_read_whole(receiver):
    total = 64 * 1024 * 1024
    written: list[int] = []
    done = asyncio.Event()

    async def firehose(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"content-type": "text/plain"})
        response.content_length = total
        await response.prepare(request)
        sent, chunk = 0, b"x" * 65536
        try:
            while sent < total:
                await response.write(chunk)
                sent += len(chunk)
        except (ConnectionError, RuntimeError):  # the sender hung up
            pass
        finally:
            written.append(sent)
            done.set()
        return response

    receiver.script = [firehose]
    deliver, _ = sender(receiver.port)
    await deliver(HOOK, BODY, SIGNED)
    await asyncio.wait_for(done.wait(), 30)
    assert written[0] < total  # the sender closed the connection instead of reading 64 MB


async def test_one_deadline_covers_the_whole_attempt_even_a_trickling_answer():
    """A receiver that sends its answer a byte at a time, each within the I/O timeout: only a
    deadline over the whole attempt ends it (a 2 s setting once let a webhook take 12 s)."""
    connections: list[int] = []

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await reader.readuntil(b"\r\n\r\n")
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 200:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.05)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(trickle, LOOPBACK, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        deliver, _ = sender(port, timeout=0.5)
        with pytest.raises(WebhookFailed) as caught:
            await deliver(HOOK, BODY, SIGNED)
    finally:
        server.close()
    assert caught.value.reason == "no answer within 0.5 s" and caught.value.attempts == 3
    assert len(connections) == 3
