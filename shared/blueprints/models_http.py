"""GET /v1/models and /v1/models/{model}: the public model names the key may use, in OpenAI's format."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import ListOf, Operation
from shared.blueprints._http import RequestContext, endpoint, json_response
from shared.errors import ModelNotFoundError

bp = func.Blueprint()


@bp.route(route="v1/models", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("The models this key may use", returns={200: ListOf("openai.types:Model")}))
async def list_models(req: Request, ctx: RequestContext) -> Response:
    models = [m for m in ctx.container.catalog.list_models() if ctx.principal.may_use(m["id"])]
    return json_response({"object": "list", "data": models})


# A catch-all segment: public model names may contain slashes ("openai/gpt-4o").
@bp.route(route="v1/models/{*model}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("One model", returns={200: "openai.types:Model"}))
async def get_model(req: Request, ctx: RequestContext) -> Response:
    name = req.path_params["model"]
    if not ctx.principal.may_use(name):
        raise ModelNotFoundError(name)  # as OpenAI answers: "does not exist or you do not have access"
    return json_response(ctx.container.catalog.get(name))
