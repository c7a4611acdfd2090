"""The embedded store: one SQLite file, durable across restarts, no server to run."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from lineagegraph.schema import (
    LINEAGE_EDGE_TYPES,
    NODE_KINDS,
    AuditEntry,
    Edge,
    Node,
    Record,
    StageMove,
)
from lineagegraph.schema.kinds import (
    FAMILIES_FORMAT,
    FAMILY,
    FAMILY_EDGE,
    FAMILY_MEMBERS,
    STAGE_SLOTS_FORMAT,
    STORE_FORMAT,
    VERSION_KEYS_FORMAT,
)
from lineagegraph.schema.models import canonical_json, utc

from .deadline import DeadlinePassed
from .deadline import check as check_deadline
from .deadline import passed as deadline_passed
from .store import (
    ORDERED_SCAN,
    ORIGIN,
    Direction,
    GraphStore,
    Hop,
    RecordFilter,
    RequestsStored,
    StageKey,
    StoreUnavailable,
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

_SCHEMA = f"""
-- version_key: a versioned node's (graph/store.py stored_version_key), else NULL. Last: where
-- a file from before it gains it (EmbeddedStore._key_versions); and so is {FAMILY}: a
-- version's family, the target of its {FAMILY_EDGE} edge (EmbeddedStore._keep_families).
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT,
    created_at TEXT NOT NULL,
    props TEXT NOT NULL,
    version_key TEXT,
    {FAMILY} TEXT
);
CREATE INDEX IF NOT EXISTS nodes_kind_created ON nodes (kind, created_at);
-- A name's versions in order, read from the newest end (and what reads by name and kind).
CREATE INDEX IF NOT EXISTS nodes_version ON nodes (name, kind, version_key);
-- A family's versions in time order (ties by ID) and in version order, read from either
-- end: of versions only, the other nodes keep no family.
CREATE INDEX IF NOT EXISTS nodes_family_created ON nodes ({FAMILY}, created_at, id)
WHERE {FAMILY} IS NOT NULL;
CREATE INDEX IF NOT EXISTS nodes_family_version ON nodes ({FAMILY}, version_key)
WHERE {FAMILY} IS NOT NULL;
CREATE TABLE IF NOT EXISTS edges (
    source TEXT NOT NULL REFERENCES nodes (id),
    type TEXT NOT NULL,
    target TEXT NOT NULL REFERENCES nodes (id),
    props TEXT NOT NULL,
    PRIMARY KEY (source, type, target)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edges_target ON edges (target, type, source);
CREATE TABLE IF NOT EXISTS stage_moves (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    environment TEXT NOT NULL,
    from_version TEXT,
    to_version TEXT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS stage_moves_key ON stage_moves (name, environment, at);
-- A name's last moves in every environment, in order (seq, the rowid, ends each entry).
CREATE INDEX IF NOT EXISTS stage_moves_name ON stage_moves (name, at);
-- A slot's last moves to a version (stage_latest with versions): where a version went,
-- never every move of its name.
CREATE INDEX IF NOT EXISTS stage_moves_version ON stage_moves (name, environment, to_version, at);
-- Each (name, environment) a move went to (schema/kinds.py STAGE_SLOT_LABEL), kept by the
-- file itself as moves are appended: what is live is each slot's last move.
CREATE TABLE IF NOT EXISTS stage_slots (
    name TEXT NOT NULL,
    environment TEXT NOT NULL,
    PRIMARY KEY (name, environment)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS stage_moves_slot AFTER INSERT ON stage_moves
BEGIN INSERT OR IGNORE INTO stage_slots VALUES (new.name, new.environment); END;
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before TEXT,
    after TEXT
);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE INDEX IF NOT EXISTS audit_target ON audit (target, seq);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    collection TEXT NOT NULL,
    key TEXT NOT NULL,
    at TEXT NOT NULL,
    -- characters of the payload's JSON, before it: read without the payload's pages
    size INTEGER,
    payload TEXT NOT NULL,
    UNIQUE (collection, key)
);
-- The traffic rollup (graph/traffic.py): requests per (targets, environment, UTC day).
CREATE TABLE IF NOT EXISTS traffic (
    id TEXT PRIMARY KEY,
    signature TEXT NOT NULL,
    environment TEXT,
    day TEXT NOT NULL,
    n INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS traffic_signature ON traffic (signature, day);
CREATE TABLE IF NOT EXISTS traffic_targets (
    target TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target, signature)
) WITHOUT ROWID;
-- While a rebuild of the rollup runs: the last request ID it has counted (one row).
CREATE TABLE IF NOT EXISTS traffic_rebuild (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    counted_through TEXT NOT NULL
);
-- Writes of metadata mapped from what the graph held (``PreparedWrite.metadata_seen``).
CREATE TABLE IF NOT EXISTS metadata_writes (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    seq INTEGER NOT NULL
);
-- The logs are append-only: the database itself refuses to rewrite them.
CREATE TRIGGER IF NOT EXISTS stage_moves_append_only BEFORE UPDATE ON stage_moves
BEGIN SELECT RAISE(ABORT, 'stage history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS stage_moves_no_delete BEFORE DELETE ON stage_moves
WHEN (SELECT count(*) FROM _wipe) = 0
BEGIN SELECT RAISE(ABORT, 'stage history is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
WHEN (SELECT count(*) FROM _wipe) = 0
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
"""


def _statements(script: str) -> list[str]:
    """A script's statements, to run one at a time: ``executescript`` commits the
    transaction it is called in first."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return statements


_SCHEMA_STATEMENTS = _statements(_SCHEMA)
_METADATA_SEQ = "SELECT seq FROM metadata_writes"
# How far a rebuild of the rollup has counted (no row: none under way).
_REBUILD_POSITION = "SELECT counted_through FROM traffic_rebuild"
# A marker table that only ``wipe`` fills, inside its own transaction.
_WIPE_MARKER = "CREATE TABLE IF NOT EXISTS _wipe (x INTEGER);"


def _ts(value: datetime | None) -> str | None:
    # Fixed-width UTC text sorts in time order, so range filters are plain string compares:
    # four-digit years however small (strftime writes 999, not 0999).
    if value is None:
        return None
    at = utc(value)
    return f"{at.year:04d}-{at:%m-%dT%H:%M:%S.%f}+00:00"


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def _dt(value: str | None) -> datetime | None:
    return None if value is None else _at(value)


def _json_list(values: Sequence[str | None]) -> str:
    return json.dumps(list(values))


def _version_key(kind: str, version: str | None, created_at: str) -> str | None:
    return stored_version_key(kind, version, _at(created_at))


def _node(row: sqlite3.Row, prefix: str = "") -> Node:
    return Node.stored(row[prefix + "kind"], row[prefix + "name"], row[prefix + "version"],
                       _at(row[prefix + "created_at"]), held(row[prefix + "props"]))


# A hop's row (``_hop``) as ``_hop_sql`` selects it.
_HOP_COLUMNS = ("{origin} AS origin, e.source, e.type, e.target, e.props AS eprops, "
                "n.id AS nid, n.kind, n.name, n.version, n.created_at, n.props")


def _hop(row: sqlite3.Row) -> Hop:
    return Hop(origin=row["origin"],
               edge=Edge.stored(row["source"], row["type"], row["target"], held(row["eprops"])),
               node=_node(row), node_elided=elided(row["props"]),
               edge_elided=elided(row["eprops"]))


def _inlined(sql: str, params: list[Any], inline: int | None) -> tuple[str, list[Any]]:
    """Hop rows (``_HOP_COLUMNS``) whose properties longer than ``inline`` come as their
    size, an integer, to be read apart (``expand(inline=…)``)."""
    if inline is None:
        return sql, params
    return (f"SELECT origin, source, type, target, {_INLINE.format('eprops')} AS eprops, nid,"
            f" kind, name, version, created_at, {_INLINE.format('props')} AS props FROM ({sql})",
            [inline, inline, *params])


_LAST_SEQ = "SELECT max(seq) FROM stage_moves WHERE name = ?"


def _stage_where(name: str | None, environment: str | None, until: datetime | None,
                 names: Sequence[str] | None, versions: Sequence[str | None] | None = None,
                 before: tuple[datetime, int] | None = None,
                 since: datetime | None = None) -> tuple[str, list[Any]]:
    """The filters of ``stage_history`` and ``stage_latest``: a WHERE clause and its
    parameters."""
    where, params = "1 = 1", []
    for clause, value in (("name = ?", name), ("environment = ?", environment),
                          ("name IN (SELECT value FROM json_each(?))",
                           None if names is None else _json_list(names)),
                          ("at >= ?", _ts(since)), ("at <= ?", _ts(until))):
        if value is not None:
            where += f" AND {clause}"
            params.append(value)
    if versions is not None:  # NULL is in no list: a move to no version is asked apart
        where += (" AND (to_version IN (SELECT value FROM json_each(?))"
                  " OR (to_version IS NULL AND ?))")
        params += [_json_list([v for v in versions if v is not None]), None in versions]
    if before is not None:  # keyset: ordered by (at, seq), strictly before that move
        where += " AND (at < ? OR (at = ? AND seq < ?))"
        params += [_ts(before[0]), _ts(before[0]), before[1]]
    return where, params


# ``stage_latest``'s groups (``StageKey``), besides the name.
_STAGE_KEYS = {"environment": ", environment", "version": ", to_version",
               "visit": ", environment, to_version", "name": ""}


def _stage_move(r: sqlite3.Row) -> StageMove:
    return StageMove(name=r["name"], environment=r["environment"],
                     from_version=r["from_version"], to_version=r["to_version"],
                     at=_dt(r["at"]), actor=r["actor"], reason=r["reason"], seq=r["seq"])


# ``expand(inline=…)``: a column's properties if no longer than the limit, else their size.
_INLINE = "CASE WHEN length({0}) <= ? THEN {0} ELSE length({0}) END"


# A batch's new requests and the edges from them go in with a plain INSERT (a stored twin
# fails the key); everything else is upserted: created_at is kept from the first write.
INSERT_NODE = ("INSERT INTO nodes (id, kind, name, version, created_at, version_key, props) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)")
INSERT_EDGE = "INSERT INTO edges (source, type, target, props) VALUES (?, ?, ?, ?)"
UPSERT_NODE = INSERT_NODE + " ON CONFLICT (id) DO UPDATE SET props = excluded.props"
UPSERT_EDGE = (INSERT_EDGE + " ON CONFLICT (source, type, target) "
               "DO UPDATE SET props = excluded.props")
# The stored edges (as ``e``) of a JSON list of [source, type, target] keys: the list
# drives the loop (CROSS JOIN fixes the order), one primary-key seek per key. A match on an
# expression of the key's columns would read every edge of the store.
# json_extract, not ->> (SQLite 3.38+): the json_each the store uses elsewhere.
EDGES_OF_KEYS = ("FROM json_each(?) k CROSS JOIN edges e "
                 "ON e.source = json_extract(k.value, '$[0]') "
                 "AND e.type = json_extract(k.value, '$[1]') "
                 "AND e.target = json_extract(k.value, '$[2]')")


class _SqliteTransaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def kinds(self, ids: Sequence[str]) -> dict[str, str]:
        rows = self.conn.execute(
            "SELECT id, kind FROM nodes WHERE id IN (SELECT value FROM json_each(?))",
            (_json_list(ids),),
        )
        return {row["id"]: row["kind"] for row in rows}

    def _stored(self, table: str, key_sql: str, keys: list[Any],
                columns: str = "props") -> list[sqlite3.Row]:
        """The stored rows of ``keys`` (as ``k``), with ``columns``."""
        return self.conn.execute(
            f"SELECT {key_sql} AS k, {columns} FROM {table} "
            f"WHERE {key_sql} IN (SELECT value FROM json_each(?))",
            (json.dumps(keys),),
        ).fetchall()

    @staticmethod
    def _to_write(rows: Sequence[tuple[Any, ...]], keys: list[str],
                  before: dict[Any, str]) -> tuple[WriteCounts, list[tuple[Any, ...]]]:
        """Count created/updated/unchanged against the stored props (a row's last column);
        keep what must be written (an unchanged row is not rewritten)."""
        counts, changed = WriteCounts(), []
        for row, key in zip(rows, keys, strict=True):
            old = before.get(key)
            if old is not None and old == row[-1]:
                counts.unchanged += 1
                continue
            if old is None:
                counts.created += 1
            else:
                counts.updated += 1
            changed.append(row)
        return counts, changed

    def write_nodes(self, rows: list[tuple[Any, ...]], *, new: bool = False,
                    keep_stored: frozenset[str] = frozenset()
                    ) -> tuple[WriteCounts, dict[str, str]]:
        if new:  # no lookup; a stored twin fails the primary key
            try:
                self.conn.executemany(INSERT_NODE, rows)
            except sqlite3.IntegrityError:
                raise RequestsStored from None
            return WriteCounts(created=len(rows)), {}
        keys = [row[0] for row in rows]
        stored = self._stored("nodes", "id", keys, "kind, props")
        before = {row["k"]: row["props"] for row in stored}
        kept = keep_stored & before.keys()
        if kept:  # as if unchanged: what is stored stays, but for an earlier time (and
            # its version's key at that time)
            self.conn.executemany(
                "UPDATE nodes SET created_at = ?, version_key = ? WHERE id = ? AND created_at > ?",
                [(row[4], row[5], row[0], row[4]) for row in rows if row[0] in kept])
            rows = [row[:-1] + (before[row[0]],) if row[0] in kept else row for row in rows]
        counts, changed = self._to_write(rows, keys, before)
        self.conn.executemany(UPSERT_NODE, changed)
        return counts, {row["k"]: row["kind"] for row in stored}

    def write_edges(self, rows: list[tuple[Any, ...]], *, new: bool = False) -> WriteCounts:
        if new:  # from nodes created in this transaction: none can be stored
            self.conn.executemany(INSERT_EDGE, rows)
            return WriteCounts(created=len(rows))
        keys = [tuple(row[:3]) for row in rows]
        stored = self.conn.execute(f"SELECT e.source, e.type, e.target, e.props {EDGES_OF_KEYS}",
                                   (json.dumps(keys),)).fetchall()
        counts, changed = self._to_write(rows, keys, {tuple(row[:3]): row[3] for row in stored})
        self.conn.executemany(UPSERT_EDGE, changed)
        return counts

    def keep_families(self, families: Mapping[str, str]) -> dict[str, str]:
        # BEGIN IMMEDIATE: no other writer links these versions meanwhile.
        stored = self._stored("nodes", "id", sorted(families), FAMILY)
        self.conn.executemany(f"UPDATE nodes SET {FAMILY} = ? WHERE id = ? AND {FAMILY} IS NULL",
                              [(families[row["k"]], row["k"]) for row in stored
                               if row[FAMILY] is None])
        return {row["k"]: row[FAMILY] for row in stored
                if row[FAMILY] not in (None, families[row["k"]])}

    def append_stage_move(self, move: StageMove) -> StageMove:
        cursor = self.conn.execute(
            "INSERT INTO stage_moves (name, environment, from_version, to_version, at, actor,"
            " reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (move.name, move.environment, move.from_version, move.to_version, _ts(move.at),
             move.actor, move.reason),
        )
        return move.model_copy(update={"seq": cursor.lastrowid})

    def lock_stages(self) -> None:
        pass  # The transaction is BEGIN IMMEDIATE: other writers already wait.

    def bump_metadata(self) -> int:
        # BEGIN IMMEDIATE: writers already take turns.
        row = self.conn.execute(_METADATA_SEQ).fetchone()
        seen = 0 if row is None else row[0]
        self.conn.execute("INSERT OR REPLACE INTO metadata_writes VALUES (1, ?)", (seen + 1,))
        return seen

    def lock_stage(self, name: str, environment: str,
                   until: datetime) -> tuple[str | None, datetime] | None:
        row = self.conn.execute(
            "SELECT to_version, at FROM stage_moves WHERE name = ? AND environment = ?"
            " AND at <= ? ORDER BY at DESC, seq DESC LIMIT 1",
            (name, environment, _ts(until))).fetchone()
        at = None if row is None else _dt(row[1])
        return None if row is None or at is None else (row[0], at)

    def last_stage_seq(self, name: str) -> int | None:
        return self.conn.execute(_LAST_SEQ, (name,)).fetchone()[0]  # one row, NULL when none

    def append_audit(self, entry: AuditEntry) -> None:
        self.conn.execute(
            "INSERT INTO audit (at, actor, action, target, before, after)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (_ts(entry.at), entry.actor, entry.action, entry.target,
             canonical_json(entry.before), canonical_json(entry.after)),
        )

    def append_record(self, record: Record) -> bool:
        payload = canonical_json(record.payload)
        cursor = self.conn.execute(
            "INSERT INTO records (collection, key, at, size, payload) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (collection, key) DO NOTHING",
            (record.collection, record.key, _ts(record.at), len(payload), payload),
        )
        return cursor.rowcount == 1


    def outcome_states(self, ids: Sequence[str]) -> dict[str, OutcomeState]:
        rows = self.conn.execute(
            "SELECT n.id, json_extract(n.props, '$.environment') AS environment, "
            "n.created_at, json_group_array(e.target) FILTER (WHERE e.target IS NOT NULL) "
            "AS targets FROM nodes n LEFT JOIN edges e ON e.source = n.id "
            "AND e.type IN (SELECT value FROM json_each(?)) "
            "WHERE n.id IN (SELECT value FROM json_each(?)) AND n.kind = ? GROUP BY n.id",
            (_json_list(OUTCOME_EDGES), _json_list(ids), OUTCOME_KIND),
        )
        return {row["id"]: OutcomeState(row["environment"], _dt(row["created_at"]),
                                        frozenset(json.loads(row["targets"])))
                for row in rows}

    def lock_traffic(self) -> str | None:
        # BEGIN IMMEDIATE took the database's write lock: writers never overlap.
        row = self.conn.execute(_REBUILD_POSITION).fetchone()
        return None if row is None else row[0]

    def set_traffic_rebuild(self, counted_through: str | None) -> None:
        if counted_through is None:
            self.conn.execute("DELETE FROM traffic_rebuild")
        else:
            self.conn.execute("INSERT OR REPLACE INTO traffic_rebuild VALUES (1, ?)",
                              (counted_through,))

    def request_ids(self, after: str, limit: int) -> list[str]:
        first, end = REQUEST_IDS
        rows = self.conn.execute("SELECT id FROM nodes WHERE id > ? AND id < ? ORDER BY id "
                                 "LIMIT ?", (max(after, first), end, limit))
        return [row[0] for row in rows]

    def add_traffic(self, changes: Sequence[tuple[TrafficKey, int]]) -> None:
        self.conn.executemany(
            "INSERT INTO traffic (id, signature, environment, day, n) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET n = n + excluded.n",
            [(k.id, k.signature, k.environment, k.day, n) for k, n in changes])
        self.conn.executemany(
            "INSERT INTO traffic_targets (target, signature) VALUES (?, ?) "
            "ON CONFLICT DO NOTHING",
            sorted({(t, k.signature) for k, _ in changes for t in k.targets}))
        # Only a decrement can empty a counter.
        self.conn.executemany("DELETE FROM traffic WHERE id = ? AND n = 0",
                              [(k.id,) for k, n in changes if n < 0])

    def clear_traffic(self) -> None:
        self.conn.execute("DELETE FROM traffic")
        self.conn.execute("DELETE FROM traffic_targets")


# SQLite virtual-machine steps between deadline checks: ~1 ms of work, a few ns a check.
_DEADLINE_STEPS = 20_000


def _past_deadline() -> int:
    return 1 if deadline_passed() else 0  # non-zero interrupts the statement


def _reraise_interrupt(error: sqlite3.OperationalError) -> None:
    """KeyboardInterrupt for a statement "interrupted" with its deadline not passed: Ctrl-C
    runs in the first Python code of a long statement, _past_deadline, and sqlite3 drops
    an exception raised in it and stops the statement (conn.interrupt() is not used)."""
    if getattr(error, "sqlite_errorname", None) == "SQLITE_INTERRUPT" and not deadline_passed():
        raise KeyboardInterrupt from None


# SQLite's result codes (and their extended forms) for a file that cannot be used now,
# rather than a bad statement: locked by another process past the busy timeout,
# read-only, a disk full or failing, no database any more.
_UNAVAILABLE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_READONLY", "SQLITE_IOERR",
                "SQLITE_CANTOPEN", "SQLITE_FULL", "SQLITE_NOTADB", "SQLITE_CORRUPT")


@contextmanager
def _available() -> Iterator[None]:
    try:
        yield
    except sqlite3.DatabaseError as error:
        if not (getattr(error, "sqlite_errorname", None) or "").startswith(_UNAVAILABLE):
            raise
        raise StoreUnavailable(EmbeddedStore.name, f"embedded store: {error}",
                               str(error)) from error


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


class EmbeddedStore(GraphStore):
    name = "embedded"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the server's worker threads, serialised by a lock:
        # SQLite allows one writer anyway, and reads are short.
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        # SQLite's lower() folds ASCII only: search compares as Python (and Neo4j's
        # toLower) fold, so `café` finds `feature:CAFÉ@1` on both stores.
        self._conn.create_function("unicode_lower", 1, str.lower, deterministic=True)
        # The step to format 2 (``_key_versions``) keys stored nodes by the one definition.
        self._conn.create_function("stored_version_key", 3, _version_key, deterministic=True)
        # A query's budget reaches inside a long statement: SQLite asks every N steps.
        self._conn.set_progress_handler(_past_deadline, _DEADLINE_STEPS)
        self._lock = threading.RLock()
        with self._lock:
            try:
                # Read before anything is written: a newer layout (a kind or a column this
                # version lacks) would open and then fail request by request as internal
                # errors.
                stamped = self._stamped()
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")
                self._conn.execute("PRAGMA foreign_keys = ON")  # outside a transaction only
                # The steps to this format and the stamp in one write transaction:
                # processes opening the file at once take turns, the later finding nothing
                # to do, and a writer of an older version (from this one on) waiting on the
                # file's lock reads the new stamp as it gets in (``_transaction``) and
                # writes nothing.
                upgrading = stamped < STORE_FORMAT
                if upgrading:
                    self._conn.execute("BEGIN IMMEDIATE")
                    stamped = self._stamped()  # another process may have upgraded it since
                self._open(stamped)
                if upgrading:
                    self._conn.execute(f"PRAGMA user_version = {STORE_FORMAT}")
                    self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self._conn.close()
                raise
        # The file opened: SQLite goes on writing to it once deleted or replaced (its WAL
        # too), and every write from then on would vanish with the process.
        self._file = None if self.path == ":memory:" else _file_id(self.path)

    def _stamped(self) -> int:
        """The format the file was written in (0: none, from before the stamp); a newer
        one than this version's is refused, with the error type Settings.open_store
        already says on one line."""
        stamped = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        if stamped > STORE_FORMAT:
            raise sqlite3.DatabaseError(newer_format(stamped))
        return stamped

    def _open(self, stamped: int) -> None:
        """The tables and indexes of this version, and the steps to them from a file
        ``stamped`` lower."""
        tables = {row[0] for row in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "nodes" in tables and stamped < VERSION_KEYS_FORMAT:  # before the key's index
            self._key_versions()
        if "nodes" in tables and stamped < FAMILIES_FORMAT:  # before the family's indexes
            self._keep_families()
        for statement in [_WIPE_MARKER, *_SCHEMA_STATEMENTS]:
            self._conn.execute(statement)
        if "nodes" in tables and "traffic" not in tables and self._conn.execute(
                "SELECT 1 FROM nodes WHERE id >= ? AND id < ? LIMIT 1",
                REQUEST_IDS).fetchone():
            # A file from before the traffic rollup: no counter holds its requests, and
            # traffic answers said 0. They say partial, naming the rebuild, until one
            # (`lineagegraph traffic rebuild`) has counted them.
            self._conn.execute("INSERT OR REPLACE INTO traffic_rebuild VALUES (1, '')")
        # A file made before records kept their size: the column goes last there,
        # and its rows' sizes are measured when read (record_sizes).
        if "size" not in {row["name"] for row in self._conn.execute(
                "PRAGMA table_info(records)")}:
            self._conn.execute("ALTER TABLE records ADD COLUMN size INTEGER")
        # The steps above find the layouts they mend themselves (files from before the
        # stamp: 0); a step to a later format runs where ``stamped`` is below it.
        if "stage_moves" in tables and stamped < STAGE_SLOTS_FORMAT:
            # Format 3: the slots of the moves stored before the table kept them.
            self._conn.execute("INSERT OR IGNORE INTO stage_slots "
                               "SELECT DISTINCT name, environment FROM stage_moves")

    def _key_versions(self) -> None:
        """Format 2: each stored versioned node gains its ``version_key``, in the opening's
        write transaction. The index on (name, kind) becomes the schema's on (name, kind,
        version_key), which serves its reads too."""
        self._add_column("version_key")
        self._conn.execute(
            "UPDATE nodes SET version_key = stored_version_key(kind, version, created_at) "
            "WHERE version_key IS NULL AND kind IN (SELECT value FROM json_each(?))",
            (_json_list([k.label for k in NODE_KINDS if k.versioned]),))
        self._conn.execute("DROP INDEX IF EXISTS nodes_name")

    def _add_column(self, column: str) -> None:
        """A step to a later format gives ``nodes`` the ``column`` it fills first."""
        if column not in {row["name"] for row in self._conn.execute("PRAGMA table_info(nodes)")}:
            self._conn.execute(f"ALTER TABLE nodes ADD COLUMN {column} TEXT")

    def _keep_families(self) -> None:
        """Format 3: each stored version keeps its family's ID, the target of its
        ``VERSION_OF`` edge; of two (linked before a version had one family), the smallest
        ID, with a warning naming the version. In the opening's write transaction, as
        ``_key_versions``."""
        self._add_column(FAMILY)
        params = (FAMILY_EDGE, _json_list(FAMILY_MEMBERS))
        # The versions by their kind's index, each one's edges by the edge key.
        self._conn.execute(
            f"UPDATE nodes SET {FAMILY} = (SELECT min(target) FROM edges "
            f"WHERE source = nodes.id AND type = ?1) WHERE {FAMILY} IS NULL "
            "AND kind IN (SELECT value FROM json_each(?2))", params)
        warn_split_families({row[0]: json.loads(row[1]) for row in self._conn.execute(
            "SELECT n.id, json_group_array(e.target) FROM nodes n JOIN edges e "
            "ON e.source = n.id AND e.type = ? "
            "WHERE n.kind IN (SELECT value FROM json_each(?)) GROUP BY n.id "
            "HAVING count(*) > 1", params)})

    def _check_file(self) -> None:
        if self._file is not None and _file_id(self.path) != self._file:
            raise StoreUnavailable(self.name, "embedded store: its file was deleted or "
                                   "replaced while in use; restart the server to open it",
                                   f"{self.path} is not the file opened")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _available():
            check_deadline()
            self._check_file()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                # Under the file's write lock, which an upgrade holds through its steps and
                # stamp: a newer version's stamp refuses the write (``StoreUpgraded``).
                check_format(self.name, self._conn.execute("PRAGMA user_version").fetchone()[0])
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as error:
                # A full disk or an I/O error may have rolled it back already (SQLite's
                # docs); a failed COMMIT has not, and would leave the connection in it.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(error, sqlite3.OperationalError):
                    _reraise_interrupt(error)  # rolled back: nothing of it is written
                    check_deadline()  # "interrupted" by _past_deadline
                raise

    def _node_rows(self, nodes: Sequence[Node]) -> list[tuple[Any, ...]]:
        return [(n.id, n.kind, n.name, n.version, _ts(n.created_at),
                 stored_version_key(n.kind, n.version, n.created_at), n.props_json)
                for n in nodes]

    def _edge_rows(self, edges: Sequence[Edge]) -> list[tuple[Any, ...]]:
        return [(e.source, e.type, e.target, e.props_json) for e in edges]

    def _write(self, work: Callable[[_SqliteTransaction], T]) -> T:
        with self._transaction() as conn:
            return work(_SqliteTransaction(conn))

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock, _available():
            check_deadline()  # also after waiting for the lock
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as error:
                _reraise_interrupt(error)  # Ctrl-C in a read, as in a write
                check_deadline()  # "interrupted" by _past_deadline
                raise

    # -- reads --------------------------------------------------------------------------

    def get(self, ids: Sequence[str]) -> dict[str, Node]:
        rows = self._query(
            "SELECT * FROM nodes WHERE id IN (SELECT value FROM json_each(?))",
            (_json_list(ids),),
        )
        return {row["id"]: _node(row) for row in rows}

    def get_edges(self, keys: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], Edge]:
        rows = self._query(
            f"SELECT e.* {EDGES_OF_KEYS}", (json.dumps([list(key) for key in keys]),),
        )
        edges = (Edge.stored(r["source"], r["type"], r["target"], r["props"]) for r in rows)
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
        sql, params = "SELECT * FROM nodes WHERE 1 = 1", []
        if kinds:
            sql += " AND kind IN (SELECT value FROM json_each(?))"
            params.append(_json_list(kinds))
        for clause, value in (("name = ?", name), ("id > ?", after)):
            if value is not None:
                sql += f" AND {clause}"
                params.append(value)
        if text:
            sql += " AND instr(unicode_lower(id), ?) > 0"
            params.append(text.lower())
        for prop, value in (where or {}).items():
            sql += " AND json_extract(props, ?) = ?"
            params += [f"$.{prop}", value]
        rows = self._query(sql + " ORDER BY id LIMIT ?", [*params, first])
        return [_node(row) for row in rows]

    @staticmethod
    def _hop_sql(
        direction: Direction,
        select: str,
        frontier: Sequence[str],
        edge_types: Sequence[str] | None,
        node_kinds: Sequence[str] | None,
        since: datetime | None,
        until: datetime | None,
        exclude: Collection[str] | None = None,
    ) -> tuple[str, list[Any]]:
        """SQL over (frontier, edge, neighbour) rows in one or both directions.

        ``select`` may name the frontier end as ``{origin}``."""
        types = list(edge_types) if edge_types is not None else list(LINEAGE_EDGE_TYPES)
        directions = (
            (Direction.UPSTREAM, Direction.DOWNSTREAM) if direction is Direction.BOTH
            else (direction,)
        )
        parts: list[str] = []
        params: list[Any] = []
        for one in directions:
            origin, far = ("source", "target") if one is Direction.UPSTREAM else (
                "target", "source")
            sql = (
                f"SELECT {select.format(origin='e.' + origin)} "
                f"FROM edges e JOIN nodes n ON n.id = e.{far} "
                f"WHERE e.{origin} IN (SELECT value FROM json_each(?)) "
                "AND e.type IN (SELECT value FROM json_each(?))"
            )
            params += [_json_list(frontier), _json_list(types)]
            if node_kinds:
                sql += " AND n.kind IN (SELECT value FROM json_each(?))"
                params.append(_json_list(node_kinds))
            if since is not None:
                sql += " AND n.created_at >= ?"
                params.append(_ts(since))
            if until is not None:
                sql += " AND n.created_at <= ?"
                params.append(_ts(until))
            if exclude:
                sql += " AND n.id NOT IN (SELECT value FROM json_each(?))"
                params.append(_json_list(exclude))
            parts.append(sql)
        return " UNION ALL ".join(parts), params

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
        sql, params = self._hop_sql(direction, _HOP_COLUMNS, frontier, edge_types,
                                    node_kinds, since, until, exclude)
        sql, params = _inlined(sql, params, inline)
        if ordered and limit is not None:
            # ``hop_order`` among the first ``ORDERED_SCAN`` × ``limit`` rows: TEXT
            # compares by code point (BINARY), as in Python.
            sql = f"SELECT * FROM ({sql} LIMIT ?) ORDER BY nid, origin, type"
            params.append(limit * ORDERED_SCAN)
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_hop(row) for row in self._query(sql, params)]

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
        sql, params = self._hop_sql(direction, _HOP_COLUMNS, frontier, edge_types, node_kinds,
                                    since, until, exclude)
        order = "DESC" if newest else "ASC"
        sql, params = _inlined(
            f"SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY origin, type ORDER BY "
            f"created_at {order}, nid {order}) AS nth FROM ({sql})) WHERE nth <= ?",
            [*params, count], inline)
        return [_hop(row) for row in self._query(sql, params)]

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
        where, params = f"n.{FAMILY} = ?", []
        for clause, value in (("n.created_at >= ?", _ts(since)), ("n.created_at <= ?", _ts(until)),
                              ("n.id NOT IN (SELECT value FROM json_each(?))",
                               _json_list(sorted(exclude)) if exclude else None)):
            if value is not None:
                where += f" AND {clause}"
                params.append(value)
        # Each family's from its end of the (family, created_at, id) index, cut there; the
        # edge by its key.
        one = (f"SELECT * FROM (SELECT {_HOP_COLUMNS.format(origin='e.target')} FROM nodes n "
               f"JOIN edges e ON e.source = n.id AND e.type = ? AND e.target = n.{FAMILY} "
               f"WHERE {where} ORDER BY n.created_at {order}, n.id {order}"
               + (" LIMIT ?)" if count is not None else ")"))
        unique = list(dict.fromkeys(families))
        if not unique:
            return []
        sql, params = _inlined(" UNION ALL ".join([one] * len(unique)), [
            value for family in unique
            for value in (FAMILY_EDGE, family, *params, *([count] if count is not None else []))],
            inline)
        return [_hop(row) for row in self._query(sql, params)]

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
        sql, params = self._hop_sql(
            direction, "{origin} AS origin, n.id AS id, n.props AS props, "
            "n.created_at AS created_at", frontier, edge_types, [kind], since, until)
        key_params: list[Any] = []
        if group_by == ORIGIN:
            key = "origin"
        elif group_by:
            key, key_params = "json_extract(props, ?)", [f"$.{group_by}"]
        else:
            key = "NULL"
        rows = self._query(
            f"SELECT {key} AS key, count(DISTINCT id) AS n, min(created_at) AS first, "
            f"max(created_at) AS last FROM ({sql}) GROUP BY key",
            key_params + params,
        )
        return {row["key"]: Tally(row["n"], _dt(row["first"]), _dt(row["last"]))
                for row in rows}

    def traffic_rollup(self, targets: Sequence[str], first_day: str | None,
                       last_day: str | None) -> dict[str | None, int]:
        sql = ("SELECT environment, sum(n) AS n FROM traffic WHERE signature IN "
               "(SELECT signature FROM traffic_targets "
               "WHERE target IN (SELECT value FROM json_each(?)))")
        params: list[Any] = [_json_list(targets)]
        if first_day is not None:
            sql += " AND day >= ?"
            params.append(first_day)
        if last_day is not None:
            sql += " AND day <= ?"
            params.append(last_day)
        rows = self._query(sql + " GROUP BY environment", params)
        return {row["environment"]: row["n"] for row in rows}

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
        sql = f"SELECT * FROM stage_moves WHERE {where}"
        if last is not None:
            sql = (f"SELECT * FROM ({sql} ORDER BY at DESC, seq DESC LIMIT ?)")
            params.append(last)
        return [_stage_move(r) for r in self._query(sql + " ORDER BY at, seq", params)]

    def last_stage_seq(self, name: str) -> int | None:
        return self._query(_LAST_SEQ, (name,))[0][0]

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
        # The last ``count`` of each group among the moves ``{}`` selects, oldest first.
        grouped = ("SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY name"
                   f"{_STAGE_KEYS[per]} ORDER BY at DESC, seq DESC) AS nth FROM ({{}})) "
                   "WHERE nth <= ? ORDER BY at, seq")
        # The moves in the window and before the keyset, by one key's index.
        upto, bounds = _stage_where(None, None, until, None, None, before, since)
        if per == "name" and names is not None and pairs is None:
            # Each name's last moves, from the end of the index on (name, at): each name
            # one group, so no grouping but the cut.
            sql = ("SELECT m.* FROM (SELECT value AS name FROM json_each(?)) AS s "
                   "JOIN stage_moves AS m ON m.seq IN (SELECT seq FROM stage_moves "
                   f"WHERE name = s.name AND {upto} ORDER BY at DESC, seq DESC LIMIT ?) "
                   "ORDER BY m.at, m.seq")
            params = [_json_list(list(dict.fromkeys(names))), *bounds]
        elif pairs is not None or per == "environment":
            # Each slot's last moves, from the end of the index on (name, environment, at):
            # never every move of an environment, or of some names, numbered (50,000 moves:
            # 143 → 0.2 ms). Of some pairs: each slot's last moves to each version paired
            # with its name, from the end of the index on (name, environment, to_version,
            # at), ``IS`` for a move to no version; each group, whatever ``per``, is the
            # union of some slots' moves to some versions, its last moves among theirs
            # (50,000 moves of 20 names, 3 versions, per version: 13.2 → 1.0 ms).
            slots, params = _stage_where(None, environment, None, names)
            each, to = "", ""
            if pairs is not None:
                each = ("JOIN (SELECT json_extract(value, '$[0]') AS name, "
                        "json_extract(value, '$[1]') AS version FROM json_each(?)) AS v "
                        "ON v.name = s.name ")
                to = "AND to_version IS v.version "
                params.append(json.dumps(pairs))
            sql = grouped.format(
                f"SELECT m.* FROM (SELECT * FROM stage_slots WHERE {slots}) AS s {each}"
                "JOIN stage_moves AS m ON m.seq IN (SELECT seq FROM stage_moves "
                f"WHERE name = s.name AND environment = s.environment {to}AND {upto} "
                "ORDER BY at DESC, seq DESC LIMIT ?)")
            params += [*bounds, count]
        else:  # grouped whole: of every name (per name), of each version or visit of some names
            where, params = _stage_where(None, environment, until, names, None, before, since)
            sql = grouped.format(f"SELECT * FROM stage_moves WHERE {where}")
        rows = self._query(sql, [*params, count])
        return [_stage_move(r) for r in rows]

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
        return [
            AuditEntry(at=_dt(r["at"]), actor=r["actor"], action=r["action"],
                       target=r["target"], before=json.loads(r["before"]),
                       after=json.loads(r["after"]), seq=r["seq"])
            for r in self._audit_rows("*", since, until, actor, target, after_seq, limit,
                                      targets)
        ]

    def audit_sizes(self, *, since: datetime | None = None, until: datetime | None = None,
                    actor: str | None = None, target: str | None = None,
                    after_seq: int | None = None, limit: int = 1000) -> list[int]:
        return [row[0] for row in self._audit_rows(
            "coalesce(length(before), 0) + coalesce(length(after), 0)", since, until, actor,
            target, after_seq, limit)]

    def _audit_rows(self, select: str, since: datetime | None, until: datetime | None,
                    actor: str | None, target: str | None, after_seq: int | None,
                    limit: int, targets: Sequence[str] | None = None) -> list[sqlite3.Row]:
        sql, params = f"SELECT {select} FROM audit WHERE 1 = 1", []
        for clause, value in (("at >= ?", _ts(since)), ("at <= ?", _ts(until)),
                              ("actor = ?", actor), ("target = ?", target),
                              ("target IN (SELECT value FROM json_each(?))",
                               None if targets is None else _json_list(targets)),
                              ("seq > ?", after_seq)):
            if value is not None:
                sql += f" AND {clause}"
                params.append(value)
        return self._query(sql + " ORDER BY seq LIMIT ?", [*params, limit])

    def read_records(self, where: RecordFilter, limit: int) -> list[Record]:
        return [
            Record(collection=r["collection"], key=r["key"], at=_dt(r["at"]),
                   payload=json.loads(r["payload"]), seq=r["seq"])
            for r in self._record_rows("*", where, limit)
        ]

    def record_sizes(self, where: RecordFilter, limit: int) -> list[int]:
        return [row[0] for row in self._record_rows("coalesce(size, length(payload))", where,
                                                    limit)]

    def _record_rows(self, select: str, where: RecordFilter, limit: int) -> list[sqlite3.Row]:
        sql, params = f"SELECT {select} FROM records WHERE collection = ?", [where.collection]
        for clause, value in (("key = ?", where.key), ("at >= ?", _ts(where.since)),
                              ("at <= ?", _ts(where.until)), ("seq > ?", where.after_seq)):
            if value is not None:
                sql += f" AND {clause}"
                params.append(value)
        if where.key_prefix is not None:
            # substr, not LIKE: a prefix holding % or _ must match literally.
            sql += " AND substr(key, 1, length(?)) = ?"
            params += [where.key_prefix, where.key_prefix]
        return self._query(sql + " ORDER BY seq LIMIT ?", [*params, limit])

    def _versions_sql(self, where: VersionFilter, last: int) -> tuple[str, list[Any]]:
        """The IDs and keys of the versions ``where`` selects, the last ``last`` by key:
        the name's read from the (name, kind, version_key) index's newest end and cut
        there, and the family's (linked VERSION_OF it, named apart) from the (family,
        version_key) index's."""
        check_filters(None, where.kinds)
        # A range the index answers; ``? IS NULL OR ...`` it would not.
        keyed = "version_key < ?" if where.before is not None else "version_key IS NOT NULL"
        kept = f"{keyed} AND id NOT IN (SELECT value FROM json_each(?))"
        if where.whole_numbers:
            kept += " AND version <> '' AND version NOT GLOB '*[^0-9]*'"
        kept_params = [*([where.before] if where.before is not None else []),
                       _json_list(sorted(where.exclude))]
        # One kind, as every caller asks: an equality, so the index gives the order.
        kinds = "kind = ?" if len(where.kinds) == 1 else (
            "kind IN (SELECT value FROM json_each(?))")
        sql = (f"SELECT id, version_key AS k FROM nodes WHERE name = ? AND {kinds} "
               f"AND {kept} ORDER BY version_key DESC LIMIT ?")
        params: list[Any] = [where.name, where.kinds[0] if len(where.kinds) == 1
                             else _json_list(where.kinds), *kept_params, last]
        if where.family is not None:
            sql = (f"SELECT * FROM ({sql}) UNION SELECT * FROM (SELECT id, version_key FROM "
                   f"nodes WHERE {FAMILY} = ? AND {kept} ORDER BY version_key DESC LIMIT ?) "
                   "ORDER BY k DESC LIMIT ?")
            params += [where.family, *kept_params, last, last]
        return sql, params

    def read_versions(self, where: VersionFilter, last: int) -> list[Node]:
        sql, params = self._versions_sql(where, last)
        rows = self._query(f"SELECT n.* FROM ({sql}) AS v JOIN nodes AS n ON n.id = v.id "
                           "ORDER BY v.k", params)
        return [_node(row) for row in rows]

    def version_sizes(self, where: VersionFilter, last: int) -> list[VersionRow]:
        sql, params = self._versions_sql(where, last)
        rows = self._query(f"SELECT v.id, v.k, length(n.props) AS chars FROM ({sql}) AS v "
                           "JOIN nodes AS n ON n.id = v.id ORDER BY v.k", params)
        return [VersionRow(row["id"], row["k"], row["chars"]) for row in rows]

    def metadata_seq(self) -> int:
        rows = self._query(_METADATA_SEQ)
        return rows[0][0] if rows else 0

    def traffic_rebuild_position(self) -> str | None:
        rows = self._query(_REBUILD_POSITION)
        return rows[0][0] if rows else None

    def ready(self) -> bool:
        try:
            self._check_file()
            self._query("SELECT 1")
        except (sqlite3.Error, StoreUnavailable, DeadlinePassed):
            return False
        return True

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def wipe(self) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT INTO _wipe VALUES (1)")
            for table in ("edges", "nodes", "stage_moves", "stage_slots", "audit", "records",
                          "traffic", "traffic_targets", "traffic_rebuild"):
                conn.execute(f"DELETE FROM {table}")
            conn.execute("DELETE FROM _wipe")

