"""The job runner on in-memory stores with a scripted model: checkpoints, claims and webhooks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import inspect
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from shared.config import ModelConfig
from shared.errors import (
    AuthenticationError,
    InvalidRequestError,
    ServiceUnavailableError,
    UpstreamRateLimitError,
)
from shared.models.jobs import JobCreate
from shared.models.validation import validate_body
from shared.services.auth import MASTER, Principal
from shared.services.calls import CallContext, check_model
from shared.services.files import FileService
from shared.services.jobs import JobService
from shared.services.jobs.agent import pending_tool_calls
from shared.services.jobs.notify import WebhookFailed
from shared.services.jobs.run import KeyUnreadable
from shared.services.jobs.worker import Lease, LeaseNotRenewed
from shared.services.model_catalog import ModelCatalog
from shared.services.tools import ToolBlocked, ToolSettings
from tests import factories
from tests.fakes import InMemoryBlobStore, InMemoryDocumentStore, InMemoryQueueStore
from tests.unit.fault_helpers import FlakyDocuments
from tests.unit.tool_helpers import FakeWeb, http_tool, redirect

MODELS = ModelConfig.model_validate(
    {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/x"}}]}
)


Completion = dict[str, Any]
ALICE = Principal("key_alice", False)
CALCULATING = JobCreate(type="agent", model="m", input="x", tools=["calculator"])


def tool_call(call_id: str, expression: str) -> Completion:
    body = factories.completion_dict("")
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "calculator", "arguments": json.dumps({"expression": expression})},
            }
        ],
    }
    body["choices"][0]["finish_reason"] = "tool_calls"
    return body


class World:
    """In-memory stores, a scripted model and the keys jobs run as.

    `answers` are the model's next replies (an exception is raised instead; a function is called
    first, to change the world while the job runs, and its result, awaited if need be, used);
    `keys` are the keys by
    id (an exception is what reading it raises), `key_faults` errors the next key reads raise first.
    The model call checks the key's models as live traffic does (`check_model`)."""

    def __init__(self) -> None:
        self.documents = InMemoryDocumentStore()
        self.queues = InMemoryQueueStore()
        self.answers: list[Completion | BaseException | Callable[[], Completion]] = []
        self.calls: list[CallContext] = []
        self.keys: dict[str, Principal | BaseException] = {"master": MASTER, ALICE.key_id: ALICE}
        self.key_faults: list[BaseException] = []
        self.hooks: list[tuple[str, bytes, dict[str, str]]] = []
        self.hook_failure: BaseException | None = None
        self.files = FileService(self.documents, InMemoryBlobStore(), "uploads")
        self.jobs = self.service()

    def service(self, **options: Any) -> JobService:
        async def chat(request: Any, call: CallContext) -> tuple[Completion, float]:
            check_model(catalog, None, call.principal, request.model)  # type: ignore[arg-type]
            self.calls.append(call)
            answer = self.answers.pop(0)
            if callable(answer):
                answer = answer()
            if inspect.isawaitable(answer):
                answer = await answer
            if isinstance(answer, BaseException):
                raise answer
            return answer, 0.001

        async def owner(key_id: str) -> Principal:
            if self.key_faults:
                raise self.key_faults.pop(0)
            found = self.keys.get(key_id, AuthenticationError(f"The key {key_id} no longer exists."))
            if isinstance(found, BaseException):
                raise found
            return found

        async def hook(url: str, body: bytes, headers: dict[str, str]) -> None:
            self.hooks.append((url, body, headers))
            if self.hook_failure is not None:
                raise self.hook_failure

        catalog = ModelCatalog(MODELS, created=0)
        return JobService(
            options.pop("documents", self.documents),
            self.queues,
            self.files,
            catalog,
            queue="jobs",
            chat=chat,
            owner=owner,
            webhook_secret=b"s" * 32,
            deliver_webhook=hook,
            **{"tool_settings": ToolSettings(), **options},
        )


@pytest.fixture
def world() -> World:
    return World()


def hold(world: World, job_id: str, seconds: float = 60) -> None:
    """Make the stored job look held by another worker's live run."""
    stored = world.documents.items["jobs"][(job_id, job_id)]
    stored.update(status="running", worker="another-run", lease_until=time.time() + seconds)


async def test_a_run_checkpoints_each_step_and_signs_its_webhook(world):
    world.answers = [
        tool_call("c1", "2+3"),
        (factories.completion_dict("Five.")),
    ]
    spec = JobCreate(
        type="agent", model="m", input="2+3?", tools=["calculator"], webhook_url="https://hooks.example.com/x"
    )
    created = await world.jobs.create(MASTER, spec)
    await world.jobs.handle({"v": 1, "job_id": created["id"]})
    job = await world.jobs.get(MASTER, created["id"])
    assert job["status"] == "completed" and job["result"]["output_text"] == "Five."
    assert job["usage"]["cost_usd"] == pytest.approx(0.002)
    ((url, body, headers),) = world.hooks
    expected = hmac.new(
        created["webhook_secret"].encode(),
        f"{headers['x-cirrus-timestamp']}.".encode() + body,
        hashlib.sha256,
    )
    assert headers["x-cirrus-signature"] == f"sha256={expected.hexdigest()}"
    assert json.loads(body)["status"] == "completed" and url == "https://hooks.example.com/x"


async def test_a_second_copy_while_another_worker_holds_the_job_does_nothing(world):
    world.answers = [(factories.completion_dict("Hi."))]
    created = await world.jobs.create(MASTER, JobCreate(type="agent", model="m", input="hi"))
    hold(world, created["id"])  # another worker's run holds the job
    await world.jobs.handle({"v": 1, "job_id": created["id"]})
    assert (await world.jobs.get(MASTER, created["id"]))["status"] == "running"
    assert world.answers  # no model call was made
    assert len(world.queues.messages["jobs"]) == 2  # ...but a look later, in case that worker died


@pytest.mark.parametrize(
    ("failure", "event", "data"),
    [
        (
            WebhookFailed("HTTP 503: down", attempts=3, status=503),
            "webhook.failed",
            {"reason": "HTTP 503: down", "attempts": 3, "status": 503},
        ),
        (ToolBlocked("private address 10.0.0.5"), "webhook.blocked", {"reason": "private address 10.0.0.5"}),
    ],
)
async def test_a_webhook_that_failed_or_was_refused_is_an_event_of_the_job(world, failure, event, data):
    world.answers = [factories.completion_dict("Hi.")]
    world.hook_failure = failure
    spec = JobCreate(type="agent", model="m", input="hi", webhook_url="https://hooks.example.com/x")
    created = await world.jobs.create(MASTER, spec)
    await world.jobs.handle({"v": 1, "job_id": created["id"]})
    events = [d for d in world.documents.items["jobs"].values() if d.get("object") == "job.event"]
    assert [e["type"] for e in events][-2:] == ["job.completed", event]
    assert events[-1]["data"] == data


def test_only_tool_calls_without_a_saved_result_are_pending():
    calls = [{"id": "a", "function": {}}, {"id": "b", "function": {}}]
    messages = [
        {"role": "user"},
        {"role": "assistant", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "a"},
    ]
    assert [c["id"] for c in pending_tool_calls(messages)] == ["b"]
    assert pending_tool_calls([*messages, {"role": "tool", "tool_call_id": "b"}]) == []


def test_job_requests_are_checked_by_kind():
    with pytest.raises(ValueError, match="input"):
        JobCreate(type="agent", model="m")
    with pytest.raises(ValueError, match="task"):
        JobCreate(type="analysis", model="m", input={})
    with pytest.raises(ValueError, match="queue name"):
        JobCreate(type="agent", model="m", input="x", reply_queue="Bad_Name")


async def test_two_copies_of_a_message_in_one_worker_run_the_job_once(world):
    world.answers = [(factories.completion_dict("Once."))]
    created = await world.jobs.create(MASTER, JobCreate(type="agent", model="m", input="hi"))
    message = {"v": 1, "job_id": created["id"]}
    await asyncio.gather(world.jobs.handle(message), world.jobs.handle(message))
    assert (await world.jobs.get(MASTER, created["id"]))["status"] == "completed"  # one answer was enough


def http_call(call_id: str, url: str) -> Completion:
    completion = tool_call(call_id, "1")
    function = completion["choices"][0]["message"]["tool_calls"][0]["function"]
    function["name"], function["arguments"] = "http_get", json.dumps({"url": url})
    return completion


async def test_a_redirect_to_the_metadata_endpoint_is_blocked_and_recorded(world):
    """A prompt-injected fetch of an allowed host that redirects to 169.254.169.254: the agent's
    tool answers with the refusal, and the job's events record it."""
    web = FakeWeb({("example.com", "/"): redirect("http://169.254.169.254/latest/meta-data/")})
    world.jobs = world.service(
        tool_settings=ToolSettings(http_allowlist=("example.com",)),
        tools=lambda names, settings: {"http_get": http_tool(web=web)},
    )
    world.answers = [
        http_call("c1", "https://example.com/"),
        (factories.completion_dict("I could not fetch it.")),
    ]
    created = await world.jobs.create(
        MASTER, JobCreate(type="agent", model="m", input="x", tools=["http_get"])
    )
    await world.jobs.handle({"v": 1, "job_id": created["id"]})
    job = await world.jobs.get(MASTER, created["id"])
    assert job["status"] == "completed" and [s.get("status") for s in job["steps"]] == [None, "blocked", None]
    events = [d for d in world.documents.items["jobs"].values() if d.get("object") == "job.event"]
    (blocked,) = [e["data"] for e in events if e["type"] == "tool.blocked"]
    assert blocked["reason"] == "link-local address 169.254.169.254"
    assert len(web.requests) == 1  # the allowed host was asked; the metadata address never was


# --- the key a job runs as ------------------------------------------------------------------------


def queued_message(job_id: str = "job_ext_000001", key_id: str = ALICE.key_id, **job: Any) -> dict[str, Any]:
    """A job put straight on the queue by another system, run as `key_id`."""
    job = {"type": "agent", "model": "m", "input": "hi", **job}
    return {"v": 1, "job_id": job_id, "key_id": key_id, "job": job}


async def test_a_key_that_cannot_be_read_retries_the_message_and_never_fails_the_job(world):
    world.answers = [factories.completion_dict("Hi.")]
    created = await world.jobs.create(ALICE, JobCreate(type="agent", model="m", input="hi"))
    message = {"v": 1, "job_id": created["id"]}
    world.key_faults = [ServiceUnavailableError("Cirrus cannot check API keys right now; retry shortly.")]
    with pytest.raises(KeyUnreadable):  # the message fails, so the queue delivers it again
        await world.jobs.handle(message)
    job = await world.jobs.get(MASTER, created["id"])
    assert job["status"] == "running" and job["error"] is None
    await world.jobs.handle(message)  # the redelivery resumes at once: the lease was given back
    assert (await world.jobs.get(MASTER, created["id"]))["status"] == "completed"


async def test_a_queued_job_whose_key_cannot_be_read_is_retried_not_recorded_as_failed(world):
    world.answers = [factories.completion_dict("Hi.")]
    world.key_faults = [ServiceUnavailableError("Cirrus cannot check API keys right now; retry shortly.")]
    message = queued_message()
    with pytest.raises(KeyUnreadable):
        await world.jobs.handle(message)
    assert world.documents.items["jobs"] == {}  # no failed record for a key that was never read
    await world.jobs.handle(message)
    job = await world.jobs.get(ALICE, message["job_id"])
    assert job["status"] == "completed" and job["source"] == "queue"


@pytest.mark.parametrize("queued", [False, True], ids=["http", "queue"])
async def test_a_revoked_key_fails_its_job_with_the_keys_error(world, queued):
    world.keys[ALICE.key_id] = AuthenticationError("This API key has been revoked.")
    if queued:
        job_id = queued_message()["job_id"]
        await world.jobs.handle(queued_message())
    else:
        job_id = (await world.jobs.create(ALICE, JobCreate(type="agent", model="m", input="hi")))["id"]
        await world.jobs.handle({"v": 1, "job_id": job_id})
    job = await world.jobs.get(MASTER, job_id)
    assert job["status"] == "failed"
    assert job["error"] == {"code": "invalid_api_key", "message": "This API key has been revoked."}
    assert world.calls == []


def then(change: Callable[[], object], answer: Any) -> Callable[[], Any]:
    """A model answer that changes the world (a key, say) as it is given."""

    def give() -> Any:
        change()
        return answer

    return give


async def test_a_key_revoked_while_its_job_runs_stops_the_job_at_the_next_step(world):
    revoke = then(
        lambda: world.keys.update({ALICE.key_id: AuthenticationError("This API key has been revoked.")}),
        tool_call("c1", "1+1"),
    )
    world.answers = [revoke, factories.completion_dict("never asked")]
    created = await world.jobs.create(ALICE, CALCULATING)
    await world.jobs.handle({"v": 1, "job_id": created["id"]})
    job = await world.jobs.get(MASTER, created["id"])
    assert job["status"] == "failed"
    assert job["error"] == {"code": "invalid_api_key", "message": "This API key has been revoked."}
    assert [s["kind"] for s in job["steps"]] == ["model"]  # the tool call after it never ran
    assert len(world.answers) == 1  # nor did the next model call


async def test_a_model_taken_from_the_key_while_its_job_runs_fails_the_next_model_call_with_403(world):
    narrowed = Principal(ALICE.key_id, False, models=frozenset({"another-model"}))
    world.answers = [
        then(lambda: world.keys.update({ALICE.key_id: narrowed}), tool_call("c1", "1+1")),
        factories.completion_dict("never answered"),
    ]
    created = await world.jobs.create(ALICE, CALCULATING)
    await world.jobs.handle({"v": 1, "job_id": created["id"]})
    job = await world.jobs.get(MASTER, created["id"])
    assert job["status"] == "failed" and job["error"]["code"] == "model_not_allowed"  # live traffic's 403
    assert [s["kind"] for s in job["steps"]] == ["model", "tool"]
    assert world.calls[0].principal == ALICE


# --- provider faults ------------------------------------------------------------------------------


async def test_a_rate_limited_model_call_waits_and_tries_again(world):
    world.answers = [
        UpstreamRateLimitError("Rate limit reached.", retry_after=0),
        factories.completion_dict("Done."),
    ]
    created = await world.jobs.create(ALICE, JobCreate(type="agent", model="m", input="x"))
    await world.jobs.handle({"v": 1, "job_id": created["id"]})
    job = await world.jobs.get(MASTER, created["id"])
    assert job["status"] == "completed" and job["result"]["output_text"] == "Done."


async def test_a_cancel_during_a_rate_limit_wait_stops_the_job_without_another_call(world):
    created = await world.jobs.create(ALICE, JobCreate(type="agent", model="m", input="x"))

    def cancel() -> None:
        world.documents.items["jobs"][(created["id"], created["id"])]["status"] = "cancelling"

    world.answers = [
        then(cancel, UpstreamRateLimitError("Rate limit reached.", retry_after=0)),
        factories.completion_dict("never asked"),
    ]
    await world.jobs.handle({"v": 1, "job_id": created["id"]})
    assert (await world.jobs.get(MASTER, created["id"]))["status"] == "cancelled"
    assert len(world.answers) == 1


# --- the lease ------------------------------------------------------------------------------------


class FakeTime:
    """A clock and a sleep that only moves it: the lease's timing rules without waiting."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_a_lease_whose_renewals_raise_abandons_the_work_before_it_could_lapse():
    time_ = FakeTime()
    attempts: list[float] = []
    cancelled_at: list[float] = []
    until = time_.now + 90

    async def renew() -> float:
        attempts.append(time_.now)
        raise ConnectionResetError("Connection reset by peer")  # the SDK's own error, not a CirrusError

    async def step() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled_at.append(time_.now)
            raise

    lease = Lease("job_x", renew, seconds=90, until=until, clock=time_.clock, sleep=time_.sleep)
    with pytest.raises(LeaseNotRenewed) as caught:
        await lease.hold(step())
    assert isinstance(caught.value.__cause__, ConnectionResetError)
    assert cancelled_at and cancelled_at[0] < until  # before another worker could claim the job
    assert attempts[0] == 1_000 + 22.5 and len(attempts) > 3  # renewed on time, then retried
    backoff = time_.sleeps[1:-1]
    assert backoff == sorted(backoff) and backoff[0] < backoff[-1]  # waits that grow


async def test_a_lease_renewal_that_fails_for_a_while_is_retried_and_the_work_goes_on():
    time_ = FakeTime()
    renewed = asyncio.Event()
    failures = [OSError("unreachable"), TimeoutError()]

    async def renew() -> float:
        if failures:
            raise failures.pop(0)
        renewed.set()
        return time_.now + 90

    async def step() -> str:
        await renewed.wait()
        return "done"

    lease = Lease("job_x", renew, seconds=90, until=time_.now + 90, clock=time_.clock, sleep=time_.sleep)
    assert await lease.hold(step()) == "done"


async def test_a_heartbeat_whose_store_raises_abandons_the_step_and_the_redelivery_resumes(world):
    """The store's raw error (not a CirrusError) used to end the heartbeat silently: the step ran
    on with its lease lapsing under it, free for a second copy to run again."""
    flaky = FlakyDocuments(world.documents)
    world.jobs = world.service(documents=flaky, lease_seconds=0.6)
    abandoned: list[bool] = []

    async def stuck() -> Completion:  # the model call running when the store goes away
        flaky.failing["replace"] = ConnectionResetError("Connection reset by peer")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            abandoned.append(True)
            flaky.failing.clear()  # the store is back by the time the lease is given up
            raise
        raise AssertionError("unreachable")

    world.answers = [stuck, factories.completion_dict("Done.")]
    created = await world.jobs.create(ALICE, JobCreate(type="agent", model="m", input="x"))
    message = {"v": 1, "job_id": created["id"]}
    with pytest.raises(LeaseNotRenewed):
        await asyncio.wait_for(world.jobs.handle(message), timeout=10)  # the message fails, to be retried
    assert abandoned == [True]
    assert (await world.jobs.get(MASTER, created["id"]))["status"] == "running"
    await world.jobs.handle(message)  # the redelivery
    job = await world.jobs.get(MASTER, created["id"])
    assert job["status"] == "completed" and job["result"]["output_text"] == "Done."


# --- checks when a job is submitted ---------------------------------------------------------------

ASKED = {"role": "assistant", "content": None}
CALLED = {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("agent_input", "param", "says"),
    [
        ("", "input", "a non-empty string or a list of chat messages"),
        ([], "input", "a non-empty string or a list of chat messages"),
        ({"question": "?"}, "input", "a non-empty string or a list of chat messages"),
        (["hello"], "input[0]", "valid dictionary"),
        ([{"content": "hi"}], "input[0]", "role: Field required"),
        ([{"role": "robot", "content": "hi"}], "input[0]", "role: Input should be"),
        ([{"role": "user", "content": "hi"}, {"role": "user"}], "input[1]", "`user` message needs `content`"),
        ([{"role": "tool", "content": "42"}], "input[0]", "needs `tool_call_id`"),
        ([{**ASKED, "tool_calls": [{"id": "c1", "function": {"name": "x"}}]}], "input[0]", "tool_calls[0]."),
        ([{**ASKED, "tool_calls": [{**CALLED, "function": {"arguments": "{}"}}]}], "input[0]", "name"),
    ],
)
def test_an_agent_runs_input_is_checked_when_it_is_submitted(agent_input, param, says):
    with pytest.raises(InvalidRequestError) as caught:
        validate_body(JobCreate, {"type": "agent", "model": "m", "input": agent_input})
    assert caught.value.param == param and says in caught.value.message


async def test_an_agent_run_may_start_from_messages_ending_in_a_tool_call_it_answers(world):
    messages = [{"role": "user", "content": "1+1?", "name": "ann"}, {**ASKED, "tool_calls": [CALLED]}]
    spec = validate_body(
        JobCreate, {"type": "agent", "model": "m", "input": messages, "tools": ["calculator"]}
    )
    assert spec.input == messages  # kept as given
    world.answers = [factories.completion_dict("It is 2.")]
    created = await world.jobs.create(ALICE, spec)
    await world.jobs.handle({"v": 1, "job_id": created["id"]})
    job = await world.jobs.get(ALICE, created["id"])
    assert job["status"] == "completed" and [s["kind"] for s in job["steps"]] == ["tool", "model"]


async def test_a_queued_job_that_can_never_run_fails_at_once_with_a_record_and_a_reply(world):
    message = queued_message(input=[{"role": "user"}])
    message["reply_queue"] = "replies"
    await world.jobs.handle(message)  # no exception: retrying would only fail the same way
    job = await world.jobs.get(ALICE, message["job_id"])
    assert job["status"] == "failed" and job["source"] == "queue"
    assert job["error"]["param"] == "job.input[0]"
    assert job["error"]["message"] == "Invalid value for 'job.input[0]': a `user` message needs `content`"
    assert world.calls == []
    (reply,) = world.queues.messages["replies"]
    assert json.loads(base64.b64decode(reply))["status"] == "failed"
    await world.jobs.handle(message)  # a second copy records nothing more
    assert len(world.queues.messages["replies"]) == 1


async def test_a_message_whose_envelope_is_malformed_still_raises_for_the_poison_queue(world):
    message = queued_message()
    del message["key_id"]
    message["job"]["input"] = ""  # a bad job too, but the message cannot say whose it is
    with pytest.raises(ValidationError):
        await world.jobs.handle(message)
    assert world.documents.items["jobs"] == {}


# --- reply queues: only for queue-submitted jobs, never the gateway's own, never created --------


def event_kinds(world: World, job_id: str) -> list[str]:
    return [
        doc["type"]
        for (pk, _), doc in world.documents.items["jobs"].items()
        if pk == job_id and doc.get("object") == "job.event"
    ]


async def test_a_reply_queue_over_http_is_refused_for_any_key(world):
    for principal in (ALICE, MASTER):
        spec = JobCreate(type="agent", model="m", input="hi", reply_queue="someone-elses-replies")
        with pytest.raises(InvalidRequestError) as refused:
            await world.jobs.create(principal, spec)
        assert refused.value.param == "reply_queue"
    assert world.queues.messages == {} and world.documents.items["jobs"] == {}


@pytest.mark.parametrize(
    "queue", ["jobs", "jobs-poison", "cirrus-usage", "cirrus-batches-poison", "azure-webjobs-x"]
)
async def test_a_queued_job_may_not_reply_on_the_gateways_own_queues(queue):
    world = World()
    world.jobs = world.service(
        own_queues=frozenset({"cirrus-usage", "cirrus-batches", "cirrus-batches-poison"})
    )
    message = queued_message()
    message["reply_queue"] = queue
    await world.jobs.handle(message)
    job = await world.jobs.get(ALICE, message["job_id"])
    assert job["status"] == "failed" and "reply_queue" in job["error"]["message"]
    assert world.calls == []
    assert queue not in world.queues.messages  # not a word written to it
    assert "reply.blocked" in event_kinds(world, message["job_id"])


async def test_a_reply_queue_that_does_not_exist_is_not_created(world):
    class Existing(InMemoryQueueStore):
        async def send(self, queue, message, *, delay_seconds=0):
            if queue not in self.queues:
                raise LookupError(f"no queue {queue}")
            return await super().send(queue, message, delay_seconds=delay_seconds)

    world.queues = Existing()
    world.queues.queues.add("jobs")
    world.jobs = world.service()
    world.answers = [factories.completion_dict("Hi.")]
    message = queued_message()
    message["reply_queue"] = "nobody-made-this"
    await world.jobs.handle(message)
    assert (await world.jobs.get(ALICE, message["job_id"]))["status"] == "completed"
    assert "nobody-made-this" not in world.queues.queues  # never made on demand
    assert "reply.failed" in event_kinds(world, message["job_id"])
