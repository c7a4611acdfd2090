"""Concurrent writers on Neo4j, where transactions run side by side (the embedded store
takes its write lock when a transaction begins, so its writers never overlap)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from lineagegraph.graph.store import Direction, GraphStore
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
