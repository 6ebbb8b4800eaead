"""Usage records: batched into items, durable writes (park and replay), never a lost record."""

import base64
import json
import logging

import pytest

from shared.models.usage import UsageRecord
from shared.services.background import Background
from shared.services.usage import RECORDS_PER_ITEM, UsageService, usage_items
from tests.fakes import InMemoryDocumentStore, InMemoryQueueStore


def record(n=1, key="key-alice", **fields):
    base = dict(
        id=f"usage_{key}_{n}",
        pk=key,
        request_id=f"req_{n}",
        created_at=1_700_000_000 + n * 3600,
        day="2023-11-14",
        key_id=key,
        endpoint="chat.completions",
        model="cirrus-local",
        input_tokens=10,
        output_tokens=5,
        total_tokens=15,
        cost_usd=0.001,
        latency_ms=12.0,
    )
    return UsageRecord(**{**base, **fields})


class FlakyDocuments(InMemoryDocumentStore):
    def __init__(self, failures):
        super().__init__()
        self.failures = failures

    async def upsert(self, container, doc):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("cosmos down")
        return await super().upsert(container, doc)


class DeadQueue(InMemoryQueueStore):
    async def send(self, queue, message, *, delay_seconds=0):
        raise ConnectionError("storage down")


async def no_sleep(_):
    return None


def stored_records(documents):
    return sorted(r["id"] for item in documents.items["usage"].values() for r in item["records"])


def test_items_group_by_key_cap_their_size_and_have_stable_ids():
    records = [record(n) for n in range(RECORDS_PER_ITEM + 5)] + [record(1, key="key-bob")]
    items = usage_items(records)
    assert [(i["pk"], len(i["records"])) for i in items] == [
        ("key-alice", RECORDS_PER_ITEM),
        ("key-alice", 5),
        ("key-bob", 1),
    ]
    assert [i["id"] for i in usage_items(records)] == [i["id"] for i in items]
    assert items[0]["first_at"] == records[0].created_at
    assert len(json.dumps(items[0])) < 40_000  # fits a queue message when parked


async def test_submitted_records_are_flushed_together_in_one_write():
    documents, background = InMemoryDocumentStore(), Background()
    service = UsageService(documents, InMemoryQueueStore(), "q", background, flush_interval=0.01)
    for n in range(5):
        service.submit(record(n))
    assert len(background) == 1  # one flush for the lot
    await background.drain()
    assert len(documents.items["usage"]) == 1
    assert stored_records(documents) == sorted(record(n).id for n in range(5))


async def test_a_failed_write_is_parked_and_replayed_idempotently():
    documents, queues = FlakyDocuments(failures=1), InMemoryQueueStore()
    service = UsageService(documents, queues, "cirrus-usage", Background())
    (item,) = usage_items([record(1), record(2)])
    assert await service.store(item) == "queue"
    assert documents.items["usage"] == {}
    (parked,) = queues.messages["cirrus-usage"]
    message = json.loads(base64.b64decode(parked))
    await service.store_parked(message)
    await service.store_parked(message)  # delivered twice: still one item, two records
    assert list(documents.items["usage"]) == [("key-alice", item["id"])]
    assert stored_records(documents) == [record(1).id, record(2).id]


async def test_when_cosmos_and_the_queue_are_down_it_keeps_trying_then_logs_the_item(caplog):
    (item,) = usage_items([record(1)])
    documents = FlakyDocuments(failures=3)
    service = UsageService(documents, DeadQueue(), "q", Background(), retry_delays=(0, 0, 0), sleep=no_sleep)
    assert await service.store(item) == "cosmos"  # the fourth attempt got through
    hopeless = UsageService(
        FlakyDocuments(failures=99), DeadQueue(), "q", Background(), retry_delays=(0, 0), sleep=no_sleep
    )
    with caplog.at_level(logging.ERROR, logger="cirrus.usage"):
        assert await hopeless.store(item) == "log"
    assert record(1).id in caplog.text


def test_records_without_units_still_read_and_summaries_total_each_unit():
    from shared.models.usage import UsageTotals

    stored = record(1).model_dump(mode="json")
    for field in ("units", "unit"):  # a record written before these fields existed
        stored.pop(field)
    old = UsageRecord.model_validate(stored)
    assert (old.units, old.unit) == (None, None)
    totals = UsageTotals()
    for item in (
        old,
        record(2, endpoint="images.generations", units=2, unit="images", cost_usd=0.08, total_tokens=0),
        record(3, endpoint="images.generations", units=1, unit="images", cost_usd=None, total_tokens=0),
        record(4, endpoint="audio.transcriptions", units=None, unit="seconds", cost_usd=None, total_tokens=0),
        record(5, endpoint="audio.speech", units=17, unit="characters", cost_usd=0.000255, total_tokens=0),
    ):
        totals.add(item)
    assert totals.units == {"images": 3, "characters": 17}  # unknown seconds are not counted as 0
    assert totals.requests == 5 and totals.total_tokens == 15
    assert totals.cost_usd == pytest.approx(0.001 + 0.08 + 0.000255)


class PagedUsage(InMemoryDocumentStore):
    """Usage items handed out one page at a time, counting how many rows are out at once: the
    summary must fold each row in before it asks for more, never load the whole window."""

    def __init__(self, rows):
        super().__init__()
        self.rows = rows
        self.pages = 0

    async def query(self, container, sql, parameters=None, *, pk=None, max_items=None):
        raise AssertionError("a summary must not load every record of its window into a list")

    async def iterate(self, container, sql, parameters=None, *, pk=None):
        for start in range(0, len(self.rows), 100):
            self.pages += 1
            for row in self.rows[start : start + 100]:
                yield row


async def test_a_summary_folds_the_window_page_by_page():
    from shared.services.auth import Principal

    rows = [record(n, model=f"m{n % 3}").model_dump(mode="json") for n in range(1000)]
    documents = PagedUsage(rows)
    service = UsageService(documents, InMemoryQueueStore(), "q", Background())
    summary = await service.summary(Principal(key_id="master", is_master=True), 0, 2e9, "model")
    assert documents.pages == 10
    assert summary.total.requests == 1000 and summary.total.total_tokens == 15_000
    assert [(g.group, g.requests) for g in summary.data] == [("m0", 334), ("m1", 333), ("m2", 333)]


class FilteredUsage(PagedUsage):
    """Rows a page at a time, with the `r.<field> = @f_<field>` filters applied as Cosmos would."""

    async def iterate(self, container, sql, parameters=None, *, pk=None):
        wanted = {k.removeprefix("@f_"): v for k, v in (parameters or {}).items() if k.startswith("@f_")}
        async for row in super().iterate(container, sql, parameters, pk=pk):
            if all(row.get(field) == value for field, value in wanted.items()):
                yield row


async def test_a_series_totals_each_day_and_model_with_errors_and_fallbacks():
    from shared.services.auth import Principal

    rows = [
        record(1, day="2023-11-14", model="a"),
        record(2, day="2023-11-14", model="a", status="rate_limit_exceeded", fallback=True),
        record(3, day="2023-11-14", model="b", cost_usd=None),
        record(4, day="2023-11-15", model="a"),
    ]
    service = UsageService(
        FilteredUsage([r.model_dump(mode="json") for r in rows]), InMemoryQueueStore(), "q", Background()
    )
    master = Principal(key_id="master", is_master=True)
    series = await service.series(master, 0, 2e9, "model")
    assert [(p.day, p.group, p.requests, p.errors, p.fallbacks) for p in series.data] == [
        ("2023-11-14", "a", 2, 1, 1),
        ("2023-11-14", "b", 1, 0, 0),
        ("2023-11-15", "a", 1, 0, 0),
    ]
    assert series.data[0].cost_usd == pytest.approx(0.002) and series.data[1].cost_usd == 0.0
    ungrouped = await service.series(master, 0, 2e9, None)
    assert [(p.day, p.group, p.requests, p.input_tokens) for p in ungrouped.data] == [
        ("2023-11-14", None, 3, 30),
        ("2023-11-15", None, 1, 10),
    ]


async def test_records_come_newest_first_in_pages_that_follow_the_cursor():
    from shared.models.usage import UsageRecordFilter
    from shared.services.auth import Principal

    rows = [record(n, model=f"m{n % 2}").model_dump(mode="json") for n in range(250)]
    documents = FilteredUsage(rows)
    service = UsageService(documents, InMemoryQueueStore(), "q", Background())
    master = Principal(key_id="master", is_master=True)
    seen, after = [], None
    while True:
        page = await service.records_page(
            master, 0, 2e9, UsageRecordFilter(model="m1"), limit=40, after=after
        )
        seen += [r.id for r in page.data]
        if not page.has_more:
            break
        after = page.last_id
    assert seen == [f"usage_key-alice_{n}" for n in range(249, 0, -2)]
    assert documents.pages > 3  # read a page at a time, never as one list


async def test_an_unknown_cursor_is_a_404():
    from shared.errors import NotFoundError
    from shared.models.usage import UsageRecordFilter
    from shared.services.auth import Principal

    service = UsageService(
        FilteredUsage([record(1).model_dump(mode="json")]), InMemoryQueueStore(), "q", Background()
    )
    with pytest.raises(NotFoundError):
        await service.records_page(
            Principal(key_id="master", is_master=True),
            0,
            2e9,
            UsageRecordFilter(),
            limit=5,
            after="usage_nope",
        )


def test_csv_has_a_header_row_and_neutralises_formulas():
    import csv
    import io

    from shared.services.usage_csv import COLUMNS, usage_csv

    body = usage_csv([record(1, session_id='=HYPERLINK("http://x")', model="m,1", fallback=True)])
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert rows[0] == list(COLUMNS) and len(rows) == 2
    row = dict(zip(rows[0], rows[1], strict=True))
    assert row["session_id"] == '\'=HYPERLINK("http://x")'
    assert (row["model"], row["fallback"], row["team_id"]) == ("m,1", "true", "")
    assert row["created_at"] == "2023-11-14T23:13:20+00:00"
