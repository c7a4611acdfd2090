"""Ingest writes take turns by body size (api/admission.py): what may be in flight at once
is bounded, a waiting request is answered 503 after its wait, reads never wait."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import pytest
from fastapi.testclient import TestClient
from starlette.datastructures import Headers

from lineagegraph.api.admission import BodyBudget, IngestBusy, reserved_bytes
from lineagegraph.api.app import create_app
from lineagegraph.api.settings import Settings
from lineagegraph.graph.store import GraphStore

RECORD = {"request_id": "req-admitted", "timestamp": "2026-11-20T10:00:00Z",
          "environment": "production", "model": "fraud-detector@7"}


def _run(steps: list[tuple[str, int]], budget: BodyBudget) -> list[str]:
    """Reserve each (name, size) in the order given, each holding its bytes until released;
    release the longest-held one at a time. Answers what happened: "+name" admitted,
    "-name" released."""

    async def main() -> list[str]:
        log: list[str] = []
        releases = {name: asyncio.Event() for name, _ in steps}

        async def one(name: str, size: int) -> None:
            async with budget.reserve(size):
                log.append(f"+{name}")
                await releases[name].wait()

        tasks = []
        for name, size in steps:
            tasks.append(asyncio.create_task(one(name, size)))
            await asyncio.sleep(0.01)  # arrival order is the order given
        for _ in steps:
            holding = [e[1:] for e in log if e[0] == "+" and f"-{e[1:]}" not in log]
            log.append(f"-{holding[0]}")
            releases[holding[0]].set()
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
        return log

    return asyncio.run(main())


def test_bodies_that_fit_together_go_at_once_and_the_rest_wait_their_turn() -> None:
    # a and b fit together (90 of 100); c (30) waits until a leaves.
    log = _run([("a", 40), ("b", 50), ("c", 30)], BodyBudget(100, wait_s=5))
    assert log == ["+a", "+b", "-a", "+c", "-b", "-c"]


def test_a_small_body_behind_a_waiting_large_one_waits_too() -> None:
    # d (10) would fit beside a, but b arrived first and waits for room: first come, first
    # served, so a stream of small events cannot starve a bulk load.
    log = _run([("a", 60), ("b", 60), ("d", 10)], BodyBudget(100, wait_s=5))
    assert log == ["+a", "-a", "+b", "+d", "-b", "-d"]


def test_a_body_larger_than_the_budget_goes_alone() -> None:
    log = _run([("a", 10), ("huge", 10_000), ("b", 10)], BodyBudget(100, wait_s=5))
    assert log == ["+a", "-a", "+huge", "-huge", "+b", "-b"]


def test_a_request_that_waits_too_long_is_busy_and_leaves_the_line() -> None:
    async def main() -> tuple[bool, int]:
        budget = BodyBudget(100, wait_s=0.05)
        async with budget.reserve(100):
            with pytest.raises(IngestBusy):
                async with budget.reserve(1):
                    pass
        async with budget.reserve(100):  # the one that gave up holds no place in line
            return True, budget.used

    assert asyncio.run(main()) == (True, 100)


def test_no_wait_admits_at_once_when_there_is_room() -> None:
    async def main() -> int:
        budget = BodyBudget(100, wait_s=0)
        async with budget.reserve(50):
            return budget.used

    assert asyncio.run(main()) == 50


def test_a_request_reserves_its_length_or_the_limit_when_it_may_inflate_or_is_unsized() -> None:
    assert reserved_bytes(Headers({"content-length": "120"}), 1000) == 120
    assert reserved_bytes(Headers({"content-length": "5000"}), 1000) == 1000
    assert reserved_bytes(Headers({"content-length": "120", "content-encoding": "gzip"}),
                          1000) == 1000
    assert reserved_bytes(Headers({"transfer-encoding": "chunked"}), 1000) == 1000


@contextmanager
def _held(client: TestClient, size: int) -> Iterator[None]:
    """The app's budget held by another ingest on the app's own event loop."""
    budget: BodyBudget = client.app.state.ingest_budget  # type: ignore[attr-defined]
    assert client.portal is not None
    release = client.portal.call(anyio.Event)

    async def hold() -> None:
        async with budget.reserve(size):
            await release.wait()

    holding = client.portal.start_task_soon(hold)
    deadline = time.monotonic() + 10
    while budget.used < size and time.monotonic() < deadline:
        time.sleep(0.005)
    assert budget.used == size
    try:
        yield
    finally:
        client.portal.call(release.set)
        holding.result(timeout=10)


def _client(store: GraphStore, wait_s: float) -> TestClient:
    return TestClient(create_app(
        Settings(neo4j_uri=None, ingest_budget_bytes=1000, ingest_wait_s=wait_s),
        store=store))


def test_an_ingest_post_past_its_wait_is_a_503_naming_the_settings_and_writes_nothing(
    store: GraphStore,
) -> None:
    with _client(store, wait_s=0.1) as client:
        with _held(client, 1000):
            answer = client.post("/api/v1/outcomes", json=[RECORD])
            reads = client.get("/api/v1/deadletter")
            metrics = client.get("/metrics").text
            query = client.post("/graphql", json={"query": "{ __typename }"})
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "1"
        body = answer.json()
        assert body["code"] == "INGEST_BUSY"
        assert "LINEAGEGRAPH_INGEST_BUDGET_BYTES" in body["error"]
        assert "LINEAGEGRAPH_INGEST_WAIT_S" in body["error"]
        assert store.get(["outcome:req-admitted"]) == {}
        assert "lineagegraph_ingest_body_bytes_in_flight 1000" in metrics
        assert "lineagegraph_ingest_budget_bytes 1000" in metrics
        assert "lineagegraph_ingest_waiting 0" in metrics  # the 503 left the line
        # Reads and GraphQL never wait for ingest turns.
        assert reads.status_code == 200 and query.status_code == 200
        again = client.post("/api/v1/outcomes", json=[RECORD])
        assert again.status_code == 200, again.text
        assert "outcome:req-admitted" in store.get(["outcome:req-admitted"])


def _waits_its_turn_then_is_answered(client: TestClient) -> None:
    answered: list[tuple[float, int]] = []

    def send() -> None:
        response = client.post("/api/v1/lineage/batch", content=json.dumps([]),
                               headers={"content-type": "application/json"})
        answered.append((time.monotonic(), response.status_code))

    with _held(client, 1000):
        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.3)
        waiting = client.get("/metrics").text
        released = time.monotonic()
        assert answered == []  # still waiting its turn
    assert "lineagegraph_ingest_waiting 1" in waiting
    sender.join(timeout=30)
    assert len(answered) == 1 and answered[0][0] >= released
    assert answered[0][1] < 500


def test_an_ingest_post_waits_for_its_turn_and_is_then_written(store: GraphStore) -> None:
    with _client(store, wait_s=30) as client:
        _waits_its_turn_then_is_answered(client)


def test_an_app_served_again_on_another_event_loop_still_takes_turns(
    store: GraphStore,
) -> None:
    app_client = _client(store, wait_s=30)
    for _ in range(2):  # each `with` runs the app on an event loop of its own
        with app_client as client:
            _waits_its_turn_then_is_answered(client)
