"""The batch runner on in-memory stores: lost messages, failing saves, failing requests, key
changes while a chunk runs, long input lines and bounded finalize memory (issue 13)."""

from __future__ import annotations

import pytest

from tests.unit.batch_helpers import BatchWorld, FlakyQueueStore, StoreDown, ids


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
