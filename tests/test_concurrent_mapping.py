"""Writes mapped from what they read of the graph, with another writer landing between the
read and the write — as a second server process on the same store does: the store refuses
the stale write and it is mapped again onto what landed (``PreparedWrite.metadata_seen``,
``judged``)."""

from __future__ import annotations

import pytest

from lineagegraph.graph.governance import promote
from lineagegraph.graph.registry import unregistered
from lineagegraph.graph.store import GraphStore, MetadataMoved
from lineagegraph.ingest.batch import Batch
from lineagegraph.ingest.manifest_formats import read_yaml
from lineagegraph.ingest.manifests import load_manifests
from lineagegraph.ingest.openlineage import event_to_batch, ingest_event
from lineagegraph.ingest.outcomes import strict_batch
from lineagegraph.schema import Node

from .openlineage_support import minutes, run_event
from .test_governance import EU_PRODUCTION, setup_bundle

RUN = "run:0192f000-0000-7000-8000-000000000001"
TRAFFIC = ('{"request_id": "req-1", "timestamp": "2026-11-01T00:00:00Z", '
           '"environment": "production", "model": "m-1@1"}')


def test_a_write_mapped_before_a_metadata_write_landed_is_refused_whole(
    store: GraphStore,
) -> None:
    seen = store.metadata_seq()
    Batch(nodes=[Node.from_id("source:pg/a")], metadata_seen=seen).write(store)  # moves it on

    with pytest.raises(MetadataMoved):
        Batch(nodes=[Node.from_id("source:pg/b")], metadata_seen=seen).write(store)
    assert store.get(["source:pg/b"]) == {}
    assert store.metadata_seq() == seen + 1
    Batch(nodes=[Node.from_id("source:pg/b")], metadata_seen=seen + 1).write(store)
    assert "source:pg/b" in store.get(["source:pg/b"])


def test_an_event_mapped_before_another_of_its_run_landed_is_mapped_again(
    store: GraphStore,
) -> None:
    # A run's START and COMPLETE at once on two processes: each folded the run without the
    # other, and the later write left it START with no end, or COMPLETE with no start.
    mapped = event_to_batch(run_event("START", at=minutes(0)), store)
    ingest_event(store, run_event("COMPLETE", at=minutes(9)))
    mapped.write(store)

    run = store.get([RUN])[RUN].properties
    assert (run["status"], run["started_at"], run["ended_at"]) == (
        "COMPLETE", "2026-11-10T02:00:00Z", "2026-11-10T02:09:00Z")


def test_an_event_mapped_before_a_manifest_patch_landed_keeps_the_patch(
    store: GraphStore,
) -> None:
    load_manifests(read_yaml("kind: DataSource\nname: pg/t\nuri: x\n"), store, actor="t")
    reading = run_event("COMPLETE", inputs=[{"namespace": "pg", "name": "t", "facets": {}}])
    mapped = event_to_batch(reading, store)
    load_manifests(read_yaml("kind: DataSource\nname: pg/t\nowner: alice\n"), store,
                   actor="t")
    mapped.write(store)

    assert store.get(["source:pg/t"])["source:pg/t"].properties["owner"] == "alice"


def test_a_stage_move_document_mapped_before_a_promotion_landed_is_mapped_again(
    store: GraphStore,
) -> None:
    # With 1 live, the document (→ 2) and promote(2) at once both recorded "1 → 2", the
    # document's dated before the promotion it was written after.
    for version in (1, 2):
        setup_bundle(store, version, policy=dict(EU_PRODUCTION))
    promote(store, "b", "1", "production", "release-eng", override_reason="test")
    landed = []

    def promotion_meanwhile(*_: object) -> None:
        if not landed:
            landed.append(promote(store, "b", "2", "production", "release-eng",
                                  override_reason="test"))

    load_manifests(read_yaml("kind: StageMove\nbundle: b\nversion: 2\n"
                             "environment: production\n"), store, actor="t",
                   check=promotion_meanwhile)

    moves = store.stage_history(name="b")
    assert [(m.from_version, m.to_version) for m in moves] == [(None, "1"), ("1", "2")]


def test_a_load_another_writer_beat_is_mapped_again_holding_the_writers_turn(
    store: GraphStore,
) -> None:
    # Mapped again and refused again while other processes kept writing events, a load
    # whose mapping takes long lost every time (a 503 after 8 rounds, for good under a
    # steady stream). Mapped again inside its write, holding the metadata writers' turn,
    # it cannot lose: an event sent meanwhile waits for it.
    import threading

    def event(name: str, run: int) -> dict[str, object]:
        return run_event("COMPLETE", run_id=f"0192f000-0000-7000-8000-{run:012d}",
                         outputs=[{"namespace": "pg", "name": name, "facets": {}}])

    mappings: list[bool] = []  # per mapping: whether an event sent then had to wait
    sent: list[threading.Thread] = []

    def events_meanwhile(*_: object) -> None:
        if not mappings:  # beats the first mapping
            ingest_event(store, event("first", 1))
            mappings.append(False)
            return
        landed = threading.Event()
        sent.append(threading.Thread(target=lambda: (ingest_event(store, event("second", 2)),
                                                     landed.set())))
        sent[-1].start()
        mappings.append(not landed.wait(0.5))

    load_manifests(read_yaml("kind: DataSource\nname: pg/mine\nowner: me\n"), store,
                   actor="t", check=events_meanwhile)
    sent[0].join(60)

    assert mappings == [False, True]  # the second mapping held the turn: the event waited
    found = store.get(["source:pg/mine", "source:pg/first", "source:pg/second"])
    assert found["source:pg/mine"].properties["owner"] == "me" and len(found) == 3


def test_a_load_refused_on_every_try_is_a_503_saying_to_send_it_again(
    store: GraphStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fastapi.testclient import TestClient

    from lineagegraph.api import routes_registry
    from lineagegraph.api.app import create_app
    from lineagegraph.api.settings import Settings

    def lost_every_try(*_: object, **__: object) -> None:
        raise MetadataMoved

    monkeypatch.setattr(routes_registry, "load_manifests", lost_every_try)
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as client:
        response = client.post("/api/v1/manifests", content="kind: DataSource\nname: pg/x\n",
                               headers={"Content-Type": "application/yaml"})

    assert response.status_code == 503, response.text  # retried by OpenLineage clients
    assert response.headers["Retry-After"]
    body = response.json()
    assert body["code"] == "WRITE_CONFLICT" and "send it again" in body["error"]


def test_traffic_mapped_before_its_model_was_registered_leaves_the_registration(
    store: GraphStore,
) -> None:
    # An outcome naming an unknown model creates it unregistered; a manifest registering it
    # landed between the mapping and the write, and the write replaced its properties.
    mapped = strict_batch([(1, TRAFFIC)], store, actor="t")
    load_manifests(read_yaml("kind: ModelVersion\nname: m-1\nversion: 1\nregion: eu\n"),
                   store, actor="t")
    mapped.write(store)

    model = store.get(["model:m-1@1"])["model:m-1@1"].properties
    assert (model["region"], model.get("registered", True)) == ("eu", True)


def test_a_model_version_document_registers_a_model_traffic_created(
    store: GraphStore,
) -> None:
    strict_batch([(1, TRAFFIC)], store, actor="t").write(store)
    assert [u.node.id for u in unregistered(store)] == ["model:m-1@1"]
    load_manifests(read_yaml("kind: ModelVersion\nname: m-1\nversion: 1\nregion: eu\n"),
                   store, actor="t")

    assert unregistered(store) == []
    assert store.get(["model:m-1@1"])["model:m-1@1"].properties["region"] == "eu"


def test_an_unregistered_model_is_dated_by_its_earliest_request_in_any_order(
    store: GraphStore,
) -> None:
    # The later body first dated the model after a request it had served, and driftSources
    # listed it as a new model version then.
    def request(name: str, day: int) -> tuple[int, str]:
        return (1, f'{{"request_id": "{name}", "timestamp": "2026-11-{day:02d}T00:00:00Z", '
                   '"environment": "production", "model": "shadow-x@1"}')

    strict_batch([request("late", 10)], store, actor="t").write(store)
    strict_batch([request("early", 2)], store, actor="t").write(store)

    model = store.get(["model:shadow-x@1"])["model:shadow-x@1"]
    assert model.created_at.isoformat() == "2026-11-02T00:00:00+00:00"
    assert model.properties == {"registered": False}


@pytest.mark.parametrize("document", [
    "kind: StageMove\nbundle: b\nversion: 2\nenvironment: production\nreason: doc\n",
    "name: b\nversion: 2\nmodel: gpt-5-mini-2026-08\nprompt_ref: triage@9\n"
    "policy_ref: safety@1\nstatus: production\n",
])
def test_an_undated_move_of_a_load_begun_before_a_promotion_comes_after_it(
    store: GraphStore, document: str,
) -> None:
    # The load's clock read before a promotion landed, its history read after: dated at
    # the load's time, its move went in under the promotion, from the version the
    # promotion had replaced — two moves 1 → 2 in a row.
    from datetime import timedelta

    from lineagegraph.ingest.manifests import map_manifests
    from lineagegraph.schema.models import now

    for version in (1, 2):
        setup_bundle(store, version, policy=dict(EU_PRODUCTION))
    promote(store, "b", "1", "production", "release-eng", override_reason="test")
    began = now()
    promote(store, "b", "2", "production", "release-eng", override_reason="test",
            at=began + timedelta(milliseconds=5))

    map_manifests(read_yaml(document), store, actor="t", now=began).write(store)

    history = [m for m in store.stage_history(name="b") if m.environment == "production"]
    moves = [(m.from_version, m.to_version, m.actor) for m in history]
    assert [move[:2] for move in moves].count(("1", "2")) == 1, moves
    assert [m for m in moves if m[2] == "t"] in ([], [("2", "2", "t")]), moves  # after it


def test_an_admin_upsert_landing_between_a_mappers_read_and_write_is_kept(
    store: GraphStore,
) -> None:
    # The upsert moved no counter: a manifest patch mapped before it passed its check and
    # put back the residency it had read; retention's archive was undone the same way.
    from lineagegraph.graph.governance import audited_upsert

    load_manifests(read_yaml("kind: DataSource\nname: pg/t\nresidency: eu\n"), store,
                   actor="t")
    reading = run_event("COMPLETE", inputs=[{"namespace": "pg", "name": "t", "facets": {}}])
    mapped = event_to_batch(reading, store)
    stored = store.get(["source:pg/t"])["source:pg/t"]
    audited_upsert(store, [stored.model_copy(update={
        "properties": {**stored.properties, "residency": "us"}})], [], "admin")
    mapped.write(store)

    assert store.get(["source:pg/t"])["source:pg/t"].properties["residency"] == "us"


def test_retention_archiving_between_a_loads_read_and_write_stays_archived(
    store: GraphStore,
) -> None:
    from datetime import timedelta

    from lineagegraph.graph import retention

    setup_bundle(store, 1, policy=dict(EU_PRODUCTION))
    archived: list[int] = []

    def retention_meanwhile(*_: object) -> None:
        if not archived:
            archived.append(retention.apply(
                store, retention.plan(store, timedelta(days=7)), actor="ops"))

    load_manifests(read_yaml("name: b\nversion: 1\nmodel: gpt-5-mini-2026-08\n"
                             "prompt_ref: triage@9\npolicy_ref: safety@1\n"), store,
                   actor="t", check=retention_meanwhile)

    assert archived == [1]
    assert store.get(["bundle:b@1"])["bundle:b@1"].properties.get("archived") is True
