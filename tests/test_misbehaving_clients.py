"""Clients that misbehave mid-request, found by the soak run (bench/soak.py).

A client that hangs up before its request body has arrived is no server error: no
traceback in the log, no 500 in ``/metrics`` (an alert on the 5xx rate would fire on
every impatient client); each such client had logged an "unexpected error" and counted a
500. A client that declares a body and goes quiet is answered 408 after
``body_timeout_s`` and its ingest turn handed back: two of them had held every ingest
turn for as long as their sockets stayed open."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from lineagegraph.api.app import create_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph.store import GraphStore

from .ingest_support import client_for

PART = {"type": "http.request", "body": b'{"request_id": "r-', "more_body": True}


@pytest.fixture
def client(store: GraphStore) -> Iterator[TestClient]:
    with client_for(store) as client:
        yield client


def hang_up_mid_body(client: TestClient, path: str, content_type: str) -> list[dict]:
    """Run one request through the app whose client sends part of the body it declared,
    then disconnects; what the app sent back."""
    messages = iter([PART, {"type": "http.disconnect"}])

    async def receive() -> dict:
        return next(messages, {"type": "http.disconnect"})

    return call(client, path, content_type, receive)


def go_quiet_mid_body(client: TestClient, path: str, content_type: str) -> list[dict]:
    """The same, but the client stays connected and sends nothing more (for 10 s, far
    past the test's ``body_timeout_s``; then it hangs up, so the test ends either way)."""
    parts = iter([PART])

    async def receive() -> dict:
        part = next(parts, None)
        if part is None:
            await anyio.sleep(10)
            return {"type": "http.disconnect"}
        return part

    return call(client, path, content_type, receive)


def call(client: TestClient, path: str, content_type: str, receive: Any,
         length: int = 4000) -> list[dict]:
    """One request through the app (its lifespan started by ``client``) with the client
    side ``receive``; what the app sent back."""
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
        "headers": [(b"host", b"testserver"), (b"content-type", content_type.encode()),
                    (b"content-length", str(length).encode())],
    }
    assert client.portal is not None
    client.portal.call(client.app, scope, receive, send)
    return sent


def series(client: TestClient, route: str) -> dict[str, int]:
    """Requests counted for ``route`` by status, from /metrics."""
    counted = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("lineagegraph_requests_total{") and f'route="{route}"' in line:
            status = line.split('status="')[1].split('"')[0]
            counted[status] = int(line.rsplit(" ", 1)[1])
    return counted


@pytest.mark.parametrize(("path", "content_type"), [
    ("/api/v1/outcomes", "application/x-ndjson"), ("/graphql", "application/json")])
def test_a_client_hanging_up_mid_body_is_counted_as_499_and_logged_without_a_traceback(
        client: TestClient, caplog: pytest.LogCaptureFixture, path: str,
        content_type: str) -> None:
    with caplog.at_level(logging.INFO):
        hang_up_mid_body(client, path, content_type)

    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    assert any("hung up" in r.getMessage() for r in caplog.records)
    assert series(client, path) == {"499": 1}
    # The ingest turn it waited for is handed back: the next writer is not kept waiting.
    assert client.app.state.ingest_budget.used == 0  # type: ignore[attr-defined]
    answer = client.post("/api/v1/outcomes", content="",
                         headers={"Content-Type": "application/x-ndjson"})
    assert answer.status_code < 500


@pytest.mark.parametrize(("path", "content_type"), [
    ("/api/v1/outcomes", "application/x-ndjson"), ("/graphql", "application/json")])
def test_a_body_that_goes_quiet_is_answered_408_and_its_ingest_turn_handed_back(
        store: GraphStore, path: str, content_type: str) -> None:
    settings = Settings(neo4j_uri=None, body_timeout_s=0.2)
    with TestClient(create_app(settings, store=store)) as client:
        sent = go_quiet_mid_body(client, path, content_type)

        start, body = sent[0], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
        assert start["status"] == 408
        assert (b"connection", b"close") in start["headers"]
        code = (body["errors"][0]["extensions"]["code"] if path == "/graphql"
                else body["code"])
        assert code == "REQUEST_TIMEOUT"
        assert "LINEAGEGRAPH_BODY_TIMEOUT_S" in json.dumps(body)
        assert client.app.state.ingest_budget.used == 0  # type: ignore[attr-defined]
        assert series(client, path) == {"408": 1}


def test_a_slow_body_that_keeps_coming_is_read_whole(store: GraphStore) -> None:
    """The time limit is on each pause, not on the whole body."""
    settings = Settings(neo4j_uri=None, body_timeout_s=0.2)
    record = json.dumps({"request_id": "slow-1", "timestamp": "2026-01-01T00:00:00Z",
                         "environment": "production", "model": "m-slow"}).encode()
    chunks = iter([record[i:i + 8] for i in range(0, len(record), 8)])

    async def receive() -> dict:
        await anyio.sleep(0.05)
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"\n", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    with TestClient(create_app(settings, store=store)) as client:
        sent = call(client, "/api/v1/outcomes", "application/x-ndjson", receive,
                    length=len(record) + 1)

        assert sent[0]["status"] == 200
        assert client.get("/graphql", params={
            "query": '{ node(id: "outcome:slow-1") { id } }'}).json()["data"] == {
                "node": {"id": "outcome:slow-1"}}
