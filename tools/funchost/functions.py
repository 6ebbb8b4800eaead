"""Invoking a function in the worker: one InvocationRequest, its outcome, the host's log line."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from . import rpc
from .channel import FunctionMetadata, WorkerChannel, WorkerError, failure_of

log = logging.getLogger("funchost")


class InvocationFailed(Exception):
    """The function raised, timed out, or the worker went away; the message says which."""


def typed(value: Any) -> Any:
    """A trigger metadata value as the host sends it: strings as string, the rest as JSON."""
    if isinstance(value, str):
        return rpc.TypedData(string=value)
    if isinstance(value, datetime):
        return rpc.TypedData(json=json.dumps(value.astimezone(UTC).isoformat()))
    return rpc.TypedData(json=json.dumps(value))


def sys_metadata(function: FunctionMetadata) -> Any:
    """The `sys` entry every trigger's metadata carries."""
    now = datetime.now(UTC).isoformat()
    return typed_json({"MethodName": function.name, "UtcNow": now, "RandGuid": str(uuid.uuid4())})


def typed_json(value: Any) -> Any:
    return rpc.TypedData(json=json.dumps(value))


def new_traceparent() -> str:
    """A W3C traceparent for the host's own activity around an invocation."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


async def run(channel: WorkerChannel, name: str, request: Any, time_limit: float | None) -> str | None:
    """Send the InvocationRequest and log its end as the host does; the failure, or None.

    On a timeout the invocation is reported failed; the worker's call goes on (Azure's host would
    restart the worker; the local host leaves the other invocations in it running).
    """
    started = time.monotonic()
    try:
        async with asyncio.timeout(time_limit):
            response = await channel.invoke(request)
        failure = failure_of(response.result)
    except TimeoutError:
        failure = f"Timeout value of {time_limit:g}s was exceeded by function"
    except WorkerError as exc:
        failure = str(exc)
    log_executed(name, request.invocation_id, started, failure)
    return failure


async def invoke(
    channel: WorkerChannel,
    function: FunctionMetadata,
    data: Any,
    metadata: Mapping[str, Any],
    time_limit: float | None,
) -> None:
    """Invoke a queue or timer function with its trigger's TypedData and metadata; raise
    InvocationFailed on failure."""
    request = rpc.InvocationRequest(
        invocation_id=str(uuid.uuid4()),
        function_id=function.function_id,
        input_data=[rpc.ParameterBinding(name=function.trigger["name"], data=data)],
        trigger_metadata={"sys": sys_metadata(function), **metadata},
        trace_context=rpc.RpcTraceContext(trace_parent=new_traceparent()),
    )
    failure = await run(channel, function.name, request, time_limit)
    if failure is not None:
        raise InvocationFailed(failure)


def log_executed(name: str, invocation_id: str, started: float, failure: str | None) -> None:
    """The line Core Tools prints after each invocation."""
    ms = round((time.monotonic() - started) * 1000)
    if failure is None:
        log.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", name, invocation_id, ms)
    else:
        log.error(
            "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms) %s", name, invocation_id, ms, failure
        )
