"""The CLI twins run the API's own GraphQL documents against the configured store."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from lineagegraph.api.cli import app
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.schema import Edge, Node

from .story import at, story_db

runner = CliRunner()


def test_trace_prints_the_serving_bundle_and_its_upstream(tmp_path: Path) -> None:
    db = story_db(tmp_path)

    table = runner.invoke(app, ["trace", "req-2002", "--db", db])
    as_json = runner.invoke(app, ["trace", "req-2002", "--db", db, "--json"])

    assert table.exit_code == 0, table.output
    assert "bundle:support-triage@15" in table.output
    assert "source:kb.articles" in table.output
    data = json.loads(as_json.output)
    assert data["policyPack"]["id"] == "policy:support-safety@7"


def test_trace_says_whether_each_evaluation_reached_its_threshold(tmp_path: Path) -> None:
    db = story_db(tmp_path)
    store = EmbeddedStore(Path(db))
    try:  # a re-run of @15's suite that failed, beside the story's passing run
        store.upsert([Node.from_id("eval:triage-eval-v4/r15-rerun", created_at=at(6),
                                   properties={"suite": "triage-eval-v4", "run": "r15-rerun",
                                               "score": 0.5, "threshold": 0.9})],
                     [Edge(source="eval:triage-eval-v4/r15-rerun", type="EVALUATES",
                           target="bundle:support-triage@15")])
    finally:
        store.close()

    result = runner.invoke(app, ["trace", "req-2002", "--db", db], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    said = " ".join(result.output.replace("│", " ").split())
    # worded as the eval gate words it: "<" for a score below its threshold
    assert "eval:triage-eval-v4/r15-rerun scored 0.5 < threshold 0.9" in said
    assert "eval:triage-eval-v4/r15 scored 0.91 ≥ threshold 0.9" in said


def test_blast_radius_prints_traffic_and_the_rollback_with_warnings(tmp_path: Path) -> None:
    result = runner.invoke(app, ["blast-radius", "model:gpt-5-mini-2026-08", "--db",
                                 story_db(tmp_path), "--json"])

    data = json.loads(result.output)
    assert data["rollbackTarget"]["id"] == "bundle:support-triage@15"
    assert data["traffic"] == [{"environment": "production", "count": 1}]


def test_blast_radius_prints_the_answers_own_warnings(tmp_path: Path) -> None:
    db = story_db(tmp_path)
    store = EmbeddedStore(Path(db))

    def stop(counted: int) -> None:
        raise RuntimeError("interrupted")

    try:  # a rebuild of the request counts stopped half-way: the counts are in doubt
        store.rebuild_traffic(page=1, progress=stop)
    except RuntimeError:
        pass
    finally:
        store.close()
    result = runner.invoke(app, ["blast-radius", "model:gpt-5-mini-2026-08", "--db", db])

    assert result.exit_code == 0, result.output
    assert "traffic: partial" in result.output


def test_drift_sources_and_resolve_answer_like_the_api(tmp_path: Path) -> None:
    db = story_db(tmp_path)

    drift = runner.invoke(app, ["drift-sources", "bundle:support-triage@15", "--onset",
                                at(8).isoformat(), "--db", db, "--json"])
    resolved = runner.invoke(app, ["resolve", "support-triage", "production", "--as-of",
                                   at(10).isoformat(), "--db", db, "--json"])

    assert json.loads(drift.output)[0]["change"] == "stage move production: 14 → 15"
    assert json.loads(resolved.output)["id"] == "bundle:support-triage@14"


def test_an_unknown_request_exits_non_zero_with_a_message(tmp_path: Path) -> None:
    result = runner.invoke(app, ["trace", "req-nope", "--db", story_db(tmp_path)])

    assert result.exit_code == 1
    # quoted, as the warning before it (GraphQL's) has it
    assert result.output.splitlines()[-1] == "no request 'req-nope'"


def test_an_unknown_node_is_named_quoted_and_as_typed(tmp_path: Path) -> None:
    # Not read as rich markup: "[bold]" is part of the ID the user typed.
    result = runner.invoke(app, ["blast-radius", "model:[bold]x@1", "--db",
                                 story_db(tmp_path)])

    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == "no node 'model:[bold]x@1'"


def test_an_over_long_request_id_is_refused_quoted_and_cut_short(tmp_path: Path) -> None:
    result = runner.invoke(app, ["trace", "r" * 1001, "--db", story_db(tmp_path)])

    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert f"requestId: {'r' * 60!r}… (1,001 characters) is 1,001 bytes" in said, said


def test_drift_sources_warn_on_stderr_when_a_cap_cut_their_walk(tmp_path: Path) -> None:
    db = story_db(tmp_path)
    args = ["drift-sources", "bundle:fraud-scoring@2", "--onset", at(0).isoformat(),
            "--db", db, "--json"]

    cut = runner.invoke(app, args, env={"LINEAGEGRAPH_MAX_DEPTH": "3"})
    whole = runner.invoke(app, args, env={"LINEAGEGRAPH_MAX_DEPTH": "5"})

    assert cut.exit_code == 0, cut.output
    assert json.loads(cut.stdout)  # the JSON on stdout stays parseable
    said = " ".join(cut.stderr.split())  # as rich wrapped it
    assert "warning: a cap" in said and "cut the upstream walk" in said
    assert whole.exit_code == 0 and "warning" not in whole.stderr
