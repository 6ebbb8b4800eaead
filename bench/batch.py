"""A 1,000-request batch against a provider that takes 100 ms a request: wall time vs the ideal.

    python -m bench.batch [--requests 1000] [--latency-ms 100] [--chunk-size 100]
                          [--concurrency 8] [--batch-size 16] [--new-batch-threshold 8]
                          [--repeats 3] [--json PATH]
    python -m bench.batch --finalize-lines 50000 [--answer-bytes 4096] [--json PATH]
    python -m bench.batch --validate-mib 20 [--repeats 3] [--json PATH]

Starts the local stack on free ports with the fake provider answering after `--latency-ms`, and
the local host with `CIRRUS_BATCH_CHUNK_SIZE`, `CIRRUS_BATCH_CONCURRENCY` and host.json's queue
`batchSize` and `newBatchThreshold` set from the flags. Each repeat uploads a JSONL file of
`--requests` chat requests, creates the batch with the official `openai` SDK and polls until it
ends.

`--finalize-lines N`: the worker's memory while it finalizes a batch of N results of
`--answer-bytes` each. The batch is laid out in the emulators as its chunks leave it (N requests
in chunks of 100, every chunk done, one result blob per chunk, status `finalizing`), then one
`finalize` message goes on the batch queue. Reported: the local host's (the worker's) resident
memory before, its peak while finalizing (sampled every 20 ms, and the kernel's high-water mark
after resetting it) and the growth, against a target of 150 MB; and how long finalize took.

`--validate-mib M`: chat latency on a worker while it validates a batch file of M MiB (50,000
requests, padded to the size), against the same worker idle: sequential chat requests, p50 of
those that ran inside the validation (the start message's run, from the host's log) vs p50 of as
many on the idle worker just before. Target: at most 1.5x. The batch is cancelled once it starts.

The configured concurrency is the number of requests in flight at once: `CIRRUS_BATCH_CONCURRENCY`
per batch in a worker, shared by the chunk messages it holds (host.json's batchSize +
newBatchThreshold of them at most). Ideal = ceil(requests / concurrency) x latency:
what the provider's latency alone would cost at that concurrency. Reported: median wall time
(create → completed) over repeats and its ratio to the ideal. Target: at most 1.3x (reported, never asserted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import openai

from tools.stack import COSMOS_EMULATOR_KEY, DEV_MASTER_KEY, LOOPBACK, Ports, running_stack

TARGET_RATIO = 1.3
TARGET_FINALIZE_GROWTH_MB = 150
TARGET_VALIDATE_P50_RATIO = 1.5
FINALIZE_CHUNK = 100


def _input(requests: int, repeat: int) -> bytes:
    lines = (
        {
            "custom_id": f"r{repeat}-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "cirrus-local",
                "messages": [{"role": "user", "content": f"hi {i}"}],
                "max_tokens": 8,
            },
        }
        for i in range(requests)
    )
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _run_once(client: openai.OpenAI, requests: int, repeat: int) -> dict[str, Any]:
    source = client.files.create(file=("bench.jsonl", io.BytesIO(_input(requests, repeat))), purpose="batch")
    started = time.monotonic()
    batch = client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.1)
        batch = client.batches.retrieve(batch.id)
    wall = time.monotonic() - started
    counts = batch.request_counts
    errors: dict[str, int] = {}
    if batch.error_file_id:
        for text in client.files.content(batch.error_file_id).text.splitlines():
            line = json.loads(text)
            response = line.get("response") or {}
            code = (line.get("error") or {}).get("code") or (response.get("body") or {}).get("error", {}).get(
                "code"
            )
            key = f"{response.get('status_code')} {code}"
            errors[key] = errors.get(key, 0) + 1
    return {
        "status": batch.status,
        "wall_s": round(wall, 3),
        "completed": counts.completed if counts else 0,
        "failed": counts.failed if counts else 0,
        "errors": errors,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    ports = Ports.free()
    chunks = math.ceil(args.requests / args.chunk_size)
    at_a_time = min(chunks, args.batch_size + args.new_batch_threshold)
    concurrency = args.concurrency
    ideal = math.ceil(args.requests / concurrency) * args.latency_ms / 1000
    overrides = {
        "CIRRUS_BATCH_CHUNK_SIZE": str(args.chunk_size),
        "CIRRUS_BATCH_CONCURRENCY": str(args.concurrency),
        "AzureFunctionsJobHost__extensions__queues__batchSize": str(args.batch_size),
        "AzureFunctionsJobHost__extensions__queues__newBatchThreshold": str(args.new_batch_threshold),
    }
    provider_args = ("--latency-ms", str(args.latency_ms), "--chunk-delay-ms", "0")
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_stack(ports, Path(tmp), provider_args=provider_args, **overrides),
    ):
        client = openai.OpenAI(
            base_url=f"http://{LOOPBACK}:{ports.host}/v1", api_key=DEV_MASTER_KEY, max_retries=2
        )
        _run_once(client, min(50, args.requests), -1)  # warm-up: the router's import, first connections
        runs = [_run_once(client, args.requests, repeat) for repeat in range(args.repeats)]
    wall = statistics.median(r["wall_s"] for r in runs)
    return {
        "requests": args.requests,
        "latency_ms": args.latency_ms,
        "chunk_size": args.chunk_size,
        "per_batch_concurrency": args.concurrency,
        "chunks_at_a_time": at_a_time,
        "concurrency": concurrency,
        "ideal_s": ideal,
        "median_wall_s": wall,
        "ratio": round(wall / ideal, 3),
        "target_ratio": TARGET_RATIO,
        "runs": runs,
    }


# --- finalize: the worker's memory ---------------------------------------------------------------


def _worker_pid(port: int) -> int:
    """The worker process of the local host serving `port`: the functions run there."""
    host = None
    processes: dict[int, tuple[int, list[bytes]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                processes[int(entry.name)] = (parent, argv)
                if b"tools.funchost" in argv and str(port).encode() in argv:
                    host = int(entry.name)
    for pid, (parent, argv) in processes.items():
        if parent == host and b"tools.funchost.worker" in argv:
            return pid
    raise RuntimeError(f"no local host worker for port {port}")


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def _result_line(custom_id: str, answer_bytes: int) -> str:
    content = f"answer to {custom_id} ".ljust(answer_bytes, "x")
    body = {
        "id": f"chatcmpl-{custom_id}",
        "object": "chat.completion",
        "created": 1,
        "model": "cirrus-local",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": 5,
            "completion_tokens": answer_bytes // 5,
            "total_tokens": 5 + answer_bytes // 5,
        },
    }
    line = {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": f"req_{uuid.uuid4().hex}", "body": body},
        "error": None,
    }
    return json.dumps(line)


async def _lay_out_finalizing_batch(env: dict[str, str], lines: int, answer_bytes: int) -> str:
    """A batch as its last chunk leaves it: every chunk done and saved, status `finalizing`."""
    from shared.clients.blob_store import AzureBlobStore  # noqa: PLC0415 - the app's own adapters
    from shared.clients.cosmos_store import CosmosDocumentStore  # noqa: PLC0415

    batch_id = f"batch_bench{uuid.uuid4().hex[:16]}"
    blobs = AzureBlobStore.from_connection_string(env["AzureWebJobsStorage"])
    documents = CosmosDocumentStore(
        env["COSMOS_ENDPOINT"], COSMOS_EMULATOR_KEY, env.get("COSMOS_DATABASE") or "cirrus", local=True
    )
    chunks = math.ceil(lines / FINALIZE_CHUNK)
    try:
        for n in range(chunks):
            ids = [f"r{i}" for i in range(n * FINALIZE_CHUNK, min(lines, (n + 1) * FINALIZE_CHUNK))]
            requests = "".join(
                json.dumps(
                    {
                        "line": int(c[1:]) + 1,
                        "custom_id": c,
                        "body": {"model": "cirrus-local", "messages": [{"role": "user", "content": c}]},
                    }
                )
                + "\n"
                for c in ids
            )
            await blobs.put("outputs", f"batches/{batch_id}/chunks/{n:05d}.jsonl", requests.encode())
            results = "".join(_result_line(c, answer_bytes) + "\n" for c in ids)
            part = f"batches/{batch_id}/results/{n:05d}/{time.time_ns():020d}-bench.jsonl"
            await blobs.put("outputs", part, results.encode())
        now = time.time()
        await documents.upsert(
            "batches",
            {
                "id": batch_id,
                "pk": batch_id,
                "object": "batch",
                "endpoint": "/v1/chat/completions",
                "input_file_id": "file-bench",
                "completion_window": "24h",
                "status": "finalizing",
                "created_at": int(now),
                "ts": now,
                "updated_at": now,
                "in_progress_at": int(now),
                "finalizing_at": int(now),
                "expires_at": int(now + 86400),
                "owner": "master",
                "total": lines,
                "chunks": chunks,
                "fanned_out": True,
                "chunks_done": list(range(chunks)),
                "chunk_counts": {
                    str(n): [min(FINALIZE_CHUNK, lines - n * FINALIZE_CHUNK), 0] for n in range(chunks)
                },
            },
        )
    finally:
        await blobs.aclose()
        await documents.aclose()
    return batch_id


async def _send_finalize(env: dict[str, str], batch_id: str) -> None:
    from shared.clients.queue_store import AzureQueueStore  # noqa: PLC0415

    queues = AzureQueueStore.from_connection_string(env["AzureWebJobsStorage"])
    try:
        await queues.send(
            env.get("BATCH_QUEUE") or "cirrus-batches", {"v": 1, "kind": "finalize", "batch_id": batch_id}
        )
    finally:
        await queues.aclose()


def run_finalize(args: argparse.Namespace) -> dict[str, Any]:
    ports = Ports.free()
    with tempfile.TemporaryDirectory() as tmp, running_stack(ports, Path(tmp)) as (_, env):
        base = f"http://{LOOPBACK}:{ports.host}"
        httpx.get(f"{base}/health/ready", timeout=60).raise_for_status()  # the container, provisioned
        laid_out = time.monotonic()
        batch_id = asyncio.run(_lay_out_finalizing_batch(env, args.finalize_lines, args.answer_bytes))
        laid_out = time.monotonic() - laid_out
        pid = _worker_pid(ports.host)
        time.sleep(1.0)  # let the worker settle after the health check
        before_kb = _status_kb(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the high-water mark (VmHWM)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=DEV_MASTER_KEY, max_retries=2)
        peak_kb = before_kb
        started = time.monotonic()
        asyncio.run(_send_finalize(env, batch_id))
        status = "finalizing"
        polled = 0.0
        while status not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.02)
            peak_kb = max(peak_kb, _status_kb(pid, "VmRSS"))
            if time.monotonic() - polled > 0.5:
                status, polled = client.batches.retrieve(batch_id).status, time.monotonic()
            if time.monotonic() - started > 900:
                raise RuntimeError("finalize did not end within 15 minutes")
        wall = time.monotonic() - started
        peak_kb = max(peak_kb, _status_kb(pid, "VmHWM"))
        batch = client.batches.retrieve(batch_id)
        output = client.files.retrieve(batch.output_file_id) if batch.output_file_id else None
    growth_mb = (peak_kb - before_kb) / 1024
    return {
        "lines": args.finalize_lines,
        "answer_bytes": args.answer_bytes,
        "status": batch.status,
        "completed": batch.request_counts.completed if batch.request_counts else None,
        "output_file_bytes": output.bytes if output else 0,
        "laid_out_s": round(laid_out, 1),
        "finalize_wall_s": round(wall, 1),
        "rss_before_mb": round(before_kb / 1024, 1),
        "rss_peak_mb": round(peak_kb / 1024, 1),
        "rss_growth_mb": round(growth_mb, 1),
        "target_growth_mb": TARGET_FINALIZE_GROWTH_MB,
    }


# --- validation: chat latency on the same worker ------------------------------------------------


def _padded_input(size: int) -> bytes:
    """50,000 chat requests, padded to about `size` bytes."""
    count = 50_000
    head = len(json.dumps(_validate_line(0, ""))) + 1
    pad = max(0, size // count - head)
    return "".join(json.dumps(_validate_line(i, "x" * pad)) + "\n" for i in range(count)).encode()


def _validate_line(i: int, pad: str) -> dict[str, Any]:
    return {
        "custom_id": f"v{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "cirrus-local",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": f"hi {i} {pad}"}],
        },
    }


def _chat(http: httpx.Client) -> tuple[float, float]:
    started = time.time()
    response = http.post(
        "/v1/chat/completions",
        json={"model": "cirrus-local", "max_tokens": 8, "messages": [{"role": "user", "content": "ping"}]},
    )
    response.raise_for_status()
    return started, time.time() - started


def _batch_runs(log: Path, after: int) -> list[tuple[float | None, float]]:
    """(start as unix time if the line tells, duration in s) of each batch-queue run logged past
    byte `after` of the host's log, in order."""
    runs: list[tuple[float | None, float]] = []
    for line in log.read_bytes()[after:].decode(errors="replace").splitlines():
        found = re.search(r"Executed 'Functions.run_batch' \(Succeeded, Id=[^,]+, Duration=(\d+)ms", line)
        if not found:
            continue
        duration = int(found.group(1)) / 1000
        ended: float | None = None
        with contextlib.suppress(ValueError, KeyError, TypeError):
            ended = datetime.fromisoformat(json.loads(line)["ts"].replace("Z", "+00:00")).timestamp()
        runs.append((ended - duration if ended is not None else None, duration))
    return runs


def _validate_once(base: str, log: Path, data: bytes, idle_requests: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {DEV_MASTER_KEY}"}
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=DEV_MASTER_KEY, max_retries=2, timeout=300)
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        idle = [_chat(http)[1] for _ in range(idle_requests)]
        source = client.files.create(file=("validate.jsonl", io.BytesIO(data)), purpose="batch")
        offset = log.stat().st_size
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(base_url=base, headers=headers, timeout=60) as own:
                while not stop.is_set():
                    samples.append(_chat(own))

        worker = threading.Thread(target=load)
        batch = client.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        worker.start()
        try:
            while (batch := client.batches.retrieve(batch.id)).status == "validating":
                time.sleep(0.05)
            ended = time.time()
        finally:
            stop.set()
            worker.join()
        with contextlib.suppress(openai.ConflictError):
            client.batches.cancel(batch.id)
        # The start message's run (validation, then the chunk messages sent) is the one that spans
        # the moment the batch left `validating`; chunk runs may be logged before it ends.
        window_start: float | None = None
        deadline = time.time() + 60
        while window_start is None and time.time() < deadline:
            spans = [(start, start + s) for start, s in _batch_runs(log, offset) if start is not None]
            window_start = next((start for start, end in spans if start <= ended <= end + 0.5), None)
            time.sleep(0.2)
        if window_start is None:
            raise RuntimeError("the start message's run is not in the host's log")
        validation_s = ended - window_start
        during = [latency for started, latency in samples if window_start <= started <= ended]
        while client.batches.retrieve(batch.id).status not in ("cancelled", "completed", "failed", "expired"):
            time.sleep(0.5)
    idle_p50 = statistics.median(idle) * 1000
    during_p50 = statistics.median(during) * 1000 if during else float("nan")
    return {
        "batch_status_after_validation": batch.status,
        "validation_s": round(validation_s, 2),
        "idle_p50_ms": round(idle_p50, 2),
        "during_p50_ms": round(during_p50, 2),
        "during_requests": len(during),
        "ratio": round(during_p50 / idle_p50, 2),
    }


def run_validate(args: argparse.Namespace) -> dict[str, Any]:
    ports = Ports.free()
    data = _padded_input(args.validate_mib * 1024 * 1024)
    overrides = {"CIRRUS_MAX_UPLOAD_BYTES": str(len(data) + 1024 * 1024)}
    with tempfile.TemporaryDirectory() as tmp, running_stack(ports, Path(tmp), **overrides):
        base = f"http://{LOOPBACK}:{ports.host}"
        log = Path(tmp) / "logs" / "funchost.log"
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {DEV_MASTER_KEY}"}) as http:
            for _ in range(50):  # warm-up: the router, first connections
                _chat(http)
        runs = [_validate_once(base, log, data, args.idle_requests) for _ in range(args.repeats)]
    return {
        "file_bytes": len(data),
        "requests_in_file": 50_000,
        "median_idle_p50_ms": statistics.median(r["idle_p50_ms"] for r in runs),
        "median_during_p50_ms": statistics.median(r["during_p50_ms"] for r in runs),
        "median_ratio": statistics.median(r["ratio"] for r in runs),
        "target_ratio": TARGET_VALIDATE_P50_RATIO,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight per batch per worker")
    parser.add_argument("--batch-size", type=int, default=16, help="host.json queues.batchSize")
    parser.add_argument(
        "--new-batch-threshold", type=int, default=8, help="host.json queues.newBatchThreshold"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.add_argument("--finalize-lines", type=int, help="measure finalize's memory for this many results")
    parser.add_argument(
        "--answer-bytes", type=int, default=4096, help="each result's answer, for --finalize-lines"
    )
    parser.add_argument(
        "--validate-mib", type=int, help="measure chat p50 while a file of this size validates"
    )
    parser.add_argument("--idle-requests", type=int, default=300, help="chat requests on the idle worker")
    args = parser.parse_args(argv)
    if args.finalize_lines:
        report = run_finalize(args)
        sys.stdout.write(
            f"finalize of {report['lines']} results of {report['answer_bytes']} bytes "
            f"({report['output_file_bytes'] / 1e6:.0f} MB of output, {report['status']}, "
            f"{report['finalize_wall_s']} s): worker RSS {report['rss_before_mb']} MB before, peak "
            f"{report['rss_peak_mb']} MB, growth {report['rss_growth_mb']} MB "
            f"(target at most {TARGET_FINALIZE_GROWTH_MB} MB)\n"
        )
    elif args.validate_mib:
        report = run_validate(args)
        sys.stdout.write(
            f"chat p50 while a {report['file_bytes'] / 2**20:.0f} MiB batch file validates: "
            f"{report['median_during_p50_ms']:.2f} ms vs {report['median_idle_p50_ms']:.2f} ms idle = "
            f"{report['median_ratio']:.2f}x (target at most {TARGET_VALIDATE_P50_RATIO}x; median of "
            f"{len(report['runs'])})\n"
        )
        for r in report["runs"]:
            sys.stdout.write(f"  {r}\n")
    else:
        report = run(args)
        _print_throughput(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _print_throughput(report: dict[str, Any]) -> None:
    sys.stdout.write(
        f"{report['requests']} requests, {report['latency_ms']} ms each, concurrency {report['concurrency']} "
        f"(shared by up to {report['chunks_at_a_time']} chunk messages): "
        f"median wall {report['median_wall_s']:.2f} s vs ideal {report['ideal_s']:.2f} s = "
        f"{report['ratio']:.2f}x (target {TARGET_RATIO}x)\n"
    )
    for r in report["runs"]:
        if r["status"] != "completed" or r["failed"]:
            sys.stdout.write(f"  run ended {r['status']} with {r['failed']} failed: {r['errors']}\n")


if __name__ == "__main__":
    sys.exit(main())
