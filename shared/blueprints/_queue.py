"""What every queue function shares: the message parsed, a CONSUMER span joined to the trace the
message carries, and the queue metrics (age, processing time, poison count)."""

import json
from collections.abc import Awaitable, Callable
from typing import Any

import azure.functions as func

from shared.container import configure_telemetry
from shared.logs import bind_request_id
from shared.observability import consuming


async def process(
    msg: func.QueueMessage, queue: str, handle: Callable[[Any], Awaitable[None]], *, poison: bool = False
) -> None:
    """Run `handle` on the message's JSON (None if it is not JSON) inside the message's span."""
    configure_telemetry()  # before the first span, or it is never exported
    try:
        body: Any = json.loads(msg.get_body())
    except ValueError:
        body = None
    carrier = body if isinstance(body, dict) else None
    with (
        consuming(
            queue,
            carrier,
            message_id=msg.id,
            dequeue_count=msg.dequeue_count,
            inserted=msg.insertion_time,
            poison=poison,
        ),
        bind_request_id(msg.id),
    ):
        if body is None and not poison:
            raise ValueError("the message is not JSON")  # retried, then poisoned
        await handle(body)
