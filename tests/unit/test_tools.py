"""Built-in agent tools: safe arithmetic, reading files as their owner, SSRF-guarded http_get, search."""

import asyncio
import gzip
import ipaddress
import json
import re
import time

import httpx
import pytest

from shared.errors import InvalidRequestError
from shared.services.auth import Principal
from shared.services.files import FileService
from shared.services.tools import (
    BUILTIN_TOOLS,
    ToolBlocked,
    ToolContext,
    ToolError,
    ToolSettings,
    build_tools,
)
from shared.services.tools.calculator import CalculatorTool, calculate
from shared.services.tools.http_get import USER_AGENT, HttpGetTool
from shared.services.tools.network import on_allowlist, unsafe_address
from shared.services.tools.read_file import ReadFileTool
from shared.services.tools.web_search import WebSearchTool
from tests.fakes import InMemoryBlobStore, InMemoryDocumentStore
from tests.unit.tool_helpers import OTHER_PUBLIC_IP, PUBLIC_IP, FakeDNS, FakeWeb, http_tool, redirect, text

ALICE = Principal("key-alice", False)
BOB = Principal("key-bob", False)
MASTER = Principal("master", True)


class FakeSearch:
    def __init__(self, results=None, fail: Exception | None = None):
        self.results = results or []
        self.fail = fail
        self.calls: list[tuple[str, int]] = []

    async def search(self, query, limit):
        self.calls.append((query, limit))
        if self.fail:
            raise self.fail
        return self.results


@pytest.fixture
def files():
    return FileService(InMemoryDocumentStore(), InMemoryBlobStore(), "uploads")


def context(files, principal=ALICE, **settings):
    return ToolContext(principal=principal, files=files, settings=ToolSettings(**settings))


# --- registry and specs ---------------------------------------------------------------------------


def test_build_tools_by_name_in_order():
    tools = build_tools(["http_get", "calculator", "http_get"], ToolSettings())
    assert list(tools) == ["http_get", "calculator"]
    assert all(name == tool.name for name, tool in tools.items())


def test_build_tools_refuses_an_unknown_name():
    with pytest.raises(InvalidRequestError) as caught:
        build_tools(["calculator", "shell"], ToolSettings())
    assert caught.value.param == "tools"
    assert "shell" in caught.value.message


def test_web_search_needs_a_provider():
    with pytest.raises(InvalidRequestError) as caught:
        build_tools(["web_search"], ToolSettings())
    assert caught.value.param == "tools"
    assert "web_search" in build_tools(["web_search"], ToolSettings(search=FakeSearch()))


@pytest.mark.parametrize("name", BUILTIN_TOOLS)
def test_every_spec_is_a_strict_openai_function(name):
    tool = build_tools([name], ToolSettings(search=FakeSearch()))[name]
    spec = tool.spec()
    assert spec["type"] == "function"
    function = spec["function"]
    assert function["name"] == name
    assert function["description"]
    parameters = function["parameters"]
    assert parameters["type"] == "object"
    assert parameters["additionalProperties"] is False
    assert parameters["required"]
    assert set(parameters["required"]) <= set(parameters["properties"])
    json.dumps(spec)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "Missing required argument 'expression'"),
        ({"expression": 12}, "'expression' must be a string"),
        ({"expression": ""}, "'expression' must not be empty"),
        ({"expression": "1", "mode": "x"}, "Unknown argument(s): mode"),
        ("1+1", "must be a JSON object"),
    ],
)
async def test_arguments_are_checked(files, arguments, message):
    with pytest.raises(ToolError) as caught:
        await CalculatorTool().run(arguments, context(files))
    assert message in caught.value.message


async def test_an_integer_argument_is_not_a_bool(files):
    with pytest.raises(ToolError, match="'max_chars' must be an integer"):
        await ReadFileTool().run({"file_id": "file-x", "max_chars": True}, context(files))


# --- calculator -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ("1 + 2", "3"),
        ("2 * (3 + 4) ** 2 / sqrt(16)", "24.5"),
        ("7 // 2", "3"),
        ("7 % 3", "1"),
        ("-(-3) + +2", "5"),
        ("2 ** 10", "1024"),
        ("2 ** -1", "0.5"),
        ("10 / 4", "2.5"),
        ("round(2.567, 2)", "2.57"),
        ("min(3, 1, 2) + max(4, 5)", "6"),
        ("abs(-4.5)", "4.5"),
        ("floor(-2.5) + ceil(2.1)", "0"),
        ("log(8, 2)", "3.0"),
        ("exp(0) + sin(0) + cos(0) + tan(0)", "2.0"),
        ("round(pi, 4)", "3.1416"),
        ("round(e, 3)", "2.718"),
        ("1e3 + 0.5", "1000.5"),
    ],
)
async def test_calculator_evaluates_arithmetic(files, expression, result):
    assert await CalculatorTool().run({"expression": expression}, context(files)) == result


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("x + 1", "Unknown name 'x'"),
        ("__import__('os').system('id')", "Unknown function"),
        ("(1).__class__", "not allowed"),
        ("pi.real", "not allowed"),
        ("open('/etc/passwd')", "Unknown function 'open'"),
        ("eval('1')", "Unknown function 'eval'"),
        ("math.sqrt(4)", "Unknown function"),
        ("(lambda: 1)()", "Unknown function"),
        ("lambda: 1", "not allowed"),
        ("[1, 2]", "not allowed"),
        ("1 if 1 else 2", "not allowed"),
        ("1 < 2", "not allowed"),
        ("1 << 100", "not allowed"),
        ("'a' * 3", "Only numbers"),
        ("True + 1", "Only numbers"),
        ("1j * 1j", "Only numbers"),
        ("sqrt(x=4)", "positional"),
        ("sqrt(*[4])", "positional"),
        ("sqrt(1, 2)", "takes 1 argument"),
        ("max(1)", "at least 2"),
        ("9 ** 9 ** 9", "too large"),
        ("2 ** 100000", "too large"),
        ("(-3) ** 99999", "too large"),
        ("10.0 ** 400", "too large"),
        ("(2 ** 3000) * (2 ** 3000)", "too large"),
        ("1e308 * 10", "too large"),
        ("exp(1000)", "too large"),
        ("1 / 0", "Division by zero"),
        ("1 // 0", "Division by zero"),
        ("5 % 0", "Division by zero"),
        ("sqrt(-1)", "domain"),
        ("log(0)", "domain"),
        ("(-8) ** 0.5", "not a real number"),
        ("1 +", "not a valid arithmetic expression"),
        ("1; 2", "not a valid arithmetic expression"),
        ("1" * 501, "must be at most 500 characters"),
    ],
)
async def test_calculator_refuses(files, expression, message):
    with pytest.raises(ToolError) as caught:
        await CalculatorTool().run({"expression": expression}, context(files))
    assert message in caught.value.message


def test_calculator_refuses_a_huge_power_before_computing_it():
    # 9 ** 387420489 would take minutes; the check must answer at once.
    start = time.monotonic()
    with pytest.raises(ToolError):
        calculate("9 ** 9 ** 9 ** 9")
    assert time.monotonic() - start < 1


# --- read_file ------------------------------------------------------------------------------------


async def upload(files, filename, content, principal=ALICE):
    return (await files.create(principal, filename=filename, purpose="user_data", content=content)).id


async def read(files, file_id, principal=ALICE, **settings):
    return await ReadFileTool().run({"file_id": file_id}, context(files, principal, **settings))


async def test_read_file_returns_text(files):
    file_id = await upload(files, "notes.txt", "héllo\nworld, again\nand, more\n".encode())
    out = await read(files, file_id)
    assert "'notes.txt'" in out
    assert out.endswith("héllo\nworld, again\nand, more\n")


async def test_read_file_summarises_csv(files):
    rows = "city,country,population\n" + "".join(f"c{i},x,{i}\n" for i in range(25))
    file_id = await upload(files, "cities.csv", rows.encode())
    out = await read(files, file_id)
    assert "CSV: 3 columns (city, country, population), 25 rows after the header." in out
    assert "First 10 rows:\ncity,country,population\nc0,x,0\n" in out
    assert "c9,x,9" in out
    assert "c10,x,10" not in out


async def test_read_file_sniffs_csv_without_an_extension(files):
    file_id = await upload(files, "export", b"a\tb\n1\t2\n3\t4\n")
    out = await read(files, file_id)
    assert "CSV: 2 columns (a, b), 2 rows after the header." in out


async def test_read_file_pretty_prints_json(files):
    file_id = await upload(files, "data.json", b'{"a": [1, 2], "b": "\xc3\xa9"}')
    out = await read(files, file_id)
    assert 'JSON:\n{\n  "a": [\n    1,\n    2\n  ],\n  "b": "é"\n}' in out


async def test_read_file_shows_invalid_json_as_text(files):
    file_id = await upload(files, "data.json", b'{"a": ')
    out = await read(files, file_id)
    assert '[not valid JSON; shown as text]\n{"a": ' in out


async def test_read_file_counts_jsonl_records(files):
    lines = "".join(json.dumps({"n": i}) + "\n" for i in range(30))
    file_id = await upload(files, "rows.jsonl", lines.encode())
    out = await read(files, file_id)
    assert "JSONL: 30 records." in out
    assert '1. {"n": 0}' in out
    assert '10. {"n": 9}' in out
    assert '{"n": 10}' not in out


@pytest.mark.parametrize(
    "content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"caf\xe9 latin-1", b"\xff\xfe\x00h"]
)
async def test_read_file_refuses_binary_and_non_utf8(files, content):
    file_id = await upload(files, "thing.txt", content)
    with pytest.raises(ToolError, match="read_file only reads UTF-8 text"):
        await read(files, file_id)


async def test_read_file_of_another_key_is_not_found(files):
    file_id = await upload(files, "secret.txt", b"alice's")
    with pytest.raises(ToolError) as caught:
        await read(files, file_id, principal=BOB)
    assert caught.value.message == f"File not found: {file_id}."
    assert "alice's" in await read(files, file_id, principal=MASTER)


async def test_read_file_of_an_unknown_id_or_missing_blob_is_not_found(files):
    with pytest.raises(ToolError, match="File not found"):
        await read(files, "file-nope")
    file_id = await upload(files, "gone.txt", b"x")
    files._blobs.blobs.clear()
    with pytest.raises(ToolError, match="File not found"):
        await read(files, file_id)


async def test_read_file_stops_reading_at_the_byte_cap(files):
    class ChunkedBlobs(InMemoryBlobStore):
        pulled = 0
        closed = False

        async def stream(self, container, name):
            try:
                for byte in self.blobs[(container, name)]:
                    ChunkedBlobs.pulled += 1
                    yield bytes([byte])
            finally:
                ChunkedBlobs.closed = True

    chunked = FileService(InMemoryDocumentStore(), ChunkedBlobs(), "uploads")
    file_id = await upload(chunked, "long.txt", b"0123456789" * 100)
    out = await read(chunked, file_id, file_max_bytes=25)
    assert "only the first 25 bytes were read" in out
    assert out.endswith("\n\n0123456789012345678901234")
    assert ChunkedBlobs.pulled == 26
    assert ChunkedBlobs.closed


async def test_read_file_cut_inside_a_character_is_not_an_error(files):
    file_id = await upload(files, "accents.txt", "é".encode() * 10)
    out = await read(files, file_id, file_max_bytes=5)
    assert out.endswith("\n\néé")


async def test_read_file_truncated_jsonl_and_csv_say_at_least(files):
    jsonl = await upload(files, "rows.jsonl", b'{"n": 1}\n{"n": 2}\n{"n": 3}\n')
    assert "JSONL: at least 2 records (the file was cut" in await read(files, jsonl, file_max_bytes=20)
    table = await upload(files, "t.csv", b"a,b\n1,2\n3,4\n5,6\n")
    assert "at least 2 rows after the header (the file was cut" in await read(files, table, file_max_bytes=14)


async def test_read_file_caps_its_output_at_max_chars(files):
    file_id = await upload(files, "big.txt", b"x" * 50_000)
    out = await read(files, file_id)
    assert len(out) == 20_000
    assert out.endswith("[output truncated to 20000 characters]")
    short = await ReadFileTool().run({"file_id": file_id, "max_chars": 500}, context(files))
    assert len(short) == 500
    with pytest.raises(ToolError, match="at most 100000"):
        await ReadFileTool().run({"file_id": file_id, "max_chars": 10**9}, context(files))


# --- http_get -------------------------------------------------------------------------------------


async def get(tool, url, files, **settings):
    settings.setdefault("http_allowlist", ("example.com",))
    return await tool.run({"url": url}, context(files, **settings))


async def test_http_get_fetches_an_allowlisted_host_at_its_vetted_address(files):
    web = FakeWeb({("example.com", "/page"): text("hi there")})
    tool = http_tool(web=web)
    out = await get(tool, "https://example.com/page?q=1", files)
    assert out == (
        "Status: 200 OK\nURL: https://example.com/page?q=1\n"
        "Content-Type: text/plain; charset=utf-8\n\nhi there"
    )
    (request,) = web.requests
    assert request.url.host == PUBLIC_IP  # pinned: the connection goes to the address that was checked
    assert request.url.port is None
    assert request.headers["host"] == "example.com"
    assert request.extensions["sni_hostname"] == "example.com"  # TLS and its certificate check use the name
    assert request.headers["user-agent"] == USER_AGENT
    assert not {"cookie", "authorization", "proxy-authorization"} & set(request.headers)


async def test_http_get_keeps_the_port_in_the_host_header(files):
    web = FakeWeb({("example.com:8080", "/"): text("ok")})
    out = await get(http_tool(web=web), "http://example.com:8080/", files)
    assert out.endswith("ok")
    assert web.requests[0].url.port == 8080
    assert "sni_hostname" not in web.requests[0].extensions


async def test_http_get_sends_no_cookies_even_across_redirects(files):
    web = FakeWeb(
        {
            ("example.com", "/a"): httpx.Response(
                302, headers={"location": "/b", "set-cookie": "s=1; Path=/"}
            ),
            ("example.com", "/b"): text("b"),
        }
    )
    await get(http_tool(web=web), "https://example.com/a", files)
    assert "cookie" not in web.requests[1].headers
    assert web.transports == 2  # a fresh connection pool per hop


@pytest.mark.parametrize(
    ("allowlist", "url"),
    [
        (("example.com",), "https://example.org/"),
        (("example.com",), "https://sub.example.com/"),
        (("*.example.com",), "https://example.com/"),
        (("*.example.com",), "https://badexample.com/"),
        ((), "https://example.com/"),
    ],
)
async def test_http_get_refuses_a_host_off_the_allowlist(files, allowlist, url):
    dns = FakeDNS({"example.org": [PUBLIC_IP], "example.com": [PUBLIC_IP]})
    web = FakeWeb()
    tool = HttpGetTool(resolver=dns, transport=web.transport)
    with pytest.raises(ToolBlocked) as caught:
        await get(tool, url, files, http_allowlist=allowlist)
    assert "not on the allowlist" in caught.value.reason
    assert caught.value.message.startswith("Request refused: host ")
    assert dns.lookups == []
    assert web.requests == []


def test_allowlist_matching():
    assert on_allowlist("example.com", ["Example.COM."])
    assert on_allowlist("api.example.com", ["*.example.com"])
    assert on_allowlist("a.b.example.com", ["*.example.com"])
    assert not on_allowlist("example.com", ["*.example.com"])
    assert not on_allowlist("evilexample.com", ["*.example.com"])
    assert not on_allowlist("example.com.evil.net", ["example.com", "*.example.com"])
    assert not on_allowlist("", [""])


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local address 169.254.169.254"),
        ("http://127.0.0.1:8080/", "loopback address 127.0.0.1"),
        ("http://localhost/", "localhost is an internal name"),
        ("http://LOCALHOST./", "localhost is an internal name"),
        ("http://app.localhost/", "internal name"),
        ("http://metadata.google.internal/computeMetadata/v1/", "internal name"),
        ("http://metadata.azure.com/", "internal name"),
        ("http://10.0.0.1/", "private address 10.0.0.1"),
        ("http://192.168.1.1/", "private address 192.168.1.1"),
        ("http://172.16.0.1/", "private address 172.16.0.1"),
        ("http://100.64.0.1/", "shared (carrier-grade NAT) address 100.64.0.1"),
        ("http://[::1]/", "loopback address ::1"),
        ("http://0.0.0.0/", "unspecified address 0.0.0.0"),
        ("http://[::]/", "unspecified address ::"),
        ("http://[::ffff:127.0.0.1]/", "loopback address 127.0.0.1 (as ::ffff:127.0.0.1)"),
        ("http://[::ffff:169.254.169.254]/", "link-local address 169.254.169.254"),
        ("http://[fe80::1]/", "link-local address fe80::1"),
        ("http://[fd00:ec2::254]/", "private address fd00:ec2::254"),
        ("http://224.0.0.1/", "multicast address 224.0.0.1"),
        ("http://240.0.0.1/", "reserved address 240.0.0.1"),
    ],
)
async def test_http_get_refuses_internal_addresses_even_when_allowlisted(files, url, reason):
    web = FakeWeb()
    host = httpx.URL(url).host.rstrip(".").lower()
    with pytest.raises(ToolBlocked) as caught:
        await get(http_tool(web=web), url, files, http_allowlist=(host,))
    assert reason in caught.value.reason
    assert web.requests == []


async def test_http_get_refuses_an_allowlisted_name_that_resolves_to_a_private_address(files):
    web = FakeWeb()
    tool = http_tool({"example.com": [PUBLIC_IP, "10.1.2.3"]}, web)  # any bad answer is enough
    with pytest.raises(ToolBlocked) as caught:
        await get(tool, "https://example.com/", files)
    assert caught.value.reason == "example.com resolves to private address 10.1.2.3"
    assert web.requests == []


async def test_http_get_refuses_a_redirect_to_the_metadata_endpoint(files):
    web = FakeWeb({("example.com", "/"): redirect("http://169.254.169.254/latest/meta-data/")})
    with pytest.raises(ToolBlocked) as caught:
        await get(http_tool(web=web), "https://example.com/", files)
    assert caught.value.reason == "link-local address 169.254.169.254"
    assert len(web.requests) == 1


async def test_http_get_refuses_a_redirect_off_the_allowlist(files):
    web = FakeWeb({("example.com", "/"): redirect("https://evil.example.net/x", 301)})
    tool = http_tool({"example.com": [PUBLIC_IP], "evil.example.net": [OTHER_PUBLIC_IP]}, web)
    with pytest.raises(ToolBlocked, match=re.escape("evil.example.net is not on the allowlist")):
        await get(tool, "https://example.com/", files)
    assert len(web.requests) == 1


async def test_http_get_vets_the_dns_answer_again_on_every_hop(files):
    # DNS rebinding: public for the first request, loopback by the time of the redirect.
    dns = FakeDNS({"example.com": [[PUBLIC_IP], ["127.0.0.1"]]})
    web = FakeWeb({("example.com", "/"): redirect("/admin")})
    with pytest.raises(ToolBlocked, match=re.escape("example.com resolves to loopback address 127.0.0.1")):
        await get(HttpGetTool(resolver=dns, transport=web.transport), "https://example.com/", files)
    assert dns.lookups == ["example.com", "example.com"]
    assert [r.url.host for r in web.requests] == [PUBLIC_IP]


async def test_http_get_follows_allowed_redirects(files):
    web = FakeWeb(
        {
            ("example.com", "/a"): redirect("/b", 307),
            ("example.com", "/b"): redirect("https://api.example.com/c", 308),
            ("api.example.com", "/c"): text('{"ok": true}', content_type="application/json"),
        }
    )
    tool = http_tool({"example.com": [PUBLIC_IP], "api.example.com": [OTHER_PUBLIC_IP]}, web)
    out = await get(tool, "http://example.com/a", files, http_allowlist=("example.com", "*.example.com"))
    assert out.startswith("Status: 200 OK\nURL: https://api.example.com/c\nContent-Type: application/json")
    assert out.endswith('{"ok": true}')
    assert [r.url.host for r in web.requests] == [PUBLIC_IP, PUBLIC_IP, OTHER_PUBLIC_IP]


async def test_http_get_stops_after_too_many_redirects(files):
    web = FakeWeb({("example.com", "/loop"): redirect("/loop")})
    with pytest.raises(ToolError, match="Stopped after 2 redirects"):
        await get(
            http_tool(web=web),
            "https://example.com/loop",
            files,
            http_max_redirects=2,
        )
    assert len(web.requests) == 3


async def test_http_get_caps_the_body(files):
    chunks_sent = 0

    async def endless(request):
        async def body():
            nonlocal chunks_sent
            for _ in range(10_000):
                chunks_sent += 1
                yield b"a" * 100

        return httpx.Response(200, headers={"content-type": "text/plain"}, content=body())

    web = FakeWeb({("example.com", "/"): endless})
    out = await get(http_tool(web=web), "https://example.com/", files, http_max_bytes=1000)
    assert out.endswith("a" * 1000 + "\n[truncated: only the first 1000 bytes of the body were read]")
    assert chunks_sent < 20


async def test_http_get_caps_a_compressed_body_after_decompressing_it(files):
    bomb = gzip.compress(b"a" * 20_000_000)  # about 20 KB on the wire
    web = FakeWeb({("example.com", "/"): text(bomb, **{"content-encoding": "gzip"})})
    out = await get(http_tool(web=web), "https://example.com/", files, http_max_bytes=1000)
    assert out.endswith(
        "\n\n" + "a" * 1000 + "\n[truncated: only the first 1000 bytes of the body were read]"
    )
    assert web.requests[0].headers["accept-encoding"] == "identity"


async def test_http_get_reads_a_small_gzip_body(files):
    web = FakeWeb({("example.com", "/"): text(gzip.compress(b"zipped"), **{"content-encoding": "gzip"})})
    out = await get(http_tool(web=web), "https://example.com/", files)
    assert out.endswith("\n\nzipped")


async def test_http_get_times_out(files):
    async def slow(request):
        await asyncio.sleep(5)
        return text()

    web = FakeWeb({("example.com", "/"): slow})
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(ToolError, match=re.escape("timed out after 0.2 seconds")):
        await get(http_tool(web=web), "https://example.com/", files, http_timeout_s=0.2)
    assert loop.time() - start < 2


async def test_http_get_times_out_on_a_slow_body(files):
    async def trickle(request):
        async def body():
            for _ in range(100):
                await asyncio.sleep(0.05)
                yield b"x"

        return httpx.Response(200, headers={"content-type": "text/plain"}, content=body())

    web = FakeWeb({("example.com", "/"): trickle})
    with pytest.raises(ToolError, match="timed out"):
        await get(http_tool(web=web), "https://example.com/", files, http_timeout_s=0.3)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/x",
        "gopher://example.com/",
        "javascript:alert(1)",
        "example.com/x",
    ],
)
async def test_http_get_refuses_other_schemes(files, url):
    web = FakeWeb()
    with pytest.raises(ToolBlocked, match="only http and https"):
        await get(http_tool(web=web), url, files)
    assert web.requests == []


async def test_http_get_refuses_a_redirect_to_another_scheme(files):
    web = FakeWeb({("example.com", "/"): redirect("file:///etc/passwd")})
    with pytest.raises(ToolBlocked, match="only http and https"):
        await get(http_tool(web=web), "https://example.com/", files)


@pytest.mark.parametrize("url", ["http://[::1/", "http://a\u00a0b.com/"])
async def test_http_get_says_an_invalid_url_is_invalid(files, url):
    with pytest.raises(ToolError, match="not a valid URL") as caught:
        await get(http_tool(), url, files)
    assert not isinstance(caught.value, ToolBlocked)


async def test_http_get_matches_an_international_name_by_its_idna_form(files):
    web = FakeWeb({("xn--bcher-kva.de", "/"): text("bücher")})
    dns = {"xn--bcher-kva.de": [PUBLIC_IP]}
    out = await get(http_tool(dns, web), "https://bücher.de/", files, http_allowlist=("xn--bcher-kva.de",))
    assert out.endswith("bücher")


async def test_http_get_refuses_credentials_in_the_url(files):
    with pytest.raises(ToolBlocked, match="credentials"):
        await get(http_tool(), "https://user:pw@example.com/", files)


async def test_http_get_refuses_binary_responses(files):
    web = FakeWeb(
        {
            ("example.com", "/img"): text(b"\x89PNG", content_type="image/png"),
            ("example.com", "/blob"): httpx.Response(200, content=b"\x00\x01\x02"),
        }
    )
    tool = http_tool(web=web)
    with pytest.raises(ToolError, match="image/png, not text") as caught:
        await get(tool, "https://example.com/img", files)
    assert not isinstance(caught.value, ToolBlocked)
    with pytest.raises(ToolError, match="binary"):
        await get(tool, "https://example.com/blob", files)


async def test_http_get_returns_error_statuses_and_decodes_the_charset(files):
    web = FakeWeb({("example.com", "/"): text("café".encode("latin-1"), 503, "text/html; charset=latin-1")})
    out = await get(http_tool(web=web), "https://example.com/", files)
    assert out.startswith("Status: 503 Service Unavailable\n")
    assert out.endswith("café")


async def test_http_get_tries_the_next_vetted_address_when_one_does_not_answer(files):
    async def down_then_up(request):
        if request.url.host == PUBLIC_IP:
            raise httpx.ConnectError("connection refused")
        return text("second")

    web = FakeWeb({("example.com", "/"): down_then_up})
    out = await get(
        http_tool({"example.com": [PUBLIC_IP, OTHER_PUBLIC_IP]}, web), "https://example.com/", files
    )
    assert out.endswith("second")
    assert [r.url.host for r in web.requests] == [PUBLIC_IP, OTHER_PUBLIC_IP]


async def test_http_get_refuses_a_connection_whose_peer_is_not_the_vetted_address(files):
    class Stream:
        def get_extra_info(self, name):
            return ("10.9.9.9", 443) if name == "server_addr" else None

    web = FakeWeb(
        {("example.com", "/"): httpx.Response(200, text="x", extensions={"network_stream": Stream()})}
    )
    with pytest.raises(
        ToolBlocked, match=re.escape(f"connected to 10.9.9.9, not the vetted address {PUBLIC_IP}")
    ):
        await get(http_tool(web=web), "https://example.com/", files)


async def test_http_get_reports_dns_and_connection_failures(files):
    with pytest.raises(ToolError, match=re.escape("Could not resolve the host example.com")):
        await get(http_tool({}), "https://example.com/", files)

    async def refuse(request):
        raise httpx.ConnectError("connection refused")

    web = FakeWeb({("example.com", "/"): refuse})
    with pytest.raises(ToolError, match=re.escape("Could not connect to example.com")):
        await get(http_tool(web=web), "https://example.com/", files)


async def test_http_get_allows_an_allowlisted_public_ip_literal(files):
    web = FakeWeb({(PUBLIC_IP, "/"): text("by address")})
    out = await get(http_tool(web=web), f"https://{PUBLIC_IP}/", files, http_allowlist=(PUBLIC_IP,))
    assert out.endswith("by address")
    assert "sni_hostname" not in web.requests[0].extensions


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),  # NAT64 of a public address
        ("64:ff9b::a00:1", "private address 10.0.0.1 (as 64:ff9b::a00:1)"),
        ("2002:7f00:1::", "loopback address 127.0.0.1 (as 2002:7f00:1::)"),
        ("::127.0.0.1", "reserved address ::7f00:1"),
        ("198.18.0.1", "private address 198.18.0.1"),
        ("192.0.2.1", "private address 192.0.2.1"),
        ("ff02::1", "multicast address ff02::1"),
        ("fc00::1", "private address fc00::1"),
        ("fe80::1%eth0", "link-local address fe80::1%eth0"),
        ("fec0::1", "site-local address fec0::1"),
        ("feff:ffff::1", "site-local address feff:ffff::1"),  # the top of fec0::/10
    ],
)
def test_unsafe_address(address, refused):
    assert unsafe_address(ipaddress.ip_address(address)) == refused


# --- web_search -----------------------------------------------------------------------------------


async def test_web_search_lists_results(files):
    search = FakeSearch(
        [
            {"title": "Cirrus", "url": "https://example.com/cirrus", "snippet": "An  LLM\ngateway."},
            {"title": "", "url": "https://example.com/2", "snippet": ""},
            {"title": "Third", "url": "https://example.com/3", "snippet": "more"},
        ]
    )
    out = await WebSearchTool().run({"query": "cirrus gateway", "limit": 2}, context(files, search=search))
    assert (
        out
        == "1. Cirrus\n   https://example.com/cirrus\n   An LLM gateway.\n2. (untitled)\n   https://example.com/2"
    )
    assert search.calls == [("cirrus gateway", 2)]


async def test_web_search_defaults_and_no_results(files):
    search = FakeSearch([])
    out = await WebSearchTool().run({"query": "nothing"}, context(files, search=search))
    assert out == "No results for 'nothing'."
    assert search.calls == [("nothing", 5)]


async def test_web_search_provider_failure_is_a_tool_error(files):
    search = FakeSearch(fail=RuntimeError("api key sk-secret rejected"))
    with pytest.raises(ToolError) as caught:
        await WebSearchTool().run({"query": "q"}, context(files, search=search))
    assert "sk-secret" not in caught.value.message


async def test_web_search_checks_its_limit(files):
    with pytest.raises(ToolError, match="'limit' must be at most 10"):
        await WebSearchTool().run({"query": "q", "limit": 50}, context(files, search=FakeSearch()))
