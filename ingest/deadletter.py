"""The dead-letter store: rejected input kept with its reasons, listable and replayable.

Dead letters are ``Record``s in the ``deadletter`` collection, keyed by a hash of source and
payload (the same rejected record sent twice is kept once). A successful replay appends a
record to ``deadletter.replayed`` under the same key — nothing is rewritten — and listing
hides replayed letters. Each source registers how to map its payload to a ``Batch``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lineagegraph.graph.store import GraphStore
from lineagegraph.schema import Record, SchemaError
from lineagegraph.schema.models import canonical_json

from .batch import Batch, IngestError, Problem

COLLECTION = "deadletter"
REPLAYED = "deadletter.replayed"

# source name → function mapping one rejected payload to a Batch (raising IngestError or
# SchemaError when it is still bad). Mappers register themselves at import.
Mapper = Callable[[Any, GraphStore], Batch]
MAPPERS: dict[str, Mapper] = {}


def register_mapper(source: str, mapper: Mapper) -> None:
    MAPPERS[source] = mapper


def dead_letter(source: str, payload: Any, problems: list[Problem]) -> Record:
    """The record that keeps one rejected input (write it with ``store.upsert``)."""
    key = hashlib.sha256(f"{source}\x1f{canonical_json(payload)}".encode()).hexdigest()
    return Record(collection=COLLECTION, key=key, payload={
        "source": source,
        "problems": [p.to_json() for p in problems],
        "reason": "; ".join(str(p) for p in problems),
        "record": payload,
    })


def pending(store: GraphStore, limit: int = 1000) -> list[Record]:
    """Dead letters not yet replayed, oldest first."""
    replayed = {r.key for r in store.records(REPLAYED, limit=1_000_000)}
    return [r for r in store.records(COLLECTION, limit=1_000_000)
            if r.key not in replayed][:limit]


@dataclass(slots=True)
class ReplayResult:
    replayed: list[str] = field(default_factory=list)
    still_failing: dict[str, str] = field(default_factory=dict)


def replay(store: GraphStore, keys: list[str] | None = None) -> ReplayResult:
    """Map each pending letter again and write it (one transaction per letter); a letter
    that still fails stays pending with the new reason reported."""
    result = ReplayResult()
    for letter in pending(store, limit=1_000_000):
        if keys is not None and letter.key not in keys:
            continue
        source = letter.payload["source"]
        mapper = MAPPERS.get(source)
        if mapper is None:
            result.still_failing[letter.key] = f"no mapper registered for source {source!r}"
            continue
        try:
            batch = mapper(letter.payload["record"], store)
            batch.records.append(Record(collection=REPLAYED, key=letter.key,
                                        payload={"source": source}))
            batch.write(store)
        except (IngestError, SchemaError) as error:
            result.still_failing[letter.key] = str(error)
            continue
        result.replayed.append(letter.key)
    return result
