"""Upgrades: a store carries the format it was written in (schema/kinds.py STORE_FORMAT), and
tokens an older version let have a reserved name are refused."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import sqlite3
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.auth import TOKENS, TokenCache, create_token, list_tokens
from lineagegraph.api.cli import token_state
from lineagegraph.api.settings import Settings, StoreUnreachable
from lineagegraph.graph import neo4j_store, registry
from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.store import GraphStore, VersionFilter, version_order
from lineagegraph.schema import Node, Record, StageMove
from lineagegraph.schema.kinds import COUNTER_LABEL, STAGE_SLOT_LABEL, STORE_FORMAT

from .ingest_support import cli_args, run_cli
from .servers import EMBEDDED_ENV, cli
from .test_family_reads import family_graph, family_rows
from .test_version_reads import tricky_nodes

T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)
NEWER = STORE_FORMAT + 1
REFUSAL = (f"written by a newer lineagegraph (store format {NEWER}; this version reads "
           f"format {STORE_FORMAT}): upgrade lineagegraph, or point it at another store")


# -- the stamp, read and set behind the store's back ------------------------------------------

def _stamp(store: GraphStore) -> int | None:
    if isinstance(store, EmbeddedStore):
        with sqlite3.connect(store.path) as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0] or None
    records, _, _ = store._driver.execute_query(  # type: ignore[attr-defined]
        f"MATCH (c:{COUNTER_LABEL} {{name: 'format'}}) RETURN c.value AS value")
    assert len(records) <= 1  # one stamp, never two
    return records[0]["value"] if records else None


def _set_stamp(store: GraphStore, value: int | None) -> None:
    """``None``: no stamp, as a store an older version wrote."""
    if isinstance(store, EmbeddedStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute(f"PRAGMA user_version = {value or 0}")
        return
    driver = store._driver  # type: ignore[attr-defined]
    driver.execute_query(f"MATCH (c:{COUNTER_LABEL} {{name: 'format'}}) DELETE c")
    if value is not None:
        driver.execute_query(f"CREATE (:{COUNTER_LABEL} {{name: 'format', value: $v}})",
                             v=value)


@contextmanager
def _opened_at_once(settings: Settings, replicas: int) -> Iterator[list[GraphStore]]:
    """``replicas`` stores opened from ``settings`` at once, as replicas of a server start,
    closed after."""
    with ThreadPoolExecutor(replicas) as pool:
        opened = list(pool.map(lambda _: settings.open_store(), range(replicas)))
    try:
        yield opened
    finally:
        for each in opened:
            each.close()


def _settings(store: GraphStore, request: pytest.FixtureRequest) -> Settings:
    """Settings that open the same store as the ``store`` fixture."""
    if isinstance(store, EmbeddedStore):
        return Settings(neo4j_uri=None, db=store.path)
    return Settings(neo4j_uri=request.getfixturevalue("neo4j_uri"))


# -- the store format ---------------------------------------------------------------------------

def test_a_fresh_store_is_stamped_with_this_versions_format(store: GraphStore) -> None:
    assert _stamp(store) == STORE_FORMAT


def test_a_store_stamped_by_a_newer_version_is_refused_naming_both_formats(
    store: GraphStore, request: pytest.FixtureRequest,
) -> None:
    store.upsert([Node.from_id("bundle:b@1", created_at=T0)])
    _set_stamp(store, NEWER)
    try:
        with pytest.raises(StoreUnreachable) as refused:
            _settings(store, request).open_store()
        # What it was written in is left as it was: nothing of the store is touched.
        assert _stamp(store) == NEWER
        assert set(store.get(["bundle:b@1"])) == {"bundle:b@1"}
    finally:
        _set_stamp(store, STORE_FORMAT)  # the Neo4j fixture's instance is shared

    assert REFUSAL in str(refused.value)
    setting = "LINEAGEGRAPH_DB" if isinstance(store, EmbeddedStore) else "NEO4J_URI"
    assert setting in str(refused.value)  # which setting points at another store


@pytest.mark.parametrize("command", [["token", "list"], ["serve"]])
def test_the_cli_says_a_newer_store_in_one_line_and_exits_1(
    tmp_path: Path, command: list[str],
) -> None:
    db = tmp_path / "newer.db"
    EmbeddedStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {NEWER}")

    result = subprocess.run(cli(*command, "--db", str(db)), capture_output=True, text=True,
                            timeout=60, env=EMBEDDED_ENV, cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    said = " ".join(result.stderr.split())  # as if unwrapped
    assert REFUSAL in said and "LINEAGEGRAPH_DB" in said
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr  # one line, wrapped


def test_an_unstamped_store_with_data_is_stamped_on_open_and_keeps_its_data(
    store: GraphStore, request: pytest.FixtureRequest,
) -> None:
    store.upsert([Node.from_id("bundle:b@1", created_at=T0)])
    _set_stamp(store, None)  # as an older version left it

    reopened = _settings(store, request).open_store()
    try:
        assert _stamp(store) == STORE_FORMAT
        assert set(reopened.get(["bundle:b@1"])) == {"bundle:b@1"}
    finally:
        reopened.close()


def test_stores_opened_at_once_on_an_unstamped_store_leave_one_stamp(
    store: GraphStore, request: pytest.FixtureRequest,
) -> None:
    _set_stamp(store, None)  # replicas starting together on a store an older version wrote
    settings = _settings(store, request)

    with _opened_at_once(settings, 4):
        pass

    assert _stamp(store) == STORE_FORMAT  # and one stamp node (``_stamp`` checks)


def test_a_wiped_store_is_still_stamped_and_opens_again(
    store: GraphStore, request: pytest.FixtureRequest,
) -> None:
    store.upsert([Node.from_id("bundle:b@1", created_at=T0)])

    store.wipe()

    assert _stamp(store) == STORE_FORMAT
    assert store.get(["bundle:b@1"]) == {}
    _settings(store, request).open_store().close()


# -- format 2: each versioned node keeps its version key ------------------------------------------

def _as_format_1(store: GraphStore) -> None:
    """The store as format 1 left it: no node keeps a version key (embedded: no column for
    it, and the index on (name, kind) in place of the one with the key), nor a family or
    stage slots (``_as_format_2``); stamped 1."""
    _as_format_2(store)
    if isinstance(store, EmbeddedStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute("DROP INDEX nodes_version")
            conn.execute("ALTER TABLE nodes DROP COLUMN version_key")
            conn.execute("CREATE INDEX nodes_name ON nodes (name, kind)")
    else:
        store._driver.execute_query(  # type: ignore[attr-defined]
            "MATCH (n:Node) WHERE n.version_key IS NOT NULL REMOVE n.version_key")
    _set_stamp(store, 1)


@pytest.mark.parametrize("replicas", [1, 3])
def test_a_format_1_store_gains_version_keys_on_open_and_reads_versions_in_order(
    store: GraphStore, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
    replicas: int,
) -> None:
    monkeypatch.setattr(neo4j_store, "_KEY_FILL", 4)  # Neo4j keys them a few at a time
    nodes = tricky_nodes()
    store.upsert([*nodes, Node.from_id("model:m", created_at=T0)])  # unversioned: no key
    expected = [version_order(n) for n in sorted(nodes, key=version_order)]
    _as_format_1(store)
    settings = _settings(store, request)

    with _opened_at_once(settings, replicas) as opened:
        for each in opened:
            rows = each.version_sizes(VersionFilter(("Toolset",), "t"), len(nodes) + 1)
            assert [row.key for row in rows] == expected
            assert ([n.version for n in each.versions("Toolset", "t", last=3)]
                    == [n.version for n in sorted(nodes, key=version_order)[-3:]])
        assert _stamp(store) == STORE_FORMAT


# -- format 3: each version keeps its family's ID; each stage slot is kept --------------------

def _as_format_2(store: GraphStore) -> None:
    """The store as format 2 left it: no version keeps a family, no index on one (embedded:
    no column for it); no stage slots (embedded: no table for them, nor the trigger that
    keeps it); stamped 2."""
    if isinstance(store, EmbeddedStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute("DROP INDEX nodes_family_created")
            conn.execute("DROP INDEX nodes_family_version")
            conn.execute("ALTER TABLE nodes DROP COLUMN family")
            conn.execute("DROP TRIGGER stage_moves_slot")
            conn.execute("DROP TABLE stage_slots")
    else:  # opening it creates the indexes again, and waits for them
        driver = store._driver  # type: ignore[attr-defined]
        driver.execute_query("MATCH (n:Node) WHERE n.family IS NOT NULL REMOVE n.family")
        for index in ("lineagegraph_node_family_created", "lineagegraph_node_family_version"):
            driver.execute_query(f"DROP INDEX {index}")
        driver.execute_query(f"MATCH (s:{STAGE_SLOT_LABEL}) DELETE s")
    _set_stamp(store, 2)


def _link_twice(store: GraphStore, version: str, family: str) -> None:
    """A second VERSION_OF of ``version``, as a store before format 3 could hold."""
    if isinstance(store, EmbeddedStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute("INSERT INTO edges VALUES (?, 'VERSION_OF', ?, '{}')", (version, family))
    else:
        store._driver.execute_query(  # type: ignore[attr-defined]
            "MATCH (a:Node {id: $a}), (b:Node {id: $b}) "
            "CREATE (a)-[:VERSION_OF {props: '{}'}]->(b)", a=version, b=family)


@pytest.mark.parametrize("replicas", [1, 3])
def test_a_format_2_store_gains_families_on_open_and_reads_them_from_the_index(
    store: GraphStore, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, replicas: int,
) -> None:
    monkeypatch.setattr(neo4j_store, "_KEY_FILL", 4)  # Neo4j fills them a few at a time
    nodes, edges = family_graph()
    store.upsert(nodes, edges)
    families = ["source:wh/a", "source:wh/b", "model:m"]
    expected = {f: family_rows(store, f) for f in families}
    history = registry.history(store, "source:wh/a")
    assert history is not None
    # Linked to a second family before a version had one: it keeps the smaller ID.
    store.upsert([Node.from_id("source:wh/0", created_at=T0)])
    _link_twice(store, "dataset:wh/a-copy@c2", "source:wh/0")
    _as_format_2(store)
    settings = _settings(store, request)

    with caplog.at_level(logging.WARNING, logger="lineagegraph.graph.store"), \
            _opened_at_once(settings, replicas) as opened:
        for each in opened:
            rows = {f: family_rows(each, f) for f in families}
            assert rows == {**expected, "source:wh/a": [
                r for r in expected["source:wh/a"] if r[1] != "dataset:wh/a-copy@c2"]}
            assert family_rows(each, "source:wh/0") == [
                ("source:wh/0", "dataset:wh/a-copy@c2")]
            again = registry.history(each, "source:wh/a")
            assert again is not None
            assert [v.id for v in again.versions] == [
                v.id for v in history.versions if v.id != "dataset:wh/a-copy@c2"]
        assert _stamp(store) == STORE_FORMAT
    warned = {r.getMessage() for r in caplog.records if "dataset:wh/a-copy@c2" in r.getMessage()}
    assert warned == {"dataset:wh/a-copy@c2 is VERSION_OF source:wh/0, source:wh/a: it keeps "
                      "source:wh/0 as its family (a version has one); its other links stay, "
                      "but the family reads find it under source:wh/0 only"}


@pytest.mark.parametrize("replicas", [1, 3])
def test_a_format_2_store_gains_stage_slots_on_open_and_says_what_is_live(
    store: GraphStore, request: pytest.FixtureRequest, replicas: int,
) -> None:
    store.upsert([Node.from_id(f"bundle:{name}@{v}", created_at=T0)
                  for name in ("a", "b", "c") for v in (1, 2)])
    store.record_stage_moves([
        StageMove(name=name, environment=env, to_version=version,
                  at=T0 + timedelta(hours=hours), actor="ci")
        for name, env, version, hours in (("a", "production", "1", 0),
                                          ("a", "production", "2", 1),
                                          ("b", "staging", "1", 0),
                                          ("b", "production", "2", 2))])
    at = T0 + timedelta(hours=3)
    latest = store.stage_latest(until=at)
    assert [n.id for n in store.live_bundles("production", at)] == ["bundle:a@2", "bundle:b@2"]
    _as_format_2(store)
    settings = _settings(store, request)

    with _opened_at_once(settings, replicas) as opened:
        for each in opened:
            assert each.stage_latest(until=at) == latest
            assert [n.id for n in each.live_bundles("production", at)] == [
                "bundle:a@2", "bundle:b@2"]
            assert [n.id for n in each.live_bundles("staging", at)] == ["bundle:b@1"]
        assert _stamp(store) == STORE_FORMAT
        # A name's first move into an environment after the step gets its slot too.
        opened[0].record_stage_moves([StageMove(
            name="c", environment="staging", to_version="2", at=T0, actor="ci")])
        assert [n.id for n in opened[-1].live_bundles("staging", at)] == [
            "bundle:b@1", "bundle:c@2"]


# -- tokens an older version let have a reserved name ------------------------------------------

def _old_reserved_token(store: GraphStore, name: str = "CLI") -> str:
    """A token record as ``create_token`` wrote it before reserved names were refused in
    any case: returns its secret."""
    token_id = secrets.token_hex(6)  # warnings are once per token per process: a new one
    secret = f"lg_old-{name}-{token_id}"
    store.upsert(records=[Record(collection=TOKENS, key=f"{name}/{token_id}", at=T0, payload={
        "name": name, "id": token_id, "scopes": ["admin"],
        "hash": hashlib.sha256(secret.encode()).hexdigest(), "hash_alg": "sha256",
        "created_at": T0.isoformat()})])
    return secret


def test_a_token_with_a_reserved_name_does_not_authenticate_and_is_logged_once(
    store: GraphStore, caplog: pytest.LogCaptureFixture,
) -> None:
    reserved = {name: _old_reserved_token(store, name) for name in ("CLI", "Anonymous")}
    _, secret = create_token(store, "ci", "write", actor="test")

    with caplog.at_level(logging.WARNING, logger="lineagegraph.api.auth"):
        cache = TokenCache(ttl_s=0)  # every load reads the store again
        tokens = cache.load(store)
        cache.load(store)

    for name, old in reserved.items():
        assert tokens.authenticate(old) is None
        assert tokens.refused_name(old) == name
    assert tokens.authenticate(secret) is not None
    warned = [r.getMessage() for r in caplog.records if "reserved name" in r.getMessage()]
    assert len(warned) == 2, warned  # one per token, not one per load
    assert any("'CLI'" in w and "revoke" in w for w in warned), warned


def test_a_request_with_a_reserved_name_token_is_told_why_it_is_refused(
    store: GraphStore,
) -> None:
    old = _old_reserved_token(store)

    with TestClient(create_app(Settings(neo4j_uri=None), store=store)) as client:
        answer = client.post("/graphql", json={"query": "{ __typename }"},
                             headers={"Authorization": f"Bearer {old}"})

    assert answer.status_code == 401
    assert "token 'CLI' has a reserved name: create another and revoke it" in answer.text


def test_token_list_marks_a_reserved_name_token_refused_until_revoked(
    store: GraphStore, request: pytest.FixtureRequest,
) -> None:
    _old_reserved_token(store)
    flags = cli_args(store, request)

    listed = run_cli("token", "list", *flags)
    revoked = run_cli("token", "revoke", "CLI", *flags)
    relisted = run_cli("token", "list", *flags)

    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if " CLI " in line)
    assert "refused" in row
    assert revoked.exit_code == 0, revoked.output
    row = next(line for line in relisted.stdout.splitlines() if " CLI " in line)
    assert "refused" not in row and len(re.findall(r"\d{4}-\d{2}-\d{2}", row)) == 2
    assert [t.active for t in list_tokens(store)] == [False]


def test_serve_counts_a_reserved_name_token_as_no_active_token(
    store: GraphStore, request: pytest.FixtureRequest,
) -> None:
    _old_reserved_token(store)
    create_token(store, "ci", "read", actor="cli")

    assert token_state(_settings(store, request)) == (True, 1)
