"""Request counts kept as outcomes are written, so traffic questions sum rows, not requests.

A blast radius over a hot model counts every request served by the bundles that pin it:
hundreds of thousands at scale, too many to count per question. The stores therefore keep a
rollup: one counter per (the set of nodes a request names over its outcome edges, its
environment, its UTC day). Keyed by the *set*, a request served by two counted nodes (a
bundle and a feature it used) is still one request, so sums over matching keys are exact
``count(DISTINCT …)`` answers. Days wholly inside a window come from the rollup; the parts
of the first and last day that are not are counted from the requests themselves.

Counters move with the graph inside the writing transaction: a new request adds one, a
re-sent one changes nothing, and a request that gains an outcome edge or changes
environment moves from its old key to its new one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from lineagegraph.schema import NODE_KINDS_BY_LABEL, Edge, Node

# Edges from a request to what served it (a bundle, or a model/prompt/policy directly).
OUTCOME_EDGES = ("SERVED_BY", "USED_MODEL", "USED_PROMPT", "USED_POLICY", "USED_FEATURE")
OUTCOME_KIND = "InferenceOutcome"
# Every request's ID is "<prefix>:<request ID>", so the requests are one range of the ID
# order: [first, end), ";" being the character after ":".
_PREFIX = NODE_KINDS_BY_LABEL[OUTCOME_KIND].prefix
REQUEST_IDS = (f"{_PREFIX}:", f"{_PREFIX};")

_DAY = timedelta(days=1)
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class OutcomeState:
    """What the rollup knows of one request."""

    environment: str | None
    created_at: datetime
    targets: frozenset[str]

    @property
    def key(self) -> TrafficKey | None:
        fields = _key_fields(self.targets, self.environment, self.created_at)
        return TrafficKey(*fields) if fields is not None else None


def _key_fields(targets: Iterable[str], environment: str | None,
                created_at: datetime) -> tuple[tuple[str, ...], str | None, str] | None:
    """A ``TrafficKey``'s fields as a plain tuple (cheap to hash in a batch's tally)."""
    if not targets:  # names nothing: no traffic question can count it
        return None
    return (tuple(sorted(targets)), environment, created_at.astimezone(UTC).date().isoformat())


@dataclass(frozen=True, slots=True)
class TrafficKey:
    targets: tuple[str, ...]
    environment: str | None
    day: str  # ISO date: sorts in time order

    @property
    def id(self) -> str:
        return "\x1f".join((*self.targets, "", self.environment or "", self.day))

    @property
    def signature(self) -> str:
        return "\x1f".join(self.targets)


def outcome_ids(nodes: Sequence[Node], edges: Sequence[Edge]) -> list[str]:
    """Requests a batch may move between keys: those written and those gaining edges."""
    ids = {n.id for n in nodes if n.kind == OUTCOME_KIND}
    ids |= {e.source for e in edges if e.type in OUTCOME_EDGES}
    return sorted(ids)


def deltas(before: dict[str, OutcomeState], nodes: Sequence[Node], edges: Sequence[Edge],
           counted_through: str | None = None) -> list[tuple[TrafficKey, int]]:
    """Counter changes for a batch, given the stored state of its requests before it (the
    upsert rules: properties replaced, ``created_at`` kept from the first write). While a
    rebuild of the rollup runs, only for the requests up to ``counted_through``, the last
    request ID it has counted: it counts the ones after as it reaches them."""
    written = {n.id: n for n in nodes if n.kind == OUTCOME_KIND}
    gained: dict[str, set[str]] = {}
    for edge in edges:
        if edge.type in OUTCOME_EDGES:
            gained.setdefault(edge.source, set()).add(edge.target)
    # Tallied on plain tuples: a bulk load passes every request of a batch through here.
    change: Counter[tuple[tuple[str, ...], str | None, str]] = Counter()
    for oid in written.keys() | gained.keys():  # the batch's ``outcome_ids``
        if counted_through is not None and oid > counted_through:
            continue
        old = before.get(oid)
        node = written.get(oid)
        if node is not None:
            environment = node.properties.get("environment")
            created_at = old.created_at if old is not None else node.created_at
        elif old is not None:
            environment, created_at = old.environment, old.created_at
        else:
            continue  # not a stored request: the batch's edge check rejects it
        targets = gained.get(oid, set())
        old_key = None
        if old is not None:
            targets = old.targets | targets
            old_key = _key_fields(old.targets, old.environment, old.created_at)
        new_key = _key_fields(targets, environment, created_at)
        if old_key == new_key:
            continue
        if old_key is not None:
            change[old_key] -= 1
        if new_key is not None:
            change[new_key] += 1
    keyed = [(TrafficKey(*fields), n) for fields, n in change.items() if n]
    return sorted(keyed, key=lambda kv: kv[0].id)


@dataclass(frozen=True, slots=True)
class Window:
    """A ``[since, until]`` window split into whole UTC days and the rest."""

    first_day: str | None  # None: from the beginning
    last_day: str | None  # None: to the end
    whole_days: bool  # False: no day lies wholly inside
    partial: tuple[tuple[datetime, datetime], ...]  # inclusive ranges outside whole days


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def split_window(since: datetime | None, until: datetime | None) -> Window:
    since = since.astimezone(UTC) if since is not None else None
    until = until.astimezone(UTC) if until is not None else None
    if since is not None and until is not None and until < since:
        return Window(None, None, False, ())
    # The calendar's first and last days have no day before or after: a window starting
    # within its last day, or ending within its first, holds no whole day.
    end = datetime.max.replace(tzinfo=UTC)
    if since is not None and since.date() == date.max and since != _midnight(date.max):
        return Window(None, None, False, ((since, until or end),))
    if until is not None and until.date() == date.min and until < _midnight(
            date.min) + _DAY - _TICK:
        return Window(None, None, False, ((since or _midnight(date.min), until),))
    first = (None if since is None
             else since.date() if since == _midnight(since.date()) else since.date() + _DAY)
    last = (None if until is None
            else until.date() if until == _midnight(until.date()) + _DAY - _TICK
            else until.date() - _DAY)
    if since is not None and until is not None and first is not None and last is not None \
            and first > last:
        return Window(None, None, False, ((since, until),))
    partial = []
    if since is not None and first is not None and first != since.date():
        partial.append((since, _midnight(first) - _TICK))
    if until is not None and last is not None and last != until.date():
        partial.append((_midnight(last + _DAY), until))
    return Window(first.isoformat() if first else None, last.isoformat() if last else None,
                  True, tuple(partial))
