"""Legacy text completions and embeddings: the same checks and metering as chat, fewer features."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from openai.types import Completion

from shared.clients.protocols import CompletionResult, CompletionStream, EmbeddingResult, ServedBy
from shared.models.requests import CompletionCreate, EmbeddingCreate
from shared.services.calls import CallContext, Meter, Metering, check_model, close_stream, primed
from shared.services.model_catalog import ModelCatalog


@dataclass
class OpenCompletionStream:
    served_by: ServedBy
    chunks: AsyncIterator[Completion]


class CompletionService:
    def __init__(self, metering: Metering, catalog: ModelCatalog) -> None:
        self._metering = metering
        self._catalog = catalog

    async def create(self, request: CompletionCreate, call: CallContext) -> CompletionResult:
        meter = self._start(request, call)
        result = await meter.call(self._metering.llm.text_completion(request.upstream_params()))
        meter.finish_with(result)
        return result

    async def open_stream(self, request: CompletionCreate, call: CallContext) -> OpenCompletionStream:
        meter = self._start(request, call)
        stream = await meter.call(self._metering.llm.text_completion_stream(request.upstream_params()))
        return OpenCompletionStream(stream.served_by, await primed(_relay(stream, meter)))

    def _start(self, request: CompletionCreate, call: CallContext) -> Meter:
        check_model(self._catalog, self._metering.llm, request.model, request.output_cap, "max_tokens")
        return self._metering.start(
            "completions",
            request.model,
            call,
            stream=bool(request.stream),
            attributes={
                "gen_ai.request.max_tokens": request.max_tokens,
                "gen_ai.request.temperature": request.temperature,
            },
        )


class EmbeddingService:
    def __init__(self, metering: Metering, catalog: ModelCatalog) -> None:
        self._metering = metering
        self._catalog = catalog

    async def create(self, request: EmbeddingCreate, call: CallContext) -> EmbeddingResult:
        check_model(self._catalog, self._metering.llm, request.model, None, "")
        meter = self._metering.start(
            "embeddings",
            request.model,
            call,
            stream=False,
            attributes={"gen_ai.embeddings.dimension.count": request.dimensions},
        )
        result = await meter.call(self._metering.llm.embed(request.upstream_params()))
        meter.finish(served_by=result.served_by, input_tokens=result.input_tokens)
        return result


async def _relay(stream: CompletionStream, meter: Meter) -> AsyncIterator[Completion]:
    upstream = aiter(stream)
    error: BaseException | None = None
    try:
        async for chunk in upstream:
            meter.first_token()
            yield chunk
    except BaseException as exc:
        error = exc
        raise
    finally:
        await close_stream(stream, upstream, meter, error)
