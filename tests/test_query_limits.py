"""Every query is bounded: walk caps, document limits, a timeout with its own error, masked
internal errors, and batched nested lookups."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.auth import create_token
from lineagegraph.api.query_workers import QueryWorkers
from lineagegraph.api.request_ids import REQUEST_ID
from lineagegraph.api.settings import Settings
from lineagegraph.graph.store import GraphStore

from .story import load_story


def post(client: TestClient, query: str, **variables: Any) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text  # limits answer as GraphQL errors
    return response.json()


@pytest.fixture
def client(store: GraphStore) -> Iterator[TestClient]:
    load_story(store)
    with TestClient(create_app(Settings(neo4j_uri=None, max_depth=4), store=store)) as c:
        yield c


def test_a_depth_of_ten_to_the_fifth_is_cut_to_the_cap(client: TestClient) -> None:
    body = post(client, """{ lineage(id: "outcome:req-3001", depth: 100000) {
        nodes { degree } truncated } }""")

    lineage = body["data"]["lineage"]
    assert lineage["truncated"] is True
    assert max(n["degree"] for n in lineage["nodes"]) == 4


def test_two_thousand_aliases_are_refused_before_execution(client: TestClient) -> None:
    fields = " ".join(f'a{i}: node(id: "run:r-fraud-7") {{ id }}' for i in range(2000))
    body = post(client, "{ " + fields + " }")

    assert body["data"] is None
    assert any("aliases" in e["message"] or "token" in e["message"]
               for e in body["errors"]), body["errors"][:1]


def test_a_query_past_the_timeout_gets_its_own_error(store: GraphStore) -> None:
    load_story(store)
    settings = Settings(neo4j_uri=None, query_timeout_s=1e-6)
    with TestClient(create_app(settings, store=store)) as slow:
        body = post(slow, '{ blastRadius(id: "source:warehouse.payments") { totalTraffic } }')

    assert body["data"] == {"blastRadius": None}
    assert "timed out" in body["errors"][0]["message"]
    assert body["errors"][0]["extensions"] == {"code": "QUERY_TIMEOUT"}


def test_unexpected_failures_are_masked_not_leaked(tmp_path: Any) -> None:
    from lineagegraph.graph.embedded import EmbeddedStore

    broken = EmbeddedStore(tmp_path / "x.db")
    with TestClient(create_app(Settings(neo4j_uri=None), store=broken)) as client:
        client.get("/readyz")  # auth has read the (empty) token set: open mode
        broken.close()  # every query now fails inside sqlite3
        answer = client.post("/graphql", json={"query": '{ node(id: "run:x") { id } }'})

    body = answer.json()
    request_id = answer.headers["x-request-id"]  # what to look for in the log
    assert body["errors"][0]["message"] == (
        f"unexpected error (request {request_id}); the server log has the details")
    assert "sqlite" not in str(body).lower()


@pytest.mark.parametrize(("query", "variables", "says"), [
    # Variables that do not coerce are the caller's mistake, as the same values inline are.
    ('query ($d: Int) { lineage(id: "run:r-fraud-7", depth: $d) { truncated } }',
     {"d": "abc"}, "Variable '$d' has invalid value"),
    ("query ($id: ID!) { node(id: $id) { id } }", {}, "Variable '$id'"),
    ('query ($o: DateTime!) { driftSources(id: "bundle:support-triage@14", onset: $o) '
     "{ hops } }", {"o": "yesterday"}, "Variable '$o'"),
    ('{ driftSources(id: "bundle:support-triage@14", onset: "2026-11-08T00:00:00Z", '
     'lookback: "P99999999D") { hops } }', {}, "lookback: 'P99999999D' is longer"),
    ('mutation { approve(target: "foo") { id } }', {}, "target: 'foo' is not an ID"),
    ('mutation { upsert(nodes: [{id: "source:x", kind: "Bogus"}]) { nodes { created } } }',
     {}, "nodes.0: unknown kind 'Bogus'"),
    ('mutation { upsert(nodes: [{id: "source:x", createdAt: "2026-11-01T00:00:00Z"}], '
     'edges: [{source: "source:x", type: "FEEDS", target: "source:y"}]) '
     "{ nodes { created } } }", {}, "edges.0.type: unknown edge type 'FEEDS'"),
    ("{ auditLog(first: -1) { seq } }", {}, "first: must be between 0 and 5000"),
    # a request ID no stored request can have: refused naming the argument, not null,
    # and quoting the ID (cut short) as an ID is
    (f'{{ trace(requestId: "{"r" * 1001}") {{ environment }} }}', {},
     f"requestId: {'r' * 60!r}… (1,001 characters) is 1,001 bytes"),
    ("query ($r: String!) { trace(requestId: $r) { environment } }", {"r": "req\u0001"},
     "requestId: 'req\\x01' holds the control character U+0001"),
    ('{ driftSources(id: "bundle:support-triage@14", onset: "0001-01-02T00:00:00Z") '
     "{ hops } }", {}, "onset: 0001-01-02T00:00:00+00:00 less the lookback (P7D) is before "
     "year 1"),
    ('{ driftSources(id: "bundle:support-triage@14", onset: "2026-11-08T00:00:00Z", '
     'lookback: "P1M") { hops } }', {}, "lookback: 'P1M': months and years have no fixed "
     "length; give days instead"),
    ('{ driftSources(id: "bundle:support-triage@14", onset: "2026-11-08T00:00:00Z", '
     'lookback: "P7DT") { hops } }', {}, "lookback: 'P7DT' is not an ISO 8601 duration"),
    ('{ blastRadius(id: "bundle:support-triage@14", since: "2026-11-08T00:00:00Z", '
     'until: "2026-11-01T00:00:00Z") { totalTraffic } }', {}, "until: 2026-11-01"),
    ('{ unregistered(since: "2026-11-08T00:00:00Z", until: "2026-11-01T00:00:00Z") '
     "{ requests } }", {}, "until: 2026-11-01"),
])
def test_bad_arguments_are_answered_with_what_is_wrong_not_masked(
    client: TestClient, query: str, variables: dict[str, Any], says: str,
) -> None:
    body = post(client, query, **variables)

    assert body["errors"][0]["message"].startswith(says), body["errors"]


class CountingStore:
    """The real store, with a count of its calls: to see how many round trips a query
    makes."""

    def __init__(self, inner: GraphStore) -> None:
        self._inner = inner
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return attribute(*args, **kwargs)

        return counted


def test_nested_bundle_fields_are_loaded_in_one_batch(store: GraphStore) -> None:
    load_story(store)
    counting = CountingStore(store)
    with TestClient(create_app(Settings(neo4j_uri=None), store=counting)) as client:  # type: ignore[arg-type]
        client.get("/readyz")  # auth reads the token set once; count only the query's calls
        counting.calls.clear()
        body = post(client, """{ search(kinds: ["Bundle"]) { nodes { id
            ... on Bundle { modelVersion { id } promptVersion { id } policyPack { id }
                            toolset { id } retrievesFrom { id } } } } }""")

    bundles = body["data"]["search"]["nodes"]
    assert len(bundles) == 3
    assert {b["id"]: b["modelVersion"]["id"] for b in bundles}["bundle:fraud-scoring@2"] == (
        "model:fraud-detector@7")
    assert counting.calls == {"find": 1, "expand": 1}  # not one expand per bundle per field


def test_what_was_live_is_read_once_and_only_when_asked(store: GraphStore) -> None:
    load_story(store)
    counting = CountingStore(store)
    with TestClient(create_app(Settings(neo4j_uri=None), store=counting)) as client:  # type: ignore[arg-type]
        client.get("/readyz")
        counting.calls.clear()
        lean = post(client, '{ trace(requestId: "req-2002") { bundle { id } } }')
        lean_calls = dict(counting.calls)
        counting.calls.clear()
        full = post(client, """{ trace(requestId: "req-2002") { bundleLiveAtRequest
            liveInEnvironment { id } } }""")

    assert lean["data"]["trace"]["bundle"] is not None
    assert "live_bundles" not in lean_calls
    assert full["data"]["trace"]["bundleLiveAtRequest"] is not None
    assert full["data"]["trace"]["liveInEnvironment"]
    assert counting.calls.get("live_bundles") == 1  # both fields share one read


def test_an_operation_asking_for_more_walks_than_allowed_is_refused_before_running(
    store: GraphStore,
) -> None:
    load_story(store)
    walk = 'lineage(id: "run:r-fraud-7") { truncated }'
    settings = Settings(neo4j_uri=None, graphql_max_walks=3)
    with TestClient(create_app(settings, store=store)) as client:
        three = post(client, "{ " + " ".join(f"a{i}: {walk}" for i in range(3)) + " }")
        four = post(client, "{ " + " ".join(f"a{i}: {walk}" for i in range(4)) + " }")
        # Counted through fragments, each time they are spread; nested spreads of a
        # fragment counted once are a sum, not a walk through every spread.
        spread = post(client, "{ ...W ...W a: " + walk + " b: " + walk + " } "
                              "fragment W on Query { w1: " + walk + " w2: " + walk + " }")
        nested = post(client, "query { ...A } fragment A on Query { ...B ...B } "
                              "fragment B on Query { ...C ...C } "
                              "fragment C on Query { " + walk + " }")
        chain = "".join(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }} "
                        for i in range(60))
        deep = post(client, "query { ...F0 } " + chain + "fragment F60 on Query { "
                    + walk + " }")

    assert set(three["data"]) == {"a0", "a1", "a2"}
    assert four["data"] is None
    assert "asks for 4 graph walks" in four["errors"][0]["message"]
    # a cost limit, which a client can tell from a mistake in the document
    assert four["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX"}
    assert "asks for 6 graph walks" in spread["errors"][0]["message"]
    assert "asks for 4 graph walks" in nested["errors"][0]["message"]
    # at once: strawberry's depth limiter, which this replaced, took ~2^60 steps on it
    assert f"asks for {2 ** 60} graph walks" in deep["errors"][0]["message"]


def test_a_document_of_several_operations_runs_only_the_one_named(client: TestClient) -> None:
    # GraphQL's GetOperation: without operationName there is no operation to pick.
    document = 'query Look { __typename } query Find { node(id: "model:nope@1") { id } }'

    unnamed = client.post("/graphql", json={"query": document}).json()
    named = client.post("/graphql", json={"query": document, "operationName": "Find"}).json()

    assert unnamed["data"] is None
    assert unnamed["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "operationName" in unnamed["errors"][0]["message"]
    assert named["data"] == {"node": None} and "errors" not in named


def test_history_counts_as_a_large_read_against_the_walk_limit(store: GraphStore) -> None:
    """``history`` reads every version of a name: 50 aliases of it were one document."""
    load_story(store)
    read = 'history(id: "model:fraud-detector@7") { versions { id } }'
    settings = Settings(neo4j_uri=None, graphql_max_walks=2)
    with TestClient(create_app(settings, store=store)) as client:
        two = post(client, "{ " + " ".join(f"h{i}: {read}" for i in range(2)) + " }")
        three = post(client, "{ " + " ".join(f"h{i}: {read}" for i in range(3)) + " }")

    assert set(two["data"]) == {"h0", "h1"}
    assert three["data"] is None
    assert "asks for 3 graph walks" in three["errors"][0]["message"]


@contextmanager
def busy(workers: QueryWorkers) -> Iterator[threading.Event]:
    """Every query thread held until the event is set (set on leaving, too)."""
    release = threading.Event()
    held = [workers._executor().submit(release.wait, 30) for _ in range(workers.count)]
    try:
        yield release
    finally:
        release.set()
        for future in held:
            future.result()


def test_a_query_with_no_free_worker_within_its_budget_says_so_and_a_mutation_writes_nothing(
    store: GraphStore,
) -> None:
    load_story(store)
    secret = create_token(store, "release-eng", "admin", actor="test")[1]
    app = create_app(Settings(neo4j_uri=None, query_workers=1, query_timeout_s=0.5),
                     store=store)
    moves = store.stage_history()
    with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as client:
        with busy(app.state.query_workers):
            read = post(client, '{ node(id: "run:r-fraud-7") { id } }')
            write = post(client, 'mutation { promote(bundle: "fraud-scoring", version: "2", '
                                 'environment: "staging", overrideReason: "t") { promoted } }')
        after = post(client, '{ node(id: "run:r-fraud-7") { id } }')
        waiting = metric(client, "lineagegraph_query_work_waiting")

    for body in (read, write):
        assert body["errors"][0]["extensions"] == {"code": "QUERY_TIMEOUT"}
        assert "no query worker was free (LINEAGEGRAPH_QUERY_WORKERS, 1 here" in \
            body["errors"][0]["message"]
    assert store.stage_history() == moves  # the unstarted promotion never ran
    assert after["data"] == {"node": {"id": "run:r-fraud-7"}}
    assert waiting == 0  # work dropped unstarted counts as waiting no more


def test_queries_beyond_the_workers_wait_their_turn_and_metrics_show_them(
    store: GraphStore,
) -> None:
    load_story(store)
    app = create_app(Settings(neo4j_uri=None, query_workers=1), store=store)
    with TestClient(app) as client, ThreadPoolExecutor(1) as caller:
        with busy(app.state.query_workers):
            answer = caller.submit(post, client, '{ node(id: "run:r-fraud-7") { id } }')
            deadline = time.monotonic() + 5
            while (waiting := metric(client, "lineagegraph_query_work_waiting")) == 0 \
                    and time.monotonic() < deadline:
                time.sleep(0.01)
            workers = metric(client, "lineagegraph_query_workers")
        body = answer.result(timeout=10)

    assert (waiting, workers) == (1, 1)
    assert body == {"data": {"node": {"id": "run:r-fraud-7"}}}


def metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_query_work_runs_with_the_request_s_context_so_its_logs_name_the_request() -> None:
    workers = QueryWorkers(1)

    async def in_request() -> str | None:
        REQUEST_ID.set("req-abc")
        return await workers.run(time.monotonic() + 5, REQUEST_ID.get)

    try:
        assert asyncio.run(in_request()) == "req-abc"
    finally:
        workers.close()
