"""The registry manifest formats (design §4): one pydantic model per document kind, and the
YAML/JSON readers that number documents so every problem can name where it is.

A document model is the kind's identity and reference fields on top of the kind's property
model from ``schema.kinds``, so declared properties are type-checked with their field paths
and anything else is kept as a property (``extra="allow"``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lineagegraph.schema import normalize_version
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
from lineagegraph.schema.models import UtcDatetime, canonical_json

from .batch import IngestError, Problem
from .bodies import parse_json
from .refs import ref_id


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

    def node_name(self) -> str:
        return self.name  # type: ignore[attr-defined]

    def node_version(self) -> str | None:
        return None

    def properties(self) -> dict[str, Any]:
        """Declared properties and unknown fields: everything but identity and references."""
        skip = set(self.IDENTITY) | set(self.REFS) | self.ANNOTATIONS
        return self.model_dump(mode="json", exclude=skip, exclude_none=True)

    def digest(self) -> str:
        """What the entry says, apart from its version, time and annotations: equal digests
        mean a re-sent document."""
        skip = {"version", "created_at", "supersedes"} | self.ANNOTATIONS
        content = self.model_dump(mode="json", exclude=skip, exclude_none=True)
        return hashlib.sha256(canonical_json(content).encode()).hexdigest()[:16]


class VersionedDoc(Doc):
    IDENTITY = Doc.IDENTITY | {"version", "supersedes"}
    name: str
    version: str | None = None
    # false: supersedes nothing; a version or an ID: that one; absent: the previous version.
    # (str first: in pydantic's smart union `supersedes: 1` must stay a version, not True.)
    supersedes: str | bool | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> str | None:
        return normalize_version(value)

    def node_version(self) -> str | None:
        return self.version


class DataSourceDoc(Doc, DataSourceProps):
    LABEL = "DataSource"
    name: str


class DatasetVersionDoc(VersionedDoc, DatasetVersionProps):
    LABEL = "DatasetVersion"
    REFS = {"source": Ref("VERSION_OF", ("DataSource",), "source")}
    name: str = ""  # the source's name unless given
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
    run_id: str
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

    def node_name(self) -> str:
        return f"{self.suite}/{self.run}"


class ApprovalDoc(Doc, ApprovalProps):
    LABEL = "Approval"
    REFS = {"target": Ref("APPROVES", ("Bundle", "ModelVersion", "PromptVersion"))}
    name: str | None = None  # default: target/gate/approver, so a re-send is the same node
    target: str  # type: ignore[assignment]

    def node_name(self) -> str:
        try:  # the canonical target, so `@v7` and `@7` name one approval
            target = ref_id(self.target, self.REFS["target"].kinds, None)[0]
        except ValueError:
            target = self.target  # reported when the reference is resolved
        return self.name or "/".join(p for p in (target, self.gate, self.approved_by) if p)


class BundleEval(BaseModel):
    """``eval:`` of a bundle entry; becomes ``eval:{suite}/{run}``."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)
    suite: str
    run: str | None = None  # default: the bundle's name@version
    score: float | None = None
    threshold: float | None = None


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
    approved_by: list[str] = Field(default_factory=list)
    status: str | None = None  # an environment, or "retired"

    @field_validator("approved_by", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class StageMoveDoc(BaseModel):
    """An explicit move of a bundle version into an environment (``version: null`` takes
    the name out of it). Nothing else to keep, so unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)
    kind: str
    bundle: str
    version: str | None
    environment: str
    at: UtcDatetime | None = None
    actor: str | None = None
    reason: str | None = None

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
    """One document as read: ``record`` says where (document number, or file#number)."""

    record: int | str
    data: Any


class _Loader(yaml.SafeLoader):
    """YAML without implicit timestamps: ``version: 2026-11-15`` and ``run: 2026-06-10`` stay
    the strings they look like; ``created_at`` is parsed by the document model."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _flatten(data: Any) -> Iterator[Any]:
    # A list at the top holds several documents (a JSON array, or YAML written that way).
    if isinstance(data, list):
        yield from data
    elif data is not None:  # an empty document (a trailing ---) holds nothing
        yield data


def read_yaml(text: str, where: str | None = None) -> list[RawDoc]:
    """Every document of a (multi-document) YAML text, numbered from 1; malformed YAML is an
    ``IngestError`` naming the document and line."""
    loader = _Loader(text)
    docs: list[Any] = []
    try:
        while loader.check_node():
            docs.extend(_flatten(loader.construct_document(loader.get_node())))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        number = len(docs) + 1
        raise IngestError(Problem(f"malformed YAML{at}: {problem}",
                                  record=f"{where}#{number}" if where else number)) from None
    finally:
        loader.dispose()
    return [RawDoc(f"{where}#{i}" if where else i, data) for i, data in enumerate(docs, 1)]


def read_json(text: str) -> list[RawDoc]:
    return [RawDoc(i, item) for i, item in enumerate(_flatten(parse_json(text)), 1)]


def read_directory(root: Path) -> list[RawDoc]:
    """Every document of every ``*.yaml``/``*.yml`` below ``root`` (or the one file given),
    in path order; records are ``relative/path.yaml#n``. Problems of all files are
    reported together."""
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    docs: list[RawDoc] = []
    problems: list[Problem] = []
    for path in files:
        where = str(path.relative_to(root)) if path != root else path.name
        try:
            docs += read_yaml(path.read_text(encoding="utf-8"), where)
        except IngestError as error:
            problems += error.problems
    if problems:
        raise IngestError(problems)
    return docs


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
        return model.model_validate(raw.data)
    except ValidationError as error:
        raise IngestError([
            Problem(item["msg"], record=raw.record,
                    field=".".join(str(p) for p in item["loc"]) or None)
            for item in error.errors()]) from None
