"""Concurrent writers on Neo4j, where transactions run side by side (the embedded store
takes its write lock when a transaction begins, so its writers never overlap)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from lineagegraph.graph.store import Direction, GraphStore, PreparedWrite, UpsertResult
from lineagegraph.graph.traffic import OUTCOME_EDGES
from lineagegraph.schema import AuditEntry, Edge, Node
from lineagegraph.schema.kinds import COUNTER_LABEL

pytestmark = pytest.mark.neo4j

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
BUNDLE = "bundle:b@1"


@pytest.fixture
def store(neo4j_store: GraphStore) -> GraphStore:
    neo4j_store.wipe()
    return neo4j_store


def _outcome() -> tuple[Node, Edge]:
    node = Node.from_id("outcome:r1", created_at=T0, properties={"environment": "production"})
    return node, Edge(source=node.id, type="SERVED_BY", target=BUNDLE)


def test_a_request_sent_twice_at_once_is_counted_once(store: GraphStore) -> None:
    # A client that retries while its first request is still being written. The first
    # writer is held inside its transaction, after its writes, by a lock on the audit
    # counter taken here; the second starts then, and the first commits while the second
    # is under way. The rollup must count the request once, as counting the requests does.
    audit = AuditEntry(action="ingest.outcomes", target="test", actor="test")
    store.upsert([Node.from_id(BUNDLE, created_at=T0)], audit=[audit])  # the counter exists
    node, edge = _outcome()
    driver = store._driver  # type: ignore[attr-defined]  # the same Neo4j, no service
    with driver.session() as session:
        holder = session.begin_transaction()
        holder.run(f"MATCH (c:{COUNTER_LABEL} {{name: 'AuditEntry'}}) "
                   "SET c.value = c.value").consume()
        first = threading.Thread(target=store.upsert, args=([node], [edge], [audit]))
        first.start()
        time.sleep(1.0)  # the first writer is now waiting for the audit counter
        second = threading.Thread(target=store.upsert, args=([node], [edge]))
        second.start()
        time.sleep(1.0)  # the second one is now under way (or waiting for the first)
        holder.rollback()
    first.join(timeout=30)
    second.join(timeout=30)
    assert not first.is_alive() and not second.is_alive()

    counted = store.count_neighbours([BUNDLE], Direction.DOWNSTREAM, kind="InferenceOutcome",
                                     edge_types=OUTCOME_EDGES, group_by="environment")
    assert counted == {"production": 1}
    assert store.traffic([BUNDLE]) == counted


def test_a_counter_name_is_unique_in_the_database(store: GraphStore) -> None:
    # What lets two writers' first MERGE of a counter end with one node, not two.
    import neo4j

    store.upsert(audit=[AuditEntry(action="test", target="t", actor="test")])
    driver = store._driver  # type: ignore[attr-defined]
    with pytest.raises(neo4j.exceptions.ConstraintError):
        driver.execute_query(f"CREATE (:{COUNTER_LABEL} {{name: 'AuditEntry', value: 0}})")


def _requests(prefix: str, count: int, bundles: list[str]) -> tuple[list[Node], list[Edge]]:
    nodes = [Node.from_id(f"outcome:{prefix}-{i:04d}", created_at=T0,
                          properties={"environment": "production"}) for i in range(count)]
    edges = [Edge(source=n.id, type="SERVED_BY", target=bundles[i % len(bundles)])
             for i, n in enumerate(nodes)]
    return nodes, edges


def test_writers_of_the_same_new_requests_at_once_count_each_request_once(
    store: GraphStore,
) -> None:
    # A write of new requests takes its turn at the rollup only after its node write, so
    # two of them run side by side; if both write the same requests, the one whose node
    # write finds them created meanwhile must write again, reading first.
    bundles = [f"bundle:b{i}@1" for i in range(5)]
    store.upsert([Node.from_id(b, created_at=T0) for b in bundles])
    for round_ in range(4):
        nodes, edges = _requests(f"r{round_}", 300, bundles)
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def write(nodes: list[Node] = nodes, edges: list[Edge] = edges,
                  start: threading.Barrier = start, errors: list = errors) -> None:
            start.wait()
            try:
                store.upsert(nodes, edges)
            except BaseException as error:  # noqa: BLE001 — reported below
                errors.append(error)

        writers = [threading.Thread(target=write) for _ in range(2)]
        for writer in writers:
            writer.start()
        for writer in writers:
            writer.join(timeout=60)
        assert not any(writer.is_alive() for writer in writers)
        assert errors == []

    counted = store.count_neighbours(bundles, Direction.DOWNSTREAM, kind="InferenceOutcome",
                                     edge_types=OUTCOME_EDGES, group_by="environment")
    assert counted == {"production": 1200}
    assert store.traffic(bundles) == counted


def test_a_bulk_load_with_writes_in_flight_writes_every_batch_and_counts_it_once(
    store: GraphStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lineagegraph.ingest.batch import Batch, load_batches

    assert store.parallel_writes > 1
    bundles = [f"bundle:b{i}@1" for i in range(7)]
    store.upsert([Node.from_id(b, created_at=T0) for b in bundles])

    def batches() -> Iterator[Batch]:
        for i in range(9):  # every batch points at every bundle, in another order
            nodes, edges = _requests(f"load{i}", 250, bundles[i % 7:] + bundles[:i % 7])
            yield Batch(nodes=nodes, edges=edges, size=len(nodes))

    # The real write, watched: how many run at once.
    write, running, most = store.write, [0], [0]
    lock = threading.Lock()

    def watched(ready: PreparedWrite) -> UpsertResult:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return write(ready)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(store, "write", watched)
    summary = load_batches(store, batches(), prefetch=True)

    assert most[0] == store.parallel_writes
    assert (summary.records, summary.created) == (9 * 250, 2 * 9 * 250)
    counted = store.count_neighbours(bundles, Direction.DOWNSTREAM, kind="InferenceOutcome",
                                     edge_types=OUTCOME_EDGES, group_by="environment")
    assert counted == {"production": 9 * 250}
    assert store.traffic(bundles) == counted


def test_how_many_writes_a_bulk_load_keeps_in_flight_is_a_setting(
    neo4j_uri: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    from lineagegraph.api.settings import Settings

    auth = {"neo4j_user": os.environ.get("NEO4J_USER", "neo4j"),
            "neo4j_password": os.environ.get("NEO4J_PASSWORD")}
    monkeypatch.delenv("LINEAGEGRAPH_NEO4J_WRITES_IN_FLIGHT", raising=False)
    default = Settings(neo4j_uri=neo4j_uri, **auth).open_store()
    monkeypatch.setenv("LINEAGEGRAPH_NEO4J_WRITES_IN_FLIGHT", "3")
    three = Settings(neo4j_uri=neo4j_uri, **auth).open_store()
    try:
        assert (default.parallel_writes, three.parallel_writes) == (2, 3)
    finally:
        default.close()
        three.close()
    with pytest.raises(ValidationError, match="neo4j_writes_in_flight"):
        Settings(neo4j_uri=neo4j_uri, neo4j_writes_in_flight=0)


def test_what_a_write_raises_is_what_its_caller_gets_when_the_rollback_fails_too(
    store: GraphStore,
) -> None:
    # The driver's rollback reads what the work's statements left unread; a failure there
    # (a CREATE's ConstraintError, as ResultFailedError) hid the work's own RequestsStored,
    # so a bulk load stopped instead of sending the batch back to read first.
    class Refused(Exception):
        pass

    def work(tx: Any) -> None:
        tx.tx.run("UNWIND [1, 0] AS x RETURN 1 / x AS y")  # fails where the rollback reads
        raise Refused

    with pytest.raises(Refused):
        store._write(work)  # type: ignore[attr-defined]


def test_a_write_failing_while_its_caller_handles_another_error_raises_its_own(
    store: GraphStore,
) -> None:
    # The read-first retry runs inside `except RequestsStored`: a Neo4j gone meanwhile
    # came back as that RequestsStored (the driver error's context), its chain a cycle, and
    # a load re-sending stored requests hung rendering it.
    import neo4j

    class Handled(Exception):
        pass

    def work(tx: Any) -> None:
        tx.tx.run("UNWIND [1, 0] AS x RETURN 1 / x AS y").consume()

    with pytest.raises(neo4j.exceptions.Neo4jError) as failed:
        try:
            raise Handled
        except Handled:
            store._write(work)  # type: ignore[attr-defined]
    seen, link = set(), failed.value
    while link is not None:  # a finite chain
        assert id(link) not in seen
        seen.add(id(link))
        link = link.__cause__ or link.__context__


def test_writers_of_a_numbered_log_at_once_queue_without_deadlocks(
    store: GraphStore, caplog: pytest.LogCaptureFixture,
) -> None:
    # Each transaction writes a log's counter once an entry: two stage moves, a promotion's
    # check then its move, or several audit entries. Written twice while another writer
    # waited on it, Neo4j found a deadlock, and the driver retried after a second.
    from lineagegraph.schema import StageMove

    rounds = 12
    barrier = threading.Barrier(2)

    def writer(side: int) -> None:
        for i in range(rounds):
            barrier.wait()
            store.record_stage_moves(
                [StageMove(name=f"n{i}", environment=f"env{side}-{k}", to_version="1")
                 for k in (1, 2)],
                [AuditEntry(action="move", target=f"n{i}", actor="t") for _ in (1, 2)],
                check_from=True)

    with caplog.at_level("WARNING", logger="neo4j"):
        threads = [threading.Thread(target=writer, args=(side,)) for side in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert not [r for r in caplog.records if "Deadlock" in r.getMessage()]
    assert sorted(m.seq for m in store.stage_history()) == list(range(1, 4 * rounds + 1))
    assert sorted(e.seq for e in store.audit_log()) == list(range(1, 4 * rounds + 1))
