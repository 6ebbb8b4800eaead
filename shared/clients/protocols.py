"""The seams between Cirrus's services and the outside world. Services depend on these only.

Each Protocol has one production adapter named for its technology (`cosmos_store.py`,
`blob_store.py`, `queue_store.py`; the model data plane is the `llm` package) and an in-memory
fake in `tests/fakes.py`. Model answers travel as plain OpenAI-shaped dicts: no SDK objects are
built on the hot path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal, Protocol

from shared.models.usage import Unit


@dataclass(frozen=True)
class CosmosContainerSpec:
    """A Cosmos container Cirrus uses. Every container is partitioned on a synthetic `/pk`."""

    name: str
    partition_key: str = "/pk"
    default_ttl: int | None = -1  # TTL on, items opt in with their own `ttl`


class DocumentStore(Protocol):
    """JSON documents with optimistic concurrency (ETags), partitioned by `pk`."""

    async def read(self, container: str, id: str, pk: str) -> dict[str, Any] | None: ...
    async def create(self, container: str, doc: Mapping[str, Any]) -> dict[str, Any]: ...
    async def upsert(self, container: str, doc: Mapping[str, Any]) -> dict[str, Any]: ...
    async def replace(
        self, container: str, doc: Mapping[str, Any], *, etag: str | None = None
    ) -> dict[str, Any]: ...
    async def delete(self, container: str, id: str, pk: str, *, etag: str | None = None) -> bool: ...
    async def query(
        self,
        container: str,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        pk: str | None = None,
        max_items: int | None = None,
    ) -> list[dict[str, Any]]: ...
    def iterate(
        self, container: str, sql: str, parameters: Mapping[str, Any] | None = None, *, pk: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The query's rows, fetched a page at a time: memory holds one page, whatever the total."""
        ...

    async def ensure_database(self) -> None: ...
    async def ensure_container(self, spec: CosmosContainerSpec) -> None: ...
    async def ping(self) -> None: ...
    async def aclose(self) -> None: ...


class BlobStore(Protocol):
    """Named binary objects in containers."""

    async def put(
        self,
        container: str,
        name: str,
        data: bytes | AsyncIterator[bytes],
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
    ) -> int: ...
    async def get(self, container: str, name: str) -> bytes | None: ...
    def stream(self, container: str, name: str) -> AsyncIterator[bytes]: ...
    async def delete(self, container: str, name: str) -> bool: ...
    async def names(self, container: str, prefix: str) -> list[str]: ...
    async def ensure_container(self, name: str) -> None: ...
    async def ping(self, container: str) -> None: ...
    async def aclose(self) -> None: ...


class QueueStore(Protocol):
    """Messages for queue-triggered functions: JSON, base64-encoded as host.json expects."""

    async def send(self, queue: str, message: Mapping[str, Any], *, delay_seconds: int = 0) -> str: ...
    async def ensure_queue(self, name: str) -> None: ...
    async def ping(self, queue: str) -> None: ...
    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class ServedBy:
    """Which deployment answered: for headers, usage records and spans."""

    model: str  # the public model name that answered (another one than asked after a fallback)
    deployment: str  # model_info.id, or LiteLLM's id for the deployment
    provider: str  # LiteLLM's provider name: openai, azure, anthropic, ...
    upstream_model: str  # the provider's model name
    fallbacks: int = 0  # model-name fallbacks taken before this answer
    retries: int = 0  # retries within the model name


# The models the caller's key may use (None: any), set by the service before it routes a call.
# The router falls back only to these, and prices a call's budget hold over these: a fallback
# to a model the key may not use is skipped. Request-scoped like the trace context, so every
# surface's parameters stay the provider's own.
allowed_models: ContextVar[frozenset[str] | None] = ContextVar("cirrus_allowed_models", default=None)


@dataclass(frozen=True)
class ModelLimits:
    max_input_tokens: int | None
    max_output_tokens: int | None
    reasoning: bool = False  # every deployment takes `reasoning_effort` (the price map's supports_reasoning)


@dataclass(frozen=True)
class ModelFeatures:
    """What every deployment of a model supports (the model file's `model_info.supports_*`, else
    LiteLLM's price map): True or False when all agree, None when any deployment's is unknown."""

    function_calling: bool | None = None
    reasoning: bool | None = None


@dataclass(frozen=True)
class ModelResult:
    """A complete chat or legacy completion: `body` is OpenAI's JSON (`model` the public name)."""

    body: dict[str, Any]
    served_by: ServedBy
    usage_estimated: bool = False  # counted by Cirrus: the provider reported no usage

    @property
    def usage(self) -> dict[str, Any]:
        return self.body.get("usage") or {}

    @property
    def finish_reasons(self) -> list[str]:
        return [str(c.get("finish_reason")) for c in self.body.get("choices") or () if c.get("finish_reason")]


Wire = Literal["anthropic", "responses", "chat"]


@dataclass(frozen=True)
class MessageResult:
    """The answer to an Anthropic Messages request: Anthropic's Message from an Anthropic deployment
    (`wire` "anthropic", `model` the public name), or a chat completion from any other deployment,
    for the service to translate (`wire` "chat"). `usage` is in chat terms either way."""

    body: dict[str, Any]
    served_by: ServedBy
    wire: Wire
    usage: dict[str, Any] = field(default_factory=dict)
    finish_reasons: list[str] = field(default_factory=list)
    usage_estimated: bool = False


@dataclass(frozen=True)
class ResponseResult:
    """The answer to a Responses request: OpenAI's Response from a deployment that serves
    `/responses` natively (`wire` "responses", `model` the public name), or a chat completion from
    any other deployment, for the service to translate (`wire` "chat"). `usage` is in chat terms."""

    body: dict[str, Any]
    served_by: ServedBy
    wire: Wire
    usage: dict[str, Any] = field(default_factory=dict)
    finish_reasons: list[str] = field(default_factory=list)
    usage_estimated: bool = False


@dataclass(frozen=True)
class EmbeddingResult:
    """`body` is a CreateEmbeddingResponse as JSON."""

    body: dict[str, Any]
    input_tokens: int
    served_by: ServedBy


@dataclass(frozen=True)
class ModelAnswer:
    """A moderation, image, transcription or rerank answer: `body` is OpenAI's JSON (Cohere's for
    rerank; `{"text": ...}` for a transcription asked for as text, srt or vtt)."""

    body: dict[str, Any]
    served_by: ServedBy


@dataclass(frozen=True)
class UnitUsage:
    """What a call of an endpoint that is not billed by tokens used, in that endpoint's unit.

    `units` is None when nobody knows (a transcription whose length neither the provider nor the
    audio's header gave). Tokens are kept too when the provider reports them (token-billed image
    and transcription models) or Cirrus counts them (moderation input)."""

    unit: Unit
    units: float | None
    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False  # a figure was counted by Cirrus, not reported by the provider
    size: str | None = None  # images: per-size and per-pixel prices depend on it
    quality: str | None = None  # images: likewise


class UploadedFile(Protocol):
    """A client's upload, held by Cirrus (spooled), that each provider attempt reads afresh."""

    filename: str
    content_type: str
    size: int

    def open(self) -> BinaryIO:
        """A new reader from the first byte; the caller closes it."""
        ...


class ByteStream(Protocol):
    """A provider's binary answer (speech), relayed as it arrives, with its content type."""

    served_by: ServedBy
    content_type: str

    def __aiter__(self) -> AsyncIterator[bytes]: ...
    async def aclose(self) -> None: ...


class ModelStream(Protocol):
    """An upstream stream already accepted by the provider, yielding OpenAI-shaped chunk dicts.

    Chunks carry `usage` only if the client asked for it (`stream_options.include_usage`).
    `usage` on the stream itself is filled either way once the stream ends: the provider's
    figures, or Cirrus's token count when the provider sent none (`usage_estimated`).
    """

    served_by: ServedBy
    usage: dict[str, Any] | None
    usage_estimated: bool

    @property  # read-only, so an adapter may keep them in a list (a mutable attribute is invariant)
    def finish_reasons(self) -> Sequence[str]: ...
    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...
    async def aclose(self) -> None: ...


class MessagesStream(ModelStream, Protocol):
    """A Messages request's stream: Anthropic's events (`wire` "anthropic"), or chat chunks (`wire`
    "chat") for the service to translate. `usage` is in chat terms either way."""

    wire: Wire


class ResponsesStream(ModelStream, Protocol):
    """A Responses request's stream: the typed events of a native deployment (`wire` "responses"),
    or chat chunks (`wire` "chat") for the service to translate. `usage` is in chat terms."""

    wire: Wire


# Builds a Messages (or Responses) request's chat completion parameters, for a deployment that does
# not serve the surface natively; raises a CirrusError for a request no chat model can serve.
ChatTranslation = Callable[[], Mapping[str, Any]]


class LLMRouter(Protocol):
    """Routes OpenAI-style requests for a public model name to provider deployments.

    Failures are raised as Cirrus errors (shared.errors), already mapped from the provider's.
    """

    async def chat(self, params: Mapping[str, Any]) -> ModelResult: ...
    async def chat_stream(self, params: Mapping[str, Any]) -> ModelStream: ...
    async def text_completion(self, params: Mapping[str, Any]) -> ModelResult: ...
    async def text_completion_stream(self, params: Mapping[str, Any]) -> ModelStream: ...
    async def embed(self, params: Mapping[str, Any]) -> EmbeddingResult: ...
    def serves_messages(self, model: str) -> bool:
        """Whether a deployment of `model` takes Anthropic's Messages natively."""
        ...

    async def messages(
        self, body: Mapping[str, Any], translate: ChatTranslation, *, beta: str | None = None
    ) -> MessageResult: ...
    async def messages_stream(
        self, body: Mapping[str, Any], translate: ChatTranslation, *, beta: str | None = None
    ) -> MessagesStream: ...
    def serves_responses(self, model: str) -> bool:
        """Whether a deployment of `model` serves OpenAI's `/responses` natively (the model file says so)."""
        ...

    async def responses(self, body: Mapping[str, Any], translate: ChatTranslation) -> ResponseResult: ...
    async def responses_stream(
        self, body: Mapping[str, Any], translate: ChatTranslation
    ) -> ResponsesStream: ...
    async def moderate(self, params: Mapping[str, Any]) -> ModelAnswer: ...
    async def generate_images(self, params: Mapping[str, Any]) -> ModelAnswer: ...
    async def transcribe(self, params: Mapping[str, Any], audio: UploadedFile) -> ModelAnswer: ...
    async def speech(self, params: Mapping[str, Any]) -> ByteStream: ...
    async def rerank(self, params: Mapping[str, Any]) -> ModelAnswer: ...
    def serves(self, model: str, path: str) -> bool:
        """Whether a deployment of `model` serves the OpenAI path (`images/generations`, ...)."""
        ...

    def cost_usd(self, served_by: ServedBy, input_tokens: int, output_tokens: int) -> float | None: ...
    def max_cost_usd(self, model: str, input_tokens: int, output_tokens: int) -> float | None: ...
    def unit_cost_usd(self, served_by: ServedBy, usage: UnitUsage) -> float | None: ...
    def max_unit_cost_usd(self, model: str, usage: UnitUsage) -> float | None: ...
    def count_tokens(self, model: str, messages: Sequence[Mapping[str, Any]] | str) -> int: ...
    def limits(self, model: str) -> ModelLimits: ...
    def features(self, model: str) -> ModelFeatures: ...
    async def warm(self) -> None: ...
    async def aclose(self) -> None: ...
