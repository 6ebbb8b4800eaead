"""Peer benchmark: Cirrus against LiteLLM's own proxy, same fake provider, same run.

    python -m bench.peer [--repeats 3] [--quick] [--profile DIR] [--json PATH]

Starts the local stack on free ports (fake provider with zero latency and no chunk delay, a fixed
32-word reply sent one word per chunk) and LiteLLM's proxy (`litellm --num_workers 1` from
.venv-litellm-proxy, no database, otherwise its defaults) with the same model name pointing at the
same fake. Then, per scenario and repeat, the same load goes to the fake directly (the baseline),
to Cirrus and to the proxy, the two servers' order alternating per repeat: JSON chat requests/s at
concurrency 1, 16 and 64, added p50/p99 latency at concurrency 1 (server − direct, per repeat),
streams/s at 8 and 32 concurrent streams (each read to its end and checked for all 32 chunks),
time to first token at concurrency 1, and each server's CPU (its whole process tree, from
/proc/<pid>/stat) per JSON request, per stream and per streamed chunk. Cold start: a fresh server
process (emulators and fake already up) until its first chat completion answers 200. Every figure
is the median over repeats; the targets are reported, never asserted. `--profile DIR` samples each
server with py-spy under a c=16 JSON load (DIR gets py-spy's raw stacks and the same samples as a
speedscope file) and prints where its time goes.

The load client (aiohttp, this process), both servers, the fake provider and the emulators share
the machine's CPUs, so absolute figures depend on the machine; the ratios are the point. The CPU
that other processes on the machine use during the timed runs is reported, as is a change to
Cirrus's code while the run was going. Exits 1 when requests failed (missed targets never fail
it), 2 when a server did not start, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.gateway import AiohttpClient, Request, Run, Target, _BadStatus, _has_content, _load, _wait_ready
from tools.stack import (
    DEV_MASTER_KEY,
    LOOPBACK,
    ROOT,
    Emulators,
    ManagedProcess,
    Ports,
    StackError,
    app_env,
    free_port,
    http_ok,
    local_host,
    running_stack,
)

PROXY_VENV = ROOT / ".venv-litellm-proxy"
PROXY_BIN = PROXY_VENV / "bin" / "litellm"
PY_SPY = PROXY_VENV / "bin" / "py-spy"
PROXY_MASTER_KEY = "sk-peer-bench-master-key"  # the proxy's own admin key, local only
MODEL = "cirrus-local"
PROVIDER_MODEL = "gpt-4o-mini"
CHUNKS = 32  # content chunks per stream: one word each
REPLY = " ".join(f"word{i:02d}" for i in range(1, CHUNKS + 1))  # no commas: it goes in a profile spec
WARMUP_JSON, WARMUP_STREAMS = 50, 20
SETTLE_S = 0.3  # after a timed run, before reading CPU: work a server does after answering counts too
COLD_TIMEOUT_S = 120.0
SERVERS = ("cirrus", "proxy")
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    kind: str  # "json": latency per request; "stream": time per whole stream; "ttft": time to first token
    concurrency: int
    requests: int


def scenarios(quick: bool) -> list[Scenario]:
    n = (40, 200, 200, 40, 64, 20) if quick else (300, 1500, 1500, 300, 300, 150)
    return [
        Scenario("json_c1", "JSON c=1", "json", 1, n[0]),
        Scenario("json_c16", "JSON c=16", "json", 16, n[1]),
        Scenario("json_c64", "JSON c=64", "json", 64, n[2]),
        Scenario("stream_c8", "streams c=8", "stream", 8, n[3]),
        Scenario("stream_c32", "streams c=32", "stream", 32, n[4]),
        Scenario("ttft_c1", "stream TTFT c=1", "ttft", 1, n[5]),
    ]


# --- processes and their CPU -------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on, or None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    return parents


def process_tree(root: int, parents: dict[int, int] | None = None) -> list[int]:
    """`root` and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for pid, ppid in (parents if parents is not None else _parents()).items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def cpu_seconds(pid: int) -> float:
    """utime+stime of a process (all threads) plus that of its reaped children."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / TICK


def tree_cpu(root: int, parents: dict[int, int] | None = None) -> float:
    """CPU seconds of `root`'s whole process tree: a child that exits moves into its parent's cutime."""
    return sum(cpu_seconds(pid) for pid in process_tree(root, parents))


def machine_busy() -> float:
    """CPU seconds all CPUs spent busy since boot (user, nice, system, irq, softirq, steal)."""
    cols = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(cols[:3]) + sum(cols[5:8])) / TICK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _threads(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def _listener(port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds the socket listening on 127.0.0.1:`port`."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[3] == "0A" and int(cols[1].split(":")[1], 16) == port:  # 0A: LISTEN
            inodes.add(f"socket:[{cols[9]}]")
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return pid
    return None


def _native_libs(pid: int) -> list[str]:
    """Which of uvloop, httptools, orjson the process has loaded (from its memory map)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    return [name for name in ("uvloop", "httptools", "orjson") if f"/{name}/" in maps]


def _child_of_mine(marker: str) -> int:
    """The pid of the child of this process whose command line contains `marker`."""
    me = os.getpid()
    for pid, ppid in _parents().items():
        if ppid == me and marker in _cmdline(pid):
            return pid
    raise StackError(f"no child process matching {marker!r}")


class CpuMeter:
    """CPU seconds used by each named process tree (and by this client process) between snapshots.
    `parts` are single processes inside those trees, reported apart as well (not counted twice)."""

    def __init__(self, roots: dict[str, list[int]], parts: dict[str, int] | None = None) -> None:
        self.roots = roots
        self.parts = parts or {}

    def snapshot(self) -> dict[str, float]:
        parents = _parents()
        shot = {name: sum(tree_cpu(pid, parents) for pid in pids) for name, pids in self.roots.items()}
        times = os.times()
        shot["client"] = times.user + times.system
        shot["others"] = machine_busy() - sum(shot.values())  # every other process on the machine
        shot.update({name: cpu_seconds(pid) for name, pid in self.parts.items()})
        return shot

    @staticmethod
    def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {k: round(after[k] - before[k], 3) for k in before}


# --- load --------------------------------------------------------------------------------------


class LoadClient(AiohttpClient):
    """bench.gateway's aiohttp client plus a stream read to its end with its chunks counted."""

    async def stream(self, target: Target, body: bytes, counts: list[tuple[int, int]]) -> tuple[float, float]:
        """(time to first content, time to the end); appends (data: events, content chunks)."""
        started = time.perf_counter()
        first: float | None = None
        events = content = 0
        done = False
        async with self._session.post(target.url, data=body, headers=target.headers) as response:
            if response.status != 200:
                raise _BadStatus(response.status, (await response.read())[:200].decode(errors="replace"))
            async for raw in response.content:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                events += 1
                data = line[5:].strip()
                done = done or data == "[DONE]"
                if _has_content(data):
                    content += 1
                    if first is None:
                        first = time.perf_counter() - started
        total = time.perf_counter() - started
        if first is None or content != CHUNKS or not done:
            raise RuntimeError(
                f"stream had {content} content chunks of {CHUNKS}, [DONE] {'seen' if done else 'missing'}"
            )
        counts.append((events, content))
        return first, total


def _send(client: LoadClient, target: Target, kind: str, counts: list[tuple[int, int]]) -> Request:
    if kind == "json":
        body = target.body(stream=False)
        return lambda: client.plain(target, body)
    body = target.body(stream=True)
    index = 0 if kind == "ttft" else 1

    async def one_stream() -> float:
        return (await client.stream(target, body, counts))[index]

    return one_stream


async def _load_for(send: Request, seconds: float, concurrency: int) -> Run:
    """Like bench.gateway's _load, but for a time instead of a number of requests."""
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            try:
                latencies.append(await send())
            except Exception as exc:  # counted and reported
                errors.append(f"{type(exc).__name__}: {exc}"[:300])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Run(latencies, time.perf_counter() - started, errors)


@dataclass
class Bench:
    """Everything a run needs and collects; `current` names the server being exercised."""

    targets: dict[str, Target]
    meter: CpuMeter
    logs: dict[str, Path]
    current: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _warm_up(bench: Bench) -> dict[str, Any]:
    """Untimed requests of both kinds to every target; returns the CPU each process used meanwhile."""
    per_pid_before = {pid: cpu_seconds(pid) for pids in bench.meter.roots.values() for pid in pids}
    seen: dict[str, Any] = {}
    for name, target in bench.targets.items():
        bench.current = name
        client = LoadClient(1)
        counts: list[tuple[int, int]] = []
        try:
            for kind, n in (("json", WARMUP_JSON), ("stream", WARMUP_STREAMS)):
                run = await _load(_send(client, target, kind, counts), n, 1)
                if run.errors:
                    raise RuntimeError(f"warm-up against {name} failed: {run.errors[0]}")
        finally:
            await client.aclose()
        seen[name] = {
            "data_events": sorted({c[0] for c in counts}),
            "content_chunks": sorted({c[1] for c in counts}),
        }
    bench.current = None
    used = {pid: round(cpu_seconds(pid) - before, 3) for pid, before in per_pid_before.items()}
    return {"stream_shape": seen, "warmup_cpu_s_by_pid": used}


async def _measure(bench: Bench, scenario_list: list[Scenario], repeats: int) -> None:
    for sc in scenario_list:
        clients = {name: LoadClient(sc.concurrency) for name in bench.targets}
        try:
            for repeat in range(repeats):
                servers = SERVERS if repeat % 2 == 0 else SERVERS[::-1]
                for name in ("direct", *servers):
                    bench.current = name
                    counts: list[tuple[int, int]] = []
                    send = _send(clients[name], bench.targets[name], sc.kind, counts)
                    # Untimed: open (or reopen) the pool's connections; let any deferred work finish.
                    await _load(send, 2 * sc.concurrency, sc.concurrency)
                    await asyncio.sleep(SETTLE_S)
                    before = bench.meter.snapshot()
                    run = await _load(send, sc.requests, sc.concurrency)
                    await asyncio.sleep(SETTLE_S)
                    cpu = CpuMeter.delta(before, bench.meter.snapshot())
                    bench.errors += [f"{sc.key} {name}: {e}" for e in run.errors]
                    bench.runs.append(
                        {
                            "scenario": sc.key,
                            "target": name,
                            "repeat": repeat,
                            "ok": len(run.latencies),
                            "errors": len(run.errors),
                            "wall_s": round(run.wall, 4),
                            "rps": round(run.rps, 2),
                            "p50_ms": round(run.p50_ms, 3),
                            "p99_ms": round(run.p99_ms, 3),
                            "cpu_s": cpu,
                            "data_events": sorted({c[0] for c in counts}),
                        }
                    )
        finally:
            bench.current = None
            for client in clients.values():
                await client.aclose()
        print(f"  done: {sc.label}", file=sys.stderr, flush=True)


# --- cold start --------------------------------------------------------------------------------


def _first_answer(proc: ManagedProcess, target: Target) -> float:
    """Seconds from starting `proc` to its first 200 on a chat completion, polling; stops it after."""
    body = target.body(stream=False)
    started = time.monotonic()
    proc.start()
    try:
        with httpx.Client(timeout=60.0) as client:
            while True:
                if proc.proc is not None and proc.proc.poll() is not None:
                    raise StackError(f"{proc.name} exited with {proc.proc.returncode}{proc._log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.post(target.url, content=body, headers=target.headers).status_code == 200:
                        return time.monotonic() - started
                if time.monotonic() - started > COLD_TIMEOUT_S:
                    raise StackError(f"{proc.name}: no answer after {COLD_TIMEOUT_S:.0f}s{proc._log_tail()}")
                time.sleep(0.02)
    finally:
        proc.stop()


def _cold_starts(
    repeats: int,
    emulators: Emulators,
    ports: Ports,
    model_file: Path,
    proxy_config: Path,
    workdir: Path,
    errors: list[str],
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"cirrus": [], "proxy": []}
    for i in range(repeats):
        for name in SERVERS if i % 2 == 0 else SERVERS[::-1]:
            port = free_port()
            if name == "cirrus":
                env = app_env(emulators, ports.provider, CIRRUS_MODEL_CONFIG=str(model_file))
                proc = local_host(port, env, workdir / "logs" / f"cold-funchost-{i}.log")
            else:
                proc = _proxy_process(proxy_config, port, workdir / "logs" / f"cold-litellm-proxy-{i}.log")
            try:
                out[name].append(round(_first_answer(proc, _server_target(name, port)), 3))
            except StackError as exc:  # counted as a failed request; the rest of the report stands
                print(str(exc), file=sys.stderr)
                errors.append(f"cold_start {name}: {str(exc).splitlines()[0]}")
    return out


# --- servers and targets -----------------------------------------------------------------------


def _model_list(provider_port: int) -> list[dict[str, Any]]:
    return [
        {
            "model_name": MODEL,
            "litellm_params": {
                "model": f"openai/{PROVIDER_MODEL}",
                "api_base": f"http://{LOOPBACK}:{provider_port}/v1",
                "api_key": "fake",
            },
        }
    ]


def _write_configs(workdir: Path, provider_port: int) -> tuple[Path, Path]:
    """Cirrus's model file and the proxy's config: same model, same fake, same router settings."""
    router = {"num_retries": 0, "timeout": 60}
    cirrus = workdir / "cirrus-models.yaml"
    cirrus.write_text(yaml.safe_dump({"model_list": _model_list(provider_port), "router_settings": router}))
    proxy = workdir / "litellm-proxy.yaml"
    proxy.write_text(
        yaml.safe_dump(
            {
                "model_list": _model_list(provider_port),
                "router_settings": router,
                "general_settings": {"master_key": PROXY_MASTER_KEY},
            }
        )
    )
    return cirrus, proxy


def _proxy_env() -> dict[str, str]:
    """The caller's environment without LiteLLM, database or Redis settings, plus quiet offline flags."""
    dropped = ("LITELLM_", "DATABASE_URL", "DIRECT_URL", "REDIS_", "STORE_MODEL_IN_DB")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # else it downloads the price list at import
            "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",  # a banner in the log, nothing else
            "LITELLM_MASTER_KEY": PROXY_MASTER_KEY,
        }
    )
    return env


def _proxy_process(config: Path, port: int, log_path: Path) -> ManagedProcess:
    argv = [str(PROXY_BIN), "--config", str(config), "--host", LOOPBACK, "--port", str(port)]
    # --telemetry False: the flag is a no-op in this version (nothing reads it), passed all the same
    argv += ["--num_workers", "1", "--telemetry", "False"]
    return ManagedProcess(
        "litellm-proxy",
        argv,
        ready=lambda: http_ok(f"http://{LOOPBACK}:{port}/health/readiness"),
        env=_proxy_env(),
        log_path=log_path,
        startup_timeout=COLD_TIMEOUT_S,
    )


def _server_target(name: str, port: int) -> Target:
    key = DEV_MASTER_KEY if name == "cirrus" else PROXY_MASTER_KEY
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return Target(name, f"http://{LOOPBACK}:{port}/v1/chat/completions", MODEL, headers)


def _describe(name: str, root: int, port: int | None) -> dict[str, Any]:
    pids = process_tree(root)
    return {
        "name": name,
        "root_pid": root,
        "processes": [
            {
                "pid": pid,
                "threads": _threads(pid),
                "cmdline": _cmdline(pid)[:200],
                "native": _native_libs(pid),
            }
            for pid in pids
        ],
        "listener_pid": _listener(port, pids) if port is not None else None,
    }


def code_fingerprint() -> str:
    """A hash of the code Cirrus's host runs: a change mid-run means processes ran different code."""
    digest = hashlib.sha256()
    for rel in ("function_app.py", "host.json", "shared", "tools/funchost"):
        path = ROOT / rel
        for file in sorted(path.rglob("*.py*") if path.is_dir() else [path]):
            if file.is_file() and "__pycache__" not in file.parts:
                digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:12]


def _log_stats(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    lines = path.read_text(errors="replace").splitlines()
    return {"bytes": path.stat().st_size, "lines": len(lines), "last": [line[:300] for line in lines[-3:]]}


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _print_tail(name: str, path: Path) -> None:
    print(f"--- last lines of {name}'s log ({path.name}) ---\n{_tail(path)}", file=sys.stderr)


# --- profile -----------------------------------------------------------------------------------

PROFILE_GROUPS: dict[str, tuple[str, ...]] = {
    "litellm": ("/litellm/", "/litellm_enterprise/"),
    "HTTP serving (uvicorn, starlette, fastapi, h11, httptools, uvloop, asyncio)": (
        "/uvicorn/",
        "/starlette/",
        "/fastapi/",
        "/h11/",
        "/httptools/",
        "/uvloop/",
        "/asyncio/",
    ),
    "logging": ("/logging/",),
    "pydantic": ("/pydantic/", "/pydantic_core/"),
    "opentelemetry": ("/opentelemetry/",),
    "aiohttp": ("/aiohttp/",),
    "httpx/httpcore": ("/httpx/", "/httpcore/", "/httpx2/", "/httpcore2/"),
    "openai SDK (also in litellm's calls)": ("/openai/",),
    "Cirrus shared/": (f"{ROOT}/shared/",),
    "Cirrus local host (tools/funchost)": (f"{ROOT}/tools/funchost/",),
}
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# Both servers' venvs are built with this interpreter's version (the Makefile's PYTHON_VERSION).
_STDLIB = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/"


def _parse_raw(path: Path) -> list[tuple[list[tuple[str, str, int]], int]]:
    """py-spy's raw (collapsed) stacks: [(frames root→leaf as (function, file, line)), count]."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            if frame.startswith("process "):  # --subprocesses labels each stack with its process
                continue
            m = _FRAME.match(frame)
            frames.append((m["func"], m["file"], int(m["line"] or 0)) if m else (frame, "", 0))
        stacks.append((frames, int(count)))
    return stacks


def _short(file: str) -> str:
    for marker in ("site-packages/", _STDLIB):
        if marker in file:
            return file.split(marker, 1)[1]
    return file.removeprefix(f"{ROOT}/")


def _in_group(file: str, needles: tuple[str, ...]) -> bool:
    return any(n in file for n in needles) or (needles[0] == f"{ROOT}/shared/" and file.startswith("shared/"))


def _idle_wait(frames: list[tuple[str, str, int]]) -> bool:
    """A pool thread blocked on its work queue: py-spy counts some of these as active."""
    return (
        bool(frames) and frames[-1][0] == "_worker" and frames[-1][1].endswith("concurrent/futures/thread.py")
    )


def summarise_profile(path: Path) -> dict[str, Any]:
    """Shares of the busy samples (idle pool threads left out) by library, and the hottest leaves."""
    stacks = _parse_raw(path)
    idle = sum(count for frames, count in stacks if _idle_wait(frames))
    stacks = [(frames, count) for frames, count in stacks if not _idle_wait(frames)]
    total = sum(count for _, count in stacks)
    groups = {
        name: sum(count for frames, count in stacks if any(_in_group(f[1], needles) for f in frames))
        for name, needles in PROFILE_GROUPS.items()
    }
    own = {  # self time: the innermost frame is in the group
        name: sum(count for frames, count in stacks if frames and _in_group(frames[-1][1], needles))
        for name, needles in PROFILE_GROUPS.items()
    }
    leaves: Counter[str] = Counter()
    for frames, count in stacks:
        if frames:
            func, file, _ = frames[-1]
            leaves[f"{func} ({_short(file)})"] += count
    return {
        "samples": total,
        "idle_pool_samples_left_out": idle,
        "groups_pct": {k: round(100 * v / total, 1) if total else 0.0 for k, v in groups.items()},
        "groups_self_pct": {k: round(100 * v / total, 1) if total else 0.0 for k, v in own.items()},
        "top_innermost": [(f, round(100 * n / total, 1)) for f, n in leaves.most_common(15)],
    }


def _speedscope(path: Path, name: str) -> dict[str, Any]:
    """The same samples as a speedscope file (https://www.speedscope.app), one sampled profile."""
    frames: list[dict[str, Any]] = []
    index: dict[tuple[str, str, int], int] = {}
    samples, weights = [], []
    for stack, count in _parse_raw(path):
        ids = []
        for frame in stack:
            if frame not in index:
                index[frame] = len(frames)
                frames.append({"name": frame[0], "file": frame[1], "line": frame[2]})
            ids.append(index[frame])
        samples.append(ids)
        weights.append(count)
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "name": name,
        "exporter": "bench.peer",
        "shared": {"frames": frames},
        "profiles": [
            {
                "type": "sampled",
                "name": name,
                "unit": "none",
                "startValue": 0,
                "endValue": sum(weights),
                "samples": samples,
                "weights": weights,
            }
        ],
    }


def _profile_result(name: str, raw: Path, outdir: Path, rps: float) -> dict[str, Any]:
    speedscope = outdir / f"{name}.speedscope.json"
    speedscope.write_text(json.dumps(_speedscope(raw, f"{name} under c=16 JSON load")))
    return {
        **summarise_profile(raw),
        "raw": str(raw),
        "speedscope": str(speedscope),
        "load_rps_while_sampled": rps,
    }


async def _profile(bench: Bench, roots: dict[str, int], outdir: Path, seconds: int) -> dict[str, Any]:
    """py-spy on each server's process tree during a c=16 JSON load; a summary per server."""
    results: dict[str, Any] = {}
    for name in SERVERS:
        raw = outdir / f"{name}.raw.txt"
        argv = [str(PY_SPY), "record", "--pid", str(roots[name]), "--duration", str(seconds), "--rate", "200"]
        argv += ["--format", "raw", "--full-filenames", "--subprocesses", "-o", str(raw)]
        spy = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        bench.current = name
        client = LoadClient(16)
        try:
            await asyncio.sleep(0.5)  # attach
            run = await _load_for(_send(client, bench.targets[name], "json", []), seconds + 1.0, 16)
            out, _ = await asyncio.wait_for(spy.communicate(), seconds + 60)
        finally:
            await client.aclose()
            if spy.returncode is None:
                spy.kill()
                await spy.wait()
            bench.current = None
        bench.errors += [f"profile {name}: {e}" for e in run.errors]
        if spy.returncode != 0:
            why = out.decode(errors="replace").strip().splitlines()[-3:]
            print(
                f"py-spy could not profile {name} (exit {spy.returncode}): {' / '.join(why)}", file=sys.stderr
            )
            results[name] = {"error": " / ".join(why), "exit": spy.returncode}
            continue
        results[name] = _profile_result(name, raw, outdir, round(run.rps, 1))
    return results


# --- the run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not PROXY_BIN.exists():
        raise SystemExit(f"{PROXY_BIN} is missing: run `make bench-peer` (it installs LiteLLM's proxy)")
    ports = Ports.free()
    proxy_port = free_port()
    provider_args = ["--latency-ms", "0", "--chunk-delay-ms", "0", "--tokens-per-chunk", "1"]
    provider_args += ["--behaviour", f"reply={REPLY}"]
    scenario_list = scenarios(args.quick)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "repeats": args.repeats,
        "quick": args.quick,
        "code_at_start": code_fingerprint(),
    }
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cirrus-peer-")))
        logs = {
            "direct": workdir / "logs" / "fake-provider.log",
            "cirrus": workdir / "logs" / "funchost.log",
            "proxy": workdir / "logs" / "litellm-proxy.log",
        }
        bench: Bench | None = None
        try:
            model_file, proxy_config = _write_configs(workdir, ports.provider)
            print("starting the local stack and LiteLLM's proxy ...", file=sys.stderr, flush=True)
            proxy = _proxy_process(proxy_config, proxy_port, logs["proxy"])
            stack.callback(proxy.stop)
            proxy.start()  # it imports while the stack starts
            emulators, _ = stack.enter_context(
                running_stack(
                    ports, workdir, provider_args=provider_args, CIRRUS_MODEL_CONFIG=str(model_file)
                )
            )
            _wait_ready(f"http://{LOOPBACK}:{ports.host}/health/ready")
            proxy.wait_ready()
            assert proxy.proc is not None
            roots = {
                "cirrus": _child_of_mine(f"tools.funchost --host {LOOPBACK} --port {ports.host}"),
                "proxy": proxy.proc.pid,
                "direct": _child_of_mine(f"tools.fake_provider --host {LOOPBACK} --port {ports.provider}"),
                "emulators": [_child_of_mine("azurite"), _child_of_mine("cosmosdb-server")],
            }
            # Cirrus is two processes: the local host (routing, the proxy hop) and its worker.
            host_pid = roots["cirrus"]
            assert isinstance(host_pid, int)
            worker_pid = next(pid for pid, parent in _parents().items() if parent == host_pid)
            meter = CpuMeter(
                {k: v if isinstance(v, list) else [v] for k, v in roots.items()},
                {"cirrus_host": host_pid, "cirrus_worker": worker_pid},
            )
            targets = {
                "direct": Target(
                    "direct",
                    f"http://{LOOPBACK}:{ports.provider}/v1/chat/completions",
                    PROVIDER_MODEL,
                    {"Content-Type": "application/json"},
                ),
                "cirrus": _server_target("cirrus", ports.host),
                "proxy": _server_target("proxy", proxy_port),
            }
            bench = Bench(targets, meter, logs)

            async def go() -> None:
                report["warmup"] = await _warm_up(bench)
                idle_before = meter.snapshot()
                await asyncio.sleep(2.0)
                idle = CpuMeter.delta(idle_before, meter.snapshot())
                report["idle_cpu_pct"] = {k: round(100 * v / 2.0, 1) for k, v in idle.items()}
                await _measure(bench, scenario_list, args.repeats)
                if args.profile is not None:
                    servers = {"cirrus": roots["cirrus"], "proxy": roots["proxy"]}
                    report["profile"] = await _profile(bench, servers, args.profile, 4 if args.quick else 10)

            ports_of = {"cirrus": ports.host, "proxy": proxy_port, "direct": ports.provider}
            report["processes"] = {
                name: _describe(name, roots[name], ports_of[name]) for name in ("cirrus", "proxy", "direct")
            }
            asyncio.run(go())
            # After the warm-up, so the lists show any worker forked lazily on first request.
            for name in ("cirrus", "proxy"):
                report["processes"][name]["after_load"] = _describe(name, roots[name], ports_of[name])
            print("  cold starts ...", file=sys.stderr, flush=True)
            report["cold_start_s"] = _cold_starts(
                args.repeats, emulators, ports, model_file, proxy_config, workdir, bench.errors
            )
            report["runs"] = bench.runs
            report["logs"] = {name: _log_stats(path) for name, path in logs.items()}
            report["errors"] = bench.errors
            for name in {e.split(" ")[1].rstrip(":") for e in bench.errors} & set(logs):
                _print_tail(name, logs[name])
        except BaseException as exc:
            # A StackError already carries its log's tail; Ctrl-C is no server's failure.
            if not isinstance(exc, StackError | KeyboardInterrupt):
                failing = [bench.current] if bench is not None and bench.current else list(logs)
                for name in failing:
                    _print_tail(name, logs[name])
            raise
    report["seconds"] = round(time.monotonic() - started, 1)
    report["code_at_end"] = code_fingerprint()
    report["scenarios"] = {sc.key: _summarise(sc, report["runs"], args.repeats) for sc in scenario_list}
    return report


# --- summary and output ------------------------------------------------------------------------


def _med(values: list[float]) -> float:
    values = [v for v in values if v == v]  # drop NaN
    return round(statistics.median(values), 4) if values else float("nan")


def _summarise(sc: Scenario, runs: list[dict[str, Any]], repeats: int) -> dict[str, Any]:
    by = {(r["target"], r["repeat"]): r for r in runs if r["scenario"] == sc.key}
    out: dict[str, Any] = {"label": sc.label, "concurrency": sc.concurrency, "requests": sc.requests}
    for name in ("direct", *SERVERS):
        mine = [by[(name, i)] for i in range(repeats)]
        entry: dict[str, Any] = {
            "rps": _med([r["rps"] for r in mine]),
            "p50_ms": _med([r["p50_ms"] for r in mine]),
            "p99_ms": _med([r["p99_ms"] for r in mine]),
            "errors": sum(r["errors"] for r in mine),
            "cpu_ms_per_request": _med(
                [1000 * r["cpu_s"][name] / r["ok"] if r["ok"] else float("nan") for r in mine]
            ),
            "client_cpu_ms_per_request": _med(
                [1000 * r["cpu_s"]["client"] / r["ok"] if r["ok"] else float("nan") for r in mine]
            ),
            "data_events_per_stream": sorted({e for r in mine for e in r["data_events"]}),
            "others_cpu_pct": round(
                100 * sum(r["cpu_s"]["others"] for r in mine) / sum(r["wall_s"] for r in mine), 1
            ),
        }
        if name == "cirrus":
            for part in ("cirrus_host", "cirrus_worker"):
                entry[f"{part}_cpu_ms_per_request"] = _med(
                    [1000 * r["cpu_s"][part] / r["ok"] if r["ok"] else float("nan") for r in mine]
                )
        if name != "direct":
            base = [by[("direct", i)] for i in range(repeats)]
            entry["added_p50_ms"] = _med([r["p50_ms"] - b["p50_ms"] for r, b in zip(mine, base, strict=True)])
            entry["added_p99_ms"] = _med([r["p99_ms"] - b["p99_ms"] for r, b in zip(mine, base, strict=True)])
            entry["fake_provider_cpu_ms_per_request"] = _med(
                [1000 * r["cpu_s"]["direct"] / r["ok"] if r["ok"] else float("nan") for r in mine]
            )
            entry["emulators_cpu_ms_per_request"] = _med(
                [1000 * r["cpu_s"]["emulators"] / r["ok"] if r["ok"] else float("nan") for r in mine]
            )
        out[name] = entry
    return out


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    higher_better: bool
    direct: float | None
    cirrus: float
    proxy: float

    @property
    def ratio(self) -> float:
        return self.cirrus / self.proxy if self.proxy else float("nan")


def figures(report: dict[str, Any]) -> list[Figure]:
    s = report["scenarios"]

    def f(key: str, label: str, unit: str, hi: bool, scen: str, field_: str, direct: bool = True) -> Figure:
        d = s[scen]["direct"][field_] if direct else None
        return Figure(key, label, unit, hi, d, s[scen]["cirrus"][field_], s[scen]["proxy"][field_])

    cold = report["cold_start_s"]
    return [
        f("json_rps_c1", "JSON requests/s, c=1", "req/s", True, "json_c1", "rps"),
        f("json_rps_c16", "JSON requests/s, c=16", "req/s", True, "json_c16", "rps"),
        f("json_rps_c64", "JSON requests/s, c=64", "req/s", True, "json_c64", "rps"),
        f("p50_c1", "JSON p50 latency, c=1", "ms", False, "json_c1", "p50_ms"),
        f("added_p50_c1", "added p50 latency, c=1", "ms", False, "json_c1", "added_p50_ms", direct=False),
        f("added_p99_c1", "added p99 latency, c=1", "ms", False, "json_c1", "added_p99_ms", direct=False),
        f("streams_c8", "streams/s, 8 concurrent", "str/s", True, "stream_c8", "rps"),
        f("streams_c32", "streams/s, 32 concurrent", "str/s", True, "stream_c32", "rps"),
        f("ttft_p50", "stream TTFT p50, c=1", "ms", False, "ttft_c1", "p50_ms"),
        f("ttft_p99", "stream TTFT p99, c=1", "ms", False, "ttft_c1", "p99_ms"),
        f("cpu_json", "server CPU per JSON request, c=16", "ms", False, "json_c16", "cpu_ms_per_request"),
        f("cpu_json_c64", "server CPU per JSON request, c=64", "ms", False, "json_c64", "cpu_ms_per_request"),
        f("cpu_stream", "server CPU per stream, c=8", "ms", False, "stream_c8", "cpu_ms_per_request"),
        Figure(
            "cpu_chunk",
            "server CPU per streamed chunk, c=8",
            "us",
            False,
            1000 * s["stream_c8"]["direct"]["cpu_ms_per_request"] / CHUNKS,
            1000 * s["stream_c8"]["cirrus"]["cpu_ms_per_request"] / CHUNKS,
            1000 * s["stream_c8"]["proxy"]["cpu_ms_per_request"] / CHUNKS,
        ),
        Figure(
            "cold_start",
            "cold start to first answer",
            "s",
            False,
            None,
            _med(cold["cirrus"]),
            _med(cold["proxy"]),
        ),
    ]


# (figure key, how Cirrus/proxy must compare, bound, text); cold start is absolute, in seconds
TARGETS = [
    ("json_rps_c16", ">=", 2.5, "JSON requests/s at c=16 >= 2.5x the proxy"),
    ("streams_c8", ">=", 3.0, "streams/s at 8 concurrent >= 3x the proxy"),
    ("ttft_p50", "<=", 0.3, "stream TTFT p50 <= 0.3x the proxy"),
    ("added_p50_c1", "<=", 0.3, "added p50 latency at c=1 <= 0.3x the proxy"),
    ("cpu_json", "<=", 0.4, "CPU per JSON request <= 0.4x the proxy"),
    ("cpu_stream", "<=", 0.33, "CPU per stream <= 0.33x the proxy"),
    ("cold_start", "abs<=", 1.5, "Cirrus cold start to first answer <= 1.5 s"),
]


def evaluate(figs: list[Figure]) -> list[dict[str, Any]]:
    by = {f.key: f for f in figs}
    out = []
    for key, op, bound, text in TARGETS:
        fig = by[key]
        value = fig.cirrus if op == "abs<=" else fig.ratio
        if op == ">=":
            met = value >= bound
        elif key == "added_p50_c1" and fig.proxy <= 0:
            met = fig.cirrus <= 0  # a ratio to a proxy that adds nothing means nothing
        else:
            met = value <= bound
        out.append(
            {"target": text, "figure": key, "value": round(value, 3), "bound": bound, "met": bool(met)}
        )
    return out


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v != v:
        return "nan"
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.2f}" if abs(v) < 100 else f"{v:.1f}"


def table(figs: list[Figure]) -> str:
    head = (
        f"{'figure':<36}{'unit':>6}{'better':>8}{'direct':>10}{'Cirrus':>10}{'proxy':>10}{'Cirrus/proxy':>14}"
    )
    lines = [head, "-" * len(head)]
    for f in figs:
        better = "higher" if f.higher_better else "lower"
        lines.append(
            f"{f.label:<36}{f.unit:>6}{better:>8}{_fmt(f.direct):>10}{_fmt(f.cirrus):>10}{_fmt(f.proxy):>10}"
            f"{_fmt(f.ratio) + 'x':>14}"
        )
    return "\n".join(lines)


def _print_processes(report: dict[str, Any]) -> None:
    print("processes (whole tree measured; listener = the pid holding the listening socket):")
    for name in ("cirrus", "proxy"):
        info = report["processes"][name].get("after_load", report["processes"][name])
        procs = info["processes"]
        print(f"  {name}: {len(procs)} process(es), listener pid {info['listener_pid']}")
        for p in procs:
            native = ", ".join(p["native"]) or "none"
            print(f"    pid {p['pid']} threads {p['threads']} native [{native}]: {p['cmdline'][:110]}")
    used = report["warmup"]["warmup_cpu_s_by_pid"]
    print("  CPU s by pid during the warm-up: " + ", ".join(f"{pid}: {s}" for pid, s in used.items()))
    print(f"  idle CPU % over 2 s: {report['idle_cpu_pct']}")
    for name in ("cirrus", "proxy"):
        log = report["logs"].get(name) or {}
        if log:
            print(
                f"  {name} log: {log['lines']} lines, {log['bytes']} bytes; last: {log['last'][-1][:150]!r}"
            )
    split = [
        (key, report["scenarios"][key]["cirrus"])
        for key in ("json_c16", "stream_c8")
        if key in report["scenarios"]
    ]
    print(
        "  Cirrus CPU by process (ms per request; the host relays HTTP to the worker, as Azure's host does): "
        + "; ".join(
            f"{k}: host {e['cirrus_host_cpu_ms_per_request']}, worker {e['cirrus_worker_cpu_ms_per_request']}"
            for k, e in split
        )
    )
    shape = report["warmup"]["stream_shape"]
    print(
        "  data: events per stream (incl. [DONE]): "
        + ", ".join(
            f"{k} {v['data_events']} with {v['content_chunks']} content chunks" for k, v in shape.items()
        )
    )


def _print_profile(profile: dict[str, Any]) -> None:
    print(
        "\nprofile (py-spy, 200 Hz, c=16 JSON load): % of busy samples whose stack contains a frame of the "
        "group, and whose innermost frame is in it (self)"
    )
    for name, p in profile.items():
        if "error" in p:
            print(f"  {name}: not profiled: {p['error']}")
            continue
        print(
            f"  {name}: {p['samples']} busy samples ({p['idle_pool_samples_left_out']} of idle pool threads "
            f"left out; {p['load_rps_while_sampled']} rps while sampled)"
        )
        print("    in stack   self  group")
        for group, pct in p["groups_pct"].items():
            print(f"    {pct:>7.1f}% {p['groups_self_pct'][group]:>5.1f}%  {group}")
        print("    top 15 innermost functions (self time):")
        for func, pct in p["top_innermost"]:
            print(f"    {pct:>5.1f}%  {func}")
        print(f"    files: {p['raw']}, {p['speedscope']}")


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # unwinds like Ctrl-C: servers stopped, temp dir removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small request counts: a smoke run")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy each server; files go here")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write everything here")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        report = run(args)
    except KeyboardInterrupt:
        print("interrupted: servers stopped, temp dir removed", file=sys.stderr)
        return 130
    except StackError as exc:  # a server did not start or answer; the message ends with its log's tail
        print(f"FAILED: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)

    figs = figures(report)
    report["figures"] = {
        f.key: {"direct": f.direct, "cirrus": f.cirrus, "proxy": f.proxy, "ratio": round(f.ratio, 4)}
        for f in figs
    }
    report["targets"] = evaluate(figs)
    print(
        f"\nCirrus vs LiteLLM proxy {_proxy_version()} (1 worker), same fake provider, "
        f"median of {args.repeats} repeat(s){' (quick)' if args.quick else ''}; {report['seconds']}s in all\n"
    )
    print(table(figs))
    print("\ntargets (reported, never asserted):")
    for t in report["targets"]:
        unit = " s" if t["figure"] == "cold_start" else "x"
        print(f"  {t['target']:<50} {t['value']:>8.2f}{unit:<2}  {'PASS' if t['met'] else 'MISS'}")
    cold = report["cold_start_s"]
    print(f"\ncold starts (s): Cirrus {cold['cirrus']}, proxy {cold['proxy']}")
    _print_processes(report)
    if "profile" in report:
        _print_profile(report["profile"])
    # Over all timed runs of a target: one short run is a few 10 ms clock ticks, too coarse alone.
    others = {
        name: 100
        * sum(r["cpu_s"]["others"] for r in report["runs"] if r["target"] == name)
        / sum(r["wall_s"] for r in report["runs"] if r["target"] == name)
        for name in ("direct", *SERVERS)
    }
    report["others_cpu_pct"] = {k: round(v, 1) for k, v in others.items()}
    print(
        "\nCPU used by processes outside this bench during the timed runs (% of one core): "
        + ", ".join(f"{k} {v:.1f}%" for k, v in others.items())
    )
    # The direct runs last tens of milliseconds: a clock tick either way is ±20 %, so they do not count.
    if max(others[name] for name in SERVERS) > 10:
        print(
            "WARNING: something else on the machine used CPU during the timed runs: the figures are "
            "skewed (the longer runs, the proxy's, take more of it). Rerun on a quiet machine.",
            file=sys.stderr,
        )
    if report["code_at_start"] != report["code_at_end"]:
        print(
            f"\nWARNING: Cirrus's code (shared/, tools/funchost/, function_app.py) changed during the run "
            f"({report['code_at_start']} -> {report['code_at_end']}): the servers started at different "
            "times (main host, cold-start hosts) may have run different code. Rerun for clean figures.",
            file=sys.stderr,
        )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    errors = report["errors"]
    if errors:
        print(f"\nFAILED: {len(errors)} requests did not complete, e.g.:", file=sys.stderr)
        for line in errors[:5]:
            print("  " + line, file=sys.stderr)
        return 1
    print("\nerrors: 0")
    return 0


def _proxy_version() -> str:
    found = sorted(PROXY_VENV.glob("lib/python*/site-packages/litellm-*.dist-info"))
    return found[0].name.removeprefix("litellm-").removesuffix(".dist-info") if found else "?"


if __name__ == "__main__":
    sys.exit(main())
