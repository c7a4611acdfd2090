"""``driftSources``: upstream changes in the window before a quality drop, ranked.

A candidate is a node upstream of the target (lineage edges only) that changed in
``[onset - lookback, onset]``:

- it was created in the window (a new version, dataset version, feature or run);
- it is a new dataset version of an upstream data source (a sibling the walk does not
  reach by itself: a bundle retrieving from a source sees every new version of it);
- it is a bundle upstream of (or equal to) the target with a stage move in the window
  (or a model or prompt version: a registry alias moving to it).

Of a source's new versions and of a name's stage moves, the node cap's worth (of each
source, of each name) nearest the onset are candidates; the answer says ``truncated`` when
there were more.

Score, in (0, 1], prefers closer-in-time and fewer-hops changes::

    recency = 1 - (onset - changed_at) / lookback        # 1 at onset, 0 at the window start
    score   = (1 + recency) / (2 * (1 + hops))

so a change on the target itself at onset scores 1, a change one hop up at onset 0.5, and
time breaks ties between equal hop counts. Ties on score go to the later change, then
ID, then the kind of change.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import networkx as nx

from lineagegraph.schema import Node

from .registry import stage_name
from .store import Direction, GraphStore, Hop
from .walk import (
    DEFAULT_LIMITS,
    FULL_DEPTH,
    INLINE_CHARS,
    Budget,
    Subgraph,
    WalkLimits,
    filled,
    hidden,
    walk,
)

_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)

# A date part with years or months: ISO 8601, but no fixed length of time.
_CALENDAR = re.compile(r"^P(?:\d+(?:\.\d+)?[YMWD])*?\d+(?:\.\d+)?[YM]")

CHANGE_BY_KIND = {
    "DatasetVersion": "new dataset version",
    "TrainingRun": "new run",
    "Feature": "new feature version",
    "ModelVersion": "new model version",
    "PromptVersion": "new prompt version",
    "Toolset": "new tool set version",
    "PolicyPack": "new policy pack version",
    "Bundle": "new bundle version",
}


MAX_LOOKBACK = timedelta(days=36_500)


STAGED_KINDS = frozenset({"Bundle", "ModelVersion", "PromptVersion"})


def parse_duration(text: str) -> timedelta:
    """ISO 8601 durations of weeks, days, hours, minutes, seconds (``P7D``, ``PT36H``)."""
    written = text.strip().upper()
    match = _DURATION.match(written)
    if not match and _CALENDAR.match(written):
        raise ValueError(f"{text!r}: months and years have no fixed length; give days "
                         "instead, such as P30D or P365D")
    if not match or written in ("P", "PT") or written.endswith("T"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration such as P7D or PT12H")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    try:
        duration = timedelta(**parts)
    except OverflowError:  # past timedelta's own range: longer still
        duration = timedelta.max
    if duration > MAX_LOOKBACK:  # and an onset minus it stays a date
        raise ValueError(f"{text!r} is longer than a hundred years (P{MAX_LOOKBACK.days}D)")
    return duration


@dataclass(slots=True)
class DriftCandidate:
    node: Node
    change: str
    changed_at: datetime
    hops: int
    score: float
    path: list[str]  # from the candidate to the target


class DriftSources(list[DriftCandidate]):
    """Candidates best first; ``truncated``: a cap cut the upstream walk, so changes past
    it are missing, or a source's new versions or a staged name's moves in the window (the
    node cap's worth of each, the nearest the onset, are candidates). A list still, for
    callers that only rank."""

    def __init__(self, candidates: Iterable[DriftCandidate], truncated: bool) -> None:
        super().__init__(candidates)
        self.truncated = truncated


def score(changed_at: datetime, onset: datetime, lookback: timedelta, hops: int) -> float:
    recency = 1 - (onset - changed_at) / lookback if lookback else 1.0
    return (1 + recency) / (2 * (1 + hops))


def drift_sources(
    store: GraphStore,
    node_id: str,
    onset: datetime,
    lookback: timedelta = timedelta(days=7),
    limits: WalkLimits = DEFAULT_LIMITS,
) -> DriftSources | None:
    """Ranked upstream changes in the window; None if ``node_id`` is unknown."""
    since = onset - lookback
    # Everything upstream: a walk the depth cap cuts says ``truncated``.
    upstream = walk(store, node_id, Direction.UPSTREAM, FULL_DEPTH, limits=limits)
    if node_id not in upstream.nodes:
        return None
    graph = _digraph(upstream)
    truncated = upstream.truncated
    found: dict[tuple[str, str], DriftCandidate] = {}

    def add(node: Node, change: str, at: datetime, hops: int, path: list[str]) -> None:
        candidate = DriftCandidate(node, change, at, hops, score(at, onset, lookback, hops),
                                   path)
        key = (node.id, change)
        if key not in found or found[key].score < candidate.score:
            found[key] = candidate

    for nid, node in upstream.nodes.items():
        if since <= node.created_at <= onset and node.kind in CHANGE_BY_KIND:
            add(node, CHANGE_BY_KIND[node.kind], node.created_at, upstream.degrees[nid],
                _path(graph, upstream.degrees, nid))

    # A new dataset version of a source is a change upstream only where something reads
    # the source itself (a bundle retrieving from it, a feature derived from it). Reached
    # through a dataset version's VERSION_OF, the source's other versions are siblings of
    # the data behind the target, not behind it (design §2).
    read_whole = {e.target for e in upstream.edges.values() if e.type != "VERSION_OF"}
    sources = [nid for nid, n in upstream.nodes.items()
               if n.kind == "DataSource" and nid in read_whole]
    # A version the walk reached too, through the data behind a model, may be nearer this
    # way: ``add`` keeps the fewer hops. A source versioned every few minutes has
    # thousands in the window: the node cap's worth per source, the nearest the onset,
    # read from the index of the family each version keeps (not by expanding every
    # VERSION_OF edge of a source with years of versions).
    cap = limits.max_nodes
    rows = store.family_versions(sources, count=cap + 1, newest=True, since=since,
                                 until=onset, inline=INLINE_CHARS)
    rows.sort(key=lambda hop: (hop.origin, hop.node.created_at, hop.node.id), reverse=True)
    per_source: Counter[str] = Counter()
    newest = []
    for hop in rows:
        per_source[hop.origin] += 1
        if per_source[hop.origin] <= cap:
            newest.append(hop)
    truncated |= len(newest) < len(rows)
    # Large properties within what the walk left of its budget, the newest first. Versions
    # the walk holds cost nothing and are kept whatever the budget cuts: left out, they
    # would count only by the walk's longer way round to them.
    held = [hop for hop in newest if hop.node.id in upstream.nodes]
    rest = [hop for hop in newest if hop.node.id not in upstream.nodes]
    rest, spent = filled(store, rest, Budget(upstream.chars_left), {}, order=None)
    truncated |= spent
    held = [Hop(hop.origin, hop.edge, upstream.nodes[hop.node.id]) for hop in held]
    for hop in held + rest:
        if hidden(hop.node, include_archived=False):  # as the walk skips them
            continue
        add(hop.node, CHANGE_BY_KIND["DatasetVersion"], hop.node.created_at,
            upstream.degrees[hop.origin] + 1,
            [hop.node.id, *_path(graph, upstream.degrees, hop.origin)])

    # Stage moves of the bundles upstream, and of model and prompt versions (registry
    # aliases: MLflow's champion moving to a version is a change of what serves): only the
    # window's, and of a name promoted every minute the node cap's worth, the nearest the
    # onset (its history up to the onset may be tens of thousands of moves).
    staged = {nid: stage_name(node) for nid, node in upstream.nodes.items()
              if node.kind in STAGED_KINDS}
    moves_of = store.stage_histories(staged.values(), since=since, until=onset, last=cap + 1)
    for moves in moves_of.values():
        if len(moves) > cap:
            truncated = True
            del moves[0]  # oldest first: the one past the cap is the earliest
    for nid, name in staged.items():
        node = upstream.nodes[nid]
        for move in moves_of.get(name, ()):
            if node.version in (move.to_version, move.from_version):
                change = (f"stage move {move.environment}: {move.from_version or '-'} → "
                          f"{move.to_version or '-'}")
                add(node, change, move.at, upstream.degrees[nid],
                    _path(graph, upstream.degrees, nid))

    return DriftSources(sorted(found.values(), key=lambda c: (
        -c.score, -c.changed_at.timestamp(), c.node.id, c.change)), truncated)


def _digraph(subgraph: Subgraph) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(subgraph.nodes)
    graph.add_edges_from((e.source, e.target) for e in subgraph.edges.values())
    return graph


def _path(graph: nx.DiGraph, degrees: dict[str, int], candidate: str) -> list[str]:
    """Fewest-hop path from the candidate down to the walk's start (edges point upstream,
    so it runs against them), read off the walk's degrees (its fewest hops from the start):
    each step to the least ID one hop nearer, so of several paths as short the answer does
    not depend on the order a store returned the edges in."""
    path = [candidate]
    while degrees[path[-1]] > 0:
        nearer = degrees[path[-1]] - 1
        path.append(min(n for n in graph.predecessors(path[-1]) if degrees.get(n) == nearer))
    return path
