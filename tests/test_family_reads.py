"""A family's versions read from the family ID each version keeps (store format 3):
``GraphStore.family_versions`` answers as ``nearest`` over ``VERSION_OF`` did, a family's
history reads its versions named apart from the same index, both cut at what they return;
and a version has one family: linking it to a second is refused."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph import registry
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.store import Direction, GraphStore, Hop, VersionFilter
from lineagegraph.graph.walk import INLINE_CHARS
from lineagegraph.ingest.manifest_formats import read_yaml
from lineagegraph.ingest.manifests import load_manifests
from lineagegraph.schema import Edge, Node, SchemaError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def family_graph() -> tuple[list[Node], list[Edge]]:
    """Two sources and a model, each with versions: ties on ``created_at`` (told apart by
    ID), versions named apart from their source, one created before it."""
    nodes = [Node.from_id(i, created_at=T0) for i in ("source:wh/a", "source:wh/b", "model:m")]
    versions = [
        *(Node.from_id(f"dataset:wh/a@{i}", created_at=T0 + i * HOUR) for i in range(6)),
        Node.from_id("dataset:wh/a@2b", created_at=T0 + 2 * HOUR),  # a tie with v2
        Node.from_id("dataset:wh/a-copy@c1", created_at=T0 + 2 * HOUR),  # and with both
        Node.from_id("dataset:wh/a-copy@c2", created_at=T0 + 10 * HOUR),
        Node.from_id("dataset:wh/a-copy@c0", created_at=T0 - HOUR),
        *(Node.from_id(f"dataset:wh/b@{i}", created_at=T0 + i * HOUR) for i in range(3)),
        *(Node.from_id(f"model:m@{i}", created_at=T0 + i * HOUR) for i in range(1, 4)),
    ]
    edges = [Edge(source=v.id, type="VERSION_OF", target="model:m" if v.kind == "ModelVersion"
                  else "source:" + v.name.removesuffix("-copy")) for v in versions]
    return nodes + versions, edges


def family_rows(store: GraphStore, family: str) -> list[tuple[str, str]]:
    """(family, version) of every version the store reads for ``family``, in time order."""
    return [(hop.origin, hop.node.id) for hop in store.family_versions(
        [family], count=None, newest=False)]


def _rows(hops: list[Hop]) -> list[tuple[str, str, tuple[str, str, str]]]:
    return sorted((hop.origin, hop.node.id, hop.edge.key) for hop in hops)


def _expected(nodes: list[Node], edges: list[Edge], families: list[str], count: int | None,
              newest: bool, since: datetime | None, until: datetime | None,
              exclude: set[str]) -> list[tuple[str, str, tuple[str, str, str]]]:
    by_id = {n.id: n for n in nodes}
    rows = []
    for family in families:
        found = sorted((by_id[e.source] for e in edges if e.target == family
                        and e.source not in exclude
                        and (since is None or by_id[e.source].created_at >= since)
                        and (until is None or by_id[e.source].created_at <= until)),
                       key=lambda n: (n.created_at, n.id), reverse=newest)
        rows += [(family, n.id, (n.id, "VERSION_OF", family)) for n in found[:count]]
    return sorted(rows)


@pytest.mark.parametrize(("newest", "count"), [(True, 1), (True, 2), (False, 3), (True, None),
                                               (False, None)])
def test_a_familys_versions_are_read_nearest_first_ties_by_id_as_nearest_read_them(
        store: GraphStore, newest: bool, count: int | None) -> None:
    nodes, edges = family_graph()
    store.upsert(nodes, edges)
    families = ["source:wh/a", "source:wh/b", "model:m", "source:none"]
    windows = [(None, None), (T0 + 2 * HOUR, None), (None, T0 + 2 * HOUR),
               (T0 + HOUR, T0 + 4 * HOUR)]
    excluded = [set(), {"dataset:wh/a@5", "dataset:wh/a@2", "model:m@3"}]

    for (since, until), exclude in itertools.product(windows, excluded):
        asked: dict[str, Any] = {"newest": newest, "since": since, "until": until,
                                 "exclude": exclude}
        read = store.family_versions(families, count=count, **asked)
        expected = _expected(nodes, edges, families, count, **asked)
        assert _rows(read) == expected, (since, until, exclude)
        # What nearest over VERSION_OF answers, which the family read replaces.
        if count is not None:
            assert expected == _rows(store.nearest(
                families, Direction.DOWNSTREAM, count=count, edge_types=["VERSION_OF"],
                **asked))
    assert store.family_versions([], count=1, newest=True) == []
    twice = store.family_versions(["model:m", "model:m"], count=1, newest=True)
    assert [(h.origin, h.node.id) for h in twice] == [("model:m", "model:m@3")]


def test_a_familys_versions_leave_large_properties_out_of_their_rows_as_nearest_does(
        store: GraphStore) -> None:
    # Versions and their edges with properties past the inline limit, and small ones.
    large = "x" * (2 * INLINE_CHARS)
    versions = [Node.from_id(f"dataset:wh/a@{i}", created_at=T0 + i * HOUR,
                             properties={"schema": large} if i % 2 else {"n": i})
                for i in range(6)]
    store.upsert([Node.from_id("source:wh/a", created_at=T0), *versions],
                 [Edge(source=v.id, type="VERSION_OF", target="source:wh/a",
                       properties={"note": large} if i % 3 == 0 else {})
                  for i, v in enumerate(versions)])

    def view(hops: list[Hop]) -> list[tuple[Any, ...]]:
        return sorted((h.origin, h.node.id, h.node_elided, h.edge_elided, h.node.properties,
                       h.edge.properties) for h in hops)

    for inline in (INLINE_CHARS, None):
        asked: dict[str, Any] = {"count": 4, "newest": True, "until": T0 + 4 * HOUR,
                                 "inline": inline}
        read = view(store.family_versions(["source:wh/a"], **asked))
        assert read == view(store.nearest(["source:wh/a"], Direction.DOWNSTREAM,
                                          edge_types=["VERSION_OF"], **asked))
        elided = {(row[1], bool(row[2]), bool(row[3])) for row in read}
        assert elided == {(f"dataset:wh/a@{i}", bool(inline and i % 2),
                           bool(inline and i % 3 == 0)) for i in range(1, 5)}


def _big_family(store: GraphStore, n: int) -> None:
    """``n`` versions of source:big, named apart from it, an hour apart."""
    versions = [Node(kind="DatasetVersion", name=f"big/{i % 7}", version=f"{i:05d}",
                     created_at=T0 + i * HOUR) for i in range(n)]
    store.upsert([Node.from_id("source:big", created_at=T0), *versions])
    store.upsert(edges=[Edge(source=v.id, type="VERSION_OF", target="source:big")
                        for v in versions])


def statements(store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every statement (and its parameters) the store is sent from here on."""
    sent: list[tuple[str, Any]] = []
    if isinstance(store, EmbeddedStore):
        query = store._query
        monkeypatch.setattr(store, "_query", lambda sql, params=(): (
            sent.append((sql, params)), query(sql, params))[1])
    else:
        read = store._read  # type: ignore[attr-defined]
        monkeypatch.setattr(store, "_read", lambda query, **params: (
            sent.append((query, params)), read(query, **params))[1])
    return sent


def _sent(store: GraphStore, read: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """The last statement (and its parameters) ``read`` sends to the store."""
    sent = statements(store, monkeypatch)
    read()
    return sent[-1]


def _db_hits(store: GraphStore, query: str, params: dict[str, Any]) -> int:
    profile = store._driver.execute_query(  # type: ignore[attr-defined]
        "PROFILE " + query, **params).summary.profile

    def hits(operator: dict[str, Any]) -> int:
        return operator.get("dbHits", 0) + sum(hits(c) for c in operator.get("children", []))
    return hits(profile)


N_BIG = 2000


@pytest.mark.parametrize("read", ["nearest", "later", "history", "history_before"])
def test_a_familys_reads_touch_what_they_return_not_every_version(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch, read: str) -> None:
    _big_family(store, N_BIG)
    middle = T0 + (N_BIG // 2) * HOUR
    before = store.version_sizes(VersionFilter(("DataSource",), "big", family="source:big"),
                                 N_BIG // 2)[0].key
    reads = {
        "nearest": lambda: store.family_versions(["source:big"], count=4, newest=True,
                                                 until=middle, exclude={"x"}),
        "later": lambda: store.family_versions(["source:big"], count=4, newest=False,
                                               since=middle),
        "history": lambda: store.version_sizes(
            VersionFilter(("DataSource",), "big", family="source:big"), 4),
        "history_before": lambda: store.version_sizes(
            VersionFilter(("DataSource",), "big", family="source:big", before=before), 4),
    }
    answer = reads[read]()
    assert len(answer) == 4
    query, params = _sent(store, reads[read], monkeypatch)

    if isinstance(store, EmbeddedStore):
        steps = [row[3] for row in store._conn.execute("EXPLAIN QUERY PLAN " + query, params)]
        index = "nodes_family_version" if read.startswith("history") else "nodes_family_created"
        assert any(index in s for s in steps), steps
        # No edge read; the history's sorts are of what its union keeps (4 rows a side).
        assert not [s for s in steps if "edges" in s or s.startswith("SCAN nodes")], steps
        assert len([s for s in steps if "TEMP B-TREE" in s]) == (
            3 if read.startswith("history") else 0), steps
    else:  # the whole family: ≥ 2 db hits a version, expanding its edges
        assert _db_hits(store, query, params) < 200


def test_a_version_has_one_family_a_second_is_refused_and_nothing_written(
        store: GraphStore) -> None:
    nodes, edges = family_graph()
    store.upsert(nodes, edges)
    other = Edge(source="dataset:wh/a@1", type="VERSION_OF", target="source:wh/b")
    problem = ("edge dataset:wh/a@1 -[VERSION_OF]-> source:wh/b: dataset:wh/a@1 is a "
               "version of source:wh/a, not of source:wh/b: a version has one family")

    with pytest.raises(SchemaError) as refused:
        store.upsert([Node.from_id("source:new", created_at=T0)], [other])
    assert str(refused.value) == problem
    # Two families in one batch: refused before the write.
    fresh = Node.from_id("dataset:wh/c@1", created_at=T0)
    with pytest.raises(SchemaError, match="dataset:wh/c@1 is a version of source:wh/a, not "
                                          "of source:wh/b: a version has one family"):
        store.upsert([fresh], [Edge(source=fresh.id, type="VERSION_OF", target=t)
                               for t in ("source:wh/a", "source:wh/b")])

    assert store.get(["source:new", "dataset:wh/c@1"]) == {}
    assert store.get_edges([other.key]) == {}
    assert ("source:wh/a", "dataset:wh/a@1") in family_rows(store, "source:wh/a")
    assert store.upsert(nodes, edges).changed is False  # the same family again: nothing


def test_a_manifest_giving_a_stored_version_another_source_is_refused_naming_the_record(
        store: GraphStore) -> None:
    load_manifests(read_yaml("""
kind: DataSource
name: wh/a
---
kind: DataSource
name: wh/b
---
kind: DatasetVersion
name: wh/a-copy
version: "1"
source: source:wh/a
"""), store, actor="ci")
    moved = {"kind": "DatasetVersion", "name": "wh/a-copy", "version": "1",
             "source": "source:wh/b"}

    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as client:
        response = client.post("/api/v1/manifests", json=moved)

    assert response.status_code == 400, response.text
    assert [(p.get("field"), p["message"]) for p in response.json()["problems"]] == [(
        "source", "dataset:wh/a-copy@1 is a version of source:wh/a, not of source:wh/b: "
        "a version has one family")]
    assert "record" in response.json()["problems"][0]
    assert family_rows(store, "source:wh/b") == []
    assert family_rows(store, "source:wh/a") == [("source:wh/a", "dataset:wh/a-copy@1")]


def test_the_upsert_mutation_linking_a_version_to_a_second_family_says_which(
        store: GraphStore) -> None:
    nodes, edges = family_graph()
    store.upsert(nodes, edges)
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as client:
        answer = client.post("/graphql", json={"query": """mutation {
            upsert(nodes: [], edges: [{source: "dataset:wh/a@1", type: "VERSION_OF",
                                       target: "source:wh/b"}]) { edges { created } } }"""})

    body = answer.json()
    assert body["data"] == {"upsert": None}
    assert [e["message"] for e in body["errors"]] == [
        "edge dataset:wh/a@1 -[VERSION_OF]-> source:wh/b: dataset:wh/a@1 is a version of "
        "source:wh/a, not of source:wh/b: a version has one family"]
    assert family_rows(store, "source:wh/b") == [
        ("source:wh/b", f"dataset:wh/b@{i}") for i in range(3)]


def test_a_familys_history_reads_its_versions_named_apart_in_version_order(
        store: GraphStore) -> None:
    nodes, edges = family_graph()
    store.upsert(nodes, edges)
    history = registry.history(store, "source:wh/a")
    assert history is not None
    assert {v.id for v in history.versions} == {
        e.source for e in edges if e.target == "source:wh/a"}
