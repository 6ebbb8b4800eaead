"""Jobs: /v1/jobs (submit → 202, list), /v1/jobs/{job_id}, /v1/jobs/{job_id}/cancel and
/v1/jobs/{job_id}/events (server-sent events, replayable, resumable with Last-Event-ID), which a
browser's EventSource follows with a `?token=` from /v1/jobs/{job_id}/events/token. The runs
themselves happen on the jobs queue (`jobs_queue.py`)."""

import json
from collections.abc import AsyncIterator
from typing import Any

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response, StreamingResponse

from shared import sse
from shared.blueprints._contract import EVENTS, SSE, ListOf, Operation, Param, Reply, page_params
from shared.blueprints._http import RequestContext, ascii_int, endpoint, json_response, query_int, read_json
from shared.errors import InvalidRequestError
from shared.models.jobs import JobCreate, JobEventsTokenPublic, JobPublic
from shared.models.validation import validate_body
from shared.services.stream_tokens import JOB_EVENTS

bp = func.Blueprint()


@bp.route(route="v1/jobs", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Submit an agent run or an analysis job",
        body=JobCreate,
        returns={202: JobPublic},
        example={"type": "agent", "model": "cirrus-local", "input": "What is 2 + 2?"},
    )
)
async def create_job(req: Request, ctx: RequestContext) -> Response:
    body = validate_body(JobCreate, await read_json(req, ctx.container.settings.max_body_bytes))
    return json_response(await ctx.container.jobs.create(ctx.principal, body), status=202)


@bp.route(route="v1/jobs", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("The caller's jobs", params=page_params(), returns={200: ListOf(JobPublic)}))
async def list_jobs(req: Request, ctx: RequestContext) -> Response:
    limit = query_int(req, "limit", 20, low=1, high=100)
    return json_response(
        await ctx.container.jobs.list_page(ctx.principal, limit=limit, after=req.query_params.get("after"))
    )


@bp.route(route="v1/jobs/{job_id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("A job, its steps and result", returns={200: JobPublic}))
async def get_job(req: Request, ctx: RequestContext) -> Response:
    return json_response(await ctx.container.jobs.get(ctx.principal, req.path_params["job_id"]))


@bp.route(route="v1/jobs/{job_id}/cancel", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("Cancel a job", errors=(409,), returns={200: JobPublic}))
async def cancel_job(req: Request, ctx: RequestContext) -> Response:
    return json_response(await ctx.container.jobs.cancel(ctx.principal, req.path_params["job_id"]))


@bp.route(route="v1/jobs/{job_id}/events", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "A job's events, replayed then live (server-sent events)",
        params=(
            Param(
                "Last-Event-ID",
                {"type": "string", "pattern": "^[0-9]+$"},
                "Resume after this event.",
                where="header",
            ),
            Param.text("after", "Resume after this event number.", pattern="^[0-9]+$"),
            Param.text(
                "token",
                "Instead of a key header (EventSource sends none): a token from "
                "`POST /v1/jobs/{job_id}/events/token`. Never an API key.",
            ),
        ),
        returns={200: Reply(EVENTS, media=SSE)},
    ),
    stream_token=JOB_EVENTS,
)
async def job_events(req: Request, ctx: RequestContext) -> Response:
    raw = req.headers.get("last-event-id") or req.query_params.get("after") or "0"
    after = ascii_int(raw)
    if after is None or after < 0:
        raise InvalidRequestError("Last-Event-ID must be an event number.", param="Last-Event-ID")
    events = await ctx.container.jobs.events(ctx.principal, req.path_params["job_id"], after)
    return StreamingResponse(_sse(events), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)


@bp.route(route="v1/jobs/{job_id}/events/token", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "A short-lived token for this job's event stream, for a browser's EventSource",
        returns={200: JobEventsTokenPublic},
    )
)
async def job_events_token(req: Request, ctx: RequestContext) -> Response:
    job = await ctx.container.jobs.get(ctx.principal, req.path_params["job_id"])  # 404 unless theirs
    minted = ctx.container.stream_tokens.mint(ctx.principal, JOB_EVENTS, job["id"])
    body = JobEventsTokenPublic(job_id=job["id"], token=minted.token, expires_at=minted.expires_at)
    return json_response(body.model_dump(), headers={"cache-control": "no-store"})


async def _sse(events: AsyncIterator[tuple[int, str, Any]]) -> AsyncIterator[bytes]:
    async for seq, kind, data in events:
        yield f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()
