"""End to end: Entra ID callers beside keys, through the local host and the stack's local issuer.

Tokens come from the stack's issuer (tools/oidc_issuer.py) and reach Cirrus as real clients send
them: the `openai` SDK with the token as its key, `AzureOpenAI` with an `azure-identity` bearer
token provider, the console's sign-in. Every test uses identities of its own (random object ids),
so policies never collide between tests.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from azure.core.credentials import AccessToken
from azure.identity import get_bearer_token_provider

from tests.conftest import LocalStack
from tests.e2e.helpers import api, sse_events, submit, wait, wait_records
from tools.oidc_issuer import LOCAL_AUDIENCE, SigningKey
from tools.stack import LOOPBACK, free_port, local_host

HELLO = [{"role": "user", "content": "hello there"}]


def oid() -> str:
    return str(uuid.uuid4())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin(stack: LocalStack) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers=bearer(stack.master_key), timeout=30)


def policy(stack: LocalStack, **fields: Any) -> dict[str, Any]:
    with admin(stack) as http:
        response = http.post("/v1/policies", json=fields)
    assert response.status_code == 201, response.text
    return response.json()


def user(stack: LocalStack, who: str, *roles: str, **options: Any) -> str:
    return stack.entra_token(roles=list(roles or ("Cirrus.User",)), oid=who, **options)


def chat(stack: LocalStack, token: str, model: str = "cirrus-local") -> Any:
    client = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=token, max_retries=0)
    return client.chat.completions.with_raw_response.create(model=model, messages=HELLO)


def records_of(stack: LocalStack, key_id: str, count: int) -> list[dict[str, Any]]:
    with admin(stack) as http:
        return wait_records(http, {}, key_id, count)


# --- calling models -------------------------------------------------------------------------------


def test_the_openai_sdk_with_a_token_as_its_key_calls_models_under_its_policy(stack):
    me = oid()
    pol = policy(stack, object_ids=[me], models=["cirrus-local"], rpm_limit=100, team_id="entra-e2e")
    response = chat(stack, user(stack, me))
    assert response.http_response.status_code == 200
    assert response.parse().choices[0].message.content
    assert response.http_response.headers["x-ratelimit-limit-requests"] == "100"  # the policy's limits
    (record,) = records_of(stack, f"entra_{me}", 1)
    assert (record["key_id"], record["team_id"]) == (f"entra_{me}", "entra-e2e")
    with pytest.raises(openai.PermissionDeniedError) as refused:  # the policy's models only
        chat(stack, user(stack, me), model="cirrus-priced")
    assert refused.value.code == "model_not_allowed"
    assert pol["object_ids"] == [me]


class IssuerCredential:
    """An `azure-identity` TokenCredential backed by the stack's issuer: what
    `DefaultAzureCredential` is to a managed identity in Azure."""

    def __init__(self, stack: LocalStack, who: str) -> None:
        self.stack, self.who, self.scopes = stack, who, []

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.append(scopes)
        token = self.stack.entra_token(roles=["Cirrus.User"], oid=self.who, app=True, ttl_s=600)
        return AccessToken(token, int(time.time()) + 600)


def test_azure_openai_with_an_azure_identity_token_provider_as_a_managed_identity(stack):
    app_oid = oid()
    policy(stack, object_ids=[app_oid], name="daemon")
    credential = IssuerCredential(stack, app_oid)
    provider = get_bearer_token_provider(credential, f"{LOCAL_AUDIENCE}/.default")
    client = openai.AzureOpenAI(  # as its docs say, with Cirrus as the endpoint
        azure_endpoint=stack.base_url,
        azure_ad_token_provider=provider,
        api_version="2024-10-21",
        max_retries=0,
    )
    completion = client.chat.completions.create(model="cirrus-local", messages=HELLO)  # the deployment
    assert completion.choices[0].message.content
    embedded = client.embeddings.create(model="cirrus-embed", input="hello")
    assert embedded.data[0].embedding
    assert credential.scopes == [(f"{LOCAL_AUDIENCE}/.default",)]
    # The same callback as any SDK's key.
    embeddings = openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=provider(), max_retries=0)
    assert embeddings.models.list().data


def test_the_anthropic_sdk_with_a_token_gets_anthropics_envelope_when_refused(stack):
    me = oid()
    policy(stack, object_ids=[me])
    client = anthropic.Anthropic(base_url=stack.base_url, auth_token=user(stack, me), max_retries=0)
    message = client.messages.create(model="cirrus-local", max_tokens=16, messages=HELLO)
    assert message.content[0].text
    expired = anthropic.Anthropic(base_url=stack.base_url, api_key=user(stack, me, ttl_s=-600), max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as refused:
        expired.messages.create(model="cirrus-local", max_tokens=16, messages=HELLO)
    assert (
        refused.value.body["type"] == "error"
        and refused.value.body["error"]["type"] == "authentication_error"
    )


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    return ".".join([part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(signature)])


def test_every_kind_of_bad_token_is_a_plain_401_and_the_reason_is_only_in_the_log(stack):
    me = oid()
    policy(stack, object_ids=[me])
    good = user(stack, me)
    claims = json.loads(base64.urlsafe_b64decode(good.split(".")[1] + "=="))
    bad = {
        "expired": user(stack, me, ttl_s=-600),
        "wrong audience": user(stack, me, audience="api://someone-else"),
        "wrong issuer": _unsigned(
            {"alg": "RS256", "kid": "x"}, {**claims, "iss": "https://evil.example/v2.0"}
        ),
        "signed by a key the issuer never published": user(stack, me, key=SigningKey.generate()),
        "alg none": _unsigned({"alg": "none", "typ": "JWT"}, claims),
        "HS256": _unsigned({"alg": "HS256", "typ": "JWT"}, claims, b"x" * 32),
        "garbage": "eyJhbGciOiJSUzI1NiJ9.not-base64!.x",
    }
    for why, token in bad.items():
        response = httpx.post(
            f"{stack.base_url}/v1/chat/completions",
            headers=bearer(token),
            json={"model": "cirrus-local", "messages": HELLO},
        )
        assert response.status_code == 401, (why, response.text)
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key"), why
        assert error["message"] == "Incorrect API key provided.", why  # no reason given to the client
    assert chat(stack, good).http_response.status_code == 200


def test_a_token_without_a_role_or_without_a_policy_is_a_403_that_says_which(stack):
    nobody = oid()
    no_role = httpx.get(f"{stack.base_url}/v1/models", headers=bearer(stack.entra_token(oid=nobody)))
    assert no_role.status_code == 403 and "app role" in no_role.json()["error"]["message"]
    no_policy = httpx.get(f"{stack.base_url}/v1/models", headers=bearer(user(stack, nobody)))
    assert no_policy.status_code == 403 and "policy" in no_policy.json()["error"]["message"]


def test_a_groups_policy_limits_everyone_in_it_together(stack):
    group = oid()
    policy(stack, group_ids=[group], rpm_limit=2)
    alice, bob = user(stack, oid(), groups=[group]), user(stack, oid(), groups=[group])
    if time.time() % 60 > 55:  # all three requests in one minute's window
        time.sleep(60 - time.time() % 60 + 0.05)
    assert chat(stack, alice).http_response.status_code == 200
    assert chat(stack, bob).http_response.status_code == 200
    with pytest.raises(openai.RateLimitError) as limited:
        chat(stack, alice)
    assert limited.value.response.headers["x-ratelimit-remaining-requests"] == "0"


def test_principals_see_their_own_and_their_teams_resources_only(stack):
    team = f"team-{uuid.uuid4().hex[:6]}"
    alice, bob, eve = oid(), oid(), oid()
    policy(stack, object_ids=[alice, bob], team_id=team)
    policy(stack, object_ids=[eve])
    created = httpx.post(f"{stack.base_url}/v1/sessions", headers=bearer(user(stack, alice)), json={})
    assert created.status_code in (200, 201), created.text
    path = f"{stack.base_url}/v1/sessions/{created.json()['id']}"
    assert httpx.get(path, headers=bearer(user(stack, bob))).status_code == 200  # same team
    assert httpx.get(path, headers=bearer(user(stack, eve))).status_code == 404  # another tenant
    assert httpx.get(path, headers=bearer(stack.master_key)).status_code == 200


# --- admins and the audit log ---------------------------------------------------------------------


def test_an_entra_admin_manages_keys_and_the_audit_log_says_who_revoked_one(stack):
    me = oid()
    token = stack.entra_token(roles=["Cirrus.Admin"], oid=me, name="ops@contoso.test")
    with httpx.Client(base_url=stack.base_url, headers=bearer(token), timeout=30) as ops:
        key = ops.post("/v1/keys", json={"key_alias": "audited", "rpm_limit": 5}).json()
        assert ops.patch(f"/v1/keys/{key['id']}", json={"rpm_limit": 9}).status_code == 200
        assert ops.delete(f"/v1/keys/{key['id']}").status_code == 200
        page = ops.get("/v1/audit", params={"target_id": key["id"]}).json()
    assert [e["action"] for e in page["data"]] == ["key.revoke", "key.update", "key.create"]
    revoked, updated, _created = page["data"]
    assert revoked["actor"] == {"id": f"entra_{me}", "kind": "entra", "name": "ops@contoso.test"}
    assert revoked["client_ip"] == LOOPBACK and revoked["request_id"].startswith("req_")
    assert (updated["before"]["rpm_limit"], updated["after"]["rpm_limit"]) == (5, 9)
    assert key["key"] not in json.dumps(page) and key["key_name"].removesuffix("...") not in json.dumps(page)
    with admin(stack) as http:  # filters: by actor, and an action prefix
        mine = http.get("/v1/audit", params={"actor_id": f"entra_{me}", "action": "key."}).json()["data"]
        assert {e["target"]["id"] for e in mine} == {key["id"]}
        assert http.get("/v1/audit", params={"limit": 0}).status_code == 400
    user_token = user(stack, oid())
    assert httpx.get(f"{stack.base_url}/v1/audit", headers=bearer(user_token)).status_code == 403


def test_the_audit_log_pages_newest_first_with_a_cursor(stack):
    with admin(stack) as http:
        key = http.post("/v1/keys", json={}).json()
        for limit in (1, 2, 3):
            assert http.patch(f"/v1/keys/{key['id']}", json={"rpm_limit": limit}).status_code == 200
        first = http.get("/v1/audit", params={"target_id": key["id"], "limit": 2}).json()
        rest = http.get("/v1/audit", params={"target_id": key["id"], "after": first["last_id"]}).json()
    assert first["has_more"] and not rest["has_more"]
    after = [e["after"]["rpm_limit"] for e in first["data"] + rest["data"]]
    assert after == [3, 2, 1, None]


def test_policies_through_the_admin_api_refuse_bad_input_and_duplicate_assignments(stack):
    me = oid()
    with admin(stack) as http:
        created = http.post("/v1/policies", json={"name": "p", "object_ids": [me]}).json()
        for body in (
            {"object_ids": ["not-a-guid"]},
            {"rpm_limit": 0},
            {"models": ["no-such-model"]},
            {"unknown": 1},
            {"budget_duration": "fortnightly"},
        ):
            response = http.post("/v1/policies", json=body)
            assert response.status_code == 400, body
            assert response.json()["error"]["type"] == "invalid_request_error"
        duplicate = http.post("/v1/policies", json={"object_ids": [me.upper()]})
        assert duplicate.status_code == 409 and created["id"] in duplicate.json()["error"]["message"]
        assert http.get(f"/v1/policies/{created['id']}").json()["object_ids"] == [me]
        listed = http.get("/v1/policies", params={"limit": 100}).json()
        assert created["id"] in {p["id"] for p in listed["data"]}
        assert http.delete(f"/v1/policies/{created['id']}").json() == {
            "id": created["id"],
            "object": "policy.deleted",
            "deleted": True,
        }
        assert http.get("/v1/policies/pol_nope").status_code == 404
        actions = [
            e["action"] for e in http.get("/v1/audit", params={"target_id": created["id"]}).json()["data"]
        ]
    assert actions == ["policy.delete", "policy.create"]
    refused = httpx.get(f"{stack.base_url}/v1/models", headers=bearer(user(stack, me)))
    assert refused.status_code == 403  # its policy is gone


def test_the_console_signs_in_with_a_token_and_shows_the_callers_usage(stack):
    me = oid()
    policy(stack, object_ids=[me])
    token = user(stack, me, name="ana@contoso.test", ttl_s=900)
    assert chat(stack, token).http_response.status_code == 200
    with httpx.Client(base_url=stack.base_url, timeout=30) as browser:
        signed_in = browser.post("/console/api/session", json={"key": token})
        assert signed_in.status_code == 200, signed_in.text
        session = signed_in.json()
        assert (session["kind"], session["key_id"], session["is_master"]) == ("entra", f"entra_{me}", False)
        assert session["expires_at"] <= time.time() + 900 + 5  # no longer than the token
        headers = {"x-cirrus-console": "1"}
        assert len(records_of(stack, f"entra_{me}", 1)) == 1
        mine = browser.get("/v1/usage/records", headers=headers).json()["data"]
        assert {r["key_id"] for r in mine} == {f"entra_{me}"}
        assert browser.get("/v1/keys", headers=headers).status_code == 403
        assert browser.delete("/console/api/session").status_code == 204
    with admin(stack) as http:
        audit = http.get("/v1/audit", params={"actor_id": f"entra_{me}", "action": "console."}).json()["data"]
    assert [e["action"] for e in audit] == ["console.sign_out", "console.sign_in"]


# --- the master key switched off ------------------------------------------------------------------


@pytest.fixture(scope="module")
def no_master_key(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A host of the stack with CIRRUS_MASTER_KEY_ENABLED=false, with a database and queues of its
    own (on the stack's queues it would take other tests' work)."""
    suffix = uuid.uuid4().hex[:8]
    env = {
        **stack.env,
        "CIRRUS_MASTER_KEY_ENABLED": "false",
        "COSMOS_DATABASE": f"no-master-{suffix}",
        "JOBS_QUEUE": f"no-master-jobs-{suffix}",
        "BATCH_QUEUE": f"no-master-batches-{suffix}",
        "USAGE_QUEUE": f"no-master-usage-{suffix}",
    }
    port = free_port()
    host = local_host(port, env, tmp_path_factory.mktemp("no-master") / "funchost.log").start()
    try:
        host.wait_ready()
        yield f"http://{LOOPBACK}:{port}"
    finally:
        host.stop()


def test_with_the_master_key_off_only_entra_admins_administer(stack, no_master_key):
    refused = httpx.get(f"{no_master_key}/v1/keys", headers=bearer(stack.master_key))
    assert refused.status_code == 401 and "turned off" in refused.json()["error"]["message"]
    console = httpx.post(f"{no_master_key}/console/api/session", json={"key": stack.master_key})
    assert console.status_code == 401
    admin_token = stack.entra_token(roles=["Cirrus.Admin"], oid=oid())
    created = httpx.post(f"{no_master_key}/v1/keys", headers=bearer(admin_token), json={"key_alias": "x"})
    assert created.status_code == 201
    key = created.json()["key"]
    assert httpx.get(f"{no_master_key}/v1/models", headers=bearer(key)).status_code == 200
    failed = httpx.get(
        f"{no_master_key}/v1/audit", headers=bearer(admin_token), params={"action": "console.sign_in"}
    ).json()["data"]
    assert failed and failed[0]["outcome"] == "failure" and stack.master_key not in json.dumps(failed)


def test_an_entra_caller_follows_its_jobs_events_with_an_event_stream_token(stack):
    me = oid()
    policy(stack, object_ids=[me])
    token = user(stack, me)
    with api(stack, token) as client:
        job = submit(client, type="agent", input="What is 2 + 2?")
        assert wait(client, job["id"])["status"] == "completed"
        minted = client.post(f"/v1/jobs/{job['id']}/events/token")
    assert minted.status_code == 200, minted.text
    events = httpx.get(
        f"{stack.base_url}/v1/jobs/{job['id']}/events", params={"token": minted.json()["token"]}
    )
    assert events.status_code == 200
    assert [kind for kind, _ in sse_events(events.text)][-1] == "job.completed"
    other = user(stack, oid())  # another identity cannot mint one for this job
    policy(stack, object_ids=[jwt_oid(other)])
    assert (
        httpx.post(f"{stack.base_url}/v1/jobs/{job['id']}/events/token", headers=bearer(other)).status_code
        == 404
    )


def jwt_oid(token: str) -> str:
    return json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["oid"]
