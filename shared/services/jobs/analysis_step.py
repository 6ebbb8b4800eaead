"""An analysis job's model calls, each a checkpointed step, and `AnalysisRunner`, which runs the
task itself (shared/services/analysis.py).

The model's answers are the checkpoint (`job.calls`): a resumed run replays the saved answers in
order, without asking again, and goes on from the first call that has none.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from shared.errors import InvalidRequestError
from shared.models.jobs import JobCreate
from shared.models.requests import ChatCompletionCreate
from shared.models.validation import validate_body
from shared.services.auth import Principal
from shared.services.files import FileService
from shared.services.jobs.run import Run


async def run_analysis(run: Run, analysis: Any) -> Any:
    """The analysis task's result, its model calls made (or replayed) as checkpointed steps."""
    if analysis is None:
        raise InvalidRequestError("Analysis jobs are not available.")
    job, spec = run.job, run.spec
    replay = list(job.calls)

    async def complete(messages: list[dict[str, Any]], response_format: dict[str, Any]) -> str:
        index = len(job.calls) - len(replay)
        if replay:  # answered before a restart: the same answer, no new call
            return replay.pop(0)
        await run.check_stop()
        number = job.step + 1
        await run.event("step.started", {"step": number, "kind": "model"})
        body = {"model": spec.model, "messages": messages, "response_format": response_format}
        request = validate_body(ChatCompletionCreate, body)
        completion, cost = await run.ask(request)  # as the key is now, at every call
        text = completion["choices"][0]["message"].get("content") or ""
        job.calls.append(text)
        job.step = number
        run.add_usage(completion, cost)
        job.steps.append({"step": number, "kind": "model", "call": index})
        await run.checkpoint()
        await run.event("usage", {"step": number, **job.usage})
        await run.event("step.finished", {"step": number, "kind": "model"})
        return text

    return await analysis.run(spec, await run.principal(), complete)


class AnalysisRunner:
    """Analysis jobs: the task's input (an uploaded file loaded if named), then `run_analysis`."""

    def __init__(
        self,
        files: FileService,
        max_input_tokens: Callable[[str], Awaitable[int | None]],
        *,
        max_file_bytes: int,
    ) -> None:
        self._files = files
        self._max_input_tokens = max_input_tokens
        self._max_file_bytes = max_file_bytes

    def check_input(self, task: str | None, data: Any) -> None:
        from shared.services import analysis  # noqa: PLC0415 - a large module, for analysis jobs only

        try:
            analysis.TASKS[str(task)].input_model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in ("input", *first["loc"]))
            raise InvalidRequestError(f"Invalid value for '{where}': {first['msg']}", param=where) from None

    async def run(self, spec: JobCreate, principal: Principal, complete: Any) -> Any:
        from shared.services import analysis  # noqa: PLC0415

        task = str(spec.task)
        data: Any = dict(spec.input or {})  # type: ignore[arg-type]
        if data.get("file_id"):
            record = await self._files.load(principal, str(data["file_id"]))
            content = bytearray()
            async for chunk in self._files.read(record):
                content += chunk
                if len(content) > self._max_file_bytes:
                    raise InvalidRequestError(
                        f"The file is larger than the {self._max_file_bytes}-byte limit for analysis.",
                        param="input.file_id",
                    )
            data = analysis.load_file(task, data, bytes(content), filename=record.filename)
        result = await analysis.run_analysis(
            task, data, complete, max_input_tokens=await self._max_input_tokens(spec.model)
        )
        return result.output.model_dump(mode="json")
