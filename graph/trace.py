"""``trace``: from one request back to the data behind it."""

from __future__ import annotations

from dataclasses import dataclass, field

from lineagegraph.schema import Node, format_id

from .registry import (
    ANNOTATION_EDGES,
    PIN_EDGES,
    BundleParts,
    annotations,
    bundle_parts,
    split_annotations,
)
from .store import Direction, GraphStore, SideHop
from .walk import DEFAULT_LIMITS, FULL_DEPTH, Subgraph, WalkLimits, walk


@dataclass(slots=True)
class Trace:
    outcome: Node
    environment: str | None
    bundle: Node | None = None
    parts: BundleParts = field(default_factory=BundleParts)
    approvals: list[Node] = field(default_factory=list)
    evaluations: list[Node] = field(default_factory=list)
    upstream: Subgraph | None = None
    annotations_cut: bool = False  # more evaluations or approvals than shown (registry)


# The serving bundle's evaluations and approvals, read with the walk's first hops where
# the store can: one round trip fewer per trace.
_ANNOTATIONS = SideHop(via=("SERVED_BY",), direction=Direction.DOWNSTREAM,
                       edge_types=ANNOTATION_EDGES)


def outcome_ids(request_id: str) -> list[str]:
    """The outcome IDs a request ID given to ``trace`` may mean, likeliest first: an
    ``outcome:`` ID, or a request ID that itself starts with ``outcome:``."""
    bare = format_id("outcome", request_id.strip())
    return [request_id.strip(), bare] if request_id.startswith("outcome:") else [bare]


def trace(store: GraphStore, request_id: str, limits: WalkLimits = DEFAULT_LIMITS) -> Trace | None:
    """The request's outcome; the bundle that served it (the version named on the outcome)
    and whether it was the one live in that environment then; what the bundle pins;
    approvals and evaluations that existed at the request's time; the upstream lineage
    down to the data sources (lineage edges only, so a model version's trace never holds
    the data behind its previous version). What else was live there then is ``live_then``:
    a read of its own, made only when asked."""
    # The upstream walk brings the request itself (with the first hops, where the store
    # can), what served it (hop 1) and what that pins (hop 2): all read off the walk. A
    # trace is history: a bundle version retention archived since still served it. All of
    # it: a walk the depth cap cuts says ``truncated``.
    for oid in outcome_ids(request_id):
        upstream = walk(store, oid, Direction.UPSTREAM, FULL_DEPTH, limits=limits,
                        side=_ANNOTATIONS, include_archived=True)
        outcome = upstream.nodes.get(oid)
        if outcome is not None:
            break
    else:
        return None
    at = outcome.created_at
    environment = outcome.properties.get("environment")
    result = Trace(outcome=outcome, environment=environment, upstream=upstream)
    served = _out_edges(result.upstream, oid)
    bundle = served.get("SERVED_BY", [None])[0]
    result.bundle = bundle
    if bundle is not None:
        # The pins are at hop 2: a walk cut only past the cap still holds them all.
        walked_pins = not upstream.truncated or upstream.depth_cut and limits.max_depth >= 2
        result.parts = (_parts_from(result.upstream, bundle.id) if walked_pins
                        else bundle_parts(store, [bundle.id])[bundle.id])
        # Within what the walk left of its budget of large properties.
        found = (split_annotations(store, [h for h in upstream.side if h.origin == bundle.id],
                                   upstream.chars_left)
                 if upstream.side is not None
                 else annotations(store, bundle.id, until=at, chars=upstream.chars_left))
        result.evaluations, result.approvals = found.evaluations, found.approvals
        result.annotations_cut = found.cut
    else:
        # A request that named no bundle points straight at what it used.
        first = {edge: nodes[0] for edge, nodes in served.items()}
        result.parts = BundleParts(model=first.get("USED_MODEL"),
                                   prompt=first.get("USED_PROMPT"),
                                   policy=first.get("USED_POLICY"))
    return result


def live_then(store: GraphStore, result: Trace) -> list[Node]:
    """Every bundle version in effect in the request's environment at the request's time."""
    if result.environment is None:
        return []
    return store.live_bundles(result.environment, result.outcome.created_at)


def served_live(result: Trace, live: list[Node]) -> bool | None:
    """Whether the serving bundle version was the one in effect in the request's
    environment then (``live``: ``live_then``): a request served off-stage is worth
    knowing."""
    if result.bundle is None or result.environment is None:
        return None
    return any(n.id == result.bundle.id for n in live)


def _out_edges(subgraph: Subgraph, source: str) -> dict[str, list[Node]]:
    found: dict[str, list[Node]] = {}
    for edge in sorted(subgraph.edges.values(), key=lambda e: e.target):
        if edge.source == source and edge.target in subgraph.nodes:
            found.setdefault(edge.type, []).append(subgraph.nodes[edge.target])
    return found


def _parts_from(subgraph: Subgraph, bundle: str) -> BundleParts:
    parts = BundleParts()
    for edge_type, nodes in _out_edges(subgraph, bundle).items():
        if edge_type in PIN_EDGES:
            for node in nodes:
                parts.pin(edge_type, node)
    return parts
