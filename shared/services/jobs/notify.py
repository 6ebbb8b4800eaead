"""The end of a job, told to whoever asked: its reply queue and its webhook.

Webhook calls are signed (`X-Cirrus-Signature: sha256=HMAC(secret, "<timestamp>.<body>")`, the
secret derived from the job id so it need not be stored) and held to the same outbound rules as
`http_get` (tools/outbound.py): the URL's host must be on `CIRRUS_HTTP_ALLOWLIST` and resolve only
to public addresses; the request goes to the vetted address (pinned, so DNS cannot change between
check and connect) and is refused if the connection's peer is another; redirects are not
followed. One deadline, `CIRRUS_HTTP_TIMEOUT_S`, covers a whole attempt: DNS, connecting, sending
and the answer, of which at most a few KB are read (none of a 2xx's). An attempt that fails for a
reason that may pass (no answer in time, a connection failure, 408, 429, 5xx) is tried again after
1 s, then 2 s: three attempts in all. A refused URL is a `webhook.blocked` event on the job; a
call that still failed is a `webhook.failed` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from shared.clients.protocols import QueueStore
from shared.models.jobs import JobRecord
from shared.services.jobs.store import JobStore
from shared.services.tools import ToolBlocked, ToolError, ToolSettings
from shared.services.tools.outbound import Outbound

log = logging.getLogger("cirrus.jobs")

USER_AGENT = "Cirrus-Webhook/1"
BACKOFF_S = (1.0, 2.0)  # the waits between the three attempts
RETRIED_STATUSES = frozenset({408, 425, 429})  # and every 5xx: answers that may pass
MAX_ANSWER_BYTES = 4096  # read of a failed call's answer, for its reason

DeliverWebhook = Callable[[str, bytes, dict[str, str]], Awaitable[None]]


class Notifier:
    def __init__(
        self,
        store: JobStore,
        queues: QueueStore,
        secret: bytes,
        deliver_webhook: DeliverWebhook | None,
        *,
        own_queues: frozenset[str] = frozenset(),
    ) -> None:
        self._store = store
        self._queues = queues
        self._own_queues = own_queues
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
            await self._reply(job, str(reply_queue), summary)
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
            except WebhookFailed as exc:
                log.warning("job %s: webhook failed (%d attempts): %s", job.id, exc.attempts, exc.reason)
                failed = {"reason": exc.reason, "attempts": exc.attempts, "status": exc.status}
                await self._store.event(job, "webhook.failed", failed)
            except Exception as exc:
                log.warning("job %s: webhook failed (%s)", job.id, type(exc).__name__)
                await self._store.event(job, "webhook.failed", {"reason": type(exc).__name__})

    async def _reply(self, job: JobRecord, queue: str, summary: dict[str, Any]) -> None:
        """Send the summary to the job's reply queue, which its submitter created: never one of the
        app's own queues, and never a queue made on demand."""
        if not reply_queue_allowed(queue, self._own_queues):
            await self._store.event(
                job, "reply.blocked", {"reason": f"{queue} is one of the gateway's own queues"}
            )
            return
        try:
            await self._queues.send(queue, summary)
        except Exception as exc:  # most often: the queue does not exist
            log.warning("job %s: reply to queue %s failed (%s)", job.id, queue, type(exc).__name__)
            await self._store.event(job, "reply.failed", {"reason": type(exc).__name__})


def reply_queue_allowed(name: str, own_queues: frozenset[str]) -> bool:
    """Whether a job may reply on queue `name`: any but the app's own and the Functions host's."""
    return name not in own_queues and not name.startswith("azure-webjobs-")


class WebhookFailed(Exception):
    """A webhook call that did not get a 2xx: why, after how many attempts, and the last status."""

    def __init__(self, reason: str, *, attempts: int, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.attempts, self.status = reason, attempts, status


class WebhookSender:
    """Delivers one webhook call: vetted and pinned as `http_get` is, within a deadline, retried."""

    def __init__(
        self,
        settings: ToolSettings,
        *,
        outbound: Outbound | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        backoff: tuple[float, ...] = BACKOFF_S,
    ) -> None:
        """`outbound` (DNS and transport) and `sleep` are seams for tests."""
        self._settings = settings
        self._outbound = outbound or Outbound()
        self._sleep = sleep
        self._backoff = backoff

    async def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        """Returns once the receiver answered 2xx; ToolBlocked if the URL is refused (never
        retried); WebhookFailed when no attempt succeeded."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise WebhookFailed("the URL is not valid", attempts=0) from None
        if parsed.scheme not in ("http", "https"):
            raise ToolBlocked(f"scheme {parsed.scheme!r} is not allowed")
        attempts = len(self._backoff) + 1
        for attempt in range(1, attempts + 1):
            status: int | None = None
            deadline = self._settings.http_timeout_s
            try:
                async with asyncio.timeout(deadline):
                    status, detail = await self._attempt(parsed, body, headers)
            except ToolBlocked:
                raise
            except TimeoutError:
                reason = f"no answer within {deadline:g} s"
            except ToolError as exc:  # could not resolve or connect
                reason = exc.message
            except Exception as exc:  # the transport's own errors: reset, protocol, ...
                reason = f"the request failed ({type(exc).__name__})"
            else:
                if 200 <= status < 300:
                    return
                reason = f"HTTP {status}{detail}"
                if status not in RETRIED_STATUSES and status < 500:
                    raise WebhookFailed(reason, attempts=attempt, status=status)
            if attempt < attempts:
                log.info("webhook attempt %d failed (%s); trying again", attempt, reason)
                await self._sleep(self._backoff[attempt - 1])
        raise WebhookFailed(reason, attempts=attempts, status=status)

    async def _attempt(self, url: httpx.URL, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """One POST: its status and, for a failure, a few words of the answer."""
        hop = await self._outbound.vet(url, self._settings)
        headers = {**headers, "User-Agent": USER_AGENT, "Content-Type": "application/json"}
        timeout = self._settings.http_timeout_s
        sent = self._outbound.send(hop, "POST", headers, content=body, io_timeout_s=timeout)
        async with sent as response:
            if response.is_success:
                return response.status_code, ""  # its body is of no use: not read at all
            if response.is_redirect:
                return response.status_code, " (redirects are not followed)"
            return response.status_code, await _first_words(response)


async def _first_words(response: httpx.Response) -> str:
    """At most MAX_ANSWER_BYTES of the answer, as a short text for the event; the rest unread."""
    head = bytearray()
    # httpx annotates aiter_raw() as an AsyncIterator; it is an async generator, which has aclose().
    async with contextlib.aclosing(response.aiter_raw()) as chunks:  # type: ignore[type-var]
        async for chunk in chunks:
            head += chunk
            if len(head) >= MAX_ANSWER_BYTES:
                break
    text = " ".join(bytes(head[:MAX_ANSWER_BYTES]).decode("utf-8", errors="replace").split())
    return f": {text[:200]}" if text else ""
