"""QueueStore on Azure Queue Storage (and Azurite)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from shared.observability import with_trace_context

# Azure's limit is 64 KiB of message text; base64 turns 3 bytes into 4.
MAX_MESSAGE_BYTES = 48 * 1024


class MessageTooLargeError(ValueError):
    """The message does not fit a queue message; put the payload in Blob and send a reference."""


class AzureQueueStore:
    """Queues of one storage account. Messages are JSON, base64-encoded (host.json's default)."""

    def __init__(self, client: QueueServiceClient) -> None:
        self._client = client
        self._queues: dict[str, QueueClient] = {}

    @classmethod
    def from_connection_string(cls, conn: str) -> AzureQueueStore:
        return cls(QueueServiceClient.from_connection_string(conn))

    @classmethod
    def from_identity(cls, account_url: str, credential: Any) -> AzureQueueStore:
        return cls(QueueServiceClient(account_url, credential=credential))

    def _queue(self, name: str) -> QueueClient:
        if name not in self._queues:
            self._queues[name] = self._client.get_queue_client(
                name,
                message_encode_policy=BinaryBase64EncodePolicy(),
                message_decode_policy=BinaryBase64DecodePolicy(),
            )
        return self._queues[name]

    async def send(self, queue: str, message: Mapping[str, Any], *, delay_seconds: int = 0) -> str:
        """Send `message` as JSON, with the current trace context (`traceparent`) added."""
        body = json.dumps(with_trace_context(message), separators=(",", ":")).encode()
        if len(body) > MAX_MESSAGE_BYTES:
            raise MessageTooLargeError(f"{len(body)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
        sent = await self._queue(queue).send_message(body, visibility_timeout=delay_seconds or None)
        return str(sent.id)

    async def ensure_queue(self, name: str) -> None:
        with contextlib.suppress(ResourceExistsError):
            await self._client.create_queue(name)

    async def ping(self, queue: str) -> None:
        await self._queue(queue).get_queue_properties()

    async def aclose(self) -> None:
        for queue in self._queues.values():
            await queue.close()
        await self._client.close()
