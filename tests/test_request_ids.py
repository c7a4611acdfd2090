"""Every HTTP answer carries a request ID, and an error on the server's side names it in the
answer and in the log line, so that what a caller saw can be found."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from lineagegraph.api import graphql_schema
from lineagegraph.api.cli import _log_config
from lineagegraph.api.request_ids import REQUEST_ID
from lineagegraph.graph.store import GraphStore
from lineagegraph.ingest import deadletter

from .ingest_support import client_for

MADE = re.compile("[0-9a-f]{32}")


@pytest.fixture
def client(store: GraphStore) -> Iterator[TestClient]:
    with client_for(store) as client:
        yield client


def test_every_answer_carries_a_request_id_and_keeps_a_plain_one_given(
        client: TestClient) -> None:
    made = client.get("/healthz").headers["x-request-id"]
    kept = client.get("/readyz", headers={"X-Request-ID": "gw-7f3a:42"})
    unmatched = client.get("/no/such/route", headers={"X-Request-ID": "trace-1"})
    spaced = client.get("/healthz", headers={"X-Request-ID": "two words"})
    long = client.get("/healthz", headers={"X-Request-ID": "x" * 129})
    graphql = client.post("/graphql", json={"query": "{ __typename }"})

    assert MADE.fullmatch(made)
    assert kept.headers["x-request-id"] == "gw-7f3a:42"
    assert (unmatched.status_code, unmatched.headers["x-request-id"]) == (404, "trace-1")
    # Echoed in a header and logged as is: anything but a plain token is replaced.
    assert MADE.fullmatch(spaced.headers["x-request-id"])
    assert MADE.fullmatch(long.headers["x-request-id"])
    assert MADE.fullmatch(graphql.headers["x-request-id"])
    assert len({made, spaced.headers["x-request-id"], long.headers["x-request-id"]}) == 3


def test_an_unexpected_rest_error_is_a_json_500_naming_the_id_it_is_logged_under(
        client: TestClient, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(deadletter, "pending_page", broken)  # a fault in our code
    with caplog.at_level(logging.ERROR):
        answer = client.get("/api/v1/deadletter", headers={"X-Request-ID": "inc-500"})

    assert answer.status_code == 500
    assert answer.headers["x-request-id"] == "inc-500"
    body = answer.json()
    assert body["code"] == "INTERNAL" and body["requestId"] == "inc-500"
    assert "inc-500" in body["error"] and "a bug" not in body["error"]
    [logged] = [r for r in caplog.records if r.exc_info]
    assert logged.request_id == "inc-500" and "GET /api/v1/deadletter" in logged.getMessage()


def test_a_masked_graphql_error_names_the_request_id_it_is_logged_under(
        client: TestClient, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(graphql_schema, "run_trace", broken)  # a fault in our code
    with caplog.at_level(logging.ERROR):
        answer = client.post("/graphql", headers={"X-Request-ID": "inc-gql"},
                             json={"query": '{ trace(requestId: "r-1") { environment } }'})

    [error] = answer.json()["errors"]
    assert "request inc-gql" in error["message"] and "a bug" not in error["message"]
    assert any(r.request_id == "inc-gql" and "a bug" in r.getMessage()
               for r in caplog.records)


def test_the_served_log_lines_end_with_the_request_id_inside_a_request_only() -> None:
    config = _log_config()
    formatter = logging.Formatter(config["formatters"]["default"]["fmt"].replace(
        "%(levelprefix)s", "%(levelname)s"))
    logger = logging.getLogger("lineagegraph.test")

    outside = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "started", (), None)
    token = REQUEST_ID.set("inc-9")
    try:
        inside = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "store down",
                                   (), None)
    finally:
        REQUEST_ID.reset(token)

    assert formatter.format(outside) == "INFO started"
    assert formatter.format(inside) == "WARNING store down [request inc-9]"
    assert config["formatters"]["access"]["fmt"].endswith("%(request_tag)s")
