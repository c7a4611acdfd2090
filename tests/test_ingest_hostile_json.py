"""Hostile JSON at every JSON ingest route: nesting too deep for the parser, malformed
OpenLineage facets, lone surrogate escapes, NaN and Infinity, and gzip bodies that inflate
past the configured limit. Each is a 4xx naming what is wrong and where (record, field) —
never a 500, never a half-written batch — and nothing is kept that could not be read back.
Every test taking ``store`` runs on the embedded store and on Neo4j."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph.store import GraphStore
from lineagegraph.ingest import deadletter
from lineagegraph.ingest.openlineage import COLLECTION

from .ingest_support import cli_args, run_cli
from .openlineage_support import column_lineage, dataset, run_event

RUN = "0192f000-0000-7000-8000-000000000001"
OTHER = "0192f000-0000-7000-8000-0000000000ee"
T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}
DEEP = "[" * 3000 + "]" * 3000  # deeper than json.loads can recurse


@pytest.fixture
def client(store: GraphStore) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as test_client:
        yield test_client


def text(value: Any) -> str:
    """JSON as a hostile client writes it: ASCII escapes (so lone surrogates survive as
    ``\\ud800``) and NaN/Infinity as the bare constants ``json.dumps`` emits."""
    return json.dumps(value)


def ndjson(*values: Any) -> str:
    return "\n".join(text(v) for v in values) + "\n"


def outcome(request_id: str = "req-1", **fields: Any) -> dict[str, Any]:
    return {"request_id": request_id, "timestamp": T0.isoformat(), "environment": "production",
            "model": "gpt-5-mini-2026-08", **fields}


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def problem(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    (only,) = response.json()["problems"]
    return only


def assert_nothing_kept(store: GraphStore) -> None:
    assert store.find(first=10) == []
    assert store.records(COLLECTION) == []
    assert deadletter.pending(store) == []


def assert_listings_answer(client: TestClient) -> None:
    """What was refused can never make a listing unreadable."""
    assert client.get("/api/v1/events/lineage").status_code == 200
    assert client.get("/api/v1/deadletter").status_code == 200


# -- nesting --------------------------------------------------------------------------------

@pytest.mark.parametrize(("route", "headers", "record"), [
    pytest.param("/api/v1/lineage", JSON, None, id="lineage"),
    pytest.param("/api/v1/lineage/batch", JSON, 0, id="lineage-batch"),
    pytest.param("/api/v1/outcomes", JSON, 1, id="outcomes-array"),
    pytest.param("/api/v1/outcomes", NDJSON, 1, id="outcomes-ndjson"),
    pytest.param("/api/v1/manifests", JSON, 1, id="manifests"),
])
def test_json_nested_too_deeply_for_the_parser_is_400_naming_the_record(
    client: TestClient, store: GraphStore, route: str, headers: dict[str, str],
    record: int | None,
) -> None:
    response = client.post(route, content=DEEP, headers=headers)

    found = problem(response)
    assert "nested too deeply" in found["message"]
    assert found.get("record") == record
    assert_nothing_kept(store)


def test_a_batch_item_nested_a_thousand_deep_is_400_naming_its_index_and_writes_nothing(
    client: TestClient, store: GraphStore,
) -> None:
    deep = text(run_event(run_id=OTHER, run_facets={"deep": []})).replace(
        '"deep": []', f'"deep": {"[" * 1000}{"]" * 1000}')  # too deep for json.dumps too
    body = f"[{text(run_event())}, {deep}, {text(run_event('COMPLETE'))}]"

    found = problem(client.post("/api/v1/lineage/batch", content=body, headers=JSON))

    assert "nested too deeply" in found["message"] and found["record"] == 1
    assert_nothing_kept(store)


def test_a_run_facet_nested_past_the_limit_is_400_naming_its_field(
    client: TestClient, store: GraphStore,
) -> None:
    event = run_event(run_facets={"deep": nested(300)})  # json.loads takes 300 levels

    found = problem(client.post("/api/v1/lineage", content=text(event), headers=JSON))

    assert "nested too deeply" in found["message"]
    assert found["field"].startswith("run.facets.deep.0.0")
    assert_nothing_kept(store)


def test_facets_nested_within_the_limit_are_kept_as_sent(client: TestClient) -> None:
    event = run_event(run_facets={"deep": nested(150)})

    response = client.post("/api/v1/lineage", content=text(event), headers=JSON)

    assert response.status_code == 201, response.text
    (kept,) = client.get("/api/v1/events/lineage").json()["events"]
    assert kept == event


LONG = "1" * 5000  # more digits than Python converts to an int (sys.get_int_max_str_digits)


@pytest.mark.parametrize(("route", "headers", "body", "record", "field"), [
    pytest.param("/api/v1/lineage", JSON, text(run_event(run_facets={"c": {"n": 0}})).replace(
        '"n": 0', f'"n": {LONG}'), None, "run.facets.c.n", id="lineage"),
    pytest.param("/api/v1/lineage/batch", JSON, f'[{text(run_event())}, {{"n": {LONG}}}]', 1,
                 "n", id="lineage-batch"),
    pytest.param("/api/v1/outcomes", NDJSON, ndjson(outcome()) + text(outcome("r2")).replace(
        '"environment"', f'"tokens_in": {LONG}, "environment"'), 2, "tokens_in",
        id="outcomes-ndjson"),
    pytest.param("/api/v1/outcomes", JSON, f'[{text(outcome())}, {{"x": {LONG}}}]', 2, "x",
                 id="outcomes-array"),
])
def test_an_integer_longer_than_python_reads_is_400_naming_the_record_and_field(
    client: TestClient, store: GraphStore, route: str, headers: dict[str, str], body: str,
    record: int | None, field: str,
) -> None:
    found = problem(client.post(route, content=body, headers=headers))

    assert "a number longer than Python reads" in found["message"]
    assert (found.get("record"), found.get("field")) == (record, field)
    assert_nothing_kept(store)


def test_an_event_nested_too_deeply_for_the_parser_is_400_naming_the_field_it_is_under(
    client: TestClient, store: GraphStore,
) -> None:
    # Past json.loads' stack, not only past the limit checked after parsing (300 levels).
    body = text(run_event(run_facets={"deep": []})).replace(
        '"deep": []', f'"deep": {"[" * 3000}{"]" * 3000}')

    found = problem(client.post("/api/v1/lineage", content=body, headers=JSON))

    assert "nested too deeply" in found["message"]
    assert found["field"] == "run.facets.deep.0.0.0.0.0.0.0.0.0.…", found


def test_the_cli_refuses_a_file_it_cannot_read_naming_the_event_and_loads_the_others(
    store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    unreadable = tmp_path / "unreadable.json"
    unreadable.write_text(f'[{text(run_event(run_id=OTHER))}, {{"n": {LONG}}}]')
    good = tmp_path / "good.json"
    good.write_text(text(run_event()))

    result = run_cli("ingest", "openlineage", str(unreadable), str(good),
                     *cli_args(store, request))

    assert result.exit_code == 1, result.output
    assert set(store.get([f"run:{RUN}", f"run:{OTHER}"])) == {f"run:{RUN}"}
    (letter,) = deadletter.pending(store)
    assert letter.payload["reason"].startswith(
        "record unreadable.json[1], field n: a number longer")


# -- OpenLineage facet shapes ---------------------------------------------------------------

LINEAGE_FIELDS = "outputs[0].facets.columnLineage.fields"


def with_column_lineage(facet: Any, run_id: str = RUN) -> dict[str, Any]:
    return run_event("COMPLETE", run_id=run_id,
                     outputs=[dataset("warehouse", "clean.payments", columnLineage=facet)])


@pytest.mark.parametrize(("facet", "field"), [
    pytest.param({"fields": {"a": {"inputFields": 1}}}, f"{LINEAGE_FIELDS}.a.inputFields",
                 id="inputFields-int"),
    pytest.param({"fields": {"a": {"inputFields": 1.5}}}, f"{LINEAGE_FIELDS}.a.inputFields",
                 id="inputFields-float"),
    pytest.param({"fields": {"a": {"inputFields": True}}}, f"{LINEAGE_FIELDS}.a.inputFields",
                 id="inputFields-bool"),
    pytest.param({"fields": {"a": {"inputFields": "raw.payments"}}},
                 f"{LINEAGE_FIELDS}.a.inputFields", id="inputFields-string"),
    pytest.param({"fields": {"a": {"inputFields": {"namespace": "w", "name": "raw"}}}},
                 f"{LINEAGE_FIELDS}.a.inputFields", id="inputFields-object"),
    pytest.param({"fields": {"a": 5}}, f"{LINEAGE_FIELDS}.a", id="field-not-object"),
    pytest.param({"fields": ["a"]}, LINEAGE_FIELDS, id="fields-list"),
    pytest.param({"fields": {}, "dataset": 3}, "outputs[0].facets.columnLineage.dataset",
                 id="dataset-int"),
    pytest.param("a, b", "outputs[0].facets.columnLineage", id="facet-string"),
])
def test_a_malformed_column_lineage_facet_is_400_naming_its_field(
    client: TestClient, store: GraphStore, facet: Any, field: str,
) -> None:
    response = client.post("/api/v1/lineage", json=with_column_lineage(facet))

    assert problem(response)["field"] == field
    assert store.find(first=10) == []
    (letter,) = deadletter.pending(store)
    assert letter.payload["problems"][0]["field"] == field


def test_a_batch_writes_the_events_around_one_with_a_malformed_facet_and_dead_letters_it(
    client: TestClient, store: GraphStore,
) -> None:
    bad = with_column_lineage({"fields": {"a": {"inputFields": 1}}}, run_id=OTHER)
    events = [run_event("START"), bad, run_event("COMPLETE", run_id="run-3")]

    response = client.post("/api/v1/lineage/batch", json=events)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["summary"] == {"received": 3, "successful": 2, "failed": 1}
    assert [(f["index"], [p["field"] for p in f["problems"]]) for f in body["failedEvents"]] == [
        (1, [f"{LINEAGE_FIELDS}.a.inputFields"])]
    assert set(store.get([f"run:{RUN}", "run:run-3", f"run:{OTHER}"])) == {
        f"run:{RUN}", "run:run-3"}
    (letter,) = deadletter.pending(store)
    assert letter.payload["record"] == bad


def test_the_cli_dead_letters_an_event_with_a_malformed_facet_and_loads_the_rest(
    store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    bad = with_column_lineage({"fields": {"a": {"inputFields": 1}}}, run_id=OTHER)
    path = tmp_path / "events.json"
    path.write_text(text([run_event("START"), bad, run_event("COMPLETE", run_id="run-3")]))

    result = run_cli("ingest", "openlineage", str(path), *cli_args(store, request))

    assert result.exit_code == 1, result.output
    assert "1 of 3 event(s) rejected" in result.output
    assert set(store.get([f"run:{RUN}", "run:run-3", f"run:{OTHER}"])) == {
        f"run:{RUN}", "run:run-3"}
    (letter,) = deadletter.pending(store)
    assert letter.payload["reason"].startswith("record events.json[1], field "
                                               f"{LINEAGE_FIELDS}.a.inputFields")


def _with_facet(where: str, name: str, value: Any) -> dict[str, Any]:
    event = run_event("COMPLETE", inputs=[dataset("warehouse", "raw.payments")],
                      outputs=[dataset("warehouse", "clean.payments")])
    target = {"run": event["run"], "job": event["job"], "inputs[0]": event["inputs"][0],
              "outputs[0]": event["outputs"][0]}[where.rsplit(".", 1)[0]]
    target.setdefault(where.rsplit(".", 1)[1], {})[name] = value
    return event


@pytest.mark.parametrize(("where", "name", "value"), [
    pytest.param("run.facets", "parent", 5, id="run-parent"),
    pytest.param("run.facets", "nominalTime", "2026-11-20", id="run-nominalTime"),
    pytest.param("job.facets", "jobType", "BATCH", id="job-jobType"),
    pytest.param("job.facets", "sql", ["select 1"], id="job-sql"),
    pytest.param("inputs[0].facets", "schema", [{"name": "id"}], id="input-schema"),
    pytest.param("inputs[0].inputFacets", "version", "v1", id="input-version"),
    pytest.param("outputs[0].facets", "datasetType", "MODEL", id="output-datasetType"),
    pytest.param("outputs[0].outputFacets", "outputStatistics", 12, id="output-statistics"),
])
def test_a_facet_the_mapper_reads_must_be_an_object(
    client: TestClient, store: GraphStore, where: str, name: str, value: Any,
) -> None:
    response = client.post("/api/v1/lineage", json=_with_facet(where, name, value))

    assert problem(response)["field"] == f"{where}.{name}"
    assert store.find(first=10) == []


def test_facets_the_mapper_does_not_read_may_be_of_any_shape(
    client: TestClient, store: GraphStore,
) -> None:
    event = run_event("COMPLETE", run_facets={"custom": 5, "other": ["x"], "parent": None},
                      outputs=[dataset("warehouse", "clean.payments", myFacet="text",
                                       columnLineage=column_lineage())])

    response = client.post("/api/v1/lineage", json=event)

    assert response.status_code == 201, response.text
    assert f"run:{RUN}" in store.get([f"run:{RUN}"])


# -- lone surrogates ------------------------------------------------------------------------

LONE = "not valid Unicode: a lone surrogate escape"


@pytest.mark.parametrize(("route", "headers", "body", "record", "field"), [
    pytest.param("/api/v1/lineage", JSON, text(run_event(run_facets={"c": {"t": "\udfff"}})),
                 None, "run.facets.c.t", id="lineage-facet"),
    pytest.param("/api/v1/lineage", JSON, text(run_event(run_id="r-\ud800")), None,
                 "run.runId", id="lineage-runId"),
    pytest.param("/api/v1/lineage/batch", JSON,
                 text([run_event(), run_event(run_id="\ud800x")]), 1, "run.runId",
                 id="lineage-batch"),
    pytest.param("/api/v1/outcomes", NDJSON, ndjson(outcome(), outcome("r2", note="\ud800")),
                 2, "note", id="outcomes-ndjson"),
    pytest.param("/api/v1/outcomes", NDJSON, ndjson(outcome("\udc00")), 1, "request_id",
                 id="outcomes-ndjson-low-half"),
    pytest.param("/api/v1/outcomes", JSON, text([outcome(), outcome("r2", n={"\ud800": 1})]),
                 2, "n", id="outcomes-array-key"),
    pytest.param("/api/v1/manifests", JSON,
                 text([{"kind": "DataSource", "name": "wh.a"},
                       {"kind": "DataSource", "name": "wh.\ud800"}]), 2, "name",
                 id="manifests"),
])
def test_a_lone_surrogate_escape_is_400_naming_record_and_field(
    client: TestClient, store: GraphStore, route: str, headers: dict[str, str], body: str,
    record: int | None, field: str,
) -> None:
    found = problem(client.post(route, content=body, headers=headers))

    assert (found["message"], found.get("record"), found["field"]) == (LONE, record, field)
    assert_nothing_kept(store)
    assert_listings_answer(client)


def test_surrogates_encoded_as_utf8_bytes_are_400(client: TestClient, store: GraphStore) -> None:
    body = text(run_event(run_facets={"c": {"t": "ok"}})).replace('"ok"', '"o\udfffk"')

    response = client.post("/api/v1/lineage", content=body.encode("utf-8", "surrogatepass"),
                           headers=JSON)

    assert response.status_code == 400, response.text
    assert_nothing_kept(store)
    assert_listings_answer(client)


def test_an_escaped_surrogate_pair_is_one_character_and_kept(client: TestClient) -> None:
    event = run_event(run_facets={"c": {"t": "\U0001f600"}})
    body = text(event)
    assert "\\ud83d\\ude00" in body

    response = client.post("/api/v1/lineage", content=body, headers=JSON)

    assert response.status_code == 201, response.text
    assert client.get("/api/v1/events/lineage").json()["events"] == [event]


# -- NaN and Infinity -----------------------------------------------------------------------

@pytest.mark.parametrize(("route", "headers", "body", "record", "field"), [
    pytest.param("/api/v1/outcomes", NDJSON, ndjson(outcome(latency_ms=float("nan"))), 1,
                 "latency_ms", id="outcome-typed-NaN"),
    pytest.param("/api/v1/outcomes", NDJSON, ndjson(outcome(), outcome("r2", score=float("inf"))),
                 2, "score", id="outcome-extra-Infinity"),
    pytest.param("/api/v1/outcomes", NDJSON, ndjson(outcome(x={"y": [-float("inf")]})), 1,
                 "x.y.0", id="outcome-nested-extra"),
    pytest.param("/api/v1/outcomes", NDJSON, ndjson(outcome(float("nan"))), 1, "request_id",
                 id="outcome-NaN-as-text-field"),
    pytest.param("/api/v1/outcomes", NDJSON, ndjson(outcome(latency_ms="NaN")), 1,
                 "latency_ms", id="outcome-NaN-string"),
    pytest.param("/api/v1/outcomes", NDJSON, ndjson(outcome(big=1)).replace(
        '"big": 1', '"big": 1e999'), 1, "big", id="outcome-overflow"),
    pytest.param("/api/v1/outcomes", JSON, text([outcome(), outcome("r2", quality=float("nan"))]),
                 2, "quality", id="outcomes-array"),
    pytest.param("/api/v1/lineage", JSON, text(run_event(run_facets={"c": {"s": float("nan")}})),
                 None, "run.facets.c.s", id="lineage"),
    pytest.param("/api/v1/lineage/batch", JSON,
                 text([run_event(), run_event(run_facets={"c": [float("-inf")]})]), 1,
                 "run.facets.c.0", id="lineage-batch"),
    pytest.param("/api/v1/manifests", JSON,
                 text({"kind": "DataSource", "name": "wh.a", "rows": float("inf")}), 1,
                 "rows", id="manifests"),
])
def test_nan_and_infinity_are_400_naming_record_and_field(
    client: TestClient, store: GraphStore, route: str, headers: dict[str, str], body: str,
    record: int | None, field: str,
) -> None:
    found = problem(client.post(route, content=body, headers=headers))

    assert (found.get("record"), found["field"]) == (record, field)
    assert "finite" in found["message"] or "NaN" in found["message"]
    assert_nothing_kept(store)


@pytest.mark.parametrize("bad", [
    pytest.param(text(outcome("req-bad", note="\ud800")), id="lone-surrogate"),
    pytest.param(text(outcome("req-bad", latency_ms=float("nan"))), id="NaN"),
    pytest.param(text(outcome("req-bad", deep=nested(300))), id="too-deep"),
])
def test_a_file_load_dead_letters_a_hostile_outcome_line_as_its_text_and_loads_the_rest(
    store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path, bad: str,
) -> None:
    path = tmp_path / "outcomes.ndjson.gz"
    path.write_bytes(gzip.compress("\n".join([text(outcome()), bad, ""]).encode()))

    result = run_cli("ingest", "outcomes", str(path), *cli_args(store, request))

    assert result.exit_code == 1, result.output
    assert set(store.get(["outcome:req-1", "outcome:req-bad"])) == {"outcome:req-1"}
    (letter,) = deadletter.pending(store)
    assert letter.payload["record"].rstrip("\n") == bad  # the line as read, not its value
    assert letter.payload["reason"].startswith("record outcomes.ndjson.gz:2")
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as client:
        assert_listings_answer(client)


# -- gzip bodies and the configured limit ---------------------------------------------------

LIMIT = 64 * 1024


@pytest.fixture
def limited(store: GraphStore) -> Iterator[TestClient]:
    settings = Settings(neo4j_uri=None, max_body_bytes=LIMIT)
    with TestClient(create_app(settings, store=store)) as test_client:
        yield test_client


GZIP = {**JSON, "Content-Encoding": "gzip"}


@pytest.mark.parametrize("route", ["/api/v1/lineage", "/api/v1/lineage/batch"])
def test_a_gzip_body_over_the_configured_limit_once_decompressed_is_413(
    limited: TestClient, store: GraphStore, route: str,
) -> None:
    event = run_event(run_facets={"padding": {"text": "x" * (5 * LIMIT)}})
    body = text([event] if route.endswith("batch") else event).encode()
    packed = gzip.compress(body)
    assert len(packed) < LIMIT < len(body)

    compressed = limited.post(route, content=packed, headers=GZIP)
    plain = limited.post(route, content=body, headers=JSON)

    assert compressed.status_code == plain.status_code == 413, compressed.text
    assert compressed.json()["code"] == plain.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert "LINEAGEGRAPH_MAX_BODY_BYTES" in compressed.json()["error"]
    assert_nothing_kept(store)


def test_a_gzip_body_within_the_configured_limit_is_accepted(limited: TestClient) -> None:
    event = run_event(run_facets={"padding": {"text": "x" * (LIMIT // 2)}})

    response = limited.post("/api/v1/lineage", content=gzip.compress(text(event).encode()),
                            headers=GZIP)

    assert response.status_code == 201, response.text


def _gzip_of_zeros(size: int) -> bytes:
    packer = zlib.compressobj(9, wbits=16 + zlib.MAX_WBITS)
    chunk = bytes(1024 * 1024)
    return b"".join([*(packer.compress(chunk) for _ in range(size // len(chunk))),
                     packer.flush()])


def test_a_gzip_bomb_is_refused_without_inflating_it_past_the_limit(
    limited: TestClient, store: GraphStore,
) -> None:
    bomb = _gzip_of_zeros(48 * 1024 * 1024)  # ~1,000:1, under the limit as sent
    assert len(bomb) < LIMIT

    tracemalloc.start()
    try:
        response = limited.post("/api/v1/lineage", content=bomb, headers=GZIP)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert response.status_code == 413, response.text
    assert peak < 8 * 1024 * 1024  # what the limit lets through, not the 48 MiB
    assert_nothing_kept(store)
