"""A Cirrus container on the emulators and the fake provider whose storage fails on purpose, and a
small host that delivers its queue messages the way the Functions host does.

The container is the real one (`build_container`), its Cosmos, Blob and Queue adapters wrapped by
`faults.py`'s seeded injector. The host here receives from Azurite directly (never through the
faults), runs each message's handler, deletes the message when the handler returns, and makes it
visible again when the handler raises, up to `max_dequeue` deliveries, as the host's queue
extension does. So a test can run a batch or a job through failures of every kind and then check
what came out with clients that see no faults.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.storage.queue.aio import QueueClient

from shared.config import Settings
from shared.container import Clients, Container, azure_clients, build_container
from tests.integration.faults import FaultPlan, FaultyBlobStore, FaultyDocumentStore, FaultyQueueStore
from tools.stack import COSMOS_EMULATOR_KEY, Emulators

PRICE_IN, PRICE_OUT = 0.000001, 0.000002  # USD per token of the test model: spend is countable
Handler = Callable[[Any], Awaitable[None]]


def model_file(directory: Path, provider_url: str) -> Path:
    path = directory / "models.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: cirrus-local\n"
        f"    litellm_params: {{model: openai/gpt-4o-mini, api_base: '{provider_url}/v1', api_key: fake}}\n"
        "    model_info:\n"
        f"      {{id: faulty-1, input_cost_per_token: {PRICE_IN}, output_cost_per_token: {PRICE_OUT}}}\n"
        "router_settings: {num_retries: 0, timeout: 30}\n"
    )
    return path


@dataclass
class Delivery:
    """What the host did with the messages."""

    handled: int = 0
    failed: int = 0
    poisoned: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class FaultyWorld:
    """See the module docstring. Build with `await FaultyWorld.start(...)`; `aclose()` when done."""

    def __init__(
        self, container: Container, plan: FaultPlan, connection: str, suffix: str, saved: dict[str, float]
    ) -> None:
        self.container = container
        self.saved = saved  # custom_id -> when its batch result first became durable (epoch seconds)
        self.plan = plan
        self.connection = connection
        self.suffix = suffix
        settings = container.settings
        self.handlers: dict[str, Handler] = {
            settings.batch_queue: container.batches.handle,
            settings.jobs_queue: container.jobs.handle,
            settings.usage_queue: container.usage.store_parked,
        }
        self.delivery = Delivery()

    @classmethod
    async def start(
        cls,
        emulators: Emulators,
        provider_url: str,
        directory: Path,
        *,
        seed: int,
        rate: float,
        **settings: str,
    ) -> FaultyWorld:
        suffix = uuid.uuid4().hex[:8]
        plan = FaultPlan(seed, rate)
        plan.enabled = False  # provisioning and setup are not under test
        saved: dict[str, float] = {}

        def written(name: str, data: bytes | None) -> None:
            if "/results/" in name and data is not None:  # a chunk's saved results
                now = time.time()
                for line in data.splitlines():
                    if line.strip():
                        saved.setdefault(json.loads(line)["custom_id"], now)

        def faulty(config: Settings) -> Clients:
            real = azure_clients(config)
            return Clients(
                documents=FaultyDocumentStore(real.documents, plan),  # type: ignore[arg-type]
                blobs=FaultyBlobStore(real.blobs, plan, written),  # type: ignore[arg-type]
                queues=FaultyQueueStore(real.queues, plan),  # type: ignore[arg-type]
            )

        config = Settings(  # type: ignore[call-arg]  # the aliases are the app settings
            _env_file=None,
            CIRRUS_ENV="local",
            AzureWebJobsStorage=emulators.storage_connection_string,
            COSMOS_ENDPOINT=emulators.cosmos_endpoint,
            COSMOS_KEY=COSMOS_EMULATOR_KEY,
            COSMOS_DATABASE=f"faults-{suffix}",
            CIRRUS_MODEL_CONFIG=str(model_file(directory, provider_url)),
            JOBS_QUEUE=f"fjobs-{suffix}",
            BATCH_QUEUE=f"fbatch-{suffix}",
            USAGE_QUEUE=f"fusage-{suffix}",
            CIRRUS_LOG_LEVEL="WARNING",
            **settings,
        )
        container = await build_container(config, clients=faulty)
        return cls(container, plan, emulators.storage_connection_string, suffix, saved)

    async def deliver(
        self, done: Callable[[], Awaitable[bool]], *, within: float = 240.0, max_dequeue: int = 10
    ) -> Delivery:
        """Deliver messages from every queue until `done()` (checked without faults), for at most
        `within` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        clients = {name: QueueClient.from_connection_string(self.connection, name) for name in self.handlers}
        try:
            while loop.time() < deadline:
                self.plan.enabled = False
                if await done():
                    return self.delivery
                self.plan.enabled = True
                busy = False
                for name, client in clients.items():
                    messages = [
                        m async for m in client.receive_messages(max_messages=16, visibility_timeout=120)
                    ]
                    busy = busy or bool(messages)
                    await asyncio.gather(*(self._one(client, name, m, max_dequeue) for m in messages))
                if not busy:
                    self.plan.enabled = False
                    await asyncio.sleep(0.2)
            raise AssertionError(f"not done after {within:.0f}s; host so far: {self.delivery}")
        finally:
            self.plan.enabled = False
            for client in clients.values():
                await client.close()

    async def _one(self, client: QueueClient, name: str, message: Any, max_dequeue: int) -> None:
        body = json.loads(base64.b64decode(message.content))
        try:
            await self.handlers[name](body)
        except Exception as exc:  # the host retries it, later
            self.delivery.failed += 1
            self.delivery.errors.append(f"{name}: {type(exc).__name__}: {exc}"[:200])
            if message.dequeue_count >= max_dequeue:
                self.delivery.poisoned.append(body)
                await client.delete_message(message)
            else:
                await client.update_message(message, visibility_timeout=0)
            return
        self.delivery.handled += 1
        await client.delete_message(message)

    async def settle_usage(self) -> None:
        """Flush buffered usage records and store any that were parked, with no faults."""
        self.plan.enabled = False
        await self.container.background.drain()
        await self.deliver(self._usage_queue_empty, within=60)

    async def _usage_queue_empty(self) -> bool:
        async with QueueClient.from_connection_string(
            self.connection, self.container.settings.usage_queue
        ) as q:
            return (await q.get_queue_properties()).approximate_message_count == 0

    async def usage_records(self, **tags: str) -> list[dict[str, Any]]:
        """Every usage record stored, with these tags (read without faults)."""
        self.plan.enabled = False
        rows = await self.container.clients.documents.query(
            "usage", "SELECT VALUE r FROM c JOIN r IN c.records", {}
        )
        return [r for r in rows if all((r.get("tags") or {}).get(k) == v for k, v in tags.items())]

    def faults(self) -> int:
        """How many storage calls failed on purpose so far."""
        return sum(n for kind, n in self.plan.stats.items() if kind.startswith("fault:"))

    async def aclose(self) -> None:
        self.plan.enabled = False
        await self.container.aclose()
