"""Retention archives old versions that never left staging, keeps anything that reached
production, records each archive, and walks skip archived nodes unless asked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lineagegraph.api.cli import app
from lineagegraph.graph import retention
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.store import Direction, GraphStore
from lineagegraph.graph.walk import walk
from lineagegraph.schema import AuditEntry, Edge, Node, StageMove

NOW = datetime(2026, 11, 20, tzinfo=UTC)


def _load(store: GraphStore) -> None:
    old, recent = NOW - timedelta(days=200), NOW - timedelta(days=10)
    store.upsert(
        [Node.from_id("bundle:b@1", created_at=old), Node.from_id("bundle:b@2", created_at=old),
         Node.from_id("bundle:b@3", created_at=old), Node.from_id("bundle:b@4", created_at=recent),
         Node.from_id("model:m@1", created_at=old)],
        [Edge(source=f"bundle:b@{v}", type="USES_MODEL", target="model:m@1")
         for v in (1, 2, 3, 4)],
        stage_moves=[
            StageMove(name="b", environment="staging", to_version="1", at=old),
            StageMove(name="b", environment="production", to_version="2", at=old),
            StageMove(name="b", environment="production", from_version="2", to_version=None,
                      at=recent),
            # staging no longer serves 1: a version live anywhere is never archived
            StageMove(name="b", environment="staging", from_version="1", to_version=None,
                      at=recent),
        ],
    )


def test_plan_lists_old_versions_never_past_staging(store: GraphStore) -> None:
    _load(store)

    planned = retention.plan(store, timedelta(days=90), at=NOW)

    # 1 was only staged, 3 never staged; 2 reached production (kept forever); 4 is recent.
    assert [(c.node.id, c.environments) for c in planned] == [
        ("bundle:b@1", ("staging",)), ("bundle:b@3", ())]


def test_apply_archives_with_audit_entries_and_walks_skip_archived_nodes(
    store: GraphStore,
) -> None:
    _load(store)

    archived = retention.apply(store, retention.plan(store, timedelta(days=90), at=NOW),
                               actor="ops")

    assert archived == 2
    assert store.get(["bundle:b@1"])["bundle:b@1"].properties["archived"] is True
    assert [(e.action, e.target, e.actor) for e in store.audit_log()] == [
        ("retention.archive", "bundle:b@1", "ops"), ("retention.archive", "bundle:b@3", "ops")]
    default = walk(store, "model:m@1", Direction.DOWNSTREAM, 2)
    everything = walk(store, "model:m@1", Direction.DOWNSTREAM, 2, include_archived=True)
    assert set(default.nodes) == {"model:m@1", "bundle:b@2", "bundle:b@4"}
    assert {"bundle:b@1", "bundle:b@3"} <= set(everything.nodes)
    assert retention.plan(store, timedelta(days=90), at=NOW) == []  # nothing left to do


def test_apply_leaves_alone_a_planned_version_promoted_since_the_plan(
    store: GraphStore,
) -> None:
    _load(store)
    planned = retention.plan(store, timedelta(days=90), at=NOW)
    # After the plan: 1 goes back into staging, 3 reaches production and leaves it.
    store.record_stage_moves([
        StageMove(name="b", environment="staging", to_version="1"),
        StageMove(name="b", environment="production", to_version="3"),
        StageMove(name="b", environment="production", from_version="3", to_version=None)])

    archived = retention.apply(store, planned, actor="ops")

    assert archived == 0
    stored = store.get(["bundle:b@1", "bundle:b@3"])
    assert not any(n.properties.get("archived") for n in stored.values())
    assert store.audit_log() == []


def test_apply_keeps_what_changed_on_a_version_since_the_plan(store: GraphStore) -> None:
    _load(store)
    planned = retention.plan(store, timedelta(days=90), at=NOW)
    store.upsert([Node.from_id("bundle:b@3", properties={"owner": "search"})])

    assert retention.apply(store, planned, actor="ops") == 2

    kept = store.get(["bundle:b@3"])["bundle:b@3"].properties
    assert kept["owner"] == "search" and kept["archived"] is True


def test_archive_judged_writes_what_its_judge_keeps_with_an_audit_entry_each(
    store: GraphStore,
) -> None:
    _load(store)
    marked = [Node.from_id(i, properties={"archived": True})
              for i in ("bundle:b@1", "bundle:b@3")]

    written = store.archive_judged(
        lambda: marked[:1],
        lambda node: AuditEntry(action="retention.archive", target=node.id, actor="ops"))

    assert [n.id for n in written] == ["bundle:b@1"]
    assert [e.target for e in store.audit_log()] == ["bundle:b@1"]
    assert not store.get(["bundle:b@3"])["bundle:b@3"].properties.get("archived")


def test_parse_age_reads_short_and_iso_forms() -> None:
    assert retention.parse_age("90d") == timedelta(days=90)
    assert retention.parse_age("2w") == timedelta(weeks=2)
    assert retention.parse_age("P1DT12H") == timedelta(days=1, hours=12)


def test_cli_apply_is_a_dry_run_unless_told_to_execute(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    store = EmbeddedStore(db)
    _load(store)
    store.close()
    runner = CliRunner()

    dry = runner.invoke(app, ["retention", "apply", "--older-than", "90d", "--db", str(db)])
    unchanged = EmbeddedStore(db)
    assert "archived" not in unchanged.get(["bundle:b@1"])["bundle:b@1"].properties
    unchanged.close()
    real = runner.invoke(app, ["retention", "apply", "--older-than", "90d", "--execute",
                               "--db", str(db)])

    assert dry.exit_code == 0 and "dry run: would archive 2 versions" in dry.output
    assert real.exit_code == 0 and "archived 2 versions" in real.output


def test_an_age_that_is_no_age_names_both_forms_it_may_take() -> None:
    with pytest.raises(ValueError, match="is not an age such as 90d, 12h, 2w or P90D"):
        retention.parse_age("9x")
    with pytest.raises(ValueError, match="longer than a hundred years"):
        retention.parse_age("P99999D")
    assert retention.parse_age("2w") == retention.parse_age("P14D")


def test_retention_reads_a_names_history_once_for_all_its_versions(
    store: GraphStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Once per version, a name with thousands of versions and moves cost versions × moves.
    _load(store)
    reads: list[str] = []
    for method in ("stage_history", "stage_latest"):
        original = getattr(store, method)

        def counted(*args, _method=method, _original=original, **kwargs):  # type: ignore[no-untyped-def]
            reads.append(_method)
            return _original(*args, **kwargs)

        monkeypatch.setattr(store, method, counted)
    planned = retention.plan(store, timedelta(days=90), at=NOW)
    assert len(planned) == 2
    assert len(reads) == 3  # plan: where each version went, what is live at `at` and now
    retention.apply(store, planned, actor="ops")
    # apply: where each went and what is live now; never a history, never once per version.
    assert reads == ["stage_latest"] * 5
