"""The GraphQL schema: queries over the graph analyses. Resolvers are ``async`` and run
store work in a worker thread under the per-query timeout, so one slow walk never blocks
the event loop."""

from __future__ import annotations

import re
from datetime import datetime

import strawberry
from graphql import GraphQLError, GraphQLSyntaxError
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxTokensLimiter,
    ParserCache,
    ValidationCache,
)
from strawberry.types import ExecutionContext, Info

from lineagegraph.graph import impact, registry
from lineagegraph.graph.drift import drift_sources, parse_duration
from lineagegraph.graph.store import PAGE_CHARS, fitting, is_version_key
from lineagegraph.graph.store import Direction as StoreDirection
from lineagegraph.graph.trace import trace as run_trace
from lineagegraph.graph.walk import LINEAGE_DEPTH, WALK_CAPS, walk
from lineagegraph.schema import InvalidId, parse_id
from lineagegraph.schema.bounds import shown

from .auth import MutationsNeedWrite
from .graphql_governance import GovernanceQuery, Mutation
from .graphql_limits import OperationNamed, operation_limits_rule
from .graphql_types import (
    NODE_TYPES,
    Action,
    BlastRadius,
    Context,
    Direction,
    DriftCandidate,
    ErrorsInDocumentOrder,
    History,
    LiveThen,
    NodeConnection,
    NodeType,
    PageInfo,
    ResponseWarnings,
    Subgraph,
    Trace,
    UnregisteredModel,
    UserError,
    blast_radius_type,
    decode_cursor,
    drift_type,
    encode_cursor,
    id_part_arg,
    maybe,
    node_id_arg,
    page_reached,
    stage_move_type,
    subgraph_page,
    to_gql,
    utc_arg,
    window_args,
)
from .request_ids import unexpected
from .settings import Settings

MAX_PAGE = 1000
# What a field does for an ID the graph does not hold, said in its description (README
# "Queries"): a lookup answers null, a walk or report from the ID an error.
def null_if_unknown(what: str = "an ID") -> str:
    return (f"Null for {what} the graph does not hold, with a warning saying so in the "
            "response's `extensions.warnings`.")


NULL_IF_UNKNOWN = null_if_unknown()
ERROR_IF_UNKNOWN = "An ID the graph does not hold is an error naming it."


def _check_kinds(kinds: list[str] | None) -> None:
    unknown = sorted(set(kinds or ()) - set(NODE_TYPES))
    if unknown:
        raise UserError(f"kinds: unknown {unknown} (known: {sorted(NODE_TYPES)})")


def _page_size(first: int | None, field: str = "first") -> int:
    size = MAX_PAGE if first is None else first
    if not 0 <= size <= MAX_PAGE:
        raise UserError(f"{field}: must be between 0 and {MAX_PAGE}")
    return size


def _search_text(text: str | None) -> str | None:
    """Search text as IDs are written: `@v14` is `@14` there."""
    return re.sub(r"@[vV](\d+)\b", r"@\1", text) if text else text


@strawberry.type
class Query(GovernanceQuery):
    @strawberry.field(description="One node by its ID (`model:fraud-detector@7`; `@v7` "
                      f"is accepted too). {NULL_IF_UNKNOWN}")
    async def node(self, info: Info, id: strawberry.ID) -> NodeType | None:
        node_id = node_id_arg(id)
        context: Context = info.context
        found = await context.run(lambda: context.store.get([node_id]))
        if node_id not in found:
            _not_found(info, f"no node {node_id}")
        return maybe(found.get(node_id))

    @strawberry.field(description="Nodes whose ID contains `text` (case-insensitive), of "
                      "`kinds`, in ID order; keyset pages with `first`/`after`.")
    async def search(self, info: Info, text: str | None = None,
                     kinds: list[str] | None = None, first: int | None = 50,
                     after: str | None = None) -> NodeConnection:
        _check_kinds(kinds)
        size = _page_size(first)
        after_id = decode_cursor(after)
        if after_id is not None:  # a node's ID: another query's cursor restarted the list
            try:
                parse_id(after_id)
            except InvalidId:
                raise UserError(f"after: {after!r} is not a cursor of this query") from None
        context: Context = info.context
        found = await context.run(lambda: context.store.find(
            kinds=kinds, text=_search_text(text), first=size + 1, after=after_id))
        # A page stops at PAGE_CHARS of properties too: a node holds up to 1 MiB of them.
        page = found[:size]
        page = page[:fitting([n.props_chars for n in page], PAGE_CHARS)]
        return NodeConnection(
            nodes=[to_gql(n) for n in page],
            page_info=PageInfo(has_next_page=len(found) > len(page),
                               end_cursor=encode_cursor(page[-1].id) if page else after))

    @strawberry.field(description="A node's versions and, for a bundle, its stage moves, "
                      f"oldest first: the last {registry.HISTORY_VERSIONS:,} versions of its "
                      "name in version order "
                      "(numbers by their numbers, the rest by creation time), or fewer that "
                      "fit in a page; `versionsBefore` (a `versionsCursor`) pages back to "
                      f"the earlier ones. {NULL_IF_UNKNOWN}")
    async def history(self, info: Info, id: strawberry.ID,
                      versions_before: str | None = None) -> History | None:
        node_id = node_id_arg(id)
        before = decode_cursor(versions_before, "versionsBefore")
        if before is not None and not is_version_key(before):  # another query's cursor
            raise UserError(f"versionsBefore: {versions_before!r} is not a cursor of this "
                            "query")
        context: Context = info.context
        result = await context.run(lambda: registry.history(context.store, node_id, before))
        if result is None:
            _not_found(info, f"no node {node_id}")
            return None
        if result.earlier is not None:
            # A name may have thousands of versions of up to 1 MiB of properties each.
            held = (f"that fit in {PAGE_CHARS:,} characters of properties"
                    if result.cut_by_chars else f"of at most {registry.HISTORY_VERSIONS:,}")
            context.warn(info, f"versions: the newest {len(result.versions):,} {held}, oldest "
                         "first; earlier ones are left out: pass versionsCursor as "
                         "versionsBefore for them")
        if result.moves_cut:
            context.warn(info, f"stageMoves: the last {registry.HISTORY_MOVES:,}, oldest "
                         "first; earlier moves are left out")
        return History(node=to_gql(result.node),
                       versions=[to_gql(v) for v in result.versions],
                       stage_moves=[stage_move_type(m) for m in result.stage_moves],
                       versions_cursor=encode_cursor(result.earlier)
                       if result.earlier is not None else None)

    @strawberry.field(description="Nodes up to `depth` hops from `id`, each with its degree "
                      "(fewest hops). Walks follow lineage edges only (not SUPERSEDES, "
                      "EVALUATES, APPROVES). `kinds` filters the nodes returned; edges that "
                      "lead only to nodes it drops, and nothing past them, are not walked "
                      "(so they spend no node cap). Depth is capped by configuration; "
                      "`truncated` says a cap cut the walk. Pages are keyset pages ordered "
                      f"by (degree, id). {ERROR_IF_UNKNOWN}")
    async def lineage(
        self,
        info: Info,
        id: strawberry.ID,
        direction: Direction = Direction.UPSTREAM,
        depth: int = LINEAGE_DEPTH,
        kinds: list[str] | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Subgraph:
        node_id = node_id_arg(id)
        if depth < 0:
            raise UserError("depth: must be ≥ 0")
        _check_kinds(kinds)
        context: Context = info.context
        result = await context.run(lambda: walk(
            context.store, node_id, StoreDirection(direction.value), depth,
            limits=context.settings.walk_limits, kinds=kinds,
            enough=page_reached(first, after)))
        if not result.nodes:
            raise UserError(f"id: no node {node_id}")
        return subgraph_page(info, result, first, after)

    @strawberry.field(description="A request traced back to its data: the bundle that "
                      "served it and what it pins, approvals and evaluations then, the "
                      "environment and what else was live there, the upstream lineage. "
                      f"{null_if_unknown('a request ID')}")
    async def trace(self, info: Info, request_id: str) -> Trace | None:
        id_part_arg("requestId", request_id.strip())
        context: Context = info.context
        result = await context.run(lambda: run_trace(context.store, request_id,
                                                     context.settings.walk_limits))
        if result is None:
            _not_found(info, f"no request {shown(request_id)}")
            return None
        if result.annotations_cut:
            context.warn(info, "approvals and evaluations: some are left out "
                         f"({registry.annotations_read()})")
        parts = result.parts
        return Trace(
            outcome=to_gql(result.outcome), bundle=maybe(result.bundle),
            model_version=maybe(parts.model), prompt_version=maybe(parts.prompt),
            toolset=maybe(parts.toolset), policy_pack=maybe(parts.policy),
            environment=result.environment,
            approvals=[to_gql(a) for a in result.approvals],
            evaluations=[to_gql(e) for e in result.evaluations],
            _upstream=result.upstream,
            _live=LiveThen(context, result),
        )

    @strawberry.field(description="What rolling back, retiring or changing `id` hits: "
                      "everything downstream with degrees, affected bundles and where they "
                      "are live, request traffic in [since, until] by environment, and "
                      "what a rollback returns to, with compatibility warnings. "
                      f"{NULL_IF_UNKNOWN}")
    async def blast_radius(
        self,
        info: Info,
        id: strawberry.ID,
        action: Action = Action.ROLLBACK,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> BlastRadius | None:
        node_id = node_id_arg(id)
        context: Context = info.context
        result = await context.run(lambda: impact.blast_radius(
            context.store, node_id, impact.Action(action.value), *window_args(since, until),
            context.settings.walk_limits))
        if result is None:
            _not_found(info, f"no node {node_id}")
            return None
        return blast_radius_type(result, context.settings.gate_policy.production_environments)

    @strawberry.field(description="Upstream changes in [onset - lookback, onset] that "
                      "could explain a quality drop at `id`, best first. score = (1 + "
                      "recency) / (2 (1 + hops)), recency = 1 - (onset - changedAt) / "
                      "lookback. Where a cap cut the upstream walk, changes past it are "
                       "not candidates; of a source's new versions and of a name's stage "
                       "moves in the window, the node cap's worth of each (the nearest the "
                       "onset) are. Either way the response's `extensions.warnings` names "
                       f"this field's path. {ERROR_IF_UNKNOWN}")
    async def drift_sources(self, info: Info, id: strawberry.ID, onset: datetime,
                            lookback: str = "P7D") -> list[DriftCandidate]:
        node_id = node_id_arg(id)
        try:
            window = parse_duration(lookback)
        except ValueError as error:
            raise UserError(f"lookback: {error}") from None
        onset_utc = utc_arg("onset", onset)
        try:
            onset_utc - window
        except OverflowError:
            raise UserError(f"onset: {onset_utc.isoformat()} less the lookback ({lookback}) "
                            "is before year 1") from None
        context: Context = info.context
        result = await context.run(lambda: drift_sources(
            context.store, node_id, onset_utc, window, context.settings.walk_limits))
        if result is None:
            raise UserError(f"id: no node {node_id}")
        if result.truncated:
            context.warn(info, f"a cap ({WALK_CAPS}) cut the upstream walk, a source's "
                         "new versions or a name's stage moves in the window (the nearest the "
                         "onset are kept): changes past it are not candidates")
        return [drift_type(c) for c in result]

    @strawberry.field(description="The bundle version in effect for `name` in "
                      "`environment` at `asOf` (default now); null before the first move.")
    async def resolve(self, info: Info, name: str, environment: str,
                      as_of: datetime | None = None) -> NodeType | None:
        context: Context = info.context
        found = await context.run(lambda: registry.resolve(context.store, name, environment,
                                                           utc_arg("asOf", as_of)))
        return maybe(found)

    @strawberry.field(description="Models seen in inference outcomes that no manifest or "
                      "import registered, with their request counts in [since, until].")
    async def unregistered(self, info: Info, since: datetime | None = None,
                           until: datetime | None = None) -> list[UnregisteredModel]:
        context: Context = info.context
        found = await context.run(lambda: registry.unregistered(
            context.store, *window_args(since, until)))
        return [UnregisteredModel(node=to_gql(u.node), requests=u.requests,
                                  first_seen=u.first_seen, last_seen=u.last_seen)
                for u in found]


def _not_found(info: Info, message: str) -> None:
    """A lookup answering null says why in ``extensions.warnings``: null alone reads the
    same as a field left out, and an investigator pasting a mistyped ID sees nothing."""
    context: Context = info.context
    context.warn(info, f"{message} in the graph")


def _should_mask(error: GraphQLError) -> bool:
    # A GraphQLError behind one is the caller's too: a variable that does not coerce.
    original = error.original_error
    return original is not None and not isinstance(original, UserError | GraphQLError)


def _caller_code(error: GraphQLError) -> str | None:
    """The ``extensions.code`` of a caller's mistake graphql-core found before running any
    field (our own errors carry theirs), in the codes GraphQL clients know from Apollo: a
    document that does not parse, one the schema refuses (an unknown field, a literal of the
    wrong type), a variable whose value does not coerce (a malformed DateTime)."""
    if isinstance(error, GraphQLSyntaxError):
        return "GRAPHQL_PARSE_FAILED"
    if error.path is not None:  # raised while running a field
        return None
    return "BAD_USER_INPUT" if error.message.startswith("Variable '$") else (
        "GRAPHQL_VALIDATION_FAILED")


class LineageSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        for error in errors:  # every answered error carries a code clients can branch on
            if not (error.extensions or {}).get("code") and not _should_mask(error):
                code = _caller_code(error)
                if code:
                    error.extensions = {**(error.extensions or {}), "code": code}
        # Log only what went wrong on our side; a caller's mistake is answered, not logged.
        unexpected = [e for e in errors if _should_mask(e)]
        if unexpected:
            super().process_errors(unexpected, execution_context)


def build_schema(settings: Settings) -> strawberry.Schema:
    # The depth, alias and walk limits are a validation rule. Its class is made once here
    # and added by a fresh extension per request: with a new rule class per request the
    # validation cache would never hit.
    rules = [operation_limits_rule(settings.graphql_max_depth, settings.graphql_max_walks,
                                   settings.graphql_max_aliases)]
    return LineageSchema(
        query=Query,
        mutation=Mutation,
        types=list(NODE_TYPES.values()),
        extensions=[
            # Factories: strawberry builds fresh extension instances per request.
            lambda: AddValidationRules(rules),
            lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
            # Made per request: the message names the request's ID (api/request_ids.py).
            lambda: MaskErrors(should_mask_error=_should_mask, error_message=unexpected()),
            # Defence in depth: a mutation field that forgot its permission class still
            # needs `write`.
            MutationsNeedWrite,
            OperationNamed,
            ResponseWarnings,
            ErrorsInDocumentOrder,
            # Dashboards send the same few documents over and over: parse and validate
            # each once (module-level LRU caches shared by every request).
            lambda: ParserCache(maxsize=256),
            lambda: ValidationCache(maxsize=256),
        ],
    )


def schema_sdl(settings: Settings | None = None) -> str:
    """The SDL clients build against (kept in ``schema/schema.graphql``)."""
    return build_schema(settings or Settings()).as_str() + "\n"
