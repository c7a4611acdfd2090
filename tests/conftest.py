"""Store fixtures: every contract test runs against the embedded store and a real Neo4j.

Neo4j comes from ``NEO4J_URI`` (``.ci/run`` starts one with ``tools/neo4j/start``), or from
testcontainers where a Docker engine exists. With neither, Neo4j tests skip with a message
on a developer's machine — and fail under CI, where skipping them is never allowed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lineagegraph.graph.embedded import EmbeddedStore
from lineagegraph.graph.store import GraphStore

IN_CI = bool(os.environ.get("CI"))
HOW_TO_RUN = (
    "Neo4j tests need a Neo4j: run `bash .ci/run`, or start one with "
    "`tools/neo4j/start &` and set NEO4J_URI=bolt://127.0.0.1:7687"
)


@pytest.fixture(scope="session")
def neo4j_uri() -> Iterator[str]:
    uri = os.environ.get("NEO4J_URI")
    if uri:
        yield uri
        return
    if shutil.which("docker") and _docker_engine_answers():
        from testcontainers.neo4j import Neo4jContainer

        with Neo4jContainer("neo4j:5.26") as container:
            os.environ.setdefault("NEO4J_PASSWORD", container.password)
            os.environ.setdefault("NEO4J_USER", container.username)
            yield container.get_connection_url()
        return
    if IN_CI:
        pytest.fail(f"CI must run the Neo4j tests. {HOW_TO_RUN}")
    pytest.skip(HOW_TO_RUN)


def _docker_engine_answers() -> bool:
    try:
        import docker

        docker.from_env().ping()
    except Exception:  # any failure means: no usable engine here
        return False
    return True


@pytest.fixture(scope="session")
def neo4j_store(neo4j_uri: str) -> Iterator[GraphStore]:
    from lineagegraph.graph.neo4j_store import Neo4jStore

    store = Neo4jStore(neo4j_uri, os.environ.get("NEO4J_USER"), os.environ.get("NEO4J_PASSWORD"),
                       os.environ.get("NEO4J_DATABASE", "neo4j"))
    yield store
    store.close()


STORES = [
    pytest.param("embedded", id="embedded"),
    pytest.param("neo4j", id="neo4j", marks=pytest.mark.neo4j),
]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphStore]:
    """A fresh, empty store of each kind."""
    if request.param == "embedded":
        embedded = EmbeddedStore(tmp_path / "lineagegraph.db")
        yield embedded
        embedded.close()
        return
    shared: GraphStore = request.getfixturevalue("neo4j_store")
    shared.wipe()
    yield shared


_skipped_neo4j: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "neo4j" in report.keywords:
        _skipped_neo4j.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # In CI a skipped Neo4j test is a failure: the real store must have been exercised.
    if IN_CI and _skipped_neo4j:
        print(f"\nCI: {len(_skipped_neo4j)} Neo4j test(s) skipped; failing the run.")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
