"""Benchmarks of Lineage Graph on a generated platform graph (design §9).

    python bench/run.py --scale small --store embedded --out bench/results/small-embedded.json
    NEO4J_URI=bolt://127.0.0.1:7795 python bench/run.py --scale medium --store neo4j \
        --out bench/results/medium-neo4j.json

Loads the graph of ``bench/generate.py`` through the project's own ingest path (registry
manifests with ``map_manifests``, outcome NDJSON with ``DeadLetteringLoad`` +
``load_batches``, as ``lineagegraph ingest`` does), starts a real ``lineagegraph serve`` on a
free loopback port, and measures, each figure a median over repeated runs in this process
with its spread (min-max) printed:

- ingest: the ingest path vs the raw driver running the same UNWIND statements on
  pre-built rows (the ceiling) and vs one MERGE per record in its own transaction (naive);
- trace over GraphQL (HTTP) on random requests vs the same Cypher/SQL statements the
  service issues, replayed with the raw driver;
- blastRadius of the hottest model version vs a variable-length-path formulation (with a
  time limit); driftSources and resolve over GraphQL; the server's peak RSS.

Ratios and what they mean: see bench/README.md. ``--store neo4j`` wipes the database at
NEO4J_URI (default bolt://127.0.0.1:7687): point it at a Neo4j of your own.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import http.client
import json
import os
import platform as pyplatform
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import SCALES, START, Platform, generate  # noqa: E402

from lineagegraph.graph.embedded import (  # noqa: E402
    INSERT_EDGE,
    INSERT_NODE,
    UPSERT_EDGE,
    UPSERT_NODE,
)
from lineagegraph.graph.impact import DIRECT_TRAFFIC_KINDS, blast_radius  # noqa: E402
from lineagegraph.graph.neo4j_store import (  # noqa: E402
    _epoch,
    created_edges_query,
    created_nodes_query,
    driver_auth,
)
from lineagegraph.graph.store import Direction, GraphStore  # noqa: E402
from lineagegraph.graph.trace import trace as run_trace  # noqa: E402
from lineagegraph.graph.traffic import OUTCOME_EDGES, deltas  # noqa: E402
from lineagegraph.ingest.batch import _collector_paused, _prepared, load_batches  # noqa: E402
from lineagegraph.ingest.manifest_formats import RawDoc  # noqa: E402
from lineagegraph.ingest.manifests import map_manifests  # noqa: E402
from lineagegraph.ingest.outcomes import BATCH_SIZE, DeadLetteringLoad, read_file  # noqa: E402
from lineagegraph.schema import LINEAGE_EDGE_TYPES  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
ACTOR = "bench"
T = TypeVar("T")

TRACE_QUERY = """query($r: String!) { trace(requestId: $r) {
  outcome { id } bundle { id } modelVersion { id } promptVersion { id } toolset { id }
  policyPack { id } environment approvals { id } evaluations { id }
  upstream { nodes { node { id kind } degree } edges { source target type } truncated } } }"""
BLAST_QUERY = """query($id: ID!) { blastRadius(id: $id) {
  root { id } bundles { bundle { id } environments } traffic { environment count }
  rollbackTarget { id } warnings downstream { truncated nodes { node { id } degree } } } }"""
DRIFT_QUERY = """query($id: ID!, $onset: DateTime!) {
  driftSources(id: $id, onset: $onset, lookback: "P14D") {
    node { id } change changedAt hops score path } }"""
RESOLVE_QUERY = """query($name: String!, $env: String!, $at: DateTime) {
  resolve(name: $name, environment: $env, asOf: $at) { id properties } }"""


# -- statistics ---------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class Figures:
    """Named figures, each a list of repeated measurements; reported as median + spread."""

    def __init__(self) -> None:
        self.runs: dict[str, list[float]] = {}
        self.notes: dict[str, str] = {}

    def add(self, key: str, value: float) -> None:
        self.runs.setdefault(key, []).append(value)

    def median(self, key: str) -> float | None:
        values = self.runs.get(key)
        return statistics.median(values) if values else None

    def spread(self, key: str) -> list[float] | None:
        values = self.runs.get(key)
        return [min(values), max(values)] if values else None


def in_turn(items: Sequence[T], turn: int) -> list[T]:
    """``items`` rotated to start at ``turn`` (modulo their number): comparisons take
    turns at going first, since going first after a wait or a delete is not the same as
    going second."""
    start = turn % len(items)
    return [*items[start:], *items[:start]]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


# -- the stores, raw -----------------------------------------------------------------------


class RawNeo4j:
    """The raw driver, no service: the statements ``Neo4jStore`` sends for a batch of new
    requests (taken from it), and replay of captured read statements."""

    NODES = created_nodes_query("InferenceOutcome")
    EDGES = created_edges_query("SERVED_BY")
    NAIVE = """
        MERGE (n:Node {id: $id})
        ON CREATE SET n:InferenceOutcome, n.kind = $kind, n.name = $name,
                      n.created_at = $created_at
        SET n.props = $props, n.environment = $environment, n.status = $status
        WITH n MATCH (b:Node {id: $bundle}) MERGE (n)-[r:SERVED_BY]->(b) SET r.props = '{}'
    """

    def __init__(self, uri: str, user: str | None, password: str | None, database: str):
        import neo4j

        self.neo4j = neo4j
        self.driver = neo4j.GraphDatabase.driver(
            uri, auth=driver_auth(user, password),
            notifications_min_severity=neo4j.NotificationMinimumSeverity.OFF)
        self.database = database

    def bulk(self, batches: list[tuple[list[dict], list[dict]]], in_flight: int = 1) -> None:
        """Each batch in a transaction of its own, ``in_flight`` of them at once (as many
        as the store's bulk load keeps: ``GraphStore.parallel_writes``)."""
        def write(batch: tuple[list[dict], list[dict]]) -> None:
            node_rows, edge_rows = batch

            def work(tx: Any) -> None:
                tx.run(self.NODES, rows=node_rows).consume()
                tx.run(self.EDGES, rows=edge_rows).consume()

            with self.driver.session(database=self.database) as session:
                session.execute_write(work)

        with ThreadPoolExecutor(max_workers=in_flight) as pool:
            list(pool.map(write, batches))

    def naive(self, rows: list[dict]) -> None:
        # py2neo-style: one MERGE statement per record, each in its own transaction (written
        # with the official driver: py2neo is end-of-life and does not support Neo4j 5).
        with self.driver.session(database=self.database) as session:
            for row in rows:
                session.execute_write(lambda tx, row=row: tx.run(self.NAIVE, **row).consume())

    def delete_prefix(self, prefix: str) -> None:
        with self.driver.session(database=self.database) as session:
            session.run("MATCH (n:Node) WHERE n.id STARTS WITH $p "
                        "CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS",
                        p=prefix).consume()

    def replay(self, statements: list[tuple[str, dict]]) -> None:
        # the cheapest raw way: auto-commit reads in one session
        with self.driver.session(database=self.database,
                                 default_access_mode=self.neo4j.READ_ACCESS) as session:
            for query, params in statements:
                list(session.run(query, params))

    def varlength(self, node_id: str, timeout_s: float) -> float | None:
        """Seconds for the path-enumerating formulation, None if it hit the time limit."""
        types = "|".join(LINEAGE_EDGE_TYPES)
        query = self.neo4j.Query(
            f"MATCH p = (m:Node {{id: $id}})<-[:{types}*1..20]-(x:Node) "
            "WITH x, min(length(p)) AS degree "
            "RETURN x.kind AS kind, x.environment AS env, degree, count(*) AS n",
            timeout=timeout_s)
        started = time.perf_counter()
        try:
            self.driver.execute_query(query, {"id": node_id},
                                      routing_=self.neo4j.RoutingControl.READ,
                                      database_=self.database)
        except self.neo4j.exceptions.Neo4jError as error:
            if "Timeout" in (error.code or "") or "timeout" in str(error).lower():
                return None
            raise
        return time.perf_counter() - started

    def close(self) -> None:
        self.driver.close()


class RawSqlite:
    """sqlite3 on the embedded store's file, no service: the statements ``EmbeddedStore``
    sends for a batch of new requests (taken from it), and its upserts for the naive
    loader."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA foreign_keys = ON")

    def bulk(self, batches: list[tuple[list[tuple], list[tuple]]], in_flight: int = 1) -> None:
        # SQLite takes one writer at a time: ``in_flight`` is always 1 here.
        for node_rows, edge_rows in batches:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(INSERT_NODE, node_rows)
            self.conn.executemany(INSERT_EDGE, edge_rows)
            self.conn.execute("COMMIT")

    def naive(self, rows: list[tuple[tuple, tuple]]) -> None:
        for node_row, edge_row in rows:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(UPSERT_NODE, node_row)
            self.conn.execute(UPSERT_EDGE, edge_row)
            self.conn.execute("COMMIT")

    def delete_prefix(self, prefix: str) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("DELETE FROM edges WHERE substr(source, 1, ?) = ?",
                          (len(prefix), prefix))
        self.conn.execute("DELETE FROM nodes WHERE substr(id, 1, ?) = ?",
                          (len(prefix), prefix))
        self.conn.execute("COMMIT")

    def replay(self, statements: list[tuple[str, Sequence[Any]]]) -> None:
        for sql, params in statements:
            self.conn.execute(sql, params).fetchall()

    def varlength(self, node_id: str, timeout_s: float) -> float | None:
        """The SQL twin of a variable-length path: a recursive CTE enumerating paths
        (UNION ALL, depth ≤ 20), min depth per node, grouped like blastRadius."""
        types = json.dumps(list(LINEAGE_EDGE_TYPES))
        deadline = time.perf_counter() + timeout_s
        self.conn.set_progress_handler(lambda: int(time.perf_counter() > deadline), 10_000)
        started = time.perf_counter()
        try:
            self.conn.execute(
                "WITH RECURSIVE down(id, depth) AS (SELECT ?, 0 UNION ALL "
                "SELECT e.source, d.depth + 1 FROM edges e JOIN down d ON e.target = d.id "
                "WHERE d.depth < 20 AND e.type IN (SELECT value FROM json_each(?))) "
                "SELECT n.kind, json_extract(n.props, '$.environment') AS env, degree, "
                "count(*) FROM (SELECT id, min(depth) AS degree FROM down WHERE depth > 0 "
                "GROUP BY id) x JOIN nodes n ON n.id = x.id GROUP BY 1, 2, 3",
                (node_id, types)).fetchall()
        except sqlite3.OperationalError as error:
            if "interrupted" in str(error):
                return None
            raise
        finally:
            self.conn.set_progress_handler(None, 0)
        return time.perf_counter() - started

    def close(self) -> None:
        self.conn.close()


# -- ingest --------------------------------------------------------------------------------


def load_registry(store: GraphStore, p: Platform) -> float:
    raws = [RawDoc(i, doc) for i, doc in enumerate(p.manifests, 1)]
    seconds, _ = timed(lambda: load_batches(
        store, [map_manifests(raws, store, actor=ACTOR, source="bench")]))
    return seconds


def load_outcomes(store: GraphStore, path: Path) -> tuple[float, int]:
    load = DeadLetteringLoad(store, actor=ACTOR, source=path.name)
    summary = load_batches(store, load.batches(read_file(path)), prefetch=True)
    if load.rejected:
        raise SystemExit(f"{load.rejected} outcome records were rejected: see deadletter list")
    return summary.seconds, summary.records


def write_ndjson(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def build_only(store: GraphStore, path: Path) -> None:
    """What ``load_outcomes`` does but the writes: parse, validate, map, prepare."""
    load = DeadLetteringLoad(store, actor=ACTOR, source=path.name)
    with _collector_paused():
        for _ in _prepared(store, load.batches(read_file(path)), collect=True):
            pass


def forget_sample(store: GraphStore, path: Path) -> None:
    """Take a sample's requests out of the traffic rollup before the raw delete removes
    them (the service has no delete): the blast radius then counts the generated traffic
    only, as ``info.blast_expected_outcomes`` says it should."""
    load = DeadLetteringLoad(store, actor=ACTOR, source=path.name)
    for batch in load.batches(read_file(path)):
        undo = [(key, -n) for key, n in deltas({}, batch.nodes, batch.edges)]
        store._write(lambda tx, undo=undo: tx.add_traffic(undo))


def _ts_sqlite(text: str) -> str:
    from datetime import datetime

    from lineagegraph.graph.embedded import _ts

    return _ts(datetime.fromisoformat(text.replace("Z", "+00:00"))) or ""


def raw_rows(records: list[dict], store_kind: str) -> tuple[list, list]:
    """Pre-built rows for the raw ceiling and the naive loader (built outside the timing,
    which is what makes it a ceiling)."""
    from datetime import datetime

    batches, naive = [], []
    for start in range(0, len(records), BATCH_SIZE):
        nodes, edges = [], []
        for r in records[start:start + BATCH_SIZE]:
            props = {k: v for k, v in r.items()
                     if k not in ("request_id", "timestamp", "bundle")}
            props_json = json.dumps(props, sort_keys=True, separators=(",", ":"))
            oid = f"outcome:{r['request_id']}"
            bundle = f"bundle:{r['bundle']}"
            if store_kind == "neo4j":
                created = datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00"))
                nodes.append({"id": oid, "kind": "InferenceOutcome", "name": r["request_id"],
                              "version": None, "created_at": _epoch(created),
                              "props": props_json,
                              "indexed": {"environment": r["environment"],
                                          "status": r["status"]}})
                edges.append({"source": oid, "target": bundle, "props": "{}"})
                naive.append({"id": oid, "kind": "InferenceOutcome", "name": r["request_id"],
                              "created_at": created, "props": props_json,
                              "environment": r["environment"], "status": r["status"],
                              "bundle": bundle})
            else:
                node = (oid, "InferenceOutcome", r["request_id"], None,
                        _ts_sqlite(r["timestamp"]), None, props_json)  # no version_key
                edge = (oid, "SERVED_BY", bundle, "{}")
                nodes.append(node)
                edges.append(edge)
                naive.append((node, edge))
        if store_kind == "neo4j":
            edges.sort(key=lambda row: (row["target"], row["source"]))  # as the store does
        batches.append((nodes, edges))
    return batches, naive


def bench_ingest(store: GraphStore, raw: RawNeo4j | RawSqlite, p: Platform, f: Figures,
                 store_kind: str, reps: int, sample: int, naive_n: int, tmp: Path) -> None:
    """Service path, raw ceilings and naive loader on the same fresh rows, ``reps`` times,
    each rep in another turn of their order: going first after the previous rep's deletes
    is not the same as going second (interleaved at medium, ten reps: the service's ratio
    0.86 when it went first, 0.73 when the ceiling did)."""
    base: list[dict] = []
    for record in p.outcomes():
        base.append(record)
        if len(base) >= sample:
            break
    # The ceiling keeps as many transactions in flight as the service's bulk load; with
    # more than one, the raw driver one transaction at a time ("serial") runs too. And
    # the ceiling again while the service's builder works through the same records in a
    # thread, its batches thrown away ("beside"): what the builder's CPU costs the writes.
    in_flight = store.parallel_writes
    labels = ["svc", "raw", "nv", "beside"] + (["serial"] if in_flight > 1 else [])
    for rep in range(reps):
        for label in in_turn(labels, rep):
            # fresh request IDs per rep and method: every run creates, never matches
            rows = [dict(r, request_id=f"b{label}{rep}-{r['request_id']}") for r in base]
            if label == "svc":
                path = write_ndjson(tmp / f"sample-{rep}.ndjson", rows)
                seconds, count = load_outcomes(store, path)
                f.add("ingest_outcomes_per_s", count / seconds)
                forget_sample(store, path)
            elif label == "raw":
                batches, _ = raw_rows(rows, store_kind)
                seconds, _ = timed(lambda batches=batches: raw.bulk(batches, in_flight))
                f.add("raw_outcomes_per_s", len(rows) / seconds)
            elif label == "beside":
                path = write_ndjson(tmp / f"beside-{rep}.ndjson", rows)
                batches, _ = raw_rows(rows, store_kind)
                builder = threading.Thread(target=build_only, args=(store, path))
                started = time.perf_counter()
                builder.start()
                raw.bulk(batches, in_flight)
                seconds = time.perf_counter() - started
                builder.join()
                f.add("raw_beside_builder_outcomes_per_s", len(rows) / seconds)
            elif label == "serial":
                batches, _ = raw_rows(rows, store_kind)
                seconds, _ = timed(lambda batches=batches: raw.bulk(batches))
                f.add("raw_serial_outcomes_per_s", len(rows) / seconds)
            else:
                _, naive = raw_rows(rows[:naive_n], store_kind)
                seconds, _ = timed(lambda naive=naive: raw.naive(naive))
                f.add("naive_outcomes_per_s", len(naive) / seconds)
        for label in labels:
            raw.delete_prefix(f"outcome:b{label}{rep}-")
        svc, ceil, nv = (f.runs[k][-1] for k in (
            "ingest_outcomes_per_s", "raw_outcomes_per_s", "naive_outcomes_per_s"))
        f.add("ingest_vs_raw", svc / ceil)
        f.add("ingest_vs_naive", svc / nv)
        f.add("ingest_vs_raw_beside_builder",
              svc / f.runs["raw_beside_builder_outcomes_per_s"][-1])
        serial = ""
        if "serial" in labels:
            one = f.runs["raw_serial_outcomes_per_s"][-1]
            f.add("ingest_vs_raw_serial", svc / one)
            serial = f", raw one at a time {one:,.0f}/s"
        beside = f.runs["raw_beside_builder_outcomes_per_s"][-1]
        print(f"  ingest rep {rep + 1}: service {svc:,.0f}/s, raw {ceil:,.0f}/s "
              f"({in_flight} in flight; beside the builder {beside:,.0f}/s){serial}, "
              f"naive {nv:,.0f}/s", flush=True)


# -- the server ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(host: str, port: int | None, path: str, timeout: float,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body) of one GET on a connection of its own."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    with contextlib.closing(connection):
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()


def start_server(store_kind: str, db: str | None, uri: str | None,
                 log: Any = subprocess.PIPE, token: str | None = None,
                 ) -> tuple[subprocess.Popen, str]:
    """``lineagegraph serve`` on a free loopback port, once ready (asked with ``token``
    where the store holds tokens); its stderr to ``log`` (a file, for a run long enough
    to fill a pipe nobody reads)."""
    ready_headers = {"Authorization": f"Bearer {token}"} if token else None
    port = free_port()
    exe = Path(sys.executable).parent / "lineagegraph"
    cmd = [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--neo4j-uri", uri] if store_kind == "neo4j" else ["--db", db]
    env = {k: v for k, v in os.environ.items() if k != "NEO4J_URI"} \
        if store_kind != "neo4j" else dict(os.environ)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            said = proc.stderr.read().decode()[-2000:] if proc.stderr else "see its log"
            raise SystemExit(f"server exited: {said}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if http_get("127.0.0.1", port, "/readyz", timeout=2,
                        headers=ready_headers)[0] == 200:
                return proc, url
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("server did not become ready in 60 s")


def peak_rss_mb(pid: int) -> float | None:
    try:
        import psutil  # optional

        info = psutil.Process(pid).memory_info()
        peak = getattr(info, "peak_wset", None) or None
        if peak:
            return peak / 2**20
    except ImportError:
        pass
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class GraphQLClient:
    """POSTs GraphQL over one kept-alive HTTP/1.1 connection with the standard library.

    The load generator shares the box with the service and Neo4j, so its own CPU time
    lands in every figure it times: httpx spends ~0.9 ms of Python on each request here
    (GET /healthz: 1.4-1.6 ms through httpx, 0.5-0.8 ms through this; trace at medium on
    Neo4j: ~1 ms of the p50 and ~3 ms of the p99)."""

    def __init__(self, url: str, timeout: float = 120) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname or "127.0.0.1", parts.port, timeout
        self.connection: http.client.HTTPConnection | None = None

    def query(self, query: str, variables: dict) -> dict:
        body = json.dumps({"query": query, "variables": variables})
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port,
                                                             timeout=self.timeout)
            try:
                self.connection.request("POST", "/graphql", body=body,
                                        headers={"Content-Type": "application/json"})
                response = self.connection.getresponse()
                payload = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionError):
                # The server closes a connection left idle past its keep-alive timeout.
                self.close()
                if attempt == 2:
                    raise
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:500]!r}")
        result = json.loads(payload)
        if result.get("errors"):
            raise RuntimeError(f"GraphQL errors: {result['errors']}")
        return result["data"]

    def get(self, path: str) -> dict:
        return json.loads(http_get(self.host, self.port, path, self.timeout)[1])

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


# -- queries ---------------------------------------------------------------------------------


def capture_statements(store: GraphStore, fn: Callable[[], Any]) -> list[tuple[str, Any]]:
    """The read statements ``fn`` issues against the store (for the raw replay)."""
    captured: list[tuple[str, Any]] = []
    name = "_read" if hasattr(store, "_read") else "_query"
    original = getattr(store, name)
    if name == "_read":
        def recording(query: str, **params: Any) -> Any:
            captured.append((query, params))
            return original(query, **params)
    else:
        def recording(sql: str, params: Sequence[Any] = ()) -> Any:
            captured.append((sql, list(params)))
            return original(sql, params)
    setattr(store, name, recording)
    try:
        fn()
    finally:
        delattr(store, name)
    return captured


def graphql_in_process(store: GraphStore) -> Callable[[str, dict], dict]:
    """The service's GraphQL schema executed in this process on the store: what
    graphql-core adds to the analysis, without HTTP."""
    import asyncio

    from lineagegraph.api.graphql_schema import build_schema
    from lineagegraph.api.graphql_types import Context
    from lineagegraph.api.query_workers import QueryWorkers
    from lineagegraph.api.settings import Settings

    settings = Settings()
    schema = build_schema(settings)
    workers = QueryWorkers(settings.query_worker_count)  # as the app's: shared by queries
    loop = asyncio.new_event_loop()

    def execute(query: str, variables: dict) -> dict:
        result = loop.run_until_complete(schema.execute(
            query, variable_values=variables, context_value=Context(store, settings, workers)))
        if result.errors:
            raise RuntimeError(f"GraphQL errors: {result.errors}")
        return result.data or {}

    return execute


def timed_after_first_call(client: GraphQLClient, name: str, query: str,
                           variables: Callable[[], dict], reps: int, f: Figures,
                           info: dict[str, Any]) -> list[dict]:
    """``reps`` timed calls (``{name}_ms``) after one whose time goes to
    ``info[{name}_first_call_ms]``: a statement Neo4j has not run yet is planned first (the
    server's warm-up has run each analysis once, on other arguments). Their answers."""
    seconds, _ = timed(lambda: client.query(query, variables()))
    info[f"{name}_first_call_ms"] = round(seconds * 1000, 1)
    answers = []
    for _ in range(reps):
        arguments = variables()
        seconds, data = timed(lambda arguments=arguments: client.query(query, arguments))
        f.add(f"{name}_ms", seconds * 1000)
        answers.append(data)
    return answers


def bench_queries(store: GraphStore, raw: RawNeo4j | RawSqlite, p: Platform, f: Figures,
                  url: str, reps: int, requests: int, varlength_timeout: float,
                  warmup: int, calls: int) -> dict:
    rng = random.Random(p.seed)
    info: dict[str, Any] = {}
    client = GraphQLClient(url)
    n = p.scale.outcomes
    # The first trace after start-up: the server's warm-up (graph/warmup.py) has had Neo4j
    # plan the walk statements already; /readyz says how long each step took.
    seconds, _ = timed(lambda: client.query(TRACE_QUERY, {"r": f"req-{rng.randrange(n):07d}"}))
    info["first_trace_ms"] = round(seconds * 1000, 1)
    info["server_warm_up_s"] = client.get("/readyz")["warm_up_s"]
    # Warm up the server, the plan caches and the page cache — and the JVM: Neo4j's
    # Cypher runtime reaches its compiled speed after a few hundred traces (a fresh
    # instance at small: p50 14.8 ms over the first 250, 9-10 ms after).
    for i in rng.sample(range(n), min(n, warmup)):
        client.query(TRACE_QUERY, {"r": f"req-{i:07d}"})

    execute = graphql_in_process(store)
    for rep in range(reps):
        ids = [f"req-{i:07d}" for i in rng.sample(range(n), min(n, requests))]
        service, in_process, direct = [], [], []
        gc.collect()  # what the previous rep's in-process loops left behind
        for turn, rid in enumerate(ids):
            seconds, data = timed(lambda rid=rid: client.query(TRACE_QUERY, {"r": rid}))
            assert data["trace"] is not None, rid
            service.append(seconds * 1000)
            # Untimed, right after the HTTP request: it takes the cost of being first
            # after the client waited, which the two timed runs below would otherwise
            # pay unequally.
            statements = capture_statements(store, lambda rid=rid: run_trace(store, rid))
            # The same analysis through the GraphStore port in this process (the service
            # without its HTTP and GraphQL layers), and the raw replay of its statements,
            # taking turns at going first: at medium the one going first after the HTTP
            # request took ~0.5-1 ms longer, and the one going second after the other
            # ~0.15 ms less (bench/README.md, "the trace comparison takes turns").
            pair = [(in_process, lambda rid=rid: run_trace(store, rid)),
                    (direct, lambda statements=statements: raw.replay(statements))]
            for series, run in in_turn(pair, turn):
                series.append(timed(run)[0] * 1000)
        f.add("trace_p50_ms", pct(service, 0.5))
        f.add("trace_p99_ms", pct(service, 0.99))
        f.add("trace_raw_p50_ms", pct(direct, 0.5))
        f.add("trace_vs_raw", pct(service, 0.5) / pct(direct, 0.5))
        f.add("trace_store_p50_ms", pct(in_process, 0.5))
        f.add("trace_store_vs_raw", pct(in_process, 0.5) / pct(direct, 0.5))
        # Apart from the loop above, so that its garbage and Neo4j's extra work stay out
        # of the service's timings: the same query through the schema in this process
        # (GraphQL without HTTP), and the floor of any request through the served stack
        # (uvicorn, FastAPI, the middlewares, strawberry's view).
        in_graphql = [timed(lambda rid=rid: execute(TRACE_QUERY, {"r": rid}))[0] * 1000
                      for rid in ids]
        f.add("trace_graphql_p50_ms", pct(in_graphql, 0.5))
        floor = [timed(lambda: client.query("{ __typename }", {}))[0] * 1000 for _ in ids]
        f.add("http_floor_p50_ms", pct(floor, 0.5))
        info["trace_statements"] = len(statements)
        print(f"  trace rep {rep + 1}: p50 {pct(service, 0.5):.2f} ms, p99 "
              f"{pct(service, 0.99):.2f} ms, in process p50 {pct(in_graphql, 0.5):.2f} ms "
              f"(GraphQL) / {pct(in_process, 0.5):.2f} ms (store), raw p50 "
              f"{pct(direct, 0.5):.2f} ms, {{ __typename }} p50 {pct(floor, 0.5):.2f} ms",
              flush=True)

    hottest, hot_count = p.model_traffic.most_common(1)[0]
    info["blast_root"] = hottest
    info["blast_expected_outcomes"] = hot_count
    data = timed_after_first_call(client, "blast", BLAST_QUERY, lambda: {"id": hottest},
                                  calls, f, info)[-1]
    traffic = data["blastRadius"]["traffic"]
    info["blast_traffic"] = {t["environment"]: t["count"] for t in traffic}
    # The rollup's answer against counting the requests one by one in the store (the way
    # blastRadius counted before the rollup), and how long that takes.
    downstream = blast_radius(store, hottest).downstream  # type: ignore[union-attr]
    counted = [n.id for n in downstream.nodes.values() if n.kind in DIRECT_TRAFFIC_KINDS]
    seconds, exact = timed(lambda: store.count_neighbours(
        counted, Direction.DOWNSTREAM, kind="InferenceOutcome", edge_types=OUTCOME_EDGES,
        group_by="environment"))
    info["blast_count_per_request_ms"] = round(seconds * 1000, 1)
    info["blast_traffic_matches"] = exact == info["blast_traffic"]
    if not info["blast_traffic_matches"]:
        print(f"  WARNING: the rollup says {info['blast_traffic']}, counting the requests "
              f"says {exact}", flush=True)
    info["blast_downstream_nodes"] = len(data["blastRadius"]["downstream"]["nodes"])
    varlength_reps = max(1, min(reps, 3))
    for _ in range(varlength_reps):
        seconds = raw.varlength(hottest, varlength_timeout)
        if seconds is None:
            f.notes["blast_varlength_ms"] = f"hit the {varlength_timeout:.0f} s time limit"
            f.add("blast_varlength_ms", varlength_timeout * 1000)
            break
        f.add("blast_varlength_ms", seconds * 1000)
    f.add("blast_vs_varlength", f.median("blast_varlength_ms") / f.median("blast_ms"))
    if "blast_varlength_ms" in f.notes:
        f.notes["blast_vs_varlength"] = "lower bound: the variable-length query hit its limit"

    hot_bundle = p.bundle_traffic.most_common(1)[0][0]
    onset = (START + timedelta(days=45)).isoformat()
    info["drift_target"] = f"bundle:{hot_bundle}"
    data = timed_after_first_call(
        client, "drift", DRIFT_QUERY, lambda: {"id": f"bundle:{hot_bundle}", "onset": onset},
        calls, f, info)[-1]
    info["drift_candidates"] = len(data["driftSources"])
    name = hot_bundle.split("@")[0]

    def resolve_vars() -> dict[str, str]:
        at = (START + timedelta(days=rng.uniform(1, 89))).isoformat()
        return {"name": name, "env": "production", "at": at}

    answers = timed_after_first_call(client, "resolve", RESOLVE_QUERY, resolve_vars, calls, f,
                                     info)
    assert all(data["resolve"] is not None for data in answers)
    client.close()
    return info


# -- report ----------------------------------------------------------------------------------

ORDER = ["ingest_outcomes_per_s", "raw_outcomes_per_s", "raw_serial_outcomes_per_s",
         "raw_beside_builder_outcomes_per_s", "naive_outcomes_per_s", "ingest_vs_raw",
         "ingest_vs_raw_serial", "ingest_vs_raw_beside_builder", "ingest_vs_naive",
         "trace_p50_ms", "trace_p99_ms",
         "trace_raw_p50_ms", "trace_vs_raw", "trace_store_p50_ms", "trace_store_vs_raw",
         "trace_graphql_p50_ms", "http_floor_p50_ms", "blast_ms", "blast_varlength_ms",
         "blast_vs_varlength", "drift_ms", "resolve_ms"]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem,
            "python": pyplatform.python_version(), "os": pyplatform.platform()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--store", choices=["neo4j", "embedded"], default="embedded")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--reps", type=int, default=5, help="repeated runs per figure")
    # The ingest ratios swing ±0.1 from rep to rep on the two-core box: more reps than the
    # query figures, and an odd number, so that the median is one rep's ratio.
    parser.add_argument("--ingest-reps", type=int, default=9,
                        help="repeated runs of the ingest comparison")
    parser.add_argument("--requests", type=int, default=200, help="trace requests per rep")
    parser.add_argument("--ingest-sample", type=int, default=20_000,
                        help="outcomes per ingest ratio run")
    parser.add_argument("--naive-sample", type=int, default=1_000,
                        help="outcomes per naive-loader run")
    parser.add_argument("--varlength-timeout", type=float, default=60.0)
    parser.add_argument("--warmup", type=int, default=500,
                        help="trace requests before measuring")
    # Blast's time is bimodal on the two-core box (43-84 ms over five calls at large): the
    # median of five calls was a coin toss between the modes.
    parser.add_argument("--query-calls", type=int, default=21,
                        help="timed calls of blastRadius, driftSources and resolve")
    args = parser.parse_args()

    # The generated files (~0.5 GB at large) and the embedded store's file: gone afterwards.
    with tempfile.TemporaryDirectory(prefix=f"lineagegraph-bench-{args.scale}-") as scratch:
        run_benchmarks(args, Path(scratch))


def neo4j_env() -> tuple[str, str | None, str | None, str]:
    """The Neo4j a run measures: NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD, NEO4J_DATABASE."""
    return (os.environ.get("NEO4J_URI", "bolt://127.0.0.1:7687"), os.environ.get("NEO4J_USER"),
            os.environ.get("NEO4J_PASSWORD"), os.environ.get("NEO4J_DATABASE", "neo4j"))


def run_benchmarks(args: argparse.Namespace, tmp: Path) -> None:
    spec = SCALES[args.scale]
    f = Figures()
    uri, user, password, database = neo4j_env()
    store: GraphStore
    raw: RawNeo4j | RawSqlite
    db = None
    if args.store == "neo4j":
        from lineagegraph.graph.neo4j_store import Neo4jStore

        store = Neo4jStore(uri, user, password, database)
        store.wipe()
        raw = RawNeo4j(uri, user, password, database)
    else:
        from lineagegraph.graph.embedded import EmbeddedStore

        db = str(tmp / "bench.db")
        store = EmbeddedStore(db)
        raw = RawSqlite(db)

    print(f"scale {spec.name} ({spec.outcomes:,} outcomes), store {args.store}", flush=True)
    seconds, p = timed(lambda: generate(spec, args.seed))
    outcomes_path = tmp / "outcomes.ndjson"
    gen_seconds, _ = timed(lambda: p.write(tmp))
    p.count_traffic()
    # This process holds the generated platform (millions of objects at large): out of the
    # collector's sight, so that full collections walking it slow neither the raw and
    # naive loaders timed here nor the timer around the service's answers.
    gc.collect()
    gc.freeze()
    print(f"  generated {len(p.manifests):,} manifest documents and {spec.outcomes:,} "
          f"outcomes in {seconds + gen_seconds:.1f} s", flush=True)
    registry_s = load_registry(store, p)
    print(f"  registry loaded in {registry_s:.1f} s", flush=True)
    load_s, loaded = load_outcomes(store, outcomes_path)
    print(f"  {loaded:,} outcomes loaded in {load_s:.1f} s ({loaded / load_s:,.0f}/s)",
          flush=True)

    bench_ingest(store, raw, p, f, args.store, args.ingest_reps,
                 min(args.ingest_sample, spec.outcomes), min(args.naive_sample, spec.outcomes),
                 tmp)

    proc, url = start_server(args.store, db, uri)
    try:
        info = bench_queries(store, raw, p, f, url, args.reps, args.requests,
                             args.varlength_timeout, warmup=args.warmup,
                             calls=args.query_calls)
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    raw.close()
    store.close()

    result: dict[str, Any] = {
        "scale": spec.name, "store": args.store, "seed": args.seed,
        "outcomes": spec.outcomes, "manifest_documents": len(p.manifests),
        "reps": args.reps, "ingest_reps": args.ingest_reps,
        "trace_requests_per_rep": args.requests,
        "query_calls": args.query_calls,
        "ingest_sample": min(args.ingest_sample, spec.outcomes),
        "naive_sample": min(args.naive_sample, spec.outcomes), "warmup_traces": args.warmup,
        "outcome_batch_size": BATCH_SIZE,
        "writes_in_flight": store.parallel_writes,
        "registry_load_s": round(registry_s, 2),
        "full_load_outcomes_per_s": round(loaded / load_s, 1),
        "full_load_s": round(load_s, 1),
        "service_rss_mb": round(rss, 1) if rss is not None else None,
    }
    for key in ORDER:
        value = f.median(key)
        result[key] = round(value, 3) if value is not None else None
    result["spread"] = {k: [round(v, 3) for v in f.spread(k) or []] for k in ORDER}
    result["notes"] = f.notes
    result["info"] = info
    result["embedded_vs_neo4j"] = embedded_vs_neo4j(result, args.out)
    result["machine"] = machine()
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {args.out}")


def embedded_vs_neo4j(result: dict, out: Path) -> float | None:
    """Embedded trace p50 / Neo4j trace p50 at the same scale, from this run and the other
    store's result file beside ``out`` (or in bench/results)."""
    other = "neo4j" if result["store"] == "embedded" else "embedded"
    for folder in (out.parent, RESULTS):
        path = folder / f"{result['scale']}-{other}.json"
        if path.exists():
            theirs = json.loads(path.read_text())
            emb, neo = ((result, theirs) if other == "neo4j" else (theirs, result))
            if emb.get("trace_p50_ms") and neo.get("trace_p50_ms"):
                return round(emb["trace_p50_ms"] / neo["trace_p50_ms"], 3)
    return None


def print_table(result: dict) -> None:
    print(f"\n{'figure':<24}{'median':>14}   spread (min-max over reps)")
    for key in [*ORDER, "service_rss_mb", "full_load_outcomes_per_s", "embedded_vs_neo4j"]:
        value = result.get(key)
        spread = result["spread"].get(key) or []
        text = f"{value:,.3f}" if isinstance(value, float) else str(value)
        span = f"{spread[0]:,.3f} – {spread[1]:,.3f}" if spread else ""
        note = result["notes"].get(key, "")
        print(f"{key:<24}{text:>14}   {span} {note}")


if __name__ == "__main__":
    main()
