"""Streaming multipart uploads: parts named `file` go straight to disk, never whole into memory."""
from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from remote_kernel.pool import files


class MultipartError(Exception):
    """An upload the pool refuses, with its HTTP status and error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def filename_of(disposition: bytes) -> tuple[str | None, str | None]:
    """(field name, file name) from a Content-Disposition header; RFC 5987 `filename*` wins."""
    _, options = parse_options_header(disposition)
    name = options.get(b"name")
    field = name.decode("utf-8", "replace") if name is not None else None
    extended = options.get(b"filename*")
    if extended:
        match = re.fullmatch(rb"([\w-]*)'[^']*'(.*)", extended)
        if match:
            charset = match.group(1).decode() or "utf-8"
            try:
                return field, unquote(match.group(2).decode("ascii"), encoding=charset, errors="strict")
            except (UnicodeDecodeError, LookupError):
                raise MultipartError(400, "InvalidFileName", "The file name is not valid in its charset.") from None
    plain = options.get(b"filename")
    if plain is None:
        return field, None
    try:
        return field, plain.decode("utf-8")
    except UnicodeDecodeError:
        raise MultipartError(400, "InvalidFileName", "The file name is not valid UTF-8.") from None


#: the first line of a multipart body (RFC 2046: `--` and a boundary of 1 to 70 characters)
FIRST_LINE = re.compile(rb"--([0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?])\r\n")


async def sniffed_boundary(stream: AsyncIterator[bytes]) -> tuple[bytes | None, bytes]:
    """The boundary of a body that plainly is multipart whatever its Content-Type says, and the bytes read.

    Semantic Kernel's shared client sends its uploads with `Content-Type: application/json` (the
    header of its execute calls); the body is a well-formed multipart body that starts `--<boundary>`.
    """
    head = b""
    async for chunk in stream:
        head += chunk
        if b"\r\n" in head or len(head) > 80:
            break
    match = FIRST_LINE.match(head)
    return (match.group(1) if match else None), head


MAX_FILES = 100  # files in one upload request
SLACK = 1 << 20  # bytes of multipart framing allowed beyond the limit on the files' contents


@dataclass
class PartWriter:
    """The multipart parser's callbacks: each `file` part written under root/folder as it arrives."""

    root: Path
    folder: list[str]
    limit: int  # bytes of file contents in all
    written: list[files.IncomingFile] = field(default_factory=list)  # whole files, waiting for the body's end
    incoming: files.IncomingFile | None = None  # the file being written
    header: bytes = b""  # the name of the header being read
    headers: dict[bytes, bytes] = field(default_factory=dict)  # the current part's headers, lowercase names
    skip: bool = False  # the current part is not a file: ignored, as the hosted service does
    total: int = 0

    def callbacks(self) -> Any:  # python-multipart's MultipartCallbacks (a TypedDict of its own)
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end}

    def on_part_begin(self) -> None:
        self.headers, self.incoming, self.skip = {}, None, False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        key = self.header.lower()
        self.headers[key] = self.headers.get(key, b"") + data[start:end]

    def on_header_end(self) -> None:
        self.header = b""

    def on_headers_finished(self) -> None:
        field_name, name = filename_of(self.headers.get(b"content-disposition", b""))
        if field_name != "file" or name is None:
            self.skip = True
            return
        try:
            parts = self.folder + files.parts_of(name, allow_root=False)
        except files.BadPath as bad:
            raise MultipartError(400, "InvalidFileName", str(bad)) from None
        self.incoming = files.IncomingFile(self.root, parts)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.skip or self.incoming is None:
            return
        self.total += end - start
        if self.total > self.limit:
            raise MultipartError(413, "PayloadTooLarge",
                                 f"The upload is over this pool's limit of {self.limit} bytes "
                                 "(start it with a larger --max-upload).")
        try:
            self.incoming.write(data[start:end])
        except OSError as error:
            raise MultipartError(507, "InsufficientStorage",
                                 f"The session's /mnt/data has no room for this file ({error.strerror}); "
                                 "delete files there or upload less.") from None

    def on_part_end(self) -> None:
        incoming = self.incoming
        if incoming is not None:
            self.incoming = None
            incoming.finish()
            self.written.append(incoming)
            if len(self.written) > MAX_FILES:
                raise MultipartError(400, "TooManyFiles", f"An upload may carry at most {MAX_FILES} files.")


async def receive_upload(request: Request, root: Path, folder: list[str], limit: int) -> list[files.Entry]:
    """Write every `file` part under root/folder, at most `limit` bytes in all.

    The files become visible only once the whole request body has arrived: a request that fails
    (a malformed body, a client that goes, a body shorter than it said) leaves nothing behind.
    """
    content_type = request.headers.get("content-type", "")
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    stream = request.stream()
    head = b""
    if kind != b"multipart/form-data" or not boundary:
        try:
            boundary, head = await sniffed_boundary(stream)
        except ClientDisconnect:
            raise MultipartError(400, "UploadIncomplete",
                                 "The client closed the connection before the upload ended.") from None
        if boundary is None:
            raise MultipartError(400, "InvalidContentType",
                                 "Upload with Content-Type multipart/form-data and one part named 'file' "
                                 f"(the header says {content_type or 'nothing'} and the body is not multipart).")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + SLACK:
        raise MultipartError(413, "PayloadTooLarge",
                             f"The upload is {int(declared)} bytes; this pool accepts at most {limit} bytes "
                             "(start it with a larger --max-upload).")

    parts = PartWriter(root, folder, limit)
    received = 0
    try:
        parser = MultipartParser(boundary, callbacks=parts.callbacks())  # refuses a boundary over 256 bytes
        if head:
            received += len(head)
            parser.write(head)
        async for chunk in stream:
            received += len(chunk)
            if received > limit + SLACK:  # a body without Content-Length, or framing without end
                raise MultipartError(413, "PayloadTooLarge",
                                     f"The upload is over this pool's limit of {limit} bytes "
                                     "(start it with a larger --max-upload).")
            parser.write(chunk)
        parser.finalize()
        if parts.incoming is not None:
            raise MultipartError(400, "UploadIncomplete", "The multipart body ended before the file did.")
        if not parts.written:
            raise MultipartError(400, "MissingFile", "The upload has no part named 'file' with a filename.")
        return [incoming.commit() for incoming in list(parts.written)]
    except ClientDisconnect:
        raise MultipartError(400, "UploadIncomplete",
                             "The client closed the connection before the upload ended.") from None
    except MultipartError:
        raise
    except (files.BadPath, files.NotFound) as bad:  # the name collides with a folder, or a file is in its way
        raise MultipartError(400, "InvalidFileName", str(bad)) from None
    except files.FilesGone as gone:
        raise MultipartError(404, "SessionWithIdentifierNotFound", str(gone)) from None
    except OSError as error:  # the pool's side failed (not the body): no path in the answer, and worth a retry
        raise MultipartError(503, "UploadFailed", f"The pool could not write the upload ({error.strerror}); "
                                                  "send it again.") from None
    except Exception as error:  # the parser's own complaints about a malformed body
        raise MultipartError(400, "InvalidMultipartBody", f"The multipart body is malformed: {error}") from None
    finally:
        for incoming in [parts.incoming, *parts.written]:
            if incoming is not None:
                incoming.abort()  # nothing for a committed file; the temporary of any other
