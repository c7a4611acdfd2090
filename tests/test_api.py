"""The HTTP app over both stores: probes, and GraphQL ``node`` and ``lineage``."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.auth import create_token
from lineagegraph.api.graphql_schema import schema_sdl
from lineagegraph.api.settings import Settings
from lineagegraph.graph.store import GraphStore
from lineagegraph.schema import AuditEntry, Edge, Node

SDL_FILE = Path(__file__).resolve().parents[1] / "schema" / "schema.graphql"
T0 = datetime(2026, 11, 1, tzinfo=UTC)

LINEAGE = """
query ($id: ID!, $direction: Direction, $depth: Int, $kinds: [String!], $first: Int,
       $after: String) {
  lineage(id: $id, direction: $direction, depth: $depth, kinds: $kinds, first: $first,
          after: $after) {
    nodes { degree node { id kind name version createdAt properties } }
    edges { source target type }
    truncated
    pageInfo { hasNextPage endCursor }
  }
}
"""


@pytest.fixture
def client(store: GraphStore) -> Iterator[TestClient]:
    ids = ["source:wh.payments", "dataset:wh.payments@2026-11-15", "feature:txn_amount_7d@2",
           "run:r-fraud-7", "model:fraud-detector@7"]
    store.upsert(
        [Node.from_id(i, created_at=T0) for i in ids],
        [Edge(source=ids[1], type="VERSION_OF", target=ids[0]),
         Edge(source=ids[2], type="DERIVED_FROM", target=ids[1]),
         Edge(source=ids[3], type="CONSUMED", target=ids[2]),
         Edge(source=ids[4], type="PRODUCED_BY", target=ids[3])],
    )
    settings = Settings(max_depth=3, neo4j_uri=None)
    with TestClient(create_app(settings, store=store)) as test_client:
        yield test_client


def gql(client: TestClient, query: str, **variables: Any) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    return response.json()


def test_start_up_objects_are_kept_out_of_the_cyclic_collector(store: GraphStore) -> None:
    gc.unfreeze()
    settings = Settings(neo4j_uri=None)
    with TestClient(create_app(settings, store=store)):
        assert gc.get_freeze_count() > 0  # else a full collection walks them all


def test_health_and_readiness_answer(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_readiness_says_when_a_traffic_rebuild_left_counts_partial(
    client: TestClient, store: GraphStore,
) -> None:
    store.upsert([Node.from_id(f"outcome:r{i}", created_at=T0,
                               properties={"environment": "production"}) for i in range(3)])
    assert client.get("/readyz").json()["traffic_rebuild"] is None

    def stop(counted: int) -> None:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        store.rebuild_traffic(page=2, progress=stop)

    assert client.get("/readyz").json()["traffic_rebuild"] == {"counted_through": "outcome:r1"}
    store.rebuild_traffic(page=2)
    assert client.get("/readyz").json()["traffic_rebuild"] is None


def test_node_by_id_accepts_v_versions_and_gives_the_design_fields(client: TestClient) -> None:
    body = gql(client, "query ($id: ID!) { node(id: $id) { id kind name version createdAt "
               "... on ModelVersion { properties } } }", id="model:fraud-detector@v7")

    assert body["data"]["node"] == {
        "id": "model:fraud-detector@7", "kind": "ModelVersion", "name": "fraud-detector",
        "version": "7", "createdAt": "2026-11-01T00:00:00+00:00",
        "properties": {"registered": True}}


def test_node_of_an_unknown_id_is_null_and_a_malformed_id_is_an_error(
    client: TestClient,
) -> None:
    assert gql(client, '{ node(id: "model:nope@1") { id } }')["data"]["node"] is None
    body = gql(client, '{ node(id: "nonsense") { id } }')
    assert "not an ID" in body["errors"][0]["message"]


def test_lineage_upstream_returns_degrees_and_edges(client: TestClient) -> None:
    body = gql(client, LINEAGE, id="model:fraud-detector@7", direction="UPSTREAM", depth=3)
    lineage = body["data"]["lineage"]

    assert {(n["node"]["id"], n["degree"]) for n in lineage["nodes"]} == {
        ("model:fraud-detector@7", 0), ("run:r-fraud-7", 1), ("feature:txn_amount_7d@2", 2),
        ("dataset:wh.payments@2026-11-15", 3)}
    assert {(e["source"], e["type"], e["target"]) for e in lineage["edges"]} == {
        ("model:fraud-detector@7", "PRODUCED_BY", "run:r-fraud-7"),
        ("run:r-fraud-7", "CONSUMED", "feature:txn_amount_7d@2"),
        ("feature:txn_amount_7d@2", "DERIVED_FROM", "dataset:wh.payments@2026-11-15")}
    assert lineage["truncated"] is False


def test_lineage_deeper_than_the_cap_is_cut_and_flagged(client: TestClient) -> None:
    lineage = gql(client, LINEAGE, id="model:fraud-detector@7", depth=50)["data"]["lineage"]

    assert lineage["truncated"] is True  # the source, 4 hops up, is past the cap of 3
    assert max(n["degree"] for n in lineage["nodes"]) == 3


def test_lineage_asked_deeper_than_the_cap_is_not_flagged_when_nothing_lies_past_it(
    client: TestClient,
) -> None:
    # From the run, everything upstream is within 3 hops: the cap cut nothing.
    lineage = gql(client, LINEAGE, id="run:r-fraud-7", depth=50)["data"]["lineage"]

    assert lineage["truncated"] is False
    assert max(n["degree"] for n in lineage["nodes"]) == 3


def test_lineage_pages_with_first_and_after(client: TestClient) -> None:
    first = gql(client, LINEAGE, id="source:wh.payments", direction="DOWNSTREAM", depth=4,
                first=2)["data"]["lineage"]
    rest = gql(client, LINEAGE, id="source:wh.payments", direction="DOWNSTREAM", depth=4,
               first=10, after=first["pageInfo"]["endCursor"])["data"]["lineage"]

    assert [n["node"]["id"] for n in first["nodes"]] == [
        "source:wh.payments", "dataset:wh.payments@2026-11-15"]
    assert first["pageInfo"]["hasNextPage"] is True
    assert [n["node"]["id"] for n in rest["nodes"]] == [
        "feature:txn_amount_7d@2", "run:r-fraud-7"]
    assert rest["pageInfo"]["hasNextPage"] is False


def test_a_lineage_page_goes_on_after_a_cursor_whose_node_is_gone(client: TestClient) -> None:
    # Keyset paging: a node archived (or moved nearer) between two pages does not break
    # the next one; it starts after the cursor's (degree, ID).
    from lineagegraph.api.graphql_types import encode_cursor

    gone = encode_cursor("00000001|dataset:wh.payments@2026-11-14")
    rest = gql(client, LINEAGE, id="source:wh.payments", direction="DOWNSTREAM", depth=4,
               first=10, after=gone)["data"]["lineage"]
    bad = gql(client, LINEAGE, id="source:wh.payments", direction="DOWNSTREAM", depth=4,
              first=10, after=encode_cursor("not a position"))

    assert [n["node"]["id"] for n in rest["nodes"]] == [
        "dataset:wh.payments@2026-11-15", "feature:txn_amount_7d@2", "run:r-fraud-7"]
    assert "is not a cursor of this query" in bad["errors"][0]["message"]


def test_lineage_pages_of_some_kinds_hold_the_nodes_of_those_kinds(client: TestClient) -> None:
    # The page's end is reached counting the nodes it shows, not those walked through.
    whole = gql(client, LINEAGE, id="model:fraud-detector@7", depth=5,
                kinds=["DatasetVersion", "Feature"])["data"]["lineage"]
    page = gql(client, LINEAGE, id="model:fraud-detector@7", depth=5,
               kinds=["DatasetVersion", "Feature"], first=2)["data"]["lineage"]
    rest = gql(client, LINEAGE, id="model:fraud-detector@7", depth=5,
               kinds=["DatasetVersion", "Feature"], first=2,
               after=page["pageInfo"]["endCursor"])["data"]["lineage"]

    assert [n["node"]["id"] for n in whole["nodes"]] == [
        "model:fraud-detector@7", "feature:txn_amount_7d@2", "dataset:wh.payments@2026-11-15"]
    assert [n["node"]["id"] for n in page["nodes"] + rest["nodes"]] == [
        n["node"]["id"] for n in whole["nodes"]]
    assert page["pageInfo"]["hasNextPage"] is True
    assert rest["pageInfo"]["hasNextPage"] is False


def test_lineage_of_unknown_id_or_kind_is_a_clear_error(client: TestClient) -> None:
    missing = gql(client, LINEAGE, id="model:nope@1")
    bad_kind = gql(client, LINEAGE, id="model:fraud-detector@7", kinds=["Widget"])

    assert "no node model:nope@1" in missing["errors"][0]["message"]
    assert "Widget" in bad_kind["errors"][0]["message"]


def test_graphql_depth_limit_refuses_documents_nested_deeper_than_configured(
    store: GraphStore,
) -> None:
    settings = Settings(graphql_max_depth=2, neo4j_uri=None)
    with TestClient(create_app(settings, store=store)) as shallow:
        refused = gql(shallow, '{ lineage(id: "run:r") { nodes { node { id } } } }')
        allowed = gql(shallow, '{ node(id: "run:r") { id } }')

    assert "exceeds maximum operation depth" in refused["errors"][0]["message"]
    assert allowed["data"] == {"node": None} and "errors" not in allowed


def test_exported_sdl_matches_the_code() -> None:
    assert SDL_FILE.read_text() == schema_sdl(), (
        "schema/schema.graphql is stale: run `lineagegraph export-schema`")


def test_schema_reference_matches_the_declarations() -> None:
    from lineagegraph.schema.docs import schema_markdown

    assert (SDL_FILE.parent / "SCHEMA.md").read_text() == schema_markdown(), (
        "schema/SCHEMA.md is stale: run `lineagegraph export-schema`")


def test_a_paged_lineage_walks_only_as_deep_as_its_page(store: GraphStore) -> None:
    chain = [f"feature:f{i}@1" for i in range(30)]
    store.upsert([Node.from_id(i) for i in chain],
                 [Edge(source=chain[i], type="DERIVED_FROM", target=chain[i + 1])
                  for i in range(29)])
    from .test_query_limits import CountingStore

    counting = CountingStore(store)
    with TestClient(create_app(Settings(neo4j_uri=None), store=counting)) as client:  # type: ignore[arg-type]
        page = gql(client, LINEAGE, id=chain[0], depth=15, first=3)["data"]["lineage"]

    assert [n["degree"] for n in page["nodes"]] == [0, 1, 2]
    assert page["pageInfo"]["hasNextPage"] is True and page["truncated"] is False
    assert counting.calls["expand"] == 3  # hops 1..3, not 15


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    gql(client, '{ node(id: "run:r-fraud-7") { id } }')
    client.get("/healthz")
    text = client.get("/metrics").text

    assert 'lineagegraph_requests_total{method="POST",route="/graphql",status="200"} 1' in text
    assert 'lineagegraph_requests_total{method="GET",route="/healthz",status="200"} 1' in text
    assert 'lineagegraph_request_seconds_count{method="POST",route="/graphql"} 1' in text
    assert "lineagegraph_store_ready 1.0" in text


def test_graphiql_answers_a_browser_at_graphql(client: TestClient) -> None:
    page = client.get("/graphql", headers={"Accept": "text/html"})

    assert page.status_code == 200
    assert "graphiql" in page.text.lower()


AUDIT_LOG = "query ($target: String) { auditLog(target: $target) { action target } }"


def test_the_audit_log_selects_any_target_it_holds_node_ids_also_canonically(
    store: GraphStore,
) -> None:
    create_token(store, "auditor", "read", actor="cli")
    store.upsert([Node.from_id("model:m@7", created_at=T0)], audit=[
        AuditEntry(action="upsert", target="model:m@7", actor="ci"),
        AuditEntry(action="ingest.manifests", target="demo", actor="cli")])
    settings = Settings(neo4j_uri=None)
    with TestClient(create_app(settings, store=store)) as client:
        secret = create_token(store, "reader", "read", actor="cli")[1]
        client.headers["Authorization"] = f"Bearer {secret}"

        def selected(target: str) -> Any:
            return gql(client, AUDIT_LOG, target=target)

        # A token's and a load's entries are no node's: the target was refused as no ID.
        assert selected("token:auditor")["data"]["auditLog"] == [
            {"action": "token.create", "target": "token:auditor"}]
        assert selected(" demo ")["data"]["auditLog"] == [
            {"action": "ingest.manifests", "target": "demo"}]
        assert selected("model:m@v7")["data"]["auditLog"] == [
            {"action": "upsert", "target": "model:m@7"}]
        assert selected("nothing-like-it")["data"]["auditLog"] == []
        blank = selected("  ")
    assert blank["data"] is None
    assert blank["errors"][0]["message"].startswith("target: empty")


PAGED_LOG = "query ($after: Int) { auditLog(first: 5000, after: $after) { seq target } }"


def test_the_audit_log_pages_on_after_a_seq_past_entries_logged_at_one_time(
    store: GraphStore,
) -> None:
    # One load of 5,200 documents logs 5,201 entries at one time: `since` cannot page them.
    store.upsert(audit=[AuditEntry(action="upsert", target=f"t{i}", actor="ci", at=T0)
                        for i in range(5200)])
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as client:
        first = gql(client, PAGED_LOG)["data"]["auditLog"]
        rest = gql(client, PAGED_LOG, after=first[-1]["seq"])["data"]["auditLog"]

    assert len(first) == 5000 and len(rest) == 200
    assert [e["target"] for e in first + rest] == [f"t{i}" for i in range(5200)]


def test_an_audit_log_page_stops_at_its_size_and_says_so(store: GraphStore) -> None:
    # An entry holds properties before and after a change, up to 1 MiB each: 5,000 of them
    # in one answer (and fifty aliases of it) ran a server to gigabytes.
    large = {"text": "x" * 3 * 2**20}
    store.upsert(audit=[AuditEntry(action="upsert", target=f"t{i}", actor="ci", after=large)
                        for i in range(4)])
    query = "query ($after: Int) { auditLog(after: $after) { seq target } }"
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as client:
        cut = gql(client, query)
        rest = gql(client, query, after=cut["data"]["auditLog"][-1]["seq"])
        eleven = gql(client, "{ " + " ".join(f"a{i}: auditLog {{ seq }}"
                                             for i in range(11)) + " }")

    assert [e["target"] for e in cut["data"]["auditLog"]] == ["t0", "t1"]
    assert cut["extensions"]["warnings"] == [{
        "path": ["auditLog"],
        "message": "cut at 2 entries by their size (8 Mi characters a page): more follow; "
                   "page on with `after` set to the last `seq`"}]
    assert [e["target"] for e in rest["data"]["auditLog"]] == ["t2", "t3"]
    assert "asks for 11 graph walks" in eleven["errors"][0]["message"]

@pytest.mark.parametrize("cursor", ["!!!!", "", "MDAwMDAwMDF8c291cmNlOndoLnBheW1lbnRz"])
def test_a_search_cursor_not_of_a_search_is_refused_not_read_as_the_start(
    client: TestClient, cursor: str,
) -> None:
    # Not base64, empty, and a lineage cursor ("00000001|source:wh.payments"): each
    # restarted the list at its first page.
    found = gql(client, 'query ($a: String) { search(text: "wh", after: $a) { nodes { id } } }',
                a=cursor)

    assert found["data"] is None
    assert "is not a cursor" in found["errors"][0]["message"]

SEARCH_PAGE = """query ($after: String) { search(text: "big", first: 50, after: $after) {
    nodes { id } pageInfo { hasNextPage endCursor } } }"""


def test_a_search_page_stops_at_its_size_and_the_next_page_goes_on(store: GraphStore) -> None:
    large = {"text": "x" * (2**20 - 100)}  # about the most a node may hold
    store.upsert([Node.from_id(f"source:big{i}", created_at=T0, properties=large)
                  for i in range(10)])
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as client:
        first = gql(client, SEARCH_PAGE)["data"]["search"]
        rest = gql(client, SEARCH_PAGE, after=first["pageInfo"]["endCursor"])["data"]["search"]

    assert len(first["nodes"]) == 8 and first["pageInfo"]["hasNextPage"]
    assert sorted(n["id"] for n in first["nodes"] + rest["nodes"]) == sorted(
        f"source:big{i}" for i in range(10))
    assert not rest["pageInfo"]["hasNextPage"]

@pytest.mark.parametrize(("field", "argument"), [
    ("auditLog(since: $t) { seq }", "since"),
    ("auditLog(until: $t) { seq }", "until"),
    ('blastRadius(id: "model:m@7", since: $t) { totalTraffic }', "since"),
    ("unregistered(until: $t) { requests }", "until"),
    ('driftSources(id: "model:m@7", onset: $t) { score }', "onset"),
    ('resolve(name: "b", environment: "production", asOf: $t) { id }', "asOf"),
])
def test_a_time_argument_with_no_utc_equivalent_is_refused_naming_it(
        client: TestClient, field: str, argument: str) -> None:
    # Year 1 at +01:00 is year 0 in UTC: refused with the same words by both stores.
    found = gql(client, f"query ($t: DateTime!) {{ {field} }}", t="0001-01-01T00:00:00+01:00")

    assert not any((found["data"] or {}).values())  # null, or the nullable field null
    assert found["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert found["errors"][0]["message"].startswith(f"{argument}: ")
    assert "out of range in UTC" in found["errors"][0]["message"]
