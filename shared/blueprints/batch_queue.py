"""Queue triggers of batches: `%BATCH_QUEUE%` runs them (start, chunk, finalize messages) and
`%BATCH_QUEUE%-poison` fails what a message that kept failing stood for, so a batch always ends.

Handlers are idempotent (see `shared/services/batches/`); a failure raises, so the host
retries the message and, after `maxDequeueCount`, moves it to the poison queue.
"""

import azure.functions as func

from shared.blueprints._queue import process
from shared.container import get_container

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name="%BATCH_QUEUE%", connection="AzureWebJobsStorage")
async def run_batch(msg: func.QueueMessage) -> None:
    container = await get_container()
    await process(msg, container.settings.batch_queue, container.batches.handle)


@bp.queue_trigger(arg_name="msg", queue_name="%BATCH_QUEUE%-poison", connection="AzureWebJobsStorage")
async def fail_poisoned_batch_work(msg: func.QueueMessage) -> None:
    container = await get_container()
    queue = f"{container.settings.batch_queue}-poison"
    await process(msg, queue, container.batches.handle_poison, poison=True)
