"""The registry manifest formats (design §4): one pydantic model per document kind, and the
YAML/JSON readers that number documents so every problem can name where it is.

A document model is the kind's identity and reference fields on top of the kind's property
model from ``schema.kinds``, so declared properties are type-checked with their field paths
and anything else is kept as a property (``extra="allow"``).

A document for a node that exists is a merge patch (``manifests``): ``properties`` holds only
what the document states, and ``stated`` also names the fields it sets to null — a list or
mapping field too (``residency: null``), which validation alone would refuse; removed, it
takes its kind's default (an empty list).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from lineagegraph.schema import NODE_KINDS_BY_LABEL, approval_name, format_id, normalize_version
from lineagegraph.schema.bounds import ID_PART, NOTE, shown
from lineagegraph.schema.kinds import (
    ApprovalProps,
    BundleProps,
    DatasetVersionProps,
    DataSourceProps,
    EvaluationProps,
    FeatureProps,
    ModelVersionProps,
    PolicyPackProps,
    PromptVersionProps,
    ToolsetProps,
    TrainingRunProps,
)
from lineagegraph.schema.models import (
    RecordedDatetime,
    UtcDatetime,
    canonical_json,
    check_environment,
    check_properties_size,
)

from .batch import IngestError, Problem, validation_problems
from .bodies import (
    MAX_DEPTH,
    TOO_DEEP,
    check_value,
    field_path,
    parse_json,
    utf8_flaw,
)
from .refs import ref_id

# Bounds on one document, counted as its consumers see it (an alias counts each time it is
# used): a 600-byte YAML text of nested aliases expands to millions of values, which the body
# size limit cannot see. Real entries hold tens of values, a big tool schema a few thousand;
# 100,000 leaves that room many times over and keeps the worst document to well under a second
# of validation and a few MB of properties.
MAX_VALUES = 100_000
# Nesting: ``bodies.MAX_DEPTH`` (200) as for every JSON body, so a manifest too deep is
# refused alike as YAML or JSON (past ~250 levels pydantic's serializer breaks, past ~490
# the YAML parser's recursion; real entries nest a handful).


def _not_blank(value: str) -> str:
    # an empty name makes an ID like `source:` that no query can name afterwards
    if not value.strip():
        raise ValueError("must not be empty")
    return value


Name = Annotated[str, AfterValidator(_not_blank), ID_PART]
"""A field that names a node, or a part of its ID: never empty (``bounds.ID_PART``)."""
Version = Annotated[str | None, ID_PART]


def _environment(name: str | None) -> str | None:
    return check_environment(name) if name else name  # a blank status states none


# An environment's name, as StageMove keeps it: checked here, naming the field (a name the
# move then refused was a 500).
Environment = Annotated[str, AfterValidator(_not_blank), AfterValidator(check_environment)]


@dataclass(frozen=True, slots=True)
class Ref:
    """A document field that names another node. The edge goes from the document's node to
    the referenced one."""

    edge: str
    kinds: tuple[str, ...]
    prefix: str | None = None  # a bare name gets this prefix; None: an ID is required
    many: bool = False
    # Missing targets that no document kind can declare are created rather than refused:
    # a provider's pinned model snapshot, a job.
    create: bool = False


class Doc(BaseModel):
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    LABEL: ClassVar[str]
    REFS: ClassVar[dict[str, Ref]] = {}
    # Fields that say which node this is or how it is loaded, never stored as properties.
    IDENTITY: ClassVar[frozenset[str]] = frozenset({"kind", "name", "created_at"})
    # Fields that annotate a version (where it is staged, who signed it off) rather than
    # define it: changing them must not make a new version.
    ANNOTATIONS: ClassVar[frozenset[str]] = frozenset()

    kind: str | None = None
    created_at: UtcDatetime | None = None
    # Declared fields the document sets to null whose type has no null (``residency: null``
    # on a policy pack): left out of validation, and removed from the node.
    _nulls: frozenset[str] = PrivateAttr(default_factory=frozenset)

    def node_name(self) -> str:
        return self.name  # type: ignore[attr-defined]

    def node_version(self) -> str | None:
        return None

    @classmethod
    def property_fields(cls) -> frozenset[str]:
        """The declared fields that are properties: not identity, references, annotations."""
        return frozenset(cls.model_fields) - cls.IDENTITY - set(cls.REFS) - cls.ANNOTATIONS

    def properties(self) -> dict[str, Any]:
        """The properties the document states, unknown fields too: everything but identity
        and references. Defaults are the node's to fill: a merge patch that leaves a field
        out must not reset it (a pack's ``risk_tier`` to the default tier)."""
        skip = set(self.IDENTITY) | set(self.REFS) | self.ANNOTATIONS
        return self.model_dump(mode="json", exclude=skip, exclude_none=True, exclude_unset=True)

    def stated(self) -> frozenset[str]:
        """The property names the document states, ``null`` ones too (what it removes)."""
        fields = self.model_fields_set | set(self.model_extra or ()) | self._nulls
        return frozenset(fields - set(self.IDENTITY) - set(self.REFS) - self.ANNOTATIONS)

    def digest(self) -> str:
        """What the entry says, apart from its version, time and annotations: equal digests
        mean a re-sent document."""
        skip = {"version", "created_at", "supersedes"} | self.ANNOTATIONS
        content = self.model_dump(mode="json", exclude=skip, exclude_none=True)
        return hashlib.sha256(canonical_json(content).encode()).hexdigest()[:16]


class VersionedDoc(Doc):
    IDENTITY = Doc.IDENTITY | {"version", "supersedes"}
    name: Name
    version: Version = None
    # false: supersedes nothing; a version or an ID: that one; absent: the previous version.
    # (str first: in pydantic's smart union `supersedes: 1` must stay a version, not True.)
    supersedes: str | bool | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> str | None:
        return normalize_version(value)

    def node_version(self) -> str | None:
        return self.version

    def supersedes_ref(self) -> tuple[str, Ref] | None:
        """What ``supersedes`` names, as reference text and its ``Ref``, when it names one (a
        bare version is one of this name)."""
        if not isinstance(self.supersedes, str):
            return None
        text = (self.supersedes if ":" in self.supersedes
                else f"{self.node_name()}@{self.supersedes}")
        return text, Ref("SUPERSEDES", (self.LABEL,), NODE_KINDS_BY_LABEL[self.LABEL].prefix)

    def links_to_itself(self) -> list[tuple[str, str]]:
        """(field, own ID) of each field that names the document's own node: a version that
        supersedes, is fine-tuned from or derived from itself is a loop no version order or
        lineage walk can read. Only a document that states its version (or is a pinned
        snapshot) can be told here: a version the load numbers is not known yet."""
        if self.version is None and not getattr(self, "snapshot", False):
            return []
        own = format_id(NODE_KINDS_BY_LABEL[self.LABEL].prefix, self.node_name(), self.version)
        named: list[tuple[str, str, Ref]] = []
        superseded = self.supersedes_ref()
        if superseded is not None:
            named.append(("supersedes", *superseded))
        for field, ref in self.REFS.items():
            value = getattr(self, field)
            if self.LABEL not in ref.kinds or value is None:
                continue
            named += ([(f"{field}.{i}", text, ref) for i, text in enumerate(value)] if ref.many
                      else [(field, value, ref)])
        found = []
        for field, text, ref in named:
            try:
                target = ref_id(text, ref.kinds, ref.prefix)[0]
            except ValueError:
                continue  # reported naming the field when the load resolves it
            if target == own:
                found.append((field, own))
        return found


class DataSourceDoc(Doc, DataSourceProps):
    LABEL = "DataSource"
    name: Name


class DatasetVersionDoc(VersionedDoc, DatasetVersionProps):
    LABEL = "DatasetVersion"
    REFS = {"source": Ref("VERSION_OF", ("DataSource",), "source")}
    name: Name = ""  # the source's name unless given
    source: str

    def node_name(self) -> str:
        return self.name or self.source.removeprefix("source:")


class FeatureDoc(VersionedDoc, FeatureProps):
    LABEL = "Feature"
    REFS = {"derived_from": Ref("DERIVED_FROM", ("DatasetVersion", "DataSource", "Feature"),
                                many=True)}
    derived_from: list[str] = Field(default_factory=list)


class TrainingRunDoc(Doc, TrainingRunProps):
    LABEL = "TrainingRun"
    REFS = {"job": Ref("RUN_OF", ("Job",), "job", create=True),
            "consumed": Ref("CONSUMED", ("Feature", "DatasetVersion"), many=True)}
    IDENTITY = Doc.IDENTITY | {"run_id"}
    run_id: Name
    job: str | None = None
    consumed: list[str] = Field(default_factory=list)

    def node_name(self) -> str:
        return self.run_id


_MODEL = Ref("FINE_TUNED_FROM", ("ModelVersion",), "model", create=True)


class ModelVersionDoc(VersionedDoc, ModelVersionProps):
    LABEL = "ModelVersion"
    REFS = {"produced_by": Ref("PRODUCED_BY", ("TrainingRun",), "run"),
            "fine_tuned_from": _MODEL}
    IDENTITY = VersionedDoc.IDENTITY | {"snapshot"}
    snapshot: bool = False  # a provider's pinned snapshot: no version, no family
    produced_by: str | None = None
    fine_tuned_from: str | None = None


class PromptVersionDoc(VersionedDoc, PromptVersionProps):
    LABEL = "PromptVersion"
    REFS = {"designed_for": Ref("DESIGNED_FOR", ("ModelVersion",), "model", many=True,
                                create=True)}
    designed_for: list[str] = Field(default_factory=list)


class ToolsetDoc(VersionedDoc, ToolsetProps):
    LABEL = "Toolset"


class PolicyPackDoc(VersionedDoc, PolicyPackProps):
    LABEL = "PolicyPack"


class EvaluationDoc(Doc, EvaluationProps):
    LABEL = "Evaluation"
    REFS = {"target": Ref("EVALUATES", ("ModelVersion", "PromptVersion", "Bundle"))}
    target: str  # type: ignore[assignment]
    suite: Name
    run: Name

    def node_name(self) -> str:
        return f"{self.suite}/{self.run}"


class ApprovalDoc(Doc, ApprovalProps):
    LABEL = "Approval"
    REFS = {"target": Ref("APPROVES", ("Bundle", "ModelVersion", "PromptVersion"))}
    # default: the name the approve mutation gives (``approval_name``), so a re-send, or the
    # same sign-off made through the API, is the same node
    name: Name | None = None
    target: str  # type: ignore[assignment]
    approved_by: Name
    # When the approval was given (design §4): never later than now, as a node's time.
    at: RecordedDatetime | None = None

    @model_validator(mode="after")
    def _dated_at(self) -> ApprovalDoc:
        # ``at`` is the approval's time, as its node's ``created_at`` (a trace lists the
        # approvals given by a request's time); it had been kept as a property only, and the
        # node dated at load time.
        if self.at is not None:
            if self.created_at is not None and self.created_at != self.at:
                raise ValueError(f"at ({self.at.isoformat()}) and created_at "
                                 f"({self.created_at.isoformat()}) differ: an approval has "
                                 "one time")
            self.created_at = self.at
        return self

    def node_name(self) -> str:
        if self.name:
            return self.name
        try:  # the canonical target, so `@v7` and `@7` name one approval
            target = ref_id(self.target, self.REFS["target"].kinds, None)[0]
        except ValueError:
            target = self.target  # reported when the reference is resolved
        return approval_name(target, self.approved_by, self.gate)


class BundleEval(BaseModel):
    """``eval:`` of a bundle entry; becomes ``eval:{suite}/{run}``."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)
    suite: Name
    run: Name | None = None  # default: the bundle's name@version
    score: float | None = None
    threshold: float | None = None

    @model_validator(mode="after")
    def _fits(self) -> BundleEval:
        # The Evaluation's properties: refused here, naming ``eval``, before the load
        # builds the node (``schema.bounds.MAX_PROPERTIES_BYTES``).
        check_properties_size(self.model_dump(mode="json", exclude_none=True))
        return self


class BundleDoc(VersionedDoc, BundleProps):
    """The registry entry format users keep in git (no ``kind:``)."""

    LABEL = "Bundle"
    REFS = {"model": Ref("USES_MODEL", ("ModelVersion",), "model", create=True),
            "prompt_ref": Ref("USES_PROMPT", ("PromptVersion",), "prompt"),
            "tools_ref": Ref("USES_TOOLS", ("Toolset",), "tools"),
            "policy_ref": Ref("GOVERNED_BY", ("PolicyPack",), "policy"),
            "retrieves_from": Ref("RETRIEVES_FROM", ("DataSource",), "source", many=True)}
    ANNOTATIONS = frozenset({"eval", "approved_by", "status"})
    model: str
    prompt_ref: str | None = None
    tools_ref: str | None = None
    policy_ref: str | None = None
    retrieves_from: list[str] = Field(default_factory=list)
    eval: BundleEval | None = None
    approved_by: list[Name] = Field(default_factory=list)
    status: Annotated[str | None, AfterValidator(_environment)] = None  # or "retired"

    @field_validator("approved_by", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class StageMoveDoc(BaseModel):
    """An explicit move of a bundle version into an environment (``version: null`` takes
    the name out of it). Nothing else to keep, so unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    kind: str
    bundle: Name
    version: Version
    environment: Environment
    at: UtcDatetime | None = None
    # Kept in the append-only stage log, shown in every history: bounded (``bounds``).
    actor: Annotated[str | None, ID_PART] = None
    reason: Annotated[str | None, NOTE] = None

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> str | None:
        return normalize_version(value)


NODE_DOCS: dict[str, type[Doc]] = {doc.LABEL: doc for doc in (
    DataSourceDoc, DatasetVersionDoc, FeatureDoc, TrainingRunDoc, ModelVersionDoc,
    PromptVersionDoc, ToolsetDoc, PolicyPackDoc, EvaluationDoc, ApprovalDoc, BundleDoc)}
KINDS = sorted([*NODE_DOCS, "StageMove"])


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawDoc:
    """One document as read: ``record`` says where — its position in the YAML stream
    (``N item M`` for the items of a list), its JSON array index, or ``file#…``."""

    record: int | str
    data: Any


class _Loader(yaml.SafeLoader):
    """YAML without implicit timestamps: ``version: 2026-11-15`` and ``run: 2026-06-10`` stay
    the strings they look like; ``created_at`` is parsed by the document model."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


# Fields that hold a version (a run label is one too): YAML would read an unquoted `1.10` as
# the number 1.1, `010` as 8, `0x1A` as 26 — so there the source's text is kept. Anywhere
# else a number stays YAML's number.
_VERSION_FIELDS = frozenset({"version", "supersedes", "run"})
_EVAL_VERSION_FIELDS = frozenset({"run"})  # a bundle entry's eval.run
_NUMBER_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})


def _as_text(node: yaml.Node) -> yaml.Node:
    if isinstance(node, yaml.ScalarNode) and node.style is None and node.tag in _NUMBER_TAGS:
        return yaml.ScalarNode("tag:yaml.org,2002:str", node.value, node.start_mark,
                               node.end_mark)
    return node


def _key(node: yaml.Node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _with_text(loader: _Loader, node: yaml.Node, fields: frozenset[str]) -> yaml.Node:
    """A copy of mapping ``node`` whose ``fields`` keep their text where YAML saw a number
    (a copy: an anchored node may also be used where a number is meant)."""
    if not isinstance(node, yaml.MappingNode):
        return node
    loader.flatten_mapping(node)  # merge keys first, so `<<: *defaults` versions count too
    pairs = [(key, _as_text(value) if _key(key) in fields else value)
             for key, value in node.value]
    return yaml.MappingNode(node.tag, pairs, node.start_mark, node.end_mark, node.flow_style)


def _document_text(loader: _Loader, node: yaml.Node) -> yaml.Node:
    node = _with_text(loader, node, _VERSION_FIELDS)
    if isinstance(node, yaml.MappingNode):
        node.value = [(key, _with_text(loader, value, _EVAL_VERSION_FIELDS)
                       if _key(key) == "eval" else value) for key, value in node.value]
    return node


def _version_text(loader: _Loader, node: yaml.Node) -> yaml.Node:
    """A YAML document's node with the version fields of its manifest document (or of each
    item, when it is a list of them) as text, ``eval.run`` included."""
    if not isinstance(node, yaml.SequenceNode):
        return _document_text(loader, node)
    items = [_document_text(loader, item) for item in node.value]
    return yaml.SequenceNode(node.tag, items, node.start_mark, node.end_mark, node.flow_style)


class _TooDeep(Exception):
    """Nested past ``MAX_DEPTH`` levels."""


class _TooMany(Exception):
    """More values than the walk's limit."""


def _count_values(data: Any, limit: int) -> int:
    """How many values ``data`` holds (a mapping's keys too; an object reached twice through
    aliases counts twice). Iterative, and stops past ``limit`` values (``_TooMany``) or
    ``MAX_DEPTH`` levels (``_TooDeep``), so an alias bomb or a cycle costs at most ``limit``
    steps."""
    count = 0
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _TooDeep
        count += 1 + (len(value) if isinstance(value, dict) else 0)
        if count > limit:
            raise _TooMany
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return count


_TAG = "tag:yaml.org,2002:"
_MERGE = _TAG + "merge"
# The YAML tags whose values JSON has: the rest (!!binary, !!timestamp, !!set, !!omap,
# !!pairs) construct what the graph cannot keep (bytes failed every response as a 500).
_JSON_TAGS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "null", "seq", "map"))
# Key tags that construct text: ``=`` is read as text by PyYAML (flatten_mapping).
_TEXT_KEY_TAGS = frozenset({_TAG + "str", _TAG + "value"})
_KEYS_READ = {_TAG + "int": "a number", _TAG + "float": "a number",
              _TAG + "bool": "true or false", _TAG + "null": "null"}


_FieldPath = tuple[str | int, ...]


class _NotJson(Exception):
    """A YAML key or value that JSON has no form for, at ``path``."""

    def __init__(self, path: _FieldPath, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _tag_name(node: yaml.Node) -> str:
    return f"!!{node.tag.removeprefix(_TAG)}" if node.tag.startswith(_TAG) else node.tag


def _json_flaw(node: yaml.Node, path: _FieldPath) -> None:
    """``_NotJson`` for a node, or a key of a mapping node, that constructs to no JSON value:
    refused before anything is built, with what to write instead."""
    if node.tag not in _JSON_TAGS:
        raise _NotJson(path, f"a YAML {_tag_name(node)} value, which JSON has no form for: "
                             "manifests hold text, numbers, true/false, null, lists and "
                             "mappings (write it as text)")
    if not isinstance(node, yaml.MappingNode):
        return
    for key, _ in node.value:
        if key.tag == _MERGE or (isinstance(key, yaml.ScalarNode)
                                 and key.tag in _TEXT_KEY_TAGS):
            continue
        if not isinstance(key, yaml.ScalarNode):
            raise _NotJson(path, f"a mapping key must be text, not a YAML {key.id}")
        read = _KEYS_READ.get(key.tag, f"a YAML {_tag_name(key)}")
        raise _NotJson((*path, key.value), f"a mapping key must be text: YAML reads "
                       f"{shown(key.value)} as {read}; quote it to keep it as text")


def _merged(value: yaml.Node) -> list[yaml.Node]:
    """The mappings a merge key's value brings in (a mapping or a list of them)."""
    items = value.value if isinstance(value, yaml.SequenceNode) else [value]
    return [item for item in items if isinstance(item, yaml.MappingNode)]


def _expansion(root: yaml.Node, limit: int) -> int:
    """How many values the YAML document ``root`` constructs to, counted as ``_count_values``
    counts constructed data (an alias each time it is used) and a merge key's mappings each
    time they are merged: PyYAML copies their key/value pairs into every mapping that merges
    them before a dict drops repeats, so ``{<<: [*a, *a]}`` nested 22 deep costs 2**22
    copies (13 s, 430 MB) for a dict of four keys. Counted on the nodes the parser gives,
    so before any of it is built; each node is measured once. ``_TooMany`` past ``limit``,
    ``_TooDeep`` past ``MAX_DEPTH`` levels or for a node inside itself (it never ends),
    ``_NotJson`` for a key or value JSON has no form for."""
    measured: dict[int, tuple[int, int]] = {}  # id(node): (values, levels), of collections
    open_: set[int] = set()  # the nodes whose parts are being measured: the current path
    stack: list[tuple[yaml.Node, _FieldPath, bool]] = [(root, (), False)]
    while stack:
        node, path, parts_done = stack.pop()
        if parts_done:
            values, levels = _measure(node, measured)
            if levels > MAX_DEPTH:
                raise _TooDeep
            if values > limit:
                raise _TooMany
            measured[id(node)] = values, levels
            open_.discard(id(node))
            continue
        if id(node) in measured:
            continue
        if id(node) in open_:
            raise _TooDeep
        _json_flaw(node, path)
        if type(node) is yaml.ScalarNode:
            continue
        open_.add(id(node))
        stack.append((node, path, True))
        if type(node) is yaml.SequenceNode:
            parts: Any = enumerate(node.value)
        else:
            parts = ((key.value, value) for key, value in node.value if key.tag != _MERGE)
            stack += [(item, path, False) for key, value in node.value if key.tag == _MERGE
                      for item in _merged(value)]
        for step, part in parts:
            # most values are scalars: checked here, with no path built for them
            if type(part) is not yaml.ScalarNode or part.tag not in _JSON_TAGS:
                stack.append((part, (*path, step), False))
    return measured[id(root)][0] if id(root) in measured else 1


_SCALAR = (1, 1)


def _measure(node: yaml.Node, measured: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(values, levels) of a collection node whose parts are measured."""
    if type(node) is yaml.SequenceNode:
        parts = [measured.get(id(item), _SCALAR) for item in node.value]
        return 1 + sum(v for v, _ in parts), 1 + max((lv for _, lv in parts), default=0)
    values, levels = 1, 1
    for key, value in node.value:
        if key.tag == _MERGE:  # the merged pairs, at this mapping's level
            for item in _merged(value):
                merged_values, merged_levels = measured[id(item)]
                values += merged_values - 1
                levels = max(levels, merged_levels)
        else:  # a key, and its value
            value_values, value_levels = measured.get(id(value), _SCALAR)
            values += 1 + value_values
            levels = max(levels, 1 + value_levels)
    return values, levels


class _AliasBudget:
    """The values the documents of one YAML text may expand to: each at most ``MAX_VALUES``,
    all together no more than the text's length or ``MAX_VALUES``, whichever is more.
    Without aliases every value takes a character of text or more, so only alias expansion
    (merge keys included) meets the total — which stops a body of many small bombs each
    under the bound."""

    def __init__(self, text: str) -> None:
        self.total = max(MAX_VALUES, len(text))
        self.left = self.total

    def spend(self, node: yaml.Node, record: int | str) -> None:
        """Count the document ``node`` (``_expansion``) before it is built, and refuse it
        naming ``record`` when it is too large, too deep, or not JSON."""
        aliases = "(YAML aliases count each time they are used)"  # merge keys use them
        try:
            count = _expansion(node, MAX_VALUES)
        except _TooDeep:
            raise IngestError(Problem(TOO_DEEP, record=record)) from None
        except _TooMany:
            raise IngestError(Problem(f"expands to more than {MAX_VALUES} values {aliases}",
                                      record=record)) from None
        except _NotJson as flaw:
            path = flaw.path
            if isinstance(node, yaml.SequenceNode) and path:  # an item is a document
                record, path = f"{record} item {int(path[0]) + 1}", path[1:]
            raise IngestError(Problem(flaw.message, record=record,
                                      field=field_path(path))) from None
        if count > self.left:
            raise IngestError(Problem(f"with the documents before it, expands to more than "
                                      f"{self.total} values {aliases}", record=record))
        self.left -= count


def _record(where: str | None, position: int) -> int | str:
    return f"{where}#{position}" if where else position


def _documents(data: Any, record: int | str) -> list[RawDoc]:
    """The manifest documents of one YAML document: itself, none (an empty document, as a
    trailing ``---`` makes), or a list's items (``N item M``)."""
    if isinstance(data, list):
        return [RawDoc(f"{record} item {i}", item) for i, item in enumerate(data, 1)]
    return [] if data is None else [RawDoc(record, data)]


def _malformed(error: yaml.YAMLError, record: int | str) -> IngestError:
    mark = getattr(error, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(error, "problem", None) or str(error)
    return IngestError(Problem(f"malformed YAML{at}: {problem}", record=record))


_DOCUMENT_START = re.compile(r"^---(?=[ \t\r\n]|$)", re.MULTILINE)
_NOT_CONTENT = re.compile(r"^[ \t]*(?:[#%].*)?$")  # blank, a comment, a directive


def _unprintable(text: str, error: yaml.reader.ReaderError, where: str | None) -> IngestError:
    """A character YAML does not allow, by line and column, and the document it is in
    (counted by ``---`` lines, as the reader refused the text before parsing any)."""
    at = error.position
    line_start = text.rfind("\n", 0, at) + 1
    starts = [m.start() for m in _DOCUMENT_START.finditer(text, 0, line_start)]
    first = starts[0] if starts else line_start
    implicit = any(not _NOT_CONTENT.match(line) for line in text[:first].splitlines())
    document = len(starts) + implicit if starts else 1
    return IngestError(Problem(
        f"malformed YAML at line {text.count(chr(10), 0, at) + 1}, column "
        f"{at - line_start + 1}: the character U+{error.character:04X}, which YAML does "
        "not allow", record=_record(where, document)))


def read_yaml(text: str, where: str | None = None) -> list[RawDoc]:
    """Every document of a (multi-document) YAML text. Records are positions in the stream as
    its reader counts them — empty documents too, and ``N item M`` for the items of a
    document that is a list — or ``where#N``. Malformed YAML, or a document too deep or too
    large once aliases are expanded, is an ``IngestError`` naming the document."""
    try:
        loader = _Loader(text)  # its reader first checks every character of the text
    except yaml.reader.ReaderError as error:  # NUL, another control character: was a 500
        raise _unprintable(text, error, where) from None
    budget = _AliasBudget(text)
    docs: list[RawDoc] = []
    position = 0  # documents read so far
    try:
        while loader.check_node():
            node = loader.get_node()
            budget.spend(node, _record(where, position + 1))  # before merge keys expand
            data = loader.construct_document(_version_text(loader, node))
            position += 1
            # what JSON bodies are checked for, YAML can say too: .nan, .inf, "\ud800"
            check_value(data, _record(where, position))
            docs += _documents(data, _record(where, position))
    except yaml.YAMLError as error:
        raise _malformed(error, _record(where, position + 1)) from None
    except RecursionError:  # the parser recurses per level: ~490 levels, past MAX_DEPTH
        raise IngestError(Problem(TOO_DEEP, record=_record(where, position + 1))) from None
    except ValueError as error:  # a value Python refuses, e.g. an integer past 4,300 digits
        raise IngestError(Problem(f"unreadable YAML value: {error}",
                                  record=_record(where, position + 1))) from None
    finally:
        loader.dispose()
    return docs


def read_json(text: str) -> list[RawDoc]:
    """The documents of a JSON body: one object, or an array's items numbered from 1.

    A JSON number is its value — there is no text beside it — so a version sent as 1.10 is
    the number 1.1 and becomes ``@1.1``, as it always did; a client that means "1.10" sends
    a string. Integers are versions as written (7 → ``@7``)."""
    data = parse_json(text)  # too deep, NaN, lone surrogates: refused naming the item
    items = data if isinstance(data, list) else [] if data is None else [data]
    docs = [RawDoc(i, item) for i, item in enumerate(items, 1)]
    for doc in docs:
        try:
            _count_values(doc.data, MAX_VALUES)
        except _TooDeep:
            raise IngestError(Problem(TOO_DEEP, record=doc.record)) from None
        except _TooMany:
            raise IngestError(Problem(f"holds more than {MAX_VALUES} values",
                                      record=doc.record)) from None
    return docs


# The formats POST /api/v1/manifests takes (YAML or JSON), told apart by name in a directory.
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def manifest_files(root: Path) -> list[Path]:
    """``root`` if it is a file, else every ``*.yaml``, ``*.yml`` and ``*.json`` below it, in
    path order."""
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix in MANIFEST_SUFFIXES and p.is_file())


def read_directory(root: Path) -> list[RawDoc]:
    """Every document of every manifest file of ``root`` (``manifest_files``): a ``*.json``
    file read as the route reads a JSON body, any other as YAML; records are
    ``relative/path.yaml#n``. Problems of all files are reported together."""
    docs: list[RawDoc] = []
    problems: list[Problem] = []
    for path in manifest_files(root):
        where = str(path.relative_to(root)) if path != root else path.name
        try:
            text = _read_text(path, where)
            docs += _read_json_file(text, where) if path.suffix == ".json" else read_yaml(
                text, where)
        except IngestError as error:
            problems += error.problems
    if problems:
        raise IngestError(problems)
    return docs


def _read_json_file(text: str, where: str) -> list[RawDoc]:
    """``read_json`` with records named ``where#n``, as a YAML file's are (a problem of the
    whole text, such as malformed JSON, is ``where``)."""
    try:
        docs = read_json(text)
    except IngestError as error:
        raise IngestError([replace(p, record=where if p.record is None else f"{where}#{p.record}")
                           for p in error.problems]) from None
    return [RawDoc(f"{where}#{doc.record}", doc.data) for doc in docs]


def _read_text(path: Path, where: str) -> str:
    """A manifest file's text; one that is not UTF-8 or cannot be read is a problem naming it
    (and the first bad byte), listed with the others."""
    try:
        data = path.read_bytes()
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        message = utf8_flaw(data, error)
    except OSError as error:
        message = error.strerror or str(error)
    raise IngestError(Problem(message, record=where))


def parse_document(raw: RawDoc) -> Doc | StageMoveDoc:
    """Validate one document against its kind's model (a document with no ``kind`` and a
    ``model`` is a bundle entry)."""
    if not isinstance(raw.data, dict):
        raise IngestError(Problem(f"a document must be a mapping, got {type(raw.data).__name__}",
                                  record=raw.record))
    kind = raw.data.get("kind")
    if kind is None and "model" in raw.data:
        kind = "Bundle"
    model: type[Doc] | type[StageMoveDoc] | None = (
        StageMoveDoc if kind == "StageMove" else NODE_DOCS.get(str(kind)))
    if model is None:
        message = ("no kind: a document without kind must be a bundle entry (name, version, "
                   "model)" if kind is None else f"unknown kind {kind!r}")
        raise IngestError(Problem(f"{message}; kinds: {', '.join(KINDS)}", record=raw.record,
                                  field="kind"))
    try:
        if not issubclass(model, Doc):
            return model.model_validate(raw.data)
        doc = _validate_doc(model, raw.data)
    except ValidationError as error:
        raise IngestError(validation_problems(error, raw.record)) from None
    if isinstance(doc, VersionedDoc) and (loops := doc.links_to_itself()):
        raise IngestError([Problem(f"names the document itself, {own}: a version must link "
                                   "to another", record=raw.record, field=field)
                           for field, own in loops])
    return doc


def _validate_doc(model: type[Doc], data: dict[str, Any]) -> Doc:
    """``data`` as a ``model`` document; a property field with a default set to null where
    its type has no null (a list, a mapping, a tier) is what the document removes."""
    nulls = frozenset(key for key, value in data.items()
                      if value is None and key in model.property_fields()
                      and not model.model_fields[key].is_required())
    try:
        return model.model_validate(data)
    except ValidationError as error:
        refused = {item["loc"][0] for item in error.errors() if len(item["loc"]) == 1}
        removed = nulls & refused
        if not removed:
            raise
    doc = model.model_validate({k: v for k, v in data.items() if k not in removed})
    doc._nulls = frozenset(removed)
    return doc
