"""Timer triggers: NCRONTAB schedules with the Functions host's `runOnStartup` and `useMonitor`.

What the host does, and so what this does:
- `schedule` is NCRONTAB with six fields, seconds first: `{second} {minute} {hour} {day} {month}
  {day-of-week}` (ranges, lists, steps and names such as `MON-FRI`), in UTC, or `%SETTING%`
  naming an app setting that holds one. croniter matches it (`second_at_beginning`). The TimeSpan
  form (`00:05:00`) works only on App Service plans, not on Flex Consumption, and is refused.
- A function runs one invocation at a time: the next occurrence is worked out when the last
  invocation has ended, so a slow run skips the occurrences it overlapped, as the host does.
- `runOnStartup`: it also runs once when the host starts (Azure runs it on every scale-out too,
  which is why the docs advise against it in production).
- `useMonitor` (default: true when the schedule fires at most once a minute, else false): each
  occurrence's status (`Last`, `Next`, `LastUpdated`) is kept in the storage account, blob
  `azure-webjobs-hosts/timers/<host id>/Host.Functions.<name>/status`, where the host keeps it;
  on start, an occurrence missed while no host ran is run at once with `past_due` true. The host
  id is `AzureFunctionsWebHost__hostid` if set, else `funchost`.

Unlike Azure, two local hosts on one storage account do not share a singleton lease: each runs
the timer (Cirrus's timer functions are idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient
from croniter import croniter

from .channel import FunctionMetadata, WorkerChannel
from .functions import InvocationFailed, invoke, typed_json
from .hostconfig import HostConfigError, resolve_setting_refs
from .queues import storage_connection_string

log = logging.getLogger("funchost")

STATUS_CONTAINER = "azure-webjobs-hosts"
HOST_ID_SETTING = "AzureFunctionsWebHost__hostid"
DEFAULT_HOST_ID = "funchost"
_TIMESPAN = re.compile(r"^\d+(\.\d+)?:\d{2}:\d{2}$|^\d{1,2}:\d{2}:\d{2}$")

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def parse_schedule(expression: str, where: str) -> str:
    """The NCRONTAB expression, checked; raises HostConfigError naming what is wrong."""
    text = expression.strip()
    if _TIMESPAN.match(text):
        raise HostConfigError(
            f"{where}: schedule {text!r} is a TimeSpan, which only App Service plans run; use NCRONTAB"
        )
    if len(text.split()) != 6:
        raise HostConfigError(
            f"{where}: schedule {text!r} must have six fields: second minute hour day month day-of-week"
        )
    if not croniter.is_valid(text, second_at_beginning=True):
        raise HostConfigError(f"{where}: schedule {text!r} is not a valid NCRONTAB expression")
    return text


def default_use_monitor(schedule: str, now: datetime) -> bool:
    """The host's default: monitor schedules that fire at most once a minute."""
    times = croniter(schedule, now, second_at_beginning=True)
    first = times.get_next(datetime)
    return bool(times.get_next(datetime) - first >= timedelta(minutes=1))


class TimerListener:
    """One timer trigger: occurrences, `runOnStartup`, the monitor status, graceful stop."""

    def __init__(
        self,
        function: FunctionMetadata,
        channel: WorkerChannel,
        schedule: str,
        *,
        run_on_startup: bool,
        use_monitor: bool,
        connection_string: str | None,
        host_id: str,
        function_timeout: float | None,
        clock: Clock = _utcnow,
    ) -> None:
        self.function = function
        self.channel = channel
        self.schedule = schedule
        self.run_on_startup = run_on_startup
        self.use_monitor = use_monitor and connection_string is not None
        self._connection_string = connection_string
        self._blob = f"timers/{host_id}/Host.Functions.{function.name}/status"
        self._timeout = function_timeout
        self._clock = clock
        self._stopped = asyncio.Event()

    @classmethod
    def for_function(
        cls,
        function: FunctionMetadata,
        channel: WorkerChannel,
        timeout: float | None,
        environ: Mapping[str, str],
    ) -> TimerListener:
        """Resolve the schedule (`%SETTING%` too) and the monitor's storage now, so a bad setting
        fails at startup."""
        trigger = function.trigger
        where = f"function '{function.name}'"
        schedule = parse_schedule(
            resolve_setting_refs(str(trigger.get("schedule", "")), environ, where), where
        )
        monitor = trigger.get("useMonitor")
        if monitor is None:
            monitor = default_use_monitor(schedule, _utcnow())
        connection = storage_connection_string(None, environ, where) if monitor else None
        return cls(
            function,
            channel,
            schedule,
            run_on_startup=bool(trigger.get("runOnStartup")),
            use_monitor=bool(monitor),
            connection_string=connection,
            host_id=environ.get(HOST_ID_SETTING) or DEFAULT_HOST_ID,
            function_timeout=timeout,
        )

    def stop(self) -> None:
        self._stopped.set()

    async def run(self) -> None:
        """Fire on schedule until stop(); an invocation in progress is awaited, not cancelled."""
        status = await self._read_status()
        now = self._clock()
        next_due = _parse_time(status.get("Next")) if status else None
        missed = next_due is not None and next_due < now - timedelta(seconds=1)
        last = _parse_time(status.get("Last")) if status else None
        if self.run_on_startup or missed:
            await self._fire(past_due=missed, last=last, scheduled=now)
            last = now
        while not self._stopped.is_set():
            now = self._clock()
            due = croniter(self.schedule, now, second_at_beginning=True).get_next(datetime)
            await self._write_status(last, due)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), (due - now).total_seconds())
                break  # stopped before the occurrence
            await self._fire(past_due=False, last=last, scheduled=due)
            last = due

    async def _fire(self, *, past_due: bool, last: datetime | None, scheduled: datetime) -> None:
        next_due = croniter(self.schedule, scheduled, second_at_beginning=True).get_next(datetime)
        timer = {
            "Schedule": {"AdjustForDST": False},
            "ScheduleStatus": {
                "Last": _format_time(last),
                "Next": _format_time(next_due),
                "LastUpdated": _format_time(self._clock()),
            },
            "IsPastDue": past_due,
        }
        with contextlib.suppress(InvocationFailed):  # logged; the host keeps the schedule
            await invoke(self.channel, self.function, typed_json(timer), {}, self._timeout)

    # --- the monitor's status blob --------------------------------------------------------------

    async def _read_status(self) -> dict[str, Any] | None:
        if not self.use_monitor:
            return None
        try:
            async with self._service() as service:
                blob = service.get_blob_client(STATUS_CONTAINER, self._blob)
                data = await (await blob.download_blob()).readall()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            log.warning(
                "Timer '%s': cannot read its schedule status (%s)", self.function.name, type(exc).__name__
            )
            return None
        with contextlib.suppress(ValueError):
            status = json.loads(data)
            return status if isinstance(status, dict) else None
        return None

    async def _write_status(self, last: datetime | None, due: datetime) -> None:
        if not self.use_monitor:
            return
        status = {
            "Last": _format_time(last),
            "Next": _format_time(due),
            "LastUpdated": _format_time(self._clock()),
        }
        try:
            async with self._service() as service:
                with contextlib.suppress(ResourceExistsError):
                    await service.create_container(STATUS_CONTAINER)
                blob = service.get_blob_client(STATUS_CONTAINER, self._blob)
                await blob.upload_blob(json.dumps(status).encode(), overwrite=True)
        except AzureError as exc:
            log.warning(
                "Timer '%s': cannot save its schedule status (%s)", self.function.name, type(exc).__name__
            )

    def _service(self) -> BlobServiceClient:
        assert self._connection_string is not None
        return BlobServiceClient.from_connection_string(self._connection_string)


def _format_time(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    with contextlib.suppress(ValueError):
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None
