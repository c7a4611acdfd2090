"""The MLflow import on registries a review found it mishandled: alias moves audited under
the version's ID, whole models and prompts deleted in MLflow, aliases too long to be an
environment, and model names holding ``@``. Each test builds its own small MLflow registry
(a local sqlite file) with the real ``mlflow`` package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.store import GraphStore
from lineagegraph.ingest.mlflow_import import ACTOR, import_mlflow
from lineagegraph.schema import Node, StageMove

from .test_ingest_mlflow import cli_environment, ids, require_mlflow

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]


class Registry:
    """A local MLflow model and prompt registry (no runs: versions name an artifact)."""

    def __init__(self, path: Path) -> None:
        self.uri = f"sqlite:///{path}"
        mlflow = require_mlflow()
        self.client: Any = mlflow.MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def model(self, name: str, versions: int = 1, **aliases: int) -> None:
        self.client.create_registered_model(name)
        for _ in range(versions):
            self.client.create_model_version(name, f"s3://models/{name}")
        for alias, version in aliases.items():
            self.client.set_registered_model_alias(name, alias, str(version))

    def prompt(self, name: str, versions: int = 1, **aliases: int) -> None:
        for i in range(versions):
            self.client.register_prompt(name=name, template=f"Triage {{{{x}}}} ({i}).")
        for alias, version in aliases.items():
            self.client.set_prompt_alias(name, alias, version)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "mlflow.db")


def props(store: GraphStore, node_id: str) -> dict[str, Any]:
    return store.get([node_id])[node_id].properties


# -- 1. alias moves are audited under the version's ID --------------------------------------


def test_alias_moves_are_audited_under_the_id_of_the_version_they_move(
        store: GraphStore, registry: Registry) -> None:
    registry.model("fraud-detector", 2, champion=2)
    registry.prompt("triage", 1, production=1)
    import_mlflow(store, registry.uri)
    registry.client.delete_registered_model_alias("fraud-detector", "champion")
    import_mlflow(store, registry.uri)

    moves = [(e.target, e.before, e.after) for e in store.audit_log()
             if e.action == "stage_move"]
    assert sorted(moves, key=lambda move: move[0]) == [  # stable: in audit order
        ("model:fraud-detector@2", {"environment": "champion", "version": None},
         {"environment": "champion", "version": "2"}),
        ("model:fraud-detector@2", {"environment": "champion", "version": "2"},
         {"environment": "champion", "version": None}),
        ("prompt:triage@1", {"environment": "production", "version": None},
         {"environment": "production", "version": "1"})]
    assert [e.action for e in store.audit_log(target="model:fraud-detector@2")].count(
        "stage_move") == 2


# -- 2. whole models and prompts deleted in MLflow ------------------------------------------


def test_a_registered_model_deleted_in_mlflow_has_its_versions_archived_and_stages_retired(
        store: GraphStore, registry: Registry) -> None:
    registry.model("fraud-detector", 2, staging=1, production=2)
    registry.model("kept", 1, production=1)
    import_mlflow(store, registry.uri)
    # Set by others, not by the importer: the import leaves them be.
    store.record_stage_move(StageMove(name="model:fraud-detector", environment="canary",
                                      to_version="1", actor="release-bot"))
    store.upsert([Node.from_id("model:fraud-detector@9", properties={"region": "eu"})])
    registry.client.delete_registered_model("fraud-detector")

    deleted = import_mlflow(store, registry.uri)
    again = import_mlflow(store, registry.uri)

    for version in ("1", "2"):
        gone = props(store, f"model:fraud-detector@{version}")
        assert (gone["archived"], gone["deleted_in_mlflow"]) == (True, True)
    assert "archived" not in props(store, "model:fraud-detector@9")
    assert "archived" not in props(store, "model:kept@1")
    assert sorted((m.environment, m.from_version, m.to_version)
                  for m in deleted.batch.stage_moves) == [
        ("production", "2", None), ("staging", "1", None)]
    assert store.live_environments("model:fraud-detector") == {"canary": "1"}
    assert store.live_environments("model:kept") == {"production": "1"}
    assert not again.result.changed


def test_a_prompt_deleted_in_mlflow_has_its_versions_archived_and_stages_retired(
        store: GraphStore, registry: Registry) -> None:
    registry.prompt("triage", 2, production=2)
    registry.prompt("kept", 1)
    import_mlflow(store, registry.uri)
    for version in ("1", "2"):
        registry.client.delete_prompt_version("triage", version)
    registry.client.delete_prompt("triage")

    import_mlflow(store, registry.uri)
    again = import_mlflow(store, registry.uri)

    for version in ("1", "2"):
        gone = props(store, f"prompt:triage@{version}")
        assert (gone["archived"], gone["deleted_in_mlflow"]) == (True, True)
    assert "archived" not in props(store, "prompt:kept@1")
    assert store.live_environments("prompt:triage") == {}
    assert not again.result.changed


def test_a_model_another_mlflow_registry_brought_is_not_taken_for_deleted(
        store: GraphStore, tmp_path: Path) -> None:
    first, second = Registry(tmp_path / "a.db"), Registry(tmp_path / "b.db")
    first.model("fraud-detector", 1, production=1)
    second.model("churn", 1, production=1)
    import_mlflow(store, first.uri)
    import_mlflow(store, second.uri)

    # The second registry lists no fraud-detector: it never had one, nothing was deleted.
    assert not import_mlflow(store, second.uri).result.changed
    assert "archived" not in props(store, "model:fraud-detector@1")
    assert store.live_environments("model:fraud-detector") == {"production": "1"}


# -- 3. an alias no environment can be named ------------------------------------------------


def test_an_alias_too_long_for_an_environment_is_skipped_with_a_warning(
        store: GraphStore, registry: Registry) -> None:
    long_alias = "a" * 100  # MLflow takes aliases up to 255 characters
    registry.model("fraud-detector", 2, staging=1, **{long_alias: 2})

    imported = import_mlflow(store, registry.uri)

    assert ids(store, "ModelVersion") == {"model:fraud-detector@1", "model:fraud-detector@2"}
    assert store.live_environments("model:fraud-detector") == {"staging": "1"}
    [warning] = [w for w in imported.warnings if "alias" in w]
    assert "model:fraud-detector" in warning and long_alias[:60] in warning
    assert not import_mlflow(store, registry.uri).result.changed


def test_cli_imports_the_rest_and_prints_the_skipped_alias(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lineagegraph.api.cli import app

    cli_environment(monkeypatch)
    registry.model("fraud-detector", 1, staging=1, **{"a" * 100: 1})
    db = tmp_path / "lineagegraph.db"

    result = CliRunner().invoke(app, ["ingest", "mlflow", "--tracking-uri", registry.uri,
                                      "--db", str(db)])

    said = " ".join(result.output.split())  # rich wraps at the terminal's width
    assert result.exit_code == 0, result.output
    assert "warning:" in said and "model:fraud-detector" in said and "aaaaaaaaaa" in said
    assert "1 alias move(s) recorded" in said
    store = EmbeddedStore(db)
    try:
        assert store.live_environments("model:fraud-detector") == {"staging": "1"}
    finally:
        store.close()


# -- 4. names holding @ ---------------------------------------------------------------------


def test_a_model_name_holding_at_is_written_with_percent_40_and_clashes_with_no_version(
        store: GraphStore, registry: Registry) -> None:
    registry.model("m@1", 1, production=1)
    import_mlflow(store, registry.uri)
    registry.model("m", 1, staging=1)

    import_mlflow(store, registry.uri)

    assert ids(store, "Model") == {"model:m%401", "model:m"}
    assert ids(store, "ModelVersion") == {"model:m%401@1", "model:m@1"}
    assert store.live_environments("model:m%401") == {"production": "1"}
    assert store.live_environments("model:m") == {"staging": "1"}
    registry.client.delete_registered_model("m@1")
    import_mlflow(store, registry.uri)
    assert props(store, "model:m%401@1")["deleted_in_mlflow"] is True
    assert "archived" not in props(store, "model:m@1")
    assert [m.actor for m in store.stage_history("model:m%401")] == [ACTOR, ACTOR]
