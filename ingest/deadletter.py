"""The dead-letter store: rejected input kept with its reasons, listable and replayable.

Dead letters are ``Record``s in the ``deadletter`` collection, keyed by a hash of source and
payload (the same rejected record sent twice is kept once). A successful replay appends a
record to ``deadletter.replayed`` under the same key — nothing is rewritten — and listing
hides replayed letters. Each source registers how to map its payload to a ``Batch``; the
modules of this package register theirs at import, and replay imports them all first, so
a letter finds its mapper whichever command or server wrote it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from lineagegraph.graph.store import PAGE_CHARS, GraphStore, RecordFilter
from lineagegraph.schema import InvalidId, Record, SchemaError
from lineagegraph.schema.models import canonical_json, error_message, now

from .batch import Batch, IngestError, Problem

COLLECTION = "deadletter"
REPLAYED = "deadletter.replayed"
STORE_PAGE = 1000  # letters read at once (within ``store.PAGE_CHARS``)

# source name → function mapping one rejected payload to a Batch (raising IngestError or
# SchemaError when it is still bad). Mappers register themselves at import.
Mapper = Callable[[Any, GraphStore], Batch]
MAPPERS: dict[str, Mapper] = {}


def register_mapper(source: str, mapper: Mapper) -> None:
    MAPPERS[source] = mapper


def letter_key(source: str, payload: Any) -> str:
    """The key of the letter keeping ``payload`` rejected from ``source``."""
    return hashlib.sha256(f"{source}\x1f{canonical_json(payload)}".encode()).hexdigest()


def dead_letter(source: str, payload: Any, problems: list[Problem]) -> Record:
    """The record that keeps one rejected input (write it with ``store.upsert``)."""
    return Record(collection=COLLECTION, key=letter_key(source, payload), payload={
        "source": source,
        "problems": [p.to_json() for p in problems],
        "reason": "; ".join(str(p) for p in problems),
        "record": payload,
    })


def pending(store: GraphStore, limit: int = 1000, source: str | None = None) -> list[Record]:
    """Dead letters not yet replayed (of ``source``, if given), oldest first."""
    return pending_page(store, limit, source)[0]


def pending_page(store: GraphStore, limit: int = 1000, source: str | None = None,
                 after_seq: int | None = None, replayed: set[str] | None = None,
                 until: datetime | None = None) -> tuple[list[Record], int | None]:
    """A page of ``pending`` letters after ``after_seq`` (kept no later than ``until``),
    and the cursor of the next page (None at the end). A page holds at most
    ``store.PAGE_CHARS`` of letters' JSON, read in store pages of up to ``STORE_PAGE``
    letters and no more characters (a letter keeps a rejected record, up to a request body
    each; replayed letters stay, and a small ``limit`` must not mean a statement per
    letter skipped), and at least one letter when any is left. ``replayed``: the keys
    replayed, if the caller read them already."""
    if replayed is None:
        replayed = replayed_keys(store)
    found: list[Record] = []
    budget = PAGE_CHARS  # what the letters found may hold
    while True:
        page = store.record_page(RecordFilter(COLLECTION, after_seq=after_seq, until=until),
                                 limit=STORE_PAGE, max_chars=max(budget, 1))
        for index, (letter, size) in enumerate(zip(page.records, page.sizes, strict=True)):
            if found and size > budget:
                return found, after_seq
            after_seq = letter.seq
            if letter.key in replayed or (source and letter.payload.get("source") != source):
                continue
            found.append(letter)
            budget -= size
            if len(found) >= limit:
                left = page.more or index < len(page.records) - 1
                return found, after_seq if left else None
        if not page.more:
            return found, None


def describe(letter: Record) -> dict[str, Any]:
    """A letter as listed: key, source, reason, problems, the record, when."""
    payload = letter.payload
    return {"key": letter.key, "source": payload.get("source"), "reason": payload.get("reason"),
            "problems": payload.get("problems", []), "record": payload.get("record"),
            "at": letter.at.isoformat()}


@dataclass(slots=True)
class ReplayResult:
    replayed: list[str] = field(default_factory=list)
    still_failing: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)  # asked-for keys matching no letter

    def to_json(self) -> dict[str, Any]:
        return {"replayed": self.replayed, "still_failing": self.still_failing,
                "unknown": self.unknown}


def _import_mappers() -> None:
    from lineagegraph import ingest

    for module in pkgutil.iter_modules(ingest.__path__):
        # A module needing an optional dependency that is absent registers nothing; its
        # letters then report "no mapper registered".
        with contextlib.suppress(ImportError):
            importlib.import_module(f"{ingest.__name__}.{module.name}")


def replay(store: GraphStore, keys: list[str] | None = None, *,
           actor: str | None = None) -> ReplayResult:
    """Map pending letters again (those whose key starts with one of ``keys`` — ``list``
    shows keys shortened — or all) and write each that passes in its own transaction; one
    still failing stays pending and its new reason is reported. ``actor`` signs the audit
    entries (a REST caller's token name); None keeps each mapper's own (the CLI's)."""
    _import_mappers()
    result = ReplayResult()
    matched: set[str] = set()
    for letter in _pending_letters(store):  # streamed: letters can be large
        # None: every letter; [] (or keys none matches): not this one.
        asked = None if keys is None else [k for k in keys if k and letter.key.startswith(k)]
        if asked == []:
            continue
        matched.update(asked or ())
        source = letter.payload["source"]
        mapper = MAPPERS.get(source)
        if mapper is None:
            result.still_failing[letter.key] = f"no mapper registered for source {source!r}"
            continue
        try:
            batch = _signed(mapper(letter.payload["record"], store), actor)
            batch.records.append(Record(collection=REPLAYED, key=letter.key,
                                        payload={"source": source}))
            batch.write(store)
        except (IngestError, SchemaError, InvalidId, ValidationError) as error:
            result.still_failing[letter.key] = error_message(error)
            continue
        result.replayed.append(letter.key)
    result.unknown = [k for k in keys or () if k not in matched]
    return result


def replayed_keys(store: GraphStore) -> set[str]:
    return {r.key for r in store.all_records(REPLAYED)}


def _pending_letters(store: GraphStore) -> Iterator[Record]:
    """Every letter pending when called, a page at a time: not those kept meanwhile (a
    replay under a steady inflow of letters would not end)."""
    replayed, until = replayed_keys(store), now()
    after: int | None = None
    while True:
        letters, after = pending_page(store, after_seq=after, replayed=replayed, until=until)
        yield from letters
        if after is None:
            return


def _signed(batch: Batch, actor: str | None) -> Batch:
    """``batch`` with its audit entries under ``actor``: mappers take no actor (they sign
    as their source, or "deadletter.replay"), and a replay is the replayer's write."""
    if actor is not None:
        batch.audit = [entry.model_copy(update={"actor": actor}) for entry in batch.audit]
    return batch
