"""The GraphStore contract: the same tests, unchanged, against the embedded store and a
real Neo4j (see ``conftest.store``)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from lineagegraph.graph.impact import blast_radius
from lineagegraph.graph.store import (
    ORIGIN,
    Direction,
    GraphStore,
    Hop,
    RecordFilter,
    SideHop,
    StageMoved,
    Tally,
)
from lineagegraph.graph.traffic import OUTCOME_EDGES
from lineagegraph.graph.walk import HOPS_AHEAD, WalkLimits, walk
from lineagegraph.schema import AuditEntry, Edge, Node, Record, SchemaError, StageMove

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def node(node_id: str, kind: str | None = None, at: datetime = T0, **props: object) -> Node:
    return Node.from_id(node_id, kind=kind, created_at=at, properties=props)


def edge(source: str, edge_type: str, target: str, **props: object) -> Edge:
    return Edge(source=source, type=edge_type, target=target, properties=props)


def all_ids(store: GraphStore, start: str) -> set[str]:
    return set(walk(store, start, Direction.BOTH, 20).nodes)


# -- upsert ---------------------------------------------------------------------------------


def test_upserting_the_same_batch_twice_changes_nothing(store: GraphStore) -> None:
    nodes = [node("source:wh.payments", owner="data-eng"),
             node("dataset:wh.payments@2026-11-15", row_count=10)]
    edges = [edge("dataset:wh.payments@2026-11-15", "VERSION_OF", "source:wh.payments")]

    first = store.upsert(nodes, edges)
    second = store.upsert(nodes, edges)

    assert (first.nodes.created, first.edges.created) == (2, 1)
    assert (second.nodes.created, second.nodes.updated, second.nodes.unchanged) == (0, 0, 2)
    assert (second.edges.created, second.edges.updated, second.edges.unchanged) == (0, 0, 1)
    assert not second.changed
    assert store.get(["source:wh.payments"])["source:wh.payments"].properties == {
        "owner": "data-eng"}


def test_changed_properties_count_as_updated_and_keep_created_at(store: GraphStore) -> None:
    store.upsert([node("source:wh.payments", owner="a")])
    later = T0 + timedelta(days=3)
    result = store.upsert([node("source:wh.payments", at=later, owner="b")])

    stored = store.get(["source:wh.payments"])["source:wh.payments"]
    assert (result.nodes.created, result.nodes.updated) == (0, 1)
    assert stored.properties == {"owner": "b"}
    assert stored.created_at == T0


@pytest.mark.parametrize("at", [
    datetime(2026, 11, 1, 12, 30, 15, 123456, tzinfo=UTC),  # microseconds kept
    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # before the epoch
    datetime(1900, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
    datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC),
])
def test_created_at_comes_back_to_the_microsecond(store: GraphStore, at: datetime) -> None:
    # Trusted: ingest refuses a time in the future (schema.bounds.FUTURE_SKEW), but the
    # stores keep any time a node holds, to the edge of what Neo4j's nanoseconds reach.
    store.upsert([Node.trusted("DataSource", "wh.payments", None, at, {})])

    assert store.get(["source:wh.payments"])["source:wh.payments"].created_at == at


def test_times_before_the_year_1000_order_as_times(store: GraphStore) -> None:
    early, late = datetime(999, 6, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    store.upsert([node("dataset:wh.payments@early", at=early),
                  node("dataset:wh.payments@late", at=late), node("source:wh.payments")],
                 [Edge(source=f"dataset:wh.payments@{v}", type="VERSION_OF",
                       target="source:wh.payments") for v in ("early", "late")])

    after = store.expand(["source:wh.payments"], Direction.DOWNSTREAM,
                         since=datetime(1000, 1, 1, tzinfo=UTC))

    assert [hop.node.id for hop in after] == ["dataset:wh.payments@late"]


def test_get_returns_only_known_ids_with_kind_and_version(store: GraphStore) -> None:
    store.upsert([node("model:fraud-detector@7", region="eu"),
                  node("model:gpt-5-mini-2026-08", kind="ModelVersion")])

    found = store.get(["model:fraud-detector@7", "model:gpt-5-mini-2026-08", "model:nope@1"])

    assert set(found) == {"model:fraud-detector@7", "model:gpt-5-mini-2026-08"}
    assert found["model:fraud-detector@7"].kind == "ModelVersion"
    assert found["model:fraud-detector@7"].version == "7"
    assert found["model:gpt-5-mini-2026-08"].kind == "ModelVersion"
    assert found["model:gpt-5-mini-2026-08"].version is None


def test_edge_between_kinds_the_schema_forbids_is_rejected(store: GraphStore) -> None:
    with pytest.raises(SchemaError, match="USES_MODEL cannot go from a Feature"):
        store.upsert([node("feature:txn_amount_7d@2"), node("model:fraud-detector@7")],
                     [edge("feature:txn_amount_7d@2", "USES_MODEL", "model:fraud-detector@7")])

    assert store.get(["feature:txn_amount_7d@2", "model:fraud-detector@7"]) == {}


def test_edge_to_an_unknown_node_names_it_and_writes_nothing(store: GraphStore) -> None:
    with pytest.raises(SchemaError, match="prompt:triage@9 is neither in the graph"):
        store.upsert([node("bundle:support-triage@14")],
                     [edge("bundle:support-triage@14", "USES_PROMPT", "prompt:triage@9")])

    assert store.get(["bundle:support-triage@14"]) == {}


def test_a_batch_failing_after_thousands_of_node_rows_leaves_nothing_written(
    store: GraphStore,
) -> None:
    # More rows than one UNWIND chunk, so the failure comes after several round trips of
    # writes inside the transaction.
    outcomes = [node(f"outcome:req-{i}", environment="production") for i in range(6000)]
    bundle = node("bundle:support-triage@14")
    bad = [edge(f"outcome:req-{i}", "SERVED_BY", bundle.id) for i in range(10)]
    bad.append(edge("outcome:req-1", "SERVED_BY", "bundle:missing@1"))

    with pytest.raises(SchemaError, match="bundle:missing@1"):
        store.upsert([bundle, *outcomes], bad)

    assert store.get([bundle.id, "outcome:req-0", "outcome:req-5999"]) == {}


def test_an_id_cannot_change_kind(store: GraphStore) -> None:
    store.upsert([node("model:gpt-5-mini", kind="Model", owner="ml")])
    before = store.get(["model:gpt-5-mini"])
    # The batch's nodes are written before their kinds are checked: the conflict must
    # roll back the whole transaction, the other node and the new properties included.
    with pytest.raises(SchemaError, match="already exists as a Model"):
        store.upsert([node("run:r1"),
                      node("model:gpt-5-mini", kind="ModelVersion", owner="someone else")])

    assert store.get(["model:gpt-5-mini", "run:r1"]) == before


def test_a_request_is_served_once_in_a_batch_and_across_batches(store: GraphStore) -> None:
    bundles = [node("bundle:b@1"), node("bundle:b@2"), node("feature:f@1"),
               node("feature:g@1")]
    store.upsert(bundles)
    with pytest.raises(SchemaError, match="outcome:req-1: served by both bundle:b@1 and "
                                          "bundle:b@2: a request is served once"):
        store.upsert([node("outcome:req-1", environment="production")],
                     [edge("outcome:req-1", "SERVED_BY", "bundle:b@1"),
                      edge("outcome:req-1", "SERVED_BY", "bundle:b@2")])
    assert store.get(["outcome:req-1"]) == {}

    # Served once, reading two features: fine, and so is re-sending it.
    served = [edge("outcome:req-1", "SERVED_BY", "bundle:b@1"),
              edge("outcome:req-1", "USED_FEATURE", "feature:f@1"),
              edge("outcome:req-1", "USED_FEATURE", "feature:g@1")]
    store.upsert([node("outcome:req-1", environment="production")], served)
    store.upsert([], served)
    # A second bundle added later is refused the same way, and nothing of it is written.
    with pytest.raises(SchemaError, match="outcome:req-1: served by both"):
        store.upsert([], [edge("outcome:req-1", "SERVED_BY", "bundle:b@2")])

    assert [h.node.id for h in store.expand(["outcome:req-1"], Direction.UPSTREAM,
                                            edge_types=["SERVED_BY"])] == ["bundle:b@1"]


# -- expansion and walks ----------------------------------------------------------------------


def _diamond(store: GraphStore) -> None:
    """feature:f@1 is derived from two datasets, both versions of one source."""
    store.upsert(
        [node("source:wh.a"), node("dataset:wh.a@1"), node("dataset:wh.a@2"),
         node("feature:f@1"), node("run:r1"), node("model:m@1")],
        [edge("dataset:wh.a@1", "VERSION_OF", "source:wh.a"),
         edge("dataset:wh.a@2", "VERSION_OF", "source:wh.a"),
         edge("feature:f@1", "DERIVED_FROM", "dataset:wh.a@1"),
         edge("feature:f@1", "DERIVED_FROM", "dataset:wh.a@2"),
         edge("run:r1", "CONSUMED", "feature:f@1"),
         edge("model:m@1", "PRODUCED_BY", "run:r1")],
    )


def test_expand_follows_out_edges_upstream_and_in_edges_downstream(store: GraphStore) -> None:
    _diamond(store)

    up = store.expand(["feature:f@1"], Direction.UPSTREAM)
    down = store.expand(["feature:f@1"], Direction.DOWNSTREAM)
    both = store.expand(["feature:f@1"], Direction.BOTH)

    assert {h.node.id for h in up} == {"dataset:wh.a@1", "dataset:wh.a@2"}
    assert {h.node.id for h in down} == {"run:r1"}
    assert {h.node.id for h in both} == {"dataset:wh.a@1", "dataset:wh.a@2", "run:r1"}
    assert all(h.origin == "feature:f@1" for h in both)
    assert {h.edge.key for h in down} == {("run:r1", "CONSUMED", "feature:f@1")}


def test_nearest_reads_each_frontier_node_s_first_neighbours_by_creation(
        store: GraphStore) -> None:
    hour = timedelta(hours=1)
    versions = {"source:a": [("dataset:a@1", T0), ("dataset:a@2", T0 + hour),
                             ("dataset:a@3", T0 + hour), ("dataset:a@4", T0 + 3 * hour)],
                "source:b": [("dataset:b@1", T0 + 2 * hour)]}
    store.upsert([node("source:a"), node("source:b")]
                 + [node(v, at=at) for vs in versions.values() for v, at in vs],
                 [Edge(source=v, type="VERSION_OF", target=s)
                  for s, vs in versions.items() for v, _ in vs])

    def nearest(**how: object) -> list[tuple[str, str]]:
        rows = store.nearest(["source:a", "source:b"], Direction.DOWNSTREAM,
                             edge_types=["VERSION_OF"], **how)
        return sorted((row.origin, row.node.id) for row in rows)

    assert nearest(count=2, newest=True) == [
        ("source:a", "dataset:a@3"), ("source:a", "dataset:a@4"), ("source:b", "dataset:b@1")]
    # Equal times: by ID, the greater the newer.
    assert nearest(count=1, newest=True, until=T0 + 2 * hour) == [
        ("source:a", "dataset:a@3"), ("source:b", "dataset:b@1")]
    assert nearest(count=1, newest=False, since=T0 + hour) == [
        ("source:a", "dataset:a@2"), ("source:b", "dataset:b@1")]
    assert nearest(count=1, newest=True, exclude={"dataset:a@4", "dataset:b@1"}) == [
        ("source:a", "dataset:a@3")]
    assert nearest(count=1, newest=True, node_kinds=["ModelVersion"]) == []
    # Per edge type: the first ``count`` over each.
    store.upsert([node("feature:f@1", at=T0 + 5 * hour)],
                 [Edge(source="feature:f@1", type="DERIVED_FROM", target="source:a")])
    both = store.nearest(["source:a"], Direction.DOWNSTREAM, count=1, newest=True,
                         edge_types=["VERSION_OF", "DERIVED_FROM"])
    assert sorted((row.edge.type, row.node.id) for row in both) == [
        ("DERIVED_FROM", "feature:f@1"), ("VERSION_OF", "dataset:a@4")]


def test_expand_filters_by_edge_type_kind_and_time(store: GraphStore) -> None:
    store.upsert(
        [node("bundle:b@1"), *[node(f"outcome:r{i}", at=T0 + timedelta(hours=i),
                                    environment="production") for i in range(5)],
         node("approval:a1", approved_by="zyql")],
        [*[edge(f"outcome:r{i}", "SERVED_BY", "bundle:b@1") for i in range(5)],
         edge("approval:a1", "APPROVES", "bundle:b@1")],
    )

    windowed = store.expand(["bundle:b@1"], Direction.DOWNSTREAM,
                            since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3))
    approvals = store.expand(["bundle:b@1"], Direction.DOWNSTREAM, edge_types=["APPROVES"])
    by_kind = store.expand(["bundle:b@1"], Direction.DOWNSTREAM,
                           edge_types=["APPROVES", "SERVED_BY"], node_kinds=["Approval"])
    limited = store.expand(["bundle:b@1"], Direction.DOWNSTREAM, limit=2)

    assert {h.node.id for h in windowed} == {"outcome:r1", "outcome:r2", "outcome:r3"}
    assert [h.node.id for h in approvals] == ["approval:a1"]
    assert [h.node.id for h in by_kind] == ["approval:a1"]
    assert len(limited) == 2


def test_walk_on_a_diamond_gives_fewest_hops_and_every_edge(store: GraphStore) -> None:
    _diamond(store)

    result = walk(store, "model:m@1", Direction.UPSTREAM, 10)

    assert result.degrees == {"model:m@1": 0, "run:r1": 1, "feature:f@1": 2,
                              "dataset:wh.a@1": 3, "dataset:wh.a@2": 3, "source:wh.a": 4}
    assert len(result.edges) == 6
    assert not result.truncated


def test_walk_downstream_from_a_source_reaches_the_model(store: GraphStore) -> None:
    _diamond(store)

    result = walk(store, "source:wh.a", Direction.DOWNSTREAM, 10)

    assert result.degrees["model:m@1"] == 4
    assert result.degrees["feature:f@1"] == 2


def test_walk_terminates_on_a_cycle(store: GraphStore) -> None:
    store.upsert(
        [node("feature:a@1"), node("feature:b@1"), node("feature:c@1")],
        [edge("feature:a@1", "DERIVED_FROM", "feature:b@1"),
         edge("feature:b@1", "DERIVED_FROM", "feature:c@1"),
         edge("feature:c@1", "DERIVED_FROM", "feature:a@1")],
    )

    result = walk(store, "feature:a@1", Direction.UPSTREAM, 20)

    assert result.degrees == {"feature:a@1": 0, "feature:b@1": 1, "feature:c@1": 2}
    assert len(result.edges) == 3


def test_walk_longer_than_one_round_trip_of_hops_reaches_the_end(store: GraphStore) -> None:
    chain = [node(f"feature:f{i}@1") for i in range(HOPS_AHEAD * 2 + 3)]
    store.upsert(chain, [edge(a.id, "DERIVED_FROM", b.id) for a, b in itertools.pairwise(chain)])

    result = walk(store, chain[0].id, Direction.UPSTREAM, 20)

    assert result.degrees == {n.id: i for i, n in enumerate(chain)}
    assert len(result.edges) == len(chain) - 1 and not result.truncated


def test_walk_skips_an_archived_node_and_reaches_past_it_only_by_a_live_path(
    store: GraphStore,
) -> None:
    # r → x (archived) → y is the short way to y; r → a → b → y the live one.
    store.upsert(
        [node("feature:r@1"), node("feature:x@1", archived=True), node("feature:a@1"),
         node("feature:b@1"), node("feature:y@1"), node("feature:z@1")],
        [edge("feature:r@1", "DERIVED_FROM", "feature:x@1"),
         edge("feature:x@1", "DERIVED_FROM", "feature:y@1"),
         edge("feature:r@1", "DERIVED_FROM", "feature:a@1"),
         edge("feature:a@1", "DERIVED_FROM", "feature:b@1"),
         edge("feature:b@1", "DERIVED_FROM", "feature:y@1"),
         edge("feature:y@1", "DERIVED_FROM", "feature:z@1")],
    )

    live = walk(store, "feature:r@1", Direction.UPSTREAM, 20)
    everything = walk(store, "feature:r@1", Direction.UPSTREAM, 20, include_archived=True)

    assert live.degrees == {"feature:r@1": 0, "feature:a@1": 1, "feature:b@1": 2,
                            "feature:y@1": 3, "feature:z@1": 4}
    assert everything.degrees == {"feature:r@1": 0, "feature:x@1": 1, "feature:a@1": 1,
                                  "feature:b@1": 2, "feature:y@1": 2, "feature:z@1": 3}


def test_hops_fetched_ahead_equal_expanding_hop_by_hop(store: GraphStore) -> None:
    _diamond(store)
    store.upsert([node("feature:g@1")], [edge("feature:g@1", "DERIVED_FROM", "feature:f@1"),
                                         edge("feature:f@1", "DERIVED_FROM", "feature:g@1")])

    fetched = store.expand_hops(["model:m@1", "model:none@1"], Direction.UPSTREAM, 6,
                                seen={"model:m@1"}, row_cap=100)
    if fetched is None:  # a store without round trips to save walks hop by hop
        return
    start, ahead = fetched.start, fetched.hops
    assert fetched.side is None  # none was asked for
    assert start == store.get(["model:m@1"])
    frontier, seen, expected = ["model:m@1"], {"model:m@1"}, []
    while frontier:
        rows = store.expand(frontier, Direction.UPSTREAM)
        frontier = sorted({h.node.id for h in rows} - seen)
        seen |= set(frontier)
        if rows:
            expected.append(rows)
    assert len(ahead) == 6 and all(not hop for hop in ahead[len(expected):])
    def rows(hops: list[list[Hop]]) -> list[list[tuple[str, tuple[str, str, str], str]]]:
        return [sorted((h.origin, h.edge.key, h.node.id) for h in hop) for hop in hops]

    assert rows(ahead[:len(expected)]) == rows(expected)
    last = ahead[len(expected) - 1][0].node
    assert last == store.get([last.id])[last.id]
    # A hop with as many rows as the cap: the walk decides what to cut, hop by hop.
    assert store.expand_hops(["source:wh.a"], Direction.DOWNSTREAM, 3, seen={"source:wh.a"},
                             row_cap=2) is None


def test_side_hop_read_ahead_equals_expanding_from_the_first_hop(store: GraphStore) -> None:
    # A request served by b@1 at T0+2h; annotations of b@1 from before and after it, and
    # of a bundle the request did not reach over SERVED_BY.
    store.upsert(
        [node("outcome:r1", at=T0 + timedelta(hours=2), environment="production"),
         node("bundle:b@1"), node("bundle:b@2"), node("model:m@1"),
         node("approval:early", at=T0 + timedelta(hours=1), approved_by="zyql"),
         node("approval:late", at=T0 + timedelta(hours=3), approved_by="zyql"),
         node("eval:e/r1", at=T0 + timedelta(hours=2), suite="e", run="r1", score=0.9),
         node("approval:other", at=T0, approved_by="zyql")],
        [edge("outcome:r1", "SERVED_BY", "bundle:b@1"),
         edge("bundle:b@1", "USES_MODEL", "model:m@1"),
         edge("approval:early", "APPROVES", "bundle:b@1"),
         edge("approval:late", "APPROVES", "bundle:b@1"),
         edge("eval:e/r1", "EVALUATES", "bundle:b@1"),
         edge("approval:other", "APPROVES", "bundle:b@2"),
         edge("approval:other", "APPROVES", "model:m@1")],
    )
    side = SideHop(via=("SERVED_BY",), direction=Direction.DOWNSTREAM,
                   edge_types=("EVALUATES", "APPROVES"))

    fetched = store.expand_hops(["outcome:r1"], Direction.UPSTREAM, 3, seen={"outcome:r1"},
                                row_cap=100, side=side)
    if fetched is None:  # a store without round trips to save reads it on its own
        return
    expected = store.expand(["bundle:b@1"], Direction.DOWNSTREAM,
                            edge_types=["EVALUATES", "APPROVES"], until=T0 + timedelta(hours=2))

    def rows(hops: list[Hop]) -> list[tuple[str, tuple[str, str, str], str]]:
        return sorted((h.origin, h.edge.key, h.node.id) for h in hops)

    assert fetched.side is not None
    assert rows(fetched.side) == rows(expected) == [
        ("bundle:b@1", ("approval:early", "APPROVES", "bundle:b@1"), "approval:early"),
        ("bundle:b@1", ("eval:e/r1", "EVALUATES", "bundle:b@1"), "eval:e/r1")]
    assert {h.node.id: h.node for h in fetched.side}["eval:e/r1"] == store.get(
        ["eval:e/r1"])["eval:e/r1"]
    # Past the row cap (two side rows; one row per hop) the side rows are left to the
    # caller, the hops still come.
    capped = store.expand_hops(["outcome:r1"], Direction.UPSTREAM, 3, seen={"outcome:r1"},
                               row_cap=2, side=side)
    assert capped is not None and capped.side is None


def test_walk_both_is_the_union_of_upstream_and_downstream(store: GraphStore) -> None:
    _diamond(store)
    store.upsert([node("feature:other@1"), node("run:r2")],
                 [edge("feature:other@1", "DERIVED_FROM", "dataset:wh.a@1"),
                  edge("run:r2", "CONSUMED", "feature:other@1")])

    result = walk(store, "feature:f@1", Direction.BOTH, 5)

    # Upstream to the datasets and source, downstream to the run and model — but not
    # sideways into the other feature that shares a dataset.
    assert set(result.nodes) == {"feature:f@1", "dataset:wh.a@1", "dataset:wh.a@2",
                                 "source:wh.a", "run:r1", "model:m@1"}


def test_walk_on_fan_out_returns_every_neighbour_at_degree_one(store: GraphStore) -> None:
    outcomes = [node(f"outcome:r{i}", environment="production") for i in range(300)]
    store.upsert([node("bundle:b@1"), *outcomes],
                 [edge(o.id, "SERVED_BY", "bundle:b@1") for o in outcomes])

    result = walk(store, "bundle:b@1", Direction.DOWNSTREAM, 3)

    assert len(result.nodes) == 301
    assert {d for i, d in result.degrees.items() if i != "bundle:b@1"} == {1}
    assert not result.truncated


def test_node_cap_stops_the_walk_and_says_truncated(store: GraphStore) -> None:
    outcomes = [node(f"outcome:r{i}", environment="production") for i in range(300)]
    store.upsert([node("bundle:b@1"), *outcomes],
                 [edge(o.id, "SERVED_BY", "bundle:b@1") for o in outcomes])

    result = walk(store, "bundle:b@1", Direction.DOWNSTREAM, 3,
                  limits=WalkLimits(max_depth=20, max_nodes=50))

    assert len(result.nodes) == 50
    assert result.truncated
    assert all(e.source in result.nodes and e.target in result.nodes
               for e in result.edges.values())


def test_node_cap_keeps_the_least_ids_of_the_hop_it_cuts(store: GraphStore) -> None:
    # Written in an order unlike the IDs', so a store's own row order is not ID order.
    outcomes = [node(f"outcome:r{i:03}", environment="production") for i in range(300)]
    outcomes.reverse()
    store.upsert([node("bundle:b@1"), *outcomes],
                 [edge(o.id, "SERVED_BY", "bundle:b@1") for o in outcomes])

    result = walk(store, "bundle:b@1", Direction.DOWNSTREAM, 3,
                  limits=WalkLimits(max_depth=20, max_nodes=50))

    assert set(result.nodes) == {"bundle:b@1"} | {f"outcome:r{i:03}" for i in range(49)}
    assert result.truncated


def test_node_cap_within_the_rows_read_keeps_the_least_ids(store: GraphStore) -> None:
    # Hop 2 reads all its 15 rows (under the row limit) but has room for 2 new nodes.
    inputs = [node(f"feature:a{i}@1") for i in range(5)]
    shared = [node(f"feature:b{j}@1") for j in (9, 8, 7)]
    store.upsert([node("feature:root@1"), *inputs, *shared],
                 [edge("feature:root@1", "DERIVED_FROM", a.id) for a in inputs]
                 + [edge(a.id, "DERIVED_FROM", b.id) for b in shared for a in inputs])

    result = walk(store, "feature:root@1", Direction.UPSTREAM, 5,
                  limits=WalkLimits(max_depth=20, max_nodes=8))

    assert {i for i in result.nodes if i.startswith("feature:b")} == {
        "feature:b7@1", "feature:b8@1"}
    assert result.truncated


def test_depth_cap_cuts_a_deeper_request_and_says_truncated(store: GraphStore) -> None:
    chain = [node(f"feature:f{i}@1") for i in range(8)]
    store.upsert(chain, [edge(chain[i].id, "DERIVED_FROM", chain[i + 1].id) for i in range(7)])

    capped = walk(store, "feature:f0@1", Direction.UPSTREAM, 100,
                  limits=WalkLimits(max_depth=3, max_nodes=100))
    asked = walk(store, "feature:f0@1", Direction.UPSTREAM, 2)

    assert max(capped.degrees.values()) == 3 and capped.truncated
    assert set(asked.nodes) == {"feature:f0@1", "feature:f1@1", "feature:f2@1"}
    assert not asked.truncated


def test_walks_do_not_follow_supersedes_evaluates_or_approves(store: GraphStore) -> None:
    store.upsert(
        [node("model:m@6"), node("model:m@7"), node("run:r6"), node("run:r7"),
         node("dataset:wh.old@1"), node("eval:suite/run1", suite="suite", run="run1"),
         node("approval:a1", approved_by="zyql")],
        [edge("model:m@7", "SUPERSEDES", "model:m@6"),
         edge("model:m@6", "PRODUCED_BY", "run:r6"),
         edge("run:r6", "CONSUMED", "dataset:wh.old@1"),
         edge("model:m@7", "PRODUCED_BY", "run:r7"),
         edge("eval:suite/run1", "EVALUATES", "model:m@7"),
         edge("approval:a1", "APPROVES", "model:m@7")],
    )

    up = walk(store, "model:m@7", Direction.UPSTREAM, 10)
    down = walk(store, "model:m@7", Direction.DOWNSTREAM, 10)

    assert set(up.nodes) == {"model:m@7", "run:r7"}  # not the data behind version 6
    assert set(down.nodes) == {"model:m@7"}  # evaluations and approvals annotate


def test_walk_kinds_filter_keeps_the_walk_but_returns_only_those_kinds(
    store: GraphStore,
) -> None:
    _diamond(store)

    result = walk(store, "model:m@1", Direction.UPSTREAM, 10, kinds=["DataSource"])

    assert set(result.nodes) == {"model:m@1", "source:wh.a"}
    assert result.degrees["source:wh.a"] == 4


def test_walk_from_an_unknown_id_is_empty(store: GraphStore) -> None:
    assert walk(store, "model:nope@1", Direction.UPSTREAM, 3).nodes == {}


# -- counts -----------------------------------------------------------------------------------


def test_counts_downstream_by_environment_in_a_time_window(store: GraphStore) -> None:
    rows = [("production", 0), ("production", 5), ("canary", 6), ("production", 30),
            ("canary", 49)]
    outcomes = [node(f"outcome:r{i}", at=T0 + timedelta(hours=h), environment=env)
                for i, (env, h) in enumerate(rows)]
    store.upsert([node("model:m@1"), node("bundle:b@1"), node("bundle:b@2"), *outcomes],
                 [edge("bundle:b@1", "USES_MODEL", "model:m@1"),
                  edge("bundle:b@2", "USES_MODEL", "model:m@1"),
                  *[edge(o.id, "SERVED_BY", "bundle:b@1" if i % 2 else "bundle:b@2")
                    for i, o in enumerate(outcomes)]])

    window = store.count_neighbours(
        ["bundle:b@1", "bundle:b@2"], Direction.DOWNSTREAM, kind="InferenceOutcome",
        since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=48), group_by="environment")
    total = store.count_neighbours(["bundle:b@1", "bundle:b@2"], Direction.DOWNSTREAM,
                                   kind="InferenceOutcome")
    bundles = store.count_neighbours(["model:m@1"], Direction.DOWNSTREAM, kind="Bundle")

    assert window == {"production": 2, "canary": 1}
    assert total == {None: 5}
    assert bundles == {None: 2}


def _requests(store: GraphStore) -> list[Node]:
    """Requests over three days: served by b@1 or b@2, every third also using f@1."""
    hours = [0, 5, 6, 23.5, 24, 30, 47.99, 48, 49, 71]
    outcomes = [node(f"outcome:r{i}", at=T0 + timedelta(hours=h),
                     environment="canary" if i % 4 == 1 else "production")
                for i, h in enumerate(hours)]
    store.upsert(
        [node("bundle:b@1"), node("bundle:b@2"), node("feature:f@1"), *outcomes],
        [*[edge(o.id, "SERVED_BY", "bundle:b@1" if i % 2 else "bundle:b@2")
           for i, o in enumerate(outcomes)],
         *[edge(o.id, "USED_FEATURE", "feature:f@1") for o in outcomes[::3]]])
    return outcomes


def _counted(store: GraphStore, targets: list[str], since: datetime | None = None,
             until: datetime | None = None) -> dict[str | None, int]:
    """The answer counted request by request: what the rollup must agree with."""
    return store.count_neighbours(targets, Direction.DOWNSTREAM, kind="InferenceOutcome",
                                  edge_types=OUTCOME_EDGES, since=since, until=until,
                                  group_by="environment")


def test_traffic_from_the_rollup_counts_each_request_once_in_any_window(
    store: GraphStore,
) -> None:
    _requests(store)
    hour = timedelta(hours=1)
    windows = [(None, None), (T0 + 5 * hour, None), (None, T0 + 30 * hour),
               (T0 + 5 * hour, T0 + 49 * hour),  # partial day, a whole day, partial day
               (T0, T0 + 48 * hour - timedelta(microseconds=1)),  # exactly two whole days
               (T0 + 24 * hour, T0 + 48 * hour),  # a whole day and one instant
               (T0 + 6 * hour, T0 + 6 * hour),  # one instant
               (T0 + 23 * hour, T0 + 25 * hour),  # across midnight, no whole day
               (T0 + 30 * hour, T0 + 5 * hour)]  # empty
    targets = ["bundle:b@1", "bundle:b@2", "feature:f@1"]

    for since, until in windows:
        assert store.traffic(targets, since, until) == _counted(store, targets, since,
                                                               until), (since, until)
    assert store.traffic(targets) == {"production": 7, "canary": 3}  # not 14: f@1 overlaps
    assert store.traffic(["feature:f@1"]) == {"production": 3, "canary": 1}
    assert store.traffic(["bundle:b@9"]) == {} and store.traffic([]) == {}


def test_traffic_rollup_ignores_resends_and_follows_changed_requests(
    store: GraphStore,
) -> None:
    outcomes = _requests(store)
    store.upsert(outcomes, [edge(o.id, "SERVED_BY", "bundle:b@1" if i % 2 else "bundle:b@2")
                            for i, o in enumerate(outcomes)])
    assert store.traffic(["bundle:b@1", "bundle:b@2"]) == {"production": 7, "canary": 3}

    # r0 moves to canary and gains the feature, r1 too; a new request names nothing. (A
    # second bundle would be refused: a request is served once.)
    moved = outcomes[0].model_copy(update={"properties": {"environment": "canary"}})
    store.upsert([moved, node("outcome:bare", at=T0, environment="production")],
                 [edge("outcome:r0", "USED_FEATURE", "feature:f@1"),
                  edge("outcome:r1", "USED_FEATURE", "feature:f@1")])

    for targets in (["bundle:b@1"], ["bundle:b@2"], ["feature:f@1"],
                    ["bundle:b@1", "bundle:b@2", "feature:f@1"]):
        assert store.traffic(targets) == _counted(store, targets), targets
    assert store.traffic(["bundle:b@1", "bundle:b@2"]) == {"production": 6, "canary": 4}


def test_whole_request_records_that_name_other_references_are_refused_not_added(
    store: GraphStore,
) -> None:
    # An outcome load's records are whole: what served a stored request does not change
    # when its record comes again; an edge upsert (the default) adds, as above.
    from lineagegraph.graph.store import RequestsConflict

    store.upsert([node("bundle:b@1"), node("bundle:b@2")])
    first = node("outcome:w1", at=T0, environment="production")
    store.upsert([first], [edge(first.id, "SERVED_BY", "bundle:b@1")])
    again = store.prepare([first, node("outcome:w2", at=T0, environment="production")],
                          [edge(first.id, "SERVED_BY", "bundle:b@2"),
                           edge("outcome:w2", "SERVED_BY", "bundle:b@2")],
                          whole_requests=True)
    same = store.prepare([first], [edge(first.id, "SERVED_BY", "bundle:b@1")],
                         whole_requests=True)

    with pytest.raises(RequestsConflict) as refused:
        store.write(again)
    assert {oid: state.targets for oid, state in refused.value.stored.items()} == {
        "outcome:w1": frozenset({"bundle:b@1"})}
    assert store.get(["outcome:w2"]) == {}  # nothing of the batch was written
    assert store.write(same).changed is False
    assert store.traffic(["bundle:b@1", "bundle:b@2"]) == {"production": 1}


def test_a_batch_prepared_before_its_requests_were_stored_is_counted_once(
    store: GraphStore,
) -> None:
    # A bulk load prepares the next batch while this one is written: the rollup change it
    # worked out then (every request new) must not be applied to requests stored since.
    store.upsert([node("bundle:b@1")])
    outcomes = [node(f"outcome:p{i}", at=T0, environment="production") for i in range(3)]
    edges = [edge(o.id, "SERVED_BY", "bundle:b@1") for o in outcomes]
    prepared = store.prepare(outcomes, edges)
    store.upsert(outcomes[:2], edges[:2])

    result = store.write(prepared)

    assert (result.nodes.created, result.nodes.unchanged) == (1, 2)
    assert store.traffic(["bundle:b@1"]) == {"production": 3} == _counted(store,
                                                                          ["bundle:b@1"])
    assert store.write(prepared).changed is False
    assert store.traffic(["bundle:b@1"]) == {"production": 3}


def test_new_requests_written_beside_a_stored_one_keep_one_edge_each(
    store: GraphStore,
) -> None:
    # A write that does not read first creates a batch's requests and the edges from them
    # without looking for stored twins; one stored request among them sends the batch back
    # to be written reading first, where nothing is created twice.
    store.upsert([node("bundle:b@1"), node("feature:f@1")])
    outcomes = [node(f"outcome:n{i}", at=T0, environment="production") for i in range(4)]
    edges = [edge(o.id, "SERVED_BY", "bundle:b@1") for o in outcomes]
    store.upsert(outcomes[2:3], edges[2:3])

    result = store.upsert(outcomes, [*edges, edge("outcome:n0", "USED_FEATURE", "feature:f@1")])

    assert (result.nodes.created, result.nodes.unchanged) == (3, 1)
    assert (result.edges.created, result.edges.unchanged) == (4, 1)
    hops = store.expand([o.id for o in outcomes], Direction.UPSTREAM)
    assert sorted((h.origin, h.edge.type, h.node.id) for h in hops) == sorted(
        [(o.id, "SERVED_BY", "bundle:b@1") for o in outcomes]
        + [("outcome:n0", "USED_FEATURE", "feature:f@1")])
    assert store.traffic(["bundle:b@1"]) == {"production": 4} == _counted(store,
                                                                          ["bundle:b@1"])


def test_rebuilding_the_traffic_rollup_recounts_it_from_the_requests(
    store: GraphStore,
) -> None:
    _requests(store)
    targets = ["bundle:b@1", "bundle:b@2", "feature:f@1"]
    before = store.traffic(targets, T0 + timedelta(hours=1))

    assert store.rebuild_traffic(page=4) == 10
    assert store.traffic(targets, T0 + timedelta(hours=1)) == before == _counted(
        store, targets, T0 + timedelta(hours=1))


def test_a_rebuild_counts_what_is_written_while_it_runs(store: GraphStore) -> None:
    outcomes = _requests(store)  # outcome:r0 … outcome:r9
    targets = ["bundle:b@1", "bundle:b@2", "feature:f@1"]

    def meanwhile(counted: int) -> None:
        if counted != 4:
            return
        # The rebuild has counted r0-r3. New requests on either side of that point; r6
        # (not counted yet) moves to canary; r1 (counted) gains the feature.
        store.upsert(
            [node("outcome:r1a", environment="production"),
             node("outcome:r5a", environment="production"),
             outcomes[6].model_copy(update={"properties": {"environment": "canary"}})],
            [edge("outcome:r1a", "SERVED_BY", "bundle:b@1"),
             edge("outcome:r5a", "SERVED_BY", "bundle:b@2"),
             edge("outcome:r1", "USED_FEATURE", "feature:f@1")])

    # r1a was counted by its writer, behind the rebuild; the rest by the rebuild.
    assert store.rebuild_traffic(page=4, progress=meanwhile) == 11
    for chosen in (["bundle:b@1"], ["bundle:b@2"], ["feature:f@1"], targets):
        assert store.traffic(chosen) == _counted(store, chosen), chosen
    assert sum(store.traffic(targets).values()) == 12


def test_a_rebuild_that_stopped_half_way_is_made_good_by_the_next(store: GraphStore) -> None:
    _requests(store)
    targets = ["bundle:b@1", "bundle:b@2", "feature:f@1"]

    def stop(counted: int) -> None:
        raise RuntimeError("interrupted")

    assert store.traffic_rebuild_position() is None
    with pytest.raises(RuntimeError):
        store.rebuild_traffic(page=4, progress=stop)
    # Past the point it reached, a new request is left to a rebuild that never came, and
    # a blast radius says its traffic is partial.
    store.upsert([node("outcome:r7a", environment="production")],
                 [edge("outcome:r7a", "SERVED_BY", "bundle:b@1")])
    assert sum(store.traffic(targets).values()) == 4
    assert store.traffic_rebuild_position() == "outcome:r3"
    radius = blast_radius(store, "bundle:b@1")
    assert radius is not None and radius.warnings[0].startswith("traffic: partial")

    assert store.rebuild_traffic(page=4) == 11
    assert store.traffic(targets) == _counted(store, targets)
    assert store.traffic_rebuild_position() is None
    radius = blast_radius(store, "bundle:b@1")
    assert radius is not None and radius.warnings == []
    store.upsert([node("outcome:r7b", environment="production")],
                 [edge("outcome:r7b", "SERVED_BY", "bundle:b@1")])
    assert store.traffic(targets) == _counted(store, targets)  # writers count again


def test_counts_reject_grouping_by_an_unindexed_property(store: GraphStore) -> None:
    with pytest.raises(SchemaError, match="cannot be grouped by"):
        store.count_neighbours(["bundle:b@1"], Direction.DOWNSTREAM, kind="InferenceOutcome",
                               group_by="latency_ms")


# -- logs -------------------------------------------------------------------------------------


def test_stage_history_answers_as_of_and_what_is_live(store: GraphStore) -> None:
    day = timedelta(days=1)
    for to_version, env, at in [("13", "production", T0), ("14", "staging", T0 + day),
                                ("14", "production", T0 + 2 * day),
                                ("13", "production", T0 + 3 * day)]:
        store.record_stage_move(StageMove(name="support-triage", environment=env,
                                          to_version=to_version, at=at, actor="ci"))
    store.record_stage_move(StageMove(name="other", environment="production", to_version="1",
                                      at=T0))

    assert store.stage_at("support-triage", "production", T0 - day) is None
    assert store.stage_at("support-triage", "production", T0 + day) == "13"
    assert store.stage_at("support-triage", "production", T0 + 2 * day) == "14"
    assert store.stage_at("support-triage", "production", T0 + 10 * day) == "13"
    assert store.live_environments("support-triage") == {"production": "13", "staging": "14"}
    history = store.stage_history(name="support-triage")
    assert [m.to_version for m in history] == ["13", "14", "14", "13"]
    assert [m.seq for m in history] == sorted(m.seq for m in history)


def test_stage_latest_is_the_last_move_of_each_name_in_each_environment(
        store: GraphStore) -> None:
    """What is in effect without the history before it; moves at the same instant are
    ordered as appended, as in ``stage_history``."""
    hour = timedelta(hours=1)
    moves = [("a", "production", "1", T0), ("a", "production", "2", T0 + hour),
             ("a", "production", "3", T0 + hour), ("a", "staging", "3", T0),
             ("b", "production", "7", T0 + 2 * hour), ("b", "production", None, T0 + 3 * hour),
             ("c", "staging", "1", T0)]
    for name, env, version, at in moves:
        store.record_stage_move(StageMove(name=name, environment=env, to_version=version,
                                          at=at, actor="ci"))

    def latest(**where: object) -> list[tuple[str, str, str | None]]:
        return [(m.name, m.environment, m.to_version) for m in store.stage_latest(**where)]

    def from_history(until: datetime, names: list[str] | None = None,
                     environment: str | None = None) -> list[tuple[str, str, str | None]]:
        last = {(m.name, m.environment): m for m in store.stage_history(
            environment=environment, until=until, names=names)}
        return [(m.name, m.environment, m.to_version)
                for m in sorted(last.values(), key=lambda m: (m.at, m.seq))]

    for until in (T0, T0 + hour, T0 + 2 * hour, T0 + 5 * hour):
        assert latest(until=until) == from_history(until)
        assert latest(until=until, names=["a"]) == from_history(until, ["a"])
        assert latest(environment="staging", until=until) == from_history(
            until, environment="staging")
    assert latest(names=["a"], environment="production") == [("a", "production", "3")]
    assert latest(environment="production") == [("a", "production", "3"),
                                                 ("b", "production", None)]
    assert latest(names=["nothing"]) == []


def test_stage_reads_by_version_take_none_for_moves_to_no_version(store: GraphStore) -> None:
    for env, version, hours in [("production", "1", 0), ("production", None, 1),
                                ("staging", "1", 2), ("staging", None, 3),
                                ("production", "2", 4)]:
        store.record_stage_move(StageMove(name="a", environment=env, to_version=version,
                                          at=T0 + timedelta(hours=hours), actor="ci"))

    def versions(moves: list[StageMove]) -> list[tuple[str, str | None]]:
        return [(m.environment, m.to_version) for m in moves]

    assert versions(store.stage_history(name="a", versions=[None])) == [
        ("production", None), ("staging", None)]
    assert versions(store.stage_history(name="a", versions=[None, "2"])) == [
        ("production", None), ("staging", None), ("production", "2")]
    assert versions(store.stage_history(name="a", versions=["1"])) == [
        ("production", "1"), ("staging", "1")]
    assert versions(store.stage_latest(pairs=[("a", None)])) == [
        ("production", None), ("staging", None)]
    assert store.stage_history(name="a", versions=[]) == []


def test_last_stage_seq_is_the_name_s_last_move_appended_whatever_its_time(
        store: GraphStore) -> None:
    assert store.last_stage_seq("a") is None
    first = store.record_stage_move(StageMove(name="a", environment="production",
                                              to_version="2", at=T0 + timedelta(days=1)))
    store.record_stage_move(StageMove(name="b", environment="production", to_version="1",
                                      at=T0))
    backdated = store.record_stage_move(StageMove(name="a", environment="staging",
                                                  to_version="1", at=T0))

    assert backdated.seq is not None and first.seq is not None and backdated.seq > first.seq
    assert store.last_stage_seq("a") == backdated.seq


def test_a_move_to_nothing_retires_the_name_in_that_environment(store: GraphStore) -> None:
    store.record_stage_move(StageMove(name="b", environment="production", to_version="1",
                                      at=T0))
    store.record_stage_move(StageMove(name="b", environment="production", to_version=None,
                                      from_version="1", at=T0 + timedelta(hours=1)))

    assert store.stage_at("b", "production", T0 + timedelta(minutes=30)) == "1"
    assert store.stage_at("b", "production") is None
    assert store.live_environments("b") == {}



def test_a_checked_move_is_refused_when_another_landed_since_it_read(store: GraphStore) -> None:
    store.record_stage_move(StageMove(name="b", environment="production", to_version="1",
                                      at=T0))
    # Two promotions both read @1 live; the second to write finds @2 there.
    first = StageMove(name="b", environment="production", from_version="1", to_version="2",
                      at=T0 + timedelta(hours=1), actor="alice")
    second = first.model_copy(update={"to_version": "3", "actor": "bob"})
    store.record_stage_move(first, AuditEntry(action="promote", target="bundle:b@2"),
                            check_from=True)

    with pytest.raises(StageMoved, match="@2 is in effect, not @1"):
        store.record_stage_move(second, AuditEntry(action="promote", target="bundle:b@3"),
                                check_from=True)

    assert [(m.from_version, m.to_version) for m in store.stage_history(name="b")] == [
        (None, "1"), ("1", "2")]
    assert [e.target for e in store.audit_log()] == ["bundle:b@2"]
    # Dated before the latest move, it would slip in under it: refused too.
    with pytest.raises(StageMoved):
        store.record_stage_move(second.model_copy(update={"from_version": "2", "at": T0}),
                                check_from=True)
    store.record_stage_move(second.model_copy(update={"from_version": "2"}), check_from=True)
    assert store.stage_at("b", "production") == "3"

def test_audit_log_records_writes_in_order_and_filters(store: GraphStore) -> None:
    store.upsert([node("source:wh.a")], audit=[
        AuditEntry(action="upsert", target="source:wh.a", actor="alice", at=T0,
                   after={"owner": "x"})])
    store.record_stage_move(
        StageMove(name="b", environment="production", to_version="1", at=T0),
        audit=AuditEntry(action="promote", target="bundle:b@1", actor="bob",
                         at=T0 + timedelta(hours=1), before=None, after={"version": "1"}))

    entries = store.audit_log()
    by_bob = store.audit_log(actor="bob")
    late = store.audit_log(since=T0 + timedelta(minutes=30))

    assert [(e.action, e.actor) for e in entries] == [("upsert", "alice"), ("promote", "bob")]
    assert entries[0].after == {"owner": "x"}
    assert [e.target for e in by_bob] == ["bundle:b@1"]
    assert [e.action for e in late] == ["promote"]
    assert [e.target for e in store.audit_log(targets=["bundle:b@1", "source:wh.a"])] == [
        "source:wh.a", "bundle:b@1"]
    assert [e.target for e in store.audit_log(targets=["bundle:b@1", "x"], limit=5)] == [
        "bundle:b@1"]
    assert store.audit_log(targets=[]) == []


def test_a_failed_batch_leaves_no_audit_entry(store: GraphStore) -> None:
    with pytest.raises(SchemaError):
        store.upsert([node("bundle:b@1")], [edge("bundle:b@1", "USES_MODEL", "model:x@1")],
                     audit=[AuditEntry(action="upsert", target="bundle:b@1")])

    assert store.audit_log() == []


def test_ready_answers_true_on_a_working_store(store: GraphStore) -> None:
    assert store.ready()


def test_records_are_kept_once_per_key_and_paged_in_append_order(store: GraphStore) -> None:
    events = [Record(collection="openlineage.event", key=f"run-1/{i}", payload={"i": i},
                     at=T0 + timedelta(minutes=i)) for i in range(5)]

    first = store.upsert(records=events)
    again = store.upsert(records=events)
    page1 = store.records("openlineage.event", limit=2)
    page2 = store.records("openlineage.event", after_seq=page1[-1].seq, limit=10)
    one = store.records("openlineage.event", key="run-1/3")

    assert (first.records_added, again.records_added) == (5, 0)
    assert not again.changed
    assert [r.payload["i"] for r in page1 + page2] == [0, 1, 2, 3, 4]
    assert [r.payload for r in one] == [{"i": 3}]
    assert store.records("deadletter") == []


def test_a_record_page_holds_what_fits_in_its_characters_and_at_least_one(
        store: GraphStore) -> None:
    # Payloads of 100, 300, 50 and 400 characters of JSON ({"t":"…"} is 8 around the text).
    texts = ["a" * 92, "b" * 292, "c" * 42, "d" * 392]
    store.upsert(records=[Record(collection="c", key=str(i), payload={"t": t})
                          for i, t in enumerate(texts)])

    first = store.record_page(RecordFilter("c"), limit=10, max_chars=450)
    rest = store.record_page(RecordFilter("c", after_seq=first.records[-1].seq), limit=10,
                             max_chars=450)
    tiny = store.record_page(RecordFilter("c"), limit=10, max_chars=1)
    by_count = store.record_page(RecordFilter("c"), limit=1, max_chars=10_000)

    assert [r.key for r in first.records] == ["0", "1", "2"]
    assert first.sizes == [100, 300, 50] and first.more
    assert [r.key for r in rest.records] == ["3"] and not rest.more
    assert [r.key for r in tiny.records] == ["0"] and tiny.more  # one, however large
    assert [r.key for r in by_count.records] == ["0"] and by_count.more
    assert [r.key for r in store.all_records("c")] == ["0", "1", "2", "3"]
    assert store.record_page(RecordFilter("none"), limit=5).records == []


def test_stage_moves_and_records_roll_back_with_a_failed_batch(store: GraphStore) -> None:
    with pytest.raises(SchemaError):
        store.upsert([node("bundle:b@1")], [edge("bundle:b@1", "USES_MODEL", "model:x@1")],
                     stage_moves=[StageMove(name="b", environment="production",
                                            to_version="1", at=T0)],
                     records=[Record(collection="raw", key="k")])

    assert store.stage_history() == []
    assert store.records("raw") == []


def test_find_filters_by_kind_name_text_and_indexed_property_with_keyset_pages(
    store: GraphStore,
) -> None:
    store.upsert([node("model:fraud-detector@6"), node("model:fraud-detector@7"),
                  node("model:fraud-detector@10"), node("model:fraud-detector"),
                  node("model:shadow-llm", kind="ModelVersion", registered=False),
                  node("prompt:fraud-explainer@1")])

    versions = store.versions("ModelVersion", "fraud-detector", last=100)
    fraud = store.find(text="FRAUD", first=2)
    rest = store.find(text="fraud", first=10, after=fraud[-1].id)
    unregistered = store.find(kinds=["ModelVersion"], where={"registered": False})

    assert [n.version for n in versions] == ["6", "7", "10"]
    assert [n.id for n in fraud + rest] == sorted(
        ["model:fraud-detector", "model:fraud-detector@10", "model:fraud-detector@6",
         "model:fraud-detector@7", "prompt:fraud-explainer@1"])
    assert [n.id for n in unregistered] == ["model:shadow-llm"]
    with pytest.raises(SchemaError, match="cannot filter on"):
        store.find(where={"owner": "x"})


def test_tallies_by_origin_give_counts_and_first_and_last_seen(store: GraphStore) -> None:
    store.upsert(
        [node("model:shadow-a", kind="ModelVersion", registered=False),
         node("model:shadow-b", kind="ModelVersion", registered=False),
         *[node(f"outcome:r{i}", at=T0 + timedelta(hours=i), environment="production")
           for i in range(5)]],
        [edge(f"outcome:r{i}", "USED_MODEL", "model:shadow-a" if i < 3 else "model:shadow-b")
         for i in range(5)],
    )

    tallies = store.tally_neighbours(["model:shadow-a", "model:shadow-b"], Direction.DOWNSTREAM,
                                     kind="InferenceOutcome", group_by=ORIGIN)

    assert tallies["model:shadow-a"] == Tally(3, T0, T0 + timedelta(hours=2))
    assert tallies["model:shadow-b"] == Tally(2, T0 + timedelta(hours=3),
                                              T0 + timedelta(hours=4))


def test_records_filtered_by_key_prefix_match_it_literally_and_page(store: GraphStore) -> None:
    keys = ["run:a\x1f1", "run:a\x1f2", "run:ab\x1f1", "run:a%\x1f1", "run:a_\x1f1", "run:a\x1f3"]
    store.upsert(records=[Record(collection="openlineage.event", key=k, payload={"k": k}, at=T0)
                          for k in keys])
    store.upsert(records=[Record(collection="deadletter", key="run:a\x1f9", payload={}, at=T0)])

    page1 = store.records("openlineage.event", key_prefix="run:a\x1f", limit=2)
    page2 = store.records("openlineage.event", key_prefix="run:a\x1f", after_seq=page1[-1].seq)

    assert [r.key for r in page1 + page2] == ["run:a\x1f1", "run:a\x1f2", "run:a\x1f3"]
    assert [r.key for r in store.records("openlineage.event", key_prefix="run:a%")] == [
        "run:a%\x1f1"]
    assert [r.key for r in store.records("openlineage.event", key_prefix="run:a_")] == [
        "run:a_\x1f1"]
    assert store.records("openlineage.event", key_prefix="run:zz") == []


def test_search_folds_case_beyond_ascii_on_both_stores(store: GraphStore) -> None:
    store.upsert([Node.from_id("feature:CAFÉ@1"), Node.from_id("feature:cafe@1")])

    assert [n.id for n in store.find(text="café")] == ["feature:CAFÉ@1"]
    assert [n.id for n in store.find(text="CAFÉ")] == ["feature:CAFÉ@1"]


def test_drift_paths_through_a_diamond_do_not_depend_on_write_order(store: GraphStore) -> None:
    # A dataset version read by two features one run consumes: two paths of three hops,
    # built twice with the features' edges written in either order.
    from lineagegraph.graph.drift import drift_sources
    at = datetime(2026, 5, 5, tzinfo=UTC)
    paths = []
    for graph, order in (("g1", ("alpha", "zeta")), ("g2", ("zeta", "alpha"))):
        store.upsert([Node.from_id(f"dataset:{graph}@1", created_at=at),
                      Node.from_id(f"run:{graph}"), Node.from_id(f"model:{graph}@1")],
                     [Edge(source=f"model:{graph}@1", type="PRODUCED_BY", target=f"run:{graph}")])
        for name in order:
            feature = f"feature:{graph}-{name}@1"
            store.upsert([Node.from_id(feature)],
                         [Edge(source=feature, type="DERIVED_FROM", target=f"dataset:{graph}@1"),
                          Edge(source=f"run:{graph}", type="CONSUMED", target=feature)])
        found = drift_sources(store, f"model:{graph}@1", at + timedelta(days=1))
        assert found is not None
        paths += [c.path for c in found if c.node.id == f"dataset:{graph}@1"]

    assert paths == [[f"dataset:{g}@1", f"feature:{g}-alpha@1", f"run:{g}", f"model:{g}@1"]
                     for g in ("g1", "g2")]


def test_drift_skips_archived_and_replaced_versions_of_a_source_read_whole(
    store: GraphStore,
) -> None:
    # A bundle retrieving from a source: the source's new versions are candidates, but not
    # one archived or a replaced placeholder, which walks hide (lineage does not list them).
    from lineagegraph.graph.drift import drift_sources
    from lineagegraph.graph.store import REPLACED_BY
    at = datetime(2026, 10, 7, tzinfo=UTC)
    versions = {"2026-10-04": {}, "2026-10-05": {"archived": True},
                "run-1": {"archived": True, REPLACED_BY: "dataset:kb@2026-10-04"}}
    store.upsert(
        [Node.from_id("bundle:b@1", created_at=at - timedelta(days=30)),
         Node.from_id("source:kb", created_at=at - timedelta(days=30)),
         *(Node.from_id(f"dataset:kb@{v}", created_at=at - timedelta(days=2), properties=p)
           for v, p in versions.items())],
        [Edge(source="bundle:b@1", type="RETRIEVES_FROM", target="source:kb"),
         *(Edge(source=f"dataset:kb@{v}", type="VERSION_OF", target="source:kb")
           for v in versions)])

    found = drift_sources(store, "bundle:b@1", at)

    assert found is not None
    assert [c.node.id for c in found if c.node.kind == "DatasetVersion"] == [
        "dataset:kb@2026-10-04"]


def test_search_pages_over_ids_past_u_ffff_hold_each_node_once(store: GraphStore) -> None:
    # Neo4j compares string values by UTF-16 units but orders its ID index by code points:
    # a cursor filter the planner did not seek with skipped `x😀` after `xＡ`.
    ids = ["feature:x\uff21@1", "feature:x\U0001f600@1", "feature:xb@1", "model:x\U0001f600@1"]
    store.upsert([Node.from_id(i) for i in ids])

    for filters in ({}, {"kinds": ["Feature"]}, {"text": "x"}):
        whole = [n.id for n in store.find(**filters)]
        paged, after = [], None
        while page := store.find(first=1, after=after, **filters):
            paged.append(page[0].id)
            after = page[0].id
        assert paged == whole == sorted(whole), filters


def test_stage_history_reads_only_the_last_moves_when_asked(store: GraphStore) -> None:
    hour = timedelta(hours=1)
    for i, at in enumerate([T0, T0 + 2 * hour, T0 + hour, T0 + 2 * hour]):
        store.record_stage_move(StageMove(name="a", environment="production",
                                          to_version=str(i), at=at))

    assert [m.to_version for m in store.stage_history(name="a", last=2)] == ["1", "3"]
    assert [m.to_version for m in store.stage_history(name="a", last=10)] == [
        "0", "2", "1", "3"]
