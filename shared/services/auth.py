"""Who is calling: the bearer key, checked against the master key or a stored virtual key.

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
from typing import Any, TypedDict

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
    """The authenticated caller. `key_id` is safe to log; the key itself never is."""

    key_id: str
    is_master: bool
    team_id: str | None = None
    models: frozenset[str] | None = None  # None: every model
    limits: Limits = Limits()

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

    def require_master(self) -> None:
        if not self.is_master:
            raise PermissionDeniedError("This endpoint needs the master key.")


MASTER = Principal(key_id=MASTER_KEY_ID, is_master=True)

KeyLookup = Callable[[str], Awaitable[Mapping[str, Any] | None]]


class AuthService:
    def __init__(self, master_key: SecretStr, hash_secret: SecretStr, lookup: KeyLookup) -> None:
        self._master = master_key.get_secret_value().encode()
        self._hash_secret = hash_secret.get_secret_value().encode()
        self._lookup = lookup

    def hash(self, secret: str) -> str:
        """The keyed hash a secret is stored as. Without the server's secret it cannot be checked."""
        return hmac.new(self._hash_secret, secret.encode(), hashlib.sha256).hexdigest()

    async def authenticate(self, authorization: str | None, api_key: str | None = None) -> Principal:
        """The caller behind `Authorization: Bearer <key>`, else behind `api_key`: the `api-key`
        header of Azure OpenAI clients or the `x-api-key` of Anthropic's."""
        key = (_bearer(authorization) if authorization else "") or (api_key or "").strip()
        if not key:
            raise AuthenticationError(MISSING_KEY)
        # Constant-time comparison: response timing must not reveal how much of a key matched.
        if hmac.compare_digest(key.encode(), self._master):
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
            return MASTER
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
