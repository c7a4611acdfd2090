"""The MLflow import against a real MLflow tracking store (sqlite, built once per module
with the real ``mlflow`` package) into both graph stores, and through the CLI.

The MLflow extra is required: without it these tests fail with the install line, never
skip (CI installs ``.[test,mlflow]``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.store import Direction, GraphStore
from lineagegraph.graph.walk import walk
from lineagegraph.ingest.batch import IngestError
from lineagegraph.ingest.manifest_formats import read_yaml
from lineagegraph.ingest.manifests import load_manifests
from lineagegraph.ingest.mlflow_import import (
    ACTOR,
    dataset_locator,
    import_mlflow,
    read_batch,
    redact,
)
from lineagegraph.schema import EDGE_KINDS_BY_TYPE, Node

from .ingest_support import snapshot

# MLflow's own chatter while building the tracking store, not the importer's.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*noload.*:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Starting with pandas version 4"),
    pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer:UserWarning"),
]

MODEL = "fraud-detector"
PROMPT = "triage-prompt"
PAYMENTS = "s3://wh/payments.parquet"


@dataclass(frozen=True)
class Tracking:
    """The MLflow tracking store the tests import, and the IDs MLflow gave its things."""

    db: Path
    runs: tuple[str, str]  # train-0 (registered as v1), train-1 (v2)
    payments: tuple[str, str]  # digests of the payments dataset each run read
    holdout: str  # digest of the evaluation dataset built in code (no source URI)

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.db}"


def require_mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        pytest.fail("the MLflow import tests need the mlflow extra: "
                    "pip install -e '.[test,mlflow]' (tools/test does this)", pytrace=False)
    return mlflow


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracking]:
    """Two training runs reading a dataset, a model registered from each, aliases
    staging → v1 and production → v2, and prompts linked to the model and a run."""
    mlflow = require_mlflow()
    import numpy as np
    import pandas as pd

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        # The fluent API (runs, prompts) works on the global URI; undo it afterwards.
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_REGISTRY_URI", uri)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            yield _build(mlflow, np, pd, root)
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)


def _build(mlflow: Any, np: Any, pd: Any, root: Path) -> Tracking:
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("fraud-training",
                                          artifact_location=(root / "artifacts").as_uri())
    frame = pd.DataFrame({"amount": [12.5, 80.0, 3.2], "label": [0, 1, 0]})
    holdout = mlflow.data.from_numpy(np.array([[1.0, 0.0], [2.0, 1.0]]), name="holdout")
    runs, payments, logged = [], [], []
    for i, (lr, auc) in enumerate(((0.1, 0.90), (0.05, 0.93))):
        dataset = mlflow.data.from_pandas(frame.iloc[: i + 2], source=PAYMENTS,
                                          name="payments", targets="label")
        with mlflow.start_run(experiment_id=experiment, run_name=f"train-{i}") as run:
            mlflow.log_params({"lr": lr, "depth": 6})
            mlflow.log_metrics({"auc": auc, "loss": 0.3 - i / 10})
            mlflow.log_input(dataset, context="training")
            if i == 1:
                mlflow.log_input(holdout, context="evaluation")
            logged.append(mlflow.create_external_model(name=MODEL).model_id)
        runs.append(run.info.run_id)
        payments.append(dataset.digest)
    for model_id in logged:
        mlflow.register_model(f"models:/{model_id}", MODEL)
    client.set_registered_model_alias(MODEL, "staging", "1")
    client.set_registered_model_alias(MODEL, "production", "2")

    first = mlflow.genai.register_prompt(name=PROMPT, template="Classify {{txn}}.",
                                         commit_message="first cut")
    second = mlflow.genai.register_prompt(name=PROMPT, template="Classify {{txn}} carefully.",
                                          commit_message="stricter")
    client.link_prompt_version_to_run(runs[0], first)
    client.link_prompt_version_to_model(PROMPT, str(second.version), logged[1])
    mlflow.genai.register_prompt(name="triage-chat", template=[
        {"role": "system", "content": "You triage payments."},
        {"role": "user", "content": "{{txn}}"}])
    return Tracking(root / "mlflow.db", (runs[0], runs[1]), (payments[0], payments[1]),
                    holdout.digest)


def copy_of(tracking: Tracking, tmp_path: Path) -> Tracking:
    """A copy of the tracking store, for a test that changes it."""
    copy = Tracking(tmp_path / "mlflow.db", tracking.runs, tracking.payments, tracking.holdout)
    shutil.copy(tracking.db, copy.db)
    return copy


def editable(tracking: Tracking, tmp_path: Path) -> tuple[Tracking, Any]:
    """A copy of the tracking store and a client of its registry, for a test that changes
    MLflow."""
    copy = copy_of(tracking, tmp_path)
    return copy, require_mlflow().MlflowClient(tracking_uri=copy.uri, registry_uri=copy.uri)


def ids(store: GraphStore, kind: str) -> set[str]:
    return {node.id for node in store.find(kinds=[kind], first=1000)}


def edges_from(store: GraphStore, node_id: str) -> set[tuple[str, str]]:
    """Every out-edge, the annotating ones (SUPERSEDES) included."""
    hops = store.expand([node_id], Direction.UPSTREAM, edge_types=list(EDGE_KINDS_BY_TYPE))
    return {(hop.edge.type, hop.node.id) for hop in hops}


def payments_version(tracking: Tracking, i: int) -> str:
    return f"dataset:{PAYMENTS}@{tracking.payments[i]}"


# -- the mapping ----------------------------------------------------------------------------


def test_import_maps_experiment_runs_datasets_models_and_prompts(
        store: GraphStore, tracking: Tracking) -> None:
    import_mlflow(store, tracking.uri)
    run0, run1 = (f"run:{r}" for r in tracking.runs)

    assert ids(store, "Job") == {"job:mlflow/fraud-training"}
    assert ids(store, "TrainingRun") == {run0, run1}
    assert ids(store, "DataSource") == {f"source:{PAYMENTS}", "source:mlflow/holdout"}
    assert ids(store, "DatasetVersion") == {payments_version(tracking, 0),
                                            payments_version(tracking, 1),
                                            f"dataset:mlflow/holdout@{tracking.holdout}"}
    assert ids(store, "Model") == {f"model:{MODEL}"}
    assert ids(store, "ModelVersion") == {f"model:{MODEL}@1", f"model:{MODEL}@2"}
    assert ids(store, "Prompt") == {f"prompt:{PROMPT}", "prompt:triage-chat"}
    assert ids(store, "PromptVersion") == {f"prompt:{PROMPT}@1", f"prompt:{PROMPT}@2",
                                           "prompt:triage-chat@1"}

    assert edges_from(store, run1) == {
        ("RUN_OF", "job:mlflow/fraud-training"),
        ("CONSUMED", payments_version(tracking, 1)),
        ("CONSUMED", f"dataset:mlflow/holdout@{tracking.holdout}")}
    assert edges_from(store, f"model:{MODEL}@2") == {
        ("VERSION_OF", f"model:{MODEL}"), ("PRODUCED_BY", run1),
        ("SUPERSEDES", f"model:{MODEL}@1")}
    assert edges_from(store, f"model:{MODEL}@1") == {
        ("VERSION_OF", f"model:{MODEL}"), ("PRODUCED_BY", run0)}
    assert edges_from(store, payments_version(tracking, 0)) == {
        ("VERSION_OF", f"source:{PAYMENTS}")}
    assert edges_from(store, f"prompt:{PROMPT}@2") == {
        ("VERSION_OF", f"prompt:{PROMPT}"), ("SUPERSEDES", f"prompt:{PROMPT}@1"),
        ("DESIGNED_FOR", f"model:{MODEL}@2")}


def test_runs_keep_params_metrics_status_and_times_from_mlflow(
        store: GraphStore, tracking: Tracking) -> None:
    import_mlflow(store, tracking.uri)

    run = store.get([f"run:{tracking.runs[1]}"])[f"run:{tracking.runs[1]}"]
    props = run.properties
    assert props["params"] == {"lr": "0.05", "depth": "6"}  # MLflow keeps params as text
    assert props["metrics"] == {"auc": 0.93, "loss": pytest.approx(0.2)}
    assert (props["status"], props["run_name"]) == ("FINISHED", "train-1")
    assert props["started_at"] <= props["ended_at"]
    assert run.created_at.isoformat().replace("+00:00", "Z") == props["started_at"]


def test_versions_carry_what_mlflow_knows_about_them(store: GraphStore,
                                                     tracking: Tracking) -> None:
    import_mlflow(store, tracking.uri)
    found = store.get([f"model:{MODEL}@2", payments_version(tracking, 1),
                       f"prompt:{PROMPT}@2", "prompt:triage-chat@1"])

    model = found[f"model:{MODEL}@2"].properties
    assert model["artifact_uri"] == f"models:/{model['model_id']}"
    assert model["model_id"].startswith("m-")  # parsed from the source on sqlite
    assert model["run_id"] == tracking.runs[1]
    dataset = found[payments_version(tracking, 1)].properties
    assert (dataset["row_count"], dataset["mlflow_name"]) == (3, "payments")
    # The schema is copied as MLflow recorded it (mlflow-skinny logs none without the full
    # package's type inference; the full package records the column spec).
    mlflow = require_mlflow()
    logged = mlflow.MlflowClient(tracking.uri).get_run(tracking.runs[1]).inputs
    recorded = next(d.dataset.schema for d in logged.dataset_inputs
                    if d.dataset.name == "payments")
    if recorded:
        assert dataset["schema"] == json.loads(recorded)
    else:
        assert "schema" not in dataset
    assert found[f"prompt:{PROMPT}@2"].properties["template"] == "Classify {{txn}} carefully."
    chat = found["prompt:triage-chat@1"].properties
    assert chat["system"] == "You triage payments."
    assert [m["role"] for m in chat["messages"]] == ["system", "user"]


def test_dataset_sources_are_named_by_uri_else_type_and_path_else_dataset_name() -> None:
    dataset = require_mlflow().entities.Dataset

    def locator(source_type: str, source: str, name: str = "payments") -> str:
        return dataset_locator(dataset(name=name, digest="d1", source_type=source_type,
                                       source=source))

    assert locator("s3", '{"uri": "s3://wh/payments.parquet"}') == "s3://wh/payments.parquet"
    assert locator("http", '{"url": "https://x.org/p.csv"}') == "https://x.org/p.csv"
    assert locator("delta_table", '{"delta_table_name": "main.sales"}') == "delta_table/main.sales"
    assert locator("hugging_face", '{"path": "org/ds"}') == "hugging_face/org/ds"
    assert locator("code", '{"tags": {"mlflow.user": "a"}}', "holdout") == "mlflow/holdout"


def test_the_audit_log_never_sees_credentials_of_a_tracking_uri() -> None:
    assert redact("https://user:secret@mlflow.example:5000/") == "https://mlflow.example:5000/"
    assert redact("sqlite:////var/mlflow.db") == "sqlite:////var/mlflow.db"


# -- lineage walks --------------------------------------------------------------------------


def test_walking_upstream_from_a_model_version_reaches_its_data_source(
        store: GraphStore, tracking: Tracking) -> None:
    import_mlflow(store, tracking.uri)

    upstream = walk(store, f"model:{MODEL}@2", Direction.UPSTREAM, 10)

    assert {f"run:{tracking.runs[1]}", payments_version(tracking, 1), f"source:{PAYMENTS}",
            "job:mlflow/fraud-training"} <= set(upstream.nodes)
    # SUPERSEDES annotates, it does not carry lineage: v1's run and data are not behind v2.
    assert f"run:{tracking.runs[0]}" not in upstream.nodes
    assert payments_version(tracking, 0) not in upstream.nodes
    assert upstream.degrees[f"source:{PAYMENTS}"] == 3


def test_prompts_are_designed_for_the_model_versions_they_are_linked_to(
        store: GraphStore, tracking: Tracking) -> None:
    import_mlflow(store, tracking.uri)

    def designed_for(prompt_id: str) -> list[tuple[str, Any]]:
        return [(hop.node.id, hop.edge.properties["via"]) for hop in
                store.expand([prompt_id], Direction.UPSTREAM, edge_types=["DESIGNED_FOR"])]

    # v2 through its link to v2's logged model; v1 through the run that produced v1.
    assert designed_for(f"prompt:{PROMPT}@2") == [(f"model:{MODEL}@2", ["logged_model"])]
    assert designed_for(f"prompt:{PROMPT}@1") == [(f"model:{MODEL}@1", ["run"])]
    assert designed_for("prompt:triage-chat@1") == []
    downstream = walk(store, f"model:{MODEL}@2", Direction.DOWNSTREAM, 2)
    assert f"prompt:{PROMPT}@2" in downstream.nodes


# -- aliases and re-import ------------------------------------------------------------------


def test_aliases_become_stage_moves_of_the_model_name(store: GraphStore,
                                                      tracking: Tracking) -> None:
    result = import_mlflow(store, tracking.uri).result

    assert result.stage_moves == 2
    assert store.live_environments(f"model:{MODEL}") == {"staging": "1", "production": "2"}
    moves = store.stage_history(f"model:{MODEL}")
    assert {(m.environment, m.from_version, m.actor) for m in moves} == {
        ("staging", None, ACTOR), ("production", None, ACTOR)}


def test_prompt_aliases_become_stage_moves_of_the_prompt_name(
        store: GraphStore, tracking: Tracking, tmp_path: Path) -> None:
    copy, client = editable(tracking, tmp_path)
    client.set_prompt_alias(PROMPT, "production", 1)
    import_mlflow(store, copy.uri)
    client.set_prompt_alias(PROMPT, "production", 2)
    moved = import_mlflow(store, copy.uri)

    assert [(m.name, m.environment, m.from_version, m.to_version)
            for m in moved.batch.stage_moves] == [(f"prompt:{PROMPT}", "production", "1", "2")]
    assert store.live_environments(f"prompt:{PROMPT}") == {"production": "2"}
    assert not import_mlflow(store, copy.uri).result.changed


def test_a_version_deleted_in_mlflow_is_archived_not_left_registered(
        store: GraphStore, tracking: Tracking, tmp_path: Path) -> None:
    copy, client = editable(tracking, tmp_path)
    import_mlflow(store, copy.uri)
    client.delete_registered_model_alias(MODEL, "staging")
    client.delete_model_version(MODEL, "1")
    import_mlflow(store, copy.uri)

    gone = store.get([f"model:{MODEL}@1"])[f"model:{MODEL}@1"].properties
    assert (gone["archived"], gone["deleted_in_mlflow"]) == (True, True)
    kept = store.get([f"model:{MODEL}@2"])[f"model:{MODEL}@2"].properties
    assert "archived" not in kept
    assert not import_mlflow(store, copy.uri).result.changed


def test_a_prompt_version_deleted_in_mlflow_is_archived_and_a_manifests_is_left_alone(
        store: GraphStore, tracking: Tracking, tmp_path: Path) -> None:
    copy, client = editable(tracking, tmp_path)
    import_mlflow(store, copy.uri)
    # A version of the same prompt registered by a manifest, not by MLflow.
    store.upsert([Node.from_id(f"prompt:{PROMPT}@7", properties={"template": "by hand"})])
    client.delete_prompt_version(PROMPT, "1")
    import_mlflow(store, copy.uri)

    found = store.get([f"prompt:{PROMPT}@1", f"prompt:{PROMPT}@2", f"prompt:{PROMPT}@7"])
    gone = found[f"prompt:{PROMPT}@1"].properties
    assert (gone["archived"], gone["deleted_in_mlflow"]) == (True, True)
    assert "archived" not in found[f"prompt:{PROMPT}@2"].properties
    assert "archived" not in found[f"prompt:{PROMPT}@7"].properties
    assert not import_mlflow(store, copy.uri).result.changed


def test_reimporting_the_same_mlflow_state_changes_nothing(store: GraphStore,
                                                           tracking: Tracking) -> None:
    first = import_mlflow(store, tracking.uri).result
    second = import_mlflow(store, tracking.uri).result

    assert first.changed
    assert not second.changed
    assert (second.nodes.created, second.nodes.updated, second.edges.created,
            second.edges.updated, second.stage_moves) == (0, 0, 0, 0, 0)
    assert len(store.stage_history(f"model:{MODEL}")) == 2


def test_an_import_closing_a_supersedes_cycle_with_manifest_links_is_refused(
        store: GraphStore, tracking: Tracking) -> None:
    # Manifests gave v2 no predecessor and linked v1 → x@1 → v2 across names: the
    # registry's v2 → v1 would close a cycle.
    load_manifests(read_yaml(f"""\
kind: ModelVersion
name: {MODEL}
version: 2
supersedes: false
---
kind: ModelVersion
name: x
version: 1
supersedes: model:{MODEL}@2
---
kind: ModelVersion
name: {MODEL}
version: 1
supersedes: model:x@1
"""), store, actor="test")
    before = snapshot(store)

    with pytest.raises(IngestError) as caught:
        import_mlflow(store, tracking.uri)

    assert [(p.record, p.field) for p in caught.value.problems] == [
        (f"model:{MODEL}@2", "supersedes")]
    assert "would close a cycle" in caught.value.problems[0].message
    assert snapshot(store) == before


def test_a_moved_alias_appends_one_move_and_a_deleted_alias_retires_its_stage(
        store: GraphStore, tracking: Tracking, tmp_path: Path) -> None:
    copy, client = editable(tracking, tmp_path)
    import_mlflow(store, copy.uri)

    client.set_registered_model_alias(MODEL, "staging", "2")
    moved = import_mlflow(store, copy.uri)
    client.delete_registered_model_alias(MODEL, "staging")
    retired = import_mlflow(store, copy.uri)
    again = import_mlflow(store, copy.uri)

    assert [(m.environment, m.from_version, m.to_version) for m in moved.batch.stage_moves] == [
        ("staging", "1", "2")]
    assert [(m.environment, m.from_version, m.to_version)
            for m in retired.batch.stage_moves] == [("staging", "2", None)]
    assert again.result.stage_moves == 0 and not again.result.changed
    assert store.live_environments(f"model:{MODEL}") == {"production": "2"}
    staging = store.stage_history(f"model:{MODEL}", "staging")
    assert [m.to_version for m in staging] == ["1", "2", None]


def test_a_version_whose_run_was_deleted_keeps_its_lineage(
        store: GraphStore, tracking: Tracking, tmp_path: Path) -> None:
    mlflow = require_mlflow()
    copy = copy_of(tracking, tmp_path)
    mlflow.MlflowClient(tracking_uri=copy.uri).delete_run(tracking.runs[0])

    result = import_mlflow(store, copy.uri)

    run0 = f"run:{tracking.runs[0]}"
    assert result.warnings == []
    assert ("PRODUCED_BY", run0) in edges_from(store, f"model:{MODEL}@1")
    assert store.get([run0])[run0].properties["lifecycle_stage"] == "deleted"
    assert ("CONSUMED", payments_version(tracking, 0)) in edges_from(store, run0)


def test_stages_set_by_others_are_not_retired_by_the_import(store: GraphStore,
                                                           tracking: Tracking) -> None:
    from lineagegraph.schema import StageMove

    store.record_stage_move(StageMove(name=f"model:{MODEL}", environment="canary",
                                      to_version="1", actor="release-bot"))
    import_mlflow(store, tracking.uri)

    assert store.live_environments(f"model:{MODEL}") == {
        "canary": "1", "staging": "1", "production": "2"}


def test_the_import_is_audited_and_a_reimport_audits_only_the_load(
        store: GraphStore, tracking: Tracking) -> None:
    import_mlflow(store, tracking.uri)
    first = store.audit_log()
    import_mlflow(store, tracking.uri)
    second = store.audit_log()[len(first):]

    assert {e.action for e in first} == {"ingest.mlflow", "upsert", "stage_move"}
    assert f"model:{MODEL}@2" in {e.target for e in first if e.action == "upsert"}
    assert [(e.action, e.target) for e in second] == [("ingest.mlflow", tracking.uri)]


# -- the command ----------------------------------------------------------------------------


def cli_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the flags speak: no Neo4j (``--db`` means the embedded store) and no MLflow
    URIs from the environment (the module fixture sets them for MLflow's fluent API)."""
    for name in ("NEO4J_URI", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)


def test_cli_imports_into_the_embedded_store_and_reimports_nothing(
        tracking: Tracking, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lineagegraph.api.cli import app

    cli_environment(monkeypatch)
    db = tmp_path / "lineagegraph.db"
    args = ["ingest", "mlflow", "--tracking-uri", tracking.uri, "--db", str(db)]
    runner = CliRunner()

    first = runner.invoke(app, args)
    second = runner.invoke(app, args)

    assert first.exit_code == 0, first.output
    assert "2 alias move(s) recorded" in first.output
    assert second.exit_code == 0, second.output
    assert "0 alias move(s) recorded" in second.output
    store = EmbeddedStore(db)
    try:
        assert f"model:{MODEL}@2" in store.get([f"model:{MODEL}@2"])
        assert store.live_environments(f"model:{MODEL}") == {"staging": "1", "production": "2"}
    finally:
        store.close()


def test_cli_names_an_unreadable_tracking_store_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_mlflow()
    from lineagegraph.api.cli import app

    cli_environment(monkeypatch)
    db = tmp_path / "lineagegraph.db"
    missing = tmp_path / "typo" / "mlflow.db"

    result = CliRunner().invoke(app, ["ingest", "mlflow", "--tracking-uri",
                                      f"sqlite:///{missing}", "--db", str(db)])

    said = " ".join(result.output.split())  # rich wraps at the terminal's width
    assert result.exit_code == 1, result.output
    assert "MLflow import refused, nothing was written" in said
    assert "field tracking_uri: no MLflow database at" in said  # (the path may be folded)
    assert not missing.exists()  # a mistyped path is not made into an empty MLflow store
    store = EmbeddedStore(db)
    try:
        assert store.find(first=1) == []
    finally:
        store.close()


def test_an_import_mapped_before_another_landed_is_mapped_again(
        store: GraphStore, tracking: Tracking) -> None:
    # Two imports at once (two processes): each read no alias moves, and both appended
    # staging → 1 and production → 2, the history holding each twice.
    mapped, _ = read_batch(store, tracking.uri)
    import_mlflow(store, tracking.uri)
    mapped.write(store)

    moves = [(m.environment, m.from_version, m.to_version)
             for m in store.stage_history(name=f"model:{MODEL}")]
    assert sorted(moves) == [("production", None, "2"), ("staging", None, "1")]
