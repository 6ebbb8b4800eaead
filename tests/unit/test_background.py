"""Background work: drain() waits for what is in flight and then returns."""

import asyncio

import pytest

from shared.services.background import Background


async def quick() -> None:
    return None


# The timeout turns the old spin into a failure: a loop that never yields cannot be timed out
# from inside it, only by pytest-timeout's signal.
@pytest.mark.timeout(5)
async def test_drain_returns_when_a_task_has_finished_but_its_done_callback_has_not_run():
    background = Background()
    task = background.spawn(quick(), name="quick")
    await asyncio.sleep(0)  # the task ran to its end in this turn of the loop, just before us
    assert task.done() and len(background) == 1  # its done callback waits for the next turn
    await background.drain()
    assert len(background) == 0


async def test_drain_waits_for_tasks_spawned_while_it_waits():
    background = Background()
    finished: list[str] = []

    async def second() -> None:
        await asyncio.sleep(0.01)
        finished.append("second")

    async def first() -> None:
        await asyncio.sleep(0.01)
        background.spawn(second(), name="second")
        finished.append("first")

    background.spawn(first(), name="first")
    await background.drain()
    assert finished == ["first", "second"] and len(background) == 0
