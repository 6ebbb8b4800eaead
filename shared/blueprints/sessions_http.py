"""Sessions: /v1/sessions (create, list) and /v1/sessions/{session_id} (get, delete)."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import Operation, page_params
from shared.blueprints._http import RequestContext, endpoint, json_response, query_int, read_json
from shared.models.common import Deleted
from shared.models.sessions import SessionCreate, SessionListPublic, SessionPublic
from shared.models.validation import validate_body

bp = func.Blueprint()


@bp.route(route="v1/sessions", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Create a session",
        body=SessionCreate,
        body_required=False,
        returns={201: SessionPublic},
        example={"title": "support chat"},
    )
)
async def create_session(req: Request, ctx: RequestContext) -> Response:
    raw = await read_json(req, ctx.container.settings.max_body_bytes) if await _has_body(req) else {}
    session = await ctx.container.sessions.create(ctx.principal, validate_body(SessionCreate, raw))
    return json_response(session, status=201)


@bp.route(route="v1/sessions", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("The caller's sessions", params=page_params(), returns={200: SessionListPublic}))
async def list_sessions(req: Request, ctx: RequestContext) -> Response:
    limit = query_int(req, "limit", 20, low=1, high=100)
    page = await ctx.container.sessions.list_page(
        ctx.principal, limit=limit, after=req.query_params.get("after")
    )
    return json_response(page)


@bp.route(route="v1/sessions/{session_id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("A session and its messages", returns={200: SessionPublic}))
async def get_session(req: Request, ctx: RequestContext) -> Response:
    return json_response(await ctx.container.sessions.get(ctx.principal, req.path_params["session_id"]))


@bp.route(route="v1/sessions/{session_id}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("Delete a session", returns={200: Deleted}))
async def delete_session(req: Request, ctx: RequestContext) -> Response:
    session_id = req.path_params["session_id"]
    await ctx.container.sessions.delete(ctx.principal, session_id)
    return json_response({"id": session_id, "object": "session.deleted", "deleted": True})


async def _has_body(req: Request) -> bool:
    return req.headers.get("content-length", "0") != "0" or "chunked" in req.headers.get(
        "transfer-encoding", ""
    )
