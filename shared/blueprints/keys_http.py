"""Virtual keys, for admins only (the master key or an Entra `Cirrus.Admin`): /v1/keys (create,
list), /v1/keys/{key_id} (get, update, revoke) and /v1/keys/{key_id}/rotate. Every change is
audited (`shared/services/audit.py`)."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import Operation, Param, page_params
from shared.blueprints._http import RequestContext, endpoint, json_response, query_int, read_json
from shared.errors import InvalidRequestError
from shared.models.keys import KeyCreate, KeyDeleted, KeyListPublic, KeyPublic, KeyUpdate
from shared.models.validation import validate_body

bp = func.Blueprint()

# Secrets in these responses must not be kept by a proxy or the browser.
NO_STORE = {"cache-control": "no-store"}


@bp.route(route="v1/keys", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Create a virtual key (admins only); the secret is in `key`, once",
        body=KeyCreate,
        returns={201: KeyPublic},
        example={
            "key_alias": "team-a",
            "models": ["cirrus-local"],
            "max_budget": 10,
            "budget_duration": "monthly",
        },
    )
)
async def create_key(req: Request, ctx: RequestContext) -> Response:
    ctx.principal.require_admin()
    body = validate_body(KeyCreate, await read_json(req, ctx.container.settings.max_body_bytes))
    known_models(ctx, body.models)
    return json_response(await ctx.container.keys.create(body, ctx.actor(req)), status=201, headers=NO_STORE)


@bp.route(route="v1/keys", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Virtual keys (admins only)",
        params=(
            *page_params(),
            Param("include_revoked", {"type": "boolean", "default": False}, "List revoked keys too."),
        ),
        returns={200: KeyListPublic},
    )
)
async def list_keys(req: Request, ctx: RequestContext) -> Response:
    ctx.principal.require_admin()
    page = await ctx.container.keys.list_page(
        limit=query_int(req, "limit", 20, low=1, high=100),
        after=req.query_params.get("after"),
        include_revoked=req.query_params.get("include_revoked", "").lower() in ("1", "true"),
    )
    return json_response(page)


@bp.route(route="v1/keys/{key_id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("A virtual key (admins only)", returns={200: KeyPublic}))
async def get_key(req: Request, ctx: RequestContext) -> Response:
    ctx.principal.require_admin()
    return json_response(await ctx.container.keys.get(req.path_params["key_id"]))


@bp.route(route="v1/keys/{key_id}", methods=["PATCH"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Change a key's limits (admins only); `null` clears one",
        body=KeyUpdate,
        returns={200: KeyPublic},
        example={"rpm_limit": 60},
    )
)
async def update_key(req: Request, ctx: RequestContext) -> Response:
    ctx.principal.require_admin()
    body = validate_body(KeyUpdate, await read_json(req, ctx.container.settings.max_body_bytes))
    known_models(ctx, body.models)
    return json_response(await ctx.container.keys.update(req.path_params["key_id"], body, ctx.actor(req)))


@bp.route(route="v1/keys/{key_id}/rotate", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "A new secret for a key (admins only); the old one stops working",
        errors=(409,),
        returns={200: KeyPublic},
    )
)
async def rotate_key(req: Request, ctx: RequestContext) -> Response:
    ctx.principal.require_admin()
    return json_response(
        await ctx.container.keys.rotate(req.path_params["key_id"], ctx.actor(req)), headers=NO_STORE
    )


@bp.route(route="v1/keys/{key_id}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("Revoke a key (admins only)", returns={200: KeyDeleted}))
async def revoke_key(req: Request, ctx: RequestContext) -> Response:
    ctx.principal.require_admin()
    key = await ctx.container.keys.revoke(req.path_params["key_id"], ctx.actor(req))
    return json_response(
        {"id": key.id, "object": "key.deleted", "deleted": True, "revoked_at": key.revoked_at}
    )


def known_models(ctx: RequestContext, models: list[str] | None) -> None:
    """A typo in `models` would lock a key out of the model meant: refuse names not served."""
    served = {m["id"] for m in ctx.container.catalog.list_models()}
    unknown = [m for m in models or [] if m not in served]
    if unknown:
        raise InvalidRequestError(
            f"Unknown model(s) {', '.join(map(repr, unknown))}; served: {', '.join(sorted(served))}.",
            param="models",
        )
