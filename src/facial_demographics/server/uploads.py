"""Read a multipart upload into memory, counting bytes as they arrive.

Starlette's form parser spools files over 1 MB to temporary files; uploads here must never touch the
disk and must be cut off as soon as they exceed the size limit, so we drive python-multipart's
streaming parser ourselves.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartState, parse_options_header

from .errors import ApiError

_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f]")
_MAX_FIELDS = 16
_MAX_FIELD_BYTES = 1024

#: Called with the bytes received so far before they are kept (the memory budget reserves them).
OnBytes = Callable[[int], Awaitable[None]]


@dataclass
class Upload:
    """One file part, held in memory."""

    filename: str
    content_type: str | None
    data: bytearray = field(default_factory=bytearray)


@dataclass
class Form:
    files: list[Upload]
    fields: dict[str, str]


def clean_filename(raw: str | None, index: int) -> str:
    """The uploaded name without directories or control characters; a placeholder when there is none."""
    name = _UNSAFE_NAME.sub("", (raw or "").replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return name[:255] or f"upload-{index + 1}"


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "upload_too_large", f"the upload exceeds the limit of {limit / 2**20:.4g} MB")


def check_content_length(header: str | None, limit: int) -> None:
    """Reject a declared body larger than the limit before reading any of it."""
    if header is None:
        return
    try:
        declared = int(header)
    except ValueError:
        raise ApiError(400, "bad_request", "invalid Content-Length header") from None
    if declared > limit:
        raise _too_large(limit)


class _Collector:
    """python-multipart callbacks that gather parts into memory with per-request limits."""

    def __init__(self, file_field: str, max_files: int) -> None:
        self.file_field = file_field
        self.max_files = max_files
        self.files: list[Upload] = []
        self.fields: dict[str, str] = {}
        self._headers: dict[bytes, bytes] = {}
        self._name = self._value = b""
        self._target: bytearray | None = None
        self._field: tuple[str, bytearray] | None = None

    def on_part_begin(self) -> None:
        self._headers = {}
        self._target = None
        self._field = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._name.strip().lower()] = self._value.strip()
        self._name = self._value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if name is None:
            raise ApiError(400, "invalid_multipart", "a form part has no name in its Content-Disposition")
        field_name = name.decode("utf-8", "replace")
        if field_name == self.file_field or b"filename" in options:
            if field_name != self.file_field:
                raise ApiError(
                    422, "unexpected_file", f"files go in the '{self.file_field}' field", field_name
                )
            if len(self.files) >= self.max_files:
                raise ApiError(422, "too_many_files", f"at most {self.max_files} files per request")
            raw_name = options.get(b"filename")
            content_type = self._headers.get(b"content-type")
            upload = Upload(
                filename=clean_filename(
                    None if raw_name is None else raw_name.decode("utf-8", "replace"), len(self.files)
                ),
                content_type=None if content_type is None else content_type.decode("latin-1"),
            )
            self.files.append(upload)
            self._target = upload.data
        else:
            if len(self.fields) >= _MAX_FIELDS:
                raise ApiError(422, "too_many_fields", f"at most {_MAX_FIELDS} form fields per request")
            self._field = (field_name, bytearray())
            self._target = self._field[1]

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        assert self._target is not None
        self._target += data[start:end]
        if self._field is not None and len(self._target) > _MAX_FIELD_BYTES:
            raise ApiError(
                422, "field_too_large", f"form field is over {_MAX_FIELD_BYTES} bytes", self._field[0]
            )

    def on_part_end(self) -> None:
        if self._field is not None:
            name, value = self._field
            self.fields[name] = value.decode("utf-8", "replace")


async def _capped(stream: AsyncIterator[bytes], max_bytes: int, on_bytes: OnBytes | None) -> AsyncIterator[bytes]:
    """The chunks of ``stream``, cut off with 413 as soon as the total passes ``max_bytes``; ``on_bytes`` is
    awaited with the total received before each chunk is passed on (it may wait, or raise)."""
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > max_bytes:
            raise _too_large(max_bytes)
        if on_bytes is not None:
            await on_bytes(received)
        yield chunk


async def read_multipart(
    content_type: str | None,
    stream: AsyncIterator[bytes],
    *,
    max_bytes: int,
    max_files: int,
    file_field: str = "file",
    on_bytes: OnBytes | None = None,
) -> Form:
    """Parse a multipart/form-data body from ``stream`` into memory; ``ApiError`` on anything wrong.

    ``on_bytes`` is awaited with the total received before each chunk is parsed (it may wait, or raise).
    """
    mime, params = parse_options_header(content_type or "")
    if mime != b"multipart/form-data":
        raise ApiError(
            415, "unsupported_media_type", "send the images as multipart/form-data in the 'file' field"
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "invalid_multipart", "multipart/form-data without a boundary")
    collector = _Collector(file_field, max_files)
    try:
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": collector.on_part_begin,
                "on_part_data": collector.on_part_data,
                "on_part_end": collector.on_part_end,
                "on_header_field": collector.on_header_field,
                "on_header_value": collector.on_header_value,
                "on_header_end": collector.on_header_end,
                "on_headers_finished": collector.on_headers_finished,
            },
        )
        async for chunk in _capped(stream, max_bytes, on_bytes):
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise ApiError(400, "invalid_multipart", f"malformed multipart body: {exc}") from None
    if parser.state != MultipartState.END:
        raise ApiError(400, "invalid_multipart", "the multipart body ended early (no closing boundary)")
    return Form(files=collector.files, fields=collector.fields)


async def read_body(stream: AsyncIterator[bytes], max_bytes: int, on_bytes: OnBytes | None = None) -> bytes:
    """A whole (non-multipart) body into memory, cut off with 413 as soon as it passes ``max_bytes``;
    ``on_bytes`` as for :func:`read_multipart`."""
    return b"".join([chunk async for chunk in _capped(stream, max_bytes, on_bytes)])
