"""Test app for tools.funchost: the function shapes the host must serve, recording what happened.

Events go as JSON lines to the file named by FUNCHOST_TEST_RECORD. A "gate" is a named flag that
handlers wait on until the test opens it over HTTP, so tests observe states instead of timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import azure.functions as func
from azurefunctions.extensions.http.fastapi import (
    JSONResponse,
    PlainTextResponse,
    Request,
    Response,
    StreamingResponse,
)

_record_lock = threading.Lock()
GATES: dict[str, asyncio.Event] = {}
WAITING: dict[str, int] = {}


def record(**event: Any) -> None:
    with _record_lock, open(os.environ["FUNCHOST_TEST_RECORD"], "a", encoding="utf-8") as file:
        file.write(json.dumps(event) + "\n")


def _gate(name: str) -> asyncio.Event:
    return GATES.setdefault(name, asyncio.Event())


async def wait_gate(name: str, limit: float = 30.0) -> None:
    """Wait until the test opens the gate (bounded, so a failing test cannot hang the host)."""
    WAITING[name] = WAITING.get(name, 0) + 1
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(_gate(name).wait(), limit)
    WAITING[name] -= 1


def logged(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """An async decorator as apps write them."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        record(event="wrapped", name=fn.__name__)
        return await fn(*args, **kwargs)

    return wrapper


bp = func.Blueprint()


@bp.route(route="health", methods=["GET"])
async def health(req: Request) -> Response:
    return PlainTextResponse("ok")


# Registered before the literal route on purpose: precedence must not depend on order.
@bp.route(route="items/{id}", methods=["GET"])
async def item(req: Request) -> Response:
    return JSONResponse({"route": "param", "id": req.path_params["id"]})


@bp.route(route="items/special", methods=["GET"])
async def item_special(req: Request) -> Response:
    return JSONResponse({"route": "literal"})


@bp.route(route="files/{*rest}", methods=["GET"])
async def files(req: Request) -> Response:
    return JSONResponse({"rest": req.path_params.get("rest")})


@bp.route(route="any")  # every method
async def any_method(req: Request) -> Response:
    return JSONResponse({"method": req.method})


@bp.route(route="echo", methods=["POST"])
async def echo(req: Request) -> Response:
    body = await req.body()
    payload = {
        "query": dict(req.query_params),
        "body": body.decode(),
        "content_type": req.headers["content-type"],
    }
    if "x-forwarded-for" in req.headers:
        payload["forwarded_for"] = req.headers["x-forwarded-for"]
    return JSONResponse(payload)


@bp.route(route="boom", methods=["GET"])
async def boom(req: Request) -> Response:
    raise RuntimeError("planned failure")


@bp.route(route="sync", methods=["GET"])
def sync_handler(req: Request) -> Response:
    return PlainTextResponse(f"sync on {threading.current_thread().name}")


@bp.route(route="wrapped", methods=["GET"])
@logged
async def wrapped(req: Request) -> Response:
    return PlainTextResponse("wrapped")


@bp.route(route="stream/{gate}", methods=["GET"])
async def stream(req: Request) -> StreamingResponse:
    gate = req.path_params["gate"]

    async def chunks() -> AsyncIterator[str]:
        yield "chunk-1\n"
        await wait_gate(gate)
        yield "chunk-2\n"

    return StreamingResponse(chunks(), media_type="text/plain")


@bp.route(route="endless/{name}", methods=["GET"])
async def endless(req: Request) -> StreamingResponse:
    """Streams until the caller goes away, then records that the handler saw it."""
    name = req.path_params["name"]

    async def chunks() -> AsyncIterator[str]:
        try:
            while True:
                yield "tick\n"
                await asyncio.sleep(0.05)
        finally:
            record(event="disconnected", name=name)

    return StreamingResponse(chunks(), media_type="text/event-stream")


@bp.route(route="cut", methods=["GET"])
async def cut(req: Request) -> StreamingResponse:
    """Fails mid-stream, after the status and the first chunk are sent."""

    async def chunks() -> AsyncIterator[str]:
        yield "partial\n"
        raise RuntimeError("planned failure mid-stream")

    return StreamingResponse(chunks(), media_type="text/plain")


@bp.route(route="gates/{name}", methods=["GET", "POST"])
async def gates(req: Request) -> Response:
    name = req.path_params["name"]
    if req.method == "POST":
        _gate(name).set()
    return JSONResponse({"open": _gate(name).is_set(), "waiting": WAITING.get(name, 0)})


@bp.queue_trigger(arg_name="msg", queue_name="%FUNCHOST_BASIC_QUEUE%", connection="AzureWebJobsStorage")
async def basic(msg: func.QueueMessage) -> None:
    """Fails while dequeue_count <= the message's fail_times."""
    body = json.loads(msg.get_body())
    record(
        event="basic",
        id=body["id"],
        dequeue_count=msg.dequeue_count,
        body=msg.get_body().decode(),
        message_id=msg.id,
        pop_receipt=msg.pop_receipt,
        times=[str(t) for t in (msg.insertion_time, msg.expiration_time, msg.time_next_visible)],
    )
    if msg.dequeue_count <= body.get("fail_times", 0):
        raise RuntimeError(f"planned failure on attempt {msg.dequeue_count}")


@bp.queue_trigger(arg_name="msg", queue_name="%FUNCHOST_SLOW_QUEUE%", connection="AzureWebJobsStorage")
async def slow(msg: func.QueueMessage) -> None:
    """Runs until its gate opens (or for `sleep` seconds)."""
    body = json.loads(msg.get_body())
    record(event="start", id=body["id"])
    if "gate" in body:
        await wait_gate(body["gate"])
    else:
        await asyncio.sleep(body["sleep"])
    record(event="end", id=body["id"])


@bp.queue_trigger(arg_name="msg", queue_name="%FUNCHOST_FAILING_QUEUE%", connection="AzureWebJobsStorage")
async def always_fails(msg: func.QueueMessage) -> None:
    """Fails every time, so each message ends in the poison queue after maxDequeueCount attempts."""
    body = json.loads(msg.get_body())
    record(event="always_fails", id=body["id"], dequeue_count=msg.dequeue_count)
    raise RuntimeError(f"planned failure on attempt {msg.dequeue_count}")


@bp.queue_trigger(
    arg_name="msg", queue_name="%FUNCHOST_FAILING_QUEUE%-poison", connection="AzureWebJobsStorage"
)
async def poisoned(msg: func.QueueMessage) -> None:
    """Consumes always_fails' poison queue; fails too when the message says `poison_fails`."""
    body = json.loads(msg.get_body())
    record(event="poisoned", id=body["id"], dequeue_count=msg.dequeue_count, body=msg.get_body().decode())
    if body.get("poison_fails"):
        raise RuntimeError("planned failure in the poison queue")


@bp.timer_trigger(arg_name="timer", schedule="%FUNCHOST_TICK_SCHEDULE%", use_monitor=False)
async def tick(timer: func.TimerRequest) -> None:
    """Fires on the schedule the test sets (every second), without a monitor."""
    record(event="tick", past_due=timer.past_due)


@bp.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=True, use_monitor=False)
async def on_startup(timer: func.TimerRequest) -> None:
    """Once a year on schedule, and once when the host starts."""
    record(event="on_startup", past_due=timer.past_due)


@bp.timer_trigger(arg_name="timer", schedule="0 0 * * * *")  # hourly: monitored by default
async def monitored(timer: func.TimerRequest) -> None:
    """Runs at once with past_due when the monitor's status says an occurrence was missed."""
    record(event="monitored", past_due=timer.past_due, next=timer.schedule_status.get("Next"))


app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_blueprint(bp)
