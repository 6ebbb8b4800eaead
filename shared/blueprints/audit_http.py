"""The audit log, for admins only: GET /v1/audit, newest first, filtered by action, actor, target
and time. "Who revoked this key": `GET /v1/audit?target_id=key_...&action=key.revoke`."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import Operation, Param, page_params
from shared.blueprints._http import RequestContext, endpoint, json_response, query_int
from shared.errors import InvalidRequestError
from shared.models.audit import AuditListPublic
from shared.services.audit import AuditQuery

bp = func.Blueprint()

MAX_FILTER_CHARS = 256


@bp.route(route="v1/audit", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "The audit log: every admin action, newest first (admins only)",
        params=(
            *page_params(),
            Param(
                "action", {"type": "string"}, "An action (`key.revoke`) or a prefix ending in `.` (`key.`)."
            ),
            Param("actor_id", {"type": "string"}, "Who acted: a key id, `master` or `entra_<object id>`."),
            Param("target_id", {"type": "string"}, "What it was about: a key, policy or console session id."),
            Param("since", {"type": "integer"}, "Unix seconds: events at or after this."),
            Param("until", {"type": "integer"}, "Unix seconds: events before this."),
        ),
        returns={200: AuditListPublic},
    )
)
async def list_audit(req: Request, ctx: RequestContext) -> Response:
    ctx.principal.require_admin()
    query = AuditQuery(
        limit=query_int(req, "limit", 20, low=1, high=100),
        after=_text(req, "after"),
        action=_text(req, "action"),
        actor_id=_text(req, "actor_id"),
        target_id=_text(req, "target_id"),
        since=_time(req, "since"),
        until=_time(req, "until"),
    )
    return json_response(await ctx.container.audit.page(query))


def _text(req: Request, name: str) -> str | None:
    value = req.query_params.get(name)
    if value is not None and (not value or len(value) > MAX_FILTER_CHARS):
        raise InvalidRequestError(f"'{name}' must be 1 to {MAX_FILTER_CHARS} characters.", param=name)
    return value


def _time(req: Request, name: str) -> float | None:
    if req.query_params.get(name) is None:
        return None
    return float(query_int(req, name, 0, low=0, high=253_402_300_799))
