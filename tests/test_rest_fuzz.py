"""A seeded mutation fuzz of the REST ingest routes, on both stores, through the real app.

Valid bodies — the shared OpenLineage events unchanged, the registry manifests (the test
registry and the demo's), outcome records as NDJSON and as a JSON array, dead-letter replay
requests — are changed in 1-3 small seeded ways (a field dropped, nulled, of another type,
empty, too long, with a control character or a lone surrogate; a bad timestamp; NaN,
Infinity, 1e400; nesting too deep; a key twice; an unknown kind; an ID with ``@ : /`` in
odd places; fields swapped; a body cut short; another content type; YAML anchors, tags and
documents), and every answer must hold the contract (design §4, "Bad input"):

1. never a 5xx;
2. a 4xx is the project's error body naming where (record and/or field) when the body
   was still well formed;
3. a refused all-or-nothing request (a manifest load, outcomes, one event) leaves the
   store as it was (one event is kept as a dead letter, as the route says); a batch's
   answer names only items that were changed, and keeps every other one;
4. sending any request again changes nothing.

``LINEAGEGRAPH_FUZZ_CASES`` runs more cases per route and store (and
``LINEAGEGRAPH_FUZZ_SEED`` other seeds); a failure names the seed, route and body.
"""

from __future__ import annotations

import copy
import json
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph.store import GraphStore, RecordFilter
from lineagegraph.ingest import deadletter, openlineage
from lineagegraph.ingest.manifest_formats import read_directory
from lineagegraph.ingest.manifests import map_manifests

from .ingest_support import MANIFESTS, snapshot
from .openlineage_support import shared_events

# Per route and store: the whole file stays well under a minute per store here.
CASES = int(os.environ.get("LINEAGEGRAPH_FUZZ_CASES", "30"))
FIRST_SEED = int(os.environ.get("LINEAGEGRAPH_FUZZ_SEED", "0"))
DEMO_REGISTRY = Path(__file__).parents[1] / "ingest" / "demo_data" / "registry.yaml"
JSON_TYPE = "application/json"
JSON = {"content-type": JSON_TYPE}


# -- bodies ----------------------------------------------------------------------------------


@dataclass
class Body:
    """A body being mutated: its value (records or one document), then its text."""

    value: Any
    records: bool  # value is a list of records (problems should name one)
    mutated: set[int] = field(default_factory=set)  # the records changed
    raw: dict[str, str] = field(default_factory=dict)  # placeholder → JSON/YAML text
    well_formed: bool = True  # still parses: a refusal must then say where
    content_type: str | None = None
    text_hazards: list[tuple[int, str]] = field(default_factory=list)  # (document, YAML)


def placeholder(body: Body, text: str) -> str:
    token = f"zzraw{len(body.raw)}zz"
    body.raw[token] = text
    return token


def fill(text: str, body: Body, quotes: tuple[str, ...]) -> str:
    for token, raw in body.raw.items():
        for quote in quotes:
            text = text.replace(f"{quote}{token}{quote}", raw)
    return text


def as_json(body: Body) -> bytes:
    return fill(json.dumps(body.value), body, ('"',)).encode()


def as_ndjson(body: Body) -> bytes:
    return b"".join(fill(json.dumps(r), body, ('"',)).encode() + b"\n" for r in body.value)


def as_yaml(body: Body) -> bytes:
    text = yaml.safe_dump_all(body.value, sort_keys=False, allow_unicode=False, width=10**9)
    text = fill(text, body, ('"', "'", ""))
    if body.text_hazards:  # each at the top of a document
        docs = text.split("\n---\n")
        for number, hazard in body.text_hazards:
            docs[number % len(docs)] = hazard + "\n" + docs[number % len(docs)]
        text = "\n---\n".join(docs)
    return text.encode("utf-8", "surrogatepass")


# -- mutations -------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]
TIME_KEYS = {"eventTime", "timestamp", "at", "created_at", "started_at", "ended_at", "run",
             "nominalStartTime", "nominalEndTime"}
KIND_KEYS = {"kind", "eventType", "type", "status", "risk_tier", "environment"}
BAD_TIMES = ["2026-11-20T10:00:00+05:00", "2026-11-20T10:00:00", "2026-11-20", "yesterday",
             "2026-13-40T99:00:00Z", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00",
             "2999-01-01T00:00:00Z", "", "2026-11-20T10:00:00.123456789Z", "1763632800",
             "2026-11-20 10:00:00Z", "+002026-11-20T10:00:00Z", "2026-W47-5"]
NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 5000,
           "9223372036854775808", "-0", "1e-400", str(2**64)]
LONG = [1001, 4097, 8165, 70_000, 2**20 + 1]
CONTROLS = ["\x00", "\x1f", "\n", "\t", "\x7f", "\x85", "\u2028", "\ufeff", "\r"]
SURROGATES = ["\ud800", "\udfff", "\udc00x"]
ID_BITS = ["@", ":", "/", "@@", "::", "@v", " ", ":@/", "bundle:", "@1@2", "/..", "%40"]
KINDS = ["Bogus", "bundle", "DATASOURCE", "Node", "", "StageMoves", "COMPLETED", "Run",
         "Evaluation ", "retired", "production\u00a0", "sandbox"]
OTHERS: list[Any] = [0, -1, 1.5, "x", [], [1, "a"], {}, {"a": 1}, True, False]


def paths(value: Any) -> list[Path_]:
    """Every path below the root (bounded: bodies are small)."""
    found: list[Path_] = []
    stack: list[tuple[Path_, Any]] = [((), value)]
    while stack and len(found) < 5000:
        path, node = stack.pop()
        items = node.items() if isinstance(node, dict) else (
            enumerate(node) if isinstance(node, list) else ())
        for key, item in items:
            found.append((*path, key))
            stack.append(((*path, key), item))
    return found


def at(value: Any, path: Path_) -> Any:
    for key in path:
        value = value[key]
    return value


def mutate(body: Body, rng: random.Random, yaml_body: bool) -> str:
    """One structural change at a random place; returns what it did, for messages."""
    found = paths(body.value)
    if not found:
        return "nothing to mutate"
    path = rng.choice(found)
    if body.records:
        body.mutated.add(int(path[0]))
    parent, key = at(body.value, path[:-1]), path[-1]
    old = parent[key]
    op = rng.choice(["drop", "null", "type", "empty", "long", "control", "surrogate", "time",
                     "number", "deep", "dup", "kind", "id", "swap", "rename", "swap_records"])
    if op == "time" and not (isinstance(key, str) and key in TIME_KEYS):
        times = [p for p in found if isinstance(p[-1], str) and p[-1] in TIME_KEYS]
        if times:
            path = rng.choice(times)
            if body.records:
                body.mutated.add(int(path[0]))
            parent, key = at(body.value, path[:-1]), path[-1]
    if op == "kind" and not (isinstance(key, str) and key in KIND_KEYS):
        kinds = [p for p in found if isinstance(p[-1], str) and p[-1] in KIND_KEYS]
        if kinds:
            path = rng.choice(kinds)
            if body.records:
                body.mutated.add(int(path[0]))
            parent, key = at(body.value, path[:-1]), path[-1]
    text = old if isinstance(old, str) else str(old)
    where = rng.randrange(len(text) + 1)
    if op == "drop":
        del parent[key]
    elif op == "null":
        parent[key] = None
    elif op == "type":
        parent[key] = copy.deepcopy(rng.choice(OTHERS))
    elif op == "empty":
        parent[key] = ""
    elif op == "long":
        parent[key] = rng.choice("xé€😀") * rng.choice(LONG)
    elif op == "control":
        parent[key] = text[:where] + rng.choice(CONTROLS) + text[where:]
    elif op == "surrogate":
        parent[key] = text[:where] + rng.choice(SURROGATES) + text[where:]
    elif op == "time":
        parent[key] = rng.choice(BAD_TIMES)
    elif op == "number":
        parent[key] = placeholder(body, rng.choice(NUMBERS))
    elif op == "deep":
        depth = rng.choice([199, 201, 250, 3000])
        parent[key] = placeholder(body, "[" * depth + "]" * depth)
    elif op == "dup" and isinstance(parent, dict):
        parent[placeholder(body, json.dumps(key))] = copy.deepcopy(rng.choice(OTHERS))
    elif op == "kind":
        parent[key] = rng.choice(KINDS)
    elif op == "id":
        parent[key] = text[:where] + rng.choice(ID_BITS) + text[where:]
    elif op == "swap" and isinstance(parent, dict) and len(parent) > 1:
        other = rng.choice([k for k in parent if k != key])
        parent[key], parent[other] = parent[other], parent[key]
    elif op == "rename" and isinstance(key, str):
        parent[rng.choice([key.upper(), key + "_", " " + key, key[:-1]])] = parent.pop(key)
    elif op == "swap_records" and body.records and len(body.value) > 1:
        first, second = rng.sample(range(len(body.value)), 2)
        a, b = body.value[first], body.value[second]
        if isinstance(a, dict) and isinstance(b, dict) and set(a) & set(b):
            name = rng.choice(sorted(set(a) & set(b)))
            a[name], b[name] = b[name], a[name]
            body.mutated |= {first, second}
    else:
        parent[key] = copy.deepcopy(rng.choice(OTHERS))
        op = f"type (for {op})"
    unreadable = any(len(raw) > 1000 for raw in body.raw.values())
    if unreadable and not body.records:
        # Past the parser's stack or digits no path is known: a route taking one value
        # names the body as a whole (a records body names the record).
        body.well_formed = False
    return f"{op} at {'.'.join(map(str, path))}"


YAML_HAZARDS = [
    "laughs: &a [x, x, x, x, x, x, x, x, x]\nlaughs2: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
    "laughs3: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nlaughs4: [*c, *c, *c, *c, *c, *c, *c, *c]",
    "hazard: *undefined",
    "hazard: !!python/object/apply:os.system ['true']",
    "hazard: !!binary aGk=",
    "hazard: !!set {a, b}",
    "hazard: !custom x",
    "hazard: !!timestamp 2026-11-20",
    "hazard: !!float nan",
    "<<: {kind: Bogus}",
    "? [a, b]\n: c",
    "1: one",
    "null: nothing",
    "...",
    "%YAML 1.1\n---",
    "---",
    "--- !!str",
    "hazard: &self [*self]",
    "kind: Bogus",
    "name: yes",
    "version: 1.10",
    "hazard: |\n  \x00",
    "\t\tbad: indent",
]
CONTENT_TYPES = ["text/html", "application/xml", "multipart/form-data", "",
                 "application/json; charset=latin-1", "application/yaml", "text/plain",
                 "application/x-ndjson", "application/octet-stream", "APPLICATION/JSON"]


def corrupt(rng: random.Random, body: Body, sent: bytes, yaml_body: bool) -> tuple[bytes, str]:
    """A change to the text: cut short, another content type, or a YAML hazard."""
    choice = rng.choice(["truncate", "content_type"] + (["yaml"] * 2 if yaml_body else []))
    body.well_formed = False
    if choice == "truncate":
        cut = rng.randrange(len(sent)) if sent else 0
        return sent[:cut], f"truncated at {cut}"
    if choice == "content_type":
        body.content_type = rng.choice(CONTENT_TYPES)
        return sent, f"content type {body.content_type!r}"
    hazard = rng.choice(YAML_HAZARDS)
    body.text_hazards.append((rng.randrange(100), hazard))
    return as_yaml(body), f"YAML {hazard[:40]!r}"


# -- the store's state ---------------------------------------------------------------------


# A manifest or outcome load audits itself, a re-send too (the nodes it left unchanged
# are not audited); the OpenLineage routes audit only what an event changed.
LOAD_ENTRIES = {"ingest.manifests", "ingest.outcomes"}


def state(store: GraphStore) -> dict[str, Any]:
    """What a request may change: the graph, the audit log, kept events, dead letters."""
    actions = [entry.action for entry in store.audit_log(limit=10**6)]
    return {**snapshot(store), "audit": sum(a not in LOAD_ENTRIES for a in actions),
            "loads": sum(a in LOAD_ENTRIES for a in actions),
            "events": kept(store, openlineage.COLLECTION),
            "letters": kept(store, deadletter.COLLECTION)}


def kept(store: GraphStore, collection: str) -> int:
    # Sizes, not the records: a kept event may hold megabytes.
    return len(store.record_sizes(RecordFilter(collection), 10**6))


def shown(sent: bytes) -> str:
    text = sent.decode("utf-8", "backslashreplace")
    return text if len(text) <= 600 else f"{text[:300]} … {text[-200:]}"


@dataclass
class Case:
    seed: int
    route: str
    sent: bytes
    content_type: str
    did: list[str]
    body: Body

    def __str__(self) -> str:
        return (f"seed {self.seed}, POST {self.route} ({self.content_type!r}), "
                f"{'; '.join(self.did)}:\n{shown(self.sent)}")


def post(client: TestClient, case: Case) -> httpx.Response:
    headers = {"content-type": case.content_type} if case.content_type else {}
    return client.post(case.route, content=case.sent, headers=headers)


def check_answer(case: Case, response: httpx.Response) -> None:
    """Invariants 1 and 2."""
    assert response.status_code < 500, f"{response.status_code} {response.text[:500]}\n{case}"
    if response.status_code < 400:
        return
    assert response.headers["content-type"].startswith("application/json"), case
    answer = response.json()
    assert isinstance(answer.get("error"), str) and isinstance(answer.get("code"), str), \
        f"{answer}\n{case}"
    problems = answer.get("problems")
    assert problems and all(isinstance(p.get("message"), str) for p in problems), \
        f"{answer}\n{case}"
    if case.body.well_formed and response.status_code in (400, 422):
        assert any("record" in p or "field" in p for p in problems), \
            f"a refusal that says not where: {answer}\n{case}"


def without_letters(before: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in before.items() if k != "letters"}


def run_cases(store: GraphStore, route: str, make: Callable[[random.Random, int], Case],
              after: Callable[[TestClient, Case, httpx.Response, dict[str, Any],
                               dict[str, Any]], None],
              *, same_answer: bool = True) -> None:
    """Every seeded case: sent, its answer and the store checked, sent again."""
    app = create_app(Settings(neo4j_uri=None), store=store)
    with TestClient(app, raise_server_exceptions=False) as client:  # a 500 names its case
        for seed in range(FIRST_SEED, FIRST_SEED + CASES):
            case = make(random.Random(f"{route}:{seed}"), seed)
            before = state(store)
            response = post(client, case)
            check_answer(case, response)
            middle = state(store)
            after(client, case, response, before, middle)
            again = post(client, case)
            assert not same_answer or again.status_code == response.status_code, \
                f"sent again: {again.status_code} {again.text[:300]}\n{case}"
            final = state(store)
            if response.status_code < 400:
                assert final["loads"] - middle["loads"] <= 1, case
                final["loads"] = middle["loads"]
            assert final == middle, f"sending it again changed the store\n{case}"


def build(rng: random.Random, seed: int, route: str, body: Body, content_type: str,
          serialize: Callable[[Body], bytes], yaml_body: bool = False) -> Case:
    did = [mutate(body, rng, yaml_body) for _ in range(rng.randint(1, 3))]
    sent = serialize(body)
    if rng.random() < 0.2:
        sent, what = corrupt(rng, body, sent, yaml_body)
        did.append(what)
        content_type = body.content_type if body.content_type is not None else content_type
    return Case(seed, route, sent, content_type, did, body)


# -- OpenLineage -----------------------------------------------------------------------------

EVENTS = [event for _, event in shared_events()]


def lineage_case(rng: random.Random, seed: int) -> Case:
    body = Body(copy.deepcopy(rng.choice(EVENTS)), records=False)
    return build(rng, seed, "/api/v1/lineage", body, JSON_TYPE, as_json)


def lineage_batch_case(rng: random.Random, seed: int) -> Case:
    events = [copy.deepcopy(e) for e in rng.sample(EVENTS, rng.randint(2, 4))]
    return build(rng, seed, "/api/v1/lineage/batch", Body(events, records=True), JSON_TYPE,
                 as_json)


def check_event(_: TestClient, case: Case, response: httpx.Response, before: dict[str, Any],
                middle: dict[str, Any]) -> None:
    if response.status_code >= 400:  # one event: nothing of it, but perhaps its letter
        assert without_letters(middle) == without_letters(before), f"half-written\n{case}"
        assert middle["letters"] - before["letters"] in (0, 1), case


def check_batch(client: TestClient, case: Case, response: httpx.Response,
                before: dict[str, Any], middle: dict[str, Any]) -> None:
    if response.status_code >= 400:  # refused whole (not JSON the graph can keep)
        assert middle == before, f"a refused batch wrote something\n{case}"
        return
    assert response.status_code in (200, 204), f"{response.status_code}\n{case}"
    failed = {f["index"] for f in response.json()["failedEvents"]} \
        if response.status_code == 200 else set()
    assert failed <= case.body.mutated, \
        f"unchanged events failed: {response.text[:800]}\n{case}"
    assert middle["letters"] - before["letters"] <= len(failed), case
    for index, event in enumerate(json.loads(case.sent)):
        if index not in failed:  # written: sent alone, it changes nothing
            alone = client.post("/api/v1/lineage", content=json.dumps(event), headers=JSON)
            assert (alone.status_code, alone.json().get("changed")) == (201, False), \
                f"event {index}, not named as failed, was not written: {alone.text}\n{case}"


# -- manifests -------------------------------------------------------------------------------

MANIFEST_FILES = sorted(p for p in MANIFESTS.rglob("*") if p.suffix in (".yaml", ".yml"))
MANIFEST_DOCS = [[d for d in yaml.safe_load_all(p.read_text()) if d is not None]
                 for p in [*MANIFEST_FILES, DEMO_REGISTRY]]


def manifests_case(rng: random.Random, seed: int) -> Case:
    docs = copy.deepcopy(rng.choice(MANIFEST_DOCS))
    docs = json.loads(json.dumps(docs, default=str))  # YAML dates as the text they were
    body = Body(docs, records=True)
    if rng.random() < 0.5:
        return build(rng, seed, "/api/v1/manifests", body, "application/yaml", as_yaml, True)
    return build(rng, seed, "/api/v1/manifests", body, JSON_TYPE, as_json)


def check_all_or_nothing(_: TestClient, case: Case, response: httpx.Response,
                         before: dict[str, Any], middle: dict[str, Any]) -> None:
    if response.status_code >= 400:
        assert middle == before, f"a refused request wrote something\n{case}"


# -- outcomes --------------------------------------------------------------------------------


def outcome_records(rng: random.Random, seed: int) -> list[dict[str, Any]]:
    records = []
    for i in range(rng.randint(1, 4)):
        record: dict[str, Any] = {"request_id": f"fz-{seed}-{i}",
                                  "timestamp": f"2026-11-20T10:{i:02d}:{seed % 60:02d}Z",
                                  "environment": rng.choice(["production", "eu-prod"]),
                                  "latency_ms": 812.5, "tokens_in": 950, "tokens_out": 210,
                                  "cost_usd": 0.0031, "status": "ok", "quality": 0.9}
        shape = rng.randrange(3)
        if shape == 0:
            record |= {"bundle": "support-triage@14", "features": ["feature:txn_amount_7d@2"]}
        elif shape == 1:
            record |= {"model": "gpt-5-mini-2026-08", "prompt": "triage-prompt@v9",
                       "policy": "support-safety@v6"}
        else:
            record |= {"model": f"shadow-llm-{rng.randrange(3)}"}
        records.append(record)
    return records


def outcomes_case(rng: random.Random, seed: int) -> Case:
    body = Body(outcome_records(rng, seed), records=True)
    if rng.random() < 0.5:
        return build(rng, seed, "/api/v1/outcomes", body, "application/x-ndjson", as_ndjson)
    return build(rng, seed, "/api/v1/outcomes", body, JSON_TYPE, as_json)


# -- dead-letter replay ------------------------------------------------------------------


def replay_case(rng: random.Random, seed: int, keys: list[str]) -> Case:
    chosen = rng.sample(keys, rng.randint(1, len(keys)))
    value = {"keys": [k[: rng.choice([len(k), 12, 4])] for k in chosen]}
    return build(rng, seed, "/api/v1/deadletter/replay", Body(value, records=False),
                 JSON_TYPE, as_json)


# -- the tests -------------------------------------------------------------------------------


@pytest.fixture
def registry(store: GraphStore) -> Iterator[GraphStore]:
    """The test registry: what outcomes and manifests refer to."""
    map_manifests(read_directory(MANIFESTS), store, actor="test").write(store)
    yield store


def test_mutated_lineage_events_are_answered_and_refused_without_a_trace(
    store: GraphStore,
) -> None:
    run_cases(store, "/api/v1/lineage", lineage_case, check_event)


def test_mutated_lineage_batches_name_only_changed_events_and_keep_the_rest(
    store: GraphStore,
) -> None:
    run_cases(store, "/api/v1/lineage/batch", lineage_batch_case, check_batch)


def test_mutated_manifests_are_loaded_whole_or_refused_without_a_trace(
    registry: GraphStore,
) -> None:
    run_cases(registry, "/api/v1/manifests", manifests_case, check_all_or_nothing)


def test_mutated_outcomes_are_loaded_whole_or_refused_without_a_trace(
    registry: GraphStore,
) -> None:
    run_cases(registry, "/api/v1/outcomes", outcomes_case, check_all_or_nothing)


def test_mutated_replay_requests_are_answered_and_refused_without_a_trace(
    registry: GraphStore,
) -> None:
    letters = [deadletter.dead_letter("openlineage", event, []) for event in EVENTS[:3]]
    registry.upsert(records=letters)
    keys = [letter.key for letter in letters]
    run_cases(registry, "/api/v1/deadletter/replay",
              lambda rng, seed: replay_case(rng, seed, keys), check_all_or_nothing,
              same_answer=False)  # a letter replayed is no longer pending
