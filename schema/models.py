"""The records stores keep: nodes, edges, stage moves and audit entries."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .bounds import FUTURE_SKEW, MAX_PROPERTIES_BYTES, id_flaw, shown
from .ids import InvalidId, id_text, normalize_version, parse_id
from .kinds import EDGE_KINDS_BY_TYPE, NODE_KINDS_BY_LABEL, default_kind_for

M = TypeVar("M", bound=BaseModel)


class SchemaError(ValueError):
    """A record that breaks the graph schema. ``where`` names the record/field."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message if where is None else f"{where}: {message}")
        self.message = message
        self.where = where


class OutOfRange(ValueError, OverflowError):
    """A time UTC cannot hold (``0001-01-01T00:00:00+01:00`` is in year 0 there). A
    ValueError, so that a model's validator refuses it naming the field (an OverflowError
    escaped every ingest path as a 500); an OverflowError, as ``astimezone`` raised."""


def utc(value: datetime) -> datetime:
    """Timestamps are kept in UTC; a naive one is read as UTC (as Marquez does)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise OutOfRange(f"{value.isoformat()} is out of range in UTC "
                         "(years 1 to 9999)") from None


def now() -> datetime:
    return datetime.now(UTC)


# Now + FUTURE_SKEW, as last read: time only moves on, so a time no later than it is no
# later than the bound now either, and bulk loads of past records read no clock.
_latest_seen = now() + FUTURE_SKEW


def recorded_time(value: datetime) -> datetime:
    """``value`` in UTC, refused (ValueError) when later than now by more than FUTURE_SKEW:
    when something happened, which a clock ahead by minutes, not days, may misstate."""
    global _latest_seen
    at = utc(value)
    if at > _latest_seen:
        current = now()
        _latest_seen = latest = current + FUTURE_SKEW
        if at > latest:
            raise ValueError(f"{at.isoformat()} is in the future: later than now "
                             f"({current.isoformat(timespec='seconds')}) by more than the "
                             f"{FUTURE_SKEW.total_seconds() / 60:g} minutes clocks may "
                             "differ")
    return at


# A timestamp kept in UTC: every record's time fields use it.
UtcDatetime = Annotated[datetime, AfterValidator(utc)]
# When a node or a request came to be: kept in UTC, never later than now (+ FUTURE_SKEW).
RecordedDatetime = Annotated[datetime, AfterValidator(recorded_time)]


def iso_time(value: Any) -> Any:
    """A time as sent: ISO 8601 text (or a datetime, built in Python). pydantic also reads
    a number, or text that is one, as Unix seconds: ``12345`` would be a time in 1970, and
    milliseconds one in the year 50,000 (OpenLineage's eventTime is ISO 8601 text)."""
    if isinstance(value, int | float) or (isinstance(value, str) and _is_number(value)):
        raise ValueError("expected an ISO 8601 date-time such as 2026-01-31T09:30:00Z, not "
                         "a number")
    return value


def _is_number(text: str) -> bool:
    if ":" in text or "-" in text[1:]:  # a date or a time (every sent one): no exception
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


# A recorded time as it is sent: ISO 8601 text, never a number.
SentDatetime = Annotated[datetime, BeforeValidator(iso_time), AfterValidator(recorded_time)]


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str,
                              check_circular=False)
# ``JSONEncoder.encode`` makes a C encoder for every call: made once, it is half the cost
# (4.1 → 2.2 µs for an outcome's properties), and bulk loads encode every record's. The
# same arguments ``encode`` passes; without the circular check (JSON values have no
# cycles: one would raise RecursionError), whose shared state would not be thread-safe.
_C_CANONICAL = json.encoder.c_make_encoder and json.encoder.c_make_encoder(
    None, _CANONICAL.default, json.encoder.encode_basestring_ascii, None,
    _CANONICAL.key_separator, _CANONICAL.item_separator, True, False, True)


def canonical_json(value: Any) -> str:
    """Deterministic JSON, so that re-sending the same properties compares equal."""
    if type(value) is dict and not value:  # most edges: skip the encoder
        return "{}"
    if _C_CANONICAL is None:
        return _CANONICAL.encode(value)
    return "".join(_C_CANONICAL(value, 0))


def check_properties_size(properties: dict[str, Any]) -> None:
    """ValueError when a node's or an edge's properties exceed MAX_PROPERTIES_BYTES of
    canonical JSON (ASCII: its length is its size in bytes)."""
    size = len(canonical_json(properties))
    if size > MAX_PROPERTIES_BYTES:
        raise ValueError(f"properties are {size:,} bytes of JSON; at most "
                         f"{MAX_PROPERTIES_BYTES:,} (link a larger document instead, e.g. "
                         "by an artifact_uri)")


_EMPTY_CHARS = len("{}")  # what no properties are, written


def properties_from_json(text: str | None) -> dict[str, Any]:
    """A stored properties map back; the empty one (most edges) skips the decoder."""
    return json.loads(text) if text and text != "{}" else {}


# What ``model_construct`` sets on a model, set through BaseModel's slots: for a complete
# set of fields it has no aliases or defaults to look up, and it costs 0.6 µs instead of
# 3.3. Bulk loads build a node and an edge per record, and reads one of each per hop.
# (tests/test_schema.py checks the result against ``model_construct``.)
_SET_DICT = BaseModel.__dict__["__dict__"].__set__
_SET_FIELDS_SET = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
_SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__


# One fields set per class, shared by its trusted models: a set of its own was a fifth of
# what a mapped batch of outcomes holds. They are frozen, and pydantic copies the set
# before it adds to it (``model_copy``), so no model changes another's.
_ALL_FIELDS: dict[type[BaseModel], set[str]] = {}


def _trusted(cls: type[M], fields: dict[str, Any]) -> M:
    model = object.__new__(cls)
    _SET_DICT(model, fields)
    _SET_FIELDS_SET(model, _ALL_FIELDS.get(cls) or _ALL_FIELDS.setdefault(cls, set(fields)))
    _SET_EXTRA(model, None)
    _SET_PRIVATE(model, None)
    return model


class _WithProperties(BaseModel):
    """A node or an edge: its ``properties`` as canonical JSON and that text's size, and
    values derived from its fields and cached (``id``, ``props_chars``): a copy with fields
    changed derives them again, rather than carry the original's."""

    @property
    def props_json(self) -> str:
        return canonical_json(self.properties)  # type: ignore[attr-defined]

    @cached_property
    def props_chars(self) -> int:
        """The characters of ``props_json``: what the properties add to a page."""
        return len(self.props_json)

    def _sized(self, props_json: str | None) -> Self:
        """Read from a store with its properties as stored (canonical JSON): their size is
        known from the text, so a page is measured without encoding them again."""
        self.__dict__["props_chars"] = len(props_json) if props_json else _EMPTY_CHARS
        return self

    def model_copy(self, *, update: Mapping[str, Any] | None = None,
                   deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        if update:
            for name in ("id", "props_chars"):
                copied.__dict__.pop(name, None)
        return copied


class Node(_WithProperties):
    """A node of any kind. ``id`` is derived from kind, name and version."""

    model_config = ConfigDict(frozen=True)

    kind: str
    name: str
    version: str | None = None
    created_at: RecordedDatetime = Field(default_factory=now)
    properties: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in NODE_KINDS_BY_LABEL:
            raise ValueError(f"unknown kind {kind!r} (known: {sorted(NODE_KINDS_BY_LABEL)})")
        return kind

    @field_validator("version", mode="before")
    @classmethod
    def _normalize_version(cls, version: Any) -> str | None:
        return normalize_version(version)

    @field_validator("name", "version")
    @classmethod
    def _id_part(cls, part: str | None) -> str | None:
        flaw = None if part is None else id_flaw(part)
        if flaw is not None:
            raise ValueError(flaw)
        return part

    @field_validator("properties")
    @classmethod
    def _size(cls, properties: dict[str, Any]) -> dict[str, Any]:
        # As given (what the kind's model then coerces is the same size, or smaller once
        # nulls are dropped): so the error names the field.
        check_properties_size(properties)
        return properties

    @model_validator(mode="after")
    def _check_properties(self) -> Node:
        spec = NODE_KINDS_BY_LABEL[self.kind]
        if self.version is not None and not spec.versioned:
            raise ValueError(f"{self.kind} has no versions (got version {self.version!r})")
        flaw = id_flaw(self.id)  # name and version each fit; together they may not
        if flaw is not None:
            raise ValueError(f"the ID {shown(self.id)} {flaw}")
        # Validate (and coerce) the declared properties; keep undeclared ones as given.
        checked = spec.props.model_validate(self.properties)
        object.__setattr__(self, "properties", checked.model_dump(mode="json", exclude_none=True))
        return self

    @classmethod
    def trusted(cls, kind: str, name: str, version: str | None, created_at: datetime,
                properties: dict[str, Any]) -> Node:
        """A node from fields already valid (read from a store, or built from a validated
        record): no validation, as ``model_construct``, at a fifth of its cost. With its
        ``id`` already cached: bulk loads and walks ask every node for it, and the first
        ask through ``cached_property`` took a lock (Python 3.11), ~1 µs a node."""
        node = _trusted(cls, {"kind": kind, "name": name, "version": version,
                             "created_at": created_at, "properties": properties})
        node.__dict__["id"] = id_text(NODE_KINDS_BY_LABEL[kind].prefix, name, version)
        return node

    @classmethod
    def stored(cls, kind: str, name: str, version: str | None, created_at: datetime,
               props_json: str | None) -> Node:
        """A node read from a store, its properties as stored (``_sized``)."""
        return cls.trusted(kind, name, version, created_at,
                           properties_from_json(props_json))._sized(props_json)

    @cached_property
    def id(self) -> str:
        # Computed once per node: bulk loads ask for it several times per record.
        return id_text(NODE_KINDS_BY_LABEL[self.kind].prefix, self.name, self.version)

    def indexed(self) -> dict[str, Any]:
        return {key: self.properties.get(key) for key in NODE_KINDS_BY_LABEL[self.kind].indexed}

    @classmethod
    def from_id(cls, node_id: str, kind: str | None = None, **fields: Any) -> Node:
        """Build a node from its ID; ``kind`` disambiguates (a pinned model snapshot is a
        ``ModelVersion`` with no version part)."""
        parsed = parse_id(node_id)
        label = kind or default_kind_for(parsed.prefix, parsed.version is not None).label
        if label not in NODE_KINDS_BY_LABEL:
            raise InvalidId(f"unknown kind {label!r} (known: {sorted(NODE_KINDS_BY_LABEL)})")
        if NODE_KINDS_BY_LABEL[label].prefix != parsed.prefix:
            raise InvalidId(f"{node_id!r} is not an ID of a {label}")
        return cls(kind=label, name=parsed.name, version=parsed.version, **fields)


class Edge(_WithProperties):
    model_config = ConfigDict(frozen=True)

    source: str
    type: str
    target: str
    properties: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known_type(cls, edge_type: str) -> str:
        if edge_type not in EDGE_KINDS_BY_TYPE:
            raise ValueError(f"unknown edge type {edge_type!r}")
        return edge_type

    @field_validator("source", "target")
    @classmethod
    def _canonical(cls, node_id: str) -> str:
        return str(parse_id(node_id))

    @field_validator("properties")
    @classmethod
    def _size(cls, properties: dict[str, Any]) -> dict[str, Any]:
        # An edge is read with its ends (a column-lineage map on DERIVED_FROM): bounded as
        # a node's properties are. Most edges have none.
        if properties:
            check_properties_size(properties)
        return properties

    @classmethod
    def trusted(cls, source: str, type: str, target: str,  # noqa: A002 (the field's name)
                properties: dict[str, Any]) -> Edge:
        """An edge from fields already valid (see ``Node.trusted``)."""
        return _trusted(cls, {"source": source, "type": type, "target": target,
                              "properties": properties})

    @classmethod
    def stored(cls, source: str, type: str, target: str,  # noqa: A002 (the field's name)
               props_json: str | None) -> Edge:
        """An edge read from a store, its properties as stored (``_sized``)."""
        return cls.trusted(source, type, target, properties_from_json(props_json))._sized(
            props_json)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.source, self.type, self.target)



def check_edge_endpoints(edge: Edge, source_kind: str, target_kind: str) -> None:
    spec = EDGE_KINDS_BY_TYPE[edge.type]
    if (source_kind, target_kind) not in spec.endpoints:
        allowed = ", ".join(f"{s}→{t}" for s, t in sorted(spec.endpoints))
        raise SchemaError(
            f"{edge.type} cannot go from a {source_kind} to a {target_kind} (allowed: {allowed})",
            where=f"edge {edge.source} -[{edge.type}]-> {edge.target}",
        )


def check_environment(name: str) -> str:
    """An environment's name as written: users define their own, but a blank one, or one
    with spaces at its ends or control characters, would be a stage no one can name back."""
    if not name or name != name.strip() or len(name) > 64 or not name.isprintable():
        raise ValueError(f"environment {shown(name)}: expected a name such as production "
                         "(no blanks at its ends, at most 64 characters)")
    return name


class StageMove(BaseModel):
    """One recorded move of a bundle name in an environment: ``to_version`` None means the
    environment no longer serves that name (retired). The history is append-only."""

    model_config = ConfigDict(frozen=True)

    name: str
    environment: str
    to_version: str | None
    from_version: str | None = None
    at: UtcDatetime = Field(default_factory=now)
    actor: str = "system"
    reason: str | None = None
    seq: int | None = None  # assigned by the store, in append order

    @field_validator("to_version", "from_version", mode="before")
    @classmethod
    def _normalize(cls, version: Any) -> str | None:
        return normalize_version(version)

    @field_validator("environment")
    @classmethod
    def _environment(cls, name: str) -> str:
        return check_environment(name)



class AuditEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    action: str
    target: str
    actor: str = "system"
    at: UtcDatetime = Field(default_factory=now)
    before: Any = None
    after: Any = None
    seq: int | None = None



class Record(BaseModel):
    """A document kept beside the graph (a raw OpenLineage event, a dead-lettered record),
    unique on (collection, key): appending the same key again is a no-op."""

    model_config = ConfigDict(frozen=True)

    collection: str
    key: str
    payload: Any = None
    at: UtcDatetime = Field(default_factory=now)
    seq: int | None = None



def validation_message(item: Mapping[str, Any]) -> str:
    """One pydantic error's message as a caller reads it: every path that shows a
    ValidationError to a user (REST, GraphQL, CLI, ingest problems, dead letters) words it
    here. A validator's ValueError comes back as "Value error, <its text>": the prefix
    names a Python class, not the input's problem."""
    return str(item.get("msg", "invalid")).removeprefix("Value error, ")


def describe_validation_error(error: ValidationError, where: str | None = None, *,
                              at: str | None = None) -> str:
    """One line per problem, each with its field path (below ``at``: ``nodes.0.kind``)."""
    parts = []
    for item in error.errors():
        path = ".".join(str(p) for p in (*([at] if at else []), *item["loc"])) or "(record)"
        parts.append(f"{path}: {validation_message(item)}")
    text = "; ".join(parts)
    return f"{where}: {text}" if where else text


def error_message(error: Exception) -> str:
    """What an error says to a caller: a ValidationError as ``describe_validation_error``
    words it (its ``str`` is pydantic's multi-line report, with error types and URLs)."""
    return describe_validation_error(error) if isinstance(error, ValidationError) else str(error)
