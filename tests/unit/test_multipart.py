"""A multipart form read as it arrives: the caps on its fields, whatever the upload limit."""

from __future__ import annotations

import pytest

from shared.blueprints._multipart import MAX_FIELDS, MAX_FIELDS_BYTES, MultipartUpload
from shared.errors import InvalidRequestError, PayloadTooLargeError

BOUNDARY = "xyz"


async def arriving(body: bytes, size: int = 1024):
    for start in range(0, len(body), size):
        yield body[start : start + size]


def part(name: str, value: bytes, *, filename: str | None = None, extra: str = "") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n{extra}\r\n".encode() + value + b"\r\n"


def upload(*parts: bytes) -> MultipartUpload:
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    return MultipartUpload(arriving(body), f"multipart/form-data; boundary={BOUNDARY}", max_bytes=100_000_000)


async def read_all(form: MultipartUpload) -> None:
    if await form.until_file():
        async for _ in form.file_chunks():
            pass


async def test_a_form_of_many_small_fields_is_refused():
    fields = [part(f"f{n}", b"x") for n in range(MAX_FIELDS + 1)]
    with pytest.raises(InvalidRequestError) as refused:
        await read_all(upload(*fields, part("file", b"data", filename="a.txt")))
    assert f"more than {MAX_FIELDS} fields" in refused.value.message
    with pytest.raises(InvalidRequestError):  # after the file, too
        await read_all(upload(part("file", b"data", filename="a.txt"), *fields))


async def test_as_many_fields_as_allowed_are_read():
    form = upload(*[part(f"f{n}", b"x") for n in range(MAX_FIELDS)], part("file", b"d", filename="a"))
    await read_all(form)
    assert len(form.fields) == MAX_FIELDS


async def test_fields_longer_than_the_cap_in_all_are_a_413():
    each = 4000  # under the cap on one field
    fields = [part(f"f{n}", b"x" * each) for n in range(MAX_FIELDS_BYTES // each + 1)]
    with pytest.raises(PayloadTooLargeError) as refused:
        await read_all(upload(*fields))
    assert refused.value.status == 413 and "in all" in refused.value.message


async def test_an_endless_part_header_is_a_400_not_a_memory_sink():
    header = "X-Padding: " + "a" * 100_000 + "\r\n"
    with pytest.raises(InvalidRequestError):
        await read_all(upload(part("file", b"data", filename="a.txt", extra=header)))
