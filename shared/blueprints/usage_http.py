"""GET /v1/usage?start=&end=&group_by=model|day|session|key|team: totals of requests, tokens and cost.
GET /v1/usage/series: the same per day (and model or key), for charts.
GET /v1/usage/records: the records themselves, newest first, filtered, as JSON pages or CSV.

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

from shared.blueprints._contract import TEXT, Operation, Param, Reply, page_params
from shared.blueprints._http import RequestContext, endpoint, json_response, query_int
from shared.errors import InvalidRequestError, PermissionDeniedError
from shared.models.usage import (
    UsageRecordFilter,
    UsageRecordListPublic,
    UsageSeriesPublic,
    UsageSummaryPublic,
)
from shared.services.usage_csv import usage_csv

bp = func.Blueprint()

GROUPS = ("model", "day", "session", "key", "team")
SERIES_GROUPS = ("model", "key")
BUCKETS = ("day",)
FILTERS = ("key_id", "model", "status", "session_id")
MAX_PAGE = 100
MAX_CSV_RECORDS = 10000
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
    start, end = _window(req)
    group_by = req.query_params.get("group_by") or None
    if group_by is not None and group_by not in GROUPS:
        raise InvalidRequestError(f"'group_by' must be one of {', '.join(GROUPS)}.", param="group_by")
    if group_by in ADMIN_GROUPS and not ctx.principal.is_master:
        raise PermissionDeniedError(f"Grouping usage by {group_by} needs the master key.", param="group_by")
    summary = await ctx.container.usage.summary(ctx.principal, start, end, group_by)  # type: ignore[arg-type]
    return json_response(summary.model_dump(mode="json"))  # every total, zeros included


@bp.route(route="v1/usage/series", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Requests, tokens, cost, errors and fallbacks per day, per model or key: for charts",
        params=(
            *USAGE_PARAMS[:2],
            Param.text("bucket", "The time bucket.", enum=list(BUCKETS)),
            Param.text(
                "group_by", "Split each day by model, or by key (master key only).", enum=list(SERIES_GROUPS)
            ),
        ),
        returns={200: UsageSeriesPublic},
    )
)
async def usage_series(req: Request, ctx: RequestContext) -> Response:
    start, end = _window(req)
    bucket = req.query_params.get("bucket") or "day"
    if bucket not in BUCKETS:
        raise InvalidRequestError(f"'bucket' must be one of {', '.join(BUCKETS)}.", param="bucket")
    group_by = req.query_params.get("group_by") or None
    if group_by is not None and group_by not in SERIES_GROUPS:
        raise InvalidRequestError(f"'group_by' must be one of {', '.join(SERIES_GROUPS)}.", param="group_by")
    if group_by == "key" and not ctx.principal.is_master:
        raise PermissionDeniedError("Grouping usage by key needs the master key.", param="group_by")
    series = await ctx.container.usage.series(ctx.principal, start, end, group_by)
    return json_response(series.model_dump(mode="json"))


@bp.route(route="v1/usage/records", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Usage records, newest first, filtered; as JSON pages or a CSV file",
        params=(
            *USAGE_PARAMS[:2],
            *(Param.text(name, f"Only records with this `{name}`.", maxLength=256) for name in FILTERS),
            *page_params(default=50, high=MAX_CSV_RECORDS),
            Param.text("format", "`csv`: a CSV file, a header row first.", enum=["json", "csv"]),
        ),
        returns={200: Reply(UsageRecordListPublic, also={"text/csv": TEXT})},
    )
)
async def usage_records(req: Request, ctx: RequestContext) -> Response:
    start, end = _window(req)
    fmt = req.query_params.get("format") or "json"
    if fmt not in ("json", "csv"):
        raise InvalidRequestError("'format' must be json or csv.", param="format")
    high = MAX_CSV_RECORDS if fmt == "csv" else MAX_PAGE
    limit = query_int(req, "limit", 1000 if fmt == "csv" else 50, low=1, high=high)
    where = UsageRecordFilter(**{name: _filter(req, name) for name in FILTERS})
    after = _filter(req, "after")
    page = await ctx.container.usage.records_page(ctx.principal, start, end, where, limit=limit, after=after)
    if fmt == "csv":
        return Response(
            usage_csv(page.data),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="cirrus-usage.csv"'},
        )
    return json_response(page.model_dump(mode="json"))


def _filter(req: Request, name: str) -> str | None:
    value = req.query_params.get(name) or None
    if value is not None and len(value) > 256:
        raise InvalidRequestError(f"'{name}' is longer than 256 characters.", param=name)
    return value


def _window(req: Request) -> tuple[float, float]:
    """[start, end) from the query, `MAX_WINDOW_DAYS` long at most (30 days by default)."""
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
    return start, end


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
