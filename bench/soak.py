"""A soak run of the serving process: a seeded mixed load for minutes, watching what grows.

    python bench/soak.py --store embedded --minutes 20 --out bench/results/soak-embedded.json
    NEO4J_URI=bolt://127.0.0.1:7795 python bench/soak.py --store neo4j --minutes 20 \\
        --out bench/results/soak-neo4j.json          # it WIPES that database

Loads the generated platform of ``bench/generate.py`` (``--scale``, ``tiny`` by default)
through the ingest path, starts a real ``lineagegraph serve`` (with a token unless
``--open``), and runs ``--clients`` threads of a mixed load against it: outcome batches
(NDJSON), OpenLineage events (the real ones under ``--openlineage`` with fresh run IDs),
manifest documents (new bundle versions), GraphQL queries and mutations, a share of bad
requests (4xx expected) and of clients that give up mid-request or hang up mid-body, and
one more client that declares a body, sends part of it and goes quiet (a 408 expected).

Every ``--interval`` seconds it samples the server: RSS, threads, open fds and sockets
(/proc), the number of series ``/metrics`` answers, its log's size and error lines, the
store's open transactions and connections (Neo4j: ``SHOW TRANSACTIONS``,
``dbms.listConnections``) or the SQLite file and WAL sizes; and per operation kind the
interval's p50/p99 latency and answers by status. A table row per interval; at the end
the growth per hour of each figure (a least-squares slope over the second half of the
run, after warm-up) and what was unexpected (a 5xx, a 4xx to a good request, a 2xx to a
bad one, an error code a request should not get). Not a timed test: figures only.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate import SCALES, Platform, generate, iso  # noqa: E402
from run import (  # noqa: E402
    load_outcomes,
    load_registry,
    machine,
    neo4j_env,
    pct,
    start_server,
)

from lineagegraph.api.auth import create_token  # noqa: E402
from lineagegraph.graph.store import GraphStore  # noqa: E402

OPENLINEAGE = Path(os.environ.get("LINEAGEGRAPH_OPENLINEAGE_DATA",
                                  "/work/shared/data/openlineage"))
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# The server's own gauges (api/metrics.py) sampled from /metrics beside the series count.
GAUGES = {"lineagegraph_ingest_body_bytes_in_flight": "ingest_bytes_in_flight",
          "lineagegraph_ingest_waiting": "ingest_waiting",
          "lineagegraph_query_work_running": "query_running",
          "lineagegraph_query_work_waiting": "query_waiting"}
SAMPLED = ("rss_mb", "threads", "fds", "sockets", "metrics_series", *GAUGES.values(),
           "log_kb", "log_errors", "store_open_tx", "store_connections", "db_mb", "wal_mb")

Q_TRACE = """query($r: String!) { trace(requestId: $r) { outcome { id } bundle { id }
  modelVersion { id } approvals { id } environment bundleLiveAtRequest
  upstream { nodes { node { id } degree } truncated } } }"""
Q_BLAST = """query($id: ID!) { blastRadius(id: $id) { root { id } totalTraffic
  traffic { environment count } rollbackTarget { id } warnings
  bundles { bundle { id } environments } downstream(first: 50) { truncated
  nodes { node { id } degree } } } }"""
Q_DRIFT = """query($id: ID!, $onset: DateTime!) { driftSources(id: $id, onset: $onset,
  lookback: "P14D") { node { id } change changedAt hops score path } }"""
Q_LINEAGE = """query($id: ID!, $after: String) { lineage(id: $id, direction: BOTH, depth: 3,
  first: 20, after: $after) { nodes { node { id } degree } truncated
  pageInfo { hasNextPage endCursor } } }"""
Q_SEARCH = """query($t: String!) { search(text: $t, first: 20) { nodes { id kind }
  pageInfo { hasNextPage endCursor } } }"""
Q_HISTORY = """query($id: ID!) { history(id: $id) { node { id } versions { id }
  stageMoves { environment toVersion at } versionsCursor } }"""
Q_AUDIT = """query($target: String) { auditLog(target: $target, first: 50) { seq at actor
  action target } }"""
Q_IMPACT = """query($b: String!, $v: String!, $e: String!) { promotionImpact(bundle: $b,
  version: $v, environment: $e) { verdict reasons gates { name passed reason }
  current { id } candidate { id } } }"""
Q_RESOLVE = """query($n: String!, $e: String!, $at: DateTime) { resolve(name: $n,
  environment: $e, asOf: $at) { id properties } }"""
Q_UNREG = """query($since: DateTime) { unregistered(since: $since) { node { id } requests
  firstSeen lastSeen } }"""
M_PROMOTE = """mutation($b: String!, $v: String!, $e: String!) { promote(bundle: $b,
  version: $v, environment: $e) { promoted move { toVersion } report { verdict } } }"""
M_ROLLBACK = """mutation($n: String!, $e: String!) { rollback(name: $n, environment: $e,
  reason: "soak") { move { toVersion } warnings } }"""
M_APPROVE = """mutation($t: ID!) { approve(target: $t, gate: "soak") { id } }"""

# GraphQL error codes a well-formed request may get: a refusal the service means (a
# rollback with nothing earlier, a promotion another overtook, a bundle it does not
# know), never INTERNAL, a missing code or STORE_UNAVAILABLE.
MEANT_CODES = frozenset({"BAD_USER_INPUT", "NOT_FOUND", "CONFLICT", "FORBIDDEN"})


@dataclass(slots=True)
class Answer:
    op: str
    seconds: float
    status: str  # an HTTP status, "aborted" (the client gave up or hung up) or "error"
    unexpected: str | None = None


@dataclass(slots=True)
class Tally:
    """What the clients saw since the last sample; the sampler takes it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: list[Answer] = field(default_factory=list)

    def add(self, answer: Answer) -> None:
        with self.lock:
            self.answers.append(answer)

    def take(self) -> list[Answer]:
        with self.lock:
            taken, self.answers = self.answers, []
        return taken


def openlineage_templates(folder: Path) -> list[dict]:
    """The real events: each scenario's ``*.json`` is one event, the Marquez file an array."""
    events: list[dict] = []
    for path in sorted(folder.rglob("*.json")):
        data = json.loads(path.read_text())
        events += [e for e in (data if isinstance(data, list) else [data])
                   if isinstance(e, dict) and "run" in e]
    if not events:
        raise SystemExit(f"no OpenLineage events under {folder} (--openlineage)")
    return events


class Workload:
    """The seeded operations one client thread draws from, each returning an ``Answer``.
    What they create (request IDs, bundle versions) is shared, so reads find it."""

    def __init__(self, platform: Platform, url: str, headers: dict[str, str],
                 read_headers: dict[str, str] | None, seed: int) -> None:
        self.url, self.headers, self.read_headers = url, headers, read_headers
        self.events = openlineage_templates(OPENLINEAGE)
        self.lock = threading.Lock()
        self.request_ids = list(platform.request_ids) or ["req-none"]
        self.bundles: dict[str, dict] = {}  # name -> its latest manifest document
        self.models: list[str] = []
        for doc in platform.manifests:
            if "model" in doc and "kind" not in doc:
                self.bundles[doc["name"]] = doc
                self.models.append(str(doc["model"]))
        self.versions = {name: int(doc["version"]) for name, doc in self.bundles.items()}
        self.counter = 0
        self.seed = seed
        self.ops: list[tuple[str, float, Callable[[httpx.Client, random.Random], Answer]]] = [
            ("outcomes", 8, self.outcomes), ("openlineage", 6, self.openlineage),
            ("manifest", 2, self.manifest), ("trace", 16, self.trace),
            ("blast", 4, self.blast), ("drift", 4, self.drift), ("lineage", 6, self.lineage),
            ("search", 4, self.search), ("history", 4, self.history),
            ("audit", 3, self.audit), ("impact", 2, self.impact), ("resolve", 5, self.resolve),
            ("unregistered", 2, self.unregistered), ("promote", 2, self.promote),
            ("rollback", 1, self.rollback), ("approve", 2, self.approve),
            ("bad", 10, self.bad), ("abort", 5, self.abort), ("metrics", 1, self.metrics),
        ]

    # -- helpers ---------------------------------------------------------------------------

    def fresh(self, prefix: str) -> str:
        with self.lock:
            self.counter += 1
            return f"{prefix}-{self.seed}-{self.counter}"

    def call(self, client: httpx.Client, op: str, method: str, path: str,
             expect: Callable[[httpx.Response], str | None], **kw: Any) -> Answer:
        kw.setdefault("headers", self.headers)
        started = time.perf_counter()
        try:
            response = client.request(method, self.url + path, **kw)
        except httpx.TimeoutException:
            return Answer(op, time.perf_counter() - started, "aborted")
        except httpx.HTTPError as error:
            return Answer(op, time.perf_counter() - started, "error",
                          f"{op}: {type(error).__name__}: {error}")
        seconds = time.perf_counter() - started
        problem = expect(response)
        if response.status_code >= 500 and problem is None:
            problem = f"{op}: {response.status_code} {response.text[:300]}"
        return Answer(op, seconds, str(response.status_code), problem)

    def graphql(self, client: httpx.Client, op: str, query: str, variables: dict,
                bad: bool = False, seen: list[dict] | None = None) -> Answer:
        """POST a GraphQL document; ``seen`` receives the answer's JSON."""
        def expect(response: httpx.Response) -> str | None:
            body = response.json()
            if seen is not None:
                seen.append(body)
            if bad:
                ok = 400 <= response.status_code < 500 or "errors" in body
                return None if ok else f"{op}: accepted {response.text[:200]}"
            if response.status_code != 200:
                return f"{op}: {response.status_code} {response.text[:300]}"
            codes = [(e.get("extensions") or {}).get("code") for e in body.get("errors") or []]
            wrong = [c for c in codes if c not in MEANT_CODES]
            return f"{op}: error codes {wrong} {response.text[:300]}" if wrong else None

        return self.call(client, op, "POST", "/graphql", expect,
                         json={"query": query, "variables": variables})

    @staticmethod
    def status_in(*accepted: int) -> Callable[[httpx.Response], str | None]:
        def expect(response: httpx.Response) -> str | None:
            if response.status_code in accepted:
                return None
            return f"{response.request.method} {response.request.url.path}: " \
                   f"{response.status_code} {response.text[:300]}"
        return expect

    def bundle(self, rng: random.Random) -> tuple[str, dict]:
        name = rng.choice(sorted(self.bundles))
        return name, self.bundles[name]

    # -- writes ----------------------------------------------------------------------------

    def outcome_record(self, rng: random.Random) -> dict:
        name, doc = self.bundle(rng)
        rid = self.fresh("soak-req")
        with self.lock:
            self.request_ids.append(rid)
        record = {"request_id": rid, "timestamp": iso(datetime.now(UTC)),
                  "environment": rng.choice(["production", "canary", "staging"]),
                  "bundle": f"{name}@{rng.randint(1, int(doc['version']))}",
                  "latency_ms": rng.randint(50, 900), "status": "ok",
                  "quality": round(rng.random(), 3)}
        if rng.random() < 0.05:  # a model nobody registered (shadow AI)
            del record["bundle"]
            record["model"] = f"shadow-model-{rng.randint(1, 3)}"
        return record

    def outcomes(self, client: httpx.Client, rng: random.Random) -> Answer:
        records = [self.outcome_record(rng) for _ in range(rng.randint(5, 50))]
        if rng.random() < 0.1 and len(records) > 1:  # a re-sent batch changes nothing
            records[-1] = records[0]
        body = "".join(json.dumps(r) + "\n" for r in records)
        return self.call(client, "outcomes", "POST", "/api/v1/outcomes", self.status_in(200),
                         content=body, headers={**self.headers,
                                                "Content-Type": "application/x-ndjson"})

    def event(self, rng: random.Random) -> dict:
        template = json.dumps(rng.choice(self.events))
        fresh: dict[str, str] = {}
        text = UUID.sub(lambda m: fresh.setdefault(m.group(0), str(uuid.UUID(
            int=rng.getrandbits(128), version=4))), template)
        event = json.loads(text)
        event["eventTime"] = iso(datetime.now(UTC))
        if not fresh:  # the event whose run ID is no UUID
            event["run"]["runId"] = self.fresh("soak-run")
        return event

    def openlineage(self, client: httpx.Client, rng: random.Random) -> Answer:
        if rng.random() < 0.2:
            events = [self.event(rng) for _ in range(rng.randint(2, 10))]
            return self.call(client, "openlineage", "POST", "/api/v1/lineage/batch",
                             self.status_in(200, 204), json=events)
        return self.call(client, "openlineage", "POST", "/api/v1/lineage",
                         self.status_in(201), json=self.event(rng))

    def manifest(self, client: httpx.Client, rng: random.Random) -> Answer:
        name, doc = self.bundle(rng)
        with self.lock:
            self.versions[name] += 1
            version = self.versions[name]
        new = copy.deepcopy(doc)
        new.update(version=version, created_at=iso(datetime.now(UTC)))
        new.pop("status", None)
        new["eval"] = {**new.get("eval", {}), "run": f"{name}@{version}"}
        answer = self.call(client, "manifest", "POST", "/api/v1/manifests",
                           self.status_in(200, 201), json=[new])
        if answer.status in ("200", "201"):
            with self.lock:
                self.bundles[name] = new
        return answer

    def promote(self, client: httpx.Client, rng: random.Random) -> Answer:
        name, doc = self.bundle(rng)
        return self.graphql(client, "promote", M_PROMOTE, {
            "b": name, "v": str(doc["version"]), "e": rng.choice(["staging", "canary"])})

    def rollback(self, client: httpx.Client, rng: random.Random) -> Answer:
        name, _ = self.bundle(rng)
        return self.graphql(client, "rollback", M_ROLLBACK,
                            {"n": name, "e": rng.choice(["staging", "canary"])})

    def approve(self, client: httpx.Client, rng: random.Random) -> Answer:
        name, doc = self.bundle(rng)
        return self.graphql(client, "approve", M_APPROVE,
                            {"t": f"bundle:{name}@{doc['version']}"})

    # -- reads -----------------------------------------------------------------------------

    def trace(self, client: httpx.Client, rng: random.Random) -> Answer:
        with self.lock:
            rid = rng.choice(self.request_ids)
        return self.graphql(client, "trace", Q_TRACE, {"r": rid})

    def blast(self, client: httpx.Client, rng: random.Random) -> Answer:
        name, doc = self.bundle(rng)
        target = rng.choice([f"bundle:{name}@{rng.randint(1, int(doc['version']))}",
                             f"model:{rng.choice(self.models)}"])
        return self.graphql(client, "blast", Q_BLAST, {"id": target})

    def drift(self, client: httpx.Client, rng: random.Random) -> Answer:
        name, doc = self.bundle(rng)
        onset = datetime.now(UTC) - timedelta(days=rng.choice([0, 1, 30, 60]))
        return self.graphql(client, "drift", Q_DRIFT,
                            {"id": f"bundle:{name}@{doc['version']}", "onset": iso(onset)})

    def lineage(self, client: httpx.Client, rng: random.Random) -> Answer:
        name, doc = self.bundle(rng)
        variables: dict[str, Any] = {"id": f"bundle:{name}@{doc['version']}", "after": None}
        total = 0.0
        for _ in range(rng.randint(1, 3)):  # page on, as a dashboard scrolling does
            seen: list[dict] = []
            answer = self.graphql(client, "lineage", Q_LINEAGE, variables, seen=seen)
            total += answer.seconds
            if answer.status != "200" or answer.unexpected:
                return answer
            info = ((seen[0].get("data") or {}).get("lineage") or {}).get("pageInfo") or {}
            if not info.get("hasNextPage"):
                break
            variables["after"] = info["endCursor"]
        return Answer("lineage", total, "200")

    def search(self, client: httpx.Client, rng: random.Random) -> Answer:
        return self.graphql(client, "search", Q_SEARCH,
                            {"t": rng.choice(["bundle", "model", "soak", "feature", "run:"])})

    def history(self, client: httpx.Client, rng: random.Random) -> Answer:
        name, doc = self.bundle(rng)
        return self.graphql(client, "history", Q_HISTORY, {"id": f"bundle:{name}@1"})

    def audit(self, client: httpx.Client, rng: random.Random) -> Answer:
        name, doc = self.bundle(rng)
        return self.graphql(client, "audit", Q_AUDIT, {"target": rng.choice(
            [None, "api", f"bundle:{name}@{doc['version']}"])})

    def impact(self, client: httpx.Client, rng: random.Random) -> Answer:
        name, doc = self.bundle(rng)
        return self.graphql(client, "impact", Q_IMPACT, {
            "b": name, "v": str(doc["version"]), "e": "production"})

    def resolve(self, client: httpx.Client, rng: random.Random) -> Answer:
        name, _ = self.bundle(rng)
        at = rng.choice([None, iso(datetime.now(UTC) - timedelta(days=rng.randint(1, 400)))])
        return self.graphql(client, "resolve", Q_RESOLVE,
                            {"n": name, "e": rng.choice(["production", "canary"]), "at": at})

    def unregistered(self, client: httpx.Client, rng: random.Random) -> Answer:
        since = iso(datetime.now(UTC) - timedelta(hours=1))
        return self.graphql(client, "unregistered", Q_UNREG, {"since": since})

    def metrics(self, client: httpx.Client, rng: random.Random) -> Answer:
        return self.call(client, "metrics", "GET", "/metrics", self.status_in(200))

    # -- misbehaving clients ---------------------------------------------------------------

    def bad(self, client: httpx.Client, rng: random.Random) -> Answer:
        """A request the service must refuse with a 4xx (or a GraphQL error)."""
        kind = rng.randrange(12)
        four = self.status_in(*range(400, 500))
        ndjson = {**self.headers, "Content-Type": "application/x-ndjson"}
        if kind == 0:
            return self.call(client, "bad", "POST", "/api/v1/outcomes", four,
                             content=b'{"request_id": "x"\n', headers=ndjson)
        if kind == 1:  # a record missing its timestamp, after a good one: nothing written
            good = self.outcome_record(rng)
            body = json.dumps(good) + "\n" + json.dumps({"request_id": self.fresh("bad")})
            return self.call(client, "bad", "POST", "/api/v1/outcomes", four, content=body,
                             headers=ndjson)
        if kind == 2:  # an event without its run (kept as a dead letter)
            event = self.event(rng)
            del event["run"]
            event["job"]["name"] = self.fresh("soak-bad-job")
            return self.call(client, "bad", "POST", "/api/v1/lineage", four, json=event)
        if kind == 3:
            return self.call(client, "bad", "POST", "/api/v1/manifests", four,
                             content=b"name: [unclosed", headers={
                                 **self.headers, "Content-Type": "application/yaml"})
        if kind == 4:  # a reference to something not in the graph
            name, doc = self.bundle(rng)
            new = {**doc, "version": 10_000 + rng.randrange(10**6),
                   "prompt_ref": f"prompt:{self.fresh('nowhere')}@1"}
            return self.call(client, "bad", "POST", "/api/v1/manifests", four, json=[new])
        if kind == 5:
            return self.graphql(client, "bad", "query { trace(requestId: ", {}, bad=True)
        if kind == 6:
            return self.graphql(client, "bad", "query { nothingHere { id } }", {}, bad=True)
        if kind == 7:
            return self.graphql(client, "bad", Q_DRIFT, {"id": "bundle:x@1",
                                                         "onset": "not a time"}, bad=True)
        if kind == 8:  # a path nobody serves: never a new metrics label
            return self.call(client, "bad", "GET", f"/api/v1/{self.fresh('nope')}", four)
        if kind == 9:
            return self.call(client, "bad", "POST", "/api/v1/outcomes", four, content=b"x",
                             headers={**self.headers, "Content-Type": "image/png"})
        if kind == 10 and self.headers:  # a token the server never issued
            return self.call(client, "bad", "POST", "/graphql", four,
                             headers={"Authorization": f"Bearer {self.fresh('wrong')}"},
                             json={"query": "{ __typename }"})
        if self.read_headers:  # a read token writing
            return self.call(client, "bad", "POST", "/api/v1/outcomes", four,
                             content=json.dumps(self.outcome_record(rng)),
                             headers={**self.read_headers,
                                      "Content-Type": "application/x-ndjson"})
        return self.call(client, "bad", "DELETE", "/graphql", four)

    def abort(self, client: httpx.Client, rng: random.Random) -> Answer:
        """A client that goes away: gives up before the answer, hangs up mid-body, or
        sends a request and closes without reading."""
        kind = rng.randrange(4)
        started = time.perf_counter()
        if kind == 0:  # a short client timeout on a heavy read or a big write
            with httpx.Client(timeout=rng.choice([0.002, 0.01, 0.05])) as impatient:
                if rng.random() < 0.5:
                    name, doc = self.bundle(rng)
                    answer = self.graphql(impatient, "abort", Q_BLAST,
                                          {"id": f"model:{rng.choice(self.models)}"})
                else:
                    answer = self.outcomes(impatient, rng)
            return Answer("abort", answer.seconds, "aborted" if answer.status == "aborted"
                          else answer.status, answer.unexpected)
        host, port = httpx.URL(self.url).host, httpx.URL(self.url).port
        auth = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        with contextlib.suppress(OSError), socket.create_connection((host, port), 5) as sock:
            if kind == 1:  # promises a body, sends part of it, hangs up
                body = "".join(json.dumps(self.outcome_record(rng)) + "\n" for _ in range(50))
                sock.sendall((f"POST /api/v1/outcomes HTTP/1.1\r\nHost: x\r\n{auth}"
                              "Content-Type: application/x-ndjson\r\n"
                              f"Content-Length: {len(body) + 5000}\r\n\r\n").encode()
                             + body.encode()[: len(body) // 2])
                time.sleep(rng.random() * 0.2)
            elif kind == 2:  # a query sent, the socket closed without reading
                payload = json.dumps({"query": Q_BLAST,
                                      "variables": {"id": f"model:{rng.choice(self.models)}"}})
                sock.sendall((f"POST /graphql HTTP/1.1\r\nHost: x\r\n{auth}"
                              "Content-Type: application/json\r\n"
                              f"Content-Length: {len(payload)}\r\n\r\n{payload}").encode())
            else:  # half a request line, then nothing
                sock.sendall(b"GET /readyz HT")
                time.sleep(rng.random() * 0.2)
        return Answer("abort", time.perf_counter() - started, "aborted")

    def stall(self, stop: threading.Event, tally: Tally) -> None:
        """One client at a time that declares an outcomes body, sends part of it and goes
        quiet: the server should answer 408 after LINEAGEGRAPH_BODY_TIMEOUT_S (30 s) and
        hand its ingest turn back, not hold both for as long as the socket is open."""
        host, port = httpx.URL(self.url).host, httpx.URL(self.url).port
        auth = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        while not stop.is_set():
            started = time.perf_counter()
            status = "aborted"
            with contextlib.suppress(OSError), socket.create_connection((host, port), 5) as sock:
                sock.sendall((f"POST /api/v1/outcomes HTTP/1.1\r\nHost: x\r\n{auth}"
                              "Content-Type: application/x-ndjson\r\n"
                              "Content-Length: 100000\r\n\r\n{\"request_id\"").encode())
                sock.settimeout(1)
                head = ""
                while not head and not stop.is_set() and time.perf_counter() - started < 60:
                    with contextlib.suppress(TimeoutError):
                        head = sock.recv(64).decode(errors="replace") or "closed"
                status = head.split(" ")[1] if head.startswith("HTTP/") else "aborted"
            if stop.is_set():
                break  # the run ended while it waited: no answer to judge
            tally.add(Answer("stall", time.perf_counter() - started, status,
                             None if status == "408" else f"stall: answered {status}"))
            stop.wait(5)

    def client_loop(self, index: int, stop: threading.Event, tally: Tally) -> None:
        rng = random.Random(self.seed * 1009 + index)
        names = [op for op, _, _ in self.ops]
        weights = [w for _, w, _ in self.ops]
        actions = {op: fn for op, _, fn in self.ops}
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                op = rng.choices(names, weights)[0]
                try:
                    tally.add(actions[op](client, rng))
                except Exception as error:  # noqa: BLE001 - a client bug is a finding too
                    tally.add(Answer(op, 0.0, "error", f"{op}: client {error!r}"))


# -- sampling ------------------------------------------------------------------------------


class StoreProbe:
    """The store's side: open transactions and connections (Neo4j) or file sizes (SQLite)."""

    AGENT = "lineagegraph-soak-probe"

    def __init__(self, kind: str, db: str | None, uri: str | None) -> None:
        self.kind, self.db, self.driver = kind, db, None
        if kind == "neo4j":
            import neo4j

            from lineagegraph.graph.neo4j_store import driver_auth

            _, user, password, _ = neo4j_env()
            self.driver = neo4j.GraphDatabase.driver(
                uri, auth=driver_auth(user, password), user_agent=self.AGENT,
                notifications_min_severity=neo4j.NotificationMinimumSeverity.OFF)

    def sample(self) -> dict[str, float | None]:
        if self.driver is None:
            assert self.db is not None
            return {"db_mb": _size_mb(self.db), "wal_mb": _size_mb(self.db + "-wal"),
                    "store_open_tx": None, "store_connections": None}
        records, _, _ = self.driver.execute_query(
            "SHOW TRANSACTIONS YIELD currentQuery, connectionId RETURN currentQuery")
        open_tx = sum(1 for r in records
                      if not str(r["currentQuery"]).startswith("SHOW TRANSACTIONS"))
        connections, _, _ = self.driver.execute_query(
            "CALL dbms.listConnections() YIELD userAgent, connector "
            "WHERE connector = 'bolt' RETURN userAgent")
        ours = sum(1 for r in connections if self.AGENT in str(r["userAgent"]))
        return {"store_open_tx": open_tx, "store_connections": len(connections) - ours,
                "db_mb": None, "wal_mb": None}

    def close(self) -> None:
        if self.driver is not None:
            self.driver.close()


def _size_mb(path: str) -> float:
    try:
        return os.path.getsize(path) / 2**20
    except OSError:
        return 0.0


def process_sample(pid: int) -> dict[str, float]:
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    fds = sockets = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            fds += 1
            sockets += os.readlink(fd).startswith("socket:")
    return {"rss_mb": int(status["VmRSS"].split()[0]) / 1024,
            "threads": int(status["Threads"]), "fds": fds, "sockets": sockets}


def metrics_sample(url: str, headers: dict[str, str]) -> dict[str, float | None]:
    """How many series /metrics answers, and the server's gauges in it."""
    out: dict[str, float | None] = {"metrics_series": None, **dict.fromkeys(GAUGES.values())}
    with contextlib.suppress(httpx.HTTPError):
        text = httpx.get(url + "/metrics", headers=headers, timeout=30).text
        lines = [line for line in text.splitlines() if line and not line.startswith("#")]
        out["metrics_series"] = len(lines)
        for line in lines:
            name, _, value = line.partition(" ")
            if name in GAUGES:
                out[GAUGES[name]] = float(value)
    return out


def log_sample(path: Path) -> dict[str, float]:
    text = path.read_text(errors="replace")
    errors = sum(1 for line in text.splitlines()
                 if "Traceback" in line or line.startswith("ERROR") or " ERROR " in line)
    return {"log_kb": len(text.encode()) / 1024, "log_errors": errors}


def interval_ops(answers: list[Answer]) -> dict[str, dict[str, Any]]:
    by_op: dict[str, list[Answer]] = defaultdict(list)
    for answer in answers:
        by_op[answer.op].append(answer)
    out = {}
    for op, items in sorted(by_op.items()):
        done = [a.seconds * 1000 for a in items if a.status not in ("aborted", "error")]
        out[op] = {"n": len(items), "p50_ms": round(pct(done, 0.5), 2) if done else None,
                   "p99_ms": round(pct(done, 0.99), 2) if done else None,
                   "statuses": dict(Counter(a.status for a in items)),
                   "unexpected": sum(1 for a in items if a.unexpected)}
    return out


def slope_per_hour(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value), per hour."""
    if len(points) < 3:
        return None
    xs, ys = [p[0] / 3600 for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return None if var == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys,
                                                                         strict=True)) / var


def growth(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure: first, last, and the slope per hour over the second half of the run."""
    if not samples:
        return {}
    half = samples[-1]["t_s"] / 2
    late = [s for s in samples if s["t_s"] >= half]
    keys = [k for k in SAMPLED if samples[0].get(k) is not None]
    ops = sorted({op for s in samples for op in s["ops"]})
    out: dict[str, Any] = {}
    for key in keys:
        out[key] = {"first": samples[0][key], "last": samples[-1][key],
                    "per_hour": _round(slope_per_hour(
                        [(s["t_s"], s[key]) for s in late if s.get(key) is not None]))}
    for op in ops:
        for figure in ("p50_ms", "p99_ms"):
            points = [(s["t_s"], s["ops"][op][figure]) for s in late
                      if op in s["ops"] and s["ops"][op][figure] is not None]
            out[f"{op}.{figure}"] = {
                "first": next((s["ops"][op][figure] for s in samples if op in s["ops"]), None),
                "last": points[-1][1] if points else None,
                "per_hour": _round(slope_per_hour(points))}
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def print_row(sample: dict[str, Any], first: bool) -> None:
    if first:
        print(f"{'t_s':>6} {'rss':>7} {'thr':>4} {'fds':>4} {'sock':>4} {'series':>6} "
              f"{'tx':>3} {'conn':>4} {'wal':>6} {'req':>5} {'5xx':>4} {'unexp':>5} "
              f"{'trace p50/p99':>14} {'outc p50/p99':>14}", flush=True)
    ops = sample["ops"]
    total = sum(o["n"] for o in ops.values())
    fives = sum(n for o in ops.values() for s, n in o["statuses"].items() if s.startswith("5"))
    unexpected = sum(o["unexpected"] for o in ops.values())

    def lat(op: str) -> str:
        o = ops.get(op) or {}
        return f"{o.get('p50_ms') or 0:.0f}/{o.get('p99_ms') or 0:.0f}"

    def num(key: str, fmt: str) -> str:
        value = sample.get(key)
        return "-" if value is None else format(value, fmt)

    print(f"{sample['t_s']:>6.0f} {sample['rss_mb']:>7.1f} {sample['threads']:>4} "
          f"{sample['fds']:>4} {sample['sockets']:>4} {num('metrics_series', 'd'):>6} "
          f"{num('store_open_tx', 'd'):>3} {num('store_connections', 'd'):>4} "
          f"{num('wal_mb', '.1f'):>6} {total:>5} {fives:>4} {unexpected:>5} "
          f"{lat('trace'):>14} {lat('outcomes'):>14}", flush=True)


# -- the run -------------------------------------------------------------------------------


def prepare_store(args: argparse.Namespace, tmp: Path) -> tuple[Platform, str | None,
                                                                   str | None, dict]:
    """Generate and load the platform; create the tokens. (db, uri, tokens by scope)."""
    store: GraphStore
    db, uri = None, None
    if args.store == "neo4j":
        from lineagegraph.graph.neo4j_store import Neo4jStore

        uri, user, password, database = neo4j_env()
        store = Neo4jStore(uri, user, password, database)
        store.wipe()
    else:
        from lineagegraph.graph.embedded import EmbeddedStore

        db = str(tmp / "soak.db")
        store = EmbeddedStore(db)
    try:
        platform = generate(SCALES[args.scale], args.seed)
        platform.write(tmp)
        load_registry(store, platform)
        load_outcomes(store, tmp / "outcomes.ndjson")
        tokens = {} if args.open else {
            scope: create_token(store, f"soak-{scope}", scope, actor="bench")[1]
            for scope in ("admin", "read")}
    finally:
        store.close()
    return platform, db, uri, tokens


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    platform, db, uri, tokens = prepare_store(args, tmp)
    print(f"soak: {args.store}, scale {args.scale}, {args.clients} clients, "
          f"{args.minutes} min, {'open' if args.open else 'tokens'}", flush=True)
    log_path = tmp / "server.log"
    with log_path.open("wb") as log:
        proc, url = start_server(args.store, db, uri, log=log, token=tokens.get("admin"))
    headers = {"Authorization": f"Bearer {tokens['admin']}"} if tokens else {}
    read_headers = {"Authorization": f"Bearer {tokens['read']}"} if tokens else None
    probe = StoreProbe(args.store, db, uri)
    tally, stop = Tally(), threading.Event()
    workload = Workload(platform, url, headers, read_headers, args.seed)
    threads = [threading.Thread(target=workload.client_loop, args=(i, stop, tally),
                                daemon=True) for i in range(args.clients)]
    threads.append(threading.Thread(target=workload.stall, args=(stop, tally), daemon=True))
    samples: list[dict[str, Any]] = []
    unexpected: Counter[str] = Counter()
    begun = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        end = begun + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(args.interval, max(0.0, end - time.monotonic())))
            answers = tally.take()
            sample: dict[str, Any] = {"t_s": round(time.monotonic() - begun, 1)}
            sample |= process_sample(proc.pid)
            sample |= metrics_sample(url, headers)
            sample |= log_sample(log_path)
            sample |= probe.sample()
            sample["ops"] = interval_ops(answers)
            for answer in answers:
                if answer.unexpected:
                    unexpected[re.sub(r"\d+", "N", answer.unexpected[:160])] += 1
            samples.append(sample)
            print_row(sample, len(samples) == 1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=90)
        probe.close()
        proc.terminate()
        proc.wait(timeout=30)
    log_text = log_path.read_text(errors="replace")
    if args.server_log:
        args.server_log.write_text(log_text)
    return {
        "store": args.store, "scale": args.scale, "seed": args.seed, "clients": args.clients,
        "minutes": args.minutes, "interval_s": args.interval,
        "auth": "open" if args.open else "tokens",
        "requests": sum(o["n"] for s in samples for o in s["ops"].values()),
        "by_status": dict(sum((Counter({st: n}) for s in samples for o in s["ops"].values()
                               for st, n in o["statuses"].items()), Counter())),
        "unexpected": dict(unexpected.most_common(40)),
        "growth_per_hour": growth(samples),
        "server_log_tail": [line for line in log_text.splitlines()
                            if "Traceback" in line or "ERROR" in line][-20:],
        "samples": samples, "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def print_summary(result: dict[str, Any]) -> None:
    print(f"\n{result['requests']:,} requests; by status {result['by_status']}")
    print(f"\n{'figure':<26}{'first':>12}{'last':>12}{'per hour':>14}")
    for key, g in result["growth_per_hour"].items():
        print(f"{key:<26}{_fmt(g['first']):>12}{_fmt(g['last']):>12}{_fmt(g['per_hour']):>14}")
    print("\nunexpected:" if result["unexpected"] else "\nunexpected: none")
    for text, n in result["unexpected"].items():
        print(f"  {n:>5}  {text}")


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:,.2f}" if isinstance(value, float) else str(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["neo4j", "embedded"], default="embedded")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds per sample")
    parser.add_argument("--clients", type=int, default=4, help="client threads")
    parser.add_argument("--scale", choices=sorted(SCALES), default="tiny")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--open", action="store_true", help="serve with no token")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--server-log", type=Path, help="keep the server's log here")
    parser.add_argument("--scratch", type=Path,
                        help="keep the generated files and the embedded store here")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.scratch:
        args.scratch.mkdir(parents=True, exist_ok=True)
        result = run(args, args.scratch)
    else:
        with tempfile.TemporaryDirectory(prefix="lineagegraph-soak-") as scratch:
            result = run(args, Path(scratch))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print_summary(result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
