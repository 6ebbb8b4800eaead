"""Chat completions: checks, session history, the exact-match cache, the call, and what follows."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from shared.clients.protocols import LLMRouter, ModelStream, ServedBy
from shared.errors import InvalidRequestError
from shared.models.requests import ChatCompletionCreate
from shared.services.accumulate import ChatAccumulator, assistant_message, replay_chunks
from shared.services.cache import CacheStatus, ResponseCache, cache_key, directives
from shared.services.calls import (
    DEFAULT_OUTPUT_CAP,
    CallContext,
    Meter,
    Metering,
    check_model,
    close_stream,
    primed,
)
from shared.services.model_catalog import ModelCatalog
from shared.services.sessions import SessionService, fit_to_context, turn_to_store

Chunk = dict[str, Any]


@dataclass
class ChatOutcome:
    completion: dict[str, Any]  # OpenAI's chat.completion JSON
    served_by: ServedBy
    cache: CacheStatus
    session_id: str | None


@dataclass
class OpenStream:
    """A stream whose first chunk has arrived: failures before it were raised as ordinary errors."""

    served_by: ServedBy
    chunks: AsyncIterator[Chunk]
    cache: CacheStatus
    session_id: str | None
    # The stream's usage once `chunks` is exhausted: the provider's, or Cirrus's count when it
    # sent none (whether or not the client asked for a usage chunk).
    usage: Callable[[], dict[str, Any] | None] = lambda: None


@dataclass
class _Prepared:
    params: dict[str, Any]
    session_id: str | None
    history: list[dict[str, Any]] = field(default_factory=list)
    new_messages: list[dict[str, Any]] = field(default_factory=list)
    cache: CacheStatus = CacheStatus.OFF
    cache_key: str | None = None
    cache_ttl: int = 0
    cached: dict[str, Any] | None = None

    @property
    def keeps_answer(self) -> bool:
        """Whether the whole answer is needed afterwards (a session turn or a cache entry)."""
        return bool(
            self.session_id or (self.cache_key and self.cache_ttl and self.cache is not CacheStatus.HIT)
        )


class ChatService:
    def __init__(
        self,
        metering: Metering,
        catalog: ModelCatalog,
        sessions: SessionService,
        cache: ResponseCache,
        *,
        max_messages: int,
    ) -> None:
        self._metering = metering
        self._llm: LLMRouter = metering.llm
        self._catalog = catalog
        self._sessions = sessions
        self._cache = cache
        self._max_messages = max_messages

    async def create(self, request: ChatCompletionCreate, call: CallContext) -> ChatOutcome:
        """A complete (non-streaming) chat completion, recorded under `call.endpoint` (`messages`
        or `responses` when another surface is translated to chat)."""
        prepared = await self._prepare(request, call)
        meter = await self._meter(request, call, prepared)
        if prepared.cached is not None:
            served_by = _cache_served_by(request.model, prepared.cached)
            _finish_cached(meter, prepared)
            await self._after(prepared, prepared.cached)
            return ChatOutcome(prepared.cached, served_by, prepared.cache, prepared.session_id)
        result = await meter.call(self._llm.chat(prepared.params), session_id=prepared.session_id)
        meter.finish_with(result, session_id=prepared.session_id)
        await self._after(prepared, result.body)
        return ChatOutcome(result.body, result.served_by, prepared.cache, prepared.session_id)

    async def open_stream(self, request: ChatCompletionCreate, call: CallContext) -> OpenStream:
        """Start a stream and wait for its first chunk, so early failures keep their HTTP status."""
        prepared = await self._prepare(request, call)
        meter = await self._meter(request, call, prepared)
        if prepared.cached is not None:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            replayed = replay_chunks(prepared.cached, include_usage=include_usage)
            _finish_cached(meter, prepared)
            await self._after(prepared, prepared.cached)
            cached_usage = prepared.cached.get("usage")
            return OpenStream(
                _cache_served_by(request.model, prepared.cached),
                _iterate(replayed),
                prepared.cache,
                prepared.session_id,
                usage=lambda: cached_usage,
            )
        stream = await meter.call(self._llm.chat_stream(prepared.params), session_id=prepared.session_id)
        # From here the relay owns the meter and the upstream stream, and closes both.
        chunks = await primed(self._relay(stream, meter, prepared))
        return OpenStream(
            stream.served_by, chunks, prepared.cache, prepared.session_id, usage=lambda: stream.usage
        )

    async def _relay(self, stream: ModelStream, meter: Meter, prepared: _Prepared) -> AsyncIterator[Chunk]:
        # The whole answer is rebuilt only when something keeps it: a session, the cache, a trace.
        accumulator = ChatAccumulator() if prepared.keeps_answer or self._metering.trace_content else None
        upstream = aiter(stream)
        error: BaseException | None = None
        first = True
        try:
            async for chunk in upstream:
                if first:
                    meter.first_token()
                    first = False
                if accumulator is not None:
                    accumulator.add(chunk)
                yield chunk
        except BaseException as exc:
            error = exc
            raise
        finally:
            if accumulator is not None and accumulator.complete:
                meter.record_output(accumulator.completion(None)["choices"])
            await close_stream(stream, upstream, meter, error, session_id=prepared.session_id)
            if error is None and accumulator is not None and accumulator.complete:
                # Before the stream's end reaches the client (`[DONE]` follows this generator).
                await self._after(prepared, accumulator.completion(stream.usage))

    async def _prepare(self, request: ChatCompletionCreate, call: CallContext) -> _Prepared:
        if len(request.messages) > self._max_messages:
            raise InvalidRequestError(
                f"Too many messages: {len(request.messages)}; at most {self._max_messages} per request.",
                param="messages",
            )
        cap_param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        check_model(
            self._catalog,
            self._llm,
            call.principal,
            request.model,
            output_cap=request.output_cap,
            cap_param=cap_param,
            tools=bool(request.tools),
        )
        params = request.upstream_params()
        metadata = dict(params.pop("metadata", None) or {})
        session_id = call.session_id or metadata.pop("session_id", None)
        if metadata:
            params["metadata"] = metadata
        prepared = _Prepared(params=params, session_id=session_id, new_messages=params["messages"])
        if session_id:
            prepared.history = await self._sessions.history(call.principal, session_id)
            limits = self._llm.limits(request.model)
            budget = limits.max_input_tokens and limits.max_input_tokens - (request.output_cap or 0)
            params["messages"] = fit_to_context(
                prepared.history,
                prepared.new_messages,
                budget,
                lambda messages: self._llm.count_tokens(request.model, messages),
            )
        await self._lookup_cache(prepared, request.model, call)
        return prepared

    async def _lookup_cache(self, prepared: _Prepared, model: str, call: CallContext) -> None:
        prepared.cache_ttl = self._catalog.cache_ttl(model)
        if not prepared.cache_ttl:
            return
        wanted = directives(call.cache_control)
        prepared.cache = CacheStatus.BYPASS if wanted & {"no-cache", "no-store"} else CacheStatus.MISS
        if "no-store" in wanted:
            prepared.cache_ttl = 0
            return
        prepared.cache_key = cache_key("chat.completions", prepared.params, tenant=call.principal.tenant)
        if prepared.cache is CacheStatus.MISS:
            prepared.cached = await self._cache.get(prepared.cache_key)
            if prepared.cached is not None:
                prepared.cache = CacheStatus.HIT

    async def _after(self, prepared: _Prepared, completion: dict[str, Any]) -> None:
        """What follows an answer: the session's new turn, written before the response is returned
        (a client may read the session right after it), and the cache entry, in the background."""
        background = self._metering.background
        if prepared.session_id:
            turn = turn_to_store(prepared.new_messages, prepared.history, assistant_message(completion))
            await self._sessions.append_turn(background.spawn, prepared.session_id, turn)
        if prepared.cache_key and prepared.cache_ttl and prepared.cache is not CacheStatus.HIT:
            background.spawn(
                self._cache.put(prepared.cache_key, completion, prepared.cache_ttl), name="cache-put"
            )

    async def _meter(self, request: ChatCompletionCreate, call: CallContext, prepared: _Prepared) -> Meter:
        def estimate() -> tuple[int, int]:
            if prepared.cached is not None:
                return 0, 0
            cap = request.output_cap or self._llm.limits(request.model).max_output_tokens
            output = (cap or DEFAULT_OUTPUT_CAP) * (request.n or 1)
            return self._llm.count_tokens(request.model, prepared.params["messages"]), output

        return await self._metering.start(
            call.endpoint,
            request.model,
            call,
            estimate=estimate,
            content=prepared.params["messages"],
            stream=bool(request.stream),
            attributes={
                "gen_ai.request.max_tokens": request.output_cap,
                "gen_ai.request.temperature": request.temperature,
                "gen_ai.request.top_p": request.top_p,
                "gen_ai.request.seed": request.seed,
                "gen_ai.request.choice.count": request.n,
                "cirrus.session": prepared.session_id,
            },
        )


def _finish_cached(meter: Meter, prepared: _Prepared) -> None:
    usage = (prepared.cached or {}).get("usage") or {}
    meter.finish(
        input_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        cache_hit=True,
        session_id=prepared.session_id,
    )


def _cache_served_by(model: str, completion: dict[str, Any]) -> ServedBy:
    return ServedBy(
        model=model, deployment="cache", provider="cache", upstream_model=str(completion.get("model"))
    )


async def _iterate(chunks: list[Chunk]) -> AsyncIterator[Chunk]:
    for chunk in chunks:
        yield chunk
