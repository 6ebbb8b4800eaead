"""A local Azure Functions host for `function_app.py` where Core Tools (`func start`) is unavailable.

It runs the app the way Azure does: in a worker process of its own, through the worker library
Azure loads for Python 3.13 apps, `azure-functions-runtime` (pinned in requirements.txt, so the
same version runs here and in Azure), spoken to over the Functions language worker protocol. The
host holds no application logic and never imports the app: what it serves comes from the
worker's answers.

  host process                                            worker process
  ------------                                            --------------
  gRPC server (FunctionRpc.EventStream, 127.0.0.1:0)  <-- tools.funchost.worker (our stand-in for
  uvicorn on --port: routing, proxying to HttpUri         Azure's proxy worker, not on PyPI) hands
  queue listeners (Azurite/Storage), timers               every request to azure_functions_runtime,
                                                          which indexes, binds and invokes, and runs
                                                          the FastAPI streaming server (HttpUri)

Start-up: `StartStream`, `WorkerInitRequest` (the worker indexes function_app.py and reports
`HttpUri`), `FunctionsMetadataRequest` (functions and raw bindings), `FunctionLoadRequest` each.
Then, per event, an `InvocationRequest`:
  - HTTP: the raw request goes to the worker's `HttpUri` with `x-ms-invocation-id` while the
    InvocationRequest carries the route values; the response streams back chunk by chunk, and a
    caller who leaves closes the worker's connection (see http.py).
  - Queue: the message as TypedData with the Storage extension's trigger metadata (`Id`,
    `DequeueCount`, `InsertionTime`, `ExpirationTime`, `NextVisibleTime`, `PopReceipt`); the host
    keeps the queue semantics: batches, lease renewal, retries after `visibilityTimeout`, then
    `<queue>-poison` at `maxDequeueCount` (see queues.py).
  - Timer: the TimerRequest JSON on the NCRONTAB schedule, `runOnStartup`, `useMonitor` (timers.py).
The worker's logging comes back as `RpcLog` messages and is printed with the host's lines. If the
worker dies, the host starts a new one, as Azure's does: invocations in flight fail (their messages
come back after visibilityTimeout), HTTP requests wait for the new worker; after 5 new workers
within a minute, or one that cannot start, the host stops with an error.

A queue name may reference app settings, whole or within it: `%JOBS%`, `%JOBS%-poison`. A trigger on
a poison queue is an ordinary queue trigger except that, as in the host's queue extension, a queue
named `*-poison` (or whose `-poison` name would exceed 63 characters) has no poison queue: a failed
message is neither moved nor made visible early; it is retried when its 10-minute lease expires,
whatever maxDequeueCount says. Routes may use literal segments, `{name}` and a final `{*name}`,
what Cirrus uses; other template features are refused at start. Auth levels are not enforced
(Core Tools does not enforce them either).

host.json settings honoured:
  - extensions.http.routePrefix (default "api"; "" for none)
  - extensions.http.customHeaders: added to every HTTP response that does not have them already
  - extensions.queues.batchSize (16), newBatchThreshold (batchSize/2), maxPollingInterval (1 min),
    visibilityTimeout (0), maxDequeueCount (5), messageEncoding ("base64" or "none")
  - functionTimeout (default unbounded locally; "-1" also means unbounded): a late invocation is
    reported failed (its message retried); the worker's call is not stopped
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
is read, so they can hold such overrides too; the worker inherits the result.

CORS is the host's, applied before any function runs, as `func start` applies `Host.CORS` and
`Host.CORSCredentials` from local.settings.json (or its `--cors` and `--cors-credentials` options,
which win) and the Flex Consumption host applies the site's `cors` settings: the same ASP.NET Core
policy, any header and any method from the listed origins. Preflights are answered by the host;
responses to allowed origins get `Access-Control-Allow-Origin` (see cors.py for every rule).

Modules: rpc (the protocol, compiled from protos/ on first use), channel (gRPC server, worker
process, request matching), worker (the worker process), http (routes, proxying), pipeline (the
HTTP middleware in front of them: customHeaders, then CORS), cors (the CORS policy), queues,
timers, functions (one invocation), hostconfig (host.json, settings), serve (listeners, shutdown),
__main__ (CLI; launches the worker before importing serve, so the two start in parallel).
Run: `python -m tools.funchost [--script-root DIR] [--host 127.0.0.1] [--port 7071]
[--cors ORIGINS] [--[no-]cors-credentials]`.
"""
