"""Batches, as OpenAI serves them: /v1/batches (create, list), /v1/batches/{batch_id} and
/v1/batches/{batch_id}/cancel. The work itself runs on the batch queue (`batch_queue.py`)."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import ListOf, Operation, page_params
from shared.blueprints._http import RequestContext, endpoint, json_response, query_int, read_json
from shared.models.batches import BatchCreate
from shared.models.validation import validate_body

bp = func.Blueprint()


@bp.route(route="v1/batches", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Create a batch from an uploaded `batch` file",
        body=BatchCreate,
        errors=(404,),  # no such input file
        returns={200: "openai.types:Batch"},
        example={
            "input_file_id": "file-abc123",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
)
async def create_batch(req: Request, ctx: RequestContext) -> Response:
    body = validate_body(BatchCreate, await read_json(req, ctx.container.settings.max_body_bytes))
    return json_response(await ctx.container.batches.create(ctx.principal, body))


@bp.route(route="v1/batches", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "The caller's batches", params=page_params(), returns={200: ListOf("openai.types:Batch")}
    )
)
async def list_batches(req: Request, ctx: RequestContext) -> Response:
    limit = query_int(req, "limit", 20, low=1, high=100)
    page = await ctx.container.batches.list_page(
        ctx.principal, limit=limit, after=req.query_params.get("after")
    )
    return json_response(page)


@bp.route(route="v1/batches/{batch_id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("A batch", returns={200: "openai.types:Batch"}))
async def get_batch(req: Request, ctx: RequestContext) -> Response:
    return json_response(await ctx.container.batches.get(ctx.principal, req.path_params["batch_id"]))


@bp.route(route="v1/batches/{batch_id}/cancel", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("Cancel a batch", errors=(409,), returns={200: "openai.types:Batch"}))
async def cancel_batch(req: Request, ctx: RequestContext) -> Response:
    return json_response(await ctx.container.batches.cancel(ctx.principal, req.path_params["batch_id"]))
