"""What every mapper produces and how it is written: a ``Batch`` per transaction, errors
that name the record and field, and a summary of what a load did."""

from __future__ import annotations

import gc
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from pydantic import ValidationError

from lineagegraph.graph.store import (
    GraphStore,
    MetadataMoved,
    PreparedWrite,
    RequestsConflict,
    StagesMoved,
    UpsertResult,
)
from lineagegraph.graph.traffic import OutcomeState
from lineagegraph.schema import AuditEntry, Edge, Node, Record, StageMove
from lineagegraph.schema.models import validation_message

T = TypeVar("T")

# Mappings of a write judged on what it read of the graph, before it gives up on other
# writers landing first (across processes: in one, such writers take turns), and the
# longest pause before the next (doubling with each attempt), drawn at random.
ATTEMPTS = 8
BACKOFF_S = 0.02


def pause_before(attempt: int) -> None:
    """Writers that lost together should not map and race again together."""
    if attempt:
        time.sleep(random.uniform(0, BACKOFF_S * 2 ** attempt))


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the input: which record (1-based line or document number, or
    array index), which field (dotted path), and what."""

    message: str
    record: int | str | None = None
    field: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in (("record", self.record), ("field", self.field),
                                  ("message", self.message)) if v is not None}

    def __str__(self) -> str:
        where = ", ".join(str(p) for p in (
            f"record {self.record}" if self.record is not None else None,
            f"field {self.field}" if self.field else None) if p)
        return f"{where}: {self.message}" if where else self.message


def dotted(loc: tuple[int | str, ...]) -> str | None:
    """A pydantic error's location as a field path (``eval.score``), None for the record."""
    return ".".join(str(part) for part in loc) or None


def validation_problems(error: ValidationError, record: int | str | None = None,
                        field: Callable[[tuple[int | str, ...]], str | None] = dotted,
                        ) -> list[Problem]:
    """A record's ValidationError as Problems, one a field, worded by
    ``validation_message``."""
    return [Problem(validation_message(item), record, field(item["loc"]))
            for item in error.errors()]


class IngestError(Exception):
    """Input that cannot be loaded. Nothing of it was written."""

    def __init__(self, problems: list[Problem] | Problem) -> None:
        self.problems = problems if isinstance(problems, list) else [problems]
        super().__init__("; ".join(str(p) for p in self.problems))


@dataclass(slots=True)
class Batch:
    """Everything one transaction writes. ``size`` counts input records, for progress."""

    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    stage_moves: list[StageMove] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    size: int = 0
    # Outcome records: the store refuses other references for a stored request
    # (``RequestsConflict``), and ``on_conflict`` says what to write instead — the batch
    # without those records, dead-lettered — or raises.
    whole_requests: bool = False
    on_conflict: Callable[[dict[str, OutcomeState]], Batch] | None = None
    # Nodes the write must create, not find stored (a manifest's previous + 1 versions):
    # ``NodesStored`` otherwise.
    new_nodes: frozenset[str] = frozenset()
    # A batch mapped from what it read of the graph: ``GraphStore.metadata_seq`` before the
    # read, and how to map it again if a write of metadata lands first (``MetadataMoved``).
    metadata_seen: int | None = None
    remap: Callable[[], Batch] | None = None
    # Names whose stage history the mapping read, with the seq of each one's latest move
    # (``GraphStore.record_stage_moves``'s ``judged``).
    judged: dict[str, int | None] = field(default_factory=dict)
    # Nodes written only if absent (``PreparedWrite.keep_stored``).
    keep_stored: frozenset[str] = frozenset()

    def extend(self, other: Batch) -> None:
        self.nodes += other.nodes
        self.edges += other.edges
        self.stage_moves += other.stage_moves
        self.records += other.records
        self.audit += other.audit
        self.size += other.size
        self.keep_stored |= other.keep_stored

    def prepare(self, store: GraphStore) -> PreparedWrite:
        return store.prepare(self.nodes, self.edges, self.audit, stage_moves=self.stage_moves,
                             records=self.records, new_nodes=self.new_nodes,
                             whole_requests=self.whole_requests, judged=self.judged,
                             metadata_seen=self.metadata_seen, keep_stored=self.keep_stored)

    def write(self, store: GraphStore) -> UpsertResult:
        return write_prepared(store, self.prepare(store), self)


def write_prepared(store: GraphStore, ready: PreparedWrite, batch: Batch) -> UpsertResult:
    """``store.write``, and for requests stored with other references, the batch its
    ``on_conflict`` makes instead (a few rounds: another writer may store more meanwhile);
    for a batch mapped from a graph whose metadata or judged stage histories moved since,
    the batch mapped again (``remap``, up to ``ATTEMPTS`` mappings) — after another
    metadata write, inside the write, holding the metadata writers' turn
    (``GraphStore.write_mapped``)."""
    conflicts = mappings = 1
    locked: Callable[[], Batch] | None = None  # mapped in the write, holding the turn
    while True:
        try:
            if locked is not None:
                return store.write_mapped(partial(_prepared_by, locked, store))
            return store.write(ready)
        except RequestsConflict as conflict:
            if batch.on_conflict is None or conflicts > 3:
                raise
            conflicts += 1
            batch = batch.on_conflict(conflict.stored)
        except (MetadataMoved, StagesMoved) as moved:
            if batch.remap is None or mappings >= ATTEMPTS:
                raise
            mappings += 1
            if locked is not None or isinstance(moved, MetadataMoved):
                locked = batch.remap  # mapped again in turn: nothing lands in between
                continue
            pause_before(mappings)  # a stage move meanwhile: promotions take no such turn
            batch = batch.remap()
        ready = batch.prepare(store)


def _prepared_by(remap: Callable[[], Batch], store: GraphStore) -> PreparedWrite:
    return remap().prepare(store)


@dataclass(slots=True)
class LoadSummary:
    records: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    stage_moves: int = 0
    seconds: float = 0.0

    def add(self, result: UpsertResult, size: int) -> None:
        self.records += size
        self.created += result.nodes.created + result.edges.created
        self.updated += result.nodes.updated + result.edges.updated
        self.unchanged += result.nodes.unchanged + result.edges.unchanged
        self.stage_moves += result.stage_moves

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"records": self.records, "created": self.created, "updated": self.updated,
                "unchanged": self.unchanged, "rejected": self.rejected,
                "stage_moves": self.stage_moves, "seconds": round(self.seconds, 3)}


class LoadInterrupted(KeyboardInterrupt):
    """A load stopped by its user (Ctrl-C): ``summary`` counts the batches committed. The
    ones started were waited for, so each batch is written whole or not at all and the
    rest can be sent again (re-sending changes nothing)."""

    def __init__(self, summary: LoadSummary | None = None) -> None:
        super().__init__()
        self.summary = summary or LoadSummary()


def load_batches(
    store: GraphStore,
    batches: Iterable[Batch],
    on_progress: Callable[[int], None] | None = None,
    *,
    prefetch: bool = False,
    stop: threading.Event | None = None,
) -> LoadSummary:
    """Write batches one transaction each, adding up what they did.

    With ``prefetch`` (a bulk load, the way ``lineagegraph ingest`` reads a file) the next
    batch is built (parsed, validated, mapped) and prepared for the store
    (``GraphStore.prepare``) in a thread while the store writes this one, so the two
    overlap, and the cyclic garbage collector runs once per batch instead of whenever
    allocations pile up (``_collector_paused``); and a store that takes writers side by
    side writes ``store.parallel_writes`` batches at once (``_written``), which then commit
    in either order. Only for mappers whose batches do not depend on what earlier batches
    wrote — an outcome file, where at most an unregistered model's placeholder is sent
    again (with the earliest time seen, so either order creates it the same), and where a
    request written twice with different properties ends with the properties of whichever
    of its batches commits last (one batch at a time: the later record's).

    Once ``stop`` is set (the CLI's first Ctrl-C) no more batches are started; those being
    written finish, and ``LoadInterrupted`` says how many records were. A
    ``KeyboardInterrupt`` raised in the load is ``LoadInterrupted`` too, counted once the
    writes in flight ended."""
    summary = LoadSummary()
    started = time.perf_counter()
    try:
        with _collector_paused() if prefetch else nullcontext():
            prepared = _prepared(store, batches, collect=prefetch)
            width = store.parallel_writes if prefetch else 1
            with closing(_built_ahead(prepared) if prefetch else prepared) as ready:
                for size, result in _written(store, ready, width, stop):
                    summary.add(result, size)
                    if on_progress is not None:
                        on_progress(size)
    except KeyboardInterrupt as interrupt:
        summary.seconds = time.perf_counter() - started
        raise LoadInterrupted(summary) from interrupt
    summary.seconds = time.perf_counter() - started
    return summary


def _written(store: GraphStore, prepared: Iterable[tuple[int, PreparedWrite, Batch]],
             width: int, stop: threading.Event | None = None,
             ) -> Iterator[tuple[int, UpsertResult]]:
    """(size, result) of each prepared batch, in order, with up to ``width`` of them being
    written at once, each in its own transaction. If one fails (or the next cannot be
    built), no more are started; the ones already started finish — so at most
    ``width - 1`` batches after a failed one are written — and the failure is raised.
    Once ``stop`` is set, no more are started either: the ones started are yielded, then
    ``KeyboardInterrupt``; so is a ``KeyboardInterrupt`` raised while waiting for them,
    after they ended (a thread's write cannot be called off: counted, not guessed)."""
    def stopped() -> bool:
        return stop is not None and stop.is_set()

    if width <= 1:
        for size, ready, batch in prepared:
            if stopped():
                raise KeyboardInterrupt
            yield size, write_prepared(store, ready, batch)
        return
    pending: deque[tuple[int, Future[UpsertResult]]] = deque()
    with ThreadPoolExecutor(max_workers=width, thread_name_prefix="batch-writer") as pool:
        try:
            for size, ready, batch in prepared:
                if stopped():
                    raise KeyboardInterrupt
                pending.append((size, pool.submit(write_prepared, store, ready, batch)))
                if len(pending) == width:
                    yield pending[0][0], pending[0][1].result()
                    pending.popleft()
        except KeyboardInterrupt:
            wait([future for _, future in pending])
            for written, future in pending:
                if future.exception() is None:
                    yield written, future.result()
            raise
        while pending:
            yield pending[0][0], pending[0][1].result()
            pending.popleft()


def _prepared(store: GraphStore, batches: Iterable[Batch],
              collect: bool) -> Iterator[tuple[int, PreparedWrite, Batch]]:
    for number, batch in enumerate(batches):
        ready = batch.prepare(store)
        if collect and number:
            # The young generations: what the batches written so far left behind. Here, in
            # the builder, before the hand-over: the builder is ahead of the store, so the
            # writer is inside a statement, which releases the GIL. Collected after the
            # hand-over, it held the GIL as the writer began its next transaction (~35 ms
            # a batch of 5,000 outcomes, between every two writes).
            gc.collect(1)
        yield batch.size, ready, batch


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic collector off for a bulk load, which collects after each batch instead.
    A batch's ~10 objects per record live until it is written: with the collector on, the
    young generations filled with them hundreds of times a batch and every full
    collection walked the whole heap — a sixth of a 40k-outcome load (4,750 → 5,760
    outcomes/s on Neo4j, medium bench data). The cycles a batch leaves behind (the
    driver's result objects) are still collected, once a batch."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _built_ahead(items: Iterable[T]) -> Iterator[T]:
    """The items, each made in a thread while the previous one is consumed."""
    handoff: queue.Queue[T | BaseException | None] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: T | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def build() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(None)
        except BaseException as error:  # handed to the consumer, raised there
            put(error)

    thread = threading.Thread(target=build, name="batch-builder", daemon=True)
    thread.start()
    try:
        while (item := handoff.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
