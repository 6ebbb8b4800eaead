"""A local Azure Functions host for `function_app.py` where Core Tools (`func start`) is unavailable.

It holds no application logic, only hosting, so the same `function_app.py` runs unchanged under
`func start` and in Azure. It imports `function_app` from the script root, indexes
`app.get_functions()`, serves every HTTP trigger on uvicorn and polls every queue trigger with the
Functions host's semantics (batches, lease renewal, retries, `<queue>-poison`). Other triggers are
skipped with a warning; auth levels are not enforced (Core Tools does not enforce them either).

A queue name may reference app settings, whole or within it: `%JOBS%`, `%JOBS%-poison`. A trigger on
a poison queue is an ordinary queue trigger except that, as in the host's queue extension, a queue
named `*-poison` (or whose `-poison` name would exceed 63 characters) has no poison queue: a failed
message is neither moved nor made visible early; it is retried when its 10-minute lease expires,
whatever maxDequeueCount says.

host.json settings honoured:
  - extensions.http.routePrefix (default "api"; "" for none)
  - extensions.queues.batchSize (16), newBatchThreshold (batchSize/2), maxPollingInterval (1 min),
    visibilityTimeout (0), maxDequeueCount (5), messageEncoding ("base64" or "none")
  - functionTimeout (default unbounded locally; "-1" also means unbounded)
App settings override host.json as in Azure: `AzureFunctionsJobHost__<path>=<value>`, `__` between
levels, e.g. `AzureFunctionsJobHost__extensions__queues__maxDequeueCount=2`,
`AzureFunctionsJobHost__extensions__queues__visibilityTimeout=00:00:00`,
`AzureFunctionsJobHost__functionTimeout=00:05:00`. The prefix and each level match case-insensitively;
values are strings (integers for batchSize, newBatchThreshold, maxDequeueCount) and are validated like
host.json's own, the error naming the app setting. A path host.json lacks is added, so an unknown one
is ignored like an unknown host.json key; one below a value that is not an object is an error. The
`:` separator is not supported (Linux app settings only take `__`).
`FUNCHOST_LEASE_SECONDS` (not a Functions setting) shortens the 10-minute lease on received
messages, so a test that kills a host sees its messages come back in seconds.
local.settings.json `Values` fill in environment variables that are not already set, before host.json
is read, so they can hold such overrides too.

Modules: hostconfig (host.json, settings), functions (loading, indexing, invoking), http (routes,
responses), queues (queue listeners), __main__ (CLI, serving, graceful shutdown).
Run: `python -m tools.funchost [--script-root DIR] [--host 127.0.0.1] [--port 7071]`.
"""
