"""Registry lookups over the port: what a bundle pins, which version is in effect where,
a node's versions and stage moves, and models seen in traffic that nobody registered."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from lineagegraph.schema import (
    NODE_KINDS_BY_LABEL,
    Edge,
    Node,
    StageMove,
    bundle_id,
    format_id,
    parse_id,
)
from lineagegraph.schema.models import check_environment

from .store import (
    ORIGIN,
    PAGE_CHARS,
    RETIRED,
    Direction,
    GraphStore,
    Hop,
    VersionFilter,
    replaced,
)
from .traffic import OUTCOME_EDGES
from .walk import DEFAULT_LIMITS, INLINE_CHARS, Budget, filled

# What a bundle pins, by the edge that pins it.
PIN_EDGES = ("USES_MODEL", "USES_PROMPT", "USES_TOOLS", "GOVERNED_BY", "RETRIEVES_FROM")


@dataclass(slots=True)
class BundleParts:
    model: Node | None = None
    prompt: Node | None = None
    toolset: Node | None = None
    policy: Node | None = None
    retrieves_from: list[Node] = field(default_factory=list)

    def pin(self, edge_type: str, node: Node) -> None:
        """Record ``node`` as what the bundle pins over ``edge_type`` (a ``PIN_EDGES``)."""
        match edge_type:
            case "USES_MODEL":
                self.model = node
            case "USES_PROMPT":
                self.prompt = node
            case "USES_TOOLS":
                self.toolset = node
            case "GOVERNED_BY":
                self.policy = node
            case "RETRIEVES_FROM":
                self.retrieves_from.append(node)
                self.retrieves_from.sort(key=lambda n: n.id)


def bundle_parts(store: GraphStore, bundle_ids: Sequence[str]) -> dict[str, BundleParts]:
    """What each bundle pins — one store round trip for all of them."""
    parts: dict[str, BundleParts] = {bundle_id: BundleParts() for bundle_id in bundle_ids}
    if not bundle_ids:
        return parts
    for hop in store.expand(list(bundle_ids), Direction.UPSTREAM, edge_types=PIN_EDGES):
        parts[hop.origin].pin(hop.edge.type, hop.node)
    return parts


# What annotates a node: evaluations of it and approvals of it (edges into it).
ANNOTATION_EDGES = ("EVALUATES", "APPROVES")


# Evaluations, and approvals, of a node read at most: CI may evaluate a bundle on every
# commit, tens of thousands of times. The newest are kept: the eval gate judges the latest
# evaluation, the approvals gate distinct approvers.
ANNOTATIONS_READ = 1000


def annotations_read() -> str:
    """How annotations are read, for the answers that left some out to say."""
    return (f"the newest {ANNOTATIONS_READ:,} of each kind are read, within "
            "LINEAGEGRAPH_MAX_WALK_CHARS of large properties")


@dataclass(slots=True)
class Annotations:
    """A node's evaluations and approvals, each by ID; ``cut``: older ones were left out
    (``ANNOTATIONS_READ`` of each kind kept, the newest)."""

    evaluations: list[Node]
    approvals: list[Node]
    cut: bool = False


def annotations(store: GraphStore, node_id: str, until: datetime | None = None,
                chars: int = DEFAULT_LIMITS.max_chars) -> Annotations:
    """The evaluations and approvals of a node created up to ``until``; ``chars`` of
    properties longer than ``INLINE_CHARS`` read at most, as a walk's."""
    rows = store.nearest([node_id], Direction.DOWNSTREAM, count=ANNOTATIONS_READ + 1,
                         newest=True, edge_types=ANNOTATION_EDGES, until=until,
                         inline=INLINE_CHARS)
    return split_annotations(store, rows, chars)


def split_annotations(store: GraphStore, hops: Iterable[Hop], chars: int) -> Annotations:
    """Rows over ``ANNOTATION_EDGES`` as ``Annotations``: the newest ``ANNOTATIONS_READ``
    of each kind, with the properties a row left out read in (``walk.filled``) while
    ``chars`` of them last."""
    kinds: dict[str, list[Hop]] = {edge_type: [] for edge_type in ANNOTATION_EDGES}
    for hop in hops:
        kinds[hop.edge.type].append(hop)
    cut = False
    for rows in kinds.values():
        # Newest by (created_at, ID), as the stores' ``nearest`` orders them.
        rows.sort(key=lambda hop: (hop.node.created_at, hop.node.id), reverse=True)
        cut |= len(rows) > ANNOTATIONS_READ
        del rows[ANNOTATIONS_READ:]
    # Within the budget, what the gates read goes first: the latest evaluation, then the
    # approvals; the older evaluations last (36 evaluation reports of 1 MB took it all, and
    # the approvals gate then counted none).
    evaluations = kinds["EVALUATES"]
    kept, spent = filled(store, [*evaluations[:1], *kinds["APPROVES"], *evaluations[1:]],
                         Budget(chars), {}, order=None)
    nodes: dict[str, list[Node]] = {edge_type: [] for edge_type in ANNOTATION_EDGES}
    for hop in kept:
        nodes[hop.edge.type].append(hop.node)
    return Annotations(sorted(nodes["EVALUATES"], key=lambda n: n.id),
                       sorted(nodes["APPROVES"], key=lambda n: n.id), cut or spent)


def resolve(store: GraphStore, name: str, environment: str,
            as_of: datetime | None = None) -> Node | None:
    """The bundle version in effect for ``name`` in ``environment`` at ``as_of`` (default
    now), from the stage-move history; None before the first move, and in ``retired``,
    where no version serves. An environment that is no environment name (blank, blanks at
    its ends) is a ``ValueError`` naming it: no move could ever be recorded there."""
    check_environment(environment)
    if environment == RETIRED:
        return None
    version = store.stage_at(name, environment, as_of)
    if version is None:
        return None
    return store.get([bundle_id(name, version)]).get(bundle_id(name, version))


@dataclass(slots=True)
class History:
    node: Node
    versions: list[Node]  # the newest ``HISTORY_VERSIONS`` before the cursor that fit
    stage_moves: list[StageMove]
    moves_cut: bool = False  # more moves than ``HISTORY_MOVES``: the last are kept
    # The key to read the versions before these from (``version_key``); None: none are.
    earlier: str | None = None
    cut_by_chars: bool = False  # fewer versions than HISTORY_VERSIONS: PAGE_CHARS ran out


# What a bundle version is, besides its pins: fixed once registered, like them. ``model``
# is the name the manifest pinned, which the ``pinned_model`` gate reads (a floating alias
# or a snapshot); a bundle registered without one may still be given it.
FIXED_PROPERTIES = ("params", "model")


def pin_changes(nodes: Sequence[Node], edges: Sequence[Edge], stored: Mapping[str, Node],
                stored_edges: Collection[tuple[str, str, str]]) -> dict[str, list[str]]:
    """What a write would change of registered bundle versions, by bundle ID: a new pin
    (``PIN_EDGES``) or other ``params``, given what is stored of the write's nodes and its
    edges' sources (``stored``) and of their edges (keys; ``pins_of`` reads a bundle's). A
    version is what was evaluated, approved and promoted, and what a trace says served a
    request then: it does not change; new content is a new version. Bundles the write
    creates are free, and re-sending a bundle as it is changes nothing."""
    bundles = {i: n for i, n in stored.items() if n.kind == "Bundle"}
    changes: dict[str, list[str]] = {}
    for node in nodes:
        old = bundles.get(node.id)
        for prop in FIXED_PROPERTIES if old is not None else ():
            before = old.properties.get(prop)
            if before is not None and before != node.properties.get(prop):
                changes.setdefault(node.id, []).append(
                    f"{prop} {old.properties.get(prop)!r} → {node.properties.get(prop)!r}")
    for edge in edges:
        if edge.type in PIN_EDGES and edge.source in bundles and edge.key not in stored_edges:
            changes.setdefault(edge.source, []).append(f"a new {edge.type} → {edge.target}")
    return changes


# What the promotion gates read of the nodes a bundle pins or is judged by. A stated value
# changes only with ``admin`` (``governed_changes``): a write token could otherwise turn a
# BLOCK into an ALLOW by moving a model's region, a source's residency, or raising an
# evaluation's score. Filling a value the node lacks is registration (a source first seen
# in OpenLineage events is given its residency by its manifest).
GATE_INPUTS: dict[str, tuple[str, ...]] = {
    "ModelVersion": ("region",),
    "DataSource": ("residency",),
    "Evaluation": ("score", "threshold"),
}

# What a version of the kinds a bundle pins besides its model is: its content, shown by a
# trace and an evidence pack as what served a request, and read by the gates (a policy
# pack's tier, approvals, residency). Once a version is stored, its content changes only
# with ``admin`` — filling a value included, since every one of these versions is
# registered whole (by its manifest or the MLflow import; manifests create no stubs of
# them): ``required_approvals: 0`` on a pack that stated none would relax it.
CONTENT: dict[str, tuple[str, ...]] = {
    "PolicyPack": ("risk_tier", "required_approvals", "residency", "allowed_tools",
                   "intended_uses", "disallowed_uses"),
    "PromptVersion": ("template", "system", "messages", "params", "constraints",
                      "guardrails"),
    "Toolset": ("tools", "scope"),
}

# Archiving hides a node from walks, blast radius and rollback (retention's, and an
# importer's replaced or deleted versions): done by hand, it takes ``admin``.
ARCHIVED = "archived"


def governed_changes(nodes: Iterable[Node], stored: Mapping[str, Node]) -> list[str]:
    """What a write would change of stored nodes that only ``admin`` may change, said for
    the refusal: a stated ``GATE_INPUTS`` value, any ``CONTENT`` value, ``archived``."""
    changes = []
    for node in nodes:
        old = stored.get(node.id)
        if old is None:
            continue
        for prop in (*GATE_INPUTS.get(node.kind, ()), *CONTENT.get(node.kind, ()), ARCHIVED):
            before, after = old.properties.get(prop), node.properties.get(prop)
            if prop == ARCHIVED:
                before, after = bool(before), bool(after)
            elif before is None and node.kind not in CONTENT:
                continue  # registration
            if before != after:
                changes.append(f"{node.id} {prop} {before!r} → {after!r}")
    return changes


def pins_of(store: GraphStore, bundle_ids: Sequence[str]) -> set[tuple[str, str, str]]:
    """The keys of the pin edges stored for these bundles (what ``pin_changes`` compares)."""
    if not bundle_ids:
        return set()
    return {hop.edge.key for hop in store.expand(list(bundle_ids), Direction.UPSTREAM,
                                                 edge_types=PIN_EDGES)}


def pin_change_message(bundle: str, changes: list[str]) -> str:
    return (f"{bundle} is registered, and a registered version does not change "
            f"({'; '.join(changes)}): register the new content as a new version")


def stage_name(node: Node) -> str:
    """The name a node's stage moves are logged under: a bundle's bare name, a model's or
    prompt's family ID (``model:{name}``, as the MLflow importer logs alias moves)."""
    return node.name if node.kind == "Bundle" else format_id(parse_id(node.id).prefix,
                                                             node.name)


# Stage moves ``history`` answers, the last: a name promoted hourly has thousands.
HISTORY_MOVES = 1000
# Versions ``history`` answers, the last in ``version_order`` before its cursor: an hourly
# dataset has ~9k a year.
HISTORY_VERSIONS = 1000


def history(store: GraphStore, node_id: str, before: str | None = None,
            max_chars: int = PAGE_CHARS) -> History | None:
    """The last ``HISTORY_VERSIONS`` versions of the node's name (of its kind) before the
    version key ``before``, within ``max_chars`` of properties, and its stage moves: a
    bundle's under its bare name, a model's or prompt's under its family ID
    (``model:{name}``), as the importers log them."""
    node = store.get([node_id]).get(node_id)
    if node is None:
        return None
    prefix = parse_id(node_id).prefix
    if NODE_KINDS_BY_LABEL[node.kind].versioned:
        where = VersionFilter((node.kind,), node.name, before=before)
    else:
        # A family node (Model, Prompt): its versions are the versioned kind of its prefix;
        # and whatever is a VERSION_OF it (a DataSource's dataset versions, which may be
        # named apart from their source).
        versioned = tuple(k.label for k in NODE_KINDS_BY_LABEL.values()
                          if k.prefix == prefix and k.versioned)
        where = VersionFilter(versioned, node.name, family=node_id, before=before)
    page = store.version_page(where, last=HISTORY_VERSIONS, max_chars=max_chars)
    moves = store.stage_history(name=stage_name(node), last=HISTORY_MOVES + 1)
    return History(node=node, versions=[v for v in page.versions if not replaced(v)],
                   stage_moves=moves[-HISTORY_MOVES:], moves_cut=len(moves) > HISTORY_MOVES,
                   earlier=page.earlier, cut_by_chars=page.cut_by_chars)


@dataclass(slots=True)
class UnregisteredModel:
    node: Node
    requests: int
    first_seen: datetime | None
    last_seen: datetime | None


def unregistered(store: GraphStore, since: datetime | None = None,
                 until: datetime | None = None, page: int = 1000) -> list[UnregisteredModel]:
    """Models seen in inference outcomes that no manifest or import registered, with how
    many requests in the window used them; busiest first."""
    models: list[Node] = []
    after: str | None = None
    while True:  # keyset pages through every flagged model
        chunk = store.find(kinds=["ModelVersion"], where={"registered": False}, first=page,
                           after=after)
        models += chunk
        if len(chunk) < page:
            break
        after = chunk[-1].id
    tallies = store.tally_neighbours([m.id for m in models], Direction.DOWNSTREAM,
                                     kind="InferenceOutcome", edge_types=OUTCOME_EDGES,
                                     since=since, until=until, group_by=ORIGIN)
    found = [
        UnregisteredModel(node=m, requests=tallies[m.id].count, first_seen=tallies[m.id].first,
                          last_seen=tallies[m.id].last)
        for m in models if m.id in tallies
    ]
    return sorted(found, key=lambda u: (-u.requests, u.node.id))

