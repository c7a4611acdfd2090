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
from .servers import EMBEDDED_ENV, cli

OUTCOME = {"request_id": "req-1", "timestamp": "2026-11-05T12:00:00Z",
           "bundle": "fraud-scoring@2", "environment": "production", "status": "ok"}


@pytest.fixture(autouse=True)
def _embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEO4J_URI", raising=False)  # CI's Neo4j must not take --db's place


def _one_error(result: Any, exit_code: int, *named: str) -> None:
    """Exit ``exit_code``, a few lines at most (click's usage box, wrapped at 80 columns), each of
    ``named`` said, no traceback."""
    output = result.output if hasattr(result, "output") else result.stdout + result.stderr
    code = result.exit_code if hasattr(result, "exit_code") else result.returncode
    assert code == exit_code, output
    assert "Traceback" not in output
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

    _one_error(result, 2, "LINEAGEGRAPH_MAX_DEPTH", "--max-depth")
    assert not (tmp_path / "schema.graphql").exists()


@pytest.mark.parametrize("command", ["plan", "apply"])
@pytest.mark.parametrize("age", ["99999999d", "99999999999999999999w"])
def test_retention_with_an_age_past_any_date_is_a_usage_error(
    tmp_path: Path, command: str, age: str,
) -> None:
    result = run_cli("retention", command, "--older-than", age, "--db", str(tmp_path / "x.db"))

    _one_error(result, 2, "--older-than", "longer than a hundred years")
