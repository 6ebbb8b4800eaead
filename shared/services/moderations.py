"""Moderations: the key checks, limits and metering of embeddings, counted in inputs classified.

Their price is per token (free at OpenAI); the provider reports no tokens, so Cirrus counts the
text's (images are not counted) and the record says so (`usage_estimated`)."""

from __future__ import annotations

import functools

from shared.clients.protocols import ModelAnswer, UnitUsage
from shared.models.moderations import ModerationCreate
from shared.services.calls import CallContext, Metering, check_model
from shared.services.model_catalog import ModelCatalog

PATH = "moderations"


class ModerationService:
    def __init__(self, metering: Metering, catalog: ModelCatalog) -> None:
        self._metering = metering
        self._catalog = catalog

    async def create(self, request: ModerationCreate, call: CallContext) -> ModelAnswer:
        llm = self._metering.llm
        check_model(self._catalog, llm, call.principal, request.model, path=PATH)

        @functools.cache
        def tokens() -> int:
            return sum(llm.count_tokens(request.model, text) for text in request.texts() if text)

        meter = await self._metering.start(
            "moderations",
            request.model,
            call,
            stream=False,
            attributes={},
            estimate=lambda: (tokens(), 0),
            content=request.input,
        )
        answer = await meter.call(llm.moderate(request.upstream_params()))
        used = UnitUsage("inputs", len(answer.body["results"]), input_tokens=tokens(), estimated=True)
        meter.finish(served_by=answer.served_by, units=used)
        return answer
