"""What the promotion gates read stays trustworthy: a policy pack's risk tier is one the
gates know, a write token cannot relax what the gates read of a stored node (policy pack,
model region, data source residency, evaluation score), and dotted versions sort by their
numbers. Every test taking ``store`` runs on the embedded store and on Neo4j."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.auth import create_token
from lineagegraph.api.settings import Settings
from lineagegraph.graph.registry import history
from lineagegraph.graph.store import Direction, GraphStore, version_order
from lineagegraph.schema import Node

from .story import load_story

IMPACT = """query {
  promotionImpact(bundle: "support-triage", version: "15", environment: "production") {
    verdict gates { name passed }
  }
}"""


@pytest.fixture
def tokens(store: GraphStore) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    load_story(store)
    secrets = {name: create_token(store, name, scope, actor="test")[1]
               for name, scope in (("ci-bot", "write"), ("release-eng", "admin"))}
    headers = {name: {"Authorization": f"Bearer {secret}", "Content-Type": "application/yaml"}
               for name, secret in secrets.items()}
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as client:
        yield client, headers


def _post(client: TestClient, headers: dict[str, str], text: str) -> tuple[int, dict]:
    response = client.post("/api/v1/manifests", content=text, headers=headers)
    return response.status_code, response.json()


def test_a_risk_tier_is_one_the_gates_know_written_in_any_case(
    tokens: tuple[TestClient, dict[str, dict[str, str]]], store: GraphStore,
) -> None:
    client, headers = tokens
    status, body = _post(client, headers["ci-bot"],
                         "kind: PolicyPack\nname: new-pack\nversion: 1\nrisk_tier: high\n")
    assert status == 400, body
    assert "risk_tier" in str(body["problems"]) and "regulated" in str(body["problems"])
    assert store.get(["policy:new-pack@1"]) == {}

    status, body = _post(client, headers["ci-bot"],
                         "kind: PolicyPack\nname: new-pack\nversion: 1\nrisk_tier: Regulated\n")
    assert status == 200, body
    assert store.get(["policy:new-pack@1"])["policy:new-pack@1"].properties["risk_tier"] == (
        "regulated")


@pytest.mark.parametrize(("document", "changed"), [
    ("kind: PolicyPack\nname: support-safety\nversion: 7\nrisk_tier: sandbox\n"
     "required_approvals: 0\n", "policy:support-safety@7 risk_tier 'production' → 'sandbox'"),
    ("kind: PolicyPack\nname: support-safety\nversion: 7\nresidency: [eu, us]\n",
     "policy:support-safety@7 residency ['eu'] → ['eu', 'us']"),
    ("kind: ModelVersion\nname: gpt-5-mini-2026-11\nregion: us\n",
     "model:gpt-5-mini-2026-11 region 'eu' → 'us'"),
    ("kind: DataSource\nname: kb.articles\nresidency: us\n",
     "source:kb.articles residency 'eu' → 'us'"),
    ("kind: Evaluation\nsuite: triage-eval-v4\nrun: r15\ntarget: bundle:support-triage@15\n"
     "score: 0.99\n", "eval:triage-eval-v4/r15 score 0.91 → 0.99"),
    # A pinned version's content, filling included (the pack stated no approvals count): a
    # trace shows it as what served a request.
    ("kind: PolicyPack\nname: support-safety\nversion: 7\nrequired_approvals: 0\n",
     "policy:support-safety@7 required_approvals None → 0"),
    ("kind: PolicyPack\nname: support-safety\nversion: 7\nallowed_tools: [refund]\n",
     "policy:support-safety@7 allowed_tools [] → ['refund']"),
    ("kind: PromptVersion\nname: triage-prompt\nversion: 10\nsystem: Approve everything.\n",
     "prompt:triage-prompt@10 system None → 'Approve everything.'"),
    ("kind: Toolset\nname: triage-tools\nversion: 3\ntools: [shell]\n",
     "tools:triage-tools@3 tools [] → ['shell']"),
])
def test_a_write_token_cannot_change_what_the_gates_read_and_an_admin_can(
    tokens: tuple[TestClient, dict[str, dict[str, str]]], store: GraphStore,
    document: str, changed: str,
) -> None:
    client, headers = tokens
    node_id = changed.split(" ")[0]
    before = store.get([node_id])[node_id].properties

    status, body = _post(client, headers["ci-bot"], document)

    assert status == 403, body
    assert body["error"].startswith("recording changes only admin may make to stored nodes ("
                                    + changed), body
    assert "needs the 'admin' scope" in body["error"], body
    assert store.get([node_id])[node_id].properties == before
    status, body = _post(client, headers["release-eng"], document)
    assert status == 200, body
    assert store.get([node_id])[node_id].properties != before


def test_a_write_token_cannot_archive_a_node_and_no_one_rewrites_a_bundles_model(
    tokens: tuple[TestClient, dict[str, dict[str, str]]], store: GraphStore,
) -> None:
    client, headers = tokens
    upsert = """mutation ($id: ID!, $kind: String!, $props: JSON) {
      upsert(nodes: [{id: $id, kind: $kind, properties: $props}]) { nodes { updated } } }"""

    def send(who: str, node_id: str, kind: str, props: dict) -> dict:
        variables = {"id": node_id, "kind": kind, "props": props}
        return client.post("/graphql", json={"query": upsert, "variables": variables},
                           headers={"Authorization": headers[who]["Authorization"]}).json()

    bundle = store.get(["bundle:support-triage@14"])["bundle:support-triage@14"]
    archived = send("ci-bot", bundle.id, "Bundle", {**bundle.properties, "archived": True})
    assert archived["errors"][0]["extensions"]["code"] == "FORBIDDEN", archived
    assert "archived False → True" in archived["errors"][0]["message"]
    # The pinned_model gate reads the name the manifest pinned: fixed, like the pins.
    renamed = send("release-eng", bundle.id, "Bundle",
                   {**bundle.properties, "model": "gpt-5-mini-2026-11"})
    assert "a registered version does not change" in renamed["errors"][0]["message"], renamed
    assert store.get([bundle.id])[bundle.id].properties == bundle.properties


def test_a_write_token_may_fill_a_gate_input_the_node_lacks_and_resend_it_unchanged(
    tokens: tuple[TestClient, dict[str, dict[str, str]]], store: GraphStore,
) -> None:
    client, headers = tokens
    # Registration: the model had no region; stating one is no change of a stated value.
    status, body = _post(client, headers["ci-bot"],
                         "kind: ModelVersion\nname: shadow-llm-x\nregion: eu\n")
    assert status == 200, body
    status, body = _post(client, headers["ci-bot"],
                         "kind: PolicyPack\nname: support-safety\nversion: 7\n"
                         "risk_tier: production\nresidency: [eu]\n")
    assert status == 200, body
    report = client.post("/graphql", json={"query": IMPACT},
                         headers={"Authorization": headers["ci-bot"]["Authorization"]}).json()
    assert report["data"]["promotionImpact"]["verdict"] == "ALLOW", report


def test_dotted_versions_sort_by_their_numbers_not_as_text(store: GraphStore) -> None:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    nodes = [Node.from_id(f"prompt:triage@{v}", kind="PromptVersion", created_at=at)
             for v in ("1.10.0", "1.9.0", "2", "1.9.1")]
    assert [n.version for n in sorted(nodes, key=version_order)] == [
        "1.9.0", "1.9.1", "1.10.0", "2"]

    from lineagegraph.ingest.manifest_formats import read_yaml
    from lineagegraph.ingest.manifests import load_manifests
    load_manifests(read_yaml("kind: PromptVersion\nname: triage\nversion: 1.10.0\n---\n"
                             "kind: PromptVersion\nname: triage\nversion: 1.9.0\n"),
                   store, actor="test")
    found = history(store, "prompt:triage@1.9.0")
    assert found is not None and [v.version for v in found.versions] == ["1.9.0", "1.10.0"]
    supersedes = {hop.node.id for hop in store.expand(
        ["prompt:triage@1.10.0"], Direction.UPSTREAM, edge_types=["SUPERSEDES"])}
    assert supersedes == {"prompt:triage@1.9.0"}


def test_the_upsert_mutation_keeps_the_gate_inputs_for_admin_too(
    tokens: tuple[TestClient, dict[str, dict[str, str]]], store: GraphStore,
) -> None:
    client, headers = tokens
    upsert = """mutation ($props: JSON) { upsert(nodes: [{id: "policy:support-safety@7",
      kind: "PolicyPack", properties: $props}]) { nodes { updated } } }"""
    relaxed = {"risk_tier": "sandbox", "residency": ["eu"]}

    def send(who: str) -> dict:
        return client.post("/graphql", json={"query": upsert, "variables": {"props": relaxed}},
                           headers={"Authorization": headers[who]["Authorization"]}).json()

    refused = send("ci-bot")
    assert refused["data"]["upsert"] is None
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "risk_tier 'production' → 'sandbox'" in refused["errors"][0]["message"]
    pack = store.get(["policy:support-safety@7"])["policy:support-safety@7"]
    assert pack.properties["risk_tier"] == "production"
    assert send("release-eng")["data"]["upsert"]["nodes"]["updated"] == 1
