"""SUPERSEDES stays a forward, acyclic relation, on both stores: a version supersedes an
older version of its name (version order) or a version of another name, keeps what it
superseded when it was first loaded, and no edge — stated or the default, of one load or
closing a cycle with the graph's — may lead back to where it starts. Refused loads write
nothing; the check of stored edges is bounded (``SUPERSEDES_CHECK_NODES``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lineagegraph.graph import walk
from lineagegraph.graph.store import Direction, GraphStore
from lineagegraph.ingest.batch import IngestError
from lineagegraph.ingest.manifest_formats import read_yaml
from lineagegraph.ingest.manifests import load_manifests
from lineagegraph.schema import Edge

from .ingest_support import cli_args, client_for, run_cli, snapshot


def load(store: GraphStore, text: str) -> None:
    load_manifests(read_yaml(text), store, actor="test")


def refused(store: GraphStore, text: str) -> list[dict[str, Any]]:
    """The problems of a load that must be refused, having written nothing."""
    before = snapshot(store)
    with pytest.raises(IngestError) as caught:
        load(store, text)
    assert snapshot(store) == before
    return [p.to_json() for p in caught.value.problems]


def supersedes(store: GraphStore) -> set[tuple[str, str]]:
    """Every stored SUPERSEDES edge, as (newer, older)."""
    ids = [n.id for n in store.find(first=10_000)]
    return {h.edge.key[::2] for h in store.expand(ids, Direction.UPSTREAM,
                                                   edge_types=["SUPERSEDES"])}


def doc(kind: str, name: str, version: int | str | None = None,
        supersedes: str | None = None, body: str = "") -> str:
    text = f"---\nkind: {kind}\nname: {name}\n{body}"
    text += f"version: {version}\n" if version is not None else ""
    return text + (f"supersedes: {supersedes}\n" if supersedes is not None else "")


def models(name: str, last: int) -> str:
    """Versions 1..last of a model, each superseding the one before (the default)."""
    return "".join(doc("ModelVersion", name, v) for v in range(1, last + 1))


# -- refused ------------------------------------------------------------------------------


def test_a_version_the_load_numbers_naming_itself_is_refused(store: GraphStore) -> None:
    # Only a document stating its version can be told apart by its text: this one becomes
    # version 2, which its `supersedes: 2` names.
    load(store, doc("Toolset", "t", 1))

    assert refused(store, doc("Toolset", "t", supersedes="2", body="tools: [x]\n")) == [{
        "record": 1, "field": "supersedes", "message": "tools:t@2 is the version itself: a "
        "version supersedes an older version of its name, or a version of another name"}]


@pytest.mark.parametrize("newer", ["2", "1.10", "tools:t@2"])
def test_a_version_superseding_a_newer_one_of_its_name_is_refused(
        store: GraphStore, newer: str) -> None:
    problems = refused(store, doc("Toolset", "t", 1) + doc("Toolset", "t", 2)
                       + doc("Toolset", "t", "1.9", supersedes=newer)
                       + doc("Toolset", "t", "1.10"))

    target = newer if ":" in newer else f"tools:t@{newer}"
    assert problems == [{"record": 3, "field": "supersedes", "message": f"{target} is not "
                         "older than tools:t@1.9 in version order: a version supersedes an "
                         "older version of its name, or a version of another name"}]


def test_a_stored_version_sent_again_superseding_a_newer_one_is_refused(
        store: GraphStore) -> None:
    load(store, doc("Toolset", "t", 1, supersedes="false") + doc("Toolset", "t", 2))

    problems = refused(store, doc("Toolset", "t", 1, supersedes="2"))

    assert [(p["record"], p["field"]) for p in problems] == [(1, "supersedes")]
    assert supersedes(store) == {("tools:t@2", "tools:t@1")}


def test_a_cycle_of_two_documents_in_one_load_is_refused(store: GraphStore) -> None:
    problems = refused(store, doc("ModelVersion", "a", 1, "model:b@1")
                       + doc("ModelVersion", "b", 1, "model:a@1"))

    assert problems == [{"record": 2, "field": "supersedes", "message": (
        "model:b@1 SUPERSEDES model:a@1 would close a cycle: model:a@1 already leads back to "
        "model:b@1 (model:a@1 → model:b@1, in the graph or in this write); a version "
        "supersedes older versions only")}]


def test_a_cycle_through_default_edges_of_one_load_is_refused(store: GraphStore) -> None:
    # a@2 supersedes a@1 by default; b@1 supersedes a@2; a@1 supersedes b@1.
    problems = refused(store, doc("ModelVersion", "a", 1, "model:b@1")
                       + doc("ModelVersion", "a", 2) + doc("ModelVersion", "b", 1, "model:a@2"))

    assert [(p["record"], p["field"]) for p in problems] == [(3, "supersedes")]
    assert "(model:a@2 → model:a@1 → model:b@1, " in problems[0]["message"]


def test_a_second_load_closing_a_cycle_is_refused(store: GraphStore) -> None:
    load(store, doc("ModelVersion", "a", 1) + doc("ModelVersion", "b", 1, "model:a@1"))

    problems = refused(store, doc("ModelVersion", "a", 1, "model:b@1"))

    assert [(p["record"], p["field"]) for p in problems] == [(1, "supersedes")]
    assert "model:b@1 → model:a@1" in problems[0]["message"]
    assert supersedes(store) == {("model:b@1", "model:a@1")}


def test_a_cycle_through_another_names_chain_is_refused(store: GraphStore) -> None:
    # b@1 supersedes a@6, which leads down a's chain to a@1: a@1 may not supersede b@1.
    load(store, models("a", 6) + doc("ModelVersion", "b", 1, "model:a@6"))

    problems = refused(store, doc("ModelVersion", "a", 1, "model:b@1"))

    assert problems[0]["message"].startswith(
        "model:a@1 SUPERSEDES model:b@1 would close a cycle: model:b@1 already leads back "
        "to model:a@1 (model:b@1 → model:a@6 → model:a@5 → (2 more) → model:a@2 → "
        "model:a@1, ")


def test_a_stored_version_keeps_what_it_superseded(store: GraphStore) -> None:
    load(store, doc("Toolset", "t", 1) + doc("Toolset", "t", 2) + doc("Toolset", "t", 3))

    other = refused(store, doc("Toolset", "t", 3, supersedes="1"))
    nothing = refused(store, doc("Toolset", "t", 3, supersedes="false"))

    assert other == [{"record": 1, "field": "supersedes", "message": (
        "tools:t@3 already supersedes tools:t@2 in the graph; this document says it "
        "supersedes tools:t@1: what a version supersedes is set when it is first loaded")}]
    assert "this document says it supersedes nothing (false)" in nothing[0]["message"]
    assert supersedes(store) == {("tools:t@2", "tools:t@1"), ("tools:t@3", "tools:t@2")}


def test_two_entries_of_one_version_superseding_different_ones_are_refused(
        store: GraphStore) -> None:
    problems = refused(store, doc("Toolset", "t", 1) + doc("Toolset", "t", 2)
                       + doc("Toolset", "t", 3, supersedes="1") + doc("Toolset", "t", 3))

    assert problems == [{"record": 4, "field": "supersedes", "message": (
        "record 3 of this load says tools:t@3 supersedes tools:t@1; this one says it "
        "supersedes tools:t@2")}]


def test_the_route_refuses_a_cycle_naming_the_record_and_field(store: GraphStore) -> None:
    load(store, doc("ModelVersion", "a", 1) + doc("ModelVersion", "b", 1, "model:a@1"))

    with client_for(store) as client:
        response = client.post("/api/v1/manifests", headers={"content-type": "application/yaml"},
                               content=doc("DataSource", "s") + doc("ModelVersion", "a", 1,
                                                                   "model:b@1"))

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "BAD_REQUEST"
    assert [(p["record"], p["field"]) for p in body["problems"]] == [(2, "supersedes")]
    assert "would close a cycle" in body["problems"][0]["message"]
    assert store.get(["source:s"]) == {}


def test_the_cli_refuses_a_cycle_naming_the_file_and_field(
        store: GraphStore, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(doc("ModelVersion", "a", 1, "model:b@1"))
    (tmp_path / "b.yaml").write_text(doc("ModelVersion", "b", 1, "model:a@1"))

    result = run_cli("ingest", "manifests", str(tmp_path), *cli_args(store, request))

    assert result.exit_code == 1
    assert "b.yaml#1, field supersedes" in result.output
    assert "would close a cycle" in result.output
    assert store.find() == []


# -- bounded ------------------------------------------------------------------------------


def test_the_check_walks_no_further_than_the_shorter_side(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # a@1, stored and superseded by a@2, gets a predecessor: the check walks up a's chain
    # of 40 and down b's of 3 from both ends at once, so a cap of 8 is enough.
    load(store, models("a", 40) + models("b", 3))
    monkeypatch.setattr(walk, "SUPERSEDES_CHECK_NODES", 8)

    load(store, doc("ModelVersion", "a", 1, "model:b@3"))

    assert ("model:a@1", "model:b@3") in supersedes(store)


def test_a_check_the_cap_stops_refuses_the_edge_saying_so(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    load(store, models("a", 12) + models("b", 12))
    monkeypatch.setattr(walk, "SUPERSEDES_CHECK_NODES", 8)

    problems = refused(store, doc("ModelVersion", "a", 1, "model:b@12"))

    assert problems == [{"record": 1, "field": "supersedes", "message": (
        "model:a@1 SUPERSEDES model:b@12: the check that it closes no cycle stopped at 8 "
        "versions before it could tell, so it is refused; send the documents that link "
        "stored versions in smaller loads")}]


# -- accepted -----------------------------------------------------------------------------


def test_forward_links_load_and_sending_them_again_changes_nothing(store: GraphStore) -> None:
    text = (models("fraud", 3) + doc("ModelVersion", "fraud", 4, "2")
            + doc("ModelVersion", "fraud", 5, "false")
            + doc("ModelVersion", "fraud-v2", 1, "model:fraud@5")  # a renamed model
            + doc("ModelVersion", "fraud-v2", 2))
    load(store, text)
    before = snapshot(store)

    load(store, text)

    assert snapshot(store) == before
    assert supersedes(store) == {
        ("model:fraud@2", "model:fraud@1"), ("model:fraud@3", "model:fraud@2"),
        ("model:fraud@4", "model:fraud@2"), ("model:fraud-v2@1", "model:fraud@5"),
        ("model:fraud-v2@2", "model:fraud-v2@1")}


def test_a_stored_version_sent_again_without_supersedes_keeps_its_predecessor(
        store: GraphStore) -> None:
    # 2.5 arrives after 3: the default for 3 is now 2.5, but 3 superseded 2 when loaded.
    load(store, doc("Toolset", "t", 1) + doc("Toolset", "t", 2) + doc("Toolset", "t", 3))
    load(store, doc("Toolset", "t", "2.5"))

    load(store, doc("Toolset", "t", 3))

    assert supersedes(store) == {("tools:t@2", "tools:t@1"), ("tools:t@3", "tools:t@2"),
                                 ("tools:t@2.5", "tools:t@2")}


def test_a_stored_first_version_may_get_a_predecessor_of_another_name(
        store: GraphStore) -> None:
    # A rename linked after the fact: the new name's chain does not lead back.
    load(store, models("old", 3) + models("new", 3))

    load(store, doc("ModelVersion", "new", 1, "model:old@3"))

    assert ("model:new@1", "model:old@3") in supersedes(store)


def test_a_load_landing_after_the_check_read_is_judged_again_and_refused(
    store: GraphStore,
) -> None:
    # Another process's write lands between this load's read of the stored edges and its
    # own: each alone is fine, together a cycle. Mapped again in its write's turn. (Loads
    # of one process take turns: the other process's is its write, as the store gets it.)
    from .test_governance_races import Landing

    load(store, doc("ModelVersion", "a", 1) + doc("ModelVersion", "b", 1))
    landing = Landing(store, "expand", lambda: store.upsert(
        [], [Edge(source="model:b@1", type="SUPERSEDES", target="model:a@1")]), after=True)

    with pytest.raises(IngestError) as caught:
        load(landing, doc("ModelVersion", "a", 1, "model:b@1"))  # type: ignore[arg-type]

    assert landing.landed
    assert [(p.record, p.field) for p in caught.value.problems] == [(1, "supersedes")]
    assert supersedes(store) == {("model:b@1", "model:a@1")}
