"""The host's end of the worker: a FunctionRpc gRPC server on loopback, the worker process, and
the request/response matching on the one `EventStream` between them.

The sequence is the Functions host's: start a gRPC server, launch the worker with its address,
wait for `StartStream`, send `WorkerInitRequest` (the worker indexes the app and, for an app using
the HTTP streaming extension, reports its `HttpUri`), `FunctionsMetadataRequest` (the functions
and their raw bindings: what the host serves comes from this answer), one `FunctionLoadRequest`
per function, then an `InvocationRequest` per trigger event. `RpcLog` messages are the worker's
logging; they are printed with the host's own lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Set before grpc is imported: the host forks its worker while gRPC's threads run, and gRPC's fork
# handlers would only log that they skip themselves.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

import grpc

from . import rpc
from .hostconfig import HostConfigError

log = logging.getLogger("funchost")
worker_log = logging.getLogger("funchost.worker")

REPO_ROOT = Path(__file__).resolve().parents[2]  # so `python -m tools.funchost.worker` imports
GRPC_MAX_MESSAGE = 2**31 - 1  # the host's default (int.MaxValue)
START_TIMEOUT = 60.0  # from launch to a worker that has indexed the app

_LEVELS = {
    0: logging.DEBUG,
    1: logging.DEBUG,
    2: logging.INFO,
    3: logging.WARNING,
    4: logging.ERROR,
    5: logging.CRITICAL,
}


class WorkerError(RuntimeError):
    """The worker failed a request, went away, or never started."""


@dataclass(frozen=True)
class FunctionMetadata:
    """One function as the worker indexed it: id, name and its raw bindings (function.json's)."""

    function_id: str
    name: str
    bindings: list[dict[str, Any]]
    message: Any  # the RpcFunctionMetadata, sent back in FunctionLoadRequest

    @property
    def trigger(self) -> dict[str, Any]:
        [trigger] = [b for b in self.bindings if str(b.get("type", "")).lower().endswith("trigger")]
        return trigger


def failure_of(result: Any) -> str | None:
    """A StatusResult's failure as one line (`Type: message`), or None if it succeeded."""
    if result.status == rpc.StatusResult.Success:
        return None
    exc = result.exception
    return f"{exc.type or 'Exception'}: {exc.message}" if exc.message or exc.type else "failed"


async def wait_listening(uri: str, limit: float) -> None:
    """Wait until the worker's HTTP server accepts connections: the runtime reports `HttpUri` as
    soon as it has scheduled the server, before the server listens."""
    url = urlsplit(uri)
    async with asyncio.timeout(limit):
        while True:
            try:
                _, writer = await asyncio.open_connection(url.hostname, url.port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


class _Servicer:
    """FunctionRpc's one method: one stream per worker process (a new worker opens a new one)."""

    def __init__(self, channel: WorkerChannel) -> None:
        self.channel = channel

    async def EventStream(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        outgoing = self.channel._outgoing  # this worker's: a restart makes a new queue
        reader = asyncio.create_task(self.channel._read(request_iterator, self.channel.restarts))
        try:
            while True:
                message = await outgoing.get()
                if message is None:
                    return
                yield message
        finally:
            reader.cancel()


class WorkerChannel:
    """A started worker: send requests, await their responses, watch it end."""

    def __init__(self, script_root: Path) -> None:
        self.script_root = script_root
        self.worker_id = str(uuid.uuid4())
        self.request_id = str(uuid.uuid4())
        self.capabilities: dict[str, str] = {}
        self.functions: list[FunctionMetadata] = []
        self._outgoing: asyncio.Queue[Any] = asyncio.Queue()
        self._started: asyncio.Future[None] | None = None
        self._pending: dict[str, asyncio.Future[Any]] = {}  # by kind, or by invocation id
        self._server: Any = None
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._port = 0
        self._environ: Mapping[str, str] = {}
        self.restarts = 0
        self.closed = asyncio.Event()
        self._ready = asyncio.Event()  # initialised and loaded; cleared while a new worker starts

    @property
    def http_uri(self) -> str | None:
        return self.capabilities.get("HttpUri")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self, environ: Mapping[str, str]) -> None:
        """Launch the worker, initialise it, index and load every function."""
        await self.launch(environ)
        await self.ready()

    async def launch(self, environ: Mapping[str, str]) -> None:
        """Start the gRPC server and the worker process; `ready()` then waits for it. In between,
        the caller may do its own work while the worker imports the app on the other core."""
        options = [
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE),
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE),
        ]
        self._server = grpc.aio.server(options=options)
        rpc.add_FunctionRpcServicer_to_server(_Servicer(self), self._server)
        self._port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        self._environ = environ
        await self._spawn()

    async def restart(self) -> None:
        """After the worker died: a new worker process on the same gRPC server, initialised and
        loaded again, as Azure's host starts a new worker. Function ids are the runtime's, derived
        from the names, so the routes and listeners built from the old metadata still hold."""
        self.restarts += 1
        await self._spawn()
        await self.ready()

    async def _spawn(self) -> None:
        self._ready.clear()
        self._started = asyncio.get_running_loop().create_future()
        self._outgoing = asyncio.Queue()
        self.capabilities = {}
        self.closed.clear()
        env = dict(self._environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tools.funchost.worker",
            "--host",
            "127.0.0.1",
            "--port",
            str(self._port),
            "--workerId",
            self.worker_id,
            "--requestId",
            self.request_id,
            "--grpcMaxMessageLength",
            str(GRPC_MAX_MESSAGE),
            cwd=self.script_root,
            env=env,
        )
        self._watcher = asyncio.create_task(self._watch())

    async def ready(self) -> None:
        """Wait for the launched worker to connect; initialise it, index and load every function."""
        assert self._started is not None and self._watcher is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await asyncio.wait({self._started, self._watcher}, return_when=asyncio.FIRST_COMPLETED)
                if not self._started.done():
                    raise WorkerError("the worker exited before it connected")
                await self._initialise()
        except TimeoutError:
            raise WorkerError(f"the worker did not start within {START_TIMEOUT:.0f}s") from None

    async def _initialise(self) -> None:
        init = rpc.WorkerInitRequest(
            host_version="4.1000.0",
            function_app_directory=str(self.script_root),
            capabilities={
                "RpcHttpBodyOnly": "true",
                "TypedDataCollection": "true",
                "HandlesWorkerTerminateMessage": "true",
            },
            worker_directory=str(REPO_ROOT / "tools" / "funchost"),
        )
        response = await self._request(
            "worker_init", rpc.StreamingMessage(request_id=self.request_id, worker_init_request=init)
        )
        if failure := failure_of(response.result):
            raise HostConfigError(f"the worker could not index the app: {failure}")
        self.capabilities = dict(response.capabilities)
        if self.http_uri:
            await wait_listening(self.http_uri, START_TIMEOUT)
        metadata = await self._request(
            "function_metadata",
            rpc.StreamingMessage(
                request_id=self.request_id,
                functions_metadata_request=rpc.FunctionsMetadataRequest(
                    function_app_directory=str(self.script_root)
                ),
            ),
        )
        if failure := failure_of(metadata.result):
            raise HostConfigError(f"the worker's function metadata failed: {failure}")
        self.functions = [
            FunctionMetadata(m.function_id, m.name, [json.loads(raw) for raw in m.raw_bindings], m)
            for m in metadata.function_metadata_results
        ]
        for function in self.functions:
            load = rpc.FunctionLoadRequest(function_id=function.function_id, metadata=function.message)
            reply = await self._request(
                f"load:{function.function_id}",
                rpc.StreamingMessage(request_id=self.request_id, function_load_request=load),
            )
            if failure := failure_of(reply.result):
                raise HostConfigError(f"function '{function.name}' failed to load: {failure}")
        self._ready.set()

    async def wait_ready(self) -> None:
        """Until the worker is initialised: at once, except while a new worker starts."""
        await self._ready.wait()

    async def invoke(self, request: Any) -> Any:
        """Send an InvocationRequest (once the worker is ready); its InvocationResponse."""
        await self._ready.wait()
        message = rpc.StreamingMessage(request_id=self.request_id, invocation_request=request)
        return await self._request(f"invocation:{request.invocation_id}", message)

    async def _request(self, key: str, message: Any) -> Any:
        if self.closed.is_set():
            raise WorkerError("the worker is not running")
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            self._outgoing.put_nowait(message)
            return await future
        finally:
            self._pending.pop(key, None)

    async def _read(self, messages: AsyncIterator[Any], generation: int) -> None:
        try:
            async for message in messages:
                self._received(message)
        except (grpc.RpcError, asyncio.CancelledError):
            pass
        finally:
            if generation == self.restarts:  # not a dead worker's stream ending after a restart
                self._fail_pending("the worker's stream ended")

    def _received(self, message: Any) -> None:
        kind = message.WhichOneof("content")
        if kind == "rpc_log":
            self._log(message.rpc_log)
            return
        if kind == "start_stream":
            if self._started is not None and not self._started.done():
                self._started.set_result(None)
            return
        key = {
            "worker_init_response": "worker_init",
            "function_metadata_response": "function_metadata",
        }.get(kind or "")
        if kind == "function_load_response":
            key = f"load:{message.function_load_response.function_id}"
        elif kind == "invocation_response":
            key = f"invocation:{message.invocation_response.invocation_id}"
        future = self._pending.get(key or "")
        if future is not None and not future.done():
            future.set_result(getattr(message, kind or ""))
        elif kind not in ("worker_status_response",):
            log.debug("Unexpected %s from the worker", kind)

    @staticmethod
    def _log(entry: Any) -> None:
        level = _LEVELS.get(entry.level, logging.INFO)
        worker_log.log(level, "%s", entry.message)

    def _fail_pending(self, why: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerError(why))

    async def _watch(self) -> None:
        assert self._process is not None
        code = await self._process.wait()
        self.closed.set()
        self._fail_pending(f"the worker exited with code {code}")
        self._outgoing.put_nowait(None)

    async def wait_closed(self) -> int:
        """Wait for the worker to exit; its exit code."""
        await self.closed.wait()
        assert self._process is not None
        return self._process.returncode or 0

    async def stop(self, grace: float) -> None:
        """Ask the worker to end (SIGTERM), kill it after `grace` seconds, stop the gRPC server."""
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        self._outgoing.put_nowait(None)
        if self._server is not None:
            await self._server.stop(1)
