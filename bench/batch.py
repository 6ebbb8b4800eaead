"""A 1,000-request batch against a provider that takes 100 ms a request: wall time vs the ideal.

    python -m bench.batch [--requests 1000] [--latency-ms 100] [--chunk-size 100]
                          [--concurrency 8] [--batch-size 16] [--new-batch-threshold 8]
                          [--repeats 3] [--json PATH]

Starts the local stack on free ports with the fake provider answering after `--latency-ms`, and
the local host with `CIRRUS_BATCH_CHUNK_SIZE`, `CIRRUS_BATCH_CONCURRENCY` and host.json's queue
`batchSize` and `newBatchThreshold` set from the flags. Each repeat uploads a JSONL file of
`--requests` chat requests, creates the batch with the official `openai` SDK and polls until it
ends.

The configured concurrency is the number of requests in flight at once: `CIRRUS_BATCH_CONCURRENCY`
per batch in a worker, shared by the chunk messages it holds (host.json's batchSize +
newBatchThreshold of them at most). Ideal = ceil(requests / concurrency) x latency:
what the provider's latency alone would cost at that concurrency. Reported: median wall time
(create → completed) over repeats and its ratio to the ideal. Target: at most 1.3x (reported, never asserted).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

from tools.stack import DEV_MASTER_KEY, LOOPBACK, Ports, running_stack

TARGET_RATIO = 1.3


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
    args = parser.parse_args(argv)
    report = run(args)
    sys.stdout.write(
        f"{report['requests']} requests, {report['latency_ms']} ms each, concurrency {report['concurrency']} "
        f"(shared by up to {report['chunks_at_a_time']} chunk messages): "
        f"median wall {report['median_wall_s']:.2f} s vs ideal {report['ideal_s']:.2f} s = "
        f"{report['ratio']:.2f}x (target {TARGET_RATIO}x)\n"
    )
    for r in report["runs"]:
        if r["status"] != "completed" or r["failed"]:
            sys.stdout.write(f"  run ended {r['status']} with {r['failed']} failed: {r['errors']}\n")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
