"""Smoke test: the app indexes as the Functions host will see it, every route and binding."""

import functools
import subprocess
import sys
from pathlib import Path

import azure.functions as func

ROOT = Path(__file__).resolve().parents[2]
EXPECTED_HTTP = {
    "health": ("health", ["GET"]),
    "health_ready": ("health/ready", ["GET"]),
    "list_models": ("v1/models", ["GET"]),
    "get_model": ("v1/models/{*model}", ["GET"]),
    "chat_completions": ("v1/chat/completions", ["POST"]),
    "create_message": ("v1/messages", ["POST"]),
    "count_message_tokens": ("v1/messages/count_tokens", ["POST"]),
    "completions": ("v1/completions", ["POST"]),
    "embeddings": ("v1/embeddings", ["POST"]),
    "moderations": ("v1/moderations", ["POST"]),
    "image_generations": ("v1/images/generations", ["POST"]),
    "audio_transcriptions": ("v1/audio/transcriptions", ["POST"]),
    "audio_speech": ("v1/audio/speech", ["POST"]),
    "rerank": ("v1/rerank", ["POST"]),
    "create_response": ("v1/responses", ["POST"]),
    "get_response": ("v1/responses/{response_id}", ["GET"]),
    "delete_response": ("v1/responses/{response_id}", ["DELETE"]),
    "cancel_response": ("v1/responses/{response_id}/cancel", ["POST"]),
    "response_input_items": ("v1/responses/{response_id}/input_items", ["GET"]),
    "create_session": ("v1/sessions", ["POST"]),
    "list_sessions": ("v1/sessions", ["GET"]),
    "get_session": ("v1/sessions/{session_id}", ["GET"]),
    "delete_session": ("v1/sessions/{session_id}", ["DELETE"]),
    "usage": ("v1/usage", ["GET"]),
    "usage_series": ("v1/usage/series", ["GET"]),
    "usage_records": ("v1/usage/records", ["GET"]),
    "create_key": ("v1/keys", ["POST"]),
    "list_keys": ("v1/keys", ["GET"]),
    "get_key": ("v1/keys/{key_id}", ["GET"]),
    "update_key": ("v1/keys/{key_id}", ["PATCH"]),
    "rotate_key": ("v1/keys/{key_id}/rotate", ["POST"]),
    "revoke_key": ("v1/keys/{key_id}", ["DELETE"]),
    "azure_chat_completions": ("openai/deployments/{deployment}/chat/completions", ["POST"]),
    "azure_completions": ("openai/deployments/{deployment}/completions", ["POST"]),
    "azure_embeddings": ("openai/deployments/{deployment}/embeddings", ["POST"]),
    "create_policy": ("v1/policies", ["POST"]),
    "list_policies": ("v1/policies", ["GET"]),
    "get_policy": ("v1/policies/{policy_id}", ["GET"]),
    "update_policy": ("v1/policies/{policy_id}", ["PATCH"]),
    "delete_policy": ("v1/policies/{policy_id}", ["DELETE"]),
    "list_audit": ("v1/audit", ["GET"]),
    "upload_file": ("v1/files", ["POST"]),
    "list_files": ("v1/files", ["GET"]),
    "get_file": ("v1/files/{file_id}", ["GET"]),
    "file_content": ("v1/files/{file_id}/content", ["GET"]),
    "delete_file": ("v1/files/{file_id}", ["DELETE"]),
    "create_batch": ("v1/batches", ["POST"]),
    "list_batches": ("v1/batches", ["GET"]),
    "get_batch": ("v1/batches/{batch_id}", ["GET"]),
    "cancel_batch": ("v1/batches/{batch_id}/cancel", ["POST"]),
    "create_job": ("v1/jobs", ["POST"]),
    "list_jobs": ("v1/jobs", ["GET"]),
    "get_job": ("v1/jobs/{job_id}", ["GET"]),
    "cancel_job": ("v1/jobs/{job_id}/cancel", ["POST"]),
    "job_events": ("v1/jobs/{job_id}/events", ["GET"]),
    "job_events_token": ("v1/jobs/{job_id}/events/token", ["POST"]),
    "openapi_document": ("openapi.json", ["GET"]),
    "console_page": ("console", ["GET"]),
    "console_file": ("console/{*path}", ["GET"]),
    "create_console_session": ("console/api/session", ["POST"]),
    "get_console_session": ("console/api/session", ["GET"]),
    "delete_console_session": ("console/api/session", ["DELETE"]),
    "unknown_route": ("v1/{*path}", ["GET", "POST", "PUT", "PATCH", "DELETE"]),
}
EXPECTED_QUEUES = {
    "store_parked_usage": ("%USAGE_QUEUE%", "AzureWebJobsStorage"),
    "run_batch": ("%BATCH_QUEUE%", "AzureWebJobsStorage"),
    "fail_poisoned_batch_work": ("%BATCH_QUEUE%-poison", "AzureWebJobsStorage"),
    "run_job": ("%JOBS_QUEUE%", "AzureWebJobsStorage"),
    "record_poisoned_job": ("%JOBS_QUEUE%-poison", "AzureWebJobsStorage"),
}
EXPECTED_TIMERS = {"sweep": "%CIRRUS_SWEEP_SCHEDULE%"}


@functools.cache  # get_functions() refuses to run twice on one app (it re-checks name uniqueness)
def functions():
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def test_every_function_is_registered_with_its_route_methods_and_auth():
    found = functions()
    assert set(found) == set(EXPECTED_HTTP) | set(EXPECTED_QUEUES) | set(EXPECTED_TIMERS)
    for name, (route, methods) in EXPECTED_HTTP.items():
        trigger = found[name].get_trigger()
        assert trigger.get_binding_name() == "httpTrigger"
        assert trigger.route == route
        assert [m.value for m in trigger.methods] == methods
        # Cirrus checks keys itself; host-level function keys would break OpenAI clients.
        assert trigger.auth_level == func.AuthLevel.ANONYMOUS


def test_queue_triggers_name_their_settings():
    found = functions()
    for name, (queue, connection) in EXPECTED_QUEUES.items():
        trigger = found[name].get_trigger()
        assert trigger.queue_name == queue
        assert trigger.connection == connection


def test_the_sweeper_is_a_monitored_timer_on_a_setting():
    trigger = functions()["sweep"].get_trigger()
    assert trigger.get_binding_name() == "timerTrigger"
    assert trigger.schedule == EXPECTED_TIMERS["sweep"]
    assert trigger.use_monitor is True and trigger.run_on_startup is False
    fn = functions()["sweep"].get_user_function()
    assert fn.__annotations__["timer"] is func.TimerRequest


def test_functions_take_the_types_the_host_binds():
    from fastapi import Request

    for name in [*EXPECTED_HTTP, *EXPECTED_QUEUES]:
        fn = functions()[name].get_user_function()
        assert not hasattr(fn, "__wrapped__"), f"{name}: the host would index the wrong signature"
        if name in EXPECTED_QUEUES:
            assert fn.__annotations__["msg"] is func.QueueMessage
            continue
        assert fn.__annotations__["req"] is Request, name


def test_importing_the_app_does_not_import_litellm_or_the_openai_sdk():
    # A fresh interpreter: other tests in this process may have imported LiteLLM already. The
    # container too: it builds every service (Responses included), none of which needs the SDK.
    probe = (
        "import function_app, shared.container, sys; "
        "assert 'litellm' not in sys.modules, 'litellm imported'; "
        "assert 'openai' not in sys.modules, 'openai imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_console_ships_in_the_package():
    """`.funcignore` lists what is not deployed; the console's static files must not be among it."""
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".funcignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert not ignored & {"console", "console/*", "console/**", "*.html", "*.js", "*.css"}
    assert (ROOT / "console" / "index.html").is_file()
