"""Image generation: the key checks, limits and metering of embeddings, counted in images made.

Priced per image (or per pixel of the size) from the model file or LiteLLM's price map, for the
size and quality the provider says it used, else the ones asked for (see
`shared.clients.llm.unit_prices`). The budget hold is `n` images at the priciest deployment."""

from __future__ import annotations

from shared.clients.protocols import ModelAnswer, UnitUsage
from shared.models.images import ImageCreate
from shared.services.calls import CallContext, Metering, check_model
from shared.services.model_catalog import ModelCatalog

PATH = "images/generations"


class ImageService:
    def __init__(self, metering: Metering, catalog: ModelCatalog) -> None:
        self._metering = metering
        self._catalog = catalog

    async def create(self, request: ImageCreate, call: CallContext) -> ModelAnswer:
        llm = self._metering.llm
        check_model(self._catalog, llm, call.principal, request.model, path=PATH)
        planned = UnitUsage("images", request.n or 1, size=request.size, quality=request.quality)
        meter = await self._metering.start(
            "images.generations",
            request.model,
            call,
            stream=False,
            attributes={"gen_ai.request.choice.count": request.n},
            max_cost=lambda: llm.max_unit_cost_usd(request.model, planned),
            content=request.prompt,
        )
        answer = await meter.call(llm.generate_images(request.upstream_params()))
        body = answer.body
        tokens = body.get("usage") or {}  # token-billed models (gpt-image-*) report these
        used = UnitUsage(
            "images",
            len(body["data"]),
            input_tokens=int(tokens.get("input_tokens") or 0),
            output_tokens=int(tokens.get("output_tokens") or 0),
            size=body.get("size") or request.size,
            quality=body.get("quality") or request.quality,
        )
        meter.finish(served_by=answer.served_by, units=used)
        return answer
