"""History a manifest load imports, and what a load may not rewrite — on both stores:
statuses of several versions new in one load are each a move at their own created_at; an
evaluation ID is of one target; a node created only because a document references it is
dated by the documents that reference it, not by the load."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.auth import create_token
from lineagegraph.graph.drift import drift_sources
from lineagegraph.graph.impact import blast_radius
from lineagegraph.graph.store import GraphStore
from lineagegraph.ingest.batch import IngestError
from lineagegraph.ingest.manifest_formats import read_yaml
from lineagegraph.ingest.manifests import ManifestSummary, load_manifests

from .ingest_support import client_for, edges_of, snapshot

OCT4 = datetime(2026, 10, 4, tzinfo=UTC)
OCT10 = datetime(2026, 10, 10, tzinfo=UTC)


def load(store: GraphStore, *texts: str) -> ManifestSummary:
    return load_manifests(read_yaml("---\n".join(texts)), store, actor="test")


def entry(name: str, version: int, created_at: datetime | None = None, status: str = "",
          model: str = "snap-a", extra: str = "") -> str:
    lines = [f"name: {name}", f"version: {version}", f"model: {model}"]
    lines += [f"status: {status}"] if status else []
    lines += [f"created_at: {created_at.isoformat()}"] if created_at else []
    return "\n".join(lines) + "\n" + extra


def moves(store: GraphStore) -> list[tuple[Any, ...]]:
    return [(m.environment, m.from_version, m.to_version, m.at)
            for m in store.stage_history(name="app")]


# -- statuses of several versions new in one load: history imported ---------------------------


def test_statuses_of_versions_new_in_one_load_are_each_a_move_at_their_created_at(
    store: GraphStore,
) -> None:
    registry = (entry("app", 1, OCT4, "staging"), entry("app", 2, OCT10, "staging"))

    summary = load(store, *registry)
    after = snapshot(store)
    again = load(store, *registry)

    assert moves(store) == [("staging", None, "1", OCT4), ("staging", "1", "2", OCT10)]
    assert summary.warnings == [] and again.warnings == []
    assert snapshot(store) == after  # a re-send appends no move
    assert store.stage_at("app", "staging", OCT4 + timedelta(days=1)) == "1"
    radius = blast_radius(store, "bundle:app@2")
    assert radius is not None
    target = radius.rollback_target()
    assert target is not None and target.id == "bundle:app@1"


def test_history_imported_in_any_entry_order_and_environment_is_in_time_order(
    store: GraphStore,
) -> None:
    oct7 = datetime(2026, 10, 7, tzinfo=UTC)
    load(store, entry("app", 3, OCT10, "production"), entry("app", 1, OCT4, "production"),
         entry("app", 2, oct7, "production"), entry("app", 2, oct7, "production"))

    assert moves(store) == [("production", None, "1", OCT4), ("production", "1", "2", oct7),
                            ("production", "2", "3", OCT10)]


def test_an_older_status_a_load_cannot_date_comes_back_in_the_warnings(
    store: GraphStore,
) -> None:
    load(store, entry("app", 1, OCT4))  # stored before, never staged
    # not new in the load: no history imported; record 1 is named
    stored = load(store, entry("app", 1, OCT4, "staging"), entry("app", 2, OCT10, "staging"))
    # new, but created after the higher version: the times contradict the versions
    contradicting = load(store, entry("app", 4, OCT10 + timedelta(days=2), "staging"),
                         entry("app", 3, OCT10 + timedelta(days=1), "production"),
                         entry("app", 5, OCT10 + timedelta(days=1), "staging"))

    assert [(w.record, w.field) for w in stored.warnings] == [(1, "status")]
    assert "bundle:app@1" in stored.warnings[0].message
    assert [(w.record, w.field) for w in contradicting.warnings] == [(1, "status")]
    assert "contradict" in contradicting.warnings[0].message
    assert sorted((e, v) for e, _, v, _ in moves(store)) == [
        ("production", "3"), ("staging", "2"), ("staging", "5")]


def test_a_registry_keeping_old_entries_with_their_old_status_is_not_warned_about(
    store: GraphStore,
) -> None:
    load(store, entry("app", 1, OCT4, "staging"))
    load(store, entry("app", 2, OCT10, "staging"))

    again = load(store, entry("app", 1, OCT4, "staging"), entry("app", 2, OCT10, "staging"))

    assert again.warnings == []
    assert [v for _, _, v, _ in moves(store)] == ["1", "2"]


# -- one evaluation ID, one target ---------------------------------------------------------------

EVAL = "eval: {suite: triage-eval-v4, run: '2026-10-16', score: %s, threshold: 0.9}\n"
EVAL_ID = "eval:triage-eval-v4/2026-10-16"


@pytest.fixture
def admin(store: GraphStore) -> Iterator[TestClient]:
    secret = create_token(store, "release-eng", "admin", actor="test")[1]
    with client_for(store) as client:
        client.headers["Authorization"] = f"Bearer {secret}"
        yield client


def post(client: TestClient, text: str) -> Any:
    return client.post("/api/v1/manifests", content=text,
                       headers={"content-type": "application/yaml"})


def test_an_evaluation_id_stored_for_another_bundle_is_refused_whatever_the_token(
    store: GraphStore, admin: TestClient,
) -> None:
    load(store, entry("triage-us", 1, OCT4, extra=EVAL % "0.95"))
    writer = create_token(store, "ci", "write", actor="test")[1]
    before = snapshot(store)

    answers = [post(admin, entry("triage-eu", 1, OCT10, extra=EVAL % "0.5")),
               admin.post("/api/v1/manifests", headers={
                   "content-type": "application/yaml", "Authorization": f"Bearer {writer}"},
                   content=entry("triage-eu", 1, OCT10, extra=EVAL % "0.5"))]

    for answer in answers:
        assert answer.status_code == 400
        assert [(p["record"], p["field"]) for p in answer.json()["problems"]] == [(1, "eval")]
        message = answer.json()["problems"][0]["message"]
        assert "bundle:triage-us@1" in message and "eval.run" in message
    assert snapshot(store) == before
    assert store.get([EVAL_ID])[EVAL_ID].properties["score"] == 0.95
    assert edges_of(store, EVAL_ID) == {("EVALUATES", "bundle:triage-us@1")}


def test_an_evaluation_document_retargeting_a_stored_evaluation_is_refused_naming_target(
    store: GraphStore,
) -> None:
    load(store, entry("triage-us", 1, OCT4, extra=EVAL % "0.95"), entry("triage-eu", 1, OCT4))
    before = snapshot(store)

    with pytest.raises(IngestError) as refused:
        load(store, "kind: Evaluation\nsuite: triage-eval-v4\nrun: '2026-10-16'\n"
                    "target: bundle:triage-eu@1\nscore: 0.5\n")

    assert [(p.record, p.field) for p in refused.value.problems] == [(1, "target")]
    assert "bundle:triage-us@1" in refused.value.problems[0].message
    assert snapshot(store) == before


def test_one_load_evaluating_two_bundles_in_one_run_names_the_other_target(
    store: GraphStore,
) -> None:
    with pytest.raises(IngestError) as refused:
        load(store, entry("triage-us", 1, OCT4, extra=EVAL % "0.95"),
             entry("triage-eu", 1, OCT4, extra=EVAL % "0.95"))

    assert [(p.record, p.field) for p in refused.value.problems] == [(2, "eval")]
    assert "bundle:triage-us@1 (in record 1" in refused.value.problems[0].message
    assert store.get([EVAL_ID]) == {}


def test_an_admins_score_correction_for_the_same_bundle_still_applies(
    store: GraphStore, admin: TestClient,
) -> None:
    load(store, entry("triage-us", 1, OCT4, extra=EVAL % "0.95"))
    after = snapshot(store)
    resent = post(admin, entry("triage-us", 1, OCT4, extra=EVAL % "0.95"))
    unchanged = snapshot(store)

    corrected = post(admin, entry("triage-us", 1, OCT4, extra=EVAL % "0.97"))

    assert resent.status_code == 200 and corrected.status_code == 200
    assert {k: v for k, v in unchanged.items() if k != "nodes"} == {
        k: v for k, v in after.items() if k != "nodes"}
    assert unchanged["nodes"][EVAL_ID] == after["nodes"][EVAL_ID]
    assert store.get([EVAL_ID])[EVAL_ID].properties["score"] == 0.97


# -- nodes created by reference are dated by the documents referencing them ------------------


def test_a_snapshot_only_a_bundle_pins_is_dated_by_the_earliest_bundle_pinning_it(
    store: GraphStore,
) -> None:
    load(store, entry("app", 2, OCT10), entry("other", 1, OCT4))

    assert store.get(["model:snap-a"])["model:snap-a"].created_at == OCT4
    onset = datetime.now(UTC) + timedelta(minutes=1)
    found = drift_sources(store, "bundle:app@2", onset=onset)
    assert found is not None
    assert "model:snap-a" not in [c.node.id for c in found]


def test_a_node_created_by_reference_before_keeps_its_created_at(store: GraphStore) -> None:
    load(store, entry("app", 2, OCT10))

    load(store, entry("other", 1, OCT4))

    assert store.get(["model:snap-a"])["model:snap-a"].created_at == OCT10


def test_a_job_and_a_family_are_dated_by_their_earliest_run_and_version(
    store: GraphStore,
) -> None:
    load(store, f"kind: TrainingRun\nrun_id: r-2\njob: nightly\ncreated_at: {OCT10.isoformat()}\n",
         f"kind: TrainingRun\nrun_id: r-1\njob: nightly\ncreated_at: {OCT4.isoformat()}\n",
         f"kind: ModelVersion\nname: fraud\nversion: 2\ncreated_at: {OCT10.isoformat()}\n",
         f"kind: ModelVersion\nname: fraud\nversion: 1\ncreated_at: {OCT4.isoformat()}\n")

    found = store.get(["job:nightly", "model:fraud"])
    assert {i: n.created_at for i, n in found.items()} == {"job:nightly": OCT4,
                                                           "model:fraud": OCT4}
