"""CLI errors are one clear line and a non-zero exit, never a traceback (README
"Configuration" and "Running"): 2 for a bad argument or setting, 1 for a file or store
that cannot be used. Embedded store only."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lineagegraph.api.settings import Settings

from .ingest_support import run_cli
from .servers import EMBEDDED_ENV, cli, free_port

OUTCOME = {"request_id": "req-1", "timestamp": "2026-11-05T12:00:00Z",
           "bundle": "fraud-scoring@2", "environment": "production", "status": "ok"}


@pytest.fixture(autouse=True)
def _embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEO4J_URI", raising=False)  # CI's Neo4j must not take --db's place


def _one_error(result: Any, exit_code: int, *named: str) -> None:
    """Exit ``exit_code``, a few lines at most (click's usage box, wrapped at 80 columns), each of
    ``named`` said, no traceback, and no "Value error, " (pydantic's prefix to a validator's
    own words)."""
    output = result.output if hasattr(result, "output") else result.stdout + result.stderr
    code = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert code == exit_code, output
    assert "Traceback" not in output
    assert "Value error" not in output, output
    assert len(output.strip().splitlines()) <= 8, output
    said = " ".join(output.replace("│", " ").split())  # as if unwrapped
    for text in named:
        assert text in said, output


# --- the embedded store (StoreUnreachable is turned into one line by main) ----------------

@pytest.mark.parametrize("command", [["trace", "req-1"], ["serve"], ["token", "list"],
                                     ["report", "evidence", "support-triage", "14"]])
def test_a_corrupt_embedded_store_is_one_line_and_exit_1(tmp_path: Path,
                                                          command: list[str]) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_text("garbage, not SQLite\n" * 100)
    result = subprocess.run(cli(*command, "--db", str(corrupt)), capture_output=True,
                            text=True, timeout=60, env=EMBEDDED_ENV, cwd=tmp_path)

    _one_error(result, 1, "cannot use the embedded store at", "corrupt.db",
               "file is not a database")


def test_a_directory_as_the_embedded_store_is_one_line_and_exit_1(tmp_path: Path) -> None:
    env = {**EMBEDDED_ENV, "LINEAGEGRAPH_DB": str(tmp_path)}
    result = subprocess.run(cli("trace", "req-1"), capture_output=True, text=True,
                            timeout=60, env=env, cwd=tmp_path)

    _one_error(result, 1, "cannot use the embedded store at", "LINEAGEGRAPH_DB / --db")


# --- list settings ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["production_environments", "floating_model_patterns"])
def test_a_list_flag_that_is_no_json_list_is_a_usage_error(tmp_path: Path, name: str) -> None:
    flag = f"--{name.replace('_', '-')}"
    result = run_cli("serve", "--db", str(tmp_path / "x.db"), flag, "[")

    _one_error(result, 2, f"LINEAGEGRAPH_{name.upper()}", flag, "not a JSON list")


@pytest.mark.parametrize("name", ["production_environments", "floating_model_patterns"])
def test_a_list_variable_that_is_no_json_list_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
) -> None:
    monkeypatch.setenv(f"LINEAGEGRAPH_{name.upper()}", "[")
    result = run_cli("serve", "--db", str(tmp_path / "x.db"))

    _one_error(result, 2, f"LINEAGEGRAPH_{name.upper()}", f"--{name.replace('_', '-')}",
               "not a JSON list")
    # and a JSON list is still one
    monkeypatch.setenv(f"LINEAGEGRAPH_{name.upper()}", '["a", "b"]')
    assert getattr(Settings.for_cli(), name) == ["a", "b"]


@pytest.mark.parametrize("name", ["production_environments", "floating_model_patterns"])
@pytest.mark.parametrize("empty", ["", "[]", " , "])
@pytest.mark.parametrize("given_as", ["variable", "flag"])
def test_an_empty_list_setting_is_a_usage_error(
    tmp_path: Path, name: str, empty: str, given_as: str,
) -> None:
    # Empty would switch a gate off without a word (an unset template variable gives "").
    variable, flag = f"LINEAGEGRAPH_{name.upper()}", f"--{name.replace('_', '-')}"
    if given_as == "variable":
        result = _serve(tmp_path, {variable: empty})
    else:
        result = _serve(tmp_path, {}, flag, empty)

    _one_error(result, 2, f"{variable} / {flag}", "empty")


def _serve(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``serve`` in a process with a time limit: one that took a bad setting would serve
    rather than return (TimeoutExpired fails the test)."""
    return subprocess.run(cli("serve", "--port", str(free_port()), "--db",
                              str(tmp_path / "x.db"), *args),
                          capture_output=True, text=True, timeout=20,
                          env={**EMBEDDED_ENV, **env}, cwd=tmp_path)


def test_an_empty_production_environments_lets_no_floating_alias_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = str(tmp_path / "x.db")
    (tmp_path / "reg.yaml").write_text("name: fl\nversion: 1\nmodel: gpt-5-latest\n")
    assert run_cli("ingest", "manifests", str(tmp_path / "reg.yaml"), "--db", db).exit_code == 0
    monkeypatch.setenv("LINEAGEGRAPH_PRODUCTION_ENVIRONMENTS", "")
    result = run_cli("report", "promotion", "fl", "1", "production", "--format", "md",
                     "-o", str(tmp_path / "r.md"), "--db", db)

    # the variable only: `report` has no --production-environments (only serve has)
    _one_error(result, 2, "LINEAGEGRAPH_PRODUCTION_ENVIRONMENTS:", "empty")
    assert "--production-environments" not in result.output
    assert not (tmp_path / "r.md").exists()


@pytest.mark.parametrize("given_as", ["variable", "flag"])
def test_an_empty_embedded_store_file_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given_as: str,
) -> None:
    # SQLite opens "" as a temporary database: the demo "loaded" into it was gone on exit.
    monkeypatch.chdir(tmp_path)
    if given_as == "variable":
        monkeypatch.setenv("LINEAGEGRAPH_DB", "")
        result = run_cli("demo")
    else:
        result = run_cli("demo", "--db", "")

    _one_error(result, 2, "LINEAGEGRAPH_DB", "empty")
    assert list(tmp_path.iterdir()) == []

def test_a_blank_production_environment_is_a_usage_error(tmp_path: Path) -> None:
    result = _serve(tmp_path, {"LINEAGEGRAPH_PRODUCTION_ENVIRONMENTS":
                               '["production", " prod-eu"]'})

    _one_error(result, 2, "LINEAGEGRAPH_PRODUCTION_ENVIRONMENTS", "' prod-eu'")


# --- the flag a usage error names is one the command has --------------------------------------

@pytest.mark.parametrize(("variable", "flag"), [("LINEAGEGRAPH_MAX_DEPTH", "--max-depth"),
                                                ("LINEAGEGRAPH_PORT", "--port")])
def test_a_bad_setting_names_no_flag_the_command_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, flag: str,
) -> None:
    monkeypatch.setenv(variable, "0")
    trace = run_cli("trace", "req-1", "--db", str(tmp_path / "x.db"))
    serve = run_cli("serve", "--db", str(tmp_path / "x.db"))

    _one_error(trace, 2, f"{variable}:")
    assert flag not in trace.output  # `trace --max-depth` would be "No such option"
    _one_error(serve, 2, f"{variable} / {flag}:")


# --- Neo4j settings that cannot work -------------------------------------------------------

@pytest.mark.parametrize("uri", ["http://127.0.0.1:7474", "https://neo4j.example.com",
                                 "localhost:7687", "ftp://x"])
def test_a_neo4j_uri_that_is_not_bolt_is_a_usage_error(tmp_path: Path, uri: str) -> None:
    # http(s) reached the driver's preview HTTP support: a traceback for want of aiohttp.
    result = subprocess.run(cli("token", "list"), capture_output=True, text=True, timeout=60,
                            env={**EMBEDDED_ENV, "NEO4J_URI": uri}, cwd=tmp_path)

    _one_error(result, 2, "NEO4J_URI / --neo4j-uri", "not a Bolt URI", "bolt+s")


@pytest.mark.parametrize("uri", ["bolt://h:7687", "BOLT+S://h", "neo4j+ssc://h", ""])
def test_a_bolt_uri_or_none_is_accepted(uri: str) -> None:
    assert Settings(neo4j_uri=uri).neo4j_uri == uri  # any case, as the driver reads it


def test_refused_neo4j_credentials_are_blamed_on_user_and_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import neo4j

    from lineagegraph.api.settings import StoreUnreachable

    def refuse(*args: object, **kwargs: object) -> None:
        raise neo4j.exceptions.AuthError("The client is unauthorized")

    monkeypatch.setattr("lineagegraph.graph.neo4j_store.Neo4jStore", refuse)
    with pytest.raises(StoreUnreachable) as refused:
        Settings(neo4j_uri="bolt://h:7687").open_store()

    assert "(NEO4J_USER, NEO4J_PASSWORD)" in str(refused.value)
    assert "NEO4J_URI" not in str(refused.value)


# --- ingest files --------------------------------------------------------------------------

def test_ingest_outcomes_of_a_directory_says_it_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    result = run_cli("ingest", "outcomes", str(tmp_path / "adir"), "--db",
                     str(tmp_path / "x.db"))

    _one_error(result, 2, "not a file", "adir")


@pytest.mark.parametrize("gzipped", [False, True])
def test_ingest_outcomes_of_a_file_that_is_not_utf8_names_it_and_where(
    tmp_path: Path, gzipped: bool,
) -> None:
    data = json.dumps(OUTCOME).encode() + b'\n{"request_id": "\xff\xfe"}\n'
    path = tmp_path / ("bin.ndjson.gz" if gzipped else "bin.ndjson")
    path.write_bytes(gzip.compress(data) if gzipped else data)
    result = run_cli("ingest", "outcomes", str(path), "--db", str(tmp_path / "x.db"))

    offset = data.index(b"\xff")
    _one_error(result, 1, path.name, "not UTF-8", f"byte {offset}")


def test_ingest_outcomes_of_a_truncated_gzip_file_says_so(tmp_path: Path) -> None:
    data = "".join(json.dumps({**OUTCOME, "request_id": f"req-{n}"}) + "\n"
                   for n in range(50)).encode()
    path = tmp_path / "t.ndjson.gz"
    path.write_bytes(gzip.compress(data)[:60])
    result = run_cli("ingest", "outcomes", str(path), "--db", str(tmp_path / "x.db"))

    _one_error(result, 1, "t.ndjson.gz", "truncated")
    assert "Aborted" not in result.output


def test_ingest_manifests_with_a_file_that_is_not_utf8_names_it(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "bad.yaml").write_bytes(b"kind: Dataset\nname: \"\xff\"\n")
    result = run_cli("ingest", "manifests", str(registry), "--db", str(tmp_path / "x.db"))

    _one_error(result, 1, "bad.yaml", "not UTF-8", "line 2")


def test_ingest_manifests_says_a_validators_message_without_pydantics_prefix(
    tmp_path: Path,
) -> None:
    (tmp_path / "future.yaml").write_text("kind: DataSource\nname: x\n"
                                          "created_at: 2999-01-01T00:00:00Z\n")
    result = run_cli("ingest", "manifests", str(tmp_path / "future.yaml"), "--db",
                     str(tmp_path / "x.db"))

    _one_error(result, 1, "future.yaml", "created_at",
               "2999-01-01T00:00:00+00:00 is in the future")


# --- other commands -------------------------------------------------------------------------

def test_export_schema_to_a_path_it_cannot_write_is_one_line(tmp_path: Path) -> None:
    output = tmp_path / "missing" / "schema.graphql"
    result = run_cli("export-schema", "--output", str(output),
                     "--docs", str(tmp_path / "SCHEMA.md"))

    _one_error(result, 1, "cannot write", "schema.graphql")


def test_export_schema_with_a_bad_setting_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LINEAGEGRAPH_MAX_DEPTH", "abc")
    result = run_cli("export-schema", "--output", str(tmp_path / "schema.graphql"),
                     "--docs", str(tmp_path / "SCHEMA.md"))

    _one_error(result, 2, "LINEAGEGRAPH_MAX_DEPTH")
    assert "--max-depth" not in result.output  # export-schema has no such flag: serve has
    assert not (tmp_path / "schema.graphql").exists()


@pytest.mark.parametrize("command", ["plan", "apply"])
@pytest.mark.parametrize("age", ["99999999d", "99999999999999999999w"])
def test_retention_with_an_age_past_any_date_is_a_usage_error(
    tmp_path: Path, command: str, age: str,
) -> None:
    result = run_cli("retention", command, "--older-than", age, "--db", str(tmp_path / "x.db"))

    _one_error(result, 2, "--older-than", "longer than a hundred years")


@pytest.mark.parametrize("timeout", ["inf", "1e300", "nan"])
def test_a_query_timeout_past_a_day_is_a_usage_error(tmp_path: Path, timeout: str) -> None:
    # The Neo4j driver's transaction timeout holds no infinity: the server died at start.
    result = _serve(tmp_path, {}, "--query-timeout-s", timeout)

    _one_error(result, 2, "LINEAGEGRAPH_QUERY_TIMEOUT_S", "--query-timeout-s")
