"""Virtual keys: what `/v1/keys` accepts and returns, and how a key is stored.

Field names follow LiteLLM proxy's `/key/generate` where it has one (`key_alias`, `models`,
`max_budget`, `budget_duration`, `rpm_limit`, `tpm_limit`, `max_parallel_requests`, `duration`,
`expires`, `metadata`, `user_id`, `team_id`, and the secret returned as `key`), so a client
written for LiteLLM's proxy needs no changes.
"""

from __future__ import annotations

import calendar
import json
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_METADATA_BYTES = 8_192
MAX_EXPIRES = 253_402_300_799  # 9999-12-31T23:59:59Z
_DURATION = re.compile(r"^(\d{1,6})(s|m|h|d|w|mo)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
# Named periods, as people say them.
_NAMED = {"hourly": "1h", "daily": "1d", "weekly": "1w", "monthly": "1mo"}
TOTAL = "total"  # a budget that never resets


@dataclass(frozen=True)
class Duration:
    """`30s`, `10m`, `1h`, `1d`, `1w` or `1mo` (LiteLLM's syntax), or daily/weekly/monthly."""

    count: int
    unit: str  # s, m, h, d, w or mo

    @classmethod
    def parse(cls, text: str) -> Duration:
        match = _DURATION.match(_NAMED.get(text.strip().lower(), text.strip().lower()))
        if not match or int(match.group(1)) == 0:
            raise ValueError(
                f"{text!r} is not a duration: use a number and a unit (30s, 10m, 1h, 1d, 1w, 1mo) "
                "or hourly, daily, weekly, monthly"
            )
        return cls(int(match.group(1)), match.group(2))

    def window(self, now: float) -> tuple[str, float]:
        """The window `now` falls in, and when it ends. Windows are aligned to the UTC calendar:
        `1d` resets at midnight UTC, `1mo` on the first of the month, `1h` on the hour."""
        if self.unit == "mo":
            moment = datetime.fromtimestamp(now, UTC)
            index = ((moment.year * 12 + moment.month - 1) // self.count) * self.count + self.count
            year, month = divmod(index, 12)
            end = calendar.timegm((year, month + 1, 1, 0, 0, 0))
            return f"{self.count}mo:{index - self.count}", float(end)
        seconds = self.count * _UNIT_SECONDS[self.unit]
        index = math.floor(now / seconds)
        return f"{seconds}s:{index}", float((index + 1) * seconds)

    def seconds_from(self, now: float) -> float:
        """When a key created at `now` with this lifetime expires."""
        if self.unit == "mo":
            moment = datetime.fromtimestamp(now, UTC)
            year, month = divmod(moment.year * 12 + moment.month - 1 + self.count, 12)
            day = min(moment.day, calendar.monthrange(year, month + 1)[1])
            return moment.replace(year=year, month=month + 1, day=day).timestamp()
        return now + self.count * _UNIT_SECONDS[self.unit]


def _budget_duration(value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip().lower() == TOTAL):
        return None
    if not isinstance(value, str):
        raise ValueError("must be a duration string such as 1d or monthly")
    Duration.parse(value)
    return value.strip().lower()


def _expiry(value: Any) -> Any:
    """Unix seconds or an ISO 8601 date-time (UTC unless it says otherwise)."""
    if value is None or isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("must be unix seconds or an ISO 8601 date-time") from None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    raise ValueError("must be unix seconds or an ISO 8601 date-time")


class LimitFields(BaseModel):
    """The limits a key or a policy holds, on create and on update."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    models: list[str] | None = Field(None, max_length=256)  # None or []: every model
    max_budget: float | None = Field(None, ge=0)
    budget_duration: str | None = None
    rpm_limit: int | None = Field(None, ge=1)
    tpm_limit: int | None = Field(None, ge=1)
    max_parallel_requests: int | None = Field(None, ge=1, le=10_000)
    metadata: dict[str, Any] | None = None
    team_id: str | None = Field(None, min_length=1, max_length=256)

    _budget = field_validator("budget_duration", mode="before")(_budget_duration)

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not isinstance(m, str) or not m or len(m) > 256 for m in value):
            raise ValueError("must be a list of model names")
        return list(dict.fromkeys(value)) if value is not None else None

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
        return value


# The fields of a key or policy the audit log shows before and after a change: limits, not secrets.
AUDITED_FIELDS = (
    "models",
    "max_budget",
    "budget_duration",
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
    "team_id",
)


class _KeyFields(LimitFields):
    """What a key's owner can set, on create and on update."""

    key_alias: str | None = Field(
        None, min_length=1, max_length=256, validation_alias=AliasChoices("key_alias", "name")
    )
    # Up to the last second datetime can show (expires is returned as ISO 8601).
    expires: float | None = Field(None, ge=0, le=MAX_EXPIRES)
    duration: str | None = None
    user_id: str | None = Field(None, max_length=256)

    _expires = field_validator("expires", mode="before")(_expiry)

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            duration = Duration.parse(value)
            try:
                fits = duration.seconds_from(time.time()) <= MAX_EXPIRES
            except (OverflowError, ValueError):  # a month past datetime's year 9999
                fits = False
            if not fits:
                raise ValueError("must end before the year 10000")
        return value

    @model_validator(mode="after")
    def _one_expiry(self) -> _KeyFields:
        if self.expires is not None and self.duration is not None:
            raise ValueError("give either `duration` or `expires`, not both")
        return self


class KeyCreate(_KeyFields):
    """POST /v1/keys. The secret is always generated by Cirrus: a client cannot choose it."""


class KeyUpdate(_KeyFields):
    """PATCH /v1/keys/{id}: only the fields present change; `null` clears a limit."""


class KeyRecord(BaseModel):
    """A key as stored in Cosmos (`keys`, partitioned by its id). The secret is never stored."""

    id: str
    pk: str
    object: Literal["key"] = "key"
    key_hash: str  # HMAC-SHA256 of the secret under the server's hashing secret
    key_prefix: str  # the first characters of the secret, to recognise it in lists and logs
    key_alias: str | None = None
    models: list[str] = Field(default_factory=list)
    max_budget: float | None = None
    budget_duration: str | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    expires_at: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    user_id: str | None = None
    team_id: str | None = None
    created_at: float
    updated_at: float
    rotated_at: float | None = None
    revoked_at: float | None = None
    etag: str | None = Field(None, alias="_etag")

    model_config = ConfigDict(populate_by_name=True)

    def status(self, now: float) -> Literal["active", "revoked", "expired"]:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    @property
    def has_limits(self) -> bool:
        return any(
            v is not None
            for v in (self.max_budget, self.rpm_limit, self.tpm_limit, self.max_parallel_requests)
        )


class KeyPublic(BaseModel):
    """A key as `/v1/keys` returns it. `key` (the secret) only on create and rotate."""

    id: str
    object: Literal["key"] = "key"
    key: str | None = None
    key_name: str  # the visible prefix, e.g. `sk-cirrus-1a2b3c4d...`
    key_alias: str | None
    status: Literal["active", "revoked", "expired"]
    models: list[str]
    max_budget: float | None
    budget_duration: str | None
    budget_reset_at: int | None
    spend: float  # USD spent in the current budget period (all time for a `total` budget)
    rpm_limit: int | None
    tpm_limit: int | None
    max_parallel_requests: int | None
    expires: str | None  # ISO 8601, as LiteLLM returns it
    metadata: dict[str, Any]
    user_id: str | None
    team_id: str | None
    created_at: int
    updated_at: int
    rotated_at: int | None
    revoked_at: int | None


class KeyListPublic(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyPublic]
    first_id: str | None
    last_id: str | None
    has_more: bool


class KeyDeleted(BaseModel):
    """DELETE /v1/keys/{id}: the key is revoked (kept, so its usage still names it)."""

    id: str
    object: Literal["key.deleted"] = "key.deleted"
    deleted: Literal[True] = True
    revoked_at: int | None
