"""Promotion gates, the promotion report, and the stage moves that promote and roll back.

Each gate is a small function of a ``GateInput`` returning a ``Gate`` with a reason when it
fails; ``promotion_report`` runs them all and diffs the candidate against what is live.

Promoting into ``retired`` is a retirement, not a promotion: no gate applies (the report
carries a single passed ``retirement`` note saying where the version leaves), and it records
a move into ``retired`` plus a move to no version wherever the version is live. Everything
here judges "now" as the clock (or the ``at`` given): a move dated later is not in effect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from lineagegraph.schema import AuditEntry, Edge, Node, StageMove, approval_name, format_id
from lineagegraph.schema.kinds import read_risk_tier
from lineagegraph.schema.models import check_environment
from lineagegraph.schema.models import now as utc_now

from .drift import STAGED_KINDS
from .impact import (
    OVERRIDDEN,
    PROMOTED,
    STRUCTURE_EDGES,
    Action,
    AffectedBundle,
    BlastRadius,
    blast_radius,
    bounded_rollback_plans,
)
from .registry import (
    HISTORY_MOVES,
    BundleParts,
    annotations,
    annotations_read,
    bundle_id,
    bundle_parts,
    pin_change_message,
    pin_changes,
    stage_name,
)
from .store import (
    RETIRED,
    Direction,
    GraphStore,
    MetadataMoved,
    NodesStored,
    PreparedWrite,
    Rejudged,
    StageMoved,
    UpsertResult,
    by_name,
    live_from,
    retired_versions,
)
from .walk import DEFAULT_LIMITS, FULL_DEPTH, Subgraph, WalkLimits, supersedes_loops, walk

# Approvals a risk tier needs unless its policy pack says otherwise.
APPROVALS_BY_TIER = {"sandbox": 0, "production": 1, "regulated": 2}
TIERS_NEEDING_EVAL = {"production", "regulated"}


@dataclass(frozen=True, slots=True)
class GatePolicy:
    """Settings that shape the gates."""

    production_environments: frozenset[str] = frozenset({"production"})
    floating_model_patterns: tuple[str, ...] = ("latest", "*-latest", "*:latest", "*@latest")


@dataclass(frozen=True, slots=True)
class Gate:
    name: str
    passed: bool
    reason: str | None = None


@dataclass(slots=True)
class GateInput:
    candidate: Node
    parts: BundleParts
    environment: str
    evaluations: list[Node]
    approvals: list[Node]
    policy: GatePolicy
    annotations_cut: bool = False  # some evaluations or approvals were not read (registry)

    @property
    def stated_tier(self) -> str:
        """The pack's ``risk_tier`` as stored, read as the schema reads it (``Regulated`` is
        ``regulated``)."""
        if self.parts.policy is None:
            return "production"  # no pack: judge as the common case, not as a sandbox
        return read_risk_tier(str(self.parts.policy.properties.get("risk_tier", "production")))

    @property
    def tier(self) -> str:
        # A tier the gates do not know, stored by a version that kept any text (ingest
        # refuses one now): judged as the strictest, never as a milder one.
        return self.stated_tier if self.stated_tier in APPROVALS_BY_TIER else "regulated"

    @property
    def production_like(self) -> bool:
        return (self.environment in self.policy.production_environments
                or self.tier == "regulated")


def eval_gate(g: GateInput) -> Gate:
    """The latest evaluation's score reaches its threshold; with none, only sandbox-tier
    bundles pass."""
    if not g.evaluations:
        if g.tier in TIERS_NEEDING_EVAL:
            return Gate("eval", False, f"no evaluation of {g.candidate.id} "
                        f"(required for the {g.tier} tier){_unread(g)}")
        return Gate("eval", True, f"no evaluation; not required for the {g.tier} tier")
    latest = max(g.evaluations, key=lambda e: (e.created_at, e.id))
    score, threshold = latest.properties.get("score"), latest.properties.get("threshold")
    passed = score is not None and threshold is not None and not score < threshold
    return Gate("eval", passed, f"{latest.id} {scored(score, threshold)}")


def _unread(g: GateInput) -> str:
    """What a failing gate adds when some of its inputs were not read."""
    return (f"; some evaluations or approvals were not read ({annotations_read()})"
            if g.annotations_cut else "")


def scored(score: Any, threshold: Any) -> str:
    """An evaluation's score against its threshold as the eval gate judges it: ``scored 0.5
    < threshold 0.9`` fails, ``scored 0.94 ≥ threshold 0.9`` passes. One wording for the
    gate and for whatever else shows an evaluation (the trace CLI)."""
    if score is None or threshold is None:
        return "has no score or threshold"
    return f"scored {score} {'<' if score < threshold else '≥'} threshold {threshold}"


def approvals_gate(g: GateInput) -> Gate:
    """Enough distinct approvers for the policy's risk tier."""
    required = None
    if g.parts.policy is not None:
        required = g.parts.policy.properties.get("required_approvals")
    if not isinstance(required, int) or isinstance(required, bool):
        # Unset, or a value no version's ingest accepts now (a pack stored by an older
        # one): the tier's count.
        required = APPROVALS_BY_TIER[g.tier]
    # Distinct people: names that differ only in case (zyql, ZYQL) are one approver.
    named: dict[str, str] = {}
    for approval in sorted(g.approvals, key=lambda a: str(a.properties.get("approved_by"))):
        name = str(approval.properties.get("approved_by"))
        named.setdefault(name.casefold(), name)
    approvers = sorted(named.values())
    if len(approvers) < required:
        return Gate("approvals", False, f"{len(approvers)} of {required} required approvals "
                    f"({g.tier} tier){': ' + ', '.join(approvers) if approvers else ''}"
                    f"{_unread(g)}")
    return Gate("approvals", True, f"{len(approvers)} of {required} required: "
                f"{', '.join(approvers) or 'none needed'}")


def pinned_model_gate(g: GateInput) -> Gate:
    """No floating model alias in a production-like environment. Aliases match whatever
    their case (``gpt-5-mini-Latest`` floats as ``-latest`` does)."""
    if not g.production_like:
        return Gate("pinned_model", True, f"{g.environment} is not a production environment")
    names = [str(g.candidate.properties.get("model") or "")]
    if g.parts.model is not None:
        names += [g.parts.model.id, g.parts.model.name]
    for name in filter(None, names):
        bare = name.split(":", 1)[1] if name.startswith("model:") else name
        # Providers resolve aliases whatever their case: compare both lowered.
        lowered = bare.lower()
        for pattern in g.policy.floating_model_patterns:
            if (fnmatchcase(lowered, pattern.lower())
                    or fnmatchcase(lowered.rsplit("@", 1)[-1], pattern.lower())):
                return Gate("pinned_model", False,
                            f"model {name!r} is a floating alias (matches {pattern!r})")
    if g.parts.model is None:
        return Gate("pinned_model", False, f"{g.candidate.id} pins no model")
    return Gate("pinned_model", True, f"{g.parts.model.id} is pinned")


def residency_gate(g: GateInput) -> Gate:
    """Retrieved data sources' residency and the model's region are allowed by the pack."""
    if g.parts.policy is None:
        return Gate("residency", True, "no policy pack: nothing to check against")
    allowed = set(g.parts.policy.properties.get("residency") or [])
    if not allowed:
        return Gate("residency", True, f"{g.parts.policy.id} sets no residency")
    # Regions whatever their case (EU is eu), as aliases and risk tiers are read.
    within = {str(region).casefold() for region in allowed}

    def outside(region: Any) -> bool:
        return not isinstance(region, str) or region.casefold() not in within

    problems = []
    for source in g.parts.retrieves_from:
        where = source.properties.get("residency")
        if outside(where):
            problems.append(f"{source.id} resides in {where or 'an unknown region'}")
    if g.parts.model is not None:
        region = g.parts.model.properties.get("region")
        if outside(region):
            problems.append(f"{g.parts.model.id} runs in {region or 'an unknown region'}")
    if problems:
        return Gate("residency", False, f"{g.parts.policy.id} allows {sorted(allowed)}; "
                    + "; ".join(problems))
    return Gate("residency", True, f"all within {sorted(allowed)}")


def policy_present_gate(g: GateInput) -> Gate:
    """A bundle entering a production environment has a policy pack."""
    if g.parts.policy is not None:
        unknown = ("" if g.stated_tier == g.tier else
                   f" (its risk_tier {g.stated_tier!r} is no tier the gates know: judged as "
                   f"{g.tier}; upsert the pack with a tier to judge it as one)")
        return Gate("policy_present", True, f"governed by {g.parts.policy.id}{unknown}")
    if g.environment in g.policy.production_environments:
        return Gate("policy_present", False,
                    f"{g.candidate.id} has no policy pack and is entering {g.environment}")
    return Gate("policy_present", True, f"no policy pack; {g.environment} does not need one")


GATES: tuple[Callable[[GateInput], Gate], ...] = (
    eval_gate, approvals_gate, pinned_model_gate, residency_gate, policy_present_gate)


@dataclass(frozen=True, slots=True)
class Difference:
    field: str
    current: Any
    candidate: Any


@dataclass(slots=True)
class PromotionReport:
    candidate: Node
    environment: str
    current: Node | None
    gates: list[Gate]
    diff: list[Difference]
    blast_radius: BlastRadius | None
    parts: BundleParts = field(default_factory=BundleParts)
    # A retirement (into ``retired``): the environments the candidate leaves, and whether
    # it is retired already (retiring it again would record nothing new).
    leaves: list[str] = field(default_factory=list)
    already_retired: bool = False

    @property
    def retirement(self) -> bool:
        return self.environment == RETIRED

    @property
    def already_live(self) -> bool:
        if self.retirement:
            return self.already_retired
        return self.current is not None and self.current.id == self.candidate.id

    @property
    def archived(self) -> bool:
        """The candidate is archived (by retention, or replaced or deleted upstream): walks
        hide it, so serving it would leave it out of every answer about what is live —
        blastRadius among them. No override promotes it; retiring it is still allowed."""
        return not self.retirement and bool(self.candidate.properties.get("archived"))

    @property
    def refused(self) -> bool:
        """Nothing an override could make right: already there, or archived."""
        return self.already_live or self.archived

    @property
    def verdict(self) -> str:
        passed = all(g.passed for g in self.gates) and not self.refused
        return "ALLOW" if passed else "BLOCK"

    @property
    def reasons(self) -> list[str]:
        live = ([] if not self.already_live else
                [f"{self.candidate.id} is already retired: nothing to retire"]
                if self.retirement else
                [f"{self.candidate.id} is already live in {self.environment}: nothing to "
                 "promote"])
        archived = ([] if not self.archived else
                    [f"{self.candidate.id} is archived"
                     + (f" (at {self.candidate.properties['archived_at']})"
                        if self.candidate.properties.get("archived_at") else "")
                     + ": an archived version serves nowhere; upsert it with "
                       "`archived: false` to bring it back first"])
        return live + archived + [f"{g.name}: {g.reason}" for g in self.gates if not g.passed]


class GovernanceError(ValueError):
    """A request the registry refuses (unknown bundle, nothing to roll back to, …)."""


def _diff(current: Node | None, candidate: Node, parts: dict[str, BundleParts]) -> list[Difference]:
    if current is None:
        return [Difference("bundle", None, candidate.id)]
    now, new = parts[current.id], parts[candidate.id]
    fields = (("model", now.model, new.model), ("prompt", now.prompt, new.prompt),
              ("tools", now.toolset, new.toolset), ("policy", now.policy, new.policy))
    diff = [Difference(name, a.id if a else None, b.id if b else None)
            for name, a, b in fields if (a and a.id) != (b and b.id)]
    sources_now = [n.id for n in now.retrieves_from]
    sources_new = [n.id for n in new.retrieves_from]
    if sources_now != sources_new:
        diff.append(Difference("retrieves_from", sources_now, sources_new))
    params_now = current.properties.get("params", {})
    params_new = candidate.properties.get("params", {})
    for key in sorted(set(params_now) | set(params_new)):
        if params_now.get(key) != params_new.get(key):
            diff.append(Difference(f"params.{key}", params_now.get(key), params_new.get(key)))
    return diff


def promotion_report(
    store: GraphStore,
    name: str,
    version: str,
    environment: str,
    policy: GatePolicy = GatePolicy(),
    limits: WalkLimits = DEFAULT_LIMITS,
    at: datetime | None = None,
) -> PromotionReport:
    """The report on promoting ``name@version`` into ``environment`` as of ``at`` (default
    now; a move dated later is not in effect). Into ``retired`` it is a retirement report:
    verdict ALLOW with one passed ``retirement`` note instead of gates (BLOCK only when the
    version is retired already), no diff, and the RETIRE blast radius of the candidate."""
    try:
        check_environment(environment)
    except ValueError as error:
        raise GovernanceError(str(error)) from None
    candidate_id = bundle_id(name, version)
    candidate = store.get([candidate_id]).get(candidate_id)
    if candidate is None:
        raise GovernanceError(f"no bundle {candidate_id}")
    when = at or utc_now()
    if environment == RETIRED:
        return _retirement_report(store, candidate, when, limits)
    live = store.stage_at(name, environment, when)
    current = store.get([bundle_id(name, live)]).get(bundle_id(name, live)) if live else None
    impact_root = current.id if current is not None else candidate.id
    report = PromotionReport(
        candidate=candidate, environment=environment, current=current, gates=[], diff=[],
        blast_radius=blast_radius(store, impact_root, Action.CHANGE, limits=limits, now=when))
    _judge(store, report, candidate, policy, limits.max_chars)
    return report


def _judge(store: GraphStore, report: PromotionReport, candidate: Node,
           policy: GatePolicy, chars: int = DEFAULT_LIMITS.max_chars) -> None:
    """Fill ``report``'s gates, diff and parts from what is stored of ``candidate``: the
    report's first judgement, and a promotion's second in its write's turn (``Rejudged``)."""
    current = report.current
    # Once each: a candidate live there already is also the current version.
    parts = bundle_parts(store, sorted({candidate.id} | ({current.id} if current else set())))
    found = annotations(store, candidate.id, chars=chars)
    # An archived evaluation or approval is withdrawn: kept for the record (the evidence
    # pack lists it), counted by no gate.
    gate_input = GateInput(candidate, parts[candidate.id], report.environment,
                           [e for e in found.evaluations if not e.properties.get("archived")],
                           [a for a in found.approvals if not a.properties.get("archived")],
                           policy, found.cut)
    report.candidate = candidate
    report.parts = parts[candidate.id]
    report.gates = [gate(gate_input) for gate in GATES]
    report.diff = _diff(current, candidate, parts)


def _retirement_report(store: GraphStore, candidate: Node, when: datetime,
                       limits: WalkLimits) -> PromotionReport:
    # Retiring takes a version out of service: the gates guard what goes into service, so
    # none applies (a version failing its eval must be retirable without an override).
    # What is in effect and the version's own last move, not the name's history.
    name, version = candidate.name or "", candidate.version or ""
    leaves = sorted(env for env, live in store.live_environments(name, when).items()
                    if live == version)
    already = version in retired_versions(store.stage_latest(
        until=when, pairs=[(name, version)], per="version"))
    note = (f"retiring {candidate.id}: no promotion gate applies; it leaves "
            + (", ".join(leaves) if leaves else "no environment (it is live nowhere)"))
    return PromotionReport(
        candidate=candidate, environment=RETIRED, current=None,
        gates=[Gate("retirement", True, note)], diff=[],
        blast_radius=blast_radius(store, candidate.id, Action.RETIRE, limits=limits,
                                  now=when),
        parts=bundle_parts(store, [candidate.id])[candidate.id],
        leaves=leaves, already_retired=already)


def promote(
    store: GraphStore,
    name: str,
    version: str,
    environment: str,
    actor: str,
    *,
    override_reason: str | None = None,
    policy: GatePolicy = GatePolicy(),
    at: datetime | None = None,
) -> tuple[PromotionReport, StageMove | None]:
    """Move ``name@version`` into ``environment`` if every gate passes, or if an admin
    overrides with a reason (recorded in the move and the audit log). Returns the report and
    the recorded move (None when refused).

    Into ``retired`` it retires the version instead: no gates; a move into ``retired`` (the
    one returned) and a move to no version in each environment where it is live, in one
    transaction with a ``retire`` audit entry (``override_reason``, if given, is kept as
    the reason). Promoting a retired version into a serving environment revives it."""
    judged = {name: store.last_stage_seq(name)}  # before anything the report reads
    seen = store.metadata_seq()  # ... and the gates' inputs
    report = promotion_report(store, name, version, environment, policy, at=at)
    if report.refused:
        raise GovernanceError(report.reasons[0])
    if report.retirement:
        return report, _retire(store, report, actor, override_reason, at or utc_now(),
                               judged)

    def planned() -> tuple[list[StageMove], list[AuditEntry]]:
        if report.refused:
            raise GovernanceError(report.reasons[0])
        if report.verdict == "BLOCK" and not override_reason:
            raise _Blocked
        current = report.current.version if report.current else None
        reason = (f"{OVERRIDDEN}{override_reason}; blocked by "
                  + "; ".join(report.reasons)) if report.verdict == "BLOCK" else PROMOTED
        move = StageMove(name=name, environment=environment, from_version=current,
                         to_version=report.candidate.version, actor=actor, reason=reason,
                         **({"at": at} if at else {}))
        audit = AuditEntry(
            action="promote.override" if report.verdict == "BLOCK" else "promote",
            target=report.candidate.id, actor=actor,
            before={"environment": environment, "version": current},
            after={"environment": environment, "version": report.candidate.version,
                   "gates": {g.name: g.passed for g in report.gates}, "reason": reason})
        return [move], [audit]

    def again() -> tuple[list[StageMove], list[AuditEntry]]:
        # A write of metadata landed since the report was read (an evaluation, an
        # approval withdrawn, the policy pack, a source's residency, the candidate
        # archived): judged again on what is stored now, which holds until the commit.
        candidate = store.get([report.candidate.id]).get(report.candidate.id)
        if candidate is None:
            raise GovernanceError(f"no bundle {report.candidate.id}")
        _judge(store, report, candidate, policy)
        return planned()

    try:
        moves, audit = planned()
        return report, _recorded(store, moves, audit, judged, Rejudged(seen, again))[0]
    except _Blocked:
        return report, None


class _Blocked(Exception):
    """A promotion the gates block, with no override: nothing is recorded."""


def _recorded(store: GraphStore, moves: list[StageMove], audit: list[AuditEntry],
              judged: dict[str, int | None],
              rejudged: Rejudged | None = None) -> list[StageMove]:
    """Record moves judged on the name's stage history as ``judged`` saw it: if another
    move of the name landed since (two promotions at once, or a promotion elsewhere while
    a retirement took the version out of where it was live), none is kept and the caller
    is told."""
    try:
        return store.record_stage_moves(moves, audit, check_from=True, judged=judged,
                                        rejudged=rejudged)
    except StageMoved as error:
        raise GovernanceError(str(error)) from None


def _retire(store: GraphStore, report: PromotionReport, actor: str, note: str | None,
            when: datetime, judged: dict[str, int | None]) -> StageMove:
    candidate = report.candidate
    reason = f"retired: {note}" if note else "retired"
    # The move into ``retired`` is the lasting record, even where the version served
    # nowhere; the moves to no version take it out of service.
    into = StageMove(name=candidate.name, environment=RETIRED, to_version=candidate.version,
                     from_version=store.stage_at(candidate.name, RETIRED, when), actor=actor,
                     reason=reason, at=when)
    out = [StageMove(name=candidate.name, environment=env, from_version=candidate.version,
                     to_version=None, actor=actor, reason=reason, at=when)
           for env in report.leaves]
    audit = AuditEntry(action="retire", target=candidate.id, actor=actor, at=when,
                       before={"environments": report.leaves},
                       after={"environment": RETIRED, "version": candidate.version,
                              "reason": reason})
    return _recorded(store, [into, *out], [audit], judged)[0]


@dataclass(slots=True)
class Rollback:
    move: StageMove
    warnings: list[str]


def rollback(store: GraphStore, name: str, environment: str, actor: str,
             reason: str | None = None, at: datetime | None = None) -> Rollback:
    """Record a move back to the version live in ``environment`` before the current one,
    with the compatibility warnings a release engineer should read.

    The target is ``impact.rollback_plans``'s, as blastRadius names it: the latest earlier
    version there that is not retired now, not archived and registered (those passed over
    are named in the warnings; with none left the rollback is refused). A target that was
    itself rolled back from there stays the target — rolling back twice undoes the first
    rollback, as ``kubectl rollout undo`` does — with the warning "… was rolled back from
    at <time>". Only moves at or before ``at`` (default now) count. ``retired`` is no
    environment to roll back in: promote a retired version to revive it.

    Audited twice in the move's transaction, each entry with the reason and both versions:
    ``rollback`` on the version rolled back from and ``rollback.restore`` on the one put
    back, so the audit log of either finds it."""
    if environment == RETIRED:
        raise GovernanceError(f"{RETIRED} is no environment a version serves in: nothing to "
                              f"roll back there (promote a retired version to revive it)")
    try:
        check_environment(environment)
    except ValueError as error:
        raise GovernanceError(str(error)) from None
    when = at or utc_now()
    # The write is judged on the name's latest move, read before what the target is chosen
    # on; the history up to ``when`` is read back only as far as the target.
    judged = {name: store.last_stage_seq(name)}
    seen = store.metadata_seq()  # what the target is chosen on: archived, registered
    current = store.stage_at(name, environment, when)
    if current is None:
        raise GovernanceError(f"nothing of {name} is live in {environment}")
    current_id = bundle_id(name, current)
    warnings: list[str] = []

    def planned() -> tuple[list[StageMove], list[AuditEntry]]:
        # An unregistered or archived current version is still rolled back from: ``get``
        # returns archived nodes, and a bare node stands in for one never registered.
        node = store.get([current_id]).get(current_id) or Node.from_id(current_id)
        plan = bounded_rollback_plans(store, node, [AffectedBundle(node, [environment])],
                                      when)[0]
        if plan.truncated:
            raise GovernanceError(f"no earlier version of {name} to roll back to in "
                                  f"{environment}: {plan.warnings[0]}")
        if plan.target is None:
            raise GovernanceError(
                f"no earlier version of {name} was live in {environment}" if not plan.skipped
                else f"no earlier version of {name} to roll back to in {environment}: "
                     + "; ".join(plan.skipped))
        warnings[:] = plan.warnings
        target = plan.target.version
        move = StageMove(name=name, environment=environment, from_version=current,
                         to_version=target, actor=actor, reason=reason or "rollback", at=when)
        before = {"environment": environment, "version": current}
        after = {"environment": environment, "version": target, "reason": move.reason,
                 "warnings": plan.warnings}
        audit = [AuditEntry(action=action, target=target_id, actor=actor, at=when,
                            before=before, after=after)
                 for action, target_id in (("rollback", current_id),
                                           ("rollback.restore", plan.target.id))]
        return [move], audit

    # A target archived meanwhile is passed over as one archived before (``Rejudged``).
    recorded = _recorded(store, *planned(), judged, Rejudged(seen, planned))
    return Rollback(recorded[0], warnings)


def approve(store: GraphStore, target: str, actor: str, gate: str | None = None,
            comment: str | None = None, at: datetime | None = None) -> Node:
    """Record ``actor``'s approval of ``target`` (one per approver and gate: approving
    twice changes nothing; approving again after a withdrawal — ``archived: true`` — gives
    it anew)."""
    approval_id = format_id("approval", approval_name(target, actor, gate))
    found = store.get([target, approval_id])
    if target not in found:
        raise GovernanceError(f"no node {target}")
    withdrawn = approval_id in found and bool(found[approval_id].properties.get("archived"))
    if approval_id in found and not withdrawn:
        return found[approval_id]
    props = {"approved_by": actor, "target": target, "gate": gate, "comment": comment}
    approval = Node.from_id(approval_id, properties={k: v for k, v in props.items() if v},
                            **({"created_at": at} if at else {}))
    # Created, or nothing: the same approval recorded meanwhile (the approver twice at once,
    # or on two servers) refuses this write whole, its audit entry with it. A withdrawn one
    # is written over (its time stays its first).
    with suppress(NodesStored):
        store.write(store.prepare(
            [approval], [Edge(source=approval.id, type="APPROVES", target=target)],
            [AuditEntry(action="approve", target=target, actor=actor,
                        after={"gate": gate, "comment": comment})],
            new_nodes=[] if withdrawn else [approval.id]))
    return store.get([approval.id])[approval.id]



def change_audit(nodes: Iterable[Node], edges: Iterable[Edge], existing: dict[str, Node],
                 existing_edges: dict[tuple[str, str, str], Edge], actor: str,
                 at: datetime | None = None) -> list[AuditEntry]:
    """Audit entries for what a write changes, each with what was there before: a node's
    kind and properties (``upsert``), an edge's properties (``link``, on its source).
    What it would leave as it is gets none: re-sending is not a change."""
    when = {"at": at} if at else {}
    entries = []
    for node in nodes:
        old = existing.get(node.id)
        if old is None or old.properties != node.properties:
            entries.append(AuditEntry(
                action="upsert", target=node.id, actor=actor, **when,
                before={"kind": old.kind, "properties": old.properties} if old else None,
                after={"kind": node.kind, "properties": node.properties}))
    for edge in edges:
        old_edge = existing_edges.get(edge.key)
        if old_edge is None or old_edge.properties != edge.properties:
            entries.append(AuditEntry(
                action="link", target=edge.source, actor=actor, **when,
                before=_edge_audit(old_edge) if old_edge else None, after=_edge_audit(edge)))
    return entries


def _edge_audit(edge: Edge) -> dict[str, Any]:
    return {"type": edge.type, "target": edge.target, "properties": edge.properties}


def audited_upsert(store: GraphStore, nodes: list[Node], edges: list[Edge], actor: str,
                   check: Callable[[Mapping[str, Node]], None] | None = None) -> UpsertResult:
    """The upsert mutation: the write with an audit entry for each change it makes, what
    was there before included (read just before, in the same call). ``check`` sees what
    was read of the stored nodes (a scope check: what the write changes of them) and may
    refuse the write by raising. A SUPERSEDES edge closing a cycle is refused, as in a
    manifest load (``walk.supersedes_loops``).

    Everything the write is judged on is read of the graph: if a write of metadata lands
    before it (another server process, another upsert), it is judged again inside its write,
    holding the metadata writers' turn (``GraphStore.write_mapped``). Otherwise two upserts
    at once could each pass the cycle check and together close a cycle, or audit as
    "before" what the other one replaced."""
    loops = sorted({f"{e.source} -[{e.type}]-> itself" for e in edges if e.source == e.target})
    if loops:  # as a manifest's supersedes, fine_tuned_from or derived_from naming itself
        raise GovernanceError("; ".join(loops) + ": an edge links a node to another")

    def judged(seen: int | None) -> PreparedWrite:
        sources = sorted({e.source for e in edges})
        # One read for the audit's "before" and the registered bundles' pins alike: the
        # nodes and the edge sources, and those sources' edges of the write's types.
        existing = store.get(sorted({n.id for n in nodes} | set(sources)))
        loops = supersedes_loops(store, edges, existing)
        if loops:  # as a manifest's or an import's would be
            raise GovernanceError("; ".join(loop.message() for loop in loops))
        existing_edges = {hop.edge.key: hop.edge for hop in store.expand(
            sources, Direction.UPSTREAM, edge_types=sorted({e.type for e in edges}))
            } if edges else {}
        if check is not None:
            check(existing)
        live, stages_seen = _archiving_live(store, nodes, existing)
        if live:
            raise GovernanceError("; ".join(live))
        changes = pin_changes(nodes, edges, existing, existing_edges.keys())
        if changes:
            raise GovernanceError("; ".join(pin_change_message(b, c)
                                            for b, c in changes.items()))
        audit = change_audit(nodes, edges, existing, existing_edges, actor)
        return store.prepare(nodes, edges, audit, judged=stages_seen, metadata_seen=seen)

    try:
        try:
            return store.write(judged(store.metadata_seq()))  # read before the graph
        except MetadataMoved:
            return store.write_mapped(lambda: judged(None))
    except StageMoved as error:
        raise GovernanceError(str(error)) from None


def _archiving_live(store: GraphStore, nodes: list[Node], existing: Mapping[str, Node]
                    ) -> tuple[list[str], dict[str, int | None]]:
    """Why an upsert may not mark these versions archived: live somewhere, an archived one
    would serve while walks hide it — missing from every blast radius, as a promotion of an
    archived version would be (refused too). Retention archives only versions live nowhere,
    read under the stage lock. Also what the write is judged on, as a governance move: a
    stage move of one of the names before the write lands refuses it."""
    wanted = [n for n in nodes if n.kind in STAGED_KINDS and n.properties.get("archived") is True
              and not (n.id in existing and existing[n.id].properties.get("archived"))]
    if not wanted:
        return [], {}
    names = sorted({stage_name(n) for n in wanted})
    # Judged first: a move landing after this read refuses the write, whatever the next
    # read saw. Then what is live: each name's last move per environment, not its history.
    judged = {name: store.last_stage_seq(name) for name in names}
    live_now = {name: live_from(moves)
                for name, moves in by_name(store.stage_latest(names=names), names).items()}
    refused = []
    for node in wanted:
        live = sorted(env for env, version in live_now[stage_name(node)].items()
                      if version == node.version)
        if live:
            refused.append(f"{node.id} is live in {', '.join(live)}: archived, it would serve "
                           "while walks hide it (missing from every blast radius); retire it "
                           "first (promote it into retired), then archive it")
    return refused, judged


@dataclass(slots=True)
class EvidencePack:
    """What an auditor of a regulated release asks for, in one place."""

    bundle: Node
    parts: BundleParts
    upstream: Subgraph
    evaluations: list[Node]
    approvals: list[Node]
    stage_moves: list[StageMove]
    audit: list[AuditEntry]
    annotations_cut: bool = False  # older evaluations or approvals left out (registry)
    audit_cut: bool = False  # more audit entries than ``EVIDENCE_AUDIT``: the oldest kept
    moves_cut: bool = False  # more stage moves than ``HISTORY_MOVES``: the last kept


# Audit entries an evidence pack holds at most: `auditLog(target:)` pages through the rest.
EVIDENCE_AUDIT = 10_000


def evidence_pack(store: GraphStore, name: str, version: str,
                  limits: WalkLimits = DEFAULT_LIMITS) -> EvidencePack:
    """The bundle and what it pins, its upstream lineage to data, evaluations, approvals,
    stage history (its last ``HISTORY_MOVES`` moves, as ``history``: a name CI promotes
    hourly has tens of thousands) and every audit entry that touched the bundle or its
    annotations."""
    target = bundle_id(name, version)
    bundle = store.get([target]).get(target)
    if bundle is None:
        raise GovernanceError(f"no bundle {target}")
    found = annotations(store, target, chars=limits.max_chars)
    evaluations, approvals = found.evaluations, found.approvals
    touched = [target, *(n.id for n in evaluations + approvals)]
    # One read for all of them; the oldest ``EVIDENCE_AUDIT`` (one read per target each
    # capped at 1,000 entries left later ones out without saying so).
    entries = store.audit_log(targets=touched, limit=EVIDENCE_AUDIT + 1)
    audit = sorted(entries[:EVIDENCE_AUDIT], key=lambda e: (e.at, e.seq or 0))
    moves = store.stage_history(name=name, last=HISTORY_MOVES + 1)
    return EvidencePack(
        bundle=bundle, parts=bundle_parts(store, [target])[target],
        upstream=walk(store, target, Direction.UPSTREAM, FULL_DEPTH, limits=limits),
        evaluations=sorted(evaluations, key=lambda n: (n.created_at, n.id)),
        approvals=sorted(approvals, key=lambda n: (n.created_at, n.id)),
        stage_moves=moves[-HISTORY_MOVES:], audit=audit, annotations_cut=found.cut,
        audit_cut=len(entries) > EVIDENCE_AUDIT, moves_cut=len(moves) > HISTORY_MOVES)


def report_picture(store: GraphStore, report: PromotionReport, depth: int = 4) -> Subgraph:
    """The subgraph a promotion touches: what the candidate brings (upstream and what
    depends on it) and the blast radius of what it replaces."""
    picture = walk(store, report.candidate.id, Direction.BOTH, depth,
                   edge_types=STRUCTURE_EDGES)  # requests are counted, never drawn
    if report.blast_radius is not None:
        radius = report.blast_radius.downstream
        for node_id, node in radius.nodes.items():
            picture.nodes.setdefault(node_id, node)
            picture.degrees[node_id] = min(picture.degrees.get(node_id, 1 << 30),
                                           radius.degrees[node_id])
        picture.edges.update(radius.edges)
    return picture
