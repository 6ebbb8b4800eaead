"""Legacy text completions and embeddings: the same checks and metering as chat, fewer features."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from shared.clients.protocols import EmbeddingResult, LLMRouter, ModelResult, ServedBy
from shared.models.requests import CompletionCreate, EmbeddingCreate
from shared.services.calls import CallContext, Meter, Metering, check_model, metered, primed
from shared.services.model_catalog import ModelCatalog

OPENAI_DEFAULT_MAX_TOKENS = 16  # what /v1/completions generates when max_tokens is not given


@dataclass
class OpenCompletionStream:
    served_by: ServedBy
    chunks: AsyncIterator[dict[str, Any]]


class CompletionService:
    def __init__(self, metering: Metering, catalog: ModelCatalog) -> None:
        self._metering = metering
        self._catalog = catalog

    async def create(self, request: CompletionCreate, call: CallContext) -> ModelResult:
        meter = await self._start(request, call)
        result = await meter.call(self._metering.llm.text_completion(request.upstream_params()))
        meter.finish_with(result)
        return result

    async def open_stream(self, request: CompletionCreate, call: CallContext) -> OpenCompletionStream:
        meter = await self._start(request, call)
        stream = await meter.call(self._metering.llm.text_completion_stream(request.upstream_params()))
        return OpenCompletionStream(stream.served_by, await primed(metered(stream, meter)))

    async def _start(self, request: CompletionCreate, call: CallContext) -> Meter:
        llm = self._metering.llm
        check_model(self._catalog, llm, call.principal, request.model, output_cap=request.output_cap)
        prompts = _inputs(request.prompt)

        def estimate() -> tuple[int, int]:
            choices = request.best_of or request.n or 1
            per_prompt = (request.max_tokens or OPENAI_DEFAULT_MAX_TOKENS) * choices
            return _tokens(llm, request.model, prompts), per_prompt * len(prompts)

        return await self._metering.start(
            "completions",
            request.model,
            call,
            estimate=estimate,
            content=request.prompt,
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
        llm = self._metering.llm
        check_model(self._catalog, llm, call.principal, request.model)
        meter = await self._metering.start(
            "embeddings",
            request.model,
            call,
            estimate=lambda: (_tokens(llm, request.model, _inputs(request.input)), 0),
            content=request.input,
            stream=False,
            attributes={"gen_ai.embeddings.dimension.count": request.dimensions},
        )
        result = await meter.call(self._metering.llm.embed(request.upstream_params()))
        meter.finish(served_by=result.served_by, input_tokens=result.input_tokens)
        return result


def _inputs(value: str | list[Any]) -> list[str | list[int]]:
    """A prompt or embedding input as a list of items: strings or lists of token ids."""
    if isinstance(value, str) or (value and isinstance(value[0], int)):
        return [value]  # one string, or one list of token ids
    return list(value)


def _tokens(llm: LLMRouter, model: str, items: list[str | list[int]]) -> int:
    return sum(len(item) if isinstance(item, list) else llm.count_tokens(model, item) for item in items)
