"""Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`) for every model.

api.py        MessagesService: a request through the chat service (translated), or natively to
              an Anthropic deployment
translate.py  Messages ⇄ chat completions: requests and answers
stream.py     a chat stream as Anthropic's stream events
"""

from shared.services.messages.api import MessageOutcome, MessagesService, MessageStream

__all__ = ["MessageOutcome", "MessageStream", "MessagesService"]
