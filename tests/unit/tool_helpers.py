"""Shared helpers for tests of outbound requests: scripted DNS and a scripted web.

Used by the tool tests and the job runner's tests (a prompt-injected redirect), so they live here
rather than in either test file.
"""

from __future__ import annotations

import socket

import httpx

from shared.services.tools.http_get import HttpGetTool

PUBLIC_IP = "93.184.216.34"
OTHER_PUBLIC_IP = "93.184.216.35"


class FakeDNS:
    """Answers by name; a list of answers is used one per lookup (to script a DNS rebinding)."""

    def __init__(self, answers):
        self.answers = answers
        self.lookups: list[str] = []

    async def __call__(self, host, port):
        self.lookups.append(host)
        answer = self.answers.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if answer and isinstance(answer[0], list):
            return answer.pop(0)
        return answer


class FakeWeb:
    """A scripted web behind httpx.MockTransport: routes by (Host header, path); records requests."""

    def __init__(self, routes=None):
        self.routes = routes or {}
        self.requests: list[httpx.Request] = []
        self.transports = 0

    def transport(self):
        self.transports += 1
        return httpx.MockTransport(self.handle)

    async def handle(self, request):
        self.requests.append(request)
        route = self.routes.get((request.headers["host"], request.url.path), httpx.Response(404, text="?"))
        response = await route(request) if callable(route) else route
        if not response.is_stream_consumed:
            return response
        # A fresh, unread body each time, as a real transport gives; raw, so still compressed if it was.
        body = httpx.ByteStream(b"".join(response.stream))
        return httpx.Response(
            response.status_code, headers=response.headers, stream=body, extensions=response.extensions
        )


def text(body="hello", status=200, content_type="text/plain; charset=utf-8", **headers):
    return httpx.Response(status, headers={"content-type": content_type, **headers}, content=body)


def redirect(location, status=302):
    return httpx.Response(status, headers={"location": location})


def http_tool(dns=None, web=None):
    """http_get with scripted DNS (example.com is public by default) and a scripted web."""
    dns = {"example.com": [PUBLIC_IP]} if dns is None else dns
    return HttpGetTool(resolver=FakeDNS(dns), transport=(web or FakeWeb()).transport)
