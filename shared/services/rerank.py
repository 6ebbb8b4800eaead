"""Rerank: the key checks, limits and metering of embeddings, counted in search units.

A search unit is what Cohere bills: one query over up to 100 documents. The provider's own figure
(`meta.billed_units.search_units`) is used; a provider that reports none (vLLM, Jina: they report
tokens) is counted one unit a request, as LiteLLM counts it, and the record says so."""

from __future__ import annotations

import math

from shared.clients.protocols import ModelAnswer, UnitUsage
from shared.models.rerank import DOCUMENTS_PER_SEARCH_UNIT, RerankCreate
from shared.services.calls import CallContext, Metering, check_model
from shared.services.model_catalog import ModelCatalog

PATH = "rerank"


class RerankService:
    def __init__(self, metering: Metering, catalog: ModelCatalog) -> None:
        self._metering = metering
        self._catalog = catalog

    async def create(self, request: RerankCreate, call: CallContext) -> ModelAnswer:
        llm = self._metering.llm
        check_model(self._catalog, llm, call.principal, request.model, path=PATH)
        most = UnitUsage("search_units", math.ceil(len(request.documents) / DOCUMENTS_PER_SEARCH_UNIT))
        meter = await self._metering.start(
            "rerank",
            request.model,
            call,
            stream=False,
            attributes={},
            max_cost=lambda: llm.max_unit_cost_usd(request.model, most),
            content=request.query,
        )
        answer = await meter.call(llm.rerank(request.upstream_params()))
        meta = answer.body.get("meta") or {}
        billed, tokens = meta.get("billed_units") or {}, meta.get("tokens") or {}
        search_units = billed.get("search_units")
        used = UnitUsage(
            "search_units",
            float(search_units) if isinstance(search_units, int | float) else 1.0,
            input_tokens=int(billed.get("total_tokens") or tokens.get("input_tokens") or 0),
            output_tokens=int(tokens.get("output_tokens") or 0),
            estimated=not isinstance(search_units, int | float),
        )
        meter.finish(served_by=answer.served_by, units=used)
        return answer
