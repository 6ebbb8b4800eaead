"""Entra ID callers: an access token checked (`shared/services/entra.py`), then turned into a
principal by its app roles and the policy that covers it.

- `Cirrus.Admin` gives an admin's powers, the master key's: the admin routes, every model, every
  record. Its usage and what it creates are its own (`entra_<object id>`).
- `Cirrus.User` may call models under the policy assigned to its object id, app id or a group
  (`shared/services/policies.py`). No policy, no access: a 403 that says so.
- A token with neither role gets a 403; a token that fails a check gets the same 401 as a wrong
  key, and the reason (expired, wrong audience, unknown signing key ...) goes to the log only.

Work queued by an Entra caller (batches, jobs) runs later, after its token has expired, so what
`principal_for` needs is remembered: a small item in `keys` (`entra_<object id>`, `object`
"entra.principal") with the identity's app id, groups and roles as of its latest token, written
when they change and at most every `REMEMBER_EVERY_S` otherwise. The policy is looked up afresh
each time, so a deleted policy stops queued work too.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from shared.clients.protocols import DocumentStore
from shared.errors import AuthenticationError, PermissionDeniedError, ServiceUnavailableError
from shared.services.auth import BAD_KEY, Principal
from shared.services.entra import (
    EntraIdentity,
    EntraVerifier,
    IssuerUnavailable,
    TokenRejected,
    looks_like_jwt,
)
from shared.services.policies import PolicyService

log = logging.getLogger("cirrus.identities")

CONTAINER = "keys"
OBJECT = "entra.principal"
PREFIX = "entra_"
ADMIN_ROLE = "Cirrus.Admin"
USER_ROLE = "Cirrus.User"
REMEMBER_EVERY_S = 600.0
REMEMBER_AT_MOST = 10_000  # identities this worker keeps track of before it starts over
NO_ROLE = (
    f"This token has no Cirrus app role: assign {USER_ROLE} (to call models) or {ADMIN_ROLE} "
    "(to administer) to the user, group or managed identity in Cirrus's app registration."
)
NO_POLICY = (
    "No Cirrus policy covers this identity: an admin assigns one to its object id, app id or a "
    "group with POST /v1/policies."
)


class EntraIdentities:
    def __init__(
        self,
        verifier: EntraVerifier,
        policies: PolicyService,
        documents: DocumentStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = verifier
        self._policies = policies
        self._documents = documents
        self._clock = clock
        self._remembered: dict[str, tuple[tuple[Any, ...], float]] = {}

    async def aclose(self) -> None:
        await self._verifier.aclose()

    def accepts(self, token: str) -> bool:
        return looks_like_jwt(token)

    def owns(self, principal_id: str) -> bool:
        return principal_id.startswith(PREFIX)

    async def authenticate(self, token: str) -> Principal:
        try:
            identity = await self._verifier.verify(token)
        except TokenRejected as exc:
            log.info("Entra token refused: %s", exc.reason)
            raise AuthenticationError(BAD_KEY) from None
        except IssuerUnavailable as exc:
            log.warning("Entra token not checked: the issuer's keys are unavailable (%s)", exc)
            raise ServiceUnavailableError(
                "Cirrus cannot check Entra ID tokens right now; retry shortly."
            ) from None
        principal = await self._principal(
            identity.object_id,
            identity.app_id,
            identity.groups,
            identity.roles,
            _name(identity),
        )
        await self._remember(identity, principal)
        return dataclasses.replace(principal, expires_at=identity.expires_at)

    async def principal_for(self, principal_id: str) -> Principal:
        """The principal of an Entra caller named by id, as its latest token and policy make it."""
        doc = await self._documents.read(CONTAINER, principal_id, principal_id)
        if doc is None or doc.get("object") != OBJECT:
            raise AuthenticationError(f"The identity {principal_id} is not known to Cirrus.")
        try:
            return await self._principal(
                str(doc["object_id"]),
                doc.get("app_id"),
                frozenset(doc.get("groups") or ()),
                frozenset(doc.get("roles") or ()),
                doc.get("name"),
            )
        except PermissionDeniedError as exc:  # its role or policy is gone: as a revoked key
            raise AuthenticationError(exc.message) from None

    async def _principal(
        self,
        object_id: str,
        app_id: str | None,
        groups: frozenset[str],
        roles: frozenset[str],
        name: str | None,
    ) -> Principal:
        principal_id = PREFIX + object_id.lower()
        policy = await self._policies.covering(object_id, app_id, groups)
        if ADMIN_ROLE in roles:
            return Principal(
                key_id=principal_id,
                is_master=True,
                team_id=policy.team_id if policy else None,
                kind="entra",
                name=name,
                policy_id=policy.id if policy else None,
            )
        if USER_ROLE not in roles:
            raise PermissionDeniedError(NO_ROLE)
        if policy is None:
            raise PermissionDeniedError(NO_POLICY)
        return self._policies.principal(policy, principal_id, name)

    async def _remember(self, identity: EntraIdentity, principal: Principal) -> None:
        """Keep what `principal_for` needs, when it changed or has not been written for a while."""
        facts = (
            identity.app_id,
            tuple(sorted(identity.groups)),
            tuple(sorted(identity.roles)),
            principal.name,
        )
        now = self._clock()
        seen = self._remembered.get(principal.key_id)
        if seen is not None and seen[0] == facts and now - seen[1] < REMEMBER_EVERY_S:
            return
        if len(self._remembered) >= REMEMBER_AT_MOST:
            self._remembered.clear()
        try:
            await self._documents.upsert(
                CONTAINER,
                {
                    "id": principal.key_id,
                    "pk": principal.key_id,
                    "object": OBJECT,
                    "object_id": identity.object_id.lower(),
                    "tenant_id": identity.tenant_id,
                    "issuer": identity.issuer,
                    "app_id": identity.app_id,
                    "groups": list(facts[1]),
                    "roles": list(facts[2]),
                    "name": principal.name,
                    "is_app": identity.is_app,
                    "last_seen": now,
                },
            )
        except Exception as exc:  # only queued work needs it, and the next request writes it again
            log.warning("remembering %s failed (%s)", principal.key_id, type(exc).__name__)
            return
        self._remembered[principal.key_id] = (facts, now)


def _name(identity: EntraIdentity) -> str | None:
    """A user's sign-in name, or an application's client id: what the audit log shows."""
    return identity.name or (f"app {identity.app_id}" if identity.app_id else None)
