"""OpenLineage ingest over HTTP, Marquez-compatible: the unmodified ``openlineage-python``
client with ``HttpTransport(url=…)`` posts here (its default endpoint ``api/v1/lineage``).

- ``POST /api/v1/lineage``: one RunEvent, DatasetEvent or JobEvent → 201.
- ``POST /api/v1/lineage/batch``: a JSON array, each event its own transaction (the spec's
  rule): 204 when all are written, else 200 with a summary naming each failed index.
- ``GET /api/v1/events/lineage``: the raw events kept, keyset-paged, optionally by run.

Bodies may be gzip-compressed (``Content-Encoding: gzip``). Rejected events go to the
dead-letter store (``lineagegraph deadletter``), where they can be replayed.
"""

from __future__ import annotations

import json
import zlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from lineagegraph.ingest import openlineage
from lineagegraph.ingest.batch import IngestError, Problem

from .deps import ActorDep, StoreDep

router = APIRouter(prefix="/api/v1", tags=["ingest"])

# Decompressed body cap: a small gzip body must not expand into gigabytes.
MAX_BODY_BYTES = 64 * 1024 * 1024


def _decode(body: bytes, encoding: str) -> Any:
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, MAX_BODY_BYTES + 1)
        except zlib.error as error:
            raise IngestError(Problem(f"Content-Encoding gzip, but the body is not gzip: "
                                      f"{error}")) from None
        if len(body) > MAX_BODY_BYTES or inflater.unconsumed_tail:
            raise IngestError(Problem(f"body larger than {MAX_BODY_BYTES} bytes once "
                                      "decompressed"))
    elif encoding not in ("", "identity"):
        raise IngestError(Problem(f"unsupported Content-Encoding {encoding!r} (send gzip or "
                                  "an uncompressed body)"))
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IngestError(Problem(f"malformed JSON: {error}")) from None


async def _json_body(request: Request) -> Any:
    return _decode(await request.body(), request.headers.get("content-encoding", ""))


@router.post("/lineage", status_code=201, summary="Send one OpenLineage event",
             responses={400: {"description": "malformed JSON or a missing/invalid field"}})
async def post_lineage(request: Request, store: StoreDep, actor: ActorDep) -> JSONResponse:
    """One RunEvent (or DatasetEvent/JobEvent): 201 once written. Events of one run
    accumulate; re-sending an event changes nothing (``changed`` is false)."""
    event = await _json_body(request)
    if isinstance(event, list):
        raise IngestError(Problem("expected one event object; post arrays to "
                                  "/api/v1/lineage/batch"))
    result = await run_in_threadpool(openlineage.ingest_event, store, event, actor=actor)
    return JSONResponse(status_code=201, content={
        "changed": result.changed,
        "nodes": {"created": result.nodes.created, "updated": result.nodes.updated},
        "edges": {"created": result.edges.created, "updated": result.edges.updated},
    })


@router.post("/lineage/batch", summary="Send a batch of OpenLineage events",
             responses={204: {"description": "every event was written"},
                        200: {"description": "some events failed: see failedEvents"}})
async def post_lineage_batch(request: Request, store: StoreDep, actor: ActorDep) -> Response:
    """A JSON array of events, each written in its own transaction. 204 when every event
    is written; otherwise 200 with ``summary`` and ``failedEvents`` (index, reason,
    problems). Failed events are dead-lettered."""
    events = await _json_body(request)
    if not isinstance(events, list):
        raise IngestError(Problem("expected a JSON array of events"))
    outcome = await run_in_threadpool(openlineage.ingest_events, store, events, actor=actor)
    if not outcome.failures:
        return Response(status_code=204)
    return JSONResponse(status_code=200, content={
        "status": "partial_success" if outcome.succeeded else "failure",
        "summary": {"received": outcome.received, "successful": outcome.succeeded,
                    "failed": len(outcome.failures)},
        "failedEvents": [failure.to_json() for failure in outcome.failures],
    })


def _cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit():
        raise IngestError(Problem(f"{cursor!r} is not a cursor from this API", field="cursor"))
    return int(cursor)


@router.get("/events/lineage", summary="List kept OpenLineage events")
async def list_lineage_events(
    store: StoreDep,
    run_id: Annotated[str | None, Query(alias="runId", description="only this run's")] = None,
    after: Annotated[datetime | None, Query(description="eventTime ≥ this")] = None,
    before: Annotated[datetime | None, Query(description="eventTime ≤ this")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="nextCursor of the previous page")] = None,
) -> dict[str, Any]:
    """Raw events in the order they were first received, ``limit`` a page; pass
    ``nextCursor`` back as ``cursor`` for the next page (null on the last)."""
    prefix = openlineage.run_key_prefix(run_id) if run_id is not None else None
    records = await run_in_threadpool(
        store.records, openlineage.COLLECTION, key_prefix=prefix, since=after, until=before,
        after_seq=_cursor(cursor), limit=limit + 1)
    page = records[:limit]
    more = len(records) > limit
    return {"events": [r.payload for r in page],
            "nextCursor": str(page[-1].seq) if more and page else None}
