"""tools.funchost as a subprocess serving tests/integration/funchost_app through the real worker
(azure-functions-runtime in its own process, over gRPC), on real Azurite.

No timing assertions: tests wait for observable states (recorded events, queue contents, gates that
handlers wait on until the test opens them) with a generous timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import azure.functions as func
import httpx
import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessageInConverter
from azure.storage.queue import QueueClient, QueueServiceClient
from azure_functions_runtime.bindings.datumdef import Datum

from tools.funchost import rpc
from tools.funchost.channel import FunctionMetadata, WorkerChannel
from tools.funchost.hostconfig import QueueOptions
from tools.funchost.queues import QueueListener
from tools.stack import LOOPBACK, Emulators, ManagedProcess, free_port, http_ok

APP_DIR = Path(__file__).parent / "funchost_app"
WAIT = 30.0  # generous: conditions normally hold within a second


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll until `condition()` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def b64(payload: object) -> str:
    return base64.b64encode(json.dumps(payload).encode()).decode()


@dataclass
class Host:
    """A running funchost subprocess and what the tests need to observe it."""

    process: ManagedProcess
    base_url: str
    record: Path
    log: Path
    connection_string: str
    basic_queue: str
    slow_queue: str
    failing_queue: str  # always_fails' queue; the function `poisoned` consumes its poison queue

    def events(self, **match: Any) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        events = [json.loads(line) for line in self.record.read_text().splitlines() if line]
        return [e for e in events if all(e.get(k) == v for k, v in match.items())]

    def queue(self, name: str) -> QueueClient:
        return QueueClient.from_connection_string(self.connection_string, name)

    def send(self, queue: str, content: str) -> None:
        with self.queue(queue) as client:
            client.send_message(content)

    def message_count(self, queue: str) -> int:
        """Visible and invisible messages (Azurite counts both, as Azure does)."""
        with self.queue(queue) as client:
            return client.get_queue_properties().approximate_message_count

    def poison_contents(self, queue: str) -> list[str]:
        with self.queue(f"{queue}-poison") as client:
            try:
                return [m.content for m in client.peek_messages(max_messages=32)]
            except ResourceNotFoundError:
                return []

    def wait_empty(self, queue: str) -> None:
        wait_for(lambda: self.message_count(queue) == 0, f"queue {queue} to be empty")

    def queue_exists(self, name: str) -> bool:
        with QueueServiceClient.from_connection_string(self.connection_string) as service:
            return any(q.name == name for q in service.list_queues(name_starts_with=name))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_host(
    emulators: Emulators,
    workdir: Path,
    settings: Mapping[str, str] | None = None,
    options: Sequence[str] = (),
) -> Host:
    """Start funchost on the test app; `settings` are extra app settings (environment variables),
    `options` extra command-line options."""
    suffix = uuid.uuid4().hex[:10]
    basic, slow, failing = f"fh-basic-{suffix}", f"fh-slow-{suffix}", f"fh-failing-{suffix}"
    with QueueServiceClient.from_connection_string(emulators.storage_connection_string) as service:
        for name in (basic, slow, failing):
            service.create_queue(name)  # the app provisions its queues; the host never creates them
    port = free_port()
    base_url = f"http://{LOOPBACK}:{port}"
    record, log = workdir / "record.jsonl", workdir / "funchost.log"
    env = {
        **os.environ,
        "AzureWebJobsStorage": emulators.storage_connection_string,
        "FUNCHOST_TEST_RECORD": str(record),
        "FUNCHOST_BASIC_QUEUE": basic,
        "FUNCHOST_SLOW_QUEUE": slow,
        "FUNCHOST_FAILING_QUEUE": failing,
        "FUNCHOST_TICK_SCHEDULE": "* * * * * *",
        "AzureFunctionsWebHost__hostid": f"fh-{suffix}",
        **(settings or {}),
    }
    argv = [sys.executable, "-m", "tools.funchost", "--script-root", str(APP_DIR), "--host", LOOPBACK]
    argv += options
    process = ManagedProcess(
        "funchost",
        [*argv, "--port", str(port)],
        ready=lambda: http_ok(f"{base_url}/health"),
        env=env,
        log_path=log,
        startup_timeout=WAIT,
    )
    process.start().wait_ready()
    return Host(process, base_url, record, log, emulators.storage_connection_string, basic, slow, failing)


@pytest.fixture(scope="module")
def host(emulators: Emulators, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    running = start_host(emulators, tmp_path_factory.mktemp("funchost"))
    try:
        yield running
    finally:
        running.process.stop()


@pytest.fixture
def client(host: Host) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=host.base_url, timeout=WAIT) as http:
        yield http


# --- HTTP ---------------------------------------------------------------------------------------


def test_literal_route_wins_over_parameter_whatever_the_order(client: httpx.Client) -> None:
    assert client.get("/items/special").json() == {"route": "literal"}
    assert client.get("/items/abc").json() == {"route": "param", "id": "abc"}
    assert client.get("/ITEMS/Special").json() == {"route": "literal"}  # routing is case-insensitive


def test_catch_all_and_every_method(client: httpx.Client) -> None:
    assert client.get("/files/a/b/c.txt").json() == {"rest": "a/b/c.txt"}
    assert client.get("/files").json() == {"rest": None}
    # The host's routing matches an encoded newline too, but the worker's HTTP server (FastAPI's
    # catch-all route, whose `.*` stops at a newline) answers 404 itself, as it would in Azure.
    assert client.get("/files/a%0Ab").status_code == 404
    assert client.delete("/any").json() == {"method": "DELETE"}  # no methods: every method
    assert client.patch("/any/").json() == {"method": "PATCH"}  # a trailing slash is ignored


def test_wrong_method_and_unknown_path_are_empty_404s(client: httpx.Client) -> None:
    for response in (client.get("/echo"), client.post("/items/special"), client.get("/no/such/route")):
        assert response.status_code == 404
        assert response.content == b""


def test_query_string_and_body_reach_the_handler(client: httpx.Client) -> None:
    response = client.post("/echo?a=1&b=two", content=b"hello", headers={"content-type": "text/plain"})
    assert response.json() == {
        "query": {"a": "1", "b": "two"},
        "body": "hello",
        "content_type": "text/plain",
        "forwarded_for": "127.0.0.1",  # the caller's address, as the platform's front end adds it
    }


def test_the_callers_address_is_appended_to_x_forwarded_for(client: httpx.Client) -> None:
    headers = {"content-type": "text/plain", "x-forwarded-for": "203.0.113.9"}  # written by the client
    response = client.post("/echo", content=b"", headers=headers)
    assert response.json()["forwarded_for"] == "203.0.113.9, 127.0.0.1"


def test_function_shapes(client: httpx.Client, host: Host) -> None:
    sync = client.get("/sync")
    assert sync.headers["content-type"].startswith("text/plain")
    assert sync.text.startswith("sync on ") and sync.text != "sync on MainThread"  # thread pool
    assert client.get("/wrapped").text == "wrapped"
    assert host.events(event="wrapped", name="wrapped")


def test_exception_is_a_500_and_the_host_keeps_serving(client: httpx.Client, host: Host) -> None:
    response = client.get("/boom")
    assert response.status_code == 500
    assert b"planned failure" not in response.content  # the worker's server hides the error
    assert client.get("/health").text == "ok"
    log = wait_for(lambda: "RuntimeError: planned failure" in host.log_text() and host.log_text(), "log")
    assert "Executed 'Functions.boom' (Failed, Id=" in log
    assert "Traceback" in log


def test_streaming_response_is_not_buffered(client: httpx.Client) -> None:
    gate = f"stream-{uuid.uuid4().hex[:8]}"
    with client.stream("GET", f"/stream/{gate}") as response:
        chunks = response.iter_raw()
        assert next(chunks) == b"chunk-1\n"
        # The client has chunk 1 while the handler is still waiting, before producing chunk 2.
        wait_for(
            lambda: client.get(f"/gates/{gate}").json() == {"open": False, "waiting": 1}, "handler waits"
        )
        assert client.post(f"/gates/{gate}").json()["open"] is True
        assert b"".join(chunks) == b"chunk-2\n"


def test_a_client_that_goes_away_mid_stream_is_seen_by_the_handler(client: httpx.Client, host: Host) -> None:
    name = uuid.uuid4().hex[:8]
    with client.stream("GET", f"/endless/{name}") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = response.iter_raw()
        assert next(chunks).startswith(b"tick\n")
        assert not host.events(event="disconnected", name=name)
    # Closing the response closes the connection: the host drops its connection to the worker, and
    # the worker's server cancels the handler's stream.
    wait_for(lambda: host.events(event="disconnected", name=name), "the handler to see the disconnect")


def test_a_handler_failing_mid_stream_cuts_the_connection(client: httpx.Client, host: Host) -> None:
    with client.stream("GET", "/cut") as response:
        assert response.status_code == 200  # already sent when the handler failed
        with pytest.raises(httpx.RemoteProtocolError):  # the caller sees an incomplete body
            response.read()
    wait_for(lambda: "the worker's response ended before its end" in host.log_text(), "the host's line")
    assert client.get("/health").text == "ok"


def test_sse_chunks_arrive_one_by_one_through_the_workers_http_server(client: httpx.Client) -> None:
    with client.stream("GET", f"/endless/{uuid.uuid4().hex[:8]}") as response:
        chunks = response.iter_raw()
        # Each 'tick' is its own write in the handler, 50 ms apart: none are held back and merged.
        assert [next(chunks) for _ in range(3)] == [b"tick\n"] * 3


# --- CORS, before any function runs --------------------------------------------------------------

WEB_APP, OTHER_APP = "http://web.example:8080", "https://other.example"
EXPOSED = "x-request-id, x-custom"


@pytest.fixture(scope="module")
def cors_host(emulators: Emulators, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """A host with `func start`'s CORS options, and host.json customHeaders set by app setting."""
    expose = "AzureFunctionsJobHost__extensions__http__customHeaders__Access-Control-Expose-Headers"
    settings = {expose: EXPOSED}
    options = ["--cors", f"{WEB_APP},{OTHER_APP}", "--cors-credentials"]
    running = start_host(emulators, tmp_path_factory.mktemp("funchost-cors"), settings, options)
    try:
        yield running
    finally:
        running.process.stop()


def test_a_preflight_never_reaches_the_function(cors_host: Host) -> None:
    preflight = {"origin": WEB_APP, "access-control-request-method": "PUT"}
    with httpx.Client(base_url=cors_host.base_url, timeout=WAIT) as http:
        # `any` takes every method, OPTIONS too: only a request that is not a preflight reaches it.
        answered = http.options("/any", headers={**preflight, "access-control-request-headers": "x-a,x-b"})
        assert http.options("/any", headers={"origin": WEB_APP}).json() == {"method": "OPTIONS"}
        failing = http.options("/boom", headers=preflight)  # the function would raise
        unknown = http.options("/no/such/route", headers=preflight)
        refused = http.options("/any", headers={**preflight, "origin": "https://evil.example"})
    assert answered.status_code == failing.status_code == unknown.status_code == refused.status_code == 204
    assert answered.content == b""
    assert answered.headers["access-control-allow-origin"] == WEB_APP
    assert answered.headers["access-control-allow-methods"] == "PUT"
    assert answered.headers["access-control-allow-headers"] == "x-a,x-b"
    assert answered.headers["access-control-allow-credentials"] == "true"
    assert answered.headers["vary"] == "Origin"
    assert "access-control-allow-origin" not in refused.headers
    assert "Functions.boom" not in cors_host.log_text()


def test_a_streamed_response_carries_the_cors_headers_from_its_first_chunk(cors_host: Host) -> None:
    gate = f"cors-{uuid.uuid4().hex[:8]}"
    with (
        httpx.Client(base_url=cors_host.base_url, timeout=WAIT) as http,
        http.stream("GET", f"/stream/{gate}", headers={"origin": OTHER_APP}) as response,
    ):
        assert response.headers["access-control-allow-origin"] == OTHER_APP
        assert response.headers["access-control-allow-credentials"] == "true"
        assert response.headers["access-control-expose-headers"] == EXPOSED
        assert response.headers["vary"] == "Origin"
        chunks = response.iter_raw()
        assert next(chunks) == b"chunk-1\n"
        http.post(f"/gates/{gate}")
        assert b"".join(chunks) == b"chunk-2\n"


def test_a_refused_origin_gets_the_functions_answer_without_cors_headers(cors_host: Host) -> None:
    with httpx.Client(base_url=cors_host.base_url, timeout=WAIT) as http:
        refused = http.get("/items/abc", headers={"origin": "https://evil.example"})
        same_origin = http.get("/items/abc")
    for response in (refused, same_origin):
        assert response.json() == {"route": "param", "id": "abc"}
        assert not [h for h in response.headers if h.startswith("access-control-allow-")]
    assert "CORS: http://web.example:8080, https://other.example, with credentials" in cors_host.log_text()


# --- Queues -------------------------------------------------------------------------------------


def test_message_is_delivered_once_decoded_then_deleted(host: Host) -> None:
    payload = {"id": uuid.uuid4().hex}
    host.send(host.basic_queue, b64(payload))
    wait_for(lambda: host.events(event="basic", id=payload["id"]), "invocation")
    host.wait_empty(host.basic_queue)  # deleted: it can never be delivered again
    [event] = host.events(event="basic", id=payload["id"])
    assert event["dequeue_count"] == 1
    assert json.loads(event["body"]) == payload
    # The trigger metadata the Storage extension sends reaches func.QueueMessage through the worker.
    assert event["message_id"] and event["pop_receipt"]
    assert all(t.endswith("+00:00") for t in event["times"])  # insertion, expiration, next visible
    assert "Executed 'Functions.basic' (Succeeded, Id=" in host.log_text()


def test_failing_handler_is_retried_until_it_succeeds(host: Host) -> None:
    payload = {"id": uuid.uuid4().hex, "fail_times": 2}  # maxDequeueCount is 3
    content = b64(payload)
    host.send(host.basic_queue, content)
    wait_for(lambda: len(host.events(event="basic", id=payload["id"])) == 3, "three attempts")
    host.wait_empty(host.basic_queue)
    assert [e["dequeue_count"] for e in host.events(event="basic", id=payload["id"])] == [1, 2, 3]
    assert content not in host.poison_contents(host.basic_queue)


def test_always_failing_message_lands_in_poison_after_max_dequeue_count(host: Host) -> None:
    payload = {"id": uuid.uuid4().hex, "fail_times": 99}
    content = b64(payload)
    host.send(host.basic_queue, content)
    wait_for(lambda: content in host.poison_contents(host.basic_queue), "the poison queue")
    host.wait_empty(host.basic_queue)
    assert [e["dequeue_count"] for e in host.events(event="basic", id=payload["id"])] == [1, 2, 3]
    assert "Executed 'Functions.basic' (Failed, Id=" in host.log_text()


def test_undecodable_message_lands_in_poison_and_its_body_is_never_logged(host: Host) -> None:
    content = f"not base64 {uuid.uuid4().hex}!"
    host.send(host.basic_queue, content)
    wait_for(lambda: content in host.poison_contents(host.basic_queue), "the poison queue")
    host.wait_empty(host.basic_queue)
    log = host.log_text()
    assert "not valid base64" in log
    assert content not in log


def test_batches_bound_concurrency(host: Host, client: httpx.Client) -> None:
    gate = f"slow-{uuid.uuid4().hex[:8]}"
    ids = [f"{gate}-{i}" for i in range(8)]
    for message_id in ids:
        host.send(host.slow_queue, b64({"id": message_id, "gate": gate}))

    def mine(event: str) -> list[dict[str, Any]]:
        return [e for e in host.events(event=event) if e["id"] in ids]

    wait_for(lambda: len(mine("start")) >= 2, "two invocations running at once")
    client.post(f"/gates/{gate}")
    wait_for(lambda: len(mine("end")) == 8, "all eight invocations")
    host.wait_empty(host.slow_queue)
    running = peak = 0
    for event in (e for e in host.events() if e.get("id") in ids):  # file order is event order
        running += 1 if event["event"] == "start" else -1
        peak = max(peak, running)
    assert 2 <= peak <= 4 + 2  # batchSize + newBatchThreshold


def test_sigterm_waits_for_in_flight_invocations_and_exits_0(emulators: Emulators, tmp_path: Path) -> None:
    host = start_host(emulators, tmp_path)
    try:
        host.send(host.slow_queue, b64({"id": "shutdown", "sleep": 1.0}))
        wait_for(lambda: host.events(event="start", id="shutdown"), "the invocation to start")
        assert host.process.proc is not None
        host.process.proc.send_signal(signal.SIGTERM)
        assert host.process.proc.wait(WAIT) == 0
        assert host.events(event="end", id="shutdown")  # finished before the host exited
        assert host.message_count(host.slow_queue) == 0  # and its message was deleted
    finally:
        host.process.stop()


def test_a_dead_worker_is_replaced_and_its_message_delivered_again(
    emulators: Emulators, tmp_path: Path
) -> None:
    host = start_host(emulators, tmp_path)
    try:
        worker_pid = int(re.search(r"Worker: pid (\d+)", host.log_text())[1])  # type: ignore[index]
        host.send(host.slow_queue, b64({"id": "crash", "sleep": 1.0}))
        wait_for(lambda: host.events(event="start", id="crash"), "the invocation to start")
        os.kill(worker_pid, signal.SIGKILL)  # the worker dies mid-invocation; the host does not
        wait_for(lambda: "A new worker is ready" in host.log_text(), "a new worker")
        assert (
            f"The worker process exited (code -{signal.SIGKILL.value}): starting a new one" in host.log_text()
        )
        with httpx.Client(base_url=host.base_url, timeout=WAIT) as client:
            assert client.get("/health").text == "ok"  # HTTP goes to the new worker's HttpUri
        # The message failed with the worker, came back after visibilityTimeout and ran again.
        wait_for(lambda: host.events(event="end", id="crash"), "the message to run again to its end")
        assert len(host.events(event="start", id="crash")) == 2
        host.wait_empty(host.slow_queue)
        assert host.process.proc is not None and host.process.proc.poll() is None
    finally:
        host.process.stop()


def test_host_json_overrides_and_a_trigger_on_a_poison_queue(emulators: Emulators, tmp_path: Path) -> None:
    settings = {
        "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "2",  # host.json says 3
        "azurefunctionsjobhost__Extensions__QUEUES__VisibilityTimeout": "00:00:00",  # any case
        "AzureFunctionsJobHost__functionTimeout": "00:05:00",
    }
    host = start_host(emulators, tmp_path, settings)
    poison = f"{host.failing_queue}-poison"
    try:
        log = host.log_text()
        assert "maxDequeueCount=2, visibilityTimeout=0s" in log
        assert "functionTimeout=300s" in log
        for name in settings:
            assert f"overridden by app setting {name}" in log
        assert f"poisoned: queueTrigger on '{poison}' (poison: none)" in log

        handled = {"id": uuid.uuid4().hex}
        stuck = {"id": uuid.uuid4().hex, "poison_fails": True}
        for payload in (handled, stuck):
            host.send(host.failing_queue, b64(payload))
        for payload in (handled, stuck):
            wait_for(
                lambda p=payload: host.events(event="poisoned", id=p["id"]), "the poison queue's trigger"
            )
        for payload in (handled, stuck):
            attempts = [e["dequeue_count"] for e in host.events(event="always_fails", id=payload["id"])]
            assert attempts == [1, 2]  # maxDequeueCount from the app setting
        [event] = host.events(event="poisoned", id=handled["id"])
        assert event["dequeue_count"] == 1
        assert json.loads(event["body"]) == handled
        host.wait_empty(host.failing_queue)

        # A poison queue has no poison queue of its own (as in Azure): a failure there is left
        # invisible until its lease expires, never moved to '...-poison-poison'.
        wait_for(lambda: f"Queue '{poison}' has no poison queue" in host.log_text(), "the failure logged")
        assert [e["dequeue_count"] for e in host.events(event="poisoned", id=stuck["id"])] == [1]
        wait_for(lambda: host.message_count(poison) == 1, "only the failed message left")
        with host.queue(poison) as client:
            assert list(client.peek_messages()) == []  # invisible, not released for a retry
        assert not host.queue_exists(f"{poison}-poison")
    finally:
        host.process.stop()


# --- In process: lease renewal, missing queues, poison queues -----------------------------------


class InProcessWorker:
    """Stands in for the worker channel so a test can hold a handler in its own hands: it decodes
    the host's InvocationRequest with azure.functions' own queue converter, as the worker does,
    calls the handler and answers with the InvocationResponse's status."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    async def invoke(self, request: Any) -> Any:
        [binding] = request.input_data
        metadata = {k: Datum.from_typed_data(v) for k, v in request.trigger_metadata.items()}
        message = QueueMessageInConverter.decode(
            Datum.from_typed_data(binding.data), trigger_metadata=metadata
        )
        try:
            await self.handler(message)
        except Exception as exc:
            return rpc.InvocationResponse(
                invocation_id=request.invocation_id,
                result=rpc.StatusResult(status=0, exception=rpc.RpcException(message=str(exc))),
            )
        return rpc.InvocationResponse(invocation_id=request.invocation_id, result=rpc.StatusResult(status=1))


def _listener(
    emulators: Emulators, queue: str, handler: Any, max_dequeue_count: int = 5, **kwargs: Any
) -> QueueListener:
    raw = {"type": "queueTrigger", "name": "msg", "queueName": queue, "direction": "IN"}
    function = FunctionMetadata(f"id-{queue}", queue, [raw], None)
    options = QueueOptions(
        batch_size=4, new_batch_threshold=2, max_polling_interval=0.2, max_dequeue_count=max_dequeue_count
    )
    worker = cast(WorkerChannel, InProcessWorker(handler))
    connection = emulators.storage_connection_string
    return QueueListener(
        function, worker, queue, connection, options=options, function_timeout=None, **kwargs
    )


async def test_lease_is_renewed_while_a_handler_runs(emulators: Emulators) -> None:
    name = f"fh-lease-{uuid.uuid4().hex[:10]}"
    with QueueClient.from_connection_string(emulators.storage_connection_string, name) as queue:
        queue.create_queue()
        queue.send_message(b64({"id": "lease"}))
    seen: list[int] = []
    release = asyncio.Event()

    async def handler(msg: func.QueueMessage) -> None:
        seen.append(msg.dequeue_count)
        await release.wait()

    listener = _listener(emulators, name, handler, lease=2)
    task = asyncio.create_task(listener.run())
    # Without renewal the 2 s lease would expire and the listener would receive the message again.
    await asyncio.sleep(5)
    release.set()
    listener.stop()
    await asyncio.wait_for(task, WAIT)
    assert seen == [1]
    with QueueClient.from_connection_string(emulators.storage_connection_string, name) as queue:
        assert queue.get_queue_properties().approximate_message_count == 0


async def test_a_missing_queue_counts_as_empty_and_is_not_created(emulators: Emulators) -> None:
    name = f"fh-later-{uuid.uuid4().hex[:10]}"
    bodies: list[bytes] = []
    received = asyncio.Event()

    async def handler(msg: func.QueueMessage) -> None:
        bodies.append(msg.get_body())
        received.set()

    listener = _listener(emulators, name, handler)
    task = asyncio.create_task(listener.run())
    await asyncio.sleep(0.5)  # a few polls of the missing queue
    with QueueServiceClient.from_connection_string(emulators.storage_connection_string) as service:
        assert not [q for q in service.list_queues(name_starts_with=name)]  # the app provisions queues
        service.create_queue(name)
        service.get_queue_client(name).send_message(b64("late"))
    await asyncio.wait_for(received.wait(), WAIT)
    listener.stop()
    await asyncio.wait_for(task, WAIT)
    assert bodies == [b'"late"']


async def test_failures_on_a_poison_queue_are_retried_after_the_lease_never_moved(
    emulators: Emulators,
) -> None:
    name = f"fh-jobs-{uuid.uuid4().hex[:10]}-poison"
    with QueueClient.from_connection_string(emulators.storage_connection_string, name) as queue:
        queue.create_queue()
        queue.send_message(b64({"id": "poisoned"}))
    seen: list[int] = []
    done = asyncio.Event()

    async def handler(msg: func.QueueMessage) -> None:
        seen.append(msg.dequeue_count)
        if len(seen) < 3:
            raise RuntimeError("planned failure")
        done.set()

    # maxDequeueCount does not apply: with no poison queue there is nowhere to move the message to.
    listener = _listener(emulators, name, handler, max_dequeue_count=1, lease=2)
    assert listener.poison_queue_name is None
    task = asyncio.create_task(listener.run())
    await asyncio.wait_for(done.wait(), WAIT)
    listener.stop()
    await asyncio.wait_for(task, WAIT)
    assert seen == [1, 2, 3]
    with QueueServiceClient.from_connection_string(emulators.storage_connection_string) as service:
        assert service.get_queue_client(name).get_queue_properties().approximate_message_count == 0
        assert not [q for q in service.list_queues(name_starts_with=f"{name}-poison")]


# --- timers --------------------------------------------------------------------------------------


def test_a_timer_fires_on_its_schedule_and_run_on_startup_fires_at_start(host: Host) -> None:
    wait_for(lambda: len(host.events(event="tick")) >= 2, "two ticks of an every-second schedule")
    assert all(e["past_due"] is False for e in host.events(event="tick"))
    (startup,) = wait_for(lambda: host.events(event="on_startup"), "the runOnStartup invocation")
    assert startup["past_due"] is False  # and not again: its schedule is once a year
    assert "timerTrigger '0 0 0 1 1 *' (runOnStartup: True, useMonitor: False)" in host.log_text()


def test_the_monitor_runs_a_missed_occurrence_at_once_as_past_due(
    emulators: Emulators, tmp_path: Path
) -> None:
    from azure.storage.blob import BlobServiceClient

    host_id = f"fh-monitor-{uuid.uuid4().hex[:8]}"
    status = f"timers/{host_id}/Host.Functions.monitored/status"
    missed = {"Last": "2026-01-01T00:00:00+00:00", "Next": "2026-01-01T01:00:00+00:00", "LastUpdated": None}
    with BlobServiceClient.from_connection_string(emulators.storage_connection_string) as service:
        with contextlib.suppress(ResourceExistsError):
            service.create_container("azure-webjobs-hosts")
        service.get_blob_client("azure-webjobs-hosts", status).upload_blob(json.dumps(missed), overwrite=True)
        started = start_host(emulators, tmp_path, {"AzureFunctionsWebHost__hostid": host_id})
        try:
            (event,) = wait_for(lambda: started.events(event="monitored"), "the past-due invocation")
            assert event["past_due"] is True
            blob = service.get_blob_client("azure-webjobs-hosts", status)

            def updated() -> dict[str, Any] | None:
                current = json.loads(blob.download_blob().readall())
                return current if current["Next"] > missed["Next"] else None

            saved = wait_for(updated, "the monitor's new status")
            assert saved["Next"] > missed["Next"] and saved["Last"] is not None
        finally:
            started.process.stop()
