"""Gateway overhead: Cirrus vs the fake provider called directly, in the same run.

    python -m bench.gateway [--requests-c1 300] [--requests-c32 2000] [--requests-stream 200]
                            [--repeats 3] [--client aiohttp|httpx] [--appinsights] [--json PATH]

Starts the local stack on free ports (fake provider with zero latency and no chunk delay), warms
it up, then per repeat runs the same load against the baseline (`POST /v1/chat/completions` on the
fake provider, model `gpt-4o-mini`) and right after against the gateway (model `cirrus-local`,
which routes to that same fake). Non-streaming at concurrency 1 and 32: p50/p99 latency and
requests per second; streaming at concurrency 1: time to the first `data:` event with non-empty
`delta.content` (TTFT). Added = gateway − baseline per repeat; every figure is the median over
repeats. Target: p50 added latency at concurrency 1 at most 5 ms (reported, never asserted).
The load generator shares the CPU with both servers, so absolute numbers depend on the machine.
It is aiohttp by default: httpx's async pool costs ~3.5 ms of client CPU per request at c=32 on
2 cores (vs ~0.15 ms), which would cap both targets at ~280 rps and hide the gateway's own limit.

`--appinsights`: then the CPU cost of exporting to Application Insights. Two more local hosts on
the same stack, one plain and one with APPLICATIONINSIGHTS_CONNECTION_STRING pointing at a local
stand-in of the ingestion endpoint (tools/fake_ingestion.py; sampling `all`, the default), take
the same non-streaming load in turn (c=1 and c=32, `--repeats` times, order alternating). Each
run's CPU is the host's whole process tree (host and worker, /proc) from the first request until
the exporter's next batch has gone (6 s after the last; the exporter sends every 5 s), minus what
that host uses idle over as long (measured just before). Reported: CPU ms per request for each,
the difference (what exporting costs) and the ratio, and the items and bytes the stand-in got.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from tools.stack import (
    DEV_MASTER_KEY,
    LOOPBACK,
    Ports,
    http_ok,
    running_stack,
)

TARGET_ADDED_P50_MS = 5.0
EXPORT_SETTLE_S = 6.0  # the Azure Monitor exporter sends a batch every 5 s
MESSAGES = [{"role": "user", "content": "hi"}]
WARMUP_REQUESTS = 50


@dataclass(frozen=True)
class Target:
    """One endpoint to load: the fake provider directly (baseline) or the gateway."""

    name: str
    url: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)

    def body(self, *, stream: bool) -> bytes:
        payload: dict[str, Any] = {"model": self.model, "messages": MESSAGES}
        if stream:
            payload["stream"] = True
        return json.dumps(payload).encode()


@dataclass
class Run:
    """One timed batch of requests against one target."""

    latencies: list[float]  # seconds, successful requests only
    wall: float
    errors: list[str]

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000 if self.latencies else float("nan")

    @property
    def p99_ms(self) -> float:
        if len(self.latencies) < 2:
            return self.p50_ms
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[98] * 1000

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall if self.wall else float("nan")


class _BadStatus(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")


def _has_content(data: str) -> bool:
    """Whether an SSE `data:` payload carries non-empty `delta.content`."""
    if not data or data == "[DONE]":
        return False
    choices = json.loads(data).get("choices") or []
    return any((c.get("delta") or {}).get("content") for c in choices)


class HttpxClient:
    """httpx.AsyncClient, HTTP/1.1 keep-alive, pool sized for the concurrency."""

    def __init__(self, concurrency: int) -> None:
        limits = httpx.Limits(
            max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=60
        )
        self._client = httpx.AsyncClient(limits=limits, timeout=60.0, http1=True, http2=False)

    async def plain(self, target: Target, body: bytes) -> float:
        started = time.perf_counter()
        response = await self._client.post(target.url, content=body, headers=target.headers)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise _BadStatus(response.status_code, response.text[:200])
        return elapsed

    async def ttft(self, target: Target, body: bytes) -> float:
        started = time.perf_counter()
        first: float | None = None
        async with self._client.stream("POST", target.url, content=body, headers=target.headers) as response:
            if response.status_code != 200:
                raise _BadStatus(response.status_code, (await response.aread()).decode(errors="replace"))
            async for line in response.aiter_lines():  # read to the end so the connection is reused
                if first is None and line.startswith("data:") and _has_content(line[5:].strip()):
                    first = time.perf_counter() - started
        if first is None:
            raise RuntimeError("stream ended without content")
        return first

    async def aclose(self) -> None:
        await self._client.aclose()


class AiohttpClient:
    """aiohttp.ClientSession, HTTP/1.1 keep-alive, pool sized for the concurrency."""

    def __init__(self, concurrency: int) -> None:
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))

    async def plain(self, target: Target, body: bytes) -> float:
        started = time.perf_counter()
        async with self._session.post(target.url, data=body, headers=target.headers) as response:
            text = await response.read()
        elapsed = time.perf_counter() - started
        if response.status != 200:
            raise _BadStatus(response.status, text[:200].decode(errors="replace"))
        return elapsed

    async def ttft(self, target: Target, body: bytes) -> float:
        started = time.perf_counter()
        first: float | None = None
        async with self._session.post(target.url, data=body, headers=target.headers) as response:
            if response.status != 200:
                raise _BadStatus(response.status, (await response.read())[:200].decode(errors="replace"))
            async for raw in response.content:  # read to the end so the connection is reused
                line = raw.decode()
                if first is None and line.startswith("data:") and _has_content(line[5:].strip()):
                    first = time.perf_counter() - started
        if first is None:
            raise RuntimeError("stream ended without content")
        return first

    async def aclose(self) -> None:
        await self._session.close()


Client = HttpxClient | AiohttpClient
CLIENTS: dict[str, type[HttpxClient] | type[AiohttpClient]] = {"aiohttp": AiohttpClient, "httpx": HttpxClient}
Request = Callable[[], Awaitable[float]]


def _request(client: Client, target: Target, *, stream: bool) -> Request:
    """One request to `target`; awaiting it gives its latency (stream: time to first token)."""
    body = target.body(stream=stream)
    if stream:
        return lambda: client.ttft(target, body)
    return lambda: client.plain(target, body)


async def _load(send: Request, requests: int, concurrency: int) -> Run:
    """`requests` calls of `send` by `concurrency` workers; wall time from first send to last reply."""
    latencies: list[float] = []
    errors: list[str] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                latencies.append(await send())
            except Exception as exc:  # every failure is counted and reported
                errors.append(f"{type(exc).__name__}: {exc}"[:300])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Run(latencies, time.perf_counter() - started, errors)


@dataclass
class Scenario:
    key: str
    label: str
    concurrency: int
    requests: int
    stream: bool


async def _measure(
    targets: tuple[Target, Target], scenarios: list[Scenario], repeats: int, client_name: str
) -> dict[str, Any]:
    """Every scenario, `repeats` times, baseline then gateway each repeat (one client per target)."""
    results: dict[str, Any] = {}
    errors: list[str] = []
    for sc in scenarios:
        clients = [CLIENTS[client_name](sc.concurrency) for _ in targets]
        try:
            sends = [_request(c, t, stream=sc.stream) for c, t in zip(clients, targets, strict=True)]
            runs: list[list[Run]] = [[], []]
            for _ in range(repeats):
                for i, send in enumerate(sends):
                    # Untimed: open (or reopen) the pool's connections; servers close idle ones.
                    await _load(send, 2 * sc.concurrency, sc.concurrency)
                    run = await _load(send, sc.requests, sc.concurrency)
                    runs[i].append(run)
                    errors += [f"{sc.key} {targets[i].name}: {e}" for e in run.errors]
        finally:
            for client in clients:
                await client.aclose()
        results[sc.key] = _summarise(sc, *runs)
        print(f"  done: {sc.label}", file=sys.stderr, flush=True)
    return {"scenarios": results, "errors": errors}


def _summarise(sc: Scenario, base: list[Run], gw: list[Run]) -> dict[str, Any]:
    def med(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    return {
        "label": sc.label,
        "concurrency": sc.concurrency,
        "requests": sc.requests,
        "repeats": len(base),
        "baseline": {
            "p50_ms": med([r.p50_ms for r in base]),
            "p99_ms": med([r.p99_ms for r in base]),
            "rps": med([r.rps for r in base]),
            "errors": sum(len(r.errors) for r in base),
        },
        "gateway": {
            "p50_ms": med([r.p50_ms for r in gw]),
            "p99_ms": med([r.p99_ms for r in gw]),
            "rps": med([r.rps for r in gw]),
            "errors": sum(len(r.errors) for r in gw),
        },
        "added_p50_ms": med([g.p50_ms - b.p50_ms for b, g in zip(base, gw, strict=True)]),
        "added_p99_ms": med([g.p99_ms - b.p99_ms for b, g in zip(base, gw, strict=True)]),
        "rps_ratio": med([g.rps / b.rps for b, g in zip(base, gw, strict=True)]),
        "per_repeat": [
            {"baseline_p50_ms": round(b.p50_ms, 3), "gateway_p50_ms": round(g.p50_ms, 3)}
            for b, g in zip(base, gw, strict=True)
        ],
    }


def _wait_ready(url: str, timeout: float = 120.0) -> None:
    """Poll /health/ready until 200: the first call builds the container and provisions storage."""
    deadline = time.monotonic() + timeout
    while not http_ok(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not 200 after {timeout:.0f} s")
        time.sleep(0.1)


async def _warm_up(targets: tuple[Target, Target], client_name: str) -> None:
    """Untimed requests of both kinds to both targets, so first-call costs stay out of the numbers."""
    for target in targets:
        client = CLIENTS[client_name](1)
        try:
            for stream in (False, True):
                run = await _load(_request(client, target, stream=stream), WARMUP_REQUESTS, 1)
                if run.errors:
                    raise RuntimeError(f"warm-up against {target.name} failed: {run.errors[0]}")
        finally:
            await client.aclose()


def _table(report: dict[str, Any]) -> str:
    head = (
        f"{'scenario':<22}{'n':>6}  {'base p50':>9}{'p99':>8}{'rps':>8}  "
        f"{'gw p50':>9}{'p99':>8}{'rps':>8}  {'added p50':>10}{'p99':>8}{'rps x':>7}"
    )
    lines = [head, "-" * len(head)]
    for s in report["scenarios"].values():
        b, g = s["baseline"], s["gateway"]
        lines.append(
            f"{s['label']:<22}{s['requests']:>6}  {b['p50_ms']:>9.2f}{b['p99_ms']:>8.2f}{b['rps']:>8.0f}  "
            f"{g['p50_ms']:>9.2f}{g['p99_ms']:>8.2f}{g['rps']:>8.0f}  "
            f"{s['added_p50_ms']:>10.2f}{s['added_p99_ms']:>8.2f}{s['rps_ratio']:>7.2f}"
        )
    return "\n".join(lines)


async def _host_cpu(pid: int, send: Request, requests: int, concurrency: int) -> tuple[float, Run]:
    """CPU seconds `pid`'s process tree spends on `requests` requests (its idle use subtracted)."""
    from bench.peer import tree_cpu  # noqa: PLC0415 - bench.peer imports this module

    idle_from = tree_cpu(pid)
    await asyncio.sleep(EXPORT_SETTLE_S)
    idle_rate = (tree_cpu(pid) - idle_from) / EXPORT_SETTLE_S
    started, cpu_before = time.monotonic(), tree_cpu(pid)
    run = await _load(send, requests, concurrency)
    await asyncio.sleep(EXPORT_SETTLE_S)  # what the requests left to export is sent
    used = tree_cpu(pid) - cpu_before - idle_rate * (time.monotonic() - started)
    return max(used, 0.0), run


def _appinsights_cpu(env: dict[str, str], workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The gateway's CPU per request with and without App Insights configured, in the same run."""
    from tools.fake_ingestion import IngestionStandIn  # noqa: PLC0415
    from tools.stack import free_port, local_host  # noqa: PLC0415

    scenarios = [("c1", 1, args.requests_c1), ("c32", 32, args.requests_c32)]
    with IngestionStandIn() as ingestion:
        hosts = {}
        try:
            for name, extra in (
                ("plain", {}),
                ("appinsights", {"APPLICATIONINSIGHTS_CONNECTION_STRING": ingestion.connection_string}),
            ):
                port = free_port()
                process = local_host(
                    port, {**env, **extra}, workdir / "logs" / f"funchost-{name}.log"
                ).start()
                hosts[name] = (process, port)
            for process, port in hosts.values():
                process.wait_ready()
                _wait_ready(f"http://{LOOPBACK}:{port}/health/ready")
            targets = {
                name: Target(
                    name,
                    f"http://{LOOPBACK}:{port}/v1/chat/completions",
                    "cirrus-local",
                    {"Authorization": f"Bearer {DEV_MASTER_KEY}", "Content-Type": "application/json"},
                )
                for name, (_, port) in hosts.items()
            }

            async def go() -> dict[str, Any]:
                per_request: dict[str, dict[str, list[float]]] = {
                    k: {h: [] for h in hosts} for k, _, _ in scenarios
                }
                items = {k: [0, 0, 0] for k, _, _ in scenarios}  # requests, items, bytes
                for key, concurrency, requests in scenarios:
                    clients = {h: CLIENTS[args.client](concurrency) for h in hosts}
                    try:
                        for name in hosts:  # warm: the container, the pools, the exporter
                            await _load(
                                _request(clients[name], targets[name], stream=False),
                                2 * concurrency,
                                concurrency,
                            )
                        for repeat in range(args.repeats):
                            order = list(hosts) if repeat % 2 == 0 else list(reversed(hosts))
                            for name in order:
                                send = _request(clients[name], targets[name], stream=False)
                                if name == "appinsights":
                                    await asyncio.sleep(EXPORT_SETTLE_S)
                                    ingestion.clear()
                                cpu, run = await _host_cpu(
                                    hosts[name][0].proc.pid, send, requests, concurrency
                                )
                                if run.errors:
                                    raise RuntimeError(f"{name} {key}: {run.errors[0]}")
                                per_request[key][name].append(cpu / requests)
                                if name == "appinsights":
                                    got = ingestion.snapshot()
                                    items[key][0] += requests
                                    items[key][1] += len(got.envelopes)
                                    items[key][2] += got.wire_bytes
                    finally:
                        for client in clients.values():
                            await client.aclose()
                    print(f"  done: App Insights CPU, {key}", file=sys.stderr, flush=True)
                report: dict[str, Any] = {}
                for key, concurrency, requests in scenarios:
                    plain = statistics.median(per_request[key]["plain"]) * 1000
                    exported = statistics.median(per_request[key]["appinsights"]) * 1000
                    sent, count, size = items[key]
                    report[key] = {
                        "concurrency": concurrency,
                        "requests": requests,
                        "repeats": args.repeats,
                        "plain_cpu_ms_per_request": round(plain, 3),
                        "appinsights_cpu_ms_per_request": round(exported, 3),
                        "added_cpu_ms_per_request": round(exported - plain, 3),
                        "ratio": round(exported / plain, 3) if plain else None,
                        "items_per_request": round(count / sent, 2),
                        "bytes_per_request": round(size / sent),
                        "per_repeat_ms": {
                            h: [round(v * 1000, 3) for v in per_request[key][h]] for h in hosts
                        },
                    }
                return report

            return asyncio.run(go())
        finally:
            for process, _ in hosts.values():
                process.stop()


def _appinsights_table(report: dict[str, Any]) -> str:
    lines = [
        "gateway CPU per request (host + worker, idle subtracted, median of repeats), without and with "
        "Application Insights (a local stand-in of its ingestion):",
        f"{'scenario':<18}{'n':>6}{'plain ms':>10}{'+AI ms':>9}{'added':>8}{'ratio':>7}"
        f"{'items':>7}{'bytes':>8}",
    ]
    for key, r in report.items():
        lines.append(
            f"{'non-stream ' + key.replace('c', 'c='):<18}{r['requests']:>6}"
            f"{r['plain_cpu_ms_per_request']:>10.3f}"
            f"{r['appinsights_cpu_ms_per_request']:>9.3f}{r['added_cpu_ms_per_request']:>8.3f}{r['ratio']:>7.2f}"
            f"{r['items_per_request']:>7.2f}{r['bytes_per_request']:>8,}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    ports = Ports.free()
    provider_args = ("--latency-ms", "0", "--chunk-delay-ms", "0", "--tokens-per-chunk", "1")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        try:
            with running_stack(ports, workdir, provider_args=provider_args) as (_emulators, env):
                baseline = Target(
                    "baseline", f"http://{LOOPBACK}:{ports.provider}/v1/chat/completions", "gpt-4o-mini"
                )
                gateway = Target(
                    "gateway",
                    f"http://{LOOPBACK}:{ports.host}/v1/chat/completions",
                    "cirrus-local",
                    {"Authorization": f"Bearer {DEV_MASTER_KEY}"},
                )
                targets = (baseline, gateway)
                for target in targets:
                    target.headers["Content-Type"] = "application/json"
                scenarios = [
                    Scenario("c1", "non-stream c=1", 1, args.requests_c1, stream=False),
                    Scenario("c32", "non-stream c=32", 32, args.requests_c32, stream=False),
                    Scenario("stream_ttft_c1", "stream TTFT c=1", 1, args.requests_stream, stream=True),
                ]
                _wait_ready(f"http://{LOOPBACK}:{ports.host}/health/ready")

                async def go() -> dict[str, Any]:
                    await _warm_up(targets, args.client)
                    return await _measure(targets, scenarios, args.repeats, args.client)

                started = time.monotonic()
                report = asyncio.run(go())
                if args.appinsights:
                    report["appinsights"] = _appinsights_cpu(env, workdir, args)
                report["seconds"] = round(time.monotonic() - started, 1)
                return report
        except BaseException:
            log = workdir / "logs" / "funchost.log"
            if log.exists():  # the workdir is about to go: show why the gateway failed
                tail = log.read_text(errors="replace").splitlines()[-40:]
                print("--- last lines of the gateway's log ---", *tail, sep="\n", file=sys.stderr)
            raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--requests-c1", type=int, default=300, help="non-streaming requests at concurrency 1"
    )
    parser.add_argument(
        "--requests-c32", type=int, default=2000, help="non-streaming requests at concurrency 32"
    )
    parser.add_argument("--requests-stream", type=int, default=200, help="streaming requests (concurrency 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="aiohttp",
        help="load generator (httpx's pool is client-bound at c=32 on a small machine)",
    )
    parser.add_argument(
        "--appinsights",
        action="store_true",
        help="also the CPU per request of exporting to Application Insights (a local stand-in), vs none",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    if min(args.requests_c1, args.requests_c32, args.requests_stream, args.repeats) < 1:
        parser.error("request counts and --repeats must be at least 1")

    report = run(args)
    report["client"] = args.client
    c1 = report["scenarios"]["c1"]["added_p50_ms"]
    report["target"] = {"added_p50_c1_ms_max": TARGET_ADDED_P50_MS, "met": c1 <= TARGET_ADDED_P50_MS}
    print(
        f"gateway vs fake provider direct, median of {args.repeats} repeats "
        f"({args.client} client; latencies in ms; added = gateway - baseline; rps x = gateway/baseline; "
        f"{report['seconds']}s):"
    )
    print(_table(report))
    verdict = "PASS" if c1 <= TARGET_ADDED_P50_MS else "MISS"
    print(f"target: p50 added latency at c=1 <= {TARGET_ADDED_P50_MS:.0f} ms: {c1:.2f} ms -> {verdict}")
    if "appinsights" in report:
        print(_appinsights_table(report["appinsights"]))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if report["errors"]:
        print(f"FAILED: {len(report['errors'])} requests did not answer 200, e.g.:", file=sys.stderr)
        for line in report["errors"][:5]:
            print("  " + line, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
