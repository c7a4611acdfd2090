"""``load_batches`` with batches built ahead in a thread: same writes, errors surface."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from lineagegraph.graph.store import GraphStore
from lineagegraph.ingest.batch import Batch, load_batches
from lineagegraph.schema import Edge, Node, SchemaError

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _batch(i: int) -> Batch:
    return Batch(nodes=[Node.from_id(f"feature:f{i}@1", created_at=T0)], size=1)


def _batches(count: int, fail_at: int | None = None) -> Iterator[Batch]:
    for i in range(count):
        if i == fail_at:
            raise ValueError(f"record {i} cannot be mapped")
        yield _batch(i)


def test_batches_built_ahead_write_what_the_plain_loop_writes(store: GraphStore) -> None:
    ahead = load_batches(store, _batches(7), prefetch=True)
    again = load_batches(store, _batches(7))

    assert (ahead.records, ahead.created) == (7, 7)
    assert (again.records, again.created, again.unchanged) == (7, 0, 7)


def test_a_batch_that_cannot_be_built_stops_the_load_after_the_ones_before_it(
    store: GraphStore,
) -> None:
    with pytest.raises(ValueError, match="record 3 cannot be mapped"):
        load_batches(store, _batches(6, fail_at=3), prefetch=True)

    assert sorted(store.get([f"feature:f{i}@1" for i in range(6)])) == [
        "feature:f0@1", "feature:f1@1", "feature:f2@1"]


def test_a_batch_the_store_refuses_stops_the_builder_and_surfaces(store: GraphStore) -> None:
    def batches() -> Iterator[Batch]:
        yield _batch(0)
        bad = _batch(1)
        bad.edges.append(Edge(source="feature:f1@1", type="DERIVED_FROM",
                              target="feature:missing@1"))
        yield bad
        yield from (_batch(i) for i in range(2, 50))

    with pytest.raises(SchemaError, match="feature:missing@1"):
        load_batches(store, batches(), prefetch=True)

    # Batches before it are written and it is not. With writes in flight (Neo4j: two),
    # the ones already started beside it may commit: at most parallel_writes - 1.
    stored = store.get([f"feature:f{i}@1" for i in range(50)])
    assert "feature:f0@1" in stored
    assert "feature:f1@1" not in stored
    assert len(stored) <= store.parallel_writes


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_bulk_load_pauses_the_collector_and_still_frees_its_cycles(
    store: GraphStore,
) -> None:
    seen: list[bool] = []
    cycles: list[weakref.ref[_Cycle]] = []

    def batches() -> Iterator[Batch]:
        for i in range(4):
            seen.append(gc.isenabled())
            cycles.append(weakref.ref(_Cycle()))  # garbage only the collector can free
            yield _batch(i)

    assert gc.isenabled()
    load_batches(store, batches(), prefetch=True)

    assert seen == [False] * 4
    assert gc.isenabled()
    assert [ref() for ref in cycles] == [None] * 4  # collected by the load itself


def test_the_collector_is_back_on_after_a_bulk_load_that_failed(store: GraphStore) -> None:
    with pytest.raises(ValueError):
        load_batches(store, _batches(3, fail_at=1), prefetch=True)

    assert gc.isenabled()
