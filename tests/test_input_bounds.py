"""Bounds on input, declared once (``schema/bounds.py``) and checked on every ingest path —
outcomes, manifests, OpenLineage (one event and a batch), the upsert and approve mutations:
a time UTC cannot hold or one in the future, an ID too long for Neo4j's index or holding a
control character, properties too large for a node. Each is a 4xx naming the field, the
same on both stores, with nothing half-written. Every test taking ``store`` runs on the
embedded store and on Neo4j."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
from lineagegraph.schema import Edge, InvalidId, Node, approval_name, parse_id
from lineagegraph.schema.bounds import (
    FUTURE_SKEW,
    MAX_ID_BYTES,
    MAX_ID_PART_BYTES,
    MAX_PROPERTIES_BYTES,
)
from lineagegraph.schema.models import utc

from .ingest_support import cli_args, run_cli
from .openlineage_support import dataset, run_event

T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
BUNDLE = "bundle:support-triage@14"
EDGE_DATES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]  # year 0, 10000
FUTURE = "2099-01-01T00:00:00Z"
LONG = "x" * 9000  # past Neo4j's index key limit (~8 KB)
# NUL (SQLite's json_each ends a string there), the separator of keys built on IDs, a newline
CONTROL = ["nul\x00tail", "sep\x1ftail", "two\nlines"]
HOSTILE_PARTS = [LONG, *CONTROL]
UPSERT = "mutation($n: [NodeInput!]!) { upsert(nodes: $n) { nodes { created } } }"
APPROVE = "mutation($t: ID!, $g: String) { approve(target: $t, gate: $g) { id } }"


@pytest.fixture
def client(store: GraphStore) -> Iterator[TestClient]:
    store.upsert([Node.from_id(BUNDLE, created_at=T0)])
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as test_client:
        yield test_client


def outcome(request_id: str = "req-1", **fields: Any) -> dict[str, Any]:
    return {"request_id": request_id, "timestamp": T0.isoformat(), "environment": "production",
            "model": "gpt-5-mini-2026-08", **fields}


def post_outcomes(client: TestClient, *records: dict[str, Any]) -> httpx.Response:
    return client.post("/api/v1/outcomes", content="\n".join(json.dumps(r) for r in records),
                       headers={"content-type": "application/x-ndjson"})


def post_manifest(client: TestClient, *docs: dict[str, Any]) -> httpx.Response:
    return client.post("/api/v1/manifests", json=list(docs))


def gql(client: TestClient, query: str, **variables: Any) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    return response.json()


def refused(response: httpx.Response, field: str, status: int = 400) -> str:
    """The one problem of a refused request, which names ``field``: its message."""
    assert response.status_code == status, response.text
    (problem,) = response.json()["problems"]
    assert problem["field"] == field, problem
    return str(problem["message"])


def user_error(answer: dict[str, Any], *where: str) -> str:
    """A GraphQL field refused with the caller's error (never 'Unexpected error'), which
    names ``where``."""
    (error,) = answer["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert all(w in error["message"] for w in where), error["message"]
    return str(error["message"])


def kept_events(client: TestClient, run_id: str) -> list[Any]:
    response = client.get("/api/v1/events/lineage", params={"runId": run_id})
    assert response.status_code == 200, response.text
    return list(response.json()["events"])


def nodes_of(store: GraphStore) -> set[str]:
    return {n.id for n in store.find(first=100)}


# -- #6: times UTC cannot hold, #2: times in the future ---------------------------------------

BAD_TIMES = [*EDGE_DATES, FUTURE]


def test_utc_refuses_an_edge_of_the_calendar_as_a_value_error() -> None:
    for text in EDGE_DATES:
        with pytest.raises(ValueError, match="out of range in UTC") as caught:
            utc(datetime.fromisoformat(text))
        assert isinstance(caught.value, OverflowError)  # what callers caught before


@pytest.mark.parametrize("at", BAD_TIMES)
def test_an_outcome_timestamp_out_of_range_or_in_the_future_is_refused(
    client: TestClient, store: GraphStore, at: str,
) -> None:
    message = refused(post_outcomes(client, outcome(timestamp=at)), "timestamp")
    assert "out of range" in message or "in the future" in message
    assert nodes_of(store) == {BUNDLE}


@pytest.mark.parametrize("at", BAD_TIMES)
def test_a_manifest_created_at_out_of_range_or_in_the_future_is_refused(
    client: TestClient, store: GraphStore, at: str,
) -> None:
    refused(post_manifest(client, {"kind": "DataSource", "name": "wh.a", "created_at": at}),
            "created_at")
    assert nodes_of(store) == {BUNDLE}


@pytest.mark.parametrize("at", EDGE_DATES)
def test_a_stage_move_at_the_edge_of_the_calendar_is_refused(
    client: TestClient, store: GraphStore, at: str,
) -> None:
    refused(post_manifest(client, {"kind": "StageMove", "bundle": "support-triage",
                                   "version": 14, "environment": "production", "at": at}), "at")
    assert store.stage_history() == []


def test_a_forged_future_evaluation_cannot_decide_the_eval_gate(
    client: TestClient, store: GraphStore,
) -> None:
    # Dated 2099, it would be the bundle's latest evaluation for good.
    refused(post_manifest(client, {"kind": "Evaluation", "suite": "s", "run": "forged",
                                   "target": BUNDLE, "score": 1.0, "threshold": 0,
                                   "created_at": FUTURE}), "created_at")
    assert nodes_of(store) == {BUNDLE}


def test_a_time_within_the_clock_skew_is_taken(client: TestClient, store: GraphStore) -> None:
    soon = (datetime.now(UTC) + FUTURE_SKEW / 2).isoformat()
    assert post_outcomes(client, outcome(timestamp=soon)).status_code == 200
    assert post_manifest(client, {"kind": "DataSource", "name": "wh.a",
                                  "created_at": soon}).status_code == 200
    event = run_event(run_id="soon") | {"eventTime": soon}
    assert client.post("/api/v1/lineage", json=event).status_code == 201
    assert {"outcome:req-1", "source:wh.a", "run:soon"} <= nodes_of(store)


@pytest.mark.parametrize("at", BAD_TIMES)
def test_an_openlineage_event_time_out_of_range_or_in_the_future_is_refused(
    client: TestClient, store: GraphStore, at: str,
) -> None:
    event = run_event(run_id="r-time") | {"eventTime": at}
    refused(client.post("/api/v1/lineage", json=event), "eventTime")
    batch = client.post("/api/v1/lineage/batch", json=[event])
    assert batch.status_code == 200, batch.text
    (failure,) = batch.json()["failedEvents"]
    assert failure["index"] == 0 and failure["problems"][0]["field"] == "eventTime"
    assert nodes_of(store) == {BUNDLE} and kept_events(client, "r-time") == []


@pytest.mark.parametrize("at", BAD_TIMES)
def test_an_upsert_created_at_out_of_range_or_in_the_future_is_the_callers_error(
    client: TestClient, store: GraphStore, at: str,
) -> None:
    answer = gql(client, UPSERT, n=[{"id": "source:wh.a", "createdAt": at}])
    user_error(answer, "nodes.0.created_at")
    assert nodes_of(store) == {BUNDLE}


# -- #7, #8: IDs too long for Neo4j's index, IDs holding control characters ------------------

@pytest.mark.parametrize("part", HOSTILE_PARTS, ids=["long", "nul", "separator", "newline"])
def test_a_hostile_id_part_is_refused_on_every_path_alike(
    client: TestClient, store: GraphStore, part: str,
) -> None:
    refused(post_manifest(client, {"kind": "DataSource", "name": part}), "name")
    refused(post_outcomes(client, outcome(part)), "request_id")
    refused(post_outcomes(client, outcome(environment=part)), "environment")
    event = run_event(run_id=part)
    refused(client.post("/api/v1/lineage", json=event), "run.runId")
    batch = client.post("/api/v1/lineage/batch", json=[event])
    assert batch.status_code == 200, batch.text
    assert [f["index"] for f in batch.json()["failedEvents"]] == [0]
    user_error(gql(client, UPSERT, n=[{"id": f"source:{part}"}]), "nodes.0")
    user_error(gql(client, APPROVE, t=BUNDLE, g=part), "gate")
    assert nodes_of(store) == {BUNDLE}
    assert store.records(COLLECTION) == []


@pytest.mark.parametrize("part", CONTROL, ids=["nul", "separator", "newline"])
def test_an_id_with_a_control_character_is_the_callers_error_when_read(
    client: TestClient, part: str,
) -> None:
    # Embedded: SQLite's json_each ended the ID at NUL, and ``node`` answered null.
    answer = gql(client, "query($i: ID!) { node(id: $i) { id } }", i=f"source:{part}")
    user_error(answer, "control character")


def test_a_bad_event_in_an_openlineage_batch_is_named_and_the_others_written(
    client: TestClient, store: GraphStore,
) -> None:
    events = [run_event(run_id=run, at=T0 + timedelta(seconds=i))
              for i, run in enumerate(["good-1", LONG, "good-2"])]
    response = client.post("/api/v1/lineage/batch", json=events)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["summary"] == {"received": 3, "successful": 2, "failed": 1}
    (failure,) = body["failedEvents"]
    assert failure["index"] == 1 and failure["problems"][0]["field"] == "run.runId"
    assert len(kept_events(client, "good-1")) == len(kept_events(client, "good-2")) == 1
    assert len(deadletter.pending(store)) == 1  # the bad one, to replay


def test_a_file_load_dead_letters_an_event_whose_ids_are_too_long(
    store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    # Each part fits (namespace, name, a version with ``@`` written %40, three bytes each),
    # the dataset version's ID made of them does not: the load went down with InvalidId.
    part = "@" * MAX_ID_PART_BYTES
    long = run_event(run_id="r-long", outputs=[dataset(part, part, version={
        "datasetVersion": part})], at=T0 + timedelta(seconds=1))
    path = tmp_path / "events.json"
    path.write_text(json.dumps([run_event(run_id="r-ok"), long]))

    result = run_cli("ingest", "openlineage", str(path), *cli_args(store, request))

    assert result.exit_code == 1, result.output
    assert "1 of 2 event(s) rejected" in result.output
    assert set(store.get(["run:r-ok", "run:r-long"])) == {"run:r-ok"}
    (letter,) = deadletter.pending(store)
    assert "bytes long in UTF-8" in letter.payload["reason"]


def test_a_store_failure_stops_a_batch_and_names_every_event_not_written(
    client: TestClient, store: GraphStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    writes: list[int] = []
    write = store.write

    def failing_second(batch: Any) -> Any:
        writes.append(1)
        if len(writes) == 2:
            raise RuntimeError("the store went away")
        return write(batch)

    monkeypatch.setattr(store, "write", failing_second)
    events = [run_event(run_id=f"run-{i}", at=T0 + timedelta(seconds=i)) for i in range(3)]
    response = client.post("/api/v1/lineage/batch", json=events)
    assert response.status_code == 500, response.text
    body = response.json()
    assert body["summary"] == {"received": 3, "successful": 1, "failed": 2}
    assert [f["index"] for f in body["failedEvents"]] == [1, 2]
    monkeypatch.undo()
    assert [len(kept_events(client, f"run-{i}")) for i in range(3)] == [1, 0, 0]


def test_ids_made_of_parts_at_their_bound_fit_in_both_stores(
    client: TestClient, store: GraphStore,
) -> None:
    # 1,000 bytes each, in two-byte characters: a bundle's name and version, its approver,
    # and an approval's gate make the longest ID of parts (approval:bundle:…@…/…/…).
    part = "é" * (MAX_ID_PART_BYTES // 2)
    written = post_manifest(client, {"name": part, "version": part, "model": "gpt-5-mini",
                                     "approved_by": part, "eval": {"suite": part}})
    assert written.status_code == 200, written.text
    bundle = f"bundle:{part}@{part}"
    approval = gql(client, APPROVE, t=bundle, g=part)["data"]["approve"]["id"]
    assert len(approval.encode()) > 3 * MAX_ID_PART_BYTES
    assert approval == f"approval:{approval_name(bundle, 'anonymous', part)}"
    assert post_outcomes(client, outcome(part, environment="production")).status_code == 200
    assert {bundle, approval, f"approval:{approval_name(bundle, part)}",
            f"eval:{part}/{part}@{part}", f"outcome:{part}"} <= nodes_of(store)
    assert gql(client, "query($i: ID!) { node(id: $i) { id } }",
               i=approval)["data"]["node"]["id"] == approval


def test_a_whole_id_is_bounded_when_parsed_and_when_built() -> None:
    longest = "source:" + "x" * (MAX_ID_BYTES - len("source:"))
    assert str(parse_id(longest)) == longest
    with pytest.raises(InvalidId, match="4,097 bytes"):
        parse_id(longest + "x")
    with pytest.raises(ValueError, match="bytes long"):  # each part fits; together not
        Node(kind="Bundle", name="n" * 3000, version="v" * 3000)
    with pytest.raises(InvalidId, match="gate"):
        approval_name(BUNDLE, "alice", "g\x00")


def test_an_outcome_reading_many_features_is_counted_on_both_stores(
    client: TestClient, store: GraphStore,
) -> None:
    # Neo4j: the traffic counter's key lists every target (150 × ~80 bytes), past what its
    # uniqueness index holds: a 500 there, while the embedded store counted it.
    features = [Node(kind="Feature", name=f"f{i:03d}-" + "y" * 60, version="1", created_at=T0)
                for i in range(150)]
    store.upsert(features)
    record = outcome(features=[f.id for f in features])
    assert post_outcomes(client, record).status_code == 200
    assert post_outcomes(client, record).status_code == 200  # re-sent: counted once
    assert store.traffic_rollup([features[0].id], None, None) == {"production": 1}


@pytest.mark.parametrize("name", ["x" * 65, "a\x00b", " production"])
def test_a_stage_a_manifest_names_must_be_an_environment_name(
    client: TestClient, store: GraphStore, name: str,
) -> None:
    # StageMove refused such a name as the load planned the move: a 500.
    refused(post_manifest(client, {"name": "b", "version": 1, "model": "gpt-5-mini",
                                   "status": name}), "status")
    response = post_manifest(client, {"kind": "StageMove", "bundle": "support-triage",
                                      "version": 14, "environment": name})
    refused(response, "environment")
    assert nodes_of(store) == {BUNDLE} and store.stage_history() == []


# -- #9: properties too large for a node -----------------------------------------------------

BIG = "x" * (MAX_PROPERTIES_BYTES + 1)


def test_properties_too_large_are_refused_on_every_path(
    client: TestClient, store: GraphStore,
) -> None:
    refused(post_manifest(client, {"kind": "DataSource", "name": "wh.a", "owner": BIG}),
            "properties")
    # A bundle entry's eval becomes an Evaluation, built before the entry's own node.
    refused(post_manifest(client, {"name": "b", "version": 1, "model": "gpt-5-mini",
                                   "eval": {"suite": "s", "notes": BIG}}), "eval")
    response = post_outcomes(client, outcome(notes=BIG))
    assert response.status_code == 400, response.text
    (problem,) = response.json()["problems"]
    assert problem["record"] == 1 and "properties" in problem["message"]
    as_array = client.post("/api/v1/outcomes", json=[outcome(notes=BIG)])
    assert as_array.status_code == 400, as_array.text
    user_error(gql(client, UPSERT, n=[{"id": "source:wh.a", "properties": {"doc": BIG}}]),
               "nodes.0.properties")
    assert nodes_of(store) == {BUNDLE}


@pytest.mark.parametrize("doc", [BIG, "é" * (MAX_PROPERTIES_BYTES // 6 + 1)],
                         ids=["ascii", "escaped"])
def test_a_node_measures_its_properties_as_stored(doc: str) -> None:
    # Canonical JSON is ASCII: é is stored as \\u00e9, six bytes.
    with pytest.raises(ValueError, match="properties are"):
        Node(kind="DataSource", name="a", properties={"doc": doc})


def test_edge_properties_too_large_are_refused_as_a_nodes_are(
    client: TestClient, store: GraphStore,
) -> None:
    with pytest.raises(ValueError, match="properties are"):
        Edge(source="feature:f@1", type="DERIVED_FROM", target="dataset:d@1",
             properties={"columns": BIG})
    upsert = """mutation($n: [NodeInput!]!, $e: [EdgeInput!]) {
      upsert(nodes: $n, edges: $e) { nodes { created } } }"""
    answer = gql(client, upsert, n=[{"id": "feature:f@1"}, {"id": "dataset:d@1"}],
                 e=[{"source": "feature:f@1", "type": "DERIVED_FROM", "target": "dataset:d@1",
                     "properties": {"columns": BIG}}])

    user_error(answer, "properties")
    assert nodes_of(store) == {BUNDLE}
