"""A response's chat request: the checks before it, and its conversation trimmed to the model.

The conversation is the earlier responses' items (input then output, oldest first), then this
request's input, after `instructions` as a system message. Unless `truncation` is `disabled`, the
earlier turns are trimmed to the model's context window as sessions are (oldest whole turns
first; system messages and this request's input always stay; counted with the router's
tokenizer). With `disabled`, all of it is sent and the provider decides (OpenAI answers a 400).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.clients.protocols import LLMRouter
from shared.errors import InvalidRequestError
from shared.models.requests import ChatCompletionCreate
from shared.models.responses import FunctionCallItem, FunctionCallOutputItem, ResponseCreate, ResponseRecord
from shared.models.validation import validate_body
from shared.services.auth import Principal
from shared.services.calls import check_model
from shared.services.model_catalog import ModelCatalog
from shared.services.responses import translate
from shared.services.sessions import fit_to_context

# Stands in for a stored response's input when its settings are read back (the input itself is
# stored as items, not in `request`).
_STORED_INPUT = "(stored)"


class Conversation:
    def __init__(self, llm: LLMRouter, catalog: ModelCatalog) -> None:
        self._llm = llm
        self._catalog = catalog

    def check(self, request: ResponseCreate, principal: Principal) -> None:
        """404 for a model not served, 403 for one the key may not use, 400 for what the model
        cannot do: an output cap over its limit, function tools on a model without tool calling
        (as the model file or the price map says), a tool choice naming no tool."""
        check_model(
            self._catalog,
            self._llm,
            principal,
            request.model,
            output_cap=request.max_output_tokens,
            cap_param="max_output_tokens",
            tools=bool(request.tools),
        )
        choice = request.tool_choice
        names = {tool.name for tool in request.tools or []}
        if choice is not None and not isinstance(choice, str) and choice.type == "function":
            if choice.name not in names:
                raise InvalidRequestError(
                    f"Tool choice '{choice.name}' not found in 'tools' parameter.", param="tool_choice"
                )
        elif choice == "required" and not names:
            raise InvalidRequestError("Tool choice 'required' needs 'tools'.", param="tool_choice")

    def chat_request(
        self,
        request: ResponseCreate,
        history: Sequence[Mapping[str, Any]],
        items: Sequence[Mapping[str, Any]],
        *,
        stream: bool = False,
    ) -> ChatCompletionCreate:
        """The chat completion request for `request`, after the conversation `history` (stored
        items), its own input being `items`."""
        before = len(translate.to_messages(history))
        messages = translate.to_messages([*history, *items])
        earlier = translate.system_message(request.instructions) + messages[:before]
        new = messages[before:]
        if request.truncation == "disabled":
            conversation = earlier + new
        else:
            limits = self._llm.limits(request.model)
            budget = limits.max_input_tokens and limits.max_input_tokens - (request.max_output_tokens or 0)
            conversation = fit_to_context(
                earlier, new, budget, lambda m: self._llm.count_tokens(request.model, m)
            )
        params = translate.chat_params(request, conversation, self._llm.features(request.model))
        if stream:
            params["stream"] = True
        return validate_body(ChatCompletionCreate, params)


def check_call_outputs(request: ResponseCreate, history: Sequence[Mapping[str, Any]]) -> None:
    """400 for a `function_call_output` that answers no function call before it (in the input or
    the conversation it continues), as OpenAI answers: a chat provider would refuse the lone tool
    message in its own words, or (some local servers) answer as if it were not there."""
    made = {item.get("call_id") for item in history if item.get("type") == "function_call"}
    for index, item in enumerate(request.items()):
        if isinstance(item, FunctionCallItem):
            made.add(item.call_id)
        elif isinstance(item, FunctionCallOutputItem) and item.call_id not in made:
            raise InvalidRequestError(
                f"No tool call found for function call output with call_id {item.call_id}.",
                param=f"input[{index}]",
            )


def settings_of(record: ResponseRecord) -> ResponseCreate:
    """The create request a stored response was made with, its input left out."""
    return ResponseCreate.model_validate({**record.request, "input": _STORED_INPUT})
