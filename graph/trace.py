"""``trace``: from one request back to the data behind it."""

from __future__ import annotations

from dataclasses import dataclass, field

from lineagegraph.schema import Node, format_id

from .registry import BundleParts, bundle_parts, live_at
from .store import Direction, GraphStore
from .walk import DEFAULT_LIMITS, Subgraph, WalkLimits, walk


@dataclass(slots=True)
class Trace:
    outcome: Node
    environment: str | None
    bundle: Node | None = None
    parts: BundleParts = field(default_factory=BundleParts)
    # Whether the serving bundle version was the one in effect in the request's
    # environment at the request's time (a request served off-stage is worth knowing).
    bundle_live_at_request: bool | None = None
    approvals: list[Node] = field(default_factory=list)
    evaluations: list[Node] = field(default_factory=list)
    live_then: list[Node] = field(default_factory=list)
    upstream: Subgraph | None = None


def outcome_id(request_id: str) -> str:
    return request_id if request_id.startswith("outcome:") else format_id("outcome", request_id)


def trace(store: GraphStore, request_id: str, limits: WalkLimits = DEFAULT_LIMITS) -> Trace | None:
    """The request's outcome; the bundle that served it (the version named on the outcome)
    and whether it was the one live in that environment then; what the bundle pins;
    approvals and evaluations that existed at the request's time; the upstream lineage
    down to the data sources (lineage edges only, so a model version's trace never holds
    the data behind its previous version); and what else was live in that environment."""
    oid = outcome_id(request_id)
    outcome = store.get([oid]).get(oid)
    if outcome is None:
        return None
    at = outcome.created_at
    environment = outcome.properties.get("environment")
    result = Trace(outcome=outcome, environment=environment)

    served = store.expand([oid], Direction.UPSTREAM)
    by_edge = {hop.edge.type: hop.node for hop in served}
    result.bundle = by_edge.get("SERVED_BY")
    if result.bundle is not None:
        result.parts = bundle_parts(store, [result.bundle.id])[result.bundle.id]
        if environment is not None:
            result.bundle_live_at_request = (
                store.stage_at(result.bundle.name, environment, at) == result.bundle.version)
        for hop in store.expand([result.bundle.id], Direction.DOWNSTREAM,
                                edge_types=["APPROVES", "EVALUATES"], until=at):
            (result.approvals if hop.edge.type == "APPROVES" else result.evaluations).append(
                hop.node)
        result.approvals.sort(key=lambda n: n.id)
        result.evaluations.sort(key=lambda n: n.id)
    else:
        # A request that named no bundle points straight at what it used.
        result.parts = BundleParts(model=by_edge.get("USED_MODEL"),
                                   prompt=by_edge.get("USED_PROMPT"),
                                   policy=by_edge.get("USED_POLICY"))
    result.upstream = walk(store, oid, Direction.UPSTREAM, limits.max_depth, limits=limits)
    if environment is not None:
        result.live_then = live_at(store, environment, at)
    return result
