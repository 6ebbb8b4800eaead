"""Azure OpenAI's deployment routes, so the `AzureOpenAI` clients (and anything written for an
Azure OpenAI endpoint) can point at Cirrus unchanged:

    POST /openai/deployments/{deployment}/chat/completions?api-version=...
    POST /openai/deployments/{deployment}/completions
    POST /openai/deployments/{deployment}/embeddings

The deployment names the model (a `model` in the body, which Azure ignores, is replaced by it);
`api-version` is accepted and not needed. Callers authenticate as on every route: `api-key` (an
Azure OpenAI key is a Cirrus key here), or `Authorization: Bearer` with a Cirrus key or an Entra ID
token (what `azure_ad_token_provider` sends).
"""

from typing import Any

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import EVENTS, SSE, Operation, Param, Reply
from shared.blueprints._http import RequestContext, endpoint, read_json
from shared.blueprints.chat_http import serve_chat
from shared.blueprints.completions_http import serve_completion, serve_embeddings
from shared.models.relayed import EmbeddingListPublic
from shared.models.requests import ChatCompletionCreate, CompletionCreate, EmbeddingCreate
from shared.models.validation import validate_body

bp = func.Blueprint()

API_VERSION = Param("api-version", {"type": "string"}, "Azure OpenAI's API version: accepted, not needed.")


async def _body(req: Request, ctx: RequestContext) -> dict[str, Any]:
    body = await read_json(req, ctx.container.settings.max_body_bytes)
    if isinstance(body, dict):
        body["model"] = req.path_params["deployment"]
    return body


@bp.route(
    route="openai/deployments/{deployment}/chat/completions",
    methods=["POST"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
@endpoint(
    contract=Operation(
        "Chat completion on Azure OpenAI's deployment route: the deployment is the model",
        body=ChatCompletionCreate,
        calls_model=True,
        params=(API_VERSION,),
        returns={200: Reply("openai.types.chat:ChatCompletion", also={SSE: EVENTS})},
        example={"model": "cirrus-local", "messages": [{"role": "user", "content": "Say hello"}]},
        tags=("azure-openai",),
    )
)
async def azure_chat_completions(req: Request, ctx: RequestContext) -> Response:
    return await serve_chat(req, ctx, validate_body(ChatCompletionCreate, await _body(req, ctx)))


@bp.route(
    route="openai/deployments/{deployment}/completions", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS
)
@endpoint(
    contract=Operation(
        "Legacy text completion on Azure OpenAI's deployment route",
        body=CompletionCreate,
        calls_model=True,
        params=(API_VERSION,),
        returns={200: Reply("openai.types:Completion", also={SSE: EVENTS})},
        example={"model": "cirrus-local", "prompt": "Say hello"},
        tags=("azure-openai",),
    )
)
async def azure_completions(req: Request, ctx: RequestContext) -> Response:
    return await serve_completion(req, ctx, validate_body(CompletionCreate, await _body(req, ctx)))


@bp.route(
    route="openai/deployments/{deployment}/embeddings", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS
)
@endpoint(
    contract=Operation(
        "Embeddings on Azure OpenAI's deployment route",
        body=EmbeddingCreate,
        calls_model=True,
        params=(API_VERSION,),
        returns={200: EmbeddingListPublic},
        example={"model": "cirrus-embed", "input": "hello"},
        tags=("azure-openai",),
    )
)
async def azure_embeddings(req: Request, ctx: RequestContext) -> Response:
    return await serve_embeddings(req, ctx, validate_body(EmbeddingCreate, await _body(req, ctx)))
