"""Application Insights as an operator sees it.

A local host of the test's own runs with `APPLICATIONINSIGHTS_CONNECTION_STRING` pointing at a
local stand-in of the ingestion endpoint (tools/fake_ingestion.py, `/v2.1/track`), and what it
receives is read the way the portal reads it: Request items (the `requests` table), RemoteDependency
(`dependencies`), Exception (`exceptions`), each with its tags (`operation_Id`, `cloud_RoleName`...),
`properties` (`customDimensions`) and `sampleRate` (`itemCount` = 100 / sampleRate).

Each host has its own queues and Cosmos database, so no other test's work reaches it, and its own
stand-in; both stop when the test (or the module's scenario) is done.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import LocalStack
from tests.e2e.helpers import chat_line, readme_section, upload, wait_batch
from tools.fake_ingestion import IngestionStandIn, Received, base_data, item_count, properties, sample_score
from tools.stack import LOOPBACK, free_port, local_host

CHAT = "POST /v1/chat/completions"
# Never exported: a prompt (and the completions, which the fake provider builds from it), a key.
PROMPT = f"tangerine-walrus-{uuid.uuid4().hex}"
QUERY_SECRET = f"query-secret-{uuid.uuid4().hex}"
SETTLE_S = 7.0  # longer than the exporter's 5 s batch delay: what was finished has been sent


@dataclass
class TelemetryHost:
    """A local host exporting to `ingestion`."""

    base_url: str
    ingestion: IngestionStandIn
    provider_target: str  # the fake provider as a dependency target: 127.0.0.1:<port>
    master_key: str

    def http(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.master_key}"}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60)

    def openai(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=key, max_retries=0)


@contextlib.contextmanager
def telemetry_host(stack: LocalStack, workdir: Any, sampling: str) -> Iterator[TelemetryHost]:
    suffix = uuid.uuid4().hex[:8]
    with IngestionStandIn() as ingestion:
        env = {
            **stack.env,
            "APPLICATIONINSIGHTS_CONNECTION_STRING": ingestion.connection_string,
            "CIRRUS_TELEMETRY_SAMPLING": sampling,
            "COSMOS_DATABASE": f"appinsights-{suffix}",
            "JOBS_QUEUE": f"appinsights-jobs-{suffix}",
            "BATCH_QUEUE": f"appinsights-batches-{suffix}",
            "USAGE_QUEUE": f"appinsights-usage-{suffix}",
        }
        port = free_port()
        host = local_host(port, env, workdir / "funchost.log").start()
        try:
            host.wait_ready()
            provider = stack.provider_url.rsplit("/", 1)[-1]
            yield TelemetryHost(f"http://{LOOPBACK}:{port}", ingestion, provider, stack.master_key)
        finally:
            host.stop()


def kind(envelope: dict[str, Any]) -> str:
    return envelope["name"].rsplit(".", 1)[-1]


def of(received: Received, item: str) -> list[dict[str, Any]]:
    return [e for e in received.envelopes if kind(e) == item]


def operation(envelope: dict[str, Any]) -> str | None:
    return envelope.get("tags", {}).get("ai.operation.id")


def parent(envelope: dict[str, Any]) -> str | None:
    return envelope.get("tags", {}).get("ai.operation.parentId")


def new_trace_id(rng: random.Random, keep_below: float | None = None, drop_from: float | None = None) -> str:
    """A random trace id, whose sampling score is below `keep_below` or at least `drop_from`."""
    while True:
        trace_id = f"{rng.getrandbits(128):032x}"
        score = sample_score(trace_id)
        if (keep_below is None or score < keep_below) and (drop_from is None or score >= drop_from):
            return trace_id


def traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"


def chat(
    client: httpx.Client, trace_id: str, text: str, model: str = "cirrus-priced", **body: Any
) -> httpx.Response:
    return client.post(
        "/v1/chat/completions",
        headers={"traceparent": traceparent(trace_id)},
        json={"model": model, "messages": [{"role": "user", "content": text}], **body},
    )


def requests_of(received: Received, trace_ids: set[str], name: str = CHAT) -> list[dict[str, Any]]:
    return [e for e in of(received, "Request") if operation(e) in trace_ids and base_data(e)["name"] == name]


# --- every request, as the portal shows it --------------------------------------------------------


@dataclass
class Scenario:
    """One host with the default sampling (all), after a known set of requests."""

    host: TelemetryHost
    received: Received
    key_id: str
    key_secret: str
    chats: dict[str, dict[str, Any]]  # trace id -> the response's usage
    streamed: str  # trace ids
    refused: str
    batch_lines: int
    batch_trace: str | None


@pytest.fixture(scope="module")
def scenario(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    rng = random.Random()
    with telemetry_host(stack, tmp_path_factory.mktemp("appinsights-all"), "all") as host:
        with host.http() as admin:
            created = admin.post("/v1/keys", json={"key_alias": "appinsights-e2e"})
            assert created.status_code == 201, created.text
            key = created.json()
            models = admin.get(f"/v1/models/cirrus-local?probe={QUERY_SECRET}")
            assert models.status_code == 200
        chats: dict[str, dict[str, Any]] = {}
        with host.http(key["key"]) as client:
            for i in range(12):
                trace_id = new_trace_id(rng)
                response = chat(client, trace_id, f"{PROMPT} question {i}", max_tokens=8)
                assert response.status_code == 200, response.text
                chats[trace_id] = response.json()["usage"]
            streamed = new_trace_id(rng)
            response = chat(client, streamed, f"{PROMPT} streamed", stream=True)
            assert response.status_code == 200 and response.text.rstrip().endswith("data: [DONE]")
            refused = new_trace_id(rng)
            assert chat(client, refused, PROMPT, model="no-such-model").status_code == 404
        sdk = host.openai(key["key"])
        lines = [chat_line(f"line-{i}", model="cirrus-priced", max_tokens=5) for i in range(3)]
        for line in lines:
            line["body"]["messages"][0]["content"] = f"{PROMPT} {line['custom_id']}"
        batch = sdk.batches.create(
            input_file_id=upload(sdk, lines).id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert wait_batch(sdk, batch.id).status == "completed"

        def arrived(envelopes: list[dict[str, Any]]) -> bool:
            names = {(operation(e), base_data(e).get("name")) for e in envelopes if kind(e) == "Request"}
            return {(t, CHAT) for t in [*chats, streamed, refused]} <= names and any(
                n == "POST /v1/batches" for _, n in names
            )

        host.ingestion.wait_for(arrived, timeout=60)
        time.sleep(SETTLE_S)  # the batch's queue work and anything else finished is sent too
        received = host.ingestion.snapshot()
        (created_batch,) = [e for e in of(received, "Request") if base_data(e)["name"] == "POST /v1/batches"]
        yield Scenario(
            host,
            received,
            key["id"],
            key["key"],
            chats,
            streamed,
            refused,
            len(lines),
            operation(created_batch),
        )


def test_every_request_arrives_once_named_by_its_route_with_url_result_and_role(scenario):
    received, host = scenario.received, scenario.host
    chats = requests_of(received, set(scenario.chats))
    assert sorted(operation(e) for e in chats) == sorted(scenario.chats)  # all 12, once each
    assert sum(item_count(e) for e in chats) == 12  # no sampling: each stands for itself
    for envelope in chats:
        data = base_data(envelope)
        assert data["url"] == f"{host.base_url}/v1/chat/completions"
        assert (data["responseCode"], data["success"]) == ("200", True)
        assert envelope["tags"]["ai.operation.name"] == CHAT
        assert envelope["tags"]["ai.cloud.role"] == "cirrus" and envelope["tags"]["ai.cloud.roleInstance"]
    (streamed,) = requests_of(received, {scenario.streamed})
    assert base_data(streamed)["responseCode"] == "200"
    (refused,) = requests_of(received, {scenario.refused})
    assert (base_data(refused)["responseCode"], base_data(refused)["success"]) == ("404", False)
    (model,) = [e for e in of(received, "Request") if base_data(e)["name"] == "GET /v1/models/{model}"]
    assert base_data(model)["url"] == f"{host.base_url}/v1/models/cirrus-local"  # the path: no query
    names = {base_data(e)["name"] for e in of(received, "Request")}
    assert {"POST /v1/keys", "POST /v1/files", "POST /v1/batches", "GET /v1/batches/{batch_id}"} <= names
    assert not any("chat_completions" in name for name in names)  # a route, never a function name


def test_a_request_carries_its_key_model_deployment_tokens_and_cost(scenario):
    for envelope in requests_of(scenario.received, set(scenario.chats)):
        usage = scenario.chats[operation(envelope)]
        dimensions = properties(envelope)
        assert dimensions["cirrus.key_id"] == scenario.key_id
        assert dimensions["cirrus.function"] == "chat_completions"
        assert dimensions["cirrus.request_id"].startswith("req_")
        assert (dimensions["cirrus.model"], dimensions["cirrus.deployment"]) == ("cirrus-priced", "priced-1")
        assert dimensions["cirrus.model_calls"] == "1"
        assert int(dimensions["cirrus.input_tokens"]) == usage["prompt_tokens"]
        assert int(dimensions["cirrus.output_tokens"]) == usage["completion_tokens"]
        cost = (
            usage["prompt_tokens"] * 0.00001 + usage["completion_tokens"] * 0.00002
        )  # the model file's prices
        assert math.isclose(float(dimensions["cirrus.cost_usd"]), cost, rel_tol=1e-6)
    (streamed,) = requests_of(scenario.received, {scenario.streamed})
    assert int(properties(streamed)["cirrus.output_tokens"]) > 0  # counted when its stream ended
    (refused,) = requests_of(scenario.received, {scenario.refused})
    assert "cirrus.model" not in properties(refused)  # no model was called


def test_each_provider_call_is_a_typed_dependency_in_its_request_operation(scenario):
    received = scenario.received
    by_id = {base_data(e)["id"]: e for e in received.envelopes if kind(e) in ("Request", "RemoteDependency")}
    for request in requests_of(received, {*scenario.chats, scenario.streamed}):
        deps = [e for e in of(received, "RemoteDependency") if operation(e) == operation(request)]
        (provider,) = [e for e in deps if base_data(e)["type"].startswith("GenAI")]
        assert base_data(provider)["type"] == "GenAI | openai"
        assert base_data(provider)["target"] == scenario.host.provider_target
        assert base_data(provider)["name"] == "provider openai" and base_data(provider)["success"] is True
        model_call = by_id[parent(provider)]  # the model call, in-process, between it and the request
        assert (
            base_data(model_call)["type"] == "InProc"
            and base_data(model_call)["name"] == "chat cirrus-priced"
        )
        assert parent(model_call) == base_data(request)["id"]


def test_a_batch_keeps_one_operation_from_its_request_through_its_queue_work(scenario):
    received = scenario.received
    in_batch = [e for e in received.envelopes if operation(e) == scenario.batch_trace]
    queue_work = [e for e in in_batch if kind(e) == "Request" and base_data(e)["name"].startswith("process ")]
    assert queue_work, "the batch's queue messages are requests in the operation that created it"
    assert sum(int(properties(e).get("cirrus.model_calls", 0)) for e in queue_work) == scenario.batch_lines
    providers = [
        e for e in in_batch if kind(e) == "RemoteDependency" and base_data(e)["type"] == "GenAI | openai"
    ]
    assert len(providers) == scenario.batch_lines


def test_no_prompt_key_or_query_string_reaches_application_insights(scenario):
    bodies = b"\n".join(scenario.received.bodies).decode()
    assert "tangerine-walrus" not in bodies  # no prompt, and no completion (the fake provider echoes it)
    secret = scenario.key_secret
    for text in (secret, secret[-32:], scenario.host.master_key, QUERY_SECRET, "Bearer "):
        assert text not in bodies, f"{text[:12]}... was exported"


def test_an_admin_action_is_a_custom_event_in_its_request_operation(scenario):
    received = scenario.received
    (event,) = [
        e
        for e in of(received, "Event")
        if base_data(e).get("name") == "CirrusAudit"
        and properties(e).get("cirrus.audit.target_id") == scenario.key_id
    ]
    props = properties(event)
    assert (props["cirrus.audit.action"], props["cirrus.audit.actor_id"]) == ("key.create", "master")
    (created,) = [e for e in of(received, "Request") if base_data(e)["name"] == "POST /v1/keys"]
    assert operation(event) == operation(created)
    assert scenario.key_secret not in str(event)


def test_the_sdk_reports_no_exceptions_and_nothing_runs_outside_a_request(scenario):
    received = scenario.received
    assert of(received, "Exception") == []  # every request succeeded: nothing else may report one
    assert received.other_paths == []  # no Live Metrics (off locally), nothing but /v2.1/track
    targets = {base_data(e).get("target") or "" for e in of(received, "RemoteDependency")}
    assert not [
        t for t in targets if re.search(r"monitor\.azure\.com|visualstudio\.com|applicationinsights", t)
    ]
    # The local host polls its queues outside the worker, and the worker's own timers are requests:
    # every dependency belongs to a request (which ends after them, so may be sent a batch later).
    time.sleep(SETTLE_S)
    later = scenario.host.ingestion.snapshot()
    requests = {operation(e) for e in of(later, "Request")}
    orphans = [base_data(e)["name"] for e in of(received, "RemoteDependency") if operation(e) not in requests]
    assert orphans == []


# --- the README's queries -------------------------------------------------------------------------

# Each table's columns the README's queries may use, and where an envelope holds them.
TABLES = {
    "requests": "Request",
    "dependencies": "RemoteDependency",
    "exceptions": "Exception",
    "traces": "Message",
}
COLUMNS = {
    "timestamp": lambda e: e.get("time"),
    "itemCount": item_count,
    "itemType": kind,
    "name": lambda e: base_data(e).get("name"),
    "id": lambda e: base_data(e).get("id"),
    "url": lambda e: base_data(e).get("url"),
    "duration": lambda e: base_data(e).get("duration"),
    "success": lambda e: base_data(e).get("success"),
    "resultCode": lambda e: base_data(e).get("responseCode") or base_data(e).get("resultCode"),
    "type": lambda e: base_data(e).get("type"),
    "target": lambda e: base_data(e).get("target"),
    "data": lambda e: base_data(e).get("data"),
    "message": lambda e: base_data(e).get("message"),
    "operation_Id": lambda e: e["tags"].get("ai.operation.id"),
    "operation_ParentId": lambda e: e["tags"].get("ai.operation.parentId"),
    "operation_Name": lambda e: e["tags"].get("ai.operation.name"),
    "cloud_RoleName": lambda e: e["tags"].get("ai.cloud.role"),
    "cloud_RoleInstance": lambda e: e["tags"].get("ai.cloud.roleInstance"),
    "customDimensions": lambda e: base_data(e).get("properties"),
}
# The Kusto words (operators, functions, literals) the queries may use.
KQL = frozenset(
    [
        "where",
        "and",
        "or",
        "not",
        "in",
        "ago",
        "summarize",
        "by",
        "bin",
        "order",
        "asc",
        "desc",
        "extend",
        "project",
        "union",
        "top",
        "take",
        "sum",
        "sumif",
        "count",
        "countif",
        "dcount",
        "avg",
        "percentile",
        "percentiles",
        "min",
        "max",
        "todouble",
        "tolong",
        "toint",
        "tostring",
        "isnotempty",
        "isempty",
        "startswith",
        "endswith",
        "contains",
        "has",
        "round",
        "substring",
        "strcat",
        "iff",
        "true",
        "false",
        "d",
        "h",
        "m",
        "s",
    ]
)


def kusto_queries() -> list[str]:
    """Each query of the README's Kusto section, without its comments."""
    section = readme_section("Kusto queries for Application Insights")
    queries = []
    for block in re.findall(r"```kusto\n(.*?)```", section, re.DOTALL):
        text = "\n".join(line for line in block.splitlines() if not line.lstrip().startswith("//"))
        queries += [q for q in re.split(r"\n\s*\n", text) if q.strip()]
    return queries


def test_the_readme_kusto_queries_use_only_fields_the_exporter_sends(scenario):
    queries = kusto_queries()
    assert len(queries) >= 5
    for query in queries:
        tables = [t for t in TABLES if re.search(rf"(^|union\s+|,\s*){t}\b", query.lstrip())]
        assert tables, f"a query that reads no known table:\n{query}"
        envelopes = [e for e in scenario.received.envelopes if kind(e) in {TABLES[t] for t in tables}]
        dimensions = set(re.findall(r'customDimensions\s*\.?\s*\[\s*"([^"]+)"\s*\]', query))
        sent = set().union(*(properties(e) for e in envelopes))
        assert not dimensions - sent, f"customDimensions never sent to {tables}: {dimensions - sent}\n{query}"
        code = re.sub(r'"[^"]*"', '""', query)
        declared = set(re.findall(r"\b([A-Za-z_]\w*)\s*=(?!=)", code))
        words = set(re.findall(r"(?<![\w.])([A-Za-z_]\w*)\b", code)) - KQL - declared - set(TABLES)
        unknown = words - set(COLUMNS)
        assert not unknown, f"not a column these queries may use: {unknown}\n{query}"
        for column in words:
            assert any(COLUMNS[column](e) not in (None, "") for e in envelopes), (
                f"{column} is never set in {tables}\n{query}"
            )


# --- sampling -------------------------------------------------------------------------------------


def test_a_fixed_share_keeps_whole_traces_and_its_item_counts_add_up(stack, tmp_path_factory):
    """50%: the share is decided from the trace id, so the test picks 8 trace ids it keeps and 8 it
    drops; exactly the kept ones arrive, each with everything beneath it, each counting for 2."""
    rng = random.Random()
    kept = {new_trace_id(rng, keep_below=0.5) for _ in range(8)}
    dropped = {new_trace_id(rng, drop_from=0.5) for _ in range(8)}
    with telemetry_host(stack, tmp_path_factory.mktemp("appinsights-share"), "50%") as host:
        with host.http() as client:
            for trace_id in [*kept, *dropped]:
                assert chat(client, trace_id, "hello", model="cirrus-local").status_code == 200
        host.ingestion.wait_for(
            lambda e: len([x for x in e if operation(x) in kept and kind(x) == "Request"]) == 8
        )
        time.sleep(SETTLE_S)
        received = host.ingestion.snapshot()
    chats = requests_of(received, kept | dropped)
    assert {operation(e) for e in chats} == kept
    assert {e["sampleRate"] for e in chats} == {50.0}
    assert sum(item_count(e) for e in chats) == 16  # what the portal counts: every request sent
    traced = [e for e in received.envelopes if "tags" in e and operation(e) in kept | dropped]
    assert {operation(e) for e in traced} == kept  # a dropped trace sends nothing at all
    assert {e.get("sampleRate") for e in traced if kind(e) != "Message"} == {50.0}
    assert (
        len([e for e in traced if kind(e) == "RemoteDependency" and base_data(e)["type"] == "GenAI | openai"])
        == 8
    )


def test_a_rate_limit_keeps_item_counts_that_add_up_within_their_error(stack, tmp_path_factory):
    """10/s while requests go one after another for 6 s, as fast as they can (several times that
    rate): most are dropped, whole; each kept one comes with its dependencies and says the share it
    was kept at; and the portal's estimate, the sum of itemCount, is within four standard errors of
    the number sent. (Horvitz-Thompson: a request kept at share p counts 1/p, so the sum's
    expectation is the number sent; its variance is estimated by the sum of c*c - c over the kept
    items' counts c. About 60 are kept, enough for that estimate to hold.)"""
    rng = random.Random()
    sent: list[str] = []
    with telemetry_host(stack, tmp_path_factory.mktemp("appinsights-rate"), "10/s") as host:
        with host.http() as client:
            started = time.monotonic()
            while time.monotonic() - started < 6:
                sent.append(new_trace_id(rng))
                assert chat(client, sent[-1], "hello", model="cirrus-local").status_code == 200
            rate = len(sent) / (time.monotonic() - started)
        time.sleep(SETTLE_S)
        received = host.ingestion.snapshot()
    chats = requests_of(received, set(sent))
    counts = [item_count(e) for e in chats]
    assert 0 < len(chats) < len(sent), f"{len(chats)} of {len(sent)} kept at {rate:.0f} requests/s"
    for envelope in chats:
        share = envelope.get("sampleRate", 100.0)
        assert sample_score(operation(envelope) or "") * 100 < share  # kept: its score is under the share
        beneath = [e for e in of(received, "RemoteDependency") if operation(e) == operation(envelope)]
        assert sorted(base_data(e)["type"] for e in beneath) == ["GenAI | openai", "InProc"]  # whole
        assert {e.get("sampleRate", 100.0) for e in beneath} == {share}
    kept = {operation(e) for e in chats}
    assert not [e for e in received.envelopes if operation(e) in set(sent) - kept]  # dropped whole
    error = math.sqrt(sum(c * c - c for c in counts))
    assert abs(sum(counts) - len(sent)) <= 4 * error, (len(sent), sum(counts), f"{rate:.0f} requests/s")
