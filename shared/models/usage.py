"""Usage records (one per model call) and the `/v1/usage` summary."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Endpoint = Literal[
    "chat.completions",
    "completions",
    "embeddings",
    "messages",
    "responses",
    "moderations",
    "images.generations",
    "audio.transcriptions",
    "audio.speech",
    "rerank",
]
# What the endpoints not billed by tokens are counted in: moderation inputs classified, images
# made, seconds of audio transcribed, characters spoken, rerank search units.
Unit = Literal["inputs", "images", "seconds", "characters", "search_units"]
GroupBy = Literal["model", "day", "session", "key", "team"]


class UsageRecord(BaseModel):
    """What one request used, as stored in Cosmos (`usage`, partitioned by the caller's key id)."""

    id: str  # generated once per request, so a re-delivered write lands on the same item
    pk: str  # the key id that made the request
    object: Literal["usage.record"] = "usage.record"
    request_id: str
    created_at: float  # unix seconds
    day: str  # YYYY-MM-DD, UTC
    key_id: str
    team_id: str | None = None
    endpoint: Endpoint
    model: str  # what the client asked for
    served_model: str | None = None  # what answered (differs after a fallback)
    deployment: str | None = None
    provider: str | None = None
    session_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    usage_estimated: bool = False  # counted by Cirrus because the provider reported none
    # The endpoint's own measure, for those not billed by tokens (None for chat, completions and
    # embeddings, and when nobody knows, e.g. a transcription of audio of unknown length).
    units: float | None = None
    unit: Unit | None = None
    cost_usd: float | None = None  # None: no price known for the model
    latency_ms: float
    ttft_ms: float | None = None
    status: str = "ok"  # "ok" or the error code
    http_status: int = 200
    stream: bool = False
    cache_hit: bool = False
    fallback: bool = False
    tags: dict[str, str] = Field(default_factory=dict)


class UsageTotals(BaseModel):
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    errors: int = 0
    cache_hits: int = 0
    units: dict[Unit, float] = Field(default_factory=dict)  # e.g. {"images": 4, "seconds": 12.5}

    def add(self, record: UsageRecord) -> None:
        self.requests += 1
        self.input_tokens += record.input_tokens
        self.output_tokens += record.output_tokens
        self.total_tokens += record.total_tokens
        self.cost_usd += record.cost_usd or 0.0
        self.errors += record.status != "ok"
        self.cache_hits += record.cache_hit
        if record.unit is not None and record.units is not None:
            self.units[record.unit] = self.units.get(record.unit, 0.0) + record.units


class UsageGroup(UsageTotals):
    group: str | None


class UsageSummaryPublic(BaseModel):
    object: Literal["usage.summary"] = "usage.summary"
    start: int
    end: int
    group_by: GroupBy | None
    data: list[UsageGroup]
    total: UsageTotals


class UsageSeriesPoint(BaseModel):
    """One day's totals for one group (a model or a key; None when not grouped)."""

    day: str  # YYYY-MM-DD, UTC
    group: str | None
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    errors: int = 0
    fallbacks: int = 0

    def add(self, record: UsageRecord) -> None:
        self.requests += 1
        self.input_tokens += record.input_tokens
        self.output_tokens += record.output_tokens
        self.cost_usd += record.cost_usd or 0.0
        self.errors += record.status != "ok"
        self.fallbacks += record.fallback


class UsageSeriesPublic(BaseModel):
    """`/v1/usage/series`: totals per day (and group), aggregated by Cirrus, for charts."""

    object: Literal["list"] = "list"
    bucket: Literal["day"] = "day"
    group_by: Literal["model", "key"] | None = None
    data: list[UsageSeriesPoint]


class UsageRecordFilter(BaseModel):
    """What `/v1/usage/records` narrows to (every field optional)."""

    key_id: str | None = None
    model: str | None = None
    status: str | None = None
    session_id: str | None = None


class UsageRecordListPublic(BaseModel):
    """A page of usage records, newest first; `after` a page's `last_id` fetches the next one."""

    object: Literal["list"] = "list"
    data: list[UsageRecord]
    has_more: bool = False
    last_id: str | None = None
