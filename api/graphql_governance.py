"""Governance over GraphQL: the promotion report, the audit log, and the mutations that
register, promote, roll back and approve. Every mutation is recorded in the audit log
under the caller's token name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import strawberry
from pydantic import ValidationError
from strawberry.scalars import JSON
from strawberry.types import Info

from lineagegraph.graph import governance
from lineagegraph.schema import Edge as EdgeRecord
from lineagegraph.schema import Node as NodeRecord
from lineagegraph.schema import canonical_id, parse_id
from lineagegraph.schema.bounds import note_flaw
from lineagegraph.schema.models import describe_validation_error

from .auth import (
    AuthError,
    Forbidden,
    NeedsAdmin,
    NeedsWrite,
    principal_of,
    require_admin_for,
)
from .graphql_types import (
    BlastRadius,
    Context,
    NodeType,
    StageMove,
    UserError,
    blast_radius_type,
    maybe,
    node_id_arg,
    stage_move_type,
    to_gql,
    window_args,
)

MAX_AUDIT_PAGE = 5000
T = TypeVar("T")


def actor_of(info: Info) -> str:
    principal = principal_of(info.context.request)
    return principal.name if principal is not None else "anonymous"


@strawberry.type
class Gate:
    name: str
    passed: bool
    reason: str | None


@strawberry.type
class Difference:
    field: str
    current: JSON | None
    candidate: JSON | None


@strawberry.type
class PromotionReport:
    verdict: str
    reasons: list[str]
    environment: str
    gates: list[Gate]
    current: NodeType | None
    candidate: NodeType
    diff: list[Difference]
    blast_radius: BlastRadius | None


def report_type(report: governance.PromotionReport,
                policy: governance.GatePolicy) -> PromotionReport:
    return PromotionReport(
        verdict=report.verdict, reasons=report.reasons, environment=report.environment,
        gates=[Gate(name=g.name, passed=g.passed, reason=g.reason) for g in report.gates],
        current=maybe(report.current), candidate=to_gql(report.candidate),
        diff=[Difference(field=d.field, current=d.current, candidate=d.candidate)
              for d in report.diff],
        blast_radius=(blast_radius_type(report.blast_radius, policy.production_environments)
                      if report.blast_radius is not None else None),
    )


@strawberry.type
class AuditEntry:
    seq: int | None
    at: datetime
    actor: str
    action: str
    target: str
    before: JSON | None
    after: JSON | None


@strawberry.type
class PromotionResult:
    promoted: bool
    report: PromotionReport
    move: StageMove | None


@strawberry.type
class RollbackResult:
    move: StageMove
    warnings: list[str]


@strawberry.type
class UpsertCounts:
    created: int
    updated: int
    unchanged: int


@strawberry.type
class UpsertResult:
    nodes: UpsertCounts
    edges: UpsertCounts


@strawberry.input
class NodeInput:
    id: strawberry.ID
    kind: str | None = strawberry.field(
        default=None, description="Needed only where the ID alone is ambiguous (a pinned "
                                  "model snapshot without @version is a ModelVersion).")
    created_at: datetime | None = None
    properties: JSON | None = None


@strawberry.input
class EdgeInput:
    source: strawberry.ID
    type: str
    target: strawberry.ID
    properties: JSON | None = None


def _policy(info: Info) -> governance.GatePolicy:
    return info.context.settings.gate_policy


@strawberry.type
class GovernanceQuery:
    @strawberry.field(description="The report a release engineer reads before promoting "
                      "`bundle@version` into `environment`: gates, diff against what is "
                      "live, blast radius, verdict. A bundle version the graph does not hold "
                      "is an error naming it.")
    async def promotion_impact(self, info: Info, bundle: str, version: str,
                               environment: str) -> PromotionReport:
        context: Context = info.context
        try:
            report = await context.run(lambda: governance.promotion_report(
                context.store, bundle, version, environment, _policy(info),
                context.settings.walk_limits))
        except governance.GovernanceError as error:
            raise UserError(str(error)) from None
        return report_type(report, _policy(info))

    @strawberry.field(description="The append-only audit log, oldest first. `target` "
                      "selects the entries of one target as the log names it, blanks around "
                      "it ignored: a node ID (`model:x@v7` also finds its canonical "
                      "`model:x@7`), `token:NAME` for token changes, or the source of a "
                      "load (`api`, `demo`, a file path). `after`: the entries after the one "
                      "with that `seq` (pass the last entry's to page on). A page also stops "
                      "at 8 Mi characters of `before` and `after`, with at least one entry; "
                      "the response's `extensions.warnings` then says so.")
    async def audit_log(self, info: Info, since: datetime | None = None,
                        until: datetime | None = None, actor: str | None = None,
                        target: str | None = None, first: int = 500,
                        after: int | None = None) -> list[AuditEntry]:
        if not 0 <= first <= MAX_AUDIT_PAGE:
            raise UserError(f"first: must be between 0 and {MAX_AUDIT_PAGE}")
        if after is not None and after < 0:
            raise UserError("after: must be an entry's seq, 0 or more")
        # Targets are node IDs, but also `token:NAME` and load sources, which are none: each
        # matches as given, and a node ID in its canonical spelling too (entries name nodes
        # canonically), without refusing what is no node ID.
        targets: list[str | None] = [None]
        if target is not None:
            wanted = target.strip()
            if not wanted:
                raise UserError("target: empty; leave it out to list every target")
            try:
                canonical = canonical_id(wanted)
            except ValueError:  # InvalidId: a token, a source — matched as given
                canonical = wanted
            targets = [wanted] if canonical == wanted else [wanted, canonical]
        window = window_args(since, until)
        context: Context = info.context
        pages = await context.run(lambda: [context.store.audit_page(
            since=window[0], until=window[1], actor=actor, target=one, after_seq=after,
            limit=first) for one in targets] if first else [])
        # Stored entries all carry a seq. Of two targets' pages, one cut short ends the
        # merged page at its last entry, so that paging on skips none of its entries.
        found = sorted((e for entries, _ in pages for e in entries), key=lambda e: e.seq or 0)
        cut = [entries[-1].seq or 0 for entries, more in pages if more and entries]
        entries = [e for e in found if not cut or (e.seq or 0) <= min(cut)][:first]
        if any(more for _, more in pages) and len(entries) < first:
            context.warn(info, f"cut at {len(entries)} entries by their size (8 Mi characters "
                         "a page): more follow; page on with `after` set to the last `seq`")
        return [AuditEntry(seq=e.seq, at=e.at, actor=e.actor, action=e.action, target=e.target,
                           before=e.before, after=e.after) for e in entries]


async def _governed(info: Info, work: Any) -> Any:
    context: Context = info.context
    try:
        return await context.run(work)
    except governance.GovernanceError as error:
        raise UserError(str(error)) from None


def _input(path: str, build: Callable[[], T]) -> T:
    """One input object as a record, or the caller's error naming it and its field."""
    try:
        return build()
    except ValidationError as error:
        raise UserError(describe_validation_error(error, at=path)) from None
    except ValueError as error:
        raise UserError(f"{path}: {error}") from None


def _note(argument: str, text: str | None) -> str | None:
    """A reason or a comment as given, or the caller's error naming ``argument``: kept in
    the append-only logs, it is bounded (``bounds.MAX_NOTE_BYTES``) as a manifest's is."""
    flaw = None if text is None else note_flaw(text)
    if flaw is not None:
        raise UserError(f"{argument}: {flaw}")
    return text


@strawberry.type
class Mutation:
    # Results are nullable: a field that is refused or fails is null with its error, and
    # the operation's other fields, run and committed one after another, still answer.
    @strawberry.mutation(permission_classes=[NeedsWrite],
                         description="Register or update nodes and edges in one "
                         "transaction (all or nothing; re-sending changes nothing).")
    async def upsert(self, info: Info, nodes: list[NodeInput],
                     edges: list[EdgeInput] | None = None) -> UpsertResult | None:
        actor = actor_of(info)
        records = [_input(f"nodes.{i}", lambda n=n: NodeRecord.from_id(
            canonical_id(n.id), kind=n.kind, properties=n.properties or {},
            **({"created_at": n.created_at} if n.created_at else {})))
            for i, n in enumerate(nodes)]
        links = [_input(f"edges.{i}", lambda e=e: EdgeRecord(
            source=e.source, type=e.type, target=e.target, properties=e.properties or {}))
            for i, e in enumerate(edges or [])]
        context: Context = info.context
        principal = principal_of(info.context.request)

        def check(stored: Mapping[str, NodeRecord]) -> None:
            # An approval is the approve mutation's to record, and what the gates read of a
            # stored node changes, under `admin` only: judged on what the upsert read.
            require_admin_for(principal, records, links, stored=stored)

        try:
            result = await _governed(info, lambda: governance.audited_upsert(
                context.store, records, links, actor, check))
        except AuthError as error:
            raise Forbidden(error.message) from None
        return UpsertResult(
            nodes=UpsertCounts(created=result.nodes.created, updated=result.nodes.updated,
                               unchanged=result.nodes.unchanged),
            edges=UpsertCounts(created=result.edges.created, updated=result.edges.updated,
                               unchanged=result.edges.unchanged))

    @strawberry.mutation(permission_classes=[NeedsAdmin],
                         description="Move `bundle@version` into `environment` when every "
                         "gate passes; refused with the failed gates otherwise. An admin "
                         "may override with a reason, recorded in the move and the audit "
                         "log. A version already live there, or archived, is refused even "
                         "with an override. Into `retired` it retires the version: no "
                         "gates; it leaves every environment where it is live and rollbacks "
                         "pass it over; promoting it again revives it. Recorded only if the "
                         "version it replaces is still live when written (two at once: the "
                         "second is refused).")
    async def promote(self, info: Info, bundle: str, version: str, environment: str,
                      override_reason: str | None = None) -> PromotionResult | None:
        if override_reason is not None and not override_reason.strip():
            raise UserError("overrideReason: must say why")
        _note("overrideReason", override_reason)
        context: Context = info.context
        report, move = await _governed(info, lambda: governance.promote(
            context.store, bundle, version, environment, actor_of(info),
            override_reason=override_reason, policy=_policy(info)))
        return PromotionResult(promoted=move is not None, report=report_type(report, _policy(info)),
                               move=stage_move_type(move) if move else None)

    @strawberry.mutation(permission_classes=[NeedsAdmin],
                         description="Move `name` in `environment` back to the latest "
                         "earlier version live there that is not retired, archived or "
                         "unregistered (those passed over are named in `warnings`, with "
                         "compatibility notes). `environment` `retired` is refused; so is a "
                         "rollback with no such version, or one another move overtook.")
    async def rollback(self, info: Info, name: str, environment: str,
                       reason: str | None = None) -> RollbackResult | None:
        _note("reason", reason)
        context: Context = info.context
        result = await _governed(info, lambda: governance.rollback(
            context.store, name, environment, actor_of(info), reason))
        return RollbackResult(move=stage_move_type(result.move), warnings=result.warnings)

    @strawberry.mutation(permission_classes=[NeedsAdmin],
                         description="Approve `target` (a bundle, model or prompt version) "
                         "as the caller, optionally for a named gate.")
    async def approve(self, info: Info, target: strawberry.ID, gate: str | None = None,
                      comment: str | None = None) -> NodeType | None:
        _note("comment", comment)
        context: Context = info.context
        target_id = node_id_arg(target, "target")
        if parse_id(target_id).prefix not in ("bundle", "model", "prompt"):
            raise UserError("target: only bundles, model and prompt versions are approved")
        node = await _governed(info, lambda: governance.approve(
            context.store, target_id, actor_of(info), gate, comment))
        return to_gql(node)
