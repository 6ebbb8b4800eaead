"""Anthropic's Messages API for every model in the model file, errors in Anthropic's envelope.

POST /v1/messages               a Message, or with `stream` Anthropic's server-sent events
POST /v1/messages/count_tokens  `{"input_tokens": N}`

Anthropic SDKs authenticate with `x-api-key`; `Authorization: Bearer` works too. Their
`anthropic-version` and `anthropic-beta` headers are accepted, and neither is required.
"""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import EVENTS, SSE, Operation, Reply
from shared.blueprints._http import (
    RequestContext,
    anthropic_stream_response,
    endpoint,
    json_response,
    read_json,
    served_headers,
)
from shared.errors import anthropic_error_body
from shared.models.messages import CountTokensCreate, MessageCreate, MessagePublic, TokenCount
from shared.models.validation import validate_body

bp = func.Blueprint()
API = "The Anthropic Messages API"  # what expected JSON, in the error for a body that is not


@bp.route(route="v1/messages", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    envelope=anthropic_error_body,
    contract=Operation(
        "Anthropic Messages: a Message, or Anthropic's events with `stream`",
        body=MessageCreate,
        calls_model=True,
        returns={200: Reply(MessagePublic, also={SSE: EVENTS})},
        example={
            "model": "cirrus-local",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "Say hello"}],
        },
    ),
)
async def create_message(req: Request, ctx: RequestContext) -> Response:
    request = validate_body(
        MessageCreate, await read_json(req, ctx.container.settings.max_body_bytes, api=API)
    )
    messages = await ctx.container.messages()
    beta = req.headers.get("anthropic-beta")  # passed on to Anthropic deployments
    if request.stream:
        stream = await messages.open_stream(request, ctx.call(req), beta=beta)
        headers = served_headers(stream.served_by, cache=stream.cache.value)
        return anthropic_stream_response(stream.events, ctx.request_id, headers)
    outcome = await messages.create(request, ctx.call(req), beta=beta)
    headers = served_headers(outcome.served_by, cache=outcome.cache.value)
    return json_response(outcome.message, headers=headers)


@bp.route(route="v1/messages/count_tokens", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    envelope=anthropic_error_body,
    contract=Operation(
        "Count a Messages request's input tokens",
        body=CountTokensCreate,
        errors=(404,),
        returns={200: TokenCount},
        example={"model": "cirrus-local", "messages": [{"role": "user", "content": "Say hello"}]},
    ),
)
async def count_message_tokens(req: Request, ctx: RequestContext) -> Response:
    request = validate_body(
        CountTokensCreate, await read_json(req, ctx.container.settings.max_body_bytes, api=API)
    )
    messages = await ctx.container.messages()
    return json_response(messages.count_tokens(request, ctx.call(req)))
