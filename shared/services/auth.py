"""Who is calling: the bearer key, checked against the master key or a stored virtual key, or an
Entra ID access token (`shared/services/identities.py`).

A virtual key's secret is `sk-cirrus-<16 hex of its id><random>`: the id part finds the stored
key with one point read, and the whole secret is then checked against the stored HMAC in
constant time. Keys are read on every request, not cached, so a revocation or rotation holds on
every instance at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict

from pydantic import SecretStr

from shared.errors import AuthenticationError, PermissionDeniedError

MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
BAD_KEY = "Incorrect API key provided."
SECRET_PREFIX = "sk-cirrus-"  # noqa: S105 - a format, not a secret
SECRET_PATTERN = re.compile(r"^sk-cirrus-([0-9a-f]{16})[A-Za-z0-9_-]{32,64}$")
MASTER_KEY_ID = "master"
# What kind of caller a principal is (the audit log names it too).
CallerKind = Literal["key", "master", "entra", "anonymous"]
MASTER_OFF = "The master key is turned off on this gateway (CIRRUS_MASTER_KEY_ENABLED=false); use Entra ID."


@dataclass(frozen=True)
class Limits:
    """A key's limits; None means unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    max_budget: float | None = None
    budget_duration: str | None = None  # None: the budget never resets

    @property
    def any(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.max_parallel, self.max_budget))


class Stamp(TypedDict):
    """The ownership fields stored on every resource: the creating key and its team."""

    owner: str
    team: str | None


@dataclass(frozen=True)
class Principal:
    """The authenticated caller. `key_id` is safe to log; the key itself never is.

    An Entra ID caller is `entra_<object id>`: it owns what it creates and its usage is its own,
    like a key's. `is_master` means an admin's powers: the master key's, or an Entra token's
    `Cirrus.Admin` role. A policy's limits are shared by everyone it covers, so they are counted
    under the policy's id (`limit_id`)."""

    key_id: str
    is_master: bool
    team_id: str | None = None
    models: frozenset[str] | None = None  # None: every model
    limits: Limits = Limits()
    kind: CallerKind = "key"
    name: str | None = None  # an Entra caller's user name or app id, for the audit log
    policy_id: str | None = None
    expires_at: float | None = None  # an Entra token's expiry: a console session ends by then

    @property
    def limit_id(self) -> str:
        """Whose counters the limits are kept under: the policy's, else the key's."""
        return self.policy_id or self.key_id

    @property
    def tenant(self) -> str:
        """Whose data this caller shares: its team's, or its own key's."""
        return f"team:{self.team_id}" if self.team_id else f"key:{self.key_id}"

    def may_use(self, model: str) -> bool:
        return self.is_master or self.models is None or model in self.models

    def can_see(self, owner: str | None, team: str | None = None) -> bool:
        """Whether a resource created by key `owner` (of `team`) belongs to this caller."""
        if self.is_master or owner == self.key_id:
            return True
        return self.team_id is not None and team == self.team_id

    def stamp(self) -> Stamp:
        """The ownership fields to store on a resource this caller creates."""
        return {"owner": self.key_id, "team": self.team_id}

    def scope(self, alias: str = "c") -> tuple[str, dict[str, Any]]:
        """A SQL condition (with its parameters) that keeps a query to this caller's resources."""
        if self.is_master:
            return "", {}
        if self.team_id is not None:
            return (
                f" AND ({alias}.owner = @scope_owner OR {alias}.team = @scope_team)",
                {"@scope_owner": self.key_id, "@scope_team": self.team_id},
            )
        return f" AND {alias}.owner = @scope_owner", {"@scope_owner": self.key_id}

    def require_admin(self) -> None:
        if not self.is_master:
            raise PermissionDeniedError(
                "This endpoint needs an admin: the master key, or an Entra ID token with the "
                "Cirrus.Admin role."
            )


MASTER = Principal(key_id=MASTER_KEY_ID, is_master=True, kind="master")

KeyLookup = Callable[[str], Awaitable[Mapping[str, Any] | None]]


class Identities(Protocol):
    """Entra ID callers (shared/services/identities.py)."""

    def accepts(self, token: str) -> bool: ...

    async def authenticate(self, token: str) -> Principal: ...

    def owns(self, principal_id: str) -> bool: ...

    async def principal_for(self, principal_id: str) -> Principal: ...

    async def aclose(self) -> None: ...


class AuthService:
    def __init__(
        self,
        master_key: SecretStr,
        hash_secret: SecretStr,
        lookup: KeyLookup,
        *,
        master_enabled: bool = True,
        identities: Identities | None = None,
    ) -> None:
        self._master = master_key.get_secret_value().encode()
        self._hash_secret = hash_secret.get_secret_value().encode()
        self._lookup = lookup
        self.master_enabled = master_enabled
        self.identities = identities

    def hash(self, secret: str) -> str:
        """The keyed hash a secret is stored as. Without the server's secret it cannot be checked."""
        return hmac.new(self._hash_secret, secret.encode(), hashlib.sha256).hexdigest()

    async def authenticate(self, authorization: str | None, api_key: str | None = None) -> Principal:
        """The caller behind `Authorization: Bearer <key>`, else behind `api_key`: the `api-key`
        header of Azure OpenAI clients or the `x-api-key` of Anthropic's."""
        key = (_bearer(authorization) if authorization else "") or (api_key or "").strip()
        if not key:
            raise AuthenticationError(MISSING_KEY)
        if self.identities is not None and self.identities.accepts(key):
            return await self.identities.authenticate(key)
        # Constant-time comparison: response timing must not reveal how much of a key matched.
        if hmac.compare_digest(key.encode(), self._master):
            if not self.master_enabled:
                raise AuthenticationError(MASTER_OFF)
            return MASTER
        match = SECRET_PATTERN.match(key)
        if match is None:
            raise AuthenticationError(BAD_KEY)
        stored = await self._lookup("key_" + match.group(1))
        if stored is None or not hmac.compare_digest(self.hash(key), str(stored.get("key_hash", ""))):
            raise AuthenticationError(BAD_KEY)
        return _live(stored)

    def master_fingerprint(self) -> str:
        """The master key's keyed hash: tells whether the master key has changed, and shows nothing."""
        return self.hash(self._master.decode())

    async def lookup(self, key_id: str) -> Mapping[str, Any] | None:
        """The stored key named by id (None if there is none)."""
        return await self._lookup(key_id)

    async def principal_for(self, key_id: str) -> Principal:
        """The principal of a key named by id, for work done on its behalf later (batches, jobs):
        401 if it has been revoked or has expired since."""
        if key_id == MASTER_KEY_ID:
            if not self.master_enabled:
                raise AuthenticationError(MASTER_OFF)
            return MASTER
        if self.identities is not None and self.identities.owns(key_id):
            return await self.identities.principal_for(key_id)
        stored = await self._lookup(key_id) if key_id.startswith("key_") else None
        if stored is None:
            raise AuthenticationError(f"The key {key_id} no longer exists.")
        return _live(stored)


def _live(stored: Mapping[str, Any]) -> Principal:
    if stored.get("revoked_at") is not None:
        raise AuthenticationError("This API key has been revoked.")
    expires_at = stored.get("expires_at")
    if expires_at is not None and expires_at <= time.time():
        raise AuthenticationError("This API key has expired.")
    return principal_of(stored)


def principal_of(stored: Mapping[str, Any]) -> Principal:
    models = stored.get("models") or None
    return Principal(
        key_id=str(stored["id"]),
        is_master=False,
        team_id=stored.get("team_id"),
        models=frozenset(models) if models else None,
        limits=Limits(
            rpm=stored.get("rpm_limit"),
            tpm=stored.get("tpm_limit"),
            max_parallel=stored.get("max_parallel_requests"),
            max_budget=stored.get("max_budget"),
            budget_duration=stored.get("budget_duration"),
        ),
    )


def _bearer(header: str) -> str:
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""
