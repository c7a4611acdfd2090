"""The demo loads through the real ingest path, is idempotent, and answers the README's
walkthrough as the README says."""

from __future__ import annotations

import re
import shlex
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lineagegraph.graph import impact, registry
from lineagegraph.graph.drift import drift_sources
from lineagegraph.graph.store import GraphStore
from lineagegraph.graph.trace import trace
from lineagegraph.ingest import demo
from lineagegraph.ingest.batch import load_batches

from .ingest_support import cli_args, run_cli


def test_the_demo_loads_once_and_answers_the_readme_walkthrough(store: GraphStore) -> None:
    first = load_batches(store, demo.load_demo(store))
    again = load_batches(store, demo.load_demo(store))

    assert first.records == demo.total_records() and first.created > 5000
    assert (again.created, again.updated) == (0, 0)

    served = trace(store, "req-suppo-prod-07004")
    assert served is not None and served.bundle is not None
    assert served.bundle.id == "bundle:support-triage@15"
    assert served.parts.model is not None and served.parts.model.id == "model:gpt-5-mini-2026-11"
    assert "source:kb.articles" in served.upstream.nodes

    in_force = registry.resolve(store, "support-triage", "production",
                                datetime(2026, 11, 8, tzinfo=UTC))
    assert in_force is not None and in_force.version == "15"
    now = registry.resolve(store, "support-triage", "production")
    assert now is not None and now.version == "14"  # rolled back on the 10th

    radius = impact.blast_radius(store, "model:gpt-5-mini-2026-11")
    assert radius is not None
    assert [b.bundle.id for b in radius.bundles] == ["bundle:support-triage@15"]
    assert sum(radius.traffic.values()) > 500

    ranked = drift_sources(store, "bundle:support-triage@15",
                           datetime(2026, 11, 8, tzinfo=UTC))
    assert ranked is not None
    assert ranked[0].change == "stage move production: 14 → 15"

    shadow = registry.unregistered(store)
    assert [(u.node.id, u.requests) for u in shadow] == [
        ("model:gpt-4o-mini-unvetted", 42)]  # 6 a day, the 8th to the 14th


def test_the_demo_command_says_which_store_it_loaded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from lineagegraph.api.cli import app

    db = tmp_path / "demo.db"
    result = CliRunner().invoke(app, ["demo", "--db", str(db)])

    assert result.exit_code == 0, result.output
    assert f"demo loaded into the embedded store at {db}" in " ".join(result.output.split())


def test_the_commands_the_demo_suggests_answer_from_the_store_it_loaded(
    store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Run as printed, elsewhere and with no setting in the environment: loaded with --db
    # or --neo4j-uri, the suggestions named neither and read ./lineagegraph.db.
    store_flags = cli_args(store, request)
    monkeypatch.delenv("NEO4J_URI", raising=False)
    monkeypatch.delenv("LINEAGEGRAPH_DB", raising=False)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")

    loaded = run_cli("demo", *store_flags)
    suggested = re.findall(r"^ *lineagegraph (.+)$", loaded.output, re.MULTILINE)
    answers = [run_cli(*shlex.split(command)) for command in suggested]

    assert loaded.exit_code == 0 and len(suggested) == 4
    assert [answer.exit_code for answer in answers] == [0, 0, 0, 0]
    assert "bundle:support-triage@15" in " ".join(answers[0].output.split())  # the trace
    assert not (tmp_path / "elsewhere" / "lineagegraph.db").exists()
