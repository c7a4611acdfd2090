"""Registry manifests, inference outcomes and the dead-letter store over REST.

Both ingest routes are all-or-nothing per request: one transaction, or a 400 listing every
problem by record (document number, or NDJSON line / array index) and field, with nothing
written — not even dead letters. The CLI's file loads are the ones that dead-letter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from lineagegraph.ingest import deadletter, outcomes
from lineagegraph.ingest.batch import Batch, Problem, load_batches
from lineagegraph.ingest.bodies import decode, json_flaw
from lineagegraph.ingest.manifest_formats import read_json, read_yaml
from lineagegraph.ingest.manifests import load_manifests
from lineagegraph.schema import Node

from .admission import IngestRoute
from .auth import principal_of, require_admin_for
from .content_encoding import TOO_LARGE
from .deps import ActorDep, StoreDep
from .errors import problem_response, read_cursor

# IngestRoute: a write waits its turn by body size (api/admission.py); every body here
# may come gzip-compressed (api/content_encoding.py).
router = APIRouter(prefix="/api/v1", tags=["ingest"], route_class=IngestRoute)

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl",
                "application/json-lines", "text/plain")


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _unsupported(media_type: str, accepted: tuple[str, ...]) -> JSONResponse:
    return problem_response(f"unsupported content type {media_type!r}",
                            [Problem(f"send one of: {', '.join(accepted)}")], 415)


def _body_schema(*types: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        t: {"schema": {"type": "string" if "json" not in t else "array"}} for t in types}}}


def _write(store: Any, batch: Batch) -> dict[str, Any]:
    return load_batches(store, [batch]).to_json()


@router.post("/manifests", openapi_extra=_body_schema(*YAML_TYPES, "application/json"),
             summary="Load registry manifest documents (YAML or JSON, one or many; gzip ok)",
             responses={413: TOO_LARGE})
async def post_manifests(request: Request, store: StoreDep, actor: ActorDep) -> Any:
    media_type = _media_type(request) or "application/yaml"
    if media_type not in (*YAML_TYPES, "application/json"):
        return _unsupported(media_type, (*YAML_TYPES, "application/json"))
    body = await request.body()

    def load() -> dict[str, Any]:
        text = decode(body)
        docs = read_json(text) if media_type == "application/json" else read_yaml(text)

        def check(batch: Batch, stored: Mapping[str, Node]) -> None:
            # `status`, `approved_by`, StageMove and Approval documents record stage moves
            # and approvals, which need `admin` (design §8) however they arrive; so does
            # changing what the gates read of a stored node (the load read them already).
            require_admin_for(principal_of(request), batch.nodes, batch.edges,
                              batch.stage_moves, stored)

        return load_manifests(docs, store, actor=actor, source="api", check=check).to_json()

    return await run_in_threadpool(load)


@router.post("/outcomes", openapi_extra=_body_schema("application/json", *NDJSON_TYPES),
             summary="Load inference outcome records (NDJSON or a JSON array; gzip ok)",
             responses={413: TOO_LARGE})
async def post_outcomes(request: Request, store: StoreDep, actor: ActorDep) -> Any:
    media_type = _media_type(request)
    sent = await request.body()
    if media_type and media_type not in ("application/json", *NDJSON_TYPES):
        return _unsupported(media_type, ("application/json", *NDJSON_TYPES))

    def load() -> dict[str, Any]:
        # With no content type, a body that opens with '[' is a JSON array.
        json_array = media_type == "application/json" or (
            not media_type and sent.lstrip().startswith(b"["))
        items = outcomes.read_body(sent, json_array)
        return _write(store, outcomes.strict_batch(items, store, actor=actor, source="api"))

    return await run_in_threadpool(load)


def _unicode(key: str) -> str:
    # A lone surrogate ("\ud800") would come back in `unknown`, which no response can
    # encode: that was a 500.
    found = json_flaw(key)
    if found is not None:
        raise ValueError(found[1])
    return key


class Replay(BaseModel):
    # A misspelled field ({"key": [...]}) ignored would leave `keys` unset, which replays
    # every pending letter: refused instead, naming the field.
    model_config = ConfigDict(extra="forbid")

    keys: list[Annotated[str, AfterValidator(_unicode)]] | None = Field(
        None, description="keys or unique key prefixes to replay; none: every pending letter")


@router.get("/deadletter", tags=["dead letters"], summary="Rejected records not yet replayed")
async def list_dead_letters(
    store: StoreDep, source: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many")] = 100,
    cursor: Annotated[str | None, Query(description="nextCursor of the previous page")] = None,
) -> dict[str, Any]:
    """Oldest first, at most ``limit`` and 8 Mi characters of JSON a page (at least one
    letter); pass ``nextCursor`` back as ``cursor`` for the next page (null on the last)."""
    letters, after = await run_in_threadpool(
        deadletter.pending_page, store, limit, source, read_cursor(cursor))
    return {"items": [deadletter.describe(letter) for letter in letters],
            "nextCursor": None if after is None else str(after)}


@router.post("/deadletter/replay", tags=["dead letters"],
             summary="Map rejected records again and write those that now pass (gzip ok)",
             responses={413: TOO_LARGE})
async def replay_dead_letters(store: StoreDep, actor: ActorDep,
                              body: Replay | None = None) -> dict[str, Any]:
    """Each letter that now passes is written in its own transaction, audited under the
    caller's token name."""
    result = await run_in_threadpool(deadletter.replay, store, body.keys if body else None,
                                     actor=actor)
    return result.to_json()
