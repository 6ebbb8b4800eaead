"""Cirrus: an OpenAI-compatible LLM gateway and durable job runner on Azure Functions.

This file only builds the app and registers one Blueprint per surface; read the API here.
"""

import azure.functions as func

from shared import worker_http
from shared.blueprints import (
    audio_http,
    audit_http,
    azure_openai_http,
    batch_queue,
    batches_http,
    chat_http,
    completions_http,
    console_http,
    fallback_http,
    files_http,
    health_http,
    images_http,
    jobs_http,
    jobs_queue,
    keys_http,
    messages_http,
    models_http,
    moderations_http,
    openapi_http,
    policies_http,
    rerank_http,
    responses_http,
    sessions_http,
    sweeper_timer,
    usage_http,
    usage_queue,
)

# The worker's HTTP server (FastAPI) must not answer /openapi.json, /docs or /redoc itself.
worker_http.serve_only_functions()

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

app.register_blueprint(health_http.bp)  # GET /health, /health/ready
app.register_blueprint(models_http.bp)  # GET /v1/models, /v1/models/{model}
app.register_blueprint(chat_http.bp)  # POST /v1/chat/completions
app.register_blueprint(messages_http.bp)  # POST /v1/messages, /v1/messages/count_tokens (Anthropic's API)
app.register_blueprint(completions_http.bp)  # POST /v1/completions, /v1/embeddings
app.register_blueprint(azure_openai_http.bp)  # POST /openai/deployments/{deployment}/chat/completions & co.
app.register_blueprint(moderations_http.bp)  # POST /v1/moderations
app.register_blueprint(images_http.bp)  # POST /v1/images/generations
app.register_blueprint(audio_http.bp)  # POST /v1/audio/transcriptions (multipart), /v1/audio/speech
app.register_blueprint(rerank_http.bp)  # POST /v1/rerank
app.register_blueprint(responses_http.bp)  # /v1/responses, /v1/responses/{response_id}, /cancel, /input_items
app.register_blueprint(sessions_http.bp)  # /v1/sessions, /v1/sessions/{session_id}
app.register_blueprint(usage_http.bp)  # GET /v1/usage, /v1/usage/series, /v1/usage/records (JSON or CSV)
app.register_blueprint(keys_http.bp)  # /v1/keys, /v1/keys/{key_id}, /v1/keys/{key_id}/rotate (admin)
app.register_blueprint(
    policies_http.bp
)  # /v1/policies, /v1/policies/{policy_id}: Entra callers' limits (admin)
app.register_blueprint(audit_http.bp)  # GET /v1/audit: every admin action (admin)
app.register_blueprint(files_http.bp)  # /v1/files, /v1/files/{file_id}, /v1/files/{file_id}/content
app.register_blueprint(batches_http.bp)  # /v1/batches, /v1/batches/{batch_id}, /v1/batches/{batch_id}/cancel
app.register_blueprint(batch_queue.bp)  # queues %BATCH_QUEUE% and its poison queue: batch work
app.register_blueprint(jobs_http.bp)  # /v1/jobs, /v1/jobs/{job_id}, .../cancel, .../events (SSE)
app.register_blueprint(jobs_queue.bp)  # queues %JOBS_QUEUE% and its poison queue: agent and analysis runs
app.register_blueprint(usage_queue.bp)  # queue %USAGE_QUEUE%: parked usage records
app.register_blueprint(sweeper_timer.bp)  # timer %CIRRUS_SWEEP_SCHEDULE%: re-drives stuck batches and jobs
app.register_blueprint(console_http.bp)  # GET /console, /console/{*path}; /console/api/session (sign-in)
app.register_blueprint(openapi_http.bp)  # GET /openapi.json: the API contract, built from the routes above
app.register_blueprint(fallback_http.bp)  # any other /v1 path: OpenAI's 404 envelope
