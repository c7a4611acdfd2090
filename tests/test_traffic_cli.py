"""``lineagegraph traffic rebuild`` on a store whose rollup is missing (written before it)."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from lineagegraph.api.cli import app
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.impact import Action, blast_radius
from lineagegraph.graph.neo4j_store import Neo4jStore
from lineagegraph.graph.store import GraphStore
from lineagegraph.schema import Edge, Node
from lineagegraph.schema.kinds import COUNTER_LABEL, TRAFFIC_LABEL

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)


def test_rebuild_recounts_a_store_written_before_the_rollup(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    store = EmbeddedStore(db)
    requests = [Node.from_id(f"outcome:r{i}", created_at=T0,
                             properties={"environment": "production"}) for i in range(7)]
    store.upsert([Node.from_id("bundle:b@1", created_at=T0), *requests],
                 [Edge(source=r.id, type="SERVED_BY", target="bundle:b@1") for r in requests])
    store.close()
    with sqlite3.connect(db) as conn:  # what a database from before the rollup holds
        conn.execute("DELETE FROM traffic")
        conn.execute("DELETE FROM traffic_targets")
    assert EmbeddedStore(db).traffic(["bundle:b@1"]) == {}

    result = CliRunner().invoke(app, ["traffic", "rebuild", "--db", str(db)])

    assert result.exit_code == 0, result.output
    assert "rebuilt from 7 requests" in result.output
    assert EmbeddedStore(db).traffic(["bundle:b@1"]) == {"production": 7}


def test_a_store_from_before_the_rollup_says_its_traffic_is_partial_until_rebuilt(
    store: GraphStore,
) -> None:
    # After an upgrade, the old store's requests were in no counter: blast radius and the
    # promotion report said 0 requests, with no warning.
    requests = [Node.from_id(f"outcome:r{i}", created_at=T0,
                             properties={"environment": "production"}) for i in range(7)]
    store.upsert([Node.from_id("bundle:b@1", created_at=T0), *requests],
                 [Edge(source=r.id, type="SERVED_BY", target="bundle:b@1") for r in requests])
    if isinstance(store, EmbeddedStore):  # what a file from before the rollup holds
        with sqlite3.connect(store.path) as conn:
            conn.executescript("DROP TABLE traffic; DROP TABLE traffic_targets; "
                               "DROP TABLE traffic_rebuild;")
        upgraded: GraphStore = EmbeddedStore(store.path)
    else:
        store._driver.execute_query(  # type: ignore[attr-defined]
            f"MATCH (c) WHERE c:{TRAFFIC_LABEL} OR (c:{COUNTER_LABEL} AND c.name = 'traffic') "
            "DETACH DELETE c")
        upgraded = Neo4jStore(os.environ["NEO4J_URI"])

    assert upgraded.traffic_rebuild_position() == ""
    radius = blast_radius(upgraded, "bundle:b@1", Action.CHANGE)
    assert radius is not None
    assert any("lineagegraph traffic rebuild" in w for w in radius.warnings), radius.warnings

    assert upgraded.rebuild_traffic() == 7
    assert upgraded.traffic_rebuild_position() is None
    assert upgraded.traffic(["bundle:b@1"]) == {"production": 7}
    upgraded.close()
