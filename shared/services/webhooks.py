"""Webhook calls for finished jobs: signed, and held to the same outbound rules as `http_get`.

The URL's host must be on `CIRRUS_HTTP_ALLOWLIST` and resolve only to public addresses; the
request goes to the vetted address (pinned, so DNS cannot change between check and connect),
redirects are not followed, and the time is capped.
"""

from __future__ import annotations

import httpx

from shared.services.tools import ToolBlocked, ToolSettings
from shared.services.tools.http_get import HttpGetTool

USER_AGENT = "Cirrus-Webhook/1"


class WebhookSender:
    def __init__(self, settings: ToolSettings, vetting: HttpGetTool | None = None) -> None:
        self._settings = settings
        self._vetting = vetting or HttpGetTool()

    async def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https"):
            raise ToolBlocked(f"scheme {parsed.scheme!r} is not allowed")
        hop = await self._vetting._vet(parsed, self._settings)
        address = hop.addresses[0]
        extensions = {} if hop.literal or parsed.scheme != "https" else {"sni_hostname": hop.host}
        async with httpx.AsyncClient(
            trust_env=False, follow_redirects=False, timeout=self._settings.http_timeout_s
        ) as client:
            request = client.build_request(
                "POST",
                parsed.copy_with(host=str(address)),
                content=body,
                headers={
                    **headers,
                    "Host": parsed.netloc.decode("ascii"),
                    "User-Agent": USER_AGENT,
                    "Content-Type": "application/json",
                },
                extensions=extensions,
            )
            response = await client.send(request)
            response.raise_for_status()
