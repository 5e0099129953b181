"""The file part of a multipart upload, parsed as the body streams in (python-multipart's
push parser over the request stream), so that no upload is held in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header


class UploadError(Exception):
    """A malformed or incomplete upload body (400)."""


class FilePart:
    """Pulls the part named `file` out of a multipart body as it streams in.

    The push parser calls back with slices of each network chunk; slices of the file part
    are collected and handed on after each chunk, so memory stays at about one chunk.
    """

    FIELD = "file"

    def __init__(self, boundary: bytes, body: AsyncIterator[bytes]) -> None:
        self._body = body
        self._pending: list[bytes] = []
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._in_file = False
        self.found = False
        self.finished = False
        self.filename: str | None = None
        self.content_type: str | None = None
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )

    # parser callbacks

    def _on_part_begin(self) -> None:
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._header_name.decode("latin-1").lower()
        self._headers[name] = self._header_value.decode("utf-8", "replace")
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == self.FIELD and not self.found:
            self.found = self._in_file = True
            filename = options.get(b"filename")
            self.filename = filename.decode("utf-8", "replace") if filename else None
            self.content_type = self._headers.get("content-type") or None

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(data[start:end])

    def _on_part_end(self) -> None:
        if self._in_file:
            self._in_file = False
            self.finished = True

    # driving

    async def _feed(self) -> bool:
        """Parse the next chunk of the body; False at its end."""
        try:
            chunk = await self._body.__anext__()
        except StopAsyncIteration:
            self._parser.finalize()
            return False
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise UploadError(f"The multipart body is malformed: {exc}") from None
        return True

    async def start(self) -> None:
        """Read until the file part's headers (its file name) are known."""
        while not self.found:
            if not await self._feed():
                raise UploadError(f"The multipart body has no field named '{self.FIELD}'.")

    async def chunks(self) -> AsyncIterator[bytes]:
        ended = False
        while True:
            if self._pending:  # what start() or the last chunk brought
                data = b"".join(self._pending)
                self._pending.clear()
                yield data
            if self.finished:
                break
            if ended:
                raise UploadError("The upload ended before the file was complete.")
            ended = not await self._feed()
        # Drain the closing boundary, so the client sees its whole body consumed.
        while await self._feed():
            self._pending.clear()


async def raw_chunks(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in body:
        yield chunk
