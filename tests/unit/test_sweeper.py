"""The sweeper runs every sweep once per tick; one that fails does not stop the others."""

from shared.services.sweeper import Sweeper


async def test_each_sweep_runs_with_the_same_now_and_a_failure_stays_its_own():
    seen = []

    async def batches(now):
        seen.append(("batches", now))
        raise ConnectionError("cosmos unreachable")

    async def jobs(now):
        seen.append(("jobs", now))
        return 2

    outcome = await Sweeper(batches=batches, jobs=jobs).run(now=1234.0)
    assert seen == [("batches", 1234.0), ("jobs", 1234.0)]
    assert outcome == {"batches": "error", "jobs": 2}
