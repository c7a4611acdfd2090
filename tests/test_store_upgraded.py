"""A running server of this version stops writing once a newer version marks the store it
upgrades (README "Configuration"): every write refused, nothing written, reads answered;
the mark taken after every writer's turn and before the first step."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lineagegraph.api.auth import create_token
from lineagegraph.graph import registry, retention
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.neo4j_store import Neo4jStore
from lineagegraph.graph.store import GraphStore, StoreUpgraded
from lineagegraph.ingest.batch import load_batches
from lineagegraph.ingest.manifest_formats import RawDoc
from lineagegraph.ingest.manifests import map_manifests
from lineagegraph.ingest.openlineage import ingest_event
from lineagegraph.ingest.outcomes import strict_batch
from lineagegraph.schema import AuditEntry, Node, Record, StageMove
from lineagegraph.schema.kinds import COUNTER_LABEL, STORE_FORMAT

from .ingest_support import cli_args, client_for, run_cli
from .openlineage_support import dataset, run_event
from .test_store_format import _set_stamp, _settings, _stamp

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
NEWER = STORE_FORMAT + 1
REFUSAL = (f"the store was upgraded (or is being upgraded) to format {NEWER} by a newer "
           f"lineagegraph; this lineagegraph (format {STORE_FORMAT}) no longer writes to it; "
           "restart it with the newer version")
OUTCOME = {"request_id": "req-1", "timestamp": "2026-03-02T12:00:00Z", "bundle": "b@1",
           "environment": "production", "status": "ok"}


def _mark(store: GraphStore, field: str = "next", value: int | None = NEWER) -> None:
    """What a newer version does to the store behind this one's back: marks the format it
    goes to (``next``; on SQLite, whose steps and stamp are one transaction, the stamp),
    or stamps it (``value``)."""
    if isinstance(store, EmbeddedStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute(f"PRAGMA user_version = {value or STORE_FORMAT}")
        return
    _driver(store).execute_query(f"MATCH (c:{COUNTER_LABEL} {{name: 'format'}}) "
                                 f"SET c[$field] = $value", field=field, value=value)


def _driver(store: GraphStore) -> Any:
    assert isinstance(store, Neo4jStore)
    return store._driver


def _raw(store: GraphStore) -> Any:
    """Everything stored, read behind the store's back: every table row; every node's
    labels and properties and every relationship's."""
    if isinstance(store, EmbeddedStore):
        with sqlite3.connect(store.path) as conn:
            return list(conn.iterdump())
    nodes, _, _ = _driver(store).execute_query(
        "MATCH (n) RETURN labels(n) AS labels, properties(n) AS props")
    edges, _, _ = _driver(store).execute_query(
        "MATCH (a)-[r]->(b) RETURN a.id AS a, type(r) AS type, properties(r) AS props, "
        "b.id AS b")
    return sorted(json.dumps(r.data(), sort_keys=True, default=str) for r in [*nodes, *edges])


def _graph(store: GraphStore) -> None:
    """A bundle with a stage history, an audit entry and a record: what each write adds to."""
    store.upsert([Node.from_id("bundle:b@1", created_at=T0),
                  Node.from_id("bundle:old@1", created_at=T0)],
                 audit=[AuditEntry(at=T0, actor="t", action="seed", target="bundle:b@1")],
                 records=[Record(collection="notes", key="k", at=T0, payload={"n": 1})])
    store.record_stage_move(StageMove(name="b", environment="staging", to_version="1",
                                      at=T0, actor="t"))


def _writes(store: GraphStore) -> dict[str, Callable[[], Any]]:
    """Each kind of write the service makes, by what makes it."""
    manifest = {"kind": "ModelVersion", "name": "m", "version": "2",
                "created_at": "2026-03-01T00:00:00Z"}
    candidates = retention.plan(store, timedelta(days=1), at=T0 + timedelta(days=30))
    assert [c.node.id for c in candidates] == ["bundle:old@1"]  # read before the mark
    later = T0 + timedelta(hours=1)
    return {
        "upsert": lambda: store.upsert([Node.from_id("bundle:b@2", created_at=T0)]),
        "write_mapped": lambda: store.write_mapped(
            lambda: store.prepare([Node.from_id("bundle:b@3", created_at=T0)])),
        # created if absent, else kept: a write no writers' turn covers (``_write``'s check)
        "kept nodes": lambda: store.write(store.prepare(
            [Node.from_id("model:shadow@1", created_at=T0)], keep_stored=["model:shadow@1"])),
        "manifest": lambda: load_batches(store, [map_manifests(
            [RawDoc(1, manifest)], store, actor="t", source="t")]),
        "outcomes": lambda: strict_batch([(1, json.dumps(OUTCOME))], store,
                                         actor="t").write(store),
        "openlineage": lambda: ingest_event(store, run_event(
            "COMPLETE", at=later, outputs=[dataset("wh", "t")])),
        "dead letter": lambda: ingest_event(store, {"eventType": "COMPLETE"}),
        "stage move": lambda: store.record_stage_move(StageMove(
            name="b", environment="production", to_version="1", at=later, actor="t")),
        "archive": lambda: retention.apply(store, candidates, "t", at=T0 + timedelta(days=30)),
        "audit": lambda: store.append_audit(AuditEntry(at=later, actor="t", action="a",
                                                       target="bundle:b@1")),
        "record": lambda: store.upsert(records=[Record(collection="notes", key="k2", at=later,
                                                       payload={})]),
        "token": lambda: create_token(store, "ci", "write", actor="t"),
        "traffic rebuild": store.rebuild_traffic,
    }


# A newer version's stamp (``value``), and on Neo4j its mark while it upgrades (``next``):
# SQLite's upgrade is one transaction, its stamp the mark.
@pytest.mark.parametrize(("store", "field"), [
    pytest.param("embedded", "value", id="embedded-value"),
    pytest.param("neo4j", "value", id="neo4j-value", marks=pytest.mark.neo4j),
    pytest.param("neo4j", "next", id="neo4j-next", marks=pytest.mark.neo4j),
], indirect=["store"])
def test_a_store_a_newer_version_marked_refuses_every_write_and_still_answers_reads(
    store: GraphStore, field: str,
) -> None:
    _graph(store)
    writes = _writes(store)
    history = registry.history(store, "bundle:b@1")
    _mark(store, field)
    try:
        before = _raw(store)
        refused = {}
        for what, write in writes.items():
            with pytest.raises(StoreUpgraded) as error:
                write()
            refused[what] = str(error.value)
            assert _raw(store) == before, what  # nothing of it written

        assert set(refused.values()) == {REFUSAL}
        # Reads go on.
        assert set(store.get(["bundle:b@1"])) == {"bundle:b@1"}
        assert registry.history(store, "bundle:b@1") == history
        assert [m.to_version for m in store.stage_history("b")] == ["1"]
        assert [e.action for e in store.audit_log()][:1] == ["seed"]
        assert [r.key for r in store.records("notes")] == ["k"]
    finally:
        _mark(store, field, STORE_FORMAT if field == "value" else None)
    store.upsert([Node.from_id("bundle:b@2", created_at=T0)])  # unmarked: writes again


def test_a_rest_write_to_a_marked_store_answers_503_naming_the_upgrade(
    store: GraphStore,
) -> None:
    _graph(store)
    with client_for(store) as client:
        _mark(store)
        try:
            answer = client.post("/api/v1/outcomes", json=[OUTCOME])
            read = client.get("/api/v1/deadletter")
        finally:
            _mark(store, value=None if isinstance(store, Neo4jStore) else STORE_FORMAT)

    assert answer.status_code == 503, answer.text
    assert answer.json()["code"] == "STORE_UNAVAILABLE"
    assert answer.json()["error"] == REFUSAL
    assert read.status_code == 200, read.text
    assert store.get(["request:req-1"]) == {}


def test_the_cli_says_a_marked_store_in_one_line_and_exits_1(
    store: GraphStore, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lineagegraph.api import cli
    from lineagegraph.api.settings import Settings

    opened = Settings.open_store

    def opened_then_marked(settings: Settings) -> GraphStore:
        # A newer version marks the store once this command has it open.
        each = opened(settings)
        _mark(store)
        return each

    monkeypatch.setattr(Settings, "open_store", opened_then_marked)
    monkeypatch.setattr("sys.argv", ["lineagegraph", "token", "create", "ci", "--scopes",
                                     "write", *cli_args(store, request)])
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main()
    finally:
        _mark(store, value=None if isinstance(store, Neo4jStore) else STORE_FORMAT)

    assert exited.value.code == 1
    said = capsys.readouterr().err
    assert "Traceback" not in said
    assert " ".join(said.split()) == REFUSAL  # as if unwrapped: one line
    assert run_cli("token", "list", *cli_args(store, request)).stdout.count(" ci ") == 0


# -- Neo4j: the mark, ordered with every writer's turn -----------------------------------------

@pytest.mark.neo4j
def test_a_neo4j_store_a_newer_version_is_upgrading_is_not_opened(
    neo4j_store: GraphStore, request: pytest.FixtureRequest,
) -> None:
    neo4j_store.wipe()
    _mark(neo4j_store)
    try:
        with pytest.raises(Exception) as refused:
            _settings(neo4j_store, request).open_store()
    finally:
        _mark(neo4j_store, value=None)
    assert (f"being upgraded by a newer lineagegraph (to store format {NEWER}; this version "
            f"reads format {STORE_FORMAT}): upgrade lineagegraph, or point it at another "
            "store") in str(refused.value)


@pytest.mark.neo4j
def test_neo4j_marks_the_format_it_goes_to_before_its_first_step(
    neo4j_store: GraphStore, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
) -> None:
    neo4j_store.wipe()
    _set_stamp(neo4j_store, 1)
    marked: list[Any] = []
    first_step = Neo4jStore._key_versions

    def step(self: Neo4jStore) -> None:
        marked.append(self._counter("format", "next"))
        first_step(self)

    monkeypatch.setattr(Neo4jStore, "_key_versions", step)
    _settings(neo4j_store, request).open_store().close()

    assert marked == [STORE_FORMAT]
    assert _stamp(neo4j_store) == STORE_FORMAT


def _blocked(store: GraphStore) -> bool:
    """Another transaction waits on a lock (Neo4j's transaction list says by whom)."""
    records, _, _ = _driver(store).execute_query(
        "SHOW TRANSACTIONS YIELD status WHERE status STARTS WITH 'Blocked' RETURN count(*) AS n")
    return bool(records[0]["n"])


def _wait_until(check: Callable[[], bool]) -> None:
    for _ in range(600):  # a generous minute: the order is asserted by events, not time
        if check():
            return
        threading.Event().wait(0.1)
    raise AssertionError("never happened")


@contextmanager
def _in_thread(work: Callable[[], Any]) -> Iterator[list[Any]]:
    """``work`` in a thread; its result or exception in the list once the block ends."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield outcome
    finally:
        thread.join(60)
        assert not thread.is_alive()


@pytest.mark.neo4j
def test_neo4j_the_mark_waits_for_a_writer_holding_the_metadata_turn(
    neo4j_store: GraphStore, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
) -> None:
    neo4j_store.wipe()
    _set_stamp(neo4j_store, 2)  # an older format: opening it marks it, then steps
    events: list[str] = []
    holding, release = threading.Event(), threading.Event()
    first_step = Neo4jStore._keep_families

    def step(self: Neo4jStore) -> None:
        events.append(f"first step, next={self._counter('format', 'next')}")
        first_step(self)

    monkeypatch.setattr(Neo4jStore, "_keep_families", step)

    def writer(tx: Any) -> None:
        tx.bump_metadata()  # the metadata writers' turn, held to the commit
        tx.write_nodes(neo4j_store._node_rows([Node.from_id("bundle:w@1", created_at=T0)]))
        holding.set()
        assert release.wait(60)
        events.append("writer commits")

    with _in_thread(lambda: neo4j_store._write(writer)) as written:
        assert holding.wait(60)
        with _in_thread(lambda: _settings(neo4j_store, request).open_store().close()) as opened:
            _wait_until(lambda: _blocked(neo4j_store))  # the mark waits on the writer's turn
            events.append("mark waits")
            release.set()

    assert written == [None] and opened == [None]
    assert events == ["mark waits", "writer commits", f"first step, next={STORE_FORMAT}"]
    assert set(neo4j_store.get(["bundle:w@1"])) == {"bundle:w@1"}  # before the mark: kept


@pytest.mark.neo4j
@pytest.mark.parametrize("turn", ["metadata", "format"])
def test_neo4j_a_writer_waiting_on_its_turn_reads_the_mark_committed_meanwhile(
    neo4j_store: GraphStore, turn: str,
) -> None:
    """A newer version's mark holding the metadata turn (or the format counter's lock, which
    a write that takes no turn reads the format under): the writer queued behind it reads
    the format after the lock is granted, so sees the mark, and writes nothing."""
    neo4j_store.wipe()
    node = Node.from_id("model:shadow@1", created_at=T0)
    write = {"metadata": lambda: neo4j_store.upsert([node]),
             "format": lambda: neo4j_store.write(neo4j_store.prepare(
                 [node], keep_stored=[node.id]))}[turn]
    with _driver(neo4j_store).session() as session:
        mark = session.begin_transaction()
        mark.run(f"MERGE (c:{COUNTER_LABEL} {{name: $turn}}) "
                 "SET c.value = coalesce(c.value, 0)", turn=turn).consume()
        mark.run(f"MATCH (c:{COUNTER_LABEL} {{name: 'format'}}) SET c.next = $newer",
                 newer=NEWER).consume()
        with _in_thread(write) as written:
            _wait_until(lambda: _blocked(neo4j_store))
            mark.commit()
    try:
        assert len(written) == 1 and isinstance(written[0], StoreUpgraded), written
        assert neo4j_store.get([node.id]) == {}
    finally:
        _mark(neo4j_store, value=None)


# -- SQLite: the upgrade is one write transaction -------------------------------------------------

def test_sqlite_a_writer_waiting_on_the_file_reads_the_stamp_committed_meanwhile(
    tmp_path: Any,
) -> None:
    store = EmbeddedStore(tmp_path / "lineagegraph.db")
    upgrade = sqlite3.connect(store.path, isolation_level=None)
    try:
        upgrade.execute("BEGIN IMMEDIATE")  # a newer version's upgrade, under way
        upgrade.execute(f"PRAGMA user_version = {NEWER}")
        with _in_thread(lambda: store.upsert([Node.from_id("bundle:b@1", created_at=T0)])
                        ) as written:
            threading.Event().wait(0.5)  # let it reach the file's lock (either way: refused)
            upgrade.execute("COMMIT")
        assert len(written) == 1 and isinstance(written[0], StoreUpgraded), written
        assert store.get(["bundle:b@1"]) == {}
    finally:
        upgrade.close()
        store.close()


def test_sqlite_the_steps_and_the_stamp_are_one_write_transaction(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "lineagegraph.db"
    EmbeddedStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 1")
    seen: list[tuple[bool, int]] = []
    first_step = EmbeddedStore._key_versions

    def step(self: EmbeddedStore) -> None:
        # Another process's writer meanwhile: the file is locked, and not stamped yet.
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()
        seen.append((self._conn.in_transaction,
                     self._conn.execute("PRAGMA user_version").fetchone()[0]))
        first_step(self)

    monkeypatch.setattr(EmbeddedStore, "_key_versions", step)
    EmbeddedStore(path).close()

    assert seen == [(True, 1)]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == STORE_FORMAT
