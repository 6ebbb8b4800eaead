"""Any other /v1 path: OpenAI's 404 envelope instead of the host's empty 404, or Anthropic's
under `/v1/messages/` (Message Batches and the like), where Anthropic's SDKs expect theirs.

The catch-all route has the lowest precedence, under the Functions host as in the local host.
"""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._http import error_response
from shared.errors import NotFoundError, anthropic_error_body, error_body

bp = func.Blueprint()


@bp.route(
    route="v1/{*path}",
    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
async def unknown_route(req: Request) -> Response:
    anthropic = req.url.path.rstrip("/") == "/v1/messages" or req.url.path.startswith("/v1/messages/")
    return error_response(
        NotFoundError(
            f"Unknown request URL: {req.method} {req.url.path}. Please check the URL for typos.",
            code="unknown_url",
        ),
        anthropic_error_body if anthropic else error_body,
    )
