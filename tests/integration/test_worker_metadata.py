"""What the real worker (azure-functions-runtime, in its own process) indexes from function_app.py:
the functions, routes and bindings the local host, and Azure's, serve from its metadata answer."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from shared.blueprints.openapi_http import document
from tools.funchost.channel import WorkerChannel
from tools.funchost.http import build_routes
from tools.stack import ROOT, Emulators, app_env

# Routes outside the API document: probes, the console, the document itself, the /v1 catch-all.
UNDOCUMENTED = {
    ("GET", "/health"),
    ("GET", "/health/ready"),
    ("GET", "/openapi.json"),
    ("GET", "/console"),
    ("GET", "/console/{path}"),
    ("GET", "/console/api/session"),
    ("POST", "/console/api/session"),
    ("DELETE", "/console/api/session"),
}
CATCH_ALL_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}
QUEUES_AND_TIMERS = {
    ("run_batch", "queueTrigger", "%BATCH_QUEUE%"),
    ("fail_poisoned_batch_work", "queueTrigger", "%BATCH_QUEUE%-poison"),
    ("run_job", "queueTrigger", "%JOBS_QUEUE%"),
    ("record_poisoned_job", "queueTrigger", "%JOBS_QUEUE%-poison"),
    ("store_parked_usage", "queueTrigger", "%USAGE_QUEUE%"),
    ("sweep", "timerTrigger", "%CIRRUS_SWEEP_SCHEDULE%"),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(emulators: Emulators) -> AsyncIterator[WorkerChannel]:
    channel = WorkerChannel(ROOT)
    await channel.start(app_env(emulators, 9))  # the provider port is never called here
    try:
        yield channel
    finally:
        await channel.stop(10)


@pytest.mark.asyncio(loop_scope="module")
async def test_every_function_is_indexed_with_success_and_the_streaming_server(worker: WorkerChannel) -> None:
    assert worker.http_uri and worker.http_uri.startswith("http://127.0.0.1:")
    assert worker.capabilities.get("RequiresRouteParameters") == "true"
    names = [f.name for f in worker.functions]
    assert len(names) == len(set(names)) > 40


@pytest.mark.asyncio(loop_scope="module")
async def test_http_routes_are_the_documented_api_plus_the_probes_console_and_catch_all(
    worker: WorkerChannel,
) -> None:
    served: set[tuple[str, str]] = set()
    for route in build_routes(worker.functions, ""):  # every route compiles in the host too
        trigger = route.function.trigger
        assert trigger["authLevel"] == "ANONYMOUS"  # Cirrus authenticates every request itself
        path = re.sub(r"\{\*(\w+)\}", r"{\1}", "/" + route.template)
        assert route.methods, route.function.name  # every Cirrus function names its methods
        served |= {(method, path) for method in route.methods}
    api = {(m.upper(), path) for path, item in document()["paths"].items() for m in item}
    catch_all = {(m, "/v1/{path}") for m in CATCH_ALL_METHODS}
    assert served == api | UNDOCUMENTED | catch_all


@pytest.mark.asyncio(loop_scope="module")
async def test_queue_and_timer_bindings(worker: WorkerChannel) -> None:
    found = set()
    for function in worker.functions:
        trigger = function.trigger
        if trigger["type"] == "queueTrigger":
            assert trigger["connection"] == "AzureWebJobsStorage" and trigger["name"] == "msg"
            found.add((function.name, "queueTrigger", trigger["queueName"]))
        elif trigger["type"] == "timerTrigger":
            assert (trigger["runOnStartup"], trigger["useMonitor"]) == (False, True)
            found.add((function.name, "timerTrigger", trigger["schedule"]))
    assert found == QUEUES_AND_TIMERS
