"""Virtual keys: create, list, read, update, rotate and revoke (the master key's `/v1/keys`).

The secret is generated here, returned once, and stored only as an HMAC under the server's
hashing secret (`CIRRUS_KEY_HASH_SECRET`). Lists and logs show its first characters
(`key_name`), enough to recognise a key and useless to call with.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from shared.clients.protocols import DocumentStore
from shared.errors import NotFoundError, PreconditionFailedError, ServiceUnavailableError
from shared.models.keys import (
    AUDITED_FIELDS,
    Duration,
    KeyCreate,
    KeyListPublic,
    KeyPublic,
    KeyRecord,
    KeyUpdate,
)
from shared.services import records
from shared.services.audit import Actor, AuditLog
from shared.services.auth import SECRET_PREFIX, AuthService, principal_of
from shared.services.limits import KeyLimiter

log = logging.getLogger("cirrus.keys")

CONTAINER = "keys"
VISIBLE_CHARS = len(SECRET_PREFIX) + 8
UPDATE_ATTEMPTS = 10


class KeyService:
    def __init__(
        self, documents: DocumentStore, auth: AuthService, limiter: KeyLimiter, audit: AuditLog
    ) -> None:
        self._documents = documents
        self._auth = auth
        self._limiter = limiter
        self._audit = audit

    async def lookup(self, key_id: str) -> dict[str, Any] | None:
        """The stored key for authentication; a store outage is a 503, never a 401 or a 500."""
        try:
            return await self._documents.read(CONTAINER, key_id, key_id)
        except Exception as exc:
            log.warning("key lookup failed (%s)", type(exc).__name__)
            raise ServiceUnavailableError("Cirrus cannot check API keys right now; retry shortly.") from exc

    async def create(self, body: KeyCreate, actor: Actor) -> KeyPublic:
        now = time.time()
        key_id = f"key_{uuid.uuid4().hex[:16]}"
        secret = _new_secret(key_id)
        fields = body.model_dump(exclude={"duration", "expires"})
        record = KeyRecord(
            id=key_id,
            pk=key_id,
            key_hash=self._auth.hash(secret),
            key_prefix=secret[:VISIBLE_CHARS],
            **{**fields, "models": fields["models"] or [], "metadata": fields["metadata"] or {}},
            expires_at=_expires_at(body, now),
            created_at=now,
            updated_at=now,
        )
        await self._documents.create(CONTAINER, record.model_dump(mode="json", exclude={"etag"}))
        log.info("key %s created (%s)", key_id, record.key_prefix)
        await self._audit.record(actor, "key.create", ("key", key_id), after=_audited(record))
        return await self._public(record, secret=secret)

    async def get(self, key_id: str) -> KeyPublic:
        return await self._public(await self._load(key_id))

    async def list_page(self, *, limit: int, after: str | None, include_revoked: bool) -> KeyListPublic:
        """Keys newest first, `limit` per page after the key `after`."""
        sql = "SELECT * FROM c WHERE c.object = 'key'"
        if not include_revoked:
            sql += " AND IS_NULL(c.revoked_at)"
        before = (await self._load(after)).created_at if after else None
        rows, more = await records.newest_first(self._documents, CONTAINER, sql, before=before, limit=limit)
        page = [await self._public(KeyRecord.model_validate(r)) for r in rows]
        return KeyListPublic(
            data=page,
            first_id=page[0].id if page else None,
            last_id=page[-1].id if page else None,
            has_more=more,
        )

    async def update(self, key_id: str, body: KeyUpdate, actor: Actor) -> KeyPublic:
        changes = body.model_dump(include=body.model_fields_set - {"duration", "expires"})
        if "models" in changes:
            changes["models"] = changes["models"] or []
        if "metadata" in changes:
            changes["metadata"] = changes["metadata"] or {}
        if body.model_fields_set & {"duration", "expires"}:
            changes["expires_at"] = _expires_at(body, time.time())

        def apply(record: KeyRecord) -> None:
            for name, value in changes.items():
                setattr(record, name, value)

        record, before = await self._change(key_id, apply)
        log.info("key %s updated (%s)", key_id, ", ".join(sorted(changes)) or "nothing")
        await self._audit.record(actor, "key.update", ("key", key_id), before=before, after=_audited(record))
        return await self._public(record)

    async def rotate(self, key_id: str, actor: Actor) -> KeyPublic:
        """A new secret for the same key (limits, spend and resources stay); the old one stops."""
        secret = _new_secret(key_id)

        def apply(record: KeyRecord) -> None:
            if record.revoked_at is not None:
                raise NotFoundError(f"Key '{key_id}' is revoked; create a new one.", param="key_id")
            record.key_hash = self._auth.hash(secret)
            record.key_prefix = secret[:VISIBLE_CHARS]
            record.rotated_at = time.time()

        record, _before = await self._change(key_id, apply)
        log.info("key %s rotated (%s)", key_id, record.key_prefix)
        await self._audit.record(actor, "key.rotate", ("key", key_id))
        return await self._public(record, secret=secret)

    async def revoke(self, key_id: str, actor: Actor) -> KeyPublic:
        """Revoke at once: the record stays (usage still names it), the secret stops working.
        Revoking a revoked key changes nothing and is not audited again."""
        first = False

        def apply(record: KeyRecord) -> None:
            nonlocal first
            first = record.revoked_at is None
            if first:
                record.revoked_at = time.time()

        record, before = await self._change(key_id, apply)
        if first:
            log.info("key %s revoked", key_id)
            await self._audit.record(actor, "key.revoke", ("key", key_id), before=before)
        return await self._public(record)

    async def _change(self, key_id: str, apply: Any) -> tuple[KeyRecord, dict[str, Any]]:
        """The key changed by `apply` and written under its ETag, and its limits before."""
        for _ in range(UPDATE_ATTEMPTS):
            record = await self._load(key_id)
            before = _audited(record)
            apply(record)
            record.updated_at = time.time()
            try:
                await self._documents.replace(
                    CONTAINER, record.model_dump(mode="json", exclude={"etag"}), etag=record.etag
                )
            except PreconditionFailedError:
                continue
            return record, before
        raise ServiceUnavailableError(f"Key '{key_id}' is being changed concurrently; retry.")

    async def _load(self, key_id: str) -> KeyRecord:
        doc = await self._documents.read(CONTAINER, key_id, key_id) if key_id.startswith("key_") else None
        if doc is None or doc.get("object") != "key":
            raise NotFoundError(f"No key found with id '{key_id}'.", param="key_id")
        return KeyRecord.model_validate(doc)

    async def _public(self, record: KeyRecord, *, secret: str | None = None) -> KeyPublic:
        now = time.time()
        spend, reset_at = 0.0, None
        if record.has_limits:
            spend, reset_at = await self._limiter.state(record.id, principal_of(record.model_dump()).limits)
        return KeyPublic(
            id=record.id,
            key=secret,
            key_name=record.key_prefix + "...",
            key_alias=record.key_alias,
            status=record.status(now),
            models=record.models,
            max_budget=record.max_budget,
            budget_duration=record.budget_duration,
            budget_reset_at=int(reset_at) if reset_at else None,
            spend=spend,
            rpm_limit=record.rpm_limit,
            tpm_limit=record.tpm_limit,
            max_parallel_requests=record.max_parallel_requests,
            expires=_iso(record.expires_at),
            metadata=record.metadata,
            user_id=record.user_id,
            team_id=record.team_id,
            created_at=int(record.created_at),
            updated_at=int(record.updated_at),
            rotated_at=_int(record.rotated_at),
            revoked_at=_int(record.revoked_at),
        )


def _audited(record: KeyRecord) -> dict[str, Any]:
    """What the audit log shows of a key: its limits and lifetime, never its secret or hash."""
    return {
        **{name: getattr(record, name) for name in AUDITED_FIELDS},
        "key_alias": record.key_alias,
        "expires_at": record.expires_at,
    }


def _new_secret(key_id: str) -> str:
    return SECRET_PREFIX + key_id.removeprefix("key_") + secrets.token_urlsafe(32)


def _expires_at(body: KeyCreate | KeyUpdate, now: float) -> float | None:
    if body.duration is not None:
        return Duration.parse(body.duration).seconds_from(now)
    return body.expires


def _iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp is not None else None


def _int(timestamp: float | None) -> int | None:
    return int(timestamp) if timestamp is not None else None
