"""POST /v1/chat/completions: JSON, or server-sent events when `stream` is true."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import EVENTS, SSE, Operation, Param, Reply
from shared.blueprints._http import (
    RequestContext,
    endpoint,
    json_response,
    read_json,
    served_headers,
    sse_response,
)
from shared.models.requests import ChatCompletionCreate
from shared.models.validation import validate_body

bp = func.Blueprint()

SESSION_HEADER = "x-session-id"


@bp.route(route="v1/chat/completions", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Chat completion: JSON, or server-sent events with `stream`",
        body=ChatCompletionCreate,
        calls_model=True,
        params=(
            Param(
                "x-session-id",
                {"type": "string"},
                "A session to continue and record this turn in.",
                where="header",
            ),
        ),
        returns={200: Reply("openai.types.chat:ChatCompletion", also={SSE: EVENTS})},
        example={"model": "cirrus-local", "messages": [{"role": "user", "content": "Say hello"}]},
    )
)
async def chat_completions(req: Request, ctx: RequestContext) -> Response:
    body = await read_json(req, ctx.container.settings.max_body_bytes)
    return await serve_chat(req, ctx, validate_body(ChatCompletionCreate, body))


async def serve_chat(req: Request, ctx: RequestContext, request: ChatCompletionCreate) -> Response:
    """A validated chat request served: also what Azure OpenAI's deployment route calls."""
    call = ctx.call(req, session_id=req.headers.get(SESSION_HEADER))
    chat = await ctx.container.chat()
    if request.stream:
        stream = await chat.open_stream(request, call)
        headers = served_headers(stream.served_by, cache=stream.cache.value, session=stream.session_id)
        return sse_response(stream.chunks, ctx.request_id, headers)
    outcome = await chat.create(request, call)
    headers = served_headers(outcome.served_by, cache=outcome.cache.value, session=outcome.session_id)
    return json_response(outcome.completion, headers=headers)
