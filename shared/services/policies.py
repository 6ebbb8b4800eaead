"""Policies for Entra ID callers: create, list, read, change and delete (`/v1/policies`), and which
policy covers an identity.

Policies live in `keys` (partitioned by their own id, `object` "policy"). Resolving an identity's
policy happens on every Entra request, so the live policies are held in memory and re-read in the
background once they are `CACHE_TTL_S` seconds old (at once after a change made through this
instance): a change made on another instance holds everywhere within about that time. If Cosmos
cannot be read, what was read last is used for up to `MAX_STALE_S` seconds, then requests get 503.
Deleting a policy keeps its record (usage still names it) and stops everyone it covered at once on
this instance, within seconds elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from shared.clients.protocols import DocumentStore
from shared.errors import ConflictError, NotFoundError, ServiceUnavailableError
from shared.models.keys import AUDITED_FIELDS
from shared.models.policies import (
    ASSIGNEE_FIELDS,
    PolicyCreate,
    PolicyListPublic,
    PolicyPublic,
    PolicyRecord,
    PolicyUpdate,
)
from shared.services import records
from shared.services.audit import Actor, AuditLog
from shared.services.auth import Limits, Principal
from shared.services.limits import KeyLimiter

log = logging.getLogger("cirrus.policies")

CONTAINER = "keys"
CACHE_TTL_S = 5.0
MAX_STALE_S = 60.0
POLICY_AUDITED = (*AUDITED_FIELDS, "name", *ASSIGNEE_FIELDS)


class PolicyService:
    def __init__(
        self,
        documents: DocumentStore,
        limiter: KeyLimiter,
        audit: AuditLog,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._documents = documents
        self._limiter = limiter
        self._audit = audit
        self._clock = clock
        self._live: list[PolicyRecord] | None = None
        self._read_at = 0.0
        self._generation = 0
        self._reading: asyncio.Lock | None = None
        self._refresh: asyncio.Task[None] | None = None

    # --- which policy covers an identity -------------------------------------------------------

    async def covering(
        self, object_id: str, app_id: str | None, groups: Iterable[str]
    ) -> PolicyRecord | None:
        """The most specific live policy naming the identity: by object id, app id, then group."""
        live = await self._policies()
        oid, app = object_id.lower(), (app_id or "").lower()
        group_ids = frozenset(g.lower() for g in groups)
        for found in (
            [p for p in live if oid in p.object_ids],
            [p for p in live if app and app in p.app_ids],
            [p for p in live if group_ids.intersection(p.group_ids)],
        ):
            if found:
                return min(found, key=lambda p: (p.created_at, p.id))
        return None

    async def live(self, policy_id: str) -> PolicyRecord | None:
        return next((p for p in await self._policies() if p.id == policy_id), None)

    @staticmethod
    def principal(policy: PolicyRecord, principal_id: str, name: str | None) -> Principal:
        """An Entra caller under `policy`: its own owner id, the policy's team, models and limits."""
        return Principal(
            key_id=principal_id,
            is_master=False,
            team_id=policy.team_id,
            models=frozenset(policy.models) if policy.models else None,
            limits=_limits(policy),
            kind="entra",
            name=name,
            policy_id=policy.id,
        )

    async def _policies(self) -> list[PolicyRecord]:
        """The live policies. Past `CACHE_TTL_S` they are re-read in the background while requests
        go on with what was read (so no request waits on Cosmos for them), up to `MAX_STALE_S`;
        with nothing read yet, or older than that, requests wait for one shared read."""
        age = self._clock() - self._read_at
        if self._live is not None and age < CACHE_TTL_S:
            return self._live
        if self._live is not None and age < MAX_STALE_S:
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.get_running_loop().create_task(self._reread(), name="policies")
            return self._live
        if self._reading is None:
            self._reading = asyncio.Lock()
        async with self._reading:  # one read for every request that finds nothing usable
            if self._live is None or self._clock() - self._read_at >= MAX_STALE_S:
                await self._read()
            assert self._live is not None
            return self._live

    async def _read(self) -> None:
        generation, started = self._generation, self._clock()
        try:
            rows = await self._documents.query(
                CONTAINER, "SELECT * FROM c WHERE c.object = 'policy' AND IS_NULL(c.deleted_at)"
            )
        except Exception as exc:
            log.warning("reading policies failed (%s)", type(exc).__name__)
            raise ServiceUnavailableError(
                "Cirrus cannot read its policies right now; retry shortly."
            ) from exc
        if generation == self._generation:  # a change made here meanwhile makes this read stale
            self._live = [
                PolicyRecord.model_validate(r)
                for r in rows
                if r.get("object") == "policy" and r.get("deleted_at") is None
            ]
            self._read_at = started

    async def _reread(self) -> None:
        with contextlib.suppress(ServiceUnavailableError):  # logged; the next request tries again
            await self._read()

    def _forget(self) -> None:
        """After a change made through this instance: the next request reads the policies afresh."""
        self._live = None
        self._generation += 1

    # --- the admin API -------------------------------------------------------------------------

    async def create(self, body: PolicyCreate, actor: Actor) -> PolicyPublic:
        now = time.time()
        fields = body.model_dump()
        policy_id = f"pol_{uuid.uuid4().hex[:16]}"
        record = PolicyRecord(
            id=policy_id,
            pk=policy_id,
            **{
                **fields,
                "models": fields["models"] or [],
                "metadata": fields["metadata"] or {},
                **{name: fields[name] or [] for name in ASSIGNEE_FIELDS},
            },
            created_at=now,
            updated_at=now,
        )
        await self._refuse_taken(record)
        await self._documents.create(CONTAINER, record.model_dump(mode="json", exclude={"etag"}))
        self._forget()
        log.info("policy %s created", policy_id)
        await self._audit.record(actor, "policy.create", ("policy", policy_id), after=_audited(record))
        return await self._public(record)

    async def get(self, policy_id: str) -> PolicyPublic:
        return await self._public(await self._load_or_404(policy_id))

    async def list_page(self, *, limit: int, after: str | None, include_deleted: bool) -> PolicyListPublic:
        """Policies newest first, `limit` per page after the policy `after`."""
        sql = "SELECT * FROM c WHERE c.object = 'policy'"
        if not include_deleted:
            sql += " AND IS_NULL(c.deleted_at)"
        before = (await self._load_or_404(after)).created_at if after else None
        rows, more = await records.newest_first(self._documents, CONTAINER, sql, before=before, limit=limit)
        page = [await self._public(PolicyRecord.model_validate(r)) for r in rows]
        return PolicyListPublic(
            data=page,
            first_id=page[0].id if page else None,
            last_id=page[-1].id if page else None,
            has_more=more,
        )

    async def update(self, policy_id: str, body: PolicyUpdate, actor: Actor) -> PolicyPublic:
        changes = body.model_dump(include=body.model_fields_set)
        for name in ("models", *ASSIGNEE_FIELDS):
            if name in changes:
                changes[name] = changes[name] or []
        if "metadata" in changes:
            changes["metadata"] = changes["metadata"] or {}
        before: dict[str, Any] = {}

        def apply(record: PolicyRecord) -> bool:
            if record.deleted_at is not None:
                raise NotFoundError(f"Policy '{policy_id}' is deleted; create a new one.", param="policy_id")
            before.clear()
            before.update(_audited(record))
            for name, value in changes.items():
                setattr(record, name, value)
            record.updated_at = time.time()
            return True

        if any(name in changes for name in ASSIGNEE_FIELDS):
            current = await self._load_or_404(policy_id)
            await self._refuse_taken(current.model_copy(update=changes))
        record = await records.update(self._documents, CONTAINER, policy_id, self._load, apply, what="policy")
        self._forget()
        log.info("policy %s updated (%s)", policy_id, ", ".join(sorted(changes)) or "nothing")
        await self._audit.record(
            actor, "policy.update", ("policy", policy_id), before=before, after=_audited(record)
        )
        return await self._public(record)

    async def delete(self, policy_id: str, actor: Actor) -> PolicyPublic:
        """Delete at once: the record stays (usage names it); nobody it covered gets in through it."""
        before: dict[str, Any] = {}

        def apply(record: PolicyRecord) -> bool:
            if record.deleted_at is not None:
                return False  # deleting twice is not an error, and not a second audit record
            before.update(_audited(record))
            record.deleted_at = record.updated_at = time.time()
            return True

        record = await records.update(self._documents, CONTAINER, policy_id, self._load, apply, what="policy")
        self._forget()
        if before:
            log.info("policy %s deleted", policy_id)
            await self._audit.record(actor, "policy.delete", ("policy", policy_id), before=before)
        return await self._public(record)

    async def _refuse_taken(self, record: PolicyRecord) -> None:
        """An identity is named by one policy at most, so which one covers it is never a guess."""
        self._forget()
        for other in await self._policies():
            if other.id == record.id:
                continue
            for name in ASSIGNEE_FIELDS:
                shared = sorted(set(getattr(record, name)) & set(getattr(other, name)))
                if shared:
                    raise ConflictError(
                        f"{name} {shared[0]} is already assigned to policy {other.id}; "
                        "remove it there first.",
                        param=name,
                    )

    async def _load(self, policy_id: str) -> PolicyRecord | None:
        doc = (
            await self._documents.read(CONTAINER, policy_id, policy_id)
            if policy_id.startswith("pol_")
            else None
        )
        return PolicyRecord.model_validate(doc) if doc is not None and doc.get("object") == "policy" else None

    async def _load_or_404(self, policy_id: str) -> PolicyRecord:
        record = await self._load(policy_id)
        if record is None:
            raise NotFoundError(f"No policy found with id '{policy_id}'.", param="policy_id")
        return record

    async def _public(self, record: PolicyRecord) -> PolicyPublic:
        spend, reset_at = 0.0, None
        if record.has_limits:
            spend, reset_at = await self._limiter.state(record.id, _limits(record))
        return PolicyPublic(
            id=record.id,
            name=record.name,
            status="deleted" if record.deleted_at is not None else "active",
            models=record.models,
            max_budget=record.max_budget,
            budget_duration=record.budget_duration,
            budget_reset_at=int(reset_at) if reset_at else None,
            spend=spend,
            rpm_limit=record.rpm_limit,
            tpm_limit=record.tpm_limit,
            max_parallel_requests=record.max_parallel_requests,
            metadata=record.metadata,
            team_id=record.team_id,
            object_ids=record.object_ids,
            app_ids=record.app_ids,
            group_ids=record.group_ids,
            created_at=int(record.created_at),
            updated_at=int(record.updated_at),
            deleted_at=int(record.deleted_at) if record.deleted_at is not None else None,
        )


def _limits(policy: PolicyRecord) -> Limits:
    return Limits(
        rpm=policy.rpm_limit,
        tpm=policy.tpm_limit,
        max_parallel=policy.max_parallel_requests,
        max_budget=policy.max_budget,
        budget_duration=policy.budget_duration,
    )


def _audited(record: PolicyRecord) -> dict[str, Any]:
    """What the audit log shows of a policy: its limits, name and assignments."""
    return {name: getattr(record, name) for name in POLICY_AUDITED}
