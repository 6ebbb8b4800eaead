"""Usage records as CSV (`/v1/usage/records?format=csv`), written with the stdlib's csv module."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import UTC, datetime

from shared.models.usage import UsageRecord

COLUMNS = (
    "id",
    "created_at",
    "request_id",
    "key_id",
    "team_id",
    "endpoint",
    "model",
    "served_model",
    "deployment",
    "provider",
    "session_id",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "status",
    "http_status",
    "stream",
    "cache_hit",
    "fallback",
)
# A cell a spreadsheet would run as a formula (CSV injection): prefixed with `'`, shown as text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def usage_csv(records: Iterable[UsageRecord]) -> bytes:
    """A header row, then one row a record; times in ISO 8601 UTC."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for record in records:
        row = record.model_dump(mode="json")
        row["created_at"] = datetime.fromtimestamp(record.created_at, UTC).isoformat()
        writer.writerow([_cell(row.get(column)) for column in COLUMNS])
    return out.getvalue().encode()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return "'" + text if isinstance(value, str) and text.startswith(_FORMULA_START) else text
