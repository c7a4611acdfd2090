"""A bundle's evaluations and approvals are read the newest ``ANNOTATIONS_READ`` of each
kind (CI may evaluate a bundle on every commit): the gates judge the latest evaluation
still, and a trace or an evidence pack that left older ones out says so."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph import registry
from lineagegraph.graph.governance import evidence_pack
from lineagegraph.graph.store import GraphStore
from lineagegraph.schema import AuditEntry, Edge, Node

from .test_governance import EU_PRODUCTION, T0, gate, setup_bundle

TRACE = """{ trace(requestId: "req-1") { evaluations { id } approvals { id } } }"""
EVALS = [(0.95, 0.9)] * 5 + [(0.5, 0.9)]  # the latest fails


@pytest.fixture
def few(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(registry, "ANNOTATIONS_READ", 3)
    return 3


def _with_request(store: GraphStore) -> None:
    bundle = setup_bundle(store, policy=dict(EU_PRODUCTION), evals=EVALS,
                          approvers=["ana", "bo", "cy", "di"])
    store.upsert([Node.from_id("outcome:req-1", created_at=T0 + timedelta(days=1),
                               properties={"environment": "production"})],
                 [Edge(source="outcome:req-1", type="SERVED_BY", target=bundle)])


def test_a_trace_shows_the_newest_annotations_and_says_older_ones_are_left_out(
        store: GraphStore, few: int) -> None:
    _with_request(store)

    with TestClient(create_app(Settings(neo4j_uri=None, warm_up=False), store=store)) as c:
        body = c.post("/graphql", json={"query": TRACE}).json()

    trace = body["data"]["trace"]
    assert [e["id"] for e in trace["evaluations"]] == [f"eval:suite/1-{i}" for i in (3, 4, 5)]
    assert len(trace["approvals"]) == few
    assert any("approvals and evaluations: some are left out" in w["message"]
               for w in body["extensions"]["warnings"])


def test_the_eval_gate_judges_the_latest_evaluation_of_many(store: GraphStore,
                                                              few: int) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION), evals=EVALS)

    assert gate(store, "eval") == (False, "eval:suite/1-5 scored 0.5 < threshold 0.9")


def test_an_evidence_pack_says_when_older_annotations_were_left_out(
        store: GraphStore, few: int) -> None:
    _with_request(store)

    pack = evidence_pack(store, "b", "1")

    assert pack.annotations_cut
    assert len(pack.evaluations) == len(pack.approvals) == few


def test_nothing_is_said_cut_when_every_annotation_is_read(store: GraphStore) -> None:
    _with_request(store)

    pack = evidence_pack(store, "b", "1")

    assert not pack.annotations_cut
    assert len(pack.evaluations) == len(EVALS) and len(pack.approvals) == 4


def test_an_evidence_pack_reads_its_audit_entries_at_once_and_notes_a_cut(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from lineagegraph.graph import governance

    _with_request(store)
    store.upsert(audit=[
        AuditEntry(action="upsert", target="bundle:b@1", actor="ci", at=T0),
        AuditEntry(action="approve", target="approval:b@1/ana", actor="ana",
                   at=T0 + timedelta(hours=1)),
        AuditEntry(action="upsert", target="bundle:other@1", actor="ci", at=T0)])
    whole = evidence_pack(store, "b", "1")
    monkeypatch.setattr(governance, "EVIDENCE_AUDIT", 1)
    cut = evidence_pack(store, "b", "1")

    assert [(e.action, e.target) for e in whole.audit] == [
        ("upsert", "bundle:b@1"), ("approve", "approval:b@1/ana")]
    assert not whole.audit_cut
    assert cut.audit_cut and cut.audit == whole.audit[:1]
