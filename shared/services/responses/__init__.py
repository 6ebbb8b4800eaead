"""The Responses API (`/v1/responses`), served for every model by translating to chat completions,
or passed through to deployments the model file says serve `/responses` themselves.

api.py           ResponsesService: create (JSON, stream, background), get and follow, cancel,
                 delete, input items
conversation.py  the checks before a response, and its chat request: the conversation before
                 it (previous_response_id's chain) trimmed to the model, then its input
passthrough.py   the request and answer of a deployment that serves /responses itself
translate.py     Responses ⇄ chat: items to messages, settings to chat parameters, a
                 completion to output items and usage, the Response object
stream.py        the typed event sequence of a streamed response
store.py         stored responses in Cosmos (and large inputs in Blob)
background.py    what a background response's job step needs (jobs/response_step.py runs it)
"""

from shared.services.responses.api import Created, ResponsesService

__all__ = ["Created", "ResponsesService"]
