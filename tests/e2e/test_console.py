"""End to end: the console over HTTP through the local host: its page and headers, signing in and
out, the session cookie on /v1, a virtual key's view, and the usage series and records it reads."""

from __future__ import annotations

import csv
import io
import time

import httpx
import pytest

from tests.conftest import LocalStack
from tests.e2e.helpers import wait_records

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
CONSOLE = {"X-Cirrus-Console": "1"}


def sign_in(client: httpx.Client, key: str) -> tuple[str, httpx.Response]:
    response = client.post("/console/api/session", json={"key": key})
    assert response.status_code == 200, response.text
    cookie = response.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    return cookie, response


def as_console(cookie: str) -> dict[str, str]:
    return {**CONSOLE, "Cookie": f"cirrus_console={cookie}"}


@pytest.fixture
def http(stack: LocalStack):
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        yield client


def test_the_page_and_its_files_are_served_with_the_security_headers(http):
    for path in ("/console", "/console/", "/console/keys/new"):  # hash routing: pages are index.html
        page = http.get(path)
        assert page.status_code == 200, path
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == CSP
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-cache"
    vendor = http.get("/console/vendor/uPlot.esm.js")
    assert vendor.status_code == 200 and vendor.headers["content-type"].startswith("text/javascript")
    assert "immutable" in vendor.headers["cache-control"]
    for missing in ("/console/nope.js", "/console/%2e%2e/function_app.py", "/console/.hidden.txt"):
        answer = http.get(missing)
        assert answer.status_code == 404, missing
        assert answer.json()["error"]["code"] == "unknown_url"
        assert answer.headers["content-security-policy"] == CSP


def test_sign_in_sets_a_strict_cookie_that_works_on_v1_only_with_the_console_header(stack, http):
    cookie, response = sign_in(http, stack.master_key)
    assert response.json()["is_master"] is True and response.json()["key_id"] is None
    assert response.json()["expires_at"] > time.time() + 8 * 3600 - 60
    attributes = [a.strip() for a in response.headers["set-cookie"].split(";")]
    assert {"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"} <= set(attributes)
    assert "Secure" not in attributes  # CIRRUS_ENV=local serves plain HTTP
    assert stack.master_key not in response.headers["set-cookie"]

    assert http.get("/console/api/session", headers={"Cookie": f"cirrus_console={cookie}"}).status_code == 200
    assert http.get("/v1/usage", headers=as_console(cookie)).status_code == 200
    alone = http.get("/v1/usage", headers={"Cookie": f"cirrus_console={cookie}"})  # no CSRF header
    assert alone.status_code == 401 and alone.json()["error"]["code"] == "invalid_api_key"

    out = http.delete("/console/api/session", headers={"Cookie": f"cirrus_console={cookie}"})
    assert out.status_code == 204 and "Max-Age=0" in out.headers["set-cookie"]
    replayed = http.get("/console/api/session", headers={"Cookie": f"cirrus_console={cookie}"})
    assert replayed.status_code == 401
    assert http.get("/v1/models", headers=as_console(cookie)).status_code == 401


def test_bad_sign_ins_answer_in_openais_envelope(http):
    bad = http.post("/console/api/session", json={"key": "sk-cirrus-not-a-key"})
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    assert "set-cookie" not in bad.headers
    form = http.post("/console/api/session", content=b'{"key": "x"}', headers={"Content-Type": "text/plain"})
    assert form.status_code == 400 and form.json()["error"]["type"] == "invalid_request_error"
    assert http.post("/console/api/session", json={"key": 5}).status_code == 400
    assert http.get("/console/api/session").status_code == 401
    assert (
        http.get("/console/api/session", headers={"Cookie": "cirrus_console=csess_x.1.y"}).status_code == 401
    )


def test_a_virtual_keys_session_sees_only_its_own_usage_and_no_admin_routes(stack, http):
    mine, other = stack.new_key(key_alias="console-mine"), stack.new_key(key_alias="console-other")
    for key in (mine, other):
        stack.client(key["key"]).chat.completions.create(
            model="cirrus-local", messages=[{"role": "user", "content": "hi"}]
        )
    master = {"Authorization": f"Bearer {stack.master_key}"}
    assert len(wait_records(http, master, other["id"], 1)) == 1
    cookie, response = sign_in(http, mine["key"])
    assert response.json() == {
        **response.json(),
        "key_id": mine["id"],
        "name": "console-mine",
        "is_master": False,
    }
    headers = as_console(cookie)
    assert len(wait_records(http, headers, mine["id"], 1)) == 1
    assert http.get("/v1/usage/records", params={"key_id": other["id"]}, headers=headers).json()["data"] == []
    everything = http.get("/v1/usage/records", headers=headers).json()["data"]
    assert {r["key_id"] for r in everything} == {mine["id"]}
    assert http.get("/v1/keys", headers=headers).status_code == 403
    grouped = http.get("/v1/usage/series", params={"group_by": "key"}, headers=headers)
    assert grouped.status_code == 403 and grouped.json()["error"]["param"] == "group_by"

    http.delete(f"/v1/keys/{mine['id']}", headers=master)  # revoking the key ends its sessions
    assert http.get("/v1/usage", headers=headers).status_code == 401


def test_series_records_and_csv(stack, http):
    key = stack.new_key(key_alias="console-usage")
    client = stack.client(key["key"])
    for _ in range(3):
        client.chat.completions.create(model="cirrus-local", messages=[{"role": "user", "content": "hi"}])
    master = {"Authorization": f"Bearer {stack.master_key}"}
    records = wait_records(http, master, key["id"], 3)
    assert len(records) == 3 and records == sorted(records, key=lambda r: -r["created_at"])

    first = http.get("/v1/usage/records", params={"key_id": key["id"], "limit": 2}, headers=master).json()
    assert first["has_more"] is True and len(first["data"]) == 2
    rest = http.get(
        "/v1/usage/records",
        params={"key_id": key["id"], "limit": 2, "after": first["last_id"]},
        headers=master,
    ).json()
    assert rest["has_more"] is False and [r["id"] for r in first["data"] + rest["data"]] == [
        r["id"] for r in records
    ]
    assert (
        http.get("/v1/usage/records", params={"key_id": key["id"], "model": "nope"}, headers=master).json()[
            "data"
        ]
        == []
    )

    series = http.get("/v1/usage/series", params={"group_by": "key"}, headers=master).json()
    assert series["object"] == "list" and series["bucket"] == "day"
    mine = [p for p in series["data"] if p["group"] == key["id"]]
    assert sum(p["requests"] for p in mine) == 3 and all(p["errors"] == 0 for p in mine)
    by_model = http.get("/v1/usage/series", params={"group_by": "model"}, headers=master).json()["data"]
    assert any(p["group"] == "cirrus-local" and p["requests"] >= 3 for p in by_model)

    exported = http.get("/v1/usage/records", params={"key_id": key["id"], "format": "csv"}, headers=master)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert exported.headers["content-disposition"].startswith("attachment")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["id"] for r in rows] == [r["id"] for r in records] and rows[0]["key_id"] == key["id"]


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/v1/usage/series", {"bucket": "hour"}, "bucket"),
        ("/v1/usage/series", {"group_by": "team"}, "group_by"),
        ("/v1/usage/series", {"start": "2026-01-01", "end": "2025-01-01"}, "start"),
        ("/v1/usage/records", {"limit": "0"}, "limit"),
        ("/v1/usage/records", {"limit": "101"}, "limit"),
        ("/v1/usage/records", {"format": "xml"}, "format"),
        ("/v1/usage/records", {"after": "usage_nope"}, "after"),
        ("/v1/usage/records", {"start": "0", "end": "99999999"}, "start"),
    ],
)
def test_bad_usage_queries_answer_in_openais_envelope(stack, http, path, params, param):
    answer = http.get(path, params=params, headers={"Authorization": f"Bearer {stack.master_key}"})
    assert answer.status_code in (400, 404), answer.text
    assert answer.json()["error"]["param"] == param
