"""Cirrus's router: one public model name in, one answer out, across deployments and providers.

It reads LiteLLM's `model_list`/`router_settings` with LiteLLM's meanings (see `deployments`)
and, per request:

1. picks a deployment of the name (`selection`: cooldowns, per-deployment rpm/tpm, strategy);
2. calls its adapter (`openai_wire` natively, `litellm_adapter` for every other provider), with
   one CLIENT span per attempt (`spans`);
3. on failure retries within the name, `num_retries` times, at once on another healthy deployment,
   else after the provider's Retry-After (up to 60 s) or an exponential backoff; failures that are
   about the request itself (400s, 404) are not retried;
4. when the name is exhausted, falls back: `context_window_fallbacks` for a prompt that is too
   long, `content_policy_fallbacks` for refused content (each defaulting to `fallbacks` when
   unset), `fallbacks` (or `"*"`, or `default_fallbacks`) for everything else; a fallback's own
   fallbacks follow (chained), up to `max_fallbacks` deep and never in a circle. When all fail, the
   error of the name the client asked for is raised. A fallback to a model the caller's key may
   not use (`allowed_models`) is skipped.

The most a call can cost (`max_cost_usd`, for budget holds) is over every model a fallback of any
kind can reach, chained, that the key may use; None if any of their deployments has no price.

A stream counts as failed, and so is retried or falls back invisibly, until its first chunk has
arrived; after that a failure is the client's to see (`relay`).

Anthropic's Messages API (`messages`, `messages_stream`) is routed the same way: an attempt on an
Anthropic deployment sends the request as it is (`anthropic_wire`); an attempt on any other
deployment sends its chat translation, and the answer says which wire it is in, so a model name
can mix both kinds and fall back from one to the other. OpenAI's Responses API (`responses`,
`responses_stream`) is routed the same way: an attempt on a deployment the model file says serves
`/responses` natively (`model_info.supported_endpoints`) sends the request as it is through the
OpenAI-wire adapter (streams relayed by `responses_relay`); any other deployment gets its chat
translation.

Moderations, images, transcriptions, speech and rerank route the same way, among the deployments
of the name that serve them (`capabilities`); a name with none is refused with a 400 before any
provider call (and a fallback with none is skipped). Their answers are shaped by `surface_shapes`,
speech is relayed by `byte_relay`, and they are priced per unit by `unit_prices`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.clients.llm import errors, price_map, surface_shapes, tokens, unit_prices
from shared.clients.llm.anthropic_wire import AnthropicWireAdapter
from shared.clients.llm.attempts import Attempt
from shared.clients.llm.byte_relay import OpenedBody, RoutedBytes
from shared.clients.llm.capabilities import BY_PATH, SURFACES, serves
from shared.clients.llm.deployments import Deployment, RoutingTable, read_routing
from shared.clients.llm.errors import AttemptFailed
from shared.clients.llm.litellm_adapter import LiteLLMAdapter
from shared.clients.llm.messages_relay import RoutedMessageStream, chat_usage
from shared.clients.llm.openai_wire import CredentialFactory, OpenAIWireAdapter
from shared.clients.llm.operations import ModelAdapter, Operation
from shared.clients.llm.relay import OpenedStream, RoutedStream
from shared.clients.llm.responses_relay import RoutedResponseStream, output_text, raising_errors
from shared.clients.llm.responses_relay import chat_usage as responses_chat_usage
from shared.clients.llm.selection import Clock, DeploymentHealth, Selector
from shared.clients.llm.shapes import complete_embeddings
from shared.clients.protocols import (
    ChatTranslation,
    EmbeddingResult,
    MessageResult,
    ModelAnswer,
    ModelFeatures,
    ModelLimits,
    ModelResult,
    ResponseResult,
    ServedBy,
    UnitUsage,
    UploadedFile,
    allowed_models,
)
from shared.config import ModelConfig
from shared.errors import CirrusError, InvalidRequestError, UpstreamError

log = logging.getLogger("cirrus.llm")

T = TypeVar("T")
E = TypeVar("E")  # what a stream yields: events, chunks, bytes
INITIAL_RETRY_DELAY = 0.5  # LiteLLM's backoff: 0.5 s, doubling, at most 8 s
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 60.0  # a longer Retry-After is not waited for: the backoff applies instead
RETRY_JITTER = 0.1  # a wait grows by up to this fraction, so retries of many requests spread out
_RETRYABLE = frozenset({408, 409, 429})
AttemptFn = Callable[[Deployment], Awaitable[T]]
Sleep = Callable[[float], Awaitable[Any]]


@dataclass
class _Tally:
    fallbacks: int = 0  # fallback model names tried, across the whole chain


@dataclass
class _Chain:
    """Where a fallback chain stands: names already tried (no circles) and how deep it is."""

    tally: _Tally
    visited: set[str]
    depth: int = 0

    def deeper(self) -> _Chain:
        return _Chain(self.tally, self.visited, self.depth + 1)


class ModelRouter:
    """Implements `LLMRouter` (shared.clients.protocols) for every deployment of the model file."""

    def __init__(
        self,
        config: ModelConfig,
        *,
        max_connections: int = 256,
        keepalive_seconds: float = 30.0,
        azure_credential: CredentialFactory | None = None,
        native: ModelAdapter | None = None,
        litellm: ModelAdapter | None = None,
        anthropic: AnthropicWireAdapter | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        table = read_routing(config)
        self._table: RoutingTable = table
        self._settings = table.settings
        self._groups = table.groups()
        self._deployments = {d.id: d for d in table.deployments}
        self._native = native or OpenAIWireAdapter(
            max_connections=max_connections,
            keepalive_seconds=keepalive_seconds,
            azure_credential=azure_credential,
        )
        self._litellm = litellm
        if self._litellm is None and table.needs_litellm:
            self._litellm = LiteLLMAdapter(drop_params=table.drop_params)  # starts importing LiteLLM
        self._anthropic = anthropic or AnthropicWireAdapter(
            max_connections=max_connections, keepalive_seconds=keepalive_seconds
        )
        self._rng = rng or random.Random()  # noqa: S311 - jitter and load balancing, not security
        self._selector = Selector(self._settings, self._price, clock=clock, rng=self._rng)
        self._sleep = sleep
        self._prices: dict[str, tuple[float, float] | None] = {}
        self._limits: dict[str, ModelLimits] = {}
        self._serving_groups: dict[tuple[str, Operation], list[Deployment]] = {}

    # --- calls --------------------------------------------------------------------------------

    async def chat(self, params: Mapping[str, Any]) -> ModelResult:
        return await self._complete(Operation.CHAT, params, params.get("messages"))

    async def chat_stream(self, params: Mapping[str, Any]) -> RoutedStream:
        return await self._stream(Operation.CHAT, params, params.get("messages"))

    async def text_completion(self, params: Mapping[str, Any]) -> ModelResult:
        return await self._complete(Operation.TEXT, params, params.get("prompt"))

    async def text_completion_stream(self, params: Mapping[str, Any]) -> RoutedStream:
        return await self._stream(Operation.TEXT, params, params.get("prompt"))

    async def embed(self, params: Mapping[str, Any]) -> EmbeddingResult:
        upstream = dict(params)
        # Floats from every provider; base64 is packed here, as not every provider offers it.
        encoding = upstream.pop("encoding_format", None) or "float"
        body, served_by = await self._route(Operation.EMBED, upstream, self._call(Operation.EMBED, upstream))
        if not isinstance(body.get("data"), list):
            raise errors.unreachable().error
        body["model"] = served_by.model
        complete_embeddings(body, encoding)
        return EmbeddingResult(body, body["usage"]["prompt_tokens"], served_by)

    # --- moderations, images, audio, rerank: only deployments that serve them (`capabilities`)

    async def moderate(self, params: Mapping[str, Any]) -> ModelAnswer:
        body, served_by = await self._answer(Operation.MODERATE, params)
        return ModelAnswer(surface_shapes.moderation(body, served_by.model), served_by)

    async def generate_images(self, params: Mapping[str, Any]) -> ModelAnswer:
        body, served_by = await self._answer(Operation.IMAGE, params)
        return ModelAnswer(surface_shapes.images(body), served_by)

    async def rerank(self, params: Mapping[str, Any]) -> ModelAnswer:
        body, served_by = await self._answer(Operation.RERANK, params)
        return ModelAnswer(surface_shapes.rerank(body, params.get("return_documents")), served_by)

    async def transcribe(self, params: Mapping[str, Any], audio: UploadedFile) -> ModelAnswer:
        """`audio` is read afresh by every attempt (retries and fallbacks), never held here."""
        op, upstream = Operation.TRANSCRIBE, dict(params)

        async def attempt(deployment: Deployment) -> dict[str, Any]:
            return await self._booked(
                deployment,
                op,
                lambda: self._adapter(deployment).complete_form(deployment, op, upstream, audio),
            )

        body, served_by = await self._route(op, upstream, attempt)
        return ModelAnswer(surface_shapes.transcription(body), served_by)

    async def speech(self, params: Mapping[str, Any]) -> RoutedBytes:
        op, upstream = Operation.SPEECH, dict(params)

        async def attempt(deployment: Deployment) -> OpenedBody:
            opened = None

            async def chunks() -> AsyncIterator[bytes]:
                nonlocal opened
                opened = await self._adapter(deployment).open_bytes(deployment, op, upstream)
                return opened.chunks

            books, _, first, first_at = await self._first(deployment, op, chunks)
            assert opened is not None
            return OpenedBody(books, opened, first, first_at)

        opened, served_by = await self._route(op, upstream, attempt)
        return RoutedBytes(opened, served_by)

    def serves(self, model: str, path: str) -> bool:
        """Whether a deployment of `model` serves `path` (`images/generations`, `rerank`, ...)."""
        op = BY_PATH.get(path)
        return op is not None and model in self._groups and bool(self._serving(model, op))

    async def _answer(self, op: Operation, params: Mapping[str, Any]) -> tuple[dict[str, Any], ServedBy]:
        upstream = dict(params)
        return await self._route(op, upstream, self._call(op, upstream))

    def _serving(self, model: str, op: Operation) -> list[Deployment]:
        key = (model, op)
        if key not in self._serving_groups:
            self._serving_groups[key] = [d for d in self._groups[model] if serves(d, op, self._known(d))]
        return self._serving_groups[key]

    async def _complete(self, op: Operation, params: Mapping[str, Any], prompt: Any) -> ModelResult:
        upstream = dict(params)
        body, served_by = await self._route(op, upstream, self._call(op, upstream))
        body["model"] = served_by.model
        estimated = self._settle_usage(body, served_by, prompt, op)
        return ModelResult(body, served_by, estimated)

    def _call(self, op: Operation, params: dict[str, Any]) -> AttemptFn[dict[str, Any]]:
        async def attempt(deployment: Deployment) -> dict[str, Any]:
            return await self._booked(
                deployment,
                op,
                lambda: self._adapter(deployment).complete(deployment, op, params),
                lambda body: int((body.get("usage") or {}).get("total_tokens") or 0),
            )

        return attempt

    async def _stream(self, op: Operation, params: Mapping[str, Any], prompt: Any) -> RoutedStream:
        client_options = dict(params.get("stream_options") or {})
        # Always ask for usage: Cirrus accounts for every stream, even if the client does not.
        upstream = {**params, "stream": True, "stream_options": {**client_options, "include_usage": True}}

        async def attempt(deployment: Deployment) -> OpenedStream:
            return await self._open(
                deployment, op, lambda: self._adapter(deployment).open_stream(deployment, op, upstream)
            )

        opened, served_by = await self._route(op, upstream, attempt)
        model = served_by.model
        return RoutedStream(
            opened,
            served_by,
            forward_usage=bool(client_options.get("include_usage")),
            estimate=lambda text: (
                self._count_prompt(model, prompt),
                self.count_tokens(model, text) if text else 0,
            ),
        )

    async def _open(
        self,
        deployment: Deployment,
        op: Operation,
        opener: Callable[[], Awaitable[AsyncIterator[dict[str, Any]]]],
    ) -> OpenedStream:
        """One streaming attempt, up to its first event: a failure before it is the attempt's."""
        return OpenedStream(*await self._first(deployment, op, opener))

    async def _first(
        self, deployment: Deployment, op: Operation, opener: Callable[[], Awaitable[AsyncIterator[E]]]
    ) -> tuple[Attempt, AsyncIterator[E], E, float]:
        """An attempt opened up to its first item: the attempt (still open: its reader closes it),
        the items, the first, and when it came. A failure before it is the attempt's, and closes
        what was opened."""
        books = self._open_attempt(deployment, op)
        items = None
        try:
            items = await opener()
            try:
                first = await anext(items)
            except StopAsyncIteration:
                raise errors.cut_short() from None
        except AttemptFailed as failure:
            await _close(items)
            books.failed(failure)
            raise
        except BaseException:
            await _close(items)
            books.abandoned()
            raise
        return books, items, first, time.perf_counter()

    async def _booked(
        self,
        deployment: Deployment,
        op: Operation,
        work: Callable[[], Awaitable[T]],
        tokens: Callable[[T], int] = lambda _: 0,
    ) -> T:
        """One attempt at a whole answer, with its verdict in the deployment's books."""
        books = self._open_attempt(deployment, op)
        try:
            answer = await work()
        except AttemptFailed as failure:
            books.failed(failure)
            raise
        except BaseException:
            books.abandoned()
            raise
        books.succeeded(time.perf_counter() - books.started, tokens(answer))
        return answer

    def _open_attempt(self, deployment: Deployment, op: Operation) -> Attempt:
        return Attempt(self._selector, deployment, op, len(self._groups[deployment.model_name]))

    def _adapter(self, deployment: Deployment) -> ModelAdapter:
        if deployment.adapter == "openai_wire":
            return self._native
        if self._litellm is None:  # only Anthropic deployments need LiteLLM: for their chats
            self._litellm = LiteLLMAdapter(drop_params=self._table.drop_params)
        return self._litellm

    # --- Anthropic's Messages API -------------------------------------------------------------

    def serves_messages(self, model: str) -> bool:
        """Whether a deployment of `model` takes Anthropic's Messages natively."""
        return any(d.native_messages for d in self._groups.get(model, ()))

    async def messages(
        self, body: Mapping[str, Any], translate: ChatTranslation, *, beta: str | None = None
    ) -> MessageResult:
        """A Messages request: natively on an Anthropic deployment, else as its chat translation."""
        chat = _Translation(translate)

        async def attempt(deployment: Deployment) -> tuple[str, dict[str, Any]]:
            if not deployment.native_messages:
                return "chat", await self._call(Operation.CHAT, chat.params())(deployment)
            answer = await self._booked(
                deployment,
                Operation.MESSAGES,
                lambda: self._anthropic.create(deployment, body, beta),
                lambda answer: chat_usage(answer.get("usage"))["total_tokens"],
            )
            return "anthropic", answer

        (wire, answer), served_by = await self._route(Operation.MESSAGES, _routing(body), attempt)
        answer["model"] = served_by.model
        if wire == "anthropic":
            reason = answer.get("stop_reason")
            return MessageResult(
                answer, served_by, "anthropic", chat_usage(answer.get("usage")), [reason] if reason else []
            )
        estimated = self._settle_usage(answer, served_by, chat.params().get("messages"), Operation.CHAT)
        result = ModelResult(answer, served_by, estimated)
        return MessageResult(answer, served_by, "chat", result.usage, result.finish_reasons, estimated)

    async def messages_stream(
        self, body: Mapping[str, Any], translate: ChatTranslation, *, beta: str | None = None
    ) -> RoutedMessageStream | RoutedStream:
        """A streamed Messages request: Anthropic's events from an Anthropic deployment, else the
        chat chunks of its translation (with their usage chunk)."""
        chat = _Translation(translate)
        model = str(body["model"])

        def chat_upstream() -> dict[str, Any]:
            return {**chat.params(), "stream": True, "stream_options": {"include_usage": True}}

        async def attempt(deployment: Deployment) -> tuple[str, OpenedStream]:
            if not deployment.native_messages:
                upstream = chat_upstream()
                opener = lambda: self._adapter(deployment).open_stream(deployment, Operation.CHAT, upstream)  # noqa: E731
                return "chat", await self._open(deployment, Operation.CHAT, opener)
            return "anthropic", await self._open(
                deployment, Operation.MESSAGES, lambda: self._anthropic.open_stream(deployment, body, beta)
            )

        (wire, opened), served_by = await self._route(Operation.MESSAGES, _routing(body), attempt)

        def estimate(text: str) -> tuple[int, int]:
            prompt = chat.params().get("messages") if chat.ready else body.get("messages")
            return self._count_prompt(model, prompt), self.count_tokens(model, text) if text else 0

        if wire == "anthropic":
            return RoutedMessageStream(opened, served_by, estimate=estimate)
        return RoutedStream(opened, served_by, forward_usage=True, estimate=estimate)

    # --- OpenAI's Responses API --------------------------------------------------------------

    def serves_responses(self, model: str) -> bool:
        """Whether a deployment of `model` serves `/responses` natively (the model file says so)."""
        return any(d.native_responses for d in self._groups.get(model, ()))

    async def responses(self, body: Mapping[str, Any], translate: ChatTranslation) -> ResponseResult:
        """A Responses request: as it is on a deployment that serves `/responses`, else as its chat
        translation. `body` is the request to send (`model` the public name, no Cirrus-only fields)."""
        chat = _Translation(translate)
        upstream = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}

        async def attempt(deployment: Deployment) -> tuple[str, dict[str, Any]]:
            if not deployment.native_responses:
                return "chat", await self._call(Operation.CHAT, chat.params())(deployment)

            async def create() -> dict[str, Any]:
                answer = await self._native.complete(deployment, Operation.RESPONSES, upstream)
                if answer.get("object") != "response" or not isinstance(answer.get("output"), list):
                    raise AttemptFailed(
                        UpstreamError("The model provider returned an answer that is not a Response.")
                    )
                return answer

            answer = await self._booked(
                deployment,
                Operation.RESPONSES,
                create,
                lambda answer: responses_chat_usage(answer.get("usage"))["total_tokens"],
            )
            return "responses", answer

        (wire, answer), served_by = await self._route(Operation.RESPONSES, {"model": body["model"]}, attempt)
        answer["model"] = served_by.model
        if wire == "responses":
            usage, estimated = responses_chat_usage(answer.get("usage")), False
            if not answer.get("usage"):
                prompt = self._responses_prompt(chat)
                written = output_text(answer)
                output = self.count_tokens(served_by.model, written) if written else 0
                usage = {
                    "prompt_tokens": prompt,
                    "completion_tokens": output,
                    "total_tokens": prompt + output,
                }
                estimated = True
            status = answer.get("status")
            return ResponseResult(
                answer, served_by, "responses", usage, [str(status)] if status else [], estimated
            )
        estimated = self._settle_usage(answer, served_by, chat.params().get("messages"), Operation.CHAT)
        result = ModelResult(answer, served_by, estimated)
        return ResponseResult(answer, served_by, "chat", result.usage, result.finish_reasons, estimated)

    async def responses_stream(
        self, body: Mapping[str, Any], translate: ChatTranslation
    ) -> RoutedResponseStream | RoutedStream:
        """A streamed Responses request: the typed events of a deployment that serves `/responses`,
        else the chat chunks of its translation (with their usage chunk)."""
        chat = _Translation(translate)
        model = str(body["model"])
        upstream = {**body, "stream": True}

        async def attempt(deployment: Deployment) -> tuple[str, OpenedStream]:
            if not deployment.native_responses:
                params = {**chat.params(), "stream": True, "stream_options": {"include_usage": True}}
                opener = lambda: self._adapter(deployment).open_stream(deployment, Operation.CHAT, params)  # noqa: E731
                return "chat", await self._open(deployment, Operation.CHAT, opener)

            async def open_native() -> AsyncIterator[dict[str, Any]]:
                return raising_errors(
                    await self._native.open_stream(deployment, Operation.RESPONSES, upstream)
                )

            return "responses", await self._open(deployment, Operation.RESPONSES, open_native)

        (wire, opened), served_by = await self._route(Operation.RESPONSES, {"model": model}, attempt)

        def estimate(text: str) -> tuple[int, int]:
            return self._responses_prompt(chat), self.count_tokens(model, text) if text else 0

        if wire == "responses":
            return RoutedResponseStream(opened, served_by, estimate=estimate)
        return RoutedStream(opened, served_by, forward_usage=True, estimate=estimate)

    def _responses_prompt(self, chat: _Translation) -> int:
        """The prompt's tokens when a provider reported none: its chat translation, counted."""
        try:
            params = chat.params()
        except AttemptFailed:
            return 0
        return self._count_prompt(str(params.get("model")), params.get("messages"))

    # --- retries and fallbacks ---------------------------------------------------------------

    async def _route(
        self, op: Operation, params: Mapping[str, Any], attempt: AttemptFn[T]
    ) -> tuple[T, ServedBy]:
        model = str(params["model"])
        tally = _Tally()
        try:
            result, deployment, retries = await self._with_fallbacks(
                model, op, params, attempt, _Chain(tally, {model})
            )
        except AttemptFailed as failure:
            raise failure.error from None
        served_by = ServedBy(
            model=deployment.model_name,
            deployment=deployment.id,
            provider=deployment.provider,
            upstream_model=deployment.upstream_model,
            fallbacks=tally.fallbacks,
            retries=retries,
        )
        return result, served_by

    async def _with_fallbacks(
        self, model: str, op: Operation, params: Mapping[str, Any], attempt: AttemptFn[T], chain: _Chain
    ) -> tuple[T, Deployment, int]:
        try:
            return await self._with_retries(model, op, params, attempt)
        except AttemptFailed as failure:
            if chain.depth >= self._settings.max_fallbacks:
                raise
            allowed = allowed_models.get()
            for target in self._fallback_targets(model, failure):
                if target in chain.visited or target not in self._groups:
                    continue
                if allowed is not None and target not in allowed:
                    log.info("model %s failed; fallback %s skipped: the key may not use it", model, target)
                    continue
                chain.visited.add(target)
                chain.tally.fallbacks += 1
                log.info("model %s failed (%s); falling back to %s", model, failure.error.code, target)
                try:
                    return await self._with_fallbacks(target, op, params, attempt, chain.deeper())
                except AttemptFailed:
                    continue
            raise

    async def _with_retries(
        self, model: str, op: Operation, params: Mapping[str, Any], attempt: AttemptFn[T]
    ) -> tuple[T, Deployment, int]:
        group = self._groups[model]
        if op in SURFACES:
            group = self._serving(model, op)
            if not group:  # only a fallback can serve it
                raise AttemptFailed(_not_served(model, op), 400)
        elif self._settings.enable_pre_call_checks and op is not Operation.EMBED:
            group = self._fitting(model, group, params)
        retries = 0
        while True:
            deployment = self._selector.pick(model, group)
            try:
                return await attempt(deployment), deployment, retries
            except AttemptFailed as failure:
                if retries >= self._settings.num_retries or not self._retryable(group, failure):
                    raise
                await self._sleep(self._backoff(group, failure, retries))
                retries += 1

    def _retryable(self, group: Sequence[Deployment], failure: AttemptFailed) -> bool:
        """LiteLLM's `should_retry_this_error`."""
        settings = self._settings
        if failure.kind == "context_window" and settings.context_window_fallbacks is not None:
            return False
        if failure.kind == "content_policy" and settings.content_policy_fallbacks is not None:
            return False
        status = failure.status
        if status is not None and status < 500 and status not in _RETRYABLE and status not in (401, 403):
            return False
        if status in (401, 403) and len(group) <= 1:
            return False
        # Nothing healthy left to retry on (a 429 or other failure cooled the last one down): the
        # fallbacks, if any, take over at once.
        return bool(self._selector.available(group))

    def _backoff(self, group: Sequence[Deployment], failure: AttemptFailed, retries: int) -> float:
        """Nothing when another deployment can take the retry; else Retry-After, else exponential."""
        if len(group) > 1 and self._selector.available(group):
            return 0.0
        wait = failure.retry_after
        if wait is None or not 0 < wait <= MAX_RETRY_AFTER:
            wait = min(max(INITIAL_RETRY_DELAY * 2**retries, self._settings.retry_after), MAX_RETRY_DELAY)
        return max(wait, self._settings.retry_after) * (1 + RETRY_JITTER * self._rng.random())

    def _fallback_targets(self, model: str, failure: AttemptFailed) -> list[str]:
        settings = self._settings
        if failure.kind == "context_window" and settings.context_window_fallbacks is not None:
            return _lookup(settings.context_window_fallbacks, model)
        if failure.kind == "content_policy" and settings.content_policy_fallbacks is not None:
            return _lookup(settings.content_policy_fallbacks, model)
        return _lookup(settings.fallbacks, model) or list(settings.default_fallbacks)

    def _fitting(self, model: str, group: list[Deployment], params: Mapping[str, Any]) -> list[Deployment]:
        """`enable_pre_call_checks`: only deployments whose context window holds the prompt."""
        windows = {d.id: self._deployment_limits(d).max_input_tokens for d in group}
        if not any(windows.values()):
            return group
        needed = self._count_prompt(model, params.get("messages") or params.get("prompt"))
        fitting = [d for d in group if not windows[d.id] or needed <= windows[d.id]]  # type: ignore[operator]
        if fitting:
            return fitting
        largest = max(w for w in windows.values() if w)
        raise AttemptFailed(
            InvalidRequestError(
                f"This model's maximum context length is {largest} tokens. However, your messages "
                f"resulted in {needed} tokens. Please reduce the length of the messages.",
                param="messages",
                code=errors.CONTEXT_WINDOW,
            ),
            400,
        )

    # --- model facts --------------------------------------------------------------------------

    def cost_usd(self, served_by: ServedBy, input_tokens: int, output_tokens: int) -> float | None:
        """USD for the tokens: the deployment's own prices from the file, else LiteLLM's price map."""
        deployment = self._deployments.get(served_by.deployment)
        price = self._price(deployment) if deployment is not None else None
        if price is None:
            return None
        return input_tokens * price[0] + output_tokens * price[1]

    def max_cost_usd(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """The most a call to `model` can cost: its priciest deployment, fallbacks included; None
        when any deployment that may serve it has no known price."""

        def cost(deployment: Deployment) -> float | None:
            price = self._price(deployment)
            return None if price is None else input_tokens * price[0] + output_tokens * price[1]

        return self._most(model, cost)

    def unit_cost_usd(self, served_by: ServedBy, usage: UnitUsage) -> float | None:
        """USD for a call priced in its own unit (`unit_prices`): the file's prices, else the map's."""
        deployment = self._deployments.get(served_by.deployment)
        return self._unit_cost(deployment, usage) if deployment is not None else None

    def max_unit_cost_usd(self, model: str, usage: UnitUsage) -> float | None:
        """The most `usage` can cost at `model`: its priciest deployment, fallbacks included; None
        when any deployment that may serve it has no known price."""

        def cost(deployment: Deployment) -> float | None:
            known = self._unit_cost(deployment, usage)
            if known is not None:
                return known
            # The amount may be unknown before the call (audio that is not WAV, tokens the provider
            # will report): a deployment with a price holds nothing for it, one without is unpriced.
            one = dataclasses.replace(usage, units=1.0)
            return 0.0 if self._unit_cost(deployment, one) is not None or self._price(deployment) else None

        return self._most(model, cost)

    def _most(self, model: str, cost: Callable[[Deployment], float | None]) -> float | None:
        costs = []
        for name in self.reachable(model):
            for deployment in self._groups.get(name, ()):
                known = cost(deployment)
                if known is None:  # no bound: a hold would be too small by an unknown amount
                    return None
                costs.append(known)
        return max(costs, default=None)

    def reachable(self, model: str) -> list[str]:
        """`model` and every model a fallback of any kind can reach from it, chained up to
        `max_fallbacks` deep, that the caller's key may use (`allowed_models`)."""
        allowed = allowed_models.get()
        found, frontier = [model], [model]
        for _ in range(self._settings.max_fallbacks):
            frontier = [
                target
                for name in frontier
                for target in self._every_fallback(name)
                if target in self._groups and (allowed is None or target in allowed)
            ]
            frontier = [t for t in dict.fromkeys(frontier) if t not in found]
            found.extend(frontier)
        return found

    def _every_fallback(self, model: str) -> list[str]:
        """The targets of every list a failure of `model` can fall back by (`_fallback_targets`)."""
        settings = self._settings
        targets = _lookup(settings.fallbacks, model) or list(settings.default_fallbacks)
        for kind in (settings.context_window_fallbacks, settings.content_policy_fallbacks):
            if kind is not None:
                targets += _lookup(kind, model)
        return targets

    def _unit_cost(self, deployment: Deployment, usage: UnitUsage) -> float | None:
        known = self._known(deployment)
        sources = [
            deployment.file_unit_prices,
            *unit_prices.map_entries(deployment.provider, _identity(deployment), usage, known),
        ]
        return unit_prices.unit_cost(usage, sources, self._price(deployment))

    def _known(self, deployment: Deployment) -> dict[str, Any]:
        """The deployment's model in LiteLLM's price map ({} if unknown)."""
        return price_map.model_entry(deployment.provider, deployment.upstream_model, _base_model(deployment))

    def count_tokens(self, model: str, messages: Sequence[Mapping[str, Any]] | str) -> int:
        """Tokens of `messages` (or a prompt string) with the tokenizer of `model`'s deployment."""
        name = _identity(self._groups[model][0]) if model in self._groups else model
        if isinstance(messages, str):
            return tokens.count_text(name, messages)
        return tokens.count_messages(name, messages)

    def limits(self, model: str) -> ModelLimits:
        """The tightest input and output limits over `model`'s deployments (the file wins), and
        whether all of them reason."""
        if model not in self._limits:
            found = [self._deployment_limits(d) for d in self._groups.get(model, ())]
            inputs = [x.max_input_tokens for x in found if x.max_input_tokens]
            outputs = [x.max_output_tokens for x in found if x.max_output_tokens]
            reasoning = bool(found) and all(x.reasoning for x in found)
            limits = ModelLimits(min(inputs, default=None), min(outputs, default=None), reasoning)
            self._limits[model] = limits
        return self._limits[model]

    def features(self, model: str) -> ModelFeatures:
        """What all of `model`'s deployments support: False if any does not, None if any is unknown."""
        infos = [self._deployment_info(d) for d in self._groups.get(model, ())]

        def agreed(key: str) -> bool | None:
            values = [info.get(key) for info in infos]
            if any(v is False for v in values):
                return False
            return True if values and all(v is True for v in values) else None

        return ModelFeatures(
            function_calling=agreed("supports_function_calling"), reasoning=agreed("supports_reasoning")
        )

    def _deployment_info(self, deployment: Deployment) -> dict[str, Any]:
        """The price map's entry for the deployment, its `model_info` winning."""
        known = price_map.model_entry(deployment.provider, deployment.upstream_model, _base_model(deployment))
        return {**{k: v for k, v in known.items() if v is not None}, **deployment.model_info}

    def _deployment_limits(self, deployment: Deployment) -> ModelLimits:
        info = self._deployment_info(deployment)
        max_in, max_out = info.get("max_input_tokens"), info.get("max_output_tokens")
        return ModelLimits(
            max_in if isinstance(max_in, int) else None,
            max_out if isinstance(max_out, int) else None,
            info.get("supports_reasoning") is True,
        )

    def _price(self, deployment: Deployment) -> tuple[float, float] | None:
        if deployment.id not in self._prices:
            price = deployment.file_prices
            if price is None:
                entry = price_map.model_entry(
                    deployment.provider, deployment.upstream_model, _base_model(deployment)
                )
                price = price_map.prices(entry)
            self._prices[deployment.id] = price
        return self._prices[deployment.id]

    def _count_prompt(self, model: str, prompt: Any) -> int:
        if isinstance(prompt, str):
            return self.count_tokens(model, prompt)
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], Mapping):
            return self.count_tokens(model, prompt)
        if isinstance(prompt, list):  # several prompts, or token ids
            return sum(len(p) if isinstance(p, list) else self.count_tokens(model, str(p)) for p in prompt)
        return 0

    def _settle_usage(self, body: dict[str, Any], served_by: ServedBy, prompt: Any, op: Operation) -> bool:
        """Count tokens when the provider reported none; True if counted."""
        if (body.get("usage") or {}).get("total_tokens"):
            return False
        generated = []
        for choice in body.get("choices") or ():
            if op is Operation.TEXT:
                generated.append(choice.get("text") or "")
                continue
            message = choice.get("message") or {}
            generated.append(message.get("content") or "")
            generated.extend(
                (t.get("function") or {}).get("arguments") or "" for t in message.get("tool_calls") or ()
            )
        text = "".join(generated)
        prompt_tokens = self._count_prompt(served_by.model, prompt)
        output_tokens = self.count_tokens(served_by.model, text) if text else 0
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": prompt_tokens + output_tokens,
        }
        return True

    def health(self, deployment_id: str) -> DeploymentHealth:
        """What this process knows of a deployment: in flight, cooldown, this minute's counts."""
        return self._selector.health(self._deployments[deployment_id])

    # --- lifecycle ----------------------------------------------------------------------------

    async def warm(self) -> None:
        """Ready to serve every deployment: waits for LiteLLM's import when the file needs it."""
        if isinstance(self._litellm, LiteLLMAdapter):
            await self._litellm.ready()

    async def aclose(self) -> None:
        await self._native.aclose()
        await self._anthropic.aclose()
        if self._litellm is not None:
            await self._litellm.aclose()


class _Translation:
    """A Messages request's chat parameters, worked out once and only if a deployment that is not
    Anthropic's is tried; a request that cannot be translated fails that attempt with its 400."""

    def __init__(self, translate: ChatTranslation) -> None:
        self._translate = translate
        self._params: dict[str, Any] | None = None

    @property
    def ready(self) -> bool:
        return self._params is not None

    def params(self) -> dict[str, Any]:
        if self._params is None:
            try:
                self._params = dict(self._translate())
            except CirrusError as exc:
                raise AttemptFailed(exc, exc.status) from None
        return self._params


def _routing(body: Mapping[str, Any]) -> dict[str, Any]:
    """What routing reads of a Messages request: the model, and the messages for context checks."""
    return {"model": body["model"], "messages": body.get("messages")}


def _lookup(fallbacks: Sequence[Mapping[str, Sequence[str]]] | None, model: str) -> list[str]:
    """A model's list in LiteLLM's `[{name: [targets]}]` shape; `"*"` applies to every model."""
    generic: list[str] = []
    for entry in fallbacks or ():
        if model in entry:
            return list(entry[model])
        if "*" in entry and not generic:
            generic = list(entry["*"])
    return generic


def _base_model(deployment: Deployment) -> str | None:
    value = deployment.params.get("base_model") or deployment.model_info.get("base_model")
    return str(value) if value else None


def _identity(deployment: Deployment) -> str:
    """The model name a tokenizer knows: Azure deployments are named by their owners."""
    return _base_model(deployment) or deployment.upstream_model


def _not_served(model: str, op: Operation) -> InvalidRequestError:
    return InvalidRequestError(
        f"The model `{model}` does not support /v1/{op.path}.", param="model", code="model_not_supported"
    )


async def _close(events: Any) -> None:
    closer = getattr(events, "aclose", None)
    if closer is not None:
        with contextlib.suppress(Exception):  # the attempt has failed already; its error is what matters
            await closer()
