"""What an operator sees: Ctrl-C during a load (one line saying what was written, exit 130,
a re-run completes it), and the served log (one line per record, with its level and the
request ID it was written under, the Neo4j driver's warnings too)."""

from __future__ import annotations

import _thread
import json
import logging
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lineagegraph.graph import deadline
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.store import GraphStore
from lineagegraph.graph.warmup import warm_up
from lineagegraph.ingest.batch import Batch, LoadInterrupted, load_batches
from lineagegraph.ingest.manifest_formats import read_directory
from lineagegraph.ingest.manifests import map_manifests
from lineagegraph.schema import Node

from .ingest_support import MANIFESTS, cli_args
from .openlineage_support import T0, dataset, run_event
from .servers import EMBEDDED_ENV, cli, free_port

INTERRUPTED = re.compile(r"interrupted: ([\d,]+) record\(s\) written \(whole batches; .*"
                         r"run the command again to load the rest — re-sending changes nothing")


# --- Ctrl-C during a load ------------------------------------------------------------------

def _outcomes(path: Path, count: int) -> list[str]:
    ids = [f"req-int-{i:07d}" for i in range(count)]
    path.write_text("".join(json.dumps({
        "request_id": request_id, "timestamp": f"2026-11-05T12:{i % 60:02d}:00Z",
        "bundle": "support-triage@14", "environment": "production", "status": "ok"}) + "\n"
        for i, request_id in enumerate(ids)))
    return ids


def _stored(store: GraphStore, ids: list[str]) -> int:
    return sum(len(store.get([f"outcome:{i}" for i in ids[at:at + 5000]]))
               for at in range(0, len(ids), 5000))


def _foreground(command: list[str]) -> subprocess.Popen[str]:
    """``command`` as a terminal's foreground job: Ctrl-C not ignored, whatever the tests'
    own SIGINT disposition is."""
    return subprocess.Popen(command, env=EMBEDDED_ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _interrupt_once(process: subprocess.Popen[str], written: Callable[[], bool]) -> str:
    """SIGINT ``process`` as soon as ``written()`` says the load wrote something; its
    stderr."""
    deadline_at = time.monotonic() + 120
    while not written():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline_at, "the load wrote nothing in 120 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    return err


def _one_interrupted_line(err: str) -> int:
    """Exit 130's one message, no traceback: the records it says were written."""
    assert "Traceback" not in err and "Error" not in err, err
    said = [line for line in err.replace("\r", "\n").splitlines() if "interrupted" in line]
    assert len(said) == 1, err
    found = INTERRUPTED.search(said[0])
    assert found, err
    return int(found.group(1).replace(",", ""))


def test_ctrl_c_mid_load_says_in_one_line_what_was_written_and_a_rerun_completes(
        store: GraphStore, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    map_manifests(read_directory(MANIFESTS), store, actor="test").write(store)
    path = tmp_path / "outcomes.ndjson"
    ids = _outcomes(path, 100_000)
    command = cli("ingest", "outcomes", str(path), "--batch-size", "2000",
                  *cli_args(store, request))

    process = _foreground(command)
    err = _interrupt_once(process, lambda: _stored(store, ids[:1]) > 0)

    assert process.returncode == 130, err
    said = _one_interrupted_line(err)
    assert 0 < said < len(ids), err  # stopped mid-file
    # What it says was written is what is stored: whole batches, the ones being written
    # when Ctrl-C came waited for (on Neo4j two at a time: they committed after it).
    assert _stored(store, ids) == said
    assert said % 2000 == 0

    again = subprocess.run(command, env=EMBEDDED_ENV, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert _stored(store, ids) == len(ids)
    assert store.traffic(["bundle:support-triage@14"]) == {"production": len(ids)}


def _jobs(store: GraphStore) -> list[Node]:
    return store.find(kinds=["Job"], first=10_000)


def test_ctrl_c_mid_openlineage_load_says_in_one_line_what_was_written(
        tmp_path: Path) -> None:
    db = tmp_path / "lineagegraph.db"
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(run_event(
        "COMPLETE", run_id=str(uuid.UUID(int=i + 1, version=4)), job=("airflow", f"job_{i}"),
        at=T0, inputs=[dataset("s3://raw", f"in_{i}")],
        outputs=[dataset("s3://curated", f"out_{i}")])) + "\n" for i in range(1000)))
    command = cli("ingest", "openlineage", str(path), "--db", str(db))
    store = EmbeddedStore(db)

    process = _foreground(command)
    err = _interrupt_once(process, lambda: bool(_jobs(store)))

    assert process.returncode == 130, err
    said = _one_interrupted_line(err)
    assert 0 < said < 1000, err
    assert len(_jobs(store)) == said  # one job an event
    again = subprocess.run(command, env=EMBEDDED_ENV, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert len(_jobs(store)) == 1000
    store.close()


def test_ctrl_c_inside_an_embedded_statement_is_a_keyboard_interrupt_that_writes_nothing(
        tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "lineagegraph.db")
    # Ctrl-C as a terminal's foreground job gets it, whatever the tests' own SIGINT
    # disposition is: a run a shell without job control started in the background ignores
    # SIGINT, and interrupt_main then does nothing (the statement ran to its end).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    # SQLite's progress handler (the query deadline's) runs in the statement: Ctrl-C lands
    # there, where sqlite3 would turn it into OperationalError("interrupted").
    timer = threading.Timer(0.3, _thread.interrupt_main)
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt), store._transaction() as conn:
            conn.execute("INSERT INTO nodes (id, kind, name, version, created_at, props) "
                         "VALUES ('feature:f@1', 'Feature', 'f', '1', '2026-11-01', '{}')")
            conn.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                         "WHERE i < 1000000000) SELECT count(*) FROM n").fetchone()
        timer.join()
    finally:
        signal.signal(signal.SIGINT, previous)

    assert store.get(["feature:f@1"]) == {}  # rolled back
    store.close()


def test_a_load_asked_to_stop_finishes_the_batches_started_and_counts_them(
        store: GraphStore) -> None:
    stop = threading.Event()

    def batches() -> Iterator[Batch]:
        for i in range(40):
            if i == 5:
                stop.set()  # Ctrl-C, while batches before it are being written
            yield Batch(nodes=[Node.from_id(f"feature:f{i}@1", created_at=T0)], size=1)

    with pytest.raises(LoadInterrupted) as stopped:
        load_batches(store, batches(), prefetch=True, stop=stop)

    stored = store.get([f"feature:f{i}@1" for i in range(40)])
    assert stopped.value.summary.records == len(stored) < 40
    assert sorted(stored) == sorted(f"feature:f{i}@1" for i in range(len(stored)))


# --- the served log ------------------------------------------------------------------------

_LOGGED = textwrap.dedent("""
    import logging.config, sys
    import neo4j
    from lineagegraph.api.cli import _log_config
    from lineagegraph.api.request_ids import REQUEST_ID
    from lineagegraph.graph import deadline
    from lineagegraph.graph.embedded import EmbeddedStore
    from lineagegraph.graph.warmup import warm_up

    logging.config.dictConfig(_log_config())
    token = REQUEST_ID.set("inc-7")
    # The real driver, at a port nothing listens on: it retries, and warns each time
    # with the error's text (several lines).
    driver = neo4j.GraphDatabase.driver("bolt://127.0.0.1:%(port)d",
                                        max_transaction_retry_time=1.5)
    try:
        with driver.session() as session:
            session.execute_write(lambda tx: tx.run("RETURN 1").consume())
    except neo4j.exceptions.ServiceUnavailable:
        pass
    driver.close()
    REQUEST_ID.reset(token)
    # A warm-up on a store too slow to answer (past its deadline): what a restarted
    # Neo4j's first plans did.
    store = EmbeddedStore(sys.argv[1])
    deadline.within(0, lambda: warm_up(store))
""")


def test_served_log_lines_have_a_level_and_the_request_id_the_driver_s_too(
        tmp_path: Path) -> None:
    script = _LOGGED % {"port": free_port()}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "w.db")],
                            env=EMBEDDED_ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()

    # Every line a record's own (no continuation, no traceback), with its level.
    assert all(re.match(r"(INFO|WARNING|ERROR|CRITICAL): +\S", line) for line in lines), lines
    driver = [line for line in lines if "neo4j." in line]
    assert any("Transaction failed and will be retried" in line for line in driver), lines
    assert all(re.match(r"(WARNING|ERROR|CRITICAL): +neo4j\.[a-z.]+: ", line)
               and line.endswith(" [request inc-7]") for line in driver), lines
    # Expected store failures: one line each, naming the cause.
    failed = [line for line in lines if "warm-up" in line and "failed" in line]
    assert len(failed) == 7 and all(re.fullmatch(
        r"WARNING: +warm-up: \w+ failed: it ran past its time limit", line)
        for line in failed), lines


def test_a_warm_up_step_the_store_fails_is_one_warning_naming_the_cause(
        store: GraphStore, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="lineagegraph.graph.warmup"):
        deadline.within(time.monotonic() - 1, lambda: warm_up(store))

    assert caplog.records
    assert all(r.exc_info is None and re.fullmatch(r"warm-up: \w+ failed: .+", r.getMessage())
               for r in caplog.records), [r.getMessage() for r in caplog.records]
