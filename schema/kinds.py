"""The graph vocabulary, declared once.

Every node kind and edge kind of the design lives here as a frozen declaration. The Neo4j
adapter (labels, relationship types, constraints), validation of writes, the GraphQL types
and the schema docs are all derived from these tables: add a kind here and nothing else
needs a second copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from .bounds import ID_PART, MAX_REQUIRED_APPROVALS, NOTE


class Properties(BaseModel):
    """Kind-specific properties. Unknown fields are kept (design §4: they go into
    ``properties``); declared ones are type-checked."""

    model_config = ConfigDict(extra="allow")


class DataSourceProps(Properties):
    owner: str | None = None
    uri: str | None = None
    residency: str | None = None


class DatasetVersionProps(Properties):
    schema_hash: str | None = None
    row_count: int | None = None


class FeatureProps(Properties):
    description: str | None = None


class JobProps(Properties):
    namespace: str | None = None
    job_type: str | None = None


class TrainingRunProps(Properties):
    status: str | None = None
    code_commit: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    started_at: datetime | None = None
    ended_at: datetime | None = None


class ModelProps(Properties):
    provider: str | None = None


class ModelVersionProps(Properties):
    provider: str | None = None
    pinned_snapshot: str | None = None
    artifact_uri: str | None = None
    context_window: int | None = None
    region: str | None = None
    registered: bool = True


class PromptProps(Properties):
    description: str | None = None


class PromptVersionProps(Properties):
    template: str | None = None
    system: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    constraints: list[str] = Field(default_factory=list)
    guardrails: list[str] = Field(default_factory=list)


class ToolsetProps(Properties):
    tools: list[Any] = Field(default_factory=list)
    scope: str | None = None




def read_risk_tier(value: Any) -> Any:
    """A risk tier as written, read: `Regulated` is a way of writing `regulated`. Ingest
    refuses a tier the gates do not know (read as the mildest, it would let through what
    the pack's authors meant to stop); the gates read a stored one the same way."""
    return value.strip().lower() if isinstance(value, str) else value


class PolicyPackProps(Properties):
    risk_tier: Annotated[Literal["sandbox", "production", "regulated"],
                         BeforeValidator(read_risk_tier)] = "production"
    residency: list[str] = Field(default_factory=list)
    # A count the approvals gate can meet: -3 passed as 0 did, 10**23 never could.
    required_approvals: Annotated[int | None, Field(ge=0, le=MAX_REQUIRED_APPROVALS)] = None
    allowed_tools: list[str] = Field(default_factory=list)
    intended_uses: list[str] = Field(default_factory=list)
    disallowed_uses: list[str] = Field(default_factory=list)


class BundleProps(Properties):
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class EvaluationProps(Properties):
    suite: str
    run: str
    score: float | None = None
    threshold: float | None = None
    target: str | None = None


class ApprovalProps(Properties):
    approved_by: str
    target: str | None = None
    gate: Annotated[str | None, ID_PART] = None  # a part of the approval's ID (approval_name)
    at: datetime | None = None
    comment: Annotated[str | None, NOTE] = None  # kept in the audit log too


class InferenceOutcomeProps(Properties):
    # Indexed, as is status (NodeKind.indexed): bounded as an ID's parts are, for the same
    # index key limit.
    environment: Annotated[str, ID_PART]
    latency_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    status: Annotated[str | None, ID_PART] = None
    quality: float | None = None


@dataclass(frozen=True, slots=True)
class NodeKind:
    label: str
    prefix: str
    versioned: bool
    props: type[Properties]
    description: str
    # Properties copied out of the JSON blob into real store fields, so they can be filtered
    # and grouped on (e.g. traffic counts by environment).
    indexed: tuple[str, ...] = ()


NODE_KINDS: tuple[NodeKind, ...] = (
    NodeKind("DataSource", "source", False, DataSourceProps,
             "A table, topic or bucket; OpenLineage namespace/name."),
    NodeKind("DatasetVersion", "dataset", True, DatasetVersionProps,
             "One version of a data source, as read or written by a run."),
    NodeKind("Feature", "feature", True, FeatureProps, "A feature definition."),
    NodeKind("Job", "job", False, JobProps, "An OpenLineage job (namespace/name)."),
    NodeKind("TrainingRun", "run", False, TrainingRunProps, "One run of a job."),
    NodeKind("Model", "model", False, ModelProps, "A model family."),
    NodeKind("ModelVersion", "model", True, ModelVersionProps,
             "A model version, or a provider's pinned snapshot (no version part).",
             indexed=("registered",)),
    NodeKind("Prompt", "prompt", False, PromptProps, "A prompt family."),
    NodeKind("PromptVersion", "prompt", True, PromptVersionProps, "One version of a prompt."),
    NodeKind("Toolset", "tools", True, ToolsetProps, "Tool schemas and authorisation scope."),
    NodeKind("PolicyPack", "policy", True, PolicyPackProps,
             "Residency, safety requirements, tool permissions, risk tier."),
    NodeKind("Bundle", "bundle", True, BundleProps,
             "The registry entry: model + prompt + params + tools + policy."),
    NodeKind("Evaluation", "eval", False, EvaluationProps, "An evaluation run of a suite."),
    NodeKind("Approval", "approval", False, ApprovalProps, "A sign-off on a target."),
    NodeKind("InferenceOutcome", "outcome", False, InferenceOutcomeProps,
             "One served request.", indexed=("environment", "status")),
)

NODE_KINDS_BY_LABEL: dict[str, NodeKind] = {k.label: k for k in NODE_KINDS}
VERSIONED_PREFIXES: frozenset[str] = frozenset(k.prefix for k in NODE_KINDS if k.versioned)
# A versioned kind's family, where one shares its prefix: ModelVersion → Model,
# PromptVersion → Prompt (a dataset version's source has a prefix of its own).
FAMILY_OF: dict[str, str] = {v.label: f.label for v in NODE_KINDS if v.versioned
                             for f in NODE_KINDS if f.prefix == v.prefix and not f.versioned}

@cache
def known_prefixes() -> frozenset[str]:
    return frozenset(k.prefix for k in NODE_KINDS)


def kinds_for_prefix(prefix: str) -> tuple[NodeKind, ...]:
    return tuple(k for k in NODE_KINDS if k.prefix == prefix)


def default_kind_for(prefix: str, has_version: bool) -> NodeKind:
    """The kind an ID names when nothing else says: ``model:x@7`` is a ModelVersion,
    ``model:x`` a Model. (A pinned snapshot is created explicitly as a ModelVersion.)"""
    candidates = kinds_for_prefix(prefix)
    if not candidates:
        raise KeyError(prefix)
    for kind in candidates:
        if kind.versioned == has_version or len(candidates) == 1:
            return kind
    return candidates[0]


@dataclass(frozen=True, slots=True)
class EdgeKind:
    type: str
    endpoints: frozenset[tuple[str, str]]
    description: str
    # Walks (lineage, trace, blast radius, drift) follow lineage edges only; the others
    # annotate: the data behind model version 7 is not the data behind version 6.
    lineage: bool = True
    # The property the source node keeps this edge's target's ID in, stored and indexed
    # (store format 3): a source has one such target, and its neighbours over the edge are
    # read from the index in order, not by expanding every edge (a source's versions).
    kept_as: str | None = None


def _pairs(sources: tuple[str, ...], targets: tuple[str, ...]) -> frozenset[tuple[str, str]]:
    return frozenset((s, t) for s in sources for t in targets)


_VERSIONED_LABELS = tuple(k.label for k in NODE_KINDS if k.versioned)

EDGE_KINDS: tuple[EdgeKind, ...] = (
    EdgeKind("VERSION_OF", frozenset({("DatasetVersion", "DataSource"),
                                      ("ModelVersion", "Model"),
                                      ("PromptVersion", "Prompt")}),
             "A version → its family (one: a version keeps its family's ID).",
             kept_as="family"),
    EdgeKind("SUPERSEDES", frozenset((label, label) for label in _VERSIONED_LABELS),
             "A version → the one it replaces: an older version of its name (by default the "
             "one before it) or a version of another name; never a cycle.", lineage=False),
    EdgeKind("DERIVED_FROM",
             _pairs(("Feature",), ("DatasetVersion", "DataSource", "Feature"))
             | frozenset({("DatasetVersion", "DatasetVersion"), ("DataSource", "DataSource")}),
             "A feature or dataset → what it was computed from (column lineage)."),
    EdgeKind("CONSUMED", _pairs(("TrainingRun",), ("Feature", "DatasetVersion")),
             "A run → the inputs it read."),
    EdgeKind("PRODUCED_BY", _pairs(("ModelVersion", "DatasetVersion"), ("TrainingRun",)),
             "An output → the run that wrote it."),
    EdgeKind("RUN_OF", frozenset({("TrainingRun", "Job")}), "A run → its job."),
    EdgeKind("FINE_TUNED_FROM", frozenset({("ModelVersion", "ModelVersion")}),
             "A model version → its base model version."),
    EdgeKind("DESIGNED_FOR", frozenset({("PromptVersion", "ModelVersion")}),
             "A prompt version → the model versions it was written for."),
    EdgeKind("USES_MODEL", frozenset({("Bundle", "ModelVersion")}), "A bundle → its model."),
    EdgeKind("USES_PROMPT", frozenset({("Bundle", "PromptVersion")}), "A bundle → its prompt."),
    EdgeKind("USES_TOOLS", frozenset({("Bundle", "Toolset")}), "A bundle → its tool set."),
    EdgeKind("GOVERNED_BY", frozenset({("Bundle", "PolicyPack")}),
             "A bundle → its policy pack."),
    EdgeKind("RETRIEVES_FROM", frozenset({("Bundle", "DataSource")}),
             "A bundle → a data source it retrieves from at inference time."),
    EdgeKind("SERVED_BY", frozenset({("InferenceOutcome", "Bundle")}),
             "A request → the bundle that served it."),
    EdgeKind("USED_MODEL", frozenset({("InferenceOutcome", "ModelVersion")}),
             "A request with no bundle → the model it named."),
    EdgeKind("USED_PROMPT", frozenset({("InferenceOutcome", "PromptVersion")}),
             "A request with no bundle → the prompt it named."),
    EdgeKind("USED_POLICY", frozenset({("InferenceOutcome", "PolicyPack")}),
             "A request with no bundle → the policy it named."),
    EdgeKind("USED_FEATURE", frozenset({("InferenceOutcome", "Feature")}),
             "A request → the features it read."),
    EdgeKind("EVALUATES", _pairs(("Evaluation",), ("ModelVersion", "PromptVersion", "Bundle")),
             "An evaluation → what it evaluated.", lineage=False),
    EdgeKind("APPROVES", _pairs(("Approval",), ("Bundle", "ModelVersion", "PromptVersion")),
             "An approval → what it approved.", lineage=False),
)

EDGE_KINDS_BY_TYPE: dict[str, EdgeKind] = {e.type: e for e in EDGE_KINDS}
LINEAGE_EDGE_TYPES: tuple[str, ...] = tuple(e.type for e in EDGE_KINDS if e.lineage)
# The edge from a version to its family, and the property a version keeps its family's ID
# in (``EdgeKind.kept_as``): a family's versions are read from that property's indexes.
FAMILY_EDGE = "VERSION_OF"
_KEPT_AS = EDGE_KINDS_BY_TYPE[FAMILY_EDGE].kept_as
assert _KEPT_AS is not None
FAMILY: str = _KEPT_AS
# The kinds that are a family's versions.
FAMILY_MEMBERS: tuple[str, ...] = tuple(sorted(
    {source for source, _ in EDGE_KINDS_BY_TYPE[FAMILY_EDGE].endpoints}))

# Non-graph records the stores keep beside the graph (append-only logs); their labels are
# whitelisted like the node kinds so the Neo4j adapter can create constraints for them.
LOG_LABELS: tuple[str, ...] = ("StageMove", "AuditEntry", "Record")
# The traffic rollup's counters (graph/traffic.py) and their links to what they count: a
# store-internal index, never a graph node or a lineage edge.
TRAFFIC_LABEL = "TrafficCount"
TRAFFIC_EDGE = "COUNTS"
# Named sequence counters (keyed by ``name``): the logs' sequence numbers, and the turn
# writers of requests take (``StoreTransaction.lock_traffic``); the "traffic" counter also
# keeps how far a rebuild of the rollup has counted (``rebuilt_through``).
COUNTER_LABEL = "LineagegraphCounter"
# The layout of what a store holds (tables and columns, labels, properties, kinds), stamped
# in each store (SQLite's user_version; Neo4j: the "format" counter). A version refuses a
# store stamped higher than this: raise it with any change an older version would misread,
# and add the step that upgrades a store stamped lower (graph/embedded.py, neo4j_store.py).
# Upgrading, a version marks the store first (Neo4j: the counter's ``next``), and a server
# of an older version still running (format 3 on) refuses to write from then on
# (graph/store.py ``StoreUpgraded``): a rolling deploy needs nothing more.
# 2: each versioned node keeps its ``version_key``, indexed with its name (an older version
# would write nodes without one, which the version reads then miss).
# 3: a version keeps its family's ID (``FAMILY``), indexed with its time and its version
# key, and each (name, environment) a stage move went to is kept (``STAGE_SLOT_LABEL``): an
# older version would link versions without the one, which a family's reads then miss, and
# append a move to a new slot without the other, which the reads of what is live then miss.
STORE_FORMAT = 3
# The format from which each versioned node keeps its version key: a store stamped below
# it gains them as it opens.
VERSION_KEYS_FORMAT = 2
# The format from which each version keeps its family's ID: a store stamped below it gains
# them, from its VERSION_OF edges, as it opens.
FAMILIES_FORMAT = 3
# The format from which each (name, environment) a stage move went to is kept as a slot:
# a store stamped below it gains them, from its moves, as it opens.
STAGE_SLOTS_FORMAT = 3
# The slots (Neo4j label; SQLite table ``stage_slots``): what is live in an environment,
# or of some names, is each slot's last move, read from the moves' (name, environment, at)
# index, not every move of the environment grouped (a CI promoting hourly leaves tens of
# thousands, and every trace asks what else was live).
STAGE_SLOT_LABEL = "StageSlot"
# A label every node carries, so a lookup by ID alone uses one uniqueness index.
NODE_LABEL = "Node"
