"""A `multipart/form-data` body read as it arrives: small fields into memory, one file as a stream.

`python-multipart` (the parser Starlette uses) does the parsing; this module feeds it the request
body chunk by chunk and hands the file part on without ever holding the whole file, so an upload's
memory is one network chunk, whatever its size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from shared.errors import InvalidRequestError, PayloadTooLargeError

MAX_FIELD_BYTES = 4096
# Besides the file, a form is a handful of small fields: these caps keep a form of many small
# parts from holding memory up to the whole upload limit. (python-multipart caps part headers.)
MAX_FIELDS = 64
MAX_FIELDS_BYTES = 64 * 1024  # every field's value together


class MultipartUpload:
    """Read with `await until_file()`, then iterate `file_chunks()`; `fields` fills as parts end."""

    def __init__(self, body: AsyncIterator[bytes], content_type: str, *, max_bytes: int) -> None:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise InvalidRequestError("Expected a multipart/form-data body with a boundary.")
        self.fields: dict[str, str] = {}
        self.field_list: list[tuple[str, str]] = []  # every field in order, repeated names included
        self.file_field: str | None = None
        self.filename: str | None = None
        self.file_content_type = "application/octet-stream"
        self._body = body
        self._max_bytes = max_bytes
        self._read = 0
        self._ended = False
        self._file_done = False
        self._pending = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._header = [b"", b""]
        self._part: tuple[str, bool] | None = None  # (field name, is the file)
        self._value = bytearray()
        self._error: InvalidRequestError | None = None
        self._parts = 0
        self._fields_bytes = 0
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": lambda data, start, end: self._header_add(0, data[start:end]),
                "on_header_value": lambda data, start, end: self._header_add(1, data[start:end]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    async def until_file(self) -> bool:
        """Read until the file part starts (True) or the body ends without one (False)."""
        while self.file_field is None:
            if not await self._feed():
                return False
        return True

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive; afterwards the rest of the body (trailing fields)."""
        while True:
            if self._pending:
                chunk = bytes(self._pending)
                self._pending.clear()
                yield chunk
            if self._file_done:
                break
            if not await self._feed():
                raise InvalidRequestError("The request body ended inside the file.", param="file")
        while await self._feed():
            pass

    async def _feed(self) -> bool:
        if self._ended:
            return False
        chunk = await anext(self._body, None)
        if chunk is None:
            self._ended = True
            self._parser.finalize()
            self._raise_pending()
            return False
        self._read += len(chunk)
        if self._read > self._max_bytes:
            raise PayloadTooLargeError(f"The upload is larger than the {self._max_bytes}-byte limit.")
        try:
            self._parser.write(chunk)
        except MultipartParseError:
            raise InvalidRequestError("The multipart/form-data body is malformed.") from None
        self._raise_pending()
        return True

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error

    # --- parser callbacks -----------------------------------------------------------------

    def _part_begin(self) -> None:
        self._headers, self._header, self._value = {}, [b"", b""], bytearray()
        self._parts += 1
        if self._parts > MAX_FIELDS + 1:  # the fields and the file
            self._fail(InvalidRequestError(f"The form has more than {MAX_FIELDS} fields."))

    def _header_add(self, index: int, data: bytes) -> None:
        self._header[index] += data

    def _header_end(self) -> None:
        self._headers[self._header[0].strip().lower()] = self._header[1].strip()
        self._header = [b"", b""]

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        is_file = b"filename" in options
        if is_file and self.file_field is not None:
            self._error = InvalidRequestError("Send one file per upload.", param="file")
            is_file = False
        elif is_file:
            self.file_field = name
            self.filename = options[b"filename"].decode("utf-8", "replace")
            self.file_content_type = self._headers.get(b"content-type", b"").decode("latin-1") or (
                self.file_content_type
            )
        self._part = (name, is_file)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part is None:
            return
        if self._part[1]:
            self._pending += data[start:end]
        else:
            self._value += data[start:end]
            self._fields_bytes += end - start
            if len(self._value) > MAX_FIELD_BYTES:
                self._fail(InvalidRequestError(f"Form field '{self._part[0]}' is too long."))
            elif self._fields_bytes > MAX_FIELDS_BYTES:
                too_long = f"The form's fields are longer than {MAX_FIELDS_BYTES} bytes in all."
                self._fail(PayloadTooLargeError(too_long))

    def _fail(self, error: InvalidRequestError) -> None:
        """Remember the first problem (raised after the chunk that showed it) and stop keeping data."""
        if self._error is None:
            self._error = error
        self._part = None

    def _part_end(self) -> None:
        if self._part is None:
            return
        name, is_file = self._part
        if is_file:
            self._file_done = True
        else:
            self.fields[name] = self._value.decode("utf-8", "replace")
            self.field_list.append((name, self.fields[name]))
        self._part = None
