"""The audit log: who changed which key or policy, and who signed in to the console, when, from where.

Every record is a Cosmos item in `audit`, partitioned by what it is about (the key's, policy's or
console session's id), so "who revoked this key" is one partition's query. Its id begins with the
time in milliseconds, fixed width, so ids sort by time and a page's last id is the cursor for the
next. A record holds who acted (key id, `master` or `entra_<object id>`), when, the action, what it
was about, the limits before and after a change, the request id and the client's address. It
never holds a secret: a key's secret, hash or visible prefix is never among the fields copied.

Each record is also a telemetry event (`CirrusAudit`: a custom event in Application Insights, a
log record with the same attributes elsewhere). Writing it is retried by the resilient store; if it
still fails, the action has already happened, so the failure is logged as an error, with the
record's fields, rather than turned into an error for a change that took effect.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shared.clients.protocols import DocumentStore
from shared.models.audit import AuditActor, AuditEvent, AuditListPublic, AuditTarget, TargetType
from shared.services.auth import CallerKind, Principal

log = logging.getLogger("cirrus.audit")

CONTAINER = "audit"
EVENT_NAME = "CirrusAudit"  # Application Insights customEvents name
# Application Insights' exporter turns a log record with this attribute into a custom event.
CUSTOM_EVENT_ATTRIBUTE = "microsoft.custom_event.name"
# How long records are kept: Cosmos removes them after this (a year and a day).
RETENTION_S = 366 * 86_400

Outcome = Literal["success", "failure"]


@dataclass(frozen=True)
class Actor:
    """Who acted, and the request they acted in."""

    id: str
    kind: CallerKind
    name: str | None
    request_id: str
    client_ip: str | None

    @classmethod
    def of(cls, principal: Principal, request_id: str, client_ip: str | None) -> Actor:
        return cls(principal.key_id, principal.kind, principal.name, request_id, client_ip)


@dataclass(frozen=True)
class AuditQuery:
    limit: int = 20
    after: str | None = None  # an event id: the page continues with older events
    action: str | None = None  # `key.revoke`, or a prefix ending in `.`: `key.`
    actor_id: str | None = None
    target_id: str | None = None
    since: float | None = None
    until: float | None = None


class AuditLog:
    def __init__(self, documents: DocumentStore, *, clock: Callable[[], float] = time.time) -> None:
        self._documents = documents
        self._clock = clock

    async def record(
        self,
        actor: Actor,
        action: str,
        target: tuple[TargetType, str],
        *,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
        outcome: Outcome = "success",
        reason: str | None = None,
    ) -> AuditEvent:
        """Write one record (and its telemetry event). Never raises: the action is already done."""
        now = self._clock()
        event = AuditEvent(
            id=f"aud_{int(now * 1000):013d}{secrets.token_hex(6)}",
            action=action,
            at=now,
            actor=AuditActor(id=actor.id, kind=actor.kind, name=actor.name),
            target=AuditTarget(type=target[0], id=target[1]),
            before=dict(before) if before is not None else None,
            after=dict(after) if after is not None else None,
            outcome=outcome,
            reason=reason,
            request_id=actor.request_id,
            client_ip=actor.client_ip,
        )
        _emit(event)
        # `seq` repeats the id for ordering and paging: the Cosmos emulator refuses range filters on `id`.
        doc = {**event.model_dump(mode="json"), "pk": event.target.id, "seq": event.id, "ttl": RETENTION_S}
        try:
            await self._documents.create(CONTAINER, doc)
        except Exception as exc:
            log.error(
                "audit record %s (%s on %s by %s) could not be written (%s)",
                event.id,
                action,
                event.target.id,
                actor.id,
                type(exc).__name__,
            )
        return event

    async def page(self, query: AuditQuery) -> AuditListPublic:
        """Events newest first, filtered; one partition's query when a target is named."""
        sql = "SELECT * FROM c WHERE c.object = 'audit.event'"
        params: dict[str, Any] = {}
        if query.after:
            sql += " AND c.seq < @after"
            params["@after"] = query.after
        if query.action:
            if query.action.endswith("."):
                sql += " AND STARTSWITH(c.action, @action)"
            else:
                sql += " AND c.action = @action"
            params["@action"] = query.action
        if query.actor_id:
            sql += " AND c.actor.id = @actor"
            params["@actor"] = query.actor_id
        if query.target_id:
            sql += " AND c.pk = @target"  # the partition: one partition's query
            params["@target"] = query.target_id
        if query.since is not None:
            sql += " AND c.at >= @since"
            params["@since"] = query.since
        if query.until is not None:
            sql += " AND c.at < @until"
            params["@until"] = query.until
        rows = await self._documents.query(
            CONTAINER,
            sql + " ORDER BY c.seq DESC",
            params,
            max_items=query.limit + 1,
            pk=query.target_id,
        )
        events = [AuditEvent.model_validate(row) for row in rows]
        page = events[: query.limit]
        return AuditListPublic(
            data=page,
            first_id=page[0].id if page else None,
            last_id=page[-1].id if page else None,
            has_more=len(events) > query.limit,
        )


def _emit(event: AuditEvent) -> None:
    """The record as a telemetry event: a custom event in Application Insights."""
    attributes: dict[str, Any] = {
        CUSTOM_EVENT_ATTRIBUTE: EVENT_NAME,
        "cirrus.audit.id": event.id,
        "cirrus.audit.action": event.action,
        "cirrus.audit.outcome": event.outcome,
        "cirrus.audit.actor_id": event.actor.id,
        "cirrus.audit.actor_kind": event.actor.kind,
        "cirrus.audit.target_type": event.target.type,
        "cirrus.audit.target_id": event.target.id,
    }
    if event.client_ip:
        attributes["client.address"] = event.client_ip
    log.info(
        "audit: %s %s %s by %s (%s)",
        event.action,
        event.target.id,
        event.outcome,
        event.actor.id,
        event.id,
        extra=attributes,
    )
