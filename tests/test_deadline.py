"""A query's time budget: one for the whole query, seen by the stores, so work past it stops
in its worker thread (before its next statement, or inside a long one) instead of running
on with nobody waiting for it."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph.deadline import DeadlinePassed, within
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.store import Direction, GraphStore
from lineagegraph.schema import Node

# Work that runs for many seconds (a count to 10^9) unless stopped.
LONG_SQL = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
            "WHERE x < 1000000000) SELECT count(*) FROM c")
LONG_CYPHER = "UNWIND range(1, 1000000000) AS x RETURN count(x) AS n"


def test_store_work_past_its_deadline_stops_before_the_next_statement(
    store: GraphStore,
) -> None:
    store.upsert([Node.from_id("source:s")])
    gone = time.monotonic() - 1

    with pytest.raises(DeadlinePassed):
        within(gone, lambda: store.get(["source:s"]))
    with pytest.raises(DeadlinePassed):
        within(gone, lambda: store.expand(["source:s"], Direction.DOWNSTREAM))
    with pytest.raises(DeadlinePassed):
        within(gone, lambda: store.upsert([Node.from_id("source:t")]))
    assert within(None, lambda: store.get(["source:s"])).keys() == {"source:s"}
    assert store.get(["source:t"]) == {}  # the write past its deadline wrote nothing


def test_a_long_sqlite_statement_is_interrupted_at_the_deadline(tmp_path: Any) -> None:
    store = EmbeddedStore(tmp_path / "x.db")
    started = time.monotonic()

    with pytest.raises(DeadlinePassed):
        within(started + 0.3, lambda: store._query(LONG_SQL))
    # Not timed as a target: without the interrupt the statement runs for minutes.
    assert time.monotonic() - started < 10
    assert store._query("SELECT 1 AS one")[0]["one"] == 1  # the connection still works


@pytest.mark.neo4j
def test_a_long_cypher_statement_is_stopped_by_the_server_at_the_deadline(
    neo4j_store: GraphStore,
) -> None:
    started = time.monotonic()

    with pytest.raises(DeadlinePassed):
        within(started + 0.5, lambda: neo4j_store._read(LONG_CYPHER))  # type: ignore[attr-defined]
    assert time.monotonic() - started < 30


class SlowUpserts:
    """The real store, whose writes of a batch (what the upsert mutation writes through)
    first wait: store work slower than the budget."""

    def __init__(self, inner: GraphStore, seconds: float) -> None:
        self._inner, self._seconds = inner, seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def write(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self._seconds)
        return self._inner.write(*args, **kwargs)


def test_one_budget_covers_every_field_of_a_query_and_late_work_writes_nothing(
    store: GraphStore,
) -> None:
    # Mutation fields run one after another: with 0.6 s each in a 1 s budget, the first
    # is written, the second times out, and its thread, still sleeping when the answer
    # goes out, finds the deadline gone and writes nothing.
    slow = SlowUpserts(store, 0.6)
    settings = Settings(neo4j_uri=None, query_timeout_s=1.0)
    with TestClient(create_app(settings, store=slow)) as client:  # type: ignore[arg-type]
        client.get("/readyz")
        body = client.post("/graphql", json={"query": """mutation {
            a: upsert(nodes: [{id: "source:first"}]) { nodes { created } }
            b: upsert(nodes: [{id: "source:second"}]) { nodes { created } } }"""}).json()
        time.sleep(0.5)  # the second upsert's thread wakes and reaches the store

    assert body["data"]["a"] == {"nodes": {"created": 1}}
    assert body["errors"][0]["path"] == ["b"]
    assert body["errors"][0]["extensions"] == {"code": "QUERY_TIMEOUT"}
    assert store.get(["source:first", "source:second"]).keys() == {"source:first"}
