"""Inference outcome records → ``InferenceOutcome`` nodes, in batches of ~5,000 records
written with one upsert each.

A record names a bundle (``support-triage@14``; a bare name means the version in effect
in the record's environment at its timestamp) or, without one, a ``model`` and optionally a
``prompt`` and ``policy``; ``features`` lists the feature IDs the request read. A model the
graph does not know is kept, not refused: its ``ModelVersion`` is created with
``registered: false`` (shadow-AI discovery), dated by the earliest request that names it,
whatever order the records arrive in, and created only if absent (a manifest registering
it meanwhile keeps what it wrote). Any other unknown reference, a missing field
or a bad value rejects the record — and so does a model family (``fraud-detector``, a
``Model``): a request was served by one version, and nothing records which one a family
name meant then (the registry's aliases are labels, not the record's environment), so
linking one would be a guess that traces and blast radii would repeat as fact.

A record is whole (``Batch.whole_requests``): sent again for a stored request, it updates
the request's fields but may not name other references or another time — the store
refuses that inside
the write (``RequestsConflict``, read where it reads the stored requests' rollup keys, so
new requests pay nothing), and the record is refused like a bad one (``on_conflict``). A
request one batch holds twice is held to the same rule by the mapper (``_Served``): the
later record updates the fields, or, naming other references or another time, is refused.

What happens to a rejected record is the caller's choice: ``strict_batch`` (the REST
route) refuses the whole request listing every problem by record and field; the file
loader dead-letters each bad line with its reasons (``deadletter list``/``replay``) and
writes the rest. Either way nothing is dropped silently or half-written: a batch is one
transaction, its dead letters included.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import zlib
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache, partial
from pathlib import Path
from typing import Annotated, Any, BinaryIO, ClassVar, TextIO

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from lineagegraph.graph.store import GraphStore
from lineagegraph.graph.traffic import OutcomeState
from lineagegraph.schema import (
    AuditEntry,
    Edge,
    Node,
    NodeId,
    StageMove,
    bundle_id,
    parse_id,
)
from lineagegraph.schema.bounds import ID_PART, MAX_PROPERTIES_BYTES
from lineagegraph.schema.kinds import FAMILY_OF, InferenceOutcomeProps
from lineagegraph.schema.models import (
    SentDatetime,
    check_environment,
    check_properties_size,
    utc,
)

from .batch import Batch, IngestError, Problem, validation_problems
from .bodies import (
    check_value,
    decode,
    json_flaw,
    keepable,
    load_json,
    ndjson_lines,
    parse_json,
    utf8_flaw,
)
from .deadletter import dead_letter, register_mapper
from .refs import ref_id

SOURCE = "outcomes"
BATCH_SIZE = 5000
# A JSON-array file is parsed whole: 64 Mi characters are ~250k records, ~300 MB parsed.
# NDJSON files stream, whatever their size.
MAX_ARRAY_CHARS = 64 * 2**20
_LONGEST_INT = sys.get_int_max_str_digits()  # digits Python converts (0: no limit)

Item = tuple[int | str, Any]  # (record: line number or index, payload: a JSON text or value)


class OutcomeRecord(InferenceOutcomeProps):
    """One inference outcome as logged; fields beyond these are kept as properties."""

    # allow_inf_nan: a number field refuses NaN and ±inf, also when sent as text ("NaN").
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, allow_inf_nan=False)
    REFERENCES: ClassVar[frozenset[str]] = frozenset(
        {"request_id", "timestamp", "bundle", "model", "prompt", "policy", "features"})

    # Stripped, as IDs are parsed: " req-1 " stored as is could not be named again.
    request_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), ID_PART]
    timestamp: SentDatetime  # in UTC, and not in the future: it is the node's created_at
    # As a StageMove's: " production" would count as traffic no stage of production matches.
    environment: Annotated[str, AfterValidator(check_environment)]  # an ID part too
    bundle: str | None = None
    model: str | None = None
    prompt: str | None = None
    policy: str | None = None
    features: list[str] = Field(default_factory=list)

    def properties(self) -> dict[str, Any]:
        # With a bundle, a model/prompt/policy also given is kept as written, not linked.
        skip = _NOT_PROPERTIES_WITHOUT_BUNDLE if self.bundle is None else _NOT_PROPERTIES
        return self.model_dump(mode="json", exclude=skip, exclude_none=True)


_NOT_PROPERTIES_WITHOUT_BUNDLE = set(OutcomeRecord.REFERENCES)
_NOT_PROPERTIES = _NOT_PROPERTIES_WITHOUT_BUNDLE - {"model", "prompt", "policy"}


@dataclass(slots=True)
class Mapped:
    batch: Batch
    rejected: list[tuple[int | str, Any, list[Problem]]] = field(default_factory=list)
    # node ID → what each record written said served it: what a conflict names
    sent: dict[str, _Served] = field(default_factory=dict)
    # A rejected record's payload is kept for its dead letter; a caller refusing the whole
    # batch lists only the problems, and holds no parsed copy of every bad record.
    keep_payloads: bool = True
    # Across the chunks one batch is mapped in (``OutcomeMapper.add``): each request's first
    # record written, the unknown models named (in order), and the records refused once
    # their references were looked up, listed after the others as one pass lists them.
    first: dict[str, _Served] = field(default_factory=dict)
    shadows: dict[str, None] = field(default_factory=dict)
    unserved: list[tuple[int | str, Any, list[Problem]]] = field(default_factory=list)
    refs: dict[tuple[tuple[str, tuple[str, str]], ...], dict[str, tuple[str, str]]] = field(
        default_factory=dict)

    @property
    def problems(self) -> list[Problem]:
        return [p for _, _, problems in self.rejected for p in problems]


def _validate(record: int | str, payload: Any) -> tuple[Any, OutcomeRecord]:
    """(the payload, the record); ``IngestError`` with (parsed value or text, problems).

    A line of text is validated as JSON by pydantic in one pass (``_parsed_line``); the
    payload then stays text until a rejection needs its value (``_value``). Only a line
    that fails takes the slower path through ``json.loads``, whose messages the problems
    quote, and ``bodies``' checks for JSON the graph cannot keep (~15 µs a record less on
    bulk loads, where this runs for every line)."""
    if isinstance(payload, str):
        outcome = _parsed_line(payload)
        if outcome is not None:
            return payload, _named(record, outcome, len(payload))
        try:
            payload = load_json(payload, record)
        except json.JSONDecodeError as error:
            line = f"line {error.lineno}, " if error.lineno > 1 else ""  # a whole file's text
            raise IngestError(Problem(f"not JSON: {error.msg} at {line}column {error.colno}",
                                      record=record)) from None
    else:
        check_value(payload, record)  # parsed elsewhere (a dead letter): checked the same
    if not isinstance(payload, dict):
        raise IngestError(Problem(f"a record must be a JSON object, got "
                                  f"{type(payload).__name__}", record=record))
    try:
        outcome = OutcomeRecord.model_validate(payload)
    except ValidationError as error:
        raise IngestError(validation_problems(error, record)) from None
    return payload, _named(record, outcome)


def _parsed_line(line: str) -> OutcomeRecord | None:
    """The record, if pydantic's JSON parser takes the line and it holds nothing the graph
    cannot keep; else None, for the careful path. That parser refuses lone surrogates and
    nesting deeper than ``bodies.MAX_DEPTH`` itself, but reads NaN and Infinity (as numbers
    in extra fields, as text in text fields: "NaN") and integers longer than Python then
    writes out. Cheap tests keep those out: a substring, a line's length (a number that
    long needs a line as long), and an extra field's number that is inf (too large for a
    double)."""
    if "NaN" in line or "Infinity" in line or 0 < _LONGEST_INT < len(line):
        return None
    try:
        outcome = OutcomeRecord.model_validate_json(line)
    except ValidationError:
        return None
    extra = outcome.__pydantic_extra__
    return outcome if not extra or _finite(extra.values()) else None


def _finite(values: Iterable[Any]) -> bool:
    """No NaN or ±inf among extra fields' values: a loop for the flat ones most are."""
    for value in values:
        kind = type(value)
        if kind is float and value - value != 0:  # NaN and ±inf only
            return False
        if (kind is dict or kind is list) and json_flaw(value, strings=False) is not None:
            return False
    return True


def _named(record: int | str, outcome: OutcomeRecord, line: int | None = None) -> OutcomeRecord:
    """The record, if it names what served it and its properties fit in a node; ``line``
    the length of its text, where it came as one."""
    if outcome.bundle is None and outcome.model is None:
        raise IngestError(Problem("names neither a bundle nor a model", record=record,
                                  field="bundle"))
    if line is None or line > _SHORT_LINE:
        try:
            check_properties_size(outcome.properties())
        except ValueError as error:
            raise IngestError(Problem(str(error), record=record)) from None
    return outcome


# A line this short cannot hold properties past the bound, so bulk loads skip measuring
# them: canonical JSON writes a character as at most 12 (an escaped surrogate pair), and a
# number at most 4.5 times as long as the line does (1e15 as 1000000000000000.0).
_SHORT_LINE = MAX_PROPERTIES_BYTES // 12


def _value(payload: Any) -> Any:
    """A rejected record's payload as a value (a dead letter keeps and keys it parsed)."""
    return json.loads(payload) if isinstance(payload, str) else payload


# Not frozen: built for every record a bulk load writes (0.16 µs against 0.62).
@dataclass(slots=True)
class _Served:
    """A record written for a request: what it says served the request, and when. Another
    record of the request — later in the batch, or stored — is held to it: with the same
    references it updates the fields (the last record of an ID in a batch wins), with others
    it is refused (written, both records' edges would link the request to both)."""

    request: str  # the node's ID
    record: int | str
    payload: Any
    at: datetime
    refs: dict[str, tuple[str, str]]  # field path → (target ID, kind)

    @property
    def targets(self) -> set[str]:
        return {target for target, _ in self.refs.values()}

    def changed(self, at: datetime, targets: set[str] | frozenset[str]) -> str | None:
        """The field by which this record departs from a request served by ``targets`` at
        ``at``, or None (features in another order are the same references)."""
        if at != self.at:
            return "timestamp"
        mine = self.targets
        if mine == targets:
            return None
        added = [path for path, (target, _) in self.refs.items() if target not in targets]
        if added:
            return added[0]
        dropped = min(targets - mine)  # what the other named and this record does not
        return _FIELD_OF.get(dropped.partition(":")[0], "bundle")

    def refused(self, served_by: set[str] | frozenset[str], at: datetime, where: str,
                was: str) -> Problem:
        return Problem(f"{self.request} {was} served by {', '.join(sorted(served_by)) or 'nothing'}"
                       f" at {at.isoformat()}: a record sent again cannot change what served "
                       "it, or when", record=self.record, field=where)


# The record's field naming a target of each ID prefix (``changed``: one it leaves out).
_FIELD_OF = {"bundle": "bundle", "model": "model", "prompt": "prompt", "policy": "policy",
             "feature": "features"}


# Moves of a (bundle name, environment) a bare bundle name reads at once.
STAGE_SPAN = 1000


class _Span:
    """The last moves up to ``until`` of one name in one environment (``complete``: every
    move up to then): the version in effect at any time from the first of them, or from
    the start if complete, to ``until``."""

    def __init__(self, moves: list[StageMove], until: datetime, complete: bool) -> None:
        self.times = [m.at for m in moves]
        self.versions = [m.to_version for m in moves]
        self.until = until
        self.since = None if complete or not moves else moves[0].at

    def covers(self, at: datetime) -> bool:
        return at <= self.until and (self.since is None or self.since <= at)

    def at(self, at: datetime) -> str | None:
        index = bisect_right(self.times, at)
        return self.versions[index - 1] if index else None


class OutcomeMapper:
    """Maps chunks of records, remembering across chunks what it found in the graph (one
    lookup per bundle or model, not per record)."""

    def __init__(self, store: GraphStore, actor: str = "system") -> None:
        self.store = store
        self.actor = actor
        self._known: dict[str, str] = {}  # ID → kind of nodes found in the graph
        # Of those, models traffic created unregistered, with their creation: written again
        # (if absent, so only dated back) when a request older than that names them.
        self._unregistered: dict[str, datetime] = {}
        # (bundle name, environment) → its last moves, and the last span read back from a
        # time before those
        self._latest_moves: dict[tuple[str, str], _Span] = {}
        self._stages: dict[tuple[str, str], _Span] = {}
        # ((bundle name, environment), time) → the version in effect: the batch's answers
        self._effective: dict[tuple[tuple[str, str], datetime], str | None] = {}
        self._latest: dict[str, str | None] = {}  # family ID → ``_latest_version``
        # The earliest request so far naming each model the graph did not know. Every
        # batch's placeholder for it carries that time, so whichever batch commits first
        # (a bulk load on Neo4j writes two at once) creates the model as first seen.
        self._first_seen: dict[str, datetime] = {}

    def map(self, items: Sequence[Item], source: str = SOURCE) -> Mapped:
        mapped = Mapped(Batch())
        self.add(mapped, items)
        return self.done(mapped, source)

    def add(self, mapped: Mapped, items: Sequence[Item]) -> None:
        """Map ``items`` into ``mapped``: a batch mapped a chunk at a time holds only one
        chunk's validated records at once (each several times its line's size), the
        batch its nodes and edges."""
        mapped.batch.size += len(items)
        keep = mapped.keep_payloads
        valid: list[tuple[int | str, Any, OutcomeRecord, dict[str, tuple[str, str]]]] = []
        checked: list[tuple[int | str, Any, OutcomeRecord | IngestError]] = []
        for record, payload in items:
            try:
                checked.append((record, *_validate(record, payload)))
            except IngestError as error:
                checked.append((record, payload, error))
        self._resolve(o for *_, o in checked if isinstance(o, OutcomeRecord))
        for record, payload, outcome in checked:
            if isinstance(outcome, IngestError):
                mapped.rejected.append((record, keepable(payload) if keep else None,
                                        outcome.problems))
                continue
            try:
                refs = self._references(record, outcome)
                # Records of a batch mostly name the same few things: one dict for each
                # set, shared by its records' ``_Served``, which the batch keeps.
                refs = mapped.refs.setdefault(tuple(refs.items()), refs)
                valid.append((record, payload, outcome, refs))
            except IngestError as error:
                mapped.rejected.append((record, _value(payload) if keep else None,
                                        error.problems))
        del checked  # its records are in ``valid``, its rejections listed
        self._lookup({target for *_, refs in valid for target, _ in refs.values()})
        sent, first = mapped.sent, mapped.first
        for record, payload, outcome, refs in valid:
            problems = self._check(record, refs)
            twin = first.get(outcome.request_id)
            if not problems and twin is not None:
                this = _Served(twin.request, record, payload, utc(outcome.timestamp), refs)
                where = this.changed(twin.at, twin.targets)
                if where is not None:
                    problems = [this.refused(twin.targets, twin.at, where,
                                             f"is also record {twin.record},")]
            if problems:
                mapped.unserved.append((record, _value(payload) if keep else None, problems))
                continue
            node = self._write(mapped.batch, outcome, refs, mapped.shadows)
            sent[node.id] = _Served(node.id, record, payload if keep else None,
                                    node.created_at, refs)
            if twin is None:
                first[outcome.request_id] = sent[node.id]

    def done(self, mapped: Mapped, source: str = SOURCE) -> Mapped:
        """``mapped`` made whole once every chunk is added: its rejections in one list,
        the unknown models' placeholders (dated by the earliest request of them all) and
        its audit entry."""
        mapped.rejected += mapped.unserved
        mapped.unserved = []
        mapped.batch.whole_requests = True
        mapped.batch.nodes += [
            Node.from_id(model, kind="ModelVersion", created_at=self._first_seen[model],
                         properties={"registered": False}) for model in mapped.shadows]
        # Unknown when mapped, maybe registered (by a manifest) by the time it is written:
        # created if absent, never written over.
        mapped.batch.keep_stored = frozenset(mapped.shadows)
        mapped.batch.audit.append(AuditEntry(
            action="ingest.outcomes", target=source, actor=self.actor,
            after={"records": mapped.batch.size - len(mapped.rejected),
                   "rejected": len(mapped.rejected)}))
        return mapped

    # -- references -----------------------------------------------------------------------

    def _references(self, record: int | str, outcome: OutcomeRecord) -> dict[str, tuple[str, str]]:
        """field path → (target ID, kind) of the edges the record asks for."""
        wanted: list[tuple[str, str, tuple[str, str]]] = []
        if outcome.bundle is not None:
            wanted.append(("bundle", outcome.bundle, ("Bundle", "bundle")))
        else:
            wanted += [(name, text, spec) for name, text, spec in (
                ("model", outcome.model, ("ModelVersion", "model")),
                ("prompt", outcome.prompt, ("PromptVersion", "prompt")),
                ("policy", outcome.policy, ("PolicyPack", "policy"))) if text is not None]
        wanted += [(f"features.{i}", text, ("Feature", "feature"))
                   for i, text in enumerate(outcome.features)]
        refs: dict[str, tuple[str, str]] = {}
        problems = []
        for path, text, (kind, prefix) in wanted:
            try:
                refs[path] = (self._bundle_id(text, outcome) if kind == "Bundle"
                              else _ref_id(text, kind, prefix), kind)
            except ValueError as error:
                problems.append(Problem(str(error), record=record, field=path))
        if problems:
            raise IngestError(problems)
        return refs

    def _bundle_id(self, text: str, outcome: OutcomeRecord) -> str:
        """A bundle with a version, or the version live in the record's environment then."""
        parsed = _bundle_ref(text)
        if parsed.version is not None:
            return str(parsed)
        at = utc(outcome.timestamp)  # a time without a zone is UTC, as when it is stored
        version = self._in_effect(parsed.name, outcome.environment, at)
        if version is None:
            raise ValueError(f"no version of bundle {parsed.name} was live in "
                             f"{outcome.environment} at {at.isoformat()}")
        return bundle_id(parsed.name, version)

    def _in_effect(self, name: str, environment: str, at: datetime) -> str | None:
        """The version of ``name`` in effect in ``environment`` at ``at``: the batch's
        answer (``_resolve``), or read from the name's last ``STAGE_SPAN`` moves there, or
        for a time before those, from the last ``STAGE_SPAN`` up to then."""
        key = (name, environment)
        if (key, at) in self._effective:
            return self._effective[(key, at)]
        # First the name's last moves there, whatever their time: they answer every later
        # record of the load (logs arrive in time order), as the whole history did.
        span = self._latest_moves.get(key)
        if span is None:
            moves = self.store.stage_history(name=name, environment=environment,
                                             last=STAGE_SPAN)
            span = self._latest_moves[key] = _Span(moves, datetime.max.replace(tzinfo=UTC),
                                                   complete=len(moves) < STAGE_SPAN)
        if not span.covers(at):  # older than those: read back from its time
            span = self._stages.get(key)
            if span is None or not span.covers(at):
                moves = self.store.stage_history(name=name, environment=environment, until=at,
                                                 last=STAGE_SPAN)
                span = self._stages[key] = _Span(moves, at, complete=len(moves) < STAGE_SPAN)
        return span.at(at)

    def _resolve(self, outcomes: Iterable[OutcomeRecord]) -> None:
        """What a batch's bare bundle names resolve to, latest time first: each read of
        ``STAGE_SPAN`` moves up to a time answers every earlier time back to its first
        move, so a batch reaching far back reads the history a page at a time — never a
        name's whole history, which CI promoting hourly makes long. A name's last moves
        stay for the load's later batches, and so does the last page read back."""
        wanted: dict[tuple[str, str], set[datetime]] = {}
        for outcome in outcomes:
            try:
                parsed = _bundle_ref(outcome.bundle) if outcome.bundle is not None else None
            except ValueError:
                continue  # said by _references, record by record
            if parsed is not None and parsed.version is None:
                wanted.setdefault((parsed.name, outcome.environment), set()).add(
                    utc(outcome.timestamp))
        self._effective = {}
        for key, times in wanted.items():
            for at in sorted(times, reverse=True):
                self._effective[(key, at)] = self._in_effect(*key, at)

    def _lookup(self, ids: Iterable[str]) -> None:
        unknown = sorted(set(ids) - self._known.keys())
        if unknown:
            found = self.store.get(unknown)
            self._known.update({i: n.kind for i, n in found.items()})
            self._unregistered.update((i, n.created_at) for i, n in found.items()
                                      if n.properties.get("registered") is False)

    def _check(self, record: int | str, refs: dict[str, tuple[str, str]]) -> list[Problem]:
        problems = []
        for path, (target, kind) in refs.items():
            found = self._known.get(target)
            if found is None and kind == "ModelVersion":
                continue  # an unregistered model: created below
            if found is None:
                problems.append(Problem(f"unknown {kind} {target}", record=record, field=path))
            elif found != kind:
                problems.append(Problem(self._wrong_kind(target, found, kind), record=record,
                                        field=path))
        return problems

    def _wrong_kind(self, target: str, found: str, kind: str) -> str:
        if FAMILY_OF.get(kind) != found:
            return f"{target} is a {found}, not a {kind}"
        family = f"{target} is a {found.lower()} family, not a version"
        example = self._latest_version(target, kind)
        return f"{family}: name one, such as {example}" if example else f"{family} (it has none)"

    def _latest_version(self, family: str, kind: str) -> str | None:
        """``name@version`` of the family's latest version: read once a mapper, as a log
        may name the family a million times."""
        if family not in self._latest:
            name = parse_id(family).name
            versions = self.store.versions(kind, name, last=1)
            self._latest[family] = f"{name}@{versions[-1].version}" if versions else None
        return self._latest[family]

    def _dates(self, model: str, at: datetime) -> bool:
        """Whether a request at ``at`` writes ``model`` as traffic found it: unknown to the
        graph (created unregistered), or created so by a later request (dated back)."""
        if model not in self._known:
            return True
        created = self._unregistered.get(model)
        return created is not None and at < created

    # -- writes ---------------------------------------------------------------------------

    def _write(self, batch: Batch, outcome: OutcomeRecord, refs: dict[str, tuple[str, str]],
               shadows: dict[str, None]) -> Node:
        # Built without re-validation: the record was validated by the outcome's own
        # property model and the targets are canonical IDs (at 100k records a second pass
        # through Node and Edge validation costs more than the store's write).
        node = Node.trusted("InferenceOutcome", outcome.request_id, None,
                            utc(outcome.timestamp), outcome.properties())
        batch.nodes.append(node)
        for target, kind in refs.values():
            batch.edges.append(Edge.trusted(node.id, EDGE_FOR[kind], target, {}))
            if kind != "ModelVersion" or not self._dates(target, node.created_at):
                continue
            shadows[target] = None
            first = self._first_seen.get(target)
            if first is None or node.created_at < first:
                self._first_seen[target] = node.created_at
        return node


# Logs name the same few bundles and models millions of times: read each spelling once.
# Bounded: a long-running server sees any number of spellings over its life.
SPELLINGS = 4096


@lru_cache(maxsize=SPELLINGS)
def _ref_id(text: str, kind: str, prefix: str) -> str:
    return ref_id(text, (kind,), prefix)[0]


@lru_cache(maxsize=SPELLINGS)
def _bundle_ref(text: str) -> NodeId:
    """A record's ``bundle``: an ID, or a name and version without the ``bundle:``."""
    return parse_id(text if text.startswith("bundle:") else f"bundle:{text}")


EDGE_FOR = {"Bundle": "SERVED_BY", "ModelVersion": "USED_MODEL", "PromptVersion": "USED_PROMPT",
            "PolicyPack": "USED_POLICY", "Feature": "USED_FEATURE"}


def strict_batch(items: Iterable[Item], store: GraphStore, *, actor: str,
                 source: str = SOURCE) -> Batch:
    """All records as one batch, or ``IngestError`` listing every problem of every record
    (when it is written too: a stored request sent again with other references). Mapped
    ``BATCH_SIZE`` records at a time, as a file load is, and holding no record's payload:
    a body of 50,000 records peaked at ~20 times its size mapped whole."""
    mapper = OutcomeMapper(store, actor)
    mapped = Mapped(Batch(), keep_payloads=False)
    for chunk in _chunks(items, BATCH_SIZE):
        mapper.add(mapped, chunk)
    mapper.done(mapped, source)
    if mapped.rejected:
        raise IngestError(mapped.problems)

    def refuse(stored: dict[str, OutcomeState]) -> Batch:
        raise IngestError([_conflict(mapped.sent[oid], stored[oid]) for oid in sorted(stored)])

    mapped.batch.on_conflict = refuse
    return mapped.batch


def _conflict(sent: _Served, stored: OutcomeState) -> Problem:
    return sent.refused(stored.targets, stored.created_at,
                        sent.changed(stored.created_at, stored.targets) or "bundle",
                        "was stored as")


def _without(mapped: Mapped, stored: dict[str, OutcomeState]) -> Batch:
    """The batch without the requests stored with other references, each a dead letter,
    and its audit entry's counts following."""
    batch = mapped.batch
    letters = [dead_letter(SOURCE, _value(mapped.sent[oid].payload),
                           [_conflict(mapped.sent[oid], stored[oid])])
               for oid in sorted(stored)]
    audit = [entry if entry.action != "ingest.outcomes" else entry.model_copy(update={
        "after": {"records": entry.after["records"] - len(stored),
                  "rejected": entry.after["rejected"] + len(stored)}}) for entry in batch.audit]
    return Batch(nodes=[n for n in batch.nodes if n.id not in stored],
                 edges=[e for e in batch.edges if e.source not in stored],
                 stage_moves=batch.stage_moves, records=[*batch.records, *letters],
                 audit=audit, size=batch.size, whole_requests=True,
                 keep_stored=batch.keep_stored)


class DeadLetteringLoad:
    """A file load: batches of ``size`` records, each bad record a dead letter written in
    its batch's transaction and counted in ``rejected``."""

    def __init__(self, store: GraphStore, *, actor: str, source: str,
                 size: int = BATCH_SIZE) -> None:
        self.mapper = OutcomeMapper(store, actor)
        self.source = source
        self.size = size
        self.rejected = 0

    def batches(self, items: Iterable[Item]) -> Iterator[Batch]:
        for chunk in _chunks(items, self.size):
            mapped = self.mapper.map(chunk, self.source)
            mapped.batch.records += [dead_letter(SOURCE, payload, problems)
                                     for _, payload, problems in mapped.rejected]
            self.rejected += len(mapped.rejected)
            mapped.batch.on_conflict = partial(self._dead_letter_conflicts, mapped, {})
            yield mapped.batch

    def _dead_letter_conflicts(self, mapped: Mapped, earlier: dict[str, OutcomeState],
                               stored: dict[str, OutcomeState]) -> Batch:
        """The batch without every conflicting request found so far (another writer may
        store more before it is written again). Called by a writer thread: the count is
        read once the load is over."""
        self.rejected += len(stored)
        found = {**earlier, **stored}
        batch = _without(mapped, found)
        batch.on_conflict = partial(self._dead_letter_conflicts, mapped, found)
        return batch


def _chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# -- reading ------------------------------------------------------------------------------


def read_file(path: Path) -> Iterator[Item]:
    """The records of an outcome file, gzipped or not: of NDJSON, (``file:line``, text) of
    each non-blank line; of a JSON array (the first non-blank character is ``[``),
    (``file#N``, value) of each item, numbered from 1 as the REST route numbers them."""
    with _reading(path):
        if _opens_array(path):
            yield from _array_items(path)
            return
        with _open_text(path) as stream:
            for number, line in ndjson_lines(stream):
                yield f"{path.name}:{number}", line


def read_text(path: Path) -> str:
    """A whole file's text, gzipped or not, or ``IngestError`` naming the file (and where
    it stops being UTF-8)."""
    with _reading(path), _open_text(path) as stream:
        return stream.read()


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    try:
        yield
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as error:
        # The file as a whole cannot be read: one problem naming it, not a traceback (count
        # _records reads it all before the load writes anything).
        raise IngestError(Problem(_unreadable(path, error), record=path.name)) from None


def _unreadable(path: Path, error: OSError | EOFError | zlib.error | UnicodeDecodeError) -> str:
    if isinstance(error, UnicodeDecodeError):
        return _not_utf8(path, error)
    if isinstance(error, EOFError):  # gzip's "ended before the end-of-stream marker"
        return "truncated: its gzip data ends early"
    if isinstance(error, gzip.BadGzipFile | zlib.error):
        return f"not valid gzip: {error}"
    return (error.strerror if isinstance(error, OSError) else None) or str(error)


def _not_utf8(path: Path, error: UnicodeDecodeError) -> str:
    """Where the first byte that is not UTF-8 is: the text decoder knows only its chunk, so
    look again line by line (no UTF-8 sequence holds a newline byte)."""
    offset = 0
    with _open_binary(path) as raw:
        for number, line in enumerate(raw, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as bad:
                return utf8_flaw(line, bad, line=number, offset=offset)
            offset += len(line)
    return f"not UTF-8 text: {error.reason}"


def _open_binary(path: Path) -> BinaryIO:
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else path.open("rb")


def _open_text(path: Path) -> TextIO:
    # newline="\n": lines end at "\n" alone, as NDJSON's do (see ``ndjson_lines``).
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8", newline="\n")


def _opens_array(path: Path) -> bool:
    with _open_text(path) as text:
        while chunk := text.read(4096):
            if chunk.strip():
                return chunk.lstrip().startswith("[")
    return False


def _array_items(path: Path) -> Iterator[Item]:
    """The items of a JSON-array file, parsed whole: where an item ends is known only by
    parsing it, and ``MAX_ARRAY_CHARS`` keeps that to a few hundred MB of objects. A file
    that does not parse is one bad record, its text, which ``_validate`` says is not JSON
    and where."""
    with _open_text(path) as stream:
        text = stream.read(MAX_ARRAY_CHARS + 1)
    if len(text) > MAX_ARRAY_CHARS:
        raise IngestError(Problem(
            f"a JSON array is read whole, and this one is over {MAX_ARRAY_CHARS:,} "
            "characters: write it as NDJSON (a record a line)", record=path.name))
    try:
        items = json.loads(text)
    except (RecursionError, ValueError):  # malformed, too deep, a number too long
        yield path.name, text
        return
    for number, item in enumerate(items, 1):
        yield f"{path.name}#{number}", item


def count_records(path: Path) -> int:
    return sum(1 for _ in read_file(path))


def read_body(body: bytes, json_array: bool) -> Iterator[Item]:
    """Records of a request body: a JSON array (numbered from 1) or NDJSON (by line). The
    body is decoded (or parsed) at once, for an ``IngestError`` before any record is
    mapped; NDJSON lines are cut as they are read (``strict_batch`` holds a chunk of them)."""
    text = decode(body)
    if not json_array:
        return ndjson_lines(text)
    data = parse_json(text)
    return _taken(data if isinstance(data, list) else [data])


def _taken(values: list[Any]) -> Iterator[Item]:
    """(number from 1, value) of each of ``values``, let go of once read: held whole, a
    parsed array outlived the records mapped from it (~4 times its text)."""
    for index in range(len(values)):
        value, values[index] = values[index], None
        yield index + 1, value


def _replay(payload: Any, store: GraphStore) -> Batch:
    return strict_batch([("dead letter", payload)], store, actor="deadletter.replay")


register_mapper(SOURCE, _replay)
