"""A deterministic fake OpenAI-compatible upstream for tests, benchmarks and the local model.

API (also under `/profile/<spec>/v1/...`):
    POST /v1/chat/completions   JSON or SSE (`stream`), honours n, max_tokens /
                                max_completion_tokens, stop, seed, stream_options.include_usage,
                                response_format (json_object / json_schema) and tool_choice
    POST /v1/completions        legacy text completions, JSON or SSE
    POST /v1/embeddings         deterministic unit vectors (8 dims unless `dimensions`),
                                encoding_format float or base64
    GET  /v1/models, /v1/models/{id}
    POST /v1/messages           Anthropic's Messages API, JSON or its SSE events, errors in
                                Anthropic's envelope, `x-api-key` checked: see anthropic_api.py
    POST /v1/responses          OpenAI's Responses API, JSON or its typed SSE events, stateless
                                (also /openai/v1/responses and Azure's /openai/responses):
                                see responses_api.py

The rest of OpenAI's surface (also under `/profile/<spec>/v1/...` and both Azure shapes below);
`surface.py`'s docstring has the details of each answer:
    POST /v1/moderations           keyword-flagged categories, one result per input
    POST /v1/images/generations    `n` 8x8 PNGs as `b64_json` or `url` (GET /files/images/<name>.png)
    POST /v1/audio/transcriptions  multipart, streamed in; json, text, verbose_json, srt or vtt
    POST /v1/audio/speech          a 0.25 s WAV tone (`audio/wav`), streamed in 4 KiB chunks
    POST /v1/rerank                Cohere/vLLM shape, scored by word overlap with the query

Azure OpenAI's URL shapes (also under `/profile/<spec>/openai/...`), answered the same way:
    POST /openai/deployments/{deployment}/chat/completions?api-version=2024-10-21
    POST /openai/deployments/{deployment}/completions?api-version=...
    POST /openai/deployments/{deployment}/embeddings?api-version=...
        `api-version` is required (any non-empty value); without it the answer is Azure's 404
        `{"error": {"code": "404", "message": "Resource not found"}}`. The body needs no `model`
        and one it has is ignored: the deployment is the model answered as (response `model`,
        reply text, `/_control/enqueue` `model` filter).
    POST /openai/v1/chat/completions, /openai/v1/completions, /openai/v1/embeddings
    GET  /openai/v1/models, /openai/v1/models/{id}
        the v1 shape: exactly the /v1 API, `model` in the body, `api-version` optional.
Unknown paths under /openai/ get that same Azure 404; the request log records `deployment`
(None off the deployment routes) and `api_version` (the `api-version` query parameter, or None).

Replies are deterministic: "Fake reply to: <first 60 chars of the last user message>" padded
with filler words (picked by hashing model, messages and seed) to 24 words. A token is a
whitespace-separated word: prompt_tokens counts the words of all message contents,
completion_tokens the words of the reply.

Which `Behaviour` answers a request, first match wins:
    1. a queued script: POST /_control/enqueue {"behaviour": {...}, "times": 1, "model": null}
    2. the path profile: /profile/fault=429,retry_after=2/v1/... (comma-separated key=value
       Behaviour fields, except tool_calls)
    3. the server default (`create_app(default=...)` or the CLI flags)
Unset fields of 1 and 2 fall back to the server default. `fail_first=N` fails only the first N
requests answered by that queued script or profile (with a 500 unless a fault/status is set).
`context_window=N` rejects chat prompts of more than N words with OpenAI's 400
`context_length_exceeded`; `omit_usage=true` sends no usage, as some providers do;
`error_message` sets the text of a `status`/fault error
(e.g. `status=400,error_message=content_policy_violation`).

Credentials, on every API route: `require_api_key=<value>` requires the header
`api-key: <value>`, `require_bearer=<value>` requires `Authorization: Bearer <value>`
(e.g. /profile/require_api_key=k1,require_bearer=t1/openai/deployments/d/chat/completions?api-version=...);
with both set either credential is accepted. Profile values cannot contain a comma. A request
without an accepted credential gets a 401 before anything else (no latency, fault or reply) and
uses up no queued script or `fail_first` count. Under /openai/ it is Azure's envelope,
`{"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong
API endpoint. ..."}}` (or, for a bearer token, "Unauthorized. Access token is missing, invalid,
audience is incorrect (https://cognitiveservices.azure.com), or have expired."); under /v1 the
same message in OpenAI's envelope with code `invalid_api_key`. The message is about the
required credential or, with both required, the one sent (the key if neither was).

Control API (loopback clients only): POST /_control/enqueue, POST /_control/reset,
GET /_control/requests (request log, newest last), GET /_control/health.

Run: `python -m tools.fake_provider --port 4010`.
"""

from .app import create_app
from .behaviour import Behaviour, ToolCall

__all__ = ["Behaviour", "ToolCall", "create_app"]
