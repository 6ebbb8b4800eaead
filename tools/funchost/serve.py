"""Serving, once the worker is ready: the HTTP listener, queue and timer listeners, shutdown.

Kept apart from __main__ so the host can launch its worker before importing this (uvicorn,
aiohttp, the Storage SDK): the worker imports the app on the other core meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator

import uvicorn

from .channel import WorkerChannel, WorkerError
from .cors import CorsPolicy
from .hostconfig import HostConfig, HostConfigError
from .http import HttpProxy, build_routes
from .pipeline import host_pipeline
from .queues import DRAIN_SECONDS, QueueListener
from .timers import TimerListener

Listener = QueueListener | TimerListener

log = logging.getLogger("funchost")
RESTART_LIMIT = 5  # new workers within RESTART_WINDOW_SECONDS before the host gives up
RESTART_WINDOW_SECONDS = 60.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: it would re-raise the signal on exit (exit code != 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _run_http(server: _Server) -> None:
    with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot start (port in use); it logged why
        await server.serve()


async def _supervise(channel: WorkerChannel) -> None:
    """Start a new worker whenever one dies, as Azure's host does; return (so the host stops) when
    one cannot start, or after RESTART_LIMIT restarts within a minute. Invocations in the dead
    worker failed: their messages come back after visibilityTimeout, HTTP callers got errors."""
    recent: list[float] = []
    while True:
        code = await channel.wait_closed()
        now = time.monotonic()
        recent = [t for t in recent if now - t < RESTART_WINDOW_SECONDS] + [now]
        if len(recent) > RESTART_LIMIT:
            log.error(
                "The worker exited (code %s), %d times within a minute: stopping the host", code, len(recent)
            )
            return
        log.error("The worker process exited (code %s): starting a new one", code)
        try:
            await channel.restart()
        except (WorkerError, HostConfigError) as exc:
            log.error("A new worker could not start: %s", exc)
            return
        log.info("A new worker is ready (pid %s; HttpUri %s)", channel.pid, channel.http_uri)


async def _serve(server: _Server, listeners: list[Listener], channel: WorkerChannel) -> int:
    """Run HTTP, queue and timer listeners (and a new worker whenever one dies) until a signal;
    then stop, drain, stop the worker, and return the exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.create_task(stop.wait())
    supervisor = asyncio.create_task(_supervise(channel))
    server_task = asyncio.create_task(_run_http(server))
    tasks = [asyncio.create_task(listener.run()) for listener in listeners]
    await asyncio.wait([stopper, supervisor, server_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        log.info("Stopping: no new work; waiting up to %.0fs for in-flight invocations", DRAIN_SECONDS)
    supervisor.cancel()  # a worker that dies while the host drains is not replaced
    for listener in listeners:
        listener.stop()
    server.should_exit = True
    results = await asyncio.gather(server_task, *tasks, return_exceptions=True)
    await channel.stop(DRAIN_SECONDS)
    stopper.cancel()
    for result in results:
        if isinstance(result, BaseException):
            log.error("Host component failed", exc_info=result)
    clean = stop.is_set() and not any(isinstance(r, BaseException) for r in results)
    return 0 if clean else 1


async def serve(
    args: argparse.Namespace, config: HostConfig, channel: WorkerChannel, cors: CorsPolicy
) -> int:
    """Build the listeners from the ready worker's function metadata and serve until stopped."""
    try:
        routes = build_routes(channel.functions, config.route_prefix)
        queue_listeners, timers = [], []
        for function in channel.functions:
            kind = function.trigger.get("type")
            if kind == "queueTrigger":
                queue_listeners.append(
                    QueueListener.for_function(
                        function, channel, config.queues, config.function_timeout, os.environ
                    )
                )
            elif kind == "timerTrigger":
                timers.append(
                    TimerListener.for_function(function, channel, config.function_timeout, os.environ)
                )
            elif kind != "httpTrigger":
                log.warning("Function '%s': %s is not hosted locally; skipped", function.name, kind)
    except HostConfigError as exc:
        log.error("Cannot start: %s", exc)
        await channel.stop(DRAIN_SECONDS)
        return 2

    _log_startup(
        args=args,
        config=config,
        cors=cors,
        routes=routes,
        queues=queue_listeners,
        timers=timers,
        channel=channel,
    )
    proxy = HttpProxy(routes, channel, config.function_timeout)
    server_config = uvicorn.Config(
        host_pipeline(proxy, config.custom_headers, cors),
        host=args.host,
        port=args.port,
        loop="none",  # the host's loop is already running
        http="auto",
        lifespan="off",
        # The host is the front end: the caller is the socket's peer, never what X-Forwarded-For says.
        proxy_headers=False,
        log_config=None,  # our logging setup: one format for host, access and app lines
        timeout_graceful_shutdown=int(DRAIN_SECONDS),
    )
    try:
        return await _serve(_Server(server_config), [*queue_listeners, *timers], channel)
    finally:
        await proxy.close()


def _log_startup(
    *,
    args: argparse.Namespace,
    config: HostConfig,
    cors: CorsPolicy,
    routes: list,
    queues: list[QueueListener],
    timers: list[TimerListener],
    channel: WorkerChannel,
) -> None:
    q = config.queues
    log.info(
        "Queues: batchSize=%d, newBatchThreshold=%d, maxDequeueCount=%d, visibilityTimeout=%gs, "
        "maxPollingInterval=%gs, messageEncoding=%s; functionTimeout=%s",
        q.batch_size,
        q.new_batch_threshold,
        q.max_dequeue_count,
        q.visibility_timeout,
        q.max_polling_interval,
        q.message_encoding,
        "unbounded" if config.function_timeout is None else f"{config.function_timeout:g}s",
    )
    if cors.origins:
        credentials = "with credentials" if cors.support_credentials else "without credentials"
        log.info("CORS: %s, %s", ", ".join(cors.origins), credentials)
    if config.custom_headers:
        log.info("Custom headers: %s", ", ".join(name for name, _ in config.custom_headers))
    log.info(
        "Worker: pid %s, azure-functions-runtime over gRPC; HttpUri %s",
        channel.pid,
        channel.http_uri or "none",
    )
    log.info("Functions:")
    for route in routes:
        methods = ",".join(sorted(route.methods)) if route.methods else "all methods"
        log.info(
            "    %s: [%s] http://%s:%s%s", route.function.name, methods, args.host, args.port, route.path
        )
    for listener in queues:
        poison = listener.poison_queue_name or "none"
        log.info(
            "    %s: queueTrigger on '%s' (poison: %s)", listener.function.name, listener.queue_name, poison
        )
    for timer in timers:
        log.info(
            "    %s: timerTrigger '%s' (runOnStartup: %s, useMonitor: %s)",
            timer.function.name,
            timer.schedule,
            timer.run_on_startup,
            timer.use_monitor,
        )
