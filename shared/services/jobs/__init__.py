"""Jobs: agent runs and analysis tasks that run on the jobs queue, checkpointed step by step.

A job is one Cosmos item (`jobs`, partitioned by its id) that is also its checkpoint: the agent's
conversation so far, or an analysis's model answers. A worker claims the job with an ETag-guarded
lease, and saves the item after every model call and every tool result, before the next step.
A redelivered message, or another worker after the lease lapses, resumes from the item: a tool
call with a saved result is never run again; a model call is repeated only if the worker died
between getting its answer and saving it.

    service.py        JobService, the one object the container builds; the parts below behind it
    api.py            the HTTP API: create (checked), get, list, cancel, the event stream
    worker.py         a queue message: accept, claim, lease and heartbeat, run, end, poison
    run.py            what every step shares: stops, the model call, checkpoints, events
    agent.py          the agent's tool-calling loop
    analysis_step.py  an analysis task's model calls; AnalysisRunner
    notify.py         the end of a job told to its reply queue and webhook; WebhookSender
    store.py          the job item, its ETag-guarded updates and its numbered events
"""

from shared.services.jobs.analysis_step import AnalysisRunner
from shared.services.jobs.notify import WebhookSender
from shared.services.jobs.run import ChatCall, Completion, live_chat
from shared.services.jobs.service import JobService

__all__ = ["AnalysisRunner", "ChatCall", "Completion", "JobService", "WebhookSender", "live_chat"]
