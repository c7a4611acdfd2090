"""Request bodies sent compressed (``Content-Encoding: gzip``), as OpenLineage's HTTP
transport and bulk shippers of logs send them: inflated within the body size limit, so a
small body that would expand into gigabytes stops at the limit.

One mechanism for every ingest route and /graphql: the routers' ``route_class`` is
``InflatingRoute``, so a route reads ``await request.body()`` as sent before its encoding,
and a route whose body FastAPI parses into a model (dead-letter replay) sees the inflated
JSON too."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope

from lineagegraph.ingest.batch import IngestError, Problem

from .errors import problem_response

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
    async def too_large(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, DecompressedTooLarge)
        return problem_response(f"request body larger than {error.limit} bytes once "
                                "decompressed (LINEAGEGRAPH_MAX_BODY_BYTES)", None, 413,
                                path=request.url.path)


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The body as sent before its ``Content-Encoding`` (gzip, or none)."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return _gunzip(body, limit)
    if encoding not in ("", "identity"):
        raise IngestError(Problem(f"unsupported Content-Encoding {encoding!r} (send gzip or "
                                  "an uncompressed body)"))
    return body


# zlib copies the input that follows a member's end (``unused_data``): fed the rest of the
# body at each member, a body of many tiny members was quadratic (320k empty members, 6 MB,
# took 19 s). Each member is fed in chunks from ``_FIRST_CHUNK`` bytes, doubling up to
# ``_LAST_CHUNK``, so what is copied past a member's end is at most about its own size.
_FIRST_CHUNK = 64
_LAST_CHUNK = 1024 * 1024


def _gunzip(body: bytes, limit: int) -> bytes:
    """The body inflated one gzip member at a time, never past ``limit`` + 1 bytes, in time
    linear in its size."""
    view = memoryview(body)
    pieces: list[bytes] = []
    size = 0
    start = 0
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        end, step = start, _FIRST_CHUNK
        while not inflater.eof:
            if end >= len(view):
                raise IngestError(Problem("Content-Encoding gzip, but the body is truncated"))
            chunk = view[end:end + step]
            end += len(chunk)
            step = min(2 * step, _LAST_CHUNK)
            try:
                # Output capped at what is left under the limit: if capped, the limit is
                # passed; else the whole chunk was consumed (no unconsumed_tail to feed).
                piece = inflater.decompress(chunk, limit + 1 - size)
            except zlib.error as error:
                raise IngestError(Problem(f"Content-Encoding gzip, but the body is not gzip: "
                                          f"{error}")) from None
            size += len(piece)
            if size > limit:
                raise DecompressedTooLarge(limit)
            if piece:
                pieces.append(piece)
        start = end - len(inflater.unused_data)  # the next member, if any
        if start >= len(view):
            return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class _Inflated(Request):
    """A request whose body is already read and inflated."""

    def __init__(self, scope: Scope, receive: Receive, body: bytes) -> None:
        super().__init__(scope, receive)
        self._body = body  # what Request.body() returns once read


class InflatingRoute(APIRoute):
    """A route that inflates a ``Content-Encoding: gzip`` body before anything reads it.

    Inflated here, ahead of the route's own handler, so a body that is not gzip is a 400
    saying so and one past the limit a 413, rather than FastAPI's bare "error parsing the
    body" for a route with a model body. In a worker thread: up to the body limit of
    inflating would stall the event loop."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def inflating_handler(request: Request) -> Response:
            encoding = request.headers.get("content-encoding")
            if encoding is not None and request.method not in ("GET", "HEAD"):
                limit: int = request.app.state.settings.max_body_bytes
                body = await run_in_threadpool(inflate, await request.body(), encoding, limit)
                request = _Inflated(request.scope, request.receive, body)
            return await handler(request)

        return inflating_handler
