"""What virtual keys and Entra ID tokens cost per request, against the master key in the same run.

    python -m bench.keys [--requests-c1 300] [--requests-c32 1000] [--repeats 3] [--json PATH]

Starts the local stack like `bench.gateway`, creates two keys through `POST /v1/keys`, then per
repeat loads the gateway with the master key (the baseline: no key lookup, no limits) and right
after with the virtual key. Two virtual keys are measured:

- `plain`: no limits. Costs one Cosmos point read per request (the key, never cached, so a
  revocation holds at once on every instance).
- `limited`: rpm, tpm, parallel cap and a budget, all far above the load. Adds the admission
  and the settlement: two ETag-guarded writes of the key's state item per request, the second
  before the response ends. At concurrency 32 every request of the key writes the same item,
  so this also shows what contention on one hot key costs.
- `entra`: an Entra ID access token (from the stack's local issuer) with the `Cirrus.User` role
  and an unlimited policy assigned to its object id. Costs the RS256 signature check and the
  claims (the issuer's keys and the policies are cached in the worker): no Cosmos read.

Figures are medians over repeats of p50/p99 latency and requests per second; "added" is
virtual − master per repeat. Reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.gateway import Scenario, Target, _measure, _table, _wait_ready, _warm_up
from tools.oidc_issuer import mint_from_state
from tools.stack import DEV_MASTER_KEY, LOOPBACK, Ports, running_stack

LIMITS = {
    "rpm_limit": 1_000_000,
    "tpm_limit": 1_000_000_000,
    "max_parallel_requests": 1_000,
    "max_budget": 1_000_000.0,
    "budget_duration": "1d",
}


def _new_key(base: str, **fields: Any) -> str:
    response = httpx.post(
        f"{base}/v1/keys", json=fields, headers={"Authorization": f"Bearer {DEV_MASTER_KEY}"}, timeout=30
    )
    response.raise_for_status()
    return str(response.json()["key"])


def _entra_token(base: str, workdir: Path) -> str:
    """A Cirrus.User token of the stack's issuer, for an identity with an unlimited policy."""
    object_id = str(uuid.uuid4())
    response = httpx.post(
        f"{base}/v1/policies",
        json={"name": "bench", "object_ids": [object_id]},
        headers={"Authorization": f"Bearer {DEV_MASTER_KEY}"},
        timeout=30,
    )
    response.raise_for_status()
    return mint_from_state(workdir / "oidc-issuer", roles=["Cirrus.User"], oid=object_id, ttl_s=24 * 3600)


def run(args: argparse.Namespace) -> dict[str, Any]:
    ports = Ports.free()
    provider_args = ("--latency-ms", "0", "--chunk-delay-ms", "0", "--tokens-per-chunk", "1")
    base = f"http://{LOOPBACK}:{ports.host}"
    url = f"{base}/v1/chat/completions"
    report: dict[str, Any] = {"keys": {}}
    with tempfile.TemporaryDirectory() as tmp, running_stack(ports, Path(tmp), provider_args=provider_args):
        _wait_ready(f"{base}/health/ready")
        keys = {
            "plain": _new_key(base),
            "limited": _new_key(base, **LIMITS),
            "entra": _entra_token(base, Path(tmp)),
        }
        started = time.monotonic()
        for name, key in keys.items():
            master = Target("master", url, "cirrus-local", {"Authorization": f"Bearer {DEV_MASTER_KEY}"})
            virtual = Target(name, url, "cirrus-local", {"Authorization": f"Bearer {key}"})
            targets = (master, virtual)
            for target in targets:
                target.headers["Content-Type"] = "application/json"
            scenarios = [
                Scenario("c1", f"{name} c=1", 1, args.requests_c1, stream=False),
                Scenario("c32", f"{name} c=32", 32, args.requests_c32, stream=False),
            ]

            async def go(
                targets: tuple[Target, Target] = targets, scenarios: list[Scenario] = scenarios
            ) -> Any:
                await _warm_up(targets, "aiohttp")
                return await _measure(targets, scenarios, args.repeats, "aiohttp")

            report["keys"][name] = asyncio.run(go())
        report["seconds"] = round(time.monotonic() - started, 1)
    return report


async def _go(targets: tuple[Target, Target], scenarios: list[Scenario], repeats: int) -> dict[str, Any]:
    await _warm_up(targets, "aiohttp")
    return await _measure(targets, scenarios, repeats, "aiohttp")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests-c1", type=int, default=300)
    parser.add_argument("--requests-c32", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, metavar="PATH")
    args = parser.parse_args(argv)
    report = run(args)
    for name, result in report["keys"].items():
        print(f"\n{name} caller (baseline columns: the master key)")
        print(_table(result))
        if result["errors"]:
            print(f"errors: {len(result['errors'])}, first: {result['errors'][0]}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
