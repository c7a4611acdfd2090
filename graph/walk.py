"""Bounded walks over the ``GraphStore`` port, written once for both stores.

A walk expands a frontier of node IDs hop by hop, de-duplicating against what it has
visited, so its cost grows with the nodes and edges it returns — never with the number of
paths, which explodes on diamonds and dense fan-out. It stops at the depth cap or the node
cap and then says ``truncated``. A store with round trips to save (Neo4j) answers up to
``HOPS_AHEAD`` hops of that frontier walk in one statement; the walk replays them hop by
hop, so both stores follow the same rules.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from lineagegraph.schema import EDGE_KINDS_BY_TYPE, LINEAGE_EDGE_TYPES, Edge, Node

from .store import (
    PAGE_CHARS,
    Direction,
    GraphStore,
    Hop,
    HopsAhead,
    SideHop,
    hop_order,
    replaced,
)


@dataclass(slots=True)
class Subgraph:
    """Nodes with their degree (fewest hops from the start) and the edges between them."""

    root: str
    nodes: dict[str, Node] = field(default_factory=dict)
    degrees: dict[str, int] = field(default_factory=dict)
    edges: dict[tuple[str, str, str], Edge] = field(default_factory=dict)
    truncated: bool = False
    # The depth cap cut it (more lay one hop past it); in a one-direction walk nothing else
    # did, so every node within the cap is here.
    depth_cut: bool = False
    # The rows of the walk's ``SideHop``, when the store read them with the first hops,
    # as read (``filled`` reads in what they left out, within ``chars_left``).
    side: list[Hop] | None = None
    chars_left: int = 0  # of ``WalkLimits.max_chars``, what the walk did not spend

    def ordered(self) -> list[tuple[Node, int]]:
        """Nodes by degree, then ID: a stable order for pages and tests."""
        ids = sorted(self.nodes, key=lambda node_id: (self.degrees[node_id], node_id))
        return [(self.nodes[i], self.degrees[i]) for i in ids]


@dataclass(frozen=True, slots=True)
class WalkLimits:
    max_depth: int = 20  # the configured cap: a requested depth beyond it is cut to it
    max_nodes: int = 10_000
    # Characters of properties longer than ``INLINE_CHARS`` one walk reads (``filled``).
    max_chars: int = 32 * 2**20


# The settings that cut walks, for the warnings that say a walk was cut.
WALK_CAPS = "LINEAGEGRAPH_MAX_DEPTH, LINEAGEGRAPH_MAX_NODES or LINEAGEGRAPH_MAX_WALK_CHARS"

# A walk's rows hold a node's or an edge's properties up to this many characters; longer
# ones (up to 1 MiB each) are read apart, for the rows the walk goes on with, within
# ``WalkLimits.max_chars``. Most nodes' properties are a few hundred characters; without
# the bound, a walk of 10,000 nodes could hold 10 GiB of them.
INLINE_CHARS = 4096


DEFAULT_LIMITS = WalkLimits()
# The depth of a lineage query that names none (GraphQL `lineage`; the warm-up runs it).
LINEAGE_DEPTH = 3
# The depth of a walk that wants everything there is (trace, blast radius, drift sources):
# past any cap, so the cap bounds it and, where it cut more, the walk says ``truncated``.
# A depth the caller picked within the cap is that caller's choice, never a cut.
FULL_DEPTH = sys.maxsize

# Hops per ``expand_hops`` round trip: lineage from a request to its sources is 5-7 hops.
HOPS_AHEAD = 8


def walk(
    store: GraphStore,
    start: str,
    direction: Direction,
    depth: int,
    *,
    limits: WalkLimits = DEFAULT_LIMITS,
    kinds: Sequence[str] | None = None,
    edge_types: Sequence[str] = LINEAGE_EDGE_TYPES,
    enough: Callable[[Subgraph, int], bool] | None = None,
    include_archived: bool = False,
    root: Node | None = None,
    side: SideHop | None = None,
) -> Subgraph:
    """Walk from ``start`` up to ``depth`` hops.

    ``enough`` is asked after each complete hop of a one-direction walk, with the hops
    walked, whether the walk so far serves a page: its nodes and every edge among them (a
    paged query walks only as far as its page reaches, one hop past the page's deepest
    degree, where the edges from those nodes are read).

    ``BOTH`` is the union of an upstream and a downstream walk (as DataHub and Marquez
    show lineage), not an undirected walk that would wander from a model's inputs into
    their other consumers. ``kinds`` filters the nodes returned, not the ones walked
    through: a trace still reaches data sources through runs and features. But edges that
    can only lead to leaves outside ``kinds`` are not walked (a model's requests, for
    ``kinds: [Bundle]`` downstream), so they neither spend the node cap nor cut the walk.
    Archived nodes (retention) are neither returned nor walked through unless
    ``include_archived``.

    ``truncated`` says a limit cut the walk: the depth cap stopped it short of what was
    asked with more to reach (one more hop is read from the last frontier to know, only
    when that frontier is not empty; ``FULL_DEPTH`` asks for everything the caps allow),
    the node cap stopped it, or a hop had more edge rows than the walk reads at once
    (``max_nodes`` plus the nodes already visited plus one per frontier node). Where a hop
    is cut, the rows kept are the first in ``hop_order`` (the least node IDs) on every
    store, among the first ``ORDERED_SCAN`` times as many rows the store reads. Every page
    of one query says the same about the depth cap: a paged walk asked past the cap walks
    to the cap, as the unpaged one does, since only there can it tell. The node cap is
    only known where the walk meets it: a page whose walk stops before it says false, as
    nothing before the page's end was cut; knowing more would take the whole walk for
    every page.
    """
    result = Subgraph(root=start)
    effective_depth = max(0, min(depth, limits.max_depth))
    if depth > limits.max_depth:
        enough = None  # only a walk that reaches the depth cap can tell whether it cut
    directions = (
        (Direction.UPSTREAM, Direction.DOWNSTREAM) if direction is Direction.BOTH
        else (direction,)
    )
    types = {one: _walked_types(edge_types, one, kinds) for one in directions}

    def fetch_ahead(frontier: list[str], one: Direction, hops: int, seen: set[str],
                    side: SideHop | None = None) -> HopsAhead | None:
        return store.expand_hops(frontier, one, min(HOPS_AHEAD, hops), seen=seen,
                                 edge_types=types[one], row_cap=limits.max_nodes + 1,
                                 side=side, inline=INLINE_CHARS)

    budget = Budget(limits.max_chars)

    # Hops fetched ahead in one round trip, for stores that offer it: [] means "ask when
    # needed", None "ask hop by hop". A paged walk asks hop by hop, as it may stop early.
    first_ahead: list[list[Hop]] | None = [] if enough is None else None
    if root is None and enough is None and effective_depth > 0:
        # The start node comes back with the first hops ahead: one round trip, not two.
        fetched = fetch_ahead([start], directions[0], effective_depth, {start}, side)
        first_ahead = fetched.hops if fetched is not None else None
        if fetched is not None:
            root = fetched.start.get(start)
            if root is None:
                return result
            if start in fetched.elided:
                root = None  # read whole below
            # As read: the caller fills them in (``filled``) after the walk, whose own
            # rows go first within the budget (``Subgraph.chars_left``).
            result.side = fetched.side
    if root is None:  # a caller that already holds the start node saves the round trip
        root = store.get([start]).get(start)
    if root is None:
        return result
    result.nodes[start] = root
    result.degrees[start] = 0
    for one in directions:
        seen = {start}  # per direction: a node reached upstream is walked on downstream too
        frontier = [start]
        ahead = first_ahead if one is directions[0] else [] if enough is None else None
        for hop in range(1, effective_depth + 1):
            if not frontier or result.truncated and len(result.nodes) >= limits.max_nodes:
                frontier = []
                break
            limit = limits.max_nodes + len(result.nodes) + len(frontier) + 1
            if ahead == []:
                fetched = fetch_ahead(frontier, one, effective_depth - hop + 1, seen)
                ahead = fetched.hops if fetched is not None else None
            # In ``hop_order``, so that a hop the limit cuts keeps the same rows on every
            # store. The store then reads up to ``ORDERED_SCAN`` times the rows it keeps,
            # not the first ``limit`` (a hot bundle's 9,893 requests cut at 5,000 on Neo4j:
            # 222 → 264 ms; 300,000 cut at 10,000: ~410 → ~520 ms); asking again in order
            # only once cut would have cost 446 ms for the first.
            rows = (ahead.pop(0) if ahead
                    else store.expand(frontier, one, edge_types=types[one], limit=limit,
                                      ordered=True, inline=INLINE_CHARS))
            if len(rows) >= limit:
                result.truncated = True
            rows, spent = filled(store, rows, budget, result.nodes)
            dropped = spent  # the store's frontier for the hops ahead still holds them
            result.truncated |= spent
            if len(rows) > limits.max_nodes - len(result.nodes):
                rows = sorted(rows, key=hop_order)  # the node cap may cut: least IDs first
            next_frontier: list[str] = []
            for row in rows:
                node_id = row.node.id
                if hidden(row.node, include_archived):
                    dropped = True
                    continue
                if node_id not in result.nodes:
                    if len(result.nodes) >= limits.max_nodes:
                        result.truncated = dropped = True
                        continue
                    result.nodes[node_id] = row.node
                    result.degrees[node_id] = hop
                else:
                    result.degrees[node_id] = min(result.degrees[node_id], hop)
                result.edges[row.edge.key] = row.edge
                if node_id not in seen:
                    seen.add(node_id)
                    next_frontier.append(node_id)
            # Past a hop the budget cut, nodes would be reached the long way round the
            # ones it left out, at degrees deeper than theirs: the walk stops, as at the
            # node cap.
            frontier = [] if spent else next_frontier
            if dropped and ahead is not None:
                ahead = []  # fetch again from this walk's own frontier
            # A page counts the nodes it will show: with ``kinds``, only those kinds.
            if (enough is not None and direction is not Direction.BOTH
                    and enough(_of_kinds(result, kinds), hop)):
                break  # the page and its edges are read: deeper hops were not asked for
        # Only a frontier left at the cap can lead on: one bounded hop from it, not a walk.
        if depth > limits.max_depth and frontier and not result.truncated:
            result.truncated = result.depth_cut = _reaches_on(
                store, frontier, one, types[one], seen, include_archived,
                limits.max_nodes + 1, budget)

    result.chars_left = budget.left
    return _of_kinds(result, kinds)


def _walked_types(edge_types: Sequence[str], direction: Direction,
                  kinds: Sequence[str] | None) -> tuple[str, ...]:
    """The edge types a walk returning only ``kinds`` needs: not those whose far ends (the
    nodes they reach, this way) are all leaves outside ``kinds`` — kinds no walked edge
    leads on from, like requests downstream (nothing points into an InferenceOutcome).
    Such nodes are neither returned nor walked through, so no kept node's degree or edge
    depends on them. Derived from the declared endpoints, to a fixed point (a bundle whose
    only onward edges are its requests is then a leaf too)."""
    if not kinds:
        return tuple(edge_types)
    near, far = (0, 1) if direction is Direction.UPSTREAM else (1, 0)
    walked = set(edge_types)
    while True:
        onward = {pair[near] for t in walked for pair in EDGE_KINDS_BY_TYPE[t].endpoints}
        dead = {t for t in walked
                if all(pair[far] not in kinds and pair[far] not in onward
                       for pair in EDGE_KINDS_BY_TYPE[t].endpoints)}
        if not dead:
            return tuple(t for t in edge_types if t in walked)
        walked -= dead


def _reaches_on(store: GraphStore, frontier: list[str], direction: Direction,
                edge_types: Sequence[str], seen: set[str], include_archived: bool,
                limit: int, budget: Budget) -> bool:
    """Whether the walk's last frontier leads anywhere it would have gone: what the depth
    cap cut. Nodes already seen are left out by the store: rows back to them could
    otherwise fill any limit (frontier nodes each pointing at the same few seen ones).
    Hidden (archived) nodes a full page held are left out of the next read in turn, a
    few reads at most; past those, more may hide behind them: that counts as a cut."""
    excluded = set(seen)
    for _ in range(_HIDDEN_READS):
        rows, cut = filled(store, store.expand(
            frontier, direction, edge_types=edge_types, limit=limit, exclude=excluded,
            inline=INLINE_CHARS), budget, {})
        if cut or any(not hidden(row.node, include_archived) for row in rows):
            return True  # (rows it could not read may lead on)
        if len(rows) < limit:
            return False
        excluded |= {row.node.id for row in rows}
    return True


_HIDDEN_READS = 4


@dataclass(slots=True)
class Budget:
    """What is left of a walk's ``WalkLimits.max_chars`` (``filled`` spends it)."""

    left: int


def filled(store: GraphStore, rows: list[Hop], budget: Budget, known: dict[str, Node],
           order: Callable[[Hop], Any] | None = hop_order) -> tuple[list[Hop], bool]:
    """The rows, with the properties the store left out of them (``INLINE_CHARS``) read
    in, and whether some were left out: those whose properties no longer fit the budget.
    Those kept are the first in ``order`` (``hop_order``, as a node cap keeps them; None:
    as given), so every store cuts alike. ``known``: nodes the walk holds whole already."""
    if not any(row.node_elided or row.edge_elided for row in rows):
        return rows, False
    wanted: dict[str, int] = {}
    edges: set[tuple[str, str, str]] = set()
    kept: list[Hop] = []
    for row in (rows if order is None else sorted(rows, key=order)):
        node_id = row.node.id
        node_cost = (row.node_elided if row.node_elided and node_id not in known
                     and node_id not in wanted else 0)
        if node_cost + row.edge_elided > budget.left:
            break  # the first rows in order, as a cap keeps them: a prefix, no gaps
        budget.left -= node_cost + row.edge_elided
        if node_cost:
            wanted[node_id] = node_cost
        if row.edge_elided:
            edges.add(row.edge.key)
        kept.append(row)
    nodes: dict[str, Node] = {}
    for ids in _pages(wanted):
        nodes |= store.get(ids)
    read = store.get_edges(sorted(edges)) if edges else {}
    whole = [Hop(row.origin, read[row.edge.key] if row.edge_elided else row.edge,
                 (known.get(row.node.id) or nodes[row.node.id]) if row.node_elided else row.node)
             for row in kept
             if (not row.edge_elided or row.edge.key in read)
             and (not row.node_elided or row.node.id in known or row.node.id in nodes)]
    return whole, len(whole) < len(rows)


def _pages(sizes: dict[str, int], page: int = PAGE_CHARS) -> list[list[str]]:
    """IDs in reads of up to ``page`` characters of properties each (one at least)."""
    pages: list[list[str]] = []
    in_page = page
    for node_id, size in sizes.items():
        if in_page + size > page:
            pages.append([])
            in_page = 0
        pages[-1].append(node_id)
        in_page += size
    return pages


def hidden(node: Node, include_archived: bool) -> bool:
    """Archived by retention: neither returned nor walked through, unless asked for. A
    replaced placeholder (``store.replaced``) never is: it was no version of its own."""
    return replaced(node) or (not include_archived and bool(node.properties.get("archived")))


def _of_kinds(result: Subgraph, kinds: Sequence[str] | None) -> Subgraph:
    """The walk's nodes of ``kinds`` (all without), the start node always, and the edges
    among them."""
    if not kinds:
        return result
    return _restricted(result, {i for i, node in result.nodes.items() if node.kind in kinds})


def without_archived(result: Subgraph) -> Subgraph:
    """A walk made ``include_archived`` as one made without: for an answer that counts
    what archived nodes did but does not show them (a blast radius's traffic)."""
    return _restricted(result, {i for i, node in result.nodes.items()
                                if not node.properties.get("archived")})


def _restricted(result: Subgraph, keep: set[str]) -> Subgraph:
    """The walk's nodes in ``keep``, the start node always, and the edges among them."""
    keep = keep | {result.root}
    return Subgraph(
        root=result.root,
        nodes={i: n for i, n in result.nodes.items() if i in keep},
        degrees={i: d for i, d in result.degrees.items() if i in keep},
        edges={k: e for k, e in result.edges.items() if e.source in keep and e.target in keep},
        truncated=result.truncated, depth_cut=result.depth_cut, side=result.side,
        chars_left=result.chars_left)


# -- SUPERSEDES stays acyclic --------------------------------------------------------------

# Versions the check that new SUPERSEDES edges close no cycle may reach, both ways and for
# all of one write's edges together: each hop is a round trip, and a chain of one name may
# hold 20,000 versions. Past it an edge is refused, not taken on trust.
SUPERSEDES_CHECK_NODES = 2000
# The longest way back a refusal spells out in full: past it, its ends.
_SHOWN_STEPS = 6


@dataclass(frozen=True, slots=True)
class SupersedesLoop:
    """A new edge ``source`` SUPERSEDES ``target`` that would close a cycle: ``back`` is
    the way from ``target`` back to ``source`` (empty where ``cut``: the cap stopped the
    check before it could tell)."""

    source: str
    target: str
    back: tuple[str, ...] = ()
    cut: bool = False

    def message(self) -> str:
        edge = f"{self.source} SUPERSEDES {self.target}"
        if self.cut:
            return (f"{edge}: the check that it closes no cycle stopped at "
                    f"{SUPERSEDES_CHECK_NODES:,} versions before it could tell, so it is "
                    "refused; send the documents that link stored versions in smaller loads")
        steps = list(self.back)
        if len(steps) > _SHOWN_STEPS:
            steps[3:-2] = [f"({len(steps) - 5} more)"]
        way = " → ".join(steps)
        return (f"{edge} would close a cycle: {self.target} already leads back to "
                f"{self.source} ({way}, in the graph or in this write); a version supersedes "
                "older versions only")


class SupersedesEdges:
    """The stored SUPERSEDES edges at the versions a write links from (``stored``: those
    of them the graph holds; a new node has none), read at once, and the check that the
    write's edges keep SUPERSEDES acyclic (``loops``)."""

    def __init__(self, store: GraphStore, stored: Collection[str]) -> None:
        self.store = store
        rows = store.expand(sorted(stored), Direction.BOTH, edge_types=["SUPERSEDES"],
                            inline=0) if stored else []
        self.out: dict[str, set[str]] = {}  # a stored version → what it supersedes
        self.superseded: set[str] = set()  # stored versions a stored one supersedes
        for row in rows:
            if row.edge.source == row.origin:
                self.out.setdefault(row.origin, set()).add(row.edge.target)
            if row.edge.target == row.origin:
                self.superseded.add(row.origin)

    def loops(self, edges: Sequence[tuple[str, str]]) -> list[SupersedesLoop]:
        """The edges (source, target) that would close a cycle with the graph's and each
        other's, or whose check the cap stopped. Bounded without walking a name's chain:
        a cycle made only of new edges is found among them, in memory; one through stored
        edges holds a new edge from a stored version that a stored edge supersedes (follow
        the cycle from a stored edge to the first new one), and only from such edges does
        the check walk, both ways at once, from the smaller frontier."""
        new = [e for e in dict.fromkeys(edges) if e[1] not in self.out.get(e[0], ())]
        ahead: dict[str, list[str]] = {}
        behind: dict[str, list[str]] = {}
        for source, target in new:
            ahead.setdefault(source, []).append(target)
            behind.setdefault(target, []).append(source)
        found = _loops_among(new, ahead)
        budget = [SUPERSEDES_CHECK_NODES]
        for source, target in new:
            if source in self.superseded and (source, target) not in found:
                loop = self._way_back(source, target, ahead, behind, budget)
                if loop is not None:
                    found[(source, target)] = loop
        return list(found.values())

    def _way_back(self, source: str, target: str, ahead: dict[str, list[str]],
                  behind: dict[str, list[str]], budget: list[int]) -> SupersedesLoop | None:
        """Whether ``target`` leads back to ``source`` over SUPERSEDES: from both ends,
        hop by hop, each hop from the smaller frontier, taking turns when they are alike
        (chains): a chain of thousands on one side is walked no further than the other
        side goes before it ends."""
        reached = {True: {target: ""}, False: {source: ""}}  # forward from target; back
        frontiers = {True: [target], False: [source]}
        forward = False
        while frontiers[True] and frontiers[False]:
            sizes = len(frontiers[True]), len(frontiers[False])
            forward = sizes[0] < sizes[1] or sizes[0] == sizes[1] and not forward
            frontier, seen, other = frontiers[forward], reached[forward], reached[not forward]
            left = budget[0]
            rows = self.store.expand(
                frontier, Direction.UPSTREAM if forward else Direction.DOWNSTREAM,
                edge_types=["SUPERSEDES"], limit=left + 1, inline=0)
            pairs = [(row.origin, row.node.id) for row in rows]
            pairs += [(at, to) for at in frontier for to in (ahead if forward else behind)
                      .get(at, ())]
            step: list[str] = []
            for at, to in pairs:
                if to in seen:
                    continue
                seen[to] = at
                if to in other:
                    return SupersedesLoop(source, target, _joined(reached, to))
                step.append(to)
            budget[0] -= len(step)
            if len(rows) > left or budget[0] < 0:
                return SupersedesLoop(source, target, cut=True)
            frontiers[forward] = step
        return None


def supersedes_loops(store: GraphStore, edges: Sequence[Edge], stored: Collection[str]
                     ) -> list[SupersedesLoop]:
    """The SUPERSEDES edges of a write (of ``edges``) that would close a cycle; ``stored``:
    IDs the write read from the graph (the others are new and have no edges yet)."""
    links = [(e.source, e.target) for e in edges if e.type == "SUPERSEDES"]
    if not links:
        return []
    return SupersedesEdges(store, {s for s, _ in links if s in stored}).loops(links)


def _joined(reached: dict[bool, dict[str, str]], meet: str) -> tuple[str, ...]:
    """The way from the forward walk's start to the backward walk's, through ``meet``."""
    way: list[str] = []
    at = meet
    while at:
        way.insert(0, at)
        at = reached[True].get(at, "")
    at = reached[False].get(meet, "")
    while at:
        way.append(at)
        at = reached[False][at]
    return tuple(way)


def _loops_among(edges: list[tuple[str, str]], ahead: dict[str, list[str]]
                 ) -> dict[tuple[str, str], SupersedesLoop]:
    """The edges that close a cycle of ``edges`` alone, found as a depth-first search's
    back edges (iterative: a load's chain may be thousands long); of each cycle, the edge
    given last is the one that closes it (a load's later document, not the default
    edge the cycle passes)."""
    rank = {edge: place for place, edge in enumerate(edges)}
    found: dict[tuple[str, str], SupersedesLoop] = {}
    done: set[str] = set()
    for start, _ in edges:
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start: 0}
        todo = [iter(ahead.get(start, ()))]
        while todo:
            to = next(todo[-1], None)
            if to is None:
                finished = path.pop()
                del on_path[finished]
                done.add(finished)
                todo.pop()
            elif to in on_path:
                cycle = path[on_path[to]:]
                last = max(range(len(cycle)), key=lambda i: rank[
                    (cycle[i], cycle[(i + 1) % len(cycle)])])
                back = cycle[last + 1:] + cycle[:last + 1]
                found[(cycle[last], back[0])] = SupersedesLoop(cycle[last], back[0],
                                                               tuple(back))
            elif to not in done:
                on_path[to] = len(path)
                path.append(to)
                todo.append(iter(ahead.get(to, ())))
    return found
