"""The Neo4j store: the official driver, ``UNWIND`` batches, managed transactions.

The only module with Cypher in it. Labels and relationship types are interpolated only
after ``check_filters`` or from the schema's own tables; every value is a parameter.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NoReturn, TypeVar

import neo4j
from neo4j import GraphDatabase, ManagedTransaction, NotificationMinimumSeverity

from lineagegraph.schema import (
    EDGE_KINDS_BY_TYPE,
    LINEAGE_EDGE_TYPES,
    NODE_KINDS,
    NODE_KINDS_BY_LABEL,
    AuditEntry,
    Edge,
    Node,
    Record,
    StageMove,
)
from lineagegraph.schema.bounds import NEO4J_INDEX_KEY_BYTES
from lineagegraph.schema.constraints import indexes, uniqueness_constraints
from lineagegraph.schema.kinds import (
    COUNTER_LABEL,
    FAMILIES_FORMAT,
    FAMILY,
    FAMILY_EDGE,
    FAMILY_MEMBERS,
    NODE_LABEL,
    STAGE_SLOT_LABEL,
    STAGE_SLOTS_FORMAT,
    STORE_FORMAT,
    TRAFFIC_EDGE,
    TRAFFIC_LABEL,
    VERSION_KEYS_FORMAT,
)
from lineagegraph.schema.models import canonical_json

from .deadline import DeadlinePassed
from .deadline import check as check_deadline
from .store import (
    ORDERED_SCAN,
    ORIGIN,
    WHOLE_NUMBER,
    Direction,
    GraphStore,
    Hop,
    HopsAhead,
    RecordFilter,
    RequestsStored,
    SideHop,
    StageKey,
    StoreUnavailable,
    StoreUpgraded,
    Tally,
    VersionFilter,
    VersionRow,
    WriteCounts,
    check_filters,
    check_format,
    elided,
    held,
    newer_format,
    stored_version_key,
    warn_split_families,
)
from .traffic import OUTCOME_EDGES, OUTCOME_KIND, REQUEST_IDS, OutcomeState, TrafficKey

T = TypeVar("T")

# Rows per UNWIND round trip: cartography-sized batches; one transaction still covers the
# whole upsert call.
CHUNK_ROWS = 5000
# (more characters of properties than, rows per transaction) for ``wipe``, the largest
# elements first: at most ~32 MiB (one record at the body limit), 25 MiB and 40 MiB a
# transaction.
_WIPE_TIERS = ((256 * 2**10, 1), (4 * 2**10, 100), (0, 10_000))
# An element's properties' size: text by its length, anything else as 8. A record keeps its
# payload's size, so its payload is not read to measure it.
_PROPERTY_CHARS = ("coalesce(x.size, reduce(n = 0, k IN keys(x) | n + "
                   "CASE WHEN x[k] IS :: STRING THEN size(x[k]) ELSE 8 END))")

# Times leave Neo4j as integer microseconds since the epoch: the driver's DateTime
# hydration (pure Python) cost more than the rest of reading a row (cProfile, bench/README).
# (epochSeconds rounds toward zero, which put times before 1970 up to a second late;
# epochMillis rounds down.)
_MICROS = "{0}.epochMillis * 1000 + {0}.microsecond % 1000"
_FIELDS = {"id": "n.id", "kind": "n.kind", "name": "n.name", "version": "n.version",
           "created_us": _MICROS.format("n.created_at"), "props": "n.props"}
# A node's fields as map entries, for rows read as one collected list (``Neo4jStore._rows``).
_NODE_MAP = ", ".join(f"{key}: {value}" for key, value in _FIELDS.items())
# An edge ``r``'s fields.
_EDGE_MAP = "source: startNode(r).id, type: type(r), target: endNode(r).id, eprops: r.props"
# A walk's rows (``expand(inline=…)``): properties longer than ``$inline`` characters come
# as their size, an integer, and are read apart; the row keeps its shape.
_INLINE = "CASE WHEN size({0}) > $inline THEN size({0}) ELSE {0} END"  # null $inline: whole
_WALK_NODE_MAP = ", ".join(f"{key}: {_INLINE.format(value) if key == 'props' else value}"
                           for key, value in _FIELDS.items())
_WALK_EDGE_MAP = _EDGE_MAP.replace("eprops: r.props", f"eprops: {_INLINE.format('r.props')}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
# ... and enter it as integers too, for the same reason (the driver's DateTime
# dehydration took ~37 µs a value, a fifth of an outcome batch's write): ``row.{0}`` is
# [seconds, nanoseconds] since the epoch, made by ``_epoch``.
_FROM_EPOCH = "datetime({{epochSeconds: row.{0}[0], nanosecond: row.{0}[1]}})"


def _from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _epoch(value: datetime) -> list[int]:
    """[seconds, nanoseconds] since the epoch of a UTC time (``_FROM_EPOCH`` reads it)."""
    seconds, micros = divmod((value - _EPOCH) // _MICRO, 1_000_000)
    return [seconds, micros * 1000]


def _logged(var: str) -> str:
    """A log entry's properties with its time as microseconds, as ``var``."""
    return f"{var} {{.*, at: {_MICROS.format(var + '.at')}}} AS {var}"


def _native(value: Any) -> Any:
    return value.to_native() if isinstance(value, neo4j.time.DateTime) else value


def _node(record: dict[str, Any]) -> Node:
    node = Node.stored(record["kind"], record["name"], record["version"],
                       _from_micros(record["created_us"]), held(record["props"]))
    # The stored ID is the one ``Node.id`` would format again (a cached property).
    node.__dict__["id"] = record["id"]
    return node


def _hop(record: Any) -> Hop:
    return Hop(
        origin=record["origin"],
        edge=Edge.stored(record["source"], record["type"], record["target"],
                         held(record["eprops"])),
        node=_node(record),
        node_elided=elided(record["props"]),
        edge_elided=elided(record["eprops"]),
    )


_LAST_SEQ = "MATCH (m:StageMove {name: $name}) RETURN max(m.seq) AS seq"


def _stage_move(props: dict[str, Any]) -> StageMove:
    # Neo4j stores no nulls: absent means None.
    return StageMove(name=props["name"], environment=props["environment"],
                     from_version=props.get("from_version"), to_version=props.get("to_version"),
                     at=_from_micros(props["at"]), actor=props["actor"],
                     reason=props.get("reason"), seq=props["seq"])


def _counter_id(key: TrafficKey) -> str:
    """A traffic counter's ID under its uniqueness index: the key's text, or, past what the
    index takes (a request that read 150 features: a 500), its digest. A digest has no
    U+001F, so it never equals a key's text; and no counter was stored under a key that
    long, so every stored one keeps its ID."""
    text = key.id
    if len(text) * 4 <= NEO4J_INDEX_KEY_BYTES:  # short: no need to encode it
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= NEO4J_INDEX_KEY_BYTES:
        return text
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _chunks(rows: list[T], size: int = CHUNK_ROWS) -> list[list[T]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _rel_pattern(edge_types: Sequence[str] | None) -> str:
    types = list(edge_types) if edge_types is not None else list(LINEAGE_EDGE_TYPES)
    for edge_type in types:  # whitelist: never interpolate a name the schema lacks
        assert edge_type in EDGE_KINDS_BY_TYPE, edge_type
    return "|".join(types)


def _where(*conditions: tuple[str, Any]) -> str:
    """``WHERE`` with only the conditions whose value is given. The ``$p IS NULL OR …``
    form would hide indexes from the planner (PROFILE showed label scans)."""
    given = [clause for clause, value in conditions if value is not None]
    return f"WHERE {' AND '.join(given)} " if given else ""


def _stage_where(name: str | None, environment: str | None, until: datetime | None,
                 names: Sequence[str] | None, versions: Sequence[str | None] | None,
                 before: tuple[datetime, int] | None,
                 since: datetime | None = None) -> tuple[str, dict[str, Any]]:
    """The filters of ``stage_history`` and ``stage_latest``: a WHERE clause and its
    parameters."""
    where = _where(("m.name = $name", name), ("m.name IN $names", names),
                   ("m.environment = $env", environment),
                   # null is in no list: a move to no version is asked apart
                   ("(m.to_version IN $versions OR (m.to_version IS NULL AND $to_nothing))",
                    versions), ("m.at >= $since", since), ("m.at <= $until", until),
                   # keyset: ordered by (at, seq), strictly before that move. Not as ``at <
                   # $before_at OR (...)``, nor as ``NOT (at = … AND seq >= …)``, which the
                   # planner rewrote into that OR: two seeks and a union, and a sort of what
                   # they found (PROFILE), where a range on ``at`` reads in order. A CASE it
                   # leaves a filter.
                   ("m.at <= $before_at AND CASE WHEN m.at = $before_at "
                    "THEN m.seq < $before_seq ELSE true END", before))
    return where, {"name": name, "names": None if names is None else list(names),
                   "env": environment,
                   "versions": None if versions is None else [
                       v for v in versions if v is not None],
                   "to_nothing": versions is not None and None in versions,
                   "since": since, "until": until, "before_at": before and before[0],
                   "before_seq": before and before[1]}


# ``stage_latest``'s groups (``StageKey``) besides the name, as grouping keys.
_STAGE_KEYS = {"environment": ", m.environment AS env", "version": ", m.to_version AS version",
               "visit": ", m.environment AS env, m.to_version AS version", "name": ""}


def _counts(record: dict[str, Any], total: int) -> WriteCounts:
    created, updated = record["created"], record["updated"]
    return WriteCounts(created=created, updated=updated, unchanged=total - created - updated)


_TRAFFIC_COUNTER = "traffic"
_METADATA_COUNTER = "metadata"
# The store format (schema/kinds.py STORE_FORMAT) this database was written in, as ``value``.
_FORMAT_COUNTER = "format"
# How long opening a store waits for an index it created to be populated.
_INDEXES_WAIT_S = 600
# Nodes a transaction of the steps to format 2 and 3 keys (``Neo4jStore._key_versions``,
# ``_keep_families``).
_KEY_FILL = 10_000
# A named counter (``$counter``) as ``c``, and the same counter moved on: its write lock is
# held to the end of the transaction, so writers that bump one take turns.
_COUNTER = f"MERGE (c:{COUNTER_LABEL} {{name: $counter}}) "
_BUMPED = _COUNTER + "SET c.value = coalesce(c.value, 0) + 1 "
# Follows a writers' turn in its statement: the store's format and the one a newer version
# is upgrading it to (``Neo4jStore._mark_upgrade``), as ``format``, read after the turn's
# lock is granted, so as committed before it (``_Neo4jTransaction._taking_turn`` checks them).
# A read by the unique name in the statement the writer sends anyway: no round trip more.
_FORMAT_READ = (f"WITH * OPTIONAL MATCH (stamp:{COUNTER_LABEL} {{name: $format_counter}}) "
                "WITH *, [stamp.value, stamp.next] AS format ")
# The logs numbered by a counter (``_append_numbered``), in the order writers take their
# turns: a batch appends its stage moves, then its records, then its audit entries.
_NUMBERED_LOGS = ("StageMove", "Record", "AuditEntry")


def created_nodes_query(label: str) -> str:
    """The write of a batch's new ``label`` nodes (rows as ``Neo4jStore._node_rows``)."""
    assert label in NODE_KINDS_BY_LABEL, label  # whitelist: a schema label only
    return f"""
        UNWIND $rows AS row
        CREATE (n:{NODE_LABEL}:{label} {{
            id: row.id, kind: row.kind, name: row.name, version: row.version,
            created_at: {_FROM_EPOCH.format("created_at")}, version_key: row.version_key,
            props: row.props}})
        SET n += row.indexed
        RETURN count(*) AS created, 0 AS updated
    """


def created_edges_query(edge_type: str) -> str:
    """The write of edges from nodes the same transaction created: none can be stored, so
    CREATE. MERGE locks both ends before it creates (its MergeInto operator); CREATE takes
    no exclusive lock on a dense node (Neo4j's manual, "Locks for dense nodes"), so two
    writes in flight do not queue on the bundles every request points at."""
    return f"""
        UNWIND $rows AS row
        MATCH (a:{NODE_LABEL} {{id: row.source}})
        MATCH (b:{NODE_LABEL} {{id: row.target}})
        CREATE (a)-[:{_rel_pattern([edge_type])} {{props: row.props}}]->(b)
        RETURN count(*) AS created, 0 AS updated
    """


def driver_auth(user: str | None, password: str | None) -> tuple[str, str] | None:
    """The driver's ``auth`` for NEO4J_USER and NEO4J_PASSWORD: none without a password
    (authentication off), the user ``neo4j`` when only the password is given."""
    return (user or "neo4j", password) if password else None


def _each_last(per: Literal["environment", "name"], environment: str | None,
               since: datetime | None, until: datetime | None,
               names: Sequence[str] | None,
               pairs: Sequence[tuple[str, str | None]] | None = None,
               before: bool = False) -> str:
    """Cypher leaving ``m``: the last ``$count`` moves (in [``$since``, ``$until``]) of
    each slot of ``environment`` (``$env``) and ``names`` (``$names``), or with
    ``per="name"`` of each of ``names``, each read from the end of the index on (name,
    [environment,] at, seq) and cut there, named as a seek as in ``stage_history``: a
    slot's or a name's moves are never grouped whole (50,000 moves in one environment:
    ``live_bundles`` 53 → 1.7 ms). ``pairs`` (slots only, ``names`` theirs): the last
    ``$count`` of each slot to each version paired with its name (``_paired``), from the
    end of the index on (name, environment, to_version, at, seq), and to no version;
    ``before``: only moves ordered before (``$before_at``, ``$before_seq``), with ``$until``
    at most ``$before_at``."""
    # One predicate on ``at`` (a range, where both ends are given): given a bound and
    # ``IS NOT NULL``, the planner sometimes seeked on the latter and filtered the bound,
    # reading every move after ``until`` (1,005 db hits for 6).
    at = " AND ".join([*(["m.at >= $since"] if since is not None else []),
                       *(["m.at <= $until"] if until is not None else [])]
                      ) or "m.at IS NOT NULL"
    if before:  # the keyset as a CASE, as ``_stage_where`` says why
        at += " AND CASE WHEN m.at = $before_at THEN m.seq < $before_seq ELSE true END"

    def seek(on: str, keyed: str) -> str:
        order = ", ".join(f"m.{prop} DESC" for prop in on.split(", "))
        return (f"MATCH (m:StageMove) USING INDEX SEEK m:StageMove({on}) "
                f"WHERE {keyed}{at} AND m.seq IS NOT NULL "
                f"WITH m ORDER BY {order} LIMIT $count RETURN m")

    if per == "name":
        assert pairs is None, "a name's moves to some versions are read by slot"
        moves = seek("name, at, seq", "m.name = name AND ")
        return f"UNWIND $names AS name CALL (name) {{ {moves} }} "
    slots = _where(("s.name IN $names", names), ("s.environment = $env", environment))
    if names is not None:
        # The names' slots from their index, named: among few slots (60 for 20 names) the
        # planner scanned them all, which grows with every name in the store.
        slots = (f"USING INDEX SEEK s:{STAGE_SLOT_LABEL}(name, environment) " + slots
                 + ("AND s.environment IS NOT NULL " if environment is None else ""))
    slot = "m.name = s.name AND m.environment = s.environment AND "
    if pairs is None:
        moves = seek("name, environment, at, seq", slot)
    else:
        # Each version of the slot's name its own seek, bound before it (``UNWIND``, then
        # ``CALL``); a move to no version has no ``to_version``, so no entry in the index
        # on it: the slot's moves are read from their end until ``$count`` of those are
        # found.
        moves = " UNION ".join([
            *(["UNWIND $versions[s.name] AS v CALL (s, v) { "
               f"{seek('name, environment, to_version, at, seq', slot + 'm.to_version = v AND ')}"
               " } RETURN m"] if any(v is not None for _, v in pairs) else []),
            *(["WITH s WHERE s.name IN $to_nothing "
               + seek("name, environment, at, seq", slot + "m.to_version IS NULL AND ")]
              if any(v is None for _, v in pairs) else [])])
    return f"MATCH (s:{STAGE_SLOT_LABEL}) {slots}CALL (s) {{ {moves} }} "


def _paired(pairs: Sequence[tuple[str, str | None]]) -> dict[str, Any]:
    """``_each_last``'s parameters of ``pairs``: each name's versions (``$versions``), and
    the names asked to no version (``$to_nothing``)."""
    versions: dict[str, list[str]] = {}
    for name, version in pairs:
        if version is not None:
            versions.setdefault(name, []).append(version)
    return {"versions": versions,
            "to_nothing": sorted({name for name, version in pairs if version is None})}


# A stage move's slot, kept as the move is appended (under the stage log's turn, so two
# appends never both create it).
_SLOTTED = f"MERGE (:{STAGE_SLOT_LABEL} {{name: $name, environment: $env}}) WITH seq, format "


def _turn(label: str) -> str:
    """The name of the node whose write lock is the writers' turn at the ``label`` log."""
    return f"{label}.turn"


class _Neo4jTransaction:
    def __init__(self, tx: ManagedTransaction) -> None:
        self.tx = tx
        self._logs_held: set[str] = set()  # numbered logs whose turn this transaction has
        self.format_checked = False  # by a statement taking a turn (``_taking_turn``)

    def _taking_turn(self, query: str, **params: Any) -> neo4j.Record:
        """Run a statement taking a writers' turn and reading the format after it
        (``_FORMAT_READ``): refused (``StoreUpgraded``, which rolls the transaction back) in
        a store a newer version marked, before this transaction writes more."""
        record = self.tx.run(query, format_counter=_FORMAT_COUNTER, **params
                             ).single(strict=True)
        check_format(Neo4jStore.name, *record["format"])
        self.format_checked = True
        return record

    def check_format(self) -> None:
        """The format, read under the format counter's own lock, which an upgrade's mark
        takes after every turn: for a transaction that took no turn (``Neo4jStore._write``).
        Setting a property takes the node's lock before it reads it (as ``keep_families``)."""
        self._taking_turn(_COUNTER + "SET c.value = c.value " + _FORMAT_READ + "RETURN format",
                      counter=_FORMAT_COUNTER)

    def kinds(self, ids: Sequence[str]) -> dict[str, str]:
        # Collected into one record: a record apiece costs the driver ~30 µs (a batch's
        # 256 bundle ends 9-13 ms → 3 ms; 5k stored requests 111 → 22-31 ms).
        record = self.tx.run(
            f"UNWIND $ids AS id MATCH (n:{NODE_LABEL} {{id: id}}) "
            "RETURN collect([n.id, n.kind]) AS found",
            ids=list(ids),
        ).single(strict=True)
        return dict(record["found"])

    def write_nodes(self, rows: dict[str, list[dict[str, Any]]], *, new: bool = False,
                    keep_stored: frozenset[str] = frozenset()
                    ) -> tuple[WriteCounts, dict[str, str]]:
        counts, found = WriteCounts(), {}
        for label, label_rows in rows.items():
            assert label in NODE_KINDS_BY_LABEL, label
            if keep_stored:
                label_rows = [{**row, "keep": True} if row["id"] in keep_stored else row
                              for row in label_rows]
            for chunk in _chunks(label_rows):
                if new:
                    counts += self._create_nodes(label, chunk)
                    continue
                # created_at is set on create only: the first write's time is kept, but
                # for a kept one dated back (``keep_stored``), and its version_key with it
                # (the row's is the key of its version at its time). The OPTIONAL MATCH
                # is a locking seek on the unique ID (EXPLAIN: NodeUniqueIndexSeek(Locking)):
                # it waits for another writer creating the same node to commit, and then
                # sees it, so ``found`` is never short.
                record = self.tx.run(
                    f"""
                    UNWIND $rows AS row
                    OPTIONAL MATCH (old:{NODE_LABEL} {{id: row.id}})
                    WITH row, old IS NULL AS is_new, old.props AS before, old.kind AS was
                    MERGE (n:{NODE_LABEL} {{id: row.id}})
                    ON CREATE SET n:{label}, n.kind = row.kind, n.name = row.name,
                                  n.version = row.version,
                                  n.created_at = {_FROM_EPOCH.format("created_at")},
                                  n.version_key = row.version_key
                    WITH row, is_new, before, was, n, is_new OR row.keep IS NULL AS written,
                         {_FROM_EPOCH.format("created_at")} AS at
                    WITH row, is_new, before, was, n, written, at,
                         NOT written AND at < n.created_at AS earlier
                    SET n.props = CASE WHEN written THEN row.props ELSE before END,
                        n += CASE WHEN written THEN row.indexed ELSE {{}} END,
                        n.created_at = CASE WHEN earlier THEN at ELSE n.created_at END,
                        n.version_key = CASE WHEN earlier THEN row.version_key
                                        ELSE n.version_key END
                    RETURN count(CASE WHEN is_new THEN 1 END) AS created,
                           count(CASE WHEN written AND NOT is_new AND before <> row.props
                                      THEN 1 END) AS updated,
                           collect(CASE WHEN NOT is_new THEN [row.id, was] END) AS found
                    """,
                    rows=chunk,
                ).single(strict=True)
                counts += _counts(record, len(chunk))
                found.update(record["found"])
        return counts, found

    def _create_nodes(self, label: str, rows: list[dict[str, Any]]) -> WriteCounts:
        # CREATE, not MERGE: no lookup of a stored twin and no MERGE lock. A stored twin
        # fails the uniqueness constraint (after waiting for a writer creating it to
        # commit), which rolls the transaction back.
        try:
            record = self.tx.run(created_nodes_query(label), rows=rows).single(strict=True)
        except neo4j.exceptions.ConstraintError:
            raise RequestsStored from None
        return _counts(record, len(rows))

    def write_edges(self, rows: dict[str, list[dict[str, Any]]], *,
                    new: bool = False) -> WriteCounts:
        counts = WriteCounts()
        for edge_type, type_rows in rows.items():
            for chunk in _chunks(type_rows):
                if new:
                    counts += self._create_edges(edge_type, chunk)
                    continue
                record = self.tx.run(
                    f"""
                    UNWIND $rows AS row
                    MATCH (a:{NODE_LABEL} {{id: row.source}})
                    MATCH (b:{NODE_LABEL} {{id: row.target}})
                    OPTIONAL MATCH (a)-[old:{_rel_pattern([edge_type])}]->(b)
                    WITH a, b, row, old IS NULL AS is_new, old.props AS before
                    MERGE (a)-[r:{_rel_pattern([edge_type])}]->(b)
                    SET r.props = row.props
                    RETURN count(CASE WHEN is_new THEN 1 END) AS created,
                           count(CASE WHEN NOT is_new AND before <> row.props THEN 1 END)
                             AS updated
                    """,
                    rows=chunk,
                ).single(strict=True)
                counts += _counts(record, len(chunk))
        return counts

    def keep_families(self, families: Mapping[str, str]) -> dict[str, str]:
        # The SET reads the stored family in its own expression: Cypher takes the node's
        # write lock before it reads (a direct dependency, Neo4j's "lost updates"), so of
        # two writers linking one version at once the second sees the first's family.
        record = self.tx.run(
            f"UNWIND $rows AS row MATCH (n:{NODE_LABEL} {{id: row[0]}}) "
            f"SET n.{FAMILY} = coalesce(n.{FAMILY}, row[1]) "
            f"WITH n, row WHERE n.{FAMILY} <> row[1] "
            f"RETURN collect([n.id, n.{FAMILY}]) AS taken",
            rows=sorted(families.items())).single(strict=True)
        return dict(record["taken"])

    def _create_edges(self, edge_type: str, rows: list[dict[str, Any]]) -> WriteCounts:
        record = self.tx.run(created_edges_query(edge_type), rows=rows).single(strict=True)
        return _counts(record, len(rows))

    def _append_numbered(self, label: str, fields: str, also: str = "",
                         **params: Any) -> int:
        """Create a ``label`` log entry with the next number of its sequence (``seq`` in
        ``fields``) in one statement: a counter node serialises appends (its write lock), so
        the numbers are gap-free and ordered even under concurrent writers. One round
        trip, not two: every batch a load writes appends its audit entry. The log's turn
        (``_log_turn``) comes first, in the same statement the first time, and the format
        read after it (``_FORMAT_READ``); ``also`` (Cypher ending in ``WITH seq, format``)
        follows the entry's creation."""
        record = self._taking_turn(
            self._log_turn(label) + _BUMPED + _FORMAT_READ
            + f"WITH c.value AS seq, format CREATE (:{label} {{{fields}}}) {also}"
            "RETURN seq, format", counter=label, turn=_turn(label), **params)
        return int(record["seq"])

    def _log_turn(self, label: str) -> str:
        """Cypher taking the writers' turn at the ``label`` log (a node of its own, written
        once a transaction), or nothing if this transaction has it. A transaction writes
        the log's counter once an entry; written again while another transaction waited on
        it, Neo4j found a deadlock and the driver retried a second later (two stage moves at
        once from two sessions: 23 of 30 rounds; a promotion's check then its move: 20 of
        30). Waiting on a node written once, writers queue instead."""
        if label in self._logs_held:
            return ""
        self._logs_held.add(label)
        return (f"MERGE (turn:{COUNTER_LABEL} {{name: $turn}}) "
                "SET turn.value = coalesce(turn.value, 0) + 1 WITH turn LIMIT 1 ")

    def lock_traffic(self) -> str | None:
        # A counter's write lock, held to the end of the transaction; the counter node
        # also keeps how far a rebuild of the rollup has counted.
        record = self._taking_turn(_BUMPED + _FORMAT_READ
                               + "RETURN c.rebuilt_through AS through, format",
                               counter=_TRAFFIC_COUNTER)
        return record["through"]

    def set_traffic_rebuild(self, counted_through: str | None) -> None:
        self.tx.run(_COUNTER + "SET c.rebuilt_through = $through",
                    counter=_TRAFFIC_COUNTER, through=counted_through).consume()

    def request_ids(self, after: str, limit: int) -> list[str]:
        # A range seek on the ID index, in index order.
        first, end = REQUEST_IDS
        record = self.tx.run(
            f"MATCH (n:{NODE_LABEL}) WHERE n.id > $after AND n.id < $end "
            "WITH n.id AS id ORDER BY id LIMIT $limit RETURN collect(id) AS ids",
            after=max(after, first), end=end, limit=limit,
        ).single(strict=True)
        return list(record["ids"])

    def append_stage_move(self, move: StageMove) -> StageMove:
        seq = self._append_numbered(
            "StageMove", "id: seq, seq: seq, name: $name, environment: $env, "
            "from_version: $from_version, to_version: $to_version, at: $at, actor: $actor, "
            "reason: $reason", also=_SLOTTED,
            name=move.name, env=move.environment, from_version=move.from_version,
            to_version=move.to_version, at=move.at, actor=move.actor, reason=move.reason,
        )
        return move.model_copy(update={"seq": seq})

    def lock_stages(self) -> None:
        # The stage log's turn (``_log_turn``), which every append of a move takes too. Its
        # own statement: in one with a read, the planner may read the moves before the
        # turn is held.
        self.lock_log("StageMove")

    def lock_log(self, label: str) -> None:
        """The writers' turn at the numbered ``label`` log, held to the commit."""
        turn = self._log_turn(label)
        if turn:
            self._taking_turn(turn + _FORMAT_READ + "RETURN format", turn=_turn(label))

    def bump_metadata(self) -> int:
        record = self._taking_turn(_BUMPED + _FORMAT_READ + "RETURN c.value AS seq, format",
                               counter=_METADATA_COUNTER)
        return record["seq"] - 1

    def lock_stage(self, name: str, environment: str,
                   until: datetime) -> tuple[str | None, datetime] | None:
        self.lock_stages()
        record = self.tx.run(
            "OPTIONAL MATCH (m:StageMove {name: $name, environment: $env}) WHERE m.at <= $until "
            "WITH m ORDER BY m.at DESC, m.seq DESC LIMIT 1 "
            "RETURN m IS NOT NULL AS found, m.to_version AS version, m.at AS at",
            name=name, env=environment, until=until).single(strict=True)
        return (record["version"], _native(record["at"])) if record["found"] else None

    def last_stage_seq(self, name: str) -> int | None:
        return self.tx.run(_LAST_SEQ, name=name).single(strict=True)["seq"]

    def append_audit(self, entry: AuditEntry) -> None:
        self._append_numbered(
            "AuditEntry", "id: seq, seq: seq, at: $at, actor: $actor, action: $action, "
            "target: $target, before: $before, after: $after",
            at=entry.at, actor=entry.actor, action=entry.action, target=entry.target,
            before=canonical_json(entry.before), after=canonical_json(entry.after),
        )

    def append_record(self, record: Record) -> bool:
        # Insert if absent; the uniqueness constraint on Record.id rejects a concurrent twin.
        found = self.tx.run(
            "MATCH (r:Record {id: $id}) RETURN r.seq AS seq",
            id=f"{record.collection}\x1f{record.key}",
        ).single()
        if found is not None:
            return False
        payload = canonical_json(record.payload)
        self._append_numbered(
            "Record", "id: $id, seq: seq, collection: $collection, key: $key, at: $at, "
            "size: $size, payload: $payload",
            id=f"{record.collection}\x1f{record.key}", collection=record.collection,
            key=record.key, at=record.at, size=len(payload), payload=payload,
        )
        return True


    def outcome_states(self, ids: Sequence[str]) -> dict[str, OutcomeState]:
        # One record, as in ``kinds``: a re-sent batch reads thousands.
        record = self.tx.run(
            f"UNWIND $ids AS id MATCH (n:{NODE_LABEL} {{id: id}}) WHERE n:{OUTCOME_KIND} "
            f"OPTIONAL MATCH (n)-[:{_rel_pattern(OUTCOME_EDGES)}]->(t:{NODE_LABEL}) "
            f"WITH n, collect(t.id) AS targets "
            f"RETURN collect([n.id, n.environment, {_MICROS.format('n.created_at')}, "
            f"targets]) AS states",
            ids=list(ids),
        ).single(strict=True)
        return {oid: OutcomeState(environment, _from_micros(created_us), frozenset(targets))
                for oid, environment, created_us, targets in record["states"]}

    def add_traffic(self, changes: Sequence[tuple[TrafficKey, int]]) -> None:
        rows = [{"id": _counter_id(k), "signature": k.signature, "targets": list(k.targets),
                 "environment": k.environment, "day": k.day, "n": n} for k, n in changes]
        for chunk in _chunks(rows):
            # The counter's write lock (its MERGE under the uniqueness constraint)
            # serialises concurrent writers of one key.
            self.tx.run(
                f"""
                UNWIND $rows AS row
                MERGE (c:{TRAFFIC_LABEL} {{id: row.id}})
                ON CREATE SET c.signature = row.signature, c.environment = row.environment,
                              c.day = row.day, c.n = 0
                // A stored counter is never 0 (deleted below), so 0 means created here;
                // only a new counter is linked to its targets, which are in the graph by
                // then (the batch's edge check) and never deleted.
                WITH c, row, c.n = 0 AS created
                SET c.n = c.n + row.n
                WITH c, row, created
                CALL (c, row, created) {{
                    UNWIND CASE WHEN created THEN row.targets ELSE [] END AS tid
                    MATCH (t:{NODE_LABEL} {{id: tid}})
                    MERGE (c)-[:{TRAFFIC_EDGE}]->(t)
                }}
                WITH c WHERE c.n = 0
                DETACH DELETE c
                """,
                rows=chunk,
            ).consume()

    def clear_traffic(self) -> None:
        self.tx.run(f"MATCH (c:{TRAFFIC_LABEL}) DETACH DELETE c").consume()


@contextmanager
def _deadline_on_timeout() -> Iterator[None]:
    """The server stopped a transaction at its time limit: the query's budget ran out."""
    try:
        yield
    except neo4j.exceptions.ClientError as error:
        if "TransactionTimedOut" in (error.code or ""):
            raise DeadlinePassed from None
        raise


# Neo4j down, restarting (its database not yet available) or too busy: once the driver's
# retries are spent, the caller may retry later. Other errors are bugs, not outages.
_UNAVAILABLE = (neo4j.exceptions.ServiceUnavailable, neo4j.exceptions.SessionExpired,
                neo4j.exceptions.TransientError)


@contextmanager
def _available() -> Iterator[None]:
    try:
        yield
    except _UNAVAILABLE as error:
        raise StoreUnavailable(Neo4jStore.name, "Neo4j cannot be reached or is not ready",
                               f"{type(error).__name__}: {error}") from error


class Neo4jStore(GraphStore):
    name = "neo4j"

    def __init__(
        self,
        uri: str,
        user: str | None = None,
        password: str | None = None,
        database: str = "neo4j",
        *,
        query_timeout_s: float | None = None,
        parallel_writes: int = 2,
        write_retry_s: float = 5.0,
    ) -> None:
        auth = driver_auth(user, password)
        # A batch's node write runs while the one before it links, counts and commits:
        # Neo4j works on both at once (raw batches of 5,000 outcomes at medium, two in
        # flight against one: ×1.3, bench/README.md).
        self.parallel_writes = parallel_writes
        # Schema notifications (e.g. "relationship type does not exist yet" on an empty
        # graph) are noise for a service whose queries are generated from the schema.
        # Writes retry transient failures for ``write_retry_s`` (reads: ``_read``, three
        # tries): the driver's 30 s kept a REST write to a stopped Neo4j waiting a minute.
        self._driver = GraphDatabase.driver(
            uri, auth=auth, notifications_min_severity=NotificationMinimumSeverity.OFF,
            max_transaction_retry_time=write_retry_s)
        self._database = database
        self._timeout = query_timeout_s
        self._driver.verify_connectivity()
        # Read before anything is written: a newer layout (a kind or a property this
        # version lacks) would open and then fail request by request as internal errors.
        # Or one a newer version is upgrading (``_mark_upgrade``): its steps are under way.
        stamped, marked = self._read(
            f"OPTIONAL MATCH (c:{COUNTER_LABEL} {{name: $name}}) "
            "RETURN c.value AS value, c.next AS next", name=_FORMAT_COUNTER)[0]
        if (marked or 0) > max(stamped or 0, STORE_FORMAT):
            self._refuse(newer_format(marked, marked=True))
        if stamped is not None and stamped > STORE_FORMAT:
            self._refuse(newer_format(stamped))
        for statement in [*uniqueness_constraints(), *indexes()]:
            try:
                self._driver.execute_query(statement, database_=database)
            except neo4j.exceptions.ClientError as error:
                # IF NOT EXISTS of replicas opening it at once (a store upgraded to a format
                # adding an index): another created it between the check and the create.
                if error.code != "Neo.ClientError.Schema.EquivalentSchemaRuleAlreadyExists":
                    raise
        # Reads name their indexes (``USING INDEX``), which fails while one is populating:
        # one created just now (a store upgraded to a format that adds it) is waited for.
        self._driver.execute_query("CALL db.awaitIndexes($seconds)", seconds=_INDEXES_WAIT_S,
                                   database_=database)
        # A store from before the traffic rollup: requests but no rollup counter, which
        # every writer of requests creates. Traffic answers said 0; they say partial,
        # naming the rebuild, until one (`lineagegraph traffic rebuild`) has counted them.
        self._driver.execute_query(
            f"OPTIONAL MATCH (c:{COUNTER_LABEL} {{name: $counter}}) WITH c WHERE c IS NULL "
            f"MATCH (:{OUTCOME_KIND}) WITH 1 AS stored LIMIT 1 "
            f"MERGE (c:{COUNTER_LABEL} {{name: $counter}}) SET c.rebuilt_through = ''",
            counter=_TRAFFIC_COUNTER, database_=database)
        # The step above finds the layout it mends itself (databases from before the
        # stamp); a step to a later format runs where ``stamped`` is below it, once the
        # store is marked: an older server (from this version on) writes nothing after.
        if stamped != STORE_FORMAT:
            try:
                self._mark_upgrade()
            except StoreUpgraded as error:  # a newer version marked it since it was read
                self._refuse(newer_format(error.format, marked=True))
        if stamped is None or stamped < VERSION_KEYS_FORMAT:
            self._key_versions()
        if stamped is None or stamped < FAMILIES_FORMAT:
            self._keep_families()
        if stamped is None or stamped < STAGE_SLOTS_FORMAT:
            self._slot_stages()
        if stamped != STORE_FORMAT:
            self._stamp_format()

    def _refuse(self, why: str) -> NoReturn:
        self._driver.close()
        raise ValueError(why)  # Settings.open_store: one line

    def _mark_upgrade(self) -> None:
        """Mark the store with the format this version takes it to (``next`` on the format
        counter, never lowered) before the first step, in one transaction taking every
        writers' turn in the order writers take them (traffic, metadata, then the numbered
        logs, as ``GraphStore._write_batch``): a writer holding one commits before the mark,
        and any taking one after reads it (``_FORMAT_READ``) and writes nothing. So an older
        server still running (from this version on) writes nothing in the layout the steps
        are changing, nor after. The metadata counter moves on, as under any writer of
        metadata: a write of this version mapped before it is mapped again."""

        def mark(tx: _Neo4jTransaction) -> None:
            tx.lock_traffic()
            tx.bump_metadata()
            for label in _NUMBERED_LOGS:
                tx.lock_log(label)
            tx.tx.run(_COUNTER + "SET c.next = CASE WHEN c.next >= $format THEN c.next "
                      "ELSE $format END", counter=_FORMAT_COUNTER, format=STORE_FORMAT
                      ).consume()

        self._write(mark)

    def _key_versions(self) -> None:
        """Format 2: the ``version_key`` of every stored versioned node without one, made
        by Python's ``stored_version_key`` (its one definition), ``_KEY_FILL`` nodes a
        transaction in each label's ID order: bounded, and safe to run twice or from
        replicas opening the store at once (each writes the same keys, in one order, and
        none over a key a writer has set since)."""
        for kind in NODE_KINDS:
            if not kind.versioned:
                continue
            for rows in self._unset_pages(kind.label, "version_key", (
                    f"RETURN collect([n.id, n.version, {_MICROS.format('n.created_at')}]) "
                    "AS rows")):
                keys = [{"id": node_id, "key": stored_version_key(
                    kind.label, version, _from_micros(micros))}
                    for node_id, version, micros in rows]
                self._driver.execute_query(
                    f"UNWIND $rows AS row MATCH (n:{kind.label} {{id: row.id}}) "
                    "WHERE n.version_key IS NULL SET n.version_key = row.key",
                    rows=keys, database_=self._database)

    def _unset_pages(self, label: str, prop: str, returned: str) -> Iterator[list[Any]]:
        """The ``label`` nodes without ``prop``, ``_KEY_FILL`` at a time in ID order, as
        ``returned`` makes them of each page's ``n`` (rows starting with ``n.id``): a step
        to a later format fills each page in its own transaction."""
        after = ""
        while True:
            rows = self._rows(
                f"MATCH (n:{label}) WHERE n.id > $after AND n.{prop} IS NULL "
                f"WITH n ORDER BY n.id LIMIT $limit {returned}", after=after, limit=_KEY_FILL)
            if rows:
                yield rows
            if len(rows) < _KEY_FILL:
                return
            after = max(row[0] for row in rows)  # grouping may have reordered the page

    def _slot_stages(self) -> None:
        """Format 3: a slot for each (name, environment) the stored moves went to. One
        statement: the moves are read once, grouped; the slots are few. MERGE under the
        slots' uniqueness constraint: safe to run twice or from replicas at once."""
        self._driver.execute_query(
            "MATCH (m:StageMove) WITH DISTINCT m.name AS name, m.environment AS env "
            f"MERGE (:{STAGE_SLOT_LABEL} {{name: name, environment: env}})",
            database_=self._database)

    def _keep_families(self) -> None:
        """Format 3: each stored version keeps its family's ID, the target of its
        ``VERSION_OF`` edge; of two (linked before a version had one family), the smallest
        ID (by code point, as Python and SQLite compare), with a warning naming the
        version. ``_KEY_FILL`` versions a transaction in each label's ID order, as
        ``_key_versions``: bounded, and safe to run twice or from replicas at once (each
        sets the same family, none over one set since)."""
        for label in FAMILY_MEMBERS:
            for rows in self._unset_pages(label, FAMILY, (
                    f"OPTIONAL MATCH (n)-[:{FAMILY_EDGE}]->(f:{NODE_LABEL}) "
                    "WITH n, collect(f.id) AS families RETURN collect([n.id, families]) AS rows")):
                linked = {version: families for version, families in rows if families}
                warn_split_families({v: f for v, f in linked.items() if len(f) > 1})
                self._driver.execute_query(
                    f"UNWIND $rows AS row MATCH (n:{label} {{id: row[0]}}) "
                    f"SET n.{FAMILY} = coalesce(n.{FAMILY}, row[1])",
                    rows=[[v, min(f)] for v, f in linked.items()], database_=self._database)

    def _stamp_format(self) -> None:
        """Stamp ``STORE_FORMAT``. A MERGE under the counters' uniqueness constraint:
        replicas opening one fresh database at once leave one stamp. Never lowered, should
        a newer version have stamped it since it was read."""
        self._driver.execute_query(
            _COUNTER + "SET c.value = CASE WHEN c.value >= $format THEN c.value "
            "ELSE $format END", counter=_FORMAT_COUNTER, format=STORE_FORMAT,
            database_=self._database)

    def _node_rows(self, nodes: Sequence[Node]) -> dict[str, list[dict[str, Any]]]:
        by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for node in nodes:
            by_label[node.kind].append({
                "id": node.id, "kind": node.kind, "name": node.name, "version": node.version,
                "created_at": _epoch(node.created_at), "props": node.props_json,
                "version_key": stored_version_key(node.kind, node.version, node.created_at),
                "indexed": node.indexed(),
            })
        return by_label

    def _edge_rows(self, edges: Sequence[Edge]) -> dict[str, list[dict[str, Any]]]:
        by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
        # MERGE of a relationship locks both ends: in one order in every batch, two
        # writes in flight (``parallel_writes``) wait for each other but never deadlock
        # on the bundles that thousands of requests point at.
        for edge in sorted(edges, key=lambda e: (e.target, e.source)):
            by_type[edge.type].append(
                {"source": edge.source, "target": edge.target, "props": edge.props_json})
        return by_type

    def _write(self, work: Callable[[_Neo4jTransaction], T]) -> T:
        # A mutation whose query runs out of time writes nothing: not started past its
        # deadline, and rolled back by the server if it reaches it (ingest has none).
        left = check_deadline()
        raised: list[Exception] = []  # what the work raised, attempt by attempt

        def unit(tx: ManagedTransaction) -> T:
            try:
                ours = _Neo4jTransaction(tx)
                done = work(ours)
                if not ours.format_checked:  # no writers' turn taken: no format read yet
                    ours.check_format()
                return done
            except Exception as error:
                raised.append(error)
                raise

        timed = unit if left is None else neo4j.unit_of_work(timeout=left)(unit)
        with _available(), _deadline_on_timeout(), self._driver.session(
                database=self._database) as session:
            try:
                return session.execute_write(timed)
            except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError) as error:
                # Rolling back, the driver reads what the transaction's statements left
                # unread, and a failure met there replaces what the work raised: a load
                # stopped on ResultFailedError where a CREATE meeting a stored twin had
                # raised RequestsStored, which sends the batch back to read first (twice in
                # twelve loads of a file repeating its requests, two writes in flight).
                # Only what this work raised: a write made while the caller handles another
                # exception (the read-first retry, in ``except RequestsStored``) carries
                # that one as its context, and re-raising it hid a Neo4j gone meanwhile.
                ours = raised[-1] if raised else None
                if ours is not None and ours is not error and not isinstance(
                        ours, neo4j.exceptions.Neo4jError | neo4j.exceptions.DriverError):
                    error.__context__ = None  # ours has error as its cause: no cycle
                    raise ours from error
                raise

    def _read(self, query: str, **params: Any) -> list[neo4j.Record]:
        # An auto-commit read, not ``execute_query``'s managed transaction: BEGIN and COMMIT
        # are extra round trips, and a trace makes ~15 reads (bench/README.md: p50 of one
        # read 6.2 ms → 1.6 ms on the bench machine). Reads are idempotent, so a transient
        # failure is retried here as the managed transaction would.
        for attempt in range(3):
            try:
                with _available(), _deadline_on_timeout(), self._driver.session(
                        database=self._database,
                        default_access_mode=neo4j.READ_ACCESS) as session:
                    return list(session.run(neo4j.Query(query, timeout=self._time_limit()),
                                            params))
            except StoreUnavailable:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _time_limit(self) -> float | None:
        """The statement's server-side time limit: what is left of the query's budget,
        never more than the configured per-statement limit."""
        left = check_deadline()
        if left is None:
            return self._timeout
        return min(left, self._timeout) if self._timeout else left

    def _rows(self, query: str, **params: Any) -> list[dict[str, Any]]:
        """The rows of a query that collects them into one list (``RETURN collect(…) AS
        rows``): one Bolt message instead of one per row, which the driver reads at ~40 µs
        each (a 523-move stage history: 19.2 → 8.8 ms)."""
        return self._read(query, **params)[0]["rows"]

    # -- reads --------------------------------------------------------------------------

    def get(self, ids: Sequence[str]) -> dict[str, Node]:
        rows = self._rows(
            f"UNWIND $ids AS id MATCH (n:{NODE_LABEL} {{id: id}}) "
            f"RETURN collect({{{_NODE_MAP}}}) AS rows",
            ids=list(ids),
        )
        return {r["id"]: _node(r) for r in rows}

    def get_edges(self, keys: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], Edge]:
        rows = self._rows(
            f"UNWIND $keys AS k MATCH (a:{NODE_LABEL} {{id: k[0]}})-[r]->"
            f"(b:{NODE_LABEL} {{id: k[2]}}) WHERE type(r) = k[1] "
            f"RETURN collect({{{_EDGE_MAP}}}) AS rows",
            keys=[list(key) for key in keys],
        )
        edges = (Edge.stored(r["source"], r["type"], r["target"], r["eprops"]) for r in rows)
        return {edge.key: edge for edge in edges}

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
        check_filters(None, kinds, where=where)
        # Property names in `where` passed the whitelist above; values stay parameters.
        conditions = "".join(f" AND n.{prop} = $where.{prop}" for prop in where or {})
        # A page after a cursor seeks the ID index: its order is ORDER BY's (code points),
        # while `>` on values compares UTF-16 units — an ID holding a character past U+FFFF
        # (an emoji) was skipped or repeated by a filter the planner did not seek with.
        # (A name lookup keeps its own index: a name has few versions.)
        paged = "n.id > $after AND " if after is not None else ""
        seek = f"USING INDEX n:{NODE_LABEL}(id) " if paged and name is None else ""
        rows = self._rows(
            f"MATCH (n:{NODE_LABEL}) {seek}WHERE {paged}($kinds IS NULL OR n.kind IN $kinds) "
            "AND ($name IS NULL OR n.name = $name) "
            f"AND ($text IS NULL OR toLower(n.id) CONTAINS $text){conditions} "
            f"WITH n ORDER BY n.id LIMIT $first RETURN collect({{{_NODE_MAP}}}) AS rows",
            kinds=list(kinds) if kinds else None, name=name, after=after,
            text=text.lower() if text else None, where=where or {}, first=first,
        )
        return [_node(r) for r in rows]

    # Frontier node ``f``, edge ``r`` and neighbour ``n``, per direction.
    _PATTERNS = {
        Direction.UPSTREAM: f"({{f}})-[{{r}}:{{rel}}]->({{n}}:{NODE_LABEL})",
        Direction.DOWNSTREAM: f"({{f}})<-[{{r}}:{{rel}}]-({{n}}:{NODE_LABEL})",
        Direction.BOTH: f"({{f}})-[{{r}}:{{rel}}]-({{n}}:{NODE_LABEL})",
    }

    @classmethod
    def _pattern(cls, direction: Direction, rel: str, f: str = "f", r: str = "r",
                 n: str = "n") -> str:
        return cls._PATTERNS[direction].format(rel=rel, f=f, r=r, n=n)

    @classmethod
    def _hop_match(cls, direction: Direction, rel: str) -> str:
        """``MATCH`` of frontier node ``f``, edge ``r`` and neighbour ``n``."""
        pattern = cls._pattern(direction, rel)
        return (
            f"UNWIND $frontier AS fid MATCH (f:{NODE_LABEL} {{id: fid}}) MATCH {pattern} "
            "WHERE ($kinds IS NULL OR n.kind IN $kinds) "
            "AND ($since IS NULL OR n.created_at >= $since) "
            "AND ($until IS NULL OR n.created_at <= $until) "
        )

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
        check_filters(edge_types, node_kinds)
        query = (
            self._hop_match(direction, _rel_pattern(edge_types))
            + ("AND NOT n.id IN $exclude " if exclude else "")
            + "WITH fid, r, n"
            # ``hop_order``: stored strings compare by code point here as in Python and
            # SQLite; among the first ``ORDERED_SCAN`` × ``limit`` rows.
            + (" LIMIT $scan WITH fid, r, n"
               " ORDER BY n.id, fid, type(r)"
               if ordered and limit is not None else "")
            + (" LIMIT $limit" if limit is not None else "")
            + f" RETURN collect({{origin: fid, {_WALK_EDGE_MAP}, {_WALK_NODE_MAP}}}) AS rows"
        )
        rows = self._rows(query, frontier=list(frontier), inline=inline,
                          kinds=list(node_kinds) if node_kinds else None,
                          since=since, until=until, limit=limit,
                          scan=None if limit is None else limit * ORDERED_SCAN,
                          exclude=list(exclude) if exclude else None)
        return [_hop(r) for r in rows]

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
        check_filters(edge_types, node_kinds)
        order = "DESC" if newest else "ASC"
        # One branch per edge type, each keeping its own first ``count``.
        branches = " UNION ALL ".join(
            f"MATCH {self._pattern(direction, _rel_pattern([edge_type]))} "
            "WHERE ($kinds IS NULL OR n.kind IN $kinds) "
            "AND ($since IS NULL OR n.created_at >= $since) "
            "AND ($until IS NULL OR n.created_at <= $until) AND NOT n.id IN $exclude "
            f"WITH r, n ORDER BY n.created_at {order}, n.id {order} LIMIT $count RETURN r, n"
            for edge_type in (edge_types if edge_types is not None else LINEAGE_EDGE_TYPES))
        rows = self._rows(
            f"UNWIND $frontier AS fid MATCH (f:{NODE_LABEL} {{id: fid}}) CALL (f) {{ "
            f"{branches} }} "
            f"RETURN collect({{origin: fid, {_WALK_EDGE_MAP}, {_WALK_NODE_MAP}}}) AS rows",
            frontier=list(frontier), kinds=list(node_kinds) if node_kinds else None,
            since=since, until=until, exclude=list(exclude or ()), count=count,
            inline=inline)
        return [_hop(r) for r in rows]

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
        order = "DESC" if newest else "ASC"
        # Ranges the composite index answers, every property with one (``$since IS NULL
        # OR ...`` it would not); named as a seek, as the version reads name theirs.
        created = " AND ".join([*(["n.created_at >= $since"] if since is not None else []),
                                *(["n.created_at <= $until"] if until is not None else [])]
                               ) or "n.created_at IS NOT NULL"
        rows = self._rows(
            # The family bound first, by its ID: matched inside, after the versions, the
            # planner sometimes scanned the whole ID index for it (8,008 db hits for 5).
            f"UNWIND $families AS fid MATCH (f:{NODE_LABEL} {{id: fid}}) "
            f"CALL (fid, f) {{ MATCH (n:{NODE_LABEL}) "
            f"USING INDEX SEEK n:{NODE_LABEL}({FAMILY}, created_at, id) "
            f"WHERE n.{FAMILY} = fid AND {created} AND n.id IS NOT NULL "
            "AND NOT n.id IN $exclude "
            f"WITH n ORDER BY n.{FAMILY} {order}, n.created_at {order}, n.id {order}"
            + (" LIMIT $count" if count is not None else "")
            + f" MATCH (n)-[r:{FAMILY_EDGE}]->(f) RETURN r, n }} "
            f"RETURN collect({{origin: fid, {_WALK_EDGE_MAP}, {_WALK_NODE_MAP}}}) AS rows",
            families=list(dict.fromkeys(families)), since=since, until=until,
            exclude=sorted(exclude or ()), count=count, inline=inline)
        return [_hop(r) for r in rows]

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
        # One statement, one CALL subquery per hop over the frontier of distinct new nodes
        # (a BFS unrolled to ``hops`` levels): the rows grow with the nodes reached, never
        # with the paths between them, unlike a variable-length pattern.
        check_filters(edge_types, None)
        pattern = self._pattern(direction, _rel_pattern(edge_types))
        parts = [f"UNWIND $frontier AS fid MATCH (f:{NODE_LABEL} {{id: fid}}) "
                 # No grouping key beside collect(): one row even when nothing matched.
                 "WITH collect(f) AS frontier0 "
                 f"WITH [n IN frontier0 | {{{_WALK_NODE_MAP}}}] AS start, frontier0, "
                 "$seen AS seen0 "]
        carried = "start, "
        if side is not None:
            check_filters([*side.via, *side.edge_types], None)
            via = self._pattern(direction, _rel_pattern(side.via), f="s", r="", n="f")
            off = self._pattern(side.direction, _rel_pattern(side.edge_types))
            parts.append(
                f"CALL (frontier0) {{ UNWIND frontier0 AS s MATCH {via} MATCH {off} "
                "WHERE n.created_at <= s.created_at WITH f, r, n LIMIT $cap "
                f"RETURN collect({{origin: f.id, {_WALK_EDGE_MAP}, {_WALK_NODE_MAP}}}) AS side }} ")
            carried = "start, side, "
        for k in range(1, hops + 1):
            kept = "".join(f"rows{j}, " for j in range(1, k + 1))
            parts.append(
                f"CALL (frontier{k - 1}) {{ UNWIND frontier{k - 1} AS f MATCH {pattern} "
                "WITH f, r, n LIMIT $cap "
                f"RETURN collect({{origin: f.id, {_WALK_EDGE_MAP}, {_WALK_NODE_MAP}}}) AS rows{k}, "
                f"collect(DISTINCT n) AS reached{k} }} "
                f"WITH {carried}{kept}"
                f"[n IN reached{k} WHERE NOT n.id IN seen{k - 1}] AS frontier{k}, "
                f"seen{k - 1} "
                f"WITH {carried}{kept}frontier{k}, "
                f"seen{k - 1} + [n IN frontier{k} | n.id] AS seen{k} ")
        parts.append(f"RETURN {carried}" + ", ".join(f"rows{k}" for k in range(1, hops + 1)))
        record = self._read("".join(parts), frontier=list(frontier), seen=list(seen),
                            cap=row_cap, inline=inline)[0]
        result: list[list[Hop]] = []
        for k in range(1, hops + 1):
            rows = record[f"rows{k}"]
            if len(rows) >= row_cap:
                return None
            result.append([_hop(row) for row in rows])
        side_rows = record["side"] if side is not None else None
        return HopsAhead(
            start={r["id"]: _node(r) for r in record["start"]}, hops=result,
            elided=frozenset(r["id"] for r in record["start"] if elided(r["props"])),
            side=[_hop(row) for row in side_rows]
            if side_rows is not None and len(side_rows) < row_cap else None)

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
        check_filters(edge_types, [kind], (kind, group_by))
        key = "fid" if group_by == ORIGIN else f"n.{group_by}" if group_by else "null"
        query = (
            self._hop_match(direction, _rel_pattern(edge_types))
            + f"RETURN {key} AS key, count(DISTINCT n) AS n, min(n.created_at) AS first, "
            "max(n.created_at) AS last"
        )
        records = self._read(query, frontier=list(frontier), kinds=[kind], since=since,
                             until=until)
        return {
            r["key"]: Tally(r["n"], _native(r["first"]) if r["first"] else None,
                            _native(r["last"]) if r["last"] else None)
            for r in records
        }

    def traffic_rollup(self, targets: Sequence[str], first_day: str | None,
                       last_day: str | None) -> dict[str | None, int]:
        where = _where(("c.day >= $first", first_day), ("c.day <= $last", last_day))
        records = self._read(
            f"UNWIND $targets AS tid MATCH (:{NODE_LABEL} {{id: tid}})"
            f"<-[:{TRAFFIC_EDGE}]-(c:{TRAFFIC_LABEL}) WITH DISTINCT c {where}"
            "RETURN c.environment AS environment, sum(c.n) AS n",
            targets=list(targets), first=first_day, last=last_day,
        )
        return {r["environment"]: r["n"] for r in records}

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
        where, params = _stage_where(name, environment, until, names, versions, before, since)
        cut = "" if last is None else "WITH m ORDER BY m.at DESC, m.seq DESC LIMIT $last "
        hint = ""
        if last is not None and name is not None:
            # The last moves of a name (in an environment) from the end of the index on
            # (name, [environment,] at, seq), cut there: ordered by each of its properties,
            # each with a predicate (PROFILE: one name's 50,000 moves were sorted whole).
            # Named as a seek: on a small graph the planner scanned the whole index for its
            # order and filtered the name, which on a large one reads every move; a plain
            # ``USING INDEX`` still let it scan (a flaky test caught both).
            # One predicate on ``at``, the bound when one is given: given the bound and
            # ``IS NOT NULL``, the planner sometimes seeked on the latter and filtered the
            # bound (reading every move after it), or sorted (a Top).
            where += ("" if until is not None or before is not None or since is not None
                      else "AND m.at IS NOT NULL ") + "AND m.seq IS NOT NULL "
            by_env = "" if environment is None else "m.environment DESC, "
            cut = f"WITH m ORDER BY m.name DESC, {by_env}m.at DESC, m.seq DESC LIMIT $last "
            on = "name, at, seq" if environment is None else "name, environment, at, seq"
            hint = f"USING INDEX SEEK m:StageMove({on}) "
        rows = self._rows(
            f"MATCH (m:StageMove) {hint}{where}{cut}WITH {_logged('m')} ORDER BY m.at, m.seq "
            "RETURN collect(m) AS rows", last=last, **params)
        return [_stage_move(props) for props in rows]

    def last_stage_seq(self, name: str) -> int | None:
        return self._read(_LAST_SEQ, name=name)[0]["seq"]

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
        # The last ``$count`` of each group among the moves ``m`` found, oldest first.
        grouped = (f"WITH m ORDER BY m.at DESC, m.seq DESC WITH m.name AS name"
                   f"{_STAGE_KEYS[per]}, collect(m)[..$count] AS last UNWIND last AS m "
                   f"WITH {_logged('m')} ORDER BY m.at, m.seq RETURN collect(m) AS rows")
        where, params = _stage_where(None, environment, until, names, None, before, since)
        name_read = per == "name" and names is not None and pairs is None
        if name_read or pairs is not None or per == "environment":
            # Each group, whatever ``per``, is the union of some slots' (or names') moves
            # (to some versions): its last moves are among their last ones, read from an
            # index's end (50,000 moves of 20 names, 3 versions, per version: 148,741 → 980
            # db hits).
            upto = until if before is None else min(until or before[0], before[0])
            rows = self._rows(
                _each_last("name" if name_read else "environment", environment, since, upto,
                           names, pairs, before is not None) + grouped,
                **{**params, "names": None if names is None else list(dict.fromkeys(names)),
                   "until": upto, **(_paired(pairs) if pairs is not None else {})},
                count=count)
            return [_stage_move(props) for props in rows]
        rows = self._rows(f"MATCH (m:StageMove) {where}{grouped}", **params, count=count)
        return [_stage_move(props) for props in rows]

    def live_bundles(self, environment: str, at: datetime | None = None) -> list[Node]:
        # The last move of each of the environment's slots and its bundle, in one round
        # trip.
        rows = self._rows(
            f"{_each_last('environment', environment, None, at, None)}"
            "WITH m.name AS name, m.to_version AS version "
            f"WHERE version IS NOT NULL MATCH (n:{NODE_LABEL} {{name: name}}) "
            "WHERE n:Bundle AND n.version = version WITH n ORDER BY n.name "
            f"RETURN collect({{{_NODE_MAP}}}) AS rows",
            env=environment, until=at, count=1,
        )
        return [_node(r) for r in rows]

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
        rows = self._audit_rows(f"a {{.*, at: {_MICROS.format('a.at')}}}", since, until,
                                actor, target, after_seq, limit, targets)
        return [AuditEntry(at=_from_micros(props["at"]), actor=props["actor"],
                           action=props["action"], target=props["target"],
                           before=json.loads(props["before"]),
                           after=json.loads(props["after"]), seq=props["seq"])
                for props in rows]

    def audit_sizes(self, *, since: datetime | None = None, until: datetime | None = None,
                    actor: str | None = None, target: str | None = None,
                    after_seq: int | None = None, limit: int = 1000) -> list[int]:
        return self._audit_rows("coalesce(size(a.before), 0) + coalesce(size(a.after), 0)",
                                since, until, actor, target, after_seq, limit)

    def _audit_rows(self, returned: str, since: datetime | None, until: datetime | None,
                    actor: str | None, target: str | None, after_seq: int | None,
                    limit: int, targets: Sequence[str] | None = None) -> list[Any]:
        where = _where(("a.at >= $since", since), ("a.at <= $until", until),
                       ("a.actor = $actor", actor), ("a.target = $target", target),
                       ("a.target IN $targets", targets), ("a.seq > $after", after_seq))
        return self._rows(
            f"MATCH (a:AuditEntry) {where}WITH a ORDER BY a.seq LIMIT $limit "
            f"RETURN collect({returned}) AS rows",
            since=since, until=until, actor=actor, target=target, after=after_seq,
            targets=list(targets) if targets is not None else None,
            limit=limit,
        )

    def read_records(self, where: RecordFilter, limit: int) -> list[Record]:
        rows = self._record_rows(f"r {{.*, at: {_MICROS.format('r.at')}}}", where, limit)
        return [Record(collection=props["collection"], key=props["key"],
                       at=_from_micros(props["at"]), payload=json.loads(props["payload"]),
                       seq=props["seq"]) for props in rows]

    def record_sizes(self, where: RecordFilter, limit: int) -> list[int]:
        # Kept with the record (older ones measured): reading the payload to size it
        # made paging through large records quadratic.
        return self._record_rows("coalesce(r.size, size(r.payload))", where, limit)

    def _record_rows(self, returned: str, where: RecordFilter, limit: int) -> list[Any]:
        clauses = _where(("r.key = $key", where.key),
                         ("r.key STARTS WITH $prefix", where.key_prefix),
                         ("r.at >= $since", where.since), ("r.at <= $until", where.until),
                         ("r.seq > $after", where.after_seq))
        return self._rows(
            f"MATCH (r:Record {{collection: $collection}}) {clauses}"
            f"WITH r ORDER BY r.seq LIMIT $limit RETURN collect({returned}) AS rows",
            collection=where.collection, key=where.key, prefix=where.key_prefix,
            since=where.since, until=where.until, after=where.after_seq, limit=limit,
        )

    def _counter(self, name: str, field: str) -> Any:
        """A property of the named counter, None while it does not exist."""
        records = self._read(f"MATCH (c:{COUNTER_LABEL} {{name: $name}}) "
                             "RETURN c[$field] AS value", name=name, field=field)
        return records[0]["value"] if records else None

    def _versions_query(self, where: VersionFilter, last: int,
                        returned: str) -> list[dict[str, Any]]:
        """``returned`` of the versions ``where`` selects, the last ``last`` by key, oldest
        first: the name's read from the (name, version_key) index's newest end and cut
        there, and the family's (linked VERSION_OF it, named apart) from the (family,
        version_key) index's; properties read for those only."""
        check_filters(None, where.kinds)
        # A range the index answers in order; ``$before IS NULL OR ...`` it would not.
        keyed = ("n.version_key < $before" if where.before is not None
                 else "n.version_key IS NOT NULL")
        kept = keyed + " AND NOT n.id IN $exclude" + (
            " AND n.version =~ $whole" if where.whole_numbers else "")
        last_first = "WITH n ORDER BY n.version_key DESC LIMIT $last"
        # Ordered by the index's properties, both: by version_key alone, the planner read
        # the name's every version and took the top (PROFILE: Top over 20,600 rows).
        # Named as a seek: on a small graph the planner scanned the whole name index for its
        # order and filtered the name, which on a large one reads every node; a plain
        # ``USING INDEX`` still let it scan (a flaky test caught both).
        chosen = (f"MATCH (n:{NODE_LABEL}) USING INDEX SEEK n:{NODE_LABEL}(name, version_key) "
                  f"WHERE n.name = $name AND {kept} "
                  "AND n.kind IN $kinds WITH n ORDER BY n.name DESC, n.version_key DESC "
                  "LIMIT $last")
        if where.family is not None:
            family = (f"MATCH (n:{NODE_LABEL}) "
                      f"USING INDEX SEEK n:{NODE_LABEL}({FAMILY}, version_key) "
                      f"WHERE n.{FAMILY} = $family AND {kept} "
                      f"WITH n ORDER BY n.{FAMILY} DESC, n.version_key DESC LIMIT $last")
            chosen = f"CALL () {{ {chosen} RETURN n UNION {family} RETURN n }} {last_first}"
        rows = self._rows(
            f"{chosen} RETURN collect({{{returned}}}) AS rows",
            kinds=list(where.kinds), name=where.name, family=where.family,
            exclude=sorted(where.exclude), whole=WHOLE_NUMBER, before=where.before, last=last)
        return rows[::-1]

    def read_versions(self, where: VersionFilter, last: int) -> list[Node]:
        return [_node(r) for r in self._versions_query(where, last, _NODE_MAP)]

    def version_sizes(self, where: VersionFilter, last: int) -> list[VersionRow]:
        rows = self._versions_query(where, last,
                                    "id: n.id, key: n.version_key, chars: size(n.props)")
        return [VersionRow(r["id"], r["key"], r["chars"]) for r in rows]

    def metadata_seq(self) -> int:
        return self._counter(_METADATA_COUNTER, "value") or 0

    def traffic_rebuild_position(self) -> str | None:
        return self._counter(_TRAFFIC_COUNTER, "rebuilt_through")

    def ready(self) -> bool:
        try:
            self._read("RETURN 1 AS ok")
        except (StoreUnavailable, DeadlinePassed, neo4j.exceptions.Neo4jError,
                neo4j.exceptions.DriverError):
            return False
        return True

    def started_at(self) -> datetime | None:
        # The JVM's start: the database's `lastStartTime` (SHOW DATABASE) keeps its first
        # start across restarts of the process. None where the procedure is refused.
        try:
            rows = self._read('CALL dbms.queryJmx("java.lang:type=Runtime") '
                              "YIELD attributes RETURN attributes.StartTime.value AS at")
        except neo4j.exceptions.ClientError:
            return None
        at = rows[0]["at"] if rows else None
        return _from_micros(at * 1000) if isinstance(at, int) else None

    def close(self) -> None:
        self._driver.close()

    def wipe(self) -> None:
        # Relationships first, then nodes, in transactions bounded by size as well as rows:
        # DETACH DELETE of one hot bundle takes its hundreds of thousands of edges into one
        # transaction, and deleting loads what it deletes (400 kept events of 1 MiB in one
        # transaction ran a 512 MiB heap out of memory). One scan per tier: paging by
        # LIMIT would scan the deleted part again each time (3× slower on 3M elements).
        with self._driver.session(database=self._database) as session:
            for match in ("MATCH ()-[x]->()", "MATCH (x)"):
                for least, rows in _WIPE_TIERS:
                    where = f"WHERE {_PROPERTY_CHARS} > $least" if least else ""
                    session.run(f"{match} {where} CALL (x) {{ DELETE x }} "
                                "IN TRANSACTIONS OF $rows ROWS", least=least, rows=rows
                                ).consume()
        self._stamp_format()  # emptied, still in this version's format
