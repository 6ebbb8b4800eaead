"""Queue trigger: usage records parked when Cosmos was unavailable are written here.

Idempotent: a record's id is fixed before it is parked, so a redelivery rewrites the same item.
A failure raises, so the host retries and, after `maxDequeueCount`, moves it to the poison queue.
"""

import azure.functions as func

from shared.blueprints._queue import process
from shared.container import get_container

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name="%USAGE_QUEUE%", connection="AzureWebJobsStorage")
async def store_parked_usage(msg: func.QueueMessage) -> None:
    container = await get_container()
    await process(msg, container.settings.usage_queue, container.usage.store_parked)
