"""Policies for Entra ID callers, for admins only: /v1/policies (create, list) and
/v1/policies/{policy_id} (get, update, delete). Every change is audited."""

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from shared.blueprints._contract import Operation, Param, page_params
from shared.blueprints._http import RequestContext, endpoint, json_response, query_int, read_json
from shared.blueprints.keys_http import known_models
from shared.models.policies import PolicyCreate, PolicyDeleted, PolicyListPublic, PolicyPublic, PolicyUpdate
from shared.models.validation import validate_body

bp = func.Blueprint()


@bp.route(route="v1/policies", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Create a policy for Entra ID callers, assigned to object ids, app ids or groups (admins only)",
        body=PolicyCreate,
        returns={201: PolicyPublic},
        errors=(409,),
        example={
            "name": "data-science",
            "group_ids": ["5b7a2f3e-0c1d-4e5f-8a9b-0c1d2e3f4a5b"],
            "models": ["cirrus-local"],
            "max_budget": 500,
            "budget_duration": "monthly",
            "rpm_limit": 600,
        },
    )
)
async def create_policy(req: Request, ctx: RequestContext) -> Response:
    ctx.principal.require_admin()
    body = validate_body(PolicyCreate, await read_json(req, ctx.container.settings.max_body_bytes))
    known_models(ctx, body.models)
    return json_response(await ctx.container.policies.create(body, ctx.actor(req)), status=201)


@bp.route(route="v1/policies", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Policies (admins only)",
        params=(
            *page_params(),
            Param("include_deleted", {"type": "boolean", "default": False}, "List deleted policies too."),
        ),
        returns={200: PolicyListPublic},
    )
)
async def list_policies(req: Request, ctx: RequestContext) -> Response:
    ctx.principal.require_admin()
    page = await ctx.container.policies.list_page(
        limit=query_int(req, "limit", 20, low=1, high=100),
        after=req.query_params.get("after"),
        include_deleted=req.query_params.get("include_deleted", "").lower() in ("1", "true"),
    )
    return json_response(page)


@bp.route(route="v1/policies/{policy_id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(contract=Operation("A policy (admins only)", returns={200: PolicyPublic}))
async def get_policy(req: Request, ctx: RequestContext) -> Response:
    ctx.principal.require_admin()
    return json_response(await ctx.container.policies.get(req.path_params["policy_id"]))


@bp.route(route="v1/policies/{policy_id}", methods=["PATCH"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Change a policy's limits or assignments (admins only); `null` clears a limit",
        body=PolicyUpdate,
        returns={200: PolicyPublic},
        errors=(409,),
        example={"rpm_limit": 60},
    )
)
async def update_policy(req: Request, ctx: RequestContext) -> Response:
    ctx.principal.require_admin()
    body = validate_body(PolicyUpdate, await read_json(req, ctx.container.settings.max_body_bytes))
    known_models(ctx, body.models)
    policy = await ctx.container.policies.update(req.path_params["policy_id"], body, ctx.actor(req))
    return json_response(policy)


@bp.route(route="v1/policies/{policy_id}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Delete a policy (admins only): everyone it covered loses access", returns={200: PolicyDeleted}
    )
)
async def delete_policy(req: Request, ctx: RequestContext) -> Response:
    ctx.principal.require_admin()
    policy = await ctx.container.policies.delete(req.path_params["policy_id"], ctx.actor(req))
    return json_response(PolicyDeleted(id=policy.id, object="policy.deleted", deleted=True))
