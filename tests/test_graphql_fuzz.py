"""A seeded mutation fuzz of the GraphQL API over HTTP, on the embedded store and Neo4j at
once: both load the demo (plus a few versions and stage moves), every generated operation
goes to both, and each answer must

1. be HTTP 200 or 4xx with a JSON body;
2. carry no internal error: each error has a known ``extensions.code`` and leaks no
   traceback, exception class or query text;
3. be consistent where checkable: a page's edges join its nodes, degrees within the
   depth asked, keyset orders kept, pages followed by ``endCursor`` never overlapping and
   together the whole walk, counts adding up;
4. be the same on both stores (times of writes made during the run aside);
5. for a refused mutation, leave the store as it was (nodes, edges, stage log, audit).

``LINEAGEGRAPH_FUZZ_CASES`` (default 250) and ``LINEAGEGRAPH_FUZZ_SEED`` run more or other
cases locally; a failure names the seed and case, the operation and its variables. State
carries over from case to case (mutations that succeed change the graph on both stores),
so a case is replayed by running the same seed from the start."""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.auth import create_token
from lineagegraph.api.graphql_schema import build_schema
from lineagegraph.api.settings import Settings
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.store import Direction, GraphStore
from lineagegraph.ingest import demo
from lineagegraph.ingest.batch import load_batches
from lineagegraph.ingest.manifest_formats import read_yaml
from lineagegraph.ingest.manifests import map_manifests

from .graphql_fuzz import KINDS, KNOWN_CODES, LEAKS, Case, Generator, Pools

CASES = int(os.environ.get("LINEAGEGRAPH_FUZZ_CASES", "250"))
SEED = int(os.environ.get("LINEAGEGRAPH_FUZZ_SEED", "20261125"))
# Small caps, so that the demo's walks meet them.
SETTINGS = dict(neo4j_uri=None, max_depth=6, max_nodes=300, query_timeout_s=30)
MAX_DEPTH = SETTINGS["max_depth"]

# Beyond the demo: more versions and stage moves, so walks, histories and pages have more
# to show (loaded through the manifest path, as the demo is).
EXTRA = """
kind: ModelVersion
name: fraud-detector
version: 9
produced_by: run:r-fraud-8
fine_tuned_from: model:fraud-detector@8
provider: in-house
region: eu
created_at: 2026-11-12T00:00:00Z
---
kind: Bundle
name: fraud-scoring
version: 4
model: model:fraud-detector@9
policy_ref: payments-risk@1
params: {threshold: 0.8}
eval: {suite: fraud-backtest-v2, score: 0.96, threshold: 0.9, run: "2026-11-12"}
approved_by: [mkoh]
status: staging
created_at: 2026-11-12T01:00:00Z
---
name: support-triage
version: 16
model: gpt-5-mini-2026-11
prompt_ref: triage-prompt@v10
params: { max_tokens: 350 }
tools_ref: triage-tools@v3
policy_ref: support-safety@v7
retrieves_from: [source:kb.articles, source:warehouse.payments]
status: canary
created_at: 2026-11-12T02:00:00Z
---
kind: StageMove
bundle: support-triage
version: 15
environment: canary
at: 2026-11-11T00:00:00Z
actor: release-bot
reason: canary first
---
kind: StageMove
bundle: fraud-scoring
version: 3
environment: staging
at: 2026-11-07T00:00:00Z
actor: release-bot
"""


@dataclass
class Side:
    name: str
    store: GraphStore
    client: TestClient
    headers: dict[str, str]

    def post(self, body: dict[str, Any]) -> tuple[int, Any]:
        # ASCII JSON: a lone surrogate in the input goes as its escape, as a client sends it.
        response = self.client.post("/graphql", content=json.dumps(body), headers={
            **self.headers, "Content-Type": "application/json"})
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, {"not JSON": response.text[:500]}


def load(store: GraphStore) -> None:
    load_batches(store, demo.load_demo(store))
    load_batches(store, iter([map_manifests(read_yaml(EXTRA, "fuzz.yaml"), store,
                                            actor="fuzz", source="fuzz")]))
    for name, scope in (("fuzz-admin", "admin"), ("fuzz-reader", "read")):
        create_token(store, name, scope, actor="fuzz")


@pytest.fixture(scope="module")
def sides(neo4j_store: GraphStore, tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[list[Side]]:
    embedded = EmbeddedStore(tmp_path_factory.mktemp("fuzz") / "fuzz.db")
    neo4j_store.wipe()
    made = []
    try:
        for name, store in (("embedded", embedded), ("neo4j", neo4j_store)):
            load(store)
            secret = create_token(store, "fuzz", "admin", actor="fuzz")[1]
            client = TestClient(create_app(Settings(**SETTINGS), store=store))
            made.append(Side(name, store, client.__enter__(),
                             {"Authorization": f"Bearer {secret}"}))
        yield made
    finally:
        for side in made:
            side.client.__exit__(None, None, None)
        embedded.close()
        neo4j_store.wipe()


def pools_of(store: GraphStore) -> Pools:
    ids = [n.id for n in store.all_nodes([k for k in KINDS if k != "InferenceOutcome"])]
    requests = [r["request_id"] for r in list(demo.outcomes())[::97]]
    ids += [f"outcome:{r}" for r in requests[:10]]
    return Pools(ids=ids, request_ids=requests,
                 bundle_names=["support-triage", "fraud-scoring"])


# -- the checks ---------------------------------------------------------------------------


_RECENT = timedelta(days=1)
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)")


def normalized(value: Any, now: datetime) -> Any:
    """An answer with what differs between two stores by nature set aside: the times of
    writes made during the run (a stage move's, an audit entry's, in a value or quoted in a
    message), token secrets' IDs in audit entries. Errors keep their order: the
    document's, whichever field's work ends first."""
    if isinstance(value, dict):
        if str(value.get("target", "")).startswith("token:") or str(
                value.get("action", "")).startswith("token."):
            # before/after under any alias: the token's ID, made anew by each store
            value = {k: v for k, v in value.items() if not isinstance(v, dict)}
        return {k: normalized(v, now) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v, now) for v in value]
    if isinstance(value, str):
        return _ISO.sub(lambda m: _recent(m.group(0), now), value)
    return value


def _recent(text: str, now: datetime) -> str:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:  # a caller's malformed time quoted back
        return text
    return "<during the run>" if abs(at - now) < _RECENT else text


def transport_problems(status: int, body: Any) -> list[str]:
    problems = []
    if not (status == 200 or 400 <= status < 500):
        problems.append(f"HTTP {status}")
    if not isinstance(body, dict) or "not JSON" in body:
        return [*problems, f"body is not a JSON object: {str(body)[:300]}"]
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        if code not in KNOWN_CODES:
            problems.append(f"error without a known code ({code}): {error}")
        message = str(error.get("message", ""))
        if LEAKS.search(message):
            problems.append(f"error message leaks internals: {message[:500]}")
    return problems


def _walk_dicts(value: Any) -> Iterator[dict[str, Any]]:
    """Every dict within ``value``, outermost first (iterative: values may nest deeply)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))


def _subgraph_problems(page: dict[str, Any], *, first_page: bool | None,
                       depth: int | None) -> list[str]:
    problems = []
    nodes = page.get("nodes")
    if not isinstance(nodes, list) or not all(isinstance(n, dict) and "degree" in n
                                              for n in nodes):
        return []
    positions = [(n["degree"], (n.get("node") or {}).get("id")) for n in nodes]
    if any(d < 0 or (depth is not None and d > depth) for d, _ in positions):
        problems.append(f"a degree outside [0, {depth}]: {positions[:20]}")
    ids = [i for _, i in positions if i is not None]
    if ids and len(ids) == len(positions):
        if positions != sorted(positions):
            problems.append("a page not in (degree, id) order")
        if len(set(ids)) != len(ids):
            problems.append("a node twice on one page")
        shown = set(ids)
        for edge in page.get("edges") or []:
            ends = [edge.get("source"), edge.get("target")]
            if None in ends:
                continue
            inside = sum(e in shown for e in ends)
            # An edge is on the page of the later of its ends: on the first page both
            # ends are there; on a later one, at least that later end.
            if inside < (2 if first_page else 1):
                problems.append(f"edge {edge} joins nodes not on its page")
    return problems


def _more_than_first(args: dict[str, Any], default: int, count: int) -> list[str]:
    first = args.get("first", default)
    return [f"{count} answered, first={first}"] if isinstance(first, int) and (
        count > first) else []


def _lineage(value: Any, args: dict[str, Any]) -> list[str]:
    depth = args.get("depth", 3)
    problems = _subgraph_problems(value, first_page=args.get("after") is None, depth=min(
        depth, MAX_DEPTH) if isinstance(depth, int) else None)
    nodes = value.get("nodes")
    roots = [n for n in nodes or [] if n.get("degree") == 0]
    if nodes and "degree" in nodes[0] and args.get("after") is None and len(roots) != 1:
        problems.append(f"lineage's first page has {len(roots)} nodes at degree 0")
    return problems


def _search(value: Any, args: dict[str, Any]) -> list[str]:
    nodes = value.get("nodes")
    if not isinstance(nodes, list):
        return []
    problems = _more_than_first(args, 50, len(nodes))
    ids = [n.get("id") for n in nodes]
    if None not in ids and ids != sorted(ids):
        problems.append("search nodes not in ID order")
    kinds, shown = args.get("kinds"), {n.get("kind") for n in nodes}
    if isinstance(kinds, list) and kinds and None not in shown and not shown <= set(kinds):
        problems.append(f"search kinds {kinds} answered {shown}")
    return problems


def _audit_log(value: Any, args: dict[str, Any]) -> list[str]:
    problems = _more_than_first(args, 500, len(value))
    seqs = [e.get("seq") for e in value]
    after = args.get("after")
    if None not in seqs and seqs != sorted(set(seqs)):
        problems.append("audit entries not in seq order")
    if None not in seqs and isinstance(after, int) and any(s <= after for s in seqs):
        problems.append(f"audit entries at or before after={after}")
    return problems


def _drift_sources(value: Any, args: dict[str, Any]) -> list[str]:
    problems = []
    scores = [c.get("score") for c in value]
    if None not in scores and scores != sorted(scores, reverse=True):
        problems.append("drift candidates not best first")
    for candidate in value:
        hops, path = candidate.get("hops"), candidate.get("path")
        if isinstance(hops, int) and isinstance(path, list) and len(path) != hops + 1:
            problems.append(f"a drift candidate at {hops} hops has path {path}")
    return problems


ROOT_CHECKS = {"lineage": _lineage, "search": _search, "auditLog": _audit_log,
               "driftSources": _drift_sources}


def consistency_problems(case: Case, data: Any) -> list[str]:
    """What can be checked of an answer on its own (the differential check compares it)."""
    if not isinstance(data, dict):
        return []
    problems = []
    for key, name, args in case.fields:
        value, check = data.get(key), ROOT_CHECKS.get(name)
        if value is not None and check is not None:
            problems += check(value, args)
    for found in _walk_dicts(data):
        if "traffic" in found and "totalTraffic" in found:
            counts = [t.get("count") for t in found["traffic"]]
            if None not in counts and sum(counts) != found["totalTraffic"]:
                problems.append("blast radius: totalTraffic is not the sum of traffic")
        if "nodes" in found and "edges" in found and found is not data.get(case.fields[0][0]):
            problems += _subgraph_problems(found, first_page=None, depth=None)
    return problems


def refused_everywhere(case: Case, body: dict[str, Any]) -> bool:
    data = body.get("data")
    return case.root == "mutation" and (
        not isinstance(data, dict) or all(data.get(key) is None for key, _, _ in case.fields))


def snapshot(store: GraphStore, named: list[str]) -> dict[str, Any]:
    """What a refused mutation must not change: the nodes but requests (thousands; those a
    mutation names are read by ID) with their out-edges, the stage log, the audit log."""
    nodes = {n.id: n.model_dump(mode="json") for n in store.all_nodes(
        [k for k in KINDS if k != "InferenceOutcome"])}
    wanted = [i for i in named if i.isprintable() and i.encode(errors="ignore").decode() == i]
    nodes.update({i: n.model_dump(mode="json") for i, n in store.get(wanted).items()})
    hops = store.expand(sorted(nodes), Direction.UPSTREAM)
    edges = sorted((h.edge.source, h.edge.type, h.edge.target, json.dumps(
        h.edge.properties, sort_keys=True)) for h in hops)
    return {"nodes": nodes, "edges": edges,
            "moves": [m.model_dump(mode="json") for m in store.stage_history()],
            "audit": [e.model_dump(mode="json") for e in store.audit_log(limit=100_000)]}


def _named_ids(value: Any) -> list[str]:
    return [v for d in _walk_dicts(value) for k, v in d.items()
            if k in ("id", "source", "target") and isinstance(v, str)]


# -- running ------------------------------------------------------------------------------


@dataclass
class Run:
    cases: int = 0
    compared: int = 0
    timeouts: int = 0
    mutations_refused: int = 0
    last: Any = None  # the last case's answers, for a caller's statistics


def run_case(case: Case, sides: list[Side], pools: Pools, seed: int, run: Run) -> list[str]:
    failures = []
    body = {"query": case.query, "variables": case.variables, "operationName": "Fuzz"}
    named = _named_ids(case.variables)
    before = [snapshot(s.store, named) for s in sides] if case.root == "mutation" else []
    answers = []
    for i, side in enumerate(sides):
        status, answer = side.post(body)
        answers.append((status, answer))
        for problem in transport_problems(status, answer):
            failures.append(f"[{side.name}] {problem}")
        if not isinstance(answer, dict):
            continue
        pools.harvest(answer.get("data"))
        for problem in consistency_problems(case, answer.get("data")):
            failures.append(f"[{side.name}] {problem}")
        if before and refused_everywhere(case, answer):
            run.mutations_refused += 1
            after = snapshot(side.store, named)
            for part in before[i]:
                if after[part] != before[i][part]:
                    failures.append(f"[{side.name}] a refused mutation changed {part}")
    run.cases += 1
    run.last = answers
    codes = {(e.get("extensions") or {}).get("code") for _, a in answers
             if isinstance(a, dict) for e in a.get("errors") or []}
    if "QUERY_TIMEOUT" in codes:
        run.timeouts += 1
    else:
        now = datetime.now(UTC)
        (s0, a0), (s1, a1) = answers
        left, right = normalized(a0, now), normalized(a1, now)
        run.compared += 1
        if s0 != s1 or left != right and not _same_refusal(left, right):
            failures.append(f"the stores answer differently: HTTP {s0} vs {s1}\n"
                            f"embedded: {_short(left)}\nneo4j:    {_short(right)}")
    return [f"{f}\n{case.describe(seed)}" for f in failures]


def _same_refusal(left: Any, right: Any) -> bool:
    """Answers alike but for errors of fields that ran as the answer was nulled whole: an
    error in a non-null root field nulls ``data``, and whether the other fields' errors,
    raised while running at once, are listed depends on when they came (graphql-core)."""
    if not (isinstance(left, dict) and isinstance(right, dict)) or left.get(
            "data") is not None or right.get("data") is not None:
        return False
    errors = [{json.dumps(e, sort_keys=True) for e in side.get("errors") or []}
              for side in (left, right)]
    return bool(errors[0] & errors[1]) and (errors[0] <= errors[1] or errors[1] <= errors[0])


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) < 3000 else text[:3000] + "…"


PAGE = """query Page($id: ID!, $direction: Direction!, $depth: Int!, $kinds: [String!],
                  $first: Int, $after: String) {
  lineage(id: $id, direction: $direction, depth: $depth, kinds: $kinds, first: $first,
          after: $after) {
    nodes { degree node { id } } edges { source type target } truncated
    pageInfo { hasNextPage endCursor }
  }
}"""
SEARCH = """query Page($text: String, $kinds: [String!], $first: Int, $after: String) {
  search(text: $text, kinds: $kinds, first: $first, after: $after) {
    nodes { id } pageInfo { hasNextPage endCursor }
  }
}"""
MAX_PAGES = 60  # pages followed at most: a page size is raised to fit


def _pages(side: Side, query: str, field: str, variables: dict[str, Any],
           size: int) -> tuple[list[Any], list[str]]:
    """The pages of ``field`` of ``size``, followed by ``endCursor`` to the last."""
    pages, problems, after = [], [], None
    for _ in range(MAX_PAGES):
        status, body = side.post({"query": query, "variables": {
            **variables, "first": size, "after": after}})
        page = (body.get("data") or {}).get(field) if isinstance(body, dict) else None
        if status != 200 or page is None:
            return pages, [f"a page answered HTTP {status}: {str(body)[:500]}"]
        pages.append(page)
        info = page["pageInfo"]
        if not info["hasNextPage"]:
            return pages, problems
        if info["endCursor"] == after:
            return pages, ["a page with a next one gave its own cursor back"]
        after = info["endCursor"]
    return pages, [f"more than {MAX_PAGES} pages of {size}"]


def follow_lineage(side: Side, variables: dict[str, Any], size: int) -> tuple[Any, list[str]]:
    """Pages of a lineage, followed to the end, against the walk read whole."""
    status, body = side.post({"query": PAGE, "variables": {**variables, "first": None}})
    whole = (body.get("data") or {}).get("lineage") if isinstance(body, dict) else None
    if whole is None:
        return body, []  # refused whole: the pages would be refused alike
    size = max(size, -(-len(whole["nodes"]) // MAX_PAGES))
    pages, problems = _pages(side, PAGE, "lineage", variables, size)
    positions = [(n["degree"], n["node"]["id"]) for p in pages for n in p["nodes"]]
    edges = [(e["source"], e["type"], e["target"]) for p in pages for e in p["edges"]]
    if positions != sorted(set(positions)):
        problems.append("the pages overlap or leave the (degree, id) order")
    if len(set(edges)) != len(edges):
        problems.append("an edge on two pages")
    if not whole["truncated"] and not any(p["truncated"] for p in pages):
        if positions != [(n["degree"], n["node"]["id"]) for n in whole["nodes"]]:
            problems.append("the pages together are not the whole walk's nodes")
        if sorted(edges) != sorted((e["source"], e["type"], e["target"])
                                   for e in whole["edges"]):
            problems.append("the pages together are not the whole walk's edges")
    return {"whole": whole, "pages": pages}, problems


def follow_search(side: Side, variables: dict[str, Any], size: int) -> tuple[Any, list[str]]:
    status, body = side.post({"query": SEARCH, "variables": {**variables, "first": 1000}})
    whole = (body.get("data") or {}).get("search") if isinstance(body, dict) else None
    if whole is None or whole["pageInfo"]["hasNextPage"]:
        return body, []
    size = max(size, -(-len(whole["nodes"]) // MAX_PAGES))
    pages, problems = _pages(side, SEARCH, "search", variables, size)
    ids = [n["id"] for p in pages for n in p["nodes"]]
    if ids != [n["id"] for n in whole["nodes"]]:
        problems.append("the search pages together are not the whole list, in ID order")
    return {"whole": whole, "pages": pages}, problems


def follow_case(rng: random.Random, pools: Pools, sides: list[Side],
                number: int, seed: int) -> list[str]:
    """Pages followed by their cursors on both stores: no overlap, nothing missed, alike."""
    size = rng.choice([1, 2, 3, 7, 40])
    if rng.random() < 0.7:
        variables = {"id": rng.choice(pools.ids), "direction": rng.choice(
            ["UPSTREAM", "DOWNSTREAM", "BOTH"]), "depth": rng.choice([1, 2, 3, 6, 9]),
            "kinds": rng.choice([None, None, ["Bundle", "ModelVersion"], ["DataSource"],
                                 ["InferenceOutcome"]])}
        follow = follow_lineage
    else:
        variables = {"text": rng.choice([None, "support", "fraud", "@", "2026", "fuzz"]),
                     "kinds": rng.choice([None, ["Bundle"], ["ModelVersion", "Feature"]])}
        follow = follow_search
    what = f"seed={seed} case={number}: {follow.__name__} {variables} first={size}"
    failures, answers = [], []
    for side in sides:
        answer, problems = follow(side, variables, size)
        answers.append(answer)
        failures += [f"[{side.name}] {p}\n{what}" for p in problems]
    now = datetime.now(UTC)
    if normalized(answers[0], now) != normalized(answers[1], now):
        failures.append(f"the stores page differently\n{what}\nembedded: "
                        f"{_short(answers[0])}\nneo4j:    {_short(answers[1])}")
    return failures


def fuzz(sides: list[Side], seed: int, cases: int, *, mutations: bool = True,
         ) -> tuple[Run, list[str]]:
    pools = pools_of(sides[0].store)
    schema = build_schema(Settings(**SETTINGS))._schema
    generator = Generator(schema, pools, random.Random(seed), max_depth=10,
                          mutations=mutations)
    run, failures = Run(), []
    for number in range(cases):
        if number % 10 == 9:
            failures += follow_case(generator.rng, pools, sides, number, seed)
            run.cases += 1
            continue
        failures += run_case(generator.case(number), sides, pools, seed, run)
    return run, failures


@pytest.mark.neo4j
def test_fuzzed_operations_answer_alike_on_both_stores_without_internal_errors(
    sides: list[Side],
) -> None:
    run, failures = fuzz(sides, SEED, CASES)

    assert not failures, f"{len(failures)} failures in {run}; the first:\n\n" + \
        "\n\n".join(failures[:5])
    assert run.compared > CASES // 2  # the differential check ran on most cases
