"""Request bodies sent compressed (``Content-Encoding: gzip``), as OpenLineage's HTTP
transport and bulk shippers of logs send them: inflated within the body size limit, so a
small body that would expand into gigabytes stops at the limit."""

from __future__ import annotations

import zlib

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from lineagegraph.ingest.batch import IngestError, Problem

# For the routes' OpenAPI: what a 413 means on them.
TOO_LARGE = {"description": "larger than LINEAGEGRAPH_MAX_BODY_BYTES, as sent or decompressed"}


class DecompressedTooLarge(Exception):
    """A compressed body that inflates past the configured limit: answered as the
    BodySizeLimit middleware answers one that is too large as sent."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def install_decompressed_limit(app: FastAPI) -> None:
    @app.exception_handler(DecompressedTooLarge)
    async def too_large(_: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, DecompressedTooLarge)
        return JSONResponse({"error": f"request body larger than {error.limit} bytes once "
                             "decompressed (LINEAGEGRAPH_MAX_BODY_BYTES)",
                             "code": "PAYLOAD_TOO_LARGE"}, status_code=413)


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The body as sent before its ``Content-Encoding`` (gzip, or none)."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return _gunzip(body, limit)
    if encoding not in ("", "identity"):
        raise IngestError(Problem(f"unsupported Content-Encoding {encoding!r} (send gzip or "
                                  "an uncompressed body)"))
    return body


def _gunzip(body: bytes, limit: int) -> bytes:
    """The body inflated one gzip member at a time, never past ``limit`` + 1 bytes."""
    members: list[bytes] = []
    size = 0
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            members.append(inflater.decompress(body, limit + 1 - size))
        except zlib.error as error:
            raise IngestError(Problem(f"Content-Encoding gzip, but the body is not gzip: "
                                      f"{error}")) from None
        size += len(members[-1])
        if size > limit:
            raise DecompressedTooLarge(limit)
        if not inflater.eof:
            raise IngestError(Problem("Content-Encoding gzip, but the body is truncated"))
        body = inflater.unused_data  # the next member, if any
        if not body:
            return members[0] if len(members) == 1 else b"".join(members)
