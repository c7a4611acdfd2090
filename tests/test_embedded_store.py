"""What only the embedded store has to show: a real file that survives a restart, and logs
the database itself keeps append-only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.store import Direction, RecordFilter
from lineagegraph.graph.walk import walk
from lineagegraph.schema import AuditEntry, Edge, Node, Record, StageMove


def test_data_survives_closing_and_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "graph.db"
    store = EmbeddedStore(path)
    store.upsert([Node.from_id("source:wh.a"), Node.from_id("dataset:wh.a@1")],
                 [Edge(source="dataset:wh.a@1", type="VERSION_OF", target="source:wh.a")],
                 audit=[AuditEntry(action="upsert", target="source:wh.a")])
    store.record_stage_move(StageMove(name="b", environment="production", to_version="3"))
    store.close()

    reopened = EmbeddedStore(path)

    assert set(walk(reopened, "dataset:wh.a@1", Direction.UPSTREAM, 3).nodes) == {
        "dataset:wh.a@1", "source:wh.a"}
    assert reopened.stage_at("b", "production") == "3"
    assert [e.action for e in reopened.audit_log()] == ["upsert"]


def test_the_logs_cannot_be_rewritten_even_with_sql(tmp_path: Path) -> None:
    path = tmp_path / "graph.db"
    store = EmbeddedStore(path)
    store.record_stage_move(StageMove(name="b", environment="production", to_version="3"))
    store.append_audit(AuditEntry(action="promote", target="bundle:b@3"))
    store.close()

    raw = sqlite3.connect(path)
    for statement in ("UPDATE stage_moves SET to_version = '9'", "DELETE FROM stage_moves",
                      "UPDATE audit SET actor = 'mallory'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute(statement)
    raw.close()


def test_a_file_from_before_record_sizes_were_kept_is_read_and_kept_alike(
        tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = EmbeddedStore(path)
    store.upsert(records=[Record(collection="c", key="old", payload={"t": "a" * 92})])
    store.close()
    old = sqlite3.connect(path)  # as a file made before the column was
    old.execute("ALTER TABLE records DROP COLUMN size")
    old.close()

    store = EmbeddedStore(path)
    store.upsert(records=[Record(collection="c", key="new", payload={"t": "b" * 42})])

    assert store.record_sizes(RecordFilter("c"), 10) == [100, 50]
    assert [r.key for r in store.record_page(RecordFilter("c"), limit=10,
                                             max_chars=120).records] == ["old"]
    store.close()


def test_writing_edges_looks_up_the_stored_ones_by_key_not_by_scanning_every_edge(
        tmp_path: Path) -> None:
    """Found by the soak run (bench/soak.py): the write's read of the edges already
    stored matched an expression over the key's columns, which no index serves, so each
    OpenLineage event or manifest read every edge of the store (72 ms an event at 24k
    nodes, growing with the store) under the store's one lock, and every other request
    waited behind it."""
    store = EmbeddedStore(tmp_path / "graph.db")
    store.upsert([Node.from_id("source:wh.a"), Node.from_id("dataset:wh.a@1")], [])
    edge = Edge(source="dataset:wh.a@1", type="VERSION_OF", target="source:wh.a")
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    first = store.upsert([], [edge])
    again = store.upsert([], [edge])
    store._conn.set_trace_callback(None)

    reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")
             and " edges " in f" {s} "]
    assert reads
    for read in reads:
        plan = " | ".join(row[3] for row in store._conn.execute(f"EXPLAIN QUERY PLAN {read}"))
        assert "SCAN e " not in f"{plan} " and "SCAN edges" not in plan, (read, plan)
    # The lookup still finds what is stored: a re-sent edge changes nothing.
    assert (first.edges.created, again.edges.created, again.edges.unchanged) == (1, 0, 1)
    store.close()
