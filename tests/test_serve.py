"""The README's serve command, run for real: a process, a port, HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lineagegraph.api.cli", *args]


def test_serve_answers_health_ready_and_graphql_on_the_embedded_store(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "NEO4J_URI"}
    env["LINEAGEGRAPH_DB"] = str(tmp_path / "served.db")
    process = subprocess.Popen(_cli("serve", "--port", str(port)), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "server did not come up in 60s"
                time.sleep(0.2)
        ready = httpx.get(f"{base}/readyz")
        graphql = httpx.post(f"{base}/graphql", json={"query": '{ node(id: "run:x") { id } }'})
        docs = httpx.get(f"{base}/docs")
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)

    assert health.json() == {"status": "ok"}
    assert ready.json() == {"status": "ready", "store": "embedded"}
    assert graphql.json() == {"data": {"node": None}}
    assert docs.status_code == 200
    assert "open mode" in output
    assert (tmp_path / "served.db").exists()


def test_serve_refuses_a_non_loopback_address_while_no_token_exists(tmp_path: Path) -> None:
    result = subprocess.run(_cli("serve", "--host", "0.0.0.0", "--db", str(tmp_path / "x.db")),
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert "refusing to bind 0.0.0.0" in result.stderr
