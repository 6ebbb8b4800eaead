"""The Responses API (`/v1/responses`), served for every model by translating to chat completions.

translate.py  Responses ⇄ chat: input items to messages, settings to chat parameters, a
              completion to output items, usage and the Response object
stream.py     the typed event sequence of a streamed response
"""
