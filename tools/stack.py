"""The local stack: Azurite, the Cosmos DB server, the fake provider, a local Entra ID issuer and
the local Functions host.

`python -m tools.stack` (what `make dev` runs) starts all five on their usual ports and stays in
the foreground until Ctrl-C. Tests use the same classes on free ports. Every server binds to
127.0.0.1. This module only starts processes and hands out their addresses; it holds no Cirrus
logic (the app provisions its own databases, containers and queues on start in local mode).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tools.oidc_issuer import LOCAL_AUDIENCE, issuer_url

ROOT = Path(__file__).resolve().parent.parent
NODE_BIN = ROOT / "node_modules" / ".bin"
LOOPBACK = "127.0.0.1"

# Azurite's and the Cosmos emulator's published development credentials: not secrets.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
COSMOS_EMULATOR_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)
DEV_MASTER_KEY = "sk-cirrus-dev-master-key"


class StackError(RuntimeError):
    """A process of the local stack did not start or answer."""


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.2):
        return True
    return False


def http_ok(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=1.0).status_code == 200
    return False


@dataclass
class ManagedProcess:
    """One child process in its own process group, stopped with SIGTERM then SIGKILL."""

    name: str
    argv: list[str]
    ready: Callable[[], bool]
    env: Mapping[str, str] | None = None
    log_path: Path | None = None
    startup_timeout: float = 60.0
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ManagedProcess:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out: int | object = self.log_path.open("ab")
        else:
            out = None  # inherit the terminal: `make dev` shows these logs live
        self.proc = subprocess.Popen(  # noqa: S603 - argv is ours, never user input
            self.argv,
            cwd=ROOT,
            env=dict(self.env) if self.env is not None else None,
            stdout=out,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT if out is not None else None,
            start_new_session=True,
        )
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise StackError(f"{self.name} exited with {self.proc.returncode}{self._log_tail()}")
            if self.ready():
                return
            time.sleep(0.05)
        raise StackError(f"{self.name} not ready after {self.startup_timeout:.0f}s{self._log_tail()}")

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def _log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n--- last lines of " + str(self.log_path) + " ---\n" + "\n".join(tail)


def _node_tool(name: str) -> str:
    path = NODE_BIN / name
    if not path.exists():
        raise StackError(f"{path} is missing: run `make setup` (npm ci) first")
    return str(path)


@dataclass(frozen=True)
class Ports:
    blob: int
    queue: int
    table: int
    cosmos: int
    provider: int
    host: int
    issuer: int  # the local Entra ID issuer (tools/oidc_issuer.py)

    @classmethod
    def defaults(cls) -> Ports:
        """The ports Azurite, the Cosmos emulator and Core Tools use by default."""
        return cls(blob=10000, queue=10001, table=10002, cosmos=8081, provider=4010, host=7071, issuer=4011)

    @classmethod
    def free(cls) -> Ports:
        return cls(*(free_port() for _ in range(7)))


@dataclass
class Emulators:
    """Azurite (Blob, Queue) and the Cosmos DB server: the Azure side of the local stack."""

    ports: Ports
    workdir: Path
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def storage_connection_string(self) -> str:
        base = f"http://{LOOPBACK}"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={base}:{self.ports.blob}/{AZURITE_ACCOUNT};"
            f"QueueEndpoint={base}:{self.ports.queue}/{AZURITE_ACCOUNT};"
            f"TableEndpoint={base}:{self.ports.table}/{AZURITE_ACCOUNT};"
        )

    @property
    def cosmos_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.cosmos}"

    def env(self) -> dict[str, str]:
        """App settings that point Cirrus at these emulators."""
        return {
            "AzureWebJobsStorage": self.storage_connection_string,
            "COSMOS_ENDPOINT": self.cosmos_endpoint,
            "COSMOS_KEY": COSMOS_EMULATOR_KEY,
        }

    def start(self) -> Emulators:
        p = self.ports
        azurite = ManagedProcess(
            "azurite",
            [
                _node_tool("azurite"),
                "--silent",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--location",
                str(self.workdir / "azurite"),
                "--blobHost",
                LOOPBACK,
                "--blobPort",
                str(p.blob),
                "--queueHost",
                LOOPBACK,
                "--queuePort",
                str(p.queue),
                "--tableHost",
                LOOPBACK,
                "--tablePort",
                str(p.table),
            ],
            ready=lambda: port_open(p.blob) and port_open(p.queue),
            log_path=self.workdir / "logs" / "azurite.log",
        )
        cosmos = ManagedProcess(
            "cosmosdb-server",
            [_node_tool("cosmosdb-server"), "--host", LOOPBACK, "-p", str(p.cosmos), "--no-ssl"],
            ready=lambda: port_open(p.cosmos),
            log_path=self.workdir / "logs" / "cosmosdb-server.log",
        )
        self.processes = [azurite.start(), cosmos.start()]
        try:
            for proc in self.processes:
                proc.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()


def fake_provider(port: int, workdir: Path | None, *extra: str) -> ManagedProcess:
    """The fake OpenAI-compatible upstream on `port`."""
    return ManagedProcess(
        "fake-provider",
        [sys.executable, "-m", "tools.fake_provider", "--host", LOOPBACK, "--port", str(port), *extra],
        ready=lambda: http_ok(f"http://{LOOPBACK}:{port}/_control/health"),
        log_path=workdir / "logs" / "fake-provider.log" if workdir else None,
    )


def local_issuer(port: int, state_dir: Path, log_path: Path | None) -> ManagedProcess:
    """The local Entra ID issuer on `port`, its keys and address kept in `state_dir` (mint tokens
    with `python -m tools.oidc_issuer token --state <state_dir>` or `oidc_issuer.mint_from_state`)."""
    return ManagedProcess(
        "oidc-issuer",
        [sys.executable, "-m", "tools.oidc_issuer", "serve", "--port", str(port), "--state", str(state_dir)],
        ready=lambda: http_ok(f"{issuer_url(port)}/.well-known/openid-configuration"),
        log_path=log_path,
    )


def local_host(
    port: int,
    env: Mapping[str, str],
    log_path: Path | None,
    *,
    cors: Sequence[str] | None = None,
    cors_credentials: bool | None = None,
) -> ManagedProcess:
    """The local Functions host serving `function_app` on `port`. `cors` (origins) and
    `cors_credentials` are `func start`'s options; None leaves them to local.settings.json's Host
    section, as `func start` does."""
    options = [] if cors is None else ["--cors", ",".join(cors)]
    if cors_credentials is not None:
        options.append("--cors-credentials" if cors_credentials else "--no-cors-credentials")
    return ManagedProcess(
        "funchost",
        [sys.executable, "-m", "tools.funchost", "--host", LOOPBACK, "--port", str(port), *options],
        env=env,
        ready=lambda: http_ok(f"http://{LOOPBACK}:{port}/health"),
        log_path=log_path,
        startup_timeout=90.0,
    )


def app_env(
    emulators: Emulators, provider_port: int, *, entra_issuer: str | None = None, **overrides: str
) -> dict[str, str]:
    """The environment the local host runs `function_app` with: local mode on these emulators.

    Defaults come from local.settings.sample.json (what `func start` users copy), then the
    caller's environment, then the addresses of the processes started here. With `entra_issuer`
    (the local issuer's URL) Cirrus trusts that issuer's tokens for LOCAL_AUDIENCE, unless the
    caller's environment names issuers or an audience of its own.
    """
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    env = {**{k: v for k, v in sample.items() if v}, **os.environ}
    env.update(emulators.env())
    env.update(
        {
            "CIRRUS_ENV": "local",
            "CIRRUS_LOCAL_PROVIDER_URL": f"http://{LOOPBACK}:{provider_port}/v1",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
    )
    if entra_issuer is not None:
        for name, value in (
            ("CIRRUS_ENTRA_ISSUERS", entra_issuer),
            ("CIRRUS_ENTRA_AUDIENCE", LOCAL_AUDIENCE),
        ):
            if name not in os.environ:
                env[name] = value
    env.update(overrides)
    return env


@contextlib.contextmanager
def running_stack(
    ports: Ports,
    workdir: Path,
    *,
    quiet: bool = True,
    provider_args: Sequence[str] = (),
    cors: Sequence[str] | None = None,
    cors_credentials: bool | None = None,
    **overrides: str,
) -> Iterator[tuple[Emulators, dict[str, str]]]:
    """Start the whole local stack; yield the emulators and the app's environment. The local Entra
    issuer keeps its keys in `workdir/oidc-issuer`."""
    emulators = Emulators(ports, workdir).start()
    provider = issuer = host = None
    try:
        provider = fake_provider(ports.provider, workdir if quiet else None, *provider_args).start()
        issuer = local_issuer(
            ports.issuer, workdir / "oidc-issuer", workdir / "logs" / "oidc-issuer.log" if quiet else None
        ).start()
        provider.wait_ready()
        issuer.wait_ready()
        env = app_env(emulators, ports.provider, entra_issuer=issuer_url(ports.issuer), **overrides)
        host = local_host(
            ports.host,
            env,
            workdir / "logs" / "funchost.log" if quiet else None,
            cors=cors,
            cors_credentials=cors_credentials,
        )
        host.start().wait_ready()
        yield emulators, env
    finally:
        for proc in (host, issuer, provider):
            if proc is not None:
                proc.stop()
        emulators.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / ".cirrus", help="data and logs")
    parser.add_argument("--free-ports", action="store_true", help="pick free ports, not defaults")
    # Passed to the local host as `func start` takes them; unset, local.settings.json's Host decides.
    parser.add_argument("--cors", help="origins browser apps may call from, comma-separated, no spaces")
    parser.add_argument("--cors-credentials", action=argparse.BooleanOptionalAction)
    args = parser.parse_args(argv)

    ports = Ports.free() if args.free_ports else Ports.defaults()
    busy = [
        p
        for p in (ports.blob, ports.queue, ports.cosmos, ports.provider, ports.host, ports.issuer)
        if port_open(p)
    ]
    if busy:
        print(f"ports already in use: {busy} (another stack running? try --free-ports)", file=sys.stderr)
        return 1
    stop = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    started = time.monotonic()
    cors = None if args.cors is None else args.cors.split(",")
    with running_stack(ports, args.workdir, quiet=False, cors=cors, cors_credentials=args.cors_credentials):
        base = f"http://{LOOPBACK}:{ports.host}"
        # Only the documented dev key is ever printed; a key the user set stays unprinted.
        key = "$CIRRUS_MASTER_KEY" if "CIRRUS_MASTER_KEY" in os.environ else DEV_MASTER_KEY
        print(
            f"\nCirrus is up in {time.monotonic() - started:.1f}s at {base}/v1 (Ctrl-C stops)\n"
            f"  curl {base}/v1/chat/completions -H 'Authorization: Bearer {key}' \\\n"
            f"    -H 'Content-Type: application/json' \\\n"
            f'    -d \'{{"model": "cirrus-local", "messages": [{{"role": "user", "content": "Hi"}}]}}\'\n'
            f"  Entra ID token of the local issuer ({issuer_url(ports.issuer)}), an admin's\n"
            "  (a Cirrus.User token needs a policy first: README, Identity):\n"
            f"  TOKEN=$(python -m tools.oidc_issuer token --state {args.workdir / 'oidc-issuer'}"
            " --role Cirrus.Admin)\n",
            flush=True,
        )
        while not stop:
            time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
