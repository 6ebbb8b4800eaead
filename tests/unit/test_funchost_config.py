"""tools.funchost without servers: host.json and settings parsing, routes, responses, invocation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from tools.funchost.channel import FunctionMetadata, WorkerChannel
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
from tools.funchost.http import build_routes, compile_route
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


def _function(name: str, trigger: dict[str, Any]) -> FunctionMetadata:
    """A function as the worker's metadata describes it: the trigger's raw binding."""
    return FunctionMetadata(f"id-{name}", name, [{"direction": "IN", **trigger}], None)


def test_a_queue_trigger_on_a_poison_queue_by_setting_reference() -> None:
    trigger = {
        "type": "queueTrigger",
        "name": "msg",
        "queueName": "%BATCH_QUEUE%-poison",
        "connection": "AzureWebJobsStorage",
    }
    function = _function("batch_poisoned", trigger)
    channel = cast(WorkerChannel, None)
    environ = {"BATCH_QUEUE": "batch-jobs", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    listener = QueueListener.for_function(function, channel, QueueOptions(), None, environ)
    assert (listener.queue_name, listener.poison_queue_name) == ("batch-jobs-poison", None)
    with pytest.raises(HostConfigError, match="'BATCH_QUEUE'"):
        QueueListener.for_function(function, channel, QueueOptions(), None, {"AzureWebJobsStorage": "x"})


# --- routes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "prefix", "path"),
    [
        ("v1/chat/completions", "api", "/api/v1/chat/completions"),
        ("/v1//models/", "", "/v1/models"),
        ("v1/models/{*model}", "", "/v1/models/{*model}"),
        ("v1/keys/{key_id}/rotate", "", "/v1/keys/{key_id}/rotate"),
        ("", "", "/"),
    ],
)
def test_route_templates_cirrus_uses(template: str, prefix: str, path: str) -> None:
    assert compile_route(template, prefix)[0] == path


@pytest.mark.parametrize(
    "template",
    [
        "orders/{id:int}",
        "items/{id?}",
        "pages/{page=1}",
        "a/x{*rest}",
        "{name}.{ext}",
        "a/{*rest}/b",
        "a/{9bad!}",
    ],
)
def test_templates_beyond_literals_parameters_and_a_final_catch_all_fail_fast(template: str) -> None:
    with pytest.raises(HostConfigError, match="route"):
        compile_route(template, "")


def _http_function(name: str, route: str | None, methods: list[str] | None = None) -> FunctionMetadata:
    trigger: dict[str, Any] = {
        "type": "httpTrigger",
        "name": "req",
        "methods": methods,
        "authLevel": "ANONYMOUS",
    }
    if route is not None:
        trigger["route"] = route
    return _function(name, trigger)


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
        _http_function("literal", "items/special"),
        _http_function("post_only", "items/new", ["POST"]),
        _http_function("default_route", None),
        _function("a_queue", {"type": "queueTrigger", "name": "msg", "queueName": "q"}),
    ]
    routes = build_routes(functions, "api")
    assert _first_match(routes, "GET", "/api/items/special") == ("literal", {})
    assert _first_match(routes, "GET", "/API/Items/SPECIAL") == ("literal", {})
    assert _first_match(routes, "GET", "/api/items/abc") == ("param", {"id": "abc"})
    assert _first_match(routes, "POST", "/api/items/new") == ("post_only", {})
    assert _first_match(routes, "GET", "/api/items/new") == ("param", {"id": "new"})  # method mismatch
    assert _first_match(routes, "GET", "/api/default_route") == ("default_route", {})
    assert _first_match(routes, "GET", "/api/x/y") == ("catch_all", {"path": "x/y"})
    assert _first_match(routes, "GET", "/api") == ("catch_all", {})  # a catch-all also matches nothing
    # Decoded route values may hold a newline (%0A): the route still matches, as in Azure.
    assert _first_match(routes, "GET", "/api/items/a\nb") == ("param", {"id": "a\nb"})
    assert _first_match(routes, "GET", "/api/x\n/y") == ("catch_all", {"path": "x\n/y"})
    assert _first_match(routes, "GET", "/other") is None
    assert [r.function.name for r in routes][-1] == "catch_all"
    assert "a_queue" not in [r.function.name for r in routes]


# --- invocation requests ------------------------------------------------------------------------


def test_queue_trigger_metadata_is_what_the_storage_extension_sends() -> None:
    from datetime import UTC, datetime

    from azure.storage.queue import QueueMessage as StorageMessage

    from tools.funchost.queues import _payload, _trigger_metadata

    message = StorageMessage(content="x")
    message.id, message.pop_receipt, message.dequeue_count = "m-1", "r-1", 3
    message.inserted_on = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    metadata = _trigger_metadata(message)
    assert metadata["Id"].string == "m-1" and metadata["PopReceipt"].string == "r-1"
    assert json.loads(metadata["DequeueCount"].json) == 3
    assert json.loads(metadata["InsertionTime"].json) == "2026-11-30T09:00:00+00:00"
    assert "ExpirationTime" not in metadata  # unknown: left out, not sent empty
    assert _payload(b"text").string == "text"
    assert _payload(b"\xff\xfe").bytes == b"\xff\xfe"  # not UTF-8: bytes, as the extension would


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
