"""What a release engineer relies on around rollback and retirement, on both stores: a
rollback never returns to a retired or archived version, nor (for a model, prompt, tool set
or policy pack) to a bundle that still uses what is rolled back; ``retired`` is a record,
never an environment a version serves in; a move dated later is not in effect now; a
version live anywhere is never archived; and a rollback is audited under both versions."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.auth import create_token
from lineagegraph.api.settings import Settings
from lineagegraph.graph import retention
from lineagegraph.graph.governance import (
    GovernanceError,
    evidence_pack,
    promote,
    promotion_report,
    rollback,
)
from lineagegraph.graph.impact import Action, blast_radius
from lineagegraph.graph.store import GraphStore
from lineagegraph.schema import Edge, Node, StageMove

from .test_governance import EU_PRODUCTION, T0, setup_bundle


def _bundles(store: GraphStore, *versions: int, **pins: Any) -> None:
    for version in versions:
        setup_bundle(store, version, policy=dict(EU_PRODUCTION), **pins)


def _move(store: GraphStore, env: str, to: str | None, at: datetime,
          frm: str | None = None) -> None:
    store.record_stage_move(StageMove(name="b", environment=env, from_version=frm,
                                      to_version=to, at=at))


def _plan(store: GraphStore, node_id: str, env: str = "production") -> Any:
    radius = blast_radius(store, node_id, Action.ROLLBACK)
    assert radius is not None
    return next(r for r in radius.rollbacks if r.environment == env)


def _hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


def _release_then_hotfix(store: GraphStore) -> None:
    """1 released into production, then 2 over it by an override."""
    promote(store, "b", "1", "production", "release-eng", at=_hours(0))
    promote(store, "b", "2", "production", "release-eng", override_reason="hotfix",
            at=_hours(1))


# -- #1: retired and archived versions are no rollback target --------------------------------


def test_a_version_retired_while_not_live_is_no_rollback_target(store: GraphStore) -> None:
    # The git flow: 1 in production, 2 in staging; then "2 → production, 1 → retired".
    _bundles(store, 1, 2)
    _move(store, "production", "1", _hours(0))
    _move(store, "staging", "2", _hours(1))
    promote(store, "b", "2", "production", "release-eng", at=_hours(2))
    _, retired = promote(store, "b", "1", "retired", "release-eng", at=_hours(3))

    # 1 was live nowhere: the move into `retired` is the lasting record of it.
    assert retired is not None and (retired.environment, retired.to_version) == ("retired", "1")
    plan = _plan(store, "bundle:b@2")
    assert plan.target is None
    assert plan.warnings == ["nothing fit to return to in production before bundle:b@2 "
                             "(bundle:b@1: retired): a rollback leaves it empty"]
    with pytest.raises(GovernanceError, match="bundle:b@1: retired"):
        rollback(store, "b", "production", "oncall")
    assert store.stage_at("b", "production") == "2"


def test_rollback_passes_over_a_version_retired_while_live_to_the_one_before(
    store: GraphStore,
) -> None:
    _bundles(store, 1, 2, 3)
    promote(store, "b", "1", "production", "release-eng", at=_hours(0))
    promote(store, "b", "2", "production", "release-eng", at=_hours(1))
    promote(store, "b", "2", "retired", "release-eng", at=_hours(2))  # production empties
    assert store.stage_at("b", "production") is None
    promote(store, "b", "3", "production", "release-eng", at=_hours(3))

    result = rollback(store, "b", "production", "oncall", at=_hours(4))

    assert (result.move.from_version, result.move.to_version) == ("3", "1")
    assert "skipped bundle:b@2: retired" in result.warnings


def test_a_retired_version_promoted_again_is_a_target_with_a_warning(store: GraphStore) -> None:
    _bundles(store, 1, 2)
    promote(store, "b", "1", "production", "release-eng", at=_hours(0))
    promote(store, "b", "1", "retired", "release-eng", at=_hours(1))
    promote(store, "b", "1", "production", "release-eng", at=_hours(2))  # revived
    promote(store, "b", "2", "production", "release-eng", at=_hours(3))

    plan = _plan(store, "bundle:b@2")

    assert plan.target is not None and plan.target.id == "bundle:b@1"
    retired_at = _hours(1).isoformat()
    assert f"bundle:b@1 was retired at {retired_at} (promoted again since)" in plan.warnings


def test_an_archived_version_is_no_rollback_target(store: GraphStore) -> None:
    _bundles(store, 1, 2, 3)
    for i, version in enumerate("123"):
        promote(store, "b", version, "production", "release-eng", at=_hours(i))
    node = store.get(["bundle:b@2"])["bundle:b@2"]
    store.upsert([node.model_copy(update={"properties": {**node.properties,
                                                         "archived": True}})])

    assert _plan(store, "bundle:b@3").target.id == "bundle:b@1"
    result = rollback(store, "b", "production", "oncall", at=_hours(4))
    assert result.move.to_version == "1"
    assert "skipped bundle:b@2: archived" in result.warnings


# -- #11: promoting into `retired` is a retirement ------------------------------------------


def test_retiring_runs_no_gate_and_takes_the_version_out_of_service(store: GraphStore) -> None:
    _bundles(store, 1)
    setup_bundle(store, 2, policy=dict(EU_PRODUCTION), evals=[(0.4, 0.9)])  # failing eval
    promote(store, "b", "1", "production", "release-eng", at=_hours(0))
    _move(store, "staging", "2", _hours(1))

    report = promotion_report(store, "b", "2", "retired")
    assert report.verdict == "ALLOW" and report.reasons == []
    assert [(g.name, g.passed, g.reason) for g in report.gates] == [
        ("retirement", True, "retiring bundle:b@2: no promotion gate applies; it leaves "
                             "staging")]
    assert report.blast_radius is not None and report.blast_radius.action is Action.RETIRE

    _, move = promote(store, "b", "2", "retired", "release-eng", at=_hours(2))

    assert move is not None
    moves = [(m.environment, m.from_version, m.to_version)
             for m in store.stage_history(name="b") if m.at == _hours(2)]
    assert moves == [("retired", None, "2"), ("staging", "2", None)]
    assert store.live_environments("b") == {"production": "1"}
    assert [(e.action, e.target) for e in store.audit_log()][-1] == ("retire", "bundle:b@2")
    radius = blast_radius(store, "bundle:b@2", Action.ROLLBACK)
    assert radius is not None and radius.bundles[0].environments == []
    with pytest.raises(GovernanceError, match="already retired"):
        promote(store, "b", "2", "retired", "release-eng")
    with pytest.raises(GovernanceError, match="no environment a version serves in"):
        rollback(store, "b", "retired", "oncall")


def test_retired_is_never_the_current_version_of_a_promotion_report(store: GraphStore) -> None:
    _bundles(store, 1, 2)
    promote(store, "b", "1", "retired", "release-eng", at=_hours(0))

    report = promotion_report(store, "b", "2", "retired")

    assert report.current is None and report.diff == [] and report.verdict == "ALLOW"


# -- #4: a move dated later is not in effect now --------------------------------------------


def test_a_move_dated_in_the_future_is_not_live_now(store: GraphStore) -> None:
    _bundles(store, 1, 2, 3)
    now = datetime.now(UTC)
    _move(store, "production", "1", now - timedelta(hours=2))
    _move(store, "production", "2", now - timedelta(hours=1), frm="1")
    _move(store, "production", "3", now + timedelta(days=1), frm="2")  # a scheduled move

    report = promotion_report(store, "b", "3", "production")
    assert report.current is not None and report.current.id == "bundle:b@2"
    assert not report.already_live
    for version, envs in (("2", ["production"]), ("3", [])):
        radius = blast_radius(store, f"bundle:b@{version}")
        assert radius is not None and radius.bundles[0].environments == envs

    result = rollback(store, "b", "production", "oncall")

    assert (result.move.from_version, result.move.to_version) == ("2", "1")


# -- #5: rolling back a model, prompt or pack: not to a bundle that still uses it ----------


def test_the_rollback_target_of_a_model_is_a_bundle_without_that_model(
    store: GraphStore,
) -> None:
    setup_bundle(store, 1, policy=dict(EU_PRODUCTION))
    for version in (2, 3):
        setup_bundle(store, version, policy=dict(EU_PRODUCTION),
                     model="model:gpt-5-mini-2026-11", prompt="prompt:triage@10")
    for i, version in enumerate("123"):
        promote(store, "b", version, "production", "release-eng", at=_hours(i))

    plan = _plan(store, "model:gpt-5-mini-2026-11")
    assert plan.current.id == "bundle:b@3"
    assert plan.target is not None and plan.target.id == "bundle:b@1"
    assert "skipped bundle:b@2: still uses model:gpt-5-mini-2026-11" in plan.warnings

    prompt_plan = _plan(store, "prompt:triage@10")
    assert prompt_plan.target is not None and prompt_plan.target.id == "bundle:b@1"


def test_with_every_earlier_version_using_the_model_there_is_no_target(
    store: GraphStore,
) -> None:
    _bundles(store, 1, 2)
    promote(store, "b", "1", "production", "release-eng", at=_hours(0))
    promote(store, "b", "2", "production", "release-eng", at=_hours(1))

    plan = _plan(store, "model:gpt-5-mini-2026-08")

    assert plan.target is None
    assert plan.warnings == ["nothing fit to return to in production before bundle:b@2 "
                             "(bundle:b@1: still uses model:gpt-5-mini-2026-08): a rollback "
                             "leaves it empty"]


def test_the_rollback_target_of_a_policy_pack_is_governed_by_another(
    store: GraphStore,
) -> None:
    setup_bundle(store, 1, policy=dict(EU_PRODUCTION))
    setup_bundle(store, 2, policy={**EU_PRODUCTION, "version": 2})
    setup_bundle(store, 3, policy={**EU_PRODUCTION, "version": 2})
    for i, version in enumerate("123"):
        promote(store, "b", version, "production", "release-eng", at=_hours(i))

    plan = _plan(store, "policy:safety@2")

    assert plan.target is not None and plan.target.id == "bundle:b@1"


# -- #13: a target that was itself rolled back from -----------------------------------------


def test_a_second_rollback_undoes_the_first_with_a_warning(store: GraphStore) -> None:
    _bundles(store, 1, 2, 3, 4)
    for i, version in enumerate("123"):
        promote(store, "b", version, "production", "release-eng", at=_hours(i))
    rollback(store, "b", "production", "oncall", reason="3 is bad", at=_hours(3))

    plan = _plan(store, "bundle:b@2")
    again = rollback(store, "b", "production", "oncall", at=_hours(4))

    assert plan.target is not None and plan.target.id == "bundle:b@3"
    warning = f"bundle:b@3 was rolled back from at {_hours(3).isoformat()}"
    assert warning in plan.warnings and warning in again.warnings
    assert again.move.to_version == "3"
    # 3 back in production and then replaced by a release: its stint ended normally.
    promote(store, "b", "4", "production", "release-eng", at=_hours(5))
    last = _plan(store, "bundle:b@4")
    assert last.target is not None and last.target.id == "bundle:b@3"
    assert not any("rolled back from" in w for w in last.warnings)


def test_a_version_released_again_through_the_gates_is_no_rollback(store: GraphStore) -> None:
    # 3 rolled back to 2, then 3 promoted again (fixed, gates passed): 2's stint ended in a
    # release, not a rollback, so rolling 3 back to 2 carries no "rolled back from".
    _bundles(store, 1, 2, 3)
    for i, version in enumerate("23"):
        promote(store, "b", version, "production", "release-eng", at=_hours(i))
    rollback(store, "b", "production", "oncall", reason="3 is bad", at=_hours(2))
    promote(store, "b", "3", "production", "release-eng", at=_hours(3))

    plan = _plan(store, "bundle:b@3")

    assert plan.target is not None and plan.target.id == "bundle:b@2"
    assert not any("rolled back from" in w for w in plan.warnings)


def test_the_rollback_target_is_productions_even_when_production_has_none(
    store: GraphStore,
) -> None:
    # 2 is live in production with nothing before it, and in canary after 1: the rollback
    # a dashboard shows is production's (none), not canary's 1.
    _bundles(store, 1, 2)
    store.record_stage_moves([
        StageMove(name="b", environment="canary", to_version="1", at=_hours(0)),
        StageMove(name="b", environment="canary", from_version="1", to_version="2",
                  at=_hours(1)),
        StageMove(name="b", environment="production", to_version="2", at=_hours(1))])

    radius = blast_radius(store, "bundle:b@2", Action.ROLLBACK)

    assert {r.environment: r.target and r.target.id for r in radius.rollbacks} == {
        "canary": "bundle:b@1", "production": None}
    assert radius.rollback_target() is None
    assert radius.rollback_target({"canary"}).id == "bundle:b@1"


# -- #15: retention keeps what is live --------------------------------------------------------


def test_retention_keeps_a_version_live_in_staging(store: GraphStore) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=200)
    store.upsert([Node.from_id("bundle:b@1", created_at=old),
                  Node.from_id("bundle:b@2", created_at=old),
                  Node.from_id("bundle:b@3", created_at=old)],
                 stage_moves=[
                     StageMove(name="b", environment="staging", to_version="1", at=old),
                     StageMove(name="b", environment="staging", from_version="1",
                               to_version="2", at=old + timedelta(days=1)),
                     # a retired version left service: it may be archived
                     StageMove(name="b", environment="retired", to_version="3", at=old)])

    planned = retention.plan(store, timedelta(days=90))

    assert [(c.node.id, c.environments) for c in planned] == [
        ("bundle:b@1", ("staging",)), ("bundle:b@3", ("retired",))]


# -- #16: floating aliases whatever their case ------------------------------------------------


@pytest.mark.parametrize("model", ["model:gpt-5-mini-Latest", "model:claude-LATEST",
                                   "model:Latest", "model:claude:LATEST"])
def test_a_floating_alias_in_any_case_fails_in_production(store: GraphStore, model: str) -> None:
    setup_bundle(store, policy=dict(EU_PRODUCTION), model=model)

    report = promotion_report(store, "b", "1", "production")

    pinned = next(g for g in report.gates if g.name == "pinned_model")
    assert pinned.passed is False and "floating alias" in (pinned.reason or "")


# -- #17: the rollback's audit entries --------------------------------------------------------


def test_a_rollback_is_audited_with_its_reason_under_both_versions(store: GraphStore) -> None:
    _bundles(store, 1, 2)
    promote(store, "b", "1", "production", "release-eng", at=_hours(0))
    promote(store, "b", "2", "production", "release-eng", at=_hours(1))

    rollback(store, "b", "production", "alice", reason="INC-4711", at=_hours(2))

    [restored], [left] = ([e for e in store.audit_log(target=f"bundle:b@{v}")
                           if e.action.startswith("rollback")] for v in (1, 2))
    assert (restored.action, left.action) == ("rollback.restore", "rollback")
    for entry in (restored, left):
        assert entry.actor == "alice"
        assert entry.before == {"environment": "production", "version": "2"}
        assert entry.after["version"] == "1" and entry.after["reason"] == "INC-4711"
    assert "rollback.restore" in [e.action for e in evidence_pack(store, "b", "1").audit]


# -- over GraphQL ------------------------------------------------------------------------------


@pytest.fixture
def admin(store: GraphStore) -> Iterator[TestClient]:
    _bundles(store, 1)
    setup_bundle(store, 2, policy=dict(EU_PRODUCTION), evals=[(0.4, 0.9)])
    store.upsert([], [Edge(source="bundle:b@2", type="SUPERSEDES", target="bundle:b@1")])
    secret = create_token(store, "release-eng", "admin", actor="test")[1]
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as client:
        client.headers["Authorization"] = f"Bearer {secret}"
        yield client


def _gql(client: TestClient, query: str, **variables: Any) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    return response.json()


def test_promote_into_retired_over_graphql_is_a_retirement(
    admin: TestClient, store: GraphStore,
) -> None:
    _release_then_hotfix(store)

    retired = _gql(admin, """mutation { promote(bundle: "b", version: "2", environment:
        "retired") { promoted report { verdict gates { name passed } }
        move { environment toVersion } } }""")["data"]["promote"]
    refused = _gql(admin, """mutation { rollback(name: "b", environment: "retired") {
        move { toVersion } } }""")

    assert retired == {"promoted": True,
                       "report": {"verdict": "ALLOW",
                                  "gates": [{"name": "retirement", "passed": True}]},
                       "move": {"environment": "retired", "toVersion": "2"}}
    assert store.live_environments("b") == {}
    assert "no environment a version serves in" in refused["errors"][0]["message"]


def test_the_restored_version_finds_the_rollback_in_the_audit_log(
    admin: TestClient, store: GraphStore,
) -> None:
    _release_then_hotfix(store)

    _gql(admin, """mutation { rollback(name: "b", environment: "production",
        reason: "INC-4711") { move { toVersion } } }""")
    log = _gql(admin, """{ auditLog(target: "bundle:b@1") { action actor after } }""")

    [entry] = [e for e in log["data"]["auditLog"] if e["action"] == "rollback.restore"]
    assert entry["actor"] == "release-eng" and entry["after"]["reason"] == "INC-4711"


# -- #14: two promotions at once ---------------------------------------------------------------


def test_promotions_at_once_never_record_a_move_from_a_version_no_longer_live(
    store: GraphStore,
) -> None:
    # Each promotion reads what is live, judges it, and records a move from it: another
    # landing in between must refuse it, or the history says "from @1" twice.
    _bundles(store, 1, 2, 3)
    _move(store, "canary", "1", _hours(0))
    refused: list[str] = []

    def promoter(versions: list[str]) -> None:
        for version in versions:
            try:
                promote(store, "b", version, "canary", "release-eng", override_reason="race")
            except GovernanceError as error:
                refused.append(str(error))

    workers = [threading.Thread(target=promoter, args=(["2", "3", "1"] * 8,)),
               threading.Thread(target=promoter, args=(["3", "1", "2"] * 8,))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    moves = store.stage_history(name="b", environment="canary")
    assert len(moves) > 1
    assert all(later.from_version == earlier.to_version
               for earlier, later in itertools.pairwise(moves)), "\n".join(
        f"{m.seq} {m.at.isoformat()} {m.from_version}->{m.to_version} {m.actor}" for m in moves)
    assert all("moved meanwhile" in reason or "already live" in reason for reason in refused)


def test_a_retirement_judged_before_a_promotion_elsewhere_landed_is_refused(
    store: GraphStore,
) -> None:
    # The retirement read "live in canary only"; a promotion into production lands before
    # it is written. Written anyway, the version was retired and serving production, and
    # could not be retired again ("already retired").
    from lineagegraph.graph.governance import _retire

    _bundles(store, 1, 2)
    promote(store, "b", "2", "canary", "release-eng", override_reason="test", at=_hours(0))
    judged = {"b": store.last_stage_seq("b")}
    report = promotion_report(store, "b", "2", "retired", at=_hours(2))
    promote(store, "b", "2", "production", "release-eng", override_reason="test",
            at=_hours(1))

    with pytest.raises(GovernanceError, match="b moved meanwhile: another stage move"):
        _retire(store, report, "release-eng", None, _hours(2), judged)
    assert store.stage_at("b", "production") == "2"
    # Judged again, it takes the version out of both.
    _, retired = promote(store, "b", "2", "retired", "release-eng", at=_hours(3))
    assert retired is not None
    assert (store.stage_at("b", "production"), store.stage_at("b", "canary")) == (None, None)


def test_a_promotion_judged_before_a_retirement_of_its_name_landed_is_refused(
    store: GraphStore,
) -> None:
    from lineagegraph.graph.store import StagesMoved

    _bundles(store, 1, 2)
    promote(store, "b", "2", "canary", "release-eng", override_reason="test", at=_hours(0))
    judged = {"b": store.stage_history(name="b")[-1].seq}
    promote(store, "b", "2", "retired", "release-eng", at=_hours(1))
    into_production = StageMove(name="b", environment="production", to_version="2",
                                at=_hours(0.5))

    with pytest.raises(StagesMoved):
        store.record_stage_moves([into_production], check_from=True, judged=judged)
    assert store.stage_at("b", "production") is None


def test_an_upsert_may_not_archive_a_version_while_it_is_live(store: GraphStore) -> None:
    # Walks hide an archived version: archived while serving production, it went missing
    # from the blast radius of the model it pins, with no warning.
    from lineagegraph.graph.governance import audited_upsert

    _bundles(store, 1, 2)
    promote(store, "b", "2", "production", "release-eng", override_reason="test", at=_hours(0))
    stored = store.get(["bundle:b@2"])["bundle:b@2"]
    archived = stored.model_copy(update={"properties": {**stored.properties, "archived": True}})

    with pytest.raises(GovernanceError, match="bundle:b@2 is live in production: archived, it "
                                              "would serve while walks hide it"):
        audited_upsert(store, [archived], [], "admin")
    assert not store.get(["bundle:b@2"])["bundle:b@2"].properties.get("archived")

    promote(store, "b", "2", "retired", "release-eng", at=_hours(1))
    audited_upsert(store, [archived], [], "admin")  # live nowhere now
    assert store.get(["bundle:b@2"])["bundle:b@2"].properties["archived"] is True


@pytest.mark.parametrize(("landed", "refusal"), [
    # A promotion moves the metadata writers' turn on: the upsert is judged again in its
    # write's turn, and finds the version live.
    ("promotion", "bundle:b@2 is live in production: archived, it would serve"),
    # A move recorded without that turn: refused on the stage history it judged.
    ("move", "b moved meanwhile"),
])
def test_an_upsert_archiving_a_version_is_refused_if_it_was_promoted_meanwhile(
    store: GraphStore, monkeypatch: pytest.MonkeyPatch, landed: str, refusal: str,
) -> None:
    # The upsert read "live nowhere"; a promotion landed before it wrote. Written anyway,
    # the version served production archived, hidden from every blast radius.
    from lineagegraph.graph import governance

    _bundles(store, 1, 2)
    stored = store.get(["bundle:b@2"])["bundle:b@2"]
    archived = stored.model_copy(update={"properties": {**stored.properties, "archived": True}})
    read = governance._archiving_live
    landings = []

    def promoted_meanwhile(*args: object) -> object:
        judged = read(*args)  # type: ignore[arg-type]
        if not landings:  # once: the other writer's commit
            landings.append(landed)
            if landed == "promotion":
                promote(store, "b", "2", "production", "release-eng", override_reason="test",
                        at=_hours(0))
            else:
                store.record_stage_move(StageMove(name="b", environment="production",
                                                  to_version="2", at=_hours(0), actor="ci"))
        return judged

    monkeypatch.setattr(governance, "_archiving_live", promoted_meanwhile)
    with pytest.raises(GovernanceError, match=refusal):
        governance.audited_upsert(store, [archived], [], "admin")
    assert landings == [landed]
    assert not store.get(["bundle:b@2"])["bundle:b@2"].properties.get("archived")
    assert store.stage_at("b", "production") == "2"
