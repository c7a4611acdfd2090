"""A walk's memory is bounded by its caps, not by the sizes of the properties it meets: a
row holds a node's or an edge's properties up to ``INLINE_CHARS``; longer ones are read
apart, within ``WalkLimits.max_chars`` (``LINEAGEGRAPH_MAX_WALK_CHARS``), and a walk that
would read more leaves those nodes out and says ``truncated``. What it answers holds the
properties whole."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph.store import Direction, GraphStore, hop_order
from lineagegraph.graph.trace import trace
from lineagegraph.graph.walk import FULL_DEPTH, INLINE_CHARS, WalkLimits, walk
from lineagegraph.schema import Edge, Node

T = datetime(2026, 10, 1, tzinfo=UTC)
LARGE = "x" * (5 * INLINE_CHARS)  # ~20 Ki characters: read apart
SOURCE = "source:warehouse.events"


def _node(node_id: str, days: float = 0, **props: object) -> Node:
    return Node.from_id(node_id, created_at=T + timedelta(days=days), properties=props)


def _large_versions(store: GraphStore, count: int, **extra: object) -> list[str]:
    """``count`` dataset versions of one source, each with ~20 Ki characters of schema."""
    ids = [f"dataset:warehouse.events@{i}" for i in range(count)]
    store.upsert([_node(SOURCE), *(_node(i, 1, schema=LARGE, n=k, **extra)
                                   for k, i in enumerate(ids))],
                 [Edge(source=i, type="VERSION_OF", target=SOURCE) for i in ids])
    return ids


def test_expand_leaves_properties_longer_than_inline_out_of_its_rows(store: GraphStore) -> None:
    ids = _large_versions(store, 2)
    store.upsert([_node("dataset:warehouse.events@small", 1, rows=3)],
                 [Edge(source="dataset:warehouse.events@small", type="VERSION_OF",
                       target=SOURCE, properties={"note": LARGE})])

    rows = {row.node.id: row for row in store.expand(
        [SOURCE], Direction.DOWNSTREAM, inline=INLINE_CHARS)}
    whole = {row.node.id: row for row in store.expand([SOURCE], Direction.DOWNSTREAM)}

    for node_id in ids:
        assert rows[node_id].node.properties == {}
        assert rows[node_id].node_elided == len(whole[node_id].node.props_json)
        assert rows[node_id].edge_elided == 0
    small = rows["dataset:warehouse.events@small"]
    assert small.node.properties == {"rows": 3} and small.node_elided == 0
    assert small.edge.properties == {} and small.edge_elided == len(
        whole["dataset:warehouse.events@small"].edge.props_json)
    assert all(row.node_elided == row.edge_elided == 0 for row in whole.values())


def test_get_edges_reads_edges_by_key_and_leaves_unknown_keys_out(store: GraphStore) -> None:
    store.upsert([_node(SOURCE), _node("dataset:warehouse.events@1", 1)],
                 [Edge(source="dataset:warehouse.events@1", type="VERSION_OF", target=SOURCE,
                       properties={"note": LARGE})])
    key = ("dataset:warehouse.events@1", "VERSION_OF", SOURCE)

    found = store.get_edges([key, (SOURCE, "VERSION_OF", "dataset:warehouse.events@1")])

    assert list(found) == [key]
    assert found[key].properties == {"note": LARGE}


def test_a_walk_answers_large_properties_whole(store: GraphStore) -> None:
    ids = _large_versions(store, 3)
    store.upsert([], [Edge(source=ids[0], type="DERIVED_FROM", target=ids[1],
                           properties={"columns": LARGE})])

    down = walk(store, SOURCE, Direction.DOWNSTREAM, FULL_DEPTH)
    up = walk(store, ids[0], Direction.UPSTREAM, FULL_DEPTH)

    assert not down.truncated and not up.truncated
    assert set(down.nodes) == {SOURCE, *ids}
    assert all(down.nodes[i].properties["schema"] == LARGE for i in ids)
    assert up.nodes[ids[0]].properties["schema"] == LARGE  # the start node, read apart
    assert up.edges[(ids[0], "DERIVED_FROM", ids[1])].properties == {"columns": LARGE}
    assert up.nodes[ids[1]].properties["schema"] == LARGE


def test_a_walk_stops_reading_large_properties_at_its_budget(store: GraphStore) -> None:
    ids = _large_versions(store, 5)
    size = len(store.get([ids[0]])[ids[0]].props_json)

    cut = walk(store, SOURCE, Direction.DOWNSTREAM, FULL_DEPTH,
               limits=WalkLimits(max_chars=2 * size + size // 2))

    assert cut.truncated
    assert set(cut.nodes) == {SOURCE, *sorted(ids)[:2]}  # the first in hop order, as a cap
    assert all(cut.nodes[i].properties["schema"] == LARGE for i in sorted(ids)[:2])


def test_nodes_met_again_are_not_read_or_counted_twice(store: GraphStore) -> None:
    """A diamond: the large node is reached over two edges in one hop; the budget holds it
    once."""
    ids = _large_versions(store, 1)
    store.upsert([_node("dataset:warehouse.events@top", 2)],
                 [Edge(source="dataset:warehouse.events@top", type="DERIVED_FROM",
                       target=ids[0]),
                  Edge(source="dataset:warehouse.events@top", type="VERSION_OF",
                       target=SOURCE)])
    size = len(store.get([ids[0]])[ids[0]].props_json)

    walked = walk(store, SOURCE, Direction.DOWNSTREAM, FULL_DEPTH,
                  limits=WalkLimits(max_chars=size))

    assert not walked.truncated
    assert walked.nodes[ids[0]].properties["schema"] == LARGE


def test_the_depth_cap_tells_a_large_node_past_it_from_an_archived_one(
        store: GraphStore) -> None:
    """Whether anything lies past the cap needs a large node's ``archived``: read apart."""
    live = _large_versions(store, 1)[0]
    store.upsert([_node("dataset:warehouse.events@gone", 1, schema=LARGE, archived=True),
                  _node("feature:clicks@1", 2)],
                 [Edge(source="dataset:warehouse.events@gone", type="VERSION_OF",
                       target=SOURCE),
                  Edge(source="feature:clicks@1", type="DERIVED_FROM", target=live)])
    limits = WalkLimits(max_depth=1)

    from_live = walk(store, "feature:clicks@1", Direction.UPSTREAM, FULL_DEPTH, limits=limits)
    store.upsert([_node(live, 1, schema=LARGE, archived=True)])
    from_archived = walk(store, "feature:clicks@1", Direction.UPSTREAM, FULL_DEPTH,
                         limits=limits)

    assert from_live.truncated and from_live.depth_cut  # the source lies past the cap
    assert set(from_archived.nodes) == {"feature:clicks@1"}  # archived: hidden
    assert not from_archived.truncated


def test_a_trace_holds_a_large_request_and_large_approvals_whole(store: GraphStore) -> None:
    bundle, approval = "bundle:triage@1", "approval:triage@1.security.ana"
    store.upsert(
        [_node("model:m@1"), _node(bundle, 1), _node(approval, 1, approved_by="ana",
                                                     gate="security", evidence=LARGE),
         _node("outcome:req-1", 2, environment="production", transcript=LARGE)],
        [Edge(source=bundle, type="USES_MODEL", target="model:m@1"),
         Edge(source=approval, type="APPROVES", target=bundle),
         Edge(source="outcome:req-1", type="SERVED_BY", target=bundle)])

    whole = trace(store, "req-1", WalkLimits())
    spent = trace(store, "req-1", WalkLimits(max_chars=0))

    assert whole is not None and spent is not None
    for result in (whole, spent):  # the request is the trace's start: read whole always
        assert result.outcome.properties["transcript"] == LARGE
        assert result.parts.model is not None and result.parts.model.id == "model:m@1"
    assert [a.properties["evidence"] for a in whole.approvals] == [LARGE]
    assert not whole.annotations_cut
    assert spent.approvals == [] and spent.annotations_cut  # it did not fit: said left out


def test_a_trace_s_walk_goes_first_within_the_budget_then_its_annotations(
        store: GraphStore) -> None:
    """Large evaluations of the serving bundle spend what the walk leaves, not the walk's
    own budget: the bundle and its pins are answered on both stores."""
    bundle = "bundle:triage@1"
    evals = [f"eval:suite/run-{i}" for i in range(3)]
    store.upsert(
        [_node("model:m@1"), _node(bundle, 1, params={"system": LARGE}),
         *(_node(e, 1 + i / 10, suite="suite", run=f"run-{i}", score=0.9, threshold=0.8,
                 report=LARGE)
           for i, e in enumerate(evals)),
         _node("outcome:req-1", 2, environment="production")],
        [Edge(source=bundle, type="USES_MODEL", target="model:m@1"),
         *(Edge(source=e, type="EVALUATES", target=bundle) for e in evals),
         Edge(source="outcome:req-1", type="SERVED_BY", target=bundle)])
    size = len(store.get([bundle])[bundle].props_json)

    result = trace(store, "req-1", WalkLimits(max_chars=size + size + size // 2))

    assert result is not None
    assert result.bundle is not None and result.bundle.properties["params"]["system"] == LARGE
    assert result.parts.model is not None
    assert [e.id for e in result.evaluations] == [evals[-1]]  # the newest that fits
    assert result.annotations_cut


def test_blast_radius_names_the_walk_chars_setting_when_it_cuts(store: GraphStore) -> None:
    _large_versions(store, 3)
    settings = Settings(neo4j_uri=None, warm_up=False, max_walk_chars=INLINE_CHARS)
    query = f'{{ blastRadius(id: "{SOURCE}") {{ downstream {{ truncated }} warnings }} }}'

    with TestClient(create_app(settings, store=store)) as client:
        body = client.post("/graphql", json={"query": query}).json()

    answer = body["data"]["blastRadius"]
    assert answer["downstream"]["truncated"] is True
    assert any("LINEAGEGRAPH_MAX_WALK_CHARS" in w for w in answer["warnings"])


def test_rows_cut_by_the_budget_are_the_last_in_hop_order(store: GraphStore) -> None:
    ids = _large_versions(store, 4)
    rows = store.expand([SOURCE], Direction.DOWNSTREAM, inline=INLINE_CHARS)
    size = max(row.node_elided for row in rows)

    kept = walk(store, SOURCE, Direction.DOWNSTREAM, 1, limits=WalkLimits(max_chars=3 * size))

    assert sorted(set(kept.nodes) - {SOURCE}) == [r.node.id for r in sorted(
        rows, key=hop_order)][:3] == sorted(ids)[:3]


def test_a_walk_the_budget_cut_stops_there_so_no_node_comes_at_a_deeper_degree(
        store: GraphStore) -> None:
    """feature:x is two hops from the source through the large dataset version, three
    round it: left out at hop 1, the dataset must not push x to degree 3."""
    store.upsert(
        [_node(SOURCE), _node("dataset:warehouse.events@1", 1, schema=LARGE),
         _node("feature:f3@1", 1), _node("feature:f2@1", 2), _node("feature:x@1", 3)],
        [Edge(source="dataset:warehouse.events@1", type="VERSION_OF", target=SOURCE),
         Edge(source="feature:x@1", type="DERIVED_FROM", target="dataset:warehouse.events@1"),
         Edge(source="feature:f3@1", type="DERIVED_FROM", target=SOURCE),
         Edge(source="feature:f2@1", type="DERIVED_FROM", target="feature:f3@1"),
         Edge(source="feature:x@1", type="DERIVED_FROM", target="feature:f2@1")])

    whole = walk(store, SOURCE, Direction.DOWNSTREAM, FULL_DEPTH)
    cut = walk(store, SOURCE, Direction.DOWNSTREAM, FULL_DEPTH,
               limits=WalkLimits(max_chars=INLINE_CHARS))

    assert whole.degrees["feature:x@1"] == 2 and not whole.truncated
    assert cut.truncated
    # The first rows in hop order that fit, as a cap keeps them: the dataset version comes
    # first and does not fit, so nothing of that hop is kept.
    assert set(cut.nodes) == {SOURCE}
    assert all(cut.degrees[i] == whole.degrees[i] for i in cut.nodes)


def test_drift_keeps_a_version_its_walk_holds_at_its_fewest_hops_whatever_the_budget(
        store: GraphStore) -> None:
    """A source's newer, large version the budget leaves out must not drop an older one
    the walk already holds: answered only the walk's long way round, it would rank lower."""
    from lineagegraph.graph.drift import drift_sources

    old, new = "dataset:warehouse.events@1", "dataset:warehouse.events@2"
    store.upsert(
        [_node(SOURCE, -30), _node(old, 1), _node(new, 2, schema=LARGE),
         _node("feature:f@1", 1.5), _node("run:r1", 2), _node("model:m@1", 2.5),
         _node("bundle:b@1", 3)],
        [Edge(source=old, type="VERSION_OF", target=SOURCE),
         Edge(source=new, type="VERSION_OF", target=SOURCE),
         Edge(source="feature:f@1", type="DERIVED_FROM", target=old),
         Edge(source="run:r1", type="CONSUMED", target="feature:f@1"),
         Edge(source="model:m@1", type="PRODUCED_BY", target="run:r1"),
         Edge(source="bundle:b@1", type="USES_MODEL", target="model:m@1"),
         Edge(source="bundle:b@1", type="RETRIEVES_FROM", target=SOURCE)])
    onset = T + timedelta(days=4)

    whole = drift_sources(store, "bundle:b@1", onset)
    cut = drift_sources(store, "bundle:b@1", onset, limits=WalkLimits(max_chars=INLINE_CHARS))

    assert whole is not None and cut is not None
    hops = {c.node.id: (c.hops, c.path) for c in whole}
    assert hops[old] == (2, [old, SOURCE, "bundle:b@1"]) and new in hops
    assert cut.truncated and new not in {c.node.id for c in cut}
    assert {c.node.id: (c.hops, c.path) for c in cut}[old] == hops[old]


def test_the_gates_read_the_approvals_before_older_large_evaluations(store: GraphStore) -> None:
    """Within the budget the latest evaluation and the approvals go first: large CI reports
    must not leave the approvals gate counting none."""
    from lineagegraph.graph.governance import GatePolicy, promotion_report
    from lineagegraph.graph.registry import annotations

    bundle = "bundle:b@1"
    evals = [f"eval:suite/r{i}" for i in range(3)]
    store.upsert(
        [_node("model:m@1"), _node("policy:pp@1", risk_tier="production"), _node(bundle, 1),
         _node("approval:b@1/alice", 2, approved_by="alice"),
         *(_node(e, 1 + i / 10, suite="suite", run=f"r{i}", score=0.95, threshold=0.9,
                 report=LARGE) for i, e in enumerate(evals))],
        [Edge(source=bundle, type="USES_MODEL", target="model:m@1"),
         Edge(source=bundle, type="GOVERNED_BY", target="policy:pp@1"),
         Edge(source="approval:b@1/alice", type="APPROVES", target=bundle),
         *(Edge(source=e, type="EVALUATES", target=bundle) for e in evals)])
    size = len(store.get([evals[0]])[evals[0]].props_json)

    report = promotion_report(store, "b", "1", "production", GatePolicy(),
                              limits=WalkLimits(max_chars=size + size // 2))

    read = annotations(store, bundle, chars=size + size // 2)

    gates = {g.name: (g.passed, g.reason) for g in report.gates}
    assert gates["approvals"] == (True, "1 of 1 required: alice")
    assert gates["eval"] == (True, f"{evals[-1]} scored 0.95 ≥ threshold 0.9")
    assert [a.id for a in read.approvals] == ["approval:b@1/alice"]
    assert [e.id for e in read.evaluations] == [evals[-1]] and read.cut
    # Read nothing at all: the failing gates say why, rather than look like no evidence.
    starved = promotion_report(store, "b", "1", "production", GatePolicy(),
                               limits=WalkLimits(max_chars=0))
    for gate in starved.gates:
        if gate.name in ("eval", "approvals"):
            assert not gate.passed
            assert "some evaluations or approvals were not read" in (gate.reason or "")
