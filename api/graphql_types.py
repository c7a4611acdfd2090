"""GraphQL object types. Node types are derived from the kinds declared in ``schema/``;
result types mirror the analyses in ``graph/``."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Collection, Iterator
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

import strawberry
from strawberry.dataloader import DataLoader
from strawberry.extensions import SchemaExtension
from strawberry.fastapi import BaseContext
from strawberry.scalars import JSON
from strawberry.types import Info

from lineagegraph.graph import impact, registry
from lineagegraph.graph.deadline import DeadlinePassed
from lineagegraph.graph.drift import DriftCandidate as DriftResult
from lineagegraph.graph.store import PAGE_CHARS, GraphStore, StoreUnavailable, fitting
from lineagegraph.graph.trace import Trace as TraceResult
from lineagegraph.graph.trace import live_then, served_live
from lineagegraph.graph.walk import Subgraph as WalkResult
from lineagegraph.schema import NODE_KINDS, InvalidId, SchemaError, canonical_id
from lineagegraph.schema import Node as NodeRecord
from lineagegraph.schema import StageMove as StageMoveRecord
from lineagegraph.schema.bounds import MAX_ID_PART_BYTES, id_flaw, shown
from lineagegraph.schema.models import error_message, utc

from .errors import timed_out, unavailable_message
from .query_workers import NotStarted, QueryWorkers
from .response_order import document_order, in_document_order

if TYPE_CHECKING:
    from .settings import Settings

T = TypeVar("T")


class UserError(Exception):
    """An error the caller caused and can fix; shown unmasked with its message. graphql-core
    copies ``extensions`` into the error, so clients can branch on the code."""

    extensions = {"code": "BAD_USER_INPUT"}


class QueryTimeout(UserError):
    """A query ran past the configured time limit."""

    extensions = {"code": "QUERY_TIMEOUT"}


class Unavailable(UserError):
    """The store cannot answer now (``StoreUnavailable``): said, not masked, so that the
    caller knows to try again."""

    extensions = {"code": "STORE_UNAVAILABLE"}


class ResponseWarnings(SchemaExtension):
    """The fields' ``Context.warn`` warnings, as the response's ``extensions.warnings``:
    a list answer (``driftSources``) has no field of its own to say a cap cut it."""

    def get_results(self) -> dict[str, Any]:
        context = self.execution_context
        warnings = getattr(context.context, "warnings", None)
        if not warnings:
            return {}
        place = document_order(context.graphql_document, context.operation_name)
        return {"warnings": in_document_order(warnings, lambda w: w["path"], place)}


class ErrorsInDocumentOrder(SchemaExtension):
    """The response's errors in the order their fields are written, as warnings are:
    graphql-core lists them as the fields' work fails, and fields run at once."""

    def on_execute(self) -> Iterator[None]:
        yield
        context = self.execution_context
        result = context.result
        if result is not None and result.errors and len(result.errors) > 1:
            place = document_order(context.graphql_document, context.operation_name)
            result.errors = in_document_order(result.errors, lambda e: e.path, place)


def utc_arg(name: str, value: datetime | None) -> datetime | None:
    """A time argument in UTC before any store sees it, or the caller's error naming the
    argument: a time with no UTC equivalent is said alike by both stores (Neo4j's driver
    said "Ticks out of range")."""
    try:
        return utc(value) if value is not None else None
    except ValueError as error:
        raise UserError(f"{name}: {error}") from None


def window_args(since: datetime | None,
                until: datetime | None) -> tuple[datetime | None, datetime | None]:
    """``[since, until]`` in UTC; one that ends before it starts is the caller's mistake,
    not an empty answer."""
    start, end = utc_arg("since", since), utc_arg("until", until)
    if start is not None and end is not None and end < start:
        raise UserError(f"until: {end.isoformat()} is before since ({start.isoformat()})")
    return start, end


def node_id_arg(text: str, field: str = "id") -> str:
    """An ID argument in canonical form, or the caller's error naming the argument."""
    try:
        return canonical_id(text)
    except InvalidId as error:
        raise UserError(f"{field}: {error}") from None


def id_part_arg(field: str, value: str) -> None:
    """The caller's error naming ``field`` when ``value`` could be no single part of an ID
    (a request ID: ``MAX_ID_PART_BYTES``, no control character), so a query with one no
    node can have is told so, not answered null. (A whole ID's name may be longer: an
    approval's joins a bundle's ID, an approver and a gate.)"""
    flaw = id_flaw(value, MAX_ID_PART_BYTES)
    if flaw is not None:  # quoted and cut short as an ID is (``ids.parse_id``)
        raise UserError(f"{field}: {shown(value)} {flaw}")


class Context(BaseContext):
    """Per request: the store, the settings, and DataLoaders (new each request, so nothing
    is cached across requests) that batch nested lookups into one store call."""

    def __init__(self, store: GraphStore, settings: Settings,
                 workers: QueryWorkers | None = None) -> None:
        super().__init__()
        self.store = store
        self.settings = settings
        # The app's, shared by its requests; a query run alone (CLI) gets its own.
        self.workers = workers or QueryWorkers(settings.query_worker_count)
        # One budget for the whole query, however many fields run store work.
        self.deadline = time.monotonic() + settings.query_timeout_s
        # What a field's type has no place to say (``ResponseWarnings``).
        self.warnings: list[dict[str, Any]] = []
        self.bundle_parts = DataLoader(load_fn=self._load_bundle_parts)

    async def _load_bundle_parts(self, ids: list[str]) -> list[registry.BundleParts]:
        parts = await self.run(lambda: registry.bundle_parts(self.store, ids))
        return [parts[i] for i in ids]

    def warn(self, info: Info, message: str) -> None:
        """A warning about the field ``info`` resolves, in the response's
        ``extensions.warnings`` with the field's path."""
        self.warnings.append({"path": info.path.as_list(), "message": message})

    async def run(self, work: Callable[[], T]) -> T:
        """Run store work in a thread, within what is left of the query's time budget.
        The stores see the deadline too, so work that runs past it stops in its thread
        rather than holding a worker that the next queries need."""
        try:
            if self.deadline <= time.monotonic():
                raise DeadlinePassed
            return await self.workers.run(self.deadline, work)
        except NotStarted:
            raise QueryTimeout(timed_out(self.settings.query_timeout_s) + (
                f": no query worker was free (LINEAGEGRAPH_QUERY_WORKERS, "
                f"{self.workers.count} here, all busy)")) from None
        except (TimeoutError, DeadlinePassed):
            raise QueryTimeout(timed_out(self.settings.query_timeout_s)) from None
        except StoreUnavailable as error:
            raise Unavailable(unavailable_message(error, "GraphQL")) from error
        except (InvalidId, SchemaError, ValueError) as error:
            raise UserError(error_message(error)) from error
        except OverflowError as error:  # a date argument at the edge of the calendar
            raise UserError(f"a date is out of range: {error}") from error


# -- nodes ----------------------------------------------------------------------------------


@strawberry.interface(name="Node", description="Any node of the lineage graph.")
class NodeType:
    id: strawberry.ID
    kind: str
    name: str
    version: str | None
    created_at: datetime | None
    properties: JSON | None

    @staticmethod
    def resolve_type(obj: Any, info: Any, abstract_type: Any) -> str:
        # Every node object is an instance of its kind's type, named after the kind:
        # cheaper than strawberry's generic lookup, which runs once per node returned.
        return obj.kind


async def _part(info: Info, bundle_id: str, attr: str) -> NodeType | None:
    parts = await info.context.bundle_parts.load(bundle_id)
    node = getattr(parts, attr)
    return to_gql(node) if node is not None else None


def _bundle_fields() -> dict[str, Any]:
    """What a bundle pins, resolved through the per-request DataLoader: a page of bundles
    costs one store round trip, not one per bundle."""

    def pinned(attr: str, doc: str) -> Any:
        async def resolve(self: NodeType, info: Info) -> NodeType | None:
            return await _part(info, str(self.id), attr)

        return strawberry.field(resolve, description=doc)

    async def retrieves_from(self: NodeType, info: Info) -> list[NodeType]:
        parts = await info.context.bundle_parts.load(str(self.id))
        return [to_gql(n) for n in parts.retrieves_from]

    return {
        "model_version": pinned("model", "The model version it pins (USES_MODEL)."),
        "prompt_version": pinned("prompt", "The prompt version it pins (USES_PROMPT)."),
        "toolset": pinned("toolset", "Its tool set (USES_TOOLS)."),
        "policy_pack": pinned("policy", "Its policy pack (GOVERNED_BY)."),
        "retrieves_from": strawberry.field(retrieves_from,
                                           description="Data sources it retrieves from."),
    }


_EXTRA_FIELDS: dict[str, Callable[[], dict[str, Any]]] = {"Bundle": _bundle_fields}


def _kind_type(label: str, description: str) -> type:
    namespace = {"__module__": __name__, **_EXTRA_FIELDS.get(label, dict)()}
    return strawberry.type(type(label, (NodeType,), namespace), name=label,
                           description=description)


# One object type per declared kind, so clients can write `... on ModelVersion`.
NODE_TYPES: dict[str, type] = {k.label: _kind_type(k.label, k.description) for k in NODE_KINDS}


def to_gql(node: NodeRecord) -> NodeType:
    return NODE_TYPES[node.kind](
        id=strawberry.ID(node.id), kind=node.kind, name=node.name, version=node.version,
        created_at=node.created_at, properties=node.properties,
    )


def maybe(node: NodeRecord | None) -> NodeType | None:
    return to_gql(node) if node is not None else None


# -- subgraphs and pages ----------------------------------------------------------------------


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
    truncated: bool = strawberry.field(description=(
        "A cap cut the walk: the depth cap stopped it short of what was there, or the "
        "node cap stopped it. Paged (`first`), each page walks only as deep as it needs: "
        "a depth-cap cut shows on every page, a node-cap cut from the first page whose "
        "walk meets the cap (read `truncated` of the last page for the whole walk)."))
    page_info: PageInfo | None = None


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode()


def decode_cursor(cursor: str | None, argument: str = "after") -> str | None:
    if cursor is None:
        return None
    try:
        value = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        value = ""
    # Decoding skips what is not base64 ("!!!!" read as nothing): only what encodes back
    # to the cursor given is one (an empty one included, which would restart the list).
    if not value or encode_cursor(value) != cursor:
        raise UserError(f"{argument}: {cursor!r} is not a cursor from this API")
    return value


def _position(node: NodeRecord, degree: int) -> str:
    return f"{degree:08d}|{node.id}"


def subgraph_cursor(node: NodeRecord, degree: int) -> str:
    return encode_cursor(_position(node, degree))


def page_reached(first: int | None,
                 after: str | None) -> Callable[[WalkResult, int], bool] | None:
    """For a walk serving one page: true once, after ``hops`` hops, it holds the page and
    one node more (so the page knows it has a next one), and has read every edge among the
    nodes shown so far. Walks go by degree, so deeper hops add neither nodes nor edges to it:
    an edge is read expanding one of its ends, at the hop after that end's degree."""
    if first is None:
        return None
    position = decode_cursor(after) or ""

    def reached(result: WalkResult, hops: int) -> bool:
        beyond = sorted(_position(result.nodes[node_id], degree)
                        for node_id, degree in result.degrees.items()
                        if _position(result.nodes[node_id], degree) > position)
        if len(beyond) <= first:
            return False
        # The page's deepest nodes were expanded: the edges back from them are read too.
        return not beyond[:first] or int(beyond[first - 1].split("|", 1)[0]) < hops

    return reached


def subgraph_page(info: Info, result: WalkResult, first: int | None = None,
                  after: str | None = None) -> Subgraph:
    """A keyset page of a walk's nodes, ordered by (degree, ID). Each edge is on one page:
    the page of the later of its two ends in that order, so the pages of a query together
    hold the edges of the whole walk, none twice. A page also stops at ``PAGE_CHARS`` of
    properties, its nodes' and edges' (each may hold 1 MiB; the node cap alone would let a
    page hold gigabytes), with a warning naming the cursor to go on from."""
    if first is not None and first < 0:
        raise UserError("first: must be ≥ 0")
    ordered = result.ordered()
    position = decode_cursor(after)
    start = 0
    if position is not None:
        # Keyset: the page starts after the cursor's (degree, ID) whether or not that node
        # is still there (archived, or nearer now, between two pages).
        if "|" not in position or not position.split("|", 1)[0].isdigit():
            raise UserError(f"after: {after!r} is not a cursor of this query")
        start = next((i for i, (n, d) in enumerate(ordered) if _position(n, d) > position),
                     len(ordered))
    end = len(ordered) if first is None else min(len(ordered), start + first)
    rank = {node.id: i for i, (node, _) in enumerate(ordered)}
    # Each edge at the page position of its later end, with the characters each position
    # adds to the page: its node's properties and those edges'.
    placed = [(at, e) for e in result.edges.values() if e.source in rank and e.target in rank
              and start <= (at := max(rank[e.source], rank[e.target])) < end]
    sizes = [node.props_chars for node, _ in ordered[start:end]]
    for at, e in placed:
        sizes[at - start] += e.props_chars
    fit = fitting(sizes, PAGE_CHARS)
    if fit < len(sizes):
        end = start + fit
        info.context.warn(info, (
            f"the page stops after {fit:,} nodes at {PAGE_CHARS:,} characters of properties; "
            f"the next page starts after: {subgraph_cursor(*ordered[end - 1])!r}"))
    page = ordered[start:end]
    edges = [
        Edge(source=strawberry.ID(e.source), target=strawberry.ID(e.target), type=e.type,
             properties=e.properties or None)
        for at, e in placed if at < end
    ]
    return Subgraph(
        nodes=[NodeAtDegree(node=to_gql(node), degree=degree) for node, degree in page],
        edges=sorted(edges, key=lambda e: (e.source, e.type, e.target)),
        truncated=result.truncated,
        page_info=PageInfo(has_next_page=end < len(ordered),
                           end_cursor=subgraph_cursor(*page[-1]) if page else after),
    )


@strawberry.type
class NodeConnection:
    nodes: list[NodeType]
    page_info: PageInfo


# -- analyses ---------------------------------------------------------------------------------


@strawberry.type
class Trace:
    outcome: NodeType
    bundle: NodeType | None
    model_version: NodeType | None
    prompt_version: NodeType | None
    toolset: NodeType | None
    policy_pack: NodeType | None
    environment: str | None
    approvals: list[NodeType]
    evaluations: list[NodeType]
    _upstream: strawberry.Private[WalkResult]
    _live: strawberry.Private[LiveThen]

    @strawberry.field(description="Whether the serving bundle version was the one in effect "
                      "in the request's environment at the request's time.")
    async def bundle_live_at_request(self) -> bool | None:
        return served_live(self._live.result, await self._live.nodes())

    @strawberry.field(description="Every bundle version in effect in that environment at "
                      "that time.")
    async def live_in_environment(self) -> list[NodeType]:
        return [to_gql(n) for n in await self._live.nodes()]

    @strawberry.field(description="Lineage upstream of the request, down to data sources.")
    def upstream(self, info: Info, first: int | None = None,
                 after: str | None = None) -> Subgraph:
        return subgraph_page(info, self._upstream, first, after)


class LiveThen:
    """What was live where a request was served, read once and only when a field asks."""

    def __init__(self, context: Context, result: TraceResult) -> None:
        self.context = context
        self.result = result
        self._read: asyncio.Future[list[NodeRecord]] | None = None

    def nodes(self) -> asyncio.Future[list[NodeRecord]]:
        if self._read is None:
            store = self.context.store
            self._read = asyncio.ensure_future(
                self.context.run(lambda: live_then(store, self.result)))
        return self._read


@strawberry.type
class TrafficCount:
    environment: str
    count: int


@strawberry.type
class KindCount:
    kind: str
    count: int


@strawberry.type
class AffectedBundle:
    bundle: NodeType
    environments: list[str]


@strawberry.type
class RollbackPlan:
    environment: str
    current: NodeType
    target: NodeType | None
    warnings: list[str]


@strawberry.enum
class Action(Enum):
    ROLLBACK = "ROLLBACK"
    RETIRE = "RETIRE"
    CHANGE = "CHANGE"


@strawberry.type
class BlastRadius:
    root: NodeType
    action: Action
    by_kind: list[KindCount]
    traffic: list[TrafficCount]
    total_traffic: int
    rollback_target: NodeType | None = strawberry.field(
        description="What a rollback returns to: in a production environment "
                    "(LINEAGEGRAPH_PRODUCTION_ENVIRONMENTS) if the root is live in one, else "
                    "in the first environment where it is.")
    warnings: list[str]
    _downstream: strawberry.Private[WalkResult]
    _bundles: strawberry.Private[list[impact.AffectedBundle]]
    _rollbacks: strawberry.Private[list[impact.RollbackTarget]]
    # Per paged list: its items' keys and sizes, worked out once (``blast_radius_type``).
    _index: strawberry.Private[dict[str, tuple[list[str], list[int]]]]

    def _page(self, info: Info, field: str, after: str | None) -> tuple[int, int]:
        """A page of ``bundles`` or ``rollbacks`` after the cursor ``after``; a first page
        cut is said in ``warnings`` (``blast_radius_type``), a later one here."""
        keys, sizes = self._index[field]
        start, end = impact.page_after(keys, sizes, decode_cursor(after))
        if after is not None and end < len(keys):
            info.context.warn(info, (
                f"{field}: the page stops after {end - start:,} at {PAGE_CHARS:,} characters "
                f"of properties; the next page starts after: {encode_cursor(keys[end - 1])!r}"))
        return start, end

    @strawberry.field(description="The bundles downstream, by ID, each with the environments "
                      "where it is live now. The list stops at 8 Mi characters of the bundles' "
                      "properties: `warnings` then says so, with the cursor to read on from "
                      "(`after`); a later page that stops says so in `extensions.warnings`.")
    def bundles(self, info: Info, after: str | None = None) -> list[AffectedBundle]:
        start, end = self._page(info, "bundles", after)
        return [AffectedBundle(bundle=to_gql(b.bundle), environments=b.environments)
                for b in self._bundles[start:end]]

    @strawberry.field(description="Per affected bundle (by ID) and environment where it is "
                      "live, what a rollback returns to, with warnings. Each plan carries its "
                      "current and target bundles whole, so the list stops at 8 Mi characters "
                      "of their properties: `warnings` then says so, with the cursor to read "
                      "on from (`after`); a later page that stops says so in "
                      "`extensions.warnings`.")
    def rollbacks(self, info: Info, after: str | None = None) -> list[RollbackPlan]:
        start, end = self._page(info, "rollbacks", after)
        return [RollbackPlan(environment=r.environment, current=to_gql(r.current),
                             target=maybe(r.target), warnings=r.warnings)
                for r in self._rollbacks[start:end]]

    @strawberry.field(description="Everything downstream (request traffic is counted in "
                      "`traffic`, not listed), each with its degree.")
    def downstream(self, info: Info, first: int | None = None,
                   after: str | None = None) -> Subgraph:
        return subgraph_page(info, self._downstream, first, after)


def blast_radius_type(result: impact.BlastRadius, production: Collection[str]) -> BlastRadius:
    kinds: dict[str, int] = {}
    for node_id, node in result.downstream.nodes.items():
        if node_id != result.root.id:
            kinds[node.kind] = kinds.get(node.kind, 0) + 1
    # The lists are cut here, where nodes become the answer's JSON: the result shares one
    # node object among all the plans that carry it (cheap), and ``rollback_target`` and the
    # plans' own warnings are judged on them all.
    index = {"bundles": ([b.bundle.id for b in result.bundles],
                         [b.bundle.props_chars for b in result.bundles]),
             "rollbacks": ([impact.plan_key(r) for r in result.rollbacks],
                           [impact.plan_chars(r) for r in result.rollbacks])}
    cuts = []
    for field, each in (("bundles", "bundle"),
                        ("rollbacks", "plan, carrying its current and target bundles whole")):
        keys, sizes = index[field]
        _, end = impact.page_after(keys, sizes, None)
        if end < len(keys):
            cuts.append(f"{field}: {end:,} of {len(keys):,} shown — each {each}, they hold "
                        f"more than {PAGE_CHARS:,} characters of properties; read the rest "
                        f"with {field}(after: \"{encode_cursor(keys[end - 1])}\")")
    return BlastRadius(
        root=to_gql(result.root), action=Action(result.action.value),
        by_kind=[KindCount(kind=k, count=c) for k, c in sorted(kinds.items())],
        traffic=[TrafficCount(environment=e, count=c) for e, c in result.traffic.items()],
        total_traffic=sum(result.traffic.values()),
        rollback_target=maybe(result.rollback_target(production)),
        warnings=cuts + result.warnings, _downstream=result.downstream,
        _bundles=result.bundles, _rollbacks=result.rollbacks, _index=index,
    )


@strawberry.type
class DriftCandidate:
    node: NodeType
    change: str
    changed_at: datetime
    hops: int
    score: float
    path: list[strawberry.ID]


def drift_type(candidate: DriftResult) -> DriftCandidate:
    return DriftCandidate(node=to_gql(candidate.node), change=candidate.change,
                          changed_at=candidate.changed_at, hops=candidate.hops,
                          score=round(candidate.score, 6),
                          path=[strawberry.ID(p) for p in candidate.path])


@strawberry.type
class StageMove:
    name: str
    environment: str
    from_version: str | None
    to_version: str | None
    at: datetime
    actor: str
    reason: str | None


def stage_move_type(move: StageMoveRecord) -> StageMove:
    return StageMove(name=move.name, environment=move.environment,
                     from_version=move.from_version, to_version=move.to_version, at=move.at,
                     actor=move.actor, reason=move.reason)


@strawberry.type
class History:
    node: NodeType
    versions: list[NodeType]
    stage_moves: list[StageMove]
    versions_cursor: str | None = strawberry.field(
        default=None, description="Pass as `versionsBefore` for the versions before these; "
        "null when there are none.")


@strawberry.type
class UnregisteredModel:
    node: NodeType
    requests: int
    first_seen: datetime | None
    last_seen: datetime | None
