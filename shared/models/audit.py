"""The audit log: what `GET /v1/audit` returns, and how a record is stored (`audit` in Cosmos)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

TargetType = Literal["key", "policy", "console.session"]


class AuditActor(BaseModel):
    """Who acted: a key id, `master`, or `entra_<object id>` with the token's user or app name."""

    model_config = ConfigDict(extra="ignore")

    id: str
    kind: Literal["key", "master", "entra", "anonymous"]
    name: str | None = None


class AuditTarget(BaseModel):
    """What the action was about: a key, a policy or a console session, by id."""

    model_config = ConfigDict(extra="ignore")

    type: TargetType
    id: str


class AuditEvent(BaseModel):
    """One admin action. `before` and `after` hold limits (never a secret) for changes."""

    model_config = ConfigDict(extra="ignore")

    id: str
    object: Literal["audit.event"] = "audit.event"
    action: str  # key.create, key.update, key.rotate, key.revoke, policy.*, console.sign_in ...
    at: float  # unix seconds
    actor: AuditActor
    target: AuditTarget
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    outcome: Literal["success", "failure"] = "success"
    reason: str | None = None  # why a failure failed, in words that name no secret
    request_id: str
    client_ip: str | None = None


class AuditListPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditEvent]
    first_id: str | None
    last_id: str | None
    has_more: bool
