"""Ingest input that used to cost too much or be misread: gzip bodies of many members,
GraphQL bodies that are JSON scalars, NDJSON strings holding line separators, OpenLineage
files gzipped or not UTF-8, a request twice in one outcome batch, outcome environments,
and times sent as numbers."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.content_encoding import inflate
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.store import GraphStore
from lineagegraph.ingest.deadletter import pending
from lineagegraph.ingest.manifest_formats import read_directory
from lineagegraph.ingest.manifests import map_manifests

from .ingest_support import MANIFESTS, cli_args, client_for, edges_of, run_cli, snapshot
from .openlineage_support import run_event

T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
# Characters str.splitlines() ends a line at, which a JSON string may hold raw.
SEPARATORS = "\u2028\u2029\x85"


@pytest.fixture
def registry(store: GraphStore) -> GraphStore:
    """The test registry: support-triage 14 and 15 among its bundles."""
    map_manifests(read_directory(MANIFESTS), store, actor="test").write(store)
    return store


@pytest.fixture
def client(registry: GraphStore) -> Iterator[TestClient]:
    with client_for(registry) as test_client:
        yield test_client


def outcome(request_id: str, **fields: Any) -> dict[str, Any]:
    return {"request_id": request_id, "timestamp": T0.isoformat(), "environment": "production",
            "bundle": "support-triage@14", **fields}


def ndjson(*records: dict[str, Any]) -> str:
    # ensure_ascii=False: U+2028 and its like written raw, as JSON allows.
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def post_outcomes(client: TestClient, body: str) -> Any:
    return client.post("/api/v1/outcomes", content=body.encode(),
                       headers={"content-type": "application/x-ndjson"})


# -- gzip bodies ----------------------------------------------------------------------------


def test_a_gzip_body_of_many_empty_members_inflates_in_time_linear_in_its_size() -> None:
    # 250k members, 5 MB: copying the rest of the body at each member took ~8 s of CPU.
    body = gzip.compress(b"") * 250_000

    started = time.process_time()
    inflated = inflate(body, "gzip", 32 * 1024 * 1024)
    spent = time.process_time() - started

    assert inflated == b""
    assert spent < 2.0, f"{spent:.1f} s of CPU to inflate {len(body):,} bytes"


def test_a_gzip_body_of_several_members_is_their_texts_joined() -> None:
    texts = [b"", b"{", b'"a": ' + b"1" * 100_000, b"", b"}"]

    inflated = inflate(b"".join(gzip.compress(t) for t in texts), "gzip", 10**6)

    assert inflated == b"".join(texts)


# -- GraphQL bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "kind"), [("5", "a number"), ("null", "null"),
                                            ('"x"', "a string"), ("true", "a boolean")])
def test_a_graphql_body_that_is_a_json_scalar_is_a_400_saying_so(
    tmp_path: Path, body: str, kind: str,
) -> None:
    with client_for(EmbeddedStore(tmp_path / "g.db")) as client:
        response = client.post("/graphql", content=body,
                               headers={"content-type": "application/json"})

    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    assert "must be a JSON object" in error["message"] and kind in error["message"]
    assert error["extensions"]["code"] == "BAD_REQUEST"


# -- NDJSON lines end at \n only ------------------------------------------------------------


def test_ndjson_outcomes_may_hold_line_separators_inside_strings(
    client: TestClient, registry: GraphStore,
) -> None:
    body = ndjson(outcome("req-1", note=f"a{SEPARATORS}b"), outcome("req-2"),
                  outcome("req-3", tokens_in="many"))

    refused = post_outcomes(client, body)
    written = post_outcomes(client, body.rsplit('{"request_id"', 1)[0])

    assert refused.status_code == 400, refused.text
    # The bad record is the third line: no line was split at U+2028 and the like.
    assert [(p["record"], p["field"]) for p in refused.json()["problems"]] == [
        (3, "tokens_in")]
    assert written.status_code == 200, written.text
    stored = registry.get(["outcome:req-1"])["outcome:req-1"]
    assert stored.properties["note"] == f"a{SEPARATORS}b"


def test_ndjson_outcomes_may_end_their_lines_in_crlf(client: TestClient) -> None:
    body = ndjson(outcome("req-1"), outcome("req-2", tokens_in="many")).replace("\n", "\r\n")

    response = post_outcomes(client, "\r\n" + body)

    assert response.status_code == 400, response.text
    assert [(p["record"], p["field"]) for p in response.json()["problems"]] == [
        (3, "tokens_in")]


def test_an_openlineage_ndjson_file_may_hold_line_separators_inside_strings(
    store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    events = [run_event("START", run_facets={"note": {"text": f"a{SEPARATORS}b"}}),
              run_event("COMPLETE", run_id="0192f000-0000-7000-8000-000000000002")]
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events),
                    encoding="utf-8")

    result = run_cli("ingest", "openlineage", str(path), *cli_args(store, request))

    assert result.exit_code == 0, result.output
    runs = store.get(["run:0192f000-0000-7000-8000-000000000001",
                      "run:0192f000-0000-7000-8000-000000000002"])
    assert len(runs) == 2
    assert pending(store) == []


# -- OpenLineage files: gzipped, or not text ------------------------------------------------


def test_ingest_openlineage_reads_a_gzipped_file(
    store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    path = tmp_path / "event.json.gz"
    path.write_bytes(gzip.compress(json.dumps(run_event()).encode()))

    result = run_cli("ingest", "openlineage", str(path), *cli_args(store, request))

    assert result.exit_code == 0, result.output
    assert "run:0192f000-0000-7000-8000-000000000001" in store.get(
        ["run:0192f000-0000-7000-8000-000000000001"])


@pytest.mark.parametrize("gzipped", [False, True])
def test_ingest_openlineage_of_a_file_that_is_not_utf8_is_one_line_naming_it(
    store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path, gzipped: bool,
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(run_event()))
    data = b'{"eventTime": "\xff\xfe"}\n'
    bad = tmp_path / ("bin.json.gz" if gzipped else "bin.json")
    bad.write_bytes(gzip.compress(data) if gzipped else data)
    before = snapshot(store)

    result = run_cli("ingest", "openlineage", str(good), str(bad), *cli_args(store, request))

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert bad.name in result.output and "not UTF-8" in result.output
    assert snapshot(store) == before  # nothing of either file was written
    assert pending(store) == []


# -- one request twice in one batch ---------------------------------------------------------


def test_a_request_twice_in_one_request_with_another_bundle_is_refused_naming_it(
    client: TestClient, registry: GraphStore,
) -> None:
    before = snapshot(registry)

    response = post_outcomes(client, ndjson(outcome("req-9"),
                                            outcome("req-9", bundle="support-triage@15")))

    assert response.status_code == 400, response.text
    assert response.json()["problems"] == [{
        "record": 2, "field": "bundle",
        "message": f"outcome:req-9 is also record 1, served by bundle:support-triage@14 at "
                   f"{T0.isoformat()}: a record sent again cannot change what served it, "
                   "or when"}]
    assert snapshot(registry) == before


def test_a_request_twice_in_one_request_at_another_time_is_refused_naming_timestamp(
    client: TestClient,
) -> None:
    response = post_outcomes(client, ndjson(outcome("req-9"),
                                            outcome("req-9", timestamp="2026-11-20T11:00:00Z")))

    assert response.status_code == 400, response.text
    assert [(p["record"], p["field"]) for p in response.json()["problems"]] == [
        (2, "timestamp")]


def test_a_request_twice_in_one_request_with_the_same_references_keeps_the_later_fields(
    client: TestClient, registry: GraphStore,
) -> None:
    # A feature spelled another way is the same reference.
    response = post_outcomes(client, ndjson(
        outcome("req-9", quality=0.1, features=["feature:txn_amount_7d@2"]),
        outcome("req-9", quality=0.9, features=["txn_amount_7d@2"])))

    assert response.status_code == 200, response.text
    assert registry.get(["outcome:req-9"])["outcome:req-9"].properties["quality"] == 0.9
    assert edges_of(registry, "outcome:req-9") == {
        ("SERVED_BY", "bundle:support-triage@14"), ("USED_FEATURE", "feature:txn_amount_7d@2")}


def test_a_file_load_dead_letters_a_request_its_batch_holds_again_with_another_bundle(
    registry: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    path = tmp_path / "twice.ndjson"
    path.write_text(ndjson(outcome("req-1"), outcome("req-1", bundle="support-triage@15"),
                           outcome("req-2")))

    result = run_cli("ingest", "outcomes", str(path), *cli_args(registry, request))

    assert result.exit_code == 1, result.output
    assert edges_of(registry, "outcome:req-1") == {("SERVED_BY", "bundle:support-triage@14")}
    assert "outcome:req-2" in registry.get(["outcome:req-2"])
    [letter] = pending(registry)
    assert letter.payload["problems"][0]["record"] == "twice.ndjson:2"
    assert letter.payload["problems"][0]["field"] == "bundle"


# -- outcome environments and times -------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "says"), [
    ("environment", " production", "no blanks at its ends"),
    ("environment", "production ", "no blanks at its ends"),
    ("environment", "", "no blanks at its ends"),
    # pydantic read a number, or text that is one, as Unix seconds
    ("timestamp", 1_763_632_800, "ISO 8601"),
    ("timestamp", 1_763_632_800.5, "ISO 8601"),
    ("timestamp", "1763632800", "ISO 8601"),
])
def test_an_outcome_environment_or_timestamp_it_cannot_be_is_refused_naming_it(
    client: TestClient, registry: GraphStore, field: str, value: Any, says: str,
) -> None:
    before = snapshot(registry)

    response = post_outcomes(client, ndjson(outcome("req-1", **{field: value})))

    assert response.status_code == 400, response.text
    [problem] = response.json()["problems"]
    assert problem["field"] == field and says in problem["message"]
    assert snapshot(registry) == before


@pytest.mark.parametrize("event_time", [12345, "12345"])
def test_an_openlineage_event_time_sent_as_a_number_is_refused_naming_it(
    store: GraphStore, tmp_path: Path, event_time: Any,
) -> None:
    with client_for(store) as client:
        response = client.post("/api/v1/lineage", json={**run_event(), "eventTime": event_time})

    assert response.status_code == 400, response.text
    assert [p.get("field") for p in response.json()["problems"]] == ["eventTime"]
    assert "ISO 8601" in response.json()["problems"][0]["message"]
    assert store.find(first=10) == []
