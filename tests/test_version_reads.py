"""Version reads ordered and cut by the store (``GraphStore.read_versions``): the order is
``version_order`` on both stores, and no caller reads a name's versions whole."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph import registry
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.store import (
    REPLACED_BY,
    Direction,
    GraphStore,
    VersionFilter,
    version_key,
    version_order,
)
from lineagegraph.ingest import manifests, openlineage
from lineagegraph.ingest.manifest_formats import read_yaml
from lineagegraph.ingest.manifests import map_manifests
from lineagegraph.schema import Edge, Node

from .ingest_support import client_for
from .openlineage_support import dataset, run_event

T0 = datetime(2024, 1, 1, tzinfo=UTC)

# (version, created_at): numbers of every size and shape, ties on created_at, times before
# 1970 and a microsecond apart, text that only a code-point order sorts right.
TRICKY = [
    ("2", T0), ("10", T0), ("1.9.0", T0), ("1.10.0", T0), ("007", T0), ("7", T0),
    ("1.2.3.4", T0), ("1.2.3", T0), ("1", T0 + timedelta(microseconds=1)), ("1.0", T0),
    ("0", T0), ("00", T0 - timedelta(days=1)), ("v1", T0 - timedelta(hours=1)),
    ("V2", T0), ("v", T0), ("abc", T0), ("abd", T0), ("1a", T0 - timedelta(days=400)),
    ("99999999999999999999999", T0), ("100000000000000000000000", T0 - timedelta(days=9)),
    ("1.", T0), ("1..2", T0), (".1", T0), ("x\U0001f600", T0), ("x\uffff", T0),
    ("old", datetime(1960, 6, 1, 12, 0, 0, 500, tzinfo=UTC)),
    ("older", datetime(1960, 6, 1, 12, 0, 0, 499, tzinfo=UTC)),
    ("run-b", T0 + timedelta(milliseconds=1)), ("run-a", T0 + timedelta(milliseconds=1)),
]


def _old_order(node: Node) -> tuple[int, tuple[int, ...], float, str]:
    """``version_order`` as it was defined before the stores computed it (tuples)."""
    version = node.version or ""
    dotted = re.fullmatch(r"[vV]?(\d+(?:\.\d+)*)", version)
    if dotted:
        numbers = tuple(int(part) for part in dotted.group(1).split("."))
        return (0, numbers, node.created_at.timestamp(), version)
    return (1, (), node.created_at.timestamp(), version)


def tricky_nodes(kind: str = "Toolset", name: str = "t") -> list[Node]:
    # ``v1`` is made ``1`` (``normalize_version``): the last of an ID is kept, as upsert does.
    nodes = (Node(kind=kind, name=name, version=v, created_at=at) for v, at in TRICKY)
    return list({n.id: n for n in nodes}.values())


def test_version_key_orders_as_the_tuples_it_replaced() -> None:
    nodes = tricky_nodes()
    assert ([n.version for n in sorted(nodes, key=version_order)]
             == [n.version for n in sorted(nodes, key=_old_order)])


def test_version_key_reads_only_ascii_digits_as_numbers() -> None:
    # Java's \d (Neo4j's =~) is ASCII: Python's took Arabic-Indic digits for numbers too.
    assert version_key("\u0663", T0).startswith("1!")
    assert version_key("3", T0).startswith("00001")


def test_store_orders_versions_as_version_order(store: GraphStore) -> None:
    nodes = tricky_nodes()
    store.upsert(nodes)

    read = store.versions("Toolset", "t", last=len(nodes))
    rows = store.version_sizes(VersionFilter(("Toolset",), "t"), len(nodes))

    expected = sorted(nodes, key=version_order)
    assert [n.version for n in read] == [n.version for n in expected]
    assert [row.key for row in rows] == [version_order(n) for n in expected]
    assert [row.chars for row in rows] == [n.props_chars for n in expected]


def test_store_pages_versions_back_from_a_key_with_no_gap_or_overlap(
        store: GraphStore) -> None:
    nodes = tricky_nodes()
    store.upsert(nodes)

    pages: list[list[Node]] = []
    before = None
    while True:
        page = store.versions("Toolset", "t", last=4, before=before)
        pages.insert(0, page)
        if len(page) < 4:
            break
        before = version_order(page[0])

    assert ([n.version for page in pages for n in page]
            == [n.version for n in sorted(nodes, key=version_order)])


def test_store_reads_whole_numbers_and_leaves_excluded_versions_out(
        store: GraphStore) -> None:
    nodes = tricky_nodes()
    store.upsert(nodes)

    whole = store.versions("Toolset", "t", last=100, whole_numbers=True)
    newest = store.versions("Toolset", "t", last=2, exclude={"tools:t@run-b"})

    assert [n.version for n in whole] == [n.version for n in sorted(
        (n for n in nodes if n.version and n.version.isascii() and n.version.isdigit()),
        key=version_order)]
    assert [n.version for n in newest] == ["x\U0001f600", "run-a"]


def _plan_steps(store: GraphStore, where: VersionFilter, monkeypatch: pytest.MonkeyPatch
                ) -> list[str]:
    """The steps the store plans for ``version_sizes(where)``: SQLite's query plan, or the
    operators of Neo4j's plan for the statement the store sends."""
    if isinstance(store, EmbeddedStore):
        sql, params = store._versions_sql(where, 3)
        return [row[3] for row in store._conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    sent: list[tuple[str, dict[str, Any]]] = []
    rows = store._rows  # type: ignore[attr-defined]
    monkeypatch.setattr(store, "_rows", lambda query, **params: (
        sent.append((query, params)), rows(query, **params))[1])
    store.version_sizes(where, 3)
    query, params = sent[-1]
    plan = store._driver.execute_query(  # type: ignore[attr-defined]
        "EXPLAIN " + query, **params).summary.plan

    def steps(operator: dict[str, Any]) -> list[str]:
        return [f"{operator['operatorType']} {operator.get('args', {}).get('Details', '')}",
                *(s for child in operator.get("children", []) for s in steps(child))]
    return steps(plan)


@pytest.mark.parametrize("before", [None, "0"])
def test_a_names_last_versions_are_read_from_the_key_index_not_sorted_whole(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch, before: str | None) -> None:
    store.upsert(tricky_nodes())
    where = VersionFilter(("Toolset",), "t", before=before and version_key("9", T0))

    steps = _plan_steps(store, where, monkeypatch)

    assert any("nodes_version" in s or "(name, version_key)" in s for s in steps), steps
    assert not [s for s in steps if "TEMP B-TREE" in s or s.split("@")[0].endswith(
        ("Sort", "Top"))], steps


def test_a_kept_version_dated_back_takes_its_place_in_version_order(
        store: GraphStore) -> None:
    # A model first seen in traffic (kept if stored: ``keep_stored``) at a time before the
    # stored one: its version's key goes back with it; a later time changes nothing.
    day = timedelta(days=1)
    store.upsert([Node(kind="ModelVersion", name="m", version=v, created_at=T0 + at * day)
                  for v, at in [("a", 2), ("b", 1), ("c", 3)]])

    store.write(store.prepare([Node(kind="ModelVersion", name="m", version="a", created_at=T0),
                               Node(kind="ModelVersion", name="m", version="b",
                                    created_at=T0 + 5 * day)],
                              keep_stored=["model:m@a", "model:m@b"]))

    rows = store.version_sizes(VersionFilter(("ModelVersion",), "m"), 5)
    assert [n.version for n in store.versions("ModelVersion", "m", last=5)] == ["a", "b", "c"]
    assert [row.key for row in rows] == [version_key("a", T0), version_key("b", T0 + day),
                                         version_key("c", T0 + 3 * day)]


# -- history: the newest versions, paged back ---------------------------------------------------

HISTORY = ('query($id: ID!, $before: String) { history(id: $id, versionsBefore: $before) '
           '{ versions { version } versionsCursor } }')


def _history(client: TestClient, node_id: str, before: str | None = None) -> dict[str, Any]:
    answer = client.post("/graphql", json={"query": HISTORY, "variables": {
        "id": node_id, "before": before}}).json()
    assert "errors" not in answer, answer
    return answer


def test_history_answers_the_newest_versions_and_pages_back_to_the_rest(
        store: GraphStore) -> None:
    store.upsert([Node(kind="Feature", name="f", version=str(v),
                       created_at=T0 + timedelta(minutes=v)) for v in range(1, 1201)])

    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as client:
        first = _history(client, "feature:f@1")
        cursor = first["data"]["history"]["versionsCursor"]
        rest = _history(client, "feature:f@1", cursor)
        refused = client.post("/graphql", json={"query": HISTORY, "variables": {
            "id": "feature:f@1", "before": "bm90IGEga2V5"}}).json()

    newest = [v["version"] for v in first["data"]["history"]["versions"]]
    earlier = [v["version"] for v in rest["data"]["history"]["versions"]]
    assert newest == [str(v) for v in range(201, 1201)]
    (warning,) = first["extensions"]["warnings"]
    assert "the newest 1,000 of at most 1,000" in warning["message"]
    assert earlier + newest == [str(v) for v in range(1, 1201)]
    assert rest["data"]["history"]["versionsCursor"] is None
    assert "versionsBefore" in refused["errors"][0]["message"]


def test_a_sources_history_pages_its_dataset_versions_in_version_order(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "HISTORY_VERSIONS", 3)
    versions = [Node(kind="DatasetVersion", name=f"part-{i % 2}", version=v,
                     created_at=T0 + timedelta(hours=i))
                for i, v in enumerate(["run-a", "20240101", "run-b", "run-c", "7", "run-d"])]
    store.upsert([Node.from_id("source:s", created_at=T0), *versions],
                 [Edge(source=v.id, type="VERSION_OF", target="source:s") for v in versions])

    pages: list[list[str]] = []
    before = None
    while True:
        found = registry.history(store, "source:s", before)
        assert found is not None
        pages.insert(0, [v.id for v in found.versions])
        if found.earlier is None:
            break
        before = found.earlier

    assert [len(page) for page in pages] == [3, 3]
    assert [i for page in pages for i in page] == [
        v.id for v in sorted(versions, key=version_order)]


# -- the ingest callers: one version, or a few, read ------------------------------------------


def _load(store: GraphStore, text: str) -> None:
    map_manifests(read_yaml(text), store, actor="test").write(store)


def _supersedes(store: GraphStore, node_id: str) -> set[str]:
    return {hop.node.id for hop in store.expand([node_id], Direction.UPSTREAM,
                                                edge_types=["SUPERSEDES"])}


def test_a_default_version_follows_the_greatest_whole_number_not_the_latest_version(
        store: GraphStore) -> None:
    # 3.1 and beta come after 3 in version order: previous + 1 counts whole numbers.
    store.upsert([Node(kind="Toolset", name="t", version=v, created_at=T0 + timedelta(hours=i),
                       properties={"tools": [v]})
                  for i, v in enumerate([*map(str, range(1, 13)), "3.1", "beta"])])

    _load(store, "kind: Toolset\nname: t\ntools: [new]\n")

    found = store.versions("Toolset", "t", last=3)
    assert [n.version for n in found] == ["12", "13", "beta"]
    assert _supersedes(store, "tools:t@13") == {"tools:t@12"}


def test_a_new_version_supersedes_the_one_just_before_it_in_version_order(
        store: GraphStore) -> None:
    store.upsert([Node(kind="Toolset", name="t", version=v, created_at=T0,
                       properties={"tools": [v]}) for v in ["1", "2", "3", "3.1", "10"]])

    _load(store, "kind: Toolset\nname: t\nversion: 3.2\ntools: [x]\n---\n"
                 "kind: Toolset\nname: t\nversion: 3.5\ntools: [y]\n")

    assert _supersedes(store, "tools:t@3.2") == {"tools:t@3.1"}
    assert _supersedes(store, "tools:t@3.5") == {"tools:t@3.2"}


def test_a_version_a_load_names_twice_supersedes_the_one_before_its_written_copy(
        store: GraphStore) -> None:
    # Two entries of one version, one dated and one not: the dated copy is written, and
    # the version before it is found from there — never the version itself.
    store.upsert([Node(kind="Toolset", name="t", version="1", created_at=T0,
                       properties={"tools": ["1"]}),
                  Node(kind="Toolset", name="n", version="a", created_at=T0 + timedelta(days=1),
                       properties={"tools": ["a"]})])

    _load(store, "kind: Toolset\nname: t\nversion: 2\ntools: [x]\n"
                 "created_at: 2024-01-05T00:00:00Z\n---\n"
                 "kind: Toolset\nname: t\nversion: 2\ntools: [x]\n---\n"
                 "kind: Toolset\nname: n\nversion: c\ntools: [y]\n"
                 "created_at: 2023-12-01T00:00:00Z\n---\n"
                 "kind: Toolset\nname: n\nversion: c\ntools: [y]\n")

    assert _supersedes(store, "tools:t@2") == {"tools:t@1"}
    assert _supersedes(store, "tools:n@c") == set()  # dated before n@a


@pytest.mark.parametrize("window", [3, manifests.VERSION_WINDOW])
def test_the_version_before_is_found_in_and_past_the_stored_window(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch, window: int) -> None:
    # A load reads a name's last VERSION_WINDOW stored versions once; one before them all
    # is asked for apart. The load's own versions stand for their stored twins.
    monkeypatch.setattr(manifests, "VERSION_WINDOW", window)
    store.upsert([Node(kind="Toolset", name="t", version=str(v), created_at=T0,
                       properties={"tools": [str(v)]}) for v in range(1, 11)])

    _load(store, "kind: Toolset\nname: t\nversion: 2.5\ntools: [a]\n---\n"
                 "kind: Toolset\nname: t\nversion: 9.5\ntools: [b]\n---\n"
                 "kind: Toolset\nname: t\nversion: 10\ntools: ['10']\n---\n"
                 "kind: Toolset\nname: t\nversion: 9\ntools: ['9']\n---\n"
                 "kind: Toolset\nname: t\nversion: 11\ntools: [c]\n")

    assert _supersedes(store, "tools:t@2.5") == {"tools:t@2"}  # past a window of 3
    assert _supersedes(store, "tools:t@9.5") == {"tools:t@9"}  # the load's own 9
    assert _supersedes(store, "tools:t@10") == {"tools:t@9.5"}
    assert _supersedes(store, "tools:t@11") == {"tools:t@10"}


@pytest.mark.parametrize("page", [3, openlineage._MODEL_PAGE])
def test_an_event_reading_a_model_unversioned_reads_its_newest_unreplaced_version(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch, page: int) -> None:
    # Replaced placeholders are newest in version order (run IDs sort after numbers): more
    # of them than one read holds, at a page of 3; at the default page, one sorting read.
    monkeypatch.setattr(openlineage, "_MODEL_PAGE", page)
    placeholders = [Node(kind="ModelVersion", name="m", version=f"run-{i:02d}",
                         created_at=T0 + timedelta(days=1, minutes=i),
                         properties={REPLACED_BY: "model:m@3"}) for i in range(20)]
    store.upsert([Node.from_id("model:m", created_at=T0), *placeholders,
                  *(Node(kind="ModelVersion", name="m", version=str(v), created_at=T0)
                    for v in range(1, 4))])
    model = dataset("mlflow", "m", datasetType={"datasetType": "MODEL"})
    sorts: list[int] = []
    sizes = store.version_sizes

    def counted(where: VersionFilter, last: int) -> Any:
        sorts.append(last)
        return sizes(where, last)

    monkeypatch.setattr(store, "version_sizes", counted)
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as client:
        response = client.post("/api/v1/lineage", json=run_event(
            "COMPLETE", at=T0 + timedelta(days=2), inputs=[model],
            outputs=[dataset("warehouse", "scores")]))

    assert response.status_code < 300, response.text
    (run,) = store.find(kinds=["TrainingRun"])
    assert run.properties["model_inputs"] == ["model:m@3"]
    assert len(sorts) == -(-21 // page), sorts  # pages to reach m@3 past 20 placeholders


def test_an_outcome_naming_a_model_family_is_told_its_latest_version(
        store: GraphStore) -> None:
    store.upsert([Node.from_id("model:m", created_at=T0),
                  *(Node(kind="ModelVersion", name="m", version=v, created_at=T0)
                    for v in [*map(str, range(1, 13)), "2.5"])])

    with client_for(store) as client:
        response = client.post("/api/v1/outcomes", json=[{
            "request_id": "r1", "timestamp": T0.isoformat(), "environment": "production",
            "model": "m"}])

    assert response.status_code == 400, response.text
    assert "name one, such as m@12" in response.json()["problems"][0]["message"]
