"""A request ID on every HTTP request, so that what a caller saw can be found in the log.

The caller's ``X-Request-ID`` is kept when it is a plain token (a gateway's or a tracing
proxy's ID), else one is made; either way the response carries it back in
``X-Request-ID``. While the request runs it is in ``REQUEST_ID`` (contexts are copied
into the worker threads that run store work); every log record gets it as ``request_id``
(None outside a request; ``request_tag`` is " [request ID]" or empty, for log formats),
and an unexpected error names it: a 500's JSON body, and the message of a GraphQL error
the server masked.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI
from starlette.requests import ClientDisconnect

from .errors import problem_response

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
HEADER = b"x-request-id"
# What a caller's ID may be: it is echoed in a header and written to the log as is.
_ACCEPTED = re.compile(rb"[A-Za-z0-9._:/+=@-]{1,128}")


log = logging.getLogger(__name__)


def current() -> str:
    return REQUEST_ID.get() or "-"


def unexpected() -> str:
    """What a caller is told of an error on the server's side: where to look."""
    return f"unexpected error (request {current()}); the server log has the details"


class RequestIds:
    """Pure ASGI, outermost: the auth and body-limit refusals carry an ID too."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == HEADER), None)
        request_id = (given.decode("ascii") if given and _ACCEPTED.fullmatch(given)
                      else uuid.uuid4().hex)
        header = (HEADER, request_id.encode("ascii"))
        started = False

        async def with_id(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, with_id)
        except ClientDisconnect:
            # The caller hung up before its body arrived: nothing was written and nobody
            # is left to answer. Not a server error (a traceback and a 500 each time).
            log.info("client hung up before sending its whole request: %s %s",
                     scope["method"], scope["path"])
        except Exception:
            # The error boundary, while the ID is still set: logged once with it, and a
            # JSON 500 naming it (Starlette's own would be plain text, outside the ID).
            log.exception("unexpected error in %s %s", scope["method"], scope["path"])
            if started:
                raise
            await problem_response(unexpected(), None, 500, requestId=request_id)(
                scope, receive, with_id)
        finally:
            REQUEST_ID.reset(token)


def _with_request_ids(factory: Any) -> Any:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.request_id = request_id = REQUEST_ID.get()
        # For log formats: nothing outside a request (start-up lines).
        record.request_tag = f" [request {request_id}]" if request_id else ""
        return record

    make.adds_request_ids = True  # type: ignore[attr-defined]
    return make


def tag_log_records() -> None:
    """Every logger's records (uvicorn's access log, strawberry's, ours), in any thread,
    get ``request_id`` and ``request_tag``; once per process."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "adds_request_ids", False):
        logging.setLogRecordFactory(_with_request_ids(factory))


def install_request_ids(app: FastAPI) -> None:
    app.add_middleware(RequestIds)
    tag_log_records()
