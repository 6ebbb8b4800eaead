"""Loading the app's FunctionApp, indexing its functions and calling them as the Python worker does."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.decorators.http import HttpTrigger
from azure.functions.decorators.queue import QueueTrigger
from azure.functions.decorators.timer import TimerTrigger

from .hostconfig import HostConfigError

log = logging.getLogger("funchost")


@dataclass(frozen=True)
class HostedFunction:
    """One indexed function: its name, the user function and its trigger binding."""

    name: str
    fn: Callable[..., Any]
    trigger: Any  # HttpTrigger | QueueTrigger | TimerTrigger


@dataclass(frozen=True)
class IndexedFunctions:
    """The app's functions the local host serves, by trigger."""

    http: list[HostedFunction]
    queues: list[HostedFunction]
    timers: list[HostedFunction]


def load_function_app(script_root: Path) -> func.FunctionRegister:
    """Import `function_app` from the script root and return its FunctionApp (`app` first)."""
    root = str(script_root)
    if sys.path[:1] != [root]:
        sys.path.insert(0, root)
    module = importlib.import_module("function_app")
    named = getattr(module, "app", None)
    if isinstance(named, func.FunctionRegister):
        return named
    apps = [value for value in vars(module).values() if isinstance(value, func.FunctionRegister)]
    if len(apps) != 1:
        raise HostConfigError(f"function_app.py must define exactly one FunctionApp, found {len(apps)}")
    return apps[0]


def index_functions(app: func.FunctionRegister) -> IndexedFunctions:
    """The app's HTTP-, queue- and timer-triggered functions; other triggers are skipped with a warning."""
    indexed = IndexedFunctions([], [], [])
    for function in app.get_functions():
        name, trigger = function.get_function_name(), function.get_trigger()
        if isinstance(trigger, HttpTrigger):
            bucket = indexed.http
        elif isinstance(trigger, QueueTrigger):
            bucket = indexed.queues
        elif isinstance(trigger, TimerTrigger):
            bucket = indexed.timers
        else:
            log.warning("Function '%s': %s is not hosted locally; skipped", name, trigger.get_binding_name())
            continue
        # A parameter the host cannot bind would fail every invocation: refuse at startup instead.
        fn = function.get_user_function()
        extra = [b.name for b in function.get_bindings() if b is not trigger and b.name != "$return"]
        extra += [p for p in _required_parameters(fn) if p != trigger.name and p not in extra]
        if extra:
            raise HostConfigError(f"function '{name}': {extra} cannot be bound by the local host")
        bucket.append(HostedFunction(name, fn, trigger))
    return indexed


def _required_parameters(fn: Callable[..., Any]) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    parameters = inspect.signature(fn).parameters.values()
    return [p.name for p in parameters if p.kind in kinds and p.default is inspect.Parameter.empty]


def _is_async(fn: Callable[..., Any]) -> bool:
    # A sync functools.wraps wrapper around a coroutine function still belongs on the event loop.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(inspect.unwrap(fn))


async def invoke(fn: Callable[..., Any], kwargs: Mapping[str, Any], time_limit: float | None) -> Any:
    """Call a user function (sync ones in the thread pool), await an awaitable result, enforce timeout."""
    deadline = asyncio.timeout(time_limit)
    try:
        async with deadline:
            result = fn(**kwargs) if _is_async(fn) else await asyncio.to_thread(fn, **kwargs)
            if inspect.isawaitable(result):
                result = await result
    except TimeoutError:
        if deadline.expired():  # ours, not a TimeoutError raised by the function itself
            raise TimeoutError(f"Timeout value of {time_limit}s was exceeded by function") from None
        raise
    return result


def new_invocation() -> tuple[uuid.UUID, float]:
    """An invocation id and its start time."""
    return uuid.uuid4(), time.monotonic()


def log_executed(name: str, invocation: tuple[uuid.UUID, float], error: BaseException | None) -> None:
    """The line Core Tools prints after each invocation; the traceback follows on failure."""
    invocation_id, started = invocation
    ms = round((time.monotonic() - started) * 1000)
    if error is None:
        log.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", name, invocation_id, ms)
    else:
        log.error(
            "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms) %s: %s",
            name,
            invocation_id,
            ms,
            type(error).__name__,
            error,
            exc_info=(type(error), error, error.__traceback__),
        )
