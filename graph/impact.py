"""``blastRadius``: what rolling back, retiring or changing a node would hit."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from lineagegraph.schema import LINEAGE_EDGE_TYPES, Node, StageMove
from lineagegraph.schema.models import now as utc_now

from .registry import BundleParts, bundle_id, bundle_parts
from .store import (
    PAGE_CHARS,
    RETIRED,
    Direction,
    GraphStore,
    by_name,
    concurrently,
    fitting,
    live_from,
    retired_versions,
)
from .traffic import OUTCOME_EDGES
from .walk import (
    DEFAULT_LIMITS,
    FULL_DEPTH,
    WALK_CAPS,
    Subgraph,
    WalkLimits,
    walk,
    without_archived,
)

# The walk skips request edges: traffic is counted in the store, never listed node by node.
STRUCTURE_EDGES = tuple(e for e in LINEAGE_EDGE_TYPES if e not in OUTCOME_EDGES)
# Nodes whose direct traffic (requests with no bundle) counts too.
DIRECT_TRAFFIC_KINDS = {"Bundle", "ModelVersion", "PromptVersion", "PolicyPack", "Feature"}


# Kinds whose blast radius names what a rollback returns to (per affected bundle): what a
# bundle pins, besides the data it retrieves from, is undone by returning the bundles that
# pin it to versions that do not.
ROLLBACK_KINDS = {"Bundle", "ModelVersion", "PromptVersion", "Toolset", "PolicyPack"}


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
    target: Node | None  # None: nothing fit to return to was live there before
    warnings: list[str] = field(default_factory=list)
    # The versions live there before that a rollback passes over: "<bundle ID>: why".
    skipped: list[str] = field(default_factory=list)
    # No target among the last ``ROLLBACK_MOVES`` moves there, and earlier ones were not
    # read: one may be further back.
    truncated: bool = False


def plan_key(plan: RollbackTarget) -> str:
    """A plan's place in ``BlastRadius.rollbacks`` (by bundle ID, then environment) as one
    string that sorts alike: neither holds a control character, so the newline between
    them sorts before anything either goes on with."""
    return f"{plan.current.id}\n{plan.environment}"


def plan_chars(plan: RollbackTarget) -> int:
    """What a plan adds to an answer: its current and target bundles' properties, whole."""
    return plan.current.props_chars + (plan.target.props_chars if plan.target else 0)


def page_after(keys: Sequence[str], sizes: Sequence[int], after: str | None,
               max_chars: int = PAGE_CHARS) -> tuple[int, int]:
    """``[start, end)`` of a list in ascending ``keys``: the items after the key ``after``
    (keyset: wherever that item is now) that fit in ``max_chars`` of properties, at least
    one. The plans of a bundle live in thousands of environments each carry it whole: one
    answer holding them all would hold gigabytes."""
    start = 0 if after is None else bisect_right(keys, after)
    return start, start + fitting(sizes[start:], max_chars)


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
        """The target in a production environment if the root is live in one (the first
        such environment that has one), else in the first environment where it is. Never
        another environment's target when the chosen one has none: a rollback there would
        be refused, and a dashboard would show a target nothing can roll back to."""
        plans = sorted(self.rollbacks, key=lambda r: r.environment)
        chosen = [r for r in plans if r.environment in production] or plans[:1]
        return next((r.target for r in chosen if r.target is not None), None)

    @property
    def warnings(self) -> list[str]:
        partial = [] if self.traffic_counted_through is None else [
            "traffic: partial — a rebuild of the request-count rollup is under way or "
            f"stopped half-way (counted through {self.traffic_counted_through or 'nothing'}"
            "); run `lineagegraph traffic rebuild` to the end"]
        # A dashboard reads bundles and traffic, not ``downstream.truncated``: say it here.
        cut = [f"downstream: partial — the walk reached a limit ({WALK_CAPS}), so the "
               "bundles, traffic and rollback plans cover only what it reached"
               ] if self.downstream.truncated else []
        return cut + partial + [f"{r.environment}: {w}" for r in self.rollbacks
                                for w in r.warnings]


def earlier_live(moves: list[StageMove], current: str) -> list[str]:
    """The versions live before the current stint of ``current`` (moves of one name in one
    environment, oldest first), latest first and each once, ``current`` left out: what a
    rollback may return to, best first. A move to no version empties the environment and
    is no version to return to."""
    live: list[str] = []
    for move in moves:
        if move.to_version is not None and (not live or live[-1] != move.to_version):
            live.append(move.to_version)
    while live and live[-1] == current:
        live.pop()
    return list(dict.fromkeys(v for v in reversed(live) if v != current))


# The reasons ``governance.promote`` records: a move through the gates (or past them) is
# a release, even of a version live there before, never a rollback.
PROMOTED = "gates passed"
OVERRIDDEN = "override: "


def promoted(move: StageMove) -> bool:
    return move.reason is not None and (move.reason == PROMOTED
                                        or move.reason.startswith(OVERRIDDEN))


def rolled_back_from(moves: list[StageMove]) -> dict[str, datetime]:
    """version → when its latest stint in the environment ended in a rollback: a move from
    it back to a version live there before it (the rollback mutation's moves, and an
    on-call's StageMove document back to the previous version alike), unless ``promote``
    made it (re-releasing an earlier version through the gates). A stint that ended
    otherwise (a new version, or the environment emptied) clears it. Moves of one name in
    one environment, oldest first."""
    rolled: dict[str, datetime] = {}
    seen: set[str] = set()
    live: str | None = None
    for move in moves:
        if move.to_version == live:
            continue
        if live is not None:
            if move.to_version is not None and move.to_version in seen and not promoted(move):
                rolled[live] = move.at
            else:
                rolled.pop(live, None)
        live = move.to_version
        if live is not None:
            seen.add(live)
    return rolled


def retired_at(moves: list[StageMove]) -> dict[str, datetime]:
    """version → when it was last moved into ``retired`` (moves of one name, oldest first)."""
    return {m.to_version: m.at for m in moves
            if m.environment == RETIRED and m.to_version is not None}


def compatibility_warnings(current: Node, target: Node, parts: dict[str, BundleParts],
                           designed_for: dict[str, set[str]],
                           retired: dict[str, datetime]) -> list[str]:
    """What may break when ``target`` replaces ``current``; ``retired`` maps the bundle IDs
    ever retired to when (one retired now is no target: it was promoted again since)."""
    now, then = parts[current.id], parts[target.id]
    warnings = []
    if target.id in retired:
        warnings.append(f"{target.id} was retired at {retired[target.id].isoformat()} "
                        "(promoted again since)")
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
    *,
    now: datetime | None = None,
) -> BlastRadius | None:
    """Everything downstream of ``node_id`` (lineage edges, request edges excluded) with
    degrees; the affected bundles and where each is live now; request traffic in the
    window counted by environment in the store; and, for ROLLBACK and RETIRE, per
    environment the version a rollback returns to with compatibility warnings
    (``rollback_plans``).

    "Now" is ``now`` (default: the clock): a stage move dated later is not in effect yet,
    and ``retired`` is no environment a version is live in."""
    # Versions retention archived are no part of the answer, but the requests they served
    # used what is rolled back all the same: they count as traffic hit in the window.
    # Everything downstream: a walk the depth cap cuts says ``truncated`` (and ``warnings``).
    walked = walk(store, node_id, Direction.DOWNSTREAM, FULL_DEPTH, limits=limits,
                  edge_types=STRUCTURE_EDGES, include_archived=True)
    downstream = without_archived(walked)
    root = downstream.nodes.get(node_id)
    if root is None:
        return None

    bundles = [n for n in downstream.nodes.values() if n.kind == "Bundle"]
    counted = [n.id for n in walked.nodes.values() if n.kind in DIRECT_TRAFFIC_KINDS]
    plans_rollback = action is not Action.CHANGE and root.kind in ROLLBACK_KINDS
    when = now or utc_now()
    # Independent reads at once: what is in effect of every affected name now (its last
    # move in each environment, not its history: one read for all), the traffic and
    # whether it is complete.
    names = sorted({b.name or "" for b in bundles})
    latest, traffic_by_env, counted_through = concurrently(
        lambda: store.stage_latest(until=when, names=names) if names else [],
        lambda: store.traffic(counted, since, until),
        store.traffic_rebuild_position)
    live_in: dict[tuple[str, str], list[str]] = {}
    for name, moves in by_name(latest, names).items():
        for env, version in live_from(moves).items():
            live_in.setdefault((name, version), []).append(env)
    affected = [AffectedBundle(bundle, sorted(live_in.get((bundle.name, bundle.version or ""), [])))
                for bundle in sorted(bundles, key=lambda n: n.id)]

    traffic = {env or "unknown": count for env, count in traffic_by_env.items()}
    rollbacks = bounded_rollback_plans(store, root, affected, when) if plans_rollback else []
    return BlastRadius(root=root, action=action, downstream=downstream, bundles=affected,
                       traffic=dict(sorted(traffic.items())), rollbacks=rollbacks,
                       traffic_counted_through=counted_through)


def _pins(parts: BundleParts) -> set[str]:
    pinned = [parts.model, parts.prompt, parts.toolset, parts.policy, *parts.retrieves_from]
    return {node.id for node in pinned if node is not None}


# A rollback plan reads the affected names' histories whole, in one read, up to this many
# moves; past it, each environment's moves a page of this many at a time, latest first,
# until a version to return to is found (a name CI promotes hourly has tens of thousands).
STAGE_PAGE = 1000
# The moves of one environment a plan reads back at most looking for a version to return
# to: past them the plan has no target and says so (``truncated``).
ROLLBACK_MOVES = 10_000
# Moves the first read of a plan's affected names holds at most, whatever their number.
STAGE_READ = 100_000


def bounded_rollback_plans(store: GraphStore, root: Node, affected: list[AffectedBundle],
                           when: datetime) -> list[RollbackTarget]:
    """``rollback_plans`` as of ``when`` (moves dated later do not count), reading no
    history whole past ``STAGE_PAGE`` moves: each environment's moves are read back a page
    at a time until a target is found, up to ``ROLLBACK_MOVES``. The plans are those of
    the whole history wherever that bound is not hit."""
    names = sorted({e.bundle.name or "" for e in affected if e.environments})
    if not names:
        return []
    keys = list(dict.fromkeys((e.bundle.name or "", env) for e in affected
                              for env in e.environments))
    # One read for every name: the last moves of each environment, one more than are kept
    # (to tell whether there were more), as many as fit ``STAGE_READ`` for all of them. A
    # model thousands of names pin, each with a short history, is one read, not a read per
    # name and environment.
    count = max(2, min(STAGE_PAGE + 1, STAGE_READ // len(keys)))
    by_key: dict[tuple[str, str], list[StageMove]] = {}
    first = store.stage_latest(until=when, names=names, count=count)
    for move in first:
        by_key.setdefault((move.name, move.environment), []).append(move)
    if all(len(moves) < count for moves in by_key.values()):
        # every move: as the whole histories answer
        return rollback_plans(store, root, affected, by_name(first, names))
    tails = {key: by_key.get(key, [])[-(count - 1):] for key in keys}
    complete = {key for key in keys if len(by_key.get(key, [])) < count}
    found: dict[tuple[str, str], RollbackTarget] = {}
    while True:
        pending = dict.fromkeys(key for key in tails if key not in found)  # ordered, a set
        subset = [AffectedBundle(e.bundle, [env for env in e.environments
                                            if (e.bundle.name, env) in pending])
                  for e in affected]
        facts = _tail_facts(store, {key: tails[key] for key in pending}, complete, when)
        for plan in _plans(store, root, [e for e in subset if e.environments], *facts):
            key = (plan.current.name or "", plan.environment)
            if plan.target is not None or key in complete:
                found[key] = plan
            elif len(tails[key]) >= ROLLBACK_MOVES:
                found[key] = _cut(plan, len(tails[key]))
        if len(found) == len(tails):
            break
        for name, env in (key for key in pending if key not in found):
            tail = tails[(name, env)]
            page = store.stage_history(name=name, environment=env, until=when,
                                       last=STAGE_PAGE, before=_start(tail))
            tails[(name, env)] = page + tail
            if len(page) < STAGE_PAGE:
                complete.add((name, env))
    return [found[(e.bundle.name or "", env)] for e in affected for env in e.environments]


def _start(tail: list[StageMove]) -> tuple[datetime, int] | None:
    """Where the moves read so far begin, to read the page before them."""
    return (tail[0].at, tail[0].seq or 0) if tail else None


def _cut(plan: RollbackTarget, read: int) -> RollbackTarget:
    why = "; ".join(plan.skipped)
    plan.truncated = True
    plan.warnings = [f"nothing fit to return to in {plan.environment} before "
                     f"{plan.current.id} in its last {read:,} moves there ({why}); earlier "
                     "ones were not read: promote the version to return to"]
    return plan


def _tail_facts(store: GraphStore, tails: dict[tuple[str, str], list[StageMove]],
                complete: set[tuple[str, str]], when: datetime
                ) -> tuple[dict[tuple[str, str], list[StageMove]], dict[str, set[str]],
                           dict[str, dict[str, datetime]]]:
    """What ``_plans`` reads of the histories, for the versions the last moves of each
    environment (``tails``) name — all a plan looks at before it reads further back:
    each environment's moves, the versions retired now and when each was last retired.

    Before a tail that is not the whole history go, for each version in it, its last move
    there before the tail: ``rolled_back_from`` asks whether a version was live there
    before, and versions the tail already lists change no ``earlier_live``."""
    by_env = {}
    for (name, env), tail in tails.items():
        named = sorted({m.to_version for m in tail if m.to_version is not None})
        before = [] if (name, env) in complete or not named else store.stage_latest(
            env, until=when, pairs=[(name, v) for v in named], before=_start(tail),
            per="version")
        by_env[(name, env)] = before + tail
    names = sorted({name for name, _ in tails})
    # Each name's own versions: a plan returns only to a version its environment's moves
    # name, never to one another name's tail holds.
    pairs = sorted({(name, m.to_version) for (name, _), tail in tails.items() for m in tail
                    if m.to_version is not None})
    last, into_retired = concurrently(
        lambda: store.stage_latest(until=when, pairs=pairs, per="version"),
        lambda: store.stage_latest(RETIRED, until=when, pairs=pairs, per="version"))
    return (by_env,
            {name: retired_versions(moves) for name, moves in by_name(last, names).items()},
            {name: retired_at(moves) for name, moves in by_name(into_retired, names).items()})


def rollback_plans(store: GraphStore, root: Node, affected: list[AffectedBundle],
                   histories: dict[str, list[StageMove]]) -> list[RollbackTarget]:
    """Per affected bundle and environment where it is live, what a rollback of ``root``
    returns to: the latest version live there before the current one that is fit, with
    compatibility warnings. ``histories`` holds each name's moves up to now, oldest first.

    Passed over, each named in ``skipped`` and the warnings: a version retired now
    (``retired_versions``), one archived by retention (``archived: true``), one that is no
    registered bundle, and one that still pins ``root`` (rolling back a model, prompt, tool
    set or policy pack to a bundle that uses it undoes nothing). With none left there is no
    target, and a warning says why.

    A target that was itself rolled back from there (``rolled_back_from``) stays the
    target, as ``kubectl rollout undo`` toggles — a second rollback undoes the first — but
    with the warning "… was rolled back from at <time>": the heuristic that spots a
    rollback (a move back to an earlier version) cannot tell an undo from a re-release,
    so it informs rather than decides."""
    # Each name's moves split by environment in one pass (filtering the whole history per
    # plan would cost plans × moves).
    by_env: dict[tuple[str, str], list[StageMove]] = {}
    for name, history in histories.items():
        for move in history:
            by_env.setdefault((name, move.environment), []).append(move)
    return _plans(store, root, affected, by_env,
                  {name: retired_versions(moves) for name, moves in histories.items()},
                  {name: retired_at(moves) for name, moves in histories.items()})


def _plans(store: GraphStore, root: Node, affected: list[AffectedBundle],
           by_env: dict[tuple[str, str], list[StageMove]], retired: dict[str, set[str]],
           retired_when: dict[str, dict[str, datetime]]) -> list[RollbackTarget]:
    """``rollback_plans`` from what it reads of the histories: each environment's moves
    (oldest first), the versions of each name retired now and when each was last retired
    (those a plan looks at, at least)."""
    plans: list[tuple[str, Node, list[str], dict[str, datetime]]] = []
    for entry in affected:
        for env in entry.environments:
            moves = by_env[(entry.bundle.name, env)]
            plans.append((env, entry.bundle, earlier_live(moves, entry.bundle.version or ""),
                          rolled_back_from(moves)))
    candidate_ids = sorted({bundle_id(b.name, v) for _, b, versions, _ in plans
                            for v in versions})
    # Every candidate's node (archived ones included: ``get`` does not hide them) and what
    # it pins, with the current bundles', at once.
    nodes, parts = concurrently(
        lambda: store.get(candidate_ids),
        lambda: bundle_parts(store, sorted({b.id for _, b, _, _ in plans} | set(candidate_ids))))
    retired_now = {name: {bundle_id(name, v) for v in versions}
                   for name, versions in retired.items()}
    ever_retired = {name: {bundle_id(name, v): at for v, at in when.items()}
                    for name, when in retired_when.items()}

    chosen: list[tuple[str, Node, Node | None, list[str], dict[str, datetime]]] = []
    for env, bundle, versions, rolled in plans:
        target, skipped = None, []
        for version in versions:
            candidate_id = bundle_id(bundle.name, version)
            node = nodes.get(candidate_id)
            if node is None:
                skipped.append(f"{candidate_id}: no registered bundle")
            elif candidate_id in retired_now[bundle.name]:
                skipped.append(f"{candidate_id}: retired")
            elif node.properties.get("archived"):
                skipped.append(f"{candidate_id}: archived")
            elif root.id != bundle.id and root.id in _pins(parts[candidate_id]):
                skipped.append(f"{candidate_id}: still uses {root.id}")
            else:
                target = node
                break
        chosen.append((env, bundle, target, skipped, rolled))

    prompts = sorted({p.prompt.id for _, b, t, _, _ in chosen for p in
                      (parts[b.id], parts[t.id] if t is not None else BundleParts())
                      if p.prompt is not None})
    designed_for: dict[str, set[str]] = {}
    if prompts:
        for hop in store.expand(prompts, Direction.UPSTREAM, edge_types=["DESIGNED_FOR"]):
            designed_for.setdefault(hop.origin, set()).add(hop.node.id)

    result = []
    for env, bundle, target, skipped, rolled in chosen:
        if target is None:
            warnings = ([f"nothing fit to return to in {env} before {bundle.id} ("
                         + "; ".join(skipped) + "): a rollback leaves it empty"] if skipped else
                        [f"nothing was live in {env} before {bundle.id}: a rollback leaves "
                         "it empty"])
        else:
            warnings = [f"skipped {why}" for why in skipped]
            if target.version in rolled:
                warnings.append(f"{target.id} was rolled back from at "
                                f"{rolled[target.version].isoformat()}")
            warnings += compatibility_warnings(bundle, target, parts, designed_for,
                                               ever_retired[bundle.name])
        result.append(RollbackTarget(environment=env, current=bundle, target=target,
                                     warnings=warnings, skipped=skipped))
    return result
