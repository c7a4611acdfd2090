"""The GraphQL schema: types derived from ``schema/`` declarations, resolvers over the
graph analyses. Resolvers are ``async`` and run store work in a worker thread, so one slow
walk never blocks the event loop."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import TypeVar

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.fastapi import BaseContext
from strawberry.scalars import JSON
from strawberry.types import Info

from lineagegraph.graph.store import Direction as StoreDirection
from lineagegraph.graph.store import GraphStore
from lineagegraph.graph.walk import Subgraph as WalkResult
from lineagegraph.graph.walk import walk
from lineagegraph.schema import NODE_KINDS, InvalidId, SchemaError, canonical_id
from lineagegraph.schema import Node as NodeRecord

from .settings import Settings

T = TypeVar("T")


class UserError(Exception):
    """An error the caller caused and can fix; shown unmasked with its message."""


class QueryTimeout(UserError):
    """A query ran past the configured time limit."""


class Context(BaseContext):
    """Per-request context: the store and settings, injected by the app."""

    def __init__(self, store: GraphStore, settings: Settings) -> None:
        super().__init__()
        self.store = store
        self.settings = settings


async def run_bounded(info: Info, work: Callable[[], T]) -> T:
    """Run store work in a thread, bounded by the configured per-query timeout."""
    context: Context = info.context
    timeout = context.settings.query_timeout_s
    try:
        return await asyncio.wait_for(asyncio.to_thread(work), timeout)
    except TimeoutError:
        raise QueryTimeout(f"query timed out after {timeout:g}s (query_timeout_s)") from None
    except (InvalidId, SchemaError) as error:
        raise UserError(str(error)) from error


@strawberry.interface(name="Node", description="Any node of the lineage graph.")
class NodeType:
    id: strawberry.ID
    kind: str
    name: str
    version: str | None
    created_at: datetime | None
    properties: JSON | None


def _kind_type(label: str, description: str) -> type:
    cls = type(label, (NodeType,), {"__module__": __name__})
    return strawberry.type(cls, name=label, description=description)


# One object type per declared kind, so clients can write `... on ModelVersion`.
NODE_TYPES: dict[str, type] = {k.label: _kind_type(k.label, k.description) for k in NODE_KINDS}


def to_gql(node: NodeRecord) -> NodeType:
    return NODE_TYPES[node.kind](
        id=strawberry.ID(node.id), kind=node.kind, name=node.name, version=node.version,
        created_at=node.created_at, properties=node.properties,
    )


@strawberry.enum(description="UPSTREAM follows what a node depends on; DOWNSTREAM what "
                 "depends on it; BOTH is the union of the two walks.")
class Direction(Enum):
    UPSTREAM = "UPSTREAM"
    DOWNSTREAM = "DOWNSTREAM"
    BOTH = "BOTH"


@strawberry.type
class Edge:
    source: strawberry.ID
    target: strawberry.ID
    type: str
    properties: JSON | None = None


@strawberry.type
class NodeAtDegree:
    node: NodeType
    degree: int


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Subgraph:
    nodes: list[NodeAtDegree]
    edges: list[Edge]
    truncated: bool
    page_info: PageInfo | None = None


def _cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"pos:{position}".encode()).decode()


def _position(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("pos:")) + 1
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"after: {cursor!r} is not a cursor from this API") from None


def subgraph_page(result: WalkResult, first: int | None, after: str | None) -> Subgraph:
    """A page of a walk's nodes (by degree, then ID) and the edges among the page's nodes
    and the nodes before it."""
    ordered = result.ordered()
    start = _position(after)
    end = len(ordered) if first is None else min(len(ordered), start + max(first, 0))
    page = ordered[start:end]
    shown = {node.id for node, _ in ordered[:end]}
    page_ids = {node.id for node, _ in page}
    edges = [
        Edge(source=strawberry.ID(e.source), target=strawberry.ID(e.target), type=e.type,
             properties=e.properties or None)
        for e in result.edges.values()
        if (e.source in page_ids or e.target in page_ids) and e.source in shown
        and e.target in shown
    ]
    return Subgraph(
        nodes=[NodeAtDegree(node=to_gql(node), degree=degree) for node, degree in page],
        edges=sorted(edges, key=lambda e: (e.source, e.type, e.target)),
        truncated=result.truncated,
        page_info=PageInfo(has_next_page=end < len(ordered),
                           end_cursor=_cursor(end - 1) if page else after),
    )


def _parse(node_id: str) -> str:
    try:
        return canonical_id(node_id)
    except InvalidId as error:
        raise UserError(f"id: {error}") from None


@strawberry.type
class Query:
    @strawberry.field(description="One node by its ID (`model:fraud-detector@7`; `@v7` "
                      "is accepted too).")
    async def node(self, info: Info, id: strawberry.ID) -> NodeType | None:
        node_id = _parse(id)
        context: Context = info.context
        found = await run_bounded(info, lambda: context.store.get([node_id]))
        return to_gql(found[node_id]) if node_id in found else None

    @strawberry.field(description="Nodes up to `depth` hops from `id`, each with its degree "
                      "(fewest hops). Walks follow lineage edges only (not SUPERSEDES, "
                      "EVALUATES, APPROVES). `kinds` filters the nodes returned, not the "
                      "walk. Depth is capped by configuration; `truncated` says a cap cut "
                      "the walk.")
    async def lineage(
        self,
        info: Info,
        id: strawberry.ID,
        direction: Direction = Direction.UPSTREAM,
        depth: int = 3,
        kinds: list[str] | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Subgraph:
        node_id = _parse(id)
        context: Context = info.context
        if depth < 0:
            raise UserError("depth: must be ≥ 0")
        unknown = sorted(set(kinds or ()) - set(NODE_TYPES))
        if unknown:
            raise UserError(f"kinds: unknown {unknown} (known: {sorted(NODE_TYPES)})")

        def work() -> WalkResult:
            return walk(context.store, node_id, StoreDirection(direction.value), depth,
                        limits=context.settings.walk_limits, kinds=kinds)

        result = await run_bounded(info, work)
        if not result.nodes:
            raise UserError(f"id: no node {node_id}")
        return subgraph_page(result, first, after)


def _should_mask(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, UserError)


def build_schema(settings: Settings) -> strawberry.Schema:
    return strawberry.Schema(
        query=Query,
        types=list(NODE_TYPES.values()),
        extensions=[
            # Factories: strawberry builds fresh extension instances per request.
            lambda: QueryDepthLimiter(max_depth=settings.graphql_max_depth),
            lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
            lambda: MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases),
            lambda: MaskErrors(should_mask_error=_should_mask),
        ],
    )


def schema_sdl() -> str:
    """The SDL clients build against (kept in ``schema/schema.graphql``)."""
    return build_schema(Settings()).as_str() + "\n"

