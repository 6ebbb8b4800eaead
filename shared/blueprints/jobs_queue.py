"""Queue triggers of jobs: `%JOBS_QUEUE%` runs them (from HTTP or put there by other systems;
the message schema is in README "Queue-submitted jobs") and `%JOBS_QUEUE%-poison` records why a
message could not be run, so none disappears silently.

A message that is not JSON or not the schema raises, so the host retries it and, after
`maxDequeueCount`, moves it to the poison queue.
"""

import azure.functions as func

from shared.blueprints._queue import process
from shared.container import get_container

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name="%JOBS_QUEUE%", connection="AzureWebJobsStorage")
async def run_job(msg: func.QueueMessage) -> None:
    container = await get_container()
    await process(msg, container.settings.jobs_queue, container.jobs.handle)


@bp.queue_trigger(arg_name="msg", queue_name="%JOBS_QUEUE%-poison", connection="AzureWebJobsStorage")
async def record_poisoned_job(msg: func.QueueMessage) -> None:
    container = await get_container()
    await process(msg, f"{container.settings.jobs_queue}-poison", container.jobs.handle_poison, poison=True)
