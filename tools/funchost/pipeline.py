"""The host's HTTP middleware, in front of its routing (http.py), in the order Azure's host runs it.

On Flex Consumption the host's own middleware pipeline runs `CustomHttpHeadersMiddleware` (host.json
`extensions.http.customHeaders`), then `JobHostCorsMiddleware` (cors.py), then the function. So a
preflight answered by CORS gets the custom headers too, and the custom headers are applied after
CORS has set its own: `TryAdd`, a header the response already has (from the function or from CORS)
is left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .cors import CorsMiddleware, CorsPolicy


class CustomHeadersMiddleware:
    """host.json `extensions.http.customHeaders`, added to every response that lacks them."""

    def __init__(self, app: ASGIApp, headers: Sequence[tuple[str, str]]) -> None:
        self.app = app
        self.headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.headers:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                present = {name.lower() for name, _ in raw}
                raw += [(name, value) for name, value in self.headers if name not in present]
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def host_pipeline(app: ASGIApp, custom_headers: Sequence[tuple[str, str]], cors: CorsPolicy) -> ASGIApp:
    """`app` (the host's routing) behind CORS, behind the custom headers."""
    return CustomHeadersMiddleware(CorsMiddleware(app, cors), custom_headers)
