"""End to end: a browser app on another origin calling Cirrus through the local host's CORS.

The stack's host allows `stack.web_origin`, without credentials (tests/conftest.py), as `func start
--cors <origin>` would. CORS is the host's (tools/funchost/cors.py): preflights never reach the app.
The headers a browser may read come from host.json's `extensions.http.customHeaders`, which the
host adds to every response, as Azure's does.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import LocalStack

ROOT = Path(__file__).resolve().parents[2]
EVIL = "http://evil.example"
# What a browser client of each surface sends beyond the CORS-safelisted headers.
REQUESTED = "authorization,content-type,x-api-key,anthropic-version,x-session-id,last-event-id,x-request-id"
GRANTS = ("access-control-allow-origin", "access-control-allow-credentials")


def exposed() -> set[str]:
    custom = json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["customHeaders"]
    return {name.strip() for name in custom["Access-Control-Expose-Headers"].split(",")}


def preflight(origin: str, method: str) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": method,
        "access-control-request-headers": REQUESTED,
    }


def routes(stack: LocalStack) -> list[tuple[str, str]]:
    """Every operation of /openapi.json, its path parameters filled in, plus the console."""
    document = httpx.get(f"{stack.base_url}/openapi.json", timeout=30).json()
    found = [("GET", "/console"), ("GET", "/v1/no/such/route")]
    for path, operations in document["paths"].items():
        concrete = path.replace("{", "").replace("}", "")
        found += [(method.upper(), concrete) for method in operations]
    return found


def test_every_route_answers_a_preflight_from_an_allowed_origin(stack: LocalStack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=30) as http:
        for method, path in routes(stack):
            response = http.options(path, headers=preflight(stack.web_origin, method))
            assert response.status_code == 204, (method, path)
            assert response.content == b""
            assert response.headers["access-control-allow-origin"] == stack.web_origin
            assert response.headers["access-control-allow-methods"] == method
            assert response.headers["access-control-allow-headers"] == REQUESTED
            assert "access-control-allow-credentials" not in response.headers  # credentials off


def test_a_refused_origin_gets_no_grant_on_a_preflight_or_a_response(stack: LocalStack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=30) as http:
        before = http.options("/v1/chat/completions", headers=preflight(EVIL, "POST"))
        answer = http.get(
            "/v1/models", headers={"origin": EVIL, "authorization": f"Bearer {stack.master_key}"}
        )
    assert before.status_code == 204 and before.content == b""
    assert not [name for name in before.headers if name.startswith("access-control-allow-")]
    assert answer.status_code == 200
    assert not [name for name in answer.headers if name in GRANTS]
    # host.json's custom headers go on every response, as in Azure; without a matching
    # Access-Control-Allow-Origin a browser lets the page read nothing of it.
    assert answer.headers["vary"] == "Origin"


@pytest.mark.parametrize("stream", [False, True])
def test_a_browser_may_read_cirrus_headers_from_a_chat_answer(stack: LocalStack, stream: bool) -> None:
    key = stack.new_key(rpm_limit=1000, tpm_limit=1_000_000)["key"]
    headers = {"origin": stack.web_origin, "authorization": f"Bearer {key}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as http:
        session = http.post("/v1/sessions", json={"title": "cors"}).json()["id"]
        body = {
            "model": "cirrus-local",
            "stream": stream,
            "messages": [{"role": "user", "content": f"cors {uuid.uuid4().hex}"}],
        }
        with http.stream(
            "POST", "/v1/chat/completions", json=body, headers={"x-session-id": session}
        ) as answer:
            assert answer.status_code == 200
            assert answer.headers["access-control-allow-origin"] == stack.web_origin
            assert answer.headers["vary"] == "Origin"
            sent = {name for name in answer.headers if name.startswith(("x-cirrus-", "x-ratelimit-"))}
            answer.read()
    assert {"x-cirrus-model", "x-cirrus-session", "x-cirrus-cache", "x-ratelimit-remaining-tokens"} <= sent
    assert sent | {"x-request-id"} <= exposed()
    assert {name.strip() for name in answer.headers["access-control-expose-headers"].split(",")} == exposed()


def test_an_error_is_readable_by_the_allowed_origin(stack: LocalStack) -> None:
    key = stack.new_key(rpm_limit=1)["key"]
    headers = {"origin": stack.web_origin, "authorization": f"Bearer {key}"}
    body = {"model": "cirrus-local", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=30) as http:
        unauthorised = http.get("/v1/models", headers={"authorization": "Bearer sk-not-a-key"})
        answers = [http.post("/v1/chat/completions", json=body) for _ in range(3)]
    limited = next(answer for answer in answers if answer.status_code == 429)
    for response in (unauthorised, limited):
        assert response.headers["access-control-allow-origin"] == stack.web_origin
        assert response.json()["error"]["message"]
    assert {"retry-after", "x-ratelimit-remaining-requests"} <= exposed() & set(limited.headers)
