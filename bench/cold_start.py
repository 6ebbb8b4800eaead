"""Cold start of the local stack: `make dev` launch → first 200 on /health, /health/ready, first chat.

    python -m bench.cold_start [--repeats 3]

Each run uses a fresh data directory. /health answers as soon as the host serves (the baseline);
/health/ready also needs Cosmos, Blob, Queue and the model router (which imports LiteLLM only when
the model file has a deployment that needs it; the local one does not). The first chat answer is a
`cirrus-local` chat completion with the dev master key, sent once /health/ready answers.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

from tools.stack import DEV_MASTER_KEY, ROOT, Ports, http_ok, port_open

CHAT = {"model": "cirrus-local", "messages": [{"role": "user", "content": "Hi"}]}


def _first_chat(url: str) -> None:
    headers = {"Authorization": f"Bearer {DEV_MASTER_KEY}"}
    response = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=headers, timeout=60)
    response.raise_for_status()


def one_run() -> tuple[float, float, float]:
    host = Ports.defaults().host
    with tempfile.TemporaryDirectory() as workdir:
        started = time.monotonic()
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "dev", f"STACK_ARGS=--workdir {workdir}"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        live = ready = chat = None
        try:
            while ready is None and time.monotonic() - started < 180:
                if live is None and http_ok(f"http://127.0.0.1:{host}/health"):
                    live = time.monotonic() - started
                if live is not None and http_ok(f"http://127.0.0.1:{host}/health/ready"):
                    ready = time.monotonic() - started
                time.sleep(0.02)
            if ready is not None:
                _first_chat(f"http://127.0.0.1:{host}")
                chat = time.monotonic() - started
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(60)
        if live is None or ready is None or chat is None:
            raise RuntimeError("the stack did not become ready within 180 s")
        return live, ready, chat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ports = Ports.defaults()
    busy = [p for p in (ports.blob, ports.queue, ports.cosmos, ports.provider, ports.host) if port_open(p)]
    if busy:
        raise SystemExit(f"ports {busy} are in use: stop the running stack first")
    runs = [one_run() for _ in range(args.repeats)]
    live = statistics.median(r[0] for r in runs)
    ready = statistics.median(r[1] for r in runs)
    chat = statistics.median(r[2] for r in runs)
    print(
        f"cold start over {args.repeats} runs (median), {sys.version.split()[0]}: "
        f"launch→/health {live:.2f}s (baseline), launch→/health/ready {ready:.2f}s, "
        f"launch→first chat {chat:.2f}s; ready/live {ready / live:.2f}x"
    )
    print("runs (live, ready, chat):", ", ".join(f"({a:.2f}s, {b:.2f}s, {c:.2f}s)" for a, b, c in runs))


if __name__ == "__main__":
    main()
