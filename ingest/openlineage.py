"""OpenLineage events → the lineage graph (design §4, "OpenLineage mapping").

Typed events (``RunEvent``, ``DatasetEvent``, ``JobEvent``; facets kept as dicts) and one
mapper, ``event_to_batch(event, store) -> Batch``: it reads what the graph already holds and
returns what one transaction writes. Routes and the CLI do the writing (``ingest_event``).

Mapping of a RunEvent:

- job ``{namespace, name}`` → ``Job`` ``job:{namespace}/{name}``; the run → ``TrainingRun``
  ``run:{runId}`` ``RUN_OF`` the job. A runId is an opaque string (not only a UUID).
- dataset ``{namespace, name}`` → ``DataSource`` ``source:{namespace}/{name}``; the version a
  run wrote or read → ``DatasetVersion`` ``dataset:{namespace}/{name}@{version}`` ``VERSION_OF``
  it. The run ``CONSUMED`` its inputs; its outputs are ``PRODUCED_BY`` it.
- Versions: the ``version`` dataset facet (``datasetVersion``) when present. Otherwise an
  output is the writing run's ID. An input without the facet is the version the graph says
  the reader saw: the one this run already consumed (events of one run agree), else the
  newest version of that source created at or before the event time and not written by
  this run (Marquez links inputs to a dataset's current version), else the reading run's ID
  (``before-{runId}`` when the run also writes that dataset, so it never reads its own
  output). ``@`` in a version or model name is written ``%40``: IDs split the version at the
  last ``@``.
- Placeholders: a version named after a run is made up, and replaced once the real one is
  known — when a later event of the writing run names it (START without the ``version``
  facet, COMPLETE with it: producers often learn an output's version only once written), or
  when a reader's placeholder turns out to stand for a version a late-arriving writer wrote
  at or before the read. The placeholder's edges move to the real version and it is
  archived with ``replaced_by`` (never deleted; walks, ``history`` and input resolution
  skip it), an ``ingest.openlineage.replace`` audit entry each. An unversioned event of a
  run that already named its output's version writes that version. What stays order-bound:
  an input is linked to the newest version known when its event arrives, and only a
  placeholder is re-linked later. So two writers that both arrive after their reader, the
  older first, leave it on the older one: the first takes over its placeholder, and moving
  the edge on to the newer would need an edge taken back, which the graph never does (the
  newer first is right: the older is not newer than what the reader holds). Marquez,
  linking inputs to the current version, is bound alike. File loads and batches map in
  time order, which avoids it. Readers of a dataset
  no known run writes share the first reader's placeholder, also when a later reader's
  event arrives first: the earlier reader then takes over the later one's placeholder.
- Models: a dataset whose ``datasetType`` facet (the spec's DatasetTypeDatasetFacet) says
  ``MODEL`` is a ``ModelVersion`` ``model:{name}@{version}`` (dataset name; version as above)
  ``VERSION_OF`` ``model:{name}``. A model output is ``PRODUCED_BY`` the run; a model input
  (``CONSUMED`` cannot point at a model) is listed in the run's ``model_inputs`` and, when
  its version is known, each model output is ``FINE_TUNED_FROM`` it.
- Column lineage (the ``columnLineage`` facet of a dataset output) → ``DERIVED_FROM`` from
  the output version to the version of each input dataset it names, with the field detail
  as edge properties: ``{"fields": {out_field: [{"field", "transformations", ...}]},
  "dataset": [...]}``. A dataset named only there counts as an input of the run.
  Malformed entries (no namespace/name) are skipped; a facet of another shape than the
  spec's (``fields`` not an object of objects, ``inputFields`` or ``dataset`` not a list)
  rejects the event, naming the field (``outputs[0].facets.columnLineage.fields.a.
  inputFields``). So does any facet the mapper reads that is not an object.

Accumulation, in any arrival order: the run's ``status`` is the state of its latest event
by ``eventTime``, except that a terminal state (COMPLETE/FAIL/ABORT, as Marquez treats them)
is never replaced by a non-terminal one, whatever a skewed clock says; ``started_at`` is the
earliest START, ``ended_at`` the latest terminal event; events without ``eventType`` (or
``OTHER``) add facets but change no state. Facet names and column-lineage entries
accumulate as sets. Other properties: a newer event overrides the keys it states, an older
one only fills gaps (``observed_at`` is the newest event time seen); data sources, model
nodes (which manifests also write) and the versions a run read are only gap-filled by runs
and jobs, while a ``DatasetEvent``, the dataset's own metadata, sets its source's as the
newer events do (the latest wins, as in Marquez). The one
thing arrival order does change is ``created_at``: the store keeps the first write's, so a
node's is the time of the first event about it to arrive.

Raw events are kept as ``Record``s in ``openlineage.event`` keyed ``{subject}\\x1f{sha256}``
(subject ``run:{runId}``, ``job:…`` or ``source:…``): an event already kept maps to nothing
new, so a re-send changes nothing.

Lenient like Marquez: ``schemaURL``, ``eventType`` and ``producer`` may be missing, and a
timestamp without a zone is UTC (but ``eventTime`` is ISO 8601 text, as the spec says: a
number is refused, not read as Unix seconds). ``schemaURL`` ending in
``DatasetEvent``/``JobEvent`` selects those kinds; anything else is a RunEvent, which
needs ``run.runId``, ``job.namespace`` and ``job.name``. Strict where the graph must be:
JSON it cannot keep (too deep, NaN, lone surrogates: ``ingest/bodies.py``) is refused as
it is read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    with_config,
)
from typing_extensions import TypedDict

from lineagegraph.graph.store import (
    REPLACED_BY,
    Direction,
    GraphStore,
    MetadataMoved,
    StageMoved,
    StoreUnavailable,
    UpsertResult,
    replaced,
)
from lineagegraph.schema import AuditEntry, Edge, InvalidId, Node, Record, SchemaError, format_id
from lineagegraph.schema.bounds import ID_PART
from lineagegraph.schema.ids import escape_at
from lineagegraph.schema.models import (
    SentDatetime,
    canonical_json,
    describe_validation_error,
    utc,
)

from .batch import Batch, IngestError, Problem, validation_problems
from .bodies import (
    check_value,
    field_path,
    has_surrogate_escape,
    keepable,
    load_json,
    ndjson_lines,
    unreadable,
    unreadable_path,
)
from .deadletter import dead_letter, register_mapper
from .outcomes import read_text

log = logging.getLogger(__name__)

COLLECTION = "openlineage.event"
SOURCE = "openlineage"
SEPARATOR = "\x1f"  # between a raw event's subject and its hash in the record key

STATES = ("START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER")
TERMINAL = frozenset({"COMPLETE", "ABORT", "FAIL"})
_STATE_RANK = {"START": 0, "RUNNING": 1, "COMPLETE": 2, "ABORT": 2, "FAIL": 2}
_UNION_KEYS = frozenset({"facets", "symlinks", "model_inputs", "inputs", "outputs"})
OBSERVED = "observed_at"
_REPLACED_KEYS = frozenset({"archived", REPLACED_BY})  # a replaced placeholder's own


# -- typed events -------------------------------------------------------------------------

def _empty_dict_if_none(value: Any) -> Any:
    return {} if value is None else value


def _empty_list_if_none(value: Any) -> Any:
    return [] if value is None else value


# Facets the mapper reads have the spec's shape where it relies on one: each is an object
# (or null), and column lineage is made of the objects and lists it walks. Values read from
# them stay lenient (a string where one is needed, else nothing); other facets are the
# producer's own and may hold anything (as Marquez keeps them).
Facet = dict[str, Any] | None
_OPEN = ConfigDict(extra="allow")  # a TypedDict drops unknown keys unless told to keep them


# Versions of a source read at a time, nearest first (``_nearest_versions``): past the
# newest, only ones this event wrote itself or replaced placeholders are passed over.
_NEAREST = 8
# A model's versions read at once looking for its newest one no real version replaced.
_MODEL_PAGE = 1000


@with_config(_OPEN)
class FieldLineage(TypedDict, total=False):
    inputFields: list[Any] | None  # noqa: N815 (the spec's names, here and below)


@with_config(_OPEN)
class ColumnLineageFacet(TypedDict, total=False):
    fields: dict[str, FieldLineage | None] | None
    dataset: list[Any] | None


@with_config(_OPEN)
class RunFacets(TypedDict, total=False):
    parent: Facet
    nominalTime: Facet  # noqa: N815
    errorMessage: Facet  # noqa: N815
    processing_engine: Facet


@with_config(_OPEN)
class JobFacets(TypedDict, total=False):
    jobType: Facet  # noqa: N815
    documentation: Facet
    sql: Facet
    sourceCodeLocation: Facet  # noqa: N815


@with_config(_OPEN)
class DatasetFacets(TypedDict, total=False):
    schema: Facet
    version: Facet
    datasetType: Facet  # noqa: N815
    dataSource: Facet  # noqa: N815
    ownership: Facet
    symlinks: Facet
    documentation: Facet
    outputStatistics: Facet  # noqa: N815
    lifecycleStateChange: Facet  # noqa: N815
    columnLineage: ColumnLineageFacet | None  # noqa: N815


NullIsEmpty = BeforeValidator(_empty_dict_if_none)

# Stripped: IDs are parsed stripped, so a padded name would not match its own edges. A part
# of the IDs made of it (``bounds.ID_PART``: not too long to index, no control characters).
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), ID_PART]


class _Spec(BaseModel):
    # Producers add fields of their own; the raw event is kept whole anyway.
    model_config = ConfigDict(extra="allow")


class _Named(_Spec):
    """A dataset or job: unique by name within a namespace."""

    namespace: Text
    name: Text
    facets: Annotated[dict[str, Any], NullIsEmpty] = Field(default_factory=dict)

    @property
    def qualified(self) -> str:
        return f"{self.namespace}/{self.name}"


class Dataset(_Named):
    facets: Annotated[DatasetFacets, NullIsEmpty] = Field(default_factory=dict)

    @property
    def source_id(self) -> str:
        return format_id("source", self.qualified)

    def all_facets(self) -> dict[str, Any]:
        return dict(self.facets)


class InputDataset(Dataset):
    inputFacets: Annotated[DatasetFacets, NullIsEmpty] = Field(default_factory=dict)  # noqa: N815

    def all_facets(self) -> dict[str, Any]:
        return {**self.facets, **self.inputFacets}


class OutputDataset(Dataset):
    outputFacets: Annotated[DatasetFacets, NullIsEmpty] = Field(default_factory=dict)  # noqa: N815

    def all_facets(self) -> dict[str, Any]:
        return {**self.facets, **self.outputFacets}


class Job(_Named):
    facets: Annotated[JobFacets, NullIsEmpty] = Field(default_factory=dict)

    @property
    def id(self) -> str:
        return format_id("job", self.qualified)


class Run(_Spec):
    runId: Text  # noqa: N815
    facets: Annotated[RunFacets, NullIsEmpty] = Field(default_factory=dict)

    @property
    def id(self) -> str:
        return format_id("run", self.runId)


Inputs = Annotated[list[InputDataset], BeforeValidator(_empty_list_if_none)]
Outputs = Annotated[list[OutputDataset], BeforeValidator(_empty_list_if_none)]


class BaseEvent(_Spec):
    # ISO 8601 text, in UTC and not in the future (producers' clocks may be minutes ahead,
    # not days): nodes are created at it, and the latest event of a run decides its state.
    eventTime: SentDatetime  # noqa: N815
    producer: str = ""  # required by the spec; Marquez does not insist
    schemaURL: str | None = None  # noqa: N815


class RunEvent(BaseEvent):
    eventType: str | None = None  # noqa: N815
    run: Run
    job: Job
    inputs: Inputs = Field(default_factory=list)
    outputs: Outputs = Field(default_factory=list)

    @field_validator("eventType", mode="before")
    @classmethod
    def _state(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        if not isinstance(value, str) or value.upper() not in STATES:
            raise ValueError(f"must be one of {', '.join(STATES)} (got {value!r})")
        return value.upper()

    @property
    def subject(self) -> str:
        return self.run.id


class DatasetEvent(BaseEvent):
    dataset: Dataset

    @property
    def subject(self) -> str:
        return self.dataset.source_id


class JobEvent(BaseEvent):
    job: Job
    inputs: Inputs = Field(default_factory=list)
    outputs: Outputs = Field(default_factory=list)

    @property
    def subject(self) -> str:
        return self.job.id


Event = RunEvent | DatasetEvent | JobEvent
_REQUIRED_IN_RUN_EVENT = ("run.runId", "job.namespace", "job.name")


def _event_class(raw: Mapping[str, Any]) -> type[Event]:
    # As Marquez: schemaURL says which event it is; without one it is a RunEvent.
    url = raw.get("schemaURL")
    kind = url.rsplit("/", 1)[-1] if isinstance(url, str) else ""
    return {"DatasetEvent": DatasetEvent, "JobEvent": JobEvent}.get(kind, RunEvent)


def _missing(raw: Mapping[str, Any], path: str) -> bool:
    value: Any = raw
    for part in path.split("."):
        if not isinstance(value, Mapping) or value.get(part) in (None, ""):
            return True
        value = value[part]
    return False


def _field_path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def parse_event(raw: Any, record: int | str | None = None) -> Event:
    """The typed event, or an ``IngestError`` naming each bad field (``run.runId``, …)."""
    if not isinstance(raw, Mapping):
        raise IngestError(Problem("an OpenLineage event must be a JSON object", record))
    cls = _event_class(raw)
    if cls is RunEvent:
        missing = [p for p in _REQUIRED_IN_RUN_EVENT if _missing(raw, p)]
        if missing:
            hint = "required in a RunEvent (a DatasetEvent or JobEvent says so in schemaURL)"
            raise IngestError([Problem(hint, record, path) for path in missing])
    try:
        return cls.model_validate(raw)
    except ValidationError as error:
        raise IngestError(validation_problems(error, record, _field_path)) from None


def event_key(event: Event, raw: Any) -> str:
    digest = hashlib.sha256(canonical_json(raw).encode()).hexdigest()
    return f"{event.subject}{SEPARATOR}{digest}"


def run_key_prefix(run_id: str) -> str:
    """The key prefix of every kept event of one run (``run_id`` as sent, not the node ID)."""
    return f"{format_id('run', run_id)}{SEPARATOR}"


# -- property folding ---------------------------------------------------------------------

def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return utc(value)
    try:
        return utc(datetime.fromisoformat(str(value)))
    except ValueError:
        return None


def merge_props(existing: Mapping[str, Any] | None, new: Mapping[str, Any],
                at: datetime | None) -> dict[str, Any]:
    """Fold one event's view of a node into what the graph holds.

    List-valued keys in ``_UNION_KEYS`` accumulate as sorted sets. Other keys: a value is
    set where none is; with ``at`` given, an event at least as new as ``observed_at``
    overrides (ties broken by the larger value, so arrival order never matters). With
    ``at`` None, values are only gap-filled (the node may be a manifest's).
    """
    merged = dict(existing or {})
    seen = _time(merged.get(OBSERVED))
    newer = at is not None and seen is not None and at >= seen
    for key, value in new.items():
        if value is None or value == [] or value == {}:
            continue
        old = merged.get(key)
        if key in _UNION_KEYS:
            merged[key] = _union(old, value)
        elif old is None or newer and (at > seen or canonical_json(value) > canonical_json(old)):
            merged[key] = value
    if at is not None:
        merged[OBSERVED] = max(at, seen) if seen is not None else at
    return merged


def _union(old: Any, new: list[Any]) -> list[Any]:
    """A sorted set of JSON values; what another writer left there may be any shape."""
    items = [*(old if isinstance(old, list) else [] if old is None else [old]), *new]
    by_json = {canonical_json(item): item for item in items}
    return [by_json[k] for k in sorted(by_json)]


def _state_key(state: str, at: datetime) -> tuple[bool, datetime, int, str]:
    return (state in TERMINAL, at, _STATE_RANK[state], state)


def fold_run(existing: Mapping[str, Any] | None, event: RunEvent) -> dict[str, Any]:
    """The run's properties after one more event (see the module docstring)."""
    at = event.eventTime
    facets = event.run.facets
    new: dict[str, Any] = {
        "job": event.job.id,
        "producer": event.producer or None,
        "facets": sorted(facets),
        **_run_facet_props(facets),
    }
    merged = merge_props(existing, new, at)
    state = event.eventType
    if state in _STATE_RANK:
        current, current_at = merged.get("status"), _time(merged.get("status_time"))
        if (current not in _STATE_RANK or current_at is None
                or _state_key(state, at) > _state_key(current, current_at)):
            merged["status"], merged["status_time"] = state, at
        if state == "START":
            started = _time(merged.get("started_at"))
            merged["started_at"] = at if started is None else min(started, at)
        if state in TERMINAL:
            ended = _time(merged.get("ended_at"))
            merged["ended_at"] = at if ended is None else max(ended, at)
    return merged


def _get(facets: Mapping[str, Any], name: str, *path: str) -> Any:
    value: Any = facets.get(name)
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _text(value: Any) -> str | None:
    """Facets are free-form: keep a value only where it is the string the field needs."""
    return value if isinstance(value, str) and value else None


def _run_facet_props(facets: Mapping[str, Any]) -> dict[str, Any]:
    parent_run = _get(facets, "parent", "run", "runId")
    parent_ns, parent_name = _get(facets, "parent", "job", "namespace"), _get(
        facets, "parent", "job", "name")
    engine = " ".join(str(v) for v in (_get(facets, "processing_engine", "name"),
                                       _get(facets, "processing_engine", "version")) if v)
    return {
        "nominal_start_time": _get(facets, "nominalTime", "nominalStartTime"),
        "nominal_end_time": _get(facets, "nominalTime", "nominalEndTime"),
        "parent_run": format_id("run", parent_run) if isinstance(parent_run, str) else None,
        "parent_job": (format_id("job", f"{parent_ns}/{parent_name}")
                       if isinstance(parent_ns, str) and isinstance(parent_name, str) else None),
        "error_message": _get(facets, "errorMessage", "message"),
        "processing_engine": engine or None,
    }


def _job_props(job: Job) -> dict[str, Any]:
    facets = job.facets
    return {
        "namespace": job.namespace,
        "job_type": _text(_get(facets, "jobType", "jobType")),
        "processing_type": _get(facets, "jobType", "processingType"),
        "integration": _get(facets, "jobType", "integration"),
        "description": _get(facets, "documentation", "description"),
        "sql": _get(facets, "sql", "query"),
        "source_code_url": _get(facets, "sourceCodeLocation", "url"),
        "facets": sorted(facets),
    }


def _source_props(dataset: Dataset) -> dict[str, Any]:
    facets = dataset.facets
    owners = _get(facets, "ownership", "owners")
    owner = owners[0].get("name") if isinstance(owners, list) and owners and isinstance(
        owners[0], Mapping) else None
    identifiers = _get(facets, "symlinks", "identifiers")
    symlinks = [f"{i.get('namespace')}/{i.get('name')}" for i in identifiers or []
                if isinstance(i, Mapping)] if isinstance(identifiers, list) else []
    return {
        "namespace": dataset.namespace,
        "uri": _text(_get(facets, "dataSource", "uri")),
        "owner": _text(owner),
        "description": _text(_get(facets, "documentation", "description")),
        "symlinks": symlinks,
        "facets": sorted(facets),
    }


def _version_props(dataset: Dataset) -> dict[str, Any]:
    facets = dataset.all_facets()
    fields = _get(facets, "schema", "fields")
    columns = [{"name": f.get("name"), "type": f.get("type")} for f in fields
               if isinstance(f, Mapping)] if isinstance(fields, list) else []
    row_count = _get(facets, "outputStatistics", "rowCount")
    return {
        "namespace": dataset.namespace,
        "columns": columns or None,
        "schema_hash": hashlib.sha256(canonical_json(columns).encode()).hexdigest()[:16]
        if columns else None,
        "row_count": row_count if isinstance(row_count, int) else None,
        "size_bytes": _get(facets, "outputStatistics", "size"),
        "lifecycle_state": _get(facets, "lifecycleStateChange", "lifecycleStateChange"),
        "facets": sorted(facets),
    }


# -- versions and IDs ---------------------------------------------------------------------

def _version_facet(dataset: Dataset) -> str | None:
    version = _get(dataset.all_facets(), "version", "datasetVersion")
    if isinstance(version, int | float):
        version = str(version)
    return version if isinstance(version, str) and version.strip() else None


def dataset_version_id(dataset: Dataset, version: str) -> str:
    return format_id("dataset", dataset.qualified, escape_at(version))


def is_model(dataset: Dataset) -> bool:
    kind = _get(dataset.facets, "datasetType", "datasetType")
    return isinstance(kind, str) and kind.upper() == "MODEL"


def _model_family(dataset: Dataset) -> str:
    return format_id("model", escape_at(dataset.name))


def _model_version_id(dataset: Dataset, version: str) -> str:
    return format_id("model", escape_at(dataset.name), escape_at(version))


def _column_lineage(output: Dataset) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace, name) of each input → the edge properties of its DERIVED_FROM."""
    facet = output.facets.get("columnLineage")
    found: dict[tuple[str, str], dict[str, Any]] = {}
    if not isinstance(facet, Mapping):
        return found

    def entry(item: Any, extra: Mapping[str, Any]) -> tuple[tuple[str, str], dict] | None:
        if not isinstance(item, Mapping):
            return None
        namespace, name = item.get("namespace"), item.get("name")
        if not (isinstance(namespace, str) and namespace and isinstance(name, str) and name):
            return None
        detail = {"field": item.get("field"), "transformations": item.get("transformations"),
                  **extra}
        return (namespace, name), {k: v for k, v in detail.items() if v not in (None, [], "")}

    fields = facet.get("fields")
    for out_field, spec in (fields.items() if isinstance(fields, Mapping) else ()):
        if not isinstance(spec, Mapping):
            continue
        extra = {k: spec[k] for k in ("transformationType", "transformationDescription")
                 if spec.get(k)}
        items = spec.get("inputFields")  # a list: parse_event refused any other shape
        for item in items if isinstance(items, list) else ():
            made = entry(item, extra)
            if made:
                props = found.setdefault(made[0], {"fields": {}, "dataset": []})
                props["fields"].setdefault(out_field, []).append(made[1])
    dataset_level = facet.get("dataset")
    for item in dataset_level if isinstance(dataset_level, list) else []:
        made = entry(item, {})
        if made:
            found.setdefault(made[0], {"fields": {}, "dataset": []})["dataset"].append(made[1])
    return found


def merge_column_props(*props: Mapping[str, Any] | None) -> dict[str, Any]:
    """Column-lineage edge properties as sets: the union, sorted, whatever the order."""
    fields: dict[str, dict[str, Any]] = {}
    dataset: dict[str, Any] = {}
    for one in props:
        for out_field, entries in ((one or {}).get("fields") or {}).items():
            for item in entries:
                fields.setdefault(out_field, {})[canonical_json(item)] = item
        for item in (one or {}).get("dataset") or []:
            dataset[canonical_json(item)] = item
    merged: dict[str, Any] = {"fields": {f: [e[k] for k in sorted(e)]
                                         for f, e in sorted(fields.items())}}
    if dataset:
        merged["dataset"] = [dataset[k] for k in sorted(dataset)]
    return merged


# -- the mapper ---------------------------------------------------------------------------

def _props(existing: Mapping[str, Node], node_id: str) -> dict[str, Any] | None:
    node = existing.get(node_id)
    return None if node is None else node.properties


@dataclass(slots=True)
class _RunMapping:
    """Everything one RunEvent writes, built from one event and one read of the graph."""

    event: RunEvent
    store: GraphStore
    actor: str = SOURCE
    batch: Batch = field(default_factory=Batch)
    # Later readers' placeholders this read takes over (``_join_later_readers``).
    joins: list[tuple[Node, str]] = field(default_factory=list)

    def node(self, kind: str, node_id: str, props: dict[str, Any], *,
             created_at: datetime | None = None) -> None:
        self.batch.nodes.append(Node.from_id(node_id, kind=kind,
                                             created_at=created_at or self.event.eventTime,
                                             properties=props))

    def edge(self, source: str, edge_type: str, target: str, **props: Any) -> None:
        self.batch.edges.append(Edge(source=source, type=edge_type, target=target,
                                     properties=props))

    def build(self) -> Batch:
        event, at = self.event, self.event.eventTime
        run_id, job_id = event.run.id, event.job.id
        outputs = list({d.qualified: d for d in event.outputs}.values())
        data_outputs = [d for d in outputs if not is_model(d)]
        model_outputs = [d for d in outputs if is_model(d)]
        lineage = {d.qualified: _column_lineage(d) for d in data_outputs}
        inputs = self._inputs(lineage)
        data_inputs = [d for d in inputs if not is_model(d)]
        model_inputs = [d for d in inputs if is_model(d)]

        families = {_model_family(d) for d in model_outputs + model_inputs}
        wanted = [job_id, run_id, *{d.source_id for d in data_inputs + data_outputs},
                  *self._candidate_ids(data_outputs, dataset_version_id),
                  *self._candidate_ids(model_outputs, _model_version_id), *families]
        existing = self.store.get(wanted)
        consumed, wrote = self._run_neighbours(run_id in existing)
        out_ids = self._output_ids(data_outputs, dataset_version_id, wrote, existing)
        model_ids = self._output_ids(model_outputs, _model_version_id, wrote, existing)
        written = {n.id for versions in wrote.values() for n in versions} | set(out_ids.values())
        in_ids, owned = self._resolve_inputs(data_inputs, consumed, written, set(out_ids))
        read_models = self._resolve_models(model_inputs)

        self.node("Job", job_id, merge_props(_props(existing, job_id), _job_props(event.job),
                                             at))
        run_props = fold_run(_props(existing, run_id), event)
        run_props = merge_props(run_props, {"model_inputs": sorted(read_models.values())}, None)
        self.node("TrainingRun", run_id, run_props)
        self.edge(run_id, "RUN_OF", job_id)

        for dataset in {d.qualified: d for d in data_inputs + data_outputs}.values():
            self.node("DataSource", dataset.source_id, merge_props(
                _props(existing, dataset.source_id), _source_props(dataset), None))
        for dataset in data_inputs:
            version_id = in_ids[dataset.qualified]
            if version_id in written:
                continue  # a facet naming the version this run writes: not a read
            if version_id in owned:
                # Gap-filled, with no time: the reader's view never overrides a writer's.
                self.node("DatasetVersion", version_id, merge_props(
                    _props(existing, version_id), _version_props(dataset), None))
            self.edge(version_id, "VERSION_OF", dataset.source_id)
            self.edge(run_id, "CONSUMED", version_id)
        for dataset in data_outputs:
            version_id = out_ids[dataset.qualified]
            self.node("DatasetVersion", version_id, merge_props(
                _props(existing, version_id), _version_props(dataset), at),
                created_at=self._first_seen(version_id, existing))
            self.edge(version_id, "VERSION_OF", dataset.source_id)
            self.edge(version_id, "PRODUCED_BY", run_id)
        for placeholder, ours in self.joins:
            self._replace(placeholder, ours, None)
        self._derived_from(data_outputs, out_ids, in_ids, lineage, existing)
        self._models(model_outputs, model_ids, model_inputs, read_models, existing)
        self._adopt_readers(data_outputs, out_ids, existing)
        self.batch.edges = _merged_edges(self.batch.edges)
        return self.batch

    # -- placeholder versions ---------------------------------------------------------------
    # A version no facet names is a placeholder the graph makes up (the run's ID). When the
    # real version becomes known — a later event of the writing run names it, or the run
    # that wrote what a reader's placeholder stands for arrives late — the placeholder is
    # replaced: its edges move to the real version, and it is archived with ``replaced_by``
    # (never deleted, as retention archives; walks skip archived nodes). So the graph does
    # not depend on whether START or COMPLETE arrived first.

    def _candidate_ids(self, outputs: list[Dataset], make_id: Callable[[Dataset, str], str],
                       ) -> list[str]:
        """The IDs an output may take: its facet's version, and the run's placeholder."""
        run_id = self.event.run.runId
        return [i for d in outputs for v in {_version_facet(d), run_id} if v is not None
                for i in [make_id(d, v)]]

    def _output_ids(self, outputs: list[Dataset], make_id: Callable[[Dataset, str], str],
                    wrote: Mapping[str, list[Node]], existing: dict[str, Node],
                    ) -> dict[str, str]:
        """Output name → the version this event writes: the facet's; else the newest one
        this run already wrote of it (a late START without the facet that a COMPLETE had);
        else the placeholder. A placeholder this run wrote, now named, is replaced."""
        run_id = self.event.run.runId
        ids: dict[str, str] = {}
        for dataset in outputs:
            placeholder = make_id(dataset, run_id)
            earlier = wrote.get(placeholder.rpartition("@")[0], [])
            facet = _version_facet(dataset)
            if facet is None:
                named = [n for n in earlier if n.id != placeholder]
                if not named:
                    ids[dataset.qualified] = placeholder
                    continue
                newest = max(named, key=lambda n: (n.created_at, n.id))
                existing[newest.id] = newest  # its properties, to fold this event into
                ids[dataset.qualified] = newest.id
                continue
            ids[dataset.qualified] = make_id(dataset, facet)
            old = next((n for n in earlier if n.id == placeholder), None)
            if old is not None and old.id != ids[dataset.qualified]:
                self._replace(old, ids[dataset.qualified], existing)
        return ids

    def _adopt_readers(self, outputs: list[Dataset], out_ids: Mapping[str, str],
                       existing: Mapping[str, Node]) -> None:
        """Readers that arrived before this writer: a version of an output's source that no
        run produced, named after a run that consumed it (its placeholder for what it
        read), created at or after this run's version — the reader read this version."""
        written_at = {d.source_id: self._first_seen(out_ids[d.qualified], existing)
                      for d in outputs}
        if not written_at:
            return
        own = set(out_ids.values())
        candidates = {hop.node.id: (hop.origin, hop.node) for hop in self.store.family_versions(
            list(written_at), count=None, newest=False, since=min(written_at.values()))
            if hop.node.id not in own and not replaced(hop.node)
            and hop.node.created_at >= written_at[hop.origin]}
        by_source = {d.source_id: d for d in outputs}
        found = {i: (by_source[source], node) for i, (source, node) in candidates.items()}
        for node in self._reader_placeholders(found):
            self._replace(node, out_ids[found[node.id][0].qualified], None)

    def _reader_placeholders(self, candidates: Mapping[str, tuple[Dataset, Node]],
                             ) -> list[Node]:
        """The candidate versions (ID → its dataset and node) that are another run's
        placeholder for what it read: no run produced them, and they are named after a run
        that consumed them."""
        if not candidates:
            return []
        produced: set[str] = set()
        readers: dict[str, set[str]] = {}
        for hop in self.store.expand(list(candidates), Direction.BOTH,
                                     edge_types=["CONSUMED", "PRODUCED_BY"]):
            if hop.edge.type == "PRODUCED_BY" and hop.edge.source == hop.origin:
                produced.add(hop.origin)
            elif hop.edge.type == "CONSUMED" and hop.node.kind == "TrainingRun":
                readers.setdefault(hop.origin, set()).add(hop.node.name)
        run_id = self.event.run.runId
        return [node for candidate, (dataset, node) in sorted(candidates.items())
                if candidate not in produced and any(
                    candidate in (dataset_version_id(dataset, r),
                                  dataset_version_id(dataset, f"before-{r}"))
                    for r in readers.get(candidate, ()) if r != run_id)]

    def _replace(self, old: Node, real: str, existing: dict[str, Node] | None) -> None:
        """Move ``old``'s edges to ``real`` and archive ``old``. Given ``existing`` (the same
        run's placeholder, replaced before its outputs are written), the real version takes
        the placeholder's properties, as an earlier event's view, and its creation time; a
        reader's placeholder gives the writer's version nothing."""
        for hop in self.store.expand([old.id], Direction.BOTH):
            edge = hop.edge
            source = real if edge.source == old.id else edge.source
            target = real if edge.target == old.id else edge.target
            if source != target:
                self.edge(source, edge.type, target, **edge.properties)
        self.node(old.kind, old.id, {**old.properties, "archived": True, REPLACED_BY: real},
                  created_at=old.created_at)
        if existing is not None:
            kept = {k: v for k, v in old.properties.items() if k not in _REPLACED_KEYS}
            current = existing.get(real)
            props = merge_props(current.properties if current else None, kept,
                                _time(kept.get(OBSERVED)))
            created = min(old.created_at, current.created_at) if current else old.created_at
            existing[real] = Node.from_id(real, kind=old.kind, created_at=created,
                                          properties=props)
        self.batch.audit.append(AuditEntry(
            action="ingest.openlineage.replace", target=old.id, actor=self.actor,
            before={"id": old.id}, after={REPLACED_BY: real}))

    def _first_seen(self, node_id: str, existing: Mapping[str, Node]) -> datetime:
        node = existing.get(node_id)
        return node.created_at if node is not None and node.created_at else self.event.eventTime

    def _inputs(self, lineage: dict[str, dict[tuple[str, str], Any]]) -> list[Dataset]:
        inputs: dict[str, Dataset] = {d.qualified: d for d in self.event.inputs}
        for per_input in lineage.values():
            for namespace, name in per_input:
                inputs.setdefault(f"{namespace}/{name}", Dataset(namespace=namespace, name=name))
        return list(inputs.values())

    def _run_neighbours(self, run_exists: bool,
                        ) -> tuple[dict[str, str], dict[str, list[Node]]]:
        """What this run already read (source name → version ID) and wrote (the versions,
        by ID without the version part); replaced placeholders are no longer either."""
        consumed: dict[str, str] = {}
        wrote: dict[str, list[Node]] = {}
        if not run_exists:
            return consumed, wrote
        for hop in self.store.expand([self.event.run.id], Direction.BOTH,
                                     edge_types=["CONSUMED", "PRODUCED_BY"]):
            if replaced(hop.node):
                continue
            if hop.edge.type == "PRODUCED_BY":
                wrote.setdefault(hop.node.id.rpartition("@")[0], []).append(hop.node)
            elif hop.node.kind == "DatasetVersion":
                consumed[hop.node.name] = hop.node.id
        return consumed, wrote

    def _resolve_inputs(self, inputs: list[Dataset], consumed: dict[str, str],
                        written: set[str], written_names: set[str],
                        ) -> tuple[dict[str, str], set[str]]:
        """Input name → version ID, and the IDs this read names itself (a version facet, or
        the run's own fallback): only those may take the reader's view of the dataset; a
        version found in the graph is another run's and is left as it is."""
        resolved: dict[str, str] = {}
        owned: set[str] = set()
        pending: list[Dataset] = []
        for dataset in inputs:
            version = _version_facet(dataset)
            if version is not None:
                resolved[dataset.qualified] = dataset_version_id(dataset, version)
                owned.add(resolved[dataset.qualified])
            elif dataset.qualified in consumed:
                resolved[dataset.qualified] = consumed[dataset.qualified]
            else:
                pending.append(dataset)
        if not pending:
            return resolved, owned | self._fallbacks(inputs)
        newest = self._nearest_versions([d.source_id for d in pending], newest=True,
                                        until=self.event.eventTime, skip=written)
        run_id = self.event.run.runId
        unknown: list[Dataset] = []
        for dataset in pending:
            fallback = f"before-{run_id}" if dataset.qualified in written_names else run_id
            found = newest.get(dataset.source_id)
            resolved[dataset.qualified] = found.id if found else dataset_version_id(
                dataset, fallback)
            if not found:
                unknown.append(dataset)
        self._join_later_readers(unknown, resolved, written)
        return resolved, owned | self._fallbacks(inputs)

    def _join_later_readers(self, unknown: list[Dataset], resolved: Mapping[str, str],
                            written: set[str]) -> None:
        """Readers of a dataset no known run wrote share the first reader's placeholder,
        as they do when their events arrive in time order. A reader whose event arrives
        after a later reader's takes that one's placeholder over — when it is the next
        version of the source after this read — so arrival order changes nothing."""
        if not unknown:
            return
        at = self.event.eventTime
        later = self._nearest_versions([d.source_id for d in unknown], newest=False,
                                       since=at, skip=written)
        by_source = {d.source_id: d for d in unknown}
        candidates = {node.id: (by_source[source], node) for source, node in later.items()}
        for node in self._reader_placeholders(candidates):
            self.joins.append((node, resolved[candidates[node.id][0].qualified]))

    def _nearest_versions(self, sources: list[str], *, newest: bool, skip: set[str],
                          since: datetime | None = None, until: datetime | None = None,
                          ) -> dict[str, Node]:
        """Source ID → its dataset version created last by ``until`` (``newest``), or first
        after ``since`` (not at it), leaving out ``skip`` and replaced placeholders. Read a
        few at a time, nearest first: a source versioned hourly for years has tens of
        thousands of versions, and this runs for every event naming it."""
        found: dict[str, Node] = {}
        passed: set[str] = set()  # read and left out: not read again
        pending = sources
        while pending:
            rows = self.store.family_versions(pending, count=_NEAREST, newest=newest,
                                              since=since, until=until, exclude=passed)
            read = Counter(row.origin for row in rows)
            rows.sort(key=lambda row: (row.node.created_at, row.node.id), reverse=newest)
            for row in rows:
                node = row.node
                if row.origin in found:
                    continue
                if (node.id in skip or replaced(node)
                        or since is not None and node.created_at <= since):
                    passed.add(node.id)
                else:
                    found[row.origin] = node
            pending = [s for s in pending if s not in found and read[s] == _NEAREST]
        return found

    def _fallbacks(self, inputs: list[Dataset]) -> set[str]:
        run_id = self.event.run.runId
        return {dataset_version_id(d, v) for d in inputs for v in (run_id, f"before-{run_id}")}

    def _resolve_models(self, inputs: list[Dataset]) -> dict[str, str]:
        """Model inputs: name → the version read (from its facet, else the newest known),
        or the family ID when no version is known."""
        resolved: dict[str, str] = {}
        for dataset in inputs:
            version = _version_facet(dataset)
            if version is not None:
                resolved[dataset.qualified] = _model_version_id(dataset, version)
                continue
            newest = self._newest_model(escape_at(dataset.name))
            resolved[dataset.qualified] = newest.id if newest else _model_family(dataset)
        return resolved

    def _newest_model(self, name: str) -> Node | None:
        """The newest version of a model in version order that no real version replaced,
        read back a page at a time. Placeholders are named after run IDs, which sort after
        every number: a model trained thousands of times has thousands of them on top."""
        return next((node for node in self.store.all_versions("ModelVersion", name,
                                                              page=_MODEL_PAGE)
                     if not replaced(node)), None)

    def _derived_from(self, outputs: list[Dataset], out_ids: dict[str, str],
                      in_ids: dict[str, str], lineage: dict[str, dict[tuple[str, str], Any]],
                      existing: Mapping[str, Node]) -> None:
        kept_ids = [out_ids[d.qualified] for d in outputs
                    if lineage[d.qualified] and out_ids[d.qualified] in existing]
        before = {(hop.origin, hop.node.id): hop.edge.properties
                  for hop in self.store.expand(kept_ids, Direction.UPSTREAM,
                                               edge_types=["DERIVED_FROM"])} if kept_ids else {}
        for dataset in outputs:
            source = out_ids[dataset.qualified]
            for (namespace, name), props in lineage[dataset.qualified].items():
                target = in_ids.get(f"{namespace}/{name}")  # None: a model, not data
                if target is None or target == source:
                    continue
                merged = merge_column_props(before.get((source, target)), props)
                self.edge(source, "DERIVED_FROM", target, **merged)

    def _models(self, outputs: list[Dataset], model_ids: dict[str, str], inputs: list[Dataset],
                read_models: dict[str, str], existing: Mapping[str, Node]) -> None:
        run_id = self.event.run.id
        read_versions = [m for m in read_models.values() if "@" in m.partition(":")[2]]
        for dataset in outputs:
            version_id = model_ids[dataset.qualified]
            props = {"namespace": dataset.namespace,
                     "artifact_uri": _text(_get(dataset.facets, "dataSource", "uri")),
                     "facets": sorted(dataset.all_facets())}
            self.node("ModelVersion", version_id, merge_props(_props(existing, version_id),
                                                              props, None),
                      created_at=self._first_seen(version_id, existing))
            self.edge(version_id, "PRODUCED_BY", run_id)
            self._family(dataset, version_id, existing)
            for base in read_versions:
                if base != version_id:
                    self.edge(version_id, "FINE_TUNED_FROM", base)
        if outputs:
            for dataset in inputs:
                base = read_models[dataset.qualified]
                if base in read_versions and base not in existing:
                    self.node("ModelVersion", base, {"namespace": dataset.namespace})
                    self._family(dataset, base, existing)

    def _family(self, dataset: Dataset, version_id: str, existing: Mapping[str, Node]) -> None:
        family = _model_family(dataset)
        # A provider's pinned snapshot is a ModelVersion with no version part: no family.
        if family in existing and existing[family].kind != "Model":
            return
        if family not in existing:
            self.node("Model", family, {})
        self.edge(version_id, "VERSION_OF", family)


def _merged_edges(edges: list[Edge]) -> list[Edge]:
    """One edge per key, in first-seen order: a replaced placeholder's edges may meet the
    event's own (column lineage merges its field detail; other properties, the later's)."""
    merged: dict[tuple[str, str, str], Edge] = {}
    for edge in edges:
        before = merged.get(edge.key)
        if before is not None:
            props = (merge_column_props(before.properties, edge.properties)
                     if edge.type == "DERIVED_FROM" else {**before.properties, **edge.properties})
            edge = edge.model_copy(update={"properties": props})
        merged[edge.key] = edge
    return list(merged.values())


def _static_batch(event: DatasetEvent | JobEvent, store: GraphStore) -> Batch:
    """A DatasetEvent or JobEvent: metadata only, no run and so no versions or edges."""
    batch = Batch()
    datasets = [event.dataset] if isinstance(event, DatasetEvent) else [
        *event.inputs, *event.outputs]
    ids = [d.source_id for d in datasets]
    job_id = event.job.id if isinstance(event, JobEvent) else None
    existing = store.get(ids + ([job_id] if job_id else []))
    # A DatasetEvent is the dataset's own metadata: the latest wins, as in Marquez (a run's
    # or a job's view of it only fills gaps: the source may be a manifest's).
    at = event.eventTime if isinstance(event, DatasetEvent) else None
    for dataset in {d.qualified: d for d in datasets}.values():
        batch.nodes.append(Node(kind="DataSource", name=dataset.qualified,
                                created_at=event.eventTime, properties=merge_props(
                                    _props(existing, dataset.source_id), _source_props(dataset),
                                    at)))
    if isinstance(event, JobEvent):
        props = {**_job_props(event.job), "inputs": [d.source_id for d in event.inputs],
                 "outputs": [d.source_id for d in event.outputs]}
        batch.nodes.append(Node(kind="Job", name=event.job.qualified,
                                created_at=event.eventTime, properties=merge_props(
                                    _props(existing, event.job.id), props, event.eventTime)))
    return batch


def event_to_batch(event: Any, store: GraphStore, *, actor: str = SOURCE,
                   record: int | str | None = None) -> Batch:
    """Map one raw event (a parsed JSON object) to the batch that writes it; pure
    get → transform, nothing is written here. Raises ``IngestError`` naming bad fields."""
    parsed = parse_event(event, record)
    kept = Record(collection=COLLECTION, key=event_key(parsed, event), payload=event,
                  at=parsed.eventTime)
    # Read before the mapping reads the graph: what it folds into stored nodes (a run's
    # state, a placeholder's replacement) is judged on what it read. Another process's
    # event landing first sends the event back to be mapped again, onto that one.
    batch = Batch(records=[kept], size=1, metadata_seen=store.metadata_seq(),
                  remap=lambda: event_to_batch(event, store, actor=actor, record=record))
    if store.records(COLLECTION, key=kept.key, limit=1):
        return batch  # already kept: a re-send changes nothing
    try:
        mapped = (_RunMapping(parsed, store, actor).build() if isinstance(parsed, RunEvent)
                  else _static_batch(parsed, store))
    except ValidationError as error:  # a name or version the graph's IDs cannot hold
        raise IngestError(Problem(describe_validation_error(error), record)) from None
    except InvalidId as error:  # an ID made of them too long (``schema.bounds``)
        raise IngestError(Problem(str(error), record)) from None
    batch.extend(mapped)
    batch.audit.append(AuditEntry(
        action="ingest.openlineage", target=parsed.subject, actor=actor,
        after={"key": kept.key, "kind": type(parsed).__name__,
               "eventType": getattr(parsed, "eventType", None)}))
    return batch


register_mapper(SOURCE, event_to_batch)


# -- loading ------------------------------------------------------------------------------

# One writer at a time per process: the mapper reads the graph before the write, so two
# events of one run mapped concurrently would each fold the run without the other. Across
# processes, the store refuses the second (``Batch.metadata_seen``) and it is mapped again.
_WRITE_LOCK = threading.Lock()


def problems_of(error: Exception, record: int | str | None = None) -> list[Problem]:
    if isinstance(error, IngestError):
        return error.problems
    if isinstance(error, SchemaError):
        return [Problem(error.message, record, error.where)]
    return [Problem(str(error), record)]


def ingest_event(store: GraphStore, event: Any, *, actor: str = SOURCE,
                 record: int | str | None = None) -> UpsertResult:
    """Map and write one event in one transaction. A rejected event is dead-lettered (so
    ``deadletter replay`` can retry it) and the error re-raised."""
    try:
        with _WRITE_LOCK:
            return event_to_batch(event, store, actor=actor, record=record).write(store)
    except (IngestError, SchemaError, InvalidId) as error:
        store.upsert(records=[dead_letter(SOURCE, event, problems_of(error, record))])
        raise


@dataclass(slots=True)
class Failure:
    index: int
    problems: list[Problem]

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "reason": "; ".join(str(p) for p in self.problems),
                "problems": [p.to_json() for p in self.problems]}


@dataclass(slots=True)
class BatchOutcome:
    received: int = 0
    succeeded: int = 0
    failures: list[Failure] = field(default_factory=list)
    # A failure of the store's, not of an event (the database unreachable, or refusing a
    # write): the batch stopped there, and ``failures`` lists that event and every one
    # after it in mapping order, none written.
    stopped: bool = False
    unavailable: StoreUnavailable | None = None  # why it stopped, if the store was down


_EARLIEST = datetime.min.replace(tzinfo=UTC)


def event_time(raw: Any) -> datetime:
    """When an event happened, to map a load's events in time order; one with no readable
    ``eventTime`` (it will be refused) sorts first."""
    at = _time(raw.get("eventTime")) if isinstance(raw, Mapping) else None
    return at or _EARLIEST


def ingest_events(store: GraphStore, events: Iterable[Any], *,
                  actor: str = SOURCE) -> BatchOutcome:
    """Each event in its own transaction (the OpenLineage batch rule), mapped in
    ``eventTime`` order (a reader then finds the version its writer wrote, whatever order
    the array lists them in): failures are dead-lettered and reported by index; the rest
    are written."""
    ordered = sorted(enumerate(events), key=lambda item: event_time(item[1]))
    outcome = BatchOutcome(received=len(ordered))
    for position, (index, event) in enumerate(ordered):
        try:
            ingest_event(store, event, actor=actor, record=index)
        except (IngestError, SchemaError, InvalidId) as error:
            outcome.failures.append(Failure(index, problems_of(error, index)))
            continue
        except (MetadataMoved, StageMoved) as error:  # the store's contention: not its fault
            outcome.failures.append(Failure(index, [Problem(
                f"not written: {error}; other writers kept landing first: send it again",
                index)]))
            continue
        except Exception as error:
            # Each event is its own transaction, so those before it are kept: stop, and
            # say which were not written (a bare 500 left the caller to guess), rather
            # than try the rest against a store that fails.
            if isinstance(error, StoreUnavailable):
                outcome.unavailable = error  # the caller says so: no traceback
            else:
                log.exception("OpenLineage batch stopped at event %s", index)
            outcome.stopped = True
            outcome.failures += [Failure(i, [Problem(
                "not written: the store failed while writing this batch "
                f"(at event {index}); send it again", i)]) for i, _ in ordered[position:]]
            break
        outcome.succeeded += 1
    outcome.failures.sort(key=lambda failure: failure.index)
    return outcome


@dataclass(slots=True)
class _EventBatch(Batch):
    """One event's batch for a file load: if the store still refuses it at write time, the
    event is dead-lettered instead of stopping the load."""

    event: Any = None
    number: int = 0
    where: int | str | None = None
    rejected: list[Failure] = field(default_factory=list)

    def write(self, store: GraphStore) -> UpsertResult:
        try:
            return Batch.write(self, store)
        except SchemaError as error:
            problems = problems_of(error, self.where)
            self.rejected.append(Failure(self.number, problems))
            return store.upsert(records=[dead_letter(SOURCE, self.event, problems)])


@dataclass(frozen=True, slots=True)
class FileEvent:
    """One event read from a file; ``where`` names it (``file.json``, ``f.json[3]``,
    ``f.ndjson:7``); ``problems`` say why it is not JSON the graph can keep, and then
    ``payload`` is its JSON text."""

    where: str
    payload: Any
    problems: list[Problem] | None = None


def read_events(path: Path) -> list[FileEvent]:
    """A file holding one JSON event, a JSON array of events, or NDJSON (one per line). A
    file that is one JSON document and does not parse is one bad event: its lines are no
    events of their own (a pretty-printed event's are fragments no replay could load).
    Gzipped or not, as outcome files; a file that is not UTF-8 (or not valid gzip) is an
    ``IngestError`` naming it."""
    text = read_text(path)
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as error:
        lines = list(ndjson_lines(text))
        if not _json_lines([line for _, line in lines]):
            at = f"line {error.lineno}, column {error.colno}: {error.msg}"
            return [FileEvent(path.name, text, [Problem(f"malformed JSON at {at}", path.name)])]
        return [_line_event(f"{path.name}:{number}", line) for number, line in lines]
    except (RecursionError, ValueError) as error:
        # Too deep, or a number too long to read: that item's text cannot be cut out of the
        # file, so the file is refused, naming the item.
        at = unreadable_path(text)
        if at and type(at[0]) is int:  # an item of a top-level array
            where, at = f"{path.name}[{at[0]}]", at[1:]
        else:
            where = path.name
        return [FileEvent(path.name, text, [Problem(unreadable(error), where, field_path(at))])]
    strings = has_surrogate_escape(text)  # once a file, not once an event
    if isinstance(whole, list):
        return [_value_event(f"{path.name}[{i}]", event, strings)
                for i, event in enumerate(whole)]
    return [_value_event(path.name, whole, strings)]


def _json_lines(lines: list[str]) -> bool:
    """Whether a file's non-blank lines are NDJSON: the first is a JSON value of its own, or,
    the first being the broken one, half of them are. A document spanning lines opens with
    a line that is no value of its own, and hardly any of its lines are one."""
    if not lines:
        return False
    if _whole_value(lines[0]):
        return True
    return 2 * sum(1 for line in lines[1:] if _whole_value(line)) >= len(lines)


def _whole_value(line: str) -> bool:
    try:
        json.loads(line)
    except (RecursionError, ValueError):
        return False
    return True


def _line_event(where: str, line: str) -> FileEvent:
    try:
        return FileEvent(where, load_json(line, where))
    except json.JSONDecodeError as error:
        return FileEvent(where, line, [Problem(f"malformed JSON: {error}", where)])
    except IngestError as error:
        return FileEvent(where, line, error.problems)


def _value_event(where: str, event: Any, strings: bool) -> FileEvent:
    try:
        check_value(event, where, strings)
    except IngestError as error:
        return FileEvent(where, keepable(event), error.problems)
    return FileEvent(where, event)


def iter_batches(store: GraphStore, events: Iterable[FileEvent],
                 rejected: list[Failure]) -> Iterator[Batch]:
    """Batches for a file load, one per event, mapped as the load reaches them (so each
    sees the ones before it). A bad event yields the batch that keeps its dead letter (so
    progress still counts it) and is added to ``rejected``."""
    for number, item in enumerate(events):
        where, event = item.where, item.payload
        try:
            if item.problems:
                raise IngestError(item.problems)
            batch = event_to_batch(event, store, record=where)
        except IngestError as error:
            rejected.append(Failure(number, error.problems))
            yield Batch(records=[dead_letter(SOURCE, event, error.problems)], size=1)
            continue
        yield _EventBatch(batch.nodes, batch.edges, batch.stage_moves, batch.records,
                          batch.audit, batch.size, metadata_seen=batch.metadata_seen,
                          remap=batch.remap, event=event, number=number, where=where,
                          rejected=rejected)
