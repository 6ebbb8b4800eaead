"""Invoking a non-HTTP function in the worker: one InvocationRequest, its outcome, the host's log line."""

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
from .channel import FunctionMetadata, WorkerChannel, WorkerError, describe_failure

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


async def invoke(
    channel: WorkerChannel,
    function: FunctionMetadata,
    data: Any,
    metadata: Mapping[str, Any],
    time_limit: float | None,
) -> None:
    """Invoke the function with its trigger's TypedData and metadata; raise InvocationFailed on failure.

    On a timeout the invocation is reported failed; the worker's call goes on (Azure's host would
    restart the worker; the local host leaves the other invocations in it running).
    """
    invocation_id = str(uuid.uuid4())
    trigger = function.trigger
    request = rpc.InvocationRequest(
        invocation_id=invocation_id,
        function_id=function.function_id,
        input_data=[rpc.ParameterBinding(name=trigger["name"], data=data)],
        trigger_metadata={"sys": sys_metadata(function), **metadata},
        trace_context=rpc.RpcTraceContext(
            trace_parent=f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        ),
    )
    started = time.monotonic()
    failure: str | None = None
    try:
        async with asyncio.timeout(time_limit):
            response = await channel.invoke(request)
        if response.result.status != 1:
            failure = describe_failure(response.result)
    except TimeoutError:
        failure = f"Timeout value of {time_limit:g}s was exceeded by function"
    except WorkerError as exc:
        failure = str(exc)
    log_executed(function.name, invocation_id, started, failure)
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
