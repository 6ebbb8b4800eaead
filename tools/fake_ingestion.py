"""A local stand-in for Application Insights' ingestion endpoint, for tests and benchmarks.

The Azure Monitor exporter sends telemetry to `<IngestionEndpoint>/v2.1/track`: a POST whose body
is a JSON array of envelopes (gzip'd when the request says `Content-Encoding: gzip`), answered
with `{"itemsReceived": n, "itemsAccepted": n, "errors": []}`. A connection string of
`InstrumentationKey=<guid>;IngestionEndpoint=http://127.0.0.1:<port>/` points an exporter here.

It records every envelope, the decoded body of every request (to search for what must never be
sent) and the bytes that came over the wire, and answers anything else it is sent (live metrics,
a path it does not know) with a 404, recording the path, so a test can say nothing else was
called. It runs an aiohttp server on its own thread, so a synchronous test or benchmark can use
it; `stop()` (or leaving the `with` block) shuts it down.

    with IngestionStandIn() as ingestion:
        env["APPLICATIONINSIGHTS_CONNECTION_STRING"] = ingestion.connection_string
        ...
        requests = ingestion.items("Request")
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

LOOPBACK = "127.0.0.1"
INSTRUMENTATION_KEY = "00000000-0000-4000-8000-00000000c1a5"
TRACK_PATH = "/v2.1/track"
ENVELOPE_PREFIX = "Microsoft.ApplicationInsights."


@dataclass
class Received:
    """What the stand-in has been sent so far."""

    envelopes: list[dict[str, Any]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # decoded (gunzipped) request bodies
    wire_bytes: int = 0  # request bodies as sent, compressed or not
    other_paths: list[str] = field(default_factory=list)


class IngestionStandIn:
    """`POST /v2.1/track` on 127.0.0.1 (a free port unless given), recording what arrives."""

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._lock = threading.Lock()
        self._received = Received()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> IngestionStandIn:
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-ingestion", daemon=True)
        self._thread.start()
        started.wait(30)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop = self._thread = None

    def __enter__(self) -> IngestionStandIn:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._route)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self._port).start()
        self._port = self._runner.addresses[0][1]

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- the protocol -------------------------------------------------------------------------

    async def _route(self, request: web.Request) -> web.Response:
        # The exporter joins `IngestionEndpoint` (which ends in `/`) and `/v2.1/track` as they are.
        if request.method == "POST" and "/" + request.path.lstrip("/") == TRACK_PATH:
            return await self._track(request)
        return await self._elsewhere(request)

    async def _track(self, request: web.Request) -> web.Response:
        # aiohttp decodes a gzip'd request body itself; the wire size is what was sent.
        raw = await request.content.read() if request.content else b""
        body = raw
        if request.headers.get("Content-Encoding", "").lower() == "gzip" and raw[:2] == b"\x1f\x8b":
            body = gzip.decompress(raw)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = [json.loads(line) for line in body.splitlines() if line.strip()]  # NDJSON
        envelopes = parsed if isinstance(parsed, list) else [parsed]
        with self._lock:
            self._received.envelopes.extend(envelopes)
            self._received.bodies.append(body)
            self._received.wire_bytes += request.content_length or len(raw)
        count = len(envelopes)
        return web.json_response({"itemsReceived": count, "itemsAccepted": count, "errors": []})

    async def _elsewhere(self, request: web.Request) -> web.Response:
        with self._lock:
            self._received.other_paths.append(f"{request.method} {request.path}")
        return web.json_response({"error": "not served by the ingestion stand-in"}, status=404)

    # --- what arrived -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self._port}/"

    @property
    def connection_string(self) -> str:
        return f"InstrumentationKey={INSTRUMENTATION_KEY};IngestionEndpoint={self.endpoint}"

    def snapshot(self) -> Received:
        with self._lock:
            r = self._received
            return Received(list(r.envelopes), list(r.bodies), r.wire_bytes, list(r.other_paths))

    def clear(self) -> None:
        with self._lock:
            self._received = Received()

    def items(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Envelopes of one kind (`Request`, `RemoteDependency`, `Exception`, `Message`, `Metric`)."""
        envelopes = self.snapshot().envelopes
        if kind is None:
            return envelopes
        return [e for e in envelopes if e.get("name") == ENVELOPE_PREFIX + kind]

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 30.0, interval: float = 0.1
    ) -> list[dict[str, Any]]:
        """Wait until `predicate(all envelopes)` holds; the envelopes then. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            envelopes = self.snapshot().envelopes
            if predicate(envelopes):
                return envelopes
            if time.monotonic() > deadline:
                raise TimeoutError(f"ingestion stand-in: condition not met in {timeout:.0f}s")
            time.sleep(interval)


def base_data(envelope: dict[str, Any]) -> dict[str, Any]:
    """An envelope's `data.baseData`: the telemetry item itself."""
    return envelope.get("data", {}).get("baseData", {})


def properties(envelope: dict[str, Any]) -> dict[str, str]:
    """What the portal shows as `customDimensions`."""
    return base_data(envelope).get("properties") or {}


def item_count(envelope: dict[str, Any]) -> float:
    """How many items this one stands for: the portal's `itemCount`, 100 / `sampleRate`."""
    rate = envelope.get("sampleRate")
    return 100.0 / float(rate) if rate else 1.0


def sample_score(trace_id: str) -> float:
    """Application Insights' sampling score of a trace id (32 hex digits), in [0, 1]: a trace is
    kept at a share p when its score is below p (the SDKs' DJB2 hash, so every process decides the
    same). Lets a test choose trace ids a share keeps or drops."""
    value = 5381
    for char in trace_id.lower():
        value = ((value << 5) + value + ord(char)) & 0xFFFFFFFF
    value = value - (1 << 32) if value >= 1 << 31 else value  # as a signed 32-bit integer
    int32_max = (1 << 31) - 1
    return (int32_max if value == -(1 << 31) else abs(value)) / int32_max


def main(argv: list[str] | None = None) -> None:
    """`python -m tools.fake_ingestion`: print the connection string, then each envelope as it arrives."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.fake_ingestion", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with IngestionStandIn(args.port) as ingestion:
        print(f"APPLICATIONINSIGHTS_CONNECTION_STRING='{ingestion.connection_string}'", flush=True)
        seen = 0
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                envelopes = ingestion.items()
                for envelope in envelopes[seen:]:
                    print(json.dumps(envelope), flush=True)
                seen = len(envelopes)
                time.sleep(0.5)


if __name__ == "__main__":
    main()
