"""``driftSources`` reads what its window needs: a source's new versions from the index of
the family each version keeps, and a staged name's moves in the window only, each the node
cap's worth nearest the onset. The answer is the one the whole history gives (expanding
every ``VERSION_OF`` edge, every move up to the onset), on generated graphs, on both
stores; the reads do not grow with the history before the window."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lineagegraph.graph.drift import DriftSources, drift_sources
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.store import RETIRED, Direction, GraphStore, Hop, by_name
from lineagegraph.graph.walk import DEFAULT_LIMITS, INLINE_CHARS, WalkLimits
from lineagegraph.schema import Edge, Node, StageMove

from .test_family_reads import statements

T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
ONSET = T0 + 200 * HOUR
LOOKBACK = 48 * HOUR
LARGE = "x" * (2 * INLINE_CHARS)


def _generated(store: GraphStore, seed: int) -> None:
    """Bundle versions of ``app`` retrieving from ``source:kb`` (60 versions before, in and
    after the window, some large, some archived) and using model and prompt versions whose
    run consumed one of kb's versions; moves of app, of the model and of the prompt before,
    in and after the window, each from the version in effect (so rollbacks too)."""
    rng = random.Random(seed)

    def at() -> datetime:
        return T0 + timedelta(minutes=rng.randint(0, 260 * 60))

    kb = [Node.from_id(f"dataset:kb@{i:03d}", created_at=at(), properties=(
        {"schema": LARGE} if rng.random() < 0.3 else
        {"archived": True} if rng.random() < 0.1 else {"n": i})) for i in range(60)]
    models = [Node.from_id(f"model:m@{v}", created_at=at()) for v in (1, 2, 3)]
    prompts = [Node.from_id(f"prompt:p@{v}", created_at=at()) for v in (1, 2)]
    bundles = [Node.from_id(f"bundle:app@{v}", created_at=at()) for v in (1, 2, 3, 4)]
    edges = [Edge(source=v.id, type="VERSION_OF", target="source:kb",
                  properties={"note": LARGE} if rng.random() < 0.2 else {}) for v in kb]
    edges += [Edge(source="run:train", type="CONSUMED", target=rng.choice(kb).id),
              *(Edge(source=m.id, type="PRODUCED_BY", target="run:train") for m in models)]
    for bundle in bundles:
        edges += [Edge(source=bundle.id, type="RETRIEVES_FROM", target="source:kb"),
                  Edge(source=bundle.id, type="USES_MODEL", target=rng.choice(models).id),
                  Edge(source=bundle.id, type="USES_PROMPT", target=rng.choice(prompts).id)]
    store.upsert([Node.from_id("source:kb", created_at=T0 - 100 * HOUR),
                  Node.from_id("run:train", created_at=at()), *kb, *models, *prompts,
                  *bundles], edges)

    moves, live = [], {}
    for _ in range(150):
        name, versions = rng.choice([("app", "1234"), ("model:m", "123"), ("prompt:p", "12")])
        env = rng.choice(["staging", "production", "canary", RETIRED])
        to = None if rng.random() < 0.1 else rng.choice(versions)
        moves.append((at(), name, env, to))
    for when, name, env, to in sorted(moves, key=lambda m: m[0]):
        moves_from = live.get((name, env))
        live[(name, env)] = to
        store.upsert(stage_moves=[StageMove(name=name, environment=env, from_version=moves_from,
                                            to_version=to, at=when, actor="ci")])


def _answer(found: DriftSources | None) -> tuple[list[tuple[Any, ...]], bool]:
    assert found is not None
    return [(c.node.id, c.change, c.changed_at, c.hops, c.score, c.path) for c in found], (
        found.truncated)


def _whole_history_reads(store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store answers drift's two reads as the code before read them: a source's versions
    by expanding every ``VERSION_OF`` edge, and each name's whole history up to the onset,
    cut to the window (and to the cap) here."""

    def versions(families: list[str], *, count: int | None, newest: bool,
                 since: datetime | None = None, until: datetime | None = None,
                 exclude: Collection[str] | None = None,
                 inline: int | None = None) -> list[Hop]:
        assert count is not None
        return store.nearest(families, Direction.DOWNSTREAM, count=count, newest=newest,
                             edge_types=["VERSION_OF"], node_kinds=["DatasetVersion"],
                             since=since, until=until, exclude=exclude, inline=inline)

    def histories(names: Iterable[str], until: datetime | None = None, *,
                  since: datetime | None = None,
                  last: int | None = None) -> dict[str, list[StageMove]]:
        wanted = sorted(set(names))
        whole = by_name(store.stage_history(names=wanted, until=until), wanted)
        return {name: [m for m in moves if since is None or m.at >= since][-(last or 0):]
                for name, moves in whole.items()}

    monkeypatch.setattr(store, "family_versions", versions)
    monkeypatch.setattr(store, "stage_histories", histories)


@pytest.mark.parametrize("limits", [
    pytest.param(DEFAULT_LIMITS, id="default"),
    pytest.param(WalkLimits(max_nodes=8), id="node-cap"),  # cuts the versions in the window
    pytest.param(WalkLimits(max_chars=3 * len(LARGE)), id="budget"),  # cuts large versions
])
def test_drift_answers_as_the_whole_history_does(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch, limits: WalkLimits) -> None:
    truncated, kinds = set(), set()
    for seed in range(3):
        store.wipe()
        _generated(store, seed)
        for target in ("bundle:app@1", "bundle:app@3", "model:m@2"):
            read = _answer(drift_sources(store, target, ONSET, LOOKBACK, limits))
            with monkeypatch.context() as whole:
                _whole_history_reads(store, whole)
                expected = _answer(drift_sources(store, target, ONSET, LOOKBACK, limits))
            assert read == expected, (seed, target)
            truncated.add(read[1])
            kinds |= {change.split(":")[0] for _, change, *_ in read[0]}
    # The graphs hold what the answers are to be checked on.
    assert {"new dataset version", "stage move production", "new model version"} <= kinds
    assert (True in truncated) == (limits is not DEFAULT_LIMITS)  # a cap cut some


def test_a_names_moves_past_the_node_cap_in_the_window_are_cut_nearest_the_onset_first(
        store: GraphStore) -> None:
    # 30 moves of app@1, each into an environment of its own, in the window; one before it.
    store.upsert([Node.from_id("bundle:app@1", created_at=T0)])
    store.upsert(stage_moves=[
        StageMove(name="app", environment=f"e{i:02d}", to_version="1",
                  at=ONSET - LOOKBACK + (i + 1) * HOUR, actor="ci") for i in range(30)] + [
        StageMove(name="app", environment="old", to_version="1",
                  at=ONSET - LOOKBACK - HOUR, actor="ci")])

    cut = drift_sources(store, "bundle:app@1", ONSET, LOOKBACK, WalkLimits(max_nodes=10))
    whole = drift_sources(store, "bundle:app@1", ONSET, LOOKBACK, WalkLimits(max_nodes=30))

    assert cut is not None and whole is not None
    assert cut.truncated and not whole.truncated
    assert {c.change for c in whole} == {f"stage move e{i:02d}: - → 1" for i in range(30)}
    assert {c.change for c in cut} == {f"stage move e{i:02d}: - → 1" for i in range(20, 30)}


N_LONG = 5000


def _long_history(store: GraphStore) -> None:
    """bundle:app@1..5 retrieving from source:big: 5,000 versions of big and 5,000 moves of
    app, an hour apart, all but the last few before the window and a thousand after it."""
    versions = [Node(kind="DatasetVersion", name="big", version=f"{i:05d}",
                     created_at=T0 + i * HOUR) for i in range(N_LONG)]
    store.upsert([Node.from_id("source:big", created_at=T0 - HOUR),
                  *(Node.from_id(f"bundle:app@{v}", created_at=T0 - HOUR) for v in range(1, 6)),
                  *versions],
                 [Edge(source=f"bundle:app@{v}", type="RETRIEVES_FROM", target="source:big")
                  for v in range(1, 6)])
    store.upsert(edges=[Edge(source=v.id, type="VERSION_OF", target="source:big")
                        for v in versions])
    store.upsert(stage_moves=[
        StageMove(name="app", environment="production", to_version=str(i % 5 + 1),
                  at=T0 + i * HOUR + timedelta(minutes=30), actor="ci") for i in range(N_LONG)])


def _long_onset() -> datetime:
    return T0 + (N_LONG - 1000) * HOUR


def _work(store: GraphStore, sent: list[tuple[str, Any]], path: Path) -> int:
    """What the statements cost the store: Neo4j's db hits, each profiled; on SQLite, the
    virtual machine's steps (in hundreds), each run again on a connection of its own."""
    if isinstance(store, EmbeddedStore):
        steps = 0

        def step() -> int:
            nonlocal steps
            steps += 1
            return 0

        conn = sqlite3.connect(path)
        conn.set_progress_handler(step, 100)
        for sql, params in sent:
            conn.execute(sql, params).fetchall()
        conn.close()
        return steps

    def hits(operator: dict[str, Any]) -> int:
        return operator.get("dbHits", 0) + sum(hits(c) for c in operator.get("children", []))
    return sum(hits(store._driver.execute_query(  # type: ignore[attr-defined]
        "PROFILE " + query, **params).summary.profile) for query, params in sent)


def test_drift_reads_the_window_not_the_years_before_it(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _long_history(store)
    onset = _long_onset()
    sent = statements(store, monkeypatch)

    found = drift_sources(store, "bundle:app@1", onset, 24 * HOUR)

    assert found is not None and not found.truncated
    # The 25 versions in the window (both ends in), and app@1's moves among the 24 there.
    assert len([c for c in found if c.change == "new dataset version"]) == 25
    assert {c.change for c in found if c.change.startswith("stage move")} == {
        "stage move production: - → 1"}
    # 5,000 versions and 5,000 moves: reading them cost SQLite ~2,000 hundred steps and
    # Neo4j ~53,000 db hits; what the window needs, ~26 and ~600.
    work = _work(store, sent, tmp_path / "lineagegraph.db")
    assert work < (200 if isinstance(store, EmbeddedStore) else 2000), work
