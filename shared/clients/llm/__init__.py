"""The model data plane: Cirrus's router in front of two adapters.

router.py          ModelRouter: retries, fallbacks, cooldowns, strategies (LLMRouter protocol)
deployments.py     the model file (LiteLLM's format) read into deployments and settings
selection.py       deployment health, per-deployment rpm/tpm, routing strategies
openai_wire.py     the native adapter for OpenAI-wire providers (openai/, azure/)
litellm_adapter.py the LiteLLM adapter for every other provider (the only `litellm` importer)
anthropic_wire.py  the native adapter for Anthropic's Messages API (anthropic/ deployments)
relay.py           streams relayed chunk by chunk (the loop every wire's relay shares)
transport.py       the native adapters' pooled HTTP and its failures
messages_relay.py  Anthropic streams relayed event by event
responses_relay.py Responses streams of deployments that serve /responses, relayed event by event
byte_relay.py      binary answers (speech) relayed block by block
errors.py          provider failures: the client's error and the router's facts
shapes.py          OpenAI's wire shapes, from LiteLLM's objects or compatible servers
surface_shapes.py  the same for moderations, images, transcriptions and rerank
capabilities.py    which deployments serve those surfaces (LiteLLM's `mode`)
spans.py           one span per provider attempt
price_map.py       prices and context windows from LiteLLM's shipped price map, no import
unit_prices.py     prices per image, second, character and search unit
tokens.py          token counts with tiktoken
"""

from shared.clients.llm.router import ModelRouter

__all__ = ["ModelRouter"]
