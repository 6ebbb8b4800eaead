"""`python -m tools.funchost`: serve the script root's function_app until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

import uvloop

from .channel import WorkerChannel, WorkerError
from .cors import CorsPolicy, cors_policy
from .hostconfig import HostConfig, HostConfigError, load_host_config, load_local_settings

log = logging.getLogger("funchost")
STOP_GRACE_SECONDS = 10.0  # a worker that failed to start gets this long to exit on SIGTERM


async def _host(args: argparse.Namespace, script_root: Path, config: HostConfig, cors: CorsPolicy) -> int:
    """Launch the worker, import the serving code while it starts, then serve its functions."""
    channel = WorkerChannel(script_root)
    try:
        await channel.launch(os.environ)
        from . import serve  # noqa: PLC0415 - imported while the worker imports the app

        await channel.ready()
    except (HostConfigError, WorkerError) as exc:
        log.error("Cannot start: %s", exc)
        await channel.stop(STOP_GRACE_SECONDS)
        return 2
    return await serve.serve(args, config, channel, cors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.funchost", description=__doc__.splitlines()[0])
    parser.add_argument("--script-root", type=Path, default=Path.cwd(), help="folder of function_app.py")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)  # Core Tools' default
    # As `func start`'s options of the same names; unset, local.settings.json's Host section decides.
    parser.add_argument(
        "--cors",
        help="comma-separated CORS origins, no spaces (default: Host.CORS of local.settings.json)",
    )
    parser.add_argument(
        "--cors-credentials",
        action=argparse.BooleanOptionalAction,
        help="allow credentialed cross-origin requests (default: Host.CORSCredentials)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", stream=sys.stderr)
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDK logs every storage request at INFO
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # Core Tools prints no access lines

    script_root = args.script_root.resolve()
    try:
        load_local_settings(script_root)
        config = load_host_config(script_root)
        cors = cors_policy(script_root, args.cors, args.cors_credentials)
    except HostConfigError as exc:
        log.error("Cannot start: %s", exc)
        return 2
    os.chdir(script_root)  # the worker's working directory is the script root
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_host(args, script_root, config, cors))


if __name__ == "__main__":
    sys.exit(main())
