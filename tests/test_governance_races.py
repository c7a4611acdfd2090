"""Governance decisions with a write landing between what they read and their own write —
as a second server process on the same store does. A promotion judged on gates whose inputs
changed meanwhile (an evaluation, an approval, the policy pack, the candidate archived) is
judged again in its write's turn (``Rejudged``); retention judges under the stage log's
lock; an approval recorded twice at once is audited once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from lineagegraph.graph import retention
from lineagegraph.graph.governance import (
    GovernanceError,
    approve,
    audited_upsert,
    promote,
    rollback,
)
from lineagegraph.graph.store import Direction, GraphStore
from lineagegraph.schema import Edge, Node, StageMove

from .test_governance import EU_PRODUCTION, T0, setup_bundle


class Landing:
    """``store``, with ``meanwhile`` run once just before the first call of ``method`` (or
    just after it returns, ``after``): the other writer's commit between a decision's reads
    and its write."""

    def __init__(self, store: GraphStore, method: str, meanwhile: Callable[[], Any], *,
                 after: bool = False) -> None:
        self._store, self._method, self._meanwhile = store, method, meanwhile
        self._after = after
        self.landed = False

    def __getattr__(self, attr: str) -> Any:
        real = getattr(self._store, attr)
        if attr != self._method or self.landed:
            return real

        def first(*args: Any, **kwargs: Any) -> Any:
            self.landed = True
            if self._after:
                result = real(*args, **kwargs)
                self._meanwhile()
                return result
            self._meanwhile()
            return real(*args, **kwargs)

        return first


def _promoting(store: GraphStore, meanwhile: Callable[[], Any], *,
               override: str | None = None) -> tuple[Any, StageMove | None]:
    landing = Landing(store, "record_stage_moves", meanwhile)
    report, move = promote(landing, "b", "1", "production", "release-eng",  # type: ignore[arg-type]
                           override_reason=override)
    assert landing.landed
    return report, move


def _upsert(store: GraphStore, node_id: str, **props: Any) -> Callable[[], Any]:
    def write() -> Any:
        node = store.get([node_id])[node_id]
        return audited_upsert(store, [node.model_copy(
            update={"properties": {**node.properties, **props}})], [], "admin")
    return write


def _promotions(store: GraphStore) -> list[str]:
    return [e.action for e in store.audit_log() if e.action.startswith("promote")]


@pytest.mark.parametrize(("changed", "failed"), [
    ("eval:suite/1-0", "eval"),
    ("policy:safety@1", "approvals"),
    ("policy:safety@1", "residency"),
    ("model:gpt-5-mini-2026-08", "residency"),
])
def test_a_promotion_is_judged_again_on_gate_inputs_changed_before_its_write(
    store: GraphStore, changed: str, failed: str,
) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION))
    change = {"eval": {"score": 0.2}, "approvals": {"required_approvals": 3},
              "residency": {"residency": ["us"]} if changed.startswith("policy")
              else {"region": "us"}}[failed]

    report, move = _promoting(store, _upsert(store, changed, **change))

    assert move is None
    assert report.verdict == "BLOCK"
    assert [g.name for g in report.gates if not g.passed] == [failed]
    assert store.stage_at("b", "production") is None
    assert _promotions(store) == []


def test_a_newer_failing_evaluation_landing_meanwhile_blocks_the_promotion(
    store: GraphStore,
) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION))

    def evaluated() -> None:
        store.upsert([Node.from_id("eval:suite/late", created_at=T0 + timedelta(days=1),
                                   properties={"suite": "suite", "run": "late", "score": 0.1,
                                               "threshold": 0.9})],
                     [Edge(source="eval:suite/late", type="EVALUATES", target="bundle:b@1")])

    report, move = _promoting(store, evaluated)

    assert move is None
    assert next(g for g in report.gates if g.name == "eval").reason == (
        "eval:suite/late scored 0.1 < threshold 0.9")


def test_an_override_judged_again_records_the_gates_that_failed_at_its_write(
    store: GraphStore,
) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION))

    report, move = _promoting(store, _upsert(store, "eval:suite/1-0", score=0.2),
                              override="hotfix")

    assert move is not None and move.reason.startswith("override: hotfix; blocked by eval:")
    entry = next(e for e in store.audit_log() if e.action.startswith("promote"))
    assert entry.action == "promote.override"
    assert entry.after is not None and entry.after["gates"]["eval"] is False


def test_a_candidate_archived_before_the_promotions_write_is_refused(
    store: GraphStore,
) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION))

    with pytest.raises(GovernanceError, match="bundle:b@1 is archived"):
        _promoting(store, _upsert(store, "bundle:b@1", archived=True), override="even so")

    assert store.stage_at("b", "production") is None
    assert _promotions(store) == []


def test_a_promotion_whose_gates_did_not_change_is_recorded_as_judged(
    store: GraphStore,
) -> None:
    # An unrelated write of metadata meanwhile: judged again, and the verdict stands.
    setup_bundle(store, policy=dict(EU_PRODUCTION))

    report, move = _promoting(store, lambda: store.upsert([Node.from_id("source:pg/other")]))

    assert report.verdict == "ALLOW" and move is not None
    assert store.stage_at("b", "production") == "1"
    assert _promotions(store) == ["promote"]


def test_a_rollback_target_archived_meanwhile_is_passed_over(store: GraphStore) -> None:
    for version in (1, 2, 3):
        store.upsert([Node.from_id(f"bundle:b@{version}", created_at=T0)])
    for version in ("1", "2", "3"):
        store.record_stage_move(StageMove(
            name="b", environment="staging", from_version=store.stage_at("b", "staging"),
            to_version=version, at=T0 + timedelta(hours=int(version))))
    landing = Landing(store, "record_stage_moves", lambda: store.upsert(
        [Node.from_id("bundle:b@2", properties={"archived": True})]))

    done = rollback(landing, "b", "staging", "release-eng")  # type: ignore[arg-type]

    assert landing.landed
    assert done.move.to_version == "1"
    assert any("bundle:b@2" in w and "archived" in w for w in done.warnings)
    assert store.stage_at("b", "staging") == "1"


def test_retention_leaves_a_version_promoted_before_its_write_where_its_name_never_served(
    store: GraphStore,
) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION))
    planned = retention.plan(store, timedelta(days=1))
    assert [c.node.id for c in planned] == ["bundle:b@1"]
    landing = Landing(store, "archive_judged", lambda: promote(
        store, "b", "1", "production", "release-eng"))

    archived = retention.apply(landing, planned, actor="ops")  # type: ignore[arg-type]

    assert archived == 0
    assert store.stage_at("b", "production") == "1"
    assert not store.get(["bundle:b@1"])["bundle:b@1"].properties.get("archived")


def test_an_approval_recorded_twice_at_once_is_audited_once(store: GraphStore) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION), approvers=[])
    landing = Landing(store, "write", lambda: approve(store, "bundle:b@1", "carol"))

    recorded = approve(landing, "bundle:b@1", "carol")  # type: ignore[arg-type]

    assert landing.landed
    assert recorded.id == "approval:bundle:b@1/carol"
    assert [e.action for e in store.audit_log()] == ["approve"]


def test_a_withdrawn_approval_or_evaluation_counts_for_no_gate(store: GraphStore) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION), evals=[(0.5, 0.9), (0.95, 0.9)])
    for withdrawn in ("approval:b@1/zyql", "eval:suite/1-1"):
        _upsert(store, withdrawn, archived=True)()

    report, move = promote(store, "b", "1", "production", "release-eng")

    assert move is None
    assert {g.name: g.reason for g in report.gates if not g.passed} == {
        "eval": "eval:suite/1-0 scored 0.5 < threshold 0.9",
        "approvals": "0 of 1 required approvals (production tier)"}


def test_an_approver_approving_again_after_withdrawing_counts_again(store: GraphStore) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION), approvers=[])
    first = approve(store, "bundle:b@1", "carol")
    _upsert(store, first.id, archived=True)()

    again = approve(store, "bundle:b@1", "carol")

    assert not again.properties.get("archived")
    assert [e.action for e in store.audit_log()].count("approve") == 2
    report, move = promote(store, "b", "1", "production", "release-eng")
    assert move is not None, report.reasons


def _superseding(source: str, target: str) -> list[Edge]:
    return [Edge(source=source, type="SUPERSEDES", target=target)]


def test_two_upserts_at_once_never_close_a_supersedes_cycle(store: GraphStore) -> None:
    # a@1 and b@1 (two names, so neither edge goes against version order): each upsert
    # alone is fine; together they are a cycle. The second read the graph before the first
    # landed, and is judged again in its write's turn.
    store.upsert([Node.from_id("model:a@1"), Node.from_id("model:b@1")])
    landing = Landing(store, "expand", lambda: audited_upsert(  # after the check's read
        store, [], _superseding("model:b@1", "model:a@1"), "admin"), after=True)

    with pytest.raises(GovernanceError, match="would close a cycle"):
        audited_upsert(landing, [], _superseding("model:a@1", "model:b@1"),  # type: ignore[arg-type]
                       "admin")

    assert landing.landed
    assert {(h.edge.source, h.edge.target) for h in store.expand(
        ["model:a@1", "model:b@1"], Direction.UPSTREAM, edge_types=["SUPERSEDES"])} == {
        ("model:b@1", "model:a@1")}


def test_an_upsert_audits_as_before_what_a_write_landing_meanwhile_left(
    store: GraphStore,
) -> None:
    store.upsert([Node.from_id("model:a@1", properties={"owner": "first"})])
    landing = Landing(store, "get", _upsert(store, "model:a@1", owner="meanwhile"),
                      after=True)

    audited_upsert(landing, [Node.from_id("model:a@1", properties={"owner": "last"})],  # type: ignore[arg-type]
                   [], "admin")

    assert landing.landed
    changes = [(e.before or {}).get("properties", {}).get("owner")
               for e in store.audit_log(target="model:a@1")]
    assert changes == ["first", "meanwhile"]
    assert store.get(["model:a@1"])["model:a@1"].properties["owner"] == "last"
