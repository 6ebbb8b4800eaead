"""Application Insights volume: telemetry items and bytes per chat request and per batch request.

    python -m bench.appinsights [--chats 200] [--streams 50] [--batches 3] [--batch-lines 100]
                                [--idle-s 65] [--sampling all] [--json PATH]

Starts the local stack on free ports with APPLICATIONINSIGHTS_CONNECTION_STRING pointing at the
ingestion stand-in (tools/fake_ingestion.py) and the app's defaults otherwise (sampling `all`;
local mode, so Live Metrics and statsbeat are off; in Azure, Live Metrics goes to its own service
and is not billed as ingestion). After a warm-up request, each phase starts from an empty stand-in
and ends after a settle longer than the exporter's 5 s batch delay:

  - chat: `--chats` non-streamed chat requests, one after another;
  - stream: `--streams` streamed ones;
  - batch: `--batches` batches of `--batch-lines` chat lines each: upload, create, wait until
    completed (polling once a second), with their queue work;
  - idle: `--idle-s` seconds of no traffic: what an instance sends on its own (the sweeper's
    timer, metrics).

A request's items are those in its operation (the envelope's `ai.operation.id`): its Request, its
dependencies (model call, provider attempt, storage calls), its log lines; a batch's are those of
its upload and of its creation, whose operation its queue work joins. Polls (`GET
/v1/batches/{id}`) are the client's choice and reported apart, as are the items in no phase
operation (metrics, the sweeper). Bytes are each envelope's JSON as the exporter sends it (this
exporter version does not gzip); Log Analytics bills ingested volume by a similar measure.
GB per million requests = bytes per request x 10^6 / 10^9.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import openai

from tools.fake_ingestion import IngestionStandIn, base_data
from tools.stack import DEV_MASTER_KEY, LOOPBACK, Ports, running_stack

SETTLE_S = 8.0
CHAT = "POST /v1/chat/completions"


def _kind(envelope: dict[str, Any]) -> str:
    return envelope["name"].rsplit(".", 1)[-1]


def _operation(envelope: dict[str, Any]) -> str | None:
    return envelope.get("tags", {}).get("ai.operation.id")


def _size(envelope: dict[str, Any]) -> int:
    return len(json.dumps(envelope).encode())  # json.dumps' separators, as the exporter's client


def _tally(envelopes: list[dict[str, Any]], units: int) -> dict[str, Any]:
    kinds = collections.Counter(_kind(e) for e in envelopes)
    size = sum(_size(e) for e in envelopes)
    return {
        "units": units,
        "items": len(envelopes),
        "bytes": size,
        "items_per_unit": round(len(envelopes) / units, 2) if units else None,
        "bytes_per_unit": round(size / units) if units else None,
        "gb_per_million": round(size / units * 1e6 / 1e9, 3) if units else None,
        "by_kind_per_unit": {k: round(v / units, 2) for k, v in sorted(kinds.items())} if units else {},
    }


def _split(envelopes: list[dict[str, Any]], operations: set[str]) -> tuple[list[dict], list[dict]]:
    inside = [e for e in envelopes if _operation(e) in operations]
    return inside, [e for e in envelopes if _operation(e) not in operations]


def _settle(ingestion: IngestionStandIn) -> list[dict[str, Any]]:
    time.sleep(SETTLE_S)
    envelopes = ingestion.items()
    ingestion.clear()
    return envelopes


def _chats(client: httpx.Client, ingestion: IngestionStandIn, n: int, *, stream: bool) -> dict[str, Any]:
    body = {
        "model": "cirrus-local",
        "messages": [{"role": "user", "content": "Hello there"}],
        "stream": stream,
    }
    for _ in range(n):
        response = client.post("/v1/chat/completions", json=body)
        response.raise_for_status()
    envelopes = _settle(ingestion)
    operations = {
        _operation(e) for e in envelopes if _kind(e) == "Request" and base_data(e).get("name") == CHAT
    }
    inside, outside = _split(envelopes, {o for o in operations if o})
    return {"per_request": _tally(inside, n), "outside": _tally(outside, 1)}


def _batches(base_url: str, ingestion: IngestionStandIn, batches: int, lines: int) -> dict[str, Any]:
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key=DEV_MASTER_KEY, max_retries=0)
    for b in range(batches):
        rows = [
            {
                "custom_id": f"b{b}-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "cirrus-local", "messages": [{"role": "user", "content": f"line {i}"}]},
            }
            for i in range(lines)
        ]
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        source = sdk.files.create(file=("input.jsonl", io.BytesIO(data)), purpose="batch")
        batch = sdk.batches.create(
            input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        deadline = time.monotonic() + 600
        while (status := sdk.batches.retrieve(batch.id).status) not in {
            "completed",
            "failed",
            "expired",
            "cancelled",
        }:
            if time.monotonic() > deadline:
                raise RuntimeError(f"batch {batch.id} still {status} after 10 minutes")
            time.sleep(1.0)
        if status != "completed":
            raise RuntimeError(f"batch {batch.id} ended {status}")
    envelopes = _settle(ingestion)
    named = {name: set() for name in ("POST /v1/files", "POST /v1/batches", "GET /v1/batches/{batch_id}")}
    for e in envelopes:
        if _kind(e) == "Request" and (name := base_data(e).get("name")) in named and (op := _operation(e)):
            named[name].add(op)
    work, rest = _split(envelopes, named["POST /v1/files"] | named["POST /v1/batches"])
    polls, outside = _split(rest, named["GET /v1/batches/{batch_id}"])
    queue_requests = [
        e for e in work if _kind(e) == "Request" and base_data(e)["name"].startswith("process ")
    ]
    return {
        "per_batch": _tally(work, batches),
        "per_line": _tally(work, batches * lines),
        "queue_messages_per_batch": round(len(queue_requests) / batches, 2),
        "per_poll": _tally(polls, len(named["GET /v1/batches/{batch_id}"])),
        "outside": _tally(outside, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    ports = Ports.free()
    with tempfile.TemporaryDirectory() as tmp, IngestionStandIn() as ingestion:
        overrides = {
            "APPLICATIONINSIGHTS_CONNECTION_STRING": ingestion.connection_string,
            "CIRRUS_TELEMETRY_SAMPLING": args.sampling,
        }
        with running_stack(ports, Path(tmp), **overrides):
            base_url = f"http://{LOOPBACK}:{ports.host}"
            headers = {"Authorization": f"Bearer {DEV_MASTER_KEY}"}
            with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
                client.post(  # builds the container: provisioning's calls stay out of the phases
                    "/v1/chat/completions",
                    json={"model": "cirrus-local", "messages": [{"role": "user", "content": "warm up"}]},
                ).raise_for_status()
                _settle(ingestion)
                report: dict[str, Any] = {"sampling": args.sampling}
                report["chat"] = _chats(client, ingestion, args.chats, stream=False)
                print("  done: chat", file=sys.stderr, flush=True)
                report["stream"] = _chats(client, ingestion, args.streams, stream=True)
                print("  done: stream", file=sys.stderr, flush=True)
            report["batch"] = _batches(base_url, ingestion, args.batches, args.batch_lines)
            print("  done: batch", file=sys.stderr, flush=True)
            time.sleep(args.idle_s)
            idle = ingestion.items()
            report["idle_per_minute"] = _tally(idle, 1) | {"seconds": args.idle_s}
            report["idle_per_minute"]["items_per_unit"] = round(len(idle) * 60 / args.idle_s, 1)
            report["idle_per_minute"]["bytes_per_unit"] = round(sum(map(_size, idle)) * 60 / args.idle_s)
            report["other_paths"] = ingestion.snapshot().other_paths
        return report


def _line(label: str, tally: dict[str, Any]) -> str:
    kinds = ", ".join(f"{k} {v:g}" for k, v in tally["by_kind_per_unit"].items())
    gb = f"{tally['gb_per_million']:.3f} GB/M" if tally.get("gb_per_million") is not None else ""
    return f"{label:<24}{tally['items_per_unit']:>8.2f}{tally['bytes_per_unit']:>10,}  {gb:<12} {kinds}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch-lines", type=int, default=100)
    parser.add_argument("--idle-s", type=float, default=65.0)
    parser.add_argument("--sampling", default="all", help="CIRRUS_TELEMETRY_SAMPLING for the run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    if min(args.chats, args.streams, args.batches, args.batch_lines) < 1:
        parser.error("counts must be at least 1")
    started = time.monotonic()
    report = run(args)
    report["seconds"] = round(time.monotonic() - started, 1)
    print(f"Application Insights volume (sampling {args.sampling}; {report['seconds']}s), per unit:")
    print(f"{'':<24}{'items':>8}{'bytes':>10}  {'':<12} items by kind")
    print(_line(f"chat request (n={args.chats})", report["chat"]["per_request"]))
    print(_line(f"streamed chat (n={args.streams})", report["stream"]["per_request"]))
    print(_line(f"batch ({args.batch_lines} lines)", report["batch"]["per_batch"]))
    print(_line("  per batch line", report["batch"]["per_line"]))
    print(_line("  per status poll", report["batch"]["per_poll"]))
    idle = report["idle_per_minute"]
    print(f"{'idle instance, a minute':<24}{idle['items_per_unit']:>8.1f}{idle['bytes_per_unit']:>10,}")
    if report["other_paths"]:
        print(f"other calls to the ingestion endpoint: {report['other_paths']}", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
