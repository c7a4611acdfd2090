"""What a manifest load records in the stage history, decided from what is stored: re-sends
of StageMove documents, status declarations on entries loaded before, future-dated moves,
retirement, the annotations an edited entry adds, the warnings a load answers, and merge
patches that set list fields to null — on both stores."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.auth import create_token
from lineagegraph.api.settings import Settings
from lineagegraph.graph.store import RETIRED, GraphStore, retired_versions
from lineagegraph.ingest.batch import IngestError
from lineagegraph.ingest.manifest_formats import read_yaml
from lineagegraph.ingest.manifests import load_manifests, map_manifests
from lineagegraph.schema import Node, StageMove

from .ingest_support import cli_args, run_cli

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def load(store: GraphStore, text: str, now: datetime | None = None,
         actor: str = "test") -> None:
    map_manifests(read_yaml(text), store, actor=actor, now=now).write(store)


def entry(version: int, status: str | None = None, created_at: datetime | None = None,
          extra: str = "") -> str:
    lines = ["name: b", f"version: {version}", "model: gpt-x-2026"]
    lines += [f"status: {status}"] if status else []
    lines += [f"created_at: {created_at.isoformat()}"] if created_at else []
    return "\n".join(lines) + "\n" + extra


def move_doc(version: int, environment: str = "production", **fields: str) -> str:
    extra = "".join(f"{key}: {value}\n" for key, value in fields.items())
    return (f"kind: StageMove\nbundle: b\nversion: {version}\nenvironment: {environment}\n"
            + extra)


def docs(*texts: str) -> str:
    return "---\n".join(texts)


def moves_of(store: GraphStore, environment: str | None = None) -> list[tuple[Any, ...]]:
    return [(m.environment, m.from_version, m.to_version)
            for m in store.stage_history(name="b", environment=environment)]


@pytest.fixture
def admin(store: GraphStore) -> Iterator[TestClient]:
    """A client posting manifests with an ``admin`` token (statuses and moves need it)."""
    secret = create_token(store, "release-eng", "admin", actor="test")[1]
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as client:
        client.headers["Authorization"] = f"Bearer {secret}"
        yield client


def post(client: TestClient, text: str) -> Any:
    return client.post("/api/v1/manifests", content=text,
                       headers={"content-type": "application/yaml"})


# -- #2: StageMove documents without `at` are applied once --------------------------------------


def test_re_sending_stage_move_documents_without_at_records_nothing(store: GraphStore) -> None:
    registry = docs(entry(1), entry(2), move_doc(1), move_doc(2))
    for _ in range(3):
        load(store, registry)

    assert moves_of(store) == [("production", None, "1"), ("production", "1", "2")]
    assert store.stage_at("b", "production") == "2"


def test_a_re_send_does_not_undo_a_rollback_made_since(store: GraphStore) -> None:
    load(store, docs(entry(1), entry(2), move_doc(1, reason="first release")), actor="ci-bot")
    registry = docs(entry(1), entry(2), move_doc(1, reason="first release"),
                    move_doc(2, reason="release 2"))
    load(store, registry, actor="ci-bot")
    store.record_stage_move(StageMove(name="b", environment="production", from_version="2",
                                      to_version="1", actor="oncall", reason="rollback"))

    load(store, registry, actor="ci-bot")
    load(store, registry, actor="alice")  # another sender of the same registry: same data

    assert [m.to_version for m in store.stage_history(name="b")] == ["1", "2", "1"]
    assert store.stage_at("b", "production") == "1"


def test_a_registrys_last_move_not_applied_again_is_named_in_the_load_warnings(
    store: GraphStore,
) -> None:
    registry = docs(entry(1), entry(2), move_doc(1), move_doc(2))
    # As stated: nothing to say, about the history before the last move either.
    quiet = [load_manifests(read_yaml(registry), store, actor="ci-bot").warnings
             for _ in range(2)]
    store.record_stage_move(StageMove(name="b", environment="production", from_version="2",
                                      to_version="1", actor="oncall", reason="rollback"))

    again = load_manifests(read_yaml(registry), store, actor="ci-bot")

    assert quiet == [[], []]
    assert [(w.record, w.field) for w in again.warnings] == [(4, "version")]
    assert "production serves @1 now" in again.warnings[0].message
    assert store.stage_at("b", "production") == "1"


def test_a_stage_move_without_at_is_recognised_by_what_it_states(store: GraphStore) -> None:
    def rollback() -> None:
        store.record_stage_move(StageMove(name="b", environment="production",
                                          from_version="2", to_version="1", reason="rollback"))

    load(store, docs(entry(1), entry(2), move_doc(1), move_doc(2, reason="release 2")))
    rollback()
    # a move to @2 with another reason is another document: applied, once
    load(store, move_doc(2, reason="release 2, fixed"))
    rollback()
    load(store, move_doc(2, reason="release 2, fixed"))

    assert [(m.to_version, m.reason) for m in store.stage_history(name="b")] == [
        ("1", None), ("2", "release 2"), ("1", "rollback"), ("2", "release 2, fixed"),
        ("1", "rollback")]


# -- #3: a status on an entry loaded before moves at load time --------------------------------


def test_a_status_added_to_an_entry_loaded_before_is_dated_at_load_time(
    store: GraphStore,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    load(store, docs(entry(1, "production", now - timedelta(days=10)),
                     entry(2, created_at=now - timedelta(days=3))), now=now - timedelta(days=3))
    asked = now - timedelta(days=1)
    assert store.stage_at("b", "production", asked) == "1"
    # a version new in its load imports its history: dated at its created_at
    assert store.stage_history(name="b")[0].at == now - timedelta(days=10)

    load(store, entry(2, "production", now - timedelta(days=3)), now=now)

    assert store.stage_at("b", "production", asked) == "1"  # the past did not change
    assert store.stage_history(name="b")[-1].at == now
    assert store.stage_at("b", "production") == "2"


def test_a_new_entrys_status_older_than_the_environments_latest_move_is_not_applied(
    store: GraphStore, admin: TestClient,
) -> None:
    # Dated at its created_at it would change what resolve(asOf) answered; dated now, an
    # old entry would displace the live version without the gates: a warning instead.
    now = datetime.now(UTC).replace(microsecond=0)
    load(store, entry(1, "staging", now - timedelta(days=5)), now=now - timedelta(days=5))
    asked = now - timedelta(days=7)
    before = store.stage_history(name="b")

    body = post(admin, entry(2, "staging", now - timedelta(days=30))).json()

    assert store.stage_history(name="b") == before
    assert store.stage_at("b", "staging") == "1"
    assert store.stage_at("b", "staging", asked) is None
    assert [(w["record"], w["field"]) for w in body["warnings"]] == [(1, "status")]
    assert "not applied" in body["warnings"][0]["message"]
    assert "it serves @1 now" in body["warnings"][0]["message"]


def test_a_status_on_an_entry_without_created_at_moves_when_it_is_loaded(
    store: GraphStore,
) -> None:
    load(store, docs(entry(1, "production"), entry(2)), now=T0)
    later = T0 + timedelta(hours=2)

    load(store, entry(2, "production"), now=later)

    assert [m.at for m in store.stage_history(name="b")] == [T0, later]
    assert store.stage_at("b", "production", T0 + timedelta(hours=1)) == "1"


# -- #4: scheduled moves are refused --------------------------------------------------------------


def test_a_move_dated_in_the_future_is_refused_naming_document_and_field(
    store: GraphStore, admin: TestClient,
) -> None:
    assert post(admin, docs(entry(1), entry(2))).status_code == 200
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()

    scheduled = post(admin, docs(move_doc(1), move_doc(2, at=tomorrow)))
    dated = post(admin, entry(3, "production", datetime.now(UTC) + timedelta(hours=1)))

    assert scheduled.status_code == 400
    assert [(p["record"], p["field"]) for p in scheduled.json()["problems"]] == [(2, "at")]
    assert "scheduled moves are not supported" in scheduled.json()["problems"][0]["message"]
    assert dated.status_code == 400
    assert [(p["record"], p["field"]) for p in dated.json()["problems"]] == [(1, "created_at")]
    assert store.stage_history(name="b") == []
    assert store.versions("Bundle", "b", last=100)[-1].version == "2"


# -- retirement: a lasting record in `retired` -------------------------------------------------


def test_retiring_a_version_live_nowhere_is_recorded_once(store: GraphStore) -> None:
    load(store, docs(entry(14, "production"), entry(15, "staging")))
    release = docs(entry(14, "retired"), entry(15, "production"))

    load(store, release)
    load(store, release)

    history = store.stage_history(name="b")
    assert [(m.environment, m.to_version) for m in history if m.environment == RETIRED] == [
        (RETIRED, "14")]
    assert retired_versions(history) == {"14"}
    assert store.live_environments("b") == {"production": "15", "staging": "15"}


def test_every_version_a_load_retires_is_retired(store: GraphStore) -> None:
    load(store, docs(entry(1), entry(2), entry(3)))
    for version, environment in (("1", "staging"), ("2", "canary"), ("3", "production")):
        store.record_stage_move(StageMove(name="b", environment=environment,
                                          to_version=version))

    load(store, docs(entry(1, "retired"), entry(2, "retired"), entry(3, "production")))

    assert store.live_environments("b") == {"production": "3"}
    assert retired_versions(store.stage_history(name="b")) == {"1", "2"}


@pytest.mark.parametrize("dated", [True, False])
def test_a_stage_move_document_into_retired_takes_the_version_out_where_it_serves(
    store: GraphStore, dated: bool,
) -> None:
    # As promote(…, "retired") and `status: retired` do: `retired` is a record, never an
    # environment a version serves in.
    at = {"at": (T0 + timedelta(days=2)).isoformat()} if dated else {}
    release = docs(entry(1), entry(2),
                   move_doc(1, "canary", at=(T0 + timedelta(days=1)).isoformat()),
                   move_doc(2, "staging", at=(T0 + timedelta(days=1)).isoformat()),
                   move_doc(1, RETIRED, reason="end of life", **at))

    load(store, release)
    load(store, release)  # re-sent: nothing new

    assert moves_of(store) == [("canary", None, "1"), ("staging", None, "2"),
                               (RETIRED, None, "1"), ("canary", "1", None)]
    exit_move = store.stage_history(name="b", environment="canary")[-1]
    assert exit_move.reason == "end of life"
    assert store.live_environments("b") == {"staging": "2"}
    assert store.stage_at("b", "canary", T0 + timedelta(days=1, hours=1)) == "1"


def test_a_retired_version_promoted_again_is_not_retired_by_a_re_send(
    store: GraphStore, admin: TestClient,
) -> None:
    post(admin, docs(entry(1, "staging"), entry(2)))
    assert post(admin, entry(1, "retired")).json()["stage_moves"] == 2
    store.record_stage_move(StageMove(name="b", environment="staging", from_version=None,
                                      to_version="1", reason="revived"))

    again = post(admin, entry(1, "retired")).json()

    assert again["stage_moves"] == 0
    assert [(w["record"], w["field"]) for w in again["warnings"]] == [(1, "status")]
    assert "retired before" in again["warnings"][0]["message"]
    assert store.live_environments("b") == {"staging": "1"}


# -- #12: a declaration the history already holds is answered as a warning --------------------


def test_a_status_not_applied_again_is_named_in_the_load_warnings(
    store: GraphStore, admin: TestClient,
) -> None:
    first = docs(entry(14, "production"), entry(15, "staging"))
    post(admin, first)
    post(admin, docs(entry(14, "staging"), entry(15, "production")))

    reverted = post(admin, first)

    assert reverted.status_code == 200
    body = reverted.json()
    assert body["stage_moves"] == 0
    assert [(w["record"], w["field"]) for w in body["warnings"]] == [(1, "status"),
                                                                      (2, "status")]
    assert "bundle:b@14" in body["warnings"][0]["message"]
    assert "production serves @15" in body["warnings"][0]["message"]
    assert store.stage_at("b", "production") == "15"
    # a re-send of what the graph holds is no news: no warning
    assert post(admin, docs(entry(14, "staging"), entry(15, "production"))).json()[
        "warnings"] == []


def test_load_manifests_carries_the_warnings(store: GraphStore) -> None:
    load(store, docs(entry(1, "production"), entry(2)))
    store.record_stage_move(StageMove(name="b", environment="production", from_version="1",
                                      to_version="2"))

    summary = load_manifests(read_yaml(entry(1, "production")), store, actor="test")

    assert [(w.record, w.field) for w in summary.warnings] == [(1, "status")]
    assert summary.stage_moves == 0


# -- #8: annotations added to an entry loaded before ------------------------------------------


def test_an_evaluation_added_to_an_entry_loaded_before_is_the_latest(store: GraphStore) -> None:
    created = datetime(2026, 11, 1, tzinfo=UTC)
    now = datetime(2026, 11, 20, tzinfo=UTC)
    evaluation = "eval: {{ suite: s, score: {}, threshold: 0.9, run: {} }}\n"
    load(store, entry(1, created_at=created, extra=evaluation.format(0.95, "r9")
                      + "approved_by: zyql\n"), now=created)

    load(store, entry(1, created_at=created, extra=evaluation.format(0.42, "r10")
                      + "approved_by: [zyql, mkoss]\n"), now=now)

    found = store.get(["eval:s/r9", "eval:s/r10", "approval:bundle:b@1/zyql",
                       "approval:bundle:b@1/mkoss"])
    assert found["eval:s/r9"].created_at == created  # new with its entry: the entry's time
    assert found["eval:s/r10"].created_at == now
    latest = max([found["eval:s/r9"], found["eval:s/r10"]], key=lambda e: (e.created_at, e.id))
    assert latest.id == "eval:s/r10"
    assert found["approval:bundle:b@1/zyql"].properties["at"] == "2026-11-01T00:00:00Z"
    assert found["approval:bundle:b@1/mkoss"].created_at == now
    assert "at" not in found["approval:bundle:b@1/mkoss"].properties


# -- #18: `field: null` in a merge patch ---------------------------------------------------------


def test_null_removes_list_and_mapping_fields_in_a_merge_patch(store: GraphStore) -> None:
    load(store, """\
kind: PolicyPack
name: p
version: 1
risk_tier: regulated
residency: [eu]
allowed_tools: [search]
---
kind: PromptVersion
name: q
version: 1
template: hi
constraints: [short]
params: { temperature: 0 }
""")

    load(store, "kind: PolicyPack\nname: p\nversion: 1\nresidency: null\n---\n"
                "kind: PromptVersion\nname: q\nversion: 1\nconstraints: null\nparams: null\n")

    found = store.get(["policy:p@1", "prompt:q@1"])
    policy, prompt = found["policy:p@1"].properties, found["prompt:q@1"].properties
    assert policy["residency"] == []
    # what the patch does not state stays: the tier, the tools
    assert (policy["risk_tier"], policy["allowed_tools"]) == ("regulated", ["search"])
    assert (prompt["constraints"], prompt["params"], prompt["template"]) == ([], {}, "hi")
    with pytest.raises(IngestError, match="suite"):  # a required field cannot be removed
        load(store, "kind: Evaluation\nsuite: null\nrun: r1\ntarget: prompt:q@1\n")


def test_a_patch_leaves_declared_fields_it_does_not_state(store: GraphStore) -> None:
    load(store, "kind: PolicyPack\nname: p\nversion: 1\nrisk_tier: regulated\n"
                "residency: [eu]\n")

    load(store, "kind: PolicyPack\nname: p\nversion: 1\nrequired_approvals: 3\n")

    policy = store.get(["policy:p@1"])["policy:p@1"].properties
    assert (policy["risk_tier"], policy["residency"], policy["required_approvals"]) == (
        "regulated", ["eu"], 3)


def test_the_cli_prints_the_statuses_a_load_did_not_apply(
    store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    (tmp_path / "b.yaml").write_text(docs(entry(1, "production"), entry(2)))
    assert run_cli("ingest", "manifests", str(tmp_path), *cli_args(store, request)).exit_code == 0
    store.record_stage_move(StageMove(name="b", environment="production", from_version="1",
                                      to_version="2", reason="promoted through the API"))

    result = run_cli("ingest", "manifests", str(tmp_path), *cli_args(store, request))

    assert result.exit_code == 0, result.output
    assert "not applied" in result.output and "production serves @2 now" in result.output
    assert moves_of(store, "production") == [("production", None, "1"), ("production", "1", "2")]


def test_a_move_documents_stated_actor_is_kept_with_who_loaded_it(store: GraphStore) -> None:
    load(store, entry(1))
    stated = move_doc(1, actor="cli", reason="hotfix")

    load(store, stated, actor="token:ops")
    load(store, stated, actor="token:ops")  # no ``at``: applied once, as stated

    assert [m.actor for m in store.stage_history(name="b", environment="production")] == [
        "cli (recorded by token:ops)"]


def test_an_entry_editing_a_stored_node_past_the_bounds_is_refused_naming_it(
    store: GraphStore,
) -> None:
    # Written before the bounds (a created_at ahead of the clock then): an edit of it by an
    # entry's annotation is the load's problem, not a 500.
    store.upsert([Node.trusted("Evaluation", "s/r9", None, datetime(2099, 1, 1, tzinfo=UTC),
                               {"suite": "s", "run": "r9", "score": 0.5, "threshold": 0.9})])
    evaluation = "eval: { suite: s, score: 0.95, threshold: 0.9, run: r9 }\n"

    with pytest.raises(IngestError) as refused:
        load(store, entry(1, extra=evaluation))

    assert [p.record for p in refused.value.problems] == [1]
    assert "eval:s/r9 as stored" in str(refused.value)
    assert store.get(["eval:s/r9"])["eval:s/r9"].properties["score"] == 0.5


def test_a_load_on_a_long_stage_history_reads_the_last_moves_not_all_of_them(
    store: GraphStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bundle CI promotes hourly has tens of thousands of moves: a load's statuses and
    moves are planned from what is live and where the load's versions went."""
    load(store, docs(entry(1), entry(2), entry(3), entry(4)))
    store.upsert(stage_moves=[
        StageMove(name="b", environment=("production", "staging")[i % 2],
                  to_version=str(1 + i % 2), at=T0 + timedelta(minutes=i), actor="ci")
        for i in range(2000)])
    read: list[int] = []
    for method in ("stage_history", "stage_latest"):
        real = getattr(store, method)

        def counted(*args: Any, real: Any = real, **kwargs: Any) -> Any:
            moves = real(*args, **kwargs)
            read.append(len(moves))
            return moves

        monkeypatch.setattr(store, method, counted)

    load(store, docs(entry(3, "production"), entry(4, "retired"), move_doc(3, "staging"),
                     move_doc(2, "canary", reason="backfill")),
         now=T0 + timedelta(days=30))

    assert sum(read) < 20, read
    assert moves_of(store, "production")[-1] == ("production", "1", "3")
    assert moves_of(store, "staging")[-1] == ("staging", "2", "3")
    assert moves_of(store, "canary") == [("canary", None, "2")]
    assert moves_of(store, RETIRED) == [(RETIRED, None, "4")]
