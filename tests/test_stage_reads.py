"""Stage-history reads that do not grow with a name's number of moves: each answer equals
the one computed from the whole history, on random histories (equal timestamps, moves to
nothing, ``retired``), on both stores; where a bound is hit, the answer says so."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lineagegraph.api.report_render import evidence_sections
from lineagegraph.graph import impact, retention
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.governance import (
    GovernanceError,
    audited_upsert,
    evidence_pack,
    promotion_report,
    rollback,
)
from lineagegraph.graph.impact import (
    AffectedBundle,
    RollbackTarget,
    blast_radius,
    bounded_rollback_plans,
    rollback_plans,
)
from lineagegraph.graph.registry import HISTORY_MOVES
from lineagegraph.graph.store import RETIRED, GraphStore, live_from, retired_versions
from lineagegraph.ingest import outcomes
from lineagegraph.ingest.mlflow_import import ACTOR, import_mlflow
from lineagegraph.ingest.outcomes import OutcomeMapper
from lineagegraph.schema import Edge, Node, StageMove, bundle_id

from .test_family_reads import statements
from .test_mlflow_import_hardening import Registry

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


def _plan(store: GraphStore, read: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The steps the store plans for the last statement ``read`` sends, root first: SQLite's
    query plan (each step after its parent's ID), or the operators of Neo4j's plan."""
    sent: list[tuple[str, Any]] = []
    if isinstance(store, EmbeddedStore):
        query = store._query
        monkeypatch.setattr(store, "_query", lambda sql, params=(): (
            sent.append((sql, params)), query(sql, params))[1])
        read()
        sql, params = sent[-1]
        return [f"{row[1]} {row[3]}"
                for row in store._conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    plan = _neo4j_summary(store, read, monkeypatch, "EXPLAIN").plan

    def steps(operator: dict[str, Any]) -> list[str]:
        return [operator["operatorType"].split("@")[0],
                *(s for child in operator.get("children", []) for s in steps(child))]
    return steps(plan)


@pytest.mark.parametrize("env", [None, "production"])
@pytest.mark.parametrize("bound", ["last", "until", "before"])
def test_a_names_last_moves_are_read_from_an_index_in_order_not_sorted_whole(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch, env: str | None, bound: str) -> None:
    whole = _random_history(store, 5)
    asked: dict[str, Any] = {"until": {"until": T0 + timedelta(hours=6)},
                             "before": {"before": (whole[30].at, whole[30].seq)},
                             "last": {}}[bound]

    steps = _plan(store, lambda: store.stage_history(name="a", environment=env, last=3,
                                                     **asked), monkeypatch)

    if isinstance(store, EmbeddedStore):  # a sort of the kept moves only, the outer query's
        assert [s for s in steps if "TEMP B-TREE" in s] == ["0 USE TEMP B-TREE FOR ORDER BY"]
    else:  # no Top; a Sort only above the cut (of what it kept)
        assert "Top" not in steps and "Limit" in steps, steps
        assert "Sort" not in steps[steps.index("Limit"):], steps
    assert store.stage_history(name="a", environment=env, last=3, **asked) == [
        m for m in _ordered(whole) if m.name == "a" and env in (None, m.environment) and (
            bound != "until" or m.at <= asked["until"]) and (
            bound != "before" or (m.at, m.seq) < asked["before"])][-3:]


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
            assert store.stage_latest(until=until, per=per, pairs=[
                (name, v) for name in "ab" for v in "25"]) == _ordered(
                list(wanted.values()))
        middle = upto[len(upto) // 2] if upto else None
        if middle is not None and middle.seq is not None:
            earlier = {(m.name, m.to_version): m for m in upto[:len(upto) // 2]
                       if m.environment == "production"}
            assert store.stage_latest("production", until=until, per="version",
                                      before=(middle.at, middle.seq)) == _ordered(
                list(earlier.values()))


def test_stage_latest_with_a_count_keeps_the_last_moves_of_each_environment(
        store: GraphStore) -> None:
    _random_history(store, 5, n=80)
    whole = store.stage_history(names=["a", "b"])
    for until in (T0 + timedelta(hours=h) for h in (3, 12)):
        upto = [m for m in whole if m.at <= until]
        for count in (1, 2, 5):
            tails: dict[tuple[str, str], list[StageMove]] = {}
            for move in upto:
                tails.setdefault((move.name, move.environment), []).append(move)
            wanted = _ordered([m for tail in tails.values() for m in tail[-count:]])
            assert store.stage_latest(until=until, names=["a", "b"], count=count) == wanted
            one = [m for m in wanted if (m.name, m.environment) == ("a", "production")]
            assert store.stage_latest("production", until=until, names=["a"],
                                      count=count) == one


def test_each_names_last_moves_in_a_window_are_those_of_the_whole_history(
        store: GraphStore) -> None:
    _random_history(store, 6, n=80, names=("a", "b", "c"))
    whole = store.stage_history(names=["a", "b", "c"])
    for since, until in ((None, None), (T0 + timedelta(hours=3), None),
                         (None, T0 + timedelta(hours=9)),
                         (T0 + timedelta(hours=3), T0 + timedelta(hours=9))):
        window = [m for m in whole if (since is None or m.at >= since)
                  and (until is None or m.at <= until)]
        for count in (1, 4, 100):
            wanted = _ordered([m for name in ("a", "b") for m in [
                m for m in window if m.name == name][-count:]])
            assert store.stage_latest(since=since, until=until, names=["a", "b", "a"],
                                      per="name", count=count) == wanted, (since, until)
            assert store.stage_latest(since=since, until=until, names=["b"], per="name",
                                      count=count) == [m for m in wanted if m.name == "b"]
            # Of each name in one environment: that slot's last moves.
            assert store.stage_latest("production", since=since, until=until,
                                      names=["a", "b"], per="name", count=count) == _ordered(
                [m for name in ("a", "b") for m in [m for m in window if m.name == name and
                                                    m.environment == "production"][-count:]])
            assert store.stage_histories(["a", "b", "none"], until, since=since,
                                         last=count) == {
                "a": [m for m in wanted if m.name == "a"],
                "b": [m for m in wanted if m.name == "b"], "none": []}
        assert store.stage_histories(["a", "b"], until, since=since) == {
            name: [m for m in window if m.name == name] for name in ("a", "b")}
        # The last of each name among all names, and each slot's in a window.
        assert store.stage_latest(since=since, until=until, per="name", count=2) == _ordered(
            [m for name in "abc" for m in [m for m in window if m.name == name][-2:]])
        tails: dict[tuple[str, str], list[StageMove]] = {}
        for move in window:
            tails.setdefault((move.name, move.environment), []).append(move)
        assert store.stage_latest(since=since, until=until, names=["a", "c"], count=2) == (
            _ordered([m for (name, _), tail in tails.items() if name != "b"
                      for m in tail[-2:]]))


@pytest.mark.parametrize("per", ["version", "visit", "environment"])
def test_stage_latest_of_some_pairs_is_the_last_of_each_in_the_whole_history(
        store: GraphStore, per: str) -> None:
    # Random questions: pairs of some names ("d" never moved) each with its own versions
    # (not every name with every version), repeated or to no version (None), one
    # environment or all, a time bound, a keyset, a count.
    whole = _ordered(_random_history(store, 7, n=120, names=("a", "b", "c")))
    key = {"version": lambda m: (m.name, m.to_version),
           "visit": lambda m: (m.name, m.environment, m.to_version),
           "environment": lambda m: (m.name, m.environment)}[per]
    rng = random.Random(8)
    for _ in range(60):
        pairs = [(rng.choice("abcd"), rng.choice([None, *"1234567"]))
                 for _ in range(rng.randint(1, 6))]
        env = rng.choice([None, *ENVS])
        until = rng.choice([None, T0 + timedelta(hours=rng.randint(0, 12))])
        middle = rng.choice(whole)
        before = rng.choice([None, (middle.at, middle.seq)])
        count = rng.choice([1, 2, 3])
        groups: dict[tuple[str | None, ...], list[StageMove]] = {}
        for m in whole:
            if ((m.name, m.to_version) in pairs and env in (None, m.environment)
                    and (until is None or m.at <= until)
                    and (before is None or (m.at, m.seq) < before)):
                groups.setdefault(key(m), []).append(m)
        asked = (env, until, pairs, before, count)
        assert store.stage_latest(env, until, pairs=pairs, before=before,
                                  per=per, count=count) == _ordered(  # type: ignore[arg-type]
            [m for group in groups.values() for m in group[-count:]]), asked


def _neo4j_summary(store: GraphStore, read: Any, monkeypatch: pytest.MonkeyPatch,
                   how: str) -> Any:
    """Neo4j's summary of the last statement ``read`` sends, sent again under ``how``
    (``EXPLAIN`` or ``PROFILE``)."""
    sent: list[tuple[str, Any]] = []
    rows = store._rows  # type: ignore[attr-defined]
    monkeypatch.setattr(store, "_rows", lambda query, **params: (
        sent.append((query, params)), rows(query, **params))[1])
    read()
    query, params = sent[-1]
    return store._driver.execute_query(  # type: ignore[attr-defined]
        f"{how} {query}", **params).summary


def _profiled_hits(store: GraphStore, read: Any, monkeypatch: pytest.MonkeyPatch) -> int:
    """Neo4j's db hits for the last statement ``read`` sends, profiled."""
    return _operator_hits(_neo4j_summary(store, read, monkeypatch, "PROFILE").profile)


def _operator_hits(operator: dict[str, Any]) -> int:
    """The db hits of a profiled plan's operator and those under it."""
    return operator.get("dbHits", 0) + sum(_operator_hits(c)
                                           for c in operator.get("children", []))


@pytest.mark.parametrize("read", ["environment", "names", "live"])
def test_what_is_live_is_each_slots_last_move_read_from_the_index_not_every_move(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch, read: str) -> None:
    # 3,000 moves of "a" in production; "b" and "c" a few, "c" only in staging.
    _bundles(store, archived=set())
    _hourly(store, 3000)
    store.record_stage_moves([
        StageMove(name=name, environment=env, to_version="1", at=T0 + timedelta(hours=h),
                  actor="ci") for name, env, h in (("b", "production", 5),
                                                   ("b", "staging", 2), ("c", "staging", 7))])
    until = T0 + timedelta(hours=2000)
    whole = store.stage_history(names=["a", "b", "c"])
    last = {(m.name, m.environment): m for m in whole if m.at <= until}
    asked = {"environment": lambda: store.stage_latest("production", until=until),
             "names": lambda: store.stage_latest(until=until, names=["a", "b"]),
             "live": lambda: store.live_bundles("production", until)}[read]
    expected = {"environment": [m for m in last.values() if m.environment == "production"],
                "names": [m for m in last.values() if m.name in ("a", "b")],
                "live": None}[read]

    if read == "live":
        assert [n.id for n in asked()] == ["bundle:a@1"]  # move 2000 → a@(2000 % 5 + 1)
    else:
        assert asked() == _ordered(expected)
    if isinstance(store, EmbeddedStore):
        if read == "live":  # the embedded store reads what is live through stage_latest
            return
        steps = _plan(store, asked, monkeypatch)
        assert not [s for s in steps if "SCAN stage_moves" in s], steps
        assert any("stage_moves_key" in s for s in steps), steps
    else:  # grouping a's 3,000 moves cost 3,000 and more; a seek per slot, a few each
        assert _profiled_hits(store, asked, monkeypatch) < 300


@pytest.mark.parametrize("names", [["a"], ["a", "b"]])
def test_a_names_moves_in_a_window_are_read_from_the_index_not_its_history(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch, names: list[str]) -> None:
    # 5,000 moves of "a", an hour apart, and a few of "b": the window of ten hours at hour
    # 4,000 holds ten of a's, the last three of which are asked for.
    _hourly(store, 5000)
    store.record_stage_moves([
        StageMove(name="b", environment=env, to_version="1", at=T0 + timedelta(hours=h),
                  actor="ci") for env, h in (("staging", 3995), ("production", 4003))])
    since, until = T0 + timedelta(hours=3995), T0 + timedelta(hours=4004, minutes=30)
    whole = store.stage_history(names=["a", "b"])
    asked = lambda: store.stage_histories(names, until, since=since, last=3)  # noqa: E731

    assert asked() == {name: [m for m in whole if m.name == name and since <= m.at <= until][-3:]
                       for name in names}
    if isinstance(store, EmbeddedStore):
        steps = _plan(store, asked, monkeypatch)
        assert not [s for s in steps if "SCAN stage_moves" in s], steps
        assert any("stage_moves_name (name=? AND at>? AND at<?)" in s for s in steps), steps
        # A sort of the moves kept only, the outer query's.
        assert [s for s in steps if "TEMP B-TREE" in s] == ["0 USE TEMP B-TREE FOR ORDER BY"]
    else:  # the 4,000 moves before the window cost nothing, nor the 1,000 after it
        assert _profiled_hits(store, asked, monkeypatch) < 100


@pytest.mark.parametrize("read", ["version", "visit", "before", "one environment"])
def test_the_last_moves_to_some_versions_are_read_from_an_index_not_every_move(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch, read: str) -> None:
    # 3,000 moves of "a" in production, cycling through a@1..5; a few of a@2 and a@7 in
    # staging, one of a@3 into retired; "b" a few.
    _hourly(store, 3000)
    store.record_stage_moves([
        StageMove(name=name, environment=env, to_version=version,
                  at=T0 + timedelta(hours=h), actor="ci")
        for name, env, version, h in (("a", "staging", "2", 5), ("a", "staging", "7", 9),
                                      ("a", "staging", "2", 2500), ("a", RETIRED, "3", 2600),
                                      ("b", "production", "2", 3), ("b", "staging", "7", 4))])
    until = T0 + timedelta(hours=2000)
    last = store.stage_history(name="a", environment="production", until=until, last=1)[0]
    tail = (last.at, last.seq)
    asked = {
        # rollback plans, the retirement report: where each version went last
        "version": lambda: store.stage_latest(until=until, pairs=[
            (name, v) for name in "ab" for v in "27"], per="version"),
        # a manifest load: where the versions it names ever went
        "visit": lambda: store.stage_latest(pairs=[("a", "2"), ("a", "7"), ("b", "2"),
                                                   ("b", "7")], per="visit", count=2),
        # a rollback plan: each version's last move before the environment's tail
        "before": lambda: store.stage_latest("production", until, pairs=[("a", "2"), ("a", "3")],
                                             before=tail, per="version"),
        # a manifest load: whether a version was ever in an environment (never, here)
        "one environment": lambda: store.stage_latest("production", pairs=[("a", "7")]),
    }[read]
    expected = {  # (name, environment, version, hour), oldest first
        "version": [("b", "production", "2", 3), ("b", "staging", "7", 4),
                    ("a", "staging", "7", 9), ("a", "production", "2", 1996)],
        "visit": [("b", "production", "2", 3), ("b", "staging", "7", 4),
                  ("a", "staging", "2", 5), ("a", "staging", "7", 9),
                  ("a", "staging", "2", 2500), ("a", "production", "2", 2991),
                  ("a", "production", "2", 2996)],
        "before": [("a", "production", "2", 1996), ("a", "production", "3", 1997)],
        "one environment": [],
    }[read]

    assert [(m.name, m.environment, m.to_version, (m.at - T0) // timedelta(hours=1))
            for m in asked()] == expected
    if isinstance(store, EmbeddedStore):
        steps = _plan(store, asked, monkeypatch)
        assert not [s for s in steps if "SCAN stage_moves" in s], steps
        assert any("stage_moves_version" in s for s in steps), steps
    else:  # grouping a's 3,000 moves cost 3,000 and more; a seek per slot and version
        assert _profiled_hits(store, asked, monkeypatch) < 150


# -- rollback plans read back only as far as their target ------------------------------------


def _bundles(store: GraphStore, archived: set[str], count: int = 5) -> None:
    """a@1..count registered (version 6 never is), those in ``archived`` archived."""
    store.upsert([Node(kind="Bundle", name="a", version=str(v), created_at=T0,
                       properties={"archived": True} if str(v) in archived else {})
                  for v in range(1, count + 1)], [])


def _plan_view(plans: list[RollbackTarget]) -> list[tuple[Any, ...]]:
    return [(p.environment, p.current.id, p.target and p.target.id, p.warnings, p.skipped)
            for p in plans]


def test_rollback_plans_read_a_page_at_a_time_are_those_of_the_whole_history(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    for seed in range(4):
        store.wipe()
        _random_history(store, 10 + seed, n=80, names=("a",))
        _bundles(store, archived={str(seed % 5 + 1), "4"})
        for hours in (3, 7, 12):
            when = T0 + timedelta(hours=hours)
            whole = {"a": store.stage_history(name="a", until=when)}
            live = live_from(whole["a"])
            nodes = store.get([bundle_id("a", v) for v in live.values()])
            affected = [AffectedBundle(nodes.get(bundle_id("a", v))
                                       or Node.from_id(bundle_id("a", v)), [env])
                        for env, v in sorted(live.items())]
            for root in {a.bundle.id: a.bundle for a in affected}.values():
                expected = rollback_plans(store, root, affected, whole)
                monkeypatch.setattr(impact, "STAGE_PAGE", 3)  # pages of three moves
                assert _plan_view(bounded_rollback_plans(store, root, affected, when)) == (
                    _plan_view(expected)), (seed, hours, root.id)
                monkeypatch.setattr(impact, "STAGE_PAGE", 1000)  # one read of everything
                assert _plan_view(bounded_rollback_plans(store, root, affected, when)) == (
                    _plan_view(expected))


def _hourly(store: GraphStore, count: int, versions: int = 5) -> None:
    """``count`` moves in production, one an hour, cycling through a@1..versions."""
    store.record_stage_moves([
        StageMove(name="a", environment="production", to_version=str(i % versions + 1),
                  at=T0 + timedelta(hours=i), actor="ci") for i in range(count)])


def _counting_moves(store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    read: list[int] = []
    for method in ("stage_history", "stage_latest"):
        original = getattr(store, method)

        def counted(*args: Any, _original: Any = original, **kwargs: Any) -> list[StageMove]:
            moves = _original(*args, **kwargs)
            read.append(len(moves))
            return moves

        monkeypatch.setattr(store, method, counted)
    return read


def test_rollback_reads_back_only_as_far_as_its_target(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    _bundles(store, archived=set())
    _hourly(store, 3000)
    read = _counting_moves(store, monkeypatch)
    done = rollback(store, "a", "production", "oncall", at=T0 + timedelta(days=1000))
    # The whole history is 3,000 moves: the rollback reads a page of them and a few more.
    assert (done.move.from_version, done.move.to_version) == ("5", "4")
    assert sum(read) <= impact.STAGE_PAGE + 20, read


def test_a_rollback_with_no_target_in_the_moves_it_may_read_says_so(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # Versions 2..5 archived: the only target, a@1, is 40 moves back in production.
    _bundles(store, archived={"2", "3", "4", "5"})
    store.record_stage_move(StageMove(name="a", environment="production", to_version="1",
                                      at=T0 - timedelta(hours=1)))
    store.record_stage_moves([
        StageMove(name="a", environment="production", to_version=str(i % 4 + 2),
                  at=T0 + timedelta(hours=i), actor="ci") for i in range(40)])
    monkeypatch.setattr(impact, "STAGE_PAGE", 8)
    monkeypatch.setattr(impact, "ROLLBACK_MOVES", 24)
    with pytest.raises(GovernanceError, match="in its last 24 moves there .*earlier ones "
                                              "were not read"):
        rollback(store, "a", "production", "oncall", at=T0 + timedelta(days=10))
    monkeypatch.setattr(impact, "ROLLBACK_MOVES", 48)  # far enough back: found
    done = rollback(store, "a", "production", "oncall", at=T0 + timedelta(days=10))
    assert done.move.to_version == "1"
    assert any("skipped bundle:a@2: archived" in w for w in done.warnings)


def test_blast_radius_reads_what_is_live_and_its_rollback_target_not_the_history(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    _bundles(store, archived=set())
    _hourly(store, 3000)
    read = _counting_moves(store, monkeypatch)
    radius = blast_radius(store, "bundle:a@5", now=T0 + timedelta(days=1000))
    assert radius is not None
    assert [(p.environment, p.target and p.target.id) for p in radius.rollbacks] == [
        ("production", "bundle:a@4")]
    assert sum(read) <= impact.STAGE_PAGE + 20, read


def test_blast_radius_of_a_model_many_names_pin_reads_their_short_histories_at_once(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # 40 names pin one model, each with two versions and a short history in two
    # environments: more moves in all than a page, few in each environment.
    monkeypatch.setattr(impact, "STAGE_PAGE", 10)
    names = [f"n{i:02d}" for i in range(40)]
    store.upsert([Node.from_id("model:shared@1", created_at=T0),
                  Node.from_id("model:shared@2", created_at=T0),
                  *(Node(kind="Bundle", name=n, version=v, created_at=T0)
                    for n in names for v in ("1", "2"))],
                 [Edge(source=bundle_id(n, v), type="USES_MODEL", target=f"model:shared@{m}")
                  for n in names for v, m in (("1", "1"), ("2", "2"))])
    store.record_stage_moves([
        StageMove(name=n, environment=env, to_version=v, at=T0 + timedelta(hours=h),
                  actor="ci")
        for n in names for env in ("staging", "production")
        for h, v in ((1, "1"), (2, "2"))])
    whole = rollback_plans(store, store.get(["model:shared@2"])["model:shared@2"], [
        AffectedBundle(store.get([bundle_id(n, "2")])[bundle_id(n, "2")],
                       ["production", "staging"]) for n in names],
        store.stage_histories(names))
    read = _counting_moves(store, monkeypatch)
    radius = blast_radius(store, "model:shared@2", now=T0 + timedelta(days=1))
    assert radius is not None
    assert _plan_view(radius.rollbacks) == _plan_view(whole)
    assert {p.target and p.target.id for p in radius.rollbacks} == {
        bundle_id(n, "1") for n in names}
    assert len(read) <= 4, read  # not a read per name and environment


# -- the retirement report and the evidence pack -----------------------------------------


def test_a_retirement_report_answers_as_the_whole_history_does(store: GraphStore) -> None:
    for seed in range(3):
        store.wipe()
        whole = _random_history(store, 20 + seed, n=80, names=("a",))
        _bundles(store, archived=set(), count=6)
        for hours in (0, 5, 12):
            when = T0 + timedelta(hours=hours)
            upto = [m for m in whole if m.at <= when]
            upto.sort(key=lambda m: (m.at, m.seq or 0))
            for version in "123456":
                report = promotion_report(store, "a", version, RETIRED, at=when)
                assert report.leaves == sorted(
                    env for env, v in live_from(upto).items() if v == version)
                assert report.already_retired == (version in retired_versions(upto))


def test_an_evidence_pack_holds_the_last_moves_and_says_when_earlier_ones_are_left_out(
        store: GraphStore) -> None:
    _bundles(store, archived=set())
    _hourly(store, HISTORY_MOVES + 5)
    pack = evidence_pack(store, "a", "1")
    assert pack.moves_cut
    assert pack.stage_moves == store.stage_history(name="a")[-HISTORY_MOVES:]
    sections = evidence_sections(pack.bundle, {}, pack.upstream, [], [], pack.stage_moves,
                                 [], moves_cut=pack.moves_cut)
    history = next(s for s in sections if s.title == "Stage history")
    assert history.note == f"the last {HISTORY_MOVES:,}: earlier moves are left out"

    store.wipe()
    _bundles(store, archived=set())
    _hourly(store, 10)
    pack = evidence_pack(store, "a", "1")
    assert not pack.moves_cut and pack.stage_moves == store.stage_history(name="a")


def test_a_retirement_report_reads_no_history_whole(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    _bundles(store, archived=set())
    _hourly(store, 3000)
    read = _counting_moves(store, monkeypatch)
    report = promotion_report(store, "a", "5", RETIRED, at=T0 + timedelta(days=1000))
    assert report.leaves == ["production"] and not report.already_retired
    assert sum(read) <= impact.STAGE_PAGE + 20, read


def test_archiving_through_an_upsert_reads_what_is_live_not_the_history(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    _bundles(store, archived=set())
    _hourly(store, 3000)  # a@5 is live in production at the end, a@1 is not
    read = _counting_moves(store, monkeypatch)
    with pytest.raises(GovernanceError, match="bundle:a@5 is live in production"):
        audited_upsert(store, [Node.from_id("bundle:a@5", properties={"archived": True})], [],
                       "oncall")
    audited_upsert(store, [Node.from_id("bundle:a@1", properties={"archived": True})], [],
                   "oncall")
    assert store.get(["bundle:a@1"])["bundle:a@1"].properties["archived"] is True
    assert sum(read) <= 20, read


# -- retention ------------------------------------------------------------------------------


def _archivable_from_history(moves: list[StageMove], times: list[datetime],
                             version: str) -> tuple[str, ...] | None:
    """Retention's rule over the whole history: where the version ever went, if only
    pre-release environments and it is live at none of ``times``."""
    ever = {m.environment for m in moves if m.to_version == version}
    live = {v for when in times for v in live_from(
        sorted((m for m in moves if m.at <= when), key=lambda m: (m.at, m.seq or 0))).values()}
    if ever <= retention.PRE_RELEASE and version not in live:
        return tuple(sorted(ever))
    return None


def test_a_retention_plan_is_the_one_of_the_whole_history(store: GraphStore) -> None:
    for seed in range(3):
        store.wipe()
        whole = _random_history(store, 30 + seed, n=50, names=("a", "b"))
        store.upsert([Node(kind="Bundle", name=name, version=str(v),
                           created_at=T0 - timedelta(days=400))
                      for name in "ab" for v in range(1, 8)], [])
        for hours in (2, 6, 12):
            at = T0 + timedelta(hours=hours)
            planned = {c.node.id: c.environments
                       for c in retention.plan(store, timedelta(days=1), at=at, page=3)}
            expected = {}
            for name in "ab":
                moves = [m for m in whole if m.name == name]
                for v in range(1, 8):
                    where = _archivable_from_history(moves, [at, datetime.now(UTC)], str(v))
                    if where is not None:
                        expected[bundle_id(name, str(v))] = where
            assert planned == expected, (seed, hours)


def test_a_retention_plan_reads_no_history_whole(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    _bundles(store, archived=set())
    store.upsert([Node(kind="Bundle", name="a", version="9", created_at=T0)], [])
    _hourly(store, 3000)
    read = _counting_moves(store, monkeypatch)
    planned = retention.plan(store, timedelta(days=1), at=T0 + timedelta(days=1000))
    assert [c.node.id for c in planned] == ["bundle:a@9"]  # never moved anywhere
    assert sum(read) <= 20, read


def test_a_retention_plan_reads_each_old_versions_moves_from_an_index_not_its_names_moves(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # 3,000 moves of "a" in production, cycling through a@1..5, and a few of a@1..3 in
    # draft and staging: retention asks where a page of old versions of "a" (1..5, and 9,
    # which never moved) ever went, which is the last move of each into each environment.
    _bundles(store, archived=set())
    store.upsert([Node(kind="Bundle", name="a", version="9", created_at=T0)], [])
    _hourly(store, 3000)
    store.record_stage_moves([
        StageMove(name="a", environment=env, to_version=version, at=T0 + timedelta(hours=h),
                  actor="ci") for env, version, h in (("draft", "1", 1), ("staging", "2", 2),
                                                      ("draft", "3", 4000))])
    at = T0 + timedelta(days=1000)
    asked = lambda: retention.plan(store, timedelta(days=1), at=at)  # noqa: E731

    assert [c.node.id for c in asked()] == ["bundle:a@9"]
    sent = statements(store, monkeypatch)
    asked()
    monkeypatch.undo()
    stage_reads = [(query, params) for query, params in sent
                   if "stage_moves" in query or "StageMove" in query]
    assert stage_reads  # the visits and what is live, read
    if isinstance(store, EmbeddedStore):
        steps = [row[3] for sql, params in stage_reads
                 for row in store._conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
        # Each read of moves is a slot's (a name's every move: the visits grouped whole)
        moves = [s for s in steps if "stage_moves" in s and "stage_slots" not in s]
        assert moves and all("SEARCH" in s and "environment=?" in s for s in moves), moves
        assert any("stage_moves_version (name=? AND environment=? AND to_version=?)" in s
                   for s in moves), moves
    else:  # the visits grouped a's 3,000 moves whole: 15,162 db hits
        hits = 0
        for query, params in stage_reads:
            profile = store._driver.execute_query(  # type: ignore[attr-defined]
                f"PROFILE {query}", **params).summary.profile
            hits += _operator_hits(profile)
        assert hits < 400, hits


# -- outcome records naming a bare bundle name ----------------------------------------------


def _outcomes(times: list[datetime], env: str = "production") -> list[tuple[int, Any]]:
    return [(i, {"request_id": f"r{i}", "timestamp": at.isoformat(), "environment": env,
                 "bundle": "a"}) for i, at in enumerate(times)]


def test_outcomes_naming_a_bare_bundle_get_the_version_the_whole_history_has_live(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = _random_history(store, 40, n=80, names=("a",))
    _bundles(store, archived=set(), count=6)
    monkeypatch.setattr(outcomes, "STAGE_SPAN", 3)  # a page of three moves at a time
    rng = random.Random(4)
    # Times on the moves themselves (equal timestamps), between them, before the first.
    times = [T0 - timedelta(hours=1), *(m.at for m in whole),
             *(T0 + timedelta(minutes=rng.randint(0, 13 * 60)) for _ in range(40))]
    rng.shuffle(times)
    mapper = OutcomeMapper(store)
    for batch in (times[:30], times[30:]):  # the second batch starts from what the first read
        mapped = mapper.map(_outcomes(batch))
        sent = {served.record: served.refs["bundle"][0] for served in mapped.sent.values()}
        rejected = {record for record, _, _ in mapped.rejected}
        for i, at in enumerate(batch):
            upto = sorted((m for m in whole if m.environment == "production" and m.at <= at),
                          key=lambda m: (m.at, m.seq or 0))
            version = upto[-1].to_version if upto else None
            if version is None:
                assert i in rejected
            else:
                assert sent[i] == bundle_id("a", version), at


def test_outcomes_naming_a_bare_bundle_read_only_the_moves_up_to_their_times(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    _bundles(store, archived=set())
    _hourly(store, 5000)
    read = _counting_moves(store, monkeypatch)
    # 300 records over the 1,500 hours before hour 2,000: the name's last moves are read
    # (a page), the 2,000 after those records' times and before the last page are not,
    # and the 1,500 in the window a page at a time.
    times = [T0 + timedelta(hours=500 + 5 * i, minutes=30) for i in range(300)]
    mapped = OutcomeMapper(store).map(_outcomes(times))
    assert not mapped.rejected
    assert sum(read) <= 3 * outcomes.STAGE_SPAN, read
    assert len(read) <= 4, read


def test_outcomes_naming_a_bare_bundle_in_time_order_read_its_moves_once_a_load(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # Logs arrive in time order: each batch of a load is later than the one before, and
    # the name's last moves, read for the first, answer them all.
    _bundles(store, archived=set())
    _hourly(store, 50)
    read = _counting_moves(store, monkeypatch)
    mapper = OutcomeMapper(store)
    for batch in range(3):
        times = [T0 + timedelta(hours=60 + 10 * batch, minutes=i) for i in range(5)]
        assert not mapper.map(_outcomes(times)).rejected
    assert read == [50], read


# -- MLflow aliases -------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
def test_an_mlflow_import_reads_what_each_alias_points_at_not_the_history(
        store: GraphStore, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "mlflow.db")
    registry.model("m", 2, champion=2)
    # Imports every hour for years: champion went back and forth, and is at 1 now.
    store.record_stage_moves([
        StageMove(name="model:m", environment="champion", to_version=str(2 - i % 2),
                  at=T0 + timedelta(hours=i), actor=ACTOR) for i in range(3000)])
    read = _counting_moves(store, monkeypatch)
    import_mlflow(store, registry.uri)
    assert [(m.from_version, m.to_version) for m in
            store.stage_history(name="model:m", last=1)] == [("1", "2")]
    assert sum(read) <= 20, read
