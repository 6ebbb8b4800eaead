"""Cold start of the local stack: `make dev` launch → first 200 on /health and on /health/ready.

    python -m bench.cold_start [--repeats 3]

Each run uses a fresh data directory. /health answers as soon as the host serves (the baseline);
/health/ready also needs Cosmos, Blob, Queue and the model router (which imports LiteLLM only when
the model file has a deployment that needs it; the local one does not).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import tempfile
import time

from tools.stack import ROOT, Ports, http_ok, port_open


def one_run() -> tuple[float, float]:
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
        live = ready = None
        try:
            while ready is None and time.monotonic() - started < 180:
                if live is None and http_ok(f"http://127.0.0.1:{host}/health"):
                    live = time.monotonic() - started
                if live is not None and http_ok(f"http://127.0.0.1:{host}/health/ready"):
                    ready = time.monotonic() - started
                time.sleep(0.02)
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(60)
        if live is None or ready is None:
            raise RuntimeError("the stack did not become ready within 180 s")
        return live, ready


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
    print(
        f"cold start over {args.repeats} runs (median): launch→/health {live:.2f}s (baseline), "
        f"launch→/health/ready {ready:.2f}s, ready/live {ready / live:.2f}x"
    )
    print("runs (live, ready):", ", ".join(f"({a:.2f}s, {b:.2f}s)" for a, b in runs))


if __name__ == "__main__":
    main()
