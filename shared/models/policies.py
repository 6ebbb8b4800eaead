"""Policies: what Entra ID callers may do, kept through `/v1/policies`.

A policy holds what a key holds (models, budget, rpm/tpm, parallel requests, team) and is assigned
to Entra object ids (users, service principals), app ids (a managed identity's or a daemon's
client id) or groups. An identity is covered by the most specific policy that names it: its
object id, else its app id, else one of its groups (the oldest such policy). Its limits are shared
by everyone it covers.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.models.keys import LimitFields

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAX_ASSIGNEES = 256
ASSIGNEE_FIELDS = ("object_ids", "app_ids", "group_ids")


def _guids(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    if any(not isinstance(v, str) or not _GUID.match(v) for v in value):
        raise ValueError("must be a list of Entra ids (GUIDs such as 00000000-0000-0000-0000-000000000000)")
    return list(dict.fromkeys(v.lower() for v in value))


class PolicyFields(LimitFields):
    """What an admin sets on a policy, on create and on update."""

    name: str | None = Field(None, min_length=1, max_length=256)
    object_ids: list[str] | None = Field(None, max_length=MAX_ASSIGNEES)
    app_ids: list[str] | None = Field(None, max_length=MAX_ASSIGNEES)
    group_ids: list[str] | None = Field(None, max_length=MAX_ASSIGNEES)

    _assignees = field_validator(*ASSIGNEE_FIELDS)(_guids)


class PolicyCreate(PolicyFields):
    """POST /v1/policies."""


class PolicyUpdate(PolicyFields):
    """PATCH /v1/policies/{id}: only the fields present change; `null` clears a limit."""


class PolicyRecord(BaseModel):
    """A policy as stored in Cosmos (`keys`, partitioned by its id, `object` "policy")."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    pk: str
    object: Literal["policy"] = "policy"
    name: str | None = None
    models: list[str] = Field(default_factory=list)
    max_budget: float | None = None
    budget_duration: str | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    team_id: str | None = None
    object_ids: list[str] = Field(default_factory=list)
    app_ids: list[str] = Field(default_factory=list)
    group_ids: list[str] = Field(default_factory=list)
    created_at: float
    updated_at: float
    deleted_at: float | None = None
    etag: str | None = Field(None, alias="_etag")

    @property
    def has_limits(self) -> bool:
        return any(
            v is not None
            for v in (self.max_budget, self.rpm_limit, self.tpm_limit, self.max_parallel_requests)
        )


class PolicyPublic(BaseModel):
    id: str
    object: Literal["policy"] = "policy"
    name: str | None
    status: Literal["active", "deleted"]
    models: list[str]
    max_budget: float | None
    budget_duration: str | None
    budget_reset_at: int | None
    spend: float  # USD spent in the current budget period by everyone the policy covers
    rpm_limit: int | None
    tpm_limit: int | None
    max_parallel_requests: int | None
    metadata: dict[str, Any]
    team_id: str | None
    object_ids: list[str]
    app_ids: list[str]
    group_ids: list[str]
    created_at: int
    updated_at: int
    deleted_at: int | None


class PolicyListPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[PolicyPublic]
    first_id: str | None
    last_id: str | None
    has_more: bool


class PolicyDeleted(BaseModel):
    id: str
    object: Literal["policy.deleted"] = "policy.deleted"
    deleted: Literal[True] = True
