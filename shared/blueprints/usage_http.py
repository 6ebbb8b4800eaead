"""GET /v1/usage?start=&end=&group_by=model|day|session|key|team: totals of requests, tokens and cost.

A key sees its own usage (and its team's); the master key sees everyone's and can group by key
and team.
"""

import time
from datetime import UTC, datetime

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import Operation, Param
from shared.blueprints._http import RequestContext, endpoint, json_response
from shared.errors import InvalidRequestError, PermissionDeniedError
from shared.models.usage import UsageSummaryPublic

bp = func.Blueprint()

GROUPS = ("model", "day", "session", "key", "team")
ADMIN_GROUPS = ("key", "team")
DEFAULT_WINDOW_S = 30 * 24 * 3600
_TIME = {
    "anyOf": [
        {"type": "number"},
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "date"},
    ]
}
USAGE_PARAMS = (
    Param("start", _TIME, "Window start: unix seconds or ISO 8601 (default: 30 days before `end`)."),
    Param("end", _TIME, "Window end: unix seconds or ISO 8601 (default: now)."),
    Param.text("group_by", "How to group; `key` and `team` need the master key.", enum=list(GROUPS)),
)


@bp.route(route="v1/usage", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Requests, tokens and cost over a window, grouped",
        params=USAGE_PARAMS,
        returns={200: UsageSummaryPublic},
    )
)
async def usage(req: Request, ctx: RequestContext) -> Response:
    end = _time(req, "end", time.time())
    start = _time(req, "start", end - DEFAULT_WINDOW_S)
    if start >= end:
        raise InvalidRequestError("'start' must be before 'end'.", param="start")
    group_by = req.query_params.get("group_by") or None
    if group_by is not None and group_by not in GROUPS:
        raise InvalidRequestError(f"'group_by' must be one of {', '.join(GROUPS)}.", param="group_by")
    if group_by in ADMIN_GROUPS and not ctx.principal.is_master:
        raise PermissionDeniedError(f"Grouping usage by {group_by} needs the master key.", param="group_by")
    summary = await ctx.container.usage.summary(ctx.principal, start, end, group_by)  # type: ignore[arg-type]
    return json_response(summary.model_dump(mode="json"))  # every total, zeros included


def _time(req: Request, name: str, default: float) -> float:
    """Unix seconds, or an ISO 8601 date or date-time (UTC unless it says otherwise)."""
    raw = req.query_params.get(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(
            f"'{name}' must be unix seconds or an ISO 8601 date, got {raw[:40]!r}.", param=name
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
