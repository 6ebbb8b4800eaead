"""What the batch unit tests share: a batch service on the in-memory fakes, played by the test as
the Functions host would (it takes the batch queue's messages and hands them over), a gateway that
answers on demand, and stores that fail on demand."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from shared.config import ModelConfig
from shared.errors import ServiceUnavailableError
from shared.models.batches import BatchCreate
from shared.services.auth import MASTER, Principal
from shared.services.batches import BatchService, BatchTimings
from shared.services.files import FileService
from shared.services.model_catalog import ModelCatalog
from tests import factories
from tests.fakes import InMemoryBlobStore, InMemoryDocumentStore, InMemoryQueueStore

MODELS = ModelConfig.model_validate(
    {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x"}}]}
)
QUEUE = "batches"
FAST = BatchTimings(flush_s=0.01, status_refresh_s=0.0, save_retry_delays=(0.01, 0.02, 0.04))


class StoreDown(ConnectionError):
    """A store that cannot be reached (what the Azure SDKs raise is no CirrusError either)."""


class Gateway:
    """Answers every request after `delay` seconds; records what it was asked and what is in flight.

    `hold` (custom_id -> Event) keeps a request waiting until its event is set."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[str] = []
        self.in_flight = 0
        self.hold: dict[str, asyncio.Event] = {}
        self.answer_bytes = 0  # pad each answer's content to this many characters
        self.asked = asyncio.Event()  # set by the first call

    async def __call__(self, endpoint: str, request: Any, call: Any) -> dict[str, Any]:
        text = request.messages[0].content
        self.calls.append(text)
        self.asked.set()
        self.in_flight += 1
        try:
            await asyncio.sleep(self.delay)
            if text in self.hold:
                await self.hold[text].wait()
        finally:
            self.in_flight -= 1
        content = f"answer to {text}".ljust(self.answer_bytes, ".")
        return {
            "id": "x",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2},
        }


class FlakyQueueStore(InMemoryQueueStore):
    """Fails to send the next `failures` messages of `kind`."""

    def __init__(self, kind: str = "", failures: int = 0) -> None:
        super().__init__()
        self.kind, self.failures = kind, failures

    async def send(self, queue: str, message: Mapping[str, Any], *, delay_seconds: int = 0) -> str:
        if self.failures and message.get("kind") == self.kind:
            self.failures -= 1
            raise StoreDown("queue unreachable")
        return await super().send(queue, message, delay_seconds=delay_seconds)


class FlakyBlobStore(InMemoryBlobStore):
    """Fails every `put` of a blob whose name contains `fragment` while `down`, or the next
    `failures` of them. `stored` is set by the first such put that succeeds, `recovered` by the
    first that succeeds after a failure."""

    def __init__(self) -> None:
        super().__init__()
        self.fragment = "/results/"
        self.down = False
        self.failures = 0
        self.failed = 0
        self.first_failure = asyncio.Event()
        self.stored = asyncio.Event()
        self.recovered = asyncio.Event()

    async def put(
        self,
        container: str,
        name: str,
        data: bytes | AsyncIterator[bytes],
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        if self.fragment in name:
            if self.down or self.failures:
                self.failures = max(0, self.failures - 1)
                self.failed += 1
                self.first_failure.set()
                raise StoreDown("blob storage unreachable")
            size = await super().put(container, name, data, content_type=content_type, metadata=metadata)
            self.stored.set()
            if self.failed:
                self.recovered.set()
            return size
        return await super().put(container, name, data, content_type=content_type, metadata=metadata)


class BatchWorld:
    """A batch service on in-memory stores, and the host's part: messages taken and delivered."""

    def __init__(
        self,
        *,
        documents: InMemoryDocumentStore | None = None,
        blobs: InMemoryBlobStore | None = None,
        queues: InMemoryQueueStore | None = None,
        gateway: Any = None,
        owner: Callable[[str], Any] | None = None,
        **options: Any,
    ) -> None:
        self.documents = documents or InMemoryDocumentStore()
        self.blobs = blobs or InMemoryBlobStore()
        self.queues = queues or InMemoryQueueStore()
        self.gateway = gateway or Gateway()
        self.files = FileService(self.documents, self.blobs, "uploads")
        settings = {"chunk_size": 5, "concurrency": 2, "window_seconds": 3600, "timings": FAST, **options}
        self.service = BatchService(
            self.documents,
            self.blobs,
            self.queues,
            self.files,
            ModelCatalog(MODELS, created=0),
            queue=QUEUE,
            outputs_container="outputs",
            gateway=self.gateway,
            owner=owner or self._master,
            **settings,
        )

    @staticmethod
    async def _master(key_id: str) -> Principal:
        return MASTER

    async def upload(self, lines: list[str], principal: Principal = MASTER) -> str:
        source = await self.files.create(
            principal, filename="in.jsonl", purpose="batch", content="\n".join(lines).encode()
        )
        return source.id

    async def submit(self, n: int, principal: Principal = MASTER) -> str:
        """A chat batch of `n` requests, custom_ids r0, r1, ... (each asks "r<i>")."""
        file_id = await self.upload([json.dumps(chat_line(f"r{i}")) for i in range(n)], principal)
        return await self.create(file_id, principal)

    async def create(self, file_id: str, principal: Principal = MASTER) -> str:
        created = await self.service.create(
            principal,
            BatchCreate(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"),
        )
        return created["id"]

    def take(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every queued message (of `kind`), taken off the queue."""
        queued = self.queues.messages[QUEUE]
        taken = [json.loads(base64.b64decode(m)) for m in queued]
        keep = [m for m, t in zip(queued, taken, strict=True) if kind is not None and t["kind"] != kind]
        self.queues.messages[QUEUE] = keep
        return [t for t in taken if kind is None or t["kind"] == kind]

    def queued(self) -> list[str]:
        return [json.loads(base64.b64decode(m))["kind"] for m in self.queues.messages[QUEUE]]

    async def run_all(self) -> None:
        """Deliver every message until the queue is empty."""
        while messages := self.take():
            for message in messages:
                await self.service.handle(message)

    async def batch(self, batch_id: str) -> dict[str, Any]:
        return await self.service.get(MASTER, batch_id)

    async def saved(self, batch_id: str) -> list[dict[str, Any]]:
        """Every result line saved so far, oldest first."""
        lines = []
        for name in await self.blobs.names("outputs", f"batches/{batch_id}/results/"):
            lines += [json.loads(t) for t in (await self.blobs.get("outputs", name) or b"").splitlines()]
        return lines

    async def outputs(self, batch_id: str) -> tuple[dict[str, Any], list[dict], list[dict]]:
        """The batch, its output lines and its error lines."""
        batch = await self.batch(batch_id)
        files = []
        for key in ("output_file_id", "error_file_id"):
            data = b""
            if batch.get(key):
                data = b"".join([c async for c in await self.files.content(MASTER, batch[key])])
            files.append([json.loads(t) for t in data.splitlines()])
        return batch, files[0], files[1]


def chat_line(custom_id: str, content: str | None = None) -> dict[str, Any]:
    return factories.batch_line(custom_id, model="m", content=content or None)


def ids(lines: list[dict[str, Any]]) -> list[str]:
    return sorted(line["custom_id"] for line in lines)


def unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError("Cosmos is unreachable.")


class BlockBlobStore(InMemoryBlobStore):
    """Streams a blob in blocks of `block` bytes, as Azure's downloader does (the plain fake
    streams a blob in one piece)."""

    def __init__(self, block: int = 65536) -> None:
        super().__init__()
        self.block = block

    async def stream(self, container: str, name: str) -> AsyncIterator[bytes]:
        if (container, name) not in self.blobs:
            raise KeyError(f"{container}/{name}")
        data = self.blobs[(container, name)]
        for start in range(0, len(data), self.block):
            yield data[start : start + self.block]


class SinkBlobStore(InMemoryBlobStore):
    """Keeps the output and error files' lines out of memory: a streamed put of a name containing
    `/output-` or `/errors-` is read piece by piece and only counted (lines, custom_ids, the
    largest piece), so a test can measure what finalize itself holds."""

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, dict[str, Any]] = {}

    async def put(
        self,
        container: str,
        name: str,
        data: bytes | AsyncIterator[bytes],
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        kind = next((k for k in ("output", "errors") if f"/{k}-" in name), None)
        if kind is None or isinstance(data, bytes):
            return await super().put(container, name, data, content_type=content_type, metadata=metadata)
        seen = {"lines": 0, "ids": set(), "largest_piece": 0, "bytes": 0}
        rest = b""
        async for piece in data:
            seen["largest_piece"] = max(seen["largest_piece"], len(piece))
            seen["bytes"] += len(piece)
            *complete, rest = (rest + piece).split(b"\n")
            for line in complete:
                seen["lines"] += 1
                seen["ids"].add(json.loads(line)["custom_id"])
        self.files[kind] = seen
        self.blobs[(container, name)] = b""
        return seen["bytes"]
