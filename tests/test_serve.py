"""The README's serve command, run for real: a process, a port, HTTP."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from .servers import EMBEDDED_ENV, cli, serving


def test_serve_answers_health_ready_and_graphql_on_the_embedded_store(tmp_path: Path) -> None:
    env = {**EMBEDDED_ENV, "LINEAGEGRAPH_DB": str(tmp_path / "served.db")}
    with serving(env=env) as served:
        health = httpx.get(f"{served.base}/healthz")
        ready = httpx.get(f"{served.base}/readyz")
        graphql = httpx.post(f"{served.base}/graphql",
                             json={"query": '{ node(id: "run:x") { id } }'})
        docs = httpx.get(f"{served.base}/docs")

    assert health.json() == {"status": "ok"}
    assert ready.json()["status"] == "ready" and ready.json()["store"] == "embedded"
    # `serve` opened its store, so it warmed it up before accepting connections.
    assert set(ready.json()["warm_up_s"]) == {"live_bundles", "bundle_parts", "trace",
                                              "lineage", "blast_radius", "drift_sources",
                                              "resolve"}
    assert graphql.json()["data"] == {"node": None} and "errors" not in graphql.json()
    assert docs.status_code == 200
    assert "open mode" in served.output
    assert "warm-up took" in served.output  # the service's INFO lines reach the log
    assert (tmp_path / "served.db").exists()


def test_serve_refuses_a_non_loopback_address_while_no_token_exists(tmp_path: Path) -> None:
    result = subprocess.run(cli("serve", "--host", "0.0.0.0", "--db", str(tmp_path / "x.db")),
                            capture_output=True, text=True, timeout=60, env=EMBEDDED_ENV)

    assert result.returncode == 2
    assert "refusing to bind 0.0.0.0" in result.stderr


def test_every_setting_has_a_serve_flag() -> None:
    import inspect

    from lineagegraph.api.cli import serve
    from lineagegraph.api.settings import Settings

    assert set(Settings.model_fields) <= set(inspect.signature(serve).parameters)


def test_serve_flags_set_what_their_variables_set(tmp_path: Path) -> None:
    args = ("--db", str(tmp_path / "flags.db"), "--warm-up", "false",
            "--graphql-max-aliases", "1")
    with serving(*args) as served:
        ready = httpx.get(f"{served.base}/readyz").json()
        aliases = httpx.post(f"{served.base}/graphql", json={
            "query": '{ a: node(id: "run:x") { id } b: node(id: "run:y") { id } }'}).json()

    assert ready["status"] == "ready"
    assert "warm-up took" not in served.output
    assert "aliases" in aliases["errors"][0]["message"]


def test_a_list_setting_takes_a_json_list_or_comma_separated_names() -> None:
    from lineagegraph.api.settings import Settings

    assert Settings.for_cli(production_environments="prod-eu, prod-us").gate_policy == (
        Settings.for_cli(production_environments='["prod-eu", "prod-us"]').gate_policy)
    assert Settings.for_cli(production_environments="prod-eu,prod-us"
                            ).production_environments == ["prod-eu", "prod-us"]


def test_a_bad_setting_is_a_usage_error_naming_its_variable_and_flag(tmp_path: Path) -> None:
    env = {**EMBEDDED_ENV, "LINEAGEGRAPH_PORT": "abc"}
    result = subprocess.run(cli("serve", "--db", str(tmp_path / "x.db")),
                            capture_output=True, text=True, timeout=60, env=env)

    assert result.returncode == 2
    assert "LINEAGEGRAPH_PORT / --port" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_neo4j_that_cannot_be_reached_is_one_line_and_exit_1(tmp_path: Path) -> None:
    env = {**EMBEDDED_ENV, "NEO4J_URI": "bolt://127.0.0.1:1"}  # nothing listens on port 1
    result = subprocess.run(cli("trace", "req-1"), capture_output=True, text=True,
                            timeout=60, env=env, cwd=tmp_path)

    assert result.returncode == 1
    assert "cannot use Neo4j at bolt://127.0.0.1:1 (NEO4J_URI / --neo4j-uri)" in result.stderr
    # one line, though the driver's message spans two
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.neo4j
@pytest.mark.parametrize(("command", "named"), [
    (["trace", "req-1"], "(NEO4J_DATABASE)"),  # trace has no --neo4j-database
    (["serve", "--neo4j-database", "nosuch"], "(NEO4J_DATABASE / --neo4j-database)")])
def test_an_unknown_neo4j_database_is_blamed_on_the_database(
    tmp_path: Path, neo4j_uri: str, command: list[str], named: str,
) -> None:
    env = {**EMBEDDED_ENV, "NEO4J_URI": neo4j_uri, "NEO4J_DATABASE": "nosuch"}
    result = subprocess.run(cli(*command), capture_output=True, text=True, timeout=60,
                            env=env, cwd=tmp_path)

    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == (f"cannot use Neo4j database 'nosuch' at {neo4j_uri} "
                                      f"{named}: Graph not found: nosuch")
