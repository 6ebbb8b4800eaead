"""tools/batch_cli.py against a fake Batch API: the official SDK over httpx.MockTransport, no network."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import openai
import pytest

from tools import batch_cli
from tools.batch_cli import main

API_KEY = "sk-test-secret-never-printed"
BASE_URL = "http://gateway.test/v1"
CREATED_AT = 1_711_471_533

OUTPUT_LINES = [
    {
        "id": "batch_req_1",
        "custom_id": "q1",
        "response": {"status_code": 200, "body": {"id": "c1"}},
        "error": None,
    },
    {
        "id": "batch_req_2",
        "custom_id": "q2",
        "response": {"status_code": 200, "body": {"id": "c2"}},
        "error": None,
    },
    {
        "id": "batch_req_3",
        "custom_id": "q3",
        "response": {"status_code": 200, "body": {"id": "c3"}},
        "error": None,
    },
]
ERROR_LINES = [
    {
        "id": "batch_req_4",
        "custom_id": "q4",
        "response": {"status_code": 400, "body": {"error": {"message": "bad model"}}},
        "error": None,
    }
]


def jsonl(items) -> bytes:
    return b"".join(json.dumps(i).encode() + b"\n" for i in items)


def request_line(n, url="/v1/chat/completions", **overrides):
    line = {
        "custom_id": f"q{n}",
        "method": "POST",
        "url": url,
        "body": {"model": "cirrus-local", "messages": [{"role": "user", "content": f"question {n}"}]},
    }
    return {**line, **overrides}


class FakeGateway:
    """OpenAI's Files and Batch endpoints, with each retrieve advancing the batch through `script`.

    `script` is a list of dicts of Batch fields (status, request_counts, output_file_id, ...);
    creation returns the first, each `GET /batches/{id}` the next (the last one repeats).
    """

    def __init__(self, script, *, files=None, fail_polls=0):
        self.script = script
        self.step = 0
        self.files = dict(files or {})
        self.fail_polls = fail_polls
        self.requests: list[httpx.Request] = []
        self.uploads: list[bytes] = []
        self.created: list[dict] = []
        self.batch_id = "batch_abc123"
        self.input_file_id = "file-in1"

    def batch(self, **fields):
        body = {
            "id": self.batch_id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": CREATED_AT,
            "in_progress_at": None,
            "expires_at": CREATED_AT + 86_400,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": None,
        }
        if self.created:
            body["metadata"] = self.created[-1].get("metadata")
        return {**body, **fields}

    def current(self):
        return self.batch(**self.script[min(self.step, len(self.script) - 1)])

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.headers["authorization"] == f"Bearer {API_KEY}"
        path, method = request.url.path, request.method
        if method == "POST" and path == "/v1/files":
            content = request.read()
            self.uploads.append(content)
            assert re.search(rb'name="purpose"\r\n\r\nbatch\r\n', content)
            return httpx.Response(
                200,
                json={
                    "id": self.input_file_id,
                    "object": "file",
                    "bytes": len(content),
                    "created_at": CREATED_AT,
                    "filename": "requests.jsonl",
                    "purpose": "batch",
                    "status": "processed",
                },
            )
        if method == "POST" and path == "/v1/batches":
            self.created.append(json.loads(request.content))
            return httpx.Response(200, json=self.current())
        if method == "GET" and path == f"/v1/batches/{self.batch_id}":
            if self.fail_polls:
                self.fail_polls -= 1
                return httpx.Response(503, json={"error": {"message": "busy", "type": "server_error"}})
            self.step += 1
            return httpx.Response(200, json=self.current())
        if method == "POST" and path == f"/v1/batches/{self.batch_id}/cancel":
            return httpx.Response(200, json=self.batch(status="cancelling", cancelling_at=CREATED_AT + 5))
        if method == "GET" and path == "/v1/batches":
            data = [
                self.current(),
                self.batch(id="batch_old", status="completed", created_at=CREATED_AT - 60),
            ]
            return httpx.Response(
                200,
                json={
                    "object": "list",
                    "data": data,
                    "first_id": data[0]["id"],
                    "last_id": "batch_old",
                    "has_more": False,
                },
            )
        match = re.fullmatch(r"/v1/files/([^/]+)/content", path)
        if method == "GET" and match and match[1] in self.files:
            return httpx.Response(200, content=self.files[match[1]])
        return httpx.Response(
            404, json={"error": {"message": f"no route {method} {path}", "type": "not_found"}}
        )

    def paths(self):
        return [f"{r.method} {r.url.path}" for r in self.requests]


@pytest.fixture
def write_input(tmp_path):
    def write(lines, name="requests.jsonl") -> Path:
        path = tmp_path / name
        path.write_bytes(lines if isinstance(lines, bytes) else jsonl(lines))
        return path

    return write


def client_for(gateway: FakeGateway) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=API_KEY,
        base_url=BASE_URL,
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(gateway.handler)),
    )


def run(gateway, argv, sleeps=None):
    """Runs the CLI with the fake gateway; records each requested sleep instead of sleeping."""
    recorded = [] if sleeps is None else sleeps
    return main(argv, client=client_for(gateway), sleep=recorded.append)


def counts(completed, failed, total=4):
    return {"total": total, "completed": completed, "failed": failed}


COMPLETED_SCRIPT = [
    {"status": "validating"},
    {"status": "in_progress", "in_progress_at": CREATED_AT + 2, "request_counts": counts(0, 0)},
    {"status": "in_progress", "in_progress_at": CREATED_AT + 2, "request_counts": counts(2, 0)},
    {"status": "in_progress", "in_progress_at": CREATED_AT + 2, "request_counts": counts(3, 1)},
    {"status": "finalizing", "finalizing_at": CREATED_AT + 9, "request_counts": counts(3, 1)},
    {
        "status": "completed",
        "completed_at": CREATED_AT + 10,
        "request_counts": counts(3, 1),
        "output_file_id": "file-out",
        "error_file_id": "file-err",
    },
]
RESULT_FILES = {"file-out": jsonl(OUTPUT_LINES), "file-err": jsonl(ERROR_LINES)}


def test_submit_uploads_creates_follows_progress_and_downloads(tmp_path, write_input, capsys):
    gateway = FakeGateway(COMPLETED_SCRIPT, files=RESULT_FILES)
    source = write_input([request_line(n) for n in range(1, 5)])
    out = tmp_path / "results"
    sleeps: list[float] = []

    code = run(
        gateway,
        [
            "submit",
            str(source),
            "--out",
            str(out),
            "--interval",
            "0.25",
            "--metadata",
            "run=nightly",
            "team=evals",
        ],
        sleeps,
    )

    assert code == 0
    # Uploaded as-is with purpose=batch, then one batch over that file with the flags given.
    assert source.read_bytes() in gateway.uploads[0]
    assert gateway.created == [
        {
            "input_file_id": "file-in1",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"run": "nightly", "team": "evals"},
        }
    ]
    # Polled until the batch ended, waiting the interval between polls, and never cancelled it.
    assert gateway.paths().count("GET /v1/batches/batch_abc123") == len(COMPLETED_SCRIPT) - 1
    assert sleeps == [0.25] * (len(COMPLETED_SCRIPT) - 1)
    assert not any(p.endswith("/cancel") for p in gateway.paths())
    # Results land in --out under the batch's id, byte for byte.
    assert (out / "batch_abc123_output.jsonl").read_bytes() == RESULT_FILES["file-out"]
    assert (out / "batch_abc123_errors.jsonl").read_bytes() == RESULT_FILES["file-err"]
    assert sorted(p.name for p in out.iterdir()) == ["batch_abc123_errors.jsonl", "batch_abc123_output.jsonl"]

    captured = capsys.readouterr()
    summary = captured.out.strip().splitlines()
    assert summary == [
        f"batch_abc123 completed: 3 completed, 1 failed of 4 requests; "
        f"output: {out / 'batch_abc123_output.jsonl'}; errors: {out / 'batch_abc123_errors.jsonl'}"
    ]
    # The progress bar (stderr) counted completed + failed of total, with the status as its label.
    assert "in_progress" in captured.err
    assert "2/4" in captured.err
    assert "4/4" in captured.err
    assert "completed" in captured.err
    assert API_KEY not in captured.out + captured.err


def test_submit_no_wait_prints_only_the_batch_id(write_input, capsys):
    gateway = FakeGateway([{"status": "validating"}])
    code = run(gateway, ["submit", str(write_input([request_line(1)])), "--no-wait"])

    assert code == 0
    captured = capsys.readouterr()
    assert captured.out == "batch_abc123\n"
    assert "tools.batch_cli wait batch_abc123" in captured.err
    assert gateway.paths() == ["POST /v1/files", "POST /v1/batches"]
    assert "metadata" not in gateway.created[0]


def test_submit_with_another_endpoint(write_input):
    gateway = FakeGateway([{"status": "validating"}])
    lines = [request_line(n, url="/v1/embeddings", body={"model": "e", "input": "x"}) for n in (1, 2)]

    code = run(gateway, ["submit", str(write_input(lines)), "--endpoint", "/v1/embeddings", "--no-wait"])

    assert code == 0
    assert gateway.created[0]["endpoint"] == "/v1/embeddings"


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        (jsonl([request_line(1)]) + b"{not json\n", 2, "invalid JSON"),
        (jsonl([request_line(1), ["a", "list"]]), 2, "expected a JSON object"),
        (jsonl([{k: v for k, v in request_line(1).items() if k != "body"}]), 1, "missing `body`"),
        (jsonl([{"custom_id": "q1"}]), 1, "missing `method`, `url`, `body`"),
        (jsonl([request_line(1), request_line(2, url="/v1/embeddings")]), 2, "batch endpoint is"),
        (
            jsonl([request_line(1), request_line(2, custom_id="q1")]),
            2,
            "duplicate `custom_id` 'q1' (first on line 1)",
        ),
        (jsonl([request_line(1, method="GET")]), 1, '`method` must be "POST"'),
        (jsonl([request_line(1, body="hello")]), 1, "`body` must be a JSON object"),
        (jsonl([request_line(1, custom_id=7)]), 1, "`custom_id` must be a non-empty string"),
        (jsonl([request_line(1)]) + b"\n\xff\xfe\n", 3, "not UTF-8"),
    ],
)
def test_bad_jsonl_line_exits_2_without_uploading(write_input, capsys, content, line, reason):
    gateway = FakeGateway([{"status": "validating"}])

    code = run(gateway, ["submit", str(write_input(content))])

    assert code == 2
    assert gateway.requests == []
    err = capsys.readouterr().err
    assert "nothing was uploaded" in err
    assert f"line {line}: " in err
    assert reason in err


def test_jsonl_check_reports_the_first_errors_and_a_count(write_input, capsys):
    gateway = FakeGateway([{"status": "validating"}])
    lines = [request_line(n, url="/v1/completions") for n in range(1, 16)]

    assert run(gateway, ["submit", str(write_input(lines))]) == 2

    err = capsys.readouterr().err
    assert "15 problem(s)" in err
    assert "line 10: " in err
    assert "line 11: " not in err
    assert "... and 5 more" in err
    assert gateway.requests == []


def test_blank_lines_are_skipped_but_an_empty_file_is_refused(write_input, capsys):
    gateway = FakeGateway([{"status": "validating"}])
    with_blanks = b"\n" + jsonl([request_line(1)]) + b"  \n" + jsonl([request_line(2)])
    assert run(gateway, ["submit", str(write_input(with_blanks)), "--no-wait"]) == 0
    assert b"question 2" in gateway.uploads[0]

    empty = FakeGateway([{"status": "validating"}])
    assert run(empty, ["submit", str(write_input(b"\n\n", name="empty.jsonl"))]) == 2
    assert empty.requests == []
    assert "no requests" in capsys.readouterr().err


def test_missing_input_file_exits_2(tmp_path, capsys):
    gateway = FakeGateway([{"status": "validating"}])
    assert run(gateway, ["submit", str(tmp_path / "nope.jsonl")]) == 2
    assert gateway.requests == []
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "x.jsonl", "--metadata", "novalue"],
        ["submit", "x.jsonl", "--endpoint", "/v1/responses"],
        ["submit", "x.jsonl", "--window", "1h"],
        ["submit", "x.jsonl", "--interval", "-1"],
        ["submit", "x.jsonl", "--metadata", *[f"k{i}=v" for i in range(17)]],
        ["list", "--limit", "0"],
        ["status"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    gateway = FakeGateway([{"status": "validating"}])
    assert run(gateway, argv) == 2
    assert gateway.requests == []
    assert "error" in capsys.readouterr().err


def test_failed_batch_exits_1_and_shows_its_errors(tmp_path, write_input, capsys):
    errors = {
        "object": "list",
        "data": [
            {
                "code": "invalid_model",
                "message": "model 'nope' is not served",
                "param": "body.model",
                "line": 1,
            }
        ],
    }
    gateway = FakeGateway(
        [{"status": "validating"}, {"status": "failed", "failed_at": CREATED_AT + 1, "errors": errors}]
    )
    out = tmp_path / "results"

    code = run(gateway, ["submit", str(write_input([request_line(1)])), "--out", str(out), "--interval", "0"])

    assert code == 1
    captured = capsys.readouterr()
    assert captured.out.strip() == "batch_abc123 failed: 0 completed, 0 failed of 0 requests"
    assert "line 1: invalid_model: model 'nope' is not served" in captured.err
    assert list(out.iterdir()) == []  # nothing to download


@pytest.mark.parametrize("status", ["expired", "cancelled"])
def test_expired_or_cancelled_batch_exits_1_and_keeps_partial_results(tmp_path, capsys, status):
    final = {
        "status": status,
        f"{status}_at": CREATED_AT + 99,
        "request_counts": counts(3, 0),
        "output_file_id": "file-out",
    }
    gateway = FakeGateway(
        [{"status": "in_progress", "request_counts": counts(1, 0)}, final], files=RESULT_FILES
    )
    gateway.step = -1

    code = run(gateway, ["wait", "batch_abc123", "--out", str(tmp_path), "--interval", "0"])

    assert code == 1
    assert (tmp_path / "batch_abc123_output.jsonl").read_bytes() == RESULT_FILES["file-out"]
    assert not (tmp_path / "batch_abc123_errors.jsonl").exists()
    assert capsys.readouterr().out.startswith(
        f"batch_abc123 {status}: 3 completed, 0 failed of 4 requests; output: "
    )


def test_ctrl_c_while_waiting_prints_how_to_resume_and_does_not_cancel(tmp_path, write_input, capsys):
    gateway = FakeGateway(COMPLETED_SCRIPT, files=RESULT_FILES)
    polls = 0

    def sleep(_seconds):
        nonlocal polls
        polls += 1
        if polls == 3:
            raise KeyboardInterrupt

    out = tmp_path / "my results"
    code = main(
        [
            "--base-url",
            "http://other.test/v1",
            "submit",
            str(write_input([request_line(1)])),
            "--out",
            str(out),
        ],
        client=client_for(gateway),
        sleep=sleep,
    )

    assert code == 130
    assert not any(p.endswith("/cancel") for p in gateway.paths())
    assert not out.exists() or list(out.iterdir()) == []
    err = capsys.readouterr().err
    assert "was not cancelled (last seen: in_progress)" in err
    assert f"tools.batch_cli wait batch_abc123 --base-url http://other.test/v1 --out '{out}'" in err
    assert "tools.batch_cli status batch_abc123 --base-url http://other.test/v1" in err
    assert API_KEY not in err


def test_wait_resumes_and_rides_out_a_transient_poll_failure(tmp_path, capsys):
    gateway = FakeGateway(COMPLETED_SCRIPT[1:], files=RESULT_FILES)
    gateway.step = -1  # the first retrieve (wait's own) returns the first scripted state

    sleeps = 0

    def sleep(_seconds):
        nonlocal sleeps
        sleeps += 1
        if sleeps == 2:  # the second poll gets a 503 (the client does no retries of its own here)
            gateway.fail_polls = 1

    code = main(
        ["wait", "batch_abc123", "--out", str(tmp_path), "--interval", "0"],
        client=client_for(gateway),
        sleep=sleep,
    )

    assert code == 0
    assert "polling failed (HTTP 503: busy); retrying" in capsys.readouterr().err
    assert (tmp_path / "batch_abc123_output.jsonl").read_bytes() == RESULT_FILES["file-out"]


def test_wait_gives_up_after_repeated_poll_failures(tmp_path, capsys):
    gateway = FakeGateway([{"status": "in_progress", "request_counts": counts(1, 0)}])
    gateway.step = -1

    def sleep(_s):
        gateway.fail_polls = 1

    code = main(["wait", "batch_abc123", "--interval", "0"], client=client_for(gateway), sleep=sleep)

    assert code == 2
    err = capsys.readouterr().err
    assert f"gave up after {batch_cli.MAX_POLL_FAILURES} failed polls" in err
    assert "tools.batch_cli wait batch_abc123" in err


def test_status_json_is_the_batch_object(capsys):
    gateway = FakeGateway(COMPLETED_SCRIPT)
    gateway.step = len(COMPLETED_SCRIPT) - 2

    assert run(gateway, ["status", "batch_abc123", "--json"]) == 0

    printed = json.loads(capsys.readouterr().out)
    assert printed == gateway.batch(**COMPLETED_SCRIPT[-1])
    assert printed["request_counts"] == {"total": 4, "completed": 3, "failed": 1}


def test_status_table(capsys):
    gateway = FakeGateway(
        [{"status": "in_progress", "request_counts": counts(2, 1), "metadata": {"run": "n1"}}]
    )
    gateway.step = -1

    assert run(gateway, ["status", "batch_abc123"]) == 0

    out = capsys.readouterr().out
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.strip().splitlines())
    assert rows["id"] == "batch_abc123"
    assert rows["status"] == "in_progress"
    assert rows["requests"] == "2 completed, 1 failed, 4 total"
    assert rows["output_file_id"] == "-"
    assert rows["created_at"] == "2024-03-26 16:45:33 UTC"
    assert rows["metadata"] == "run=n1"


def test_unknown_batch_exits_2(capsys):
    gateway = FakeGateway([{"status": "validating"}])
    assert run(gateway, ["status", "batch_missing"]) == 2
    assert "HTTP 404: no route GET /v1/batches/batch_missing" in capsys.readouterr().err


def test_download_a_finished_batch_and_refuse_a_running_one(tmp_path, capsys):
    done = FakeGateway([COMPLETED_SCRIPT[-1]], files=RESULT_FILES)
    assert run(done, ["download", "batch_abc123", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "batch_abc123_errors.jsonl").read_bytes() == RESULT_FILES["file-err"]
    assert not list(tmp_path.glob("*.part"))

    running = FakeGateway([{"status": "in_progress", "request_counts": counts(1, 0)}])
    assert run(running, ["download", "batch_abc123", "--out", str(tmp_path / "x")]) == 2
    assert "is in_progress; nothing to download yet" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cancel(capsys):
    gateway = FakeGateway([{"status": "in_progress"}])
    assert run(gateway, ["cancel", "batch_abc123"]) == 0
    assert gateway.paths() == ["POST /v1/batches/batch_abc123/cancel"]
    assert capsys.readouterr().out == "batch_abc123 cancelling\n"


def test_list_table_and_json(capsys):
    gateway = FakeGateway([{"status": "in_progress", "request_counts": counts(2, 1)}])

    assert run(gateway, ["list", "--limit", "5"]) == 0
    assert gateway.requests[-1].url.params["limit"] == "5"
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["ID", "STATUS", "ENDPOINT", "DONE/TOTAL", "FAILED", "CREATED"]
    assert lines[1].split()[:5] == ["batch_abc123", "in_progress", "/v1/chat/completions", "3/4", "1"]
    assert lines[2].split()[:2] == ["batch_old", "completed"]

    assert run(gateway, ["list", "--limit", "1", "--json"]) == 0
    assert [b["id"] for b in json.loads(capsys.readouterr().out)] == ["batch_abc123"]


def test_connection_settings_come_from_flags_then_environment():
    env = {
        "CIRRUS_BASE_URL": "http://env.test/v1",
        "CIRRUS_API_KEY": "k-cirrus",
        "OPENAI_API_KEY": "k-openai",
    }
    args = batch_cli.parse_args(["list"], env)
    assert (args.base_url, args.api_key, args.explicit_base_url) == ("http://env.test/v1", "k-cirrus", False)

    args = batch_cli.parse_args(["list"], {"OPENAI_API_KEY": "k-openai"})
    assert (args.base_url, args.api_key) == (batch_cli.DEFAULT_BASE_URL, "k-openai")

    # Before or after the command, the flags win over the environment.
    for argv in (
        ["--base-url", "http://flag.test/v1", "--api-key", "k-flag", "list"],
        ["list", "--base-url", "http://flag.test/v1", "--api-key", "k-flag"],
    ):
        args = batch_cli.parse_args(argv, env)
        assert (args.base_url, args.api_key, args.explicit_base_url) == (
            "http://flag.test/v1",
            "k-flag",
            True,
        )


def test_no_api_key_exits_2(capsys):
    assert main(["list"], env={}) == 2
    assert "no API key" in capsys.readouterr().err
