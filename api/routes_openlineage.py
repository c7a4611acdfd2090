"""OpenLineage ingest over HTTP, Marquez-compatible: the unmodified ``openlineage-python``
client with ``HttpTransport(HttpConfig(url=…))`` posts here (its default endpoint
``api/v1/lineage``).

- ``POST /api/v1/lineage``: one RunEvent, DatasetEvent or JobEvent → 201.
- ``POST /api/v1/lineage/batch``: a JSON array, each event its own transaction (the spec's
  rule): 204 when all are written, else 200 with a summary naming each failed index.
- ``GET /api/v1/events/lineage``: the raw events kept, keyset-paged, optionally by run.

Bodies may be gzip-compressed (``Content-Encoding: gzip``), up to the configured body
limit once decompressed. Rejected events go to the dead-letter store (``lineagegraph
deadletter``), where they can be replayed.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from lineagegraph.graph.store import RecordFilter
from lineagegraph.ingest import deadletter, openlineage
from lineagegraph.ingest.batch import IngestError, Problem
from lineagegraph.ingest.bodies import load_json
from lineagegraph.schema import InvalidId, SchemaError
from lineagegraph.schema.models import utc

from .admission import IngestRoute
from .content_encoding import TOO_LARGE
from .deps import ActorDep, StoreDep
from .errors import (
    bad_parameter,
    problem_response,
    read_cursor,
    unavailable_message,
    unavailable_response,
)

# IngestRoute: a write waits its turn by body size (api/admission.py); a gzip body is
# inflated before a route reads it (api/content_encoding.py).
router = APIRouter(prefix="/api/v1", tags=["ingest"], route_class=IngestRoute)



def _decode(body: bytes, first_record: int | None) -> Any:
    try:
        # Strictly decoded: json.loads would let UTF-8-encoded surrogates through.
        text = body.decode(json.detect_encoding(body))
        return load_json(text, first_record=first_record)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IngestError(Problem(f"malformed JSON: {error}")) from None


async def _json_body(request: Request, first_record: int | None = None) -> Any:
    """The body's JSON value (inflated already: ``InflatingRoute``), problems numbering
    records from ``first_record`` (see ``bodies.parse_json``); decoded in a thread, as a
    large body takes a while."""
    return await run_in_threadpool(_decode, await request.body(), first_record)


@router.post("/lineage", status_code=201, summary="Send one OpenLineage event",
             responses={400: {"description": "malformed JSON (nothing kept), or a missing "
                                  "or invalid field (the event is kept as a dead letter)"},
                        413: TOO_LARGE})
async def post_lineage(request: Request, store: StoreDep, actor: ActorDep) -> JSONResponse:
    """One RunEvent (or DatasetEvent/JobEvent): 201 once written. Events of one run
    accumulate; re-sending an event changes nothing (``changed`` is false)."""
    event = await _json_body(request)
    if isinstance(event, list):
        raise IngestError(Problem("expected one event object; post arrays to "
                                  "/api/v1/lineage/batch"))
    try:
        result = await run_in_threadpool(openlineage.ingest_event, store, event, actor=actor)
    except (IngestError, SchemaError, InvalidId) as error:
        return _dead_lettered(event, error)
    return JSONResponse(status_code=201, content={
        "changed": result.changed,
        "nodes": {"created": result.nodes.created, "updated": result.nodes.updated},
        "edges": {"created": result.edges.created, "updated": result.edges.updated},
    })


def _dead_lettered(event: Any, error: Exception) -> JSONResponse:
    """The refusal of an event ``ingest_event`` kept as a dead letter says so, with the
    letter's key (replay takes a prefix; ``deadletter list`` shows 12 characters): the
    generic handlers would say nothing was written."""
    key = deadletter.letter_key(openlineage.SOURCE, event)
    status = 422 if isinstance(error, SchemaError) else 400
    return problem_response(f"invalid event; kept as a dead letter (key {key[:12]})",
                            openlineage.problems_of(error), status, deadLetterKey=key)


@router.post("/lineage/batch", summary="Send a batch of OpenLineage events",
             responses={204: {"description": "every event was written"},
                        200: {"description": "some events failed: see failedEvents"},
                        413: TOO_LARGE,
                        500: {"description": "the store failed: the batch stopped, and "
                                             "failedEvents lists the events not written"},
                        503: {"description": "as 500, the store being unavailable: "
                                             "send the events not written again later"}})
async def post_lineage_batch(request: Request, store: StoreDep, actor: ActorDep) -> Response:
    """A JSON array of events, each written in its own transaction. 204 when every event
    is written; otherwise 200 with ``summary`` and ``failedEvents`` (index, reason,
    problems). Failed events are dead-lettered. A body that is not JSON the graph can keep
    (too deep, NaN, a lone surrogate) is refused whole, naming the item. A failure of the
    store stops the batch: the same summary, listing the events not written, with 503
    (and ``Retry-After``) when the store is unavailable, else 500."""
    events = await _json_body(request, first_record=0)
    if not isinstance(events, list):
        raise IngestError(Problem("expected a JSON array of events"))
    outcome = await run_in_threadpool(openlineage.ingest_events, store, events, actor=actor)
    if not outcome.failures:
        return Response(status_code=204)
    content: dict[str, Any] = {
        "status": "partial_success" if outcome.succeeded else "failure",
        "summary": {"received": outcome.received, "successful": outcome.succeeded,
                    "failed": len(outcome.failures)},
        "failedEvents": [failure.to_json() for failure in outcome.failures],
    }
    if outcome.unavailable is not None:
        message = unavailable_message(outcome.unavailable, "POST /api/v1/lineage/batch")
        return unavailable_response(message, **content)
    return JSONResponse(content, status_code=500 if outcome.stopped else 200)


def _utc(name: str, value: datetime | None) -> datetime | None:
    """``value`` in UTC (a naive one read as UTC, as the stores do), or a 400 naming the
    parameter when UTC has no such time (9999-12-31T23:59:59-23:59 is in year 10000)."""
    if value is None:
        return None
    try:
        return utc(value)
    except OverflowError:
        raise bad_parameter(name, f"{value.isoformat()} is out of range in UTC") from None


@router.get("/events/lineage", summary="List kept OpenLineage events")
async def list_lineage_events(
    store: StoreDep,
    run_id: Annotated[str | None, Query(alias="runId", description="only this run's")] = None,
    after: Annotated[datetime | None, Query(description="eventTime ≥ this")] = None,
    before: Annotated[datetime | None, Query(description="eventTime ≤ this")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="nextCursor of the previous page")] = None,
) -> dict[str, Any]:
    """Raw events in the order they were first received, at most ``limit`` and 8 Mi
    characters of JSON a page (at least one event); pass ``nextCursor`` back as
    ``cursor`` for the next page (null on the last)."""
    prefix = openlineage.run_key_prefix(run_id) if run_id is not None else None
    since, until = _utc("after", after), _utc("before", before)
    if since is not None and until is not None and until < since:  # as GraphQL windows are
        raise bad_parameter("before", f"{until.isoformat()} is before after "
                                      f"({since.isoformat()})")
    where = RecordFilter(openlineage.COLLECTION, key_prefix=prefix, since=since, until=until,
                         after_seq=read_cursor(cursor))
    page = await run_in_threadpool(store.record_page, where, limit=limit)
    return {"events": [r.payload for r in page.records],
            "nextCursor": str(page.records[-1].seq) if page.more else None}
