"""Command-line client for Cirrus's (and OpenAI's) Batch API, built on the official `openai` SDK.

Submit a JSONL file of requests, watch it run, and collect the results::

    export CIRRUS_API_KEY=sk-cirrus-dev-master-key      # or OPENAI_API_KEY; never printed
    python -m tools.batch_cli submit requests.jsonl --out results/

`submit` checks the file locally (every line a JSON object with `custom_id`, `method`, `url` and
`body`, and `url` equal to `--endpoint`), uploads it with `purpose=batch`, creates the batch, and shows
a progress bar (completed + failed of total, with the batch's status) until the batch ends. It then
downloads `results/<batch_id>_output.jsonl` and `results/<batch_id>_errors.jsonl` (each only if the
batch produced it) and prints a one-line summary. Each line of `requests.jsonl` looks like::

    {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}}

(on one line). Ctrl-C while waiting leaves the batch running and prints the `wait`/`status` command
that picks it up again. Other commands::

    python -m tools.batch_cli submit FILE.jsonl [--endpoint /v1/chat/completions] [--window 24h]
                                     [--metadata k=v ...] [--out DIR] [--interval SECONDS] [--no-wait]
    python -m tools.batch_cli wait BATCH_ID [--out DIR] [--interval SECONDS]   # resume waiting
    python -m tools.batch_cli status BATCH_ID [--json]
    python -m tools.batch_cli download BATCH_ID [--out DIR]
    python -m tools.batch_cli cancel BATCH_ID
    python -m tools.batch_cli list [--limit N] [--json]

`submit --no-wait` prints only the batch id on stdout, so `BATCH=$(python -m tools.batch_cli submit
f.jsonl --no-wait)` works; messages and the progress bar go to stderr. Connection options go before
or after the command: `--base-url` (default `$CIRRUS_BASE_URL`, else http://127.0.0.1:7071/v1) and
`--api-key` (default `$CIRRUS_API_KEY`, else `$OPENAI_API_KEY`; prefer the environment, since
command-line arguments are visible to other local users).

Exit codes: 0 the batch completed (or the command succeeded), 1 it failed, expired or was cancelled,
2 a usage or input error (bad JSONL, unknown batch, unreachable gateway, rejected request), 130
interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import openai
from openai import OpenAI
from openai.types import Batch
from tqdm import tqdm

DEFAULT_BASE_URL = "http://127.0.0.1:7071/v1"
ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/completions")
WINDOWS = ("24h",)
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
EXIT_OK, EXIT_BATCH_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Polls that may fail in a row (after the SDK's own retries) before `wait` gives up.
MAX_POLL_FAILURES = 10
MAX_REPORTED_LINE_ERRORS = 10
# OpenAI's metadata limits.
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512
PROG = "python -m tools.batch_cli"


class UsageError(Exception):
    """Bad input or a request the gateway rejected: printed as `error: ...`, exit 2."""


# --- The local JSONL check ------------------------------------------------------------------------


@dataclass(frozen=True)
class LineError:
    line: int
    reason: str


def check_jsonl(path: Path, endpoint: str) -> tuple[int, list[LineError], int]:
    """A cheap pass over the input: (number of requests, the first errors, how many errors in all).

    The server validates fully; this only catches what would make it reject the file, before uploading.
    Blank lines are skipped.
    """
    errors: list[LineError] = []
    total_errors = 0
    requests = 0
    seen: dict[str, int] = {}

    def fail(line: int, reason: str) -> None:
        nonlocal total_errors
        total_errors += 1
        if len(errors) < MAX_REPORTED_LINE_ERRORS:
            errors.append(LineError(line, reason))

    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            requests += 1
            try:
                item = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                fail(number, f"not UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            except json.JSONDecodeError as exc:
                fail(number, f"invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(item, dict):
                fail(number, f"expected a JSON object, got {type(item).__name__}")
                continue
            missing = [k for k in ("custom_id", "method", "url", "body") if k not in item]
            if missing:
                fail(number, "missing " + ", ".join(f"`{k}`" for k in missing))
                continue
            custom_id, method, url, body = item["custom_id"], item["method"], item["url"], item["body"]
            if not isinstance(custom_id, str) or not custom_id:
                fail(number, "`custom_id` must be a non-empty string")
            elif custom_id in seen:
                fail(number, f"duplicate `custom_id` {custom_id!r} (first on line {seen[custom_id]})")
            else:
                seen[custom_id] = number
            if method != "POST":
                fail(number, f'`method` must be "POST", got {json.dumps(method)}')
            if url != endpoint:
                fail(
                    number, f"`url` is {json.dumps(url)} but the batch endpoint is {endpoint!r} (--endpoint)"
                )
            if not isinstance(body, dict):
                fail(number, "`body` must be a JSON object")
    return requests, errors, total_errors


# --- Output helpers --------------------------------------------------------------------------------


def _err(*lines: str) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def _when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _counts(batch: Batch) -> tuple[int, int, int]:
    rc = batch.request_counts
    if rc is None:
        return 0, 0, 0
    return rc.completed, rc.failed, rc.total


def status_table(batch: Batch) -> str:
    completed, failed, total = _counts(batch)
    rows: list[tuple[str, str]] = [
        ("id", batch.id),
        ("status", batch.status),
        ("endpoint", batch.endpoint),
        ("requests", f"{completed} completed, {failed} failed, {total} total"),
        ("input_file_id", batch.input_file_id),
        ("output_file_id", batch.output_file_id or "-"),
        ("error_file_id", batch.error_file_id or "-"),
        ("completion_window", batch.completion_window),
        ("created_at", _when(batch.created_at)),
    ]
    if batch.model:
        rows.insert(3, ("model", batch.model))
    for name in (
        "in_progress_at",
        "finalizing_at",
        "completed_at",
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
        "expires_at",
    ):
        ts = getattr(batch, name)
        if ts is not None:
            rows.append((name, _when(ts)))
    if batch.metadata:
        rows.append(("metadata", ", ".join(f"{k}={v}" for k, v in batch.metadata.items())))
    for error in _batch_errors(batch):
        rows.append(("error", error))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _batch_errors(batch: Batch) -> list[str]:
    if batch.errors is None or not batch.errors.data:
        return []
    out = []
    for e in batch.errors.data:
        where = f"line {e.line}: " if e.line is not None else ""
        code = e.code or "error"
        out.append(f"{where}{code}: {e.message}" if e.message else f"{where}{code}")
    return out


def list_table(batches: Sequence[Batch]) -> str:
    if not batches:
        return "no batches"
    rows = [("ID", "STATUS", "ENDPOINT", "DONE/TOTAL", "FAILED", "CREATED")]
    for b in batches:
        completed, failed, total = _counts(b)
        rows.append(
            (b.id, b.status, b.endpoint, f"{completed + failed}/{total}", str(failed), _when(b.created_at))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)


# --- Talking to the gateway -----------------------------------------------------------------------


@dataclass
class Context:
    client: OpenAI
    args: argparse.Namespace
    sleep: Callable[[float], None]
    explicit_base_url: bool

    def command(self, name: str, batch_id: str, *, out: bool = False) -> str:
        """The command line that runs `name` on this batch against the same gateway (never the key)."""
        parts = [name, batch_id]
        if self.explicit_base_url:
            parts += ["--base-url", self.args.base_url]
        if out and Path(self.args.out) != Path():
            parts += ["--out", str(self.args.out)]
        return " ".join([PROG, *(shlex.quote(p) for p in parts)])


def _download(ctx: Context, file_id: str, dest: Path) -> None:
    """Streams the file to `dest` through a temporary name, so a partial download never looks finished."""
    part = dest.with_name(dest.name + ".part")
    try:
        with ctx.client.files.with_streaming_response.content(file_id) as response:
            response.stream_to_file(part)
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)


def finish(ctx: Context, batch: Batch) -> int:
    """Downloads a finished batch's files, prints the summary line, and returns the exit code."""
    out_dir = Path(ctx.args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved: list[str] = []
    try:
        for label, file_id, suffix in (
            ("output", batch.output_file_id, "output"),
            ("errors", batch.error_file_id, "errors"),
        ):
            if file_id:
                dest = out_dir / f"{batch.id}_{suffix}.jsonl"
                _download(ctx, file_id, dest)
                saved.append(f"{label}: {dest}")
    except KeyboardInterrupt:
        _err(
            "",
            "Download interrupted. Fetch the results later with:",
            f"  {ctx.command('download', batch.id, out=True)}",
        )
        return EXIT_INTERRUPTED
    completed, failed, total = _counts(batch)
    summary = f"{batch.id} {batch.status}: {completed} completed, {failed} failed of {total} requests"
    print("; ".join([summary, *saved]))
    errors = _batch_errors(batch)
    if errors:
        _err(f"batch errors ({len(errors)}):", *(f"  {e}" for e in errors))
    return EXIT_OK if batch.status == "completed" else EXIT_BATCH_FAILED


@contextlib.contextmanager
def _progress(batch: Batch) -> Iterator[tqdm]:
    # No rate or ETA: counts jump between polls, and a resumed wait starts part-way through.
    bar = tqdm(
        total=None,
        unit="req",
        desc=f"{batch.status:<11}",
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
        dynamic_ncols=True,
        file=sys.stderr,
        leave=True,
    )
    try:
        yield bar
    finally:
        bar.close()


def _show(bar: tqdm, batch: Batch) -> None:
    """Completed + failed of total, labelled with the status (total is 0 until validation ends)."""
    completed, failed, total = _counts(batch)
    bar.total = total or None
    bar.n = completed + failed
    bar.desc = f"{batch.status:<11}"  # set_description would add a second ": " while there is no total
    bar.set_postfix_str(f"failed={failed}" if failed else "", refresh=False)
    bar.refresh()


def wait_for(ctx: Context, batch: Batch) -> int:
    """Polls until `batch` ends, showing its progress, then downloads its files. Ctrl-C leaves it running."""
    failures = 0
    try:
        with _progress(batch) as bar:
            _show(bar, batch)
            while batch.status not in TERMINAL:
                ctx.sleep(ctx.args.interval)
                try:
                    batch = ctx.client.batches.retrieve(batch.id)
                except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError) as exc:
                    failures += 1
                    if failures < MAX_POLL_FAILURES:
                        bar.write(f"warning: polling failed ({_describe(exc)}); retrying", file=sys.stderr)
                        continue
                    bar.close()
                    _err(
                        f"error: gave up after {failures} failed polls ({_describe(exc)}).",
                        f"Batch {batch.id} was not cancelled; once the gateway answers, resume with:",
                        f"  {ctx.command('wait', batch.id, out=True)}",
                    )
                    return EXIT_USAGE
                failures = 0
                _show(bar, batch)
    except KeyboardInterrupt:
        _err(
            "",
            f"Stopped waiting; batch {batch.id} was not cancelled (last seen: {batch.status}).",
            f"  resume:  {ctx.command('wait', batch.id, out=True)}",
            f"  check:   {ctx.command('status', batch.id)}",
        )
        return EXIT_INTERRUPTED
    return finish(ctx, batch)


# --- Commands -------------------------------------------------------------------------------------


def cmd_submit(ctx: Context) -> int:
    args = ctx.args
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    requests, errors, total_errors = check_jsonl(path, args.endpoint)
    if errors:
        _err(f"{path}: {total_errors} problem(s) found; nothing was uploaded")
        _err(*(f"  line {e.line}: {e.reason}" for e in errors))
        if total_errors > len(errors):
            _err(f"  ... and {total_errors - len(errors)} more")
        return EXIT_USAGE
    if requests == 0:
        raise UsageError(f"{path}: no requests in the file; nothing was uploaded")
    with path.open("rb") as fh:
        uploaded = ctx.client.files.create(file=(path.name, fh, "application/jsonl"), purpose="batch")
    _err(f"uploaded {path} ({requests} requests) as {uploaded.id}")
    batch = ctx.client.batches.create(
        input_file_id=uploaded.id,
        endpoint=args.endpoint,
        completion_window=args.window,
        metadata=args.metadata or openai.omit,
    )
    _err(f"created batch {batch.id} ({batch.status})")
    if args.no_wait:
        _err(f"follow it with: {ctx.command('wait', batch.id)}")
        print(batch.id)
        return EXIT_OK
    return wait_for(ctx, batch)


def cmd_wait(ctx: Context) -> int:
    return wait_for(ctx, ctx.client.batches.retrieve(ctx.args.batch_id))


def cmd_status(ctx: Context) -> int:
    batch = ctx.client.batches.retrieve(ctx.args.batch_id)
    print(_dump(batch.to_dict(mode="json")) if ctx.args.json else status_table(batch))
    return EXIT_OK


def cmd_download(ctx: Context) -> int:
    batch = ctx.client.batches.retrieve(ctx.args.batch_id)
    if batch.status not in TERMINAL:
        raise UsageError(
            f"batch {batch.id} is {batch.status}; nothing to download yet "
            f"(wait for it with: {ctx.command('wait', batch.id, out=True)})"
        )
    return finish(ctx, batch)


def cmd_cancel(ctx: Context) -> int:
    batch = ctx.client.batches.cancel(ctx.args.batch_id)
    print(f"{batch.id} {batch.status}")
    return EXIT_OK


def cmd_list(ctx: Context) -> int:
    # Iterating the page follows `has_more`/`after`, so --limit may exceed one page.
    page = ctx.client.batches.list(limit=min(ctx.args.limit, 100))
    batches = list(islice(page, ctx.args.limit))
    if ctx.args.json:
        print(_dump([b.to_dict(mode="json") for b in batches]))
    else:
        print(list_table(batches))
    return EXIT_OK


# --- Arguments ------------------------------------------------------------------------------------


def _metadata_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if len(key) > MAX_METADATA_KEY:
        raise argparse.ArgumentTypeError(f"metadata key longer than {MAX_METADATA_KEY} characters: {key!r}")
    if len(value) > MAX_METADATA_VALUE:
        raise argparse.ArgumentTypeError(
            f"metadata value for {key!r} longer than {MAX_METADATA_VALUE} characters"
        )
    return key, value


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    # Connection options are accepted before and after the command. SUPPRESS keeps a subcommand's
    # parser from overwriting a value given before the command; defaults are filled in afterwards.
    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("connection")
    group.add_argument(
        "--base-url",
        default=argparse.SUPPRESS,
        help=f"gateway URL (default: $CIRRUS_BASE_URL, else {DEFAULT_BASE_URL})",
    )
    group.add_argument(
        "--api-key",
        default=argparse.SUPPRESS,
        help="API key (default: $CIRRUS_API_KEY, else $OPENAI_API_KEY); prefer the environment",
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Submit and follow batches on Cirrus (OpenAI's Batch API).",
        epilog="exit codes: 0 completed, 1 failed/expired/cancelled, 2 usage or input error, 130 interrupted",
        parents=[connection],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def out_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--out",
            default=".",
            metavar="DIR",
            help="directory for <batch_id>_output.jsonl and _errors.jsonl (default: .)",
        )

    def interval_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--interval",
            type=_interval,
            default=2.0,
            metavar="SECONDS",
            help="seconds between polls (default: 2)",
        )

    p = sub.add_parser("submit", parents=[connection], help="check, upload and run a JSONL file, then wait")
    p.add_argument("file", metavar="FILE.jsonl")
    p.add_argument("--endpoint", choices=ENDPOINTS, default=ENDPOINTS[0], help="default: %(default)s")
    p.add_argument(
        "--window", choices=WINDOWS, default="24h", help="completion window (default: %(default)s)"
    )
    p.add_argument(
        "--metadata",
        type=_metadata_pair,
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help=f"batch metadata (up to {MAX_METADATA_PAIRS} pairs)",
    )
    out_option(p)
    interval_option(p)
    p.add_argument("--no-wait", action="store_true", help="print the batch id and return at once")
    p.set_defaults(handler=cmd_submit)

    p = sub.add_parser("wait", parents=[connection], help="wait for a batch, then download its files")
    p.add_argument("batch_id")
    out_option(p)
    interval_option(p)
    p.set_defaults(handler=cmd_wait)

    p = sub.add_parser("status", parents=[connection], help="show a batch")
    p.add_argument("batch_id")
    p.add_argument("--json", action="store_true", help="print the batch object as JSON")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("download", parents=[connection], help="download a finished batch's files")
    p.add_argument("batch_id")
    out_option(p)
    p.set_defaults(handler=cmd_download)

    p = sub.add_parser("cancel", parents=[connection], help="cancel a batch")
    p.add_argument("batch_id")
    p.set_defaults(handler=cmd_cancel)

    p = sub.add_parser("list", parents=[connection], help="list recent batches, newest first")
    p.add_argument("--limit", type=_limit, default=20, help="how many (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the batch objects as JSON")
    p.set_defaults(handler=cmd_list)
    return parser


def parse_args(argv: Sequence[str] | None, env: dict[str, str] | None = None) -> argparse.Namespace:
    """Parses the command line and fills in connection defaults from the environment.

    Raises SystemExit (as argparse does) on a usage error.
    """
    env = dict(os.environ) if env is None else env
    parser = build_parser()
    args = parser.parse_args(argv)
    args.explicit_base_url = hasattr(args, "base_url")
    if not hasattr(args, "base_url"):
        args.base_url = env.get("CIRRUS_BASE_URL") or DEFAULT_BASE_URL
    if not hasattr(args, "api_key"):
        args.api_key = env.get("CIRRUS_API_KEY") or env.get("OPENAI_API_KEY")
    metadata = getattr(args, "metadata", None)
    if metadata is not None:
        if len(metadata) > MAX_METADATA_PAIRS:
            parser.error(f"--metadata: at most {MAX_METADATA_PAIRS} pairs")
        args.metadata = dict(metadata)
    return args


def _describe(exc: openai.OpenAIError) -> str:
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        message = body.get("message") if isinstance(body, dict) else None
        return f"HTTP {exc.status_code}: {message or exc.response.reason_phrase}"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return f"{exc.message}" + (f" ({cause})" if cause else "")
    return str(exc)


def main(
    argv: Sequence[str] | None = None,
    *,
    client: OpenAI | None = None,
    sleep: Callable[[float], None] = time.sleep,
    env: dict[str, str] | None = None,
) -> int:
    """Runs the CLI and returns its exit code. Tests pass `client` (and `sleep`) to avoid the network."""
    try:
        args = parse_args(argv, env)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if client is None:
        if not args.api_key:
            _err("error: no API key: set CIRRUS_API_KEY (or OPENAI_API_KEY), or pass --api-key")
            return EXIT_USAGE
        client = OpenAI(api_key=args.api_key, base_url=args.base_url)
    ctx = Context(client=client, args=args, sleep=sleep, explicit_base_url=args.explicit_base_url)
    try:
        return args.handler(ctx)
    except UsageError as exc:
        _err(f"error: {exc}")
    except openai.APIConnectionError as exc:
        _err(f"error: cannot reach the gateway at {args.base_url}: {_describe(exc)}")
    except openai.APIStatusError as exc:
        _err(f"error: the gateway refused the request: {_describe(exc)}")
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
