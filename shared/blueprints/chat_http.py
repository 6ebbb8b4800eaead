"""POST /v1/chat/completions: JSON, or server-sent events when `stream` is true."""

from collections.abc import AsyncIterator

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response, StreamingResponse

from shared import sse
from shared.blueprints._http import RequestContext, endpoint, json_response, read_json
from shared.errors import as_cirrus_error, error_body
from shared.models.chat import ChatCompletionCreate
from shared.models.validation import validate_body
from shared.services.chat import OpenStream

bp = func.Blueprint()


@bp.route(route="v1/chat/completions", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint()
async def chat_completions(req: Request, ctx: RequestContext) -> Response:
    request = validate_body(ChatCompletionCreate, await read_json(req, ctx.container.settings.max_body_bytes))
    chat = await ctx.container.chat()
    if request.stream:
        stream = await chat.open_stream(request)
        return StreamingResponse(_sse(stream, ctx.request_id), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
    result = await chat.create(request)
    return json_response(result.completion)


async def _sse(stream: OpenStream, request_id: str) -> AsyncIterator[bytes]:
    """Chunks as events, then `[DONE]`; a failure mid-stream becomes one error event and no `[DONE]`."""
    try:
        async for chunk in stream.chunks:
            yield sse.encode(chunk.model_dump(mode="json", exclude_unset=True))
    except Exception as exc:
        yield sse.encode(error_body(as_cirrus_error(exc, request_id)))
        return
    yield sse.DONE
