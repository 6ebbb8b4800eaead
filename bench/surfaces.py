"""What translation costs: the same question through chat completions, Responses and Messages.

    python -m bench.surfaces [--requests-c1 300] [--requests-c16 1500] [--requests-stream 200]
                             [--repeats 3] [--json PATH]

Starts the local stack on free ports (fake provider with zero latency, one word a chunk) and, per
repeat, asks the same one-line question of `cirrus-local` over `POST /v1/chat/completions`,
`POST /v1/responses` and `POST /v1/messages`, one surface right after another. `cirrus-local` is an
OpenAI-wire deployment, so Responses and Messages are translated to a chat completion and back;
the upstream request is the same for all three. Reported per surface, medians over repeats: p50
latency at concurrency 1, requests per second at concurrency 16, and the time to read a whole
stream at concurrency 1, each also as a ratio to chat's in the same repeat. The load generator
shares both cores with the servers: ratios are the figures to read, not absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.gateway import Run, _load, _wait_ready
from tools.stack import DEV_MASTER_KEY, LOOPBACK, Ports, running_stack

QUESTION = "hi"


@dataclass(frozen=True)
class Surface:
    name: str
    path: str
    body: dict[str, Any]

    def payload(self, *, stream: bool) -> bytes:
        return json.dumps({**self.body, **({"stream": True} if stream else {})}).encode()


SURFACES = (
    Surface(
        "chat",
        "/v1/chat/completions",
        {"model": "cirrus-local", "messages": [{"role": "user", "content": QUESTION}]},
    ),
    Surface("responses", "/v1/responses", {"model": "cirrus-local", "input": QUESTION, "store": False}),
    Surface(
        "messages",
        "/v1/messages",
        {"model": "cirrus-local", "max_tokens": 256, "messages": [{"role": "user", "content": QUESTION}]},
    ),
)
HEADERS = {"Authorization": f"Bearer {DEV_MASTER_KEY}", "Content-Type": "application/json"}


class Client:
    """aiohttp, keep-alive, a pool sized for the concurrency; each call's wall time to the last byte."""

    def __init__(self, concurrency: int) -> None:
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))

    async def call(self, url: str, body: bytes) -> float:
        started = time.perf_counter()
        async with self._session.post(url, data=body, headers=HEADERS) as response:
            text = await response.read()  # a stream is read to its end
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {text[:200].decode(errors='replace')}")
        return time.perf_counter() - started

    async def aclose(self) -> None:
        await self._session.close()


async def _scenario(
    base: str, concurrency: int, requests: int, repeats: int, *, stream: bool
) -> dict[str, Any]:
    """Each surface `repeats` times, interleaved so drift hits all three alike."""
    client = Client(concurrency)
    runs: dict[str, list[Run]] = {s.name: [] for s in SURFACES}
    try:
        for _ in range(repeats):
            for surface in SURFACES:
                url, body = base + surface.path, surface.payload(stream=stream)

                async def send(url: str = url, body: bytes = body) -> float:
                    return await client.call(url, body)

                await _load(send, 2 * concurrency, concurrency)  # untimed: open the pool's connections
                runs[surface.name].append(await _load(send, requests, concurrency))
    finally:
        await client.aclose()
    out: dict[str, Any] = {}
    for surface in SURFACES:
        mine, chat = runs[surface.name], runs["chat"]
        out[surface.name] = {
            "p50_ms": round(statistics.median(r.p50_ms for r in mine), 3),
            "rps": round(statistics.median(r.rps for r in mine), 1),
            "p50_vs_chat": round(
                statistics.median(m.p50_ms / c.p50_ms for m, c in zip(mine, chat, strict=True)), 2
            ),
            "rps_vs_chat": round(
                statistics.median(m.rps / c.rps for m, c in zip(mine, chat, strict=True)), 2
            ),
            "errors": [e for r in mine for e in r.errors][:5],
        }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    ports = Ports.free()
    provider_args = ("--latency-ms", "0", "--chunk-delay-ms", "0", "--tokens-per-chunk", "1")
    with tempfile.TemporaryDirectory() as tmp, running_stack(ports, Path(tmp), provider_args=provider_args):
        base = f"http://{LOOPBACK}:{ports.host}"
        _wait_ready(f"{base}/health/ready")

        async def go() -> dict[str, Any]:
            await _scenario(base, 4, 50, 1, stream=False)  # warm every path once
            return {
                "json_c1": await _scenario(base, 1, args.requests_c1, args.repeats, stream=False),
                "json_c16": await _scenario(base, 16, args.requests_c16, args.repeats, stream=False),
                "stream_c1": await _scenario(base, 1, args.requests_stream, args.repeats, stream=True),
            }

        started = time.monotonic()
        report = asyncio.run(go())
        report["seconds"] = round(time.monotonic() - started, 1)
        return report


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"{'surface':<10}{'p50 c=1 ms':>12}{'x chat':>8}{'rps c=16':>10}{'x chat':>8}"
        f"{'stream c=1 ms':>15}{'x chat':>8}"
    ]
    for surface in SURFACES:
        c1, c16, st = (report[k][surface.name] for k in ("json_c1", "json_c16", "stream_c1"))
        lines.append(
            f"{surface.name:<10}{c1['p50_ms']:>12.2f}{c1['p50_vs_chat']:>8.2f}{c16['rps']:>10.0f}"
            f"{c16['rps_vs_chat']:>8.2f}{st['p50_ms']:>15.2f}{st['p50_vs_chat']:>8.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests-c1", type=int, default=300)
    parser.add_argument("--requests-c16", type=int, default=1500)
    parser.add_argument("--requests-stream", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    report = run(args)
    print(
        f"one question through each surface of cirrus-local, median of {args.repeats} "
        f"({report['seconds']} s):"
    )
    print(_table(report))
    errors = [
        e for k in ("json_c1", "json_c16", "stream_c1") for s in report[k].values() for e in s["errors"]
    ]
    if errors:
        print("errors:", *errors, sep="\n  ", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
