"""Paged `lineage`: pages that together are the unpaged answer, `kinds` that do not spend the
node cap on nodes they drop, and a `truncated` flag that is the same on every page."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph.store import GraphStore
from lineagegraph.schema import Edge, Node

from .test_api import LINEAGE, gql

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _client(store: GraphStore, **settings: Any) -> TestClient:
    return TestClient(create_app(Settings(neo4j_uri=None, **settings), store=store))


def _features(store: GraphStore, count: int, edges: list[tuple[int, int]]) -> list[str]:
    ids = [f"feature:f{i}@1" for i in range(count)]
    store.upsert([Node.from_id(i, created_at=T0) for i in ids],
                 [Edge(source=ids[s], type="DERIVED_FROM", target=ids[t]) for s, t in edges])
    return ids


def _pages(client: TestClient, first: int, **args: Any) -> Iterator[dict[str, Any]]:
    after = None
    while True:
        page = gql(client, LINEAGE, first=first, after=after, **args)["data"]["lineage"]
        yield page
        if not page["pageInfo"]["hasNextPage"]:
            return
        after = page["pageInfo"]["endCursor"]


def _edges(subgraph: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(e["source"], e["type"], e["target"]) for e in subgraph["edges"]]


def _degrees(subgraph: dict[str, Any]) -> dict[str, int]:
    return {n["node"]["id"]: n["degree"] for n in subgraph["nodes"]}


def test_the_pages_of_a_lineage_hold_every_edge_of_the_walk_once(store: GraphStore) -> None:
    # f3 (degree 2) leads back to f2 (degree 1): that edge is read expanding f3, a hop past
    # f3's own degree, and belongs on f3's page (the later of its ends).
    ids = _features(store, 6, [(0, 1), (0, 2), (1, 3), (1, 5), (3, 2), (5, 4)])
    args = {"id": ids[0], "direction": "UPSTREAM", "depth": 3}
    with _client(store) as client:
        whole = gql(client, LINEAGE, **args)["data"]["lineage"]
        assert (ids[3], "DERIVED_FROM", ids[2]) in _edges(whole)
        for first in (1, 2, 3, 5):
            pages = list(_pages(client, first, **args))
            edges = [e for page in pages for e in _edges(page)]

            assert sorted(edges) == sorted(_edges(whole)), first  # all of them, none twice
            assert {i: d for p in pages for i, d in _degrees(p).items()} == _degrees(whole)


def test_a_page_walks_one_hop_past_its_deepest_node_and_no_further(store: GraphStore) -> None:
    # The page [f3]: f5 (degree 2 too) fills it at hop 2, but f3 -> f2 is read at hop 3.
    ids = _features(store, 10, [(0, 1), (0, 2), (1, 3), (1, 5), (3, 2)]
                    + [(i, i + 1) for i in range(5, 9)])
    from .test_query_limits import CountingStore

    counting = CountingStore(store)
    with _client(counting) as client:  # type: ignore[arg-type]
        before = gql(client, LINEAGE, id=ids[0], depth=9, first=3)["data"]["lineage"]
        counting.calls.clear()
        page = gql(client, LINEAGE, id=ids[0], depth=9, first=1,
                   after=before["pageInfo"]["endCursor"])["data"]["lineage"]

    assert _degrees(page) == {ids[3]: 2}
    assert sorted(_edges(page)) == [(ids[1], "DERIVED_FROM", ids[3]),
                                    (ids[3], "DERIVED_FROM", ids[2])]
    assert counting.calls["expand"] == 3  # hops 1..3 of 9


def test_kinds_without_requests_do_not_spend_the_node_cap_on_them(store: GraphStore) -> None:
    # A model called directly by more requests than the node cap: the bundle that pins it
    # is still there for `kinds: [Bundle]`, and nothing the filter keeps was cut.
    model, bundle = "model:m@1", "bundle:b@1"
    outcomes = [f"outcome:r{i:03d}" for i in range(30)]
    store.upsert(
        [Node.from_id(model, created_at=T0), Node.from_id(bundle, created_at=T0)]
        + [Node.from_id(o, created_at=T0 + timedelta(seconds=i),
                        properties={"environment": "production"})
           for i, o in enumerate(outcomes)],
        [Edge(source=bundle, type="USES_MODEL", target=model)]
        + [Edge(source=o, type="USED_MODEL", target=model) for o in outcomes])
    args = {"id": model, "direction": "DOWNSTREAM", "depth": 2, "kinds": ["Bundle"]}
    with _client(store, max_nodes=10) as client:
        whole = gql(client, LINEAGE, **args)["data"]["lineage"]
        pages = list(_pages(client, 1, **args))
        requests = gql(client, LINEAGE, id=model, direction="DOWNSTREAM", depth=1,
                       kinds=["InferenceOutcome"])["data"]["lineage"]

    assert _degrees(whole) == {model: 0, bundle: 1}
    assert _edges(whole) == [(bundle, "USES_MODEL", model)]
    assert whole["truncated"] is False
    assert [_degrees(p) for p in pages] == [{model: 0}, {bundle: 1}]
    assert [p["truncated"] for p in pages] == [False, False]
    # Asked for, requests are walked and the cap cuts them (the bundle is walked too, so
    # the cap's ten nodes hold nine or ten requests, as the store's row order has it).
    shown = [n["node"] for n in requests["nodes"] if n["degree"] > 0]
    assert requests["truncated"] is True and 8 <= len(shown) <= 9
    assert {n["kind"] for n in shown} == {"InferenceOutcome"}


def test_kinds_skip_what_leads_only_to_dropped_leaves_further_down(store: GraphStore) -> None:
    # Requests hang off the model and the bundle: neither is walked for `kinds: [Bundle]`
    # from the data source, four hops up.
    ids = ["source:s", "dataset:s@1", "run:r1", "model:m@1", "bundle:b@1"]
    edges = [Edge(source=ids[1], type="VERSION_OF", target=ids[0]),
             Edge(source=ids[2], type="CONSUMED", target=ids[1]),
             Edge(source=ids[3], type="PRODUCED_BY", target=ids[2]),
             Edge(source=ids[4], type="USES_MODEL", target=ids[3])]
    nodes = [Node.from_id(i, created_at=T0) for i in ids]
    for i in range(20):
        for target, edge_type in ((ids[3], "USED_MODEL"), (ids[4], "SERVED_BY")):
            request = f"outcome:{edge_type.lower()}-{i:02d}"
            nodes.append(Node.from_id(request, created_at=T0,
                                      properties={"environment": "production"}))
            edges.append(Edge(source=request, type=edge_type, target=target))
    store.upsert(nodes, edges)
    with _client(store, max_nodes=8) as client:
        found = gql(client, LINEAGE, id=ids[0], direction="DOWNSTREAM", depth=6,
                    kinds=["Bundle"])["data"]["lineage"]

    assert _degrees(found) == {ids[0]: 0, ids[4]: 4}
    assert found["truncated"] is False


def test_every_page_of_a_walk_cut_by_the_depth_cap_says_so(store: GraphStore) -> None:
    chain = _features(store, 7, [(i, i + 1) for i in range(6)])
    with _client(store, max_depth=3) as client:
        cut = [p["truncated"] for p in _pages(client, 1, id=chain[0], depth=5)]
        whole = [p["truncated"] for p in _pages(client, 1, id=chain[3], depth=5)]
        unpaged = gql(client, LINEAGE, id=chain[0], depth=5)["data"]["lineage"]

    assert unpaged["truncated"] is True
    assert cut == [True] * 4  # f0..f3: f4, past the cap, is there
    assert whole == [False] * 4  # from f3, f6 is 3 hops up: the cap cut nothing


def test_the_last_page_of_a_walk_cut_by_the_node_cap_says_so(store: GraphStore) -> None:
    # A page walks only as far as it needs, so a node-cap cut may first show on a later
    # page; the last page's walk is the whole walk, and says what the unpaged answer says.
    ids = _features(store, 12, [(0, i) for i in range(1, 6)] + [(1, i) for i in range(6, 12)])
    with _client(store, max_nodes=8) as client:
        unpaged = gql(client, LINEAGE, id=ids[0], depth=3)["data"]["lineage"]
        pages = list(_pages(client, 2, id=ids[0], depth=3))

    assert unpaged["truncated"] is True
    assert pages[-1]["truncated"] is True
    assert [n for p in pages for n in _degrees(p)] == list(_degrees(unpaged))


def test_a_page_stops_at_its_characters_of_properties_and_the_next_goes_on(
    store: GraphStore,
) -> None:
    # Twenty sources of 600 kB of properties each: an unpaged answer held 12 MB, and the
    # node cap (10,000) would let one hold gigabytes. A page stops at PAGE_CHARS (8 Mi).
    from lineagegraph.graph.store import PAGE_CHARS

    blob = "x" * 600_000
    ids = [f"feature:f{i}@1" for i in range(21)]
    store.upsert([Node.from_id(i, created_at=T0, properties={"blob": blob} if n else {})
                  for n, i in enumerate(ids)],
                 [Edge(source=ids[0], type="DERIVED_FROM", target=i) for i in ids[1:]])
    args = {"id": ids[0], "direction": "UPSTREAM", "depth": 1}
    with _client(store) as client:
        first = gql(client, LINEAGE, **args)
        pages = [first["data"]["lineage"]]
        while pages[-1]["pageInfo"]["hasNextPage"]:
            pages.append(gql(client, LINEAGE, after=pages[-1]["pageInfo"]["endCursor"],
                             **args)["data"]["lineage"])

    shown = [len(page["nodes"]) for page in pages]
    assert shown == [14, 7]  # the root and 13 sources fit in 8 Mi; the rest next
    assert all(sum(len(n["node"]["properties"].get("blob", "")) for n in page["nodes"])
               <= PAGE_CHARS for page in pages)
    assert sorted(n["node"]["id"] for page in pages for n in page["nodes"]) == sorted(ids)
    assert sorted(e for page in pages for e in _edges(page)) == sorted(
        (ids[0], "DERIVED_FROM", i) for i in ids[1:])  # each edge once
    (warning,) = first["extensions"]["warnings"]
    assert warning["path"] == ["lineage"]
    assert pages[0]["pageInfo"]["endCursor"] in warning["message"]


def test_history_keeps_the_newest_versions_that_fit_a_page_and_pages_back_to_the_rest(
    store: GraphStore,
) -> None:
    blob = "x" * 600_000
    store.upsert([Node.from_id(f"feature:f@{v}", created_at=T0 + timedelta(minutes=v),
                               properties={"blob": blob}) for v in range(1, 21)])
    query = ('query($before: String) { history(id: "feature:f@1", versionsBefore: $before) '
             '{ versions { version } versionsCursor } }')
    with _client(store) as client:
        answer = client.post("/graphql", json={"query": query}).json()
        cursor = answer["data"]["history"]["versionsCursor"]
        rest = client.post("/graphql", json={"query": query,
                                             "variables": {"before": cursor}}).json()

    versions = [v["version"] for v in answer["data"]["history"]["versions"]]
    assert versions == [str(v) for v in range(8, 21)]  # the newest 13 × 600 kB fit in 8 Mi
    (warning,) = answer["extensions"]["warnings"]
    assert "the newest 13 that fit" in warning["message"] and warning["path"] == ["history"]
    assert [v["version"] for v in rest["data"]["history"]["versions"]] == [
        str(v) for v in range(1, 8)]
    assert rest["data"]["history"]["versionsCursor"] is None
    assert "warnings" not in rest.get("extensions", {})
