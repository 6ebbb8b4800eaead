"""The rest of OpenAI's surface, faked: moderations, image generation, audio and rerank.

    POST /v1/moderations           flags categories by keyword ("kill", "hate", ...), one result per
                                   string (a list of content parts is one input)
    POST /v1/images/generations    `n` flat-colour 8x8 PNGs: `b64_json`, or `url` (served at
                                   GET /files/images/<name>.png); the default is `url`, except for
                                   `gpt-image*` models, which always answer `b64_json` with usage
    POST /v1/audio/transcriptions  multipart, the file read as it streams in; `response_format`
                                   json (usage in seconds, or tokens for `gpt-4o*` models), text,
                                   verbose_json, srt or vtt; a WAV's duration is read from its
                                   header, any other file counts as 32,000 bytes a second
    POST /v1/audio/speech          a 0.25 s sine tone as a 24 kHz 16-bit mono WAV (`audio/wav`;
                                   `pcm` gives the bare samples as `audio/pcm`; the fake speaks
                                   no mp3/opus/aac/flac and answers those with WAV too), sent in
                                   4 KiB chunks `chunk_delay_ms` apart; fault `cut` drops the
                                   connection after `cut_after` chunks
    POST /v1/rerank                Cohere's and vLLM's shape: results by word overlap with the
                                   query, `document` unless `return_documents` is false,
                                   `usage.total_tokens` and `meta.billed_units.search_units`
                                   (one per 100 documents)

Every route also answers under `/profile/<spec>/v1/...`, `/openai/v1/...` and
`/openai/deployments/<deployment>/...`, with the same behaviours, faults and request log as
chat. The log records a transcription's form fields, with the file as
`{"filename", "content_type", "size", "sha256", "seconds"}` instead of its bytes.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import BodyPartReader, web
from aiohttp.web_exceptions import HTTPException
from pydantic import BaseModel, Field, field_validator, model_validator

from .generate import FILLER, count_words, digest
from .media import pcm, png, wav, wav_seconds
from .wire import ApiError, _ApiRequest

if TYPE_CHECKING:
    from .app import Exchange

Responder = Callable[["Exchange", Any], Awaitable[web.StreamResponse]]
Reader = Callable[[web.Request], Awaitable[tuple[Any, ApiError | None]]]
HandlerFactory = Callable[..., Callable[[web.Request], Awaitable[web.StreamResponse]]]

SPEECH_CHUNK_BYTES = 4096
AUDIO_BYTES_PER_SECOND = 32_000  # what a non-WAV upload is taken to hold (16 kHz, 16-bit, mono)
_WAV_HEAD_BYTES = 64 * 1024  # enough for any WAV's header chunks
_FILES_PATH = "/files/images/"
_SIZE = re.compile(r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$")
_WORD = re.compile(r"[a-z0-9]+")

# Category -> phrases that flag it. Categories OpenAI also applies to images are marked.
_KEYWORDS: dict[str, tuple[str, ...]] = {
    "hate": ("hate",),
    "hate/threatening": ("hate and kill",),
    "harassment": ("idiot", "stupid"),
    "harassment/threatening": ("i will find you",),
    "illicit": ("shoplift", "steal"),
    "illicit/violent": ("build a bomb",),
    "self-harm": ("hurt myself",),
    "self-harm/intent": ("i want to hurt myself",),
    "self-harm/instructions": ("how to hurt myself",),
    "sexual": ("explicit",),
    "sexual/minors": ("explicit minors",),
    "violence": ("kill", "attack"),
    "violence/graphic": ("gore",),
}
_IMAGE_CATEGORIES = frozenset(
    {"self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "violence", "violence/graphic"}
)


# --- requests -----------------------------------------------------------------------------


class ModerationRequest(_ApiRequest):
    model: str = "omni-moderation-latest"
    input: str | list[str] | list[dict[str, Any]]

    @model_validator(mode="after")
    def _not_empty(self) -> ModerationRequest:
        if isinstance(self.input, list) and not self.input:
            raise ValueError("'input' must not be empty")
        return self


class ImageRequest(_ApiRequest):
    model: str = "dall-e-2"
    prompt: str = Field(min_length=1, max_length=32_000)
    n: int | None = Field(default=None, ge=1, le=10)
    size: str | None = None
    quality: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None

    @field_validator("size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None and not _SIZE.match(value):
            raise ValueError("must be `auto` or WIDTHxHEIGHT")
        return value


class AudioFile(BaseModel):
    """What the log keeps of an uploaded file."""

    filename: str
    content_type: str | None
    size: int
    sha256: str
    seconds: float | None


class TranscriptionRequest(_ApiRequest):
    file: AudioFile
    language: str | None = None
    prompt: str | None = None
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    timestamp_granularities: list[Literal["word", "segment"]] | None = None


class SpeechRequest(_ApiRequest):
    input: str = Field(min_length=1, max_length=4096)
    voice: str | dict[str, Any]
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] | None = None
    speed: float | None = Field(default=None, ge=0.25, le=4)
    instructions: str | None = Field(default=None, max_length=4096)

    @property
    def stream(self) -> bool:
        """Audio is always sent as it is made, so `fault=cut` cuts it mid-body."""
        return True


class RerankRequest(_ApiRequest):
    query: str = Field(min_length=1)
    documents: list[str | dict[str, Any]] = Field(min_length=1)
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool | None = None


# --- reading a multipart body -------------------------------------------------------------


async def read_form(request: web.Request) -> tuple[Any, ApiError | None]:
    """A `multipart/form-data` body as a dict: fields as strings (`name[]` fields as lists), the
    file as an `AudioFile` dict, hashed as it streams in and never held whole."""
    if request.content_type != "multipart/form-data":
        return None, ApiError(400, "Expected a multipart/form-data body.")
    body: dict[str, Any] = {}
    try:
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader) or not part.name:
                continue
            if part.filename is not None:
                body[part.name] = await _read_file(part)
            elif part.name.endswith("[]"):
                body.setdefault(part.name[:-2], []).append(await part.text())
            else:
                body[part.name] = await part.text()
    except (ValueError, HTTPException, AssertionError) as exc:
        return body, ApiError(400, f"The multipart/form-data body is malformed: {exc}")
    return body, None


async def _read_file(part: BodyPartReader) -> dict[str, Any]:
    sha, size, head = hashlib.sha256(), 0, bytearray()
    while chunk := await part.read_chunk():
        sha.update(chunk)
        size += len(chunk)
        if len(head) < _WAV_HEAD_BYTES:
            head += chunk[: _WAV_HEAD_BYTES - len(head)]
    return {
        "filename": part.filename or "",
        "content_type": part.headers.get("Content-Type"),
        "size": size,
        "sha256": sha.hexdigest(),
        "seconds": wav_seconds(bytes(head)),
    }


# --- answers ------------------------------------------------------------------------------


async def _moderations(exchange: Exchange, req: ModerationRequest) -> web.StreamResponse:
    items: list[Any] = [req.input] if isinstance(req.input, str) else list(req.input)
    if items and isinstance(items[0], dict):
        items = [items]  # content parts together are one input
    body = {
        "id": f"modr-{digest(req.model, req.input)[:24]}",
        "model": req.model,
        "results": [_moderation(item) for item in items],
    }
    return await exchange.send_json(body)


def _moderation(item: str | list[dict[str, Any]]) -> dict[str, Any]:
    if isinstance(item, str):
        text, images = item, False
    else:
        text = " ".join(str(p.get("text") or "") for p in item if p.get("type") == "text")
        images = any(p.get("type") == "image_url" for p in item)
    lowered = text.lower()
    flags = {name: any(k in lowered for k in words) for name, words in _KEYWORDS.items()}
    scores = {
        name: 0.9 if flagged else int(digest(text, name)[:4], 16) / 0xFFFF / 100
        for name, flagged in flags.items()
    }
    applied = {
        name: (["text"] if text else []) + (["image"] if images and name in _IMAGE_CATEGORIES else [])
        for name in flags
    }
    return {
        "flagged": any(flags.values()),
        "categories": flags,
        "category_scores": scores,
        "category_applied_input_types": applied,
    }


async def _images(exchange: Exchange, req: ImageRequest) -> web.StreamResponse:
    token_billed = req.model.startswith("gpt-image")
    kind = "b64_json" if token_billed else req.response_format or "url"
    origin = f"{exchange.request.scheme}://{exchange.request.host}"
    data = []
    for index in range(req.n or 1):
        name = digest(req.model, req.prompt, req.size, req.quality, index)[:32]
        image: dict[str, Any] = (
            {"b64_json": base64.b64encode(png(name)).decode()}
            if kind == "b64_json"
            else {"url": f"{origin}{_FILES_PATH}{name}.png"}
        )
        if req.model.startswith("dall-e-3"):
            image["revised_prompt"] = req.prompt
        data.append(image)
    body: dict[str, Any] = {"created": int(time.time()), "data": data}
    if token_billed:
        prompt_tokens, image_tokens = count_words(req.prompt), 272 * len(data)
        body["output_format"] = req.output_format or "png"
        body["usage"] = {
            "input_tokens": prompt_tokens,
            "output_tokens": image_tokens,
            "total_tokens": prompt_tokens + image_tokens,
            "input_tokens_details": {"text_tokens": prompt_tokens, "image_tokens": 0},
        }
    return await exchange.send_json(body)


async def _image_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return web.Response(body=png(name), content_type="image/png")


async def _transcriptions(exchange: Exchange, req: TranscriptionRequest) -> web.StreamResponse:
    audio = req.file
    seconds = audio.seconds if audio.seconds is not None else round(audio.size / AUDIO_BYTES_PER_SECOND, 2)
    noise = bytes.fromhex(digest(req.model, audio.sha256, req.prompt))
    text = f"Fake transcript of {audio.size} bytes: " + " ".join(FILLER[b % len(FILLER)] for b in noise[:8])
    end = _timestamp(seconds)
    response_format = req.response_format or "json"
    if response_format == "text":
        return await send_bytes(exchange, f"{text}\n".encode(), "text/plain; charset=utf-8")
    if response_format == "srt":
        body = f"1\n00:00:00,000 --> {end.replace('.', ',')}\n{text}\n\n"
        return await send_bytes(exchange, body.encode(), "text/plain; charset=utf-8")
    if response_format == "vtt":
        body = f"WEBVTT\n\n00:00:00.000 --> {end}\n{text}\n\n"
        return await send_bytes(exchange, body.encode(), "text/vtt; charset=utf-8")
    duration_usage = {"type": "duration", "seconds": math.ceil(seconds)}
    if response_format == "json":
        usage: dict[str, Any] = duration_usage
        if req.model.startswith("gpt-4o"):
            audio_tokens, output_tokens = math.ceil(seconds * 10), count_words(text)
            usage = {
                "type": "tokens",
                "input_tokens": audio_tokens,
                "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                "output_tokens": output_tokens,
                "total_tokens": audio_tokens + output_tokens,
            }
        return await exchange.send_json({"text": text, "usage": usage})
    granularities = req.timestamp_granularities or ["segment"]
    verbose: dict[str, Any] = {
        "task": "transcribe",
        "language": req.language or "english",
        "duration": seconds,
        "text": text,
    }
    if "word" in granularities:
        words = text.split()
        step = seconds / len(words)
        verbose["words"] = [
            {"word": word, "start": round(i * step, 3), "end": round((i + 1) * step, 3)}
            for i, word in enumerate(words)
        ]
    if "segment" in granularities:
        verbose["segments"] = [
            {
                "id": 0,
                "seek": 0,
                "start": 0.0,
                "end": seconds,
                "text": text,
                "tokens": [int(b) for b in noise[:8]],
                "temperature": req.temperature or 0.0,
                "avg_logprob": -0.25,
                "compression_ratio": 1.0,
                "no_speech_prob": 0.01,
            }
        ]
    verbose["usage"] = duration_usage
    return await exchange.send_json(verbose)


def _timestamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


async def _speech(exchange: Exchange, req: SpeechRequest) -> web.StreamResponse:
    seed = digest(req.model, req.input, req.voice)
    if req.response_format == "pcm":
        audio, content_type = pcm(seed), "audio/pcm"
    else:
        audio, content_type = wav(seed), "audio/wav"
    behaviour = exchange.behaviour
    cut_after = behaviour.cut_after if behaviour.fault == "cut" else None
    response = web.StreamResponse(headers={**_request_headers(exchange), "Content-Type": content_type})
    exchange.record.status = 200
    try:
        await response.prepare(exchange.request)
        for sent, start in enumerate(range(0, len(audio), SPEECH_CHUNK_BYTES)):
            if sent == cut_after:
                exchange.drop(reset=False)
                return response
            if sent and not await exchange.pause(behaviour.chunk_delay_ms / 1000):
                exchange.drop(reset=False)
                return response
            if sent == 0:
                exchange.record.first_byte_at = time.time()
            await response.write(audio[start : start + SPEECH_CHUNK_BYTES])
        await response.write_eof()
    except ConnectionError:
        pass  # the client hung up mid-body
    return response


async def _rerank(exchange: Exchange, req: RerankRequest) -> web.StreamResponse:
    texts = [d if isinstance(d, str) else str(d.get("text") or "") for d in req.documents]
    query = set(_WORD.findall(req.query.lower()))
    scored = []
    for index, text in enumerate(texts):
        overlap = len(query & set(_WORD.findall(text.lower()))) / (len(query) or 1)
        jitter = int(digest(req.query, text)[:4], 16) / 0xFFFF / 100  # breaks ties, stays below 0.01
        scored.append((round(0.9 * overlap + jitter, 6), index))
    scored.sort(key=lambda item: (-item[0], item[1]))
    results = []
    for score, index in scored[: req.top_n or len(scored)]:
        result: dict[str, Any] = {"index": index, "relevance_score": score}
        if req.return_documents is not False:
            result["document"] = {"text": texts[index]}
        results.append(result)
    tokens = count_words(req.query) + sum(count_words(t) for t in texts)
    body = {
        "id": f"rerank-{digest(req.model, req.query, texts)[:24]}",
        "model": req.model,
        "results": results,
        "usage": {"total_tokens": tokens},
        "meta": {"billed_units": {"search_units": math.ceil(len(texts) / 100)}},
    }
    return await exchange.send_json(body)


# --- sending ------------------------------------------------------------------------------


def _request_headers(exchange: Exchange) -> dict[str, str]:
    return {"x-request-id": f"req_{exchange.record.id}"}


async def send_bytes(exchange: Exchange, data: bytes, content_type: str) -> web.StreamResponse:
    """Write a complete non-JSON answer now, as `Exchange.send_json` writes JSON."""
    response = web.Response(body=data, headers={**_request_headers(exchange), "Content-Type": content_type})
    exchange.record.status = 200
    exchange.record.first_byte_at = time.time()
    try:
        await response.prepare(exchange.request)
        await response.write_eof()
    except ConnectionError:
        pass
    return response


# --- routes -------------------------------------------------------------------------------

ROUTES: list[tuple[str, type[BaseModel], Responder, bool]] = [  # (path, request, answer, multipart)
    ("/moderations", ModerationRequest, _moderations, False),
    ("/images/generations", ImageRequest, _images, False),
    ("/audio/transcriptions", TranscriptionRequest, _transcriptions, True),
    ("/audio/speech", SpeechRequest, _speech, False),
    ("/rerank", RerankRequest, _rerank, False),
]


def add_routes(app: web.Application, api_handler: HandlerFactory) -> None:
    """Register the routes above under every prefix chat has; `api_handler` builds each handler
    (`app._api_handler`), reading multipart bodies with `read_form`."""
    prefixes = (("/v1", False), ("/openai/v1", True), ("/openai/deployments/{deployment}", True))
    for root in ("", "/profile/{profile}"):
        for prefix, azure in prefixes:
            for path, request_model, respond, multipart in ROUTES:
                extra = {"read": read_form} if multipart else {}
                handler = api_handler(request_model, respond, azure=azure, **extra)
                app.router.add_post(root + prefix + path, handler)
    app.router.add_get(_FILES_PATH + "{name}.png", _image_file)
