"""End to end through the official SDK: moderations, image generation, transcriptions, speech and
rerank (httpx: the SDK has none), their usage in their own units, and their errors."""

from __future__ import annotations

import io
import struct
import time
import wave

import httpx
import openai
import pytest

from tests.openapi import assert_matches


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def tone_wav(seconds: float = 1.0, rate: int = 16_000) -> bytes:
    """A silent-ish mono 16-bit WAV of `seconds`, as a client would upload it."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(rate)
        clip.writeframes(struct.pack("<h", 0) * int(seconds * rate))
    return buffer.getvalue()


def usage_by_model(stack, key: str, models: set[str], timeout: float = 20.0) -> dict[str, dict]:
    """The key's usage grouped by model, once every model in `models` has a record."""
    deadline = time.monotonic() + timeout
    while True:
        body = httpx.get(
            f"{stack.base_url}/v1/usage", headers=bearer(key), params={"group_by": "model"}
        ).json()
        groups = {g["group"]: g for g in body["data"]}
        if models <= set(groups) or time.monotonic() > deadline:
            return groups
        time.sleep(0.2)


# --- each endpoint -----------------------------------------------------------------------------


def test_moderations_with_the_sdk(stack):
    client = stack.client()
    result = client.moderations.create(model="cirrus-moderation", input=["a calm sentence", "I will kill"])
    assert [r.flagged for r in result.results] == [False, True]
    assert result.results[1].categories.violence is True
    raw = client.moderations.with_raw_response.create(model="cirrus-moderation", input="hello there")
    assert raw.headers["x-cirrus-model"] == "cirrus-moderation"
    assert_matches("CreateModerationResponse", raw.http_response.json())


def test_image_generation_with_the_sdk(stack):
    client = stack.client()
    images = client.images.generate(model="cirrus-image", prompt="a red fox", n=2, size="1024x1024")
    assert len(images.data) == 2 and all(image.url for image in images.data)
    assert httpx.get(images.data[0].url).headers["content-type"] == "image/png"
    raw = client.images.with_raw_response.generate(
        model="cirrus-image", prompt="a red fox", response_format="b64_json"
    )
    body = raw.http_response.json()
    assert_matches("ImagesResponse", body)
    assert body["data"][0]["b64_json"]


def test_transcription_with_the_sdk(stack):
    client = stack.client()
    audio = tone_wav(2.0)
    result = client.audio.transcriptions.create(model="cirrus-transcribe", file=("clip.wav", audio))
    assert result.text.startswith(f"Fake transcript of {len(audio)} bytes")
    raw = client.audio.transcriptions.with_raw_response.create(
        model="cirrus-transcribe", file=("clip.wav", audio), response_format="json"
    )
    assert_matches("CreateTranscriptionResponseJson", raw.http_response.json())
    verbose = client.audio.transcriptions.with_raw_response.create(
        model="cirrus-transcribe",
        file=("clip.wav", audio),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    body = verbose.http_response.json()
    assert_matches("CreateTranscriptionResponseVerboseJson", body)
    assert body["duration"] == pytest.approx(2.0) and body["words"] and body["segments"]
    text = client.audio.transcriptions.create(
        model="cirrus-transcribe", file=("clip.wav", audio), response_format="text"
    )
    assert text.startswith("Fake transcript")
    vtt = client.audio.transcriptions.with_raw_response.create(
        model="cirrus-transcribe", file=("clip.wav", audio), response_format="vtt"
    )
    assert vtt.headers["content-type"].startswith("text/vtt") and vtt.http_response.text.startswith("WEBVTT")


def test_speech_with_the_sdk_is_a_valid_wav(stack):
    client = stack.client()
    with client.audio.speech.with_streaming_response.create(
        model="cirrus-speech", voice="alloy", input="Hello from Cirrus.", response_format="wav"
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        assert response.headers["x-cirrus-model"] == "cirrus-speech"
        audio = b"".join(response.iter_bytes())
    with wave.open(io.BytesIO(audio), "rb") as clip:
        assert clip.getnchannels() == 1 and clip.getsampwidth() == 2 and clip.getframerate() == 24_000
        assert clip.getnframes() == 6_000  # the fake's 0.25 s tone
        assert len(clip.readframes(clip.getnframes())) == 12_000
    again = client.audio.speech.create(
        model="cirrus-speech", voice="alloy", input="Hello from Cirrus.", response_format="wav"
    )
    assert again.content == audio  # deterministic


def test_rerank_over_http(stack):
    response = httpx.post(
        f"{stack.base_url}/v1/rerank",
        headers=bearer(stack.master_key),
        json={
            "model": "cirrus-rerank",
            "query": "azure functions python",
            "documents": ["a recipe for soup", "python on azure functions", {"text": "azure storage"}],
            "top_n": 2,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["index"] for r in body["results"]] == [1, 2]
    assert body["results"][0]["relevance_score"] > body["results"][1]["relevance_score"]
    assert body["results"][0]["document"] == {"text": "python on azure functions"}
    assert response.headers["x-cirrus-model"] == "cirrus-rerank"


# --- usage in each endpoint's own units --------------------------------------------------------


def test_usage_is_recorded_in_each_endpoints_units(stack):
    key = stack.new_key()["key"]
    client = stack.client(key)
    client.moderations.create(model="cirrus-moderation", input=["one", "two", "three"])
    client.images.generate(model="cirrus-image", prompt="a fox", n=2, size="1024x1024")
    client.audio.transcriptions.create(model="cirrus-transcribe", file=("clip.wav", tone_wav(3.0)))
    client.audio.speech.create(model="cirrus-speech", voice="alloy", input="twelve chars")
    for model in ("cirrus-rerank", "cirrus-rerank-priced"):
        reranked = httpx.post(
            f"{stack.base_url}/v1/rerank",
            headers=bearer(key),
            json={"model": model, "query": "q", "documents": ["d"] * 150},
        )
        assert reranked.status_code == 200, reranked.text
    models = {
        "cirrus-moderation",
        "cirrus-image",
        "cirrus-transcribe",
        "cirrus-speech",
        "cirrus-rerank",
        "cirrus-rerank-priced",
    }
    groups = usage_by_model(stack, key, models)
    assert models <= set(groups), f"usage records did not arrive: {sorted(groups)}"
    assert groups["cirrus-moderation"]["units"] == {"inputs": 3}
    assert groups["cirrus-moderation"]["cost_usd"] == 0  # free at OpenAI
    assert groups["cirrus-image"]["units"] == {"images": 2}
    assert groups["cirrus-image"]["cost_usd"] == pytest.approx(2 * 0.04)  # dall-e-3, 1024x1024
    assert groups["cirrus-transcribe"]["units"] == {"seconds": 3}
    assert groups["cirrus-transcribe"]["cost_usd"] == pytest.approx(3 * 0.0001)  # whisper-1
    assert groups["cirrus-speech"]["units"] == {"characters": 12}
    assert groups["cirrus-speech"]["cost_usd"] == pytest.approx(12 * 0.000015)  # tts-1
    assert groups["cirrus-rerank"]["units"] == {"search_units": 2}
    assert groups["cirrus-rerank"]["cost_usd"] == 0  # no price known: counted, never guessed
    assert groups["cirrus-rerank-priced"]["cost_usd"] == pytest.approx(2 * 0.002)
    total = httpx.get(f"{stack.base_url}/v1/usage", headers=bearer(key)).json()["total"]
    assert total["units"] == {"inputs": 3, "images": 2, "seconds": 3, "characters": 12, "search_units": 4}


# --- keys: model access and limits hold as for chat -----------------------------------------------


def test_a_key_limited_to_other_models_is_refused(stack):
    key = stack.new_key(models=["cirrus-local"])["key"]
    client = stack.client(key)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.images.generate(model="cirrus-image", prompt="a fox")
    assert refused.value.body["code"] == "model_not_allowed"
    with pytest.raises(openai.PermissionDeniedError):
        client.audio.speech.create(model="cirrus-speech", voice="alloy", input="hi")
    with pytest.raises(openai.PermissionDeniedError):
        client.audio.transcriptions.create(model="cirrus-transcribe", file=("clip.wav", tone_wav(0.5)))
    response = httpx.post(
        f"{stack.base_url}/v1/rerank",
        headers=bearer(key),
        json={"model": "cirrus-rerank", "query": "q", "documents": ["d"]},
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "model_not_allowed"


def test_a_keys_request_limit_holds(stack):
    key = stack.new_key(rpm_limit=1)["key"]
    client = stack.client(key)
    client.moderations.create(model="cirrus-moderation", input="first")
    with pytest.raises(openai.RateLimitError):
        client.moderations.create(model="cirrus-moderation", input="second")


# --- bad input: a clear envelope with the right status, never a 500 ---------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/images/generations", {"model": "cirrus-local", "prompt": "a fox"}, 400, "model"),
        ("/v1/moderations", {"model": "cirrus-image", "input": "hi"}, 400, "model"),
        ("/v1/rerank", {"model": "cirrus-local", "query": "q", "documents": ["d"]}, 400, "model"),
        ("/v1/audio/speech", {"model": "cirrus-local", "voice": "alloy", "input": "hi"}, 400, "model"),
        ("/v1/images/generations", {"model": "cirrus-nope", "prompt": "a fox"}, 404, "model"),
        ("/v1/images/generations", {"model": "cirrus-image"}, 400, "prompt"),
        ("/v1/images/generations", {"model": "cirrus-image", "prompt": "x", "n": 11}, 400, "n"),
        ("/v1/moderations", {"model": "cirrus-moderation"}, 400, "input"),
        ("/v1/rerank", {"model": "cirrus-rerank", "query": "q"}, 400, "documents"),
        ("/v1/rerank", {"model": "cirrus-rerank", "query": "q", "documents": []}, 400, "documents"),
        ("/v1/audio/speech", {"model": "cirrus-speech", "input": "hi"}, 400, "voice"),
        ("/v1/audio/speech", {"model": "cirrus-speech", "voice": "alloy", "input": ""}, 400, "input"),
    ],
)
def test_bad_json_requests_get_an_openai_error(stack, path, body, status, param):
    response = httpx.post(f"{stack.base_url}{path}", headers=bearer(stack.master_key), json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]
    assert_matches("ErrorResponse", response.json())


def test_a_chat_model_on_images_is_refused_by_the_sdk(stack):
    with pytest.raises(openai.BadRequestError) as refused:
        stack.client().images.generate(model="cirrus-local", prompt="a fox")
    assert refused.value.body["code"] == "model_not_supported"
    assert "/v1/images/generations" in refused.value.body["message"]


def test_unknown_model_on_transcriptions_is_a_404(stack):
    with pytest.raises(openai.NotFoundError):
        stack.client().audio.transcriptions.create(model="cirrus-nope", file=("clip.wav", tone_wav(0.5)))


@pytest.mark.parametrize(
    ("headers", "content", "status", "param"),
    [
        ({"Content-Type": "application/json"}, b'{"model": "cirrus-transcribe"}', 400, None),
        (
            {"Content-Type": "multipart/form-data; boundary=xyz"},
            b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\ncirrus-transcribe\r\n--xyz--\r\n',
            400,
            "file",
        ),
        (
            {"Content-Type": "multipart/form-data; boundary=xyz"},
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF',
            400,
            "file",
        ),
        (
            {"Content-Type": "multipart/form-data; boundary=xyz"},
            b"this is not multipart at all",
            400,
            None,
        ),
    ],
    ids=["not-multipart", "no-file", "cut-in-the-file", "garbage"],
)
def test_bad_multipart_gets_an_openai_error(stack, headers, content, status, param):
    response = httpx.post(
        f"{stack.base_url}/v1/audio/transcriptions",
        headers={**bearer(stack.master_key), **headers},
        content=content,
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param
    assert_matches("ErrorResponse", response.json())


def test_a_transcription_without_a_model_is_a_400(stack):
    response = httpx.post(
        f"{stack.base_url}/v1/audio/transcriptions",
        headers=bearer(stack.master_key),
        files={"file": ("clip.wav", tone_wav(0.5), "audio/wav")},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "model"


def streamed_form(model: str, audio: bytes):
    """A transcription form sent without a Content-Length: its fields, then the file in chunks."""
    yield f'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'.encode()
    yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
    for start in range(0, len(audio), 64 * 1024):
        yield audio[start : start + 64 * 1024]
    yield b"\r\n--xyz--\r\n"


def test_an_upload_over_the_limit_is_a_413(stack):
    # The e2e host allows 1,000,000 bytes (CIRRUS_MAX_UPLOAD_BYTES); 40 s of 16 kHz WAV is 1.28 MB.
    big = tone_wav(40.0)
    with pytest.raises(openai.APIStatusError) as refused:
        stack.client().audio.transcriptions.create(model="cirrus-transcribe", file=("big.wav", big))
    assert refused.value.status_code == 413
    assert "limit" in refused.value.body["message"]
    response = httpx.post(  # no Content-Length: the limit holds as the body streams in
        f"{stack.base_url}/v1/audio/transcriptions",
        headers={**bearer(stack.master_key), "Content-Type": "multipart/form-data; boundary=xyz"},
        content=streamed_form("cirrus-transcribe", big),
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"]


@pytest.mark.parametrize(
    ("model", "status"), [("cirrus-nope", 404), ("cirrus-local", 400), ("cirrus-image", 403)]
)
def test_the_model_is_checked_before_the_upload_is_read(stack, model, status):
    # Over the upload limit: a 413 would mean the file was read before the model was looked at.
    key = stack.new_key(models=["cirrus-local", "cirrus-transcribe"])["key"]
    response = httpx.post(
        f"{stack.base_url}/v1/audio/transcriptions",
        headers={**bearer(key), "Content-Type": "multipart/form-data; boundary=xyz"},
        content=streamed_form(model, tone_wav(40.0)),
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == "model"


def test_speech_cut_short_by_the_provider_is_an_error_never_a_short_file(stack, provider):
    provider.post(
        "/_control/enqueue", json={"behaviour": {"fault": "cut", "cut_after": 1}}
    ).raise_for_status()
    key = stack.new_key()["key"]
    received = bytearray()
    with (
        pytest.raises((httpx.TransportError, openai.APIConnectionError)),
        stack.client(key).audio.speech.with_streaming_response.create(
            model="cirrus-speech", voice="alloy", input="cut me", response_format="wav"
        ) as response,
    ):
        assert response.status_code == 200  # the first block was relayed before the cut
        for block in response.iter_bytes():
            received += block
    assert 0 < len(received) < 12_044  # the fake's whole WAV

    def recorded():
        body = httpx.get(f"{stack.base_url}/v1/usage", headers=bearer(key)).json()
        return body["total"] if body["total"]["requests"] else None

    deadline = time.monotonic() + 20
    while (total := recorded()) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert total and total["errors"] == 1
