"""Answers an investigator relies on at the edges, on the story of ``tests/story.py``, on
both stores: a trace after retention archived what served the request, request IDs as
they are logged, a bundle named without a version at a time without a zone, and a blast
radius that says when the node cap cut it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from graphql import parse

from lineagegraph.api.app import create_app
from lineagegraph.api.response_order import document_order
from lineagegraph.api.settings import Settings
from lineagegraph.graph.store import Direction, GraphStore

from .story import load_story

TRACE = """query ($id: String!) { trace(requestId: $id) {
  outcome { id } bundle { id properties } modelVersion { id } promptVersion { id }
  policyPack { id } } }"""


def client_for(store: GraphStore, **settings: Any) -> TestClient:
    return TestClient(create_app(Settings(neo4j_uri=None, **settings), store=store))


@pytest.fixture
def client(store: GraphStore) -> Iterator[TestClient]:
    load_story(store)
    with client_for(store) as test_client:
        yield test_client


def gql(client: TestClient, query: str, **variables: Any) -> dict[str, Any]:
    body = client.post("/graphql", json={"query": query, "variables": variables}).json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def test_a_trace_shows_the_bundle_that_served_even_once_retention_archived_it(
    client: TestClient, store: GraphStore,
) -> None:
    bundle = store.get(["bundle:support-triage@15"])["bundle:support-triage@15"]
    store.upsert([bundle.model_copy(update={"properties": {**bundle.properties,
                                                           "archived": True}})])

    trace = gql(client, TRACE, id="req-2002")["trace"]

    assert trace["bundle"]["id"] == "bundle:support-triage@15"
    assert trace["bundle"]["properties"]["archived"] is True
    assert (trace["modelVersion"]["id"], trace["promptVersion"]["id"],
            trace["policyPack"]["id"]) == ("model:gpt-5-mini-2026-11",
                                           "prompt:triage-prompt@10", "policy:support-safety@7")


def test_request_ids_are_found_again_as_they_were_logged(
    client: TestClient, store: GraphStore,
) -> None:
    records = [{"request_id": rid, "timestamp": "2026-11-08T06:00:00Z",
                "environment": "production", "bundle": "support-triage@15"}
               for rid in ("outcome:req-x", " req-space ")]
    assert client.post("/api/v1/outcomes", json=records).status_code == 200

    # A request whose own ID starts with "outcome:": by that ID, and by its outcome ID.
    for asked in ("outcome:req-x", "outcome:outcome:req-x"):
        assert gql(client, TRACE, id=asked)["trace"]["outcome"]["id"] == (
            "outcome:outcome:req-x")
    # Blanks around an ID are no part of it, as anywhere an ID is read.
    assert gql(client, TRACE, id="req-space")["trace"]["outcome"]["id"] == "outcome:req-space"
    assert store.get(["outcome:req-space"])["outcome:req-space"].name == "req-space"


def test_a_bundle_named_without_version_at_a_time_without_zone_is_the_one_live_then(
    client: TestClient, store: GraphStore,
) -> None:
    # Production moved 14 → 15 on 7 November and back to 14 on the 10th (the story).
    response = client.post("/api/v1/outcomes", json=[
        {"request_id": "bare-naive", "timestamp": "2026-11-08T06:00:00",
         "environment": "production", "bundle": "support-triage"}])

    assert response.status_code == 200, response.text
    served = {hop.node.id for hop in store.expand(["outcome:bare-naive"], Direction.UPSTREAM,
                                                  edge_types=["SERVED_BY"])}
    assert served == {"bundle:support-triage@15"}


def test_a_blast_radius_cut_by_the_node_cap_says_so_in_its_warnings(store: GraphStore) -> None:
    load_story(store)
    query = """{ blastRadius(id: "model:gpt-5-mini-2026-11") { warnings
      downstream { truncated } } }"""
    with client_for(store) as whole, client_for(store, max_nodes=2) as capped:
        full = gql(whole, query)["blastRadius"]
        cut = gql(capped, query)["blastRadius"]

    assert full["downstream"]["truncated"] is False
    assert not any(w.startswith("downstream: partial") for w in full["warnings"])
    assert cut["downstream"]["truncated"] is True
    assert cut["warnings"][0].startswith("downstream: partial")


@pytest.mark.parametrize("window", ['since: "9999-12-31T12:00:00Z"',
                                    'until: "0001-01-01T12:00:00Z"'])
def test_a_window_within_the_calendars_first_or_last_day_counts_no_traffic(
    client: TestClient, window: str,
) -> None:
    radius = gql(client, f"""{{ blastRadius(id: "model:gpt-5-mini-2026-11", {window})
      {{ totalTraffic traffic {{ environment count }} }} }}""")["blastRadius"]

    assert (radius["totalTraffic"], radius["traffic"]) == (0, [])


def test_requests_served_by_an_archived_version_still_count_in_a_blast_radius(
    client: TestClient, store: GraphStore,
) -> None:
    query = """{ blastRadius(id: "model:gpt-5-mini-2026-11") { totalTraffic
      traffic { environment count } bundles { bundle { id } } downstream { nodes {
      node { id } } } } }"""
    before = gql(client, query)["blastRadius"]
    bundle = store.get(["bundle:support-triage@15"])["bundle:support-triage@15"]
    store.upsert([bundle.model_copy(update={"properties": {**bundle.properties,
                                                           "archived": True}})])
    after = gql(client, query)["blastRadius"]

    assert after["totalTraffic"] == before["totalTraffic"] > 0
    assert after["traffic"] == before["traffic"]
    # The archived version is out of the answer itself.
    assert [b["bundle"]["id"] for b in before["bundles"]] == ["bundle:support-triage@15"]
    assert after["bundles"] == []
    assert "bundle:support-triage@15" not in {n["node"]["id"]
                                              for n in after["downstream"]["nodes"]}


@pytest.mark.parametrize(("field", "query", "said"), [
    ("node", '{ node(id: "model:fraud-detectr@7") { id } }', "no node model:fraud-detectr@7"),
    ("history", '{ history(id: "bundle:support-triage@99") { node { id } } }',
     "no node bundle:support-triage@99"),
    ("trace", '{ trace(requestId: "req-typo") { environment } }', "no request 'req-typo'"),
    ("blastRadius", '{ blastRadius(id: "model:nope@1") { totalTraffic } }',
     "no node model:nope@1"),
])
def test_a_lookup_answering_null_says_what_it_did_not_find(
    client: TestClient, field: str, query: str, said: str,
) -> None:
    # A mistyped ID at 3 a.m. answered null, which reads the same as a field left out.
    answer = client.post("/graphql", json={"query": query}).json()

    assert answer["data"] == {field: None}
    assert answer["extensions"]["warnings"] == [
        {"path": [field], "message": f"{said} in the graph"}]


@pytest.mark.parametrize(("field", "query"), [
    ("node", '{ node(id: "model:nope@1") { id } }'),
    ("history", '{ history(id: "model:nope@1") { node { id } } }'),
    ("trace", '{ trace(requestId: "req-typo") { environment } }'),
    ("blastRadius", '{ blastRadius(id: "model:nope@1") { totalTraffic } }'),
    ("lineage", '{ lineage(id: "model:nope@1") { truncated } }'),
    ("driftSources", '{ driftSources(id: "model:nope@1", onset: "2026-11-08T00:00:00Z") '
     "{ hops } }"),
    ("promotionImpact", '{ promotionImpact(bundle: "nope", version: "1", '
     'environment: "production") { verdict } }'),
])
def test_each_fields_description_says_what_an_unknown_id_answers(
    client: TestClient, field: str, query: str,
) -> None:
    # Clients are built against the schema: a null and an error are both kept (README
    # "Queries"), and the field's own description is where a client reads which it gets.
    answer = client.post("/graphql", json={"query": query}).json()
    fields = gql(client, "{ __type(name: \"Query\") { fields { name description } } }")
    described = {f["name"]: f["description"] for f in fields["__type"]["fields"]}[field]

    if "errors" in answer:
        assert answer["data"] is None or answer["data"] == {field: None}
        assert "does not hold is an error naming it" in described, described
    else:
        assert answer["data"] == {field: None}
        assert "Null for a" in described and "does not hold" in described, described


def _slow_among_quick(slow: str, quick: str) -> tuple[str, list[str]]:
    """A query of two slow fields among sixteen quick ones, and its response keys in the
    order they are written: the quick ones after the first slow one finish before it."""
    keys = ["s0", *(f"q{i}" for i in range(8)), "s1", *(f"q{i}" for i in range(8, 16))]
    fields = [(slow if key[0] == "s" else quick).format(key=key, n=key[1:]) for key in keys]
    return "{ " + " ".join(fields) + " }", keys


def test_warnings_come_in_the_order_of_the_fields_not_of_their_work_finishing(
    store: GraphStore,
) -> None:
    # The fields run at once: a slow walk's warning was listed after the quick lookups'
    # after it, and the same query got its warnings in another order run to run.
    load_story(store)
    query, keys = _slow_among_quick(
        '{key}: driftSources(id: "bundle:support-triage@15", onset: "2026-11-08T00:00:00Z") '
        "{{ hops }}", '{key}: node(id: "model:nope@{n}") {{ id }}')
    with client_for(store, max_nodes=2) as capped:
        answer = capped.post("/graphql", json={"query": query}).json()

    assert [w["path"] for w in answer["extensions"]["warnings"]] == [[key] for key in keys]


def test_errors_come_in_the_order_of_the_fields_not_of_their_work_failing(
    store: GraphStore,
) -> None:
    # graphql-core lists errors as the fields' work fails: a slow walk's error came after
    # the quick lookups' written after it.
    load_story(store)
    query, keys = _slow_among_quick(
        '{key}: blastRadius(id: "bundle:support-triage@15") '
        '{{ downstream(after: "YQ=") {{ truncated }} }}', '{key}: node(id: "nope{n}") {{ id }}')
    with client_for(store) as client:
        answer = client.post("/graphql", json={"query": query}).json()

    assert [e["path"][0] for e in answer["errors"]] == keys


def test_document_order_follows_aliases_fragments_and_list_items() -> None:
    document = parse("""
        query Other { z: node(id: "a") { id } }
        query Asked { b: search(text: "x") { id } ...Top a: node(id: "b") { id } }
        fragment Top on Query { d: node(id: "d") { id } c: lineage(id: "c") {
            nodes { degree node { id } } } }
    """)
    place = document_order(document, "Asked")
    paths: list[list[str | int]] = [
        ["a", "id"], ["c", "nodes", 1, "node"], ["c", "nodes", 0, "degree"], ["b"], ["z"],
        ["c", "nodes", 0, "node"], ["d"]]

    # "z" is no field of the operation asked (first); the fragment's field is placed where
    # the fragment is spread, in the order written there ("d" before "c").
    assert sorted(paths, key=place) == [
        ["z"], ["b"], ["d"], ["c", "nodes", 0, "degree"], ["c", "nodes", 0, "node"],
        ["c", "nodes", 1, "node"], ["a", "id"]]
