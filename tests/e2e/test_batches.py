"""End to end: the Files and Batch APIs through the local host, with the official `openai` SDK."""

from __future__ import annotations

import io
import json
import time

import httpx
import openai
import pytest
from azure.storage.blob import BlobServiceClient

from tests.e2e.helpers import BATCH_ENDED, chat_line, jsonl, results, upload, wait_batch
from tests.openapi import assert_matches


def blob_names(stack, container: str) -> set[str]:
    service = BlobServiceClient.from_connection_string(stack.env["AzureWebJobsStorage"])
    return {b.name for b in service.get_container_client(container).list_blobs()}


# --- files ----------------------------------------------------------------------------------


def test_files_upload_list_read_download_delete(stack):
    client = stack.client()
    content = jsonl([chat_line("a"), chat_line("b")])
    created = client.files.create(file=("input.jsonl", io.BytesIO(content)), purpose="batch")
    assert (created.bytes, created.filename, created.purpose) == (len(content), "input.jsonl", "batch")
    raw = httpx.get(
        f"{stack.base_url}/v1/files/{created.id}", headers={"Authorization": f"Bearer {stack.master_key}"}
    )
    assert_matches("OpenAIFile", raw.json())
    assert created.id in [f.id for f in client.files.list(purpose="batch")]
    assert client.files.content(created.id).content == content
    assert client.files.delete(created.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_a_filename_is_a_label_never_a_path(stack):
    before = blob_names(stack, "uploads")
    body = (  # written by hand: httpx would percent-encode the control character
        b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="..\\..\\../../etc/pass\x01wd"\r\n'
        b"Content-Type: text/plain\r\n\r\nhello\r\n--B--\r\n"
    )
    response = httpx.post(
        f"{stack.base_url}/v1/files",
        headers={
            "Authorization": f"Bearer {stack.master_key}",
            "Content-Type": "multipart/form-data; boundary=B",
        },
        content=body,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["filename"] == "passwd"
    assert blob_names(stack, "uploads") - before == {f"files/{body['id']}"}


def test_the_purpose_may_follow_the_file_and_must_be_known(stack):
    headers = {"Authorization": f"Bearer {stack.master_key}"}
    boundary = "XyZ"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhi\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
        f"--{boundary}--\r\n"
    )
    content_type = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    ok = httpx.post(f"{stack.base_url}/v1/files", headers={**headers, **content_type}, content=body)
    assert ok.status_code == 200 and ok.json()["purpose"] == "user_data"
    before = blob_names(stack, "uploads")
    bad = httpx.post(
        f"{stack.base_url}/v1/files",
        headers={**headers, **content_type},
        content=body.replace("user_data", "x"),
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "purpose"
    assert blob_names(stack, "uploads") == before  # nothing kept
    missing = httpx.post(f"{stack.base_url}/v1/files", headers=headers, data={"purpose": "batch"}, files={})
    assert missing.status_code == 400


def test_an_oversized_upload_is_413_and_writes_nothing(stack):
    headers = {"Authorization": f"Bearer {stack.master_key}"}
    before, listed = blob_names(stack, "uploads"), len(stack.client().files.list().data)
    declared = httpx.post(
        f"{stack.base_url}/v1/files",
        headers=headers,
        data={"purpose": "batch"},
        files={"file": ("big.jsonl", b"x" * 1_200_000)},  # over the e2e host's 1 MB limit
    )
    assert declared.status_code == 413

    def chunks():  # no Content-Length: refused part way through
        yield b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="big"\r\n\r\n'
        for _ in range(30):
            yield b"y" * 65536
        yield b"\r\n--B--\r\n"

    streamed = httpx.post(
        f"{stack.base_url}/v1/files",
        headers={**headers, "Content-Type": "multipart/form-data; boundary=B"},
        content=chunks(),
    )
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "request_too_large"
    assert blob_names(stack, "uploads") == before
    assert len(stack.client().files.list().data) == listed


# --- batches --------------------------------------------------------------------------------


def test_a_batch_runs_end_to_end_with_the_openai_sdk(stack):
    client = stack.client()
    lines = [chat_line(f"req-{i}", max_tokens=5) for i in range(25)]
    lines.append(chat_line("bad-model", model="cirrus-local", max_tokens=5))
    lines[-1]["body"]["max_tokens"] = 10**9  # valid JSON, refused by the model's limit at run time
    source = upload(client, lines)
    batch = client.batches.create(
        input_file_id=source.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"team": "x"},
    )
    assert batch.status == "validating" and batch.metadata == {"team": "x"}
    done = wait_batch(client, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (
        26,
        25,
        1,
    )
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    raw = httpx.get(
        f"{stack.base_url}/v1/batches/{batch.id}", headers={"Authorization": f"Bearer {stack.master_key}"}
    )
    assert_matches("Batch", raw.json())
    output, errors = results(client, done.output_file_id), results(client, done.error_file_id)
    assert sorted(r["custom_id"] for r in output) == sorted(f"req-{i}" for i in range(25))
    assert all(r["response"]["status_code"] == 200 and r["response"]["body"]["choices"] for r in output)
    assert [(r["custom_id"], r["response"]["status_code"]) for r in errors] == [("bad-model", 400)]
    assert batch.id in [b.id for b in client.batches.list(limit=100)]


def test_batch_validation_errors_name_their_lines(stack):
    client = stack.client()
    good = chat_line("ok")
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "custom_id": "ok"}),  # duplicate
        json.dumps({**good, "custom_id": "get", "method": "GET"}),
        json.dumps({**good, "custom_id": "url", "url": "/v1/embeddings"}),
        json.dumps({**good, "custom_id": "body", "body": {"model": "cirrus-local"}}),
        json.dumps(chat_line("model", model="gpt-nope")),
    ]
    source = client.files.create(file=("bad.jsonl", io.BytesIO("\n".join(lines).encode())), purpose="batch")
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = wait_batch(client, batch.id)
    assert failed.status == "failed" and failed.failed_at
    found = {(e.line, e.param) for e in failed.errors.data}
    assert found == {
        (2, None),
        (3, "custom_id"),
        (4, "method"),
        (5, "url"),
        (6, "messages"),
        (7, "body.model"),
    }


def test_batch_create_refuses_bad_input(stack):
    client = stack.client()
    not_batch = client.files.create(file=("x.txt", io.BytesIO(b"x")), purpose="user_data")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id=not_batch.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=not_batch.id, endpoint="/v1/responses", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_cancel_stops_new_work_and_keeps_what_finished(stack):
    client = stack.client()
    lines = [chat_line(f"c{i}", model="cirrus-slow", max_tokens=3) for i in range(300)]
    batch = client.batches.create(
        input_file_id=upload(client, lines).id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    running = wait_batch(client, batch.id, until={"in_progress"} | BATCH_ENDED)
    assert running.status == "in_progress"
    time.sleep(1)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    cancelled = wait_batch(client, batch.id, timeout=20)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at
    output, errors = results(client, cancelled.output_file_id), results(client, cancelled.error_file_id)
    ids = [r["custom_id"] for r in output + errors]
    assert sorted(ids) == sorted(f"c{i}" for i in range(300))  # each exactly once
    assert 0 < len(output) < 300
    assert {r["error"]["code"] for r in errors} == {"batch_cancelled"}
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_batches_and_files_belong_to_their_key(stack):
    alice = stack.client(stack.new_key()["key"])
    bob = stack.client(stack.new_key()["key"])
    source = upload(alice, [chat_line("x")])
    batch = alice.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    for call in (
        lambda: bob.files.retrieve(source.id),
        lambda: bob.files.content(source.id),
        lambda: bob.files.delete(source.id),
        lambda: bob.batches.retrieve(batch.id),
        lambda: bob.batches.cancel(batch.id),
        lambda: bob.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert source.id not in [f.id for f in bob.files.list()]
    assert batch.id not in [b.id for b in bob.batches.list()]
    done = wait_batch(alice, batch.id)
    assert done.status == "completed"
    with pytest.raises(openai.NotFoundError):
        bob.files.content(done.output_file_id)
    assert stack.client().batches.retrieve(batch.id).id == batch.id  # the master key sees all
