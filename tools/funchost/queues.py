"""Queue triggers: poll a storage queue with the Functions host's batching, retry and poison semantics."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueMessage as StorageMessage
from azure.storage.queue.aio import QueueClient

from tools.stack import AZURITE_ACCOUNT, AZURITE_KEY

from . import rpc
from .channel import FunctionMetadata, WorkerChannel
from .functions import InvocationFailed, invoke, typed
from .hostconfig import HostConfigError, QueueOptions, resolve_setting_refs

log = logging.getLogger("funchost")

DEVELOPMENT_STORAGE = (  # what UseDevelopmentStorage=true means: Azurite's default endpoints
    f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
    f"BlobEndpoint=http://127.0.0.1:10000/{AZURITE_ACCOUNT};"
    f"QueueEndpoint=http://127.0.0.1:10001/{AZURITE_ACCOUNT};"
)
LEASE_SECONDS = 600.0  # the host leases a message for 10 minutes and renews at half of that
# Not a Functions setting: lets crash tests see a dead host's messages come back in seconds.
LEASE_SETTING = "FUNCHOST_LEASE_SECONDS"
MIN_POLL_SECONDS = 0.1  # first back-off step on an empty queue
DRAIN_SECONDS = 10.0  # how long shutdown waits for in-flight invocations
RECEIVE_GRACE_SECONDS = 2.0  # how long shutdown lets a receive in flight finish
_QUEUE_NAME = re.compile(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]")
POISON_SUFFIX = "-poison"


def poison_queue_name(queue: str) -> str | None:
    """`<queue>-poison`, or None as in the host's queue extension: a queue named `*-poison` has no poison
    queue of its own, nor one whose poison name would be invalid (longer than 63 characters)."""
    if queue.endswith(POISON_SUFFIX):
        return None
    name = queue + POISON_SUFFIX
    return name if _QUEUE_NAME.fullmatch(name) else None


def storage_connection_string(connection: str | None, environ: Mapping[str, str], where: str) -> str:
    """The connection string the trigger's `connection` app setting names (AzureWebJobs<name> also)."""
    name = connection or "AzureWebJobsStorage"
    value = environ.get(name) or environ.get(f"AzureWebJobs{name}")
    if not value:
        raise HostConfigError(f"{where}: app setting '{name}' (a storage connection string) is not set")
    if value.replace(" ", "").lower().startswith("usedevelopmentstorage=true"):
        return DEVELOPMENT_STORAGE
    return value


@dataclass
class _Lease:
    """The message's current pop receipt: each visibility update issues a new one."""

    pop_receipt: str


class QueueListener:
    """One queue trigger's consumer: batches, lease renewal, retries, poison queue, graceful stop."""

    def __init__(
        self,
        function: FunctionMetadata,
        channel: WorkerChannel,
        queue_name: str,
        connection_string: str,
        *,
        options: QueueOptions,
        function_timeout: float | None,
        lease: float = LEASE_SECONDS,
        drain: float = DRAIN_SECONDS,
    ) -> None:
        self.function = function
        self.channel = channel
        self.queue_name = queue_name
        self.poison_queue_name = poison_queue_name(queue_name)
        self._connection_string = connection_string
        self._options = options
        self._timeout = function_timeout
        self._lease = lease
        self._drain = drain
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopped = asyncio.Event()
        self._wakeup = asyncio.Event()  # set on stop() and whenever an invocation ends
        self._unreachable = False

    @classmethod
    def for_function(
        cls,
        function: FunctionMetadata,
        channel: WorkerChannel,
        options: QueueOptions,
        timeout: float | None,
        environ: Mapping[str, str],
    ) -> QueueListener:
        """Resolve the queue name (`%SETTING%`, also within a name such as `%JOBS%-poison`) and the
        connection now, so a bad setting fails at startup."""
        where = f"function '{function.name}'"
        trigger = function.trigger
        queue = resolve_setting_refs(str(trigger.get("queueName", "")), environ, where)
        if not _QUEUE_NAME.fullmatch(queue):
            raise HostConfigError(f"{where}: {queue!r} is not a valid queue name (3-63 of a-z, 0-9, '-')")
        connection = storage_connection_string(trigger.get("connection"), environ, where)
        lease = environ.get(LEASE_SETTING, "")
        if lease and not lease.isdigit():
            raise HostConfigError(f"{LEASE_SETTING} must be whole seconds")
        return cls(
            function,
            channel,
            queue,
            connection,
            options=options,
            function_timeout=timeout,
            lease=float(lease) if lease else LEASE_SECONDS,
        )

    def stop(self) -> None:
        """Stop polling; run() then waits for in-flight invocations and returns."""
        self._stopped.set()
        self._wakeup.set()

    async def run(self) -> None:
        """Poll until stop(), then drain; re-raise if polling itself crashed."""
        connect = QueueClient.from_connection_string
        async with contextlib.AsyncExitStack() as clients:
            client = await clients.enter_async_context(connect(self._connection_string, self.queue_name))
            poison = None
            if self.poison_queue_name is not None:
                poison = await clients.enter_async_context(
                    connect(self._connection_string, self.poison_queue_name)
                )
            poller = asyncio.create_task(self._poll(client, poison))
            stopped = asyncio.create_task(self._stopped.wait())
            await asyncio.wait([poller, stopped], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            # A receive in flight gets a moment: cancelled, its messages would stay leased for 10 min.
            await asyncio.wait([poller], timeout=RECEIVE_GRACE_SECONDS)
            poller.cancel()
            [outcome] = await asyncio.gather(poller, return_exceptions=True)
            await self._drain_inflight()
        if isinstance(outcome, Exception):
            raise outcome

    async def _poll(self, client: QueueClient, poison: QueueClient | None) -> None:
        options = self._options
        delay = MIN_POLL_SECONDS
        while not self._stopped.is_set():
            self._wakeup.clear()
            if len(self._inflight) > options.new_batch_threshold:
                await self._wakeup.wait()  # the next batch waits until in-flight <= newBatchThreshold
                continue
            messages = await self._receive(client)
            for message in messages:
                task = asyncio.create_task(self._process(client, poison, message))
                self._inflight.add(task)
                task.add_done_callback(self._finished)
            if messages:
                delay = MIN_POLL_SECONDS
                continue
            # Empty: exponential back-off up to maxPollingInterval (stop() wakes us early).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), delay)
            delay = min(delay * 2, options.max_polling_interval)

    async def _receive(self, client: QueueClient) -> list[StorageMessage]:
        """One receive call of up to batchSize messages, leased for LEASE_SECONDS."""
        messages: list[StorageMessage] = []
        try:
            pages = client.receive_messages(
                messages_per_page=self._options.batch_size,
                visibility_timeout=int(self._lease),
                retry_total=0,  # our polling back-off retries; the SDK's would stall for minutes
            ).by_page()
            async for page in pages:  # only the first page: one request per poll
                messages = [message async for message in page]
                break
        except ResourceNotFoundError:
            pass  # not created yet: the app provisions its own queues, so it counts as empty
        except AzureError as exc:
            if not self._unreachable:  # once per outage, not once per poll
                log.warning("Queue '%s': receive failed (%s); retrying", self.queue_name, type(exc).__name__)
            self._unreachable = True
            return []
        if self._unreachable:
            log.info("Queue '%s': reachable again", self.queue_name)
            self._unreachable = False
        return messages

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wakeup.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("Queue '%s': host error", self.queue_name, exc_info=task.exception())

    def _decode(self, content: str | None) -> bytes:
        text = content or ""
        if self._options.message_encoding == "none":
            return text.encode("utf-8")
        try:  # like .NET's Convert.FromBase64String: whitespace ignored, anything else invalid
            return base64.b64decode("".join(text.split()), validate=True)
        except binascii.Error:
            raise ValueError("message content is not valid base64 (messageEncoding is 'base64')") from None

    async def _process(
        self, client: QueueClient, poison: QueueClient | None, message: StorageMessage
    ) -> None:
        lease = _Lease(message.pop_receipt or "")
        finished = asyncio.Event()
        renewer = asyncio.create_task(self._renew(client, message.id, lease, finished))
        error: Exception | None = None
        try:
            body = self._decode(message.content)
            await invoke(
                self.channel, self.function, _payload(body), _trigger_metadata(message), self._timeout
            )
        except (InvocationFailed, ValueError) as exc:
            if isinstance(exc, ValueError):  # undecodable: the host fails it without an invocation
                log.error("Queue '%s': message %s: %s", self.queue_name, message.id, exc)
            error = exc
        finally:
            finished.set()
            await renewer  # never cancelled mid-update: its new pop receipt is needed below
        await self._settle(client, poison, message, lease, error)

    async def _renew(
        self, client: QueueClient, message_id: str, lease: _Lease, finished: asyncio.Event
    ) -> None:
        """Keep the message invisible while the invocation runs, so no other consumer takes it."""
        while True:
            try:
                await asyncio.wait_for(finished.wait(), self._lease / 2)
                return
            except TimeoutError:
                pass
            try:
                updated = await client.update_message(
                    message_id, lease.pop_receipt, visibility_timeout=int(self._lease)
                )
                lease.pop_receipt = updated.pop_receipt or lease.pop_receipt
            except AzureError as exc:
                log.warning("Queue '%s': lease renewal failed (%s)", self.queue_name, type(exc).__name__)

    async def _settle(
        self,
        client: QueueClient,
        poison: QueueClient | None,
        message: StorageMessage,
        lease: _Lease,
        error: Exception | None,
    ) -> None:
        """Delete on success; on failure retry after visibilityTimeout or, at maxDequeueCount, poison.

        Without a poison queue (see poison_queue_name) a failed message is left as it is, as the host
        does against a fast endless loop: invisible until its lease expires, then retried, never moved.
        """
        try:
            if error is None:
                await client.delete_message(message.id, lease.pop_receipt)
            elif poison is None:
                log.warning(
                    "Queue '%s' has no poison queue: message %s stays invisible until its lease expires,"
                    " then is retried",
                    self.queue_name,
                    message.id,
                )
            elif (message.dequeue_count or 0) >= self._options.max_dequeue_count:
                await self._send_to_poison(poison, message.content or "")
                await client.delete_message(message.id, lease.pop_receipt)
                log.warning(
                    "Message %s reached maxDequeueCount of %d: moved to queue '%s'",
                    message.id,
                    self._options.max_dequeue_count,
                    poison.queue_name,
                )
            else:
                # The Queue service takes whole seconds: a sub-second visibilityTimeout means "now".
                await client.update_message(
                    message.id, lease.pop_receipt, visibility_timeout=int(self._options.visibility_timeout)
                )
        except AzureError as exc:
            # The lease then simply expires and the message is delivered again: at-least-once.
            log.warning("Queue '%s': could not settle message %s (%s)", self.queue_name, message.id, exc)

    @staticmethod
    async def _send_to_poison(poison: QueueClient, content: str) -> None:
        try:
            await poison.send_message(content)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                await poison.create_queue()  # the host creates the poison queue on first use
            await poison.send_message(content)

    async def _drain_inflight(self) -> None:
        if not self._inflight:
            return
        _, pending = await asyncio.wait(set(self._inflight), timeout=self._drain)
        if pending:
            log.warning(
                "Queue '%s': %d invocation(s) unfinished after %.0fs; their messages will be redelivered",
                self.queue_name,
                len(pending),
                self._drain,
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def _payload(body: bytes) -> object:
    """The message as the Storage extension hands it over: text as a string, else bytes."""
    try:
        return rpc.TypedData(string=body.decode("utf-8"))
    except UnicodeDecodeError:
        return rpc.TypedData(bytes=body)


def _trigger_metadata(message: StorageMessage) -> dict[str, object]:
    """The queue trigger's metadata, named as the Storage extension names it."""
    fields = {
        "Id": message.id,
        "DequeueCount": message.dequeue_count or 0,
        "InsertionTime": message.inserted_on,
        "ExpirationTime": message.expires_on,
        "NextVisibleTime": message.next_visible_on,
        "PopReceipt": message.pop_receipt,
    }
    return {name: typed(value) for name, value in fields.items() if value is not None}
