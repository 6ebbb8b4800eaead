"""Queue triggers of batches: `%BATCH_QUEUE%` runs them (start, chunk, finalize messages) and
`%BATCH_QUEUE%-poison` fails what a message that kept failing stood for, so a batch always ends.

Handlers are idempotent (see `shared/services/batches.py`); a failure raises, so the host
retries the message and, after `maxDequeueCount`, moves it to the poison queue.
"""

import json

import azure.functions as func

from shared.container import get_container

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name="%BATCH_QUEUE%", connection="AzureWebJobsStorage")
async def run_batch(msg: func.QueueMessage) -> None:
    container = await get_container()
    await container.batches.handle(json.loads(msg.get_body()))


@bp.queue_trigger(arg_name="msg", queue_name="%BATCH_QUEUE%-poison", connection="AzureWebJobsStorage")
async def fail_poisoned_batch_work(msg: func.QueueMessage) -> None:
    container = await get_container()
    try:
        message = json.loads(msg.get_body())
    except ValueError:
        message = None
    await container.batches.handle_poison(message)
