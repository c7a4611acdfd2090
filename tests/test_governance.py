"""Promotion gates one by one (each passing and failing), the report's diff, promote and
rollback round trips with the audit entries they leave — on both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lineagegraph.graph.governance import (
    GatePolicy,
    GovernanceError,
    approve,
    promote,
    promotion_report,
    rollback,
)
from lineagegraph.graph.store import GraphStore
from lineagegraph.schema import Edge, Node, StageMove

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def setup_bundle(
    store: GraphStore,
    version: int = 1,
    *,
    model: str = "model:gpt-5-mini-2026-08",
    model_props: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    evals: list[tuple[float, float]] = ((0.94, 0.9),),  # type: ignore[assignment]
    approvers: list[str] = ("zyql",),  # type: ignore[assignment]
    sources: dict[str, str | None] | None = None,
    params: dict[str, Any] | None = None,
    prompt: str = "prompt:triage@9",
) -> str:
    """bundle:b@{version} with what it pins; returns its ID."""
    bundle = f"bundle:b@{version}"
    nodes = [Node.from_id(bundle, created_at=T0, properties={"params": params or {}}),
             Node.from_id(model, kind="ModelVersion", created_at=T0,
                          properties=model_props if model_props is not None else {"region": "eu"}),
             Node.from_id(prompt, created_at=T0)]
    edges = [Edge(source=bundle, type="USES_MODEL", target=model),
             Edge(source=bundle, type="USES_PROMPT", target=prompt)]
    if policy is not None:
        policy_id = f"policy:safety@{policy.pop('version', 1)}"
        nodes.append(Node.from_id(policy_id, created_at=T0, properties=policy))
        edges.append(Edge(source=bundle, type="GOVERNED_BY", target=policy_id))
    for i, (score, threshold) in enumerate(evals):
        eval_id = f"eval:suite/{version}-{i}"
        nodes.append(Node.from_id(eval_id, created_at=T0 + timedelta(hours=i), properties={
            "suite": "suite", "run": f"{version}-{i}", "score": score, "threshold": threshold}))
        edges.append(Edge(source=eval_id, type="EVALUATES", target=bundle))
    for who in approvers:
        approval_id = f"approval:b@{version}/{who}"
        nodes.append(Node.from_id(approval_id, created_at=T0, properties={"approved_by": who}))
        edges.append(Edge(source=approval_id, type="APPROVES", target=bundle))
    for source, residency in (sources or {}).items():
        nodes.append(Node.from_id(source, created_at=T0,
                                  properties={"residency": residency} if residency else {}))
        edges.append(Edge(source=bundle, type="RETRIEVES_FROM", target=source))
    store.upsert(nodes, edges)
    return bundle


EU_PRODUCTION = {"risk_tier": "production", "residency": ["eu"]}


def gate(store: GraphStore, name: str, env: str = "production",
         policy: GatePolicy | None = None) -> tuple[bool, str]:
    report = promotion_report(store, "b", "1", env, policy or GatePolicy())
    found = next(g for g in report.gates if g.name == name)
    return found.passed, found.reason or ""


# -- eval -------------------------------------------------------------------------------------


def test_eval_gate_passes_when_the_latest_score_reaches_the_threshold(store: GraphStore) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION), evals=[(0.5, 0.9), (0.92, 0.9)])
    assert gate(store, "eval") == (True, "eval:suite/1-1 scored 0.92 ≥ threshold 0.9")


def test_eval_gate_fails_below_threshold(store: GraphStore) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION), evals=[(0.95, 0.9), (0.8, 0.9)])
    assert gate(store, "eval") == (False, "eval:suite/1-1 scored 0.8 < threshold 0.9")


def test_a_missing_evaluation_fails_production_tier_but_not_sandbox(store: GraphStore) -> None:
    setup_bundle(store, policy={"risk_tier": "production"}, evals=[])
    assert gate(store, "eval")[0] is False
    store.upsert([Node.from_id("policy:safety@1", properties={"risk_tier": "sandbox"})])
    assert gate(store, "eval")[0] is True


# -- approvals --------------------------------------------------------------------------------


def test_approvals_gate_counts_distinct_approvers_against_the_tier(store: GraphStore) -> None:
    setup_bundle(store, policy={"risk_tier": "regulated", "residency": ["eu"]},
                 approvers=["zyql"])
    assert gate(store, "approvals") == (False, "1 of 2 required approvals (regulated tier): "
                                               "zyql")
    approve(store, "bundle:b@1", "second-reviewer")
    assert gate(store, "approvals")[0] is True


def test_approvals_gate_counts_names_that_differ_only_in_case_as_one_approver(
    store: GraphStore,
) -> None:
    # One person, written twice: a two-person rule met by one.
    setup_bundle(store, policy={"risk_tier": "regulated", "residency": ["eu"]},
                 approvers=["zyql", "ZYQL"])
    assert gate(store, "approvals") == (False, "1 of 2 required approvals (regulated tier): "
                                               "ZYQL")


def test_approvals_gate_follows_the_packs_own_requirement(store: GraphStore) -> None:
    setup_bundle(store, policy={"risk_tier": "sandbox", "required_approvals": 1},
                 approvers=[])
    assert gate(store, "approvals") == (False, "0 of 1 required approvals (sandbox tier)")


def _stored_as_an_older_version_kept_it(store: GraphStore, node_id: str,
                                        **props: Any) -> None:
    # Ingest refuses these values now; a store written before it did keeps them.
    old = store.get([node_id])[node_id]
    store.upsert([Node.trusted(old.kind, old.name, old.version, old.created_at,
                               {**old.properties, **props})])


@pytest.mark.parametrize(("stored", "judged"), [("Regulated", "regulated"), ("high", "regulated"),
                                                (" Sandbox", "sandbox")])
def test_a_stored_risk_tier_is_read_as_ingest_reads_it_and_an_unknown_one_as_regulated(
    store: GraphStore, stored: str, judged: str,
) -> None:
    setup_bundle(store, policy={"risk_tier": "production", "residency": ["eu"]},
                 approvers=["zyql"])
    _stored_as_an_older_version_kept_it(store, "policy:safety@1", risk_tier=stored)

    report = promotion_report(store, "b", "1", "staging", GatePolicy())

    required = {"regulated": 2, "sandbox": 0}[judged]
    approvals = next(g for g in report.gates if g.name == "approvals")
    assert approvals.reason is not None
    assert approvals.reason.startswith(f"1 of {required} required")
    assert f"({judged} tier)" in approvals.reason or required == 0
    present = next(g for g in report.gates if g.name == "policy_present").reason or ""
    assert ("judged as regulated" in present) == (stored == "high")


def test_a_stored_required_approvals_that_is_no_count_falls_back_to_the_tier(
    store: GraphStore,
) -> None:
    setup_bundle(store, policy={"risk_tier": "regulated", "residency": ["eu"]},
                 approvers=["zyql"])
    _stored_as_an_older_version_kept_it(store, "policy:safety@1", required_approvals="1")

    assert gate(store, "approvals") == (False, "1 of 2 required approvals (regulated tier): "
                                               "zyql")


# -- pinned model -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["model:gpt-5-mini-latest", "model:latest",
                                   "model:claude:latest"])
def test_a_floating_model_alias_fails_in_production(store: GraphStore, model: str) -> None:
    setup_bundle(store, model=model, policy=dict(EU_PRODUCTION))
    passed, reason = gate(store, "pinned_model")
    assert not passed and "floating alias" in reason


def test_a_floating_alias_passes_in_staging_and_patterns_come_from_settings(
    store: GraphStore,
) -> None:
    setup_bundle(store, model="model:gpt-5-mini-preview", policy=dict(EU_PRODUCTION))
    assert gate(store, "pinned_model", env="staging")[0] is True
    assert gate(store, "pinned_model")[0] is True
    strict = GatePolicy(floating_model_patterns=("*-preview",))
    assert gate(store, "pinned_model", policy=strict)[0] is False


# -- residency --------------------------------------------------------------------------------


def test_residency_gate_passes_when_sources_and_model_are_allowed(store: GraphStore) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION), sources={"source:kb.eu": "eu"})
    assert gate(store, "residency") == (True, "all within ['eu']")


def test_residency_gate_reads_regions_whatever_their_case(store: GraphStore) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION), model_props={"region": "EU"},
                 sources={"source:kb.eu": "Eu"})
    assert gate(store, "residency") == (True, "all within ['eu']")


def test_residency_gate_names_each_source_or_model_outside_the_pack(store: GraphStore) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION), model_props={"region": "us"},
                 sources={"source:kb.us": "us", "source:kb.unknown": None})
    passed, reason = gate(store, "residency")
    assert not passed
    assert "source:kb.us resides in us" in reason
    assert "source:kb.unknown resides in an unknown region" in reason
    assert "model:gpt-5-mini-2026-08 runs in us" in reason


# -- policy present ---------------------------------------------------------------------------


def test_a_bundle_without_a_policy_pack_cannot_enter_production(store: GraphStore) -> None:
    setup_bundle(store, policy=None)
    assert gate(store, "policy_present")[0] is False
    assert gate(store, "policy_present", env="staging")[0] is True


# -- report, promote, rollback ----------------------------------------------------------------


def test_report_diffs_against_the_live_version_and_allows_when_all_gates_pass(
    store: GraphStore,
) -> None:
    setup_bundle(store, 1, policy=dict(EU_PRODUCTION), params={"max_tokens": 300})
    setup_bundle(store, 2, policy=dict(EU_PRODUCTION), params={"max_tokens": 400},
                 prompt="prompt:triage@10", approvers=["zyql"])
    store.record_stage_move(StageMove(name="b", environment="production", to_version="1",
                                      at=T0))

    report = promotion_report(store, "b", "2", "production")

    assert report.verdict == "ALLOW", report.reasons
    assert report.current is not None and report.current.id == "bundle:b@1"
    assert [(d.field, d.current, d.candidate) for d in report.diff] == [
        ("prompt", "prompt:triage@9", "prompt:triage@10"), ("params.max_tokens", 300, 400)]
    assert report.blast_radius is not None and report.blast_radius.root.id == "bundle:b@1"


def test_promote_refuses_a_blocked_bundle_and_records_nothing(store: GraphStore) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION), evals=[(0.5, 0.9)])

    report, move = promote(store, "b", "1", "production", actor="release-bot")

    assert report.verdict == "BLOCK" and move is None
    assert report.reasons == ["eval: eval:suite/1-0 scored 0.5 < threshold 0.9"]
    assert store.stage_history(name="b") == [] and store.audit_log() == []


def test_an_override_promotes_with_its_reason_in_the_move_and_the_audit_log(
    store: GraphStore,
) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION), evals=[(0.5, 0.9)])

    report, move = promote(store, "b", "1", "production", actor="alice",
                           override_reason="hotfix for incident 42")

    assert move is not None and move.actor == "alice"
    assert move.reason is not None and move.reason.startswith("override: hotfix")
    entry = store.audit_log()[-1]
    assert (entry.action, entry.actor, entry.target) == ("promote.override", "alice",
                                                         "bundle:b@1")
    assert entry.after["gates"]["eval"] is False
    assert store.stage_at("b", "production") == "1"


def test_promote_then_rollback_round_trip_leaves_moves_and_audit_entries_on_both_versions(
    store: GraphStore,
) -> None:
    setup_bundle(store, 1, policy=dict(EU_PRODUCTION))
    setup_bundle(store, 2, policy={**EU_PRODUCTION, "version": 2})
    promote(store, "b", "1", "production", actor="alice", at=T0)
    promote(store, "b", "2", "production", actor="alice", at=T0 + timedelta(hours=1))

    result = rollback(store, "b", "production", actor="bob", reason="quality drop",
                      at=T0 + timedelta(hours=2))

    assert store.stage_at("b", "production") == "1"
    assert (result.move.from_version, result.move.to_version) == ("2", "1")
    assert any("policy pack differs" in w for w in result.warnings)
    # The rollback is filed under the version rolled back from and the one put back.
    assert [(e.action, e.target, e.actor) for e in store.audit_log()] == [
        ("promote", "bundle:b@1", "alice"), ("promote", "bundle:b@2", "alice"),
        ("rollback", "bundle:b@2", "bob"), ("rollback.restore", "bundle:b@1", "bob")]


def test_rollback_with_nothing_earlier_is_refused(store: GraphStore) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION))
    promote(store, "b", "1", "production", actor="alice")
    with pytest.raises(GovernanceError, match="no earlier version"):
        rollback(store, "b", "production", actor="bob")


def test_approving_twice_changes_nothing(store: GraphStore) -> None:
    setup_bundle(store, approvers=[])
    first = approve(store, "bundle:b@1", "carol", gate="production")
    again = approve(store, "bundle:b@1", "carol", gate="production")

    assert first.id == again.id == "approval:bundle:b@1/carol/production"
    assert [e.action for e in store.audit_log()] == ["approve"]


def test_the_rollback_target_prefers_the_configured_production_environments() -> None:
    from lineagegraph.graph.impact import Action, BlastRadius, RollbackTarget
    from lineagegraph.graph.walk import Subgraph

    live = Node.from_id("bundle:b@3")
    radius = BlastRadius(
        root=live, action=Action.ROLLBACK, downstream=Subgraph(root=live.id), bundles=[],
        traffic={}, rollbacks=[
            RollbackTarget("canary", live, Node.from_id("bundle:b@2")),
            RollbackTarget("prod-eu", live, Node.from_id("bundle:b@1")),
            RollbackTarget("staging", live, None)])

    assert radius.rollback_target().id == "bundle:b@2"  # none named production: the first
    assert radius.rollback_target({"prod-eu", "prod-us"}).id == "bundle:b@1"


@pytest.mark.parametrize("environment", ["", " production", "prod\nuction", "x" * 65])
def test_an_environment_no_one_could_name_back_is_refused(
    store: GraphStore, environment: str,
) -> None:
    setup_bundle(store)

    with pytest.raises(GovernanceError, match="environment"):
        promotion_report(store, "b", "1", environment)
    with pytest.raises(ValueError, match="environment"):
        StageMove(name="b", environment=environment, to_version="1")


def test_the_report_on_the_version_already_live_blocks_with_nothing_to_promote(
    store: GraphStore,
) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION))
    store.record_stage_move(StageMove(name="b", environment="production", to_version="1"))

    report = promotion_report(store, "b", "1", "production")

    assert report.verdict == "BLOCK"
    assert report.reasons == ["bundle:b@1 is already live in production: nothing to promote"]
    with pytest.raises(GovernanceError, match="already live"):
        promote(store, "b", "1", "production", "release-eng", override_reason="again")


def test_an_archived_version_is_not_promoted_even_with_an_override_until_brought_back(
    store: GraphStore,
) -> None:
    # Walks hide archived versions: served, one would be missing from every blastRadius.
    setup_bundle(store, policy=dict(EU_PRODUCTION))
    bundle = store.get(["bundle:b@1"])["bundle:b@1"]
    store.upsert([bundle.model_copy(update={"properties": {
        **bundle.properties, "archived": True, "archived_at": "2026-11-02T00:00:00+00:00"}})])

    report = promotion_report(store, "b", "1", "staging")

    assert report.verdict == "BLOCK"
    assert report.reasons[0].startswith(
        "bundle:b@1 is archived (at 2026-11-02T00:00:00+00:00): an archived version serves "
        "nowhere")
    with pytest.raises(GovernanceError, match="archived"):
        promote(store, "b", "1", "staging", "release-eng", override_reason="need it")
    assert store.stage_history(name="b") == []
    assert promotion_report(store, "b", "1", "retired").verdict == "ALLOW"  # retiring is fine

    store.upsert([bundle.model_copy(update={"properties": {**bundle.properties,
                                                           "archived": False}})])
    _, move = promote(store, "b", "1", "staging", "release-eng")
    assert move is not None and move.to_version == "1"


def test_the_report_on_a_version_live_already_names_each_retrieved_source_once(
    store: GraphStore,
) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION), sources={"source:kb": "eu"})
    store.record_stage_move(StageMove(name="b", environment="production", to_version="1"))

    report = promotion_report(store, "b", "1", "production")

    assert [n.id for n in report.parts.retrieves_from] == ["source:kb"]
