"""The README's serve command, run for real: a process, a port, HTTP."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from .servers import EMBEDDED_ENV, cli, serving


def test_serve_answers_health_ready_and_graphql_on_the_embedded_store(tmp_path: Path) -> None:
    env = {**EMBEDDED_ENV, "LINEAGEGRAPH_DB": str(tmp_path / "served.db")}
    with serving(env=env) as served:
        health = httpx.get(f"{served.base}/healthz")
        ready = httpx.get(f"{served.base}/readyz")
        graphql = httpx.post(f"{served.base}/graphql",
                             json={"query": '{ node(id: "run:x") { id } }'})
        docs = httpx.get(f"{served.base}/docs")

    assert health.json() == {"status": "ok"}
    assert ready.json()["status"] == "ready" and ready.json()["store"] == "embedded"
    # `serve` opened its store, so it warmed it up before accepting connections.
    assert set(ready.json()["warm_up_s"]) == {"live_bundles", "bundle_parts", "trace",
                                              "lineage", "blast_radius", "drift_sources",
                                              "resolve"}
    assert graphql.json() == {"data": {"node": None}}
    assert docs.status_code == 200
    assert "open mode" in served.output
    assert "warm-up took" in served.output  # the service's INFO lines reach the log
    assert (tmp_path / "served.db").exists()


def test_serve_refuses_a_non_loopback_address_while_no_token_exists(tmp_path: Path) -> None:
    result = subprocess.run(cli("serve", "--host", "0.0.0.0", "--db", str(tmp_path / "x.db")),
                            capture_output=True, text=True, timeout=60, env=EMBEDDED_ENV)

    assert result.returncode == 2
    assert "refusing to bind 0.0.0.0" in result.stderr
