"""The batch runner on in-memory stores: lost messages, failing saves, failing requests, key
changes while a chunk runs, long input lines and bounded finalize memory (issue 13)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tracemalloc
from collections.abc import Awaitable, Callable

import pytest

from shared.errors import AuthenticationError, ServiceUnavailableError
from shared.services.auth import MASTER, Principal
from shared.services.batches import BatchTimings
from shared.services.batches.lines import numbered_lines
from shared.services.owners import KeyOwners
from tests.unit.batch_helpers import (
    BatchWorld,
    BlockBlobStore,
    FlakyBlobStore,
    FlakyQueueStore,
    Gateway,
    SinkBlobStore,
    StoreDown,
    chat_line,
    ids,
    unavailable,
)


async def test_a_batch_runs_to_completed_with_each_request_once():
    world = BatchWorld()
    batch_id = await world.submit(12)
    await world.run_all()
    batch, output, errors = await world.outputs(batch_id)
    assert batch["status"] == "completed"
    assert ids(output) == sorted(f"r{i}" for i in range(12)) and errors == []
    assert batch["request_counts"] == {"total": 12, "completed": 12, "failed": 0}
    assert batch["usage"]["input_tokens"] == 12 and batch["usage"]["output_tokens"] == 24


# --- defect 1: a lost finalize message ------------------------------------------------------


async def test_a_finalize_message_that_failed_to_send_is_sent_again_by_the_redelivered_chunk():
    world = BatchWorld(queues=FlakyQueueStore("finalize", failures=1))
    batch_id = await world.submit(3)
    (start,) = world.take()
    await world.service.handle(start)
    (chunk,) = world.take()
    with pytest.raises(StoreDown):  # the chunk is done, but its finalize message never left
        await world.service.handle(chunk)
    assert (await world.batch(batch_id))["status"] == "finalizing"
    assert world.queued() == []
    await world.service.handle(chunk)  # so the host delivers the chunk again
    assert world.queued() == ["finalize"]
    assert len(world.gateway.calls) == 3  # and the redelivery asked nothing again
    (finalize,) = world.take()
    await world.service.handle(finalize)
    await world.service.handle(finalize)  # finalize stays idempotent
    batch, output, errors = await world.outputs(batch_id)
    assert batch["status"] == "completed" and ids(output) == ["r0", "r1", "r2"] and errors == []


# --- defect 5: a key that cannot be read is not a revoked key ------------------------------


async def test_a_key_that_cannot_be_read_fails_the_message_and_no_request():
    down = [False]

    async def owner(key_id: str) -> Principal:
        if down[0]:
            raise unavailable()
        return MASTER

    world = BatchWorld(owner=owner)
    batch_id = await world.submit(3)
    await world.service.handle(world.take()[0])
    (chunk,) = world.take()
    down[0] = True  # Cosmos cannot be reached while the chunk looks up its key
    with pytest.raises(ServiceUnavailableError):  # so the host retries the message...
        await world.service.handle(chunk)
    assert await world.saved(batch_id) == []  # ...and nothing stands for the requests meanwhile
    batch = await world.batch(batch_id)
    assert batch["status"] == "in_progress" and batch["request_counts"]["failed"] == 0
    down[0] = False
    await world.service.handle(chunk)
    await world.run_all()
    batch, output, errors = await world.outputs(batch_id)
    assert batch["status"] == "completed" and ids(output) == ["r0", "r1", "r2"] and errors == []


# --- defect 6: key changes reach running work ----------------------------------------------


class Keys:
    """One virtual key in a store the test changes; read through KeyOwners on a fake clock."""

    def __init__(self) -> None:
        self.revoked = False
        self.models: frozenset[str] | None = None
        self.now = 0.0
        self.owners = KeyOwners(self.lookup, clock=lambda: self.now)
        self.principal = Principal(key_id="key_abc", is_master=False)

    async def lookup(self, key_id: str) -> Principal:
        if self.revoked:
            raise AuthenticationError("This API key has been revoked.")
        return Principal(key_id=key_id, is_master=False, models=self.models)


async def test_revoking_the_key_stops_a_running_chunk_within_the_owner_cache_ttl():
    keys = Keys()
    seen: list[frozenset[str] | None] = []

    class Watching(Gateway):
        async def __call__(self, endpoint, request, call):
            seen.append(call.principal.models)
            answer = await super().__call__(endpoint, request, call)
            if request.messages[0].content == "r1":
                keys.models = frozenset({"m"})  # a change of the key's models...
                keys.now += 5  # ...seen once the 5 s cache lapses
            if request.messages[0].content == "r2":
                keys.revoked = True
                keys.now += 5
            return answer

    world = BatchWorld(owner=keys.owners.current, gateway=Watching(), concurrency=1)
    batch_id = await world.submit(5, principal=keys.principal)
    await world.run_all()
    batch, output, errors = await world.outputs(batch_id)
    assert seen == [None, None, frozenset({"m"})]  # each request read the key again
    assert ids(output) == ["r0", "r1", "r2"] and ids(errors) == ["r3", "r4"]
    assert {e["response"]["status_code"] for e in errors} == {401}
    assert {e["response"]["body"]["error"]["code"] for e in errors} == {"invalid_api_key"}
    assert batch["status"] == "completed" and world.gateway.calls == ["r0", "r1", "r2"]


# --- defect 4: a failing request task takes its siblings with it ---------------------------


async def test_a_failing_request_cancels_its_siblings_and_what_finished_is_still_saved():
    down = [False]

    async def owner(key_id: str) -> Principal:
        if down[0]:
            raise unavailable()
        return MASTER

    class Failing(Gateway):
        async def __call__(self, endpoint, request, call):
            answer = await super().__call__(endpoint, request, call)
            if request.messages[0].content == "r0":
                down[0] = True  # the next request's key lookup fails
            return answer

    gateway = Failing()
    gateway.hold = {"r1": asyncio.Event(), "r2": asyncio.Event()}  # in flight, never answered
    world = BatchWorld(owner=owner, gateway=gateway, concurrency=3, timings=BatchTimings(flush_s=60))
    batch_id = await world.submit(5)
    await world.service.handle(world.take()[0])
    (chunk,) = world.take()
    with pytest.raises(ServiceUnavailableError):
        await world.service.handle(chunk)
    assert gateway.in_flight == 0  # r1 and r2 were cancelled, not left calling the provider
    await asyncio.sleep(0.05)
    assert gateway.calls == ["r0", "r1", "r2"] and gateway.in_flight == 0
    assert ids(await world.saved(batch_id)) == ["r0"]  # the answer that came back is kept
    down[0] = False
    for event in gateway.hold.values():
        event.set()
    await world.service.handle(chunk)
    await world.run_all()
    batch, output, _ = await world.outputs(batch_id)
    assert batch["status"] == "completed" and ids(output) == [f"r{i}" for i in range(5)]
    assert sorted(gateway.calls) == ["r0", "r1", "r1", "r2", "r2", "r3", "r4"]  # r0 was not asked again


# --- defect 3: saves that fail ---------------------------------------------------------------


class Saving(Gateway):
    """Answers; records which calls started after the first failed save, and can run a step
    (once) before answering a request."""

    def __init__(self, blobs: FlakyBlobStore) -> None:
        super().__init__()
        self.blobs = blobs
        self.after_failure: list[str] = []
        self.waits: dict[str, Callable[[], Awaitable[None]]] = {}

    async def __call__(self, endpoint, request, call):
        text = request.messages[0].content
        if self.blobs.first_failure.is_set():
            self.after_failure.append(text)
        if text in self.waits:
            await self.waits.pop(text)()  # once
        return await super().__call__(endpoint, request, call)


async def test_a_save_that_fails_for_a_moment_is_retried_and_the_chunk_keeps_saving():
    blobs = FlakyBlobStore()
    blobs.failures = 2  # the next two result saves fail, then Blob is back
    gateway = Saving(blobs)
    in_time: list[bool] = []

    async def last() -> None:  # the last request waits for a save after the failures (2 s at most)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(blobs.recovered.wait(), 2)
        in_time.append(blobs.recovered.is_set())

    gateway.waits["r9"] = last
    world = BatchWorld(blobs=blobs, gateway=gateway)
    batch_id = await world.submit(10)
    await world.run_all()
    assert blobs.failed == 2 and in_time == [True]  # the periodic saver outlived the failures
    batch, output, errors = await world.outputs(batch_id)
    assert batch["status"] == "completed" and errors == []
    assert ids(output) == sorted(f"r{i}" for i in range(10))
    assert sorted(gateway.calls) == sorted(f"r{i}" for i in range(10))  # none asked twice


async def test_a_save_that_keeps_failing_stops_new_calls_and_fails_the_message_keeping_what_was_saved():
    blobs = FlakyBlobStore()
    gateway = Saving(blobs)
    gateway.delay = 0.002
    saved_once = asyncio.Event()

    async def outage() -> None:  # Blob goes down once something has been saved
        await blobs.stored.wait()
        blobs.down = True
        saved_once.set()

    gateway.waits["r6"] = outage
    world = BatchWorld(blobs=blobs, gateway=gateway, chunk_size=30)
    batch_id = await world.submit(30)
    await world.service.handle(world.take()[0])
    (chunk,) = world.take()
    with pytest.raises(Exception):  # noqa: B017 - the message fails, whatever the store raised
        await world.service.handle(chunk)
    assert len(gateway.after_failure) <= 2  # no new provider call once saving failed
    assert len(gateway.calls) < 30  # the chunk stopped before its end
    assert saved_once.is_set() and blobs.failed >= 2  # the save was tried again before giving up
    before = {line["custom_id"] for line in await world.saved(batch_id)}
    assert before
    blobs.down = False
    await world.service.handle(chunk)  # delivered again: resumes from what was saved
    await world.run_all()
    batch, output, errors = await world.outputs(batch_id)
    assert batch["status"] == "completed" and errors == []
    assert ids(output) == sorted(f"r{i}" for i in range(30))
    assert all(gateway.calls.count(custom_id) == 1 for custom_id in before)  # saved work is never redone


# --- defect 7: input lines are capped, and validating yields to the event loop --------------


async def test_a_line_over_the_cap_is_skipped_as_it_streams_never_held():
    block = 65536

    async def stream():
        yield b'{"a": 1}\n'
        for _ in range(24 * 1024 * 1024 // block):  # one 24 MiB line
            yield b"x" * block
        yield b'\n{"b": 2}\n{"c": 3}'

    tracemalloc.start()
    try:
        got = [item async for item in numbered_lines(stream(), max_bytes=1024 * 1024)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [(1, '{"a": 1}'), (2, None), (3, '{"b": 2}'), (4, '{"c": 3}')]
    assert peak < 1024 * 1024 + 4 * block  # the cap and a block or so, not the line


async def test_a_batch_with_a_line_over_the_body_cap_fails_naming_that_line():
    world = BatchWorld(blobs=BlockBlobStore(), max_line_bytes=1024 * 1024)
    lines = [chat_line("a"), chat_line("long", "x" * 24 * 1024 * 1024), chat_line("b")]
    batch_id = await world.create(await world.upload([json.dumps(line) for line in lines]))
    (start,) = world.take()
    tracemalloc.start()
    try:
        await world.service.handle(start)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    batch = await world.batch(batch_id)
    assert batch["status"] == "failed"
    (error,) = batch["errors"]["data"]
    assert (error["line"], error["code"]) == (2, "request_too_large")
    assert "1048576 bytes" in error["message"]
    assert peak < 8 * 1024 * 1024  # the 24 MiB line was never held, let alone parsed
    assert world.gateway.calls == []


async def test_validating_a_large_file_lets_other_work_run_on_the_event_loop():
    world = BatchWorld(blobs=BlockBlobStore(), chunk_size=1000)
    batch_id = await world.create(await world.upload([json.dumps(chat_line(f"r{i}")) for i in range(3000)]))
    (start,) = world.take()
    ticks = 0
    done = False

    async def other_work() -> None:  # another request on the same worker, one step at a time
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = ticks
    await world.service.handle(start)
    done = True
    await ticker
    assert (await world.batch(batch_id))["status"] == "in_progress"
    assert ticks - before >= 20  # it had turns all along, not only once validation was over


# --- defect 2: finalize streams its files --------------------------------------------------


async def test_finalize_streams_the_files_never_holding_the_results_in_memory():
    blobs = SinkBlobStore()
    gateway = Gateway()
    gateway.answer_bytes = 8192
    world = BatchWorld(blobs=blobs, gateway=gateway, chunk_size=250, concurrency=50)
    batch_id = await world.submit(2000)
    await world.service.handle(world.take()[0])
    for chunk in world.take("chunk"):
        await world.service.handle(chunk)
    (finalize,) = world.take()
    tracemalloc.start()
    try:
        await world.service.handle(finalize)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    output = blobs.files["output"]
    assert output["lines"] == len(output["ids"]) == 2000 and "errors" not in blobs.files
    assert output["bytes"] > 16 * 1024 * 1024
    assert peak < 4 * 1024 * 1024  # a few results at a time, not the 16 MiB of them
    assert output["largest_piece"] <= 256 * 1024
    batch = await world.batch(batch_id)
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 2000, "completed": 2000, "failed": 0}
    assert batch["usage"]["input_tokens"] == 2000 and batch["usage"]["output_tokens"] == 4000


async def test_finalize_writes_each_custom_id_once_the_first_result_saved_winning():
    world = BatchWorld()
    batch_id = await world.submit(4)
    await world.service.handle(world.take()[0])
    (chunk,) = world.take()
    await world.service.handle(chunk)
    # A second worker held the same message and saved its own results later: r0 failed there,
    # r1 twice; and r3's request never got a result at all.
    later = [
        {"id": "x", "custom_id": "r0", "response": {"status_code": 500, "body": {}}, "error": None},
        {"id": "y", "custom_id": "r1", "response": {"status_code": 200, "body": {}}, "error": None},
    ]
    await world.blobs.put(
        "outputs",
        f"batches/{batch_id}/results/00000/99999999999999999999-late.jsonl",
        "".join(json.dumps(line) + "\n" for line in later).encode(),
    )
    parts = await world.blobs.names("outputs", f"batches/{batch_id}/results/")
    first = parts[0]
    kept = [line for line in world.blobs.blobs[("outputs", first)].splitlines() if b'"r3"' not in line]
    world.blobs.blobs[("outputs", first)] = b"\n".join(kept) + b"\n"
    await world.run_all()
    batch, output, errors = await world.outputs(batch_id)
    assert ids(output) == ["r0", "r1", "r2"] and all(line["id"] != "y" for line in output)
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("r3", "batch_request_failed")]
    assert batch["request_counts"] == {"total": 4, "completed": 3, "failed": 1}


# --- defect 9: what the sweeper relies on ---------------------------------------------------


async def test_a_chunk_waiting_on_a_slow_request_still_shows_its_batch_is_moving():
    gateway = Gateway()
    gateway.hold = {"r0": asyncio.Event()}
    timings = BatchTimings(flush_s=0.01, status_refresh_s=0.0, heartbeat_s=0.02)
    world = BatchWorld(gateway=gateway, timings=timings, concurrency=1)
    batch_id = await world.submit(1)
    await world.service.handle(world.take()[0])
    (chunk,) = world.take()
    running = asyncio.create_task(world.service.handle(chunk))
    await gateway.asked.wait()
    await asyncio.sleep(0.05)  # its first save, of its counts so far, is done
    first = (await world.documents.read("batches", batch_id, batch_id))["updated_at"]
    await asyncio.sleep(0.1)  # nothing new to save all this while
    assert (await world.documents.read("batches", batch_id, batch_id))["updated_at"] > first
    gateway.hold["r0"].set()
    await running
    await world.run_all()
    assert (await world.batch(batch_id))["status"] == "completed"


async def test_a_batch_cancelled_before_its_chunks_were_sent_still_ends():
    world = BatchWorld(queues=FlakyQueueStore("chunk", failures=1))
    batch_id = await world.submit(12)
    (start,) = world.take()
    with pytest.raises(StoreDown):  # chunks written, batch in_progress, but no chunk message sent
        await world.service.handle(start)
    world.take()
    await world.service.cancel(MASTER, batch_id)
    await world.service.handle(start)  # the start message again (or the sweeper's)
    await world.run_all()
    batch, output, errors = await world.outputs(batch_id)
    assert batch["status"] == "cancelled" and output == []
    assert ids(errors) == sorted(f"r{i}" for i in range(12))
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}


async def test_validation_paces_itself_to_half_the_workers_time():
    """After each chunk it wrote, validation rests as long as the chunk took (BACKGROUND_SHARE)."""
    from shared.services.batches.validate import BACKGROUND_SHARE, Pacer

    now, rests = [10.0], []

    async def sleep(seconds: float) -> None:
        rests.append(seconds)
        now[0] += seconds

    pacer = Pacer(BACKGROUND_SHARE, clock=lambda: now[0], sleep=sleep)
    for busy in (0.2, 0.05):
        now[0] += busy  # a chunk's worth of checking and writing
        await pacer.rest()
    assert rests == [pytest.approx(0.2), pytest.approx(0.05)]
