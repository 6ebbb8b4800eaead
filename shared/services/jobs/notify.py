"""The end of a job, told to whoever asked: its reply queue and its webhook.

Webhook calls are signed (`X-Cirrus-Signature: sha256=HMAC(secret, "<timestamp>.<body>")`, the
secret derived from the job id so it need not be stored) and held to the same outbound rules as
`http_get`: the URL's host must be on `CIRRUS_HTTP_ALLOWLIST` and resolve only to public
addresses; the request goes to the vetted address (pinned, so DNS cannot change between check and
connect), redirects are not followed, and the time is capped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable

import httpx

from shared.clients.protocols import QueueStore
from shared.models.jobs import JobRecord
from shared.services.jobs.store import JobStore
from shared.services.tools import ToolBlocked, ToolSettings
from shared.services.tools.outbound import Outbound

log = logging.getLogger("cirrus.jobs")

USER_AGENT = "Cirrus-Webhook/1"

DeliverWebhook = Callable[[str, bytes, dict[str, str]], Awaitable[None]]


class Notifier:
    def __init__(
        self, store: JobStore, queues: QueueStore, secret: bytes, deliver_webhook: DeliverWebhook | None
    ) -> None:
        self._store = store
        self._queues = queues
        self._secret = secret
        self._deliver_webhook = deliver_webhook

    def webhook_secret(self, job_id: str) -> str:
        """The key a job's webhook calls are signed with: derived, so it need not be stored."""
        return "whsec_" + hmac.new(self._secret, job_id.encode(), hashlib.sha256).hexdigest()[:40]

    async def ended(self, job: JobRecord) -> None:
        """Tell the job's reply queue and webhook (if it has them) how it ended."""
        summary = {
            "v": 1,
            "job_id": job.id,
            "status": job.status,
            "result": job.result,
            "error": job.error,
            "incomplete_details": job.incomplete_details,
            "usage": job.usage,
        }
        reply_queue = job.spec.get("reply_queue")
        if reply_queue:
            try:
                try:
                    await self._queues.send(reply_queue, summary)
                except Exception:  # most often: nobody created the queue yet
                    await self._queues.ensure_queue(reply_queue)
                    await self._queues.send(reply_queue, summary)
            except Exception as exc:
                log.warning("job %s: reply to queue %s failed (%s)", job.id, reply_queue, type(exc).__name__)
        url = job.spec.get("webhook_url")
        if url and self._deliver_webhook is not None:
            body = json.dumps(summary).encode()
            stamp = str(int(time.time()))
            signature = hmac.new(
                self.webhook_secret(job.id).encode(), f"{stamp}.".encode() + body, hashlib.sha256
            )
            headers = {"x-cirrus-timestamp": stamp, "x-cirrus-signature": f"sha256={signature.hexdigest()}"}
            try:
                await self._deliver_webhook(url, body, headers)
            except ToolBlocked as exc:
                await self._store.event(job, "webhook.blocked", {"reason": exc.reason})
            except Exception as exc:
                log.warning("job %s: webhook failed (%s)", job.id, type(exc).__name__)


class WebhookSender:
    """Delivers one webhook call under the outbound rules of `http_get`."""

    def __init__(self, settings: ToolSettings, vetting: Outbound | None = None) -> None:
        self._settings = settings
        self._vetting = vetting or Outbound()

    async def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https"):
            raise ToolBlocked(f"scheme {parsed.scheme!r} is not allowed")
        hop = await self._vetting.vet(parsed, self._settings)
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
