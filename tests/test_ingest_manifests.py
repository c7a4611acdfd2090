"""Registry manifests: the directory format and the seed bundle entry, over REST and the CLI,
on both stores — every kind, references, versions, stage moves, re-sends, bad input."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from lineagegraph.graph.store import GraphStore
from lineagegraph.ingest.batch import IngestError
from lineagegraph.ingest.manifest_formats import read_directory, read_yaml
from lineagegraph.ingest.manifests import map_manifests
from lineagegraph.schema import Node, StageMove

from .ingest_support import MANIFESTS, cli_args, client_for, edges_of, run_cli, snapshot

T0 = datetime(2026, 6, 1, tzinfo=UTC)

SEED_BUNDLE = """\
name: support-triage
version: 14
model: gpt-5-mini-2026-08          # pinned snapshot; floating aliases fail the production gate
prompt_ref: triage-prompt@v9
params: { max_tokens: 300 }
tools_ref: triage-tools@v3
policy_ref: support-safety@v6
eval: { suite: triage-eval-v4, score: 0.94, threshold: 0.9, run: 2026-06-10 }
approved_by: zyql
status: production                 # draft | staging | production | retired
"""

PARTS = """\
kind: PromptVersion
name: triage-prompt
version: 9
template: "Classify: {{ticket}}"
---
kind: Toolset
name: triage-tools
version: 3
---
kind: PolicyPack
name: support-safety
version: 6
risk_tier: production
"""


def load(store: GraphStore, text: str, now: datetime | None = None) -> None:
    map_manifests(read_yaml(text), store, actor="test", now=now).write(store)


def load_registry(store: GraphStore) -> None:
    map_manifests(read_directory(MANIFESTS), store, actor="test").write(store)


def post_yaml(client: TestClient, text: str, content_type: str = "application/yaml") -> Response:
    return client.post("/api/v1/manifests", content=text, headers={"content-type": content_type})


# -- every kind ---------------------------------------------------------------------------------


def test_the_registry_directory_loads_every_kind_with_its_edges(store: GraphStore) -> None:
    load_registry(store)

    kinds = {n.id: n.kind for n in store.find(first=1000)}
    assert kinds == {
        "source:warehouse.payments": "DataSource", "source:kb.support-articles": "DataSource",
        "dataset:warehouse.payments@2026-11-15": "DatasetVersion",
        "feature:txn_amount_7d@2": "Feature", "run:r-fraud-7": "TrainingRun",
        "job:airflow/train_fraud": "Job", "model:fraud-detector": "Model",
        "model:fraud-detector@7": "ModelVersion", "model:gpt-5-mini-2026-08": "ModelVersion",
        "prompt:triage-prompt": "Prompt", "prompt:triage-prompt@9": "PromptVersion",
        "tools:triage-tools@3": "Toolset", "policy:support-safety@6": "PolicyPack",
        "bundle:support-triage@14": "Bundle", "bundle:support-triage@15": "Bundle",
        "eval:fraud-eval-v2/2026-11-17": "Evaluation",
        "eval:triage-eval-v4/2026-06-10": "Evaluation",
        "approval:model:fraud-detector@7/risk-board/model-risk": "Approval",
        "approval:bundle:support-triage@14/zyql": "Approval",
        "approval:bundle:support-triage@15/zyql": "Approval",
        "approval:bundle:support-triage@15/mkoss": "Approval",
    }
    assert edges_of(store, "dataset:warehouse.payments@2026-11-15") == {
        ("VERSION_OF", "source:warehouse.payments")}
    assert edges_of(store, "feature:txn_amount_7d@2") == {
        ("DERIVED_FROM", "dataset:warehouse.payments@2026-11-15")}
    assert edges_of(store, "run:r-fraud-7") == {
        ("CONSUMED", "feature:txn_amount_7d@2"), ("RUN_OF", "job:airflow/train_fraud")}
    assert edges_of(store, "model:fraud-detector@7") == {
        ("PRODUCED_BY", "run:r-fraud-7"), ("VERSION_OF", "model:fraud-detector")}
    assert edges_of(store, "prompt:triage-prompt@9") == {
        ("DESIGNED_FOR", "model:gpt-5-mini-2026-08"), ("VERSION_OF", "prompt:triage-prompt")}
    assert edges_of(store, "bundle:support-triage@15") == {
        ("USES_MODEL", "model:gpt-5-mini-2026-08"), ("USES_PROMPT", "prompt:triage-prompt@9"),
        ("USES_TOOLS", "tools:triage-tools@3"), ("GOVERNED_BY", "policy:support-safety@6"),
        ("RETRIEVES_FROM", "source:kb.support-articles"),
        ("SUPERSEDES", "bundle:support-triage@14")}
    assert edges_of(store, "eval:fraud-eval-v2/2026-11-17") == {
        ("EVALUATES", "model:fraud-detector@7")}
    assert edges_of(store, "approval:model:fraud-detector@7/risk-board/model-risk") == {
        ("APPROVES", "model:fraud-detector@7")}


def test_declared_and_undeclared_fields_become_properties(store: GraphStore) -> None:
    load_registry(store)
    found = store.get(["model:fraud-detector@7", "run:r-fraud-7", "policy:support-safety@6"])

    model = found["model:fraud-detector@7"].properties
    assert (model["provider"], model["region"], model["team"], model["registered"]) == (
        "in-house", "eu-west-1", "risk", True)
    assert found["run:r-fraud-7"].properties["params"] == {"learning_rate": 0.05, "trees": 400}
    assert found["run:r-fraud-7"].properties["started_at"] == "2026-11-16T02:00:00Z"
    assert found["policy:support-safety@6"].properties["residency"] == ["eu"]
    assert "kind" not in model and "produced_by" not in model


def test_the_seed_bundle_entry_loads_exactly_as_written(store: GraphStore) -> None:
    load(store, PARTS)
    with client_for(store) as client:
        response = post_yaml(client, SEED_BUNDLE)

    assert response.status_code == 200, response.text
    bundle = store.get(["bundle:support-triage@14"])["bundle:support-triage@14"]
    assert bundle.properties["params"] == {"max_tokens": 300}
    assert edges_of(store, bundle.id) == {
        ("USES_MODEL", "model:gpt-5-mini-2026-08"), ("USES_PROMPT", "prompt:triage-prompt@9"),
        ("USES_TOOLS", "tools:triage-tools@3"), ("GOVERNED_BY", "policy:support-safety@6")}
    # The pinned snapshot: a ModelVersion with no version part and no family node.
    snapshot_node = store.get(["model:gpt-5-mini-2026-08"])["model:gpt-5-mini-2026-08"]
    assert (snapshot_node.kind, snapshot_node.version) == ("ModelVersion", None)
    assert edges_of(store, snapshot_node.id) == set()
    evaluation = store.get(["eval:triage-eval-v4/2026-06-10"])["eval:triage-eval-v4/2026-06-10"]
    assert (evaluation.properties["score"], evaluation.properties["threshold"]) == (0.94, 0.9)
    assert edges_of(store, evaluation.id) == {("EVALUATES", bundle.id)}
    assert edges_of(store, "approval:bundle:support-triage@14/zyql") == {("APPROVES", bundle.id)}
    assert store.stage_at("support-triage", "production") == "14"
    assert [(a.action, a.actor) for a in store.audit_log(target="bundle:support-triage@14")] == [
        ("upsert", "anonymous"), ("stage_move", "anonymous")]


def test_references_may_be_bare_or_ids_and_approvers_a_list(store: GraphStore) -> None:
    load(store, PARTS)
    load(store, SEED_BUNDLE.replace("prompt_ref: triage-prompt@v9",
                                    "prompt_ref: prompt:triage-prompt@9")
         .replace("model: gpt-5-mini-2026-08", "model: model:gpt-5-mini-2026-08")
         .replace("approved_by: zyql", "approved_by: [zyql, mkoss]"))

    assert ("USES_PROMPT", "prompt:triage-prompt@9") in edges_of(store, "bundle:support-triage@14")
    assert set(store.get(["approval:bundle:support-triage@14/zyql",
                          "approval:bundle:support-triage@14/mkoss"])) == {
        "approval:bundle:support-triage@14/zyql", "approval:bundle:support-triage@14/mkoss"}


def test_json_bodies_with_one_or_many_documents_load(store: GraphStore) -> None:
    with client_for(store) as client:
        one = client.post("/api/v1/manifests", json={"kind": "DataSource", "name": "wh.a"})
        many = client.post("/api/v1/manifests", json=[
            {"kind": "DataSource", "name": "wh.b"},
            {"kind": "DatasetVersion", "source": "wh.b", "version": "2026-01-01"}])

    assert (one.status_code, many.status_code) == (200, 200)
    assert set(store.get(["source:wh.a", "source:wh.b", "dataset:wh.b@2026-01-01"])) == {
        "source:wh.a", "source:wh.b", "dataset:wh.b@2026-01-01"}


# -- re-sends -------------------------------------------------------------------------------------


def test_re_sending_the_registry_changes_nothing(store: GraphStore) -> None:
    load_registry(store)
    before = snapshot(store)

    with client_for(store) as client:
        for path in sorted(MANIFESTS.rglob("*.y*ml")):
            response = post_yaml(client, path.read_text())
            assert response.status_code == 200, response.text
            assert response.json()["created"] == response.json()["updated"] == 0
    load_registry(store)

    assert snapshot(store) == before


def test_the_cli_loads_a_directory_and_a_rerun_changes_nothing(
    store: GraphStore, request: pytest.FixtureRequest,
) -> None:
    first = run_cli("ingest", "manifests", str(MANIFESTS), *cli_args(store, request))
    before = snapshot(store)
    again = run_cli("ingest", "manifests", str(MANIFESTS), *cli_args(store, request))

    assert first.exit_code == 0, first.output
    assert "ingest summary" in first.output and "records/s" in first.output
    assert again.exit_code == 0, again.output
    assert snapshot(store) == before
    assert "bundle:support-triage@15" in before["nodes"]
    actors = {a.actor for a in store.audit_log(target="bundle:support-triage@15")}
    assert actors == {os.environ.get("USER") or "cli"}


# -- versions ---------------------------------------------------------------------------------


def test_a_version_defaults_to_previous_plus_one_and_supersedes_it(store: GraphStore) -> None:
    load(store, "kind: Toolset\nname: t\nversion: 3\ntools: [a]\n")
    load(store, "kind: Toolset\nname: t\ntools: [a, b]\n")
    load(store, "kind: Toolset\nname: t\ntools: [a, b]\n")  # a re-send: no version 5

    assert [n.version for n in store.versions("Toolset", "t", last=100)] == ["3", "4"]
    assert edges_of(store, "tools:t@4") == {("SUPERSEDES", "tools:t@3")}

    load(store, "kind: Toolset\nname: t\ntools: [a, b, c]\n---\nkind: Toolset\nname: t\n"
                "tools: [d]\n")
    assert [n.version for n in store.versions("Toolset", "t", last=100)] == ["3", "4", "5", "6"]
    assert edges_of(store, "tools:t@6") == {("SUPERSEDES", "tools:t@5")}


def test_supersedes_false_or_a_named_version_overrides_the_default(store: GraphStore) -> None:
    load(store, "kind: PolicyPack\nname: p\nversion: 1\n---\nkind: PolicyPack\nname: p\n"
                "version: 2\n")
    load(store, "kind: PolicyPack\nname: p\nversion: 3\nsupersedes: 1\n---\n"
                "kind: PolicyPack\nname: p\nversion: 4\nsupersedes: false\n")

    assert edges_of(store, "policy:p@2") == {("SUPERSEDES", "policy:p@1")}
    assert edges_of(store, "policy:p@3") == {("SUPERSEDES", "policy:p@1")}
    assert edges_of(store, "policy:p@4") == set()


def test_a_model_version_gets_its_family_and_a_created_at_that_stays(store: GraphStore) -> None:
    load(store, "kind: ModelVersion\nname: m\nversion: 1\ncreated_at: 2026-01-02T03:04:05Z\n")
    load(store, "kind: ModelVersion\nname: m\nversion: 1\ncreated_at: 2026-05-05T00:00:00Z\n")

    found = store.get(["model:m", "model:m@1"])
    assert found["model:m"].kind == "Model"
    assert found["model:m@1"].created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert edges_of(store, "model:m@1") == {("VERSION_OF", "model:m")}


# -- stage moves --------------------------------------------------------------------------------


def _bundle(version: int | None, status: str, created_at: str | None = None) -> str:
    lines = ["name: b", "model: gpt-x-2026", f"status: {status}"]
    lines += [f"version: {version}"] if version is not None else []
    lines += [f"created_at: {created_at}"] if created_at else []
    return "\n".join(lines) + "\n"


def test_status_moves_the_version_in_once_at_its_creation(store: GraphStore) -> None:
    load(store, _bundle(1, "production", "2026-06-01T00:00:00Z"))
    load(store, _bundle(1, "production", "2026-06-01T00:00:00Z"))

    history = store.stage_history(name="b")
    assert [(m.environment, m.from_version, m.to_version, m.at) for m in history] == [
        ("production", None, "1", T0)]


def test_editing_only_the_status_moves_the_entry_without_a_new_version(
    store: GraphStore,
) -> None:
    load(store, _bundle(None, "staging"))
    load(store, _bundle(None, "production"))

    assert [n.version for n in store.versions("Bundle", "b", last=100)] == ["1"]
    assert store.live_environments("b") == {"staging": "1", "production": "1"}


def test_a_directory_holding_old_entries_promotes_only_the_highest(store: GraphStore) -> None:
    load(store, _bundle(1, "production") + "---\n" + _bundle(2, "production"))
    load(store, _bundle(1, "production") + "---\n" + _bundle(2, "production"))

    assert [(m.to_version) for m in store.stage_history(name="b")] == ["2"]


def test_re_loading_the_registry_does_not_undo_a_later_rollback(store: GraphStore) -> None:
    load(store, _bundle(1, "production", "2026-06-01T00:00:00Z"))
    load(store, _bundle(2, "production", "2026-06-02T00:00:00Z"))
    store.record_stage_move(StageMove(name="b", environment="production", to_version="1",
                                      from_version="2", at=T0 + timedelta(days=5)))

    load(store, _bundle(1, "production", "2026-06-01T00:00:00Z") + "---\n"
         + _bundle(2, "production", "2026-06-02T00:00:00Z"))

    assert [m.to_version for m in store.stage_history(name="b")] == ["1", "2", "1"]
    assert store.stage_at("b", "production") == "1"


def test_a_status_dated_before_the_latest_move_is_not_applied(store: GraphStore) -> None:
    load(store, _bundle(2, "production", "2026-06-05T00:00:00Z"))
    now = datetime(2026, 7, 1, tzinfo=UTC)
    load(store, _bundle(3, "production", "2026-06-01T00:00:00Z"), now=now)

    assert len(store.stage_history(name="b")) == 1
    assert store.stage_at("b", "production") == "2"


def test_retired_takes_the_version_out_of_where_it_is_live(store: GraphStore) -> None:
    """``status: retired`` appends a move to no version in every environment serving that
    version (besides its record in ``retired``, where nothing is live); a re-send adds
    nothing."""
    load(store, _bundle(1, "production") + "---\n" + _bundle(2, "staging"))
    store.record_stage_move(StageMove(name="b", environment="canary", to_version="1"))

    load(store, _bundle(1, "retired"))
    load(store, _bundle(1, "retired"))

    retirements = [m for m in store.stage_history(name="b") if m.to_version is None]
    assert sorted((m.environment, m.from_version) for m in retirements) == [
        ("canary", "1"), ("production", "1")]
    assert store.live_environments("b") == {"staging": "2"}


def test_stage_move_documents_are_explicit_history_and_idempotent(store: GraphStore) -> None:
    load(store, _bundle(1, "draft") + "---\n" + _bundle(2, "draft"))
    moves = """\
kind: StageMove
bundle: b
version: 1
environment: production
at: 2026-06-01T00:00:00Z
actor: release-bot
reason: launch
---
kind: StageMove
bundle: bundle:b
version: 2
environment: production
"""
    load(store, moves)
    load(store, moves)

    production = store.stage_history(name="b", environment="production")
    # The actor a document states is kept with who loaded it: no document makes a move
    # look like another actor's alone (the audit log names the loader too).
    assert [(m.from_version, m.to_version, m.actor) for m in production] == [
        (None, "1", "release-bot (recorded by test)"), ("1", "2", "test")]


def test_a_move_dated_before_a_declared_status_is_what_the_declaration_moved_from(
    store: GraphStore,
) -> None:
    # The registry says @2 is in production now; the move that put @1 there before comes
    # as history in the same load, planned after the declaration but dated before it.
    load(store, _bundle(1, "draft", "2026-06-01T00:00:00Z") + "---\n"
         + _bundle(2, "production", "2026-06-05T00:00:00Z") + """---
kind: StageMove
bundle: b
version: 1
environment: production
at: 2026-06-02T00:00:00Z
""")

    production = store.stage_history(name="b", environment="production")
    assert [(m.from_version, m.to_version) for m in production] == [(None, "1"), ("1", "2")]


def test_a_registered_bundle_version_is_not_rewritten_with_other_pins(
    store: GraphStore,
) -> None:
    load(store, PARTS + "---\n" + SEED_BUNDLE)
    before = snapshot(store)
    changed = SEED_BUNDLE.replace("triage-prompt@v9", "triage-prompt@v10").replace(
        "max_tokens: 300", "max_tokens: 900")
    parts_10 = "---\nkind: PromptVersion\nname: triage-prompt\nversion: 10\n"

    with pytest.raises(IngestError) as refused:
        load(store, PARTS + parts_10 + "---\n" + changed)
    load(store, PARTS + "---\n" + SEED_BUNDLE)  # re-sent as it is: fine

    [problem] = refused.value.problems
    assert (problem.field, problem.message.split(" (")[0]) == (
        "version", "bundle:support-triage@14 is registered, and a registered version does "
        "not change")
    assert "a new USES_PROMPT → prompt:triage-prompt@10" in problem.message
    assert "params" in problem.message
    assert snapshot(store) == before


# -- registration ---------------------------------------------------------------------------------


def test_naming_a_snapshot_that_traffic_discovered_registers_it_as_if_it_created_it(
        store: GraphStore) -> None:
    """The same properties whichever came first, the traffic or the manifest."""
    store.upsert([Node.from_id("model:gpt-x-2026", kind="ModelVersion",
                               properties={"registered": False, "seen_by": "gateway"})])

    load(store, _bundle(1, "draft"))

    model = store.get(["model:gpt-x-2026"])["model:gpt-x-2026"]
    assert model.properties == {"registered": True, "seen_by": "gateway",
                                "pinned_snapshot": "gpt-x-2026"}
    assert store.find(kinds=["ModelVersion"], where={"registered": False}) == []


def test_a_referenced_node_from_another_import_is_not_rewritten(store: GraphStore) -> None:
    store.upsert([Node.from_id("job:airflow/train", properties={"job_type": "BATCH"})])

    load(store, "kind: TrainingRun\nrun_id: r1\njob: airflow/train\n")

    assert store.get(["job:airflow/train"])["job:airflow/train"].properties == {
        "job_type": "BATCH"}
    assert edges_of(store, "run:r1") == {("RUN_OF", "job:airflow/train")}


# -- bad input: 4xx naming record and field, nothing written ------------------------------------


def test_malformed_yaml_names_the_document_and_line(store: GraphStore) -> None:
    text = "kind: DataSource\nname: ok\n---\nkind: DataSource\nname: [unclosed\n"
    with client_for(store) as client:
        response = post_yaml(client, text)

    assert response.status_code == 400
    problem = response.json()["problems"][0]
    assert problem["record"] == 2
    assert "malformed YAML" in problem["message"] and "line 6" in problem["message"]
    assert store.find() == []


def test_a_dangling_reference_is_named_with_record_and_field(store: GraphStore) -> None:
    text = PARTS + "---\n" + SEED_BUNDLE.replace("triage-tools@v3", "triage-tools@v4")
    with client_for(store) as client:
        response = post_yaml(client, text)

    assert response.status_code == 400
    assert response.json()["problems"] == [{
        "record": 4, "field": "tools_ref",
        "message": "tools:triage-tools@4 is neither in the graph nor in this load"}]
    assert store.find() == [] and store.stage_history() == [] and store.audit_log() == []


def test_every_problem_of_a_load_is_listed_with_its_field_path(store: GraphStore) -> None:
    text = """\
kind: DatasetVersion
source: wh.missing
version: 1
row_count: many
---
kind: Feature
name: f
version: 1
derived_from: [warehouse.payments]
---
kind: Gadget
name: g
---
name: no-model-no-kind
"""
    with client_for(store) as client:
        response = post_yaml(client, text, "text/yaml")

    problems = {(p["record"], p.get("field")) for p in response.json()["problems"]}
    assert response.status_code == 400
    assert problems == {(1, "row_count"), (2, "derived_from.0"), (3, "kind"), (4, "kind")}
    assert store.find() == []


def test_a_cli_load_with_a_bad_file_writes_nothing_and_names_the_file(
    store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    (tmp_path / "good.yaml").write_text("kind: DataSource\nname: wh.a\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bad.yml").write_text("kind: DataSource\nname: x\n---\nname: [\n")

    result = run_cli("ingest", "manifests", str(tmp_path), *cli_args(store, request))

    assert result.exit_code == 1
    assert "sub/bad.yml#2" in result.output and "malformed YAML" in result.output
    assert store.find() == []


def test_a_cli_directory_load_takes_json_files_as_the_route_takes_json(
    store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    (tmp_path / "sources.json").write_text(
        '[{"kind": "DataSource", "name": "json.src"}, {"kind": "DataSource", "name": "b"}]')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "one.json").write_text('{"kind": "Toolset", "name": "t", "version": 1}')
    (tmp_path / "sub" / "also.yml").write_text("kind: DataSource\nname: yaml.src\n")
    (tmp_path / "notes.txt").write_text("not a manifest")

    result = run_cli("ingest", "manifests", str(tmp_path), *cli_args(store, request))

    assert result.exit_code == 0, result.output
    assert {n.id for n in store.find()} == {"source:json.src", "source:b", "tools:t@1",
                                           "source:yaml.src"}


def test_a_json_manifest_file_names_its_items_and_where_it_breaks(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('[{"kind": "DataSource", "name": "a"}, {"kind": 7}]')
    assert [doc.record for doc in read_directory(tmp_path / "a.json")] == ["a.json#1",
                                                                          "a.json#2"]
    (tmp_path / "b.json").write_text('{"kind": ')

    with pytest.raises(IngestError) as refused:
        read_directory(tmp_path)

    assert [problem.record for problem in refused.value.problems] == ["b.json"]
    assert "malformed JSON at line 1" in str(refused.value)


@pytest.mark.parametrize("holding", [[], ["README.md", "sub/notes.txt"]])
def test_a_cli_load_of_a_directory_with_nothing_to_load_is_a_usage_error(
    tmp_path: Path, holding: list[str],
) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    for name in holding:
        (registry / name).parent.mkdir(parents=True, exist_ok=True)
        (registry / name).write_text("kind: DataSource\nname: x\n")

    result = run_cli("ingest", "manifests", str(registry), "--db", str(tmp_path / "x.db"))

    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "nothing to load: no *.yaml, *.yml or *.json file below" in said
    assert "ingest summary" not in result.output


def test_two_documents_defining_one_id_differently_are_refused(store: GraphStore) -> None:
    with pytest.raises(IngestError, match="also defined, differently, by record 1"):
        load(store, "kind: DataSource\nname: a\nowner: x\n---\nkind: DataSource\nname: a\n"
                    "owner: y\n")


def test_a_reference_to_a_node_of_another_kind_is_refused(store: GraphStore) -> None:
    load(store, "kind: ModelVersion\nname: fam\nversion: 1\n")  # creates Model model:fam
    with pytest.raises(IngestError, match="model:fam is a Model, not a ModelVersion"):
        load(store, "name: b\nversion: 1\nmodel: fam\n")


def test_unsupported_content_types_are_415(store: GraphStore) -> None:
    with client_for(store) as client:
        response = client.post("/api/v1/manifests", content="x",
                               headers={"content-type": "application/xml"})
    assert response.status_code == 415
