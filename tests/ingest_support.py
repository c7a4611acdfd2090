"""What the ingest tests share: a whole-store snapshot to prove re-sends change nothing,
the CLI pointed at the test's store, and an API client over it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from lineagegraph.api.app import create_app
from lineagegraph.api.cli import app as cli_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph.store import Direction, GraphStore
from lineagegraph.schema import EDGE_KINDS_BY_TYPE

MANIFESTS = Path(__file__).parent / "data" / "manifests"


def snapshot(store: GraphStore) -> dict[str, Any]:
    """Every node (with properties and creation time), edge and stage move."""
    nodes = store.find(first=1_000_000)
    hops = store.expand([n.id for n in nodes], Direction.UPSTREAM,
                        edge_types=list(EDGE_KINDS_BY_TYPE)) if nodes else []
    return {
        "nodes": {n.id: (n.kind, n.properties, n.created_at) for n in nodes},
        "edges": sorted(h.edge.key for h in hops),
        "moves": [(m.name, m.environment, m.from_version, m.to_version, m.at)
                  for m in store.stage_history()],
    }


def edges_of(store: GraphStore, node_id: str) -> set[tuple[str, str]]:
    """(edge type, target) of the node's out-edges, of every type."""
    return {(h.edge.type, h.node.id) for h in store.expand(
        [node_id], Direction.UPSTREAM, edge_types=list(EDGE_KINDS_BY_TYPE))}


def client_for(store: GraphStore) -> TestClient:
    return TestClient(create_app(Settings(neo4j_uri=None), store=store))


def cli_args(store: GraphStore, request: pytest.FixtureRequest) -> list[str]:
    """CLI options that open the same store as the ``store`` fixture."""
    if store.name == "embedded":
        return ["--db", store.path]  # type: ignore[attr-defined]
    return ["--neo4j-uri", request.getfixturevalue("neo4j_uri")]


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(cli_app, list(args), catch_exceptions=False)
