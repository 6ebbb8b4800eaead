"""GET /health (liveness: the worker answers) and GET /health/ready (dependencies answer)."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import JSONResponse, Request, Response

from shared.blueprints._contract import Operation, Reply, documented
from shared.blueprints._http import RequestContext, endpoint, json_response
from shared.models.health import LivenessPublic, ReadinessPublic

bp = func.Blueprint()


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@documented(Operation("Liveness: the worker answers", authenticated=False, returns={200: LivenessPublic}))
async def health(req: Request) -> Response:
    # Deliberately touches nothing: a liveness probe must not fail because a dependency does.
    return JSONResponse({"status": "ok"})


@bp.route(route="health/ready", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    authenticated=False,
    contract=Operation(
        "Readiness: Cirrus's dependencies answer",
        returns={
            200: ReadinessPublic,
            503: Reply(ReadinessPublic, description="A dependency does not answer."),
        },
    ),
)
async def health_ready(req: Request, ctx: RequestContext) -> Response:
    report = await ctx.container.health().readiness()
    return json_response(report, status=200 if report.status == "ready" else 503)
