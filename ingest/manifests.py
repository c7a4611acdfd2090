"""Registry manifests → one ``Batch``: the whole load is one transaction, or, when any
document is wrong, an ``IngestError`` listing every problem (record and field) and nothing
written.

Rules beyond the document formats (see ``manifest_formats``):

- A reference resolves against the graph and the same load. Missing targets are errors,
  except those no document kind can declare: a provider's pinned model snapshot (a model
  written without ``@version``: ``ModelVersion`` ``model:gpt-5-mini-2026-08``, no family,
  ``registered: true`` — naming it in a manifest registers it, also when inference traffic
  created it first as unregistered) and a training run's job. Model and prompt families
  (``model:fraud-detector``) are created with their first version. A node created only
  because documents reference it is dated at the earliest ``created_at`` among them (it
  existed by then), not at load time: a snapshot dated after the bundle pinning it would
  read as a change in ``driftSources``.
- Nodes that exist and that the load only references are never rewritten (a family or a
  job may carry properties from another import). A document for a node that exists is a
  merge patch (RFC 7386's rule): what it does not state stays as the graph has it (a run's
  status from OpenLineage, a source's uri), and a field it sets to null is removed.
- A versioned document without ``version`` gets the previous version + 1 — unless it says
  exactly what the latest version says (same ``manifest_digest`` property), which makes it a
  re-send of that version. ``status``, ``eval`` and ``approved_by`` annotate a version and
  are not part of the digest: promoting an entry by editing its status is no new version.
- A new version ``SUPERSEDES`` the one before it (in version order) unless ``supersedes:``
  says ``false`` or names another version: an older one of its name, or any of another
  name. No edge may close a cycle (``walk.SupersedesEdges``, bounded), and a stored
  version keeps what it superseded: a document stating another is refused, one stating
  nothing adds nothing (``_link_supersedes``).
- Loads may race for a defaulted version (several server processes, the CLI): a version
  given as previous + 1 must still be new when the batch is written, or the load is mapped
  again against what the other load wrote (``load_manifests``).
- ``approved_by`` becomes ``approval:{bundle id}/{who}`` and ``eval`` becomes
  ``eval:{suite}/{run}`` (run default: ``name@version``): deterministic IDs, and the
  entry's fields are merged over the node's, so re-sends are no-ops and what another
  document added (an evaluation's report) stays. They are created at the entry's
  ``created_at`` only when the bundle version is new in this load; one added to a version
  loaded before is created at load time (a re-run evaluation is then the latest). An
  evaluation or approval has one target: an ID the load or the graph holds for another
  target (two bundles evaluated in one run of a suite) is refused, whatever the token.
- Stage moves follow ``manifest_stages``; a move dated more than ``FUTURE_SKEW`` past load
  time (a StageMove's ``at``, or the ``created_at`` a new entry's status is dated at) is
  refused: scheduled moves are not supported. A ``status`` the load does not apply because
  the history already holds it comes back in the summary's ``warnings`` (``ManifestSummary``).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from lineagegraph.graph.registry import pin_change_message, pin_changes, pins_of
from lineagegraph.graph.store import (
    RETIRED,
    Direction,
    GraphStore,
    NodesStored,
    VersionFilter,
    VersionRow,
    second_family,
    version_order,
    whole_number,
)
from lineagegraph.graph.walk import SupersedesEdges
from lineagegraph.schema import (
    NODE_KINDS_BY_LABEL,
    AuditEntry,
    Edge,
    Node,
    approval_name,
    bundle_id,
    format_id,
    parse_id,
)
from lineagegraph.schema.bounds import FUTURE_SKEW
from lineagegraph.schema.kinds import FAMILY_EDGE, FAMILY_OF
from lineagegraph.schema.models import describe_validation_error

from .batch import (
    ATTEMPTS,
    Batch,
    IngestError,
    LoadSummary,
    Problem,
    load_batches,
    pause_before,
    validation_problems,
)
from .manifest_formats import (
    BundleDoc,
    Doc,
    ModelVersionDoc,
    RawDoc,
    Ref,
    StageMoveDoc,
    VersionedDoc,
    parse_document,
)
from .manifest_stages import StagePlanner, Status
from .refs import ref_id

DIGEST = "manifest_digest"
# A name's stored versions a load reads at once (IDs and keys), for the version before each
# one it writes: a load of thousands of versions of one name asked the store for each.
VERSION_WINDOW = 1000
# One load at a time in this process: loads racing for a version then meet only across
# processes, where the store refuses the one that comes second.
_LOADS = threading.Lock()



def _snapshot(target: str) -> dict[str, Any]:
    """What a manifest writes on a model snapshot it names by its ID alone."""
    return {"pinned_snapshot": target.split(":", 1)[1]}

class VersionConflict(IngestError):
    """Other loads kept creating the versions this load gave its documents."""


@dataclass(slots=True)
class ManifestSummary(LoadSummary):
    """A load's summary and what it was asked for but did not do, with why (``warnings``:
    record, field, message): a ``status`` the history already holds, not applied again."""

    warnings: list[Problem] = field(default_factory=list)

    @classmethod
    def of(cls, summary: LoadSummary, warnings: list[Problem]) -> ManifestSummary:
        return cls(**{f.name: getattr(summary, f.name) for f in fields(LoadSummary)},
                   warnings=warnings)

    def to_json(self) -> dict[str, Any]:
        return LoadSummary.to_json(self) | {"warnings": [w.to_json() for w in self.warnings]}


@dataclass(frozen=True, slots=True)
class _RefUse:
    """One reference of a document, read: its target and kind, or why it cannot be read."""

    path: str
    ref: Ref
    target: str | None = None
    kind: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Supersedes:
    """What an entry says its version (``node``, an ID) supersedes: ``target``, None for
    nothing (``supersedes: false``); ``stated`` by the entry, or the version before."""

    record: int | str
    node: str
    target: str | None
    stated: bool


@dataclass(slots=True)
class _Entry:
    record: int | str
    doc: Doc
    version: str | None = None
    failed: bool = False  # no version could be given: no node
    fresh: bool = False  # the version is previous + 1: a node no other load may create
    node: Node | None = None
    refs: list[_RefUse] = field(default_factory=list)


def map_manifests(raws: Sequence[RawDoc], store: GraphStore, *, actor: str,
                  now: datetime | None = None, source: str = "api") -> Batch:
    """Every document of one load as one batch (``IngestError`` with every problem)."""
    return _ManifestLoad(store, actor, now or datetime.now(UTC)).run(raws, source)


def load_manifests(raws: Sequence[RawDoc], store: GraphStore, *, actor: str,
                   source: str = "api",
                   check: Callable[[Batch, Mapping[str, Node]], None] | None = None,
                   ) -> ManifestSummary:
    """Map and write one load in one transaction; ``check`` sees each batch before it is
    written, with the stored nodes the load read (a route's scope check: what changes of
    them), and may refuse it by raising.

    A version given as previous + 1 that another load created meanwhile (another process:
    this one's loads take turns) refuses the write inside its transaction, and the load is
    mapped again — to the next version, or to a re-send of what the other load wrote.
    ``VersionConflict`` after ``ATTEMPTS`` mappings; nothing is written then. So is a load
    mapped from metadata another writer changed before it was written (a patch merged into
    properties an OpenLineage event changed meanwhile): mapped again inside its write,
    holding the metadata writers' turn (``write_prepared``); or from a stage history a
    move changed (a ``StageMove`` document and a promotion at once): mapped again, up to
    ``ATTEMPTS`` times, then ``StagesMoved``."""
    with _LOADS:
        taken: dict[str, int | str] = {}
        for attempt in range(ATTEMPTS):
            pause_before(attempt)
            loads: list[_ManifestLoad] = []  # the last is the one written
            batch = _mapping(store, raws, source, actor, check, loads)()
            try:
                return ManifestSummary.of(load_batches(store, [batch]), loads[-1].warnings)
            except NodesStored as error:
                taken = {i: loads[-1].fresh[i] for i in error.ids}
    raise VersionConflict([
        Problem(f"another load created {node_id} while this one was written (and beat it "
                f"to the next version on each of {ATTEMPTS} tries): nothing was written; "
                "send it again", record=record, field="version")
        for node_id, record in taken.items()])


def _mapping(store: GraphStore, raws: Sequence[RawDoc], source: str, actor: str,
             check: Callable[[Batch, Mapping[str, Node]], None] | None,
             loads: list[_ManifestLoad]) -> Callable[[], Batch]:
    """One mapping of a load, checked, kept in ``loads``; its batch maps it again if
    another writer lands first (``Batch.remap``, ``write_prepared``)."""

    def mapped() -> Batch:
        load = _ManifestLoad(store, actor, datetime.now(UTC))
        batch = load.run(raws, source)
        if check is not None:
            check(batch, load.existing)
        loads.append(load)
        batch.remap = mapped
        return batch

    return mapped


class _StoredSuffix:
    """The last of a name's stored versions read so far (IDs and version keys, oldest
    first, a load's own left out), and whether they are all it has."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.ids: list[str] = []
        self.complete = False

    def prepend(self, rows: list[VersionRow], *, complete: bool) -> None:
        self.keys[:0] = [row.key for row in rows]
        self.ids[:0] = [row.id for row in rows]
        self.complete = complete

    def last_before(self, at: str, own: Mapping[str, Node]) -> tuple[str, str] | None:
        """The last read before ``at`` that is not one of ``own`` (added to the load since
        they were read)."""
        for index in range(bisect_left(self.keys, at) - 1, -1, -1):
            if self.ids[index] not in own:
                return self.keys[index], self.ids[index]
        return None


class _ManifestLoad:
    def __init__(self, store: GraphStore, actor: str, now: datetime) -> None:
        self.store = store
        self.actor = actor
        self.now = now
        self.problems: list[Problem] = []
        self.batch = Batch()
        self.nodes: dict[str, Node] = {}  # what this load writes
        self.origin: dict[str, int | str] = {}  # node ID → the record that defines it
        # Nodes the load creates only because documents reference them (a snapshot, a job,
        # a family): each existed by the earliest of those documents' created_at.
        self.referenced: set[str] = set()
        self.existing: dict[str, Node] = {}  # the graph's nodes this load touches
        self.families: dict[str, str] = {}  # ``_stored_families``
        self._fetched: set[str] = set()
        self._versions: dict[tuple[str, str, bool], list[Node]] = {}
        self._windows: dict[tuple[str, str], _StoredSuffix] = {}  # ``_stored_before``
        # The load's nodes by (kind, name), and their version order (``_own_order``).
        self._named: defaultdict[tuple[str, str], dict[str, Node]] = defaultdict(dict)
        self._ordered: dict[tuple[str, str], tuple[int, list[tuple[str, str]]]] = {}
        self.fresh: dict[str, int | str] = {}  # node ID → record, of the previous + 1 versions
        self._supersedes: list[_Supersedes] = []  # what each entry's version supersedes
        self.warnings: list[Problem] = []  # declarations not applied (``ManifestSummary``)

    def problem(self, record: int | str, path: str | None, message: str) -> None:
        self.problems.append(Problem(message, record=record, field=path))

    # -- the load -------------------------------------------------------------------------

    def run(self, raws: Sequence[RawDoc], source: str) -> Batch:
        # Before the load reads the graph: what it merges into stored nodes (a patch) is
        # judged on what it read.
        self.batch.metadata_seen = self.store.metadata_seq()
        entries: list[_Entry] = []
        moves: list[tuple[int | str, StageMoveDoc]] = []
        for raw in raws:
            try:
                doc = parse_document(raw)
            except IngestError as error:
                self.problems += error.problems
                continue
            if isinstance(doc, StageMoveDoc):
                moves.append((raw.record, doc))
            else:
                entries.append(_Entry(raw.record, doc))
        self._assign_versions(entries)
        self._lookup(entries, moves)
        for entry in entries:
            self._build(entry)
        self._stored_families(entries)
        for entry in entries:
            if entry.node is not None and entry.node.id in self.nodes:
                self._link(entry)
        self._link_supersedes()
        if not self.problems:
            self._keep_registered_bundles(entries)
        if not self.problems:
            self._stage_moves(entries, moves)
        if self.problems:
            raise IngestError(self.problems)
        self.fresh = {e.node.id: e.record for e in entries if e.fresh and e.node is not None}
        self.batch.new_nodes = frozenset(self.fresh)
        self.batch.nodes = list(self.nodes.values())
        self.batch.size = len(raws)
        self._audit(source, len(raws))
        return self.batch

    def _keep_registered_bundles(self, entries: list[_Entry]) -> None:
        """A bundle entry naming a registered version with other pins or params is an
        error, not an update (``registry.pin_changes``)."""
        # The bundles this load writes were read by ``_lookup``: only their pins are read.
        stored = sorted(i for i, n in self.existing.items()
                        if n.kind == "Bundle" and i in self.nodes)
        changes = pin_changes(list(self.nodes.values()), self.batch.edges, self.existing,
                              pins_of(self.store, stored))
        records = {e.node.id: e.record for e in entries if e.node is not None}
        for bundle, what in changes.items():
            self.problem(records.get(bundle, "?"), "version", pin_change_message(bundle, what))

    def _lookup(self, entries: list[_Entry], moves: list[tuple[int | str, StageMoveDoc]]) -> None:
        """One store round trip for every ID the load may define or reference."""
        ids: set[str] = set()
        for entry in entries:
            label, name = entry.doc.LABEL, entry.doc.node_name()
            ids.add(format_id(NODE_KINDS_BY_LABEL[label].prefix, name, entry.version))
            if label in FAMILY_OF:
                ids.add(format_id(NODE_KINDS_BY_LABEL[label].prefix, name))
            entry.refs = _refs(entry.doc)
            ids.update(use.target for use in entry.refs if use.target)
            if isinstance(entry.doc, BundleDoc) and entry.version is not None:
                # its approvals and evaluation may exist: add() and _audit() must see them
                ids.update(node.id for node, _ in _annotations(
                    entry.doc, self._probe(entry), self.now))
        ids.update(bundle_id(doc.bundle.removeprefix("bundle:"), doc.version)
                   for _, doc in moves if doc.version is not None)
        self.fetch(ids)

    def fetch(self, ids: set[str]) -> None:
        """Read from the graph the nodes of ``ids`` not read yet."""
        wanted = sorted(ids - self._fetched)
        if wanted:
            self.existing.update(self.store.get(wanted))
            self._fetched.update(wanted)

    # -- versions -------------------------------------------------------------------------

    def stored_last(self, label: str, name: str, *, whole_numbers: bool = False) -> list[Node]:
        """The graph's last version of a name in version order (of the whole numbers
        ``whole_numbers``): [] or one, read once a load."""
        key = (label, name, whole_numbers)
        if key not in self._versions:
            self._versions[key] = self.store.versions(label, name, last=1,
                                                      whole_numbers=whole_numbers)
        return self._versions[key]

    def _assign_versions(self, entries: list[_Entry]) -> None:
        in_load: dict[tuple[str, str], list[Node]] = defaultdict(list)
        defaults: list[_Entry] = []
        for entry in entries:
            doc = entry.doc
            if not NODE_KINDS_BY_LABEL[doc.LABEL].versioned:
                continue
            entry.version = doc.node_version()
            if entry.version is not None:
                in_load[(doc.LABEL, doc.node_name())].append(self._probe(entry))
            elif not (isinstance(doc, ModelVersionDoc) and self._is_snapshot(doc)):
                defaults.append(entry)
        for entry in defaults:
            key = (entry.doc.LABEL, entry.doc.node_name())
            known = [*self.stored_last(*key), *in_load[key]]
            latest = max(known, key=version_order, default=None)
            if latest is not None and latest.properties.get(DIGEST) == entry.doc.digest():
                entry.version = latest.version  # a re-send of the latest version
            else:
                # The greatest whole number need not be the latest version: 3.1 follows 3.
                numbers = [int(n.version) for n in [*self.stored_last(*key, whole_numbers=True),
                                                    *in_load[key]]
                           if n.version and whole_number(n.version)]
                if known and not numbers:
                    self.problem(entry.record, "version", f"required: the versions of "
                                 f"{key[1]} are not numbers, so there is no previous + 1")
                    entry.failed = True
                    continue
                entry.version = str(max(numbers, default=0) + 1)
                entry.fresh = True
            in_load[key].append(self._probe(entry))

    def _is_snapshot(self, doc: ModelVersionDoc) -> bool:
        if doc.snapshot:
            return True
        found = self.store.get([format_id("model", doc.name)]).get(format_id("model", doc.name))
        return found is not None and found.kind == "ModelVersion"

    def _probe(self, entry: _Entry) -> Node:
        """A stand-in for ordering versions of the load among the graph's."""
        return Node.trusted(entry.doc.LABEL, entry.doc.node_name(), entry.version,
                            entry.doc.created_at or self.now, {DIGEST: entry.doc.digest()})

    # -- nodes ----------------------------------------------------------------------------

    def _build(self, entry: _Entry) -> None:
        doc = entry.doc
        if entry.failed:
            return
        props = doc.properties() | {DIGEST: doc.digest()}
        stored = self.existing.get(format_id(NODE_KINDS_BY_LABEL[doc.LABEL].prefix,
                                             doc.node_name(), entry.version))
        if stored is not None:
            # A merge patch: what the document does not state stays as the graph has it
            # (a run's status from OpenLineage, a source's uri); a field set to null goes.
            props = {k: v for k, v in stored.properties.items()
                     if k not in doc.stated()} | props
            if props.get("registered") is False and "registered" not in doc.stated():
                props["registered"] = True  # traffic saw it first: a document registers it
        props_model = NODE_KINDS_BY_LABEL[doc.LABEL].props.model_fields
        for use in entry.refs:
            if use.path in props_model and use.target:  # e.g. an evaluation's target
                props[use.path] = use.target
        try:
            entry.node = Node(kind=doc.LABEL, name=doc.node_name(), version=entry.version,
                              created_at=doc.created_at or self.now, properties=props)
        except ValidationError as error:
            self.problems.extend(validation_problems(error, entry.record))
            return
        if self._keeps_target(entry.node, entry.record, "target"):
            self.add(entry.node, entry.record, document=True)

    def _keeps_target(self, node: Node, record: int | str, path: str) -> bool:
        """An evaluation or approval is of one target: a document giving one the load or the
        graph has for another target its own (two bundles evaluated in one run of a suite,
        both ``eval:{suite}/{run}``) is refused, whatever the token — merged, it would move
        one bundle's gate onto the other's score."""
        if node.kind not in ("Evaluation", "Approval"):  # another kind's `target` is data
            return True
        target = node.properties.get("target")
        other = self.nodes.get(node.id) or self.existing.get(node.id)
        if target is None or other is None or other.kind != node.kind:
            return True
        theirs = other.properties.get("target")
        if theirs is None or theirs == target:
            return True
        where = (f"record {self.origin[node.id]} of this load" if node.id in self.nodes
                 else "the graph")
        if node.kind == "Evaluation":
            field = "eval.run" if path == "eval" else "run"
            hint = f"name the run uniquely for each target (`{field}`, e.g. with the bundle)"
        else:
            hint = "give this approval a `name` of its own"
        self.problem(record, path, f"{node.id} is the {node.kind.lower()} of {theirs} (in "
                     f"{where}), not of {target}: one ID, one target; {hint}")
        return False

    def add(self, node: Node, record: int | str, *, document: bool = False) -> bool:
        """Write ``node`` with this load unless it clashes with another of the load (same
        ID, other content) or with the graph (same ID, other kind)."""
        other = self.nodes.get(node.id) or self.existing.get(node.id)
        if other is not None and other.kind != node.kind:
            self.problem(record, None, f"{node.id} already exists as a {other.kind}, "
                                       f"cannot also be a {node.kind}")
            return False
        if node.id in self.nodes:
            if self.nodes[node.id].properties != node.properties:
                self.problem(record, None, f"{node.id} is also defined, differently, by "
                                           f"record {self.origin[node.id]}")
                return False
            if node.id in self.referenced and node.created_at < self.nodes[node.id].created_at:
                self.nodes[node.id] = node
                self._named[(node.kind, node.name)][node.id] = node
                self._ordered.pop((node.kind, node.name), None)  # its key moved
            return True
        if not document and node.id in self.existing:
            return True  # referenced, not redefined: leave the graph's copy alone
        if not document:
            self.referenced.add(node.id)
        self.nodes[node.id] = node
        self._named[(node.kind, node.name)][node.id] = node
        self.origin[node.id] = record
        return True

    def kind_of(self, node_id: str) -> str | None:
        self.fetch({node_id})  # a no-op for what the load's first lookup read
        found = self.nodes.get(node_id) or self.existing.get(node_id)
        return found.kind if found is not None else None

    def edge(self, source: str, edge_type: str, target: str) -> None:
        self.batch.edges.append(Edge(source=source, type=edge_type, target=target))

    # -- edges ----------------------------------------------------------------------------

    def _link(self, entry: _Entry) -> None:
        node = entry.node
        assert node is not None
        # What a missing reference is created at: it existed by the time of this document
        # (the graph's, for a node stored before), not only since the load.
        at = (self.existing.get(node.id) or node).created_at
        for use in entry.refs:
            target = self._resolve(entry.record, use, at)
            family = self.families.get(node.id) if use.ref.edge == FAMILY_EDGE else None
            if target is not None and family not in (None, target):
                self.problem(entry.record, use.path, second_family(node.id, family, target))
            elif target is not None:
                self.edge(node.id, use.ref.edge, target)
        family = FAMILY_OF.get(node.kind)
        if family is not None and node.version is not None:
            family_node = Node(kind=family, name=node.name, created_at=at)
            if self.add(family_node, entry.record):
                self.edge(node.id, "VERSION_OF", family_node.id)
        self._supersede(entry)
        if isinstance(entry.doc, BundleDoc):
            self._bundle_annotations(entry, entry.doc)

    def _stored_families(self, entries: list[_Entry]) -> None:
        """The family of each stored version a document links to one (a dataset version's
        ``source``): a version has one, and a document giving it another is refused naming
        its record and field, as the store would refuse the load."""
        linked = sorted(e.node.id for e in entries if e.node is not None
                        and e.node.id in self.existing
                        and any(use.ref.edge == FAMILY_EDGE for use in e.refs))
        hops = self.store.expand(linked, Direction.UPSTREAM,
                                 edge_types=[FAMILY_EDGE]) if linked else []
        for hop in sorted(hops, key=lambda hop: hop.node.id, reverse=True):
            self.families[hop.origin] = hop.node.id  # of two (older stores): the one kept

    def _resolve(self, record: int | str, use: _RefUse, at: datetime) -> str | None:
        """The node ``use`` names; a missing one no document kind declares is created at
        ``at``, the referencing document's time."""
        path, ref, target, kind = use.path, use.ref, use.target, use.kind
        if target is None or kind is None:
            self.problem(record, path, use.error or "unreadable reference")
            return None
        found = self.kind_of(target)
        if ref.create and parse_id(target).version is None and (
                found is None or (found == kind and target in self.referenced)):
            # created by this load, referenced again: it existed by the earliest reference
            return target if self._create(target, kind, record, at) else None
        if found is None:
            self.problem(record, path, f"{target} is neither in the graph nor in this load")
            return None
        if found != kind:
            self.problem(record, path, f"{target} is a {found}, not a {kind}")
            return None
        if ref.create and kind == "ModelVersion" and target not in self.nodes:
            self._register_snapshot(self.existing[target], record)
        return target

    def _create(self, target: str, kind: str, record: int | str, at: datetime) -> bool:
        props = _snapshot(target) if kind == "ModelVersion" else {}
        return self.add(Node.from_id(target, kind=kind, created_at=at, properties=props), record)

    def _register_snapshot(self, node: Node, record: int | str) -> None:
        """A manifest naming a snapshot that traffic created as unregistered registers it,
        as it would have created it (its creation stays the first request's)."""
        if node.properties.get("registered", True) is False:
            self.add(node.model_copy(update={"properties": node.properties | _snapshot(
                node.id) | {"registered": True}}), record, document=True)

    def _supersede(self, entry: _Entry) -> None:
        """What the entry's version supersedes, for ``_link_supersedes`` to judge."""
        node, doc = entry.node, entry.doc
        assert node is not None
        if node.version is None:
            return
        named = doc.supersedes_ref() if isinstance(doc, VersionedDoc) else None
        stated = named is not None or getattr(doc, "supersedes", None) is False
        target = None
        if named is not None:
            target = self._resolve(entry.record, _read_ref("supersedes", *named),
                                   node.created_at)
            if target is None:
                return  # the reference's problem is said
        elif not stated:
            target = self._previous(node)
        self._supersedes.append(_Supersedes(entry.record, node.id, target, stated))

    def _link_supersedes(self) -> None:
        """The load's SUPERSEDES edges, keeping the relation forward and acyclic: within a
        name a version supersedes an older one (version order); a version stored with
        what it supersedes keeps it (a document stating another is refused; by default
        nothing is added); and no edge may close a cycle with the graph's or the load's
        (``SupersedesEdges.loops``, bounded)."""
        stored = SupersedesEdges(self.store, {one.node for one in self._supersedes
                                              if one.node in self.existing})
        said: dict[str, _Supersedes] = {}
        records: dict[tuple[str, str], int | str] = {}
        for one in self._supersedes:
            before = stored.out.get(one.node, set())
            if before and not one.stated:
                continue  # its predecessor was set when it was first loaded
            problem = self._supersedes_problem(one, before, said.get(one.node))
            if problem is not None:
                self.problem(one.record, "supersedes", problem)
                continue
            said.setdefault(one.node, one)
            if one.target is not None:
                records.setdefault((one.node, one.target), one.record)
        if not self.problems:
            for loop in stored.loops(list(records)):
                self.problem(records[(loop.source, loop.target)], "supersedes",
                             loop.message())
        for source, target in records:
            self.edge(source, "SUPERSEDES", target)

    def _supersedes_problem(self, one: _Supersedes, before: set[str],
                            other: _Supersedes | None) -> str | None:
        """Why what ``one`` says its version supersedes cannot be: a version of its name
        not older than it, not what the graph or another entry of the load says."""
        node = self.nodes[one.node]
        target = self.nodes.get(one.target or "") or self.existing.get(one.target or "")
        if target is not None and target.name == node.name and (
                version_order(target) >= version_order(node)):
            where = ("is the version itself" if target.id == node.id
                     else f"is not older than {node.id} in version order")
            return (f"{target.id} {where}: a version supersedes an older version of its "
                    "name, or a version of another name")
        said = f"supersedes {one.target}" if one.target else "supersedes nothing (false)"
        if before and one.target not in before:
            return (f"{node.id} already supersedes {', '.join(sorted(before))} in the graph; "
                    f"this document says it {said}: what a version supersedes is set when "
                    "it is first loaded")
        if other is not None and other.target != one.target:
            return (f"record {other.record} of this load says {node.id} supersedes "
                    f"{other.target or 'nothing'}; this one says it {said}")
        return None

    def _stored_before(self, kind: str, name: str, at: str) -> tuple[str, str] | None:
        """(key, ID) of the name's last stored version before the version key ``at``, the
        load's own left out: from its stored versions read newest first, ``VERSION_WINDOW``
        IDs and keys at a time, as far back as the load has asked (a read a version, when
        each sorted all the name's versions, made a load among thousands slow)."""
        key = (kind, name)
        read = self._windows.setdefault(key, _StoredSuffix())
        own = self._named[key]
        while True:
            found = read.last_before(at, own)
            if found is not None or read.complete:
                return found
            page = self.store.version_sizes(VersionFilter(
                (kind,), name, before=read.keys[0] if read.keys else None,
                exclude=frozenset(own)), VERSION_WINDOW)
            read.prepend(page, complete=len(page) < VERSION_WINDOW)

    def _own_order(self, kind: str, name: str) -> list[tuple[str, str]]:
        """(version key, ID) of the load's nodes of a name, sorted: made again only when
        the load added one (a load of thousands of versions of one name asks for each)."""
        named = self._named[(kind, name)]
        cached = self._ordered.get((kind, name))
        if cached is None or cached[0] != len(named):
            cached = (len(named), sorted((version_order(n), n.id) for n in named.values()))
            self._ordered[(kind, name)] = cached
        return cached[1]

    def _previous(self, node: Node) -> str | None:
        own = self._own_order(node.kind, node.name)
        # The load's copy of a version it names twice (one entry dated, one not) is the one
        # written: its place in the order is that copy's.
        node = self._named[(node.kind, node.name)].get(node.id, node)
        at = version_order(node)
        place = bisect_left(own, (at,))
        below = own[place - 1] if place else None
        # The load's versions stand for their stored twins (their created_at may differ).
        stored = self._stored_before(node.kind, node.name, at)
        earlier = [pair for pair in (below, stored) if pair is not None]
        return max(earlier)[1] if earlier else None

    def _bundle_annotations(self, entry: _Entry, doc: BundleDoc) -> None:
        bundle = entry.node
        assert bundle is not None
        # A bundle new in this load may bring its history: its approvals and evaluation
        # happened at its created_at. Added to a version loaded before, they are news of
        # this load: a re-run evaluation must be the latest, not tie with the first.
        dated = doc.created_at if bundle.id not in self.existing else None
        for node, edge_type in _annotations(doc, bundle, dated or self.now, dated):
            if self._annotate(node, entry.record):
                self.edge(node.id, edge_type, bundle.id)

    def _annotate(self, node: Node, record: int | str) -> bool:
        """Write an approval or evaluation a bundle entry stands for, its fields merged over
        the node as the load or the graph has it: a re-sent entry changes nothing (no write,
        no audit), an edited one its own fields only, and what another document gave the
        node (an evaluation's report) stays. Leaving a stored node alone instead would
        drop an edited score silently."""
        if not self._keeps_target(node, record, "eval" if node.kind == "Evaluation"
                                  else "approved_by"):
            return False
        base = self.nodes.get(node.id) or self.existing.get(node.id)
        if base is None or base.kind != node.kind:
            return self.add(node, record)  # new, or add() names the kind clash
        merged = base.properties | node.properties
        if merged == base.properties:
            return True
        if node.id in self.nodes:  # defined by another document of this load, differently
            return self.add(node, record)
        try:
            edited = Node(kind=base.kind, name=base.name, created_at=base.created_at,
                          properties=merged)
        except ValidationError as error:
            # A stored node past a bound set after it was written (a created_at ahead of the
            # clock, properties past 1 MiB): the edit is refused naming the record.
            self.problem(record, None, f"{node.id} as stored, with this entry's fields: "
                         f"{describe_validation_error(error)}")
            return False
        return self.add(edited, record, document=True)

    # -- stage moves and audit ------------------------------------------------------------

    def _stage_moves(self, entries: list[_Entry],
                     moves: list[tuple[int | str, StageMoveDoc]]) -> None:
        planner = StagePlanner(self.store, self.actor, self.now)
        statuses = []
        for entry in entries:
            if isinstance(entry.doc, BundleDoc) and entry.doc.status and entry.node:
                statuses.append(Status(entry.record, entry.node, entry.doc.status,
                                       self._dated(entry, entry.doc)))
        planner.apply_statuses(statuses)
        # The last move document of each name and environment: what the load says is live
        # there (the ones before it are history a registry keeps).
        last = {(doc.bundle.removeprefix("bundle:"), doc.environment): record
                for record, doc in moves}
        for record, doc in moves:
            name = doc.bundle.removeprefix("bundle:")
            target = bundle_id(name, doc.version) if doc.version is not None else None
            if target is not None and self.kind_of(target) != "Bundle":
                self.problem(record, "bundle", f"{target} is neither in the graph nor in "
                             "this load")
                continue
            if doc.at is not None and doc.at > self.now + FUTURE_SKEW:
                self.problem(record, "at", f"{doc.at.isoformat()} is in the future: "
                             "scheduled moves are not supported; send the move when it happens")
                continue
            planner.apply_move(name, doc, record,
                               latest=last[(name, doc.environment)] == record)
        self.batch.stage_moves = planner.planned
        # Only a load that moves stages is judged on them: one that plans nothing wrote
        # nothing a promotion meanwhile could make wrong.
        self.batch.judged = planner.judged() if planner.planned else {}
        self.warnings = planner.warnings

    def _dated(self, entry: _Entry, doc: BundleDoc) -> datetime | None:
        """When an entry's ``status`` move happened, if the entry says: its ``created_at``
        where the version is new in this load (history being imported). A status on a
        version loaded before is news of this load: dating it at the version's creation
        would change what ``resolve(asOf)`` answered about the past."""
        assert entry.node is not None
        if doc.created_at is None or entry.node.id in self.existing:
            return None
        if doc.status != RETIRED and doc.created_at > self.now + FUTURE_SKEW:
            self.problem(entry.record, "created_at", f"{doc.created_at.isoformat()} is in the "
                         f"future, and the entry's status: {doc.status} would be a move dated "
                         "then: scheduled moves are not supported")
        return doc.created_at

    def _audit(self, source: str, documents: int) -> None:
        at, actor = self.now, self.actor
        entries = [AuditEntry(action="ingest.manifests", target=source, actor=actor, at=at,
                              after={"documents": documents})]
        for node in self.nodes.values():
            before = self.existing.get(node.id)
            if before is None or before.properties != node.properties:
                entries.append(AuditEntry(
                    action="upsert", target=node.id, actor=actor, at=at,
                    before=before.properties if before else None, after=node.properties))
        for move in self.batch.stage_moves:
            entries.append(AuditEntry(
                action="stage_move", actor=actor, at=at,
                target=format_id("bundle", move.name, move.to_version or move.from_version),
                before={"environment": move.environment, "version": move.from_version},
                after={"environment": move.environment, "version": move.to_version,
                       "at": move.at.isoformat(), "actor": move.actor}))
        self.batch.audit = entries


def _annotations(doc: BundleDoc, bundle: Node, created: datetime,
                 dated: datetime | None = None) -> list[tuple[Node, str]]:
    """The Approval and Evaluation nodes a bundle entry's ``approved_by`` and ``eval`` stand
    for, each with the type of its edge to the bundle, created at ``created``; an approval
    says ``at`` only when ``dated`` (stated by the entry: a re-send then states it again)."""
    at = {"at": dated} if dated else {}
    found = [(Node(kind="Approval", name=approval_name(bundle.id, who), created_at=created,
                   properties={"approved_by": who, "target": bundle.id, **at}), "APPROVES")
             for who in doc.approved_by]
    if doc.eval is not None:
        run = doc.eval.run or f"{bundle.name}@{bundle.version}"
        props = doc.eval.model_dump(mode="json", exclude_none=True)
        found.append((Node(kind="Evaluation", name=f"{doc.eval.suite}/{run}", created_at=created,
                           properties=props | {"run": run, "target": bundle.id}), "EVALUATES"))
    return found


def _read_ref(path: str, text: str, ref: Ref) -> _RefUse:
    try:
        target, kind = ref_id(text, ref.kinds, ref.prefix)
    except ValueError as error:
        return _RefUse(path, ref, error=str(error))
    return _RefUse(path, ref, target, kind)


def _refs(doc: Doc) -> list[_RefUse]:
    """Every reference the document makes, with its field path."""
    found = []
    for name, ref in doc.REFS.items():
        value: Any = getattr(doc, name)
        if value is None:
            continue
        if ref.many:
            found += [_read_ref(f"{name}.{i}", text, ref) for i, text in enumerate(value)]
        else:
            found.append(_read_ref(name, value, ref))
    return found
