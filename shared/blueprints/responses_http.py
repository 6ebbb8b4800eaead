"""The Responses API: /v1/responses (create: JSON, SSE, or a background run), /v1/responses/{id}
(get, or follow a background response's events with `?stream=true&starting_after=N`; delete),
/v1/responses/{id}/cancel and /v1/responses/{id}/input_items. Background runs happen on the jobs
queue (`jobs_queue.py`)."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import EVENTS, SSE, ListOf, Operation, Param, Reply, page_params
from shared.blueprints._http import (
    RequestContext,
    endpoint,
    event_stream_response,
    json_response,
    query_int,
    read_json,
    served_headers,
)
from shared.errors import InvalidRequestError
from shared.models.common import Deleted, JSONObject
from shared.models.responses import ResponseCreate
from shared.models.validation import validate_body

bp = func.Blueprint()


@bp.route(route="v1/responses", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Create a response: JSON, typed events with `stream`, or a background run",
        body=ResponseCreate,
        calls_model=True,
        errors=(409,),
        returns={200: Reply("openai.types.responses:Response", also={SSE: EVENTS})},
        example={"model": "cirrus-local", "input": "Say hello"},
    )
)
async def create_response(req: Request, ctx: RequestContext) -> Response:
    request = validate_body(ResponseCreate, await read_json(req, ctx.container.settings.max_body_bytes))
    created = await ctx.container.responses.create(request, ctx.call(req))
    headers = served_headers(created.served_by) if created.served_by else {}
    if created.events is not None:
        return event_stream_response(created.events, ctx.request_id, headers)
    return json_response(created.response or {}, headers=headers)


@bp.route(route="v1/responses/{response_id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "A stored response, or its events with `stream=true`",
        params=(
            Param("stream", {"type": "boolean", "default": False}, "Follow a background response's events."),
            Param.integer(
                "starting_after", 0, low=-1, high=10**9, description="The last event already seen."
            ),
        ),
        returns={200: Reply("openai.types.responses:Response", also={SSE: EVENTS})},
    )
)
async def get_response(req: Request, ctx: RequestContext) -> Response:
    response_id = req.path_params["response_id"]
    if _flag(req, "stream"):
        raw = req.query_params.get("starting_after")
        starting_after = query_int(req, "starting_after", 0, low=-1, high=10**9) if raw is not None else None
        events = await ctx.container.responses.events(ctx.principal, response_id, starting_after)
        return event_stream_response(events, ctx.request_id, {})
    return json_response(await ctx.container.responses.get(ctx.principal, response_id))


@bp.route(route="v1/responses/{response_id}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("Delete a stored response", returns={200: Deleted}))
async def delete_response(req: Request, ctx: RequestContext) -> Response:
    return json_response(await ctx.container.responses.delete(ctx.principal, req.path_params["response_id"]))


@bp.route(route="v1/responses/{response_id}/cancel", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Cancel a background response", errors=(409,), returns={200: "openai.types.responses:Response"}
    )
)
async def cancel_response(req: Request, ctx: RequestContext) -> Response:
    return json_response(await ctx.container.responses.cancel(ctx.principal, req.path_params["response_id"]))


@bp.route(
    route="v1/responses/{response_id}/input_items", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS
)
@endpoint(
    contract=Operation(
        "The input items a response was made from",
        params=(
            *page_params(),
            Param.text(
                "order", "Newest first (`desc`) or oldest first.", enum=["asc", "desc"], default="desc"
            ),
        ),
        returns={200: ListOf(JSONObject)},
    )
)
async def response_input_items(req: Request, ctx: RequestContext) -> Response:
    order = req.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequestError("'order' must be 'asc' or 'desc'.", param="order")
    page = await ctx.container.responses.input_items(
        ctx.principal,
        req.path_params["response_id"],
        limit=query_int(req, "limit", 20, low=1, high=100),
        after=req.query_params.get("after"),
        order=order,  # type: ignore[arg-type]  # checked above
    )
    return json_response(page)


def _flag(req: Request, name: str) -> bool:
    raw = req.query_params.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidRequestError(f"'{name}' must be true or false.", param=name)
    return raw in ("true", "1")
