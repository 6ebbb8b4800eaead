"""GET /openapi.json: Cirrus's OpenAPI 3.1 document, generated from its routes and models.

No key is needed: the document says what Cirrus accepts, nothing about who uses it, and API
portals and client generators fetch it before they hold a key.
"""

import functools
import importlib
from typing import Any

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import Operation
from shared.blueprints._http import RequestContext, endpoint, json_response
from shared.blueprints._openapi import build_document

bp = func.Blueprint()
OPENAPI_DOCUMENT = {"type": "object", "description": "An OpenAPI 3.1 document."}


@bp.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    authenticated=False, contract=Operation("This document", returns={200: OPENAPI_DOCUMENT}, tags=("meta",))
)
async def openapi_document(req: Request, ctx: RequestContext) -> Response:
    return json_response(document())


@functools.cache  # the routes and models do not change while the worker runs
def document() -> dict[str, Any]:
    return build_document(app_functions(importlib.import_module("function_app").app))


def app_functions(app: func.FunctionApp) -> list[func.Function]:
    """The app's functions. Not `app.get_functions()`: the worker has called it to index the app,
    and a second call fails its check for duplicate names. Building a function again only
    validates it."""
    return [builder.build() for builder in app._function_builders]
