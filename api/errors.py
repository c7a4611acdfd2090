"""Bad input becomes a 4xx with a JSON body that says what and where — never a 500.

REST errors share one shape: ``{"error": "...", "code": "...", "problems": [{"record"?,
"field"?, "message"}]}`` (``problem_response``). Errors of the GraphQL transport, a refused
token on ``/graphql`` included, are ``{"errors": [{"message": ..., "extensions": {"code":
...}}]}``, as GraphQL clients read them.

A store that cannot answer (``StoreUnavailable``) is a 503 with ``Retry-After`` and code
``STORE_UNAVAILABLE``, one line in the log; a Neo4j statement past its time limit is a 504
with code ``QUERY_TIMEOUT``. GraphQL answers both with the same codes in
``extensions.code`` (``graphql_types.Context.run``).
"""

from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus
from typing import Any

from cross_web import HTTPException as GraphQLHTTPError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.exceptions import HTTPException
from starlette.responses import Response
from strawberry.fastapi import GraphQLRouter
from strawberry.schema.base import BaseSchema
from strawberry.types.unset import UNSET

from lineagegraph.graph.deadline import DeadlinePassed
from lineagegraph.graph.store import MetadataMoved, StageMoved, StoreUnavailable, StoreUpgraded
from lineagegraph.ingest.batch import IngestError, Problem
from lineagegraph.ingest.bodies import load_json
from lineagegraph.schema import InvalidId, SchemaError
from lineagegraph.schema.models import validation_message

log = logging.getLogger(__name__)

NOTHING_WRITTEN = "invalid input; nothing was written"
# A Neo4j restart takes 5-20 s: clients come back soon rather than give up.
RETRY_AFTER_S = "5"


# A status's code where HTTP's own name would say less (401 is about authentication).
_CODES = {401: "UNAUTHENTICATED", 413: "PAYLOAD_TOO_LARGE", 422: "BAD_REQUEST",
          500: "INTERNAL", 503: "STORE_UNAVAILABLE", 504: "QUERY_TIMEOUT"}
GRAPHQL_PATH = "/graphql"


def error_code(status_code: int) -> str:
    return _CODES.get(status_code) or HTTPStatus(status_code).name


def on_graphql(path: str) -> bool:
    """The request is GraphQL's: its errors take GraphQL's shape."""
    return path.rstrip("/") == GRAPHQL_PATH


def problem_response(error: str, problems: list[Problem] | None = None, status_code: int = 400,
                     headers: dict[str, str] | None = None, *, code: str | None = None,
                     path: str = "", **extra: Any) -> JSONResponse:
    """An error the service answers itself, in the caller's shape: REST's ``{"error",
    "code", "problems"}`` (the problems default to the error itself), or on ``/graphql`` a
    GraphQL transport error ``{"errors": [{"message", "extensions": {"code", …}}]}``, as
    GraphQL clients read them (a refused token there too)."""
    code = code or error_code(status_code)
    if on_graphql(path):
        body: dict[str, Any] = {"errors": [{"message": error,
                                            "extensions": {"code": code, **extra}}]}
    else:
        listed = problems if problems is not None else [Problem(error)]
        body = {"error": error, "code": code, "problems": [p.to_json() for p in listed],
                **extra}
    return JSONResponse(body, status_code=status_code, headers=headers)


def unavailable_message(error: StoreUnavailable, where: str) -> str:
    """What a caller is told when the store cannot answer; the log gets one line with
    the underlying error (no traceback: it is the store's state, not a bug here)."""
    log.warning("store unavailable (%s): %s", where, error.detail or error)
    if isinstance(error, StoreUpgraded):  # this server's to restart: said as it is
        return str(error)
    return f"the store is unavailable ({error}); try again shortly"


def unavailable_response(message: str, path: str = "", *, code: str | None = None,
                         **extra: Any) -> JSONResponse:
    """A 503 to try again after ``RETRY_AFTER_S``."""
    return problem_response(message, None, 503, {"Retry-After": RETRY_AFTER_S}, code=code,
                            path=path, **extra)


def timed_out(seconds: float) -> str:
    return f"query timed out after {seconds:g}s (LINEAGEGRAPH_QUERY_TIMEOUT_S)"


def bad_parameter(name: str, message: str) -> RequestValidationError:
    """A query parameter checked in a route: answered like one FastAPI refused."""
    return RequestValidationError([{"type": "value_error", "loc": ("query", name),
                                    "msg": message}])


_CURSOR = re.compile("[0-9]{1,19}")
MAX_SEQ = 2**63 - 1  # the largest integer SQLite and Neo4j hold


def read_cursor(cursor: str | None) -> int | None:
    """A REST page's cursor, a record's seq: ASCII digits (``isdigit`` also takes "²",
    which ``int`` refuses) within a signed 64-bit integer, all SQLite or Neo4j can hold."""
    if cursor is None:
        return None
    if _CURSOR.fullmatch(cursor) is None or int(cursor) > MAX_SEQ:
        raise bad_parameter("cursor", f"{cursor!r} is not a cursor from this API")
    return int(cursor)


def _printable(text: str) -> str:
    # Messages may quote the input; a lone surrogate in it would fail the response.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _validation_problem(error: dict[str, Any]) -> Problem:
    """One pydantic error as a Problem: the parameter or body path, never the input
    (a NaN or a lone surrogate echoed back cannot be encoded: that was a 500)."""
    where, *path = error.get("loc") or ("request",)
    if error.get("type") == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        return Problem(_printable(f"malformed JSON: {reason}"))
    message = validation_message(error)
    if error.get("type") == "extra_forbidden":  # pydantic: "Extra inputs are not permitted"
        message = "unknown field (misspelled?); nothing was done"
    if not path:  # the whole body or query: say which
        return Problem(_printable(f"{where}: {message}"))
    field = ".".join(str(part) for part in path)
    return Problem(_printable(message), field=_printable(field))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(IngestError)
    async def ingest_error(request: Request, error: IngestError) -> JSONResponse:
        if on_graphql(request.url.path):  # a body that does not inflate
            return problem_response("; ".join(p.message for p in error.problems),
                                    path=GRAPHQL_PATH)
        return problem_response(NOTHING_WRITTEN, error.problems)

    @app.exception_handler(SchemaError)
    async def schema_error(_: Request, error: SchemaError) -> JSONResponse:
        return problem_response("the input breaks the graph schema; nothing was written",
                                [Problem(error.message, field=error.where)], 422)

    @app.exception_handler(InvalidId)
    async def invalid_id(_: Request, error: InvalidId) -> JSONResponse:
        return problem_response("invalid ID", [Problem(str(error))])

    @app.exception_handler(MetadataMoved)
    @app.exception_handler(StageMoved)
    async def writers_raced(_: Request, error: Exception) -> JSONResponse:
        # Other writers landed first on every one of the write's mappings: nothing of it
        # was written, and sending it again is safe. A 503 with Retry-After, not a 409:
        # it is the store's contention, not the request's, and the OpenLineage client's
        # HTTP transport retries 503s (it drops a 409).
        return unavailable_response(f"{error}: other writers kept landing first; nothing "
                                    "was written, send it again", code="WRITE_CONFLICT")

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, error: StoreUnavailable) -> JSONResponse:
        return unavailable_response(
            unavailable_message(error, f"{request.method} {request.url.path}"))

    @app.exception_handler(DeadlinePassed)
    async def query_timeout(request: Request, _: DeadlinePassed) -> JSONResponse:
        # REST work sets no deadline: this is Neo4j's per-statement limit.
        message = timed_out(request.app.state.settings.query_timeout_s)
        return problem_response(message, None, 504)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        # 400, not FastAPI's 422 {"detail": …}: the project's shape, naming the parameter.
        return problem_response("invalid request",
                                [_validation_problem(e) for e in error.errors()])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        # 404, 405, and FastAPI's "error parsing the body" (a body nested too deeply).
        if error.status_code in (204, 304):  # no body allowed
            return Response(status_code=error.status_code, headers=error.headers)
        headers = error.headers
        if error.status_code == 405 and on_graphql(request.url.path):
            # starlette names the first route's method alone (GET; POST serves it too)
            headers = {**(headers or {}), "Allow": request.app.state.graphql_methods}
        detail = _printable(str(error.detail))
        return problem_response(detail, [Problem(detail)], error.status_code, headers,
                                path=request.url.path)


class GraphQLJsonErrors(GraphQLRouter):
    """strawberry's router, with its transport errors (a body that is not JSON, a mutation
    over GET, an unsupported content type) answered as JSON ``{"errors": [...]}`` rather
    than text/plain, and JSON the service cannot answer (nested too deeply for the parser,
    NaN, a lone surrogate) refused with a 400 before it reaches the schema.

    No websocket: the schema has no subscriptions, so no subscription protocol is offered
    and strawberry's websocket route is dropped. A handshake then meets no route and is
    refused (HTTP 403 from the server) before any of the app's code runs — that route
    built the context from a ``Request``, which a websocket is not: a 500."""

    def __init__(self, schema: BaseSchema, **options: Any) -> None:
        super().__init__(schema, subscription_protocols=(), **options)
        self.routes[:] = [r for r in self.routes if not isinstance(r, APIWebSocketRoute)]
        # What a 405 at /graphql names in its Allow header.
        self.methods = ", ".join(sorted({m for r in self.routes if isinstance(r, APIRoute)
                                         for m in r.methods}))

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        try:
            return await super().run(request, context=context, root_value=root_value)
        except GraphQLHTTPError as error:
            if self.is_websocket_request(request):
                raise
            return problem_response(error.reason, status_code=error.status_code,
                                    code="BAD_REQUEST", path=GRAPHQL_PATH)

    def decode_json(self, data: str | bytes) -> object:
        try:
            text = data if isinstance(data, str) else data.decode(json.detect_encoding(data))
            value = load_json(text)
        except UnicodeDecodeError as error:
            raise GraphQLHTTPError(400, f"the body is not valid Unicode: {error}") from None
        except IngestError as error:
            raise GraphQLHTTPError(400, _printable(str(error))) from None
        # The body comes as bytes (query parameters and form fields as str, where strawberry
        # checks the value's type itself): strawberry reads a body that is a JSON scalar
        # with ``.get``, an AttributeError and a 500.
        if isinstance(data, bytes) and not isinstance(value, dict | list):
            raise GraphQLHTTPError(400, "the body must be a JSON object, a GraphQL request "
                                   f'such as {{"query": "…"}}, not {_json_kind(value)}')
        return value


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a string" if isinstance(value, str) else "a number"
