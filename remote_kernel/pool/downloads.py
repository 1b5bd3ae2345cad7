"""A file download's HTTP answer: the bytes the file had when the download started, or a cut connection.

The size is fixed when the file is opened (its Content-Length); `files.read_chunks` sends that many bytes
from the open fd. A file that session code truncates meanwhile cannot be sent whole any more: the answer
is then left unfinished, so uvicorn closes the connection and the client sees a body shorter than its
Content-Length (an error), never a short file that looks complete and never a traceback in the pool's log.
"""
from __future__ import annotations

import logging

from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import StreamingResponse
from starlette.types import Send

from remote_kernel.pool import files

log = logging.getLogger("remote_kernel.pool")


class FileDownload(StreamingResponse):
    """StreamingResponse over `files.read_chunks` that ends a shrunken file's download by cutting it."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        except files.FileShrank as shrank:
            log.warning("download cut: %s", shrank)


class AnyPath(Convertor[str]):
    """Starlette's `path` convertor, but matching every character: a file named `a\\nb.txt` (%0A in the
    URL) is listed, so it must be downloadable (`.*` stops at a newline)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", AnyPath())
