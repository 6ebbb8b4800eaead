"""GET /v1/models and /v1/models/{model}: the public model names, in OpenAI's format."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._http import RequestContext, endpoint, json_response

bp = func.Blueprint()


@bp.route(route="v1/models", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint()
async def list_models(req: Request, ctx: RequestContext) -> Response:
    models = ctx.container.catalog.list()
    return json_response({"object": "list", "data": [m.model_dump(mode="json") for m in models]})


# A catch-all segment: public model names may contain slashes ("openai/gpt-4o").
@bp.route(route="v1/models/{*model}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint()
async def get_model(req: Request, ctx: RequestContext) -> Response:
    return json_response(ctx.container.catalog.get(req.path_params["model"]).model_dump(mode="json"))
