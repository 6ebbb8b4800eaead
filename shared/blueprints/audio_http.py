"""POST /v1/audio/transcriptions (a multipart upload, spooled as it arrives) and
POST /v1/audio/speech (the provider's audio, streamed back with its content type)."""

from typing import Any

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response, StreamingResponse

from shared.blueprints._contract import BYTES as AUDIO
from shared.blueprints._contract import TEXT, Operation, Reply
from shared.blueprints._http import (
    RequestContext,
    declared_length,
    endpoint,
    json_response,
    read_json,
    served_headers,
)
from shared.blueprints._multipart import MultipartUpload
from shared.blueprints._spool import spooled_file
from shared.errors import PayloadTooLargeError
from shared.models.audio import SpeechCreate, TranscriptionCreate
from shared.models.validation import validate_body

bp = func.Blueprint()
_TEXT_TYPES = {"vtt": "text/vtt; charset=utf-8"}  # text and srt: text/plain


@bp.route(route="v1/audio/transcriptions", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Transcription of an uploaded audio file",
        body=TranscriptionCreate,
        form_file="file",
        calls_model=True,
        returns={
            200: Reply(
                "openai.types.audio:Transcription",
                description="JSON, or text for `text`, `srt` and `vtt`",
                also={"text/plain": TEXT, "text/vtt": TEXT},
            )
        },
    )
)
async def audio_transcriptions(req: Request, ctx: RequestContext) -> Response:
    limit = ctx.container.settings.max_upload_bytes
    if declared_length(req) > limit:
        raise PayloadTooLargeError(f"The upload is larger than the {limit}-byte limit.")
    form = MultipartUpload(req.stream(), req.headers.get("content-type", ""), max_bytes=limit)
    transcriptions, call = await ctx.container.transcriptions(), ctx.call(req)
    if await form.until_file() and form.fields.get("model"):
        transcriptions.check(form.fields["model"], call)
    async with spooled_file(form) as audio:
        request = validate_body(TranscriptionCreate, form_body(form.field_list))
        answer = await transcriptions.create(request, audio, call)
    headers = served_headers(answer.served_by)
    if request.answers_json:
        return json_response(answer.body, headers=headers)
    media_type = _TEXT_TYPES.get(request.response_format or "", "text/plain; charset=utf-8")
    return Response(answer.body["text"], media_type=media_type, headers=headers)


@bp.route(route="v1/audio/speech", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@endpoint(
    contract=Operation(
        "Speech: the provider's audio, streamed",
        body=SpeechCreate,
        calls_model=True,
        returns={200: Reply(AUDIO, media="audio/*", description="Audio in `response_format`")},
        example={"model": "cirrus-speech", "input": "hello", "voice": "alloy"},
    )
)
async def audio_speech(req: Request, ctx: RequestContext) -> Response:
    request = validate_body(SpeechCreate, await read_json(req, ctx.container.settings.max_body_bytes))
    speech = await (await ctx.container.speech()).open(request, ctx.call(req))
    return StreamingResponse(
        speech.chunks, media_type=speech.content_type, headers=served_headers(speech.served_by)
    )


def form_body(fields: list[tuple[str, str]]) -> dict[str, Any]:
    """Form fields as a request body: `name[]`, or a name sent more than once, is a list."""
    body: dict[str, Any] = {}
    for name, value in fields:
        key = name.removesuffix("[]")
        if name.endswith("[]"):
            body.setdefault(key, [])
        if key in body:
            previous = body[key]
            body[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            body[key] = value
    return body
