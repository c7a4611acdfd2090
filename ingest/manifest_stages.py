"""Stage moves a manifest load asks for, planned against the append-only history so that a
re-sent manifest appends nothing.

- ``status: <environment>`` on a bundle entry is a declaration recorded once: a move of
  that version into the environment, unless the history already holds one (at any time).
  So re-loading the registry never undoes a later promotion or rollback made through the
  API. The move is dated at the version's creation, or at load time when the environment
  has moved since (a move dated before the latest one would never take effect). When
  several versions of one name declare the same environment in one load, only the highest
  counts — a registry directory keeps old entries with their old status.
- ``status: retired`` takes the version out of every environment where it is live now (a
  move to no version; ``StageMove.to_version`` None), unless that retirement is already
  recorded there. It names no environment of its own, so a retired version is never
  "live" in a ``retired`` environment.
- A ``kind: StageMove`` document is explicit history: appended unless the same move
  (environment, version, time) is recorded; without ``at`` it happens at load time unless
  the version is already in effect there.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from lineagegraph.graph.store import GraphStore, version_order
from lineagegraph.schema import Node, StageMove

from .manifest_formats import StageMoveDoc

RETIRED = "retired"


class StagePlanner:
    def __init__(self, store: GraphStore, actor: str, now: datetime) -> None:
        self.store = store
        self.actor = actor
        self.now = now
        self.planned: list[StageMove] = []
        self._history: dict[str, list[StageMove]] = {}

    def history(self, name: str) -> list[StageMove]:
        """The stored moves of ``name`` and those planned so far, in time order."""
        if name not in self._history:
            self._history[name] = self.store.stage_history(name=name)
        return sorted(self._history[name], key=lambda m: m.at)  # stable: append order kept

    def in_effect(self, name: str, environment: str, at: datetime | None = None) -> str | None:
        version = None
        for move in self.history(name):
            if move.environment == environment and (at is None or move.at <= at):
                version = move.to_version
        return version

    def _append(self, move: StageMove) -> None:
        self.history(move.name)
        self._history[move.name].append(move)
        self.planned.append(move)
        self._relink(move.name, move.environment)

    def _relink(self, name: str, environment: str) -> None:
        """Each planned move's ``from_version``: what was in effect just before it, with
        every move planned so far. A load plans declarations before explicit moves, and an
        explicit move may be dated before a declared one (the history a registry entry's
        status alone cannot tell)."""
        previous: str | None = None
        for move in self.history(name):
            if move.environment != environment:
                continue
            if move in self.planned and move.from_version != previous:
                fixed = move.model_copy(update={"from_version": previous})
                self.planned[self.planned.index(move)] = fixed
                moves = self._history[name]
                moves[moves.index(move)] = fixed
            previous = move.to_version

    def _move(self, name: str, environment: str, version: str | None, at: datetime,
              actor: str | None = None, reason: str | None = None) -> None:
        self._append(StageMove(name=name, environment=environment, to_version=version,
                               from_version=self.in_effect(name, environment, at), at=at,
                               actor=actor or self.actor, reason=reason))

    def apply_statuses(self, statuses: Sequence[tuple[Node, datetime, str]]) -> None:
        """(bundle node, its creation time, status) of a load's bundle entries."""
        chosen: dict[tuple[str, str], tuple[Node, datetime]] = {}
        for bundle, created, status in statuses:
            key = (bundle.name, status)
            if key not in chosen or version_order(bundle) > version_order(chosen[key][0]):
                chosen[key] = (bundle, created)
        # Declarations first: a retirement then only acts where nothing replaced the version.
        for (name, status), (bundle, created) in sorted(
                chosen.items(), key=lambda item: item[0][1] == RETIRED):
            if status == RETIRED:
                self._retire(name, bundle.version)
            else:
                self._declare(name, status, bundle.version, created)

    def _declare(self, name: str, environment: str, version: str | None,
                 created: datetime) -> None:
        moves = [m for m in self.history(name) if m.environment == environment]
        if any(m.to_version == version for m in moves):
            return
        at = created if not moves or moves[-1].at <= created else self.now
        self._move(name, environment, version, at, reason="status in manifest")

    def _retire(self, name: str, version: str | None) -> None:
        live = {m.environment for m in self.history(name)}
        for environment in sorted(live):
            if self.in_effect(name, environment) != version:
                continue
            if any(m.environment == environment and m.from_version == version
                   and m.to_version is None for m in self.history(name)):
                continue  # retired here before and promoted again since: leave it
            self._move(name, environment, None, self.now, reason="retired in manifest")

    def apply_move(self, name: str, doc: StageMoveDoc) -> None:
        if doc.at is None:
            if self.in_effect(name, doc.environment) == doc.version:
                return
            at = self.now
        else:
            at = doc.at
            if any(m.environment == doc.environment and m.to_version == doc.version
                   and m.at == at for m in self.history(name)):
                return
        self._move(name, doc.environment, doc.version, at, doc.actor, doc.reason)
