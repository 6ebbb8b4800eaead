"""POST /v1/completions (legacy text completions) and POST /v1/embeddings."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import EVENTS, SSE, Operation, Reply
from shared.blueprints._http import (
    RequestContext,
    endpoint,
    json_response,
    read_json,
    served_headers,
    sse_response,
)
from shared.models.relayed import EmbeddingListPublic
from shared.models.requests import CompletionCreate, EmbeddingCreate
from shared.models.validation import validate_body

bp = func.Blueprint()


@bp.route(route="v1/completions", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Legacy text completion: JSON, or server-sent events with `stream`",
        body=CompletionCreate,
        calls_model=True,
        returns={200: Reply("openai.types:Completion", also={SSE: EVENTS})},
        example={"model": "cirrus-local", "prompt": "Say hello"},
    )
)
async def completions(req: Request, ctx: RequestContext) -> Response:
    body = await read_json(req, ctx.container.settings.max_body_bytes)
    return await serve_completion(req, ctx, validate_body(CompletionCreate, body))


async def serve_completion(req: Request, ctx: RequestContext, request: CompletionCreate) -> Response:
    service = await ctx.container.completions()
    if request.stream:
        stream = await service.open_stream(request, ctx.call(req))
        return sse_response(stream.chunks, ctx.request_id, served_headers(stream.served_by))
    result = await service.create(request, ctx.call(req))
    return json_response(result.body, headers=served_headers(result.served_by))


@bp.route(route="v1/embeddings", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Embeddings",
        body=EmbeddingCreate,
        calls_model=True,
        returns={200: EmbeddingListPublic},
        example={"model": "cirrus-embed", "input": "hello"},
    )
)
async def embeddings(req: Request, ctx: RequestContext) -> Response:
    body = await read_json(req, ctx.container.settings.max_body_bytes)
    return await serve_embeddings(req, ctx, validate_body(EmbeddingCreate, body))


async def serve_embeddings(req: Request, ctx: RequestContext, request: EmbeddingCreate) -> Response:
    result = await (await ctx.container.embeddings()).create(request, ctx.call(req))
    return json_response(result.body, headers=served_headers(result.served_by))
