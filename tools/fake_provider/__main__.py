"""CLI: `python -m tools.fake_provider --host 127.0.0.1 --port 4010 [--latency-ms N ...]`."""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import web

from .app import create_app
from .behaviour import Behaviour, merge, parse_profile


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.fake_provider",
        description="Deterministic fake OpenAI-compatible provider.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    parser.add_argument("--port", type=int, default=4010, help="0 picks a free port")
    parser.add_argument("--latency-ms", type=float, default=0, help="delay before responding")
    parser.add_argument("--chunk-delay-ms", type=float, default=0, help="delay between chunks")
    parser.add_argument("--tokens-per-chunk", type=int, default=1, help="words per chunk")
    parser.add_argument(
        "--behaviour",
        default="",
        metavar="SPEC",
        help="more default Behaviour fields in profile syntax, e.g. 'reply=hi,fail_first=1'",
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace, default: Behaviour) -> None:
    runner = web.AppRunner(create_app(default), access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        await web.TCPSite(runner, args.host, args.port).start()
        host, port = runner.addresses[0][:2]
        print(f"fake provider listening on http://{host}:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    flags = Behaviour(
        latency_ms=args.latency_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        tokens_per_chunk=args.tokens_per_chunk,
    )
    try:
        default = merge(flags, parse_profile(args.behaviour))
    except ValueError as exc:
        raise SystemExit(f"invalid --behaviour: {exc}") from None
    asyncio.run(_serve(args, default))


if __name__ == "__main__":
    main()
