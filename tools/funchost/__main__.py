"""`python -m tools.funchost`: serve the script root's function_app until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from .functions import index_functions, load_function_app
from .hostconfig import HostConfigError, load_host_config, load_local_settings
from .http import build_routes, create_app
from .queues import DRAIN_SECONDS, QueueListener
from .timers import TimerListener

Listener = QueueListener | TimerListener

log = logging.getLogger("funchost")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: it would re-raise the signal on exit (exit code != 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _run_http(server: _Server) -> None:
    with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot start (port in use); it logged why
        await server.serve()


async def _serve(server: _Server, listeners: list[Listener]) -> int:
    """Run HTTP, queue and timer listeners until a signal; then stop, drain, and return the exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.create_task(stop.wait())
    server_task = asyncio.create_task(_run_http(server))
    tasks = [asyncio.create_task(listener.run()) for listener in listeners]
    await asyncio.wait([stopper, server_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        log.info("Stopping: no new work; waiting up to %.0fs for in-flight invocations", DRAIN_SECONDS)
    for listener in listeners:
        listener.stop()
    server.should_exit = True
    results = await asyncio.gather(server_task, *tasks, return_exceptions=True)
    stopper.cancel()
    for result in results:
        if isinstance(result, BaseException):
            log.error("Host component failed", exc_info=result)
    clean = stop.is_set() and not any(isinstance(r, BaseException) for r in results)
    return 0 if clean else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.funchost", description=__doc__.splitlines()[0])
    parser.add_argument("--script-root", type=Path, default=Path.cwd(), help="folder of function_app.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)  # Core Tools' default
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", stream=sys.stderr)
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every storage request at INFO

    script_root = args.script_root.resolve()
    try:
        load_local_settings(script_root)
        config = load_host_config(script_root)
        os.chdir(script_root)  # the worker's working directory is the script root
        app = load_function_app(script_root)
        indexed = index_functions(app)
        routes = build_routes(indexed.http, config.route_prefix)
        queue_listeners = [
            QueueListener.for_function(f, config.queues, config.function_timeout, os.environ)
            for f in indexed.queues
        ]
        timers = [TimerListener.for_function(f, config.function_timeout, os.environ) for f in indexed.timers]
    except HostConfigError as exc:
        log.error("Cannot start: %s", exc)
        return 2
    except Exception:
        log.exception("Cannot start: loading function_app failed")
        return 1

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
    log.info("Functions:")
    for route in routes:
        methods = ",".join(sorted(route.methods)) if route.methods else "all methods"
        url = f"http://{args.host}:{args.port}{route.variant.path}"
        log.info("    %s: [%s] %s", route.function.name, methods, url)
    for listener in queue_listeners:
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

    server_config = uvicorn.Config(
        create_app(routes, config.function_timeout),
        host=args.host,
        port=args.port,
        # What the Functions worker's HTTP streaming extension runs: uvicorn's defaults, which pick
        # uvloop and httptools when installed (requirements.txt pins both, so Azure runs them too).
        loop="auto",
        http="auto",
        lifespan="off",
        log_config=None,  # our logging setup: one format for host, access and app lines
        timeout_graceful_shutdown=int(DRAIN_SECONDS),
    )
    with asyncio.Runner(loop_factory=server_config.get_loop_factory()) as runner:
        return runner.run(_serve(_Server(server_config), [*queue_listeners, *timers]))


if __name__ == "__main__":
    sys.exit(main())
