"""The three questions (and resolve, history, unregistered, search) on one story, over HTTP
against the real app, on both stores. Expected answers are worked out by hand from the
story in ``tests/story.py``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph.store import GraphStore

from .story import at, load_story

NODE = "id kind name version"


@pytest.fixture
def client(store: GraphStore) -> Iterator[TestClient]:
    load_story(store)
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as test_client:
        yield test_client


def gql(client: TestClient, query: str, **variables: Any) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def ids(nodes: list[dict[str, Any]]) -> list[str]:
    return [n["id"] for n in nodes]


TRACE = f"""
query ($requestId: String!) {{
  trace(requestId: $requestId) {{
    outcome {{ {NODE} }} environment bundleLiveAtRequest
    bundle {{ {NODE} }} modelVersion {{ id }} promptVersion {{ id }} toolset {{ id }}
    policyPack {{ id }} approvals {{ id }} evaluations {{ id properties }}
    liveInEnvironment {{ id }}
    upstream {{ nodes {{ degree node {{ id kind }} }} edges {{ source type target }}
               truncated }}
  }}
}}
"""


def test_trace_gives_the_bundle_as_served_with_its_pins_approvals_and_upstream(
    client: TestClient,
) -> None:
    trace = gql(client, TRACE, requestId="req-2002")["trace"]

    assert trace["outcome"]["id"] == "outcome:req-2002"
    assert trace["environment"] == "production"
    assert trace["bundle"]["id"] == "bundle:support-triage@15"
    assert trace["bundleLiveAtRequest"] is True  # 15 was in production from T+6d to T+9d
    assert trace["modelVersion"]["id"] == "model:gpt-5-mini-2026-11"
    assert trace["promptVersion"]["id"] == "prompt:triage-prompt@10"
    assert trace["toolset"]["id"] == "tools:triage-tools@3"
    assert trace["policyPack"]["id"] == "policy:support-safety@7"
    assert ids(trace["approvals"]) == ["approval:a15"]
    assert ids(trace["evaluations"]) == ["eval:triage-eval-v4/r15"]
    assert trace["evaluations"][0]["properties"]["score"] == 0.91
    assert ids(trace["liveInEnvironment"]) == ["bundle:fraud-scoring@2",
                                               "bundle:support-triage@15"]
    degrees = {n["node"]["id"]: n["degree"] for n in trace["upstream"]["nodes"]}
    assert degrees == {
        "outcome:req-2002": 0, "bundle:support-triage@15": 1,
        "model:gpt-5-mini-2026-11": 2, "prompt:triage-prompt@10": 2,
        "tools:triage-tools@3": 2, "policy:support-safety@7": 2, "source:kb.articles": 2}
    assert ("prompt:triage-prompt@10", "DESIGNED_FOR", "model:gpt-5-mini-2026-11") in {
        (e["source"], e["type"], e["target"]) for e in trace["upstream"]["edges"]}


def test_trace_shows_only_approvals_that_existed_at_the_request(client: TestClient) -> None:
    trace = gql(client, TRACE, requestId="outcome:req-2001")["trace"]

    assert trace["bundle"]["id"] == "bundle:support-triage@14"
    assert ids(trace["approvals"]) == ["approval:a14"]  # a14-late came at T+12d
    assert ids(trace["liveInEnvironment"]) == ["bundle:fraud-scoring@2",
                                               "bundle:support-triage@14"]


def test_trace_flags_a_request_served_by_a_version_not_live_then(client: TestClient) -> None:
    trace = gql(client, TRACE, requestId="req-2004")["trace"]

    assert trace["bundle"]["id"] == "bundle:support-triage@15"
    assert trace["bundleLiveAtRequest"] is False  # production was back on 14 from T+9d


def test_trace_of_a_model_reaches_its_data_but_not_the_previous_versions(
    client: TestClient,
) -> None:
    trace = gql(client, TRACE, requestId="req-3001")["trace"]
    degrees = {n["node"]["id"]: n["degree"] for n in trace["upstream"]["nodes"]}

    assert degrees == {
        "outcome:req-3001": 0, "bundle:fraud-scoring@2": 1, "model:fraud-detector@7": 2,
        "run:r-fraud-7": 3, "feature:txn_amount_7d@2": 4,
        "dataset:warehouse.payments@2026-10-25": 5, "source:warehouse.payments": 6}


def test_trace_of_an_unknown_request_is_null(client: TestClient) -> None:
    assert gql(client, TRACE, requestId="req-nope")["trace"] is None


BLAST = f"""
query ($id: ID!, $action: Action, $since: DateTime, $until: DateTime) {{
  blastRadius(id: $id, action: $action, since: $since, until: $until) {{
    root {{ id }} action byKind {{ kind count }}
    bundles {{ bundle {{ id }} environments }}
    traffic {{ environment count }} totalTraffic
    rollbackTarget {{ {NODE} }}
    rollbacks {{ environment current {{ id }} target {{ id }} warnings }}
    warnings
    downstream {{ nodes {{ degree node {{ id }} }} truncated }}
  }}
}}
"""


def test_blast_radius_of_a_model_version_finds_bundles_traffic_and_rollback(
    client: TestClient,
) -> None:
    blast = gql(client, BLAST, id="model:gpt-5-mini-2026-08")["blastRadius"]

    assert blast["byKind"] == [{"kind": "Bundle", "count": 1},
                               {"kind": "PromptVersion", "count": 1}]
    assert blast["bundles"] == [{"bundle": {"id": "bundle:support-triage@14"},
                                 "environments": ["production"]}]
    assert blast["traffic"] == [{"environment": "production", "count": 1}]  # req-2001
    assert blast["totalTraffic"] == 1
    # production went 14 → 15 → 14: rolling back 14 returns to 15.
    assert blast["rollbackTarget"]["id"] == "bundle:support-triage@15"
    warnings = blast["rollbacks"][0]["warnings"]
    assert any("policy pack differs: policy:support-safety@6 live, "
               "policy:support-safety@7 in the target" in w for w in warnings)
    assert any("live prompt prompt:triage-prompt@9 is DESIGNED_FOR "
               "model:gpt-5-mini-2026-08" in w for w in warnings)
    assert not any("target's prompt" in w for w in warnings)  # @10 fits the target model
    assert all(w.startswith("production: ") for w in blast["warnings"])


def test_blast_radius_of_a_bundle_counts_traffic_only_in_the_window(
    client: TestClient,
) -> None:
    blast = gql(client, BLAST, id="bundle:support-triage@15",
                since=at(6).isoformat(), until=at(8).isoformat())["blastRadius"]

    assert blast["bundles"] == [{"bundle": {"id": "bundle:support-triage@15"},
                                 "environments": ["staging"]}]
    assert blast["traffic"] == [{"environment": "production", "count": 1},
                                {"environment": "staging", "count": 1}]
    assert blast["rollbacks"] == [{
        "environment": "staging", "current": {"id": "bundle:support-triage@15"},
        "target": {"id": "bundle:support-triage@14"},
        "warnings": blast["rollbacks"][0]["warnings"]}]
    assert any("live prompt prompt:triage-prompt@10" in w
               for w in blast["rollbacks"][0]["warnings"])


def test_blast_radius_of_a_data_source_reaches_the_bundle_with_degrees(
    client: TestClient,
) -> None:
    blast = gql(client, BLAST, id="source:warehouse.payments", action="RETIRE")["blastRadius"]
    degrees = {n["node"]["id"]: n["degree"] for n in blast["downstream"]["nodes"]}

    assert degrees == {
        "source:warehouse.payments": 0, "dataset:warehouse.payments@2026-09-01": 1,
        "dataset:warehouse.payments@2026-10-25": 1, "feature:txn_amount_7d@2": 2,
        "run:r-fraud-6": 2, "run:r-fraud-7": 3, "model:fraud-detector@6": 3,
        "model:fraud-detector@7": 4, "bundle:fraud-scoring@2": 5}
    assert blast["bundles"] == [{"bundle": {"id": "bundle:fraud-scoring@2"},
                                 "environments": ["production"]}]
    assert blast["traffic"] == [{"environment": "production", "count": 1}]
    assert blast["rollbackTarget"] is None and blast["rollbacks"] == []


DRIFT = """
query ($id: ID!, $onset: DateTime!, $lookback: String) {
  driftSources(id: $id, onset: $onset, lookback: $lookback) {
    node { id } change changedAt hops score path
  }
}
"""


def test_drift_sources_rank_upstream_changes_in_the_window(client: TestClient) -> None:
    found = gql(client, DRIFT, id="bundle:support-triage@15", onset=at(8).isoformat(),
                lookback="P7D")["driftSources"]
    got = [(c["node"]["id"], c["change"], c["hops"], c["score"]) for c in found]

    # score = (1 + recency) / (2 (1 + hops)), recency = 1 - (onset - t) / 7d
    assert got == [
        ("bundle:support-triage@15", "stage move production: 14 → 15", 0,
         pytest.approx(6 / 7, abs=1e-6)),
        ("bundle:support-triage@15", "stage move staging: 14 → 15", 0,
         pytest.approx(265 / 336, abs=1e-6)),
        ("bundle:support-triage@15", "new bundle version", 0, pytest.approx(11 / 14, abs=1e-6)),
        ("policy:support-safety@7", "new policy pack version", 1,
         pytest.approx(10 / 28, abs=1e-6)),
        ("prompt:triage-prompt@10", "new prompt version", 1, pytest.approx(10 / 28, abs=1e-6)),
        ("model:gpt-5-mini-2026-11", "new model version", 1, pytest.approx(9 / 28, abs=1e-6)),
        ("dataset:kb.articles@2026-11-08", "new dataset version", 2,
         pytest.approx(13 / 42, abs=1e-6)),
    ]
    paths = {c["node"]["id"]: c["path"] for c in found}
    assert paths["dataset:kb.articles@2026-11-08"] == [
        "dataset:kb.articles@2026-11-08", "source:kb.articles", "bundle:support-triage@15"]
    assert paths["model:gpt-5-mini-2026-11"] == ["model:gpt-5-mini-2026-11",
                                                 "bundle:support-triage@15"]


def test_drift_sources_count_a_registry_alias_moving_to_an_upstream_model_version(
    client: TestClient, store: GraphStore,
) -> None:
    # As the MLflow importer logs them: under the model's family ID.
    from lineagegraph.schema import StageMove

    store.record_stage_move(StageMove(name="model:fraud-detector", environment="champion",
                                      from_version="6", to_version="7", at=at(-1)))

    found = gql(client, DRIFT, id="bundle:fraud-scoring@2", onset=at(0).isoformat(),
                lookback="P3D")["driftSources"]

    assert [(c["node"]["id"], c["change"], c["hops"]) for c in found] == [
        ("model:fraud-detector@7", "stage move champion: 6 → 7", 1)]


def test_drift_sources_ignore_changes_outside_the_window(client: TestClient) -> None:
    found = gql(client, DRIFT, id="bundle:support-triage@15", onset=at(8).isoformat(),
                lookback="PT36H")["driftSources"]

    # window [T+6.5d, T+8d]: only the new kb.articles dataset version (T+7d)
    assert [(c["node"]["id"], c["change"]) for c in found] == [
        ("dataset:kb.articles@2026-11-08", "new dataset version")]


def test_drift_sources_skip_other_versions_of_a_source_read_only_through_one(
    client: TestClient,
) -> None:
    # fraud-detector@6 learned from warehouse.payments@2026-09-01; @2026-10-25 (T-7d) is
    # the data behind @7, a sibling of @6's, not upstream of it. kb.articles, retrieved by
    # the bundle itself, is read whole: its new versions count (the test above).
    old = gql(client, DRIFT, id="model:fraud-detector@6", onset=at(0).isoformat(),
              lookback="P10D")["driftSources"]
    new = gql(client, DRIFT, id="model:fraud-detector@7", onset=at(0).isoformat(),
              lookback="P10D")["driftSources"]

    assert "dataset:warehouse.payments@2026-10-25" not in [c["node"]["id"] for c in old]
    assert ("dataset:warehouse.payments@2026-10-25", 3) in [
        (c["node"]["id"], c["hops"]) for c in new]


RESOLVE = f"""
query ($name: String!, $env: String!, $asOf: DateTime) {{
  resolve(name: $name, environment: $env, asOf: $asOf) {{
    {NODE} properties
    ... on Bundle {{ modelVersion {{ id }} promptVersion {{ id }} toolset {{ id }}
                    policyPack {{ id }} retrievesFrom {{ id }} }}
  }}
}}
"""


def test_resolve_answers_as_of_from_the_stage_history(client: TestClient) -> None:
    def version(env: str, when: str) -> str | None:
        found = gql(client, RESOLVE, name="support-triage", env=env, asOf=when)["resolve"]
        return found and found["version"]

    assert version("production", at(-9).isoformat()) is None  # before the first move
    assert version("staging", at(-9).isoformat()) == "14"  # a move takes effect at its time
    assert version("production", at(7).isoformat()) == "15"
    assert version("production", at(10).isoformat()) == "14"

    bundle = gql(client, RESOLVE, name="support-triage", env="production",
                 asOf=at(7).isoformat())["resolve"]
    assert bundle["properties"]["params"] == {"max_tokens": 400}
    assert bundle["modelVersion"]["id"] == "model:gpt-5-mini-2026-11"
    assert bundle["promptVersion"]["id"] == "prompt:triage-prompt@10"
    assert bundle["policyPack"]["id"] == "policy:support-safety@7"
    assert ids(bundle["retrievesFrom"]) == ["source:kb.articles"]


def test_history_lists_versions_and_stage_moves_in_order(client: TestClient) -> None:
    history = gql(client, """query { history(id: "bundle:support-triage@14") {
        versions { id } stageMoves { environment fromVersion toVersion reason } } }""")[
        "history"]

    assert ids(history["versions"]) == ["bundle:support-triage@14", "bundle:support-triage@15"]
    assert [(m["environment"], m["toVersion"]) for m in history["stageMoves"]] == [
        ("staging", "14"), ("production", "14"), ("staging", "15"), ("production", "15"),
        ("production", "14")]
    assert history["stageMoves"][-1]["reason"] == "quality drop"


def test_history_answers_the_last_stage_moves_and_says_earlier_ones_are_left_out(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from lineagegraph.graph import registry

    monkeypatch.setattr(registry, "HISTORY_MOVES", 3)
    body = client.post("/graphql", json={"query": """query {
        history(id: "bundle:support-triage@14") { stageMoves { environment toVersion } } }"""
                                         }).json()

    assert [(m["environment"], m["toVersion"]) for m in body["data"]["history"][
        "stageMoves"]] == [("staging", "15"), ("production", "15"), ("production", "14")]
    assert [w["message"] for w in body["extensions"]["warnings"]] == [
        "stageMoves: the last 3, oldest first; earlier moves are left out"]


def test_history_of_a_data_source_lists_its_dataset_versions(client: TestClient) -> None:
    history = gql(client, """query { history(id: "source:warehouse.payments") {
        versions { id } } }""")["history"]

    assert ids(history["versions"]) == ["dataset:warehouse.payments@2026-09-01",
                                        "dataset:warehouse.payments@2026-10-25"]


def test_unregistered_models_are_counted_in_the_window(client: TestClient) -> None:
    query = """query ($since: DateTime, $until: DateTime) {
        unregistered(since: $since, until: $until) { node { id } requests firstSeen lastSeen }
    }"""
    everything = gql(client, query)["unregistered"]
    late = gql(client, query, since=at(5).isoformat())["unregistered"]

    assert [(u["node"]["id"], u["requests"]) for u in everything] == [
        ("model:shadow-llm-x", 2), ("model:other-shadow", 1)]
    assert everything[0]["firstSeen"].startswith("2026-11-04")
    assert everything[0]["lastSeen"].startswith("2026-11-09")
    assert [(u["node"]["id"], u["requests"]) for u in late] == [
        ("model:other-shadow", 1), ("model:shadow-llm-x", 1)]


def test_search_reads_v_versions_as_ids_write_them(client: TestClient) -> None:
    found = gql(client, '{ search(text: "support-triage@v14") { nodes { id } } }')["search"]

    assert ids(found["nodes"]) == ["bundle:support-triage@14"]


def test_search_pages_with_a_cursor(client: TestClient) -> None:
    query = """query ($after: String) {
        search(text: "SUPPORT-TRIAGE", kinds: ["Bundle"], first: 1, after: $after) {
            nodes { id } pageInfo { hasNextPage endCursor } } }"""
    first = gql(client, query)["search"]
    second = gql(client, query, after=first["pageInfo"]["endCursor"])["search"]

    assert ids(first["nodes"]) == ["bundle:support-triage@14"]
    assert first["pageInfo"]["hasNextPage"] is True
    assert ids(second["nodes"]) == ["bundle:support-triage@15"]
    assert second["pageInfo"]["hasNextPage"] is False


def test_drift_sources_keep_a_node_cap_of_a_source_s_versions_nearest_the_onset(
    store: GraphStore,
) -> None:
    """A source versioned hourly has hundreds of versions in the window: the node cap's
    worth, the newest before the onset, are candidates, and the answer says it was cut."""
    from lineagegraph.graph.drift import drift_sources
    from lineagegraph.graph.walk import WalkLimits
    from lineagegraph.schema import Edge, Node

    versions = [f"dataset:kb@{i}" for i in range(30)]
    store.upsert(
        [Node.from_id("source:kb", created_at=at(-30)),
         Node.from_id("bundle:app@1", created_at=at(-20)),
         *(Node.from_id(v, created_at=at(-3, i)) for i, v in enumerate(versions))],
        [Edge(source="bundle:app@1", type="RETRIEVES_FROM", target="source:kb"),
         *(Edge(source=v, type="VERSION_OF", target="source:kb") for v in versions)])

    cut = drift_sources(store, "bundle:app@1", at(0), limits=WalkLimits(max_nodes=10))
    whole = drift_sources(store, "bundle:app@1", at(0), limits=WalkLimits(max_nodes=30))

    assert cut is not None and whole is not None
    assert cut.truncated and not whole.truncated
    assert {c.node.id for c in cut} == set(versions[-10:])
    assert {c.node.id for c in whole} == set(versions)


def test_drift_sources_count_a_new_version_of_a_retrieved_source_at_its_fewest_hops(
    store: GraphStore,
) -> None:
    # kb@2 is two hops up through the source the bundle retrieves from, and four through
    # the data its model learned from: the fewer hops rank it, as design §3 asks.
    from lineagegraph.graph.drift import drift_sources
    from lineagegraph.schema import Edge, Node

    def node(node_id: str, days: float) -> Node:
        return Node.from_id(node_id, created_at=at(days))

    store.upsert(
        [node("source:kb", -30), node("dataset:kb@2", -1), node("feature:f@1", -20),
         node("run:r1", -20), node("model:m@1", -20), node("bundle:app@1", -10)],
        [Edge(source=s, type=t, target=d) for s, t, d in [
            ("dataset:kb@2", "VERSION_OF", "source:kb"),
            ("feature:f@1", "DERIVED_FROM", "dataset:kb@2"),
            ("run:r1", "CONSUMED", "feature:f@1"),
            ("model:m@1", "PRODUCED_BY", "run:r1"),
            ("bundle:app@1", "USES_MODEL", "model:m@1"),
            ("bundle:app@1", "RETRIEVES_FROM", "source:kb")]])

    found = drift_sources(store, "bundle:app@1", at(0))

    assert found is not None
    assert [(c.node.id, c.hops, c.path) for c in found] == [
        ("dataset:kb@2", 2, ["dataset:kb@2", "source:kb", "bundle:app@1"])]
