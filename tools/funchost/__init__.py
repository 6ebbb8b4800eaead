"""A local Azure Functions host for `function_app.py` where Core Tools (`func start`) is unavailable.

It holds no application logic, only hosting, so the same `function_app.py` runs unchanged under
`func start` and in Azure. It imports `function_app` from the script root, indexes
`app.get_functions()`, serves every HTTP trigger on uvicorn and polls every queue trigger with the
Functions host's semantics (batches, lease renewal, retries, `<queue>-poison`). Other triggers are
skipped with a warning; auth levels are not enforced (Core Tools does not enforce them either).

host.json settings honoured:
  - extensions.http.routePrefix (default "api"; "" for none)
  - extensions.queues.batchSize (16), newBatchThreshold (batchSize/2), maxPollingInterval (1 min),
    visibilityTimeout (0), maxDequeueCount (5), messageEncoding ("base64" or "none")
  - functionTimeout (default unbounded locally; "-1" also means unbounded)
local.settings.json `Values` fill in environment variables that are not already set.

Modules: hostconfig (host.json, settings), functions (loading, indexing, invoking), http (routes,
responses), queues (queue listeners), __main__ (CLI, serving, graceful shutdown).
Run: `python -m tools.funchost [--script-root DIR] [--host 127.0.0.1] [--port 7071]`.
"""
