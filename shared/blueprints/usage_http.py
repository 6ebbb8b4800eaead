"""GET /v1/usage?start=&end=&group_by=model|day|session|key|team: totals of requests, tokens and cost.

The window spans `MAX_WINDOW_DAYS` at most, so one request reads a bounded number of records (and
reads them a page at a time).

A key sees its own usage (and its team's); the master key sees everyone's and can group by key
and team.
"""

import math
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
MAX_WINDOW_DAYS = 93  # a quarter, whichever three months it is
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
    if end - start > MAX_WINDOW_DAYS * 86400:
        raise InvalidRequestError(
            f"The window from 'start' to 'end' may span at most {MAX_WINDOW_DAYS} days; "
            "ask for longer periods in parts.",
            param="start",
        )
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
    seconds: float | None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = _iso_seconds(raw)
    if seconds is None or not math.isfinite(seconds) or abs(seconds) > MAX_SECONDS:
        raise InvalidRequestError(
            f"'{name}' must be unix seconds or an ISO 8601 date, got {raw[:40]!r}.", param=name
        )
    return seconds


MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z, the last instant an ISO date can name


def _iso_seconds(raw: str) -> float | None:
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
