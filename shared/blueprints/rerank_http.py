"""POST /v1/rerank (Cohere's and Jina's shape, as LiteLLM exposes it)."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import RERANKED, Operation
from shared.blueprints._http import RequestContext, endpoint, json_response, read_json, served_headers
from shared.models.rerank import RerankCreate
from shared.models.validation import validate_body

bp = func.Blueprint()


@bp.route(route="v1/rerank", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Rerank documents against a query (Cohere's shape)",
        body=RerankCreate,
        calls_model=True,
        returns={200: RERANKED},
        example={"model": "cirrus-rerank", "query": "clouds", "documents": ["cirrus", "granite"]},
    )
)
async def rerank(req: Request, ctx: RequestContext) -> Response:
    request = validate_body(RerankCreate, await read_json(req, ctx.container.settings.max_body_bytes))
    answer = await (await ctx.container.rerank()).create(request, ctx.call(req))
    return json_response(answer.body, headers=served_headers(answer.served_by))
