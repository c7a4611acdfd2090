"""What callers get when the store fails under a running service (README "Configuration"):
REST answers 503 with ``Retry-After`` and code ``STORE_UNAVAILABLE`` (so does the token
check in front of every route), GraphQL an error with ``extensions.code``
``STORE_UNAVAILABLE``; the log gets one line a request, no traceback; the service answers
again, unrestarted, once the store is back; the CLI says so in one line, exit 1, and a load
it stopped finishes when run again.

Neo4j here is this module's own (``tools/neo4j/start`` on a free port), stopped and
started again; the shared one the other tests use is never touched."""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph.deadline import within
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.neo4j_store import Neo4jStore
from lineagegraph.graph.store import GraphStore, RecordFilter, StoreUnavailable
from lineagegraph.schema import Node
from lineagegraph.schema.models import Record

from .conftest import IN_CI
from .openlineage_support import run_event
from .servers import EMBEDDED_ENV, cli, error_code, free_port
from .story import load_story

LAUNCHER = Path(__file__).resolve().parents[1] / "tools" / "neo4j" / "start"
OUTCOME = {"request_id": "req-outage-1", "timestamp": "2026-11-03T12:00:00Z",
           "bundle": "fraud-scoring@2", "environment": "production", "status": "ok"}
MANIFEST = "name: outage-check\nversion: 1\nmodel: fraud-detector@7\n"

# Every kind of request that reads or writes the store, but /readyz (a probe: 503 with
# its own body) and the OpenLineage batch (its own summary): see the test.
REST: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/v1/outcomes", {"json": [OUTCOME]}),
    ("POST", "/api/v1/manifests", {"content": MANIFEST,
                                   "headers": {"content-type": "application/yaml"}}),
    ("POST", "/api/v1/lineage", {"json": run_event(run_id="run-outage")}),
    ("GET", "/api/v1/events/lineage", {}),
    ("GET", "/api/v1/deadletter", {}),
    ("POST", "/api/v1/deadletter/replay", {}),
]
GRAPHQL = [
    '{ trace(requestId: "req-3001") { environment } }',
    '{ blastRadius(id: "model:gpt-5-mini-2026-11") { byKind { kind count } } }',
    '{ driftSources(id: "bundle:support-triage@15", onset: "2026-11-08T00:00:00Z") '
    "{ score } }",
    '{ lineage(id: "model:fraud-detector@7") { truncated } }',
    '{ search(text: "fraud") { nodes { id } } }',
    '{ node(id: "model:fraud-detector@7") { id } }',
    'mutation { upsert(nodes: [{id: "source:outage"}]) { nodes { created } } }',
    'mutation { promote(bundle: "support-triage", version: "14", environment: "staging") '
    "{ promoted } }",
]


class OwnNeo4j:
    """A Neo4j of this module's own, on a free port with its own data directory."""

    def __init__(self, data: Path) -> None:
        self.data = data / "db"
        self.log = data / "neo4j.log"
        self.uri = f"bolt://127.0.0.1:{free_port()}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(LAUNCHER), "--port", self.uri.rsplit(":", 1)[1], "--data", str(self.data),
                 "--heap", "512m", "--pagecache", "64m"], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # its own process group: ``stop`` ends the JVM too
        deadline = time.monotonic() + timeout_s
        while "neo4j: ready" not in self.log.read_text(errors="replace"):
            assert self.process.poll() is None, self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, f"Neo4j did not start in {timeout_s}s"
            time.sleep(0.2)

    def stop(self) -> None:
        """Killed, as a crash or the OOM killer would (a clean stop spends 10 s shutting
        the DBMS down); the next start recovers the database."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def own_neo4j(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnNeo4j]:
    if not (shutil.which("java") and shutil.which("mvn")):
        why = "needs Java 17 and Maven to start a Neo4j of its own (tools/neo4j/start)"
        if IN_CI:  # CI installs both: a Neo4j test never skips there
            pytest.fail(why)
        pytest.skip(why)
    neo = OwnNeo4j(tmp_path_factory.mktemp("own-neo4j"))
    neo.start()
    yield neo
    if neo.process is not None and neo.process.poll() is None:
        neo.stop()


def _gql(client: TestClient, query: str) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query})
    assert response.status_code == 200, response.text
    return response.json()


def _one_line_logged(caplog: pytest.LogCaptureFixture, what: str) -> None:
    """The request left one warning of ours in the log and no traceback anywhere."""
    ours = [r for r in caplog.records if r.name.startswith("lineagegraph")
            and r.levelno >= logging.WARNING]
    assert [r.getMessage().split(":")[0] for r in ours] == ["store unavailable (" + what
                                                            + ")"], caplog.text
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    caplog.clear()


def _said_unavailable(response: Any, *hidden: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert error_code(response) == "STORE_UNAVAILABLE"
    body = response.json()
    message = body["errors"][0]["message"] if "errors" in body else body["error"]
    assert message.startswith("the store is unavailable (Neo4j cannot be reached")
    for text in hidden:  # the driver's words (address, port) stay in the log
        assert text not in response.text


@pytest.mark.neo4j
def test_neo4j_stopped_is_answered_as_unavailable_everywhere_and_then_recovered(
    own_neo4j: OwnNeo4j, caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    caplog.set_level(logging.WARNING)
    store = Neo4jStore(own_neo4j.uri)
    load_story(store)
    port = own_neo4j.uri.rsplit(":", 1)[1]
    # `app` has read the tokens (open mode) and keeps them: its routes meet the store;
    # `door` reads them on every request, so its token check meets the store first.
    app = TestClient(create_app(Settings(neo4j_uri=None, token_cache_s=3600), store=store),
                     raise_server_exceptions=False)
    door = TestClient(create_app(Settings(neo4j_uri=None, token_cache_s=0), store=store),
                      raise_server_exceptions=False)
    hasty = Neo4jStore(own_neo4j.uri, write_retry_s=1)
    with app, door:
        assert app.get("/readyz").status_code == 200
        own_neo4j.stop()
        try:
            # A write is retried for the setting's time, not the driver's 30 s and back-off
            # (31-66 s against a stopped Neo4j): a generous bound, far under that.
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                hasty.upsert([Node.from_id("source:pg/late")])
            assert time.monotonic() - started < 15
            caplog.clear()
            for method, path, sent in REST:
                _said_unavailable(app.request(method, path, **sent), port, "Errno")
                _one_line_logged(caplog, f"{method} {path}")
            for query in GRAPHQL:
                (error,) = _gql(app, query)["errors"]
                assert error["extensions"] == {"code": "STORE_UNAVAILABLE"}, error
                assert error["message"].startswith("the store is unavailable (Neo4j"), error
                _one_line_logged(caplog, "GraphQL")
            batch = app.post("/api/v1/lineage/batch", json=[run_event(run_id="run-b")])
            _said_unavailable(batch, port)
            assert batch.json()["summary"] == {"received": 1, "successful": 0, "failed": 1}
            _one_line_logged(caplog, "POST /api/v1/lineage/batch")
            ready = app.get("/readyz")
            assert (ready.status_code, ready.json()["status"]) == (503, "unavailable")
            assert app.get("/healthz").status_code == 200
            assert app.get("/metrics").status_code == 200

            for method, path in [("GET", "/readyz"), ("POST", "/graphql"),
                                 ("POST", "/api/v1/outcomes"), ("GET", "/metrics")]:
                _said_unavailable(door.request(method, path, json={}), port)
                _one_line_logged(caplog, "token check")

            # The CLI: one line naming the setting, exit 1.
            cli_run = subprocess.run(cli("trace", "req-3001"), capture_output=True, text=True,
                                     timeout=60, env={**EMBEDDED_ENV, "NEO4J_URI": own_neo4j.uri},
                                     cwd=tmp_path)
            assert cli_run.returncode == 1, cli_run.stderr
            assert "NEO4J_URI" in cli_run.stderr and "Traceback" not in cli_run.stderr
        finally:
            own_neo4j.start()
            hasty.close()

        # Back, on the same port and data: answered again without a restart. The restarted
        # Neo4j plans every statement anew, cold: on a loaded box its first trace may take
        # longer than the query limit, which is answered as such (a QUERY_TIMEOUT, not the
        # store unavailable); the one after it answers.
        for _ in range(3):
            trace = _gql(app, GRAPHQL[0])
            if trace.get("errors", [{}])[0].get("extensions") != {"code": "QUERY_TIMEOUT"}:
                break
        assert trace == {"data": {"trace": {"environment": "production"}}}, trace
        assert app.post("/api/v1/outcomes", json=[OUTCOME]).status_code == 200
        assert door.get("/readyz").json()["status"] == "ready"
        assert _gql(door, '{ node(id: "outcome:req-outage-1") { id } }') == {
            "data": {"node": {"id": "outcome:req-outage-1"}}}
    store.close()


@pytest.mark.neo4j
def test_a_hung_neo4j_gets_the_probe_and_the_token_check_an_answer_in_time(
    own_neo4j: OwnNeo4j, caplog: pytest.LogCaptureFixture,
) -> None:
    # Frozen, not stopped (a dropped network looks the same): connections open, no answer.
    caplog.set_level(logging.WARNING)
    store = Neo4jStore(own_neo4j.uri)
    assert own_neo4j.process is not None
    # `app` keeps the tokens it read (its probe meets the store), `door` reads them anew.
    app, door = (TestClient(create_app(Settings(neo4j_uri=None, token_cache_s=cache_s,
                                                query_timeout_s=2), store=store),
                            raise_server_exceptions=False) for cache_s in (3600, 0))
    with app, door:
        assert app.get("/readyz").status_code == 200
        os.killpg(own_neo4j.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            ready = app.get("/readyz")
            checked = door.post("/graphql", json={"query": "{ __typename }"})
            took = time.monotonic() - started
        finally:
            os.killpg(own_neo4j.process.pid, signal.SIGCONT)
        back = door.get("/readyz")

    assert took < 20  # two answers at the 5 s bound, not the driver's minutes
    assert (ready.status_code, ready.json()["status"]) == (503, "unavailable")
    assert checked.status_code == 503 and error_code(checked) == "STORE_UNAVAILABLE"
    assert "no answer within 5s" in checked.json()["errors"][0]["message"]
    assert back.status_code == 200
    store.close()




@pytest.mark.neo4j
def test_a_restarted_neo4j_is_warmed_up_again_while_the_server_keeps_serving(
    own_neo4j: OwnNeo4j, caplog: pytest.LogCaptureFixture,
) -> None:
    # Its query plans are gone with the restart: the first trace after it took ~4 s.
    caplog.set_level(logging.INFO, logger="lineagegraph.api.app")
    settings = Settings(neo4j_uri=own_neo4j.uri, neo4j_password=None, warm_up_check_s=0.2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        before = client.get("/readyz").json()
        own_neo4j.stop()
        own_neo4j.start()
        deadline = time.monotonic() + 60
        while (after := client.get("/readyz").json())["store_started_at"] == \
                before["store_started_at"]:
            assert time.monotonic() < deadline, after
            time.sleep(0.2)
        answered = _gql(client, '{ node(id: "model:fraud-detector@7") { id } }')

    assert before["status"] == "ready" and before["warm_up_s"]
    assert before["store_started_at"] < after["store_started_at"]
    assert after["status"] == "ready" and after["warm_up_s"]
    assert [r.getMessage().split(" at ")[0] for r in caplog.records
            if r.name == "lineagegraph.api.app"] == ["the store started again"]
    assert "errors" not in answered  # a query answered on the restarted store

@pytest.mark.neo4j
def test_wiping_kept_events_larger_than_the_heap_deletes_them_all(own_neo4j: OwnNeo4j) -> None:
    # 400 events of 1 MiB deleted in one transaction ran this Neo4j (512 MiB of heap) out
    # of memory, and `demo --reset` or a test's clean slate failed with it.
    store = Neo4jStore(own_neo4j.uri)
    store.wipe()
    event = {"text": "x" * 2**20}
    for first in range(0, 400, 20):
        store.upsert(records=[Record(collection="events", key=str(key), payload=event)
                              for key in range(first, first + 20)])
    load_story(store)

    store.wipe()

    assert store.read_records(RecordFilter(collection="events"), limit=1) == []
    assert store.get(["model:fraud-detector@7", "bundle:support-triage@14"]) == {}
    store.close()

# -- the embedded store --------------------------------------------------------------------


def test_a_writer_locked_out_of_the_embedded_file_gets_a_503(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    path = tmp_path / "x.db"
    store = EmbeddedStore(path)
    load_story(store)
    locker = sqlite3.connect(path, isolation_level=None)
    with TestClient(create_app(Settings(neo4j_uri=None), store=store),
                    raise_server_exceptions=False) as client:
        client.get("/readyz")  # auth has read the (empty) token set: open mode
        caplog.clear()
        locker.execute("BEGIN EXCLUSIVE")  # past SQLite's 5 s busy timeout
        try:
            refused = client.post("/api/v1/lineage", json=run_event(run_id="run-locked"))
            read = _gql(client, '{ node(id: "model:fraud-detector@7") { id } }')
        finally:
            locker.execute("ROLLBACK")
        written = client.post("/api/v1/lineage", json=run_event(run_id="run-locked"))

    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["code"] == "STORE_UNAVAILABLE"
    assert "database is locked" in refused.json()["error"]
    _one_line_logged(caplog, "POST /api/v1/lineage")
    assert read == {"data": {"node": {"id": "model:fraud-detector@7"}}}  # WAL: reads go on
    assert written.status_code == 201, written.text


def test_an_embedded_file_deleted_while_serving_refuses_writes_instead_of_losing_them(
    tmp_path: Path,
) -> None:
    # SQLite goes on writing to a deleted file (and its WAL): answered, then gone for good.
    path = tmp_path / "x.db"
    store = EmbeddedStore(path)
    load_story(store)
    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as client:
        assert client.get("/readyz").status_code == 200
        for gone in tmp_path.glob("x.db*"):
            gone.unlink()
        outcome = client.post("/api/v1/outcomes", json=[OUTCOME])
        upsert = _gql(client, GRAPHQL[6])
        ready = client.get("/readyz")

    assert outcome.status_code == 503, outcome.text
    assert "deleted or replaced" in outcome.json()["error"]
    assert upsert["errors"][0]["extensions"] == {"code": "STORE_UNAVAILABLE"}
    assert (ready.status_code, ready.json()["status"]) == (503, "unavailable")
    assert not path.exists()


def test_ready_is_false_not_an_error_past_the_time_budget(store: GraphStore) -> None:
    # /readyz answered 500 when Neo4j stopped its probe at the statement time limit.
    assert within(time.monotonic() - 1, store.ready) is False
    assert store.ready() is True


def test_a_load_the_store_fails_under_stops_in_one_line_and_runs_again_to_the_end(
    tmp_path: Path,
) -> None:
    db = tmp_path / "x.db"
    store = EmbeddedStore(db)
    load_story(store)
    counted_before = _requests_counted(store)
    store.close()
    records = 20_000
    source = tmp_path / "outcomes.ndjson"
    source.write_text("".join(json.dumps({**OUTCOME, "request_id": f"req-load-{i:05d}"}) + "\n"
                              for i in range(records)))
    load = cli("ingest", "outcomes", str(source), "--db", str(db), "--batch-size", "100")

    def disk_fills_up() -> None:  # in the child: its files may not grow past 2 MB
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write fails, not the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))

    first = subprocess.run(load, env=EMBEDDED_ENV, cwd=tmp_path, text=True,
                           capture_output=True, timeout=60, preexec_fn=disk_fills_up)
    reader = sqlite3.connect(db)
    written = _loaded(reader)

    assert first.returncode == 1, first.stderr
    assert "Traceback" not in first.stderr
    assert 0 < written < records, first.stderr
    assert f"the store failed after {written:,} record(s) were written\n" in first.stderr
    assert re.search(r"the store failed: embedded store: [^()]+ \(LINEAGEGRAPH_DB\); run the "
                     "command again", " ".join(first.stderr.split())), first.stderr
    again = subprocess.run(load, env=EMBEDDED_ENV, cwd=tmp_path, text=True,
                           capture_output=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert _loaded(reader) == records
    reader.close()
    store = EmbeddedStore(db)
    # What the first run wrote was sent again and changed nothing: counted once.
    assert _requests_counted(store) == counted_before + records
    store.close()


def _loaded(connection: sqlite3.Connection) -> int:
    return connection.execute("SELECT count(*) FROM nodes WHERE id LIKE "
                              "'outcome:req-load-%'").fetchone()[0]


def _requests_counted(store: GraphStore) -> int:
    return sum(store.traffic(["bundle:fraud-scoring@2"]).values())
