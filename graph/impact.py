"""``blastRadius``: what rolling back, retiring or changing a node would hit."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from lineagegraph.schema import LINEAGE_EDGE_TYPES, Node, StageMove

from .registry import BundleParts, bundle_id, bundle_parts
from .store import Direction, GraphStore, concurrently, live_from
from .traffic import OUTCOME_EDGES
from .walk import DEFAULT_LIMITS, Subgraph, WalkLimits, walk

# The walk skips request edges: traffic is counted in the store, never listed node by node.
STRUCTURE_EDGES = tuple(e for e in LINEAGE_EDGE_TYPES if e not in OUTCOME_EDGES)
# Nodes whose direct traffic (requests with no bundle) counts too.
DIRECT_TRAFFIC_KINDS = {"Bundle", "ModelVersion", "PromptVersion", "PolicyPack", "Feature"}


# Kinds whose blast radius names what a rollback returns to (per affected bundle).
ROLLBACK_KINDS = {"Bundle", "ModelVersion", "PromptVersion"}


class Action(StrEnum):
    ROLLBACK = "ROLLBACK"
    RETIRE = "RETIRE"
    CHANGE = "CHANGE"


@dataclass(slots=True)
class AffectedBundle:
    bundle: Node
    environments: list[str]  # where this version is live now


@dataclass(slots=True)
class RollbackTarget:
    environment: str
    current: Node
    target: Node | None  # None: nothing was live there before
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class BlastRadius:
    root: Node
    action: Action
    downstream: Subgraph
    bundles: list[AffectedBundle]
    traffic: dict[str, int]
    rollbacks: list[RollbackTarget]
    # While a rebuild of the rollup runs, the last request it has counted: ``traffic``
    # counts only the requests up to there.
    traffic_counted_through: str | None = None

    def rollback_target(self, production: Collection[str] = ("production",)) -> Node | None:
        """The target in a production environment if the root is live in one, else in the
        first environment where it is."""
        ranked = sorted(self.rollbacks, key=lambda r: (r.environment not in production,
                                                       r.environment))
        return next((r.target for r in ranked if r.target is not None), None)

    @property
    def warnings(self) -> list[str]:
        partial = [] if self.traffic_counted_through is None else [
            "traffic: partial — a rebuild of the request-count rollup is under way or "
            f"stopped half-way (counted through {self.traffic_counted_through or 'nothing'}"
            "); run `lineagegraph traffic rebuild` to the end"]
        return partial + [f"{r.environment}: {w}" for r in self.rollbacks
                          for w in r.warnings]


def previous_live(moves: list[StageMove], current: str) -> str | None:
    """The version live before the current stint of ``current`` (moves of one name in one
    environment, oldest first): what a rollback returns to."""
    live: list[str] = []
    for move in moves:
        if move.to_version is not None and (not live or live[-1] != move.to_version):
            live.append(move.to_version)
    while live and live[-1] == current:
        live.pop()
    return live[-1] if live else None


def compatibility_warnings(current: Node, target: Node, parts: dict[str, BundleParts],
                           designed_for: dict[str, set[str]],
                           retired: set[str]) -> list[str]:
    """What may break when ``target`` replaces ``current``."""
    now, then = parts[current.id], parts[target.id]
    warnings = []
    if target.id in retired:
        warnings.append(f"{target.id} was retired")
    if (now.policy and now.policy.id) != (then.policy and then.policy.id):
        warnings.append(f"policy pack differs: {_id(now.policy)} live, {_id(then.policy)} "
                        "in the target")
    if (now.toolset and now.toolset.id) != (then.toolset and then.toolset.id):
        warnings.append(f"tool set differs: {_id(now.toolset)} live, {_id(then.toolset)} "
                        "in the target")
    for label, prompt in (("live", now.prompt), ("target's", then.prompt)):
        models = designed_for.get(prompt.id, set()) if prompt else set()
        if models and then.model is not None and then.model.id not in models:
            warnings.append(f"the {label} prompt {prompt.id} is DESIGNED_FOR "
                            f"{', '.join(sorted(models))}, which the target's model "
                            f"{then.model.id} is not")
    if then.model is None:
        warnings.append(f"the target {target.id} pins no model")
    return warnings


def _id(node: Node | None) -> str:
    return node.id if node is not None else "none"


def blast_radius(
    store: GraphStore,
    node_id: str,
    action: Action = Action.ROLLBACK,
    since: datetime | None = None,
    until: datetime | None = None,
    limits: WalkLimits = DEFAULT_LIMITS,
) -> BlastRadius | None:
    """Everything downstream of ``node_id`` (lineage edges, request edges excluded) with
    degrees; the affected bundles and where each is live now; request traffic in the
    window counted by environment in the store; and, for ROLLBACK and RETIRE, per
    environment the version a rollback returns to with compatibility warnings."""
    downstream = walk(store, node_id, Direction.DOWNSTREAM, limits.max_depth, limits=limits,
                      edge_types=STRUCTURE_EDGES)
    root = downstream.nodes.get(node_id)
    if root is None:
        return None

    bundles = [n for n in downstream.nodes.values() if n.kind == "Bundle"]
    counted = [n.id for n in downstream.nodes.values() if n.kind in DIRECT_TRAFFIC_KINDS]
    plans_rollback = action is not Action.CHANGE and root.kind in ROLLBACK_KINDS
    # Independent reads at once: the stage history of every affected name (versions of a
    # name share it; one read for all), the traffic and whether it is complete, and what
    # was ever retired.
    histories: dict[str, list[StageMove]] = {b.name: [] for b in bundles}
    moves, traffic_by_env, counted_through, retired_moves = concurrently(
        lambda: store.stage_history(names=sorted(histories)) if bundles else [],
        lambda: store.traffic(counted, since, until),
        store.traffic_rebuild_position,
        lambda: store.stage_history(environment="retired") if plans_rollback else [])
    for move in moves:
        histories[move.name].append(move)
    affected = []
    for bundle in sorted(bundles, key=lambda n: n.id):
        live = live_from(histories[bundle.name])
        affected.append(AffectedBundle(
            bundle, sorted(env for env, version in live.items() if version == bundle.version)))

    traffic = {env or "unknown": count for env, count in traffic_by_env.items()}
    retired = {bundle_id(m.name, m.to_version) for m in retired_moves
               if m.to_version is not None}
    rollbacks = _rollbacks(store, affected, histories, retired) if plans_rollback else []
    return BlastRadius(root=root, action=action, downstream=downstream, bundles=affected,
                       traffic=dict(sorted(traffic.items())), rollbacks=rollbacks,
                       traffic_counted_through=counted_through)


def _rollbacks(store: GraphStore, affected: list[AffectedBundle],
               histories: dict[str, list[StageMove]], retired: set[str]) -> list[RollbackTarget]:
    plans: list[tuple[str, Node, str | None]] = []
    for entry in affected:
        for env in entry.environments:
            moves = [m for m in histories[entry.bundle.name] if m.environment == env]
            plans.append((env, entry.bundle, previous_live(moves, entry.bundle.version or "")))
    target_ids = sorted({bundle_id(b.name, v) for _, b, v in plans if v is not None})
    # What each bundle pins, asked for every target ID at once with the target nodes (an
    # ID that is no node pins nothing and is dropped below).
    targets, parts = concurrently(
        lambda: store.get(target_ids),
        lambda: bundle_parts(store, sorted({b.id for _, b, _ in plans} | set(target_ids))))
    prompts = sorted({p.prompt.id for p in parts.values() if p.prompt is not None})
    designed_for: dict[str, set[str]] = {}
    for hop in store.expand(prompts, Direction.UPSTREAM, edge_types=["DESIGNED_FOR"]):
        designed_for.setdefault(hop.origin, set()).add(hop.node.id)

    result = []
    for env, bundle, version in plans:
        target = targets.get(bundle_id(bundle.name, version)) if version else None
        warnings = (compatibility_warnings(bundle, target, parts, designed_for, retired)
                    if target is not None else [f"nothing was live in {env} before "
                                                f"{bundle.id}: a rollback leaves it empty"])
        result.append(RollbackTarget(environment=env, current=bundle, target=target,
                                     warnings=warnings))
    return result
