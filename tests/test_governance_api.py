"""Governance over GraphQL with real tokens: the promotion report, promote/rollback/approve
and upsert mutations, their scopes, and the audit entries they leave under the token's
name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.auth import create_token
from lineagegraph.api.settings import Settings
from lineagegraph.graph.store import Direction, GraphStore

from .story import load_story


class Caller:
    def __init__(self, client: TestClient, secret: str) -> None:
        self.client, self.headers = client, {"Authorization": f"Bearer {secret}"}

    def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        response = self.client.post("/graphql", json={"query": query, "variables": variables},
                                    headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def callers(store: GraphStore) -> Iterator[dict[str, Caller]]:
    load_story(store)
    secrets = {name: create_token(store, name, scope, actor="test")[1]
               for name, scope in (("reader", "read"), ("ci-bot", "write"),
                                   ("release-eng", "admin"))}
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as client:
        yield {name: Caller(client, secret) for name, secret in secrets.items()}


IMPACT = """query ($b: String!, $v: String!, $env: String!) {
  promotionImpact(bundle: $b, version: $v, environment: $env) {
    verdict reasons gates { name passed reason } current { id } candidate { id }
    diff { field current candidate }
    blastRadius { root { id } traffic { environment count } }
  }
}"""

PROMOTE = """mutation ($b: String!, $v: String!, $env: String!, $why: String) {
  promote(bundle: $b, version: $v, environment: $env, overrideReason: $why) {
    promoted report { verdict reasons } move { environment fromVersion toVersion actor reason }
  }
}"""


def test_a_reader_sees_the_promotion_report(callers: dict[str, Caller]) -> None:
    report = callers["reader"].gql(IMPACT, b="support-triage", v="15",
                                   env="production")["data"]["promotionImpact"]

    assert report["verdict"] == "ALLOW"
    assert report["current"]["id"] == "bundle:support-triage@14"
    assert {d["field"] for d in report["diff"]} == {"model", "prompt", "policy",
                                                    "params.max_tokens"}
    assert report["blastRadius"]["root"]["id"] == "bundle:support-triage@14"


def test_promote_needs_admin_even_next_to_a_read(callers: dict[str, Caller]) -> None:
    document = "query R { node(id: \"bundle:support-triage@15\") { id } } " + PROMOTE.replace(
        "mutation (", "mutation M (")
    writer = callers["ci-bot"].client.post(
        "/graphql", headers=callers["ci-bot"].headers,
        json={"query": document, "operationName": "M",
              "variables": {"b": "support-triage", "v": "15", "env": "production"}}).json()
    read = callers["reader"].client.post(
        "/graphql", headers=callers["reader"].headers,
        json={"query": document, "operationName": "R"}).json()

    assert writer["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "admin" in writer["errors"][0]["message"]
    assert read["data"]["node"]["id"] == "bundle:support-triage@15"


def test_admin_promotes_then_rolls_back_with_audit_entries_under_its_name(
    callers: dict[str, Caller], store: GraphStore,
) -> None:
    admin = callers["release-eng"]

    promoted = admin.gql(PROMOTE, b="support-triage", v="15", env="production")["data"]
    rolled = admin.gql("""mutation { rollback(name: "support-triage", environment:
        "production", reason: "quality") { move { fromVersion toVersion } warnings } }""")

    assert promoted["promote"]["promoted"] is True
    assert promoted["promote"]["move"] == {
        "environment": "production", "fromVersion": "14", "toVersion": "15",
        "actor": "release-eng", "reason": "gates passed"}
    assert rolled["data"]["rollback"]["move"] == {"fromVersion": "15", "toVersion": "14"}
    assert any("policy pack differs" in w for w in rolled["data"]["rollback"]["warnings"])
    log = admin.gql("""{ auditLog(actor: "release-eng") { action target actor } }""")
    assert [(e["action"], e["target"]) for e in log["data"]["auditLog"]] == [
        ("promote", "bundle:support-triage@15"), ("rollback", "bundle:support-triage@15"),
        ("rollback.restore", "bundle:support-triage@14")]
    assert store.stage_at("support-triage", "production") == "14"


def test_a_blocked_promotion_is_refused_unless_overridden_with_a_reason(
    callers: dict[str, Caller],
) -> None:
    admin = callers["release-eng"]

    refused = admin.gql(PROMOTE, b="fraud-scoring", v="2", env="staging")["data"]["promote"]
    empty = admin.gql(PROMOTE, b="fraud-scoring", v="2", env="staging", why="  ")
    forced = admin.gql(PROMOTE, b="fraud-scoring", v="2", env="staging",
                       why="incident 42")["data"]["promote"]

    assert refused["promoted"] is False and refused["move"] is None
    assert refused["report"]["verdict"] == "BLOCK"
    assert any(r.startswith("eval:") for r in refused["report"]["reasons"])
    assert "must say why" in empty["errors"][0]["message"]
    assert forced["promoted"] is True
    assert forced["move"]["reason"].startswith("override: incident 42")


def test_approve_records_the_caller_as_approver(callers: dict[str, Caller]) -> None:
    approval = callers["release-eng"].gql("""mutation { approve(target:
        "bundle:fraud-scoring@2", gate: "production", comment: "looks fine") {
        id properties } }""")["data"]["approve"]

    assert approval["id"] == "approval:bundle:fraud-scoring@2/release-eng/production"
    assert approval["properties"]["approved_by"] == "release-eng"


def test_upsert_needs_write_and_is_idempotent(callers: dict[str, Caller]) -> None:
    mutation = """mutation { upsert(nodes: [{id: "source:crm.accounts", properties:
        {residency: "eu"}}, {id: "dataset:crm.accounts@2026-11-20"}], edges: [{source:
        "dataset:crm.accounts@2026-11-20", type: "VERSION_OF", target: "source:crm.accounts"}])
        { nodes { created unchanged } edges { created unchanged } } }"""

    refused = callers["reader"].gql(mutation)
    first = callers["ci-bot"].gql(mutation)["data"]["upsert"]
    again = callers["ci-bot"].gql(mutation)["data"]["upsert"]
    bad = callers["ci-bot"].gql("""mutation { upsert(nodes: [{id: "feature:f@1"}], edges:
        [{source: "feature:f@1", type: "USES_MODEL", target: "source:crm.accounts"}])
        { nodes { created } } }""")

    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert first == {"nodes": {"created": 2, "unchanged": 0},
                     "edges": {"created": 1, "unchanged": 0}}
    assert again == {"nodes": {"created": 0, "unchanged": 2},
                     "edges": {"created": 0, "unchanged": 1}}
    assert "USES_MODEL cannot go from a Feature" in bad["errors"][0]["message"]


def test_an_approval_is_not_upserted_without_admin(callers: dict[str, Caller]) -> None:
    # Through upsert a write token could forge an approval that the promotion gate counts.
    forged = """mutation { upsert(nodes: [{id: "approval:forged", properties:
        {approved_by: "ceo"}}], edges: [{source: "approval:forged", type: "APPROVES",
        target: "bundle:fraud-scoring@2"}]) { nodes { created } } }"""
    edge_only = """mutation { upsert(nodes: [], edges: [{source:
        "approval:bundle:fraud-scoring@2/someone", type: "APPROVES",
        target: "bundle:support-triage@14"}]) { nodes { created } } }"""

    refused = callers["ci-bot"].gql(forged)
    refused_edge = callers["ci-bot"].gql(edge_only)
    report = callers["reader"].gql(IMPACT, b="fraud-scoring", v="2", env="production")
    allowed = callers["release-eng"].gql(forged)

    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert refused["errors"][0]["message"].startswith(
        "recording 1 approval(s) (approval:forged) needs the 'admin' scope")
    assert refused_edge["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "ceo" not in str(report["data"]["promotionImpact"]["gates"])
    assert allowed["data"]["upsert"] == {"nodes": {"created": 1}}


@pytest.mark.parametrize("edge_type", ["DERIVED_FROM", "SUPERSEDES"])
def test_an_upsert_linking_a_node_to_itself_is_refused_naming_it(
    callers: dict[str, Caller], store: GraphStore, edge_type: str,
) -> None:
    # As a manifest whose derived_from or supersedes names its own version is refused.
    body = callers["ci-bot"].gql("""mutation ($type: String!) {
        upsert(nodes: [], edges: [{source: "feature:txn_amount_7d@2", type: $type,
                        target: "feature:txn_amount_7d@2"}]) { nodes { created } } }""",
                                 type=edge_type)

    assert body["data"] is None or body["data"]["upsert"] is None
    assert body["errors"][0]["message"] == (
        f"feature:txn_amount_7d@2 -[{edge_type}]-> itself: an edge links a node to another")
    assert [h for h in store.expand(["feature:txn_amount_7d@2"], Direction.UPSTREAM,
                                    edge_types=[edge_type])
            if h.node.id == "feature:txn_amount_7d@2"] == []


def test_an_upsert_closing_a_supersedes_cycle_is_refused(
    callers: dict[str, Caller], store: GraphStore,
) -> None:
    # The story's @7 supersedes @6: @6 superseding @7 would make each replace the other.
    body = callers["ci-bot"].gql("""mutation { upsert(nodes: [], edges: [{
        source: "model:fraud-detector@6", type: "SUPERSEDES",
        target: "model:fraud-detector@7"}]) { nodes { created } } }""")

    assert body["data"] is None or body["data"]["upsert"] is None
    assert body["errors"][0]["message"].startswith(
        "model:fraud-detector@6 SUPERSEDES model:fraud-detector@7 would close a cycle: "
        "model:fraud-detector@7 already leads back to model:fraud-detector@6")
    assert store.expand(["model:fraud-detector@6"], Direction.UPSTREAM,
                        edge_types=["SUPERSEDES"]) == []


def test_upserts_are_audited_with_what_was_there_before_and_resends_are_not(
    callers: dict[str, Caller],
) -> None:
    def upsert(owner: str, weight: int) -> None:
        body = callers["ci-bot"].gql("""mutation ($owner: String!, $props: JSON!) {
            upsert(nodes: [{id: "source:crm.audited", properties: {owner: $owner}}],
                   edges: [{source: "feature:txn_amount_7d@2", type: "DERIVED_FROM",
                            target: "source:crm.audited", properties: $props}])
            { nodes { created } } }""", owner=owner, props={"weight": weight})
        assert "errors" not in body, body

    upsert("a", 1)
    upsert("a", 1)  # the same again: no change, no entry
    upsert("b", 1)  # the node changes, the edge does not
    upsert("b", 2)  # the edge changes
    log = callers["reader"].gql("""{ auditLog(actor: "ci-bot") {
        action target before after } }""")["data"]["auditLog"]

    assert [(e["action"], e["target"], e["before"]) for e in log] == [
        ("upsert", "source:crm.audited", None),
        ("link", "feature:txn_amount_7d@2", None),
        ("upsert", "source:crm.audited", {"kind": "DataSource", "properties": {"owner": "a"}}),
        ("link", "feature:txn_amount_7d@2", {"type": "DERIVED_FROM",
                                              "target": "source:crm.audited",
                                              "properties": {"weight": 1}}),
    ]
    assert log[3]["after"]["properties"] == {"weight": 2}


def test_a_registered_bundle_keeps_its_pins_and_params(callers: dict[str, Caller]) -> None:
    # What was approved and promoted, and what a trace says served a request, stays put.
    swap = callers["ci-bot"].gql("""mutation { upsert(nodes: [], edges: [{source:
        "bundle:fraud-scoring@2", type: "USES_MODEL", target: "model:fraud-detector@6"}])
        { nodes { created } } }""")
    params = callers["ci-bot"].gql("""mutation { upsert(nodes: [{id: "bundle:fraud-scoring@2",
        properties: {params: {threshold: 0.1}}}]) { nodes { updated } } }""")
    parts = callers["reader"].gql("""{ node(id: "bundle:fraud-scoring@2") {
        properties ... on Bundle { modelVersion { id } } } }""")["data"]["node"]

    assert swap["errors"][0]["message"].startswith(
        "bundle:fraud-scoring@2 is registered, and a registered version does not change "
        "(a new USES_MODEL → model:fraud-detector@6)")
    assert "params" in params["errors"][0]["message"]
    assert parts["modelVersion"] == {"id": "model:fraud-detector@7"}


@pytest.mark.parametrize("field", [
    'resolve(name: "support-triage", environment: $e) { id }',
    'promotionImpact(bundle: "support-triage", version: "14", environment: $e) { verdict }',
])
@pytest.mark.parametrize("environment", ["", " production"])
def test_an_environment_argument_that_is_no_environment_name_is_refused_naming_it(
    callers: dict[str, Caller], field: str, environment: str,
) -> None:
    # resolve answered null, as if nothing were live there: a blank makes no environment.
    found = callers["release-eng"].gql(f"query ($e: String!) {{ {field} }}", e=environment)

    assert found["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert found["errors"][0]["message"].startswith("environment ")


def test_a_rollback_in_no_environment_name_is_refused_naming_it(
    callers: dict[str, Caller],
) -> None:
    found = callers["release-eng"].gql(
        'mutation { rollback(name: "support-triage", environment: " production") '
        "{ move { toVersion } } }")

    assert found["errors"][0]["message"].startswith("environment ' production'")
