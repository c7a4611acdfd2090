"""``lineagegraph traffic rebuild`` on a store whose rollup is missing (written before it)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from lineagegraph.api.cli import app
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.schema import Edge, Node

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
