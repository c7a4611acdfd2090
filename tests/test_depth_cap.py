"""The analyses that mean "everything" (trace, blastRadius, driftSources) say ``truncated``
when the depth cap cuts their walk, as ``lineage`` asked past the cap does; a walk that
reaches the end of the graph exactly at the cap is not cut (audit no. 5).

Story depths (tests/story.py): req-3001's trace reaches source:warehouse.payments at hop
6; the blast radius of that source reaches bundle:fraud-scoring@2 at hop 5; the drift walk
from that bundle reaches the source at hop 5."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph import trace as trace_module
from lineagegraph.graph.drift import drift_sources
from lineagegraph.graph.impact import STRUCTURE_EDGES
from lineagegraph.graph.store import Direction, GraphStore
from lineagegraph.graph.trace import trace
from lineagegraph.graph.walk import FULL_DEPTH, WalkLimits, walk
from lineagegraph.schema import Edge, Node

from .story import at, load_story

TRACE = """{ trace(requestId: "req-3001") { modelVersion { id }
    upstream { nodes { degree node { id } } truncated } } }"""
BLAST = """{ blastRadius(id: "source:warehouse.payments") {
    downstream { nodes { degree } truncated } byKind { kind count } warnings } }"""
PARTIAL = "downstream: partial — the walk reached a limit"


@pytest.fixture
def capped(store: GraphStore) -> Iterator[Callable[[int, str], dict[str, Any]]]:
    """A GraphQL query against the story with the depth cap given."""
    load_story(store)

    def query(max_depth: int, document: str) -> dict[str, Any]:
        settings = Settings(neo4j_uri=None, max_depth=max_depth, warm_up=False)
        with TestClient(create_app(settings, store=store)) as client:
            body = client.post("/graphql", json={"query": document}).json()
        assert "errors" not in body, body
        return body["data"]

    yield query


def test_trace_says_truncated_when_the_depth_cap_cuts_its_walk(
        capped: Callable[[int, str], dict[str, Any]]) -> None:
    cut = capped(5, TRACE)["trace"]
    whole = capped(6, TRACE)["trace"]  # the source is at hop 6: nothing lies past it

    assert cut["upstream"]["truncated"] is True
    assert max(n["degree"] for n in cut["upstream"]["nodes"]) == 5
    assert cut["modelVersion"] == {"id": "model:fraud-detector@7"}  # pins are at hop 2
    assert whole["upstream"]["truncated"] is False
    missing = ({n["node"]["id"] for n in whole["upstream"]["nodes"]}
               - {n["node"]["id"] for n in cut["upstream"]["nodes"]})
    assert missing == {"source:warehouse.payments"}


def test_a_trace_cut_past_its_pins_reads_them_off_the_walk(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    load_story(store)
    below_pins = trace(store, "req-3001", WalkLimits(max_depth=1))  # pins are at hop 2

    def no_second_read(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the walk holds the pins: no second read")

    monkeypatch.setattr(trace_module, "bundle_parts", no_second_read)
    past_pins = trace(store, "req-3001", WalkLimits(max_depth=5))

    assert below_pins is not None and below_pins.upstream is not None
    assert past_pins is not None and past_pins.upstream is not None
    assert below_pins.upstream.truncated and past_pins.upstream.truncated
    assert below_pins.parts.model is not None and past_pins.parts.model is not None
    assert below_pins.parts.model.id == past_pins.parts.model.id == "model:fraud-detector@7"


def test_blast_radius_says_truncated_and_warns_when_the_depth_cap_cuts_its_walk(
        capped: Callable[[int, str], dict[str, Any]]) -> None:
    cut = capped(4, BLAST)["blastRadius"]
    whole = capped(5, BLAST)["blastRadius"]  # the bundle is at hop 5, the end

    assert cut["downstream"]["truncated"] is True
    assert "Bundle" not in {k["kind"] for k in cut["byKind"]}
    assert any(w.startswith(PARTIAL) for w in cut["warnings"]), cut["warnings"]
    assert whole["downstream"]["truncated"] is False
    assert {"kind": "Bundle", "count": 1} in whole["byKind"]
    assert not any(w.startswith(PARTIAL) for w in whole["warnings"])


def test_lineage_to_a_depth_within_the_cap_is_the_callers_choice_not_a_cut(
        capped: Callable[[int, str], dict[str, Any]]) -> None:
    lineage = capped(4, """{ lineage(id: "source:warehouse.payments", direction: DOWNSTREAM,
        depth: 4) { truncated } }""")["lineage"]

    assert lineage["truncated"] is False


def test_drift_sources_know_when_the_depth_cap_cut_their_walk(store: GraphStore) -> None:
    load_story(store)

    def drift(max_depth: int) -> Any:
        return drift_sources(store, "bundle:fraud-scoring@2", at(0),
                             limits=WalkLimits(max_depth=max_depth))

    cut, whole = drift(3), drift(5)

    assert cut.truncated is True
    assert whole.truncated is False
    assert ({c.node.id for c in whole} - {c.node.id for c in cut}
            == {"dataset:warehouse.payments@2026-10-25"})


def test_drift_sources_over_graphql_warn_in_extensions_when_a_cap_cut_their_walk(
        store: GraphStore) -> None:
    load_story(store)
    document = f"""{{ cut: driftSources(id: "bundle:fraud-scoring@2",
        onset: "{at(0).isoformat()}") {{ node {{ id }} }} }}"""

    def post(max_depth: int) -> dict[str, Any]:
        settings = Settings(neo4j_uri=None, max_depth=max_depth, warm_up=False)
        with TestClient(create_app(settings, store=store)) as client:
            return client.post("/graphql", json={"query": document}).json()

    cut, whole = post(3), post(5)

    assert "errors" not in cut and cut["data"]["cut"]
    [warning] = cut["extensions"]["warnings"]
    assert warning["path"] == ["cut"] and "cut the upstream walk" in warning["message"]
    assert "warnings" not in whole.get("extensions", {})


def test_a_depth_cut_shows_past_many_edges_back_to_nodes_already_seen(
        store: GraphStore) -> None:
    # root → a → f0..f9 (hop 2, the cap); root → s0..s4 (hop 1). Each f points back at
    # every s (50 rows to nodes seen, 17 nodes seen); only f9 leads on, to u, past the cap.
    fs = [f"feature:f{i}@1" for i in range(10)]
    ss = [f"feature:s{i}@1" for i in range(5)]
    store.upsert([Node.from_id(i)
                  for i in ["feature:root@1", "feature:a@1", *fs, *ss, "feature:u@1"]],
                 [Edge(source="feature:root@1", type="DERIVED_FROM", target=t)
                  for t in ["feature:a@1", *ss]]
                 + [Edge(source="feature:a@1", type="DERIVED_FROM", target=f) for f in fs]
                 + [Edge(source=f, type="DERIVED_FROM", target=t) for f in fs for t in ss]
                 + [Edge(source="feature:f9@1", type="DERIVED_FROM", target="feature:u@1")])

    result = walk(store, "feature:root@1", Direction.UPSTREAM, FULL_DEPTH,
                  limits=WalkLimits(max_depth=2))

    assert max(result.degrees.values()) == 2
    assert result.truncated and result.depth_cut


def test_many_edges_into_a_few_archived_nodes_past_the_cap_are_no_depth_cut(
        store: GraphStore) -> None:
    # root → a → f0..f9 (hop 2, the cap); each f points on at the same three archived
    # nodes: 30 rows past the cap, more than the check reads at once, none returnable.
    fs = [f"feature:f{i}@1" for i in range(10)]
    gone = [f"feature:old{i}@1" for i in range(3)]
    store.upsert([Node.from_id(i) for i in ["feature:root@1", "feature:a@1", *fs]]
                 + [Node.from_id(i, properties={"archived": True}) for i in gone],
                 [Edge(source="feature:root@1", type="DERIVED_FROM", target="feature:a@1")]
                 + [Edge(source="feature:a@1", type="DERIVED_FROM", target=f) for f in fs]
                 + [Edge(source=f, type="DERIVED_FROM", target=g) for f in fs for g in gone])

    capped = walk(store, "feature:root@1", Direction.UPSTREAM, FULL_DEPTH,
                  limits=WalkLimits(max_depth=2, max_nodes=20))

    assert len(capped.nodes) == 12
    assert not capped.truncated and not capped.depth_cut


def test_the_depth_check_costs_one_statement_only_when_the_cap_hop_reached_nodes(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    load_story(store)
    calls: list[str] = []

    def counted(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return real(*args, **kwargs)
        return call

    for name in ("get", "expand", "expand_hops"):  # the reads a walk makes
        monkeypatch.setattr(store, name, counted(name, getattr(store, name)))

    def statements(depth: int, max_depth: int) -> list[str]:
        calls.clear()
        walk(store, "source:warehouse.payments", Direction.DOWNSTREAM, depth,
             limits=WalkLimits(max_depth=max_depth), edge_types=STRUCTURE_EDGES)
        return list(calls)

    # The blast radius's walk: its cap hop (5) reached the bundle, so one more statement
    # reads one hop from there.
    assert statements(FULL_DEPTH, 5) == [*statements(5, 5), "expand"]
    # The walk ran dry before the cap: nothing more to ask.
    assert statements(FULL_DEPTH, 6) == statements(6, 6)


def test_an_evidence_packs_lineage_says_truncated_when_the_depth_cap_cuts_it(
        store: GraphStore) -> None:
    from lineagegraph.graph.governance import evidence_pack
    load_story(store)

    cut = evidence_pack(store, "fraud-scoring", "2", WalkLimits(max_depth=4))
    whole = evidence_pack(store, "fraud-scoring", "2", WalkLimits(max_depth=5))

    assert cut.upstream.truncated is True  # the source lies at hop 5
    assert whole.upstream.truncated is False
    assert "source:warehouse.payments" in whole.upstream.nodes
