"""The ``GraphStore`` port: the one interface analyses are written against.

Adapters implement a handful of primitives (``_write`` running a function in one
transaction, the ``StoreTransaction`` writes and the rows they take, ``expand``,
``tally_neighbours``, the log reads); validation, de-duplication and the derived lookups
(stage as-of, live environments) are written once here, so both stores behave the same by
construction.
"""

from __future__ import annotations

import logging
import re
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, Protocol, TypeVar

from lineagegraph.schema import (
    EDGE_KINDS_BY_TYPE,
    NODE_KINDS_BY_LABEL,
    AuditEntry,
    Edge,
    Node,
    Record,
    SchemaError,
    StageMove,
    bundle_id,
    check_edge_endpoints,
)
from lineagegraph.schema.kinds import FAMILY_EDGE, STORE_FORMAT
from lineagegraph.schema.models import now, utc

from .traffic import (
    OUTCOME_EDGES,
    OUTCOME_KIND,
    OutcomeState,
    TrafficKey,
    deltas,
    outcome_ids,
    split_window,
)

T = TypeVar("T")

log = logging.getLogger(__name__)

# What ``stage_latest`` keeps the last move of, besides the name: each environment (what is
# in effect), each version (where it went last), each environment and version, or nothing
# (the name's last moves, wherever they went).
StageKey = Literal["environment", "version", "visit", "name"]


class Direction(StrEnum):
    UPSTREAM = "UPSTREAM"  # follow out-edges: towards what a node depends on
    DOWNSTREAM = "DOWNSTREAM"  # follow in-edges: towards what depends on it
    BOTH = "BOTH"


@dataclass(frozen=True, slots=True)
class Hop:
    """One row of a one-hop expansion: from ``origin`` over ``edge`` to ``node``."""

    origin: str
    edge: Edge
    node: Node
    # Characters of the node's and the edge's properties the store left out of the row
    # (``expand(inline=…)``): 0 where the row holds them.
    node_elided: int = 0
    edge_elided: int = 0


def held(props: str | int | None) -> str | None:
    """A walk's row's properties as stored; None where the store sent their size instead,
    an integer (``expand(inline=…)``)."""
    return None if type(props) is int else props


def elided(props: str | int | None) -> int:
    """The size of properties a walk's row left out (``held``); 0 where it holds them."""
    return props if type(props) is int else 0


def hop_order(row: Hop) -> tuple[str, str, str]:
    """The order in which a cut hop keeps rows, the same on every store: by the node
    reached, then the frontier node it was reached from, then the edge's type."""
    return (row.node.id, row.origin, row.edge.type)


@dataclass(frozen=True, slots=True)
class SideHop:
    """One hop off a walk's first hop, read in the walk's first round trip: from the nodes
    the first hop reached over ``via``, over ``edge_types`` in ``direction``, keeping the
    nodes created no later than the walk's start node (what existed when it happened). A
    trace reads the serving bundle's evaluations and approvals this way."""

    via: tuple[str, ...]
    direction: Direction
    edge_types: tuple[str, ...]


@dataclass(slots=True)
class HopsAhead:
    """What ``expand_hops`` read in one round trip."""

    start: dict[str, Node]  # the frontier's own nodes
    hops: list[list[Hop]]  # the rows of each hop
    side: list[Hop] | None = None  # the ``SideHop``'s rows (origin: the node it left from)
    # Of ``start``, the nodes whose properties were left out (``inline``), by ID
    elided: frozenset[str] = frozenset()


# An ``ordered`` expansion sorts at most this many rows per row it returns: a hop of a
# bundle with millions of requests must not be read whole to keep the least IDs (1M rows:
# 2.9 s on Neo4j against 0.37 s unordered). Past it, the rows kept are the least of the
# first the store read, which the stores may pick differently.
ORDERED_SCAN = 10

# What one page of records may hold (``GraphStore.record_page``): characters of JSON.
PAGE_CHARS = 8 * 2**20


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which records of a collection a read takes (``GraphStore.records``)."""

    collection: str
    key: str | None = None
    key_prefix: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_seq: int | None = None


@dataclass(frozen=True, slots=True)
class RecordPage:
    records: list[Record]
    sizes: list[int]  # each record's characters of JSON
    more: bool  # records past these match the filters too

@dataclass(frozen=True, slots=True)
class VersionFilter:
    """Which versions a read takes (``GraphStore.read_versions``): those of ``name`` of
    any of ``kinds``, and those that are a ``VERSION_OF`` the node ``family`` (a source's
    dataset versions, which may be named apart from it); only those before ``before`` in
    ``version_order`` (a ``version_key``), only whole numbers, not ``exclude``."""

    kinds: tuple[str, ...]
    name: str
    family: str | None = None
    before: str | None = None
    whole_numbers: bool = False
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class VersionRow:
    """A version as ``GraphStore.version_sizes`` reads it: no properties, their size."""

    id: str
    key: str  # its ``version_key``, computed by the store
    chars: int  # its properties' characters of JSON


@dataclass(frozen=True, slots=True)
class VersionPage:
    versions: list[Node]  # oldest first
    earlier: str | None  # the key to read the versions before these from; None: none
    cut_by_chars: bool  # fewer than asked for: the page's characters ran out


# ``group_by`` value for tallies keyed by the frontier node each neighbour was reached from.
ORIGIN = "@origin"


@dataclass(frozen=True, slots=True)
class Tally:
    count: int
    first: datetime | None = None
    last: datetime | None = None


@dataclass(slots=True)
class WriteCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def __iadd__(self, other: WriteCounts) -> WriteCounts:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        return self


@dataclass(slots=True)
class UpsertResult:
    nodes: WriteCounts = field(default_factory=WriteCounts)
    edges: WriteCounts = field(default_factory=WriteCounts)
    stage_moves: int = 0
    records_added: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.nodes.created or self.nodes.updated or self.edges.created
                    or self.edges.updated or self.stage_moves or self.records_added)


class StoreTransaction(Protocol):
    """What an adapter does inside one write transaction."""

    def kinds(self, ids: Sequence[str]) -> dict[str, str]: ...
    # The rows the store's ``_node_rows`` / ``_edge_rows`` made of a batch. Writing nodes
    # also says which of them were stored before, with the kind they had then. ``new``
    # rows are a batch's own requests, and edges from them, in a write that does not read
    # first: the store may create them without looking for stored twins, raising
    # ``RequestsStored`` if a request turns out to be stored.
    # ``keep_stored``: nodes written only if absent (a stored one is left as it is).
    def write_nodes(self, rows: Any, *, new: bool = False,
                    keep_stored: frozenset[str] = frozenset()
                    ) -> tuple[WriteCounts, dict[str, str]]: ...
    def write_edges(self, rows: Any, *, new: bool = False) -> WriteCounts: ...
    # Each version (key) keeps its family's ID (value) where it keeps none yet; returns
    # those that keep another one, with it. Under each version's write lock: two writers
    # linking it at once keep one family, and the second sees it.
    def keep_families(self, families: Mapping[str, str]) -> dict[str, str]: ...
    def append_stage_move(self, move: StageMove) -> StageMove: ...
    # The latest stored move of ``name`` in ``environment`` dated no later than ``until``
    # (by time, then sequence): its version and time, or None; stage moves of every writer
    # wait from here to the end of the transaction.
    def lock_stage(self, name: str, environment: str,
                   until: datetime) -> tuple[str | None, datetime] | None: ...
    # Stage moves of every writer wait from here to the end of the transaction (as from
    # ``lock_stage``), with nothing read.
    def lock_stages(self) -> None: ...
    # Writers judged on what they read of the graph's metadata (``PreparedWrite.
    # metadata_seen``) take turns from here to the end of the transaction: the counter
    # their writes move on, read before this one's move.
    def bump_metadata(self) -> int: ...
    # The seq of the latest stage move of ``name`` (any environment), read under the lock.
    def last_stage_seq(self, name: str) -> int | None: ...
    def append_audit(self, entry: AuditEntry) -> None: ...
    def append_record(self, record: Record) -> bool: ...
    def outcome_states(self, ids: Sequence[str]) -> dict[str, OutcomeState]: ...
    def add_traffic(self, changes: Sequence[tuple[TrafficKey, int]]) -> None: ...
    # Writers of requests take turns from here to the end of the transaction. While a
    # rebuild of the rollup runs: the last request ID it has counted ("" before its first
    # page); else None.
    def lock_traffic(self) -> str | None: ...
    def set_traffic_rebuild(self, counted_through: str | None) -> None: ...
    def clear_traffic(self) -> None: ...
    # Stored request IDs after ``after``, in ID order.
    def request_ids(self, after: str, limit: int) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class PreparedWrite:
    """A batch made ready for ``GraphStore.write``: de-duplicated, its lookups and its
    rollup change worked out, its nodes and edges turned into the adapter's rows.

    None of it needs the transaction, so a bulk load prepares the next batch in its
    builder thread while this one is written (``ingest.batch.load_batches``): on Neo4j,
    building the rows and the rollup change was ~0.6 s of every 20k outcomes on the writing
    thread, where the store waits for it."""

    nodes: list[Node]
    edges: list[Edge]
    audit: list[AuditEntry]
    stage_moves: list[StageMove]
    records: list[Record]
    requests: list[str]  # the ``outcome_ids``
    batch_kinds: dict[str, str]
    outside: list[str]  # edge ends not in the batch, whose stored kinds the checks read
    fresh_traffic: list[tuple[TrafficKey, int]]  # the rollup change if no request is stored
    node_rows: Any
    edge_rows: Any
    # The batch's own requests and the edges from them: in a write that does not read
    # first, all new (or the write is sent back), so created without looking.
    request_rows: Any
    request_edge_rows: Any
    # Nodes the write must create: if one is stored when it runs, ``NodesStored``.
    new_nodes: frozenset[str] = frozenset()
    # The batch's requests are whole records (an outcome load): a stored request they give
    # other references is refused (``RequestsConflict``), where an edge upsert would add.
    whole_requests: bool = False
    # Names the write was judged on (``record_stage_moves``'s ``judged``): any stage move
    # of one since refuses it (``StagesMoved``).
    judged: Mapping[str, int | None] = field(default_factory=dict)
    # What ``GraphStore.metadata_seq`` read before the batch was mapped from the graph: a
    # write of metadata since (another process's, or another mapper's) refuses it
    # (``MetadataMoved``), to be mapped again. None: the batch reads nothing it merges.
    metadata_seen: int | None = None
    # Nodes the batch creates only if absent: what it knows of them is that they exist (an
    # unregistered model traffic names), and one stored meanwhile (registered by a
    # manifest) must keep what it holds.
    keep_stored: frozenset[str] = frozenset()
    # Writes nodes or edges other than requests and nodes kept as stored: a mapper that
    # read them before must map again (``metadata_seen``), so the write moves the check on.
    moves_metadata: bool = False
    # Version ID → the family its ``VERSION_OF`` edge in the batch links it to.
    families: Mapping[str, str] = field(default_factory=dict)


def _dedupe_nodes(nodes: Iterable[Node]) -> list[Node]:
    by_id: dict[str, Node] = {}
    for node in nodes:
        by_id[node.id] = node  # the last record of an ID in a batch wins
    return list(by_id.values())


def _dedupe_edges(edges: Iterable[Edge]) -> list[Edge]:
    return list({edge.key: edge for edge in edges}.values())


def _check_edge_kinds(edges: Sequence[Edge], kinds: dict[str, str]) -> None:
    for edge in edges:
        for end in (edge.source, edge.target):
            if end not in kinds:
                raise SchemaError(
                    f"{end} is neither in the graph nor in this batch",
                    where=f"edge {edge.source} -[{edge.type}]-> {edge.target}",
                )
        check_edge_endpoints(edge, kinds[edge.source], kinds[edge.target])


# What served a request: one bundle, or one model with at most one prompt and one policy
# (the features it read may be many). These edges leave requests only.
_ONE_PER_REQUEST = frozenset({"SERVED_BY", "USED_MODEL", "USED_PROMPT", "USED_POLICY"})
_ONE_PER_REQUEST_PREFIXES = frozenset(
    NODE_KINDS_BY_LABEL[target].prefix for edge_type in _ONE_PER_REQUEST
    for _, target in EDGE_KINDS_BY_TYPE[edge_type].endpoints)


def _served_by(edges: Iterable[Edge]) -> dict[str, set[str]]:
    """request ID → the targets of its one-per-request edges among ``edges``."""
    found: dict[str, set[str]] = {}
    for edge in edges:
        if edge.type in _ONE_PER_REQUEST:
            found.setdefault(edge.source, set()).add(edge.target)
    return found


def _check_served_once(edges: Iterable[Edge]) -> None:
    """``_check_one_server`` for the edges of one batch, a dict lookup an edge (each type
    has one kind of target): it runs on every outcome a bulk load writes."""
    first: dict[tuple[str, str], str] = {}
    for edge in edges:
        if edge.type in _ONE_PER_REQUEST:
            target = first.setdefault((edge.source, edge.type), edge.target)
            if target != edge.target:  # edges are deduplicated: another target
                _check_one_server(edge.source, [target, edge.target])


def _check_one_server(request: str, targets: Iterable[str]) -> None:
    """Two bundles (or models, prompts, policies) serving one request: a record of two
    requests under one ID, which a trace and the traffic counts would each read otherwise.
    Their IDs' prefixes tell the kinds apart."""
    seen: dict[str, str] = {}
    for target in sorted(targets):
        kind = target.partition(":")[0]
        if kind not in _ONE_PER_REQUEST_PREFIXES:  # the features it read
            continue
        if kind in seen:
            raise SchemaError(f"served by both {seen[kind]} and {target}: a request is "
                              "served once", where=request)
        seen[kind] = target


def _families(edges: Iterable[Edge]) -> dict[str, str]:
    """Version ID → the family the batch's ``VERSION_OF`` edges link it to; a version linked
    to two is refused, as a store keeping one of them is (``_check_one_family``)."""
    found: dict[str, str] = {}
    for edge in edges:
        if edge.type == FAMILY_EDGE:
            _check_one_family(edge, found.setdefault(edge.source, edge.target))
    return found


def _check_one_family(edge: Edge, family: str | None) -> None:
    """A version is of one family (it keeps its ID, and the family's reads find it by it):
    linking one to another is an error, not a second family."""
    if family is not None and family != edge.target:
        raise SchemaError(second_family(edge.source, family, edge.target),
                          where=f"edge {edge.source} -[{edge.type}]-> {edge.target}")


def second_family(version: str, family: str, other: str) -> str:
    """Why ``version``, of ``family``, is not linked to ``other`` too."""
    return f"{version} is a version of {family}, not of {other}: a version has one family"


def _check_kind_conflicts(nodes: Sequence[Node], existing: dict[str, str]) -> None:
    for node in nodes:
        kind = existing.get(node.id)
        if kind is not None and kind != node.kind:
            raise SchemaError(f"already exists as a {kind}, cannot become a {node.kind}",
                              where=node.id)


class StoreUnavailable(Exception):
    """The store cannot do the work now: Neo4j down, restarting or too busy, the embedded
    file locked by another process, read-only, or gone. Each adapter raises it from its
    driver's or SQLite's errors, so callers answer one way (the API: a 503 to retry, the
    CLI: one line); retrying is safe, as re-sending a write changes nothing written.
    The message is for callers (no addresses, no driver internals); ``detail``, the
    underlying error on one line, is for the server's log."""

    def __init__(self, store: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.store = store  # ``GraphStore.name`` of the store that failed
        self.detail = " ".join(detail.split())


def warn_split_families(split: Mapping[str, Sequence[str]]) -> None:
    """The upgrade to store format 3 met versions linked to more than one family (before a
    version had one): each keeps the smallest family ID, and is named here, said alike by
    both stores. Opening the store goes on: refusing would keep every read from it."""
    for version, families in sorted(split.items()):
        kept = min(families)
        log.warning("%s is VERSION_OF %s: it keeps %s as its family (a version has one); "
                    "its other links stay, but the family reads find it under %s only",
                    version, ", ".join(sorted(families)), kept, kept)


def newer_format(stamped: int, *, marked: bool = False) -> str:
    """Why a store stamped by a newer version (``STORE_FORMAT``), or ``marked`` by one
    upgrading it (``StoreUpgraded``), is not opened, said alike by both stores."""
    how = "being upgraded by a newer lineagegraph (to " if marked else (
        "written by a newer lineagegraph (")
    return (f"{how}store format {stamped}; this version reads format {STORE_FORMAT}): "
            "upgrade lineagegraph, or point it at another store")


class StoreUpgraded(StoreUnavailable):
    """A newer version upgraded the store, or is upgrading it (it marks the format it goes
    to before its first step): what this one writes would be in the older layout, which
    the newer one misreads, so it refuses every write from then on; reads go on. Each write
    transaction reads the format under a lock the mark takes (``check_format``), so a
    write either commits before the mark or sees it and writes nothing. A 503 and one CLI
    line, as ``StoreUnavailable``: a request sent again reaches a newer server."""

    def __init__(self, store: str, newer: int) -> None:
        super().__init__(store, f"the store was upgraded (or is being upgraded) to format "
                         f"{newer} by a newer lineagegraph; this lineagegraph (format "
                         f"{STORE_FORMAT}) no longer writes to it; restart it with the newer "
                         "version")
        self.format = newer


def check_format(store: str, *formats: int | None) -> None:
    """Refuse a write (``StoreUpgraded``) in a store whose format, or the one a newer
    version is upgrading it to, is past ``STORE_FORMAT``: read in the write's transaction,
    after a lock every upgrade takes first."""
    newest = max((f for f in formats if f is not None), default=STORE_FORMAT)
    if newest > STORE_FORMAT:
        raise StoreUpgraded(store, newest)


class RequestsStored(Exception):
    """Raised in a write that did not read first, to roll it back and write again."""


class RequestsConflict(Exception):
    """Stored requests a batch of whole records gives other references (bundle, model,
    prompt, policy, features) or another time: what served a request, and when, does not
    change when its record is sent again. ``stored``: each one's stored state. Raised
    inside the transaction, so nothing of the batch is kept."""

    def __init__(self, stored: dict[str, OutcomeState]) -> None:
        self.stored = stored
        super().__init__(f"stored with other references or time: {', '.join(sorted(stored))}")


def _reference_conflicts(batch: PreparedWrite,
                         before: dict[str, OutcomeState]) -> dict[str, OutcomeState]:
    own = {n.id: n.created_at for n in batch.nodes if n.kind == OUTCOME_KIND}
    named: dict[str, set[str]] = {}
    for edge in batch.edges:
        if edge.type in OUTCOME_EDGES and edge.source in own:
            named.setdefault(edge.source, set()).add(edge.target)
    return {oid: state for oid, state in before.items()
            if oid in own and (frozenset(named.get(oid, ())) != state.targets
                               or own[oid] != state.created_at)}


class StageMoved(Exception):
    """A stage move recorded from a version that was no longer in effect when it was
    written: another move landed between reading and writing (two promotions at once).
    Raised inside the transaction, so nothing is kept."""

    def __init__(self, move: StageMove, found: str | None) -> None:
        self.move, self.found = move, found
        super().__init__(
            f"{move.name} in {move.environment} moved meanwhile: @{found or '-'} is in effect, "
            f"not @{move.from_version or '-'}; read it again and retry")


class StagesMoved(StageMoved):
    """A governance move judged on a name's stage history that another move of the name
    changed before it was written — in any environment: a retirement reads where the
    version is live, and a promotion into a new environment meanwhile names none of those.
    Raised inside the transaction, so nothing is kept."""

    def __init__(self, name: str) -> None:  # noqa: D107 - no move to name: the history moved
        Exception.__init__(self, f"{name} moved meanwhile: another stage move of it landed "
                                 "while this one was judged; read it again and retry")
        self.name = name


def latest_seq(moves: Iterable[StageMove]) -> int | None:
    """The seq of the latest stored move among ``moves`` (planned ones have none): what a
    write judged on a name's stage history is checked against (``judged``)."""
    return max((m.seq for m in moves if m.seq is not None), default=None)


def _check_judged(tx: StoreTransaction, judged: Mapping[str, int | None]) -> None:
    """Under the stage log's lock: ``StagesMoved`` if a name moved since it was judged."""
    for name, seq in judged.items():
        if tx.last_stage_seq(name) != seq:
            raise StagesMoved(name)


@dataclass(frozen=True, slots=True)
class Rejudged:
    """What a governance move read of the graph besides its name's stage history — a
    promotion's gate inputs: evaluations, approvals, the policy pack, the candidate's
    ``archived`` — as ``record_stage_moves`` checks it. ``seen`` is ``metadata_seq`` before
    the caller read them; if a write of metadata landed since, the write judges again in
    its turn (``again``: the moves and audit entries to record, or it raises to refuse),
    so a promotion never lands on gates that a write committed before it would fail."""

    seen: int
    again: Callable[[], tuple[Sequence[StageMove], Sequence[AuditEntry]]]


class MetadataMoved(Exception):
    """A batch mapped from what it read of the graph (an OpenLineage event folding a run,
    a manifest patch merging properties) met a write of metadata landed since: written, it
    would put back what it read over that write. Raised inside the transaction, so nothing
    is kept; the batch is mapped again."""

    def __init__(self) -> None:
        super().__init__("the graph's metadata changed while this write was mapped; map it "
                         "again")


class NodesStored(Exception):
    """Nodes a write had to create (``PreparedWrite.new_nodes``) were stored when it ran:
    another writer created them meanwhile. Raised inside the transaction, so nothing of the
    write is kept."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.ids = sorted(ids)
        super().__init__(f"already stored: {', '.join(self.ids)}")


class GraphStore(ABC):
    """A property graph of lineage plus two append-only logs (stage moves, audit)."""

    name: str
    # How many batches a bulk load keeps writing at once (``ingest.batch.load_batches``):
    # one for a store that takes one writer at a time.
    parallel_writes: int = 1

    # -- writes -------------------------------------------------------------------------

    def upsert(
        self,
        nodes: Iterable[Node] = (),
        edges: Iterable[Edge] = (),
        audit: Iterable[AuditEntry] = (),
        *,
        stage_moves: Iterable[StageMove] = (),
        records: Iterable[Record] = (),
        judged: Mapping[str, int | None] | None = None,
    ) -> UpsertResult:
        """Write one batch in one transaction: all of it or nothing.

        Upserts on natural keys: re-sending the same batch changes nothing. A node's
        ``created_at`` is kept from its first write. Nodes are checked against the kinds
        already stored and edges against the schema's endpoint table, with the kinds read
        *inside* the transaction (the edge ends outside the batch before the writes, the
        batch's nodes as they are written: see ``write``); a bad node or edge raises
        before the transaction commits, so it writes nothing. Stage moves
        and audit entries are appended as given (the caller decides whether a move is
        new); records are appended unless their (collection, key) is already kept.
        ``judged`` as ``record_stage_moves``'s: a write judged on names' stage histories
        (an upsert archiving versions live nowhere) is refused if one moved since.
        """
        return self.write(self.prepare(nodes, edges, audit, stage_moves=stage_moves,
                                       records=records, judged=judged))

    def prepare(
        self,
        nodes: Iterable[Node] = (),
        edges: Iterable[Edge] = (),
        audit: Iterable[AuditEntry] = (),
        *,
        stage_moves: Iterable[StageMove] = (),
        records: Iterable[Record] = (),
        new_nodes: Iterable[str] = (),
        whole_requests: bool = False,
        judged: Mapping[str, int | None] | None = None,
        metadata_seen: int | None = None,
        keep_stored: Iterable[str] = (),
    ) -> PreparedWrite:
        """The part of ``upsert`` that needs no transaction (see ``PreparedWrite``).
        ``new_nodes``: nodes of the batch that must not be stored yet when it is written
        (``NodesStored``)."""
        keep = frozenset(keep_stored)
        node_list = _dedupe_nodes(nodes)
        edge_list = _dedupe_edges(edges)
        _check_served_once(edge_list)
        families = _families(edge_list)
        batch_kinds = {n.id: n.kind for n in node_list}
        ends = {e for edge in edge_list for e in (edge.source, edge.target)}
        own_requests: list[Node] = []
        other_nodes: list[Node] = []
        for node in node_list:
            (own_requests if node.kind == OUTCOME_KIND else other_nodes).append(node)
        from_requests: list[Edge] = []
        other_edges: list[Edge] = []
        for edge in edge_list:
            (from_requests if batch_kinds.get(edge.source) == OUTCOME_KIND
             else other_edges).append(edge)
        return PreparedWrite(
            nodes=node_list,
            edges=edge_list,
            audit=list(audit),
            stage_moves=list(stage_moves),
            records=list({(r.collection, r.key): r for r in records}.values()),
            requests=outcome_ids(node_list, edge_list),
            batch_kinds=batch_kinds,
            outside=sorted(ends - batch_kinds.keys()),
            fresh_traffic=deltas({}, node_list, edge_list),
            node_rows=self._node_rows(other_nodes),
            edge_rows=self._edge_rows(other_edges),
            request_rows=self._node_rows(own_requests),
            request_edge_rows=self._edge_rows(from_requests),
            new_nodes=frozenset(new_nodes),
            whole_requests=whole_requests,
            judged=dict(judged or {}),
            metadata_seen=metadata_seen,
            keep_stored=keep,
            moves_metadata=bool(other_edges) or any(n.id not in keep for n in other_nodes),
            families=families,
        )

    def write(self, batch: PreparedWrite) -> UpsertResult:
        """``upsert`` a prepared batch: the checks and the writes, in one transaction.

        The batch's nodes are written without reading their stored kinds first: the node
        write reports the ones that existed, and a kind conflict raises then, which rolls
        the transaction back. A batch that re-sends stored requests is written again from
        the start, reading first: their rollup keys must be read before the write changes
        them. Bulk loads are mostly new requests: for them this saves reading every node of
        the batch, and the batch's requests and the edges from them are created without
        looking for stored twins (``StoreTransaction.write_nodes``'s ``new``; on Neo4j a
        CREATE, not a MERGE; bench/README.md)."""
        try:
            return self._write(lambda tx: self._write_batch(tx, batch, read_first=False))
        except RequestsStored:
            return self._write(lambda tx: self._write_batch(tx, batch, read_first=True))

    def write_mapped(self, mapped: Callable[[], PreparedWrite]) -> UpsertResult:
        """Map a batch from the graph and write it in one transaction that holds the
        metadata writers' turn from its start (``bump_metadata``): no write of metadata
        lands between what the mapping reads and the write, so it cannot be refused for
        one (``MetadataMoved``). For a batch refused that way before: a mapping that takes
        long (a registry of thousands of documents) would otherwise lose to a steady
        stream of events from other processes every time. Other metadata writers wait
        meanwhile (on the embedded store, every writer)."""

        def work(tx: StoreTransaction) -> UpsertResult:
            tx.bump_metadata()
            with in_turn():
                ready = mapped()
            # Its turn taken once: a second write of the counter in this transaction waits
            # on the lock a writer queued behind it holds on the counter (a deadlock).
            return self._write_batch(tx, replace(ready, metadata_seen=None, moves_metadata=False),
                                     read_first=True)

        return self._write(work)

    @staticmethod
    def _write_batch(tx: StoreTransaction, batch: PreparedWrite, *,
                     read_first: bool) -> UpsertResult:
        result = UpsertResult()
        rebuilt_through = None
        # Writers of requests take turns (``lock_traffic``), held to the end of the
        # transaction. Before any read of stored requests: a writer of the same requests
        # that started earlier has committed by then, so the stored state read is what
        # the rollup counts (two at once would otherwise both count a new request). A
        # write that reads none — all its requests are its own nodes, written without
        # reading first — takes its turn after its node write, which finds any request
        # stored before (waiting, under the ID's uniqueness lock, for a writer creating
        # it) and then sends the batch back to read first. So one write's nodes go in
        # while another links, counts and commits (``load_batches`` keeps two writes in
        # flight on Neo4j); the turn comes before the edges, whose ends (the bundles) the
        # rollup links new counters to: every writer locks those after the turn.
        lock_early = bool(batch.requests) and (
            read_first or not batch.batch_kinds.keys() >= set(batch.requests))
        if lock_early:
            rebuilt_through = tx.lock_traffic()
        # Reading first (a re-send), the batch's own nodes too.
        lookups = [*batch.batch_kinds, *batch.outside] if read_first else batch.outside
        stored_kinds = tx.kinds(lookups) if lookups else {}
        # Only requests already stored can move between rollup keys; new ones just add.
        stored = [i for i in batch.requests if i in stored_kinds]
        before = tx.outcome_states(stored) if stored else {}
        if batch.whole_requests and before:
            conflicts = _reference_conflicts(batch, before)
            if conflicts:
                raise RequestsConflict(conflicts)
        if before:  # an upsert adding to what served a stored request
            for request, targets in _served_by(batch.edges).items():
                if request in before:
                    _check_one_server(request, targets | before[request].targets)
        if batch.nodes:
            # Not reading first, the batch's requests are created without looking: one
            # that is stored after all sends the batch back (``RequestsStored``).
            found: dict[str, str] = {}
            for rows, new in ((batch.node_rows, False), (batch.request_rows, not read_first)):
                if rows:
                    counts, were = tx.write_nodes(rows, new=new, keep_stored=batch.keep_stored)
                    result.nodes += counts
                    found.update(were)
            stored_kinds.update(found)
            # ``found`` is read under each node's lock (the adapters' ``write_nodes``): a
            # writer creating one of them meanwhile has committed by then.
            taken = batch.new_nodes & found.keys()
            if taken:
                raise NodesStored(taken)
            _check_kind_conflicts(batch.nodes, stored_kinds)
            if not read_first and not found.keys().isdisjoint(batch.requests):
                raise RequestsStored  # their rollup keys were not read before the write
        # An edge end in the batch has the kind the batch gives it (checked just above).
        _check_edge_kinds(batch.edges, {**stored_kinds, **batch.batch_kinds})
        if batch.families:  # each version keeps its family, and one only
            taken = tx.keep_families(batch.families)
            for edge in batch.edges:
                if edge.type == FAMILY_EDGE:
                    _check_one_family(edge, taken.get(edge.source))
        if batch.requests and not lock_early:
            rebuilt_through = tx.lock_traffic()
        # Edges from requests this write created cannot be stored yet.
        for rows, new in ((batch.edge_rows, False), (batch.request_edge_rows, not read_first)):
            if rows:
                result.edges += tx.write_edges(rows, new=new)
        if batch.requests:
            tx.add_traffic(batch.fresh_traffic if not stored and rebuilt_through is None
                           else deltas(before, batch.nodes, batch.edges, rebuilt_through))
        # After the writes of nodes and edges (writers of disjoint nodes overlap up to
        # here), before the stage log's and the numbered logs' locks, which a write mapped
        # in turn (``write_mapped``, holding this one from its start) takes after it: a
        # write mapped from a graph that moved since is refused; any other write of nodes
        # or edges (an admin upsert) moves the check on, as a mapper that read before it
        # would put back what it read.
        if batch.metadata_seen is not None or batch.moves_metadata:
            seen = tx.bump_metadata()
            if batch.metadata_seen is not None and seen != batch.metadata_seen:
                raise MetadataMoved
        if batch.judged:  # after the traffic lock, which writers of requests take first
            tx.lock_stages()
            _check_judged(tx, batch.judged)  # before the batch's own moves are appended
        for move in batch.stage_moves:
            tx.append_stage_move(move)
        result.stage_moves = len(batch.stage_moves)
        result.records_added = sum(tx.append_record(record) for record in batch.records)
        for entry in batch.audit:
            tx.append_audit(entry)
        return result

    def record_stage_move(self, move: StageMove, audit: AuditEntry | None = None, *,
                          check_from: bool = False) -> StageMove:
        """Append a stage move (and its audit entry) in one transaction; ``check_from`` as
        ``record_stage_moves``."""
        return self.record_stage_moves([move], [audit] if audit else [],
                                       check_from=check_from)[0]

    def record_stage_moves(self, moves: Sequence[StageMove], audit: Sequence[AuditEntry] = (),
                           *, check_from: bool = False,
                           judged: Mapping[str, int | None] | None = None,
                           rejudged: Rejudged | None = None) -> list[StageMove]:
        """Append stage moves and their audit entries in one transaction. ``check_from``:
        only if each move's ``from_version`` is still in effect there when written
        (``StageMoved`` otherwise, nothing kept) — a promotion or rollback judged what it
        read, and another may have landed since. ``judged`` (with ``check_from``): name →
        the seq of its latest move when the caller read its history; any move of the name
        since, in whatever environment, is ``StagesMoved``. ``rejudged``: what else the
        caller judged on, judged again in the write's turn if it moved (``Rejudged``)."""
        assert check_from or not judged, "judged is checked under check_from's lock"

        def work(tx: StoreTransaction) -> list[StageMove]:
            nonlocal moves, audit
            # The metadata writers' turn before the stage log's lock, as batches take them:
            # held to the commit, so what ``again`` reads stays as read.
            if rejudged is not None and tx.bump_metadata() != rejudged.seen:
                with in_turn():
                    moves, audit = rejudged.again()
            for move in moves if check_from else ():
                # A move landed since, or one dated after this one (this would slip in under
                # it): either way, not what the caller judged. Moves dated later than now
                # (scheduled, which ingest refuses) are in effect for nobody yet.
                latest = tx.lock_stage(move.name, move.environment, max(now(), move.at))
                found = latest[0] if latest else None
                if found != move.from_version or latest and latest[1] > move.at:
                    raise StageMoved(move, found)
            _check_judged(tx, judged or {})  # the lock is held: moves write in turn
            stored = [tx.append_stage_move(move) for move in moves]
            for entry in audit:
                tx.append_audit(entry)
            return stored

        return self._write(work)

    def archive_judged(self, judge: Callable[[], Sequence[Node]],
                       audit: Callable[[Node], AuditEntry]) -> list[Node]:
        """Write the nodes ``judge`` returns (versions marked archived) with an audit entry
        each, in one transaction. ``judge`` runs in the metadata writers' turn and under the
        stage log's lock, which every recorded move takes, both held to the commit: what it
        reads of the graph and of stage histories stays as read until the write lands, so
        a promotion landing meanwhile is either seen or comes after the archive, which it
        then sees (``Rejudged``). Returns the nodes written."""

        def work(tx: StoreTransaction) -> list[Node]:
            tx.bump_metadata()  # before the stage log's lock, as writers of batches take it
            tx.lock_stages()
            with in_turn():
                kept = list(judge())
            if kept:
                tx.write_nodes(self._node_rows(kept))
            for node in kept:
                tx.append_audit(audit(node))
            return kept

        return self._write(work)

    def append_audit(self, entry: AuditEntry) -> None:
        self._write(lambda tx: tx.append_audit(entry))

    def rebuild_traffic(self, page: int = 5000,
                        progress: Callable[[int], None] | None = None) -> int:
        """Recount the traffic rollup from the requests (a store written before it, or one
        whose counts are in doubt); returns how many requests were counted.

        Online: writers go on meanwhile. The counters are cleared, then the requests are
        counted a page at a time in ID order, one transaction each, and the store keeps
        the last ID counted. A writer counts its requests up to that ID and leaves the
        ones after it to the rebuild, which reads each page after taking the rollup's lock
        (``lock_traffic``), so it sees every request committed before. Until the last page,
        traffic answers count only the pages done; a rebuild that stopped half-way leaves
        new requests past its last page uncounted until one runs to the end."""

        def start(tx: StoreTransaction) -> None:
            tx.lock_traffic()
            tx.clear_traffic()
            tx.set_traffic_rebuild("")

        def count(tx: StoreTransaction) -> int:
            counted_through = tx.lock_traffic()
            if counted_through is None:  # another rebuild finished it meanwhile
                return 0
            ids = tx.request_ids(counted_through, page)
            states = tx.outcome_states(ids) if ids else {}
            tx.add_traffic([(key, 1) for key in (s.key for s in states.values()) if key])
            tx.set_traffic_rebuild(ids[-1] if ids else None)
            return len(ids)

        self._write(start)
        counted = 0
        while n := self._write(count):
            counted += n
            if progress is not None:
                progress(counted)
        return counted

    @abstractmethod
    def _node_rows(self, nodes: Sequence[Node]) -> Any:
        """Nodes as this adapter's transaction writes them (``write_nodes``)."""

    @abstractmethod
    def _edge_rows(self, edges: Sequence[Edge]) -> Any:
        """Edges as this adapter's transaction writes them (``write_edges``)."""

    @abstractmethod
    def _write(self, work: Callable[[StoreTransaction], T]) -> T:
        """Run ``work`` in one write transaction (retried on transient errors where the
        adapter supports it, so ``work`` must be idempotent); roll back if it raises."""

    # -- reads --------------------------------------------------------------------------

    @abstractmethod
    def get(self, ids: Sequence[str]) -> dict[str, Node]:
        """The nodes with these IDs; unknown IDs are absent from the result."""

    @abstractmethod
    def get_edges(self, keys: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], Edge]:
        """The edges with these keys (source, type, target); unknown ones are absent."""

    @abstractmethod
    def find(
        self,
        *,
        kinds: Sequence[str] | None = None,
        name: str | None = None,
        text: str | None = None,
        where: dict[str, Any] | None = None,
        first: int = 100,
        after: str | None = None,
    ) -> list[Node]:
        """Nodes by ID order, keyset-paged (IDs greater than ``after``): of ``kinds``, with
        exactly this ``name``, whose ID contains ``text`` (case-insensitive), and whose
        indexed properties equal ``where``."""

    @abstractmethod
    def expand(
        self,
        frontier: Sequence[str],
        direction: Direction,
        *,
        edge_types: Sequence[str] | None = None,
        node_kinds: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        ordered: bool = False,
        exclude: Collection[str] | None = None,
        inline: int | None = None,
    ) -> list[Hop]:
        """Neighbours one hop from the frontier: out-edges for UPSTREAM, in-edges for
        DOWNSTREAM, both for BOTH. Filters apply to the neighbour node (kind,
        ``since <= created_at <= until``, not in ``exclude``) and to the edge type. At
        most ``limit`` rows: the store's choice of them, or with ``ordered`` the first in
        ``hop_order`` of up to ``ORDERED_SCAN`` × ``limit`` rows read. With ``inline``, a
        node's or an edge's properties longer than that many characters are left out of
        its row (``Hop.node_elided``, ``Hop.edge_elided``): ``get`` and ``get_edges`` read
        them."""

    @abstractmethod
    def nearest(
        self,
        frontier: Sequence[str],
        direction: Direction,
        *,
        count: int,
        newest: bool,
        edge_types: Sequence[str] | None = None,
        node_kinds: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        exclude: Collection[str] | None = None,
        inline: int | None = None,
    ) -> list[Hop]:
        """Of the rows ``expand`` would return, each frontier node's first ``count`` over
        each edge type by its neighbour's (``created_at``, ID), newest first or oldest
        first: which version of a source was the latest at a time, without reading every
        version it has. ``inline`` as for ``expand``."""

    @abstractmethod
    def family_versions(
        self,
        families: Sequence[str],
        *,
        count: int | None,
        newest: bool,
        since: datetime | None = None,
        until: datetime | None = None,
        exclude: Collection[str] | None = None,
        inline: int | None = None,
    ) -> list[Hop]:
        """What ``nearest(families, DOWNSTREAM, edge_types=[FAMILY_EDGE], ...)`` returns
        (every row with ``count`` None), read from the index of the family ID each version
        keeps, in order from the nearest end and cut there: at the cost of the rows
        returned (and of ``exclude``), not of every version a family has. ``inline`` as
        for ``expand``."""

    def expand_hops(
        self,
        frontier: Sequence[str],
        direction: Direction,
        hops: int,
        *,
        seen: Iterable[str],
        edge_types: Sequence[str] | None = None,
        row_cap: int,
        side: SideHop | None = None,
        inline: int | None = None,
    ) -> HopsAhead | None:
        """The frontier's own nodes and several hops of a frontier walk, in one round trip;
        or None where a store has no round trips to save (the walk then asks ``get`` and
        ``expand`` hop by hop).

        Hop *k* expands the distinct nodes first reached at hop *k-1* (not in ``seen``, not
        reached before); a list per hop, empty ones once the frontier is. Nothing
        is filtered out (archived nodes, node caps): the walk replays the rows and drops
        them when its own frontier differs. Returns None as well when a hop reaches
        ``row_cap`` rows, so the walk's per-hop limits decide what is cut. ``side`` rows
        come back too (``HopsAhead.side``), unless they reach ``row_cap``. ``inline`` as
        for ``expand``, for the rows and the frontier's nodes (``HopsAhead.elided``)."""
        return None

    @abstractmethod
    def tally_neighbours(
        self,
        frontier: Sequence[str],
        direction: Direction,
        *,
        kind: str,
        edge_types: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: str | None = None,
    ) -> dict[str | None, Tally]:
        """Count distinct neighbours of ``kind`` one hop from the frontier in the time
        window, with their first and last ``created_at``, grouped by one of the kind's
        indexed properties, by ``ORIGIN`` (the frontier node reached from), or all under
        ``None``. Counting happens in the store: fan-outs of millions never leave it."""

    def count_neighbours(
        self,
        frontier: Sequence[str],
        direction: Direction,
        *,
        kind: str,
        edge_types: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        group_by: str | None = None,
    ) -> dict[str | None, int]:
        tallies = self.tally_neighbours(frontier, direction, kind=kind, edge_types=edge_types,
                                        since=since, until=until, group_by=group_by)
        return {key: tally.count for key, tally in tallies.items()}

    @abstractmethod
    def traffic_rollup(self, targets: Sequence[str], first_day: str | None,
                       last_day: str | None) -> dict[str | None, int]:
        """Requests per environment from the rollup keys naming any of ``targets``, over
        the UTC days ``first_day``..``last_day`` (ISO dates, inclusive; None: open)."""

    @abstractmethod
    def stage_history(
        self,
        name: str | None = None,
        environment: str | None = None,
        until: datetime | None = None,
        *,
        names: Sequence[str] | None = None,
        last: int | None = None,
        before: tuple[datetime, int] | None = None,
        versions: Sequence[str | None] | None = None,
        since: datetime | None = None,
    ) -> list[StageMove]:
        """Stage moves, oldest first (by ``at``, then append order); ``names`` keeps the
        moves of any of those names (one read for many); ``since``/``until``: only moves
        with ``since <= at <= until``; ``last``: only the last that many; ``before``
        (``at``, ``seq``): only moves ordered before that one (with ``last``, the page
        before it: a history read backwards a page at a time); ``versions``: only moves to
        one of those versions (None: moves to no version)."""

    @abstractmethod
    def last_stage_seq(self, name: str) -> int | None:
        """The seq of the latest move of ``name`` appended (None before any): what a write
        judged on its stage history is checked against."""

    def stage_latest(
        self,
        environment: str | None = None,
        until: datetime | None = None,
        *,
        names: Sequence[str] | None = None,
        pairs: Collection[tuple[str, str | None]] | None = None,
        before: tuple[datetime, int] | None = None,
        per: StageKey = "environment",
        count: int = 1,
        since: datetime | None = None,
    ) -> list[StageMove]:
        """The last move (by ``at``, then append order) of each name in each environment,
        as ``stage_history`` filters them: what is in effect, read without the history
        before it (a name promoted hourly for years has tens of thousands of moves).
        ``per="version"``: the last move to each version of each name instead (whether
        it is retired now: ``retired_versions``); ``per="visit"``: the last of each name,
        environment and version (where a version ever went); ``per="name"``: the last of
        each name, wherever it went. ``count``: the last that many of each (the tail of
        each environment's history, for many names in one read). ``pairs`` (name, version),
        in place of ``names``: only the moves of each name to the versions paired with it
        (None: to no version), each slot's last to each read from the end of an index — a
        page of versions of many names, where each name's versions with every other's would
        ask names × versions. Oldest first."""
        if pairs is not None:
            if names is not None:
                raise ValueError("stage_latest takes names or pairs, not both")
            if not pairs:
                return []  # moves to none of no versions
            pairs = list(dict.fromkeys(pairs))
            names = list(dict.fromkeys(name for name, _ in pairs))
        if per == "name" and environment is not None:
            per = "environment"  # a name's moves in one environment: those of its slot
        if pairs is None and names is not None and len(set(names)) == 1 and (
                per == "name" or per == "environment" and environment is not None):
            # One key: its last moves, read from the end of its index in order (of some
            # versions, from the end of each slot's moves to each: the adapters')
            return self.stage_history(names[0], environment, until, before=before,
                                      last=count, since=since)
        return self._stage_latest(environment, until, names=names, pairs=pairs,
                                  before=before, per=per, count=count, since=since)

    @abstractmethod
    def _stage_latest(
        self,
        environment: str | None,
        until: datetime | None,
        *,
        names: Sequence[str] | None,
        pairs: Sequence[tuple[str, str | None]] | None,
        before: tuple[datetime, int] | None,
        per: StageKey,
        count: int,
        since: datetime | None,
    ) -> list[StageMove]:
        """``stage_latest`` of more than one key (a name in one environment, or with
        ``per="name"``, a name); with ``pairs`` (distinct), ``names`` are theirs."""

    @abstractmethod
    def audit_log(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        actor: str | None = None,
        target: str | None = None,
        after_seq: int | None = None,
        limit: int = 1000,
        targets: Sequence[str] | None = None,
    ) -> list[AuditEntry]:
        """Audit entries, oldest first; ``after_seq``: those appended after that one;
        ``targets``: of any of those targets (one read for many)."""

    @abstractmethod
    def audit_sizes(self, *, since: datetime | None = None, until: datetime | None = None,
                    actor: str | None = None, target: str | None = None,
                    after_seq: int | None = None, limit: int = 1000) -> list[int]:
        """The characters of the entries ``audit_log`` reads with the same arguments."""

    def records(
        self,
        collection: str,
        *,
        key: str | None = None,
        key_prefix: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_seq: int | None = None,
        limit: int = 1000,
    ) -> list[Record]:
        """Records of a collection in append order, from ``after_seq`` on (keyset pages);
        ``key_prefix`` keeps those whose key starts with it (e.g. one run's events)."""
        return self.read_records(
            RecordFilter(collection, key, key_prefix, since, until, after_seq), limit)

    @abstractmethod
    def read_records(self, where: RecordFilter, limit: int) -> list[Record]:
        """``records``: the first ``limit`` in append order."""

    @abstractmethod
    def record_sizes(self, where: RecordFilter, limit: int) -> list[int]:
        """The characters of JSON of each record ``read_records`` would return."""

    @abstractmethod
    def ready(self) -> bool:
        """True when the store answers a trivial query; False, not an error, when it
        cannot (``StoreUnavailable``, or the query's time budget gone)."""

    def started_at(self) -> datetime | None:
        """When the database behind the store last started, for one that runs apart from
        this process: a later time means a restart, with its query plans cold again
        (``warmup``). None for a store that lives in this process."""
        return None

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def wipe(self) -> None:
        """Delete everything. For tests and ``demo --reset``; not reachable from the API."""

    # -- derived lookups, written once over the primitives --------------------------------

    def record_page(self, where: RecordFilter, *, limit: int,
                    max_chars: int = PAGE_CHARS) -> RecordPage:
        """The first records that fit in ``max_chars`` of JSON and ``limit`` — at least
        one. Kept OpenLineage events and dead letters can each be as large as a request
        body: a page of a thousand must not be read whole. Records are only appended, so
        the sizes read first are those of the records read next."""
        sizes = self.record_sizes(where, limit + 1)
        fit = fitting(sizes[:limit], max_chars)
        return RecordPage(records=self.read_records(where, fit) if fit else [],
                          sizes=sizes[:fit], more=len(sizes) > fit)

    def audit_page(self, *, limit: int, max_chars: int = PAGE_CHARS,
                   **where: Any) -> tuple[list[AuditEntry], bool]:
        """``audit_log(**where)``'s first entries that fit in ``max_chars`` and ``limit``
        (at least one), and whether more follow: an entry holds a node's properties before
        and after a change, up to 1 MiB each, and a page of thousands must not be read
        whole."""
        sizes = self.audit_sizes(limit=limit + 1, **where)
        fit = fitting(sizes[:limit], max_chars)
        return (self.audit_log(limit=fit, **where) if fit else []), len(sizes) > fit

    def all_nodes(self, kinds: Sequence[str], page: int = 1000) -> Iterator[Node]:
        """Every node of ``kinds``, in ID order, a page (keyset) at a time."""
        after: str | None = None
        while True:
            nodes = self.find(kinds=list(kinds), first=page, after=after)
            yield from nodes
            if len(nodes) < page:
                return
            after = nodes[-1].id

    def all_records(self, collection: str) -> Iterator[Record]:
        """Every record of a collection, a page at a time."""
        where = RecordFilter(collection)
        while True:
            page = self.record_page(where, limit=1000)
            yield from page.records
            if not page.more:
                return
            where = replace(where, after_seq=page.records[-1].seq)

    def stage_at(self, name: str, environment: str, at: datetime | None = None) -> str | None:
        """The version of ``name`` in effect in ``environment`` at ``at`` (default: now);
        None before the first move or after a move to nothing."""
        latest = self.stage_latest(environment, until=at or now(), names=[name])
        return latest[0].to_version if latest else None

    def versions(self, kind: str, name: str, *, last: int, before: str | None = None,
                 whole_numbers: bool = False,
                 exclude: Collection[str] = frozenset()) -> list[Node]:
        """The last ``last`` versions of ``name`` of a versioned kind in ``version_order``
        (before the key ``before``; only whole numbers; not ``exclude``), oldest first."""
        return self.read_versions(VersionFilter((kind,), name, before=before,
                                                whole_numbers=whole_numbers,
                                                exclude=frozenset(exclude)), last)

    def all_versions(self, kind: str, name: str, page: int = 1000) -> Iterator[Node]:
        """Every version of ``name`` of a versioned kind, newest first, a ``version_page``
        at a time (each read costs the versions it reads, from the store's index on the
        name and key): for a caller that stops at the first it wants, or compares them all
        with a list that names them all anyway."""
        where = VersionFilter((kind,), name)
        while True:
            found = self.version_page(where, last=page)
            yield from reversed(found.versions)
            if found.earlier is None:
                return
            where = replace(where, before=found.earlier)

    def version_page(self, where: VersionFilter, *, last: int,
                     max_chars: int = PAGE_CHARS) -> VersionPage:
        """The newest of the last ``last`` versions ``where`` selects that fit in
        ``max_chars`` of properties (at least one), oldest first: a name may have tens of
        thousands of versions of up to 1 MiB of properties each. Their sizes are read
        first; then the versions kept, by ID."""
        rows = self.version_sizes(where, last + 1)
        newest = rows[-last:][::-1]
        kept = newest[:fitting([row.chars for row in newest], max_chars)][::-1]
        found = self.get([row.id for row in kept]) if kept else {}
        return VersionPage(versions=[found[row.id] for row in kept if row.id in found],
                           earlier=kept[0].key if len(rows) > len(kept) else None,
                           cut_by_chars=len(kept) < len(newest))

    @abstractmethod
    def read_versions(self, where: VersionFilter, last: int) -> list[Node]:
        """The last ``last`` versions ``where`` selects in ``version_order``, oldest first:
        ordered and cut by the store, so only those reach Python."""

    @abstractmethod
    def version_sizes(self, where: VersionFilter, last: int) -> list[VersionRow]:
        """The versions ``read_versions`` would return, without their properties."""

    @abstractmethod
    def metadata_seq(self) -> int:
        """How many writes judged on the graph's metadata have landed (``PreparedWrite.
        metadata_seen``): read before mapping such a write."""

    @abstractmethod
    def traffic_rebuild_position(self) -> str | None:
        """While a rebuild of the rollup runs (or after one stopped half-way): the last
        request ID it has counted, and traffic answers are partial; else None."""

    def traffic(self, targets: Sequence[str], since: datetime | None = None,
                until: datetime | None = None) -> dict[str | None, int]:
        """Distinct requests served by any of ``targets`` (over an outcome edge) with
        ``since <= created_at <= until``, by environment: whole days from the rollup, the
        rest of the window counted from the requests."""
        if not targets:
            return {}
        window = split_window(since, until)
        total: Counter[str | None] = Counter()
        if window.whole_days:
            total.update(self.traffic_rollup(targets, window.first_day, window.last_day))
        for start, end in window.partial:
            total.update(self.count_neighbours(
                targets, Direction.DOWNSTREAM, kind=OUTCOME_KIND, edge_types=OUTCOME_EDGES,
                since=start, until=end, group_by="environment"))
        return {env: n for env, n in total.items() if n}

    def live_bundles(self, environment: str, at: datetime | None = None) -> list[Node]:
        """Every bundle version in effect in ``environment`` at ``at`` (default: now), by
        name."""
        live = live_from(self.stage_latest(environment, until=at or now()), by="name")
        ids = [bundle_id(name, version) for name, version in sorted(live.items())]
        found = self.get(ids)
        return [found[i] for i in ids if i in found]

    def stage_histories(self, names: Iterable[str], until: datetime | None = None, *,
                        since: datetime | None = None,
                        last: int | None = None) -> dict[str, list[StageMove]]:
        """Each name's stage history (``stage_history``) with ``since <= at <= until`` in
        one read, by name: [] for a name with no move. ``last``: only each name's last that
        many, read from the end of its moves up to ``until`` (``stage_latest``), not the
        whole window: a name promoted every minute has thousands in a week."""
        wanted = sorted(set(names))
        if not wanted:
            return by_name([], wanted)
        return by_name(self.stage_history(names=wanted, since=since, until=until)
                       if last is None else self.stage_latest(
                           until=until, since=since, names=wanted, per="name", count=last),
                       wanted)

    def live_environments(self, name: str, at: datetime | None = None) -> dict[str, str]:
        """environment → version of ``name`` live there at ``at`` (default: now)."""
        return live_from(self.stage_latest(until=at or now(), names=[name]))


# Independent reads of one analysis overlap their round trips. The stores are safe to call
# from several threads (the Neo4j driver pools connections; the embedded store serialises
# on its lock). Calls handed here must not hand work here themselves: no nesting.
_READS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lineagegraph-read")


# Set while a write's own thread reads the graph in its turn (``in_turn``): the embedded
# store's lock is held by that thread, so reads handed to other threads would wait on it.
_IN_TURN = threading.local()


def concurrently(*calls: Callable[[], Any]) -> list[Any]:
    """The results of ``calls``, run at the same time (one after the other inside a write's
    turn, ``in_turn``); the first failure is raised."""
    if getattr(_IN_TURN, "depth", 0):
        return [call() for call in calls]
    futures = [_READS.submit(call) for call in calls]
    return [future.result() for future in futures]


@contextmanager
def in_turn() -> Iterator[None]:
    """Reads of a write's judgement inside its transaction (``Rejudged``, ``archive_judged``,
    ``write_mapped``): ``concurrently`` keeps them on this thread."""
    _IN_TURN.depth = getattr(_IN_TURN, "depth", 0) + 1
    try:
        yield
    finally:
        _IN_TURN.depth -= 1


# The stage a retired version moves into (design §2 lists it with the others): a record
# that it was retired, never an environment where it serves.
RETIRED = "retired"


def live_from(moves: Iterable[StageMove],
              by: Literal["environment", "name"] = "environment") -> dict[str, str]:
    """The version in effect after these moves (oldest first): per environment for the
    moves of one name (``retired`` is no environment a version is live in), or per name
    for the moves of one environment."""
    live: dict[str, str | None] = {}
    for move in moves:
        if by == "environment" and move.environment == RETIRED:
            continue
        live[getattr(move, by)] = move.to_version
    return {key: version for key, version in live.items() if version is not None}


def by_name(moves: Iterable[StageMove], names: Iterable[str]) -> dict[str, list[StageMove]]:
    """Moves read for many names at once, by name, in the order read: [] for a name
    with none."""
    grouped: dict[str, list[StageMove]] = {name: [] for name in names}
    for move in moves:
        grouped.setdefault(move.name, []).append(move)
    return grouped


def retired_versions(moves: Iterable[StageMove]) -> set[str]:
    """The versions of one name retired now: moved into ``retired``, and into no other
    environment since (promoting a retired version again revives it). Moves oldest first."""
    retired: set[str] = set()
    for move in moves:
        if move.to_version is None:
            continue
        if move.environment == RETIRED:
            retired.add(move.to_version)
        else:
            retired.discard(move.to_version)
    return retired


# Integer and dotted numeric versions, as Python's ``re`` and Java's (Neo4j's ``=~``) read
# it alike: ASCII digits only (Java's ``\d`` is ASCII; Python's took ``٣`` too).
DOTTED_VERSION = r"[vV]?([0-9]+(?:\.[0-9]+)*)"
_DOTTED = re.compile(DOTTED_VERSION)
# The versions "previous + 1" counts from (a manifest's default version).
WHOLE_NUMBER = r"[0-9]+"
_WHOLE = re.compile(WHOLE_NUMBER)
# Microseconds from 0001-01-01 to the epoch: a version key's time is counted from there, so
# it is never negative and 18 digits always hold it.
YEAR_ONE_MICROS = 62_135_596_800_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
# A numeric part's length, in this many digits: an ID part holds at most 1,000 bytes.
PART_LENGTH_DIGITS = 4


def whole_number(version: str | None) -> bool:
    return version is not None and _WHOLE.fullmatch(version) is not None


# Neo4j compares text by UTF-16 units, which put U+E000..U+FFFF after the characters past
# U+FFFF; Python and SQLite by code points. A key's version is written with each character
# of those two ranges after a marker of its range (``HIGH_BMP`` below ``ASTRAL``), so the
# key sorts the same either way — in code-point order of the version.
HIGH_BMP, ASTRAL = "\ue000", "\ue001"


def _sortable_anywhere(text: str) -> str:
    if not text or max(text) < HIGH_BMP:  # nearly every version: nothing to mark
        return text
    return "".join(ASTRAL + c if c > "\uffff" else HIGH_BMP + c if c >= HIGH_BMP else c
                   for c in text)


def version_key(version: str | None, created_at: datetime) -> str:
    """The text that sorts versions in ``version_order`` — by code points, as the stores
    sort text — so the stores order a name's versions themselves: each keeps it with the
    versioned node (``stored_version_key``) in an index with the name. Numeric versions
    first, part by part: each part without leading zeros, after its length (so 9 < 10,
    1.9.0 < 1.10.0, and numbers of any size); ``!`` ends the parts (below any digit:
    1 < 1.0); then the creation time (fixed-width microseconds), then the version itself
    (``_sortable_anywhere``)."""
    dotted = _DOTTED.fullmatch(version or "")
    numbers = "".join(f"{len(part):0{PART_LENGTH_DIGITS}d}{part}" for part in (
        digits.lstrip("0") or "0" for digits in dotted.group(1).split("."))) if dotted else ""
    micros = (utc(created_at) - _EPOCH) // _MICRO + YEAR_ONE_MICROS
    return f"{0 if dotted else 1}{numbers}!{micros:018d}{_sortable_anywhere(version or '')}"


def stored_version_key(kind: str, version: str | None, created_at: datetime) -> str | None:
    """The ``version_key`` a store keeps with a node, None for a kind without versions
    (the version reads take versioned kinds only). Stored, not computed per read: a
    name's last versions are then read from the index's newest end, at the cost of what
    is read, not of all the name's versions. Written wherever ``created_at`` is."""
    return version_key(version, created_at) if NODE_KINDS_BY_LABEL[kind].versioned else None


_VERSION_KEY = re.compile(r"[01][0-9]*![0-9]{18}.*", re.DOTALL)


def is_version_key(text: str) -> bool:
    """Whether ``text`` has the shape of a ``version_key`` (a cursor read back)."""
    return _VERSION_KEY.fullmatch(text) is not None


def version_order(node: Node) -> str:
    """Sort key: integer and dotted numeric versions (``7``, ``1.10.0``) by their numbers —
    as text ``1.9.0`` would come after ``1.10.0`` — then the rest by creation time; ties
    by creation time, then the version (``version_key``)."""
    return version_key(node.version, node.created_at)


# A version the graph made up (OpenLineage's placeholder for a version no facet named) and
# later learned the real one of: archived, pointing at it; no version of its own.
REPLACED_BY = "replaced_by"


def replaced(node: Node) -> bool:
    return REPLACED_BY in node.properties


def check_filters(
    edge_types: Sequence[str] | None,
    node_kinds: Sequence[str] | None,
    group_by: tuple[str, str | None] | None = None,
    where: dict[str, Any] | None = None,
) -> None:
    """Reject names outside the schema's whitelist before any adapter builds a query."""
    for edge_type in edge_types or ():
        if edge_type not in EDGE_KINDS_BY_TYPE:
            raise SchemaError(f"unknown edge type {edge_type!r}")
    for kind in node_kinds or ():
        if kind not in NODE_KINDS_BY_LABEL:
            raise SchemaError(f"unknown kind {kind!r}")
    if group_by is not None:
        kind, prop = group_by
        if prop not in (None, ORIGIN) and prop not in NODE_KINDS_BY_LABEL[kind].indexed:
            raise SchemaError(f"{kind} cannot be grouped by {prop!r}")
    indexed = {p for k in NODE_KINDS_BY_LABEL.values() for p in k.indexed}
    for prop in where or {}:
        if prop not in indexed:
            raise SchemaError(f"cannot filter on {prop!r} (indexed: {sorted(indexed)})")


def fitting(sizes: Sequence[int], max_chars: int) -> int:
    """How many of the first ``sizes`` fit in ``max_chars``: at least one, if any."""
    fit = chars = 0
    for size in sizes:
        if fit and chars + size > max_chars:
            break
        chars += size
        fit += 1
    return fit
