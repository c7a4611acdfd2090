"""Stage-history reads that do not grow with a name's number of moves: each answer equals
the one computed from the whole history, on random histories (equal timestamps, moves to
nothing, ``retired``), on both stores; where a bound is hit, the answer says so."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from lineagegraph.graph.store import RETIRED, GraphStore
from lineagegraph.schema import StageMove

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ENVS = ["staging", "production", "canary", RETIRED]


def _random_history(store: GraphStore, seed: int, n: int = 60,
                    names: tuple[str, ...] = ("a", "b")) -> list[StageMove]:
    """``n`` moves appended in one transaction, often several at one instant, some to no
    version, some into ``retired``, some dated before earlier ones (a backfill)."""
    rng = random.Random(seed)
    moves = []
    for _ in range(n):
        env = rng.choice(ENVS)
        version = None if env != RETIRED and rng.random() < 0.15 else str(rng.randint(1, 6))
        moves.append(StageMove(name=rng.choice(names), environment=env, to_version=version,
                               at=T0 + timedelta(hours=rng.randint(0, 12)), actor="ci"))
    return store.record_stage_moves(moves)


def _ordered(moves: list[StageMove]) -> list[StageMove]:
    return sorted(moves, key=lambda m: (m.at, m.seq or 0))


def test_stage_history_pages_backwards_before_a_move_as_the_whole_history_does(
        store: GraphStore) -> None:
    _random_history(store, 1)
    whole = store.stage_history(name="a")
    assert len(whole) > 10
    # Read backwards three moves at a time from the end: the pages, put together, are the
    # whole history, equal timestamps split across pages included.
    pages: list[StageMove] = []
    before = None
    while True:
        page = store.stage_history(name="a", last=3, before=before)
        pages[:0] = page
        if len(page) < 3:
            break
        before = (page[0].at, page[0].seq)
    assert pages == whole
    for i, move in enumerate(whole):
        assert move.seq is not None
        assert store.stage_history(name="a", before=(move.at, move.seq)) == whole[:i]


def test_stage_history_keeps_the_moves_to_the_versions_asked(store: GraphStore) -> None:
    _random_history(store, 2)
    whole = store.stage_history(name="a")
    assert store.stage_history(name="a", versions=["1", "3"]) == [
        m for m in whole if m.to_version in ("1", "3")]
    assert store.stage_history(name="a", versions=[]) == []


def test_stage_latest_per_version_and_visit_is_the_last_of_each_in_the_whole_history(
        store: GraphStore) -> None:
    _random_history(store, 3)
    whole = store.stage_history(names=["a", "b"])
    for until in (T0 + timedelta(hours=h) for h in (0, 3, 6, 12)):
        upto = [m for m in whole if m.at <= until]
        for per, key in (("version", lambda m: (m.name, m.to_version)),
                         ("visit", lambda m: (m.name, m.environment, m.to_version)),
                         ("environment", lambda m: (m.name, m.environment))):
            last = {key(m): m for m in upto}
            assert store.stage_latest(until=until, per=per) == _ordered(list(last.values()))
            wanted = {key(m): m for m in upto if m.to_version in ("2", "5")}
            assert store.stage_latest(until=until, per=per, versions=["2", "5"]) == _ordered(
                list(wanted.values()))
        middle = upto[len(upto) // 2] if upto else None
        if middle is not None and middle.seq is not None:
            earlier = {(m.name, m.to_version): m for m in upto[:len(upto) // 2]
                       if m.environment == "production"}
            assert store.stage_latest("production", until=until, per="version",
                                      before=(middle.at, middle.seq)) == _ordered(
                list(earlier.values()))
