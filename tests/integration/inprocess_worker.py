"""azure-functions-runtime in the test's own process, behind the local host's channel interface.

The trace tests need the function code in this process, where an in-memory exporter sees its
spans. This runs the same steps the worker process runs (`WorkerInitRequest`, which indexes the app
and starts the runtime's HTTP streaming server on a free loopback port, then the metadata and load
requests) and answers `invoke` by handing the InvocationRequest to the runtime. The host's own
HttpProxy and `functions.invoke` drive it, so requests take the same path as through the worker
process, over real HTTP to the runtime's server, minus the gRPC hop.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import azure_functions_runtime as runtime

from tools.funchost import rpc
from tools.funchost.channel import FunctionMetadata, wait_listening
from tools.funchost.worker import WorkerRequest


class InProcessWorker:
    """Starts once per test: each start indexes a freshly imported function_app."""

    def __init__(self, script_root: Path) -> None:
        self.script_root = script_root
        self.capabilities: dict[str, str] = {}
        self.functions: list[FunctionMetadata] = []

    @property
    def http_uri(self) -> str | None:
        return self.capabilities.get("HttpUri")

    async def start(self) -> None:
        root = str(self.script_root)
        if root not in sys.path:
            sys.path.insert(0, root)
        if "function_app" in sys.modules:  # a fresh FunctionApp: get_functions() runs once per app
            importlib.reload(sys.modules["function_app"])
        init = rpc.StreamingMessage(worker_init_request=rpc.WorkerInitRequest(function_app_directory=root))
        response = await runtime.worker_init_request(
            WorkerRequest("WorkerInitRequest", init, {"protos": rpc, "host": "127.0.0.1"})
        )
        assert response.result.status == 1, response.result.exception.message
        self.capabilities = dict(response.capabilities)
        assert self.http_uri is not None
        await wait_listening(self.http_uri, 30)
        metadata = await runtime.functions_metadata_request(
            WorkerRequest("WorkerMetadataRequest", rpc.StreamingMessage(functions_metadata_request={}))
        )
        for m in metadata.function_metadata_results:
            self.functions.append(
                FunctionMetadata(m.function_id, m.name, [json.loads(b) for b in m.raw_bindings], m)
            )
            load = rpc.StreamingMessage(
                function_load_request=rpc.FunctionLoadRequest(function_id=m.function_id)
            )
            await runtime.function_load_request(WorkerRequest("FunctionLoadRequest", load))

    async def wait_ready(self) -> None:
        """Ready once started (this worker never dies and restarts)."""

    def function(self, name: str) -> FunctionMetadata:
        [found] = [f for f in self.functions if f.name == name]
        return found

    async def invoke(self, request: Any) -> Any:
        message = rpc.StreamingMessage(invocation_request=request)
        return await runtime.invocation_request(WorkerRequest("FunctionInvocationRequest", message))
