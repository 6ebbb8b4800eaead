"""Any other /v1 path: OpenAI's 404 envelope instead of the host's empty 404.

The catch-all route has the lowest precedence, under the Functions host as in the local host.
"""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._http import error_response
from shared.errors import NotFoundError

bp = func.Blueprint()


@bp.route(
    route="v1/{*path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
async def unknown_route(req: Request) -> Response:
    return error_response(
        NotFoundError(
            f"Unknown request URL: {req.method} {req.url.path}. Please check the URL for typos.",
            code="unknown_url",
        )
    )
