"""The local stack's Entra ID issuer: the app is told to trust it, and tokens minted from the
stack verify against what it serves (Cirrus itself checks them once issue 19's wiring lands)."""

from __future__ import annotations

from shared.services.entra import EntraVerifier
from tools.oidc_issuer import LOCAL_AUDIENCE, LOCAL_TENANT_ID


async def test_the_stack_trusts_its_local_issuer_and_its_tokens_verify(stack):
    issuers = stack.env["CIRRUS_ENTRA_ISSUERS"]
    assert (
        issuers.endswith(f"/{LOCAL_TENANT_ID}/v2.0") and stack.env["CIRRUS_ENTRA_AUDIENCE"] == LOCAL_AUDIENCE
    )
    verifier = EntraVerifier([issuers], [stack.env["CIRRUS_ENTRA_AUDIENCE"]])
    try:
        user = await verifier.verify(stack.entra_token(roles=["Cirrus.User"]))
        app = await verifier.verify(stack.entra_token(app=True, roles=["Cirrus.Admin"]))
    finally:
        await verifier.aclose()
    assert user.roles == {"Cirrus.User"} and not user.is_app
    assert app.roles == {"Cirrus.Admin"} and app.is_app
