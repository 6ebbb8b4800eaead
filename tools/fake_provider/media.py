"""Small, valid media files made from a seed: PNG images and WAV audio, byte-for-byte deterministic.

Nothing here is meant to look or sound like anything: a PNG is one flat colour, a WAV is a sine
tone. They are real files all the same, so clients can decode what the fake provider returns.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import wave
import zlib

IMAGE_SIDE = 8  # pixels: every fake image is this square, whatever size was asked for
SPEECH_SECONDS = 0.25
SPEECH_SAMPLE_RATE = 24_000  # what OpenAI's TTS models produce
_AMPLITUDE = 8_000  # of 32_767: a quiet tone


def colour(seed: str) -> tuple[int, int, int]:
    red, green, blue = hashlib.sha256(seed.encode()).digest()[:3]
    return red, green, blue


def png(seed: str, side: int = IMAGE_SIDE) -> bytes:
    """A `side` x `side` RGB PNG of one colour derived from `seed`."""
    row = b"\x00" + bytes(colour(seed)) * side  # filter type 0, then the pixels
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(row * side))
        + (_chunk(b"IEND", b""))
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def pcm(seed: str, seconds: float = SPEECH_SECONDS, rate: int = SPEECH_SAMPLE_RATE) -> bytes:
    """16-bit little-endian mono samples of a sine tone whose pitch (220-880 Hz) comes from `seed`."""
    frequency = 220 + int.from_bytes(hashlib.sha256(seed.encode()).digest()[:2], "big") % 661
    count = round(seconds * rate)
    samples = (round(_AMPLITUDE * math.sin(2 * math.pi * frequency * i / rate)) for i in range(count))
    return struct.pack(f"<{count}h", *samples)


def wav(seed: str, seconds: float = SPEECH_SECONDS, rate: int = SPEECH_SAMPLE_RATE) -> bytes:
    """A RIFF/WAVE file (PCM, 16-bit, mono) holding `pcm(seed, seconds, rate)`."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm(seed, seconds, rate))
    return buffer.getvalue()


def wav_seconds(data: bytes) -> float | None:
    """The duration of a PCM WAV file, or None if `data` is not one."""
    try:
        with wave.open(io.BytesIO(data), "rb") as audio:
            return audio.getnframes() / audio.getframerate()
    except (wave.Error, EOFError, ZeroDivisionError):
        return None
