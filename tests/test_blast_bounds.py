"""blastRadius stays bounded however many versions and environments a name has, on both
stores: what is live is read once per name (not once per version over the whole history),
and the answer's bundles and rollback plans stop at ``PAGE_CHARS`` of properties, with a
warning naming the cursor to read the rest from."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph import impact
from lineagegraph.graph.store import PAGE_CHARS, GraphStore, live_from
from lineagegraph.schema import Edge, Node, StageMove

T0 = datetime(2026, 11, 1, tzinfo=UTC)
# Big enough that four plans (current and target bundles, each this much) fill a page.
BLOB = 1_000_000


def _at(n: int) -> datetime:
    return T0 + timedelta(hours=n)


def _moves(name: str, env: str, versions: Iterable[str], start: int) -> list[StageMove]:
    moves, previous = [], None
    for i, version in enumerate(versions):
        moves.append(StageMove(name=name, environment=env, from_version=previous,
                               to_version=version, at=_at(start + i)))
        previous = version
    return moves


def _two_names(store: GraphStore) -> None:
    """Bundles a@1..5 and c@1..3: a@1 and c@1 pin model m@0, the others m@1; a and c each
    moved through several environments."""
    nodes = [Node(kind="ModelVersion", name="m", version=v, created_at=T0) for v in "01"]
    edges = []
    for name, count in (("a", 5), ("c", 3)):
        for v in range(1, count + 1):
            nodes.append(Node(kind="Bundle", name=name, version=str(v), created_at=T0))
            edges.append(Edge(source=f"bundle:{name}@{v}", type="USES_MODEL",
                              target=f"model:m@{0 if v == 1 else 1}"))
    store.upsert(nodes, edges)
    store.upsert(stage_moves=[*_moves("a", "staging", "1234", 0),
                              *_moves("a", "production", "123", 10),
                              *_moves("a", "canary", "45", 20),
                              *_moves("c", "staging", "123", 30),
                              *_moves("c", "production", "12", 40)])


def test_blast_radius_reads_what_is_live_once_per_name_not_once_per_version(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    _two_names(store)
    read: list[int] = []

    def counting(moves: Iterable[StageMove], *args: Any, **kwargs: Any) -> dict[str, str]:
        moves = list(moves)
        read.append(len(moves))
        return live_from(moves, *args, **kwargs)

    monkeypatch.setattr(impact, "live_from", counting)
    radius = impact.blast_radius(store, "model:m@1")
    assert radius is not None and len(radius.bundles) == 6
    # One pass for each name, not one per version, over its last move in each environment
    # (3 of a, 2 of c), not its history.
    assert sorted(read) == [2, 3]


def test_blast_radius_of_several_names_and_environments_is_as_before(
        store: GraphStore) -> None:
    _two_names(store)
    radius = impact.blast_radius(store, "model:m@1")
    assert radius is not None
    assert {b.bundle.id: b.environments for b in radius.bundles} == {
        "bundle:a@2": [], "bundle:a@3": ["production"], "bundle:a@4": ["staging"],
        "bundle:a@5": ["canary"], "bundle:c@2": ["production"], "bundle:c@3": ["staging"]}
    assert [(r.current.id, r.environment, r.target and r.target.id, r.skipped)
            for r in radius.rollbacks] == [
        ("bundle:a@3", "production", "bundle:a@1", ["bundle:a@2: still uses model:m@1"]),
        ("bundle:a@4", "staging", "bundle:a@1",
         ["bundle:a@3: still uses model:m@1", "bundle:a@2: still uses model:m@1"]),
        ("bundle:a@5", "canary", None, ["bundle:a@4: still uses model:m@1"]),
        ("bundle:c@2", "production", "bundle:c@1", []),
        ("bundle:c@3", "staging", "bundle:c@1", ["bundle:c@2: still uses model:m@1"])]


# -- the answer's size -------------------------------------------------------------------------

BLAST = """query ($id: ID!, $rollbacksAfter: String, $bundlesAfter: String) {
  blastRadius(id: $id) {
    bundles(after: $bundlesAfter) { bundle { id } environments }
    rollbacks(after: $rollbacksAfter) { environment current { id } target { id } }
    rollbackTarget { id }
    warnings
  }
}"""
CUT = re.compile(r'^(\w+): (\d+) of (\d+) shown .* read the rest with \1\(after: "([^"]+)"\)$')


@pytest.fixture
def client(store: GraphStore) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as test_client:
        yield test_client


def _blast(client: TestClient, node_id: str = "bundle:b@2",
           **variables: Any) -> tuple[dict[str, Any], list[Any]]:
    response = client.post("/graphql", json={"query": BLAST, "variables": {
        "id": node_id, **variables}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]["blastRadius"], body.get("extensions", {}).get("warnings", [])


def _live_in_environments(store: GraphStore, envs: int, blob: int, versions: int = 2) -> None:
    """b@1..b@versions (properties of ``blob`` characters each), b@1 then b@2 in each of
    ``envs`` environments, as in a release rolled out everywhere."""
    store.upsert([Node(kind="ModelVersion", name="m", version="1", created_at=T0)]
                 + [Node(kind="Bundle", name="b", version=str(v), created_at=T0,
                         properties={"notes": "x" * blob}) for v in range(1, versions + 1)],
                 [Edge(source=f"bundle:b@{v}", type="USES_MODEL", target="model:m@1")
                  for v in range(1, versions + 1)])
    store.upsert(stage_moves=[m for e in range(envs)
                              for m in _moves("b", f"env-{e}", "12", 0)])


def test_rollback_plans_stop_at_a_page_of_properties_with_the_cursor_to_read_on(
        store: GraphStore, client: TestClient) -> None:
    _live_in_environments(store, 6, BLOB)
    first, extensions = _blast(client)
    # Each plan carries b@2 and b@1 whole: four fit in PAGE_CHARS, six would not.
    assert 4 * 2 * BLOB < PAGE_CHARS < 5 * 2 * BLOB
    assert [p["environment"] for p in first["rollbacks"]] == [f"env-{e}" for e in range(4)]
    cuts = [m for w in first["warnings"] if (m := CUT.match(w))]
    assert [(m[1], m[2], m[3]) for m in cuts] == [("rollbacks", "4", "6")], first["warnings"]
    assert extensions == []
    # The rollback target is still judged on every plan, and the bundles list is whole.
    assert first["rollbackTarget"] == {"id": "bundle:b@1"}
    assert [b["bundle"]["id"] for b in first["bundles"]] == ["bundle:b@2"]
    assert first["bundles"][0]["environments"] == [f"env-{e}" for e in range(6)]

    rest, extensions = _blast(client, rollbacksAfter=cuts[0][4])
    assert [(p["environment"], p["current"]["id"], p["target"]["id"]) for p in rest["rollbacks"]
            ] == [("env-4", "bundle:b@2", "bundle:b@1"), ("env-5", "bundle:b@2", "bundle:b@1")]
    assert extensions == []


def test_affected_bundles_stop_at_a_page_of_properties_and_a_later_page_says_where_it_stops(
        store: GraphStore, client: TestClient) -> None:
    _live_in_environments(store, 1, BLOB, versions=20)
    first, _ = _blast(client, "model:m@1")
    shown = [b["bundle"]["id"] for b in first["bundles"]]
    assert len(shown) == 8  # 8 × 1,000,000 characters fit in 8 Mi, 9 do not
    cut = next(m for w in first["warnings"] if (m := CUT.match(w)))
    assert (cut[1], cut[2], cut[3]) == ("bundles", "8", "20")

    page, extensions = _blast(client, "model:m@1", bundlesAfter=cut[4])
    second = [b["bundle"]["id"] for b in page["bundles"]]
    assert len(second) == 8 and not set(second) & set(shown)
    assert sorted(shown + second) == shown + second
    # A later page that stops again names its own cursor, in extensions.warnings.
    [warning] = extensions
    assert warning["path"] == ["blastRadius", "bundles"]
    assert "the next page starts after" in warning["message"]


def test_a_small_blast_radius_is_whole_with_no_cut_warning(
        store: GraphStore, client: TestClient) -> None:
    _live_in_environments(store, 6, 100)
    answer, extensions = _blast(client)
    assert [p["environment"] for p in answer["rollbacks"]] == [f"env-{e}" for e in range(6)]
    assert answer["warnings"] == [] and extensions == []
    radius = impact.blast_radius(store, "bundle:b@2")
    assert radius is not None and len(radius.rollbacks) == 6


def test_a_rollbacks_cursor_not_from_this_api_is_the_callers_error(
        store: GraphStore, client: TestClient) -> None:
    _live_in_environments(store, 2, 100)
    response = client.post("/graphql", json={"query": BLAST, "variables": {
        "id": "bundle:b@2", "rollbacksAfter": "!!!"}})
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT" and "after" in error["message"]
