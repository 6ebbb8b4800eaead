"""The agent's tool-calling loop: ask the model, run the tools it calls, until it answers.

The conversation so far is the job's checkpoint: it is saved after every model answer and every
tool result, before the next step, so a resumed run finishes the last turn's tool calls that have
no saved result and never runs one twice.
"""

from __future__ import annotations

import json
from typing import Any

from shared.models.jobs import JobCreate
from shared.models.requests import ChatCompletionCreate
from shared.models.validation import validate_body
from shared.services.files import FileService
from shared.services.jobs.run import Run, Stop
from shared.services.tools import Tool, ToolBlocked, ToolContext, ToolError, ToolSettings

MAX_TOOL_OUTPUT_CHARS = 20_000


class Agent:
    def __init__(
        self, run: Run, spec: JobCreate, tools: dict[str, Tool], files: FileService, settings: ToolSettings
    ) -> None:
        self._run = run
        self._spec = spec  # run.spec, as the agent job's own type
        self._tools = tools
        self._files = files
        self._settings = settings

    async def run(self) -> Any:
        """The agent's final answer; raises Stop when a limit or a cancel ends the run first."""
        run = self._run
        job, spec = run.job, self._spec
        if not job.messages:
            job.messages = first_messages(spec)
        while True:
            await run.check_stop()
            last = job.messages[-1]
            pending = pending_tool_calls(job.messages)
            if pending:  # finish the tool calls of the last model turn, skipping any already saved
                for call in pending:
                    await self._run_tool(call)
                continue
            if last.get("role") == "assistant" and not last.get("tool_calls"):
                return {"output_text": last.get("content") or "", "steps": job.step}
            if job.step >= spec.max_steps:
                raise Stop("incomplete", "max_steps")
            await self._model_step([t.spec() for t in self._tools.values()])

    async def _model_step(self, tool_specs: list[dict[str, Any]]) -> None:
        run = self._run
        job, spec = run.job, self._spec
        number = job.step + 1
        await run.event("step.started", {"step": number, "kind": "model"})
        # Checked as a chat request is, so a conversation that can never be sent fails the job
        # (a 400 as its error) instead of failing every delivery of the message.
        request = validate_body(
            ChatCompletionCreate,
            {"model": spec.model, "messages": job.messages, **({"tools": tool_specs} if tool_specs else {})},
        )
        completion, cost = await run.ask(request)  # as the key is now: a revoked one stops here
        message = {k: v for k, v in completion["choices"][0]["message"].items() if v is not None}
        message.pop("refusal", None)
        job.messages.append(message)
        job.step = number
        run.add_usage(completion, cost)
        job.steps.append(
            {
                "step": number,
                "kind": "model",
                "tool_calls": [c["function"]["name"] for c in message.get("tool_calls", [])],
            }
        )
        await run.checkpoint()
        await run.event("usage", {"step": number, **job.usage})
        await run.event(
            "step.finished",
            {"step": number, "kind": "model", "tool_calls": len(message.get("tool_calls", []))},
        )

    async def _run_tool(self, call: dict[str, Any]) -> None:
        run = self._run
        job = run.job
        name = call["function"]["name"]
        # Files are read as the key is now, and a revoked key runs no more tools.
        context = ToolContext(principal=await run.principal(), files=self._files, settings=self._settings)
        arguments_text = call["function"]["arguments"]
        await run.event("tool.call", {"id": call["id"], "name": name, "arguments": arguments_text})
        status = "ok"
        try:
            arguments = json.loads(arguments_text or "{}")
            if name not in self._tools:
                raise ToolError(f"There is no tool named {name!r}.")
            if not isinstance(arguments, dict):
                raise ToolError("Tool arguments must be a JSON object.")
            output = await self._tools[name].run(arguments, context)
        except ToolBlocked as exc:
            status, output = "blocked", f"error: {exc}"
            await run.event("tool.blocked", {"id": call["id"], "name": name, "reason": exc.reason})
        except (ToolError, json.JSONDecodeError) as exc:
            status, output = "error", f"error: {exc}"
        job.messages.append(
            {"role": "tool", "tool_call_id": call["id"], "content": output[:MAX_TOOL_OUTPUT_CHARS]}
        )
        job.steps.append({"step": job.step, "kind": "tool", "name": name, "status": status})
        await run.checkpoint()  # saved before the next step: never run twice
        await run.event(
            "tool.result", {"id": call["id"], "name": name, "status": status, "output": output[:2000]}
        )


def first_messages(spec: JobCreate) -> list[dict[str, Any]]:
    """The conversation an agent run starts from: its instructions, then its input."""
    messages: list[dict[str, Any]] = []
    if spec.instructions:
        messages.append({"role": "system", "content": spec.instructions})
    if isinstance(spec.input, str):
        messages.append({"role": "user", "content": spec.input})
    else:
        messages.extend(spec.input or [])  # type: ignore[arg-type]
    return messages


def pending_tool_calls(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last assistant turn's tool calls that have no tool message yet."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.get("role") == "assistant":
            answered = {m.get("tool_call_id") for m in messages[index + 1 :] if m.get("role") == "tool"}
            return [c for c in message.get("tool_calls") or [] if c["id"] not in answered]
    return []


def partial_result(messages: list[dict[str, Any]], step: int) -> Any:
    """What a run that stopped early had: the agent's last words, or nothing."""
    for message in reversed(messages):
        if message.get("role") == "assistant" and message.get("content"):
            return {"output_text": message["content"], "steps": step, "partial": True}
    return None
