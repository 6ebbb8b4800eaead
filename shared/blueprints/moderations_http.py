"""POST /v1/moderations."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import Operation
from shared.blueprints._http import RequestContext, endpoint, json_response, read_json, served_headers
from shared.models.moderations import ModerationCreate
from shared.models.validation import validate_body

bp = func.Blueprint()


@bp.route(route="v1/moderations", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Moderation",
        body=ModerationCreate,
        calls_model=True,
        returns={200: "openai.types:ModerationCreateResponse"},
        example={"model": "cirrus-moderation", "input": "hello"},
    )
)
async def moderations(req: Request, ctx: RequestContext) -> Response:
    request = validate_body(ModerationCreate, await read_json(req, ctx.container.settings.max_body_bytes))
    answer = await (await ctx.container.moderations()).create(request, ctx.call(req))
    return json_response(answer.body, headers=served_headers(answer.served_by))
