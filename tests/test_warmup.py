"""Start-up warm-up (graph/warmup.py): each analysis once, on a live bundle or on an ID
that names nothing."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.store import Direction, GraphStore
from lineagegraph.graph.walk import LINEAGE_DEPTH, walk
from lineagegraph.graph.warmup import PROBE, warm_up
from lineagegraph.schema import bundle_id

from .conftest import STORES
from .story import load_story

STEPS = {"live_bundles", "bundle_parts", "trace", "lineage", "blast_radius",
         "drift_sources", "resolve"}


def _contents(store: GraphStore) -> tuple[list[str], int, int]:
    return ([n.id for n in store.find(first=1000)], len(store.audit_log()),
            len(store.stage_history(environment="production")))


def test_warm_up_runs_every_analysis_and_writes_nothing(store: GraphStore) -> None:
    load_story(store)
    before = _contents(store)

    spent = warm_up(store)

    assert set(spent) == STEPS and all(seconds >= 0 for seconds in spent.values())
    assert _contents(store) == before


def test_warm_up_runs_on_a_bundle_live_in_production_when_there_is_one(
        store: GraphStore, caplog: pytest.LogCaptureFixture) -> None:
    load_story(store)  # live in production now: fraud-scoring@2, support-triage@14

    with caplog.at_level(logging.INFO, logger="lineagegraph.graph.warmup"):
        warm_up(store)

    assert "warm-up took" in caplog.text
    assert " on bundle:fraud-scoring@2 and the model it pins, model:fraud-detector@7, (" \
        in caplog.text


def test_on_an_empty_store_the_warm_up_asks_for_an_id_that_names_nothing(
        store: GraphStore, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="lineagegraph.graph.warmup"):
        spent = warm_up(store)

    assert set(spent) == STEPS
    assert f" on {bundle_id(PROBE, '1')} " in caplog.text


@pytest.mark.neo4j
def test_after_the_warm_up_a_default_lineage_query_runs_no_new_statement(
        neo4j_store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # Neo4j plans a statement the first time it sees its text; a walk's text depends on
    # its direction and depth, not on where it starts. (SQLite's planning costs nothing.)
    store = neo4j_store
    store.wipe()
    load_story(store)
    seen: set[str] = set()
    original = store._read  # type: ignore[attr-defined]

    def recording(text: str, **params: Any) -> Any:
        seen.add(text)
        return original(text, **params)

    monkeypatch.setattr(store, "_read", recording)
    warm_up(store)
    warmed, seen = seen, set()
    for direction in (Direction.UPSTREAM, Direction.DOWNSTREAM):
        walk(store, "model:gpt-5-mini-2026-08", direction, LINEAGE_DEPTH)

    assert seen and seen <= warmed


def test_a_failing_step_is_logged_and_the_others_still_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    closed = EmbeddedStore(tmp_path / "closed.db")
    closed.close()  # every read now fails

    with caplog.at_level(logging.WARNING, logger="lineagegraph.graph.warmup"):
        spent = warm_up(closed)

    assert set(spent) == STEPS
    assert {r.getMessage() for r in caplog.records} == {f"warm-up: {s} failed" for s in STEPS}


@pytest.fixture(params=STORES)
def own_store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings that make the app open the store itself, as `lineagegraph serve` does."""
    if request.param == "embedded":
        yield Settings(neo4j_uri=None, db=str(tmp_path / "owned.db"))
        return
    uri = request.getfixturevalue("neo4j_uri")
    yield Settings(neo4j_uri=uri, neo4j_user=os.environ.get("NEO4J_USER", "neo4j"),
                   neo4j_password=os.environ.get("NEO4J_PASSWORD"),
                   neo4j_database=os.environ.get("NEO4J_DATABASE", "neo4j"))


def test_an_app_that_opens_its_store_warms_it_up_before_it_is_ready(
        own_store_settings: Settings) -> None:
    with TestClient(create_app(own_store_settings)) as client:
        ready = client.get("/readyz").json()

    assert ready["status"] == "ready" and set(ready["warm_up_s"]) == STEPS
    # Neo4j's start is what a later check compares, to warm a restarted one up again.
    assert (ready["store_started_at"] is None) == (own_store_settings.neo4j_uri is None)


def test_warm_up_can_be_turned_off(own_store_settings: Settings) -> None:
    settings = own_store_settings.model_copy(update={"warm_up": False})
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").json()["warm_up_s"] == {}


def test_a_store_handed_to_the_app_is_not_warmed_again(store: GraphStore) -> None:
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as client:
        assert client.get("/readyz").json()["warm_up_s"] == {}
