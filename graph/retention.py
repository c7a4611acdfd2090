"""Retention: archive bundle versions that never went past staging and are older than a
limit. Production versions are kept forever, and so is any version live now (staging
included); archiving is a recorded property change (``archived: true``), never a delete;
walks skip archived nodes unless asked, and rollbacks never return to them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from lineagegraph.schema import AuditEntry, Node
from lineagegraph.schema.models import now as utc_now

from .drift import MAX_LOOKBACK, parse_duration
from .store import RETIRED, GraphStore, concurrently

# Environments a version may have visited and still be archived (``retired`` is a record
# that it left service, no environment it served in).
PRE_RELEASE = frozenset({"draft", "staging", RETIRED})
_SHORT = re.compile(r"^(\d+(?:\.\d+)?)\s*([wdhm])$")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}


def parse_age(text: str) -> timedelta:
    """``90d``, ``12h``, ``2w`` or an ISO 8601 duration (``P90D``)."""
    match = _SHORT.match(text.strip().lower())
    if match:
        try:
            age = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
        except OverflowError:  # past timedelta's own range: longer still
            age = timedelta.max
        if age > MAX_LOOKBACK:  # the cap parse_duration puts on P…: a cutoff must stay a date
            raise ValueError(f"{text!r} is longer than a hundred years ({MAX_LOOKBACK.days}d)")
        return age
    try:
        return parse_duration(text)
    except ValueError as error:
        if "not an ISO 8601 duration" not in str(error):
            raise  # well formed, and what is wrong is said
        raise ValueError(f"{text!r} is not an age such as 90d, 12h, 2w or P90D") from None


@dataclass(frozen=True, slots=True)
class Candidate:
    node: Node
    environments: tuple[str, ...]  # where it ever was (all pre-release, none now)


def _archivable(store: GraphStore, bundles: Iterable[Node], times: Iterable[datetime]
                ) -> dict[str, Callable[[Node], tuple[str, ...] | None]]:
    """For the versions of each name of ``bundles``: where a version ever was, if
    retention may archive it — never moved into an environment past staging, and live
    nowhere at any of ``times`` — else None. Read for all the bundles at once, from the
    last move of each of their versions into each environment and the last move in each
    environment at each time: never a name's history (a name CI promotes hourly has tens of
    thousands of moves), nor its moves to versions other than theirs."""
    pairs = {(b.name or "", b.version) for b in bundles}
    wanted = sorted({name for name, _ in pairs})
    if not wanted:
        return {}
    visits, *in_effect = concurrently(
        lambda: store.stage_latest(pairs=pairs, per="visit"),
        *(lambda when=when: store.stage_latest(until=when, names=wanted)
          for when in sorted(set(times))))
    visited: dict[tuple[str, str | None], set[str]] = {}
    for move in visits:
        visited.setdefault((move.name, move.to_version), set()).add(move.environment)
    live = {(move.name, move.to_version) for moves in in_effect for move in moves
            if move.environment != RETIRED and move.to_version is not None}

    def judge(name: str) -> Callable[[Node], tuple[str, ...] | None]:
        def where(bundle: Node) -> tuple[str, ...] | None:
            ever = visited.get((name, bundle.version), set())
            if ever <= PRE_RELEASE and (name, bundle.version) not in live:
                return tuple(sorted(ever))
            return None

        return where

    return {name: judge(name) for name in wanted}


def plan(store: GraphStore, older_than: timedelta, at: datetime | None = None,
         page: int = 1000) -> list[Candidate]:
    """Bundle versions created before ``at - older_than``, not archived, never moved into
    an environment past staging, and live nowhere: neither at ``at`` nor now (a version
    serving staging is in use, whatever its age; a move dated later is not in effect)."""
    clock = utc_now()
    cutoff = (at or clock) - older_than
    candidates: list[Candidate] = []
    old: list[Node] = []

    def judged() -> None:
        # The names of a page of bundles judged in one read for them all.
        judges = _archivable(store, old, (at or clock, clock))
        for bundle in old:
            visited = judges[bundle.name or ""](bundle)
            if visited is not None:
                candidates.append(Candidate(bundle, visited))
        old.clear()

    for bundle in store.all_nodes(["Bundle"], page):
        if bundle.created_at >= cutoff or bundle.properties.get("archived"):
            continue
        old.append(bundle)
        if len(old) == page:
            judged()
    judged()
    return candidates


def apply(store: GraphStore, candidates: list[Candidate], actor: str,
          at: datetime | None = None) -> int:
    """Mark the candidates archived, with an audit entry each, in one transaction.

    A plan may be old by the time it is applied (a reviewed ``plan``, or a long one over
    many bundles), so each candidate is judged again from what is stored as the write
    lands (``GraphStore.archive_judged``): one archived meanwhile, promoted past staging,
    or live now — in any environment, one its name never served in included — is left
    alone. Returns how many versions were archived."""
    when = at or utc_now()

    def judged() -> list[Node]:
        nodes = store.get([c.node.id for c in candidates])
        judges = _archivable(store, nodes.values(), (utc_now(),))
        return [marked(node) for c in candidates if (node := nodes.get(c.node.id)) is not None
                and not node.properties.get("archived")
                and judges[node.name or ""](node) is not None]

    def marked(node: Node) -> Node:
        return node.model_copy(update={"properties": {**node.properties, "archived": True,
                                                      "archived_at": when.isoformat()}})

    archived = store.archive_judged(
        judged,
        lambda node: AuditEntry(action="retention.archive", target=node.id, actor=actor,
                                at=when, before={"archived": False},
                                after={"archived": True}))
    return len(archived)
