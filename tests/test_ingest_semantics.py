"""What an ingest means, whichever way it arrives: defaulted manifest versions under
concurrent loads, one approval per approver and gate on both write paths, JSON-array outcome
files and malformed multi-line OpenLineage files on the CLI, outcomes naming a model family."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lineagegraph.graph.governance import approve
from lineagegraph.graph.store import Direction, GraphStore
from lineagegraph.ingest import deadletter, outcomes
from lineagegraph.ingest.batch import Batch, IngestError
from lineagegraph.ingest.manifest_formats import read_directory, read_yaml
from lineagegraph.ingest.manifests import (
    VersionConflict,
    load_manifests,
    map_manifests,
)
from lineagegraph.ingest.openlineage import read_events
from lineagegraph.schema import Node

from .ingest_support import MANIFESTS, cli_args, client_for, run_cli
from .openlineage_support import run_event

T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)


# -- manifests: a defaulted version under concurrent loads -------------------------------------


def toolset(tool: str, version: int | None = None) -> str:
    return f"kind: Toolset\nname: t\ntools: [{tool}]\n" + (
        f"version: {version}\n" if version is not None else "")


def write_manifest(store: GraphStore, text: str) -> None:
    """A load as another process makes it, beside this one (no process-local lock)."""
    map_manifests(read_yaml(text), store, actor="other").write(store)


def tools_by_version(store: GraphStore) -> dict[str, list[str]]:
    return {n.version or "": n.properties["tools"]
            for n in store.versions("Toolset", "t", last=100)}


def supersedes(store: GraphStore) -> dict[str, str]:
    ids = [n.id for n in store.versions("Toolset", "t", last=100)]
    return {h.origin: h.node.id for h in store.expand(ids, Direction.UPSTREAM,
                                                        edge_types=["SUPERSEDES"])}


def another_load_first(store: GraphStore, *texts: str,
                       ) -> Callable[[Batch, Mapping[str, Node]], None]:
    """A ``check`` that writes the next of ``texts`` each time this load has been mapped and
    is about to be written: another process won the race for the version it chose."""
    queue = list(texts)

    def check(_: Batch, __: Mapping[str, Node]) -> None:
        if queue:
            write_manifest(store, queue.pop(0))

    return check


def test_a_defaulted_version_another_load_took_meanwhile_becomes_the_next_one(
    store: GraphStore,
) -> None:
    write_manifest(store, toolset("v1", version=1))

    load_manifests(read_yaml(toolset("a")), store, actor="test",
                   check=another_load_first(store, toolset("b")))

    assert tools_by_version(store) == {"1": ["v1"], "2": ["b"], "3": ["a"]}
    assert supersedes(store) == {"tools:t@2": "tools:t@1", "tools:t@3": "tools:t@2"}


def test_a_load_saying_what_another_load_wrote_meanwhile_is_a_re_send(
    store: GraphStore,
) -> None:
    write_manifest(store, toolset("v1", version=1))

    load_manifests(read_yaml(toolset("x")), store, actor="test",
                   check=another_load_first(store, toolset("x")))

    assert tools_by_version(store) == {"1": ["v1"], "2": ["x"]}


def _load_in_another_process(db: str | None, neo4j_uri: str | None, tools: list[str],
                             start: Any) -> None:
    from lineagegraph.api.settings import Settings

    store = Settings.for_cli(db, neo4j_uri).open_store()
    try:
        start.wait(60)  # every process ready: their loads overlap
        for tool in tools:
            for _ in range(5):  # refused after losing every try: sent again, as it says
                try:
                    load_manifests(read_yaml(toolset(tool)), store, actor=f"p{os.getpid()}",
                                   source="test")
                    break
                except VersionConflict:
                    continue
            else:
                raise AssertionError(f"{tool} was refused five times")
    finally:
        store.close()


def test_processes_loading_defaulted_versions_at_once_keep_every_document(
    store: GraphStore, request: pytest.FixtureRequest,
) -> None:
    write_manifest(store, toolset("v1", version=1))
    db = getattr(store, "path", None) if store.name == "embedded" else None
    uri = request.getfixturevalue("neo4j_uri") if store.name != "embedded" else None
    work = [[f"p{p}-{n}" for n in range(8)] for p in range(4)]
    last = 1 + sum(len(tools) for tools in work)

    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(work))
    processes = [context.Process(target=_load_in_another_process, args=(db, uri, tools, start))
                 for tools in work]
    for process in processes:
        process.start()
    for process in processes:
        process.join(180)
    assert [p.exitcode for p in processes] == [0] * len(processes)

    found = tools_by_version(store)
    assert sorted(found) == sorted(str(v) for v in range(1, last + 1))
    assert sorted(tools[0] for tools in found.values()) == sorted(
        ["v1", *(tool for tools in work for tool in tools)])
    assert supersedes(store) == {f"tools:t@{v}": f"tools:t@{v - 1}" for v in range(2, last + 1)}


def test_rest_loads_sent_at_once_keep_every_document(store: GraphStore) -> None:
    write_manifest(store, toolset("v1", version=1))
    tools = [f"rest-{n}" for n in range(12)]

    with client_for(store) as client, ThreadPoolExecutor(len(tools)) as pool:
        responses = list(pool.map(lambda tool: client.post(
            "/api/v1/manifests", content=toolset(tool),
            headers={"content-type": "application/yaml"}), tools))

    assert [r.status_code for r in responses] == [200] * len(tools), responses[0].text
    assert sorted(t[0] for t in tools_by_version(store).values()) == sorted(["v1", *tools])


# -- approvals: one per approver and gate, whichever path writes it ----------------------------

BUNDLE = """\
name: b
version: 1
model: gpt-5-mini-2026-08
approved_by: dave
"""
GATED = """\
kind: Approval
target: bundle:b@1
gate: security
approved_by: carol
"""


def approvals_of(store: GraphStore, target: str) -> set[str]:
    return {h.node.id for h in store.expand([target], Direction.DOWNSTREAM,
                                            edge_types=["APPROVES"])}


def test_a_manifest_approval_with_a_gate_is_the_one_approve_records(store: GraphStore) -> None:
    write_manifest(store, BUNDLE)
    write_manifest(store, GATED)

    recorded = approve(store, "bundle:b@1", "carol", gate="security")

    assert recorded.id == "approval:bundle:b@1/carol/security"
    assert approvals_of(store, "bundle:b@1") == {recorded.id, "approval:bundle:b@1/dave"}


def test_an_approval_documents_at_is_its_time_which_a_trace_reads(store: GraphStore) -> None:
    # design §4: `at` is when it was given. It was kept as a property only and the node
    # dated at load time, so a trace of a request served after `at` left the approval out.
    from lineagegraph.graph.registry import annotations

    write_manifest(store, BUNDLE)
    write_manifest(store, GATED + "at: 2026-11-02T00:00:00Z\n")

    approval_id = "approval:bundle:b@1/carol/security"
    approval = store.get([approval_id])[approval_id]
    assert approval.created_at == datetime(2026, 11, 2, tzinfo=UTC)
    given = annotations(store, "bundle:b@1", until=datetime(2026, 11, 4, tzinfo=UTC)).approvals
    assert approval.id in {a.id for a in given}


@pytest.mark.parametrize(("extra", "field"), [
    ("at: 2099-01-01T00:00:00Z\n", "at"),
    ("at: 2026-11-02T00:00:00Z\ncreated_at: 2026-11-03T00:00:00Z\n", None),
])
def test_an_approval_dated_in_the_future_or_twice_is_refused(
    store: GraphStore, extra: str, field: str | None,
) -> None:
    write_manifest(store, BUNDLE)

    with pytest.raises(IngestError) as refused:
        write_manifest(store, GATED + extra)

    assert [p.field for p in refused.value.problems] == [field]
    assert "approval:bundle:b@1/carol/security" not in store.get(
        ["approval:bundle:b@1/carol/security"])


def test_approve_then_the_same_sign_off_in_a_manifest_is_one_approval(
    store: GraphStore,
) -> None:
    write_manifest(store, BUNDLE)
    recorded = approve(store, "bundle:b@1", "carol", gate="security")

    write_manifest(store, GATED)

    assert approvals_of(store, "bundle:b@1") == {recorded.id, "approval:bundle:b@1/dave"}


def test_a_bundle_entry_approver_is_the_approval_approve_records(store: GraphStore) -> None:
    write_manifest(store, BUNDLE)

    assert approve(store, "bundle:b@1", "dave").id == "approval:bundle:b@1/dave"
    assert approvals_of(store, "bundle:b@1") == {"approval:bundle:b@1/dave"}


# -- outcomes: a JSON-array file on the CLI ----------------------------------------------------


@pytest.fixture
def registry(store: GraphStore) -> GraphStore:
    map_manifests(read_directory(MANIFESTS), store, actor="test").write(store)
    return store


def outcome(request_id: str, **fields: Any) -> dict[str, Any]:
    fields.setdefault("bundle", "support-triage@14")
    return {"request_id": request_id, "timestamp": T0.isoformat(), "environment": "production",
            **fields}


def json_error(text: str) -> json.JSONDecodeError:
    """What the parser says of malformed JSON text (its message, line and column)."""
    try:
        json.loads(text)
    except json.JSONDecodeError as error:
        return error
    raise AssertionError("the text is well-formed JSON")


def stored_outcomes(store: GraphStore) -> set[str]:
    return {n.id for n in store.find(kinds=["InferenceOutcome"], first=100)}


@pytest.mark.parametrize("write", [Path.write_text, lambda path, text: path.write_bytes(
    gzip.compress(text.encode()))], ids=["plain", "gzip"])
def test_the_cli_loads_an_outcome_file_holding_a_json_array(
    registry: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
    write: Callable[[Path, str], Any],
) -> None:
    path = tmp_path / "outcomes.json"
    records = [outcome("req-1"), outcome("req-2", bundle="support-triage@99"), outcome("req-3")]
    write(path, "\n  " + json.dumps(records, indent=2))

    result = run_cli("ingest", "outcomes", str(path), *cli_args(registry, request))

    assert result.exit_code == 1, result.output  # one record rejected, as for NDJSON
    assert stored_outcomes(registry) == {"outcome:req-1", "outcome:req-3"}
    (letter,) = deadletter.pending(registry)
    assert letter.payload["record"] == records[1]
    assert letter.payload["problems"][0]["record"] == "outcomes.json#2"


def test_a_malformed_json_array_outcome_file_is_one_rejected_record_saying_where(
    registry: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    path = tmp_path / "outcomes.json"
    path.write_text(json.dumps([outcome("req-1"), outcome("req-2")], indent=2)[:-2] + ",\n]")

    result = run_cli("ingest", "outcomes", str(path), *cli_args(registry, request))

    assert result.exit_code == 1, result.output
    assert stored_outcomes(registry) == set()
    (letter,) = deadletter.pending(registry)
    (problem,) = letter.payload["problems"]
    assert problem["record"] == "outcomes.json"
    error = json_error(path.read_text())
    assert error.lineno > 1
    assert problem["message"] == (
        f"not JSON: {error.msg} at line {error.lineno}, column {error.colno}")


def test_a_json_array_file_too_large_to_read_whole_is_refused_before_any_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "outcomes.json"
    path.write_text(json.dumps([outcome(f"req-{n}") for n in range(10)]))
    monkeypatch.setattr(outcomes, "MAX_ARRAY_CHARS", 1000)

    with pytest.raises(IngestError) as refused:
        outcomes.count_records(path)

    (problem,) = refused.value.problems
    assert problem.record == "outcomes.json" and "write it as NDJSON" in problem.message


# -- OpenLineage: a malformed event spanning lines is one record -------------------------------


def test_a_malformed_pretty_printed_event_file_is_one_rejected_record(
    store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    text = json.dumps(run_event("START"), indent=2)
    assert text.count("\n") > 10
    path = tmp_path / "event.json"
    path.write_text(text[:-2] + ",\n}\n")  # a trailing comma before the last brace

    result = run_cli("ingest", "openlineage", str(path), *cli_args(store, request))

    assert result.exit_code == 1, result.output
    assert "1 of 1 event(s) rejected" in result.output
    (letter,) = deadletter.pending(store)
    (problem,) = letter.payload["problems"]
    assert problem["record"] == "event.json"
    error = json_error(path.read_text())
    assert problem["message"] == (
        f"malformed JSON at line {error.lineno}, column {error.colno}: {error.msg}")
    assert letter.payload["record"] == path.read_text()


@pytest.mark.parametrize("bad", [0, 1], ids=["first-line", "second-line"])
def test_ndjson_event_files_keep_a_record_per_line(tmp_path: Path, bad: int) -> None:
    lines = [json.dumps(run_event("START", run_id=f"run-{n}")) for n in range(3)]
    lines[bad] = lines[bad][:-1]  # cut short: no closing brace
    path = tmp_path / "events.ndjson"
    path.write_text("\n".join(lines) + "\n")

    events = read_events(path)

    assert [(e.where, bool(e.problems)) for e in events] == [
        (f"events.ndjson:{n + 1}", n == bad) for n in range(3)]


def test_a_whole_json_document_file_still_loads_as_its_events(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_text(json.dumps([run_event("START"), run_event("COMPLETE")], indent=2))

    assert [(e.where, e.problems) for e in read_events(path)] == [
        ("events.json[0]", None), ("events.json[1]", None)]


# -- outcomes: a model family is no version ----------------------------------------------------


FAMILY = ("model:fraud-detector is a model family, not a version: name one, such as "
          "fraud-detector@7")


def test_an_outcome_naming_a_model_family_is_refused_asking_for_a_version(
    registry: GraphStore,
) -> None:
    with client_for(registry) as client:
        response = client.post("/api/v1/outcomes", json=[
            outcome("req-1", bundle=None, model="fraud-detector"),
            outcome("req-2", bundle=None, model="model:fraud-detector")])

    assert response.status_code == 400, response.text
    assert response.json()["problems"] == [
        {"record": n, "field": "model", "message": FAMILY} for n in (1, 2)]
    assert stored_outcomes(registry) == set()


def test_the_cli_dead_letters_an_outcome_naming_a_model_family(
    registry: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    path = tmp_path / "outcomes.ndjson"
    path.write_text("\n".join(json.dumps(outcome(f"req-{n}", bundle=None,
                                                 model="fraud-detector")) for n in range(3)))

    result = run_cli("ingest", "outcomes", str(path), *cli_args(registry, request))

    assert result.exit_code == 1, result.output
    assert stored_outcomes(registry) == set()
    assert {letter.payload["reason"] for letter in deadletter.pending(registry)} == {
        f"record outcomes.ndjson:{n}, field model: {FAMILY}" for n in range(1, 4)}


# -- a manifest beside another source: a merge patch ------------------------------------------


def test_a_manifest_keeps_what_it_does_not_state_of_a_node_another_source_wrote(
    store: GraphStore,
) -> None:
    from lineagegraph.ingest.openlineage import event_to_batch

    run_id = "0192f000-0000-7000-8000-000000000001"
    event_to_batch(run_event("COMPLETE", run_id=run_id), store).write(store)
    before = store.get([f"run:{run_id}"])[f"run:{run_id}"].properties

    write_manifest(store, f"kind: TrainingRun\nrun_id: {run_id}\ncode_commit: abc\n")
    merged = store.get([f"run:{run_id}"])[f"run:{run_id}"].properties
    write_manifest(store, f"kind: TrainingRun\nrun_id: {run_id}\ncode_commit: null\n")
    removed = store.get([f"run:{run_id}"])[f"run:{run_id}"].properties

    assert merged["status"] == before["status"] == "COMPLETE"
    assert merged["code_commit"] == "abc"
    assert {k: v for k, v in merged.items() if k in before} == before
    assert "code_commit" not in removed and removed["status"] == "COMPLETE"
