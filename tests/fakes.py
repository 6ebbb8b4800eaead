"""In-memory fakes of the client Protocols, for unit tests only (integration tests use emulators)."""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import json
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.clients.protocols import (
    CosmosContainerSpec,
    EmbeddingResult,
    ModelFeatures,
    ModelLimits,
    ModelResult,
    ServedBy,
)
from shared.errors import ConflictError, PreconditionFailedError, UpstreamError
from shared.observability import with_trace_context
from shared.services.audit import Actor
from shared.services.entra import IssuerUnavailable, discovery_url
from tests import factories


class FakeClock:
    """A clock (`() -> seconds`) that stands still until a test moves `now`."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class InMemoryDocumentStore:
    """Documents by container and (pk, id), with ETags that change on every write."""

    def __init__(self) -> None:
        self.items: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
        self.containers: dict[str, CosmosContainerSpec] = {}
        self.database_created = False
        self.fail_ping: Exception | None = None

    async def read(self, container: str, id: str, pk: str) -> dict[str, Any] | None:
        item = self.items[container].get((pk, id))
        return copy.deepcopy(item) if item else None

    async def create(self, container: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        if (doc["pk"], doc["id"]) in self.items[container]:
            raise ConflictError(f"{container} item {doc['id']!r} already exists")
        return self._write(container, doc)

    async def upsert(self, container: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        return self._write(container, doc)

    async def replace(
        self, container: str, doc: Mapping[str, Any], *, etag: str | None = None
    ) -> dict[str, Any]:
        current = self.items[container].get((doc["pk"], doc["id"]))
        if current is None:
            raise KeyError(doc["id"])
        if etag is not None and current["_etag"] != etag:
            raise PreconditionFailedError("changed meanwhile")
        return self._write(container, doc)

    async def delete(self, container: str, id: str, pk: str, *, etag: str | None = None) -> bool:
        current = self.items[container].get((pk, id))
        if current is None:
            return False
        if etag is not None and current["_etag"] != etag:
            raise PreconditionFailedError("changed meanwhile")
        del self.items[container][(pk, id)]
        return True

    async def query(
        self,
        container: str,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        pk: str | None = None,
        max_items: int | None = None,
    ) -> list[dict[str, Any]]:
        # Enough SQL for unit tests: every item of the partition (or container), in insert order.
        items = [copy.deepcopy(v) for (p, _), v in self.items[container].items() if pk is None or p == pk]
        return items[:max_items] if max_items else items

    async def iterate(
        self, container: str, sql: str, parameters: Mapping[str, Any] | None = None, *, pk: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        for item in await self.query(container, sql, parameters, pk=pk):
            yield item

    async def ensure_database(self) -> None:
        self.database_created = True

    async def ensure_container(self, spec: CosmosContainerSpec) -> None:
        self.containers.setdefault(spec.name, spec)

    async def ping(self) -> None:
        if self.fail_ping:
            raise self.fail_ping

    async def aclose(self) -> None:
        pass

    def _write(self, container: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        stored = {**copy.deepcopy(dict(doc)), "_etag": uuid.uuid4().hex}
        self.items[container][(doc["pk"], doc["id"])] = stored
        return copy.deepcopy(stored)


class InMemoryBlobStore:
    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.containers: set[str] = set()

    async def put(
        self,
        container: str,
        name: str,
        data: bytes | AsyncIterator[bytes],
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> int:
        body = data if isinstance(data, bytes) else b"".join([chunk async for chunk in data])
        self.blobs[(container, name)] = body
        return len(body)

    async def get(self, container: str, name: str) -> bytes | None:
        return self.blobs.get((container, name))

    async def stream(self, container: str, name: str) -> AsyncIterator[bytes]:
        if (container, name) not in self.blobs:
            raise KeyError(f"{container}/{name}")
        yield self.blobs[(container, name)]

    async def delete(self, container: str, name: str) -> bool:
        return self.blobs.pop((container, name), None) is not None

    async def names(self, container: str, prefix: str) -> list[str]:
        return sorted(n for c, n in self.blobs if c == container and n.startswith(prefix))

    async def ensure_container(self, name: str) -> None:
        self.containers.add(name)

    async def ping(self, container: str) -> None:
        if container not in self.containers:
            raise LookupError(container)

    async def aclose(self) -> None:
        pass


class InMemoryQueueStore:
    def __init__(self) -> None:
        self.messages: dict[str, list[str]] = defaultdict(list)
        self.queues: set[str] = set()

    async def send(self, queue: str, message: Mapping[str, Any], *, delay_seconds: int = 0) -> str:
        body = json.dumps(with_trace_context(message)).encode()
        self.messages[queue].append(base64.b64encode(body).decode())
        return uuid.uuid4().hex

    async def ensure_queue(self, name: str) -> None:
        self.queues.add(name)

    async def ping(self, queue: str) -> None:
        if queue not in self.queues:
            raise LookupError(queue)

    async def aclose(self) -> None:
        pass


@dataclass
class FakeStream:
    chunks: list[dict[str, Any]]
    served_by: ServedBy
    usage: dict[str, Any] | None = None
    fail_after: int | None = None
    finish_reasons: list[str] = field(default_factory=list)
    closed: bool = False
    usage_estimated: bool = False

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        for index, chunk in enumerate(self.chunks):
            if self.fail_after is not None and index >= self.fail_after:
                raise UpstreamError("The model provider returned an error.")
            self.finish_reasons.extend(c["finish_reason"] for c in chunk["choices"] if c.get("finish_reason"))
            if chunk.get("usage") is not None:
                self.usage = chunk["usage"]
            yield chunk
        if self.usage is None:  # as the router does: counted when the provider sent none
            deltas = [c["choices"][0]["delta"] for c in self.chunks if c["choices"]]
            text = " ".join(str(d.get("content") or "") for d in deltas)
            words = len(text.split())
            self.usage = {"prompt_tokens": 5, "completion_tokens": words, "total_tokens": 5 + words}
            self.usage_estimated = True

    async def aclose(self) -> None:
        self.closed = True


class FakeLLMRouter:
    """A scriptable router: `enqueue` replies (text, a whole chat completion dict, or an exception),
    then inspect `calls`.

    Prices: $1 per million input tokens, $2 per million output tokens. Tokens: one per word.
    """

    def __init__(
        self,
        limits: dict[str, ModelLimits] | None = None,
        features: dict[str, ModelFeatures] | None = None,
    ) -> None:
        self.model_limits = limits or {}
        self.model_features = features or {}
        self.calls: list[dict[str, Any]] = []
        self.streams: list[FakeStream] = []
        self._script: deque[str | dict[str, Any] | BaseException] = deque()
        self._ids = itertools.count(1)

    def enqueue(self, *replies: str | dict[str, Any] | BaseException) -> None:
        self._script.extend(replies)

    def _next(self) -> str | dict[str, Any]:
        reply = self._script.popleft() if self._script else "Hello from the fake router."
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def _completion(self, params: Mapping[str, Any]) -> dict[str, Any]:
        reply = self._next()
        if isinstance(reply, dict):
            return {**copy.deepcopy(reply), "model": params["model"]}
        return factories.completion_dict(reply, model=params["model"])

    async def chat(self, params: Mapping[str, Any]) -> ModelResult:
        self.calls.append(dict(params))
        return ModelResult(self._completion(params), served_by(params["model"]))

    async def chat_stream(self, params: Mapping[str, Any], *, fail_after: int | None = None) -> FakeStream:
        self.calls.append(dict(params))
        reply = self._next()
        include_usage = bool((params.get("stream_options") or {}).get("include_usage"))
        if isinstance(reply, dict):
            stream = FakeStream(
                factories.replayed_chunks({**reply, "model": params["model"]}, include_usage=include_usage),
                served_by(params["model"]),
                usage=reply.get("usage"),
                fail_after=fail_after,
            )
            self.streams.append(stream)
            return stream
        text = reply
        chunks = factories.chunk_dicts(text, model=params["model"], include_usage=include_usage)
        stream = FakeStream(chunks, served_by(params["model"]), fail_after=fail_after)
        self.streams.append(stream)
        return stream

    async def text_completion(self, params: Mapping[str, Any]) -> ModelResult:
        self.calls.append(dict(params))
        text = str(self._next())
        body = {
            "id": "cmpl-test",
            "object": "text_completion",
            "created": 1,
            "model": params["model"],
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": 3,
                "completion_tokens": len(text.split()),
                "total_tokens": 3 + len(text.split()),
            },
        }
        return ModelResult(body, served_by(params["model"]))

    async def text_completion_stream(self, params: Mapping[str, Any]) -> FakeStream:
        raise NotImplementedError

    async def embed(self, params: Mapping[str, Any]) -> EmbeddingResult:
        self.calls.append(dict(params))
        inputs = params["input"] if isinstance(params["input"], list) else [params["input"]]
        body = {
            "object": "list",
            "model": params["model"],
            "data": [
                {"object": "embedding", "index": i, "embedding": [0.5, 0.5]} for i in range(len(inputs))
            ],
            "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
        }
        return EmbeddingResult(body, len(inputs), served_by(params["model"]))

    def serves_messages(self, model: str) -> bool:
        return False  # no Anthropic deployments: Messages are translated to chat

    def serves_responses(self, model: str) -> bool:
        return False  # no deployment serves /responses natively: Responses are translated to chat

    def cost_usd(self, served_by: ServedBy, input_tokens: int, output_tokens: int) -> float | None:
        return input_tokens * 1e-6 + output_tokens * 2e-6

    def max_cost_usd(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        return input_tokens * 1e-6 + output_tokens * 2e-6

    def count_tokens(self, model: str, messages: Any) -> int:
        if isinstance(messages, str):
            return len(messages.split())
        return sum(len(str(m.get("content") or "").split()) for m in messages)

    def limits(self, model: str) -> ModelLimits:
        return self.model_limits.get(model, ModelLimits(None, None))

    def features(self, model: str) -> ModelFeatures:
        return self.model_features.get(model, ModelFeatures())

    async def warm(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def served_by(model: str) -> ServedBy:
    return ServedBy(model=model, deployment="fake-1", provider="openai", upstream_model="gpt-4o-mini")


class FakeOidcDocuments:
    """`fetch_json` for an `EntraVerifier`: serves one in-memory issuer's discovery document and
    JWKS (from a `tools.oidc_issuer.Minter`), records every URL fetched, and can be told to fail,
    to hold fetches until released, or to serve odd documents."""

    def __init__(self, minter: Any, jwks_uri: str | None = None) -> None:
        self.minter = minter
        self.jwks_uri = jwks_uri or minter.issuer.removesuffix("/v2.0") + "/discovery/v2.0/keys"
        self.fetched: list[str] = []
        self.fail: BaseException | None = None
        self.discovery_overrides: dict[str, Any] = {}
        self.extra_jwks: list[Any] = []  # served after the minter's own keys
        self.gate: asyncio.Event | None = None  # fetches wait for it when set

    async def __call__(self, url: str) -> dict[str, Any]:
        self.fetched.append(url)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        if url == discovery_url(self.minter.issuer):
            return {**self.minter.discovery(self.jwks_uri), **self.discovery_overrides}
        if url == self.jwks_uri:
            return {"keys": [*self.minter.jwks()["keys"], *self.extra_jwks]}
        raise IssuerUnavailable(f"HTTP 404 from {url}")

    @property
    def jwks_fetches(self) -> int:
        return self.fetched.count(self.jwks_uri)


# Who the unit and integration tests act as when a service asks for the audit log's actor.
TEST_ACTOR = Actor("master", "master", None, "req_test", "127.0.0.1")
