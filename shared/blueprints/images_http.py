"""POST /v1/images/generations."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import Operation
from shared.blueprints._http import RequestContext, endpoint, json_response, read_json, served_headers
from shared.models.images import ImageCreate
from shared.models.validation import validate_body

bp = func.Blueprint()


@bp.route(route="v1/images/generations", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Image generation",
        body=ImageCreate,
        calls_model=True,
        returns={200: "openai.types:ImagesResponse"},
        example={"model": "cirrus-image", "prompt": "a cloud"},
    )
)
async def image_generations(req: Request, ctx: RequestContext) -> Response:
    request = validate_body(ImageCreate, await read_json(req, ctx.container.settings.max_body_bytes))
    answer = await (await ctx.container.images()).create(request, ctx.call(req))
    return json_response(answer.body, headers=served_headers(answer.served_by))
