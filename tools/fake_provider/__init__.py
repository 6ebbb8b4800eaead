"""A deterministic fake OpenAI-compatible upstream for tests, benchmarks and the local model.

API (also under `/profile/<spec>/v1/...`):
    POST /v1/chat/completions   JSON or SSE (`stream`), honours n, max_tokens /
                                max_completion_tokens, stop, seed, stream_options.include_usage,
                                response_format (json_object / json_schema) and tool_choice
    POST /v1/completions        legacy text completions, JSON or SSE
    POST /v1/embeddings         deterministic unit vectors (8 dims unless `dimensions`),
                                encoding_format float or base64
    GET  /v1/models, /v1/models/{id}

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

Control API (loopback clients only): POST /_control/enqueue, POST /_control/reset,
GET /_control/requests (request log, newest last), GET /_control/health.

Run: `python -m tools.fake_provider --port 4010`.
"""

from .app import create_app
from .behaviour import Behaviour, ToolCall

__all__ = ["Behaviour", "ToolCall", "create_app"]
