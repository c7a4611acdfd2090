"""Inference outcomes over REST (all-or-nothing per request) and the CLI (batches of ~5,000,
bad lines dead-lettered), on both stores."""

from __future__ import annotations

import gc
import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.graph.store import Direction, GraphStore
from lineagegraph.ingest import outcomes
from lineagegraph.ingest.deadletter import pending
from lineagegraph.ingest.manifest_formats import read_directory
from lineagegraph.ingest.manifests import map_manifests
from lineagegraph.ingest.outcomes import Mapped, OutcomeMapper
from lineagegraph.schema import StageMove

from .ingest_support import MANIFESTS, cli_args, client_for, edges_of, run_cli, snapshot

T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)


@pytest.fixture
def registry(store: GraphStore) -> GraphStore:
    """The test registry, and support-triage 14 then 15 in ``eu-prod`` at known times."""
    map_manifests(read_directory(MANIFESTS), store, actor="test").write(store)
    for version, at in (("14", T0), ("15", T0 + timedelta(days=1))):
        store.record_stage_move(StageMove(name="support-triage", environment="eu-prod",
                                          to_version=version, at=at))
    return store


def outcome(request_id: str, at: datetime = T0, **fields: Any) -> dict[str, Any]:
    fields.setdefault("bundle", "support-triage@14")
    return {"request_id": request_id, "timestamp": at.isoformat(), "environment": "production",
            **fields}


def ndjson(*records: dict[str, Any] | str) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n"


def post(client: TestClient, body: str, content_type: str = "application/x-ndjson") -> Any:
    return client.post("/api/v1/outcomes", content=body, headers={"content-type": content_type})


# -- REST ---------------------------------------------------------------------------------------


def test_an_outcome_links_the_bundle_that_served_it_and_the_features_it_read(
    registry: GraphStore,
) -> None:
    record = outcome("req-2002", latency_ms=812.5, tokens_in=950, tokens_out=210,
                     cost_usd=0.0031, status="error", quality=0.2, customer_tier="gold",
                     features=["feature:txn_amount_7d@2"])
    with client_for(registry) as client:
        response = post(client, ndjson(record))

    assert response.status_code == 200, response.text
    node = registry.get(["outcome:req-2002"])["outcome:req-2002"]
    assert node.kind == "InferenceOutcome" and node.created_at == T0
    assert node.properties == {"environment": "production", "latency_ms": 812.5,
                               "tokens_in": 950, "tokens_out": 210, "cost_usd": 0.0031,
                               "status": "error", "quality": 0.2, "customer_tier": "gold"}
    assert edges_of(registry, "outcome:req-2002") == {
        ("SERVED_BY", "bundle:support-triage@14"), ("USED_FEATURE", "feature:txn_amount_7d@2")}


def test_without_a_bundle_an_outcome_links_model_prompt_and_policy(registry: GraphStore) -> None:
    record = outcome("req-1", bundle=None, model="fraud-detector@v7",
                     prompt="prompt:triage-prompt@9", policy="support-safety@6")
    with client_for(registry) as client:
        response = client.post("/api/v1/outcomes", json=[record])

    assert response.status_code == 200, response.text
    assert edges_of(registry, "outcome:req-1") == {
        ("USED_MODEL", "model:fraud-detector@7"), ("USED_PROMPT", "prompt:triage-prompt@9"),
        ("USED_POLICY", "policy:support-safety@6")}


def test_a_model_nobody_registered_is_kept_as_an_unregistered_model_version(
    registry: GraphStore,
) -> None:
    records = [outcome("req-1", T0 + timedelta(minutes=5), bundle=None, model="shadow-llm-9"),
               outcome("req-2", T0, bundle=None, model="shadow-llm-9"),
               outcome("req-3", T0, bundle=None, model="gpt-5-mini-2026-08")]
    with client_for(registry) as client:
        assert post(client, ndjson(*records)).status_code == 200

    shadow = registry.get(["model:shadow-llm-9"])["model:shadow-llm-9"]
    assert (shadow.kind, shadow.version, shadow.created_at) == ("ModelVersion", None, T0)
    assert [n.id for n in registry.find(kinds=["ModelVersion"], where={"registered": False})] == [
        "model:shadow-llm-9"]
    users = registry.expand(["model:shadow-llm-9"], Direction.DOWNSTREAM,
                            edge_types=["USED_MODEL"])
    assert sorted(h.node.id for h in users) == ["outcome:req-1", "outcome:req-2"]
    # A registered model is linked, never rewritten.
    assert registry.get(["model:gpt-5-mini-2026-08"])[
        "model:gpt-5-mini-2026-08"].properties["registered"] is True


def test_an_unregistered_model_is_first_seen_at_its_earliest_request_in_a_bulk_load(
    registry: GraphStore,
) -> None:
    # Every batch names the model; on Neo4j two are written at once, so a later batch may
    # commit first: its placeholder must carry the earliest time seen, not its own.
    from lineagegraph.ingest.batch import load_batches
    from lineagegraph.ingest.outcomes import DeadLetteringLoad

    items = [(i, json.dumps(outcome(f"req-{i}", T0 + timedelta(minutes=i), bundle=None,
                                    model="shadow-llm-9"))) for i in range(40)]
    load = DeadLetteringLoad(registry, actor="test", source="bulk", size=5)
    summary = load_batches(registry, load.batches(items), prefetch=True)

    assert (summary.records, load.rejected) == (40, 0)
    shadow = registry.get(["model:shadow-llm-9"])["model:shadow-llm-9"]
    assert (shadow.created_at, shadow.properties["registered"]) == (T0, False)


def test_a_bundle_named_without_version_is_the_one_live_then_in_that_environment(
    registry: GraphStore,
) -> None:
    records = [outcome("req-a", T0 + timedelta(hours=1), bundle="support-triage",
                       environment="eu-prod"),
               outcome("req-b", T0 + timedelta(days=2), bundle="support-triage",
                       environment="eu-prod")]
    with client_for(registry) as client:
        assert post(client, ndjson(*records)).status_code == 200

    assert edges_of(registry, "outcome:req-a") == {("SERVED_BY", "bundle:support-triage@14")}
    assert edges_of(registry, "outcome:req-b") == {("SERVED_BY", "bundle:support-triage@15")}


def test_re_sending_outcomes_changes_nothing(registry: GraphStore) -> None:
    body = ndjson(*[outcome(f"req-{i}", T0 + timedelta(seconds=i)) for i in range(50)],
                  outcome("req-shadow", bundle=None, model="shadow-llm-9"))
    with client_for(registry) as client:
        first = post(client, body)
        before = snapshot(registry)
        again = post(client, body)

    assert first.json()["created"] == 50 * 2 + 2 + 1  # nodes and edges, the shadow model
    assert again.json() | {"seconds": 0} == {"records": 51, "created": 0, "updated": 0,
                                             "unchanged": 102, "rejected": 0,
                                             "stage_moves": 0, "seconds": 0}
    assert snapshot(registry) == before


# -- REST bad input: 400 naming record and field, nothing written --------------------------------


@pytest.mark.parametrize(("bad", "field", "message"), [
    ({"timestamp": T0.isoformat(), "environment": "production", "bundle": "support-triage@14"},
     "request_id", "Field required"),
    (outcome("req-x") | {"timestamp": "last tuesday"}, "timestamp", "valid datetime"),
    (outcome("req-x", bundle="nope@1"), "bundle", "unknown Bundle bundle:nope@1"),
    (outcome("req-x", bundle=None, model="m@1", prompt="unknown-prompt@2"), "prompt",
     "unknown PromptVersion prompt:unknown-prompt@2"),
    (outcome("req-x", features=["txn_amount_7d"]), "features.0", "names no version"),
    (outcome("req-x", bundle=None), "bundle", "names neither a bundle nor a model"),
    (outcome("req-x", bundle="support-triage", environment="eu-prod",
             timestamp=(T0 - timedelta(hours=1)).isoformat()), "bundle", "no version of"),
])
def test_a_bad_record_rejects_its_request_naming_line_and_field(
    registry: GraphStore, bad: dict[str, Any], field: str, message: str,
) -> None:
    before = snapshot(registry)
    with client_for(registry) as client:
        response = post(client, ndjson(outcome("req-good"), bad))

    assert response.status_code == 400
    [problem] = response.json()["problems"]
    assert (problem["record"], problem["field"]) == (2, field)
    assert message in problem["message"]
    assert snapshot(registry) == before  # not even the good line


def test_every_bad_record_of_a_request_is_listed(registry: GraphStore) -> None:
    body = [outcome("req-1"), {"request_id": "req-2"}, "not json at all", outcome("req-4")]
    with client_for(registry) as client:
        response = client.post("/api/v1/outcomes", content=json.dumps(body[:2]),
                               headers={"content-type": "application/json"})
        lines = post(client, ndjson(*body))

    assert {(p["record"], p.get("field")) for p in response.json()["problems"]} == {
        (2, "timestamp"), (2, "environment")}
    assert {(p["record"], p.get("field")) for p in lines.json()["problems"]} == {
        (2, "timestamp"), (2, "environment"), (3, None)}
    assert registry.get(["outcome:req-1", "outcome:req-4"]) == {}
    assert pending(registry) == []  # a refused request leaves no dead letter either


# -- CLI ----------------------------------------------------------------------------------------


def write_lines(path: Path, lines: list[str], gzipped: bool = False) -> Path:
    text = "\n".join(lines) + "\n"
    if gzipped:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_a_line_maps_to_what_its_parsed_value_maps_to(registry: GraphStore) -> None:
    # File loads validate each line as JSON text in one pass; REST bodies and dead-letter
    # replays arrive parsed. Both must give the same nodes, edges and dead letters.
    records = [
        outcome("req-1", latency_ms=3, tokens_in=4.0, features=["feature:txn_amount_7d@2"],
                extra={"nested": [1, 2.5, None, "é"]}, big=12345678901234567890123),
        outcome("req-2", bundle="support-triage", environment="eu-prod", quality=0.25),
        outcome(17, bundle=None, model="gpt-5-mini-2026-08", tier="gold"),
        outcome("req-4", bundle="support-triage@99"),  # unknown: a dead letter
    ]
    lines = [json.dumps(r) for r in records]
    # A lone surrogate (no UTF-8 form): refused from a line and from a value alike, and
    # kept as its JSON text by the dead letter.
    lines.append(json.dumps(outcome("req-5", note="\ud800")))
    values = [json.loads(line) for line in lines]

    from_lines = OutcomeMapper(registry).map(list(enumerate(lines, 1)))
    from_values = OutcomeMapper(registry).map(list(enumerate(values, 1)))

    def mapped(result: Mapped) -> Any:
        return ([(n.id, n.kind, n.created_at, n.properties) for n in result.batch.nodes],
                [e.key for e in result.batch.edges],
                [(record, payload, [str(p) for p in problems])
                 for record, payload, problems in result.rejected])

    assert mapped(from_lines) == mapped(from_values)
    nodes, _, rejected = mapped(from_lines)
    assert [n[0] for n in nodes] == ["outcome:req-1", "outcome:req-2", "outcome:17"]
    assert nodes[0][3]["extra"] == {"nested": [1, 2.5, None, "é"]}
    assert [(record, payload) for record, payload, _ in rejected] == [(5, lines[4]),
                                                                       (4, values[3])]


def test_the_cli_writes_good_lines_and_dead_letters_bad_ones(
    registry: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    lines = [json.dumps(outcome(f"req-{i}")) for i in range(5)]
    lines.insert(2, json.dumps(outcome("req-bad") | {"timestamp": "yesterday"}))
    lines.insert(4, "{truncated")
    path = write_lines(tmp_path / "outcomes.ndjson", lines)

    result = run_cli("ingest", "outcomes", str(path), *cli_args(registry, request))

    assert result.exit_code == 1, result.output
    assert "ingest summary" in result.output and "records/s" in result.output
    assert "2 record(s) dead-lettered" in result.output
    assert set(registry.get([f"outcome:req-{i}" for i in range(5)])) == {
        f"outcome:req-{i}" for i in range(5)}
    reasons = sorted(letter.payload["reason"] for letter in pending(registry))
    assert reasons[0].startswith("record outcomes.ndjson:3, field timestamp:")
    assert reasons[1].startswith("record outcomes.ndjson:5: not JSON")


def test_the_cli_summary_counts_rejected_and_a_rerun_changes_nothing(
    registry: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    lines = [json.dumps(outcome(f"req-{i}")) for i in range(3)] + ['{"request_id": "x"}']
    path = write_lines(tmp_path / "o.ndjson.gz", lines, gzipped=True)

    first = run_cli("ingest", "outcomes", str(path), *cli_args(registry, request))
    before = snapshot(registry)
    again = run_cli("ingest", "outcomes", str(path), *cli_args(registry, request))

    summary_row = [line for line in again.output.splitlines() if line.count("│") == 7][0]
    assert [cell.strip() for cell in summary_row.split("│")[1:6]] == ["4", "0", "0", "6", "1"]
    assert first.exit_code == again.exit_code == 1
    assert snapshot(registry) == before
    assert len(pending(registry)) == 1  # the same bad line is kept once


def test_the_cli_writes_one_transaction_per_batch_of_records(
    registry: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    lines = [json.dumps(outcome(f"req-{i}", T0 + timedelta(milliseconds=i)))
             for i in range(12_001)]
    path = write_lines(tmp_path / "big.ndjson", lines)

    result = run_cli("ingest", "outcomes", str(path), *cli_args(registry, request))

    assert result.exit_code == 0, result.output
    batches = [a for a in registry.audit_log(limit=100_000) if a.action == "ingest.outcomes"]
    # Batches written side by side (Neo4j) log their entries in the order they commit.
    assert sorted((a.after["records"] for a in batches), reverse=True) == [5000, 5000, 2001]
    assert registry.count_neighbours(["bundle:support-triage@14"], Direction.DOWNSTREAM,
                                     kind="InferenceOutcome") == {None: 12_001}


# -- a request sent again: the same references, or a refusal --------------------------------


def test_a_request_sent_again_with_another_bundle_is_refused_naming_what_served_it(
    registry: GraphStore,
) -> None:
    with client_for(registry) as client:
        first = post(client, ndjson(outcome("req-9"), outcome("req-10")))
        before = snapshot(registry)
        moved = post(client, ndjson(outcome("req-10"),
                                    outcome("req-9", bundle="support-triage@15")))
        after = snapshot(registry)
        again = post(client, ndjson(outcome("req-9", quality=0.2)))  # same bundle: fine

    assert first.status_code == 200, first.text
    assert moved.status_code == 400
    assert moved.json()["problems"] == [stored_elsewhere(2, "outcome:req-9")]
    assert after == before  # nothing of the refused request was written
    assert again.status_code == 200, again.text
    assert edges_of(registry, "outcome:req-9") == {("SERVED_BY", "bundle:support-triage@14")}


def test_a_request_sent_again_at_another_time_is_refused(registry: GraphStore) -> None:
    # When a request happened is what its traffic counts by: a re-send does not move it
    # (it was kept at the first time while the load said "updated").
    with client_for(registry) as client:
        first = post(client, ndjson(outcome("req-9")))
        later = post(client, ndjson(outcome("req-9", at=T0 + timedelta(days=2))))
        same = post(client, ndjson(outcome("req-9", quality=0.3)))

    assert first.status_code == 200, first.text
    assert later.status_code == 400
    assert later.json()["problems"][0]["field"] == "timestamp"  # not "bundle": it is the same
    assert "cannot change what served it, or when" in later.json()["problems"][0]["message"]
    assert same.status_code == 200, same.text
    stored = registry.get(["outcome:req-9"])["outcome:req-9"]
    assert stored.created_at == T0 and stored.properties["quality"] == 0.3

def test_a_file_load_dead_letters_a_request_sent_again_with_other_references(
    registry: GraphStore, request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    registry_first = write_lines(tmp_path / "a.ndjson", [json.dumps(outcome("req-1"))])
    run_cli("ingest", "outcomes", str(registry_first), *cli_args(registry, request))
    lines = [json.dumps(outcome("req-0")), json.dumps(outcome("req-1", features=[
        "feature:txn_amount_7d@2"])), json.dumps(outcome("req-2"))]
    path = write_lines(tmp_path / "b.ndjson", lines)

    result = run_cli("ingest", "outcomes", str(path), *cli_args(registry, request))

    assert result.exit_code == 1, result.output
    assert "1 record(s) dead-lettered" in result.output
    assert set(registry.get(["outcome:req-0", "outcome:req-2"])) == {
        "outcome:req-0", "outcome:req-2"}
    assert edges_of(registry, "outcome:req-1") == {("SERVED_BY", "bundle:support-triage@14")}
    [letter] = pending(registry)
    assert "outcome:req-1 was stored as served by" in letter.payload["reason"]
    audit = [e.after for e in registry.audit_log() if e.action == "ingest.outcomes"]
    assert audit[-1] == {"records": 2, "rejected": 1}


def test_outcomes_and_manifests_may_come_gzipped_within_the_body_limit(
    registry: GraphStore,
) -> None:
    from lineagegraph.api.app import create_app
    from lineagegraph.api.settings import Settings

    records = gzip.compress(ndjson(outcome("req-gz-1"), outcome("req-gz-2")).encode())
    manifest = gzip.compress(b"kind: DataSource\nname: wh.gz\n")
    bomb = gzip.compress(b"\n" * 200_000)  # far past the limit once inflated
    settings = Settings(neo4j_uri=None, max_body_bytes=100_000)
    with TestClient(create_app(settings, store=registry)) as client:
        sent = client.post("/api/v1/outcomes", content=records, headers={
            "content-type": "application/x-ndjson", "content-encoding": "gzip"})
        loaded = client.post("/api/v1/manifests", content=manifest, headers={
            "content-type": "application/yaml", "content-encoding": "gzip"})
        too_large = client.post("/api/v1/outcomes", content=bomb, headers={
            "content-type": "application/x-ndjson", "content-encoding": "gzip"})
        not_gzip = client.post("/api/v1/outcomes", content=b"{}", headers={
            "content-type": "application/x-ndjson", "content-encoding": "gzip"})

    assert sent.status_code == 200, sent.text
    assert set(registry.get(["outcome:req-gz-1", "outcome:req-gz-2"])) == {
        "outcome:req-gz-1", "outcome:req-gz-2"}
    assert loaded.status_code == 200, loaded.text
    assert too_large.status_code == 413 and too_large.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert not_gzip.status_code == 400 and "not gzip" in not_gzip.text


def test_the_spellings_remembered_of_references_are_bounded() -> None:
    # A long-running server sees any number of spellings: each remembered one is memory.
    for n in range(outcomes.SPELLINGS + 5):
        outcomes._bundle_ref(f"hub-{n}@1")
        outcomes._ref_id(f"m-{n}@1", "ModelVersion", "model")
    assert outcomes._bundle_ref.cache_info().currsize <= outcomes.SPELLINGS
    assert outcomes._ref_id.cache_info().currsize <= outcomes.SPELLINGS


# -- a body mapped a chunk at a time ------------------------------------------------------------


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    """A POST maps ``BATCH_SIZE`` records at a time: two here, so a few records span chunks."""
    monkeypatch.setattr(outcomes, "BATCH_SIZE", 2)
    return 2


def test_a_request_twice_across_chunks_is_held_to_its_first_record(
    registry: GraphStore, small_chunks: int,
) -> None:
    with client_for(registry) as client:
        other = post(client, ndjson(outcome("req-1"), outcome("req-2"), outcome("req-3"),
                                    outcome("req-1", bundle="support-triage@15")))
        same = post(client, ndjson(outcome("req-1", quality=0.1), outcome("req-2"),
                                   outcome("req-3"), outcome("req-1", quality=0.9)))

    assert other.status_code == 400
    assert other.json()["problems"] == [{
        "record": 4, "field": "bundle",
        "message": f"outcome:req-1 is also record 1, served by bundle:support-triage@14 at "
                   f"{T0.isoformat()}: a record sent again cannot change what served it, "
                   "or when"}]
    assert same.status_code == 200, same.text
    assert registry.get(["outcome:req-1"])["outcome:req-1"].properties["quality"] == 0.9


def test_a_bad_record_in_the_last_chunk_refuses_the_whole_body_listing_problems_as_before(
    registry: GraphStore, small_chunks: int,
) -> None:
    before = snapshot(registry)
    with client_for(registry) as client:
        response = post(client, ndjson(outcome("req-1", bundle="nope@1"), outcome("req-2"),
                                       outcome("req-3"), {"request_id": "req-4"}))

    assert response.status_code == 400
    # As one pass over the body lists them: records that are not records first, then those
    # naming what the graph does not hold — whichever chunk each is in.
    assert [(p["record"], p.get("field")) for p in response.json()["problems"]] == [
        (4, "environment"), (4, "timestamp"), (1, "bundle")]
    assert snapshot(registry) == before
    assert pending(registry) == []


def test_a_conflict_with_a_stored_request_in_a_later_chunk_names_its_record(
    registry: GraphStore, small_chunks: int,
) -> None:
    with client_for(registry) as client:
        first = post(client, ndjson(outcome("req-3")))
        before = snapshot(registry)
        moved = post(client, ndjson(outcome("req-1"), outcome("req-2"),
                                    outcome("req-3", bundle="support-triage@15"),
                                    outcome("req-4")))

    assert first.status_code == 200, first.text
    assert moved.status_code == 400
    assert moved.json()["problems"] == [stored_elsewhere(3, "outcome:req-3")]
    assert snapshot(registry) == before


def test_a_body_in_chunks_dates_an_unknown_model_by_its_earliest_request_and_audits_once(
    registry: GraphStore, small_chunks: int,
) -> None:
    body = ndjson(*(outcome(f"req-{i}", T0 + timedelta(minutes=10 - i), bundle=None,
                            model="shadow-llm-9") for i in range(5)))
    with client_for(registry) as client:
        response = post(client, body)
        again = post(client, body)

    assert response.status_code == 200, response.text
    shadow = registry.get(["model:shadow-llm-9"])["model:shadow-llm-9"]
    assert (shadow.created_at, shadow.properties["registered"]) == (
        T0 + timedelta(minutes=6), False)
    assert again.status_code == 200 and again.json()["created"] == 0
    audit = [e.after for e in registry.audit_log() if e.action == "ingest.outcomes"]
    assert audit[-2:] == [{"records": 5, "rejected": 0}] * 2


class _Watched(list[tuple[int, Any]]):
    """Items that count, as each is read, the validated records alive then."""

    def __iter__(self) -> Any:
        for item in super().__iter__():
            gc.collect()
            self.alive.append(sum(isinstance(o, outcomes.OutcomeRecord) for o in gc.get_objects()))
            yield item

    alive: list[int]


def test_a_strict_batch_holds_one_chunk_of_validated_records_at_a_time(
    registry: GraphStore, small_chunks: int,
) -> None:
    items = _Watched((i, json.dumps(outcome(f"req-{i}"))) for i in range(1, 9))
    items.alive = []

    batch = outcomes.strict_batch(items, registry, actor="test")

    assert len(batch.nodes) == 8
    assert max(items.alive) <= small_chunks  # mapped whole: all 7 before the last


def test_a_strict_batch_keeps_no_record_payload(registry: GraphStore, small_chunks: int) -> None:
    # Its conflicts name record and field only: a payload kept for each record written
    # would hold the whole body until the write ends.
    # (A list in each payload keeps it in the collector's view: a dict of strings is not.)
    items = [(i, {**outcome(f"req-{i}"), "marker": ["kept"]}) for i in range(1, 6)]
    batch = outcomes.strict_batch(items, registry, actor="test")
    del items
    gc.collect()

    assert len(batch.nodes) == 5 and batch.on_conflict is not None
    assert not [o for o in gc.get_objects() if type(o) is dict and "request_id" in o
                and o.get("marker") == ["kept"]]


def test_a_json_array_body_lets_go_of_each_record_once_mapped(
    registry: GraphStore, small_chunks: int,
) -> None:
    body = json.dumps([{**outcome(f"req-{i}"), "marker": ["kept"]} for i in range(1, 9)])
    alive: list[int] = []

    def watched() -> Any:
        for item in outcomes.read_body(body.encode(), json_array=True):
            gc.collect()
            alive.append(sum(1 for o in gc.get_objects() if type(o) is dict
                             and "request_id" in o and o.get("marker") == ["kept"]))
            yield item

    batch = outcomes.strict_batch(watched(), registry, actor="test")

    assert len(batch.nodes) == 8
    # As the last is read, the chunk mapped before it and the one being read: not all 8.
    assert alive[-1] <= 2 * small_chunks


def stored_elsewhere(record: int, request: str) -> dict[str, object]:
    """The problem of a record re-sending a stored request (served by
    bundle:support-triage@14 at T0) with another bundle."""
    return {"record": record, "field": "bundle",
            "message": f"{request} was stored as served by bundle:support-triage@14 at "
                       f"{T0.isoformat()}: a record sent again cannot change what served it, "
                       "or when"}
