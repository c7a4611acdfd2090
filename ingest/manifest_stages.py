"""Stage moves a manifest load asks for, planned against the append-only history so that a
re-sent manifest appends nothing — also after promotions and rollbacks made through the API,
which a re-send must not undo. Every rule decides from what is stored, never from what is
live at the moment alone.

- ``status: <environment>`` on a bundle entry is a declaration recorded once: a move of
  that version into the environment, unless the history already holds one (at any time).
  So re-loading the registry never undoes a later promotion or rollback made through the
  API. Such a declaration is not silent: when the version is not live there now, the load
  answers a warning naming the record (``StagePlanner.warnings``). The move happens at load
  time; only an entry whose version is new in this load and that states ``created_at`` is
  history being imported, and its move is dated then — unless the environment has moved
  since: then it is not applied, with a warning (dated then, it would rewrite the past;
  dated now, an old entry would displace what is live without the gates). So a later load
  never changes what ``resolve(asOf: past)`` answered. When several versions of one name declare
  the same environment in one load, the highest is the one the load moves in; a lower one
  already recorded in that environment is an old entry a registry directory keeps (nothing
  to do), and a lower one new in this load with ``created_at`` before the next higher one's
  move is history being imported: each is a move at its own ``created_at``, in time order.
  Any other lower declaration (a version loaded before, one without ``created_at``, one
  dated at or after a higher version's move) is not applied, with a warning.
- ``status: retired`` is recorded once per version: a move into the environment
  ``retired`` (``RETIRED``; never an environment a version serves in, see
  ``graph.store.live_from``) to that version, a lasting record even when it was live
  nowhere, and a move to no version (``StageMove.to_version`` None) in every environment
  where it is live now. Every version a load retires is retired. A retirement already
  recorded records nothing: a version promoted again since stays where it was (with a
  warning).
- A ``kind: StageMove`` document is explicit history. With ``at`` it is appended unless
  the same move (environment, version, time) is recorded. Without ``at`` it is applied
  once, at load time: it is recognised by what it states — a move recorded into that
  environment to that version, with its ``reason`` and ``actor`` where the document states
  them — and when one is recorded, at any time, nothing is appended. (To move a version in
  again, send the move with ``at`` or its own ``reason``.)
- Scheduled moves are not supported: the loader refuses a move dated in the future.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from lineagegraph.graph.store import RETIRED, GraphStore, by_name, version_order
from lineagegraph.schema import Node, StageMove

from .batch import Problem
from .manifest_formats import StageMoveDoc

# The reason of the moves a retirement records; also how retirements recorded before the
# ``retired`` environment existed (moves to no version only) are recognised.
RETIRED_REASON = "retired in manifest"
# The least step in time a stored move keeps (microseconds, on both stores).
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Status:
    """One bundle entry's ``status``: ``dated`` is its ``created_at`` when the version is
    new in this load and the entry states one (history being imported), else None."""

    record: int | str
    bundle: Node
    status: str
    dated: datetime | None = None


class StagePlanner:
    """Plans a load's moves from bounded reads of each name's stored history — what is live
    in each environment, the last move before a time, whether a version was ever moved
    somewhere — not the whole of it: a bundle CI promotes hourly has tens of thousands of
    moves. Moves planned so far count with the stored ones, after them at equal times."""

    def __init__(self, store: GraphStore, actor: str, now: datetime) -> None:
        self.store = store
        self.actor = actor
        self.now = now
        self.planned: list[StageMove] = []
        # Declarations the load did not apply, with why: answered with the load's summary.
        self.warnings: list[Problem] = []
        self._judged: dict[str, int | None] = {}  # name → its last seq, read before the rest
        self._latest: dict[str, dict[str, StageMove]] = {}  # name → environment → last move
        self._planned_in: dict[tuple[str, str], list[int]] = {}  # → indices into planned
        # (name, environment, version) → whether a move there is stored; and the (name,
        # version) pairs whose every environment was read at once
        self._visited: dict[tuple[str, str, str | None], bool] = {}
        self._read_all: set[tuple[str, str | None]] = set()
        self._before: dict[tuple[str, str, datetime], StageMove | None] = {}
        self._to_nothing: dict[str, list[StageMove]] = {}

    def _read(self, names: Sequence[str]) -> None:
        """Each name's last seq, then its last move in each environment, once a load. The
        seq comes first: a move landing after it refuses the write (``judged``), so the
        reads after it need not be one snapshot."""
        new = [name for name in dict.fromkeys(names) if name not in self._judged]
        if not new:
            return
        for name in new:
            self._judged[name] = self.store.last_stage_seq(name)
        for name, moves in by_name(self.store.stage_latest(names=new), new).items():
            self._latest[name] = {m.environment: m for m in moves}

    def judged(self) -> dict[str, int | None]:
        """The names whose stored history the plan read, each with its latest move's seq:
        a move of one landing before the load is written refuses it (``StagesMoved``)."""
        return dict(self._judged)

    def _planned(self, name: str, environment: str) -> list[StageMove]:
        return [self.planned[i] for i in self._planned_in.get((name, environment), [])]

    def _planned_of(self, name: str) -> list[StageMove]:
        """The moves of ``name`` planned so far, in every environment."""
        return [self.planned[i] for (n, _), indices in self._planned_in.items() if n == name
                for i in indices]

    def _environments(self, name: str) -> set[str]:
        """Where ``name`` has moved, stored or planned (``retired`` too)."""
        self._read([name])
        return {*self._latest[name], *(m.environment for m in self._planned_of(name))}

    def _stored_until(self, name: str, environment: str, at: datetime | None) -> StageMove | None:
        """The last stored move of ``name`` in ``environment`` at or before ``at``."""
        self._read([name])
        last = self._latest[name].get(environment)
        if at is None or last is None or last.at <= at:
            return last
        key = (name, environment, at)
        if key not in self._before:
            found = self.store.stage_latest(environment, at, names=[name])
            self._before[key] = found[-1] if found else None
        return self._before[key]

    def _recorded(self, name: str, environment: str, version: str | None) -> bool:
        """Whether a move of ``name`` into ``environment`` to ``version`` is stored or
        planned, at any time."""
        if any(m.to_version == version for m in self._planned(name, environment)):
            return True
        key = (name, environment, version)
        if key not in self._visited:
            self._visited[key] = (name, version) not in self._read_all and bool(
                self.store.stage_latest(environment, pairs=[(name, version)]))
        return self._visited[key]

    def _read_visits(self, statuses: Sequence[Status]) -> None:
        """Where the versions ``statuses`` name ever went, one read for all of them."""
        pairs = {(s.bundle.name, s.bundle.version) for s in statuses
                 if s.bundle.version is not None} - self._read_all
        if not pairs:
            return
        visits = self.store.stage_latest(pairs=sorted(pairs), per="visit")
        self._read_all |= pairs
        for move in visits:
            self._visited[(move.name, move.environment, move.to_version)] = True

    def in_effect(self, name: str, environment: str, at: datetime | None = None) -> str | None:
        stored = self._stored_until(name, environment, at)
        planned = [m for m in self._planned(name, environment) if at is None or m.at <= at]
        last = _last([stored] if stored else [], planned)
        return last.to_version if last else None

    def _append(self, move: StageMove) -> None:
        self._planned_in.setdefault((move.name, move.environment), []).append(
            len(self.planned))
        self.planned.append(move)
        self._relink(move.name, move.environment)

    def _relink(self, name: str, environment: str) -> None:
        """Each planned move's ``from_version``: what was in effect just before it, with
        every move planned so far. A load plans declarations before explicit moves, and an
        explicit move may be dated before a declared one (the history a registry entry's
        status alone cannot tell)."""
        earlier: StageMove | None = None  # the planned move before, in time order
        indices = self._planned_in[(name, environment)]
        for i in sorted(indices, key=lambda i: self.planned[i].at):  # stable: append order
            move = self.planned[i]
            stored = self._stored_until(name, environment, move.at)
            previous = _last([stored] if stored else [], [earlier] if earlier else [])
            version = previous.to_version if previous else None
            if move.from_version != version:
                move = self.planned[i] = move.model_copy(update={"from_version": version})
            earlier = move

    def _now_in(self, name: str, environment: str) -> datetime:
        """When an undated move of the load happens: the load's time, or just after the
        latest stored move there if that is later — one landed after the load began and
        before it read the history (a promotion at once). Dated before it, the load's move
        would be written under a move already made, from the version that move replaced."""
        latest = self._stored_until(name, environment, None)
        return self.now if latest is None or latest.at < self.now else latest.at + _TICK

    def _move(self, name: str, environment: str, version: str | None, at: datetime,
              actor: str | None = None, reason: str | None = None) -> None:
        self._append(StageMove(name=name, environment=environment, to_version=version,
                               from_version=self.in_effect(name, environment, at), at=at,
                               actor=actor or self.actor, reason=reason))

    def _warn(self, status: Status, message: str) -> None:
        self.warnings.append(Problem(message, record=status.record, field="status"))

    def apply_statuses(self, statuses: Sequence[Status]) -> None:
        """The ``status`` of a load's bundle entries."""
        self._read([status.bundle.name for status in statuses])
        self._read_visits(statuses)
        groups: dict[tuple[str, str], dict[str, Status]] = {}
        retirements: list[Status] = []
        for status in statuses:
            if status.status == RETIRED:  # "the highest" is for environments only
                retirements.append(status)
                continue
            group = groups.setdefault((status.bundle.name, status.status), {})
            group.setdefault(status.bundle.id, status)  # an entry sent twice declares once
        # Declarations first: a retirement then only acts where nothing replaced the version.
        for group in groups.values():
            for status in self._imported(list(group.values())):
                self._declare(status)
        for status in retirements:
            self._retire(status)

    def _imported(self, group: list[Status]) -> list[Status]:
        """Of the declarations of one environment by versions of one name: the ones to
        declare, in time order — the highest version, and the lower ones that are history
        being imported, each dated before the move of the next higher one (else the times
        contradict the versions: which one was live last?). The rest are warned about."""
        ordered = sorted(group, key=lambda s: version_order(s.bundle), reverse=True)
        highest = ordered[0]
        chosen, bound = [highest], highest.dated or self.now
        for status in ordered[1:]:
            bundle, environment = status.bundle, status.status
            if self._recorded(bundle.name, environment, bundle.version):
                continue  # an old entry a registry keeps with its old status: recorded
            if status.dated is None:
                self._warn(status, f"status: {environment} of {bundle.id} not applied: "
                           f"{highest.bundle.id} is the version this load moves into "
                           f"{environment}, and an older entry's status is applied only as "
                           "history being imported (a version new in the load, with its "
                           "created_at); promote through the API, or send a StageMove")
            elif status.dated >= bound:
                self._warn(status, f"status: {environment} of {bundle.id} not applied: it "
                           f"is dated {status.dated.isoformat()} (created_at), not before "
                           f"the move of a higher version into {environment} "
                           f"({bound.isoformat()}), so the times contradict the versions; "
                           "send StageMoves with `at` to say what was live when")
            else:
                chosen.append(status)
                bound = status.dated
        return chosen[::-1]  # lowest first: each dated before the next

    def _declare(self, status: Status) -> None:
        bundle, environment = status.bundle, status.status
        name, version = bundle.name, bundle.version
        if self._recorded(name, environment, version):
            live = self.in_effect(name, environment)
            if live != version:  # the registry and the graph disagree: say so
                serves = f"@{live}" if live else "nothing"
                self._warn(status, f"status: {environment} of {bundle.id} not applied: "
                           f"@{version} was in {environment} before, and a load does not undo "
                           f"the moves made since ({environment} serves {serves} now); promote "
                           "or roll back through the API, or send a StageMove")
            return
        dated = status.dated
        stored = self._stored_until(name, environment, None)
        latest = max([m.at for m in self._planned(name, environment)]
                     + ([stored.at] if stored else []), default=None)
        if dated is not None and latest is not None and latest > dated:
            # History older than what is recorded: dated then, it would change what
            # ``resolve(asOf)`` answered; dated now, an old entry would displace the
            # version live there without the gates. Neither without being asked.
            serves = f"@{live}" if (live := self.in_effect(name, environment)) else "nothing"
            self._warn(status, f"status: {environment} of {bundle.id} not applied: it is "
                       f"dated {dated.isoformat()} (created_at), before {environment}'s "
                       f"latest move ({latest.isoformat()}; it serves {serves} now), and a "
                       "load neither rewrites the past nor moves an old entry in now; "
                       "promote through the API, or send a StageMove")
            return
        self._move(name, environment, version, dated or self._now_in(name, environment),
                   reason="status in manifest")

    def _retire(self, status: Status) -> None:
        name, version = status.bundle.name, status.bundle.version
        if self._retired(name, version):
            live = sorted(env for env in self._environments(name) - {RETIRED}
                          if self.in_effect(name, env) == version)
            if live:
                self._warn(status, f"status: retired of {status.bundle.id} not applied again: "
                           f"it was retired before and moved into {', '.join(live)} since, "
                           "and a load does not undo the moves made since")
            return
        self._move(name, RETIRED, version, self._now_in(name, RETIRED), reason=RETIRED_REASON)
        self._out_of_service(name, version)

    def _retired(self, name: str, version: str | None) -> bool:
        """Whether a retirement of ``version`` is stored or planned (``_is_retirement``)."""
        if self._recorded(name, RETIRED, version):
            return True
        if name not in self._to_nothing:  # few: retirements and rollbacks to nothing
            self._to_nothing[name] = self.store.stage_history(name=name, versions=[None])
        return any(_is_retirement(m, version)
                   for m in (*self._to_nothing[name], *self._planned_of(name)))

    def _out_of_service(self, name: str, version: str | None, as_of: datetime | None = None,
                        dated: datetime | None = None, actor: str | None = None,
                        reason: str = RETIRED_REASON) -> None:
        """A retirement's moves to no version, in every environment ``name`` moved in
        where ``version`` is in effect ``as_of`` (default: last), each dated ``dated`` or
        that environment's now (``_now_in``): ``retired`` is no environment a version
        serves in."""
        for environment in sorted(self._environments(name) - {RETIRED}):
            if self.in_effect(name, environment, as_of) == version:
                self._move(name, environment, None, dated or self._now_in(name, environment),
                           actor, reason)

    def stated_actor(self, actor: str | None) -> str | None:
        """The actor a document states, as the stage log records it: someone else than
        the loader (a move imported from another system) is kept with who recorded it, so
        no document makes a move look like the CLI's or another token's alone."""
        return actor if actor in (None, self.actor) else f"{actor} (recorded by {self.actor})"

    def apply_move(self, name: str, doc: StageMoveDoc, record: int | str | None = None, *,
                   latest: bool = False) -> None:
        """``latest``: the load's last move document for this name and environment — what
        it says is live there; when it is not applied again and something else is live
        now, the load says so (``warnings``)."""
        self._read([name])
        actor = self.stated_actor(doc.actor)
        environment = doc.environment
        if doc.at is None:
            # applied once: recognised by what the document states, whatever is live now
            moves = [*self.store.stage_history(name=name, environment=environment,
                                               versions=[doc.version]),
                     *self._planned(name, environment)] if self._recorded(
                         name, environment, doc.version) else []
            recorded = sorted((m for m in moves if m.to_version == doc.version
                               and (doc.reason is None or m.reason == doc.reason)
                               and (doc.actor is None or m.actor in (doc.actor, actor))),
                              key=lambda m: m.at)  # stable: stored before planned
            if recorded:
                live = self.in_effect(name, doc.environment)
                if latest and live != doc.version:  # the registry and the graph disagree
                    serves = f"@{live}" if live else "nothing"
                    self.warnings.append(Problem(
                        f"StageMove of {name}@{doc.version or '-'} into {doc.environment} "
                        f"not applied again: it was recorded at "
                        f"{recorded[-1].at.isoformat()}, and a load does not undo the moves "
                        f"made since ({doc.environment} serves {serves} now); send it with "
                        "`at` or a reason of its own to move it in again",
                        record=record, field="version"))
                return
            at = self._now_in(name, doc.environment)
        else:
            at = doc.at
            stored = self.store.stage_latest(environment, at, pairs=[(name, doc.version)])
            if any(m.to_version == doc.version and m.at == at
                   for m in (*stored, *self._planned(name, environment))):
                return
        self._move(name, doc.environment, doc.version, at, actor, doc.reason)
        if doc.environment == RETIRED and doc.version is not None:
            # Into ``retired``, as a retirement anywhere: out of where it is in effect then.
            self._out_of_service(name, doc.version, at, doc.at, actor,
                                 doc.reason or RETIRED_REASON)


def _last(stored: Sequence[StageMove], planned: Sequence[StageMove]) -> StageMove | None:
    """The last of these moves in a history's order: by time, and at equal times planned
    after stored, each as listed (stored as read, planned as appended)."""
    last = None
    for move in (*stored, *planned):
        if last is None or move.at >= last.at:
            last = move
    return last


def _is_retirement(move: StageMove, version: str | None) -> bool:
    """A recorded retirement of ``version``: a move into ``retired``, or one to no version
    made by a manifest retirement before there was a ``retired`` environment."""
    if move.environment == RETIRED:
        return move.to_version == version
    return (move.to_version is None and move.from_version == version
            and move.reason == RETIRED_REASON)
