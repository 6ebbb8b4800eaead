"""An upload spooled for the attempts that send it: memory first, then local disk, then gone."""

from pathlib import Path

import pytest

from shared.blueprints._multipart import MultipartUpload
from shared.blueprints._spool import SpooledFile, spooled_file
from shared.errors import InvalidRequestError


async def arriving(*chunks: bytes):
    for chunk in chunks:
        yield chunk


async def test_a_small_upload_stays_in_memory_and_reads_from_the_start_each_time():
    spool = SpooledFile("a.wav", "audio/wav", memory_bytes=10)
    await spool.fill(arriving(b"abc", b"def"))
    assert not spool.on_disk and spool.size == 6
    for _ in range(2):
        with spool.open() as file:
            assert file.read() == b"abcdef"
    spool.close()


async def test_a_large_upload_moves_to_disk_and_is_deleted_on_close(tmp_path):
    spool = SpooledFile("a.wav", "audio/wav", memory_bytes=4, directory=str(tmp_path))
    await spool.fill(arriving(b"abc", b"defgh", b"ij"))
    assert spool.on_disk and spool.size == 10 and files_in(tmp_path) == 1
    with spool.open() as first, spool.open() as second:
        assert first.read() == second.read() == b"abcdefghij"
    spool.close()
    assert files_in(tmp_path) == 0


def files_in(directory: Path) -> int:
    return len(list(directory.iterdir()))


def form(*parts: tuple[str, str | None, bytes]) -> MultipartUpload:
    boundary = "xyz"
    body = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return MultipartUpload(arriving(body), f"multipart/form-data; boundary={boundary}", max_bytes=10_000)


async def test_spooled_file_reads_fields_after_the_file_and_cleans_the_name():
    upload = form(("file", "../../etc/clip\x07.wav", b"RIFF"), ("model", None, b"m"))
    async with spooled_file(upload) as audio:
        assert audio.filename == "clip.wav" and audio.size == 4
        assert upload.fields == {"model": "m"}


@pytest.mark.parametrize(
    "parts",
    [
        [("model", None, b"m")],  # no file at all
        [("audio", "a.wav", b"RIFF")],  # a file, under another name
        [("file", "a.wav", b"")],  # an empty one
    ],
)
async def test_spooled_file_wants_a_non_empty_file_field(parts):
    with pytest.raises(InvalidRequestError) as refused:
        async with spooled_file(form(*parts)):
            pass
    assert refused.value.param == "file"
