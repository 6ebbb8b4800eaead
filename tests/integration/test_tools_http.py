"""http_get with its production resolver and transport against a real server on loopback: refused.

No internet is needed: the only server is local, and the point is that http_get never reaches it.
"""

import asyncio
import ipaddress
import socket

import httpx
import pytest

from shared.services.auth import Principal
from shared.services.files import FileService
from shared.services.tools import ToolBlocked, ToolContext, ToolSettings
from shared.services.tools.http_get import HttpGetTool
from shared.services.tools.network import system_resolver, unsafe_address
from tests.fakes import InMemoryBlobStore, InMemoryDocumentStore
from tools.stack import LOOPBACK


@pytest.fixture
async def server():
    """A tiny HTTP server on loopback that counts the requests it answers."""
    hits = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        hits.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nsecret")
        await writer.drain()
        writer.close()

    running = await asyncio.start_server(answer, LOOPBACK, 0)
    port = running.sockets[0].getsockname()[1]
    try:
        yield port, hits
    finally:
        running.close()
        await running.wait_closed()


def context(*allowed):
    files = FileService(InMemoryDocumentStore(), InMemoryBlobStore(), "uploads")
    return ToolContext(Principal("key-a", False), files, ToolSettings(http_allowlist=allowed))


async def test_the_server_is_reachable_directly(server):
    port, hits = server
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"http://{LOOPBACK}:{port}/")
    assert response.text == "secret"
    assert hits == [1]


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        (LOOPBACK, "loopback address 127.0.0.1"),
        ("localhost", "localhost is an internal name"),
        ("[::ffff:127.0.0.1]", "loopback address 127.0.0.1"),
        ("0.0.0.0", "unspecified address 0.0.0.0"),
    ],
)
async def test_http_get_never_reaches_loopback(server, host, reason):
    port, hits = server
    allowed = host.strip("[]")
    with pytest.raises(ToolBlocked) as caught:
        await HttpGetTool().run({"url": f"http://{host}:{port}/"}, context(allowed, "localhost"))
    assert reason in caught.value.reason
    assert hits == []


async def test_the_system_resolver_answers_localhost_with_loopback_addresses():
    addresses = await system_resolver("localhost", 80)
    assert addresses
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses)


async def test_a_name_the_system_resolves_to_an_internal_address_is_refused(server):
    # This machine's own name is not on any block list: only the DNS answer gives it away.
    port, hits = server
    name = socket.gethostname().lower()
    try:
        addresses = await system_resolver(name, port)
    except OSError:
        pytest.skip(f"{name} does not resolve here")
    if not any(unsafe_address(ipaddress.ip_address(a)) for a in addresses):
        pytest.skip(f"{name} resolves to public addresses here")
    with pytest.raises(ToolBlocked) as caught:
        await HttpGetTool().run({"url": f"http://{name}:{port}/"}, context(name))
    assert caught.value.reason.startswith(f"{name} resolves to ")
    assert hits == []
