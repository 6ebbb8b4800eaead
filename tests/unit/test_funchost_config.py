"""tools.funchost without servers: host.json and settings parsing, routes, responses, invocation."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest
from starlette.responses import StreamingResponse

from tools.funchost.functions import HostedFunction, index_functions, invoke
from tools.funchost.hostconfig import (
    HostConfig,
    HostConfigError,
    HostOverride,
    QueueOptions,
    apply_host_overrides,
    host_overrides,
    load_host_config,
    load_local_settings,
    parse_host_config,
    parse_timespan,
    resolve_setting_refs,
)
from tools.funchost.http import build_routes, convert_route, to_response
from tools.funchost.queues import (
    DEVELOPMENT_STORAGE,
    QueueListener,
    poison_queue_name,
    storage_connection_string,
)

# --- host.json ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:00:02", 2.0),
        ("00:00:00.200", 0.2),
        ("00:01:00", 60.0),
        ("01:02:03", 3723.0),
        ("1.02:00:00", 93600.0),
        ("00:05", 300.0),  # hh:mm
        (" 00:00:00.1234567 ", 0.1234567),
    ],
)
def test_timespans(text: str, seconds: float) -> None:
    assert parse_timespan(text, "x") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "2", "abc", "00:60:00", "24:00:00", "00:00:61", "-00:00:01", 5, None])
def test_invalid_timespans_name_the_setting(text: object) -> None:
    with pytest.raises(HostConfigError, match=r"some\.setting"):
        parse_timespan(text, "some.setting")


def test_defaults_are_the_functions_defaults() -> None:
    assert parse_host_config({"version": "2.0"}) == HostConfig(
        route_prefix="api",
        queues=QueueOptions(
            batch_size=16,
            new_batch_threshold=8,
            max_polling_interval=60.0,
            visibility_timeout=0.0,
            max_dequeue_count=5,
            message_encoding="base64",
        ),
        function_timeout=None,
    )


def test_all_settings_case_insensitively() -> None:
    config = parse_host_config(
        {
            "functionTimeout": "00:05:00",
            "Extensions": {
                "HTTP": {"RoutePrefix": "/"},
                "queues": {
                    "batchsize": 4,
                    "newBatchThreshold": 1,
                    "maxPollingInterval": "00:00:02",
                    "visibilityTimeout": "00:00:30",
                    "maxDequeueCount": 2,
                    "messageEncoding": "None",
                },
            },
        }
    )
    assert config.route_prefix == ""
    assert config.function_timeout == 300.0
    assert config.queues == QueueOptions(4, 1, 2.0, 30.0, 2, "none")


def test_new_batch_threshold_defaults_to_half_the_batch_size() -> None:
    assert parse_host_config({"extensions": {"queues": {"batchSize": 5}}}).queues.new_batch_threshold == 2


def test_function_timeout_minus_one_is_unbounded() -> None:
    assert parse_host_config({"functionTimeout": "-1"}).function_timeout is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"version": "1.0"}, "version"),
        ({"extensions": []}, "extensions"),
        ({"extensions": {"http": {"routePrefix": 1}}}, "routePrefix"),
        ({"extensions": {"queues": {"batchSize": 0}}}, "batchSize"),
        ({"extensions": {"queues": {"batchSize": 33}}}, "batchSize"),
        ({"extensions": {"queues": {"batchSize": "4"}}}, "batchSize"),
        ({"extensions": {"queues": {"maxDequeueCount": True}}}, "maxDequeueCount"),
        ({"extensions": {"queues": {"newBatchThreshold": -1}}}, "newBatchThreshold"),
        ({"extensions": {"queues": {"messageEncoding": "xml"}}}, "messageEncoding"),
        ({"extensions": {"queues": {"maxPollingInterval": "00:00:00.050"}}}, "maxPollingInterval"),
        ({"extensions": {"queues": {"visibilityTimeout": "soon"}}}, "visibilityTimeout"),
        ({"functionTimeout": "00:00:00"}, "functionTimeout"),
    ],
)
def test_invalid_settings_fail_with_the_setting_named(data: dict[str, Any], message: str) -> None:
    with pytest.raises(HostConfigError, match=message):
        parse_host_config(data)


def test_host_json_is_required_and_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(HostConfigError, match=r"host\.json not found"):
        load_host_config(tmp_path)
    (tmp_path / "host.json").write_text("{nope")
    with pytest.raises(HostConfigError, match="invalid JSON"):
        load_host_config(tmp_path)


def test_the_test_apps_host_json() -> None:
    config = load_host_config(Path(__file__).parent.parent / "integration" / "funchost_app", {})
    assert config.route_prefix == ""
    assert config.queues == QueueOptions(4, 2, 0.2, 0.2, 3, "base64")


# --- host.json overrides by app settings --------------------------------------------------------

HOST_JSON = {
    "version": "2.0",
    "functionTimeout": "00:30:00",
    "extensions": {"http": {"routePrefix": ""}, "queues": {"batchSize": 16, "maxDequeueCount": 5}},
}


def _overridden(environ: dict[str, str], data: dict[str, Any] | None = None) -> dict[str, Any]:
    return apply_host_overrides(HOST_JSON if data is None else data, host_overrides(environ))


def test_override_sets_a_nested_value_and_leaves_the_rest() -> None:
    data = _overridden({"AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "2", "OTHER": "x"})
    assert data["extensions"]["queues"] == {"batchSize": 16, "maxDequeueCount": 2}
    assert data["extensions"]["http"] == {"routePrefix": ""}
    assert data["functionTimeout"] == "00:30:00"
    assert HOST_JSON["extensions"]["queues"]["maxDequeueCount"] == 5  # host.json's data is not modified


def test_override_prefix_and_path_are_case_insensitive() -> None:
    data = _overridden(
        {
            "AZUREFUNCTIONSJOBHOST__EXTENSIONS__Queues__maxdequeuecount": "2",
            "azurefunctionsjobhost__FunctionTimeout": "00:05:00",
        }
    )
    assert data["extensions"]["queues"]["maxDequeueCount"] == 2  # host.json's spelling of the key is kept
    assert "maxdequeuecount" not in data["extensions"]["queues"]
    assert data["functionTimeout"] == "00:05:00"
    assert list(data) == ["version", "functionTimeout", "extensions"]


def test_overrides_take_effect_in_the_parsed_config() -> None:
    environ = {
        "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "2",
        "AzureFunctionsJobHost__extensions__queues__batchSize": " 4 ",  # as .NET parses integers
        "AzureFunctionsJobHost__extensions__queues__newBatchThreshold": "0",
        "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:00",
        "AzureFunctionsJobHost__extensions__queues__messageEncoding": "none",
        "AzureFunctionsJobHost__extensions__http__routePrefix": "2024",  # a string setting stays a string
        "AzureFunctionsJobHost__functionTimeout": "00:05:00",
    }
    config = parse_host_config(_overridden(environ))
    assert config.queues == QueueOptions(4, 0, 60.0, 0.0, 2, "none")
    assert config.route_prefix == "2024"
    assert config.function_timeout == 300.0


def test_override_of_a_setting_host_json_lacks_and_of_unknown_ones() -> None:
    environ = {
        "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:01",
        "AzureFunctionsJobHost__logging__logLevel__default": "Warning",  # not honoured locally
        "AzureFunctionsJobHost__extensions__serviceBus__prefetchCount": "10",
    }
    data = _overridden(environ, {"version": "2.0"})
    assert data["logging"] == {"logLevel": {"default": "Warning"}}  # applied like any host.json key...
    assert data["extensions"]["serviceBus"] == {"prefetchCount": "10"}  # (a string: not a known integer)
    config = parse_host_config(data)  # ...and ignored like one
    assert config.queues.max_polling_interval == 1.0
    assert config == parse_host_config({"extensions": {"queues": {"maxPollingInterval": "00:00:01"}}})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AzureFunctionsJobHost__extensions__queues__maxDequeueCount", "two", r"maxDequeueCount.*'two'"),
        ("AzureFunctionsJobHost__extensions__queues__batchSize", "4.0", "batchSize"),
        ("AzureFunctionsJobHost__extensions__queues__batchSize", "64", "batchSize"),
        ("AzureFunctionsJobHost__extensions__queues__visibilityTimeout", "10", "visibilityTimeout"),
        ("AzureFunctionsJobHost__functionTimeout", "00:00:00", "functionTimeout"),
        ("AzureFunctionsJobHost__extensions__queues", "big", r"extensions\.queues: expected an object"),
    ],
)
def test_invalid_override_fails_naming_the_setting_and_the_app_setting(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    (tmp_path / "host.json").write_text(json.dumps(HOST_JSON))
    with pytest.raises(HostConfigError, match=message) as raised:
        load_host_config(tmp_path, {name: value})
    assert str(raised.value).endswith(f"(from app setting {name})")


def test_an_error_in_host_json_itself_names_no_app_setting(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"queues": {"batchSize": 0}}}))
    environ = {"AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "2"}
    with pytest.raises(HostConfigError, match="batchSize") as raised:
        load_host_config(tmp_path, environ)
    assert "app setting" not in str(raised.value)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"AzureFunctionsJobHost__functionTimeout__x": "1"}, r"functionTimeout holds a value"),
        ({"AzureFunctionsJobHost__extensions____queues": "1"}, "empty level"),
        ({"AzureFunctionsJobHost__": "1"}, "empty level"),
        (
            {
                "AzureFunctionsJobHost__functionTimeout": "00:01:00",
                "AZUREFUNCTIONSJOBHOST__FUNCTIONTIMEOUT": "1",
            },
            "differently",
        ),
    ],
)
def test_overrides_that_cannot_apply(environ: dict[str, str], message: str) -> None:
    with pytest.raises(HostConfigError, match=message):
        _overridden(environ)


def test_override_names_and_load_host_config_reads_the_given_environ(tmp_path: Path) -> None:
    environ = {
        "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "1",
        "AzureFunctionsJobHost": "x",
    }
    assert host_overrides(environ) == [
        HostOverride(
            "AzureFunctionsJobHost__extensions__queues__maxDequeueCount",
            ("extensions", "queues", "maxDequeueCount"),
            1,
        )
    ]
    (tmp_path / "host.json").write_text(json.dumps(HOST_JSON))
    assert load_host_config(tmp_path, environ).queues.max_dequeue_count == 1
    assert load_host_config(tmp_path, {}).queues.max_dequeue_count == 5


def test_local_settings_can_hold_overrides(tmp_path: Path) -> None:
    values = {"AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "2"}
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": values}))
    (tmp_path / "host.json").write_text(json.dumps(HOST_JSON))
    environ: dict[str, str] = {}
    load_local_settings(tmp_path, environ)
    assert load_host_config(tmp_path, environ).queues.max_dequeue_count == 2


# --- app settings -------------------------------------------------------------------------------


def test_local_settings_fill_unset_variables_only(tmp_path: Path) -> None:
    values = {"FROM_FILE": "file", "BOTH": "file", "FLAG": True, "COUNT": 3}
    (tmp_path / "local.settings.json").write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    environ = {"BOTH": "env"}
    assert load_local_settings(tmp_path, environ) == ["FROM_FILE", "FLAG", "COUNT"]
    assert environ == {"BOTH": "env", "FROM_FILE": "file", "FLAG": "true", "COUNT": "3"}


def test_local_settings_are_optional_but_validated(tmp_path: Path) -> None:
    assert load_local_settings(tmp_path, {}) == []
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {"NESTED": {"a": 1}}}))
    with pytest.raises(HostConfigError, match="NESTED"):
        load_local_settings(tmp_path, {})


def test_setting_references() -> None:
    assert resolve_setting_refs("%JOBS%", {"JOBS": "jobs-1"}, "f") == "jobs-1"
    assert resolve_setting_refs("%A%-%B%", {"A": "x", "B": "y"}, "f") == "x-y"
    assert resolve_setting_refs("plain", {}, "f") == "plain"
    assert resolve_setting_refs("%BATCH_QUEUE%-poison", {"BATCH_QUEUE": "batch"}, "f") == "batch-poison"
    assert resolve_setting_refs("pre-%Q%-poison", {"Q": "100%"}, "f") == "pre-100%-poison"  # not re-scanned
    with pytest.raises(HostConfigError, match="'MISSING'"):
        resolve_setting_refs("%MISSING%", {}, "f")


def test_storage_connection_strings() -> None:
    assert storage_connection_string(None, {"AzureWebJobsStorage": "cs"}, "f") == "cs"
    assert storage_connection_string("Other", {"AzureWebJobsOther": "cs2"}, "f") == "cs2"
    dev = storage_connection_string(
        "AzureWebJobsStorage", {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}, "f"
    )
    assert dev == DEVELOPMENT_STORAGE
    assert "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1" in dev
    with pytest.raises(HostConfigError, match="'Missing'"):
        storage_connection_string("Missing", {}, "f")


def test_poison_queues_have_no_poison_queue_of_their_own() -> None:
    assert poison_queue_name("jobs") == "jobs-poison"
    assert poison_queue_name("jobs-poison") is None  # as the host's queue extension decides
    assert poison_queue_name("a" * 56) == "a" * 56 + "-poison"  # 63 characters
    assert poison_queue_name("a" * 57) is None  # "-poison" would make it too long


def test_a_queue_trigger_on_a_poison_queue_by_setting_reference() -> None:
    trigger = SimpleNamespace(name="msg", queue_name="%BATCH_QUEUE%-poison", connection="AzureWebJobsStorage")
    function = HostedFunction("batch_poisoned", lambda msg: None, trigger)
    environ = {"BATCH_QUEUE": "batch-jobs", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    listener = QueueListener.for_function(function, QueueOptions(), None, environ)
    assert (listener.queue_name, listener.poison_queue_name) == ("batch-jobs-poison", None)
    with pytest.raises(HostConfigError, match="'BATCH_QUEUE'"):
        QueueListener.for_function(function, QueueOptions(), None, {"AzureWebJobsStorage": "x"})


# --- routes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "prefix", "paths"),
    [
        ("v1/chat/completions", "api", ["/api/v1/chat/completions"]),
        ("/v1//models/", "", ["/v1/models"]),
        ("v1/models/{model_id}", "", ["/v1/models/{model_id}"]),
        ("orders/{id:int}", "", ["/orders/{id:int}"]),
        ("orders/{id:alpha}", "", ["/orders/{id}"]),
        ("orders/{id:int:min(1)}", "", ["/orders/{id:int}"]),
        ("files/{*rest}", "", ["/files/{rest:path}", "/files"]),
        ("items/{id?}", "api", ["/api/items/{id}", "/api/items"]),
        ("a/{b?}/{c?}", "", ["/a/{b}/{c}", "/a/{b}", "/a"]),
        ("{name}.{ext}", "", ["/{name}.{ext}"]),
        ("", "", ["/"]),
    ],
)
def test_route_templates_become_starlette_paths(template: str, prefix: str, paths: list[str]) -> None:
    assert [v.path for v in convert_route(template, prefix)] == paths


def test_default_values_fill_absent_parameters() -> None:
    full, short = convert_route("pages/{page=1}")
    assert (full.path, full.defaults) == ("/pages/{page}", {})
    assert (short.path, short.defaults) == ("/pages", {"page": "1"})


@pytest.mark.parametrize("template", ["a/x{*rest}", "a/{b?}.{c}", "a/{9bad!}"])
def test_unsupported_templates_fail_fast(template: str) -> None:
    with pytest.raises(HostConfigError, match="route"):
        convert_route(template)


def _http_function(name: str, route: str | None, methods: list[str] | None = None) -> HostedFunction:
    async def handler(req: Any) -> None:
        return None

    return HostedFunction(name, handler, SimpleNamespace(name="req", route=route, methods=methods))


def _first_match(routes: list[Any], method: str, path: str) -> tuple[str, dict[str, str]] | None:
    for route in routes:
        params = route.match(method, path)
        if params is not None:
            return route.function.name, params
    return None


def test_routes_are_ordered_by_specificity_not_registration() -> None:
    functions = [
        _http_function("catch_all", "{*path}"),
        _http_function("param", "items/{id}"),
        _http_function("int", "items/{id:int}"),
        _http_function("literal", "items/special"),
        _http_function("post_only", "items/new", ["POST"]),
        _http_function("default_route", None),
    ]
    routes = build_routes(functions, "api")
    assert _first_match(routes, "GET", "/api/items/special") == ("literal", {})
    assert _first_match(routes, "GET", "/API/Items/SPECIAL") == ("literal", {})
    assert _first_match(routes, "GET", "/api/items/7") == ("int", {"id": "7"})  # a string, as in Azure
    assert _first_match(routes, "GET", "/api/items/abc") == ("param", {"id": "abc"})
    assert _first_match(routes, "POST", "/api/items/new") == ("post_only", {})
    assert _first_match(routes, "GET", "/api/items/new") == ("param", {"id": "new"})  # method mismatch
    assert _first_match(routes, "GET", "/api/default_route") == ("default_route", {})
    assert _first_match(routes, "GET", "/api/x/y") == ("catch_all", {"path": "x/y"})
    # Decoded route values may hold a newline (%0A): the route still matches, as in Azure.
    assert _first_match(routes, "GET", "/api/items/a\nb") == ("param", {"id": "a\nb"})
    assert _first_match(routes, "GET", "/api/x\n/y") == ("catch_all", {"path": "x\n/y"})
    assert _first_match(routes, "GET", "/other") is None
    assert routes[-1].function.name == "catch_all"


def test_an_explicit_route_wins_over_a_shortened_optional_one() -> None:
    routes = build_routes([_http_function("optional", "items/{id?}"), _http_function("list", "items")], "")
    assert _first_match(routes, "GET", "/items") == ("list", {})
    assert _first_match(routes, "GET", "/items/3") == ("optional", {"id": "3"})


# --- indexing -----------------------------------------------------------------------------------


def test_indexing_skips_other_triggers_and_refuses_unbindable_parameters() -> None:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="ok")
    async def ok(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("ok")

    @app.queue_trigger(arg_name="msg", queue_name="jobs", connection="AzureWebJobsStorage")
    async def job(msg: func.QueueMessage) -> None:
        return None

    @app.timer_trigger(arg_name="timer", schedule="0 */5 * * * *")
    async def tick(timer: func.TimerRequest) -> None:
        return None

    indexed = index_functions(app)
    http, queues = indexed.http, indexed.queues
    assert [f.name for f in http] == ["ok"]
    assert [(f.name, f.trigger.queue_name) for f in queues] == [("job", "jobs")]

    other = func.FunctionApp()  # get_functions() can be called once per app

    @other.route(route="ctx")
    async def with_context(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return func.HttpResponse("never")

    with pytest.raises(HostConfigError, match=r"with_context.*context"):
        index_functions(other)


# --- responses ----------------------------------------------------------------------------------


def test_return_values_become_responses() -> None:
    text = to_response("hi")
    assert (text.status_code, text.body) == (200, b"hi")
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    data = to_response({"a": [1]})
    assert (data.status_code, json.loads(data.body), data.headers["content-type"]) == (
        200,
        {"a": [1]},
        "application/json",
    )
    assert json.loads(to_response([1, 2]).body) == [1, 2]
    assert to_response(None).status_code == 204
    stream = StreamingResponse(iter([b"x"]))
    assert to_response(stream) is stream  # passed through untouched: no buffering
    with pytest.raises(TypeError):
        to_response(object())


def test_classic_http_response_conversion() -> None:
    response = to_response(func.HttpResponse("made", status_code=201, headers={"X-A": "1"}))
    assert (response.status_code, response.body) == (201, b"made")
    assert response.headers["x-a"] == "1"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    custom = to_response(func.HttpResponse(b"{}", headers={"Content-Type": "application/problem+json"}))
    assert custom.headers.getlist("content-type") == ["application/problem+json"]
    png = to_response(func.HttpResponse(b"\x00", mimetype="image/png"))
    assert png.headers["content-type"] == "image/png"


# --- invocation ---------------------------------------------------------------------------------


async def test_invoke_runs_sync_functions_in_the_thread_pool() -> None:
    def sync(value: int) -> str:
        return threading.current_thread().name

    assert await invoke(sync, {"value": 1}, None) != threading.main_thread().name


async def test_invoke_awaits_wrapped_and_returned_awaitables() -> None:
    async def target(msg: str) -> str:
        return f"got {msg}"

    @functools.wraps(target)
    def sync_wrapper(**kwargs: Any) -> Any:
        return target(**kwargs)  # returns a coroutine

    @functools.wraps(target)
    async def async_wrapper(**kwargs: Any) -> Any:
        return await target(**kwargs)

    assert await invoke(sync_wrapper, {"msg": "a"}, None) == "got a"
    assert await invoke(async_wrapper, {"msg": "b"}, None) == "got b"


async def test_function_timeout() -> None:
    async def slow() -> None:
        await asyncio.Event().wait()  # never set

    async def own_timeout() -> None:
        raise TimeoutError("from the function")

    with pytest.raises(TimeoutError, match="exceeded"):
        await invoke(slow, {}, 0.05)
    with pytest.raises(TimeoutError, match="from the function"):
        await invoke(own_timeout, {}, 10)


# --- timer schedules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        ("00:05:00", "TimeSpan"),
        ("*/5 * * * *", "six fields"),
        ("0 61 * * * *", "not a valid NCRONTAB"),
    ],
)
def test_timer_schedules_are_six_field_ncrontab(schedule, problem):
    from tools.funchost.timers import parse_schedule

    with pytest.raises(HostConfigError, match=problem):
        parse_schedule(schedule, "function 'sweep'")


def test_use_monitor_defaults_to_schedules_of_a_minute_or_more():
    from datetime import UTC, datetime

    from tools.funchost.timers import default_use_monitor

    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert default_use_monitor("0 */5 * * * *", now) is True
    assert default_use_monitor("*/10 * * * * *", now) is False
    assert default_use_monitor("0 0 9 * * MON-FRI", now) is True
