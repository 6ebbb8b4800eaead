"""tools.funchost's HTTP pipeline without servers: CORS (ASP.NET Core's policy, as Core Tools and the
Flex Consumption host build it) and host.json's customHeaders, in front of a recording app."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from tools.funchost.cors import CorsMiddleware, CorsPolicy, cors_policy, parse_origins
from tools.funchost.hostconfig import HostConfigError, parse_host_config
from tools.funchost.pipeline import host_pipeline

APP = "https://app.example.com"
OTHER = "https://other.example.com"
EVIL = "https://evil.example"


class FunctionApp:
    """Stands in for the host's routing and the function: records calls, answers with headers."""

    def __init__(self, headers: list[tuple[str, str]] | None = None) -> None:
        self.calls: list[str] = []
        self.headers = headers or []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append(scope["method"])
        raw = [(k.encode(), v.encode()) for k, v in [("content-type", "text/plain"), *self.headers]]
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        await send({"type": "http.response.body", "body": b"from the function"})


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://host")


def preflight(origin: str, method: str = "POST", headers: str | None = None) -> dict[str, str]:
    sent = {"origin": origin, "access-control-request-method": method}
    if headers is not None:
        sent["access-control-request-headers"] = headers
    return sent


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-") or k == "vary"}


# --- preflights ---------------------------------------------------------------------------------


async def test_a_preflight_from_an_allowed_origin_is_answered_before_any_function_runs() -> None:
    app = FunctionApp()
    async with client(CorsMiddleware(app, CorsPolicy((APP,)))) as http:
        response = await http.options(
            "/v1/chat/completions",
            headers=preflight(APP, "POST", "authorization, content-type,x-api-key, anthropic-version"),
        )
    assert response.status_code == 204
    assert response.content == b""
    assert cors_headers(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-methods": "POST",  # the requested method: AllowAnyMethod reflects it
        "access-control-allow-headers": "authorization,content-type,x-api-key,anthropic-version",
    }
    assert app.calls == []


async def test_a_preflight_for_any_path_and_method_is_answered() -> None:
    app = FunctionApp()
    async with client(CorsMiddleware(app, CorsPolicy((APP,)))) as http:
        for path, method in (("/v1/jobs/job_1/events", "GET"), ("/no/such/route", "DELETE"), ("/", "PUT")):
            response = await http.options(path, headers=preflight(APP, method, "last-event-id"))
            assert response.status_code == 204
            assert response.headers["access-control-allow-methods"] == method
            assert response.headers["access-control-allow-headers"] == "last-event-id"
    assert app.calls == []


async def test_a_preflight_from_a_refused_origin_gets_a_bare_204() -> None:
    app = FunctionApp()
    async with client(CorsMiddleware(app, CorsPolicy((APP,)))) as http:
        for origin in (EVIL, APP.upper(), APP + "/", "", "null"):
            response = await http.options("/v1/models", headers=preflight(origin, "GET", "authorization"))
            assert response.status_code == 204
            assert cors_headers(response) == {}, origin
    assert app.calls == []


async def test_options_without_a_request_method_or_without_origin_is_not_a_preflight() -> None:
    app = FunctionApp()
    async with client(CorsMiddleware(app, CorsPolicy((APP,)))) as http:
        no_origin = await http.options("/x", headers={"access-control-request-method": "GET"})
        assert cors_headers(no_origin) == {}
        plain = await http.options("/x", headers={"origin": APP})
        assert plain.headers["access-control-allow-origin"] == APP
        assert "access-control-allow-methods" not in plain.headers
    assert app.calls == ["OPTIONS", "OPTIONS"]  # both reach the routing (which answers 404 there)


async def test_credentials_on_and_off() -> None:
    for credentials in (False, True):
        async with client(CorsMiddleware(FunctionApp(), CorsPolicy((APP,), credentials))) as http:
            before = await http.options("/x", headers=preflight(APP))
            actual = await http.get("/x", headers={"origin": APP})
        for response in (before, actual):
            assert response.headers["access-control-allow-origin"] == APP
            assert response.headers.get("access-control-allow-credentials") == (
                "true" if credentials else None
            )


# --- actual requests ----------------------------------------------------------------------------


async def test_a_response_to_an_allowed_origin_carries_its_origin() -> None:
    app = FunctionApp()
    async with client(CorsMiddleware(app, CorsPolicy((APP,)))) as http:
        response = await http.post("/v1/chat/completions", headers={"origin": APP})
    assert response.text == "from the function"
    assert cors_headers(response) == {"access-control-allow-origin": APP}  # one origin: no Vary
    assert app.calls == ["POST"]


async def test_a_response_to_a_refused_origin_or_to_no_origin_is_the_functions_own() -> None:
    app = FunctionApp()
    async with client(CorsMiddleware(app, CorsPolicy((APP,)))) as http:
        refused = await http.get("/x", headers={"origin": EVIL})
        same_origin = await http.get("/x")
    assert cors_headers(refused) == {} and cors_headers(same_origin) == {}
    assert refused.text == same_origin.text == "from the function"


async def test_more_than_one_origin_adds_vary_origin() -> None:
    async with client(CorsMiddleware(FunctionApp([("vary", "Accept")]), CorsPolicy((APP, OTHER)))) as http:
        response = await http.get("/x", headers={"origin": OTHER})
        both = await http.options("/x", headers=preflight(APP))
    assert response.headers["access-control-allow-origin"] == OTHER
    assert response.headers.get_list("vary") == ["Accept", "Origin"]  # appended to the function's
    assert both.headers["vary"] == "Origin"


async def test_a_wildcard_allows_any_origin_without_credentials() -> None:
    async with client(CorsMiddleware(FunctionApp(), CorsPolicy(("*",)))) as http:
        response = await http.get("/x", headers={"origin": EVIL})
        before = await http.options("/x", headers=preflight(EVIL, "PATCH", "x-session-id"))
    assert cors_headers(response) == {"access-control-allow-origin": "*"}
    assert cors_headers(before) == {
        "access-control-allow-origin": "*",
        "access-control-allow-methods": "PATCH",
        "access-control-allow-headers": "x-session-id",
    }


def test_a_wildcard_with_credentials_is_refused() -> None:
    with pytest.raises(HostConfigError, match="wildcard"):
        CorsPolicy(("*",), support_credentials=True)


async def test_the_policy_sets_its_headers_over_a_functions_own_for_an_allowed_origin_only() -> None:
    own = [("access-control-allow-origin", "*"), ("access-control-max-age", "60")]
    async with client(CorsMiddleware(FunctionApp(own), CorsPolicy((APP,)))) as http:
        allowed = await http.get("/x", headers={"origin": APP})
        refused = await http.get("/x", headers={"origin": EVIL})
    # ASP.NET sets the headers it applies and leaves the rest, and leaves a refused request alone.
    assert cors_headers(allowed) == {"access-control-allow-origin": APP, "access-control-max-age": "60"}
    assert cors_headers(refused) == dict(own)


# --- settings -----------------------------------------------------------------------------------


def test_origins_are_split_on_commas_lower_cased_and_never_trimmed() -> None:
    assert parse_origins("https://A.example.com,,http://localhost:5173") == (
        "https://a.example.com",
        "http://localhost:5173",
    )
    assert parse_origins("") == ()
    assert parse_origins("https://a.example, https://b.example")[1] == " https://b.example"


def test_entries_that_can_never_match_are_warned_about() -> None:
    policy = CorsPolicy(
        parse_origins("https://a.example/,https://b.example, https://c.example,*,http://d:80")
    )
    warnings = policy.warnings()
    assert len(warnings) == 3
    assert "'https://a.example/'" in warnings[0]
    assert "' https://c.example'" in warnings[1]
    assert "'*'" in warnings[2]
    assert CorsPolicy(("*",)).warnings() == []


def write_settings(root: Path, host: dict[str, Any]) -> None:
    (root / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": {}, "Host": host}))


def test_local_settings_host_section_is_the_default(tmp_path: Path) -> None:
    assert cors_policy(tmp_path) == CorsPolicy()  # no file
    write_settings(tmp_path, {"LocalHttpPort": 7071})
    assert cors_policy(tmp_path) == CorsPolicy()
    write_settings(tmp_path, {"CORS": f"{APP},{OTHER}", "CORSCredentials": True})
    assert cors_policy(tmp_path) == CorsPolicy((APP, OTHER), True)
    write_settings(tmp_path, {"CORS": APP, "CORSCredentials": "false"})  # Json.NET takes strings too
    assert cors_policy(tmp_path) == CorsPolicy((APP,), False)


def test_command_line_options_win_over_local_settings(tmp_path: Path) -> None:
    write_settings(tmp_path, {"CORS": APP, "CORSCredentials": True})
    assert cors_policy(tmp_path, OTHER) == CorsPolicy((OTHER,), True)
    assert cors_policy(tmp_path, None, False) == CorsPolicy((APP,), False)
    assert cors_policy(tmp_path, "", False) == CorsPolicy()  # `--cors ''`: none


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ({"CORS": "*", "CORSCredentials": True}, "wildcard"),
        ({"CORS": ["https://a.example"]}, "Host.CORS"),
        ({"CORS": APP, "CORSCredentials": "yes"}, "Host.CORSCredentials"),
    ],
)
def test_invalid_host_settings_stop_the_host(tmp_path: Path, host: dict[str, Any], message: str) -> None:
    write_settings(tmp_path, host)
    with pytest.raises(HostConfigError, match=message):
        cors_policy(tmp_path)


def test_warnings_are_logged_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="funchost"):
        cors_policy(tmp_path, "https://a.example/")
    assert "no trailing slash" in caplog.text


# --- host.json customHeaders, and the pipeline's order ------------------------------------------


def test_custom_headers_are_read_from_host_json() -> None:
    config = parse_host_config({"extensions": {"http": {"customHeaders": {"X-Frame-Options": "DENY"}}}})
    assert config.custom_headers == (("X-Frame-Options", "DENY"),)
    assert parse_host_config({}).custom_headers == ()


@pytest.mark.parametrize("headers", [{"X-Count": 3}, {"bad name": "x"}, {"X-Split": "a\r\nb: c"}, []])
def test_invalid_custom_headers_name_the_setting(headers: Any) -> None:
    with pytest.raises(HostConfigError, match=r"extensions\.http\.customHeaders"):
        parse_host_config({"extensions": {"http": {"customHeaders": headers}}})


async def test_custom_headers_go_on_every_response_the_function_and_cors_did_not_set() -> None:
    custom = [("Access-Control-Expose-Headers", "x-request-id"), ("Vary", "Origin"), ("X-Custom", "host")]
    app = FunctionApp([("x-custom", "function")])
    async with client(host_pipeline(app, custom, CorsPolicy((APP, OTHER)))) as http:
        actual = await http.get("/x", headers={"origin": APP})
        before = await http.options("/x", headers=preflight(APP))
        no_origin = await http.get("/x")
    assert actual.headers["access-control-expose-headers"] == "x-request-id"
    assert actual.headers["x-custom"] == "function"  # TryAdd: the function's own wins
    assert actual.headers.get_list("vary") == ["Origin"]  # CORS set it first; not added twice
    assert before.status_code == 204 and before.headers["x-custom"] == "host"  # preflights too
    assert no_origin.headers["vary"] == "Origin"
    assert no_origin.headers["access-control-expose-headers"] == "x-request-id"
    assert "access-control-allow-origin" not in no_origin.headers
