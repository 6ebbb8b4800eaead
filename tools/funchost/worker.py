"""The worker process: `azure-functions-runtime` behind the FunctionRpc gRPC stream, as in Azure.

For Python 3.13 and later, Azure starts a small "proxy worker" with the Functions host's address
(`--host --port --workerId --requestId --grpcMaxMessageLength`); it opens the host's bidirectional
`FunctionRpc.EventStream`, says `StartStream`, and hands every request to the runtime library
pinned in the app's requirements.txt (`azure_functions_runtime`): `worker_init_request`,
`functions_metadata_request`, `function_load_request`, `invocation_request`. The proxy worker is
not published on PyPI, so this module is its stand-in and does no more than that hand-over; the
indexing, binding conversion, invocation and the HTTP streaming server are the runtime's own code.

Like the proxy worker: uvloop is the event loop; gRPC reads and writes run on a thread of their
own (the sync grpc API), each request is handled as a task on the loop, and once the stream is up
every log record (the app's and the runtime's) goes to the host as an `RpcLog`, not to the
console. `WorkerStatusRequest` is answered here. Anything else is logged and ignored.

Run by the host: `python -m tools.funchost.worker --host 127.0.0.1 --port N --workerId W
--requestId R --grpcMaxMessageLength L`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import logging
import queue
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import azure_functions_runtime
import grpc
import uvloop

from . import rpc

log = logging.getLogger("funchost.worker")

CONNECT_TIMEOUT = 5.0  # the proxy worker's
# Loggers whose records are the system's (the runtime's, the worker's), not the app's.
_SYSTEM_LOGGERS = ("azure_functions_worker", "azure_functions_runtime", "funchost")
_STOP = object()
# The invocation a task serves (set in its own context), so its log records name it.
_INVOCATION: contextvars.ContextVar[str] = contextvars.ContextVar("funchost_invocation_id")


@dataclass
class WorkerRequest:
    """What the runtime's handlers take: the StreamingMessage and, for init, `protos` and `host`."""

    name: str
    request: Any
    properties: dict[str, Any] | None = None


def _level(levelno: int) -> Any:
    levels = rpc.RpcLog
    if levelno >= logging.CRITICAL:
        return levels.Critical
    if levelno >= logging.ERROR:
        return levels.Error
    if levelno >= logging.WARNING:
        return levels.Warning
    if levelno >= logging.INFO:
        return levels.Information
    return levels.Debug


class _RpcLogHandler(logging.Handler):
    """Every record to the host as an RpcLog, with the invocation it belongs to when known."""

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:
            self.handleError(record)
            return
        system = record.name.startswith(_SYSTEM_LOGGERS)
        category = rpc.RpcLog.RpcLogCategory.Value("System" if system else "User")
        entry = rpc.RpcLog(level=_level(record.levelno), message=message, category=record.name)
        entry.log_category = category
        invocation_id = _invocation_id()
        if invocation_id:
            entry.invocation_id = invocation_id
        self.worker.send(rpc.StreamingMessage(request_id=self.worker.request_id, rpc_log=entry))


def _invocation_id() -> str | None:
    return _INVOCATION.get(None)


class Worker:
    """One worker: the gRPC stream to the host and the runtime library behind it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, args: argparse.Namespace) -> None:
        self.loop = loop
        self.host = args.host
        self.port = args.port
        self.worker_id = args.worker_id
        self.request_id = args.request_id
        self.max_message = args.grpc_max_msg_len
        self._outgoing: queue.Queue[Any] = queue.Queue()
        self._closed = loop.create_future()
        self._runtime: ModuleType | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, message: Any) -> None:
        self._outgoing.put_nowait(message)

    async def run(self) -> None:
        connected = self.loop.create_future()
        thread = threading.Thread(target=self._grpc_thread, args=(connected,), name="grpc", daemon=True)
        thread.start()
        await connected
        self.send(
            rpc.StreamingMessage(
                request_id=self.request_id, start_stream=rpc.StartStream(worker_id=self.worker_id)
            )
        )
        root = logging.getLogger()
        for handler in list(root.handlers):  # the console is the host's from now on
            root.removeHandler(handler)
        root.addHandler(_RpcLogHandler(self))
        root.setLevel(logging.INFO)
        try:
            await self._closed
        finally:
            self.send(_STOP)

    def _grpc_thread(self, connected: asyncio.Future[None]) -> None:
        options = []
        if self.max_message:
            options = [
                ("grpc.max_receive_message_length", self.max_message),
                ("grpc.max_send_message_length", self.max_message),
            ]
        channel = grpc.insecure_channel(f"{self.host}:{self.port}", options)
        try:
            grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT)
        except Exception as exc:
            self.loop.call_soon_threadsafe(connected.set_exception, exc)
            return
        self.loop.call_soon_threadsafe(connected.set_result, None)

        def outgoing() -> Iterator[Any]:
            while (message := self._outgoing.get()) is not _STOP:
                yield message

        stream = rpc.FunctionRpcStub(channel).EventStream(outgoing())
        try:
            for message in stream:
                self.loop.call_soon_threadsafe(self._spawn, message)
        except grpc.RpcError:
            pass  # the host went away
        finally:
            self.loop.call_soon_threadsafe(self._close)

    def _close(self) -> None:
        if not self._closed.done():
            self._closed.set_result(None)

    def _spawn(self, message: Any) -> None:
        task = self.loop.create_task(self._dispatch(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, message: Any) -> None:
        kind = message.WhichOneof("content")
        try:
            reply = await self._handle(kind, message)
        except Exception:
            log.exception("Worker failed handling %s", kind)
            return
        if reply is not None:
            self.send(reply)

    async def _handle(self, kind: str | None, message: Any) -> Any:  # noqa: PLR0911 - one per message kind
        request_id = self.request_id
        if kind == "worker_init_request":
            app_directory = message.worker_init_request.function_app_directory
            if app_directory and app_directory not in sys.path:  # the proxy worker's: the app comes first
                sys.path.insert(0, app_directory)
            runtime = self._load_runtime()
            with contextlib.suppress(AttributeError):
                runtime.start_threadpool_executor()
            request = WorkerRequest("WorkerInitRequest", message, {"protos": rpc, "host": self.host})
            response = await runtime.worker_init_request(request)
            return rpc.StreamingMessage(request_id=request_id, worker_init_response=response)
        if kind == "worker_status_request":
            return rpc.StreamingMessage(
                request_id=message.request_id, worker_status_response=rpc.WorkerStatusResponse()
            )
        if self._runtime is None:
            log.error("Received %s before WorkerInitRequest", kind)
            return None
        runtime = self._runtime
        if kind == "functions_metadata_request":
            response = await runtime.functions_metadata_request(
                WorkerRequest("WorkerMetadataRequest", message)
            )
            return rpc.StreamingMessage(request_id=message.request_id, function_metadata_response=response)
        if kind == "function_load_request":
            response = await runtime.function_load_request(WorkerRequest("FunctionLoadRequest", message))
            return rpc.StreamingMessage(request_id=request_id, function_load_response=response)
        if kind == "invocation_request":
            invocation_id = message.invocation_request.invocation_id
            _INVOCATION.set(invocation_id)  # this task's context: its logs name the invocation
            response = await runtime.invocation_request(WorkerRequest("FunctionInvocationRequest", message))
            return rpc.StreamingMessage(request_id=request_id, invocation_response=response)
        log.warning("Ignoring StreamingMessage %s", kind)
        return None

    def _load_runtime(self) -> ModuleType:
        if self._runtime is None:
            self._runtime = azure_functions_runtime
        return self._runtime


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.funchost.worker", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workerId", dest="worker_id", required=True)
    parser.add_argument("--requestId", dest="request_id", required=True)
    parser.add_argument("--grpcMaxMessageLength", dest="grpc_max_msg_len", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="[worker] %(message)s", stream=sys.stderr)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # the proxy worker's loop

    async def run() -> None:
        await Worker(asyncio.get_running_loop(), args).run()

    try:
        asyncio.run(run())
    except grpc.FutureTimeoutError:
        log.error("Could not reach the host at %s:%s", args.host, args.port)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
