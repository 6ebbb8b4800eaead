"""Traces across the real function code, in this process so an in-memory exporter sees them: the
local host's HTTP proxy (over httpx's ASGI transport) in front of azure-functions-runtime running
in this process (tests/integration/inprocess_worker.py), on the real emulators and fake provider,
and the queue functions invoked, through the same runtime, with the messages the HTTP functions
really put on Azurite."""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import logging
import uuid

import httpx
import pytest
from azure.storage.queue import QueueMessage as StorageMessage
from azure.storage.queue.aio import QueueClient

from shared import config as config_module
from tests.integration.inprocess_worker import InProcessWorker
from tools.funchost.functions import invoke
from tools.funchost.http import HttpProxy, build_routes
from tools.funchost.queues import _payload, _trigger_metadata
from tools.stack import DEV_MASTER_KEY, ROOT, app_env

PROMPT = "the secret plan is purple elephants"


@pytest.fixture
async def host(emulators, fake_provider_url, monkeypatch):
    """The app as the local host serves it, in-process, with a queue of its own."""
    port = int(fake_provider_url.rsplit(":", 1)[1])
    env = app_env(
        emulators,
        port,
        COSMOS_DATABASE="trace-" + uuid.uuid4().hex[:8],
        JOBS_QUEUE="trace-jobs-" + uuid.uuid4().hex[:6],
    )
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config_module.get_settings.cache_clear()
    worker = InProcessWorker(ROOT)
    await worker.start()
    proxy = HttpProxy(build_routes(worker.functions, ""), worker, None)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=proxy),
        base_url="http://cirrus",
        headers={"Authorization": f"Bearer {DEV_MASTER_KEY}"},
        timeout=60,
    ) as client:
        yield client, worker, env
    await proxy.close()
    config_module.get_settings.cache_clear()
    import function_app

    importlib.reload(function_app)  # leave an app whose get_functions() has not run, for other tests


async def run_queue_function(
    worker: InProcessWorker, name: str, message: StorageMessage, body: bytes
) -> None:
    """Invoke a queue function as the host does: the message's TypedData and trigger metadata."""
    await invoke(worker, worker.function(name), _payload(body), _trigger_metadata(message), None)  # type: ignore[arg-type]


def by_name(spans, prefix: str):
    return [s for s in spans if s.name.startswith(prefix)]


async def test_a_chat_request_is_one_trace_server_then_model_call_then_provider(
    host, spans, caplog, recorded_metrics
):
    caplog.set_level(logging.INFO)  # the default level
    client, _, env = host
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = await client.post(
        "/v1/chat/completions",
        headers={"traceparent": parent},
        json={"model": "cirrus-local", "messages": [{"role": "user", "content": PROMPT}]},
    )
    assert response.status_code == 200
    for _ in range(50):  # LiteLLM ends the provider span from its logging task, just after the call
        if by_name(spans.get_finished_spans(), "provider"):
            break
        await asyncio.sleep(0.05)
    finished = spans.get_finished_spans()
    (server,) = by_name(finished, "POST /v1/chat/completions")
    (model,) = by_name(finished, "chat cirrus-local")
    provider = by_name(finished, "provider")
    assert server.context.trace_id == int("0af7651916cd43dd8448eb211c80319c", 16)  # the caller's trace
    assert model.parent.span_id == server.context.span_id
    assert provider and provider[0].parent.span_id == model.context.span_id
    assert server.attributes["http.response.status_code"] == 200
    attributes = model.attributes
    assert (
        attributes["gen_ai.operation.name"] == "chat" and attributes["gen_ai.request.model"] == "cirrus-local"
    )
    assert attributes["gen_ai.provider.name"] == "openai" and attributes["gen_ai.response.model"]
    assert attributes["gen_ai.usage.input_tokens"] > 0 and attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert attributes["cirrus.deployment"] and attributes["cirrus.fallback"] is False
    # The call to the router is in-process; the attempt beneath is the call that leaves it, typed
    # and targeted for Application Insights' dependency map (gen_ai.system, peer.service).
    assert model.kind.name == "INTERNAL" and provider[0].kind.name == "CLIENT"
    port = env["CIRRUS_LOCAL_PROVIDER_URL"].split(":")[2].split("/")[0]
    assert provider[0].attributes["gen_ai.system"] == "openai"
    assert provider[0].attributes["peer.service"] == f"127.0.0.1:{port}"
    # The request's span sums its model calls, for the requests table's customDimensions.
    assert {
        k: v for k, v in server.attributes.items() if k.startswith("cirrus.") and k != "cirrus.request_id"
    } == {
        "cirrus.function": "chat_completions",
        "cirrus.key_id": "master",
        "cirrus.model_calls": 1,
        "cirrus.model": "cirrus-local",
        "cirrus.deployment": attributes["cirrus.deployment"],
        "cirrus.input_tokens": attributes["gen_ai.usage.input_tokens"],
        "cirrus.output_tokens": attributes["gen_ai.usage.output_tokens"],
        "cirrus.cost_usd": attributes["cirrus.cost_usd"],
    }
    recorded = json.dumps(
        [dict(s.attributes) for s in finished] + [[e.name for e in s.events] for s in finished]
    )
    reply = response.json()["choices"][0]["message"]["content"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records, "nothing was logged: the check below would prove nothing"
    for text in ("purple elephants", reply, DEV_MASTER_KEY):  # no prompt, completion or key
        assert text not in recorded and text not in logged
    stream = await client.post(
        "/v1/chat/completions",
        json={"model": "cirrus-local", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert stream.status_code == 200
    streamed = by_name(spans.get_finished_spans(), "POST /v1/chat/completions")[-1]
    assert streamed is not server  # ends with its stream, after the model call it counts
    assert streamed.attributes["cirrus.model_calls"] == 1 and streamed.attributes["cirrus.output_tokens"] > 0
    assert {
        "http.server.request.duration",
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "gen_ai.server.time_to_first_token",
    } <= recorded_metrics()


async def test_a_job_submitted_over_http_runs_from_the_queue_in_the_same_trace(host, spans, recorded_metrics):
    client, queues, env = host
    response = await client.post("/v1/jobs", json={"type": "agent", "model": "cirrus-local", "input": PROMPT})
    assert response.status_code == 202
    job_id = response.json()["id"]
    submitted = by_name(spans.get_finished_spans(), "POST /v1/jobs")[0]
    async with QueueClient.from_connection_string(env["AzureWebJobsStorage"], env["JOBS_QUEUE"]) as queue:
        (message,) = [m async for m in queue.receive_messages(max_messages=5)]
        body = base64.b64decode(message.content)
        assert json.loads(body)["traceparent"].split("-")[1] == f"{submitted.context.trace_id:032x}"
        await run_queue_function(queues, "run_job", message, body)
    job = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert job["status"] == "completed"
    finished = spans.get_finished_spans()
    (consumer,) = by_name(finished, f"process {env['JOBS_QUEUE']}")
    (model,) = by_name(finished, "chat cirrus-local")
    assert consumer.context.trace_id == model.context.trace_id == submitted.context.trace_id
    assert model.attributes["cirrus.job_id"] == job_id
    assert {"messaging.process.duration", "cirrus.queue.message.age"} <= recorded_metrics()
    assert "purple elephants" not in json.dumps([dict(s.attributes) for s in finished])


async def test_a_poisoned_message_is_counted_and_recorded(host, recorded_metrics):
    client, queues, _ = host
    job_id = f"job_bad_{uuid.uuid4().hex[:10]}"
    body = json.dumps({"v": 1, "job_id": job_id, "job": {"type": "nope"}}).encode()
    message = StorageMessage(content="")
    message.id, message.dequeue_count = "m1", 1
    await run_queue_function(queues, "record_poisoned_job", message, body)
    assert "cirrus.queue.poisoned" in recorded_metrics()
    record = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert record["status"] == "failed" and record["error"]["code"] == "message_failed"


async def test_server_spans_follow_the_http_semantic_conventions(host, spans):
    client, _, _ = host
    response = await client.get(
        "/v1/files/file-nope/content",
        headers={"user-agent": "OpenAI/Python 1.99", "host": "cirrus.example.com"},
    )
    assert response.status_code == 404
    await client.get("/v1/sessions/sess_abc", headers={"x-forwarded-proto": "https"})
    finished = spans.get_finished_spans()
    # Cirrus's SERVER spans only: not a second one from FastAPI's own telemetry in the worker's
    # HTTP server (shared/worker_http.py turns it off).
    assert {s.instrumentation_scope.name for s in finished if s.kind.name == "SERVER"} == {"cirrus"}
    (content,) = [s for s in finished if s.kind.name == "SERVER" and "files" in s.name]
    assert content.name == "GET /v1/files/{file_id}/content"
    assert dict(content.attributes) | {"cirrus.request_id": None, "cirrus.key_id": None} == {
        "http.request.method": "GET",
        "http.route": "/v1/files/{file_id}/content",
        "url.path": "/v1/files/file-nope/content",
        "url.scheme": "http",
        "server.address": "cirrus.example.com",
        "server.port": 80,
        "user_agent.original": "OpenAI/Python 1.99",
        "http.response.status_code": 404,
        "cirrus.function": "file_content",
        "cirrus.request_id": None,
        "cirrus.key_id": None,
    }
    assert "error.type" not in content.attributes  # a 4xx is the client's error
    (session,) = [s for s in finished if s.kind.name == "SERVER" and "sessions" in s.name]
    assert session.name == "GET /v1/sessions/{session_id}" and session.attributes["url.scheme"] == "https"
    assert session.attributes["server.port"] == 443


async def test_a_server_failure_sets_error_type(host, spans, provider):
    client, _, _ = host
    provider.post("/_control/enqueue", json={"behaviour": {"status": 500}, "times": 10}).raise_for_status()
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "cirrus-local", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 502
    (server,) = [s for s in spans.get_finished_spans() if s.name == "POST /v1/chat/completions"]
    assert server.attributes["error.type"] == "502" and server.status.status_code.name == "ERROR"
