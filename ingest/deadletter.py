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
from typing import Any

from pydantic import ValidationError

from lineagegraph.graph.store import GraphStore
from lineagegraph.schema import InvalidId, Record, SchemaError
from lineagegraph.schema.models import canonical_json

from .batch import Batch, IngestError, Problem

COLLECTION = "deadletter"
REPLAYED = "deadletter.replayed"
PAGE = 1000

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


def _all(store: GraphStore, collection: str) -> Iterator[Record]:
    """Every record of a collection, a keyset page at a time."""
    after: int | None = None
    while True:
        page = store.records(collection, after_seq=after, limit=PAGE)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].seq


def pending(store: GraphStore, limit: int = 1000, source: str | None = None) -> list[Record]:
    """Dead letters not yet replayed (of ``source``, if given), oldest first."""
    replayed = {r.key for r in _all(store, REPLAYED)}
    found = []
    for letter in _all(store, COLLECTION):
        if letter.key in replayed or (source and letter.payload.get("source") != source):
            continue
        found.append(letter)
        if len(found) >= limit:
            break
    return found


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
    letters = [letter for letter in pending(store, limit=1_000_000)
               if keys is None or any(k and letter.key.startswith(k) for k in keys)]
    result = ReplayResult(unknown=[
        k for k in keys or () if not k or not any(x.key.startswith(k) for x in letters)])
    for letter in letters:
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
            result.still_failing[letter.key] = str(error)
            continue
        result.replayed.append(letter.key)
    return result


def _signed(batch: Batch, actor: str | None) -> Batch:
    """``batch`` with its audit entries under ``actor``: mappers take no actor (they sign
    as their source, or "deadletter.replay"), and a replay is the replayer's write."""
    if actor is not None:
        batch.audit = [entry.model_copy(update={"actor": actor}) for entry in batch.audit]
    return batch
