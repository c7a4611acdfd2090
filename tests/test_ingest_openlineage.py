"""OpenLineage ingest (design §4): the Marquez-compatible routes, the mapping to the graph,
accumulation of a run's events, idempotency, bad input, the real producers' events in
``shared/data/openlineage``, the unmodified openlineage-python client over real HTTP, and
the CLI. Every test taking ``store`` runs on the embedded store and on Neo4j."""

from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from lineagegraph.api.app import create_app
from lineagegraph.api.cli import app as cli_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.registry import history
from lineagegraph.graph.store import REPLACED_BY, Direction, GraphStore
from lineagegraph.graph.walk import walk
from lineagegraph.ingest import deadletter
from lineagegraph.ingest.openlineage import COLLECTION, event_to_batch
from lineagegraph.schema import Edge, Node

from .openlineage_support import (
    PRODUCER,
    T0,
    column_lineage,
    dataset,
    live_server,
    minutes,
    run_event,
    schema_facet,
    shared_events,
)

RUN = "0192f000-0000-7000-8000-000000000001"
RAW = dataset("warehouse", "raw.payments", schema=schema_facet("id", "amount"))
CLEAN = dataset("warehouse", "clean.payments", schema=schema_facet("id", "amount_eur"))

LINEAGE = """
query ($id: ID!, $direction: Direction, $depth: Int) {
  lineage(id: $id, direction: $direction, depth: $depth) {
    nodes { degree node { id kind name version properties } }
    edges { source target type }
  }
}
"""


@pytest.fixture
def client(store: GraphStore) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as test_client:
        yield test_client


def post(client: TestClient, event: Any) -> httpx.Response:
    return client.post("/api/v1/lineage", json=event)


def edges(store: GraphStore, node_id: str) -> set[tuple[str, str, str]]:
    return {hop.edge.key for hop in store.expand([node_id], Direction.BOTH)}


def snapshot(store: GraphStore, start: str, *, created: bool = True,
             ) -> tuple[dict[str, Any], dict[Any, Any]]:
    """Everything reachable from ``start``: node kinds, properties (and creation times),
    edge properties."""
    sub = walk(store, start, Direction.BOTH, 10)
    return ({i: (n.kind, n.properties, n.created_at if created else None)
             for i, n in sub.nodes.items()},
            {k: e.properties for k, e in sub.edges.items()})


def lineage(client: TestClient | httpx.Client, node_id: str, direction: str,
            depth: int = 3) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": LINEAGE, "variables": {
        "id": node_id, "direction": direction, "depth": depth}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]["lineage"]


# -- mapping ----------------------------------------------------------------------------------

def test_a_run_event_is_answered_201_and_maps_job_run_and_dataset_versions(
    client: TestClient, store: GraphStore,
) -> None:
    response = post(client, run_event("COMPLETE", inputs=[RAW], outputs=[CLEAN]))

    assert response.status_code == 201, response.text
    assert response.json()["changed"] is True
    raw_v = f"dataset:warehouse/raw.payments@{RUN}"
    clean_v = f"dataset:warehouse/clean.payments@{RUN}"
    found = store.get([f"run:{RUN}", "job:airflow/daily_etl.load", raw_v, clean_v,
                       "source:warehouse/raw.payments", "source:warehouse/clean.payments"])
    assert {i: n.kind for i, n in found.items()} == {
        f"run:{RUN}": "TrainingRun", "job:airflow/daily_etl.load": "Job",
        raw_v: "DatasetVersion", clean_v: "DatasetVersion",
        "source:warehouse/raw.payments": "DataSource",
        "source:warehouse/clean.payments": "DataSource"}
    assert edges(store, f"run:{RUN}") == {
        (f"run:{RUN}", "RUN_OF", "job:airflow/daily_etl.load"),
        (f"run:{RUN}", "CONSUMED", raw_v),
        (clean_v, "PRODUCED_BY", f"run:{RUN}")}
    assert (clean_v, "VERSION_OF", "source:warehouse/clean.payments") in edges(store, clean_v)
    assert (raw_v, "VERSION_OF", "source:warehouse/raw.payments") in edges(store, raw_v)
    assert found[clean_v].properties["columns"] == [{"name": "id", "type": "STRING"},
                                                     {"name": "amount_eur", "type": "STRING"}]
    assert found[clean_v].created_at == T0


def test_the_mapper_reads_the_graph_but_writes_nothing(store: GraphStore) -> None:
    batch = event_to_batch(run_event(inputs=[RAW], outputs=[CLEAN]), store)

    assert {n.id for n in batch.nodes} >= {f"run:{RUN}", "job:airflow/daily_etl.load"}
    assert store.get([f"run:{RUN}"]) == {}
    assert store.records(COLLECTION) == []


def test_resending_an_event_changes_nothing(client: TestClient, store: GraphStore) -> None:
    event = run_event("COMPLETE", inputs=[RAW], outputs=[CLEAN])
    first = event_to_batch(event, store).write(store)
    before = snapshot(store, f"run:{RUN}")
    audit_before = len(store.audit_log())

    again = event_to_batch(event, store).write(store)
    over_http = post(client, event)

    assert first.changed
    assert not again.changed
    assert (again.nodes.created, again.nodes.updated, again.edges.created, again.edges.updated,
            again.records_added) == (0, 0, 0, 0, 0)
    assert over_http.status_code == 201 and over_http.json()["changed"] is False
    assert snapshot(store, f"run:{RUN}") == before
    assert len(store.records(COLLECTION)) == 1
    assert len(store.audit_log()) == audit_before


def test_events_of_one_run_accumulate_to_the_same_graph_in_any_arrival_order(
    store: GraphStore,
) -> None:
    start = run_event("START", at=minutes(0), inputs=[RAW],
                      run_facets={"nominalTime": {"nominalStartTime": "2026-11-10T02:00:00Z"}})
    running = run_event("RUNNING", at=minutes(3), outputs=[CLEAN],
                        run_facets={"processing_engine": {"name": "spark", "version": "3.5"}})
    done = dict(CLEAN, outputFacets={"outputStatistics": {"rowCount": 42}})
    complete = run_event("COMPLETE", at=minutes(9), inputs=[RAW], outputs=[done])
    outcomes = []
    for order in itertools.permutations([start, running, complete]):
        store.wipe()
        for event in order:
            event_to_batch(event, store).write(store)
        # created_at is the first write's (the store keeps it), so it is the time of the
        # event that arrived first: the one thing arrival order may change.
        first = datetime.fromisoformat(order[0]["eventTime"])
        assert store.get([f"run:{RUN}"])[f"run:{RUN}"].created_at == first
        outcomes.append(snapshot(store, f"run:{RUN}", created=False))

    assert all(outcome == outcomes[0] for outcome in outcomes[1:])
    nodes, _ = outcomes[0]
    run = nodes[f"run:{RUN}"][1]
    assert run["status"] == "COMPLETE"
    assert run["started_at"] == "2026-11-10T02:00:00Z"
    assert run["ended_at"] == "2026-11-10T02:09:00Z"
    assert run["job"] == "job:airflow/daily_etl.load"
    assert run["facets"] == ["nominalTime", "processing_engine"]
    assert run["processing_engine"] == "spark 3.5"
    assert nodes[f"dataset:warehouse/clean.payments@{RUN}"][1]["row_count"] == 42


def test_fail_ends_the_run_and_a_late_running_event_does_not_reopen_it(
    client: TestClient, store: GraphStore,
) -> None:
    post(client, run_event("START", at=minutes(0)))
    post(client, run_event("FAIL", at=minutes(5), run_facets={
        "errorMessage": {"message": "disk full", "programmingLanguage": "python"}}))
    post(client, run_event("RUNNING", at=minutes(7)))  # a skewed clock

    run = store.get([f"run:{RUN}"])[f"run:{RUN}"].properties
    assert (run["status"], run["ended_at"], run["error_message"]) == (
        "FAIL", "2026-11-10T02:05:00Z", "disk full")


def test_column_lineage_becomes_derived_from_edges_with_field_detail(
    client: TestClient, store: GraphStore,
) -> None:
    customers = dataset("warehouse", "customers")
    out = dict(CLEAN, facets={"columnLineage": column_lineage(
        id=[("warehouse", "raw.payments", "id")],
        amount_eur=[("warehouse", "raw.payments", "amount"),
                    ("warehouse", "customers", "currency")])})
    later = dict(CLEAN, facets={"columnLineage": column_lineage(
        id=[("warehouse", "raw.payments", "payment_id")])})
    post(client, run_event("START", inputs=[RAW, customers], outputs=[out]))
    post(client, run_event("COMPLETE", at=minutes(1), inputs=[RAW, customers], outputs=[later]))

    clean_v = f"dataset:warehouse/clean.payments@{RUN}"
    derived = {hop.node.id: hop.edge.properties for hop in store.expand(
        [clean_v], Direction.UPSTREAM, edge_types=["DERIVED_FROM"])}
    identity = [{"subtype": "IDENTITY", "type": "DIRECT"}]
    assert derived == {
        f"dataset:warehouse/raw.payments@{RUN}": {"fields": {
            "amount_eur": [{"field": "amount", "transformations": identity}],
            "id": [{"field": "id", "transformations": identity},
                   {"field": "payment_id", "transformations": identity}]}},
        f"dataset:warehouse/customers@{RUN}": {"fields": {
            "amount_eur": [{"field": "currency", "transformations": identity}]}},
    }


def test_a_later_run_reads_the_version_an_earlier_run_wrote(
    client: TestClient, store: GraphStore,
) -> None:
    writer, reader = "0192f000-0000-7000-8000-00000000000a", "0192f000-0000-7000-8000-00000000000b"
    post(client, run_event("COMPLETE", run_id=writer, at=minutes(0), outputs=[RAW]))
    post(client, run_event("START", run_id=reader, job=("airflow", "clean"), at=minutes(5),
                           inputs=[RAW], outputs=[CLEAN]))
    post(client, run_event("COMPLETE", run_id=reader, job=("airflow", "clean"), at=minutes(6),
                           inputs=[RAW], outputs=[CLEAN]))

    written = f"dataset:warehouse/raw.payments@{writer}"
    assert (f"run:{reader}", "CONSUMED", written) in edges(store, f"run:{reader}")
    assert store.get([f"dataset:warehouse/raw.payments@{reader}"]) == {}
    downstream = walk(store, written, Direction.DOWNSTREAM, 2).nodes
    assert f"dataset:warehouse/clean.payments@{reader}" in downstream


def test_a_reader_passes_over_replaced_placeholders_however_many_are_newer(
    client: TestClient, store: GraphStore,
) -> None:
    """The newest version is read a few at a time (``_nearest_versions``): placeholders
    replaced since, more than one read holds, are passed over to the real version."""
    writer = "0192f000-0000-7000-8000-00000000000a"
    post(client, run_event("COMPLETE", run_id=writer, at=minutes(0), outputs=[RAW]))
    source = "source:warehouse/raw.payments"
    written = f"dataset:warehouse/raw.payments@{writer}"
    placeholders = [f"dataset:warehouse/raw.payments@gone-{i:02d}" for i in range(12)]
    store.upsert([Node.from_id(p, created_at=minutes(1 + i), properties={
                      "archived": True, REPLACED_BY: written})
                  for i, p in enumerate(placeholders)],
                 [Edge(source=p, type="VERSION_OF", target=source) for p in placeholders])
    reader = "0192f000-0000-7000-8000-00000000000b"

    post(client, run_event("COMPLETE", run_id=reader, job=("airflow", "clean"),
                           at=minutes(30), inputs=[RAW], outputs=[CLEAN]))

    assert {key for key in edges(store, f"run:{reader}") if key[1] == "CONSUMED"} == {
        (f"run:{reader}", "CONSUMED", written)}


def test_a_run_that_reads_and_writes_one_dataset_never_reads_its_own_output(
    client: TestClient, store: GraphStore,
) -> None:
    post(client, run_event("START", at=minutes(0), inputs=[RAW], outputs=[RAW]))
    post(client, run_event("COMPLETE", at=minutes(2), inputs=[RAW], outputs=[RAW]))

    assert edges(store, f"run:{RUN}") == {
        (f"run:{RUN}", "RUN_OF", "job:airflow/daily_etl.load"),
        (f"run:{RUN}", "CONSUMED", f"dataset:warehouse/raw.payments@before-{RUN}"),
        (f"dataset:warehouse/raw.payments@{RUN}", "PRODUCED_BY", f"run:{RUN}")}


def test_the_version_facet_names_the_dataset_version(client: TestClient,
                                                     store: GraphStore) -> None:
    read = dict(RAW, facets={"version": {"datasetVersion": "2026-11-14"}})
    wrote = dict(CLEAN, facets={"version": {"datasetVersion": "2026-11-15"}})
    post(client, run_event("COMPLETE", inputs=[read], outputs=[wrote]))

    assert edges(store, f"run:{RUN}") == {
        (f"run:{RUN}", "RUN_OF", "job:airflow/daily_etl.load"),
        (f"run:{RUN}", "CONSUMED", "dataset:warehouse/raw.payments@2026-11-14"),
        ("dataset:warehouse/clean.payments@2026-11-15", "PRODUCED_BY", f"run:{RUN}")}


def test_a_version_named_only_by_the_complete_event_replaces_the_placeholder_in_any_order(
    store: GraphStore,
) -> None:
    # Producers often know an output's version only once written (Delta, Iceberg): START
    # names none, COMPLETE names it. The graph must not keep the made-up one beside it.
    lineage_facet = column_lineage(id=[("warehouse", "raw.payments", "id")])
    start = run_event("START", at=minutes(0), inputs=[RAW], outputs=[
        dict(CLEAN, facets={**CLEAN["facets"], "columnLineage": lineage_facet})])
    running = run_event("RUNNING", at=minutes(3), outputs=[
        dict(CLEAN, outputFacets={"outputStatistics": {"rowCount": 42}})])
    complete = run_event("COMPLETE", at=minutes(9), inputs=[RAW], outputs=[
        dict(CLEAN, facets={**CLEAN["facets"], "version": {"datasetVersion": "2026-11-10"}})])
    named = "dataset:warehouse/clean.payments@2026-11-10"
    made_up = f"dataset:warehouse/clean.payments@{RUN}"
    outcomes = []
    for order in itertools.permutations([start, running, complete]):
        store.wipe()
        for event in order:
            event_to_batch(event, store).write(store)
        outcomes.append((snapshot(store, f"run:{RUN}", created=False),
                         snapshot(store, named, created=False)))
        placeholder = store.get([made_up]).get(made_up)
        if placeholder is not None:  # START or RUNNING came first: replaced, not deleted
            assert placeholder.properties["archived"] is True
            assert placeholder.properties["replaced_by"] == named
        # The version's time is the first event about it, as for any node.
        first = datetime.fromisoformat(order[0]["eventTime"])
        assert store.get([named])[named].created_at == first

    assert all(outcome == outcomes[0] for outcome in outcomes[1:])
    (nodes, _), (_, edge_props) = outcomes[0]
    assert made_up not in nodes
    assert nodes[named][1]["row_count"] == 42
    assert edge_props[(named, "DERIVED_FROM", f"dataset:warehouse/raw.payments@{RUN}")] == {
        "fields": {"id": [{"field": "id",
                           "transformations": [{"subtype": "IDENTITY", "type": "DIRECT"}]}]}}
    assert (named, "PRODUCED_BY", f"run:{RUN}") in edges(store, f"run:{RUN}")


def test_a_run_that_read_the_placeholder_follows_it_to_the_named_version(
    client: TestClient, store: GraphStore,
) -> None:
    reader = "0192f000-0000-7000-8000-00000000000b"
    post(client, run_event("START", at=minutes(0), outputs=[RAW]))
    post(client, run_event("COMPLETE", run_id=reader, job=("airflow", "clean"), at=minutes(5),
                           inputs=[RAW], outputs=[CLEAN]))
    post(client, run_event("COMPLETE", at=minutes(1), outputs=[
        dict(RAW, facets={**RAW["facets"], "version": {"datasetVersion": "7"}})]))

    named = "dataset:warehouse/raw.payments@7"
    assert (f"run:{reader}", "CONSUMED", named) in edges(store, f"run:{reader}")
    found = lineage(client, named, "DOWNSTREAM", 2)
    assert {n["node"]["id"] for n in found["nodes"]} == {
        named, f"run:{reader}", f"dataset:warehouse/clean.payments@{reader}"}
    upstream = lineage(client, f"run:{reader}", "UPSTREAM", 1)
    assert f"dataset:warehouse/raw.payments@{RUN}" not in {
        n["node"]["id"] for n in upstream["nodes"]}
    placeholder = f"dataset:warehouse/raw.payments@{RUN}"
    assert [(e.action, e.after) for e in store.audit_log(target=placeholder)] == [
        ("ingest.openlineage.replace", {"replaced_by": named})]
    versions = history(store, "source:warehouse/raw.payments")
    assert versions is not None and [v.id for v in versions.versions] == [named]
    # Never walked, even by a walk that shows what retention archived (a trace does).
    seen = walk(store, f"run:{reader}", Direction.UPSTREAM, 3, include_archived=True).nodes
    assert placeholder not in seen and named in seen


def test_a_reader_that_arrives_before_its_writer_reads_the_writers_version(
    store: GraphStore,
) -> None:
    writer, reader = "0192f000-0000-7000-8000-00000000000a", "0192f000-0000-7000-8000-00000000000b"
    write = run_event("COMPLETE", run_id=writer, at=minutes(0), outputs=[RAW])
    read = [run_event(kind, run_id=reader, job=("airflow", "clean"), at=minutes(m),
                      inputs=[RAW], outputs=[CLEAN]) for kind, m in (("START", 5),
                                                                     ("COMPLETE", 6))]
    snapshots = []
    for order in ([write, *read], [*read, write], [read[0], write, read[1]]):
        store.wipe()
        for event in order:
            event_to_batch(event, store).write(store)
        assert (f"run:{reader}", "CONSUMED", f"dataset:warehouse/raw.payments@{writer}") in \
            edges(store, f"run:{reader}")
        snapshots.append(snapshot(store, f"run:{reader}", created=False))
    assert snapshots[1] == snapshots[0] and snapshots[2] == snapshots[0]



@pytest.mark.parametrize("with_writer", [False, True])
def test_readers_of_one_dataset_share_what_they_read_in_any_arrival_order(
    store: GraphStore, with_writer: bool,
) -> None:
    # Two runs read raw.payments, which no run wrote (an external source) or one wrote
    # before both read it: what they read is one version, whichever event arrives first.
    first, second, writer = ("0192f000-0000-7000-8000-0000000000a1",
                             "0192f000-0000-7000-8000-0000000000a2",
                             "0192f000-0000-7000-8000-0000000000a0")
    events = [run_event("COMPLETE", run_id=run, job=("airflow", f"read-{i}"), at=minutes(m),
                        inputs=[RAW]) for i, (run, m) in enumerate(((first, 5), (second, 8)))]
    if with_writer:
        events.append(run_event("COMPLETE", run_id=writer, at=minutes(0), outputs=[RAW]))
    read = f"dataset:warehouse/raw.payments@{writer if with_writer else first}"
    snapshots = []
    for order in itertools.permutations(events):
        store.wipe()
        for event in order:
            event_to_batch(event, store).write(store)
        for run in (first, second):
            assert (f"run:{run}", "CONSUMED", read) in edges(store, f"run:{run}"), order
        snapshots.append(snapshot(store, "source:warehouse/raw.payments", created=False))
    assert all(one == snapshots[0] for one in snapshots[1:])

def test_a_writer_later_than_the_read_does_not_take_the_readers_placeholder(
    client: TestClient, store: GraphStore,
) -> None:
    writer, reader = "0192f000-0000-7000-8000-00000000000a", "0192f000-0000-7000-8000-00000000000b"
    post(client, run_event("COMPLETE", run_id=reader, job=("airflow", "clean"), at=minutes(5),
                           inputs=[RAW], outputs=[CLEAN]))
    post(client, run_event("COMPLETE", run_id=writer, at=minutes(10), outputs=[RAW]))

    read = f"dataset:warehouse/raw.payments@{reader}"
    assert (f"run:{reader}", "CONSUMED", read) in edges(store, f"run:{reader}")
    assert not store.get([read])[read].properties.get("archived")


def test_a_model_version_named_only_by_the_complete_event_replaces_the_placeholder(
    client: TestClient, store: GraphStore,
) -> None:
    model = dataset("mlflow", "fraud-detector", datasetType={"datasetType": "MODEL"})
    post(client, run_event("START", at=minutes(0), inputs=[RAW], outputs=[model]))
    post(client, run_event("COMPLETE", at=minutes(4), inputs=[RAW], outputs=[
        dict(model, facets={**model["facets"], "version": {"datasetVersion": "8"}})]))
    post(client, run_event("RUNNING", at=minutes(2), outputs=[model]))  # late, no version

    made_up = f"model:fraud-detector@{RUN}"
    assert store.get([made_up])[made_up].properties["replaced_by"] == "model:fraud-detector@8"
    found = lineage(client, "model:fraud-detector", "DOWNSTREAM", 1)
    assert {n["node"]["id"] for n in found["nodes"]} == {
        "model:fraud-detector", "model:fraud-detector@8"}
    assert store.get(["model:fraud-detector@8"])["model:fraud-detector@8"].created_at == T0


def test_an_output_typed_as_a_model_becomes_a_model_version(client: TestClient,
                                                            store: GraphStore) -> None:
    def model(version: str) -> dict[str, Any]:
        return dataset("mlflow", "fraud-detector", datasetType={"datasetType": "MODEL"},
                       version={"datasetVersion": version})

    post(client, run_event("COMPLETE", run_id="0192f000-0000-7000-8000-0000000000f1",
                           inputs=[RAW], outputs=[model("v6")]))
    post(client, run_event("COMPLETE", inputs=[RAW, model("6")], outputs=[model("7")]))

    found = store.get(["model:fraud-detector@7", "model:fraud-detector"])
    assert {i: n.kind for i, n in found.items()} == {
        "model:fraud-detector@7": "ModelVersion", "model:fraud-detector": "Model"}
    assert edges(store, "model:fraud-detector@7") == {
        ("model:fraud-detector@7", "PRODUCED_BY", f"run:{RUN}"),
        ("model:fraud-detector@7", "VERSION_OF", "model:fraud-detector"),
        ("model:fraud-detector@7", "FINE_TUNED_FROM", "model:fraud-detector@6")}
    assert store.get(["dataset:mlflow/fraud-detector@7"]) == {}
    assert store.get([f"run:{RUN}"])[f"run:{RUN}"].properties["model_inputs"] == [
        "model:fraud-detector@6"]
    # Neither run named the version of raw.payments it read: the second reads the one the
    # graph knows (the first run's read), so both models trace back to the same data.
    upstream = walk(store, "model:fraud-detector@7", Direction.UPSTREAM, 3).nodes
    assert "dataset:warehouse/raw.payments@0192f000-0000-7000-8000-0000000000f1" in upstream


def test_names_with_colons_slashes_and_at_signs_keep_their_ids(client: TestClient,
                                                               store: GraphStore) -> None:
    odd = dataset("postgres://etl@wh:5432", "public.events@eu")
    response = post(client, run_event("COMPLETE", run_id="run:7@2", job=("sched:x", "a/b@c"),
                                      outputs=[odd]))

    assert response.status_code == 201, response.text
    version_id = "dataset:postgres://etl@wh:5432/public.events@eu@run:7%402"
    assert edges(store, "run:run:7@2") == {
        ("run:run:7@2", "RUN_OF", "job:sched:x/a/b@c"),
        (version_id, "PRODUCED_BY", "run:run:7@2")}
    assert store.get([version_id])[version_id].name == "postgres://etl@wh:5432/public.events@eu"


def test_dataset_and_job_events_are_accepted(client: TestClient, store: GraphStore) -> None:
    base = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/"
    dataset_event = {"eventTime": "2026-11-10T02:00:00Z", "producer": PRODUCER,
                     "schemaURL": base + "DatasetEvent",
                     "dataset": dataset("warehouse", "raw.payments", dataSource={
                         "name": "wh", "uri": "postgres://wh:5432/db"})}
    job_event = {"eventTime": "2026-11-10T02:00:00Z", "producer": PRODUCER,
                 "schemaURL": base + "JobEvent",
                 "job": {"namespace": "airflow", "name": "clean", "facets": {
                     "sql": {"query": "SELECT 1"}}},
                 "inputs": [RAW], "outputs": [CLEAN]}

    assert post(client, dataset_event).status_code == 201
    assert post(client, job_event).status_code == 201
    found = store.get(["source:warehouse/raw.payments", "job:airflow/clean"])
    assert found["source:warehouse/raw.payments"].properties["uri"] == "postgres://wh:5432/db"
    assert found["job:airflow/clean"].properties["sql"] == "SELECT 1"
    assert found["job:airflow/clean"].properties["outputs"] == [
        "source:warehouse/clean.payments"]


def test_the_latest_dataset_event_sets_the_dataset_metadata_whatever_the_arrival_order(
    client: TestClient, store: GraphStore,
) -> None:
    base = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/"

    def event(day: int, owner: str) -> dict[str, object]:
        return {"eventTime": f"2026-11-{day}T02:00:00Z", "producer": PRODUCER,
                "schemaURL": base + "DatasetEvent",
                "dataset": dataset("warehouse", "raw.payments", ownership={
                    "owners": [{"name": owner}]}, documentation={"description": owner})}

    for day, owner in ((11, "team:b"), (12, "team:c"), (10, "team:a")):
        assert post(client, event(day, owner)).status_code == 201

    source = store.get(["source:warehouse/raw.payments"])["source:warehouse/raw.payments"]
    assert (source.properties["owner"], source.properties["description"]) == (
        "team:c", "team:c")


# -- leniency and bad input -------------------------------------------------------------------

def test_events_without_schema_url_event_type_or_zone_are_accepted(
    client: TestClient, store: GraphStore,
) -> None:
    event = run_event(None, outputs=[CLEAN])
    del event["schemaURL"]
    event["eventTime"] = "2026-11-10T02:00:00.250"  # no zone: UTC, as Marquez reads it

    assert post(client, event).status_code == 201, post(client, event).text
    run = store.get([f"run:{RUN}"])[f"run:{RUN}"]
    assert run.created_at.isoformat() == "2026-11-10T02:00:00.250000+00:00"
    assert "status" not in run.properties


def test_facets_of_unexpected_shapes_and_null_lists_do_not_break_ingest(
    client: TestClient, store: GraphStore,
) -> None:
    odd = {"namespace": "warehouse", "name": "clean.payments", "outputFacets": None, "facets": {
        "columnLineage": {"fields": {"id": {"inputFields": [{"name": "no-namespace"}, 7]}}},
        "schema": {"fields": "not a list"}, "datasetType": {"datasetType": 5},
        "version": {"datasetVersion": ["x"]}, "dataSource": {"uri": 42}}}
    event = run_event("COMPLETE", outputs=[odd])
    event["inputs"], event["run"]["facets"] = None, None

    response = post(client, event)

    assert response.status_code == 201, response.text
    assert edges(store, f"run:{RUN}") == {
        (f"run:{RUN}", "RUN_OF", "job:airflow/daily_etl.load"),
        (f"dataset:warehouse/clean.payments@{RUN}", "PRODUCED_BY", f"run:{RUN}")}


def _without(path: str) -> dict[str, Any]:
    event = run_event(inputs=[RAW])
    *parents, last = path.split(".")
    target: Any = event
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    del target[last]
    return event


@pytest.mark.parametrize(("event", "fields"), [
    pytest.param(_without("run.runId"), ["run.runId"], id="no-runId"),
    pytest.param(_without("run"), ["run.runId"], id="no-run"),
    pytest.param(_without("job.name"), ["job.name"], id="no-job-name"),
    pytest.param(_without("job"), ["job.namespace", "job.name"], id="no-job"),
    pytest.param(_without("eventTime"), ["eventTime"], id="no-eventTime"),
    pytest.param(dict(run_event(), eventTime="yesterday"), ["eventTime"], id="bad-eventTime"),
    pytest.param(dict(run_event(), eventType="DONE"), ["eventType"], id="bad-eventType"),
    pytest.param(_without("inputs.0.name"), ["inputs[0].name"], id="input-without-name"),
    pytest.param(dict(run_event(), run={"runId": 7}), ["run.runId"], id="numeric-runId"),
    pytest.param([run_event()], [None], id="array-to-single-endpoint"),
])
def test_a_bad_event_is_400_naming_the_field_and_writes_no_graph(
    client: TestClient, store: GraphStore, event: Any, fields: list[str | None],
) -> None:
    response = post(client, event)

    assert response.status_code == 400, response.text
    assert [p.get("field") for p in response.json()["problems"]] == fields
    assert store.find(first=10) == []
    assert store.records(COLLECTION) == []


def test_a_rejected_event_is_dead_lettered_with_its_reason(client: TestClient,
                                                           store: GraphStore) -> None:
    post(client, _without("run.runId"))

    (letter,) = deadletter.pending(store)
    assert letter.payload["source"] == "openlineage"
    assert letter.payload["problems"][0]["field"] == "run.runId"


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"eventTime": ', "é".encode("latin-1")])
def test_malformed_json_is_400_not_500(client: TestClient, body: bytes) -> None:
    response = client.post("/api/v1/lineage", content=body,
                           headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert "malformed JSON" in response.json()["problems"][0]["message"]


def test_a_gzip_body_is_accepted_and_a_broken_one_is_400(client: TestClient,
                                                         store: GraphStore) -> None:
    packed = gzip.compress(json.dumps(run_event(outputs=[CLEAN])).encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}

    good = client.post("/api/v1/lineage", content=packed, headers=headers)
    broken = client.post("/api/v1/lineage", content=packed[:20], headers=headers)
    plain = client.post("/api/v1/lineage", content=b"{}", headers=headers)

    assert good.status_code == 201, good.text
    assert f"run:{RUN}" in store.get([f"run:{RUN}"])
    assert (broken.status_code, plain.status_code) == (400, 400)


# -- batch endpoint ---------------------------------------------------------------------------

def test_a_batch_of_good_events_answers_204(client: TestClient, store: GraphStore) -> None:
    events = [run_event("START", inputs=[RAW]), run_event("COMPLETE", at=minutes(1),
                                                          outputs=[CLEAN])]
    response = client.post("/api/v1/lineage/batch", json=events)

    assert response.status_code == 204
    assert store.get([f"run:{RUN}"])[f"run:{RUN}"].properties["status"] == "COMPLETE"



def test_a_batch_is_mapped_in_event_time_order_so_a_reader_listed_first_reads_its_writer(
    client: TestClient, store: GraphStore,
) -> None:
    writer, reader = "0192f000-0000-7000-8000-00000000000a", "0192f000-0000-7000-8000-00000000000b"
    events = [run_event("COMPLETE", run_id=reader, job=("airflow", "clean"), at=minutes(6),
                        inputs=[RAW], outputs=[CLEAN]),
              {"eventTime": "not a time"},
              run_event("COMPLETE", run_id=writer, at=minutes(0), outputs=[RAW])]
    response = client.post("/api/v1/lineage/batch", json=events)

    assert response.status_code == 200, response.text
    assert [f["index"] for f in response.json()["failedEvents"]] == [1], response.text
    assert (f"run:{reader}", "CONSUMED", f"dataset:warehouse/raw.payments@{writer}") in edges(
        store, f"run:{reader}")
    assert store.get([f"dataset:warehouse/raw.payments@{reader}"]) == {}  # none made up

def test_a_batch_with_bad_items_writes_the_rest_and_names_each_failure(
    client: TestClient, store: GraphStore,
) -> None:
    events = [run_event("START", inputs=[RAW]), _without("job.name"), "not an event",
              run_event("COMPLETE", at=minutes(1), outputs=[CLEAN])]
    response = client.post("/api/v1/lineage/batch", json=events)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "partial_success"
    assert body["summary"] == {"received": 4, "successful": 2, "failed": 2}
    assert [(f["index"], [p.get("field") for p in f["problems"]])
            for f in body["failedEvents"]] == [(1, ["job.name"]), (2, [None])]
    assert "job.name" in body["failedEvents"][0]["reason"]
    assert store.get([f"run:{RUN}"])[f"run:{RUN}"].properties["status"] == "COMPLETE"
    assert len(deadletter.pending(store)) == 2


def test_a_batch_body_that_is_not_an_array_is_400(client: TestClient) -> None:
    assert client.post("/api/v1/lineage/batch", json=run_event()).status_code == 400


def test_dead_lettered_events_replay_through_the_registered_mapper(store: GraphStore) -> None:
    from lineagegraph.ingest.batch import Problem

    good, bad = run_event("COMPLETE", outputs=[CLEAN]), _without("run.runId")
    store.upsert(records=[deadletter.dead_letter("openlineage", good, [Problem("was down")]),
                          deadletter.dead_letter("openlineage", bad, [Problem("no runId")])])

    result = deadletter.replay(store)

    assert len(result.replayed) == 1
    assert "run.runId" in next(iter(result.still_failing.values()))
    assert store.get([f"run:{RUN}"])[f"run:{RUN}"].properties["status"] == "COMPLETE"


# -- listing kept events ----------------------------------------------------------------------

def test_kept_events_are_listed_in_keyset_pages_and_filtered_by_run(
    client: TestClient,
) -> None:
    other = "0192f000-0000-7000-8000-0000000000ff"
    sent = [run_event("START", at=minutes(0)), run_event("START", run_id=other, at=minutes(1)),
            run_event("RUNNING", at=minutes(2)), run_event("COMPLETE", at=minutes(3))]
    for event in sent:
        assert post(client, event).status_code == 201

    page1 = client.get("/api/v1/events/lineage", params={"limit": 3}).json()
    page2 = client.get("/api/v1/events/lineage",
                       params={"limit": 3, "cursor": page1["nextCursor"]}).json()
    by_run = client.get("/api/v1/events/lineage", params={"runId": RUN, "limit": 2}).json()
    by_run_rest = client.get("/api/v1/events/lineage", params={
        "runId": RUN, "cursor": by_run["nextCursor"]}).json()
    windowed = client.get("/api/v1/events/lineage", params={
        "after": "2026-11-10T02:01:00Z", "before": "2026-11-10T02:02:00Z"}).json()

    assert page1["events"] + page2["events"] == sent
    assert page2["nextCursor"] is None
    assert [e["eventType"] for e in by_run["events"] + by_run_rest["events"]] == [
        "START", "RUNNING", "COMPLETE"]
    assert windowed["events"] == sent[1:3]
    assert client.get("/api/v1/events/lineage", params={"cursor": "x"}).status_code == 400
    # A window ending before it starts is refused naming `before`, as GraphQL's are.
    inverted = client.get("/api/v1/events/lineage", params={
        "after": "2026-11-10T02:02:00Z", "before": "2026-11-10T02:01:00Z"})
    assert inverted.status_code == 400
    assert inverted.json()["problems"][0]["field"] == "before"


def test_kept_events_pages_hold_at_most_8_mi_characters_and_at_least_one_event(
    client: TestClient,
) -> None:
    # A Spark event's logical plan facet can run to megabytes.
    plan = {"_producer": "https://example.com/spark", "_schemaURL": "https://example.com/plan",
            "plan": "x" * 3_000_000}
    sent = [run_event(kind, at=minutes(i), run_facets={"spark.logicalPlan": plan})
            for i, kind in enumerate(["START", "RUNNING", "COMPLETE"])]
    for event in sent:
        assert post(client, event).status_code == 201

    page1 = client.get("/api/v1/events/lineage", params={"limit": 1000}).json()
    page2 = client.get("/api/v1/events/lineage",
                       params={"limit": 1000, "cursor": page1["nextCursor"]}).json()

    assert [e["eventType"] for e in page1["events"]] == ["START", "RUNNING"]
    assert page2["events"] == sent[2:] and page2["nextCursor"] is None


# -- the real producers' events ---------------------------------------------------------------

def test_every_shared_event_is_accepted_and_each_output_is_downstream_of_each_input(
    client: TestClient, store: GraphStore,
) -> None:
    events = shared_events()
    answers = {name: post(client, event) for name, event in events}

    assert {name: r.status_code for name, r in answers.items() if r.status_code != 201} == {}
    # simple_run_event's runId "run_id" is no UUID: it is kept as an opaque ID.
    assert "run:run_id" in store.get(["run:run_id"])
    missing = []
    for name, event in events:
        if not (event.get("inputs") and event.get("outputs")):
            continue
        for source in event["inputs"]:
            reached = {n["node"]["name"] for n in lineage(
                client, f"source:{source['namespace']}/{source['name']}", "DOWNSTREAM")["nodes"]
                if n["node"]["kind"] == "DatasetVersion"}
            missing += [(name, source["name"], out["name"]) for out in event["outputs"]
                        if f"{out['namespace']}/{out['name']}" not in reached]
    assert missing == []
    assert all(post(client, event).json()["changed"] is False for _, event in events)


def test_missing_shared_data_fails_with_a_message_instead_of_skipping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LINEAGEGRAPH_SHARED_DIR", str(tmp_path))

    with pytest.raises(pytest.fail.Exception, match="LINEAGEGRAPH_SHARED_DIR"):
        shared_events()


def test_the_marquez_seed_array_loads_through_the_batch_endpoint(
    client: TestClient, store: GraphStore,
) -> None:
    seed = [event for name, event in shared_events() if name.startswith("marquez")]

    response = client.post("/api/v1/lineage/batch", json=seed)

    assert response.status_code == 204, response.text
    assert len(store.find(kinds=["Job"], first=100)) == 13
    runs = store.find(kinds=["TrainingRun"], first=100)
    assert len(runs) == 13 and {r.properties["status"] for r in runs} == {"COMPLETE"}
    # Four jobs downstream of orders: what is reached is the final table's *version* (a
    # data source is upstream of its versions, not downstream of what wrote them).
    downstream = walk(store, "source:food_delivery/public.orders", Direction.DOWNSTREAM, 12)
    assert "source:food_delivery/public.popular_orders_day_of_week" not in downstream.nodes
    assert any(n.name == "food_delivery/public.popular_orders_day_of_week"
               for n in downstream.nodes.values())


def test_the_unmodified_openlineage_client_posts_over_http_and_graphql_finds_the_lineage(
    store: GraphStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from openlineage.client import OpenLineageClient
    from openlineage.client.event_v2 import (
        InputDataset,
        Job,
        OutputDataset,
        Run,
        RunEvent,
        RunState,
    )
    from openlineage.client.facet_v2 import schema_dataset
    from openlineage.client.transport.http import HttpCompression, HttpConfig, HttpTransport

    monkeypatch.delenv("OPENLINEAGE_DISABLED", raising=False)
    schema = schema_dataset.SchemaDatasetFacet(fields=[
        schema_dataset.SchemaDatasetFacetFields(name="id", type="BIGINT")])

    def event(state: RunState, minute: int) -> RunEvent:
        return RunEvent(eventType=state, eventTime=minutes(minute).isoformat(), producer=PRODUCER,
                        run=Run(runId=RUN), job=Job(namespace="airflow", name="daily_etl.load"),
                        inputs=[InputDataset(namespace="warehouse", name="raw.payments")],
                        outputs=[OutputDataset(namespace="warehouse", name="clean.payments",
                                               facets={"schema": schema})])

    app = create_app(Settings(neo4j_uri=None), store=store)
    with live_server(app) as url:
        plain = OpenLineageClient(transport=HttpTransport(HttpConfig(url=url)))
        gzipped = OpenLineageClient(transport=HttpTransport(HttpConfig(
            url=url, compression=HttpCompression.GZIP)))
        plain.emit(event(RunState.START, 0))
        gzipped.emit(event(RunState.COMPLETE, 4))
        with httpx.Client(base_url=url) as http:
            around_run = lineage(http, f"run:{RUN}", "BOTH")
            from_source = lineage(http, "source:warehouse/raw.payments", "DOWNSTREAM")

    ids = {n["node"]["id"]: n["node"] for n in around_run["nodes"]}
    assert ids[f"run:{RUN}"]["properties"]["status"] == "COMPLETE"
    assert {"job:airflow/daily_etl.load", f"dataset:warehouse/raw.payments@{RUN}",
            "source:warehouse/raw.payments", f"dataset:warehouse/clean.payments@{RUN}"} <= set(ids)
    assert {"source": f"dataset:warehouse/clean.payments@{RUN}", "target": f"run:{RUN}",
            "type": "PRODUCED_BY"} in around_run["edges"]
    assert f"dataset:warehouse/clean.payments@{RUN}" in {
        n["node"]["id"] for n in from_source["nodes"]}


# -- CLI --------------------------------------------------------------------------------------

def test_the_cli_loads_a_single_event_an_array_and_ndjson_and_dead_letters_bad_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NEO4J_URI", raising=False)  # --db: the embedded store, even in CI
    other = "0192f000-0000-7000-8000-0000000000ee"
    single = tmp_path / "one.json"
    single.write_text(json.dumps(run_event("START", inputs=[RAW])))
    array = tmp_path / "many.json"
    array.write_text(json.dumps([run_event("COMPLETE", at=minutes(2), outputs=[CLEAN]),
                                 run_event("START", run_id=other, at=minutes(5),
                                           inputs=[CLEAN])]))
    lines = tmp_path / "events.ndjson"
    lines.write_text("\n".join([json.dumps(run_event("COMPLETE", run_id=other, at=minutes(6))),
                                "{broken", json.dumps(_without("job.namespace")), ""]))
    db = tmp_path / "cli.db"

    result = CliRunner().invoke(cli_app, ["ingest", "openlineage", str(single), str(array),
                                          str(lines), "--db", str(db)])

    assert result.exit_code == 1, result.output
    assert "2 of 6 event(s) rejected" in result.output
    store = EmbeddedStore(db)
    try:
        runs = {n.id: n.properties["status"] for n in store.find(kinds=["TrainingRun"])}
        assert runs == {f"run:{RUN}": "COMPLETE", f"run:{other}": "COMPLETE"}
        assert (f"run:{other}", "CONSUMED", f"dataset:warehouse/clean.payments@{RUN}") in edges(
            store, f"run:{other}")
        reasons = sorted(letter.payload["reason"] for letter in deadletter.pending(store))
        assert reasons[0].startswith("record events.ndjson:2") and "malformed JSON" in reasons[0]
        assert "events.ndjson:3" in reasons[1] and "job.namespace" in reasons[1]
    finally:
        store.close()


def test_the_cli_maps_the_events_of_all_its_files_in_event_time_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NEO4J_URI", raising=False)  # --db: the embedded store, even in CI
    writer, reader = "0192f000-0000-7000-8000-00000000000a", "0192f000-0000-7000-8000-00000000000b"
    read = tmp_path / "a-reader.json"
    read.write_text(json.dumps(run_event("COMPLETE", run_id=reader, job=("airflow", "clean"),
                                         at=minutes(6), inputs=[RAW], outputs=[CLEAN])))
    wrote = tmp_path / "b-writer.json"
    wrote.write_text(json.dumps(run_event("COMPLETE", run_id=writer, at=minutes(0),
                                          outputs=[RAW])))
    db = tmp_path / "cli.db"

    result = CliRunner().invoke(cli_app, ["ingest", "openlineage", str(read), str(wrote),
                                          "--db", str(db)])

    assert result.exit_code == 0, result.output
    store = EmbeddedStore(db)
    try:
        assert (f"run:{reader}", "CONSUMED", f"dataset:warehouse/raw.payments@{writer}") in \
            edges(store, f"run:{reader}")
        assert store.get([f"dataset:warehouse/raw.payments@{reader}"]) == {}
    finally:
        store.close()
