"""The sweeper's timer (`%CIRRUS_SWEEP_SCHEDULE%`, NCRONTAB with seconds; every minute by
default): re-drives batches and jobs whose next message was lost (see shared/services/sweeper.py).
`useMonitor` keeps the schedule's status in the storage account, so a tick missed while no
instance ran is made up at once."""

import azure.functions as func

from shared.container import configure_telemetry, get_container
from shared.logs import bind_request_id
from shared.observability import timer_invocation

bp = func.Blueprint()


@bp.timer_trigger(
    arg_name="timer", schedule="%CIRRUS_SWEEP_SCHEDULE%", run_on_startup=False, use_monitor=True
)
async def sweep(timer: func.TimerRequest) -> None:
    configure_telemetry()  # before the first span, or it is never exported
    with timer_invocation("sweep"), bind_request_id("sweep"):
        container = await get_container()
        await container.sweeper.run()
